//! Requests and responses: parse from bytes, serialise to bytes, and the accessors for the
//! headers every SIP element reads.
//!
//! A `Request` or `Response` obtained from [`Message::parse`] has been checked: it has a top Via
//! that parses, From and To that parse, a Call-ID, a CSeq that parses (and whose method matches
//! the request line), and a body whose length equals Content-Length when one is given. The
//! accessors below therefore only fail on messages built or edited by hand.

use std::fmt;

use bytes::Bytes;

use crate::header::{CSeq, HeaderName, Headers, NameAddr, Via};
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
}

/// Accessors shared by requests and responses.
macro_rules! common_accessors {
    () => {
        /// The top (first) Via.
        pub fn top_via(&self) -> Result<Via, ParseError> {
            let first = self
                .headers
                .values(&HeaderName::Via)
                .next()
                .ok_or_else(|| ParseError::new("Missing Via"))?;
            Via::parse(first)
        }

        pub fn from_header(&self) -> Result<NameAddr, ParseError> {
            let v = self.headers.get(&HeaderName::From).ok_or_else(|| ParseError::new("Missing From"))?;
            NameAddr::parse(v)
        }

        pub fn to_header(&self) -> Result<NameAddr, ParseError> {
            let v = self.headers.get(&HeaderName::To).ok_or_else(|| ParseError::new("Missing To"))?;
            NameAddr::parse(v)
        }

        /// The Call-ID, or "" when it is missing (only possible on hand-built messages).
        pub fn call_id(&self) -> &str {
            self.headers.get(&HeaderName::CallId).unwrap_or("")
        }

        pub fn cseq(&self) -> Result<CSeq, ParseError> {
            let v = self.headers.get(&HeaderName::CSeq).ok_or_else(|| ParseError::new("Missing CSeq"))?;
            CSeq::parse(v)
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
        self.headers.get(&HeaderName::MaxForwards).and_then(|v| v.trim().parse().ok())
    }
}

impl Response {
    common_accessors!();

    /// Builds a response to `req` per RFC 3261 §8.2.6: Via (all, in order), From, To, Call-ID and
    /// CSeq copied; no To tag is added here (the caller adds one where the RFC requires it).
    pub fn for_request(req: &Request, status: u16, reason: Option<&str>) -> Self {
        let status = StatusCode(status);
        let mut headers = Headers::new();
        for h in req.headers.iter() {
            if matches!(
                h.name,
                HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq
            ) {
                headers.0.push(h.clone());
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
