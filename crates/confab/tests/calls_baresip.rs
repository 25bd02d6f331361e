//! Calls between real phones — baresip (Debian `baresip-core`) — through the real `confab`
//! binary, a B2BUA that anchors media in its RTP relay.
//!
//! Each phone has a loopback address of its own (alice 127.0.0.2, bob 127.0.0.3, bob's second
//! device 127.0.0.4; Confab 127.0.0.1), sends a tone of its own (600 Hz and 1400 Hz WAVs made by
//! `sox`, module `aufile`) and records what it receives (module `sndfile`). A Goertzel filter
//! then decides that each recording carries the other phone's tone and not its own: audio crossed
//! the relay both ways. The SDP each phone received (from baresip's SIP trace) must name Confab's
//! relay, 127.0.0.1, never the other phone's address, and the RTP each phone received must come
//! from the relay port that SDP named (symmetric RTP). Around that: forking to two devices with
//! the loser cancelled, busy (486), no answer (480 after the configured timeout), CANCEL before
//! the answer, hold/resume by re-INVITE, and BYE from either side.
//!
//! `harness_*` tests call phone to phone without Confab: they prove the harness (recording, tone
//! detection, trace parsing) so that a failure elsewhere points at the server.

mod common;
mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::*;
use support::audio::{assert_hears, TONE_A, TONE_B};
use support::baresip::{Baresip, PhoneSpec, PHONE_WAIT};
use support::trace::{sdp_summary, SdpSummary, Traced};

const ALICE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const BOB_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const BOB2_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
const ALICE_PW: &str = "alice-secret-4711";
const BOB_PW: &str = "bob-secret-0815";
/// How long the phones talk before hanging up.
const TALK: Duration = Duration::from_secs(4);

fn server(name: &str, settings: &[(&str, &str, &str)]) -> Server {
    // baresip 1.0 knows only MD5 and gives up on a 401 that also offers SHA-256.
    let mut spec = support::call_server(name)
        .set("auth", "algorithms", r#"["MD5"]"#)
        .user("alice", ALICE_PW)
        .user("bob", BOB_PW);
    for (section, key, value) in settings {
        spec = spec.set(section, key, value);
    }
    Server::start(spec)
}

/// alice (600 Hz) and bob (1400 Hz), registered with `server` over `transport`.
fn alice_and_bob(server: &Server, transport: &str) -> (Baresip, Baresip) {
    let to = support::server_addr(server, transport);
    let work = server.dir.path();
    let alice = Baresip::start(
        PhoneSpec::new("alice", "alice", ALICE_PW, ALICE_IP, to)
            .tone(TONE_A)
            .transport(transport),
        work,
    );
    let bob = Baresip::start(
        PhoneSpec::new("bob", "bob", BOB_PW, BOB_IP, to)
            .tone(TONE_B)
            .transport(transport),
        work,
    );
    alice.wait_registered();
    bob.wait_registered();
    (alice, bob)
}

/// alice calls bob, bob answers; both see the call established.
fn establish(alice: &Baresip, bob: &Baresip) {
    alice.call("bob");
    bob.wait_event("CALL_INCOMING", PHONE_WAIT);
    bob.accept();
    alice.wait_event("CALL_ESTABLISHED", PHONE_WAIT);
    bob.wait_event("CALL_ESTABLISHED", PHONE_WAIT);
}

/// The SDP in the last message matching `pick` among `msgs`.
fn last_sdp(msgs: &[Traced], pick: impl Fn(&Traced) -> bool) -> Option<SdpSummary> {
    msgs.iter()
        .filter(|t| pick(t))
        .filter_map(|t| sdp_summary(&t.msg.body))
        .next_back()
}

fn is_invite(t: &Traced) -> bool {
    t.msg.method() == Some("INVITE")
}

fn is_invite_2xx(t: &Traced) -> bool {
    t.msg.cseq_method() == Some("INVITE") && t.msg.status().is_some_and(|s| (200..300).contains(&s))
}

/// The SDP each phone received names the relay (Confab's address), not the other phone, and RTP
/// reached each phone from the relay port named there.
fn assert_media_anchored(server: &Server, caller: &Baresip, callee: &Baresip) {
    let relay_ip = server
        .udp
        .or(server.tcp)
        .expect("server address")
        .ip()
        .to_string();
    let offer_sent = last_sdp(&caller.sent(), is_invite).unwrap_or_else(|| {
        panic!(
            "caller sent no INVITE with SDP:\n{}",
            caller.trace_summary()
        )
    });
    let offer_got = last_sdp(&callee.received(), is_invite)
        .unwrap_or_else(|| panic!("callee got no INVITE with SDP:\n{}", callee.trace_summary()));
    let answer_sent = last_sdp(&callee.sent(), is_invite_2xx)
        .unwrap_or_else(|| panic!("callee sent no 2xx with SDP:\n{}", callee.trace_summary()));
    let answer_got = last_sdp(&caller.received(), is_invite_2xx)
        .unwrap_or_else(|| panic!("caller got no 2xx with SDP:\n{}", caller.trace_summary()));

    assert_eq!(
        offer_sent.connection.as_deref(),
        Some(caller.spec.ip.to_string().as_str()),
        "the caller's own offer should name its own address (harness check)"
    );
    assert_eq!(
        offer_got.connection.as_deref(),
        Some(relay_ip.as_str()),
        "the offer the callee received must name Confab's relay ({relay_ip}), not the caller \
         ({}): got {offer_got:?}",
        caller.spec.ip
    );
    assert_eq!(
        answer_got.connection.as_deref(),
        Some(relay_ip.as_str()),
        "the answer the caller received must name Confab's relay ({relay_ip}), not the callee \
         ({}): got {answer_got:?}",
        callee.spec.ip
    );
    assert_ne!(
        (offer_got.connection.clone(), offer_got.audio_port),
        (offer_sent.connection.clone(), offer_sent.audio_port),
        "the callee was handed the caller's own media address"
    );
    assert_ne!(
        (answer_got.connection.clone(), answer_got.audio_port),
        (answer_sent.connection.clone(), answer_sent.audio_port),
        "the caller was handed the callee's own media address"
    );
    // RFC 4961 symmetric RTP: the relay sends from the port it told each phone to send to.
    for (phone, sdp) in [(caller, &answer_got), (callee, &offer_got)] {
        let expected = format!(
            "{}:{}",
            sdp.connection.as_deref().unwrap_or("?"),
            sdp.audio_port.unwrap_or(0)
        );
        let sources = phone.rtp_sources();
        assert!(
            sources.iter().any(|s| s == &expected),
            "{}: RTP should arrive from the relay at {expected} (the address its SDP named); \
             baresip logged RTP from {sources:?}",
            phone.spec.name
        );
    }
}

/// Both phones' recordings carry the other's tone for at least `min_secs`, not their own.
fn assert_tones_crossed(caller: &Baresip, callee: &Baresip, min_secs: f64) {
    for (phone, expect, own) in [
        (caller, callee.spec.tone_hz, caller.spec.tone_hz),
        (callee, caller.spec.tone_hz, callee.spec.tone_hz),
    ] {
        let recs = phone.received_audio();
        let rec = recs.last().unwrap_or_else(|| {
            panic!(
                "{} recorded nothing (sndfile wrote no *-dec.wav in {})",
                phone.spec.name,
                phone.dir.join("rec").display()
            )
        });
        let report = assert_hears(rec, expect, own, min_secs, &phone.spec.name);
        eprintln!("{} heard: {report}", phone.spec.name);
    }
}

/// Waits for CALL_CLOSED on a phone and returns its param (the reason).
fn closed(phone: &Baresip) -> String {
    phone.wait_event("CALL_CLOSED", PHONE_WAIT)["param"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Whether `phone` received a final response `code` to `method`, waiting up to 5 s for it (a
/// phone reports a call closed as soon as it sends its BYE, before the answer arrives).
fn got_response(phone: &Baresip, code: u16, method: &str) -> bool {
    support::poll(Duration::from_secs(5), || {
        phone
            .received()
            .iter()
            .any(|t| t.msg.status() == Some(code) && t.msg.cseq_method() == Some(method))
            .then_some(())
    })
    .is_some()
}

/// The `method` requests `phone` received, waiting up to 5 s for at least one.
fn got_request(phone: &Baresip, method: &str) -> Vec<Traced> {
    let all = || -> Vec<Traced> {
        phone
            .received()
            .into_iter()
            .filter(|t| t.msg.method() == Some(method))
            .collect()
    };
    support::poll(Duration::from_secs(5), || {
        let v = all();
        (!v.is_empty()).then_some(v)
    })
    .unwrap_or_default()
}

/// The `method` requests `phone` received so far, without waiting.
fn requests_now(phone: &Baresip, method: &str) -> Vec<Traced> {
    phone
        .received()
        .into_iter()
        .filter(|t| t.msg.method() == Some(method))
        .collect()
}

/// The same checks as through Confab, but phone to phone: proves the harness itself.
#[test]
fn harness_baresip_direct_call_carries_both_tones() {
    let work = tempfile::tempdir().unwrap();
    let unused = "127.0.0.1:9".parse().unwrap();
    let mut a = PhoneSpec::new("direct-a", "a", "", ALICE_IP, unused).tone(TONE_A);
    a.direct = true;
    let mut b = PhoneSpec::new("direct-b", "b", "", BOB_IP, unused).tone(TONE_B);
    b.direct = true;
    let a = Baresip::start(a, work.path());
    let b = Baresip::start(b, work.path());
    a.dial(&b.direct_uri());
    b.wait_event("CALL_INCOMING", PHONE_WAIT);
    b.accept();
    a.wait_event("CALL_ESTABLISHED", PHONE_WAIT);
    std::thread::sleep(TALK);
    a.hangup();
    closed(&a);
    closed(&b);
    // Direct: each phone is handed the other's own address.
    let got = last_sdp(&b.received(), is_invite).expect("b got an offer");
    assert_eq!(got.connection.as_deref(), Some("127.0.0.2"));
    assert!(
        got_response(&a, 200, "BYE"),
        "a's BYE answered:\n{}",
        a.trace_summary()
    );
    assert_tones_crossed(&a, &b, 2.0);
}

#[test]
fn call_relays_tones_both_ways_and_caller_hangs_up_over_udp() {
    let server = server("call-udp", &[]);
    let (alice, bob) = alice_and_bob(&server, "udp");
    establish(&alice, &bob);
    std::thread::sleep(TALK);
    alice.hangup();
    closed(&alice);
    let reason = closed(&bob);
    assert!(
        !got_request(&bob, "BYE").is_empty(),
        "bob should have received Confab's BYE (closed: {reason}):\n{}",
        bob.trace_summary()
    );
    assert!(
        got_response(&alice, 200, "BYE"),
        "alice's BYE should be answered 200:\n{}",
        alice.trace_summary()
    );
    assert_media_anchored(&server, &alice, &bob);
    assert_tones_crossed(&alice, &bob, 2.0);
}

#[test]
fn call_relays_tones_both_ways_and_callee_hangs_up_over_tcp() {
    let server = server("call-tcp", &[]);
    let (alice, bob) = alice_and_bob(&server, "tcp");
    establish(&alice, &bob);
    std::thread::sleep(TALK);
    bob.hangup();
    closed(&bob);
    let reason = closed(&alice);
    assert!(
        !got_request(&alice, "BYE").is_empty(),
        "alice should have received Confab's BYE (closed: {reason}):\n{}",
        alice.trace_summary()
    );
    assert!(
        got_response(&bob, 200, "BYE"),
        "bob's BYE should be answered 200:\n{}",
        bob.trace_summary()
    );
    assert!(
        alice.received().iter().all(|t| t.proto == "TCP"),
        "everything alice received should come over TCP:\n{}",
        alice.trace_summary()
    );
    assert_media_anchored(&server, &alice, &bob);
    assert_tones_crossed(&alice, &bob, 2.0);
}

#[test]
fn both_devices_ring_and_the_other_is_cancelled_when_one_answers() {
    let server = server("call-fork", &[]);
    let to = server.udp();
    let work = server.dir.path();
    let alice = Baresip::start(
        PhoneSpec::new("alice", "alice", ALICE_PW, ALICE_IP, to).tone(TONE_A),
        work,
    );
    let desk = Baresip::start(
        PhoneSpec::new("bob-desk", "bob", BOB_PW, BOB_IP, to).tone(TONE_B),
        work,
    );
    let mobile = Baresip::start(
        PhoneSpec::new("bob-mobile", "bob", BOB_PW, BOB2_IP, to).tone(TONE_B),
        work,
    );
    alice.wait_registered();
    desk.wait_registered();
    mobile.wait_registered();

    alice.call("bob");
    desk.wait_event("CALL_INCOMING", PHONE_WAIT);
    mobile.wait_event("CALL_INCOMING", PHONE_WAIT);
    mobile.accept();
    alice.wait_event("CALL_ESTABLISHED", PHONE_WAIT);
    mobile.wait_event("CALL_ESTABLISHED", PHONE_WAIT);
    let desk_reason = closed(&desk);

    let cancels = got_request(&desk, "CANCEL");
    assert!(
        !cancels.is_empty(),
        "the desk phone should have received a CANCEL (closed: {desk_reason}):\n{}",
        desk.trace_summary()
    );
    // RFC 3326 Reason, as forking proxies send it: the call was answered elsewhere, so phones
    // do not list it as missed.
    let reason = cancels[0].msg.header("reason").unwrap_or("");
    assert!(
        reason.contains("cause=200") || reason.to_ascii_lowercase().contains("completed elsewhere"),
        "the CANCEL should carry `Reason: SIP;cause=200;text=\"Call completed elsewhere\"`:\n{}",
        cancels[0].msg.summary()
    );
    assert!(
        desk.sent()
            .iter()
            .any(|t| t.msg.status() == Some(487) && t.msg.cseq_method() == Some("INVITE")),
        "the desk phone should have ended its INVITE with 487:\n{}",
        desk.trace_summary()
    );
    std::thread::sleep(Duration::from_secs(3));
    alice.hangup();
    closed(&alice);
    closed(&mobile);
    assert_tones_crossed(&alice, &mobile, 1.5);
}

#[test]
fn busy_callee_gives_486_to_the_caller() {
    let server = server("call-busy", &[]);
    let (alice, bob) = alice_and_bob(&server, "udp");
    alice.call("bob");
    bob.wait_event("CALL_INCOMING", PHONE_WAIT);
    // baresip rejects an incoming call it hangs up with 486 Busy Here.
    bob.hangup();
    let reason = closed(&alice);
    assert!(
        got_response(&alice, 486, "INVITE"),
        "alice should get 486 (closed: {reason}):\n{}",
        alice.trace_summary()
    );
    closed(&bob);
    assert!(
        alice.events_of("CALL_ESTABLISHED").is_empty(),
        "no call was established"
    );
}

#[test]
fn unanswered_call_ends_with_480_after_the_no_answer_timeout() {
    let server = server("call-noanswer", &[("calls", "no_answer_timeout_secs", "3")]);
    let (alice, bob) = alice_and_bob(&server, "udp");
    let start = Instant::now();
    alice.call("bob");
    bob.wait_event("CALL_INCOMING", PHONE_WAIT);
    let reason = closed(&alice);
    let took = start.elapsed();
    assert!(
        got_response(&alice, 480, "INVITE"),
        "alice should get 480 Temporarily Unavailable (closed: {reason}):\n{}",
        alice.trace_summary()
    );
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(9),
        "the no-answer timeout is 3 s; the call ended after {took:?}"
    );
    closed(&bob);
    assert!(
        !got_request(&bob, "CANCEL").is_empty(),
        "bob's ringing phone should be cancelled:\n{}",
        bob.trace_summary()
    );
}

#[test]
fn caller_cancels_before_the_answer() {
    let server = server("call-cancel", &[]);
    let (alice, bob) = alice_and_bob(&server, "udp");
    alice.call("bob");
    bob.wait_event("CALL_INCOMING", PHONE_WAIT);
    alice.wait_event("CALL_RINGING", PHONE_WAIT);
    alice.hangup();
    closed(&alice);
    let reason = closed(&bob);
    assert!(
        !got_request(&bob, "CANCEL").is_empty(),
        "bob should receive a CANCEL (closed: {reason}):\n{}",
        bob.trace_summary()
    );
    assert!(
        got_response(&alice, 487, "INVITE"),
        "alice's INVITE should end with 487 Request Terminated:\n{}",
        alice.trace_summary()
    );
    assert!(
        bob.events_of("CALL_ESTABLISHED").is_empty(),
        "no call was established"
    );
}

#[test]
fn hold_and_resume_by_reinvite_keep_media_on_the_relay() {
    let server = server("call-hold", &[]);
    let (alice, bob) = alice_and_bob(&server, "udp");
    establish(&alice, &bob);
    std::thread::sleep(Duration::from_secs(2));

    let invites_before = requests_now(&bob, "INVITE").len();
    alice.hold();
    let held = support::poll(PHONE_WAIT, || {
        let invites = requests_now(&bob, "INVITE");
        (invites.len() > invites_before)
            .then(|| invites.last().cloned())
            .flatten()
    })
    .unwrap_or_else(|| {
        panic!(
            "bob got no re-INVITE for the hold:\n{}",
            bob.trace_summary()
        )
    });
    let sdp = sdp_summary(&held.msg.body).expect("hold re-INVITE carries SDP");
    assert_eq!(
        sdp.connection.as_deref(),
        Some("127.0.0.1"),
        "hold keeps the relay: {sdp:?}"
    );
    assert!(
        matches!(sdp.direction.as_deref(), Some("sendonly" | "inactive")),
        "bob should be told he is held (sendonly/inactive): {sdp:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(alice.events_of("CALL_CLOSED").is_empty() && bob.events_of("CALL_CLOSED").is_empty());

    let invites_before = requests_now(&bob, "INVITE").len();
    alice.resume();
    let resumed = support::poll(PHONE_WAIT, || {
        let invites = requests_now(&bob, "INVITE");
        (invites.len() > invites_before)
            .then(|| invites.last().cloned())
            .flatten()
    })
    .unwrap_or_else(|| {
        panic!(
            "bob got no re-INVITE for the resume:\n{}",
            bob.trace_summary()
        )
    });
    let sdp = sdp_summary(&resumed.msg.body).expect("resume re-INVITE carries SDP");
    assert_eq!(
        sdp.connection.as_deref(),
        Some("127.0.0.1"),
        "resume keeps the relay: {sdp:?}"
    );
    assert!(
        matches!(sdp.direction.as_deref(), None | Some("sendrecv")),
        "the resume should make the stream sendrecv again: {sdp:?}"
    );
    // Two-way audio again after the resume: the last seconds of both recordings.
    std::thread::sleep(Duration::from_secs(3));
    alice.hangup();
    closed(&alice);
    closed(&bob);
    for (phone, expect, own) in [(&alice, TONE_B, TONE_A), (&bob, TONE_A, TONE_B)] {
        let rec = phone.received_audio().last().cloned().expect("a recording");
        let wav = support::audio::Wav::read(&rec).unwrap();
        let tail = wav.last_secs(2.0);
        let report = support::audio::analyse(&tail, &[expect, own]);
        assert!(
            report.dominant_blocks(expect) >= 10,
            "{}: the other side's {expect} Hz tone should be back in the last 2 s after the \
             resume ({report})",
            phone.spec.name
        );
    }
}
