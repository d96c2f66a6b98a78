//! Payloads of the built-in messages (docs/protocol.md §4): whoami, ping and
//! heartbeat. Ids 0x1000..=0x100F are reserved for them.

use crate::codec::cbor;
use crate::errors::ProtocolError;

pub const PING_ID: u64 = 0x1001;
pub const WHOAMI_ID: u64 = 0x1002;
pub const HEARTBEAT_ID: u64 = 0x1003;
/// The `x-errors` extension's error reply (docs/protocol.md §9).
pub const ERROR_ID: u64 = 0x1004;
/// The whoami tag that advertises the extension.
pub const ERRORS_TAG: &str = "x-errors";
pub const RESERVED_IDS: std::ops::RangeInclusive<u64> = 0x1000..=0x100F;

pub fn is_reserved(id: u64) -> bool {
    RESERVED_IDS.contains(&id)
}

/// What a side tells its peer about itself in the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Whoami {
    pub name: String,
    pub version: u64,
    pub buffersize: u64,
    pub tags: String,
}

impl Whoami {
    pub fn encode(&self) -> Vec<u8> {
        // The name's length is one byte on the wire; the tail past 255 bytes
        // is cut at a character boundary rather than sent malformed.
        let mut end = self.name.len().min(255);
        while !self.name.is_char_boundary(end) {
            end -= 1;
        }
        let name = &self.name.as_bytes()[..end];
        let tags = self.tags.as_bytes();
        let mut out = Vec::with_capacity(1 + name.len() + 9 + 8 + 2 + tags.len());
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        cbor::write_head(&mut out, cbor::MAJOR_UINT, self.version);
        out.extend_from_slice(&self.buffersize.to_be_bytes());
        out.extend_from_slice(&(tags.len().min(u16::MAX as usize) as u16).to_be_bytes());
        out.extend_from_slice(&tags[..tags.len().min(u16::MAX as usize)]);
        out
    }

    pub fn decode(data: &[u8]) -> Result<Self, ProtocolError> {
        let bad = ProtocolError::Malformed("whoami payload");
        let mut r = Reader(data);
        let name_len = r.take(1).ok_or(bad.clone())?[0] as usize;
        let name = String::from_utf8_lossy(r.take(name_len).ok_or(bad.clone())?).into_owned();
        let (major, version, used) = cbor::read_head(r.0)?.ok_or(bad.clone())?;
        if major != cbor::MAJOR_UINT {
            return Err(bad);
        }
        r.take(used);
        let buffersize = u64::from_be_bytes(r.array::<8>().ok_or(bad.clone())?);
        let tags_len = u16::from_be_bytes(r.array::<2>().ok_or(bad.clone())?) as usize;
        let tags = String::from_utf8_lossy(r.take(tags_len).ok_or(bad)?).into_owned();
        Ok(Whoami {
            name,
            version,
            buffersize,
            tags,
        })
    }
}

pub fn encode_ping(echo: &str) -> Vec<u8> {
    let bytes = &echo.as_bytes()[..echo.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(2 + bytes.len());
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

pub fn decode_ping(data: &[u8]) -> Result<String, ProtocolError> {
    let mut r = Reader(data);
    let bad = ProtocolError::Malformed("ping payload");
    let len = u16::from_be_bytes(r.array::<2>().ok_or(bad.clone())?) as usize;
    Ok(String::from_utf8_lossy(r.take(len).ok_or(bad)?).into_owned())
}

pub fn encode_heartbeat(count: u64) -> [u8; 8] {
    count.to_be_bytes()
}

const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
/// Bounds what a peer's error can make us hold (and our own error's size).
const MAX_ERROR_TEXT: usize = 4096;

/// Cuts at a character boundary, at most `MAX_ERROR_TEXT` bytes.
fn clip(s: &str) -> &str {
    let mut end = s.len().min(MAX_ERROR_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The error reply's data: a CBOR array of two text strings, the error's
/// type name and its message.
pub fn encode_error(type_name: &str, message: &str) -> Vec<u8> {
    let (t, m) = (clip(type_name), clip(message));
    let mut out = Vec::with_capacity(2 * cbor::MAX_HEAD + 1 + t.len() + m.len());
    cbor::write_head(&mut out, MAJOR_ARRAY, 2);
    for s in [t, m] {
        cbor::write_head(&mut out, MAJOR_TEXT, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    out
}

pub fn decode_error(data: &[u8]) -> Result<(String, String), ProtocolError> {
    let bad = ProtocolError::Malformed("x-errors payload");
    let mut r = Reader(data);
    let head = |r: &mut Reader<'_>, major: u8| -> Result<u64, ProtocolError> {
        let (m, v, used) = cbor::read_head(r.0)?.ok_or(bad.clone())?;
        if m != major {
            return Err(bad.clone());
        }
        r.take(used);
        Ok(v)
    };
    if head(&mut r, MAJOR_ARRAY)? != 2 {
        return Err(bad);
    }
    let text = |r: &mut Reader<'_>| -> Result<String, ProtocolError> {
        let len = usize::try_from(head(r, MAJOR_TEXT)?).map_err(|_| bad.clone())?;
        let bytes = r.take(len).ok_or(bad.clone())?;
        Ok(clip(&String::from_utf8_lossy(bytes)).to_string())
    };
    let t = text(&mut r)?;
    let m = text(&mut r)?;
    Ok((t, m))
}

/// Whether a whoami's tags advertise the `x-errors` extension.
pub fn has_errors_tag(tags: &str) -> bool {
    tags.split(',').any(|t| t.trim() == ERRORS_TAG)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whoami_matches_the_reference_layout() {
        // From conversation-tags-gzip-batch3.json: the client's whoami data.
        let w = Whoami {
            name: "client-gzip-3".into(),
            version: 1,
            buffersize: 4096,
            tags: "gzip".into(),
        };
        let want = "0d636c69656e742d677a69702d330100000000000010000004677a6970";
        assert_eq!(hex::encode(w.encode()), want);
        assert_eq!(Whoami::decode(&w.encode()).unwrap(), w);
        let big = Whoami {
            version: 1 << 40,
            ..w
        };
        assert_eq!(Whoami::decode(&big.encode()).unwrap(), big);
    }

    #[test]
    fn truncated_payloads_are_errors() {
        let w = Whoami {
            name: "n".into(),
            version: 7,
            buffersize: 1,
            tags: "lzw".into(),
        }
        .encode();
        for cut in 0..w.len() {
            assert!(Whoami::decode(&w[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_ping(&[0, 5, b'a']).is_err());
        assert_eq!(decode_ping(&encode_ping("hello")).unwrap(), "hello");
        assert_eq!(hex::encode(encode_ping("hello")), "000568656c6c6f");
    }

    #[test]
    fn error_payload_is_a_cbor_array_of_two_texts() {
        let e = encode_error("KeyError", "no 'x'");
        assert_eq!(hex::encode(&e), "82684b65794572726f72666e6f20277827");
        assert_eq!(
            decode_error(&e).unwrap(),
            ("KeyError".into(), "no 'x'".into())
        );
        for cut in 0..e.len() {
            assert!(decode_error(&e[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_error(&[0x81, 0x60]).is_err());
        assert!(has_errors_tag("gzip, x-errors"));
        assert!(!has_errors_tag("gzip,x-errorsx"));
    }
}
