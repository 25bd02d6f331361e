//! Calls between PJSIP phones (pjproject 2.15 through PyPI `pjsua2-python`, the stack inside
//! many softphones) through the real `confab` binary, over UDP and over TCP.
//!
//! `support/pjsua_phone.py` is the phone: null sound device, a tone generator port playing into
//! the call (alice 600 Hz, bob 1400 Hz), a recorder port saving what arrives, RTP statistics
//! sampled from the call (`Call.getStreamStat`), and pjsip's own log of every message. Checks:
//! the call is confirmed on both sides, each side received RTP (packet counts) carrying the other
//! side's tone (Goertzel on the recording), each side's media went to Confab's relay and not to
//! the other phone, and alice's BYE reached bob and was answered 200.
//!
//! The `harness_*` test makes the same call phone to phone, without Confab.

mod common;
mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use support::audio::{assert_hears, TONE_A, TONE_B};
use support::pjsua::{aor_uri, PjPhone, PjSpec};

const ALICE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const BOB_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const ALICE_PW: &str = "alice-pj-secret-1";
const BOB_PW: &str = "bob-pj-secret-2";
/// Seconds alice talks before hanging up.
const TALK_SECS: f64 = 4.0;
/// Packets each side must receive: 20 ms packets give 50/s; ask for at least half of the talk.
const MIN_PACKETS: u64 = 100;

fn spec(
    name: &str,
    user: &str,
    pw: &str,
    bind: Ipv4Addr,
    server: std::net::SocketAddr,
    transport: &str,
    tone: f64,
) -> PjSpec {
    PjSpec {
        name: name.into(),
        user: user.into(),
        password: pw.into(),
        bind,
        server,
        transport: transport.into(),
        tone_hz: tone,
        dial: None,
        talk_secs: TALK_SECS,
        direct: false,
    }
}

fn stats_rx(phone: &PjPhone) -> u64 {
    phone
        .event("stats")
        .and_then(|e| e["rx_pkt"].as_u64())
        .unwrap_or(0)
}

fn remote_rtp(phone: &PjPhone) -> String {
    phone
        .event("media")
        .and_then(|e| e["remote_rtp"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Waits for both scripts to end and checks what they report in common: confirmed call, RTP
/// received both ways, the other side's tone in each recording, alice's BYE answered.
fn assert_call_completed(alice: &mut PjPhone, bob: &mut PjPhone) {
    let alice_ok = alice.wait_done(Duration::from_secs(45));
    let bob_ok = bob.wait_done(Duration::from_secs(15));
    assert!(
        alice_ok && bob_ok,
        "both phones should finish their call (alice ok={alice_ok}, bob ok={bob_ok})\n\
         alice:\n{}\nbob:\n{}",
        alice.event_summary(),
        bob.event_summary()
    );
    for phone in [&*alice, &*bob] {
        assert!(
            phone.event("confirmed").is_some(),
            "{}: call never confirmed:\n{}",
            phone.spec.name,
            phone.event_summary()
        );
        let rx = stats_rx(phone);
        assert!(
            rx >= MIN_PACKETS,
            "{}: received {rx} RTP packets in a {TALK_SECS} s call, expected at least \
             {MIN_PACKETS}:\n{}",
            phone.spec.name,
            phone.event_summary()
        );
    }
    assert!(
        alice.received_response(200, "BYE"),
        "alice's BYE should be answered 200 (pjsip log)"
    );
    assert!(bob.received_request("BYE"), "bob should receive the BYE");
    let bob_bye = bob
        .events()
        .into_iter()
        .any(|e| e["event"] == "tsx" && e["method"] == "BYE" && e["status"] == 200);
    assert!(
        bob_bye,
        "bob should answer the BYE with 200:\n{}",
        bob.event_summary()
    );
    let a = assert_hears(&alice.recording, TONE_B, TONE_A, 2.0, "alice (pjsua)");
    let b = assert_hears(&bob.recording, TONE_A, TONE_B, 2.0, "bob (pjsua)");
    eprintln!("alice heard: {a}\nbob heard: {b}");
}

#[test]
fn harness_pjsip_direct_call_carries_both_tones() {
    support::pjsua::python();
    let work = tempfile::tempdir().unwrap();
    let unused = "127.0.0.1:9".parse().unwrap();
    let mut bob = spec("direct-bob", "bob", "", BOB_IP, unused, "udp", TONE_B);
    bob.direct = true;
    let mut bob = PjPhone::start(bob, work.path());
    bob.wait_event("registered", Duration::from_secs(15));
    let mut alice = spec("direct-alice", "alice", "", ALICE_IP, unused, "udp", TONE_A);
    alice.direct = true;
    alice.dial = Some(bob.direct_uri());
    let mut alice = PjPhone::start(alice, work.path());
    assert_call_completed(&mut alice, &mut bob);
    assert!(
        remote_rtp(&alice).starts_with("127.0.0.3:"),
        "direct: alice sends to bob himself ({})",
        remote_rtp(&alice)
    );
}

fn pjsip_call(transport: &str) {
    support::pjsua::python();
    let server = Server::start(
        support::call_server(&format!("pjsip-{transport}"))
            .user("alice", ALICE_PW)
            .user("bob", BOB_PW),
    );
    let to = support::server_addr(&server, transport);
    let work = server.dir.path();
    let mut bob = PjPhone::start(
        spec("bob", "bob", BOB_PW, BOB_IP, to, transport, TONE_B),
        work,
    );
    bob.wait_event("registered", Duration::from_secs(15));
    let mut alice = spec("alice", "alice", ALICE_PW, ALICE_IP, to, transport, TONE_A);
    alice.dial = Some(aor_uri("bob"));
    let mut alice = PjPhone::start(alice, work);
    assert_call_completed(&mut alice, &mut bob);

    // Media anchored at the relay: each phone sent its RTP to Confab, not to the other phone.
    let relay_ip = to.ip().to_string();
    for (phone, other) in [(&alice, BOB_IP), (&bob, ALICE_IP)] {
        let remote = remote_rtp(phone);
        assert!(
            remote.starts_with(&format!("{relay_ip}:")),
            "{}: media should go to Confab's relay at {relay_ip}, went to {remote} (the other \
             phone is {other})",
            phone.spec.name
        );
    }
    // The signalling stayed on the transport the phones registered over.
    let proto = transport.to_ascii_uppercase();
    let log = bob.pjsip_log();
    let invite_rx = log
        .lines()
        .find(|l| l.contains("RX ") && l.contains("Request msg INVITE/"))
        .unwrap_or("");
    assert!(
        invite_rx.contains(&format!("from {proto} ")),
        "bob should receive the INVITE over {proto}: {invite_rx}"
    );
}

#[test]
fn pjsip_calls_pjsip_over_udp() {
    pjsip_call("udp");
}

#[test]
fn pjsip_calls_pjsip_over_tcp() {
    pjsip_call("tcp");
}
