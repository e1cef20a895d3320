//! Listening sockets, one per core, all bound to the same address with SO_REUSEPORT so the
//! kernel spreads incoming connections across cores. They are created up front on the main
//! thread: a bind error (port in use) is reported before any core starts, and port 0 resolves
//! to one concrete port shared by every core.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, getsockname, listen,
    setsockopt, socket, sockopt,
};

/// Pending connections the kernel queues per core.
pub const LISTEN_BACKLOG: i32 = 1024;

fn one_socket(addr: SocketAddr) -> nix::Result<OwnedFd> {
    let family = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    listen(&fd, Backlog::new(LISTEN_BACKLOG)?)?;
    Ok(fd)
}

/// How long a start-up waits for its port to be released (a broker that was just killed keeps
/// its listener for a few milliseconds, until the kernel tears its io_uring down).
const BIND_RETRY_MS: u64 = 2_000;

/// A plain bind, retried briefly while the address is in use.
fn bind_probe(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(BIND_RETRY_MS);
    loop {
        match std::net::TcpListener::bind(addr) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Binds `count` listening sockets on `addr`; returns them with the actual bound address.
///
/// SO_REUSEPORT would also let a second broker share a port already in use, silently
/// splitting the clients between two processes; a plain bind first makes that an error.
pub fn bind_all(addr: SocketAddr, count: usize) -> std::io::Result<(Vec<OwnedFd>, SocketAddr)> {
    let probe = bind_probe(addr)?;
    let addr = probe.local_addr()?;
    drop(probe);
    let first = one_socket(addr)?;
    let bound: SockaddrStorage = getsockname(first.as_raw_fd())?;
    let actual = if let Some(v4) = bound.as_sockaddr_in() {
        SocketAddr::from((v4.ip(), v4.port()))
    } else if let Some(v6) = bound.as_sockaddr_in6() {
        SocketAddr::from((v6.ip(), v6.port()))
    } else {
        addr
    };
    let mut fds = vec![first];
    for _ in 1..count {
        fds.push(one_socket(actual)?);
    }
    Ok((fds, actual))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_resolves_to_one_shared_port() {
        let (fds, addr) = bind_all("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(fds.len(), 3);
        assert_ne!(addr.port(), 0);
        // A connection succeeds (some socket accepts into its backlog).
        std::net::TcpStream::connect(addr).unwrap();
        // Another broker on the same port is refused despite SO_REUSEPORT.
        assert!(bind_all(addr, 1).is_err());
    }
}
