//! Owns the message bus every module talks over: the embedded rmqtt broker (or, in
//! external mode, the address of an existing broker) and the factory for typed
//! [`BusClient`] sessions. Topic names and payloads live in [`crate::contract`] only.
//!
//! With the embedded broker it also ends the sessions of revoked accounts and publishes
//! presence: each user's session count on this broker as the retained
//! `system/presence/{username}` (what the mesh builds on).

mod broker;
mod client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use broker::auth::{INTERNAL_USERNAME, Refusal, UserAuthenticator};
pub use broker::sessions::UserSession;
pub use broker::{BrokerListeners, RESERVED_SESSIONS};
pub use client::{BusClient, ConnectOptions, Inbox, Incoming, Sessions};

use crate::config::{BrokerUrl, BusConfig, BusMode, BusUser};
use crate::contract::{self, AccountChange, AccountEvent, BusMessage};
use crate::metrics::Metrics;
use broker::EmbeddedBroker;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, String),
    #[error("embedded broker failed to start: {0}")]
    Broker(String),
    #[error("not connected to the broker after {0:?}")]
    NotConnected(Duration),
    #[error("the bus client is closed")]
    Closed,
    #[error("cannot encode a bus message: {0}")]
    Encode(String),
    #[error("bad payload on {topic}: {message}")]
    Decode { topic: String, message: String },
    #[error("invalid bus configuration: {0}")]
    Config(String),
}

/// Where module sessions connect, with which credential.
#[derive(Clone)]
struct Endpoint {
    host: String,
    port: u16,
    username: String,
    password: String,
}

/// The running bus: an embedded broker (or none, in external mode) and the endpoint
/// every module client connects to.
pub struct Bus {
    broker: Option<Arc<EmbeddedBroker>>,
    enforcer: Option<(BusClient, JoinHandle<()>)>,
    presence: Option<(BusClient, JoinHandle<()>)>,
    endpoint: Endpoint,
    client_id_base: String,
    max_packet_size: usize,
    mode: BusMode,
}

impl Bus {
    /// Binds the embedded broker's listeners (`None` in external mode).
    pub fn bind(cfg: &BusConfig) -> Result<Option<BrokerListeners>, BusError> {
        match cfg.mode {
            BusMode::Embedded => BrokerListeners::bind(cfg).map(Some),
            BusMode::External => Ok(None),
        }
    }

    pub async fn start(
        cfg: &BusConfig,
        listeners: Option<BrokerListeners>,
        node_id: &str,
        extra_accounts: &[BusUser],
        users: Option<Arc<dyn UserAuthenticator>>,
        metrics: Arc<Metrics>,
    ) -> Result<Bus, BusError> {
        let client_id_base = format!("{}-{node_id}", cfg.client_id_prefix);
        let max_packet_size = cfg.max_packet_size as usize;
        match (cfg.mode, listeners) {
            (BusMode::Embedded, Some(listeners)) => {
                let internal = listeners.internal_addr()?;
                let password = crate::domain::ids::hex(32);
                let (presence_tx, presence_rx) = mpsc::unbounded_channel();
                let broker = Arc::new(
                    EmbeddedBroker::start(
                        cfg,
                        listeners,
                        broker::BrokerAccess {
                            node_id,
                            internal_password: &password,
                            extra_accounts,
                        },
                        users,
                        metrics,
                        presence_tx,
                    )
                    .await?,
                );
                let mut bus = Bus {
                    broker: Some(broker.clone()),
                    enforcer: None,
                    presence: None,
                    endpoint: Endpoint {
                        host: internal.ip().to_string(),
                        port: internal.port(),
                        username: INTERNAL_USERNAME.to_owned(),
                        password,
                    },
                    client_id_base,
                    max_packet_size,
                    mode: cfg.mode,
                };
                let (client, session) = bus.client("broker", None);
                let events = client.subscribe_to::<AccountEvent>().await?;
                let task = tokio::spawn(enforce_account_changes(
                    broker,
                    client.clone(),
                    events,
                    session,
                ));
                bus.enforcer = Some((client, task));
                let (client, session) = bus.publisher("presence");
                let task = tokio::spawn(publish_presence(client.clone(), presence_rx, session));
                bus.presence = Some((client, task));
                Ok(bus)
            }
            (BusMode::Embedded, None) => Err(BusError::Config(
                "embedded mode needs bound listeners".into(),
            )),
            (BusMode::External, _) => {
                let url = BrokerUrl::parse(&cfg.url).map_err(BusError::Config)?;
                Ok(Bus {
                    broker: None,
                    enforcer: None,
                    presence: None,
                    endpoint: Endpoint {
                        host: url.host,
                        port: url.port,
                        username: cfg.username.clone(),
                        password: cfg.password.expose().to_owned(),
                    },
                    client_id_base,
                    max_packet_size,
                    mode: cfg.mode,
                })
            }
        }
    }

    pub fn mode(&self) -> BusMode {
        self.mode
    }

    /// Starts a client named `name` (the client id is `{prefix}-{node}-{name}`) that
    /// publishes and consumes.
    pub fn client(
        &self,
        name: &str,
        last_will: Option<(String, Vec<u8>, contract::Qos, bool)>,
    ) -> (BusClient, JoinHandle<()>) {
        self.client_with(name, last_will, Sessions::Both)
    }

    /// A client that only publishes (one connection).
    pub fn publisher(&self, name: &str) -> (BusClient, JoinHandle<()>) {
        self.client_with(name, None, Sessions::PublishOnly)
    }

    /// A client that only consumes (one connection).
    pub fn consumer(&self, name: &str) -> (BusClient, JoinHandle<()>) {
        self.client_with(name, None, Sessions::ConsumeOnly)
    }

    fn client_with(
        &self,
        name: &str,
        last_will: Option<(String, Vec<u8>, contract::Qos, bool)>,
        sessions: Sessions,
    ) -> (BusClient, JoinHandle<()>) {
        BusClient::start(ConnectOptions {
            host: self.endpoint.host.clone(),
            port: self.endpoint.port,
            client_id: format!("{}-{name}", self.client_id_base),
            username: self.endpoint.username.clone(),
            password: self.endpoint.password.clone(),
            keep_alive: Duration::from_secs(30),
            max_packet_size: self.max_packet_size,
            last_will,
            sessions,
        })
    }

    /// Stops the embedded broker, if any. Call after the module clients disconnected.
    pub async fn stop(self) {
        if let Some(broker) = &self.broker {
            broker.stop_guard();
        }
        for (client, task) in self.presence.into_iter().chain(self.enforcer) {
            client.disconnect().await;
            // It holds nothing that needs finishing; end it so the broker can stop.
            task.abort();
            let _ = task.await;
        }
        if let Some(broker) = self.broker.and_then(Arc::into_inner) {
            broker.stop();
        }
    }
}

/// Publishes each change of a user's session count on this broker as the retained
/// `system/presence/{username}` (emptied when the last session ends), so the mesh
/// module also learns who was connected before it subscribed.
async fn publish_presence(
    client: BusClient,
    mut changes: mpsc::UnboundedReceiver<broker::sessions::PresenceChange>,
    session: JoinHandle<()>,
) {
    while let Some(change) = changes.recv().await {
        let topic = contract::presence(&change.username);
        let payload = if change.sessions == 0 {
            Vec::new()
        } else {
            match serde_json::to_vec(&contract::LocalPresence {
                user: change.username,
                sessions: change.sessions,
            }) {
                Ok(p) => p,
                Err(_) => continue,
            }
        };
        let delivery = contract::LocalPresence::DELIVERY;
        if client
            .publish_raw(&topic, payload, delivery.qos, delivery.retain)
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = session.await;
}

/// Ends the MQTT sessions of accounts that were deleted or whose tokens were revoked:
/// at once on an account event, and by a sweep every 30 s that also catches expired
/// tokens and changes made by other processes (the `meteomesh user` CLI).
async fn enforce_account_changes(
    broker: Arc<EmbeddedBroker>,
    client: BusClient,
    mut events: Inbox<AccountEvent>,
    session: JoinHandle<()>,
) {
    let mut sweep = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            msg = events.recv() => {
                let Some(event) = msg else { break };
                let Ok(event) = event else {
                    tracing::warn!("ignoring malformed account event");
                    continue;
                };
                let jti = match &event.change {
                    AccountChange::TokenRevoked { jti } => Some(jti.as_str()),
                    AccountChange::Deleted => {
                        forget_account(&broker, &client, event.user_id).await;
                        continue;
                    }
                    AccountChange::TokensRevoked => None,
                    AccountChange::Created => continue,
                };
                let ids = broker.registry.sessions_of(event.user_id, jti);
                broker.kick(ids).await;
            }
            _ = sweep.tick() => {
                let now = crate::domain::time::system_now();
                let mut ended = Vec::new();
                for (id, session) in broker.registry.live() {
                    let expired = session.expires_at.is_some_and(|exp| exp <= now);
                    let valid = match &broker.users {
                        Some(users) => users.still_valid(&session).await,
                        None => true,
                    };
                    if expired || !valid {
                        ended.push(id);
                    }
                }
                broker.kick(ended).await;
                broker.release_vanished_sessions().await;
                // Accounts deleted by another process (`meteomesh user delete`) leave
                // stored sessions and retained state no event announced.
                if let Some(users) = &broker.users {
                    for (user_id, key) in broker.registry.accounts_holding_sessions() {
                        if !users.account_exists(user_id, &key).await {
                            forget_account(&broker, &client, user_id).await;
                        }
                    }
                    for user_id in broker.user_ids_with_retained().await {
                        if !users.user_id_exists(user_id).await {
                            forget_account(&broker, &client, user_id).await;
                        }
                    }
                }
            }
        }
    }
    let _ = session.await;
}

/// Removes everything a deleted account left on the broker: its sessions, live or stored,
/// and the retained messages under its private topics.
async fn forget_account(broker: &EmbeddedBroker, client: &BusClient, user_id: i64) {
    for topic in broker.forget_account(user_id).await {
        if let Err(e) = client
            .publish_raw(&topic, Vec::new(), contract::Qos::AtLeastOnce, true)
            .await
        {
            tracing::warn!(error = %e, "cannot clear a deleted account's retained message");
        }
    }
}
