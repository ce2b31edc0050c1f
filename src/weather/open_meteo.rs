//! Open-Meteo forecast API, `current` conditions for many places per request: one place
//! answers an object, several answer an array in request order (elements after the first
//! carry `location_id`). Errors are `{"error": true, "reason": "..."}`; 429 comes without
//! Retry-After.

use std::time::Duration;

use serde::Deserialize;

use super::{Provider, ProviderError, agent, base, coord, get};
use crate::domain::weather::{Conditions, Coord};

const CURRENT: &str = "temperature_2m,precipitation,rain,showers,snowfall,weather_code";
/// The API accepts up to 1000 places per call.
pub const MAX_BATCH: usize = 1000;

pub struct OpenMeteo {
    url: String,
    batch: usize,
    /// A customer plan's key, sent as `apikey`.
    api_key: String,
    agent: ureq::Agent,
}

/// Variables in one request (`CURRENT`): up to 10 count as one call per place.
const VARIABLES: usize = 6;

#[derive(Deserialize)]
struct Place {
    #[serde(default)]
    location_id: Option<usize>,
    #[serde(default)]
    current: Option<Current>,
}

#[derive(Deserialize)]
struct Current {
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    temperature_2m: Option<f64>,
    #[serde(default)]
    precipitation: Option<f64>,
    #[serde(default)]
    rain: Option<f64>,
    #[serde(default)]
    showers: Option<f64>,
    #[serde(default)]
    snowfall: Option<f64>,
    #[serde(default)]
    weather_code: Option<f64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    reason: Option<String>,
}

impl From<Current> for Conditions {
    fn from(c: Current) -> Conditions {
        Conditions {
            temperature_c: c.temperature_2m,
            precipitation_mm: c.precipitation,
            rain_mm: c.rain,
            showers_mm: c.showers,
            snowfall_cm: c.snowfall,
            weather_code: c
                .weather_code
                .filter(|v| (0.0..=u16::MAX as f64).contains(v))
                .map(|v| v as u16),
            weather_codes: Vec::new(),
            observed_at: c.time,
        }
    }
}

impl OpenMeteo {
    /// `url` is the forecast endpoint base, e.g. `https://api.open-meteo.com`.
    pub fn new(url: &str, batch: usize, api_key: &str, timeout: Duration) -> OpenMeteo {
        OpenMeteo {
            url: base(url).to_owned(),
            batch: batch.clamp(1, MAX_BATCH),
            api_key: api_key.to_owned(),
            agent: agent(timeout),
        }
    }

    fn request_url(&self, places: &[Coord]) -> String {
        let lats: Vec<String> = places.iter().map(|p| coord(p.lat)).collect();
        let lons: Vec<String> = places.iter().map(|p| coord(p.lon)).collect();
        let mut url = format!(
            "{}/v1/forecast?latitude={}&longitude={}&current={CURRENT}&timezone=GMT",
            self.url,
            lats.join(","),
            lons.join(",")
        );
        if !self.api_key.is_empty() {
            url.push_str("&apikey=");
            url.push_str(&self.api_key);
        }
        url
    }
}

/// Parses a forecast answer for `expected` places into conditions in request order.
pub fn parse(body: &str, expected: usize) -> Result<Vec<Conditions>, ProviderError> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| ProviderError::Parse(e.to_string()))?;
    let places: Vec<Place> = if value.is_array() {
        serde_json::from_value(value).map_err(|e| ProviderError::Parse(e.to_string()))?
    } else {
        vec![serde_json::from_value(value).map_err(|e| ProviderError::Parse(e.to_string()))?]
    };
    if places.len() != expected {
        return Err(ProviderError::Parse(format!(
            "asked for {expected} places, got {}",
            places.len()
        )));
    }
    let mut out = vec![Conditions::default(); expected];
    for (i, place) in places.into_iter().enumerate() {
        // `location_id` is the index in the request; trust it over the position.
        let index = place.location_id.unwrap_or(i);
        let slot = out
            .get_mut(index)
            .ok_or_else(|| ProviderError::Parse(format!("location_id {index} out of range")))?;
        // Without `current` the answer says nothing about now: a failed poll, never a
        // reading of all-unknown values that would replace the last good one.
        let current = place
            .current
            .ok_or_else(|| ProviderError::Parse(format!("no `current` block for place {index}")))?;
        *slot = Conditions::from(current);
    }
    Ok(out)
}

impl Provider for OpenMeteo {
    fn name(&self) -> &'static str {
        "open-meteo"
    }

    fn max_batch(&self) -> usize {
        self.batch
    }

    /// Per the API's terms, more than 10 variables count fractionally more (15 = 1.5).
    fn weight_per_place(&self) -> f64 {
        (VARIABLES as f64 / 10.0).max(1.0)
    }

    fn fetch(&self, places: &[Coord]) -> Result<Vec<Conditions>, ProviderError> {
        if places.is_empty() {
            return Ok(Vec::new());
        }
        let (status, body) = get(&self.agent, &self.request_url(places))?;
        let reason = || {
            serde_json::from_str::<ErrorBody>(&body)
                .ok()
                .and_then(|e| e.reason)
                .unwrap_or_else(|| format!("HTTP {status}"))
        };
        match status {
            200 => parse(&body, places.len()),
            // "Minutely/Hourly/Daily API request limit exceeded": the poller waits for
            // that window to pass.
            429 => Err(ProviderError::RateLimited {
                retry_after: None,
                reason: reason(),
            }),
            500..=599 => Err(ProviderError::Unavailable(format!("HTTP {status}"))),
            _ => Err(ProviderError::Refused {
                status,
                reason: reason(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_object_and_arrays_with_location_id() {
        let one = r#"{"latitude":37.5,"longitude":15.08,"current":{"time":"2026-11-22T15:00","interval":900,"temperature_2m":14.2,"precipitation":0.0,"rain":0.0,"showers":0.0,"snowfall":0.0,"weather_code":3}}"#;
        let got = parse(one, 1).unwrap();
        assert_eq!(got[0].temperature_c, Some(14.2));
        assert_eq!(got[0].weather_code, Some(3));
        let two = r#"[{"current":{"temperature_2m":1.5,"snowfall":0.7,"weather_code":73}},
                      {"location_id":1,"current":{"temperature_2m":null,"rain":2.0}}]"#;
        let got = parse(two, 2).unwrap();
        assert_eq!(got[0].snowfall_cm, Some(0.7));
        assert_eq!(got[1].temperature_c, None, "null is unknown");
        assert_eq!(got[1].rain_mm, Some(2.0));
        assert!(parse(two, 3).is_err());
        assert!(parse("{not json", 1).is_err());
    }

    #[test]
    fn an_answer_without_current_is_a_failed_poll() {
        let no_current = r#"{"latitude":37.5,"longitude":15.08,"generationtime_ms":0.02,"utc_offset_seconds":0,"timezone":"GMT","elevation":7.0}"#;
        assert!(matches!(parse(no_current, 1), Err(ProviderError::Parse(_))));
        let one_of_two = r#"[{"current":{"temperature_2m":1.5}},{"location_id":1}]"#;
        assert!(matches!(parse(one_of_two, 2), Err(ProviderError::Parse(_))));
    }
}
