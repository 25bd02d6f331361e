//! Linphone (Debian `linphone-cli`) phones: `linphone-daemon`, one per phone with its own `HOME`
//! and config, driven through its command socket (`--pipe NAME` makes the Unix socket
//! `/tmp/NAME`). The daemon answers each command with `Status: Ok|Error` and `Key: value` lines;
//! call state changes are queued and read with `pop-event`.
//!
//! With no sound card here, Linphone plays nothing of its own into a call: the test plays a tone
//! file with `incall-player-start`. RTP is counted from the statistics oRTP writes into the log
//! when a stream stops (`AUDIO SESSION'S RTP STATISTICS … received N packets`): `call-stats`
//! crashes linphone-daemon 5.1 here. GRUU (RFC 5627) is left on, as Linphone ships.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::proc::Proc;
use crate::common::{require_program, unique, DOMAIN};

/// One event popped from the daemon's queue, as `Key → value`.
pub type Event = BTreeMap<String, String>;

/// What a Linphone phone is.
#[derive(Clone, Debug)]
pub struct LinphoneSpec {
    pub name: String,
    pub user: String,
    pub password: String,
    /// Confab's address.
    pub server: SocketAddr,
    /// `udp` or `tcp`.
    pub transport: String,
    pub tone_hz: f64,
    /// No account, no proxy: the harness's own peer-to-peer check.
    pub direct: bool,
}

/// A running linphone-daemon, stopped on drop.
pub struct Linphone {
    pub spec: LinphoneSpec,
    pub proc: Proc,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub tone: PathBuf,
    pub sip_port: u16,
    /// Its RTP port (what its own SDP offers).
    pub rtp_port: u16,
    socket_path: PathBuf,
    conn: UnixStream,
    /// Every event popped so far, in order.
    pub events: Vec<Event>,
    taken: usize,
}

impl Linphone {
    pub fn start(spec: LinphoneSpec, workdir: &Path) -> Self {
        let daemon = require_program("linphone-daemon", "linphone-cli");
        let dir = workdir.join(&spec.name);
        // Linphone keeps its database under $HOME/.local/share/linphone.
        std::fs::create_dir_all(dir.join(".local/share/linphone")).expect("mkdir linphone home");
        let tone = dir.join("tone.wav");
        super::audio::make_tone(&tone, spec.tone_hz, 60);
        let sip_port = super::free_port_on(Ipv4Addr::LOCALHOST, false);
        let rtp_port = loop {
            let p = super::free_port_on(Ipv4Addr::LOCALHOST, true);
            if p & 1 == 0 {
                break p;
            }
        };
        let video_port = loop {
            let p = super::free_port_on(Ipv4Addr::LOCALHOST, true);
            if p & 1 == 0 && p != rtp_port {
                break p;
            }
        };
        let (udp, tcp) = if spec.transport == "tcp" {
            (0, sip_port)
        } else {
            (sip_port, 0)
        };
        // Ports: 0 disables a transport. IPv6 off: the tests talk to 127.0.0.1 only. No network
        // monitoring: with only loopback (the tests' namespace) Linphone would call the network
        // down after 5 s and drop its TCP connections and registrations.
        let rc = format!(
            "[sip]\nuse_ipv6=0\nsip_port={udp}\nsip_tcp_port={tcp}\nsip_tls_port=0\n\
             register_only_when_network_is_up=0\nauto_net_state_mon=0\n\n\
             [rtp]\naudio_rtp_port={rtp_port}\nvideo_rtp_port={video_port}\n\n\
             [video]\ncapture=0\ndisplay=0\nautomatically_initiate=0\nautomatically_accept=0\n"
        );
        // The account lives in the config, with Confab as outbound proxy *and* route: the
        // daemon's `register` command sets no route, and Linphone would then look the domain up
        // in DNS to send calls.
        let rc = if spec.direct {
            rc
        } else {
            let proxy = format!("sip:{};transport={}", spec.server, spec.transport);
            format!(
                "{rc}\n[proxy_0]\nreg_proxy=<{proxy}>\nreg_route=<{proxy};lr>\n\
                 reg_identity=<sip:{user}@{DOMAIN}>\nreg_expires=600\nreg_sendregister=1\n\
                 publish=0\n\n\
                 [auth_info_0]\nusername={user}\npasswd={pw}\nrealm={DOMAIN}\ndomain={DOMAIN}\n",
                user = spec.user,
                pw = spec.password,
            )
        };
        let rc_path = dir.join("linphonerc");
        std::fs::write(&rc_path, rc).expect("write linphonerc");
        let pipe = unique("confab-lp-");
        let socket_path = PathBuf::from("/tmp").join(&pipe);
        let log = dir.join("linphone.log");
        let mut cmd = Command::new(daemon);
        cmd.arg("--config")
            .arg(&rc_path)
            .args(["--pipe", &pipe])
            .arg("--log")
            .arg(&log)
            .env("HOME", &dir);
        let mut proc = Proc::spawn(
            &format!("linphone {}", spec.name),
            cmd,
            &dir.join("daemon.out"),
        );
        proc.extra_logs = vec![log.clone()];
        let deadline = Instant::now() + Duration::from_secs(15);
        let conn = loop {
            match UnixStream::connect(&socket_path) {
                Ok(c) => break c,
                Err(e) => {
                    assert!(
                        proc.is_running() && Instant::now() < deadline,
                        "linphone-daemon {} never opened {}: {e}",
                        spec.name,
                        socket_path.display()
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        Self {
            spec,
            proc,
            dir,
            log,
            tone,
            sip_port,
            rtp_port,
            socket_path,
            conn,
            events: Vec::new(),
            taken: 0,
        }
    }

    /// Sends one command line and returns the answer (read until the daemon has been quiet for
    /// 300 ms; its answers have no terminator).
    pub fn command(&mut self, line: &str) -> String {
        self.conn
            .write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("linphone {}: write `{line}`: {e}", self.spec.name));
        let mut buf = Vec::new();
        let end = Instant::now() + Duration::from_secs(10);
        let mut chunk = [0u8; 65_536];
        loop {
            let quiet = if buf.is_empty() {
                Duration::from_millis(500)
            } else {
                Duration::from_millis(300)
            };
            self.conn.set_read_timeout(Some(quiet)).ok();
            match self.conn.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) if !buf.is_empty() => break,
                Err(_) => {}
            }
            if Instant::now() > end {
                break;
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        assert!(
            !text.is_empty(),
            "linphone {}: no answer to `{line}` (daemon running: {})",
            self.spec.name,
            self.proc.is_running()
        );
        text
    }

    /// A command that must answer `Status: Ok`; returns its `Key: value` fields.
    pub fn must(&mut self, line: &str) -> BTreeMap<String, String> {
        let answer = self.command(line);
        assert!(
            answer.starts_with("Status: Ok"),
            "linphone {}: `{line}` failed:\n{answer}",
            self.spec.name
        );
        fields(&answer)
    }

    /// Waits for the account in the config to be registered with Confab
    /// (`LinphoneRegistrationOk`).
    pub fn register(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let status = self.command("register-status ALL");
            if status.contains("LinphoneRegistrationOk") {
                return;
            }
            assert!(
                !status.contains("LinphoneRegistrationFailed") && Instant::now() < deadline,
                "linphone {} did not register: {status}",
                self.spec.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Places a call; returns the daemon's call id.
    pub fn call(&mut self, uri: &str) -> String {
        self.must(&format!("call {uri}"))
            .get("Id")
            .cloned()
            .unwrap_or_else(|| panic!("linphone {}: `call` gave no Id", self.spec.name))
    }

    /// Pops every queued event into [`events`](Self::events).
    pub fn pump(&mut self) {
        for _ in 0..200 {
            let answer = self.command("pop-event");
            let f = fields(&answer);
            if !f.contains_key("Event-type") {
                return;
            }
            self.events.push(f);
            if f_size(&answer) == Some(0) {
                return;
            }
        }
    }

    /// Waits for a call-state event `state` (e.g. `LinphoneCallIncomingReceived`,
    /// `LinphoneCallStreamsRunning`, `LinphoneCallEnd`) not returned before; returns it.
    pub fn wait_state(&mut self, state: &str, within: Duration) -> Event {
        let deadline = Instant::now() + within;
        loop {
            self.pump();
            if let Some(i) = self.events[self.taken..]
                .iter()
                .position(|e| e.get("Event").map(String::as_str) == Some(state))
            {
                let idx = self.taken + i;
                self.taken = idx + 1;
                return self.events[idx].clone();
            }
            assert!(
                Instant::now() < deadline,
                "linphone {}: no {state} within {within:?}; events: {:?}",
                self.spec.name,
                self.events
                    .iter()
                    .filter_map(|e| e.get("Event"))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether any popped event is call state `state`.
    pub fn saw_state(&mut self, state: &str) -> bool {
        self.pump();
        self.events
            .iter()
            .any(|e| e.get("Event").map(String::as_str) == Some(state))
    }

    /// Plays this phone's tone into call `id`.
    pub fn play_tone(&mut self, id: &str) {
        let tone = self.tone.display().to_string();
        self.must(&format!("incall-player-start {tone} {id}"));
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// `(sent, received)` RTP packets of each audio stream that has stopped, from oRTP's
    /// statistics in the log.
    pub fn rtp_stats(&self) -> Vec<(u64, u64)> {
        let log = self.log_text();
        let mut out = Vec::new();
        for block in log.split("AUDIO SESSION'S RTP STATISTICS").skip(1) {
            let mut sent = None;
            let mut received = None;
            for line in block.lines().take(20) {
                let text = line.split("ortp-message-").nth(1).unwrap_or(line).trim();
                let number = || {
                    text.split_whitespace()
                        .nth(1)
                        .and_then(|n| n.parse::<u64>().ok())
                };
                if text.starts_with("sent ") && text.ends_with(" packets") && sent.is_none() {
                    sent = number();
                } else if text.starts_with("received ")
                    && text.ends_with(" packets")
                    && received.is_none()
                {
                    received = number();
                }
            }
            if let (Some(s), Some(r)) = (sent, received) {
                out.push((s, r));
            }
        }
        out
    }

    /// Whether the log shows a 2xx received for a BYE.
    pub fn bye_answered(&self) -> bool {
        let log = self.log_text();
        log.split("]: received [").skip(1).any(|chunk| {
            let msg: Vec<&str> = chunk
                .lines()
                .skip(1)
                .take_while(|l| !l.starts_with("20"))
                .collect();
            msg.first().is_some_and(|l| l.starts_with("SIP/2.0 2"))
                && msg
                    .iter()
                    .any(|l| l.starts_with("CSeq:") && l.trim_end().ends_with("BYE"))
        })
    }

    /// Every SIP message the phone received (from belle-sip's log), as text.
    pub fn received_messages(&self) -> Vec<String> {
        let log = self.log_text();
        log.split("]: received [")
            .skip(1)
            .map(|chunk| {
                chunk
                    .lines()
                    .skip(1)
                    .take_while(|l| !l.starts_with("20"))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect()
    }
}

impl Drop for Linphone {
    fn drop(&mut self) {
        let _ = self.conn.write_all(b"quit\n");
        self.proc.wait(Duration::from_secs(3));
        self.proc.stop(Duration::from_secs(2));
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

/// `Key: value` lines of a daemon answer (the first occurrence of each key).
fn fields(answer: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in answer.lines() {
        if let Some((k, v)) = line.split_once(": ") {
            map.entry(k.trim().to_string())
                .or_insert_with(|| v.trim().to_string());
        }
    }
    map
}

fn f_size(answer: &str) -> Option<u64> {
    fields(answer).get("Size").and_then(|s| s.parse().ok())
}
