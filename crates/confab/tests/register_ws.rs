//! SIP over WebSocket (RFC 7118): a client registers over ws and over wss (pinning the server's
//! generated certificate, DATA_DIR/tls/cert.pem) the way JsSIP does — subprotocol `sip`, a Via of
//! `SIP/2.0/WS x.invalid`, a Contact on a made-up `.invalid` host with `transport=ws` — and gets a
//! 401 challenge, then a 200 whose Contact echoes the binding.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Accepts exactly one certificate: the server's own, byte for byte.
#[derive(Debug)]
struct Pinned {
    der: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "server certificate is not DATA_DIR/tls/cert.pem".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls_connector(cert_der: Vec<u8>) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            der: cert_der,
            provider,
        }))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

const WAIT: Duration = Duration::from_secs(5);

/// Opens the WebSocket with subprotocol `sip` and checks the server agreed to it.
async fn ws_handshake<S>(stream: S, scheme: &str, addr: SocketAddr) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = format!("{scheme}://{addr}/")
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    let (ws, response) =
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
            .await
            .unwrap_or_else(|_| panic!("{scheme} handshake with {addr} timed out"))
            .unwrap_or_else(|e| panic!("{scheme} handshake with {addr} failed: {e}"));
    let proto = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok());
    assert_eq!(
        proto,
        Some("sip"),
        "server did not select the `sip` subprotocol: {:?}",
        response.headers()
    );
    ws
}

async fn recv_sip<S>(ws: &mut WebSocketStream<S>) -> SipMsg
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no SIP message over the WebSocket within 5 s")
            .expect("WebSocket closed by the server")
            .expect("WebSocket error");
        let data = match msg {
            Message::Text(t) => t.as_bytes().to_vec(),
            Message::Binary(b) => b.to_vec(),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            Message::Close(c) => panic!("server closed the WebSocket: {c:?}"),
        };
        let (sip, _) = SipMsg::parse(&data, true).unwrap_or_else(|| {
            panic!(
                "unparseable SIP over WebSocket: {:?}",
                String::from_utf8_lossy(&data)
            )
        });
        if sip.status().is_some_and(|s| s < 200) {
            continue;
        }
        return sip;
    }
}

async fn register_over<S>(mut ws: WebSocketStream<S>, transport: &str, user: &str, password: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // JsSIP's habit: a random host under .invalid in Via and Contact.
    let mut ua = Ua::new(
        user,
        password,
        transport,
        format!("{}.invalid", unique("h")),
    );
    ws.send(Message::text(ua.register(None, Some(600))))
        .await
        .expect("send REGISTER");
    let challenge = recv_sip(&mut ws).await;
    assert_eq!(
        challenge.status(),
        Some(401),
        "first REGISTER over {transport}:\n{}",
        challenge.summary()
    );
    let ch = challenge
        .challenge()
        .unwrap_or_else(|| panic!("401 without a challenge:\n{}", challenge.summary()));
    assert!(
        ch.scheme.eq_ignore_ascii_case("digest"),
        "challenge scheme: {}",
        ch.scheme
    );
    assert_eq!(ch.realm(), DOMAIN, "realm");

    let auth = ua.answer(&ch);
    ws.send(Message::text(ua.register(Some(&auth), Some(600))))
        .await
        .expect("send REGISTER");
    let ok = recv_sip(&mut ws).await;
    assert_eq!(
        ok.status(),
        Some(200),
        "authenticated REGISTER over {transport}:\n{}",
        ok.summary()
    );
    assert_eq!(ok.cseq_number(), Some(ua.cseq), "CSeq of the 200");
    let contact = ua.contact_uri();
    let echoed = ok.header_all("contact");
    assert!(
        echoed
            .iter()
            .any(|c| c.contains(&contact) && param(c, "expires").is_some()),
        "200 does not echo the Contact {contact} with an expires parameter:\n{}",
        ok.summary()
    );
    let _ = ws.close(None).await;
}

fn ws_server(name: &str, user: &str, password: &str) -> Server {
    Server::start(
        ServerSpec::new(name)
            // RFC 8760: SHA-256 preferred, so these clients exercise it end to end.
            .set("auth", "algorithms", r#"["SHA-256", "MD5"]"#)
            .transports(Transports {
                udp: true,
                tcp: false,
                tls: false,
                ws: true,
                wss: true,
            })
            .user(user, password),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_client_registers_over_ws() {
    let server = ws_server("ws", "wsalice", "ws-alice-pw");
    let addr = server.ws.unwrap();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect ws");
    let ws = ws_handshake(tcp, "ws", addr).await;
    register_over(ws, "WS", "wsalice", "ws-alice-pw").await;
    tokio::task::block_in_place(|| {
        server.wait_registered(
            &["wsalice"],
            &["transport=ws", "\"transport\":\"ws\""],
            Duration::from_secs(5),
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_client_registers_over_wss() {
    let server = ws_server("wss", "wssbob", "wss-bob-pw");
    let addr = server.wss.unwrap();
    let cert = pem_first_cert_der(&server.cert_path());
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect wss");
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = tokio::time::timeout(WAIT, tls_connector(cert).connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake failed (is the served certificate DATA_DIR/tls/cert.pem?)");
    let ws = ws_handshake(tls, "wss", addr).await;
    register_over(ws, "WSS", "wssbob", "wss-bob-pw").await;
    tokio::task::block_in_place(|| {
        server.wait_registered(
            &["wssbob"],
            &["transport=ws", "\"transport\":\"wss\""],
            Duration::from_secs(5),
        );
    });
}
