//! The body and compression decoders, reached the way the reader reaches
//! them: the fuzzer's bytes are a frame's body, the frame is fed in reads to
//! the frame decoder, and the body it yields goes to `decode_body` with the
//! reader's limit (max_frame * 4, as in dispatch).
//!
//! The result is checked against an oracle that peels the gzip/lzw layers
//! one at a time through `Encoding::decompress` with a larger bound: the
//! limit may only turn a result into `DecompressedTooLarge`, exactly when a
//! layer's true size is over it. Each layer's decompression must also be
//! exact at its size (fits in `s` bytes, too large for `s - 1`) and never
//! hold more than its bound. A decoded message must survive a round trip
//! through our own encoder, plain and compressed.
//!
//! Input: 1 byte kind (bits 0-1) and round-trip encodings (bits 2-7, mod 5),
//! 1 byte opaque choice (bits 0-2, mod 5) and pre-wrap encodings (bits 3-7,
//! mod 5), 2 bytes extra max_frame (LE), 1 byte read length (0 = whole frame
//! at once), then the body. Pre-wrap compresses the fuzzer's body with our
//! encoder first, so that arbitrary bytes also reach the body parser from
//! inside valid gzip/lzw layers (mutated compressed data rarely stays valid).
#![no_main]

use gofast::codec::body::MAX_WRAPS;
use gofast::codec::cbor::{read_head, write_head, MAJOR_BYTES, MAJOR_TAG};
use gofast::codec::frame::{MARKER, OPAQUE_MAX};
use gofast::codec::{decode_body, encode_frame, Decoded, Encoding, FrameDecoder, Kind, Scratch};
use gofast::errors::ProtocolError;
use gofast_fuzz::{decode_chunked, Event, Reads, MAX_BODY_FACTOR};
use libfuzzer_sys::fuzz_target;
use std::borrow::Cow;

const KINDS: [Kind; 4] = [
    Kind::Post,
    Kind::Request,
    Kind::StreamStart,
    Kind::StreamMsg,
];
const OPAQUES: [u64; 5] = [266, 1000, 65535, 65536, OPAQUE_MAX];
const STACKS: [&[Encoding]; 5] = [
    &[],
    &[Encoding::Gzip],
    &[Encoding::Lzw],
    &[Encoding::Gzip, Encoding::Lzw],
    &[Encoding::Lzw, Encoding::Gzip],
];

fuzz_target!(|data: &[u8]| {
    let Some((head, body)) = data.split_first_chunk::<5>() else {
        return;
    };
    let kind = KINDS[usize::from(head[0] & 3)];
    let stack = STACKS[usize::from(head[0] >> 2) % STACKS.len()];
    let opaque = OPAQUES[usize::from(head[1] & 7) % OPAQUES.len()];
    let mut wrapped = body.to_vec();
    for &encoding in STACKS[usize::from(head[1] >> 3) % STACKS.len()] {
        wrapped = compress_layer(encoding, &wrapped);
    }
    let body = wrapped.as_slice();

    let frame = wrap_in_frame(kind, opaque, body);
    let max_frame = frame.len() + usize::from(u16::from_le_bytes([head[2], head[3]]));
    let decoder = FrameDecoder::new(max_frame);

    // Through the reader's path: the frame must come out whole, unchanged.
    let out = decode_chunked(&decoder, &frame, &mut Reads::new(&head[4..5]));
    let want = Event::Frame {
        kind,
        opaque,
        body: body.to_vec(),
        len: frame.len(),
    };
    assert_eq!(out.events, [want]);
    assert_eq!(out.end, Ok(0));
    // The same frame decoded in place, so the body borrows from a buffer.
    let Ok(Some((Decoded::Frame(raw), _))) = decoder.decode(&frame) else {
        panic!("frame did not decode");
    };
    let body = raw.body;

    let limit = max_frame * MAX_BODY_FACTOR;
    let got = decode_body(body, limit);
    let (sizes, oracle, from_decompress) = peel(body, limit * 2 + 4096);
    let too_large = Err(ProtocolError::DecompressedTooLarge(limit));
    let got_plain = got
        .as_ref()
        .map(|m| (m.id, m.data.to_vec()))
        .map_err(Clone::clone);
    if sizes.iter().any(|&s| s > limit)
        || matches!(oracle, Err(ProtocolError::DecompressedTooLarge(_)))
    {
        assert_eq!(got_plain, too_large, "layers {sizes:?}, limit {limit}");
    } else if from_decompress {
        // Corrupt data may come after more than `limit` bytes of output.
        assert!(
            got_plain == oracle || got_plain == too_large,
            "{got_plain:?} vs {oracle:?}"
        );
    } else {
        assert_eq!(got_plain, oracle, "layers {sizes:?}, limit {limit}");
    }

    let Ok(m) = got else {
        return;
    };
    assert_ne!(m.id, 0);
    match &m.data {
        Cow::Borrowed(d) => {
            // Only an uncompressed body is borrowed, and from the frame.
            assert!(sizes.is_empty());
            let (b, d) = (body.as_ptr() as usize, d.as_ptr() as usize);
            assert!(d >= b && d + m.data.len() <= b + body.len());
        }
        Cow::Owned(d) => {
            assert!(!sizes.is_empty());
            assert!(d.len() <= limit);
        }
    }

    // Round trip through our own encoder.
    let mut out = Vec::new();
    let mut scratch = Scratch::default();
    encode_frame(&mut out, kind, opaque, m.id, &m.data, stack, &mut scratch);
    let big = FrameDecoder::new(out.len());
    let Ok(Some((Decoded::Frame(again), used))) = big.decode(&out) else {
        panic!("re-encoded frame did not decode");
    };
    assert_eq!(used, out.len());
    assert_eq!((again.kind, again.opaque), (kind, opaque));
    let back = decode_body(again.body, m.data.len() * 2 + 4096).expect("re-encoded body");
    assert_eq!(back.id, m.id);
    assert!(back.data == m.data, "round trip changed the data");
});

/// `marker K bstr( tag(opaque) bstr(body) )`, shortest heads.
fn wrap_in_frame(kind: Kind, opaque: u64, body: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(body.len() + 16);
    write_head(&mut packet, MAJOR_TAG, opaque);
    write_head(&mut packet, MAJOR_BYTES, body.len() as u64);
    packet.extend_from_slice(body);
    let mut frame = MARKER.to_vec();
    frame.push(kind.byte());
    write_head(&mut frame, MAJOR_BYTES, packet.len() as u64);
    frame.extend_from_slice(&packet);
    frame
}

/// `tag(encoding) bstr(compress(inner))`.
fn compress_layer(encoding: Encoding, inner: &[u8]) -> Vec<u8> {
    let mut packed = Vec::new();
    encoding.compress(inner, &mut packed);
    let mut out = Vec::with_capacity(packed.len() + 16);
    write_head(&mut out, MAJOR_TAG, encoding.tag());
    write_head(&mut out, MAJOR_BYTES, packed.len() as u64);
    out.extend_from_slice(&packed);
    out
}

/// `tag(46|47) bstr(content)` filling all of `buf`: a layer to peel.
fn layer(buf: &[u8]) -> Option<(Encoding, &[u8])> {
    let (MAJOR_TAG, tag, n) = read_head(buf).ok()?? else {
        return None;
    };
    let encoding = Encoding::from_tag(tag)?;
    let rest = buf.get(n..)?;
    let (MAJOR_BYTES, len, m) = read_head(rest).ok()?? else {
        return None;
    };
    let content = rest.get(m..)?;
    (content.len() as u64 == len).then_some((encoding, content))
}

type Plain = Result<(u64, Vec<u8>), ProtocolError>;

/// Peels the layers of `body` one by one with output bound `bound`: the
/// size of each layer's output, the message (or error), and whether the
/// error came from a decompressor.
fn peel(body: &[u8], bound: usize) -> (Vec<usize>, Plain, bool) {
    let mut sizes = Vec::new();
    let mut cur = body.to_vec();
    while let Some((encoding, packed)) = layer(&cur) {
        if sizes.len() == MAX_WRAPS {
            let e = ProtocolError::Malformed("too many compression layers");
            return (sizes, Err(e), false);
        }
        let plain = match encoding.decompress(packed, bound) {
            Ok(plain) => plain,
            Err(e) => return (sizes, Err(e), true),
        };
        assert!(plain.capacity() <= bound, "buffer over its bound");
        check_exact_bound(encoding, packed, &plain);
        sizes.push(plain.len());
        cur = plain;
    }
    // Not a layer: decode_body parses it without decompressing anything.
    let plain = decode_body(&cur, 0).map(|m| (m.id, m.data.into_owned()));
    (sizes, plain, false)
}

/// Decompressing to exactly the output's size works; one byte less is
/// too large.
fn check_exact_bound(encoding: Encoding, packed: &[u8], plain: &[u8]) {
    let s = plain.len();
    let exact = encoding.decompress(packed, s).expect("fits its own size");
    assert!(exact == plain, "{encoding:?}: output depends on the bound");
    assert!(exact.capacity() <= s, "buffer over its bound");
    if s > 0 {
        assert_eq!(
            encoding.decompress(packed, s - 1),
            Err(ProtocolError::DecompressedTooLarge(s - 1)),
            "{encoding:?}: {s} bytes fit in {}",
            s - 1
        );
    }
}
