//! PJSIP phones: `support/pjsua_phone.py` run with a Python that has pjsua2 (PyPI
//! `pjsua2-python`: pjproject 2.15's own SWIG bindings, as in most softphones). The script prints
//! one JSON object per line on stdout; this module reads them back.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::proc::Proc;
use crate::common::DOMAIN;

/// The Python interpreter: `$CONFAB_PJSUA_PYTHON`, else `python3`. Panics (never skips) when it
/// cannot `import pjsua2`, saying how to install it.
pub fn python() -> String {
    static CHECKED: OnceLock<Result<String, String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let python = std::env::var("CONFAB_PJSUA_PYTHON").unwrap_or_else(|_| "python3".into());
            let mut cmd = Command::new(&python);
            cmd.args([
                "-c",
                "import pjsua2; print(pjsua2.Endpoint().libVersion().full)",
            ]);
            let out = match cmd.stdin(std::process::Stdio::null()).output() {
                Ok(o) => o,
                Err(e) => return Err(format!("cannot run `{python}`: {e}")),
            };
            if out.status.success() {
                Ok(python)
            } else {
                Err(format!(
                    "`{python}` cannot import pjsua2: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        })
        .clone()
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nThe PJSIP tests need pjproject's Python bindings: \
                 `python3 -m pip install pjsua2-python` (PyPI; add it to .ci/run), or point \
                 CONFAB_PJSUA_PYTHON at an interpreter that has them."
            )
        })
}

/// What a PJSIP phone does.
#[derive(Clone, Debug)]
pub struct PjSpec {
    pub name: String,
    pub user: String,
    pub password: String,
    /// The phone's own address (SIP and RTP bind here).
    pub bind: Ipv4Addr,
    /// Confab (registrar and outbound proxy); ignored with `direct`.
    pub server: SocketAddr,
    /// `udp` or `tcp`.
    pub transport: String,
    pub tone_hz: f64,
    /// Call this URI (a caller); `None`: answer the first call (a callee).
    pub dial: Option<String>,
    /// Seconds a caller talks before hanging up.
    pub talk_secs: f64,
    /// No registrar, no proxy: the harness's own peer-to-peer check.
    pub direct: bool,
}

/// A running PJSIP phone.
pub struct PjPhone {
    pub spec: PjSpec,
    pub proc: Proc,
    pub dir: PathBuf,
    pub sip_port: u16,
    pub rtp_port: u16,
    /// The WAV of what it received.
    pub recording: PathBuf,
    /// pjsip's own log (level 5: every message sent and received).
    pub pjlog: PathBuf,
}

impl PjPhone {
    pub fn start(spec: PjSpec, workdir: &Path) -> Self {
        let python = python();
        let dir = workdir.join(&spec.name);
        std::fs::create_dir_all(&dir).expect("mkdir pjsua dir");
        let sip_port = super::free_port_on(spec.bind, false);
        let rtp_port = loop {
            let p = super::free_port_on(spec.bind, true);
            if p & 1 == 0 {
                break p;
            }
        };
        let recording = dir.join("received.wav");
        let pjlog = dir.join("pjsip.log");
        let mut cmd = Command::new(python);
        cmd.arg("-u")
            .arg(super::scripts().join("pjsua_phone.py"))
            .args([
                "--user",
                &spec.user,
                "--password",
                &spec.password,
                "--domain",
                DOMAIN,
            ])
            .args([
                "--server",
                &spec.server.to_string(),
                "--transport",
                &spec.transport,
            ])
            .args(["--bind", &spec.bind.to_string()])
            .args([
                "--sip-port",
                &sip_port.to_string(),
                "--rtp-port",
                &rtp_port.to_string(),
            ])
            .args(["--tone", &spec.tone_hz.to_string()])
            .arg("--record")
            .arg(&recording)
            .args(["--talk", &spec.talk_secs.to_string(), "--lifetime", "60"])
            .arg("--log")
            .arg(&pjlog);
        if let Some(uri) = &spec.dial {
            cmd.args(["--dial", uri]);
        }
        if spec.direct {
            cmd.arg("--no-register");
        }
        let mut proc = Proc::spawn(&format!("pjsua {}", spec.name), cmd, &dir.join("phone.out"));
        proc.extra_logs = vec![pjlog.clone()];
        Self {
            spec,
            proc,
            dir,
            sip_port,
            rtp_port,
            recording,
            pjlog,
        }
    }

    /// The phone's SIP URI for direct calls.
    pub fn direct_uri(&self) -> String {
        format!(
            "sip:{}@{}:{}",
            self.spec.user, self.spec.bind, self.sip_port
        )
    }

    /// Every JSON event printed so far.
    pub fn events(&self) -> Vec<Value> {
        self.proc
            .output()
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn event(&self, name: &str) -> Option<Value> {
        self.events().into_iter().find(|e| e["event"] == name)
    }

    /// Waits for an event named `name`; panics with the phone's events when it does not come.
    pub fn wait_event(&mut self, name: &str, within: Duration) -> Value {
        if let Some(e) = super::poll(within, || self.event(name)) {
            return e;
        }
        panic!(
            "pjsua {}: no `{name}` event within {within:?} (running: {}); events:\n{}",
            self.spec.name,
            self.proc.is_running(),
            self.event_summary()
        );
    }

    pub fn event_summary(&self) -> String {
        self.events()
            .iter()
            .map(|e| format!("  {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits for the script to end by itself; returns whether it reported success.
    pub fn wait_done(&mut self, within: Duration) -> bool {
        let status = self.proc.wait(within);
        status.is_some_and(|s| s.success()) && self.event("done").is_some_and(|e| e["ok"] == true)
    }

    /// pjsip's log.
    pub fn pjsip_log(&self) -> String {
        std::fs::read(&self.pjlog)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether pjsip logged receiving a final response `code` to a request `method`
    /// (`RX … Response msg 200/BYE/cseq=…`).
    pub fn received_response(&self, code: u16, method: &str) -> bool {
        let needle = format!("Response msg {code}/{method}/");
        self.pjsip_log()
            .lines()
            .any(|l| l.contains("RX ") && l.contains(&needle))
    }

    /// Whether pjsip logged receiving a request `method`.
    pub fn received_request(&self, method: &str) -> bool {
        let needle = format!("Request msg {method}/");
        self.pjsip_log()
            .lines()
            .any(|l| l.contains("RX ") && l.contains(&needle))
    }

    /// The SDP bodies pjsip received in INVITEs and 200s (the text after `RX` lines).
    pub fn received_sdp(&self) -> Vec<String> {
        let log = self.pjsip_log();
        let mut out = Vec::new();
        for chunk in log.split("--end msg--") {
            let Some(rx) = chunk.find("RX ") else {
                continue;
            };
            let msg = &chunk[rx..];
            if let Some(v) = msg.find("\nv=0") {
                out.push(msg[v + 1..].to_string());
            }
        }
        out
    }
}

/// Confab's users need no extension for these tests: PJSIP calls them by name.
pub fn aor_uri(user: &str) -> String {
    format!("sip:{user}@{DOMAIN}")
}
