//! Plain data shared by the transports (`confab-net`) and the protocol core (`confab-core`):
//! where a message came from and where one must go. No IO here.

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl TransportKind {
    /// Reliable transports get no retransmissions (RFC 3261 §17.1.1.2, §17.1.2.2).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Self::Udp)
    }

    /// Stream transports frame messages by Content-Length (RFC 3261 §18.3). WebSocket carries one
    /// message per frame (RFC 7118 §5) and UDP one per datagram.
    pub fn is_stream(self) -> bool {
        matches!(self, Self::Tcp | Self::Tls)
    }

    pub fn is_secure(self) -> bool {
        matches!(self, Self::Tls | Self::Wss)
    }

    /// The Via transport token (RFC 3261 §20.42, RFC 7118 §5.2).
    pub fn via_token(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
            Self::Ws => "WS",
            Self::Wss => "WSS",
        }
    }

    /// Parses a Via transport token or a `transport=` URI parameter (case-insensitive).
    pub fn from_token(token: &str) -> Option<Self> {
        Some(match token.to_ascii_uppercase().as_str() {
            "UDP" => Self::Udp,
            "TCP" => Self::Tcp,
            "TLS" => Self::Tls,
            "WS" => Self::Ws,
            "WSS" => Self::Wss,
            _ => return None,
        })
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_token())
    }
}

/// Identifies one connection (TCP, TLS, WS, WSS) for the life of the process; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// Where an inbound message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub transport: TransportKind,
    /// The peer's address as seen by the socket (after any NAT).
    pub peer: SocketAddr,
    /// The local address the message arrived on.
    pub local: SocketAddr,
    /// The connection, for connection-oriented transports.
    pub connection: Option<ConnectionId>,
    /// When the transport read the message (never the handler's own clock).
    pub received_at: Instant,
}

/// Where an outbound message must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    pub transport: TransportKind,
    pub addr: SocketAddr,
    /// Send over this connection if it is still open (responses, requests to a contact that
    /// registered over a connection). For UDP: the local socket is chosen by `local`.
    pub connection: Option<ConnectionId>,
    /// For UDP, the local address to send from (the socket the request arrived on), so NATs see
    /// replies from the address they expect.
    pub local: Option<SocketAddr>,
}

/// Bytes to send, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
    pub destination: Destination,
    pub bytes: Bytes,
}
