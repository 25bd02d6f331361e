//! Bad SDP is refused with a reason that can go into a 488 reason phrase.

mod common;

use common::{crlf, SIPP};
use confab_sdp::{SdpError, SessionDescription, MAX_LINES, MAX_MEDIA};

fn err(text: &str) -> SdpError {
    SessionDescription::parse(&crlf(text)).expect_err("must be refused")
}

const HEAD: &str = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n";

#[test]
fn reasons() {
    let cases: &[(&str, &str)] = &[
        ("", "Empty SDP"),
        ("\r\n\r\n", "Empty SDP"),
        ("hello world", "Bad line 1"),
        ("o=- 1 1 IN IP4 192.0.2.1\nv=0\n", "Missing v= line"),
        ("v=1\no=- 1 1 IN IP4 192.0.2.1\n", "Unsupported SDP version"),
        ("v=0\ns=-\n", "Missing o= line"),
        ("v=0\no=- 1 IN IP4 192.0.2.1\n", "Bad o= line (line 2)"),
        ("v=0\no=- 1 x IN IP4 192.0.2.1\n", "Bad o= line (line 2)"),
        ("v=0\no=- 1 +1 IN IP4 192.0.2.1\n", "Bad o= line (line 2)"),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\no=- 1 1 IN IP4 192.0.2.1\n",
            "Duplicate o= line (line 3)",
        ),
        ("v=0\nv=0\n", "Duplicate v= line (line 2)"),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\nc=IN IP4\n",
            "Bad c= line (line 3)",
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\nb=AS\n",
            "Bad b= line (line 3)",
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\nt=now\n",
            "Bad t= line (line 3)",
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\nr=7d 1h 0 25h\n",
            "Bad r= line (line 3)",
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\na=\n",
            "Bad a= line (line 3)",
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\na=:x\n",
            "Bad a= line (line 3)",
        ),
        ("v=0\no=- 1 1 IN IP4 192.0.2.1\nv =0\n", "Bad line 3"),
        ("v=0\no=- 1 1 IN IP4 192.0.2.1\n a=x\n", "Bad line 3"),
        ("v=0\no=- 1 1 IN IP4 192.0.2.1\n1=x\n", "Bad line 3"),
        ("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=a\rb\n", "Bad line 3"),
        ("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=a\0b\n", "Bad line 3"),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\nm=audio 4000 RTP/AVP 0\n",
            "Missing c= for media 0",
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\nm=audio 0 RTP/AVP 0\nm=audio 4000 RTP/AVP 0\n",
            "Missing c= for media 1",
        ),
    ];
    for (text, reason) in cases {
        assert_eq!(err(text).to_string(), *reason, "{text:?}");
    }
    let media_cases: &[(&str, &str)] = &[
        ("m=audio\n", "Bad m= line (line 6)"),
        ("m=audio 4000\n", "Bad m= line (line 6)"),
        ("m=audio 4000 RTP/AVP\n", "Bad m= line (line 6)"),
        ("m=audio 70000 RTP/AVP 0\n", "Bad m= line (line 6)"),
        ("m=audio -1 RTP/AVP 0\n", "Bad m= line (line 6)"),
        ("m=audio 4000/x RTP/AVP 0\n", "Bad m= line (line 6)"),
        ("m=audio 4000 RTP/AVP 128\n", "Bad m= line (line 6)"),
        ("m=audio 4000 RTP/AVP PCMU\n", "Bad m= line (line 6)"),
        (
            "m=audio 4000 RTP/AVP 0\no=- 1 1 IN IP4 192.0.2.1\n",
            "Unexpected o= line in media 0",
        ),
        (
            "m=audio 4000 RTP/AVP 0\nt=0 0\n",
            "Unexpected t= line in media 0",
        ),
        ("m=audio 4000 RTP/AVP 0\nc=IN\n", "Bad c= line (line 7)"),
    ];
    for (tail, reason) in media_cases {
        assert_eq!(
            err(&format!("{HEAD}{tail}")).to_string(),
            *reason,
            "{tail:?}"
        );
    }
}

#[test]
fn reasons_are_fit_for_a_reason_phrase() {
    let e = err("hello");
    assert_eq!(e.status(), 488);
    assert!(e.is_malformed());
    assert!(!e.to_string().contains(['\r', '\n']));
}

#[test]
fn not_utf8() {
    let mut bytes = crlf(SIPP);
    bytes.extend_from_slice(b"s=\xff\xfe\r\n");
    assert_eq!(SessionDescription::parse(&bytes), Err(SdpError::NotUtf8));
}

#[test]
fn bounds() {
    let mut many = String::from(HEAD);
    for _ in 0..MAX_LINES {
        many.push_str("a=x\n");
    }
    assert_eq!(err(&many), SdpError::TooManyLines);

    let mut media = String::from(HEAD);
    for _ in 0..=MAX_MEDIA {
        media.push_str("m=audio 0 RTP/AVP 0\n");
    }
    assert_eq!(err(&media), SdpError::TooManyMedia);
    // Exactly MAX_MEDIA is fine.
    let ok = media.replacen("m=audio 0 RTP/AVP 0\n", "", 1);
    assert_eq!(
        SessionDescription::parse(ok.as_bytes())
            .unwrap()
            .media
            .len(),
        MAX_MEDIA
    );

    let huge = format!("{HEAD}s={}\n", "x".repeat(confab_sdp::MAX_BYTES));
    assert_eq!(
        SessionDescription::parse(huge.as_bytes()),
        Err(SdpError::TooLarge)
    );
}

#[test]
fn disabled_stream_may_lack_formats_and_connection() {
    // RFC 3264 §6 wants one format even on a rejected stream; some UAs send none.
    let sdp = SessionDescription::parse(
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=video 0 RTP/AVP\r\n",
    )
    .unwrap();
    assert!(sdp.media[0].formats.is_empty());
    assert_eq!(sdp.media_connection(0), None);
}
