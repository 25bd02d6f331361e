//! Reception statistics per RTP source: sequence-based loss (RFC 3550 A.1) and interarrival
//! jitter (RFC 3550 §6.4.1, A.8). Pure arithmetic; arrival instants are inputs.

use std::time::{Duration, Instant};

/// RFC 3550 A.1: a jump forward by less than this is in-order (packets in between were lost).
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: a jump backward by less than this is a late or duplicate packet.
const MAX_MISORDER: u16 = 100;
const SEQ_MOD: u32 = 1 << 16;

/// Extended sequence tracking and loss estimate for one SSRC (RFC 3550 A.1, without the
/// probation of `MIN_SEQUENTIAL` packets: the relay counts from the first packet it forwards).
///
/// A restart (a jump of more than `MAX_DROPOUT`, confirmed by the next packet, as A.1 does) or a
/// new SSRC starts a new run; the counts of earlier runs are kept in the totals, so loss over a
/// whole call survives a phone restarting its sequence.
#[derive(Clone, Debug, Default)]
pub(crate) struct SequenceTracker {
    started: bool,
    max_seq: u16,
    /// Sequence wraps so far, times 2^16.
    cycles: u32,
    base_seq: u32,
    /// The sequence number that would confirm a restart (A.1's `bad_seq`), if one is pending.
    bad_seq: Option<u16>,
    received: u64,
    /// Totals of finished runs.
    prior_expected: u64,
    prior_received: u64,
}

impl SequenceTracker {
    /// Accounts one packet's sequence number. False when A.1 holds the packet back as a
    /// possible restart (it is still forwarded; it is only not counted yet).
    pub(crate) fn update(&mut self, seq: u16) -> bool {
        if !self.started {
            self.restart(seq);
            return true;
        }
        let delta = seq.wrapping_sub(self.max_seq);
        if delta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += SEQ_MOD;
            }
            self.max_seq = seq;
        } else if delta <= (SEQ_MOD - u32::from(MAX_MISORDER)) as u16 {
            // A very large jump: restart only when the next packet follows this one.
            if self.bad_seq == Some(seq) {
                self.restart(seq);
                return true;
            }
            self.bad_seq = Some(seq.wrapping_add(1));
            return false;
        }
        // else: a duplicate or late packet; counted as received, as A.1 does.
        self.bad_seq = None;
        self.received += 1;
        true
    }

    /// Ends the current run (e.g. the SSRC changed); the next packet starts a new one.
    pub(crate) fn finish_run(&mut self) {
        if self.started {
            self.prior_expected += self.run_expected();
            self.prior_received += self.received;
        }
        self.started = false;
        self.received = 0;
    }

    fn restart(&mut self, seq: u16) {
        self.finish_run();
        self.started = true;
        self.max_seq = seq;
        self.cycles = 0;
        self.base_seq = u32::from(seq);
        self.bad_seq = None;
        self.received = 1;
    }

    fn run_expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        u64::from(self.cycles) + u64::from(self.max_seq) + 1 - u64::from(self.base_seq)
    }

    /// Packets expected over all runs (RFC 3550 A.3 `expected`).
    pub(crate) fn expected(&self) -> u64 {
        self.prior_expected + self.run_expected()
    }

    /// Packets received (duplicates included) over all runs.
    pub(crate) fn received(&self) -> u64 {
        self.prior_received + self.received
    }

    /// Cumulative packets lost (A.3); negative when duplicates outnumber losses.
    pub(crate) fn lost(&self) -> i64 {
        self.expected() as i64 - self.received() as i64
    }

    /// Extended highest sequence number of the current run (cycles + max_seq).
    pub(crate) fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }
}

/// Interarrival jitter estimate (RFC 3550 §6.4.1, A.8), in RTP timestamp units.
#[derive(Clone, Debug, Default)]
pub(crate) struct JitterEstimator {
    /// Arrival times are measured from here.
    epoch: Option<Instant>,
    clock_rate: u32,
    last_transit: Option<u32>,
    jitter: f64,
}

impl JitterEstimator {
    /// Feeds one packet: its RTP timestamp, its payload clock rate and when it was read.
    pub(crate) fn update(&mut self, arrival: Instant, rtp_timestamp: u32, clock_rate: u32) {
        if clock_rate == 0 {
            return;
        }
        let epoch = *self.epoch.get_or_insert(arrival);
        if clock_rate != self.clock_rate {
            // A new clock (payload type change): transit times are not comparable; rescale J.
            if self.clock_rate != 0 {
                self.jitter *= f64::from(clock_rate) / f64::from(self.clock_rate);
            }
            self.clock_rate = clock_rate;
            self.last_transit = None;
        }
        // Arrival in timestamp units; only differences matter, so wrapping to 32 bits is fine.
        let nanos = arrival.saturating_duration_since(epoch).as_nanos() as f64;
        let arrival_units = (nanos * f64::from(clock_rate) / 1e9) as u64 as u32;
        let transit = arrival_units.wrapping_sub(rtp_timestamp);
        if let Some(last) = self.last_transit {
            // D(i-1, i) = (Rj - Ri) - (Sj - Si) = transit_j - transit_i (RFC 3550 §6.4.1).
            let d = f64::from((transit.wrapping_sub(last) as i32).unsigned_abs());
            // J(i) = J(i-1) + (|D(i-1,i)| - J(i-1)) / 16
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// Forgets the transit time of the previous packet (a new SSRC: A.8 is per source).
    pub(crate) fn reset_transit(&mut self) {
        self.last_transit = None;
    }

    /// The estimate in timestamp units, as an RTCP report block carries it.
    pub(crate) fn units(&self) -> u32 {
        self.jitter as u32
    }

    pub(crate) fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// The estimate as a duration, when a clock rate is known.
    pub(crate) fn duration(&self) -> Option<Duration> {
        units_to_duration(self.jitter, self.clock_rate)
    }
}

pub(crate) fn units_to_duration(units: f64, clock_rate: u32) -> Option<Duration> {
    (clock_rate != 0).then(|| Duration::from_secs_f64(units.max(0.0) / f64::from(clock_rate)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(seqs: impl IntoIterator<Item = u16>) -> SequenceTracker {
        let mut t = SequenceTracker::default();
        for s in seqs {
            t.update(s);
        }
        t
    }

    #[test]
    fn no_loss_in_order() {
        let t = track(100..200);
        assert_eq!((t.expected(), t.received(), t.lost()), (100, 100, 0));
    }

    #[test]
    fn gaps_are_lost_and_wrap_extends() {
        // 65530..=65535, then 0..10 with 3 and 7 missing: 6 + 10 - 2 = 14 received of 16.
        let seqs = (65530..=65535).chain((0..10).filter(|s| *s != 3 && *s != 7));
        let t = track(seqs);
        assert_eq!((t.expected(), t.received(), t.lost()), (16, 14, 2));
        assert_eq!(t.extended_max(), 65536 + 9);
    }

    #[test]
    fn reordered_packet_recovers_the_loss_and_duplicates_go_negative() {
        let t = track([1, 2, 4, 3, 5]);
        assert_eq!(t.lost(), 0);
        let t = track([1, 2, 2, 3]);
        assert_eq!(t.lost(), -1);
    }

    #[test]
    fn a_large_jump_is_a_restart_only_when_confirmed() {
        // One stray packet far ahead is not counted and does not move max_seq.
        let t = track([10, 11, 20_000, 12, 13]);
        assert_eq!((t.expected(), t.received()), (4, 4));
        // Two in a row: the phone restarted its sequence; the old run's counts are kept. As in
        // A.1 the new run starts at the confirming packet (40_001), so 40_000 is not counted.
        let t = track([10, 11, 12, 40_000, 40_001, 40_003]);
        assert_eq!((t.expected(), t.received(), t.lost()), (3 + 3, 3 + 2, 1));
    }

    #[test]
    fn finish_run_keeps_totals() {
        let mut t = track([1, 3]); // 1 lost
        t.finish_run();
        t.update(500);
        t.update(502); // 1 lost
        assert_eq!((t.expected(), t.received(), t.lost()), (6, 4, 2));
    }

    /// RFC 3550 §6.4.1 with simulated arrival times: 8 kHz clock, 20 ms packets.
    #[test]
    fn jitter_is_zero_for_perfect_pacing_and_follows_a8_for_a_delay() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut j = JitterEstimator::default();
        for i in 0..50u32 {
            j.update(t0 + ms(20 * u64::from(i)), 1000 + 160 * i, 8000);
        }
        assert_eq!(j.units(), 0);
        // Packet 50 arrives 10 ms (80 units) late, packet 51 on time: |D| = 80 then 80.
        j.update(t0 + ms(20 * 50 + 10), 1000 + 160 * 50, 8000);
        let after_one = 80.0 / 16.0;
        assert!((j.jitter - after_one).abs() < 0.01, "{}", j.jitter);
        j.update(t0 + ms(20 * 51), 1000 + 160 * 51, 8000);
        let after_two = after_one + (80.0 - after_one) / 16.0;
        assert!((j.jitter - after_two).abs() < 0.01, "{}", j.jitter);
        let d = j.duration().unwrap();
        assert!((d.as_secs_f64() - after_two / 8000.0).abs() < 1e-6);
    }

    #[test]
    fn jitter_converges_to_the_mean_deviation() {
        // Alternating +-5 ms around the ideal instant gives |D| = 10 ms = 80 units every
        // packet, so J converges to 80.
        let t0 = Instant::now() + Duration::from_millis(10);
        let mut j = JitterEstimator::default();
        for i in 0..400u32 {
            let ideal = Duration::from_millis(20 * u64::from(i) + 5);
            let at = if i % 2 == 0 {
                t0 + ideal - Duration::from_millis(5)
            } else {
                t0 + ideal + Duration::from_millis(5)
            };
            j.update(
                at,
                160u32.wrapping_mul(i).wrapping_add(u32::MAX - 1000),
                8000,
            );
        }
        assert!((f64::from(j.units()) - 80.0).abs() <= 1.0, "{}", j.jitter);
    }

    #[test]
    fn unknown_clock_is_ignored() {
        let mut j = JitterEstimator::default();
        j.update(Instant::now(), 0, 0);
        assert_eq!((j.units(), j.duration()), (0, None));
    }
}
