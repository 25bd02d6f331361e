//! SIP over UDP (RFC 3261 §18): the hot path.
//!
//! One OS thread per socket blocks in `recv_from` and calls the handler inline: no task wake-up,
//! no channel, one allocation per datagram (the message's own bytes). Sends are a direct
//! non-blocking `send_to` on the same socket from the caller's thread.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_sip::framing;
use confab_sip::transport::{Destination, Source, TransportKind};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::{Handler, NetError, NetStats, SendError, Shared};

/// Requested SO_RCVBUF/SO_SNDBUF; the kernel caps it (net.core.rmem_max / wmem_max).
const SOCKET_BUFFER: usize = 4 << 20;
/// How often a receive thread looks at the stop flag if no wake-up datagram reaches it.
const RECV_TIMEOUT: Duration = Duration::from_millis(500);

pub(crate) struct UdpEndpoint {
    socket: std::net::UdpSocket,
    pub(crate) local: SocketAddr,
}

impl UdpEndpoint {
    pub(crate) fn bind(addr: SocketAddr, max_message_size: usize) -> Result<Self, NetError> {
        let error = |source| NetError::Bind {
            transport: TransportKind::Udp,
            addr,
            source,
        };
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
            .map_err(error)?;
        if addr.is_ipv6() {
            // Lets a v4 and a v6 socket share a port; a dual-stack socket would report mapped
            // addresses (::ffff:a.b.c.d) that the rest of the server would have to unmap.
            socket.set_only_v6(true).map_err(error)?;
        }
        let buffer = SOCKET_BUFFER.max(max_message_size * 4);
        if let Err(e) = socket.set_recv_buffer_size(buffer) {
            tracing::warn!(%addr, error = %e, "cannot set SO_RCVBUF");
        }
        if let Err(e) = socket.set_send_buffer_size(buffer) {
            tracing::warn!(%addr, error = %e, "cannot set SO_SNDBUF");
        }
        socket.bind(&addr.into()).map_err(error)?;
        socket.set_read_timeout(Some(RECV_TIMEOUT)).map_err(error)?;
        let socket: std::net::UdpSocket = socket.into();
        let local = socket.local_addr().map_err(error)?;
        Ok(Self { socket, local })
    }

    /// Sends an empty datagram to this socket so its receive thread looks at the stop flag now
    /// rather than after [`RECV_TIMEOUT`].
    pub(crate) fn wake(&self) {
        let mut target = self.local;
        if target.ip().is_unspecified() {
            target.set_ip(match target.ip() {
                IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = send_nonblocking(&self.socket, &[], target);
    }
}

pub(crate) fn spawn_receiver(
    shared: Arc<Shared>,
    index: usize,
    handler: Arc<dyn Handler>,
) -> io::Result<JoinHandle<()>> {
    let local = shared.udp[index].local;
    std::thread::Builder::new()
        .name(format!("sip-udp-{local}"))
        .spawn(move || receive_loop(&shared, &shared.udp[index], &*handler))
}

fn receive_loop(shared: &Shared, endpoint: &UdpEndpoint, handler: &dyn Handler) {
    let max = shared.config.max_message_size;
    let stats = &shared.stats;
    // One byte more than allowed, so that a longer datagram shows as truncated to max + 1.
    let mut buf = vec![0u8; max.saturating_add(1)];
    tracing::debug!(local = %endpoint.local, "UDP receive thread started");
    loop {
        let result = endpoint.socket.recv_from(&mut buf);
        if shared.stopping.load(Ordering::Relaxed) {
            break;
        }
        let (len, peer) = match result {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                // E.g. an ICMP error reported on the socket; keep serving, but never spin.
                tracing::debug!(local = %endpoint.local, error = %e, "UDP receive error");
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        let received_at = Instant::now();
        let datagram = &buf[..len];
        match classify(datagram, max) {
            Datagram::KeepAlive => continue,
            Datagram::Oversize => {
                // Still handed up: the handler answers a request it can address with 513
                // (RFC 3261 §21.5.14). Debug only: any sender could flood a warning log.
                NetStats::add(&stats.dropped_oversize);
                tracing::debug!(%peer, len, "oversize UDP datagram");
            }
            Datagram::Garbage => {
                NetStats::add(&stats.dropped_garbage);
                tracing::debug!(%peer, len, "non-SIP UDP datagram dropped");
                continue;
            }
            Datagram::Message => {}
        }
        NetStats::add(&stats.received);
        let source = Source {
            transport: TransportKind::Udp,
            peer,
            local: endpoint.local,
            connection: None,
            received_at,
        };
        // Copied rather than split from a shared buffer: the handler may keep the message (or
        // slices of it) for long, and must not pin a large receive buffer.
        let bytes = Bytes::copy_from_slice(datagram);
        // A bug in the handler must not stop UDP for good.
        if catch_unwind(AssertUnwindSafe(|| handler.on_message(bytes, source))).is_err() {
            tracing::error!(%peer, "handler panicked on a UDP message");
        }
    }
    tracing::debug!(local = %endpoint.local, "UDP receive thread stopped");
}

#[derive(Debug, PartialEq, Eq)]
enum Datagram {
    Message,
    /// CRLF keep-alives (RFC 5626 §3.5.1 over UDP in practice), the 4-byte keep-alives some
    /// phones send, empty datagrams, and STUN (RFC 5626 §4.4.2; answering it is not done yet).
    KeepAlive,
    Oversize,
    Garbage,
}

fn classify(datagram: &[u8], max: usize) -> Datagram {
    if datagram.len() <= 4 || datagram.iter().all(|&b| b == b'\r' || b == b'\n') {
        return Datagram::KeepAlive;
    }
    if is_stun(datagram) {
        return Datagram::KeepAlive;
    }
    if datagram.len() > max {
        return Datagram::Oversize;
    }
    if !framing::can_start_message(datagram[0]) {
        return Datagram::Garbage;
    }
    Datagram::Message
}

/// RFC 5389 §6: two zero bits, then the magic cookie at bytes 4..8.
fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[0] & 0xC0 == 0 && datagram[4..8] == [0x21, 0x12, 0xA4, 0x42]
}

pub(crate) fn send(
    shared: &Shared,
    destination: &Destination,
    bytes: &[u8],
) -> Result<(), SendError> {
    let by_local = destination
        .local
        .and_then(|local| shared.udp.iter().find(|e| e.local == local));
    let endpoint = by_local
        .or_else(|| {
            shared
                .udp
                .iter()
                .find(|e| e.local.is_ipv4() == destination.addr.is_ipv4())
        })
        .ok_or(SendError::NoSocket {
            transport: TransportKind::Udp,
            addr: destination.addr,
        })?;
    match send_nonblocking(&endpoint.socket, bytes, destination.addr) {
        Ok(_) => {
            NetStats::add(&shared.stats.sent);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(SendError::QueueFull),
        Err(e) => Err(SendError::Io(e)),
    }
}

/// `send_to` that fails with `WouldBlock` instead of waiting when the socket buffer is full:
/// senders include tokio tasks, which must never block.
fn send_nonblocking(
    socket: &std::net::UdpSocket,
    bytes: &[u8],
    to: SocketAddr,
) -> io::Result<usize> {
    SockRef::from(socket).send_to_with_flags(bytes, &to.into(), libc::MSG_DONTWAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_datagrams() {
        assert_eq!(classify(b"", 100), Datagram::KeepAlive);
        assert_eq!(classify(b"\r\n\r\n", 100), Datagram::KeepAlive);
        assert_eq!(classify(b"\r\n\r\n\r\n", 100), Datagram::KeepAlive);
        assert_eq!(classify(&[0, 0, 0, 0], 100), Datagram::KeepAlive);
        let mut stun = [0u8; 20];
        stun[1] = 1;
        stun[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        assert_eq!(classify(&stun, 100), Datagram::KeepAlive);
        assert_eq!(classify(&[0u8; 30], 100), Datagram::Garbage);
        assert_eq!(
            classify(b"OPTIONS sip:a SIP/2.0\r\n\r\n", 100),
            Datagram::Message
        );
        assert_eq!(
            classify(b"OPTIONS sip:a SIP/2.0\r\n\r\n", 10),
            Datagram::Oversize
        );
    }
}
