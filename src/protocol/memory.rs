//! A `FrameSink` in memory: frames are encoded as the driver's send queue
//! would encode them (with the peer's encodings once the handshake set
//! them) into one byte buffer, for another session to `feed` on, and
//! optionally kept as a list for tests to look at. For tests and benches
//! of the protocol without sockets or threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::sync::Mutex;

use super::FrameSink;
use crate::codec::{encode_frame, Encoding, Kind, Scratch};
use crate::errors::{Error, Result};
use crate::writer::{Out, Urgency};

/// One frame pushed, as the session asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub kind: Kind,
    pub opaque: u64,
    /// 0 for a FINISH.
    pub id: u64,
    pub data: Vec<u8>,
    /// The compression layers it was sent with, innermost first.
    pub layers: Vec<Encoding>,
    pub urgency: Urgency,
}

#[derive(Default)]
struct State {
    bytes: Vec<u8>,
    sent: Vec<Sent>,
    encodings: Vec<Encoding>,
    scratch: Scratch,
    /// Frames accepted before the sink reports itself full (`None`: no limit).
    room: Option<usize>,
    closed: Option<String>,
}

/// A leaf lock, held only to encode one frame.
#[derive(Default)]
pub struct MemorySink {
    state: Mutex<State>,
    /// Keep a `Sent` per frame (tests), or only the bytes (benches).
    record: bool,
    batches: AtomicUsize,
}

impl MemorySink {
    /// A sink keeping both the bytes and the list of frames.
    pub fn recording() -> Self {
        MemorySink {
            record: true,
            ..Default::default()
        }
    }

    /// A sink keeping only the bytes.
    pub fn bytes_only() -> Self {
        MemorySink::default()
    }

    /// Takes the bytes encoded so far.
    pub fn take_bytes(&self) -> Vec<u8> {
        std::mem::take(&mut self.state.lock().bytes)
    }

    /// Takes the frames pushed so far (with `recording`).
    pub fn take_sent(&self) -> Vec<Sent> {
        std::mem::take(&mut self.state.lock().sent)
    }

    /// The encodings the session set (from the peer's whoami tags).
    pub fn encodings(&self) -> Vec<Encoding> {
        self.state.lock().encodings.clone()
    }

    /// From now on accept `frames` more, then report the sink full.
    pub fn set_room(&self, frames: Option<usize>) {
        self.state.lock().room = frames;
    }

    /// Every later push fails with `Closed(reason)`.
    pub fn close(&self, reason: &str) {
        self.state.lock().closed = Some(reason.to_string());
    }

    /// How many batches of received frames ran corked.
    pub fn batches(&self) -> usize {
        self.batches.load(Ordering::Relaxed)
    }
}

impl FrameSink for MemorySink {
    fn push(&self, out: Out<'_>, urgency: Urgency) -> Result<bool> {
        let mut g = self.state.lock();
        let st = &mut *g;
        if let Some(why) = &st.closed {
            return Err(Error::Closed(why.clone()));
        }
        match &mut st.room {
            Some(0) => return Ok(false),
            Some(n) => *n -= 1,
            None => {}
        }
        let sent = match out {
            Out::Msg {
                kind,
                opaque,
                id,
                data,
                compress,
            } => {
                let layers: &[Encoding] = if compress { &st.encodings } else { &[] };
                let data = data.bytes();
                encode_frame(
                    &mut st.bytes,
                    kind,
                    opaque,
                    id,
                    data,
                    layers,
                    &mut st.scratch,
                );
                (kind, opaque, id, data, layers)
            }
            Out::Finish { opaque } => {
                crate::codec::encode_finish(&mut st.bytes, opaque);
                (Kind::Finish, opaque, 0, &[][..], &[][..])
            }
        };
        if self.record {
            let (kind, opaque, id, data, layers) = sent;
            let sent = Sent {
                kind,
                opaque,
                id,
                data: data.to_vec(),
                layers: layers.to_vec(),
                urgency,
            };
            st.sent.push(sent);
        }
        Ok(true)
    }

    fn corked(&self, _quick: bool, run: &mut dyn FnMut()) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        run()
    }

    fn set_encodings(&self, encodings: Vec<Encoding>) {
        self.state.lock().encodings = encodings;
    }

    fn wait_room(&self, _until: Instant) {}
}
