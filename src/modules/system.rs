//! Owns this node's presence on the bus and the bus self-check.
//!
//! Publishes: `nodes/{node}/status` (retained `online` at start, `offline` on clean
//! shutdown and as the broker-side last will), `system/pong` answers.
//! Consumes: `system/ping` (from anyone), `system/pong` (answers to its own checks).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{BusClient, BusError, Inbox};
use crate::contract::{self, BusMessage, NodeState, NodeStatus, Ping, Pong};
use crate::modules::ModuleCtx;

const MAX_PING_ID_LEN: usize = 64;

/// Handle used by HTTP and start-up to check the bus end to end.
#[derive(Clone)]
pub struct SystemService {
    client: BusClient,
    node_id: Arc<str>,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
}

impl SystemService {
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn bus_connected(&self) -> bool {
        self.client.is_connected()
    }

    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), BusError> {
        self.client.wait_connected(timeout).await
    }

    /// Publishes a ping and waits for this node's own answer: proves the broker routes
    /// messages and this module's subscriptions are live.
    pub async fn roundtrip(&self, timeout: Duration) -> Result<Duration, BusError> {
        let id = format!("{}-{:016x}", self.node_id, rand::random::<u64>());
        let (tx, rx) = oneshot::channel();
        self.lock_pending().insert(id.clone(), tx);
        let started = Instant::now();
        let outcome = async {
            self.client
                .publish(contract::PING, &Ping { id: id.clone() })
                .await?;
            tokio::time::timeout(timeout, rx)
                .await
                .map_err(|_| BusError::NotConnected(timeout))?
                .map_err(|_| BusError::Closed)
        }
        .await;
        self.lock_pending().remove(&id);
        outcome.map(|()| started.elapsed())
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<()>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn status(node_id: &str, state: NodeState, started_at: u64) -> NodeStatus {
    NodeStatus {
        node: node_id.to_owned(),
        state,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at,
    }
}

/// Starts the module's session and loop. The returned task ends after `shutdown`, once
/// the `offline` status is published and the session closed.
pub async fn start(
    ctx: &ModuleCtx<'_>,
    started_at: u64,
) -> Result<(SystemService, JoinHandle<()>), BusError> {
    let (bus, node_id, shutdown) = (ctx.bus, ctx.node_id, ctx.shutdown.clone());
    let status_topic = contract::node_status(node_id);
    let will = serde_json::to_vec(&status(node_id, NodeState::Offline, started_at))
        .map_err(|e| BusError::Encode(e.to_string()))?;
    let (client, session) = bus.client(
        "system",
        Some((
            status_topic.clone(),
            will,
            NodeStatus::DELIVERY.qos,
            NodeStatus::DELIVERY.retain,
        )),
    );
    let pings = client.subscribe_to::<Ping>().await?;
    let pongs = client.subscribe_to::<Pong>().await?;
    let service = SystemService {
        client: client.clone(),
        node_id: node_id.into(),
        pending: Arc::default(),
    };
    client
        .publish(
            &status_topic,
            &status(node_id, NodeState::Online, started_at),
        )
        .await?;
    let task = tokio::spawn(run(
        service.clone(),
        pings,
        pongs,
        status_topic,
        started_at,
        session,
        shutdown,
    ));
    Ok((service, task))
}

async fn run(
    service: SystemService,
    mut pings: Inbox<Ping>,
    mut pongs: Inbox<Pong>,
    status_topic: String,
    started_at: u64,
    session: JoinHandle<()>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            Some(ping) = pings.recv() => answer_ping(&service, ping).await,
            Some(pong) = pongs.recv() => {
                if let Ok(pong) = pong
                    && let Some(tx) = service.lock_pending().remove(&pong.id)
                {
                    let _ = tx.send(());
                }
            }
            _ = shutdown.cancelled() => break,
        }
    }
    let offline = status(&service.node_id, NodeState::Offline, started_at);
    // Bounded: with the broker unreachable and the request queue full this would wait
    // forever, and the last will says `offline` anyway.
    match tokio::time::timeout(
        Duration::from_secs(2),
        service.client.publish(&status_topic, &offline),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot publish offline status"),
        Err(_) => tracing::warn!("offline status not queued in time; the last will covers it"),
    }
    service.client.disconnect().await;
    let _ = session.await;
}

async fn answer_ping(service: &SystemService, ping: Result<Ping, BusError>) {
    let ping = match ping {
        Ok(p) if !p.id.is_empty() && p.id.len() <= MAX_PING_ID_LEN => p,
        Ok(_) => {
            tracing::debug!("ignoring ping with an empty or over-long id");
            return;
        }
        Err(e) => {
            tracing::debug!(error = %e, "ignoring malformed ping");
            return;
        }
    };
    let pong = Pong {
        id: ping.id,
        node: service.node_id.to_string(),
    };
    if let Err(e) = service.client.publish(contract::PONG, &pong).await {
        tracing::warn!(error = %e, "cannot answer ping");
    }
}
