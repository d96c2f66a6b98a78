//! gzip and LZW exactly as the Go reference speaks them (docs/protocol.md §1.2,
//! vectors/README.md quirks 2–4).
//!
//! * gzip: we write what the reference writes, a member that was flushed
//!   but never closed: the header, raw deflate data ending in a sync flush
//!   (an empty stored block, `00 00 ff ff`), no final block, no CRC32/ISIZE
//!   trailer. The reference must get exactly that: it decodes a body with a
//!   single `gzip.Reader.Read()` and treats any error as fatal, and the
//!   final block or trailer of a complete member makes that read return
//!   `io.EOF`. Bodies under 128 bytes go in one stored block (see
//!   `STORE_BELOW`). We read both kinds of member, with or without a trailer
//!   (verified when present). That is why the header is parsed here and the
//!   deflate data raw-inflated, instead of using `flate2::read::GzDecoder`,
//!   which insists on the trailer.
//! * LZW: Go's `compress/lzw` with LSB bit order and 8-bit literals, which is
//!   the GIF flavour (no "early change"): weezl's default configuration.
//!
//! Decompression is bounded: output past `max_out` is an error and no buffer
//! grows past `max_out` bytes, so a decompression bomb costs at most that.
//!
//! Compressor and decompressor states are expensive to build (a deflate
//! state ~120 µs, an inflate state ~2 µs), so senders keep theirs in a
//! `frame::Scratch` and each thread keeps one decoder state of each kind.

use crate::errors::ProtocolError;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::cell::Cell;
use std::thread::LocalKey;
use weezl::{BitOrder, LzwStatus};

/// A compression the peers can agree on in whoami `tags`; each wraps a body
/// as `tag(46|47) bstr(compressed)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    Gzip,
    Lzw,
}

impl Encoding {
    /// The CBOR tag that marks a body compressed with this encoding.
    pub const fn tag(self) -> u64 {
        match self {
            Encoding::Gzip => 46,
            Encoding::Lzw => 47,
        }
    }

    /// The name used in the `tags` setting and in whoami.
    pub const fn name(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Lzw => "lzw",
        }
    }

    /// The encoding called `s` (exact, lower case, as the reference spells it).
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "gzip" => Some(Encoding::Gzip),
            "lzw" => Some(Encoding::Lzw),
            _ => None,
        }
    }

    /// The encoding whose body tag is `t`.
    pub fn from_tag(t: u64) -> Option<Self> {
        match t {
            46 => Some(Encoding::Gzip),
            47 => Some(Encoding::Lzw),
            _ => None,
        }
    }

    /// Appends `input` compressed with this encoding to `out`.
    ///
    /// This builds fresh compressor state each call (for gzip past 128 bytes
    /// that costs ~120 µs); the frame encoder keeps its state in a `Scratch`.
    pub fn compress(self, input: &[u8], out: &mut Vec<u8>) {
        Compressors::default().compress(self, input, out);
    }

    /// Decompresses `input`, failing with `DecompressedTooLarge` as soon as
    /// the output would exceed `max_out` bytes.
    pub fn decompress(self, input: &[u8], max_out: usize) -> Result<Vec<u8>, ProtocolError> {
        match self {
            Encoding::Gzip => gunzip(input, max_out),
            Encoding::Lzw => unlzw(input, max_out),
        }
    }
}

/// Parses the comma-separated `tags` setting ("", "gzip", "lzw", "gzip,lzw").
/// Items are trimmed and empty items skipped; an unknown name is returned as
/// the error so the caller can say which one it was.
pub fn parse_tags(csv: &str) -> Result<Vec<Encoding>, String> {
    csv.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| Encoding::from_name(item).ok_or_else(|| item.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------
// Compression

/// Compressor state kept across frames: a deflate state is a few hundred KiB,
/// far too much to allocate per frame on the send path.
#[derive(Default)]
pub(crate) struct Compressors {
    deflate: Option<Compress>,
    lzw: Option<weezl::encode::Encoder>,
    /// gzip level 0..=9; `None` is the reference's default, BestSpeed (1).
    gzip_level: Option<u32>,
}

impl std::fmt::Debug for Compressors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressors")
            .field("deflate", &self.deflate.is_some())
            .field("lzw", &self.lzw.is_some())
            .field("gzip_level", &self.gzip_level)
            .finish()
    }
}

/// gzip member header as the reference writes it at BestSpeed: no flags, no
/// mtime, XFL 4 ("fastest"), OS 255 ("unknown"). `gzip_header` sets XFL for
/// other levels.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x04, 0xff];

/// Where XFL sits in the header.
const XFL_AT: usize = 8;

/// The header for `level`: XFL as Go's `gzip.Writer` sets it, which is RFC
/// 1952's: 2 for maximum compression (9), 4 for fastest (1), 0 otherwise.
fn gzip_header(level: u32) -> [u8; 10] {
    let mut header = GZIP_HEADER;
    header[XFL_AT] = match level {
        1 => 4,
        9 => 2,
        _ => 0,
    };
    header
}

/// What a sync flush ends with once it is byte-aligned: the LEN/NLEN of an
/// empty stored block (RFC 1951 §3.2.4). Its 3 header bits come before it,
/// in the previous byte or a `00` of their own.
const SYNC_MARKER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

impl Compressors {
    /// Appends `input` compressed with `encoding` to `out`, reusing state.
    ///
    /// Never inlined: building a deflate state takes a stack frame of over
    /// 64 KiB, and stack probes touch all of it on every call of whatever
    /// function it is inlined into — the send path of every transport.
    #[inline(never)]
    pub(crate) fn compress(&mut self, encoding: Encoding, input: &[u8], out: &mut Vec<u8>) {
        match encoding {
            Encoding::Gzip => self.gzip(input, out),
            Encoding::Lzw => self.lzw(input, out),
        }
    }

    pub(crate) fn set_gzip_level(&mut self, level: u32) {
        self.gzip_level = Some(level.min(9));
        self.deflate = None;
    }

    /// A member the way the reference's Flush leaves it: no final block
    /// and no trailer (see the module comment for why).
    fn gzip(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let level = self.gzip_level.unwrap_or(1);
        out.extend_from_slice(&gzip_header(level));
        if input.len() < STORE_BELOW {
            // An empty input needs only the sync flush, as in Go.
            if !input.is_empty() {
                store(input, out);
            }
            store(&[], out);
        } else {
            let deflate = self
                .deflate
                .get_or_insert_with(|| Compress::new(Compression::new(level), false));
            deflate.reset();
            deflate_all(deflate, input, out);
        }
    }

    fn lzw(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let encoder = self
            .lzw
            .get_or_insert_with(|| weezl::encode::Encoder::new(BitOrder::Lsb, 8));
        // reset() restarts with a clear code, as Go's writer does; encode_all
        // ends with the EOF code Go's reader wants. With 8-bit symbols every
        // byte is a valid literal, so the status cannot be an error.
        encoder.reset();
        let result = encoder.into_vec(out).encode_all(input);
        debug_assert!(result.status.is_ok(), "lzw encode: {:?}", result.status);
    }
}

/// Inputs shorter than this go out as one stored deflate block. Resetting a
/// deflate state costs about 5 µs (it zeroes its hash tables), far more than
/// the few bytes deflate could save on a body this small; Go's BestSpeed
/// likewise skips matching below 128 bytes.
const STORE_BELOW: usize = 128;

/// Appends `input` (shorter than 64 KiB) as a stored block that is not the
/// last: BFINAL=0, BTYPE=00, padding to the byte, then LEN and its
/// complement NLEN. Empty, it is the sync-flush block `00 00 00 ff ff`.
fn store(input: &[u8], out: &mut Vec<u8>) {
    let len = input.len() as u16;
    out.push(0x00);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(input);
}

/// Raw-deflates all of `input` into `out` and sync-flushes, without ending
/// the stream: the output ends with `SYNC_MARKER`.
fn deflate_all(deflate: &mut Compress, input: &[u8], out: &mut Vec<u8>) {
    loop {
        let done = usize::try_from(deflate.total_in()).unwrap_or(usize::MAX);
        let rest = input.get(done..).unwrap_or_default();
        // Stored blocks bound deflate's growth: 5 bytes per 64 KiB block,
        // plus a little for the sync-flush block and bit padding.
        out.reserve(rest.len() + rest.len() / 1024 + 64);
        let before = (deflate.total_in(), deflate.total_out());
        let status = deflate.compress_vec(rest, out, FlushCompress::Sync);
        let taken_all = usize::try_from(deflate.total_in()).is_ok_and(|n| n >= input.len());
        match status {
            // As with zlib, a flush is complete once all input is taken and
            // output room is left over; a full buffer may hide pending bits.
            Ok(_) if taken_all && out.len() < out.capacity() => return,
            Ok(_) if (deflate.total_in(), deflate.total_out()) != before => {}
            // No progress with room to spare, or an error: both mean misuse
            // of the deflate state, which cannot come from input bytes. Stop
            // rather than spin; the peer will report the body as corrupt.
            _ => {
                debug_assert!(false, "deflate made no progress");
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Decompression

/// First growth step of a decompression buffer past its initial guess.
const MIN_GROWTH: usize = 4096;

/// A decompression buffer sized for `input`: a guess at the output size,
/// never more than `max_out`.
fn output_buffer(input: &[u8], max_out: usize) -> Vec<u8> {
    Vec::with_capacity(input.len().saturating_mul(4).max(64).min(max_out))
}

/// Makes room in a full `out`: doubling, but never past `max_out`, so a
/// bomb cannot make us allocate more than the bound. Only called while
/// `out.len() < max_out`.
fn grow(out: &mut Vec<u8>, max_out: usize) {
    if out.len() < out.capacity() {
        return;
    }
    let target = out
        .capacity()
        .saturating_mul(2)
        .max(MIN_GROWTH)
        .min(max_out);
    out.reserve_exact(target.saturating_sub(out.len()));
}

thread_local! {
    /// Each thread's spare inflate and LZW decoder states (see `with_cached`).
    static INFLATER: Cell<Option<Decompress>> = const { Cell::new(None) };
    static UNLZW: Cell<Option<weezl::decode::Decoder>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's cached decoder state, reset, or a fresh one
/// when there is none. Building a state costs 1–2 µs, a large share of
/// decoding a small body, and reader threads decode body after body. The
/// state is taken out of the cell while in use, so nothing can observe it
/// half-used, and a state left dirty by corrupt input is reset before reuse.
fn with_cached<T: 'static, R>(
    cache: &'static LocalKey<Cell<Option<T>>>,
    new: fn() -> T,
    reset: fn(&mut T),
    f: impl FnOnce(&mut T) -> R,
) -> R {
    let mut state = match cache.try_with(Cell::take) {
        Ok(Some(mut state)) => {
            reset(&mut state);
            state
        }
        // None yet, or the thread is being torn down.
        _ => new(),
    };
    let result = f(&mut state);
    // Fails only during thread teardown; the state is then simply dropped.
    let _ = cache.try_with(|cell| cell.set(Some(state)));
    result
}

fn new_inflater() -> Decompress {
    Decompress::new(false)
}

fn reset_inflater(inflater: &mut Decompress) {
    inflater.reset(false);
}

fn new_unlzw() -> weezl::decode::Decoder {
    weezl::decode::Decoder::new(BitOrder::Lsb, 8)
}

fn corrupt_gzip(reason: &str) -> ProtocolError {
    ProtocolError::CorruptGzip(reason.to_string())
}

// gzip header flag bits (RFC 1952 §2.3.1).
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
const FRESERVED: u8 = 0xe0;

/// The length of the gzip member header at the front of `input`.
fn gzip_header_len(input: &[u8]) -> Result<usize, ProtocolError> {
    let fixed = input
        .get(..GZIP_HEADER.len())
        .ok_or_else(|| corrupt_gzip("truncated header"))?;
    if fixed[..2] != [0x1f, 0x8b] {
        return Err(corrupt_gzip("bad magic"));
    }
    if fixed[2] != 8 {
        return Err(corrupt_gzip("compression method is not deflate"));
    }
    let flags = fixed[3];
    if flags & FRESERVED != 0 {
        return Err(corrupt_gzip("reserved header flags set"));
    }
    let mut pos = GZIP_HEADER.len();
    if flags & FEXTRA != 0 {
        let xlen = input
            .get(pos..pos + 2)
            .ok_or_else(|| corrupt_gzip("truncated extra field"))?;
        pos += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    if flags & FNAME != 0 {
        pos = skip_zero_terminated(input, pos, "truncated file name")?;
    }
    if flags & FCOMMENT != 0 {
        pos = skip_zero_terminated(input, pos, "truncated comment")?;
    }
    if flags & FHCRC != 0 {
        pos = check_header_crc(input, pos)?;
    }
    if pos > input.len() {
        return Err(corrupt_gzip("truncated header"));
    }
    Ok(pos)
}

/// The position just past the zero byte that ends the string at `pos`.
fn skip_zero_terminated(
    input: &[u8],
    pos: usize,
    reason: &'static str,
) -> Result<usize, ProtocolError> {
    let text = input.get(pos..).ok_or_else(|| corrupt_gzip(reason))?;
    let zero = text
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| corrupt_gzip(reason))?;
    Ok(pos + zero + 1)
}

/// Checks FHCRC: the low 16 bits of the CRC32 of the header before it.
fn check_header_crc(input: &[u8], pos: usize) -> Result<usize, ProtocolError> {
    let (Some(header), Some(crc)) = (input.get(..pos), input.get(pos..pos + 2)) else {
        return Err(corrupt_gzip("truncated header crc"));
    };
    if u16::from_le_bytes([crc[0], crc[1]]) != crc32fast::hash(header) as u16 {
        return Err(corrupt_gzip("header crc mismatch"));
    }
    Ok(pos + 2)
}

/// Decompresses one gzip member, with or without its trailer.
fn gunzip(input: &[u8], max_out: usize) -> Result<Vec<u8>, ProtocolError> {
    let start = gzip_header_len(input)?;
    let deflated = input.get(start..).unwrap_or_default();
    let mut out = output_buffer(deflated, max_out);
    let (ended, used) = with_cached(&INFLATER, new_inflater, reset_inflater, |inflater| {
        let ended = inflate_bounded(inflater, deflated, &mut out, max_out)?;
        let used = usize::try_from(inflater.total_in()).unwrap_or(usize::MAX);
        Ok::<_, ProtocolError>((ended, used))
    })?;
    let rest = deflated.get(used..).unwrap_or_default();
    if ended {
        check_trailer(rest, &out)?;
    } else if !rest.is_empty() || !deflated.ends_with(&SYNC_MARKER) {
        // Without a final block the member may only end where the
        // reference's writer flushed it: right after a sync-flush marker.
        return Err(corrupt_gzip("truncated deflate stream"));
    }
    Ok(out)
}

/// Raw-inflates `input` into `out`. Ok(true) when the deflate stream ended
/// (a final block was seen), Ok(false) when the input ran out before that.
fn inflate_bounded(
    inflater: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    max_out: usize,
) -> Result<bool, ProtocolError> {
    loop {
        let used = usize::try_from(inflater.total_in()).unwrap_or(usize::MAX);
        let rest = input.get(used..).unwrap_or_default();
        let before = (inflater.total_in(), inflater.total_out());
        let (status, too_large) = if out.len() < max_out {
            // Writes at most the spare capacity, which `grow` keeps within
            // max_out; the length check is a second line of defence.
            grow(out, max_out);
            let status = inflater.decompress_vec(rest, out, FlushDecompress::None);
            (status, out.len() > max_out)
        } else {
            // Full: any further byte is one too many.
            let status = inflater.decompress(rest, &mut [0u8; 1], FlushDecompress::None);
            (status, inflater.total_out() > before.1)
        };
        if too_large {
            return Err(ProtocolError::DecompressedTooLarge(max_out));
        }
        let status = status.map_err(|e| ProtocolError::CorruptGzip(e.to_string()))?;
        if status == Status::StreamEnd {
            return Ok(true);
        }
        if (inflater.total_in(), inflater.total_out()) == before {
            return Ok(false);
        }
    }
}

/// Verifies the CRC32/ISIZE trailer after a deflate stream that ended, if
/// there is one.
fn check_trailer(rest: &[u8], out: &[u8]) -> Result<(), ProtocolError> {
    if rest.is_empty() {
        // A final block but no trailer: as lenient as for a flushed member.
        return Ok(());
    }
    let Some(trailer) = rest.get(..8) else {
        return Err(corrupt_gzip("truncated trailer"));
    };
    let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let size = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
    if crc != crc32fast::hash(out) {
        return Err(corrupt_gzip("crc32 mismatch"));
    }
    if size != out.len() as u32 {
        return Err(corrupt_gzip("length mismatch"));
    }
    if rest.len() > 8 {
        return Err(corrupt_gzip("trailing bytes after the member"));
    }
    Ok(())
}

/// Decompresses an LZW stream, with or without its EOF code.
fn unlzw(input: &[u8], max_out: usize) -> Result<Vec<u8>, ProtocolError> {
    let mut out = output_buffer(input, max_out);
    with_cached(
        &UNLZW,
        new_unlzw,
        weezl::decode::Decoder::reset,
        |decoder| unlzw_bounded(decoder, input, &mut out, max_out),
    )?;
    Ok(out)
}

/// The longest string one LZW code stands for (12-bit codes).
const MAX_LZW_STRING: usize = 4096;

/// Feeds `input` to the LZW decoder until its EOF code or until the input
/// runs out, appending to `out` and failing past `max_out`.
///
/// weezl writes a code's string whole or not at all: with less room than
/// the next string it makes no progress, which would look like the end of
/// the stream and cut the output at the bound. So a stalled decode is
/// retried into a scratch buffer that holds any string: whatever it
/// produces lies past `max_out`.
fn unlzw_bounded(
    decoder: &mut weezl::decode::Decoder,
    input: &[u8],
    out: &mut Vec<u8>,
    max_out: usize,
) -> Result<(), ProtocolError> {
    let mut rest = input;
    loop {
        let mut result = None;
        if out.len() < max_out {
            // weezl writes into initialised bytes: expose the spare capacity
            // (bounded by max_out, see `grow`) and cut back to what it wrote.
            grow(out, max_out);
            let len = out.len();
            out.resize(out.capacity().min(max_out), 0);
            let r = decoder.decode_bytes(rest, out.get_mut(len..).unwrap_or_default());
            out.truncate(len + r.consumed_out);
            result = Some(r);
        }
        let stalled = result.as_ref().map_or(true, |r| {
            matches!(r.status, Ok(LzwStatus::Ok)) && r.consumed_in == 0 && r.consumed_out == 0
        });
        let result = match result {
            Some(r) if !stalled => r,
            _ => {
                let aside = decoder.decode_bytes(rest, &mut [0u8; MAX_LZW_STRING]);
                if aside.consumed_out > 0 {
                    return Err(ProtocolError::DecompressedTooLarge(max_out));
                }
                aside
            }
        };
        rest = rest.get(result.consumed_in..).unwrap_or_default();
        match result.status {
            Err(e) => return Err(ProtocolError::CorruptLzw(e.to_string())),
            // The EOF code; Go's reader ignores anything after it too.
            Ok(LzwStatus::Done) => return Ok(()),
            // Input exhausted without an EOF code: accepted, what was
            // decoded so far is the whole stream.
            Ok(LzwStatus::NoProgress) => return Ok(()),
            // No progress even with room for any string: the input's end.
            Ok(LzwStatus::Ok) if result.consumed_in == 0 && result.consumed_out == 0 => {
                return Ok(())
            }
            Ok(LzwStatus::Ok) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes: compressible text or incompressible noise.
    fn sample(len: usize, noise: bool) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|i| {
                if noise {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                } else {
                    b"the quick brown fox jumps over the lazy dog "[i % 44]
                }
            })
            .collect()
    }

    /// A complete member (final block, CRC32/ISIZE trailer), as Go's
    /// `gzip.Writer.Close` or any gzip tool writes it: we still read those.
    fn complete_member(input: &[u8]) -> Vec<u8> {
        let mut packed = GZIP_HEADER.to_vec();
        let mut deflate = Compress::new(Compression::fast(), false);
        packed.reserve(input.len() + 64);
        let status = deflate.compress_vec(input, &mut packed, FlushCompress::Finish);
        assert_eq!(status.unwrap(), Status::StreamEnd);
        packed.extend_from_slice(&crc32fast::hash(input).to_le_bytes());
        packed.extend_from_slice(&(input.len() as u32).to_le_bytes());
        packed
    }

    /// Around the stored-block cut-off, past a deflate block and an LZW
    /// table reset, and past the decompression growth steps.
    const SIZES: [usize; 8] = [
        0,
        1,
        STORE_BELOW - 1,
        STORE_BELOW,
        300,
        4097,
        70000,
        300_000,
    ];

    #[test]
    fn names_and_tags() {
        for enc in [Encoding::Gzip, Encoding::Lzw] {
            assert_eq!(Encoding::from_name(enc.name()), Some(enc));
            assert_eq!(Encoding::from_tag(enc.tag()), Some(enc));
        }
        assert_eq!(Encoding::Gzip.tag(), 46);
        assert_eq!(Encoding::Lzw.tag(), 47);
        assert_eq!(Encoding::from_tag(48), None);
        assert_eq!(Encoding::from_name("zstd"), None);
    }

    #[test]
    fn parse_tags_settings() {
        use Encoding::*;
        assert_eq!(parse_tags(""), Ok(vec![]));
        assert_eq!(parse_tags("gzip"), Ok(vec![Gzip]));
        assert_eq!(parse_tags("lzw"), Ok(vec![Lzw]));
        assert_eq!(parse_tags("gzip,lzw"), Ok(vec![Gzip, Lzw]));
        assert_eq!(parse_tags(" lzw , ,gzip,"), Ok(vec![Lzw, Gzip]));
        assert_eq!(parse_tags("gzip,snappy"), Err("snappy".to_string()));
    }

    #[test]
    fn round_trip_both_encodings() {
        for enc in [Encoding::Gzip, Encoding::Lzw] {
            for len in SIZES {
                for noise in [false, true] {
                    let input = sample(len, noise);
                    let mut packed = vec![0xaa]; // compress must append
                    enc.compress(&input, &mut packed);
                    assert_eq!(packed[0], 0xaa);
                    let back = enc.decompress(&packed[1..], len).unwrap();
                    assert!(back == input, "{enc:?} len {len} noise {noise}");
                }
            }
        }
    }

    #[test]
    fn reused_compressors_give_the_same_bytes() {
        let mut state = Compressors::default();
        for enc in [Encoding::Gzip, Encoding::Lzw] {
            for len in SIZES {
                let input = sample(len, false);
                let (mut fresh, mut reused) = (Vec::new(), Vec::new());
                enc.compress(&input, &mut fresh);
                state.compress(enc, &input, &mut reused);
                assert_eq!(fresh, reused, "{enc:?} len {len}");
            }
        }
    }

    #[test]
    fn gzip_without_trailer_is_accepted() {
        let input = sample(5000, false);
        let mut packed = Vec::new();
        packed.extend_from_slice(&GZIP_HEADER);
        let mut deflate = Compress::new(Compression::fast(), false);
        packed.reserve(input.len() + 64);
        let status = deflate.compress_vec(&input, &mut packed, FlushCompress::Sync);
        assert!(status.is_ok());
        assert!(packed.ends_with(&[0, 0, 0xff, 0xff]));
        assert_eq!(Encoding::Gzip.decompress(&packed, 5000).unwrap(), input);
        // ...but not one cut short inside a block.
        let cut = &packed[..packed.len() - 6];
        assert!(matches!(
            Encoding::Gzip.decompress(cut, 5000),
            Err(ProtocolError::CorruptGzip(_))
        ));
    }

    /// Sizes the reference's single read must take: empty, tiny, a ping,
    /// a deflate block, and nearly its 32 KiB window.
    const WIRE_SIZES: [usize; 5] = [0, 1, 17, 512, 30_000];

    #[test]
    fn gzip_bodies_are_flushed_never_finished() {
        for level in [0, 1, 2, 6, 9] {
            let mut state = Compressors::default();
            state.set_gzip_level(level);
            for len in WIRE_SIZES {
                for noise in [false, true] {
                    let input = sample(len, noise);
                    let mut packed = Vec::new();
                    state.compress(Encoding::Gzip, &input, &mut packed);
                    let what = format!("level {level} len {len} noise {noise}");
                    let xfl = [0, 4, 0, 0, 0, 0, 0, 0, 0, 2][level as usize];
                    assert_eq!(
                        packed[..10],
                        [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 0xff],
                        "{what}"
                    );
                    assert!(packed.ends_with(&SYNC_MARKER), "{what}");
                    // Raw-inflating takes every byte (no trailer after the
                    // deflate data) and never sees a final block.
                    let deflated = &packed[10..];
                    let mut inflater = Decompress::new(false);
                    let mut out = Vec::with_capacity(len + 1);
                    let status = inflater
                        .decompress_vec(deflated, &mut out, FlushDecompress::Sync)
                        .unwrap();
                    assert_eq!(status, Status::Ok, "{what}");
                    assert_eq!(inflater.total_in(), deflated.len() as u64, "{what}");
                    assert!(out == input, "{what}");
                    // ...and our own reader still takes it.
                    assert!(Encoding::Gzip.decompress(&packed, len).unwrap() == input);
                }
            }
        }
    }

    #[test]
    fn gzip_header_xfl_follows_the_level() {
        assert_eq!(gzip_header(1), GZIP_HEADER);
        assert_eq!(gzip_header(9)[XFL_AT], 2);
        for level in [0, 2, 3, 4, 5, 6, 7, 8] {
            assert_eq!(gzip_header(level)[XFL_AT], 0, "level {level}");
        }
        // The default, when no level was set, is the reference's BestSpeed.
        let mut packed = Vec::new();
        Encoding::Gzip.compress(&sample(1000, false), &mut packed);
        assert_eq!(packed[..10], GZIP_HEADER);
    }

    #[test]
    fn small_gzip_bodies_match_the_reference_byte_for_byte() {
        // post-gzip-len0 and post-gzip-len5 of frames.json: the body inside
        // tag 46, then the member the reference made of it. Like ours, a
        // stored block (not the last) and the sync-flush block.
        for (body, member) in [
            (
                "d82bbfd82c1864d82d40ff",
                "1f8b08000000000004ff000b00f4ffd82bbfd82c1864d82d40ff000000ffff",
            ),
            (
                "d82bbfd82c1864d82d456162636465ff",
                "1f8b08000000000004ff001000efffd82bbfd82c1864d82d456162636465ff000000ffff",
            ),
        ] {
            let mut packed = Vec::new();
            Encoding::Gzip.compress(&hex::decode(body).unwrap(), &mut packed);
            assert_eq!(hex::encode(&packed), member);
        }
        // Go's Flush writes only the sync-flush block when there is no data.
        let mut packed = Vec::new();
        Encoding::Gzip.compress(b"", &mut packed);
        assert_eq!(hex::encode(&packed), "1f8b08000000000004ff000000ffff");
    }

    #[test]
    fn complete_gzip_members_are_accepted() {
        for len in SIZES {
            let input = sample(len, false);
            let packed = complete_member(&input);
            assert!(Encoding::Gzip.decompress(&packed, len).unwrap() == input);
        }
    }

    #[test]
    fn gzip_header_fields_are_skipped() {
        let input = b"hello, header".to_vec();
        let plain = complete_member(&input);
        let mut header = vec![
            0x1f,
            0x8b,
            8,
            FEXTRA | FNAME | FCOMMENT | FHCRC,
            0,
            0,
            0,
            0,
            0,
            3,
        ];
        header.extend_from_slice(&[3, 0, b'x', b'y', b'z']);
        header.extend_from_slice(b"name\0comment\0");
        let crc = crc32fast::hash(&header) as u16;
        header.extend_from_slice(&crc.to_le_bytes());
        header.extend_from_slice(&plain[GZIP_HEADER.len()..]);
        assert_eq!(Encoding::Gzip.decompress(&header, 100).unwrap(), input);
        let last = header.len() - 1;
        header[last] ^= 1; // ISIZE now wrong
        assert_eq!(
            Encoding::Gzip.decompress(&header, 100),
            Err(ProtocolError::CorruptGzip("length mismatch".into()))
        );
    }

    #[test]
    fn gzip_bad_header_crc() {
        // The right header crc is the low half of crc32 of these ten bytes.
        let mut packed = vec![0x1f, 0x8b, 8, FHCRC, 0, 0, 0, 0, 0, 3];
        let wrong = (crc32fast::hash(&packed) as u16) ^ 1;
        packed.extend_from_slice(&wrong.to_le_bytes());
        packed.extend_from_slice(&[0x03, 0x00]);
        assert_eq!(
            Encoding::Gzip.decompress(&packed, 10),
            Err(ProtocolError::CorruptGzip("header crc mismatch".into()))
        );
    }

    #[test]
    fn gzip_crc_mismatch() {
        let mut packed = complete_member(b"some data");
        let at = packed.len() - 8;
        packed[at] ^= 0xff;
        assert_eq!(
            Encoding::Gzip.decompress(&packed, 100),
            Err(ProtocolError::CorruptGzip("crc32 mismatch".into()))
        );
    }

    #[test]
    fn bombs_stop_at_max_out() {
        let zeros = vec![0u8; 1 << 20];
        for enc in [Encoding::Gzip, Encoding::Lzw] {
            let mut packed = Vec::new();
            enc.compress(&zeros, &mut packed);
            assert!(packed.len() < zeros.len() / 100, "{enc:?} is a bomb");
            for max in [0, 1, 1000, (1 << 20) - 1] {
                assert_eq!(
                    enc.decompress(&packed, max),
                    Err(ProtocolError::DecompressedTooLarge(max)),
                    "{enc:?} max {max}"
                );
            }
            assert_eq!(enc.decompress(&packed, 1 << 20).unwrap().len(), 1 << 20);
        }
    }

    #[test]
    fn cached_decoders_recover_after_corrupt_input() {
        let input = sample(20_000, false);
        for enc in [Encoding::Gzip, Encoding::Lzw] {
            let mut packed = Vec::new();
            enc.compress(&input, &mut packed);
            for cut in [packed.len() / 3, packed.len() / 2] {
                let mut broken = packed[..cut].to_vec();
                broken.extend_from_slice(&[0xff; 16]);
                let _ = enc.decompress(&broken, 20_000);
                let _ = enc.decompress(&packed, 100); // too large, mid-stream
                assert_eq!(enc.decompress(&packed, 20_000).unwrap(), input, "{enc:?}");
            }
        }
    }

    #[test]
    fn small_gzip_bodies_are_one_stored_block() {
        let mut packed = Vec::new();
        Encoding::Gzip.compress(b"abc", &mut packed);
        assert_eq!(hex::encode(&packed[10..]), "000300fcff616263000000ffff");
    }

    #[test]
    fn lzw_without_eof_code_is_accepted() {
        let input = sample(3000, false);
        // (Not IntoVec::encode: without finish() weezl 0.2.1 loops forever.)
        let mut encoder = weezl::encode::Encoder::new(BitOrder::Lsb, 8);
        let mut packed = vec![0u8; 2 * input.len()];
        let result = encoder.encode_bytes(&input, &mut packed);
        assert!(result.status.is_ok() && result.consumed_in == input.len());
        packed.truncate(result.consumed_out);
        // Flushing the encoder's last partial code needs finish(); without
        // it the stream ends a few symbols early. Whatever is there decodes.
        let back = Encoding::Lzw.decompress(&packed, 3000).unwrap();
        assert!(input.starts_with(&back) && back.len() > 2900);
        // A whole stream whose EOF code (and padding) is chopped off.
        let mut whole = Vec::new();
        Encoding::Lzw.compress(&input, &mut whole);
        let back = Encoding::Lzw
            .decompress(&whole[..whole.len() - 2], 3000)
            .unwrap();
        assert!(input.starts_with(&back) && back.len() > 2900);
    }

    #[test]
    fn corrupt_inputs_are_typed() {
        assert!(matches!(
            Encoding::Gzip.decompress(b"not gzip at all", 100),
            Err(ProtocolError::CorruptGzip(_))
        ));
        assert!(matches!(
            Encoding::Gzip.decompress(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff], 100),
            Err(ProtocolError::CorruptGzip(_))
        ));
        // Clear code (256), then code 300: past the table's next entry.
        let mut bits: u32 = 256 | (300 << 9);
        let mut lzw = Vec::new();
        for _ in 0..3 {
            lzw.push(bits as u8);
            bits >>= 8;
        }
        assert!(matches!(
            Encoding::Lzw.decompress(&lzw, 100),
            Err(ProtocolError::CorruptLzw(_))
        ));
    }
}
