//! Shortest-form CBOR heads (RFC 8949 §3): the only CBOR the frame codec
//! needs. A head is a major type in the top 3 bits of the first byte and an
//! argument that is either in the low 5 bits (0..=23) or in the 1, 2, 4 or 8
//! big-endian bytes that follow (additional info 24..=27).
//!
//! The writer always picks the shortest form, like the Go reference, because
//! uncompressed frames must match its bytes exactly. The reader accepts any
//! definite form: being liberal here costs nothing and breaks no peer.

use crate::errors::ProtocolError;

/// Major type 0: an unsigned integer (message ids).
pub const MAJOR_UINT: u8 = 0;
/// Major type 2: a byte string (packet, body, message data, compressed data).
pub const MAJOR_BYTES: u8 = 2;
/// Major type 6: a tag (opaque values, tags 43..47).
pub const MAJOR_TAG: u8 = 6;

/// Additional-info values 24..=27: the argument follows in 1, 2, 4, 8 bytes.
const AI_U8: u8 = 24;
const AI_U16: u8 = 25;
const AI_U32: u8 = 26;
const AI_U64: u8 = 27;

/// Length in bytes of the shortest head that carries `value`: 1, 2, 3, 5 or 9.
#[inline]
pub fn head_len(value: u64) -> usize {
    if value < u64::from(AI_U8) {
        1
    } else if value <= u64::from(u8::MAX) {
        2
    } else if value <= u64::from(u16::MAX) {
        3
    } else if value <= u64::from(u32::MAX) {
        5
    } else {
        9
    }
}

/// Appends the shortest head of `major` (0..=7) carrying `value`.
#[inline]
pub fn write_head(out: &mut Vec<u8>, major: u8, value: u64) {
    let mut buf = [0u8; MAX_HEAD];
    let n = encode_head(&mut buf, major, value);
    out.extend_from_slice(&buf[..n]);
}

/// The longest head: one byte and an 8-byte argument.
pub const MAX_HEAD: usize = 9;

/// Writes the shortest head into `buf` and returns its length. Built on the
/// stack and copied once, which is measurably faster on the send path than
/// pushing byte by byte.
#[inline]
fn encode_head(buf: &mut [u8; MAX_HEAD], major: u8, value: u64) -> usize {
    let top = (major & 0x07) << 5;
    // The `as` casts are exact: each branch has just checked the range.
    let (info, n) = match head_len(value) {
        1 => (value as u8, 0u32),
        2 => (AI_U8, 1),
        3 => (AI_U16, 2),
        5 => (AI_U32, 4),
        _ => (AI_U64, 8),
    };
    buf[0] = top | info;
    // Always copy all 8 argument bytes, shifted so the ones that count come
    // first: a fixed-size copy, where a variable one would call memmove.
    let arg = value.checked_shl(8 * (8 - n)).unwrap_or(0);
    buf[1..].copy_from_slice(&arg.to_be_bytes());
    1 + n as usize
}

/// A short run of heads and bytes assembled on the stack and then appended
/// to a buffer with one copy: a frame's fixed part (marker, K, packet head,
/// opaque, body head) and a body's (tags 43/44/45, map start, id, data
/// head) together take at most 56 bytes.
pub(crate) struct Heads {
    buf: [u8; Heads::CAPACITY],
    len: usize,
}

impl Heads {
    const CAPACITY: usize = 64;

    #[inline]
    pub(crate) fn new() -> Self {
        Heads {
            buf: [0; Heads::CAPACITY],
            len: 0,
        }
    }

    /// Adds the shortest head of `major` carrying `value`.
    ///
    /// The callers' fixed layouts fit the capacity (see the tests); were one
    /// ever to outgrow it, the bytes would go missing from `as_slice()`
    /// rather than the process crashing. Fixed-size writes throughout: they
    /// compile to a few moves, where variable-length copies call memmove.
    #[inline]
    pub(crate) fn head(&mut self, major: u8, value: u64) {
        let end = self.len + MAX_HEAD;
        if let Some(Ok(dst)) = self
            .buf
            .get_mut(self.len..end)
            .map(<&mut [u8; MAX_HEAD]>::try_from)
        {
            self.len += encode_head(dst, major, value);
        }
    }

    /// Adds a few raw bytes (see `head` for the capacity).
    #[inline]
    pub(crate) fn bytes<const N: usize>(&mut self, bytes: &[u8; N]) {
        let end = self.len + N;
        if let Some(Ok(dst)) = self
            .buf
            .get_mut(self.len..end)
            .map(<&mut [u8; N]>::try_from)
        {
            *dst = *bytes;
            self.len = end;
        }
    }

    #[inline]
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Reads the head at the front of `src`.
///
/// * `Ok(Some((major, value, len)))` — the head, `len` bytes long.
/// * `Ok(None)` — `src` ends before the head does (need more bytes).
/// * `Err(Malformed)` — additional info 28..=31: reserved, or the
///   indefinite-length / break marker, where a definite value is required.
///   Callers that accept `bf`/`ff` look for those bytes before calling this.
#[inline]
pub fn read_head(src: &[u8]) -> Result<Option<(u8, u64, usize)>, ProtocolError> {
    let Some(&first) = src.first() else {
        return Ok(None);
    };
    let major = first >> 5;
    let info = first & 0x1f;
    let extra = match info {
        0..=23 => return Ok(Some((major, u64::from(info), 1))),
        AI_U8 => 1,
        AI_U16 => 2,
        AI_U32 => 4,
        AI_U64 => 8,
        _ => return Err(ProtocolError::Malformed("indefinite or reserved CBOR head")),
    };
    let Some(arg) = src.get(1..1 + extra) else {
        return Ok(None);
    };
    let value = arg.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    Ok(Some((major, value, 1 + extra)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Boundaries of every width, the values the vectors exercise.
    #[test]
    fn heads_hold_the_longest_frame_and_body_prefix() {
        let mut heads = Heads::new();
        heads.bytes(&[0xd9, 0xd9, 0xf7, 0xc6]);
        for _ in 0..3 {
            heads.head(MAJOR_BYTES, u64::MAX); // packet, opaque, body heads
        }
        heads.bytes(&[0xd8, 0x2b, 0xbf, 0xd8, 0x2c]);
        heads.head(MAJOR_UINT, u64::MAX);
        heads.bytes(&[0xd8, 0x2d]);
        heads.head(MAJOR_BYTES, u64::MAX);
        assert_eq!(heads.as_slice().len(), 56);
    }

    const EDGES: [(u64, usize); 11] = [
        (0, 1),
        (23, 1),
        (24, 2),
        (255, 2),
        (256, 3),
        (65535, 3),
        (65536, 5),
        (u32::MAX as u64, 5),
        (1 << 32, 9),
        (1 << 40, 9),
        (u64::MAX, 9),
    ];

    #[test]
    fn head_len_matches_write_head_at_every_boundary() {
        for (value, len) in EDGES {
            assert_eq!(head_len(value), len, "value {value}");
            let mut out = Vec::new();
            write_head(&mut out, MAJOR_TAG, value);
            assert_eq!(out.len(), len, "value {value}");
            assert_eq!(read_head(&out).unwrap(), Some((MAJOR_TAG, value, len)));
        }
    }

    #[test]
    fn write_head_bytes_match_the_reference() {
        let mut out = Vec::new();
        write_head(&mut out, MAJOR_TAG, 1000);
        write_head(&mut out, MAJOR_BYTES, 0);
        write_head(&mut out, MAJOR_UINT, 100);
        write_head(&mut out, MAJOR_TAG, 15309735);
        assert_eq!(
            out,
            [0xd9, 0x03, 0xe8, 0x40, 0x18, 0x64, 0xda, 0x00, 0xe9, 0x9b, 0xa7]
        );
    }

    #[test]
    fn read_head_wants_more_bytes_for_every_proper_prefix() {
        for (value, len) in EDGES {
            let mut out = Vec::new();
            write_head(&mut out, MAJOR_UINT, value);
            for cut in 0..len {
                assert_eq!(
                    read_head(&out[..cut]).unwrap(),
                    None,
                    "value {value} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn read_head_rejects_reserved_and_indefinite() {
        for info in 28..=31u8 {
            for major in 0..8u8 {
                let byte = (major << 5) | info;
                assert_eq!(
                    read_head(&[byte, 0, 0]),
                    Err(ProtocolError::Malformed("indefinite or reserved CBOR head"))
                );
            }
        }
    }

    #[test]
    fn read_head_accepts_non_shortest_forms() {
        assert_eq!(
            read_head(&[0x19, 0x00, 0x05]).unwrap(),
            Some((MAJOR_UINT, 5, 3))
        );
    }
}
