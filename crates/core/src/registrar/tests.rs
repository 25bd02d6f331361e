//! Unit tests of the location map internals: expiry wake-ups, change queue bounds, memory.
//! Message-level behaviour is tested in `crates/core/tests/registrar.rs`.

use std::net::SocketAddr;

use confab_sip::TransportKind;

use super::*;

fn source(now: Instant, connection: Option<u64>) -> Source {
    Source {
        transport: if connection.is_some() {
            TransportKind::Tcp
        } else {
            TransportKind::Udp
        },
        peer: "203.0.113.7:40000".parse::<SocketAddr>().unwrap(),
        local: "192.0.2.1:5060".parse::<SocketAddr>().unwrap(),
        connection: connection.map(ConnectionId),
        received_at: now,
    }
}

/// A binding as persistence would hand it back, expiring `secs` after `unix`.
fn stored(aor: &str, n: usize, unix: u64, secs: u64, now: Instant) -> Binding {
    Binding {
        aor: Arc::from(aor),
        contact: format!(
            "sip:{aor}@198.51.100.{}:{};transport=udp",
            n % 250,
            5060 + n % 1000
        )
        .into_boxed_str(),
        expires_at: now,
        expires_unix: unix + secs,
        q_milli: 1000,
        call_id: format!("{n:08x}-5d1c-4f6a-9e43-0123456789ab").into_boxed_str(),
        cseq: 1,
        instance: Some(format!("<urn:uuid:{n:08x}-7dec-11d0-a765-00a0c91e6bf6>").into_boxed_str()),
        reg_id: None,
        source: source(now, None),
        user_agent: Some(Box::from("Linphone-Desktop/5.2.6 (belle-sip/5.2.94)")),
    }
}

fn registrar() -> Registrar {
    Registrar::new(RegistrarConfig {
        domain: "example.com".into(),
        ..RegistrarConfig::default()
    })
}

const UNIX: u64 = 1_700_000_000;

#[test]
fn wakeups_fire_in_order_and_spurious_calls_do_nothing() {
    let t0 = Instant::now();
    let reg = registrar();
    reg.restore(
        t0,
        UNIX,
        vec![
            stored("alice", 1, UNIX, 100, t0),
            stored("bob", 2, UNIX, 50, t0),
            stored("carol", 3, UNIX, 200, t0),
        ],
    );
    assert_eq!(reg.count(), 3);
    assert_eq!(reg.poll_timeout(), Some(t0 + Duration::from_secs(50)));

    // Too early: nothing happens.
    reg.handle_timeout(t0 + Duration::from_secs(49));
    assert_eq!(reg.count(), 3);

    reg.handle_timeout(t0 + Duration::from_secs(50));
    assert_eq!(reg.count(), 2);
    assert!(reg.lookup("bob", t0 + Duration::from_secs(50)).is_empty());
    assert_eq!(reg.poll_timeout(), Some(t0 + Duration::from_secs(100)));

    reg.handle_timeout(t0 + Duration::from_secs(250));
    assert_eq!(reg.count(), 0);
    assert_eq!(reg.poll_timeout(), None);

    let mut changes = Vec::new();
    reg.drain_changes(&mut changes);
    let expired: Vec<&str> = changes
        .iter()
        .filter_map(|c| match c {
            LocationChange::Removed {
                binding,
                reason: RemovalReason::Expired,
            } => Some(&*binding.aor),
            _ => None,
        })
        .collect();
    assert_eq!(expired.len(), 3);
    assert!(expired.contains(&"alice") && expired.contains(&"bob") && expired.contains(&"carol"));
}

#[test]
fn restore_drops_expired_and_outbound_flows_and_forgets_connections() {
    let t0 = Instant::now();
    let reg = registrar();
    let live = stored("alice", 1, UNIX, 300, t0);
    let gone = stored("alice", 2, UNIX - 400, 300, t0);
    let mut flow = stored("alice", 3, UNIX, 300, t0);
    flow.reg_id = Some(1);
    flow.source = source(t0, Some(9));
    let mut tcp = stored("bob", 4, UNIX, 300, t0);
    tcp.source = source(t0, Some(10));
    reg.restore(t0, UNIX, vec![live, gone, flow, tcp]);
    assert_eq!(reg.count(), 2);
    let bob = reg.lookup("bob", t0);
    assert_eq!(bob[0].source.connection, None);
    assert_eq!(
        bob[0].source.peer,
        "203.0.113.7:40000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(bob[0].expires_at, t0 + Duration::from_secs(300));
    let mut changes = Vec::new();
    reg.drain_changes(&mut changes);
    let reasons: Vec<RemovalReason> = changes
        .iter()
        .filter_map(|c| match c {
            LocationChange::Removed { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 2);
    assert!(reasons.contains(&RemovalReason::Expired));
    assert!(reasons.contains(&RemovalReason::FlowClosed));
}

#[test]
fn restore_caps_remaining_time_at_max_expires() {
    let t0 = Instant::now();
    let reg = registrar();
    reg.restore(t0, UNIX, vec![stored("alice", 1, UNIX, 1_000_000, t0)]);
    assert_eq!(
        reg.lookup("alice", t0)[0].expires_at,
        t0 + Duration::from_secs(3600)
    );
}

#[test]
fn undrained_changes_are_bounded_and_ask_for_a_resync() {
    let t0 = Instant::now();
    let reg = registrar();
    // Every restored-but-expired binding queues one change; one AoR fills one shard's queue
    // twice over, and a few other AoRs queue ordinary changes.
    let n = MAX_PENDING_CHANGES_PER_SHARD * 2;
    let expired = (0..n)
        .map(|i| stored("alice", i, UNIX - 1000, 10, t0))
        .collect();
    reg.restore(t0, UNIX, expired);
    let others = (0..8)
        .map(|i| stored(&format!("u{i}"), i, UNIX - 1000, 10, t0))
        .collect();
    reg.restore(t0, UNIX, others);
    let mut changes = Vec::new();
    reg.drain_changes(&mut changes);
    assert_eq!(changes.first(), Some(&LocationChange::Resync));
    assert_eq!(
        changes
            .iter()
            .filter(|c| **c == LocationChange::Resync)
            .count(),
        1
    );
    assert!(changes.len() <= 1 + 8, "{} changes kept", changes.len());
    // Drained: the next batch is ordinary again.
    changes.clear();
    reg.restore(t0, UNIX, vec![stored("x", 1, UNIX - 1000, 10, t0)]);
    reg.drain_changes(&mut changes);
    assert_eq!(changes.len(), 1);
    assert!(matches!(changes[0], LocationChange::Removed { .. }));
}

#[test]
fn wakeup_heap_stays_bounded_under_ever_earlier_refreshes() {
    let t0 = Instant::now();
    let reg = registrar();
    // Each restore of the same binding with an earlier expiry arms an earlier wake-up and leaves
    // a dead one behind; compaction must keep the heap near one entry per AoR.
    for secs in (100..3000).rev() {
        let mut b = stored("alice", 1, UNIX, secs, t0);
        b.expires_unix = UNIX + secs;
        reg.shard("alice").lock().aors.clear();
        reg.shard("alice").lock().bindings = 0;
        reg.restore(t0, UNIX, vec![b]);
    }
    let len = reg.shard("alice").lock().wakeups.len();
    // One AoR: compaction triggers above 2 * 1 + 64 entries.
    assert!(len <= 2 + 64 + 1, "heap grew to {len}");
    assert_eq!(reg.poll_timeout(), Some(t0 + Duration::from_secs(100)));
}

/// The memory target: under 1 KiB per registered contact at 100,000 contacts (one per AoR,
/// realistic Linphone-like strings). Prints the estimate.
#[test]
fn memory_estimate_for_100k_bindings_is_bounded() {
    let t0 = Instant::now();
    let reg = registrar();
    let n = 100_000;
    let bindings: Vec<Binding> = (0..n)
        .map(|i| stored(&format!("user{i:06}"), i, UNIX, 600 + (i as u64 % 3000), t0))
        .collect();
    reg.restore(t0, UNIX, bindings);
    assert_eq!(reg.count(), n);
    let mut changes = Vec::new();
    reg.drain_changes(&mut changes);
    assert!(changes.is_empty());
    let total = reg.memory_estimate();
    let per = total / n;
    println!(
        "location map: {total} bytes for {n} bindings = {per} bytes/binding (size_of::<Binding>() = {})",
        std::mem::size_of::<Binding>()
    );
    assert!(per < 1024, "{per} bytes per binding");
    // Sanity: the estimate counts at least the bindings themselves.
    assert!(per > std::mem::size_of::<Binding>());
}

#[test]
fn binding_key_and_gruu() {
    let t0 = Instant::now();
    let b = stored("alice", 1, UNIX, 10, t0);
    assert_eq!(
        b.key(),
        BindingKey::Instance {
            instance: "<urn:uuid:00000001-7dec-11d0-a765-00a0c91e6bf6>",
            reg_id: None
        }
    );
    assert_eq!(
        b.gr(),
        Some("urn:uuid:00000001-7dec-11d0-a765-00a0c91e6bf6")
    );
    assert_eq!(
        b.pub_gruu("example.com").as_deref(),
        Some("sip:alice@example.com;gr=urn:uuid:00000001-7dec-11d0-a765-00a0c91e6bf6")
    );
    let mut plain = b.clone();
    plain.instance = None;
    assert_eq!(plain.key(), BindingKey::Contact(&plain.contact));
    assert_eq!(plain.pub_gruu("example.com"), None);
}

#[test]
fn remaining_seconds_round_up() {
    let t0 = Instant::now();
    let mut b = stored("alice", 1, UNIX, 10, t0);
    b.expires_at = t0 + Duration::from_millis(1500);
    assert_eq!(b.remaining_secs(t0), 2);
    assert_eq!(b.remaining_secs(t0 + Duration::from_secs(5)), 0);
}

#[test]
fn user_agent_truncation_respects_char_boundaries() {
    let long = "é".repeat(100); // 200 bytes
    let t = truncate(&long);
    assert!(t.len() <= MAX_USER_AGENT_LEN);
    assert!(t.chars().all(|c| c == 'é'));
}

fn register_req(call_id: &str, cseq: u32, contact: &str) -> Request {
    let text = format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.7:40000;branch=z9hG4bK{cseq}\r\n\
         From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\nContact: {contact}\r\nContent-Length: 0\r\n\r\n"
    );
    match confab_sip::Message::parse(text.as_bytes(), false) {
        Ok(confab_sip::Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn frequent_refreshes_are_reported_for_persistence_only_when_they_matter() {
    let t0 = Instant::now();
    let reg = registrar();
    let who = Authenticated::new("alice", None);
    let local = |_: &Host| true;
    let mut cseq = 0;
    let mut send = |secs: u64, call_id: &str, contact: &str| {
        cseq += 1;
        let now = t0 + Duration::from_secs(secs);
        let req = register_req(call_id, cseq, contact);
        let resp = reg.handle_register(now, UNIX + secs, &req, &source(now, None), &who, &local);
        assert_eq!(resp.status.0, 200, "{}", resp.reason);
    };
    let upserts = |reg: &Registrar| {
        let mut changes = Vec::new();
        reg.drain_changes(&mut changes);
        changes
            .into_iter()
            .filter_map(|c| match c {
                LocationChange::Upserted(b) => Some(b.expires_unix - UNIX),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let contact = "<sip:alice@203.0.113.7:40000>;expires=3600";
    send(0, "a", contact);
    assert_eq!(upserts(&reg), [3600], "a new binding is reported");
    // Refreshes every 10 s (a new Call-ID each time, as SIPp does): reported once the stored
    // expiry would lag by more than a tenth of the 3600 s.
    for secs in (10..=400).step_by(10) {
        send(secs, &format!("c{secs}"), contact);
    }
    assert_eq!(upserts(&reg), [3600 + 370]);
    // Anything else that changes is reported at once: a shorter expiry, a new Contact URI
    // parameter, another flow.
    send(410, "x", "<sip:alice@203.0.113.7:40000>;expires=600");
    assert_eq!(upserts(&reg), [1010]);
    send(420, "x", "<sip:alice@203.0.113.7:40000;ob>;expires=600");
    assert_eq!(upserts(&reg), [1020]);
    // The location map itself always holds the latest state.
    let b = &reg.lookup("alice", t0 + Duration::from_secs(420))[0];
    assert_eq!(b.expires_unix, UNIX + 1020);
}
