//! RFC 3261 §17 transactions (with RFC 6026), driven with simulated time: every schedule below is
//! asserted to the millisecond, and every loop is bounded.

use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_sip::transaction::{
    AckOutcome, ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite, Timer, Timers,
    TransactionEvent, TransactionKey, TransactionState, TransactionTable,
};
use confab_sip::{
    HeaderName, Headers, Host, Message, Method, Params, Request, Response, SipUri, TransportKind,
    Uri,
};

const MAX_STEPS: usize = 200;

// ---- messages -----------------------------------------------------------------------------

/// A request built by hand, so the state machines are tested without the parser.
fn request(method: Method, branch: &str) -> Request {
    let mut headers = Headers::new();
    headers.push(
        HeaderName::Via,
        format!("SIP/2.0/UDP pc33.atlanta.com;branch={branch}"),
    );
    headers.push(HeaderName::MaxForwards, "70");
    headers.push(HeaderName::Route, "<sip:p1.example.com;lr>");
    headers.push(HeaderName::To, "Bob <sip:bob@biloxi.com>");
    headers.push(
        HeaderName::From,
        "Alice <sip:alice@atlanta.com>;tag=1928301774",
    );
    headers.push(HeaderName::CallId, "a84b4c76e66710@pc33.atlanta.com");
    headers.push(HeaderName::CSeq, format!("314159 {method}"));
    headers.push(HeaderName::Contact, "<sip:alice@pc33.atlanta.com>");
    Request {
        method,
        uri: Uri::Sip(SipUri {
            secure: false,
            user: Some("bob".into()),
            password: None,
            host: Host::Domain("biloxi.com".into()),
            port: None,
            params: Params::default(),
            headers: Vec::new(),
        }),
        headers,
        body: Bytes::new(),
    }
}

fn invite() -> Request {
    request(Method::Invite, "z9hG4bK776asdhds")
}

fn options() -> Request {
    request(Method::Options, "z9hG4bKnashds8")
}

/// A response with a To tag (except for 100), as a UAS sends it.
fn response(req: &Request, status: u16) -> Response {
    let mut r = Response::for_request(req, status, None);
    if status != 100 {
        r.headers
            .set(HeaderName::To, "Bob <sip:bob@biloxi.com>;tag=a6c85cf");
    }
    r
}

fn parse(lines: &[&str]) -> Message {
    let text = lines.join("\r\n") + "\r\n\r\n";
    Message::parse(text.as_bytes(), false).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn parse_request(lines: &[&str]) -> Request {
    match parse(lines) {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

fn parse_response(lines: &[&str]) -> Response {
    match parse(lines) {
        Message::Response(r) => r,
        Message::Request(_) => panic!("not a response"),
    }
}

// ---- simulated time -----------------------------------------------------------------------

fn ms(t0: Instant, t: Instant) -> u64 {
    u64::try_from((t - t0).as_millis()).unwrap()
}

/// What one run of a client transaction produced, in simulated milliseconds since start.
#[derive(Debug, Default)]
struct Log {
    sent: Vec<(u64, Method)>,
    events: Vec<(u64, TransactionEvent)>,
    terminated_at: Option<u64>,
}

impl Log {
    fn sent_at(&self, method: Method) -> Vec<u64> {
        self.sent
            .iter()
            .filter(|(_, m)| *m == method)
            .map(|(t, _)| *t)
            .collect()
    }
}

/// Drives a client transaction from `now` on its own timers (the peer never answers) until it
/// terminates or the next deadline passes `until`.
macro_rules! drive_client {
    ($tx:expr, $t0:expr, $now:expr, $until:expr, $log:expr) => {{
        let mut now: Instant = $now;
        for step in 0.. {
            assert!(step < MAX_STEPS, "no progress after {MAX_STEPS} steps");
            while let Some(req) = $tx.poll_transmit() {
                $log.sent.push((ms($t0, now), req.method.clone()));
            }
            while let Some(ev) = $tx.poll_event() {
                $log.events.push((ms($t0, now), ev));
            }
            if $tx.is_terminated() {
                $log.terminated_at.get_or_insert(ms($t0, now));
                break;
            }
            match $tx.poll_timeout() {
                Some(at) if at <= $until => {
                    now = at;
                    $tx.handle_timeout(now);
                }
                _ => break,
            }
        }
        now
    }};
}

/// The same for server transactions, recording response status codes.
macro_rules! drive_server {
    ($tx:expr, $t0:expr, $now:expr, $until:expr, $sent:expr, $events:expr) => {{
        let mut now: Instant = $now;
        for step in 0.. {
            assert!(step < MAX_STEPS, "no progress after {MAX_STEPS} steps");
            while let Some(resp) = $tx.poll_transmit() {
                $sent.push((ms($t0, now), resp.status.0));
            }
            while let Some(ev) = $tx.poll_event() {
                $events.push((ms($t0, now), ev));
            }
            if $tx.is_terminated() {
                break;
            }
            match $tx.poll_timeout() {
                Some(at) if at <= $until => {
                    now = at;
                    $tx.handle_timeout(now);
                }
                _ => break,
            }
        }
        now
    }};
}

fn times(sent: &[(u64, u16)], status: u16) -> Vec<u64> {
    sent.iter()
        .filter(|(_, s)| *s == status)
        .map(|(t, _)| *t)
        .collect()
}

fn far(t0: Instant) -> Instant {
    t0 + Duration::from_secs(3600)
}

// ---- timers -------------------------------------------------------------------------------

#[test]
fn rfc3261_s17_1_1_1_timer_defaults_and_table_4() {
    let t = Timers::default();
    assert_eq!(t.t1, Duration::from_millis(500));
    assert_eq!(t.t2, Duration::from_secs(4));
    assert_eq!(t.t4, Duration::from_secs(5));
    let secs = |s| Some(Duration::from_secs(s));
    assert_eq!(t.initial(Timer::A, false), Some(t.t1));
    assert_eq!(t.initial(Timer::A, true), None);
    assert_eq!(t.initial(Timer::B, true), secs(32));
    assert_eq!(t.initial(Timer::D, false), secs(32));
    assert_eq!(t.initial(Timer::D, true), secs(0));
    assert_eq!(t.initial(Timer::E, true), None);
    assert_eq!(t.initial(Timer::F, false), secs(32));
    assert_eq!(t.initial(Timer::G, false), Some(t.t1));
    assert_eq!(t.initial(Timer::H, true), secs(32));
    assert_eq!(t.initial(Timer::I, false), secs(5));
    assert_eq!(t.initial(Timer::I, true), secs(0));
    assert_eq!(t.initial(Timer::J, false), secs(32));
    assert_eq!(t.initial(Timer::J, true), secs(0));
    assert_eq!(t.initial(Timer::K, false), secs(5));
    assert_eq!(t.initial(Timer::K, true), secs(0));
    assert_eq!(t.initial(Timer::L, false), secs(32));
    assert_eq!(t.initial(Timer::M, false), secs(32));
}

// ---- non-INVITE client (§17.1.2) ----------------------------------------------------------

#[test]
fn rfc3261_s17_1_2_2_non_invite_client_udp_timer_e_schedule_then_timer_f() {
    let t0 = Instant::now();
    let mut tx = ClientNonInvite::new(t0, options(), TransportKind::Udp, Timers::default());
    assert_eq!(tx.state(), TransactionState::Trying);
    assert_eq!(
        tx.next_timer(),
        Some((Timer::E, t0 + Duration::from_millis(500)))
    );
    let mut log = Log::default();
    drive_client!(tx, t0, t0, far(t0), log);
    assert_eq!(
        log.sent_at(Method::Options),
        [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert_eq!(log.events, [(32000, TransactionEvent::TimedOut)]);
    assert_eq!(log.terminated_at, Some(32000));
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn rfc3261_s17_1_2_2_non_invite_client_proceeding_retransmits_every_t2() {
    let t0 = Instant::now();
    let req = options();
    let mut tx = ClientNonInvite::new(t0, req.clone(), TransportKind::Udp, Timers::default());
    let mut log = Log::default();
    let now = drive_client!(tx, t0, t0, t0 + Duration::from_millis(600), log);
    tx.handle_response(t0 + Duration::from_millis(600), response(&req, 100));
    assert_eq!(tx.state(), TransactionState::Proceeding);
    // The armed Timer E still fires at 1500; from then on every T2.
    drive_client!(tx, t0, now, t0 + Duration::from_millis(10_000), log);
    assert_eq!(log.sent_at(Method::Options), [0, 500, 1500, 5500, 9500]);
    assert!(matches!(
        log.events[..],
        [(_, TransactionEvent::Provisional(_))]
    ));

    let done = t0 + Duration::from_millis(10_000);
    tx.handle_response(done, response(&req, 200));
    assert_eq!(tx.state(), TransactionState::Completed);
    assert!(matches!(tx.poll_event(), Some(TransactionEvent::Final(r)) if r.status.0 == 200));
    // RFC 3261 §17.1.2.2: retransmissions of the final response are absorbed in Completed.
    tx.handle_response(done + Duration::from_millis(500), response(&req, 200));
    assert_eq!(tx.poll_event(), None);
    assert_eq!(
        tx.next_timer(),
        Some((Timer::K, done + Duration::from_secs(5)))
    );
    let mut rest = Log::default();
    drive_client!(tx, t0, done, far(t0), rest);
    assert!(rest.sent.is_empty());
    assert_eq!(rest.terminated_at, Some(15_000));
}

#[test]
fn rfc3261_s17_1_2_2_non_invite_client_tcp_sends_once_and_timer_k_is_zero() {
    let t0 = Instant::now();
    let req = options();
    let mut tx = ClientNonInvite::new(t0, req.clone(), TransportKind::Tcp, Timers::default());
    let mut log = Log::default();
    drive_client!(tx, t0, t0, far(t0), log);
    assert_eq!(log.sent_at(Method::Options), [0]);
    assert_eq!(log.events, [(32000, TransactionEvent::TimedOut)]);

    let mut tx = ClientNonInvite::new(t0, req.clone(), TransportKind::Tcp, Timers::default());
    let _ = tx.poll_transmit();
    tx.handle_response(t0 + Duration::from_millis(20), response(&req, 404));
    assert!(matches!(tx.poll_event(), Some(TransactionEvent::Final(_))));
    assert!(tx.is_terminated(), "Timer K is zero on reliable transports");
}

#[test]
fn rfc3261_s17_1_2_2_custom_t1_t2_scale_the_schedule() {
    let timers = Timers {
        t1: Duration::from_millis(100),
        t2: Duration::from_millis(400),
        t4: Duration::from_secs(1),
    };
    let t0 = Instant::now();
    let mut tx = ClientNonInvite::new(t0, options(), TransportKind::Udp, timers);
    let mut log = Log::default();
    drive_client!(tx, t0, t0, far(t0), log);
    let sent = log.sent_at(Method::Options);
    assert_eq!(sent[..6], [0, 100, 300, 700, 1100, 1500]);
    assert_eq!(log.terminated_at, Some(6400));
}

#[test]
fn rfc3261_s17_1_4_transport_error_terminates_client() {
    let t0 = Instant::now();
    let mut tx = ClientNonInvite::new(t0, options(), TransportKind::Tcp, Timers::default());
    tx.handle_transport_error();
    let _ = tx.poll_transmit();
    assert_eq!(tx.poll_event(), Some(TransactionEvent::TransportError));
    assert!(tx.is_terminated());
    assert_eq!(tx.poll_timeout(), None);
}

// ---- INVITE client (§17.1.1) --------------------------------------------------------------

#[test]
fn rfc3261_s17_1_1_2_invite_client_udp_timer_a_doubles_without_cap_then_timer_b() {
    let t0 = Instant::now();
    let mut tx = ClientInvite::new(t0, invite(), TransportKind::Udp, Timers::default());
    assert_eq!(tx.state(), TransactionState::Calling);
    let mut log = Log::default();
    drive_client!(tx, t0, t0, far(t0), log);
    assert_eq!(
        log.sent_at(Method::Invite),
        [0, 500, 1500, 3500, 7500, 15500, 31500]
    );
    assert_eq!(log.events, [(32000, TransactionEvent::TimedOut)]);
    assert_eq!(log.terminated_at, Some(32000));
}

#[test]
fn rfc3261_s17_1_1_2_invite_client_tcp_no_retransmissions() {
    let t0 = Instant::now();
    let mut tx = ClientInvite::new(t0, invite(), TransportKind::Tls, Timers::default());
    let mut log = Log::default();
    drive_client!(tx, t0, t0, far(t0), log);
    assert_eq!(log.sent_at(Method::Invite), [0]);
    assert_eq!(log.events, [(32000, TransactionEvent::TimedOut)]);
}

#[test]
fn rfc3261_s17_1_1_2_provisional_stops_timers_a_and_b() {
    let t0 = Instant::now();
    let req = invite();
    let mut tx = ClientInvite::new(t0, req.clone(), TransportKind::Udp, Timers::default());
    let mut log = Log::default();
    let now = drive_client!(tx, t0, t0, t0 + Duration::from_millis(700), log);
    tx.handle_response(t0 + Duration::from_millis(700), response(&req, 180));
    assert_eq!(tx.state(), TransactionState::Proceeding);
    assert_eq!(
        tx.poll_timeout(),
        None,
        "the TU runs Timer C, not the transaction"
    );
    drive_client!(tx, t0, now, far(t0), log);
    assert_eq!(log.sent_at(Method::Invite), [0, 500]);
    assert!(
        matches!(&log.events[..], [(_, TransactionEvent::Provisional(r))] if r.status.0 == 180)
    );
    assert!(!tx.is_terminated());
}

#[test]
fn rfc3261_s17_1_1_3_ack_for_486_is_built_by_the_transaction() {
    let t0 = Instant::now();
    let req = invite();
    let mut tx = ClientInvite::new(t0, req.clone(), TransportKind::Udp, Timers::default());
    assert_eq!(tx.poll_transmit().map(|r| r.method), Some(Method::Invite));
    let busy = response(&req, 486);
    let at = t0 + Duration::from_millis(800);
    tx.handle_response(at, busy.clone());
    assert_eq!(tx.state(), TransactionState::Completed);
    assert_eq!(tx.poll_event(), Some(TransactionEvent::Final(busy.clone())));
    let ack = tx.poll_transmit().expect("ACK");
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri, req.uri, "same Request-URI");
    let h =
        |r: &Request, n: HeaderName| r.headers.get_all(&n).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        h(&ack, HeaderName::Via),
        ["SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds"]
    );
    assert_eq!(
        h(&ack, HeaderName::To),
        ["Bob <sip:bob@biloxi.com>;tag=a6c85cf"],
        "To of the response"
    );
    assert_eq!(h(&ack, HeaderName::From), h(&req, HeaderName::From));
    assert_eq!(h(&ack, HeaderName::CallId), h(&req, HeaderName::CallId));
    assert_eq!(h(&ack, HeaderName::Route), ["<sip:p1.example.com;lr>"]);
    assert_eq!(h(&ack, HeaderName::CSeq), ["314159 ACK"]);
    assert!(h(&ack, HeaderName::Contact).is_empty());
    assert!(ack.body.is_empty());

    // A retransmitted 486 is re-ACKed and not passed up; Timer D ends it 32 s later.
    tx.handle_response(at + Duration::from_millis(500), busy.clone());
    assert_eq!(tx.poll_transmit(), Some(ack.clone()));
    assert_eq!(tx.poll_event(), None);
    assert_eq!(
        tx.next_timer(),
        Some((Timer::D, at + Duration::from_secs(32)))
    );
    let mut log = Log::default();
    drive_client!(tx, t0, at, far(t0), log);
    assert_eq!(log.terminated_at, Some(32_800));
    assert!(log.sent.is_empty());

    // Over TCP Timer D is zero.
    let mut tx = ClientInvite::new(t0, req.clone(), TransportKind::Tcp, Timers::default());
    let _ = tx.poll_transmit();
    tx.handle_response(at, busy);
    assert_eq!(tx.poll_transmit().map(|r| r.method), Some(Method::Ack));
    assert!(tx.is_terminated());
}

#[test]
fn rfc3261_s17_1_1_3_ack_parses_and_matches_the_invite_transaction() {
    let t0 = Instant::now();
    let req = invite();
    let mut tx = ClientInvite::new(t0, req.clone(), TransportKind::Udp, Timers::default());
    let _ = tx.poll_transmit();
    tx.handle_response(t0, response(&req, 603));
    let ack = tx.poll_transmit().unwrap();
    let wire = ack.to_bytes();
    let Message::Request(parsed) = Message::parse(&wire, false).unwrap() else {
        panic!("request")
    };
    assert_eq!(parsed.cseq().unwrap().method, Method::Ack);
    assert_eq!(parsed.to_header().unwrap().tag(), Some("a6c85cf"));
    // At the server, the ACK finds the INVITE's transaction (§17.2.3).
    assert_eq!(
        TransactionKey::server(&parsed).unwrap(),
        TransactionKey::server(&req).unwrap()
    );
}

#[test]
fn rfc6026_s8_4_invite_client_accepted_passes_every_2xx_then_timer_m() {
    let t0 = Instant::now();
    let req = invite();
    let mut tx = ClientInvite::new(t0, req.clone(), TransportKind::Udp, Timers::default());
    let _ = tx.poll_transmit();
    let ok = response(&req, 200);
    tx.handle_response(t0 + Duration::from_secs(1), ok.clone());
    assert_eq!(tx.state(), TransactionState::Accepted);
    assert_eq!(tx.poll_transmit(), None, "the TU ACKs a 2xx");
    assert_eq!(tx.poll_event(), Some(TransactionEvent::Final(ok.clone())));
    tx.handle_response(t0 + Duration::from_secs(2), ok.clone());
    assert_eq!(
        tx.poll_event(),
        Some(TransactionEvent::Final(ok.clone())),
        "retransmitted 2xx to TU"
    );
    tx.handle_response(t0 + Duration::from_secs(2), response(&req, 180));
    assert_eq!(tx.poll_event(), None);
    assert_eq!(
        tx.next_timer(),
        Some((Timer::M, t0 + Duration::from_secs(33)))
    );
    let mut log = Log::default();
    drive_client!(tx, t0, t0 + Duration::from_secs(2), far(t0), log);
    assert_eq!(log.terminated_at, Some(33_000));
}

#[test]
fn rfc3261_s9_1_cancel_request_mirrors_the_invite() {
    let t0 = Instant::now();
    let req = invite();
    let tx = ClientInvite::new(t0, req.clone(), TransportKind::Udp, Timers::default());
    let cancel = tx.cancel_request();
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(cancel.uri, req.uri);
    assert_eq!(
        cancel.headers.get(&HeaderName::To),
        req.headers.get(&HeaderName::To)
    );
    assert_eq!(cancel.headers.get(&HeaderName::CSeq), Some("314159 CANCEL"));
    assert_eq!(
        cancel.headers.get(&HeaderName::Via),
        req.headers.get(&HeaderName::Via)
    );
}

// ---- non-INVITE server (§17.2.2) ----------------------------------------------------------

#[test]
fn rfc3261_s17_2_2_non_invite_server_absorbs_retransmissions_and_replays() {
    let t0 = Instant::now();
    let req = options();
    let mut tx = ServerNonInvite::new(t0, &req, TransportKind::Udp, Timers::default());
    assert_eq!(tx.state(), TransactionState::Trying);
    tx.handle_request(t0 + Duration::from_millis(500));
    assert_eq!(
        tx.poll_transmit(),
        None,
        "Trying: retransmissions are discarded"
    );

    tx.respond(t0 + Duration::from_millis(600), response(&req, 100));
    assert_eq!(tx.state(), TransactionState::Proceeding);
    assert_eq!(tx.poll_transmit().map(|r| r.status.0), Some(100));
    tx.handle_request(t0 + Duration::from_millis(1500));
    assert_eq!(
        tx.poll_transmit().map(|r| r.status.0),
        Some(100),
        "Proceeding: replay provisional"
    );

    let done = t0 + Duration::from_millis(2000);
    tx.respond(done, response(&req, 200));
    assert_eq!(tx.state(), TransactionState::Completed);
    assert_eq!(tx.poll_transmit().map(|r| r.status.0), Some(200));
    tx.respond(done, response(&req, 500));
    assert_eq!(
        tx.poll_transmit(),
        None,
        "Completed: further finals are discarded"
    );
    tx.handle_request(done + Duration::from_millis(1500));
    assert_eq!(
        tx.poll_transmit().map(|r| r.status.0),
        Some(200),
        "Completed: replay final"
    );

    // Timer J: 64*T1 after the final response.
    assert_eq!(
        tx.next_timer(),
        Some((Timer::J, done + Duration::from_secs(32)))
    );
    tx.handle_timeout(done + Duration::from_millis(31_999));
    assert!(!tx.is_terminated());
    tx.handle_timeout(done + Duration::from_secs(32));
    assert!(tx.is_terminated());
    tx.handle_request(done + Duration::from_secs(33));
    assert_eq!(tx.poll_transmit(), None);
}

#[test]
fn rfc3261_s17_2_2_non_invite_server_tcp_timer_j_is_zero() {
    let t0 = Instant::now();
    let req = options();
    let mut tx = ServerNonInvite::new(t0, &req, TransportKind::Tcp, Timers::default());
    tx.respond(t0, response(&req, 200));
    assert_eq!(tx.poll_transmit().map(|r| r.status.0), Some(200));
    assert!(tx.is_terminated());
    assert_eq!(tx.poll_timeout(), None);
}

// ---- INVITE server (§17.2.1) --------------------------------------------------------------

#[test]
fn rfc3261_s17_2_1_invite_server_sends_100_and_replays_latest_provisional() {
    let t0 = Instant::now();
    let mut req = invite();
    req.headers.push(HeaderName::Timestamp, "54");
    let mut tx = ServerInvite::new(t0, &req, TransportKind::Udp, Timers::default());
    let trying = tx.poll_transmit().expect("100 Trying");
    assert_eq!(trying.status.0, 100);
    assert_eq!(
        trying.headers.get(&HeaderName::Timestamp),
        Some("54"),
        "RFC 3261 §8.2.6.1"
    );
    assert_eq!(
        trying.headers.get(&HeaderName::To),
        req.headers.get(&HeaderName::To),
        "no To tag"
    );
    tx.handle_request(t0 + Duration::from_millis(500));
    assert_eq!(tx.poll_transmit().map(|r| r.status.0), Some(100));
    tx.respond(t0 + Duration::from_millis(600), response(&req, 180));
    assert_eq!(tx.poll_transmit().map(|r| r.status.0), Some(180));
    tx.handle_request(t0 + Duration::from_millis(1500));
    assert_eq!(tx.poll_transmit().map(|r| r.status.0), Some(180));
    assert_eq!(tx.state(), TransactionState::Proceeding);
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn rfc3261_s17_2_1_invite_server_timer_g_until_timer_h() {
    let t0 = Instant::now();
    let req = invite();
    let mut tx = ServerInvite::new(t0, &req, TransportKind::Udp, Timers::default());
    let _ = tx.poll_transmit();
    tx.respond(t0, response(&req, 486));
    assert_eq!(tx.state(), TransactionState::Completed);
    let mut sent = Vec::new();
    let mut events = Vec::new();
    drive_server!(tx, t0, t0, far(t0), sent, events);
    assert_eq!(
        times(&sent, 486),
        [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert_eq!(events, [(32000, TransactionEvent::TimedOut)]);
    assert!(tx.is_terminated());
}

#[test]
fn rfc3261_s17_2_1_invite_server_ack_stops_g_and_timer_i_absorbs() {
    let t0 = Instant::now();
    let req = invite();
    let mut tx = ServerInvite::new(t0, &req, TransportKind::Udp, Timers::default());
    let _ = tx.poll_transmit();
    tx.respond(t0, response(&req, 404));
    // A retransmitted INVITE in Completed gets the final response again.
    tx.handle_request(t0 + Duration::from_millis(200));
    let mut sent = Vec::new();
    let mut events = Vec::new();
    let now = drive_server!(tx, t0, t0, t0 + Duration::from_millis(2000), sent, events);
    assert_eq!(times(&sent, 404), [0, 0, 500, 1500]);
    let ack_at = t0 + Duration::from_millis(2000);
    assert!(now <= ack_at);
    assert_eq!(tx.handle_ack(ack_at), AckOutcome::Absorbed);
    assert_eq!(tx.state(), TransactionState::Confirmed);
    assert_eq!(
        tx.next_timer(),
        Some((Timer::I, ack_at + Duration::from_secs(5)))
    );
    // ACK retransmissions are absorbed; INVITE retransmissions get nothing now.
    assert_eq!(
        tx.handle_ack(ack_at + Duration::from_millis(100)),
        AckOutcome::Absorbed
    );
    tx.handle_request(ack_at + Duration::from_millis(100));
    let mut after = Vec::new();
    drive_server!(tx, t0, ack_at, far(t0), after, events);
    assert!(
        after.is_empty(),
        "no retransmission after the ACK: {after:?}"
    );
    assert!(events.is_empty());
    assert!(tx.is_terminated());

    // Over TCP: no Timer G, Timer I is zero.
    let mut tx = ServerInvite::new(t0, &req, TransportKind::Tcp, Timers::default());
    tx.respond(t0, response(&req, 404));
    assert_eq!(tx.next_timer().map(|(t, _)| t), Some(Timer::H));
    assert_eq!(
        tx.handle_ack(t0 + Duration::from_millis(50)),
        AckOutcome::Absorbed
    );
    assert!(tx.is_terminated());
}

#[test]
fn rfc6026_s8_6_invite_server_accepted_absorbs_invites_and_sends_tu_2xx() {
    let t0 = Instant::now();
    let req = invite();
    let mut tx = ServerInvite::new(t0, &req, TransportKind::Udp, Timers::default());
    let _ = tx.poll_transmit();
    let ok = response(&req, 200);
    tx.respond(t0, ok.clone());
    assert_eq!(tx.state(), TransactionState::Accepted);
    assert_eq!(tx.poll_transmit(), Some(ok.clone()));
    tx.handle_request(t0 + Duration::from_millis(500));
    assert_eq!(
        tx.poll_transmit(),
        None,
        "INVITE retransmissions are absorbed"
    );
    tx.respond(t0 + Duration::from_millis(500), ok.clone());
    assert_eq!(
        tx.poll_transmit(),
        Some(ok),
        "the TU's 2xx retransmission goes out"
    );
    tx.respond(t0 + Duration::from_millis(600), response(&req, 486));
    assert_eq!(tx.poll_transmit(), None);
    assert_eq!(
        tx.handle_ack(t0 + Duration::from_secs(1)),
        AckOutcome::PassToTransactionUser
    );
    assert_eq!(
        tx.next_timer(),
        Some((Timer::L, t0 + Duration::from_secs(32)))
    );
    tx.handle_timeout(t0 + Duration::from_secs(32));
    assert!(tx.is_terminated());
}

// ---- matching (§17.1.3, §17.2.3) ----------------------------------------------------------

const INVITE_TEXT: &[&str] = &[
    "INVITE sip:bob@biloxi.com SIP/2.0",
    "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds",
    "Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds8",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@biloxi.com>",
    "From: Alice <sip:alice@atlanta.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.atlanta.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.atlanta.com>",
    "Content-Length: 0",
];

fn with(lines: &[&str], replace: &[(&str, &str)]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let mut l = (*l).to_owned();
            for (from, to) in replace {
                l = l.replace(from, to);
            }
            l
        })
        .collect()
}

fn req_from(lines: &[String]) -> Request {
    parse_request(&lines.iter().map(String::as_str).collect::<Vec<_>>())
}

fn server_key(lines: &[String]) -> TransactionKey {
    TransactionKey::server(&req_from(lines)).unwrap()
}

#[test]
fn rfc3261_s17_2_3_ack_matches_invite_cancel_does_not() {
    let invite = with(INVITE_TEXT, &[]);
    let key = server_key(&invite);
    assert!(!key.is_rfc2543());
    // The ACK for a non-2xx: same branch, To tag added, CSeq method ACK.
    let ack = with(
        INVITE_TEXT,
        &[
            ("INVITE sip", "ACK sip"),
            ("314159 INVITE", "314159 ACK"),
            ("biloxi.com>", "biloxi.com>;tag=a6c85cf"),
        ],
    );
    assert_eq!(server_key(&ack), key);
    let cancel = with(
        INVITE_TEXT,
        &[
            ("INVITE sip", "CANCEL sip"),
            ("314159 INVITE", "314159 CANCEL"),
        ],
    );
    assert_ne!(
        server_key(&cancel),
        key,
        "CANCEL is a transaction of its own"
    );
    assert_eq!(
        TransactionKey::cancelled_invite(&req_from(&cancel)).unwrap(),
        key,
        "§9.2"
    );
    // Branch compares case-insensitively (§7.3.1); sent-by and branch must match.
    assert_eq!(
        server_key(&with(INVITE_TEXT, &[("K776asdhds", "K776ASDHDS")])),
        key
    );
    assert_ne!(
        server_key(&with(
            INVITE_TEXT,
            &[("pc33.atlanta.com;", "pc34.atlanta.com;")]
        )),
        key
    );
    assert_ne!(
        server_key(&with(
            INVITE_TEXT,
            &[("pc33.atlanta.com;", "pc33.atlanta.com:5070;")]
        )),
        key
    );
    assert_ne!(
        server_key(&with(INVITE_TEXT, &[("776asdhds", "776asdhdx")])),
        key
    );
    // An ACK for a 2xx carries a new branch: no transaction, it goes to the TU.
    let ack_2xx = with(
        &ack.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("776asdhds", "4b43c2ff8.1")],
    );
    assert_ne!(server_key(&ack_2xx), key);
}

#[test]
fn rfc3261_s17_1_3_response_matches_client_transaction() {
    let invite = req_from(&with(INVITE_TEXT, &[]));
    let client = TransactionKey::client_for_request(&invite).unwrap();
    let ringing = parse_response(&[
        "SIP/2.0 180 Ringing",
        "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;received=192.0.2.1",
        "Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds8",
        "To: Bob <sip:bob@biloxi.com>;tag=a6c85cf",
        "From: Alice <sip:alice@atlanta.com>;tag=1928301774",
        "Call-ID: a84b4c76e66710@pc33.atlanta.com",
        "CSeq: 314159 INVITE",
        "Content-Length: 0",
    ]);
    assert_eq!(TransactionKey::client(&ringing).unwrap(), client);
    assert_ne!(
        TransactionKey::server(&invite).unwrap(),
        client,
        "client and server keys differ"
    );
    // A response to a CANCEL with the same branch belongs to the CANCEL's transaction.
    let mut cancel_ok = ringing.clone();
    cancel_ok.headers.set(HeaderName::CSeq, "314159 CANCEL");
    assert_ne!(TransactionKey::client(&cancel_ok).unwrap(), client);
}

const INVITE_2543: &[&str] = &[
    "INVITE sip:bob@biloxi.com SIP/2.0",
    "Via: SIP/2.0/UDP pc33.atlanta.com",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@biloxi.com>",
    "From: Alice <sip:alice@atlanta.com>;tag=1928301774",
    "Call-ID: 2543@pc33.atlanta.com",
    "CSeq: 1 INVITE",
    "Content-Length: 0",
];

#[test]
fn rfc3261_s17_2_3_rfc2543_fallback_key() {
    let key = server_key(&with(INVITE_2543, &[]));
    assert!(key.is_rfc2543());
    assert_eq!(server_key(&with(INVITE_2543, &[])), key, "retransmission");
    let ack = with(
        INVITE_2543,
        &[
            ("INVITE sip", "ACK sip"),
            ("1 INVITE", "1 ACK"),
            ("biloxi.com>", "biloxi.com>;tag=a6c85cf"),
        ],
    );
    assert_eq!(
        server_key(&ack),
        key,
        "ACK matches though its To carries our tag"
    );
    for (from, to) in [
        ("INVITE sip:bob@", "INVITE sip:carol@"),
        ("tag=1928301774", "tag=99"),
        ("2543@pc33", "2544@pc33"),
        ("1 INVITE", "2 INVITE"),
        ("UDP pc33.atlanta.com", "UDP pc34.atlanta.com"),
    ] {
        assert_ne!(
            server_key(&with(INVITE_2543, &[(from, to)])),
            key,
            "{from} -> {to}"
        );
    }
    // A branch without the magic cookie also falls back.
    let odd = with(
        INVITE_2543,
        &[("UDP pc33.atlanta.com", "UDP pc33.atlanta.com;branch=1234")],
    );
    assert!(server_key(&odd).is_rfc2543());
    // Non-INVITE requests compare the To tag too.
    let bye = with(
        INVITE_2543,
        &[
            ("INVITE sip", "BYE sip"),
            ("1 INVITE", "2 BYE"),
            ("biloxi.com>", "biloxi.com>;tag=x"),
        ],
    );
    let bye_other_tag = with(
        &bye.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("tag=x", "tag=y")],
    );
    assert_ne!(server_key(&bye), server_key(&bye_other_tag));
}

// ---- the table ----------------------------------------------------------------------------

#[test]
fn transaction_table_drives_timers_and_drops_terminated() {
    let t0 = Instant::now();
    let mut table: TransactionTable<ServerNonInvite> = TransactionTable::new();
    let udp = options();
    let tcp = request(Method::Register, "z9hG4bKtcp1");
    let key = |r: &Request| TransactionKey::client_for_request(r).unwrap();
    table.insert(
        key(&udp),
        ServerNonInvite::new(t0, &udp, TransportKind::Udp, Timers::default()),
    );
    table.insert(
        key(&tcp),
        ServerNonInvite::new(t0, &tcp, TransportKind::Tcp, Timers::default()),
    );
    assert_eq!(table.len(), 2);

    let sent = table.update(&key(&tcp), |tx| {
        tx.respond(t0, response(&tcp, 200));
        tx.poll_transmit().map(|r| r.status.0)
    });
    assert_eq!(sent, Some(Some(200)));
    assert_eq!(table.len(), 1, "a terminated transaction leaves the table");

    table.update(&key(&udp), |tx| tx.respond(t0, response(&udp, 200)));
    assert_eq!(table.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    let mut drained = 0;
    table.handle_timeout(t0 + Duration::from_secs(1), |_, _| drained += 1);
    assert_eq!((drained, table.len()), (0, 1), "nothing due yet");
    table.handle_timeout(t0 + Duration::from_secs(32), |_, _| drained += 1);
    assert_eq!((drained, table.len()), (1, 0));
    assert_eq!(table.poll_timeout(), None);
}
