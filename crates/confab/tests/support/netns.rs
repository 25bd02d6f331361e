//! Network namespaces for the NAT test: a "public" segment (100.64.0.0/24, a bridge in the
//! server's namespace), and per phone a router namespace doing source NAT (nftables masquerade)
//! in front of a phone namespace on a private 10.x network.
//!
//! ```text
//!   phone A ns          router A ns                   public ns (Confab)           router B ns          phone B ns
//!   eth0 10.0.1.2 ── lan 10.0.1.1 | wan 100.64.0.11 ── br0 100.64.0.1 ── wan 100.64.0.12 | lan 10.0.2.1 ── eth0 10.0.2.2
//!                    masquerade                                           masquerade fully-random
//! ```
//!
//! Routers forward only replies inward (`ct state established,related`), and their idle UDP
//! mappings expire after 30 s (`nf_conntrack_udp_timeout{,_stream}`), like a carrier's. The
//! public namespace has no route to 10.0.0.0/8. Names live in /run/netns, shared with the host, so
//! each lab's names carry a unique prefix; every namespace is deleted on drop. Nothing here
//! touches the namespace the tests run in except through `ip netns`.

use std::fs::File;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use crate::common::run_bounded;

/// Runs `f` on a fresh thread that first enters namespace `ns`; sockets it creates stay in `ns`
/// for their whole life, whichever thread uses them later.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path)?;
        // SAFETY: setns(2) on a file descriptor we own; it changes only this (short-lived)
        // thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| std::io::Error::other("namespace thread panicked"))?
}

/// A TCP connection made from inside `ns`.
pub fn connect_tcp_in(ns: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    in_netns(ns, move || {
        TcpStream::connect_timeout(&to, Duration::from_millis(500))
    })
}

/// A UDP socket bound inside `ns`.
pub fn udp_socket_in(ns: &str, bind: SocketAddr) -> std::io::Result<UdpSocket> {
    in_netns(ns, move || UdpSocket::bind(bind))
}

/// Runs a command, bounded; panics with its output when it fails.
pub fn sh(args: &[&str]) -> String {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]);
    let out = run_bounded(cmd, Duration::from_secs(20));
    assert!(
        out.status.success(),
        "`{}` failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ip netns exec ns ARGS…`.
pub fn ns_sh(ns: &str, args: &[&str]) -> String {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    sh(&full)
}

/// Fails (never skips) when this process cannot build namespaces, naming what is missing.
pub fn require_netns_support() {
    let euid = unsafe_free_euid();
    assert_eq!(
        euid,
        Some(0),
        "the NAT test builds network namespaces and needs root (it runs as root in CI, inside \
         `unshare -n`); effective uid here: {euid:?}"
    );
    crate::common::require_program("ip", "iproute2");
    crate::common::require_program("nft", "nftables");
    let probe = format!("cfprobe{}", std::process::id());
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "add", &probe]);
    let out = run_bounded(cmd, Duration::from_secs(10));
    let mut del = Command::new("ip");
    del.args(["netns", "del", &probe]);
    let _ = run_bounded(del, Duration::from_secs(10));
    assert!(
        out.status.success(),
        "`ip netns add` does not work here ({}): {} — the NAT test needs a writable /run/netns and \
         CAP_SYS_ADMIN",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The effective uid, read from /proc (no libc call needed).
fn unsafe_free_euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// How a router maps ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// Linux's default masquerade: keeps the source port when it can.
    PortPreserving,
    /// `masquerade fully-random`: a random public port for every new flow, like a carrier NAT.
    FullyRandom,
}

/// One NATed site: a router namespace and the phone namespace behind it.
#[derive(Clone, Debug)]
pub struct Site {
    pub router_ns: String,
    pub phone_ns: String,
    /// The phone's private address.
    pub phone_ip: std::net::Ipv4Addr,
    /// The router's public (wan) address, the source Confab sees.
    pub public_ip: std::net::Ipv4Addr,
}

/// The whole topology, deleted on drop.
pub struct NatLab {
    pub public_ns: String,
    /// Confab's address on the public segment.
    pub server_ip: std::net::Ipv4Addr,
    pub sites: Vec<Site>,
    created: Vec<String>,
}

impl NatLab {
    /// Builds the public segment and one site per entry of `kinds`.
    pub fn build(kinds: &[NatKind]) -> Self {
        require_netns_support();
        let prefix = format!("cf{}", std::process::id() % 100_000);
        let mut lab = Self {
            public_ns: format!("{prefix}pub"),
            server_ip: [100, 64, 0, 1].into(),
            sites: Vec::new(),
            created: Vec::new(),
        };
        lab.add_ns(&lab.public_ns.clone());
        let p = lab.public_ns.clone();
        sh(&["ip", "-n", &p, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &p, "addr", "add", "100.64.0.1/24", "dev", "br0"]);
        sh(&["ip", "-n", &p, "link", "set", "br0", "up"]);
        for (i, kind) in kinds.iter().enumerate() {
            let n = i + 1;
            let site = Site {
                router_ns: format!("{prefix}rt{n}"),
                phone_ns: format!("{prefix}ph{n}"),
                phone_ip: [10, 0, n as u8, 2].into(),
                public_ip: [100, 64, 0, 10 + n as u8].into(),
            };
            lab.add_ns(&site.router_ns);
            lab.add_ns(&site.phone_ns);
            let (r, ph) = (site.router_ns.as_str(), site.phone_ns.as_str());
            let port = format!("port{n}");
            // Public side: router wan ↔ bridge port in the public namespace.
            sh(&[
                "ip", "-n", &p, "link", "add", &port, "type", "veth", "peer", "name", "wan",
                "netns", r,
            ]);
            sh(&["ip", "-n", &p, "link", "set", &port, "master", "br0"]);
            sh(&["ip", "-n", &p, "link", "set", &port, "up"]);
            sh(&[
                "ip",
                "-n",
                r,
                "addr",
                "add",
                &format!("{}/24", site.public_ip),
                "dev",
                "wan",
            ]);
            sh(&["ip", "-n", r, "link", "set", "wan", "up"]);
            // Private side: router lan ↔ phone eth0.
            sh(&[
                "ip", "-n", r, "link", "add", "lan", "type", "veth", "peer", "name", "eth0",
                "netns", ph,
            ]);
            sh(&[
                "ip",
                "-n",
                r,
                "addr",
                "add",
                &format!("10.0.{n}.1/24"),
                "dev",
                "lan",
            ]);
            sh(&["ip", "-n", r, "link", "set", "lan", "up"]);
            sh(&[
                "ip",
                "-n",
                ph,
                "addr",
                "add",
                &format!("{}/24", site.phone_ip),
                "dev",
                "eth0",
            ]);
            sh(&["ip", "-n", ph, "link", "set", "eth0", "up"]);
            sh(&[
                "ip",
                "-n",
                ph,
                "route",
                "add",
                "default",
                "via",
                &format!("10.0.{n}.1"),
            ]);
            // The router: forward, NAT outward, let only replies in.
            ns_sh(r, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            let random = if *kind == NatKind::FullyRandom {
                " fully-random"
            } else {
                ""
            };
            let rules = format!(
                "table ip nat {{\n\
                 \tchain postrouting {{\n\
                 \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
                 \t\toifname \"wan\" masquerade{random}\n\
                 \t}}\n\
                 }}\n\
                 table ip filter {{\n\
                 \tchain forward {{\n\
                 \t\ttype filter hook forward priority filter; policy drop;\n\
                 \t\tiifname \"lan\" oifname \"wan\" accept\n\
                 \t\tiifname \"wan\" oifname \"lan\" ct state established,related accept\n\
                 \t}}\n\
                 }}\n"
            );
            let file = std::env::temp_dir().join(format!("{r}.nft"));
            std::fs::write(&file, rules).expect("write nft rules");
            ns_sh(r, &["nft", "-f", &file.display().to_string()]);
            let _ = std::fs::remove_file(&file);
            // Conntrack is loaded now (the nat table needs it): idle UDP mappings last 30 s.
            ns_sh(
                r,
                &[
                    "sysctl",
                    "-qw",
                    "net.netfilter.nf_conntrack_udp_timeout=30",
                    "net.netfilter.nf_conntrack_udp_timeout_stream=30",
                ],
            );
            lab.sites.push(site);
        }
        lab
    }

    fn add_ns(&mut self, name: &str) {
        // A namespace left over from a crashed run of the same pid would make `add` fail.
        let mut del = Command::new("ip");
        del.args(["netns", "del", name]);
        let _ = run_bounded(del, Duration::from_secs(10));
        sh(&["ip", "netns", "add", name]);
        self.created.push(name.to_string());
        sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }

    /// The router's conntrack entries (for failure messages).
    pub fn conntrack(&self, site: &Site) -> String {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &site.router_ns,
            "cat",
            "/proc/net/nf_conntrack",
        ]);
        let out = run_bounded(cmd, Duration::from_secs(10));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for name in self.created.iter().rev() {
            // `ip netns del` only unmounts; it cannot hang.
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
