//! What happens to each received frame: POSTs to their handlers (batched
//! where a handler takes batches), REQUESTs to handlers or the built-ins,
//! RESPONSEs to the requester's slot, stream frames to their callbacks. The
//! frames of one read are handled in order, in one `Handler::batch` (for
//! Python: one GIL acquisition), with the sink corked meanwhile.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use super::{Dispatched, Handler, Session, MAX_BODY_FACTOR};
use crate::builtin::{self, HEARTBEAT_ID, PING_ID, WHOAMI_ID};
use crate::codec::{decode_body, Decoded, FrameDecoder, Kind, Message};
use crate::errors::{Error, ProtocolError};
use crate::exchange::{Accept, Origin, OwnedMessage, RequestFrame, Slot};
use crate::stats::Stats;
use crate::writer::{Data, Out, Urgency};

/// An `81` frame that reached no requester intact.
pub struct Dropped {
    pub why: String,
    /// A RESPONSE whose body is broken: its requester fails with this.
    requester: Option<(Arc<Slot>, ProtocolError)>,
}

impl Dropped {
    pub fn tell_requester(self) {
        if let Some((slot, e)) = self.requester {
            slot.fill(Err(Error::Protocol(e)));
        }
    }
}

/// A frame delimited in a receive buffer: its body is `buf[body]`.
pub struct FrameRef {
    pub kind: Kind,
    pub opaque: u64,
    pub body: Range<usize>,
    /// The whole frame's length on the wire.
    pub len: usize,
}

/// Where `body` (a sub-slice of `window`, or an empty slice from anywhere)
/// sits in the read buffer, `window` starting at `offset`.
pub fn body_range(window: &[u8], body: &[u8], offset: usize) -> Range<usize> {
    let at = (body.as_ptr() as usize).wrapping_sub(window.as_ptr() as usize);
    if body.is_empty() || at > window.len() || at + body.len() > window.len() {
        return offset..offset;
    }
    offset + at..offset + at + body.len()
}

impl<H: Handler> Session<H> {
    /// Bytes in: handles every whole frame at the front of `data` as one
    /// batch and returns how many bytes they took (a partial frame at the
    /// end is left for the caller to complete). `Err`: the bytes can no
    /// longer be delimited (§6 "connection closed"); the frames before the
    /// fault are handled first. Received bytes are the driver's to count.
    pub fn feed(self: &Arc<Self>, data: &[u8]) -> Result<usize, ProtocolError> {
        let decoder = FrameDecoder::new(self.settings.max_frame);
        let mut frames = Vec::new();
        let mut used = 0;
        while used < data.len() {
            match decoder.decode(&data[used..]) {
                Ok(None) => break,
                Ok(Some((Decoded::Frame(f), len))) => {
                    let body = body_range(&data[used..], f.body, used);
                    frames.push(FrameRef {
                        kind: f.kind,
                        opaque: f.opaque,
                        body,
                        len,
                    });
                    used += len;
                }
                Ok(Some((Decoded::Dropped(e), len))) => {
                    self.note_peer(format_args!("dropped a frame of {len} bytes: {e}"));
                    Stats::incr(&self.stats.n_rx);
                    self.stats.drop_frame(len);
                    used += len;
                }
                Err(e) => {
                    self.stats.drop_frame(data.len() - used);
                    self.receive(data, &frames);
                    return Err(e);
                }
            }
        }
        if !frames.is_empty() {
            self.receive(data, &frames);
        }
        Ok(used)
    }

    /// Frames in: handles the frames of one read, in order. The handler's
    /// `batch` (for Python: the GIL) is entered once, and only if some frame
    /// needs it: a batch of RESPONSEs to our requests runs no handler.
    pub fn receive(self: &Arc<Self>, buf: &[u8], frames: &[FrameRef]) {
        let needs_handler = {
            let ex = self.ex.lock();
            frames
                .iter()
                .any(|f| !(f.kind == Kind::Request && ex.is_response(f.opaque)))
        };
        let mut run = || {
            // Consecutive POSTs for one batch handler become one call.
            let mut posts: Vec<Message<'_>> = Vec::new();
            for f in frames {
                self.handle_frame(f, &buf[f.body.clone()], &mut posts);
            }
            self.flush_posts(&mut posts);
        };
        self.sink.corked(!needs_handler, &mut || {
            if needs_handler {
                self.handler.batch(&mut run);
            } else {
                run();
            }
        });
        self.handler.received(&|| self.is_closed());
    }

    /// Decodes a frame's message, counting a drop when it is unusable.
    fn message<'b>(&self, f: &FrameRef, body: &'b [u8]) -> Option<Message<'b>> {
        match decode_body(body, self.settings.max_frame * MAX_BODY_FACTOR) {
            Ok(m) => Some(m),
            Err(e) => {
                self.drop_frame(f, &e.to_string());
                None
            }
        }
    }

    fn drop_frame(&self, f: &FrameRef, why: &str) {
        self.stats.drop_frame(f.len);
        self.log_drop(f, why);
    }

    /// Logs a drop already counted. Logging takes the GIL: callers hold no
    /// lock but a driver's `read` (see the lock rules in transport.rs).
    pub fn log_drop(&self, f: &FrameRef, why: &str) {
        self.note_peer(format_args!(
            "dropped {:?} frame, opaque {}: {why}",
            f.kind, f.opaque
        ));
    }

    /// A DEBUG line about what the peer sent (a dropped frame), within the
    /// session's rate limit (a flood of bad frames must not flood the log);
    /// the lines left out are counted, and the next line logged says how
    /// many. Callers may hold a driver's `read` lock: the limiter takes none.
    /// The rate limit also bounds the GIL takes pyo3-log needs to ask Python
    /// whether DEBUG is on (it caches loggers, not levels: python/mod.rs).
    pub fn note_peer(&self, what: std::fmt::Arguments<'_>) {
        match self.log_limit.admit() {
            Some(0) => log::debug!("gofast[{}]: {what}", self.name),
            Some(n) => log::debug!(
                "gofast[{}]: {what} ({n} more such lines were left out before this one)",
                self.name
            ),
            None => Stats::incr(&self.stats.n_log_suppressed),
        }
    }

    /// `posts`: batched POSTs not yet delivered; anything else goes after them.
    fn handle_frame<'b>(
        self: &Arc<Self>,
        f: &FrameRef,
        body: &'b [u8],
        posts: &mut Vec<Message<'b>>,
    ) {
        Stats::incr(&self.stats.n_rx);
        if f.kind != Kind::Post {
            self.flush_posts(posts);
        }
        match f.kind {
            Kind::Post => self.on_post(f, body, posts),
            Kind::Request => self.on_request_frame(f, body),
            Kind::StreamStart => self.on_stream_start(f, body),
            Kind::StreamMsg => self.on_stream_msg(f, body),
            Kind::Finish => self.on_finish(f),
        }
    }

    fn flush_posts(self: &Arc<Self>, posts: &mut Vec<Message<'_>>) {
        if !posts.is_empty() {
            self.handler.on_posts(self, posts);
            posts.clear();
        }
    }

    fn on_post<'b>(self: &Arc<Self>, f: &FrameRef, body: &'b [u8], posts: &mut Vec<Message<'b>>) {
        Stats::incr(&self.stats.n_rxpost);
        let Some(msg) = self.message(f, body) else {
            return;
        };
        if self.handler.batches_posts(msg.id) {
            if posts.first().is_some_and(|p| p.id != msg.id) {
                self.flush_posts(posts);
            }
            posts.push(msg);
            return;
        }
        self.flush_posts(posts);
        if msg.id == HEARTBEAT_ID {
            Stats::incr(&self.stats.n_rxbeats);
            *self.silent_since.lock() = Some(Instant::now());
        } else if builtin::is_reserved(msg.id) {
            self.drop_frame(f, "POST with a reserved message id");
        } else if self.handler.on_post(self, &msg) == Dispatched::NoHandler {
            self.drop_frame(f, &format!("no handler for message id {}", msg.id));
        }
    }

    fn on_request_frame(self: &Arc<Self>, f: &FrameRef, body: &[u8]) {
        let class = self.ex.lock().classify_request(f.opaque);
        match class {
            RequestFrame::NotOurs => self.on_peer_request(f, body),
            class => {
                if let Some(dropped) = self.deliver_response(f, body, class) {
                    self.log_drop(f, &dropped.why);
                    dropped.tell_requester();
                }
            }
        }
    }

    /// For a requester reading RESPONSEs itself: the class of an `81` frame
    /// on `opaque` if it answers a request still waiting (taking it off the
    /// table), else `None` (late and stray RESPONSEs are left to `receive`).
    pub fn take_awaited(&self, opaque: u64) -> Option<RequestFrame> {
        let mut ex = self.ex.lock();
        ex.is_awaited(opaque).then(|| ex.classify_request(opaque))
    }

    /// An `81` frame on one of our own opaques (not a peer's REQUEST).
    /// Returns what was dropped: counted, but not yet logged, nor told to
    /// its requester (a requester calls this holding the read lock, and
    /// logs after releasing it; the requester learns after the log).
    pub fn deliver_response(
        &self,
        f: &FrameRef,
        body: &[u8],
        class: RequestFrame,
    ) -> Option<Dropped> {
        let mut requester = None;
        let why = match class {
            RequestFrame::Response(slot) => {
                Stats::incr(&self.stats.n_rxresp);
                let limit = self.settings.max_frame * MAX_BODY_FACTOR;
                match decode_body(body, limit) {
                    Ok(m) => {
                        slot.fill(Ok(OwnedMessage {
                            id: m.id,
                            data: m.data.into_owned(),
                        }));
                        return None;
                    }
                    Err(e) => {
                        let why = e.to_string();
                        requester = Some((slot, e));
                        why
                    }
                }
            }
            RequestFrame::LateResponse => {
                Stats::incr(&self.stats.n_rxresp);
                "RESPONSE for a request that already timed out".to_string()
            }
            RequestFrame::Stray => {
                Stats::incr(&self.stats.n_rxresp);
                "RESPONSE on our opaque range for no request in flight".to_string()
            }
            RequestFrame::Misdirected => "REQUEST on the opaque of a stream we opened".to_string(),
            // Callers route these to on_peer_request; counted if one slips by.
            RequestFrame::NotOurs => "a peer's REQUEST taken for a RESPONSE".to_string(),
        };
        self.stats.drop_frame(f.len);
        Some(Dropped { why, requester })
    }

    fn on_peer_request(self: &Arc<Self>, f: &FrameRef, body: &[u8]) {
        Stats::incr(&self.stats.n_rxreq);
        let Some(msg) = self.message(f, body) else {
            return;
        };
        match msg.id {
            WHOAMI_ID => self.on_peer_whoami(f.opaque, &msg.data),
            PING_ID => self.answer_ping(f.opaque, &msg.data),
            id if builtin::is_reserved(id) => {
                self.drop_frame(f, "REQUEST with a reserved message id")
            }
            id => {
                if self.handler.on_request(self, f.opaque, &msg) == Dispatched::NoHandler {
                    let why = format!("no handler for message id {id}");
                    self.send_error(Kind::Request, f.opaque, "NoHandler", &why);
                    self.drop_frame(f, &why);
                }
            }
        }
    }

    fn answer_ping(&self, opaque: u64, echo: &[u8]) {
        let out = Out::Msg {
            kind: Kind::Request,
            opaque,
            id: PING_ID,
            data: Data::copied(echo),
            compress: true,
        };
        if self.sink.push(out, Urgency::Direct).is_ok() {
            Stats::incr(&self.stats.n_tx);
            Stats::incr(&self.stats.n_txresp);
        }
    }

    fn on_stream_start(self: &Arc<Self>, f: &FrameRef, body: &[u8]) {
        Stats::incr(&self.stats.n_rxstart);
        let Some(msg) = self.message(f, body) else {
            return;
        };
        let max = self.settings.max_streams;
        let accepted = self.ex.lock().accept_stream(f.opaque, max);
        match accepted {
            Accept::Taken => {}
            Accept::InUse => return self.drop_frame(f, "STREAM-START on an opaque already in use"),
            Accept::Full => {
                // Not kept, so a peer cannot grow the table without bound;
                // the FINISH ends the stream for the opener.
                self.drop_frame(f, &format!("STREAM-START beyond streams.max ({max})"));
                let _ = self.send_finish(f.opaque);
                return;
            }
        }
        match self.handler.on_stream_start(self, f.opaque, &msg) {
            Ok(callback) => self.ex.lock().set_callback(f.opaque, callback),
            Err(_) => {
                let why = format!("no handler for message id {}", msg.id);
                self.send_error(Kind::StreamMsg, f.opaque, "NoHandler", &why);
                self.drop_frame(f, &why);
                // Tell the opener this side is done, or its stream (and
                // opaque) would wait for our FINISH until the connection ends.
                let _ = self.stream_close(f.opaque, Origin::Remote);
            }
        }
    }

    fn on_stream_msg(self: &Arc<Self>, f: &FrameRef, body: &[u8]) {
        Stats::incr(&self.stats.n_rxstream);
        let callback = self.ex.lock().stream_callback(f.opaque);
        match callback {
            None => self.drop_frame(f, "STREAM message for an unknown or finished stream"),
            Some(None) => self.drop_frame(f, "STREAM message for a stream without a callback"),
            Some(Some(cb)) => {
                if let Some(msg) = self.message(f, body) {
                    self.handler.on_stream_msg(self, &cb, Some(&msg));
                }
            }
        }
    }

    fn on_finish(self: &Arc<Self>, f: &FrameRef) {
        Stats::incr(&self.stats.n_rxfin);
        let closing = {
            let mut ex = self.ex.lock();
            ex.find_stream(f.opaque)
                .and_then(|origin| ex.remote_finished(f.opaque, origin))
        };
        match closing {
            None => self.drop_frame(f, "FINISH for an unknown or finished stream"),
            Some(c) => {
                if let Some(cb) = c.callback {
                    self.handler.on_stream_msg(self, &cb, None);
                }
            }
        }
    }
}
