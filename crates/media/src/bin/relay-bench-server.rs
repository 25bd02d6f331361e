//! The relay as a separate process for the media benchmark.
//!
//! `relay-bench-server --sessions N [--port-min P] [--port-max Q] [--workers 1] [--lifetime S]`
//!
//! Starts a `MediaEngine` on 127.0.0.1, allocates N sessions and prints one line per session,
//! "PORT_A PORT_B" (the two legs' RTP ports), then "ready". No SDP addresses are set: each leg
//! latches to the load generator's first packet, as with phones behind NAT. At EOF on stdin
//! (or after `--lifetime` seconds) it prints the summed statistics to stderr and exits.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::Args;
use confab_media::{MediaConfig, MediaEngine};

const USAGE: &str = "relay-bench-server --sessions N [--port-min 40000] [--port-max 59999] [--workers 1] [--coalesce-us 200] [--lifetime 600]";

fn main() {
    let args = Args::parse(USAGE);
    let sessions: usize = args.get("sessions", 100);
    let lifetime = Duration::from_secs(args.get("lifetime", 600));
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let config = MediaConfig {
        bind_ip: localhost,
        advertise_ip: localhost,
        port_min: args.get("port-min", 40000),
        port_max: args.get("port-max", 59999),
        workers: args.get("workers", 1),
        coalesce: match args.str("coalesce-us") {
            Some(_) => Duration::from_micros(args.get("coalesce-us", 0)),
            None => MediaConfig::default().coalesce,
        },
        ..MediaConfig::default()
    };
    let engine = match MediaEngine::start(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("relay-bench-server: {e}");
            std::process::exit(1);
        }
    };
    let mut all = Vec::with_capacity(sessions);
    let mut out = std::io::stdout().lock();
    for _ in 0..sessions {
        match engine.allocate() {
            Ok(s) => {
                let _ = writeln!(out, "{} {}", s.a_port(), s.b_port());
                all.push(s);
            }
            Err(e) => {
                eprintln!("relay-bench-server: allocate: {e}");
                std::process::exit(1);
            }
        }
    }
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    drop(out);

    // The process ends after `lifetime` whatever happens to the driver.
    std::thread::spawn(move || {
        std::thread::sleep(lifetime);
        eprintln!("relay-bench-server: lifetime reached");
        std::process::exit(3);
    });
    let mut sink = Vec::new();
    let _ = std::io::stdin().lock().take(1 << 20).read_to_end(&mut sink);

    let (mut rtp, mut fwd, mut lost, mut foreign, mut nodest, mut malformed, mut send_failed) =
        (0, 0, 0i64, 0, 0, 0, 0);
    let mut jitter_max = Duration::ZERO;
    for s in all {
        let Ok(stats) = s.release() else { continue };
        for leg in [&stats.a, &stats.b] {
            rtp += leg.rtp.packets;
            fwd += leg.forwarded.packets;
            lost += leg.lost;
            foreign += leg.dropped.foreign_source;
            nodest += leg.dropped.no_destination;
            malformed += leg.dropped.malformed;
            send_failed += leg.dropped.send_failed;
            jitter_max = jitter_max.max(leg.jitter.unwrap_or_default());
        }
    }
    eprintln!(
        "relay: rtp_in={rtp} forwarded={fwd} lost_in={lost} no_destination={nodest} foreign={foreign} \
         malformed={malformed} send_failed={send_failed} jitter_max_us={} ports_left={}",
        jitter_max.as_micros(),
        engine.allocated_ports()
    );
}
