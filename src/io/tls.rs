//! TLS over a transport's socket, with rustls. The gofast bytes inside are
//! exactly those of a plain connection (a Go peer over `tls.Conn` reads
//! them as such).
//!
//! rustls keeps one state for both directions, so the reader and the writer
//! share `conn` behind a lock, and neither blocks on the socket while
//! holding it: the reader receives ciphertext into its own buffer and only
//! then locks to decrypt; a sender encrypts under the lock and hands the
//! records to the socket straight from rustls's buffers without blocking,
//! a chunk at a time; when the socket is full, a blocking sender waits for
//! room without the lock, and a non-blocking one copies what is left into
//! `tx`. TLS records carry sequence numbers, so ciphertext must reach the
//! socket in the order it was made: rustls's queue is in that order, `tx`
//! is held from encryption to the end of the send, and what a non-blocking
//! send leaves in it goes before anything newer. The reader never sends:
//! when rustls has something to send after a read (a key update), it wakes
//! the writer thread.
//!
//! Lock order: `rx` → `conn`; `tx` → `conn`. `conn` is a leaf, held for the
//! time of a decrypt, or an encrypt and its non-blocking sends; none of
//! them is held with the GIL.

use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::sync::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};
use rustls::{ServerConnection, SupportedProtocolVersion};

use super::doorbell::Doorbell;
use super::socket::Socket;
use crate::errors::{Error, Result};
use crate::readbuf::ReadBuf;

/// Whether a server asks connecting clients for a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Optional,
    Required,
}

impl ClientAuth {
    pub fn from_name(name: &str) -> Option<ClientAuth> {
        match name {
            "none" => Some(ClientAuth::None),
            "optional" => Some(ClientAuth::Optional),
            "required" => Some(ClientAuth::Required),
            _ => None,
        }
    }
}

/// What a side needs for TLS, from PEM: its certificate chain and key (a
/// server's must; a client's for mutual TLS), the CAs it trusts for the
/// peer's certificate, and for a server whether clients must present one.
/// The rustls configurations are made once, on first use.
pub struct TlsConfig {
    chain: Vec<CertificateDer<'static>>,
    key: Option<PrivateKeyDer<'static>>,
    roots: Arc<RootCertStore>,
    client_auth: ClientAuth,
    server: OnceLock<std::result::Result<Arc<ServerConfig>, String>>,
    client: OnceLock<std::result::Result<Arc<ClientConfig>, String>>,
}

/// TLS 1.3 and 1.2, as rustls offers them by default (a Go peer speaks both).
static VERSIONS: &[&SupportedProtocolVersion] = rustls::DEFAULT_VERSIONS;

/// ring's suites, AES-128-GCM first: 10 AES rounds to AES-256's 14, for a
/// security margin nobody disputes (Go prefers it too, with AES-NI).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    let first = rustls::CipherSuite::TLS13_AES_128_GCM_SHA256;
    p.cipher_suites.sort_by_key(|s| s.suite() != first);
    Arc::new(p)
}

impl TlsConfig {
    /// `cert`/`key`: PEM of our chain and private key (both or neither);
    /// `ca`: PEM of the CAs to verify the peer with; `system_roots` adds the
    /// system's store (the OS's CA files).
    pub fn new(
        cert: Option<&[u8]>,
        key: Option<&[u8]>,
        ca: Option<&[u8]>,
        system_roots: bool,
        client_auth: ClientAuth,
    ) -> Result<TlsConfig> {
        let chain = match cert {
            Some(pem) => certificates(pem, "cert")?,
            None => Vec::new(),
        };
        let key = match key {
            Some(pem) => Some(PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
                Error::Settings(format!("key: no private key in the PEM given ({e})"))
            })?),
            None => None,
        };
        if chain.is_empty() != key.is_none() {
            return Err(Error::Settings(
                "cert and key go together: give both (or neither)".into(),
            ));
        }
        let mut roots = RootCertStore::empty();
        if let Some(pem) = ca {
            for c in certificates(pem, "ca")? {
                roots
                    .add(c)
                    .map_err(|e| Error::Settings(format!("ca: unusable CA certificate: {e}")))?;
            }
        }
        if system_roots {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(Error::Settings(format!(
                    "system_roots: no CA certificate found in the system's store{}",
                    found
                        .errors
                        .first()
                        .map_or(String::new(), |e| format!(" ({e})"))
                )));
            }
        }
        if client_auth != ClientAuth::None && roots.is_empty() {
            return Err(Error::Settings(
                "client_auth needs ca=: the CAs that sign the clients' certificates".into(),
            ));
        }
        Ok(TlsConfig {
            chain,
            key,
            roots: Arc::new(roots),
            client_auth,
            server: OnceLock::new(),
            client: OnceLock::new(),
        })
    }

    pub fn has_certificate(&self) -> bool {
        !self.chain.is_empty()
    }

    fn server_config(&self) -> Result<Arc<ServerConfig>> {
        self.server
            .get_or_init(|| self.make_server().map(Arc::new))
            .clone()
            .map_err(Error::Settings)
    }

    fn make_server(&self) -> std::result::Result<ServerConfig, String> {
        let key = self
            .key
            .clone_key_opt()
            .ok_or("a TLS server needs cert= and key=")?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| e.to_string())?;
        let builder = match self.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            auth => {
                let v = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider());
                let v = if auth == ClientAuth::Optional {
                    v.allow_unauthenticated()
                } else {
                    v
                };
                builder.with_client_cert_verifier(v.build().map_err(|e| e.to_string())?)
            }
        };
        builder
            .with_single_cert(self.chain.clone(), key)
            .map_err(|e| format!("cert/key: {e}"))
    }

    fn client_config(&self) -> Result<Arc<ClientConfig>> {
        self.client
            .get_or_init(|| self.make_client().map(Arc::new))
            .clone()
            .map_err(Error::Settings)
    }

    fn make_client(&self) -> std::result::Result<ClientConfig, String> {
        if self.roots.is_empty() {
            return Err("a TLS client needs ca= or system_roots=True to verify the server".into());
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| e.to_string())?
            .with_root_certificates(self.roots.clone());
        match self.key.clone_key_opt() {
            Some(key) => builder
                .with_client_auth_cert(self.chain.clone(), key)
                .map_err(|e| format!("cert/key: {e}")),
            None => Ok(builder.with_no_client_auth()),
        }
    }

    /// A client side, verifying that the server's certificate is valid for
    /// `server_name` (a DNS name or an IP address).
    pub fn client(&self, server_name: &str) -> Result<TlsLink> {
        let name = ServerName::try_from(server_name.to_string()).map_err(|_| {
            Error::Settings(format!("server_name {server_name:?} is no DNS name or IP"))
        })?;
        let conn = ClientConnection::new(self.client_config()?, name)
            .map_err(|e| Error::Tls(e.to_string()))?;
        Ok(TlsLink::new(Connection::Client(conn)))
    }

    pub fn server(&self) -> Result<TlsLink> {
        let conn =
            ServerConnection::new(self.server_config()?).map_err(|e| Error::Tls(e.to_string()))?;
        Ok(TlsLink::new(Connection::Server(conn)))
    }
}

trait CloneKeyOpt {
    fn clone_key_opt(&self) -> Option<PrivateKeyDer<'static>>;
}

impl CloneKeyOpt for Option<PrivateKeyDer<'static>> {
    fn clone_key_opt(&self) -> Option<PrivateKeyDer<'static>> {
        self.as_ref().map(PrivateKeyDer::clone_key)
    }
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: std::result::Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = certs.map_err(|e| Error::Settings(format!("{what}: unreadable PEM ({e})")))?;
    if certs.is_empty() {
        return Err(Error::Settings(format!(
            "{what}: no CERTIFICATE block in the PEM given"
        )));
    }
    Ok(certs)
}

/// The peer's certificate, known once the TLS handshake is done.
#[derive(Clone, Debug)]
pub struct PeerCertificate {
    pub der: Vec<u8>,
    /// Its subject, RFC 4514 style ("CN=client,O=Example").
    pub subject: String,
}

/// Gives a sender's bytes, in order, to the function it is handed, as
/// slices that live as long as the send (so small ones can share records).
pub type Pieces<'a> = dyn FnMut(&mut dyn FnMut(&'a [u8])) + 'a;

/// One connection's TLS state.
pub struct TlsLink {
    conn: Mutex<Connection>,
    rx: Mutex<Ciphertext>,
    tx: Mutex<Outgoing>,
    peer: OnceLock<Option<PeerCertificate>>,
    /// Rung by a requester that read records and left the reader frames,
    /// plaintext or the end, which the socket will not announce again.
    /// Made by the reader when it first leaves the socket to requesters;
    /// until then (and if it cannot be made) requesters leave records
    /// alone. It closes with the link.
    bell: OnceLock<Option<Doorbell>>,
}

/// Received ciphertext rustls has not taken yet.
#[derive(Default)]
struct Ciphertext {
    buf: Vec<u8>,
    start: usize,
    /// The socket has ended (recv gave 0)...
    eof: bool,
    /// ...and rustls has been told.
    eof_told: bool,
    /// The last receive was small: the buffer shrinks to `RX_QUIET`.
    quiet: bool,
    /// The first byte the peer sent (a plaintext peer's tells who it is).
    first: Option<u8>,
    /// Where the bytes given to rustls are in their records, so that it
    /// opens records once they are whole rather than after every piece.
    records: RecordCount,
    /// Records that ended in what rustls was given since it last opened.
    ended: usize,
    /// Bytes given to rustls since it last opened records.
    fed: bool,
    /// How reading failed, for every later read: a requester's read may
    /// meet the failure first, and the reader must then meet it too
    /// (rustls need not report a failure twice, nor the socket an error).
    failed: Option<ReadFailure>,
}

/// A failed read, kept to be told again.
struct ReadFailure {
    kind: io::ErrorKind,
    why: String,
    /// A TLS failure (`TlsFailure`), not the socket's.
    tls: bool,
}

impl ReadFailure {
    fn of(e: &io::Error) -> ReadFailure {
        ReadFailure {
            kind: e.kind(),
            why: e.to_string(),
            tls: e.get_ref().is_some_and(|i| i.is::<TlsFailure>()),
        }
    }

    fn again(&self) -> io::Error {
        if self.tls {
            tls_failure(self.why.clone())
        } else {
            io::Error::new(self.kind, self.why.clone())
        }
    }
}

/// Follows TLS record framing (a 5-byte header whose last two bytes are
/// the length of what follows) over a byte stream given piece by piece.
/// Only a hint of when to open records: a wrong count costs calls, never
/// bytes (everything given is opened before more is awaited).
#[derive(Default)]
struct RecordCount {
    head: [u8; 5],
    head_len: usize,
    /// Bytes left of the current record's body.
    left: usize,
}

impl RecordCount {
    /// How many records end within `bytes`, the stream's next bytes.
    fn track(&mut self, mut bytes: &[u8]) -> usize {
        let mut ended = 0;
        while !bytes.is_empty() {
            if self.left > 0 {
                let k = self.left.min(bytes.len());
                self.left -= k;
                bytes = &bytes[k..];
                ended += usize::from(self.left == 0);
                continue;
            }
            let k = (self.head.len() - self.head_len).min(bytes.len());
            self.head[self.head_len..self.head_len + k].copy_from_slice(&bytes[..k]);
            self.head_len += k;
            bytes = &bytes[k..];
            if self.head_len == self.head.len() {
                self.head_len = 0;
                self.left = usize::from(u16::from_be_bytes([self.head[3], self.head[4]]));
                ended += usize::from(self.left == 0);
            }
        }
        ended
    }
}

/// Ciphertext a stalled non-blocking send left: `buf[sent..]`.
#[derive(Default)]
struct Outgoing {
    buf: Vec<u8>,
    sent: usize,
}

impl Outgoing {
    /// Sends what is left (MSG_NOSIGNAL: a closed peer is an error, not a
    /// SIGPIPE); false if a non-blocking send stopped at a full socket.
    fn send(&mut self, fd: RawFd, blocking: bool) -> io::Result<bool> {
        let flags = libc::MSG_NOSIGNAL | if blocking { 0 } else { libc::MSG_DONTWAIT };
        while self.sent < self.buf.len() {
            let rest = &self.buf[self.sent..];
            // SAFETY: sends from a live slice.
            let n = unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), flags) };
            if n >= 0 {
                self.sent += n as usize;
                continue;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock if !blocking => return Ok(false),
                _ => return Err(err),
            }
        }
        Ok(true)
    }
}

/// Ciphertext received per system call at most: as much as a plain
/// transport's receive buffer takes by default (`buffersize`), so that a
/// busy TLS link makes as few system calls, and as large batches.
const RX_CHUNK: usize = 256 * 1024;
/// ...and while traffic is light (what an idle link keeps).
const RX_QUIET: usize = 16 * 1024;

impl TlsLink {
    fn new(conn: Connection) -> TlsLink {
        TlsLink {
            conn: Mutex::new(conn),
            rx: Mutex::new(Ciphertext::default()),
            tx: Mutex::new(Outgoing::default()),
            peer: OnceLock::new(),
            bell: OnceLock::new(),
        }
    }

    pub fn peer_certificate(&self) -> Option<PeerCertificate> {
        self.peer.get().cloned().flatten()
    }

    /// Runs the TLS handshake on the calling thread, before the transport's
    /// reader and writer use the socket. Waits wake every `tick` to run
    /// `between` (Ctrl-C); past `deadline` it is a `Timeout`.
    pub fn handshake(
        &self,
        sock: &Socket,
        deadline: Instant,
        timeout: Duration,
        tick: Duration,
        between: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        sock.set_read_timeout(Some(tick))?;
        sock.set_write_timeout(Some(tick))?;
        let result = self.handshake_io(sock, deadline, timeout, between);
        sock.set_read_timeout(None)?;
        sock.set_write_timeout(None)?;
        result
    }

    fn handshake_io(
        &self,
        sock: &Socket,
        deadline: Instant,
        timeout: Duration,
        between: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        use std::os::fd::AsRawFd;
        let mut io = FdIo {
            fd: sock.as_raw_fd(),
        };
        // Nothing else uses the connection until the handshake is done.
        let mut rx = self.rx.lock();
        let mut conn = self.conn.lock();
        let mut wait = || -> Result<()> {
            if Instant::now() >= deadline {
                return Err(Error::Tls(format!(
                    "TLS handshake not done within {:.3}s",
                    timeout.as_secs_f64()
                )));
            }
            between()
        };
        loop {
            while conn.wants_write() {
                match conn.write_tls(&mut io) {
                    Ok(_) => {}
                    Err(e) if is_wait(&e) => wait()?,
                    Err(e) => return Err(Error::Closed(format!("during the TLS handshake: {e}"))),
                }
            }
            if !conn.is_handshaking() {
                break;
            }
            if rx.unread().is_empty() {
                // Through `rx`, as after the handshake, so that its count of
                // records starts with the first byte.
                match rx.receive(io.fd, false) {
                    Ok(()) if rx.eof => {
                        return Err(Error::Tls(closed_during_handshake(conn.is_handshaking())))
                    }
                    Ok(()) => {}
                    Err(e) if is_wait(&e) => wait()?,
                    Err(e) => return Err(Error::Closed(format!("during the TLS handshake: {e}"))),
                }
                continue;
            }
            rx.feed(&mut conn)
                .map_err(|e| Error::Closed(format!("during the TLS handshake: {e}")))?;
            if let Err(e) = conn.process_new_packets() {
                // Tell the peer why (the alert rustls queued, maybe
                // behind a ChangeCipherSpec), best effort; then read
                // what it sent, since closing with
                // unread bytes resets the connection, which can
                // discard the alert before the peer reads it.
                while conn.wants_write() {
                    if !matches!(conn.write_tls(&mut io), Ok(n) if n > 0) {
                        break;
                    }
                }
                discard_input(io.fd);
                return Err(Error::Tls(explain(&e, rx.first)));
            }
            rx.ended = 0;
            rx.fed = false;
        }
        // A send encrypts up to TX_CHUNK before it hands records to the
        // socket (and a stalled one everything): rustls need not stop it.
        conn.set_buffer_limit(None);
        let peer = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|der| PeerCertificate {
                der: der.to_vec(),
                subject: subject_of(der),
            });
        let _ = self.peer.set(peer);
        Ok(())
    }

    /// Reads plaintext into `rb`, receiving ciphertext from `fd` (blocking,
    /// unless `nonblocking`) when rustls has none decrypted. `Ok(0)` is the
    /// end of the connection. `wake_writer` runs when rustls has something
    /// to send after what it read (the writer thread sends it).
    pub fn fill(
        &self,
        rb: &mut ReadBuf,
        fd: RawFd,
        nonblocking: bool,
        wake_writer: &dyn Fn(),
    ) -> io::Result<usize> {
        let mut rx = self.rx.lock();
        if let Some(failed) = &rx.failed {
            return Err(failed.again());
        }
        let read = Self::fill_locked(&self.conn, &mut rx, rb, fd, nonblocking, wake_writer);
        if let Some(e) = read.as_ref().err().filter(|e| !is_wait(e)) {
            rx.failed = Some(ReadFailure::of(e));
        }
        read
    }

    /// The reader's doorbell, made on first use (`None`: it could not be).
    pub fn reader_bell(&self) -> Option<&Doorbell> {
        self.bell.get_or_init(|| Doorbell::new().ok()).as_ref()
    }

    /// The doorbell if the reader has made it: requesters read records
    /// only then, as only then can they hand the reader what they leave.
    pub fn bell(&self) -> Option<&Doorbell> {
        self.bell.get().and_then(Option::as_ref)
    }

    /// Tells the reader to look at what a requester's read left.
    pub fn ring_reader(&self) {
        if let Some(bell) = self.bell() {
            bell.ring();
        }
    }

    /// Whether every byte received has been opened and its plaintext
    /// taken: if not, a read would find more without the socket saying so
    /// (a read stops when the buffer it fills is full).
    pub fn all_taken(&self) -> bool {
        let rx = self.rx.lock();
        // The end, once seen, is for a read to report.
        if rx.start != rx.buf.len() || rx.fed || rx.ended > 0 || rx.eof {
            return false;
        }
        // Nothing new to open here: this only reports what rustls holds
        // (a failure is for the next read to meet).
        let state = self.conn.lock().process_new_packets();
        state.is_ok_and(|s| s.plaintext_bytes_to_read() == 0 && !s.peer_has_closed())
    }

    fn fill_locked(
        conn: &Mutex<Connection>,
        rx: &mut Ciphertext,
        rb: &mut ReadBuf,
        fd: RawFd,
        nonblocking: bool,
        wake_writer: &dyn Fn(),
    ) -> io::Result<usize> {
        loop {
            let (opened, kick) = {
                let mut conn = conn.lock();
                // A blocking sender may have left its own records queued
                // while it waits for room: only what this read adds is
                // news for the writer.
                let queued = conn.wants_write();
                let opened = rx.open(&mut conn, rb);
                (opened, !queued && conn.wants_write())
            };
            if kick {
                wake_writer();
            }
            if let Some(n) = opened? {
                return Ok(n);
            }
            rx.receive(fd, nonblocking)?;
        }
    }

    /// Encrypts what `pieces` gives and sends it, with whatever rustls had
    /// queued (a key update, an alert) and any ciphertext an earlier
    /// non-blocking send left. Blocking, it sends everything; otherwise up
    /// to the first EAGAIN, keeping the rest to go first next time.
    /// Returns the plaintext bytes taken (all of them) and whether every
    /// byte of ciphertext reached the socket.
    ///
    /// The records go to the socket from rustls's own buffers, a chunk at a
    /// time as they are made (no copy, and the receiver starts decrypting
    /// while the rest is encrypted); only what a full socket leaves of a
    /// non-blocking send is copied out, into `tx`.
    pub fn send<'p>(
        &self,
        fd: RawFd,
        pieces: &mut Pieces<'p>,
        blocking: bool,
    ) -> io::Result<(usize, bool)> {
        self.send_then(fd, pieces, blocking, false)
    }

    /// Queues our close_notify and sends it (after the writer has stopped).
    pub fn send_close_notify(&self, fd: RawFd) {
        let _ = self.send_then(fd, &mut |_| {}, true, true);
    }

    /// `send`, and then, with `close`, our close_notify: queued under the
    /// same hold of `tx` and `conn`, so no other send's records can follow
    /// it.
    fn send_then<'p>(
        &self,
        fd: RawFd,
        pieces: &mut Pieces<'p>,
        blocking: bool,
        close: bool,
    ) -> io::Result<(usize, bool)> {
        let mut tx = self.tx.lock();
        // While older ciphertext waits for a full socket, a non-blocking
        // sender takes nothing new: the frames stay queued, where they
        // count against max_pending (backpressure), instead of piling up
        // here as ciphertext.
        if !tx.send(fd, blocking)? {
            return Ok((0, false));
        }
        tx.sent = 0;
        if tx.buf.capacity() > TX_KEEP {
            tx.buf = Vec::new(); // a stalled burst's buffer goes once sent
        }
        tx.buf.clear();
        let mut out = Sealer {
            conn: Some(self.conn.lock()),
            link: self,
            tx: &mut tx,
            fd,
            blocking,
            stalled: false,
            unsent: [io::IoSlice::new(&[]); UNSENT_MAX],
            unsent_count: 0,
            since_send: 0,
            taken: 0,
            failed: None,
        };
        pieces(&mut |piece| out.put(piece));
        if close {
            out.seal()?;
            if let Some(conn) = out.conn.as_mut() {
                conn.send_close_notify();
            }
        }
        out.flush()?;
        // Unless it stalled, every record went from rustls to the socket.
        Ok((out.taken, !out.stalled))
    }
}

/// Plaintext encrypted between two sends: enough that the system calls
/// are as few as a plain transport's for bulk (one per 64 KiB cost a
/// third more in the kernel), few enough that the receiver gets them while
/// the next are encrypted, and that rustls's records are freed (and their
/// memory reused) while still in cache.
const TX_CHUNK: usize = 256 * 1024;
/// Pieces encrypted together at most (a frame has up to three).
const UNSENT_MAX: usize = 48;
/// Largest backlog buffer kept once it is sent.
const TX_KEEP: usize = 1024 * 1024;

/// One `send`: encrypts pieces under `conn` and sends the records from
/// rustls's buffers each `TX_CHUNK`.
struct Sealer<'a, 'g, 'p> {
    link: &'a TlsLink,
    /// `conn`, held except while a blocking sender waits for room.
    conn: Option<crate::sync::MutexGuard<'a, Connection>>,
    tx: &'g mut Outgoing,
    fd: RawFd,
    blocking: bool,
    /// A non-blocking send found the socket full: the rest goes to `tx`.
    stalled: bool,
    /// Pieces taken and not yet encrypted: encrypted together, so that a
    /// frame's head and end share records with its data.
    unsent: [io::IoSlice<'p>; UNSENT_MAX],
    unsent_count: usize,
    /// Plaintext taken since the last send.
    since_send: usize,
    taken: usize,
    failed: Option<io::Error>,
}

impl<'p> Sealer<'_, '_, 'p> {
    fn put(&mut self, piece: &'p [u8]) {
        if self.failed.is_some() || piece.is_empty() {
            return;
        }
        let made = if self.since_send >= TX_CHUNK {
            self.flush()
        } else if self.unsent_count == self.unsent.len() {
            self.seal()
        } else {
            Ok(())
        };
        if let Err(e) = made {
            self.failed = Some(e);
            return;
        }
        self.unsent[self.unsent_count] = io::IoSlice::new(piece);
        self.unsent_count += 1;
        self.since_send += piece.len();
        self.taken += piece.len();
    }

    /// Encrypts what is unsent into rustls's queue.
    fn seal(&mut self) -> io::Result<()> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let unsent = &self.unsent[..self.unsent_count];
        let mut from = 0;
        let mut skip = 0;
        while from < unsent.len() {
            let n = if skip == 0 {
                conn.writer().write_vectored(&unsent[from..])?
            } else {
                // The rare rest of a piece (rustls took part of it).
                conn.writer().write(&unsent[from][skip..])?
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            // Past what rustls took.
            let mut left = n;
            while from < unsent.len() && left >= unsent[from].len() - skip {
                left -= unsent[from].len() - skip;
                skip = 0;
                from += 1;
            }
            skip += left;
        }
        self.unsent_count = 0;
        Ok(())
    }

    /// Encrypts and sends what is unsent, after the records rustls holds
    /// (any failure of `put` first).
    fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.seal()?;
        self.since_send = 0;
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(());
            };
            if !conn.wants_write() {
                return Ok(());
            }
            if self.stalled {
                // Behind ciphertext that waits in `tx`: after it, in order.
                while conn.wants_write() {
                    conn.write_tls(&mut self.tx.buf)?;
                }
                return Ok(());
            }
            match conn.write_tls(&mut SendNow(self.fd)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !self.blocking => {
                    self.stalled = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Waits for room without `conn`, which the reader
                    // needs meanwhile to decrypt (what it makes goes in
                    // rustls's queue after ours: the order holds).
                    self.conn = None;
                    let waited = wait_writable(self.fd);
                    self.conn = Some(self.link.conn.lock());
                    waited?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Sends without blocking (rustls hands over up to 64 records at once).
struct SendNow(RawFd);

impl Write for SendNow {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
        if let [one] = bufs {
            // SAFETY: sends from a live slice.
            let n = unsafe { libc::send(self.0, one.as_ptr().cast(), one.len(), flags) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            return Ok(n as usize);
        }
        // SAFETY: an all-zero msghdr is valid (no address, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // IoSlice is an iovec on unix; the kernel only reads through it.
        msg.msg_iov = bufs.as_ptr().cast_mut().cast();
        msg.msg_iovlen = bufs.len() as _;
        // SAFETY: the iovecs point into live slices borrowed for this call.
        let n = unsafe { libc::sendmsg(self.0, &msg, flags) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Blocks until the socket takes more (or has failed: the send says how).
fn wait_writable(fd: RawFd) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd owned by this frame.
        if unsafe { libc::poll(&mut pfd, 1, -1) } >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

impl Ciphertext {
    fn unread(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn receive(&mut self, fd: RawFd, nonblocking: bool) -> io::Result<()> {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            if self.quiet && self.buf.capacity() > RX_QUIET {
                self.buf = Vec::new(); // a burst's pages go when it is over
            }
        }
        self.buf
            .reserve(if self.quiet { RX_QUIET } else { RX_CHUNK });
        let spare = self.buf.spare_capacity_mut();
        let flags = if nonblocking { libc::MSG_DONTWAIT } else { 0 };
        loop {
            // SAFETY: recv writes at most spare.len() bytes into memory this
            // Vec owns and has not initialised.
            let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), flags) };
            if n > 0 {
                // SAFETY: recv initialised exactly these n bytes.
                unsafe { self.buf.set_len(self.buf.len() + n as usize) };
                self.quiet = (n as usize) < RX_QUIET;
                if self.first.is_none() {
                    self.first = self.buf.get(self.start).copied();
                }
                return Ok(());
            }
            if n == 0 {
                self.eof = true;
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Gives rustls as much of the unread ciphertext as it takes at once.
    fn feed(&mut self, conn: &mut Connection) -> io::Result<usize> {
        let mut rest = &self.buf[self.start..];
        let used = conn.read_tls(&mut rest)?;
        let given = &self.buf[self.start..self.start + used];
        self.ended += self.records.track(given);
        self.fed |= used > 0;
        self.start += used;
        Ok(used)
    }

    /// Opens the records received so far and moves their plaintext into
    /// `rb`, up to its free space. `Some(n)`: n bytes, 0 at the end of the
    /// connection; `None`: rustls needs more ciphertext first.
    fn open(&mut self, conn: &mut Connection, rb: &mut ReadBuf) -> io::Result<Option<usize>> {
        let mut put = 0;
        loop {
            // Everything given is opened before more is awaited, whatever
            // the count of records says.
            if self.ended > 0 || (self.fed && self.start == self.buf.len()) {
                self.ended = 0;
                self.fed = false;
                if let Err(e) = conn.process_new_packets() {
                    return Err(tls_failure(explain(&e, None)));
                }
            }
            if put > 0 && rb.room() == 0 {
                return Ok(Some(put)); // the transport consumes first
            }
            match rb.fill_via(usize::MAX, |dst| conn.reader().read(dst)) {
                Ok(0) => return Ok(Some(put)), // the peer's close_notify
                Ok(n) => {
                    put += n;
                    // Room left: rustls had no more; nor is there more to
                    // open (a small message's usual case: done at once).
                    if rb.room() > 0 && self.start == self.buf.len() && !self.fed {
                        return Ok(Some(put));
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket closed without close_notify: an end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Some(put)),
                Err(e) => return Err(e),
            }
            if self.start < self.buf.len() {
                match self.feed(conn) {
                    Ok(0) => {
                        // Not after a close_notify (the read above ends
                        // then): an error rather than a loop.
                        let why = "rustls takes no more of the ciphertext received";
                        return Err(tls_failure(format!("TLS: {why}")));
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        // rustls refuses more (a record longer than TLS
                        // allows): opening says what is wrong.
                        if let Err(t) = conn.process_new_packets() {
                            return Err(tls_failure(explain(&t, None)));
                        }
                        return Err(e);
                    }
                }
            }
            if self.fed {
                continue;
            }
            if self.eof && !self.eof_told {
                // An empty read tells rustls the socket ended.
                conn.read_tls(&mut &[][..])?;
                self.eof_told = true;
                continue;
            }
            return Ok((put > 0 || self.eof_told).then_some(put));
        }
    }
}

/// A TLS failure inside an `io::Error` (the read path speaks io), told
/// apart from socket errors when it reaches the transport (`Error::from`).
#[derive(Debug)]
pub struct TlsFailure(pub String);

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFailure {}

fn tls_failure(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, TlsFailure(why))
}

fn is_wait(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// The socket for the handshake's blocking writes (timeouts set on it).
struct FdIo {
    fd: RawFd,
}

impl Write for FdIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: sends from a live slice.
        let n = unsafe { libc::send(self.fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads and drops what the socket holds now (at most a few records).
fn discard_input(fd: RawFd) {
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        // SAFETY: recv writes at most sink.len() bytes into sink.
        let n = unsafe { libc::recv(fd, sink.as_mut_ptr().cast(), sink.len(), libc::MSG_DONTWAIT) };
        if n <= 0 {
            return;
        }
    }
}

fn closed_during_handshake(handshaking: bool) -> String {
    let mut why = "the peer closed the connection during the TLS handshake".to_string();
    if handshaking {
        why.push_str(
            " (a peer without TLS drops our hello; a TLS peer, one whose check of \
             our certificate or its own failed: its log says which)",
        );
    }
    why
}

/// A rustls error, said so that the user knows what to fix.
fn explain(e: &rustls::Error, first_byte: Option<u8>) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let hint = match e {
        // A gofast frame starts d9 d9 f7 (a CBOR tag); a TLS record 14..17.
        E::InvalidMessage(_) if first_byte == Some(0xd9) => {
            " (the peer sent plaintext gofast frames: it does not use TLS)"
        }
        E::InvalidMessage(_) => " (the peer does not speak TLS)",
        E::InvalidCertificate(C::UnknownIssuer) => {
            " (the peer's certificate is not signed by a CA in ca=)"
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            " (the peer's certificate does not name the server_name asked for)"
        }
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            " (the peer's certificate has expired)"
        }
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            " (the peer's certificate is not valid yet)"
        }
        E::NoCertificatesPresented => " (this side requires a client certificate: cert= and key=)",
        E::AlertReceived(A::CertificateRequired) => {
            " (the peer requires a client certificate: give cert= and key=)"
        }
        E::AlertReceived(A::UnknownCA | A::BadCertificate | A::CertificateUnknown) => {
            " (the peer does not trust our certificate)"
        }
        E::AlertReceived(A::CertificateExpired) => " (the peer says our certificate has expired)",
        _ => "",
    };
    format!("TLS: {e}{hint}")
}

/// A certificate's subject, RFC 4514 style; "" if it cannot be parsed.
fn subject_of(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert.subject().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    struct Pki {
        ca: String,
        server: (String, String),
        client: (String, String),
    }

    fn pki() -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let params = CertificateParams::new(vec![name.to_string()]).unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        Pki {
            ca: ca.pem(),
            server: leaf("localhost"),
            client: leaf("client.test"),
        }
    }

    fn config(pki: &Pki, leaf: Option<&(String, String)>, auth: ClientAuth) -> TlsConfig {
        TlsConfig::new(
            leaf.map(|l| l.0.as_bytes()),
            leaf.map(|l| l.1.as_bytes()),
            Some(pki.ca.as_bytes()),
            false,
            auth,
        )
        .unwrap()
    }

    /// One side after its handshake: its socket and TLS state, or why not.
    type Side = Result<(Socket, TlsLink)>;

    /// Both handshakes over a socketpair, each on its own thread.
    fn handshake(client: TlsLink, server: TlsLink) -> (Side, Side) {
        let (a, b) = UnixStream::pair().unwrap();
        let run = |sock: UnixStream, link: TlsLink| {
            move || {
                let sock = Socket::Unix(sock);
                let deadline = Instant::now() + Duration::from_secs(10);
                let tick = Duration::from_millis(50);
                link.handshake(&sock, deadline, Duration::from_secs(10), tick, &mut || {
                    Ok(())
                })
                .map(|()| (sock, link))
            }
        };
        let theirs = std::thread::spawn(run(b, server));
        let mine = run(a, client)();
        (mine, theirs.join().unwrap())
    }

    fn read_exactly(link: &TlsLink, sock: &Socket, n: usize) -> Vec<u8> {
        let mut rb = ReadBuf::new(4096, 4 << 20);
        while rb.data().len() < n {
            let got = link.fill(&mut rb, sock.as_raw_fd(), false, &|| {}).unwrap();
            assert!(got > 0, "ended after {} of {n} bytes", rb.data().len());
        }
        rb.data().to_vec()
    }

    #[test]
    fn mutual_tls_carries_bytes_both_ways_and_ends_cleanly() {
        let pki = pki();
        let server = config(&pki, Some(&pki.server), ClientAuth::Required)
            .server()
            .unwrap();
        let client = config(&pki, Some(&pki.client), ClientAuth::None)
            .client("localhost")
            .unwrap();
        let (c, s) = handshake(client, server);
        let ((cs, cl), (ss, sl)) = (c.unwrap(), s.unwrap());
        let subject = sl.peer_certificate().unwrap().subject;
        assert!(cl.peer_certificate().is_some());
        assert!(subject.contains("CN="), "{subject}");

        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let sender = {
            let big = big.clone();
            std::thread::spawn(move || {
                let (n, all) = cl.send(cs.as_raw_fd(), &mut |put| put(&big), true).unwrap();
                assert!(all && n == big.len());
                cl.send_close_notify(cs.as_raw_fd());
                (cs, cl)
            })
        };
        assert_eq!(read_exactly(&sl, &ss, big.len()), big);
        let mut rb = ReadBuf::new(64, 64);
        assert_eq!(sl.fill(&mut rb, ss.as_raw_fd(), false, &|| {}).unwrap(), 0);
        let (cs, cl) = sender.join().unwrap();
        // And back, after the client's side is done sending.
        sl.send(ss.as_raw_fd(), &mut |put| put(b"reply"), true)
            .unwrap();
        assert_eq!(read_exactly(&cl, &cs, 5), b"reply");
    }

    #[test]
    fn a_wrong_name_fails_on_both_sides_with_reasons() {
        let pki = pki();
        let server = config(&pki, Some(&pki.server), ClientAuth::None)
            .server()
            .unwrap();
        let client = config(&pki, None, ClientAuth::None)
            .client("elsewhere.test")
            .unwrap();
        let (c, s) = handshake(client, server);
        let c = c.err().expect("client must refuse the name").to_string();
        assert!(c.contains("does not name the server_name"), "{c}");
        let s = s.err().expect("server must hear of it").to_string();
        assert!(s.contains("does not trust our certificate"), "{s}");
    }

    #[test]
    fn a_missing_client_certificate_is_refused() {
        let pki = pki();
        let server = config(&pki, Some(&pki.server), ClientAuth::Required)
            .server()
            .unwrap();
        let client = config(&pki, None, ClientAuth::None)
            .client("localhost")
            .unwrap();
        let (_c, s) = handshake(client, server);
        let s = s.err().expect("server must refuse").to_string();
        assert!(s.contains("requires a client certificate"), "{s}");
    }

    #[test]
    fn bad_pem_is_a_settings_error() {
        let e = TlsConfig::new(Some(b"junk"), Some(b"junk"), None, false, ClientAuth::None);
        assert!(matches!(e, Err(Error::Settings(m)) if m.contains("cert")));
    }

    fn linked() -> ((Socket, TlsLink), (Socket, TlsLink)) {
        let pki = pki();
        let server = config(&pki, Some(&pki.server), ClientAuth::None)
            .server()
            .unwrap();
        let client = config(&pki, None, ClientAuth::None)
            .client("localhost")
            .unwrap();
        let (c, s) = handshake(client, server);
        (c.unwrap(), s.unwrap())
    }

    #[test]
    fn a_stalled_send_keeps_its_rest_first_and_takes_nothing_new_meanwhile() {
        let ((cs, cl), (ss, sl)) = linked();
        let fd = cs.as_raw_fd();
        // Far more than a socket pair holds, so a non-blocking send stalls.
        let big: Vec<u8> = (0..4_000_000u32).map(|i| (i % 253) as u8).collect();
        let (n, all) = cl.send(fd, &mut |put| put(&big), false).unwrap();
        assert_eq!((n, all), (big.len(), false), "all taken, not all sent");
        // The backlog waits for the peer: nothing new is taken.
        assert_eq!(
            cl.send(fd, &mut |put| put(b"next"), false).unwrap(),
            (0, false)
        );
        let reader = std::thread::spawn(move || read_exactly(&sl, &ss, 4_000_004));
        let (n, all) = cl.send(fd, &mut |put| put(b"next"), true).unwrap();
        assert_eq!((n, all), (4, true));
        let got = reader.join().unwrap();
        assert!(got[..big.len()] == big[..] && &got[big.len()..] == b"next");
    }

    #[test]
    fn many_small_pieces_arrive_whole_and_in_order() {
        let ((cs, cl), (ss, sl)) = linked();
        let pieces: Vec<Vec<u8>> = (0..5000u32)
            .map(|i| vec![(i % 251) as u8; 1 + (i as usize * 7) % 40])
            .collect();
        let want: Vec<u8> = pieces.concat();
        let total = want.len();
        let reader = std::thread::spawn(move || read_exactly(&sl, &ss, total));
        let (n, all) = cl
            .send(
                cs.as_raw_fd(),
                &mut |put| pieces.iter().for_each(|p| put(p)),
                true,
            )
            .unwrap();
        assert!(all && n == total);
        assert_eq!(reader.join().unwrap(), want);
    }

    #[test]
    fn the_record_count_follows_records_split_anywhere() {
        let mut stream = Vec::new();
        for len in [0u16, 1, 5, 300, 16_384 + 22, u16::MAX] {
            stream.extend_from_slice(&[0x17, 3, 3]);
            stream.extend_from_slice(&len.to_be_bytes());
            stream.resize(stream.len() + usize::from(len), 0xab);
        }
        for step in [1, 2, 3, 4, 5, 7, 4096, stream.len()] {
            let mut count = RecordCount::default();
            let ended: usize = stream.chunks(step).map(|c| count.track(c)).sum();
            assert_eq!(
                (ended, count.left, count.head_len),
                (6, 0, 0),
                "step {step}"
            );
        }
    }
}
