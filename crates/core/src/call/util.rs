//! Small pure helpers of the call core: identifiers, our Via/Contact, RFC 4028 header parsing,
//! RFC 3261 §16.7 response selection.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use confab_sip::{
    Destination, HeaderName, Headers, Request, Response, Source, TransportKind, Uri, Via,
};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::Settings;

/// Every branch we generate starts with this (RFC 3261 §8.1.1.7 cookie, then ours), so a
/// request carrying one of our Vias came back to us: a loop (RFC 3261 §16.3 step 4).
pub(crate) const BRANCH_PREFIX: &str = "z9hG4bK-cf-";

/// Methods we accept in dialogs (Allow, RFC 3261 §20.5).
pub(crate) const DIALOG_ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE";

/// Random identifiers (tags, branches, Call-IDs, SDP session ids), seeded for reproducible
/// tests.
#[derive(Debug)]
pub(crate) struct IdSource(Mutex<StdRng>);

impl IdSource {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s ^ 0x6361_6c6c),
            None => StdRng::from_entropy(),
        };
        Self(Mutex::new(rng))
    }

    fn hex(&self, bytes: usize) -> String {
        let mut b = [0u8; 16];
        let n = bytes.min(16);
        self.0.lock().fill_bytes(&mut b[..n]);
        let mut out = String::with_capacity(n * 2);
        push_hex(&mut out, &b[..n]);
        out
    }

    pub(crate) fn tag(&self) -> String {
        self.hex(8)
    }

    pub(crate) fn branch(&self) -> String {
        self.prefixed(BRANCH_PREFIX, 8, "")
    }

    pub(crate) fn call_id(&self, domain: &str) -> String {
        let mut id = self.prefixed("cf", 12, "@");
        id.push_str(domain);
        id
    }

    /// `prefix`, `bytes` random bytes in hex, then `suffix`, in one allocation.
    fn prefixed(&self, prefix: &str, bytes: usize, suffix: &str) -> String {
        let mut b = [0u8; 16];
        let n = bytes.min(16);
        self.0.lock().fill_bytes(&mut b[..n]);
        let mut out = String::with_capacity(prefix.len() + n * 2 + suffix.len() + 32);
        out.push_str(prefix);
        push_hex(&mut out, &b[..n]);
        out.push_str(suffix);
        out
    }

    pub(crate) fn record_id(&self) -> String {
        self.hex(12)
    }

    pub(crate) fn u64(&self) -> u64 {
        // SDP session ids stay well within 63 bits (some parsers read them as signed).
        self.0.lock().next_u64() >> 2
    }
}

/// How we appear on one flow: the Via sent-by and Contact of our requests and responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Local {
    pub(crate) transport: TransportKind,
    /// `host:port` for Via and Contact.
    pub(crate) sent_by: String,
}

impl Local {
    /// Our address on a flow: the advertised address for its transport; else the local
    /// address of the socket, unless that is a wildcard, then the first advertised or local IP
    /// (non-loopback first) with the socket's port; the domain as a last resort.
    pub(crate) fn new(transport: TransportKind, local: SocketAddr, settings: &Settings) -> Self {
        let addr = settings
            .advertised
            .iter()
            .find(|(t, _)| *t == transport)
            .map(|(_, a)| *a)
            .or_else(|| (!local.ip().is_unspecified()).then_some(local))
            .or_else(|| {
                settings
                    .fallback_ip
                    .map(|ip| SocketAddr::new(ip, local.port()))
            });
        let mut sent_by = String::with_capacity(48);
        match addr {
            Some(a @ SocketAddr::V4(_)) => push_socket_addr(&mut sent_by, a),
            // Without the scope id `SocketAddrV6`'s Display would add.
            Some(a) => {
                let _ = write!(sent_by, "[{}]:{}", a.ip(), a.port());
            }
            None => {
                sent_by.push_str(&settings.domain);
                sent_by.push(':');
                push_u64(&mut sent_by, u64::from(local.port()));
            }
        }
        Self { transport, sent_by }
    }

    /// A fresh top Via for a request we send (RFC 3261 §8.1.1.7, RFC 3581 rport).
    pub(crate) fn via(&self, branch: &str) -> String {
        let token = self.transport.via_token();
        let mut v = String::with_capacity(
            "SIP/2.0/ ;branch=;rport".len() + token.len() + self.sent_by.len() + branch.len(),
        );
        v.push_str("SIP/2.0/");
        v.push_str(token);
        v.push(' ');
        v.push_str(&self.sent_by);
        v.push_str(";branch=");
        v.push_str(branch);
        v.push_str(";rport");
        v
    }

    /// Our Contact value on this flow.
    pub(crate) fn contact(&self) -> String {
        let param = match self.transport {
            TransportKind::Udp => "",
            TransportKind::Tcp => ";transport=tcp",
            TransportKind::Tls => ";transport=tls",
            TransportKind::Ws => ";transport=ws",
            TransportKind::Wss => ";transport=wss",
        };
        let mut c = String::with_capacity("<sip:>".len() + self.sent_by.len() + param.len());
        c.push_str("<sip:");
        c.push_str(&self.sent_by);
        c.push_str(param);
        c.push('>');
        c
    }
}

/// Where requests to a device go: the flow its requests came from (NAT traversal), never the
/// host of its Contact.
pub(crate) fn flow_destination(source: &Source) -> Destination {
    Destination {
        transport: source.transport,
        addr: source.peer,
        connection: source.connection,
        local: Some(source.local),
    }
}

/// Whether any Via of `req` is one we wrote: our branch prefix and one of our sent-bys.
pub(crate) fn has_our_via(req: &Request, ours: &dyn Fn(&Via) -> bool) -> bool {
    req.headers.values(&HeaderName::Via).any(|v| {
        Via::parse(v).is_ok_and(|via| {
            via.branch().is_some_and(|b| b.starts_with(BRANCH_PREFIX)) && ours(&via)
        })
    })
}

/// Whether an option tag is listed in Supported or Require (RFC 3261 §20.37, §20.32).
pub(crate) fn supports(headers: &Headers, tag: &str) -> bool {
    [HeaderName::Supported, HeaderName::Require]
        .iter()
        .any(|h| {
            headers
                .values(h)
                .any(|v| v.trim().eq_ignore_ascii_case(tag))
        })
}

/// Whether the peer's Allow lists `method` (RFC 3261 §20.5).
pub(crate) fn allows(headers: &Headers, method: &str) -> bool {
    headers
        .values(&HeaderName::Allow)
        .any(|v| v.trim().eq_ignore_ascii_case(method))
}

/// Who refreshes a session (RFC 4028 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresher {
    Uac,
    Uas,
}

/// `Session-Expires: delta-seconds [;refresher=uac|uas]` (RFC 4028 §4). A malformed value counts
/// as absent.
pub(crate) fn session_expires(headers: &Headers) -> Option<(u64, Option<Refresher>)> {
    let v = headers.get(&HeaderName::SessionExpires)?;
    let mut parts = v.split(';');
    let secs: u64 = parts.next()?.trim().parse().ok()?;
    let mut refresher = None;
    for p in parts {
        let mut kv = p.splitn(2, '=');
        let k = kv.next().unwrap_or("").trim();
        let val = kv.next().unwrap_or("").trim();
        if k.eq_ignore_ascii_case("refresher") {
            refresher = if val.eq_ignore_ascii_case("uac") {
                Some(Refresher::Uac)
            } else if val.eq_ignore_ascii_case("uas") {
                Some(Refresher::Uas)
            } else {
                None
            };
        }
    }
    Some((secs, refresher))
}

/// `Min-SE: delta-seconds` (RFC 4028 §5).
pub(crate) fn min_se(headers: &Headers) -> Option<u64> {
    headers
        .get(&HeaderName::MinSe)
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.trim().parse().ok())
}

/// RFC 4028 §10: the party that does not refresh ends the session this long before expiry.
pub(crate) fn expiry_margin(interval: Duration) -> Duration {
    (interval / 3).min(Duration::from_secs(32))
}

/// How good a final response is for the caller, lower is better (RFC 3261 §16.7 step 6:
/// 6xx first, else the lowest class; within 4xx we prefer the informative answers).
pub(crate) fn response_rank(status: u16) -> (u8, u8) {
    let class = match status / 100 {
        6 => 0,
        c => c as u8,
    };
    let within = match status {
        486 | 600 => 0,
        603 => 1,
        480 => 2,
        408 | 487 => 9,
        _ => 5,
    };
    (class, within)
}

/// Copies the headers that explain a failure from a device's response to ours.
pub(crate) fn copy_failure_headers(from: &Response, to: &mut Response) {
    for name in [
        HeaderName::RetryAfter,
        HeaderName::Warning,
        HeaderName::Reason,
    ] {
        for v in from.headers.get_all(&name) {
            to.headers.push(name.clone(), v);
        }
    }
}

/// A To header with `tag` added if it has none.
pub(crate) fn set_to_tag(resp: &mut Response, tag: &str) {
    let Some(line) = resp.headers.0.iter_mut().find(|h| h.name == HeaderName::To) else {
        return;
    };
    // No `tag` anywhere (the usual initial INVITE): no tag parameter, nothing to parse.
    let maybe_tag = line
        .value
        .as_bytes()
        .windows(3)
        .any(|w| w.eq_ignore_ascii_case(b"tag"));
    let has_tag = maybe_tag
        && confab_sip::NameAddr::parse_tag(&line.value)
            .map_or_else(|_| line.value.contains(";tag="), |t| t.is_some());
    if !has_tag {
        let end = line.value.trim_end().len();
        line.value.truncate(end);
        line.value.reserve(5 + tag.len());
        line.value.push_str(";tag=");
        line.value.push_str(tag);
    }
}

/// The user part of a tel: number or dialled string without visual separators (RFC 3966 §5.1.1).
pub(crate) fn strip_visual(number: &str) -> String {
    number
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' '))
        .collect()
}

/// A Warning value for a refused SDP (RFC 3261 §20.43, code 399: miscellaneous).
pub(crate) fn warning(host: &str, text: &str) -> String {
    let text: String = text
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .take(100)
        .collect();
    format!("399 {host} \"{text}\"")
}

pub(crate) fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

/// What answering `req` later needs: the headers a response copies (RFC 3261 §8.2.6.2) and
/// the RFC 4028 ones its answer is built from. No body, no other header, and an empty
/// Request-URI: only for [`Response::for_request`], [`Request::call_id`], [`Request::cseq`]
/// and the Supported/Require/Session-Expires/Min-SE look-ups, never to be sent.
pub(crate) fn answer_template(req: &Request) -> Request {
    let keep = |n: &HeaderName| {
        matches!(
            n,
            HeaderName::Via
                | HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
                | HeaderName::Supported
                | HeaderName::Require
                | HeaderName::SessionExpires
                | HeaderName::MinSe
        )
    };
    let n = req.headers.iter().filter(|h| keep(&h.name)).count();
    let mut headers = Headers(Vec::with_capacity(n));
    headers
        .0
        .extend(req.headers.iter().filter(|h| keep(&h.name)).cloned());
    Request {
        method: req.method.clone(),
        uri: Uri::Other {
            scheme: String::new(),
            rest: String::new(),
        },
        headers,
        body: Bytes::new(),
    }
}

/// Appends `n` in decimal (no `format!`/`to_string`: this runs several times per call).
pub(crate) fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &buf[i..] {
        out.push(d as char);
    }
}

/// Appends `addr` as its `Display` writes it, IPv4 without the formatting machinery.
pub(crate) fn push_socket_addr(out: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            for (i, o) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_u64(out, u64::from(o));
            }
            out.push(':');
            push_u64(out, u64::from(a.port()));
        }
        SocketAddr::V6(a) => {
            let _ = write!(out, "{a}");
        }
    }
}

/// `n` in decimal, as a header value.
pub(crate) fn u64_string(n: u64) -> String {
    let mut s = String::with_capacity(20);
    push_u64(&mut s, n);
    s
}

/// Appends `bytes` as lower-case hex (no `format!` per byte: this runs several times per call).
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_expires_parses_refresher() {
        let mut h = Headers::new();
        h.push(HeaderName::SessionExpires, "1800;refresher=uac");
        assert_eq!(session_expires(&h), Some((1800, Some(Refresher::Uac))));
        h.set(HeaderName::SessionExpires, "x");
        assert_eq!(session_expires(&h), None);
        h.push(HeaderName::MinSe, "90");
        assert_eq!(min_se(&h), Some(90));
    }

    #[test]
    fn socket_addr_without_format() {
        for a in [
            "192.0.2.10:5060",
            "0.0.0.0:1",
            "255.255.255.255:65535",
            "[2001:db8::1]:5061",
            "[fe80::1%2]:5060",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let mut s = String::new();
            push_socket_addr(&mut s, a);
            assert_eq!(s, a.to_string());
        }
    }

    #[test]
    fn to_tag_added_only_when_missing() {
        let resp = |to: &str| Response {
            status: confab_sip::StatusCode(200),
            reason: "OK".to_owned(),
            headers: {
                let mut h = Headers::new();
                h.push(HeaderName::To, to);
                h
            },
            body: Bytes::new(),
        };
        for (to, want) in [
            ("<sip:bob@example.com>", "<sip:bob@example.com>;tag=t1"),
            ("<sip:bob@example.com>;tag=x", "<sip:bob@example.com>;tag=x"),
            ("<sip:bob@example.com>;TAG=x", "<sip:bob@example.com>;TAG=x"),
            (
                "<sip:tagger@example.com> ",
                "<sip:tagger@example.com>;tag=t1",
            ),
        ] {
            let mut r = resp(to);
            set_to_tag(&mut r, "t1");
            assert_eq!(r.headers.get(&HeaderName::To), Some(want), "{to}");
        }
    }

    #[test]
    fn decimal_without_format() {
        for n in [0, 7, 10, 99, 1800, 65535, u64::MAX] {
            assert_eq!(u64_string(n), n.to_string());
        }
    }

    #[test]
    fn ranking_prefers_6xx_then_lowest_class_then_busy() {
        let mut v = vec![408, 480, 486, 500, 302];
        v.sort_by_key(|s| response_rank(*s));
        assert_eq!(v, [302, 486, 480, 408, 500]);
        assert!(response_rank(603) < response_rank(302));
    }
}
