//! Error paths of calls through the real `confab` binary, driven by SIPp (Debian `sip-tester`)
//! with the scenarios in `fixtures/calls/sipp/`:
//!
//! - an offer that is not usable SDP is refused with 488 and never reaches the callee;
//! - a caller that never ACKs the 200: Confab retransmits the 200 (T1 doubling, capped at T2)
//!   and, after 64*T1, ends the call with a BYE to both sides (RFC 3261 §13.3.1.4); T1 is set to
//!   50 ms so that this takes about 3 s instead of 32;
//! - glare: the callee sends a re-INVITE while Confab's copy of the caller's re-INVITE is pending
//!   on its leg; Confab answers it 491 Request Pending (RFC 3261 §14.2) and completes the
//!   caller's.
//!
//! Callees are SIPp UAS scenarios; the test registers their port first (a UAS scenario cannot
//! send a REGISTER). Confab offers MD5 only: SIPp answers only the first challenge.

mod common;
mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use support::sipp::{caller_csv, register_port, Logged, Sipp, SippSpec};

const ALICE_PW: &str = "alice-sipp-secret-5";
const BOB_PW: &str = "bob-sipp-secret-6";

fn server(name: &str, settings: &[(&str, &str, &str)]) -> Server {
    let mut spec = support::call_server(name)
        .set("auth", "algorithms", r#"["MD5"]"#)
        .user("alice", ALICE_PW)
        .user("bob", BOB_PW);
    for (section, key, value) in settings {
        spec = spec.set(section, key, value);
    }
    Server::start(spec)
}

fn caller_spec<'a>(server: &Server, scenario: &'a str) -> SippSpec<'a> {
    SippSpec {
        name: "caller",
        scenario,
        target: server.udp(),
        port: None,
        csv: Some(caller_csv("alice", ALICE_PW, "bob")),
        keys: Vec::new(),
        timeout: Duration::from_secs(30),
    }
}

/// Registers bob at a free port and starts the SIPp UAS `scenario` there, waiting until SIPp has
/// bound the port.
fn callee(server: &Server, scenario: &str) -> Sipp {
    let port = support::free_port_on(Ipv4Addr::LOCALHOST, true);
    register_port(server.udp(), "bob", BOB_PW, port);
    let sipp = Sipp::start(
        &SippSpec {
            name: "callee",
            scenario,
            target: server.udp(),
            port: Some(port),
            csv: None,
            keys: Vec::new(),
            timeout: Duration::from_secs(30),
        },
        server.dir.path(),
    );
    let bound = support::poll(Duration::from_secs(10), || {
        std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port))
            .is_err()
            .then_some(())
    });
    assert!(bound.is_some(), "SIPp never bound 127.0.0.1:{port}");
    sipp
}

fn is_response(m: &Logged, code: u16, method: &str) -> bool {
    !m.sent && m.msg.status() == Some(code) && m.msg.cseq_method() == Some(method)
}

#[test]
fn offer_that_is_not_usable_sdp_is_refused_with_488() {
    let server = server("sipp-bad-sdp", &[]);
    // bob is registered from a socket the test keeps: nothing of this call may reach him.
    let bob = UdpClient::bind(LOOPBACK);
    let mut ua = Ua::new("bob", BOB_PW, "UDP", bob.local_addr());
    let (_, ok) = register_udp(&bob, server.udp(), &mut ua);
    assert_eq!(ok.status(), Some(200), "bob's REGISTER:\n{}", ok.summary());

    let mut caller = Sipp::start(&caller_spec(&server, "uac_bad_sdp.xml"), server.dir.path());
    caller.assert_passed(Duration::from_secs(40));
    assert!(
        caller
            .received()
            .iter()
            .any(|m| is_response(m, 488, "INVITE")),
        "the caller should get 488 Not Acceptable Here:\n{}",
        caller.summary()
    );
    while let Some(msg) = bob.recv(Duration::from_millis(500)) {
        assert_ne!(
            msg.method(),
            Some("INVITE"),
            "an INVITE with unusable SDP reached the callee:\n{}",
            msg.summary()
        );
    }
}

#[test]
fn unacknowledged_200_is_retransmitted_then_the_call_is_ended_with_bye() {
    let t1_ms = 50u64;
    let server = server("sipp-no-ack", &[("sip", "t1_ms", "50")]);
    let mut bob = callee(&server, "uas_answer.xml");
    let mut caller = Sipp::start(&caller_spec(&server, "uac_no_ack.xml"), server.dir.path());
    caller.assert_passed(Duration::from_secs(40));
    bob.assert_passed(Duration::from_secs(10));

    let got = caller.received();
    let oks: Vec<&Logged> = got
        .iter()
        .filter(|m| is_response(m, 200, "INVITE"))
        .collect();
    let bye = got
        .iter()
        .find(|m| m.msg.method() == Some("BYE"))
        .unwrap_or_else(|| panic!("the caller got no BYE:\n{}", caller.summary()));
    assert!(
        oks.len() >= 3,
        "the 200 should be retransmitted while no ACK comes (T1 = {t1_ms} ms): got it {} \
         time(s):\n{}",
        oks.len(),
        caller.summary()
    );
    // RFC 3261 §13.3.1.4: give up after 64*T1 without an ACK.
    let waited = bye.time - oks[0].time;
    let expected = 64.0 * t1_ms as f64 / 1000.0;
    assert!(
        waited >= expected * 0.8 && waited <= expected + 5.0,
        "BYE {waited:.2} s after the first 200; expected about 64*T1 = {expected:.1} s:\n{}",
        caller.summary()
    );
    eprintln!(
        "200 received {} times; BYE {waited:.2} s after the first (64*T1 = {expected:.1} s)",
        oks.len()
    );
    // Retransmissions stop with the BYE.
    let after = oks.iter().filter(|m| m.time > bye.time + 0.2).count();
    assert_eq!(
        after,
        0,
        "200s kept coming after the BYE:\n{}",
        caller.summary()
    );
    // bob's scenario required Confab's ACK and then a BYE.
    assert!(
        bob.received().iter().any(|m| m.msg.method() == Some("BYE")),
        "bob should be sent a BYE too:\n{}",
        bob.summary()
    );
}

#[test]
fn glare_reinvite_from_the_callee_gets_491_and_the_callers_completes() {
    let server = server("sipp-glare", &[]);
    let mut bob = callee(&server, "uas_glare.xml");
    let mut caller = Sipp::start(&caller_spec(&server, "uac_reinvite.xml"), server.dir.path());
    caller.assert_passed(Duration::from_secs(40));
    bob.assert_passed(Duration::from_secs(10));
    assert!(
        bob.received().iter().any(|m| is_response(m, 491, "INVITE")),
        "bob's colliding re-INVITE should get 491 Request Pending:\n{}",
        bob.summary()
    );
    let reinvite_ok = caller
        .received()
        .iter()
        .any(|m| is_response(m, 200, "INVITE") && m.msg.cseq_number() == Some(3));
    assert!(
        reinvite_ok,
        "the caller's re-INVITE should complete with 200:\n{}",
        caller.summary()
    );
    assert!(
        !caller
            .received()
            .iter()
            .any(|m| is_response(m, 491, "INVITE")),
        "only one side may get 491 here:\n{}",
        caller.summary()
    );
}
