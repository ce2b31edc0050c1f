//! The users' side of the mesh contract: each user's mesh topics (inbox, send, ack,
//! result) and their payloads, as the client library and the pages use them.

use serde::{Deserialize, Serialize};

use super::*;

/// `meteomesh/v1/mesh/users/{username}` — the root of one user's mesh topics.
pub fn mesh_user_root(username: &str) -> String {
    format!("{ROOT}/mesh/users/{username}")
}

/// `.../inbox` — messages for the user ([`InboxMessage`], QoS 1).
pub fn mesh_inbox(username: &str) -> String {
    format!("{}/inbox", mesh_user_root(username))
}
/// `.../send` — the user asks their node to send ([`SendRequest`]).
pub fn mesh_send(username: &str) -> String {
    format!("{}/send", mesh_user_root(username))
}
/// `.../ack` — the user acknowledges an inbox message ([`InboxAck`]).
pub fn mesh_ack(username: &str) -> String {
    format!("{}/ack", mesh_user_root(username))
}
/// `.../result` — the node answers a [`SendRequest`] ([`SendResult`]).
pub fn mesh_result(username: &str) -> String {
    format!("{}/result", mesh_user_root(username))
}

/// The username level of a `meteomesh/v1/mesh/users/{username}/{leaf}` topic.
pub fn mesh_user_of<'t>(topic: &'t str, leaf: &str) -> Option<&'t str> {
    let name = topic
        .strip_prefix("meteomesh/v1/mesh/users/")?
        .strip_suffix(leaf)?
        .strip_suffix('/')?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxMessage {
    /// Message id; acknowledge it on `.../ack` when `ack` is true.
    pub id: String,
    pub from: String,
    /// The sender's sequence number: increasing per sender, so duplicates can be dropped.
    pub seq: u64,
    /// `message`, `broadcast` or `alert`.
    pub kind: String,
    pub body: serde_json::Value,
    pub ack: bool,
    pub sent_at: String,
}

impl BusMessage for InboxMessage {
    const FILTER: &'static str = "meteomesh/v1/mesh/users/+/inbox";
    const DELIVERY: Delivery = Delivery::EVENT;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxAck {
    pub id: String,
}

impl BusMessage for InboxAck {
    const FILTER: &'static str = "meteomesh/v1/mesh/users/+/ack";
    const DELIVERY: Delivery = Delivery::EVENT;
}

/// How a message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendMode {
    /// To one user; answers once the recipient acknowledged, or not within the timeout.
    Send,
    /// To one user; queued (kept for an offline recipient), answers at once.
    FireSend,
    /// To every online user; answers how many acknowledged out of how many were online.
    Broadcast,
    /// To every online user; answers at once.
    FireBroadcast,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendRequest {
    /// The client's correlation id, echoed in the [`SendResult`] (1..=64 chars).
    pub req: String,
    pub mode: SendMode,
    /// Recipient username (`send`, `fire_send`).
    #[serde(default)]
    pub to: Option<String>,
    /// The sender's sequence number; a retried request reuses it so the recipient
    /// drops the duplicate. Absent: the node assigns one.
    #[serde(default)]
    pub seq: Option<u64>,
    pub body: serde_json::Value,
}

impl BusMessage for SendRequest {
    const FILTER: &'static str = "meteomesh/v1/mesh/users/+/send";
    const DELIVERY: Delivery = Delivery::EVENT;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendResult {
    pub req: String,
    /// The message id, absent when refused.
    pub id: Option<String>,
    pub seq: u64,
    /// `send`: whether the recipient acknowledged in time.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub delivered: Option<bool>,
    /// `broadcast`: recipients that acknowledged in time, and how many were online.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub acked: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub online: Option<u32>,
    /// `fire_send`: accepted and stored until the recipient acknowledges.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub queued: Option<bool>,
    /// Why the request was refused: a code to act on and a message to show.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<SendRefusal>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendRefusal {
    /// The request is malformed (fix it; do not retry as is).
    Invalid,
    /// The recipient has too many messages waiting (retry later).
    QueueFull,
    /// The node cannot take it now: storage failed or it is stopping (retry elsewhere).
    Unavailable,
}

impl BusMessage for SendResult {
    const FILTER: &'static str = "meteomesh/v1/mesh/users/+/result";
    const DELIVERY: Delivery = Delivery::EVENT;
}
