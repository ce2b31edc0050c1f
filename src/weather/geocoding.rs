//! Open-Meteo geocoding: place names to candidates with coordinates and time zone. No
//! match omits `results` entirely; empty fields are left out.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ProviderError, agent, base, get};
use crate::outbound::encode;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaceCandidate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    // Open-Meteo says latitude/longitude; the API and the cache say lat/lon.
    #[serde(alias = "latitude")]
    pub lat: f64,
    #[serde(alias = "longitude")]
    pub lon: f64,
    #[serde(default = "utc")]
    pub timezone: String,
}

fn utc() -> String {
    "UTC".into()
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    results: Vec<PlaceCandidate>,
}

pub struct Geocoder {
    url: String,
    agent: ureq::Agent,
}

impl Geocoder {
    /// `url` is the geocoding base, e.g. `https://geocoding-api.open-meteo.com`.
    pub fn new(url: &str, timeout: Duration) -> Geocoder {
        Geocoder {
            url: base(url).to_owned(),
            agent: agent(timeout),
        }
    }

    /// Up to `count` candidates for `name` (blocking).
    pub fn search(&self, name: &str, count: u8) -> Result<Vec<PlaceCandidate>, ProviderError> {
        let url = format!(
            "{}/v1/search?name={}&count={count}&format=json",
            self.url,
            encode(name)
        );
        let (status, body) = get(&self.agent, &url)?;
        match status {
            200 => serde_json::from_str::<Answer>(&body)
                .map(|a| a.results)
                .map_err(|e| ProviderError::Parse(e.to_string())),
            429 => Err(ProviderError::RateLimited {
                retry_after: None,
                reason: "geocoding request limit exceeded".into(),
            }),
            500..=599 => Err(ProviderError::Unavailable(format!("HTTP {status}"))),
            _ => Err(ProviderError::Refused {
                status,
                reason: format!("HTTP {status}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_results_and_no_match() {
        let body = r#"{"results":[{"id":2525068,"name":"Catania","latitude":37.49223,"longitude":15.07041,"country_code":"IT","admin1":"Sicily","timezone":"Europe/Rome","country":"Italy"}],"generationtime_ms":0.5}"#;
        let a: Answer = serde_json::from_str(body).unwrap();
        assert_eq!(a.results[0].name, "Catania");
        assert_eq!(a.results[0].lat, 37.49223);
        assert_eq!(a.results[0].timezone, "Europe/Rome");
        let none: Answer = serde_json::from_str(r#"{"generationtime_ms":0.2}"#).unwrap();
        assert!(none.results.is_empty());
        assert_eq!(encode("São Paulo"), "S%C3%A3o%20Paulo");
    }
}
