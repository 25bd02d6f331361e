//! Headers: the raw list kept in wire order, and typed views of the headers Confab reads.
//!
//! A [`Headers`] list stores each header line's value as text (folding already unfolded), so
//! unknown headers re-serialise untouched. Typed values ([`Via`], [`NameAddr`], [`CSeq`]) are
//! parsed from that text on demand; the message parser has already checked that the mandatory
//! ones parse.

use std::fmt;

use crate::message::Method;
use crate::uri::{Host, Uri};
use crate::ParseError;

/// A header name. Compact forms (`v`, `f`, `t`, `i`, `m`, `l`, `c`, `k`, `s`, `e`, `o`, `u`,
/// `r`, `b`, `x`, `y`) parse to the full name; unknown names keep their original spelling.
///
/// Header names are case-insensitive (RFC 3261 §7.3.1), so two `Other` names are equal (and
/// hash alike) when they differ only in ASCII case. Build names with [`HeaderName::parse`]:
/// `Other("Via")` is not `Via`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    MaxForwards,
    Expires,
    MinExpires,
    ContentLength,
    ContentType,
    ContentEncoding,
    Authorization,
    ProxyAuthorization,
    WwwAuthenticate,
    ProxyAuthenticate,
    AuthenticationInfo,
    Route,
    RecordRoute,
    Path,
    Allow,
    Supported,
    Require,
    ProxyRequire,
    Unsupported,
    UserAgent,
    Server,
    Date,
    Event,
    Subject,
    ReferTo,
    ReferredBy,
    SessionExpires,
    MinSe,
    Reason,
    RetryAfter,
    Warning,
    Timestamp,
    /// Any other header, with the name as it appeared on the wire.
    Other(String),
}

impl HeaderName {
    /// Parses a header name (case-insensitive, compact forms expanded).
    pub fn parse(name: &str) -> Self {
        crate::parse::header_name(name)
    }

    /// The canonical spelling written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Via => "Via",
            Self::From => "From",
            Self::To => "To",
            Self::CallId => "Call-ID",
            Self::CSeq => "CSeq",
            Self::Contact => "Contact",
            Self::MaxForwards => "Max-Forwards",
            Self::Expires => "Expires",
            Self::MinExpires => "Min-Expires",
            Self::ContentLength => "Content-Length",
            Self::ContentType => "Content-Type",
            Self::ContentEncoding => "Content-Encoding",
            Self::Authorization => "Authorization",
            Self::ProxyAuthorization => "Proxy-Authorization",
            Self::WwwAuthenticate => "WWW-Authenticate",
            Self::ProxyAuthenticate => "Proxy-Authenticate",
            Self::AuthenticationInfo => "Authentication-Info",
            Self::Route => "Route",
            Self::RecordRoute => "Record-Route",
            Self::Path => "Path",
            Self::Allow => "Allow",
            Self::Supported => "Supported",
            Self::Require => "Require",
            Self::ProxyRequire => "Proxy-Require",
            Self::Unsupported => "Unsupported",
            Self::UserAgent => "User-Agent",
            Self::Server => "Server",
            Self::Date => "Date",
            Self::Event => "Event",
            Self::Subject => "Subject",
            Self::ReferTo => "Refer-To",
            Self::ReferredBy => "Referred-By",
            Self::SessionExpires => "Session-Expires",
            Self::MinSe => "Min-SE",
            Self::Reason => "Reason",
            Self::RetryAfter => "Retry-After",
            Self::Warning => "Warning",
            Self::Timestamp => "Timestamp",
            Self::Other(name) => name,
        }
    }

    /// Whether several values of this header may share one line separated by commas
    /// (RFC 3261 §7.3.1). Headers whose values contain unquoted commas (WWW-Authenticate,
    /// Authorization, Date...) are not.
    pub fn is_list(&self) -> bool {
        matches!(
            self,
            Self::Via
                | Self::Contact
                | Self::Route
                | Self::RecordRoute
                | Self::Path
                | Self::Allow
                | Self::Supported
                | Self::Require
                | Self::ProxyRequire
                | Self::Unsupported
                | Self::ContentEncoding
                | Self::Warning
                | Self::Reason
        )
    }
}

impl PartialEq for HeaderName {
    // Inlined: header lists are searched by name all the time, mostly for a known name, where
    // this folds to one comparison.
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Other(a), Self::Other(b)) => a.eq_ignore_ascii_case(b),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl Eq for HeaderName {}

impl std::hash::Hash for HeaderName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        if let Self::Other(name) = self {
            for b in name.bytes() {
                state.write_u8(b.to_ascii_lowercase());
            }
        }
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header line: its name and its value text (unfolded, surrounding whitespace trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub value: String,
}

/// The headers of a message, in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// The value of the first line with this name.
    #[inline]
    pub fn get(&self, name: &HeaderName) -> Option<&str> {
        self.0
            .iter()
            .find(|h| &h.name == name)
            .map(|h| h.value.as_str())
    }

    /// Every line with this name, in order (not split at commas).
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| &h.name == name)
            .map(|h| h.value.as_str())
    }

    /// Every value of a list header, split at commas outside quotes and `<>` across all lines
    /// with this name, each trimmed.
    pub fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.get_all(name).flat_map(crate::parse::split_list)
    }

    /// Appends a header line.
    pub fn push(&mut self, name: HeaderName, value: impl Into<String>) {
        // Messages built line by line have a dozen lines: one allocation instead of 4, 8, 16.
        if self.0.capacity() == 0 {
            self.0.reserve(12);
        }
        self.0.push(Header {
            name,
            value: value.into(),
        });
    }

    /// Inserts a header line before every other one (e.g. a new top Via).
    pub fn push_front(&mut self, name: HeaderName, value: impl Into<String>) {
        self.0.insert(
            0,
            Header {
                name,
                value: value.into(),
            },
        );
    }

    /// Replaces every line with this name by one line with this value (appended if absent).
    pub fn set(&mut self, name: HeaderName, value: impl Into<String>) {
        let value = value.into();
        if let Some(pos) = self.0.iter().position(|h| h.name == name) {
            self.0[pos].value = value;
            let mut i = 0;
            self.0.retain(|h| {
                i += 1;
                i - 1 <= pos || h.name != name
            });
        } else {
            self.push(name, value);
        }
    }

    /// Removes every line with this name.
    pub fn remove(&mut self, name: &HeaderName) {
        self.0.retain(|h| &h.name != name);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }
}

/// `;name=value` parameters (URI, Via, name-addr). Names compare case-insensitively; values
/// are kept as written (quoted values keep their quotes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, Option<String>)>);

impl Params {
    /// `None` if absent, `Some(None)` if present without a value.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets (replacing) a parameter.
    pub fn set(&mut self, name: &str, value: Option<String>) {
        match self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::uri::write_params(f, self)
    }
}

/// One Via value: `SIP/2.0/UDP host:port;params` (RFC 3261 §20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Upper-cased transport token: `UDP`, `TCP`, `TLS`, `WS`, `WSS`, `SCTP`...
    pub transport: String,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        crate::parse::via(s)
    }

    /// The branch parameter, if any.
    pub fn branch(&self) -> Option<&str> {
        self.params.get("branch").flatten()
    }

    /// Whether the branch starts with the RFC 3261 magic cookie `z9hG4bK`.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with("z9hG4bK"))
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::uri::buffered(f, |w| {
            w.write_str("SIP/2.0/")?;
            w.write_str(&self.transport)?;
            w.write_str(" ")?;
            crate::uri::write_host(w, &self.host)?;
            if let Some(port) = self.port {
                w.write_str(":")?;
                crate::uri::write_decimal(w, u32::from(port))?;
            }
            crate::uri::write_params(w, &self.params)
        })
    }
}

/// `"Display" <uri>;params` or `uri;params` (From, To, Contact, Route...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name without surrounding quotes (escapes kept as on the wire).
    pub display: Option<String>,
    pub uri: Uri,
    pub params: Params,
}

impl NameAddr {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        crate::parse::name_addr(s)
    }

    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag").flatten()
    }

    /// The tag of a From/To value: `NameAddr::parse(s)?.tag()`, without building the value
    /// (nothing is allocated).
    pub fn parse_tag(s: &str) -> Result<Option<&str>, ParseError> {
        Ok(crate::parse::name_addr_ref(s)?.tag())
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::uri::buffered(f, |w| {
            if let Some(d) = &self.display {
                w.write_str("\"")?;
                w.write_str(d)?;
                w.write_str("\" ")?;
            }
            w.write_str("<")?;
            crate::uri::write_uri(w, &self.uri)?;
            w.write_str(">")?;
            crate::uri::write_params(w, &self.params)
        })
    }
}

/// A Contact value: `*` (REGISTER removal of all bindings) or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactValue {
    Star,
    Addr(NameAddr),
}

impl ContactValue {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Ok(match crate::parse::contact_ref(s)? {
            None => Self::Star,
            Some(addr) => Self::Addr(addr.to_name_addr()),
        })
    }
}

/// The text of a CSeq value, `4711 INVITE` (as `CSeq`'s `Display`, without the formatting
/// machinery).
pub(crate) fn cseq_text(seq: u32, method: &Method) -> String {
    let method = method.as_str();
    let mut out = String::with_capacity(11 + method.len());
    // Writing into a String cannot fail.
    let _ = crate::uri::write_decimal(&mut out, seq);
    out.push(' ');
    out.push_str(method);
    out
}

/// `CSeq: 4711 INVITE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        crate::parse::cseq(s)
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::uri::write_decimal(f, self.seq)?;
        f.write_str(" ")?;
        f.write_str(self.method.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn other_names_compare_case_insensitively() {
        let a = HeaderName::parse("X-Foo");
        let b = HeaderName::parse("x-fOO");
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "X-Foo");
        let set: HashSet<_> = [a, b, HeaderName::Via, HeaderName::parse("v")]
            .into_iter()
            .collect();
        assert_eq!(set.len(), 2);
        assert_ne!(HeaderName::Other("Via".into()), HeaderName::Via);
    }

    #[test]
    fn list_values_split_across_lines() {
        let mut h = Headers::new();
        h.push(
            HeaderName::Contact,
            r#""Doe, J" <sip:j@a.example.com>;q=0.5, <sip:k,l@b.example.com;x=1>"#,
        );
        h.push(HeaderName::Contact, "sip:l@c.example.com");
        let v: Vec<_> = h.values(&HeaderName::Contact).collect();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0], r#""Doe, J" <sip:j@a.example.com>;q=0.5"#);
        assert!(matches!(
            ContactValue::parse(v[1]),
            Ok(ContactValue::Addr(_))
        ));
        assert_eq!(ContactValue::parse(" * "), Ok(ContactValue::Star));
        assert_eq!(h.get_all(&HeaderName::Contact).count(), 2);
    }

    #[test]
    fn set_replaces_all_lines_and_remove_drops_them() {
        let mut h = Headers::new();
        h.push(HeaderName::Via, "a");
        h.push(HeaderName::To, "t");
        h.push(HeaderName::Via, "b");
        h.set(HeaderName::Via, "c");
        assert_eq!(h.get_all(&HeaderName::Via).collect::<Vec<_>>(), ["c"]);
        h.push_front(HeaderName::Via, "top");
        assert_eq!(h.get(&HeaderName::Via), Some("top"));
        h.remove(&HeaderName::Via);
        assert_eq!(h.iter().count(), 1);
    }

    #[test]
    fn typed_values_display_and_reparse() {
        let v = Via::parse("SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bKabc;received=192.0.2.1")
            .unwrap();
        assert_eq!(
            v.to_string(),
            "SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bKabc;received=192.0.2.1"
        );
        assert_eq!(Via::parse(&v.to_string()).unwrap(), v);
        let n = NameAddr::parse("A <sip:a@example.com>;tag=x").unwrap();
        assert_eq!(n.to_string(), "\"A\" <sip:a@example.com>;tag=x");
        for s in [
            "A <sip:a@example.com>;tag=x",
            "sip:a@example.com ; TAG = y ; tag=z",
            "<sip:a@example.com>;tag",
            "<sip:a@example.com>",
            "<sip:a@example.com",
        ] {
            let owned = NameAddr::parse(s);
            assert_eq!(
                NameAddr::parse_tag(s),
                owned.as_ref().map(NameAddr::tag).map_err(Clone::clone),
                "{s}"
            );
        }
        let c = CSeq::parse("1 REGISTER").unwrap();
        assert_eq!(CSeq::parse(&c.to_string()).unwrap(), c);
        let mut p = Params::default();
        p.set("lr", None);
        p.set("LR", Some("1".into()));
        assert_eq!(p.to_string(), ";lr=1");
        p.remove("Lr");
        assert!(!p.contains("lr"));
    }
}
