//! The receive side of a transport. The reader thread reads the socket,
//! decodes frames and hands each read's frames to `dispatch`. While this
//! side has requests going, one waiting requester at a time may take
//! RESPONSEs straight off the socket, its own and any others' (saving a
//! thread hand-off per round trip): it peeks, and takes only whole
//! RESPONSEs at the front; everything else stays in the socket, in order,
//! for the reader thread, which then waits in poll().
//!
//! Over TLS, records cannot be peeked at: the requester decrypts what the
//! socket holds into the reader's buffer and takes the RESPONSEs at its
//! front. What it leaves is then no longer in the socket, so it rings the
//! link's doorbell, which the reader polls beside the socket, and the
//! reader handles what is buffered before it reads again.

use std::io::ErrorKind;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::idle_spin::IdleSpin;
use super::{Core, Handler, ReadSide};
use crate::codec::{Decoded, FrameDecoder, Kind};
use crate::errors::{Error, ProtocolError, Result};
use crate::exchange::Slot;
use crate::io::{Doorbell, Link, TlsLink};
use crate::protocol::{body_range, Dropped, FrameRef};
use crate::readbuf::ReadBuf;
use crate::stats::Stats;
use crate::writer::Outbox;

/// How long a requester reads for its RESPONSE before sleeping on its slot:
/// a loopback round trip is tens of microseconds, and a futex sleep adds a
/// wake-up of about that much again. Only one waiter at a time does it
/// (many spinning threads would starve the reader).
const SPIN: Duration = Duration::from_micros(50);

/// How the read loop ended without an error.
pub(super) enum End {
    PeerClosed,
    /// Nothing arrived for `idle.timeout`.
    Idle(Duration),
}

/// What one read of the socket's bytes at hand found (`read_now`).
pub(super) enum ReadNow {
    /// Nothing yet (or a signal): wait for readiness again.
    Nothing,
    /// This many bytes arrived (counted in `n_rxbyte`).
    Got(usize),
    /// Reading is over: the end of input, an error, or closed already.
    Ended(Result<End>),
}

impl<H: Handler> Core<H> {
    /// Reads what the socket holds now, without blocking, into the read
    /// side's buffer: the shared reader's and a caller's loop's read.
    pub(super) fn read_now(&self, side: &mut ReadSide) -> ReadNow {
        let Some(fd) = side.sock.as_ref().map(|s| s.fd()) else {
            return ReadNow::Ended(Ok(End::PeerClosed));
        };
        match side.buf.fill_now(fd) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                ReadNow::Nothing
            }
            Err(e) => ReadNow::Ended(Err(e.into())),
            Ok(0) => ReadNow::Ended(self.end_of_input(side.buf.data().len())),
            Ok(n) => {
                Stats::add(&self.stats.n_rxbyte, n as u64);
                ReadNow::Got(n)
            }
        }
    }

    pub(super) fn run_reader(self: Arc<Self>) {
        Outbox::mark_reader_thread();
        let me = self.clone();
        self.session
            .handler()
            .reader_thread(&mut || me.reader_body());
        // Done with Python for good: unless close() is joining this thread
        // already, detach it so its stack goes now, not with the handle.
        drop(self.reader.lock().take());
    }

    fn reader_body(self: &Arc<Self>) {
        let ended = self.read_loop();
        self.reading_ended(ended);
    }

    /// The end of reading, by the reader thread or the shared reader:
    /// logs why and closes the transport.
    pub(super) fn reading_ended(&self, ended: Result<End>) {
        let broken = match &ended {
            Err(Error::Protocol(p)) => Some(p.clone()),
            _ => None,
        };
        if matches!(ended, Err(Error::Tls(_))) {
            self.tls_failed.store(true, Ordering::Release);
        }
        let reason = match ended {
            // This side's close() shut the socket: its reason stands.
            _ if self.is_closed() => self.close_reason(),
            Ok(End::PeerClosed) => "peer closed the connection".to_string(),
            Ok(End::Idle(t)) => {
                let why = format!(
                    "idle: no byte from the peer in {} s (idle.timeout)",
                    t.as_secs_f64()
                );
                log::info!("gofast[{}]: connection ends: {why}", self.session.name);
                why
            }
            Err(e) => {
                log::warn!("gofast[{}]: connection ends: {e}", self.session.name);
                e.to_string()
            }
        };
        self.finish_close(&reason, broken.as_ref());
    }

    /// A read found the end of the stream; `partial` bytes of a frame
    /// were left unfinished.
    pub(super) fn end_of_input(&self, partial: usize) -> Result<End> {
        if partial > 0 {
            self.stats.drop_frame(partial);
            return Err(ProtocolError::Truncated(partial).into());
        }
        Ok(End::PeerClosed)
    }

    fn read_loop(self: &Arc<Self>) -> Result<End> {
        let decoder = FrameDecoder::new(self.session.settings.max_frame);
        // Ours for the thread's life: the fd stays open while we read it.
        let Some(sock) = self.read.lock().sock.clone() else {
            return Ok(End::PeerClosed);
        };
        let fd = sock.fd();
        // The idle timeout costs nothing per read: blocking recv() times out
        // by SO_RCVTIMEO, set once, and poll() takes it as its timeout.
        let idle = self.session.settings.idle_timeout;
        if idle.is_some() {
            sock.socket.set_read_timeout(idle)?;
        }
        let kick = || self.outbox.kick();
        let poll_ms = poll_timeout(idle);
        let mut frames: Vec<FrameRef> = Vec::new();
        let mut requests_seen = u64::MAX;
        let mut spin = IdleSpin::default();
        let mut peer_requests_seen = 0;
        loop {
            // While this side has requests going, wait in poll() and leave
            // the socket to a requester that takes its own RESPONSE; else
            // block in recv(), one system call per read instead of two.
            let requests = self.stats.n_txreq.load(Ordering::Relaxed);
            let requesters_read = self.session.handler().requesters_read()
                && (requests != requests_seen || self.waiters.load(Ordering::Acquire) > 0);
            requests_seen = requests;
            // Over TLS, a read may have left records or plaintext to take.
            let buffered = || sock.tls.as_ref().is_some_and(|t| !t.all_taken());
            if requesters_read && !buffered() {
                // Requesters may take bytes off the socket meanwhile: only a
                // wait through which none arrived (n_rxbyte) is idle.
                let seen = self.stats.n_rxbyte.load(Ordering::Relaxed);
                let bell = sock.tls.as_ref().and_then(TlsLink::reader_bell);
                if !wait_readable(fd, bell, poll_ms)?
                    && self.stats.n_rxbyte.load(Ordering::Relaxed) == seen
                {
                    if let Some(t) = idle {
                        return Ok(End::Idle(t));
                    }
                }
            }
            let mut side = self.read.lock();
            let rb = &mut side.buf;
            if sock.is_tls() && !rb.data().is_empty() {
                // A requester's read over TLS may have left whole frames.
                self.decode_and_process(&decoder, rb, &mut frames)?;
                rb.settle(0);
            }
            let n = if requesters_read {
                match sock.fill(rb, true, &kick) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    r => r?,
                }
            } else {
                // A reader that has just had REQUESTs to answer may poll for
                // the next ones; one that only receives (POSTs, a stream)
                // sleeps, leaving the core to the threads making its data.
                let peer_requests = self.stats.n_rxreq.load(Ordering::Relaxed);
                let answering =
                    peer_requests != peer_requests_seen && self.session.handler().reader_polls();
                peer_requests_seen = peer_requests;
                let read = if answering {
                    read_or_sleep(rb, &sock, &mut spin, &kick)
                } else {
                    sock.fill(rb, false, &kick)
                };
                // The reader holds `read` here, so no requester took bytes:
                // a timed-out recv() means none came for the whole timeout.
                match (read, idle) {
                    (Err(e), Some(t)) if is_timeout(&e) => return Ok(End::Idle(t)),
                    (r, _) => r?,
                }
            };
            if n == 0 {
                return self.end_of_input(rb.data().len());
            }
            Stats::add(&self.stats.n_rxbyte, n as u64);
            self.decode_and_process(&decoder, rb, &mut frames)?;
            rb.settle(n);
        }
    }

    /// Decodes every whole frame in the buffer and handles them as one batch.
    pub(super) fn decode_and_process(
        self: &Arc<Self>,
        decoder: &FrameDecoder,
        rb: &mut ReadBuf,
        frames: &mut Vec<FrameRef>,
    ) -> Result<()> {
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
                    self.session
                        .note_peer(format_args!("dropped a frame of {used} bytes: {e}"));
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

    /// A requester waits for its RESPONSE by reading the socket itself
    /// (when the reader thread is not busy with it), for up to `SPIN`: this
    /// saves the hand-off from the reader thread on every round trip.
    pub(super) fn spin_reading(&self, slot: &Slot) {
        let until = Instant::now() + SPIN;
        let decoder = FrameDecoder::new(self.session.settings.max_frame);
        while !slot.is_ready() && Instant::now() < until {
            let mut dropped = Vec::new();
            let mut ring = None;
            if let Some(mut side) = self.read.try_lock() {
                let side = &mut *side;
                // A partial frame in the buffer is the reader's to finish.
                if let (Some(sock), true) = (side.sock.as_ref(), side.buf.data().is_empty()) {
                    match &sock.tls {
                        None => {
                            let fd = sock.fd();
                            self.take_responses(&decoder, &mut side.buf, fd, &mut dropped);
                        }
                        Some(tls) if tls.bell().is_some() => {
                            let buf = &mut side.buf;
                            if self.take_tls_responses(&decoder, buf, sock, tls, &mut dropped) {
                                ring = Some(sock.clone());
                            }
                        }
                        Some(_) => {}
                    }
                }
            }
            // Rung after the read lock is let go: the reader needs it.
            if let Some(tls) = ring.as_ref().and_then(|s| s.tls.as_ref()) {
                tls.ring_reader();
            }
            // Logged only now that the read lock is released.
            for (f, d) in dropped {
                self.session.log_drop(&f, &d.why);
                d.tell_requester();
            }
            if slot.is_ready() {
                break;
            }
            std::thread::yield_now();
        }
        // RESPONSEs it took for others may wait in a handler's queue.
        self.session.handler().received(&|| self.is_closed());
    }

    /// Over TLS, where records cannot be peeked at: reads what the socket
    /// holds (without blocking), decrypting it into the reader's buffer,
    /// and takes the whole RESPONSEs to our requests at its front. Returns
    /// whether the reader must look, as the socket will not tell it: frames
    /// or plaintext are left, or the read met the end or a failure (which
    /// the reader then meets again).
    fn take_tls_responses(
        &self,
        decoder: &FrameDecoder,
        rb: &mut ReadBuf,
        sock: &Link,
        tls: &TlsLink,
        dropped: &mut Vec<(FrameRef, Dropped)>,
    ) -> bool {
        let n = match sock.fill(rb, true, &|| self.outbox.kick()) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Ok(0) | Err(_) => return true,
            Ok(n) => n,
        };
        Stats::add(&self.stats.n_rxbyte, n as u64);
        let more = !tls.all_taken();
        let taken = self.deliver_front_responses(decoder, rb.data(), dropped);
        rb.consume(taken);
        let left = !rb.data().is_empty();
        rb.settle(n);
        more || left
    }

    /// Peeks at the socket and takes off it only the whole RESPONSEs to our
    /// requests at its front, delivering them. Anything else (other frames,
    /// a partial frame, the end of the connection, an error) stays in the
    /// socket, in order, where the reader thread's poll() sees it.
    fn take_responses(
        &self,
        decoder: &FrameDecoder,
        rb: &mut ReadBuf,
        fd: RawFd,
        dropped: &mut Vec<(FrameRef, Dropped)>,
    ) {
        let Ok(peeked) = rb.peek(fd) else {
            return;
        };
        let taken = self.deliver_front_responses(decoder, peeked, dropped);
        if taken > 0 {
            // Peeked bytes stay readable until read, so this takes them all;
            // were it ever cut short, the reader would see a broken frame
            // and end the connection with a ProtocolError.
            let _ = rb.skip(fd, taken);
            Stats::add(&self.stats.n_rxbyte, taken as u64);
        }
    }

    /// Delivers the whole RESPONSEs to our requests at the front of
    /// `bytes`; returns how many bytes they took. Only awaited ones: late
    /// and stray RESPONSEs, like every other frame, are the reader's.
    fn deliver_front_responses(
        &self,
        decoder: &FrameDecoder,
        bytes: &[u8],
        dropped: &mut Vec<(FrameRef, Dropped)>,
    ) -> usize {
        let mut taken = 0;
        while let Ok(Some((Decoded::Frame(f), used))) = decoder.decode(&bytes[taken..]) {
            if f.kind != Kind::Request {
                break;
            }
            let Some(class) = self.session.take_awaited(f.opaque) else {
                break;
            };
            let frame = FrameRef {
                kind: f.kind,
                opaque: f.opaque,
                body: body_range(&bytes[taken..], f.body, taken),
                len: used,
            };
            Stats::incr(&self.stats.n_rx);
            let body = &bytes[frame.body.clone()];
            if let Some(d) = self.session.deliver_response(&frame, body, class) {
                dropped.push((frame, d));
            }
            taken += used;
        }
        taken
    }
}

/// A blocking read, polling first for as long as `idle` says.
fn read_or_sleep(
    rb: &mut ReadBuf,
    link: &Link,
    idle: &mut IdleSpin,
    kick: &dyn Fn(),
) -> std::io::Result<usize> {
    let budget = idle.budget();
    if !budget.is_zero() {
        let until = Instant::now() + budget;
        loop {
            match link.fill(rb, true, kick) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                r => return r,
            }
            if Instant::now() >= until {
                break;
            }
            std::thread::yield_now();
        }
        idle.missed();
    }
    let began = Instant::now();
    let n = link.fill(rb, false, kick)?;
    idle.slept(began.elapsed());
    Ok(n)
}

/// A blocking recv() that ended by SO_RCVTIMEO.
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// poll()'s timeout for `idle.timeout`: whole milliseconds, rounded up so
/// it never ends before the timeout; -1 (none) when it is off. Settings
/// keep it within an i32.
fn poll_timeout(idle: Option<Duration>) -> libc::c_int {
    idle.map_or(-1, |t| {
        let ms = t.as_nanos().div_ceil(1_000_000);
        libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
    })
}

/// Blocks until the socket has something to read, or has ended, or `bell`
/// rang (true, the ring taken), or for `timeout_ms` (false; -1 waits as
/// long as it takes).
fn wait_readable(
    fd: RawFd,
    bell: Option<&Doorbell>,
    timeout_ms: libc::c_int,
) -> std::io::Result<bool> {
    let watch = |fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut pfds = [watch(fd), watch(bell.map_or(-1, Doorbell::fd))];
    let count = if bell.is_some() { 2 } else { 1 };
    loop {
        // SAFETY: `count` valid pollfds owned by this frame.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), count, timeout_ms) };
        if n >= 0 {
            if let Some(bell) = bell.filter(|_| pfds[1].revents != 0) {
                bell.clear();
            }
            return Ok(n > 0);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
