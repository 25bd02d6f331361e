//! Drives `Endpoint::handle_message` with SIPp-shaped authenticated calls, sans IO, in simulated
//! time, so the protocol core's cost per call can be profiled without sockets — the flow of
//! `bench/calls.sh`:
//!
//! ```text
//! caller                      Confab                       callee (registered)
//! INVITE (SDP) ------------->
//!          <----------------- 407
//! ACK ---------------------->
//! INVITE + credentials ----->
//!          <----------------- 100
//!                             INVITE (relay SDP) -------->
//!                                       <---------------- 180
//!          <----------------- 180
//!                                       <---------------- 200 (SDP)
//!          <----------------- 200 (relay SDP)
//! ACK ---------------------->
//!                             ACK ----------------------->
//! (hold)
//! BYE ---------------------->
//!                             BYE ----------------------->
//!                                       <---------------- 200
//!          <----------------- 200
//! ```
//!
//! ```sh
//! cargo build --release -p confab-core --example call_load
//! valgrind --tool=callgrind --toggle-collect='confab_core::endpoint::Endpoint::handle_message' \
//!     --toggle-collect='confab_core::endpoint::Endpoint::handle_timeout' \
//!     target/release/examples/call_load 2000
//! ```
//!
//! Arguments: calls (default 2,000), callers (200). One call starts every 3.3 ms (300 calls/s),
//! each is held for 1 s, and timers run every 20 ms, as the server's driver does. Media goes
//! to `FakeMediaRelay`, so relay sockets are not part of the count. The two phones' side
//! (building requests and responses) is outside the toggled functions.

use std::collections::VecDeque;
use std::net::SocketAddr;
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
const SERVER: &str = "127.0.0.1:5060";
const CALLER: &str = "127.0.0.1:5061";
const CALLEE: &str = "127.0.0.1:5062";
const SDP: &str = "v=0\r\no=u 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// The value of the first header `name` (full form, as Confab writes it) of a message.
fn header<'a>(text: &'a str, name: &str) -> &'a str {
    text.split("\r\n")
        .find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// Every header line `name: ...` of a message, in order (for Via and Record-Route).
fn header_lines(text: &str, name: &str) -> String {
    let mut out = String::new();
    for line in text.split("\r\n").take_while(|l| !l.is_empty()) {
        if let Some((n, _)) = line.split_once(':') {
            if n.eq_ignore_ascii_case(name) {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
    }
    out
}

fn param<'a>(header: &'a str, name: &str) -> &'a str {
    let start = header.find(&format!("{name}=\"")).expect("param") + name.len() + 2;
    let len = header[start..].find('"').expect("quote");
    &header[start..start + len]
}

fn with_body(head: String, body: &str) -> String {
    if body.is_empty() {
        format!("{head}Content-Length: 0\r\n\r\n")
    } else {
        format!(
            "{head}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

/// The caller's INVITE; `auth` is the Proxy-Authorization value of the second one.
fn invite(call: usize, user: usize, cseq: u32, auth: Option<&str>) -> String {
    let mut head = format!(
        "INVITE sip:callee1@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-{call}-{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:u{user}@{DOMAIN}>;tag={call}SIPpTag00\r\n\
         To: <sip:callee1@{DOMAIN}>\r\n\
         Call-ID: {call}-caller@127.0.0.1\r\n\
         CSeq: {cseq} INVITE\r\n\
         Contact: <sip:u{user}@{CALLER}>\r\n\
         User-Agent: confab-bench\r\n"
    );
    if let Some(a) = auth {
        head.push_str("Proxy-Authorization: ");
        head.push_str(a);
        head.push_str("\r\n");
    }
    with_body(head, SDP)
}

/// An in-dialog request of the caller (ACK of the 407 uses `branch` of the INVITE).
fn caller_request(
    method: &str,
    call: usize,
    user: usize,
    cseq: u32,
    branch: &str,
    to_tag: &str,
) -> String {
    let target = if method == "ACK" && cseq == 1 {
        format!("sip:callee1@{DOMAIN}")
    } else {
        format!("sip:{SERVER}") // Confab's Contact in the 200
    };
    let to_tag = if to_tag.is_empty() {
        String::new()
    } else {
        format!(";tag={to_tag}")
    };
    with_body(
        format!(
            "{method} {target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {CALLER};branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:u{user}@{DOMAIN}>;tag={call}SIPpTag00\r\n\
             To: <sip:callee1@{DOMAIN}>{to_tag}\r\n\
             Call-ID: {call}-caller@127.0.0.1\r\n\
             CSeq: {cseq} {method}\r\n\
             User-Agent: confab-bench\r\n"
        ),
        "",
    )
}

/// The callee's response to a request Confab sent it.
fn callee_response(request: &str, status: &str, to_tag: Option<&str>, body: &str) -> String {
    let to = header(request, "To");
    let to = match to_tag {
        Some(tag) if !to.contains(";tag=") => format!("{to};tag={tag}"),
        _ => to.to_owned(),
    };
    with_body(
        format!(
            "SIP/2.0 {status}\r\n{}{}From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n\
             Contact: <sip:callee1@{CALLEE}>\r\n",
            header_lines(request, "Via"),
            header_lines(request, "Record-Route"),
            header(request, "From"),
            header(request, "Call-ID"),
            header(request, "CSeq"),
        ),
        body,
    )
}

struct Net {
    caller: Source,
    callee: Source,
    out: Vec<Transmit>,
}

impl Net {
    /// Hands a message to the endpoint and returns what it sent, split by destination.
    fn deliver(
        &mut self,
        ep: &Endpoint,
        now: Instant,
        from_callee: bool,
        text: &str,
    ) -> (Vec<String>, Vec<String>) {
        let source = if from_callee {
            &mut self.callee
        } else {
            &mut self.caller
        };
        source.received_at = now;
        ep.handle_message(now, 1_700_000_000, text.as_bytes(), source, &mut self.out);
        self.split()
    }

    fn split(&mut self) -> (Vec<String>, Vec<String>) {
        let callee: SocketAddr = CALLEE.parse().unwrap();
        let (mut to_caller, mut to_callee) = (Vec::new(), Vec::new());
        for t in self.out.drain(..) {
            let text = String::from_utf8(t.bytes.to_vec()).expect("utf-8");
            if t.destination.addr == callee {
                to_callee.push(text);
            } else {
                to_caller.push(text);
            }
        }
        (to_caller, to_callee)
    }
}

fn status(text: &str) -> &str {
    &text[8..11]
}

fn main() {
    let total = arg(1, 2_000);
    let callers = arg(2, 200).max(1);

    let dir = MemoryDirectory::new(DOMAIN);
    for i in 1..=callers {
        dir.insert(&format!("u{i}"), None, &format!("pw{i}"));
    }
    dir.insert("callee1", None, "pwc");
    let mut config = CoreConfig::new(DOMAIN);
    config.local_ips = vec!["127.0.0.1".parse().unwrap()];
    config.digest_algorithms = vec![Algorithm::Md5];
    config.max_auth_failures = u32::MAX;
    config.rng_seed = Some(1);
    // All calls come from one SIPp address, as in the benchmark.
    config.calls.max_ringing_per_source = u32::MAX;
    config.calls.invites_per_second_per_source = u32::MAX;
    config.calls.invite_burst_per_source = u32::MAX;
    config.advertised = vec![(TransportKind::Udp, SERVER.parse().unwrap())];
    let t0 = Instant::now();
    let ep = Endpoint::new(
        config,
        Arc::new(dir),
        Arc::new(FakeMediaRelay::new("127.0.0.1".parse().unwrap())),
        t0,
    );
    let source = |peer: &str| Source {
        transport: TransportKind::Udp,
        peer: peer.parse().unwrap(),
        local: SERVER.parse().unwrap(),
        connection: None,
        received_at: t0,
    };
    let mut net = Net {
        caller: source(CALLER),
        callee: source(CALLEE),
        out: Vec::new(),
    };
    let mut now = t0;
    register_callee(&ep, &mut net, now);

    let step = Duration::from_micros(3_333);
    let hold = Duration::from_secs(1);
    // Answered calls waiting for their BYE: (when, call, user, caller's to-tag).
    let mut held: VecDeque<(Instant, usize, usize, String)> = VecDeque::new();
    let mut next_timer = now;
    let mut answered = 0usize;
    let mut ended = 0usize;
    let mut call = 0usize;
    while call < total || !held.is_empty() {
        now += step;
        if call < total {
            if establish(&ep, &mut net, now, call, call % callers + 1, &mut held) {
                answered += 1;
            }
            call += 1;
        }
        while held.front().is_some_and(|(at, ..)| *at + hold <= now) {
            let (_, c, user, tag) = held.pop_front().unwrap();
            if hang_up(&ep, &mut net, now, c, user, &tag) {
                ended += 1;
            }
        }
        if now >= next_timer {
            ep.handle_timeout(now, &mut net.out);
            net.out.clear();
            next_timer = now + Duration::from_millis(20);
        }
    }
    // Let every transaction and call finish (Timer D/J/K, 32 s), as the benchmark's tail does.
    let end = now + Duration::from_secs(40);
    while now < end {
        now += Duration::from_millis(20);
        ep.handle_timeout(now, &mut net.out);
        net.out.clear();
    }
    let stats = ep.stats();
    println!(
        "calls={total} answered={answered} ended={ended} transactions_left={}",
        stats.transactions
    );
    assert_eq!(answered, total, "every call must be answered");
    assert_eq!(ended, total, "every call must end with 200 to the BYE");
}

fn register_callee(ep: &Endpoint, net: &mut Net, now: Instant) {
    let register = |cseq: u32, auth: Option<&str>| {
        let mut head = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {CALLEE};branch=z9hG4bK-reg-{cseq}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:callee1@{DOMAIN}>;tag=reg\r\n\
             To: <sip:callee1@{DOMAIN}>\r\n\
             Call-ID: reg-callee@127.0.0.1\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:callee1@{CALLEE}>\r\n\
             Expires: 3600\r\n"
        );
        if let Some(a) = auth {
            head.push_str(&format!("Authorization: {a}\r\n"));
        }
        with_body(head, "")
    };
    let (_, mut to_callee) = net.deliver(ep, now, true, &register(1, None));
    let challenge = to_callee.pop().expect("401");
    let nonce = param(header(&challenge, "WWW-Authenticate"), "nonce").to_owned();
    let auth = client_authorization(
        Algorithm::Md5,
        "callee1",
        "pwc",
        DOMAIN,
        &nonce,
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        Some("0a4f113b"),
        1,
        None,
    );
    let (_, mut answer) = net.deliver(ep, now, true, &register(2, Some(&auth)));
    let answer = answer.pop().expect("200");
    assert_eq!(status(&answer), "200", "{answer}");
}

/// INVITE → 407 → ACK → INVITE → 100 / INVITE to callee → 180 → 200 → ACK. True if answered.
fn establish(
    ep: &Endpoint,
    net: &mut Net,
    now: Instant,
    call: usize,
    user: usize,
    held: &mut VecDeque<(Instant, usize, usize, String)>,
) -> bool {
    let (mut to_caller, _) = net.deliver(ep, now, false, &invite(call, user, 1, None));
    let challenge = to_caller.pop().expect("407");
    assert_eq!(status(&challenge), "407", "{challenge}");
    let to_tag = header(&challenge, "To")
        .split(";tag=")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let ack = caller_request("ACK", call, user, 1, &format!("z9hG4bK-{call}-1"), &to_tag);
    net.deliver(ep, now, false, &ack);

    let nonce = param(header(&challenge, "Proxy-Authenticate"), "nonce").to_owned();
    let auth = client_authorization(
        Algorithm::Md5,
        &format!("u{user}"),
        &format!("pw{user}"),
        DOMAIN,
        &nonce,
        "INVITE",
        &format!("sip:callee1@{DOMAIN}"),
        Some("0a4f113b"),
        1,
        None,
    );
    let (_, mut to_callee) = net.deliver(ep, now, false, &invite(call, user, 2, Some(&auth)));
    let Some(forwarded) = to_callee.pop() else {
        return false;
    };
    let callee_tag = format!("{call}SIPpTag01");
    let ringing = callee_response(&forwarded, "180 Ringing", Some(&callee_tag), "");
    net.deliver(ep, now, true, &ringing);
    let ok = callee_response(&forwarded, "200 OK", Some(&callee_tag), SDP);
    let (to_caller, acked) = net.deliver(ep, now, true, &ok);
    let Some(answer) = to_caller.into_iter().find(|m| m.starts_with("SIP/2.0 200")) else {
        return false;
    };
    let caller_to_tag = header(&answer, "To")
        .split(";tag=")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let ack = caller_request(
        "ACK",
        call,
        user,
        2,
        &format!("z9hG4bK-{call}-2a"),
        &caller_to_tag,
    );
    let (_, to_callee) = net.deliver(ep, now, false, &ack);
    // Confab may ACK the callee's 200 at once or when the caller's ACK comes.
    assert!(
        acked
            .iter()
            .chain(&to_callee)
            .any(|m| m.starts_with("ACK ")),
        "the callee's 200 must be acknowledged"
    );
    held.push_back((now, call, user, caller_to_tag));
    true
}

/// BYE → BYE to callee → 200 → (200). True if the caller got its 200 and the callee its BYE.
fn hang_up(
    ep: &Endpoint,
    net: &mut Net,
    now: Instant,
    call: usize,
    user: usize,
    tag: &str,
) -> bool {
    let bye = caller_request("BYE", call, user, 3, &format!("z9hG4bK-{call}-3"), tag);
    let (mut to_caller, mut to_callee) = net.deliver(ep, now, false, &bye);
    let Some(forwarded) = to_callee.pop() else {
        return false;
    };
    let ok = callee_response(&forwarded, "200 OK", None, "");
    // Confab may answer the caller's BYE at once or when the callee's 200 comes.
    let (later, _) = net.deliver(ep, now, true, &ok);
    to_caller.extend(later);
    to_caller.iter().any(|m| m.starts_with("SIP/2.0 200"))
}
