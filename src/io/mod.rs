//! The byte streams under a transport, for its drivers: the socket (TCP or
//! Unix, `socket`) and, over it, optional TLS (`tls`). The protocol core
//! never sees which one carries its frames.

pub mod doorbell;
pub mod socket;
pub mod tls;

use std::io;
use std::os::fd::{AsRawFd, RawFd};

pub use doorbell::Doorbell;
pub use socket::{Address, Socket};
pub use tls::{ClientAuth, PeerCertificate, TlsConfig, TlsLink};

use crate::readbuf::ReadBuf;

/// One connection: its socket, and TLS when it has it.
pub struct Link {
    pub socket: Socket,
    pub tls: Option<TlsLink>,
}

impl Link {
    pub fn plain(socket: Socket) -> Link {
        Link { socket, tls: None }
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads once into `rb` (blocking unless `nonblocking`); `Ok(0)` is the
    /// end of the connection. `wake_writer`: see `TlsLink::fill`.
    pub fn fill(
        &self,
        rb: &mut ReadBuf,
        nonblocking: bool,
        wake_writer: &dyn Fn(),
    ) -> io::Result<usize> {
        match &self.tls {
            None if nonblocking => rb.fill_now(self.fd()),
            None => rb.fill(self.fd()),
            Some(t) => t.fill(rb, self.fd(), nonblocking, wake_writer),
        }
    }
}
