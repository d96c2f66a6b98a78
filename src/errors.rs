//! The crate's error types: `ProtocolError` for bytes that break the wire
//! contract (docs/protocol.md §6), `Error` for everything a caller can see. The
//! Python mapping of both lives in `python/errors.rs`, nowhere else.

use std::time::Duration;

/// Why a frame or a message body was rejected. Every §6 bad-input case has a
/// variant, so a log line or a Python exception names the exact cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error(
        "bad frame marker {:02x} {:02x} {:02x}, want d9 d9 f7 ({})",
        .0[0], .0[1], .0[2], marker_hint(.0)
    )]
    BadMarker([u8; 3]),
    #[error("unknown frame kind byte 0x{0:02x}")]
    UnknownKind(u8),
    #[error("packet is not a definite-length byte string (head 0x{0:02x})")]
    BadPacketHead(u8),
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge { len: u64, max: usize },
    #[error("connection ended inside a frame ({0} bytes of it received)")]
    Truncated(usize),
    #[error("FINISH frame ends with 0x{0:02x}, want ff")]
    BadFinishTrailer(u8),
    #[error("packet does not start with an opaque tag")]
    MissingOpaque,
    #[error("opaque {0} outside the valid tag range")]
    BadOpaque(u64),
    #[error("malformed packet or body: {0}")]
    Malformed(&'static str),
    #[error("body has no message (tag 43) inside")]
    NoMessageTag,
    #[error("message map has no id (tag 44)")]
    MissingId,
    #[error("message map has no data (tag 45)")]
    MissingData,
    #[error("message id 0 is invalid")]
    ZeroId,
    #[error("unknown body tag {0}")]
    UnknownTag(u64),
    #[error("corrupt gzip body: {0}")]
    CorruptGzip(String),
    #[error("corrupt lzw body: {0}")]
    CorruptLzw(String),
    #[error("decompressed body exceeds the maximum of {0} bytes")]
    DecompressedTooLarge(usize),
}

/// A TLS record starts with its type (0x14..0x17) and version 0x03: such
/// a peer expects TLS, which a plaintext transport does not speak.
fn marker_hint(seen: &[u8; 3]) -> &'static str {
    if (0x14..=0x17).contains(&seen[0]) && seen[1] == 0x03 {
        "the peer speaks TLS: give this side tls=gofast.TLS(...) too"
    } else {
        "is the peer a gofast peer?"
    }
}

/// Every failure a transport call can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connection closed: {0}")]
    Closed(String),
    #[error("no response within {:.3}s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("all {capacity} opaques of the range are in use{}", held_by_timeouts(*.expired))]
    OpaqueExhausted { capacity: u64, expired: u64 },
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("i/o error: {0}")]
    Io(std::io::Error),
    /// The TLS handshake failed, or the peer's TLS records broke.
    #[error("{0}")]
    Tls(String),
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("stream {0} is closed on this side")]
    StreamClosed(u64),
    /// A wait's caller asked to stop (Ctrl-C); it holds the real reason.
    #[error("interrupted")]
    Interrupted,
}

impl From<std::io::Error> for Error {
    /// A TLS failure travels the read path as an `io::Error`; it is told
    /// apart here so the caller sees a TLS error, not a socket error.
    fn from(e: std::io::Error) -> Error {
        let tls = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<crate::io::tls::TlsFailure>());
        match tls {
            Some(t) => Error::Tls(t.0.clone()),
            None => Error::Io(e),
        }
    }
}

fn held_by_timeouts(expired: u64) -> String {
    if expired == 0 {
        return String::new();
    }
    format!(
        " ({expired} by timed-out requests, until their late RESPONSE arrives or the \
         connection ends: widen opaque.start..opaque.end, or reconnect)"
    )
}

pub type Result<T> = std::result::Result<T, Error>;
