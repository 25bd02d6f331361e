//! Counters, updated with relaxed atomics on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters. Read a consistent-enough copy with [`NetStats::snapshot`].
#[derive(Debug, Default)]
pub struct NetStats {
    /// Messages handed to the handler.
    pub received: AtomicU64,
    /// Messages written to a socket (keep-alive answers not counted).
    pub sent: AtomicU64,
    /// Messages over `max_message_size` (datagrams, stream messages, WebSocket messages).
    pub dropped_oversize: AtomicU64,
    /// Input that cannot be a SIP message: unframeable streams, binary datagrams, invalid UTF-8
    /// in WebSocket text, refused WebSocket handshakes.
    pub dropped_garbage: AtomicU64,
    /// Connections open now (gauge).
    pub connections_open: AtomicU64,
    /// Inbound connections refused by the per-IP limit.
    pub connections_rejected: AtomicU64,
    /// Sends that failed: refused by [`send`](crate::TransportHandle::send), UDP datagrams a
    /// receive thread queued and the kernel then refused, failed writes, failed outbound
    /// connects.
    pub send_errors: AtomicU64,
}

/// A plain copy of [`NetStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStatsSnapshot {
    pub received: u64,
    pub sent: u64,
    pub dropped_oversize: u64,
    pub dropped_garbage: u64,
    pub connections_open: u64,
    pub connections_rejected: u64,
    pub send_errors: u64,
}

impl NetStats {
    pub fn snapshot(&self) -> NetStatsSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        NetStatsSnapshot {
            received: load(&self.received),
            sent: load(&self.sent),
            dropped_oversize: load(&self.dropped_oversize),
            dropped_garbage: load(&self.dropped_garbage),
            connections_open: load(&self.connections_open),
            connections_rejected: load(&self.connections_rejected),
            send_errors: load(&self.send_errors),
        }
    }

    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
