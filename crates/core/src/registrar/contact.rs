//! Small strict parsers for the Contact parameters a registrar reads (`q`, `expires`,
//! `+sip.instance`, `reg-id`), URI equivalence for re-registration, and the escaping needed to
//! build a public GRUU.

use confab_sip::{Host, SipUri, Uri};

/// Longest `+sip.instance` value kept (RFC 5626 instance IDs are URNs of about 50 characters).
pub(crate) const MAX_INSTANCE_LEN: usize = 256;

/// RFC 3261 §25.1 `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
///
/// Strict: no sign, no whitespace, no exponent, at most three decimals, never above 1.
pub(crate) fn parse_q(s: &str) -> Option<u16> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut milli: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        milli += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(milli),
        "1" if milli == 0 => Some(1000),
        _ => None,
    }
}

/// Formats thousandths as the shortest qvalue: 1000 → "1", 500 → "0.5", 25 → "0.025".
pub(crate) fn format_q(milli: u16) -> String {
    if milli >= 1000 {
        return "1".to_owned();
    }
    let mut s = format!("0.{milli:03}");
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// RFC 3261 §25.1 `delta-seconds = 1*DIGIT`; values past `u32::MAX` saturate (they are clamped
/// to the registrar maximum anyway). `None` when not all digits.
pub(crate) fn parse_delta_seconds(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: u32 = 0;
    for b in s.bytes() {
        v = v.saturating_mul(10).saturating_add(u32::from(b - b'0'));
    }
    Some(v)
}

/// RFC 5626 §4.1 `reg-id = 1*DIGIT ; 1 to (2^31 - 1)`.
pub(crate) fn parse_reg_id(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: u64 = s.parse().ok()?;
    (1..=0x7fff_ffff).contains(&v).then_some(v as u32)
}

/// The `+sip.instance` value without its surrounding quotes (RFC 5626 §4.1 writes it
/// `"<urn:uuid:...>"`). `None` when empty, too long, or containing quotes or backslashes.
pub(crate) fn parse_instance(raw: &str) -> Option<&str> {
    let v = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw);
    let ok = !v.is_empty()
        && v.len() <= MAX_INSTANCE_LEN
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    ok.then_some(v)
}

/// The GRUU `gr` parameter value of an instance ID: the URN without its angle brackets
/// (RFC 5627 §3.1).
pub(crate) fn gr_of_instance(instance: &str) -> &str {
    instance
        .strip_prefix('<')
        .and_then(|r| r.strip_suffix('>'))
        .unwrap_or(instance)
}

/// What two Contact URIs must share to name the same binding on re-registration: a subset of
/// RFC 3261 §19.1.4 (scheme, decoded user, host — already lower-cased by the parser — port,
/// and the `transport`, `maddr` and `user` parameters, lower-cased). Other URI parameters
/// (e.g. push-notification parameters that change between registrations) do not matter.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct UriKey {
    secure: bool,
    user: Option<String>,
    host: Host,
    port: Option<u16>,
    transport: Option<String>,
    maddr: Option<String>,
    user_param: Option<String>,
}

impl UriKey {
    pub(crate) fn of(uri: &SipUri) -> Self {
        let lower = |name: &str| {
            uri.params
                .get(name)
                .flatten()
                .map(|v| v.to_ascii_lowercase())
        };
        Self {
            secure: uri.secure,
            user: uri.user_unescaped(),
            host: normalise_host(&uri.host),
            port: uri.port,
            transport: uri.transport_param(),
            maddr: lower("maddr"),
            user_param: lower("user"),
        }
    }

    /// Parses a stored Contact URI; `None` if it is not a SIP/SIPS URI (never stored so).
    pub(crate) fn of_stored(contact: &str) -> Option<Self> {
        match Uri::parse(contact).ok()? {
            Uri::Sip(u) => Some(Self::of(&u)),
            _ => None,
        }
    }
}

fn normalise_host(host: &Host) -> Host {
    match host {
        Host::Domain(d) => Host::Domain(d.to_ascii_lowercase()),
        other => other.clone(),
    }
}

/// RFC 3261 §25.1 `user`: unreserved / escaped / user-unreserved; everything else %-escaped.
pub(crate) fn escape_user(user: &str) -> String {
    escape(user, |b| b"-_.!~*'()&=+$,;?/".contains(&b))
}

/// RFC 3261 §25.1 `paramchar`: param-unreserved / unreserved / escaped.
pub(crate) fn escape_param(value: &str) -> String {
    escape(value, |b| b"[]/:&+$-_.!~*'()".contains(&b))
}

fn escape(s: &str, extra: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || extra(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Decodes %-escapes; malformed escapes are kept literally.
pub(crate) fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_values_strict() {
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("0."), Some(0));
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("0.05"), Some(50));
        assert_eq!(parse_q("0.123"), Some(123));
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.0"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        for bad in [
            "", ".5", "1.001", "1.5", "2", "0.1234", "-0.5", "+0.5", "0,5", " 0.5", "0.5 ", "01",
            "0x1", "1e0",
        ] {
            assert_eq!(parse_q(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn q_formatting() {
        assert_eq!(format_q(1000), "1");
        assert_eq!(format_q(500), "0.5");
        assert_eq!(format_q(25), "0.025");
        assert_eq!(format_q(0), "0");
        assert_eq!(format_q(120), "0.12");
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(parse_delta_seconds("0"), Some(0));
        assert_eq!(parse_delta_seconds("3600"), Some(3600));
        assert_eq!(parse_delta_seconds("99999999999999"), Some(u32::MAX));
        assert_eq!(parse_delta_seconds(""), None);
        assert_eq!(parse_delta_seconds("-1"), None);
        assert_eq!(parse_delta_seconds("36 00"), None);
    }

    #[test]
    fn reg_ids() {
        assert_eq!(parse_reg_id("1"), Some(1));
        assert_eq!(parse_reg_id("2147483647"), Some(0x7fff_ffff));
        assert_eq!(parse_reg_id("2147483648"), None);
        assert_eq!(parse_reg_id("0"), None);
        assert_eq!(parse_reg_id("x"), None);
        assert_eq!(parse_reg_id("99999999999"), None);
    }

    #[test]
    fn instances() {
        assert_eq!(parse_instance("\"<urn:uuid:abc>\""), Some("<urn:uuid:abc>"));
        assert_eq!(parse_instance("<urn:uuid:abc>"), Some("<urn:uuid:abc>"));
        assert_eq!(parse_instance("\"\""), None);
        assert_eq!(parse_instance("\"a\\\"b\""), None);
        assert_eq!(parse_instance(&"x".repeat(300)), None);
        assert_eq!(gr_of_instance("<urn:uuid:abc>"), "urn:uuid:abc");
        assert_eq!(gr_of_instance("urn:uuid:abc"), "urn:uuid:abc");
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_user("alice"), "alice");
        assert_eq!(escape_user("a b@c"), "a%20b%40c");
        assert_eq!(
            escape_param("urn:uuid:f81d4fae-7dec"),
            "urn:uuid:f81d4fae-7dec"
        );
        assert_eq!(escape_param("a\"b;c"), "a%22b%3Bc");
        assert_eq!(unescape("a%22b%3bc"), b"a\"b;c");
        assert_eq!(unescape("100%"), b"100%");
        assert_eq!(unescape("%4"), b"%4");
        assert_eq!(unescape("%zz"), b"%zz");
    }
}
