//! The gofast frame codec: bytes in, frames out, and back. It knows CBOR and
//! the frame layout of docs/protocol.md §1, and nothing of sockets, exchanges or
//! Python.
//!
//! * `cbor`     — shortest-form CBOR heads (encode, decode).
//! * `frame`    — frame kinds, delimiting a byte stream (`FrameDecoder`),
//!   encoding whole frames.
//! * `body`     — the tag-43 message body inside a packet, with the
//!   compression tags (46 gzip, 47 lzw) peeled or applied.
//! * `compress` — gzip and LZW as the reference speaks them.

pub mod body;
pub mod cbor;
pub mod compress;
pub mod frame;
#[cfg(test)]
mod props;

pub use body::{decode_body, Message};
pub use compress::Encoding;
#[cfg(test)]
pub(crate) use frame::plain_frame;
pub(crate) use frame::plain_frame_head;
pub use frame::{
    encode_finish, encode_frame, Decoded, FrameDecoder, Kind, RawFrame, Scratch, PLAIN_FRAME_END,
};
