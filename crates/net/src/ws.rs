//! SIP over WebSocket and secure WebSocket (RFC 7118).
//!
//! The handshake must negotiate the `sip` subprotocol (RFC 7118 §4): a client that does not offer
//! it gets HTTP 400. Each text or binary WebSocket message carries exactly one SIP message
//! (RFC 7118 §5); we send text when the message is UTF-8 (it always is for SIP without binary
//! bodies), binary otherwise. WebSocket pings are answered by tungstenite; CRLFCRLF keep-alives
//! sent as messages (as some SIP clients do) get a CRLF message back.
//!
//! Sharing a port with the HTTP API (later): accept the connection with hyper (axum's server)
//! instead, route requests that are not a WebSocket upgrade to the axum router, and for upgrade
//! requests on the SIP path run [`negotiate_sip`] on the request, answer 101 and hand the
//! upgraded stream to `WebSocketStream::from_raw_socket` and then to [`run`]. Nothing below the
//! handshake needs to change.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use confab_sip::transport::TransportKind;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::conn::{ConnGuard, IpSlot};
use crate::stream::{deliver, register, Close, PONG};
use crate::{NetStats, Shared};

/// RFC 7118 §4: the WebSocket subprotocol for SIP.
const SUBPROTOCOL: &str = "sip";

/// Handshakes an accepted (and, for WSS, TLS-wrapped) connection and drives it.
// The large error type is tungstenite's handshake callback signature.
#[allow(clippy::result_large_err)]
pub(crate) async fn serve<S>(
    shared: Arc<Shared>,
    kind: TransportKind,
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    slot: IpSlot,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let max = shared.config.max_message_size;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let stats = shared.stats.clone();
    let callback = move |request: &Request, response: Response| {
        let result = negotiate_sip(request, response);
        if result.is_err() {
            NetStats::add(&stats.dropped_garbage);
            tracing::warn!(%peer, "WebSocket handshake without the sip subprotocol refused");
        }
        result
    };
    let handshake = timeout(
        shared.config.handshake_timeout,
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)),
    );
    let mut shutdown = shared.shutdown_signal();
    let ws = tokio::select! {
        () = shutdown.wait() => return,
        result = handshake => match result {
            Ok(Ok(ws)) => ws,
            Ok(Err(error)) => {
                tracing::debug!(transport = %kind, %peer, %error, "WebSocket handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(transport = %kind, %peer, "WebSocket handshake timed out");
                return;
            }
        },
    };
    let (mut guard, queue_tx, queue_rx) = register(&shared, kind, peer, slot);
    guard.establish(local, true);
    run(shared, guard, ws, local, queue_tx, queue_rx).await;
}

/// The handshake callback: requires the client to offer `sip` and selects it (RFC 7118 §4).
#[allow(clippy::result_large_err)]
pub(crate) fn negotiate_sip(
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    let offers_sip = request
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|protocol| protocol.trim().eq_ignore_ascii_case(SUBPROTOCOL));
    if !offers_sip {
        let mut refusal = ErrorResponse::new(Some(
            "the \"sip\" WebSocket subprotocol is required".to_owned(),
        ));
        *refusal.status_mut() = StatusCode::BAD_REQUEST;
        return Err(refusal);
    }
    response.headers_mut().insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(response)
}

/// Drives one established WebSocket connection until it ends; same shape as the stream driver.
async fn run<S>(
    shared: Arc<Shared>,
    guard: ConnGuard,
    ws: WebSocketStream<S>,
    local: SocketAddr,
    queue_tx: mpsc::Sender<Bytes>,
    queue_rx: mpsc::Receiver<Bytes>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let read = read_loop(&shared, &guard, stream, local, queue_tx);
    let write = write_loop(&shared, sink, queue_rx);
    tokio::pin!(read, write);
    tokio::select! {
        reason = &mut read => {
            tracing::debug!(connection = guard.id.0, peer = %guard.peer, %reason, "closing");
            guard.unlist();
            let _ = timeout(shared.config.handshake_timeout, write).await;
        }
        () = &mut write => {
            tracing::debug!(connection = guard.id.0, peer = %guard.peer, "closing after a failed write");
        }
    }
}

async fn read_loop<S>(
    shared: &Shared,
    guard: &ConnGuard,
    mut stream: S,
    local: SocketAddr,
    pong: mpsc::Sender<Bytes>,
) -> Close
where
    S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    let mut shutdown = shared.shutdown_signal();
    loop {
        let next = tokio::select! {
            biased;
            () = shutdown.wait() => return Close::Shutdown,
            next = timeout(shared.config.idle_timeout, stream.next()) => next,
        };
        let message = match next {
            Err(_) => return Close::Idle,
            Ok(None) => return Close::Eof,
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(error))) => return close_on_error(shared, guard, error),
        };
        let received_at = Instant::now();
        let bytes = match message {
            Message::Text(text) => Bytes::from(text),
            Message::Binary(bytes) => bytes,
            // tungstenite queues the answer to a ping itself; a close is answered and then
            // ends the stream.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => continue,
        };
        if bytes.iter().all(|&b| b == b'\r' || b == b'\n') {
            if bytes.as_ref() == b"\r\n\r\n" {
                let _ = pong.try_send(Bytes::from_static(PONG));
            }
            continue;
        }
        deliver(shared, guard, bytes, local, received_at);
    }
}

fn close_on_error(shared: &Shared, guard: &ConnGuard, error: WsError) -> Close {
    match error {
        WsError::ConnectionClosed | WsError::AlreadyClosed => Close::Eof,
        WsError::Capacity(error) => {
            NetStats::add(&shared.stats.dropped_oversize);
            tracing::warn!(
                transport = %guard.kind, peer = %guard.peer, %error,
                "oversize WebSocket message; closing the connection"
            );
            Close::Oversize
        }
        WsError::Utf8(error) => {
            NetStats::add(&shared.stats.dropped_garbage);
            tracing::warn!(
                transport = %guard.kind, peer = %guard.peer, %error,
                "invalid UTF-8 in a WebSocket text message; closing the connection"
            );
            Close::Garbage(error)
        }
        WsError::Protocol(error) => {
            NetStats::add(&shared.stats.dropped_garbage);
            tracing::debug!(transport = %guard.kind, peer = %guard.peer, %error, "WebSocket protocol error");
            Close::Garbage(error.to_string())
        }
        other => Close::Io(other.to_string()),
    }
}

async fn write_loop<K>(shared: &Shared, mut sink: K, mut queue: mpsc::Receiver<Bytes>)
where
    K: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    let limit = shared.config.handshake_timeout;
    while let Some(bytes) = queue.recv().await {
        let counted = bytes.as_ref() != PONG;
        // SIP messages are text unless a body is binary (RFC 7118 §5.1 allows both frame types).
        let message = match Utf8Bytes::try_from(bytes.clone()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(bytes),
        };
        match timeout(limit, sink.send(message)).await {
            Ok(Ok(())) => {
                if counted {
                    NetStats::add(&shared.stats.sent);
                }
            }
            Ok(Err(error)) => {
                NetStats::add(&shared.stats.send_errors);
                tracing::debug!(%error, "WebSocket write failed");
                return;
            }
            Err(_) => {
                NetStats::add(&shared.stats.send_errors);
                tracing::warn!("WebSocket write timed out: the peer is not reading");
                return;
            }
        }
    }
    let _ = timeout(limit, sink.close()).await;
}
