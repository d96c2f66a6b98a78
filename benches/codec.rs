//! Frame codec throughput: encode and decode one POST frame of 64 bytes and
//! of 64 KiB, uncompressed, gzip and lzw. Each iteration is one frame, so
//! criterion's time per iteration is the cost per frame.
//!
//! Run: `cargo bench --no-default-features --bench codec` (add `-- --quick`
//! for a short run).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gofast::codec::{decode_body, encode_frame, Decoded, Encoding, FrameDecoder, Kind, Scratch};
use std::hint::black_box;

const OPAQUE: u64 = 1000;
const ID: u64 = 100;
const MAX: usize = 1 << 24;

/// Text-like payload, compressible like typical messages.
fn payload(len: usize) -> Vec<u8> {
    let text = br#"{"user":"alice","op":"put","key":"k-0042","value":[1,2,3,4]} "#;
    text.iter().copied().cycle().take(len).collect()
}

fn one_frame(data: &[u8], encodings: &[Encoding]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(
        &mut out,
        Kind::Post,
        OPAQUE,
        ID,
        data,
        encodings,
        &mut Scratch::default(),
    );
    out
}

fn bench_codec(c: &mut Criterion) {
    let cases: [(&str, &[Encoding]); 3] = [
        ("plain", &[]),
        ("gzip", &[Encoding::Gzip]),
        ("lzw", &[Encoding::Lzw]),
    ];
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Elements(1));
    for size in [64usize, 64 * 1024] {
        let data = payload(size);
        for (name, encodings) in cases {
            let mut out = Vec::with_capacity(2 * size + 64);
            let mut scratch = Scratch::default();
            group.bench_function(format!("encode/{name}/{size}"), |b| {
                b.iter(|| {
                    out.clear();
                    encode_frame(
                        &mut out,
                        Kind::Post,
                        OPAQUE,
                        ID,
                        black_box(&data),
                        encodings,
                        &mut scratch,
                    );
                    black_box(out.len())
                })
            });

            let frame = one_frame(&data, encodings);
            let decoder = FrameDecoder::new(MAX);
            group.bench_function(format!("decode/{name}/{size}"), |b| {
                b.iter(|| {
                    let Ok(Some((Decoded::Frame(raw), used))) = decoder.decode(black_box(&frame))
                    else {
                        panic!("bench frame does not decode");
                    };
                    let message = decode_body(raw.body, MAX).ok();
                    black_box((used, message.map(|m| m.data.len())))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
