//! RTP and RTCP wire views (RFC 3550 §5.1, §6.4; RFC 5761 §4 for demultiplexing).
//!
//! Views borrow the datagram and read fields on demand; nothing here allocates or panics on any
//! input. The relay forwards datagrams unchanged, so only what statistics and latching need is
//! decoded.

/// The fixed RTP header fields the relay uses (RFC 3550 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

impl RtpHeader {
    /// Parses the fixed header of an RTP packet: version 2, at least 12 bytes, the CSRC list
    /// and (when flagged) the extension header and padding fit in the datagram.
    pub fn parse(packet: &[u8]) -> Option<Self> {
        let fixed: &[u8; 12] = packet.get(..12)?.try_into().ok()?;
        if fixed[0] >> 6 != 2 {
            return None;
        }
        let csrc_count = usize::from(fixed[0] & 0x0f);
        let mut header_len = 12 + 4 * csrc_count;
        if fixed[0] & 0x10 != 0 {
            // RFC 3550 §5.3.1: 16-bit profile field, 16-bit length in 32-bit words.
            let ext = packet.get(header_len..header_len + 4)?;
            header_len += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        }
        if header_len > packet.len() {
            return None;
        }
        if fixed[0] & 0x20 != 0 {
            // RFC 3550 §5.1: the last octet counts the padding, itself included.
            let padding = usize::from(*packet.last()?);
            if padding == 0 || header_len + padding > packet.len() {
                return None;
            }
        }
        Some(Self {
            marker: fixed[1] & 0x80 != 0,
            payload_type: fixed[1] & 0x7f,
            sequence: u16::from_be_bytes([fixed[2], fixed[3]]),
            timestamp: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
            ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
        })
    }
}

/// True when a datagram arriving on an RTP port is RTCP: RFC 5761 §4 keys on the second octet,
/// which is 192–223 for RTCP packet types and never for RTP payload types in use.
pub fn is_rtcp(packet: &[u8]) -> bool {
    packet.len() >= 2 && packet[0] >> 6 == 2 && (192..=223).contains(&packet[1])
}

/// RTCP packet types (RFC 3550 §12.1).
pub(crate) const RTCP_SR: u8 = 200;
pub(crate) const RTCP_RR: u8 = 201;

/// The first packet of an RTCP compound datagram, checked loosely (RFC 3550 A.2 without the
/// "first must be SR or RR" rule, which RFC 5506 reduced-size RTCP relaxes).
pub fn rtcp_sender_ssrc(packet: &[u8]) -> Option<u32> {
    if packet.len() < 8 || !is_rtcp(packet) {
        return None;
    }
    Some(u32::from_be_bytes([
        packet[4], packet[5], packet[6], packet[7],
    ]))
}

/// One reception report block (RFC 3550 §6.4.1), from an SR or RR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportBlock {
    /// The reporter (the SSRC of the SR/RR sender).
    pub reporter_ssrc: u32,
    /// The source this block is about.
    pub source_ssrc: u32,
    /// Fraction of packets lost since the previous report, in 1/256 units.
    pub fraction_lost: u8,
    /// Cumulative packets lost (signed 24 bits: duplicates can make it negative).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_sequence: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
}

/// Iterates over the report blocks of every SR and RR in an RTCP compound datagram. Stops at
/// the first sub-packet whose length does not fit; never panics.
#[derive(Clone, Debug)]
pub struct ReportBlocks<'a> {
    rest: &'a [u8],
    current: &'a [u8],
    reporter: u32,
    remaining: u8,
}

impl<'a> ReportBlocks<'a> {
    pub fn new(datagram: &'a [u8]) -> Self {
        Self {
            rest: datagram,
            current: &[],
            reporter: 0,
            remaining: 0,
        }
    }

    /// Moves to the next SR or RR sub-packet; false at the end or at a malformed one.
    fn next_packet(&mut self) -> bool {
        // Bounded: every turn consumes at least 4 bytes of `rest`.
        while self.rest.len() >= 4 {
            let head = self.rest;
            if head[0] >> 6 != 2 {
                self.rest = &[];
                return false;
            }
            let len = 4 * (usize::from(u16::from_be_bytes([head[2], head[3]])) + 1);
            let Some(packet) = head.get(..len) else {
                self.rest = &[];
                return false;
            };
            self.rest = &head[len..];
            let count = head[0] & 0x1f;
            let blocks_at = match head[1] {
                RTCP_SR => 28, // header, SSRC, 20 bytes of sender info
                RTCP_RR => 8,
                _ => continue,
            };
            if packet.len() < 8 {
                continue;
            }
            let Some(blocks) = packet.get(blocks_at..) else {
                continue;
            };
            self.reporter = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
            // Only the blocks that actually fit are read.
            let fit = (blocks.len() / 24).min(usize::from(count));
            self.current = &blocks[..fit * 24];
            self.remaining = fit as u8;
            if self.remaining > 0 {
                return true;
            }
        }
        false
    }
}

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        if self.remaining == 0 && !self.next_packet() {
            return None;
        }
        let b = self.current.get(..24)?;
        self.current = &self.current[24..];
        self.remaining -= 1;
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        // 24-bit two's complement, sign-extended.
        let cumulative_lost = (u32::from_be_bytes([b[5], b[6], b[7], 0]) as i32) >> 8;
        Some(ReportBlock {
            reporter_ssrc: self.reporter,
            source_ssrc: word(0),
            fraction_lost: b[4],
            cumulative_lost,
            highest_sequence: word(8),
            jitter: word(12),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: usize) -> Vec<u8> {
        let mut p = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p.resize(12 + payload, 0xd5);
        p
    }

    #[test]
    fn parses_fixed_header() {
        let mut p = rtp(8, 0xfffe, 160_000, 0xdead_beef, 160);
        p[1] |= 0x80;
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(
            h,
            RtpHeader {
                marker: true,
                payload_type: 8,
                sequence: 0xfffe,
                timestamp: 160_000,
                ssrc: 0xdead_beef
            }
        );
    }

    #[test]
    fn rejects_short_wrong_version_and_overlong_csrc_extension_padding() {
        assert_eq!(RtpHeader::parse(&[0x80; 11]), None);
        let mut p = rtp(0, 1, 2, 3, 0);
        p[0] = 0x40;
        assert_eq!(RtpHeader::parse(&p), None);
        p[0] = 0x83; // 3 CSRCs, none present
        assert_eq!(RtpHeader::parse(&p), None);
        let mut p = rtp(0, 1, 2, 3, 4);
        p[0] = 0x90; // extension header of 0 words: 4 bytes, present
        p[14..16].copy_from_slice(&0u16.to_be_bytes());
        assert!(RtpHeader::parse(&p).is_some());
        p[14..16].copy_from_slice(&9u16.to_be_bytes()); // 9 words: absent
        assert_eq!(RtpHeader::parse(&p), None);
        let mut p = rtp(0, 1, 2, 3, 4);
        p[0] = 0xa0;
        *p.last_mut().unwrap() = 5; // padding longer than the payload
        assert_eq!(RtpHeader::parse(&p), None);
        *p.last_mut().unwrap() = 4;
        assert!(RtpHeader::parse(&p).is_some());
    }

    #[test]
    fn rfc5761_demultiplexing() {
        assert!(is_rtcp(&[0x81, 200]));
        assert!(is_rtcp(&[0x80, 223]));
        assert!(!is_rtcp(&[0x80, 0]));
        assert!(!is_rtcp(&[0x80, 0x80 | 8])); // PCMA with the marker bit: 136
        assert!(!is_rtcp(&[0x00, 200]));
    }

    /// An RR with the given blocks (source, fraction, cumulative, highest, jitter).
    pub(crate) fn rr(reporter: u32, blocks: &[(u32, u8, i32, u32, u32)]) -> Vec<u8> {
        let mut p = vec![0x80 | blocks.len() as u8, RTCP_RR, 0, 0];
        p.extend_from_slice(&reporter.to_be_bytes());
        for &(src, frac, cum, high, jit) in blocks {
            p.extend_from_slice(&src.to_be_bytes());
            p.push(frac);
            p.extend_from_slice(&cum.to_be_bytes()[1..]);
            p.extend_from_slice(&high.to_be_bytes());
            p.extend_from_slice(&jit.to_be_bytes());
            p.extend_from_slice(&[0; 8]); // LSR, DLSR
        }
        let words = (p.len() / 4 - 1) as u16;
        p[2..4].copy_from_slice(&words.to_be_bytes());
        p
    }

    #[test]
    fn report_blocks_from_compound_sr_rr_sdes() {
        // SR with one block, then an RR with one, then an SDES that is skipped.
        let mut sr = vec![0x81, RTCP_SR, 0, 12];
        sr.extend_from_slice(&7u32.to_be_bytes());
        sr.extend_from_slice(&[0; 20]); // NTP, RTP ts, packet and octet counts
        sr.extend_from_slice(&9u32.to_be_bytes());
        sr.extend_from_slice(&[0x40, 0xff, 0xff, 0xfe]); // 25 %, cumulative -2
        sr.extend_from_slice(&70_000u32.to_be_bytes());
        sr.extend_from_slice(&33u32.to_be_bytes());
        sr.extend_from_slice(&[0; 8]);
        assert_eq!(sr.len(), 52);
        let mut datagram = sr;
        datagram.extend(rr(8, &[(10, 1, 5, 12, 44)]));
        datagram.extend([0x81, 202, 0, 1, 0, 0, 0, 7]);
        let blocks: Vec<_> = ReportBlocks::new(&datagram).collect();
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            blocks[0],
            ReportBlock {
                reporter_ssrc: 7,
                source_ssrc: 9,
                fraction_lost: 0x40,
                cumulative_lost: -2,
                highest_sequence: 70_000,
                jitter: 33
            }
        );
        assert_eq!(
            (
                blocks[1].reporter_ssrc,
                blocks[1].cumulative_lost,
                blocks[1].jitter
            ),
            (8, 5, 44)
        );
    }

    #[test]
    fn report_blocks_stop_at_truncation_and_ignore_overclaimed_counts() {
        let mut p = rr(1, &[(2, 0, 0, 0, 0)]);
        p[0] = 0x85; // claims 5 blocks, holds 1
        assert_eq!(ReportBlocks::new(&p).count(), 1);
        let p = rr(1, &[(2, 0, 0, 0, 0)]);
        assert_eq!(ReportBlocks::new(&p[..20]).count(), 0);
        assert_eq!(ReportBlocks::new(&[]).count(), 0);
        assert_eq!(rtcp_sender_ssrc(&p), Some(1));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = RtpHeader::parse(&bytes);
            let _ = rtcp_sender_ssrc(&bytes);
            let _ = ReportBlocks::new(&bytes).count();
        }
    }
}
