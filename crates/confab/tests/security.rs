//! The authenticating registrar under attack: wrong and unknown credentials, stale and replayed
//! nonces, malformed and oversize messages, requests for other domains (never forwarded), and the
//! ban after repeated failures. Each test runs its own server.

mod common;

use common::*;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

const ALICE: (&str, &str) = ("alice", "correct horse battery");

/// The harness's own digest code against RFC 2617 §3.5's worked example, so that a failure below
/// is the server's and not the test's.
#[test]
fn harness_digest_matches_rfc2617_example() {
    let ch = Challenge::parse(
        r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
    )
    .unwrap();
    let auth = authorization(
        &ch,
        "Mufasa",
        "Circle Of Life",
        "GET",
        "/dir/index.html",
        1,
        "0a4f113b",
    );
    assert!(
        auth.contains(r#"response="6629fae49393a05397450978507c4ef1""#),
        "{auth}"
    );
    assert!(
        auth.contains(r#"opaque="5ccc069c403ebaf9f0171e9517f40e41""#),
        "{auth}"
    );
}

fn server(name: &str) -> Server {
    // SHA-256 preferred (RFC 8760), so the digest checks below run on it.
    Server::start(ServerSpec::new(name).user(ALICE.0, ALICE.1).set(
        "auth",
        "algorithms",
        r#"["SHA-256", "MD5"]"#,
    ))
}

fn expect_status(resp: Option<SipMsg>, status: u16, what: &str) -> SipMsg {
    let resp = resp.unwrap_or_else(|| panic!("{what}: no answer (expected {status})"));
    assert_eq!(
        resp.status(),
        Some(status),
        "{what}: expected {status}, got:\n{}",
        resp.summary()
    );
    resp
}

#[test]
fn wrong_password_gets_a_fresh_challenge() {
    let server = server("wrongpw");
    let udp = UdpClient::bind(LOOPBACK);
    let mut ua = Ua::new(ALICE.0, "not the password", "UDP", udp.local_addr());

    let first = expect_status(
        udp.request(&ua.register(None, None), server.udp(), ANSWER_WAIT),
        401,
        "REGISTER",
    );
    let ch1 = first.challenge().expect("401 carries WWW-Authenticate");
    let auth = ua.answer(&ch1);
    let second = expect_status(
        udp.request(&ua.register(Some(&auth), None), server.udp(), ANSWER_WAIT),
        401,
        "REGISTER with a wrong password",
    );
    let ch2 = second.challenge().unwrap_or_else(|| {
        panic!(
            "401 for a wrong password carries no fresh challenge:\n{}",
            second.summary()
        )
    });
    assert_ne!(
        ch2.nonce(),
        ch1.nonce(),
        "the challenge after a wrong password reuses the old nonce"
    );
    assert!(
        !ch2.stale(),
        "stale=true for a wrong password (RFC 7616 §3.3: only for a valid digest)"
    );
    assert_eq!(ch2.realm(), DOMAIN);

    // The right password on the fresh challenge still works: one failure does not lock the account.
    ua.password = ALICE.1.into();
    let auth = ua.answer(&ch2);
    expect_status(
        udp.request(&ua.register(Some(&auth), None), server.udp(), ANSWER_WAIT),
        200,
        "REGISTER with the right password",
    );
}

/// Reason phrase, header names, and each challenge's scheme and parameters.
type Shape = (String, Vec<String>, Vec<(String, Vec<String>)>);

/// What a scanner sees of a 401: header names, reason, and the challenge's shape (not its nonce).
fn shape(resp: &SipMsg) -> Shape {
    let challenges = resp
        .challenges()
        .iter()
        .map(|c| {
            let mut params: Vec<String> = c
                .params
                .iter()
                .map(|(k, v)| {
                    // Values that must not depend on the user: everything but nonce/opaque.
                    if k == "nonce" || k == "opaque" {
                        k.clone()
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            params.sort();
            (c.scheme.to_ascii_lowercase(), params)
        })
        .collect();
    (
        resp.reason().to_string(),
        resp.header_names().into_iter().collect(),
        challenges,
    )
}

#[test]
fn unknown_user_is_indistinguishable_from_known_user() {
    let server = server("unknownuser");
    let udp = UdpClient::bind(LOOPBACK);
    let mut known = Ua::new(ALICE.0, "wrong", "UDP", udp.local_addr());
    let mut unknown = Ua::new("nosuchuser", "wrong", "UDP", udp.local_addr());

    // Stage 1: no credentials.
    let k1 = expect_status(
        udp.request(&known.register(None, None), server.udp(), ANSWER_WAIT),
        401,
        "known user",
    );
    let u1 = expect_status(
        udp.request(&unknown.register(None, None), server.udp(), ANSWER_WAIT),
        401,
        "unknown user",
    );
    assert_eq!(
        shape(&k1),
        shape(&u1),
        "401 differs between a known and an unknown user:\n{}\n---\n{}",
        k1.summary(),
        u1.summary()
    );
    assert_ne!(
        k1.challenge().unwrap().nonce(),
        u1.challenge().unwrap().nonce(),
        "nonces must differ"
    );

    // Stage 2: wrong credentials.
    let auth_k = known.answer(&k1.challenge().unwrap());
    let auth_u = unknown.answer(&u1.challenge().unwrap());
    let k2 = expect_status(
        udp.request(
            &known.register(Some(&auth_k), None),
            server.udp(),
            ANSWER_WAIT,
        ),
        401,
        "known user, wrong password",
    );
    let u2 = expect_status(
        udp.request(
            &unknown.register(Some(&auth_u), None),
            server.udp(),
            ANSWER_WAIT,
        ),
        401,
        "unknown user, any password",
    );
    assert_eq!(
        shape(&k2),
        shape(&u2),
        "401 after bad credentials differs between a known and an unknown user:\n{}\n---\n{}",
        k2.summary(),
        u2.summary()
    );
}

#[test]
fn expired_nonce_gets_stale_true() {
    let lifetime = Duration::from_secs(2);
    let server = Server::start(ServerSpec::new("stale").user(ALICE.0, ALICE.1).set(
        "auth",
        "nonce_lifetime_secs",
        lifetime.as_secs(),
    ));
    let udp = UdpClient::bind(LOOPBACK);
    let mut ua = Ua::new(ALICE.0, ALICE.1, "UDP", udp.local_addr());

    // A fresh nonce works.
    let (_, ok) = register_udp(&udp, server.udp(), &mut ua);
    assert_eq!(
        ok.status(),
        Some(200),
        "REGISTER with a fresh nonce:\n{}",
        ok.summary()
    );

    // A new challenge, left unused until it has expired.
    let resp = expect_status(
        udp.request(&ua.register(None, None), server.udp(), ANSWER_WAIT),
        401,
        "REGISTER",
    );
    let issued = Instant::now();
    let ch = resp.challenge().expect("challenge");
    let expired_at = issued + lifetime + Duration::from_secs(1);
    while Instant::now() < expired_at {
        std::thread::sleep(Duration::from_millis(100));
    }

    // Wrong password on the expired nonce: 401, and not stale (the digest is not valid).
    let mut wrong = ua.clone();
    wrong.password = "wrong".into();
    let auth = wrong.answer(&ch);
    let r = expect_status(
        udp.request(
            &wrong.register(Some(&auth), None),
            server.udp(),
            ANSWER_WAIT,
        ),
        401,
        "expired nonce, wrong password",
    );
    let c = r.challenge().expect("challenge");
    assert!(
        !c.stale(),
        "stale=true although the digest was wrong (RFC 7616 §3.3):\n{}",
        r.summary()
    );

    // Right password on the expired nonce: 401 with stale=true and a new nonce.
    let auth = ua.answer(&ch);
    let r = expect_status(
        udp.request(&ua.register(Some(&auth), None), server.udp(), ANSWER_WAIT),
        401,
        "expired nonce, right password",
    );
    let fresh = r.challenge().expect("challenge");
    assert!(
        fresh.stale(),
        "expired nonce with a valid digest: expected stale=true:\n{}",
        r.summary()
    );
    assert_ne!(
        fresh.nonce(),
        ch.nonce(),
        "stale challenge repeats the expired nonce"
    );

    // The UA retries on the new nonce without asking the user: 200.
    let auth = ua.answer(&fresh);
    expect_status(
        udp.request(&ua.register(Some(&auth), None), server.udp(), ANSWER_WAIT),
        200,
        "REGISTER on the stale challenge's nonce",
    );
}

#[test]
fn replayed_authorization_is_refused() {
    let server = server("replay");
    let udp = UdpClient::bind(LOOPBACK);
    let mut ua = Ua::new(ALICE.0, ALICE.1, "UDP", udp.local_addr());

    let first = expect_status(
        udp.request(&ua.register(None, None), server.udp(), ANSWER_WAIT),
        401,
        "REGISTER",
    );
    let auth = ua.answer(&first.challenge().unwrap());
    let request = ua.register(Some(&auth), None);
    expect_status(
        udp.request(&request, server.udp(), ANSWER_WAIT),
        200,
        "authenticated REGISTER",
    );

    // A retransmission (same branch, same CSeq) is the same transaction: the same 200, not a replay.
    expect_status(
        udp.request(&request, server.udp(), ANSWER_WAIT),
        200,
        "retransmitted REGISTER (RFC 3261 §17.2.2)",
    );

    // The same Authorization (nonce, nc, cnonce, response) in a new transaction is a replay.
    let replay = ua.register(Some(&auth), None);
    let r = expect_status(
        udp.request(&replay, server.udp(), ANSWER_WAIT),
        401,
        "replayed Authorization in a new REGISTER",
    );
    assert!(
        r.challenge().is_some(),
        "401 to a replay carries no challenge:\n{}",
        r.summary()
    );

    // …also from another socket (an eavesdropper elsewhere).
    let other = UdpClient::bind(LOOPBACK);
    let mut thief = ua.clone();
    thief.sent_by = other.local_addr().to_string();
    thief.call_id = unique("stolen-");
    let r = other.request(
        &thief.register(Some(&auth), None),
        server.udp(),
        ANSWER_WAIT,
    );
    expect_status(
        r,
        401,
        "replayed Authorization from another socket and Call-ID",
    );
}

/// A request with the usual headers, some replaced or removed: `(name, Some(value))` replaces or
/// adds, `(name, None)` removes.
fn options_with(local: SocketAddr, edits: &[(&str, Option<&str>)], body: &str) -> String {
    let mut headers: Vec<(String, String)> = vec![
        (
            "Via".into(),
            format!("SIP/2.0/UDP {local};branch={};rport", unique("z9hG4bK")),
        ),
        ("Max-Forwards".into(), "70".into()),
        (
            "From".into(),
            format!("<sip:probe@{DOMAIN}>;tag={}", unique("t")),
        ),
        ("To".into(), format!("<sip:{DOMAIN}>")),
        ("Call-ID".into(), unique("mal-")),
        ("CSeq".into(), "1 OPTIONS".into()),
        ("Content-Length".into(), body.len().to_string()),
    ];
    for (name, value) in edits {
        match (
            headers
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case(name)),
            value,
        ) {
            (Some(i), Some(v)) => headers[i].1 = (*v).into(),
            (Some(i), None) => {
                headers.remove(i);
            }
            (None, Some(v)) => headers.insert(headers.len() - 1, ((*name).into(), (*v).into())),
            (None, None) => {}
        }
    }
    let mut s = format!("OPTIONS sip:{DOMAIN} SIP/2.0\r\n");
    for (n, v) in headers {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.push_str(body);
    s
}

#[test]
fn malformed_requests_get_400_naming_the_problem() {
    // Failures here must not add up to a ban that would hide later answers.
    let server = Server::start(ServerSpec::new("malformed").set("auth", "max_failures", 1000));
    let udp = UdpClient::bind(LOOPBACK);
    let local = udp.local_addr();

    // (what, request, words of which the reason phrase must contain one)
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "non-numeric CSeq",
            options_with(local, &[("CSeq", Some("abc OPTIONS"))], ""),
            &["cseq"],
        ),
        (
            "CSeq method differs from the request's",
            options_with(local, &[("CSeq", Some("1 INVITE"))], ""),
            &["cseq", "method"],
        ),
        (
            "missing Call-ID",
            options_with(local, &[("Call-ID", None)], ""),
            &["call-id", "callid", "call id"],
        ),
        (
            "missing From",
            options_with(local, &[("From", None)], ""),
            &["from"],
        ),
        (
            "missing CSeq",
            options_with(local, &[("CSeq", None)], ""),
            &["cseq"],
        ),
        (
            "Content-Length beyond the datagram",
            options_with(
                local,
                &[
                    ("Content-Length", Some("500")),
                    ("Content-Type", Some("text/plain")),
                ],
                "short",
            ),
            &["length", "body", "truncated"],
        ),
        (
            "non-numeric Content-Length",
            options_with(local, &[("Content-Length", Some("ten"))], ""),
            &["length"],
        ),
    ];
    let mut failures = Vec::new();
    for (what, request, words) in &cases {
        match udp.request(request, server.udp(), ANSWER_WAIT) {
            None => failures.push(format!("{what}: no answer (expected 400)")),
            Some(r) if r.status() != Some(400) => {
                failures.push(format!("{what}: expected 400, got\n{}", r.summary()))
            }
            Some(r) => {
                let reason = r.reason().to_ascii_lowercase();
                if !words.iter().any(|w| reason.contains(w)) {
                    failures.push(format!(
                        "{what}: 400 reason {:?} names none of {words:?}",
                        r.reason()
                    ));
                }
            }
        }
    }

    // Garbage: no answer, over UDP and over TCP.
    let garbage: [&[u8]; 4] = [
        b"\x00\x01\x02\x03\xff\xfe garbage \r\n\r\n",
        b"hello there\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"SIP/2.0\r\n\r\n",
    ];
    for g in garbage {
        udp.send_to(g, server.udp());
        if let Some(r) = udp.recv(SILENCE_WAIT) {
            failures.push(format!(
                "garbage {:?} over UDP was answered:\n{}",
                String::from_utf8_lossy(g),
                r.summary()
            ));
        }
        let mut tcp = TcpClient::connect(server.tcp());
        let _ = tcp.try_send(g);
        if let Some(r) = tcp.recv(SILENCE_WAIT) {
            failures.push(format!(
                "garbage {:?} over TCP was answered:\n{}",
                String::from_utf8_lossy(g),
                r.summary()
            ));
        }
    }

    assert!(
        failures.is_empty(),
        "{} of the malformed cases failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert_still_serving(&server);
}

#[test]
fn oversize_requests_are_refused() {
    // A small message size limit makes "oversize" testable with a datagram loopback carries whole.
    let max_message_size = 4096;
    let server = Server::start(
        ServerSpec::new("oversize")
            .set("auth", "max_failures", 1000)
            .set("sip", "max_message_size", max_message_size),
    );
    let udp = UdpClient::bind(LOOPBACK);
    let local = udp.local_addr();
    let mut failures: Vec<String> = Vec::new();

    // Oversize: a valid OPTIONS padded with a header to 2.5 times sip.max_message_size. 400 or
    // 513 Message Too Large (RFC 3261 §21.5.14) are both right; 413 is for bodies.
    let size = max_message_size * 5 / 2;
    let pad = "x".repeat(size - options_with(local, &[("X-Padding", Some(""))], "").len());
    let big = options_with(local, &[("X-Padding", Some(&pad))], "");
    assert_eq!(big.len(), size);
    match udp.request(&big, server.udp(), ANSWER_WAIT) {
        Some(r) if matches!(r.status(), Some(400 | 413 | 513)) && !r.reason().is_empty() => {}
        Some(r) => failures.push(format!("oversize datagram: expected 400/413/513 with a reason, got\n{}", r.start_line)),
        None => failures.push(format!("oversize datagram ({size} bytes, limit {max_message_size}): no answer (expected 400/413/513)")),
    }
    // The same over TCP: the server must answer or close, and not buffer without end.
    let mut tcp = TcpClient::connect(server.tcp());
    let pad =
        "x".repeat(size - options_with(tcp.local_addr(), &[("X-Padding", Some(""))], "").len());
    let big_tcp = options_with(tcp.local_addr(), &[("X-Padding", Some(&pad))], "")
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let _ = tcp.try_send(big_tcp.as_bytes());
    match tcp.recv(ANSWER_WAIT) {
        Some(r) if matches!(r.status(), Some(400 | 413 | 513)) => {}
        Some(r) => failures.push(format!(
            "oversize message over TCP: expected 400/413/513 or a close, got\n{}",
            r.start_line
        )),
        None if tcp.closed => {}
        None => failures.push(format!(
            "oversize message over TCP ({size} bytes): neither answered nor closed"
        )),
    }

    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_still_serving(&server);
}

/// A loopback "foreign host" at 127.0.0.3 that records anything Confab might forward to it.
struct Sink {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl Sink {
    fn bind() -> Self {
        let udp = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 3), 0)).expect("bind 127.0.0.3");
        let port = udp.local_addr().unwrap().port();
        let tcp = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 3), port))
            .or_else(|_| TcpListener::bind((Ipv4Addr::new(127, 0, 0, 3), 0)))
            .expect("bind tcp 127.0.0.3");
        udp.set_nonblocking(true).unwrap();
        tcp.set_nonblocking(true).unwrap();
        Self { udp, tcp }
    }

    fn addr(&self) -> SocketAddr {
        self.udp.local_addr().unwrap()
    }

    /// Anything that arrived within `wait`.
    fn received(&self, wait: Duration) -> Option<String> {
        let end = Instant::now() + wait;
        let mut buf = [0u8; 65_536];
        while Instant::now() < end {
            if let Ok((n, from)) = self.udp.recv_from(&mut buf) {
                return Some(format!(
                    "UDP from {from}: {}",
                    String::from_utf8_lossy(&buf[..n])
                ));
            }
            if let Ok((_, from)) = self.tcp.accept() {
                return Some(format!("a TCP connection from {from}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

#[test]
fn foreign_domain_requests_are_refused_and_never_forwarded() {
    let server = server("foreign");
    let sink = Sink::bind();
    let udp = UdpClient::bind(LOOPBACK);
    let local = udp.local_addr();
    let target = sink.addr();

    let request = |method: &str, ruri: &str, to: &str, extra: &str| -> String {
        format!(
            "{method} {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:mallory@{DOMAIN}>;tag={}\r\n\
             To: <{to}>\r\n\
             Call-ID: {}\r\n\
             CSeq: 1 {method}\r\n\
             Contact: <sip:mallory@{local}>\r\n\
             {extra}\
             Content-Length: 0\r\n\r\n",
            unique("z9hG4bK"),
            unique("t"),
            unique("foreign-"),
        )
    };
    // (what, request, the status required; None: any answer, as long as nothing is forwarded).
    // Confab counts every 127/8 address (any port) as its own host, so requests naming the sink
    // are answered locally; the point of those is that nothing reaches the sink.
    let route = format!("Route: <sip:{target};lr>\r\n");
    let at_sink = format!("sip:bob@{target}");
    let cases: Vec<(&str, String, Option<u16>)> = vec![
        (
            "REGISTER for example.com",
            request("REGISTER", "sip:example.com", "sip:alice@example.com", ""),
            Some(403),
        ),
        (
            "OPTIONS to example.net",
            request("OPTIONS", "sip:bob@example.net", "sip:bob@example.net", ""),
            Some(403),
        ),
        (
            "INVITE to example.com",
            request("INVITE", "sip:bob@example.com", "sip:bob@example.com", ""),
            Some(403),
        ),
        (
            "MESSAGE to example.com with a Route to the sink",
            request(
                "MESSAGE",
                "sip:bob@example.com",
                "sip:bob@example.com",
                &route,
            ),
            Some(403),
        ),
        (
            "INVITE for a local user with a Route to the sink",
            request(
                "INVITE",
                &format!("sip:alice@{DOMAIN}"),
                &format!("sip:alice@{DOMAIN}"),
                &route,
            ),
            None,
        ),
        (
            "OPTIONS to the sink's address",
            request("OPTIONS", &at_sink, &at_sink, ""),
            None,
        ),
        (
            "INVITE to the sink's address",
            request("INVITE", &at_sink, &at_sink, ""),
            None,
        ),
    ];
    let mut failures = Vec::new();
    for (what, req, want) in &cases {
        match (udp.request(req, server.udp(), ANSWER_WAIT), want) {
            (Some(r), Some(want)) if r.status() != Some(*want) => {
                failures.push(format!("{what}: expected {want}, got\n{}", r.summary()))
            }
            (Some(r), _) => eprintln!("{what}: {}", r.start_line),
            (None, _) => failures.push(format!("{what}: no answer")),
        }
    }
    if let Some(forwarded) = sink.received(SILENCE_WAIT) {
        failures.push(format!(
            "Confab forwarded a request to the foreign host {target}: {forwarded}"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn repeated_failures_ban_the_source_address_only() {
    let max_failures = 3;
    let server = Server::start(
        ServerSpec::new("ban")
            .user(ALICE.0, ALICE.1)
            .set("auth", "max_failures", max_failures)
            .set("auth", "failure_window_secs", 60)
            .set("auth", "ban_secs", 600),
    );
    // The attacker uses 127.0.0.2 (all of 127/8 is local on Linux), so the ban spares 127.0.0.1.
    let attacker_ip = Ipv4Addr::new(127, 0, 0, 2);
    let attacker = UdpClient::bind(attacker_ip);
    let mut guess = Ua::new(ALICE.0, "guess", "UDP", attacker.local_addr());

    for attempt in 1..=max_failures {
        let ch = expect_status(
            attacker.request(&guess.register(None, None), server.udp(), ANSWER_WAIT),
            401,
            &format!("unauthenticated REGISTER before failure {attempt}"),
        );
        guess.password = format!("guess-{attempt}");
        let auth = guess.answer(&ch.challenge().expect("challenge"));
        let r = attacker.request(
            &guess.register(Some(&auth), None),
            server.udp(),
            ANSWER_WAIT,
        );
        if attempt < max_failures {
            expect_status(r, 401, &format!("wrong password, attempt {attempt}"));
        } else if let Some(r) = r {
            // The answer to the failure that triggers the ban may still be sent.
            assert_eq!(r.status(), Some(401), "attempt {attempt}:\n{}", r.summary());
        }
    }

    // Banned: nothing from 127.0.0.2 is answered, from any port, over UDP or TCP.
    let fresh = UdpClient::bind(attacker_ip);
    let req = options_request(&fresh.local_addr(), "UDP", &format!("sip:{DOMAIN}"));
    if let Some(r) = fresh.request(&req, server.udp(), SILENCE_WAIT) {
        panic!(
            "OPTIONS from banned 127.0.0.2 was answered:\n{}",
            r.summary()
        );
    }
    let mut correct = Ua::new(ALICE.0, ALICE.1, "UDP", fresh.local_addr());
    if let Some(r) = fresh.request(&correct.register(None, None), server.udp(), SILENCE_WAIT) {
        panic!(
            "REGISTER from banned 127.0.0.2 was answered:\n{}",
            r.summary()
        );
    }
    if let Ok(mut tcp) = TcpClient::connect_from(attacker_ip.into(), server.tcp()) {
        let req = options_request(&tcp.local_addr(), "TCP", &format!("sip:{DOMAIN}"));
        let _ = tcp.try_send(req.as_bytes());
        if let Some(r) = tcp.recv(SILENCE_WAIT) {
            panic!(
                "OPTIONS over TCP from banned 127.0.0.2 was answered:\n{}",
                r.summary()
            );
        }
    }

    // 127.0.0.1 is still served, and alice (whose password was guessed at) can still register.
    assert_still_serving(&server);
    let udp = UdpClient::bind(LOOPBACK);
    let mut alice = Ua::new(ALICE.0, ALICE.1, "UDP", udp.local_addr());
    let (_, ok) = register_udp(&udp, server.udp(), &mut alice);
    assert_eq!(
        ok.status(),
        Some(200),
        "alice from 127.0.0.1 after the ban of 127.0.0.2:\n{}",
        ok.summary()
    );
}
