//! Reading driven by the owner's event loop (`gofast.aio`): the loop
//! watches the socket and calls `read_ready` when it is readable, which
//! reads once without blocking and hands the frames to the session, as
//! the reader thread would. It saves the reader thread's wake-up and its
//! hand-off to the loop on every read: on a VM each wake-up costs more
//! than the round trip being waited for.
//!
//! Only for plain links without `idle.timeout`, as the shared reader
//! (`poller.rs`): TLS records are decrypted by their reader thread, and the
//! idle timeout is that thread's timed wait.
//!
//! Locks: `read_ready` waits for `read` only without the GIL (the front end
//! calls it detached), as every other waiter for it does.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::receive::ReadNow;
use super::{Core, Handler};
use crate::codec::FrameDecoder;
use crate::io::Link;

impl<H: Handler> Core<H> {
    /// Has the caller read this transport (`read_ready`) instead of a
    /// reader thread, if it can: not over TLS, nor with `idle.timeout`, nor
    /// with the shared reader, and only before the handshake. Returns the
    /// link to watch (its fd), which the caller keeps until it has stopped
    /// watching, so the fd's number is not reused meanwhile.
    pub fn use_caller_reader(&self) -> Option<Arc<Link>> {
        let hs = self.hs.lock();
        if self.needs_own_reader() || self.poller.get().is_some() || hs.started {
            return None;
        }
        let link = self.sock.lock().clone()?;
        self.caller_reads.store(true, Ordering::Release);
        Some(link)
    }

    /// Starts receiving with the calling thread as the reader (its loop
    /// calls `read_ready`); `handshake()` then starts no thread. Only for a
    /// transport given to `use_caller_reader`.
    pub fn start_caller_reading(self: &Arc<Self>) -> crate::errors::Result<()> {
        debug_assert!(self.caller_reads.load(Ordering::Acquire));
        self.start_reader()
    }

    /// The socket is readable: reads once, without blocking, and handles
    /// the frames that completed. At the end of input, or on an error,
    /// finishes the transport's close. Returns whether reading has ended
    /// (the caller stops watching once the close has reached it).
    pub fn read_ready(self: &Arc<Self>) -> bool {
        let mut side = self.read.lock();
        let ended = match self.read_now(&mut side) {
            ReadNow::Nothing => return false,
            ReadNow::Ended(why) => why,
            ReadNow::Got(n) => {
                let decoder = FrameDecoder::new(self.session.settings.max_frame);
                let mut frames = Vec::new();
                let handled = self.decode_and_process(&decoder, &mut side.buf, &mut frames);
                side.buf.settle(n);
                match handled {
                    Ok(()) => return false,
                    Err(e) => Err(e),
                }
            }
        };
        drop(side);
        // Once only, whoever ends first (a close() finishes it too).
        self.reading_ended(ended);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;
    use crate::io::Socket;
    use crate::protocol::testing::Recording;
    use crate::settings::{Role, Settings};
    use crate::transport::test_pair::echo;

    fn readable(fd: std::os::fd::RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd for the duration of the call.
        unsafe { libc::poll(&mut p, 1, 10_000) == 1 }
    }

    /// Plays the event loop for `core` on a thread of its own (then its
    /// reader): reads whenever the socket is readable, until reading ends.
    fn drive(core: Arc<Core<Recording>>, link: Arc<Link>) -> std::thread::JoinHandle<()> {
        let (started, start) = std::sync::mpsc::channel();
        let reading = std::thread::spawn(move || {
            core.start_caller_reading().expect("start");
            started.send(()).expect("tell");
            while readable(link.fd()) {
                if core.read_ready() {
                    return;
                }
            }
        });
        start.recv().expect("the loop started");
        reading
    }

    #[test]
    fn the_callers_reads_carry_a_handshake_requests_and_the_peers_close() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let dialer = Core::new(
            "d",
            Link::plain(Socket::Tcp(TcpStream::connect(addr).expect("connect"))),
            1,
            Settings::defaults(Role::Dialer),
            echo(),
        )
        .expect("dialer");
        let acceptor = Core::new(
            "a",
            Link::plain(Socket::Tcp(listener.accept().expect("accept").0)),
            1,
            Settings::defaults(Role::Acceptor),
            echo(),
        )
        .expect("acceptor");
        let link = acceptor.use_caller_reader().expect("a plain link");
        let reading = drive(acceptor.clone(), link);
        crate::transport::test_pair::handshake(&dialer, &acceptor);
        crate::transport::test_pair::assert_echo(&dialer);
        dialer.close("done");
        reading
            .join()
            .expect("the caller's reads end at the peer's close");
        assert!(acceptor.is_closed());
        assert!(
            acceptor.close_reason().contains("peer closed"),
            "{}",
            acceptor.close_reason()
        );
    }

    #[test]
    fn close_finishes_a_transport_its_caller_reads_without_waiting_for_a_read() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let sock = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        let core = Core::new(
            "t",
            Link::plain(Socket::Tcp(sock)),
            1,
            Settings::defaults(Role::Dialer),
            echo(),
        )
        .expect("core");
        let _link = core.use_caller_reader().expect("a plain link");
        core.start_caller_reading().expect("start");
        core.close("done");
        assert!(core.is_closed());
        assert!(core.read_ready(), "reading has ended");
    }

    #[test]
    fn an_idle_timeout_keeps_its_reader_thread() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let core = crate::transport::test_pair::with_idle_timeout(&listener);
        assert!(core.use_caller_reader().is_none());
        core.close("done");
    }
}
