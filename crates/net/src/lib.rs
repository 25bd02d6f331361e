//! Confab's SIP transports: UDP, TCP, TLS (RFC 3261 §18), WebSocket and secure WebSocket
//! (RFC 7118), on tokio and rustls.
//!
//! This crate moves bytes and nothing else: it cuts stream bytes into messages
//! ([`confab_sip::framing`]), answers keep-alives (RFC 5626 §3.5.1), enforces size, idle and
//! per-source connection limits, and hands each message with its [`Source`] to a [`Handler`]. It
//! never parses a SIP message and keeps no SIP state; `confab-core` does that and sends through a
//! [`TransportHandle`].
//!
//! Calling contract:
//! 1. [`Transports::bind`] binds every configured socket (inside a tokio runtime, which later
//!    connection tasks run on) and loads or generates the TLS certificate;
//! 2. [`Transports::local_addrs`] tells the bound addresses (port 0 in the config picks one);
//! 3. [`Transports::start`] starts receiving and hands messages to the handler;
//! 4. [`TransportHandle::send`], from any thread, at any time, never blocks;
//! 5. [`Transports::shutdown`] stops accepting, closes connections and joins the UDP threads.
//!
//! Threads: each UDP socket has its own OS thread that reads datagrams in batches (`recvmmsg`)
//! and calls [`Handler::on_message`] inline for each (the SIP hot path: no task wake-up, no
//! channel); what the handler sends on that same socket leaves with one `sendmmsg` at the end of
//! the batch. Stream connections run as tokio tasks and also call the handler inline. The
//! handler must therefore be quick and must not block.

mod conn;
mod error;
mod mmsg;
mod stats;
mod stream;
mod tls;
mod udp;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use confab_sip::transport::{ConnectionId, Source, Transmit, TransportKind};
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub use crate::error::{NetError, SendError};
pub use crate::stats::{NetStats, NetStatsSnapshot};

/// Hands memory freed through the C library's `malloc` back to the operating system. glibc
/// keeps freed memory in its arenas (only the top of the main heap is returned by itself), so
/// after a burst of short-lived allocations the resident size would stay at its peak; the server
/// calls this now and then (its Rust allocations go to jemalloc, which returns memory by itself;
/// SQLite and other C code allocate through glibc). Does nothing with other C libraries.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists; it takes no
    // pointer and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What to listen on and the limits to apply. Every address list may be empty; port 0 binds an
/// ephemeral port (see [`Transports::local_addrs`]).
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub ws: Vec<SocketAddr>,
    pub wss: Vec<SocketAddr>,
    /// PEM certificate chain for TLS and WSS. With `tls_key`; when either is missing, a
    /// self-signed certificate is generated in `tls_dir`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) matching `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Where the self-signed `cert.pem` and `key.pem` (mode 0600) are generated on the first
    /// start and reused after.
    pub tls_dir: PathBuf,
    /// Subject alternative names (DNS names or IP addresses) for the generated certificate.
    pub tls_names: Vec<String>,
    /// Extra PEM CA certificates trusted for outbound TLS, besides the system store.
    pub tls_trust: Option<PathBuf>,
    /// Largest SIP message accepted, headers and body; larger ones are dropped and, on a
    /// connection, close it.
    pub max_message_size: usize,
    /// Inbound connections (TCP, TLS, WS, WSS together) allowed from one IP address.
    pub max_connections_per_ip: usize,
    /// A connection that receives nothing (keep-alives count) for this long is closed.
    pub idle_timeout: Duration,
    /// Messages queued for one connection's writer; a send to a full queue fails.
    pub send_queue_len: usize,
    /// Time allowed for a TCP connect, a TLS handshake or a WebSocket handshake.
    pub handshake_timeout: Duration,
    /// Under load, each UDP socket is read at most once per this interval, so a wake-up takes
    /// a batch (see `udp`); zero reads every datagram as soon as it arrives.
    pub udp_batch_window: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            udp: Vec::new(),
            tcp: Vec::new(),
            tls: Vec::new(),
            ws: Vec::new(),
            wss: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_dir: PathBuf::from("tls"),
            tls_names: vec!["localhost".to_owned()],
            tls_trust: None,
            max_message_size: 65535,
            max_connections_per_ip: 64,
            idle_timeout: Duration::from_secs(900),
            send_queue_len: 256,
            handshake_timeout: Duration::from_secs(10),
            udp_batch_window: Duration::ZERO,
        }
    }
}

/// Receives every inbound SIP message. Called inline on transport threads and tasks: keep it
/// short and never block (queue work elsewhere if it is slow).
pub trait Handler: Send + Sync + 'static {
    /// One whole message: a UDP datagram, a framed stream message or one WebSocket message.
    /// Keep-alives never reach the handler. The bytes are not parsed yet.
    fn on_message(&self, bytes: Bytes, source: Source);

    /// A connection that has delivered or could have delivered messages has ended; its
    /// [`ConnectionId`] is never used again.
    fn on_connection_closed(&self, id: ConnectionId) {
        let _ = id;
    }
}

/// The bound sockets. See the crate docs for the calling contract.
pub struct Transports {
    shared: Arc<Shared>,
    local_addrs: Vec<(TransportKind, SocketAddr)>,
    /// Listeners bound but not started yet.
    listeners: Mutex<Vec<(TransportKind, TcpListener)>>,
    udp_threads: Mutex<Vec<JoinHandle<()>>>,
    /// Yields `None` once every task holding a [`TaskToken`] has ended.
    tasks_done: mpsc::Receiver<()>,
}

/// Sends through the transports. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct TransportHandle {
    shared: Arc<Shared>,
}

/// Held by every spawned task; shutdown waits until all are dropped.
type TaskToken = mpsc::Sender<()>;

/// State shared by the sockets, the tasks and every [`TransportHandle`].
pub(crate) struct Shared {
    pub(crate) config: NetConfig,
    pub(crate) stats: Arc<NetStats>,
    pub(crate) udp: Vec<udp::UdpEndpoint>,
    pub(crate) conns: conn::ConnTable,
    pub(crate) tls: Option<tls::TlsContext>,
    /// Built on the first outbound TLS connection (reading the system trust store takes time).
    pub(crate) tls_client: OnceLock<Result<tokio_rustls::TlsConnector, String>>,
    /// Set by `start`, cleared when the transports are shut down or dropped: a handler usually
    /// holds a [`TransportHandle`], and that cycle must not keep the sockets open.
    handler: RwLock<Option<Arc<dyn Handler>>>,
    started: AtomicBool,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) stopping: AtomicBool,
    shutdown_tx: watch::Sender<bool>,
    task_token: Mutex<Option<TaskToken>>,
}

impl Shared {
    /// A token for a new task, or `None` once shutdown has begun (then spawn nothing).
    pub(crate) fn task_token(&self) -> Option<TaskToken> {
        self.task_token.lock().clone()
    }

    pub(crate) fn shutdown_signal(&self) -> ShutdownSignal {
        ShutdownSignal(self.shutdown_tx.subscribe())
    }

    pub(crate) fn handler(&self) -> Option<Arc<dyn Handler>> {
        self.handler.read().clone()
    }

    /// Tells every loop, task and thread to stop; waits for nothing. Idempotent.
    fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.shutdown_tx.send_replace(true);
        self.task_token.lock().take();
        for endpoint in &self.udp {
            endpoint.wake();
        }
    }
}

/// Resolves once shutdown has begun.
pub(crate) struct ShutdownSignal(watch::Receiver<bool>);

impl ShutdownSignal {
    pub(crate) async fn wait(&mut self) {
        // An error means the sender is gone, which also means shutdown.
        let _ = self.0.wait_for(|&stopping| stopping).await;
    }
}

impl Transports {
    /// Binds every configured socket and, when TLS or WSS is configured, loads the certificate
    /// or generates a self-signed one. Must run inside a tokio runtime: connection tasks are
    /// spawned on it later. Errors name the address or file that failed.
    pub async fn bind(config: NetConfig) -> Result<Self, NetError> {
        let tls = if config.tls.is_empty() && config.wss.is_empty() {
            None
        } else {
            Some(tls::TlsContext::load_or_generate(&config)?)
        };
        let mut local_addrs = Vec::new();
        let mut udp = Vec::new();
        for &addr in &config.udp {
            let endpoint = udp::UdpEndpoint::bind(addr, config.max_message_size)?;
            local_addrs.push((TransportKind::Udp, endpoint.local));
            udp.push(endpoint);
        }
        let mut listeners = Vec::new();
        for (kind, addrs) in [
            (TransportKind::Tcp, &config.tcp),
            (TransportKind::Tls, &config.tls),
            (TransportKind::Ws, &config.ws),
            (TransportKind::Wss, &config.wss),
        ] {
            for &addr in addrs {
                let listener = stream::listen(kind, addr)?;
                let local = listener.local_addr().map_err(|source| NetError::Bind {
                    transport: kind,
                    addr,
                    source,
                })?;
                local_addrs.push((kind, local));
                listeners.push((kind, listener));
            }
        }
        let (shutdown_tx, _) = watch::channel(false);
        let (token, tasks_done) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            config,
            stats: Arc::new(NetStats::default()),
            udp,
            conns: conn::ConnTable::default(),
            tls,
            tls_client: OnceLock::new(),
            handler: RwLock::new(None),
            started: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::current(),
            stopping: AtomicBool::new(false),
            shutdown_tx,
            task_token: Mutex::new(Some(token)),
        });
        Ok(Self {
            shared,
            local_addrs,
            listeners: Mutex::new(listeners),
            udp_threads: Mutex::new(Vec::new()),
            tasks_done,
        })
    }

    /// The addresses actually bound, in configuration order (UDP, TCP, TLS, WS, WSS).
    pub fn local_addrs(&self) -> Vec<(TransportKind, SocketAddr)> {
        self.local_addrs.clone()
    }

    /// A handle to send with.
    pub fn handle(&self) -> TransportHandle {
        TransportHandle {
            shared: self.shared.clone(),
        }
    }

    /// Counters, live.
    pub fn stats(&self) -> Arc<NetStats> {
        self.shared.stats.clone()
    }

    /// Starts the UDP receive threads and the accept loops; from now on `handler` gets every
    /// message. Only the first call does anything.
    pub fn start(&self, handler: Arc<dyn Handler>) {
        if self.shared.started.swap(true, Ordering::SeqCst) {
            tracing::warn!("transports already started");
            return;
        }
        *self.shared.handler.write() = Some(handler.clone());
        let mut threads = self.udp_threads.lock();
        for index in 0..self.shared.udp.len() {
            match udp::spawn_receiver(self.shared.clone(), index, handler.clone()) {
                Ok(thread) => threads.push(thread),
                Err(error) => tracing::error!(%error, "cannot start a UDP receive thread"),
            }
        }
        for (kind, listener) in self.listeners.lock().drain(..) {
            let Some(token) = self.shared.task_token() else {
                return;
            };
            let shared = self.shared.clone();
            self.shared
                .runtime
                .spawn(stream::accept_loop(shared, kind, listener, token));
        }
    }

    /// Stops accepting, closes every connection (after writing what is queued, within the
    /// handshake timeout), stops the UDP threads and waits for all of it.
    pub async fn shutdown(mut self) {
        let shared = &self.shared;
        shared.begin_shutdown();
        self.listeners.lock().clear();
        let grace = shared.config.handshake_timeout + Duration::from_secs(1);
        if tokio::time::timeout(grace, self.tasks_done.recv())
            .await
            .is_err()
        {
            tracing::warn!("connections still closing after {grace:?}; not waiting longer");
        }
        let threads: Vec<_> = self.udp_threads.lock().drain(..).collect();
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        if tokio::time::timeout(grace, joined).await.is_err() {
            tracing::warn!("UDP receive threads still running after {grace:?}");
        }
        self.shared.handler.write().take();
    }
}

/// Dropping without [`Transports::shutdown`] still stops everything, without waiting.
impl Drop for Transports {
    fn drop(&mut self) {
        self.shared.begin_shutdown();
        self.shared.handler.write().take();
    }
}

impl TransportHandle {
    /// Sends one message without waiting.
    ///
    /// - UDP: from the socket bound to `destination.local`, or else the first UDP socket of the
    ///   destination's address family. A direct `send_to`, except on that socket's own receive
    ///   thread (a handler answering a datagram): there the datagram is queued and sent, in
    ///   order, with the rest of the batch's output by one `sendmmsg` when the handler calls of
    ///   the batch are done. A queued datagram returns `Ok`; if the kernel refuses it later, that
    ///   shows only in [`NetStats::send_errors`] and a debug log.
    /// - `destination.connection = Some(id)`: queued on that connection, whatever its transport.
    /// - TCP/TLS without a connection: queued on an open connection to `destination.addr`, or on
    ///   a new one being opened (RFC 3261 §18.1.1). WS/WSS: only an open connection to the
    ///   address (browsers cannot be connected to).
    ///
    /// An `Ok` means sent or queued, not delivered.
    pub fn send(&self, transmit: Transmit) -> Result<(), SendError> {
        let result = self.send_inner(transmit);
        if result.is_err() {
            self.shared
                .stats
                .send_errors
                .fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn send_inner(&self, transmit: Transmit) -> Result<(), SendError> {
        let Transmit { destination, bytes } = transmit;
        if let Some(id) = destination.connection {
            return self.shared.conns.send_on(id, bytes);
        }
        match destination.transport {
            TransportKind::Udp => udp::send(&self.shared, &destination, bytes),
            TransportKind::Tcp | TransportKind::Tls => {
                stream::send_or_connect(&self.shared, destination, bytes)
            }
            TransportKind::Ws | TransportKind::Wss => {
                self.shared
                    .conns
                    .send_to_addr(destination.transport, destination.addr, bytes)
            }
        }
    }

    /// Counters, live.
    pub fn stats(&self) -> Arc<NetStats> {
        self.shared.stats.clone()
    }
}
