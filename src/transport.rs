//! One gofast transport over one TCP connection: the threaded socket driver
//! of a `protocol::Session`, which holds the protocol itself (handshake,
//! exchanges, built-in messages, statistics). This module owns what the
//! session does not: the socket, a reader thread that reads it and hands
//! each read's frames to the session (`receive`) or the shared reader that
//! reads many transports from one thread (`poller`), the writer thread and its
//! send queue (`writer::Outbox`, the session's `FrameSink`), requesters
//! that read their own RESPONSEs (`receive::spin_reading`), closing and
//! joining, and fork() safety. What runs for an application message is
//! behind the `Handler` trait, so this module knows nothing of Python.
//!
//! # Locks and the GIL
//!
//! Every Rust lock of a transport is declared in `Core`, `Session`
//! (`protocol/mod.rs`), `Outbox` (`writer.rs`), `Exchanges`/`Slot`
//! (`exchange.rs`) and `PyHandler` (`python/handler.rs`), plus the
//! process-wide `LIVE` and stats registry. Two rules keep a Python process
//! from freezing:
//!
//! 1. No thread takes the GIL while it holds a Rust lock: no Python call, no
//!    log record (pyo3-log takes the GIL), no drop of a Python object that
//!    could be the last reference (its `__del__` may run anything) happens
//!    under a guard. What must be logged or dropped is carried out of the
//!    critical section (`Outbox::fail_write`, `release`, `deliver_response`,
//!    `PyHandler::subscribe`).
//! 2. So a thread holding the GIL may wait for any of those locks: their
//!    holders never wait for the GIL, and hold them for microseconds.
//!
//! The one lock held while the GIL is taken is `read`: the reader thread
//! keeps the socket's read side across dispatching a batch, so frames are
//! handled in the order they arrived. It is safe because only the reader
//! ever *waits* for `read`, and only without the GIL; requesters merely
//! `try_lock` it (without the GIL) and never log while holding it. The
//! shared reader (`poller.rs`) holds the `read` of every connection of a
//! pass at once, all taken without the GIL; `finish_close` takes it
//! without the GIL too. A loop that reads its socket (`caller_read.rs`)
//! takes it detached. The exception is a dropped handle of a transport a
//! loop reads (`close_nowait`, with the GIL): by then no loop can be
//! reading it (its watch held the handle), and nothing else holding `read`
//! waits for the GIL.
//!
//! Nesting order, outer first: `read` → `Session::ex` → `Slot`; `read` →
//! `Outbox` state; `read` → a TLS link's `rx` → `conn` (`io/tls.rs`).
//! Every other lock is a leaf: nothing is locked while it is held
//! (`Session::peer` and `silent_since`, `Core::hs`, `sock`, `reader`,
//! `writer`, `Poller::conns`, the shared poller's slot).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crate::sync::{Condvar, Mutex};

use crate::builtin::{Whoami, WHOAMI_ID};
use crate::codec::Kind;
use crate::errors::{Error, ProtocolError, Result};
use crate::exchange::{Origin, OwnedMessage};
use crate::forks;
use crate::io::{Address, Link, PeerCertificate};
use crate::protocol::{FrameRef, FrameSink, Session};
use crate::readbuf::ReadBuf;
use crate::settings::Settings;
use crate::stats::{self, Stats};
use crate::writer::{Data, Outbox};

mod caller_read;
mod idle_spin;
mod poller;
pub use poller::{NoHooks, Poller, PollerHooks};
mod receive;
#[cfg(test)]
mod test_pair;

pub use crate::protocol::{Dispatched, Handler, PendingRequest, WAKE_EVERY};

/// The driver's side of the handshake; the protocol's is in the session.
#[derive(Default)]
struct HandshakeState {
    /// The reader thread has been started (by `handshake()`).
    started: bool,
    /// `finish_close` has run: what `close()` of a polled transport waits for.
    ended: bool,
    /// `finish_close` has begun (it runs once: by the reader, or by
    /// `close()` of a transport its owner's loop reads).
    finishing: bool,
}

pub struct Core<H: Handler> {
    session: Arc<Session<H>>,
    /// The session's counters, which the driver adds bytes and writes to.
    pub stats: Arc<Stats>,
    outbox: Arc<Outbox>,
    /// For shutdown(); taken out at close. The reader thread, the writer
    /// and the read side each hold a clone while they may use the fd, so
    /// it closes when the last of them lets go, never under a user.
    sock: Mutex<Option<Arc<Link>>>,
    /// Known from the start, so they stay known after the peer has gone.
    local_addr: Option<Address>,
    peer_addr: Option<Address>,
    /// Set once the link is ready for gofast frames: at once for a plain
    /// socket, after the TLS handshake (in `handshake()`) for TLS. Held by
    /// a thread running that TLS handshake; a leaf lock.
    link_ready: Mutex<bool>,
    tls: bool,
    /// The reader ended on a TLS failure (a TLS 1.3 client learns that the
    /// server refused its certificate only after its own handshake).
    tls_failed: AtomicBool,
    hs: Mutex<HandshakeState>,
    /// Wakes `handshake()` when the session has answered the peer's whoami
    /// (the reader checks after each batch) or the transport closes.
    hs_cv: Condvar,
    /// The reader has told `hs_cv` that the peer's whoami is answered.
    hs_told: AtomicBool,
    /// Threads waiting in `wait_response`.
    waiters: AtomicUsize,
    /// One of them is reading for its RESPONSE (`spin_reading`): at most
    /// one at a time, as many spinning threads would starve the reader.
    spinner: AtomicBool,
    reader: Mutex<Option<JoinHandle<()>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    reader_id: OnceLock<ThreadId>,
    /// The shared reader that reads this transport instead of a thread of
    /// its own (`use_poller`), set before the handshake.
    poller: OnceLock<Arc<Poller<H>>>,
    /// The owner's event loop reads the socket when it is readable
    /// (`use_caller_reader`, `read_ready`) instead of a reader thread.
    caller_reads: AtomicBool,
    /// The receive buffer and the socket to read, held by whoever reads:
    /// the reader thread, or a requester taking its own RESPONSE (`receive`).
    read: Mutex<ReadSide>,
}

struct ReadSide {
    buf: ReadBuf,
    /// `None` once closed: requesters then leave the socket alone.
    sock: Option<Arc<Link>>,
}

/// What `close_all_transports` needs of a transport, whatever its handler.
trait Closable: Send + Sync {
    fn close_for_exit(self: Arc<Self>);
}

impl<H: Handler> Closable for Core<H> {
    fn close_for_exit(self: Arc<Self>) {
        self.close("process is exiting");
    }
}

/// Every transport not yet closed and joined, for `close_all_transports`.
static LIVE: Mutex<Vec<std::sync::Weak<dyn Closable>>> = Mutex::new(Vec::new());

/// Closes every transport of the process and joins its threads. Called at
/// interpreter exit: a reader thread that touches Python after the
/// interpreter is finalized would be killed in the middle of Rust code.
pub fn close_all_transports() {
    let live: Vec<_> = std::mem::take(&mut *LIVE.lock());
    for core in live.into_iter().filter_map(|w| w.upgrade()) {
        core.close_for_exit();
    }
}

/// Thread stacks: the reader runs Python handlers, the writer only Rust.
const READER_STACK: usize = 1024 * 1024;
const WRITER_STACK: usize = 128 * 1024;
/// How long `close()` waits for queued frames to reach the socket.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// The driver's send queue is the session's sink.
impl FrameSink for Outbox {
    fn push(&self, out: crate::writer::Out<'_>, urgency: crate::writer::Urgency) -> Result<bool> {
        Outbox::push(self, out, urgency)
    }

    fn corked(&self, quick: bool, run: &mut dyn FnMut()) {
        Outbox::corked(self, quick, run)
    }

    fn deferred(&self, run: &mut dyn FnMut()) -> bool {
        Outbox::deferred(self, run).1
    }

    fn flush_deferred(&self) {
        Outbox::flush_deferred(self)
    }

    fn set_encodings(&self, encodings: Vec<crate::codec::Encoding>) {
        Outbox::set_encodings(self, encodings)
    }

    fn wait_room(&self, until: Instant) {
        Outbox::wait_room(self, Some(until))
    }
}

impl<H: Handler> Core<H> {
    /// Wraps a connected socket and starts its writer thread. The reader
    /// starts with `handshake()`, so handlers are subscribed before any
    /// message can arrive.
    pub fn new(
        name: &str,
        link: Link,
        version: u64,
        settings: Settings,
        handler: H,
    ) -> Result<Arc<Self>> {
        settings.validate()?;
        forks::watch();
        link.socket.configure()?;
        let (local_addr, peer_addr) = (link.socket.local_addr(), link.socket.peer_addr());
        let tls = link.is_tls();
        let sock = Arc::new(link);
        let stats = Arc::new(Stats::default());
        let (buffersize, max_frame) = (settings.buffersize as usize, settings.max_frame);
        let outbox = Arc::new(Outbox::new(
            sock.clone(),
            stats.clone(),
            settings.batchsize,
            settings.max_pending,
            settings.flush_period,
            settings.gzip_level,
            settings.opaque_start,
        ));
        let sink: Arc<dyn FrameSink> = outbox.clone();
        let session = Session::new(name, version, settings, stats.clone(), sink, handler)?;
        let core = Arc::new(Core {
            session: Arc::new(session),
            stats,
            outbox: outbox.clone(),
            sock: Mutex::new(Some(sock.clone())),
            local_addr: local_addr.clone(),
            peer_addr: peer_addr.clone(),
            link_ready: Mutex::new(!tls),
            tls,
            tls_failed: AtomicBool::new(false),
            hs: Mutex::new(HandshakeState::default()),
            hs_cv: Condvar::new(),
            hs_told: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
            spinner: AtomicBool::new(false),
            reader: Mutex::new(None),
            writer: Mutex::new(None),
            reader_id: OnceLock::new(),
            poller: OnceLock::new(),
            caller_reads: AtomicBool::new(false),
            read: Mutex::new(ReadSide {
                buf: ReadBuf::new(buffersize, max_frame),
                sock: Some(sock),
            }),
        });
        stats::register(name, &core.session.stats);
        {
            let mut live = LIVE.lock();
            live.retain(|w| w.strong_count() > 0);
            let weak: std::sync::Weak<dyn Closable> =
                Arc::downgrade(&core) as std::sync::Weak<Self>;
            live.push(weak);
        }
        let writer = std::thread::Builder::new()
            .name(format!("gofast-tx-{name}"))
            .stack_size(WRITER_STACK)
            .spawn(move || outbox.run_writer())?;
        *core.writer.lock() = Some(writer);
        log::info!(
            "gofast[{name}]: connected{}, local {}, peer {}",
            if tls { " (TLS to follow)" } else { "" },
            fmt_addr(local_addr.as_ref()),
            fmt_addr(peer_addr.as_ref())
        );
        Ok(core)
    }

    /// The protocol state this transport drives; what handlers get.
    pub fn session(&self) -> &Arc<Session<H>> {
        &self.session
    }

    pub fn name(&self) -> &str {
        &self.session.name
    }

    pub fn settings(&self) -> &Settings {
        &self.session.settings
    }

    pub fn handler(&self) -> &H {
        self.session.handler()
    }

    pub fn is_closed(&self) -> bool {
        self.session.is_closed()
    }

    /// Why the transport closed ("" while open).
    pub fn close_reason(&self) -> String {
        self.session.close_reason()
    }

    /// Whether the reader runs (from `handshake()` on), so a RESPONSE can
    /// arrive.
    pub fn is_receiving(&self) -> bool {
        self.reader_id.get().is_some() // no lock: this is on every request
    }

    pub fn local_addr(&self) -> Option<&Address> {
        self.local_addr.as_ref()
    }

    pub fn peer_addr(&self) -> Option<&Address> {
        self.peer_addr.as_ref()
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The peer's certificate, once a TLS handshake has checked it (None
    /// without TLS, or when the peer presented none).
    pub fn peer_certificate(&self) -> Option<PeerCertificate> {
        let sock = self.sock.lock().clone();
        sock.and_then(|l| l.tls.as_ref().and_then(|t| t.peer_certificate()))
    }

    /// False in a fork()ed child: the transport belongs to the parent,
    /// whose threads and connection the child must never touch.
    pub fn in_owner_process(&self) -> bool {
        self.session.in_owner_process()
    }

    /// Wakes every thread blocked on the socket; the fd stays open until
    /// its users have let go.
    fn shutdown_socket(&self) {
        if let Some(sock) = &*self.sock.lock() {
            let _ = sock.socket.shutdown();
        }
    }

    pub fn whoami(&self) -> Whoami {
        self.session.whoami()
    }

    /// Whether errors are reported to the peer (and read from it): both
    /// sides advertised `x-errors`.
    pub fn errors_ext(&self) -> bool {
        self.session.errors_ext()
    }

    /// See `Session::send_error`.
    pub fn send_error(&self, kind: Kind, opaque: u64, type_name: &str, message: &str) {
        self.session.send_error(kind, opaque, type_name, message)
    }

    pub fn peer(&self) -> Option<Whoami> {
        self.session.peer()
    }

    /// Time since the peer's last heartbeat, if one arrived.
    pub fn silent_since(&self) -> Option<Duration> {
        self.session.silent_since()
    }

    pub fn set_flush_period(&self, period: Option<Duration>) {
        self.outbox.set_flush_period(period);
    }

    pub fn set_heartbeat(&self, period: Option<Duration>) {
        self.outbox.set_heartbeat(period);
    }

    /// (opaques held by exchanges we started, streams the peer opened)
    pub fn exchanges_in_use(&self) -> (usize, usize) {
        self.session.exchanges_in_use()
    }

    pub fn is_reader_thread(&self) -> bool {
        self.reader_id.get() == Some(&std::thread::current().id())
    }

    // ---- handshake -------------------------------------------------------

    /// Exchanges whoami with the peer (docs/protocol.md §4): sends ours, waits for
    /// theirs, and until we have answered theirs. Starts the reader.
    /// `between` runs every `WAKE_EVERY` of the wait (the Python front end
    /// checks for signals there); its error ends the handshake.
    pub fn handshake(
        self: &Arc<Self>,
        timeout: Duration,
        between: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Whoami> {
        let deadline = Instant::now() + timeout;
        self.ready_link(deadline, timeout, between)?;
        self.start_reader()?;
        let ours = self.session.whoami().encode();
        let pending = self.send_request(WHOAMI_ID, &ours, false, between)?;
        // A late whoami keeps its opaque, as any timed-out request's.
        let reply = self
            .await_response(&pending, Some((deadline, timeout)), between)
            .map_err(|e| self.tls_cause(e))?;
        let peer = self.session.handshake_reply(&reply)?;
        loop {
            {
                let mut hs = self.hs.lock();
                let slice = (Instant::now() + WAKE_EVERY).min(deadline);
                while !self.session.answered_peer() && !self.is_closed() {
                    if self.hs_cv.wait_until(&mut hs, slice).timed_out() {
                        break;
                    }
                }
                if self.session.answered_peer() {
                    return Ok(peer);
                }
            }
            if self.is_closed() {
                let e = Error::Closed("closed during handshake".into());
                return Err(self.tls_cause(e));
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(timeout));
            }
            between()?;
        }
    }

    /// Runs the TLS handshake, once, before any gofast frame; a failure
    /// closes the transport (the peer learns from the alert rustls sent).
    fn ready_link(
        self: &Arc<Self>,
        deadline: Instant,
        timeout: Duration,
        between: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        let mut ready = self.link_ready.lock();
        if *ready {
            return Ok(());
        }
        if self.is_closed() {
            return Err(Error::Closed(self.close_reason()));
        }
        let link = self.sock.lock().clone();
        let Some(link) = link else {
            return Err(Error::Closed(self.close_reason()));
        };
        let Some(tls) = &link.tls else {
            *ready = true;
            return Ok(());
        };
        match tls.handshake(&link.socket, deadline, timeout, WAKE_EVERY, between) {
            Ok(()) => {
                *ready = true;
                drop(ready);
                self.outbox.open();
                let peer = tls.peer_certificate();
                log::info!(
                    "gofast[{}]: TLS established, peer certificate {:?}",
                    self.name(),
                    peer.as_ref().map_or("none", |p| p.subject.as_str())
                );
                Ok(())
            }
            Err(e) => {
                drop(ready);
                drop(link);
                let why = e.to_string();
                log::warn!("gofast[{}]: {why}", self.name());
                self.close(&why);
                Err(e)
            }
        }
    }

    /// A close that TLS caused, told as the TLS error it was.
    fn tls_cause(&self, e: Error) -> Error {
        match e {
            Error::Closed(_) if self.tls_failed.load(Ordering::Acquire) => {
                Error::Tls(self.close_reason())
            }
            e => e,
        }
    }

    /// Has `poller` read this transport instead of a reader thread, if it
    /// can: not over TLS (records are decrypted by their reader), nor with
    /// `idle.timeout` (the reader thread's timed wait), and only before the
    /// handshake. Returns whether it will.
    pub fn use_poller(&self, poller: Arc<Poller<H>>) -> bool {
        if self.needs_own_reader() || self.hs.lock().started {
            return false;
        }
        self.poller.set(poller).is_ok()
    }

    /// TLS records are decrypted by their reader thread, and `idle.timeout`
    /// is that thread's timed wait: neither can be read by someone else.
    fn needs_own_reader(&self) -> bool {
        self.tls || self.session.settings.idle_timeout.is_some()
    }

    fn start_reader(self: &Arc<Self>) -> Result<()> {
        {
            let mut hs = self.hs.lock();
            if hs.started {
                return Ok(());
            }
            if self.is_closed() {
                return Err(Error::Closed("transport is closed".into()));
            }
            hs.started = true;
        }
        if self.caller_reads.load(Ordering::Acquire) {
            // The calling thread's loop reads from now on: it is the reader.
            let _ = self.reader_id.set(std::thread::current().id());
            return Ok(());
        }
        if let Some(poller) = self.poller.get() {
            if let Some(id) = poller.thread_id() {
                let _ = self.reader_id.set(id);
            }
            let fd = self.read.lock().sock.as_ref().map(|s| s.fd());
            let Some(fd) = fd else {
                return Err(Error::Closed(self.close_reason()));
            };
            return poller.add(self.clone(), fd).inspect_err(|e| {
                self.hs.lock().started = false;
                self.close(&e.to_string());
            });
        }
        let me = self.clone();
        let handle = std::thread::Builder::new()
            .name(format!("gofast-rx-{}", self.session.name))
            .stack_size(READER_STACK)
            .spawn(move || me.run_reader())?;
        let _ = self.reader_id.set(handle.thread().id());
        *self.reader.lock() = Some(handle);
        Ok(())
    }

    /// Hands one read's frames to the session; wakes `handshake()` once
    /// the session has answered the peer's whoami.
    fn process(&self, buf: &[u8], frames: &[FrameRef]) {
        self.session.receive(buf, frames);
        if !self.hs_told.load(Ordering::Relaxed) && self.session.answered_peer() {
            self.hs_told.store(true, Ordering::Relaxed);
            let _hs = self.hs.lock(); // not between handshake()'s check and wait
            self.hs_cv.notify_all();
        }
    }

    // ---- sending ---------------------------------------------------------

    /// Queues a POST. `Ok(false)`: the queue is full, wait for room and retry.
    pub fn post(&self, id: u64, data: Data<'_>, flush: bool) -> Result<bool> {
        self.session.post(id, data, flush)
    }

    /// Sends a REQUEST and registers where its RESPONSE goes. While the
    /// send queue is full it waits, running `between` every `WAKE_EVERY`.
    pub fn send_request(
        &self,
        id: u64,
        data: &[u8],
        compress: bool,
        between: &mut dyn FnMut() -> Result<()>,
    ) -> Result<PendingRequest> {
        if self.is_reader_thread() {
            return Err(reader_thread_request());
        }
        self.session.send_request(id, data, compress, between)
    }

    /// Sends several REQUESTs with one wake-up of the writer (the last one
    /// flushes them all). On an error, those already sent are expired.
    pub fn send_requests(
        &self,
        msgs: &[(u64, &[u8])],
        between: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Vec<PendingRequest>> {
        if self.is_reader_thread() {
            return Err(reader_thread_request());
        }
        self.session.send_requests(msgs, between)
    }

    /// Waits for the RESPONSE until `deadline`; `None` if it passed first
    /// (the request stays pending: call again, or `expire`).
    pub fn wait_response(
        &self,
        p: &PendingRequest,
        deadline: Option<Instant>,
    ) -> Option<Result<OwnedMessage>> {
        self.waiters.fetch_add(1, Ordering::AcqRel);
        // Whoever finds no one spinning spins, not only a lone waiter: with
        // many requesters one of them then keeps reading, and RESPONSEs that
        // it takes wake their requesters without the reader thread (16
        // threads: ~15 % more requests/s, lower p50 and p99).
        if !self.spinner.swap(true, Ordering::AcqRel) {
            self.spin_reading(&p.slot);
            self.spinner.store(false, Ordering::Release);
        }
        let r = p.slot.wait(deadline);
        self.waiters.fetch_sub(1, Ordering::AcqRel);
        r
    }

    /// Waits for the RESPONSE, running `between` every `WAKE_EVERY` (the
    /// Python front end checks for signals there). Past `limit` (the
    /// deadline, and the timeout it came from) or when `between` fails, the
    /// request is given up (`expire`).
    pub fn await_response(
        &self,
        p: &PendingRequest,
        limit: Option<(Instant, Duration)>,
        between: &mut dyn FnMut() -> Result<()>,
    ) -> Result<OwnedMessage> {
        loop {
            let slice = Instant::now() + WAKE_EVERY;
            let until = limit.map_or(slice, |(d, _)| d.min(slice));
            if let Some(reply) = self.wait_response(p, Some(until)) {
                return reply;
            }
            if let Some((_, timeout)) = limit.filter(|(d, _)| Instant::now() >= *d) {
                self.expire(p);
                return Err(Error::Timeout(timeout));
            }
            if let Err(e) = between() {
                self.expire(p);
                return Err(e);
            }
        }
    }

    /// The requester gives up; a late RESPONSE will be dropped.
    pub fn expire(&self, p: &PendingRequest) {
        self.session.expire(p)
    }

    /// Answers the peer's REQUEST `opaque`.
    pub fn respond(&self, opaque: u64, id: u64, data: Data<'_>, flush: bool) -> Result<bool> {
        self.session.respond(opaque, id, data, flush)
    }

    /// Opens a stream; `Ok(None)`: the queue is full, wait for room and retry.
    pub fn open_stream(
        &self,
        id: u64,
        data: Data<'_>,
        callback: H::Callback,
        flush: bool,
    ) -> Result<Option<u64>> {
        self.session.open_stream(id, data, callback, flush)
    }

    pub fn stream_send(
        &self,
        opaque: u64,
        origin: Origin,
        id: u64,
        data: Data<'_>,
        flush: bool,
    ) -> Result<bool> {
        self.session.stream_send(opaque, origin, id, data, flush)
    }

    /// Sends this side's FINISH (once); see `Session::stream_close`.
    pub fn stream_close(&self, opaque: u64, origin: Origin) -> Result<()> {
        self.session.stream_close(opaque, origin)
    }

    /// Blocks until the send queue has room (backpressure), or `until`.
    pub fn wait_room(&self, until: Instant) {
        self.outbox.wait_room(Some(until));
    }

    /// Makes everything queued due now.
    pub fn flush(&self) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed(self.close_reason()));
        }
        self.outbox.flush();
        Ok(())
    }

    // ---- closing -----------------------------------------------------------

    /// Flushes what is queued (for up to two seconds), closes the
    /// connection, fails every pending request and ends every open stream
    /// with an end-of-stream callback. Idempotent. Joins the transport's
    /// threads unless called from its own reader thread (a handler).
    pub fn close(self: &Arc<Self>, reason: &str) {
        if !self.in_owner_process() {
            return;
        }
        if self.session.mark_closed(reason) {
            let flushed = self.outbox.close(reason, CLOSE_LINGER);
            if flushed {
                self.say_close_notify();
            }
            self.shutdown_socket();
            self.hs_cv.notify_all();
            // A running reader sees the shutdown and finishes the close
            // itself, so stream callbacks never race its dispatch. A loop
            // that reads may not run again (or be this thread): finish now;
            // its dispatch only queues, and `finish_close` waits for `read`.
            if !self.hs.lock().started || self.caller_reads.load(Ordering::Acquire) {
                self.finish_close(reason, None);
            }
        }
        if !self.is_reader_thread() {
            let reader = self.reader.lock().take();
            if let Some(h) = reader {
                let _ = h.join();
            }
            self.wait_polled_end();
            self.join_writer();
        }
    }

    /// A polled transport ends on the poller's thread, which sees the
    /// shutdown as the end of input: wait for it, as for a reader thread.
    fn wait_polled_end(&self) {
        let Some(poller) = self.poller.get() else {
            return;
        };
        let mut hs = self.hs.lock();
        while hs.started && !hs.ended && poller.is_running() {
            self.hs_cv.wait_until(&mut hs, Instant::now() + WAKE_EVERY);
        }
    }

    /// Ends TLS properly (close_notify) once the writer has stopped; only
    /// when the TLS handshake is done (`link_ready`; `try_lock`: a thread
    /// still in that handshake holds it, and the shutdown wakes it).
    fn say_close_notify(&self) {
        let ready = self.link_ready.try_lock().is_some_and(|r| *r);
        let link = self.sock.lock().clone();
        if let (true, Some(link)) = (ready && self.tls, link) {
            if let Some(tls) = &link.tls {
                tls.send_close_notify(link.fd());
            }
        }
    }

    /// Closes without waiting for anything (for a dropped handle: it may run
    /// with the GIL held, which the reader may need to finish).
    pub fn close_nowait(&self) {
        if !self.in_owner_process() {
            return;
        }
        if self.session.mark_closed("transport dropped") {
            self.outbox.abort("transport dropped");
            self.shutdown_socket();
            self.hs_cv.notify_all();
            // No reader thread will see the shutdown when a loop reads (and
            // the loop that read it has let go of it): finish here, leaving
            // the stopped writer to end on its own.
            if self.caller_reads.load(Ordering::Acquire) && self.hs.lock().started {
                self.finish("transport dropped", None, false);
            }
        }
    }

    fn join_writer(&self) {
        let writer = self.writer.lock().take();
        if let Some(h) = writer {
            let _ = h.join();
        }
    }

    /// Runs once per transport: by the reader on its way out, or by
    /// `close()` when no reader was ever started. Lets go of everything
    /// but the counters: the socket (once its last user is done), both
    /// threads, the buffers, the exchanges and the handlers.
    fn finish_close(&self, reason: &str, broken: Option<&ProtocolError>) {
        self.finish(reason, broken, true);
    }

    /// `finish_close`, joining the writer thread or (`join` false, for a
    /// dropped handle, which may hold the GIL) letting it end by itself.
    fn finish(&self, reason: &str, broken: Option<&ProtocolError>, join: bool) {
        if std::mem::replace(&mut self.hs.lock().finishing, true) {
            return;
        }
        self.session.mark_closed(reason);
        let reason = self.session.close_reason();
        let reason = reason.as_str();
        stats::unregister(&self.session.stats);
        let ending = self.session.close_exchanges(reason, broken);
        self.outbox.abort(reason);
        // The reader gave up on the connection (bad bytes, EOF, error): end
        // it for the peer too, which would otherwise wait on an open socket
        // until this transport's handle is dropped.
        self.shutdown_socket();
        let sock = self.sock.lock().take();
        let read = {
            let mut side = self.read.lock();
            let buf = std::mem::replace(&mut side.buf, ReadBuf::new(0, 0));
            (buf, side.sock.take())
        };
        drop((sock, read));
        self.hs.lock().ended = true;
        self.hs_cv.notify_all();
        // The writer has been told to stop and never needs the GIL.
        if join {
            self.join_writer();
        } else {
            drop(self.writer.lock().take());
        }
        self.session.end_streams(ending, reason);
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let st = &self.session.stats;
        log::info!(
            "gofast[{}]: closed: {reason} (n_tx {}, n_rx {}, n_txbyte {}, n_rxbyte {}, n_mdrops {})",
            self.session.name,
            n(&st.n_tx),
            n(&st.n_rx),
            n(&st.n_txbyte),
            n(&st.n_rxbyte),
            n(&st.n_mdrops)
        );
    }
}

/// An address for a log line; "?" when the socket could not tell.
fn fmt_addr(a: Option<&Address>) -> String {
    a.map_or_else(|| "?".to_string(), |a| a.to_string())
}

impl<H: Handler> Drop for Core<H> {
    fn drop(&mut self) {
        if !self.in_owner_process() {
            // The parent's threads do not exist here: detaching their
            // handles would act on memory that is the parent's business.
            std::mem::forget(self.reader.get_mut().take());
            std::mem::forget(self.writer.get_mut().take());
        }
    }
}

/// A request from a handler would wait for the reader thread running it.
fn reader_thread_request() -> Error {
    Error::InvalidArgument(
        "request() inside a handler would wait for the reader thread that runs it; \
         hand the request to another thread"
            .into(),
    )
}
