//! The transports on loopback: real sockets, a recording handler, bounded waits, no sleeps.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use confab_net::{Handler, NetConfig, SendError, TransportHandle, Transports};
use confab_sip::transport::{ConnectionId, Destination, Source, Transmit, TransportKind};
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);
const LOOPBACK: &str = "127.0.0.1:0";

#[derive(Debug)]
enum Event {
    Message(Bytes, Source),
    Closed(ConnectionId),
}

/// Records every call; with `echo`, sends each message straight back where it came from.
struct Recorder {
    events: mpsc::UnboundedSender<Event>,
    echo: OnceLock<TransportHandle>,
}

impl Handler for Recorder {
    fn on_message(&self, bytes: Bytes, source: Source) {
        if let Some(handle) = self.echo.get() {
            let destination = Destination {
                transport: source.transport,
                addr: source.peer,
                connection: source.connection,
                local: Some(source.local),
            };
            handle
                .send(Transmit {
                    destination,
                    bytes: bytes.clone(),
                })
                .expect("echo");
        }
        let _ = self.events.send(Event::Message(bytes, source));
    }

    fn on_connection_closed(&self, id: ConnectionId) {
        let _ = self.events.send(Event::Closed(id));
    }
}

struct Server {
    transports: Transports,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Server {
    async fn start(config: NetConfig, echo: bool) -> Self {
        let transports = Transports::bind(config).await.expect("bind");
        let (tx, events) = mpsc::unbounded_channel();
        let recorder = Arc::new(Recorder {
            events: tx,
            echo: OnceLock::new(),
        });
        if echo {
            let _ = recorder.echo.set(transports.handle());
        }
        transports.start(recorder);
        Self { transports, events }
    }

    fn addr(&self, kind: TransportKind) -> SocketAddr {
        self.addrs(kind)[0]
    }

    fn addrs(&self, kind: TransportKind) -> Vec<SocketAddr> {
        let addrs = self.transports.local_addrs();
        addrs
            .into_iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, a)| a)
            .collect()
    }

    async fn event(&mut self) -> Event {
        timeout(WAIT, self.events.recv())
            .await
            .expect("no event in time")
            .expect("handler gone")
    }

    async fn message(&mut self) -> (Bytes, Source) {
        match self.event().await {
            Event::Message(bytes, source) => (bytes, source),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    async fn closed(&mut self) -> ConnectionId {
        match self.event().await {
            Event::Closed(id) => id,
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

fn config() -> NetConfig {
    NetConfig {
        tls_dir: std::env::temp_dir().join("confab-net-unused"),
        ..NetConfig::default()
    }
}

fn loopback() -> SocketAddr {
    LOOPBACK.parse().unwrap()
}

fn sip(tag: &str, body: &str) -> Vec<u8> {
    format!(
        "MESSAGE sip:bob@example.com SIP/2.0\r\nCall-ID: {tag}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads exactly `len` bytes.
async fn read_exact<S: AsyncRead + Unpin>(stream: &mut S, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .expect("read timed out")
        .expect("read");
    buf
}

/// Waits until the server closes the stream (EOF or reset).
async fn expect_closed<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut buf = [0u8; 1024];
    loop {
        match timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("not closed in time")
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

// --- UDP ---

#[tokio::test]
async fn udp_round_trip_replies_from_the_receiving_socket() {
    let mut server = Server::start(
        NetConfig {
            udp: vec![loopback(), loopback()],
            ..config()
        },
        true,
    )
    .await;
    let second = server.addrs(TransportKind::Udp)[1];
    let client = UdpSocket::bind(LOOPBACK).await.unwrap();
    // Keep-alives are ignored, not delivered and not errors.
    client.send_to(b"\r\n\r\n", second).await.unwrap();
    client.send_to(&[0, 0, 0, 0], second).await.unwrap();
    let message = sip("udp-1", "hello");
    client.send_to(&message, second).await.unwrap();

    let (bytes, source) = server.message().await;
    assert_eq!(bytes.as_ref(), message.as_slice());
    assert_eq!(source.transport, TransportKind::Udp);
    assert_eq!(source.peer, client.local_addr().unwrap());
    assert_eq!(source.local, second);
    assert_eq!(source.connection, None);

    let mut buf = [0u8; 2048];
    let (len, from) = timeout(WAIT, client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..len], message.as_slice());
    assert_eq!(
        from, second,
        "the reply must leave from the socket the request arrived on"
    );
    let stats = server.transports.stats().snapshot();
    assert_eq!(
        (stats.received, stats.sent, stats.dropped_garbage),
        (1, 1, 0)
    );
    server.transports.shutdown().await;
}

#[tokio::test]
/// Oversize datagrams are counted and still handed up, so the core can answer 513 (RFC 3261
/// §21.5.14); binary garbage is dropped.
async fn udp_oversize_is_counted_and_handed_up_and_garbage_dropped() {
    let mut server = Server::start(
        NetConfig {
            udp: vec![loopback()],
            max_message_size: 200,
            ..config()
        },
        false,
    )
    .await;
    let addr = server.addr(TransportKind::Udp);
    let client = UdpSocket::bind(LOOPBACK).await.unwrap();
    client
        .send_to(&sip("big", &"x".repeat(300)), addr)
        .await
        .unwrap();
    client.send_to(&[0x16; 40], addr).await.unwrap();
    let small = sip("small", "");
    client.send_to(&small, addr).await.unwrap();
    // Datagrams from one socket arrive in order on loopback: once the small one is delivered,
    // the others have been judged.
    // Handed up as read: at least one byte over the limit (the receive buffer stops there), so
    // the handler knows it is oversize and can still read the headers.
    let (bytes, _) = server.message().await;
    assert!(bytes.len() > 200);
    assert!(sip("big", &"x".repeat(300)).starts_with(&bytes));
    let (bytes, _) = server.message().await;
    assert_eq!(bytes.as_ref(), small.as_slice());
    let stats = server.transports.stats().snapshot();
    assert_eq!(
        (
            stats.dropped_oversize,
            stats.dropped_garbage,
            stats.received
        ),
        (1, 1, 2)
    );
    server.transports.shutdown().await;
}

#[tokio::test]
async fn udp_send_without_a_socket_of_that_family_fails() {
    let server = Server::start(
        NetConfig {
            udp: vec![loopback()],
            ..config()
        },
        false,
    )
    .await;
    let destination = Destination {
        transport: TransportKind::Udp,
        addr: "[::1]:5060".parse().unwrap(),
        connection: None,
        local: None,
    };
    let result = server.transports.handle().send(Transmit {
        destination,
        bytes: Bytes::new(),
    });
    assert!(
        matches!(result, Err(SendError::NoSocket { .. })),
        "{result:?}"
    );
    assert_eq!(server.transports.stats().snapshot().send_errors, 1);
    server.transports.shutdown().await;
}

// --- TCP ---

#[tokio::test]
async fn tcp_frames_split_and_coalesced_messages_and_answers_pings() {
    let mut server = Server::start(
        NetConfig {
            tcp: vec![loopback()],
            ..config()
        },
        true,
    )
    .await;
    let mut client = TcpStream::connect(server.addr(TransportKind::Tcp))
        .await
        .unwrap();

    // One message split across writes.
    let first = sip("split", "a body with\r\n\r\nblank lines");
    for piece in first.chunks(7) {
        client.write_all(piece).await.unwrap();
        client.flush().await.unwrap();
    }
    let (bytes, source) = server.message().await;
    assert_eq!(bytes.as_ref(), first.as_slice());
    assert_eq!(source.transport, TransportKind::Tcp);
    assert_eq!(source.peer, client.local_addr().unwrap());
    let connection = source.connection.expect("a connection id");
    assert_eq!(read_exact(&mut client, first.len()).await, first);

    // Two messages in one write, behind a CRLFCRLF ping.
    let (second, third) = (sip("two", "2"), sip("three", ""));
    client
        .write_all(&[b"\r\n\r\n".as_slice(), &second, &third].concat())
        .await
        .unwrap();
    assert_eq!(read_exact(&mut client, 2).await, b"\r\n", "pong first");
    for expected in [&second, &third] {
        let (bytes, source) = server.message().await;
        assert_eq!(bytes.as_ref(), expected.as_slice());
        assert_eq!(source.connection, Some(connection));
    }
    assert_eq!(
        read_exact(&mut client, second.len() + third.len()).await,
        [second, third].concat()
    );

    drop(client);
    assert_eq!(server.closed().await, connection);
    let stats = server.transports.stats().snapshot();
    assert_eq!(
        (stats.received, stats.sent, stats.connections_open),
        (3, 3, 0)
    );
    server.transports.shutdown().await;
}

#[tokio::test]
async fn tcp_oversize_message_closes_the_connection() {
    let mut server = Server::start(
        NetConfig {
            tcp: vec![loopback()],
            max_message_size: 1000,
            ..config()
        },
        false,
    )
    .await;
    let mut client = TcpStream::connect(server.addr(TransportKind::Tcp))
        .await
        .unwrap();
    client
        .write_all(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n")
        .await
        .unwrap();
    expect_closed(&mut client).await;
    server.closed().await;
    let stats = server.transports.stats().snapshot();
    assert_eq!((stats.dropped_oversize, stats.received), (1, 0));
    server.transports.shutdown().await;
}

#[tokio::test]
async fn tcp_garbage_closes_the_connection() {
    let mut server = Server::start(
        NetConfig {
            tcp: vec![loopback()],
            ..config()
        },
        false,
    )
    .await;
    let mut client = TcpStream::connect(server.addr(TransportKind::Tcp))
        .await
        .unwrap();
    client
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x10])
        .await
        .unwrap();
    expect_closed(&mut client).await;
    server.closed().await;
    assert_eq!(server.transports.stats().snapshot().dropped_garbage, 1);
    server.transports.shutdown().await;
}

#[tokio::test]
async fn per_ip_connection_limit() {
    let mut server = Server::start(
        NetConfig {
            tcp: vec![loopback()],
            max_connections_per_ip: 2,
            ..config()
        },
        false,
    )
    .await;
    let addr = server.addr(TransportKind::Tcp);
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut client = TcpStream::connect(addr).await.unwrap();
        // A ping answered proves the connection was accepted and is served.
        client.write_all(b"\r\n\r\n").await.unwrap();
        assert_eq!(read_exact(&mut client, 2).await, b"\r\n");
        open.push(client);
    }
    let mut refused = TcpStream::connect(addr).await.unwrap();
    expect_closed(&mut refused).await;
    assert_eq!(server.transports.stats().snapshot().connections_rejected, 1);

    // Closing one makes room again.
    drop(open.pop());
    server.closed().await;
    let mut again = TcpStream::connect(addr).await.unwrap();
    again.write_all(b"\r\n\r\n").await.unwrap();
    assert_eq!(read_exact(&mut again, 2).await, b"\r\n");
    server.transports.shutdown().await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let mut server = Server::start(
        NetConfig {
            tcp: vec![loopback()],
            idle_timeout: Duration::from_millis(200),
            ..config()
        },
        false,
    )
    .await;
    let mut client = TcpStream::connect(server.addr(TransportKind::Tcp))
        .await
        .unwrap();
    expect_closed(&mut client).await;
    server.closed().await;
    server.transports.shutdown().await;
}

#[tokio::test]
async fn sends_to_a_closed_connection_fail() {
    let mut server = Server::start(
        NetConfig {
            tcp: vec![loopback()],
            ..config()
        },
        false,
    )
    .await;
    let mut client = TcpStream::connect(server.addr(TransportKind::Tcp))
        .await
        .unwrap();
    client.write_all(&sip("x", "")).await.unwrap();
    let (_, source) = server.message().await;
    drop(client);
    let id = server.closed().await;
    let destination = Destination {
        transport: TransportKind::Tcp,
        addr: source.peer,
        connection: Some(id),
        local: None,
    };
    let result = server.transports.handle().send(Transmit {
        destination,
        bytes: Bytes::new(),
    });
    assert!(matches!(result, Err(SendError::ConnectionClosed(closed)) if closed == id));
    server.transports.shutdown().await;
}

#[tokio::test]
async fn tcp_send_without_a_connection_connects_and_reuses() {
    let mut server = Server::start(
        NetConfig {
            tcp: vec![loopback()],
            ..config()
        },
        true,
    )
    .await;
    let mut client = Server::start(config(), false).await;
    let destination = Destination {
        transport: TransportKind::Tcp,
        addr: server.addr(TransportKind::Tcp),
        connection: None,
        local: None,
    };
    let handle = client.transports.handle();
    let (one, two) = (sip("out-1", "1"), sip("out-2", "22"));
    handle
        .send(Transmit {
            destination,
            bytes: Bytes::from(one.clone()),
        })
        .unwrap();
    handle
        .send(Transmit {
            destination,
            bytes: Bytes::from(two.clone()),
        })
        .unwrap();

    let (bytes, first) = server.message().await;
    assert_eq!(bytes.as_ref(), one.as_slice());
    let (bytes, second) = server.message().await;
    assert_eq!(bytes.as_ref(), two.as_slice());
    assert_eq!(
        first.connection, second.connection,
        "one connection for both"
    );

    // The echoes come back over the same connection.
    let (bytes, back) = client.message().await;
    assert_eq!(bytes.as_ref(), one.as_slice());
    assert_eq!(back.peer, destination.addr);
    assert_eq!(back.transport, TransportKind::Tcp);
    let (_, back_again) = client.message().await;
    assert_eq!(back.connection, back_again.connection);
    client.transports.shutdown().await;
    server.transports.shutdown().await;
}

#[tokio::test]
async fn outbound_connect_failure_is_counted() {
    // A port that was just free: nothing listens there.
    let addr = std::net::TcpListener::bind(LOOPBACK)
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Server::start(config(), false).await;
    let destination = Destination {
        transport: TransportKind::Tcp,
        addr,
        connection: None,
        local: None,
    };
    client
        .transports
        .handle()
        .send(Transmit {
            destination,
            bytes: Bytes::from("x"),
        })
        .unwrap();
    let stats = client.transports.stats();
    // The failure is reported asynchronously; wait for it without sleeping blindly.
    timeout(WAIT, async {
        while stats.snapshot().send_errors == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("connect failure not counted");
    client.transports.shutdown().await;
}

// --- TLS ---

fn tls_config(dir: &Path) -> NetConfig {
    NetConfig {
        tls: vec![loopback()],
        wss: vec![loopback()],
        tls_dir: dir.to_owned(),
        tls_names: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
        ..config()
    }
}

fn connector_trusting(cert: &Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(addr: SocketAddr, cert: &Path) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    timeout(WAIT, connector_trusting(cert).connect(name, tcp))
        .await
        .unwrap()
        .expect("handshake")
}

async fn tls_echo(server: &mut Server, cert: &Path) {
    let mut client = tls_connect(server.addr(TransportKind::Tls), cert).await;
    let message = sip("tls", "secret");
    client.write_all(&message).await.unwrap();
    client.flush().await.unwrap();
    let (bytes, source) = server.message().await;
    assert_eq!(bytes.as_ref(), message.as_slice());
    assert_eq!(source.transport, TransportKind::Tls);
    assert_eq!(read_exact(&mut client, message.len()).await, message);
}

#[tokio::test]
async fn tls_with_a_generated_certificate_reused_on_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let mut server = Server::start(tls_config(dir.path()), true).await;
    assert!(cert.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let first = std::fs::read(&cert).unwrap();
    tls_echo(&mut server, &cert).await;
    server.transports.shutdown().await;

    let mut server = Server::start(tls_config(dir.path()), true).await;
    assert_eq!(
        std::fs::read(&cert).unwrap(),
        first,
        "the certificate must be reused"
    );
    tls_echo(&mut server, &cert).await;
    server.transports.shutdown().await;
}

#[tokio::test]
async fn tls_with_a_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    // Generate once, then configure those files explicitly from another directory.
    Server::start(tls_config(dir.path()), false)
        .await
        .transports
        .shutdown()
        .await;
    let other = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let config = NetConfig {
        tls_cert: Some(cert.clone()),
        tls_key: Some(dir.path().join("key.pem")),
        ..tls_config(other.path())
    };
    let mut server = Server::start(config, true).await;
    assert!(!other.path().join("cert.pem").exists(), "nothing generated");
    tls_echo(&mut server, &cert).await;
    server.transports.shutdown().await;

    let missing = NetConfig {
        tls_cert: Some(other.path().join("nope.pem")),
        ..tls_config(other.path())
    };
    assert!(
        Transports::bind(missing).await.is_err(),
        "a key without a certificate"
    );
}

#[tokio::test]
async fn outbound_tls_verifies_the_peer_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(tls_config(dir.path()), true).await;
    let client_config = NetConfig {
        tls_trust: Some(dir.path().join("cert.pem")),
        ..config()
    };
    let mut client = Server::start(client_config, false).await;
    let destination = Destination {
        transport: TransportKind::Tls,
        addr: server.addr(TransportKind::Tls),
        connection: None,
        local: None,
    };
    let message = sip("tls-out", "x");
    client
        .transports
        .handle()
        .send(Transmit {
            destination,
            bytes: Bytes::from(message.clone()),
        })
        .unwrap();
    let (bytes, source) = server.message().await;
    assert_eq!(bytes.as_ref(), message.as_slice());
    assert_eq!(source.transport, TransportKind::Tls);
    let (bytes, back) = client.message().await;
    assert_eq!(bytes.as_ref(), message.as_slice());
    assert_eq!(back.transport, TransportKind::Tls);
    client.transports.shutdown().await;
    server.transports.shutdown().await;
}

// --- WebSocket ---

fn ws_request(
    url: &str,
    subprotocol: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = url.into_client_request().unwrap();
    if let Some(protocol) = subprotocol {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocol).unwrap(),
        );
    }
    request
}

async fn ws_echo<S>(server: &mut Server, stream: S, url: &str, kind: TransportKind)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ws, response) = timeout(
        WAIT,
        tokio_tungstenite::client_async(ws_request(url, Some("foo, sip")), stream),
    )
    .await
    .unwrap()
    .expect("handshake");
    assert_eq!(response.headers()["Sec-WebSocket-Protocol"], "sip");

    let message = String::from_utf8(sip("ws", "hi")).unwrap();
    ws.send(Message::text(message.clone())).await.unwrap();
    let (bytes, source) = server.message().await;
    assert_eq!(bytes.as_ref(), message.as_bytes());
    assert_eq!(source.transport, kind);
    let echoed = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed, Message::text(message));

    // A CRLFCRLF keep-alive message gets a CRLF back and is not delivered.
    ws.send(Message::text("\r\n\r\n")).await.unwrap();
    let pong = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(pong, Message::text("\r\n"));
    // WebSocket pings are answered (RFC 6455 §5.5.2).
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    let answer = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(answer, Message::Pong(Bytes::from_static(b"are you there")));
    // A binary message is one SIP message too.
    let binary = sip("ws-binary", "");
    ws.send(Message::binary(binary.clone())).await.unwrap();
    let (bytes, _) = server.message().await;
    assert_eq!(bytes.as_ref(), binary.as_slice());

    ws.close(None).await.unwrap();
    assert_eq!(Some(server.closed().await), source.connection);
}

#[tokio::test]
async fn ws_round_trip_with_the_sip_subprotocol() {
    let mut server = Server::start(
        NetConfig {
            ws: vec![loopback()],
            ..config()
        },
        true,
    )
    .await;
    let addr = server.addr(TransportKind::Ws);
    let tcp = TcpStream::connect(addr).await.unwrap();
    ws_echo(
        &mut server,
        tcp,
        &format!("ws://{addr}/"),
        TransportKind::Ws,
    )
    .await;
    server.transports.shutdown().await;
}

#[tokio::test]
async fn ws_send_without_an_open_connection_fails() {
    let server = Server::start(
        NetConfig {
            ws: vec![loopback()],
            ..config()
        },
        false,
    )
    .await;
    let destination = Destination {
        transport: TransportKind::Ws,
        addr: "127.0.0.1:9".parse().unwrap(),
        connection: None,
        local: None,
    };
    let result = server.transports.handle().send(Transmit {
        destination,
        bytes: Bytes::from_static(b"x"),
    });
    assert!(
        matches!(result, Err(SendError::NoConnection { .. })),
        "{result:?}"
    );
    server.transports.shutdown().await;
}

#[tokio::test]
async fn ws_handshake_without_the_sip_subprotocol_is_refused() {
    let server = Server::start(
        NetConfig {
            ws: vec![loopback()],
            ..config()
        },
        true,
    )
    .await;
    let addr = server.addr(TransportKind::Ws);
    for offered in [None, Some("chat")] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let url = format!("ws://{addr}/");
        let result = timeout(
            WAIT,
            tokio_tungstenite::client_async(ws_request(&url, offered), tcp),
        )
        .await
        .unwrap();
        match result {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400)
            }
            other => panic!("expected HTTP 400, got {other:?}"),
        }
    }
    assert_eq!(server.transports.stats().snapshot().dropped_garbage, 2);
    server.transports.shutdown().await;
}

#[tokio::test]
async fn wss_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(tls_config(dir.path()), true).await;
    let addr = server.addr(TransportKind::Wss);
    let tls = tls_connect(addr, &dir.path().join("cert.pem")).await;
    ws_echo(
        &mut server,
        tls,
        &format!("wss://localhost:{}/", addr.port()),
        TransportKind::Wss,
    )
    .await;
    server.transports.shutdown().await;
}

// --- Shutdown ---

#[tokio::test]
async fn shutdown_is_prompt_and_closes_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        NetConfig {
            udp: vec![loopback()],
            tcp: vec![loopback()],
            ws: vec![loopback()],
            ..tls_config(dir.path())
        },
        false,
    )
    .await;
    let mut tcp = TcpStream::connect(server.addr(TransportKind::Tcp))
        .await
        .unwrap();
    tcp.write_all(&sip("before-shutdown", "")).await.unwrap();
    server.message().await;
    // A TLS connection that never handshakes must not hold shutdown up either.
    let _silent = TcpStream::connect(server.addr(TransportKind::Tls))
        .await
        .unwrap();

    let started = std::time::Instant::now();
    timeout(Duration::from_secs(3), server.transports.shutdown())
        .await
        .expect("shutdown took too long");
    assert!(started.elapsed() < Duration::from_secs(3));
    expect_closed(&mut tcp).await;
    assert!(matches!(server.events.recv().await, Some(Event::Closed(_))));
}

#[tokio::test]
async fn bind_errors_name_the_address() {
    let taken = std::net::TcpListener::bind(LOOPBACK).unwrap();
    let addr = taken.local_addr().unwrap();
    let error = match Transports::bind(NetConfig {
        tcp: vec![addr],
        ..config()
    })
    .await
    {
        Err(error) => error.to_string(),
        Ok(_) => panic!("bound a port in use"),
    };
    assert!(
        error.contains(&addr.to_string()) && error.contains("TCP"),
        "{error}"
    );
}

#[tokio::test]
async fn shutdown_releases_the_sockets_even_with_a_handler_holding_a_handle() {
    // The echo handler holds a TransportHandle: a cycle that must not keep the sockets bound.
    let server = Server::start(
        NetConfig {
            udp: vec![loopback()],
            tcp: vec![loopback()],
            ..config()
        },
        true,
    )
    .await;
    let udp = server.addr(TransportKind::Udp);
    let tcp = server.addr(TransportKind::Tcp);
    server.transports.shutdown().await;
    std::net::UdpSocket::bind(udp).expect("UDP port still bound after shutdown");
    std::net::TcpListener::bind(tcp).expect("TCP port still bound after shutdown");
}
