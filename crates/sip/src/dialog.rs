//! Dialogs (RFC 3261 §12, §13–§15), sans-IO.
//!
//! A [`Dialog`] is the state two user agents share for the life of a call leg: the Call-ID, both
//! tags, both CSeq counters, the route set and the remote target. It is plain data with a few
//! rules attached:
//!
//! - creation on each side: [`Dialog::new_uas`] (RFC 3261 §12.1.1) from the request that creates
//!   it and the tag we put in To, [`Dialog::new_uac`] (§12.1.2) from our request and a response
//!   carrying the peer's tag;
//! - requests we receive are checked with [`Dialog::handle_request`] (§12.2.2): an out-of-order
//!   CSeq is refused with 500, and a target refresh (re-INVITE, UPDATE) replaces the remote
//!   target;
//! - responses to our requests go through [`Dialog::handle_response`] (§12.2.1.2): a 2xx to a
//!   target refresh replaces the remote target, a 2xx to the initial INVITE confirms an early
//!   dialog;
//! - requests we send come from [`Dialog::request`] (§12.2.1.1) and ACKs for 2xx from
//!   [`Dialog::ack`] (§13.2.2.4).
//!
//! The dialog does not know transports: the caller adds the top Via (with a fresh branch),
//! Max-Forwards, Contact and the body, and decides where the request goes. It reads no clock and
//! sends nothing; dialog-level timers (session timers, 2xx retransmission) belong to the
//! transaction user that owns the dialog.

use std::fmt;

use crate::header::{HeaderName, Headers, NameAddr, Params};
use crate::message::{Method, Request, Response};
use crate::uri::Uri;

/// Identifies a dialog (RFC 3261 §12): Call-ID, local tag, remote tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

impl fmt::Display for DialogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{};l={};r={}",
            self.call_id, self.local_tag, self.remote_tag
        )
    }
}

/// RFC 3261 §12: a dialog is early (created by a provisional response) or confirmed (by a 2xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialogState {
    Early,
    Confirmed,
}

/// Why a message does not fit a dialog. Each error knows its answer ([`DialogError::status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialogError {
    /// A header the dialog needs is missing or does not parse (peer's fault): 400.
    #[error("Missing or malformed {0}")]
    Malformed(&'static str),
    /// The request's Call-ID or tags name another dialog: 481 (RFC 3261 §12.2.2).
    #[error("Call/Transaction Does Not Exist")]
    Mismatch,
    /// The CSeq is lower than the last one received: 500 (RFC 3261 §12.2.2).
    #[error("CSeq out of order")]
    OutOfOrder,
    /// A response without a To tag cannot create a dialog (RFC 3261 §12.1.2): dropped.
    #[error("response without To tag")]
    NoRemoteTag,
}

impl DialogError {
    /// The status to answer a request with, or `None` when the message (a response) is dropped.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Malformed(_) => Some(400),
            Self::Mismatch => Some(481),
            Self::OutOfOrder => Some(500),
            Self::NoRemoteTag => None,
        }
    }
}

/// One side of a dialog. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub call_id: String,
    /// Our tag: in From of the requests we send, in To of the requests we receive.
    pub local_tag: String,
    /// The peer's tag.
    pub remote_tag: String,
    /// The CSeq number of the last request we sent (0: none yet).
    pub local_cseq: u32,
    /// The CSeq number of the last request received (`None`: none yet, RFC 3261 §12.1.2).
    pub remote_cseq: Option<u32>,
    /// Route set, in the order the Route header of our requests lists it.
    pub route_set: Vec<NameAddr>,
    /// Where in-dialog requests are addressed (the peer's Contact URI).
    pub remote_target: Uri,
    /// Our address (From of our requests), without tag.
    pub local_uri: NameAddr,
    /// The peer's address (To of our requests), without tag.
    pub remote_uri: NameAddr,
    /// RFC 3261 §12.1.1: the dialog was created by a request over TLS for a SIPS URI.
    pub secure: bool,
    pub state: DialogState,
}

/// `n` with its tag set to `tag` (`params.set("tag", ..)`), as text: written straight into
/// one String rather than cloned, edited and formatted.
fn with_tag(n: &NameAddr, tag: &str) -> String {
    let mut out = String::with_capacity(64 + tag.len());
    if let Some(d) = &n.display {
        out.push('"');
        out.push_str(d);
        out.push_str("\" ");
    }
    out.push('<');
    // Writing into a String cannot fail.
    let _ = crate::uri::write_uri(&mut out, &n.uri);
    out.push('>');
    let mut set = false;
    for (name, value) in &n.params.0 {
        out.push(';');
        out.push_str(name);
        let value = if !set && name.eq_ignore_ascii_case("tag") {
            set = true;
            Some(tag)
        } else {
            value.as_deref()
        };
        if let Some(v) = value {
            out.push('=');
            out.push_str(v);
        }
    }
    if !set {
        out.push_str(";tag=");
        out.push_str(tag);
    }
    out
}

fn contact_uri(headers: &Headers) -> Option<Uri> {
    let v = headers.values(&HeaderName::Contact).next()?;
    crate::parse::name_addr_ref(v).ok().map(|n| n.uri.to_uri())
}

fn record_route(headers: &Headers) -> Result<Vec<NameAddr>, DialogError> {
    headers
        .values(&HeaderName::RecordRoute)
        .map(|v| NameAddr::parse(v).map_err(|_| DialogError::Malformed("Record-Route")))
        .collect()
}

/// Whether a method refreshes the remote target (RFC 3261 §12.2, RFC 3311 §5.1).
fn is_target_refresh(method: &Method) -> bool {
    matches!(method, Method::Invite | Method::Update)
}

impl Dialog {
    /// The UAS side (RFC 3261 §12.1.1), from the dialog-creating request and the tag we add to
    /// To. `early` is true when the dialog starts with a provisional response.
    ///
    /// The route set is the request's Record-Route in order, the remote target its Contact, the
    /// remote CSeq its CSeq; the local CSeq starts empty (our first request uses 1).
    pub fn new_uas(req: &Request, local_tag: &str, early: bool) -> Result<Self, DialogError> {
        let from = req
            .view_from()
            .map_err(|_| DialogError::Malformed("From"))?;
        let to = req.view_to().map_err(|_| DialogError::Malformed("To"))?;
        let (cseq, _) = req
            .view_cseq()
            .map_err(|_| DialogError::Malformed("CSeq"))?;
        let remote_tag = from.tag().unwrap_or_default().to_owned();
        let remote_target = contact_uri(&req.headers).ok_or(DialogError::Malformed("Contact"))?;
        let secure = matches!(&req.uri, Uri::Sip(u) if u.secure);
        Ok(Self {
            call_id: req.call_id().to_owned(),
            local_tag: local_tag.to_owned(),
            remote_tag,
            local_cseq: 0,
            remote_cseq: Some(cseq),
            route_set: record_route(&req.headers)?,
            remote_target,
            local_uri: to.to_name_addr_without_tag(),
            remote_uri: from.to_name_addr_without_tag(),
            secure,
            state: if early {
                DialogState::Early
            } else {
                DialogState::Confirmed
            },
        })
    }

    /// The UAC side (RFC 3261 §12.1.2), from our dialog-creating request and a 101–299 response
    /// with a To tag. A provisional response makes an early dialog, a 2xx a confirmed one.
    ///
    /// The route set is the response's Record-Route reversed, the remote target its Contact.
    pub fn new_uac(req: &Request, resp: &Response) -> Result<Self, DialogError> {
        let to = resp.view_to().map_err(|_| DialogError::Malformed("To"))?;
        let remote_tag = to.tag().ok_or(DialogError::NoRemoteTag)?.to_owned();
        let from = req
            .view_from()
            .map_err(|_| DialogError::Malformed("From"))?;
        let local_tag = from.tag().unwrap_or_default().to_owned();
        let (cseq, _) = req
            .view_cseq()
            .map_err(|_| DialogError::Malformed("CSeq"))?;
        // A provisional response may lack a Contact; the request URI stands in until one comes.
        let remote_target = match contact_uri(&resp.headers) {
            Some(u) => u,
            None if resp.status.is_provisional() => req.uri.clone(),
            None => return Err(DialogError::Malformed("Contact")),
        };
        let mut route_set = record_route(&resp.headers)?;
        route_set.reverse();
        let secure = matches!(&req.uri, Uri::Sip(u) if u.secure);
        Ok(Self {
            call_id: req.call_id().to_owned(),
            local_tag,
            remote_tag,
            local_cseq: cseq,
            remote_cseq: None,
            route_set,
            remote_target,
            local_uri: from.to_name_addr_without_tag(),
            remote_uri: to.to_name_addr_without_tag(),
            secure,
            state: if resp.status.is_success() {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
        })
    }

    pub fn id(&self) -> DialogId {
        DialogId {
            call_id: self.call_id.clone(),
            local_tag: self.local_tag.clone(),
            remote_tag: self.remote_tag.clone(),
        }
    }

    /// Whether `req` (received) belongs to this dialog: same Call-ID, From tag = remote tag,
    /// To tag = local tag (RFC 3261 §12.2.2).
    pub fn matches_request(&self, req: &Request) -> bool {
        if req.call_id() != self.call_id {
            return false;
        }
        let from_ok = req
            .from_tag()
            .is_ok_and(|tag| tag.unwrap_or_default() == self.remote_tag);
        let to_ok = req
            .to_tag()
            .is_ok_and(|tag| tag == Some(self.local_tag.as_str()));
        from_ok && to_ok
    }

    /// Checks a request received in this dialog (RFC 3261 §12.2.2) and applies it: the remote
    /// CSeq advances, and a target refresh with a Contact replaces the remote target.
    ///
    /// ACK and CANCEL are not sequenced (they carry the CSeq number of their INVITE) and only
    /// checked for membership. On `Err` the dialog is unchanged; answer with the error's status.
    pub fn handle_request(&mut self, req: &Request) -> Result<(), DialogError> {
        if !self.matches_request(req) {
            return Err(DialogError::Mismatch);
        }
        if matches!(req.method, Method::Ack | Method::Cancel) {
            return Ok(());
        }
        let (cseq, _) = req
            .view_cseq()
            .map_err(|_| DialogError::Malformed("CSeq"))?;
        // RFC 3261 §12.2.2: "lower than the remote sequence number ... MUST be rejected with a
        // 500". An equal number is a retransmission the transaction layer absorbs.
        if self.remote_cseq.is_some_and(|r| cseq < r) {
            return Err(DialogError::OutOfOrder);
        }
        self.remote_cseq = Some(cseq);
        if is_target_refresh(&req.method) {
            if let Some(target) = contact_uri(&req.headers) {
                self.remote_target = target;
            }
        }
        Ok(())
    }

    /// Applies a response to a request we sent in this dialog (RFC 3261 §12.2.1.2, §13.2.2.4):
    /// a 2xx to a target refresh replaces the remote target; a 2xx to the INVITE of an early
    /// dialog confirms it and takes the route set from the 2xx.
    pub fn handle_response(&mut self, method: &Method, resp: &Response) {
        if !resp.status.is_success() {
            return;
        }
        if self.state == DialogState::Early && *method == Method::Invite {
            if let Ok(mut routes) = record_route(&resp.headers) {
                routes.reverse();
                self.route_set = routes;
            }
            self.state = DialogState::Confirmed;
        }
        if is_target_refresh(method) {
            if let Some(target) = contact_uri(&resp.headers) {
                self.remote_target = target;
            }
        }
    }

    /// Marks the dialog confirmed (a UAS that sent its 2xx).
    pub fn confirm(&mut self) {
        self.state = DialogState::Confirmed;
    }

    /// Builds a new request in the dialog (RFC 3261 §12.2.1.1): the next local CSeq, To with the
    /// remote tag, From with ours, the Call-ID, and the Request-URI and Route headers from the
    /// remote target and route set (loose routing; a strict first route becomes the
    /// Request-URI with the remote target appended as the last Route).
    ///
    /// Not for ACK or CANCEL (see [`Dialog::ack`]). The caller adds the top Via, Max-Forwards,
    /// Contact (for target refreshes) and any body.
    pub fn request(&mut self, method: Method) -> Request {
        self.local_cseq = self.local_cseq.wrapping_add(1).max(1);
        let seq = self.local_cseq;
        self.build(method, seq)
    }

    /// The ACK for a 2xx to the INVITE with CSeq number `invite_cseq` (RFC 3261 §13.2.2.4): a
    /// request of the dialog with that CSeq number and method ACK. The caller adds a Via with a
    /// fresh branch and the body when the 2xx held the offer.
    pub fn ack(&self, invite_cseq: u32) -> Request {
        self.build(Method::Ack, invite_cseq)
    }

    fn build(&self, method: Method, seq: u32) -> Request {
        let mut headers = Headers::new();
        let (uri, routes) = self.request_target();
        for route in routes {
            headers.push(HeaderName::Route, route);
        }
        headers.push(HeaderName::From, with_tag(&self.local_uri, &self.local_tag));
        headers.push(HeaderName::To, with_tag(&self.remote_uri, &self.remote_tag));
        headers.push(HeaderName::CallId, self.call_id.clone());
        headers.push(HeaderName::CSeq, crate::header::cseq_text(seq, &method));
        Request {
            method,
            uri,
            headers,
            body: bytes::Bytes::new(),
        }
    }

    /// RFC 3261 §12.2.1.1: the Request-URI and the Route values.
    fn request_target(&self) -> (Uri, Vec<String>) {
        let Some(first) = self.route_set.first() else {
            return (self.remote_target.clone(), Vec::new());
        };
        let loose = match &first.uri {
            Uri::Sip(u) => u.params.contains("lr"),
            _ => true,
        };
        if loose {
            let routes = self.route_set.iter().map(ToString::to_string).collect();
            return (self.remote_target.clone(), routes);
        }
        // Strict router: its URI becomes the Request-URI (parameters not allowed there are
        // dropped, §19.1.1 Table 1: method and headers), and the remote target closes the list.
        let mut uri = first.uri.clone();
        if let Uri::Sip(u) = &mut uri {
            u.params.remove("method");
            u.headers.clear();
        }
        let mut routes: Vec<String> = self.route_set[1..]
            .iter()
            .map(ToString::to_string)
            .collect();
        routes.push(
            NameAddr {
                display: None,
                uri: self.remote_target.clone(),
                params: Params::default(),
            }
            .to_string(),
        );
        (uri, routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_tag_writes_what_setting_the_tag_displays() {
        for text in [
            "<sip:a@example.com>",
            "\"A \\\"B\" <sip:a@example.com;lr>;x=1;TAG=old;tag=second;y",
            "Bob <sips:b@[2001:db8::1]:5061?subject=hi>;tag",
            "<tel:+1-201-555-0123;phone-context=example.com>;q=0.5",
            "<urn:service:sos>",
        ] {
            let n = NameAddr::parse(text).unwrap();
            let mut expected = n.clone();
            expected.params.set("tag", Some("new".to_owned()));
            assert_eq!(with_tag(&n, "new"), expected.to_string(), "{text}");
        }
    }
    use crate::message::Message;

    fn request(text: &str) -> Request {
        match Message::parse(text.as_bytes(), false) {
            Ok(Message::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    fn response(text: &str) -> Response {
        match Message::parse(text.as_bytes(), false) {
            Ok(Message::Response(r)) => r,
            other => panic!("not a response: {other:?}"),
        }
    }

    const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8\r\n\
        Max-Forwards: 70\r\n\
        Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
        To: Bob <sip:bob@biloxi.example.com>\r\n\
        From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
        Call-ID: a84b4c76e66710\r\n\
        CSeq: 314159 INVITE\r\n\
        Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn uas_dialog_from_invite_rfc3261_s12_1_1() {
        let inv = request(INVITE);
        let d = Dialog::new_uas(&inv, "ourtag", false).unwrap();
        assert_eq!(d.remote_tag, "1928301774");
        assert_eq!(d.remote_cseq, Some(314159));
        assert_eq!(d.local_cseq, 0);
        assert_eq!(d.route_set.len(), 2);
        assert_eq!(d.route_set[0].to_string(), "<sip:p1.example.com;lr>");
        assert_eq!(
            d.remote_target.to_string(),
            "sip:alice@pc33.atlanta.example.com"
        );
        assert_eq!(d.id().local_tag, "ourtag");
        assert!(d.matches_request(&request(&INVITE.replace(
            "To: Bob <sip:bob@biloxi.example.com>",
            "To: <sip:bob@biloxi.example.com>;tag=ourtag"
        ))));
    }

    #[test]
    fn requests_from_the_uas_side_use_the_route_set_rfc3261_s12_2_1_1() {
        let mut d = Dialog::new_uas(&request(INVITE), "ourtag", false).unwrap();
        let bye = d.request(Method::Bye);
        assert_eq!(bye.uri.to_string(), "sip:alice@pc33.atlanta.example.com");
        let routes: Vec<_> = bye.headers.get_all(&HeaderName::Route).collect();
        assert_eq!(
            routes,
            ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
        );
        assert_eq!(bye.cseq().unwrap().seq, 1);
        assert_eq!(bye.from_header().unwrap().tag(), Some("ourtag"));
        assert_eq!(bye.to_header().unwrap().tag(), Some("1928301774"));
        assert_eq!(bye.call_id(), "a84b4c76e66710");
        assert_eq!(d.request(Method::Info).cseq().unwrap().seq, 2);
    }

    #[test]
    fn strict_route_becomes_request_uri() {
        let mut d = Dialog::new_uas(&request(INVITE), "t", false).unwrap();
        d.route_set = vec![NameAddr::parse("<sip:strict.example.com>").unwrap()];
        let r = d.request(Method::Bye);
        assert_eq!(r.uri.to_string(), "sip:strict.example.com");
        let routes: Vec<_> = r.headers.get_all(&HeaderName::Route).collect();
        assert_eq!(routes, ["<sip:alice@pc33.atlanta.example.com>"]);
    }

    #[test]
    fn uac_dialog_reverses_record_route_and_confirms_rfc3261_s12_1_2() {
        let inv = request(INVITE);
        let ringing = response(
            "SIP/2.0 180 Ringing\r\n\
             Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8\r\n\
             Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
             To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
             From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
             Call-ID: a84b4c76e66710\r\n\
             CSeq: 314159 INVITE\r\n\
             Contact: <sip:bob@192.0.2.4>\r\n\r\n",
        );
        let mut d = Dialog::new_uac(&inv, &ringing).unwrap();
        assert_eq!(d.state, DialogState::Early);
        assert_eq!(d.local_tag, "1928301774");
        assert_eq!(d.remote_tag, "a6c85cf");
        assert_eq!(d.route_set[0].to_string(), "<sip:p2.example.com;lr>");
        let ok = response(
            &String::from_utf8_lossy(&ringing.to_bytes())
                .replace("180 Ringing", "200 OK")
                .replace(
                    "Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n",
                    "",
                )
                .replace("sip:bob@192.0.2.4", "sip:bob@192.0.2.5"),
        );
        d.handle_response(&Method::Invite, &ok);
        assert_eq!(d.state, DialogState::Confirmed);
        assert!(d.route_set.is_empty());
        assert_eq!(d.remote_target.to_string(), "sip:bob@192.0.2.5");
        let ack = d.ack(314159);
        assert_eq!(ack.cseq().unwrap().to_string(), "314159 ACK");
        assert_eq!(ack.uri.to_string(), "sip:bob@192.0.2.5");
        assert_eq!(d.request(Method::Bye).cseq().unwrap().seq, 314160);
    }

    #[test]
    fn response_without_to_tag_makes_no_dialog() {
        let inv = request(INVITE);
        let trying = response(
            "SIP/2.0 100 Trying\r\n\
             Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8\r\n\
             To: Bob <sip:bob@biloxi.example.com>\r\n\
             From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
             Call-ID: a84b4c76e66710\r\n\
             CSeq: 314159 INVITE\r\n\r\n",
        );
        assert_eq!(
            Dialog::new_uac(&inv, &trying),
            Err(DialogError::NoRemoteTag)
        );
        assert_eq!(DialogError::NoRemoteTag.status(), None);
    }

    fn in_dialog(method: &str, cseq: u32, contact: Option<&str>) -> Request {
        let contact = contact
            .map(|c| format!("Contact: <{c}>\r\n"))
            .unwrap_or_default();
        request(&format!(
            "{method} sip:bob@192.0.2.4 SIP/2.0\r\n\
             Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK{cseq}\r\n\
             To: <sip:bob@biloxi.example.com>;tag=ourtag\r\n\
             From: <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
             Call-ID: a84b4c76e66710\r\n\
             CSeq: {cseq} {method}\r\n{contact}\r\n"
        ))
    }

    #[test]
    fn out_of_order_cseq_is_500_and_target_refresh_updates_rfc3261_s12_2_2() {
        let mut d = Dialog::new_uas(&request(INVITE), "ourtag", false).unwrap();
        let old = in_dialog("INFO", 314158, None);
        let e = d.handle_request(&old).unwrap_err();
        assert_eq!(e, DialogError::OutOfOrder);
        assert_eq!(e.status(), Some(500));
        assert_eq!(d.remote_cseq, Some(314159));
        d.handle_request(&in_dialog(
            "INVITE",
            314160,
            Some("sip:alice@198.51.100.1:5070"),
        ))
        .unwrap();
        assert_eq!(d.remote_cseq, Some(314160));
        assert_eq!(d.remote_target.to_string(), "sip:alice@198.51.100.1:5070");
        // INFO is not a target refresh.
        d.handle_request(&in_dialog("INFO", 314161, Some("sip:x@192.0.2.99")))
            .unwrap();
        assert_eq!(d.remote_target.to_string(), "sip:alice@198.51.100.1:5070");
        // ACK is not sequenced.
        d.handle_request(&in_dialog("ACK", 314160, None)).unwrap();
        let mut other = in_dialog("BYE", 314170, None);
        other.headers.set(HeaderName::CallId, "other");
        assert_eq!(d.handle_request(&other), Err(DialogError::Mismatch));
    }
}
