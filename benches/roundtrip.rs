//! Request/response round trips through the Rust transport core, with no
//! Python on either side, beside plain blocking sockets doing the same
//! exchange in the same run. It tells what the core costs on its own, so
//! the Python figures (`benches/compare`) can be split into "the
//! loopback", "the core" and "the interpreter".
//!
//! * `socket_pingpong`: one thread writes 87 bytes (the size of a gofast
//!   REQUEST with 64 bytes of data) and reads them back from an echo thread:
//!   the floor for one round trip on this machine (two thread wake-ups).
//! * `core_request/1`: one requester, sequential round trips.
//! * `core_request/16`: 16 requester threads at once; one iteration is one
//!   request (the time is the batch's wall time divided by its size).
//! * `session_request`: the protocol part alone: two `Session`s back to
//!   back, the bytes each sends fed to the other in memory (encode, decode,
//!   dispatch, the exchange table), on one thread with no socket.
//!
//! Run: `cargo bench --no-default-features --bench roundtrip` (add
//! `-- --quick` for a short run).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gofast::codec::Message;
use gofast::io::{Link, Socket};
use gofast::protocol::memory::MemorySink;
use gofast::protocol::{Dispatched, FrameSink, Handler, Session};
use gofast::settings::{Role, Settings};
use gofast::transport::Core;
use gofast::writer::Data;

const ECHO_ID: u64 = 100;
const PAYLOAD: [u8; 64] = [b'r'; 64];
const FRAME_LEN: usize = 87;

/// Answers every REQUEST with its own message; ignores everything else.
struct Echo;

impl Handler for Echo {
    type Callback = ();

    fn batch(&self, run: &mut dyn FnMut()) {
        run()
    }

    fn on_post(&self, _session: &Arc<Session<Self>>, _msg: &Message<'_>) -> Dispatched {
        Dispatched::Handled
    }

    fn on_request(
        &self,
        session: &Arc<Session<Self>>,
        opaque: u64,
        msg: &Message<'_>,
    ) -> Dispatched {
        match session.respond(opaque, msg.id, Data::copied(&msg.data), true) {
            Ok(_) => Dispatched::Handled,
            Err(_) => Dispatched::NoHandler,
        }
    }

    fn on_stream_start(
        &self,
        _session: &Arc<Session<Self>>,
        _opaque: u64,
        _msg: &Message<'_>,
    ) -> Result<Option<()>, Dispatched> {
        Err(Dispatched::NoHandler)
    }

    fn on_stream_msg(&self, _session: &Arc<Session<Self>>, _cb: &(), _msg: Option<&Message<'_>>) {}

    fn on_closed(&self) {}
}

/// A handshaken client and server over 127.0.0.1.
fn pair() -> (Arc<Core<Echo>>, Arc<Core<Echo>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let accepting = thread::spawn(move || {
        let (sock, _) = listener.accept().expect("accept");
        let server = Core::new(
            "server",
            Link::plain(Socket::Tcp(sock)),
            1,
            Settings::defaults(Role::Acceptor),
            Echo,
        )
        .expect("server core");
        server
            .handshake(Duration::from_secs(10), &mut || Ok(()))
            .expect("server handshake");
        server
    });
    let sock = TcpStream::connect(addr).expect("connect");
    let client = Core::new(
        "client",
        Link::plain(Socket::Tcp(sock)),
        1,
        Settings::defaults(Role::Dialer),
        Echo,
    )
    .expect("client core");
    client
        .handshake(Duration::from_secs(10), &mut || Ok(()))
        .expect("client handshake");
    (client, accepting.join().expect("server thread"))
}

/// A client and a server session wired back to back in memory.
struct SessionPair {
    client: Arc<Session<Echo>>,
    to_server: Arc<MemorySink>,
    server: Arc<Session<Echo>>,
    to_client: Arc<MemorySink>,
}

fn session(role: Role) -> (Arc<Session<Echo>>, Arc<MemorySink>) {
    let sink = Arc::new(MemorySink::bytes_only());
    let dyn_sink: Arc<dyn FrameSink> = sink.clone();
    let s = Session::new(
        "bench",
        1,
        Settings::defaults(role),
        Arc::default(),
        dyn_sink,
        Echo,
    )
    .expect("session");
    (Arc::new(s), sink)
}

impl SessionPair {
    fn new() -> Self {
        let (client, to_server) = session(Role::Dialer);
        let (server, to_client) = session(Role::Acceptor);
        SessionPair {
            client,
            to_server,
            server,
            to_client,
        }
    }

    fn request(&self) {
        let pending = self
            .client
            .send_request(ECHO_ID, &PAYLOAD, true, &mut || Ok(()))
            .expect("send");
        self.server
            .feed(&self.to_server.take_bytes())
            .expect("request frame");
        self.client
            .feed(&self.to_client.take_bytes())
            .expect("response frame");
        let reply = pending.wait(None).expect("reply").expect("ok");
        assert_eq!(reply.data.len(), PAYLOAD.len());
    }
}

fn session_requests(c: &mut Criterion) {
    let pair = SessionPair::new();
    let mut group = c.benchmark_group("round_trip");
    group.throughput(Throughput::Elements(1));
    group.bench_function("session_request", |b| b.iter(|| pair.request()));
    group.finish();
}

fn request(core: &Core<Echo>) {
    let pending = core
        .send_request(ECHO_ID, &PAYLOAD, true, &mut || Ok(()))
        .expect("send");
    let reply = core
        .wait_response(&pending, None)
        .expect("reply")
        .expect("ok");
    assert_eq!(reply.data.len(), PAYLOAD.len());
}

fn socket_pingpong(c: &mut Criterion) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let echo = thread::spawn(move || {
        let (mut sock, _) = listener.accept().expect("accept");
        sock.set_nodelay(true).expect("nodelay");
        let mut buf = [0u8; FRAME_LEN];
        while sock.read_exact(&mut buf).is_ok() {
            if sock.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut sock = TcpStream::connect(addr).expect("connect");
    sock.set_nodelay(true).expect("nodelay");
    let mut buf = [b'r'; FRAME_LEN];
    let mut group = c.benchmark_group("round_trip");
    group.throughput(Throughput::Elements(1));
    group.bench_function("socket_pingpong", |b| {
        b.iter(|| {
            sock.write_all(&buf).expect("write");
            sock.read_exact(&mut buf).expect("read");
        })
    });
    group.finish();
    drop(sock);
    echo.join().expect("echo thread");
}

fn core_requests(c: &mut Criterion) {
    let (client, server) = pair();
    let mut group = c.benchmark_group("round_trip");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("core_request", 1), |b| {
        b.iter(|| request(&client))
    });
    const THREADS: u64 = 16;
    group.bench_function(BenchmarkId::new("core_request", THREADS), |b| {
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(THREADS);
            let start = Instant::now();
            thread::scope(|s| {
                for _ in 0..THREADS {
                    s.spawn(|| (0..per_thread).for_each(|_| request(&client)));
                }
            });
            start
                .elapsed()
                .div_f64((per_thread * THREADS) as f64 / iters as f64)
        })
    });
    group.finish();
    client.close("bench done");
    server.close("bench done");
}

criterion_group!(benches, socket_pingpong, core_requests, session_requests);
criterion_main!(benches);
