//! The parser and serialiser: SIP messages (RFC 3261 §7, §25), the header values Confab reads
//! (Via, name-addr, CSeq) and SIP/SIPS/tel URIs (RFC 3261 §19.1, RFC 3966, RFC 5118).
//!
//! Everything here works on byte offsets checked with `get`, so no input can make it panic, and
//! every scan is a single forward pass (no backtracking, no regex). Limits: a message of at most
//! [`MAX_MESSAGE_LEN`] bytes, at most [`MAX_HEADERS`] header lines and [`MAX_PARAMS`] parameters
//! per value, so work and memory stay proportional to the input.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::Bytes;

use crate::header::{CSeq, ContactValue, Header, HeaderName, Headers, NameAddr, Params, Via};
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
static HOST: [bool; 256] = class(true, b"-.");
static TEL: [bool; 256] = class(true, b"+-.()*#");

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
fn is_user_char(b: u8) -> bool {
    USER[b as usize]
}

/// `password` = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," ).
fn is_password_char(b: u8) -> bool {
    PASSWORD[b as usize]
}

/// `paramchar` = param-unreserved / unreserved / escaped.
fn is_param_char(b: u8) -> bool {
    PARAM[b as usize]
}

/// `hname` / `hvalue` characters: hnv-unreserved / unreserved / escaped.
fn is_header_char(b: u8) -> bool {
    HEADER[b as usize]
}

/// `hostname` characters (IPv6 references are handled apart).
fn is_host_char(b: u8) -> bool {
    HOST[b as usize]
}

/// Characters of a `tel:` number: digits, hex digits, `*#+`, visual separators (RFC 3966 §3).
fn is_tel_char(b: u8) -> bool {
    TEL[b as usize]
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

/// The first position of the ASCII byte `b` in `s` (a plain loop: the strings searched here are
/// short, where it beats the general `str::find` machinery).
fn find_byte(s: &str, b: u8) -> Option<usize> {
    s.as_bytes().iter().position(|&c| c == b)
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

    /// Takes the longest run of ASCII bytes of `class`.
    fn take_while(&mut self, class: fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(class) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or("")
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

/// Parses an absolute URI: `sip:`/`sips:` (RFC 3261 §19.1), `tel:` (RFC 3966), or any other
/// scheme kept verbatim (the application answers 416 for those where it must, RFC 3261 §8.2.2.1).
pub(crate) fn uri(s: &str) -> Result<Uri, ParseError> {
    let bad = || ParseError::new("Malformed URI");
    let colon = find_byte(s, b':').ok_or_else(bad)?;
    let scheme = s.get(..colon).ok_or_else(bad)?;
    let rest = s.get(colon + 1..).ok_or_else(bad)?;
    // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
    let mut sb = scheme.bytes();
    if !sb.next().is_some_and(|b| b.is_ascii_alphabetic())
        || !sb.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err(bad());
    }
    // URIs are ASCII with escapes; no whitespace, no delimiters of the enclosing header.
    if rest.is_empty()
        || rest
            .bytes()
            .any(|b| b <= b' ' || b >= 0x7f || b"<>\"".contains(&b))
    {
        return Err(bad());
    }
    if scheme.eq_ignore_ascii_case("sip") {
        sip_uri(rest, false).map(Uri::Sip)
    } else if scheme.eq_ignore_ascii_case("sips") {
        sip_uri(rest, true).map(Uri::Sip)
    } else if scheme.eq_ignore_ascii_case("tel") {
        tel_uri(rest).map(Uri::Tel)
    } else {
        Ok(Uri::Other {
            scheme: scheme.to_owned(),
            rest: rest.to_owned(),
        })
    }
}

fn sip_uri(rest: &str, secure: bool) -> Result<SipUri, ParseError> {
    let bad = |what: &str| ParseError::new(format!("Malformed SIP URI {what}"));
    // userinfo cannot hold an unescaped "@" (RFC 3261 §25.1), so the first one ends it, even
    // when the user part holds "?", ";" or "," (RFC 4475 §3.1.1.2, §3.1.1.9).
    let (userinfo, hostport) = match find_byte(rest, b'@') {
        Some(at) => (rest.get(..at), rest.get(at + 1..).unwrap_or("")),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(ui) => {
            let (user, password) = match find_byte(ui, b':') {
                Some(c) => (ui.get(..c).unwrap_or(""), ui.get(c + 1..)),
                None => (ui, None),
            };
            if user.is_empty() || !all(user, is_user_char) || !escapes_valid(user) {
                return Err(bad("user"));
            }
            if let Some(pw) = password {
                if !all(pw, is_password_char) || !escapes_valid(pw) {
                    return Err(bad("password"));
                }
            }
            (Some(user.to_owned()), password.map(str::to_owned))
        }
    };
    let mut c = Cursor::new(hostport);
    let host = host(&mut c).map_err(|_| bad("host"))?;
    let port = if c.eat(b':') {
        Some(port(&mut c).map_err(|_| bad("port"))?)
    } else {
        None
    };
    let mut params = Params::default();
    while c.eat(b';') {
        let p = c.take_while(|b| b != b';' && b != b'?');
        let (name, value) = match find_byte(p, b'=') {
            Some(eq) => (p.get(..eq).unwrap_or(""), p.get(eq + 1..)),
            None => (p, None),
        };
        if name.is_empty() || !all(name, is_param_char) || !escapes_valid(name) {
            return Err(bad("parameter"));
        }
        if let Some(v) = value {
            if !all(v, is_param_char) || !escapes_valid(v) {
                return Err(bad("parameter"));
            }
        }
        if params.0.len() >= MAX_PARAMS {
            return Err(bad("parameters"));
        }
        params.0.push((name.to_owned(), value.map(str::to_owned)));
    }
    let mut headers = Vec::new();
    if c.eat(b'?') {
        for h in c.rest().split('&') {
            let (name, value) = h.split_once('=').ok_or_else(|| bad("header"))?;
            if name.is_empty()
                || !all(name, is_header_char)
                || !all(value, is_header_char)
                || !escapes_valid(name)
                || !escapes_valid(value)
                || headers.len() >= MAX_PARAMS
            {
                return Err(bad("header"));
            }
            headers.push((name.to_owned(), value.to_owned()));
        }
    } else if !c.at_end() {
        return Err(bad("host"));
    }
    Ok(SipUri {
        secure,
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}

fn tel_uri(rest: &str) -> Result<TelUri, ParseError> {
    let bad = || ParseError::new("Malformed tel URI");
    let mut parts = rest.split(';');
    let number = parts.next().unwrap_or("");
    if number.is_empty() || !all(number, is_tel_char) {
        return Err(bad());
    }
    let mut params = Params::default();
    for p in parts {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (p, None),
        };
        if name.is_empty()
            || !all(name, is_param_char)
            || !value.is_none_or(|v| all(v, is_param_char) && escapes_valid(v))
            || params.0.len() >= MAX_PARAMS
        {
            return Err(bad());
        }
        params.0.push((name.to_owned(), value.map(str::to_owned)));
    }
    Ok(TelUri {
        number: number.to_owned(),
        params,
    })
}

/// `host` = hostname / IPv4address / IPv6reference (RFC 3261 §25.1, RFC 5118 §4.1-§4.3).
fn host(c: &mut Cursor<'_>) -> Result<Host, ParseError> {
    let bad = || ParseError::new("Malformed host");
    if c.eat(b'[') {
        let inner = c.take_while(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !c.eat(b']') {
            return Err(bad());
        }
        // std rejects ":::" and other forms outside RFC 4291 (RFC 5118 §4.3).
        return inner.parse::<Ipv6Addr>().map(Host::Ipv6).map_err(|_| bad());
    }
    let name = c.take_while(is_host_char);
    if let Ok(v4) = name.parse::<Ipv4Addr>() {
        return Ok(Host::Ipv4(v4));
    }
    // hostname = *( domainlabel "." ) toplabel [ "." ]; toplabel starts with ALPHA, which
    // keeps "sip:2001:db8::10" (RFC 5118 §4.4) and bad dotted quads out.
    let trimmed = name.strip_suffix('.').unwrap_or(name).as_bytes();
    // Every label starts and ends with an alphanumeric: no empty label, no '-' next to a '.'
    // or at either end (the class admits only alphanumerics, '-' and '.').
    let labels_ok = trimmed.first().is_some_and(u8::is_ascii_alphanumeric)
        && trimmed.last().is_some_and(u8::is_ascii_alphanumeric)
        && trimmed.windows(2).all(|w| {
            (w[0] != b'.' || w[1].is_ascii_alphanumeric())
                && (w[1] != b'.' || w[0].is_ascii_alphanumeric())
        });
    let top_start = trimmed
        .iter()
        .rposition(|&b| b == b'.')
        .map_or(0, |i| i + 1);
    let top_ok = trimmed.get(top_start).is_some_and(u8::is_ascii_alphabetic);
    if !labels_ok || !top_ok {
        return Err(bad());
    }
    Ok(Host::Domain(name.to_ascii_lowercase()))
}

fn port(c: &mut Cursor<'_>) -> Result<u16, ParseError> {
    let digits = c.take_while(|b| b.is_ascii_digit());
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
pub(crate) fn header_name(s: &str) -> HeaderName {
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

/// `*( SEMI generic-param )` with LWS allowed around `;` and `=` (RFC 3261 §25.1, RFC 4475
/// §3.1.1.1). Values are a token, a host (IPv6 references and, per RFC 5118 §4.5, bare IPv6
/// addresses in `received`) or a quoted string kept with its quotes. Must consume everything.
fn header_params(c: &mut Cursor<'_>) -> Result<Params, ParseError> {
    let bad = || ParseError::new("Malformed parameter");
    let mut params = Params::default();
    loop {
        c.skip_ws();
        if c.at_end() {
            return Ok(params);
        }
        if !c.eat(b';') {
            return Err(bad());
        }
        c.skip_ws();
        let name = c.take_while(is_token);
        if name.is_empty() || params.0.len() >= MAX_PARAMS {
            return Err(bad());
        }
        c.skip_ws();
        let value = if c.eat(b'=') {
            c.skip_ws();
            let v = if c.peek() == Some(b'"') {
                c.quoted()?
            } else {
                c.take_while(|b| is_token(b) || b == b':' || b == b'[' || b == b']')
            };
            if v.is_empty() {
                return Err(bad());
            }
            Some(v.to_owned())
        } else {
            None
        };
        params.0.push((name.to_owned(), value));
    }
}

/// One Via value (RFC 3261 §20.42): `SIP / 2.0 / transport LWS sent-by *(; via-params)`.
pub(crate) fn via(s: &str) -> Result<Via, ParseError> {
    let bad = || ParseError::new("Malformed Via");
    let mut c = Cursor::new(trim_ws(s));
    let proto = c.take_while(is_token);
    c.skip_ws();
    let slash1 = c.eat(b'/');
    c.skip_ws();
    let version = c.take_while(is_token);
    c.skip_ws();
    let slash2 = c.eat(b'/');
    c.skip_ws();
    let transport = c.take_while(is_token);
    if !proto.eq_ignore_ascii_case("SIP")
        || version != "2.0"
        || !slash1
        || !slash2
        || transport.is_empty()
    {
        return Err(bad());
    }
    if c.skip_ws() == 0 {
        return Err(bad());
    }
    let host = host(&mut c).map_err(|_| bad())?;
    c.skip_ws();
    let port = if c.eat(b':') {
        c.skip_ws();
        Some(port(&mut c).map_err(|_| bad())?)
    } else {
        None
    };
    let params = header_params(&mut c).map_err(|_| bad())?;
    Ok(Via {
        transport: transport.to_ascii_uppercase(),
        host,
        port,
        params,
    })
}

/// A From/To/Contact/Route value: name-addr or addr-spec, then header parameters
/// (RFC 3261 §20.10, §25.1).
pub(crate) fn name_addr(s: &str) -> Result<NameAddr, ParseError> {
    let s = trim_ws(s);
    let mut c = Cursor::new(s);
    let display = if c.peek() == Some(b'"') {
        let q = c.quoted()?;
        c.skip_ws();
        Some(
            q.strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .unwrap_or("")
                .to_owned(),
        )
    } else {
        // A display name of tokens cannot hold ";", so a "<" before the first ";" starts the
        // name-addr; without one this is an addr-spec.
        let head = s.get(..find_byte(s, b';').unwrap_or(s.len())).unwrap_or("");
        match find_byte(head, b'<') {
            Some(lt) => {
                let name = trim_ws(head.get(..lt).unwrap_or(""));
                // RFC 4475 §3.1.2.15: an unquoted display name is tokens and LWS only. UTF-8
                // beyond ASCII is let through: some UAs send it unquoted, and it cannot be
                // mistaken for a delimiter (it is re-serialised quoted).
                if !name.bytes().all(|b| is_token(b) || is_ws(b) || b >= 0x80) {
                    return Err(ParseError::new("Malformed display name"));
                }
                c.pos = lt;
                (!name.is_empty()).then(|| name.to_owned())
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
                let uri = uri(spec)?;
                c.pos = end;
                let params = header_params(&mut c)?;
                return Ok(NameAddr {
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
    let inner = c.take_while(|b| b != b'>');
    if !c.eat(b'>') {
        return Err(ParseError::new("Unterminated <URI>"));
    }
    // RFC 4475 §3.1.2.14: no LWS inside the brackets; uri() refuses it.
    let uri = uri(inner)?;
    let params = header_params(&mut c)?;
    Ok(NameAddr {
        display,
        uri,
        params,
    })
}

/// `CSeq: 1*DIGIT LWS Method` (RFC 3261 §20.16); the number must fit 32 bits.
pub(crate) fn cseq(s: &str) -> Result<CSeq, ParseError> {
    let bad = || ParseError::new("Malformed CSeq");
    let mut c = Cursor::new(trim_ws(s));
    let digits = c.take_while(|b| b.is_ascii_digit());
    if digits.is_empty() || c.skip_ws() == 0 {
        return Err(bad());
    }
    let seq = digits
        .parse::<u32>()
        .map_err(|_| ParseError::new("CSeq number too large"))?;
    let method = c.take_while(is_token);
    if method.is_empty() || !c.at_end() {
        return Err(bad());
    }
    Ok(CSeq {
        seq,
        method: Method::parse(method),
    })
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

/// Unfolds header lines (RFC 3261 §7.3.1: a line starting with SP/HT continues the previous
/// one, the fold counting as one SP). `strict` refuses malformed lines, else they are skipped.
fn header_lines<'a>(
    lines: impl Iterator<Item = &'a str>,
    strict: bool,
) -> Result<Vec<Header>, ParseError> {
    let mut out: Vec<Header> = Vec::with_capacity(16);
    for line in lines {
        // A CR is only allowed as part of a line end (RFC 3261 §7.3.1).
        if memchr::memchr(b'\r', line.as_bytes()).is_some() {
            if strict {
                return Err(ParseError::new("Malformed header line"));
            }
            continue;
        }
        if line.as_bytes().first().is_some_and(|&b| is_ws(b)) {
            let more = trim_ws(line);
            match out.last_mut() {
                Some(Header { value, .. }) if !more.is_empty() => {
                    if !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str(more);
                }
                Some(_) => {}
                None if strict => return Err(ParseError::new("Malformed header line")),
                None => {}
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
        match parsed {
            Some(h) => {
                if out.len() >= MAX_HEADERS {
                    if strict {
                        return Err(ParseError::new("Too many header fields"));
                    }
                    break;
                }
                out.push(h);
            }
            None if strict => return Err(ParseError::new("Malformed header line")),
            None => {}
        }
    }
    Ok(out)
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

/// Header fields that appear at most once (RFC 3261 §7.3.1, RFC 4475 §3.3.8-9).
fn single(headers: &Headers, name: &HeaderName, label: &str) -> Result<Option<usize>, ParseError> {
    let mut found = None;
    for (i, h) in headers.0.iter().enumerate() {
        if &h.name == name {
            if found.is_some() {
                return Err(ParseError::new(format!("Multiple {label} header fields")));
            }
            found = Some(i);
        }
    }
    Ok(found)
}

fn value_at(headers: &Headers, i: Option<usize>) -> Option<&str> {
    i.and_then(|i| headers.0.get(i)).map(|h| h.value.as_str())
}

/// Checks what RFC 3261 §8.1.1 and §8.2 need of every message so that accessors cannot fail
/// later: Via, From, To, Call-ID, CSeq present and well-formed, scalar fields in range.
fn validate(headers: &Headers, method: Option<&Method>) -> Result<(), ParseError> {
    let mut vias = headers.values(&HeaderName::Via).peekable();
    if vias.peek().is_none() {
        return Err(ParseError::new("Missing Via"));
    }
    for v in vias {
        via(v)?;
    }
    for (name, label) in [(HeaderName::From, "From"), (HeaderName::To, "To")] {
        let v = value_at(headers, single(headers, &name, label)?)
            .ok_or_else(|| ParseError::new(format!("Missing {label}")))?;
        name_addr(v).map_err(|e| ParseError::new(format!("Malformed {label}: {e}")))?;
    }
    let call_id = value_at(headers, single(headers, &HeaderName::CallId, "Call-ID")?)
        .ok_or_else(|| ParseError::new("Missing Call-ID"))?;
    if call_id.is_empty() || find_any(call_id, b" \t").is_some() {
        return Err(ParseError::new("Malformed Call-ID"));
    }
    let cseq_value = value_at(headers, single(headers, &HeaderName::CSeq, "CSeq")?)
        .ok_or_else(|| ParseError::new("Missing CSeq"))?;
    let cseq = cseq(cseq_value)?;
    if method.is_some_and(|m| *m != cseq.method) {
        return Err(ParseError::new("CSeq method does not match request method"));
    }
    if let Some(v) = value_at(
        headers,
        single(headers, &HeaderName::MaxForwards, "Max-Forwards")?,
    ) {
        // RFC 3261 §20.22: 0-255 (RFC 4475 §3.1.2.4).
        if v.is_empty()
            || v.len() > 5
            || !all(v, |b| b.is_ascii_digit())
            || v.parse::<u32>().map_or(true, |n| n > 255)
        {
            return Err(ParseError::new("Bad Max-Forwards"));
        }
    }
    if let Some(v) = value_at(headers, single(headers, &HeaderName::Expires, "Expires")?) {
        // RFC 3261 §20.19: delta-seconds up to 2^32-1 (RFC 4475 §3.1.2.4).
        if v.is_empty() || !all(v, |b| b.is_ascii_digit()) || v.parse::<u32>().is_err() {
            return Err(ParseError::new("Bad Expires"));
        }
    }
    if let Some(v) = value_at(headers, single(headers, &HeaderName::Date, "Date")?) {
        if !date_valid(v) {
            return Err(ParseError::new("Bad Date"));
        }
    }
    single(headers, &HeaderName::ContentType, "Content-Type")?;
    for v in headers.values(&HeaderName::Contact) {
        ContactValue::parse(v).map_err(|e| ParseError::new(format!("Malformed Contact: {e}")))?;
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
    let mut lines = lines(head);
    let first = lines.next().unwrap_or("");
    let start = start_line(first)?;
    let raw = header_lines(lines, true)?;

    let mut headers = Headers(raw);
    let mut content_length: Option<String> = None;
    for h in &headers.0 {
        if h.name == HeaderName::ContentLength {
            // RFC 4475 §3.3.9: two Content-Lengths leave the body length unknown.
            if content_length.is_some() {
                return Err(ParseError::new("Multiple Content-Length header fields"));
            }
            content_length = Some(h.value.clone());
        }
    }
    if content_length.is_some() {
        // Kept out of `headers`: the serialiser writes it from the body.
        headers.remove(&HeaderName::ContentLength);
    }

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
    let mut raw = header_lines(lines, false).ok()?;
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

/// Writes `s` with CR and LF replaced by SP, so a hand-edited value cannot inject header lines.
fn put_text(out: &mut Vec<u8>, s: &str) {
    if memchr::memchr2(b'\r', b'\n', s.as_bytes()).is_some() {
        out.extend(
            s.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        out.extend_from_slice(s.as_bytes());
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
        if h.name == HeaderName::ContentLength {
            continue;
        }
        put_text(out, h.name.as_str());
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
    let uri = r.uri.to_string();
    put_text(&mut out, &uri);
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
}
