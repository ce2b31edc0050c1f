//! The alerts part of the bus contract: each raise or clear of a constraint on the
//! user's own topic, and the retained state of each subscription.

use serde::{Deserialize, Serialize};

use super::*;

/// `meteomesh/v1/users/{id}/alerts` — each raise or clear of one constraint of one of
/// the user's subscriptions (QoS 1, not retained).
pub fn user_alerts(user_id: i64) -> String {
    format!("{}/alerts", user_root(user_id))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Raised,
    Cleared,
    /// Still violated: the subscription asked to be reminded every `remind_hours`.
    Reminder,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Stable across duplicates: `{subscription}-{constraint}-{start, Unix ms}`; the
    /// raise and the clear of one episode share it.
    pub id: String,
    pub user_id: i64,
    pub subscription_id: i64,
    pub label: String,
    pub place: String,
    pub constraint: crate::domain::subscription::Kind,
    pub state: AlertState,
    /// The observed value that decided it (°C for temperatures, mm/cm for rain/snow).
    pub value: Option<f64>,
    /// The subscription's threshold in °C (temperature constraints only).
    pub threshold_c: Option<f64>,
    pub weather_code: Option<u16>,
    /// The observed condition in words for rain, snow and ice ("freezing rain").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// The place's temperature (°C) and precipitation (mm) in the reading that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precipitation_mm: Option<f64>,
    /// RFC 3339: when the provider observed the reading that decided (for `no_data`,
    /// the last reading there is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<String>,
    /// RFC 3339: when this episode started, and when this event happened.
    pub started_at: String,
    pub at: String,
    /// Whether the user wants a notification for this event (clears may be muted).
    pub notify: bool,
}

impl AlertEvent {
    /// `{id}:{raised|cleared}` (`{id}:reminder:{at}`): names this event (not the
    /// episode) across duplicates.
    pub fn key(&self) -> String {
        match self.state {
            AlertState::Raised => format!("{}:raised", self.id),
            AlertState::Cleared => format!("{}:cleared", self.id),
            AlertState::Reminder => format!("{}:reminder:{}", self.id, self.at),
        }
    }
}

impl BusMessage for AlertEvent {
    const FILTER: &'static str = "meteomesh/v1/users/+/alerts";
    const DELIVERY: Delivery = Delivery::EVENT;
}

/// `meteomesh/v1/users/{id}/subscriptions/{sid}/state` — RETAINED current state of one
/// subscription; an empty retained payload removes it when the subscription is deleted.
pub fn subscription_state(user_id: i64, subscription_id: i64) -> String {
    format!(
        "{}/subscriptions/{subscription_id}/state",
        user_root(user_id)
    )
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionStateMsg {
    pub subscription_id: i64,
    pub label: String,
    pub place: String,
    /// Constraints violated now.
    pub violated: Vec<crate::domain::subscription::Kind>,
    /// The last conditions seen (absent before the first observation).
    pub conditions: Option<crate::domain::weather::Conditions>,
    /// RFC 3339: when the provider observed `conditions`.
    #[serde(default)]
    pub observed_at: Option<String>,
    /// `conditions` are older than `weather.max_observation_age`: they decide nothing.
    #[serde(default)]
    pub stale: bool,
    /// RFC 3339 time of the last evaluation.
    pub updated_at: String,
}

impl BusMessage for SubscriptionStateMsg {
    const FILTER: &'static str = "meteomesh/v1/users/+/subscriptions/+/state";
    const DELIVERY: Delivery = Delivery::STATE;
}
