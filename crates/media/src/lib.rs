//! Confab's media plane: the RTP/RTCP relay that anchors call media.
//!
//! Confab rewrites SDP so that each phone sends RTP and RTCP to a port pair of this relay; the
//! relay forwards every datagram unchanged to the other phone (RFC 4733 telephone-event and
//! multiplexed RTCP included), latches to where packets really come from (symmetric RTP, for
//! phones behind NAT) and keeps per-call statistics: packets, bytes, loss and jitter as measured
//! at the relay (RFC 3550 A.1, A.8) and as the phones report them in RTCP.
//!
//! Two layers, as elsewhere in Confab:
//! - [`relay`]: the sans-IO state of one session ([`RelaySession`]). Datagrams, their sources
//!   and the instant they were read are inputs; the verdict (forward where, or drop why) is the
//!   output. No clock, no socket, no allocation per packet.
//! - [`MediaEngine`]: worker threads, each an epoll loop over the sockets of its sessions, with
//!   batched `recvmmsg`/`sendmmsg` and no task, lock or allocation per packet. The call core
//!   drives it through a small synchronous API (allocate, set the SDP address, statistics,
//!   release); a [`MediaSession`] guard releases its ports however the call ends. Released
//!   port pairs are parked (sockets kept bound and polled, what reaches them discarded) and
//!   reused by later sessions once they have cooled ([`MediaConfig::park_cooling`]), which
//!   spares a call the kernel's socket set-up and tear-down.
//!
//! What this crate does not do (yet): transcoding, SRTP/DTLS, mixing, recording; it never
//! rewrites a packet.
//!
//! Linux only (epoll, eventfd, recvmmsg).

mod engine;
mod error;
mod pool;
pub mod relay;
pub mod rtp;
mod stats;
mod sys;
mod worker;

pub use engine::{
    MediaConfig, MediaEngine, MediaSession, PendingRelease, SessionId, COALESCE_MIN_PACKETS,
};
pub use error::Error;
pub use relay::{
    Channel, Counter, DropCounters, DropReason, LatchConfig, Leg, LegStats, PayloadKind,
    ReceptionReport, RelaySession, RemoteMedia, SessionStats, Verdict,
};
