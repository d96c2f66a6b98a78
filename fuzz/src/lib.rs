//! What the fuzz targets share: the reader's incremental decoding path
//! (src/transport/receive.rs, `read_loop` / `decode_and_process`) rebuilt
//! without a socket, and the invariants every step of it must keep.
//!
//! The reader appends each read to its buffer, calls `FrameDecoder::decode`
//! on the unconsumed bytes until it says "need more" (`Ok(None)`), consumes
//! what each frame used, and ends the connection on `Err`. Here a read is a
//! chunk of the fuzz input, so every way of splitting a stream into reads
//! gets tried, and the outcome must not depend on the split.

use gofast::codec::cbor::{head_len, write_head, MAJOR_BYTES, MAJOR_TAG};
use gofast::codec::frame::{valid_opaque, MARKER};
use gofast::codec::{encode_finish, Decoded, FrameDecoder, Kind};
use gofast::errors::ProtocolError;

/// The reader's body limit is `max_frame * MAX_BODY_FACTOR`
/// (src/transport.rs); that constant is private, so it is repeated here.
pub const MAX_BODY_FACTOR: usize = 4;

/// One delimited frame as the reader sees it, owned so that runs over
/// different buffers can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Frame {
        kind: Kind,
        opaque: u64,
        body: Vec<u8>,
        len: usize,
    },
    Dropped {
        error: ProtocolError,
        len: usize,
    },
}

/// Everything the decoder said about one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub events: Vec<Event>,
    /// `Ok(n)`: the stream ran out with `n` bytes not yet a whole frame (the
    /// reader reports `Truncated(n)` at EOF when n > 0). `Err`: the decoder
    /// ended the connection.
    pub end: Result<usize, ProtocolError>,
}

/// Reads sizes from `sizes`, cycling; 0 stands for "everything left".
pub struct Reads<'a> {
    sizes: &'a [u8],
    next: usize,
}

impl<'a> Reads<'a> {
    pub fn new(sizes: &'a [u8]) -> Self {
        Reads { sizes, next: 0 }
    }

    /// The length of the next read.
    pub fn next_len(&mut self) -> usize {
        let Some(&b) = self.sizes.get(self.next % self.sizes.len().max(1)) else {
            return usize::MAX;
        };
        self.next += 1;
        if b == 0 {
            usize::MAX
        } else {
            usize::from(b)
        }
    }
}

/// Decodes `stream` as one buffer holding all of it.
pub fn decode_whole(decoder: &FrameDecoder, stream: &[u8]) -> Outcome {
    let mut events = Vec::new();
    let mut pos = 0;
    loop {
        let src = &stream[pos..];
        match step(decoder, src) {
            Ok(Some((event, used))) => {
                events.push(event);
                pos += used;
            }
            Ok(None) => {
                return Outcome {
                    events,
                    end: Ok(src.len()),
                }
            }
            Err(e) => {
                return Outcome {
                    events,
                    end: Err(e),
                }
            }
        }
    }
}

/// Decodes `stream` as the reader does when it arrives in reads of the
/// lengths `reads` gives.
pub fn decode_chunked(decoder: &FrameDecoder, stream: &[u8], reads: &mut Reads<'_>) -> Outcome {
    let mut events = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (read, more) = rest.split_at(reads.next_len().min(rest.len()));
        rest = more;
        buf.extend_from_slice(read);
        let mut consumed = 0;
        // As decode_and_process: decode until the decoder needs more.
        while consumed < buf.len() {
            match step(decoder, &buf[consumed..]) {
                Ok(Some((event, used))) => {
                    events.push(event);
                    consumed += used;
                }
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        events,
                        end: Err(e),
                    }
                }
            }
        }
        buf.drain(..consumed);
    }
    Outcome {
        events,
        end: Ok(buf.len()),
    }
}

/// One `decode` call, with the invariants of its answer checked.
fn step(decoder: &FrameDecoder, src: &[u8]) -> Result<Option<(Event, usize)>, ProtocolError> {
    let max_frame = decoder.max_frame();
    let (decoded, used) = match decoder.decode(src) {
        Ok(Some(found)) => found,
        Ok(None) => {
            // "Need more" is only right while no complete frame is there:
            // once the head (at most 13 bytes) is in, the length is known,
            // and a frame of at most max_frame bytes is then whole or not.
            assert!(
                src.len() < max_frame.max(13),
                "need more with {}",
                src.len()
            );
            return Ok(None);
        }
        Err(e) => {
            check_fatal(&e, src, max_frame);
            return Err(e);
        }
    };
    assert!(
        used > 0 && used <= src.len(),
        "used {used} of {}",
        src.len()
    );
    assert!(used <= max_frame, "frame of {used} over max {max_frame}");
    assert_eq!(src[..3], MARKER);
    // Not a byte earlier: the frame's proper prefix needs more.
    assert_eq!(decoder.decode(&src[..used - 1]), Ok(None), "early frame");
    let frame = &src[..used];
    let event = match decoded {
        Decoded::Frame(f) => {
            assert_eq!(f.kind.byte(), src[3]);
            assert!(valid_opaque(f.opaque), "opaque {}", f.opaque);
            if f.kind == Kind::Finish {
                assert!(f.body.is_empty());
                assert_eq!(frame.last(), Some(&0xff));
            }
            check_body_within(frame, f.body);
            check_shortest_form(frame, f.kind, f.opaque, f.body);
            Event::Frame {
                kind: f.kind,
                opaque: f.opaque,
                body: f.body.to_vec(),
                len: used,
            }
        }
        Decoded::Dropped(e) => {
            // Dropped is for frames that delimit but cannot be used.
            assert!(
                matches!(
                    e,
                    ProtocolError::UnknownKind(_)
                        | ProtocolError::MissingOpaque
                        | ProtocolError::BadOpaque(_)
                        | ProtocolError::Malformed(_)
                ),
                "dropped with a fatal error: {e:?}"
            );
            if let ProtocolError::UnknownKind(k) = e {
                assert_eq!(k, src[3]);
                assert!(Kind::from_byte(k).is_none());
            }
            Event::Dropped {
                error: e,
                len: used,
            }
        }
    };
    Ok(Some((event, used)))
}

/// A connection-ending error must be one that leaves the stream
/// undelimitable, and say what it saw.
fn check_fatal(e: &ProtocolError, src: &[u8], max_frame: usize) {
    match e {
        ProtocolError::BadMarker(seen) => {
            let n = src.len().min(3);
            assert_eq!(seen[..n], src[..n]);
            assert_ne!(src[..n], MARKER[..n]);
        }
        ProtocolError::BadPacketHead(h) => assert_eq!(src.get(4), Some(h)),
        ProtocolError::FrameTooLarge { len, max } => {
            assert_eq!(*max, max_frame);
            assert!(*len > max_frame as u64);
        }
        ProtocolError::BadFinishTrailer(b) => {
            assert_eq!(src.get(3), Some(&Kind::Finish.byte()));
            assert_ne!(*b, 0xff);
        }
        other => panic!("fatal error that should not end a connection: {other:?}"),
    }
}

/// The body borrows from inside the frame, after the heads.
fn check_body_within(frame: &[u8], body: &[u8]) {
    if body.is_empty() {
        return;
    }
    let start = frame.as_ptr() as usize;
    let at = body.as_ptr() as usize;
    assert!(at > start + 4 && at + body.len() <= start + frame.len());
}

/// Rebuilds the frame from what was decoded, with shortest heads. It can be
/// no longer than the frame; as long only if the frame used shortest heads
/// throughout, and then it must be the same bytes.
fn check_shortest_form(frame: &[u8], kind: Kind, opaque: u64, body: &[u8]) {
    let mut rebuilt = Vec::with_capacity(frame.len());
    if kind == Kind::Finish {
        encode_finish(&mut rebuilt, opaque);
    } else {
        let packet_len = head_len(opaque) + head_len(body.len() as u64) + body.len();
        rebuilt.extend_from_slice(&MARKER);
        rebuilt.push(kind.byte());
        write_head(&mut rebuilt, MAJOR_BYTES, packet_len as u64);
        write_head(&mut rebuilt, MAJOR_TAG, opaque);
        write_head(&mut rebuilt, MAJOR_BYTES, body.len() as u64);
        rebuilt.extend_from_slice(body);
    }
    assert!(rebuilt.len() <= frame.len(), "rebuilt frame is longer");
    if rebuilt.len() == frame.len() {
        assert_eq!(rebuilt, frame, "same length, different bytes");
    }
}

/// Chunked and whole decoding agree. They may differ only in what a
/// `BadMarker` error saw: fed in reads, the decoder fails on the first wrong
/// byte, before the rest of the marker is in (those show as zero).
pub fn assert_same(chunked: &Outcome, whole: &Outcome) {
    assert_eq!(chunked.events, whole.events, "chunked != whole");
    match (&chunked.end, &whole.end) {
        (Err(ProtocolError::BadMarker(part)), Err(ProtocolError::BadMarker(all))) => {
            for (p, a) in part.iter().zip(all) {
                assert!(p == a || *p == 0, "marker {part:02x?} vs {all:02x?}");
            }
        }
        (c, w) => assert_eq!(c, w, "chunked end != whole end"),
    }
}
