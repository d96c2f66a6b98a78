//! The receive side of a transport. The reader thread reads the socket,
//! decodes frames and hands each read's frames to `dispatch`. While this
//! side has requests going, a lone requester may read the socket itself and
//! take RESPONSEs straight off it (saving a thread hand-off per round trip);
//! everything else it reads stays in the shared buffer, in order, for the
//! reader thread, which it wakes through the `Doorbell`.

use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::dispatch::FrameRef;
use super::{Core, Handler};
use crate::codec::{Decoded, FrameDecoder, Kind};
use crate::errors::{ProtocolError, Result};
use crate::exchange::{Slot, SPIN};
use crate::readbuf::ReadBuf;
use crate::stats::Stats;
use crate::writer::Outbox;

impl<H: Handler> Core<H> {
    pub(super) fn run_reader(self: Arc<Self>) {
        Outbox::mark_reader_thread();
        let me = self.clone();
        self.handler.reader_thread(&mut || me.reader_body());
    }

    fn reader_body(self: &Arc<Self>) {
        let reason = match self.read_loop() {
            Ok(()) => "peer closed the connection".to_string(),
            Err(e) if self.is_closed() => format!("closed ({e})"),
            Err(e) => {
                log::warn!("gofast[{}]: connection ends: {e}", self.name);
                e.to_string()
            }
        };
        self.finish_close(&reason);
    }

    fn read_loop(self: &Arc<Self>) -> Result<()> {
        let decoder = FrameDecoder::new(self.settings.max_frame);
        let fd = self.sock.as_raw_fd();
        let mut requests_seen = u64::MAX;
        loop {
            // While this side has requests going, wait with poll() and leave
            // the socket to a requester that reads its own RESPONSE; else
            // block in recv(), one system call per read instead of two.
            let requests = self.stats.n_txreq.load(Ordering::Relaxed);
            let requesters_read =
                requests != requests_seen || self.waiters.load(Ordering::Acquire) > 0;
            requests_seen = requests;
            if requesters_read {
                self.wake_reader.wait_with(fd)?;
            }
            let mut guard = self.read.lock();
            let st = &mut *guard;
            let outcome = match st.ended.take() {
                Some(Ok(())) => ReadOutcome::End,
                Some(Err(e)) => return Err(e.into()),
                None if requesters_read => read_now(&mut st.rb, fd)?,
                None => {
                    // Frames a requester left behind go first.
                    self.decode_and_process(&decoder, st)?;
                    match st.rb.fill(fd)? {
                        0 => ReadOutcome::End,
                        n => ReadOutcome::Bytes(n),
                    }
                }
            };
            let n = match outcome {
                ReadOutcome::Bytes(n) => {
                    Stats::add(&self.stats.n_rxbyte, n as u64);
                    n
                }
                _ => 0,
            };
            self.decode_and_process(&decoder, st)?;
            if let ReadOutcome::End = outcome {
                if !st.rb.data().is_empty() {
                    let partial = st.rb.data().len();
                    self.stats.drop_frame(partial);
                    return Err(ProtocolError::Truncated(partial).into());
                }
                return Ok(());
            }
            st.rb.settle(n);
        }
    }

    /// Decodes every whole frame in the buffer and handles them as one batch.
    fn decode_and_process(
        self: &Arc<Self>,
        decoder: &FrameDecoder,
        st: &mut ReadState,
    ) -> Result<()> {
        st.left_for_reader = false;
        let (rb, frames) = (&mut st.rb, &mut st.frames);
        while !rb.data().is_empty() {
            match decoder.decode(rb.data()) {
                Ok(None) => break,
                Ok(Some((Decoded::Frame(f), used))) => {
                    let body = body_range(rb.data(), f.body, rb.offset());
                    let (kind, opaque) = (f.kind, f.opaque);
                    frames.push(FrameRef {
                        kind,
                        opaque,
                        body,
                        len: used,
                    });
                    rb.consume(used);
                }
                Ok(Some((Decoded::Dropped(e), used))) => {
                    log::warn!(
                        "gofast[{}]: dropped a frame of {used} bytes: {e}",
                        self.name
                    );
                    Stats::incr(&self.stats.n_rx);
                    self.stats.drop_frame(used);
                    rb.consume(used);
                }
                Err(e) => {
                    self.stats.drop_frame(rb.data().len());
                    self.process(rb.whole(), frames);
                    frames.clear();
                    return Err(e.into());
                }
            }
        }
        if !frames.is_empty() {
            self.process(rb.whole(), frames);
            frames.clear();
        }
        Ok(())
    }

    /// A lone requester waits for its RESPONSE by reading the socket itself
    /// (when the reader thread is not busy with it), for up to `SPIN`: this
    /// saves the hand-off from the reader thread on every round trip. It
    /// handles only RESPONSEs at the front of what it read; anything else
    /// is left, in order, for the reader thread, which it wakes.
    pub(super) fn spin_reading(&self, slot: &Slot) {
        let until = Instant::now() + SPIN;
        let decoder = FrameDecoder::new(self.settings.max_frame);
        while !slot.is_ready() && Instant::now() < until {
            if let Some(mut st) = self.read.try_lock() {
                if st.ended.is_none() && !st.left_for_reader {
                    self.read_responses(&decoder, &mut st);
                }
            }
            if slot.is_ready() {
                break;
            }
            std::thread::yield_now();
        }
    }

    fn read_responses(&self, decoder: &FrameDecoder, st: &mut ReadState) {
        let fd = self.sock.as_raw_fd();
        let n = match read_now(&mut st.rb, fd) {
            Ok(ReadOutcome::Bytes(n)) => n,
            Ok(ReadOutcome::Nothing) => return,
            Ok(ReadOutcome::End) => {
                st.ended = Some(Ok(()));
                self.wake_reader.ring();
                return;
            }
            Err(e) => {
                st.ended = Some(Err(e));
                self.wake_reader.ring();
                return;
            }
        };
        Stats::add(&self.stats.n_rxbyte, n as u64);
        let rb = &mut st.rb;
        let mut left_for_reader = false;
        while !rb.data().is_empty() {
            let (f, used) = match decoder.decode(rb.data()) {
                Ok(None) => break,
                Ok(Some((Decoded::Frame(f), used))) if f.kind == Kind::Request => (f, used),
                _ => {
                    left_for_reader = true;
                    break;
                }
            };
            let class = {
                let mut ex = self.ex.lock();
                ex.is_response(f.opaque)
                    .then(|| ex.classify_request(f.opaque))
            };
            let Some(class) = class else {
                left_for_reader = true;
                break;
            };
            let body = body_range(rb.data(), f.body, rb.offset());
            let fref = FrameRef {
                kind: f.kind,
                opaque: f.opaque,
                body: body.clone(),
                len: used,
            };
            Stats::incr(&self.stats.n_rx);
            self.deliver_response(&fref, &rb.whole()[body], class);
            rb.consume(used);
        }
        rb.settle(n);
        if left_for_reader {
            st.left_for_reader = true;
            self.wake_reader.ring();
        }
    }
}

pub(super) struct ReadState {
    rb: ReadBuf,
    frames: Vec<FrameRef>,
    /// What a requester's read found instead of bytes: the end (Ok) or an error.
    ended: Option<std::io::Result<()>>,
    /// A requester left whole frames that are not RESPONSEs at the front of
    /// `rb`: until the reader thread has handled them, requesters neither
    /// read nor decode, so the buffer never holds more than the reader's own
    /// reads would (one partial frame and one read).
    left_for_reader: bool,
}

impl ReadState {
    pub(super) fn new(buffersize: usize, max_frame: usize) -> Self {
        ReadState {
            rb: ReadBuf::new(buffersize, max_frame),
            frames: Vec::new(),
            ended: None,
            left_for_reader: false,
        }
    }
}

/// What one non-blocking read gave.
enum ReadOutcome {
    Bytes(usize),
    Nothing,
    End,
}

/// Where `body` (a sub-slice of `window`, or an empty slice from anywhere)
/// sits in the read buffer, `window` starting at `offset`.
fn body_range(window: &[u8], body: &[u8], offset: usize) -> Range<usize> {
    let at = (body.as_ptr() as usize).wrapping_sub(window.as_ptr() as usize);
    if body.is_empty() || at > window.len() || at + body.len() > window.len() {
        return offset..offset;
    }
    offset + at..offset + at + body.len()
}

fn read_now(rb: &mut ReadBuf, fd: RawFd) -> std::io::Result<ReadOutcome> {
    match rb.fill_now(fd) {
        Ok(0) => Ok(ReadOutcome::End),
        Ok(n) => Ok(ReadOutcome::Bytes(n)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(ReadOutcome::Nothing),
        Err(e) => Err(e),
    }
}

/// An eventfd that a requester rings to wake the reader thread out of
/// `poll()` when it left frames for it, or saw the connection end.
pub(super) struct Doorbell(OwnedFd);

impl Doorbell {
    pub(super) fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd returns a new descriptor we own, or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, open descriptor owned by nobody else.
        Ok(Doorbell(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ring(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a local u64 to our eventfd. It can only
        // fail when the counter would overflow, and then it is rung anyway.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Blocks until `sock` has something to read (or has ended) or the bell
    /// rang; clears the bell.
    fn wait_with(&self, sock: RawFd) -> std::io::Result<()> {
        let bell = self.0.as_raw_fd();
        let mut fds = [sock, bell].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        loop {
            // SAFETY: two valid pollfd entries owned by this frame.
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } >= 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        if fds[1].revents != 0 {
            let mut count = 0u64;
            // SAFETY: reads 8 bytes into a local u64 (resets the eventfd; it
            // is non-blocking, so a lost race with another reset is harmless).
            unsafe { libc::read(bell, (&mut count as *mut u64).cast(), 8) };
        }
        Ok(())
    }
}
