//! A call between two phones each behind its own NAT router, through the real `confab` binary on
//! the "public" side — built from network namespaces by the test (see `support/netns.rs`):
//!
//! - alice (baresip, 10.0.1.2) behind a port-preserving masquerade router (100.64.0.11);
//! - bob (baresip, 10.0.2.2) behind a `fully-random` masquerade router (100.64.0.12), like a
//!   mobile carrier: every new flow gets a random public port;
//! - Confab on 100.64.0.1, with no route to 10.0.0.0/8. Routers forward only replies inward and
//!   forget idle UDP mappings after 30 s.
//!
//! The phones register, alice calls bob, both send their tone. Confab must reach each phone
//! through the flow its REGISTER came from (the Contact's private address is unreachable), and
//! relay RTP to where it actually comes from (the SDP names private addresses). The call must
//! still be up after 45 s — past the mapping lifetime; what keeps the mappings open is Confab's
//! keep-alives and the RTP itself — then bob's BYE must reach alice, and both recordings must
//! carry the other side's tone, also in their last seconds.
//!
//! Needs root and `ip netns` (CI runs the suite as root inside `unshare -n`, where `ip netns add`
//! works): the test fails, naming what is missing, when it cannot build the namespaces.

mod common;
mod support;

use std::fs;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use support::audio::{analyse, assert_hears, Wav, TONE_A, TONE_B};
use support::baresip::{Baresip, PhoneSpec, PHONE_WAIT};
use support::netns::{udp_socket_in, NatKind, NatLab};
use support::proc::Proc;
use support::trace::sdp_summary;

const ALICE_PW: &str = "alice-nat-secret-7";
const BOB_PW: &str = "bob-nat-secret-8";
/// Longer than the routers' 30 s UDP mapping lifetime.
const HOLD_CALL: Duration = Duration::from_secs(45);

/// `confab serve` inside the public namespace, killed on drop.
struct NsServer {
    _proc: Proc,
    sip: SocketAddr,
    _dir: tempfile::TempDir,
}

impl NsServer {
    fn start(lab: &NatLab, users: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("confab-nat-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        let ip = lab.server_ip;
        let config_path = dir.path().join("confab.toml");
        // baresip 1.0 knows only MD5. Everything bound to the public address only.
        let config = format!(
            "[server]\ndata_dir = {data:?}\ndomain = \"{DOMAIN}\"\n\n\
             [sip]\nudp = [\"{ip}:5060\"]\ntcp = [\"{ip}:5060\"]\ntls = []\nws = []\nwss = []\n\
             advertised_address = \"{ip}\"\n\n\
             [auth]\nalgorithms = [\"MD5\"]\n\n\
             [media]\nbind = \"{ip}\"\nport_min = 20000\nport_max = 20199\n\n\
             [log]\nlevel = \"debug,sqlx=warn\"\n",
            data = data.display().to_string(),
        );
        fs::write(&config_path, &config).unwrap();
        for (user, pw) in users {
            let mut cmd = Command::new(confab_bin());
            cmd.arg("--config")
                .arg(&config_path)
                .args(["user", "add", user, "--password", pw]);
            let out = run_bounded(cmd, Duration::from_secs(30));
            assert!(
                out.status.success(),
                "confab user add {user}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &lab.public_ns])
            .arg(confab_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("NO_COLOR", "1");
        let mut proc = Proc::spawn(
            "confab (public namespace)",
            cmd,
            &dir.path().join("server.log"),
        );
        let sip = SocketAddr::from((ip, 5060));
        // Ready when it answers an OPTIONS sent from inside its namespace.
        let probe = udp_socket_in(&lab.public_ns, SocketAddr::from((ip, 0)))
            .expect("probe socket in the public namespace");
        let client = UdpClient { sock: probe };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            assert!(proc.is_running(), "confab exited during startup\n{config}");
            let req = options_request(&client.local_addr(), "UDP", &format!("sip:{DOMAIN}"));
            client.send_to(req.as_bytes(), sip);
            if client.recv(Duration::from_millis(300)).is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "confab did not answer OPTIONS on {sip} within 15 s\n{config}"
            );
        }
        Self {
            _proc: proc,
            sip,
            _dir: dir,
        }
    }
}

fn phone(
    lab: &NatLab,
    site: usize,
    user: &str,
    pw: &str,
    tone: f64,
    server: SocketAddr,
    work: &std::path::Path,
) -> Baresip {
    let s = &lab.sites[site];
    let mut spec = PhoneSpec::new(user, user, pw, s.phone_ip, server).tone(tone);
    spec.netns = Some(s.phone_ns.clone());
    spec.tone_secs = 120;
    spec.lifetime = Duration::from_secs(180);
    Baresip::start(spec, work)
}

#[test]
fn call_between_phones_behind_nat_keeps_two_way_audio_past_mapping_expiry() {
    let lab = NatLab::build(&[NatKind::PortPreserving, NatKind::FullyRandom]);
    let server = NsServer::start(&lab, &[("alice", ALICE_PW), ("bob", BOB_PW)]);
    let work = tempfile::Builder::new()
        .prefix("confab-nat-phones-")
        .tempdir()
        .unwrap();
    let alice = phone(&lab, 0, "alice", ALICE_PW, TONE_A, server.sip, work.path());
    let bob = phone(&lab, 1, "bob", BOB_PW, TONE_B, server.sip, work.path());
    alice.wait_registered();
    bob.wait_registered();

    alice.call("bob");
    bob.wait_event("CALL_INCOMING", PHONE_WAIT);
    bob.accept();
    alice.wait_event("CALL_ESTABLISHED", PHONE_WAIT);
    bob.wait_event("CALL_ESTABLISHED", PHONE_WAIT);
    let established = Instant::now();

    // The SDP each phone got names the relay on the public side, never a private address.
    let relay = lab.server_ip.to_string();
    for (phone, what) in [(&bob, "INVITE"), (&alice, "200")] {
        let sdp = phone
            .received()
            .iter()
            .filter(|t| {
                (what == "INVITE" && t.msg.method() == Some("INVITE"))
                    || (what == "200"
                        && t.msg.status() == Some(200)
                        && t.msg.cseq_method() == Some("INVITE"))
            })
            .filter_map(|t| sdp_summary(&t.msg.body))
            .next_back()
            .unwrap_or_else(|| {
                panic!(
                    "{} received no SDP:\n{}",
                    phone.spec.name,
                    phone.trace_summary()
                )
            });
        assert_eq!(
            sdp.connection.as_deref(),
            Some(relay.as_str()),
            "{}: the SDP must name Confab's relay on the public side: {sdp:?}",
            phone.spec.name
        );
    }

    // Past the routers' 30 s idle-mapping lifetime, the call is still up on both sides.
    while established.elapsed() < HOLD_CALL {
        for p in [&alice, &bob] {
            assert!(
                p.events_of("CALL_CLOSED").is_empty(),
                "{}'s call ended after {:?}: {}\nalice's router:\n{}\nbob's router:\n{}",
                p.spec.name,
                established.elapsed(),
                p.event_summary(),
                lab.conntrack(&lab.sites[0]),
                lab.conntrack(&lab.sites[1])
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // bob (behind the fully-random NAT) hangs up: the BYE must reach alice through her router.
    bob.hangup();
    let reason = alice
        .next_event("CALL_CLOSED", PHONE_WAIT)
        .map(|e| e["param"].as_str().unwrap_or("").to_string())
        .unwrap_or_else(|| {
            panic!(
                "alice never saw the call end after bob's BYE, {:?} into the call — her SIP \
                 mapping was not kept open\nalice's router:\n{}\n{}",
                established.elapsed(),
                lab.conntrack(&lab.sites[0]),
                alice.trace_summary()
            )
        });
    assert!(
        alice
            .received()
            .iter()
            .any(|t| t.msg.method() == Some("BYE")),
        "alice should receive Confab's BYE (closed: {reason}):\n{}",
        alice.trace_summary()
    );
    bob.wait_event("CALL_CLOSED", PHONE_WAIT);

    // RTP reached each phone from the relay port named in its SDP (symmetric RTP).
    for p in [&alice, &bob] {
        let sources = p.rtp_sources();
        assert!(
            sources.iter().all(|s| s.starts_with(&format!("{relay}:"))),
            "{}: RTP should come only from the relay at {relay}: {sources:?}",
            p.spec.name
        );
    }

    // Two-way audio for the whole call, including its last seconds.
    let call_secs = established.elapsed().as_secs_f64();
    for (p, expect, own) in [(&alice, TONE_B, TONE_A), (&bob, TONE_A, TONE_B)] {
        let rec = p
            .received_audio()
            .last()
            .cloned()
            .unwrap_or_else(|| panic!("{} recorded nothing", p.spec.name));
        let report = assert_hears(&rec, expect, own, call_secs * 0.7, &p.spec.name);
        let wav = Wav::read(&rec).unwrap();
        let end = analyse(&wav.last_secs(5.0), &[expect, own]);
        assert!(
            end.dominant_blocks(expect) >= 30,
            "{}: the other side's tone should still arrive in the last 5 s of the call \
             ({end}); whole call: {report}",
            p.spec.name
        );
        eprintln!("{} heard: {report}", p.spec.name);
    }
}
