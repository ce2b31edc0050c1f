//! Owns the embedded broker's defence against connections that never log in. A TCP or
//! WebSocket connection that has not delivered a CONNECT within `bus.connect_timeout` is
//! closed, and connections still waiting for theirs are capped per client address
//! (`bus.max_pending_per_address`) and in total (`bus.max_pending_connections`), so
//! silent or trickling sockets cannot use up file descriptors or crowd out clients.
//!
//! rmqtt reads a connection's first packet without a deadline and accepts without a
//! limit, and meteomesh's hooks run only once a CONNECT has arrived; so this guard watches
//! the broker's sockets from the outside. Each scan lists the process's connections on the
//! broker's ports (Linux `/proc/self/net/tcp{,6}`), and shuts down the ones to close
//! (found through `/proc/self/fd`, checked by inode on a duplicate of the descriptor, so a
//! reused descriptor number is never touched); rmqtt then sees a closed peer and drops
//! the connection. On other systems the guard does not run.
//!
//! Consumes: the remote addresses of connections that delivered a CONNECT (from the
//! authentication and connected hooks, [`Handshaken`]). Publishes:
//! `meteomesh_bus_connections_refused_total{reason="connect_timeout"|"too_many_pending"}`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// Connections younger than this are never shed for a cap: a burst of clients
/// reconnecting at once (a broker restart, a NAT full of devices) sends its CONNECTs
/// within milliseconds.
const GRACE: Duration = Duration::from_secs(1);

/// The limits on connections that have not sent a CONNECT yet.
#[derive(Debug, Clone, Copy)]
pub struct GuardLimits {
    pub connect_timeout: Duration,
    pub max_pending: usize,
    pub max_pending_per_address: usize,
}

/// Remote addresses of the broker's connections that delivered a CONNECT. Entries of
/// connections that are gone are dropped at each scan.
#[derive(Debug, Default)]
pub struct Handshaken(Mutex<HashSet<SocketAddr>>);

impl Handshaken {
    pub fn connected(&self, addr: SocketAddr) {
        self.lock().insert(canonical(addr));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<SocketAddr>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An IPv4 client seen through a dual-stack socket is the same client.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// One established connection on a broker port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Conn {
    inode: u64,
    remote: SocketAddr,
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    ConnectTimeout,
    TooManyPending,
}

impl Verdict {
    fn reason(self) -> &'static str {
        match self {
            Verdict::ConnectTimeout => "connect_timeout",
            Verdict::TooManyPending => "too_many_pending",
        }
    }
}

/// What the guard remembers between scans: when each waiting connection was first seen.
struct Watch {
    limits: GuardLimits,
    first_seen: HashMap<u64, Instant>,
}

impl Watch {
    /// Decides which of `conns` to close. `handshaken` loses the addresses no longer
    /// connected.
    fn decide(
        &mut self,
        conns: &[Conn],
        handshaken: &mut HashSet<SocketAddr>,
        now: Instant,
    ) -> Vec<(u64, Verdict)> {
        let present: HashSet<SocketAddr> = conns.iter().map(|c| c.remote).collect();
        handshaken.retain(|a| present.contains(a));
        let waiting: Vec<&Conn> = conns
            .iter()
            .filter(|c| !handshaken.contains(&c.remote))
            .collect();
        let inodes: HashSet<u64> = waiting.iter().map(|c| c.inode).collect();
        self.first_seen.retain(|inode, _| inodes.contains(inode));
        let mut aged: Vec<(Instant, &Conn)> = waiting
            .iter()
            .map(|c| (*self.first_seen.entry(c.inode).or_insert(now), *c))
            .collect();
        // Oldest first: they are the likeliest never to finish.
        aged.sort_by_key(|(seen, c)| (*seen, c.inode));

        let mut verdicts = Vec::new();
        let mut kept = Vec::new();
        for (seen, c) in aged {
            let age = now.saturating_duration_since(seen);
            if age >= self.limits.connect_timeout {
                verdicts.push((c.inode, Verdict::ConnectTimeout));
            } else if age >= GRACE {
                kept.push(c);
            }
        }
        let mut per_address: HashMap<std::net::IpAddr, usize> = HashMap::new();
        for c in &kept {
            *per_address.entry(c.remote.ip()).or_default() += 1;
        }
        let mut remaining = Vec::new();
        for c in kept {
            let n = per_address.entry(c.remote.ip()).or_default();
            if *n > self.limits.max_pending_per_address {
                *n -= 1;
                verdicts.push((c.inode, Verdict::TooManyPending));
            } else {
                remaining.push(c);
            }
        }
        let excess = remaining.len().saturating_sub(self.limits.max_pending);
        for c in remaining.into_iter().take(excess) {
            verdicts.push((c.inode, Verdict::TooManyPending));
        }
        for (inode, _) in &verdicts {
            self.first_seen.remove(inode);
        }
        verdicts
    }
}

/// Starts the guard over the broker's listening `ports` (not run outside Linux).
pub fn start(
    ports: Vec<u16>,
    limits: GuardLimits,
    handshaken: Arc<Handshaken>,
    metrics: Arc<Metrics>,
) -> Option<JoinHandle<()>> {
    if !cfg!(target_os = "linux") {
        tracing::warn!(
            "bus.connect_timeout and the pending-connection caps are enforced on Linux only"
        );
        return None;
    }
    // A quarter of the deadline, at most a second: a silent socket lives at most
    // about 1.25 × the deadline.
    let every = (limits.connect_timeout / 4).clamp(Duration::from_millis(100), GRACE);
    Some(tokio::spawn(async move {
        let watch = Arc::new(Mutex::new(Watch {
            limits,
            first_seen: HashMap::new(),
        }));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (ports, watch, handshaken) = (ports.clone(), watch.clone(), handshaken.clone());
            let scanned = tokio::task::spawn_blocking(move || {
                let conns = sys::connections(&ports)?;
                let verdicts = {
                    let mut watch = watch.lock().unwrap_or_else(|e| e.into_inner());
                    let mut handshaken = handshaken.lock();
                    watch.decide(&conns, &mut handshaken, Instant::now())
                };
                if verdicts.is_empty() {
                    return Ok(Vec::new());
                }
                let inodes: Vec<u64> = verdicts.iter().map(|(i, _)| *i).collect();
                let closed = sys::shut_down(&inodes)?;
                Ok::<_, std::io::Error>(
                    verdicts
                        .into_iter()
                        .filter(|(i, _)| closed.contains(i))
                        .map(|(_, v)| v)
                        .collect(),
                )
            })
            .await;
            match scanned {
                Ok(Ok(closed)) => {
                    for verdict in &closed {
                        metrics
                            .bus_connections_refused
                            .with_label_values(&[verdict.reason()])
                            .inc();
                    }
                    if !closed.is_empty() {
                        tracing::info!(
                            closed = closed.len(),
                            "closed broker connections that sent no CONNECT in time or \
                             exceeded the pending-connection caps"
                        );
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot list the broker's connections"),
                Err(e) => tracing::warn!(error = %e, "connection guard scan failed"),
            }
        }
    }))
}

#[cfg(target_os = "linux")]
mod sys {
    //! The Linux side: listing connections and shutting them down by inode.

    use std::collections::HashSet;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    use std::os::fd::RawFd;

    use super::{Conn, canonical};

    /// TCP states worth watching: established, and closed by the peer but not yet by us.
    const ESTABLISHED: &str = "01";
    const CLOSE_WAIT: &str = "08";

    /// This process's connections whose local port is one of `ports`.
    pub fn connections(ports: &[u16]) -> std::io::Result<Vec<Conn>> {
        let mut conns = Vec::new();
        for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
            match std::fs::read_to_string(table) {
                Ok(text) => conns.extend(text.lines().skip(1).filter_map(|l| parse_line(l, ports))),
                // No IPv6 in this kernel.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(conns)
    }

    /// One line of `/proc/net/tcp{,6}`: `sl local rem st tx:rx tr:when retr uid timeout
    /// inode …`, addresses in hex as the kernel stores them.
    pub(super) fn parse_line(line: &str, ports: &[u16]) -> Option<Conn> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, state, inode) = (
            fields.get(1)?,
            fields.get(2)?,
            fields.get(3)?,
            fields.get(9)?,
        );
        if *state != ESTABLISHED && *state != CLOSE_WAIT {
            return None;
        }
        let (_, local_port) = local.split_once(':')?;
        let local_port = u16::from_str_radix(local_port, 16).ok()?;
        if !ports.contains(&local_port) {
            return None;
        }
        let inode: u64 = inode.parse().ok()?;
        if inode == 0 {
            return None;
        }
        Some(Conn {
            inode,
            remote: canonical(parse_addr(remote)?),
        })
    }

    fn parse_addr(field: &str) -> Option<SocketAddr> {
        let (ip, port) = field.split_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        // Each 32-bit word is printed as the kernel holds it: in host byte order.
        let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
        let ip = match ip.len() {
            8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
            32 => {
                let mut bytes = [0u8; 16];
                for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                    chunk.copy_from_slice(&word(ip.get(i * 8..i * 8 + 8)?)?);
                }
                IpAddr::V6(Ipv6Addr::from(bytes))
            }
            _ => return None,
        };
        Some(SocketAddr::new(ip, port))
    }

    /// Shuts down (both directions) this process's sockets with these inodes; returns
    /// the inodes it shut down.
    pub fn shut_down(inodes: &[u64]) -> std::io::Result<HashSet<u64>> {
        let wanted: HashSet<u64> = inodes.iter().copied().collect();
        let mut done = HashSet::new();
        for entry in std::fs::read_dir("/proc/self/fd")? {
            let Ok(entry) = entry else { continue };
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<RawFd>().ok())
            else {
                continue;
            };
            let Ok(target) = std::fs::read_link(entry.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            if wanted.contains(&inode) && !done.contains(&inode) && shut_down_fd(fd, inode) {
                done.insert(inode);
            }
        }
        Ok(done)
    }

    /// Shuts down the socket behind `fd` if it still is socket `inode`: the check and
    /// the shutdown go through a duplicate, so a descriptor number closed and reused in
    /// between is left alone.
    fn shut_down_fd(fd: RawFd, inode: u64) -> bool {
        // SAFETY: dup, fstat, shutdown and close take plain integers and a stat buffer
        // we own; the duplicate is ours alone and closed before returning. Shutting
        // down a socket another part of the process owns is the point: its owner then
        // sees the peer gone and closes its descriptor itself.
        unsafe {
            let dup = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0);
            if dup < 0 {
                return false;
            }
            let mut st: libc::stat = std::mem::zeroed();
            let same = libc::fstat(dup, &mut st) == 0
                && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
                && st.st_ino as u64 == inode;
            let done = same && libc::shutdown(dup, libc::SHUT_RDWR) == 0;
            libc::close(dup);
            done
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::collections::HashSet;

    use super::Conn;

    pub fn connections(_ports: &[u16]) -> std::io::Result<Vec<Conn>> {
        Ok(Vec::new())
    }

    pub fn shut_down(_inodes: &[u64]) -> std::io::Result<HashSet<u64>> {
        Ok(HashSet::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(inode: u64, remote: &str) -> Conn {
        Conn {
            inode,
            remote: remote.parse().unwrap(),
        }
    }

    fn watch(timeout: u64, max_pending: usize, per_address: usize) -> Watch {
        Watch {
            limits: GuardLimits {
                connect_timeout: Duration::from_secs(timeout),
                max_pending,
                max_pending_per_address: per_address,
            },
            first_seen: HashMap::new(),
        }
    }

    #[test]
    fn waiting_connections_close_at_the_deadline_and_logged_in_ones_never() {
        let mut w = watch(10, 100, 100);
        let t0 = Instant::now();
        let conns = [conn(1, "10.0.0.1:5000"), conn(2, "10.0.0.2:5000")];
        let mut handshaken: HashSet<SocketAddr> = ["10.0.0.2:5000".parse().unwrap()].into();
        // A stale entry of a connection that is gone is dropped.
        handshaken.insert("10.0.0.9:1".parse().unwrap());
        assert!(w.decide(&conns, &mut handshaken, t0).is_empty());
        assert_eq!(handshaken.len(), 1);
        assert!(
            w.decide(&conns, &mut handshaken, t0 + Duration::from_secs(9))
                .is_empty()
        );
        assert_eq!(
            w.decide(&conns, &mut handshaken, t0 + Duration::from_secs(10)),
            vec![(1, Verdict::ConnectTimeout)]
        );
        // A connection that sends its CONNECT in time is forgotten by the guard.
        let late = [conn(3, "10.0.0.3:5000")];
        w.decide(&late, &mut handshaken, t0 + Duration::from_secs(11));
        handshaken.insert("10.0.0.3:5000".parse().unwrap());
        assert!(
            w.decide(&late, &mut handshaken, t0 + Duration::from_secs(30))
                .is_empty()
        );
    }

    #[test]
    fn caps_shed_the_oldest_waiting_connections_past_the_grace() {
        let mut w = watch(60, 4, 2);
        let t0 = Instant::now();
        let mut handshaken = HashSet::new();
        let mut conns: Vec<Conn> = (0..5)
            .map(|i| conn(i, &format!("10.0.0.1:{}", 1000 + i)))
            .collect();
        assert!(w.decide(&conns, &mut handshaken, t0).is_empty());
        // Within the grace nothing is shed, whatever the count.
        assert!(
            w.decide(&conns, &mut handshaken, t0 + Duration::from_millis(500))
                .is_empty()
        );
        conns.extend((10..13).map(|i| conn(i, &format!("10.0.0.{i}:1"))));
        let shed = w.decide(&conns, &mut handshaken, t0 + Duration::from_secs(2));
        // 10.0.0.1 keeps 2 of its 5 (the newest); the three newer addresses are still
        // in their grace, so the total of 4 is not exceeded.
        let ids: Vec<u64> = shed.iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, vec![0, 1, 2]);
        assert!(shed.iter().all(|(_, v)| *v == Verdict::TooManyPending));
        conns.retain(|c| !ids.contains(&c.inode));
        let shed = w.decide(&conns, &mut handshaken, t0 + Duration::from_secs(4));
        // Now 2 + 3 are past the grace: one over the total, the oldest.
        assert_eq!(shed, vec![(3, Verdict::TooManyPending)]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn parses_the_kernels_connection_tables() {
        let v4 = "   3: 0100007F:075B 0200007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 20 4 30 10 -1";
        let c = sys::parse_line(v4, &[1883]).unwrap();
        assert_eq!(c.inode, 4242);
        assert_eq!(c.remote, "127.0.0.2:54321".parse().unwrap());
        assert!(sys::parse_line(v4, &[8083]).is_none());
        let listening = v4.replace(" 01 ", " 0A ");
        assert!(sys::parse_line(&listening, &[1883]).is_none());
        let mapped = "   0: 0000000000000000FFFF00000100007F:075B 0000000000000000FFFF00000200007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 77 1";
        assert_eq!(
            sys::parse_line(mapped, &[1883]).unwrap().remote,
            "127.0.0.2:54321".parse().unwrap()
        );
    }
}
