//! The SLA part of the bus contract: an objective went into violation or came back.

use serde::{Deserialize, Serialize};

use super::*;

/// `meteomesh/v1/system/sla` — internal: an SLA went into violation or came back into
/// range. Published by the SLA module; consumed by the notifier, which tells every
/// administrator with a Telegram chat about violations.
pub const SLA_EVENTS: &str = "meteomesh/v1/system/sla";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaState {
    Violated,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlaEvent {
    pub name: String,
    pub selector: String,
    pub state: SlaState,
    pub value: Option<f64>,
    pub desired_min: Option<f64>,
    pub desired_max: Option<f64>,
    /// Unix seconds of the evaluation that changed the state.
    pub at: i64,
    /// Unix seconds since when the value has been out of range (violations only).
    pub since: Option<i64>,
}

impl BusMessage for SlaEvent {
    const FILTER: &'static str = SLA_EVENTS;
    const DELIVERY: Delivery = Delivery::EVENT;
}
