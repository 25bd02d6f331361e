//! Session set-up and tear-down in a loop, to count their system calls (no packets):
//!
//! ```text
//! cargo build --release -p confab-media --example alloc_cycle
//! strace -f -c ./target/release/examples/alloc_cycle 1000 [COOLING_MS]
//! ```
//!
//! Each cycle does what the SIP core does per call: a deferred allocation, the two SDP
//! addresses, a flush, a deferred release, a flush and the wait for the final statistics.
//! `COOLING_MS` (default 0) is `MediaConfig::park_cooling`: 0 shows the steady state of a busy
//! server (every allocation finds a cooled parked pair); with the default 2000 a quick loop
//! never reuses a pair (every allocation binds new sockets, every release parks them).
//! Run it with 0 cycles to see the fixed cost of starting and stopping the engine.

use std::time::Duration;

use confab_media::{Leg, MediaConfig, MediaEngine, RemoteMedia};

fn main() {
    let mut args = std::env::args().skip(1);
    let cycles: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let cooling_ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let engine = MediaEngine::start(MediaConfig {
        workers: 1,
        port_min: 40000,
        port_max: 49999,
        park_cooling: Duration::from_millis(cooling_ms),
        ..MediaConfig::default()
    })
    .expect("media engine");
    let remote = RemoteMedia::new("127.0.0.1:9".parse().expect("address"));
    for _ in 0..cycles {
        let session = engine.allocate_deferred().expect("allocate");
        session
            .set_remote_deferred(Leg::A, remote.clone())
            .expect("set_remote");
        session
            .set_remote_deferred(Leg::B, remote.clone())
            .expect("set_remote");
        engine.flush();
        let pending = session.release_deferred().expect("release");
        engine.flush();
        pending.wait().expect("final statistics");
    }
    eprintln!(
        "cycles={cycles} parked_pairs={} allocated_ports={}",
        engine.parked_pairs(),
        engine.allocated_ports()
    );
}
