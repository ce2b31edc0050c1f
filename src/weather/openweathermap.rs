//! OpenWeatherMap 2.5 current weather, one place per request, `units=metric`. `cod` is
//! a number on success and a string on errors; `rain.1h`/`snow.1h` are absent when
//! there is none. `weather` lists every condition (often several, e.g. mist and rain);
//! each is mapped to a WMO code so the rules see one vocabulary.

use std::time::Duration;

use serde::Deserialize;

use super::{Provider, ProviderError, agent, base, coord, get};
use crate::domain::weather::{Conditions, Coord};

pub struct OpenWeatherMap {
    url: String,
    api_key: String,
    agent: ureq::Agent,
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

/// An OpenWeatherMap condition id as the closest WMO 4677 code, or, without an id, its
/// `main` group. The table is in docs/weather.md: thunderstorms without rain (210–221)
/// are 17 (no precipitation), with rain or drizzle 95; 511 freezing rain 66; sleet
/// (611–613) 79 (ice pellets); rain and snow (615, 616) 68/69.
fn wmo_code(w: &Weather) -> Option<u16> {
    Some(match w.id {
        Some(200..=202 | 230..=232) => 95,
        Some(210..=221) => 17,
        Some(300 | 310) => 51,
        Some(301 | 311) => 53,
        Some(302 | 312) => 55,
        Some(313 | 321) => 80,
        Some(314) => 81,
        Some(500) => 61,
        Some(501) => 63,
        Some(502..=504) => 65,
        Some(511) => 66,
        Some(520) => 80,
        Some(521 | 531) => 81,
        Some(522) => 82,
        Some(600) => 71,
        Some(601) => 73,
        Some(602) => 75,
        Some(611..=613) => 79,
        Some(615) => 68,
        Some(616) => 69,
        Some(620 | 621) => 85,
        Some(622) => 86,
        Some(701) => 10,
        Some(711 | 762) => 4,
        Some(721) => 5,
        Some(731 | 751) => 7,
        Some(741) => 45,
        Some(761) => 6,
        Some(771) => 18,
        Some(781) => 19,
        Some(800) => 0,
        Some(801) => 1,
        Some(802) => 2,
        Some(803 | 804) => 3,
        _ => match w.main.as_deref()? {
            "Thunderstorm" => 95,
            "Drizzle" => 53,
            "Rain" => 63,
            "Snow" => 73,
            "Mist" => 10,
            "Fog" => 45,
            "Clear" => 0,
            "Clouds" => 3,
            _ => return None,
        },
    })
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
        (429, _) | (_, 429) => {
            return Err(ProviderError::RateLimited {
                retry_after: None,
                reason: reason(),
            });
        }
        (500..=599, _) => return Err(ProviderError::Unavailable(reason())),
        _ => {
            return Err(ProviderError::Refused {
                status: cod,
                reason: reason(),
            });
        }
    }
    // Every entry counts ("Mist" first and "Rain" second is a rainy answer). WMO codes
    // grow with significance, so the highest is the headline.
    let mut codes: Vec<u16> = answer.weather.iter().filter_map(wmo_code).collect();
    codes.sort_unstable();
    codes.dedup();
    let code = codes.last().copied();
    if codes.len() < 2 {
        codes.clear();
    }
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
        weather_codes: codes,
        observed_at: answer
            .dt
            .and_then(|t| jiff::Timestamp::from_second(t).ok())
            .map(|t| t.to_string()),
    })
}

impl OpenWeatherMap {
    /// `url` is the API base, e.g. `https://api.openweathermap.org`. Calls are paced
    /// by the poller (`weather::quota`), not here.
    pub fn new(url: &str, api_key: &str, timeout: Duration) -> OpenWeatherMap {
        OpenWeatherMap {
            url: base(url).to_owned(),
            api_key: api_key.to_owned(),
            agent: agent(timeout),
        }
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

    /// A real-format answer: several conditions, mist first, and no `rain` key.
    const MIST_AND_RAIN: &str = r#"{"coord":{"lon":-93.2923,"lat":37.2153},"weather":[{"id":701,"main":"Mist","description":"mist","icon":"50n"},{"id":500,"main":"Rain","description":"light rain","icon":"10n"}],"base":"stations","main":{"temp":8.61,"feels_like":6.94,"temp_min":7.77,"temp_max":9.45,"pressure":1012,"humidity":96},"visibility":4828,"wind":{"speed":3.09,"deg":40},"clouds":{"all":100},"dt":1795357949,"sys":{"type":2,"id":2004412,"country":"US","sunrise":1795352651,"sunset":1795389245},"timezone":-21600,"id":4409896,"name":"Springfield","cod":200}"#;

    #[test]
    fn every_listed_condition_counts() {
        let c = parse(200, MIST_AND_RAIN).unwrap();
        assert_eq!(c.weather_code, Some(61), "rain outranks mist");
        assert_eq!(c.weather_codes, vec![10, 61]);
        assert_eq!(c.rain_mm, Some(0.0));
        let thunder_only = MIST_AND_RAIN.replace(
            r#"{"id":500,"main":"Rain","description":"light rain","icon":"10n"}"#,
            r#"{"id":211,"main":"Thunderstorm","description":"thunderstorm","icon":"11n"}"#,
        );
        assert_eq!(parse(200, &thunder_only).unwrap().weather_code, Some(17));
    }

    #[test]
    fn the_id_table() {
        let code = |id| {
            wmo_code(&Weather {
                id: Some(id),
                main: None,
            })
        };
        use crate::domain::weather::{ICE_CODES, RAIN_CODES, SNOW_CODES};
        let is = |id, set: &[u16]| code(id).is_some_and(|c| set.contains(&c));
        for id in [
            200, 201, 202, 230, 231, 232, 300, 302, 314, 321, 500, 504, 511, 520, 531, 615, 616,
        ] {
            assert!(is(id, RAIN_CODES), "{id} is rain");
        }
        for id in [210, 211, 212, 221, 701, 741, 781, 800, 804] {
            assert!(!is(id, RAIN_CODES) && !is(id, SNOW_CODES), "{id} is dry");
        }
        for id in [600, 601, 602, 611, 612, 613, 615, 616, 620, 621, 622] {
            assert!(is(id, SNOW_CODES), "{id} is snow");
        }
        for id in [511, 611, 612, 613] {
            assert!(is(id, ICE_CODES), "{id} is ice");
        }
        for id in [500, 600, 615, 616] {
            assert!(!is(id, ICE_CODES), "{id} is not ice");
        }
        for id in (200..=899).filter(|id| code(*id).is_some()) {
            assert_ne!(
                crate::domain::weather::describe(code(id).unwrap()),
                "unknown conditions"
            );
        }
    }
}
