//! What a session sends: POSTs, REQUESTs (registered where their RESPONSE
//! goes), RESPONSEs, stream frames, FINISHes and `x-errors` replies, each
//! checked, handed to the sink and counted once queued.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use super::{Handler, PendingRequest, Session, WAKE_EVERY};
use crate::builtin;
use crate::codec::Kind;
use crate::errors::{Error, Result};
use crate::exchange::{Origin, SlotWaker};
use crate::stats::Stats;
use crate::writer::{Data, Out, Urgency};

/// Most bytes a frame adds around its message data: marker, kind, packet
/// and opaque heads, the body map with its tags, id and data heads.
const FRAME_OVERHEAD_MAX: usize = 64;

impl<H: Handler> Session<H> {
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
        counter: &AtomicU64,
    ) -> Result<bool> {
        self.check_size(data.bytes().len())?;
        let out = Out::Msg {
            kind,
            opaque,
            id,
            data,
            compress: true,
        };
        let queued = self.sink.push(out, urgency)?;
        if queued {
            Stats::incr(&self.stats.n_tx);
            Stats::incr(counter);
        }
        Ok(queued)
    }

    /// Sends a REQUEST and registers where its RESPONSE goes. While the
    /// sink is full it waits, running `between` every `WAKE_EVERY`.
    pub fn send_request(
        &self,
        id: u64,
        data: &[u8],
        compress: bool,
        between: &mut dyn FnMut() -> Result<()>,
    ) -> Result<PendingRequest> {
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
        let (opaque, slot) = self.ex.lock().begin_request(None)?;
        let out = Out::Msg {
            kind: Kind::Request,
            opaque,
            id,
            data: Data::copied(data),
            compress,
        };
        loop {
            let waited = match self.sink.push(out, urgency) {
                Ok(true) => break,
                Ok(false) => {
                    self.sink.wait_room(Instant::now() + WAKE_EVERY);
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

    /// Queues a REQUEST without ever waiting: `Ok(None)` when the sink is
    /// full (nothing was sent; wait for room and retry). Its slot tells
    /// `waker` when the RESPONSE (or the reason there is none) is in: for a
    /// requester that must not block, an event loop.
    pub fn try_request(
        &self,
        id: u64,
        data: &[u8],
        compress: bool,
        waker: &Arc<dyn SlotWaker>,
    ) -> Result<Option<PendingRequest>> {
        self.check_size(data.len())?;
        let (opaque, slot) = self.ex.lock().begin_request(Some(waker))?;
        let out = Out::Msg {
            kind: Kind::Request,
            opaque,
            id,
            data: Data::copied(data),
            compress,
        };
        match self.sink.push(out, Urgency::Direct) {
            Ok(true) => {
                Stats::incr(&self.stats.n_tx);
                Stats::incr(&self.stats.n_txreq);
                Ok(Some(PendingRequest { opaque, slot }))
            }
            other => {
                self.ex.lock().abandon(opaque);
                other.map(|_| None)
            }
        }
    }

    /// Sends several REQUESTs with one wake-up of the writer (the last one
    /// flushes them all). On an error, those already sent are expired.
    pub fn send_requests(
        &self,
        msgs: &[(u64, &[u8])],
        between: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Vec<PendingRequest>> {
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

    /// The requester gives up; a late RESPONSE will be dropped.
    pub fn expire(&self, p: &PendingRequest) {
        self.ex.lock().expire(p.opaque, Some(&p.slot));
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

    /// Queues a FINISH frame for `opaque` and counts it. The outbox takes
    /// a FINISH even when full (`Outbox::push`), so none is lost.
    pub(super) fn send_finish(&self, opaque: u64) -> Result<()> {
        self.sink.push(Out::Finish { opaque }, Urgency::Flush)?;
        Stats::incr(&self.stats.n_tx);
        Stats::incr(&self.stats.n_txfin);
        Ok(())
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
}

/// `Batch` unless the caller asked for a flush, then `urgent`.
fn batch_or(flush: bool, urgent: Urgency) -> Urgency {
    if flush {
        urgent
    } else {
        Urgency::Batch
    }
}

/// Application messages may not use id 0 nor the reserved built-in ids.
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
