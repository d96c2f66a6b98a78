//! The connected socket under a transport: TCP or a Unix domain stream
//! socket. Both are plain fds to `recv`/`sendmsg`/`poll`, so the drivers'
//! fast paths (peeking, lent buffers, corked writes) work on either.

use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

pub enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Where a socket is bound or connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Inet(SocketAddr),
    /// A socket path; `None` for an unnamed socket (a client's own end).
    Unix(Option<PathBuf>),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(a) => write!(f, "{a}"),
            Address::Unix(Some(p)) => write!(f, "{}", p.display()),
            Address::Unix(None) => write!(f, "(unnamed unix socket)"),
        }
    }
}

impl Socket {
    /// Takes ownership of a connected stream socket's fd, finding its family.
    ///
    /// # Safety
    /// `fd` must be an open socket fd that nothing else will close.
    pub unsafe fn from_raw_fd(fd: RawFd) -> io::Result<Socket> {
        let family = socket_family(fd)?;
        Ok(match family {
            libc::AF_UNIX => Socket::Unix(UnixStream::from_raw_fd(fd)),
            libc::AF_INET | libc::AF_INET6 => Socket::Tcp(TcpStream::from_raw_fd(fd)),
            other => {
                // Not ours to keep: close it rather than leak it.
                drop(std::os::fd::OwnedFd::from_raw_fd(fd));
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("socket family {other} is neither TCP nor Unix"),
                ));
            }
        })
    }

    /// Blocking mode, and TCP_NODELAY where it applies: frames are batched
    /// here already, Nagle would only delay them.
    pub fn configure(&self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => {
                s.set_nonblocking(false)?;
                s.set_nodelay(true)
            }
            Socket::Unix(s) => s.set_nonblocking(false),
        }
    }

    pub fn shutdown(&self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.shutdown(Shutdown::Both),
            Socket::Unix(s) => s.shutdown(Shutdown::Both),
        }
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_read_timeout(t),
            Socket::Unix(s) => s.set_read_timeout(t),
        }
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_write_timeout(t),
            Socket::Unix(s) => s.set_write_timeout(t),
        }
    }

    pub fn local_addr(&self) -> Option<Address> {
        match self {
            Socket::Tcp(s) => s.local_addr().ok().map(Address::Inet),
            Socket::Unix(s) => s.local_addr().ok().map(unix_address),
        }
    }

    pub fn peer_addr(&self) -> Option<Address> {
        match self {
            Socket::Tcp(s) => s.peer_addr().ok().map(Address::Inet),
            Socket::Unix(s) => s.peer_addr().ok().map(unix_address),
        }
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Socket::Tcp(s) => s.as_raw_fd(),
            Socket::Unix(s) => s.as_raw_fd(),
        }
    }
}

fn unix_address(a: std::os::unix::net::SocketAddr) -> Address {
    Address::Unix(a.as_pathname().map(|p| p.to_path_buf()))
}

fn socket_family(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: sockaddr_storage is plain data, large enough for any family;
    // getsockname writes at most `len` bytes into it.
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getsockname(fd, (&raw mut addr).cast(), &mut len) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(libc::c_int::from(addr.ss_family))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[test]
    fn knows_its_family_and_addresses() {
        let dir = std::env::temp_dir().join(format!("gofast-sock-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let listener = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        let client = UnixStream::connect(&dir).unwrap();
        // SAFETY: the fd was just detached from its owner.
        let s = unsafe { Socket::from_raw_fd(client.into_raw_fd()) }.unwrap();
        assert!(matches!(s, Socket::Unix(_)));
        s.configure().unwrap(); // no TCP_NODELAY on a Unix socket
        assert_eq!(s.peer_addr(), Some(Address::Unix(Some(dir.clone()))));
        assert_eq!(s.local_addr(), Some(Address::Unix(None)));
        drop(listener);
        let _ = std::fs::remove_file(&dir);

        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        // SAFETY: as above.
        let s = unsafe { Socket::from_raw_fd(c.into_raw_fd()) }.unwrap();
        s.configure().unwrap();
        assert_eq!(
            s.peer_addr(),
            Some(Address::Inet(tcp.local_addr().unwrap()))
        );
    }
}
