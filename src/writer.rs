//! The batching writer: every frame a transport sends is encoded into one
//! shared queue, and whatever is queued goes out in one system call.
//!
//! Who does the system call is the point of this module:
//! * a caller that will wait anyway (a REQUEST) writes itself, without
//!   blocking (`MSG_DONTWAIT`), saving a thread hand-off on the round trip;
//!   unless the reader is dispatching RESPONSEs (no handler runs, so it is
//!   done within microseconds): then the REQUEST goes out in the reader's
//!   write at the batch's end. With many requesters this merges their
//!   writes (16 threads: ~3 requests per write instead of ~1.4), and the
//!   peer reads them in fewer, larger reads;
//! * the reader thread never writes while it dispatches a batch: what its
//!   handlers send is "corked" and written once after the batch;
//! * everything else wakes the writer thread, which blocks in `send` when
//!   the peer is slow, and meanwhile more frames pile up behind it, so a busy
//!   sender gets large writes for free. The writer thread also keeps the
//!   flush period (batched frames wait at most that long) and heartbeats.
//!
//! Large message data is not copied into the queue but lent by its sender
//! (see `queue`), and sent from where it lies in the same system call.
//!
//! Application senders block (backpressure) when `max_pending` bytes are
//! queued; the reader thread never blocks here, so two peers cannot
//! deadlock writing to each other.

mod queue;

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sync::{Condvar, Mutex, MutexGuard};

use crate::builtin::{encode_heartbeat, HEARTBEAT_ID};
use crate::codec::{encode_finish, Encoding, Kind, Scratch};
use crate::errors::{Error, Result};
use crate::io::Link;
use crate::stats::Stats;
use queue::Queue;
pub use queue::{Data, Lender, LEND_MIN};

/// One frame to queue.
#[derive(Clone, Copy, Debug)]
pub enum Out<'a> {
    Msg {
        kind: Kind,
        opaque: u64,
        id: u64,
        data: Data<'a>,
        compress: bool,
    },
    Finish {
        opaque: u64,
    },
}

/// What a push asks of the writer besides queueing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    /// Due when `batchsize` frames are queued or the flush period ends.
    Batch,
    /// Due now; the writer thread sends it.
    Flush,
    /// Due now, and this caller sends it itself if the socket is free.
    Direct,
}

thread_local! {
    /// The outbox whose reader thread this is, while it dispatches a batch.
    static CORKED: Cell<usize> = const { Cell::new(0) };
    /// The outbox whose event loop's sends this thread is making
    /// (`Outbox::deferred`).
    static DEFERRING: Cell<usize> = const { Cell::new(0) };
    /// Set on every reader thread: it must never block on backpressure.
    static NEVER_BLOCK: Cell<bool> = const { Cell::new(false) };
}

struct Heartbeat {
    period: Duration,
    next: Instant,
    count: u64,
}

struct State {
    buf: Queue,
    spare: Vec<u8>,
    frames: usize,
    due: bool,
    writing: bool,
    /// When the oldest not-yet-due frame was queued (for the flush period).
    oldest: Option<Instant>,
    closed: Option<String>,
    stop_thread: bool,
    room_waiters: usize,
    encodings: Vec<Encoding>,
    scratch: Scratch,
    flush_period: Option<Duration>,
    heartbeat: Option<Heartbeat>,
    post_opaque: u64,
    /// The connection; a writer clones it for the duration of a write, and
    /// closing takes it out, so the fd closes once the last write is done.
    sock: Option<Arc<Link>>,
    /// Nothing is written until `open()`: a TLS link's handshake runs first.
    held: bool,
    /// The reader left rustls with records to send (a key update, an alert).
    kicked: bool,
    /// The reader is dispatching a batch that runs no handler, and will
    /// write what is due when it ends: a REQUEST queued meanwhile rides
    /// along in that write instead of costing its own system call.
    reader_flushes_soon: bool,
    /// An event loop's pass has sent (`deferred`) and its call of
    /// `flush_deferred` is due: the pass's later frames wait for it.
    loop_flush: bool,
    /// `deferred` must have that call scheduled.
    loop_flush_asked: bool,
}

/// `state` is a leaf lock, taken with or without the GIL: see "Locks and
/// the GIL" in transport.rs.
pub struct Outbox {
    state: Mutex<State>,
    writer_cv: Condvar,
    room_cv: Condvar,
    stats: Arc<Stats>,
    batchsize: usize,
    max_pending: usize,
}

/// Largest buffer kept once the queue is idle. While senders keep it busy,
/// grown buffers are reused (no regrowing, no fresh pages per write); a
/// bigger one is freed when the queue empties, so an idle transport stays
/// small.
const KEEP_CAPACITY: usize = 256 * 1024;

impl Outbox {
    pub fn new(
        sock: Arc<Link>,
        stats: Arc<Stats>,
        batchsize: usize,
        max_pending: usize,
        flush_period: Option<Duration>,
        gzip_level: u32,
        post_opaque: u64,
    ) -> Self {
        let tls = sock.is_tls();
        Outbox {
            state: Mutex::new(State {
                buf: Queue::default(),
                spare: Vec::new(),
                frames: 0,
                due: false,
                writing: false,
                oldest: None,
                closed: None,
                stop_thread: false,
                room_waiters: 0,
                encodings: Vec::new(),
                scratch: Scratch::with_gzip_level(gzip_level),
                flush_period,
                heartbeat: None,
                post_opaque,
                reader_flushes_soon: false,
                loop_flush: false,
                loop_flush_asked: false,
                sock: Some(sock),
                held: tls,
                kicked: false,
            }),
            writer_cv: Condvar::new(),
            room_cv: Condvar::new(),
            stats,
            batchsize,
            max_pending,
        }
    }

    /// Lets queued frames out (after a TLS handshake).
    pub fn open(&self) {
        let mut g = self.state.lock();
        g.held = false;
        g.due |= !g.buf.is_empty();
        drop(g);
        self.writer_cv.notify_one();
    }

    /// Has the writer thread send what rustls has queued by itself.
    pub fn kick(&self) {
        self.state.lock().kicked = true;
        self.writer_cv.notify_one();
    }

    /// Encodings to apply to what we send from now on (the peer's tags).
    pub fn set_encodings(&self, encodings: Vec<Encoding>) {
        self.state.lock().encodings = encodings;
    }

    pub fn set_flush_period(&self, period: Option<Duration>) {
        self.state.lock().flush_period = period;
        self.writer_cv.notify_one();
    }

    pub fn set_heartbeat(&self, period: Option<Duration>) {
        let mut g = self.state.lock();
        let count = g.heartbeat.as_ref().map_or(0, |h| h.count);
        g.heartbeat = period.map(|p| Heartbeat {
            period: p,
            next: Instant::now() + p,
            count,
        });
        drop(g);
        self.writer_cv.notify_one();
    }

    /// Queues one frame. `Ok(false)`: the queue is full and this caller may
    /// block; call `wait_room` (without the GIL) and push again.
    pub fn push(&self, out: Out<'_>, urgency: Urgency) -> Result<bool> {
        let mut g = self.state.lock();
        if let Some(why) = &g.closed {
            return Err(Error::Closed(why.clone()));
        }
        // A FINISH always gets in: it is a few bytes, one per stream (so
        // bounded by streams.max), and dropping it would leave the peer's
        // side of the stream open for good.
        let finish = matches!(out, Out::Finish { .. });
        if g.buf.len() >= self.max_pending && !NEVER_BLOCK.get() && !finish {
            // The caller waits for room: what is queued must be going out,
            // deferred or batched frames included.
            if !g.due {
                g.due = true;
                drop(g);
                self.writer_cv.notify_one();
            }
            return Ok(false);
        }
        let was_empty = g.buf.is_empty();
        encode_into(&mut g, out);
        g.frames += 1;
        if urgency != Urgency::Batch || g.frames >= self.batchsize {
            g.due = true;
        } else if g.oldest.is_none() {
            g.oldest = Some(Instant::now());
        }
        if self.is_corked_here() {
            return Ok(true); // the reader flushes once after its batch
        }
        if DEFERRING.get() == self as *const Outbox as usize {
            if g.loop_flush {
                return Ok(true); // the pass's flush takes it
            }
            g.loop_flush = true;
            g.loop_flush_asked = true;
            if g.due && !g.writing {
                drop(self.write_out(g, false));
            }
            return Ok(true);
        }
        if g.due && !g.writing {
            if urgency == Urgency::Direct && g.reader_flushes_soon {
                return Ok(true);
            }
            if urgency == Urgency::Direct {
                drop(self.write_out(g, false));
            } else {
                drop(g);
                self.writer_cv.notify_one();
            }
        } else if was_empty && g.flush_period.is_some() && !g.due {
            drop(g);
            self.writer_cv.notify_one(); // it must learn the new deadline
        }
        Ok(true)
    }

    /// Makes whatever is queued due now; the writer thread sends it.
    pub fn flush(&self) {
        let mut g = self.state.lock();
        if g.buf.is_empty() {
            return;
        }
        g.due = true;
        if !g.writing {
            drop(g);
            self.writer_cv.notify_one();
        }
    }

    /// Blocks until the queue has room again or the outbox is closed.
    pub fn wait_room(&self, deadline: Option<Instant>) {
        let mut g = self.state.lock();
        g.room_waiters += 1;
        while g.buf.len() >= self.max_pending && g.closed.is_none() {
            match deadline {
                Some(d) => {
                    if self.room_cv.wait_until(&mut g, d).timed_out() {
                        break;
                    }
                }
                None => self.room_cv.wait(&mut g),
            }
        }
        g.room_waiters -= 1;
    }

    /// Runs `f` with this thread's sends to this outbox corked, then writes
    /// what became due in one go.
    /// `quick`: the batch runs no application code, so other threads' sends
    /// may wait for its end too.
    pub fn corked<R>(&self, quick: bool, f: impl FnOnce() -> R) -> R {
        let me = self as *const Outbox as usize;
        let outer = CORKED.replace(me);
        if quick {
            self.state.lock().reader_flushes_soon = true;
        }
        let r = f();
        CORKED.set(outer);
        let mut g = self.state.lock();
        g.reader_flushes_soon = false;
        self.send_held(g);
        r
    }

    /// Writes what a corked batch or a loop pass held back: itself when it
    /// is due and nobody is writing, else by the writer thread (which also
    /// keeps the flush period of frames not yet due).
    fn send_held(&self, g: MutexGuard<'_, State>) {
        if g.due && !g.writing && !g.buf.is_empty() {
            drop(self.write_out(g, false));
        } else if !g.buf.is_empty() {
            drop(g);
            self.writer_cv.notify_one();
        }
    }

    /// Runs `f` (an event loop's sends). The first frame of a loop pass
    /// goes out as usual, written by this thread (no wait for the writer
    /// thread: a request's round trip starts now); later ones are queued
    /// but neither written nor handed to the writer thread until the loop
    /// calls `flush_deferred` at the pass's end, so a pass's posts,
    /// requests and replies share one system call. Returns whether the
    /// caller must schedule that call (the pass has none scheduled yet).
    pub fn deferred<R>(&self, f: impl FnOnce() -> R) -> (R, bool) {
        let me = self as *const Outbox as usize;
        let outer = DEFERRING.replace(me);
        let r = f();
        DEFERRING.set(outer);
        if outer == me || self.is_corked_here() {
            return (r, false); // the enclosing deferral or batch ends it
        }
        let mut g = self.state.lock();
        (r, std::mem::take(&mut g.loop_flush_asked))
    }

    /// The loop's pass is over: writes what `deferred` queued, as the end
    /// of a corked batch does.
    pub fn flush_deferred(&self) {
        let mut g = self.state.lock();
        g.loop_flush = false;
        self.send_held(g);
    }

    /// Whether this thread is the reader dispatching a batch for this outbox.
    fn is_corked_here(&self) -> bool {
        CORKED.get() == self as *const Outbox as usize
    }

    /// Marks the calling thread as a reader thread: it never blocks here.
    pub fn mark_reader_thread() {
        NEVER_BLOCK.set(true);
    }

    /// Stops accepting frames and waits up to `linger` for the queued ones
    /// to reach the socket. Returns whether everything went out.
    pub fn close(&self, reason: &str, linger: Duration) -> bool {
        let deadline = Instant::now() + linger;
        let mut g = self.state.lock();
        if g.closed.is_none() {
            g.closed = Some(reason.to_string());
        }
        g.due = true;
        self.writer_cv.notify_one();
        // Held (a TLS handshake never finished): nothing can go out.
        while (!g.buf.is_empty() || g.writing) && !g.stop_thread && !g.held {
            if self.room_cv.wait_until(&mut g, deadline).timed_out() {
                break;
            }
        }
        let flushed = g.buf.is_empty() && !g.writing;
        self.stop(g);
        flushed
    }

    /// Fails the outbox at once (the connection is gone): no linger.
    pub fn abort(&self, reason: &str) {
        let mut g = self.state.lock();
        if g.closed.is_none() {
            g.closed = Some(reason.to_string());
        }
        self.stop(g);
    }

    /// Stops the writer thread and wakes every waiter; what the closed
    /// outbox held is dropped after the lock (lent frames hold Python
    /// objects).
    fn stop(&self, mut g: MutexGuard<'_, State>) {
        let released = release(&mut g);
        self.writer_cv.notify_all();
        self.room_cv.notify_all();
        drop(g);
        drop(released);
    }

    /// The writer thread: blocking writes, flush period, heartbeats.
    pub fn run_writer(self: Arc<Self>) {
        let mut g = self.state.lock();
        while !g.stop_thread {
            let now = Instant::now();
            if let Some(hb) = g.heartbeat.as_mut().filter(|hb| now >= hb.next) {
                let count = hb.count;
                hb.count += 1;
                hb.next = now + hb.period;
                if g.closed.is_none() {
                    let data = encode_heartbeat(count);
                    let opaque = g.post_opaque;
                    let kind = Kind::Post;
                    let out = Out::Msg {
                        kind,
                        opaque,
                        id: HEARTBEAT_ID,
                        data: Data::copied(&data),
                        compress: true,
                    };
                    encode_into(&mut g, out);
                    g.due = true;
                    Stats::incr(&self.stats.n_tx);
                    Stats::incr(&self.stats.n_txpost);
                }
            }
            if let (Some(p), Some(o)) = (g.flush_period, g.oldest) {
                if now >= o + p {
                    g.due = true;
                }
            }
            let wanted = (g.due && !g.buf.is_empty()) || g.kicked;
            if wanted && !g.writing && !g.held {
                g = self.write_out(g, true);
                continue;
            }
            let flush_at = match (g.flush_period, g.oldest) {
                (Some(p), Some(o)) if !g.due => Some(o + p),
                _ => None,
            };
            let beat_at = g.heartbeat.as_ref().map(|h| h.next);
            match flush_at.into_iter().chain(beat_at).min() {
                Some(at) => {
                    self.writer_cv.wait_until(&mut g, at);
                }
                None => self.writer_cv.wait(&mut g),
            }
        }
    }

    /// Writes the queue out; the caller holds the lock and nobody is writing.
    /// `blocking` is for the writer thread; others hand a partial write over.
    fn write_out<'a>(
        &'a self,
        mut g: MutexGuard<'a, State>,
        blocking: bool,
    ) -> MutexGuard<'a, State> {
        if g.held {
            return g; // `open()` hands the queue to the writer thread
        }
        loop {
            g.kicked = false;
            let Some(sock) = g.sock.clone() else {
                break; // closed: `release` took the queue too
            };
            let fresh = Queue::with_buffer(std::mem::take(&mut g.spare));
            let data = std::mem::replace(&mut g.buf, fresh);
            g.frames = 0;
            g.due = false;
            g.oldest = None;
            g.writing = true;
            let (result, unsent, used, tls_backlog) = MutexGuard::unlocked(&mut g, || {
                let mut tls_backlog = false;
                let result = match &sock.tls {
                    None => data.send(sock.fd(), blocking),
                    Some(tls) => tls
                        .send(sock.fd(), &mut |put| data.pieces(put), blocking)
                        .map(|(n, all_sent)| {
                            tls_backlog = !all_sent;
                            n
                        }),
                };
                let unsent = match result {
                    Ok(n) if n < data.len() => Some(data.unsent(n)),
                    _ => None,
                };
                // Lent references are dropped here, outside the lock.
                let used = data.into_buffer();
                drop(sock);
                (result, unsent, used, tls_backlog)
            });
            g.writing = false;
            if tls_backlog {
                // A full socket holds back ciphertext already made: the
                // writer thread sends it (before anything queued after).
                g.kicked = true;
                self.writer_cv.notify_one();
            }
            match result {
                Ok(n) => {
                    Stats::add(&self.stats.n_txbyte, n as u64);
                    Stats::incr(&self.stats.n_flushes);
                    if let Some(mut unsent) = unsent {
                        if g.stop_thread {
                            // Closed meanwhile: nobody will send the rest.
                            recycle(&mut g, used);
                            MutexGuard::unlocked(&mut g, || drop(unsent));
                            break;
                        }
                        // Socket full: the unsent tail goes back in front of
                        // whatever was queued meanwhile.
                        unsent.append(std::mem::take(&mut g.buf));
                        g.buf = unsent;
                        recycle(&mut g, used);
                        g.due = true;
                        self.writer_cv.notify_one();
                        break;
                    }
                    recycle(&mut g, used);
                }
                Err(e) => {
                    let why = format!("write failed: {e}");
                    let lost = self.fail_write(&mut g, &why);
                    // Logging takes the GIL: never with the lock held.
                    MutexGuard::unlocked(&mut g, || {
                        drop(lost);
                        log::warn!("gofast: {why}");
                    });
                    break;
                }
            }
            if g.room_waiters > 0 || g.closed.is_some() {
                // Not under the lock: a waiter woken now would only block
                // on it (sync.rs's condvar wakes, it does not requeue).
                MutexGuard::unlocked(&mut g, || self.room_cv.notify_all());
                if g.writing {
                    break; // another sender took over meanwhile: one at a time
                }
            }
            if !g.due || g.buf.is_empty() {
                break;
            }
        }
        if g.closed.is_some() {
            self.room_cv.notify_all();
        }
        shrink_if_idle(&mut g);
        g
    }

    /// A write failed: the connection is unusable, and what is queued is
    /// lost with it. Returns the lost queue, for the caller to drop once
    /// the lock is released (it may hold lent Python objects).
    fn fail_write(&self, g: &mut State, why: &str) -> Queue {
        g.closed.get_or_insert_with(|| why.to_string());
        if let Some(sock) = &g.sock {
            let _ = sock.socket.shutdown();
        }
        std::mem::take(&mut g.buf)
    }
}

fn encode_into(g: &mut State, out: Out<'_>) {
    let st = &mut *g;
    match out {
        Out::Msg {
            kind,
            opaque,
            id,
            data,
            compress,
        } => {
            let encodings: &[Encoding] = if compress { &st.encodings } else { &[] };
            st.buf
                .push_msg(kind, opaque, id, data, encodings, &mut st.scratch);
        }
        Out::Finish { opaque } => encode_finish(st.buf.copied_mut(), opaque),
    }
}

/// What a closed outbox no longer needs: queued frames, buffers,
/// compressor state and its hold on the socket.
type Released = (Queue, Vec<u8>, Scratch, Option<Arc<Link>>);

/// Marks the writer thread to stop and takes out what it `Released`.
fn release(g: &mut State) -> Released {
    g.stop_thread = true;
    g.heartbeat = None;
    (
        std::mem::take(&mut g.buf),
        std::mem::take(&mut g.spare),
        std::mem::take(&mut g.scratch),
        g.sock.take(),
    )
}

fn recycle(g: &mut State, mut used: Vec<u8>) {
    used.clear();
    let busy = !g.buf.is_empty();
    if (busy || used.capacity() <= KEEP_CAPACITY) && used.capacity() > g.spare.capacity() {
        g.spare = used;
    }
}

/// Frees buffers a burst grew, once nothing is queued.
fn shrink_if_idle(g: &mut State) {
    if g.buf.is_empty() {
        if g.buf.capacity() > KEEP_CAPACITY {
            g.buf = Queue::default();
        }
        if g.spare.capacity() > KEEP_CAPACITY {
            g.spare = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::queue::tests::ArcLender;
    use super::*;
    use crate::codec::plain_frame;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::Ordering::Relaxed;

    /// An outbox writing into one end of a loopback connection (no writer
    /// thread: only callers that write themselves get bytes out), and the
    /// other end to read what it sent.
    fn outbox() -> (Arc<Outbox>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (theirs, _) = listener.accept().unwrap();
        let stats = Arc::new(Stats::default());
        let link = Arc::new(Link::plain(crate::io::Socket::Tcp(ours)));
        let outbox = Outbox::new(link, stats, 1, 1 << 20, None, 1, 1);
        (Arc::new(outbox), theirs)
    }

    fn request(opaque: u64) -> Out<'static> {
        Out::Msg {
            kind: Kind::Request,
            opaque,
            id: 100,
            data: Data::copied(b"ping"),
            compress: false,
        }
    }

    fn frame_len() -> usize {
        let mut buf = Vec::new();
        encode_into_plain(&mut buf, request(7));
        buf.len()
    }

    fn encode_into_plain(buf: &mut Vec<u8>, out: Out<'_>) {
        if let Out::Msg {
            kind,
            opaque,
            id,
            data,
            ..
        } = out
        {
            buf.extend(plain_frame(kind, opaque, id, data.bytes()));
        }
    }

    fn read_exactly(sock: &mut TcpStream, n: usize) -> Vec<u8> {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0; n];
        sock.read_exact(&mut buf).unwrap();
        buf
    }

    #[test]
    fn a_direct_push_is_written_by_its_caller() {
        let (outbox, mut peer) = outbox();
        assert!(outbox.push(request(7), Urgency::Direct).unwrap());
        let mut want = Vec::new();
        encode_into_plain(&mut want, request(7));
        assert_eq!(read_exactly(&mut peer, want.len()), want);
        assert_eq!(outbox.stats.n_flushes.load(Relaxed), 1);
    }

    #[test]
    fn a_request_queued_during_a_quick_reader_batch_goes_out_with_it() {
        let (outbox, mut peer) = outbox();
        let other = outbox.clone();
        outbox.corked(true, || {
            // Another thread's REQUEST while the reader dispatches responses:
            // queued, not written, because the batch's end will write it.
            std::thread::spawn(move || other.push(request(8), Urgency::Direct).unwrap())
                .join()
                .unwrap();
            assert_eq!(outbox.stats.n_flushes.load(Relaxed), 0);
            // What the reader's own dispatch sends is corked as always.
            outbox.push(request(9), Urgency::Direct).unwrap();
            assert_eq!(outbox.stats.n_flushes.load(Relaxed), 0);
        });
        read_exactly(&mut peer, 2 * frame_len());
        assert_eq!(
            outbox.stats.n_flushes.load(Relaxed),
            1,
            "one write for both"
        );
    }

    #[test]
    fn after_a_handler_batch_other_threads_write_at_once() {
        let (outbox, mut peer) = outbox();
        let other = outbox.clone();
        outbox.corked(false, || {
            // A handler may run for long: nobody waits for its end.
            std::thread::spawn(move || other.push(request(8), Urgency::Direct).unwrap())
                .join()
                .unwrap();
            assert_eq!(outbox.stats.n_flushes.load(Relaxed), 1);
        });
        read_exactly(&mut peer, frame_len());
    }

    #[test]
    fn a_loop_pass_writes_its_first_frame_at_once_and_the_rest_together() {
        let (outbox, mut peer) = outbox();
        let ((), schedule) = outbox.deferred(|| {
            outbox.push(request(7), Urgency::Flush).unwrap();
        });
        assert!(schedule, "the pass's flush must be scheduled");
        read_exactly(&mut peer, frame_len());
        assert_eq!(outbox.stats.n_flushes.load(Relaxed), 1);
        for opaque in 8..11 {
            let ((), schedule) = outbox.deferred(|| {
                outbox.push(request(opaque), Urgency::Direct).unwrap();
            });
            assert!(!schedule, "one flush per pass");
        }
        assert_eq!(outbox.stats.n_flushes.load(Relaxed), 1, "held for the pass");
        outbox.flush_deferred();
        read_exactly(&mut peer, 3 * frame_len());
        assert_eq!(
            outbox.stats.n_flushes.load(Relaxed),
            2,
            "one write for three"
        );
        // The next pass starts over.
        let ((), schedule) = outbox.deferred(|| {
            outbox.push(request(11), Urgency::Direct).unwrap();
        });
        assert!(schedule);
        read_exactly(&mut peer, frame_len());
    }

    #[test]
    fn a_deferral_inside_a_corked_batch_is_written_by_the_batch() {
        let (outbox, mut peer) = outbox();
        outbox.corked(false, || {
            let ((), schedule) = outbox.deferred(|| {
                outbox.push(request(7), Urgency::Direct).unwrap();
            });
            assert!(!schedule, "the batch's end writes it");
            assert_eq!(outbox.stats.n_flushes.load(Relaxed), 0);
        });
        read_exactly(&mut peer, frame_len());
        assert_eq!(outbox.stats.n_flushes.load(Relaxed), 1);
    }

    #[test]
    fn a_full_queue_makes_deferred_frames_due() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_theirs, _) = listener.accept().unwrap();
        let link = Arc::new(Link::plain(crate::io::Socket::Tcp(ours)));
        // Batched frames (not due) and room for one: the second push
        // finds the queue full.
        let outbox = Outbox::new(link, Arc::new(Stats::default()), 100, 1, None, 1, 1);
        let queued = outbox.deferred(|| outbox.push(request(7), Urgency::Batch).unwrap());
        assert_eq!(queued, (true, true));
        assert!(!outbox.state.lock().due);
        let (room, _) = outbox.deferred(|| outbox.push(request(8), Urgency::Batch).unwrap());
        assert!(!room, "the queue is full");
        assert!(
            outbox.state.lock().due,
            "a waiter for room needs the queue going out"
        );
    }

    #[test]
    fn a_full_queue_still_takes_a_streams_finish() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_theirs, _) = listener.accept().unwrap();
        let link = Arc::new(Link::plain(crate::io::Socket::Tcp(ours)));
        // Batched frames and room for one: the queue is full after it.
        let outbox = Outbox::new(link, Arc::new(Stats::default()), 100, 1, None, 1, 1);
        assert!(outbox.push(request(7), Urgency::Batch).unwrap());
        assert!(!outbox.push(request(8), Urgency::Batch).unwrap(), "full");
        assert!(
            outbox
                .push(Out::Finish { opaque: 7 }, Urgency::Flush)
                .unwrap(),
            "a close is never dropped for want of room"
        );
    }

    /// Callers' own writes that the full socket cuts short hand the rest
    /// of lent frames over, in order, and the references go once sent.
    #[test]
    fn lent_frames_survive_partial_writes() {
        let (outbox, mut peer) = outbox();
        let big = Arc::new(
            (0..300_000u32)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>(),
        );
        let lender = ArcLender(big.clone());
        let mut want = Vec::new();
        let mut full = false;
        for i in 0..200u64 {
            // Alternating lent and small frames until the socket and then
            // the queue are full: direct writes were cut short on the way.
            let data: &[u8] = if i % 2 == 0 { &big[..] } else { b"small" };
            // SAFETY: the Arc keeps the Vec alive and nothing mutates it.
            let data = unsafe { Data::lent(data, &lender) };
            let out = Out::Msg {
                kind: Kind::Post,
                opaque: 1,
                id: 100 + i,
                data,
                compress: false,
            };
            if !outbox.push(out, Urgency::Direct).unwrap() {
                full = true;
                break;
            }
            encode_into_plain(&mut want, out);
        }
        assert!(full, "the socket never filled");
        assert!(Arc::strong_count(&big) > 1, "some frames still queued");
        let writer = outbox.clone();
        let writer = std::thread::spawn(move || writer.run_writer());
        outbox.flush();
        assert!(read_exactly(&mut peer, want.len()) == want);
        assert!(outbox.close("done", Duration::from_secs(5)));
        writer.join().unwrap();
        assert_eq!(Arc::strong_count(&big), 2, "only ours and the lender's");
    }
}
