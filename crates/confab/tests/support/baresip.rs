//! baresip (Debian `baresip-core`) as a phone under remote control.
//!
//! Each phone gets its own config directory, its own loopback address (127.0.0.2, 127.0.0.3, …;
//! any 127/8 address is local on Linux) so that what it is sent can be told apart from what its
//! peer is sent, and these modules: `g711` (PCMU/PCMA), `aufile` (the phone "speaks" a tone read
//! from a WAV made by `sox`), `aubridge` (a playback device that goes nowhere), `sndfile` (records
//! every stream: `*-dec.wav` is what the phone received, `*-enc.wav` what it sent), `menu` (the
//! commands) and `ctrl_tcp` (those commands as netstring-framed JSON over TCP, with every call
//! event pushed back). `-s` writes a SIP trace into the log, which [`Baresip::received`] parses.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::audio;
use super::proc::Proc;
use super::trace::{parse_baresip_trace, Traced};
use crate::common::{require_program, unique, DOMAIN};

/// Default wait for a phone to react.
pub const PHONE_WAIT: Duration = Duration::from_secs(10);

/// What a phone is.
#[derive(Clone, Debug)]
pub struct PhoneSpec {
    /// Short name (directory, log captions), unique within the test.
    pub name: String,
    pub user: String,
    pub password: String,
    /// The phone's own address: 127.0.0.x, or its address inside its network namespace.
    pub ip: Ipv4Addr,
    /// Confab's SIP address (registrar and outbound proxy).
    pub server: SocketAddr,
    /// `udp` or `tcp`.
    pub transport: String,
    /// The tone this phone sends.
    pub tone_hz: f64,
    /// Length of the tone file; baresip stops sending at its end.
    pub tone_secs: u32,
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    /// Registration interval asked for, seconds.
    pub regint: u32,
    /// Extra `;key=value` account parameters.
    pub account_params: String,
    /// The process exits by itself after this long (`baresip -t`), whatever happens.
    pub lifetime: Duration,
    /// No registration and no proxy: the harness's own peer-to-peer check.
    pub direct: bool,
}

impl PhoneSpec {
    pub fn new(name: &str, user: &str, password: &str, ip: Ipv4Addr, server: SocketAddr) -> Self {
        Self {
            name: name.into(),
            user: user.into(),
            password: password.into(),
            ip,
            server,
            transport: "udp".into(),
            tone_hz: audio::TONE_A,
            tone_secs: 60,
            netns: None,
            regint: 600,
            account_params: String::new(),
            lifetime: Duration::from_secs(150),
            direct: false,
        }
    }

    pub fn tone(mut self, hz: f64) -> Self {
        self.tone_hz = hz;
        self
    }

    pub fn transport(mut self, t: &str) -> Self {
        self.transport = t.into();
        self
    }
}

#[derive(Default)]
struct Shared {
    events: Vec<Value>,
    responses: Vec<Value>,
    /// Indexes of events already handed out by [`Baresip::wait_event`].
    taken: HashSet<usize>,
    closed: bool,
}

/// A running baresip, stopped on drop.
pub struct Baresip {
    pub spec: PhoneSpec,
    pub dir: PathBuf,
    pub proc: Proc,
    /// `ip:port` baresip listens on for SIP.
    pub sip_addr: SocketAddr,
    ctrl: Mutex<TcpStream>,
    shared: Arc<(Mutex<Shared>, Condvar)>,
}

impl Baresip {
    /// Writes the config, starts baresip and connects to its control port. Does not wait for the
    /// registration: see [`wait_registered`](Self::wait_registered).
    pub fn start(spec: PhoneSpec, workdir: &Path) -> Self {
        let baresip = require_program("baresip", "baresip-core");
        let dir = workdir.join(&spec.name);
        fs::create_dir_all(dir.join("rec")).expect("mkdir phone dir");
        let tone = dir.join("tone.wav");
        audio::make_tone(&tone, spec.tone_hz, spec.tone_secs);

        // Inside a namespace of its own the phone can use fixed ports; on the shared loopback it
        // needs free ones (UDP/TCP on the port, TLS on the next).
        let (sip_port, ctrl_port) = if spec.netns.is_some() {
            (5060, 4444)
        } else {
            (
                super::free_port_on(spec.ip, true),
                super::free_port_on(Ipv4Addr::LOCALHOST, false),
            )
        };
        let modules = std::env::var("CONFAB_BARESIP_MODULES")
            .unwrap_or_else(|_| "/usr/lib/baresip/modules".into());
        let config = format!(
            "# baresip 1.0 configuration written by Confab's call tests (support/baresip.rs).\n\
             poll_method\t\tepoll\n\
             sip_listen\t\t{ip}:{sip_port}\n\
             net_interface\t\t{ip}\n\
             dns_server\t\t127.0.0.1:53\n\
             audio_source\t\taufile,{tone}\n\
             audio_player\t\taubridge,nowhere-{name}\n\
             audio_alert\t\taubridge,nowhere-{name}\n\
             audio_level\t\tno\n\
             snd_path\t\t{rec}\n\
             ctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}\n\
             statmode_default\toff\n\
             call_local_timeout\t120\n\
             call_max_calls\t\t4\n\
             module_path\t\t{modules}\n\
             module\t\t\tg711.so\n\
             module\t\t\taufile.so\n\
             module\t\t\taubridge.so\n\
             module\t\t\tsndfile.so\n\
             module\t\t\tmenu.so\n\
             module\t\t\tctrl_tcp.so\n\
             module_tmp\t\tuuid.so\n\
             module_tmp\t\taccount.so\n",
            ip = spec.ip,
            tone = tone.display(),
            name = spec.name,
            rec = dir.join("rec").display(),
        );
        let account = if spec.direct {
            format!(
                "<sip:{user}@{ip}:{sip_port}>;regint=0;answermode=manual;audio_codecs=PCMU/8000\n",
                user = spec.user,
                ip = spec.ip,
            )
        } else {
            format!(
                "<sip:{user}@{DOMAIN};transport={t}>;auth_pass={pw};\
                 outbound=\"sip:{server};transport={t}\";regint={regint};answermode=manual;\
                 audio_codecs=PCMU/8000{extra}\n",
                user = spec.user,
                t = spec.transport,
                pw = spec.password,
                server = spec.server,
                regint = spec.regint,
                extra = spec.account_params,
            )
        };
        fs::write(dir.join("config"), config).expect("write baresip config");
        fs::write(dir.join("accounts"), account).expect("write baresip accounts");

        let mut cmd = match &spec.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&baresip);
                c
            }
            None => Command::new(&baresip),
        };
        cmd.arg("-4")
            .arg("-s")
            .arg("-f")
            .arg(&dir)
            .args(["-t", &spec.lifetime.as_secs().to_string()])
            .env("HOME", &dir);
        let mut proc = Proc::spawn(
            &format!("baresip {}", spec.name),
            cmd,
            &dir.join("baresip.log"),
        );

        let ctrl_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ctrl_port));
        let deadline = Instant::now() + PHONE_WAIT;
        let stream = loop {
            let attempt = match &spec.netns {
                Some(ns) => super::netns::connect_tcp_in(ns, ctrl_addr),
                None => TcpStream::connect_timeout(&ctrl_addr, Duration::from_millis(500)),
            };
            match attempt {
                Ok(s) => break s,
                Err(e) => {
                    if !proc.is_running() || Instant::now() > deadline {
                        panic!(
                            "baresip {} never opened its control port {ctrl_addr}: {e}\n{}",
                            spec.name,
                            super::tail(&proc.output(), 20_000)
                        );
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let reader = stream.try_clone().expect("clone ctrl stream");
        let shared2 = Arc::clone(&shared);
        std::thread::spawn(move || read_netstrings(reader, &shared2));
        Self {
            sip_addr: SocketAddr::from((spec.ip, sip_port)),
            spec,
            dir,
            proc,
            ctrl: Mutex::new(stream),
            shared,
        }
    }

    /// The phone's own SIP URI, for direct calls.
    pub fn direct_uri(&self) -> String {
        format!("sip:{}@{}", self.spec.user, self.sip_addr)
    }

    /// Runs a `menu` command (`dial`, `accept`, `hangup`, `hold`, `resume`, `answermode`, …) and
    /// returns its output, or its error text.
    pub fn command(&self, command: &str, params: &str) -> Result<String, String> {
        let token = unique("t");
        let body = json!({"command": command, "params": params, "token": token}).to_string();
        let frame = format!("{}:{body},", body.len());
        self.ctrl
            .lock()
            .unwrap()
            .write_all(frame.as_bytes())
            .map_err(|e| format!("write to baresip control: {e}"))?;
        let (lock, cv) = &*self.shared;
        let mut st = lock.lock().unwrap();
        let end = Instant::now() + PHONE_WAIT;
        loop {
            if let Some(r) = st.responses.iter().find(|r| r["token"] == token.as_str()) {
                let data = r["data"].as_str().unwrap_or("").to_string();
                return if r["ok"] == true { Ok(data) } else { Err(data) };
            }
            if st.closed {
                return Err("baresip closed its control connection".into());
            }
            let left = end.checked_duration_since(Instant::now()).ok_or_else(|| {
                format!("no answer to `{command} {params}` within {PHONE_WAIT:?}")
            })?;
            st = cv.wait_timeout(st, left).unwrap().0;
        }
    }

    /// Like [`command`](Self::command), panicking (with the phone's log) on failure.
    pub fn must(&self, command: &str, params: &str) -> String {
        self.command(command, params).unwrap_or_else(|e| {
            panic!(
                "baresip {}: `{command} {params}` failed: {e}",
                self.spec.name
            )
        })
    }

    pub fn dial(&self, uri: &str) {
        self.must("dial", uri);
    }

    /// Calls `user@DOMAIN` through Confab.
    pub fn call(&self, user: &str) {
        self.dial(&format!("sip:{user}@{DOMAIN}"));
    }

    pub fn accept(&self) {
        self.must("accept", "");
    }

    pub fn hangup(&self) {
        self.must("hangup", "");
    }

    pub fn hold(&self) {
        self.must("hold", "");
    }

    pub fn resume(&self) {
        self.must("resume", "");
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Value> {
        self.shared.0.lock().unwrap().events.clone()
    }

    /// Events of a type so far.
    pub fn events_of(&self, ty: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["type"] == ty)
            .collect()
    }

    /// Waits for the next event of type `ty` (`REGISTER_OK`, `CALL_INCOMING`, `CALL_RINGING`,
    /// `CALL_ESTABLISHED`, `CALL_CLOSED`, …) not handed out before, or `None` after `within`.
    pub fn next_event(&self, ty: &str, within: Duration) -> Option<Value> {
        let (lock, cv) = &*self.shared;
        let mut st = lock.lock().unwrap();
        let end = Instant::now() + within;
        loop {
            let found = st
                .events
                .iter()
                .enumerate()
                .find(|(i, e)| e["type"] == ty && !st.taken.contains(i))
                .map(|(i, e)| (i, e.clone()));
            if let Some((i, e)) = found {
                st.taken.insert(i);
                return Some(e);
            }
            let left = end.checked_duration_since(Instant::now())?;
            st = cv.wait_timeout(st, left).unwrap().0;
        }
    }

    /// [`next_event`](Self::next_event), panicking with the phone's events when it does not come.
    pub fn wait_event(&self, ty: &str, within: Duration) -> Value {
        self.next_event(ty, within).unwrap_or_else(|| {
            panic!(
                "baresip {}: no {ty} event within {within:?}; events so far:\n{}",
                self.spec.name,
                self.event_summary()
            )
        })
    }

    /// Asserts that no event of type `ty` arrives (among those not yet handed out) during `during`.
    pub fn assert_no_event(&self, ty: &str, during: Duration) {
        if let Some(e) = self.next_event(ty, during) {
            panic!(
                "baresip {}: unexpected {ty} event: {e}\nevents so far:\n{}",
                self.spec.name,
                self.event_summary()
            );
        }
    }

    /// One line per event: type, direction, param.
    pub fn event_summary(&self) -> String {
        self.events()
            .iter()
            .filter(|e| e["type"] != "CALL_RTCP")
            .map(|e| {
                format!(
                    "  {} {} {}",
                    e["type"].as_str().unwrap_or("?"),
                    e["direction"].as_str().unwrap_or(""),
                    e["param"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits for the registration with Confab to succeed: a 200 to its REGISTER in the trace (the
    /// REGISTER_OK event may fire before the control connection is up, and is then lost).
    pub fn wait_registered(&self) {
        let registered = || {
            self.received()
                .iter()
                .any(|t| t.msg.cseq_method() == Some("REGISTER") && t.msg.status() == Some(200))
        };
        let ok = super::poll(PHONE_WAIT, || registered().then_some(()));
        assert!(
            ok.is_some(),
            "baresip {} did not register within {PHONE_WAIT:?}; its SIP trace:\n{}",
            self.spec.name,
            self.trace_summary()
        );
    }

    /// The SIP trace so far.
    pub fn trace(&self) -> Vec<Traced> {
        parse_baresip_trace(&self.proc.output())
    }

    /// Messages this phone received: sent to its listening address, or sent by Confab (over TCP
    /// baresip connects from an ephemeral port of 127.0.0.1, whatever its own address).
    pub fn received(&self) -> Vec<Traced> {
        let (me, server) = (self.sip_addr.to_string(), self.spec.server.to_string());
        self.trace()
            .into_iter()
            .filter(|t| t.dst == me || (!self.spec.direct && t.src == server))
            .collect()
    }

    /// Messages this phone sent.
    pub fn sent(&self) -> Vec<Traced> {
        let (me, server) = (self.sip_addr.to_string(), self.spec.server.to_string());
        self.trace()
            .into_iter()
            .filter(|t| t.src == me || (!self.spec.direct && t.dst == server))
            .collect()
    }

    /// Start lines of the trace, for failure messages.
    pub fn trace_summary(&self) -> String {
        self.trace()
            .iter()
            .map(Traced::line)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Recordings of what the phone received (`*-dec.wav`), oldest first.
    pub fn received_audio(&self) -> Vec<PathBuf> {
        self.recordings("-dec.wav")
    }

    /// Recordings of what the phone sent (`*-enc.wav`), oldest first.
    pub fn sent_audio(&self) -> Vec<PathBuf> {
        self.recordings("-enc.wav")
    }

    fn recordings(&self, suffix: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.dir.join("rec"))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().ends_with(suffix))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// `stream: incoming rtp for 'audio' established, receiving from IP:PORT` — where RTP came
    /// from, as baresip logs it.
    pub fn rtp_sources(&self) -> Vec<String> {
        self.proc
            .output()
            .lines()
            .filter_map(|l| l.split("receiving from ").nth(1))
            .map(|s| s.trim().to_string())
            .collect()
    }

    /// Stops baresip (SIGTERM: it hangs up and unregisters), bounded.
    pub fn stop(&mut self) {
        self.proc.stop(Duration::from_secs(5));
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "===== baresip {} events =====\n{}",
                self.spec.name,
                self.event_summary()
            );
        }
        // Proc's own drop stops the process and prints its log when panicking.
    }
}

/// Reads `len:json,` frames from baresip's control connection until it closes.
fn read_netstrings(mut stream: TcpStream, shared: &Arc<(Mutex<Shared>, Condvar)>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16_384];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        while let Some(colon) = buf.iter().position(|&b| b == b':') {
            let Some(len) = std::str::from_utf8(&buf[..colon])
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
            else {
                // Not a netstring: drop up to the colon and resynchronise.
                buf.drain(..=colon);
                continue;
            };
            if buf.len() < colon + 1 + len + 1 {
                break;
            }
            let body = buf[colon + 1..colon + 1 + len].to_vec();
            buf.drain(..colon + 1 + len + 1);
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                let (lock, cv) = &**shared;
                let mut st = lock.lock().unwrap();
                if v["event"] == true {
                    st.events.push(v);
                } else if v["response"] == true {
                    st.responses.push(v);
                }
                cv.notify_all();
            }
        }
    }
    let (lock, cv) = &**shared;
    lock.lock().unwrap().closed = true;
    cv.notify_all();
}
