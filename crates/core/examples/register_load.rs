//! Drives `Endpoint::handle_message` with SIPp-shaped authenticated registrations (REGISTER →
//! 401 → REGISTER with Authorization → 200), sans IO, in simulated time, so the protocol core's
//! cost per REGISTER can be profiled without sockets:
//!
//! ```sh
//! cargo build --release -p confab-core --example register_load
//! valgrind --tool=callgrind --toggle-collect='*Endpoint*handle_*' \
//!     target/release/examples/register_load 20000 1000 1
//! ```
//!
//! Arguments: registrations (default 20,000), users (1,000), contacts per user (1). The client
//! side (building requests, computing digests) is outside the toggled functions. Time advances
//! 200 µs per registration (5,000/s) and timers run every 20 ms, as the server's driver does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_core::call::FakeMediaRelay;
use confab_core::{CoreConfig, Endpoint, MemoryDirectory};
use confab_sip::auth::{client_authorization, Algorithm};
use confab_sip::{Source, Transmit, TransportKind};

/// The server's allocator, so instruction counts include the same allocation costs.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const DOMAIN: &str = "bench.confab";

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn register(call: usize, user: usize, contact: &str, cseq: u32, auth: Option<&str>) -> String {
    let mut s = format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{call}-{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:u{user}@{DOMAIN}>;tag=4242SIPpTag00{call}\r\n\
         To: <sip:u{user}@{DOMAIN}>\r\n\
         Call-ID: {call}-4242@127.0.0.1\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{contact}@127.0.0.1:5061>\r\n\
         Expires: 3600\r\n"
    );
    if let Some(a) = auth {
        s.push_str("Authorization: ");
        s.push_str(a);
        s.push_str("\r\n");
    }
    s.push_str("User-Agent: confab-bench\r\nContent-Length: 0\r\n\r\n");
    s
}

fn param<'a>(header: &'a str, name: &str) -> &'a str {
    let start = header.find(&format!("{name}=\"")).expect("param") + name.len() + 2;
    let len = header[start..].find('"').expect("quote");
    &header[start..start + len]
}

fn main() {
    let total = arg(1, 20_000);
    let users = arg(2, 1_000).max(1);
    let per_user = arg(3, 1).max(1);

    let dir = MemoryDirectory::new(DOMAIN);
    for i in 1..=users {
        dir.insert(&format!("u{i}"), None, &format!("pw{i}"));
    }
    let mut config = CoreConfig::new(DOMAIN);
    config.local_ips = vec!["127.0.0.1".parse().unwrap()];
    config.digest_algorithms = vec![Algorithm::Md5];
    config.max_auth_failures = u32::MAX;
    config.registrar.max_contacts_per_aor = per_user + 10;
    config.registrar.max_expires = 7200;
    config.rng_seed = Some(1);
    let t0 = Instant::now();
    let ep = Endpoint::new(
        config,
        Arc::new(dir),
        Arc::new(FakeMediaRelay::new("127.0.0.1".parse().unwrap())),
        t0,
    );
    let mut source = Source {
        transport: TransportKind::Udp,
        peer: "127.0.0.1:5061".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
        connection: None,
        received_at: t0,
    };
    let mut now = t0;
    let mut next_timer = t0;
    let mut out: Vec<Transmit> = Vec::new();
    let mut ok = 0usize;
    let unix = 1_700_000_000;
    for call in 0..total {
        let user = call % users + 1;
        let contact = if per_user > 1 {
            format!("u{user}-c{}", (call / users) % per_user + 1)
        } else {
            format!("u{user}")
        };
        now += Duration::from_micros(200);
        source.received_at = now;
        let first = register(call, user, &contact, 1, None);
        ep.handle_message(now, unix, first.as_bytes(), &source, &mut out);
        let challenge = out.pop().expect("an answer");
        out.clear();
        let text = std::str::from_utf8(&challenge.bytes).unwrap();
        assert!(text.starts_with("SIP/2.0 401"), "{text}");
        let nonce = param(text, "nonce").to_owned();
        let auth = client_authorization(
            Algorithm::Md5,
            &format!("u{user}"),
            &format!("pw{user}"),
            DOMAIN,
            &nonce,
            "REGISTER",
            &format!("sip:{DOMAIN}"),
            Some("0a4f113b"),
            1,
            None,
        );
        let second = register(call, user, &contact, 2, Some(&auth));
        ep.handle_message(now, unix, second.as_bytes(), &source, &mut out);
        let answer = out.pop().expect("an answer");
        out.clear();
        if answer.bytes.starts_with(b"SIP/2.0 200") {
            ok += 1;
        } else if ok == 0 {
            panic!("{}", String::from_utf8_lossy(&answer.bytes));
        }
        if now >= next_timer {
            ep.handle_timeout(now, &mut out);
            out.clear();
            next_timer = now + Duration::from_millis(20);
        }
    }
    let stats = ep.stats();
    println!(
        "registrations={total} ok={ok} bindings={} transactions={} registrar_bytes={}",
        ep.registrar().count(),
        stats.transactions,
        ep.registrar().memory_estimate()
    );
}
