//! SIPp (Debian `sip-tester`) runs of the call scenarios in `fixtures/calls/sipp/`, and the
//! messages it logged (`-trace_msg`), with their times.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::proc::Proc;
use crate::common::{register_udp, require_program, SipMsg, Ua, DOMAIN};

/// One SIPp process (caller or callee), killed on drop.
pub struct Sipp {
    pub name: String,
    pub proc: Proc,
    pub dir: PathBuf,
    /// Its SIP port on 127.0.0.1.
    pub port: u16,
}

/// What a SIPp run is.
pub struct SippSpec<'a> {
    pub name: &'a str,
    /// Scenario file name in `fixtures/calls/sipp/`.
    pub scenario: &'a str,
    /// Where requests go (Confab); a UAS still needs one.
    pub target: SocketAddr,
    /// Local port; `None`: a free one.
    pub port: Option<u16>,
    /// Injection file contents (first line `SEQUENTIAL`), if any.
    pub csv: Option<String>,
    /// `-key NAME VALUE` pairs (`[NAME]` in the scenario).
    pub keys: Vec<(&'a str, String)>,
    /// SIPp stops itself after this long (`-timeout`).
    pub timeout: Duration,
}

impl Sipp {
    /// Starts SIPp for one call (`-m 1`) over UDP on 127.0.0.1.
    pub fn start(spec: &SippSpec<'_>, workdir: &Path) -> Self {
        let sipp = require_program("sipp", "sip-tester");
        let dir = workdir.join(spec.name);
        fs::create_dir_all(&dir).expect("mkdir sipp dir");
        let port = spec
            .port
            .unwrap_or_else(|| super::free_port_on(Ipv4Addr::LOCALHOST, true));
        let mut cmd = Command::new(sipp);
        cmd.current_dir(&dir)
            .arg(spec.target.to_string())
            .arg("-sf")
            .arg(super::fixtures().join("sipp").join(spec.scenario))
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-t", "u1"])
            // RTP "media" port: SIPp binds it even when no RTP is played; keep it off 6000.
            .args([
                "-mp",
                &super::free_port_on(Ipv4Addr::LOCALHOST, true).to_string(),
            ])
            .args(["-m", "1", "-l", "1", "-nostdin"])
            .args(["-timeout", &format!("{}s", spec.timeout.as_secs().max(1))])
            .arg("-timeout_error")
            .args(["-recv_timeout", &format!("{}", spec.timeout.as_millis())])
            .args(["-trace_msg", "-message_file"])
            .arg(dir.join("messages.log"))
            .args(["-trace_err", "-error_file"])
            .arg(dir.join("errors.log"))
            .args(["-trace_screen", "-screen_file"])
            .arg(dir.join("screen.log"))
            .args(["-s", "service"]);
        if let Some(csv) = &spec.csv {
            let path = dir.join("users.csv");
            fs::write(&path, csv).expect("write csv");
            cmd.arg("-inf").arg(path);
        }
        for (k, v) in &spec.keys {
            cmd.args(["-key", k, v]);
        }
        let mut proc = Proc::spawn(&format!("sipp {}", spec.name), cmd, &dir.join("sipp.out"));
        proc.extra_logs = vec![
            dir.join("errors.log"),
            dir.join("screen.log"),
            dir.join("messages.log"),
        ];
        Self {
            name: spec.name.into(),
            proc,
            dir,
            port,
        }
    }

    /// Waits for SIPp to finish; returns its exit code (0: the scenario passed).
    pub fn finish(&mut self, within: Duration) -> Option<i32> {
        self.proc.wait(within).and_then(|s| s.code())
    }

    /// Asserts SIPp finished within `within` with exit code 0.
    pub fn assert_passed(&mut self, within: Duration) {
        let code = self.finish(within);
        assert_eq!(
            code,
            Some(0),
            "SIPp {} did not pass its scenario (exit {code:?}; 1 = a call failed, 99 = killed \
             or timed out)",
            self.name
        );
    }

    /// Every message SIPp logged, in order.
    pub fn messages(&self) -> Vec<Logged> {
        parse_message_log(&fs::read_to_string(self.dir.join("messages.log")).unwrap_or_default())
    }

    /// Messages it received.
    pub fn received(&self) -> Vec<Logged> {
        self.messages().into_iter().filter(|m| !m.sent).collect()
    }

    /// Start lines of everything logged, for failure messages.
    pub fn summary(&self) -> String {
        self.messages()
            .iter()
            .map(|m| {
                format!(
                    "{:>10.3} {} {} ({})",
                    m.time,
                    if m.sent { "sent" } else { "recv" },
                    m.msg.start_line,
                    m.msg.header("cseq").unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A message from SIPp's `-trace_msg` file.
#[derive(Clone, Debug)]
pub struct Logged {
    /// Seconds since midnight, as SIPp logged it.
    pub time: f64,
    pub sent: bool,
    pub msg: SipMsg,
}

/// Parses SIPp's message log: entries open with a line of dashes, a date and a time of day
/// (`HH:MM:SS.micros`), then `UDP message sent (N bytes):` or `UDP message received [N] bytes :`,
/// a blank line, and the message.
pub fn parse_message_log(text: &str) -> Vec<Logged> {
    let mut out = Vec::new();
    let mut blocks = text.split("\n----------------------------------------------- ");
    // The first block may start with the separator itself.
    let first = blocks.next().unwrap_or("");
    let first = first.trim_start_matches("----------------------------------------------- ");
    for block in std::iter::once(first).chain(blocks) {
        let mut lines = block.splitn(3, '\n');
        let stamp = lines.next().unwrap_or("");
        let what = lines.next().unwrap_or("");
        let body = lines.next().unwrap_or("");
        let Some(time) = stamp.split_whitespace().last().and_then(time_of_day) else {
            continue;
        };
        let sent = what.contains("sent");
        if !sent && !what.contains("received") {
            continue;
        }
        let body = body.trim_start_matches(['\r', '\n']);
        let normalized = normalize_crlf(body.trim_end());
        if let Some((msg, _)) = SipMsg::parse(normalized.as_bytes(), true) {
            out.push(Logged { time, sent, msg });
        }
    }
    out
}

/// `HH:MM:SS.frac` as seconds since midnight (a test never runs across midnight... and if it
/// did, only a timing assertion would notice).
fn time_of_day(t: &str) -> Option<f64> {
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn normalize_crlf(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 64);
    for line in s.split('\n') {
        out.push_str(line.trim_end_matches('\r'));
        out.push_str("\r\n");
    }
    if !out.contains("\r\n\r\n") {
        out.push_str("\r\n");
    }
    out
}

/// The injection file line for a caller: `user;[authentication …];domain;callee`.
pub fn caller_csv(user: &str, password: &str, callee: &str) -> String {
    format!(
        "SEQUENTIAL\n{user};[authentication username={user} password={password}];{DOMAIN};{callee};\n"
    )
}

/// Registers `user` with Confab from 127.0.0.1:`port` over UDP, then frees the port, so that a
/// SIPp UAS started on that port afterwards receives the calls (SIPp's UAS mode cannot send the
/// REGISTER itself: a message with a new Call-ID would start a new "call" in a UAC scenario).
pub fn register_port(server: SocketAddr, user: &str, password: &str, port: u16) {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, port))
        .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
    let client = crate::common::UdpClient { sock };
    let mut ua = Ua::new(user, password, "UDP", format!("127.0.0.1:{port}"));
    let (_, ok) = register_udp(&client, server, &mut ua);
    assert_eq!(
        ok.status(),
        Some(200),
        "REGISTER of {user} from port {port}:\n{}",
        ok.summary()
    );
}
