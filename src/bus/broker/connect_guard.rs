//! Owns the embedded broker's defence against connections that never log in. A TCP or
//! WebSocket connection that has not delivered a CONNECT within `bus.connect_timeout` is
//! closed, and connections still waiting for theirs are capped per client address
//! (`bus.max_pending_per_address`) and in total (`bus.max_pending_connections`), so
//! silent or trickling sockets cannot use up file descriptors or crowd out clients.
//!
//! rmqtt reads a connection's first packet without a deadline and accepts without a
//! limit, and meteomesh's hooks run only once a CONNECT has arrived; so this guard watches
//! the broker's sockets from the outside. Each scan walks the process's descriptors
//! (Linux `/proc/self/fd`), tells the connections accepted on the broker's ports by their
//! addresses (each socket once), and shuts down the ones to close, through a duplicate
//! checked by inode so a reused descriptor number is never touched; rmqtt then sees a
//! closed peer and drops the connection. It runs on a small thread of its own; on other
//! systems it does not run.
//!
//! Consumes: the remote addresses of connections whose CONNECT was accepted (from the
//! connected and disconnected hooks, [`Handshaken`]). Publishes:
//! `meteomesh_bus_connections_refused_total{reason="connect_timeout"|"too_many_pending"}`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// A connection's CONNECT that was accepted is remembered at least this long even when
/// no scan has seen its socket yet (it may have come between a scan's listing and its
/// decision).
const HANDSHAKE_MEMORY: Duration = Duration::from_secs(5);

/// Remote addresses of the broker's connections whose CONNECT was accepted, and when.
/// Only accepted ones count: a refused CONNECT must not vouch for a later silent socket
/// from the same address and port. Entries leave on disconnect, or when no connection
/// with the address is left.
#[derive(Debug, Default)]
pub struct Handshaken(Mutex<HashMap<SocketAddr, Instant>>);

impl Handshaken {
    pub fn connected(&self, addr: SocketAddr) {
        self.lock().insert(canonical(addr), Instant::now());
    }

    pub fn disconnected(&self, addr: SocketAddr) {
        self.lock().remove(&canonical(addr));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Instant>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An IPv4 client seen through a dual-stack socket is the same client.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// One established connection on a broker port, at descriptor `fd` when scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Conn {
    inode: u64,
    fd: i32,
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
        handshaken: &mut HashMap<SocketAddr, Instant>,
        now: Instant,
    ) -> Vec<(u64, Verdict)> {
        let present: HashSet<SocketAddr> = conns.iter().map(|c| c.remote).collect();
        handshaken.retain(|a, at| {
            present.contains(a) || now.saturating_duration_since(*at) < HANDSHAKE_MEMORY
        });
        let waiting: Vec<&Conn> = conns
            .iter()
            .filter(|c| !handshaken.contains_key(&c.remote))
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

/// The running guard; it stops when this is dropped.
pub struct Guard {
    _stop: std::sync::mpsc::Sender<()>,
}

/// Starts the guard over the broker's listening `addrs` (not run outside Linux). It runs
/// on a thread of its own: each scan is a few reads of `/proc`, and one thread keeps its
/// buffers instead of spreading allocations over the runtime's blocking pool.
pub fn start(
    addrs: Vec<SocketAddr>,
    limits: GuardLimits,
    handshaken: Arc<Handshaken>,
    metrics: Arc<Metrics>,
) -> Option<Guard> {
    if !cfg!(target_os = "linux") {
        tracing::warn!(
            "bus.connect_timeout and the pending-connection caps are enforced on Linux only"
        );
        return None;
    }
    // A quarter of the deadline, at most a second: a silent socket lives at most
    // about 1.25 × the deadline.
    let every = (limits.connect_timeout / 4).clamp(Duration::from_millis(100), GRACE);
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("connect-guard".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut watch = Watch {
                limits,
                first_seen: HashMap::new(),
            };
            let mut scanner = sys::Scanner::new(&addrs);
            // Ends when the guard is dropped (the sender goes away).
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every)
            {
                match scan_once(&mut scanner, &mut watch, &handshaken) {
                    Ok(closed) => {
                        for verdict in closed {
                            metrics
                                .bus
                                .connections_refused
                                .with_label_values(&[verdict.reason()])
                                .inc();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "connection guard: cannot scan"),
                }
            }
        });
    spawned.ok().map(|_| Guard { _stop: stop })
}

/// One scan: the connections to close, closed; returns why each was.
fn scan_once(
    scanner: &mut sys::Scanner,
    watch: &mut Watch,
    handshaken: &Handshaken,
) -> std::io::Result<Vec<Verdict>> {
    let conns = scanner.connections()?;
    let verdicts = watch.decide(conns, &mut handshaken.lock(), Instant::now());
    Ok(verdicts
        .into_iter()
        .filter(|(inode, _)| {
            conns
                .iter()
                .find(|c| c.inode == *inode)
                .is_some_and(sys::shut_down)
        })
        .map(|(_, v)| v)
        .collect())
}

#[cfg(target_os = "linux")]
mod sys {
    //! The Linux side: this process's connections on the broker's ports, and shutting
    //! them down by inode. Only the process's own descriptors are walked (not the
    //! system's connection tables, whose size is every socket of the host), and each
    //! socket is looked at once: later scans only read its descriptor link.

    use std::collections::{HashMap, HashSet};
    use std::net::SocketAddr;
    use std::os::fd::RawFd;

    use nix::fcntl::{FcntlArg, fcntl};
    use nix::sys::socket::{Shutdown, SockaddrIn, SockaddrIn6, getpeername, getsockname, shutdown};
    use nix::sys::stat::{SFlag, fstat};

    use super::{Conn, canonical};

    /// What a socket of this process is to the guard.
    #[derive(Clone, Copy)]
    enum Kind {
        /// A connection accepted on a broker port, from this address.
        Client(SocketAddr),
        /// Anything else (listeners, outgoing connections, HTTP, the database).
        Other,
    }

    pub struct Scanner {
        ports: Vec<u16>,
        kinds: HashMap<u64, Kind>,
        /// This scan's broker connections.
        conns: Vec<Conn>,
    }

    impl Scanner {
        pub fn new(addrs: &[SocketAddr]) -> Scanner {
            Scanner {
                ports: addrs.iter().map(SocketAddr::port).collect(),
                kinds: HashMap::new(),
                conns: Vec::new(),
            }
        }

        /// This process's connections on a broker port.
        pub fn connections(&mut self) -> std::io::Result<&[Conn]> {
            self.conns.clear();
            let mut present = HashSet::with_capacity(self.kinds.len());
            for entry in std::fs::read_dir("/proc/self/fd")? {
                let Ok(entry) = entry else { continue };
                let Some(fd) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<RawFd>().ok())
                else {
                    continue;
                };
                let Some(inode) = std::fs::read_link(entry.path()).ok().and_then(|t| {
                    t.to_str()?
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse::<u64>()
                        .ok()
                }) else {
                    continue;
                };
                present.insert(inode);
                let kind = match self.kinds.get(&inode) {
                    Some(kind) => *kind,
                    None => {
                        let Some(kind) = classify(fd, inode, &self.ports) else {
                            continue;
                        };
                        self.kinds.insert(inode, kind);
                        kind
                    }
                };
                if let Kind::Client(remote) = kind {
                    self.conns.push(Conn { inode, fd, remote });
                }
            }
            self.kinds.retain(|inode, _| present.contains(inode));
            Ok(&self.conns)
        }
    }

    /// Shuts down (both directions) a connection found by the last scan; `false` when its
    /// descriptor no longer is that socket.
    pub fn shut_down(c: &Conn) -> bool {
        with_socket(c.fd, c.inode, |s| shutdown(s, Shutdown::Both).is_ok()) == Some(true)
    }

    /// What socket `inode` (at `fd`) is; `None` when `fd` no longer is that socket.
    fn classify(fd: RawFd, inode: u64, ports: &[u16]) -> Option<Kind> {
        with_socket(fd, inode, |s| {
            let local = ip_address(getsockname::<SockaddrIn>(s), || getsockname(s));
            let remote = ip_address(getpeername::<SockaddrIn>(s), || getpeername(s));
            match (local, remote) {
                (Some(local), Some(remote)) if ports.contains(&local.port()) => {
                    Kind::Client(canonical(remote))
                }
                _ => Kind::Other,
            }
        })
    }

    /// An IPv4 address, else an IPv6 one (only these two forms, so the binary does not
    /// carry every address family nix knows).
    fn ip_address(
        v4: nix::Result<SockaddrIn>,
        v6: impl FnOnce() -> nix::Result<SockaddrIn6>,
    ) -> Option<SocketAddr> {
        match v4 {
            Ok(a) => Some(SocketAddr::V4(a.into())),
            Err(_) => v6().ok().map(|a| SocketAddr::V6(a.into())),
        }
    }

    /// Runs `f` on a duplicate of `fd` if it still is socket `inode`: a descriptor number
    /// closed and reused since the scan is left alone. Shutting down (not closing) a
    /// socket rmqtt owns is the point: rmqtt then sees its peer gone and closes its
    /// descriptor itself.
    fn with_socket<T>(fd: RawFd, inode: u64, f: impl FnOnce(RawFd) -> T) -> Option<T> {
        let dup = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(0)).ok()?;
        let same = fstat(dup).is_ok_and(|st| {
            SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFSOCK
                && st.st_ino == inode
        });
        let result = same.then(|| f(dup));
        let _ = nix::unistd::close(dup);
        result
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::net::SocketAddr;

    use super::Conn;

    pub struct Scanner;

    impl Scanner {
        pub fn new(_addrs: &[SocketAddr]) -> Scanner {
            Scanner
        }

        pub fn connections(&mut self) -> std::io::Result<&[Conn]> {
            Ok(&[])
        }
    }

    pub fn shut_down(_c: &Conn) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(inode: u64, remote: &str) -> Conn {
        Conn {
            inode,
            fd: -1,
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
        let mut handshaken: HashMap<SocketAddr, Instant> =
            [("10.0.0.2:5000".parse().unwrap(), t0)].into();
        // An entry without a connection stays a while (its socket may not have been
        // listed yet), then goes.
        handshaken.insert("10.0.0.9:1".parse().unwrap(), t0);
        assert!(w.decide(&conns, &mut handshaken, t0).is_empty());
        assert_eq!(handshaken.len(), 2);
        assert!(
            w.decide(&conns, &mut handshaken, t0 + Duration::from_secs(9))
                .is_empty()
        );
        assert_eq!(handshaken.len(), 1, "the stale entry is gone");
        assert_eq!(
            w.decide(&conns, &mut handshaken, t0 + Duration::from_secs(10)),
            vec![(1, Verdict::ConnectTimeout)]
        );
        // A connection that sends its CONNECT in time is forgotten by the guard.
        let late = [conn(3, "10.0.0.3:5000")];
        w.decide(&late, &mut handshaken, t0 + Duration::from_secs(11));
        handshaken.insert("10.0.0.3:5000".parse().unwrap(), t0);
        assert!(
            w.decide(&late, &mut handshaken, t0 + Duration::from_secs(30))
                .is_empty()
        );
    }

    #[test]
    fn caps_shed_the_oldest_waiting_connections_past_the_grace() {
        let mut w = watch(60, 4, 2);
        let t0 = Instant::now();
        let mut handshaken = HashMap::new();
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
    fn finds_and_shuts_down_this_process_connections_on_the_broker_ports() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let (_accepted, from) = listener.accept().unwrap();
        let mut scanner = sys::Scanner::new(&[addr]);
        let conns: Vec<Conn> = scanner.connections().unwrap().to_vec();
        // The accepted side only: the client's own socket has another local port.
        assert_eq!(conns.len(), 1, "{conns:?}");
        assert_eq!(conns[0].remote, from);
        let gone = Conn {
            inode: 12345,
            ..conns[0].clone()
        };
        assert!(
            !sys::shut_down(&gone),
            "another socket's inode is left alone"
        );
        assert!(sys::shut_down(&conns[0]));
        let mut buf = [0u8; 8];
        assert_eq!(client.read(&mut buf).unwrap(), 0, "the peer sees the end");
    }
}
