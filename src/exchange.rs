//! The table of live exchanges: which opaques this side started (requests
//! waiting for their RESPONSE, streams it opened) and which streams the peer
//! opened. It decides what an incoming frame belongs to; it knows nothing of
//! sockets or bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::sync::{Condvar, Mutex};

use crate::errors::{Error, ProtocolError, Result};
use crate::opaque::OpaquePool;

/// A received message that outlives the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedMessage {
    pub id: u64,
    pub data: Vec<u8>,
}

/// Told when a slot is filled, for a requester that does not block on the
/// slot (an asyncio one: the waker queues the opaque for its event loop).
/// Called with `Session::ex` possibly held: it may take only leaf locks and
/// must never take the GIL.
pub trait SlotWaker: Send + Sync {
    fn wake(&self, opaque: u64);
}

/// Where a waiting requester finds its RESPONSE (or why there is none).
#[derive(Default)]
pub struct Slot {
    value: Mutex<Option<Result<OwnedMessage>>>,
    cv: Condvar,
    ready: AtomicBool,
    waker: Option<(Arc<dyn SlotWaker>, u64)>,
}

impl Slot {
    /// A slot that tells `waker` (with `opaque`) once it is filled.
    pub fn with_waker(opaque: u64, waker: Arc<dyn SlotWaker>) -> Self {
        Slot {
            waker: Some((waker, opaque)),
            ..Slot::default()
        }
    }

    pub fn fill(&self, v: Result<OwnedMessage>) {
        let filled = {
            let mut g = self.value.lock();
            let empty = g.is_none();
            if empty {
                *g = Some(v);
                self.ready.store(true, Ordering::Release);
            }
            empty
        };
        if !filled {
            return;
        }
        // After the lock: the woken requester then finds it free.
        self.cv.notify_all();
        if let Some((waker, opaque)) = &self.waker {
            waker.wake(*opaque);
        }
    }

    /// The value, if filled, without waiting.
    pub fn take(&self) -> Option<Result<OwnedMessage>> {
        self.value.lock().take()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Waits until filled or `deadline`; `None` if it passed first.
    pub fn wait(&self, deadline: Option<Instant>) -> Option<Result<OwnedMessage>> {
        let mut g = self.value.lock();
        while g.is_none() {
            match deadline {
                Some(d) => {
                    if self.cv.wait_until(&mut g, d).timed_out() {
                        break;
                    }
                }
                None => self.cv.wait(&mut g),
            }
        }
        g.take()
    }
}

/// Which table a stream lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// This side opened it, on one of its own opaques.
    Local,
    /// The peer opened it, on one of the peer's opaques.
    Remote,
}

pub struct StreamState<C> {
    pub callback: Option<C>,
    pub tx_closed: bool,
    pub rx_closed: bool,
}

enum Local<C> {
    Request(Arc<Slot>),
    /// Timed out; a late RESPONSE is dropped and frees the opaque.
    Expired,
    Stream(StreamState<C>),
}

/// What an incoming `81` frame is.
pub enum RequestFrame {
    Response(Arc<Slot>),
    /// For a request that timed out; its opaque is free from now on.
    LateResponse,
    /// On our range but for no exchange: dropped, never taken as a REQUEST.
    Stray,
    /// A peer's REQUEST (its opaque lies outside our range).
    NotOurs,
    Misdirected,
}

/// What became of a STREAM-START.
#[derive(Debug, PartialEq, Eq)]
pub enum Accept {
    Taken,
    InUse,
    /// The peer has as many streams open as it may: not kept.
    Full,
}

/// What happened to a stream when a FINISH arrived or we closed our side.
pub struct Closing<C> {
    pub callback: Option<C>,
}

/// Behind `Session::ex`, a lock taken with or without the GIL: see "Locks and
/// the GIL" in transport.rs.
pub struct Exchanges<C> {
    pool: OpaquePool,
    local: HashMap<u64, Local<C>>,
    remote: HashMap<u64, StreamState<C>>,
    closed: Option<String>,
}

impl<C: Clone> Exchanges<C> {
    pub fn new(pool: OpaquePool) -> Self {
        Exchanges {
            pool,
            local: HashMap::new(),
            remote: HashMap::new(),
            closed: None,
        }
    }

    fn check_open(&self) -> Result<()> {
        match &self.closed {
            Some(why) => Err(Error::Closed(why.clone())),
            None => Ok(()),
        }
    }

    /// A free opaque. Those of timed-out requests are not free: the peer
    /// may still answer them, and a late RESPONSE must never reach a newer
    /// request. So a range full of them gives `OpaqueExhausted` at once.
    fn take_opaque(&mut self) -> Result<u64> {
        self.check_open()?;
        let local = &self.local;
        if let Some(o) = self.pool.take(|o| local.contains_key(&o)) {
            return Ok(o);
        }
        let expired = local
            .values()
            .filter(|l| matches!(l, Local::Expired))
            .count();
        Err(Error::OpaqueExhausted {
            capacity: self.pool.capacity(),
            expired: expired as u64,
        })
    }

    pub fn begin_request(
        &mut self,
        waker: Option<&Arc<dyn SlotWaker>>,
    ) -> Result<(u64, Arc<Slot>)> {
        let opaque = self.take_opaque()?;
        let slot = Arc::new(match waker {
            Some(w) => Slot::with_waker(opaque, w.clone()),
            None => Slot::default(),
        });
        self.local.insert(opaque, Local::Request(slot.clone()));
        Ok((opaque, slot))
    }

    /// Undoes `begin_request`/`open_stream` when the frame could not be queued.
    pub fn abandon(&mut self, opaque: u64) {
        self.local.remove(&opaque);
    }

    /// The requester gave up waiting. Keeps the opaque out of the pool until
    /// the late RESPONSE arrives or the connection ends, so it cannot be
    /// taken for the RESPONSE of a newer request.
    /// `slot`: only if the opaque still belongs to that request (its
    /// RESPONSE may have just freed the opaque for a newer one).
    pub fn expire(&mut self, opaque: u64, slot: Option<&Arc<Slot>>) {
        if let Some(l @ Local::Request(_)) = self.local.get_mut(&opaque) {
            let same = match (&*l, slot) {
                (Local::Request(s), Some(mine)) => Arc::ptr_eq(s, mine),
                _ => true,
            };
            if same {
                *l = Local::Expired;
            }
        }
    }

    pub fn classify_request(&mut self, opaque: u64) -> RequestFrame {
        match self.local.get(&opaque) {
            // Our range is ours alone (the peer's must not overlap it), so
            // an `81` frame there answers some request of ours, never asks.
            None if self.pool.contains(opaque) => RequestFrame::Stray,
            None => RequestFrame::NotOurs,
            Some(Local::Stream(_)) => RequestFrame::Misdirected,
            Some(Local::Request(_)) | Some(Local::Expired) => match self.local.remove(&opaque) {
                Some(Local::Request(slot)) => RequestFrame::Response(slot),
                _ => RequestFrame::LateResponse,
            },
        }
    }

    /// Whether an `81` frame with this opaque is a RESPONSE (live, late or
    /// stray), which dispatch handles without application code.
    pub fn is_response(&self, opaque: u64) -> bool {
        match self.local.get(&opaque) {
            Some(Local::Request(_)) | Some(Local::Expired) => true,
            Some(Local::Stream(_)) => false,
            None => self.pool.contains(opaque),
        }
    }

    /// Whether an `81` frame with this opaque answers a request still
    /// waiting for it (what a requester may take off the socket itself).
    pub fn is_awaited(&self, opaque: u64) -> bool {
        matches!(self.local.get(&opaque), Some(Local::Request(_)))
    }

    pub fn open_stream(&mut self, callback: Option<C>) -> Result<u64> {
        let opaque = self.take_opaque()?;
        let state = StreamState {
            callback,
            tx_closed: false,
            rx_closed: false,
        };
        self.local.insert(opaque, Local::Stream(state));
        Ok(opaque)
    }

    /// Registers a stream the peer opened, unless the opaque is already in
    /// use on either side (a protocol violation: the frame is dropped) or
    /// the peer has `max` streams open already.
    pub fn accept_stream(&mut self, opaque: u64, max: usize) -> Accept {
        if self.closed.is_some()
            || self.local.contains_key(&opaque)
            || self.remote.contains_key(&opaque)
        {
            return Accept::InUse;
        }
        if self.remote.len() >= max {
            return Accept::Full;
        }
        let state = StreamState {
            callback: None,
            tx_closed: false,
            rx_closed: false,
        };
        self.remote.insert(opaque, state);
        Accept::Taken
    }

    pub fn set_callback(&mut self, opaque: u64, callback: Option<C>) {
        if let Some(s) = self.remote.get_mut(&opaque) {
            s.callback = callback;
        }
    }

    fn stream_mut(&mut self, opaque: u64, origin: Origin) -> Option<&mut StreamState<C>> {
        match origin {
            Origin::Local => match self.local.get_mut(&opaque) {
                Some(Local::Stream(s)) => Some(s),
                _ => None,
            },
            Origin::Remote => self.remote.get_mut(&opaque),
        }
    }

    /// Finds the stream an incoming STREAM/FINISH frame belongs to: one we
    /// opened first (our opaques), else one the peer opened.
    pub fn find_stream(&self, opaque: u64) -> Option<Origin> {
        match self.local.get(&opaque) {
            Some(Local::Stream(s)) if !s.rx_closed => Some(Origin::Local),
            Some(_) => None,
            None => self
                .remote
                .get(&opaque)
                .filter(|s| !s.rx_closed)
                .map(|_| Origin::Remote),
        }
    }

    /// The callback for a message on a stream still open for receiving;
    /// `Some(None)` means the stream exists but has no callback.
    pub fn stream_callback(&self, opaque: u64) -> Option<Option<C>> {
        let state = match self.find_stream(opaque)? {
            Origin::Local => match self.local.get(&opaque) {
                Some(Local::Stream(s)) => s,
                _ => return None,
            },
            Origin::Remote => self.remote.get(&opaque)?,
        };
        Some(state.callback.clone())
    }

    /// May this side still send on the stream?
    pub fn can_send(&self, opaque: u64, origin: Origin) -> Result<()> {
        self.check_open()?;
        let open = match origin {
            Origin::Local => {
                matches!(self.local.get(&opaque), Some(Local::Stream(s)) if !s.tx_closed)
            }
            Origin::Remote => self.remote.get(&opaque).is_some_and(|s| !s.tx_closed),
        };
        if open {
            Ok(())
        } else {
            Err(Error::StreamClosed(opaque))
        }
    }

    /// The peer sent FINISH. Returns the callback to tell, once.
    pub fn remote_finished(&mut self, opaque: u64, origin: Origin) -> Option<Closing<C>> {
        let s = self.stream_mut(opaque, origin)?;
        if s.rx_closed {
            return None;
        }
        s.rx_closed = true;
        let closing = Closing {
            callback: s.callback.clone(),
        };
        let over = s.tx_closed;
        if over {
            // `closing` keeps a reference: this drop is never the last.
            drop(self.finish(opaque, origin));
        }
        Some(closing)
    }

    /// This side sends FINISH: `None` if it had already (nothing to send),
    /// else the callback of a stream now over, for the caller to drop
    /// outside the lock (it may be the last reference to a Python object).
    pub fn local_finished(&mut self, opaque: u64, origin: Origin) -> Option<Option<C>> {
        let s = self.stream_mut(opaque, origin)?;
        if s.tx_closed {
            return None;
        }
        s.tx_closed = true;
        if s.rx_closed {
            return Some(self.finish(opaque, origin));
        }
        Some(None)
    }

    /// Both sides have closed: forget it, and only now reuse our opaque.
    fn finish(&mut self, opaque: u64, origin: Origin) -> Option<C> {
        let state = match origin {
            Origin::Local => match self.local.remove(&opaque) {
                Some(Local::Stream(s)) => Some(s),
                _ => None,
            },
            Origin::Remote => self.remote.remove(&opaque),
        };
        state.and_then(|s| s.callback)
    }

    /// The connection ended: fails every waiting request and hands back the
    /// callbacks of streams that have not seen their end yet.
    /// `broken`: the peer's bytes broke the protocol, which waiting
    /// requests report as such (a peer that is not gofast at all, say).
    pub fn close_all(&mut self, why: &str, broken: Option<&ProtocolError>) -> Vec<C> {
        self.closed.get_or_insert_with(|| why.to_string());
        let mut ending = Vec::new();
        let error = || match broken {
            Some(p) => Error::Protocol(p.clone()),
            None => Error::Closed(why.to_string()),
        };
        for (_, l) in self.local.drain() {
            match l {
                Local::Request(slot) => slot.fill(Err(error())),
                Local::Stream(s) if !s.rx_closed => ending.extend(s.callback),
                _ => {}
            }
        }
        for (_, s) in self.remote.drain() {
            if !s.rx_closed {
                ending.extend(s.callback);
            }
        }
        // A closed table keeps nothing: not even the room it once needed.
        self.local = HashMap::new();
        self.remote = HashMap::new();
        ending
    }

    /// Opaques in use by exchanges this side started (for leak tests).
    pub fn local_in_use(&self) -> usize {
        self.local.len()
    }

    pub fn remote_streams(&self) -> usize {
        self.remote.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Exchanges<u32> {
        Exchanges::new(OpaquePool::new(1000, 1009).unwrap())
    }

    #[test]
    fn late_response_is_dropped_and_frees_the_opaque() {
        let mut ex = table();
        let (o, _slot) = ex.begin_request(None).unwrap();
        ex.expire(o, None);
        assert!(matches!(ex.classify_request(o), RequestFrame::LateResponse));
        assert_eq!(ex.local_in_use(), 0);
        // Another on the same opaque answers nothing: never the peer's REQUEST.
        assert!(matches!(ex.classify_request(o), RequestFrame::Stray));
    }

    #[test]
    fn stream_opaque_is_reused_only_after_both_sides_close() {
        let mut ex = Exchanges::<u32>::new(OpaquePool::new(1000, 1000).unwrap());
        let o = ex.open_stream(Some(7)).unwrap();
        assert!(ex.remote_finished(o, Origin::Local).is_some());
        assert!(
            ex.open_stream(None).is_err(),
            "opaque reused before our FINISH"
        );
        assert!(ex.local_finished(o, Origin::Local).is_some());
        assert_eq!(ex.open_stream(None).unwrap(), o);
    }

    #[test]
    fn expired_opaques_stay_taken_until_their_late_response() {
        let mut ex = Exchanges::<u32>::new(OpaquePool::new(1000, 1000).unwrap());
        let (o, _) = ex.begin_request(None).unwrap();
        ex.expire(o, None);
        assert!(matches!(
            ex.begin_request(None),
            Err(Error::OpaqueExhausted {
                capacity: 1,
                expired: 1
            })
        ));
        assert!(matches!(ex.classify_request(o), RequestFrame::LateResponse));
        assert_eq!(ex.begin_request(None).unwrap().0, o);
    }

    #[test]
    fn an_answer_on_our_range_is_never_a_request() {
        let mut ex = table();
        assert!(ex.is_response(1005) && !ex.is_awaited(1005));
        assert!(matches!(ex.classify_request(1005), RequestFrame::Stray));
        assert!(!ex.is_response(5000));
        assert!(matches!(ex.classify_request(5000), RequestFrame::NotOurs));
    }

    #[test]
    fn the_peer_opens_at_most_max_streams_and_a_finished_one_frees_room() {
        let mut ex = table();
        assert_eq!(ex.accept_stream(5000, 2), Accept::Taken);
        assert_eq!(ex.accept_stream(5000, 2), Accept::InUse);
        assert_eq!(ex.accept_stream(5001, 2), Accept::Taken);
        assert_eq!(ex.accept_stream(5002, 2), Accept::Full);
        assert_eq!(
            ex.accept_stream(5001, 2),
            Accept::InUse,
            "in use beats full"
        );
        assert_eq!(ex.remote_streams(), 2);
        assert!(ex.remote_finished(5000, Origin::Remote).is_some());
        assert!(ex.local_finished(5000, Origin::Remote).is_some());
        assert_eq!(ex.accept_stream(5002, 2), Accept::Taken);
    }

    #[test]
    fn close_all_fails_requests_and_ends_open_streams() {
        let mut ex = table();
        let (_, slot) = ex.begin_request(None).unwrap();
        ex.open_stream(Some(1)).unwrap();
        assert_eq!(ex.accept_stream(5000, 10), Accept::Taken);
        ex.set_callback(5000, Some(2));
        let mut ended = ex.close_all("bye", None);
        ended.sort();
        assert_eq!(ended, vec![1, 2]);
        assert!(matches!(slot.wait(None), Some(Err(Error::Closed(_)))));
        assert!(ex.begin_request(None).is_err());
    }
}
