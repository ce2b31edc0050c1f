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

mod nodes;

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
        let driver = Driver {
            nodes: NodeList::load(&opts.nodes, opts.node_file.clone()),
            opts,
            events: ev_tx,
            current: cur_tx,
            online: online_tx,
            pending: HashMap::new(),
            seen_ids: Recent::new(4096),
            seen_seqs: Recent::new(4096),
            client_id: format!("mm-{:016x}", rand::random::<u64>()),
        };
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

/// Drives a new session until the broker's CONNACK: true when it accepted the login.
async fn accepted(eventloop: &mut EventLoop, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    return ack.code == rumqttc::ConnectReturnCode::Success;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// A bounded set of recently seen keys.
struct Recent<T: std::hash::Hash + Eq + Clone> {
    set: HashSet<T>,
    order: VecDeque<T>,
    cap: usize,
}

impl<T: std::hash::Hash + Eq + Clone> Recent<T> {
    fn new(cap: usize) -> Self {
        Recent {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// True the first time.
    fn insert(&mut self, key: T) -> bool {
        if !self.set.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

struct Driver {
    opts: ClientOptions,
    nodes: NodeList,
    events: mpsc::Sender<ClientEvent>,
    current: watch::Sender<Current>,
    online: watch::Sender<Vec<OnlineUser>>,
    /// Requests the node has not answered yet, by `req`: sent again after a failover.
    pending: HashMap<String, (SendRequest, oneshot::Sender<SendResult>, Instant)>,
    seen_ids: Recent<String>,
    seen_seqs: Recent<(String, u64)>,
    client_id: String,
}

/// Why a connection ended.
enum End {
    Lost(String),
    Switch(String),
    Close,
}

impl Driver {
    fn mqtt_options(&self, addr: &str) -> Option<MqttOptions> {
        let target = crate::config::BrokerUrl::parse_host_port(addr).ok()?;
        let mut o = MqttOptions::new(&self.client_id, target.host, target.port);
        o.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(true)
            .set_credentials(&self.opts.username, &self.opts.token)
            .set_max_packet_size(1024 * 1024, 1024 * 1024);
        Some(o)
    }

    async fn connect(&self, addr: &str, timeout: Duration) -> Option<(AsyncClient, EventLoop)> {
        let opts = self.mqtt_options(addr)?;
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        accepted(&mut eventloop, timeout)
            .await
            .then_some((client, eventloop))
    }

    /// Round trip of one MQTT connect (the best of three), as the node choice measures it.
    async fn measure(&self, addr: &str) -> Option<Duration> {
        let mut best: Option<Duration> = None;
        for i in 0..3 {
            let mut opts = self.mqtt_options(addr)?;
            opts.set_client_id(format!("{}-probe{i}", self.client_id));
            let (client, mut eventloop) = AsyncClient::new(opts, 4);
            let start = Instant::now();
            let ok = accepted(&mut eventloop, Duration::from_secs(2)).await;
            let took = start.elapsed();
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_millis(100), eventloop.poll()).await;
            if !ok {
                return None;
            }
            best = Some(best.map_or(took, |b| b.min(took)));
        }
        best
    }

    /// The node to use now: by the configured choice among the reachable ones.
    async fn choose(&self, skip: Option<&str>) -> Vec<String> {
        let mut order: Vec<String> = self
            .nodes
            .addrs()
            .into_iter()
            .filter(|a| Some(a.as_str()) != skip)
            .collect();
        match self.opts.choice {
            NodeChoice::First => {}
            NodeChoice::LeastUsers => {
                order.sort_by_key(|a| self.nodes.users(a).unwrap_or(u32::MAX))
            }
            NodeChoice::LowestRtt => {
                let mut timed = Vec::new();
                for a in order {
                    let rtt = self.measure(&a).await.unwrap_or(Duration::MAX);
                    timed.push((rtt, a));
                }
                timed.sort_by_key(|(rtt, _)| *rtt);
                order = timed.into_iter().map(|(_, a)| a).collect();
            }
        }
        if let Some(s) = skip {
            // The node just lost goes last: it may be back by the time all others failed.
            order.push(s.to_owned());
        }
        order
    }

    /// Whether another node is clearly better than `addr` (see the module docs).
    async fn better_than(&self, addr: &str) -> Option<String> {
        match self.opts.choice {
            NodeChoice::First => None,
            NodeChoice::LeastUsers => {
                let mine = self.nodes.users(addr)?;
                self.nodes
                    .addrs()
                    .into_iter()
                    .filter(|a| a != addr && self.nodes.reachable(a))
                    .filter_map(|a| self.nodes.users(&a).map(|u| (u, a)))
                    .filter(|(u, _)| u + USERS_MARGIN <= mine && u * 5 <= mine * 4)
                    .min()
                    .map(|(_, a)| a)
            }
            NodeChoice::LowestRtt => {
                let mine = self.measure(addr).await?;
                let mut best: Option<(Duration, String)> = None;
                for a in self.nodes.addrs().into_iter().filter(|a| a != addr) {
                    if let Some(rtt) = self.measure(&a).await
                        && best.as_ref().is_none_or(|(b, _)| rtt < *b)
                    {
                        best = Some((rtt, a));
                    }
                }
                let (rtt, a) = best?;
                (rtt.mul_f64(1.0 / 0.7) <= mine && rtt + RTT_MARGIN <= mine).then_some(a)
            }
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut skip: Option<String> = None;
        let mut prefer: Option<String> = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            let mut order = self.choose(skip.as_deref()).await;
            if let Some(p) = prefer.take() {
                order.retain(|a| *a != p);
                order.insert(0, p);
            }
            let mut connected = None;
            for addr in order {
                if let Some(c) = self.connect(&addr, Duration::from_secs(2)).await {
                    connected = Some((addr, c));
                    break;
                }
            }
            let Some((addr, (client, eventloop))) = connected else {
                // Nobody answers: wait a little (jittered) and try the list again.
                let wait = backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    cmd = commands.recv() => match cmd {
                        Some(Command::Request { req, reply }) => {
                            self.pending.insert(req.req.clone(), (req, reply, Instant::now()));
                        }
                        Some(Command::Close) | None => return,
                    },
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                skip = None;
                continue;
            };
            backoff = Duration::from_millis(50);
            match self.session(&addr, client, eventloop, &mut commands).await {
                End::Close => return,
                End::Lost(_) => skip = Some(addr),
                End::Switch(to) => {
                    skip = None;
                    prefer = Some(to);
                }
            }
        }
    }

    async fn session(
        &mut self,
        addr: &str,
        client: AsyncClient,
        mut eventloop: EventLoop,
        commands: &mut mpsc::Receiver<Command>,
    ) -> End {
        let me = self.opts.username.clone();
        for filter in [
            contract::mesh_inbox(&me),
            contract::mesh_result(&me),
            contract::MESH_HEARTBEAT.to_owned(),
            contract::MESH_DIRECTORY.to_owned(),
            contract::MESH_ONLINE.to_owned(),
        ] {
            let _ = client.try_subscribe(filter, QoS::AtLeastOnce);
        }
        // Requests the last node never answered go again (same req and seq, so the
        // recipient can drop a copy that did get through).
        for (req, _, sent) in self.pending.values_mut() {
            *sent = Instant::now();
            if let Ok(payload) = serde_json::to_vec(req) {
                let _ =
                    client.try_publish(contract::mesh_send(&me), QoS::AtLeastOnce, false, payload);
            }
        }
        self.current.send_replace(Current {
            addr: Some(addr.to_owned()),
            node: None,
        });
        let _ = self
            .events
            .send(ClientEvent::Connected {
                addr: addr.to_owned(),
            })
            .await;
        let mut node: Option<String> = None;
        let mut last_beat = Instant::now();
        let patience = self.opts.heartbeat_interval * self.opts.missed_heartbeats
            + self.opts.heartbeat_interval / 2;
        let mut tick = tokio::time::interval(Duration::from_millis(25));
        let mut recheck = tokio::time::interval(self.opts.recheck_interval);
        recheck.tick().await;
        let mut first_directory = true;
        let end = loop {
            tokio::select! {
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic == contract::MESH_HEARTBEAT {
                            if let Ok(hb) = serde_json::from_slice::<Heartbeat>(&p.payload) {
                                last_beat = Instant::now();
                                if node.is_none() {
                                    node = Some(hb.node.clone());
                                    self.current.send_replace(Current {
                                        addr: Some(addr.to_owned()),
                                        node: Some(hb.node.clone()),
                                    });
                                }
                                self.nodes.set_users(addr, hb.users);
                            }
                        } else if p.topic == contract::MESH_DIRECTORY {
                            if let Ok(dir) = serde_json::from_slice::<Directory>(&p.payload) {
                                self.nodes.merge(&dir, self.opts.discover);
                                if first_directory {
                                    // The choice on connect, now that we know the mesh.
                                    first_directory = false;
                                    if let Some(to) = self.better_than(addr).await {
                                        break End::Switch(to);
                                    }
                                }
                            }
                        } else if p.topic == contract::MESH_ONLINE {
                            if let Ok(online) = serde_json::from_slice::<OnlineUsers>(&p.payload) {
                                self.online.send_replace(online.users);
                            }
                        } else if p.topic == contract::mesh_result(&me) {
                            if let Ok(result) = serde_json::from_slice::<SendResult>(&p.payload)
                                && let Some((_, reply, _)) = self.pending.remove(&result.req)
                            {
                                let _ = reply.send(result);
                            }
                        } else if p.topic == contract::mesh_inbox(&me)
                            && let Ok(msg) = serde_json::from_slice::<InboxMessage>(&p.payload)
                        {
                            self.receive(&client, msg).await;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => break End::Lost(format!("connection lost: {e}")),
                },
                cmd = commands.recv() => match cmd {
                    Some(Command::Request { req, reply }) => {
                        if let Ok(payload) = serde_json::to_vec(&req) {
                            let _ = client.try_publish(contract::mesh_send(&me), QoS::AtLeastOnce, false, payload);
                        }
                        self.pending.insert(req.req.clone(), (req, reply, Instant::now()));
                    }
                    Some(Command::Close) | None => break End::Close,
                },
                _ = tick.tick() => {
                    if last_beat.elapsed() > patience {
                        break End::Lost(format!(
                            "no heartbeat for {} ms",
                            last_beat.elapsed().as_millis()
                        ));
                    }
                    // A request unanswered for long: send it again (same req and seq).
                    let timeout = self.opts.request_timeout;
                    for (req, _, sent) in self.pending.values_mut() {
                        if sent.elapsed() > timeout {
                            *sent = Instant::now();
                            if let Ok(payload) = serde_json::to_vec(req) {
                                let _ = client.try_publish(contract::mesh_send(&me), QoS::AtLeastOnce, false, payload);
                            }
                        }
                    }
                }
                _ = recheck.tick() => {
                    if let Some(to) = self.better_than(addr).await {
                        break End::Switch(to);
                    }
                }
            }
        };
        match &end {
            End::Lost(reason) => {
                self.nodes.set_reachable(addr, false);
                let _ = self
                    .events
                    .send(ClientEvent::NodeLost {
                        addr: addr.to_owned(),
                        node: node.clone(),
                        at: Instant::now(),
                        reason: reason.clone(),
                    })
                    .await;
            }
            End::Switch(_) | End::Close => {
                let _ = client.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_millis(200), async {
                    while let Ok(ev) = eventloop.poll().await {
                        if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        self.current.send_replace(Current::default());
        self.nodes.save();
        end
    }

    /// Acknowledges (also a duplicate, so its sender stops retrying) and passes on a
    /// message seen for the first time.
    async fn receive(&mut self, client: &AsyncClient, msg: InboxMessage) {
        if msg.ack
            && let Ok(payload) = serde_json::to_vec(&InboxAck { id: msg.id.clone() })
        {
            let _ = client.try_publish(
                contract::mesh_ack(&self.opts.username),
                QoS::AtLeastOnce,
                false,
                payload,
            );
        }
        let fresh_id = self.seen_ids.insert(msg.id.clone());
        let fresh_seq = msg.seq == 0 || self.seen_seqs.insert((msg.from.clone(), msg.seq));
        if fresh_id && fresh_seq {
            let _ = self.events.send(ClientEvent::Message(msg)).await;
        }
    }
}
