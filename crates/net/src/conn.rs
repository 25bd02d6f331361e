//! The table of open connections (every transport but UDP): ids, send queues, lookup by peer
//! address, and per-IP counts.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use confab_sip::transport::{ConnectionId, TransportKind};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::{NetStats, SendError, Shared};

#[derive(Default)]
pub(crate) struct ConnTable {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<ConnectionId, Entry>,
    /// The newest connection to each peer address, for sends without a connection id.
    by_addr: HashMap<(TransportKind, SocketAddr), ConnectionId>,
    /// Inbound connections per peer IP (accepted, including those still in a handshake).
    per_ip: HashMap<IpAddr, usize>,
}

struct Entry {
    kind: TransportKind,
    peer: SocketAddr,
    queue: mpsc::Sender<Bytes>,
}

impl ConnTable {
    /// A fresh id; never reused within the process.
    pub(crate) fn next_id(&self) -> ConnectionId {
        ConnectionId(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Counts an inbound connection from `ip`, or refuses it when `limit` are already open.
    pub(crate) fn admit(shared: &Arc<Shared>, ip: IpAddr) -> Option<IpSlot> {
        let limit = shared.config.max_connections_per_ip;
        let mut inner = shared.conns.inner.lock();
        let count = inner.per_ip.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            shared: shared.clone(),
            ip,
        })
    }

    /// Makes a connection reachable by id and by peer address.
    pub(crate) fn insert(
        &self,
        id: ConnectionId,
        kind: TransportKind,
        peer: SocketAddr,
        queue: mpsc::Sender<Bytes>,
    ) {
        let mut inner = self.inner.lock();
        inner.by_id.insert(id, Entry { kind, peer, queue });
        inner.by_addr.insert((kind, peer), id);
    }

    pub(crate) fn remove(&self, id: ConnectionId) {
        let mut inner = self.inner.lock();
        if let Some(entry) = inner.by_id.remove(&id) {
            let key = (entry.kind, entry.peer);
            if inner.by_addr.get(&key) == Some(&id) {
                inner.by_addr.remove(&key);
            }
        }
    }

    /// Another sender for a connection's queue (for the connection's own keep-alive answers).
    pub(crate) fn queue(&self, id: ConnectionId) -> Option<mpsc::Sender<Bytes>> {
        self.inner
            .lock()
            .by_id
            .get(&id)
            .map(|entry| entry.queue.clone())
    }

    pub(crate) fn send_on(&self, id: ConnectionId, bytes: Bytes) -> Result<(), SendError> {
        let inner = self.inner.lock();
        let entry = inner
            .by_id
            .get(&id)
            .ok_or(SendError::ConnectionClosed(id))?;
        enqueue(&entry.queue, id, bytes)
    }

    /// Queues on the newest open connection of `kind` to `addr`.
    pub(crate) fn send_to_addr(
        &self,
        kind: TransportKind,
        addr: SocketAddr,
        bytes: Bytes,
    ) -> Result<(), SendError> {
        let inner = self.inner.lock();
        let id = *inner
            .by_addr
            .get(&(kind, addr))
            .ok_or(SendError::NoConnection {
                transport: kind,
                addr,
            })?;
        let entry = inner
            .by_id
            .get(&id)
            .ok_or(SendError::ConnectionClosed(id))?;
        enqueue(&entry.queue, id, bytes)
    }

    /// Queues on the newest open connection of `kind` to `addr`; when there is none, registers
    /// a new connection with a queue holding `bytes` and returns its id and queue receiver for
    /// the caller to connect. Atomic, so two sends never open two connections.
    pub(crate) fn send_or_insert(
        &self,
        kind: TransportKind,
        addr: SocketAddr,
        bytes: Bytes,
        queue_len: usize,
    ) -> Result<Option<(ConnectionId, mpsc::Receiver<Bytes>)>, SendError> {
        let mut inner = self.inner.lock();
        if let Some(&id) = inner.by_addr.get(&(kind, addr)) {
            if let Some(entry) = inner.by_id.get(&id) {
                return enqueue(&entry.queue, id, bytes).map(|()| None);
            }
        }
        let id = self.next_id();
        let (queue, receiver) = mpsc::channel(queue_len.max(1));
        enqueue(&queue, id, bytes)?;
        inner.by_id.insert(
            id,
            Entry {
                kind,
                peer: addr,
                queue,
            },
        );
        inner.by_addr.insert((kind, addr), id);
        Ok(Some((id, receiver)))
    }
}

fn enqueue(queue: &mpsc::Sender<Bytes>, id: ConnectionId, bytes: Bytes) -> Result<(), SendError> {
    queue.try_send(bytes).map_err(|error| match error {
        mpsc::error::TrySendError::Full(_) => SendError::QueueFull,
        mpsc::error::TrySendError::Closed(_) => SendError::ConnectionClosed(id),
    })
}

/// One inbound connection counted against its IP's limit; uncounted on drop.
pub(crate) struct IpSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut inner = self.shared.conns.inner.lock();
        if let Some(count) = inner.per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                inner.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Owns a connection's place in the table. Dropping it removes the connection and, if it was
/// established, updates the gauge and tells the handler (so this happens on every exit path).
pub(crate) struct ConnGuard {
    shared: Arc<Shared>,
    pub(crate) id: ConnectionId,
    pub(crate) kind: TransportKind,
    pub(crate) peer: SocketAddr,
    established: bool,
    /// For inbound connections: released before the handler hears of the close, so a peer told
    /// of the close may connect again at once.
    slot: Option<IpSlot>,
}

impl ConnGuard {
    pub(crate) fn new(
        shared: Arc<Shared>,
        id: ConnectionId,
        kind: TransportKind,
        peer: SocketAddr,
        slot: Option<IpSlot>,
    ) -> Self {
        Self {
            shared,
            id,
            kind,
            peer,
            established: false,
            slot,
        }
    }

    /// The connection is ready for messages (connected and any handshake done).
    pub(crate) fn establish(&mut self, local: SocketAddr, inbound: bool) {
        self.established = true;
        NetStats::add(&self.shared.stats.connections_open);
        tracing::debug!(
            connection = self.id.0, transport = %self.kind, peer = %self.peer, %local, inbound,
            "connection open"
        );
    }

    /// Stops new sends to this connection; what is queued still gets written.
    pub(crate) fn unlist(&self) {
        self.shared.conns.remove(self.id);
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.conns.remove(self.id);
        self.slot.take();
        if self.established {
            self.shared
                .stats
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(
                connection = self.id.0, transport = %self.kind, peer = %self.peer,
                "connection closed"
            );
            if let Some(handler) = self.shared.handler() {
                handler.on_connection_closed(self.id);
            }
        }
    }
}
