//! Bounded property tests of the codec: part of every `cargo test` on
//! stable Rust, kept to a few seconds in debug by a small case count. The
//! open-ended search over the same ground is `scripts/fuzz` (fuzz/, nightly).
//!
//! * Any frame we encode (every kind, opaque, id, data, gzip/lzw layers)
//!   decodes back to what was encoded.
//! * A byte stream (valid frames, corrupted frames, noise) decodes the same
//!   whether it arrives in one read or in many, as the reader gets it, and
//!   nothing panics.
//! * `decode_body` never panics, and its size bound only ever turns a result
//!   into `DecompressedTooLarge`, exactly when the output is over it.

use super::body::{decode_body, write_body};
use super::cbor::{read_head, write_head, MAJOR_BYTES, MAJOR_TAG};
use super::compress::Encoding;
use super::frame::{
    encode_finish, encode_frame, valid_opaque, Decoded, FrameDecoder, Kind, Scratch, MARKER,
    OPAQUE_MAX, OPAQUE_MIN,
};
use crate::errors::ProtocolError;
use proptest::prelude::*;

/// Enough to find the shallow bugs on every run, cheap enough in debug.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // A failure prints its minimal input; no regression files in src/.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The reader's body limit is `max_frame * 4` (src/transport.rs).
const MAX_BODY_FACTOR: usize = 4;

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Post),
        Just(Kind::Request),
        Just(Kind::StreamStart),
        Just(Kind::StreamMsg),
    ]
}

/// Valid opaques, the edges of each head width often.
fn opaque() -> impl Strategy<Value = u64> {
    prop_oneof![
        prop::sample::select(vec![OPAQUE_MIN, 1000, 1004, 65535, 65536, OPAQUE_MAX]),
        (OPAQUE_MIN..=OPAQUE_MAX).prop_filter("reserved opaque", |&o| valid_opaque(o)),
    ]
}

/// Message ids of every CBOR width; 0 is invalid on the wire.
fn id() -> impl Strategy<Value = u64> {
    prop_oneof![1..24u64, 24..=65536u64, 1..=u64::MAX]
}

/// Noise, or runs that compress well (and so expand a lot).
fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        (any::<u8>(), 0..3000usize).prop_map(|(b, n)| vec![b; n]),
    ]
}

fn encodings() -> impl Strategy<Value = Vec<Encoding>> {
    prop::collection::vec(
        prop_oneof![Just(Encoding::Gzip), Just(Encoding::Lzw)],
        0..=3,
    )
}

/// One frame on the wire: a message frame or a FINISH.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    let message = (kind(), opaque(), id(), data(), encodings()).prop_map(
        |(kind, opaque, id, data, encodings)| {
            let mut out = Vec::new();
            let mut scratch = Scratch::default();
            encode_frame(&mut out, kind, opaque, id, &data, &encodings, &mut scratch);
            out
        },
    );
    let finish = opaque().prop_map(|opaque| {
        let mut out = Vec::new();
        encode_finish(&mut out, opaque);
        out
    });
    prop_oneof![4 => message, 1 => finish]
}

/// A delimited frame, owned, or why it was dropped; and its length.
type Event = (Result<(Kind, u64, Vec<u8>), ProtocolError>, usize);

/// Decodes `stream` the way the reader does when it arrives in reads of
/// `reads` bytes (cycled): append, decode until "need more", consume.
/// Returns the frames and how decoding ended: bytes left over, or the
/// error that would close the connection.
fn decode_in_reads(
    decoder: &FrameDecoder,
    stream: &[u8],
    reads: &[usize],
) -> (Vec<Event>, Result<usize, ProtocolError>) {
    let mut events = Vec::new();
    let mut buf = Vec::new();
    let mut rest = stream;
    let mut sizes = reads.iter().cycle();
    while !rest.is_empty() {
        let n = sizes.next().copied().unwrap_or(usize::MAX).max(1);
        let (read, more) = rest.split_at(n.min(rest.len()));
        rest = more;
        buf.extend_from_slice(read);
        let mut used_all = 0;
        loop {
            match decoder.decode(&buf[used_all..]) {
                Ok(None) => break,
                Ok(Some((decoded, used))) => {
                    assert!(used > 0 && used_all + used <= buf.len());
                    let event = match decoded {
                        Decoded::Frame(f) => Ok((f.kind, f.opaque, f.body.to_vec())),
                        Decoded::Dropped(e) => Err(e),
                    };
                    events.push((event, used));
                    used_all += used;
                }
                // Fed in reads, a bad marker is caught before all of it is
                // in; what it saw is compared in whole decoding only.
                Err(ProtocolError::BadMarker(_)) => {
                    return (events, Err(ProtocolError::BadMarker([0; 3])))
                }
                Err(e) => return (events, Err(e)),
            }
        }
        buf.drain(..used_all);
    }
    (events, Ok(buf.len()))
}

/// Chunked decoding equals whole decoding; returns the whole result.
fn same_in_any_reads(
    decoder: &FrameDecoder,
    stream: &[u8],
    reads: &[usize],
) -> (Vec<Event>, Result<usize, ProtocolError>) {
    let whole = decode_in_reads(decoder, stream, &[usize::MAX]);
    let chunked = decode_in_reads(decoder, stream, reads);
    assert_eq!(chunked, whole, "reads {reads:?}");
    if stream.len() <= 256 {
        assert_eq!(
            decode_in_reads(decoder, stream, &[1]),
            whole,
            "byte by byte"
        );
    }
    // Every byte is in a frame or left over, unless the stream broke.
    if let Ok(left) = whole.1 {
        let consumed: usize = whole.0.iter().map(|(_, used)| used).sum();
        assert_eq!(consumed + left, stream.len());
    }
    whole
}

/// `tag(encoding) bstr(compress(inner))`.
fn wrap(encoding: Encoding, inner: &[u8]) -> Vec<u8> {
    let mut packed = Vec::new();
    encoding.compress(inner, &mut packed);
    let mut out = Vec::new();
    write_head(&mut out, MAJOR_TAG, encoding.tag());
    write_head(&mut out, MAJOR_BYTES, packed.len() as u64);
    out.extend_from_slice(&packed);
    out
}

/// Whether `body` starts with a compression tag (46 or 47).
fn is_wrapped(body: &[u8]) -> bool {
    matches!(read_head(body), Ok(Some((MAJOR_TAG, 46 | 47, _))))
}

/// `decode_body`'s result, owned, for comparing.
fn decoded(body: &[u8], limit: usize) -> Result<(u64, Vec<u8>), ProtocolError> {
    decode_body(body, limit).map(|m| (m.id, m.data.into_owned()))
}

/// A plain body, a corrupted one, or noise behind a tag-43 head.
fn inner_body() -> impl Strategy<Value = Vec<u8>> {
    let plain = (id(), data()).prop_map(|(id, data)| {
        let mut out = Vec::new();
        write_body(&mut out, id, &data);
        out
    });
    let corrupted = (
        id(),
        prop::collection::vec(any::<u8>(), 0..64),
        any::<prop::sample::Index>(),
        1..=255u8,
    )
        .prop_map(|(id, data, at, flip)| {
            let mut out = Vec::new();
            write_body(&mut out, id, &data);
            let at = at.index(out.len());
            out[at] ^= flip;
            out
        });
    let noise = prop::collection::vec(any::<u8>(), 0..64).prop_map(|noise| {
        let mut out = vec![0xd8, 0x2b];
        out.extend_from_slice(&noise);
        out
    });
    prop_oneof![plain, corrupted, noise]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn every_frame_decodes_to_what_was_encoded(
        kind in kind(),
        opaque in opaque(),
        id in id(),
        data in data(),
        encodings in encodings(),
        reads in prop::collection::vec(1..300usize, 1..6),
    ) {
        let mut out = Vec::new();
        encode_frame(&mut out, kind, opaque, id, &data, &encodings, &mut Scratch::default());
        let max_frame = out.len();
        let decoder = FrameDecoder::new(max_frame);
        let (events, end) = same_in_any_reads(&decoder, &out, &reads);
        prop_assert_eq!(end, Ok(0));
        prop_assert_eq!(events.len(), 1);
        let (Ok((got_kind, got_opaque, body)), used) = &events[0] else {
            panic!("dropped: {:?}", events[0]);
        };
        prop_assert_eq!((*got_kind, *got_opaque, *used), (kind, opaque, out.len()));
        // The reader's limit is enough for anything we send.
        let limit = (max_frame * MAX_BODY_FACTOR).max(data.len() + 64);
        prop_assert_eq!(decoded(body, limit), Ok((id, data)));
        // One byte less and the frame is refused from its head alone.
        let small = FrameDecoder::new(max_frame - 1);
        let too_large = matches!(
            small.decode(&out),
            Err(ProtocolError::FrameTooLarge { .. })
        );
        prop_assert!(too_large);
    }

    #[test]
    fn finish_decodes_to_its_opaque(opaque in opaque()) {
        let mut out = Vec::new();
        encode_finish(&mut out, opaque);
        let decoder = FrameDecoder::new(out.len());
        let (events, end) = same_in_any_reads(&decoder, &out, &[1]);
        prop_assert_eq!(end, Ok(0));
        prop_assert_eq!(events, vec![(Ok((Kind::Finish, opaque, vec![])), out.len())]);
    }

    #[test]
    fn streams_decode_the_same_in_any_reads(
        frames in prop::collection::vec(frame(), 1..5),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 0..4),
        cut in any::<prop::sample::Index>(),
        reads in prop::collection::vec(1..64usize, 1..8),
        max_frame in 16..20_000usize,
    ) {
        let mut stream: Vec<u8> = frames.concat();
        for (at, flip) in &flips {
            let at = at.index(stream.len());
            stream[at] ^= flip;
        }
        stream.truncate(stream.len() - cut.index(stream.len() / 4 + 1));
        let decoder = FrameDecoder::new(max_frame);
        let (events, _) = same_in_any_reads(&decoder, &stream, &reads);
        // As dispatch does with each frame's body.
        for (event, _) in &events {
            if let Ok((_, _, body)) = event {
                if let Ok(m) = decode_body(body, max_frame * MAX_BODY_FACTOR) {
                    prop_assert_ne!(m.id, 0);
                }
            }
        }
    }

    #[test]
    fn noise_decodes_the_same_in_any_reads(
        noise in prop::collection::vec(any::<u8>(), 0..200),
        with_marker in any::<bool>(),
        reads in prop::collection::vec(1..32usize, 1..8),
    ) {
        // Plain noise fails at the marker; behind one it gets further.
        let mut stream = if with_marker { MARKER.to_vec() } else { Vec::new() };
        stream.extend_from_slice(&noise);
        let (events, _) = same_in_any_reads(&FrameDecoder::new(1 << 16), &stream, &reads);
        // The shortest frame that delimits (`d9 d9 f7 K 40`) is 5 bytes.
        prop_assert!(events.len() <= stream.len() / 5);
    }

    #[test]
    fn body_bound_only_refuses_what_is_over_it(
        inner in inner_body(),
        encoding in prop_oneof![Just(Encoding::Gzip), Just(Encoding::Lzw)],
        limit in 0..4096usize,
    ) {
        let body = wrap(encoding, &inner);
        let got = decoded(&body, limit);
        if inner.len() > limit {
            prop_assert_eq!(got, Err(ProtocolError::DecompressedTooLarge(limit)));
        } else if !is_wrapped(&inner) {
            // Peeling one layer that fits changes nothing.
            prop_assert_eq!(got, decoded(&inner, usize::MAX));
        }
        if let Ok(m) = decode_body(&body, limit) {
            prop_assert!(m.data.len() <= limit);
        }
    }

    #[test]
    fn body_decoder_never_panics(
        prefix in prop::sample::select(vec![vec![], vec![0xd8, 0x2b], vec![0xd8, 0x2e], vec![0xd8, 0x2f]]),
        noise in prop::collection::vec(any::<u8>(), 0..200),
        limit in 0..4096usize,
    ) {
        let mut body = prefix;
        body.extend_from_slice(&noise);
        if let Ok(m) = decode_body(&body, limit) {
            prop_assert_ne!(m.id, 0);
            prop_assert!(m.data.len() <= limit.max(body.len()));
        }
    }
}

/// Found by fuzz/body_decoder: when LZW output filled `max_out` exactly at
/// a code boundary, the "is there more?" probe (a 1-byte buffer) got
/// nothing from weezl, and the stream was accepted cut to `max_out` bytes
/// instead of being `DecompressedTooLarge`.
/// `b"aaaaa"` is codes `a`, `aa`, `aa`: a limit of 3 ends after the second.
#[test]
fn lzw_over_its_bound_is_too_large() {
    let mut packed = Vec::new();
    Encoding::Lzw.compress(b"aaaaa", &mut packed);
    assert_eq!(packed, [0x00, 0xc3, 0x08, 0x14, 0x18, 0x10]);
    for limit in 0..5 {
        assert_eq!(
            Encoding::Lzw.decompress(&packed, limit),
            Err(ProtocolError::DecompressedTooLarge(limit)),
            "limit {limit}"
        );
    }
}
