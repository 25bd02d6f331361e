//! Harness for the end-to-end call tests (`calls_*.rs`, `nat_call.rs`): real phones — baresip,
//! PJSIP (pjsua2 from Python), Linphone (linphone-daemon), SIPp — placing calls through the real
//! `confab` binary, and the checks on what they saw and heard.
//!
//! Test files declare `mod common; mod support;`: the server itself is started with
//! [`crate::common::Server`]. Every process started here is killed on drop, every wait is bounded,
//! and its log is printed when the test panics. Everything talks to 127.0.0.0/8 only, or to
//! addresses inside network namespaces the NAT test makes itself (TESTING.md).
#![allow(dead_code, unreachable_pub)]

pub mod audio;
pub mod baresip;
pub mod linphone;
pub mod netns;
pub mod pjsua;
pub mod proc;
pub mod sipp;
pub mod trace;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Directory of the call tests' fixtures (SIPp scenarios).
pub fn fixtures() -> PathBuf {
    crate::common::fixtures_dir().join("calls")
}

/// Directory of the helper scripts (the PJSIP phone).
pub fn scripts() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support")
}

/// A port on `ip` free for both UDP and TCP a moment ago, with `port + 1` free too when `pair`
/// (phones put RTCP or TLS on the next port). Loopback addresses other than 127.0.0.1 are local on
/// Linux, so each phone can have an address of its own.
pub fn free_port_on(ip: Ipv4Addr, pair: bool) -> u16 {
    for _ in 0..100 {
        let Ok(udp) = UdpSocket::bind((ip, 0)) else {
            continue;
        };
        let port = udp.local_addr().expect("local addr").port();
        if port >= u16::MAX - 1 || TcpListener::bind((ip, port)).is_err() {
            continue;
        }
        if pair
            && (UdpSocket::bind((ip, port + 1)).is_err()
                || TcpListener::bind((ip, port + 1)).is_err())
        {
            continue;
        }
        return port;
    }
    panic!("no free port on {ip} after 100 tries");
}

/// Polls `f` every 50 ms until it returns `Some`, or `None` after `within`.
pub fn poll<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server spec for call tests: the RTP relay bound to 127.0.0.1 only (TESTING.md) and given a
/// window of 200 ports of its own in 30000–49999, so that servers of tests running in parallel
/// rarely contend for relay ports.
pub fn call_server(name: &str) -> crate::common::ServerSpec {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let n = N.fetch_add(1, Ordering::Relaxed);
    let window = (u64::from(std::process::id()) * 31 + n * 7 + nanos / 1000) % 100;
    let port_min = 30_000 + window * 200;
    crate::common::ServerSpec::new(name)
        .set("media", "bind", "\"127.0.0.1\"")
        .set("media", "port_min", port_min)
        .set("media", "port_max", port_min + 199)
}

/// The server's SIP address for a transport name (`udp`, `tcp`).
pub fn server_addr(server: &crate::common::Server, transport: &str) -> SocketAddr {
    match transport {
        "tcp" => server.tcp(),
        "udp" => server.udp(),
        other => panic!("no such transport in these tests: {other}"),
    }
}

/// The last `max` characters of `text` (logs printed on failure stay readable).
pub fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
