//! Owns the running state of this mesh node, in one task so it needs no locks: the
//! directory, presence, links, the seen-id cache, waiting senders and the retry schedule
//! of queued messages. Everything that happens to the mesh arrives here as an event
//! (envelopes from peers, the local broker's presence, users' sends and acks, alerts,
//! link changes, API calls, timers) and is handled to completion before the next.
//!
//! Routing: a unicast goes over direct links to the nodes where presence says the user
//! is; when a node is not directly reachable or the user's place is unknown it is
//! flooded. Floods and relays never go back to the link they came from, every node drops
//! an envelope id it has seen, and `ttl` bounds the hops, so any topology, cycles
//! included, delivers each message once per node.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::dedup::SeenCache;
use super::directory::Directory;
use super::links::{Link, LinkEvent, LinkSettings};
use super::presence::PresenceTable;
use super::{ApiCall, LinkStatus, MeshStatus, NodeStatusEntry};
use crate::bus::{BusClient, Incoming};
use crate::config::MeshConfig;
use crate::contract::{
    self, AccountChange, AccountEvent, AlertEvent, BusMessage, ClaimedName, Envelope, InboxAck,
    InboxMessage, LinkPing, LocalPresence, MeshAck, MeshMessage, NameClaims, NodeAdvert,
    OnlineUsers, PeerHello, Presence, Revocation, SendMode, SendRefusal, SendRequest, SendResult,
    Target,
};
use crate::domain::time::system_now;
use crate::domain::time::{now_ms, rfc3339_ms};
use crate::metrics::Metrics;
use crate::storage::Db;
use crate::storage::mesh::{self as store, QueueRefusal, QueuedMessage};

/// How often a node re-announces its users even without changes.
const PRESENCE_REFRESH: Duration = Duration::from_secs(30);
/// First and longest wait before a queued message is sent again without an ack.
const RETRY_FIRST: Duration = Duration::from_secs(3);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// At most this many usernames are taken from one node's list.
const MAX_NAME_CLAIMS: usize = 100_000;
/// Deliveries awaiting a local user's ack are forgotten after this long.
const LOCAL_ACK_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Where a send's answer goes.
pub enum Reply {
    Api(oneshot::Sender<SendResult>),
    /// Published on the user's `result` topic.
    Mqtt(String),
}

struct Waiter {
    req: String,
    seq: u64,
    mode: SendMode,
    reply: Reply,
    deadline: Instant,
    acked: HashSet<String>,
    online: u32,
}

pub struct Inputs {
    pub envelopes: mpsc::Receiver<Incoming>,
    pub hellos: mpsc::Receiver<Incoming>,
    pub presence: mpsc::Receiver<Incoming>,
    pub sends: mpsc::Receiver<Incoming>,
    pub acks: mpsc::Receiver<Incoming>,
    pub alerts: mpsc::Receiver<Incoming>,
    pub accounts: mpsc::Receiver<Incoming>,
    pub boards: mpsc::Receiver<Incoming>,
    pub api: mpsc::Receiver<ApiCall>,
}

pub struct Node {
    cfg: MeshConfig,
    /// How long login tokens live: a revocation is kept that long on other nodes.
    token_lifetime: Duration,
    own_id: String,
    bus: BusClient,
    db: Db,
    metrics: Arc<Metrics>,
    dir: Directory,
    presence: PresenceTable,
    links: HashMap<String, Link>,
    link_settings: LinkSettings,
    link_events: mpsc::Sender<LinkEvent>,
    seen: SeenCache,
    next_seq: u64,
    last_user_seq: u64,
    waiters: HashMap<String, Waiter>,
    /// (message id, user) delivered here and awaiting that user's ack → origin node.
    local_deliveries: HashMap<(String, String), (String, Instant)>,
    /// Queued recipients: when their messages may be sent again, and the next wait.
    retry: HashMap<String, (Instant, Duration)>,
    acked_queued: Vec<String>,
    usernames: HashMap<i64, String>,
    users_count: Arc<AtomicU32>,
    dir_dirty: bool,
    dir_publish: bool,
    dir_published: Instant,
    online_dirty: bool,
    last_online: Option<OnlineUsers>,
    links_usable: usize,
    /// This node's usernames are due to be told to the mesh (an account came or went,
    /// a link came up, or the periodic exchange).
    names_due: bool,
    /// This node's usernames an earlier account of another node holds (warned once).
    names_lost: HashSet<String>,
}

impl Node {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &MeshConfig,
        own: NodeAdvert,
        stored: Vec<store::StoredNode>,
        bus: BusClient,
        db: Db,
        metrics: Arc<Metrics>,
        link_settings: LinkSettings,
        link_events: mpsc::Sender<LinkEvent>,
        users_count: Arc<AtomicU32>,
        token_lifetime: Duration,
    ) -> Node {
        let own_id = own.id.clone();
        let start = u64::try_from(now_ms()).unwrap_or_default();
        Node {
            cfg: cfg.clone(),
            token_lifetime,
            own_id: own_id.clone(),
            bus,
            db,
            metrics,
            dir: Directory::new(own, stored),
            presence: PresenceTable::new(&own_id, PRESENCE_REFRESH * 3, start),
            links: HashMap::new(),
            link_settings,
            link_events,
            // ~120 bytes an id: at most ~6 MiB, and 50,000 ids cover 80 envelopes/s for
            // the whole default window (duplicates arrive within seconds anyway).
            seen: SeenCache::new(cfg.dedup_window, 50_000),
            // Unique across restarts: peers remember ids for `dedup_window`.
            next_seq: start * 1000,
            last_user_seq: 0,
            waiters: HashMap::new(),
            local_deliveries: HashMap::new(),
            retry: HashMap::new(),
            acked_queued: Vec::new(),
            usernames: HashMap::new(),
            users_count,
            dir_dirty: true,
            dir_publish: true,
            dir_published: Instant::now() - Duration::from_secs(1),
            online_dirty: true,
            last_online: None,
            links_usable: 0,
            names_due: true,
            names_lost: HashSet::new(),
        }
    }

    fn patience(&self) -> Duration {
        self.cfg.heartbeat_interval * (self.cfg.missed_heartbeats + 1)
    }

    pub async fn run(
        mut self,
        mut inputs: Inputs,
        mut link_rx: mpsc::Receiver<LinkEvent>,
        shutdown: CancellationToken,
    ) {
        if self.cfg.enabled {
            for peer in self.cfg.peers.clone() {
                self.ensure_link(&peer);
            }
            self.ensure_links();
        }
        let mut fast = tokio::time::interval(Duration::from_millis(50));
        let mut slow = tokio::time::interval(Duration::from_secs(1));
        let mut ping = tokio::time::interval(self.cfg.ping_interval);
        let mut exchange = tokio::time::interval(self.cfg.exchange_interval);
        let mut refresh = tokio::time::interval(PRESENCE_REFRESH);
        let mut expiry = tokio::time::interval(Duration::from_secs(60));
        for t in [
            &mut fast,
            &mut slow,
            &mut ping,
            &mut exchange,
            &mut refresh,
            &mut expiry,
        ] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(m) = inputs.envelopes.recv() => self.on_link_message(m).await,
                Some(m) = inputs.hellos.recv() => self.on_hello(m),
                Some(m) = inputs.presence.recv() => self.on_local_presence(m).await,
                Some(m) = inputs.sends.recv() => self.on_user_send(m).await,
                Some(m) = inputs.acks.recv() => self.on_user_ack(m),
                Some(m) = inputs.alerts.recv() => self.on_alert(m).await,
                Some(m) = inputs.accounts.recv() => self.on_account_event(m),
                Some(m) = inputs.boards.recv() => self.on_local_board_event(m),
                Some(call) = inputs.api.recv() => self.on_api(call).await,
                Some(e) = link_rx.recv() => self.on_link_event(e),
                _ = fast.tick() => self.on_fast_tick().await,
                _ = slow.tick() => self.on_slow_tick().await,
                _ = ping.tick() => self.ping_links(),
                _ = exchange.tick() => self.exchange(),
                _ = refresh.tick() => self.announce_presence(),
                _ = expiry.tick() => self.expire().await,
            }
        }
        // Stop: commit what was acknowledged, keep the directory, close the links.
        self.flush_acked().await;
        self.save_directory().await;
        for (_, link) in self.links.drain() {
            link.stop().await;
        }
        for (_, w) in self.waiters.drain() {
            let result = refused(
                &w.req,
                SendRefusal::Unavailable,
                "the node is shutting down",
            );
            deliver_reply(&self.bus, w.reply, result).await;
        }
    }

    // ----- envelopes -------------------------------------------------------------

    fn new_envelope(&mut self, from: &str, to: Target, tag: &str, data: Value) -> Envelope {
        self.next_seq += 1;
        Envelope {
            id: format!("{}:{}", self.own_id, self.next_seq),
            origin: self.own_id.clone(),
            hops: 0,
            ttl: self.cfg.max_hops,
            from: from.to_owned(),
            to,
            tag: tag.to_owned(),
            data,
            reply: None,
        }
    }

    fn count(&self, outcome: &str, env: &Envelope) {
        // Tags from peers are free text: keep the label set bounded.
        let tag = match env.tag.as_str() {
            t @ (contract::TAG_MESSAGE
            | contract::TAG_ACK
            | contract::TAG_ALERT
            | contract::TAG_PRESENCE
            | contract::TAG_ADVERTS
            | contract::TAG_PING
            | contract::TAG_PONG
            | contract::TAG_REVOKE
            | contract::TAG_NAMES
            | contract::TAG_BOARD) => t,
            _ => "other",
        };
        self.metrics
            .mesh
            .envelopes
            .with_label_values(&[outcome, tag])
            .inc();
    }

    /// `Some(usable)` for a node we have a direct link to.
    fn linked(&self, node: &str) -> Option<bool> {
        let now = Instant::now();
        let patience = self.patience();
        self.links
            .values()
            .find(|l| l.node.as_deref() == Some(node))
            .map(|l| l.usable(now, patience))
    }

    fn usable_link_to(&self, node: &str) -> Option<&Link> {
        let now = Instant::now();
        let patience = self.patience();
        self.links
            .values()
            .find(|l| l.node.as_deref() == Some(node) && l.usable(now, patience))
    }

    /// Sends on every usable link except towards `except` and the envelope's origin.
    fn flood(&self, env: &Envelope, except: Option<&str>) {
        let now = Instant::now();
        let patience = self.patience();
        for link in self.links.values() {
            let node = link.node.as_deref();
            if node.is_some() && (node == except || node == Some(env.origin.as_str())) {
                continue;
            }
            if link.usable(now, patience) && link.send(&self.own_id, env) {
                self.count("sent", env);
            }
        }
    }

    fn send_direct(&self, node: &str, env: &Envelope) -> bool {
        match self.usable_link_to(node) {
            Some(link) if link.send(&self.own_id, env) => {
                self.count("sent", env);
                true
            }
            _ => false,
        }
    }

    /// Sends an envelope on its way (this node's own, or one it relays with `hops` already
    /// raised). `except` is the node it came from.
    fn route(&self, env: &Envelope, except: Option<&str>) {
        if env.hops > env.ttl {
            self.count("ttl_exceeded", env);
            return;
        }
        match &env.to {
            Target::Node(n) if n == &self.own_id => {}
            Target::Node(n) => {
                if !self.send_direct(n, env) {
                    self.flood(env, except);
                }
            }
            Target::User(u) => {
                let now = Instant::now();
                let linked = |n: &str| self.linked(n);
                let nodes: Vec<String> = self
                    .presence
                    .remote_nodes_of(u, now, &linked)
                    .into_iter()
                    .filter(|n| Some(n.as_str()) != except)
                    .collect();
                let all_direct =
                    !nodes.is_empty() && nodes.iter().all(|n| self.usable_link_to(n).is_some());
                if all_direct {
                    for n in &nodes {
                        self.send_direct(n, env);
                    }
                } else if !self.presence.is_local(u) || !nodes.is_empty() {
                    self.flood(env, except);
                }
            }
            Target::All => self.flood(env, except),
        }
    }

    async fn on_link_message(&mut self, m: Incoming) {
        let Some(via) = contract::mesh_link_sender(&m.topic).map(str::to_owned) else {
            return;
        };
        let Ok(mut env) = m.decode::<Envelope>() else {
            tracing::debug!(via, "ignoring a malformed envelope");
            return;
        };
        self.count("received", &env);
        if env.origin == self.own_id || !self.seen.first_time(&env.id, Instant::now()) {
            self.count("duplicate", &env);
            return;
        }
        env.hops = env.hops.saturating_add(1);
        let for_me = matches!(&env.to, Target::Node(n) if n == &self.own_id);
        match env.tag.as_str() {
            contract::TAG_ADVERTS => {
                let Ok(adverts) = serde_json::from_value::<Vec<NodeAdvert>>(env.data.clone())
                else {
                    return;
                };
                // Relay only what was news: this is what ends advert loops.
                let changed = self.dir.merge(adverts, system_now());
                if !changed.is_empty() {
                    self.dir_changed();
                    self.ensure_links();
                    env.data = serde_json::to_value(changed).unwrap_or_default();
                    self.route(&env, Some(&via));
                }
            }
            contract::TAG_PRESENCE => {
                if let Ok(p) = serde_json::from_value::<Presence>(env.data.clone())
                    && self.presence.merge(p, Instant::now())
                {
                    self.presence_changed();
                }
                self.route(&env, Some(&via));
            }
            contract::TAG_PING if for_me => {
                let pong = Envelope {
                    to: Target::Node(env.origin.clone()),
                    ..self.new_envelope("", Target::All, contract::TAG_PONG, env.data)
                };
                self.route(&pong, None);
            }
            contract::TAG_PONG if for_me => {
                if let Ok(ping) = serde_json::from_value::<LinkPing>(env.data) {
                    let rtt = Duration::from_millis(
                        u64::try_from(now_ms())
                            .unwrap_or_default()
                            .saturating_sub(ping.t_ms),
                    );
                    let origin = env.origin.clone();
                    if let Some(link) = self
                        .links
                        .values_mut()
                        .find(|l| l.node.as_deref() == Some(origin.as_str()))
                    {
                        link.rtt = Some(rtt);
                        self.metrics
                            .mesh
                            .link_rtt
                            .with_label_values(&[origin.as_str()])
                            .set(rtt.as_secs_f64());
                        self.dir_publish = true;
                    }
                }
            }
            contract::TAG_ACK if for_me => {
                if let Ok(ack) = serde_json::from_value::<MeshAck>(env.data) {
                    self.on_ack(&ack.msg, &ack.user);
                }
            }
            contract::TAG_BOARD => {
                // Hand it to this node's board module, and on to the others.
                if let Ok(payload) = serde_json::to_vec(&env.data)
                    && let Err(e) = self
                        .bus
                        .publish_raw(
                            contract::BOARDS_REMOTE,
                            payload,
                            contract::Qos::AtLeastOnce,
                            false,
                        )
                        .await
                {
                    tracing::debug!(error = %e, "cannot pass on a board event");
                }
                self.route(&env, Some(&via));
            }
            contract::TAG_NAMES => {
                if let Ok(claims) = serde_json::from_value::<NameClaims>(env.data.clone()) {
                    self.on_name_claims(&env.origin, claims).await;
                }
                self.route(&env, Some(&via));
            }
            contract::TAG_REVOKE => {
                if let Ok(r) = serde_json::from_value::<Revocation>(env.data.clone()) {
                    let stored = self
                        .db
                        .mesh()
                        .add_revocation(&r.user, r.jti.as_deref(), r.issued_before, r.expires_at)
                        .await;
                    if let Err(e) = stored {
                        storage_failed("cannot store a token revocation", &e);
                    }
                }
                self.route(&env, Some(&via));
            }
            contract::TAG_MESSAGE | contract::TAG_ALERT => match env.to.clone() {
                Target::User(user) => {
                    if self.presence.is_local(&user) {
                        self.deliver_local(&user, &env).await;
                    }
                    // A user with sessions on several nodes gets it on each.
                    self.route(&env, Some(&via));
                }
                Target::All => {
                    let users: Vec<String> = self.presence.local_users().cloned().collect();
                    for user in users.iter().filter(|u| **u != env.from) {
                        self.deliver_local(user, &env).await;
                    }
                    self.route(&env, Some(&via));
                }
                Target::Node(_) => {}
            },
            _ if !for_me => self.route(&env, Some(&via)),
            _ => {}
        }
    }

    /// Hands a message or alert to a user connected here.
    async fn deliver_local(&mut self, user: &str, env: &Envelope) {
        let inbox = if env.tag == contract::TAG_ALERT {
            let Ok(alert) = serde_json::from_value::<AlertEvent>(env.data.clone()) else {
                return;
            };
            InboxMessage {
                id: alert.key(),
                from: "meteomesh".into(),
                seq: 0,
                kind: "alert".into(),
                sent_at: alert.at.clone(),
                body: env.data.clone(),
                ack: false,
            }
        } else {
            let Ok(msg) = serde_json::from_value::<MeshMessage>(env.data.clone()) else {
                return;
            };
            if msg.ack {
                let origin = env.reply.clone().unwrap_or_else(|| env.origin.clone());
                self.local_deliveries
                    .insert((msg.msg.clone(), user.to_owned()), (origin, Instant::now()));
            }
            InboxMessage {
                id: msg.msg,
                from: env.from.clone(),
                seq: msg.seq,
                kind: if env.to == Target::All {
                    "broadcast".into()
                } else {
                    "message".into()
                },
                body: msg.body,
                ack: msg.ack,
                sent_at: msg.sent_at,
            }
        };
        self.metrics.mesh.local_deliveries.inc();
        if let Err(e) = self.bus.publish(&contract::mesh_inbox(user), &inbox).await {
            tracing::warn!(error = %e, "cannot hand a message to a local user");
        }
    }

    // ----- acknowledgements ------------------------------------------------------

    fn on_user_ack(&mut self, m: Incoming) {
        let Some(user) = contract::mesh_user_of(&m.topic, "ack").map(str::to_owned) else {
            return;
        };
        let Ok(ack) = m.decode::<InboxAck>() else {
            return;
        };
        let Some((origin, _)) = self
            .local_deliveries
            .remove(&(ack.id.clone(), user.clone()))
        else {
            return;
        };
        if origin == self.own_id {
            self.on_ack(&ack.id, &user);
        } else {
            let data = serde_json::to_value(MeshAck { msg: ack.id, user }).unwrap_or_default();
            let env = self.new_envelope("", Target::Node(origin), contract::TAG_ACK, data);
            self.route(&env, None);
        }
    }

    /// A recipient acknowledged a message this node originated.
    fn on_ack(&mut self, msg: &str, user: &str) {
        if let Some(w) = self.waiters.get_mut(msg) {
            w.acked.insert(user.to_owned());
            let done = match w.mode {
                SendMode::Send => true,
                _ => w.acked.len() as u32 >= w.online,
            };
            if done && let Some(w) = self.waiters.remove(msg) {
                self.finish(msg, w);
            }
        }
        if self.retry.contains_key(user) {
            self.acked_queued.push(msg.to_owned());
            // The recipient is answering: the next retry may come soon again.
            if let Some(r) = self.retry.get_mut(user) {
                r.1 = RETRY_FIRST;
            }
        }
    }

    fn finish(&self, msg: &str, w: Waiter) {
        let mut result = result_for(&w.req, Some(msg), w.seq);
        match w.mode {
            SendMode::Send => result.delivered = Some(!w.acked.is_empty()),
            _ => {
                result.acked = Some(w.acked.len() as u32);
                result.online = Some(w.online);
            }
        }
        let bus = self.bus.clone();
        tokio::spawn(async move { deliver_reply(&bus, w.reply, result).await });
    }

    // ----- sending ---------------------------------------------------------------

    fn user_seq(&mut self) -> u64 {
        // Microseconds, so a sender's HTTP and client sends interleave in time order.
        let now = u64::try_from(now_ms()).unwrap_or_default() * 1000;
        self.last_user_seq = (self.last_user_seq + 1).max(now);
        self.last_user_seq
    }

    fn online_anywhere(&self, user: &str) -> bool {
        let linked = |n: &str| self.linked(n);
        self.presence.is_local(user)
            || !self
                .presence
                .remote_nodes_of(user, Instant::now(), &linked)
                .is_empty()
    }

    async fn on_user_send(&mut self, m: Incoming) {
        let Some(user) = contract::mesh_user_of(&m.topic, "send").map(str::to_owned) else {
            return;
        };
        match m.decode::<SendRequest>() {
            Ok(req) => self.send(&user, req, Reply::Mqtt(user.clone())).await,
            Err(e) => {
                let result = refused(
                    "",
                    SendRefusal::Invalid,
                    &format!("not a send request: {e}"),
                );
                deliver_reply(&self.bus, Reply::Mqtt(user), result).await;
            }
        }
    }

    pub async fn send(&mut self, from: &str, req: SendRequest, reply: Reply) {
        if let Err(problem) = check_request(&req, self.cfg.max_message_bytes) {
            let result = refused(&req.req, SendRefusal::Invalid, &problem);
            return deliver_reply(&self.bus, reply, result).await;
        }
        let seq = req.seq.unwrap_or_else(|| self.user_seq());
        let mode_label = match req.mode {
            SendMode::Send => "send",
            SendMode::FireSend => "fire_send",
            SendMode::Broadcast => "broadcast",
            SendMode::FireBroadcast => "fire_broadcast",
        };
        self.metrics
            .mesh
            .messages
            .with_label_values(&[mode_label])
            .inc();
        self.next_seq += 1;
        let msg_id = format!("{}:{}", self.own_id, self.next_seq);
        let sent_at = rfc3339_ms(now_ms());
        let wants_ack = matches!(
            req.mode,
            SendMode::Send | SendMode::Broadcast | SendMode::FireSend
        );
        let message = MeshMessage {
            msg: msg_id.clone(),
            seq,
            body: req.body.clone(),
            ack: wants_ack,
            sent_at: sent_at.clone(),
        };
        match req.mode {
            SendMode::Send => {
                let to = req.to.clone().unwrap_or_default();
                if !self.online_anywhere(&to) {
                    let result = SendResult {
                        delivered: Some(false),
                        ..result_for(&req.req, Some(&msg_id), seq)
                    };
                    return deliver_reply(&self.bus, reply, result).await;
                }
                self.await_acks(&msg_id, &req, seq, 1, reply);
                self.transmit_to_user(from, &to, &message).await;
            }
            SendMode::FireSend => {
                let to = req.to.clone().unwrap_or_default();
                let queued = QueuedMessage {
                    id: msg_id.clone(),
                    from_user: from.to_owned(),
                    to_user: to.clone(),
                    seq,
                    body: req.body.to_string(),
                    sent_at,
                    expires_at: system_now()
                        + i64::try_from(self.cfg.offline_expiry.as_secs()).unwrap_or(i64::MAX / 4),
                };
                let max = self.cfg.offline_max_per_user;
                let stored = self.db.mesh().enqueue(&queued, max).await;
                let result = match stored {
                    Ok(Ok(())) => SendResult {
                        queued: Some(true),
                        ..result_for(&req.req, Some(&msg_id), seq)
                    },
                    Ok(Err(QueueRefusal::Full)) => refused(
                        &req.req,
                        SendRefusal::QueueFull,
                        &format!("{to} already has {max} messages waiting; try again later"),
                    ),
                    Err(e) => {
                        storage_failed("cannot queue a message", &e);
                        refused(
                            &req.req,
                            SendRefusal::Unavailable,
                            "the message could not be stored",
                        )
                    }
                };
                let accepted = result.queued == Some(true);
                deliver_reply(&self.bus, reply, result).await;
                if accepted {
                    self.metrics.mesh.queued.inc();
                    let next = Instant::now() + RETRY_FIRST;
                    let online = self.online_anywhere(&to);
                    let entry = self.retry.entry(to.clone()).or_insert((next, RETRY_FIRST));
                    if online {
                        entry.0 = next;
                        self.transmit_to_user(from, &to, &message).await;
                    }
                }
            }
            SendMode::Broadcast | SendMode::FireBroadcast => {
                let linked = |n: &str| self.linked(n);
                let online = self
                    .presence
                    .online(Instant::now(), &linked)
                    .into_iter()
                    .filter(|u| u.user != from)
                    .count() as u32;
                let mut env = self.new_envelope(
                    from,
                    Target::All,
                    contract::TAG_MESSAGE,
                    serde_json::to_value(&message).unwrap_or_default(),
                );
                env.id = msg_id.clone();
                if req.mode == SendMode::Broadcast && online > 0 {
                    self.await_acks(&msg_id, &req, seq, online, reply);
                } else {
                    let result = SendResult {
                        acked: (req.mode == SendMode::Broadcast).then_some(0),
                        online: Some(online),
                        ..result_for(&req.req, Some(&msg_id), seq)
                    };
                    deliver_reply(&self.bus, reply, result).await;
                }
                let users: Vec<String> = self.presence.local_users().cloned().collect();
                for user in users.iter().filter(|u| u.as_str() != from) {
                    self.deliver_local(user, &env).await;
                }
                self.route(&env, None);
            }
        }
    }

    /// Answers `reply` once `online` recipients acknowledged `msg_id`, or at the timeout.
    fn await_acks(&mut self, msg_id: &str, req: &SendRequest, seq: u64, online: u32, reply: Reply) {
        self.waiters.insert(
            msg_id.to_owned(),
            Waiter {
                req: req.req.clone(),
                seq,
                mode: req.mode,
                reply,
                deadline: Instant::now() + self.cfg.send_timeout,
                acked: HashSet::new(),
                online,
            },
        );
    }

    /// Sends one message to a user: locally if connected here, and over the mesh to
    /// wherever else they are.
    async fn transmit_to_user(&mut self, from: &str, to: &str, message: &MeshMessage) {
        let env = self.new_envelope(
            from,
            Target::User(to.to_owned()),
            contract::TAG_MESSAGE,
            serde_json::to_value(message).unwrap_or_default(),
        );
        if self.presence.is_local(to) {
            self.deliver_local(to, &env).await;
        }
        self.route(&env, None);
    }

    /// Sends every queued message of `user` again, oldest first (go-back-N: an ack lost
    /// with a dead node must not let a later message overtake an earlier one).
    async fn resend_queued(&mut self, user: String) {
        let u = user.clone();
        let waiting = match self.db.mesh().waiting_for(&u).await {
            Ok(w) => w,
            Err(e) => {
                storage_failed("cannot read queued messages", &e);
                return;
            }
        };
        let pending: HashSet<&String> = self.acked_queued.iter().collect();
        let waiting: Vec<QueuedMessage> = waiting
            .into_iter()
            .filter(|m| !pending.contains(&m.id))
            .collect();
        if waiting.is_empty() {
            self.retry.remove(&user);
            return;
        }
        for m in waiting {
            let message = MeshMessage {
                msg: m.id,
                seq: m.seq,
                body: serde_json::from_str(&m.body).unwrap_or(Value::Null),
                ack: true,
                sent_at: m.sent_at,
            };
            self.transmit_to_user(&m.from_user, &user, &message).await;
        }
        let delay = self.retry.get(&user).map_or(RETRY_FIRST, |r| r.1);
        self.retry
            .insert(user, (Instant::now() + delay, (delay * 2).min(RETRY_MAX)));
    }

    // ----- presence, alerts --------------------------------------------------------

    async fn on_local_presence(&mut self, m: Incoming) {
        let Some(user) = m.topic.rsplit('/').next().map(str::to_owned) else {
            return;
        };
        let sessions = if m.payload.is_empty() {
            0
        } else {
            match m.decode::<LocalPresence>() {
                Ok(p) => p.sessions,
                Err(_) => return,
            }
        };
        if self.presence.set_local(&user, sessions) {
            self.users_count
                .store(self.presence.local_count(), Ordering::Relaxed);
            self.presence_changed();
            self.announce_presence();
        }
    }

    fn presence_changed(&mut self) {
        self.online_dirty = true;
        self.dir_publish = true;
    }

    fn announce_presence(&mut self) {
        let data = serde_json::to_value(self.presence.own()).unwrap_or_default();
        let env = self.new_envelope("", Target::All, contract::TAG_PRESENCE, data);
        self.route(&env, None);
    }

    async fn on_alert(&mut self, m: Incoming) {
        let Ok(alert) = m.decode::<AlertEvent>() else {
            return;
        };
        let id = alert.user_id;
        let name = match self.usernames.get(&id) {
            Some(n) => n.clone(),
            None => match self.db.users().by_id(id).await {
                Ok(Some(u)) => {
                    self.usernames.insert(id, u.username.clone());
                    u.username
                }
                _ => return,
            },
        };
        if !self.online_anywhere(&name) {
            return;
        }
        let data = serde_json::to_value(&alert).unwrap_or_default();
        let env = self.new_envelope("", Target::User(name.clone()), contract::TAG_ALERT, data);
        if self.presence.is_local(&name) {
            self.deliver_local(&name, &env).await;
        }
        self.route(&env, None);
    }

    /// A board event happened here: every other node applies it too.
    fn on_local_board_event(&mut self, m: Incoming) {
        if !self.cfg.enabled {
            return;
        }
        let Ok(data) = serde_json::from_slice::<Value>(&m.payload) else {
            return;
        };
        let env = self.new_envelope("", Target::All, contract::TAG_BOARD, data);
        self.route(&env, None);
    }

    /// Tokens of a user of this node were revoked: tell the other nodes, which accept
    /// this node's tokens with a mesh-wide secret.
    fn on_account_event(&mut self, m: Incoming) {
        if !self.cfg.enabled {
            return;
        }
        let Ok(event) = m.decode::<AccountEvent>() else {
            return;
        };
        if event.username.is_empty() {
            return;
        }
        let now = system_now();
        let (jti, issued_before) = match event.change {
            AccountChange::Created => {
                self.names_due = true;
                return;
            }
            AccountChange::TokenRevoked { jti } => (Some(jti), None),
            AccountChange::Deleted => {
                self.names_due = true;
                (None, Some(now))
            }
            AccountChange::TokensRevoked => (None, Some(now)),
        };
        let revocation = Revocation {
            user: event.username,
            jti,
            issued_before,
            expires_at: now + i64::try_from(self.token_lifetime.as_secs()).unwrap_or(i64::MAX / 4),
        };
        let data = serde_json::to_value(revocation).unwrap_or_default();
        let env = self.new_envelope("", Target::All, contract::TAG_REVOKE, data);
        self.route(&env, None);
    }

    // ----- names: one name, one person across the mesh --------------------------

    /// Tells every node which usernames this node's accounts hold (the whole list).
    async fn announce_names(&mut self) {
        let claims = match self.db.mesh().local_name_claims().await {
            Ok(claims) => claims,
            Err(e) => {
                storage_failed("cannot read this node's usernames", &e);
                return;
            }
        };
        self.names_due = false;
        // The list travels in one envelope, so it must fit one MQTT packet: about 8,000
        // names at the default `bus.max_packet_size`. The oldest accounts go first.
        let mut room = self.link_settings.max_packet_size.saturating_sub(4096);
        let total = claims.len();
        let names: Vec<ClaimedName> = claims
            .into_iter()
            .take_while(|c| {
                let size = c.name.len() + 32;
                room = room.saturating_sub(size);
                room > 0
            })
            .map(|c| ClaimedName {
                name: c.name,
                since: c.since,
            })
            .collect();
        if names.len() < total {
            tracing::warn!(
                told = names.len(),
                accounts = total,
                "not every username fits one mesh packet (raise bus.max_packet_size): \
                 the newest accounts' names are not protected mesh-wide"
            );
        }
        let data = serde_json::to_value(NameClaims { names }).unwrap_or_default();
        let env = self.new_envelope("", Target::All, contract::TAG_NAMES, data);
        self.route(&env, None);
    }

    /// Stores what node `origin` claims, and warns about this node's accounts whose name
    /// an earlier account there holds (they are kept out of the mesh).
    async fn on_name_claims(&mut self, origin: &str, claims: NameClaims) {
        if origin.is_empty() || origin == self.own_id {
            return;
        }
        // A peer is trusted, but its list is still bounded and shaped like usernames.
        let claims: Vec<store::NameClaim> = claims
            .names
            .into_iter()
            .filter(|c| crate::domain::user::normalize_username(&c.name).is_ok_and(|n| n == c.name))
            .take(MAX_NAME_CLAIMS)
            .map(|c| store::NameClaim {
                name: c.name,
                since: c.since,
            })
            .collect();
        let (home, own) = (origin.to_owned(), self.own_id.clone());
        let lost = match self
            .db
            .mesh()
            .replace_name_claims(&home, &claims, &own)
            .await
        {
            Ok(lost) => lost,
            Err(e) => {
                storage_failed("cannot store another node's usernames", &e);
                return;
            }
        };
        let now_lost: HashSet<String> = lost.iter().map(|(n, _)| n.clone()).collect();
        for (name, holder) in lost {
            if !self.names_lost.contains(&name) {
                tracing::warn!(
                    username = name,
                    holder,
                    "an earlier account of another mesh node holds this account's name: \
                     it is kept out of messaging and MQTT until renamed or removed"
                );
            }
        }
        self.names_lost = now_lost;
    }

    // ----- links and the directory ------------------------------------------------

    fn ensure_link(&mut self, addr: &str) {
        if self.links.contains_key(addr) || addr == self.dir.own().mqtt {
            return;
        }
        if let Some(link) = Link::start(addr, &self.link_settings, self.link_events.clone()) {
            tracing::info!(peer = addr, "mesh link starting");
            self.links.insert(addr.to_owned(), link);
        }
    }

    /// Starts a link to every known node that has none (all nodes link to all).
    fn ensure_links(&mut self) {
        if !self.cfg.enabled || !self.cfg.auto_link {
            return;
        }
        let wanted: Vec<(String, String)> = self
            .dir
            .all()
            .filter(|k| k.advert.id != self.own_id)
            .map(|k| (k.advert.id.clone(), k.advert.mqtt.clone()))
            .collect();
        for (id, addr) in wanted {
            let has = self
                .links
                .values()
                .any(|l| l.node.as_deref() == Some(id.as_str()) || l.addr == addr);
            if !has {
                self.ensure_link(&addr);
            }
        }
    }

    fn dir_changed(&mut self) {
        self.dir_dirty = true;
        self.dir_publish = true;
        self.metrics.mesh.nodes.set(self.dir.len() as i64);
    }

    fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Up { addr } => {
                tracing::info!(peer = addr, "mesh link up");
                // Tell the peer everything we know, and who is here.
                let hello = self.hello();
                if let Some(link) = self.links.get_mut(&addr) {
                    link.connected = true;
                    link.since = Instant::now();
                    link.last_heartbeat = None;
                    link.hello(&hello);
                }
                self.presence_changed();
                self.names_due = true;
            }
            LinkEvent::Down { addr } => {
                if let Some(link) = self.links.get_mut(&addr) {
                    if link.connected {
                        tracing::warn!(peer = addr, "mesh link down");
                    }
                    link.connected = false;
                    link.since = Instant::now();
                }
                self.online_dirty = true;
                self.dir_publish = true;
            }
            LinkEvent::Heartbeat { addr, heartbeat } => {
                let mut learned = false;
                if let Some(link) = self.links.get_mut(&addr) {
                    link.last_heartbeat = Some(Instant::now());
                    if link.node.is_none() {
                        link.node = Some(heartbeat.node.clone());
                        learned = true;
                    }
                }
                self.dir
                    .touch(&heartbeat.node, heartbeat.users, system_now());
                if learned {
                    self.drop_duplicate_link(&addr, &heartbeat.node);
                }
            }
            LinkEvent::Directory { addr, directory } => {
                if let Some(link) = self.links.get_mut(&addr) {
                    link.node = Some(directory.node.clone());
                }
                self.drop_duplicate_link(&addr, &directory.node);
                let adverts = directory.nodes.into_iter().map(|e| e.advert).collect();
                let changed = self.dir.merge(adverts, system_now());
                if !changed.is_empty() {
                    self.dir_changed();
                    let data = serde_json::to_value(changed).unwrap_or_default();
                    let env = self.new_envelope("", Target::All, contract::TAG_ADVERTS, data);
                    self.route(&env, Some(&directory.node));
                    self.ensure_links();
                }
            }
        }
    }

    /// Two links to one node (a seed address and its advertised one): keep one.
    fn drop_duplicate_link(&mut self, addr: &str, node: &str) {
        if node == self.own_id {
            // A seed that is this very node.
            if let Some(link) = self.links.remove(addr) {
                tokio::spawn(link.stop());
            }
            return;
        }
        let other = self
            .links
            .iter()
            .find(|(a, l)| a.as_str() != addr && l.node.as_deref() == Some(node))
            .map(|(a, _)| a.clone());
        if let Some(other) = other {
            // Keep the link to the address the node advertises.
            let advertised = self.dir.get(node).map(|k| k.advert.mqtt.clone());
            let drop = if advertised.as_deref() == Some(addr) {
                other
            } else {
                addr.to_owned()
            };
            if let Some(link) = self.links.remove(&drop) {
                tokio::spawn(link.stop());
            }
        }
    }

    fn ping_links(&mut self) {
        let t_ms = u64::try_from(now_ms()).unwrap_or_default();
        let targets: Vec<String> = self.links.values().filter_map(|l| l.node.clone()).collect();
        for node in targets {
            let data = serde_json::to_value(LinkPing { t_ms }).unwrap_or_default();
            let env = self.new_envelope("", Target::Node(node.clone()), contract::TAG_PING, data);
            self.send_direct(&node, &env);
        }
    }

    fn hello(&self) -> PeerHello {
        PeerHello {
            node: self.own_id.clone(),
            adverts: self.dir.adverts(),
            presence: self.presence.own(),
        }
    }

    /// What a peer's link left on our broker: its node list and its users.
    fn on_hello(&mut self, m: Incoming) {
        if m.payload.is_empty() {
            return;
        }
        let Ok(hello) = m.decode::<PeerHello>() else {
            tracing::debug!(topic = m.topic, "ignoring a malformed hello");
            return;
        };
        if hello.node == self.own_id {
            return;
        }
        if self.presence.merge(hello.presence, Instant::now()) {
            self.presence_changed();
        }
        let changed = self.dir.merge(hello.adverts, system_now());
        if !changed.is_empty() {
            self.dir_changed();
            let data = serde_json::to_value(changed).unwrap_or_default();
            let env = self.new_envelope("", Target::All, contract::TAG_ADVERTS, data);
            self.route(&env, Some(&hello.node));
            self.ensure_links();
        }
    }

    /// Every `exchange_interval`: a fresh advert of this node to the whole mesh, and
    /// the full list to every peer.
    fn exchange(&mut self) {
        let users = self.presence.local_count();
        let own = self
            .dir
            .refresh_own(users, u64::try_from(now_ms()).unwrap_or_default());
        self.dir_changed();
        let data = serde_json::to_value(vec![own]).unwrap_or_default();
        let env = self.new_envelope("", Target::All, contract::TAG_ADVERTS, data);
        self.flood(&env, None);
        let hello = self.hello();
        for link in self.links.values().filter(|l| l.connected) {
            link.hello(&hello);
        }
        self.names_due = true;
    }

    async fn expire(&mut self) {
        let cutoff = system_now() - i64::try_from(self.cfg.node_expiry.as_secs()).unwrap_or(0);
        let patience = self.patience();
        let now = Instant::now();
        let links = &self.links;
        let gone = self.dir.expire(cutoff, |id| {
            links
                .values()
                .any(|l| l.node.as_deref() == Some(id) && l.usable(now, patience))
        });
        for id in gone {
            tracing::info!(
                node = id,
                "mesh node forgotten: not heard of within node_expiry"
            );
            self.presence.forget(&id);
            let node = id.clone();
            if let Err(e) = self.db.mesh().forget_name_claims(&node).await {
                storage_failed("cannot forget a node's usernames", &e);
            }
            let addrs: Vec<String> = self
                .links
                .iter()
                .filter(|(_, l)| l.node.as_deref() == Some(id.as_str()))
                .map(|(a, _)| a.clone())
                .collect();
            for a in addrs {
                if let Some(link) = self.links.remove(&a) {
                    link.stop().await;
                }
            }
            self.dir_changed();
        }
        let now_s = system_now();
        match self.db.mesh().expire(now_s).await {
            Ok(0) => {}
            Ok(n) => {
                self.metrics.mesh.queued.sub(n as i64);
                tracing::info!(expired = n, "queued mesh messages expired unread");
            }
            Err(e) => storage_failed("cannot expire queued messages", &e),
        }
        if let Err(e) = self.db.mesh().prune_revocations(now_s).await {
            storage_failed("cannot prune token revocations", &e);
        }
        let cutoff = Instant::now() - LOCAL_ACK_WINDOW.min(Duration::from_secs(600));
        self.local_deliveries.retain(|_, (_, at)| *at > cutoff);
    }

    async fn save_directory(&mut self) {
        let nodes = self.dir.to_stored();
        if let Err(e) = self.db.mesh().save_nodes(&nodes).await {
            storage_failed("cannot store the node list", &e);
        } else {
            self.dir_dirty = false;
        }
    }

    async fn flush_acked(&mut self) {
        if self.acked_queued.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.acked_queued);
        match self.db.mesh().remove(&ids).await {
            Ok(n) => self.metrics.mesh.queued.sub(n as i64),
            Err(e) => storage_failed("cannot remove acknowledged messages", &e),
        }
    }

    // ----- timers ------------------------------------------------------------------

    async fn on_fast_tick(&mut self) {
        if self.names_due && self.cfg.enabled {
            self.announce_names().await;
        }
        let now = Instant::now();
        let expired: Vec<String> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(w) = self.waiters.remove(&id) {
                self.finish(&id, w);
            }
        }
        let patience = self.patience();
        let usable = self
            .links
            .values()
            .filter(|l| l.usable(now, patience))
            .count();
        if usable != self.links_usable {
            self.links_usable = usable;
            self.metrics.mesh.links_up.set(usable as i64);
            self.online_dirty = true;
            self.dir_publish = true;
            // A link came or went: queued messages may have a way now.
            self.presence_changed();
        }
        if self.online_dirty {
            self.online_dirty = false;
            let linked = |n: &str| self.linked(n);
            let online = OnlineUsers {
                users: self.presence.online(now, &linked),
            };
            self.metrics
                .mesh
                .users_online
                .set(online.users.len() as i64);
            if self.last_online.as_ref() != Some(&online) {
                // Users who came back or moved to another node: their queued messages go
                // now instead of at the next retry.
                let before: HashMap<&str, &Vec<String>> = self
                    .last_online
                    .iter()
                    .flat_map(|o| o.users.iter())
                    .map(|u| (u.user.as_str(), &u.nodes))
                    .collect();
                for u in &online.users {
                    if before.get(u.user.as_str()) != Some(&&u.nodes)
                        && let Some(r) = self.retry.get_mut(&u.user)
                    {
                        *r = (now, RETRY_FIRST);
                    }
                }
                if let Err(e) = self.bus.publish(contract::MESH_ONLINE, &online).await {
                    tracing::debug!(error = %e, "cannot publish the online list");
                }
                self.last_online = Some(online);
            }
        }
        // Clients choose nodes from the directory: publish changes promptly, but at most
        // five times a second.
        if self.dir_publish && self.dir_published.elapsed() >= Duration::from_millis(200) {
            self.dir_publish = false;
            self.dir_published = now;
            let directory = self.directory_view();
            if let Err(e) = self.bus.publish(contract::MESH_DIRECTORY, &directory).await {
                tracing::debug!(error = %e, "cannot publish the directory");
            }
        }
        // Acknowledged rows still count against the recipient's cap: remove them soon
        // (one transaction per tick, however many acks came in).
        self.flush_acked().await;
    }

    async fn on_slow_tick(&mut self) {
        self.flush_acked().await;
        if self.dir_dirty {
            self.save_directory().await;
        }
        // Queued messages whose recipient is reachable and whose retry is due.
        let now = Instant::now();
        let recipients = match self.db.mesh().recipients().await {
            Ok(r) => r,
            Err(_) => return,
        };
        for user in recipients {
            let due = self.retry.get(&user).is_none_or(|r| r.0 <= now);
            if due && self.online_anywhere(&user) {
                self.resend_queued(user).await;
            }
        }
    }

    fn directory_view(&self) -> contract::Directory {
        let nodes = self
            .dir
            .all()
            .map(|k| {
                let id = &k.advert.id;
                let link = self.links.values().find(|l| l.node.as_ref() == Some(id));
                let mut advert = k.advert.clone();
                let reachable = *id == self.own_id || self.linked(id) == Some(true);
                if let Some(users) = self.presence.users_on(id) {
                    advert.users = users;
                }
                if !reachable && self.linked(id).is_some() {
                    // Its link is down: whoever was there has gone elsewhere or is gone.
                    advert.users = 0;
                }
                contract::DirectoryEntry {
                    reachable,
                    rtt_ms: link.and_then(|l| l.rtt).map(|d| d.as_secs_f64() * 1000.0),
                    advert,
                }
            })
            .collect();
        contract::Directory {
            node: self.own_id.clone(),
            nodes,
        }
    }

    // ----- API -----------------------------------------------------------------------

    async fn on_api(&mut self, call: ApiCall) {
        match call {
            ApiCall::Send { from, req, reply } => self.send(&from, req, Reply::Api(reply)).await,
            ApiCall::Online { reply } => {
                let linked = |n: &str| self.linked(n);
                let _ = reply.send(self.presence.online(Instant::now(), &linked));
            }
            ApiCall::Status { reply } => {
                let _ = reply.send(self.status().await);
            }
        }
    }

    async fn status(&self) -> MeshStatus {
        let now = Instant::now();
        let patience = self.patience();
        let view = self.directory_view();
        let nodes = view
            .nodes
            .into_iter()
            .map(|e| {
                let id = e.advert.id.clone();
                let link = self
                    .links
                    .values()
                    .find(|l| l.node.as_ref() == Some(&id))
                    .map(|l| LinkStatus {
                        state: if l.usable(now, patience) {
                            "up"
                        } else if l.connected {
                            "silent"
                        } else {
                            "down"
                        }
                        .into(),
                        for_seconds: now.duration_since(l.since).as_secs(),
                        rtt_ms: l.rtt.map(|d| d.as_secs_f64() * 1000.0),
                    });
                NodeStatusEntry {
                    this_node: id == self.own_id,
                    last_seen_at: self.dir.get(&id).map(|k| k.last_seen_at),
                    advert: e.advert,
                    link,
                }
            })
            .collect();
        let pending_links = self
            .links
            .values()
            .filter(|l| l.node.is_none())
            .map(|l| l.addr.clone())
            .collect();
        let counter = |outcome: &str| -> u64 {
            [
                "msg", "ack", "alert", "presence", "adverts", "ping", "pong", "revoke", "board",
                "names", "other",
            ]
            .iter()
            .map(|tag| {
                self.metrics
                    .mesh
                    .envelopes
                    .with_label_values(&[outcome, tag])
                    .get()
            })
            .sum()
        };
        let duplicate_messages = self
            .metrics
            .mesh
            .envelopes
            .with_label_values(&["duplicate", contract::TAG_MESSAGE])
            .get();
        let queued = self.db.mesh().waiting_count().await.unwrap_or(0);
        let remote_names = self.db.mesh().remote_name_count().await.unwrap_or(0);
        MeshStatus {
            node: self.own_id.clone(),
            enabled: self.cfg.enabled,
            nodes,
            unidentified_peers: pending_links,
            envelopes_received: counter("received"),
            envelopes_sent: counter("sent"),
            duplicates_dropped: counter("duplicate"),
            duplicate_messages_dropped: duplicate_messages,
            ttl_exceeded: counter("ttl_exceeded"),
            local_deliveries: self.metrics.mesh.local_deliveries.get(),
            queued_messages: queued,
            names_held_elsewhere: remote_names,
            users_online: self.last_online.as_ref().map_or(0, |o| o.users.len()),
        }
    }
}

fn result_for(req: &str, id: Option<&str>, seq: u64) -> SendResult {
    SendResult {
        req: req.to_owned(),
        id: id.map(str::to_owned),
        seq,
        delivered: None,
        acked: None,
        online: None,
        queued: None,
        code: None,
        error: None,
    }
}

fn refused(req: &str, code: SendRefusal, message: &str) -> SendResult {
    SendResult {
        code: Some(code),
        error: Some(message.to_owned()),
        ..result_for(req, None, 0)
    }
}

async fn deliver_reply(bus: &BusClient, reply: Reply, result: SendResult) {
    match reply {
        Reply::Api(tx) => {
            let _ = tx.send(result);
        }
        Reply::Mqtt(user) => {
            if let Err(e) = bus.publish(&contract::mesh_result(&user), &result).await {
                tracing::debug!(error = %e, "cannot answer a send request");
            }
        }
    }
}

/// Checks a send request; the message says what to fix.
pub fn check_request(req: &SendRequest, max_bytes: usize) -> Result<(), String> {
    if req.req.len() > 64 {
        return Err("req must be at most 64 characters".into());
    }
    match (req.mode, req.to.as_deref()) {
        (SendMode::Send | SendMode::FireSend, None) => {
            return Err("`to` (a username) is required for send and fire_send".into());
        }
        (SendMode::Send | SendMode::FireSend, Some(to))
            if crate::domain::user::normalize_username(to).ok().as_deref() != Some(to) =>
        {
            return Err(format!("`{to}` is not a username (3–32 of a-z 0-9 _ . -)"));
        }
        (SendMode::Broadcast | SendMode::FireBroadcast, Some(_)) => {
            return Err("broadcasts have no `to`".into());
        }
        _ => {}
    }
    let size = req.body.to_string().len();
    if size > max_bytes {
        return Err(format!(
            "the body is {size} bytes of JSON; the limit is {max_bytes} (mesh.max_message_bytes)"
        ));
    }
    Ok(())
}

/// Keeps `Incoming` decoding in one place for the subscriptions the node reads.
pub fn filters() -> [(&'static str, contract::Qos); 8] {
    [
        (Envelope::FILTER, Envelope::DELIVERY.qos),
        (PeerHello::FILTER, PeerHello::DELIVERY.qos),
        (LocalPresence::FILTER, LocalPresence::DELIVERY.qos),
        (SendRequest::FILTER, SendRequest::DELIVERY.qos),
        (InboxAck::FILTER, InboxAck::DELIVERY.qos),
        (AlertEvent::FILTER, AlertEvent::DELIVERY.qos),
        (AccountEvent::FILTER, AccountEvent::DELIVERY.qos),
        (contract::BOARDS_LOCAL, contract::Qos::AtLeastOnce),
    ]
}

/// The one warning for a storage call that failed here (each is also counted in
/// `meteomesh_db_*` metrics); one call site keeps the binary small.
fn storage_failed(what: &str, e: &crate::storage::StorageError) {
    tracing::warn!(error = %e, "{what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_checks() {
        let req = |mode, to: Option<&str>, body: Value| SendRequest {
            req: "r1".into(),
            mode,
            to: to.map(str::to_owned),
            seq: None,
            body,
        };
        assert!(check_request(&req(SendMode::Send, Some("bob"), "hi".into()), 100).is_ok());
        assert!(check_request(&req(SendMode::Send, None, "hi".into()), 100).is_err());
        assert!(check_request(&req(SendMode::FireSend, Some("Bob/x"), "hi".into()), 100).is_err());
        assert!(check_request(&req(SendMode::Broadcast, Some("bob"), "hi".into()), 100).is_err());
        assert!(
            check_request(&req(SendMode::Broadcast, None, "x".repeat(200).into()), 100).is_err()
        );
        assert!(check_request(&req(SendMode::FireBroadcast, None, Value::Null), 100).is_ok());
    }
}
