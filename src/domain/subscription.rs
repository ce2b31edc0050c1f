//! The vocabulary of subscriptions: a place watched for constraints (too cold, too hot,
//! rain, snow, ice), its grid cell, and the edge-detection state of each constraint.

use serde::{Deserialize, Serialize};

/// The grid cell of a coordinate: 0.01° steps.
pub fn cell(v: f64) -> i64 {
    (v * 100.0).round() as i64
}

#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub id: i64,
    pub user_id: i64,
    pub label: String,
    pub place_name: String,
    pub lat: f64,
    pub lon: f64,
    pub timezone: String,
    pub min_temp_c: Option<f64>,
    pub max_temp_c: Option<f64>,
    pub rain: bool,
    pub snow: bool,
    pub ice: bool,
    /// Remind the user every this many hours while a constraint holds (0: never).
    pub remind_hours: u32,
    pub notify_on_clear: bool,
    pub for_observations: u32,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The constraint kinds a subscription may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    TooCold,
    TooHot,
    Rain,
    Snow,
    Ice,
    /// Not set by the user: every subscription has it. Its place has had no fresh
    /// reading for `weather.stale_after`.
    NoData,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::TooCold,
        Kind::TooHot,
        Kind::Rain,
        Kind::Snow,
        Kind::Ice,
        Kind::NoData,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TooCold => "too_cold",
            Kind::TooHot => "too_hot",
            Kind::Rain => "rain",
            Kind::Snow => "snow",
            Kind::Ice => "ice",
            Kind::NoData => "no_data",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Edge-detection state of one constraint of one subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConstraintState {
    pub violated: bool,
    /// When the current violation started (Unix milliseconds).
    pub since: Option<i64>,
    /// Consecutive observations that disagree with `violated` (towards a change).
    pub streak: u32,
    /// When the user was last reminded that it still holds (Unix milliseconds).
    pub reminded_at: Option<i64>,
}
