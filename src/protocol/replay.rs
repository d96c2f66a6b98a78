//! Test code only: `protocol/mod.rs` declares it under #[cfg(test)].
//!
//! The conversations captured from the Go reference (tests/vectors,
//! conversation-*.json), replayed against a session with no socket: the
//! recorded bytes of one side are fed to a session playing the other side's
//! script, and what the session sends must be the other side's recording:
//! the same frames, ids, payloads and compression layers, the opaque the
//! protocol fixes (or one of our range where it is ours to pick), byte for
//! byte without compression; the handler sees the recorded log, and the
//! frame counters end as the recording's. (tests/test_replay.py does the
//! same over a real socket.)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::memory::{MemorySink, Sent};
use super::testing::{frame, named_session, Call, Recording};
use super::Session;
use crate::builtin::{self, WHOAMI_ID};
use crate::codec::compress::parse_tags;
use crate::codec::{cbor, decode_body, Decoded, Encoding, FrameDecoder, Kind};
use crate::exchange::Origin;
use crate::settings::{Role, Settings};
use crate::writer::Data;

const C2S: &str = "client->server";
const MAX: usize = 1 << 24;

/// One frame of the recording.
#[derive(Clone, Debug)]
struct Rec {
    dir: String,
    label: String,
    kind: Kind,
    opaque: u64,
    id: u64,
    data: Vec<u8>,
    /// Compression layers, innermost first.
    layers: Vec<Encoding>,
    raw: Vec<u8>,
}

struct Conversation {
    name: String,
    tags: String,
    buffersize: u64,
    frames: Vec<Rec>,
    json: Value,
}

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn names() -> Vec<String> {
    let mut v = Vec::new();
    for tags in ["none", "gzip", "lzw"] {
        for b in [1, 3] {
            v.push(format!("conversation-tags-{tags}-batch{b}.json"));
        }
    }
    v
}

/// The compression layer of a body (the reference applies at most one).
fn layers_of(body: &[u8]) -> Vec<Encoding> {
    match cbor::read_head(body) {
        Ok(Some((cbor::MAJOR_TAG, tag, _))) => Encoding::from_tag(tag).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// Splits a byte stream into frames.
/// (`dir` and `label` left empty for the caller to fill in).
fn split(bytes: &[u8]) -> Vec<Rec> {
    let decoder = FrameDecoder::new(MAX);
    let mut at = 0;
    let mut out = Vec::new();
    while at < bytes.len() {
        let (d, used) = decoder.decode(&bytes[at..]).unwrap().expect("whole frames");
        let Decoded::Frame(f) = d else {
            panic!("unusable frame in {bytes:02x?}")
        };
        let (id, data) = if f.kind == Kind::Finish {
            (0, Vec::new())
        } else {
            let m = decode_body(f.body, MAX).unwrap();
            (m.id, m.data.into_owned())
        };
        out.push(Rec {
            dir: String::new(),
            label: String::new(),
            kind: f.kind,
            opaque: f.opaque,
            id,
            data,
            layers: layers_of(f.body),
            raw: bytes[at..at + used].to_vec(),
        });
        at += used;
    }
    out
}

fn load(name: &str) -> Conversation {
    let text = std::fs::read_to_string(vectors().join(name)).expect("conversation file");
    let json: Value = serde_json::from_str(&text).unwrap();
    let mut events: Vec<&Value> = json["events"].as_array().unwrap().iter().collect();
    events.sort_by_key(|e| e["seq"].as_u64());
    let mut frames = Vec::new();
    for e in events {
        let bytes = hex::decode(e["hex"].as_str().unwrap()).unwrap();
        for mut rec in split(&bytes) {
            rec.dir = e["dir"].as_str().unwrap().to_string();
            rec.label = e["label"].as_str().unwrap().to_string();
            frames.push(rec);
        }
    }
    Conversation {
        name: name.to_string(),
        tags: json["tags"].as_str().unwrap().to_string(),
        buffersize: json["buffersize"].as_u64().unwrap(),
        frames,
        json,
    }
}

impl Conversation {
    fn side(&self, side: &str) -> &Value {
        &self.json[side]
    }

    fn range(&self, side: &str) -> (u64, u64) {
        let r = self.side(side)["opaque_range"].as_array().unwrap();
        (r[0].as_u64().unwrap(), r[1].as_u64().unwrap())
    }

    fn settings(&self, side: &str) -> Settings {
        let role = if side == "client" {
            Role::Dialer
        } else {
            Role::Acceptor
        };
        let mut s = Settings::defaults(role);
        (s.opaque_start, s.opaque_end) = self.range(side);
        s.buffersize = self.buffersize;
        s.tags = parse_tags(&self.tags).unwrap();
        // The recorded side is the Go reference, which has no `x-errors`:
        // with it on, our whoami would carry the tag the recording lacks.
        s.errors_ext = false;
        s
    }

    fn session(
        &self,
        side: &str,
        handler: Recording,
    ) -> (Arc<Session<Recording>>, Arc<MemorySink>) {
        // Named as the recorded side, so its whoami is that side's.
        let name = self.side(side)["name"].as_str().unwrap();
        let version = self.side(side)["version64"].as_u64().unwrap();
        named_session(name, version, self.settings(side), handler)
    }
}

/// The recorded frame with another opaque (ours are 3-byte tags as the
/// reference's are, so the frame keeps its length).
fn retag(raw: &[u8], opaque: u64) -> Vec<u8> {
    let (_, _, used) = cbor::read_head(&raw[4..]).unwrap().unwrap();
    let at = 4 + used;
    assert_eq!(raw[at], 0xd9, "a 3-byte opaque tag");
    let mut out = raw.to_vec();
    out[at + 1..at + 3].copy_from_slice(&(opaque as u16).to_be_bytes());
    out
}

/// What the session has sent since the last call, each with its bytes.
fn drain(sink: &MemorySink) -> Vec<(Sent, Vec<u8>)> {
    let sent = sink.take_sent();
    let frames = split(&sink.take_bytes());
    assert_eq!(sent.len(), frames.len());
    sent.into_iter()
        .zip(frames.into_iter().map(|f| f.raw))
        .collect()
}

struct Player<'c> {
    conv: &'c Conversation,
    session: Arc<Session<Recording>>,
    sink: Arc<MemorySink>,
    ours: (u64, u64),
    /// Sent and not yet matched with the recording.
    pending: Vec<(Sent, Vec<u8>)>,
}

impl Player<'_> {
    fn collect(&mut self) {
        let more = drain(&self.sink);
        self.pending.extend(more);
    }

    /// Matches the recorded `rec` with what we sent: the latest frame for
    /// an action just taken, else the first with its kind and opaque.
    fn expect(&mut self, rec: &Rec, acted: bool, opaque: Option<u64>) -> u64 {
        self.collect();
        let at = if acted {
            self.pending.len().checked_sub(1)
        } else {
            self.pending
                .iter()
                .position(|(s, _)| s.kind == rec.kind && Some(s.opaque) == opaque)
        };
        let where_ = format!(
            "{}: recorded {rec:?}, ours {:?}",
            self.conv.name, self.pending
        );
        let (sent, raw) = self.pending.remove(at.expect(&where_));
        assert_eq!(sent.kind, rec.kind, "{where_}");
        match opaque {
            Some(o) => assert_eq!(sent.opaque, o, "{where_}"),
            None => assert!(
                (self.ours.0..=self.ours.1).contains(&sent.opaque),
                "{where_}"
            ),
        }
        assert_eq!((sent.id, &sent.data), (rec.id, &rec.data), "{where_}");
        assert_eq!(sent.layers, rec.layers, "{where_}");
        if self.conv.tags.is_empty() {
            assert_eq!(raw, retag(&rec.raw, sent.opaque), "{where_}");
        }
        sent.opaque
    }

    fn feed(&self, raw: &[u8]) {
        assert_eq!(self.session.feed(raw).unwrap(), raw.len());
    }

    fn finish(mut self, side: &str, calls: Vec<String>, beats_not_ours: u64) {
        self.collect();
        assert!(
            self.pending.is_empty(),
            "{}: sent beyond the recording: {:?}",
            self.conv.name,
            self.pending
        );
        let log: Vec<String> = self.conv.side(side)["log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect();
        assert_eq!(calls, log, "{}", self.conv.name);
        let recorded = &self.conv.side(side)["stats_before_close"];
        let st = self.session.stats.snapshot();
        for (k, v) in st {
            let Some(want) = recorded[k].as_u64() else {
                continue;
            };
            if matches!(k, "n_flushes" | "n_txbyte" | "n_rxbyte") {
                continue; // the driver's: writes and bytes
            }
            let want = if matches!(k, "n_tx" | "n_txpost") {
                want - beats_not_ours
            } else {
                want
            };
            assert_eq!(v, want, "{}: {k}", self.conv.name);
        }
    }
}

/// The server's log lines, from the handler's calls.
fn server_log(calls: Vec<Call>) -> Vec<String> {
    let text = |d: &[u8]| String::from_utf8_lossy(d).into_owned();
    calls
        .into_iter()
        .map(|c| match c {
            Call::Post(_, d) => format!("post {}", text(&d)),
            Call::Request(_, _, d) => format!("request {}", text(&d)),
            Call::StreamStart(_, _, d) => format!("stream-start {}", text(&d)),
            Call::StreamMsg(_, Some((_, d))) => format!("stream-msg {}", text(&d)),
            Call::StreamMsg(_, None) => "stream closed by client".to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// Our session as the SERVER, fed the reference client's bytes.
#[test]
fn our_server_session_against_the_reference_clients_bytes() {
    for name in names() {
        let conv = load(&name);
        let mut h = Recording::handling(&[100, 101, 102]);
        h.answer = true;
        let (session, sink) = conv.session("server", h);
        let ours = conv.range("server");
        let mut p = Player {
            conv: &conv,
            session,
            sink,
            ours,
            pending: Vec::new(),
        };
        let mut whoami = None;
        let mut stream = None;
        for rec in &conv.frames {
            if rec.dir == C2S {
                if rec.kind == Kind::StreamStart {
                    stream = Some(rec.opaque);
                }
                p.feed(&rec.raw);
                // As `Core::handshake` does once our whoami is answered.
                if let Some(req) = whoami.take_if(|r: &mut super::PendingRequest| r.is_ready()) {
                    let reply = req.wait(None).unwrap().unwrap();
                    let peer = p.session.handshake_reply(&reply).unwrap();
                    assert_eq!(peer.name, conv.side("client")["name"].as_str().unwrap());
                }
                continue;
            }
            let mine = (ours.0..=ours.1).contains(&rec.opaque);
            match (rec.label.as_str(), rec.kind) {
                ("handshake", _) if mine => {
                    let data = p.session.whoami().encode();
                    whoami = Some(
                        p.session
                            .send_request(WHOAMI_ID, &data, false, &mut || Ok(()))
                            .unwrap(),
                    );
                    p.expect(rec, true, None);
                }
                ("stream", Kind::StreamMsg) => {
                    let o = stream.unwrap();
                    p.session
                        .stream_send(o, Origin::Remote, rec.id, Data::copied(&rec.data), true)
                        .unwrap();
                    p.expect(rec, true, Some(o));
                }
                ("stream", Kind::Finish) => {
                    p.session
                        .stream_close(stream.unwrap(), Origin::Remote)
                        .unwrap();
                    p.expect(rec, true, stream);
                }
                _ => {
                    p.expect(rec, false, Some(rec.opaque));
                }
            }
        }
        assert!(
            whoami.is_none() && p.session.peer().is_some(),
            "{name}: handshake"
        );
        assert_eq!(p.session.exchanges_in_use(), (0, 0), "{name}");
        assert!(p.session.silent_since().is_some(), "{name}: heartbeats");
        let calls = server_log(p.session.handler().take());
        p.finish("server", calls, 0);
    }
}

/// Our session as the CLIENT running the script, fed the reference server's
/// bytes (RESPONSEs and stream frames retagged to the opaques we chose).
#[test]
fn our_client_session_against_the_reference_servers_bytes() {
    for name in names() {
        let conv = load(&name);
        let (session, sink) = conv.session("client", Recording::default());
        let ours = conv.range("client");
        let mut p = Player {
            conv: &conv,
            session,
            sink,
            ours,
            pending: Vec::new(),
        };
        // The reference's opaque for each exchange → ours.
        let mut mapped = std::collections::HashMap::new();
        let mut pending = std::collections::HashMap::new();
        let mut stream = None;
        let mut log = Vec::new();
        let mut beats = 0;
        let no_wait = &mut || Ok(());
        for rec in &conv.frames {
            let theirs = (ours.0..=ours.1).contains(&rec.opaque);
            if rec.dir != C2S {
                let o = if theirs {
                    mapped[&rec.opaque]
                } else {
                    rec.opaque
                };
                p.feed(&retag(&rec.raw, o));
                if let Some(req) = pending.remove(&o) {
                    let req: super::PendingRequest = req;
                    let reply = req.wait(Some(Instant::now())).expect("answered").unwrap();
                    match rec.label.as_str() {
                        "handshake" => drop(p.session.handshake_reply(&reply).unwrap()),
                        "request" => {
                            log.push(format!("response {}", String::from_utf8_lossy(&reply.data)))
                        }
                        "ping" => log.push(format!(
                            "ping {}",
                            builtin::decode_ping(&reply.data).unwrap()
                        )),
                        other => panic!("a RESPONSE in {other}"),
                    }
                }
                continue;
            }
            let s = &p.session;
            let opaque = match (rec.label.as_str(), rec.kind) {
                ("handshake", _) if !theirs => {
                    p.expect(rec, false, Some(rec.opaque));
                    continue;
                }
                ("heartbeat", _) => {
                    beats += 1; // the driver's writer sends these, not the session
                    continue;
                }
                ("handshake" | "request" | "ping", Kind::Request) => {
                    let compress = rec.id != WHOAMI_ID;
                    let req = s
                        .send_request(rec.id, &rec.data, compress, no_wait)
                        .unwrap();
                    let o = p.expect(rec, true, None);
                    pending.insert(o, req);
                    o
                }
                ("post", Kind::Post) => {
                    s.post(rec.id, Data::copied(&rec.data), true).unwrap();
                    p.expect(rec, true, None)
                }
                ("stream", Kind::StreamStart) => {
                    let o = s
                        .open_stream(rec.id, Data::copied(&rec.data), 0, true)
                        .unwrap()
                        .unwrap();
                    stream = Some(o);
                    p.expect(rec, true, None)
                }
                ("stream", Kind::StreamMsg) => {
                    s.stream_send(
                        stream.unwrap(),
                        Origin::Local,
                        rec.id,
                        Data::copied(&rec.data),
                        true,
                    )
                    .unwrap();
                    p.expect(rec, true, stream)
                }
                ("stream", Kind::Finish) => {
                    s.stream_close(stream.unwrap(), Origin::Local).unwrap();
                    p.expect(rec, true, stream)
                }
                other => panic!("{name}: unexpected {other:?}"),
            };
            mapped.insert(rec.opaque, opaque);
        }
        assert!(pending.is_empty(), "{name}: unanswered");
        // The stream's messages, then its end, as one log line.
        let got: Vec<String> = p
            .session
            .handler()
            .take()
            .into_iter()
            .map(|c| match c {
                Call::StreamMsg(_, Some((_, d))) => String::from_utf8_lossy(&d).into_owned(),
                Call::StreamMsg(_, None) => "closed-by-server".to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        log.insert(1, format!("stream got [{}]", got.join(" ")));
        assert_eq!(p.session.exchanges_in_use(), (0, 0), "{name}");
        assert_eq!(beats, 2);
        p.finish("client", log, beats);
    }
}

#[test]
fn the_recordings_hold_whole_valid_frames() {
    for name in names() {
        let conv = load(&name);
        assert_eq!(
            conv.frames.len(),
            20,
            "{name}: the script of tests/vectors/README.md"
        );
        for rec in &conv.frames {
            if rec.kind != Kind::Finish && conv.tags.is_empty() {
                assert_eq!(
                    rec.raw,
                    frame(rec.kind, rec.opaque, rec.id, &rec.data),
                    "{name}"
                );
            }
        }
    }
}
