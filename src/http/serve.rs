//! Owns the HTTP listener's connection handling: an accept loop with a cap on open
//! connections and one per client address (so one address cannot take every slot), a
//! deadline for reading request headers (which also closes idle keep-alive connections),
//! the client address behind a trusted reverse proxy, and a graceful stop that lets
//! requests in flight finish.
//!
//! axum's own `serve` sets no header deadline, so one client dribbling header bytes — or a
//! few hundred idle sockets — could hold the gateway of a small device forever.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Connection limits for the HTTP listener.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections served at once; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Connections one client address may hold; more are answered 429 and closed.
    pub max_per_client: usize,
    /// Time a client has to send a request's headers, counted from the connection's start
    /// or the end of the previous response.
    pub header_timeout: Duration,
    /// Reverse proxies: not capped per address; their `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<[IpAddr]>,
}

impl From<&crate::config::HttpConfig> for ConnectionLimits {
    fn from(cfg: &crate::config::HttpConfig) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: cfg.max_connections,
            max_per_client: cfg.max_connections_per_client,
            header_timeout: cfg.header_timeout,
            trusted_proxies: cfg.trusted_proxies.clone().into(),
        }
    }
}

/// Open connections per client address.
#[derive(Clone, Default)]
struct PerClient(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection counted against its address until dropped.
struct ClientSlot {
    counts: PerClient,
    ip: IpAddr,
}

impl PerClient {
    fn take(&self, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// The client's address: the peer's, or for a trusted proxy the last address it put in
/// `X-Forwarded-For` (the one the proxy itself saw; earlier entries are the client's word).
fn client_address(peer: SocketAddr, headers: &hyper::HeaderMap, trusted: &[IpAddr]) -> SocketAddr {
    if !trusted.contains(&peer.ip()) {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .and_then(|last| last.trim().parse::<IpAddr>().ok())
        .map_or(peer, |ip| SocketAddr::new(ip, 0))
}

/// How long a stop lets requests in flight finish (the whole stop has 5 s).
pub const DRAIN: Duration = Duration::from_secs(1);

/// The answer to a client over its per-address cap.
const BUSY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
        retry-after: 1\r\nconnection: close\r\ncontent-length: 89\r\n\r\n\
        {\"error\":{\"code\":\"too_many_requests\",\"message\":\"too many connections from this address\"}}";

/// Answers a client over its per-address cap and closes the connection.
async fn refuse_busy_client(mut stream: tokio::net::TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY)).await;
    let _ = stream.shutdown().await;
}

/// Serves `router` until `shutdown`, then stops accepting, lets every connection finish
/// its request in flight (for up to `DRAIN`) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Cuts off the requests a graceful stop could not finish within [`DRAIN`].
    let force = CancellationToken::new();
    let per_client = PerClient::default();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let proxy = limits.trusted_proxies.contains(&peer.ip());
        let client_slot = if proxy {
            None
        } else {
            match per_client.take(peer.ip(), limits.max_per_client) {
                Some(s) => Some(s),
                None => {
                    tracing::debug!(client = %peer.ip(), "HTTP connection refused: too many from this address");
                    tokio::spawn(async move {
                        let _slot = slot;
                        refuse_busy_client(stream).await;
                    });
                    continue;
                }
            }
        };
        let trusted = limits.trusted_proxies.clone();
        let service = router
            .clone()
            .map_request(move |req: hyper::Request<Incoming>| {
                let client = client_address(peer, req.headers(), &trusted);
                let mut req = req.map(Body::new);
                req.extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(client));
                req
            });
        let connection =
            http1.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let (stop, force) = (shutdown.clone(), force.clone());
        tokio::spawn(async move {
            let _slots = (slot, client_slot);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                r = connection.as_mut() => log_end(r),
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    tokio::select! {
                        r = connection.as_mut() => log_end(r),
                        () = force.cancelled() => {}
                    }
                }
            }
        });
    }
    // Every connection holds a slot until it ends: owning them all means all have ended.
    let all = slots.acquire_many(limits.max_connections as u32);
    if tokio::time::timeout(DRAIN, all).await.is_err() {
        tracing::warn!(
            open = limits.max_connections - slots.available_permits(),
            "HTTP requests still running after {DRAIN:?}; cutting them off"
        );
        force.cancel();
    }
    Ok(())
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        // Header timeouts, resets and malformed requests: the client's business.
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_answer_is_well_formed() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut h = hyper::HeaderMap::new();
        h.append("x-forwarded-for", "6.6.6.6, 192.0.2.7".parse().unwrap());
        let trusted: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
        assert_eq!(
            client_address(peer, &h, &trusted).ip().to_string(),
            "192.0.2.7"
        );
        assert_eq!(client_address(peer, &h, &[]), peer);
        h.insert("x-forwarded-for", "not-an-address".parse().unwrap());
        assert_eq!(client_address(peer, &h, &trusted), peer);
    }
}
