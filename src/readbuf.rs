//! The reader's receive buffer. It is read into through its spare capacity,
//! so pages the kernel never writes are never touched: a transport can keep a
//! large buffer (few system calls for large frames) while an idle one costs
//! only the pages its traffic used.

use std::io;
use std::os::fd::RawFd;

pub struct ReadBuf {
    /// `buf[start..]` holds received bytes not yet consumed.
    buf: Vec<u8>,
    start: usize,
    initial: usize,
    max: usize,
    /// How much of the allocation is known initialised (for `fill_via`,
    /// whose reader writes into a `&mut [u8]`): zeroed once, then reused.
    init: usize,
}

impl ReadBuf {
    /// `initial` bytes of capacity, growing up to `max` for one large frame.
    pub fn new(initial: usize, max: usize) -> Self {
        ReadBuf {
            buf: Vec::with_capacity(initial),
            start: 0,
            initial,
            max: max.max(initial),
            init: 0,
        }
    }

    /// The bytes received and not yet consumed.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Where `data()` starts within `whole()`.
    pub fn offset(&self) -> usize {
        self.start
    }

    /// Everything in the buffer, consumed or not (frames refer into it by
    /// offsets until the next `fill`).
    pub fn whole(&self) -> &[u8] {
        &self.buf
    }

    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
    }

    /// Reads once from `fd` into the free space, making room first.
    /// `Ok(0)` is the end of the connection.
    pub fn fill(&mut self, fd: RawFd) -> io::Result<usize> {
        self.fill_with(fd, 0)
    }

    /// `fill` without blocking: `WouldBlock` when nothing is waiting.
    pub fn fill_now(&mut self, fd: RawFd) -> io::Result<usize> {
        self.fill_with(fd, libc::MSG_DONTWAIT)
    }

    fn fill_with(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        self.make_room();
        let n = self.recv_spare(fd, usize::MAX, flags)?;
        // SAFETY: recv initialised exactly these n bytes of spare capacity.
        unsafe { self.buf.set_len(self.buf.len() + n) };
        Ok(n)
    }

    /// Free space at the end, without making room.
    pub fn room(&self) -> usize {
        self.buf.capacity() - self.buf.len()
    }

    /// Reads once through `read` (a TLS session's plaintext) into at most
    /// `chunk` bytes of the free space, making room first.
    pub fn fill_via(
        &mut self,
        chunk: usize,
        read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.make_room();
        let len = self.buf.len();
        let want = (self.buf.capacity() - len).min(chunk);
        if self.init < len + want {
            let from = self.init.saturating_sub(len);
            for b in &mut self.buf.spare_capacity_mut()[from..want] {
                b.write(0);
            }
            self.init = len + want;
        }
        // SAFETY: these `want` bytes past len lie within the capacity and
        // are initialised (just above, or by an earlier fill of this
        // allocation).
        let dst = unsafe { std::slice::from_raw_parts_mut(self.buf.as_mut_ptr().add(len), want) };
        let n = read(dst)?.min(want);
        // SAFETY: the reader wrote (and the bytes were initialised anyway).
        unsafe { self.buf.set_len(len + n) };
        Ok(n)
    }

    /// Shows what the socket holds without taking it off the socket
    /// (`MSG_PEEK`, non-blocking), for a caller that wants only some frames
    /// at its front; the rest stays there for whoever reads next. Only while
    /// nothing is buffered (a buffered partial frame continues on the
    /// socket). The bytes are not kept: the next read overwrites them.
    pub fn peek(&mut self, fd: RawFd) -> io::Result<&[u8]> {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        debug_assert!(self.data().is_empty());
        let n = self.recv_spare(fd, usize::MAX, libc::MSG_PEEK | libc::MSG_DONTWAIT)?;
        let spare = self.buf.spare_capacity_mut();
        // SAFETY: recv initialised the first n bytes of spare capacity, and
        // the slice borrows self, so no read can overwrite them meanwhile.
        Ok(unsafe { std::slice::from_raw_parts(spare.as_ptr().cast::<u8>(), n) })
    }

    /// Takes `n` bytes that `peek` showed off the socket, dropping them.
    pub fn skip(&mut self, fd: RawFd, n: usize) -> io::Result<usize> {
        self.recv_spare(fd, n, libc::MSG_DONTWAIT)
    }

    /// One recv of at most `limit` bytes into the spare capacity; retried
    /// when interrupted. The caller decides whether the bytes are kept.
    fn recv_spare(&mut self, fd: RawFd, limit: usize, flags: libc::c_int) -> io::Result<usize> {
        let spare = self.buf.spare_capacity_mut();
        let len = spare.len().min(limit);
        loop {
            // SAFETY: recv writes at most len bytes into memory this Vec
            // owns and has not initialised.
            let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), len, flags) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// After the frames of a read are handled: forget consumed bytes, and
    /// when traffic has gone quiet (a read smaller than the initial size)
    /// give back what a burst of large frames grew.
    pub fn settle(&mut self, last_read: usize) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > self.initial && last_read < self.initial {
                self.buf = Vec::with_capacity(self.initial);
                self.init = 0;
            }
        }
    }

    fn make_room(&mut self) {
        let cap = self.buf.capacity();
        // Compact before the free tail gets small: many small reads of a
        // large frame cost more than one copy of its start.
        if self.start > 0 && cap - self.buf.len() < cap / 4 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.len() == self.buf.capacity() {
            // One frame larger than the buffer; the decoder has already
            // checked its length against frame.max.
            // Never clamp(): it panics should cap + 1 exceed the bound.
            let want = (cap * 2).min(self.max + 64).max(cap + 1);
            self.buf.reserve_exact(want - self.buf.len());
            // A new allocation holds only what was copied over.
            self.init = self.buf.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn reads_compacts_grows_and_shrinks_back() {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        let mut rb = ReadBuf::new(8, 64);
        tx.write_all(b"abcdefgh").unwrap();
        assert_eq!(rb.fill(rx.as_raw_fd()).unwrap(), 8);
        assert_eq!(rb.data(), b"abcdefgh");
        rb.consume(6);
        assert_eq!((rb.offset(), rb.data()), (6, &b"gh"[..]));
        tx.write_all(b"ijklmnopqrstuvwx").unwrap();
        rb.fill(rx.as_raw_fd()).unwrap(); // compacts, then reads into the rest
        assert_eq!(rb.offset(), 0);
        assert!(rb.data().starts_with(b"ghij"));
        while rb.data().len() < 18 {
            rb.fill(rx.as_raw_fd()).unwrap(); // grows: one "frame" of 18 bytes
        }
        assert_eq!(rb.data(), b"ghijklmnopqrstuvwx");
        assert!(rb.buf.capacity() > 8);
        rb.consume(18);
        rb.settle(3);
        assert_eq!((rb.buf.capacity(), rb.data().len()), (8, 0));
        drop(tx);
        assert_eq!(rb.fill(rx.as_raw_fd()).unwrap(), 0);
    }

    #[test]
    fn peek_shows_without_taking_and_skip_takes() {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        let mut rb = ReadBuf::new(8, 64);
        assert_eq!(
            rb.peek(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        tx.write_all(b"abcdef").unwrap();
        assert_eq!(rb.peek(rx.as_raw_fd()).unwrap(), b"abcdef");
        assert_eq!(rb.peek(rx.as_raw_fd()).unwrap(), b"abcdef"); // still there
        assert_eq!(rb.skip(rx.as_raw_fd(), 4).unwrap(), 4);
        assert!(rb.data().is_empty()); // skipped bytes are not kept
        assert_eq!(rb.fill(rx.as_raw_fd()).unwrap(), 2);
        assert_eq!(rb.data(), b"ef");
    }

    #[test]
    fn steady_large_reads_keep_the_grown_buffer() {
        let mut rb = ReadBuf::new(8, 64);
        rb.buf.reserve_exact(32);
        let grown = rb.buf.capacity();
        rb.settle(32);
        assert_eq!(rb.buf.capacity(), grown);
    }
}
