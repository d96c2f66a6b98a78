//! Frames (docs/protocol.md §1): `d9 d9 f7  K  bstr( tag(opaque) bstr(body) )`,
//! and for FINISH `d9 d9 f7 c8 bstr( tag(opaque) 40 ) ff`.
//!
//! `FrameDecoder` delimits frames at the front of a receive buffer without
//! copying: it learns a frame's length from the packet head alone, so an
//! oversized frame is refused before its bytes arrive. A frame that can be
//! delimited but not used (unknown K, bad opaque, ...) comes out as
//! `Decoded::Dropped` so the stream goes on; only a stream that can no longer
//! be delimited is an error, and then the connection must close.
//!
//! `encode_frame` writes a whole frame into the send buffer. Uncompressed, it
//! precomputes every length and writes straight into the buffer: that is the
//! hot path. Compressed, it goes through the reusable buffers of a `Scratch`.

use super::body::{body_len, body_prefix, write_body, write_prefixed};
use super::cbor::{head_len, read_head, write_head, Heads, MAJOR_BYTES, MAJOR_TAG};
use super::compress::{Compressors, Encoding};
use crate::errors::ProtocolError;

/// CBOR tag 55799 ("self-described CBOR"): every frame starts with it.
pub const MARKER: [u8; 3] = [0xd9, 0xd9, 0xf7];

/// Smallest valid opaque: tags below 266 are taken by CBOR itself.
pub const OPAQUE_MIN: u64 = 266;
/// Largest opaque the reference allows.
pub const OPAQUE_MAX: u64 = 15_309_735;
/// Tag numbers inside the range that CBOR reserves, so no opaque may be one.
pub const RESERVED_OPAQUES: [u64; 5] = [1001, 1002, 1003, 22098, 55799];

/// Whether `opaque` may appear on the wire (docs/protocol.md §2).
pub fn valid_opaque(opaque: u64) -> bool {
    (OPAQUE_MIN..=OPAQUE_MAX).contains(&opaque) && !RESERVED_OPAQUES.contains(&opaque)
}

/// Offset of the packet head: after the marker and K.
const PACKET_AT: usize = 4;
/// Definite byte-string heads (major 2, additional info 0..=27).
const BSTR_HEADS: std::ops::RangeInclusive<u8> = 0x40..=0x5b;
/// The empty byte string FINISH carries instead of a body.
const EMPTY_BSTR: u8 = 0x40;
/// The break that ends a FINISH frame (it closes STREAM-START's `9f`).
const BREAK: u8 = 0xff;

/// What a frame is, from its K byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `c6`: one message, no reply.
    Post,
    /// `81`: a REQUEST, or the RESPONSE to one (same byte both ways).
    Request,
    /// `9f`: opens a stream with its first message.
    StreamStart,
    /// `c7`: a message on an open stream.
    StreamMsg,
    /// `c8`: this side closes the stream; no body, a trailing `ff`.
    Finish,
}

impl Kind {
    /// The K byte of this kind.
    pub const fn byte(self) -> u8 {
        match self {
            Kind::Post => 0xc6,
            Kind::Request => 0x81,
            Kind::StreamStart => 0x9f,
            Kind::StreamMsg => 0xc7,
            Kind::Finish => 0xc8,
        }
    }

    /// The kind whose K byte is `b`.
    pub fn from_byte(b: u8) -> Option<Kind> {
        match b {
            0xc6 => Some(Kind::Post),
            0x81 => Some(Kind::Request),
            0x9f => Some(Kind::StreamStart),
            0xc7 => Some(Kind::StreamMsg),
            0xc8 => Some(Kind::Finish),
            _ => None,
        }
    }
}

/// A delimited, checked frame; `body` borrows the inner byte string's
/// content from the receive buffer (empty for FINISH).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame<'a> {
    pub kind: Kind,
    pub opaque: u64,
    pub body: &'a [u8],
}

/// One delimited frame: usable, or dropped (with why) while the stream goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    Frame(RawFrame<'a>),
    Dropped(ProtocolError),
}

/// Delimits frames at the front of a byte buffer. Stateless apart from the
/// size bound, so one decoder can serve a connection for its whole life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameDecoder {
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames longer than `max_frame` bytes in total.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder { max_frame }
    }

    /// The bound given to `new`.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Looks at the front of `src`:
    ///
    /// * `Ok(None)`: not a whole frame yet, read more.
    /// * `Ok(Some((decoded, consumed)))`: one frame, `consumed` bytes long.
    /// * `Err(_)`: the stream cannot be delimited; close the connection.
    pub fn decode<'a>(&self, src: &'a [u8]) -> Result<Option<(Decoded<'a>, usize)>, ProtocolError> {
        check_marker(src)?;
        let (Some(&k), Some(&head)) = (src.get(3), src.get(PACKET_AT)) else {
            return Ok(None);
        };
        if !BSTR_HEADS.contains(&head) {
            return Err(ProtocolError::BadPacketHead(head));
        }
        let rest = src.get(PACKET_AT..).unwrap_or_default();
        let Some((_, packet_len, head_n)) =
            read_head(rest).map_err(|_| ProtocolError::BadPacketHead(head))?
        else {
            return Ok(None);
        };
        let kind = Kind::from_byte(k);
        let trailer = usize::from(kind == Some(Kind::Finish));
        let total = self.frame_len(head_n, packet_len, trailer)?;
        let Some(frame) = src.get(..total) else {
            return Ok(None);
        };
        if trailer == 1 {
            let last = frame.last().copied().unwrap_or_default();
            if last != BREAK {
                return Err(ProtocolError::BadFinishTrailer(last));
            }
        }
        let packet = frame
            .get(PACKET_AT + head_n..total - trailer)
            .unwrap_or_default();
        let decoded = match kind {
            None => Decoded::Dropped(ProtocolError::UnknownKind(k)),
            Some(kind) => match parse_packet(kind, packet) {
                Ok(raw) => Decoded::Frame(raw),
                Err(e) => Decoded::Dropped(e),
            },
        };
        Ok(Some((decoded, total)))
    }

    /// The whole frame's length, refused when over `max_frame`. Computed in
    /// u64 and saturating, since `packet_len` comes straight off the wire.
    fn frame_len(
        &self,
        head_n: usize,
        packet_len: u64,
        trailer: usize,
    ) -> Result<usize, ProtocolError> {
        let fixed = (PACKET_AT + head_n + trailer) as u64;
        let total = packet_len.saturating_add(fixed);
        match usize::try_from(total) {
            Ok(total) if total <= self.max_frame => Ok(total),
            _ => Err(ProtocolError::FrameTooLarge {
                len: total,
                max: self.max_frame,
            }),
        }
    }
}

/// Fails on a wrong marker as soon as the bytes that differ are in.
fn check_marker(src: &[u8]) -> Result<(), ProtocolError> {
    let n = src.len().min(MARKER.len());
    if src[..n] == MARKER[..n] {
        return Ok(());
    }
    let mut seen = [0u8; 3];
    seen[..n].copy_from_slice(&src[..n]);
    Err(ProtocolError::BadMarker(seen))
}

/// Parses a packet's content: `tag(opaque) bstr(body)`, or `tag(opaque) 40`
/// for FINISH.
fn parse_packet(kind: Kind, packet: &[u8]) -> Result<RawFrame<'_>, ProtocolError> {
    let (opaque, n) = match read_head(packet) {
        Ok(Some((MAJOR_TAG, opaque, n))) => (opaque, n),
        Ok(None) if !packet.is_empty() => return Err(ProtocolError::Malformed("truncated opaque")),
        _ => return Err(ProtocolError::MissingOpaque),
    };
    if !valid_opaque(opaque) {
        return Err(ProtocolError::BadOpaque(opaque));
    }
    let rest = packet.get(n..).unwrap_or_default();
    let body = if kind == Kind::Finish {
        finish_body(rest)?
    } else {
        exact_body(rest)?
    };
    Ok(RawFrame { kind, opaque, body })
}

/// FINISH carries exactly the empty byte string.
fn finish_body(rest: &[u8]) -> Result<&[u8], ProtocolError> {
    if rest != [EMPTY_BSTR] {
        return Err(ProtocolError::Malformed(
            "FINISH packet must end with an empty byte string",
        ));
    }
    Ok(&[])
}

/// The content of the byte string that must fill the rest of the packet.
fn exact_body(rest: &[u8]) -> Result<&[u8], ProtocolError> {
    let (major, len, n) = match read_head(rest) {
        Ok(Some(head)) => head,
        Ok(None) if rest.is_empty() => return Err(ProtocolError::Malformed("packet has no body")),
        Ok(None) => return Err(ProtocolError::Malformed("truncated body head")),
        Err(_) => {
            return Err(ProtocolError::Malformed(
                "body is not a definite byte string",
            ))
        }
    };
    if major != MAJOR_BYTES {
        return Err(ProtocolError::Malformed("body is not a byte string"));
    }
    let body = rest.get(n..).unwrap_or_default();
    match u64::try_from(body.len()).map(|have| have.cmp(&len)) {
        Ok(std::cmp::Ordering::Equal) => Ok(body),
        Ok(std::cmp::Ordering::Greater) => {
            Err(ProtocolError::Malformed("trailing bytes after the body"))
        }
        _ => Err(ProtocolError::Malformed("body runs past the packet")),
    }
}

// ---------------------------------------------------------------------------
// Encoding

/// Reusable buffers and compressor state for compressed frames, so that a
/// sender allocates while warming up and then not per frame. One per sender.
#[derive(Default, Debug)]
pub struct Scratch {
    /// The body as it grows one layer at a time.
    body: Vec<u8>,
    /// The output of the latest compression, before it is wrapped.
    packed: Vec<u8>,
    compressors: Compressors,
}

impl Scratch {
    /// Buffers for a sender compressing gzip at `level` (0..=9).
    pub fn with_gzip_level(level: u32) -> Self {
        let mut s = Scratch::default();
        s.compressors.set_gzip_level(level);
        s
    }
}

/// Appends one frame carrying message `id`/`data` to `out`.
///
/// Each of `encodings` wraps the body once more, in order (the first listed
/// is innermost). A `Kind::Finish` frame has no body: `id`, `data` and
/// `encodings` are ignored and this is `encode_finish`. The opaque and id
/// are written as given; keeping them valid is the caller's business.
pub fn encode_frame(
    out: &mut Vec<u8>,
    kind: Kind,
    opaque: u64,
    id: u64,
    data: &[u8],
    encodings: &[Encoding],
    scratch: &mut Scratch,
) {
    if kind == Kind::Finish {
        encode_finish(out, opaque);
    } else if encodings.is_empty() {
        // The hot path: every byte before the data in one stack buffer.
        write_prefixed(out, &plain_frame_head(kind, opaque, id, data.len()), data);
    } else {
        let body = compressed_body(id, data, encodings, scratch);
        let mut heads = Heads::new();
        frame_prefix(&mut heads, kind, opaque, body.len());
        out.reserve(heads.as_slice().len() + body.len());
        out.extend_from_slice(heads.as_slice());
        out.extend_from_slice(body);
    }
}

/// Everything of an uncompressed message frame before its data; the frame
/// is this, the data, then `PLAIN_FRAME_END`. Lets a sender write the data
/// from where it lies instead of copying it into a frame.
#[inline]
pub(crate) fn plain_frame_head(kind: Kind, opaque: u64, id: u64, data_len: usize) -> Heads {
    let mut heads = Heads::new();
    frame_prefix(&mut heads, kind, opaque, body_len(id, data_len));
    body_prefix(&mut heads, id, data_len);
    heads
}

/// The last byte of an uncompressed message frame (the body map's break).
pub const PLAIN_FRAME_END: u8 = BREAK;

/// One whole uncompressed message frame, for tests that compare bytes.
#[cfg(test)]
pub(crate) fn plain_frame(kind: Kind, opaque: u64, id: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(
        &mut out,
        kind,
        opaque,
        id,
        data,
        &[],
        &mut Scratch::default(),
    );
    out
}

/// Appends a FINISH frame: `d9 d9 f7 c8 bstr(tag(opaque) 40) ff`.
pub fn encode_finish(out: &mut Vec<u8>, opaque: u64) {
    let packet_len = head_len(opaque) + 1;
    out.reserve(PACKET_AT + head_len(packet_len as u64) + packet_len + 1);
    out.extend_from_slice(&MARKER);
    out.push(Kind::Finish.byte());
    write_head(out, MAJOR_BYTES, packet_len as u64);
    write_head(out, MAJOR_TAG, opaque);
    out.push(EMPTY_BSTR);
    out.push(BREAK);
}

/// Adds everything of a frame that comes before its body.
#[inline]
fn frame_prefix(heads: &mut Heads, kind: Kind, opaque: u64, body_len: usize) {
    let packet_len = head_len(opaque) + head_len(body_len as u64) + body_len;
    heads.bytes(&MARKER);
    heads.bytes(&[kind.byte()]);
    heads.head(MAJOR_BYTES, packet_len as u64);
    heads.head(MAJOR_TAG, opaque);
    heads.head(MAJOR_BYTES, body_len as u64);
}

/// Builds the wrapped body in `scratch` and returns it.
fn compressed_body<'s>(
    id: u64,
    data: &[u8],
    encodings: &[Encoding],
    scratch: &'s mut Scratch,
) -> &'s [u8] {
    let Scratch {
        body,
        packed,
        compressors,
    } = scratch;
    body.clear();
    write_body(body, id, data);
    for &encoding in encodings {
        packed.clear();
        compressors.compress(encoding, body, packed);
        body.clear();
        write_head(body, MAJOR_TAG, encoding.tag());
        write_head(body, MAJOR_BYTES, packed.len() as u64);
        body.extend_from_slice(packed);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::super::body::{decode_body, Message};
    use super::*;
    use std::path::PathBuf;

    /// Generous bounds: the vectors go up to 70 KiB of data.
    const MAX_FRAME: usize = 1 << 20;
    const MAX_BODY: usize = 1 << 20;

    /// One entry of frames.json.
    #[derive(Debug, Clone)]
    struct Vector {
        name: String,
        kind: Kind,
        opaque: u64,
        id: u64,
        data: Vec<u8>,
        /// Whether the frame's body is compressed (tags set, and neither a
        /// whoami nor a FINISH, which are never compressed).
        compressed: bool,
        frame: Vec<u8>,
    }

    fn vectors_file() -> PathBuf {
        match std::env::var_os("GOFAST_VECTORS_DIR") {
            Some(dir) => PathBuf::from(dir).join("frames.json"),
            None => PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/vectors/frames.json"
            )),
        }
    }

    fn kind_named(name: &str) -> Kind {
        match name {
            "post" => Kind::Post,
            "request" | "response" => Kind::Request,
            "stream_start" => Kind::StreamStart,
            "stream_msg" => Kind::StreamMsg,
            "finish" => Kind::Finish,
            other => panic!("unknown kind {other}"),
        }
    }

    fn load_vectors() -> Vec<Vector> {
        let path = vectors_file();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let entries = json.as_array().expect("frames.json is a list");
        let vectors: Vec<Vector> = entries
            .iter()
            .map(|v| {
                let name = v["name"].as_str().unwrap().to_string();
                let kind = kind_named(v["kind"].as_str().unwrap());
                let tags = v["tags"].as_str().unwrap_or_default();
                let compressed =
                    !tags.is_empty() && kind != Kind::Finish && !name.starts_with("whoami");
                Vector {
                    kind,
                    opaque: v["opaque"].as_u64().unwrap(),
                    // u64 all the way: ids go up to 2^64-1.
                    id: v.get("msg_id").and_then(|id| id.as_u64()).unwrap_or(0),
                    data: hex::decode(v.get("msg_data_hex").and_then(|d| d.as_str()).unwrap_or(""))
                        .unwrap(),
                    compressed,
                    frame: hex::decode(v["frame_hex"].as_str().unwrap()).unwrap(),
                    name,
                }
            })
            .collect();
        assert_eq!(vectors.len(), entries.len());
        assert!(!vectors.is_empty(), "{} holds no vectors", path.display());
        vectors
    }

    /// Asserts that `decoded` is the frame `v` describes.
    fn check_frame(v: &Vector, decoded: &Decoded<'_>) {
        let Decoded::Frame(raw) = decoded else {
            panic!("{}: dropped: {decoded:?}", v.name);
        };
        assert_eq!((raw.kind, raw.opaque), (v.kind, v.opaque), "{}", v.name);
        if v.kind == Kind::Finish {
            assert!(raw.body.is_empty(), "{}", v.name);
            return;
        }
        // The compressed vectors must really reach the decompressors.
        let outer_tag = &raw.body[..2];
        let want_tag: &[u8] = if !v.compressed {
            &[0xd8, 0x2b]
        } else if v.name.contains("gzip") {
            &[0xd8, 0x2e]
        } else {
            &[0xd8, 0x2f]
        };
        assert_eq!(outer_tag, want_tag, "{}", v.name);
        let Message { id, data } =
            decode_body(raw.body, MAX_BODY).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(id, v.id, "{}", v.name);
        assert!(
            data.as_ref() == v.data.as_slice(),
            "{}: data differs",
            v.name
        );
    }

    #[test]
    fn every_vector_decodes_exactly() {
        let vectors = load_vectors();
        let decoder = FrameDecoder::new(MAX_FRAME);
        let mut checked = 0;
        for v in &vectors {
            let (decoded, used) = decoder.decode(&v.frame).unwrap().unwrap();
            assert_eq!(used, v.frame.len(), "{}", v.name);
            check_frame(v, &decoded);
            checked += 1;
        }
        assert_eq!(checked, vectors.len());
        assert_eq!(checked, 75, "frames.json changed size");
    }

    #[test]
    fn every_uncompressed_vector_encodes_byte_for_byte() {
        let vectors = load_vectors();
        let (mut encoded, mut compressed) = (0, 0);
        for v in &vectors {
            if v.compressed {
                compressed += 1;
                continue;
            }
            let out = if v.kind == Kind::Finish {
                let mut out = Vec::new();
                encode_finish(&mut out, v.opaque);
                out
            } else {
                plain_frame(v.kind, v.opaque, v.id, &v.data)
            };
            assert!(
                out == v.frame,
                "{}: {} != {}",
                v.name,
                hex::encode(&out),
                hex::encode(&v.frame)
            );
            encoded += 1;
        }
        assert_eq!(encoded + compressed, vectors.len());
        assert_eq!(compressed, 18, "compressed vectors");
    }

    /// A sender writing the data from where it lies sends the same bytes.
    #[test]
    fn plain_head_data_and_end_are_the_reference_frame() {
        let mut checked = 0;
        for v in load_vectors() {
            if v.compressed || v.kind == Kind::Finish {
                continue;
            }
            let head = plain_frame_head(v.kind, v.opaque, v.id, v.data.len());
            let mut out = head.as_slice().to_vec();
            out.extend_from_slice(&v.data);
            out.push(PLAIN_FRAME_END);
            assert!(out == v.frame, "{}", v.name);
            checked += 1;
        }
        assert!(checked > 40, "only {checked} plain message vectors");
    }

    #[test]
    fn encode_frame_of_kind_finish_is_encode_finish() {
        let mut scratch = Scratch::default();
        let mut out = vec![1, 2, 3];
        encode_frame(
            &mut out,
            Kind::Finish,
            266,
            5,
            b"ignored",
            &[Encoding::Gzip],
            &mut scratch,
        );
        assert_eq!(hex::encode(&out), "010203d9d9f7c844d9010a40ff");
    }

    #[test]
    fn kind_bytes() {
        for kind in [
            Kind::Post,
            Kind::Request,
            Kind::StreamStart,
            Kind::StreamMsg,
            Kind::Finish,
        ] {
            assert_eq!(Kind::from_byte(kind.byte()), Some(kind));
        }
        assert_eq!(Kind::from_byte(0x80), None);
    }

    #[test]
    fn valid_opaques() {
        for ok in [266, 1000, 1004, 65535, 65536, OPAQUE_MAX] {
            assert!(valid_opaque(ok), "{ok}");
        }
        for bad in [
            0,
            265,
            1001,
            1002,
            1003,
            22098,
            55799,
            OPAQUE_MAX + 1,
            u64::MAX,
        ] {
            assert!(!valid_opaque(bad), "{bad}");
        }
    }

    /// Deterministic pseudo-random bytes: xorshift64.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn own_compressed_frames_round_trip() {
        use Encoding::*;
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut scratch = Scratch::default();
        let decoder = FrameDecoder::new(MAX_FRAME);
        let stacks: [&[Encoding]; 5] = [&[], &[Gzip], &[Lzw], &[Gzip, Lzw], &[Lzw, Gzip]];
        for len in [0, 1, 300, 70000] {
            let text: Vec<u8> = b"gofast ".iter().copied().cycle().take(len).collect();
            for data in [text, rng.bytes(len)] {
                for encodings in stacks {
                    let mut out = Vec::new();
                    let kind = Kind::StreamMsg;
                    encode_frame(&mut out, kind, 4242, 77, &data, encodings, &mut scratch);
                    let (decoded, used) = decoder.decode(&out).unwrap().unwrap();
                    assert_eq!(used, out.len());
                    let Decoded::Frame(raw) = decoded else {
                        panic!("{decoded:?}")
                    };
                    assert_eq!((raw.kind, raw.opaque), (kind, 4242));
                    // The last listed encoding is the outermost.
                    let outer = encodings.last().map_or(43, |e| e.tag());
                    assert_eq!(raw.body[..2], [0xd8, outer as u8]);
                    let m = decode_body(raw.body, MAX_BODY).unwrap();
                    assert_eq!(m.id, 77);
                    assert!(
                        m.data.as_ref() == data.as_slice(),
                        "{encodings:?} len {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let vectors = load_vectors();
        let stream: Vec<u8> = vectors
            .iter()
            .flat_map(|v| v.frame.iter().copied())
            .collect();
        let decoder = FrameDecoder::new(MAX_FRAME);
        let mut buf = Vec::new();
        let mut next = 0; // index of the next frame to come out
        let mut frame_end = vectors[0].frame.len(); // its end in the stream
        for (at, &byte) in stream.iter().enumerate() {
            buf.push(byte);
            while let Some((decoded, used)) = decoder.decode(&buf).unwrap() {
                let v = &vectors[next];
                // Out exactly when its last byte arrived, not a byte earlier.
                assert_eq!(at + 1, frame_end, "{}", v.name);
                assert_eq!(used, v.frame.len(), "{}", v.name);
                check_frame(v, &decoded);
                buf.drain(..used);
                next += 1;
                frame_end += vectors.get(next).map_or(0, |v| v.frame.len());
            }
        }
        assert_eq!(next, vectors.len());
        assert!(buf.is_empty());
    }

    #[test]
    fn every_proper_prefix_needs_more() {
        let decoder = FrameDecoder::new(MAX_FRAME);
        for v in load_vectors() {
            for cut in 0..v.frame.len() {
                assert_eq!(
                    decoder.decode(&v.frame[..cut]),
                    Ok(None),
                    "{} cut {cut}",
                    v.name
                );
            }
        }
    }

    fn hexed(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    const POST: &str = "d9d9f7 c6 54 d903e8 50 d82bbfd82c1864d82d456162636465ff";

    #[test]
    fn wrong_marker() {
        let decoder = FrameDecoder::new(MAX_FRAME);
        let mut frame = hexed(POST);
        frame[2] = 0xf6;
        let bad = ProtocolError::BadMarker([0xd9, 0xd9, 0xf6]);
        assert_eq!(decoder.decode(&frame), Err(bad.clone()));
        assert_eq!(decoder.decode(&frame[..3]), Err(bad));
        // Fail fast: the first wrong byte is enough.
        assert_eq!(
            decoder.decode(b"G"),
            Err(ProtocolError::BadMarker([b'G', 0, 0]))
        );
        assert_eq!(
            decoder.decode(b"GE"),
            Err(ProtocolError::BadMarker([b'G', b'E', 0]))
        );
        assert_eq!(decoder.decode(&[]), Ok(None));
        assert_eq!(decoder.decode(&[0xd9, 0xd9]), Ok(None));
    }

    #[test]
    fn unknown_kind_is_dropped_and_skipped() {
        let decoder = FrameDecoder::new(MAX_FRAME);
        let mut stream = hexed(POST);
        stream[3] = 0x82;
        stream.extend(hexed(POST));
        let (decoded, used) = decoder.decode(&stream).unwrap().unwrap();
        assert_eq!(decoded, Decoded::Dropped(ProtocolError::UnknownKind(0x82)));
        assert_eq!(used, 25);
        let (decoded, _) = decoder.decode(&stream[used..]).unwrap().unwrap();
        assert!(matches!(
            decoded,
            Decoded::Frame(RawFrame {
                kind: Kind::Post,
                opaque: 1000,
                ..
            })
        ));
    }

    #[test]
    fn truncated_frame_needs_more() {
        let decoder = FrameDecoder::new(MAX_FRAME);
        let frame = hexed(POST);
        for cut in 0..frame.len() {
            assert_eq!(decoder.decode(&frame[..cut]), Ok(None), "cut {cut}");
        }
        assert!(decoder.decode(&frame).unwrap().is_some());
    }

    #[test]
    fn packet_length_past_max_frame() {
        let decoder = FrameDecoder::new(1000);
        // A 65536-byte packet: refused from the 9 bytes of its head.
        let head = hexed("d9d9f7 c6 5a00010000");
        let want = ProtocolError::FrameTooLarge {
            len: 4 + 5 + 65536,
            max: 1000,
        };
        assert_eq!(decoder.decode(&head), Err(want));
        // Lengths near 2^64 saturate instead of wrapping.
        let head = hexed("d9d9f7 c8 5bffffffffffffffff");
        let want = ProtocolError::FrameTooLarge {
            len: u64::MAX,
            max: 1000,
        };
        assert_eq!(decoder.decode(&head), Err(want));
        // Exactly max_frame is fine.
        let frame = hexed(POST);
        let exact = FrameDecoder::new(frame.len());
        assert!(exact.decode(&frame).unwrap().is_some());
        let under = FrameDecoder::new(frame.len() - 1);
        assert!(matches!(
            under.decode(&frame),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn bad_packet_head() {
        let decoder = FrameDecoder::new(MAX_FRAME);
        for head in [0x5f, 0x5c, 0x5d, 0x5e, 0x00, 0x18, 0x9f, 0xff, 0xd9] {
            let mut frame = hexed(POST);
            frame[4] = head;
            assert_eq!(
                decoder.decode(&frame),
                Err(ProtocolError::BadPacketHead(head))
            );
            // Known after 5 bytes, whatever follows.
            assert_eq!(
                decoder.decode(&frame[..5]),
                Err(ProtocolError::BadPacketHead(head))
            );
        }
    }

    fn dropped(frame: &[u8]) -> ProtocolError {
        match FrameDecoder::new(MAX_FRAME).decode(frame) {
            Ok(Some((Decoded::Dropped(e), used))) => {
                assert_eq!(used, frame.len());
                e
            }
            other => panic!("not dropped: {other:?}"),
        }
    }

    #[test]
    fn bad_opaque() {
        for opaque in [0, 265, 1001, 1002, 1003, 22098, 55799, OPAQUE_MAX + 1] {
            let frame = plain_frame(Kind::Post, opaque, 100, b"abcde");
            assert_eq!(dropped(&frame), ProtocolError::BadOpaque(opaque));
            let mut finish = Vec::new();
            encode_finish(&mut finish, opaque);
            assert_eq!(dropped(&finish), ProtocolError::BadOpaque(opaque));
        }
    }

    #[test]
    fn missing_opaque() {
        assert_eq!(
            dropped(&hexed("d9d9f7 c6 40")),
            ProtocolError::MissingOpaque
        );
        assert_eq!(
            dropped(&hexed("d9d9f7 c6 42 4140")),
            ProtocolError::MissingOpaque
        );
        assert_eq!(
            dropped(&hexed("d9d9f7 c8 41 40 ff")),
            ProtocolError::MissingOpaque
        );
    }

    #[test]
    fn malformed_packets() {
        let cases = [
            ("d9d9f7 c6 42 d903", "truncated opaque"),
            ("d9d9f7 c6 43 d903e8", "packet has no body"),
            ("d9d9f7 c6 45 d903e8 4200", "body runs past the packet"),
            (
                "d9d9f7 c6 46 d903e8 40 0000",
                "trailing bytes after the body",
            ),
            ("d9d9f7 c6 45 d903e8 1801", "body is not a byte string"),
            ("d9d9f7 c6 44 d903e8 58", "truncated body head"),
            (
                "d9d9f7 c6 45 d903e8 5f ff",
                "body is not a definite byte string",
            ),
            (
                "d9d9f7 c8 45 d903e8 4100 ff",
                "FINISH packet must end with an empty byte string",
            ),
            (
                "d9d9f7 c8 43 d903e8 ff",
                "FINISH packet must end with an empty byte string",
            ),
            (
                "d9d9f7 c8 45 d903e8 40 00 ff",
                "FINISH packet must end with an empty byte string",
            ),
        ];
        for (frame, reason) in cases {
            assert_eq!(
                dropped(&hexed(frame)),
                ProtocolError::Malformed(reason),
                "{frame}"
            );
        }
    }

    #[test]
    fn bad_finish_trailer() {
        let decoder = FrameDecoder::new(MAX_FRAME);
        let mut frame = Vec::new();
        encode_finish(&mut frame, 1000);
        let last = frame.len() - 1;
        frame[last] = 0x00;
        assert_eq!(
            decoder.decode(&frame),
            Err(ProtocolError::BadFinishTrailer(0x00))
        );
        assert_eq!(decoder.decode(&frame[..last]), Ok(None));
    }

    /// decode (and decode_body on what it yields) must return on any input.
    fn must_not_panic(decoder: &FrameDecoder, bytes: &[u8]) {
        let mut rest = bytes;
        while let Ok(Some((decoded, used))) = decoder.decode(rest) {
            assert!(used > 0 && used <= rest.len());
            if let Decoded::Frame(raw) = decoded {
                let _ = decode_body(raw.body, 1 << 16);
            }
            rest = &rest[used..];
        }
        let _ = decode_body(bytes, 1 << 16);
    }

    #[test]
    fn random_bytes_never_panic() {
        let decoder = FrameDecoder::new(1 << 16);
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let kinds = [0xc6, 0x81, 0x9f, 0xc7, 0xc8, 0x00];
        let body_tags: [&[u8]; 5] = [&[0xd8, 0x2b], &[0xd8, 0x2e], &[0xd8, 0x2f], &[0xbf], &[]];
        for round in 0..6000 {
            let len = (rng.next() % 80) as usize;
            let noise = rng.bytes(len);
            // Plain noise stops at the marker, so most rounds build a frame
            // that delimits and carries noise deeper inside.
            let bytes = if round % 4 == 0 {
                noise
            } else {
                let mut body = body_tags[(rng.next() % 5) as usize].to_vec();
                if rng.next() % 2 == 0 {
                    body.push(0x40 | (noise.len().min(23) as u8));
                }
                body.extend_from_slice(&noise);
                let mut inner = Vec::new();
                write_head(
                    &mut inner,
                    MAJOR_TAG,
                    [1000, 266, 5, 1001][(rng.next() % 4) as usize],
                );
                write_head(&mut inner, MAJOR_BYTES, body.len() as u64 + rng.next() % 2);
                inner.extend_from_slice(&body);
                let mut frame = MARKER.to_vec();
                frame.push(kinds[(rng.next() % 6) as usize]);
                write_head(&mut frame, MAJOR_BYTES, inner.len() as u64);
                frame.extend_from_slice(&inner);
                frame.push(0xff);
                frame
            };
            must_not_panic(&decoder, &bytes);
        }
    }

    #[test]
    fn flipped_vector_bytes_never_panic() {
        let decoder = FrameDecoder::new(MAX_FRAME);
        for mut v in load_vectors() {
            for at in 0..v.frame.len() {
                for flip in [0xff, 0x01] {
                    v.frame[at] ^= flip;
                    must_not_panic(&decoder, &v.frame);
                    v.frame[at] ^= flip;
                }
            }
        }
    }
}
