//! SIP over UDP (RFC 3261 §18): the hot path.
//!
//! One OS thread per socket reads datagrams in batches (`recvmmsg`: it waits for one, then takes
//! whatever else is already queued, up to [`RECV_BATCH`]) and calls the handler inline for each:
//! no task wake-up, no channel, one allocation per datagram (the message's own bytes).
//!
//! Sends are non-blocking. While a receive thread handles a batch, what the handler sends on that
//! thread's own socket is queued and leaves with one `sendmmsg` when the batch is done (before
//! the thread waits again), in order; so a burst of N requests costs one receive and one send
//! call instead of N of each. Sends from any other thread (tokio tasks, the timer driver), or to
//! another socket, are a direct `send_to` as before.
//!
//! Under load a thread reads at most once per `NetConfig::udp_batch_window` (see
//! [`ReadPacing`]): fewer, larger batches for a bounded added latency.

use std::cell::RefCell;
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

use crate::mmsg::{RecvBatch, SendBatch};
use crate::{Handler, NetError, NetStats, SendError, Shared};

/// Requested SO_RCVBUF/SO_SNDBUF; the kernel caps it (net.core.rmem_max / wmem_max).
const SOCKET_BUFFER: usize = 4 << 20;
/// How often a receive thread looks at the stop flag if no wake-up datagram reaches it.
const RECV_TIMEOUT: Duration = Duration::from_millis(500);
/// Datagrams one `recvmmsg` reads at most. Each has a buffer of the largest datagram accepted
/// (plus one byte), so at the default 64 KiB limit a socket holds 2 MiB of buffers (mapped
/// lazily: a page is only resident once a datagram that long has been read into it).
const RECV_BATCH: usize = 32;
/// No UDP payload is longer: a larger receive buffer would never fill.
const MAX_UDP_PAYLOAD: usize = 65_535;
/// A receive thread's queued sends leave at once when this many are waiting, even mid-batch.
const SEND_BATCH: usize = 64;

thread_local! {
    /// Set on a UDP receive thread for as long as it runs: what its handler sends on the
    /// thread's own socket, until the end of the batch being handled.
    static OUTGOING: RefCell<Option<Outgoing>> = const { RefCell::new(None) };
}

struct Outgoing {
    /// The socket this thread receives on; only compared, never dereferenced.
    endpoint: *const UdpEndpoint,
    batch: SendBatch,
}

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
    // One byte more than allowed, so that a longer datagram shows as truncated to max + 1.
    let mut batch = RecvBatch::new(RECV_BATCH, max.min(MAX_UDP_PAYLOAD).saturating_add(1));
    OUTGOING.with(|outgoing| {
        *outgoing.borrow_mut() = Some(Outgoing {
            endpoint,
            batch: SendBatch::default(),
        });
    });
    tracing::debug!(local = %endpoint.local, "UDP receive thread started");
    let mut pacing = ReadPacing::new(shared.config.udp_batch_window);
    loop {
        pacing.wait(Instant::now(), std::thread::sleep);
        let result = batch.recv(&endpoint.socket);
        if shared.stopping.load(Ordering::Relaxed) {
            break;
        }
        let count = match result {
            Ok(count) => count,
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
        // A full batch may have left more queued: read again at once.
        pacing.read_at(received_at, count, count < RECV_BATCH);
        for index in 0..count {
            let (datagram, peer) = batch.datagram(index);
            let Some(peer) = peer else {
                tracing::debug!(local = %endpoint.local, "UDP datagram without a sender address");
                continue;
            };
            deliver(shared, endpoint, handler, datagram, peer, received_at);
        }
        // Before waiting again: the answers to this batch leave now, together.
        flush_outgoing(shared, endpoint);
    }
    flush_outgoing(shared, endpoint);
    OUTGOING.with(|outgoing| outgoing.borrow_mut().take());
    tracing::debug!(local = %endpoint.local, "UDP receive thread stopped");
}

/// Spaces a receive thread's reads at least `window` apart while the socket is busy, so that
/// one wake-up takes every datagram of a window with one `recvmmsg` (and its answers leave with
/// one `sendmmsg`) instead of a sleep, a wake-up and a pair of system calls per datagram. On
/// this machine's VMs a wake-up costs more than handling a SIP message, both for this thread
/// and for the peer its sends wake: at 300 calls/s, a 3 ms window cut the thread's CPU per call
/// by about a quarter (bench/README.md).
///
/// The price is latency, so it is paid only under load: the socket counts as busy while
/// datagrams arrive faster than one per window (measured over [`RATE_SLOT`]s). Then a
/// datagram that arrives within `window` of the previous read waits for the window's end, at
/// most `window`. A quiet socket (a few calls) reads every datagram at once, and a full batch
/// is always followed by another read at once: pacing never caps the rate, only the wake-ups.
#[derive(Debug)]
struct ReadPacing {
    window: Duration,
    last_read: Option<Instant>,
    /// The current rate slot: when it started and the datagrams read in it so far.
    slot_start: Option<Instant>,
    slot_datagrams: u64,
    /// The previous slot (if it ended just before the current one) was busy.
    was_busy: bool,
}

/// The span over which the arrival rate is measured.
const RATE_SLOT: Duration = Duration::from_millis(100);

impl ReadPacing {
    fn new(window: Duration) -> Self {
        Self {
            window,
            last_read: None,
            slot_start: None,
            slot_datagrams: 0,
            was_busy: false,
        }
    }

    /// Before a read: sleeps (through `sleep`) until the window opened by the last read ends.
    fn wait(&mut self, now: Instant, sleep: impl FnOnce(Duration)) {
        if let Some(last) = self.last_read.take() {
            let opens = last + self.window;
            if now < opens {
                sleep(opens - now);
            }
        }
    }

    /// After a read that returned `datagrams` at `at`; `drained`: it took everything queued,
    /// so the next read would wait. Opens a window when the socket is busy and drained.
    fn read_at(&mut self, at: Instant, datagrams: usize, drained: bool) {
        if self.window.is_zero() {
            return;
        }
        let datagrams = datagrams as u64;
        let since_start = self
            .slot_start
            .map(|start| at.saturating_duration_since(start));
        if since_start.is_some_and(|d| d < RATE_SLOT) {
            self.slot_datagrams += datagrams;
        } else {
            // A new slot. A slot that ended long ago (or none) says nothing about now.
            let adjacent = since_start.is_some_and(|d| d < 2 * RATE_SLOT);
            self.was_busy = adjacent && self.is_busy_count(self.slot_datagrams);
            self.slot_start = Some(at);
            self.slot_datagrams = datagrams;
        }
        let busy = self.was_busy || self.is_busy_count(self.slot_datagrams);
        if busy && drained {
            self.last_read = Some(at);
        }
    }

    /// More datagrams in one slot than windows fit in it: more than one per window.
    fn is_busy_count(&self, datagrams: u64) -> bool {
        u128::from(datagrams) * self.window.as_nanos() > RATE_SLOT.as_nanos()
    }
}

/// Classifies one received datagram and hands it to the handler if it is (or may be) SIP.
fn deliver(
    shared: &Shared,
    endpoint: &UdpEndpoint,
    handler: &dyn Handler,
    datagram: &[u8],
    peer: SocketAddr,
    received_at: Instant,
) {
    let stats = &shared.stats;
    let len = datagram.len();
    match classify(datagram, shared.config.max_message_size) {
        Datagram::KeepAlive => return,
        Datagram::Oversize => {
            // Still handed up: the handler answers a request it can address with 513
            // (RFC 3261 §21.5.14). Debug only: any sender could flood a warning log.
            NetStats::add(&stats.dropped_oversize);
            tracing::debug!(%peer, len, "oversize UDP datagram");
        }
        Datagram::Garbage => {
            NetStats::add(&stats.dropped_garbage);
            tracing::debug!(%peer, len, "non-SIP UDP datagram dropped");
            return;
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

/// Sends what this receive thread's handler queued on `endpoint`, with one `sendmmsg` when the
/// kernel takes them all. Failures are counted and logged (at debug level) here: the handler's
/// `send` already returned `Ok` for them.
fn flush_outgoing(shared: &Shared, endpoint: &UdpEndpoint) {
    OUTGOING.with(|outgoing| {
        let mut outgoing = outgoing.borrow_mut();
        if let Some(outgoing) = outgoing.as_mut() {
            flush_batch(shared, endpoint, &mut outgoing.batch);
        }
    });
}

fn flush_batch(shared: &Shared, endpoint: &UdpEndpoint, batch: &mut SendBatch) {
    if batch.len() == 0 {
        return;
    }
    let stats = &shared.stats;
    let sent = batch.flush(&endpoint.socket, |to, error| {
        NetStats::add(&stats.send_errors);
        tracing::debug!(local = %endpoint.local, %to, %error, "UDP send failed");
    });
    stats.sent.fetch_add(sent as u64, Ordering::Relaxed);
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
    bytes: Bytes,
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
    let Some(bytes) = queue_on_receive_thread(shared, endpoint, destination.addr, bytes) else {
        return Ok(());
    };
    match send_nonblocking(&endpoint.socket, &bytes, destination.addr) {
        Ok(_) => {
            NetStats::add(&shared.stats.sent);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(SendError::QueueFull),
        Err(e) => Err(SendError::Io(e)),
    }
}

/// On the receive thread of `endpoint`, queues the datagram for the end of the batch being
/// handled (sending the queue at once if it is long) and returns `None`; anywhere else returns
/// the bytes to be sent now.
fn queue_on_receive_thread(
    shared: &Shared,
    endpoint: &UdpEndpoint,
    to: SocketAddr,
    bytes: Bytes,
) -> Option<Bytes> {
    OUTGOING.with(|outgoing| {
        // Not borrowed elsewhere while a handler runs: the receive loop only borrows it
        // between handler calls. `try_` anyway, so a surprise means an immediate send, never
        // a panic.
        let Ok(mut outgoing) = outgoing.try_borrow_mut() else {
            return Some(bytes);
        };
        let Some(outgoing) = outgoing
            .as_mut()
            .filter(|o| std::ptr::eq(o.endpoint, endpoint))
        else {
            return Some(bytes);
        };
        outgoing.batch.push(to, bytes);
        if outgoing.batch.len() >= SEND_BATCH {
            flush_batch(shared, endpoint, &mut outgoing.batch);
        }
        None
    })
}

/// Datagrams queued on this thread for the end of its batch (tests).
#[cfg(test)]
pub(crate) fn queued_here() -> usize {
    OUTGOING.with(|outgoing| outgoing.borrow().as_ref().map_or(0, |o| o.batch.len()))
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
    use std::sync::{mpsc, OnceLock};

    use confab_sip::transport::Transmit;
    use parking_lot::Mutex;

    use super::*;
    use crate::{NetConfig, TransportHandle, Transports};

    const WAIT: Duration = Duration::from_secs(5);
    const MAX: usize = 300;

    /// Echoes every message to its sender. A message ending in `fail` first sends a datagram
    /// the kernel refuses (to port 0); one ending in `many` first sends 100 numbered datagrams.
    /// Reports each message with the datagrams queued on the thread after it; the first message
    /// then waits until `hold` is released, so the test can line up a burst behind it.
    struct Echo {
        out: OnceLock<TransportHandle>,
        events: mpsc::Sender<(Vec<u8>, usize)>,
        hold: Mutex<Option<mpsc::Receiver<()>>>,
    }

    impl Handler for Echo {
        fn on_message(&self, bytes: Bytes, source: Source) {
            let out = self.out.get().expect("handle");
            let send = |addr: SocketAddr, bytes: Bytes| {
                let destination = Destination {
                    transport: TransportKind::Udp,
                    addr,
                    connection: None,
                    local: Some(source.local),
                };
                out.send(Transmit { destination, bytes })
                    .expect("a queued send is Ok");
            };
            if bytes.ends_with(b"fail") {
                send(([127, 0, 0, 1], 0).into(), Bytes::from_static(b"refused"));
            }
            if bytes.ends_with(b"many") {
                for i in 0..100 {
                    send(source.peer, Bytes::from(format!("n{i}")));
                }
            }
            send(source.peer, bytes.clone());
            let _ = self.events.send((bytes.to_vec(), queued_here()));
            if let Some(hold) = self.hold.lock().take() {
                let _ = hold.recv_timeout(WAIT);
            }
        }
    }

    struct Server {
        transports: Transports,
        addr: SocketAddr,
        events: mpsc::Receiver<(Vec<u8>, usize)>,
    }

    async fn start(hold: Option<mpsc::Receiver<()>>) -> Server {
        let transports = Transports::bind(NetConfig {
            udp: vec![([127, 0, 0, 1], 0).into()],
            max_message_size: MAX,
            tls_dir: std::env::temp_dir().join("confab-net-unused"),
            ..NetConfig::default()
        })
        .await
        .expect("bind");
        let (tx, events) = mpsc::channel();
        let echo = Arc::new(Echo {
            out: OnceLock::new(),
            events: tx,
            hold: Mutex::new(hold),
        });
        let _ = echo.out.set(transports.handle());
        transports.start(echo);
        let addr = transports.local_addrs()[0].1;
        Server {
            transports,
            addr,
            events,
        }
    }

    impl Server {
        fn event(&self) -> (Vec<u8>, usize) {
            self.events.recv_timeout(WAIT).expect("no message in time")
        }

        /// Waits (bounded) until the counters match: `sent` is counted right after the send
        /// call returns, which may be just after the datagram has arrived.
        fn wait_stats(&self, check: impl Fn(&crate::NetStatsSnapshot) -> bool) {
            let stats = self.transports.stats();
            let deadline = Instant::now() + WAIT;
            while !check(&stats.snapshot()) {
                assert!(Instant::now() < deadline, "{:?}", stats.snapshot());
                std::thread::yield_now();
            }
        }
    }

    fn client() -> std::net::UdpSocket {
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(WAIT)).unwrap();
        client
    }

    fn recv(client: &std::net::UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = [0u8; 2048];
        let (len, from) = client.recv_from(&mut buf).expect("no datagram in time");
        (buf[..len].to_vec(), from)
    }

    fn sip(tag: &str, body: &str) -> Vec<u8> {
        format!(
            "MESSAGE sip:bob@example.com SIP/2.0\r\nCall-ID: {tag}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn a_burst_is_handled_in_order_and_answered_in_order_with_one_flush_per_batch() {
        let (release, hold) = mpsc::channel();
        let server = start(Some(hold)).await;
        let client = client();
        let first = sip("first", "");
        client.send_to(&first, server.addr).unwrap();
        // The handler holds the receive thread inside the first message's batch now.
        assert_eq!(server.event(), (first.clone(), 1));

        // Its echo waits for the end of the batch...
        client.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            client
                .recv_from(&mut buf)
                .map_err(|e| e.kind())
                .unwrap_err(),
            io::ErrorKind::WouldBlock,
            "an answer sent during a batch left before the batch ended"
        );
        client.set_nonblocking(false).unwrap();
        // ...while a send from another thread leaves at once.
        let handle = server.transports.handle();
        handle
            .send(Transmit {
                destination: Destination {
                    transport: TransportKind::Udp,
                    addr: client.local_addr().unwrap(),
                    connection: None,
                    local: None,
                },
                bytes: Bytes::from_static(b"other thread"),
            })
            .unwrap();
        assert_eq!(recv(&client), (b"other thread".to_vec(), server.addr));

        // A burst lined up behind the held message, with the datagrams that never reach the
        // handler mixed in: a keep-alive, binary garbage; and an oversize one that does.
        let mut expected = Vec::new();
        for i in 0..10 {
            let message = sip(&format!("m{i}"), if i == 8 { "fail" } else { "" });
            client.send_to(&message, server.addr).unwrap();
            expected.push(message);
            match i {
                2 => drop(client.send_to(b"\r\n\r\n", server.addr).unwrap()),
                4 => drop(client.send_to(&[0x16; 40], server.addr).unwrap()),
                6 => {
                    let big = sip("big", &"x".repeat(MAX));
                    client.send_to(&big, server.addr).unwrap();
                    // Handed up cut to MAX + 1 bytes.
                    expected.push(big[..MAX + 1].to_vec());
                }
                _ => {}
            }
        }
        release.send(()).unwrap();

        let mut batches = 0;
        let mut queued_before = usize::MAX;
        for message in &expected {
            let (bytes, queued) = server.event();
            assert_eq!(&bytes, message);
            if queued <= queued_before {
                batches += 1;
            }
            queued_before = queued;
        }
        // All of it is queued in the socket before the receive thread reads again, so one
        // batch in practice; tolerate a late loopback delivery splitting it.
        assert!(
            batches <= 2,
            "{batches} batches for a burst of {}",
            expected.len()
        );

        // Every answer arrives, in order, from the receiving socket; the refused datagram in the
        // middle stopped none of them.
        assert_eq!(recv(&client), (first, server.addr));
        for message in &expected {
            assert_eq!(&recv(&client), &(message.clone(), server.addr));
        }
        server.wait_stats(|s| {
            (
                s.received,
                s.sent,
                s.dropped_oversize,
                s.dropped_garbage,
                s.send_errors,
            ) == (12, 13, 1, 1, 1)
        });
        server.transports.shutdown().await;
    }

    #[tokio::test]
    async fn a_long_output_leaves_in_chunks_in_order() {
        let server = start(None).await;
        let client = client();
        let message = sip("fan-out", "many");
        client.send_to(&message, server.addr).unwrap();
        // 101 datagrams: the first SEND_BATCH left mid-batch, the rest at its end.
        assert_eq!(server.event(), (message.clone(), 101 - SEND_BATCH));
        for i in 0..100 {
            assert_eq!(recv(&client).0, format!("n{i}").into_bytes());
        }
        assert_eq!(recv(&client).0, message);
        server.wait_stats(|s| s.sent == 101 && s.send_errors == 0);
        server.transports.shutdown().await;
    }

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

#[cfg(test)]
mod pacing_tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(3);

    fn slept(pacing: &mut ReadPacing, now: Instant) -> Option<Duration> {
        let mut slept = None;
        pacing.wait(now, |d| slept = Some(d));
        slept
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Reads of 4 datagrams every `every` for `until`: a busy socket.
    fn load(pacing: &mut ReadPacing, t0: Instant, every: Duration, until: Duration) -> Instant {
        let mut t = t0;
        while t < t0 + until {
            slept(pacing, t);
            pacing.read_at(t, 4, true);
            t += every;
        }
        t
    }

    #[test]
    fn a_quiet_socket_reads_at_once() {
        let t0 = Instant::now();
        let mut pacing = ReadPacing::new(WINDOW);
        // One call's set-up: a handful of datagrams a millisecond apart.
        for i in 0..10 {
            assert_eq!(slept(&mut pacing, t0 + ms(i)), None, "read {i}");
            pacing.read_at(t0 + ms(i), 1, true);
        }
    }

    #[test]
    fn a_busy_socket_waits_for_the_window_to_end() {
        let t0 = Instant::now();
        let mut pacing = ReadPacing::new(WINDOW);
        // 4 datagrams per millisecond: far more than one per window.
        let t = load(&mut pacing, t0, ms(1), ms(150));
        slept(&mut pacing, t);
        pacing.read_at(t, 4, true);
        assert_eq!(slept(&mut pacing, t + ms(1)), Some(ms(2)));
        // Waited once: the read that follows (even one that found nothing) opens no window.
        assert_eq!(slept(&mut pacing, t + ms(3)), None);
    }

    #[test]
    fn a_full_batch_is_followed_by_a_read_at_once() {
        let t0 = Instant::now();
        let mut pacing = ReadPacing::new(WINDOW);
        let t = load(&mut pacing, t0, ms(1), ms(150));
        slept(&mut pacing, t);
        pacing.read_at(t, RECV_BATCH, false);
        assert_eq!(slept(&mut pacing, t + Duration::from_micros(10)), None);
    }

    #[test]
    fn pacing_ends_after_a_quiet_spell() {
        let t0 = Instant::now();
        let mut pacing = ReadPacing::new(WINDOW);
        let t = load(&mut pacing, t0, ms(1), ms(150));
        // Half a second later, a lone datagram: the old busy slot says nothing about now.
        let later = t + ms(500);
        slept(&mut pacing, later);
        pacing.read_at(later, 1, true);
        assert_eq!(slept(&mut pacing, later + ms(1)), None);
    }

    #[test]
    fn a_zero_window_never_waits() {
        let t0 = Instant::now();
        let mut pacing = ReadPacing::new(Duration::ZERO);
        let t = load(&mut pacing, t0, ms(1), ms(150));
        pacing.read_at(t, 4, true);
        assert_eq!(slept(&mut pacing, t), None);
    }
}
