//! Load generator for the media benchmark: N concurrent G.711 calls, 20 ms packets both ways.
//!
//! `rtp-load --targets FILE [--calls N] [--seconds 10] [--warmup 2] [--drain 1] [--rate 50]
//!           [--size 172] [--sockets 4] [--server-pid PID] [--label NAME]`
//!
//! FILE holds one line per call, "PORT_A PORT_B" on 127.0.0.1 (what `relay-bench-server` or
//! `rtp-echo-floor` prints). Per call, one stream is sent to PORT_A and one to PORT_B, each at
//! `--rate` packets/s of `--size`-byte RTP (PCMU), their send instants spread evenly over the
//! period. The generator's sockets are shared by many calls (the relay latches each leg to
//! whatever source it sees first), so its own cost stays low: batched `sendmmsg`/`recvmmsg`.
//!
//! Every packet carries its stream and send instant. After a warm-up (latching) the window of
//! `--seconds` is measured: packets sent in it, and how many of those came back (through the
//! relay: at the other leg's socket; through the echo floor: at the sender's); latency
//! percentiles; the server's CPU seconds (`/proc/PID/stat`) over the window divided by the
//! packets it delivered in the window. Prints one `key=value` line.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Instant;

use common::{Args, Batch};

const USAGE: &str = "rtp-load --targets FILE [--calls N] [--seconds 10] [--warmup 2] [--drain 1] \
                     [--rate 50] [--size 172] [--sockets 4] [--server-pid PID] [--label NAME]";
const MAGIC: u32 = 0x434f_4e46; // "CONF"
const HEADER: usize = 12 + 16; // RTP header, then magic, stream, send instant (ns)
/// Latency histogram: 10 µs buckets up to 1 s.
const BUCKET_NS: u64 = 10_000;
const BUCKETS: usize = 100_000;

struct Stream {
    socket: usize,
    to: SocketAddrV4,
    seq: u16,
    ssrc: u32,
}

fn main() {
    let args = Args::parse(USAGE);
    let Some(targets) = args.str("targets") else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(targets).unwrap_or_else(|e| {
        eprintln!("rtp-load: {targets}: {e}");
        std::process::exit(2)
    });
    let mut pairs: Vec<(u16, u16)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace().map(str::parse::<u16>);
            match (it.next(), it.next()) {
                (Some(Ok(a)), Some(Ok(b))) => Some((a, b)),
                _ => None,
            }
        })
        .collect();
    let calls: usize = args.get("calls", pairs.len());
    pairs.truncate(calls);
    let calls = pairs.len();
    let seconds: f64 = args.get("seconds", 10.0);
    let warmup: f64 = args.get("warmup", 2.0);
    let drain: f64 = args.get("drain", 1.0);
    let rate: f64 = args.get("rate", 50.0);
    let size: usize = args.get::<usize>("size", 172).clamp(HEADER, common::BUF);
    let socket_pairs: usize = args.get::<usize>("sockets", 4).clamp(1, 64);
    let server_pid = args.str("server-pid").map(str::to_owned);
    let label = args.str("label").unwrap_or("load").to_owned();
    if calls == 0 {
        eprintln!("rtp-load: no targets");
        std::process::exit(2);
    }

    // Sockets 2k face leg A of their calls, 2k+1 leg B.
    let sockets: Vec<_> = (0..2 * socket_pairs)
        .map(|_| common::socket(0).unwrap_or_else(|e| panic!("socket: {e}")))
        .collect();
    let localhost = Ipv4Addr::LOCALHOST;
    let streams: Vec<Stream> = pairs
        .iter()
        .enumerate()
        .flat_map(|(i, &(a, b))| {
            let k = i % socket_pairs;
            [
                Stream {
                    socket: 2 * k,
                    to: SocketAddrV4::new(localhost, a),
                    seq: 0,
                    ssrc: 2 * i as u32 + 1,
                },
                Stream {
                    socket: 2 * k + 1,
                    to: SocketAddrV4::new(localhost, b),
                    seq: 0,
                    ssrc: 2 * i as u32 + 2,
                },
            ]
        })
        .collect();
    let mut streams = streams;
    let n_streams = streams.len();
    let period_ns = (1e9 / rate) as u64;
    let warm_ns = (warmup * 1e9) as u64;
    let end_ns = warm_ns + (seconds * 1e9) as u64;
    let stop_ns = end_ns + (drain * 1e9) as u64;

    let mut send_batches: Vec<Batch> = (0..sockets.len()).map(|_| Batch::new(64)).collect();
    let mut recv_batch = Batch::new(64);
    let mut pollfds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();

    let mut hist = vec![0u64; BUCKETS + 1];
    let (mut sent_window, mut received_window, mut delivered_in_window) = (0u64, 0u64, 0u64);
    let (mut sent_total, mut received_total, mut refused) = (0u64, 0u64, 0u64);
    let mut max_lag_ns = 0u64;
    let mut cpu_start: Option<(Option<f64>, Option<f64>)> = None;
    let mut cpu_end: Option<(Option<f64>, Option<f64>)> = None;
    let server_cpu = || server_pid.as_deref().and_then(common::cpu_seconds);
    let self_cpu = || common::cpu_seconds("self");

    let start = Instant::now();
    let (mut round, mut cursor) = (0u64, 0usize);
    let max_iterations = 1_000_000_000u64; // a bound far above any real run
    for _ in 0..max_iterations {
        let t = start.elapsed().as_nanos() as u64;
        if t >= stop_ns {
            break;
        }
        if cpu_start.is_none() && t >= warm_ns {
            cpu_start = Some((server_cpu(), self_cpu()));
        }
        if cpu_end.is_none() && t >= end_ns {
            cpu_end = Some((server_cpu(), self_cpu()));
        }

        // Send every stream whose turn has come (at most one round per iteration).
        if t < end_ns {
            for _ in 0..n_streams {
                let due = round * period_ns + (cursor as u64 * period_ns) / n_streams as u64;
                if due > t {
                    break;
                }
                max_lag_ns = max_lag_ns.max(t - due);
                let s = &mut streams[cursor];
                let batch = &mut send_batches[s.socket];
                if batch.len == batch.capacity() {
                    let took = batch.send(sockets[s.socket].as_raw_fd());
                    refused += (batch.capacity() - took) as u64;
                }
                let now_ns = start.elapsed().as_nanos() as u64;
                let p = batch.push(size, s.to);
                p[0] = 0x80;
                p[1] = 0; // PCMU
                p[2..4].copy_from_slice(&s.seq.to_be_bytes());
                p[4..8].copy_from_slice(&(u32::from(s.seq).wrapping_mul(160)).to_be_bytes());
                p[8..12].copy_from_slice(&s.ssrc.to_be_bytes());
                p[12..16].copy_from_slice(&MAGIC.to_be_bytes());
                p[16..20].copy_from_slice(&(cursor as u32).to_be_bytes());
                p[20..28].copy_from_slice(&now_ns.to_be_bytes());
                s.seq = s.seq.wrapping_add(1);
                sent_total += 1;
                if (warm_ns..end_ns).contains(&now_ns) {
                    sent_window += 1;
                }
                cursor += 1;
                if cursor == n_streams {
                    cursor = 0;
                    round += 1;
                }
            }
            for (i, batch) in send_batches.iter_mut().enumerate() {
                if batch.len > 0 {
                    let queued = batch.len;
                    refused += (queued - batch.send(sockets[i].as_raw_fd())) as u64;
                }
            }
        }

        // Wait for replies until the next send is due (at most 1 ms).
        let next_due = round * period_ns + (cursor as u64 * period_ns) / n_streams as u64;
        let now = start.elapsed().as_nanos() as u64;
        let wait_ms = if now >= end_ns {
            1
        } else {
            next_due.saturating_sub(now).div_ceil(1_000_000).min(1)
        };
        // SAFETY: pollfds is a live array of the given length.
        let ready = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as _, wait_ms as i32) };
        if ready <= 0 {
            continue;
        }
        for pfd in pollfds.iter_mut() {
            if pfd.revents & libc::POLLIN == 0 {
                continue;
            }
            // Drain this socket, bounded.
            for _ in 0..64 {
                let n = recv_batch.recv(pfd.fd);
                let arrival = start.elapsed().as_nanos() as u64;
                for i in 0..n {
                    let d = recv_batch.data(i);
                    if d.len() < HEADER || d[12..16] != MAGIC.to_be_bytes() {
                        continue;
                    }
                    let sent_at = u64::from_be_bytes(d[20..28].try_into().unwrap_or_default());
                    received_total += 1;
                    if (warm_ns..end_ns).contains(&arrival) {
                        delivered_in_window += 1;
                    }
                    if (warm_ns..end_ns).contains(&sent_at) {
                        received_window += 1;
                        let bucket = (arrival.saturating_sub(sent_at) / BUCKET_NS) as usize;
                        hist[bucket.min(BUCKETS)] += 1;
                    }
                }
                if n < recv_batch.capacity() {
                    break;
                }
            }
        }
    }

    let percentile = |q: f64| -> f64 {
        let total: u64 = hist.iter().sum();
        if total == 0 {
            return f64::NAN;
        }
        let target = (q * total as f64).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (i, &c) in hist.iter().enumerate() {
            acc += c;
            if acc >= target {
                return (i as f64 + 0.5) * BUCKET_NS as f64 / 1000.0;
            }
        }
        f64::INFINITY
    };
    let window_s = seconds;
    let lost = sent_window.saturating_sub(received_window);
    let loss_pct = if sent_window > 0 {
        100.0 * lost as f64 / sent_window as f64
    } else {
        0.0
    };
    // CPU seconds over the window, and µs per packet delivered in the window.
    let cpu = |which: usize| -> Option<(f64, f64)> {
        let (a, b) = (cpu_start?, cpu_end?);
        let (a, b) = if which == 0 {
            (a.0?, b.0?)
        } else {
            (a.1?, b.1?)
        };
        Some((b - a, (b - a) * 1e6 / delivered_in_window.max(1) as f64))
    };
    let show = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "nan".to_owned(), |v| format!("{v:.digits$}"))
    };
    let (server, generator) = (cpu(0), cpu(1));
    let (server_cpu_s, server_us) = (show(server.map(|v| v.0), 3), show(server.map(|v| v.1), 3));
    let (gen_cpu_s, gen_us) = (
        show(generator.map(|v| v.0), 3),
        show(generator.map(|v| v.1), 3),
    );
    println!(
        "label={label} calls={calls} offered_pps={:.0} window_s={window_s} sent={sent_window} received={received_window} \
         lost={lost} loss_pct={loss_pct:.4} delivered_pps={:.0} p50_us={:.0} p99_us={:.0} p999_us={:.0} \
         server_cpu_s={server_cpu_s} server_us_per_pkt={server_us} gen_cpu_s={gen_cpu_s} gen_us_per_pkt={gen_us} \
         gen_max_lag_ms={:.1} refused={refused} sent_total={sent_total} received_total={received_total}",
        n_streams as f64 * rate,
        delivered_in_window as f64 / window_s,
        percentile(0.5),
        percentile(0.99),
        percentile(0.999),
        max_lag_ns as f64 / 1e6,
    );
}
