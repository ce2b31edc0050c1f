//! Owns the embedded rmqtt broker: its listeners (public TCP and WebSocket, and one
//! loopback listener reserved for meteomesh's own modules), their limits, the
//! authentication hook (which also counts each user's sessions, for presence), retained
//! messages, and the traffic counters in metrics. Its parts: the login and ACL hooks
//! ([`auth`]), the session registry ([`sessions`]) and the guard against connections
//! that never send CONNECT (`connect_guard`).

pub(super) mod auth;
mod connect_guard;
pub(super) mod sessions;

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::Arc;

use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::net::{Builder, Listener};
use rmqtt::server::MqttServer;
use rmqtt::types::Reason;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::BusError;
use crate::config::{BusConfig, BusUser};
use crate::metrics::Metrics;
use auth::{Accounts, AuthHandler, Policy, UserAuthenticator};
use connect_guard::{GuardLimits, Handshaken};
use sessions::{PresenceChange, SessionRegistry};

const TCP_LISTENER_ID: u16 = 1;
const WS_LISTENER_ID: u16 = 2;
const INTERNAL_LISTENER_ID: u16 = 3;

/// The broker's sockets, bound before start so callers (and tests using port 0) know
/// the real addresses.
pub struct BrokerListeners {
    tcp: Option<Listener>,
    ws: Option<Listener>,
    internal: Listener,
}

impl BrokerListeners {
    /// Binds every enabled listener. Must run inside the tokio runtime.
    pub fn bind(cfg: &BusConfig) -> Result<BrokerListeners, BusError> {
        let tcp = cfg
            .tcp_enabled
            .then(|| listen(cfg, "tcp", cfg.tcp_listen, Transport::Tcp))
            .transpose()?;
        let ws = cfg
            .ws_enabled
            .then(|| listen(cfg, "ws", cfg.ws_listen, Transport::WebSocket))
            .transpose()?;
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let internal = listen(cfg, "internal", loopback, Transport::Tcp)?;
        Ok(BrokerListeners { tcp, ws, internal })
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws.as_ref().and_then(|l| l.local_addr().ok())
    }
    pub fn internal_addr(&self) -> Result<SocketAddr, BusError> {
        self.internal
            .local_addr()
            .map_err(|e| BusError::Bind(SocketAddr::from(([127, 0, 0, 1], 0)), e.to_string()))
    }
}

/// Sessions kept for meteomesh's own modules and service accounts above
/// `bus.max_connections`, so clients filling the broker cannot lock them out.
pub const RESERVED_SESSIONS: usize = 64;

/// Queue length per session on the internal listener.
const INTERNAL_QUEUE: usize = 100_000;

enum Transport {
    Tcp,
    WebSocket,
}

/// Binds one listener with the configured limits.
fn listen(
    cfg: &BusConfig,
    name: &str,
    addr: SocketAddr,
    transport: Transport,
) -> Result<Listener, BusError> {
    let inflight = NonZeroU16::new(cfg.max_inflight).unwrap_or(NonZeroU16::MIN);
    // meteomesh's own modules must not lose a burst (a poll cycle of 10,000 alerts):
    // their queue is only bounded by what they have not read yet.
    let queue = if name == "internal" {
        cfg.max_queued_messages.max(INTERNAL_QUEUE)
    } else {
        cfg.max_queued_messages
    };
    let bound = Builder::new()
        .name(name)
        .laddr(addr)
        .max_connections(cfg.max_connections + RESERVED_SESSIONS)
        .max_packet_size(cfg.max_packet_size)
        .max_inflight(inflight)
        .max_mqueue_len(queue)
        .session_expiry_interval(cfg.session_expiry)
        // Anonymous clients are let in by the authentication hook (when
        // `bus.allow_anonymous`), so their wills and client ids are checked like anyone's;
        // rmqtt itself would admit them without asking the hook.
        .allow_anonymous(false)
        // Keepalive 0 ("never ping") is legal MQTT; battery devices use it.
        .allow_zero_keepalive(true)
        .nodelay(true)
        .reuseaddr(Some(true))
        .bind();
    match transport {
        Transport::Tcp => bound.and_then(|l| l.tcp()),
        Transport::WebSocket => bound.and_then(|l| l.ws()),
    }
    .map_err(|e| BusError::Bind(addr, e.to_string()))
}

/// A running embedded broker.
pub struct EmbeddedBroker {
    task: JoinHandle<()>,
    /// Stopped with the broker (dropping it stops it).
    guard: std::sync::Mutex<Option<connect_guard::Guard>>,
    scx: ServerContext,
    pub registry: Arc<SessionRegistry>,
    pub users: Option<Arc<dyn UserAuthenticator>>,
}

/// Who may log in to the embedded broker besides user accounts.
pub struct BrokerAccess<'a> {
    /// This node's id: the modules' client ids carry it and are reserved for them.
    pub node_id: &'a str,
    /// The modules' credential, new at every start.
    pub internal_password: &'a str,
    /// Service accounts beyond the configured ones (the mesh link account).
    pub extra_accounts: &'a [BusUser],
}

impl EmbeddedBroker {
    pub async fn start(
        cfg: &BusConfig,
        listeners: BrokerListeners,
        access: BrokerAccess<'_>,
        users: Option<Arc<dyn UserAuthenticator>>,
        metrics: Arc<Metrics>,
        presence: mpsc::UnboundedSender<PresenceChange>,
    ) -> Result<EmbeddedBroker, BusError> {
        let retainer_config = format!(
            // No count limit in the store itself: when full it refuses every update,
            // clearing ones included, so the node's own state would freeze. The budget for
            // retained messages from clients lives in the authentication hook instead.
            "storage = {{ type = \"ram\" }}\nmax_retained_messages = 0\nmax_payload_size = \"{}B\"\n",
            cfg.max_packet_size
        );
        let scx = ServerContext::new()
            // rmqtt's busy check refuses clients while the host CPU is loaded; on a small
            // device that would lock users out exactly when it is working hardest.
            .busy_check_enable(false)
            // Clients get `bus.max_connections` (counted by the authentication hook); the
            // node's own modules and service accounts keep the headroom above it.
            .mqtt_max_sessions((cfg.max_connections + RESERVED_SESSIONS) as isize)
            .plugins_config_map_add("rmqtt-retainer", retainer_config)
            .build()
            .await;
        rmqtt_retainer::register(&scx, true, false)
            .await
            .map_err(|e| BusError::Broker(format!("retained-message store: {e}")))?;

        let registry = Arc::new(SessionRegistry::new(presence));
        let accounts: Vec<BusUser> = cfg
            .users
            .iter()
            .chain(access.extra_accounts)
            .cloned()
            .collect();
        let register = scx.extends.hook_mgr().register();
        let handshaken = Arc::new(Handshaken::default());
        let auth = Arc::new(AuthHandler::new(
            Accounts::new(&accounts, access.internal_password),
            users.clone(),
            registry.clone(),
            metrics.clone(),
            Policy::new(cfg, access.node_id),
            INTERNAL_LISTENER_ID,
            handshaken.clone(),
        ));
        for typ in [
            Type::ClientAuthenticate,
            Type::ClientConnected,
            Type::ClientDisconnected,
            Type::SessionTerminated,
            Type::ClientSubscribeCheckAcl,
            Type::MessagePublishCheckAcl,
        ] {
            register
                .add(typ, Box::new(SharedHandler(auth.clone())))
                .await;
        }
        for typ in [
            Type::ClientConnected,
            Type::ClientDisconnected,
            Type::MessagePublish,
            Type::MessageDelivered,
            Type::MessageDropped,
        ] {
            register
                .add(
                    typ,
                    Box::new(TrafficCounter {
                        metrics: metrics.clone(),
                    }),
                )
                .await;
        }
        register.start().await;

        let addrs = [
            listeners.tcp_addr(),
            listeners.ws_addr(),
            listeners.internal_addr().ok(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let guard = connect_guard::start(
            addrs,
            GuardLimits {
                connect_timeout: cfg.connect_timeout,
                max_pending: cfg.max_pending_connections,
                max_pending_per_address: cfg.max_pending_per_address,
            },
            handshaken,
            metrics.clone(),
        );
        let mut server = MqttServer::new(scx.clone());
        if let Some(tcp) = listeners.tcp {
            server = server.listener_by_id(tcp, TCP_LISTENER_ID);
        }
        if let Some(ws) = listeners.ws {
            server = server.listener_by_id(ws, WS_LISTENER_ID);
        }
        server = server.listener_by_id(listeners.internal, INTERNAL_LISTENER_ID);
        let server = server.build();
        let task = tokio::spawn(async move {
            if let Err(e) = server.run().await {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        });
        Ok(EmbeddedBroker {
            task,
            guard: std::sync::Mutex::new(guard),
            scx,
            registry,
            users,
        })
    }

    /// Disconnects the given sessions (their account was deleted or token revoked).
    pub async fn kick(&self, ids: Vec<rmqtt::types::Id>) {
        for id in ids {
            tracing::info!(client_id = %id.client_id, "disconnecting session: credentials no longer valid");
            let mut entry = self.scx.extends.shared().await.entry(id.clone());
            if let Err(e) = entry.kick(true, true, true).await {
                tracing::debug!(error = %e, "session already gone");
            }
            self.registry.disconnected(&id);
            // A kicked session is removed outright (a stored one too); its client id is
            // free again.
            self.registry.terminated(&id);
        }
    }

    /// Removes what a deleted local account left on the broker: its sessions, live or
    /// stored (subscriptions and queued messages go with them). Returns the topics of
    /// the retained messages under its private subtree, for the caller to clear.
    pub async fn forget_account(&self, user_id: i64) -> Vec<String> {
        let mut sessions = self.registry.sessions_of(user_id, None);
        sessions.extend(self.registry.sessions_of_account(user_id));
        sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        sessions.dedup();
        self.kick(sessions).await;
        let filter =
            rmqtt::types::TopicFilter::from(format!("{}/#", crate::contract::user_root(user_id)));
        match self.scx.extends.retain().await.get(&filter).await {
            Ok(retained) => retained.into_iter().map(|(t, _)| t.to_string()).collect(),
            Err(e) => {
                tracing::warn!(error = %e, user_id, "cannot list a deleted account's retained messages");
                Vec::new()
            }
        }
    }

    /// The account ids that have retained messages under their private subtree.
    pub async fn user_ids_with_retained(&self) -> Vec<i64> {
        let filter = rmqtt::types::TopicFilter::from(crate::contract::ALL_USER_TOPICS);
        let mut ids: Vec<i64> = match self.scx.extends.retain().await.get(&filter).await {
            Ok(retained) => retained
                .iter()
                .filter_map(|(t, _)| crate::contract::user_id_of(t))
                .collect(),
            Err(_) => Vec::new(),
        };
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Frees the client ids of sessions the broker no longer has (should rmqtt ever end
    /// one without telling the hooks, its id would otherwise stay taken and counted).
    pub async fn release_vanished_sessions(&self) {
        let shared = self.scx.extends.shared().await;
        for id in self.registry.claimed_sessions() {
            let current = shared.entry(id.clone()).session().map(|s| s.id.clone());
            if current.as_ref() != Some(&id) {
                tracing::debug!(client_id = %id.client_id, "releasing the client id of a vanished session");
                self.registry.terminated(&id);
            }
        }
    }

    /// Stops watching the listeners' connections; first in the stop path, so a port a
    /// later broker in this process binds is never watched by this one.
    pub fn stop_guard(&self) {
        drop(self.guard.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    /// Stops accepting connections. Sessions still open end with the runtime.
    pub fn stop(self) {
        self.stop_guard();
        self.task.abort();
    }
}

/// Lets one handler serve several hook types.
struct SharedHandler(Arc<AuthHandler>);

#[async_trait::async_trait]
impl Handler for SharedHandler {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        self.0.hook(param, acc).await
    }
}

/// Counts broker traffic into metrics. Never changes what the broker does.
struct TrafficCounter {
    metrics: Arc<Metrics>,
}

fn drop_reason(reason: &Reason) -> &'static str {
    match reason {
        Reason::MessageQueueFull => "queue_full",
        Reason::InflightWindowFull => "inflight_full",
        Reason::MessageExpiration => "expired",
        Reason::SubscribeRefused | Reason::PublishResult(_) => "refused",
        _ => "other",
    }
}

#[async_trait::async_trait]
impl Handler for TrafficCounter {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        let m = &self.metrics;
        match param {
            Parameter::ClientConnected(_) => {
                m.bus.connections.inc();
                m.bus.connects.inc();
            }
            Parameter::ClientDisconnected(..) => m.bus.connections.dec(),
            Parameter::MessagePublish(Some(_), ..) => m.bus.messages_received.inc(),
            Parameter::MessageDelivered(..) => m.bus.messages_delivered.inc(),
            Parameter::MessageDropped(_, _, _, reason) => {
                let reason = drop_reason(reason);
                if reason == "queue_full" {
                    tracing::warn!("embedded broker dropped a message: a client's queue is full");
                }
                m.bus.messages_dropped.with_label_values(&[reason]).inc();
            }
            _ => {}
        }
        (true, acc)
    }
}
