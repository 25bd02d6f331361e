//! Audio for the call tests: tones made with `sox`, WAV files read back, and a Goertzel filter
//! deciding which tone a recording carries.
//!
//! Each phone sends a tone of its own frequency; what it records from the call must carry the
//! other phone's tone, not its own (an echo, or the relay handing a phone its own stream back).

use std::fmt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Caller's and callee's tones: far apart, neither a harmonic of the other, both inside G.711's
/// telephone band.
pub const TONE_A: f64 = 600.0;
pub const TONE_B: f64 = 1400.0;

/// Writes a `secs`-long sine of `hz` as an 8 kHz mono 16-bit WAV with `sox`.
pub fn make_tone(path: &Path, hz: f64, secs: u32) {
    let sox = crate::common::require_program("sox", "sox");
    let mut cmd = Command::new(sox);
    cmd.args([
        "-n",
        "-r",
        "8000",
        "-c",
        "1",
        "-b",
        "16",
        "-e",
        "signed-integer",
    ])
    .arg(path)
    .args([
        "synth",
        &secs.to_string(),
        "sine",
        &hz.to_string(),
        "vol",
        "0.5",
    ]);
    let out = crate::common::run_bounded(cmd, Duration::from_secs(30));
    assert!(
        out.status.success() && path.is_file(),
        "sox failed to make {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A WAV file's first channel as 16-bit samples.
#[derive(Clone, Debug)]
pub struct Wav {
    pub rate: u32,
    pub samples: Vec<i16>,
}

impl Wav {
    /// Reads a PCM WAV (8 or 16 bit, any channel count: the first channel is kept). A data chunk
    /// whose size was never written (a recorder killed mid-call) counts as "to the end of file".
    pub fn read(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
            return Err(format!("{} is not a RIFF/WAVE file", path.display()));
        }
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let (mut format, mut channels, mut rate, mut bits) = (0u16, 0u16, 0u32, 0u16);
        let mut pos = 12;
        while pos + 8 <= bytes.len() {
            let id = &bytes[pos..pos + 4];
            let size = u32_at(pos + 4) as usize;
            let body = pos + 8;
            if id == b"fmt " && body + 16 <= bytes.len() {
                format = u16_at(body);
                channels = u16_at(body + 2);
                rate = u32_at(body + 4);
                bits = u16_at(body + 14);
            } else if id == b"data" {
                if format != 1 && format != 0xFFFE {
                    return Err(format!(
                        "{}: WAV format {format} is not PCM",
                        path.display()
                    ));
                }
                let end = if size == 0 || body + size > bytes.len() {
                    bytes.len()
                } else {
                    body + size
                };
                let data = &bytes[body..end];
                let step = usize::from(channels.max(1)) * usize::from(bits / 8);
                let samples = match bits {
                    16 => data
                        .chunks_exact(step)
                        .map(|c| i16::from_le_bytes([c[0], c[1]]))
                        .collect(),
                    8 => data
                        .chunks_exact(step)
                        .map(|c| (i16::from(c[0]) - 128) << 8)
                        .collect(),
                    other => {
                        return Err(format!("{}: {other}-bit samples", path.display()));
                    }
                };
                return Ok(Self { rate, samples });
            }
            pos = body + size + (size & 1);
        }
        Err(format!("{}: no data chunk", path.display()))
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.samples.len() as f64 / f64::from(self.rate.max(1)))
    }

    /// The part from `from` seconds on.
    pub fn after_secs(&self, from: f64) -> Self {
        let start = ((from * f64::from(self.rate)) as usize).min(self.samples.len());
        Self {
            rate: self.rate,
            samples: self.samples[start..].to_vec(),
        }
    }

    /// The last `secs` seconds.
    pub fn last_secs(&self, secs: f64) -> Self {
        let n = (secs * f64::from(self.rate)) as usize;
        let start = self.samples.len().saturating_sub(n);
        Self {
            rate: self.rate,
            samples: self.samples[start..].to_vec(),
        }
    }
}

/// Share of a block's energy at `hz`: 1.0 for a pure sine at that frequency, near 0 for other
/// content. Goertzel's algorithm gives |X(k)|² for the one DFT bin; a sine of amplitude A over N
/// samples gives |X|² ≈ (A·N/2)², and its energy Σx² ≈ A²·N/2, hence the 2/N normalisation.
pub fn tone_share(block: &[f64], rate: u32, hz: f64) -> f64 {
    let n = block.len();
    if n == 0 {
        return 0.0;
    }
    let energy: f64 = block.iter().map(|x| x * x).sum();
    if energy <= f64::EPSILON {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in block {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power / (n as f64 * energy)
}

/// What a recording carries, in 100 ms blocks.
#[derive(Clone, Debug, Default)]
pub struct ToneReport {
    pub seconds: f64,
    /// Blocks louder than silence (RMS above about -50 dBFS).
    pub voiced_blocks: usize,
    pub blocks: usize,
    /// `(frequency, blocks in which it holds over half the energy)`.
    pub dominant: Vec<(f64, usize)>,
    /// `(frequency, its mean share of the energy over voiced blocks)`.
    pub mean_share: Vec<(f64, f64)>,
}

impl ToneReport {
    pub fn dominant_blocks(&self, hz: f64) -> usize {
        self.dominant
            .iter()
            .find(|(f, _)| (*f - hz).abs() < 0.5)
            .map_or(0, |(_, n)| *n)
    }
}

impl fmt::Display for ToneReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.1} s, {} of {} blocks voiced",
            self.seconds, self.voiced_blocks, self.blocks
        )?;
        for ((hz, n), (_, share)) in self.dominant.iter().zip(&self.mean_share) {
            write!(f, "; {hz} Hz dominates {n} blocks (mean share {share:.2})")?;
        }
        Ok(())
    }
}

/// Splits the recording into 100 ms blocks and measures each frequency in each voiced block.
pub fn analyse(wav: &Wav, freqs: &[f64]) -> ToneReport {
    let block_len = (wav.rate / 10).max(1) as usize;
    let mut report = ToneReport {
        seconds: wav.duration().as_secs_f64(),
        dominant: freqs.iter().map(|&f| (f, 0)).collect(),
        mean_share: freqs.iter().map(|&f| (f, 0.0)).collect(),
        ..ToneReport::default()
    };
    // About -50 dBFS: G.711 silence and comfort noise stay below it, a tone at -6 dBFS is far above.
    let silence_rms = 100.0;
    for block in wav.samples.chunks_exact(block_len) {
        report.blocks += 1;
        let x: Vec<f64> = block.iter().map(|&s| f64::from(s)).collect();
        let rms = (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64).sqrt();
        if rms < silence_rms {
            continue;
        }
        report.voiced_blocks += 1;
        for (i, &hz) in freqs.iter().enumerate() {
            let share = tone_share(&x, wav.rate, hz);
            report.mean_share[i].1 += share;
            if share > 0.5 {
                report.dominant[i].1 += 1;
            }
        }
    }
    if report.voiced_blocks > 0 {
        for m in &mut report.mean_share {
            m.1 /= report.voiced_blocks as f64;
        }
    }
    report
}

/// Asserts that the recording at `path` carries `expect_hz` for at least `min_secs` and that
/// `own_hz` (the recording phone's own tone) never takes over. `who` names the recording in the
/// failure message. Returns the report.
pub fn assert_hears(
    path: &Path,
    expect_hz: f64,
    own_hz: f64,
    min_secs: f64,
    who: &str,
) -> ToneReport {
    let wav = Wav::read(path).unwrap_or_else(|e| panic!("{who}: {e}"));
    let report = analyse(&wav, &[expect_hz, own_hz]);
    let heard = report.dominant_blocks(expect_hz) as f64 / 10.0;
    let own = report.dominant_blocks(own_hz);
    assert!(
        heard >= min_secs,
        "{who}: expected at least {min_secs} s of the other side's {expect_hz} Hz tone in {}, \
         heard {heard} s ({report})",
        path.display()
    );
    // Its own tone may leak into a block or two (a jitter buffer's first frames), not more.
    assert!(
        own * 20 <= report.voiced_blocks.max(1),
        "{who}: its own {own_hz} Hz tone dominates {own} blocks of {} in {} — the relay sent the \
         phone's own stream back ({report})",
        report.voiced_blocks,
        path.display()
    );
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| 16000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin())
            .collect()
    }

    #[test]
    fn goertzel_separates_the_two_tones() {
        let a = sine(TONE_A, 800);
        assert!(tone_share(&a, 8000, TONE_A) > 0.9);
        assert!(tone_share(&a, 8000, TONE_B) < 0.05);
    }
}
