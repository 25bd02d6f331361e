//! The relay's port range: even RTP ports, each with RTCP on the odd port above it.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::Error;

/// Free RTP ports (even), handed out least recently used first, so a late packet of an ended
/// call is unlikely to reach the next call on the same port.
#[derive(Debug)]
pub(crate) struct PortPool {
    free: VecDeque<u16>,
    leased: usize,
    min: u16,
    max: u16,
}

impl PortPool {
    pub(crate) fn new(min: u16, max: u16) -> Result<Self, Error> {
        let first = min
            .checked_add(min % 2)
            .ok_or(Error::Config("port_min too high"))?;
        let free: VecDeque<u16> = (first..max).step_by(2).collect();
        if free.len() < 2 {
            return Err(Error::Config(
                "the port range holds fewer than two RTP/RTCP pairs",
            ));
        }
        Ok(Self {
            free,
            leased: 0,
            min,
            max,
        })
    }
}

fn lock(pool: &Mutex<PortPool>) -> MutexGuard<'_, PortPool> {
    // The pool's invariants hold between statements; a panic elsewhere cannot break them.
    pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Ports currently leased (two per pair).
pub(crate) fn leased_ports(pool: &Mutex<PortPool>) -> usize {
    lock(pool).leased * 2
}

/// A leased pair; the ports go back to the pool when this is dropped.
#[derive(Debug)]
struct PortLease {
    pool: Arc<Mutex<PortPool>>,
    rtp_port: u16,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut pool = lock(&self.pool);
        pool.leased -= 1;
        pool.free.push_back(self.rtp_port);
    }
}

/// A bound RTP/RTCP socket pair. Field order matters: the sockets close before the lease
/// returns their ports to the pool.
#[derive(Debug)]
pub(crate) struct PortPair {
    pub(crate) rtp: UdpSocket,
    pub(crate) rtcp: UdpSocket,
    lease: PortLease,
}

impl PortPair {
    pub(crate) fn rtp_port(&self) -> u16 {
        self.lease.rtp_port
    }
}

/// Leases a pair from the pool and binds both sockets (non-blocking). Ports that another
/// process holds are skipped (and go to the back of the queue); every pair is tried at most once.
pub(crate) fn bind_pair(pool: &Arc<Mutex<PortPool>>, ip: IpAddr) -> Result<PortPair, Error> {
    let (attempts, min, max) = {
        let p = lock(pool);
        (p.free.len(), p.min, p.max)
    };
    for _ in 0..attempts {
        let lease = {
            let mut p = lock(pool);
            let Some(rtp_port) = p.free.pop_front() else {
                break;
            };
            p.leased += 1;
            PortLease {
                pool: Arc::clone(pool),
                rtp_port,
            }
        };
        let bind = |port: u16| -> io::Result<UdpSocket> {
            let socket = UdpSocket::bind(SocketAddr::new(ip, port))?;
            socket.set_nonblocking(true)?;
            Ok(socket)
        };
        match bind(lease.rtp_port).and_then(|rtp| Ok((rtp, bind(lease.rtp_port + 1)?))) {
            Ok((rtp, rtcp)) => return Ok(PortPair { rtp, rtcp, lease }),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(Error::Io(e)),
        }
    }
    Err(Error::NoFreePorts { min, max })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_and_inside_the_range() {
        let p = PortPool::new(20001, 20010).unwrap();
        assert_eq!(Vec::from(p.free), [20002, 20004, 20006, 20008]);
        assert!(PortPool::new(20000, 20002).is_err());
        assert!(PortPool::new(65535, 65535).is_err());
    }
}
