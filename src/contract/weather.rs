//! The weather part of the bus contract: subscription changes (for the poller) and one
//! observation per polled place (for the rules).

use serde::{Deserialize, Serialize};

use super::*;

/// `meteomesh/v1/subscriptions/changed` — internal: a user's weather subscription was
/// created, updated or deleted. Published by the subscriptions module; consumed by the
/// poller (which places to fetch) and the rules (retained state).
pub const SUBSCRIPTIONS_CHANGED: &str = "meteomesh/v1/subscriptions/changed";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Created,
    Updated,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionsChanged {
    pub user_id: i64,
    pub subscription_id: i64,
    pub change: Change,
}

impl BusMessage for SubscriptionsChanged {
    const FILTER: &'static str = SUBSCRIPTIONS_CHANGED;
    const DELIVERY: Delivery = Delivery::EVENT;
}

/// `meteomesh/v1/weather/observed` — internal: current conditions at one grid cell
/// (0.01°), published by the poller once per place per cycle; consumed by the rules.
pub const WEATHER_OBSERVED: &str = "meteomesh/v1/weather/observed";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeatherObserved {
    /// The grid cell: latitude and longitude × 100, rounded.
    pub cell_lat: i64,
    pub cell_lon: i64,
    pub provider: String,
    /// Unix seconds when meteomesh received it.
    pub received_at: i64,
    /// Seconds between two fetches of each place when the provider's quota stretches
    /// them past `weather.poll_interval`; 0 otherwise. A place is not "without fresh
    /// data" before two such intervals have passed.
    #[serde(default)]
    pub stretched_interval: u64,
    pub conditions: crate::domain::weather::Conditions,
}

impl BusMessage for WeatherObserved {
    const FILTER: &'static str = WEATHER_OBSERVED;
    const DELIVERY: Delivery = Delivery::EVENT;
}

/// `meteomesh/v1/system/weather` — internal: the weather service needs an
/// administrator's eye. Published by the poller when the provider's quota stops (or
/// starts again) carrying every place at `weather.poll_interval`; consumed by the
/// notifier, which tells every administrator with a Telegram chat.
pub const WEATHER_NOTICES: &str = "meteomesh/v1/system/weather";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeatherNotice {
    pub provider: String,
    /// What cannot be met, and what can; `None` when every place fits again.
    pub warning: Option<String>,
    pub places: usize,
    /// Seconds between two fetches of each place now.
    pub interval_seconds: u64,
    /// Unix seconds.
    pub at: i64,
}

impl BusMessage for WeatherNotice {
    const FILTER: &'static str = WEATHER_NOTICES;
    const DELIVERY: Delivery = Delivery::EVENT;
}
