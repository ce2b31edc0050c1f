//! The vocabulary of weather: a place on the poller's grid and the conditions a provider
//! reports there, each value possibly unknown.

use serde::{Deserialize, Serialize};

/// A point to fetch, already rounded to the poller's grid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Coord {
    pub lat: f64,
    pub lon: f64,
}

/// Current conditions at one place. Every value may be unknown (`None`): providers
/// answer `null` or leave fields out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conditions {
    pub temperature_c: Option<f64>,
    pub precipitation_mm: Option<f64>,
    pub rain_mm: Option<f64>,
    pub showers_mm: Option<f64>,
    pub snowfall_cm: Option<f64>,
    /// WMO weather code.
    pub weather_code: Option<u16>,
    /// Provider's observation time, ISO 8601 (UTC or local as the provider gives it).
    pub observed_at: Option<String>,
}
