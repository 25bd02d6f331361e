//! The SIP torture messages of RFC 4475 and RFC 5118, each sent as is over its own TCP connection
//! to a running server, with the verdict the RFC text gives for it; afterwards the server must still
//! answer OPTIONS.
//!
//! Verdicts. A malformed request gets a 400 (or the specific code the RFC names: 505, 416, 420,
//! 483, …) where a response can be formed; a response, well-formed or not, is dropped: it matches no
//! client transaction, and Confab must not forward it (bcast names 255.255.255.255). Almost every
//! well-formed request here targets example.com, example.net or 192.0.2.x/2001:db8:: hosts, none of
//! them Confab's domain: Confab does not relay, so it refuses them with 403 and never forwards
//! (TESTING.md). Where the RFC lets an element either reject a message as malformed or be liberal
//! and process it, both 400 and the processing outcome (403) are accepted; each such case says so.
//!
//! Over TCP, two cases differ from the RFC's UDP framing: clerr (Content-Length larger than the
//! bytes sent) leaves the server waiting for the rest of the body, so silence is as right as a 400;
//! mcl01 (two Content-Length values) is a framing error a stream cannot recover from, so the server
//! may answer 400 or just close the connection (RFC 4475 §3.3.9); inv2543 has a body and no
//! Content-Length, which RFC 3261 §18.3 forbids on streams, so 400 is as right as accepting it.
//! ncl (Content-Length: -999) breaks the framing too, but its header is whole and the RFC asks for
//! an error response, so a 400 before closing is required.
//!
//! Test data: `$CONFAB_TESTDATA`, else `../../../shared/testdata` from this crate.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
enum Expect {
    /// At least one final response, every final response with one of these codes.
    Final(&'static [u16]),
    /// No response (a response message, dropped).
    Nothing,
    /// No response, or final responses with one of these codes.
    FinalOrNothing(&'static [u16]),
}

use Expect::*;

/// Relaying denied: the request is for a domain or host that is not Confab's.
const FOREIGN: u16 = 403;

struct Case {
    file: &'static str,
    section: &'static str,
    expect: Expect,
    why: &'static str,
}

const fn case(
    file: &'static str,
    section: &'static str,
    expect: Expect,
    why: &'static str,
) -> Case {
    Case {
        file,
        section,
        expect,
        why,
    }
}

#[rustfmt::skip]
const RFC4475: &[Case] = &[
    // 3.1.1 Valid messages: parse, then refuse to relay (403) or the code the RFC names.
    case("wsinv.dat", "3.1.1.1", Final(&[FOREIGN]), "short tortuous INVITE, valid; foreign host"),
    case("intmeth.dat", "3.1.1.2", Final(&[FOREIGN, 405, 501]), "valid unknown method: 405/501 as a UAS, 403 as a non-relaying proxy"),
    case("esc01.dat", "3.1.1.3", Final(&[FOREIGN]), "valid escapes in Request-URI; example.net"),
    case("escnull.dat", "3.1.1.4", Final(&[FOREIGN]), "valid %00 in To; REGISTER for example.com"),
    case("esc02.dat", "3.1.1.5", Final(&[FOREIGN, 405, 501]), "RE%47IST%45R is an unknown method, not REGISTER"),
    case("lwsdisp.dat", "3.1.1.6", Final(&[FOREIGN]), "valid LWS in display name"),
    case("longreq.dat", "3.1.1.7", Final(&[FOREIGN]), "valid long values"),
    case("dblreq.dat", "3.1.1.8", Final(&[FOREIGN]), "over TCP the trailing INVITE is a second message: both refused"),
    case("semiuri.dat", "3.1.1.9", Final(&[FOREIGN]), "valid ; in userinfo"),
    case("transports.dat", "3.1.1.10", Final(&[FOREIGN]), "valid unknown transports in Via; answer on the connection"),
    case("mpart01.dat", "3.1.1.11", Final(&[FOREIGN, 415]), "valid multipart MESSAGE for example.org"),
    case("unreason.dat", "3.1.1.12", Nothing, "a response: matches no transaction, dropped"),
    case("noreason.dat", "3.1.1.13", Nothing, "a response: dropped"),
    // 3.1.2 Invalid messages.
    case("badinv01.dat", "3.1.2.1", Final(&[400]), "extraneous header field separators"),
    case("clerr.dat", "3.1.2.2", FinalOrNothing(&[400, 413, 513]), "Content-Length > body: over TCP the server waits for the rest"),
    case("ncl.dat", "3.1.2.3", Final(&[400]), "negative Content-Length"),
    case("scalar02.dat", "3.1.2.4", Final(&[400]), "overlarge CSeq (400 due to the CSeq)"),
    case("scalarlg.dat", "3.1.2.5", Nothing, "a response with overlarge scalars: dropped"),
    case("quotbal.dat", "3.1.2.6", Final(&[400]), "unterminated quoted string"),
    case("ltgtruri.dat", "3.1.2.7", Final(&[400, FOREIGN]), "<> around Request-URI: reject, or liberal (then foreign)"),
    case("lwsruri.dat", "3.1.2.8", Final(&[400]), "LWS inside the Request-URI"),
    case("lwsstart.dat", "3.1.2.9", Final(&[400, FOREIGN]), "multiple SP in request line: reject, or liberal"),
    case("trws.dat", "3.1.2.10", Final(&[400, FOREIGN]), "SP at end of request line: reject, or liberal"),
    case("escruri.dat", "3.1.2.11", Final(&[400, FOREIGN]), "escaped headers in Request-URI: reject, or liberal"),
    case("baddate.dat", "3.1.2.12", Final(&[400, FOREIGN]), "non-GMT Date: reject, or ignore the Date"),
    case("regbadct.dat", "3.1.2.13", Final(&[400, FOREIGN]), "Contact URI with headers not in <>: reject, or infer <>"),
    case("badaspec.dat", "3.1.2.14", Final(&[400, FOREIGN]), "spaces in addr-spec: reject, or ignore them"),
    case("baddn.dat", "3.1.2.15", Final(&[400, FOREIGN]), "unquoted non-token display name: reject, or infer quotes"),
    case("badvers.dat", "3.1.2.16", Final(&[505]), "SIP/7.0: Version Not Supported"),
    case("mismatch01.dat", "3.1.2.17", Final(&[400]), "request method differs from CSeq method"),
    case("mismatch02.dat", "3.1.2.18", Final(&[501, 400]), "unknown method and CSeq mismatch: 501 preferred, 400 acceptable"),
    case("bigcode.dat", "3.1.2.19", Nothing, "a response with status > 699: dropped"),
    // 3.2 Transaction layer.
    case("badbranch.dat", "3.2.1", Final(&[400, FOREIGN]), "branch is only the magic cookie: 400, or fall back to RFC 2543 matching"),
    // 3.3 Application layer.
    case("insuf.dat", "3.3.1", Final(&[400]), "no Call-ID, From or To"),
    case("unkscm.dat", "3.3.2", Final(&[416]), "unknown Request-URI scheme: 416"),
    case("novelsc.dat", "3.3.3", Final(&[416, 404]), "soap.beep Request-URI: 416, or 404 if the scheme could be served"),
    case("unksm2.dat", "3.3.4", Final(&[400, FOREIGN]), "non-SIP To in REGISTER: a registrar says 400; example.com is not Confab's (403)"),
    case("bext01.dat", "3.3.5", Final(&[420, FOREIGN]), "Require/Proxy-Require of unknown options: 420 with Unsupported, or refuse the relay"),
    case("invut.dat", "3.3.6", Final(&[415, FOREIGN]), "unknown Content-Type: 415 as a UAS, 403 as a non-relaying proxy"),
    case("regaut01.dat", "3.3.7", Final(&[401, FOREIGN]), "unknown Authorization scheme: 401 with a digest challenge; example.com (403)"),
    case("multi01.dat", "3.3.8", Final(&[400]), "several values in single-value headers"),
    case("mcl01.dat", "3.3.9", FinalOrNothing(&[400]), "two Content-Length values: over TCP 400 or close the connection"),
    case("bcast.dat", "3.3.10", Nothing, "a 200 with a broadcast Via: dropped, never forwarded"),
    case("zeromf.dat", "3.3.11", Final(&[483, FOREIGN]), "Max-Forwards 0 for a foreign target: 483, or refuse the relay"),
    case("cparam01.dat", "3.3.12", Final(&[FOREIGN]), "valid REGISTER for example.com"),
    case("cparam02.dat", "3.3.13", Final(&[FOREIGN]), "valid REGISTER for example.com"),
    case("regescrt.dat", "3.3.14", Final(&[FOREIGN]), "valid REGISTER for example.com"),
    case("sdp01.dat", "3.3.15", Final(&[406, 400, FOREIGN]), "Accept without application/sdp: 406 or 400 as a UAS; 403 as a non-relaying proxy"),
    // 3.4 Backward compatibility.
    case("inv2543.dat", "3.4.1", Final(&[FOREIGN, 400]), "RFC 2543 INVITE, no branch, no Content-Length: accept and refuse the relay; over TCP 400 too (RFC 3261 §18.3: streams MUST carry Content-Length)"),
];

#[rustfmt::skip]
const RFC5118: &[Case] = &[
    case("ipv6-good", "4.1", Final(&[FOREIGN]), "REGISTER for [2001:db8::10]"),
    case("ipv6-bad", "4.2", Final(&[400]), "IPv6 Request-URI host without brackets"),
    case("port-ambiguous", "4.3", Final(&[FOREIGN]), "[2001:db8::10:5070] is an address without port: valid"),
    case("port-unambiguous", "4.4", Final(&[FOREIGN]), "[2001:db8::10]:5070: valid"),
    case("via-received-param-with-delim", "4.5", Final(&[FOREIGN, 481]), "bracketed received=: must parse; BYE outside any dialog (481) or foreign"),
    case("via-received-param-no-delim", "4.5", Final(&[FOREIGN]), "bare received=: valid"),
    case("ipv6-in-sdp", "4.6", Final(&[FOREIGN]), "valid INVITE with IPv6 SDP"),
    case("mult-ip-in-header", "4.7", Final(&[FOREIGN, 481]), "IPv4 and IPv6 in Vias; BYE outside any dialog (481) or foreign"),
    case("mult-ip-in-sdp", "4.8", Final(&[FOREIGN]), "valid INVITE"),
    case("ipv4-mapped-ipv6", "4.9", Final(&[FOREIGN]), "valid INVITE"),
    case("ipv6-bug-abnf-3-colons", "4.10", Final(&[400]), "[2001:db8:::192.0.2.1] is not an IPv6 address"),
    case("ipv6-correct-abnf-2-colons", "4.10", Final(&[FOREIGN]), "valid"),
];

/// How long a connection stays open after the last byte when no response is expected, and after
/// the first final response (to catch a second one, or an unexpected extra).
const QUIET: Duration = Duration::from_secs(2);
const AFTER_FINAL: Duration = Duration::from_millis(700);

struct Outcome {
    responses: Vec<SipMsg>,
    closed: bool,
    leftover: Vec<u8>,
}

fn exchange(server: std::net::SocketAddr, bytes: &[u8]) -> Outcome {
    let mut c = TcpClient::connect(server);
    let _ = c.try_send(bytes);
    let mut responses = Vec::new();
    let end = Instant::now() + ANSWER_WAIT;
    let mut quiet_until = Instant::now() + QUIET;
    while Instant::now() < end.min(quiet_until) {
        let left = end.min(quiet_until) - Instant::now();
        match c.recv(left) {
            Some(msg) => {
                if msg.status().is_some_and(|s| s >= 200) {
                    quiet_until = Instant::now() + AFTER_FINAL;
                }
                responses.push(msg);
            }
            None => break,
        }
    }
    Outcome {
        responses,
        closed: c.closed,
        leftover: c.leftover().to_vec(),
    }
}

fn verdict(case: &Case, outcome: &Outcome) -> Result<String, String> {
    let finals: Vec<&SipMsg> = outcome
        .responses
        .iter()
        .filter(|m| m.status().is_some_and(|s| s >= 200))
        .collect();
    let requests: Vec<&SipMsg> = outcome
        .responses
        .iter()
        .filter(|m| !m.is_response())
        .collect();
    let seen = || {
        let mut s: Vec<String> = outcome
            .responses
            .iter()
            .map(|m| m.start_line.clone())
            .collect();
        if outcome.closed {
            s.push("<connection closed>".into());
        }
        if !outcome.leftover.is_empty() {
            s.push(format!(
                "<{} unparsed bytes: {:?}>",
                outcome.leftover.len(),
                String::from_utf8_lossy(&outcome.leftover)
            ));
        }
        if s.is_empty() {
            "<nothing>".into()
        } else {
            s.join(" | ")
        }
    };
    if !requests.is_empty() {
        return Err(format!(
            "the server sent a request back on the connection: {}",
            seen()
        ));
    }
    let all_allowed = |codes: &[u16]| finals.iter().all(|m| codes.contains(&m.status().unwrap()));
    let ok = match case.expect {
        Final(codes) => !finals.is_empty() && all_allowed(codes),
        Nothing => outcome.responses.is_empty(),
        FinalOrNothing(codes) => {
            all_allowed(codes)
                && outcome
                    .responses
                    .iter()
                    .all(|m| m.status().is_some_and(|s| s >= 100))
        }
    };
    // 420 must say what is unsupported (RFC 3261 §8.2.2.3).
    if let Some(m) = finals.iter().find(|m| m.status() == Some(420)) {
        if m.header("unsupported").is_none() {
            return Err(format!(
                "420 without an Unsupported header:\n{}",
                m.summary()
            ));
        }
    }
    // 401 must carry a challenge in a scheme the client can use.
    if let Some(m) = finals.iter().find(|m| m.status() == Some(401)) {
        if !m
            .challenges()
            .iter()
            .any(|c| c.scheme.eq_ignore_ascii_case("digest"))
        {
            return Err(format!("401 without a digest challenge:\n{}", m.summary()));
        }
    }
    if ok {
        Ok(seen())
    } else {
        Err(format!("expected {:?}, got {}", case.expect, seen()))
    }
}

fn run_corpus(server: &Server, dir: &std::path::Path, cases: &'static [Case]) -> Vec<String> {
    let listed: std::collections::BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| {
            panic!(
                "test data {} unreadable ({e}); set CONFAB_TESTDATA",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| !n.starts_with('.') && !n.ends_with(".md"))
        .collect();
    let known: std::collections::BTreeSet<String> =
        cases.iter().map(|c| c.file.to_string()).collect();
    let mut failures: Vec<String> = listed
        .difference(&known)
        .map(|f| format!("{f}: no expectation in the table"))
        .collect();
    failures.extend(
        known
            .difference(&listed)
            .map(|f| format!("{f}: in the table but not in {}", dir.display())),
    );

    let addr = server.tcp();
    let handles: Vec<_> = cases
        .iter()
        .filter(|c| listed.contains(c.file))
        .map(|c| {
            let bytes = std::fs::read(dir.join(c.file)).unwrap();
            (c, std::thread::spawn(move || exchange(addr, &bytes)))
        })
        .collect();
    for (case, handle) in handles {
        let outcome = handle.join().expect("exchange thread");
        match verdict(case, &outcome) {
            Ok(seen) => eprintln!("ok   {:<32} §{:<9} {seen}", case.file, case.section),
            Err(why) => {
                eprintln!("FAIL {:<32} §{:<9} {why}", case.file, case.section);
                failures.push(format!(
                    "{} (§{}, {}): {why}",
                    case.file, case.section, case.why
                ));
            }
        }
    }
    failures
}

#[test]
fn rfc4475_and_rfc5118_torture_messages_over_tcp() {
    let data = testdata_dir();
    let mut server = Server::start(
        ServerSpec::new("torture")
            .set("auth", "max_failures", 1000)
            .set("sip", "max_connections_per_ip", 1000),
    );
    let mut failures = run_corpus(&server, &data.join("rfc4475"), RFC4475);
    failures.extend(run_corpus(&server, &data.join("rfc5118"), RFC5118));
    assert!(
        server.is_running(),
        "the server died during the torture tests"
    );
    assert_still_serving(&server);
    assert!(
        failures.is_empty(),
        "{} torture cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
