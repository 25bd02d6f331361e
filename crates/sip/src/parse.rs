//! The parser and serialiser: SIP messages (RFC 3261 §7, §25), the header values Confab reads
//! (Via, name-addr, CSeq) and SIP/SIPS/tel URIs (RFC 3261 §19.1, RFC 3966, RFC 5118).
//!
//! Everything here works on byte offsets checked with `get`, so no input can make it panic, and
//! every scan is a single forward pass (no backtracking, no regex). Limits: a message of at most
//! [`MAX_MESSAGE_LEN`] bytes, at most [`MAX_HEADERS`] header lines and [`MAX_PARAMS`] parameters
//! per value, so work and memory stay proportional to the input.
//!
//! Each header-value grammar is read into a borrowed view first ([`ViaRef`], [`NameAddrRef`],
//! [`UriRef`]...: slices of the text, nothing allocated); the owned values are built from the
//! views. Checking a message builds views only, and accessors that need one field (a tag, a
//! branch) read it from a view, so one grammar gives every verdict and nothing is allocated to
//! check a value.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::Bytes;

use crate::header::{CSeq, Header, HeaderName, Headers, NameAddr, Params, Via};
use crate::message::{Message, Method, Request, Response, StatusCode};
use crate::uri::{Host, SipUri, TelUri, Uri};
use crate::ParseError;

/// Larger messages are refused with 513 (RFC 3261 §21.5.8); transports cap at 64 KiB too.
pub(crate) const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// Header lines per message (after unfolding).
pub(crate) const MAX_HEADERS: usize = 256;
/// Parameters per URI, Via or name-addr, and headers per URI.
pub(crate) const MAX_PARAMS: usize = 64;

// ---------------------------------------------------------------------------------------------
// Character classes (RFC 3261 §25.1)

/// A byte class as a 256-entry table: alphanumerics (when `alnum`) plus `extra`.
const fn class(alnum: bool, extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = alnum && (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

// Tables instead of `contains` scans: the classes are tested once per input byte.
static TOKEN: [bool; 256] = class(true, b"-.!%*_+`'~");
#[cfg(test)]
static UNRESERVED: [bool; 256] = class(true, b"-_.!~*'()");
static USER: [bool; 256] = class(true, b"-_.!~*'()%&=+$,;?/");
static PASSWORD: [bool; 256] = class(true, b"-_.!~*'()%&=+$,");
static PARAM: [bool; 256] = class(true, b"-_.!~*'()%[]/:&+$");
static HEADER: [bool; 256] = class(true, b"-_.!~*'()%[]/?:+$");
static TEL: [bool; 256] = class(true, b"+-.()*#");
/// The bytes of a domain label after its first.
static ALNUM_DASH: [bool; 256] = class(true, b"-");
static DIGIT: [bool; 256] = class(false, b"0123456789");
/// `scheme` after its first ALPHA.
static SCHEME: [bool; 256] = class(true, b"+-.");
/// Inside `[...]`: what an IPv6 address is written with.
static IPV6: [bool; 256] = class(false, b"0123456789abcdefABCDEF:.");
/// An unquoted header parameter value: a token or a host (IPv6 references included).
static PARAM_VALUE: [bool; 256] = class(true, b"-.!%*_+`'~:[]");
/// The text of a URI after its scheme: visible ASCII but the delimiters of the enclosing header.
static URI_TEXT: [bool; 256] = except(class(false, VISIBLE), b"<>\"");
/// An unquoted display name: tokens, LWS and any UTF-8 beyond ASCII.
static DISPLAY_NAME: [bool; 256] = or_high(class(true, b"-.!%*_+`'~ \t"));

/// The visible ASCII characters, `!` to `~`.
const VISIBLE: &[u8; 94] = &{
    let mut v = [0u8; 94];
    let mut i = 0;
    while i < 94 {
        v[i] = b'!' + i as u8;
        i += 1;
    }
    v
};

/// `t` without the bytes of `remove`.
const fn except(mut t: [bool; 256], remove: &[u8]) -> [bool; 256] {
    let mut i = 0;
    while i < remove.len() {
        t[remove[i] as usize] = false;
        i += 1;
    }
    t
}

/// `t` and every byte from 0x80 up.
const fn or_high(mut t: [bool; 256]) -> [bool; 256] {
    let mut b = 0x80;
    while b < 256 {
        t[b] = true;
        b += 1;
    }
    t
}

// Indexing a 256-entry table with a u8 cannot go out of bounds.

/// `token` characters.
fn is_token(b: u8) -> bool {
    TOKEN[b as usize]
}

/// `unreserved` = alphanum / mark.
#[cfg(test)]
fn is_unreserved(b: u8) -> bool {
    UNRESERVED[b as usize]
}

/// `user` = 1*( unreserved / escaped / user-unreserved ).
#[cfg(test)]
fn is_user_char(b: u8) -> bool {
    USER[b as usize]
}

/// `paramchar` = param-unreserved / unreserved / escaped.
#[cfg(test)]
fn is_param_char(b: u8) -> bool {
    PARAM[b as usize]
}

/// `hname` / `hvalue` characters: hnv-unreserved / unreserved / escaped.
#[cfg(test)]
fn is_header_char(b: u8) -> bool {
    HEADER[b as usize]
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ws(s: &str) -> &str {
    // Byte-wise: SP and HT are ASCII, so the cut points are char boundaries.
    let b = s.as_bytes();
    let start = b.iter().position(|&c| !is_ws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|&c| !is_ws(c)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or("")
}

/// The first position of the ASCII byte `b` in `s`.
fn find_byte(s: &str, b: u8) -> Option<usize> {
    memchr::memchr(b, s.as_bytes())
}

/// The first position of any of the ASCII bytes in `set`.
fn find_any(s: &str, set: &[u8]) -> Option<usize> {
    s.as_bytes().iter().position(|c| set.contains(c))
}

/// `s` split at the first ASCII byte `b` (which belongs to neither part).
fn split_at_byte(s: &str, b: u8) -> Option<(&str, &str)> {
    let i = find_byte(s, b)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// Every `%` is followed by two hex digits (RFC 3261 §25.1 `escaped`).
fn escapes_valid(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let ok = b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

fn all(s: &str, class: fn(u8) -> bool) -> bool {
    s.bytes().all(class)
}

/// Every byte of `s` is in `class`.
fn class_only(s: &str, class: &[bool; 256]) -> bool {
    s.bytes().all(|b| class[usize::from(b)])
}

/// Every byte of `s` is in `class` and every `%` starts an escape.
fn escaped_class_only(s: &str, class: &[bool; 256]) -> bool {
    let mut percent = false;
    for b in s.bytes() {
        if !class[usize::from(b)] {
            return false;
        }
        percent |= b == b'%';
    }
    !percent || escapes_valid(s)
}

// ---------------------------------------------------------------------------------------------
// A cursor over a header value

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Self { s, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    /// Skips SP/HT and says how many were skipped.
    fn skip_ws(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Takes the longest run of bytes of `class` (an ASCII class: the cut is a char boundary).
    fn take_class(&mut self, class: &[bool; 256]) -> &'a str {
        let rest = self.rest();
        let n = rest
            .bytes()
            .position(|c| !class[usize::from(c)])
            .unwrap_or(rest.len());
        self.pos += n;
        rest.get(..n).unwrap_or("")
    }

    /// Takes everything up to the ASCII byte `end` (or to the end).
    fn take_until(&mut self, end: u8) -> &'a str {
        let rest = self.rest();
        let n = find_byte(rest, end).unwrap_or(rest.len());
        self.pos += n;
        rest.get(..n).unwrap_or("")
    }

    /// Takes everything up to the first of the ASCII bytes `a` and `b` (or to the end).
    fn take_until2(&mut self, a: u8, b: u8) -> &'a str {
        let rest = self.rest();
        let n = rest
            .bytes()
            .position(|c| c == a || c == b)
            .unwrap_or(rest.len());
        self.pos += n;
        rest.get(..n).unwrap_or("")
    }

    /// Takes a `quoted-string` including its quotes (RFC 3261 §25.1): a backslash escapes any
    /// byte but CR and LF; the closing quote must be present.
    fn quoted(&mut self) -> Result<&'a str, ParseError> {
        let start = self.pos;
        if !self.eat(b'"') {
            return Err(ParseError::new("Expected quoted string"));
        }
        loop {
            match self.peek() {
                None => return Err(ParseError::new("Unterminated quoted string")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => match self.s.as_bytes().get(self.pos + 1) {
                    Some(&c) if c <= 0x7f && c != b'\r' && c != b'\n' => self.pos += 2,
                    _ => return Err(ParseError::new("Bad escape in quoted string")),
                },
                Some(_) => self.pos += 1,
            }
        }
        self.s
            .get(start..self.pos)
            .ok_or_else(|| ParseError::new("Bad quoted string"))
    }
}

// ---------------------------------------------------------------------------------------------
// URIs
//
// Every grammar below is read once into a borrowed view (`…Ref`: slices of the input, nothing
// allocated). The message validator only builds views; the owned values (`Uri`, `Via`,
// `NameAddr`...) are built from a view, so both share one grammar and one verdict.

/// A host as written: a domain name not yet lower-cased, or an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostRef<'a> {
    Domain(&'a str),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
}

impl HostRef<'_> {
    pub(crate) fn to_host(self) -> Host {
        match self {
            Self::Domain(d) => Host::Domain(d.to_ascii_lowercase()),
            Self::Ipv4(a) => Host::Ipv4(a),
            Self::Ipv6(a) => Host::Ipv6(a),
        }
    }
}

/// Checked `;name[=value]` URI parameters as written (the `;` section of a SIP URI or the
/// parameters of a tel URI). Names and values hold no `;`, `=` or `?`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UriParamsRef<'a> {
    /// Empty, or starting with `;`.
    raw: &'a str,
    count: usize,
}

impl<'a> UriParamsRef<'a> {
    pub(crate) fn iter(self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> {
        self.raw
            .split(';')
            .skip(1)
            .map(|p| match split_at_byte(p, b'=') {
                Some((name, value)) => (name, Some(value)),
                None => (p, None),
            })
    }

    fn to_params(self) -> Params {
        let mut params = Vec::with_capacity(self.count);
        params.extend(
            self.iter()
                .map(|(name, value)| (name.to_owned(), value.map(str::to_owned))),
        );
        Params(params)
    }
}

/// Checked `?name=value&...` headers of a SIP URI, as written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UriHeadersRef<'a> {
    /// What follows the `?` (empty when there is none).
    raw: &'a str,
    count: usize,
}

impl<'a> UriHeadersRef<'a> {
    pub(crate) fn is_empty(self) -> bool {
        self.count == 0
    }

    fn iter(self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.raw
            .split('&')
            .take(self.count)
            .map(|h| h.split_once('=').unwrap_or((h, "")))
    }
}

/// A checked `sip:`/`sips:` URI, borrowing the text it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SipUriRef<'a> {
    pub(crate) secure: bool,
    pub(crate) user: Option<&'a str>,
    pub(crate) password: Option<&'a str>,
    pub(crate) host: HostRef<'a>,
    pub(crate) port: Option<u16>,
    pub(crate) params: UriParamsRef<'a>,
    pub(crate) headers: UriHeadersRef<'a>,
}

impl SipUriRef<'_> {
    pub(crate) fn to_sip_uri(self) -> SipUri {
        SipUri {
            secure: self.secure,
            user: self.user.map(str::to_owned),
            password: self.password.map(str::to_owned),
            host: self.host.to_host(),
            port: self.port,
            params: self.params.to_params(),
            headers: if self.headers.is_empty() {
                Vec::new()
            } else {
                let mut headers = Vec::with_capacity(self.headers.count);
                headers.extend(
                    self.headers
                        .iter()
                        .map(|(n, v)| (n.to_owned(), v.to_owned())),
                );
                headers
            },
        }
    }
}

/// A checked URI, borrowing the text it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UriRef<'a> {
    Sip(SipUriRef<'a>),
    Tel {
        number: &'a str,
        params: UriParamsRef<'a>,
    },
    Other {
        scheme: &'a str,
        rest: &'a str,
    },
}

impl UriRef<'_> {
    pub(crate) fn to_uri(self) -> Uri {
        match self {
            Self::Sip(u) => Uri::Sip(u.to_sip_uri()),
            Self::Tel { number, params } => Uri::Tel(TelUri {
                number: number.to_owned(),
                params: params.to_params(),
            }),
            Self::Other { scheme, rest } => Uri::Other {
                scheme: scheme.to_owned(),
                rest: rest.to_owned(),
            },
        }
    }
}

/// Parses an absolute URI: `sip:`/`sips:` (RFC 3261 §19.1), `tel:` (RFC 3966), or any other
/// scheme kept verbatim (the application answers 416 for those where it must, RFC 3261 §8.2.2.1).
pub(crate) fn uri(s: &str) -> Result<Uri, ParseError> {
    uri_ref(s).map(UriRef::to_uri)
}

/// [`uri`] without building the owned value.
pub(crate) fn uri_ref(s: &str) -> Result<UriRef<'_>, ParseError> {
    let bad = || ParseError::new("Malformed URI");
    let (scheme, rest) = match s.get(..4).zip(s.get(4..)) {
        // The usual case, as the general path below would read it.
        Some((p, rest)) if p.eq_ignore_ascii_case("sip:") => (p.get(..3).unwrap_or(""), rest),
        _ => {
            let (scheme, rest) = split_at_byte(s, b':').ok_or_else(bad)?;
            // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
            if !scheme
                .as_bytes()
                .first()
                .is_some_and(u8::is_ascii_alphabetic)
                || !class_only(scheme, &SCHEME)
            {
                return Err(bad());
            }
            (scheme, rest)
        }
    };
    // URIs are ASCII with escapes; no whitespace, no delimiters of the enclosing header.
    let text_ok = || !rest.is_empty() && class_only(rest, &URI_TEXT);
    let parsed = if scheme.eq_ignore_ascii_case("sip") {
        sip_uri_ref(rest, false).map(UriRef::Sip)
    } else if scheme.eq_ignore_ascii_case("sips") {
        sip_uri_ref(rest, true).map(UriRef::Sip)
    } else if scheme.eq_ignore_ascii_case("tel") {
        tel_uri_ref(rest)
    } else if text_ok() {
        return Ok(UriRef::Other { scheme, rest });
    } else {
        return Err(bad());
    };
    // A SIP or tel URI that parses is made of URI_TEXT bytes only (every part's class is a
    // subset), so the text is checked only to tell which error a refused one gets.
    parsed.map_err(|e| if text_ok() { e } else { bad() })
}

fn sip_uri_ref(rest: &str, secure: bool) -> Result<SipUriRef<'_>, ParseError> {
    let bad = |what: &str| ParseError::new(format!("Malformed SIP URI {what}"));
    // userinfo cannot hold an unescaped "@" (RFC 3261 §25.1), so the first one ends it, even
    // when the user part holds "?", ";" or "," (RFC 4475 §3.1.1.2, §3.1.1.9).
    //
    // The user and password classes hold neither '@' nor ':', so scans of those classes find
    // a well-formed userinfo and check its bytes at once. When they stop at any other byte, the
    // rest is searched for the '@' (none: there is no userinfo, the scans went over the host)
    // and a userinfo found so is checked part by part.
    let b = rest.as_bytes();
    let run = |from: usize, class: &[bool; 256]| {
        let tail = b.get(from..).unwrap_or(&[]);
        from + tail
            .iter()
            .position(|&c| !class[usize::from(c)])
            .unwrap_or(tail.len())
    };
    let user_end = run(0, &USER);
    let (scanned, searched) = match b.get(user_end) {
        Some(b'@') => (Some((user_end, None)), user_end),
        Some(b':') => {
            let password_end = run(user_end + 1, &PASSWORD);
            let found = b.get(password_end) == Some(&b'@');
            (
                found.then_some((password_end, Some(user_end + 1))),
                password_end,
            )
        }
        _ => (None, user_end),
    };
    let (user, password, hostport) = if let Some((at, password_start)) = scanned {
        let user = rest.get(..user_end).unwrap_or("");
        let password = password_start.map(|p| rest.get(p..at).unwrap_or(""));
        if user.is_empty() || !escapes_valid(user) {
            return Err(bad("user"));
        }
        if password.is_some_and(|pw| !escapes_valid(pw)) {
            return Err(bad("password"));
        }
        (Some(user), password, rest.get(at + 1..).unwrap_or(""))
    } else {
        match find_byte(rest.get(searched..).unwrap_or(""), b'@') {
            None => (None, None, rest),
            Some(i) => {
                let userinfo = rest.get(..searched + i).unwrap_or("");
                let (user, password) = match split_at_byte(userinfo, b':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (userinfo, None),
                };
                if user.is_empty() || !escaped_class_only(user, &USER) {
                    return Err(bad("user"));
                }
                if password.is_some_and(|pw| !escaped_class_only(pw, &PASSWORD)) {
                    return Err(bad("password"));
                }
                (
                    Some(user),
                    password,
                    rest.get(searched + i + 1..).unwrap_or(""),
                )
            }
        }
    };
    let mut c = Cursor::new(hostport);
    let host = host_ref(&mut c).map_err(|_| bad("host"))?;
    let port = if c.eat(b':') {
        Some(port(&mut c).map_err(|_| bad("port"))?)
    } else {
        None
    };
    let params_start = c.pos;
    let mut count = 0;
    while c.eat(b';') {
        let p = c.take_until2(b';', b'?');
        let (name, value) = match split_at_byte(p, b'=') {
            Some((name, value)) => (name, Some(value)),
            None => (p, None),
        };
        if name.is_empty()
            || !escaped_class_only(name, &PARAM)
            || value.is_some_and(|v| !escaped_class_only(v, &PARAM))
        {
            return Err(bad("parameter"));
        }
        if count >= MAX_PARAMS {
            return Err(bad("parameters"));
        }
        count += 1;
    }
    let params = UriParamsRef {
        raw: hostport.get(params_start..c.pos).unwrap_or(""),
        count,
    };
    let mut headers = UriHeadersRef::default();
    if c.eat(b'?') {
        let raw = c.rest();
        for h in raw.split('&') {
            let (name, value) = h.split_once('=').ok_or_else(|| bad("header"))?;
            if name.is_empty()
                || !escaped_class_only(name, &HEADER)
                || !escaped_class_only(value, &HEADER)
                || headers.count >= MAX_PARAMS
            {
                return Err(bad("header"));
            }
            headers.count += 1;
        }
        headers.raw = raw;
    } else if !c.at_end() {
        return Err(bad("host"));
    }
    Ok(SipUriRef {
        secure,
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}

fn tel_uri_ref(rest: &str) -> Result<UriRef<'_>, ParseError> {
    let bad = || ParseError::new("Malformed tel URI");
    let (number, raw) = rest
        .split_at_checked(find_byte(rest, b';').unwrap_or(rest.len()))
        .unwrap_or((rest, ""));
    if number.is_empty() || !class_only(number, &TEL) {
        return Err(bad());
    }
    let mut count = 0;
    for p in raw.split(';').skip(1) {
        let (name, value) = match split_at_byte(p, b'=') {
            Some((name, value)) => (name, Some(value)),
            None => (p, None),
        };
        // Escapes are checked in values only (as they always were).
        if name.is_empty()
            || !class_only(name, &PARAM)
            || value.is_some_and(|v| !escaped_class_only(v, &PARAM))
            || count >= MAX_PARAMS
        {
            return Err(bad());
        }
        count += 1;
    }
    Ok(UriRef::Tel {
        number,
        params: UriParamsRef { raw, count },
    })
}

/// `host` = hostname / IPv4address / IPv6reference (RFC 3261 §25.1, RFC 5118 §4.1-§4.3).
fn host_ref<'a>(c: &mut Cursor<'a>) -> Result<HostRef<'a>, ParseError> {
    let bad = || ParseError::new("Malformed host");
    if c.eat(b'[') {
        let inner = c.take_class(&IPV6);
        if !c.eat(b']') {
            return Err(bad());
        }
        // std rejects ":::" and other forms outside RFC 4291 (RFC 5118 §4.3).
        return inner
            .parse::<Ipv6Addr>()
            .map(HostRef::Ipv6)
            .map_err(|_| bad());
    }
    // One pass over the labels takes the name and checks it against the rule of
    // `hostname_valid`: each label starts and ends with an alphanumeric, one trailing '.' is
    // allowed. A name that breaks the rule within its bytes is refused at once (no dotted quad
    // breaks it); the host ends at the first byte that is not alphanumeric, '-' or '.'.
    let b = c.s.as_bytes();
    let start = c.pos;
    // A dotted quad (as in most Vias and Contacts) is read at once when no host byte follows:
    // then it is the whole name.
    if b.get(start).is_some_and(u8::is_ascii_digit) {
        if let Some((v4, n)) = ipv4_prefix(b.get(start..).unwrap_or(&[])) {
            let next = b.get(start + n).copied();
            if !next.is_some_and(|x| x == b'.' || ALNUM_DASH[usize::from(x)]) {
                c.pos = start + n;
                return Ok(HostRef::Ipv4(v4));
            }
        }
    }
    let mut i = start;
    let mut top_alpha = false;
    loop {
        match b.get(i) {
            Some(&x) if x.is_ascii_alphanumeric() => top_alpha = x.is_ascii_alphabetic(),
            Some(b'-' | b'.') => return Err(bad()),
            // No label after a '.': the trailing one, if there was a label before it.
            _ if i > start => break,
            _ => return Err(bad()),
        }
        i += 1;
        let rest = b.get(i..).unwrap_or(&[]);
        let n = rest
            .iter()
            .position(|&x| !ALNUM_DASH[usize::from(x)])
            .unwrap_or(rest.len());
        i += n;
        if n > 0 && rest.get(n - 1) == Some(&b'-') {
            return Err(bad());
        }
        if b.get(i) != Some(&b'.') {
            break;
        }
        i += 1;
    }
    c.pos = i;
    let name = c.s.get(start..i).unwrap_or("");
    // The top label starts with ALPHA in a hostname, with a digit in a dotted quad.
    if top_alpha {
        Ok(HostRef::Domain(name))
    } else {
        ipv4(name.as_bytes()).map(HostRef::Ipv4).ok_or_else(bad)
    }
}

/// A dotted quad exactly as `Ipv4Addr::from_str` reads one (without its generic machinery):
/// four decimal octets of one to three digits, none above 255, no leading zero, nothing else.
fn ipv4(b: &[u8]) -> Option<Ipv4Addr> {
    ipv4_prefix(b)
        .filter(|&(_, n)| n == b.len())
        .map(|(a, _)| a)
}

/// [`ipv4`] of the longest prefix it can read, and that prefix's length.
fn ipv4_prefix(b: &[u8]) -> Option<(Ipv4Addr, usize)> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        if n > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut value = 0u32;
        while let Some(&d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            if i - start == 3 {
                return None;
            }
            value = value * 10 + u32::from(d - b'0');
            i += 1;
        }
        let len = i - start;
        if len == 0 || (len > 1 && b.get(start) == Some(&b'0')) {
            return None;
        }
        *octet = u8::try_from(value).ok()?;
    }
    Some((Ipv4Addr::from(octets), i))
}

/// hostname = *( domainlabel "." ) toplabel [ "." ] over alphanumerics, '-' and '.' (the rule
/// `host_ref` checks in its scan; kept as the readable statement it is tested against). Every label
/// starts and ends with an alphanumeric (no empty label, no '-' next to a '.' or at either end);
/// the top label starts with ALPHA, which keeps "sip:2001:db8::10" (RFC 5118 §4.4) and bad
/// dotted quads out.
#[cfg(test)]
fn hostname_valid(name: &[u8]) -> bool {
    let name = name.strip_suffix(b".").unwrap_or(name);
    // As if a '.' came before the name: the first byte starts a label.
    let mut prev = b'.';
    let mut top_alpha = false;
    for &b in name {
        if b == b'.' {
            if !prev.is_ascii_alphanumeric() {
                return false;
            }
        } else if prev == b'.' {
            if !b.is_ascii_alphanumeric() {
                return false;
            }
            top_alpha = b.is_ascii_alphabetic();
        }
        prev = b;
    }
    prev.is_ascii_alphanumeric() && top_alpha
}

fn port(c: &mut Cursor<'_>) -> Result<u16, ParseError> {
    let digits = c.take_class(&DIGIT);
    if digits.is_empty() || digits.len() > 5 {
        return Err(ParseError::new("Malformed port"));
    }
    digits
        .parse()
        .map_err(|_| ParseError::new("Malformed port"))
}

/// Decodes %-escapes; invalid UTF-8 after decoding is replaced, bad escapes are kept as is.
pub(crate) fn unescape(s: &str) -> String {
    if find_byte(s, b'%').is_none() {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = |j: usize| b.get(j).and_then(|&h| (h as char).to_digit(16));
        match (c, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                // Two hex digits fit a byte.
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Header names and lists

/// Parses a header name: case-insensitive, compact forms (RFC 3261 §7.3.3 and the IANA
/// registry) expanded to the full name.
///
/// The length and first letter pick the one known name it can be (two pairs need the last
/// letter too), which is then compared once, without lower-casing a copy.
pub(crate) fn header_name(s: &str) -> HeaderName {
    use HeaderName as H;
    let b = s.as_bytes();
    let other = |full: &str| H::Other(full.to_owned());
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return H::Other(String::new());
    };
    let first = first.to_ascii_lowercase();
    if b.len() == 1 {
        return match first {
            b'v' => H::Via,
            b'f' => H::From,
            b't' => H::To,
            b'i' => H::CallId,
            b'm' => H::Contact,
            b'l' => H::ContentLength,
            b'c' => H::ContentType,
            b'e' => H::ContentEncoding,
            b'k' => H::Supported,
            b'o' => H::Event,
            b's' => H::Subject,
            b'r' => H::ReferTo,
            b'b' => H::ReferredBy,
            b'x' => H::SessionExpires,
            // Compact forms of headers without a variant (RFC 3841, RFC 4474, RFC 6665).
            b'a' => other("Accept-Contact"),
            b'j' => other("Reject-Contact"),
            b'd' => other("Request-Disposition"),
            b'u' => other("Allow-Events"),
            b'y' => other("Identity"),
            b'n' => other("Identity-Info"),
            _ => H::Other(s.to_owned()),
        };
    }
    // The canonical spelling, which most senders use, is compared first (inlined: a literal
    // of the length matched).
    macro_rules! pick {
        ($canonical:literal, $known:expr) => {
            if b == $canonical.as_bytes() || s.eq_ignore_ascii_case($canonical) {
                $known
            } else {
                H::Other(s.to_owned())
            }
        };
    }
    match (b.len(), first, last.to_ascii_lowercase()) {
        (2, b't', _) => pick!("To", H::To),
        (3, b'v', _) => pick!("Via", H::Via),
        (4, b'c', _) => pick!("CSeq", H::CSeq),
        (4, b'd', _) => pick!("Date", H::Date),
        (4, b'f', _) => pick!("From", H::From),
        (4, b'p', _) => pick!("Path", H::Path),
        (5, b'a', _) => pick!("Allow", H::Allow),
        (5, b'e', _) => pick!("Event", H::Event),
        (5, b'r', _) => pick!("Route", H::Route),
        (6, b'm', _) => pick!("Min-SE", H::MinSe),
        (6, b'r', _) => pick!("Reason", H::Reason),
        (6, b's', _) => pick!("Server", H::Server),
        (7, b'c', b'd') => pick!("Call-ID", H::CallId),
        (7, b'c', b't') => pick!("Contact", H::Contact),
        (7, b'e', _) => pick!("Expires", H::Expires),
        (7, b'r', _) => pick!("Require", H::Require),
        (7, b's', _) => pick!("Subject", H::Subject),
        (7, b'w', _) => pick!("Warning", H::Warning),
        (8, b'r', _) => pick!("Refer-To", H::ReferTo),
        (9, b's', _) => pick!("Supported", H::Supported),
        (9, b't', _) => pick!("Timestamp", H::Timestamp),
        (10, b'u', _) => pick!("User-Agent", H::UserAgent),
        (11, b'm', _) => pick!("Min-Expires", H::MinExpires),
        (11, b'r', b'y') => pick!("Referred-By", H::ReferredBy),
        (11, b'r', b'r') => pick!("Retry-After", H::RetryAfter),
        (11, b'u', _) => pick!("Unsupported", H::Unsupported),
        (12, b'c', _) => pick!("Content-Type", H::ContentType),
        (12, b'm', _) => pick!("Max-Forwards", H::MaxForwards),
        (12, b'r', _) => pick!("Record-Route", H::RecordRoute),
        (13, b'a', _) => pick!("Authorization", H::Authorization),
        (13, b'p', _) => pick!("Proxy-Require", H::ProxyRequire),
        (14, b'c', _) => pick!("Content-Length", H::ContentLength),
        (15, b's', _) => pick!("Session-Expires", H::SessionExpires),
        (16, b'c', _) => pick!("Content-Encoding", H::ContentEncoding),
        (16, b'w', _) => pick!("WWW-Authenticate", H::WwwAuthenticate),
        (18, b'p', _) => pick!("Proxy-Authenticate", H::ProxyAuthenticate),
        (19, b'a', _) => pick!("Authentication-Info", H::AuthenticationInfo),
        (19, b'p', _) => pick!("Proxy-Authorization", H::ProxyAuthorization),
        _ => H::Other(s.to_owned()),
    }
}

/// Splits a list header value at commas outside quoted strings and `<...>` (RFC 3261 §7.3.1),
/// trimming each element and skipping empty ones.
pub(crate) fn split_list(s: &str) -> SplitList<'_> {
    SplitList { rest: Some(s) }
}

/// Iterator returned by [`split_list`].
pub(crate) struct SplitList<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for SplitList<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            let s = self.rest?;
            let b = s.as_bytes();
            let (mut quoted, mut angle, mut i) = (false, false, 0);
            let mut cut = None;
            // Most values hold no comma at all: then they are one element, whatever they quote.
            if memchr::memchr(b',', b).is_none() {
                i = b.len();
            }
            while let Some(&c) = b.get(i) {
                match c {
                    b'\\' if quoted => i += 1,
                    b'"' => quoted = !quoted,
                    b'<' if !quoted => angle = true,
                    b'>' if !quoted => angle = false,
                    b',' if !quoted && !angle => {
                        cut = Some(i);
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
            let item = match cut {
                Some(i) => {
                    self.rest = s.get(i + 1..);
                    s.get(..i).unwrap_or("")
                }
                None => {
                    self.rest = None;
                    s
                }
            };
            let item = trim_ws(item);
            if !item.is_empty() {
                return Some(item);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Header values

/// Checked header parameters (`*( SEMI generic-param )`, RFC 3261 §25.1) as written, LWS
/// included; values keep their quotes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ParamsRef<'a> {
    raw: &'a str,
    count: usize,
}

impl<'a> ParamsRef<'a> {
    pub(crate) fn iter(self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> {
        let mut c = Cursor::new(self.raw);
        // Checked already: no error can come up, and none is hidden by stopping at one.
        std::iter::from_fn(move || header_param(&mut c, 0).ok().flatten())
    }

    /// `None` if absent, `Some(None)` if present without a value (as [`Params::get`]).
    pub(crate) fn get(self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub(crate) fn to_params(self) -> Params {
        let mut params = Vec::with_capacity(self.count);
        params.extend(
            self.iter()
                .map(|(name, value)| (name.to_owned(), value.map(str::to_owned))),
        );
        Params(params)
    }
}

/// One `; name [= value]` header parameter with LWS allowed around `;` and `=` (RFC 3261
/// §25.1, RFC 4475 §3.1.1.1), `count` being how many came before it; `None` at the end of the
/// input. Values are a token, a host (IPv6 references and, per RFC 5118 §4.5, bare IPv6
/// addresses in `received`) or a quoted string kept with its quotes.
fn header_param<'a>(
    c: &mut Cursor<'a>,
    count: usize,
) -> Result<Option<(&'a str, Option<&'a str>)>, ParseError> {
    let bad = || ParseError::new("Malformed parameter");
    c.skip_ws();
    if c.at_end() {
        return Ok(None);
    }
    if !c.eat(b';') {
        return Err(bad());
    }
    c.skip_ws();
    let name = c.take_class(&TOKEN);
    if name.is_empty() || count >= MAX_PARAMS {
        return Err(bad());
    }
    c.skip_ws();
    let value = if c.eat(b'=') {
        c.skip_ws();
        let v = if c.peek() == Some(b'"') {
            c.quoted()?
        } else {
            c.take_class(&PARAM_VALUE)
        };
        if v.is_empty() {
            return Err(bad());
        }
        Some(v)
    } else {
        None
    };
    Ok(Some((name, value)))
}

/// Header parameters up to the end of the input (which they must consume).
fn header_params<'a>(c: &mut Cursor<'a>) -> Result<ParamsRef<'a>, ParseError> {
    let start = c.pos;
    let mut count = 0;
    while header_param(c, count)?.is_some() {
        count += 1;
    }
    Ok(ParamsRef {
        raw: c.s.get(start..).unwrap_or(""),
        count,
    })
}

/// A checked Via value, borrowing its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ViaRef<'a> {
    /// As written (not yet upper-cased).
    pub(crate) transport: &'a str,
    pub(crate) host: HostRef<'a>,
    pub(crate) port: Option<u16>,
    pub(crate) params: ParamsRef<'a>,
}

impl<'a> ViaRef<'a> {
    /// The branch parameter, if any (as [`Via::branch`]).
    pub(crate) fn branch(self) -> Option<&'a str> {
        self.params.get("branch").flatten()
    }

    pub(crate) fn to_via(self) -> Via {
        Via {
            transport: self.transport.to_ascii_uppercase(),
            host: self.host.to_host(),
            port: self.port,
            params: self.params.to_params(),
        }
    }
}

/// One Via value (RFC 3261 §20.42): `SIP / 2.0 / transport LWS sent-by *(; via-params)`.
pub(crate) fn via(s: &str) -> Result<Via, ParseError> {
    via_ref(s).map(ViaRef::to_via)
}

/// [`via`] without building the owned value.
pub(crate) fn via_ref(s: &str) -> Result<ViaRef<'_>, ParseError> {
    let bad = || ParseError::new("Malformed Via");
    let mut c = Cursor::new(trim_ws(s));
    let transport = match c.s.get(..8) {
        // The usual spelling, without LWS: what the general path below reads it as.
        Some(p) if p.eq_ignore_ascii_case("SIP/2.0/") => {
            c.pos = 8;
            c.skip_ws();
            c.take_class(&TOKEN)
        }
        _ => {
            let proto = c.take_class(&TOKEN);
            c.skip_ws();
            let slash1 = c.eat(b'/');
            c.skip_ws();
            let version = c.take_class(&TOKEN);
            c.skip_ws();
            let slash2 = c.eat(b'/');
            c.skip_ws();
            let transport = c.take_class(&TOKEN);
            if !proto.eq_ignore_ascii_case("SIP") || version != "2.0" || !slash1 || !slash2 {
                return Err(bad());
            }
            transport
        }
    };
    if transport.is_empty() || c.skip_ws() == 0 {
        return Err(bad());
    }
    let host = host_ref(&mut c).map_err(|_| bad())?;
    c.skip_ws();
    let port = if c.eat(b':') {
        c.skip_ws();
        Some(port(&mut c).map_err(|_| bad())?)
    } else {
        None
    };
    let params = header_params(&mut c).map_err(|_| bad())?;
    Ok(ViaRef {
        transport,
        host,
        port,
        params,
    })
}

/// A checked name-addr or addr-spec with its header parameters, borrowing its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NameAddrRef<'a> {
    /// Without the quotes of a quoted display name (escapes kept as on the wire).
    pub(crate) display: Option<&'a str>,
    pub(crate) uri: UriRef<'a>,
    pub(crate) params: ParamsRef<'a>,
}

impl<'a> NameAddrRef<'a> {
    /// The tag parameter, if any (as [`NameAddr::tag`]).
    pub(crate) fn tag(self) -> Option<&'a str> {
        self.params.get("tag").flatten()
    }

    /// The owned value without its `tag` parameters.
    pub(crate) fn to_name_addr_without_tag(self) -> NameAddr {
        let mut params = Vec::with_capacity(self.params.count);
        params.extend(
            self.params
                .iter()
                .filter(|(name, _)| !name.eq_ignore_ascii_case("tag"))
                .map(|(name, value)| (name.to_owned(), value.map(str::to_owned))),
        );
        NameAddr {
            display: self.display.map(str::to_owned),
            uri: self.uri.to_uri(),
            params: Params(params),
        }
    }

    pub(crate) fn to_name_addr(self) -> NameAddr {
        NameAddr {
            display: self.display.map(str::to_owned),
            uri: self.uri.to_uri(),
            params: self.params.to_params(),
        }
    }
}

/// A From/To/Contact/Route value: name-addr or addr-spec, then header parameters
/// (RFC 3261 §20.10, §25.1).
pub(crate) fn name_addr(s: &str) -> Result<NameAddr, ParseError> {
    name_addr_ref(s).map(NameAddrRef::to_name_addr)
}

/// [`name_addr`] without building the owned value.
pub(crate) fn name_addr_ref(s: &str) -> Result<NameAddrRef<'_>, ParseError> {
    let s = trim_ws(s);
    let mut c = Cursor::new(s);
    let display = if c.peek() == Some(b'"') {
        let q = c.quoted()?;
        c.skip_ws();
        Some(
            q.strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .unwrap_or(""),
        )
    } else {
        // A display name of tokens cannot hold ";", so a "<" before the first ";" starts the
        // name-addr; without one this is an addr-spec.
        let lt = s
            .bytes()
            .position(|b| b == b';' || b == b'<')
            .filter(|&i| s.as_bytes().get(i) == Some(&b'<'));
        match lt {
            Some(lt) => {
                let name = trim_ws(s.get(..lt).unwrap_or(""));
                // RFC 4475 §3.1.2.15: an unquoted display name is tokens and LWS only. UTF-8
                // beyond ASCII is let through: some UAs send it unquoted, and it cannot be
                // mistaken for a delimiter (it is re-serialised quoted).
                if !class_only(name, &DISPLAY_NAME) {
                    return Err(ParseError::new("Malformed display name"));
                }
                c.pos = lt;
                (!name.is_empty()).then_some(name)
            }
            None => {
                // RFC 3261 §20.10: a URI holding ",", "?" or ";" must be in <>; the first ";"
                // or LWS ends the addr-spec (RFC 4475 §3.1.2.13).
                let end = find_any(s, b"; \t").unwrap_or(s.len());
                let spec = s.get(..end).unwrap_or("");
                if find_any(spec, b",?").is_some() {
                    return Err(ParseError::new(
                        "URI with ',' or '?' must be enclosed in <>",
                    ));
                }
                let uri = uri_ref(spec)?;
                c.pos = end;
                let params = header_params(&mut c)?;
                return Ok(NameAddrRef {
                    display: None,
                    uri,
                    params,
                });
            }
        }
    };
    if !c.eat(b'<') {
        return Err(ParseError::new("Malformed name-addr"));
    }
    let inner = c.take_until(b'>');
    if !c.eat(b'>') {
        return Err(ParseError::new("Unterminated <URI>"));
    }
    // RFC 4475 §3.1.2.14: no LWS inside the brackets; uri_ref() refuses it.
    let uri = uri_ref(inner)?;
    let params = header_params(&mut c)?;
    Ok(NameAddrRef {
        display,
        uri,
        params,
    })
}

/// A Contact value (RFC 3261 §20.10): `None` for `*`, else the address (as
/// [`ContactValue::parse`](crate::header::ContactValue::parse)).
pub(crate) fn contact_ref(s: &str) -> Result<Option<NameAddrRef<'_>>, ParseError> {
    if s.trim() == "*" {
        Ok(None)
    } else {
        name_addr_ref(s).map(Some)
    }
}

/// `CSeq: 1*DIGIT LWS Method` (RFC 3261 §20.16); the number must fit 32 bits.
pub(crate) fn cseq(s: &str) -> Result<CSeq, ParseError> {
    cseq_ref(s).map(|(seq, method)| CSeq {
        seq,
        method: Method::parse(method),
    })
}

/// [`cseq`] with the method as written.
pub(crate) fn cseq_ref(s: &str) -> Result<(u32, &str), ParseError> {
    let bad = || ParseError::new("Malformed CSeq");
    let mut c = Cursor::new(trim_ws(s));
    let digits = c.take_class(&DIGIT);
    if digits.is_empty() || c.skip_ws() == 0 {
        return Err(bad());
    }
    let seq = digits
        .parse::<u32>()
        .map_err(|_| ParseError::new("CSeq number too large"))?;
    let method = c.take_class(&TOKEN);
    if method.is_empty() || !c.at_end() {
        return Err(bad());
    }
    Ok((seq, method))
}

/// RFC 1123 date in GMT as RFC 3261 §20.17 requires: `Sat, 13 Nov 2010 23:29:00 GMT`.
fn date_valid(s: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    b.len() == 29
        && s.get(0..3).is_some_and(|d| DAYS.contains(&d))
        && at(3, b',')
        && at(4, b' ')
        && digits(5..7)
        && at(7, b' ')
        && s.get(8..11).is_some_and(|m| MONTHS.contains(&m))
        && at(11, b' ')
        && digits(12..16)
        && at(16, b' ')
        && digits(17..19)
        && at(19, b':')
        && digits(20..22)
        && at(22, b':')
        && digits(23..25)
        && at(25, b' ')
        && s.get(26..29) == Some("GMT")
}

// ---------------------------------------------------------------------------------------------
// Messages

enum StartLine {
    Request(Method, Uri),
    Response(StatusCode, String),
}

/// Skips CRLFs before the start line (RFC 3261 §7.5) and finds the empty line ending the
/// header section. Returns (header section including its last line end, body offset).
fn split_head(bytes: &[u8]) -> Option<(usize, usize, usize)> {
    let start = bytes.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let head = bytes.get(start..)?;
    for nl in memchr::memchr_iter(b'\n', head) {
        match (head.get(nl + 1), head.get(nl + 2)) {
            (Some(b'\n'), _) => return Some((start, start + nl + 1, start + nl + 2)),
            (Some(b'\r'), Some(b'\n')) => return Some((start, start + nl + 1, start + nl + 3)),
            _ => {}
        }
    }
    None
}

/// Lines of the header section without their CRLF (or bare LF).
fn lines(head: &str) -> impl Iterator<Item = &str> {
    let mut rest = head;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, next) = match memchr::memchr(b'\n', rest.as_bytes()) {
            Some(i) => (rest.get(..i)?, rest.get(i + 1..)?),
            None => (rest, ""),
        };
        rest = next;
        Some(line.strip_suffix('\r').unwrap_or(line))
    })
}

/// The header lines that follow the start line, unfolded (RFC 3261 §7.3.1: a line starting
/// with SP/HT continues the previous one, the fold counting as one SP). Any malformed line
/// refuses the message.
///
/// One scan per line finds its end and any CR in it (a CR is only allowed right before the LF).
fn header_section(text: &str) -> Result<Vec<Header>, ParseError> {
    let bad = || ParseError::new("Malformed header line");
    let mut out: Vec<Header> = Vec::with_capacity(16);
    let b = text.as_bytes();
    let mut pos = 0;
    while pos < b.len() {
        let tail = b.get(pos..).unwrap_or(&[]);
        let (len, next) = match memchr::memchr2(b'\r', b'\n', tail) {
            None => (tail.len(), b.len()),
            Some(i) => match (tail.get(i), tail.get(i + 1)) {
                (Some(b'\n'), _) => (i, pos + i + 1),
                (_, Some(b'\n')) => (i, pos + i + 2),
                // The text ends with a line end, so this is a bare CR, unless the last line
                // lacks its LF (then the CR is its end, as `lines` reads it).
                (_, None) => (i, b.len()),
                _ => return Err(bad()),
            },
        };
        let line = text.get(pos..pos + len).unwrap_or("");
        pos = next;
        let lb = line.as_bytes();
        if lb.first().is_some_and(|&c| is_ws(c)) {
            let more = trim_ws(line);
            match out.last_mut() {
                Some(Header { value, .. }) if !more.is_empty() => {
                    if !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str(more);
                }
                Some(_) => {}
                None => return Err(bad()),
            }
            continue;
        }
        // field-name HCOLON: a token, optional SP/HT, ':' (':' is neither token nor SP/HT).
        let name_len = lb.iter().take_while(|&&c| is_token(c)).count();
        let colon = name_len
            + lb.get(name_len..)
                .map_or(0, |r| r.iter().take_while(|&&c| is_ws(c)).count());
        if name_len == 0 || lb.get(colon) != Some(&b':') {
            return Err(bad());
        }
        if out.len() >= MAX_HEADERS {
            return Err(ParseError::new("Too many header fields"));
        }
        out.push(Header {
            name: header_name(line.get(..name_len).unwrap_or("")),
            value: trim_ws(line.get(colon + 1..).unwrap_or("")).to_owned(),
        });
    }
    Ok(out)
}

/// Unfolds header lines as [`header_section`] does, skipping malformed lines (for
/// [`recover_request_headers`]).
fn header_lines_lenient<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<Header> {
    let mut out: Vec<Header> = Vec::with_capacity(16);
    for line in lines {
        // A CR is only allowed as part of a line end (RFC 3261 §7.3.1).
        if memchr::memchr(b'\r', line.as_bytes()).is_some() {
            continue;
        }
        if line.as_bytes().first().is_some_and(|&b| is_ws(b)) {
            let more = trim_ws(line);
            if let Some(Header { value, .. }) = out.last_mut() {
                if !more.is_empty() {
                    if !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str(more);
                }
            }
            continue;
        }
        let parsed = split_at_byte(line, b':').and_then(|(name, value)| {
            let name = name.trim_end_matches([' ', '\t']);
            (!name.is_empty() && all(name, is_token)).then(|| Header {
                name: header_name(name),
                value: trim_ws(value).to_owned(),
            })
        });
        if let Some(h) = parsed {
            if out.len() >= MAX_HEADERS {
                break;
            }
            out.push(h);
        }
    }
    out
}

fn check_version(v: &str) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case("SIP/2.0") {
        return Ok(());
    }
    // A well-formed other version gets 505 (RFC 3261 §21.5.6, RFC 4475 §3.1.2.16).
    let other = v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
        && v.get(4..)
            .and_then(|n| n.split_once('.'))
            .is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && all(a, |c| c.is_ascii_digit())
                    && all(b, |c| c.is_ascii_digit())
            });
    if other {
        Err(ParseError::with_status(505, "Version Not Supported"))
    } else {
        Err(ParseError::new("Malformed SIP version"))
    }
}

fn start_line(line: &str) -> Result<StartLine, ParseError> {
    if line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (RFC 3261 §7.2)
        let mut parts = line.splitn(3, ' ');
        check_version(parts.next().unwrap_or(""))?;
        let code = parts.next().unwrap_or("");
        let status = match code.parse::<u16>() {
            Ok(n)
                if code.len() == 3
                    && all(code, |b| b.is_ascii_digit())
                    && (100..=699).contains(&n) =>
            {
                n
            }
            _ => return Err(ParseError::new("Bad status code")),
        };
        let reason = parts.next().unwrap_or("");
        if reason.contains('\r') {
            return Err(ParseError::new("Malformed Status-Line"));
        }
        return Ok(StartLine::Response(StatusCode(status), reason.to_owned()));
    }
    // Request-Line = Method SP Request-URI SP SIP-Version CRLF, single SPs (RFC 4475 §3.1.2.8-10)
    let bad = || ParseError::new("Malformed Request-Line");
    let (method, rest) = split_at_byte(line, b' ').ok_or_else(bad)?;
    let (target, version) = rest.rsplit_once(' ').ok_or_else(bad)?;
    if method.is_empty() || !all(method, is_token) {
        return Err(bad());
    }
    check_version(version)?;
    if target.is_empty() || find_any(target, b" \t").is_some() {
        return Err(bad());
    }
    let uri = uri(target).map_err(|e| ParseError::new(format!("Bad Request-URI: {e}")))?;
    // RFC 3261 §19.1.1 (table): headers are not allowed in a Request-URI (RFC 4475 §3.1.2.11).
    if uri.as_sip().is_some_and(|u| !u.headers.is_empty()) {
        return Err(ParseError::new("Request-URI must not contain headers"));
    }
    Ok(StartLine::Request(Method::parse(method), uri))
}

/// Where a header field that appears at most once (RFC 3261 §7.3.1, RFC 4475 §3.3.8-9) is.
#[derive(Default, Clone, Copy)]
struct Single {
    first: Option<usize>,
    repeated: bool,
}

impl Single {
    fn see(&mut self, i: usize) {
        if self.first.is_some() {
            self.repeated = true;
        } else {
            self.first = Some(i);
        }
    }

    /// The value of the only line, `None` if there is none, an error if there are several.
    fn value<'h>(self, headers: &'h Headers, label: &str) -> Result<Option<&'h str>, ParseError> {
        if self.repeated {
            return Err(ParseError::new(format!("Multiple {label} header fields")));
        }
        Ok(self
            .first
            .and_then(|i| headers.0.get(i))
            .map(|h| h.value.as_str()))
    }
}

/// Checks what RFC 3261 §8.1.1 and §8.2 need of every message so that accessors cannot fail
/// later: Via, From, To, Call-ID, CSeq present and well-formed, scalar fields in range.
///
/// Only borrowed views are built (nothing is allocated unless the message is refused). The
/// header list is walked once to find the fields; the checks then run in a fixed order, which
/// decides the error of a message with several faults.
fn validate(headers: &Headers, method: Option<&Method>) -> Result<(), ParseError> {
    let mut from = Single::default();
    let mut to = Single::default();
    let mut call_id = Single::default();
    let mut cseq = Single::default();
    let mut max_forwards = Single::default();
    let mut expires = Single::default();
    let mut date = Single::default();
    let mut content_type = Single::default();
    let (mut via_lines, mut contact_lines) = (false, false);
    for (i, h) in headers.0.iter().enumerate() {
        match h.name {
            HeaderName::Via => via_lines = true,
            HeaderName::From => from.see(i),
            HeaderName::To => to.see(i),
            HeaderName::CallId => call_id.see(i),
            HeaderName::CSeq => cseq.see(i),
            HeaderName::MaxForwards => max_forwards.see(i),
            HeaderName::Expires => expires.see(i),
            HeaderName::Date => date.see(i),
            HeaderName::ContentType => content_type.see(i),
            HeaderName::Contact => contact_lines = true,
            _ => {}
        }
    }

    let mut any_via = false;
    if via_lines {
        for v in headers.values(&HeaderName::Via) {
            any_via = true;
            via_ref(v)?;
        }
    }
    if !any_via {
        return Err(ParseError::new("Missing Via"));
    }
    for (line, label) in [(from, "From"), (to, "To")] {
        let v = line
            .value(headers, label)?
            .ok_or_else(|| ParseError::new(format!("Missing {label}")))?;
        name_addr_ref(v).map_err(|e| ParseError::new(format!("Malformed {label}: {e}")))?;
    }
    let call_id = call_id
        .value(headers, "Call-ID")?
        .ok_or_else(|| ParseError::new("Missing Call-ID"))?;
    if call_id.is_empty() || find_any(call_id, b" \t").is_some() {
        return Err(ParseError::new("Malformed Call-ID"));
    }
    let cseq = cseq
        .value(headers, "CSeq")?
        .ok_or_else(|| ParseError::new("Missing CSeq"))?;
    let (_, cseq_method) = cseq_ref(cseq)?;
    // `Method::parse` gives each name one variant and `as_str` gives the name back, so comparing
    // the names compares the methods.
    if method.is_some_and(|m| m.as_str() != cseq_method) {
        return Err(ParseError::new("CSeq method does not match request method"));
    }
    if let Some(v) = max_forwards.value(headers, "Max-Forwards")? {
        // RFC 3261 §20.22: 0-255 (RFC 4475 §3.1.2.4).
        if v.is_empty()
            || v.len() > 5
            || !class_only(v, &DIGIT)
            || v.parse::<u32>().map_or(true, |n| n > 255)
        {
            return Err(ParseError::new("Bad Max-Forwards"));
        }
    }
    if let Some(v) = expires.value(headers, "Expires")? {
        // RFC 3261 §20.19: delta-seconds up to 2^32-1 (RFC 4475 §3.1.2.4).
        if v.is_empty() || !class_only(v, &DIGIT) || v.parse::<u32>().is_err() {
            return Err(ParseError::new("Bad Expires"));
        }
    }
    if let Some(v) = date.value(headers, "Date")? {
        if !date_valid(v) {
            return Err(ParseError::new("Bad Date"));
        }
    }
    content_type.value(headers, "Content-Type")?;
    if contact_lines {
        for v in headers.values(&HeaderName::Contact) {
            contact_ref(v).map_err(|e| ParseError::new(format!("Malformed Contact: {e}")))?;
        }
    }
    Ok(())
}

/// Parses one message; see [`Message::parse`] for the contract.
pub(crate) fn message(bytes: &[u8], stream: bool) -> Result<Message, ParseError> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(ParseError::with_status(513, "Message Too Large"));
    }
    let (start, head_end, body_start) = split_head(bytes)
        .ok_or_else(|| ParseError::new("Missing empty line after header fields"))?;
    let head = bytes
        .get(start..head_end)
        .ok_or_else(|| ParseError::new("Malformed message"))?;
    let head =
        std::str::from_utf8(head).map_err(|_| ParseError::new("Header fields are not UTF-8"))?;
    let body = bytes.get(body_start..).unwrap_or(&[]);
    let (first, rest) = match memchr::memchr(b'\n', head.as_bytes()) {
        Some(i) => (head.get(..i).unwrap_or(""), head.get(i + 1..).unwrap_or("")),
        None => (head, ""),
    };
    let start = start_line(first.strip_suffix('\r').unwrap_or(first))?;
    let mut headers = Headers(header_section(rest)?);

    let mut content_length_at = None;
    for (i, h) in headers.0.iter().enumerate() {
        if matches!(h.name, HeaderName::ContentLength) {
            // RFC 4475 §3.3.9: two Content-Lengths leave the body length unknown.
            if content_length_at.is_some() {
                return Err(ParseError::new("Multiple Content-Length header fields"));
            }
            content_length_at = Some(i);
        }
    }
    // Kept out of `headers`: the serialiser writes it from the body.
    let content_length = content_length_at
        .filter(|&i| i < headers.0.len())
        .map(|i| headers.0.remove(i).value);

    // RFC 3261 §18.3: Content-Length is mandatory on streams; a body shorter than declared is
    // an error; on datagrams octets beyond it are discarded, and without it the body is the rest.
    let body = match content_length {
        Some(v) => {
            let n = match v.parse::<usize>() {
                Ok(n) if !v.is_empty() && all(&v, |b| b.is_ascii_digit()) => n,
                _ => return Err(ParseError::new("Bad Content-Length")),
            };
            if body.len() < n {
                return Err(ParseError::new("Body shorter than Content-Length"));
            }
            if stream && body.len() > n {
                return Err(ParseError::new("Body longer than Content-Length"));
            }
            body.get(..n).unwrap_or(body)
        }
        None if stream => return Err(ParseError::new("Missing Content-Length")),
        None => body,
    };
    let body = Bytes::copy_from_slice(body);

    match start {
        StartLine::Request(method, uri) => {
            validate(&headers, Some(&method))?;
            Ok(Message::Request(Request {
                method,
                uri,
                headers,
                body,
            }))
        }
        StartLine::Response(status, reason) => {
            validate(&headers, None)?;
            Ok(Message::Response(Response {
                status,
                reason,
                headers,
                body,
            }))
        }
    }
}

/// Best effort for a request that failed to parse: the raw Via, From, To, Call-ID and CSeq
/// lines, so that a 400 can still be sent (RFC 3261 §8.2.6.2: a response copies them).
pub(crate) fn recover_request_headers(bytes: &[u8]) -> Option<Headers> {
    let bytes = bytes.get(..bytes.len().min(MAX_MESSAGE_LEN))?;
    let start = bytes.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let bytes = bytes.get(start..)?;
    let end = split_head(bytes).map_or(bytes.len(), |(_, head_end, _)| head_end);
    let text = String::from_utf8_lossy(bytes.get(..end)?);
    let mut lines = lines(&text);
    let first = lines.next()?;
    let method = first.split(' ').next()?;
    if method.is_empty()
        || !all(method, is_token)
        || first
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        return None;
    }
    let mut raw = header_lines_lenient(lines);
    raw.retain(|h| {
        matches!(
            h.name,
            HeaderName::Via
                | HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
        )
    });
    Some(Headers(raw))
}

// ---------------------------------------------------------------------------------------------
// Serialiser

/// Whether `b` holds a CR or an LF. A word at a time: values are short and almost never hold
/// one, so most words are cleared by one test for "a byte below 0x0e" (CR is 0x0d, LF 0x0a).
fn has_cr_or_lf(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let is_line_end = |c: &u8| *c == b'\r' || *c == b'\n';
    let mut words = b.chunks_exact(8);
    for chunk in &mut words {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
            return chunk.iter().any(is_line_end);
        };
        let w = u64::from_le_bytes(bytes);
        // Non-zero iff some byte is below 0x0e (exact for a bound up to 0x80).
        if w.wrapping_sub(ONES * 0x0e) & !w & HIGH != 0 && chunk.iter().any(is_line_end) {
            return true;
        }
    }
    words.remainder().iter().any(is_line_end)
}

/// Replaces CR and LF by SP in what was written from `start` on.
fn blank_line_ends(out: &mut [u8], start: usize) {
    if let Some(written) = out.get_mut(start..) {
        if has_cr_or_lf(written) {
            for b in written {
                if *b == b'\r' || *b == b'\n' {
                    *b = b' ';
                }
            }
        }
    }
}

/// Writes `s` with CR and LF replaced by SP, so a hand-edited value cannot inject header lines.
fn put_text(out: &mut Vec<u8>, s: &str) {
    let start = out.len();
    out.extend_from_slice(s.as_bytes());
    blank_line_ends(out, start);
}

/// `fmt::Write` into the output bytes (for the URI and number writers shared with `Display`).
struct ByteSink<'a>(&'a mut Vec<u8>);

impl fmt::Write for ByteSink<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn estimate(headers: &Headers, body: &Bytes) -> usize {
    128 + body.len()
        + headers
            .0
            .iter()
            .map(|h| h.name.as_str().len() + h.value.len() + 4)
            .sum::<usize>()
}

/// Header lines in order with canonical names, Content-Length written once from the body, the
/// empty line, then the body.
fn put_headers_and_body(out: &mut Vec<u8>, headers: &Headers, body: &Bytes) {
    for h in headers.iter() {
        match &h.name {
            HeaderName::ContentLength => continue,
            // Names built by hand may hold anything; the others are constants.
            HeaderName::Other(name) => put_text(out, name),
            name => out.extend_from_slice(name.as_str().as_bytes()),
        }
        out.extend_from_slice(b": ");
        put_text(out, &h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    put_decimal(out, body.len());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// Writes `n` in decimal (without the formatting machinery: this runs for every message sent).
fn put_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        // A digit: n % 10 < 10.
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

pub(crate) fn serialize_request(r: &Request) -> Vec<u8> {
    let mut out = Vec::with_capacity(estimate(&r.headers, &r.body));
    put_text(&mut out, r.method.as_str());
    out.push(b' ');
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = crate::uri::write_uri(&mut ByteSink(&mut out), &r.uri);
    blank_line_ends(&mut out, start);
    out.extend_from_slice(b" SIP/2.0\r\n");
    put_headers_and_body(&mut out, &r.headers, &r.body);
    out
}

pub(crate) fn serialize_response(r: &Response) -> Vec<u8> {
    let mut out = Vec::with_capacity(estimate(&r.headers, &r.body));
    out.extend_from_slice(b"SIP/2.0 ");
    put_decimal(&mut out, usize::from(r.status.0));
    out.push(b' ');
    put_text(&mut out, &r.reason);
    out.extend_from_slice(b"\r\n");
    put_headers_and_body(&mut out, &r.headers, &r.body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(head: &str, body: &str) -> Vec<u8> {
        format!("{head}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }

    const HEAD: &str = "OPTIONS sip:bob@example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n\
        Max-Forwards: 70\r\n\
        To: Bob <sip:bob@example.com>\r\n\
        From: Alice <sip:alice@example.com>;tag=1928301774\r\n\
        Call-ID: a84b4c76e66710@pc33.example.com\r\n\
        CSeq: 63104 OPTIONS\r\n";

    fn parse_err(bytes: &[u8], stream: bool) -> ParseError {
        message(bytes, stream).expect_err("must not parse")
    }

    #[test]
    fn via_with_lws_everywhere() {
        // RFC 4475 §3.1.1.1 (wsinv) after unfolding.
        let v =
            via("SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8").unwrap();
        assert_eq!(v.transport, "TCP");
        assert_eq!(v.host, Host::Domain("spindle.example.com".into()));
        assert_eq!(v.branch(), Some("z9hG4bK9ikj8"));
        assert!(v.has_rfc3261_branch());
    }

    #[test]
    fn via_ipv6_port_and_received_forms() {
        // RFC 5118 §4.5: received with and without brackets.
        let v = via("SIP/2.0/UDP [2001:db8::9:1]:5070;received=2001:db8::9:255;branch=z9hG4bKas3")
            .unwrap();
        assert_eq!(v.host, Host::Ipv6("2001:db8::9:1".parse().unwrap()));
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.params.get("received"), Some(Some("2001:db8::9:255")));
        let v = via("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255]").unwrap();
        assert_eq!(v.params.get("received"), Some(Some("[2001:db8::9:255]")));
        let v = via("sip/2.0/udp Host.Example.COM : 5060 ;rport;branch=z9hG4bKx").unwrap();
        assert_eq!((v.transport.as_str(), v.port), ("UDP", Some(5060)));
        assert_eq!(v.host, Host::Domain("host.example.com".into()));
        assert_eq!(v.params.get("rport"), Some(None));
    }

    #[test]
    fn via_rejects_malformed() {
        for bad in [
            "",
            "SIP/2.0/UDP",
            "SIP/2.0/UDPhost.example.com",
            "SIP/3.0/UDP host",
            "SIP/2.0 host",
            "SIP/2.0/UDP host;;",
            "SIP/2.0/UDP host;branch=",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP host:",
            "SIP/2.0/UDP [2001:db8:::1]",
            "SIP/2.0/UDP host garbage",
            "SIP/2.0/UDP host;a=\"open",
        ] {
            assert!(via(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn name_addr_forms() {
        let n = name_addr(r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8"#)
            .unwrap();
        assert_eq!(n.display.as_deref(), Some(r#"J Rosenberg \\\""#));
        assert_eq!(n.tag(), Some("98asjd8"));
        let n = name_addr("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display.as_deref(), Some("caller"));
        let n = name_addr("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!((n.display.as_deref(), n.tag()), (None, Some("1918181833n")));
        let n = name_addr("<sip:a@b.example.com;lr>;expires=60;q=0.5").unwrap();
        assert!(n.uri.as_sip().unwrap().params.contains("lr"));
        assert_eq!(n.params.get("q"), Some(Some("0.5")));
        // Parameters of an addr-spec belong to the header, not the URI (RFC 3261 §20.10).
        let n = name_addr("sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert!(n.uri.as_sip().unwrap().params.0.is_empty());
        assert!(n.params.contains("unknownparam"));
        let n = name_addr("Jörg Müller <sip:j@example.com>").unwrap();
        assert_eq!(n.display.as_deref(), Some("Jörg Müller"));
        let n = name_addr(r#""Bell, Alexander" <sip:a.g.bell@example.com>;p="x;y,z""#).unwrap();
        assert_eq!(n.display.as_deref(), Some("Bell, Alexander"));
        assert_eq!(n.params.get("p"), Some(Some(r#""x;y,z""#)));
    }

    #[test]
    fn name_addr_rejects_malformed() {
        for bad in [
            "",
            "Bell, Alexander <sip:a.g.bell@example.com>",
            "\"Mr. J. User <sip:j.user@example.com>",
            "< sip:t.watson@example.org >",
            "<sip:a@example.com",
            "sip:user@example.com?Route=%3Csip:x%3E",
            "<sip:a@example.com>;;",
            "<sip:a@example.com> trailing",
            "\"x\" sip:a@example.com",
            "<>",
        ] {
            assert!(name_addr(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn name_addr_display_round_trips() {
        for s in [
            r#""A \"quoted\" name" <sip:a@example.com>;tag=1"#,
            "<tel:+1-201-555-0123;phone-context=example.com>",
            "Bob <sips:bob@[2001:db8::1]:5061;transport=tcp?subject=hi>;tag=x",
            "isbn:2983792873",
        ] {
            let n = name_addr(s).unwrap();
            assert_eq!(name_addr(&n.to_string()).unwrap(), n, "{s}");
        }
    }

    #[test]
    fn cseq_forms() {
        let c = cseq("0009 INVITE").unwrap();
        assert_eq!((c.seq, c.method), (9, Method::Invite));
        assert_eq!(cseq(" 4294967295\tACK ").unwrap().seq, u32::MAX);
        for bad in [
            "",
            "INVITE",
            "1",
            "1INVITE",
            "4294967296 INVITE",
            "-1 INVITE",
            "1 INVITE x",
            "1 IN@VITE",
        ] {
            assert!(cseq(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn header_names_compact_and_case() {
        assert_eq!(header_name("v"), HeaderName::Via);
        assert_eq!(header_name("MaX-fOrWaRdS"), HeaderName::MaxForwards);
        assert_eq!(header_name("L"), HeaderName::ContentLength);
        assert_eq!(header_name("u"), HeaderName::Other("Allow-Events".into()));
        assert_eq!(header_name("X-Custom").as_str(), "X-Custom");
        assert_eq!(header_name("x-custom"), header_name("X-CUSTOM"));
        assert_eq!(
            header_name("a-very-long-header-name-beyond-the-buffer").as_str(),
            "a-very-long-header-name-beyond-the-buffer"
        );
    }

    #[test]
    fn split_list_respects_quotes_and_brackets() {
        let v: Vec<_> = split_list(r#""a,\"b" <sip:x@y;p=1,2>;q=1 , <sip:z@w>,,  "#).collect();
        assert_eq!(v, [r#""a,\"b" <sip:x@y;p=1,2>;q=1"#, "<sip:z@w>"]);
        assert_eq!(split_list("").count(), 0);
        assert_eq!(split_list("\"unterminated, still one").count(), 1);
    }

    #[test]
    fn unescape_decodes_and_tolerates_bad_escapes() {
        assert_eq!(unescape("%75se%72"), "user");
        assert_eq!(unescape("null-%00-null"), "null-\0-null");
        assert_eq!(unescape("100%"), "100%");
        assert_eq!(unescape("%zz%4"), "%zz%4");
    }

    #[test]
    fn uris() {
        let Uri::Sip(u) =
            uri("sips:alice:secret@Atlanta.COM:5061;transport=TCP;lr?subject=hi&x=").unwrap()
        else {
            panic!("not sip")
        };
        assert!(u.secure);
        assert_eq!(
            (u.user.as_deref(), u.password.as_deref()),
            (Some("alice"), Some("secret"))
        );
        assert_eq!(u.host, Host::Domain("atlanta.com".into()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport_param().as_deref(), Some("tcp"));
        assert_eq!(
            u.headers,
            [("subject".into(), "hi".into()), ("x".into(), String::new())]
        );
        let Uri::Sip(u) = uri("sip:[2001:db8::10:5070]").unwrap() else {
            panic!()
        };
        assert_eq!(
            (u.host, u.port),
            (Host::Ipv6("2001:db8::10:5070".parse().unwrap()), None)
        );
        let Uri::Tel(t) = uri("tel:+1-201-555-0123;phone-context=example.com").unwrap() else {
            panic!()
        };
        assert_eq!(t.number, "+1-201-555-0123");
        assert_eq!(
            uri("urn:service:sos").unwrap(),
            Uri::Other {
                scheme: "urn".into(),
                rest: "service:sos".into()
            }
        );
        for bad in [
            "",
            "sip:",
            "sip:@example.com",
            "sip:2001:db8::10",
            "sip:user@[2001:db8:::192.0.2.1]",
            "sip:a b@example.com",
            "sip:a@example.com:",
            "sip:a@example.com:123456",
            "sip:%zz@example.com",
            "sip:a@-bad-.com",
            "sip:a@1.2.3.400",
            "sip:a@example.com;=x",
            "sip:a@example.com?noequals",
            "<sip:a@example.com>",
            "1sip:a@example.com",
            "tel:",
            "tel:12 34",
        ] {
            assert!(uri(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn minimal_request_parses_and_round_trips() {
        let bytes = req(HEAD, "");
        let m = message(&bytes, true).unwrap();
        let Message::Request(r) = &m else {
            panic!("not a request")
        };
        assert_eq!(r.method, Method::Options);
        assert_eq!(r.cseq().unwrap().seq, 63104);
        assert_eq!(r.max_forwards(), Some(70));
        // Content-Length lives in the body length, not in the header list.
        assert!(r.headers.get(&HeaderName::ContentLength).is_none());
        assert_eq!(message(&m.to_bytes(), true).unwrap(), m);
        assert_eq!(m.to_bytes(), bytes);
    }

    #[test]
    fn lf_only_line_ends_and_leading_crlf() {
        let bytes = format!("\r\n\r\n{}", String::from_utf8(req(HEAD, "hello")).unwrap())
            .replace("\r\n", "\n");
        let Message::Request(r) = message(bytes.as_bytes(), true).unwrap() else {
            panic!()
        };
        assert_eq!(&r.body[..], b"hello");
    }

    #[test]
    fn content_length_rules() {
        // RFC 3261 §18.3: mandatory on streams, optional on datagrams.
        let no_cl = format!("{HEAD}\r\nbody");
        assert_eq!(
            parse_err(no_cl.as_bytes(), true).reason,
            "Missing Content-Length"
        );
        let Message::Request(r) = message(no_cl.as_bytes(), false).unwrap() else {
            panic!()
        };
        assert_eq!(&r.body[..], b"body");
        let short = format!("{HEAD}Content-Length: 10\r\n\r\nbody");
        assert_eq!(
            parse_err(short.as_bytes(), false).reason,
            "Body shorter than Content-Length"
        );
        let long = format!("{HEAD}l: 2\r\n\r\nbody");
        let Message::Request(r) = message(long.as_bytes(), false).unwrap() else {
            panic!()
        };
        assert_eq!(&r.body[..], b"bo");
        assert_eq!(
            parse_err(long.as_bytes(), true).reason,
            "Body longer than Content-Length"
        );
        for v in ["-1", "", "1 2", "0x10", "99999999999999999999999"] {
            let bad = format!("{HEAD}Content-Length: {v}\r\n\r\n");
            assert_eq!(
                parse_err(bad.as_bytes(), false).reason,
                "Bad Content-Length",
                "{v:?}"
            );
        }
    }

    #[test]
    fn mandatory_headers_and_scalars() {
        for (drop, reason) in [
            ("Via:", "Missing Via"),
            ("To:", "Missing To"),
            ("From:", "Missing From"),
            ("Call-ID:", "Missing Call-ID"),
            ("CSeq:", "Missing CSeq"),
        ] {
            let head: String = HEAD
                .split_inclusive("\r\n")
                .filter(|l| !l.starts_with(drop))
                .collect();
            assert_eq!(parse_err(&req(&head, ""), true).reason, reason);
        }
        for (extra, reason) in [
            (
                "Max-Forwards: 256\r\n",
                "Multiple Max-Forwards header fields",
            ),
            ("i: other\r\n", "Multiple Call-ID header fields"),
            ("Expires: 4294967296\r\n", "Bad Expires"),
            ("Date: Fri, 01 Jan 2010 16:00:00 EST\r\n", "Bad Date"),
            (
                "Contact: <sip:a@example.com\r\n",
                "Malformed Contact: Unterminated <URI>",
            ),
            ("Bad Header: x\r\n", "Malformed header line"),
            ("NoColon\r\n", "Malformed header line"),
        ] {
            assert_eq!(
                parse_err(&req(&format!("{HEAD}{extra}"), ""), true).reason,
                reason
            );
        }
        let mf = HEAD.replace("Max-Forwards: 70", "Max-Forwards: 256");
        assert_eq!(parse_err(&req(&mf, ""), true).reason, "Bad Max-Forwards");
        let date = format!(
            "{HEAD}Date: Sat, 13 Nov 2010 23:29:00 GMT\r\nExpires: 4294967295\r\nContact: *\r\n"
        );
        assert!(message(&req(&date, ""), true).is_ok());
    }

    #[test]
    fn start_lines() {
        let with = |line: &str| {
            let rest = HEAD.split_once("\r\n").unwrap().1;
            message(&req(&format!("{line}\r\n{rest}"), ""), true)
        };
        assert_eq!(
            with("OPTIONS sip:bob@example.com SIP/2.1")
                .unwrap_err()
                .status,
            505
        );
        assert_eq!(
            with("OPTIONS sip:bob@example.com sip/2.0").map(|_| ()),
            Ok(())
        );
        for bad in [
            "OPTIONS sip:bob@example.com",
            "OPTIONS  sip:bob@example.com SIP/2.0",
            "OPTIONS sip:bob@example.com SIP/2.0 ",
            "OPTIONS sip:bob@example.com HTTP/1.1",
            "OPT<IONS sip:bob@example.com SIP/2.0",
            "OPTIONS sip:bob@example.com?x=y SIP/2.0",
            "",
        ] {
            assert_eq!(with(bad).unwrap_err().status, 400, "{bad:?}");
        }
        let status = |line: &str| {
            message(
                &req(
                    &format!("{line}\r\n{}", HEAD.split_once("\r\n").unwrap().1),
                    "",
                ),
                true,
            )
        };
        let Ok(Message::Response(r)) = status("SIP/2.0 180 Ringing fast") else {
            panic!()
        };
        assert_eq!((r.status.0, r.reason.as_str()), (180, "Ringing fast"));
        let Ok(Message::Response(r)) = status("SIP/2.0 100") else {
            panic!()
        };
        assert_eq!(r.reason, "");
        for bad in [
            "SIP/2.0 99 Low",
            "SIP/2.0 700 High",
            "SIP/2.0 2000 Long",
            "SIP/2.0 +20 Sign",
            "SIP/2.0",
        ] {
            assert!(status(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limits() {
        let many: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            parse_err(&req(&format!("{HEAD}{many}"), ""), true).reason,
            "Too many header fields"
        );
        let big = vec![b'a'; MAX_MESSAGE_LEN + 1];
        assert_eq!(parse_err(&big, false).status, 513);
        let not_utf8 = [HEAD.as_bytes(), b"X: \xff\r\nContent-Length: 0\r\n\r\n"].concat();
        assert_eq!(
            parse_err(&not_utf8, true).reason,
            "Header fields are not UTF-8"
        );
        assert!(message(b"", false).is_err());
        assert!(message(b"\r\n\r\n", false).is_err());
        let bare_cr = req(&format!("{HEAD}X: a\rb\r\n"), "");
        assert_eq!(parse_err(&bare_cr, true).reason, "Malformed header line");
    }

    #[test]
    fn serialiser_writes_one_matching_content_length_and_no_injected_lines() {
        let Message::Request(mut r) = message(&req(HEAD, ""), true).unwrap() else {
            panic!()
        };
        r.headers.push(HeaderName::ContentLength, "999");
        r.headers
            .push(HeaderName::Subject, "evil\r\nVia: SIP/2.0/UDP attacker");
        r.body = Bytes::from_static(b"abc");
        let out = String::from_utf8(r.to_bytes()).unwrap();
        assert_eq!(out.matches("Content-Length").count(), 1);
        assert!(out.ends_with("Content-Length: 3\r\n\r\nabc"));
        assert_eq!(out.matches("\r\nVia:").count(), 1);
    }

    #[test]
    fn recovery_of_a_broken_request() {
        let broken = format!("{HEAD}Content-Length: 5\r\n\r\n");
        assert!(message(broken.as_bytes(), false).is_err());
        let h = recover_request_headers(broken.as_bytes()).unwrap();
        assert_eq!(h.0.len(), 5);
        assert_eq!(
            h.get(&HeaderName::CallId),
            Some("a84b4c76e66710@pc33.example.com")
        );
        assert!(recover_request_headers(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n").is_none());
        assert!(recover_request_headers(b"").is_none());
        assert!(recover_request_headers(b"\xff\xfe garbage").is_none());
        let h = recover_request_headers(b"INVITE x\r\n v: folded\r\nv: SIP/2.0/UDP h\r\n cont\r\n")
            .unwrap();
        assert_eq!(h.get(&HeaderName::Via), Some("SIP/2.0/UDP h cont"));
    }

    #[test]
    fn character_tables_match_the_grammar() {
        // RFC 3261 §25.1: unreserved = alphanum / mark.
        let unreserved: Vec<u8> = (0..=255u8).filter(|&b| is_unreserved(b)).collect();
        assert_eq!(unreserved.len(), 62 + 9);
        for b in 0..=255u8 {
            assert_eq!(
                is_param_char(b),
                is_unreserved(b) || b"%[]/:&+$".contains(&b)
            );
            assert_eq!(
                is_header_char(b),
                is_unreserved(b) || b"%[]/?:+$".contains(&b)
            );
            assert_eq!(
                is_user_char(b),
                is_unreserved(b) || b"%&=+$,;?/".contains(&b)
            );
            assert!(!is_token(b) || b.is_ascii_graphic());
        }
    }

    #[test]
    fn date_format() {
        assert!(date_valid("Sat, 15 Oct 2005 04:44:56 GMT"));
        assert!(!date_valid("Sat, 15 Oct 2005 04:44:56 EST"));
        assert!(!date_valid("Sat, 15 Okt 2005 04:44:56 GMT"));
        assert!(!date_valid("Sat, 15 Oct 2005 04:44:56 GMT "));
        assert!(!date_valid("Säte 15 Oct 2005 04:44:56 GMT"));
    }

    /// Every error `validate` can give, and which one wins when a message has several faults:
    /// the verdicts of the validator that built owned values (this table passes against it
    /// unchanged).
    #[test]
    fn validator_verdicts() {
        let line = |name: &str| {
            HEAD.split_inclusive("\r\n")
                .find(|l| l.starts_with(name))
                .unwrap()
                .to_owned()
        };
        // (lines to drop, lines to add, reason; "" = accepted)
        let cases: &[(&[&str], &str, &str)] = &[
            (&[], "", ""),
            (&["Via:"], "Via: \r\n", "Missing Via"),
            (&["Via:"], "Via: SIP/2.0/UDP\r\n", "Malformed Via"),
            (
                &[],
                "Via: SIP/2.0/UDP a.example.com, SIP/2.0/UDP\r\n",
                "Malformed Via",
            ),
            (
                &[],
                "Via: SIP/2.0/UDP a.example.com,, SIP/2.0/TCP b\r\n",
                "",
            ),
            (
                &["Via:"],
                "v: SIP / 2.0 / UDP  a.example.com : 5060 ; rport\r\n",
                "",
            ),
            (&["Via:"], "Via: SIP/2.0/   UDP a.example.com\r\n", ""),
            (
                &["Via:"],
                "Via: SIP/2.0/UDP a.example.com;branch=\"x\r\n",
                "Malformed Via",
            ),
            (
                &["Via:"],
                "Via: SIP/2.0/UDP a.example.com:70000\r\n",
                "Malformed Via",
            ),
            (&["Via:"], "Via: SIP/2.0/UDP 1.2.3.256\r\n", "Malformed Via"),
            (
                &["Via:"],
                "Via: SIP/2.0/UDP [::1]:5060;received=::2\r\n",
                "",
            ),
            (
                &[],
                "From: <sip:b@example.com>\r\n",
                "Multiple From header fields",
            ),
            (&["From:"], "", "Missing From"),
            (
                &["From:"],
                "From: <sip:a@example.com\r\n",
                "Malformed From: Unterminated <URI>",
            ),
            (
                &["From:"],
                "From: a@b <sip:a@example.com>\r\n",
                "Malformed From: Malformed display name",
            ),
            (
                &["From:"],
                "From: \"a <sip:a@example.com>\r\n",
                "Malformed From: Unterminated quoted string",
            ),
            (
                &["From:"],
                "From: \"a\" sip:a@example.com\r\n",
                "Malformed From: Malformed name-addr",
            ),
            (
                &["From:"],
                "From: sip:a@example.com?x=y\r\n",
                "Malformed From: URI with ',' or '?' must be enclosed in <>",
            ),
            (
                &["From:"],
                "From: <sip:a@example.com>;;\r\n",
                "Malformed From: Malformed parameter",
            ),
            (
                &["From:"],
                "From: <sip:a@example.com>;p=\"\\\r\n",
                "Malformed From: Bad escape in quoted string",
            ),
            (
                &["From:"],
                "From: <sip:a b@example.com>\r\n",
                "Malformed From: Malformed URI",
            ),
            (
                &["From:"],
                "From: <sip:a@-x.example.com>\r\n",
                "Malformed From: Malformed SIP URI host",
            ),
            (
                &["From:"],
                "From: <sip:%zz@example.com>\r\n",
                "Malformed From: Malformed SIP URI user",
            ),
            (
                &["From:"],
                "From: <sip:a:%@example.com>\r\n",
                "Malformed From: Malformed SIP URI password",
            ),
            (
                &["From:"],
                "From: <sip:a@example.com:99999>\r\n",
                "Malformed From: Malformed SIP URI port",
            ),
            (
                &["From:"],
                "From: <sip:a@example.com;=x>\r\n",
                "Malformed From: Malformed SIP URI parameter",
            ),
            (
                &["From:"],
                "From: <sip:a@example.com?x>\r\n",
                "Malformed From: Malformed SIP URI header",
            ),
            (
                &["From:"],
                "From: <sip:a@example.com:5060x>\r\n",
                "Malformed From: Malformed SIP URI host",
            ),
            (
                &["From:"],
                "From: <tel:>\r\n",
                "Malformed From: Malformed URI",
            ),
            (
                &["From:"],
                "From: <tel:12a;;x>\r\n",
                "Malformed From: Malformed tel URI",
            ),
            (&["From:"], "From: <tel:+1-555;%zz=1>\r\n", ""),
            (
                &["From:"],
                "From: <1x:abc>\r\n",
                "Malformed From: Malformed URI",
            ),
            (
                &["From:"],
                "From: <x-y:a\"b>\r\n",
                "Malformed From: Malformed URI",
            ),
            (
                &["From:"],
                "From: <sip:a@1.2.3.4.>\r\n",
                "Malformed From: Malformed SIP URI host",
            ),
            (&["From:"], "From: <SIP:A@Example.COM.>;TAG=x\r\n", ""),
            (
                &[],
                "To: <sip:b@example.com>\r\n",
                "Multiple To header fields",
            ),
            (&["To:"], "", "Missing To"),
            (&["To:"], "To: <>\r\n", "Malformed To: Malformed URI"),
            (&[], "i: x\r\n", "Multiple Call-ID header fields"),
            (&["Call-ID:"], "", "Missing Call-ID"),
            (&["Call-ID:"], "Call-ID: a b\r\n", "Malformed Call-ID"),
            (&["Call-ID:"], "Call-ID:\r\n", "Malformed Call-ID"),
            (&[], "CSeq: 1 OPTIONS\r\n", "Multiple CSeq header fields"),
            (&["CSeq:"], "", "Missing CSeq"),
            (&["CSeq:"], "CSeq: x OPTIONS\r\n", "Malformed CSeq"),
            (&["CSeq:"], "CSeq: 1 OPTIONS x\r\n", "Malformed CSeq"),
            (
                &["CSeq:"],
                "CSeq: 4294967296 OPTIONS\r\n",
                "CSeq number too large",
            ),
            (
                &["CSeq:"],
                "CSeq: 1 INVITE\r\n",
                "CSeq method does not match request method",
            ),
            (
                &["CSeq:"],
                "CSeq: 1 options\r\n",
                "CSeq method does not match request method",
            ),
            (
                &[],
                "Max-Forwards: 1\r\n",
                "Multiple Max-Forwards header fields",
            ),
            (
                &["Max-Forwards:"],
                "Max-Forwards: 256\r\n",
                "Bad Max-Forwards",
            ),
            (&["Max-Forwards:"], "Max-Forwards:\r\n", "Bad Max-Forwards"),
            (
                &["Max-Forwards:"],
                "Max-Forwards: 000070\r\n",
                "Bad Max-Forwards",
            ),
            (
                &["Max-Forwards:"],
                "Max-Forwards: +70\r\n",
                "Bad Max-Forwards",
            ),
            (&["Max-Forwards:"], "Max-Forwards: 00070\r\n", ""),
            (
                &[],
                "Expires: 1\r\nExpires: 2\r\n",
                "Multiple Expires header fields",
            ),
            (&[], "Expires: x\r\n", "Bad Expires"),
            (&[], "Expires: 4294967296\r\n", "Bad Expires"),
            (&[], "Date: x\r\nDate: y\r\n", "Multiple Date header fields"),
            (&[], "Date: Sat, 13 Nov 2010 23:29:00 EST\r\n", "Bad Date"),
            (
                &[],
                "c: a/b\r\nContent-Type: a/b\r\n",
                "Multiple Content-Type header fields",
            ),
            (
                &[],
                "Contact: <sip:a@example.com\r\n",
                "Malformed Contact: Unterminated <URI>",
            ),
            (
                &[],
                "Contact: <sip:a@example.com>, x y\r\n",
                "Malformed Contact: Malformed URI",
            ),
            (
                &[],
                "Contact: *\r\nm: <sip:a@example.com>;expires=0, \"A, B\" <sip:b@example.com>\r\n",
                "",
            ),
            (&[], "Contact: \x0c*\r\n", ""),
            // Several faults: the first check in the order above decides.
            (&["Via:", "From:"], "Via: x\r\n", "Malformed Via"),
            (&[], "From: x\r\nTo: <\r\n", "Multiple From header fields"),
            (
                &["To:"],
                "To: <\r\ni: x\r\n",
                "Malformed To: Unterminated <URI>",
            ),
            (&["Call-ID:", "CSeq:"], "", "Missing Call-ID"),
            (
                &["CSeq:"],
                "CSeq: 1 INVITE\r\nExpires: x\r\n",
                "CSeq method does not match request method",
            ),
            (
                &[],
                "Contact: <\r\nMax-Forwards: 1\r\n",
                "Multiple Max-Forwards header fields",
            ),
            (
                &[],
                "Contact: <\r\nc: a/b\r\nc: a/b\r\n",
                "Multiple Content-Type header fields",
            ),
            (&[], "Date: x\r\nExpires: x\r\n", "Bad Expires"),
        ];
        for (drop, add, reason) in cases {
            let mut head: String = HEAD
                .split_inclusive("\r\n")
                .filter(|l| !drop.iter().any(|d| l.starts_with(d)))
                .collect();
            head.push_str(add);
            let result = message(&req(&head, ""), true);
            match (reason.is_empty(), result) {
                (true, Ok(_)) => {}
                (true, Err(e)) => panic!("{add:?} refused: {e}"),
                (false, Ok(_)) => panic!("{add:?} accepted, expected {reason:?}"),
                (false, Err(e)) => assert_eq!(e.reason, *reason, "{drop:?} {add:?}"),
            }
        }
        // Responses have no request method to match.
        let status = HEAD.replace("OPTIONS sip:bob@example.com SIP/2.0", "SIP/2.0 200 OK");
        let status = status.replace(&line("CSeq:"), "CSeq: 1 INVITE\r\n");
        assert!(message(&req(&status, ""), true).is_ok());
    }

    /// `ipv4` is `Ipv4Addr::from_str` without its generic machinery: same answer everywhere.
    #[test]
    fn ipv4_reads_as_std_does() {
        let check = |s: &[u8]| {
            let text = std::str::from_utf8(s).unwrap();
            assert_eq!(ipv4(s), text.parse::<Ipv4Addr>().ok(), "{text:?}");
        };
        for s in [
            "0.0.0.0",
            "255.255.255.255",
            "1.2.3.4",
            "01.2.3.4",
            "1.2.3.04",
            "1.2.3.400",
            "1.2.3.256",
            "1.2.3",
            "1.2.3.4.",
            ".1.2.3.4",
            "1..2.3",
            "1234.1.1.1",
            "1.2.3.4.5",
            "0000.0.0.0",
            "a.b.c.d",
            "",
        ] {
            check(s.as_bytes());
        }
        // Every string of up to 8 bytes over a small alphabet.
        let alphabet = b"0129.";
        let mut s = Vec::new();
        fn all(s: &mut Vec<u8>, alphabet: &[u8], left: usize, check: &dyn Fn(&[u8])) {
            check(s);
            if left == 0 {
                return;
            }
            for &c in alphabet {
                s.push(c);
                all(s, alphabet, left - 1, check);
                s.pop();
            }
        }
        all(&mut s, alphabet, 8, &check);
    }

    /// `host_ref`'s one-pass scan is the readable hostname rule (and `ipv4`) over every short
    /// name, and stops where a host ends.
    #[test]
    fn host_scan_is_the_hostname_rule() {
        fn check(s: &[u8]) {
            let text = std::str::from_utf8(s).unwrap();
            let expected = match text.parse::<Ipv4Addr>() {
                Ok(a) => Some(HostRef::Ipv4(a)),
                Err(_) => hostname_valid(s).then_some(HostRef::Domain(text)),
            };
            for tail in ["", ":5060", ";x", " ", "]", "\u{e9}"] {
                let with = format!("{text}{tail}");
                let mut c = Cursor::new(&with);
                let got = host_ref(&mut c).ok();
                assert_eq!(got, expected, "{with:?}");
                if got.is_some() {
                    assert_eq!(c.pos, text.len(), "{with:?}");
                }
            }
        }
        fn all(s: &mut Vec<u8>, alphabet: &[u8], lengths: std::ops::RangeInclusive<usize>) {
            if lengths.contains(&s.len()) {
                check(s);
            }
            if s.len() == *lengths.end() {
                return;
            }
            for &c in alphabet {
                s.push(c);
                all(s, alphabet, lengths.clone());
                s.pop();
            }
        }
        all(&mut Vec::new(), b"aZ09-.", 0..=6);
        // Long enough for dotted quads.
        all(&mut Vec::new(), b"90.a", 7..=9);
        for s in [
            "1.2.3.4",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3.4.",
            "1.2.3.4.5",
            "1.2.3.4a",
            "1.2.3.4-",
            "1.2.3.4.com",
            "1.2.3.a4",
            "10.0.0.1x.example.com",
            "0.0.0.0.",
        ] {
            check(s.as_bytes());
        }
    }
    /// `header_name` as a lower-cased copy matched against every name: the readable statement
    /// the fast one is tested against.
    fn header_name_reference(s: &str) -> HeaderName {
        use HeaderName as H;
        let mut buf = [0u8; 24];
        let Some(dst) = buf.get_mut(..s.len()) else {
            return H::Other(s.to_owned());
        };
        for (d, b) in dst.iter_mut().zip(s.bytes()) {
            *d = b.to_ascii_lowercase();
        }
        let other = |full: &str| H::Other(full.to_owned());
        match &*dst {
            b"via" | b"v" => H::Via,
            b"from" | b"f" => H::From,
            b"to" | b"t" => H::To,
            b"call-id" | b"i" => H::CallId,
            b"cseq" => H::CSeq,
            b"contact" | b"m" => H::Contact,
            b"max-forwards" => H::MaxForwards,
            b"expires" => H::Expires,
            b"min-expires" => H::MinExpires,
            b"content-length" | b"l" => H::ContentLength,
            b"content-type" | b"c" => H::ContentType,
            b"content-encoding" | b"e" => H::ContentEncoding,
            b"authorization" => H::Authorization,
            b"proxy-authorization" => H::ProxyAuthorization,
            b"www-authenticate" => H::WwwAuthenticate,
            b"proxy-authenticate" => H::ProxyAuthenticate,
            b"authentication-info" => H::AuthenticationInfo,
            b"route" => H::Route,
            b"record-route" => H::RecordRoute,
            b"path" => H::Path,
            b"allow" => H::Allow,
            b"supported" | b"k" => H::Supported,
            b"require" => H::Require,
            b"proxy-require" => H::ProxyRequire,
            b"unsupported" => H::Unsupported,
            b"user-agent" => H::UserAgent,
            b"server" => H::Server,
            b"date" => H::Date,
            b"event" | b"o" => H::Event,
            b"subject" | b"s" => H::Subject,
            b"refer-to" | b"r" => H::ReferTo,
            b"referred-by" | b"b" => H::ReferredBy,
            b"session-expires" | b"x" => H::SessionExpires,
            b"min-se" => H::MinSe,
            b"reason" => H::Reason,
            b"retry-after" => H::RetryAfter,
            b"warning" => H::Warning,
            b"timestamp" => H::Timestamp,
            // Compact forms of headers without a variant (RFC 3841, RFC 4474, RFC 6665).
            b"a" => other("Accept-Contact"),
            b"j" => other("Reject-Contact"),
            b"d" => other("Request-Disposition"),
            b"u" => other("Allow-Events"),
            b"y" => other("Identity"),
            b"n" => other("Identity-Info"),
            _ => H::Other(s.to_owned()),
        }
    }

    #[test]
    fn header_names_as_the_reference_reads_them() {
        let mut names: Vec<String> = [
            "via",
            "from",
            "to",
            "call-id",
            "cseq",
            "contact",
            "max-forwards",
            "expires",
            "min-expires",
            "content-length",
            "content-type",
            "content-encoding",
            "authorization",
            "proxy-authorization",
            "www-authenticate",
            "proxy-authenticate",
            "authentication-info",
            "route",
            "record-route",
            "path",
            "allow",
            "supported",
            "require",
            "proxy-require",
            "unsupported",
            "user-agent",
            "server",
            "date",
            "event",
            "subject",
            "refer-to",
            "referred-by",
            "session-expires",
            "min-se",
            "reason",
            "retry-after",
            "warning",
            "timestamp",
            "",
            "x-custom",
            "vi",
            "viaa",
            "call-ie",
            "contacs",
            "referred-bx",
            "retry-aftes",
            "a-very-long-header-name-beyond-the-buffer",
            "\u{e9}t\u{e9}",
            "t\u{e9}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        names.extend((b'!'..=b'~').map(|c| char::from(c).to_string()));
        for name in names.clone() {
            names.push(name.to_ascii_uppercase());
            // Mixed case, and one letter off.
            let mixed: String = name
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            names.push(mixed);
            if let Some(c) = name.chars().last() {
                let mut off = name.clone();
                off.pop();
                off.push(if c == 'z' {
                    'a'
                } else {
                    char::from_u32(c as u32 + 1).unwrap_or('a')
                });
                names.push(off);
            }
        }
        for name in &names {
            let (fast, reference) = (header_name(name), header_name_reference(name));
            assert_eq!(fast, reference, "{name:?}");
            assert_eq!(fast.as_str(), reference.as_str(), "{name:?}");
        }
    }
}
