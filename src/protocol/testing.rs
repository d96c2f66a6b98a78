//! Test code only: `protocol/mod.rs` declares it under #[cfg(test)].
//!
//! Test support: a `Handler` that records every call and answers as told,
//! sessions over a recording `MemorySink`, and frames as a peer sends them.

use std::collections::HashSet;
use std::sync::Arc;

use crate::sync::Mutex;

use super::memory::{MemorySink, Sent};
use super::{Dispatched, FrameSink, Handler, Session};
use crate::codec::{encode_finish, encode_frame, Encoding, Kind, Message, Scratch};
use crate::settings::{Role, Settings};
use crate::writer::Data;

/// One call the session made to the handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Post(u64, Vec<u8>),
    Posts(Vec<(u64, Vec<u8>)>),
    Request(u64, u64, Vec<u8>),
    StreamStart(u64, u64, Vec<u8>),
    /// A stream's callback (the stream's opaque) got a message, or its end.
    StreamMsg(u64, Option<(u64, Vec<u8>)>),
    Cut(u64, String),
    Closed,
}

/// Handles the ids it is given; records every call.
#[derive(Default)]
pub struct Recording {
    pub calls: Mutex<Vec<Call>>,
    /// Ids with a handler (POST, REQUEST, STREAM-START alike).
    pub ids: HashSet<u64>,
    /// Ids whose POSTs go to a batch handler.
    pub batch_ids: HashSet<u64>,
    /// Answer each REQUEST with "re:" and its data (the conversations' script).
    pub answer: bool,
    /// Accept streams without a callback.
    pub no_callback: bool,
    pub batches: Mutex<usize>,
}

impl Recording {
    pub fn handling(ids: &[u64]) -> Self {
        Recording {
            ids: ids.iter().copied().collect(),
            ..Default::default()
        }
    }

    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock())
    }

    fn note(&self, c: Call) {
        self.calls.lock().push(c);
    }
}

fn owned(m: &Message<'_>) -> (u64, Vec<u8>) {
    (m.id, m.data.to_vec())
}

impl Handler for Recording {
    /// The stream's opaque.
    type Callback = u64;

    fn batch(&self, run: &mut dyn FnMut()) {
        *self.batches.lock() += 1;
        run()
    }

    fn on_post(&self, _s: &Arc<Session<Self>>, msg: &Message<'_>) -> Dispatched {
        if !self.ids.contains(&msg.id) {
            return Dispatched::NoHandler;
        }
        self.note(Call::Post(msg.id, msg.data.to_vec()));
        Dispatched::Handled
    }

    fn batches_posts(&self, id: u64) -> bool {
        self.batch_ids.contains(&id)
    }

    fn on_posts(&self, _s: &Arc<Session<Self>>, msgs: &[Message<'_>]) {
        self.note(Call::Posts(msgs.iter().map(owned).collect()));
    }

    fn on_request(&self, s: &Arc<Session<Self>>, opaque: u64, msg: &Message<'_>) -> Dispatched {
        if !self.ids.contains(&msg.id) {
            return Dispatched::NoHandler;
        }
        self.note(Call::Request(opaque, msg.id, msg.data.to_vec()));
        if self.answer {
            let reply = [b"re:", &msg.data[..]].concat();
            s.respond(opaque, msg.id, Data::copied(&reply), true)
                .expect("respond");
        }
        Dispatched::Handled
    }

    fn on_stream_start(
        &self,
        _s: &Arc<Session<Self>>,
        opaque: u64,
        msg: &Message<'_>,
    ) -> Result<Option<u64>, Dispatched> {
        if !self.ids.contains(&msg.id) {
            return Err(Dispatched::NoHandler);
        }
        self.note(Call::StreamStart(opaque, msg.id, msg.data.to_vec()));
        Ok((!self.no_callback).then_some(opaque))
    }

    fn on_stream_msg(&self, _s: &Arc<Session<Self>>, cb: &u64, msg: Option<&Message<'_>>) {
        self.note(Call::StreamMsg(*cb, msg.map(owned)));
    }

    fn on_stream_cut(&self, cb: &u64, reason: &str) {
        self.note(Call::Cut(*cb, reason.to_string()));
    }

    fn on_closed(&self) {
        self.note(Call::Closed);
    }
}

/// A session as the side that dialed, over a recording sink.
pub fn session(
    settings: Settings,
    handler: Recording,
) -> (Arc<Session<Recording>>, Arc<MemorySink>) {
    named_session("test", 1, settings, handler)
}

/// A session with this whoami name and version.
pub fn named_session(
    name: &str,
    version: u64,
    settings: Settings,
    handler: Recording,
) -> (Arc<Session<Recording>>, Arc<MemorySink>) {
    let sink = Arc::new(MemorySink::recording());
    let dyn_sink: Arc<dyn FrameSink> = sink.clone();
    let s = Session::new(name, version, settings, Arc::default(), dyn_sink, handler);
    (Arc::new(s.expect("session")), sink)
}

pub fn dialer() -> Settings {
    Settings::defaults(Role::Dialer)
}

/// A frame as the peer sends it, compressed with `layers`.
pub fn frame_with(kind: Kind, opaque: u64, id: u64, data: &[u8], layers: &[Encoding]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(
        &mut out,
        kind,
        opaque,
        id,
        data,
        layers,
        &mut Scratch::default(),
    );
    out
}

pub fn frame(kind: Kind, opaque: u64, id: u64, data: &[u8]) -> Vec<u8> {
    frame_with(kind, opaque, id, data, &[])
}

pub fn finish(opaque: u64) -> Vec<u8> {
    let mut out = Vec::new();
    encode_finish(&mut out, opaque);
    out
}

/// Feeds whole frames and checks they were all taken.
pub fn feed(s: &Arc<Session<Recording>>, bytes: &[u8]) {
    assert_eq!(s.feed(bytes).expect("frames"), bytes.len());
}

/// What was sent, as (kind, opaque, id, data).
pub fn sent(sink: &MemorySink) -> Vec<(Kind, u64, u64, Vec<u8>)> {
    sink.take_sent()
        .into_iter()
        .map(|s: Sent| (s.kind, s.opaque, s.id, s.data))
        .collect()
}
