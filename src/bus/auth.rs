//! Owns who may connect to the embedded broker and what they may touch:
//! - service accounts (`[[bus.users]]`) and meteomesh's own modules: full access;
//! - user accounts, checked by a [`UserAuthenticator`] (password or login token):
//!   only the topics `topics::user_may_subscribe` / `user_may_publish` allow.
//!
//! Refusals answer with the proper CONNACK code; a refused subscription gets SUBACK
//! 0x80, a refused publish is dropped and counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use rmqtt::codec::v5::SubscribeAckReason;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::types::{AuthResult, PublishAclResult, SubscribeAclResult};
use subtle::ConstantTimeEq;

use super::sessions::{SessionRegistry, UserSession, principal};
use super::topics;
use crate::config::BusUser;
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
}

/// The service accounts from config plus the internal credential.
pub struct Accounts {
    passwords: HashMap<String, String>,
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

pub struct AuthHandler {
    pub accounts: Accounts,
    pub users: Option<Arc<dyn UserAuthenticator>>,
    pub registry: Arc<SessionRegistry>,
    pub metrics: Arc<Metrics>,
}

impl AuthHandler {
    async fn authenticate(&self, info: &rmqtt::types::ConnectInfo) -> AuthResult {
        let Some(username) = info.username() else {
            // No username and anonymous off (rmqtt only asks us in that case).
            return AuthResult::NotAuthorized;
        };
        let password = info.password().map(|p| p.as_ref()).unwrap_or_default();
        match self.accounts.check(username, password) {
            // Service accounts and meteomesh itself: superuser, so no ACL applies.
            Some(true) => return AuthResult::Allow(true, None),
            Some(false) => return AuthResult::BadUsernameOrPassword,
            None => {}
        }
        let Some(users) = &self.users else {
            return AuthResult::BadUsernameOrPassword;
        };
        let Ok(password) = std::str::from_utf8(password) else {
            return AuthResult::BadUsernameOrPassword;
        };
        let client = info.ipaddress().map(|a| a.ip());
        match users.authenticate(username, password, client).await {
            Ok(session) => {
                self.registry.authenticated(info.id().clone(), session);
                AuthResult::Allow(false, None)
            }
            Err(Refusal::BadCredentials) => AuthResult::BadUsernameOrPassword,
            Err(Refusal::NotAuthorized) => AuthResult::NotAuthorized,
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
                self.registry.connected(&session.id);
                (true, acc)
            }
            Parameter::ClientDisconnected(session, _) => {
                self.registry.disconnected(&session.id);
                (true, acc)
            }
            // Superusers never reach the ACL hooks (rmqtt lets them through before).
            Parameter::ClientSubscribeCheckAcl(session, subscribe) => {
                let user = self.registry.principal_of(&session.id);
                let allowed = topics::may_subscribe(principal(&user), &subscribe.topic_filter);
                let result = if allowed {
                    SubscribeAclResult::new_success(subscribe.opts.qos(), None)
                } else {
                    self.metrics
                        .bus_acl_denied
                        .with_label_values(&["subscribe"])
                        .inc();
                    tracing::info!(user = ?user.as_ref().map(|u| &u.1), filter = %subscribe.topic_filter, "subscription refused");
                    SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized)
                };
                (false, Some(HookResult::SubscribeAclResult(result)))
            }
            Parameter::MessagePublishCheckAcl(session, publish) => {
                let user = self.registry.principal_of(&session.id);
                let result = if topics::may_publish(principal(&user), &publish.topic) {
                    PublishAclResult::allow()
                } else {
                    self.metrics
                        .bus_acl_denied
                        .with_label_values(&["publish"])
                        .inc();
                    tracing::debug!(user = ?user.as_ref().map(|u| &u.1), topic = %publish.topic, "publish refused");
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
