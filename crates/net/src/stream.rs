//! SIP over TCP and TLS (RFC 3261 §18): listeners, accepted and outbound connections, and the
//! connection driver that frames messages by Content-Length (RFC 3261 §18.3).
//!
//! A connection is one task. Its reader frames and delivers messages inline; its writer drains
//! a bounded queue that [`TransportHandle::send`](crate::TransportHandle::send) fills. When the
//! reader stops (EOF, error, limit, idle, shutdown) the connection leaves the table, the writer
//! writes what is already queued and closes our side.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use confab_sip::framing::{self, Frame, FramingError};
use confab_sip::transport::{Destination, Source, TransportKind};
use rustls_pki_types::ServerName;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::conn::{ConnGuard, ConnTable, IpSlot};
use crate::{tls, ws, NetError, NetStats, SendError, Shared, TaskToken};

/// Bytes asked for per read; the buffer grows to hold one message of the maximum size.
const READ_CHUNK: usize = 8192;
const LISTEN_BACKLOG: i32 = 1024;
/// RFC 5626 §3.5.1: the answer to a CRLFCRLF ping.
pub(crate) const PONG: &[u8] = b"\r\n";

pub(crate) fn listen(kind: TransportKind, addr: SocketAddr) -> Result<TcpListener, NetError> {
    let error = |source| NetError::Bind {
        transport: kind,
        addr,
        source,
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(error)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(error)?;
    }
    // Restarts must not fail on connections in TIME_WAIT.
    socket.set_reuse_address(true).map_err(error)?;
    socket.bind(&addr.into()).map_err(error)?;
    socket.listen(LISTEN_BACKLOG).map_err(error)?;
    socket.set_nonblocking(true).map_err(error)?;
    TcpListener::from_std(socket.into()).map_err(error)
}

/// Accepts connections for one listener until shutdown.
pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    kind: TransportKind,
    listener: TcpListener,
    token: TaskToken,
) {
    let mut shutdown = shared.shutdown_signal();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Typically EMFILE: give connections time to close instead of spinning.
                tracing::warn!(transport = %kind, %error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = ConnTable::admit(&shared, peer.ip()) else {
            NetStats::add(&shared.stats.connections_rejected);
            tracing::warn!(
                transport = %kind, %peer, limit = shared.config.max_connections_per_ip,
                "connection refused: per-IP connection limit reached"
            );
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let Some(task) = shared.task_token() else {
            break;
        };
        tokio::spawn(inbound(shared.clone(), kind, tcp, peer, slot, task));
    }
    drop(token);
}

/// One accepted connection: handshakes for its transport, then the connection driver.
async fn inbound(
    shared: Arc<Shared>,
    kind: TransportKind,
    tcp: TcpStream,
    peer: SocketAddr,
    slot: IpSlot,
    _task: TaskToken,
) {
    let Ok(local) = tcp.local_addr() else { return };
    match kind {
        TransportKind::Tcp => serve_inbound(shared, kind, tcp, peer, local, slot).await,
        TransportKind::Ws => ws::serve(shared, kind, tcp, peer, local, slot).await,
        TransportKind::Tls | TransportKind::Wss => {
            let Some(acceptor) = shared.tls.as_ref().map(|tls| tls.acceptor.clone()) else {
                return;
            };
            let mut shutdown = shared.shutdown_signal();
            let handshake = timeout(shared.config.handshake_timeout, acceptor.accept(tcp));
            let tls = tokio::select! {
                () = shutdown.wait() => return,
                result = handshake => match result {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::debug!(transport = %kind, %peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(transport = %kind, %peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            if kind == TransportKind::Tls {
                serve_inbound(shared, kind, tls, peer, local, slot).await;
            } else {
                ws::serve(shared, kind, tls, peer, local, slot).await;
            }
        }
        TransportKind::Udp => {}
    }
}

async fn serve_inbound<S>(
    shared: Arc<Shared>,
    kind: TransportKind,
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    slot: IpSlot,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut guard, queue_tx, queue_rx) = register(&shared, kind, peer, slot);
    guard.establish(local, true);
    run(shared, guard, stream, local, queue_tx, queue_rx).await;
}

/// Gives an inbound connection its id and send queue.
pub(crate) fn register(
    shared: &Arc<Shared>,
    kind: TransportKind,
    peer: SocketAddr,
    slot: IpSlot,
) -> (ConnGuard, mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
    let id = shared.conns.next_id();
    let (queue_tx, queue_rx) = mpsc::channel(shared.config.send_queue_len.max(1));
    shared.conns.insert(id, kind, peer, queue_tx.clone());
    let guard = ConnGuard::new(shared.clone(), id, kind, peer, Some(slot));
    (guard, queue_tx, queue_rx)
}

/// Queues `bytes` on an open TCP/TLS connection to the destination, or opens one.
pub(crate) fn send_or_connect(
    shared: &Arc<Shared>,
    destination: Destination,
    bytes: Bytes,
) -> Result<(), SendError> {
    if shared.stopping.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(SendError::ShuttingDown);
    }
    let kind = destination.transport;
    let queue_len = shared.config.send_queue_len;
    let Some((id, queue_rx)) =
        shared
            .conns
            .send_or_insert(kind, destination.addr, bytes, queue_len)?
    else {
        return Ok(());
    };
    let Some(task) = shared.task_token() else {
        shared.conns.remove(id);
        return Err(SendError::ShuttingDown);
    };
    let guard = ConnGuard::new(shared.clone(), id, kind, destination.addr, None);
    shared
        .runtime
        .spawn(outbound(shared.clone(), guard, queue_rx, task));
    Ok(())
}

async fn outbound(
    shared: Arc<Shared>,
    mut guard: ConnGuard,
    queue_rx: mpsc::Receiver<Bytes>,
    _task: TaskToken,
) {
    let (kind, addr) = (guard.kind, guard.peer);
    let limit = shared.config.handshake_timeout;
    let mut shutdown = shared.shutdown_signal();
    let fail = |reason: &dyn std::fmt::Display| {
        NetStats::add(&shared.stats.send_errors);
        tracing::warn!(transport = %kind, peer = %addr, %reason, "outbound connection failed");
    };
    let tcp = tokio::select! {
        () = shutdown.wait() => return,
        result = timeout(limit, TcpStream::connect(addr)) => match result {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(error)) => return fail(&error),
            Err(_) => return fail(&"connect timed out"),
        },
    };
    let _ = tcp.set_nodelay(true);
    let local = match tcp.local_addr() {
        Ok(local) => local,
        Err(error) => return fail(&error),
    };
    // The pong sender: the table holds the other one.
    let Some(queue_tx) = shared.conns.queue(guard.id) else {
        return;
    };
    match kind {
        TransportKind::Tcp => {
            guard.establish(local, false);
            run(shared, guard, tcp, local, queue_tx, queue_rx).await;
        }
        TransportKind::Tls => {
            let connector = shared
                .tls_client
                .get_or_init(|| tls::connector(shared.config.tls_trust.as_deref()));
            let connector = match connector {
                Ok(connector) => connector.clone(),
                Err(error) => return fail(error),
            };
            // Destinations carry an address only, so the certificate must name the IP.
            let name = ServerName::from(addr.ip());
            let tls = tokio::select! {
                () = shutdown.wait() => return,
                result = timeout(limit, connector.connect(name, tcp)) => match result {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => return fail(&error),
                    Err(_) => return fail(&"TLS handshake timed out"),
                },
            };
            guard.establish(local, false);
            run(shared, guard, tls, local, queue_tx, queue_rx).await;
        }
        TransportKind::Udp | TransportKind::Ws | TransportKind::Wss => {}
    }
}

/// Why a connection's reader stopped (for the log).
#[derive(Debug)]
pub(crate) enum Close {
    Eof,
    Idle,
    Shutdown,
    Io(String),
    Oversize,
    Garbage(String),
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Eof => f.write_str("closed by the peer"),
            Self::Idle => f.write_str("idle timeout"),
            Self::Shutdown => f.write_str("shutting down"),
            Self::Io(error) => write!(f, "read error: {error}"),
            Self::Oversize => f.write_str("oversize message"),
            Self::Garbage(error) => write!(f, "not SIP: {error}"),
        }
    }
}

/// Drives one established stream connection until it ends.
async fn run<S>(
    shared: Arc<Shared>,
    guard: ConnGuard,
    stream: S,
    local: SocketAddr,
    queue_tx: mpsc::Sender<Bytes>,
    queue_rx: mpsc::Receiver<Bytes>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    let read = read_loop(&shared, &guard, reader, local, queue_tx);
    let write = write_loop(&shared, writer, queue_rx);
    tokio::pin!(read, write);
    tokio::select! {
        reason = &mut read => {
            tracing::debug!(connection = guard.id.0, peer = %guard.peer, %reason, "closing");
            // No new sends; write what is queued (the reader's pong sender is gone with it),
            // then close our side.
            guard.unlist();
            let _ = timeout(shared.config.handshake_timeout, write).await;
        }
        () = &mut write => {
            tracing::debug!(connection = guard.id.0, peer = %guard.peer, "closing after a failed write");
        }
    }
}

async fn read_loop<R>(
    shared: &Shared,
    guard: &ConnGuard,
    mut reader: R,
    local: SocketAddr,
    pong: mpsc::Sender<Bytes>,
) -> Close
where
    R: AsyncRead + Unpin,
{
    let max = shared.config.max_message_size;
    let mut shutdown = shared.shutdown_signal();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            biased;
            () = shutdown.wait() => return Close::Shutdown,
            read = timeout(shared.config.idle_timeout, reader.read_buf(&mut buf)) => read,
        };
        match read {
            Err(_) => return Close::Idle,
            Ok(Err(error)) => return Close::Io(error.to_string()),
            Ok(Ok(0)) => return Close::Eof,
            Ok(Ok(_)) => {}
        }
        let received_at = Instant::now();
        loop {
            match framing::next_frame(&buf, max) {
                Ok(Frame::Incomplete) => break,
                Ok(Frame::Ping { consumed }) => {
                    buf.advance(consumed);
                    // A full queue already has traffic that keeps the flow alive.
                    let _ = pong.try_send(Bytes::from_static(PONG));
                }
                Ok(Frame::Skip { consumed }) => buf.advance(consumed),
                Ok(Frame::Message { len }) => {
                    // Copied out so a stored message does not pin the connection's buffer.
                    let bytes = Bytes::copy_from_slice(&buf[..len]);
                    buf.advance(len);
                    deliver(shared, guard, bytes, local, received_at);
                }
                Err(FramingError::TooLarge { limit }) => {
                    NetStats::add(&shared.stats.dropped_oversize);
                    tracing::warn!(
                        transport = %guard.kind, peer = %guard.peer, limit,
                        "oversize message; closing the connection"
                    );
                    return Close::Oversize;
                }
                Err(error) => {
                    NetStats::add(&shared.stats.dropped_garbage);
                    // The headers are complete but the frame length is unknowable (a negative or
                    // conflicting Content-Length, RFC 4475 §3.1.2.3): hand up the header block so
                    // the request still gets its 400 before the connection closes.
                    if let Some(end) = memchr_headers_end(&buf) {
                        let bytes = Bytes::copy_from_slice(&buf[..end]);
                        deliver(shared, guard, bytes, local, received_at);
                    }
                    tracing::debug!(
                        transport = %guard.kind, peer = %guard.peer, %error,
                        "unframeable stream; closing the connection"
                    );
                    return Close::Garbage(error.to_string());
                }
            }
        }
    }
}

/// The length of the header block (through the blank line), if it is complete.
fn memchr_headers_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Hands one message to the handler.
pub(crate) fn deliver(
    shared: &Shared,
    guard: &ConnGuard,
    bytes: Bytes,
    local: SocketAddr,
    received_at: Instant,
) {
    let Some(handler) = shared.handler() else {
        return;
    };
    NetStats::add(&shared.stats.received);
    let source = Source {
        transport: guard.kind,
        peer: guard.peer,
        local,
        connection: Some(guard.id),
        received_at,
    };
    handler.on_message(bytes, source);
}

/// Writes queued messages until every sender is gone or a write fails; then closes our side.
async fn write_loop<W>(shared: &Shared, mut writer: W, mut queue: mpsc::Receiver<Bytes>)
where
    W: AsyncWrite + Unpin,
{
    let limit = shared.config.handshake_timeout;
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        // Whatever else is queued goes out before one flush.
        while batch.len() < 64 {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let write = async {
            for bytes in &batch {
                writer.write_all(bytes).await?;
            }
            writer.flush().await
        };
        match timeout(limit, write).await {
            Ok(Ok(())) => {
                let messages = batch.iter().filter(|b| b.as_ref() != PONG).count();
                shared
                    .stats
                    .sent
                    .fetch_add(messages as u64, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(Err(error)) => {
                NetStats::add(&shared.stats.send_errors);
                tracing::debug!(%error, "write failed");
                return;
            }
            Err(_) => {
                NetStats::add(&shared.stats.send_errors);
                tracing::warn!("write timed out: the peer is not reading");
                return;
            }
        }
    }
    let _ = timeout(limit, writer.shutdown()).await;
}
