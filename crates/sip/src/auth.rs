//! HTTP digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760).
//!
//! The pieces a registrar or proxy needs to challenge and check requests, and a client leg needs
//! to answer a challenge:
//!
//! - [`ha1`], [`expected_response`], [`verify`]: the RFC 7616 §3.4.1 digest arithmetic for
//!   `qop=auth` and for the RFC 2069 form without qop, with MD5 or SHA-256 (RFC 8760);
//! - [`Challenge`] (the `WWW-Authenticate`/`Proxy-Authenticate` value) and [`Credentials`]
//!   (the parsed `Authorization`/`Proxy-Authorization` value);
//! - [`NonceManager`]: issues self-authenticating nonces and detects stale and replayed ones,
//!   sans-IO (time is an argument).
//!
//! A server checks a request in this order, so that a wrong response never uses up a nonce:
//!
//! 1. `Credentials::parse` the header; pick the stored HA1 for its username, realm and algorithm
//!    (answer unknown users with the same challenge as known ones);
//! 2. `NonceManager::check(nonce, nc, now)`: `Stale` → challenge again with `stale=true`;
//!    `Replayed` or `Unknown` → challenge again;
//! 3. [`verify`] the response (and that `uri` names the Request-URI, RFC 2617 §3.2.2.5);
//! 4. only then `NonceManager::commit` the [`NonceUse`] that `check` returned. A `false` from
//!    `commit` means the same nonce count was used meanwhile: treat it as a replay.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use md5::Md5;
use sha2::{Digest as _, Sha256};

use crate::ParseError;

/// A digest algorithm (RFC 7616 §3.3, RFC 8760 §2.3). Only the non-`-sess` variants: SIP
/// clients do not use the session forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// The wire name: `MD5` or `SHA-256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    /// Parses a wire name, case-insensitively (RFC 7616 §3.3 tokens compare so).
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("MD5") {
            Ok(Self::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Ok(Self::Sha256)
        } else {
            Err(ParseError::new("Unsupported digest algorithm"))
        }
    }

    /// `H(p1:p2:...)` in lowercase hex, without building the joined string.
    fn hash_hex(self, parts: &[&str]) -> String {
        self.hash_hex_buf(parts).as_str().to_owned()
    }

    /// [`Self::hash_hex`] into a buffer on the stack.
    fn hash_hex_buf(self, parts: &[&str]) -> HexBuf {
        fn run<D: sha2::Digest>(parts: &[&str]) -> HexBuf {
            let mut hasher = D::new();
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    hasher.update(b":");
                }
                hasher.update(part.as_bytes());
            }
            let digest = hasher.finalize();
            let mut out = HexBuf {
                buf: [0; 64],
                len: 2 * digest.len(),
            };
            // Both digests fit: 16 or 32 bytes.
            let _ = hex::encode_to_slice(digest, &mut out.buf[..out.len]);
            out
        }
        match self {
            Self::Md5 => run::<Md5>(parts),
            Self::Sha256 => run::<Sha256>(parts),
        }
    }
}

/// A digest in lowercase hex, on the stack (64 digits at most: SHA-256).
struct HexBuf {
    buf: [u8; 64],
    len: usize,
}

impl HexBuf {
    fn as_str(&self) -> &str {
        // Hex digits are ASCII.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Self::parse(s)
    }
}

/// `H(username:realm:password)` in lowercase hex (RFC 7616 §3.4.2), what Confab stores instead
/// of passwords.
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.hash_hex(&[username, realm, password])
}

/// The quality of protection a client chose (RFC 7616 §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qop {
    Auth,
    /// Integrity over the body as well. Confab never offers it, and [`verify`] rejects it.
    AuthInt,
}

impl Qop {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::AuthInt => "auth-int",
        }
    }
}

/// A digest challenge, the value of `WWW-Authenticate` (401) or `Proxy-Authenticate` (407),
/// always offering `qop="auth"` (RFC 3261 §22.4 recommends it; RFC 7616 §3.3 requires it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The nonce in the request was ours but expired: the client retries without asking the
    /// user (RFC 7616 §3.3).
    pub stale: bool,
}

impl fmt::Display for Challenge {
    /// `Digest realm="..",nonce="..",opaque="..",algorithm=SHA-256,qop="auth"[,stale=true]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::uri::buffered(f, |w| {
            write_challenge(
                w,
                &self.realm,
                &self.nonce,
                self.opaque.as_deref(),
                self.algorithm,
                self.stale,
            )
        })
    }
}

impl Challenge {
    /// The header value [`Challenge`] displays as, built from borrowed parts into one
    /// allocation of the right size (no `Challenge` to fill with copies first).
    pub fn header_value(
        realm: &str,
        nonce: &str,
        opaque: Option<&str>,
        algorithm: Algorithm,
        stale: bool,
    ) -> String {
        // Fixed text, three quoted values (escapes are rare: room for a few) and the options.
        let len = 64 + realm.len() + nonce.len() + opaque.map_or(0, |o| o.len() + 10);
        let mut out = String::with_capacity(len);
        // Writing into a String cannot fail.
        let _ = write_challenge(&mut out, realm, nonce, opaque, algorithm, stale);
        out
    }
}

/// `Digest realm="..",nonce="..",opaque="..",algorithm=SHA-256,qop="auth"[,stale=true]`.
fn write_challenge<W: fmt::Write + ?Sized>(
    w: &mut W,
    realm: &str,
    nonce: &str,
    opaque: Option<&str>,
    algorithm: Algorithm,
    stale: bool,
) -> fmt::Result {
    w.write_str("Digest realm=")?;
    write_quoted(w, realm)?;
    w.write_str(",nonce=")?;
    write_quoted(w, nonce)?;
    if let Some(opaque) = opaque {
        w.write_str(",opaque=")?;
        write_quoted(w, opaque)?;
    }
    // RFC 7616 §3.3: algorithm is a token and qop a quoted list.
    w.write_str(",algorithm=")?;
    w.write_str(algorithm.as_str())?;
    w.write_str(",qop=\"auth\"")?;
    if stale {
        w.write_str(",stale=true")?;
    }
    Ok(())
}

/// Writes a quoted-string, escaping `"` and `\` (RFC 3261 §25.1).
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_quoted(f, self.0)
    }
}

/// Writes `s` as a quoted-string (what [`Quoted`] displays).
fn write_quoted<W: fmt::Write + ?Sized>(f: &mut W, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    let mut rest = s;
    // Runs without `"` or `\\` are written whole (usually the whole value).
    while let Some(i) = memchr::memchr2(b'"', b'\\', rest.as_bytes()) {
        f.write_str(&rest[..i])?;
        f.write_str("\\")?;
        f.write_str(&rest[i..=i])?;
        rest = &rest[i + 1..];
    }
    f.write_str(rest)?;
    f.write_str("\"")
}

/// The parsed value of an `Authorization` or `Proxy-Authorization` header (RFC 3261 §22.4,
/// RFC 7616 §3.4). Quoted values are unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    /// The `uri` parameter: the caller checks that it names the Request-URI.
    pub uri: String,
    /// The request digest, lowercase hex as sent.
    pub response: String,
    /// MD5 when the parameter is absent (RFC 7616 §3.4).
    pub algorithm: Algorithm,
    /// Present exactly when `qop` is.
    pub cnonce: Option<String>,
    /// The nonce count, parsed from hex; present exactly when `qop` is.
    pub nc: Option<u32>,
    pub qop: Option<Qop>,
    pub opaque: Option<String>,
}

impl Credentials {
    /// Parses a header value such as `Digest username="bob", realm="x", ...`.
    ///
    /// Parameters may come in any order with any spacing; names are case-insensitive; unknown
    /// parameters are ignored; a known parameter given twice, a missing mandatory one (username,
    /// realm, nonce, uri, response; cnonce and nc when qop is present), an unsupported algorithm
    /// or qop, or a bad nc is an error. Without qop, any cnonce or nc is dropped: the response
    /// does not cover them, so they must not drive replay detection.
    pub fn parse(header_value: &str) -> Result<Self, ParseError> {
        let mut c = Cursor {
            s: header_value,
            pos: 0,
        };
        c.skip_ws();
        let scheme = c.token();
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(ParseError::new("Not a Digest authorization"));
        }
        let mut fields = Fields::default();
        // A duplicate is reported only once the whole list has parsed (a syntax error wins).
        let mut duplicate = false;
        while let Some((name, value)) = c.next_param()? {
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            let slot = if is("username") {
                &mut fields.username
            } else if is("realm") {
                &mut fields.realm
            } else if is("nonce") {
                &mut fields.nonce
            } else if is("uri") {
                &mut fields.uri
            } else if is("response") {
                &mut fields.response
            } else if is("algorithm") {
                &mut fields.algorithm
            } else if is("cnonce") {
                &mut fields.cnonce
            } else if is("nc") {
                &mut fields.nc
            } else if is("qop") {
                &mut fields.qop
            } else if is("opaque") {
                &mut fields.opaque
            } else {
                continue;
            };
            duplicate |= slot.replace(value).is_some();
        }
        if duplicate {
            return Err(ParseError::new("Duplicate digest parameter"));
        }
        let missing = |name: &str| ParseError::new(format!("Missing digest parameter {name}"));
        let algorithm = match fields.algorithm {
            Some(a) => Algorithm::parse(&a)?,
            None => Algorithm::Md5,
        };
        let qop = match fields.qop.as_deref() {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => Some(Qop::Auth),
            Some(q) if q.eq_ignore_ascii_case("auth-int") => Some(Qop::AuthInt),
            Some(_) => return Err(ParseError::new("Unsupported qop")),
        };
        let (cnonce, nc) = if qop.is_some() {
            let cnonce = fields.cnonce.ok_or_else(|| missing("cnonce"))?;
            let nc = fields.nc.ok_or_else(|| missing("nc"))?;
            (Some(cnonce.into_owned()), Some(parse_nc(&nc)?))
        } else {
            (None, None)
        };
        Ok(Self {
            username: fields
                .username
                .ok_or_else(|| missing("username"))?
                .into_owned(),
            realm: fields.realm.ok_or_else(|| missing("realm"))?.into_owned(),
            nonce: fields.nonce.ok_or_else(|| missing("nonce"))?.into_owned(),
            uri: fields.uri.ok_or_else(|| missing("uri"))?.into_owned(),
            response: fields
                .response
                .ok_or_else(|| missing("response"))?
                .into_owned(),
            algorithm,
            cnonce,
            nc,
            qop,
            opaque: fields.opaque.map(Cow::into_owned),
        })
    }
}

/// The values as written (borrowed unless unescaped); only those kept are copied.
#[derive(Default)]
struct Fields<'a> {
    username: Option<Cow<'a, str>>,
    realm: Option<Cow<'a, str>>,
    nonce: Option<Cow<'a, str>>,
    uri: Option<Cow<'a, str>>,
    response: Option<Cow<'a, str>>,
    algorithm: Option<Cow<'a, str>>,
    cnonce: Option<Cow<'a, str>>,
    nc: Option<Cow<'a, str>>,
    qop: Option<Cow<'a, str>>,
    opaque: Option<Cow<'a, str>>,
}

/// `nc-value = 8LHEX` (RFC 7616 §3.4); upper case and fewer digits are accepted.
fn parse_nc(s: &str) -> Result<u32, ParseError> {
    let bad = || ParseError::new("Bad digest nc");
    if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    u32::from_str_radix(s, 16).map_err(|_| bad())
}

/// `tchar` (RFC 7230 §3.2.6) as a table: tested once per byte of every name.
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

/// A cursor over an auth-param list (RFC 7235 §2.1). Positions only ever stop at ASCII
/// delimiters, so slicing the `str` at them cannot split a character.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    /// A token (RFC 7230 §3.2.6 tchar), possibly empty.
    fn token(&mut self) -> &'a str {
        self.take(&TCHAR)
    }

    /// The longest run of bytes of an ASCII `class` (so the cut is a char boundary).
    fn take(&mut self, class: &[bool; 256]) -> &'a str {
        let rest = self.s.get(self.pos..).unwrap_or("");
        let n = rest
            .bytes()
            .position(|b| !class[usize::from(b)])
            .unwrap_or(rest.len());
        self.pos += n;
        rest.get(..n).unwrap_or("")
    }

    /// An unquoted value: liberal, anything up to a comma or whitespace (some clients send
    /// `uri=sip:...` unquoted).
    fn bare_value(&mut self) -> &'a str {
        // Stops only at ASCII bytes, so the cut is a char boundary.
        let rest = self.s.get(self.pos..).unwrap_or("");
        let n = rest
            .bytes()
            .position(|b| matches!(b, b',' | b' ' | b'\t' | b'\r' | b'\n' | b'"'))
            .unwrap_or(rest.len());
        self.pos += n;
        rest.get(..n).unwrap_or("")
    }

    /// A quoted-string starting at the opening quote, unescaped (RFC 3261 §25.1 quoted-pair).
    fn quoted(&mut self) -> Result<Cow<'a, str>, ParseError> {
        let unterminated = || ParseError::new("Unterminated quoted string");
        self.pos += 1;
        let rest = &self.s[self.pos..];
        // Usually no escapes: the value is the text up to the closing quote.
        match memchr::memchr2(b'"', b'\\', rest.as_bytes()) {
            Some(i) if rest.as_bytes()[i] == b'"' => {
                self.pos += i + 1;
                return Ok(Cow::Borrowed(&rest[..i]));
            }
            None => return Err(unterminated()),
            Some(_) => {}
        }
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(Cow::Owned(out));
                }
                '\\' => out.push(chars.next().ok_or_else(unterminated)?.1),
                c => out.push(c),
            }
        }
        Err(unterminated())
    }

    /// The next `name = value` pair of a list separated by commas (empty elements allowed,
    /// RFC 7230 §7); `None` at the end.
    fn next_param(&mut self) -> Result<Option<(&'a str, Cow<'a, str>)>, ParseError> {
        self.skip_ws();
        while self.peek() == Some(b',') {
            self.pos += 1;
            self.skip_ws();
        }
        if self.peek().is_none() {
            return Ok(None);
        }
        let name = self.token();
        if name.is_empty() {
            return Err(ParseError::new("Bad digest parameter"));
        }
        self.skip_ws();
        if self.peek() != Some(b'=') {
            return Err(ParseError::new("Digest parameter without value"));
        }
        self.pos += 1;
        self.skip_ws();
        let value = if self.peek() == Some(b'"') {
            self.quoted()?
        } else {
            Cow::Borrowed(self.bare_value())
        };
        self.skip_ws();
        match self.peek() {
            None | Some(b',') => Ok(Some((name, value))),
            Some(_) => Err(ParseError::new("Expected comma between digest parameters")),
        }
    }
}

/// The request digest the credentials should carry (RFC 7616 §3.4.1; RFC 2069 form without qop):
///
/// - `qop=auth`: `H(HA1:nonce:nc:cnonce:auth:H(method:uri))`, nc as 8 lowercase hex digits;
/// - no qop: `H(HA1:nonce:H(method:uri))`;
/// - `qop=auth-int` is computed over an empty body (`H(method:uri:H(""))`).
pub fn expected_response(
    alg: Algorithm,
    ha1_hex: &str,
    method: &str,
    creds: &Credentials,
) -> String {
    expected_response_buf(alg, ha1_hex, method, creds)
        .as_str()
        .to_owned()
}

fn expected_response_buf(
    alg: Algorithm,
    ha1_hex: &str,
    method: &str,
    creds: &Credentials,
) -> HexBuf {
    let lower;
    let ha1 = if ha1_hex.bytes().any(|b| b.is_ascii_uppercase()) {
        lower = ha1_hex.to_ascii_lowercase();
        lower.as_str()
    } else {
        ha1_hex
    };
    match creds.qop {
        None => {
            let ha2 = alg.hash_hex_buf(&[method, &creds.uri]);
            alg.hash_hex_buf(&[ha1, &creds.nonce, ha2.as_str()])
        }
        Some(qop) => {
            let ha2 = match qop {
                Qop::Auth => alg.hash_hex_buf(&[method, &creds.uri]),
                Qop::AuthInt => {
                    alg.hash_hex_buf(&[method, &creds.uri, alg.hash_hex_buf(&[""]).as_str()])
                }
            };
            let mut nc = [0u8; 8];
            let _ = hex::encode_to_slice(creds.nc.unwrap_or(0).to_be_bytes(), &mut nc);
            let nc = std::str::from_utf8(&nc).unwrap_or("");
            let cnonce = creds.cnonce.as_deref().unwrap_or("");
            alg.hash_hex_buf(&[ha1, &creds.nonce, nc, cnonce, qop.as_str(), ha2.as_str()])
        }
    }
}

/// Whether `creds.response` is right for `method` and the stored `ha1_hex` (which must be the
/// HA1 for `creds.algorithm`, username and realm). Compares in constant time. `auth-int` is
/// rejected: this function does not see the body.
///
/// This checks the arithmetic only; nonce freshness is [`NonceManager`]'s job.
pub fn verify(creds: &Credentials, method: &str, ha1_hex: &str) -> bool {
    if creds.qop == Some(Qop::AuthInt) {
        return false;
    }
    let expected = expected_response_buf(creds.algorithm, ha1_hex, method, creds);
    let given = creds.response.as_bytes();
    if given.len() != expected.len {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in expected.buf[..expected.len].iter().zip(given) {
        diff = std::hint::black_box(diff | (x ^ y.to_ascii_lowercase()));
    }
    diff == 0
}

/// Compares two byte strings without an early exit on the first difference. Lengths are not
/// secret (every digest of one algorithm has the same length).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff = std::hint::black_box(diff | (x ^ y));
    }
    diff == 0
}

/// The `Authorization` header value answering a challenge, for Confab's own client legs.
///
/// With a `cnonce` it uses `qop=auth` and `nc` (RFC 7616 §3.4); without, the RFC 2069 form for
/// challenges that offered no qop (`nc` is then ignored).
#[allow(clippy::too_many_arguments)]
pub fn client_authorization(
    alg: Algorithm,
    username: &str,
    password: &str,
    realm: &str,
    nonce: &str,
    method: &str,
    uri: &str,
    cnonce: Option<&str>,
    nc: u32,
    opaque: Option<&str>,
) -> String {
    let ha1 = ha1(alg, username, realm, password);
    let creds = Credentials {
        username: username.to_owned(),
        realm: realm.to_owned(),
        nonce: nonce.to_owned(),
        uri: uri.to_owned(),
        response: String::new(),
        algorithm: alg,
        cnonce: cnonce.map(str::to_owned),
        nc: cnonce.map(|_| nc),
        qop: cnonce.map(|_| Qop::Auth),
        opaque: opaque.map(str::to_owned),
    };
    let response = expected_response(alg, &ha1, method, &creds);
    let mut out = format!(
        "Digest username={},realm={},nonce={},uri={},response={},algorithm={}",
        Quoted(username),
        Quoted(realm),
        Quoted(nonce),
        Quoted(uri),
        Quoted(&response),
        alg
    );
    if let Some(cnonce) = cnonce {
        // RFC 7616 §3.4: qop and nc are never quoted.
        out.push_str(&format!(",cnonce={},nc={nc:08x},qop=auth", Quoted(cnonce)));
    }
    if let Some(opaque) = opaque {
        out.push_str(&format!(",opaque={}", Quoted(opaque)));
    }
    out
}

/// The verdict of [`NonceManager::check`].
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum NonceCheck {
    /// Ours, fresh, and this nonce count is new. Verify the response, then `commit` this.
    Valid(NonceUse),
    /// Ours but past its lifetime, or no longer tracked: challenge again with `stale=true`.
    Stale,
    /// This nonce count (or, without qop, this nonce) was already used.
    Replayed,
    /// Not a nonce we issued (forged, corrupted, or issued under another secret).
    Unknown,
}

/// Permission to record one use of a nonce, handed out by [`NonceManager::check`] and spent by
/// [`NonceManager::commit`]. Not `Clone`: one check, one commit.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "commit it once the response verified"]
pub struct NonceUse {
    counter: u64,
    issued_ms: u64,
    nc: Option<u32>,
}

/// Issues and checks digest nonces, sans-IO.
///
/// A nonce is 64 hex digits: an issue counter, the issue time in milliseconds since `epoch`, and
/// an HMAC-SHA-256 tag over both (truncated to 128 bits) keyed with the secret. A nonce with a bad
/// tag is `Unknown` without any lookup; one older than `lifetime` is `Stale`. The tag proves a
/// nonce is ours, so nothing is stored when one is issued: only uses are recorded, in a bitmap
/// indexed by the counter (one bit per issued nonce, set when it is used with nonce count 1, the
/// common case), plus a small map for the other uses (higher counts, RFC 2069 single uses), so
/// that a replayed count is caught (RFC 7616 §3.3, §5.12). Counters older than the lifetime are
/// dropped, in words of 64. At most the `max_tracked` most recent counters are covered; an older
/// one is answered `Stale` from then on, so a flood of challenges costs bounded memory (an eighth
/// of a byte per nonce) and at worst makes clients re-authenticate.
///
/// Give each process a fresh random secret: nonces are tied to `epoch`, an `Instant` of this
/// process, so nonces issued by an earlier run must not validate.
pub struct NonceManager {
    mac: Hmac,
    lifetime: Duration,
    max_tracked: u64,
    epoch: Instant,
    next_counter: u64,
    /// The oldest counter still covered; older ones are `Stale`.
    base: u64,
    /// Use bits of the counters from `64 * (base / 64)` on, 64 per word.
    used: VecDeque<u64>,
    /// For each word of `used`: when its most recent nonce was issued (ms since `epoch`).
    word_issued: VecDeque<u64>,
    /// Uses other than "once with nonce count 1": counter → usage.
    other: BTreeMap<u64, Usage>,
}

impl fmt::Debug for NonceManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceManager")
            .field("lifetime", &self.lifetime)
            .field("max_tracked", &self.max_tracked)
            .field("next_counter", &self.next_counter)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Usage {
    Fresh,
    /// Used with qop; the highest nonce count seen.
    Counted(u32),
    /// Used without qop: RFC 2069 responses carry no count, so the nonce is good once.
    Spent,
}

impl Usage {
    /// Whether a use with `nc` may follow the uses so far: counts strictly increase from 1.
    fn allows(self, nc: Option<u32>) -> bool {
        match (self, nc) {
            (_, Some(0)) => false,
            (Self::Fresh, _) => true,
            (Self::Counted(highest), Some(nc)) => nc > highest,
            (Self::Counted(_), None) | (Self::Spent, _) => false,
        }
    }
}

const NONCE_PAYLOAD: usize = 16;
const NONCE_TAG: usize = 16;

impl NonceManager {
    /// `secret` keys the nonce MAC (take it from a CSPRNG at start-up); nonces live `lifetime`;
    /// at most the `max_tracked` (at least 1) most recent nonces are covered by replay
    /// detection; `epoch` is any `Instant` not later than the first `issue`, typically the start
    /// of the process.
    pub fn new(secret: [u8; 32], lifetime: Duration, max_tracked: usize, epoch: Instant) -> Self {
        Self {
            mac: Hmac::new(&secret),
            lifetime,
            max_tracked: u64::try_from(max_tracked.max(1)).unwrap_or(u64::MAX),
            epoch,
            next_counter: 0,
            base: 0,
            used: VecDeque::new(),
            word_issued: VecDeque::new(),
            other: BTreeMap::new(),
        }
    }

    fn ms_since_epoch(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// A new nonce, valid from `now` for the lifetime.
    pub fn issue(&mut self, now: Instant) -> String {
        let counter = self.next_counter;
        self.next_counter += 1;
        let issued_ms = self.ms_since_epoch(now);
        let mut payload = [0u8; NONCE_PAYLOAD];
        payload[..8].copy_from_slice(&counter.to_be_bytes());
        payload[8..].copy_from_slice(&issued_ms.to_be_bytes());
        let tag = self.mac.sign(&payload);
        let mut nonce = String::with_capacity(2 * (NONCE_PAYLOAD + NONCE_TAG));
        push_hex(&mut nonce, &payload);
        push_hex(&mut nonce, &tag[..NONCE_TAG]);

        // Cover the new counter.
        let word = (counter / 64).saturating_sub(self.base / 64);
        while self.used.len() as u64 <= word {
            self.used.push_back(0);
            self.word_issued.push_back(issued_ms);
        }
        if let Some(w) = self.word_issued.back_mut() {
            *w = issued_ms;
        }
        while self.next_counter - self.base > self.max_tracked {
            self.evict_oldest();
        }
        nonce
    }

    /// Stops covering the oldest covered counter (it is `Stale` from then on).
    fn evict_oldest(&mut self) {
        self.base += 1;
        if self.base & 63 == 0 {
            self.used.pop_front();
            self.word_issued.pop_front();
        }
        self.forget_other();
    }

    /// Stops covering the oldest word of counters.
    fn pop_word(&mut self) {
        self.used.pop_front();
        self.word_issued.pop_front();
        self.base = if self.used.is_empty() {
            // Nothing covered: the next counter issued starts afresh.
            self.next_counter
        } else {
            (self.base / 64 + 1) * 64
        };
        self.forget_other();
    }

    fn forget_other(&mut self) {
        while self
            .other
            .first_key_value()
            .is_some_and(|(&c, _)| c < self.base)
        {
            self.other.pop_first();
        }
    }

    fn usage(&self, counter: u64) -> Usage {
        let bit = counter - 64 * (self.base / 64);
        let set = self
            .used
            .get((bit / 64) as usize)
            .is_some_and(|w| w & (1 << (bit % 64)) != 0);
        match (set, self.other.get(&counter)) {
            (_, Some(u)) => *u,
            (true, None) => Usage::Counted(1),
            (false, None) => Usage::Fresh,
        }
    }

    /// A challenge with a freshly issued nonce.
    pub fn challenge(
        &mut self,
        realm: &str,
        algorithm: Algorithm,
        stale: bool,
        now: Instant,
    ) -> Challenge {
        Challenge {
            realm: realm.to_owned(),
            nonce: self.issue(now),
            opaque: None,
            algorithm,
            stale,
        }
    }

    /// Checks `nonce` with nonce count `nc` (`None` when the credentials carry no qop) at `now`.
    /// Changes nothing: record the use with [`Self::commit`] after the response verified.
    pub fn check(&self, nonce: &str, nc: Option<u32>, now: Instant) -> NonceCheck {
        let Some((counter, issued_ms)) = self.decode(nonce) else {
            return NonceCheck::Unknown;
        };
        let Some(issued) = self.epoch.checked_add(Duration::from_millis(issued_ms)) else {
            return NonceCheck::Unknown;
        };
        if now.saturating_duration_since(issued) > self.lifetime {
            return NonceCheck::Stale;
        }
        if counter < self.base || counter >= self.next_counter {
            // Forgotten to bound memory, or issued by an earlier run with the same secret.
            return NonceCheck::Stale;
        }
        if !self.usage(counter).allows(nc) {
            return NonceCheck::Replayed;
        }
        NonceCheck::Valid(NonceUse {
            counter,
            issued_ms,
            nc,
        })
    }

    /// Records a use that `check` allowed and whose response verified. Returns false if the
    /// use is no longer allowed (the same count was committed since the check): a replay, which
    /// the caller rejects. A nonce forgotten since the check is accepted; it can never be
    /// `Valid` again.
    #[must_use]
    pub fn commit(&mut self, used: NonceUse) -> bool {
        let counter = used.counter;
        if counter < self.base || counter >= self.next_counter {
            return true;
        }
        if !self.usage(counter).allows(used.nc) {
            return false;
        }
        let bit = counter - 64 * (self.base / 64);
        if let Some(w) = self.used.get_mut((bit / 64) as usize) {
            *w |= 1 << (bit % 64);
        }
        match used.nc {
            Some(1) => {
                self.other.remove(&counter);
            }
            Some(nc) => {
                self.other.insert(counter, Usage::Counted(nc));
            }
            None => {
                self.other.insert(counter, Usage::Spent);
            }
        }
        true
    }

    /// Forgets nonces past their lifetime (they are `Stale` from then on without any memory).
    pub fn handle_timeout(&mut self, now: Instant) {
        let now_ms = self.ms_since_epoch(now);
        let lifetime = u64::try_from(self.lifetime.as_millis()).unwrap_or(u64::MAX);
        // Words hold counters in issue order, so the expired ones are at the front.
        while let Some(&last) = self.word_issued.front() {
            if now_ms.saturating_sub(last) <= lifetime {
                break;
            }
            self.pop_word();
        }
    }

    /// When the oldest covered word of nonces expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let last = *self.word_issued.front()?;
        // Strictly after the lifetime, matching `check`.
        self.epoch
            .checked_add(Duration::from_millis(last))?
            .checked_add(self.lifetime)?
            .checked_add(Duration::from_millis(1))
    }

    /// How many of the most recently issued nonces are covered by replay detection (issued and
    /// neither expired nor evicted).
    pub fn tracked(&self) -> usize {
        if self.used.is_empty() {
            return 0;
        }
        usize::try_from(self.next_counter - self.base).unwrap_or(usize::MAX)
    }

    /// Bytes of replay state held (the bitmap, its issue times and the uses beyond nc 1).
    pub fn memory(&self) -> usize {
        self.used.capacity() * 8 + self.word_issued.capacity() * 8 + self.other.len() * 32
    }

    /// The counter and issue time of a nonce we issued, or `None` if it is not one of ours.
    fn decode(&self, nonce: &str) -> Option<(u64, u64)> {
        let mut bytes = [0u8; NONCE_PAYLOAD + NONCE_TAG];
        hex::decode_to_slice(nonce, &mut bytes).ok()?;
        let (payload, tag) = bytes.split_at(NONCE_PAYLOAD);
        let expected = self.mac.sign(payload);
        if !constant_time_eq(&expected[..NONCE_TAG], tag) {
            return None;
        }
        let counter = u64::from_be_bytes(payload[..8].try_into().ok()?);
        let issued_ms = u64::from_be_bytes(payload[8..].try_into().ok()?);
        Some((counter, issued_ms))
    }
}

/// Appends `bytes` in lowercase hex.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

/// HMAC-SHA-256 (RFC 2104) with the key's inner and outer pad blocks hashed once, so each
/// signature of a short message costs two SHA-256 blocks.
#[derive(Clone)]
struct Hmac {
    inner: Sha256,
    outer: Sha256,
}

impl Hmac {
    fn new(key: &[u8]) -> Self {
        const BLOCK: usize = 64;
        let mut block_key = [0u8; BLOCK];
        if key.len() > BLOCK {
            block_key[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block_key[..key.len()].copy_from_slice(key);
        }
        let mut ipad = [0x36u8; BLOCK];
        let mut opad = [0x5cu8; BLOCK];
        for i in 0..BLOCK {
            ipad[i] ^= block_key[i];
            opad[i] ^= block_key[i];
        }
        Self {
            inner: Sha256::new().chain_update(ipad),
            outer: Sha256::new().chain_update(opad),
        }
    }

    fn sign(&self, msg: &[u8]) -> [u8; 32] {
        let inner = self.inner.clone().chain_update(msg).finalize();
        self.outer.clone().chain_update(inner).finalize().into()
    }
}

/// HMAC-SHA-256 (RFC 2104) over `msg`.
#[cfg(test)]
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    Hmac::new(key).sign(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_rfc4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn nonce_state_is_a_bit_per_nonce_and_only_uses_are_recorded() {
        let t0 = Instant::now();
        let lifetime = Duration::from_secs(300);
        let mut m = NonceManager::new([3; 32], lifetime, 4_000_000, t0);
        // 1,000 challenges a second for the whole lifetime, every other nonce used once.
        let mut kept = Vec::new();
        for i in 0..300_000u64 {
            let now = t0 + Duration::from_millis(i);
            let nonce = m.issue(now);
            if i % 2 == 0 {
                let NonceCheck::Valid(u) = m.check(&nonce, Some(1), now) else {
                    panic!("fresh nonce {i} not valid")
                };
                assert!(m.commit(u));
            }
            if i % 20_011 == 0 {
                kept.push((i, nonce));
            }
            if i % 1000 == 0 {
                m.handle_timeout(now);
            }
        }
        // A bit per nonce, plus 8 bytes per 64 (rounded up to a power of two): 300,000 nonces
        // cost about 75 KB where one map entry each would cost tens of MB.
        assert!(m.memory() <= 128 * 1024, "{} bytes", m.memory());
        let now = t0 + Duration::from_millis(300_000 + 5_000);
        m.handle_timeout(now);
        for (i, nonce) in &kept {
            let expected =
                if now.saturating_duration_since(t0 + Duration::from_millis(*i)) > lifetime {
                    NonceCheck::Stale
                } else if i % 2 == 0 {
                    NonceCheck::Replayed
                } else {
                    NonceCheck::Valid(NonceUse {
                        counter: *i,
                        issued_ms: *i,
                        nc: Some(1),
                    })
                };
            assert_eq!(m.check(nonce, Some(1), now), expected, "nonce {i}");
        }
        // Expiry drops whole words of 64 counters; higher counts are kept apart until then.
        let nonce = m.issue(now);
        for nc in [1, 2, 7] {
            let NonceCheck::Valid(u) = m.check(&nonce, Some(nc), now) else {
                panic!("nc {nc}")
            };
            assert!(m.commit(u));
        }
        assert_eq!(m.check(&nonce, Some(7), now), NonceCheck::Replayed);
        assert!(matches!(
            m.check(&nonce, Some(8), now),
            NonceCheck::Valid(_)
        ));
        m.handle_timeout(now + lifetime + Duration::from_secs(1));
        assert_eq!(m.tracked(), 0);
        assert_eq!(m.poll_timeout(), None);
        assert!(m.other.is_empty());
        let later = now + lifetime * 2;
        let fresh = m.issue(later);
        assert!(matches!(
            m.check(&fresh, Some(1), later),
            NonceCheck::Valid(_)
        ));
        assert_eq!(m.tracked(), 1);
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn cursor_never_panics_on_odd_input() {
        for s in [
            "Digest",
            "Digest ,,,",
            "Digest a",
            "Digest a=\"\\",
            "Digest é=é",
            "Digest a=\"é\\é\"",
        ] {
            let _ = Credentials::parse(s);
        }
    }
}
