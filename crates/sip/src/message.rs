//! Requests and responses: parse from bytes, serialise to bytes, and the accessors for the
//! headers every SIP element reads.
//!
//! A `Request` or `Response` obtained from [`Message::parse`] has been checked: it has a top Via
//! that parses, From and To that parse, a Call-ID, a CSeq that parses (and whose method matches
//! the request line), and a body whose length equals Content-Length when one is given. The
//! accessors below therefore only fail on messages built or edited by hand.
//!
//! Content-Length is not kept in `headers` of a parsed message: it is derived from `body`, and the
//! serialiser always writes exactly one, matching the body (any Content-Length line put into
//! `headers` by hand is ignored when serialising).

use std::fmt;

use bytes::Bytes;

use crate::header::{CSeq, Header, HeaderName, Headers, NameAddr, Via};
use crate::uri::Uri;
use crate::ParseError;

/// A SIP method. Method names are case-sensitive (RFC 3261 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Publish,
    Message,
    Refer,
    Other(String),
}

impl Method {
    pub fn parse(s: &str) -> Self {
        match s {
            "INVITE" => Self::Invite,
            "ACK" => Self::Ack,
            "BYE" => Self::Bye,
            "CANCEL" => Self::Cancel,
            "REGISTER" => Self::Register,
            "OPTIONS" => Self::Options,
            "INFO" => Self::Info,
            "UPDATE" => Self::Update,
            "PRACK" => Self::Prack,
            "SUBSCRIBE" => Self::Subscribe,
            "NOTIFY" => Self::Notify,
            "PUBLISH" => Self::Publish,
            "MESSAGE" => Self::Message,
            "REFER" => Self::Refer,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Register => "REGISTER",
            Self::Options => "OPTIONS",
            Self::Info => "INFO",
            Self::Update => "UPDATE",
            Self::Prack => "PRACK",
            Self::Subscribe => "SUBSCRIBE",
            Self::Notify => "NOTIFY",
            Self::Publish => "PUBLISH",
            Self::Message => "MESSAGE",
            Self::Refer => "REFER",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A three-digit status code, 100..=699.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode(pub u16);

impl StatusCode {
    pub fn is_provisional(self) -> bool {
        self.0 < 200
    }
    pub fn is_success(self) -> bool {
        (200..300).contains(&self.0)
    }
    pub fn is_final(self) -> bool {
        self.0 >= 200
    }
    /// The RFC 3261 §21 reason phrase for well-known codes, else "Unknown".
    pub fn default_reason(self) -> &'static str {
        match self.0 {
            100 => "Trying",
            180 => "Ringing",
            181 => "Call Is Being Forwarded",
            182 => "Queued",
            183 => "Session Progress",
            200 => "OK",
            202 => "Accepted",
            301 => "Moved Permanently",
            302 => "Moved Temporarily",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            407 => "Proxy Authentication Required",
            408 => "Request Timeout",
            413 => "Request Entity Too Large",
            414 => "Request-URI Too Long",
            415 => "Unsupported Media Type",
            416 => "Unsupported URI Scheme",
            420 => "Bad Extension",
            421 => "Extension Required",
            423 => "Interval Too Brief",
            480 => "Temporarily Unavailable",
            481 => "Call/Transaction Does Not Exist",
            482 => "Loop Detected",
            483 => "Too Many Hops",
            484 => "Address Incomplete",
            486 => "Busy Here",
            487 => "Request Terminated",
            488 => "Not Acceptable Here",
            491 => "Request Pending",
            500 => "Server Internal Error",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            504 => "Server Time-out",
            505 => "Version Not Supported",
            513 => "Message Too Large",
            600 => "Busy Everywhere",
            603 => "Decline",
            604 => "Does Not Exist Anywhere",
            606 => "Not Acceptable",
            _ => "Unknown",
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: StatusCode,
    pub reason: String,
    pub headers: Headers,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

impl Message {
    /// Parses one complete message (a datagram, or one frame cut from a stream by
    /// [`crate::framing`]). `stream` is true for TCP/TLS, where Content-Length is mandatory
    /// (RFC 3261 §18.3); on datagram transports a missing Content-Length means "the rest".
    ///
    /// Never panics, whatever the input.
    pub fn parse(bytes: &[u8], stream: bool) -> Result<Self, ParseError> {
        crate::parse::message(bytes, stream)
    }

    /// Serialises the message; Content-Length is always written and always matches the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Request(r) => r.to_bytes(),
            Self::Response(r) => r.to_bytes(),
        }
    }

    /// The headers, whichever kind of message this is.
    pub fn headers(&self) -> &Headers {
        match self {
            Self::Request(r) => &r.headers,
            Self::Response(r) => &r.headers,
        }
    }
}

/// Best effort for a request that [`Message::parse`] refused: if the start line looks like a
/// request, the Via, From, To, Call-ID and CSeq lines that are present, as raw text, so the
/// server can still answer with the error's status (RFC 3261 §8.2.6.2 copies these into the
/// response). Returns `None` when the bytes do not look like a request (e.g. a response, which
/// is dropped). Never panics.
pub fn recover_request_headers(bytes: &[u8]) -> Option<Headers> {
    crate::parse::recover_request_headers(bytes)
}

/// Checks of RFC 4475 that the parser leaves to the application, because they depend on what
/// the element supports or on its role. A message reaching the application has passed the
/// parser; this function only documents the remaining checks and returns their list (RFC 4475
/// section, file name, expected behaviour) for tests.
///
/// - §3.3.2/§3.3.3 `unkscm`, `novelsc`: a Request-URI scheme the element does not serve
///   ([`Uri::Other`]) gets 416 Unsupported URI Scheme (RFC 3261 §8.2.2.1).
/// - §3.3.4 `unksm2`: unknown schemes in To/From/Contact parse as [`Uri::Other`]; a registrar
///   refuses a Contact or To it cannot use (400 or 416); otherwise they are passed through.
/// - §3.3.5 `bext01`: option tags of Require that the UAS does not support get 420 Bad Extension
///   with an Unsupported header; a proxy checks Proxy-Require the same way (RFC 3261 §8.2.2.3).
/// - §3.3.6 `invut`: a body of an unsupported Content-Type gets 415 Unsupported Media Type with
///   Accept (RFC 3261 §8.2.3).
/// - §3.3.7 `regaut01`: an Authorization of an unknown scheme is treated as no credentials:
///   401 with a challenge.
/// - §3.3.10 `bcast`: a response whose Via list has more than one value when this element added
///   one, or whose sent-by is not ours, is dropped (RFC 3261 §18.1.2), never sent to a
///   broadcast address.
/// - §3.3.11 `zeromf`: Max-Forwards 0 on a request to be forwarded gets 483 Too Many Hops
///   (RFC 3261 §16.3); a UAS may answer OPTIONS itself (§11).
/// - §3.3.12/§3.3.13 `cparam01`, `cparam02`: the registrar stores the URI parameter with the
///   binding (cparam02) but the header parameter (cparam01) is not part of the URI.
/// - §3.3.14 `regescrt`: a Contact URI with escaped headers is stored as is (escaped).
/// - §3.3.15 `sdp01`: an Accept that lists no type the UAS can answer with gets 406 Not
///   Acceptable; a body type it does not understand gets 415.
/// - §3.2.1 `badbranch`: a branch that is only the magic cookie is still an RFC 3261 branch
///   (see [`Via::has_rfc3261_branch`]); transaction matching uses it as is.
/// - §3.4.1 `inv2543`: no branch cookie: transactions are matched by the RFC 2543 rules
///   (RFC 3261 §17.2.3); a missing Max-Forwards is treated as 70.
/// - RFC 5118 §4.4 `port-ambiguous`: `[2001:db8::10:5070]` is an IPv6 host without port.
pub fn application_checks() -> &'static [(&'static str, &'static str, &'static str)] {
    &[
        ("3.3.2", "unkscm", "416 Unsupported URI Scheme"),
        ("3.3.3", "novelsc", "416 Unsupported URI Scheme"),
        (
            "3.3.4",
            "unksm2",
            "registrar: 400/416 for a Contact or To it cannot use",
        ),
        ("3.3.5", "bext01", "420 Bad Extension with Unsupported"),
        ("3.3.6", "invut", "415 Unsupported Media Type with Accept"),
        ("3.3.7", "regaut01", "401 with a challenge"),
        ("3.3.10", "bcast", "drop the response"),
        ("3.3.11", "zeromf", "483 Too Many Hops when forwarding"),
        (
            "3.3.12",
            "cparam01",
            "accept; header parameter not in the binding URI",
        ),
        (
            "3.3.13",
            "cparam02",
            "accept; URI parameter kept in the binding",
        ),
        (
            "3.3.14",
            "regescrt",
            "accept; store the escaped URI headers",
        ),
        ("3.3.15", "sdp01", "406 Not Acceptable"),
        ("3.2.1", "badbranch", "accept; branch is the cookie alone"),
        ("3.4.1", "inv2543", "accept; RFC 2543 transaction matching"),
    ]
}

/// Accessors shared by requests and responses.
macro_rules! common_accessors {
    () => {
        /// The top (first) Via.
        pub fn top_via(&self) -> Result<Via, ParseError> {
            self.view_top_via().map(crate::parse::ViaRef::to_via)
        }

        /// [`Self::top_via`] as a view of the header text (nothing allocated).
        pub(crate) fn view_top_via(&self) -> Result<crate::parse::ViaRef<'_>, ParseError> {
            let first = self
                .headers
                .values(&HeaderName::Via)
                .next()
                .ok_or_else(|| ParseError::new("Missing Via"))?;
            crate::parse::via_ref(first)
        }

        /// The branch of the top Via, if it has one: [`Self::top_via`]`()?.branch()` without
        /// building the `Via`.
        pub fn top_via_branch(&self) -> Result<Option<&str>, ParseError> {
            Ok(self.view_top_via()?.branch())
        }

        pub fn from_header(&self) -> Result<NameAddr, ParseError> {
            self.view_from()
                .map(crate::parse::NameAddrRef::to_name_addr)
        }

        pub fn to_header(&self) -> Result<NameAddr, ParseError> {
            self.view_to().map(crate::parse::NameAddrRef::to_name_addr)
        }

        /// [`Self::from_header`] as a view of the header text.
        pub(crate) fn view_from(&self) -> Result<crate::parse::NameAddrRef<'_>, ParseError> {
            let v = self
                .headers
                .get(&HeaderName::From)
                .ok_or_else(|| ParseError::new("Missing From"))?;
            crate::parse::name_addr_ref(v)
        }

        /// [`Self::to_header`] as a view of the header text.
        pub(crate) fn view_to(&self) -> Result<crate::parse::NameAddrRef<'_>, ParseError> {
            let v = self
                .headers
                .get(&HeaderName::To)
                .ok_or_else(|| ParseError::new("Missing To"))?;
            crate::parse::name_addr_ref(v)
        }

        /// The From tag: [`Self::from_header`]`()?.tag()` without building the `NameAddr`.
        pub fn from_tag(&self) -> Result<Option<&str>, ParseError> {
            Ok(self.view_from()?.tag())
        }

        /// The To tag: [`Self::to_header`]`()?.tag()` without building the `NameAddr`.
        pub fn to_tag(&self) -> Result<Option<&str>, ParseError> {
            Ok(self.view_to()?.tag())
        }

        /// The Call-ID, or "" when it is missing (only possible on hand-built messages).
        pub fn call_id(&self) -> &str {
            self.headers.get(&HeaderName::CallId).unwrap_or("")
        }

        pub fn cseq(&self) -> Result<CSeq, ParseError> {
            let (seq, method) = self.view_cseq()?;
            Ok(CSeq {
                seq,
                method: Method::parse(method),
            })
        }

        /// [`Self::cseq`] with the method as written.
        pub(crate) fn view_cseq(&self) -> Result<(u32, &str), ParseError> {
            let v = self
                .headers
                .get(&HeaderName::CSeq)
                .ok_or_else(|| ParseError::new("Missing CSeq"))?;
            crate::parse::cseq_ref(v)
        }
    };
}

impl Request {
    common_accessors!();

    /// Serialises the request (Content-Length rewritten to match the body).
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::parse::serialize_request(self)
    }

    /// Max-Forwards, if present and valid.
    pub fn max_forwards(&self) -> Option<u32> {
        self.headers
            .get(&HeaderName::MaxForwards)
            .and_then(|v| v.trim().parse().ok())
    }
}

/// Bytes reserved after a copied To value for a tag parameter: `;tag=` and 32 characters.
const TO_TAG_ROOM: usize = 5 + 32;

impl Response {
    common_accessors!();

    /// Builds a response to `req` per RFC 3261 §8.2.6: Via (all, in order), From, To, Call-ID and
    /// CSeq copied; no To tag is added here (the caller adds one where the RFC requires it).
    pub fn for_request(req: &Request, status: u16, reason: Option<&str>) -> Self {
        let status = StatusCode(status);
        // The copied headers and the few the caller adds (To tag, Server, Contacts, Date...).
        let mut headers = Headers(Vec::with_capacity(12));
        for h in req.headers.iter() {
            match h.name {
                HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                    headers.0.push(h.clone());
                }
                HeaderName::To => {
                    // Room for the `;tag=...` the caller usually appends (no reallocation).
                    let mut value = String::with_capacity(h.value.len() + TO_TAG_ROOM);
                    value.push_str(&h.value);
                    headers.0.push(Header {
                        name: HeaderName::To,
                        value,
                    });
                }
                _ => {}
            }
        }
        Self {
            status,
            reason: reason.unwrap_or_else(|| status.default_reason()).to_owned(),
            headers,
            body: Bytes::new(),
        }
    }

    /// Serialises the response (Content-Length rewritten to match the body).
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::parse::serialize_response(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTER: &[u8] = b"REGISTER sip:registrar.biloxi.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP bobspc.biloxi.com:5060;branch=z9hG4bKnashds7\r\n\
        Max-Forwards: 70\r\n\
        To: Bob <sip:bob@biloxi.com>\r\n\
        From: Bob <sip:bob@biloxi.com>;tag=456248\r\n\
        Call-ID: 843817637684230@998sdasdh09\r\n\
        CSeq: 1826 REGISTER\r\n\
        Contact: <sip:bob@192.0.2.4>\r\n\
        Expires: 7200\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn accessors_of_a_parsed_request() {
        let Ok(Message::Request(r)) = Message::parse(REGISTER, true) else {
            panic!("must parse")
        };
        assert_eq!(r.method, Method::Register);
        assert_eq!(r.top_via().unwrap().branch(), Some("z9hG4bKnashds7"));
        assert_eq!(r.from_header().unwrap().tag(), Some("456248"));
        assert_eq!(r.to_header().unwrap().tag(), None);
        assert_eq!(r.call_id(), "843817637684230@998sdasdh09");
        assert_eq!(r.cseq().unwrap().method, Method::Register);
        assert_eq!(r.to_bytes(), REGISTER);
    }

    #[test]
    fn borrowed_accessors_agree_with_the_owned_ones() {
        let Ok(Message::Request(mut r)) = Message::parse(REGISTER, true) else {
            panic!("must parse")
        };
        assert_eq!(r.top_via_branch(), Ok(Some("z9hG4bKnashds7")));
        assert_eq!(r.from_tag(), Ok(Some("456248")));
        assert_eq!(r.to_tag(), Ok(None));
        // Hand-edited messages: the same errors as the owned accessors.
        r.headers.set(HeaderName::To, "<sip:bob@biloxi.com");
        r.headers.set(HeaderName::Via, "SIP/2.0/UDP");
        assert_eq!(r.to_tag().unwrap_err(), r.to_header().unwrap_err());
        assert_eq!(r.top_via_branch().unwrap_err(), r.top_via().unwrap_err());
        r.headers.set(
            HeaderName::Via,
            "SIP/2.0/UDP h ; BRANCH = z9hG4bKx ; branch=y",
        );
        assert_eq!(r.top_via_branch(), Ok(Some("z9hG4bKx")));
        assert_eq!(r.top_via().unwrap().branch(), Some("z9hG4bKx"));
        r.headers.remove(&HeaderName::From);
        assert_eq!(r.from_tag().unwrap_err(), r.from_header().unwrap_err());
    }

    #[test]
    fn response_for_request_copies_and_serialises() {
        let Ok(Message::Request(r)) = Message::parse(REGISTER, true) else {
            panic!("must parse")
        };
        let resp = Response::for_request(&r, 200, None);
        assert_eq!(resp.reason, "OK");
        let bytes = resp.to_bytes();
        let Ok(Message::Response(back)) = Message::parse(&bytes, true) else {
            panic!("must parse")
        };
        assert_eq!(back, resp);
        assert!(bytes.starts_with(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP bobspc.biloxi.com:5060;"));
        assert_eq!(
            Message::Response(back).headers().get(&HeaderName::Contact),
            None
        );
    }

    #[test]
    fn recovery_and_application_checks() {
        let broken = [
            &REGISTER[..REGISTER.len() - 4],
            b"\r\nCSeq: 1 INVITE\r\n\r\n",
        ]
        .concat();
        let e = Message::parse(&broken, true).unwrap_err();
        assert_eq!(e.status, 400);
        let h = recover_request_headers(&broken).unwrap();
        assert_eq!(h.get_all(&HeaderName::CSeq).count(), 2);
        assert!(application_checks()
            .iter()
            .any(|(_, file, _)| *file == "unkscm"));
    }
}
