//! The crate's errors: [`NetError`] for setting up, [`SendError`] for sending.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use confab_sip::transport::{ConnectionId, TransportKind};
use thiserror::Error;

/// Why [`Transports::bind`](crate::Transports::bind) failed. Every variant names the address or
/// file at fault.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NetError {
    #[error("cannot bind {transport} on {addr}: {source}")]
    Bind {
        transport: TransportKind,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("TLS file {path}: {reason}")]
    TlsFile { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    #[error("cannot generate a self-signed certificate: {0}")]
    CertificateGeneration(String),
}

/// Why [`TransportHandle::send`](crate::TransportHandle::send) did not send or queue.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SendError {
    /// No socket can send to this destination (no UDP socket of its address family).
    #[error("no {transport} socket for {addr}")]
    NoSocket {
        transport: TransportKind,
        addr: SocketAddr,
    },
    /// The connection has closed (or never existed).
    #[error("connection {0:?} is closed")]
    ConnectionClosed(ConnectionId),
    /// No open connection to a destination we cannot connect to (WS, WSS).
    #[error("no {transport} connection to {addr}")]
    NoConnection {
        transport: TransportKind,
        addr: SocketAddr,
    },
    /// The connection's send queue, or the UDP socket's buffer, is full.
    #[error("send queue full")]
    QueueFull,
    /// The transports are shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// The operating system refused the datagram.
    #[error("send failed: {0}")]
    Io(#[from] io::Error),
}
