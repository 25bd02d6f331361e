//! Call records and summaries: what the call core reports about calls for the call log, the
//! API and the admin tools.

use std::fmt;

use super::media::MediaStats;

/// Where a call attempt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallState {
    /// Devices are being alerted.
    Ringing,
    /// Answered; media flows.
    Active,
    Ended,
}

impl CallState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ringing => "ringing",
            Self::Active => "active",
            Self::Ended => "ended",
        }
    }
}

/// How a call attempt ended, for the call log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Disposition {
    /// A device answered (whatever happened after).
    Answered,
    /// Every device was busy (486, 600).
    Busy,
    /// Nobody answered in time, or the callee had no reachable device (480, 408).
    NoAnswer,
    /// The caller hung up before an answer.
    Cancelled,
    /// The callee declined or refused (603, 403, other 4xx–6xx from the devices).
    Rejected,
    /// The call could not be placed: unknown user, bad SDP, no media ports, loop, server error.
    Failed,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Busy => "busy",
            Self::NoAnswer => "no_answer",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }

    /// The disposition of an unanswered call whose caller got `status`.
    pub fn of_status(status: u16) -> Self {
        match status {
            200..=299 => Self::Answered,
            486 | 600 => Self::Busy,
            408 | 480 => Self::NoAnswer,
            487 => Self::Cancelled,
            404 | 482 | 483 | 484 | 488 | 500..=599 => Self::Failed,
            _ => Self::Rejected,
        }
    }
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndReason {
    /// The caller sent BYE.
    CallerHangup,
    /// The callee sent BYE.
    CalleeHangup,
    /// The caller sent CANCEL (or BYE on the early dialog) before an answer.
    CallerCancelled,
    /// Every device answered with a failure (see the record's final status).
    Rejected,
    /// The no-answer timeout expired.
    NoAnswer,
    /// The call was refused before ringing (unknown user, nobody registered, bad SDP...).
    NotRouted,
    /// Our 2xx was never acknowledged (RFC 3261 §13.3.1.4: 64*T1).
    AckTimeout,
    /// A session timer expired without a refresh (RFC 4028 §10).
    SessionExpired,
    /// No media from either side for the media timeout.
    MediaTimeout,
    /// A leg reported the dialog gone (481/408) or a request to it timed out.
    LegFailed,
    /// A leg sent an unusable SDP after the answer.
    BadSdp,
    /// Ended by the server (shutdown, admin).
    Server,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CallerHangup => "caller_hangup",
            Self::CalleeHangup => "callee_hangup",
            Self::CallerCancelled => "caller_cancelled",
            Self::Rejected => "rejected",
            Self::NoAnswer => "no_answer",
            Self::NotRouted => "not_routed",
            Self::AckTimeout => "ack_timeout",
            Self::SessionExpired => "session_expired",
            Self::MediaTimeout => "media_timeout",
            Self::LegFailed => "leg_failed",
            Self::BadSdp => "bad_sdp",
            Self::Server => "server",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One snapshot of a call attempt for the call log.
///
/// A call produces a snapshot when it starts ringing, when it is answered and when it ends
/// (a call refused before ringing produces only the last); all share `id`, so the store upserts
/// by `id` and the last snapshot wins. Drained with [`crate::Endpoint::drain_call_records`].
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// Unique per call attempt (also in the tracing span `call`).
    pub id: String,
    /// The authenticated calling user.
    pub caller: String,
    /// The calling device: its address (`transport:ip:port`) and User-Agent, if any.
    pub caller_device: String,
    /// The Request-URI as dialled.
    pub callee_dialled: String,
    /// The called user, once resolved.
    pub callee: Option<String>,
    /// Contact URIs of the devices alerted.
    pub devices_tried: Vec<String>,
    /// Contact URI of the device that answered.
    pub answered_by: Option<String>,
    pub start_unix_ms: u64,
    pub answer_unix_ms: Option<u64>,
    pub end_unix_ms: Option<u64>,
    pub state: CallState,
    /// Set once the call ended.
    pub disposition: Option<Disposition>,
    /// The final status the caller got for its INVITE.
    pub final_status: Option<u16>,
    pub end_reason: Option<EndReason>,
    /// Relay statistics at the end, when media was anchored.
    pub media: Option<MediaStats>,
    /// The caller's SIP Call-ID (leg A), for correlating with phone logs.
    pub sip_call_id: String,
}

/// A live call, for [`crate::Endpoint::active_calls`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSummary {
    pub id: String,
    pub caller: String,
    pub callee_dialled: String,
    pub callee: Option<String>,
    pub state: CallState,
    pub start_unix_ms: u64,
    pub answer_unix_ms: Option<u64>,
    /// Devices still ringing (0 once answered).
    pub ringing_devices: usize,
    pub answered_by: Option<String>,
}
