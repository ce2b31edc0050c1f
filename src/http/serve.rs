//! Owns the HTTP listener's connection handling: an accept loop with a cap on open
//! connections, a deadline for reading request headers (which also closes idle keep-alive
//! connections), and a graceful stop that lets requests in flight finish.
//!
//! axum's own `serve` sets no header deadline, so one client dribbling header bytes — or a
//! few hundred idle sockets — could hold the gateway of a small device forever.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Connection limits for the HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, counted from the connection's start
    /// or the end of the previous response.
    pub header_timeout: Duration,
}

impl From<&crate::config::HttpConfig> for ConnectionLimits {
    fn from(cfg: &crate::config::HttpConfig) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: cfg.max_connections,
            header_timeout: cfg.header_timeout,
        }
    }
}

/// Serves `router` until `shutdown`, then stops accepting, lets every connection finish
/// its request in flight and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
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
        let service = router
            .clone()
            .map_request(move |req: hyper::Request<Incoming>| {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                req
            });
        let connection =
            http1.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                r = connection.as_mut() => log_end(r),
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    log_end(connection.await);
                }
            }
        });
    }
    // Every connection holds a slot until it ends: owning them all means all have ended.
    let _all = slots
        .acquire_many(limits.max_connections as u32)
        .await
        .expect("the semaphore is never closed");
    Ok(())
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        // Header timeouts, resets and malformed requests: the client's business.
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}
