//! Calls between Linphone phones (Debian `linphone-cli`: `linphone-daemon`, liblinphone 5.1 with
//! GRUU on, as shipped) through the real `confab` binary, over UDP and TCP.
//!
//! Each daemon has its own `HOME` and config and is driven through its command socket. With no
//! sound card, each side plays a tone file into the call (`incall-player-start`); RTP is counted
//! on the receiving side from the statistics oRTP logs when the stream stops. Checks: both sides
//! reach `StreamsRunning`, each received RTP (at least half of 50 packets/s over the talk time),
//! the SDP each received names a relay port rather than the other phone's own RTP port, and the
//! caller's BYE was answered 200 while the callee saw the call end.
//!
//! The `harness_*` test makes the same call phone to phone, without Confab.

mod common;
mod support;

use std::time::Duration;

use common::*;
use support::audio::{TONE_A, TONE_B};
use support::linphone::{Linphone, LinphoneSpec};
use support::trace::sdp_summary;

const ALICE_PW: &str = "alice-lp-secret-3";
const BOB_PW: &str = "bob-lp-secret-4";
const TALK: Duration = Duration::from_secs(4);
const MIN_PACKETS: u64 = 100;
const WAIT: Duration = Duration::from_secs(15);

fn spec(
    name: &str,
    user: &str,
    pw: &str,
    server: std::net::SocketAddr,
    transport: &str,
    tone: f64,
) -> LinphoneSpec {
    LinphoneSpec {
        name: name.into(),
        user: user.into(),
        password: pw.into(),
        server,
        transport: transport.into(),
        tone_hz: tone,
        direct: false,
    }
}

/// The audio port of the SDP in the first received message starting with `start`.
fn received_sdp_port(phone: &Linphone, start: &str) -> Option<u16> {
    phone
        .received_messages()
        .iter()
        .filter(|m| m.starts_with(start) && m.contains("m=audio"))
        .filter_map(|m| {
            let body = m.split_once("\n\n").map(|(_, b)| b).unwrap_or(m);
            sdp_summary(body.as_bytes())?.audio_port
        })
        .next()
}

/// alice calls `uri`, bob answers, both play their tone for [`TALK`], alice hangs up. Returns
/// (alice's, bob's) received packet counts after checking the call ended cleanly.
fn talk(alice: &mut Linphone, bob: &mut Linphone, uri: &str) -> (u64, u64) {
    let a_id = alice.call(uri);
    let incoming = bob.wait_state("LinphoneCallIncomingReceived", WAIT);
    let b_id = incoming.get("Id").cloned().unwrap_or_else(|| "1".into());
    bob.must(&format!("answer {b_id}"));
    alice.wait_state("LinphoneCallStreamsRunning", WAIT);
    bob.wait_state("LinphoneCallStreamsRunning", WAIT);
    alice.play_tone(&a_id);
    bob.play_tone(&b_id);
    std::thread::sleep(TALK);
    alice.must(&format!("terminate {a_id}"));
    bob.wait_state("LinphoneCallEnd", WAIT);
    alice.wait_state("LinphoneCallReleased", WAIT);
    bob.wait_state("LinphoneCallReleased", WAIT);
    assert!(
        support::poll(Duration::from_secs(5), || alice
            .bye_answered()
            .then_some(()))
        .is_some(),
        "alice's BYE should be answered 200"
    );
    assert!(
        bob.received_messages()
            .iter()
            .any(|m| m.starts_with("BYE ")),
        "bob should receive the BYE"
    );
    let received = |p: &Linphone| {
        support::poll(Duration::from_secs(5), || p.rtp_stats().last().copied())
            .unwrap_or_else(|| panic!("{}: no RTP statistics in the log", p.spec.name))
            .1
    };
    let (a, b) = (received(alice), received(bob));
    for (name, n) in [("alice", a), ("bob", b)] {
        assert!(
            n >= MIN_PACKETS,
            "{name} received {n} RTP packets in a {TALK:?} call; expected at least {MIN_PACKETS}"
        );
    }
    eprintln!("RTP received: alice {a}, bob {b}");
    (a, b)
}

#[test]
fn harness_linphone_direct_call_counts_rtp_both_ways() {
    let work = tempfile::tempdir().unwrap();
    let unused = "127.0.0.1:9".parse().unwrap();
    let direct = |name: &str, user: &str, tone: f64| LinphoneSpec {
        direct: true,
        ..spec(name, user, "", unused, "udp", tone)
    };
    let mut alice = Linphone::start(direct("direct-alice", "alice", TONE_A), work.path());
    let mut bob = Linphone::start(direct("direct-bob", "bob", TONE_B), work.path());
    let uri = format!("sip:bob@127.0.0.1:{}", bob.sip_port);
    talk(&mut alice, &mut bob, &uri);
    // Direct: bob is offered alice's own RTP port.
    assert_eq!(received_sdp_port(&bob, "INVITE "), Some(alice.rtp_port));
}

fn linphone_call(transport: &str) {
    let server = Server::start(
        support::call_server(&format!("linphone-{transport}"))
            .user("alice", ALICE_PW)
            .user("bob", BOB_PW),
    );
    let to = support::server_addr(&server, transport);
    let work = server.dir.path();
    let mut alice = Linphone::start(
        spec("alice", "alice", ALICE_PW, to, transport, TONE_A),
        work,
    );
    let mut bob = Linphone::start(spec("bob", "bob", BOB_PW, to, transport, TONE_B), work);
    alice.register();
    bob.register();
    talk(&mut alice, &mut bob, &format!("sip:bob@{DOMAIN}"));

    // Media anchored: neither phone was offered the other's own RTP port.
    let offered = received_sdp_port(&bob, "INVITE ").expect("bob received an INVITE with SDP");
    assert_ne!(
        offered, alice.rtp_port,
        "bob was offered alice's own RTP port: the SDP was not rewritten to the relay"
    );
    let answered = received_sdp_port(&alice, "SIP/2.0 200").expect("alice received a 200 with SDP");
    assert_ne!(
        answered, bob.rtp_port,
        "alice was answered with bob's own RTP port: the SDP was not rewritten to the relay"
    );
}

#[test]
fn linphone_calls_linphone_over_udp() {
    linphone_call("udp");
}

#[test]
fn linphone_calls_linphone_over_tcp() {
    linphone_call("tcp");
}
