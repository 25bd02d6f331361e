//! Calls between users through the endpoint, sans IO: bytes in, transmits out, simulated time, a
//! fake media relay, devices registered through the real registrar. Each test names the rule
//! it pins and ends by checking that no relay ports are left allocated.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_core::call::{
    CallRecord, CallState, Disposition, EndReason, FakeMediaRelay, Leg, MediaStats,
};
use confab_core::{Authenticated, CoreConfig, Endpoint, MemoryDirectory};
use confab_sip::auth::{client_authorization, Algorithm};
use confab_sip::{
    ConnectionId, Destination, HeaderName, Message, NameAddr, Request, Response, Source, Transmit,
    TransportKind,
};

const DOMAIN: &str = "example.com";
const SERVER: &str = "192.0.2.10:5060";
const RELAY_IP: &str = "192.0.2.20";
const UNIX0: u64 = 1_700_000_000;

// ---------------------------------------------------------------------------------------------
// Harness

struct Net {
    ep: Endpoint,
    relay: Arc<FakeMediaRelay>,
    t0: Instant,
    now: Instant,
    n: u32,
}

fn config() -> CoreConfig {
    let mut c = CoreConfig::new(DOMAIN);
    c.local_ips = vec!["192.0.2.10".parse().unwrap()];
    c.advertised = vec![
        (TransportKind::Udp, SERVER.parse().unwrap()),
        (TransportKind::Tcp, SERVER.parse().unwrap()),
    ];
    c.rng_seed = Some(11);
    c.nat_keepalive_interval = None;
    c.calls.media_timeout = None;
    c
}

#[derive(Clone)]
struct Phone {
    user: &'static str,
    password: &'static str,
    flow: Source,
    contact: String,
    instance: Option<String>,
}

fn udp_flow(peer: &str) -> Source {
    Source {
        transport: TransportKind::Udp,
        peer: peer.parse().unwrap(),
        local: SERVER.parse().unwrap(),
        connection: None,
        received_at: Instant::now(),
    }
}

fn tcp_flow(peer: &str, id: u64) -> Source {
    Source {
        transport: TransportKind::Tcp,
        connection: Some(ConnectionId(id)),
        ..udp_flow(peer)
    }
}

impl Net {
    fn new() -> Self {
        Self::with(config())
    }

    fn with(config: CoreConfig) -> Self {
        let users = MemoryDirectory::new(DOMAIN);
        users.insert("alice", Some("1001"), "wonderland");
        users.insert("bob", Some("1002"), "builder");
        users.insert("carol", Some("1003"), "c4rol");
        let relay = Arc::new(FakeMediaRelay::new(RELAY_IP.parse().unwrap()));
        let t0 = Instant::now();
        Self {
            ep: Endpoint::new(config, Arc::new(users), relay.clone(), t0),
            relay,
            t0,
            now: t0,
            n: 0,
        }
    }

    fn unix(&self) -> u64 {
        UNIX0 + self.now.duration_since(self.t0).as_secs()
    }

    fn next(&mut self) -> u32 {
        self.n += 1;
        self.n
    }

    /// One message from `from`'s flow; what the endpoint sends.
    fn deliver(&self, bytes: &str, from: &Source) -> Vec<Transmit> {
        let mut out = Vec::new();
        let src = Source {
            received_at: self.now,
            ..*from
        };
        self.ep
            .handle_message(self.now, self.unix(), bytes.as_bytes(), &src, &mut out);
        out
    }

    fn advance(&mut self, d: Duration) -> Vec<Transmit> {
        let end = self.now + d;
        let mut out = Vec::new();
        // Step through every deadline on the way, as the timer driver does.
        for _ in 0..10_000 {
            match self.ep.poll_timeout() {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.ep.handle_timeout(self.now, &mut out);
                }
                _ => break,
            }
        }
        self.now = end;
        self.ep.handle_timeout(self.now, &mut out);
        out
    }

    /// Registers a device through the real registrar (the endpoint's digest check is covered
    /// elsewhere).
    fn register(&mut self, p: &Phone) {
        let n = self.next();
        let inst = p
            .instance
            .as_ref()
            .map(|i| format!(";+sip.instance=\"<{i}>\""))
            .unwrap_or_default();
        let text = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-reg{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{u}@{DOMAIN}>;tag=r{n}\r\nTo: <sip:{u}@{DOMAIN}>\r\n\
             Call-ID: reg{n}@x\r\nCSeq: 1 REGISTER\r\nSupported: gruu\r\nContact: <{c}>{inst}\r\n\
             Expires: 3600\r\nContent-Length: 0\r\n\r\n",
            u = p.user,
            c = p.contact
        );
        let req = request(text.as_bytes());
        let who = Authenticated::danger_assume_authenticated(p.user, None);
        let resp = self.ep.registrar().handle_register(
            self.now,
            self.unix(),
            &req,
            &p.flow,
            &who,
            &|_| true,
        );
        assert_eq!(resp.status.0, 200, "{resp:?}");
    }

    /// The caller's INVITE, challenged (407), acknowledged, and sent again with credentials.
    /// Returns the caller's view and what the authenticated INVITE produced.
    fn call(
        &mut self,
        caller: &Phone,
        uri: &str,
        sdp: Option<&str>,
        extra: &[&str],
    ) -> (Caller, Vec<Transmit>) {
        let n = self.next();
        self.call_n(n, caller, uri, sdp, extra)
    }

    /// [`Net::call`] with the caller's sequence number given, for use from several threads.
    fn call_n(
        &self,
        n: u32,
        caller: &Phone,
        uri: &str,
        sdp: Option<&str>,
        extra: &[&str],
    ) -> (Caller, Vec<Transmit>) {
        let mut c = Caller {
            call_id: format!("a{n}@198.51.100.7"),
            from: format!("<sip:{}@{DOMAIN}>;tag=fa{n}", caller.user),
            to: format!("<{uri}>"),
            uri: uri.to_owned(),
            target: String::new(),
            cseq: 1,
            branch: format!("z9hG4bK-a{n}-1"),
            flow: caller.flow,
            contact: caller.contact.clone(),
            sdp: sdp.map(str::to_owned),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            invite_text: String::new(),
            n: 0,
        };
        let first = c.invite(None);
        let out = self.deliver(&first, &caller.flow);
        let challenge = only_response(&out);
        assert_eq!(challenge.status.0, 407, "{challenge:?}");
        let ack = c.ack_for_failure(&challenge);
        assert!(self.deliver(&ack, &caller.flow).is_empty());
        let ch = challenge
            .headers
            .get(&HeaderName::ProxyAuthenticate)
            .unwrap()
            .to_owned();
        let nonce = param(&ch, "nonce");
        let auth = client_authorization(
            Algorithm::Sha256,
            caller.user,
            caller.password,
            DOMAIN,
            &nonce,
            "INVITE",
            uri,
            Some("c0ffee"),
            1,
            None,
        );
        c.cseq = 2;
        c.branch = format!("z9hG4bK-a{n}-2");
        let second = c.invite(Some(&format!("Proxy-Authorization: {auth}")));
        c.invite_text = second.clone();
        let out = self.deliver(&second, &caller.flow);
        (c, out)
    }

    fn live_calls(&self) -> u64 {
        self.ep.stats().calls
    }

    /// Lets every lingering transaction end; asserts nothing of the call is left.
    fn settle(&mut self) {
        self.advance(Duration::from_secs(70));
        assert_eq!(self.live_calls(), 0, "calls left");
        assert_eq!(self.relay.live(), 0, "relay ports left allocated");
    }

    fn records(&self) -> Vec<CallRecord> {
        let mut v = Vec::new();
        self.ep.drain_call_records(&mut v);
        v
    }
}

/// The caller's side of a call, as its phone would track it.
struct Caller {
    call_id: String,
    from: String,
    to: String,
    uri: String,
    /// Our Contact from the 2xx: where in-dialog requests go.
    target: String,
    cseq: u32,
    branch: String,
    flow: Source,
    contact: String,
    sdp: Option<String>,
    extra: Vec<String>,
    invite_text: String,
    n: u32,
}

impl Caller {
    fn invite(&self, auth: Option<&str>) -> String {
        let mf = self
            .extra
            .iter()
            .find_map(|e| e.strip_prefix("Max-Forwards: "))
            .unwrap_or("70");
        let mut s = format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch={b};rport\r\nMax-Forwards: {mf}\r\n\
             From: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} INVITE\r\nContact: <{contact}>\r\n\
             Supported: timer\r\nAllow: INVITE, ACK, CANCEL, BYE, UPDATE, INFO\r\nUser-Agent: TestPhone\r\n",
            uri = self.uri,
            b = self.branch,
            from = self.from,
            to = self.to,
            cid = self.call_id,
            cseq = self.cseq,
            contact = self.contact,
        );
        for e in self.extra.iter().filter(|e| !e.starts_with("Max-Forwards")) {
            s.push_str(e);
            s.push_str("\r\n");
        }
        if let Some(a) = auth {
            s.push_str(a);
            s.push_str("\r\n");
        }
        body(&mut s, self.sdp.as_deref());
        s
    }

    fn cancel(&self) -> String {
        format!(
            "CANCEL {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch={b};rport\r\nMax-Forwards: 70\r\n\
             From: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} CANCEL\r\nContent-Length: 0\r\n\r\n",
            uri = self.uri,
            b = self.branch,
            from = self.from,
            to = self.to,
            cid = self.call_id,
            cseq = self.cseq,
        )
    }

    /// The hop-by-hop ACK for a non-2xx final (same branch, RFC 3261 §17.1.1.3).
    fn ack_for_failure(&self, r: &Response) -> String {
        format!(
            "ACK {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch={b};rport\r\nMax-Forwards: 70\r\n\
             From: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
            uri = self.uri,
            b = self.branch,
            from = self.from,
            to = r.headers.get(&HeaderName::To).unwrap(),
            cid = self.call_id,
            cseq = self.cseq,
        )
    }

    /// Takes the dialog from our 2xx.
    fn answered(&mut self, ok: &Response) {
        self.to = ok.headers.get(&HeaderName::To).unwrap().to_owned();
        self.target = contact_uri(&ok.headers);
    }

    /// The ACK for our 2xx (a new transaction, RFC 3261 §13.2.2.4).
    fn ack(&mut self, cseq: u32, sdp: Option<&str>) -> String {
        self.n += 1;
        let mut s = format!(
            "ACK {t} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-ca{n}{b};rport\r\nMax-Forwards: 70\r\n\
             From: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} ACK\r\n",
            t = self.target,
            n = self.n,
            b = self.call_id.replace(['@', '.'], ""),
            from = self.from,
            to = self.to,
            cid = self.call_id,
        );
        body(&mut s, sdp);
        s
    }

    fn request(&mut self, method: &str, sdp: Option<&str>, extra: &[&str]) -> String {
        self.n += 1;
        self.cseq += 1;
        let mut s = format!(
            "{method} {t} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-cr{n}{b};rport\r\nMax-Forwards: 70\r\n\
             From: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: <{contact}>\r\n",
            t = self.target,
            n = self.n,
            b = self.call_id.replace(['@', '.'], ""),
            from = self.from,
            to = self.to,
            cid = self.call_id,
            cseq = self.cseq,
            contact = self.contact,
        );
        for e in extra {
            s.push_str(e);
            s.push_str("\r\n");
        }
        body(&mut s, sdp);
        s
    }
}

/// A device's side of leg B, from the INVITE it received.
struct Device {
    invite: Request,
    tag: String,
    flow: Source,
    contact: String,
    cseq: u32,
    n: u32,
}

impl Device {
    fn new(invite: Request, tag: &str, p: &Phone) -> Self {
        Self {
            invite,
            tag: tag.to_owned(),
            flow: p.flow,
            contact: p.contact.clone(),
            cseq: 100,
            n: 0,
        }
    }

    /// A response to the INVITE (To tag from 101 on).
    fn respond(&self, status: u16, sdp: Option<&str>, extra: &[&str]) -> String {
        respond_to(&self.invite, status, &self.tag, &self.contact, sdp, extra)
    }

    fn call_id(&self) -> &str {
        self.invite.call_id()
    }

    /// An in-dialog request from the device (it is the UAS of leg B's INVITE: From = the
    /// INVITE's To with its tag).
    fn request(&mut self, method: &str, sdp: Option<&str>, extra: &[&str]) -> String {
        self.n += 1;
        self.cseq += 1;
        let to = self.invite.headers.get(&HeaderName::From).unwrap();
        let from = format!(
            "{};tag={}",
            self.invite.headers.get(&HeaderName::To).unwrap(),
            self.tag
        );
        let target = contact_uri(&self.invite.headers);
        let mut s = format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-dv{n}{tag};rport\r\nMax-Forwards: 70\r\n\
             From: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: <{contact}>\r\n",
            n = self.n,
            tag = self.tag,
            cid = self.call_id(),
            cseq = self.cseq,
            contact = self.contact,
        );
        for e in extra {
            s.push_str(e);
            s.push_str("\r\n");
        }
        body(&mut s, sdp);
        s
    }

    fn ack(&mut self, cseq: u32, sdp: Option<&str>) -> String {
        let s = self.request("ACK", sdp, &[]);
        self.cseq -= 1;
        s.replace(
            &format!("CSeq: {} ACK", self.cseq + 1),
            &format!("CSeq: {cseq} ACK"),
        )
    }
}

fn body(s: &mut String, sdp: Option<&str>) {
    match sdp {
        Some(b) => s.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => s.push_str("Content-Length: 0\r\n\r\n"),
    }
}

fn respond_to(
    req: &Request,
    status: u16,
    tag: &str,
    contact: &str,
    sdp: Option<&str>,
    extra: &[&str],
) -> String {
    let mut r = Response::for_request(req, status, None);
    if status > 100 {
        for h in r.headers.0.iter_mut() {
            if h.name == HeaderName::To && !h.value.contains("tag=") {
                h.value = format!("{};tag={tag}", h.value);
            }
        }
        r.headers.push(HeaderName::Contact, format!("<{contact}>"));
    }
    for e in extra {
        let (name, value) = e.split_once(':').unwrap();
        r.headers.push(HeaderName::parse(name), value.trim());
    }
    if let Some(b) = sdp {
        r.headers.push(HeaderName::ContentType, "application/sdp");
        r.body = bytes::Bytes::from(b.to_owned());
    }
    String::from_utf8(r.to_bytes()).unwrap()
}

fn request(bytes: &[u8]) -> Request {
    match Message::parse(bytes, false) {
        Ok(Message::Request(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

fn parse(t: &Transmit) -> Option<Message> {
    Message::parse(&t.bytes, false).ok()
}

fn responses(out: &[Transmit]) -> Vec<(Destination, Response)> {
    out.iter()
        .filter_map(|t| match parse(t) {
            Some(Message::Response(r)) => Some((t.destination, r)),
            _ => None,
        })
        .collect()
}

fn requests(out: &[Transmit], method: &str) -> Vec<(Destination, Request)> {
    out.iter()
        .filter_map(|t| match parse(t) {
            Some(Message::Request(r)) if r.method.as_str() == method => Some((t.destination, r)),
            _ => None,
        })
        .collect()
}

fn only_response(out: &[Transmit]) -> Response {
    let r = responses(out);
    assert_eq!(r.len(), 1, "expected one response, got {:?}", dump(out));
    r.into_iter().next().unwrap().1
}

/// The responses with `status` among `out`.
fn with_status(out: &[Transmit], status: u16) -> Vec<Response> {
    responses(out)
        .into_iter()
        .filter(|(_, r)| r.status.0 == status)
        .map(|(_, r)| r)
        .collect()
}

fn dump(out: &[Transmit]) -> Vec<String> {
    out.iter()
        .map(|t| {
            let text = String::from_utf8_lossy(&t.bytes);
            format!(
                "-> {} {}",
                t.destination.addr,
                text.lines().next().unwrap_or("")
            )
        })
        .collect()
}

fn param(challenge: &str, name: &str) -> String {
    let key = format!("{name}=\"");
    let start = challenge.find(&key).unwrap() + key.len();
    let end = challenge[start..].find('"').unwrap() + start;
    challenge[start..end].to_owned()
}

fn contact_uri(h: &confab_sip::Headers) -> String {
    let v = h.values(&HeaderName::Contact).next().expect("Contact");
    NameAddr::parse(v).unwrap().uri.to_string()
}

fn sdp(ip: &str, port: u16, direction: &str) -> String {
    format!(
        "v=0\r\no=- 4242 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na={direction}\r\n"
    )
}

/// `c=` address and first `m=` port of an SDP body.
fn media_of(body: &[u8]) -> (String, u16) {
    let text = std::str::from_utf8(body).unwrap();
    let ip = text
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .expect("c= line")
        .trim()
        .to_owned();
    let port = text
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .expect("m= line")
        .parse()
        .unwrap();
    (ip, port)
}

fn alice() -> Phone {
    Phone {
        user: "alice",
        password: "wonderland",
        flow: udp_flow("198.51.100.7:5060"),
        contact: "sip:alice@198.51.100.7:5060".into(),
        instance: None,
    }
}

/// Bob's desk phone behind NAT: registered Contact says 10.0.0.5, the flow is the NAT's address.
fn bob_desk() -> Phone {
    Phone {
        user: "bob",
        password: "builder",
        flow: udp_flow("203.0.113.5:40001"),
        contact: "sip:bob@10.0.0.5:5060".into(),
        instance: Some("urn:uuid:00000000-0000-0000-0000-0000000000b1".into()),
    }
}

/// Bob's softphone over TCP.
fn bob_soft() -> Phone {
    Phone {
        user: "bob",
        password: "builder",
        flow: tcp_flow("203.0.113.6:40002", 7),
        contact: "sip:bob@10.0.0.6:5070;transport=tcp".into(),
        instance: Some("urn:uuid:00000000-0000-0000-0000-0000000000b2".into()),
    }
}

/// A call from alice to bob's two devices, both ringing (180); returns the caller, both devices.
fn ringing_call(net: &mut Net, caller_sdp: Option<&str>) -> (Caller, Device, Device) {
    let (desk, soft) = (bob_desk(), bob_soft());
    net.register(&desk);
    net.register(&soft);
    let offer = caller_sdp.map(str::to_owned);
    let (caller, out) = net.call(&alice(), "sip:bob@example.com", offer.as_deref(), &[]);
    assert_eq!(
        with_status(&out, 100).len(),
        1,
        "100 Trying: {:?}",
        dump(&out)
    );
    let invites = requests(&out, "INVITE");
    assert_eq!(invites.len(), 2, "{:?}", dump(&out));
    let to_desk = invites
        .iter()
        .find(|(d, _)| d.addr == desk.flow.peer)
        .expect("INVITE on the desk phone's flow")
        .1
        .clone();
    let to_soft = invites
        .iter()
        .find(|(d, _)| d.addr == soft.flow.peer)
        .expect("INVITE on the softphone's flow")
        .1
        .clone();
    let d1 = Device::new(to_desk, "desk", &desk);
    let d2 = Device::new(to_soft, "soft", &soft);
    for d in [&d1, &d2] {
        let out = net.deliver(&d.respond(180, None, &[]), &d.flow);
        let ringing = with_status(&out, 180);
        assert!(ringing.len() <= 1);
    }
    (caller, d1, d2)
}

// ---------------------------------------------------------------------------------------------
// Routing and ringing

#[test]
fn two_devices_ring_first_answer_wins_the_other_is_cancelled_rfc3261_s16_7() {
    let mut net = Net::new();
    let (desk, soft) = (bob_desk(), bob_soft());
    net.register(&desk);
    net.register(&soft);
    let offer = sdp("198.51.100.7", 4000, "sendrecv");
    let (mut caller, out) = net.call(&alice(), "sip:bob@example.com", Some(&offer), &[]);

    // Both devices get an INVITE on the flow they registered from (NAT), never the Contact host.
    let invites = requests(&out, "INVITE");
    assert_eq!(invites.len(), 2);
    let (d_desk, inv_desk) = invites
        .iter()
        .find(|(d, _)| d.addr == desk.flow.peer)
        .unwrap()
        .clone();
    let (d_soft, inv_soft) = invites
        .iter()
        .find(|(d, _)| d.addr == soft.flow.peer)
        .unwrap()
        .clone();
    assert_eq!(d_desk.transport, TransportKind::Udp);
    assert_eq!(d_desk.local, Some(SERVER.parse().unwrap()));
    assert_eq!(d_soft.transport, TransportKind::Tcp);
    assert_eq!(d_soft.connection, Some(ConnectionId(7)));
    assert_eq!(inv_desk.uri.to_string(), desk.contact);
    // Each leg B is a dialog of its own: own Call-ID, our Via and Contact, one hop fewer.
    assert_ne!(inv_desk.call_id(), caller.call_id);
    assert_ne!(inv_desk.call_id(), inv_soft.call_id());
    assert!(inv_desk
        .top_via()
        .unwrap()
        .to_string()
        .starts_with("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK"));
    assert!(inv_soft
        .top_via()
        .unwrap()
        .to_string()
        .starts_with("SIP/2.0/TCP 192.0.2.10:5060"));
    assert_eq!(inv_desk.max_forwards(), Some(69));
    assert_eq!(
        inv_desk.from_header().unwrap().uri.to_string(),
        "sip:alice@example.com"
    );
    assert!(inv_desk.headers.get(&HeaderName::SessionExpires).is_some());
    // Their SDP points at the relay's B-side ports; the relay knows where the caller receives.
    let ids = net.relay.ids();
    assert_eq!(ids.len(), 1);
    let (ip, port) = media_of(&inv_desk.body);
    assert_eq!(ip, RELAY_IP);
    assert_eq!(media_of(&inv_soft.body).1, port);
    assert!(std::str::from_utf8(&inv_desk.body)
        .unwrap()
        .contains("telephone-event/8000"));
    let remotes = net.relay.remotes(ids[0]);
    assert_eq!(remotes[0].leg, Leg::A);
    assert_eq!(remotes[0].rtp, Some("198.51.100.7:4000".parse().unwrap()));
    assert_eq!(remotes[0].rtcp, Some("198.51.100.7:4001".parse().unwrap()));

    let desk_dev = Device::new(inv_desk, "desk", &desk);
    let soft_dev = Device::new(inv_soft, "soft", &soft);
    let out = net.deliver(&desk_dev.respond(180, None, &[]), &desk.flow);
    let r = only_response(&out);
    assert_eq!(r.status.0, 180);
    assert_eq!(out[0].destination.addr, caller.flow.peer);
    // The second 180 adds nothing for the caller.
    assert!(responses(&net.deliver(&soft_dev.respond(180, None, &[]), &soft.flow)).is_empty());

    // The softphone answers.
    let answer = sdp("10.0.0.6", 6000, "sendrecv");
    let out = net.deliver(&soft_dev.respond(200, Some(&answer), &[]), &soft.flow);
    let acks = requests(&out, "ACK");
    assert_eq!(acks.len(), 1, "{:?}", dump(&out));
    assert_eq!(acks[0].0.addr, soft.flow.peer);
    let cancels = requests(&out, "CANCEL");
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].0.addr, desk.flow.peer);
    assert_eq!(
        cancels[0].1.headers.get(&HeaderName::Reason),
        Some("SIP;cause=200;text=\"Call completed elsewhere\"")
    );
    let ok = with_status(&out, 200);
    assert_eq!(ok.len(), 1);
    let ok = &ok[0];
    let (ip, a_port) = media_of(&ok.body);
    assert_eq!(ip, RELAY_IP);
    assert_ne!(a_port, port, "each side gets its own relay port");
    assert_eq!(
        ok.to_header().unwrap().tag(),
        r.to_header().unwrap().tag(),
        "one dialog towards the caller"
    );
    assert!(ok
        .headers
        .get(&HeaderName::SessionExpires)
        .unwrap()
        .contains("refresher=uac"));
    assert!(net
        .relay
        .remotes(ids[0])
        .iter()
        .any(|r| r.leg == Leg::B && r.rtp == Some("10.0.0.6:6000".parse().unwrap())));
    assert_eq!(net.ep.active_calls().len(), 1);
    assert_eq!(net.ep.active_calls()[0].state, CallState::Active);

    // The cancelled desk phone: 200 to the CANCEL, 487 to the INVITE, which we ACK.
    let cancel_ok = respond_to(&cancels[0].1, 200, "desk", &desk.contact, None, &[]);
    assert!(net.deliver(&cancel_ok, &desk.flow).is_empty());
    let out = net.deliver(&desk_dev.respond(487, None, &[]), &desk.flow);
    assert_eq!(requests(&out, "ACK").len(), 1);
    assert!(responses(&out).is_empty(), "the caller hears nothing of it");

    caller.answered(ok);
    let out = net.deliver(&caller.ack(2, None), &caller.flow);
    assert!(
        out.is_empty(),
        "our ACK to the device was sent already: {:?}",
        dump(&out)
    );
    // No 2xx retransmission once the ACK arrived.
    assert!(with_status(&net.advance(Duration::from_secs(5)), 200).is_empty());

    // The caller hangs up: 200 to it, BYE to the softphone on its flow.
    let out = net.deliver(&caller.request("BYE", None, &[]), &caller.flow);
    assert_eq!(with_status(&out, 200).len(), 1);
    let byes = requests(&out, "BYE");
    assert_eq!(byes.len(), 1);
    assert_eq!(byes[0].0.addr, soft.flow.peer);
    assert_eq!(byes[0].1.call_id(), soft_dev.call_id());
    assert_eq!(net.relay.live(), 0, "ports released at the BYE");
    let bye_ok = respond_to(&byes[0].1, 200, "soft", &soft.contact, None, &[]);
    assert!(net.deliver(&bye_ok, &soft.flow).is_empty());

    let recs = net.records();
    let last = recs.last().unwrap();
    assert_eq!(
        recs.iter().map(|r| r.state).collect::<Vec<_>>(),
        [CallState::Ringing, CallState::Active, CallState::Ended]
    );
    assert!(recs.iter().all(|r| r.id == last.id));
    assert_eq!(last.disposition, Some(Disposition::Answered));
    assert_eq!(last.end_reason, Some(EndReason::CallerHangup));
    assert_eq!(last.caller, "alice");
    assert_eq!(last.callee.as_deref(), Some("bob"));
    assert_eq!(last.devices_tried.len(), 2);
    assert_eq!(last.answered_by.as_deref(), Some(soft.contact.as_str()));
    assert_eq!(last.final_status, Some(200));
    assert!(last.media.is_some());
    assert!(last.caller_device.contains("TestPhone"));
    assert!(last.start_unix_ms >= UNIX0 * 1000);
    assert!(last.end_unix_ms >= last.answer_unix_ms);
    net.settle();
}

#[test]
fn every_device_busy_gives_486_rfc3261_s16_7_step_6() {
    let mut net = Net::new();
    let offer = sdp("198.51.100.7", 4000, "sendrecv");
    let (_caller, d1, d2) = ringing_call(&mut net, Some(&offer));
    let out = net.deliver(&d1.respond(486, None, &["Retry-After: 30"]), &d1.flow);
    assert_eq!(requests(&out, "ACK").len(), 1);
    assert!(
        with_status(&out, 486).is_empty(),
        "one device is still ringing"
    );
    let out = net.deliver(&d2.respond(486, None, &[]), &d2.flow);
    let busy = with_status(&out, 486);
    assert_eq!(busy.len(), 1);
    assert_eq!(busy[0].headers.get(&HeaderName::RetryAfter), Some("30"));
    assert_eq!(net.relay.live(), 0);
    let last = net.records().pop().unwrap();
    assert_eq!(last.disposition, Some(Disposition::Busy));
    assert_eq!(last.final_status, Some(486));
    net.settle();
}

#[test]
fn decline_603_wins_and_cancels_the_others() {
    let mut net = Net::new();
    let (_caller, d1, _d2) = ringing_call(&mut net, Some(&sdp("198.51.100.7", 4000, "sendrecv")));
    let out = net.deliver(&d1.respond(603, None, &[]), &d1.flow);
    // RFC 3261 §16.7 step 5: a 6xx stops the search; the other device is cancelled.
    let cancels = requests(&out, "CANCEL");
    assert_eq!(cancels.len(), 1);
    assert_eq!(
        cancels[0].1.headers.get(&HeaderName::Reason),
        Some("SIP;cause=603")
    );
    let cancel_ok = respond_to(&cancels[0].1, 200, "soft", "sip:x@10.0.0.6", None, &[]);
    net.deliver(&cancel_ok, &bob_soft().flow);
    let out = net.deliver(&_d2.respond(487, None, &[]), &_d2.flow);
    let decline = with_status(&out, 603);
    assert_eq!(decline.len(), 1, "{:?}", dump(&out));
    let last = net.records().pop().unwrap();
    assert_eq!(last.disposition, Some(Disposition::Rejected));
    assert_eq!(last.final_status, Some(603));
    net.settle();
}

#[test]
fn no_answer_timeout_gives_480_and_cancels_every_device() {
    let mut net = Net::new();
    let (_caller, _d1, _d2) = ringing_call(&mut net, Some(&sdp("198.51.100.7", 4000, "sendrecv")));
    let out = net.advance(Duration::from_secs(59));
    assert!(with_status(&out, 480).is_empty());
    let out = net.advance(Duration::from_secs(1));
    assert_eq!(with_status(&out, 480).len(), 1, "{:?}", dump(&out));
    assert_eq!(requests(&out, "CANCEL").len(), 2);
    assert_eq!(net.relay.live(), 0);
    let last = net.records().pop().unwrap();
    assert_eq!(last.disposition, Some(Disposition::NoAnswer));
    assert_eq!(last.end_reason, Some(EndReason::NoAnswer));
    net.settle();
}

#[test]
fn cancel_before_answer_gives_487_and_cancels_every_device_rfc3261_s9_2() {
    let mut net = Net::new();
    let (caller, d1, d2) = ringing_call(&mut net, Some(&sdp("198.51.100.7", 4000, "sendrecv")));
    let out = net.deliver(&caller.cancel(), &caller.flow);
    assert_eq!(with_status(&out, 200).len(), 1, "200 to the CANCEL");
    assert_eq!(with_status(&out, 487).len(), 1, "487 to the INVITE");
    let cancels = requests(&out, "CANCEL");
    assert_eq!(cancels.len(), 2);
    assert_eq!(net.relay.live(), 0);
    // The devices confirm; a 2xx that crossed the CANCEL is acknowledged and hung up.
    for (d, c) in [(&d1, &cancels[0].1), (&d2, &cancels[1].1)] {
        let ok = respond_to(c, 200, &d.tag, &d.contact, None, &[]);
        net.deliver(&ok, &d.flow);
    }
    net.deliver(&d1.respond(487, None, &[]), &d1.flow);
    let out = net.deliver(
        &d2.respond(200, Some(&sdp("10.0.0.6", 6000, "sendrecv")), &[]),
        &d2.flow,
    );
    assert_eq!(requests(&out, "ACK").len(), 1);
    assert_eq!(requests(&out, "BYE").len(), 1);
    assert!(responses(&out).is_empty(), "the caller hears nothing more");
    // Timer G retransmits our 487 until the caller's ACK, which the transaction absorbs.
    let r487 = with_status(&net.advance(Duration::from_millis(500)), 487);
    assert_eq!(r487.len(), 1);
    assert!(net
        .deliver(&caller.ack_for_failure(&r487[0]), &caller.flow)
        .is_empty());
    assert!(with_status(&net.advance(Duration::from_secs(2)), 487).is_empty());
    let last = net.records().pop().unwrap();
    assert_eq!(last.disposition, Some(Disposition::Cancelled));
    assert_eq!(last.final_status, Some(487));
    net.settle();
}

#[test]
fn unknown_user_404_and_nobody_registered_480() {
    let mut net = Net::new();
    let (_, out) = net.call(&alice(), "sip:nobody@example.com", None, &[]);
    assert_eq!(only_response(&out).status.0, 404);
    let (_, out) = net.call(&alice(), "sip:carol@example.com", None, &[]);
    assert_eq!(only_response(&out).status.0, 480);
    // By extension too.
    let (_, out) = net.call(&alice(), "sip:1003@example.com", None, &[]);
    assert_eq!(only_response(&out).status.0, 480);
    let recs = net.records();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0].disposition, Some(Disposition::Failed));
    assert_eq!(recs[0].callee, None);
    assert_eq!(recs[1].disposition, Some(Disposition::NoAnswer));
    assert_eq!(recs[1].callee.as_deref(), Some("carol"));
    assert_eq!(recs[2].callee.as_deref(), Some("carol"));
    net.settle();
}

#[test]
fn unauthenticated_invite_gets_407_and_is_never_routed() {
    let mut net = Net::new();
    net.register(&bob_desk());
    let text = format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-u1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=u1\r\nTo: <sip:bob@{DOMAIN}>\r\nCall-ID: u1@x\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:alice@198.51.100.7>\r\nContent-Length: 0\r\n\r\n"
    );
    let out = net.deliver(&text, &alice().flow);
    assert_eq!(only_response(&out).status.0, 407);
    assert!(requests(&out, "INVITE").is_empty());
    assert!(net.records().is_empty());
    net.settle();
}

#[test]
fn callee_by_extension_and_by_tel_uri() {
    let mut net = Net::new();
    net.register(&bob_desk());
    let (caller, out) = net.call(&alice(), "sip:1002@example.com", None, &[]);
    assert_eq!(requests(&out, "INVITE").len(), 1);
    net.deliver(&caller.cancel(), &caller.flow);
    let (caller, out) = net.call(&alice(), "tel:1002", None, &[]);
    assert_eq!(requests(&out, "INVITE").len(), 1, "{:?}", dump(&out));
    net.deliver(&caller.cancel(), &caller.flow);
    net.settle();
}

#[test]
fn gruu_reaches_only_its_device_rfc5627_s5_1() {
    let mut net = Net::new();
    let (desk, soft) = (bob_desk(), bob_soft());
    net.register(&desk);
    net.register(&soft);
    let gruu = format!("sip:bob@example.com;gr={}", soft.instance.as_ref().unwrap());
    let (caller, out) = net.call(
        &alice(),
        &gruu,
        Some(&sdp("198.51.100.7", 4000, "sendrecv")),
        &[],
    );
    let invites = requests(&out, "INVITE");
    assert_eq!(invites.len(), 1, "{:?}", dump(&out));
    assert_eq!(invites[0].0.addr, soft.flow.peer);
    // A GRUU of no live device: 480.
    let (_, out) = net.call(&alice(), "sip:bob@example.com;gr=urn:uuid:dead", None, &[]);
    assert_eq!(only_response(&out).status.0, 480);
    net.deliver(&caller.cancel(), &caller.flow);
    net.settle();
}

#[test]
fn call_to_oneself_rings_the_other_devices_only() {
    let mut net = Net::new();
    let mut me = alice();
    me.instance = Some("urn:uuid:00000000-0000-0000-0000-0000000000a1".into());
    let other = Phone {
        flow: udp_flow("203.0.113.50:5060"),
        contact: "sip:alice@10.1.1.1:5060".into(),
        instance: Some("urn:uuid:00000000-0000-0000-0000-0000000000a2".into()),
        ..alice()
    };
    net.register(&me);
    // Only the calling device registered: busy.
    let (_, out) = net.call(&me, "sip:alice@example.com", None, &[]);
    assert_eq!(only_response(&out).status.0, 486);
    net.register(&other);
    let (caller, out) = net.call(&me, "sip:1001@example.com", None, &[]);
    let invites = requests(&out, "INVITE");
    assert_eq!(invites.len(), 1);
    assert_eq!(
        invites[0].0.addr, other.flow.peer,
        "never the device that calls"
    );
    net.deliver(&caller.cancel(), &caller.flow);
    net.settle();
}

// ---------------------------------------------------------------------------------------------
// The answered call

/// A call answered by the desk phone and acknowledged by the caller.
fn answered_call(net: &mut Net) -> (Caller, Device) {
    let (mut caller, d1, d2) = ringing_call(net, Some(&sdp("198.51.100.7", 4000, "sendrecv")));
    let out = net.deliver(
        &d1.respond(200, Some(&sdp("10.0.0.5", 5000, "sendrecv")), &[]),
        &d1.flow,
    );
    let ok = with_status(&out, 200).pop().expect("200 to the caller");
    let cancel = requests(&out, "CANCEL").pop().unwrap().1;
    net.deliver(
        &respond_to(&cancel, 200, &d2.tag, &d2.contact, None, &[]),
        &d2.flow,
    );
    net.deliver(&d2.respond(487, None, &[]), &d2.flow);
    caller.answered(&ok);
    assert!(net.deliver(&caller.ack(2, None), &caller.flow).is_empty());
    net.records();
    (caller, d1)
}

#[test]
fn callee_hangs_up_bye_reaches_the_caller() {
    let mut net = Net::new();
    let (caller, mut d1) = answered_call(&mut net);
    let out = net.deliver(&d1.request("BYE", None, &[]), &d1.flow);
    assert_eq!(with_status(&out, 200).len(), 1);
    let byes = requests(&out, "BYE");
    assert_eq!(byes.len(), 1);
    assert_eq!(byes[0].0.addr, caller.flow.peer, "to the caller's flow");
    assert_eq!(byes[0].1.call_id(), caller.call_id);
    assert_eq!(byes[0].1.uri.to_string(), caller.contact);
    assert_eq!(net.relay.live(), 0);
    // A BYE crossing ours is answered 200.
    let mut caller = caller;
    let out = net.deliver(&caller.request("BYE", None, &[]), &caller.flow);
    assert_eq!(with_status(&out, 200).len(), 1);
    let last = net.records().pop().unwrap();
    assert_eq!(last.end_reason, Some(EndReason::CalleeHangup));
    assert_eq!(last.disposition, Some(Disposition::Answered));
    net.settle();
}

#[test]
fn hold_and_resume_reinvite_is_passed_through_with_sdp_anchored() {
    let mut net = Net::new();
    let (mut caller, mut d1) = answered_call(&mut net);
    let id = net.relay.ids()[0];
    // Hold: the caller offers sendonly from a new port.
    let hold = sdp("198.51.100.7", 4100, "sendonly");
    let out = net.deliver(
        &caller.request("INVITE", Some(&hold), &["Supported: timer"]),
        &caller.flow,
    );
    assert_eq!(with_status(&out, 100).len(), 1);
    let fwd = requests(&out, "INVITE");
    assert_eq!(fwd.len(), 1);
    assert_eq!(fwd[0].0.addr, d1.flow.peer);
    let text = std::str::from_utf8(&fwd[0].1.body).unwrap();
    assert!(text.contains("a=sendonly"));
    assert_eq!(media_of(&fwd[0].1.body).0, RELAY_IP);
    assert!(net
        .relay
        .remotes(id)
        .iter()
        .any(|r| r.leg == Leg::A && r.rtp == Some("198.51.100.7:4100".parse().unwrap())));
    // The device answers recvonly; the caller gets it anchored.
    let reinv = fwd[0].1.clone();
    let ans = respond_to(
        &reinv,
        200,
        &d1.tag,
        &d1.contact,
        Some(&sdp("10.0.0.5", 5002, "recvonly")),
        &[],
    );
    let out = net.deliver(&ans, &d1.flow);
    let acks = requests(&out, "ACK");
    assert_eq!(acks.len(), 1, "we ACK the device's 2xx at once");
    assert_eq!(acks[0].1.cseq().unwrap().seq, reinv.cseq().unwrap().seq);
    let ok = with_status(&out, 200).pop().unwrap();
    assert!(std::str::from_utf8(&ok.body)
        .unwrap()
        .contains("a=recvonly"));
    assert_eq!(media_of(&ok.body).0, RELAY_IP);
    assert!(ok.headers.get(&HeaderName::SessionExpires).is_some());
    let o_line = |b: &[u8]| {
        std::str::from_utf8(b)
            .unwrap()
            .lines()
            .find(|l| l.starts_with("o="))
            .unwrap()
            .to_owned()
    };
    assert!(net
        .relay
        .remotes(id)
        .iter()
        .any(|r| r.leg == Leg::B && r.rtp == Some("10.0.0.5:5002".parse().unwrap())));
    let cseq = caller.cseq;
    assert!(net
        .deliver(&caller.ack(cseq, None), &caller.flow)
        .is_empty());

    // Resume, from the callee side this time.
    let out = net.deliver(
        &d1.request("INVITE", Some(&sdp("10.0.0.5", 5004, "sendrecv")), &[]),
        &d1.flow,
    );
    let fwd = requests(&out, "INVITE");
    assert_eq!(fwd[0].0.addr, caller.flow.peer);
    assert_eq!(fwd[0].1.call_id(), caller.call_id);
    let resumed = respond_to(
        &fwd[0].1,
        200,
        "fa",
        &caller.contact,
        Some(&sdp("198.51.100.7", 4100, "sendrecv")),
        &[],
    );
    let out = net.deliver(&resumed, &caller.flow);
    assert_eq!(requests(&out, "ACK").len(), 1);
    let ok = with_status(&out, 200).pop().unwrap();
    assert_ne!(o_line(&ok.body), "", "o= present");
    let dcseq = d1.cseq;
    assert!(net.deliver(&d1.ack(dcseq, None), &d1.flow).is_empty());
    let out = net.deliver(&caller.request("BYE", None, &[]), &caller.flow);
    assert_eq!(requests(&out, "BYE").len(), 1);
    net.settle();
}

#[test]
fn update_with_sdp_is_relayed_and_without_sdp_refreshes_locally_rfc3311() {
    let mut net = Net::new();
    let (mut caller, d1) = answered_call(&mut net);
    // A refresh without SDP is answered here with our Session-Expires.
    let out = net.deliver(
        &caller.request("UPDATE", None, &["Session-Expires: 600;refresher=uac"]),
        &caller.flow,
    );
    let ok = only_response(&out);
    assert_eq!(ok.status.0, 200);
    assert_eq!(
        ok.headers.get(&HeaderName::SessionExpires),
        Some("600;refresher=uac")
    );
    // With SDP: passed through.
    let out = net.deliver(
        &caller.request("UPDATE", Some(&sdp("198.51.100.7", 4200, "sendrecv")), &[]),
        &caller.flow,
    );
    let fwd = requests(&out, "UPDATE");
    assert_eq!(fwd.len(), 1, "{:?}", dump(&out));
    assert_eq!(media_of(&fwd[0].1.body).0, RELAY_IP);
    let ans = respond_to(
        &fwd[0].1,
        200,
        &d1.tag,
        &d1.contact,
        Some(&sdp("10.0.0.5", 5010, "sendrecv")),
        &[],
    );
    let out = net.deliver(&ans, &d1.flow);
    let ok = only_response(&out);
    assert_eq!(ok.status.0, 200);
    assert_eq!(media_of(&ok.body).0, RELAY_IP);
    let out = net.deliver(&caller.request("BYE", None, &[]), &caller.flow);
    assert_eq!(requests(&out, "BYE").len(), 1);
    net.settle();
}

#[test]
fn info_dtmf_is_passed_through() {
    let mut net = Net::new();
    let (mut caller, d1) = answered_call(&mut net);
    let dtmf = "Signal=5\r\nDuration=160\r\n";
    let info = caller.request("INFO", None, &[]).replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/dtmf-relay\r\nContent-Length: {}\r\n\r\n{dtmf}",
            dtmf.len()
        ),
    );
    let out = net.deliver(&info, &caller.flow);
    assert!(
        responses(&out).is_empty(),
        "answered when the device answers"
    );
    let fwd = requests(&out, "INFO");
    assert_eq!(fwd.len(), 1);
    assert_eq!(fwd[0].1.body.as_ref(), dtmf.as_bytes());
    assert_eq!(
        fwd[0].1.headers.get(&HeaderName::ContentType),
        Some("application/dtmf-relay")
    );
    let out = net.deliver(
        &respond_to(&fwd[0].1, 200, &d1.tag, &d1.contact, None, &[]),
        &d1.flow,
    );
    assert_eq!(only_response(&out).status.0, 200);
    let out = net.deliver(&caller.request("BYE", None, &[]), &caller.flow);
    assert_eq!(requests(&out, "BYE").len(), 1);
    net.settle();
}

#[test]
fn retransmitted_invite_is_absorbed_rfc3261_s17_2_1() {
    let mut net = Net::new();
    let (caller, d1, _d2) = ringing_call(&mut net, Some(&sdp("198.51.100.7", 4000, "sendrecv")));
    let out = net.deliver(&caller.invite_text, &caller.flow);
    // The last provisional again, and no new INVITE to any device.
    let r = only_response(&out);
    assert_eq!(r.status.0, 180);
    assert!(requests(&out, "INVITE").is_empty());
    assert_eq!(net.relay.allocations(), 1);
    net.deliver(&caller.cancel(), &caller.flow);
    let _ = d1;
    net.settle();
}

#[test]
fn late_cancel_after_the_answer_has_no_effect() {
    let mut net = Net::new();
    let (mut caller, _d1) = answered_call(&mut net);
    let out = net.deliver(&caller.cancel(), &caller.flow);
    assert_eq!(only_response(&out).status.0, 200);
    assert_eq!(net.ep.active_calls().len(), 1);
    assert_eq!(net.relay.live(), 1);
    let out = net.deliver(&caller.request("BYE", None, &[]), &caller.flow);
    assert_eq!(requests(&out, "BYE").len(), 1);
    net.settle();
}

#[test]
fn glare_reinvite_while_one_is_pending_gets_491_rfc3261_s14_1() {
    let mut net = Net::new();
    let (mut caller, mut d1) = answered_call(&mut net);
    let out = net.deliver(
        &caller.request("INVITE", Some(&sdp("198.51.100.7", 4100, "sendonly")), &[]),
        &caller.flow,
    );
    let fwd = requests(&out, "INVITE").pop().unwrap().1;
    // The device sends its own re-INVITE meanwhile.
    let out = net.deliver(
        &d1.request("INVITE", Some(&sdp("10.0.0.5", 5020, "sendrecv")), &[]),
        &d1.flow,
    );
    assert_eq!(only_response(&out).status.0, 491);
    // ... and answers ours with 491 as well (RFC 3261 §14.2): the caller gets it.
    let out = net.deliver(
        &respond_to(&fwd, 491, &d1.tag, &d1.contact, None, &[]),
        &d1.flow,
    );
    assert_eq!(requests(&out, "ACK").len(), 1);
    assert_eq!(only_response(&out).status.0, 491);
    let out = net.deliver(&caller.request("BYE", None, &[]), &caller.flow);
    assert_eq!(requests(&out, "BYE").len(), 1);
    net.settle();
}

#[test]
fn lost_ack_2xx_is_retransmitted_then_both_legs_get_bye_at_64_t1_rfc3261_s13_3_1_4() {
    let mut net = Net::new();
    let (_caller, d1, d2) = ringing_call(&mut net, Some(&sdp("198.51.100.7", 4000, "sendrecv")));
    let out = net.deliver(
        &d1.respond(200, Some(&sdp("10.0.0.5", 5000, "sendrecv")), &[]),
        &d1.flow,
    );
    assert_eq!(with_status(&out, 200).len(), 1);
    let cancel = requests(&out, "CANCEL").pop().unwrap().1;
    net.deliver(
        &respond_to(&cancel, 200, &d2.tag, &d2.contact, None, &[]),
        &d2.flow,
    );
    net.deliver(&d2.respond(487, None, &[]), &d2.flow);
    // Retransmissions at T1, 2T1, 4T1, then every T2 (0.5, 1.5, 3.5, 7.5, 11.5 ... s).
    let mut at = Vec::new();
    let start = net.now;
    for _ in 0..320 {
        let out = net.advance(Duration::from_millis(100));
        if !with_status(&out, 200).is_empty() {
            at.push(net.now.duration_since(start).as_millis());
        }
        if !requests(&out, "BYE").is_empty() {
            break;
        }
    }
    assert_eq!(&at[..5], [500, 1500, 3500, 7500, 11500]);
    assert!(at.iter().all(|ms| *ms < 32_000));
    let elapsed = net.now.duration_since(start);
    assert_eq!(elapsed, Duration::from_secs(32), "gave up at 64*T1");
    assert_eq!(net.relay.live(), 0);
    let last = net.records().pop().unwrap();
    assert_eq!(last.end_reason, Some(EndReason::AckTimeout));
    net.settle();
}

#[test]
fn lost_ack_bye_goes_to_both_legs() {
    let mut net = Net::new();
    let (caller, d1, d2) = ringing_call(&mut net, Some(&sdp("198.51.100.7", 4000, "sendrecv")));
    net.deliver(
        &d1.respond(200, Some(&sdp("10.0.0.5", 5000, "sendrecv")), &[]),
        &d1.flow,
    );
    let _ = d2;
    let out = net.advance(Duration::from_secs(32));
    let byes = requests(&out, "BYE");
    let to: Vec<SocketAddr> = byes.iter().map(|(d, _)| d.addr).collect();
    assert!(
        to.contains(&caller.flow.peer) && to.contains(&d1.flow.peer),
        "{:?}",
        dump(&out)
    );
    net.settle();
}

#[test]
fn late_offer_ack_to_the_device_carries_the_callers_answer_rfc3261_s13_2_1() {
    let mut net = Net::new();
    let (mut caller, d1, d2) = ringing_call(&mut net, None);
    assert!(d1.invite.body.is_empty(), "no offer on leg B");
    assert_eq!(net.relay.allocations(), 0);
    // The device offers in its 2xx; the caller gets it anchored, and we wait for its ACK.
    let out = net.deliver(
        &d1.respond(200, Some(&sdp("10.0.0.5", 5000, "sendrecv")), &[]),
        &d1.flow,
    );
    assert!(
        requests(&out, "ACK").is_empty(),
        "no ACK before the caller's answer"
    );
    let ok = with_status(&out, 200).pop().unwrap();
    assert_eq!(media_of(&ok.body).0, RELAY_IP);
    let cancel = requests(&out, "CANCEL").pop().unwrap().1;
    net.deliver(
        &respond_to(&cancel, 200, &d2.tag, &d2.contact, None, &[]),
        &d2.flow,
    );
    net.deliver(&d2.respond(487, None, &[]), &d2.flow);
    caller.answered(&ok);
    let out = net.deliver(
        &caller.ack(2, Some(&sdp("198.51.100.7", 4000, "sendrecv"))),
        &caller.flow,
    );
    let acks = requests(&out, "ACK");
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].0.addr, d1.flow.peer);
    assert_eq!(media_of(&acks[0].1.body).0, RELAY_IP);
    let id = net.relay.ids()[0];
    assert!(net
        .relay
        .remotes(id)
        .iter()
        .any(|r| r.leg == Leg::A && r.rtp == Some("198.51.100.7:4000".parse().unwrap())));
    let out = net.deliver(&caller.request("BYE", None, &[]), &caller.flow);
    assert_eq!(requests(&out, "BYE").len(), 1);
    net.settle();
}

#[test]
fn session_timer_expiry_ends_the_call_with_bye_to_both_rfc4028_s10() {
    let mut net = Net::new();
    let (mut caller, d1, d2) = ringing_call_with(&mut net, &["Session-Expires: 120;refresher=uac"]);
    let out = net.deliver(
        &d1.respond(200, Some(&sdp("10.0.0.5", 5000, "sendrecv")), &[]),
        &d1.flow,
    );
    let ok = with_status(&out, 200).pop().unwrap();
    assert_eq!(
        ok.headers.get(&HeaderName::SessionExpires),
        Some("120;refresher=uac")
    );
    assert_eq!(ok.headers.get(&HeaderName::Require), Some("timer"));
    let cancel = requests(&out, "CANCEL").pop().unwrap().1;
    net.deliver(
        &respond_to(&cancel, 200, &d2.tag, &d2.contact, None, &[]),
        &d2.flow,
    );
    net.deliver(&d2.respond(487, None, &[]), &d2.flow);
    caller.answered(&ok);
    net.deliver(&caller.ack(2, None), &caller.flow);
    // The caller refreshes once at 60 s (UPDATE): the session lives on.
    net.advance(Duration::from_secs(60));
    let out = net.deliver(
        &caller.request("UPDATE", None, &["Session-Expires: 120;refresher=uac"]),
        &caller.flow,
    );
    assert_eq!(only_response(&out).status.0, 200);
    // Then silence: RFC 4028 §10, BYE at 120 - min(32, 40) = 88 s after the refresh.
    let out = net.advance(Duration::from_secs(87));
    assert!(requests(&out, "BYE").is_empty(), "{:?}", dump(&out));
    let out = net.advance(Duration::from_secs(1));
    let byes = requests(&out, "BYE");
    assert_eq!(byes.len(), 2, "{:?}", dump(&out));
    assert_eq!(net.relay.live(), 0);
    assert_eq!(
        net.records().pop().unwrap().end_reason,
        Some(EndReason::SessionExpired)
    );
    net.settle();
}

fn ringing_call_with(net: &mut Net, extra: &[&str]) -> (Caller, Device, Device) {
    let (desk, soft) = (bob_desk(), bob_soft());
    net.register(&desk);
    net.register(&soft);
    let offer = sdp("198.51.100.7", 4000, "sendrecv");
    let (caller, out) = net.call(&alice(), "sip:bob@example.com", Some(&offer), extra);
    let invites = requests(&out, "INVITE");
    assert_eq!(invites.len(), 2, "{:?}", dump(&out));
    let find = |p: &Phone| {
        invites
            .iter()
            .find(|(d, _)| d.addr == p.flow.peer)
            .unwrap()
            .1
            .clone()
    };
    let d1 = Device::new(find(&desk), "desk", &desk);
    let d2 = Device::new(find(&soft), "soft", &soft);
    for d in [&d1, &d2] {
        net.deliver(&d.respond(180, None, &[]), &d.flow);
    }
    (caller, d1, d2)
}

#[test]
fn too_small_session_expires_gets_422_with_min_se_rfc4028_s5() {
    let mut net = Net::new();
    net.register(&bob_desk());
    let (_, out) = net.call(
        &alice(),
        "sip:bob@example.com",
        None,
        &["Session-Expires: 30"],
    );
    let r = only_response(&out);
    assert_eq!(r.status.0, 422);
    assert_eq!(r.headers.get(&HeaderName::MinSe), Some("90"));
    net.settle();
}

#[test]
fn we_refresh_leg_b_when_the_device_makes_us_the_refresher() {
    let mut net = Net::new();
    let (mut caller, d1, d2) = ringing_call(&mut net, Some(&sdp("198.51.100.7", 4000, "sendrecv")));
    let out = net.deliver(
        &d1.respond(
            200,
            Some(&sdp("10.0.0.5", 5000, "sendrecv")),
            &[
                "Session-Expires: 200;refresher=uac",
                "Allow: INVITE, ACK, BYE, CANCEL, UPDATE",
            ],
        ),
        &d1.flow,
    );
    let ok = with_status(&out, 200).pop().unwrap();
    let cancel = requests(&out, "CANCEL").pop().unwrap().1;
    net.deliver(
        &respond_to(&cancel, 200, &d2.tag, &d2.contact, None, &[]),
        &d2.flow,
    );
    net.deliver(&d2.respond(487, None, &[]), &d2.flow);
    caller.answered(&ok);
    net.deliver(&caller.ack(2, None), &caller.flow);
    let out = net.advance(Duration::from_secs(100));
    let updates = requests(&out, "UPDATE");
    assert_eq!(
        updates.len(),
        1,
        "refresh at half the interval: {:?}",
        dump(&out)
    );
    assert_eq!(updates[0].0.addr, d1.flow.peer);
    assert!(updates[0].1.body.is_empty());
    let ok = respond_to(
        &updates[0].1,
        200,
        &d1.tag,
        &d1.contact,
        None,
        &["Session-Expires: 200;refresher=uac"],
    );
    net.deliver(&ok, &d1.flow);
    let out = net.advance(Duration::from_secs(100));
    assert_eq!(requests(&out, "UPDATE").len(), 1, "and again");
    assert!(requests(&out, "BYE").is_empty());
    let out = net.deliver(&caller.request("BYE", None, &[]), &caller.flow);
    assert_eq!(requests(&out, "BYE").len(), 1);
    net.settle();
}

#[test]
fn dead_media_ends_the_call() {
    let mut c = config();
    c.calls.media_timeout = Some(Duration::from_secs(60));
    let mut net = Net::with(c);
    let (_caller, _d1) = answered_call(&mut net);
    let id = net.relay.ids()[0];
    // Media flows for a while...
    for _ in 0..4 {
        net.advance(Duration::from_secs(20));
        let mut stats = MediaStats::default();
        stats.a.last_packet = Some(net.now);
        stats.b.last_packet = Some(net.now);
        net.relay.set_stats(id, stats);
    }
    assert_eq!(net.ep.active_calls().len(), 1);
    // ... then stops.
    let out = net.advance(Duration::from_secs(75));
    let mut to: Vec<SocketAddr> = requests(&out, "BYE").iter().map(|(d, _)| d.addr).collect();
    to.sort();
    to.dedup();
    assert_eq!(
        to.len(),
        2,
        "BYE to both legs (retransmitted): {:?}",
        dump(&out)
    );
    assert_eq!(
        net.records().pop().unwrap().end_reason,
        Some(EndReason::MediaTimeout)
    );
    net.settle();
}

// ---------------------------------------------------------------------------------------------
// Bad input and abuse

#[test]
fn malformed_sdp_gets_488_with_a_reason() {
    let mut net = Net::new();
    net.register(&bob_desk());
    let (_, out) = net.call(
        &alice(),
        "sip:bob@example.com",
        Some("v=0\r\nthis is not sdp\r\n"),
        &[],
    );
    let r = only_response(&out);
    assert_eq!(r.status.0, 488);
    assert_ne!(
        r.reason, "Not Acceptable Here",
        "the reason says what is wrong"
    );
    assert!(r.headers.get(&HeaderName::Warning).is_some());
    assert_eq!(net.relay.allocations(), 0);
    assert_eq!(
        net.records().pop().unwrap().disposition,
        Some(Disposition::Failed)
    );
    net.settle();
}

#[test]
fn max_forwards_zero_is_483_and_our_own_via_coming_back_is_482() {
    let mut net = Net::new();
    net.register(&bob_desk());
    let text = format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-mf0;rport\r\n\
         Max-Forwards: 0\r\nFrom: <sip:alice@{DOMAIN}>;tag=m0\r\nTo: <sip:bob@{DOMAIN}>\r\nCall-ID: mf0@x\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:alice@198.51.100.7>\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(
        only_response(&net.deliver(&text, &alice().flow)).status.0,
        483
    );
    // Leg B's Max-Forwards counts down: 1 arrives as 0 at the device.
    let (caller, out) = net.call(&alice(), "sip:bob@example.com", None, &["Max-Forwards: 1"]);
    let inv = requests(&out, "INVITE").pop().unwrap().1;
    assert_eq!(inv.max_forwards(), Some(0));
    net.deliver(&caller.cancel(), &caller.flow);
    // A device forwarding our INVITE back to us: our branch in its Via list.
    let looped = format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5:40001;branch=z9hG4bK-fw1;rport\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-cf-0123456789abcdef;rport\r\n\
         Max-Forwards: 68\r\nFrom: <sip:alice@{DOMAIN}>;tag=l1\r\nTo: <sip:bob@{DOMAIN}>\r\nCall-ID: loop1@x\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:bob@10.0.0.5>\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(
        only_response(&net.deliver(&looped, &bob_desk().flow))
            .status
            .0,
        482
    );
    net.advance(Duration::from_secs(1));
    net.settle();
}

#[test]
fn leg_b_max_forwards_is_decremented() {
    let mut net = Net::new();
    net.register(&bob_desk());
    let (caller, out) = net.call(&alice(), "sip:bob@example.com", None, &[]);
    let inv = requests(&out, "INVITE").pop().unwrap().1;
    assert_eq!(inv.max_forwards(), Some(69));
    net.deliver(&caller.cancel(), &caller.flow);
    net.settle();
}

#[test]
fn invite_flood_from_one_source_gets_503_with_retry_after() {
    let mut c = config();
    c.calls.invites_per_second_per_source = 1;
    c.calls.invite_burst_per_source = 3;
    let mut net = Net::with(c);
    let mut statuses = Vec::new();
    for i in 0..6 {
        let text = format!(
            "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.66:5060;branch=z9hG4bK-fl{i};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=f{i}\r\nTo: <sip:bob@{DOMAIN}>\r\nCall-ID: fl{i}@x\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:alice@198.51.100.66>\r\nContent-Length: 0\r\n\r\n"
        );
        let r = only_response(&net.deliver(&text, &udp_flow("198.51.100.66:5060")));
        if r.status.0 == 503 {
            assert_eq!(r.headers.get(&HeaderName::RetryAfter), Some("10"));
        }
        statuses.push(r.status.0);
    }
    assert_eq!(statuses, [407, 407, 407, 503, 503, 503]);
    // Another source is not affected; the bucket refills.
    let other = format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.67:5060;branch=z9hG4bK-o1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=o1\r\nTo: <sip:bob@{DOMAIN}>\r\nCall-ID: o1@x\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:alice@198.51.100.67>\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(
        only_response(&net.deliver(&other, &udp_flow("198.51.100.67:5060")))
            .status
            .0,
        407
    );
    assert!(net.ep.stats().invites_limited >= 3);
    net.settle();
}

#[test]
fn ringing_calls_per_source_are_limited() {
    let mut c = config();
    c.calls.max_ringing_per_source = 1;
    let mut net = Net::with(c);
    net.register(&bob_desk());
    let (first, out) = net.call(&alice(), "sip:bob@example.com", None, &[]);
    assert_eq!(requests(&out, "INVITE").len(), 1);
    let (_, out) = net.call(&alice(), "sip:bob@example.com", None, &[]);
    let r = only_response(&out);
    assert_eq!(r.status.0, 503);
    assert!(r.headers.get(&HeaderName::RetryAfter).is_some());
    net.deliver(&first.cancel(), &first.flow);
    // Once the first stopped ringing, calls go through again.
    let (again, out) = net.call(&alice(), "sip:bob@example.com", None, &[]);
    assert_eq!(requests(&out, "INVITE").len(), 1, "{:?}", dump(&out));
    net.deliver(&again.cancel(), &again.flow);
    net.settle();
}

#[test]
fn media_relay_exhausted_gives_503_and_nothing_leaks() {
    let mut net = Net::new();
    net.register(&bob_desk());
    net.relay
        .fail_with(Some(confab_core::call::MediaError::Exhausted));
    let (_, out) = net.call(
        &alice(),
        "sip:bob@example.com",
        Some(&sdp("198.51.100.7", 4000, "sendrecv")),
        &[],
    );
    assert_eq!(only_response(&out).status.0, 503);
    net.relay.fail_with(None);
    // The ringing slot was given back too: a call goes through.
    let (c, out) = net.call(
        &alice(),
        "sip:bob@example.com",
        Some(&sdp("198.51.100.7", 4000, "sendrecv")),
        &[],
    );
    assert_eq!(requests(&out, "INVITE").len(), 1);
    net.deliver(&c.cancel(), &c.flow);
    net.settle();
}

#[test]
fn unusable_answer_from_a_device_hangs_it_up_and_the_others_ring_on() {
    let mut net = Net::new();
    let (caller, d1, d2) = ringing_call(&mut net, Some(&sdp("198.51.100.7", 4000, "sendrecv")));
    let out = net.deliver(&d1.respond(200, Some("garbage"), &[]), &d1.flow);
    assert_eq!(requests(&out, "ACK").len(), 1);
    assert_eq!(requests(&out, "BYE").len(), 1);
    assert!(with_status(&out, 200).is_empty());
    let out = net.deliver(&d2.respond(486, None, &[]), &d2.flow);
    assert_eq!(
        with_status(&out, 486).len(),
        1,
        "best of 488 and 486: {:?}",
        dump(&out)
    );
    let _ = caller;
    net.settle();
}

#[test]
fn in_dialog_request_for_an_unknown_dialog_is_481() {
    let mut net = Net::new();
    let text = format!(
        "BYE sip:192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-x1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=x\r\nTo: <sip:bob@{DOMAIN}>;tag=y\r\nCall-ID: nope@x\r\n\
         CSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(
        only_response(&net.deliver(&text, &alice().flow)).status.0,
        481
    );
    let reinvite = text.replace("BYE", "INVITE");
    assert_eq!(
        only_response(&net.deliver(&reinvite, &alice().flow))
            .status
            .0,
        481
    );
    net.settle();
}

#[test]
fn out_of_order_cseq_in_dialog_is_500_rfc3261_s12_2_2() {
    let mut net = Net::new();
    let (mut caller, _d1) = answered_call(&mut net);
    let text = caller.request("INFO", None, &[]);
    let old = text.replace(&format!("CSeq: {} INFO", caller.cseq), "CSeq: 1 INFO");
    assert_eq!(
        only_response(&net.deliver(&old, &caller.flow)).status.0,
        500
    );
    let out = net.deliver(&caller.request("BYE", None, &[]), &caller.flow);
    assert_eq!(requests(&out, "BYE").len(), 1);
    net.settle();
}

#[test]
fn garbage_never_panics_in_a_live_call() {
    let mut net = Net::new();
    let (mut caller, mut d1) = answered_call(&mut net);
    let base = [
        caller.request("INVITE", Some(&sdp("198.51.100.7", 4100, "sendonly")), &[]),
        d1.request("UPDATE", Some("v=0\r\n"), &[]),
        d1.respond(200, Some("x"), &[]),
        caller.ack(7, Some("v=0")),
    ];
    for msg in &base {
        for cut in (0..msg.len()).step_by(37) {
            let mut bytes = msg.as_bytes().to_vec();
            bytes.truncate(cut);
            let mut out = Vec::new();
            net.ep
                .handle_message(net.now, UNIX0, &bytes, &caller.flow, &mut out);
        }
    }
    assert_eq!(net.ep.stats().internal_errors, 0);
    let out = net.deliver(&caller.request("BYE", None, &[]), &caller.flow);
    let _ = out;
    net.advance(Duration::from_secs(40));
    net.settle();
}

// ---------------------------------------------------------------------------------------------
// NAT keep-alives

#[test]
fn keepalives_go_to_every_udp_flow_from_its_local_socket() {
    let mut c = config();
    c.nat_keepalive_interval = Some(Duration::from_secs(25));
    let mut net = Net::with(c);
    net.register(&bob_desk());
    net.register(&bob_soft());
    net.advance(Duration::from_secs(1)); // arms the driver
    let out = net.advance(Duration::from_secs(25));
    let kas: Vec<&Transmit> = out
        .iter()
        .filter(|t| t.bytes.as_ref() == b"\r\n\r\n")
        .collect();
    assert_eq!(kas.len(), 1, "UDP flows only");
    assert_eq!(kas[0].destination.addr, bob_desk().flow.peer);
    assert_eq!(kas[0].destination.local, Some(SERVER.parse().unwrap()));
    let out = net.advance(Duration::from_secs(25));
    assert_eq!(
        out.iter()
            .filter(|t| t.bytes.as_ref() == b"\r\n\r\n")
            .count(),
        1
    );
    assert_eq!(net.ep.stats().keepalives_sent, 2);
}

#[test]
fn early_media_183_reaches_the_caller_anchored_rfc3960() {
    let mut net = Net::new();
    let (caller, d1, _d2) = ringing_call(&mut net, Some(&sdp("198.51.100.7", 4000, "sendrecv")));
    let out = net.deliver(
        &d1.respond(183, Some(&sdp("10.0.0.5", 5000, "sendrecv")), &[]),
        &d1.flow,
    );
    let progress = with_status(&out, 183);
    assert_eq!(progress.len(), 1);
    let (ip, port) = media_of(&progress[0].body);
    assert_eq!(ip, RELAY_IP);
    let id = net.relay.ids()[0];
    assert!(net
        .relay
        .remotes(id)
        .iter()
        .any(|r| r.leg == Leg::B && r.rtp == Some("10.0.0.5:5000".parse().unwrap())));
    // The 2xx that follows carries the same relay address and port.
    let out = net.deliver(
        &d1.respond(200, Some(&sdp("10.0.0.5", 5000, "sendrecv")), &[]),
        &d1.flow,
    );
    let ok = with_status(&out, 200).pop().unwrap();
    assert_eq!(media_of(&ok.body), (RELAY_IP.to_owned(), port));
    let mut caller = caller;
    caller.answered(&ok);
    net.deliver(&caller.ack(2, None), &caller.flow);
    let out = net.deliver(&caller.request("BYE", None, &[]), &caller.flow);
    assert_eq!(requests(&out, "BYE").len(), 1);
    net.settle();
}

#[test]
fn bye_on_the_early_dialog_ends_ringing_like_cancel_rfc3261_s15() {
    let mut net = Net::new();
    let (mut caller, _d1, _d2) =
        ringing_call(&mut net, Some(&sdp("198.51.100.7", 4000, "sendrecv")));
    // The caller learnt our tag from the 180.
    let out = net.deliver(&caller.invite_text, &caller.flow);
    let ringing = only_response(&out);
    caller.answered(&ringing);
    let out = net.deliver(&caller.request("BYE", None, &[]), &caller.flow);
    assert_eq!(with_status(&out, 200).len(), 1);
    assert_eq!(with_status(&out, 487).len(), 1);
    assert_eq!(requests(&out, "CANCEL").len(), 2);
    assert_eq!(net.relay.live(), 0);
    assert_eq!(
        net.records().pop().unwrap().disposition,
        Some(Disposition::Cancelled)
    );
    net.settle();
}

#[test]
fn calls_from_many_threads_at_once() {
    let mut net = Net::new();
    net.register(&bob_desk());
    let shared = &net;
    std::thread::scope(|s| {
        for t in 0..4u32 {
            s.spawn(move || {
                for i in 0..5u32 {
                    let caller = Phone {
                        flow: udp_flow(&format!("198.51.100.{}:5060", 100 + t * 10 + i)),
                        ..alice()
                    };
                    let offer = sdp("198.51.100.7", 4000, "sendrecv");
                    let (c, out) = shared.call_n(
                        1000 + t * 100 + i,
                        &caller,
                        "sip:bob@example.com",
                        Some(&offer),
                        &[],
                    );
                    assert_eq!(requests(&out, "INVITE").len(), 1, "{:?}", dump(&out));
                    let out = shared.deliver(&c.cancel(), &c.flow);
                    assert_eq!(with_status(&out, 487).len(), 1);
                }
            });
        }
    });
    assert_eq!(net.relay.allocations(), 20);
    net.settle();
}

/// Random interleavings of device answers, caller actions and time: never a panic, and once
/// everything settles no call and no relay port is left (RFC-independent invariant).
#[test]
fn random_interleavings_never_leak_ports_or_calls() {
    let mut seed: u64 = 0x5eed;
    let mut rand = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for round in 0..60 {
        let mut net = Net::new();
        let late = round % 3 == 0;
        let offer = sdp("198.51.100.7", 4000, "sendrecv");
        let (mut caller, mut d1, mut d2) =
            ringing_call(&mut net, (!late).then_some(offer.as_str()));
        let mut ok_seen: Option<Response> = None;
        for _ in 0..12 {
            let out = match rand(9) {
                0 | 1 => {
                    let d = if rand(2) == 0 { &d1 } else { &d2 };
                    let status = [180, 183, 200, 486, 603, 487, 500][rand(7) as usize];
                    let body =
                        matches!(status, 183 | 200).then(|| sdp("10.0.0.5", 5000, "sendrecv"));
                    net.deliver(&d.respond(status, body.as_deref(), &[]), &d.flow)
                }
                2 => net.deliver(&caller.cancel(), &caller.flow),
                3 => match &ok_seen {
                    Some(_) => {
                        let body = late.then(|| offer.clone());
                        net.deliver(&caller.ack(2, body.as_deref()), &caller.flow)
                    }
                    None => Vec::new(),
                },
                4 if ok_seen.is_some() => {
                    net.deliver(&caller.request("BYE", None, &[]), &caller.flow)
                }
                5 => {
                    let d = if rand(2) == 0 { &mut d1 } else { &mut d2 };
                    let m = ["BYE", "INFO", "INVITE"][rand(3) as usize];
                    let body = (m == "INVITE").then(|| sdp("10.0.0.5", 5006, "sendonly"));
                    let text = d.request(m, body.as_deref(), &[]);
                    let flow = d.flow;
                    net.deliver(&text, &flow)
                }
                6 if ok_seen.is_some() => {
                    let m = ["INVITE", "UPDATE", "INFO"][rand(3) as usize];
                    let body = (m != "INFO").then(|| sdp("198.51.100.7", 4002, "sendonly"));
                    net.deliver(&caller.request(m, body.as_deref(), &[]), &caller.flow)
                }
                _ => net.advance(Duration::from_millis(rand(40_000))),
            };
            for (d, r) in responses(&out) {
                if d.addr == caller.flow.peer
                    && r.status.0 == 200
                    && r.cseq().unwrap().to_string() == "2 INVITE"
                {
                    caller.answered(&r);
                    ok_seen = Some(r);
                }
            }
        }
        if ok_seen.is_some() {
            net.deliver(&caller.request("BYE", None, &[]), &caller.flow);
        } else {
            net.deliver(&caller.cancel(), &caller.flow);
        }
        assert_eq!(net.ep.stats().internal_errors, 0, "round {round}");
        // Everything ends by itself: no-answer, ACK give-up, transaction timers, lingering.
        net.advance(Duration::from_secs(200));
        assert_eq!(net.live_calls(), 0, "round {round}: calls left");
        assert_eq!(net.relay.live(), 0, "round {round}: ports left");
        let recs = net.records();
        assert!(
            recs.iter().any(|r| r.state == CallState::Ended),
            "round {round}"
        );
    }
}

#[test]
fn device_422_gets_the_invite_again_with_its_min_se_once_rfc4028_s7_4() {
    let mut net = Net::new();
    let (_caller, d1, d2) = ringing_call(&mut net, Some(&sdp("198.51.100.7", 4000, "sendrecv")));
    let first = d1.invite.clone();
    let too_small = d1.respond(422, None, &["Min-SE: 3600"]);
    let out = net.deliver(&too_small, &d1.flow);
    assert_eq!(requests(&out, "ACK").len(), 1, "{:?}", dump(&out));
    assert!(with_status(&out, 422).is_empty(), "the caller sees nothing");
    let again = requests(&out, "INVITE");
    assert_eq!(again.len(), 1, "{:?}", dump(&out));
    let (to, again) = again[0].clone();
    assert_eq!(to.addr, d1.flow.peer);
    assert_eq!(again.call_id(), first.call_id());
    assert_eq!(again.cseq().unwrap().seq, first.cseq().unwrap().seq + 1);
    assert_ne!(
        again.top_via().unwrap().branch(),
        first.top_via().unwrap().branch()
    );
    assert_eq!(again.headers.get(&HeaderName::SessionExpires), Some("3600"));
    assert_eq!(again.headers.get(&HeaderName::MinSe), Some("3600"));
    assert_eq!(again.body, first.body, "the same offer");

    // A retransmitted 422 is ACKed again and sends nothing else.
    let out = net.deliver(&too_small, &d1.flow);
    assert_eq!(requests(&out, "ACK").len(), 1, "{:?}", dump(&out));
    assert!(requests(&out, "INVITE").is_empty());

    // A second 422 is an ordinary failure: no third INVITE.
    let retried = Device::new(again, "desk", &bob_desk());
    let out = net.deliver(
        &retried.respond(422, None, &["Min-SE: 7200"]),
        &retried.flow,
    );
    assert!(requests(&out, "INVITE").is_empty(), "{:?}", dump(&out));
    assert_eq!(requests(&out, "ACK").len(), 1);

    // The other device answers: the call goes on as usual.
    let out = net.deliver(
        &d2.respond(200, Some(&sdp("10.0.0.6", 5002, "sendrecv")), &[]),
        &d2.flow,
    );
    assert_eq!(with_status(&out, 200).len(), 1, "{:?}", dump(&out));
    // Nothing of the call is left once it is over (here: the caller never ACKs).
    net.settle();
}

#[test]
fn device_422_answered_after_the_retry_connects_the_call() {
    let mut net = Net::new();
    let (_caller, d1, _d2) = ringing_call(&mut net, Some(&sdp("198.51.100.7", 4000, "sendrecv")));
    let out = net.deliver(&d1.respond(422, None, &["Min-SE: 1900"]), &d1.flow);
    let (_, again) = requests(&out, "INVITE").pop().expect("INVITE again");
    let retried = Device::new(again, "desk", &bob_desk());
    let out = net.deliver(
        &retried.respond(
            200,
            Some(&sdp("10.0.0.5", 5000, "sendrecv")),
            &["Session-Expires: 1900;refresher=uac"],
        ),
        &retried.flow,
    );
    assert_eq!(with_status(&out, 200).len(), 1, "{:?}", dump(&out));
    assert_eq!(
        requests(&out, "CANCEL").len(),
        1,
        "the other device stops ringing"
    );
}

#[test]
fn provisional_response_to_a_relayed_reinvite_reaches_its_sender_without_sdp() {
    let mut net = Net::new();
    let (mut caller, d1) = answered_call(&mut net);
    let out = net.deliver(
        &caller.request("INVITE", Some(&sdp("198.51.100.7", 4100, "sendonly")), &[]),
        &caller.flow,
    );
    let (_, reinv) = requests(&out, "INVITE").pop().expect("re-INVITE relayed");
    let ringing = respond_to(
        &reinv,
        183,
        &d1.tag,
        &d1.contact,
        Some(&sdp("10.0.0.5", 5002, "recvonly")),
        &[],
    );
    let out = net.deliver(&ringing, &d1.flow);
    let progress = with_status(&out, 183);
    assert_eq!(progress.len(), 1, "{:?}", dump(&out));
    assert_eq!(progress[0].call_id(), caller.call_id);
    assert!(
        progress[0].body.is_empty(),
        "no SDP in the relayed provisional"
    );
    // The final answer still completes the re-INVITE.
    let ok = respond_to(
        &reinv,
        200,
        &d1.tag,
        &d1.contact,
        Some(&sdp("10.0.0.5", 5002, "recvonly")),
        &[],
    );
    let out = net.deliver(&ok, &d1.flow);
    assert_eq!(with_status(&out, 200).len(), 1, "{:?}", dump(&out));
}
