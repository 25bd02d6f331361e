//! Digest authentication: RFC 7616 and RFC 2617 example vectors, header parsing, and the nonce
//! lifecycle under simulated time.

use std::time::{Duration, Instant};

use confab_sip::auth::{
    client_authorization, expected_response, ha1, verify, Algorithm, Challenge, Credentials,
    NonceCheck, NonceManager, Qop,
};

// RFC 7616 §3.9.1: the same request answered with MD5 and with SHA-256.
const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
const RFC7616_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";

fn rfc7616_authorization(algorithm: &str, response: &str) -> String {
    format!(
        "Digest username=\"Mufasa\",\r\n    realm=\"http-auth@example.org\",\r\n    \
         uri=\"/dir/index.html\",\r\n    algorithm={algorithm},\r\n    nonce=\"{RFC7616_NONCE}\",\r\n    \
         nc=00000001,\r\n    cnonce=\"{RFC7616_CNONCE}\",\r\n    qop=auth,\r\n    \
         response=\"{response}\",\r\n    opaque=\"{RFC7616_OPAQUE}\""
    )
}

#[test]
fn rfc7616_s3_9_1_md5_example() {
    let response = "8ca523f5e9506fed4657c9700eebdbec";
    let creds = Credentials::parse(&rfc7616_authorization("MD5", response)).unwrap();
    assert_eq!(creds.algorithm, Algorithm::Md5);
    assert_eq!(creds.nc, Some(1));
    assert_eq!(creds.qop, Some(Qop::Auth));
    assert_eq!(creds.opaque.as_deref(), Some(RFC7616_OPAQUE));
    let h = ha1(
        Algorithm::Md5,
        "Mufasa",
        "http-auth@example.org",
        "Circle of Life",
    );
    assert_eq!(
        expected_response(Algorithm::Md5, &h, "GET", &creds),
        response
    );
    assert!(verify(&creds, "GET", &h));
    assert!(!verify(&creds, "POST", &h));
    let wrong = ha1(
        Algorithm::Md5,
        "Mufasa",
        "http-auth@example.org",
        "Circle of life",
    );
    assert!(!verify(&creds, "GET", &wrong));
}

#[test]
fn rfc7616_s3_9_1_sha256_example() {
    let response = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1";
    let creds = Credentials::parse(&rfc7616_authorization("SHA-256", response)).unwrap();
    assert_eq!(creds.algorithm, Algorithm::Sha256);
    let h = ha1(
        Algorithm::Sha256,
        "Mufasa",
        "http-auth@example.org",
        "Circle of Life",
    );
    assert_eq!(
        expected_response(Algorithm::Sha256, &h, "GET", &creds),
        response
    );
    assert!(verify(&creds, "GET", &h));
    // The MD5 HA1 does not verify a SHA-256 response.
    let md5 = ha1(
        Algorithm::Md5,
        "Mufasa",
        "http-auth@example.org",
        "Circle of Life",
    );
    assert!(!verify(&creds, "GET", &md5));
}

#[test]
fn rfc7616_s3_9_1_client_authorization_round_trip() {
    for (alg, response) in [
        (Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
        (
            Algorithm::Sha256,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
    ] {
        let header = client_authorization(
            alg,
            "Mufasa",
            "Circle of Life",
            "http-auth@example.org",
            RFC7616_NONCE,
            "GET",
            "/dir/index.html",
            Some(RFC7616_CNONCE),
            1,
            Some(RFC7616_OPAQUE),
        );
        let creds = Credentials::parse(&header).unwrap();
        assert_eq!(creds.response, response, "{header}");
        assert_eq!(creds.username, "Mufasa");
        assert_eq!(creds.cnonce.as_deref(), Some(RFC7616_CNONCE));
        assert!(header.contains("nc=00000001"), "{header}");
        assert!(header.contains("qop=auth"), "{header}");
    }
}

#[test]
fn rfc2617_s3_5_example() {
    let header = r#"Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
    let creds = Credentials::parse(header).unwrap();
    assert_eq!(
        creds.algorithm,
        Algorithm::Md5,
        "MD5 when algorithm is absent"
    );
    let h = ha1(
        Algorithm::Md5,
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
    );
    assert!(verify(&creds, "GET", &h));
    // Upper-case hex in the response and in the stored HA1 still verify.
    let mut upper = creds.clone();
    upper.response = upper.response.to_ascii_uppercase();
    assert!(verify(&upper, "GET", &h.to_ascii_uppercase()));
}

/// RFC 2069 form (no qop), SHA-256; vector from curl's test 2061.
#[test]
fn rfc7616_no_qop_sha256() {
    let header = r#"Digest username="testuser", realm="testrealm", nonce="1053604145", uri="/2061", response="9dc55255f1a2537b838311674b621d45346b862a81631bb20e4ce356ef25062d", algorithm="SHA-256""#;
    let creds = Credentials::parse(header).unwrap();
    assert_eq!(creds.qop, None);
    assert_eq!(creds.nc, None);
    let h = ha1(Algorithm::Sha256, "testuser", "testrealm", "testpass");
    assert!(verify(&creds, "GET", &h));
    let built = client_authorization(
        Algorithm::Sha256,
        "testuser",
        "testpass",
        "testrealm",
        "1053604145",
        "GET",
        "/2061",
        None,
        1,
        None,
    );
    assert!(!built.contains("qop"), "{built}");
    assert_eq!(Credentials::parse(&built).unwrap().response, creds.response);
}

#[test]
fn rfc3261_s22_4_sip_register_no_qop() {
    // HA1 and response cross-checked with Python's hashlib.
    let h = ha1(Algorithm::Md5, "bob", "biloxi.com", "zanzibar");
    assert_eq!(h, "12af60467a33e8518da5c68bbff12b11");
    let header = "Digest username=\"bob\", realm=\"biloxi.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
                  uri=\"sip:biloxi.com\", response=\"4441045a8075db3ead543693997e2a0e\"";
    let creds = Credentials::parse(header).unwrap();
    assert!(verify(&creds, "REGISTER", &h));
    assert!(!verify(&creds, "INVITE", &h));
}

#[test]
fn ha1_is_lowercase_hex_of_the_right_length() {
    let md5 = ha1(Algorithm::Md5, "alice", "example.com", "secret");
    let sha = ha1(Algorithm::Sha256, "alice", "example.com", "secret");
    assert_eq!(md5.len(), 32);
    assert_eq!(sha.len(), 64);
    assert!(md5
        .chars()
        .chain(sha.chars())
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
}

#[test]
fn rfc8760_algorithm_names_parse_case_insensitively() {
    assert_eq!(Algorithm::parse("md5").unwrap(), Algorithm::Md5);
    assert_eq!(Algorithm::parse("sha-256").unwrap(), Algorithm::Sha256);
    assert_eq!(Algorithm::parse("SHA-256").unwrap(), Algorithm::Sha256);
    assert!(Algorithm::parse("SHA-512-256").is_err());
    assert!(Algorithm::parse("MD5-sess").is_err());
    assert_eq!(Algorithm::Sha256.to_string(), "SHA-256");
    assert_eq!(Algorithm::Md5.to_string(), "MD5");
}

#[test]
fn credentials_parse_odd_spacing_order_escapes_and_unknown_params() {
    let header =
        "digest   response = \"0123abcd\" ,nc=0000000A,  QOP=\"auth\",\tcnonce=\"c\\\"n\" , \
                  userhash=false, uri=\"sip:bob@example.com;transport=tcp\",NONCE=\"n,1\",  \
                  realm=\"Realm \\\\ \\\"quoted\\\"\",username=\"al\\ice\",extra=token,";
    let creds = Credentials::parse(header).unwrap();
    assert_eq!(creds.username, "alice");
    assert_eq!(creds.realm, "Realm \\ \"quoted\"");
    assert_eq!(creds.nonce, "n,1");
    assert_eq!(creds.uri, "sip:bob@example.com;transport=tcp");
    assert_eq!(creds.cnonce.as_deref(), Some("c\"n"));
    assert_eq!(creds.nc, Some(10));
    assert_eq!(creds.qop, Some(Qop::Auth));
    assert_eq!(creds.response, "0123abcd");
    assert_eq!(creds.opaque, None);
}

#[test]
fn credentials_parse_errors() {
    let ok = "Digest username=\"a\",realm=\"r\",nonce=\"n\",uri=\"sip:x\",response=\"0\"";
    assert!(Credentials::parse(ok).is_ok());
    let bad = [
        "",
        "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
        "Digest realm=\"r\",nonce=\"n\",uri=\"sip:x\",response=\"0\"", // no username
        "Digest username=\"a\",realm=\"r\",uri=\"sip:x\",response=\"0\"", // no nonce
        "Digest username=\"a\",realm=\"r\",nonce=\"n\",response=\"0\"", // no uri
        "Digest username=\"a\",realm=\"r\",nonce=\"n\",uri=\"sip:x\"",   // no response
        "Digest username=\"a,realm=\"r\",nonce=\"n\",uri=\"sip:x\",response=\"0",
        "Digest username=\"a\" realm=\"r\",nonce=\"n\",uri=\"sip:x\",response=\"0\"",
        "Digest username",
        "Digest username=\"a\",username=\"b\",realm=\"r\",nonce=\"n\",uri=\"sip:x\",response=\"0\"",
        "Digest username=\"a\",realm=\"r\",nonce=\"n\",uri=\"sip:x\",response=\"0\",algorithm=SHA-1",
        "Digest username=\"a\",realm=\"r\",nonce=\"n\",uri=\"sip:x\",response=\"0\",qop=auth,nc=1",
        "Digest username=\"a\",realm=\"r\",nonce=\"n\",uri=\"sip:x\",response=\"0\",qop=auth,cnonce=\"c\"",
        "Digest username=\"a\",realm=\"r\",nonce=\"n\",uri=\"sip:x\",response=\"0\",qop=auth,cnonce=\"c\",nc=xyz",
        "Digest username=\"a\",realm=\"r\",nonce=\"n\",uri=\"sip:x\",response=\"0\",qop=auth,cnonce=\"c\",nc=123456789",
        "Digest username=\"a\",realm=\"r\",nonce=\"n\",uri=\"sip:x\",response=\"0\",qop=bogus,cnonce=\"c\",nc=1",
    ];
    for header in bad {
        assert!(Credentials::parse(header).is_err(), "accepted: {header}");
    }
}

#[test]
fn credentials_without_qop_drop_nc_and_cnonce() {
    // The response does not cover nc without qop, so nc must not feed replay detection.
    let header = "Digest username=\"a\",realm=\"r\",nonce=\"n\",uri=\"sip:x\",response=\"0\",nc=00000009,cnonce=\"c\"";
    let creds = Credentials::parse(header).unwrap();
    assert_eq!(creds.nc, None);
    assert_eq!(creds.cnonce, None);
}

#[test]
fn auth_int_is_never_verified() {
    let header = client_authorization(
        Algorithm::Md5,
        "a",
        "pw",
        "r",
        "n",
        "INVITE",
        "sip:x",
        Some("c"),
        1,
        None,
    )
    .replace("qop=auth", "qop=auth-int");
    let creds = Credentials::parse(&header).unwrap();
    assert_eq!(creds.qop, Some(Qop::AuthInt));
    assert!(!verify(
        &creds,
        "INVITE",
        &ha1(Algorithm::Md5, "a", "r", "pw")
    ));
}

#[test]
fn challenge_display() {
    let mut challenge = Challenge {
        realm: "example.com".into(),
        nonce: "abc123".into(),
        opaque: Some("op".into()),
        algorithm: Algorithm::Sha256,
        stale: false,
    };
    assert_eq!(
        challenge.to_string(),
        r#"Digest realm="example.com",nonce="abc123",opaque="op",algorithm=SHA-256,qop="auth""#
    );
    challenge.opaque = None;
    challenge.stale = true;
    challenge.realm = "we \"quote\"".into();
    challenge.algorithm = Algorithm::Md5;
    assert_eq!(
        challenge.to_string(),
        r#"Digest realm="we \"quote\"",nonce="abc123",algorithm=MD5,qop="auth",stale=true"#
    );
}

// ---- NonceManager -------------------------------------------------------------------------

const SECRET: [u8; 32] = [7; 32];
const LIFETIME: Duration = Duration::from_secs(300);

fn manager(max_tracked: usize) -> (NonceManager, Instant) {
    let epoch = Instant::now();
    (
        NonceManager::new(SECRET, LIFETIME, max_tracked, epoch),
        epoch,
    )
}

fn is_valid(check: &NonceCheck) -> bool {
    matches!(check, NonceCheck::Valid(_))
}

/// Checks and commits a use (what a server does after a successful `verify`).
fn use_nonce(m: &mut NonceManager, nonce: &str, nc: Option<u32>, now: Instant) {
    let NonceCheck::Valid(used) = m.check(nonce, nc, now) else {
        panic!("not valid")
    };
    assert!(m.commit(used));
}

#[test]
fn nonce_is_token_safe_and_valid_when_fresh() {
    let (mut m, t0) = manager(16);
    let nonce = m.issue(t0);
    assert!(nonce.bytes().all(|b| b.is_ascii_hexdigit()), "{nonce}");
    assert!(is_valid(&m.check(&nonce, Some(1), t0)));
    assert!(
        is_valid(&m.check(&nonce, None, t0 + LIFETIME)),
        "valid up to the lifetime"
    );
    assert_ne!(m.issue(t0), nonce, "every nonce is new");
}

#[test]
fn nonce_stale_after_lifetime() {
    let (mut m, t0) = manager(16);
    let t1 = t0 + Duration::from_secs(10);
    let nonce = m.issue(t1);
    assert!(is_valid(&m.check(&nonce, Some(1), t1 + LIFETIME)));
    assert_eq!(
        m.check(&nonce, Some(1), t1 + LIFETIME + Duration::from_millis(1)),
        NonceCheck::Stale
    );
    // Forgotten by handle_timeout, still recognised as ours and stale.
    assert_eq!(m.tracked(), 1);
    assert_eq!(
        m.poll_timeout(),
        Some(t1 + LIFETIME + Duration::from_millis(1))
    );
    m.handle_timeout(t1 + LIFETIME);
    assert_eq!(m.tracked(), 1, "not yet expired");
    m.handle_timeout(t1 + LIFETIME + Duration::from_secs(1));
    assert_eq!(m.tracked(), 0);
    assert_eq!(m.poll_timeout(), None);
    assert_eq!(
        m.check(&nonce, Some(2), t1 + LIFETIME * 10),
        NonceCheck::Stale
    );
}

#[test]
fn nonce_count_must_strictly_increase() {
    let (mut m, t0) = manager(16);
    let nonce = m.issue(t0);
    use_nonce(&mut m, &nonce, Some(1), t0);
    assert_eq!(m.check(&nonce, Some(1), t0), NonceCheck::Replayed);
    assert!(is_valid(&m.check(&nonce, Some(2), t0)));
    use_nonce(&mut m, &nonce, Some(5), t0);
    assert_eq!(m.check(&nonce, Some(3), t0), NonceCheck::Replayed);
    assert_eq!(m.check(&nonce, Some(5), t0), NonceCheck::Replayed);
    assert!(is_valid(&m.check(&nonce, Some(6), t0)));
    // Dropping qop on a counted nonce is a replay, and nc 0 is never valid.
    assert_eq!(m.check(&nonce, None, t0), NonceCheck::Replayed);
    let other = m.issue(t0);
    assert_eq!(m.check(&other, Some(0), t0), NonceCheck::Replayed);
}

#[test]
fn nonce_without_qop_is_good_once() {
    let (mut m, t0) = manager(16);
    let nonce = m.issue(t0);
    use_nonce(&mut m, &nonce, None, t0);
    assert_eq!(m.check(&nonce, None, t0), NonceCheck::Replayed);
    assert_eq!(m.check(&nonce, Some(1), t0), NonceCheck::Replayed);
}

#[test]
fn check_alone_does_not_burn_the_nonce() {
    // A request with a wrong response is checked but never committed: the nonce stays usable.
    let (mut m, t0) = manager(16);
    let nonce = m.issue(t0);
    for _ in 0..3 {
        assert!(is_valid(&m.check(&nonce, Some(1), t0)));
    }
    let NonceCheck::Valid(first) = m.check(&nonce, Some(1), t0) else {
        panic!("not valid")
    };
    let NonceCheck::Valid(second) = m.check(&nonce, Some(1), t0) else {
        panic!("not valid")
    };
    assert!(m.commit(first));
    assert!(!m.commit(second), "the same nc committed twice is a replay");
}

#[test]
fn forged_and_malformed_nonces_are_unknown() {
    let (mut m, t0) = manager(16);
    let nonce = m.issue(t0);
    let mut forged = nonce.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(m.check(&forged, Some(1), t0), NonceCheck::Unknown);
    for junk in [
        "",
        "abc",
        "zz",
        "g".repeat(64).as_str(),
        format!("{nonce}00").as_str(),
        "é".repeat(32).as_str(),
    ] {
        assert_eq!(m.check(junk, Some(1), t0), NonceCheck::Unknown, "{junk}");
    }
    // Another server's secret.
    let other = NonceManager::new([8; 32], LIFETIME, 16, t0);
    assert_eq!(other.check(&nonce, Some(1), t0), NonceCheck::Unknown);
}

#[test]
fn nonce_memory_is_bounded_and_evicts_the_oldest() {
    let (mut m, t0) = manager(4);
    let nonces: Vec<String> = (0..10)
        .map(|i| m.issue(t0 + Duration::from_millis(i)))
        .collect();
    assert_eq!(m.tracked(), 4);
    let now = t0 + Duration::from_secs(1);
    for old in &nonces[..6] {
        // Ours and within lifetime, but forgotten: the client retries with a fresh nonce.
        assert_eq!(m.check(old, Some(1), now), NonceCheck::Stale);
    }
    for recent in &nonces[6..] {
        assert!(is_valid(&m.check(recent, Some(1), now)));
    }
    // A long run stays bounded.
    for i in 0..1000 {
        let _ = m.issue(now + Duration::from_millis(i));
    }
    assert_eq!(m.tracked(), 4);
}

#[test]
fn challenge_from_manager_carries_a_valid_nonce() {
    let (mut m, t0) = manager(16);
    let challenge = m.challenge("example.com", Algorithm::Sha256, false, t0);
    assert!(is_valid(&m.check(&challenge.nonce, Some(1), t0)));
    let header = client_authorization(
        Algorithm::Sha256,
        "alice",
        "pw",
        "example.com",
        &challenge.nonce,
        "REGISTER",
        "sip:example.com",
        Some("0a4f113b"),
        1,
        None,
    );
    let creds = Credentials::parse(&header).unwrap();
    let h = ha1(Algorithm::Sha256, "alice", "example.com", "pw");
    let NonceCheck::Valid(use_) = m.check(&creds.nonce, creds.nc, t0) else {
        panic!("not valid")
    };
    assert!(verify(&creds, "REGISTER", &h));
    assert!(m.commit(use_));
    assert_eq!(m.check(&creds.nonce, creds.nc, t0), NonceCheck::Replayed);
}
