//! Owns who may connect to the embedded broker: the configured service accounts
//! (`[[bus.users]]`) and the internal credential of meteomesh's own modules, checked in
//! rmqtt's `ClientAuthenticate` hook. A refused client gets a CONNACK with "bad user
//! name or password" / "not authorized", not a silent close.

use std::collections::HashMap;

use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::types::AuthResult;
use subtle::ConstantTimeEq;

use crate::config::BusUser;

/// Username of the modules' own sessions; `$` cannot be configured for a service account.
pub const INTERNAL_USERNAME: &str = "$meteomesh";

/// The accounts the broker accepts. Built once at start.
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

    pub fn check(&self, username: Option<&str>, password: Option<&[u8]>) -> AuthResult {
        let Some(username) = username else {
            // No username and anonymous off (rmqtt only asks us in that case).
            return AuthResult::NotAuthorized;
        };
        let given = password.unwrap_or_default();
        match self.passwords.get(username) {
            Some(expected) if bool::from(expected.as_bytes().ct_eq(given)) => {
                AuthResult::Allow(false, None)
            }
            _ => AuthResult::BadUsernameOrPassword,
        }
    }
}

pub struct AuthHandler {
    pub accounts: Accounts,
}

#[async_trait::async_trait]
impl Handler for AuthHandler {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        if let Parameter::ClientAuthenticate(info) = param {
            let result = self.accounts.check(
                info.username().map(|u| u.as_ref()),
                info.password().map(|p| p.as_ref()),
            );
            if !matches!(result, AuthResult::Allow(..)) {
                tracing::info!(
                    client_id = %info.id().client_id,
                    username = ?info.username(),
                    "bus connection refused"
                );
            }
            return (false, Some(HookResult::AuthResult(result)));
        }
        (true, acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn checks_accounts() {
        let a = Accounts::new(
            &[BusUser {
                username: "svc".into(),
                password: Secret::new("pw-123456"),
            }],
            "internal-pw",
        );
        assert!(matches!(
            a.check(Some("svc"), Some(b"pw-123456")),
            AuthResult::Allow(false, None)
        ));
        assert!(matches!(
            a.check(Some("svc"), Some(b"pw-12345")),
            AuthResult::BadUsernameOrPassword
        ));
        assert!(matches!(
            a.check(Some("nobody"), Some(b"pw-123456")),
            AuthResult::BadUsernameOrPassword
        ));
        assert!(matches!(
            a.check(Some(INTERNAL_USERNAME), Some(b"internal-pw")),
            AuthResult::Allow(..)
        ));
        assert!(matches!(a.check(None, None), AuthResult::NotAuthorized));
        assert!(matches!(
            a.check(Some("svc"), None),
            AuthResult::BadUsernameOrPassword
        ));
    }
}
