//! baresip (Debian `baresip-core`), a complete SIP user agent, registers with Confab over UDP and
//! over TLS with digest authentication, through Confab as its outbound proxy (so its REGISTER
//! carries `Route: <sip:127.0.0.1:PORT;transport=…;lr>` naming Confab itself). Success is read from
//! `confab registrations --json` and from baresip's own "200 OK"; when baresip stops (SIGTERM) it
//! unregisters, and the binding must go.

mod common;

use common::*;
use std::fs;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A baresip process, terminated on drop; its output is printed when the test panics.
struct Baresip {
    child: Option<Child>,
    log: std::path::PathBuf,
    /// baresip's UDP/TCP port; TLS is on the next one.
    sip_port: u16,
}

impl Baresip {
    fn output(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// SIGTERM (baresip unregisters and exits), bounded; SIGKILL when it lingers.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "===== baresip output ({}) =====\n{}\n===== end =====",
                self.log.display(),
                self.output()
            );
        }
    }
}

/// Two consecutive free ports (baresip puts TLS on sip_listen's port + 1).
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let p = free_port_both();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two consecutive free ports on 127.0.0.1");
}

fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (k, v) in values {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!out.contains("{{"), "unfilled placeholder in:\n{out}");
    out
}

fn start_baresip(server: &Server, user: &str, password: &str, transport: &str) -> Baresip {
    let baresip = require_program("baresip", "baresip-core");
    let conf_dir = server.dir.path().join(format!("baresip-{transport}"));
    fs::create_dir_all(&conf_dir).unwrap();
    let proxy = match transport {
        "tls" => server.tls.expect("server has no TLS listener"),
        "tcp" => server.tcp(),
        _ => server.udp(),
    };
    let sip_port = free_port_pair();
    let config = fill(
        &fs::read_to_string(fixtures_dir().join("baresip/config.template")).unwrap(),
        &[
            ("SIP_PORT", sip_port.to_string()),
            ("CAFILE", server.cert_path().display().to_string()),
            (
                "MODULE_PATH",
                std::env::var("CONFAB_BARESIP_MODULES")
                    .unwrap_or("/usr/lib/baresip/modules".into()),
            ),
        ],
    );
    let accounts = fill(
        &fs::read_to_string(fixtures_dir().join("baresip/accounts.template")).unwrap(),
        &[
            ("USER", user.into()),
            ("DOMAIN", DOMAIN.into()),
            ("TRANSPORT", transport.into()),
            ("PASSWORD", password.into()),
            ("PROXY", proxy.to_string()),
        ],
    );
    fs::write(conf_dir.join("config"), config).unwrap();
    fs::write(conf_dir.join("accounts"), accounts).unwrap();

    let log = conf_dir.join("baresip.log");
    let out = fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    // -4: IPv4 only; -s: SIP trace into the log; -t: a hard upper bound on its life.
    let child = Command::new(baresip)
        .arg("-4")
        .arg("-s")
        .arg("-f")
        .arg(&conf_dir)
        .args(["-t", "120"])
        .env("HOME", &conf_dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn baresip");
    Baresip {
        child: Some(child),
        log,
        sip_port,
    }
}

/// baresip 1.0 (libre 1.1) gives up ("Register: Function not implemented", ENOSYS) when any
/// WWW-Authenticate in a 401 names an algorithm other than MD5 — even with MD5 offered first — so
/// by default these tests offer MD5 only (`auth.algorithms = ["MD5"]`); `default_algorithms`
/// keeps Confab's default (SHA-256, then MD5).
fn baresip_registers(transport: &str, default_algorithms: bool) {
    let user = format!("bs{transport}");
    let password = format!("secret-{transport}-42");
    let mut spec = ServerSpec::new(&format!("baresip-{transport}"))
        .transports(Transports::ALL)
        .user(&user, &password);
    if !default_algorithms {
        spec = spec.set("auth", "algorithms", r#"["MD5"]"#);
    }
    let server = Server::start(spec);
    let mut phone = start_baresip(&server, &user, &password, transport);
    // The Contact names baresip's own listener for the transport it registered over.
    let needles: Vec<String> = if transport == "tls" {
        vec![
            format!("127.0.0.1:{}", phone.sip_port + 1),
            "transport=tls".into(),
            "\"transport\":\"tls\"".into(),
        ]
    } else {
        vec![
            format!("127.0.0.1:{}", phone.sip_port),
            "\"transport\":\"udp\"".into(),
        ]
    };
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();

    let listing = server.wait_registered(&[&user], &needles, Duration::from_secs(20));
    eprintln!("registered: {listing}");

    // A graceful stop flushes baresip's output and unregisters (Expires: 0).
    phone.stop();
    let output = phone.output();
    assert!(
        output.contains("200 OK"),
        "baresip never logged a 200 OK for its REGISTER:\n{output}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listing = server.registrations();
        if !binding_matches(&listing, &user, &needles) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "binding still listed 10 s after baresip unregistered:\n{listing}\n--- baresip ---\n{output}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn baresip_registers_over_udp() {
    baresip_registers("udp", false);
}

#[test]
fn baresip_registers_over_tls() {
    baresip_registers("tls", false);
}

/// Debian's baresip (1.0) against Confab's default `auth.algorithms` (MD5 only, because this
/// phone gives up on any SHA-256 challenge): registers with no configuration at all.
#[test]
fn baresip_registers_with_the_default_digest_algorithms() {
    baresip_registers("udp", true);
}
