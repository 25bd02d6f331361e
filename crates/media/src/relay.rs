//! The sans-IO relay state of one session: two legs, symmetric latching, statistics.
//!
//! A session joins leg A (the caller's side) and leg B (the callee's side). Each leg has an RTP
//! and an RTCP port on the relay; a datagram read on leg A's port is sent out of leg B's port of
//! the same kind, to leg B's phone, and the other way round. Nothing here reads a clock or
//! touches a socket: [`RelaySession::handle_packet`] takes the datagram, its source and the
//! instant it was read, and returns where to send it. It allocates nothing and never panics on
//! any input.
//!
//! # Latching (symmetric RTP)
//! A phone behind NAT announces an address in SDP that is not where its packets come from. So
//! each leg's destination is first the SDP address, then the source of the first valid packet
//! that phone sends ("latching"), since that is the only address the NAT lets back in.
//! After latching, packets from any other source are dropped (an injection on a known relay port
//! must not take the call over: the "RTP bleed" class of attacks), except that a new source
//! takes over (re-latches) when
//! - it is exactly the address the SDP names (signalling is authenticated; packets are not);
//! - the latched source has sent nothing valid for [`LatchConfig::relatch_after_silence`], as when
//!   a NAT rebinds the phone's mapping to a new port;
//! - with [`LatchConfig::relatch_on_same_ssrc`], its RTP carries the SSRC of the latched stream
//!   (a rebinding NAT keeps the SSRC; a stranger must first learn it).
//!
//! RTP and RTCP latch separately: a NAT maps the two ports independently.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::rtp::{self, ReportBlocks, RtpHeader};
use crate::stats::{self, JitterEstimator, SequenceTracker};

/// One side of a relayed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Leg {
    A,
    B,
}

impl Leg {
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Which of a leg's two relay ports a datagram arrived on (RTCP = RTP port + 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    Rtp,
    Rtcp,
}

/// What a payload type carries, from the SDP `a=rtpmap` lines (RFC 4566 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PayloadKind {
    /// Audio sampled at this RTP clock rate: used for the jitter estimate.
    Audio { clock_rate: u32 },
    /// RFC 4733 telephone-event: forwarded as is, counted, kept out of the jitter estimate
    /// (an event's packets repeat its start timestamp).
    TelephoneEvent,
    /// Anything else: forwarded, not used for jitter.
    Other,
}

/// Where a leg's phone said, in SDP, that it receives media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteMedia {
    pub rtp: SocketAddr,
    /// From `a=rtcp` (RFC 3605); when absent, RTP port + 1 (RFC 3550 §11).
    pub rtcp: Option<SocketAddr>,
    /// Dynamic payload types from `a=rtpmap`; static ones (RFC 3551 §6) are known already.
    pub payloads: Vec<(u8, PayloadKind)>,
}

impl RemoteMedia {
    pub fn new(rtp: SocketAddr) -> Self {
        Self {
            rtp,
            rtcp: None,
            payloads: Vec::new(),
        }
    }

    pub fn with_rtcp(mut self, rtcp: SocketAddr) -> Self {
        self.rtcp = Some(rtcp);
        self
    }

    pub fn with_payload(mut self, payload_type: u8, kind: PayloadKind) -> Self {
        self.payloads.push((payload_type, kind));
        self
    }

    fn rtcp_or_default(&self) -> SocketAddr {
        self.rtcp.unwrap_or_else(|| next_port(self.rtp))
    }
}

/// Latching policy (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatchConfig {
    /// A new source re-latches once the latched one has been silent this long.
    pub relatch_after_silence: Duration,
    /// A new source whose RTP carries the latched SSRC re-latches at once.
    pub relatch_on_same_ssrc: bool,
    /// Only latch to sources on the IP address the SDP names (no NAT traversal; for trunks).
    pub require_sdp_ip: bool,
}

impl Default for LatchConfig {
    fn default() -> Self {
        Self {
            relatch_after_silence: Duration::from_millis(1000),
            relatch_on_same_ssrc: true,
            require_sdp_ip: false,
        }
    }
}

/// What to do with a datagram.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it unchanged out of the other leg's port of the same channel, to this address.
    Forward(SocketAddr),
    Drop(DropReason),
}

/// Why a datagram was not forwarded; each is counted in [`DropCounters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Not RTP/RTCP version 2, or a header that does not fit.
    Malformed,
    /// Larger than the relay's receive buffer.
    Truncated,
    /// An empty datagram (RFC 6263 §4.1 keepalive): refreshes the latch, is not forwarded.
    Keepalive,
    /// From a source other than the latched one.
    ForeignSource,
    /// The other leg has neither an SDP address nor a latched source yet.
    NoDestination,
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    fn add(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }
}

/// Datagrams received on a leg's ports and not forwarded, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    pub malformed: u64,
    pub truncated: u64,
    pub keepalive: u64,
    pub foreign_source: u64,
    pub no_destination: u64,
    /// Forwarded but refused by the socket (send buffer full, unreachable).
    pub send_failed: u64,
}

/// The latest RTCP reception report a leg's phone sent (RFC 3550 §6.4.1): how the stream it
/// receives (from the other leg, through the relay) arrives at the phone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReceptionReport {
    /// When the relay read the RTCP packet.
    pub at: Instant,
    pub reporter_ssrc: u32,
    pub source_ssrc: u32,
    /// Fraction lost since the phone's previous report, 0.0–1.0.
    pub fraction_lost: f64,
    pub cumulative_lost: i32,
    pub highest_sequence: u32,
    /// Interarrival jitter in RTP timestamp units, as reported.
    pub jitter_units: u32,
    /// The same as a duration, when the clock rate of the reported stream is known.
    pub jitter: Option<Duration>,
}

/// Statistics for what one leg's phone sent to the relay, and what it reported in RTCP.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct LegStats {
    /// Valid RTP received.
    pub rtp: Counter,
    /// Valid RTCP received (on the RTCP port, or multiplexed on the RTP port).
    pub rtcp: Counter,
    /// Handed to the other leg's socket.
    pub forwarded: Counter,
    pub dropped: DropCounters,
    /// RTP packets with the RFC 4733 telephone-event payload type.
    pub telephone_events: u64,
    /// RTP packets expected from sequence numbers (RFC 3550 A.3), over all SSRCs seen.
    pub expected: u64,
    /// Expected minus received: the relay's own loss estimate on the way in.
    pub lost: i64,
    /// Extended highest sequence number of the current SSRC run.
    pub highest_sequence: u32,
    /// Interarrival jitter at the relay (RFC 3550 A.8), in timestamp units.
    pub jitter_units: u32,
    pub jitter: Option<Duration>,
    /// The SSRC of the latest RTP packet.
    pub ssrc: Option<u32>,
    /// Where the leg's RTP and RTCP are sent to (latched, else from SDP).
    pub rtp_remote: Option<SocketAddr>,
    pub rtcp_remote: Option<SocketAddr>,
    /// Whether the destinations above come from packets (true) or from SDP.
    pub rtp_latched: bool,
    pub rtcp_latched: bool,
    /// Source changes after the first latch.
    pub relatches: u32,
    /// The latest valid RTP or RTCP packet from the phone: the call core's dead-media signal.
    pub last_packet_at: Option<Instant>,
    pub last_rtp_at: Option<Instant>,
    pub report: Option<ReceptionReport>,
}

/// Both legs' statistics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionStats {
    pub a: LegStats,
    pub b: LegStats,
}

impl SessionStats {
    pub fn leg(&self, leg: Leg) -> &LegStats {
        match leg {
            Leg::A => &self.a,
            Leg::B => &self.b,
        }
    }

    /// The latest packet from either phone.
    pub fn last_packet_at(&self) -> Option<Instant> {
        self.a.last_packet_at.max(self.b.last_packet_at)
    }
}

/// The relay state of one session. See the module documentation for the rules.
///
/// Calling contract: call [`handle_packet`](Self::handle_packet) for each datagram in the order
/// read, with non-decreasing instants; call [`set_remote`](Self::set_remote) whenever an SDP
/// offer or answer for a leg is accepted. Getters may be called at any time.
#[derive(Clone, Debug)]
pub struct RelaySession {
    config: LatchConfig,
    legs: [LegState; 2],
}

#[derive(Clone, Debug, Default)]
struct Latch {
    addr: Option<SocketAddr>,
    /// Last valid packet (or keepalive) from `addr`.
    last_seen: Option<Instant>,
    /// SSRC of the latest packet from `addr` (RTP SSRC or RTCP sender SSRC).
    ssrc: Option<u32>,
}

#[derive(Clone, Debug)]
struct LegState {
    sdp: Option<RemoteMedia>,
    rtp: Latch,
    rtcp: Latch,
    /// Clock rate per payload type; 0 = not audio or unknown.
    clock: [u32; 128],
    /// Bit n set: payload type n is telephone-event.
    events: u128,
    seq: SequenceTracker,
    jitter: JitterEstimator,
    stats: LegStats,
}

/// RFC 3551 §6, table 4: static audio payload types and their RTP clock rates.
const STATIC_AUDIO: [(u8, u32); 17] = [
    (0, 8000),
    (3, 8000),
    (4, 8000),
    (5, 8000),
    (6, 16000),
    (7, 8000),
    (8, 8000),
    (9, 8000), // G.722: 8000 despite 16 kHz sampling (RFC 3551 §4.5.2)
    (10, 44100),
    (11, 44100),
    (12, 8000),
    (13, 8000),
    (14, 90000),
    (15, 8000),
    (16, 11025),
    (17, 22050),
    (18, 8000),
];

impl Default for LegState {
    fn default() -> Self {
        let mut clock = [0; 128];
        for (pt, rate) in STATIC_AUDIO {
            clock[usize::from(pt)] = rate;
        }
        Self {
            sdp: None,
            rtp: Latch::default(),
            rtcp: Latch::default(),
            clock,
            events: 0,
            seq: SequenceTracker::default(),
            jitter: JitterEstimator::default(),
            stats: LegStats::default(),
        }
    }
}

enum Kind {
    Rtp(RtpHeader),
    Rtcp(u32),
}

impl RelaySession {
    pub fn new(config: LatchConfig) -> Self {
        Self {
            config,
            legs: [LegState::default(), LegState::default()],
        }
    }

    /// Takes a leg's SDP address and payload types. If the address differs from the one before,
    /// the phone changed (a re-INVITE, a transfer): the latch is released, so the next valid
    /// packet latches afresh. An unspecified address or port 0 (RFC 2543 hold with
    /// `c=0.0.0.0`, a disabled stream) names no destination: the relay never sends there, and
    /// an existing latch is kept so the call resumes where it was.
    pub fn set_remote(&mut self, leg: Leg, remote: RemoteMedia) {
        let state = &mut self.legs[leg.index()];
        if usable(remote.rtp) {
            if let Some(old) = state.sdp.as_ref().filter(|old| usable(old.rtp)) {
                if old.rtp != remote.rtp {
                    state.rtp = Latch::default();
                }
                if old.rtcp_or_default() != remote.rtcp_or_default() {
                    state.rtcp = Latch::default();
                }
            }
        }
        for &(pt, kind) in &remote.payloads {
            let Some(slot) = state.clock.get_mut(usize::from(pt)) else {
                continue;
            };
            let bit = 1u128 << pt;
            match kind {
                PayloadKind::Audio { clock_rate } => {
                    *slot = clock_rate;
                    state.events &= !bit;
                }
                PayloadKind::TelephoneEvent => {
                    *slot = 0;
                    state.events |= bit;
                }
                PayloadKind::Other => {
                    *slot = 0;
                    state.events &= !bit;
                }
            }
        }
        state.sdp = Some(remote);
    }

    /// Handles one datagram read at `now` from `source` on `leg`'s `channel` port: updates the
    /// latch and statistics and says where to send it.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        leg: Leg,
        channel: Channel,
        source: SocketAddr,
        packet: &[u8],
    ) -> Verdict {
        let [a, b] = &mut self.legs;
        let (this, other) = match leg {
            Leg::A => (a, b),
            Leg::B => (b, a),
        };
        let kind = match classify(channel, packet) {
            Ok(kind) => kind,
            Err(reason) => {
                if reason == DropReason::Keepalive {
                    let latch = this.latch_mut(channel);
                    if latch.addr == Some(source) {
                        latch.last_seen = Some(now);
                    }
                }
                return drop_packet(this, reason);
            }
        };
        let ssrc = match kind {
            Kind::Rtp(h) => h.ssrc,
            Kind::Rtcp(ssrc) => ssrc,
        };
        if !this.accept_source(&self.config, now, channel, source, ssrc) {
            return drop_packet(this, DropReason::ForeignSource);
        }
        this.stats.last_packet_at = Some(now);
        match kind {
            Kind::Rtp(h) => this.account_rtp(now, &h, packet.len()),
            Kind::Rtcp(_) => this.account_rtcp(now, packet, other.stats.ssrc),
        }
        // Multiplexed RTCP (RFC 5761) stays on the RTP ports: that is where the peer expects it.
        match other.destination(channel) {
            Some(to) => {
                this.stats.forwarded.add(packet.len());
                Verdict::Forward(to)
            }
            None => drop_packet(this, DropReason::NoDestination),
        }
    }

    /// Counts a datagram the IO layer dropped before it reached `handle_packet` (truncated).
    pub fn note_dropped(&mut self, leg: Leg, reason: DropReason) {
        let _ = drop_packet(&mut self.legs[leg.index()], reason);
    }

    /// Counts datagrams from `leg` that were forwarded but that the socket refused.
    pub fn note_send_failed(&mut self, leg: Leg, count: u64) {
        self.legs[leg.index()].stats.dropped.send_failed += count;
    }

    /// Where `leg`'s phone receives RTP now (latched, else from SDP).
    pub fn destination(&self, leg: Leg, channel: Channel) -> Option<SocketAddr> {
        self.legs[leg.index()].destination(channel)
    }

    pub fn leg_stats(&self, leg: Leg) -> LegStats {
        let (this, other) = (&self.legs[leg.index()], &self.legs[leg.other().index()]);
        let mut s = this.stats.clone();
        s.expected = this.seq.expected();
        s.lost = this.seq.lost();
        s.highest_sequence = this.seq.extended_max();
        s.jitter_units = this.jitter.units();
        s.jitter = this.jitter.duration();
        s.rtp_remote = this.destination(Channel::Rtp);
        s.rtcp_remote = this.destination(Channel::Rtcp);
        s.rtp_latched = this.rtp.addr.is_some();
        s.rtcp_latched = this.rtcp.addr.is_some();
        if let Some(r) = &mut s.report {
            // The phone reports on the stream it receives: the other leg's, at its clock rate.
            r.jitter =
                stats::units_to_duration(f64::from(r.jitter_units), other.jitter.clock_rate());
        }
        s
    }

    pub fn stats(&self) -> SessionStats {
        SessionStats {
            a: self.leg_stats(Leg::A),
            b: self.leg_stats(Leg::B),
        }
    }
}

fn classify(channel: Channel, packet: &[u8]) -> Result<Kind, DropReason> {
    if packet.is_empty() {
        return Err(DropReason::Keepalive);
    }
    if channel == Channel::Rtcp || rtp::is_rtcp(packet) {
        return rtp::rtcp_sender_ssrc(packet)
            .map(Kind::Rtcp)
            .ok_or(DropReason::Malformed);
    }
    RtpHeader::parse(packet)
        .map(Kind::Rtp)
        .ok_or(DropReason::Malformed)
}

fn drop_packet(leg: &mut LegState, reason: DropReason) -> Verdict {
    let d = &mut leg.stats.dropped;
    match reason {
        DropReason::Malformed => d.malformed += 1,
        DropReason::Truncated => d.truncated += 1,
        DropReason::Keepalive => d.keepalive += 1,
        DropReason::ForeignSource => d.foreign_source += 1,
        DropReason::NoDestination => d.no_destination += 1,
    }
    Verdict::Drop(reason)
}

/// Whether an SDP address can be sent to (not `0.0.0.0`/`::`, not port 0).
fn usable(addr: SocketAddr) -> bool {
    !addr.ip().is_unspecified() && addr.port() != 0
}

fn next_port(addr: SocketAddr) -> SocketAddr {
    let mut next = addr;
    next.set_port(addr.port().wrapping_add(1));
    next
}

impl LegState {
    fn latch_mut(&mut self, channel: Channel) -> &mut Latch {
        match channel {
            Channel::Rtp => &mut self.rtp,
            Channel::Rtcp => &mut self.rtcp,
        }
    }

    fn sdp_address(&self, channel: Channel) -> Option<SocketAddr> {
        let sdp = self.sdp.as_ref()?;
        let addr = match (channel, sdp.rtcp) {
            (Channel::Rtp, _) => sdp.rtp,
            (Channel::Rtcp, Some(rtcp)) => rtcp,
            // RTP port + 1 only of a usable RTP address (port 0 + 1 is not a destination).
            (Channel::Rtcp, None) if usable(sdp.rtp) => next_port(sdp.rtp),
            (Channel::Rtcp, None) => return None,
        };
        usable(addr).then_some(addr)
    }

    fn destination(&self, channel: Channel) -> Option<SocketAddr> {
        match channel {
            Channel::Rtp => self.rtp.addr.or_else(|| self.sdp_address(Channel::Rtp)),
            // Without RTCP from the phone yet: its SDP, else next to its latched RTP source.
            Channel::Rtcp => self
                .rtcp
                .addr
                .or_else(|| self.sdp_address(Channel::Rtcp))
                .or_else(|| self.rtp.addr.map(next_port).filter(|a| usable(*a))),
        }
    }

    /// Applies the latching rules; true if the packet is from the (possibly new) latched source.
    fn accept_source(
        &mut self,
        config: &LatchConfig,
        now: Instant,
        channel: Channel,
        source: SocketAddr,
        ssrc: u32,
    ) -> bool {
        let sdp = self.sdp_address(channel);
        let latch = self.latch_mut(channel);
        let take = match latch.addr {
            Some(addr) if addr == source => true,
            None => !config.require_sdp_ip || sdp.is_some_and(|s| s.ip() == source.ip()),
            Some(_) => {
                let relatch = sdp == Some(source)
                    || latch.last_seen.is_none_or(|t| {
                        now.saturating_duration_since(t) >= config.relatch_after_silence
                    })
                    || (config.relatch_on_same_ssrc && latch.ssrc == Some(ssrc));
                let allowed = !config.require_sdp_ip || sdp.is_some_and(|s| s.ip() == source.ip());
                if relatch && allowed {
                    self.stats.relatches += 1;
                }
                relatch && allowed
            }
        };
        if take {
            let latch = self.latch_mut(channel);
            latch.addr = Some(source);
            latch.last_seen = Some(now);
            latch.ssrc = Some(ssrc);
        }
        take
    }

    fn account_rtp(&mut self, now: Instant, h: &RtpHeader, len: usize) {
        self.stats.rtp.add(len);
        self.stats.last_rtp_at = Some(now);
        if self.stats.ssrc != Some(h.ssrc) {
            // A new source: A.1 and A.8 state is per SSRC.
            self.seq.finish_run();
            self.jitter.reset_transit();
            self.stats.ssrc = Some(h.ssrc);
        }
        self.seq.update(h.sequence);
        let pt = usize::from(h.payload_type);
        if self.events & (1u128 << pt) != 0 {
            self.stats.telephone_events += 1;
        } else {
            // payload_type < 128, so the index holds.
            let clock_rate = self.clock[pt];
            if clock_rate != 0 {
                self.jitter.update(now, h.timestamp, clock_rate);
            }
        }
    }

    fn account_rtcp(&mut self, now: Instant, packet: &[u8], other_ssrc: Option<u32>) {
        self.stats.rtcp.add(packet.len());
        // Prefer the block about the stream the relay delivers to this phone.
        let mut chosen = None;
        for block in ReportBlocks::new(packet).take(31 * 4) {
            let matches = Some(block.source_ssrc) == other_ssrc;
            if chosen.is_none() || matches {
                chosen = Some(block);
            }
            if matches {
                break;
            }
        }
        if let Some(b) = chosen {
            self.stats.report = Some(ReceptionReport {
                at: now,
                reporter_ssrc: b.reporter_ssrc,
                source_ssrc: b.source_ssrc,
                fraction_lost: f64::from(b.fraction_lost) / 256.0,
                cumulative_lost: b.cumulative_lost,
                highest_sequence: b.highest_sequence,
                jitter_units: b.jitter,
                jitter: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::tests::{rr, rtp};

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    const MS: Duration = Duration::from_millis(1);

    /// A session whose phones announced A at :4000 and B at :6000 in SDP.
    fn session(config: LatchConfig) -> RelaySession {
        let mut s = RelaySession::new(config);
        s.set_remote(Leg::A, RemoteMedia::new(at(4000)));
        s.set_remote(Leg::B, RemoteMedia::new(at(6000)));
        s
    }

    fn pcmu(seq: u16, ssrc: u32) -> Vec<u8> {
        rtp(0, seq, u32::from(seq) * 160, ssrc, 160)
    }

    #[test]
    fn forwards_to_sdp_until_the_phone_sends_then_to_its_nat_address() {
        let t0 = Instant::now();
        let mut s = session(LatchConfig::default());
        // A's first packet goes to B's SDP address: B has not sent anything yet.
        let v = s.handle_packet(t0, Leg::A, Channel::Rtp, at(4000), &pcmu(1, 0xa));
        assert_eq!(v, Verdict::Forward(at(6000)));
        // B is behind NAT: its packets come from :61000. That is where A's go from now on.
        let v = s.handle_packet(t0 + MS, Leg::B, Channel::Rtp, at(61000), &pcmu(1, 0xb));
        assert_eq!(v, Verdict::Forward(at(4000)));
        let v = s.handle_packet(t0 + 2 * MS, Leg::A, Channel::Rtp, at(4000), &pcmu(2, 0xa));
        assert_eq!(v, Verdict::Forward(at(61000)));
        let b = s.leg_stats(Leg::B);
        assert_eq!(
            (b.rtp_remote, b.rtp_latched, b.relatches),
            (Some(at(61000)), true, 0)
        );
        assert_eq!(
            s.leg_stats(Leg::A).forwarded,
            Counter {
                packets: 2,
                bytes: 344
            }
        );
    }

    #[test]
    fn without_sdp_or_packets_there_is_no_destination() {
        let t0 = Instant::now();
        let mut s = RelaySession::new(LatchConfig::default());
        let v = s.handle_packet(t0, Leg::A, Channel::Rtp, at(4000), &pcmu(1, 1));
        assert_eq!(v, Verdict::Drop(DropReason::NoDestination));
        assert_eq!(s.leg_stats(Leg::A).dropped.no_destination, 1);
        // Latching works without SDP: both phones' first packets define the path.
        let v = s.handle_packet(t0, Leg::B, Channel::Rtp, at(6000), &pcmu(1, 2));
        assert_eq!(v, Verdict::Forward(at(4000)));
    }

    #[test]
    fn a_foreign_source_is_dropped_while_the_latched_one_talks() {
        let t0 = Instant::now();
        let mut s = session(LatchConfig::default());
        let _ = s.handle_packet(t0, Leg::B, Channel::Rtp, at(61000), &pcmu(1, 0xb));
        for i in 1..50u16 {
            let now = t0 + 20 * MS * u32::from(i);
            let v = s.handle_packet(now, Leg::B, Channel::Rtp, at(61000), &pcmu(1 + i, 0xb));
            assert!(matches!(v, Verdict::Forward(_)));
            // An attacker spraying the relay port with another SSRC gets nowhere.
            let v = s.handle_packet(now, Leg::B, Channel::Rtp, at(31337), &pcmu(7, 0xbad));
            assert_eq!(v, Verdict::Drop(DropReason::ForeignSource));
        }
        let b = s.leg_stats(Leg::B);
        assert_eq!(
            (b.dropped.foreign_source, b.rtp_remote, b.relatches),
            (49, Some(at(61000)), 0)
        );
        assert_eq!(
            b.rtp.packets, 50,
            "foreign packets are not counted as the phone's"
        );
    }

    #[test]
    fn relatches_after_silence_as_when_a_nat_rebinds() {
        let t0 = Instant::now();
        let mut s = session(LatchConfig {
            relatch_on_same_ssrc: false,
            ..LatchConfig::default()
        });
        let _ = s.handle_packet(t0, Leg::B, Channel::Rtp, at(61000), &pcmu(1, 0xb));
        // 999 ms later a new source (even with the same SSRC: that rule is off) is refused...
        let v = s.handle_packet(
            t0 + 999 * MS,
            Leg::B,
            Channel::Rtp,
            at(62000),
            &pcmu(2, 0xb),
        );
        assert_eq!(v, Verdict::Drop(DropReason::ForeignSource));
        // ...at 1000 ms of silence it takes over, and A's packets follow it.
        let v = s.handle_packet(
            t0 + 1000 * MS,
            Leg::B,
            Channel::Rtp,
            at(62000),
            &pcmu(3, 0xb),
        );
        assert_eq!(v, Verdict::Forward(at(4000)));
        let v = s.handle_packet(
            t0 + 1001 * MS,
            Leg::A,
            Channel::Rtp,
            at(4000),
            &pcmu(1, 0xa),
        );
        assert_eq!(v, Verdict::Forward(at(62000)));
        // The old mapping is now the foreign one.
        let v = s.handle_packet(
            t0 + 1002 * MS,
            Leg::B,
            Channel::Rtp,
            at(61000),
            &pcmu(4, 0xb),
        );
        assert_eq!(v, Verdict::Drop(DropReason::ForeignSource));
        assert_eq!(s.leg_stats(Leg::B).relatches, 1);
    }

    #[test]
    fn relatches_at_once_to_the_same_ssrc_but_not_to_another() {
        let t0 = Instant::now();
        let mut s = session(LatchConfig::default());
        let _ = s.handle_packet(t0, Leg::B, Channel::Rtp, at(61000), &pcmu(1, 0xb));
        let v = s.handle_packet(t0 + 20 * MS, Leg::B, Channel::Rtp, at(62000), &pcmu(2, 0xc));
        assert_eq!(v, Verdict::Drop(DropReason::ForeignSource));
        let v = s.handle_packet(t0 + 40 * MS, Leg::B, Channel::Rtp, at(62000), &pcmu(3, 0xb));
        assert_eq!(v, Verdict::Forward(at(4000)));
        assert_eq!(s.destination(Leg::B, Channel::Rtp), Some(at(62000)));
    }

    #[test]
    fn the_sdp_address_always_wins_and_a_new_sdp_address_unlatches() {
        let t0 = Instant::now();
        let mut s = session(LatchConfig::default());
        let _ = s.handle_packet(t0, Leg::B, Channel::Rtp, at(61000), &pcmu(1, 0xb));
        let v = s.handle_packet(t0 + MS, Leg::B, Channel::Rtp, at(6000), &pcmu(1, 0xd));
        assert_eq!(v, Verdict::Forward(at(4000)));
        assert_eq!(s.destination(Leg::B, Channel::Rtp), Some(at(6000)));
        // A re-INVITE moves B elsewhere: the latch is released and the new SDP address is used.
        s.set_remote(Leg::B, RemoteMedia::new(at(7000)));
        assert_eq!(s.destination(Leg::B, Channel::Rtp), Some(at(7000)));
        let v = s.handle_packet(t0 + 2 * MS, Leg::B, Channel::Rtp, at(63000), &pcmu(1, 0xe));
        assert_eq!(v, Verdict::Forward(at(4000)));
        assert_eq!(s.destination(Leg::B, Channel::Rtp), Some(at(63000)));
        // The same SDP again (a session refresh) keeps the latch.
        s.set_remote(Leg::B, RemoteMedia::new(at(7000)));
        assert_eq!(s.destination(Leg::B, Channel::Rtp), Some(at(63000)));
    }

    #[test]
    fn an_unspecified_sdp_address_is_never_a_destination_and_keeps_the_latch() {
        let t0 = Instant::now();
        let mut s = session(LatchConfig::default());
        let _ = s.handle_packet(t0, Leg::B, Channel::Rtp, at(61000), &pcmu(1, 0xb));
        // RFC 2543 hold: c=0.0.0.0. The latch stays, so media resumes where it was.
        s.set_remote(
            Leg::B,
            RemoteMedia::new(SocketAddr::from(([0, 0, 0, 0], 6000))),
        );
        assert_eq!(s.destination(Leg::B, Channel::Rtp), Some(at(61000)));
        s.set_remote(Leg::B, RemoteMedia::new(at(6000)));
        assert_eq!(s.destination(Leg::B, Channel::Rtp), Some(at(61000)));
        // A leg whose only address is unspecified (or port 0) has no destination at all.
        s.set_remote(
            Leg::A,
            RemoteMedia::new(SocketAddr::from(([0, 0, 0, 0], 4000))),
        );
        assert_eq!(s.destination(Leg::A, Channel::Rtp), None);
        s.set_remote(Leg::A, RemoteMedia::new(at(0)));
        let v = s.handle_packet(t0, Leg::B, Channel::Rtp, at(61000), &pcmu(2, 0xb));
        assert_eq!(v, Verdict::Drop(DropReason::NoDestination));
        assert_eq!(s.destination(Leg::A, Channel::Rtcp), None);
    }

    #[test]
    fn require_sdp_ip_refuses_other_hosts() {
        let t0 = Instant::now();
        let mut s = session(LatchConfig {
            require_sdp_ip: true,
            ..LatchConfig::default()
        });
        let other_host = SocketAddr::from(([127, 0, 0, 2], 6000));
        let v = s.handle_packet(t0, Leg::B, Channel::Rtp, other_host, &pcmu(1, 0xb));
        assert_eq!(v, Verdict::Drop(DropReason::ForeignSource));
        let v = s.handle_packet(t0, Leg::B, Channel::Rtp, at(6002), &pcmu(1, 0xb));
        assert_eq!(v, Verdict::Forward(at(4000)));
        let v = s.handle_packet(
            t0 + 5000 * MS,
            Leg::B,
            Channel::Rtp,
            other_host,
            &pcmu(2, 0xb),
        );
        assert_eq!(v, Verdict::Drop(DropReason::ForeignSource));
    }

    #[test]
    fn keepalives_hold_the_latch_and_are_not_forwarded() {
        let t0 = Instant::now();
        let mut s = session(LatchConfig {
            relatch_on_same_ssrc: false,
            ..LatchConfig::default()
        });
        let _ = s.handle_packet(t0, Leg::B, Channel::Rtp, at(61000), &pcmu(1, 0xb));
        // On hold, B only sends empty keepalives (RFC 6263 §4.1) every 800 ms.
        for i in 1..=5u32 {
            let v = s.handle_packet(t0 + 800 * MS * i, Leg::B, Channel::Rtp, at(61000), &[]);
            assert_eq!(v, Verdict::Drop(DropReason::Keepalive));
        }
        let v = s.handle_packet(
            t0 + 4500 * MS,
            Leg::B,
            Channel::Rtp,
            at(62000),
            &pcmu(2, 0xc),
        );
        assert_eq!(v, Verdict::Drop(DropReason::ForeignSource));
        assert_eq!(s.leg_stats(Leg::B).dropped.keepalive, 5);
    }

    #[test]
    fn rtcp_latches_separately_and_goes_to_the_rtcp_port() {
        let t0 = Instant::now();
        let mut s = RelaySession::new(LatchConfig::default());
        s.set_remote(Leg::A, RemoteMedia::new(at(4000)));
        s.set_remote(Leg::B, RemoteMedia::new(at(6000)).with_rtcp(at(6100)));
        let report = rr(0xa, &[(0xb, 0, 0, 1, 0)]);
        // To B: its a=rtcp port. To A: RTP port + 1 (no a=rtcp).
        let v = s.handle_packet(t0, Leg::A, Channel::Rtcp, at(4001), &report);
        assert_eq!(v, Verdict::Forward(at(6100)));
        let v = s.handle_packet(t0, Leg::B, Channel::Rtcp, at(61001), &rr(0xb, &[]));
        assert_eq!(v, Verdict::Forward(at(4001)));
        assert_eq!(s.destination(Leg::B, Channel::Rtcp), Some(at(61001)));
        // B's RTP latch is untouched by RTCP.
        assert_eq!(s.destination(Leg::B, Channel::Rtp), Some(at(6000)));
        assert_eq!(s.leg_stats(Leg::A).rtcp.packets, 1);
        // RTP on the RTCP port is not RTCP.
        let v = s.handle_packet(t0, Leg::A, Channel::Rtcp, at(4001), &pcmu(1, 0xa));
        assert_eq!(v, Verdict::Drop(DropReason::Malformed));
    }

    #[test]
    fn rtcp_port_follows_latched_rtp_when_nothing_else_is_known() {
        let t0 = Instant::now();
        let mut s = RelaySession::new(LatchConfig::default());
        let _ = s.handle_packet(t0, Leg::B, Channel::Rtp, at(61000), &pcmu(1, 0xb));
        let v = s.handle_packet(t0, Leg::A, Channel::Rtcp, at(4001), &rr(0xa, &[]));
        assert_eq!(v, Verdict::Forward(at(61001)));
    }

    #[test]
    fn multiplexed_rtcp_stays_on_the_rtp_ports_and_is_parsed() {
        let t0 = Instant::now();
        let mut s = session(LatchConfig::default());
        let _ = s.handle_packet(t0, Leg::B, Channel::Rtp, at(61000), &pcmu(1, 0xb));
        let report = rr(0xa, &[(0xb, 64, 3, 100, 80)]);
        let v = s.handle_packet(t0 + MS, Leg::A, Channel::Rtp, at(4000), &report);
        assert_eq!(v, Verdict::Forward(at(61000)));
        let a = s.leg_stats(Leg::A);
        assert_eq!((a.rtp.packets, a.rtcp.packets), (0, 1));
        let r = a.report.unwrap();
        assert_eq!(
            (
                r.source_ssrc,
                r.fraction_lost,
                r.cumulative_lost,
                r.jitter_units
            ),
            (0xb, 0.25, 3, 80)
        );
    }

    #[test]
    fn the_report_about_the_other_legs_stream_is_preferred() {
        let t0 = Instant::now();
        let mut s = session(LatchConfig::default());
        // B sends PCMU (8 kHz) with SSRC 0xb; A's RR has a block about 0x99 first, then 0xb.
        for i in 0..3u16 {
            let _ = s.handle_packet(
                t0 + 20 * MS * u32::from(i),
                Leg::B,
                Channel::Rtp,
                at(6000),
                &pcmu(i, 0xb),
            );
        }
        let report = rr(0xa, &[(0x99, 0, 0, 0, 1), (0xb, 0, 1, 2, 160)]);
        let _ = s.handle_packet(t0, Leg::A, Channel::Rtcp, at(4001), &report);
        let r = s.leg_stats(Leg::A).report.unwrap();
        assert_eq!((r.source_ssrc, r.jitter_units), (0xb, 160));
        // 160 units at 8 kHz = 20 ms.
        assert_eq!(r.jitter, Some(Duration::from_millis(20)));
        assert_eq!(r.at, t0);
    }

    #[test]
    fn loss_and_jitter_from_simulated_arrivals() {
        let t0 = Instant::now();
        let mut s = session(LatchConfig::default());
        // 100 packets every 20 ms; 5 lost (seq 10, 20, .., 50); packet 60 arrives 8 ms late.
        for seq in 0..100u16 {
            if seq % 10 == 0 && (10..=50).contains(&seq) {
                continue;
            }
            let late = if seq == 60 { 8 * MS } else { Duration::ZERO };
            let now = t0 + 20 * MS * u32::from(seq) + late;
            let _ = s.handle_packet(now, Leg::A, Channel::Rtp, at(4000), &pcmu(seq, 0xa));
        }
        let a = s.leg_stats(Leg::A);
        assert_eq!((a.expected, a.lost, a.rtp.packets), (100, 5, 95));
        assert_eq!(a.highest_sequence, 99);
        // |D| = 64 units for packet 60 and again for 61, then decay by 15/16 per packet:
        // J = 64/16 = 4; J = 4 + (64 - 4)/16 = 7.75; then 38 packets with D = 0.
        let expected = 7.75 * (15.0f64 / 16.0).powi(38);
        assert!(
            (f64::from(a.jitter_units) - expected.floor()).abs() <= 1.0,
            "{a:?}"
        );
        assert_eq!(s.leg_stats(Leg::B).expected, 0);
    }

    #[test]
    fn telephone_events_pass_through_counted_and_outside_jitter() {
        let t0 = Instant::now();
        let mut s = RelaySession::new(LatchConfig::default());
        s.set_remote(
            Leg::A,
            RemoteMedia::new(at(4000)).with_payload(101, PayloadKind::TelephoneEvent),
        );
        s.set_remote(Leg::B, RemoteMedia::new(at(6000)));
        for i in 0..10u32 {
            let seq = i as u16;
            let now = t0 + 20 * MS * i;
            let packet = if (3..7).contains(&i) {
                // An RFC 4733 event: the timestamp stays at the event start.
                let mut p = rtp(101, seq, 480, 0xa, 4);
                p[12..16].copy_from_slice(&[1, 0x0a, 0, 160]);
                p
            } else {
                rtp(0, seq, 160 * i, 0xa, 160)
            };
            let v = s.handle_packet(now, Leg::A, Channel::Rtp, at(4000), &packet);
            assert_eq!(v, Verdict::Forward(at(6000)));
        }
        let a = s.leg_stats(Leg::A);
        assert_eq!((a.telephone_events, a.lost, a.jitter_units), (4, 0, 0));
    }

    #[test]
    fn a_new_ssrc_starts_a_new_run_without_phantom_loss() {
        let t0 = Instant::now();
        let mut s = session(LatchConfig::default());
        for seq in 0..10 {
            let _ = s.handle_packet(t0, Leg::A, Channel::Rtp, at(4000), &pcmu(seq, 1));
        }
        for seq in 30_000..30_010 {
            let _ = s.handle_packet(t0, Leg::A, Channel::Rtp, at(4000), &pcmu(seq, 2));
        }
        let a = s.leg_stats(Leg::A);
        assert_eq!((a.expected, a.lost, a.ssrc), (20, 0, Some(2)));
    }

    #[test]
    fn garbage_is_dropped_and_counted_without_latching() {
        let t0 = Instant::now();
        let mut s = session(LatchConfig::default());
        for garbage in [
            &b"\x00"[..],
            b"hello world!",
            &[0x80; 11],
            &[0x8f; 12],
            b"\x00\x01\x00\x00stun",
        ] {
            let v = s.handle_packet(t0, Leg::B, Channel::Rtp, at(31337), garbage);
            assert_eq!(v, Verdict::Drop(DropReason::Malformed));
            let v = s.handle_packet(t0, Leg::B, Channel::Rtcp, at(31337), garbage);
            assert_eq!(v, Verdict::Drop(DropReason::Malformed));
        }
        let b = s.leg_stats(Leg::B);
        assert_eq!(
            (
                b.dropped.malformed,
                b.rtp_latched,
                b.rtcp_latched,
                b.last_packet_at
            ),
            (10, false, false, None)
        );
    }

    proptest::proptest! {
        /// Any sequence of datagrams, sources, legs and channels: no panic, and forwarding only
        /// ever targets an address the session learned from SDP or from a packet.
        #[test]
        fn never_panics_and_forwards_only_to_known_addresses(
            ops in proptest::collection::vec(
                (0u8..4, 0u16..4, proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0u64..3000),
                0..64,
            )
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut s = session(LatchConfig::default());
            for (which, src, mut bytes, step) in ops {
                now += Duration::from_millis(step);
                if which & 1 == 0 && bytes.len() >= 2 {
                    bytes[0] = 0x80; // mostly-valid RTP, to exercise latching
                    bytes[1] &= 0x7f;
                }
                let leg = if which & 2 == 0 { Leg::A } else { Leg::B };
                let channel = if src & 1 == 0 { Channel::Rtp } else { Channel::Rtcp };
                let source = at(50000 + src);
                if let Verdict::Forward(to) = s.handle_packet(now, leg, channel, source, &bytes) {
                    let ok = [4000, 4001, 6000, 6001, 50000, 50001, 50002, 50003, 50004].contains(&to.port());
                    proptest::prop_assert!(ok, "{to}");
                }
            }
            let _ = s.stats();
        }
    }
}
