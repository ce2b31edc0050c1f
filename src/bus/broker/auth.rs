//! Owns who may connect to the embedded broker and what they may touch:
//! - service accounts (`[[bus.users]]`) and meteomesh's own modules: full access;
//! - user accounts, checked by a [`UserAuthenticator`] (password or login token):
//!   only the topics `contract::user_may_subscribe` / `user_may_publish` allow.
//!
//! Refusals answer with the proper CONNACK code; a refused subscription gets SUBACK
//! 0x80, a refused publish is dropped and counted.
//!
//! Everything a client can make the broker publish passes the same rules: its last will
//! is checked at CONNECT like a publish (rmqtt sends wills without the publish ACL hook,
//! so a will the client could not publish itself refuses the connection). Client ids
//! belong to one identity at a time ([`SessionRegistry::claim`]); ids under the node's
//! module prefix belong to the internal credential. Users may not publish retained
//! messages (no feature needs them); service accounts may, within a byte and count
//! budget, so the retained store cannot crowd out the node's own state.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use rmqtt::codec::v5::SubscribeAckReason;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::types::{AuthResult, PublishAclResult, SubscribeAclResult};
use subtle::ConstantTimeEq;

use super::connect_guard::Handshaken;
use super::sessions::{Caps, ClaimRefused, Owner, SessionRegistry, UserSession};
use crate::config::{BusConfig, BusUser};
use crate::contract;
use crate::metrics::Metrics;

/// Username of the modules' own sessions; `$` cannot be configured for a service account.
pub const INTERNAL_USERNAME: &str = "$meteomesh";

/// Why a user login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown user, wrong password, bad token: CONNACK "bad user name or password".
    BadCredentials,
    /// Known but not allowed now (throttled): CONNACK "not authorized".
    NotAuthorized,
}

/// Checks user accounts for MQTT logins (implemented by the auth module).
#[async_trait::async_trait]
pub trait UserAuthenticator: Send + Sync {
    async fn authenticate(
        &self,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<UserSession, Refusal>;

    /// Whether a live session's account and credentials still hold (the account may
    /// have been deleted, its password changed or its token revoked by another process,
    /// such as `meteomesh user` on the command line).
    async fn still_valid(&self, session: &UserSession) -> bool;

    /// Whether the local account `user_id` with this key still exists (`true` when
    /// unsure: a storage hiccup must not wipe a live account's sessions).
    async fn account_exists(&self, user_id: i64, account_key: &str) -> bool;

    /// Whether any local account has `user_id` (`true` when unsure).
    async fn user_id_exists(&self, user_id: i64) -> bool;
}

/// The service accounts from config plus the internal credential.
pub struct Accounts {
    passwords: HashMap<String, String>,
}

/// What a connection may do, decided at CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Identity {
    Internal,
    Service(String),
    User(UserSession),
    Anonymous,
}

impl Accounts {
    pub fn new(users: &[BusUser], internal_password: &str) -> Accounts {
        let mut passwords: HashMap<String, String> = users
            .iter()
            .map(|u| (u.username.clone(), u.password.expose().to_owned()))
            .collect();
        passwords.insert(INTERNAL_USERNAME.to_owned(), internal_password.to_owned());
        Accounts { passwords }
    }

    /// `Some(true)` for a matching service account, `Some(false)` for a service account
    /// with the wrong password, `None` when the name is not a service account.
    pub fn check(&self, username: &str, password: &[u8]) -> Option<bool> {
        self.passwords
            .get(username)
            .map(|expected| bool::from(expected.as_bytes().ct_eq(password)))
    }
}

/// The broker's rules beyond credentials, from config.
pub struct Policy {
    pub allow_anonymous: bool,
    /// Client ids starting with this belong to trusted credentials only
    /// (`{bus.client_id_prefix}-`, and `meteomesh-` which mesh links use).
    pub trusted_prefixes: Vec<String>,
    /// Client ids of this node's own modules (`{prefix}-{node}-`): internal credential only.
    pub internal_prefix: String,
    pub max_sessions_per_user: usize,
    /// Sessions (live or stored) users and anonymous clients may hold together.
    pub max_client_sessions: usize,
    pub max_retained_messages: usize,
    pub max_retained_bytes: usize,
}

impl Policy {
    pub fn new(cfg: &BusConfig, node_id: &str) -> Policy {
        let mut trusted_prefixes = vec![format!("{}-", cfg.client_id_prefix)];
        if cfg.client_id_prefix != "meteomesh" {
            trusted_prefixes.push("meteomesh-".to_owned());
        }
        Policy {
            allow_anonymous: cfg.allow_anonymous,
            trusted_prefixes,
            internal_prefix: format!("{}-{node_id}-", cfg.client_id_prefix),
            max_sessions_per_user: cfg.max_sessions_per_user,
            max_client_sessions: cfg.max_connections,
            max_retained_messages: cfg.max_retained_messages,
            max_retained_bytes: cfg.max_retained_bytes,
        }
    }
}

/// Retained messages set by anyone but the node itself: topic → payload bytes.
#[derive(Default)]
struct RetainedBudget {
    topics: HashMap<String, usize>,
    bytes: usize,
}

impl RetainedBudget {
    /// Accounts a retained publish; false when it would exceed the budget (an empty
    /// payload clears the topic and always passes).
    fn admit(&mut self, topic: &str, len: usize, policy: &Policy) -> bool {
        let old = self.topics.get(topic).copied();
        if len == 0 {
            if let Some(old) = old {
                self.topics.remove(topic);
                self.bytes -= old;
            }
            return true;
        }
        let bytes = self.bytes - old.unwrap_or(0) + len;
        let count = self.topics.len() + usize::from(old.is_none());
        if bytes > policy.max_retained_bytes || count > policy.max_retained_messages {
            return false;
        }
        self.topics.insert(topic.to_owned(), len);
        self.bytes = bytes;
        true
    }
}

pub struct AuthHandler {
    pub accounts: Accounts,
    pub users: Option<Arc<dyn UserAuthenticator>>,
    pub registry: Arc<SessionRegistry>,
    pub metrics: Arc<Metrics>,
    pub policy: Policy,
    pub internal_listener: u16,
    /// Connections whose CONNECT was accepted, for the connection guard.
    pub handshaken: Arc<Handshaken>,
    retained: Mutex<RetainedBudget>,
}

/// A valid PUBLISH topic name: not empty, no wildcards, no NUL (MQTT-3.3.2-2, 1.5.3-2).
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// Shared subscriptions (`$share/`, `$queue/`) are not supported: refused rather than
/// granted as a literal filter that matches nothing a client expects.
fn shared_subscription(filter: &str) -> bool {
    filter.starts_with("$share/") || filter.starts_with("$queue/")
}

impl AuthHandler {
    pub fn new(
        accounts: Accounts,
        users: Option<Arc<dyn UserAuthenticator>>,
        registry: Arc<SessionRegistry>,
        metrics: Arc<Metrics>,
        policy: Policy,
        internal_listener: u16,
        handshaken: Arc<Handshaken>,
    ) -> AuthHandler {
        AuthHandler {
            accounts,
            users,
            registry,
            metrics,
            policy,
            internal_listener,
            handshaken,
            retained: Mutex::new(RetainedBudget::default()),
        }
    }

    /// Who the CONNECT's credentials name, or the CONNACK refusal.
    async fn identify(&self, info: &rmqtt::types::ConnectInfo) -> Result<Identity, AuthResult> {
        let Some(username) = info.username() else {
            return if self.policy.allow_anonymous {
                Ok(Identity::Anonymous)
            } else {
                Err(AuthResult::NotAuthorized)
            };
        };
        let password = info.password().map(|p| p.as_ref()).unwrap_or_default();
        match self.accounts.check(username, password) {
            // The internal credential is only good on the loopback listener of the
            // modules; it is random per start, but never worth a guess from outside.
            Some(true) if username == INTERNAL_USERNAME => {
                return if info.id().lid == self.internal_listener {
                    Ok(Identity::Internal)
                } else {
                    Err(AuthResult::BadUsernameOrPassword)
                };
            }
            Some(true) => return Ok(Identity::Service(username.to_string())),
            Some(false) => return Err(AuthResult::BadUsernameOrPassword),
            None => {}
        }
        let Some(users) = &self.users else {
            return Err(AuthResult::BadUsernameOrPassword);
        };
        let Ok(password) = std::str::from_utf8(password) else {
            return Err(AuthResult::BadUsernameOrPassword);
        };
        let client = info.ipaddress().map(|a| a.ip());
        match users.authenticate(username, password, client).await {
            Ok(session) => Ok(Identity::User(session)),
            Err(Refusal::BadCredentials) => Err(AuthResult::BadUsernameOrPassword),
            Err(Refusal::NotAuthorized) => Err(AuthResult::NotAuthorized),
        }
    }

    /// Whether `identity` may publish `topic` (retained or not); the one rule for
    /// PUBLISH packets and last wills.
    fn may_publish(&self, identity: &Identity, topic: &str, retain: bool, len: usize) -> bool {
        if !valid_topic_name(topic) {
            return false;
        }
        match identity {
            Identity::Internal => true,
            Identity::Service(_) => {
                if !retain {
                    return true;
                }
                let mut budget = self.retained.lock().unwrap_or_else(|p| p.into_inner());
                let admitted = budget.admit(topic, len, &self.policy);
                self.metrics
                    .bus
                    .client_retained_messages
                    .set(budget.topics.len() as i64);
                self.metrics
                    .bus
                    .client_retained_bytes
                    .set(budget.bytes as i64);
                admitted
            }
            Identity::User(session) if session.board_only => {
                !retain && contract::board_credential_may_publish(&session.username, topic)
            }
            Identity::User(session) => {
                !retain
                    && contract::may_publish(
                        Some(contract::Principal {
                            user_id: session.user_id,
                            username: &session.username,
                        }),
                        topic,
                    )
            }
            Identity::Anonymous => !retain && contract::may_publish(None, topic),
        }
    }

    async fn authenticate(&self, info: &rmqtt::types::ConnectInfo) -> AuthResult {
        let identity = match self.identify(info).await {
            Ok(identity) => identity,
            Err(refusal) => return refusal,
        };
        let client_id: &str = &info.id().client_id;
        let owner = match &identity {
            Identity::Internal => Owner::Internal,
            Identity::Service(name) => Owner::Service(name.clone()),
            Identity::User(session) => Owner::of_user(session),
            Identity::Anonymous => Owner::Anonymous,
        };
        let reserved = match owner {
            Owner::Internal => false,
            Owner::Service(_) => client_id.starts_with(&self.policy.internal_prefix),
            Owner::User(_) | Owner::Anonymous => self
                .policy
                .trusted_prefixes
                .iter()
                .any(|p| client_id.starts_with(p.as_str())),
        };
        if reserved {
            tracing::info!(
                client_id,
                "bus connection refused: the client id is reserved for meteomesh"
            );
            self.refused("client_id");
            return AuthResult::NotAuthorized;
        }
        if let Some(will) = info.last_will() {
            let (topic, len) = match &will {
                rmqtt::types::LastWill::V3(w) => (&w.topic, w.message.len()),
                rmqtt::types::LastWill::V5(w) => (&w.topic, w.message.len()),
            };
            if !self.may_publish(&identity, topic, will.retain(), len) {
                tracing::info!(client_id, topic = %topic, "bus connection refused: its last will is not allowed");
                self.refused("will");
                return AuthResult::NotAuthorized;
            }
        }
        let caps = Caps {
            per_owner: matches!(owner, Owner::User(_)).then_some(self.policy.max_sessions_per_user),
            clients: matches!(owner, Owner::User(_) | Owner::Anonymous)
                .then_some(self.policy.max_client_sessions),
        };
        if let Err(refusal) = self.registry.claim(client_id, &owner, caps) {
            let (reason, why) = match refusal {
                ClaimRefused::Taken => ("client_id", "the client id belongs to another identity"),
                ClaimRefused::TooManySessions => ("sessions", "the account has too many sessions"),
                ClaimRefused::Full => ("full", "bus.max_connections client sessions reached"),
            };
            if refusal == ClaimRefused::Full {
                // The broker itself is full: the operator should hear of it.
                tracing::warn!(client_id, "bus connection refused: {why}");
            } else {
                tracing::info!(client_id, "bus connection refused: {why}");
            }
            self.refused(reason);
            return AuthResult::NotAuthorized;
        }
        match identity {
            // meteomesh itself: superuser, so no ACL hook runs for its traffic.
            Identity::Internal => AuthResult::Allow(true, None),
            // A service account: not a superuser, so its publishes meet the topic-name
            // check and the retained budget; the (rule-less) auth info marks the session
            // as a service account's for the ACL hooks without a lookup per message.
            Identity::Service(_) => AuthResult::Allow(
                false,
                Some(rmqtt::acl::AuthInfo {
                    superuser: false,
                    expire_at: None,
                    rules: Vec::new(),
                }),
            ),
            Identity::User(session) => {
                self.registry.authenticated(info.id().clone(), session);
                AuthResult::Allow(false, None)
            }
            Identity::Anonymous => AuthResult::Allow(false, None),
        }
    }

    fn refused(&self, reason: &str) {
        self.metrics
            .bus
            .connections_refused
            .with_label_values(&[reason])
            .inc();
    }

    /// The identity of a connected session that is not meteomesh itself.
    fn identity_of(&self, session: &rmqtt::session::Session) -> Identity {
        if session.auth_info.is_some() {
            // Only service accounts get auth info (see `authenticate`); the name is not
            // needed past the login.
            return Identity::Service(String::new());
        }
        match self.registry.user_of(&session.id) {
            Some(session) => Identity::User(session),
            None => Identity::Anonymous,
        }
    }
}

#[async_trait::async_trait]
impl Handler for AuthHandler {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::ClientAuthenticate(info) => {
                let result = self.authenticate(info).await;
                if !matches!(result, AuthResult::Allow(..)) {
                    tracing::info!(
                        client_id = %info.id().client_id,
                        username = ?info.username(),
                        "bus connection refused"
                    );
                }
                (false, Some(HookResult::AuthResult(result)))
            }
            Parameter::ClientConnected(session) => {
                if let Some(addr) = session.id.remote_addr {
                    self.handshaken.connected(addr);
                }
                self.registry.connected(&session.id);
                (true, acc)
            }
            Parameter::ClientDisconnected(session, _) => {
                if let Some(addr) = session.id.remote_addr {
                    self.handshaken.disconnected(addr);
                }
                self.registry.disconnected(&session.id);
                (true, acc)
            }
            Parameter::SessionTerminated(session, _) => {
                self.registry.terminated(&session.id);
                (true, acc)
            }
            // Only non-superusers reach the ACL hooks: everyone but meteomesh itself.
            Parameter::ClientSubscribeCheckAcl(session, subscribe) => {
                let filter = &subscribe.topic_filter;
                let allowed = !shared_subscription(filter)
                    && match self.identity_of(session) {
                        Identity::Internal | Identity::Service(_) => true,
                        Identity::User(user) if user.board_only => {
                            contract::board_credential_may_subscribe(&user.username, filter)
                        }
                        Identity::User(user) => contract::may_subscribe(
                            Some(contract::Principal {
                                user_id: user.user_id,
                                username: &user.username,
                            }),
                            filter,
                        ),
                        Identity::Anonymous => contract::may_subscribe(None, filter),
                    };
                let result = if allowed {
                    SubscribeAclResult::new_success(subscribe.opts.qos(), None)
                } else {
                    self.metrics
                        .bus
                        .acl_denied
                        .with_label_values(&["subscribe"])
                        .inc();
                    tracing::info!(client_id = %session.id.client_id, filter = %filter, "subscription refused");
                    SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized)
                };
                (false, Some(HookResult::SubscribeAclResult(result)))
            }
            Parameter::MessagePublishCheckAcl(session, publish) => {
                let identity = self.identity_of(session);
                let result = if !valid_topic_name(&publish.topic) {
                    // A protocol violation, not a permission question: the client is
                    // broken or probing, and Mosquitto closes such connections too.
                    self.metrics
                        .bus
                        .acl_denied
                        .with_label_values(&["publish"])
                        .inc();
                    tracing::info!(client_id = %session.id.client_id, "publish to an invalid topic name: disconnecting");
                    PublishAclResult::rejected(true, Some("invalid topic name".into()))
                } else if self.may_publish(
                    &identity,
                    &publish.topic,
                    publish.retain,
                    publish.payload.len(),
                ) {
                    PublishAclResult::allow()
                } else {
                    self.metrics
                        .bus
                        .acl_denied
                        .with_label_values(&["publish"])
                        .inc();
                    tracing::debug!(client_id = %session.id.client_id, topic = %publish.topic, retain = publish.retain, "publish refused");
                    PublishAclResult::rejected(false, None)
                };
                (false, Some(HookResult::PublishAclResult(result)))
            }
            _ => (true, acc),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn service_accounts() {
        let a = Accounts::new(
            &[BusUser {
                username: "svc".into(),
                password: Secret::new("pw-123456"),
            }],
            "internal-pw",
        );
        assert_eq!(a.check("svc", b"pw-123456"), Some(true));
        assert_eq!(a.check("svc", b"pw-12345"), Some(false));
        assert_eq!(a.check("nobody", b"pw-123456"), None);
        assert_eq!(a.check(INTERNAL_USERNAME, b"internal-pw"), Some(true));
        assert_eq!(a.check(INTERNAL_USERNAME, b""), Some(false));
    }
}
