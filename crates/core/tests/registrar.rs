//! Registrar behaviour from REGISTER messages as text: RFC 3261 §10.3, RFC 5626 §6 (instance,
//! reg-id, flows), RFC 5627 (public GRUU). Time is simulated: every test starts at `t0` and moves
//! a virtual clock forward; nothing sleeps.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use confab_core::registrar::{
    Authenticated, Binding, LocationChange, Registrar, RegistrarConfig, RemovalReason,
};
use confab_sip::{
    ConnectionId, ContactValue, HeaderName, Host, Message, Request, Response, Source, TransportKind,
};

const UNIX: u64 = 1_700_000_000; // Tue, 14 Nov 2023 22:13:20 GMT

fn registrar() -> Registrar {
    Registrar::new(RegistrarConfig {
        min_expires: 60,
        max_expires: 3600,
        default_expires: 1800,
        max_contacts_per_aor: 3,
        domain: "example.com".to_owned(),
    })
}

fn alice() -> Authenticated {
    Authenticated::danger_assume_authenticated("alice", Some("201"))
}

fn is_local(host: &Host) -> bool {
    matches!(host, Host::Domain(d) if d == "example.com")
}

fn udp(now: Instant) -> Source {
    Source {
        transport: TransportKind::Udp,
        peer: "203.0.113.5:40000".parse::<SocketAddr>().unwrap(),
        local: "192.0.2.1:5060".parse::<SocketAddr>().unwrap(),
        connection: None,
        received_at: now,
    }
}

fn tcp(now: Instant, id: u64) -> Source {
    Source {
        transport: TransportKind::Tcp,
        peer: "203.0.113.5:51000".parse::<SocketAddr>().unwrap(),
        local: "192.0.2.1:5060".parse::<SocketAddr>().unwrap(),
        connection: Some(ConnectionId(id)),
        received_at: now,
    }
}

/// A REGISTER for `to_user` with the given Call-ID, CSeq and extra header lines.
fn register_as(to_user: &str, call_id: &str, cseq: u32, extra: &[&str]) -> Request {
    let mut text = format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 203.0.113.5:40000;branch=z9hG4bK-{call_id}-{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{to_user}@example.com>;tag=f1\r\n\
         To: <sip:{to_user}@example.com>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n"
    );
    for line in extra {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    match Message::parse(text.as_bytes(), false) {
        Ok(Message::Request(r)) => r,
        other => panic!("test REGISTER did not parse: {other:?}\n{text}"),
    }
}

fn register(call_id: &str, cseq: u32, extra: &[&str]) -> Request {
    register_as("alice", call_id, cseq, extra)
}

struct Harness {
    reg: Registrar,
    t0: Instant,
}

impl Harness {
    fn new() -> Self {
        Self {
            reg: registrar(),
            t0: Instant::now(),
        }
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    fn send_from(&self, secs: u64, req: &Request, source: Source) -> Response {
        self.reg.handle_register(
            self.at(secs),
            UNIX + secs,
            req,
            &source,
            &alice(),
            &is_local,
        )
    }

    fn send(&self, secs: u64, req: &Request) -> Response {
        self.send_from(secs, req, udp(self.at(secs)))
    }
}

/// The 200's Contacts as (URI, expires, all params).
fn contacts(resp: &Response) -> Vec<(String, u64, confab_sip::Params)> {
    resp.headers
        .values(&HeaderName::Contact)
        .map(|v| match ContactValue::parse(v) {
            Ok(ContactValue::Addr(a)) => {
                let expires = a
                    .params
                    .get("expires")
                    .flatten()
                    .and_then(|e| e.parse().ok())
                    .expect("expires on every Contact of a 200");
                (a.uri.to_string(), expires, a.params)
            }
            other => panic!("bad Contact in response: {v} -> {other:?}"),
        })
        .collect()
}

fn drain(reg: &Registrar) -> Vec<LocationChange> {
    let mut out = Vec::new();
    reg.drain_changes(&mut out);
    out
}

fn removed(changes: &[LocationChange]) -> Vec<(String, RemovalReason)> {
    changes
        .iter()
        .filter_map(|c| match c {
            LocationChange::Removed { binding, reason } => {
                Some((binding.contact.to_string(), *reason))
            }
            _ => None,
        })
        .collect()
}

fn upserted(changes: &[LocationChange]) -> Vec<Binding> {
    changes
        .iter()
        .filter_map(|c| match c {
            LocationChange::Upserted(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

// ---- RFC 3261 §10.3: add, refresh, query, expire -------------------------------------------

#[test]
fn register_records_binding_and_answers_with_contact_and_date() {
    let h = Harness::new();
    let resp = h.send(
        0,
        &register(
            "c1",
            1,
            &[
                "Contact: <sip:alice@198.51.100.1:5070>",
                "Expires: 600",
                "User-Agent: Test/1.0",
            ],
        ),
    );
    assert_eq!(resp.status.0, 200);
    assert_eq!(
        contacts(&resp)
            .iter()
            .map(|c| (c.0.as_str(), c.1))
            .collect::<Vec<_>>(),
        [("sip:alice@198.51.100.1:5070", 600)]
    );
    assert_eq!(
        resp.headers.get(&HeaderName::Date),
        Some("Tue, 14 Nov 2023 22:13:20 GMT")
    );
    assert_eq!(resp.headers.get(&HeaderName::CallId), Some("c1"));
    assert!(resp.headers.get(&HeaderName::MinExpires).is_none());

    let found = h.reg.lookup("alice", h.at(1));
    assert_eq!(found.len(), 1);
    let b = &found[0];
    assert_eq!(&*b.aor, "alice");
    assert_eq!(&*b.contact, "sip:alice@198.51.100.1:5070");
    assert_eq!(b.expires_at, h.at(600));
    assert_eq!(b.expires_unix, UNIX + 600);
    assert_eq!(
        b.source.peer,
        "203.0.113.5:40000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(b.user_agent.as_deref(), Some("Test/1.0"));
    assert_eq!((&*b.call_id, b.cseq), ("c1", 1));
    assert_eq!(h.reg.count(), 1);
}

#[test]
fn refresh_updates_expiry_and_query_reports_remaining_time() {
    let h = Harness::new();
    let contact = "Contact: <sip:alice@198.51.100.1:5070;transport=udp>;expires=600";
    assert_eq!(h.send(0, &register("c1", 1, &[contact])).status.0, 200);

    // Query (no Contact) 100 s later: 500 s left.
    let q = h.send(100, &register("c1", 2, &[]));
    assert_eq!(q.status.0, 200);
    assert_eq!(contacts(&q)[0].1, 500);

    // Refresh at 300 s with a URI differing only in host case and transport case: same binding.
    let r = h.send(
        300,
        &register(
            "c1",
            3,
            &["Contact: <sip:alice@198.51.100.1:5070;transport=UDP>;expires=600"],
        ),
    );
    assert_eq!(r.status.0, 200);
    assert_eq!(contacts(&r).len(), 1);
    assert_eq!(contacts(&r)[0].1, 600);
    assert_eq!(h.reg.count(), 1);
    assert_eq!(h.reg.lookup("alice", h.at(301))[0].expires_at, h.at(900));
    assert_eq!(h.reg.poll_timeout(), Some(h.at(600))); // early wake-up allowed, never late

    // The old deadline passes: nothing expires.
    h.reg.handle_timeout(h.at(600));
    assert_eq!(h.reg.count(), 1);
    assert_eq!(h.reg.poll_timeout(), Some(h.at(900)));
}

#[test]
fn handle_timeout_expires_bindings_and_emits_removed() {
    let h = Harness::new();
    h.send(
        0,
        &register("c1", 1, &["Contact: <sip:alice@198.51.100.1>;expires=120"]),
    );
    h.send(
        0,
        &register("c2", 1, &["Contact: <sip:alice@198.51.100.2>;expires=300"]),
    );
    drain(&h.reg);
    assert_eq!(h.reg.poll_timeout(), Some(h.at(120)));
    h.reg.handle_timeout(h.at(119));
    assert_eq!(h.reg.count(), 2);
    h.reg.handle_timeout(h.at(120));
    assert_eq!(h.reg.count(), 1);
    assert_eq!(
        removed(&drain(&h.reg)),
        [("sip:alice@198.51.100.1".to_owned(), RemovalReason::Expired)]
    );
    assert_eq!(h.reg.lookup("alice", h.at(120)).len(), 1);
    h.reg.handle_timeout(h.at(300));
    assert_eq!(h.reg.count(), 0);
    assert_eq!(h.reg.poll_timeout(), None);
    // A query after expiry lists nothing.
    let q = h.send(301, &register("c1", 2, &[]));
    assert_eq!((q.status.0, contacts(&q).len()), (200, 0));
}

#[test]
fn lookup_hides_bindings_past_expiry_before_the_timer_runs() {
    let h = Harness::new();
    h.send(
        0,
        &register("c1", 1, &["Contact: <sip:alice@198.51.100.1>;expires=60"]),
    );
    assert_eq!(h.reg.lookup("alice", h.at(59)).len(), 1);
    assert!(h.reg.lookup("alice", h.at(60)).is_empty());
}

#[test]
fn expires_param_beats_header_beats_default() {
    let h = Harness::new();
    let resp = h.send(
        0,
        &register(
            "c1",
            1,
            &[
                "Contact: <sip:alice@198.51.100.1>;expires=120, <sip:alice@198.51.100.2>",
                "Expires: 900",
            ],
        ),
    );
    let mut got: Vec<(String, u64)> = contacts(&resp).into_iter().map(|c| (c.0, c.1)).collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("sip:alice@198.51.100.1".to_owned(), 120),
            ("sip:alice@198.51.100.2".to_owned(), 900)
        ]
    );

    let resp = h.send(
        0,
        &register("c2", 1, &["Contact: <sip:alice@198.51.100.3>"]),
    );
    let c = contacts(&resp)
        .into_iter()
        .find(|c| c.0.ends_with(".3"))
        .unwrap();
    assert_eq!(c.1, 1800); // default_expires
}

// ---- RFC 3261 §10.3 step 7: 423, clamping ---------------------------------------------------

#[test]
fn too_brief_is_423_with_min_expires_and_changes_nothing() {
    let h = Harness::new();
    h.send(
        0,
        &register("c1", 1, &["Contact: <sip:alice@198.51.100.1>;expires=600"]),
    );
    drain(&h.reg);
    let resp = h.send(
        10,
        &register("c1", 2, &["Contact: <sip:alice@198.51.100.1>;expires=3600, <sip:alice@198.51.100.2>;expires=30"]),
    );
    assert_eq!(resp.status.0, 423);
    assert_eq!(resp.headers.get(&HeaderName::MinExpires), Some("60"));
    assert!(resp.headers.get(&HeaderName::Contact).is_none());
    assert_eq!(h.reg.lookup("alice", h.at(10))[0].expires_at, h.at(600));
    assert!(drain(&h.reg).is_empty());
    // The Expires header is checked the same way.
    assert_eq!(
        h.send(
            10,
            &register(
                "c1",
                3,
                &["Contact: <sip:alice@198.51.100.1>", "Expires: 59"]
            )
        )
        .status
        .0,
        423
    );
}

#[test]
fn too_long_is_clamped_to_max_expires() {
    let h = Harness::new();
    let resp = h.send(
        0,
        &register(
            "c1",
            1,
            &["Contact: <sip:alice@198.51.100.1>;expires=86400"],
        ),
    );
    assert_eq!(resp.status.0, 200);
    assert_eq!(contacts(&resp)[0].1, 3600);
    assert_eq!(h.reg.lookup("alice", h.at(0))[0].expires_at, h.at(3600));
    let huge = h.send(
        0,
        &register(
            "c1",
            2,
            &["Contact: <sip:alice@198.51.100.1>;expires=99999999999999999"],
        ),
    );
    assert_eq!(contacts(&huge)[0].1, 3600);
}

// ---- Removal: expires=0 and the wildcard ----------------------------------------------------

#[test]
fn expires_zero_removes_one_binding() {
    let h = Harness::new();
    h.send(
        0,
        &register(
            "c1",
            1,
            &["Contact: <sip:alice@198.51.100.1>, <sip:alice@198.51.100.2>"],
        ),
    );
    assert_eq!(h.reg.count(), 2);
    drain(&h.reg);
    let resp = h.send(
        5,
        &register("c1", 2, &["Contact: <sip:alice@198.51.100.1>;expires=0"]),
    );
    assert_eq!(resp.status.0, 200);
    assert_eq!(
        contacts(&resp)
            .iter()
            .map(|c| c.0.as_str())
            .collect::<Vec<_>>(),
        ["sip:alice@198.51.100.2"]
    );
    assert_eq!(
        removed(&drain(&h.reg)),
        [(
            "sip:alice@198.51.100.1".to_owned(),
            RemovalReason::Unregistered
        )]
    );
}

#[test]
fn wildcard_with_expires_zero_removes_all() {
    let h = Harness::new();
    h.send(
        0,
        &register(
            "c1",
            1,
            &["Contact: <sip:alice@198.51.100.1>, <sip:alice@198.51.100.2>"],
        ),
    );
    h.send(
        0,
        &register("c2", 7, &["Contact: <sip:alice@198.51.100.3>"]),
    );
    drain(&h.reg);
    let resp = h.send(5, &register("c1", 2, &["Contact: *", "Expires: 0"]));
    assert_eq!(resp.status.0, 200);
    assert!(contacts(&resp).is_empty());
    assert_eq!(h.reg.count(), 0);
    let gone = removed(&drain(&h.reg));
    assert_eq!(gone.len(), 3);
    assert!(gone.iter().all(|(_, r)| *r == RemovalReason::Unregistered));
}

#[test]
fn wildcard_misuse_is_400() {
    let h = Harness::new();
    h.send(
        0,
        &register("c1", 1, &["Contact: <sip:alice@198.51.100.1>"]),
    );
    for extra in [
        &["Contact: *"][..],
        &["Contact: *", "Expires: 60"],
        &["Contact: *, <sip:alice@198.51.100.2>", "Expires: 0"],
        &[
            "Contact: *",
            "Contact: <sip:alice@198.51.100.2>;expires=0",
            "Expires: 0",
        ],
    ] {
        let resp = h.send(1, &register("c9", 1, extra));
        assert_eq!(resp.status.0, 400, "{extra:?}");
    }
    assert_eq!(h.reg.count(), 1);
}

#[test]
fn wildcard_obeys_the_cseq_rule() {
    let h = Harness::new();
    h.send(
        0,
        &register("c1", 5, &["Contact: <sip:alice@198.51.100.1>"]),
    );
    let resp = h.send(1, &register("c1", 5, &["Contact: *", "Expires: 0"]));
    assert_eq!(
        (resp.status.0, resp.reason.as_str()),
        (500, "Out of order CSeq")
    );
    assert_eq!(h.reg.count(), 1);
}

// ---- RFC 3261 §10.3 step 7: Call-ID and CSeq ------------------------------------------------

#[test]
fn same_call_id_with_old_cseq_is_500_and_changes_nothing() {
    let h = Harness::new();
    h.send(
        0,
        &register("c1", 10, &["Contact: <sip:alice@198.51.100.1>;expires=600"]),
    );
    drain(&h.reg);
    for cseq in [9, 10] {
        let resp = h.send(
            5,
            &register("c1", cseq, &["Contact: <sip:alice@198.51.100.1>;expires=0"]),
        );
        assert_eq!(
            (resp.status.0, resp.reason.as_str()),
            (500, "Out of order CSeq")
        );
    }
    // A request mixing a new contact and a stale one changes nothing either.
    let resp = h.send(
        5,
        &register(
            "c1",
            10,
            &["Contact: <sip:alice@198.51.100.9>, <sip:alice@198.51.100.1>"],
        ),
    );
    assert_eq!(resp.status.0, 500);
    assert_eq!(h.reg.count(), 1);
    assert_eq!(h.reg.lookup("alice", h.at(5))[0].expires_at, h.at(600));
    assert!(drain(&h.reg).is_empty());
    assert_eq!(
        h.send(
            5,
            &register("c1", 11, &["Contact: <sip:alice@198.51.100.1>;expires=0"])
        )
        .status
        .0,
        200
    );
    assert_eq!(h.reg.count(), 0);
}

#[test]
fn different_call_id_replaces_regardless_of_cseq() {
    let h = Harness::new();
    h.send(
        0,
        &register("c1", 10, &["Contact: <sip:alice@198.51.100.1>;expires=600"]),
    );
    let resp = h.send(
        5,
        &register("c2", 1, &["Contact: <sip:alice@198.51.100.1>;expires=900"]),
    );
    assert_eq!(resp.status.0, 200);
    let b = &h.reg.lookup("alice", h.at(5))[0];
    assert_eq!((&*b.call_id, b.cseq, b.expires_at), ("c2", 1, h.at(905)));
    assert_eq!(h.reg.count(), 1);
}

// ---- q values and lookup order --------------------------------------------------------------

#[test]
fn lookup_orders_by_q_then_freshness() {
    let h = Harness::new();
    let resp = h.send(
        0,
        &register(
            "c1",
            1,
            &[
                "Contact: <sip:alice@198.51.100.1>;q=0.1, <sip:alice@198.51.100.2>;q=0.9",
                "Contact: <sip:alice@198.51.100.3>;q=0.5",
            ],
        ),
    );
    assert_eq!(resp.status.0, 200);
    let order: Vec<String> = h
        .reg
        .lookup("alice", h.at(1))
        .iter()
        .map(|b| b.contact.to_string())
        .collect();
    assert_eq!(
        order,
        [
            "sip:alice@198.51.100.2",
            "sip:alice@198.51.100.3",
            "sip:alice@198.51.100.1"
        ]
    );
    let qs: Vec<u16> = h
        .reg
        .lookup("alice", h.at(1))
        .iter()
        .map(|b| b.q_milli)
        .collect();
    assert_eq!(qs, [900, 500, 100]);
    // The 200 lists them in the same order with their q.
    let listed: Vec<Option<String>> = contacts(&resp)
        .iter()
        .map(|c| c.2.get("q").flatten().map(str::to_owned))
        .collect();
    assert_eq!(
        listed,
        [
            Some("0.9".to_owned()),
            Some("0.5".to_owned()),
            Some("0.1".to_owned())
        ]
    );
}

#[test]
fn bad_q_is_400() {
    let h = Harness::new();
    for q in ["1.5", "0.1234", "abc", "-1", "2"] {
        let contact = format!("Contact: <sip:alice@198.51.100.1>;q={q}");
        assert_eq!(
            h.send(0, &register("c1", 1, &[&contact])).status.0,
            400,
            "q={q}"
        );
    }
    assert_eq!(h.reg.count(), 0);
}

#[test]
fn malformed_contact_is_400() {
    let h = Harness::new();
    // The parser rejects a malformed Contact itself; edit one in after parsing to reach the
    // registrar's own check (a hand-built or forwarded request).
    let mut req = register("c1", 1, &[]);
    req.headers
        .push(HeaderName::Contact, "<sip:alice@198.51.100.1");
    assert_eq!(h.send(0, &req).status.0, 400);
    assert_eq!(
        h.send(0, &register("c1", 2, &["Contact: <tel:+15551234>"]))
            .status
            .0,
        400
    );
    assert_eq!(h.reg.count(), 0);
}

// ---- Who may register what --------------------------------------------------------------------

#[test]
fn another_users_aor_is_403_and_extension_is_accepted() {
    let h = Harness::new();
    let resp = h.send(
        0,
        &register_as("bob", "c1", 1, &["Contact: <sip:bob@198.51.100.1>"]),
    );
    assert_eq!(
        (resp.status.0, resp.reason.as_str()),
        (403, "Not allowed to register this AoR")
    );
    // The extension is an alias of the same AoR (keyed by the canonical user name).
    let resp = h.send(
        0,
        &register_as("201", "c1", 2, &["Contact: <sip:201@198.51.100.1>"]),
    );
    assert_eq!(resp.status.0, 200);
    assert_eq!(h.reg.lookup("alice", h.at(0)).len(), 1);
    assert!(h.reg.lookup("201", h.at(0)).is_empty());
}

#[test]
fn foreign_to_domain_is_404() {
    let h = Harness::new();
    let text = "REGISTER sip:example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 203.0.113.5:40000;branch=z9hG4bK-x\r\n\
        From: <sip:alice@example.org>;tag=1\r\nTo: <sip:alice@example.org>\r\n\
        Call-ID: x\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@198.51.100.1>\r\nContent-Length: 0\r\n\r\n";
    let Ok(Message::Request(req)) = Message::parse(text.as_bytes(), false) else {
        panic!("parse")
    };
    let resp = h.send(0, &req);
    assert_eq!(
        (resp.status.0, resp.reason.as_str()),
        (404, "Not our domain")
    );
    assert_eq!(h.reg.count(), 0);
}

// ---- max_contacts_per_aor ---------------------------------------------------------------------

#[test]
fn beyond_max_contacts_the_soonest_expiring_binding_is_evicted() {
    let h = Harness::new();
    h.send(
        0,
        &register("c1", 1, &["Contact: <sip:alice@198.51.100.1>;expires=300"]),
    );
    h.send(
        0,
        &register("c2", 1, &["Contact: <sip:alice@198.51.100.2>;expires=100"]),
    );
    h.send(
        0,
        &register("c3", 1, &["Contact: <sip:alice@198.51.100.3>;expires=200"]),
    );
    drain(&h.reg);
    let resp = h.send(
        10,
        &register("c4", 1, &["Contact: <sip:alice@198.51.100.4>;expires=60"]),
    );
    assert_eq!(resp.status.0, 200);
    let mut listed: Vec<String> = contacts(&resp).into_iter().map(|c| c.0).collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "sip:alice@198.51.100.1",
            "sip:alice@198.51.100.3",
            "sip:alice@198.51.100.4"
        ]
    );
    assert_eq!(
        removed(&drain(&h.reg)),
        [("sip:alice@198.51.100.2".to_owned(), RemovalReason::Evicted)]
    );
    // One REGISTER asking for more than the limit is refused.
    let resp = h.send(
        10,
        &register("c5", 1, &["Contact: <sip:alice@a.test>, <sip:alice@b.test>, <sip:alice@c.test>, <sip:alice@d.test>"]),
    );
    assert_eq!(resp.status.0, 403);
    assert_eq!(h.reg.count(), 3);
}

// ---- RFC 5626: instance, reg-id, flows ----------------------------------------------------------

const INSTANCE: &str = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>\"";

#[test]
fn same_instance_and_reg_id_replaces_whatever_the_contact_uri() {
    let h = Harness::new();
    let first = format!("Contact: <sip:alice@198.51.100.1:5060;transport=tcp>;{INSTANCE};reg-id=1");
    let resp = h.send_from(
        0,
        &register("c1", 1, &[&first, "Supported: outbound, path"]),
        tcp(h.at(0), 7),
    );
    assert_eq!(resp.status.0, 200);
    assert_eq!(resp.headers.get(&HeaderName::Require), Some("outbound"));
    let c = &contacts(&resp)[0];
    assert_eq!(c.2.get("reg-id"), Some(Some("1")));
    assert_eq!(
        c.2.get("+sip.instance"),
        Some(Some("\"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>\""))
    );
    drain(&h.reg);

    // New network, new Call-ID, new Contact URI, same instance and reg-id: replaces.
    let second =
        format!("Contact: <sip:alice@198.51.100.99:6000;transport=tcp>;{INSTANCE};reg-id=1");
    let resp = h.send_from(
        30,
        &register("c2", 1, &[&second, "Supported: outbound"]),
        tcp(h.at(30), 8),
    );
    assert_eq!(resp.status.0, 200);
    assert_eq!(contacts(&resp).len(), 1);
    let b = &h.reg.lookup("alice", h.at(30))[0];
    assert_eq!(&*b.contact, "sip:alice@198.51.100.99:6000;transport=tcp");
    assert_eq!(b.reg_id, Some(1));
    assert_eq!(b.source.connection, Some(ConnectionId(8)));
    let changes = drain(&h.reg);
    assert_eq!(
        removed(&changes),
        [(
            "sip:alice@198.51.100.1:5060;transport=tcp".to_owned(),
            RemovalReason::Replaced
        )]
    );
    assert_eq!(upserted(&changes).len(), 1);

    // A second flow (reg-id 2) of the same instance is a second binding.
    let third =
        format!("Contact: <sip:alice@198.51.100.99:6000;transport=tcp>;{INSTANCE};reg-id=2");
    h.send_from(
        31,
        &register("c3", 1, &[&third, "Supported: outbound"]),
        tcp(h.at(31), 9),
    );
    assert_eq!(h.reg.count(), 2);
}

#[test]
fn no_require_outbound_without_supported_outbound_or_reg_id() {
    let h = Harness::new();
    let with_reg_id = format!("Contact: <sip:alice@198.51.100.1>;{INSTANCE};reg-id=1");
    let resp = h.send(0, &register("c1", 1, &[&with_reg_id]));
    assert_eq!(resp.status.0, 200);
    assert!(resp.headers.get(&HeaderName::Require).is_none());
    let plain = h.send(
        0,
        &register(
            "c2",
            1,
            &["Contact: <sip:alice@198.51.100.2>", "Supported: outbound"],
        ),
    );
    assert!(plain.headers.get(&HeaderName::Require).is_none());
}

#[test]
fn reg_id_is_ignored_without_instance_and_rejected_when_malformed() {
    let h = Harness::new();
    let resp = h.send(
        0,
        &register(
            "c1",
            1,
            &[
                "Contact: <sip:alice@198.51.100.1>;reg-id=1",
                "Supported: outbound",
            ],
        ),
    );
    assert_eq!(resp.status.0, 200);
    assert!(resp.headers.get(&HeaderName::Require).is_none());
    assert_eq!(h.reg.lookup("alice", h.at(0))[0].reg_id, None);
    let bad = format!("Contact: <sip:alice@198.51.100.2>;{INSTANCE};reg-id=0");
    assert_eq!(h.send(0, &register("c2", 1, &[&bad])).status.0, 400);
    let two = format!(
        "Contact: <sip:alice@198.51.100.2>;{INSTANCE};reg-id=1, <sip:alice@198.51.100.3>;{INSTANCE};reg-id=2"
    );
    assert_eq!(h.send(0, &register("c3", 1, &[&two])).status.0, 400);
}

#[test]
fn closed_connection_removes_outbound_flows_and_keeps_others() {
    let h = Harness::new();
    let flow = format!("Contact: <sip:alice@198.51.100.1;transport=tcp>;{INSTANCE};reg-id=1");
    h.send_from(
        0,
        &register("c1", 1, &[&flow, "Supported: outbound"]),
        tcp(h.at(0), 7),
    );
    h.send_from(
        0,
        &register(
            "c2",
            1,
            &["Contact: <sip:alice@198.51.100.2;transport=tcp>"],
        ),
        tcp(h.at(0), 7),
    );
    h.send_from(
        0,
        &register(
            "c3",
            1,
            &["Contact: <sip:alice@198.51.100.3;transport=tcp>"],
        ),
        tcp(h.at(0), 8),
    );
    drain(&h.reg);

    h.reg.connection_closed(ConnectionId(7), h.at(10));
    let left = h.reg.lookup("alice", h.at(10));
    assert_eq!(left.len(), 2);
    let two = left.iter().find(|b| b.contact.contains(".2")).unwrap();
    assert_eq!(two.source.connection, None);
    assert_eq!(
        two.source.peer,
        "203.0.113.5:51000".parse::<SocketAddr>().unwrap()
    );
    let three = left.iter().find(|b| b.contact.contains(".3")).unwrap();
    assert_eq!(three.source.connection, Some(ConnectionId(8)));
    assert_eq!(
        removed(&drain(&h.reg)),
        [(
            "sip:alice@198.51.100.1;transport=tcp".to_owned(),
            RemovalReason::FlowClosed
        )]
    );
    // Closing again, or an unknown connection, does nothing.
    h.reg.connection_closed(ConnectionId(7), h.at(11));
    h.reg.connection_closed(ConnectionId(99), h.at(11));
    assert_eq!(h.reg.count(), 2);
}

// ---- RFC 5627: public GRUU --------------------------------------------------------------------

#[test]
fn gruu_is_returned_when_supported_and_routes_back() {
    let h = Harness::new();
    let contact = format!("Contact: <sip:alice@198.51.100.1:5060>;{INSTANCE}");
    let resp = h.send(0, &register("c1", 1, &[&contact, "Supported: gruu"]));
    assert_eq!(resp.status.0, 200);
    let c = &contacts(&resp)[0];
    assert_eq!(
        c.2.get("pub-gruu"),
        Some(Some(
            "\"sip:alice@example.com;gr=urn:uuid:00000000-0000-1000-8000-000a95a0e128\""
        ))
    );
    let b = h
        .reg
        .lookup_gruu(
            "alice",
            "urn:uuid:00000000-0000-1000-8000-000a95a0e128",
            h.at(1),
        )
        .unwrap();
    assert_eq!(&*b.contact, "sip:alice@198.51.100.1:5060");
    assert!(h
        .reg
        .lookup_gruu("alice", "urn:uuid:nope", h.at(1))
        .is_none());
    assert!(h
        .reg
        .lookup_gruu(
            "alice",
            "urn:uuid:00000000-0000-1000-8000-000a95a0e128",
            h.at(5000)
        )
        .is_none());

    // Without Supported: gruu, no pub-gruu; same instance without reg-id refreshes the binding.
    let resp = h.send(1, &register("c1", 2, &[&contact.replace("5060", "5062")]));
    assert!(contacts(&resp)[0].2.get("pub-gruu").is_none());
    assert_eq!(h.reg.count(), 1);
}

// ---- Persistence hooks ------------------------------------------------------------------------

#[test]
fn drain_changes_reports_upserts_and_removals_in_order() {
    let h = Harness::new();
    h.send(
        0,
        &register("c1", 1, &["Contact: <sip:alice@198.51.100.1>;expires=600"]),
    );
    h.send(
        1,
        &register("c1", 2, &["Contact: <sip:alice@198.51.100.1>;expires=700"]),
    );
    h.send(
        2,
        &register("c1", 3, &["Contact: <sip:alice@198.51.100.1>;expires=0"]),
    );
    h.send(3, &register("c1", 4, &[])); // a query changes nothing
    let changes = drain(&h.reg);
    assert_eq!(changes.len(), 3);
    assert!(
        matches!(&changes[0], LocationChange::Upserted(b) if b.cseq == 1 && b.expires_unix == UNIX + 600)
    );
    assert!(
        matches!(&changes[1], LocationChange::Upserted(b) if b.cseq == 2 && b.expires_unix == UNIX + 701)
    );
    assert!(matches!(
        &changes[2],
        LocationChange::Removed {
            reason: RemovalReason::Unregistered,
            ..
        }
    ));
    assert!(drain(&h.reg).is_empty());
}

#[test]
fn snapshot_restores_into_a_new_registrar() {
    let h = Harness::new();
    h.send(
        0,
        &register(
            "c1",
            1,
            &["Contact: <sip:alice@198.51.100.1>;expires=600;q=0.7"],
        ),
    );
    let saved = h.reg.snapshot();
    assert_eq!(saved.len(), 1);

    // Restart 100 s later (wall clock) with a fresh monotonic clock.
    let reg2 = registrar();
    let t1 = Instant::now() + Duration::from_secs(5000);
    reg2.restore(t1, UNIX + 100, saved);
    let b = &reg2.lookup("alice", t1)[0];
    assert_eq!(b.expires_at, t1 + Duration::from_secs(500));
    assert_eq!(b.q_milli, 700);
    assert_eq!(reg2.poll_timeout(), Some(t1 + Duration::from_secs(500)));
    // The restored binding obeys the CSeq rule as before.
    let resp = reg2.handle_register(
        t1,
        UNIX + 100,
        &register("c1", 1, &["Contact: <sip:alice@198.51.100.1>;expires=0"]),
        &udp(t1),
        &alice(),
        &is_local,
    );
    assert_eq!(resp.status.0, 500);
}

#[test]
fn remove_aor_drops_everything() {
    let h = Harness::new();
    h.send(
        0,
        &register(
            "c1",
            1,
            &["Contact: <sip:alice@198.51.100.1>, <sip:alice@198.51.100.2>"],
        ),
    );
    assert_eq!(h.reg.remove_aor("alice"), 2);
    assert_eq!(h.reg.count(), 0);
    assert_eq!(h.reg.remove_aor("alice"), 0);
}

// ---- Concurrency ------------------------------------------------------------------------------

#[test]
fn concurrent_registrations_from_several_threads() {
    let reg = Registrar::new(RegistrarConfig {
        max_contacts_per_aor: 10,
        ..RegistrarConfig::default()
    });
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..4 {
            let reg = &reg;
            s.spawn(move || {
                for i in 0..250 {
                    let user = format!("u{t}-{i}");
                    let who = Authenticated::danger_assume_authenticated(&user, None);
                    let req = register_as(&user, "c", 1, &["Contact: <sip:x@198.51.100.1>"]);
                    let local = |h: &Host| matches!(h, Host::Domain(d) if d == "example.com");
                    let resp = reg.handle_register(t0, UNIX, &req, &udp(t0), &who, &local);
                    assert_eq!(resp.status.0, 200);
                }
            });
        }
    });
    assert_eq!(reg.count(), 1000);
    assert_eq!(reg.snapshot().len(), 1000);
}

// ---- Memory ---------------------------------------------------------------------------------

/// 100,000 Linphone-like registrations (one contact per user, instance, GRUU, UDP) through
/// `handle_register`: the location map must stay under 1 KiB per contact (estimate printed).
#[test]
fn memory_for_100k_registered_contacts_is_bounded() {
    let reg = Registrar::new(RegistrarConfig {
        domain: "example.com".to_owned(),
        ..RegistrarConfig::default()
    });
    let t0 = Instant::now();
    let n = 100_000u32;
    for i in 0..n {
        let user = format!("user{i:06}");
        let who = Authenticated::danger_assume_authenticated(&user, None);
        let contact = format!(
            "Contact: <sip:{user}@10.{}.{}.{}:5060;transport=udp>;+sip.instance=\"<urn:uuid:{i:08x}-7dec-11d0-a765-00a0c91e6bf6>\";expires=3600",
            i >> 16, (i >> 8) & 255, i & 255
        );
        let call_id = format!("{i:08x}-5d1c-4f6a-9e43-0123456789ab");
        let req = register_as(
            &user,
            &call_id,
            20,
            &[
                &contact,
                "Supported: gruu, outbound, path",
                "User-Agent: Linphone-Desktop/5.2.6 (belle-sip/5.2.94)",
            ],
        );
        let resp = reg.handle_register(t0, UNIX, &req, &udp(t0), &who, &|_| true);
        assert_eq!(resp.status.0, 200);
    }
    assert_eq!(reg.count(), n as usize);
    drain(&reg);
    let total = reg.memory_estimate();
    let per = total / n as usize;
    println!("location map after {n} REGISTERs: {total} bytes = {per} bytes/contact");
    assert!(per < 1024, "{per} bytes per contact");
}
