//! The gofast protocol with no I/O: one connection's handshake state, its
//! exchange table (REQUEST/RESPONSE, streams), the built-in messages,
//! heartbeat bookkeeping, the `x-errors` negotiation and the statistics
//! (docs/protocol.md §2–§6, §9), modelled on h11 and quinn-proto.
//!
//! A `Session` is driven by frames in (`receive`, or `feed` for raw bytes):
//! it calls the `Handler` for application messages, answers whoami and ping
//! itself, and hands every frame it sends to a `FrameSink`. It owns no
//! socket and no thread, so it runs as well in a unit test with a recording
//! sink (`testing`) as under the threaded socket driver (`transport`),
//! whose `Outbox` is its sink there.
//!
//! * `handshake` — whoami both ways, tags → encodings, `x-errors`.
//! * `dispatch`  — what happens to each received frame.
//! * `send`      — POST, REQUEST, RESPONSE, stream frames, errors.
//!
//! Its locks are in "Locks and the GIL" (transport.rs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::sync::Mutex;

use crate::builtin::Whoami;
use crate::codec::compress::Encoding;
use crate::codec::Message;
use crate::errors::{ProtocolError, Result};
use crate::exchange::{Exchanges, Slot};
use crate::forks;
use crate::log_limit::LogLimit;
use crate::opaque::OpaquePool;
use crate::settings::Settings;
use crate::stats::Stats;
use crate::writer::{Out, Urgency};

mod dispatch;
mod handshake;
pub mod memory;
#[cfg(test)]
mod replay;
mod send;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use dispatch::{body_range, Dropped, FrameRef};

/// How often a long wait wakes to run its caller's check (for Ctrl-C).
pub const WAKE_EVERY: Duration = Duration::from_millis(50);
/// Largest compressed-layer expansion accepted, relative to frame.max.
pub(crate) const MAX_BODY_FACTOR: usize = 4;

/// Where a session's outgoing frames go: the driver's send queue, or a
/// recorder in tests.
pub trait FrameSink: Send + Sync {
    /// Queues one frame. `Ok(false)`: the queue is full and the caller may
    /// block; `wait_room`, then push again. `Err`: the sink is closed.
    fn push(&self, out: Out<'_>, urgency: Urgency) -> Result<bool>;
    /// Runs `run` (the dispatch of one batch of received frames); frames it
    /// pushes go out together at its end. `quick`: it runs no handler.
    fn corked(&self, quick: bool, run: &mut dyn FnMut());
    /// Runs `run` (an event loop's sends); its frames wait for
    /// `flush_deferred`. True: the caller must schedule that call.
    fn deferred(&self, run: &mut dyn FnMut()) -> bool {
        run();
        false
    }
    /// Sends what `deferred` held back.
    fn flush_deferred(&self) {}
    /// The encodings to compress with from now on (the peer's tags).
    fn set_encodings(&self, encodings: Vec<Encoding>);
    /// Blocks until the queue has room, the sink closes, or `until`.
    fn wait_room(&self, until: Instant);
}

/// Whether a handler took a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatched {
    Handled,
    /// No handler for its id (and no default handler): a counted drop.
    NoHandler,
}

/// What runs application code for incoming messages. Calls come in frame
/// order, inside `batch` (under a driver: from its reader thread). Each
/// gets the session, which a handler may keep to send later from any thread.
pub trait Handler: Send + Sync + Sized + 'static {
    /// A stream's receive callback.
    type Callback: Clone + Send + Sync + 'static;

    /// Runs `run` once for a whole batch of frames; the Python handler holds
    /// the GIL across it so the per-message calls below don't each take it.
    fn batch(&self, run: &mut dyn FnMut());
    fn on_post(&self, session: &Arc<Session<Self>>, msg: &Message<'_>) -> Dispatched;
    /// Whether POSTs with this id go to a batch handler (`on_posts`).
    fn batches_posts(&self, _id: u64) -> bool {
        false
    }
    /// Consecutive POSTs of one id from one read, all for a batch handler.
    fn on_posts(&self, _session: &Arc<Session<Self>>, _msgs: &[Message<'_>]) {}
    fn on_request(
        &self,
        session: &Arc<Session<Self>>,
        opaque: u64,
        msg: &Message<'_>,
    ) -> Dispatched;
    /// `Err(NoHandler)` drops the stream; `Ok(None)` keeps it without a callback.
    fn on_stream_start(
        &self,
        session: &Arc<Session<Self>>,
        opaque: u64,
        msg: &Message<'_>,
    ) -> std::result::Result<Option<Self::Callback>, Dispatched>;
    /// `None`: the stream has ended (peer's FINISH, or the connection closed).
    fn on_stream_msg(
        &self,
        session: &Arc<Session<Self>>,
        callback: &Self::Callback,
        msg: Option<&Message<'_>>,
    );
    /// The connection ended before the peer finished this stream; its
    /// `on_stream_msg(None)` follows at once.
    fn on_stream_cut(&self, _callback: &Self::Callback, _reason: &str) {}
    /// The connection is closed for good: drop what the handlers hold.
    fn on_closed(&self);
    /// One read's frames have been handled (also when none needed the
    /// handler: a batch of RESPONSEs). For a handler that queues what
    /// arrives for another thread (asyncio), where one wake-up per read,
    /// not per message, is the point.
    /// May wait (the reader then stops reading: backpressure) until what
    /// it queued has been taken, or `closed()`.
    fn received(&self, _closed: &dyn Fn() -> bool) {}
    /// Whether requesters may read their own RESPONSEs off the socket
    /// (`Core::wait_response`): not when none of them blocks for one.
    fn requesters_read(&self) -> bool {
        true
    }
    /// Whether the reader may poll a quiet socket for the next REQUESTs
    /// (`IdleSpin`): not when another thread (an event loop) answers them,
    /// which the polling would keep off the core.
    fn reader_polls(&self) -> bool {
        true
    }
    /// Runs a driver's reader thread's whole life (the Python handler keeps
    /// one interpreter thread state for it instead of one per batch).
    fn reader_thread(&self, run: &mut dyn FnMut()) {
        run()
    }
}

/// A REQUEST on its way; the RESPONSE arrives in `slot`.
pub struct PendingRequest {
    pub opaque: u64,
    pub(crate) slot: Arc<Slot>,
}

impl PendingRequest {
    /// Whether the RESPONSE (or the reason there is none) has arrived.
    pub fn is_ready(&self) -> bool {
        self.slot.is_ready()
    }

    /// Waits until `deadline` for the RESPONSE; `None` if it passed first.
    /// Under a driver, `Core::wait_response` also reads for it.
    pub fn wait(&self, deadline: Option<Instant>) -> Option<Result<crate::exchange::OwnedMessage>> {
        self.slot.wait(deadline)
    }
}

/// One gofast connection's protocol state.
///
/// Its locks are taken with or without the GIL and never held while the
/// handler runs or a line is logged: `ex` → `Slot` (closing fails the
/// waiting requests under `ex`); `peer` and `silent_since` are leaves.
pub struct Session<H: Handler> {
    pub name: String,
    pub settings: Settings,
    pub stats: Arc<Stats>,
    version: u64,
    sink: Arc<dyn FrameSink>,
    ex: Mutex<Exchanges<H::Callback>>,
    handler: H,
    /// The peer's whoami, once the handshake has its RESPONSE.
    peer: Mutex<Option<Whoami>>,
    /// We have answered the peer's whoami (the other half of a handshake).
    answered_peer: AtomicBool,
    /// Both sides advertised `x-errors` (set from the peer's whoami).
    errors_ext: AtomicBool,
    silent_since: Mutex<Option<Instant>>,
    closed: AtomicBool,
    /// Why it closed, first reason wins (what every later call reports).
    close_reason: OnceLock<String>,
    /// Rate of log lines about the peer's frames (`note_peer`).
    log_limit: LogLimit,
    /// `forks::generation()` when made: a handle kept in a fork()ed child
    /// must not send into the parent's connection.
    fork_gen: u64,
}

impl<H: Handler> Session<H> {
    /// A session for a new connection, before its handshake. `stats` are
    /// shared with the driver, which counts bytes and writes.
    pub fn new(
        name: &str,
        version: u64,
        settings: Settings,
        stats: Arc<Stats>,
        sink: Arc<dyn FrameSink>,
        handler: H,
    ) -> Result<Self> {
        settings.validate()?;
        forks::watch();
        let pool = OpaquePool::new(settings.opaque_start, settings.opaque_end)?;
        Ok(Session {
            name: name.to_string(),
            settings,
            stats,
            version,
            sink,
            ex: Mutex::new(Exchanges::new(pool)),
            handler,
            peer: Mutex::new(None),
            answered_peer: AtomicBool::new(false),
            errors_ext: AtomicBool::new(false),
            silent_since: Mutex::new(None),
            closed: AtomicBool::new(false),
            close_reason: OnceLock::new(),
            log_limit: LogLimit::default(),
            fork_gen: forks::generation(),
        })
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Runs `f` with the frames it sends held back until `flush_deferred`
    /// (an event loop sends them once per pass). Returns what `f` returned
    /// and whether the caller must schedule that flush.
    pub fn deferred<R>(&self, f: impl FnOnce() -> R) -> (R, bool) {
        let mut schedule = false;
        let r = through_sink(f, |run| schedule = self.sink.deferred(run));
        (r, schedule)
    }

    /// Runs `f` with the frames it sends written together at its end (an
    /// event loop's batch of handlers).
    pub fn corked<R>(&self, f: impl FnOnce() -> R) -> R {
        through_sink(f, |run| self.sink.corked(false, run))
    }

    pub fn flush_deferred(&self) {
        self.sink.flush_deferred()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Why the session closed ("" while open).
    pub fn close_reason(&self) -> String {
        self.close_reason.get().cloned().unwrap_or_default()
    }

    /// False in a fork()ed child of the process that made the session.
    pub fn in_owner_process(&self) -> bool {
        forks::generation() == self.fork_gen
    }

    pub fn peer(&self) -> Option<Whoami> {
        self.peer.lock().clone()
    }

    /// Time since the peer's last heartbeat, if one arrived.
    pub fn silent_since(&self) -> Option<Duration> {
        self.silent_since.lock().map(|t| t.elapsed())
    }

    /// (opaques held by exchanges we started, streams the peer opened)
    pub fn exchanges_in_use(&self) -> (usize, usize) {
        let ex = self.ex.lock();
        (ex.local_in_use(), ex.remote_streams())
    }

    /// Blocks until the sink has room (backpressure), or `until`.
    pub fn wait_room(&self, until: Instant) {
        self.sink.wait_room(until);
    }

    // ---- closing -----------------------------------------------------------

    /// Marks the session closed (first reason wins); whether this call did.
    pub fn mark_closed(&self, reason: &str) -> bool {
        let _ = self.close_reason.set(reason.to_string());
        !self.closed.swap(true, Ordering::AcqRel)
    }

    /// The connection ended: fails every pending request (with `broken`,
    /// when the peer's bytes broke the protocol) and hands back the streams
    /// to end with `end_streams`, which the caller runs holding no lock.
    pub fn close_exchanges(
        &self,
        reason: &str,
        broken: Option<&ProtocolError>,
    ) -> Vec<H::Callback> {
        self.mark_closed(reason);
        self.ex.lock().close_all(reason, broken)
    }

    /// Tells the handler that the streams `close_exchanges` returned were
    /// cut, and that the connection is over.
    pub fn end_streams(self: &Arc<Self>, ending: Vec<H::Callback>, reason: &str) {
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
    }

    /// `close_exchanges` and `end_streams` in one, for a driver with
    /// nothing to do between them.
    pub fn connection_lost(self: &Arc<Self>, reason: &str, broken: Option<&ProtocolError>) {
        let ending = self.close_exchanges(reason, broken);
        let reason = self.close_reason.get().map_or(reason, String::as_str);
        self.end_streams(ending, reason);
    }
}

/// Runs `f` inside `wrap`, a sink method that takes a `&mut dyn FnMut()`
/// and calls it exactly once, and returns what `f` returned.
fn through_sink<R>(f: impl FnOnce() -> R, wrap: impl FnOnce(&mut dyn FnMut())) -> R {
    let mut f = Some(f);
    let mut out = None;
    wrap(&mut || out = f.take().map(|f| f()));
    out.expect("a FrameSink runs the closure it is given")
}
