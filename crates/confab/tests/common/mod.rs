//! Shared harness for the end-to-end tests of the real `confab` binary.
//!
//! Each test starts its own server ([`Server::start`]): free loopback ports, a config file and data
//! directory in a temporary directory, users added through the CLI, `confab serve` as a child
//! process whose output goes to a log file (printed when the test fails), and readiness decided by
//! polling (an OPTIONS over UDP, a TCP connect per stream listener), bounded in time. The child is
//! killed on drop.
//!
//! Everything here talks to 127.0.0.0/8 only (TESTING.md). The SIP helpers are deliberately small
//! and independent of `confab-sip`: a test that parses the server's answers with the server's own
//! parser, or answers its challenges with the server's own digest code, could not catch a bug the
//! two share.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The SIP domain (and digest realm) every test server serves.
pub const DOMAIN: &str = "confab.test";
/// The loopback address the server binds and the clients use, unless a test says otherwise.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Path of the binary under test.
pub fn confab_bin() -> &'static str {
    env!("CARGO_BIN_EXE_confab")
}

/// Directory of the shared test data (`rfc4475/`, `rfc5118/`): `$CONFAB_TESTDATA`, else the
/// `shared/testdata` directory beside the repository.
pub fn testdata_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CONFAB_TESTDATA") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata")
}

/// Directory of this crate's test fixtures (SIPp scenarios, baresip templates).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Fails (never skips) when an external program is missing, naming the Debian package.
pub fn require_program(program: &str, debian_package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{program}` is not installed: this test needs it. Install the Debian package \
         `{debian_package}` (apt-get install {debian_package}) and add it to .ci/run."
    );
}

/// A string unique in this machine for the life of the test run (branches, Call-IDs, tags).
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}{:x}{:x}{n:x}", std::process::id(), nanos)
}

// ---------------------------------------------------------------------------------------------
// Ports

/// A port on 127.0.0.1 that was free for UDP (or TCP) a moment ago. Parallel tests run in separate
/// processes, so a collision is possible though unlikely; [`Server::start`] retries with fresh
/// ports when the server exits during startup.
pub fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind((LOOPBACK, 0))
            .and_then(|s| s.local_addr())
            .expect("bind udp :0")
            .port()
    } else {
        TcpListener::bind((LOOPBACK, 0))
            .and_then(|s| s.local_addr())
            .expect("bind tcp :0")
            .port()
    }
}

/// A port free for both UDP and TCP (SIP's habit of one port number for both).
pub fn free_port_both() -> u16 {
    for _ in 0..50 {
        let port = free_port(true);
        if TcpListener::bind((LOOPBACK, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1 after 50 tries");
}

// ---------------------------------------------------------------------------------------------
// Server

/// Which listeners a test server opens.
#[derive(Clone, Copy, Debug)]
pub struct Transports {
    pub udp: bool,
    pub tcp: bool,
    pub tls: bool,
    pub ws: bool,
    pub wss: bool,
}

impl Transports {
    pub const ALL: Self = Self {
        udp: true,
        tcp: true,
        tls: true,
        ws: true,
        wss: true,
    };
    pub const UDP_TCP: Self = Self {
        udp: true,
        tcp: true,
        tls: false,
        ws: false,
        wss: false,
    };
}

/// What a test wants from its server.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// Short name, used in the temp directory and failure output.
    pub name: String,
    pub transports: Transports,
    /// `(section, key, TOML value)` set in the config file, overriding the defaults below.
    pub settings: Vec<(String, String, String)>,
    /// `(name, password)` added with `confab user add` before the server starts.
    pub users: Vec<(String, String)>,
}

impl ServerSpec {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            transports: Transports::UDP_TCP,
            settings: Vec::new(),
            users: Vec::new(),
        }
    }

    pub fn transports(mut self, t: Transports) -> Self {
        self.transports = t;
        self
    }

    /// Sets `[section] key = value`; `value` is TOML (quote strings yourself).
    pub fn set(mut self, section: &str, key: &str, value: impl ToString) -> Self {
        self.settings
            .push((section.into(), key.into(), value.to_string()));
        self
    }

    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.into(), password.into()));
        self
    }
}

/// A running `confab serve`, killed on drop. Its log is printed when the test panics.
pub struct Server {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    pub ws: Option<SocketAddr>,
    pub wss: Option<SocketAddr>,
    name: String,
}

const STARTUP_DEADLINE: Duration = Duration::from_secs(15);
const CLI_DEADLINE: Duration = Duration::from_secs(30);

impl Server {
    /// Starts a server per `spec` and waits until every listener answers. Panics (with the log)
    /// when it does not come up within [`STARTUP_DEADLINE`] after three attempts.
    pub fn start(spec: ServerSpec) -> Self {
        let mut attempt = 1;
        loop {
            match Self::try_start(&spec) {
                Ok(server) => return server,
                // Another test took a port between our probe and the server's bind: try new ports.
                Err(failure) if attempt < 3 && failure.contains("in use") => {
                    eprintln!(
                        "[harness] {}: start attempt {attempt} lost a port race; retrying",
                        spec.name
                    );
                    attempt += 1;
                }
                Err(failure) => panic!("confab server `{}` did not start:\n{failure}", spec.name),
            }
        }
    }

    fn try_start(spec: &ServerSpec) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("confab-{}-", spec.name))
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let data_dir = dir.path().join("data");
        fs::create_dir_all(&data_dir).map_err(|e| format!("mkdir data: {e}"))?;
        let config_path = dir.path().join("confab.toml");
        let log_path = dir.path().join("server.log");

        let t = spec.transports;
        let addr = |on: bool, udp: bool| on.then(|| SocketAddr::from((LOOPBACK, free_port(udp))));
        let (udp, tcp) = if t.udp && t.tcp {
            let p = free_port_both();
            (
                Some(SocketAddr::from((LOOPBACK, p))),
                Some(SocketAddr::from((LOOPBACK, p))),
            )
        } else {
            (addr(t.udp, true), addr(t.tcp, false))
        };
        let (tls, ws, wss) = (addr(t.tls, false), addr(t.ws, false), addr(t.wss, false));

        let config = render_config(&data_dir, [udp, tcp, tls, ws, wss], &spec.settings);
        fs::write(&config_path, &config).map_err(|e| format!("write config: {e}"))?;

        let mut server = Self {
            child: None,
            dir,
            data_dir,
            config_path,
            log_path,
            udp,
            tcp,
            tls,
            ws,
            wss,
            name: spec.name.clone(),
        };
        for (user, password) in &spec.users {
            server.add_user(user, password);
        }

        let log = File::create(&server.log_path).map_err(|e| format!("create log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("dup log: {e}"))?;
        let child = Command::new(confab_bin())
            .arg("serve")
            .arg("--config")
            .arg(&server.config_path)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", confab_bin()))?;
        server.child = Some(child);

        match server.wait_ready() {
            Ok(()) => Ok(server),
            Err(why) => {
                let log = server.log();
                // Dropping kills the child; the temp directory goes with it.
                drop(server);
                Err(format!(
                    "{why}\n--- server log ---\n{log}\n--- config ---\n{config}"
                ))
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        let mut pending: Vec<(&str, SocketAddr)> = Vec::new();
        for (kind, a) in [
            ("tcp", self.tcp),
            ("tls", self.tls),
            ("ws", self.ws),
            ("wss", self.wss),
        ] {
            if let Some(a) = a {
                pending.push((kind, a));
            }
        }
        let probe = self.udp.map(|_| UdpClient::bind(LOOPBACK));
        let mut udp_ready = self.udp.is_none();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("server exited during startup with {status}"));
            }
            if !udp_ready {
                let (probe, to) = (probe.as_ref().unwrap(), self.udp.unwrap());
                let options = options_request(&probe.local_addr(), "UDP", &format!("sip:{DOMAIN}"));
                probe.send_to(options.as_bytes(), to);
                udp_ready = probe.recv(Duration::from_millis(200)).is_some();
            }
            pending.retain(|(_, a)| {
                TcpStream::connect_timeout(a, Duration::from_millis(200)).is_err()
            });
            if udp_ready && pending.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not ready within {STARTUP_DEADLINE:?}: udp ready={udp_ready}, listeners not accepting: {pending:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's combined stdout/stderr so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn udp(&self) -> SocketAddr {
        self.udp.expect("server has no UDP listener")
    }

    pub fn tcp(&self) -> SocketAddr {
        self.tcp.expect("server has no TCP listener")
    }

    /// The server's self-signed certificate (DATA_DIR/tls/cert.pem), waiting up to 10 s for it.
    pub fn cert_path(&self) -> PathBuf {
        let path = self.data_dir.join("tls/cert.pem");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !path.is_file() {
            assert!(
                Instant::now() < deadline,
                "{} never appeared",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        path
    }

    /// Runs `confab --config CONFIG ARGS…` to completion (bounded), returning its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(confab_bin());
        cmd.arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env("NO_COLOR", "1");
        run_bounded(cmd, CLI_DEADLINE)
    }

    /// `confab user add NAME --password PW`; panics with the CLI's output when it fails.
    pub fn add_user(&self, name: &str, password: &str) {
        let out = self.cli(&["user", "add", name, "--password", password]);
        assert!(
            out.status.success(),
            "`confab user add {name}` failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `confab registrations --json`, parsed.
    pub fn registrations(&self) -> serde_json::Value {
        let out = self.cli(&["registrations", "--json"]);
        assert!(
            out.status.success(),
            "`confab registrations --json` failed ({}):\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "`confab registrations --json` printed no JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Polls `confab registrations --json` (the server writes bindings behind, within ~1 s) until
    /// every user in `users` has a binding whose text contains each of `needles`; panics after
    /// `within` with the last listing.
    pub fn wait_registered(
        &self,
        users: &[&str],
        needles: &[&str],
        within: Duration,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let listing = self.registrations();
            let missing: Vec<&str> = users
                .iter()
                .copied()
                .filter(|u| !binding_matches(&listing, u, needles))
                .collect();
            if missing.is_empty() {
                return listing;
            }
            assert!(
                Instant::now() < deadline,
                "after {within:?}, `confab registrations --json` lacks bindings for {missing:?} \
                 (each containing {needles:?}):\n{}",
                serde_json::to_string_pretty(&listing).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the server with SIGTERM (a graceful shutdown) and returns its exit status; panics
    /// if it has not exited within 10 s.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server already stopped");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait for confab") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "confab did not stop within 10 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "===== confab server `{}` log ({}) =====",
                self.name,
                self.log_path.display()
            );
            eprintln!("{}", self.log());
            eprintln!("===== end of server log =====");
        }
    }
}

fn render_config(
    data_dir: &Path,
    addrs: [Option<SocketAddr>; 5],
    settings: &[(String, String, String)],
) -> String {
    let list = |a: Option<SocketAddr>| {
        a.map(|a| format!("[\"{a}\"]"))
            .unwrap_or_else(|| "[]".into())
    };
    let mut sections: Vec<(String, Vec<(String, String)>)> = vec![
        (
            "server".into(),
            vec![
                (
                    "data_dir".into(),
                    format!("{:?}", data_dir.display().to_string()),
                ),
                ("domain".into(), format!("\"{DOMAIN}\"")),
            ],
        ),
        (
            "sip".into(),
            vec![
                ("udp".into(), list(addrs[0])),
                ("tcp".into(), list(addrs[1])),
                ("tls".into(), list(addrs[2])),
                ("ws".into(), list(addrs[3])),
                ("wss".into(), list(addrs[4])),
                ("advertised_address".into(), "\"127.0.0.1\"".into()),
            ],
        ),
        (
            "registrar".into(),
            vec![
                ("min_expires".into(), "60".into()),
                ("max_expires".into(), "3600".into()),
                ("default_expires".into(), "3600".into()),
            ],
        ),
        (
            "auth".into(),
            vec![
                ("nonce_lifetime_secs".into(), "300".into()),
                ("max_failures".into(), "10".into()),
                ("failure_window_secs".into(), "60".into()),
                ("ban_secs".into(), "600".into()),
            ],
        ),
        (
            "log".into(),
            vec![("level".into(), "\"debug,sqlx=warn\"".into())],
        ),
    ];
    for (section, key, value) in settings {
        let entries = match sections.iter_mut().find(|(s, _)| s == section) {
            Some((_, entries)) => entries,
            None => {
                sections.push((section.clone(), Vec::new()));
                &mut sections.last_mut().unwrap().1
            }
        };
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.clone(),
            None => entries.push((key.clone(), value.clone())),
        }
    }
    let mut out = String::new();
    for (section, entries) in sections {
        let _ = writeln!(out, "[{section}]");
        for (k, v) in entries {
            let _ = writeln!(out, "{k} = {v}");
        }
        out.push('\n');
    }
    out
}

/// Whether some binding in a `registrations --json` listing belongs to `user` and mentions every
/// needle. The listing's exact schema is the CLI's business: a binding is any JSON object whose
/// serialisation contains `user@` (the AOR) or a `"user"` string value.
pub fn binding_matches(listing: &serde_json::Value, user: &str, needles: &[&str]) -> bool {
    fn objects<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
        match v {
            serde_json::Value::Array(items) => items.iter().for_each(|i| objects(i, out)),
            serde_json::Value::Object(map) => {
                out.push(v);
                map.values().for_each(|i| objects(i, out));
            }
            _ => {}
        }
    }
    let mut all = Vec::new();
    objects(listing, &mut all);
    let aor = format!("{user}@");
    let quoted = format!("\"{user}\"");
    all.iter().any(|o| {
        let text = o.to_string();
        let lower = text.to_ascii_lowercase();
        (text.contains(&aor) || text.contains(&quoted))
            && text.contains("contact")
            && needles
                .iter()
                .all(|n| lower.contains(&n.to_ascii_lowercase()))
    })
}

/// Runs a command with a deadline, killing it when the deadline passes.
pub fn run_bounded(mut cmd: Command, deadline: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let status = child.wait().expect("wait");
            panic!("{cmd:?} did not finish within {deadline:?} (killed, {status})");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

// ---------------------------------------------------------------------------------------------
// SIP messages

/// A SIP message as read off the wire, parsed just enough for assertions.
#[derive(Clone, Debug)]
pub struct SipMsg {
    pub start_line: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub raw: Vec<u8>,
}

/// Expands a compact header name (RFC 3261 §7.3.3 and extensions) to its full, lower-case name.
pub fn canonical_header_name(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let full = match lower.as_str() {
        "i" => "call-id",
        "m" => "contact",
        "e" => "content-encoding",
        "l" => "content-length",
        "c" => "content-type",
        "f" => "from",
        "s" => "subject",
        "k" => "supported",
        "t" => "to",
        "v" => "via",
        "u" => "allow-events",
        "o" => "event",
        "r" => "refer-to",
        "b" => "referred-by",
        "x" => "session-expires",
        "y" => "identity",
        other => other,
    };
    full.to_string()
}

impl SipMsg {
    /// Parses one message from the start of `buf` (leading CRLF keep-alives skipped). Returns the
    /// message and the bytes consumed, or `None` when `buf` does not yet hold a whole message.
    /// A missing Content-Length means "the rest of the buffer" when `datagram`, else 0.
    pub fn parse(buf: &[u8], datagram: bool) -> Option<(Self, usize)> {
        let mut start = 0;
        while buf[start..].starts_with(b"\r\n") {
            start += 2;
        }
        let head_end = find(&buf[start..], b"\r\n\r\n")? + start;
        let head = String::from_utf8_lossy(&buf[start..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let start_line = lines.next()?.to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            let (name, value) = line.split_once(':')?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let body_start = head_end + 4;
        let cl = headers
            .iter()
            .find(|(n, _)| canonical_header_name(n) == "content-length")
            .and_then(|(_, v)| v.trim().parse::<usize>().ok());
        let body_len = match cl {
            Some(n) => n,
            None if datagram => buf.len() - body_start,
            None => 0,
        };
        if buf.len() < body_start + body_len {
            return None;
        }
        let end = body_start + body_len;
        let msg = Self {
            start_line,
            headers,
            body: buf[body_start..end].to_vec(),
            raw: buf[start..end].to_vec(),
        };
        Some((msg, end))
    }

    pub fn is_response(&self) -> bool {
        self.start_line.starts_with("SIP/")
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        if !self.is_response() {
            return None;
        }
        self.start_line.split(' ').nth(1)?.parse().ok()
    }

    /// The reason phrase of a response.
    pub fn reason(&self) -> &str {
        self.start_line.splitn(3, ' ').nth(2).unwrap_or("")
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        (!self.is_response()).then(|| self.start_line.split(' ').next().unwrap_or(""))
    }

    /// The first value of a header (compact forms understood).
    pub fn header(&self, name: &str) -> Option<&str> {
        let want = canonical_header_name(name);
        self.headers
            .iter()
            .find(|(n, _)| canonical_header_name(n) == want)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order (comma-separated values are not split).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let want = canonical_header_name(name);
        self.headers
            .iter()
            .filter(|(n, _)| canonical_header_name(n) == want)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The set of header names present (full, lower-case).
    pub fn header_names(&self) -> BTreeSet<String> {
        self.headers
            .iter()
            .map(|(n, _)| canonical_header_name(n))
            .collect()
    }

    /// The method named in CSeq.
    pub fn cseq_method(&self) -> Option<&str> {
        self.header("cseq")?.split_whitespace().nth(1)
    }

    pub fn cseq_number(&self) -> Option<u32> {
        self.header("cseq")?.split_whitespace().next()?.parse().ok()
    }

    /// The `tag` parameter of the To header.
    pub fn to_tag(&self) -> Option<String> {
        param(self.header("to")?, "tag")
    }

    /// The parsed digest challenge of the first WWW-Authenticate header.
    pub fn challenge(&self) -> Option<Challenge> {
        self.header("www-authenticate").and_then(Challenge::parse)
    }

    /// Every digest challenge offered (WWW-Authenticate, then Proxy-Authenticate).
    pub fn challenges(&self) -> Vec<Challenge> {
        self.header_all("www-authenticate")
            .into_iter()
            .chain(self.header_all("proxy-authenticate"))
            .filter_map(Challenge::parse)
            .collect()
    }

    /// One line for assertion messages: start line and headers.
    pub fn summary(&self) -> String {
        let mut s = self.start_line.clone();
        for (n, v) in &self.headers {
            let _ = write!(s, "\n  {n}: {v}");
        }
        s
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A `;name=value` parameter of a header value (outside `<…>`), unquoted.
pub fn param(value: &str, name: &str) -> Option<String> {
    let outside = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    outside.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Parses `k=v, k="v", …` auth parameters.
pub fn auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = r.char_indices();
            let mut end = r.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            rest = &r[end.min(r.len())..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        out.push((key, value));
        rest = rest.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Digest (RFC 7616 / RFC 8760), written independently of the server's implementation.

/// A digest challenge from WWW-Authenticate or Proxy-Authenticate.
#[derive(Clone, Debug)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(char::is_whitespace)?;
        Some(Self {
            scheme: scheme.to_string(),
            params: auth_params(rest),
        })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn realm(&self) -> &str {
        self.get("realm").unwrap_or("")
    }

    pub fn nonce(&self) -> &str {
        self.get("nonce").unwrap_or("")
    }

    pub fn algorithm(&self) -> &str {
        self.get("algorithm").unwrap_or("MD5")
    }

    pub fn stale(&self) -> bool {
        self.get("stale")
            .is_some_and(|s| s.eq_ignore_ascii_case("true"))
    }

    /// `qop=auth` when offered (the only qop these tests use).
    pub fn qop_auth(&self) -> bool {
        self.get("qop")
            .is_some_and(|q| q.split(',').any(|o| o.trim().eq_ignore_ascii_case("auth")))
    }

    /// The parameter names, sorted (for comparing challenges' shapes).
    pub fn param_names(&self) -> BTreeSet<String> {
        self.params.iter().map(|(k, _)| k.clone()).collect()
    }
}

fn hex_digest(algorithm: &str, data: &str) -> String {
    use md5::Digest as _;
    let bytes: Vec<u8> = match algorithm.to_ascii_uppercase().trim_end_matches("-SESS") {
        "SHA-256" => sha2::Sha256::digest(data.as_bytes()).to_vec(),
        "SHA-512-256" => sha2::Sha512_256::digest(data.as_bytes()).to_vec(),
        _ => md5::Md5::digest(data.as_bytes()).to_vec(),
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The credentials answering `ch` for `method uri`, as an Authorization header value.
pub fn authorization(
    ch: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let alg = ch.algorithm().to_string();
    let mut ha1 = hex_digest(&alg, &format!("{user}:{}:{password}", ch.realm()));
    if alg.to_ascii_uppercase().ends_with("-SESS") {
        ha1 = hex_digest(&alg, &format!("{ha1}:{}:{cnonce}", ch.nonce()));
    }
    let ha2 = hex_digest(&alg, &format!("{method}:{uri}"));
    let nc = format!("{nc:08x}");
    let mut v = format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", algorithm={alg}",
        ch.realm(),
        ch.nonce()
    );
    let response = if ch.qop_auth() {
        let _ = write!(v, ", qop=auth, nc={nc}, cnonce=\"{cnonce}\"");
        hex_digest(
            &alg,
            &format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", ch.nonce()),
        )
    } else {
        hex_digest(&alg, &format!("{ha1}:{}:{ha2}", ch.nonce()))
    };
    let _ = write!(v, ", response=\"{response}\"");
    if let Some(opaque) = ch.get("opaque") {
        let _ = write!(v, ", opaque=\"{opaque}\"");
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Requests

/// A SIP client's identity for building requests over one transport.
#[derive(Clone, Debug)]
pub struct Ua {
    pub user: String,
    pub password: String,
    /// Transport token for Via (`UDP`, `TCP`, `TLS`, `WS`, `WSS`).
    pub transport: String,
    /// `host:port` for Via and Contact.
    pub sent_by: String,
    pub call_id: String,
    pub from_tag: String,
    pub cseq: u32,
    /// Authorization nonce count, per nonce.
    pub nc: u32,
}

impl Ua {
    pub fn new(user: &str, password: &str, transport: &str, sent_by: impl ToString) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
            transport: transport.into(),
            sent_by: sent_by.to_string(),
            call_id: unique("cid-"),
            from_tag: unique("ft"),
            cseq: 0,
            nc: 0,
        }
    }

    pub fn aor(&self) -> String {
        format!("sip:{}@{DOMAIN}", self.user)
    }

    /// The Contact URI this UA registers.
    pub fn contact_uri(&self) -> String {
        let mut t = self.transport.to_ascii_lowercase();
        if t == "wss" {
            // RFC 7118 §5: the URI transport parameter is `ws` for both WS and WSS.
            t = "ws".into();
        }
        if t == "udp" {
            format!("sip:{}@{}", self.user, self.sent_by)
        } else {
            format!("sip:{}@{};transport={t}", self.user, self.sent_by)
        }
    }

    /// A REGISTER for this UA's AOR, with a fresh branch and the next CSeq.
    pub fn register(&mut self, authorization: Option<&str>, expires: Option<u32>) -> String {
        self.cseq += 1;
        let mut extra = String::new();
        if let Some(a) = authorization {
            let _ = write!(extra, "Authorization: {a}\r\n");
        }
        if let Some(e) = expires {
            let _ = write!(extra, "Expires: {e}\r\n");
        }
        format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
             Via: SIP/2.0/{t} {sb};branch={br};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <{aor}>;tag={ft}\r\n\
             To: <{aor}>\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <{contact}>\r\n\
             {extra}\
             User-Agent: confab-e2e\r\n\
             Content-Length: 0\r\n\r\n",
            t = self.transport,
            sb = self.sent_by,
            br = unique("z9hG4bK"),
            aor = self.aor(),
            ft = self.from_tag,
            cid = self.call_id,
            cseq = self.cseq,
            contact = self.contact_uri(),
        )
    }

    /// The Authorization value answering `ch` for a REGISTER, with the next nonce count.
    pub fn answer(&mut self, ch: &Challenge) -> String {
        self.nc += 1;
        authorization(
            ch,
            &self.user,
            &self.password,
            "REGISTER",
            &format!("sip:{DOMAIN}"),
            self.nc,
            &unique("cn"),
        )
    }
}

/// An OPTIONS request to `uri` from `sent_by`.
pub fn options_request(sent_by: &SocketAddr, transport: &str, uri: &str) -> String {
    format!(
        "OPTIONS {uri} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {sent_by};branch={br};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{DOMAIN}>;tag={ft}\r\n\
         To: <{uri}>\r\n\
         Call-ID: {cid}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\r\n",
        br = unique("z9hG4bK"),
        ft = unique("ft"),
        cid = unique("opt-"),
    )
}

// ---------------------------------------------------------------------------------------------
// Transports

/// Default wait for an answer the test expects.
pub const ANSWER_WAIT: Duration = Duration::from_secs(5);
/// How long silence must last to count as "no answer".
pub const SILENCE_WAIT: Duration = Duration::from_millis(1500);

/// A UDP socket on loopback talking to one server.
pub struct UdpClient {
    pub sock: UdpSocket,
}

impl UdpClient {
    /// Binds `ip:0` (any address in 127/8 is local on Linux).
    pub fn bind(ip: Ipv4Addr) -> Self {
        let sock = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("bind udp {ip}:0: {e}"));
        Self { sock }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    pub fn send_to(&self, bytes: &[u8], to: SocketAddr) {
        self.sock
            .send_to(bytes, to)
            .unwrap_or_else(|e| panic!("send {} bytes to {to}: {e}", bytes.len()));
    }

    /// The next datagram parsed as SIP (unparseable datagrams are returned as an error string in
    /// the start line so that tests see them), or `None` after `wait`.
    pub fn recv(&self, wait: Duration) -> Option<SipMsg> {
        let mut buf = vec![0u8; 65_536];
        self.sock
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .unwrap();
        match self.sock.recv_from(&mut buf) {
            Ok((n, _)) => Some(
                SipMsg::parse(&buf[..n], true)
                    .map(|(m, _)| m)
                    .unwrap_or_else(|| SipMsg {
                        start_line: format!(
                            "<unparseable datagram: {:?}>",
                            String::from_utf8_lossy(&buf[..n])
                        ),
                        headers: Vec::new(),
                        body: Vec::new(),
                        raw: buf[..n].to_vec(),
                    }),
            ),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("udp recv: {e}"),
        }
    }

    /// Sends a request and returns its final response (provisional ones, and answers to other
    /// requests, skipped), or `None`. A non-2xx final answer to an INVITE is ACKed.
    pub fn request(&self, bytes: &str, to: SocketAddr, wait: Duration) -> Option<SipMsg> {
        self.send_to(bytes.as_bytes(), to);
        let resp = final_response_to(bytes, |w| self.recv(w), wait)?;
        if let Some(ack) = ack_for(bytes, &resp) {
            self.send_to(ack.as_bytes(), to);
        }
        Some(resp)
    }
}

/// Reads until a final response (status ≥ 200) or `wait` passes.
pub fn final_response(
    recv: impl FnMut(Duration) -> Option<SipMsg>,
    wait: Duration,
) -> Option<SipMsg> {
    final_response_to("", recv, wait)
}

/// Reads until a final response to `request` (same Call-ID and CSeq, when the request has them)
/// or `wait` passes. Anything that is not a response is returned as is.
pub fn final_response_to(
    request: &str,
    mut recv: impl FnMut(Duration) -> Option<SipMsg>,
    wait: Duration,
) -> Option<SipMsg> {
    let req = SipMsg::parse(request.as_bytes(), true).map(|(m, _)| m);
    let call_id = req
        .as_ref()
        .and_then(|r| r.header("call-id").map(str::to_string));
    let cseq = req.as_ref().and_then(|r| {
        r.header("cseq")
            .map(|c| c.split_whitespace().collect::<Vec<_>>().join(" "))
    });
    let end = Instant::now() + wait;
    loop {
        let left = end.checked_duration_since(Instant::now())?;
        let msg = recv(left)?;
        if !msg.is_response() {
            return Some(msg);
        }
        let same_call = call_id
            .as_deref()
            .is_none_or(|c| msg.header("call-id") == Some(c));
        let same_cseq = cseq.as_deref().is_none_or(|c| {
            msg.header("cseq")
                .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
                .as_deref()
                == Some(c)
        });
        if same_call && same_cseq && msg.status().is_some_and(|s| s >= 200) {
            return Some(msg);
        }
    }
}

/// The ACK for a non-2xx final response to an INVITE (RFC 3261 §17.1.1.3), or `None`.
pub fn ack_for(request: &str, response: &SipMsg) -> Option<String> {
    let (req, _) = SipMsg::parse(request.as_bytes(), true)?;
    if req.method() != Some("INVITE") || response.status().is_none_or(|s| s < 300) {
        return None;
    }
    let ruri = req.start_line.split(' ').nth(1)?;
    let cseq = req.cseq_number()?;
    let mut ack = format!("ACK {ruri} SIP/2.0\r\n");
    ack.push_str(&format!("Via: {}\r\n", req.header("via")?));
    for route in req.header_all("route") {
        ack.push_str(&format!("Route: {route}\r\n"));
    }
    ack.push_str(&format!(
        "Max-Forwards: 70\r\nFrom: {}\r\n",
        req.header("from")?
    ));
    ack.push_str(&format!("To: {}\r\n", response.header("to")?));
    ack.push_str(&format!(
        "Call-ID: {}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
        req.header("call-id")?
    ));
    Some(ack)
}

/// A TCP connection to the server, with a read buffer for stream framing.
pub struct TcpClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Set once the server closed the connection.
    pub closed: bool,
}

impl TcpClient {
    pub fn connect(to: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&to, ANSWER_WAIT)
            .unwrap_or_else(|e| panic!("connect tcp {to}: {e}"));
        stream.set_nodelay(true).ok();
        Self {
            stream,
            buf: Vec::new(),
            closed: false,
        }
    }

    /// Connects from a given local IP (e.g. 127.0.0.2).
    pub fn connect_from(ip: IpAddr, to: SocketAddr) -> std::io::Result<Self> {
        let sock = match ip {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        sock.bind(SocketAddr::new(ip, 0))?;
        // Drive the connect on a tiny runtime, then hand back a blocking std stream.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let stream = rt.block_on(async {
            tokio::time::timeout(ANSWER_WAIT, sock.connect(to))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })?
        })?;
        let stream = stream.into_std()?;
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true).ok();
        Ok(Self {
            stream,
            buf: Vec::new(),
            closed: false,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("tcp send: {e}"));
    }

    /// Like [`send`](Self::send) but tolerates a connection the server already closed.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next message on the stream, or `None` after `wait` or when the server closes.
    pub fn recv(&mut self, wait: Duration) -> Option<SipMsg> {
        let end = Instant::now() + wait;
        loop {
            if let Some((msg, used)) = SipMsg::parse(&self.buf, false) {
                self.buf.drain(..used);
                return Some(msg);
            }
            if self.closed {
                return None;
            }
            let left = end.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 16_384];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(_) => self.closed = true, // reset by peer counts as closed
            }
        }
    }

    /// Bytes received that do not (yet) form a whole message.
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }

    pub fn request(&mut self, bytes: &str, wait: Duration) -> Option<SipMsg> {
        self.send(bytes.as_bytes());
        let resp = final_response_to(bytes, |w| self.recv(w), wait)?;
        if let Some(ack) = ack_for(bytes, &resp) {
            let _ = self.try_send(ack.as_bytes());
        }
        Some(resp)
    }
}

/// Asserts the server still answers an OPTIONS over UDP and (when it listens) over TCP.
pub fn assert_still_serving(server: &Server) {
    let udp = UdpClient::bind(LOOPBACK);
    let req = options_request(&udp.local_addr(), "UDP", &format!("sip:{DOMAIN}"));
    let resp = udp.request(&req, server.udp(), ANSWER_WAIT);
    assert!(resp.is_some(), "server no longer answers OPTIONS over UDP");
    if let Some(tcp) = server.tcp {
        let mut c = TcpClient::connect(tcp);
        let req = options_request(&c.local_addr(), "TCP", &format!("sip:{DOMAIN}"));
        let resp = c.request(&req, ANSWER_WAIT);
        assert!(resp.is_some(), "server no longer answers OPTIONS over TCP");
    }
}

/// REGISTER → 401 → REGISTER with credentials over UDP; returns (401, final response).
pub fn register_udp(udp: &UdpClient, to: SocketAddr, ua: &mut Ua) -> (SipMsg, SipMsg) {
    let first = udp
        .request(&ua.register(None, Some(3600)), to, ANSWER_WAIT)
        .expect("no answer to the first REGISTER");
    assert_eq!(
        first.status(),
        Some(401),
        "first REGISTER: expected 401, got:\n{}",
        first.summary()
    );
    let ch = first
        .challenge()
        .unwrap_or_else(|| panic!("401 without a digest challenge:\n{}", first.summary()));
    let auth = ua.answer(&ch);
    let second = udp
        .request(&ua.register(Some(&auth), Some(3600)), to, ANSWER_WAIT)
        .expect("no answer to the authenticated REGISTER");
    (first, second)
}

/// Reads a PEM file's first certificate as DER (enough for pinning the server's cert).
pub fn pem_first_cert_der(path: &Path) -> Vec<u8> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = text
        .find(begin)
        .unwrap_or_else(|| panic!("{} holds no certificate", path.display()))
        + begin.len();
    let end = start
        + text[start..]
            .find("-----END CERTIFICATE-----")
            .expect("unterminated PEM");
    base64_decode(&text[start..end])
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let Some(v) = val(c) else { continue };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
