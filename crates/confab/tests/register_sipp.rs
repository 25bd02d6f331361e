//! SIPp (Debian `sip-tester`) registers users with digest authentication over UDP and TCP:
//! REGISTER → 401 → REGISTER with credentials → 200, one "call" per user, from the scenario in
//! `fixtures/sipp/register_digest.xml` (which runs unchanged against Kamailio). The test asserts
//! SIPp's exit code and its count of successful calls, then that `confab registrations --json`
//! lists every user's binding.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const USERS: usize = 20;

fn users(prefix: &str) -> Vec<(String, String)> {
    (1..=USERS)
        .map(|i| (format!("{prefix}{i}"), format!("pw-{prefix}-{i}-secret")))
        .collect()
}

/// Reads a column of the last row of SIPp's statistics file (`-trace_stat -stf`).
fn stat(path: &Path, column: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = lines.next_back()?.split(';').collect();
    let idx = header.iter().position(|h| h.trim() == column)?;
    last.get(idx)?.trim().parse().ok()
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|_| "<absent>".into())
}

fn sipp_registers(transport_flag: &str, contact_transport: &str, prefix: &str) {
    let sipp = require_program("sipp", "sip-tester");
    let users = users(prefix);
    // SIPp 3.6 answers only the first WWW-Authenticate and knows only MD5 ("createAuthHeader:
    // authentication must use MD5"), so MD5 is offered first, as Confab's config advises.
    let mut spec = ServerSpec::new(&format!("sipp-{prefix}")).set(
        "auth",
        "algorithms",
        r#"["MD5", "SHA-256"]"#,
    );
    for (u, p) in &users {
        spec = spec.user(u, p);
    }
    let server = Server::start(spec);
    let work = server.dir.path().join("sipp");
    std::fs::create_dir_all(&work).unwrap();

    // Injection file: the whole [authentication …] keyword is one field (TESTING.md).
    let mut csv = String::from("SEQUENTIAL\n");
    for (u, p) in &users {
        csv.push_str(&format!(
            "{u};[authentication username={u} password={p}];{DOMAIN};\n"
        ));
    }
    let csv_path = work.join("users.csv");
    std::fs::write(&csv_path, csv).unwrap();

    let target = if transport_flag == "t1" {
        server.tcp()
    } else {
        server.udp()
    };
    let (stats, errors, messages, screen) = (
        work.join("stats.csv"),
        work.join("errors.log"),
        work.join("messages.log"),
        work.join("screen.log"),
    );
    let mut cmd = Command::new(&sipp);
    cmd.current_dir(&work)
        .arg(target.to_string())
        .args(["-sf"])
        .arg(fixtures_dir().join("sipp/register_digest.xml"))
        .arg("-inf")
        .arg(&csv_path)
        .args(["-i", "127.0.0.1", "-t", transport_flag])
        // SIPp binds 5060 unless told otherwise; parallel tests need their own ports.
        .args(["-p", &free_port_both().to_string()])
        .args(["-m", &USERS.to_string(), "-r", "50", "-l", "10"])
        .args([
            "-recv_timeout",
            "10000",
            "-timeout",
            "60s",
            "-timeout_error",
            "-nostdin",
        ])
        .args(["-trace_stat", "-stf"])
        .arg(&stats)
        .args(["-trace_err", "-error_file"])
        .arg(&errors)
        .args(["-trace_msg", "-message_file"])
        .arg(&messages)
        .args(["-trace_screen", "-screen_file"])
        .arg(&screen);
    let out = run_bounded(cmd, Duration::from_secs(90));

    let successful = stat(&stats, "SuccessfulCall(C)");
    let failed = stat(&stats, "FailedCall(C)");
    let diagnostics = || {
        format!(
            "sipp exit: {}\nstdout:\n{}\nstderr:\n{}\n--- screen ---\n{}\n--- errors ---\n{}\n--- messages (head) ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            read_lossy(&screen),
            read_lossy(&errors),
            read_lossy(&messages).chars().take(6000).collect::<String>()
        )
    };
    assert_eq!(
        out.status.code(),
        Some(0),
        "SIPp reported failures\n{}",
        diagnostics()
    );
    assert_eq!(
        successful,
        Some(USERS as u64),
        "SIPp successful calls\n{}",
        diagnostics()
    );
    assert_eq!(failed, Some(0), "SIPp failed calls\n{}", diagnostics());

    let names: Vec<&str> = users.iter().map(|(u, _)| u.as_str()).collect();
    // `registrations --json` lists each binding with the transport its REGISTER came over.
    let transport = format!("\"transport\":\"{contact_transport}\"");
    server.wait_registered(&names, &[&transport, "127.0.0.1"], Duration::from_secs(5));
}

#[test]
fn sipp_registers_users_with_digest_over_udp() {
    sipp_registers("u1", "udp", "sippudp");
}

#[test]
fn sipp_registers_users_with_digest_over_tcp() {
    sipp_registers("t1", "tcp", "sipptcp");
}
