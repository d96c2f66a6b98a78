//! One gofast transport over one TCP connection: the handshake, the
//! exchanges (POST, REQUEST/RESPONSE, STREAMs, both directions), built-in
//! messages and statistics. It runs a reader thread that decodes frames and
//! dispatches them, and a writer thread (see `writer`). What runs for an
//! application message is behind the `Handler` trait, so this module knows
//! nothing of Python.
//!
//! # Locks and the GIL
//!
//! Every Rust lock of a transport is declared in `Core`, `Outbox`
//! (`writer.rs`), `Exchanges`/`Slot` (`exchange.rs`) and `PyHandler`
//! (`python/handler.rs`), plus the process-wide `LIVE` and stats registry.
//! Two rules keep a Python process from freezing:
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
//! `try_lock` it (without the GIL) and never log while holding it.
//!
//! Nesting order, outer first: `read` → `ex` → `Slot`; `read` → `Outbox`
//! state. Every other lock is a leaf: nothing is locked while it is held.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::builtin::{self, Whoami, WHOAMI_ID};
use crate::codec::compress::Encoding;
use crate::codec::{Kind, Message};
use crate::errors::{Error, ProtocolError, Result};
use crate::exchange::{Exchanges, Origin, OwnedMessage, Slot};
use crate::io::{Address, Link, PeerCertificate};
use crate::log_limit::LogLimit;
use crate::opaque::OpaquePool;
use crate::readbuf::ReadBuf;
use crate::settings::Settings;
use crate::stats::{self, Stats};
use crate::writer::{Data, Out, Outbox, Urgency};

mod dispatch;
mod idle_spin;
mod receive;

/// Whether a handler took a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatched {
    Handled,
    /// No handler for its id (and no default handler): a counted drop.
    NoHandler,
}

/// What runs application code for incoming messages. Calls come from the
/// reader thread, in frame order, inside `batch`.
pub trait Handler: Send + Sync + Sized + 'static {
    /// A stream's receive callback.
    type Callback: Clone + Send + Sync + 'static;

    /// Runs `run` once for a whole batch of frames; the Python handler holds
    /// the GIL across it so the per-message calls below don't each take it.
    fn batch(&self, run: &mut dyn FnMut());
    fn on_post(&self, core: &Arc<Core<Self>>, msg: &Message<'_>) -> Dispatched;
    /// Whether POSTs with this id go to a batch handler (`on_posts`).
    fn batches_posts(&self, _id: u64) -> bool {
        false
    }
    /// Consecutive POSTs of one id from one read, all for a batch handler.
    fn on_posts(&self, _core: &Arc<Core<Self>>, _msgs: &[Message<'_>]) {}
    fn on_request(&self, core: &Arc<Core<Self>>, opaque: u64, msg: &Message<'_>) -> Dispatched;
    /// `Err(NoHandler)` drops the stream; `Ok(None)` keeps it without a callback.
    fn on_stream_start(
        &self,
        core: &Arc<Core<Self>>,
        opaque: u64,
        msg: &Message<'_>,
    ) -> std::result::Result<Option<Self::Callback>, Dispatched>;
    /// `None`: the stream has ended (peer's FINISH, or the connection closed).
    fn on_stream_msg(
        &self,
        core: &Arc<Core<Self>>,
        callback: &Self::Callback,
        msg: Option<&Message<'_>>,
    );
    /// The connection ended before the peer finished this stream; its
    /// `on_stream_msg(None)` follows at once.
    fn on_stream_cut(&self, _callback: &Self::Callback, _reason: &str) {}
    /// The transport is closed for good: drop what the handlers hold.
    fn on_closed(&self);
    /// Runs the reader thread's whole life (the Python handler keeps one
    /// interpreter thread state for it instead of one per batch).
    fn reader_thread(&self, run: &mut dyn FnMut()) {
        run()
    }
}

#[derive(Default)]
struct HandshakeState {
    started: bool,
    peer: Option<Whoami>,
    answered_peer: bool,
}

pub struct Core<H: Handler> {
    pub name: String,
    pub settings: Settings,
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
    /// `FORKS` when this transport was made: in a forked child it differs,
    /// and the transport is inert (its threads and socket are the parent's).
    fork_gen: u64,
    version: u64,
    ex: Mutex<Exchanges<H::Callback>>,
    handler: H,
    hs: Mutex<HandshakeState>,
    hs_cv: Condvar,
    closed: AtomicBool,
    /// Why it closed, first reason wins (what every later call reports).
    close_reason: OnceLock<String>,
    /// Threads waiting in `wait_response`.
    waiters: AtomicUsize,
    /// One of them is reading for its RESPONSE (`spin_reading`): at most
    /// one at a time, as many spinning threads would starve the reader.
    spinner: AtomicBool,
    silent_since: Mutex<Option<Instant>>,
    /// Both sides advertised `x-errors` (set from the peer's whoami).
    errors_ext: AtomicBool,
    reader: Mutex<Option<JoinHandle<()>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    reader_id: OnceLock<ThreadId>,
    /// The receive buffer and the socket to read, held by whoever reads:
    /// the reader thread, or a requester taking its own RESPONSE (`receive`).
    read: Mutex<ReadSide>,
    /// Rate of warnings about the peer's frames (`dispatch::note_peer`).
    log_limit: LogLimit,
}

struct ReadSide {
    buf: ReadBuf,
    /// `None` once closed: requesters then leave the socket alone.
    sock: Option<Arc<Link>>,
}

/// How many times this process is a fork()ed child of the one that made
/// its transports (bumped in the child by a pthread_atfork handler).
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_fork_in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

fn watch_forks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a handler that only bumps an atomic (async-signal-safe).
    ONCE.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(count_fork_in_child));
    });
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
/// How often a long wait wakes to run its caller's check (for Ctrl-C).
pub const WAKE_EVERY: Duration = Duration::from_millis(50);
/// Most bytes a frame adds around its message data: marker, kind, packet
/// and opaque heads, the body map with its tags, id and data heads.
const FRAME_OVERHEAD_MAX: usize = 64;
/// How long `close()` waits for queued frames to reach the socket.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Largest compressed-layer expansion accepted, relative to frame.max.
const MAX_BODY_FACTOR: usize = 4;

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
        watch_forks();
        link.socket.configure()?;
        let (local_addr, peer_addr) = (link.socket.local_addr(), link.socket.peer_addr());
        let tls = link.is_tls();
        let sock = Arc::new(link);
        let stats = Arc::new(Stats::default());
        let (buffersize, max_frame) = (settings.buffersize as usize, settings.max_frame);
        let pool = OpaquePool::new(settings.opaque_start, settings.opaque_end)?;
        let outbox = Arc::new(Outbox::new(
            sock.clone(),
            stats.clone(),
            settings.batchsize,
            settings.max_pending,
            settings.flush_period,
            settings.gzip_level,
            settings.opaque_start,
        ));
        let core = Arc::new(Core {
            name: name.to_string(),
            settings,
            stats,
            outbox: outbox.clone(),
            sock: Mutex::new(Some(sock.clone())),
            local_addr: local_addr.clone(),
            peer_addr: peer_addr.clone(),
            link_ready: Mutex::new(!tls),
            tls,
            tls_failed: AtomicBool::new(false),
            fork_gen: FORKS.load(Ordering::Relaxed),
            version,
            ex: Mutex::new(Exchanges::new(pool)),
            handler,
            hs: Mutex::new(HandshakeState::default()),
            hs_cv: Condvar::new(),
            closed: AtomicBool::new(false),
            close_reason: OnceLock::new(),
            waiters: AtomicUsize::new(0),
            spinner: AtomicBool::new(false),
            silent_since: Mutex::new(None),
            errors_ext: AtomicBool::new(false),
            reader: Mutex::new(None),
            writer: Mutex::new(None),
            reader_id: OnceLock::new(),
            read: Mutex::new(ReadSide {
                buf: ReadBuf::new(buffersize, max_frame),
                sock: Some(sock),
            }),
            log_limit: LogLimit::default(),
        });
        stats::register(name, &core.stats);
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

    pub fn handler(&self) -> &H {
        &self.handler
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Why the transport closed ("" while open).
    pub fn close_reason(&self) -> String {
        self.close_reason.get().cloned().unwrap_or_default()
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
        FORKS.load(Ordering::Relaxed) == self.fork_gen
    }

    /// Wakes every thread blocked on the socket; the fd stays open until
    /// its users have let go.
    fn shutdown_socket(&self) {
        if let Some(sock) = &*self.sock.lock() {
            let _ = sock.socket.shutdown();
        }
    }

    pub fn whoami(&self) -> Whoami {
        Whoami {
            name: self.name.clone(),
            version: self.version,
            buffersize: self.settings.buffersize,
            tags: self.own_tags(),
        }
    }

    /// Our whoami tags: the encodings we receive, then the extension's tag.
    fn own_tags(&self) -> String {
        let mut tags = self.settings.tags_csv();
        if self.settings.errors_ext {
            if !tags.is_empty() {
                tags.push(',');
            }
            tags.push_str(builtin::ERRORS_TAG);
        }
        tags
    }

    /// Whether errors are reported to the peer (and read from it): both
    /// sides advertised `x-errors`.
    pub fn errors_ext(&self) -> bool {
        self.errors_ext.load(Ordering::Acquire)
    }

    /// Notes the peer's whoami tags, from its whoami REQUEST or RESPONSE.
    pub(crate) fn note_peer_tags(&self, tags: &str) {
        if self.settings.errors_ext && builtin::has_errors_tag(tags) {
            self.errors_ext.store(true, Ordering::Release);
        }
    }

    /// Tells the peer, under the `x-errors` extension, that its REQUEST
    /// (`kind` Request) or the stream it opened (`kind` StreamMsg) failed
    /// here. Does nothing without the extension. Best effort: a full send
    /// queue drops it (the requester then times out, as without it).
    pub fn send_error(&self, kind: Kind, opaque: u64, type_name: &str, message: &str) {
        if !self.errors_ext() || self.is_closed() {
            return;
        }
        let data = builtin::encode_error(type_name, message);
        let counter = match kind {
            Kind::Request => &self.stats.n_txresp,
            _ => &self.stats.n_txstream,
        };
        let urgency = if kind == Kind::Request {
            Urgency::Direct
        } else {
            Urgency::Flush
        };
        let _ = self.send_msg(
            kind,
            opaque,
            builtin::ERROR_ID,
            Data::copied(&data),
            urgency,
            counter,
        );
    }

    pub fn peer(&self) -> Option<Whoami> {
        self.hs.lock().peer.clone()
    }

    /// Time since the peer's last heartbeat, if one arrived.
    pub fn silent_since(&self) -> Option<Duration> {
        self.silent_since.lock().map(|t| t.elapsed())
    }

    pub fn set_flush_period(&self, period: Option<Duration>) {
        self.outbox.set_flush_period(period);
    }

    pub fn set_heartbeat(&self, period: Option<Duration>) {
        self.outbox.set_heartbeat(period);
    }

    /// (opaques held by exchanges we started, streams the peer opened)
    pub fn exchanges_in_use(&self) -> (usize, usize) {
        let ex = self.ex.lock();
        (ex.local_in_use(), ex.remote_streams())
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
        let ours = self.whoami().encode();
        let pending = self.send_request(WHOAMI_ID, &ours, false, between)?;
        // A late whoami keeps its opaque, as any timed-out request's.
        let reply = self
            .await_response(&pending, Some((deadline, timeout)), between)
            .map_err(|e| self.tls_cause(e))?;
        let peer = Whoami::decode(&reply.data)?;
        self.note_peer_tags(&peer.tags);
        self.outbox
            .set_encodings(peer_encodings(&peer.tags, &self.name));
        self.hs.lock().peer = Some(peer.clone());
        log::info!(
            "gofast[{}]: handshake done: peer {:?}, version {}, tags {:?}",
            self.name,
            peer.name,
            peer.version,
            peer.tags
        );
        loop {
            {
                let mut hs = self.hs.lock();
                let slice = (Instant::now() + WAKE_EVERY).min(deadline);
                while !hs.answered_peer && !self.is_closed() {
                    if self.hs_cv.wait_until(&mut hs, slice).timed_out() {
                        break;
                    }
                }
                if hs.answered_peer {
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
                    self.name,
                    peer.as_ref().map_or("none", |p| p.subject.as_str())
                );
                Ok(())
            }
            Err(e) => {
                drop(ready);
                drop(link);
                let why = e.to_string();
                log::warn!("gofast[{}]: {why}", self.name);
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
        let me = self.clone();
        let handle = std::thread::Builder::new()
            .name(format!("gofast-rx-{}", self.name))
            .stack_size(READER_STACK)
            .spawn(move || me.run_reader())?;
        let _ = self.reader_id.set(handle.thread().id());
        *self.reader.lock() = Some(handle);
        Ok(())
    }

    // ---- sending ---------------------------------------------------------

    fn push(&self, out: Out<'_>, urgency: Urgency) -> Result<bool> {
        self.outbox.push(out, urgency)
    }

    /// Queues a POST. `Ok(false)`: the queue is full, wait for room and retry.
    pub fn post(&self, id: u64, data: Data<'_>, flush: bool) -> Result<bool> {
        check_id(id)?;
        let opaque = self.settings.opaque_start;
        self.send_msg(
            Kind::Post,
            opaque,
            id,
            data,
            batch_or(flush, Urgency::Flush),
            &self.stats.n_txpost,
        )
    }

    /// Queues one message frame and counts it under `counter` once queued.
    fn send_msg(
        &self,
        kind: Kind,
        opaque: u64,
        id: u64,
        data: Data<'_>,
        urgency: Urgency,
        counter: &std::sync::atomic::AtomicU64,
    ) -> Result<bool> {
        self.check_size(data.bytes().len())?;
        let out = Out::Msg {
            kind,
            opaque,
            id,
            data,
            compress: true,
        };
        let queued = self.push(out, urgency)?;
        if queued {
            Stats::incr(&self.stats.n_tx);
            Stats::incr(counter);
        }
        Ok(queued)
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
        self.send_one_request(id, data, compress, Urgency::Direct, between)
    }

    fn send_one_request(
        &self,
        id: u64,
        data: &[u8],
        compress: bool,
        urgency: Urgency,
        between: &mut dyn FnMut() -> Result<()>,
    ) -> Result<PendingRequest> {
        self.check_size(data.len())?;
        let (opaque, slot) = self.ex.lock().begin_request()?;
        let out = Out::Msg {
            kind: Kind::Request,
            opaque,
            id,
            data: Data::copied(data),
            compress,
        };
        loop {
            let waited = match self.push(out, urgency) {
                Ok(true) => break,
                Ok(false) => {
                    self.outbox.wait_room(Some(Instant::now() + WAKE_EVERY));
                    between()
                }
                Err(e) => Err(e),
            };
            if let Err(e) = waited {
                self.ex.lock().abandon(opaque);
                return Err(e);
            }
        }
        Stats::incr(&self.stats.n_tx);
        Stats::incr(&self.stats.n_txreq);
        Ok(PendingRequest { opaque, slot })
    }

    /// A peer with our `frame.max` drops the whole connection on a longer
    /// frame: refuse such a message here, where the caller can see why.
    fn check_size(&self, data_len: usize) -> Result<()> {
        if data_len + FRAME_OVERHEAD_MAX <= self.settings.max_frame {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "a message of {data_len} bytes makes a frame over frame.max ({} bytes), \
             which the peer would refuse; raise frame.max on both sides",
            self.settings.max_frame
        )))
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
        let mut sent = Vec::with_capacity(msgs.len());
        for (i, (id, data)) in msgs.iter().enumerate() {
            let urgency = if i + 1 == msgs.len() {
                Urgency::Direct
            } else {
                Urgency::Batch
            };
            match self.send_one_request(*id, data, true, urgency, between) {
                Ok(p) => sent.push(p),
                Err(e) => {
                    sent.iter().for_each(|p| self.expire(p));
                    return Err(e);
                }
            }
        }
        Ok(sent)
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
        self.ex.lock().expire(p.opaque);
        Stats::incr(&self.stats.n_timeouts);
    }

    /// Answers the peer's REQUEST `opaque`.
    pub fn respond(&self, opaque: u64, id: u64, data: Data<'_>, flush: bool) -> Result<bool> {
        check_id(id)?;
        let urgency = batch_or(flush, Urgency::Direct);
        self.send_msg(
            Kind::Request,
            opaque,
            id,
            data,
            urgency,
            &self.stats.n_txresp,
        )
    }

    /// Opens a stream; `Ok(None)`: the queue is full, wait for room and retry.
    pub fn open_stream(
        &self,
        id: u64,
        data: Data<'_>,
        callback: H::Callback,
        flush: bool,
    ) -> Result<Option<u64>> {
        check_id(id)?;
        let opaque = self.ex.lock().open_stream(Some(callback))?;
        let urgency = batch_or(flush, Urgency::Flush);
        match self.send_msg(
            Kind::StreamStart,
            opaque,
            id,
            data,
            urgency,
            &self.stats.n_txstart,
        ) {
            Ok(true) => Ok(Some(opaque)),
            other => {
                self.ex.lock().abandon(opaque);
                other.map(|_| None)
            }
        }
    }

    pub fn stream_send(
        &self,
        opaque: u64,
        origin: Origin,
        id: u64,
        data: Data<'_>,
        flush: bool,
    ) -> Result<bool> {
        check_id(id)?;
        self.ex.lock().can_send(opaque, origin)?;
        let urgency = batch_or(flush, Urgency::Flush);
        self.send_msg(
            Kind::StreamMsg,
            opaque,
            id,
            data,
            urgency,
            &self.stats.n_txstream,
        )
    }

    /// Sends this side's FINISH (once); the stream is over when the peer's
    /// has arrived too. Closing twice is a no-op.
    pub fn stream_close(&self, opaque: u64, origin: Origin) -> Result<()> {
        let finished = self.ex.lock().local_finished(opaque, origin);
        let Some(over) = finished else {
            return Ok(());
        };
        drop(over); // outside the lock: see "Locks and the GIL"
        if self.is_closed() {
            return Ok(());
        }
        self.send_finish(opaque)
    }

    /// Queues a FINISH frame for `opaque` and counts it.
    pub(super) fn send_finish(&self, opaque: u64) -> Result<()> {
        self.push(Out::Finish { opaque }, Urgency::Flush)?;
        Stats::incr(&self.stats.n_tx);
        Stats::incr(&self.stats.n_txfin);
        Ok(())
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
        let _ = self.close_reason.set(reason.to_string());
        if !self.closed.swap(true, Ordering::AcqRel) {
            let flushed = self.outbox.close(reason, CLOSE_LINGER);
            if flushed {
                self.say_close_notify();
            }
            self.shutdown_socket();
            self.hs_cv.notify_all();
            // A running reader sees the shutdown and finishes the close
            // itself, so stream callbacks never race its dispatch.
            if !self.hs.lock().started {
                self.finish_close(reason, None);
            }
        }
        if !self.is_reader_thread() {
            let reader = self.reader.lock().take();
            if let Some(h) = reader {
                let _ = h.join();
            }
            self.join_writer();
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
        let _ = self.close_reason.set("transport dropped".to_string());
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.outbox.abort("transport dropped");
            self.shutdown_socket();
            self.hs_cv.notify_all();
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
    fn finish_close(self: &Arc<Self>, reason: &str, broken: Option<&ProtocolError>) {
        let _ = self.close_reason.set(reason.to_string());
        let reason = self.close_reason.get().map_or(reason, String::as_str);
        self.closed.store(true, Ordering::Release);
        stats::unregister(&self.stats);
        let ending = self.ex.lock().close_all(reason, broken);
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
        self.hs_cv.notify_all();
        // The writer has been told to stop and never needs the GIL.
        self.join_writer();
        let h = &self.handler;
        if !ending.is_empty() {
            h.batch(&mut || {
                for cb in &ending {
                    h.on_stream_cut(cb, reason);
                    h.on_stream_msg(self, cb, None);
                }
            });
        }
        h.on_closed();
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let st = &self.stats;
        log::info!(
            "gofast[{}]: closed: {reason} (n_tx {}, n_rx {}, n_txbyte {}, n_rxbyte {}, n_mdrops {})",
            self.name,
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

/// `Batch` unless the caller asked for a flush, then `urgent`.
fn batch_or(flush: bool, urgent: Urgency) -> Urgency {
    if flush {
        urgent
    } else {
        Urgency::Batch
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

/// The encodings the peer asked for, in its order; an unknown one is logged
/// and skipped (the peer then gets that layer uncompressed, which it reads).
fn peer_encodings(tags: &str, name: &str) -> Vec<Encoding> {
    tags.split(',')
        .map(str::trim)
        // An extension's tag is no encoding (and is known: no warning).
        .filter(|t| !t.is_empty() && *t != builtin::ERRORS_TAG)
        .filter_map(|t| {
            let e = Encoding::from_name(t);
            if e.is_none() {
                log::warn!("gofast[{name}]: peer asks for unknown tag {t:?}; sending without it");
            }
            e
        })
        .collect()
}

fn check_id(id: u64) -> Result<()> {
    if id == 0 {
        return Err(Error::InvalidArgument("message id 0 is invalid".into()));
    }
    if builtin::is_reserved(id) {
        return Err(Error::InvalidArgument(format!(
            "message id {id:#x} is reserved (0x1000..0x100F)"
        )));
    }
    Ok(())
}

/// A REQUEST on its way; the RESPONSE arrives in `slot`.
pub struct PendingRequest {
    pub opaque: u64,
    slot: Arc<Slot>,
}
