//! Test code only: `protocol/mod.rs` declares it under #[cfg(test)].
//!
//! The session on its own: frames in, handler calls and frames out, with
//! no socket and no thread (docs/protocol.md §2–§4, §6, §9).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use super::testing::{dialer, feed, finish, frame, frame_with, sent, session, Call, Recording};
use super::Session;
use crate::builtin::{self, Whoami, ERROR_ID, HEARTBEAT_ID, PING_ID, WHOAMI_ID};
use crate::codec::{Encoding, Kind};
use crate::errors::{Error, ProtocolError};
use crate::exchange::{Origin, OwnedMessage};
use crate::settings::{Role, Settings};
use crate::writer::{Data, Urgency};

const ID: u64 = 100;
/// An opaque of the peer's range (the acceptor's default).
const PEER: u64 = 30_000;

fn no_wait() -> impl FnMut() -> crate::errors::Result<()> {
    || Ok(())
}

fn peer_whoami(tags: &str) -> Vec<u8> {
    Whoami {
        name: "peer".into(),
        version: 7,
        buffersize: 4096,
        tags: tags.into(),
    }
    .encode()
}

/// Both halves of the handshake, as `Core::handshake` drives them.
fn handshake(s: &Arc<Session<Recording>>, peer_tags: &str) -> Whoami {
    let ours = s.whoami().encode();
    let p = s
        .send_request(WHOAMI_ID, &ours, false, &mut no_wait())
        .unwrap();
    feed(
        s,
        &frame(Kind::Request, PEER, WHOAMI_ID, &peer_whoami(peer_tags)),
    );
    feed(
        s,
        &frame(Kind::Request, p.opaque, WHOAMI_ID, &peer_whoami(peer_tags)),
    );
    let reply = p.wait(Some(Instant::now())).expect("answered").unwrap();
    s.handshake_reply(&reply).unwrap()
}

fn stat(
    s: &Session<Recording>,
    f: impl Fn(&crate::stats::Stats) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    f(&s.stats).load(Relaxed)
}

// ---- handshake -----------------------------------------------------------

#[test]
fn whoami_goes_both_ways_uncompressed() {
    let (s, sink) = session(dialer(), Recording::default());
    let peer = handshake(&s, "gzip");
    assert_eq!(
        (peer.name.as_str(), peer.version, peer.buffersize),
        ("peer", 7, 4096)
    );
    assert_eq!(s.peer(), Some(peer));
    assert!(s.answered_peer());
    let out = sink.take_sent();
    assert_eq!(out.len(), 2);
    // Ours, as a REQUEST on our range, then our answer on the peer's opaque.
    let ours = s.whoami().encode();
    assert_eq!(
        (out[0].kind, out[0].opaque, out[0].id),
        (Kind::Request, 10_000, WHOAMI_ID)
    );
    assert_eq!(
        (out[1].kind, out[1].opaque, out[1].id),
        (Kind::Request, PEER, WHOAMI_ID)
    );
    assert!(out.iter().all(|f| f.data == ours && f.layers.is_empty()));
    assert_eq!(out[1].urgency, Urgency::Direct);
    assert_eq!(
        (stat(&s, |t| &t.n_txreq), stat(&s, |t| &t.n_txresp)),
        (1, 1)
    );
    assert_eq!(
        (stat(&s, |t| &t.n_rxreq), stat(&s, |t| &t.n_rxresp)),
        (1, 1)
    );
}

#[test]
fn the_peers_tags_choose_the_encodings_an_unknown_one_is_left_out() {
    let (s, sink) = session(dialer(), Recording::default());
    handshake(&s, "lzw, gzip,x-errors,zstd");
    assert_eq!(sink.encodings(), vec![Encoding::Lzw, Encoding::Gzip]);
    sink.take_sent();
    s.post(ID, Data::copied(b"hello"), true).unwrap();
    let out = sink.take_sent();
    assert_eq!(out[0].layers, vec![Encoding::Lzw, Encoding::Gzip]);
    // What went out decodes back (a session on the other side would read it).
    let (r, _) = session(dialer(), Recording::handling(&[ID]));
    sink.take_bytes();
    s.post(ID, Data::copied(b"again"), true).unwrap();
    feed(&r, &sink.take_bytes());
    assert_eq!(r.handler().take(), vec![Call::Post(ID, b"again".to_vec())]);
}

#[test]
fn by_default_our_whoami_advertises_the_extension() {
    let (s, _) = session(dialer(), Recording::default());
    assert_eq!(s.whoami().tags, "x-errors");
    let (s, _) = session(Settings::defaults(Role::Acceptor), Recording::default());
    assert_eq!(s.whoami().tags, "x-errors");
    let mut off = dialer();
    off.errors_ext = false;
    let (s, _) = session(off, Recording::default());
    assert_eq!(s.whoami().tags, "");
}

#[test]
fn our_whoami_tags_list_our_encodings_then_the_extension() {
    let mut settings = dialer();
    settings.tags = vec![Encoding::Gzip];
    settings.errors_ext = true;
    let (s, _) = session(settings, Recording::default());
    assert_eq!(s.whoami().tags, "gzip,x-errors");
}

fn errors_session(
    ours: bool,
    peer_tags: &str,
) -> (Arc<Session<Recording>>, Arc<super::memory::MemorySink>) {
    let mut settings = dialer();
    settings.errors_ext = ours;
    let (s, sink) = session(settings, Recording::default());
    handshake(&s, peer_tags);
    sink.take_sent();
    (s, sink)
}

#[test]
fn x_errors_is_on_only_when_both_sides_advertise_it() {
    for (ours, tags, on) in [
        (true, "x-errors", true),
        (true, "gzip", false),
        (false, "x-errors", false),
    ] {
        let (s, sink) = errors_session(ours, tags);
        assert_eq!(s.errors_ext(), on, "ours {ours}, peer {tags:?}");
        // A REQUEST with no handler: an error RESPONSE under the extension,
        // nothing without it; a drop either way.
        feed(&s, &frame(Kind::Request, PEER + 1, ID, b"x"));
        let out = sent(&sink);
        if on {
            assert_eq!(out.len(), 1);
            let (kind, opaque, id, data) = &out[0];
            assert_eq!((*kind, *opaque, *id), (Kind::Request, PEER + 1, ERROR_ID));
            let (t, _) = builtin::decode_error(data).unwrap();
            assert_eq!(t, "NoHandler");
        } else {
            assert!(out.is_empty(), "{out:?}");
        }
        assert_eq!(stat(&s, |t| &t.n_mdrops), 1);
    }
}

#[test]
fn the_peers_whoami_request_turns_x_errors_on_before_its_response() {
    let mut settings = dialer();
    settings.errors_ext = true;
    let (s, _) = session(settings, Recording::default());
    assert!(!s.errors_ext());
    feed(
        &s,
        &frame(Kind::Request, PEER, WHOAMI_ID, &peer_whoami("x-errors")),
    );
    assert!(s.errors_ext());
}

#[test]
fn a_whoami_reply_that_does_not_parse_fails_the_handshake() {
    let (s, _) = session(dialer(), Recording::default());
    let bad = OwnedMessage {
        id: WHOAMI_ID,
        data: vec![9],
    };
    assert!(matches!(s.handshake_reply(&bad), Err(Error::Protocol(_))));
    assert_eq!(s.peer(), None);
}

// ---- built-ins -------------------------------------------------------------

#[test]
fn a_ping_is_answered_with_its_own_data() {
    let (s, sink) = session(dialer(), Recording::default());
    let ping = builtin::encode_ping("hello");
    feed(&s, &frame(Kind::Request, PEER, PING_ID, &ping));
    assert_eq!(sent(&sink), vec![(Kind::Request, PEER, PING_ID, ping)]);
    assert_eq!(s.handler().take(), vec![], "no handler runs for a ping");
}

#[test]
fn a_heartbeat_is_counted_and_resets_silent_since() {
    let (s, sink) = session(dialer(), Recording::default());
    assert_eq!(s.silent_since(), None);
    feed(
        &s,
        &frame(
            Kind::Post,
            PEER,
            HEARTBEAT_ID,
            &builtin::encode_heartbeat(0),
        ),
    );
    assert!(s.silent_since().is_some());
    assert_eq!(stat(&s, |t| &t.n_rxbeats), 1);
    assert_eq!(
        (stat(&s, |t| &t.n_rxpost), stat(&s, |t| &t.n_mdrops)),
        (1, 0)
    );
    assert!(sent(&sink).is_empty() && s.handler().take().is_empty());
}

#[test]
fn reserved_ids_are_refused_to_senders_and_dropped_from_the_peer() {
    let (s, _) = session(dialer(), Recording::handling(&[0x1005]));
    for id in [0, 0x1000, 0x1005, 0x100F] {
        let data = Data::copied(b"x");
        assert!(
            matches!(s.post(id, data, true), Err(Error::InvalidArgument(_))),
            "{id}"
        );
        assert!(matches!(
            s.respond(PEER, id, data, true),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            s.open_stream(id, data, 1, true),
            Err(Error::InvalidArgument(_))
        ));
    }
    feed(&s, &frame(Kind::Post, PEER, 0x1005, b"x"));
    feed(&s, &frame(Kind::Request, PEER, 0x1005, b"x"));
    assert_eq!(stat(&s, |t| &t.n_mdrops), 2);
    assert_eq!(s.handler().take(), vec![]);
}

// ---- POST ------------------------------------------------------------------

#[test]
fn posts_reach_their_handler_and_one_without_is_a_counted_drop() {
    let (s, _) = session(dialer(), Recording::handling(&[ID]));
    let unhandled = frame(Kind::Post, PEER, ID + 1, b"nobody");
    feed(
        &s,
        &[frame(Kind::Post, PEER, ID, b"hello"), unhandled.clone()].concat(),
    );
    assert_eq!(s.handler().take(), vec![Call::Post(ID, b"hello".to_vec())]);
    assert_eq!(stat(&s, |t| &t.n_rx), 2);
    assert_eq!(stat(&s, |t| &t.n_rxpost), 2);
    assert_eq!(stat(&s, |t| &t.n_mdrops), 1);
    assert_eq!(stat(&s, |t| &t.n_dropped), unhandled.len() as u64);
}

#[test]
fn consecutive_posts_for_a_batch_handler_come_in_one_call() {
    let mut h = Recording::handling(&[ID]);
    h.batch_ids.insert(ID + 1);
    let (s, sink) = session(dialer(), h);
    let p = |id, d: &[u8]| frame(Kind::Post, PEER, id, d);
    feed(
        &s,
        &[
            p(ID + 1, b"a"),
            p(ID + 1, b"b"),
            p(ID, b"c"),
            p(ID + 1, b"d"),
        ]
        .concat(),
    );
    let batch = |v: &[&[u8]]| Call::Posts(v.iter().map(|d| (ID + 1, d.to_vec())).collect());
    assert_eq!(
        s.handler().take(),
        vec![
            batch(&[b"a", b"b"]),
            Call::Post(ID, b"c".to_vec()),
            batch(&[b"d"])
        ]
    );
    assert_eq!(
        (sink.batches(), *s.handler().batches.lock()),
        (1, 1),
        "one batch per read"
    );
}

// ---- REQUEST / RESPONSE ------------------------------------------------------

#[test]
fn a_request_gets_its_response() {
    let (s, sink) = session(dialer(), Recording::default());
    let p = s.send_request(ID, b"what", true, &mut no_wait()).unwrap();
    assert_eq!(
        sent(&sink),
        vec![(Kind::Request, p.opaque, ID, b"what".to_vec())]
    );
    assert_eq!(s.exchanges_in_use(), (1, 0));
    feed(&s, &frame(Kind::Request, p.opaque, ID, b"re:what"));
    let reply = p.wait(Some(Instant::now())).unwrap().unwrap();
    assert_eq!(
        reply,
        OwnedMessage {
            id: ID,
            data: b"re:what".to_vec()
        }
    );
    assert_eq!(s.exchanges_in_use(), (0, 0));
    assert_eq!(*s.handler().batches.lock(), 0, "RESPONSEs run no handler");
}

#[test]
fn a_late_response_is_dropped_and_frees_its_opaque() {
    let mut settings = dialer();
    settings.opaque_end = settings.opaque_start; // one opaque
    let (s, _) = session(settings, Recording::default());
    let p = s.send_request(ID, b"slow", true, &mut no_wait()).unwrap();
    s.expire(&p);
    assert_eq!(stat(&s, |t| &t.n_timeouts), 1);
    // Held until the late answer: a newer request could take it for its own.
    let again = s.send_request(ID, b"next", true, &mut no_wait());
    assert!(matches!(
        again,
        Err(Error::OpaqueExhausted { expired: 1, .. })
    ));
    feed(&s, &frame(Kind::Request, p.opaque, ID, b"late"));
    assert!(!p.is_ready(), "a late RESPONSE reaches no one");
    assert_eq!(
        (stat(&s, |t| &t.n_rxresp), stat(&s, |t| &t.n_mdrops)),
        (1, 1)
    );
    let next = s.send_request(ID, b"next", true, &mut no_wait()).unwrap();
    assert_eq!(next.opaque, p.opaque);
}

#[test]
fn a_stray_response_on_our_range_is_dropped_never_taken_for_a_request() {
    let (s, sink) = session(dialer(), Recording::handling(&[ID]));
    feed(&s, &frame(Kind::Request, 10_005, ID, b"stray"));
    assert_eq!(s.handler().take(), vec![]);
    assert!(sent(&sink).is_empty());
    assert_eq!(
        (stat(&s, |t| &t.n_rxresp), stat(&s, |t| &t.n_rxreq)),
        (1, 0)
    );
    assert_eq!(stat(&s, |t| &t.n_mdrops), 1);
}

#[test]
fn a_peers_request_reaches_its_handler_which_answers_on_its_opaque() {
    let mut h = Recording::handling(&[ID]);
    h.answer = true;
    let (s, sink) = session(dialer(), h);
    feed(&s, &frame(Kind::Request, PEER, ID, b"what"));
    assert_eq!(
        s.handler().take(),
        vec![Call::Request(PEER, ID, b"what".to_vec())]
    );
    assert_eq!(
        sent(&sink),
        vec![(Kind::Request, PEER, ID, b"re:what".to_vec())]
    );
    assert_eq!(stat(&s, |t| &t.n_txresp), 1);
}

#[test]
fn a_request_without_handler_is_dropped_and_unanswered() {
    let (s, sink) = session(dialer(), Recording::default());
    feed(&s, &frame(Kind::Request, PEER, ID, b"what"));
    assert!(sent(&sink).is_empty());
    assert_eq!(stat(&s, |t| &t.n_mdrops), 1);
}

#[test]
fn a_broken_response_fails_its_request_with_a_protocol_error() {
    let (s, _) = session(dialer(), Recording::default());
    let p = s.send_request(ID, b"what", true, &mut no_wait()).unwrap();
    let mut bad = frame(Kind::Request, p.opaque, ID, b"re:what");
    corrupt_body_tag(&mut bad);
    feed(&s, &bad);
    let got = p.wait(Some(Instant::now())).unwrap();
    assert!(matches!(got, Err(Error::Protocol(_))), "{got:?}");
    assert_eq!(stat(&s, |t| &t.n_mdrops), 1);
}

#[test]
fn a_request_on_the_opaque_of_our_stream_is_dropped() {
    let (s, _) = session(dialer(), Recording::handling(&[ID]));
    let o = s
        .open_stream(ID, Data::copied(b"open"), 1, true)
        .unwrap()
        .unwrap();
    feed(&s, &frame(Kind::Request, o, ID, b"huh"));
    assert_eq!(stat(&s, |t| &t.n_mdrops), 1);
    assert_eq!(s.handler().take(), vec![]);
}

#[test]
fn a_full_sink_makes_a_request_wait_then_an_error_there_abandons_it() {
    let (s, sink) = session(dialer(), Recording::default());
    sink.set_room(Some(0));
    let mut asked = 0;
    let mut between = || {
        asked += 1;
        Err(Error::Interrupted)
    };
    let r = s.send_request(ID, b"x", true, &mut between);
    assert!(matches!(r, Err(Error::Interrupted)));
    assert_eq!(asked, 1);
    assert_eq!(s.exchanges_in_use(), (0, 0), "the opaque went back");
    assert!(!s.post(ID, Data::copied(b"x"), true).unwrap());
    assert_eq!(stat(&s, |t| &t.n_tx), 0, "counted only once queued");
}

// ---- streams ---------------------------------------------------------------

#[test]
fn a_stream_we_open_ends_with_both_finishes() {
    let (s, sink) = session(dialer(), Recording::default());
    let o = s
        .open_stream(ID, Data::copied(b"open"), 7, true)
        .unwrap()
        .unwrap();
    s.stream_send(o, Origin::Local, ID, Data::copied(b"c0"), true)
        .unwrap();
    feed(
        &s,
        &[frame(Kind::StreamMsg, o, ID, b"s0"), finish(o)].concat(),
    );
    assert_eq!(
        s.handler().take(),
        vec![
            Call::StreamMsg(7, Some((ID, b"s0".to_vec()))),
            Call::StreamMsg(7, None)
        ]
    );
    assert_eq!(
        s.exchanges_in_use(),
        (1, 0),
        "ours not sent yet: still held"
    );
    s.stream_close(o, Origin::Local).unwrap();
    s.stream_close(o, Origin::Local).unwrap(); // twice: a no-op
    assert_eq!(
        sent(&sink),
        vec![
            (Kind::StreamStart, o, ID, b"open".to_vec()),
            (Kind::StreamMsg, o, ID, b"c0".to_vec()),
            (Kind::Finish, o, 0, vec![]),
        ]
    );
    assert_eq!(s.exchanges_in_use(), (0, 0));
    assert!(matches!(
        s.stream_send(o, Origin::Local, ID, Data::copied(b"x"), true),
        Err(Error::StreamClosed(_))
    ));
}

#[test]
fn a_stream_the_peer_opens_closed_by_us_first() {
    let (s, sink) = session(dialer(), Recording::handling(&[ID]));
    feed(&s, &frame(Kind::StreamStart, PEER, ID, b"open"));
    assert_eq!(s.exchanges_in_use(), (0, 1));
    s.stream_send(PEER, Origin::Remote, ID, Data::copied(b"s0"), true)
        .unwrap();
    s.stream_close(PEER, Origin::Remote).unwrap();
    // Closed for sending; still receiving until the peer's FINISH.
    feed(
        &s,
        &[frame(Kind::StreamMsg, PEER, ID, b"c0"), finish(PEER)].concat(),
    );
    assert_eq!(
        s.handler().take(),
        vec![
            Call::StreamStart(PEER, ID, b"open".to_vec()),
            Call::StreamMsg(PEER, Some((ID, b"c0".to_vec()))),
            Call::StreamMsg(PEER, None),
        ]
    );
    let kinds: Vec<Kind> = sent(&sink).into_iter().map(|f| f.0).collect();
    assert_eq!(kinds, vec![Kind::StreamMsg, Kind::Finish]);
    assert_eq!(s.exchanges_in_use(), (0, 0));
    // A frame after both FINISHes is for a finished stream.
    feed(&s, &frame(Kind::StreamMsg, PEER, ID, b"late"));
    assert_eq!(stat(&s, |t| &t.n_mdrops), 1);
}

#[test]
fn a_stream_start_without_handler_is_answered_with_finish() {
    for ext in [false, true] {
        let (s, sink) = errors_session(ext, "x-errors");
        feed(&s, &frame(Kind::StreamStart, PEER, ID, b"open"));
        let out = sent(&sink);
        let kinds: Vec<(Kind, u64)> = out.iter().map(|f| (f.0, f.2)).collect();
        if ext {
            assert_eq!(kinds, vec![(Kind::StreamMsg, ERROR_ID), (Kind::Finish, 0)]);
        } else {
            assert_eq!(kinds, vec![(Kind::Finish, 0)]);
        }
        assert!(out.iter().all(|f| f.1 == PEER));
        assert_eq!(stat(&s, |t| &t.n_mdrops), 1);
        // The peer's FINISH then ends it here too: nothing is left.
        feed(&s, &finish(PEER));
        assert_eq!(s.exchanges_in_use(), (0, 0));
    }
}

#[test]
fn a_stream_start_beyond_streams_max_is_refused_with_finish() {
    let mut settings = dialer();
    settings.max_streams = 1;
    let (s, sink) = session(settings, Recording::handling(&[ID]));
    feed(&s, &frame(Kind::StreamStart, PEER, ID, b"one"));
    feed(&s, &frame(Kind::StreamStart, PEER + 1, ID, b"two"));
    assert_eq!(
        s.handler().take(),
        vec![Call::StreamStart(PEER, ID, b"one".to_vec())]
    );
    assert_eq!(sent(&sink), vec![(Kind::Finish, PEER + 1, 0, vec![])]);
    assert_eq!(s.exchanges_in_use(), (0, 1), "the refused one is not kept");
    assert_eq!(stat(&s, |t| &t.n_mdrops), 1);
}

#[test]
fn stream_frames_for_no_stream_are_dropped() {
    let (s, sink) = session(dialer(), Recording::handling(&[ID]));
    feed(&s, &frame(Kind::StreamStart, PEER, ID, b"open"));
    s.handler().take();
    let frames = [
        frame(Kind::StreamMsg, PEER + 7, ID, b"?"),
        finish(PEER + 7),
        frame(Kind::StreamStart, PEER, ID, b"again"), // opaque in use
    ];
    feed(&s, &frames.concat());
    assert_eq!(stat(&s, |t| &t.n_mdrops), 3);
    assert_eq!(s.handler().take(), vec![]);
    assert!(sent(&sink).is_empty());
}

#[test]
fn a_stream_without_callback_drops_its_messages() {
    let mut h = Recording::handling(&[ID]);
    h.no_callback = true;
    let (s, _) = session(dialer(), h);
    feed(
        &s,
        &[
            frame(Kind::StreamStart, PEER, ID, b"open"),
            frame(Kind::StreamMsg, PEER, ID, b"m"),
        ]
        .concat(),
    );
    assert_eq!(stat(&s, |t| &t.n_mdrops), 1);
}

// ---- the end ---------------------------------------------------------------

#[test]
fn losing_the_connection_fails_requests_and_cuts_streams() {
    let (s, sink) = session(dialer(), Recording::handling(&[ID]));
    let p = s.send_request(ID, b"what", true, &mut no_wait()).unwrap();
    let o = s
        .open_stream(ID, Data::copied(b"open"), 1, true)
        .unwrap()
        .unwrap();
    feed(&s, &frame(Kind::StreamStart, PEER, ID, b"theirs"));
    s.handler().take();
    s.connection_lost("peer closed the connection", None);
    assert!(s.is_closed());
    assert_eq!(s.close_reason(), "peer closed the connection");
    assert!(matches!(p.wait(None), Some(Err(Error::Closed(_)))));
    let mut calls = s.handler().take();
    assert_eq!(calls.pop(), Some(Call::Closed));
    calls.sort_by_key(|c| format!("{c:?}"));
    let cut = |cb| {
        [
            Call::Cut(cb, "peer closed the connection".into()),
            Call::StreamMsg(cb, None),
        ]
    };
    let mut want: Vec<Call> = cut(1).into_iter().chain(cut(PEER)).collect();
    want.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(calls, want);
    // Nothing more goes out, and later calls fail.
    sink.take_sent();
    s.stream_close(o, Origin::Local).unwrap();
    assert!(sent(&sink).is_empty());
    assert!(matches!(
        s.send_request(ID, b"x", true, &mut no_wait()),
        Err(Error::Closed(_))
    ));
}

#[test]
fn broken_bytes_fail_waiting_requests_with_the_cause() {
    let (s, _) = session(dialer(), Recording::default());
    let p = s.send_request(ID, b"what", true, &mut no_wait()).unwrap();
    let e = s.feed(b"not gofast at all").unwrap_err();
    s.connection_lost(&e.to_string(), Some(&e));
    assert!(matches!(
        p.wait(None),
        Some(Err(Error::Protocol(ProtocolError::BadMarker(_))))
    ));
}

// ---- §6 bad input ------------------------------------------------------------

/// Turns the body's tag 43 (`d8 2b`) into the unknown tag 42.
fn corrupt_body_tag(f: &mut [u8]) {
    let at = f
        .windows(2)
        .position(|w| w == [0xd8, 0x2b])
        .expect("tag 43");
    f[at + 1] = 0x2a;
}

#[test]
fn unusable_frames_are_dropped_and_the_next_one_is_handled() {
    let good = frame(Kind::Post, PEER, ID, b"good");
    let mut unknown_kind = good.clone();
    unknown_kind[3] = 0x99;
    let bad_opaque = frame(Kind::Post, 1002, ID, b"x");
    let low_opaque = frame(Kind::Post, 7, ID, b"x");
    let mut unknown_tag = good.clone();
    corrupt_body_tag(&mut unknown_tag);
    let id_zero = frame(Kind::Post, PEER, 0, b"x");
    let mut gzip = frame_with(Kind::Post, PEER, ID, &[b'z'; 300], &[Encoding::Gzip]);
    let n = gzip.len();
    gzip[n - 12..n - 2].fill(0xff); // the deflate stream
    let mut lzw = frame_with(Kind::Post, PEER, ID, &[b'z'; 300], &[Encoding::Lzw]);
    let n = lzw.len();
    lzw[n - 8..n - 2].fill(0xff);
    let cases = [
        unknown_kind,
        bad_opaque,
        low_opaque,
        unknown_tag,
        id_zero,
        gzip,
        lzw,
    ];
    for (i, bad) in cases.iter().enumerate() {
        let (s, _) = session(dialer(), Recording::handling(&[ID]));
        feed(&s, &[bad.clone(), good.clone()].concat());
        assert_eq!(
            s.handler().take(),
            vec![Call::Post(ID, b"good".to_vec())],
            "case {i}"
        );
        assert_eq!(stat(&s, |t| &t.n_mdrops), 1, "case {i}");
        assert_eq!(stat(&s, |t| &t.n_dropped), bad.len() as u64, "case {i}");
        assert_eq!(stat(&s, |t| &t.n_rx), 2, "case {i}");
    }
}

#[test]
fn a_body_inflating_past_the_bound_is_dropped() {
    let mut settings = dialer();
    settings.max_frame = 1024;
    settings.buffersize = 1024;
    let (s, _) = session(settings, Recording::handling(&[ID]));
    // 1 MiB of zeros compresses to about a kilobyte... keep it under frame.max.
    let big = vec![0u8; 64 * 1024];
    let f = frame_with(Kind::Post, PEER, ID, &big, &[Encoding::Gzip]);
    assert!(f.len() <= 1024, "{} bytes", f.len());
    feed(&s, &f);
    assert_eq!(s.handler().take(), vec![]);
    assert_eq!(stat(&s, |t| &t.n_mdrops), 1);
}

#[test]
fn bytes_that_cannot_be_delimited_end_the_session_after_the_frames_before() {
    let good = frame(Kind::Post, PEER, ID, b"good");
    let mut bad_finish = finish(PEER);
    *bad_finish.last_mut().unwrap() = 0x00;
    let mut settings = dialer();
    settings.max_frame = 1024;
    settings.buffersize = 1024;
    let too_long = frame(Kind::Post, PEER, ID, &[1; 2000]);
    let cases: [(&[u8], &str); 3] = [
        (b"\x00\x01\x02\x03\x04\x05", "marker"),
        (&bad_finish, "finish"),
        (&too_long, "long"),
    ];
    for (bad, what) in cases {
        let (s, _) = session(settings.clone(), Recording::handling(&[ID]));
        let e = s.feed(&[good.clone(), bad.to_vec()].concat());
        assert!(e.is_err(), "{what}");
        assert_eq!(
            s.handler().take(),
            vec![Call::Post(ID, b"good".to_vec())],
            "{what}"
        );
    }
}

#[test]
fn a_partial_frame_is_left_for_the_next_feed() {
    let (s, _) = session(dialer(), Recording::handling(&[ID]));
    let f = frame(Kind::Post, PEER, ID, b"split");
    assert_eq!(s.feed(&f[..7]).unwrap(), 0);
    assert_eq!(s.handler().take(), vec![]);
    feed(&s, &f);
    assert_eq!(s.handler().take(), vec![Call::Post(ID, b"split".to_vec())]);
}

// ---- two sessions ------------------------------------------------------------

/// Two sessions wired back to back, the bytes of each fed to the other.
#[test]
fn two_sessions_talk_through_memory_sinks() {
    let mut h = Recording::handling(&[ID]);
    h.answer = true;
    let (a, a_out) = session(dialer(), Recording::default());
    let (b, b_out) = session(Settings::defaults(crate::settings::Role::Acceptor), h);
    let pump = || {
        feed(&b, &a_out.take_bytes());
        feed(&a, &b_out.take_bytes());
    };
    let pa = a
        .send_request(WHOAMI_ID, &a.whoami().encode(), false, &mut no_wait())
        .unwrap();
    let pb = b
        .send_request(WHOAMI_ID, &b.whoami().encode(), false, &mut no_wait())
        .unwrap();
    pump();
    pump();
    a.handshake_reply(&pa.wait(None).unwrap().unwrap()).unwrap();
    b.handshake_reply(&pb.wait(None).unwrap().unwrap()).unwrap();
    assert!(a.answered_peer() && b.answered_peer());
    let p = a.send_request(ID, b"what", true, &mut no_wait()).unwrap();
    pump();
    assert_eq!(p.wait(None).unwrap().unwrap().data, b"re:what");
}
