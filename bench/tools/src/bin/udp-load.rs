//! A tiny paced UDP sender for the floor measurement: sends datagrams of a
//! fixed size to `--target` at `--rate` per second for `--secs` seconds from
//! one socket and counts the echoes that come back on it.
//!
//! ```text
//! udp-load --target 127.0.0.1:PORT [--rate 50000] [--secs 5] [--size 500]
//! ```
//! Prints one line: `sent=N received=M lost=L secs=S rate=R`.
//! Bounded: it stops sending after `--secs` (at most 120) and waits at most one
//! second more for the last echoes.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

struct Args {
    target: SocketAddr,
    rate: u64,
    secs: u64,
    size: usize,
}

fn parse_args() -> Option<Args> {
    let mut target = None;
    let mut args_rate = 50_000;
    let mut secs = 5;
    let mut size = 500;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next()?;
        match flag.as_str() {
            "--target" => target = Some(value.parse().ok()?),
            "--rate" => args_rate = value.parse().ok().filter(|r| (1..=2_000_000).contains(r))?,
            "--secs" => secs = value.parse().ok().filter(|s| (1..=120).contains(s))?,
            "--size" => size = value.parse().ok().filter(|s| (1..=1400).contains(s))?,
            _ => return None,
        }
    }
    Some(Args {
        target: target?,
        rate: args_rate,
        secs,
        size,
    })
}

fn main() -> ExitCode {
    let Some(args) = parse_args() else {
        eprintln!("usage: udp-load --target 127.0.0.1:PORT [--rate 50000] [--secs 5] [--size 500]");
        return ExitCode::from(2);
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> io::Result<()> {
    if !args.target.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "target must be a loopback address",
        ));
    }
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(args.target)?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let rx_sock = sock.try_clone()?;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let rx = {
        let received = Arc::clone(&received);
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut buf = vec![0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                match rx_sock.recv(&mut buf) {
                    Ok(_) => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => continue,
                }
            }
        })
    };

    let payload = vec![b'x'; args.size];
    let start = Instant::now();
    let total = args.rate * args.secs;
    // Pace in 1 ms slots: by slot k, k * rate / 1000 datagrams are due.
    let mut sent: u64 = 0;
    let mut slot: u64 = 0;
    while sent < total {
        slot += 1;
        let due = (slot * args.rate / 1000).min(total);
        while sent < due {
            match sock.send(&payload) {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => sent += 1,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let next = start + Duration::from_millis(slot);
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        }
        if now.duration_since(start) > Duration::from_secs(args.secs + 5) {
            break; // cannot keep up; stop anyway, bounded in time
        }
    }
    let send_secs = start.elapsed().as_secs_f64();
    // Let the last echoes arrive (bounded).
    let wait_until = Instant::now() + Duration::from_secs(1);
    while received.load(Ordering::Relaxed) < sent && Instant::now() < wait_until {
        thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = rx.join();
    let got = received.load(Ordering::Relaxed);
    println!(
        "sent={sent} received={got} lost={} secs={send_secs:.2} rate={:.0}",
        sent.saturating_sub(got),
        sent as f64 / send_secs
    );
    Ok(())
}
