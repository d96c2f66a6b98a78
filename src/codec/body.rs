//! The message body inside a packet (docs/protocol.md §1.1):
//!
//! ```text
//! d8 2b  bf  d8 2c uint(id)  d8 2d bstr(data)  ff
//! tag43  {   tag44 id        tag45 data        }
//! ```
//!
//! possibly wrapped, once per configured encoding, in `tag(46|47)
//! bstr(compressed body)`. Encoding writes the plain body straight into the
//! caller's buffer; decoding peels the compression tags and then parses the
//! map, borrowing the message data from the input when nothing had to be
//! decompressed.

use super::cbor::{head_len, read_head, Heads, MAJOR_BYTES, MAJOR_TAG, MAJOR_UINT};
use super::compress::Encoding;
use crate::errors::ProtocolError;
use std::borrow::Cow;
use std::ops::Range;

/// Tag 43: "a message follows".
const TAG_MESSAGE: u64 = 43;
/// Tag 44: the message id (a CBOR unsigned) follows.
const TAG_ID: u64 = 44;
/// Tag 45: the message data (a byte string) follows.
const TAG_DATA: u64 = 45;
/// Start of an indefinite-length map, and the break that ends it.
const MAP_START: u8 = 0xbf;
const BREAK: u8 = 0xff;
/// Definite-length maps with an immediate pair count (0..=23 pairs).
const DEFINITE_MAPS: std::ops::RangeInclusive<u8> = 0xa0..=0xb7;

/// How many compression wrappers a body may have. Peers use at most two
/// (gzip and lzw); the bound stops a body from nesting bombs without end.
pub const MAX_WRAPS: usize = 4;

/// One decoded message. `data` borrows from the frame when the body was not
/// compressed, so the common case copies nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub id: u64,
    pub data: Cow<'a, [u8]>,
}

/// Length of the plain (uncompressed) body for this id and data length.
#[inline]
pub fn body_len(id: u64, data_len: usize) -> usize {
    head_len(TAG_MESSAGE)
        + 1 // bf
        + head_len(TAG_ID)
        + head_len(id)
        + head_len(TAG_DATA)
        + head_len(data_len as u64)
        + data_len
        + 1 // ff
}

/// Appends the plain body for `id` and `data` to `out`. Id 0 is invalid on
/// the wire; refusing it is the caller's business, this only writes bytes.
#[inline]
pub fn write_body(out: &mut Vec<u8>, id: u64, data: &[u8]) {
    let mut heads = Heads::new();
    body_prefix(&mut heads, id, data.len());
    write_prefixed(out, &heads, data);
}

/// Adds everything of a plain body that comes before the data.
#[inline]
pub(crate) fn body_prefix(heads: &mut Heads, id: u64, data_len: usize) {
    heads.head(MAJOR_TAG, TAG_MESSAGE);
    heads.bytes(&[MAP_START]);
    heads.head(MAJOR_TAG, TAG_ID);
    heads.head(MAJOR_UINT, id);
    heads.head(MAJOR_TAG, TAG_DATA);
    heads.head(MAJOR_BYTES, data_len as u64);
}

/// Appends `heads`, `data` and the map's closing break with one reserve.
#[inline]
pub(crate) fn write_prefixed(out: &mut Vec<u8>, heads: &Heads, data: &[u8]) {
    let prefix = heads.as_slice();
    out.reserve(prefix.len() + data.len() + 1);
    out.extend_from_slice(prefix);
    out.extend_from_slice(data);
    out.push(BREAK);
}

/// Decodes a body: peels up to `MAX_WRAPS` compression tags, then parses the
/// tag-43 map. `max_size` bounds the output of each decompression.
pub fn decode_body(body: &[u8], max_size: usize) -> Result<Message<'_>, ProtocolError> {
    let (encoding, packed) = match classify(body)? {
        Layer::Message(start) => {
            let (id, data) = parse_message(body, start)?;
            let data = body.get(data).unwrap_or_default();
            return Ok(Message {
                id,
                data: Cow::Borrowed(data),
            });
        }
        Layer::Wrapped(encoding, packed) => (encoding, packed),
    };
    let mut plain = encoding.decompress(packed, max_size)?;
    let mut wraps = 1;
    loop {
        let layer = classify(&plain)?;
        match layer {
            Layer::Message(start) => {
                let (id, data) = parse_message(&plain, start)?;
                return Ok(Message {
                    id,
                    data: Cow::Owned(take_range(plain, data)),
                });
            }
            Layer::Wrapped(..) if wraps == MAX_WRAPS => {
                return Err(ProtocolError::Malformed("too many compression layers"));
            }
            Layer::Wrapped(encoding, packed) => {
                let next = encoding.decompress(packed, max_size)?;
                plain = next;
                wraps += 1;
            }
        }
    }
}

/// Shrinks `buf` to `range` in place: no second allocation for the data.
fn take_range(mut buf: Vec<u8>, range: Range<usize>) -> Vec<u8> {
    buf.truncate(range.end);
    buf.drain(..range.start.min(buf.len()));
    buf
}

/// What the front of a (possibly decompressed) body is.
enum Layer<'b> {
    /// Tag 43; the map starts at this offset.
    Message(usize),
    /// A compression tag and the compressed bytes it wraps.
    Wrapped(Encoding, &'b [u8]),
}

/// Reads the body tag at the front of `buf`.
fn classify(buf: &[u8]) -> Result<Layer<'_>, ProtocolError> {
    // Anything that is not a tag (an empty body included) cannot reach 43.
    match buf.first() {
        Some(&b) if b >> 5 == MAJOR_TAG => {}
        _ => return Err(ProtocolError::NoMessageTag),
    }
    let (_, tag, n) = read_head(buf)?.ok_or(ProtocolError::Malformed("truncated body tag"))?;
    if tag == TAG_MESSAGE {
        return Ok(Layer::Message(n));
    }
    let encoding = Encoding::from_tag(tag).ok_or(ProtocolError::UnknownTag(tag))?;
    let packed = exact_bytes(buf.get(n..).unwrap_or_default())?;
    Ok(Layer::Wrapped(encoding, packed))
}

/// The content of the definite byte string that makes up all of `buf`.
fn exact_bytes(buf: &[u8]) -> Result<&[u8], ProtocolError> {
    let not_bytes = ProtocolError::Malformed("compression tag not followed by a byte string");
    let (major, len, n) = read_head(buf)
        .map_err(|_| not_bytes.clone())?
        .ok_or(ProtocolError::Malformed("truncated compressed body"))?;
    if major != MAJOR_BYTES {
        return Err(not_bytes);
    }
    let content = buf.get(n..).unwrap_or_default();
    match u64::try_from(content.len()).map(|have| have.cmp(&len)) {
        Ok(std::cmp::Ordering::Equal) => Ok(content),
        Ok(std::cmp::Ordering::Greater) => Err(ProtocolError::Malformed(
            "trailing bytes after the compressed body",
        )),
        _ => Err(ProtocolError::Malformed("truncated compressed body")),
    }
}

/// Parses the message map starting at `start` (just past tag 43) and
/// returns the id and where the data lies in `buf`. The map must end `buf`.
fn parse_message(buf: &[u8], start: usize) -> Result<(u64, Range<usize>), ProtocolError> {
    match parse_canonical(buf, start) {
        Some(found) => Ok(found),
        None => parse_any_map(buf, start),
    }
}

/// The receive fast path: the exact layout every peer writes,
/// `bf d8 2c uint(id) d8 2d bstr(data) ff`, ending the buffer, id not 0.
/// None sends anything else through `parse_any_map`, which accepts the
/// other valid forms and names what is wrong with the invalid ones.
#[inline]
fn parse_canonical(buf: &[u8], start: usize) -> Option<(u64, Range<usize>)> {
    let [MAP_START, 0xd8, 0x2c, rest @ ..] = buf.get(start..)? else {
        return None;
    };
    let (MAJOR_UINT, id, n) = read_head(rest).ok()?? else {
        return None;
    };
    let [0xd8, 0x2d, rest @ ..] = rest.get(n..)? else {
        return None;
    };
    let (MAJOR_BYTES, len, n) = read_head(rest).ok()?? else {
        return None;
    };
    let data_start = buf.len() - rest.len() + n;
    let data_end = data_start.checked_add(usize::try_from(len).ok()?)?;
    // The break is the last byte, right after the data.
    let canonical = id != 0 && buf.get(data_end..) == Some(&[BREAK][..]);
    canonical.then_some((id, data_start..data_end))
}

/// Parses any message map we accept: the indefinite map with its two
/// entries in either order, or a definite map; every failure is typed.
fn parse_any_map(buf: &[u8], start: usize) -> Result<(u64, Range<usize>), ProtocolError> {
    let mut cursor = Cursor { buf, pos: start };
    let items = cursor.map_head()?;
    let mut id = None;
    let mut data = None;
    let mut seen = 0u64;
    loop {
        match items {
            Some(total) if seen == total => break,
            None if cursor.peek() == Some(BREAK) => {
                cursor.pos += 1;
                break;
            }
            _ => {}
        }
        match cursor.entry_tag()? {
            TAG_ID if id.is_none() => id = Some(cursor.id()?),
            TAG_DATA if data.is_none() => data = Some(cursor.data()?),
            TAG_ID | TAG_DATA => return Err(ProtocolError::Malformed("duplicate map entry")),
            _ => {
                return Err(ProtocolError::Malformed(
                    "unexpected tag in the message map",
                ))
            }
        }
        seen += 1;
    }
    if cursor.pos != buf.len() {
        return Err(ProtocolError::Malformed("trailing bytes after the message"));
    }
    let id = id.ok_or(ProtocolError::MissingId)?;
    let data = data.ok_or(ProtocolError::MissingData)?;
    if id == 0 {
        return Err(ProtocolError::ZeroId);
    }
    Ok((id, data))
}

/// A read position in a body; every read is bounds-checked.
struct Cursor<'b> {
    buf: &'b [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// The head at the cursor, advancing past it; truncation is Malformed.
    fn head(&mut self, what: &'static str) -> Result<(u8, u64), ProtocolError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let (major, value, n) = read_head(rest)
            .map_err(|_| ProtocolError::Malformed(what))?
            .ok_or(ProtocolError::Malformed("truncated message map"))?;
        self.pos += n;
        Ok((major, value))
    }

    /// The map head: None for the indefinite map the reference writes, or
    /// the number of items (2 per pair) of a definite map.
    fn map_head(&mut self) -> Result<Option<u64>, ProtocolError> {
        match self.peek() {
            Some(MAP_START) => {
                self.pos += 1;
                Ok(None)
            }
            Some(b) if DEFINITE_MAPS.contains(&b) => {
                self.pos += 1;
                Ok(Some(u64::from(b - 0xa0) * 2))
            }
            Some(_) => Err(ProtocolError::Malformed("message is not a map")),
            None => Err(ProtocolError::Malformed("truncated message map")),
        }
    }

    /// The tag that introduces a map entry (44 or 45).
    fn entry_tag(&mut self) -> Result<u64, ProtocolError> {
        match self.head("bad item in the message map")? {
            (MAJOR_TAG, tag) => Ok(tag),
            _ => Err(ProtocolError::Malformed(
                "unexpected item in the message map",
            )),
        }
    }

    /// The unsigned integer after tag 44.
    fn id(&mut self) -> Result<u64, ProtocolError> {
        match self.head("id is not an unsigned integer")? {
            (MAJOR_UINT, id) => Ok(id),
            _ => Err(ProtocolError::Malformed("id is not an unsigned integer")),
        }
    }

    /// The byte string after tag 45, as a range of the buffer.
    fn data(&mut self) -> Result<Range<usize>, ProtocolError> {
        let (major, len) = self.head("data is not a definite byte string")?;
        if major != MAJOR_BYTES {
            return Err(ProtocolError::Malformed(
                "data is not a definite byte string",
            ));
        }
        let left = self.buf.len() - self.pos.min(self.buf.len());
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= left)
            .ok_or(ProtocolError::Malformed("data runs past the body"))?;
        let range = self.pos..self.pos + len;
        self.pos += len;
        Ok(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn body(id: u64, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_body(&mut out, id, data);
        out
    }

    /// `tag(enc) bstr(compress(inner))`.
    fn wrap(enc: Encoding, inner: &[u8]) -> Vec<u8> {
        let mut packed = Vec::new();
        enc.compress(inner, &mut packed);
        wrap_raw(enc.tag(), &packed)
    }

    fn wrap_raw(tag: u64, content: &[u8]) -> Vec<u8> {
        use super::super::cbor::write_head;
        let mut out = Vec::new();
        write_head(&mut out, MAJOR_TAG, tag);
        write_head(&mut out, MAJOR_BYTES, content.len() as u64);
        out.extend_from_slice(content);
        out
    }

    fn err(bytes: &[u8]) -> ProtocolError {
        decode_body(bytes, MAX).unwrap_err()
    }

    #[test]
    fn plain_body_matches_the_reference_and_borrows() {
        let b = body(100, b"abcde");
        assert_eq!(hex::encode(&b), "d82bbfd82c1864d82d456162636465ff");
        assert_eq!(b.len(), body_len(100, 5));
        let m = decode_body(&b, MAX).unwrap();
        assert_eq!(m.id, 100);
        assert!(matches!(m.data, Cow::Borrowed(d) if d == b"abcde"));
    }

    #[test]
    fn body_len_is_exact_for_every_width() {
        for id in [1, 23, 24, 255, 256, 65535, 65536, 1 << 32, u64::MAX] {
            for len in [0, 1, 23, 24, 255, 256, 65536] {
                let data = vec![7u8; len];
                let b = body(id, &data);
                assert_eq!(b.len(), body_len(id, len));
                let m = decode_body(&b, MAX).unwrap();
                assert_eq!((m.id, m.data.as_ref()), (id, data.as_slice()));
            }
        }
    }

    #[test]
    fn fast_path_agrees_with_the_general_parser() {
        for id in [1, 23, 24, 256, 1 << 40, u64::MAX] {
            for len in [0, 1, 23, 24, 300] {
                let b = body(id, &vec![9u8; len]);
                let fast = parse_canonical(&b, 2);
                assert!(fast.is_some(), "id {id} len {len}");
                assert_eq!(fast, parse_any_map(&b, 2).ok());
            }
        }
        // Anything else falls through to the general parser.
        for other in [
            "d82bbfd82d4161d82c1864ff",
            "d82ba1d82c1864d82d4161",
            "d82bbfd82c00d82d4161ff",
            "d82bbfd82c1864d82d4161ff00",
            "d82bbfd82c1864d82d4161",
            "d82bbfd82c1864d82d5bffffffffffffffff61ff",
        ] {
            assert_eq!(
                parse_canonical(&hex::decode(other).unwrap(), 2),
                None,
                "{other}"
            );
        }
        // A non-shortest id is still the canonical layout.
        let wide = hex::decode("d82bbfd82c1b0000000000000064d82d4161ff").unwrap();
        assert_eq!(parse_canonical(&wide, 2), Some((100, 17..18)));
        assert_eq!(parse_any_map(&wide, 2), Ok((100, 17..18)));
    }

    #[test]
    fn entries_in_either_order_and_definite_map() {
        let swapped = hex::decode("d82bbfd82d4161d82c1864ff").unwrap();
        let m = decode_body(&swapped, MAX).unwrap();
        assert_eq!((m.id, m.data.as_ref()), (100, &b"a"[..]));
        let definite = hex::decode("d82ba1d82c1864d82d4161").unwrap();
        let m = decode_body(&definite, MAX).unwrap();
        assert_eq!((m.id, m.data.as_ref()), (100, &b"a"[..]));
    }

    #[test]
    fn compressed_layers_peel_in_order() {
        let plain = body(7, b"payload payload payload");
        let gz = wrap(Encoding::Gzip, &plain);
        let both = wrap(Encoding::Lzw, &gz);
        for b in [gz, both, wrap(Encoding::Lzw, &plain)] {
            let m = decode_body(&b, MAX).unwrap();
            assert_eq!(
                (m.id, m.data.as_ref()),
                (7, &b"payload payload payload"[..])
            );
            assert!(matches!(m.data, Cow::Owned(_)));
        }
    }

    #[test]
    fn at_most_four_layers() {
        let mut b = body(7, b"x");
        for _ in 0..MAX_WRAPS {
            b = wrap(Encoding::Lzw, &b);
        }
        assert_eq!(decode_body(&b, MAX).unwrap().id, 7);
        let b = wrap(Encoding::Lzw, &b);
        assert_eq!(
            err(&b),
            ProtocolError::Malformed("too many compression layers")
        );
    }

    #[test]
    fn body_without_tag_43() {
        assert_eq!(err(&[]), ProtocolError::NoMessageTag);
        assert_eq!(
            err(&hex::decode("bfd82c1864d82d4161ff").unwrap()),
            ProtocolError::NoMessageTag
        );
        assert_eq!(err(&[0x45, 1, 2, 3, 4, 5]), ProtocolError::NoMessageTag);
        // A compressed layer that holds no message either.
        let b = wrap(Encoding::Gzip, &[0x41, 0x00]);
        assert_eq!(err(&b), ProtocolError::NoMessageTag);
    }

    #[test]
    fn map_without_id() {
        assert_eq!(
            err(&hex::decode("d82bbfd82d4161ff").unwrap()),
            ProtocolError::MissingId
        );
        assert_eq!(
            err(&hex::decode("d82bbfff").unwrap()),
            ProtocolError::MissingId
        );
    }

    #[test]
    fn map_without_data() {
        assert_eq!(
            err(&hex::decode("d82bbfd82c1864ff").unwrap()),
            ProtocolError::MissingData
        );
    }

    #[test]
    fn id_zero() {
        assert_eq!(err(&body(0, b"a")), ProtocolError::ZeroId);
    }

    #[test]
    fn unknown_compression_tag() {
        let b = wrap_raw(48, &body(1, b"a"));
        assert_eq!(err(&b), ProtocolError::UnknownTag(48));
        assert_eq!(err(&wrap_raw(55799, b"")), ProtocolError::UnknownTag(55799));
    }

    #[test]
    fn corrupt_gzip() {
        // Members as the reference writes them carry no CRC (no trailer), so
        // a flipped data byte goes unseen; a broken block header does not.
        // This one is a stored block: NLEN sits before the data and the
        // 5-byte sync-flush block.
        let inner = body(1, b"some gzip data");
        let mut b = wrap(Encoding::Gzip, &inner);
        let nlen = b.len() - 5 - inner.len() - 2;
        b[nlen] ^= 0x55;
        assert!(matches!(err(&b), ProtocolError::CorruptGzip(_)));
        let b = wrap_raw(46, b"\x1f\x8b\x08\x00garbage!");
        assert!(matches!(err(&b), ProtocolError::CorruptGzip(_)));
    }

    #[test]
    fn corrupt_lzw() {
        // Clear code, then code 511: an entry the table does not have yet.
        let b = wrap_raw(47, &[0x00, 0xff, 0x03]);
        assert!(matches!(err(&b), ProtocolError::CorruptLzw(_)));
    }

    #[test]
    fn decompression_bomb() {
        let big = body(1, &vec![0u8; 4 << 20]);
        for enc in [Encoding::Gzip, Encoding::Lzw] {
            let b = wrap(enc, &big);
            assert!(b.len() < 64 * 1024, "{enc:?}: {} bytes", b.len());
            assert_eq!(
                decode_body(&b, 1 << 20).unwrap_err(),
                ProtocolError::DecompressedTooLarge(1 << 20)
            );
        }
    }

    #[test]
    fn malformed_bodies() {
        let cases: &[(&str, &str)] = &[
            ("d8", "truncated body tag"),
            ("d82b", "truncated message map"),
            ("d82b40", "message is not a map"),
            ("d82bbfd82c1864d82d4161", "truncated message map"),
            (
                "d82bbfd82c1864d82d4161ff00",
                "trailing bytes after the message",
            ),
            ("d82bbfd82c1864d82d4561ff", "data runs past the body"),
            (
                "d82bbfd82c1864d82d5f4161ffff",
                "data is not a definite byte string",
            ),
            ("d82bbfd82c4164d82d4161ff", "id is not an unsigned integer"),
            ("d82bbfd82c1864d82c1864ff", "duplicate map entry"),
            (
                "d82bbfd82e1864d82d4161ff",
                "unexpected tag in the message map",
            ),
            ("d82bbf1864d82d4161ff", "unexpected item in the message map"),
            ("d82ba2d82c1864d82d4161", "truncated message map"),
            ("d82e", "truncated compressed body"),
            ("d82e1864", "compression tag not followed by a byte string"),
            ("d82e4200", "truncated compressed body"),
            ("d82e400000", "trailing bytes after the compressed body"),
        ];
        for (hex_body, reason) in cases {
            let b = hex::decode(hex_body).unwrap();
            assert_eq!(err(&b), ProtocolError::Malformed(reason), "{hex_body}");
        }
    }
}
