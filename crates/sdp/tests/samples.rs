//! Real-world SDPs: byte-for-byte round trips and the answers the B2BUA reads from them.

mod common;

use std::net::SocketAddr;

use common::{crlf, ALL, BARESIP, HOLD_2543, HOLD_SENDONLY, LINPHONE, PJSIP, SIPP, WEBRTC};
use confab_sdp::{Codec, Direction, SessionDescription};

fn parse(text: &str) -> SessionDescription {
    SessionDescription::parse(&crlf(text)).expect("sample parses")
}

fn addr(s: &str) -> Option<SocketAddr> {
    Some(s.parse().expect("test address"))
}

#[test]
fn samples_round_trip_byte_for_byte() {
    for (name, text) in ALL {
        let bytes = crlf(text);
        let sdp = SessionDescription::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            String::from_utf8(sdp.to_bytes()).unwrap(),
            String::from_utf8(bytes).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn bare_lf_parses_like_crlf() {
    for (name, text) in ALL {
        let lf =
            SessionDescription::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(lf, parse(text), "{name}");
        assert_eq!(lf.to_bytes(), crlf(text), "{name}: output uses CRLF");
    }
}

#[test]
fn baresip_queries() {
    let sdp = parse(BARESIP);
    assert_eq!(sdp.origin.session_version, 4021427520);
    assert_eq!(sdp.media_connection(0), addr("192.0.2.10:10794"));
    assert_eq!(sdp.rtcp_address(0), addr("192.0.2.10:10795"));
    assert_eq!(sdp.direction(0), Direction::SendRecv);
    assert!(!sdp.legacy_hold(0));
    let codecs = sdp.codecs(0);
    let names: Vec<_> = codecs
        .iter()
        .map(|c| (c.payload_type, c.name.as_str(), c.clock_rate))
        .collect();
    assert_eq!(
        names,
        [
            (9, "G722", 8000),
            (0, "PCMU", 8000),
            (8, "PCMA", 8000),
            (101, "telephone-event", 8000)
        ]
    );
    assert_eq!(codecs[3].fmtp.as_deref(), Some("0-15"));
    assert_eq!(
        sdp.attribute("tool").and_then(|a| a.value.as_deref()),
        Some("baresip 3.10.1")
    );
    assert_eq!(sdp.media[0].bandwidths, ["AS:80"]);
    // Out of range: nothing, never a panic.
    assert_eq!(sdp.media_connection(1), None);
    assert_eq!(sdp.rtcp_address(7), None);
    assert!(sdp.codecs(1).is_empty());
    assert_eq!(sdp.direction(5), Direction::SendRecv);
}

#[test]
fn linphone_rfc3605_rtcp_and_channels() {
    let sdp = parse(LINPHONE);
    assert_eq!(sdp.media_connection(0), addr("198.51.100.7:7078"));
    assert_eq!(sdp.rtcp_address(0), addr("198.51.100.7:7079"));
    assert_eq!(sdp.media_connection(1), addr("198.51.100.7:9078"));
    let audio = sdp.codecs(0);
    assert_eq!(
        audio[0],
        Codec {
            payload_type: 96,
            name: "opus".into(),
            clock_rate: 48000,
            channels: Some(2),
            fmtp: Some("useinbandfec=1".into())
        }
    );
    // G.729 is static: named from RFC 3551 with its fmtp kept.
    let g729 = audio.iter().find(|c| c.payload_type == 18).unwrap();
    assert_eq!(
        (g729.name.as_str(), g729.clock_rate, g729.fmtp.as_deref()),
        ("G729", 8000, Some("annexb=yes"))
    );
    let events: Vec<_> = audio
        .iter()
        .filter(|c| c.name == "telephone-event")
        .map(|c| c.clock_rate)
        .collect();
    assert_eq!(events, [48000, 16000, 8000]);
    assert_eq!(
        sdp.codecs(1)[1].fmtp.as_deref(),
        Some("profile-level-id=42801F")
    );
}

#[test]
fn pjsip_media_level_connection_and_rtcp_address() {
    let sdp = parse(PJSIP);
    assert!(sdp.connection.is_none());
    assert_eq!(sdp.media_connection(0), addr("192.0.2.33:4000"));
    assert_eq!(sdp.rtcp_address(0), addr("192.0.2.33:4001"));
    assert_eq!(sdp.bandwidths, ["AS:84"]);
    assert_eq!(sdp.media[0].bandwidths, ["TIAS:64000"]);
    assert_eq!(
        sdp.attribute("x-nat").and_then(|a| a.value.as_deref()),
        Some("0")
    );
}

#[test]
fn webrtc_offer() {
    let sdp = parse(WEBRTC);
    let m = &sdp.media[0];
    assert_eq!(m.proto, "UDP/TLS/RTP/SAVPF");
    assert!(m.is_rtp());
    assert!(m.has_attribute("rtcp-mux"));
    assert_eq!(sdp.media_connection(0), addr("203.0.113.5:54321"));
    // a=rtcp:9 IN IP4 0.0.0.0 is Chrome's placeholder: no usable RTCP address.
    assert_eq!(sdp.rtcp_address(0), None);
    // 0.0.0.0 in a=rtcp, not in c=, and ICE is in use: not a hold.
    assert!(!sdp.legacy_hold(0));
    assert_eq!(
        sdp.attribute("msid-semantic")
            .and_then(|a| a.value.as_deref()),
        Some(" WMS 7f3c6ae0-1f2b-4c55-9d2e-b1c1b0a1c2d3")
    );
    let codecs = sdp.codecs(0);
    assert_eq!(codecs.len(), 8);
    assert_eq!(codecs[1].fmtp.as_deref(), Some("111/111"));
}

#[test]
fn webrtc_trickle_placeholder_is_not_a_hold() {
    let text = WEBRTC
        .replace("c=IN IP4 203.0.113.5", "c=IN IP4 0.0.0.0")
        .replace("m=audio 54321", "m=audio 9");
    let sdp = parse(&text);
    assert!(!sdp.legacy_hold(0));
    assert_eq!(sdp.media_connection(0), None);
}

#[test]
fn sipp_default() {
    let sdp = parse(SIPP);
    assert_eq!(sdp.media_connection(0), addr("127.0.0.1:6000"));
    assert_eq!(sdp.codecs(0).len(), 1);
}

#[test]
fn held_calls() {
    let sendonly = parse(HOLD_SENDONLY);
    assert_eq!(sendonly.direction(0), Direction::SendOnly);
    assert_eq!(sendonly.direction(0).reversed(), Direction::RecvOnly);
    assert!(!sendonly.legacy_hold(0));
    assert_eq!(sendonly.media_connection(0), addr("192.0.2.10:10794"));

    let old = parse(HOLD_2543);
    assert_eq!(
        old.direction(0),
        Direction::SendRecv,
        "no attribute: sendrecv, the flag tells hold"
    );
    assert!(old.legacy_hold(0));
    assert_eq!(old.media_connection(0), None);
    assert_eq!(old.rtcp_address(0), None);

    // Session-level direction applies unless the media says otherwise (RFC 3264 §5.1).
    let text = SIPP.replace("t=0 0\n", "t=0 0\na=inactive\n");
    assert_eq!(parse(&text).direction(0), Direction::Inactive);
    let text = text.replace(
        "a=rtpmap:0 PCMU/8000\n",
        "a=rtpmap:0 PCMU/8000\na=recvonly\n",
    );
    assert_eq!(parse(&text).direction(0), Direction::RecvOnly);
}

#[test]
fn static_payload_types_without_rtpmap() {
    let sdp = parse("v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 5004 RTP/AVP 0 3 8 9 18 13 96\n");
    let got: Vec<_> = sdp
        .codecs(0)
        .into_iter()
        .map(|c| (c.payload_type, c.name, c.clock_rate))
        .collect();
    let want: Vec<(u8, String, u32)> = [
        (0, "PCMU", 8000),
        (3, "GSM", 8000),
        (8, "PCMA", 8000),
        (9, "G722", 8000),
        (18, "G729", 8000),
        (13, "CN", 8000),
        (96, "", 0),
    ]
    .into_iter()
    .map(|(p, n, r)| (p, n.to_owned(), r))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn unknown_lines_and_order_are_kept() {
    // i=, u=, e=, p= before c=; z=, k= after t=; an unknown y= (GB28181) after the attributes;
    // r= stays with its t=; the media section keeps i= and k=.
    let text = "v=0
o=- 7 7 IN IP4 192.0.2.1
s=Seminar
i=A seminar
u=http://www.example.com/seminars/sdp.pdf
e=j.doe@example.com (Jane Doe)
p=+1 617 555-6011
c=IN IP4 192.0.2.1
b=CT:128
t=2873397496 2873404696
r=7d 1h 0 25h
t=0 0
z=2882844526 -1h 2898848070 0
k=prompt
a=recvonly
y=0100000001
m=audio 49170 RTP/AVP 0
i=main audio
c=IN IP4 192.0.2.2
b=AS:64
k=prompt
a=rtpmap:0 PCMU/8000
f=v/2/25
";
    let sdp = parse(text);
    assert_eq!(sdp.times.len(), 2);
    assert_eq!(sdp.times[0].repeats, ["7d 1h 0 25h"]);
    assert_eq!(sdp.to_bytes(), crlf(text));
    assert_eq!(sdp.media_connection(0), addr("192.0.2.2:49170"));

    // Out-of-order session lines are accepted and written in RFC 8866 order.
    let shuffled = "v=0\no=- 7 7 IN IP4 192.0.2.1\ns=-\na=recvonly\nk=prompt\nt=0 0\ni=info\nc=IN IP4 192.0.2.1\nm=audio 1 RTP/AVP 0\n";
    let sdp = parse(shuffled);
    let again = SessionDescription::parse(&sdp.to_bytes()).unwrap();
    assert_eq!(again, sdp);
    assert_eq!(
        String::from_utf8(sdp.to_bytes()).unwrap(),
        "v=0\r\no=- 7 7 IN IP4 192.0.2.1\r\ns=-\r\ni=info\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nk=prompt\r\na=recvonly\r\nm=audio 1 RTP/AVP 0\r\n"
    );
}

#[test]
fn lenient_on_missing_s_and_t_and_blank_lines() {
    let sdp = parse(
        "v=0\n\no=- 1 1 IN IP4 192.0.2.1\nc=IN IP4 192.0.2.1\n\nm=audio 4000 RTP/AVP 0\n\n\n",
    );
    assert_eq!(sdp.session_name, "-");
    assert_eq!(sdp.times[0].value, "0 0");
    assert_eq!(SessionDescription::parse(&sdp.to_bytes()).unwrap(), sdp);
}

#[test]
fn non_rtp_media() {
    let text = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=image 30000 udptl t38\na=T38FaxVersion:0\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\na=sctp-port:5000\n";
    let sdp = parse(text);
    assert!(!sdp.media[0].is_rtp());
    assert!(sdp.codecs(0).is_empty());
    assert_eq!(sdp.media[1].formats, ["webrtc-datachannel"]);
    assert_eq!(sdp.to_bytes(), crlf(text));
}

#[test]
fn port_count_and_multicast() {
    let text = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 233.252.0.1/127\nt=0 0\nm=video 49170/2 RTP/AVP 31\n";
    let sdp = parse(text);
    assert_eq!(sdp.media[0].port_count, Some(2));
    assert!(sdp.media_connection(0).unwrap().ip().is_multicast());
    assert_eq!(sdp.to_bytes(), crlf(text));
}
