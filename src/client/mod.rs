//! The mesh client library (also behind `meteomesh client`): connects to one node of a
//! mesh as a user, watches that node's heartbeat, fails over to another node when it goes
//! silent or its connection drops, re-subscribes, sends again whatever it sent that the
//! node had not answered yet, acknowledges the messages it receives and drops the
//! duplicates. It keeps the node list (from its options, the mesh's directory and an
//! optional file) and chooses a node by list order, fewest users or lowest round trip.
//!
//! Switching between live nodes needs a clear gain, so clients do not flap: fewest users
//! switches when another node has at least [`USERS_MARGIN`] fewer users and at most 80 %
//! as many; lowest round trip when another node answers in at most 70 % of the time and
//! at least [`RTT_MARGIN`] faster.

mod driver;
mod nodes;

use driver::Driver;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use crate::config::NodeChoice;
use crate::contract::{
    self, Directory, Heartbeat, InboxAck, InboxMessage, OnlineUser, OnlineUsers, SendMode,
    SendRequest, SendResult,
};
use nodes::NodeList;

/// Users fewer before "fewest users" switches.
pub const USERS_MARGIN: u32 = 2;
/// Round trip gain before "lowest round trip" switches.
pub const RTT_MARGIN: Duration = Duration::from_millis(2);

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// MQTT addresses (`host:port`) to start from.
    pub nodes: Vec<String>,
    pub username: String,
    /// A login token; with a mesh-wide secret every node accepts it.
    pub token: String,
    pub heartbeat_interval: Duration,
    /// Beats missed before the node counts as dead.
    pub missed_heartbeats: u32,
    pub choice: NodeChoice,
    /// How often the choice is made again while connected.
    pub recheck_interval: Duration,
    /// Learn nodes from the mesh directory (on by default).
    pub discover: bool,
    /// Where the node list is kept between runs.
    pub node_file: Option<PathBuf>,
    /// How long a request waits for its node's answer before it is sent again.
    pub request_timeout: Duration,
}

impl ClientOptions {
    pub fn new(nodes: Vec<String>, username: &str, token: &str) -> ClientOptions {
        ClientOptions {
            nodes,
            username: username.to_owned(),
            token: token.to_owned(),
            heartbeat_interval: Duration::from_millis(250),
            missed_heartbeats: 2,
            choice: NodeChoice::First,
            recheck_interval: Duration::from_secs(600),
            discover: true,
            node_file: None,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// What the client tells its user.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// Connected to a node (its id once the first heartbeat named it).
    Connected {
        addr: String,
    },
    /// The node stopped answering: connection lost or heartbeats missing.
    NodeLost {
        addr: String,
        node: Option<String>,
        /// When the client noticed.
        at: Instant,
        reason: String,
    },
    Message(InboxMessage),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    pub addr: Option<String>,
    pub node: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the client is closed")]
    Closed,
    #[error("refused: {0}")]
    Refused(String),
    #[error("no answer in time")]
    Timeout,
}

enum Command {
    Request {
        req: SendRequest,
        reply: oneshot::Sender<SendResult>,
    },
    Close,
}

/// A running client. Cheap to clone the handle parts; events come from [`MeshClient::events`].
pub struct MeshClient {
    commands: mpsc::Sender<Command>,
    current: watch::Receiver<Current>,
    online: watch::Receiver<Vec<OnlineUser>>,
    task: JoinHandle<()>,
    next_seq: std::sync::atomic::AtomicU64,
}

impl MeshClient {
    /// Starts the client; it connects (and reconnects) by itself.
    pub fn start(opts: ClientOptions) -> (MeshClient, mpsc::Receiver<ClientEvent>) {
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (ev_tx, ev_rx) = mpsc::channel(4096);
        let (cur_tx, cur_rx) = watch::channel(Current::default());
        let (online_tx, online_rx) = watch::channel(Vec::new());
        let driver = Driver::new(opts, ev_tx, cur_tx, online_tx);
        let task = tokio::spawn(driver.run(cmd_rx));
        // Microseconds: increasing across restarts of the client, like the node's.
        let start = crate::domain::time::now_micros();
        (
            MeshClient {
                commands: cmd_tx,
                current: cur_rx,
                online: online_rx,
                task,
                next_seq: std::sync::atomic::AtomicU64::new(start),
            },
            ev_rx,
        )
    }

    pub fn current(&self) -> Current {
        self.current.borrow().clone()
    }

    /// Waits until connected to a node whose heartbeat named it; returns its id.
    pub async fn wait_connected(&self, timeout: Duration) -> Option<String> {
        let mut cur = self.current.clone();
        tokio::time::timeout(timeout, cur.wait_for(|c| c.node.is_some()))
            .await
            .ok()?
            .ok()
            .and_then(|c| c.node.clone())
    }

    async fn request(
        &self,
        mode: SendMode,
        to: Option<&str>,
        body: Value,
    ) -> Result<SendResult, ClientError> {
        let seq = self
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let req = SendRequest {
            req: format!("r{seq}"),
            mode,
            to: to.map(str::to_owned),
            seq: Some(seq),
            body,
        };
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Request { req, reply: tx })
            .await
            .map_err(|_| ClientError::Closed)?;
        let result = rx.await.map_err(|_| ClientError::Closed)?;
        match result.error {
            Some(e) if result.code.is_some() => Err(ClientError::Refused(e)),
            _ => Ok(result),
        }
    }

    /// Sends to one user and waits for their acknowledgement: true when delivered.
    pub async fn send(&self, to: &str, body: Value) -> Result<bool, ClientError> {
        let r = self.request(SendMode::Send, Some(to), body).await?;
        Ok(r.delivered == Some(true))
    }

    /// Queues a message for one user (kept while they are offline); returns once the
    /// node stored it. Survives a failover: unanswered requests are sent again.
    pub async fn fire_send(&self, to: &str, body: Value) -> Result<String, ClientError> {
        let r = self.request(SendMode::FireSend, Some(to), body).await?;
        r.id.ok_or(ClientError::Timeout)
    }

    /// Sends to every online user; returns (acknowledged, online).
    pub async fn broadcast(&self, body: Value) -> Result<(u32, u32), ClientError> {
        let r = self.request(SendMode::Broadcast, None, body).await?;
        Ok((r.acked.unwrap_or(0), r.online.unwrap_or(0)))
    }

    /// Sends to every online user without waiting; returns how many were online.
    pub async fn fire_broadcast(&self, body: Value) -> Result<u32, ClientError> {
        let r = self.request(SendMode::FireBroadcast, None, body).await?;
        Ok(r.online.unwrap_or(0))
    }

    /// Who is online anywhere, as the connected node last published it.
    pub async fn online(&self, timeout: Duration) -> Result<Vec<OnlineUser>, ClientError> {
        let mut rx = self.online.clone();
        if rx.borrow().is_empty() {
            let _ = tokio::time::timeout(timeout, rx.changed()).await;
        }
        Ok(rx.borrow().clone())
    }

    pub async fn close(self) {
        let _ = self.commands.send(Command::Close).await;
        let _ = self.task.await;
    }
}
