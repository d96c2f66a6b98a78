//! The frame decoder fed as the reader feeds it: a byte stream arriving in
//! reads of fuzzer-chosen lengths. Chunked decoding must give exactly the
//! frames, drops and end of decoding the whole stream at once, every step
//! keeps the invariants in `gofast_fuzz::step`, and every frame's body goes
//! through `decode_body` with the reader's limit.
//!
//! Input: 3 bytes max_frame (LE, 1..=MAX_FRAME_CAP), 1 byte n, then n % 8 + 1
//! read lengths (0 = all that is left), then the stream.
#![no_main]

use gofast::codec::{decode_body, FrameDecoder};
use gofast_fuzz::{assert_same, decode_chunked, decode_whole, Event, Reads, MAX_BODY_FACTOR};
use libfuzzer_sys::fuzz_target;
use std::borrow::Cow;

/// Above the vectors' largest frames (70 KiB of data); small enough that a
/// decompression bomb up to the body limit stays quick.
const MAX_FRAME_CAP: u32 = 1 << 17;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let max_frame = u32::from_le_bytes([head[0], head[1], head[2], 0]) % MAX_FRAME_CAP + 1;
    let n_reads = usize::from(head[3] % 8) + 1;
    let (sizes, stream) = rest.split_at(n_reads.min(rest.len()));

    let decoder = FrameDecoder::new(max_frame as usize);
    let whole = decode_whole(&decoder, stream);
    let chunked = decode_chunked(&decoder, stream, &mut Reads::new(sizes));
    assert_same(&chunked, &whole);
    // Byte by byte is the hardest split; keep it to small streams.
    if stream.len() <= 512 {
        let one = decode_chunked(&decoder, stream, &mut Reads::new(&[1]));
        assert_same(&one, &whole);
    }

    let consumed: usize = whole
        .events
        .iter()
        .map(|e| match e {
            Event::Frame { len, .. } | Event::Dropped { len, .. } => *len,
        })
        .sum();
    if let Ok(left) = whole.end {
        assert_eq!(consumed + left, stream.len());
    }

    // As dispatch does for each frame.
    let limit = max_frame as usize * MAX_BODY_FACTOR;
    for event in &whole.events {
        if let Event::Frame { body, .. } = event {
            if let Ok(m) = decode_body(body, limit) {
                assert_ne!(m.id, 0);
                assert!(m.data.len() <= limit.max(body.len()));
                if let Cow::Owned(d) = &m.data {
                    assert!(d.len() <= limit);
                }
            }
        }
    }
});
