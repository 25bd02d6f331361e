//! Sample SDPs in the shape real user agents send them (written for these tests; addresses
//! from the RFC 5737 / RFC 3849 documentation ranges), and the shared test data directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `text` with LF line ends turned into CRLF, as user agents send it.
pub(crate) fn crlf(text: &str) -> Vec<u8> {
    text.replace('\n', "\r\n").into_bytes()
}

/// The SDP body of a SIP message file: everything after the first empty line.
pub(crate) fn body_of(message: &[u8]) -> &[u8] {
    let at = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("message has a body");
    &message[at + 4..]
}

/// `shared/testdata` beside the repository, or `$CONFAB_TESTDATA`.
pub(crate) fn testdata_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CONFAB_TESTDATA") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata")
}

/// baresip: session c=, a=tool, telephone-event with fmtp, rtcp-rsize, ssrc.
pub(crate) const BARESIP: &str = "v=0
o=- 1496581920 4021427520 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
a=tool:baresip 3.10.1
m=audio 10794 RTP/AVP 9 0 8 101
b=AS:80
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=label:1
a=ssrc:1402093124 cname:8c4c2b1e-6a11-4ab0-b8f5-0e4c44f1e8d1
a=rtcp-rsize
a=ptime:20
";

/// Linphone: ICE at both levels, a=rtcp (RFC 3605), three telephone-event clocks, rtcp-xr.
pub(crate) const LINPHONE: &str = "v=0
o=alice 3259 2147 IN IP4 198.51.100.7
s=Talk
c=IN IP4 198.51.100.7
t=0 0
a=ice-pwd:31ec21eb38b2ec6d36e8dc7b
a=ice-ufrag:0e2c1c0b
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
a=record:off
m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:97 speex/16000
a=fmtp:97 vbr=on
a=rtpmap:98 speex/8000
a=fmtp:98 vbr=on
a=fmtp:18 annexb=yes
a=rtpmap:101 telephone-event/48000
a=rtpmap:99 telephone-event/16000
a=rtpmap:100 telephone-event/8000
a=rtcp:7079
a=candidate:1 1 UDP 2130706431 198.51.100.7 7078 typ host
a=candidate:1 2 UDP 2130706430 198.51.100.7 7079 typ host
a=candidate:2 1 UDP 1694498815 203.0.113.20 47078 typ srflx raddr 198.51.100.7 rport 7078
a=candidate:2 2 UDP 1694498814 203.0.113.20 47079 typ srflx raddr 198.51.100.7 rport 7079
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:* ccm tmmbr
m=video 9078 RTP/AVP 96 97
a=rtpmap:96 VP8/90000
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=42801F
a=rtcp:9079
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:96 nack pli
a=rtcp-fb:97 nack pli
";

/// PJSIP (pjsua): session b= before t=, media-level c=, a=rtcp with an address, X- attribute.
pub(crate) const PJSIP: &str = "v=0
o=- 3912345678 3912345678 IN IP4 192.0.2.33
s=pjmedia
b=AS:84
t=0 0
a=X-nat:0
m=audio 4000 RTP/AVP 96 9 8 0 101 102
c=IN IP4 192.0.2.33
b=TIAS:64000
a=rtcp:4001 IN IP4 192.0.2.33
a=sendrecv
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:9 G722/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/48000
a=fmtp:101 0-16
a=rtpmap:102 telephone-event/8000
a=fmtp:102 0-16
a=ssrc:1763598414 cname:1f3c0a7d47f36e4b
";

/// Chrome through a SIP-over-WebSocket library: gathered candidates, DTLS, BUNDLE, msid,
/// rtcp-mux, extmap, and an IPv6 host candidate.
pub(crate) const WEBRTC: &str = "v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=extmap-allow-mixed
a=msid-semantic: WMS 7f3c6ae0-1f2b-4c55-9d2e-b1c1b0a1c2d3
m=audio 54321 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 203.0.113.5
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:842163049 1 udp 1677729535 203.0.113.5 54321 typ srflx raddr 10.0.0.5 rport 54321 generation 0 network-cost 999
a=candidate:1467250027 1 udp 2122260223 10.0.0.5 54321 typ host generation 0 network-cost 999
a=candidate:3100940162 1 udp 2122262783 2001:db8::5 54322 typ host generation 0 network-cost 999
a=end-of-candidates
a=ice-ufrag:Zb8x
a=ice-pwd:Xv8r7g1i6mJ3v0JH0gN5bY1h
a=ice-options:trickle
a=fingerprint:sha-256 4C:1A:22:9B:7E:0F:88:11:5D:2C:AB:90:31:6E:47:D2:8A:13:F0:6B:C4:59:2E:77:A1:0D:3B:E5:86:4F:C2:19
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=sendrecv
a=msid:7f3c6ae0-1f2b-4c55-9d2e-b1c1b0a1c2d3 5e1d2c3b-4a59-4687-8d9e-0f1a2b3c4d5e
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:2950363574 cname:Yq1m9tT5yq0dQm3e
a=ssrc:2950363574 msid:7f3c6ae0-1f2b-4c55-9d2e-b1c1b0a1c2d3 5e1d2c3b-4a59-4687-8d9e-0f1a2b3c4d5e
";

/// SIPp's built-in UAC scenario body (after keyword substitution): PCMU only.
pub(crate) const SIPP: &str = "v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
";

/// A re-INVITE putting the call on hold: sendonly.
pub(crate) const HOLD_SENDONLY: &str = "v=0
o=- 1496581920 4021427521 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 10794 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendonly
";

/// RFC 2543-style hold: c=0.0.0.0, no direction attribute.
pub(crate) const HOLD_2543: &str = "v=0
o=- 1496581920 4021427522 IN IP4 192.0.2.10
s=-
c=IN IP4 0.0.0.0
t=0 0
m=audio 10794 RTP/AVP 0
a=rtpmap:0 PCMU/8000
";

/// Every sample that must round-trip byte for byte.
pub(crate) const ALL: &[(&str, &str)] = &[
    ("baresip", BARESIP),
    ("linphone", LINPHONE),
    ("pjsip", PJSIP),
    ("webrtc", WEBRTC),
    ("sipp", SIPP),
    ("hold_sendonly", HOLD_SENDONLY),
    ("hold_2543", HOLD_2543),
];
