//! SIP messages read back from a phone's trace (baresip `-s`), and the SDP in them.

use crate::common::SipMsg;

/// One message from a SIP trace.
#[derive(Clone, Debug)]
pub struct Traced {
    /// `UDP`, `TCP`, `TLS`.
    pub proto: String,
    pub src: String,
    pub dst: String,
    pub msg: SipMsg,
}

impl Traced {
    /// A one-line description for failure messages.
    pub fn line(&self) -> String {
        format!(
            "{} {} -> {}: {}",
            self.proto, self.src, self.dst, self.msg.start_line
        )
    }
}

/// Parses baresip's SIP trace: each message is printed as
/// `ESC[36;1m#\n<PROTO> <src> -> <dst>\n<message>\nESC[;m`.
pub fn parse_baresip_trace(log: &str) -> Vec<Traced> {
    let mut out = Vec::new();
    let mut rest = log;
    while let Some(i) = rest.find("#\n") {
        rest = &rest[i + 2..];
        let Some(nl) = rest.find('\n') else { break };
        let header = &rest[..nl];
        let parts: Vec<&str> = header.split_whitespace().collect();
        if parts.len() != 4 || parts[2] != "->" {
            continue;
        }
        let body_start = nl + 1;
        let end = rest[body_start..]
            .find("\x1b[;m")
            .map_or(rest.len(), |e| body_start + e);
        // The message is printed as sent, CRLFs and all, with the colour reset right after it.
        let text = &rest[body_start..end];
        if let Some((msg, _)) = SipMsg::parse(text.as_bytes(), true) {
            out.push(Traced {
                proto: parts[0].to_string(),
                src: parts[1].to_string(),
                dst: parts[3].to_string(),
                msg,
            });
        }
        rest = &rest[end..];
    }
    out
}

/// The media description of an SDP body, enough for the relay checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SdpSummary {
    /// The session-level or first media-level `c=` address.
    pub connection: Option<String>,
    /// The first `m=audio` port.
    pub audio_port: Option<u16>,
    /// `sendrecv`, `sendonly`, `recvonly` or `inactive` of the audio stream (session level when
    /// the media level has none); `None` when neither says (which means sendrecv).
    pub direction: Option<String>,
}

/// Reads `c=`, `m=audio` and the direction attribute of an SDP body.
pub fn sdp_summary(body: &[u8]) -> Option<SdpSummary> {
    let text = String::from_utf8_lossy(body);
    if !text.contains("m=") {
        return None;
    }
    let mut s = SdpSummary::default();
    let (mut in_audio, mut seen_media) = (false, false);
    let (mut session_dir, mut audio_dir) = (None, None);
    for line in text.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            seen_media = true;
            in_audio = m.starts_with("audio");
            if in_audio && s.audio_port.is_none() {
                s.audio_port = m.split_whitespace().nth(1).and_then(|p| p.parse().ok());
            }
        } else if let Some(c) = line.strip_prefix("c=") {
            if s.connection.is_none() && (!seen_media || in_audio) {
                s.connection = c
                    .split_whitespace()
                    .nth(2)
                    .map(|a| a.split('/').next().unwrap_or(a).to_string());
            }
        } else if let Some(a) = line.strip_prefix("a=") {
            if matches!(a, "sendrecv" | "sendonly" | "recvonly" | "inactive") {
                if !seen_media {
                    session_dir = Some(a.to_string());
                } else if in_audio {
                    audio_dir = Some(a.to_string());
                }
            }
        }
    }
    s.direction = audio_dir.or(session_dir);
    Some(s)
}
