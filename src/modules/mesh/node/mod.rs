//! Owns the running state of this mesh node, in one task so it needs no locks: the
//! directory, presence, links, the seen-id cache, waiting senders and the retry schedule
//! of queued messages. Everything that happens to the mesh arrives here as an event
//! (envelopes from peers, the local broker's presence, users' sends and acks, alerts,
//! link changes, API calls, timers) as one [`NodeEvent`], and `handle` deals with it to
//! completion before the next. The handlers live by concern: [`routing`] (envelopes),
//! [`messaging`] (users' messages and the offline queue), [`membership`] (presence,
//! accounts, names), [`peers`] (links) and [`upkeep`] (timers, status).
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

mod membership;
mod messaging;
mod peers;
mod routing;
mod upkeep;

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

/// Everything the node reacts to: a message on one of its bus inputs, a link's news,
/// an API call, or one of its timers.
enum NodeEvent {
    /// An envelope from a peer node.
    Envelope(Incoming),
    Hello(Incoming),
    /// This broker's presence of a user changed.
    LocalPresence(Incoming),
    UserSend(Incoming),
    UserAck(Incoming),
    Alert(Incoming),
    Account(Incoming),
    BoardEvent(Incoming),
    Api(ApiCall),
    Link(LinkEvent),
    /// Every 50 ms: what must not wait (names due, waiters past their deadline,
    /// publishing the directory and the online list).
    FastTick,
    /// Every second: acks to commit, the directory to save, queued messages due again.
    SlowTick,
    PingLinks,
    Exchange,
    PresenceRefresh,
    Expiry,
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
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(m) = inputs.envelopes.recv() => NodeEvent::Envelope(m),
                Some(m) = inputs.hellos.recv() => NodeEvent::Hello(m),
                Some(m) = inputs.presence.recv() => NodeEvent::LocalPresence(m),
                Some(m) = inputs.sends.recv() => NodeEvent::UserSend(m),
                Some(m) = inputs.acks.recv() => NodeEvent::UserAck(m),
                Some(m) = inputs.alerts.recv() => NodeEvent::Alert(m),
                Some(m) = inputs.accounts.recv() => NodeEvent::Account(m),
                Some(m) = inputs.boards.recv() => NodeEvent::BoardEvent(m),
                Some(call) = inputs.api.recv() => NodeEvent::Api(call),
                Some(e) = link_rx.recv() => NodeEvent::Link(e),
                _ = fast.tick() => NodeEvent::FastTick,
                _ = slow.tick() => NodeEvent::SlowTick,
                _ = ping.tick() => NodeEvent::PingLinks,
                _ = exchange.tick() => NodeEvent::Exchange,
                _ = refresh.tick() => NodeEvent::PresenceRefresh,
                _ = expiry.tick() => NodeEvent::Expiry,
            };
            self.handle(event).await;
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

    /// The one dispatcher: every event is handled to completion before the next.
    async fn handle(&mut self, event: NodeEvent) {
        match event {
            NodeEvent::Envelope(m) => self.on_link_message(m).await,
            NodeEvent::Hello(m) => self.on_hello(m),
            NodeEvent::LocalPresence(m) => self.on_local_presence(m).await,
            NodeEvent::UserSend(m) => self.on_user_send(m).await,
            NodeEvent::UserAck(m) => self.on_user_ack(m),
            NodeEvent::Alert(m) => self.on_alert(m).await,
            NodeEvent::Account(m) => self.on_account_event(m),
            NodeEvent::BoardEvent(m) => self.on_local_board_event(m),
            NodeEvent::Api(call) => self.on_api(call).await,
            NodeEvent::Link(e) => self.on_link_event(e),
            NodeEvent::FastTick => self.on_fast_tick().await,
            NodeEvent::SlowTick => self.on_slow_tick().await,
            NodeEvent::PingLinks => self.ping_links(),
            NodeEvent::Exchange => self.exchange(),
            NodeEvent::PresenceRefresh => self.announce_presence(),
            NodeEvent::Expiry => self.expire().await,
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
