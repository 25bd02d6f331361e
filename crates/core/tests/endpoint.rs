//! The dispatcher end to end, sans IO: bytes in, transmits out, simulated time, a fake user
//! directory. Each test names the rule it pins.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_core::call::FakeMediaRelay;
use confab_core::{CoreConfig, Endpoint, MemoryDirectory};
use confab_sip::auth::{client_authorization, Algorithm};
use confab_sip::{ConnectionId, HeaderName, Message, Response, Source, Transmit, TransportKind};

const DOMAIN: &str = "example.com";
const SERVER_ADDR: &str = "192.0.2.10:5060";

struct Harness {
    ep: Endpoint,
    #[allow(dead_code)]
    t0: Instant,
    now: Instant,
    seq: u32,
}

fn config() -> CoreConfig {
    let mut c = CoreConfig::new(DOMAIN);
    c.local_ips = vec!["192.0.2.10".parse().unwrap()];
    c.local_hosts = vec!["sip.example.com".into()];
    c.max_auth_failures = 3;
    c.failure_window = Duration::from_secs(60);
    c.ban_duration = Duration::from_secs(600);
    c.nonce_lifetime = Duration::from_secs(300);
    c.rng_seed = Some(7);
    c
}

impl Harness {
    fn new() -> Self {
        Self::with(config())
    }

    fn with(config: CoreConfig) -> Self {
        let users = MemoryDirectory::new(DOMAIN);
        users.insert("alice", Some("1001"), "wonderland");
        users.insert("bob", Some("1002"), "builder");
        let t0 = Instant::now();
        Self {
            ep: Endpoint::new(
                config,
                Arc::new(users),
                Arc::new(FakeMediaRelay::new("192.0.2.20".parse().unwrap())),
                t0,
            ),
            t0,
            now: t0,
            seq: 0,
        }
    }

    fn advance(&mut self, d: Duration) -> Vec<Transmit> {
        self.now += d;
        let mut out = Vec::new();
        self.ep.handle_timeout(self.now, &mut out);
        out
    }

    fn send(&self, bytes: &str, source: &Source) -> Vec<Transmit> {
        let mut out = Vec::new();
        let src = Source {
            received_at: self.now,
            ..*source
        };
        self.ep
            .handle_message(self.now, 1_700_000_000, bytes.as_bytes(), &src, &mut out);
        out
    }

    /// Sends and expects exactly one response.
    fn ask(&self, bytes: &str, source: &Source) -> (Response, Transmit) {
        let out = self.send(bytes, source);
        assert_eq!(out.len(), 1, "expected one transmit, got {}", out.len());
        (parse_response(&out[0]), out[0].clone())
    }

    fn branch(&mut self) -> String {
        self.seq += 1;
        format!("z9hG4bK-test-{}", self.seq)
    }
}

fn udp(peer: &str) -> Source {
    Source {
        transport: TransportKind::Udp,
        peer: peer.parse().unwrap(),
        local: SERVER_ADDR.parse().unwrap(),
        connection: None,
        received_at: Instant::now(),
    }
}

fn tcp(peer: &str, id: u64) -> Source {
    Source {
        transport: TransportKind::Tcp,
        connection: Some(ConnectionId(id)),
        ..udp(peer)
    }
}

fn parse_response(t: &Transmit) -> Response {
    match Message::parse(&t.bytes, false) {
        Ok(Message::Response(r)) => r,
        other => panic!(
            "not a response: {other:?}\n{}",
            String::from_utf8_lossy(&t.bytes)
        ),
    }
}

struct Req<'a> {
    method: &'a str,
    uri: &'a str,
    via: String,
    user: &'a str,
    call_id: String,
    cseq: u32,
    extra: Vec<String>,
    body: &'a str,
}

impl<'a> Req<'a> {
    fn new(method: &'a str, uri: &'a str, branch: &str) -> Self {
        Self {
            method,
            uri,
            via: format!("SIP/2.0/UDP 198.51.100.7:5060;branch={branch};rport"),
            user: "alice",
            call_id: format!("call-{branch}"),
            cseq: 1,
            extra: Vec::new(),
            body: "",
        }
    }

    fn header(mut self, h: impl Into<String>) -> Self {
        self.extra.push(h.into());
        self
    }

    fn render(&self) -> String {
        let mut s = format!(
            "{m} {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:{u}@{d}>;tag=ft-{u}\r\n\
             To: <sip:{u}@{d}>\r\nCall-ID: {cid}\r\nCSeq: {cseq} {m}\r\n",
            m = self.method,
            uri = self.uri,
            via = self.via,
            u = self.user,
            d = DOMAIN,
            cid = self.call_id,
            cseq = self.cseq,
        );
        if self.method == "REGISTER" {
            s.push_str(&format!(
                "Contact: <sip:{}@198.51.100.7:5060>\r\nExpires: 600\r\n",
                self.user
            ));
        }
        for h in &self.extra {
            s.push_str(h);
            s.push_str("\r\n");
        }
        s.push_str(&format!(
            "Content-Length: {}\r\n\r\n{}",
            self.body.len(),
            self.body
        ));
        s
    }
}

fn values<'a>(r: &'a Response, name: &'a HeaderName) -> Vec<&'a str> {
    r.headers.get_all(name).collect()
}

/// The `name="value"` parameter of a challenge.
fn param(challenge: &str, name: &str) -> String {
    let key = format!("{name}=\"");
    let start = challenge
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {challenge}"))
        + key.len();
    let end = challenge[start..].find('"').unwrap() + start;
    challenge[start..end].to_owned()
}

#[allow(clippy::too_many_arguments)]
fn authorization(
    header: &str,
    alg: Algorithm,
    user: &str,
    password: &str,
    nonce: &str,
    method: &str,
    uri: &str,
    nc: u32,
) -> String {
    let value = client_authorization(
        alg,
        user,
        password,
        DOMAIN,
        nonce,
        method,
        uri,
        Some("c0ffee"),
        nc,
        None,
    );
    format!("{header}: {value}")
}

/// REGISTER → 401 → REGISTER with credentials; returns the final response.
fn register(h: &mut Harness, user: &str, password: &str, alg: Algorithm, src: &Source) -> Response {
    let b = h.branch();
    let mut req = Req::new("REGISTER", "sip:example.com", &b);
    req.user = user;
    let (challenge, _) = h.ask(&req.render(), src);
    assert_eq!(challenge.status.0, 401);
    let nonce = param(values(&challenge, &HeaderName::WwwAuthenticate)[0], "nonce");
    let b = h.branch();
    let mut req = Req::new("REGISTER", "sip:example.com", &b).header(authorization(
        "Authorization",
        alg,
        user,
        password,
        &nonce,
        "REGISTER",
        "sip:example.com",
        1,
    ));
    req.user = user;
    req.cseq = 2;
    h.ask(&req.render(), src).0
}

// --- Registration and authentication ------------------------------------------------------

#[test]
fn register_is_challenged_with_sha256_then_md5_and_succeeds() {
    let mut h = Harness::new();
    let src = udp("198.51.100.7:5060");
    let b = h.branch();
    let (r, _) = h.ask(&Req::new("REGISTER", "sip:example.com", &b).render(), &src);
    assert_eq!(r.status.0, 401);
    let ch = values(&r, &HeaderName::WwwAuthenticate);
    assert_eq!(ch.len(), 2, "RFC 8760 §2.4: one challenge per algorithm");
    assert!(ch[0].contains("algorithm=SHA-256"), "{}", ch[0]);
    assert!(ch[1].contains("algorithm=MD5"), "{}", ch[1]);
    assert!(ch
        .iter()
        .all(|c| c.contains("qop=\"auth\"") && c.contains("realm=\"example.com\"")));
    assert_eq!(r.headers.get(&HeaderName::Server), Some("Confab"));
    assert!(
        r.to_header().unwrap().tag().is_some(),
        "RFC 3261 §8.2.6.2: To tag on a final response"
    );

    for alg in [Algorithm::Sha256, Algorithm::Md5] {
        let r = register(&mut h, "alice", "wonderland", alg, &src);
        assert_eq!(r.status.0, 200, "{alg:?}: {}", r.reason);
        let contacts = values(&r, &HeaderName::Contact).join(",");
        assert!(
            contacts.contains("sip:alice@198.51.100.7:5060"),
            "{contacts}"
        );
    }
    assert_eq!(h.ep.registrar().lookup("alice", h.now).len(), 1);
    let s = h.ep.stats();
    assert_eq!((s.auth_successes, s.auth_failures), (2, 0));
}

#[test]
fn register_by_extension_in_to() {
    let mut h = Harness::new();
    let src = udp("198.51.100.7:5060");
    let b = h.branch();
    let (c, _) = h.ask(&Req::new("REGISTER", "sip:example.com", &b).render(), &src);
    let nonce = param(values(&c, &HeaderName::WwwAuthenticate)[0], "nonce");
    let b = h.branch();
    let mut req = Req::new("REGISTER", "sip:example.com", &b).header(authorization(
        "Authorization",
        Algorithm::Sha256,
        "alice",
        "wonderland",
        &nonce,
        "REGISTER",
        "sip:example.com",
        1,
    ));
    req.user = "1001";
    assert_eq!(h.ask(&req.render(), &src).0.status.0, 200);
}

/// Unknown users and wrong passwords must not be told apart (no extension enumeration).
#[test]
fn unknown_user_and_wrong_password_look_identical() {
    let mut h = Harness::new();
    let src = udp("198.51.100.7:5060");
    let wrong = register(&mut h, "alice", "not-the-password", Algorithm::Sha256, &src);
    let unknown = register(&mut h, "mallory", "whatever", Algorithm::Sha256, &src);
    assert_eq!(wrong.status.0, 401);
    assert_eq!(
        (wrong.status, &wrong.reason),
        (unknown.status, &unknown.reason)
    );
    let shape = |r: &Response| -> Vec<(String, String)> {
        r.headers
            .iter()
            .map(|hd| {
                let mut v = hd.value.clone();
                for p in [
                    "nonce=\"",
                    "tag=",
                    "branch=",
                    "call-",
                    "ft-",
                    "sip:alice",
                    "sip:mallory",
                ] {
                    if let Some(i) = v.find(p) {
                        v.truncate(i);
                    }
                }
                (hd.name.to_string(), v)
            })
            .collect()
    };
    assert_eq!(shape(&wrong), shape(&unknown));
    let n1 = param(values(&wrong, &HeaderName::WwwAuthenticate)[0], "nonce");
    let n2 = param(values(&unknown, &HeaderName::WwwAuthenticate)[0], "nonce");
    assert_ne!(n1, n2, "each challenge carries a fresh nonce");
    assert_eq!(h.ep.stats().auth_failures, 2);
}

#[test]
fn correct_answer_to_expired_nonce_gets_stale_true_and_is_not_a_failure() {
    let mut h = Harness::new();
    let src = udp("198.51.100.7:5060");
    let b = h.branch();
    let (c, _) = h.ask(&Req::new("REGISTER", "sip:example.com", &b).render(), &src);
    let nonce = param(values(&c, &HeaderName::WwwAuthenticate)[0], "nonce");
    h.advance(Duration::from_secs(301));
    let b = h.branch();
    let req = Req::new("REGISTER", "sip:example.com", &b).header(authorization(
        "Authorization",
        Algorithm::Sha256,
        "alice",
        "wonderland",
        &nonce,
        "REGISTER",
        "sip:example.com",
        1,
    ));
    let (r, _) = h.ask(&req.render(), &src);
    assert_eq!(r.status.0, 401);
    let ch = values(&r, &HeaderName::WwwAuthenticate);
    assert!(ch.iter().all(|c| c.contains("stale=true")), "{ch:?}");
    assert_ne!(param(ch[0], "nonce"), nonce);
    assert_eq!(h.ep.stats().auth_failures, 0);
}

#[test]
fn replayed_nonce_count_is_refused_and_counted() {
    let mut h = Harness::new();
    let src = udp("198.51.100.7:5060");
    let b = h.branch();
    let (c, _) = h.ask(&Req::new("REGISTER", "sip:example.com", &b).render(), &src);
    let nonce = param(values(&c, &HeaderName::WwwAuthenticate)[0], "nonce");
    let auth = authorization(
        "Authorization",
        Algorithm::Sha256,
        "alice",
        "wonderland",
        &nonce,
        "REGISTER",
        "sip:example.com",
        1,
    );
    let b = h.branch();
    assert_eq!(
        h.ask(
            &Req::new("REGISTER", "sip:example.com", &b)
                .header(auth.clone())
                .render(),
            &src
        )
        .0
        .status
        .0,
        200
    );
    // Same nonce, same nc, new transaction: a replay.
    let b = h.branch();
    let (r, _) = h.ask(
        &Req::new("REGISTER", "sip:example.com", &b)
            .header(auth)
            .render(),
        &src,
    );
    assert_eq!(r.status.0, 401);
    assert!(!values(&r, &HeaderName::WwwAuthenticate)[0].contains("stale"));
    assert_eq!(h.ep.stats().auth_failures, 1);
    // A higher nc on the same nonce is fine (RFC 7616 §3.4).
    let auth2 = authorization(
        "Authorization",
        Algorithm::Sha256,
        "alice",
        "wonderland",
        &nonce,
        "REGISTER",
        "sip:example.com",
        2,
    );
    let b = h.branch();
    assert_eq!(
        h.ask(
            &Req::new("REGISTER", "sip:example.com", &b)
                .header(auth2)
                .render(),
            &src
        )
        .0
        .status
        .0,
        200
    );
}

#[test]
fn repeated_failures_ban_the_source_then_the_ban_lifts() {
    let mut h = Harness::new();
    let attacker = udp("203.0.113.66:5060");
    let bystander = udp("198.51.100.7:5060");
    for _ in 0..3 {
        assert_eq!(
            register(&mut h, "alice", "guess", Algorithm::Md5, &attacker)
                .status
                .0,
            401
        );
    }
    let s = h.ep.stats();
    assert_eq!((s.auth_failures, s.bans), (3, 1));
    // Silence, even for requests that need no authentication.
    let b = h.branch();
    assert!(h
        .send(
            &Req::new("OPTIONS", "sip:example.com", &b).render(),
            &attacker
        )
        .is_empty());
    assert!(h.send("garbage", &attacker).is_empty());
    assert_eq!(h.ep.stats().banned_drops, 2);
    assert_eq!(h.ep.banned(h.now).len(), 1);
    assert!(h.ep.is_banned(attacker.peer.ip(), h.now));
    // Others are unaffected.
    let b = h.branch();
    assert_eq!(
        h.ask(
            &Req::new("OPTIONS", "sip:example.com", &b).render(),
            &bystander
        )
        .0
        .status
        .0,
        200
    );
    // After the ban, the address is answered again.
    assert!(h.ep.poll_timeout().is_some());
    h.advance(Duration::from_secs(601));
    assert!(h.ep.banned(h.now).is_empty());
    let b = h.branch();
    assert_eq!(
        h.ask(
            &Req::new("OPTIONS", "sip:example.com", &b).render(),
            &attacker
        )
        .0
        .status
        .0,
        200
    );
    assert_eq!(
        register(&mut h, "alice", "wonderland", Algorithm::Md5, &attacker)
            .status
            .0,
        200
    );
}

#[test]
fn unknown_authorization_scheme_is_challenged() {
    // RFC 4475 §3.3.7 (regaut01).
    let mut h = Harness::new();
    let b = h.branch();
    let req = Req::new("REGISTER", "sip:example.com", &b)
        .header("Authorization: NoOneKnowsThisScheme opaque-data=here");
    let (r, _) = h.ask(&req.render(), &udp("198.51.100.7:5060"));
    assert_eq!(r.status.0, 401);
    assert_eq!(h.ep.stats().auth_failures, 0);
}

// --- Transactions and transport rules ---------------------------------------------------------

#[test]
fn retransmitted_register_gets_the_identical_response() {
    let mut h = Harness::new();
    let src = udp("198.51.100.7:5060");
    let b = h.branch();
    let (challenge, _) = h.ask(&Req::new("REGISTER", "sip:example.com", &b).render(), &src);
    let nonce = param(values(&challenge, &HeaderName::WwwAuthenticate)[0], "nonce");
    let b = h.branch();
    let mut req = Req::new("REGISTER", "sip:example.com", &b).header(authorization(
        "Authorization",
        Algorithm::Sha256,
        "alice",
        "wonderland",
        &nonce,
        "REGISTER",
        "sip:example.com",
        1,
    ));
    req.cseq = 2;
    let req = req.render();
    let first = h.send(&req, &src);
    h.now += Duration::from_millis(500);
    let second = h.send(&req, &src);
    assert_eq!(first.len(), 1);
    assert!(first[0].bytes.starts_with(b"SIP/2.0 200 "));
    assert_eq!(
        first, second,
        "RFC 3261 §17.2.2: the cached response, byte for byte (not a 500 for the repeated CSeq)"
    );
    assert_eq!(h.ep.stats().retransmissions_absorbed, 1);
    assert_eq!(h.ep.stats().transactions, 1);
    // Timer J (64*T1 on UDP) ends the transaction; its memory goes at the next sweep.
    h.advance(Duration::from_secs(32));
    h.advance(Duration::from_secs(1));
    assert_eq!(h.ep.stats().transactions, 0);
}

#[test]
fn register_without_credentials_is_challenged_statelessly() {
    let mut h = Harness::new();
    let src = udp("198.51.100.7:5060");
    let b = h.branch();
    let req = Req::new("REGISTER", "sip:example.com", &b).render();
    let (first, _) = h.ask(&req, &src);
    h.now += Duration::from_millis(500);
    let (second, _) = h.ask(&req, &src);
    assert_eq!((first.status.0, second.status.0), (401, 401));
    // Like a stateless proxy (RFC 3261 §16.11): no transaction, a fresh challenge each time,
    // the same To tag.
    assert_eq!(h.ep.stats().transactions, 0);
    assert_eq!(h.ep.stats().retransmissions_absorbed, 0);
    assert_ne!(
        values(&first, &HeaderName::WwwAuthenticate),
        values(&second, &HeaderName::WwwAuthenticate)
    );
    assert_eq!(
        first.to_header().unwrap().tag(),
        second.to_header().unwrap().tag()
    );
    // Either challenge can be answered.
    let nonce = param(values(&first, &HeaderName::WwwAuthenticate)[0], "nonce");
    let b = h.branch();
    let mut req = Req::new("REGISTER", "sip:example.com", &b).header(authorization(
        "Authorization",
        Algorithm::Sha256,
        "alice",
        "wonderland",
        &nonce,
        "REGISTER",
        "sip:example.com",
        1,
    ));
    req.cseq = 2;
    let (ok, _) = h.ask(&req.render(), &src);
    assert_eq!(ok.status.0, 200);
    assert_eq!(h.ep.stats().transactions, 1);
}

#[test]
fn completed_register_transactions_are_answered_over_tcp_without_being_kept() {
    let mut h = Harness::new();
    let src = tcp("198.51.100.7:5060", 9);
    let r = register(&mut h, "alice", "wonderland", Algorithm::Sha256, &src);
    assert_eq!(r.status.0, 200);
    // RFC 3261 §17.2.2: Timer J is zero on reliable transports.
    assert_eq!(h.ep.stats().transactions, 0);
}

#[test]
fn udp_response_fills_rport_and_received_and_goes_to_the_source() {
    let mut h = Harness::new();
    let src = udp("203.0.113.7:40000");
    let b = h.branch();
    let (r, t) = h.ask(&Req::new("OPTIONS", "sip:example.com", &b).render(), &src);
    let via = r.top_via().unwrap();
    assert_eq!(via.params.get("rport"), Some(Some("40000")));
    assert_eq!(via.params.get("received"), Some(Some("203.0.113.7")));
    assert_eq!(
        t.destination.addr,
        "203.0.113.7:40000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(t.destination.local, Some(SERVER_ADDR.parse().unwrap()));
    assert_eq!(t.destination.transport, TransportKind::Udp);

    // Without rport: received, and the Via port at the source address (RFC 3261 §18.2.2).
    let b = h.branch();
    let mut req = Req::new("OPTIONS", "sip:example.com", &b);
    req.via = format!("SIP/2.0/UDP 198.51.100.7:5070;branch={b}");
    let (r, t) = h.ask(&req.render(), &src);
    let via = r.top_via().unwrap();
    assert_eq!(via.params.get("received"), Some(Some("203.0.113.7")));
    assert!(!via.params.contains("rport"));
    assert_eq!(
        t.destination.addr,
        "203.0.113.7:5070".parse::<SocketAddr>().unwrap()
    );
}

#[test]
fn tcp_response_goes_back_over_the_same_connection() {
    let mut h = Harness::new();
    let src = tcp("198.51.100.7:53211", 42);
    let b = h.branch();
    let mut req = Req::new("OPTIONS", "sip:example.com", &b);
    req.via = format!("SIP/2.0/TCP 198.51.100.7:5060;branch={b}");
    let (r, t) = h.ask(&req.render(), &src);
    assert_eq!(r.status.0, 200);
    assert_eq!(t.destination.connection, Some(ConnectionId(42)));
    assert_eq!(t.destination.transport, TransportKind::Tcp);
    assert_eq!(t.destination.addr, src.peer);
    // Timer J is zero on reliable transports.
    assert_eq!(h.ep.stats().transactions, 0);
}

// --- Request checks (RFC 4475 §3.2–3.3 order) -------------------------------------------------

#[test]
fn foreign_domain_is_refused_never_relayed() {
    let mut h = Harness::new();
    let src = udp("198.51.100.7:5060");
    for (m, uri) in [
        ("INVITE", "sip:bob@evil.example.org"),
        ("OPTIONS", "sip:evil.example.org"),
        ("REGISTER", "sip:example.net"),
    ] {
        let b = h.branch();
        let (r, t) = h.ask(&Req::new(m, uri, &b).render(), &src);
        assert_eq!(
            (r.status.0, r.reason.as_str()),
            (403, "Relaying denied"),
            "{m} {uri}"
        );
        assert_eq!(t.destination.addr, src.peer);
    }
    assert_eq!(h.ep.stats().relay_denied, 3);
    // Our aliases and addresses are ours.
    for uri in [
        "sip:sip.example.com",
        "sip:192.0.2.10",
        "sip:127.0.0.1:5060",
        "sip:[::1]",
        "sip:EXAMPLE.COM",
    ] {
        let b = h.branch();
        assert_eq!(
            h.ask(&Req::new("OPTIONS", uri, &b).render(), &src)
                .0
                .status
                .0,
            200,
            "{uri}"
        );
    }
}

#[test]
fn unknown_request_uri_scheme_gets_416() {
    let mut h = Harness::new();
    let b = h.branch();
    let (r, _) = h.ask(
        &Req::new("OPTIONS", "nobodyKnowsThisScheme:totallyopaquecontent", &b).render(),
        &udp("198.51.100.7:5060"),
    );
    assert_eq!(r.status.0, 416);
}

#[test]
fn unsupported_require_gets_420_listing_the_tags() {
    let mut h = Harness::new();
    let b = h.branch();
    let req = Req::new("OPTIONS", "sip:example.com", &b)
        .header("Require: foo, outbound")
        .header("Proxy-Require: bar");
    let (r, _) = h.ask(&req.render(), &udp("198.51.100.7:5060"));
    assert_eq!(r.status.0, 420);
    assert_eq!(r.headers.get(&HeaderName::Unsupported), Some("foo, bar"));
}

#[test]
fn max_forwards_zero_is_483_only_for_requests_we_would_route() {
    let mut h = Harness::new();
    let src = udp("198.51.100.7:5060");
    let b = h.branch();
    let inv = Req::new("INVITE", "sip:bob@example.com", &b)
        .render()
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    assert_eq!(h.ask(&inv, &src).0.status.0, 483);
    // RFC 4475 §3.3.11 (zeromf): OPTIONS is answered here.
    let b = h.branch();
    let opt = Req::new("OPTIONS", "sip:user@example.com", &b)
        .render()
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    assert_eq!(h.ask(&opt, &src).0.status.0, 200);
}

#[test]
fn invite_with_a_body_we_cannot_read_gets_415_with_accept() {
    let mut h = Harness::new();
    let b = h.branch();
    let mut req = Req::new("INVITE", "sip:bob@example.com", &b)
        .header("Content-Type: application/unknownformat");
    req.body = "<audio/>";
    let (r, _) = h.ask(&req.render(), &udp("198.51.100.7:5060"));
    assert_eq!(r.status.0, 415);
    assert_eq!(
        r.headers.get(&HeaderName::Other("Accept".into())),
        Some("application/sdp")
    );
}

#[test]
fn options_is_answered_the_same_for_any_user() {
    let mut h = Harness::new();
    let src = udp("198.51.100.7:5060");
    let mut shapes = Vec::new();
    for uri in [
        "sip:example.com",
        "sip:alice@example.com",
        "sip:nobody@example.com",
    ] {
        let b = h.branch();
        let (r, _) = h.ask(&Req::new("OPTIONS", uri, &b).render(), &src);
        assert_eq!(r.status.0, 200);
        assert!(r
            .headers
            .get(&HeaderName::Allow)
            .unwrap()
            .contains("REGISTER"));
        assert_eq!(
            r.headers.get(&HeaderName::Other("Accept".into())),
            Some("application/sdp")
        );
        assert!(r.headers.get(&HeaderName::Supported).is_some());
        shapes.push(
            r.headers
                .iter()
                .map(|h| h.name.to_string())
                .collect::<Vec<_>>(),
        );
    }
    assert!(shapes.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn methods_without_a_handler() {
    let mut h = Harness::new();
    let src = udp("198.51.100.7:5060");
    let cases = [
        ("BYE", 481),
        ("INFO", 481),
        ("UPDATE", 481),
        ("MESSAGE", 405),
        ("SUBSCRIBE", 405),
        ("FOOBAR", 501),
    ];
    for (m, status) in cases {
        let b = h.branch();
        let (r, _) = h.ask(&Req::new(m, "sip:bob@example.com", &b).render(), &src);
        assert_eq!(r.status.0, status, "{m}");
        if status != 481 {
            assert!(r.headers.get(&HeaderName::Allow).is_some(), "{m}");
        }
    }
}

#[test]
fn invite_is_challenged_with_407_then_gets_480_when_the_callee_has_no_device() {
    let mut h = Harness::new();
    let src = udp("198.51.100.7:5060");
    let b = h.branch();
    let inv = Req::new("INVITE", "sip:bob@example.com", &b);
    let (r, _) = h.ask(&inv.render(), &src);
    assert_eq!(r.status.0, 407, "no 100 Trying before an immediate answer");
    let ch = values(&r, &HeaderName::ProxyAuthenticate);
    assert_eq!(ch.len(), 2);
    let to = r.headers.get(&HeaderName::To).unwrap().to_owned();

    // Timer G retransmits the 407 until the ACK.
    let retrans = h.advance(Duration::from_millis(500));
    assert_eq!(retrans.len(), 1);
    assert_eq!(parse_response(&retrans[0]).status.0, 407);

    // The ACK for the 407 is absorbed; nothing goes out.
    let ack = format!(
        "ACK sip:bob@example.com SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=ft-alice\r\n\
         To: {to}\r\nCall-ID: {}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        inv.via, inv.call_id
    );
    assert!(h.send(&ack, &src).is_empty());
    assert_eq!(h.ep.stats().stray_acks_dropped, 0);
    assert!(
        h.advance(Duration::from_secs(2)).is_empty(),
        "no retransmission after the ACK"
    );

    let nonce = param(ch[0], "nonce");
    let b = h.branch();
    let mut inv2 = Req::new("INVITE", "sip:bob@example.com", &b).header(authorization(
        "Proxy-Authorization",
        Algorithm::Sha256,
        "alice",
        "wonderland",
        &nonce,
        "INVITE",
        "sip:bob@example.com",
        1,
    ));
    inv2.cseq = 2;
    let (r, _) = h.ask(&inv2.render(), &src);
    // Authenticated, routed, but bob has no registered device (crates/core/tests/calls.rs
    // covers calls that ring).
    assert_eq!(
        (r.status.0, r.reason.as_str()),
        (480, "Temporarily Unavailable")
    );

    // A stray ACK (no transaction) is dropped.
    let stray = ack.replace(
        &inv.via,
        "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-nope",
    );
    assert!(h.send(&stray, &src).is_empty());
    assert_eq!(h.ep.stats().stray_acks_dropped, 1);
}

#[test]
fn cancel_without_a_transaction_gets_481_and_with_one_200() {
    let mut h = Harness::new();
    let src = udp("198.51.100.7:5060");
    let b = h.branch();
    let (r, _) = h.ask(
        &Req::new("CANCEL", "sip:bob@example.com", &b).render(),
        &src,
    );
    assert_eq!(r.status.0, 481);

    let b = h.branch();
    let (inv_resp, _) = h.ask(
        &Req::new("INVITE", "sip:bob@example.com", &b).render(),
        &src,
    );
    let (r, _) = h.ask(
        &Req::new("CANCEL", "sip:bob@example.com", &b).render(),
        &src,
    );
    assert_eq!(r.status.0, 200);
    // RFC 3261 §9.2: the same To tag as the INVITE's response.
    assert_eq!(
        r.to_header().unwrap().tag(),
        inv_resp.to_header().unwrap().tag()
    );
}

// --- Bad input ----------------------------------------------------------------------------------

#[test]
fn malformed_request_gets_400_with_the_reason() {
    let mut h = Harness::new();
    let src = udp("198.51.100.7:5060");
    let b = h.branch();
    let req = Req::new("OPTIONS", "sip:example.com", &b)
        .render()
        .replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
    let (r, t) = h.ask(&req, &src);
    assert_eq!(r.status.0, 400);
    assert_eq!(r.reason, "CSeq method does not match request method");
    assert_eq!(
        r.headers.get(&HeaderName::CallId),
        Some(format!("call-{b}").as_str())
    );
    assert_eq!(r.top_via().unwrap().params.get("rport"), Some(Some("5060")));
    assert_eq!(t.destination.addr, src.peer);
    assert_eq!(h.ep.stats().malformed_requests, 1);
}

#[test]
fn malformed_response_and_garbage_are_dropped_and_counted() {
    let h = Harness::new();
    let src = udp("198.51.100.7:5060");
    assert!(h
        .send("SIP/2.0 200 OK\r\nVia: ???\r\n\r\n", &src)
        .is_empty());
    assert!(h.send("\u{1}\u{2}binary junk", &src).is_empty());
    assert!(h.send("\r\n\r\n", &src).is_empty());
    let stray = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKx\r\nFrom: <sip:a@example.com>;tag=1\r\n\
                 To: <sip:b@example.com>;tag=2\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    assert!(h.send(stray, &src).is_empty());
    let big = "X".repeat(70_000);
    assert!(h.send(&big, &src).is_empty());
    let s = h.ep.stats();
    assert_eq!(s.malformed_responses_dropped, 1);
    assert_eq!(s.garbage_dropped, 1);
    assert_eq!(s.keepalives, 1);
    assert_eq!(s.responses, 1);
    assert_eq!(s.oversized_dropped, 1);
}

/// Deterministic mutations of valid requests: nothing may panic, and every answer goes back to
/// the source (never relayed anywhere).
#[test]
fn mutated_input_never_panics_and_is_only_answered_to_its_source() {
    let mut h = Harness::new();
    let src = udp("198.51.100.7:5060");
    let b = h.branch();
    let seeds = [
        Req::new("REGISTER", "sip:example.com", &b).header("Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"00\", uri=\"sip:example.com\", response=\"00\"").render(),
        Req::new("INVITE", "sip:bob@example.com", &b).render(),
        Req::new("OPTIONS", "sip:example.com", &b).render(),
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..3000 {
        let mut bytes = seeds[i % seeds.len()].clone().into_bytes();
        for _ in 0..(1 + rand() % 4) {
            let pos = (rand() as usize) % bytes.len();
            match rand() % 3 {
                0 => bytes[pos] = (rand() & 0xff) as u8,
                1 => {
                    bytes.remove(pos);
                }
                _ => bytes.insert(pos, b"\r\n:;,<>\"@ \0"[(rand() % 11) as usize]),
            }
        }
        let mut out = Vec::new();
        h.now += Duration::from_millis(1);
        h.ep.handle_message(h.now, 0, &bytes, &src, &mut out);
        for t in &out {
            assert_eq!(t.destination.addr.ip(), src.peer.ip());
        }
    }
    assert_eq!(h.ep.stats().internal_errors, 0);
}

/// RFC 4475: every torture message, over a reliable transport (WebSocket frames: one message per
/// frame). No panic, no answer anywhere but the source connection, and the §3.2–3.3 verdicts.
#[test]
fn rfc4475_torture_messages() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/rfc4475");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipping: {} not found", dir.display());
        return;
    };
    let mut h = Harness::new();
    let expected = [
        ("unkscm", Some(416)),
        ("novelsc", Some(416)),
        ("bext01", Some(420)),
        ("invut", Some(415)),
        ("regaut01", Some(401)),
        ("zeromf", Some(200)),
        ("sdp01", Some(406)),
        ("insuf", Some(400)),
        ("bcast", None),
        ("badvers", Some(505)),
    ];
    let mut seen = 0;
    for (i, entry) in entries.flatten().enumerate() {
        let path = entry.path();
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let src = Source {
            transport: TransportKind::Ws,
            peer: SocketAddr::new(IpAddr::from([198, 51, 100, (i % 250) as u8 + 1]), 40000),
            local: SERVER_ADDR.parse().unwrap(),
            connection: Some(ConnectionId(i as u64)),
            received_at: h.now,
        };
        let mut out = Vec::new();
        h.now += Duration::from_millis(10);
        h.ep.handle_message(h.now, 0, &bytes, &src, &mut out);
        for t in &out {
            assert_eq!(
                t.destination.connection,
                Some(ConnectionId(i as u64)),
                "{name}"
            );
        }
        if std::env::var_os("CONFAB_SHOW_VERDICTS").is_some() {
            let line = out.first().map(|t| {
                String::from_utf8_lossy(&t.bytes)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned()
            });
            eprintln!("{name}: {line:?}");
        }
        if let Some((_, want)) = expected.iter().find(|(n, _)| *n == name) {
            seen += 1;
            // The status line only: a 505 echoes a Via that does not parse (`SIP/7.0/UDP`).
            let got = out.first().and_then(|t| {
                std::str::from_utf8(&t.bytes[8..11])
                    .ok()?
                    .parse::<u16>()
                    .ok()
            });
            assert_eq!(got, *want, "{name}");
        }
    }
    assert_eq!(seen, expected.len());
    assert_eq!(h.ep.stats().internal_errors, 0);
}

#[test]
fn endpoint_is_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Endpoint>();
}

#[test]
fn retransmitted_invite_gets_the_same_407_and_a_retransmission_after_the_transaction_the_same_tag()
{
    let mut h = Harness::new();
    let src = udp("198.51.100.7:5060");
    let b = h.branch();
    let inv = Req::new("INVITE", "sip:bob@example.com", &b).render();
    let first = h.send(&inv, &src);
    let again = h.send(&inv, &src);
    assert_eq!(first, again);
    assert_eq!(h.ep.stats().retransmissions_absorbed, 1);
    // Timer H (64*T1) ends the transaction without an ACK; a late retransmission is a new
    // request but keeps the same To tag (derived, not random).
    h.advance(Duration::from_secs(33));
    assert_eq!(h.ep.stats().transactions, 0);
    let late = h.send(&inv, &src);
    let tag = |t: &Transmit| {
        parse_response(t)
            .to_header()
            .unwrap()
            .tag()
            .map(str::to_owned)
    };
    assert_eq!(tag(&late[0]), tag(&first[0]));
}

#[test]
fn tel_request_uri_on_register_is_416() {
    let mut h = Harness::new();
    let b = h.branch();
    let (r, _) = h.ask(
        &Req::new("REGISTER", "tel:+15551234", &b).render(),
        &udp("198.51.100.7:5060"),
    );
    assert_eq!(r.status.0, 416);
}
