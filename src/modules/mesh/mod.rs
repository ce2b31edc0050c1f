//! Owns the mesh: this node's identity in the mesh, links to peer nodes, the node
//! directory, presence, and user-to-user messaging (send with a delivery answer,
//! fire-and-forget kept for offline users, broadcast), plus the heartbeat clients watch
//! to fail over. With `mesh.enabled` off the same messaging works within this one node.
//!
//! Consumes: `mesh/links/+` (envelopes from peers), `system/presence/+` (the broker's
//! session counts), `mesh/users/+/send` and `.../ack` (users), `users/+/alerts` (weather
//! alerts for users connected elsewhere), `system/accounts` (revoked tokens, told to the
//! other nodes), `system/boards/local` (whiteboard events, carried to the other nodes
//! and handed to their board modules on `system/boards/remote`). Publishes: `mesh/users/{name}/inbox` and
//! `.../result`, the retained `mesh/directory` and `mesh/online`, `mesh/heartbeat`.

mod dedup;
mod directory;
mod links;
mod node;
mod presence;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::BusError;
use crate::config::Config;
use crate::contract::{self, Heartbeat, NodeAdvert, OnlineUser, SendRequest, SendResult};
use crate::modules::ModuleCtx;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("the mesh is not running on this node")]
    Unavailable,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

pub enum ApiCall {
    Send {
        from: String,
        req: SendRequest,
        reply: oneshot::Sender<SendResult>,
    },
    Online {
        reply: oneshot::Sender<Vec<OnlineUser>>,
    },
    Status {
        reply: oneshot::Sender<MeshStatus>,
    },
}

/// The mesh as this node sees it (`GET /api/v1/mesh`, `meteomesh mesh status`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct MeshStatus {
    pub node: String,
    pub enabled: bool,
    pub nodes: Vec<NodeStatusEntry>,
    /// Seed peers whose node id is not known yet (not reached so far).
    pub unidentified_peers: Vec<String>,
    pub envelopes_received: u64,
    pub envelopes_sent: u64,
    pub duplicates_dropped: u64,
    /// Of those, user messages (`msg` envelopes).
    pub duplicate_messages_dropped: u64,
    pub ttl_exceeded: u64,
    pub local_deliveries: u64,
    pub queued_messages: i64,
    /// Usernames held by accounts of other nodes, as far as this node knows (no account
    /// here can take them).
    #[serde(default)]
    pub names_held_elsewhere: i64,
    pub users_online: usize,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct NodeStatusEntry {
    #[serde(flatten)]
    pub advert: NodeAdvert,
    pub this_node: bool,
    /// Unix seconds this node last heard of it.
    pub last_seen_at: Option<i64>,
    /// This node's link to it (absent for itself, or when not linked).
    pub link: Option<LinkStatus>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LinkStatus {
    /// `up`, `silent` (connected but heartbeats missing) or `down`.
    pub state: String,
    /// Seconds in this state.
    pub for_seconds: u64,
    pub rtt_ms: Option<f64>,
}

/// The handle the HTTP layer uses.
#[derive(Clone)]
pub struct MeshService {
    api: Option<mpsc::Sender<ApiCall>>,
    send_timeout: Duration,
}

impl MeshService {
    /// A service for a node without the mesh module (external bus mode).
    pub fn unavailable() -> MeshService {
        MeshService {
            api: None,
            send_timeout: Duration::from_secs(1),
        }
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> ApiCall,
        timeout: Duration,
    ) -> Result<T, MeshError> {
        let api = self.api.as_ref().ok_or(MeshError::Unavailable)?;
        let (tx, rx) = oneshot::channel();
        api.send(make(tx))
            .await
            .map_err(|_| MeshError::Unavailable)?;
        tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| MeshError::Unavailable)?
            .map_err(|_| MeshError::Unavailable)
    }

    /// Sends as `from`; a synchronous send or broadcast answers within the send timeout.
    pub async fn send(&self, from: &str, req: SendRequest) -> Result<SendResult, MeshError> {
        let from = from.to_owned();
        let wait = self.send_timeout + Duration::from_secs(5);
        self.call(|reply| ApiCall::Send { from, req, reply }, wait)
            .await
    }

    pub async fn online(&self) -> Result<Vec<OnlineUser>, MeshError> {
        self.call(|reply| ApiCall::Online { reply }, Duration::from_secs(5))
            .await
    }

    pub async fn status(&self) -> Result<MeshStatus, MeshError> {
        self.call(|reply| ApiCall::Status { reply }, Duration::from_secs(5))
            .await
    }
}

/// `host:port` as peers and clients should dial it.
fn advertised(host: &str, addr: SocketAddr) -> String {
    let host = if host.is_empty() {
        addr.ip().to_string()
    } else {
        host.to_owned()
    };
    if host.contains(':') {
        format!("[{host}]:{}", addr.port())
    } else {
        format!("{host}:{}", addr.port())
    }
}

/// Starts the mesh node task and its heartbeat.
pub async fn start(
    ctx: &ModuleCtx<'_>,
    config: &Config,
) -> Result<(MeshService, Vec<JoinHandle<()>>), MeshError> {
    let (bus, db, metrics, shutdown) = (
        ctx.bus,
        ctx.db.clone(),
        ctx.metrics.clone(),
        ctx.shutdown.clone(),
    );
    let (node_id, addresses) = (ctx.node_id, ctx.addresses);
    let (cfg, bus_cfg) = (&config.mesh, &config.bus);
    let (client, session) = bus.client("mesh", None);
    let mut receivers = Vec::new();
    for (filter, qos) in node::filters() {
        receivers.push(client.subscribe(filter, qos).await?);
    }
    if !client.wait_subscribed(Duration::from_secs(10)).await {
        tracing::warn!("mesh subscriptions not confirmed yet; continuing");
    }
    let mut receivers = receivers.into_iter();
    let mut next = || receivers.next().expect("one receiver per filter");
    let (api_tx, api_rx) = mpsc::channel(256);
    let inputs = node::Inputs {
        envelopes: next(),
        hellos: next(),
        presence: next(),
        sends: next(),
        acks: next(),
        alerts: next(),
        accounts: next(),
        boards: next(),
        api: api_rx,
    };

    let started_at = u64::try_from(crate::domain::time::system_now()).unwrap_or_default();
    let host = cfg.advertise_host.as_str();
    let own = NodeAdvert {
        id: node_id.to_owned(),
        mqtt: addresses
            .mqtt
            .map(|a| advertised(host, a))
            .unwrap_or_default(),
        ws: addresses.ws.map(|a| advertised(host, a)),
        http: addresses
            .http
            .map(|a| format!("http://{}", advertised(host, a)))
            .unwrap_or_default(),
        users: 0,
        started_at,
        at: u64::try_from(crate::domain::time::now_ms()).unwrap_or_default(),
    };
    let stored = db.mesh().load_nodes().await?;
    let queued = db.mesh().waiting_count().await?;
    metrics.mesh.queued.set(queued);
    let (link_tx, link_rx) = mpsc::channel(1024);
    let users = Arc::new(AtomicU32::new(0));
    let settings = links::LinkSettings {
        own_id: node_id.to_owned(),
        username: cfg.link_username.clone(),
        password: cfg.link_password.expose().to_owned(),
        max_packet_size: bus_cfg.max_packet_size as usize,
    };
    let node = node::Node::new(
        cfg,
        own,
        stored,
        client.clone(),
        db,
        metrics,
        settings,
        link_tx,
        users.clone(),
        config.auth.token_lifetime,
    );
    let node_task = {
        let shutdown = shutdown.clone();
        let client = client.clone();
        tokio::spawn(async move {
            node.run(inputs, link_rx, shutdown).await;
            client.disconnect().await;
            let _ = session.await;
        })
    };
    let beat = tokio::spawn(heartbeat(
        client,
        node_id.to_owned(),
        cfg.heartbeat_interval,
        users,
        shutdown,
    ));
    Ok((
        MeshService {
            api: Some(api_tx),
            send_timeout: cfg.send_timeout,
        },
        vec![node_task, beat],
    ))
}

/// Publishes this node's heartbeat on its own broker; separate from the node task so a
/// busy moment there never looks like a dead node to clients.
async fn heartbeat(
    client: crate::bus::BusClient,
    node: String,
    every: Duration,
    users: Arc<AtomicU32>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        seq += 1;
        let beat = Heartbeat {
            node: node.clone(),
            seq,
            users: users.load(Ordering::Relaxed),
        };
        if let Err(e) = client.publish(contract::MESH_HEARTBEAT, &beat).await {
            tracing::debug!(error = %e, "heartbeat not sent");
        }
    }
}
