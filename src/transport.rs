//! One gofast transport over one TCP connection: the handshake, the
//! exchanges (POST, REQUEST/RESPONSE, STREAMs, both directions), built-in
//! messages and statistics. It runs a reader thread that decodes frames and
//! dispatches them, and a writer thread (see `writer`). What runs for an
//! application message is behind the `Handler` trait, so this module knows
//! nothing of Python.

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::builtin::{self, Whoami, WHOAMI_ID};
use crate::codec::compress::Encoding;
use crate::codec::{Kind, Message};
use crate::errors::{Error, Result};
use crate::exchange::{Exchanges, Origin, OwnedMessage, Slot};
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
    sock: TcpStream,
    version: u64,
    ex: Mutex<Exchanges<H::Callback>>,
    handler: H,
    hs: Mutex<HandshakeState>,
    hs_cv: Condvar,
    closed: AtomicBool,
    /// Threads waiting in `wait_response`.
    waiters: AtomicUsize,
    /// One of them is reading for its RESPONSE (`spin_reading`): at most
    /// one at a time, as many spinning threads would starve the reader.
    spinner: AtomicBool,
    silent_since: Mutex<Option<Instant>>,
    reader: Mutex<Option<JoinHandle<()>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    reader_id: OnceLock<ThreadId>,
    /// The receive buffer, held by whoever reads the socket: the reader
    /// thread, or the requester taking its own RESPONSE (`receive`).
    read: Mutex<ReadBuf>,
    /// Rate of warnings about the peer's frames (`dispatch::warn_peer`).
    log_limit: LogLimit,
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
/// Largest compressed-layer expansion accepted, relative to frame.max.
const MAX_BODY_FACTOR: usize = 4;

impl<H: Handler> Core<H> {
    /// Wraps a connected socket and starts its writer thread. The reader
    /// starts with `handshake()`, so handlers are subscribed before any
    /// message can arrive.
    pub fn new(
        name: &str,
        sock: TcpStream,
        version: u64,
        settings: Settings,
        handler: H,
    ) -> Result<Arc<Self>> {
        settings.validate()?;
        sock.set_nonblocking(false)?;
        sock.set_nodelay(true)?;
        let stats = Arc::new(Stats::default());
        let (buffersize, max_frame) = (settings.buffersize as usize, settings.max_frame);
        let pool = OpaquePool::new(settings.opaque_start, settings.opaque_end)?;
        let outbox = Arc::new(Outbox::new(
            sock.try_clone()?,
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
            sock,
            version,
            ex: Mutex::new(Exchanges::new(pool)),
            handler,
            hs: Mutex::new(HandshakeState::default()),
            hs_cv: Condvar::new(),
            closed: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
            spinner: AtomicBool::new(false),
            silent_since: Mutex::new(None),
            reader: Mutex::new(None),
            writer: Mutex::new(None),
            reader_id: OnceLock::new(),
            read: Mutex::new(ReadBuf::new(buffersize, max_frame)),
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
        Ok(core)
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.sock.local_addr().ok()
    }

    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.sock.peer_addr().ok()
    }

    pub fn whoami(&self) -> Whoami {
        Whoami {
            name: self.name.clone(),
            version: self.version,
            buffersize: self.settings.buffersize,
            tags: self.settings.tags_csv(),
        }
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

    /// Exchanges whoami with the peer (PROTOCOL §4): sends ours, waits for
    /// theirs, and until we have answered theirs. Starts the reader.
    pub fn handshake(self: &Arc<Self>, timeout: Duration) -> Result<Whoami> {
        let deadline = Instant::now() + timeout;
        self.start_reader()?;
        let ours = self.whoami().encode();
        let pending = self.send_request(WHOAMI_ID, &ours, false)?;
        let Some(reply) = self.wait_response(&pending, Some(deadline)) else {
            self.expire(&pending); // a late whoami must not hold the opaque
            return Err(Error::Timeout(timeout));
        };
        let reply = reply?;
        let peer = Whoami::decode(&reply.data)?;
        self.outbox
            .set_encodings(peer_encodings(&peer.tags, &self.name));
        let mut hs = self.hs.lock();
        hs.peer = Some(peer.clone());
        while !hs.answered_peer {
            if self.is_closed() {
                return Err(Error::Closed("closed during handshake".into()));
            }
            if self.hs_cv.wait_until(&mut hs, deadline).timed_out() {
                return Err(Error::Timeout(timeout));
            }
        }
        Ok(peer)
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

    /// Sends a REQUEST and registers where its RESPONSE goes.
    pub fn send_request(&self, id: u64, data: &[u8], compress: bool) -> Result<PendingRequest> {
        if self.is_reader_thread() {
            return Err(reader_thread_request());
        }
        self.send_one_request(id, data, compress, Urgency::Direct)
    }

    fn send_one_request(
        &self,
        id: u64,
        data: &[u8],
        compress: bool,
        urgency: Urgency,
    ) -> Result<PendingRequest> {
        let (opaque, slot) = self.ex.lock().begin_request()?;
        let out = Out::Msg {
            kind: Kind::Request,
            opaque,
            id,
            data: Data::copied(data),
            compress,
        };
        loop {
            match self.push(out, urgency) {
                Ok(true) => break,
                Ok(false) => self.outbox.wait_room(None),
                Err(e) => {
                    self.ex.lock().abandon(opaque);
                    return Err(e);
                }
            }
        }
        Stats::incr(&self.stats.n_tx);
        Stats::incr(&self.stats.n_txreq);
        Ok(PendingRequest { opaque, slot })
    }

    /// Sends several REQUESTs with one wake-up of the writer (the last one
    /// flushes them all). On an error, those already sent are expired.
    pub fn send_requests(&self, msgs: &[(u64, &[u8])]) -> Result<Vec<PendingRequest>> {
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
            match self.send_one_request(*id, data, true, urgency) {
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
        if !self.ex.lock().local_finished(opaque, origin) {
            return Ok(());
        }
        if self.is_closed() {
            return Ok(());
        }
        self.push(Out::Finish { opaque }, Urgency::Flush)?;
        Stats::incr(&self.stats.n_tx);
        Stats::incr(&self.stats.n_txfin);
        Ok(())
    }

    /// Blocks until the send queue has room (backpressure).
    pub fn wait_room(&self) {
        self.outbox.wait_room(None);
    }

    /// Makes everything queued due now.
    pub fn flush(&self) {
        self.outbox.flush();
    }

    // ---- closing -----------------------------------------------------------

    /// Flushes what is queued (for up to two seconds), closes the
    /// connection, fails every pending request and ends every open stream
    /// with an end-of-stream callback. Idempotent. Joins the transport's
    /// threads unless called from its own reader thread (a handler).
    pub fn close(self: &Arc<Self>, reason: &str) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.outbox.close(reason, CLOSE_LINGER);
            let _ = self.sock.shutdown(Shutdown::Both);
            self.hs_cv.notify_all();
            // A running reader sees the shutdown and finishes the close
            // itself, so stream callbacks never race its dispatch.
            if !self.hs.lock().started {
                self.finish_close(reason);
            }
        }
        if !self.is_reader_thread() {
            let reader = self.reader.lock().take();
            if let Some(h) = reader {
                let _ = h.join();
            }
            let writer = self.writer.lock().take();
            if let Some(h) = writer {
                let _ = h.join();
            }
        }
    }

    /// Closes without waiting for anything (for a dropped handle: it may run
    /// with the GIL held, which the reader may need to finish).
    pub fn close_nowait(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.outbox.abort("transport dropped");
            let _ = self.sock.shutdown(Shutdown::Both);
            self.hs_cv.notify_all();
        }
    }

    /// Runs once per transport: by the reader on its way out, or by
    /// `close()` when no reader was ever started.
    fn finish_close(self: &Arc<Self>, reason: &str) {
        self.closed.store(true, Ordering::Release);
        let ending = self.ex.lock().close_all(reason);
        self.outbox.abort(reason);
        // The reader gave up on the connection (bad bytes, EOF, error): end
        // it for the peer too, which would otherwise wait on an open socket
        // until this transport's handle is dropped.
        let _ = self.sock.shutdown(Shutdown::Both);
        self.hs_cv.notify_all();
        let h = &self.handler;
        if !ending.is_empty() {
            h.batch(&mut || {
                for cb in &ending {
                    h.on_stream_msg(self, cb, None);
                }
            });
        }
        h.on_closed();
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
        .filter(|t| !t.is_empty())
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
