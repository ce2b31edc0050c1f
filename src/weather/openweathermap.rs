//! OpenWeatherMap 2.5 current weather, one place per request (paced to the plan's
//! calls per minute), `units=metric`. `cod` is
//! a number on success and a string on errors; `rain.1h`/`snow.1h` are absent when
//! there is none. Its weather groups are mapped to WMO codes so the rules see one
//! vocabulary.

use std::time::Duration;

use serde::Deserialize;

use super::{Provider, ProviderError, agent, base, coord, get};
use crate::domain::weather::{Conditions, Coord};

pub struct OpenWeatherMap {
    url: String,
    api_key: String,
    agent: ureq::Agent,
    /// Least time between two calls (the free plan allows 60 per minute).
    pace: Duration,
    last_call: std::sync::Mutex<Option<std::time::Instant>>,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    cod: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    main: Option<Main>,
    #[serde(default)]
    weather: Vec<Weather>,
    #[serde(default)]
    rain: Option<Volume>,
    #[serde(default)]
    snow: Option<Volume>,
    #[serde(default)]
    dt: Option<i64>,
}

#[derive(Deserialize)]
struct Main {
    #[serde(default)]
    temp: Option<f64>,
}

#[derive(Deserialize)]
struct Weather {
    #[serde(default)]
    id: Option<u16>,
    #[serde(default)]
    main: Option<String>,
}

#[derive(Deserialize)]
struct Volume {
    #[serde(rename = "1h", default)]
    one_hour: Option<f64>,
}

/// OpenWeatherMap condition ids (2xx thunderstorm, 3xx drizzle, 5xx rain, 6xx snow) or
/// its `main` group, as the closest WMO code.
fn wmo_code(w: &Weather) -> Option<u16> {
    match w.id {
        Some(200..=299) => Some(95),
        Some(300..=399) => Some(53),
        Some(500..=504) => Some(63),
        Some(511) => Some(66),
        Some(520..=531) => Some(81),
        Some(600..=699) => Some(73),
        Some(800) => Some(0),
        Some(801..=804) => Some(3),
        Some(700..=799) => Some(45),
        _ => match w.main.as_deref() {
            Some("Thunderstorm") => Some(95),
            Some("Drizzle") => Some(53),
            Some("Rain") => Some(63),
            Some("Snow") => Some(73),
            Some("Clear") => Some(0),
            Some("Clouds") => Some(3),
            _ => None,
        },
    }
}

/// Parses one answer with its HTTP status.
pub fn parse(status: u16, body: &str) -> Result<Conditions, ProviderError> {
    let answer: Answer = serde_json::from_str(body).map_err(|e| {
        if status == 200 {
            ProviderError::Parse(e.to_string())
        } else {
            ProviderError::Unavailable(format!("HTTP {status}"))
        }
    })?;
    // `cod` is 200 on success, "404"/"401"/"429" (strings) on errors.
    let cod = match &answer.cod {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|n| n as u16),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .unwrap_or(status);
    let reason = || {
        answer
            .message
            .clone()
            .unwrap_or_else(|| format!("code {cod}"))
    };
    match (status, cod) {
        (200, 200) => {}
        (429, _) | (_, 429) => return Err(ProviderError::RateLimited { retry_after: None }),
        (500..=599, _) => return Err(ProviderError::Unavailable(reason())),
        _ => {
            return Err(ProviderError::Refused {
                status: cod,
                reason: reason(),
            });
        }
    }
    let code = answer.weather.first().and_then(wmo_code);
    let rain = answer.rain.and_then(|v| v.one_hour).unwrap_or(0.0);
    let snow_mm = answer.snow.and_then(|v| v.one_hour).unwrap_or(0.0);
    Ok(Conditions {
        temperature_c: answer.main.and_then(|m| m.temp),
        precipitation_mm: Some(rain + snow_mm),
        rain_mm: Some(rain),
        showers_mm: Some(0.0),
        // OpenWeatherMap reports snow as water equivalent in mm; ~1 cm of snow per mm.
        snowfall_cm: Some(snow_mm),
        weather_code: code,
        observed_at: answer
            .dt
            .and_then(|t| jiff::Timestamp::from_second(t).ok())
            .map(|t| t.to_string()),
    })
}

impl OpenWeatherMap {
    /// `url` is the API base, e.g. `https://api.openweathermap.org`.
    pub fn new(
        url: &str,
        api_key: &str,
        calls_per_minute: u32,
        timeout: Duration,
    ) -> OpenWeatherMap {
        OpenWeatherMap {
            url: base(url).to_owned(),
            api_key: api_key.to_owned(),
            agent: agent(timeout),
            pace: Duration::from_secs(60) / calls_per_minute.max(1),
            last_call: std::sync::Mutex::new(None),
        }
    }

    /// Sleeps (this is a blocking client) until the next call keeps to the pace.
    fn wait_turn(&self) {
        let mut last = self.last_call.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = *last {
            let next = at + self.pace;
            let now = std::time::Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
        *last = Some(std::time::Instant::now());
    }
}

impl Provider for OpenWeatherMap {
    fn name(&self) -> &'static str {
        "openweathermap"
    }

    fn max_batch(&self) -> usize {
        1
    }

    fn fetch(&self, places: &[Coord]) -> Result<Vec<Conditions>, ProviderError> {
        places
            .iter()
            .map(|p| {
                self.wait_turn();
                let url = format!(
                    "{}/data/2.5/weather?lat={}&lon={}&units=metric&appid={}",
                    self.url,
                    coord(p.lat),
                    coord(p.lon),
                    self.api_key
                );
                let (status, body) = get(&self.agent, &url)?;
                parse(status, &body)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_and_string_cod_errors() {
        let ok = r#"{"weather":[{"id":601,"main":"Snow"}],"main":{"temp":-2.5},"snow":{"1h":1.2},"dt":1795357949,"cod":200}"#;
        let c = parse(200, ok).unwrap();
        assert_eq!(c.temperature_c, Some(-2.5));
        assert_eq!(c.weather_code, Some(73));
        assert_eq!(c.snowfall_cm, Some(1.2));
        assert_eq!(c.rain_mm, Some(0.0), "absent rain key means none");
        assert_eq!(
            parse(404, r#"{"cod":"404","message":"city not found"}"#),
            Err(ProviderError::Refused {
                status: 404,
                reason: "city not found".into()
            })
        );
        assert!(matches!(
            parse(401, r#"{"cod":401,"message":"Invalid API key"}"#),
            Err(ProviderError::Refused { status: 401, .. })
        ));
        assert!(matches!(
            parse(429, r#"{"cod":"429","message":"limit"}"#),
            Err(ProviderError::RateLimited { .. })
        ));
        assert!(matches!(
            parse(502, "<html>bad gateway</html>"),
            Err(ProviderError::Unavailable(_))
        ));
    }
}
