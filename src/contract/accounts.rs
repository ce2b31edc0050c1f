//! The accounts part of the bus contract: account changes that end live sessions, and
//! the layout of each account's private topics (`meteomesh/v1/users/{id}/...`).

use serde::{Deserialize, Serialize};

use super::*;

/// `meteomesh/v1/system/accounts` — internal (service accounts and meteomesh only): an
/// account changed so that its live sessions must end. Published by the auth module;
/// consumed by the embedded broker, which disconnects the affected MQTT sessions.
pub const ACCOUNT_EVENTS: &str = "meteomesh/v1/system/accounts";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum AccountChange {
    /// The account is gone.
    Deleted,
    /// Every token issued so far is void (password changed).
    TokensRevoked,
    /// One token was revoked (logout).
    TokenRevoked { jti: String },
    /// The account was created (its name is now held, mesh-wide).
    Created,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEvent {
    pub user_id: i64,
    /// The account's username (its identity across a mesh; empty from older senders).
    #[serde(default)]
    pub username: String,
    #[serde(flatten)]
    pub change: AccountChange,
}

impl BusMessage for AccountEvent {
    const FILTER: &'static str = ACCOUNT_EVENTS;
    const DELIVERY: Delivery = Delivery::EVENT;
}

/// `meteomesh/v1/users/{id}` — the root of one user's private topics.
pub fn user_root(user_id: i64) -> String {
    format!("{ROOT}/users/{user_id}")
}

/// Every user's private topics.
pub const ALL_USER_TOPICS: &str = "meteomesh/v1/users/+/#";

/// The account id whose private subtree (`user_root`) `topic` is in.
pub fn user_id_of(topic: &str) -> Option<i64> {
    topic
        .strip_prefix("meteomesh/v1/users/")?
        .split('/')
        .next()?
        .parse()
        .ok()
}
