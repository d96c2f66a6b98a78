//! What the driver tests share: a handshake of two transports and an echo
//! round trip (the peer's `Recording` answers REQUESTs of id 7 with "re:").

use std::sync::Arc;
use std::time::Duration;

use super::Core;
use crate::protocol::testing::Recording;

/// Runs both sides' handshakes at once (each waits for the other).
pub fn handshake(dialer: &Arc<Core<Recording>>, acceptor: &Arc<Core<Recording>>) {
    let shaking = std::thread::spawn({
        let acceptor = acceptor.clone();
        move || {
            acceptor
                .handshake(Duration::from_secs(10), &mut || Ok(()))
                .map(|_| ())
        }
    });
    dialer
        .handshake(Duration::from_secs(10), &mut || Ok(()))
        .expect("dialer handshake");
    shaking.join().expect("thread").expect("acceptor handshake");
}

/// A REQUEST of id 7 and its echoed RESPONSE.
pub fn assert_echo(client: &Core<Recording>) {
    let pending = client
        .send_request(7, b"ping", false, &mut || Ok(()))
        .expect("send");
    let reply = client
        .wait_response(&pending, None)
        .expect("reply")
        .expect("ok");
    assert_eq!(&reply.data[..], b"re:ping");
}

/// A dialed transport with `idle.timeout` set, which keeps its reader thread.
pub fn with_idle_timeout(listener: &std::net::TcpListener) -> Arc<Core<Recording>> {
    use crate::io::{Link, Socket};
    use crate::settings::{Role, Settings};
    let addr = listener.local_addr().expect("address");
    let sock = std::net::TcpStream::connect(addr).expect("connect");
    let mut settings = Settings::defaults(Role::Dialer);
    settings.idle_timeout = Some(Duration::from_secs(5));
    Core::new("t", Link::plain(Socket::Tcp(sock)), 1, settings, echo()).expect("core")
}

/// Answers REQUESTs of id 7 with "re:" and their data.
pub fn echo() -> Recording {
    Recording {
        ids: [7].into(),
        answer: true,
        ..Default::default()
    }
}
