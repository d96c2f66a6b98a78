//! The shared reader (`reader: "shared"`): one thread reads many
//! connections through epoll, instead of a reader thread each. A thread per
//! connection costs a wake-up (a context switch) and a GIL hand-off for
//! every read; with many connections each read carries one frame, and
//! those costs are most of a request's. Here a busy poller finds several
//! sockets ready in one `epoll_wait`, reads them all without the GIL, then
//! handles every frame they carried under one GIL acquisition.
//!
//! The cost: handlers of every connection on the poller run one after the
//! other on its thread, so a handler that blocks delays them all. TLS
//! links and `idle.timeout` keep their own reader thread (`Core::use_poller`
//! decides).
//!
//! Locks: `conns` is a leaf. The poller takes each ready connection's
//! `read` without the GIL and keeps the guards while it handles the pass
//! under the GIL, so it never waits for `read` with the GIL held (see
//! "Locks and the GIL" in transport.rs). Requesters may still take their
//! RESPONSEs off the socket (`spin_reading`): they only `try_lock` `read`,
//! and take nothing while the poller holds bytes of the socket.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, ThreadId};

use super::receive::{End, ReadNow};
use super::{Core, Handler};
use crate::codec::FrameDecoder;
use crate::errors::{Error, Result};
use crate::sync::Mutex;
use crate::writer::Outbox;

/// What the front end wraps around the poller's work (Python: one thread
/// state for the thread's life, the GIL around each pass).
pub trait PollerHooks: Send + Sync {
    fn thread(&self, run: &mut dyn FnMut());
    fn pass(&self, run: &mut dyn FnMut());
}

/// Hooks that add nothing (Rust-only handlers).
pub struct NoHooks;

impl PollerHooks for NoHooks {
    fn thread(&self, run: &mut dyn FnMut()) {
        run()
    }
    fn pass(&self, run: &mut dyn FnMut()) {
        run()
    }
}

/// Events one `epoll_wait` returns at most; more wait for the next pass.
const EVENTS: usize = 256;
/// The token of the eventfd that wakes the thread to stop.
const WAKE: u64 = 0;

pub struct Poller<H: Handler> {
    epoll: OwnedFd,
    wake: OwnedFd,
    /// Registered connections by token. A leaf lock.
    conns: Mutex<HashMap<u64, Arc<Core<H>>>>,
    next: AtomicU64,
    stopping: AtomicBool,
    hooks: Box<dyn PollerHooks>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: OnceLock<ThreadId>,
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl<H: Handler> Poller<H> {
    /// Makes the epoll set and starts the thread.
    pub fn start(name: &str, hooks: Box<dyn PollerHooks>) -> io::Result<Arc<Self>> {
        // SAFETY: plain system calls; each fd is owned at once.
        let epoll =
            unsafe { OwnedFd::from_raw_fd(check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        let wake = unsafe {
            OwnedFd::from_raw_fd(check(libc::eventfd(
                0,
                libc::EFD_CLOEXEC | libc::EFD_NONBLOCK,
            ))?)
        };
        let poller = Arc::new(Poller {
            epoll,
            wake,
            conns: Mutex::new(HashMap::new()),
            next: AtomicU64::new(WAKE + 1),
            stopping: AtomicBool::new(false),
            hooks,
            thread: Mutex::new(None),
            thread_id: OnceLock::new(),
        });
        poller.ctl(libc::EPOLL_CTL_ADD, poller.wake.as_raw_fd(), WAKE)?;
        let me = poller.clone();
        let handle = std::thread::Builder::new()
            .name(format!("gofast-poll-{name}"))
            .stack_size(super::READER_STACK)
            .spawn(move || {
                Outbox::mark_reader_thread();
                let it = me.clone();
                me.hooks.thread(&mut || it.run());
            })?;
        let _ = poller.thread_id.set(handle.thread().id());
        *poller.thread.lock() = Some(handle);
        Ok(poller)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: token,
        };
        // SAFETY: `ev` outlives the call; the kernel copies it.
        check(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) }).map(|_| ())
    }

    pub fn thread_id(&self) -> Option<ThreadId> {
        self.thread_id.get().copied()
    }

    /// Whether the thread still serves (not stopped).
    pub fn is_running(&self) -> bool {
        !self.stopping.load(Ordering::Acquire)
    }

    pub fn connections(&self) -> usize {
        self.conns.lock().len()
    }

    /// Starts reading `core`'s socket.
    pub(super) fn add(&self, core: Arc<Core<H>>, fd: RawFd) -> Result<()> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        {
            // Checked under the lock `end_all` takes: a transport is either
            // ended by it or never taken.
            let mut conns = self.conns.lock();
            if !self.is_running() {
                return Err(Error::Closed("the shared reader has stopped".into()));
            }
            conns.insert(token, core);
        }
        if let Err(e) = self.ctl(libc::EPOLL_CTL_ADD, fd, token) {
            self.conns.lock().remove(&token);
            return Err(e.into());
        }
        Ok(())
    }

    /// Stops the thread and waits for it (unless called on it); the
    /// connections still registered end (at exit they are closed already).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from `one` to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if self.thread_id() != Some(std::thread::current().id()) {
            let handle = self.thread.lock().take();
            if let Some(h) = handle {
                let _ = h.join();
            }
        }
        self.end_all("the shared reader stopped");
    }

    fn run(&self) {
        // SAFETY: epoll_event is plain data; all zeroes is a valid value.
        let mut events: Vec<libc::epoll_event> = vec![unsafe { std::mem::zeroed() }; EVENTS];
        let mut frames = Vec::new();
        while self.is_running() {
            // SAFETY: the kernel writes at most EVENTS entries into `events`.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS as i32,
                    -1,
                )
            };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!(
                    "gofast: the shared reader stops: {}",
                    io::Error::last_os_error()
                );
                break;
            }
            let ready: Vec<(u64, Arc<Core<H>>)> = {
                let conns = self.conns.lock();
                events[..n as usize]
                    .iter()
                    .filter_map(|e| {
                        let token = e.u64;
                        conns.get(&token).map(|c| (token, c.clone()))
                    })
                    .collect()
            };
            if ready.is_empty() {
                continue;
            }
            self.serve(ready, &mut frames);
        }
        // Ended by a failing epoll_wait rather than `stop()`: take no more
        // transports, and end those it read (nothing else would).
        self.end_all("the shared reader stopped");
    }

    /// Stops taking transports and ends every one still registered.
    fn end_all(&self, why: &str) {
        let left = {
            let mut conns = self.conns.lock();
            self.stopping.store(true, Ordering::Release);
            std::mem::take(&mut *conns)
        };
        for core in left.into_values() {
            core.reading_ended(Err(Error::Closed(why.into())));
        }
    }

    /// One pass: reads every ready socket (no GIL), handles what came under
    /// one `pass` hook, then ends the connections that ended.
    fn serve(&self, ready: Vec<(u64, Arc<Core<H>>)>, frames: &mut Vec<crate::protocol::FrameRef>) {
        let mut ended: Vec<(u64, Arc<Core<H>>, Result<End>)> = Vec::new();
        let mut read = Vec::with_capacity(ready.len());
        for (token, core) in &ready {
            let mut side = core.read.lock();
            match core.read_now(&mut side) {
                ReadNow::Nothing => {}
                ReadNow::Ended(why) => {
                    drop(side);
                    ended.push((*token, core.clone(), why));
                }
                ReadNow::Got(n) => read.push((*token, core, side, n)),
            }
        }
        if !read.is_empty() {
            self.hooks.pass(&mut || {
                for (token, core, side, n) in read.iter_mut() {
                    let decoder = FrameDecoder::new(core.session.settings.max_frame);
                    let handled = core.decode_and_process(&decoder, &mut side.buf, frames);
                    side.buf.settle(*n);
                    if let Err(e) = handled {
                        ended.push((*token, (*core).clone(), Err(e)));
                    }
                }
            });
            drop(read);
            for (_, core) in &ready {
                core.session.handler().received(&|| core.is_closed());
            }
        }
        for (token, core, why) in ended {
            if self.conns.lock().remove(&token).is_none() {
                continue; // ended twice in one pass (error then EOF)
            }
            if let Some(fd) = core.read.lock().sock.as_ref().map(|s| s.fd()) {
                let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, token);
            }
            core.reading_ended(why);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::*;
    use crate::io::{Link, Socket};
    use crate::protocol::testing::Recording;
    use crate::settings::{Role, Settings};

    use crate::transport::test_pair::echo;

    type Echo = Recording;

    fn core(sock: TcpStream, role: Role, poller: &Arc<Poller<Echo>>) -> Arc<Core<Echo>> {
        let core = Core::new(
            "t",
            Link::plain(Socket::Tcp(sock)),
            1,
            Settings::defaults(role),
            echo(),
        )
        .expect("core");
        assert!(core.use_poller(poller.clone()));
        core
    }

    #[test]
    fn one_thread_reads_many_connections_and_lets_each_go_at_its_end() {
        let poller = Poller::start("test", Box::new(NoHooks)).expect("poller");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut pairs = Vec::new();
        for _ in 0..20 {
            let client = core(
                TcpStream::connect(addr).expect("connect"),
                Role::Dialer,
                &poller,
            );
            let server = core(
                listener.accept().expect("accept").0,
                Role::Acceptor,
                &poller,
            );
            crate::transport::test_pair::handshake(&client, &server);
            pairs.push((client, server));
        }
        assert_eq!(poller.connections(), 40);
        for (client, _) in &pairs {
            crate::transport::test_pair::assert_echo(client);
        }
        // The peer's close ends the server side, read by the poller.
        let (client, server) = pairs.pop().expect("a pair");
        client.close("done");
        assert!(client.is_closed());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !server.is_closed() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(server.is_closed(), "the poller saw the peer's close");
        for (client, server) in pairs {
            client.close("done");
            server.close("done");
        }
        assert_eq!(poller.connections(), 0);
        poller.stop();
        assert!(!poller.is_running());
    }

    #[test]
    fn a_tls_link_or_an_idle_timeout_keeps_its_reader_thread() {
        let poller = Poller::start("test", Box::new(NoHooks)).expect("poller");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let core = crate::transport::test_pair::with_idle_timeout(&listener);
        assert!(!core.use_poller(poller.clone()));
        core.close("done");
        poller.stop();
    }

    #[test]
    fn a_transport_given_to_a_stopped_poller_fails_its_handshake_and_closes() {
        let poller = Poller::start("test", Box::new(NoHooks)).expect("poller");
        poller.stop();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = core(
            TcpStream::connect(listener.local_addr().expect("address")).expect("connect"),
            Role::Dialer,
            &poller,
        );
        let shaken = client.handshake(Duration::from_secs(5), &mut || Ok(()));
        assert!(
            matches!(shaken, Err(Error::Closed(_))),
            "{:?}",
            shaken.err()
        );
        assert!(client.is_closed());
    }
}
