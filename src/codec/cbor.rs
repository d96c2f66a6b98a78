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
    let top = (major & 0x07) << 5;
    // The `as` casts below are exact: each branch has just checked the range.
    match head_len(value) {
        1 => out.push(top | value as u8),
        2 => out.extend_from_slice(&[top | AI_U8, value as u8]),
        3 => {
            out.push(top | AI_U16);
            out.extend_from_slice(&(value as u16).to_be_bytes());
        }
        5 => {
            out.push(top | AI_U32);
            out.extend_from_slice(&(value as u32).to_be_bytes());
        }
        _ => {
            out.push(top | AI_U64);
            out.extend_from_slice(&value.to_be_bytes());
        }
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
