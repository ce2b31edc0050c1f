//! A fake Open-Meteo (forecast + geocoding) and OpenWeatherMap on 127.0.0.1 that answers
//! in the real services' shapes, with scripted failures.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The next answer to give instead of a normal one.
#[derive(Debug, Clone)]
pub enum Forced {
    Status(u16, String),
    Delay(Duration),
}

#[derive(Default)]
pub struct State {
    /// `current` objects by "lat,lon" as the request spells them; others get `default`.
    pub places: HashMap<String, Value>,
    pub default: Option<Value>,
    pub forced: VecDeque<Forced>,
    /// Paths with query of every request served.
    pub requests: Vec<String>,
    /// While set, every request is answered with this status (the provider is down).
    pub down: Option<u16>,
    /// The whole OpenWeatherMap answer for every place (`dt` added when absent).
    pub owm: Option<Value>,
}

#[derive(Clone)]
pub struct FakeWeather {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

/// A `current` block without `time`: the fake stamps each answer with the start of the
/// present 15-minute interval, as Open-Meteo does. Set `time` to serve old data.
pub fn current(temp: Option<f64>) -> Value {
    json!({"interval": 900, "temperature_2m": temp,
           "precipitation": 0.0, "rain": 0.0, "showers": 0.0, "snowfall": 0.0, "weather_code": 3})
}

/// Open-Meteo's `current.time` for `at` (UTC, `timezone=GMT`): the start of its
/// 15-minute interval, without seconds or offset.
pub fn interval_start(at: jiff::Timestamp) -> String {
    let s = at.as_second();
    let start = jiff::Timestamp::from_second(s - s.rem_euclid(900)).unwrap();
    start.strftime("%Y-%m-%dT%H:%M").to_string()
}

fn query(path: &str) -> HashMap<String, String> {
    path.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%2C", ",")))
        .collect()
}

impl FakeWeather {
    pub async fn start() -> FakeWeather {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            default: Some(current(Some(10.0))),
            ..State::default()
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let (status, body, delay) = answer(&state, &path);
                    if let Some(d) = delay {
                        tokio::time::sleep(d).await;
                    }
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                });
            }
        });
        FakeWeather { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Sets the temperature of every place.
    pub fn set_temp(&self, t: Option<f64>) {
        let mut s = self.lock();
        s.places.clear();
        s.default = Some(current(t));
    }

    pub fn force(&self, f: Forced) {
        self.lock().forced.push_back(f);
    }

    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }
}

fn answer(state: &Mutex<State>, path: &str) -> (u16, String, Option<Duration>) {
    let mut s = state.lock().unwrap();
    if let Some(status) = s.down {
        // Not recorded: a long outage must not grow the test's own memory.
        return (status, r#"{"error":true,"reason":"down"}"#.into(), None);
    }
    s.requests.push(path.to_owned());
    match s.forced.pop_front() {
        Some(Forced::Status(code, body)) => return (code, body, None),
        Some(Forced::Delay(d)) => {
            // Answer normally, but late.
            let (code, body, _) = normal(&s, path);
            return (code, body, Some(d));
        }
        None => {}
    }
    normal(&s, path)
}

fn normal(s: &State, path: &str) -> (u16, String, Option<Duration>) {
    let q = query(path);
    if path.starts_with("/v1/forecast") {
        let lats: Vec<&str> = q
            .get("latitude")
            .map(|v| v.split(',').collect())
            .unwrap_or_default();
        let lons: Vec<&str> = q
            .get("longitude")
            .map(|v| v.split(',').collect())
            .unwrap_or_default();
        if lats.is_empty() || lats.len() != lons.len() {
            return (
                400,
                json!({"error": true, "reason": "Parameter count mismatch"}).to_string(),
                None,
            );
        }
        let items: Vec<Value> = lats
            .iter()
            .zip(&lons)
            .enumerate()
            .map(|(i, (lat, lon))| {
                let mut current = s
                    .places
                    .get(&format!("{lat},{lon}"))
                    .or(s.default.as_ref())
                    .cloned()
                    .unwrap_or(Value::Null);
                if current.is_object() && current.get("time").is_none() {
                    current["time"] = json!(interval_start(jiff::Timestamp::now()));
                }
                let mut item = json!({"latitude": lat.parse::<f64>().unwrap_or(0.0),
                                      "longitude": lon.parse::<f64>().unwrap_or(0.0)});
                // Null: an answer without the `current` block.
                if !current.is_null() {
                    item["current"] = current;
                }
                if i > 0 {
                    item["location_id"] = json!(i);
                }
                item
            })
            .collect();
        let body = if items.len() == 1 {
            items[0].to_string()
        } else {
            Value::Array(items).to_string()
        };
        return (200, body, None);
    }
    if path.starts_with("/data/2.5/weather") {
        let temp = s
            .default
            .as_ref()
            .and_then(|c| c.get("temperature_2m"))
            .cloned()
            .unwrap_or(Value::Null);
        // An OpenWeatherMap answer, unless the test scripted one (`owm`).
        if let Some(body) = &s.owm {
            let mut body = body.clone();
            if body.get("dt").is_none() {
                body["dt"] = json!(jiff::Timestamp::now().as_second());
            }
            return (200, body.to_string(), None);
        }
        let body = json!({"weather": [{"id": 803, "main": "Clouds"}], "main": {"temp": temp},
                          "dt": jiff::Timestamp::now().as_second(), "cod": 200});
        return (200, body.to_string(), None);
    }
    if path.starts_with("/v1/search") {
        let name = q.get("name").cloned().unwrap_or_default().to_lowercase();
        if name.starts_with("catania") {
            let body = json!({"results": [{"id": 2525068, "name": "Catania", "latitude": 37.49223,
                "longitude": 15.07041, "country_code": "IT", "admin1": "Sicily",
                "timezone": "Europe/Rome", "country": "Italy"}], "generationtime_ms": 0.4});
            return (200, body.to_string(), None);
        }
        return (200, json!({"generationtime_ms": 0.2}).to_string(), None);
    }
    (404, "{}".into(), None)
}
