//! The bytes waiting to go out. Small frames are copied in; the data of a
//! large plain frame is *lent*: the queue keeps a reference to the sender's
//! own buffer (a Python `bytes`) and the writer sends it from there with
//! `sendmsg`, beside the copied bytes. For bulk transfers the copy into the
//! queue was half the posting thread's CPU; the system calls stay as large
//! and as few as before.

use std::fmt;
use std::io;
use std::os::fd::RawFd;

use crate::codec::{encode_frame, plain_frame_head, Encoding, Kind, Scratch, PLAIN_FRAME_END};

/// Data at least this long is lent rather than copied, when its sender
/// can lend it: below this, copying costs less than the bookkeeping. POSTs
/// between two processes ran 1.5 - 1.8x as fast copied at 2-4 KiB, even at
/// 8 KiB, and 1.6x as fast lent at 16 KiB.
pub const LEND_MIN: usize = 16 * 1024;

/// Makes references that keep some bytes alive and unchanged.
pub trait Lender {
    fn lend(&self) -> Box<dyn Send>;
}

/// A message's data as a sender hands it to the writer.
#[derive(Clone, Copy)]
pub struct Data<'a> {
    bytes: &'a [u8],
    lender: Option<&'a dyn Lender>,
}

impl<'a> Data<'a> {
    /// Data the writer copies if it queues it.
    pub fn copied(bytes: &'a [u8]) -> Self {
        Data {
            bytes,
            lender: None,
        }
    }

    /// Data the writer may keep a reference to instead of copying it.
    ///
    /// # Safety
    /// Every box `lender.lend()` returns must keep `bytes` valid and
    /// unchanged for as long as the box lives, on any thread.
    pub unsafe fn lent(bytes: &'a [u8], lender: &'a dyn Lender) -> Self {
        Data {
            bytes,
            lender: Some(lender),
        }
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl<'a> From<&'a [u8]> for Data<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Data::copied(bytes)
    }
}

impl fmt::Debug for Data<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.lender.is_some() {
            "lendable"
        } else {
            "copied"
        };
        write!(f, "Data({} bytes, {how})", self.bytes.len())
    }
}

/// Lent data, sent just before `copied[at..]`.
struct Lent {
    at: usize,
    ptr: *const u8,
    len: usize,
    _owner: Box<dyn Send>,
}

// SAFETY: the bytes behind `ptr` are immutable while `_owner` lives (the
// promise of `Data::lent`), and `_owner` itself is Send.
unsafe impl Send for Lent {}

impl Lent {
    fn bytes(&self) -> &[u8] {
        // SAFETY: see `Data::lent`: valid and unchanged while we own `_owner`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

#[derive(Default)]
pub(super) struct Queue {
    copied: Vec<u8>,
    lent: Vec<Lent>,
    lent_bytes: usize,
}

impl Queue {
    /// A queue that copies into `buf` (emptied first).
    pub(super) fn with_buffer(mut buf: Vec<u8>) -> Self {
        buf.clear();
        Queue {
            copied: buf,
            ..Queue::default()
        }
    }

    /// Gives back the copy buffer for reuse, dropping the lent references.
    pub(super) fn into_buffer(self) -> Vec<u8> {
        self.copied
    }

    pub(super) fn len(&self) -> usize {
        self.copied.len() + self.lent_bytes
    }

    /// A lent frame always has copied bytes around it, so no copied bytes
    /// means nothing at all.
    pub(super) fn is_empty(&self) -> bool {
        self.copied.is_empty()
    }

    pub(super) fn capacity(&self) -> usize {
        self.copied.capacity()
    }

    /// Appends one message frame, lending its data when it is large, plain
    /// and lendable.
    pub(super) fn push_msg(
        &mut self,
        kind: Kind,
        opaque: u64,
        id: u64,
        data: Data<'_>,
        encodings: &[Encoding],
        scratch: &mut Scratch,
    ) {
        let bytes = data.bytes;
        match data.lender {
            Some(lender) if bytes.len() >= LEND_MIN && encodings.is_empty() => {
                let head = plain_frame_head(kind, opaque, id, bytes.len());
                self.copied.extend_from_slice(head.as_slice());
                self.lent.push(Lent {
                    at: self.copied.len(),
                    ptr: bytes.as_ptr(),
                    len: bytes.len(),
                    _owner: lender.lend(),
                });
                self.lent_bytes += bytes.len();
                self.copied.push(PLAIN_FRAME_END);
            }
            _ => encode_frame(
                &mut self.copied,
                kind,
                opaque,
                id,
                bytes,
                encodings,
                scratch,
            ),
        }
    }

    /// Where whole frames other than messages are appended.
    pub(super) fn copied_mut(&mut self) -> &mut Vec<u8> {
        &mut self.copied
    }

    /// `other` goes after what this holds.
    pub(super) fn append(&mut self, other: Queue) {
        let shift = self.copied.len();
        self.copied.extend_from_slice(&other.copied);
        self.lent_bytes += other.lent_bytes;
        self.lent.extend(other.lent.into_iter().map(|mut l| {
            l.at += shift;
            l
        }));
    }

    /// What is left after the first `sent` bytes, copied (the rare path of a
    /// partial non-blocking write: it keeps no lent references).
    pub(super) fn unsent(&self, sent: usize) -> Queue {
        let mut rest = Vec::with_capacity(self.len().saturating_sub(sent));
        let mut skip = sent;
        self.for_each_piece(|piece| {
            if skip >= piece.len() {
                skip -= piece.len();
            } else {
                rest.extend_from_slice(&piece[skip..]);
                skip = 0;
            }
            true
        });
        Queue {
            copied: rest,
            ..Queue::default()
        }
    }

    /// The queue's bytes in order, as slices, until `f` returns false.
    fn for_each_piece<'s>(&'s self, mut f: impl FnMut(&'s [u8]) -> bool) {
        let mut from = 0;
        for l in &self.lent {
            if !f(&self.copied[from..l.at]) || !f(l.bytes()) {
                return;
            }
            from = l.at;
        }
        f(&self.copied[from..]);
    }

    /// Hands every byte, in order, to `put` (a TLS session encrypts them);
    /// the slices stay valid while the queue is borrowed.
    pub(super) fn pieces<'s>(&'s self, put: &mut dyn FnMut(&'s [u8])) {
        self.for_each_piece(|p| {
            if !p.is_empty() {
                put(p);
            }
            true
        });
    }

    /// Sends everything, or (`blocking` false) up to the first EAGAIN.
    /// Returns the bytes sent.
    pub(super) fn send(&self, fd: RawFd, blocking: bool) -> io::Result<usize> {
        let flags = libc::MSG_NOSIGNAL | if blocking { 0 } else { libc::MSG_DONTWAIT };
        let total = self.len();
        let mut sent = 0;
        while sent < total {
            let result = if self.lent.is_empty() {
                send_slice(fd, &self.copied[sent..], flags)
            } else {
                self.send_pieces(fd, sent, flags)
            };
            match result {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !blocking => break,
                // Someone made the fd non-blocking: uvloop does, for the
                // socket its loop reads. Block in poll() instead.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(fd)?,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }

    /// One `sendmsg` of the pieces after the first `sent` bytes.
    fn send_pieces(&self, fd: RawFd, sent: usize, flags: libc::c_int) -> io::Result<usize> {
        const MAX_IOV: usize = 64;
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut iov = [empty; MAX_IOV];
        let mut count = 0;
        let mut skip = sent;
        self.for_each_piece(|piece| {
            if skip >= piece.len() {
                skip -= piece.len();
                return true;
            }
            let rest = &piece[skip..];
            skip = 0;
            iov[count] = libc::iovec {
                iov_base: rest.as_ptr().cast_mut().cast(),
                iov_len: rest.len(),
            };
            count += 1;
            count < MAX_IOV
        });
        // SAFETY: an all-zero msghdr is valid (no address, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = count as _;
        // SAFETY: the iovecs point into slices borrowed from self for this
        // call; the kernel only reads them.
        let n = unsafe { libc::sendmsg(fd, &msg, flags) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// Blocks until `fd` can take more (or has failed: the send says how).
fn wait_writable(fd: RawFd) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one live pollfd for the duration of the call.
    if unsafe { libc::poll(&mut p, 1, -1) } < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

fn send_slice(fd: RawFd, data: &[u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: the caller's socket fd; pointer and length from a live slice.
    let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::codec::plain_frame;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    /// Lends bytes kept alive by an `Arc`, whose count shows the references.
    pub(in crate::writer) struct ArcLender(pub(in crate::writer) Arc<Vec<u8>>);

    impl Lender for ArcLender {
        fn lend(&self) -> Box<dyn Send> {
            Box::new(self.0.clone())
        }
    }

    /// A queue mixing copied and lent frames, and the bytes it must send.
    fn mixed() -> (Queue, Vec<u8>, Arc<Vec<u8>>) {
        let big: Arc<Vec<u8>> = Arc::new((0..LEND_MIN + 5).map(|i| i as u8).collect());
        let lender = ArcLender(big.clone());
        let mut q = Queue::default();
        let mut want = Vec::new();
        let mut scratch = Scratch::default();
        for (i, data) in [&b"small"[..], &big, &big, &b"x"[..], &big]
            .iter()
            .enumerate()
        {
            // SAFETY: the Arc keeps the Vec alive; nothing mutates it.
            let d = unsafe { Data::lent(data, &lender) };
            q.push_msg(Kind::Post, 7, 100 + i as u64, d, &[], &mut scratch);
            want.extend(plain_frame(Kind::Post, 7, 100 + i as u64, data));
        }
        (q, want, big)
    }

    #[test]
    fn lends_large_data_and_sends_the_same_bytes() {
        let (q, want, big) = mixed();
        assert_eq!(q.lent.len(), 3);
        assert_eq!(Arc::strong_count(&big), 4); // three frames hold it
        assert_eq!(q.len(), want.len());
        let (a, mut b) = UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        assert_eq!(q.send(a.as_raw_fd(), true).unwrap(), want.len());
        drop(a);
        assert!(reader.join().unwrap() == want);
        drop(q);
        assert_eq!(Arc::strong_count(&big), 1); // references dropped with it
    }

    #[test]
    fn a_blocking_send_waits_out_a_full_socket_someone_made_non_blocking() {
        // Far more than the socket holds, so that the sender outruns the
        // reader and meets EAGAIN (if not at the first send, later).
        let (mut q, mut want, _big) = mixed();
        let mut scratch = Scratch::default();
        let chunk = vec![3u8; 1 << 20];
        for i in 0..16 {
            q.push_msg(
                Kind::Post,
                7,
                200 + i,
                Data::copied(&chunk),
                &[],
                &mut scratch,
            );
            want.extend(plain_frame(Kind::Post, 7, 200 + i, &chunk));
        }
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap(); // as uvloop does to what it watches
                                          // Full first, so that the send meets EAGAIN at once.
        let mut filler = 0;
        while let Ok(n) = std::io::Write::write(&mut a, &[0u8; 4096]) {
            filler += n;
        }
        let sending = std::thread::spawn(move || {
            let sent = q.send(a.as_raw_fd(), true);
            drop(a);
            sent.unwrap()
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(sending.join().unwrap(), want.len());
        assert!(got[filler..] == want[..]);
    }

    #[test]
    fn unsent_and_append_keep_the_order() {
        let (q, want, _big) = mixed();
        for cut in [
            0,
            3,
            30,
            LEND_MIN,
            LEND_MIN + 40,
            want.len() - 1,
            want.len(),
        ] {
            let mut rest = q.unsent(cut);
            assert!(rest.copied == want[cut..], "cut at {cut}");
            let (more, more_want, _) = mixed();
            rest.append(more);
            let mut got = Vec::new();
            rest.for_each_piece(|p| {
                got.extend_from_slice(p);
                true
            });
            assert!(got[..want.len() - cut] == want[cut..], "cut at {cut}");
            assert!(got[want.len() - cut..] == more_want[..], "cut at {cut}");
        }
    }

    #[test]
    fn copies_when_not_lendable_small_or_compressed() {
        let big = vec![1u8; LEND_MIN];
        let lender = ArcLender(Arc::new(Vec::new()));
        let mut q = Queue::default();
        let mut scratch = Scratch::default();
        q.push_msg(Kind::Post, 1, 100, Data::copied(&big), &[], &mut scratch);
        // SAFETY: `big` outlives the queue and is not mutated.
        let small = unsafe { Data::lent(&big[..LEND_MIN - 1], &lender) };
        q.push_msg(Kind::Post, 1, 100, small, &[], &mut scratch);
        let gzip = [Encoding::Gzip];
        // SAFETY: as above.
        let packed = unsafe { Data::lent(&big, &lender) };
        q.push_msg(Kind::Post, 1, 100, packed, &gzip, &mut scratch);
        assert!(q.lent.is_empty());
        assert_eq!(q.len(), q.copied.len());
    }
}
