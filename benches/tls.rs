//! Bulk throughput of a connection's byte stream alone, TLS beside plain
//! TCP in the same run: one thread sends batches of 64 KiB frames the way
//! the writer hands them over (a small head, the lent data, the end byte),
//! another reads into the transport's receive buffer and drops what it got.
//! No codec, no Python: what the link itself costs per byte (issue 11's
//! bulk ratio is this plus the interpreter on both sides).
//!
//! * `link_bulk/tcp`: `send` of the batch; `ReadBuf::fill`.
//! * `link_bulk/tls`: `TlsLink::send` (encrypt, send); `TlsLink::fill`.
//! * `link_round_trip/tls`: one 87-byte record each way (the size of a
//!   64-byte REQUEST), an echo thread on the other side: what TLS adds to
//!   a round trip.
//!
//! Run: `cargo bench --no-default-features --bench tls` (add `-- --quick`
//! for a short run).

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gofast::io::{ClientAuth, Socket, TlsConfig, TlsLink};
use gofast::readbuf::ReadBuf;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

const FRAME: usize = 64 * 1024;
/// Frames per write: what the writer takes from a busy queue at once.
const BATCH: usize = 16;
const HEAD: [u8; 24] = [0xd9; 24];

/// The receiving side: reads until told to stop, counting bytes.
struct Sink {
    got: Arc<AtomicU64>,
    /// The reading thread's CPU time so far, in ns.
    cpu: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Sink {
    fn start(mut read: impl FnMut(&mut ReadBuf) -> usize + Send + 'static) -> Sink {
        let got = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let cpu = Arc::new(AtomicU64::new(0));
        let (g, s, c) = (got.clone(), stop.clone(), cpu.clone());
        let thread = thread::spawn(move || {
            // The transport's defaults: 256 KiB, growing up to frame.max.
            let mut rb = ReadBuf::new(256 * 1024, 16 << 20);
            while !s.load(Ordering::Relaxed) {
                let n = read(&mut rb);
                if n == 0 {
                    break;
                }
                let len = rb.data().len();
                rb.consume(len);
                rb.settle(n);
                c.store(thread_cpu_ns(), Ordering::Relaxed);
                g.fetch_add(n as u64, Ordering::Release);
            }
        });
        Sink {
            got,
            cpu,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until `total` bytes have arrived since the start, sleeping
    /// (a spin would count as the sender's CPU).
    fn wait_for(&self, total: u64) {
        while self.got.load(Ordering::Acquire) < total {
            thread::sleep(Duration::from_micros(20));
        }
    }
}

/// CPU time of the calling thread, in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec owned by this frame.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn pki() -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let cert = params.signed_by(&key, &ca).expect("cert");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn tcp_pair() -> (Socket, Socket) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let client = TcpStream::connect(addr).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    let (client, server) = (Socket::Tcp(client), Socket::Tcp(server));
    client.configure().expect("configure");
    server.configure().expect("configure");
    (client, server)
}

fn tls_pair() -> ((Socket, TlsLink), (Socket, TlsLink)) {
    let (ca, cert, key) = pki();
    let server = TlsConfig::new(
        Some(cert.as_bytes()),
        Some(key.as_bytes()),
        None,
        false,
        ClientAuth::None,
    )
    .expect("server config")
    .server()
    .expect("server");
    let client = TlsConfig::new(None, None, Some(ca.as_bytes()), false, ClientAuth::None)
        .expect("client config")
        .client("localhost")
        .expect("client");
    let (cs, ss) = tcp_pair();
    let shake = |sock: Socket, link: TlsLink| {
        move || {
            let t = Duration::from_secs(10);
            link.handshake(
                &sock,
                Instant::now() + t,
                t,
                Duration::from_millis(50),
                &mut || Ok(()),
            )
            .expect("handshake");
            (sock, link)
        }
    };
    let server = thread::spawn(shake(ss, server));
    let client = shake(cs, client)();
    (client, server.join().expect("server handshake"))
}

/// One batch's pieces, as `Queue::pieces` gives them.
fn pieces<'a>(data: &'a [u8], put: &mut dyn FnMut(&'a [u8])) {
    for _ in 0..BATCH {
        put(&HEAD);
        put(data);
        put(&[0xff]);
    }
}

const BATCH_BYTES: u64 = (BATCH * (HEAD.len() + FRAME + 1)) as u64;

fn run(c: &mut Criterion, name: &str, sink: &Sink, mut send_batch: impl FnMut()) {
    let mut group = c.benchmark_group("link_bulk");
    group.throughput(Throughput::Bytes(BATCH_BYTES));
    let mut sent = 0u64;
    let (mut tx_ns, mut rx_ns, mut timed) = (0, 0, 0);
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let cpu = (thread_cpu_ns(), sink.cpu.load(Ordering::Relaxed));
            let start = Instant::now();
            for _ in 0..iters {
                send_batch();
            }
            sent += iters * BATCH_BYTES;
            sink.wait_for(sent);
            let took = start.elapsed();
            tx_ns += thread_cpu_ns() - cpu.0;
            rx_ns += sink.cpu.load(Ordering::Relaxed) - cpu.1;
            timed += iters * BATCH_BYTES;
            took
        })
    });
    group.finish();
    // CPU per MiB on each side: which one bounds the throughput.
    let mib = timed as f64 / (1 << 20) as f64;
    let tx = tx_ns as f64 / 1e3 / mib;
    let rx = rx_ns as f64 / 1e3 / mib;
    eprintln!("link_bulk/{name}: CPU per MiB: sender {tx:.0} us, receiver {rx:.0} us");
}

fn stop(mut sink: Sink, close: impl FnOnce()) {
    sink.stop.store(true, Ordering::Relaxed);
    close();
    if let Some(t) = sink.thread.take() {
        t.join().expect("sink thread");
    }
}

fn plain(c: &mut Criterion) {
    let data = vec![b'b'; FRAME];
    let (client, server) = tcp_pair();
    let fd = server.as_raw_fd();
    let sink = Sink::start(move |rb| rb.fill(fd).expect("recv"));
    let out: Vec<u8> = {
        let mut v = Vec::new();
        pieces(&data, &mut |p| v.extend_from_slice(p));
        v
    };
    let cfd: RawFd = client.as_raw_fd();
    run(c, "tcp", &sink, || send_all(cfd, &out));
    stop(sink, || {
        let _ = client.shutdown();
    });
    drop(server);
}

fn send_all(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: sends from a live slice.
        let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
        assert!(n > 0, "send: {}", std::io::Error::last_os_error());
        data = &data[n as usize..];
    }
}

fn tls(c: &mut Criterion) {
    let data = vec![b'b'; FRAME];
    let ((cs, cl), (ss, sl)) = tls_pair();
    let fd = ss.as_raw_fd();
    let sl = Arc::new(sl);
    let reader = sl.clone();
    let sink = Sink::start(move |rb| reader.fill(rb, fd, false, &|| {}).expect("tls read"));
    let cfd = cs.as_raw_fd();
    run(c, "tls", &sink, || {
        let (n, all) = cl
            .send(cfd, &mut |put| pieces(&data, put), true)
            .expect("tls send");
        assert!(all && n as u64 == BATCH_BYTES);
    });
    stop(sink, || {
        cl.send_close_notify(cfd);
    });
    drop((cs, ss));
}

fn round_trip(c: &mut Criterion) {
    const LEN: usize = 87;
    let ((cs, cl), (ss, sl)) = tls_pair();
    let echo = thread::spawn(move || {
        let mut rb = ReadBuf::new(4096, 1 << 20);
        loop {
            match sl.fill(&mut rb, ss.as_raw_fd(), false, &|| {}) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            while rb.data().len() >= LEN {
                let msg = rb.data()[..LEN].to_vec();
                rb.consume(LEN);
                if sl.send(ss.as_raw_fd(), &mut |put| put(&msg), true).is_err() {
                    return;
                }
            }
            rb.settle(LEN);
        }
    });
    let msg = [b'r'; LEN];
    let fd = cs.as_raw_fd();
    let mut rb = ReadBuf::new(4096, 1 << 20);
    let mut group = c.benchmark_group("link_round_trip");
    group.throughput(Throughput::Elements(1));
    group.bench_function("tls", |b| {
        b.iter(|| {
            let (n, all) = cl.send(fd, &mut |put| put(&msg), false).expect("send");
            assert!(n == LEN && all);
            while rb.data().len() < LEN {
                assert!(cl.fill(&mut rb, fd, false, &|| {}).expect("read") > 0);
            }
            rb.consume(LEN);
            rb.settle(LEN);
        })
    });
    group.finish();
    cl.send_close_notify(fd);
    let _ = cs.shutdown();
    echo.join().expect("echo thread");
}

criterion_group!(benches, plain, tls, round_trip);
criterion_main!(benches);
