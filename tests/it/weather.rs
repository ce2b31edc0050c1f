//! Subscriptions, the batched poller and the alert rules against fake providers on
//! 127.0.0.1; alerts and retained state seen by real MQTT clients.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::fake_weather::{FakeWeather, Forced};
use common::*;
use rumqttc::QoS;
use serde_json::{Value, json};

const PW: &str = "correct-horse-1";

pub(crate) async fn app_with(
    fake: &FakeWeather,
    edit: impl FnOnce(&mut meteomesh::config::Config),
) -> TestApp {
    let url = fake.url();
    TestApp::start_with(|c| {
        c.weather.open_meteo_url = url.clone();
        c.weather.geocoding_url = url.clone();
        c.weather.openweathermap_url = url.clone();
        c.weather.max_subscriptions_per_user = 200;
        edit(c);
    })
    .await
}

/// OpenWeatherMap with a paid plan's limits (600 a minute, no monthly limit): calls 100 ms
/// apart, so pacing is visible but quick.
pub(crate) fn openweathermap_paid(c: &mut meteomesh::config::Config) {
    c.weather.provider = meteomesh::config::ProviderKind::OpenWeatherMap;
    c.weather.openweathermap_api_key = meteomesh::config::Secret::new("test-key");
    c.weather.openweathermap_calls_per_minute = 600;
    c.weather.openweathermap_calls_per_month = 0;
}

pub(crate) async fn subscribe(t: &TestApp, token: &str, body: Value) -> Value {
    let r = api(
        t.http,
        "POST",
        "/api/v1/subscriptions",
        Some(token),
        &body.to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

async fn poll(t: &TestApp, admin: &str) -> Value {
    poll_weather(t.http, admin).await
}

/// An MQTT client logged in as the user, subscribed to their alerts.
pub(crate) async fn alerts_of(t: &TestApp, user: &str, token: &str, id: i64) -> MqttClient {
    let mut c = MqttClient::connect(mqtt_options(
        t.mqtt.unwrap(),
        &format!("{user}-alerts"),
        Some((user, token)),
    ))
    .await;
    c.subscribe(&format!("meteomesh/v1/users/{id}/alerts"), QoS::AtLeastOnce)
        .await;
    c
}

pub(crate) async fn next_alert(c: &mut MqttClient) -> Value {
    let p = c.next_publish(|t| t.ends_with("/alerts")).await;
    serde_json::from_slice(&p.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscriptions_over_few_places_cost_one_call() {
    let fake = FakeWeather::start().await;
    let t = app_with(&fake, |_| {}).await;
    let (admin, _) = register(t.http, "root", PW).await;
    let (a, _) = register(t.http, "alice", PW).await;
    let (b, _) = register(t.http, "bob", PW).await;
    // 100 subscriptions from two users over 7 places; neighbours within 0.005° share a
    // grid cell.
    for i in 0..100 {
        let place = i % 7;
        let jitter = if i % 2 == 0 { 0.001 } else { -0.001 };
        let token = if i % 3 == 0 { &b } else { &a };
        subscribe(
            &t,
            token,
            json!({"place": {"lat": 37.5 + place as f64 * 0.3 + jitter, "lon": 15.08 + jitter},
                   "min_temp": 2, "label": format!("s{i}")}),
        )
        .await;
    }
    let before = fake.requests().len();
    let report = poll(&t, &admin).await;
    assert_eq!(report["places"], 7, "{report}");
    assert_eq!(report["provider_calls"], 1, "{report}");
    assert_eq!(report["observations"], 7, "{report}");
    let requests = fake.requests();
    let cycle: Vec<&String> = requests[before..]
        .iter()
        .filter(|p| p.starts_with("/v1/forecast"))
        .collect();
    assert_eq!(cycle.len(), 1, "{cycle:?}");
    assert_eq!(
        cycle[0]
            .split("latitude=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .split(',')
            .count(),
        7
    );
    let m = get(t.http, "/metrics").await.body;
    assert!(m.contains("meteomesh_weather_places 7"), "{m}");
    assert!(m.contains("meteomesh_subscriptions 100"), "{m}");
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_triggered_alerts_with_hysteresis_and_unknowns() {
    let fake = FakeWeather::start().await;
    let t = app_with(&fake, |_| {}).await;
    let (admin, admin_id) = register(t.http, "alice", PW).await;
    let sub = subscribe(
        &t,
        &admin,
        json!({"place": {"name": "Catania", "lat": 37.49, "lon": 15.07, "timezone": "Europe/Rome"},
                                           "min_temp": 5, "label": "home"}),
    )
    .await;
    let sid = sub["id"].as_i64().unwrap();
    let mut alerts = alerts_of(&t, "alice", &admin, admin_id).await;

    let step = |temp: Option<f64>| {
        fake.set_temp(temp);
        poll(&t, &admin)
    };
    step(Some(10.0)).await;
    step(Some(4.0)).await; // crosses: raise
    let raised = next_alert(&mut alerts).await;
    assert_eq!(raised["state"], "raised");
    assert_eq!(raised["constraint"], "too_cold");
    assert_eq!(raised["subscription_id"], sid);
    assert_eq!(raised["value"], 4.0);
    assert_eq!(raised["label"], "home");
    step(Some(4.0)).await; // the same again: nothing
    step(Some(5.2)).await; // inside the 0.5 °C hysteresis: nothing
    step(Some(4.8)).await; // hovering: nothing
    step(None).await; // unknown: nothing
    step(Some(5.6)).await; // out of the band: clear
    let cleared = next_alert(&mut alerts).await;
    assert_eq!(
        cleared["state"], "cleared",
        "no alert between the raise and this clear"
    );
    assert_eq!(cleared["value"], 5.6);
    assert_eq!(cleared["id"], raised["id"], "one episode, one id");
    // Unknown while cold neither clears.
    step(Some(3.0)).await;
    let again = next_alert(&mut alerts).await;
    assert_eq!(again["state"], "raised");
    assert_ne!(again["id"], raised["id"]);
    step(None).await;
    step(Some(9.0)).await;
    let cleared = next_alert(&mut alerts).await;
    assert_eq!(
        (cleared["state"].as_str(), cleared["value"].as_f64()),
        (Some("cleared"), Some(9.0))
    );

    let m = get(t.http, "/metrics").await.body;
    assert!(m.contains("meteomesh_alerts_raised_total 2"), "{m}");
    assert!(m.contains("meteomesh_alerts_cleared_total 2"), "{m}");
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_state_reaches_a_late_subscriber() {
    let fake = FakeWeather::start().await;
    let t = app_with(&fake, |_| {}).await;
    let (token, id) = register(t.http, "alice", PW).await;
    let sub = subscribe(
        &t,
        &token,
        json!({"place": {"lat": 45.46, "lon": 9.19}, "max_temp": 30, "rain": true}),
    )
    .await;
    let state_filter = format!("meteomesh/v1/users/{id}/subscriptions/+/state");
    // A watcher sees the evaluation happen (the rules work after the poll returns).
    let mut watcher = MqttClient::connect(mqtt_options(
        t.mqtt.unwrap(),
        "watcher",
        Some(("alice", &token)),
    ))
    .await;
    watcher.subscribe(&state_filter, QoS::AtLeastOnce).await;
    fake.set_temp(35.0.into());
    poll(&t, &token).await;
    loop {
        let p = watcher.next_publish(|_| true).await;
        let v: Value = serde_json::from_slice(&p.payload).unwrap();
        if !v["conditions"].is_null() {
            break;
        }
    }
    // Connects only now, and still learns the current state, retained.
    let mut late = MqttClient::connect(mqtt_options(
        t.mqtt.unwrap(),
        "late",
        Some(("alice", &token)),
    ))
    .await;
    late.subscribe(&state_filter, QoS::AtLeastOnce).await;
    let p = late.next_publish(|_| true).await;
    assert!(p.retain);
    assert_eq!(p.topic, sub["state_topic"].as_str().unwrap());
    let state: Value = serde_json::from_slice(&p.payload).unwrap();
    assert_eq!(state["violated"], json!(["too_hot"]));
    assert_eq!(state["conditions"]["temperature_c"], 35.0);
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_failures_back_off_and_recover() {
    let fake = FakeWeather::start().await;
    let t = app_with(&fake, |c| {
        c.weather.request_timeout = Duration::from_secs(1)
    })
    .await;
    let (token, _) = register(t.http, "alice", PW).await;
    subscribe(
        &t,
        &token,
        json!({"place": {"lat": 37.5, "lon": 15.08}, "snow": true}),
    )
    .await;

    // A timeout is retried too.
    fake.force(Forced::Delay(Duration::from_secs(3)));
    let report = poll(&t, &token).await;
    assert_eq!(
        (
            report["provider_calls"].as_u64(),
            report["observations"].as_u64()
        ),
        (Some(2), Some(1)),
        "{report}"
    );
    // 400 is our fault: not retried, the place fails this cycle, /readyz says why but
    // the node stays ready.
    fake.force(Forced::Status(
        400,
        r#"{"error":true,"reason":"Latitude must be in range"}"#.into(),
    ));
    let report = poll(&t, &token).await;
    assert_eq!(
        (
            report["provider_calls"].as_u64(),
            report["failed_places"].as_u64()
        ),
        (Some(1), Some(1)),
        "{report}"
    );
    let r = get(t.http, "/readyz").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["weather"]["ok"], false);
    assert!(
        v["weather"]["last_error"]
            .as_str()
            .unwrap()
            .contains("Latitude must be in range"),
        "{v}"
    );
    // And it recovers; the last error is cleared.
    poll(&t, &token).await;
    let weather = get(t.http, "/readyz").await.json()["weather"].clone();
    assert_eq!(
        (&weather["ok"], &weather["last_error"]),
        (&json!(true), &Value::Null),
        "{weather}"
    );
    assert!(
        (0..5).contains(&weather["last_success_age_seconds"].as_i64().unwrap()),
        "{weather}"
    );
    let m = get(t.http, "/metrics").await.body;
    let last = metric_value(
        &m,
        "meteomesh_weather_last_success_timestamp_seconds{provider=\"open-meteo\"}",
    )
    .unwrap();
    assert_eq!(last as i64, weather["last_success"].as_i64().unwrap());
    // 429 "Minutely ... exceeded" (Open-Meteo sends no Retry-After): no retry, no more
    // calls until that minute has passed, and /readyz says until when and why.
    fake.force(Forced::Status(
        429,
        r#"{"error":true,"reason":"Minutely API request limit exceeded. Please try again in one minute."}"#.into(),
    ));
    let report = poll(&t, &token).await;
    assert_eq!(
        (
            report["provider_calls"].as_u64(),
            report["deferred_places"].as_u64()
        ),
        (Some(1), Some(1)),
        "{report}"
    );
    let weather = get(t.http, "/readyz").await.json()["weather"].clone();
    let until = weather["paused_until"].as_i64().unwrap();
    let now = jiff::Timestamp::now().as_second();
    assert!(
        until > now && until <= now + 61 && until % 60 == 1,
        "{weather}"
    );
    assert!(
        weather["last_error"].as_str().unwrap().contains("Minutely"),
        "{weather}"
    );
    let report = poll(&t, &token).await;
    assert_eq!(
        (
            report["provider_calls"].as_u64(),
            report["deferred_places"].as_u64()
        ),
        (Some(0), Some(1)),
        "paused: {report}"
    );
    let m = get(t.http, "/metrics").await.body;
    for needle in [
        "meteomesh_weather_provider_calls_total{outcome=\"rate_limited\",provider=\"open-meteo\"} 1",
        "meteomesh_weather_provider_calls_total{outcome=\"timeout\",provider=\"open-meteo\"} 1",
        "meteomesh_weather_provider_calls_total{outcome=\"refused\",provider=\"open-meteo\"} 1",
    ] {
        assert!(m.contains(needle), "missing {needle} in {m}");
    }
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openweathermap_one_call_per_place_and_string_cod_errors() {
    let fake = FakeWeather::start().await;
    let t = app_with(&fake, openweathermap_paid).await;
    let (token, id) = register(t.http, "alice", PW).await;
    for i in 0..3 {
        subscribe(
            &t,
            &token,
            json!({"place": {"lat": 40.0 + i as f64, "lon": 10.0}, "max_temp": 20}),
        )
        .await;
    }
    let mut alerts = alerts_of(&t, "alice", &token, id).await;
    fake.set_temp(Some(25.0));
    let report = poll(&t, &token).await;
    assert_eq!(
        (report["places"].as_u64(), report["provider_calls"].as_u64()),
        (Some(3), Some(3)),
        "{report}"
    );
    assert!(
        fake.requests()
            .iter()
            .any(|p| p.contains("appid=test-key") && p.contains("units=metric"))
    );
    assert_eq!(next_alert(&mut alerts).await["constraint"], "too_hot");
    // `cod` as a string on errors; a 404 is not retried.
    fake.force(Forced::Status(
        404,
        r#"{"cod":"404","message":"city not found"}"#.into(),
    ));
    let report = poll(&t, &token).await;
    assert_eq!(report["failed_places"], 1, "{report}");
    assert!(
        get(t.http, "/readyz").await.json()["weather"]["last_error"]
            .as_str()
            .unwrap()
            .contains("city not found")
    );
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_api_validation_units_and_places() {
    let fake = FakeWeather::start().await;
    let t = app_with(&fake, |c| c.weather.max_subscriptions_per_user = 2).await;
    let (token, _) = register(t.http, "alice", PW).await;
    let (other, _) = register(t.http, "bob", PW).await;

    let r = api(
        t.http,
        "GET",
        "/api/v1/places/search?q=Catania&count=3",
        Some(&token),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let found = r.json();
    assert_eq!(found[0]["name"], "Catania");
    assert_eq!(found[0]["timezone"], "Europe/Rome");
    // Cached: the second search does not reach the provider.
    let before = fake.requests().len();
    api(
        t.http,
        "GET",
        "/api/v1/places/search?q=catania&count=3",
        Some(&token),
        "",
    )
    .await;
    assert_eq!(fake.requests().len(), before);
    let r = api(t.http, "GET", "/api/v1/places/search?q=x", Some(&token), "").await;
    assert_eq!(r.status, 422);
    assert_eq!(
        api(t.http, "GET", "/api/v1/places/search?q=Catania", None, "")
            .await
            .status,
        401
    );

    let bad = |body: Value, field: &'static str| {
        let token = token.clone();
        let addr = t.http;
        async move {
            let r = api(
                addr,
                "POST",
                "/api/v1/subscriptions",
                Some(&token),
                &body.to_string(),
            )
            .await;
            assert_eq!(r.status, 422, "{body} -> {}", r.body);
            let fields: Vec<String> = r.json()["error"]["fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["field"].as_str().unwrap().to_owned())
                .collect();
            assert!(fields.iter().any(|f| f == field), "{body} -> {fields:?}");
        }
    };
    bad(json!({"place": {"lat": 37.5, "lon": 15.0}}), "constraints").await;
    bad(
        json!({"place": {"lat": 37.5, "lon": 15.0}, "min_temp": 10, "max_temp": 5}),
        "max_temp",
    )
    .await;
    bad(
        json!({"place": {"lat": 37.5, "lon": 15.0}, "min_temp": -120}),
        "min_temp",
    )
    .await;
    bad(
        json!({"place": {"lat": 97.5, "lon": 15.0}, "rain": true}),
        "place.lat",
    )
    .await;
    bad(
        json!({"place": {"lat": 37.5, "lon": 15.0, "timezone": "Nope/Never"}, "rain": true}),
        "place.timezone",
    )
    .await;
    bad(
        json!({"place": {"lat": 37.5, "lon": 15.0}, "rain": true, "for_observations": 0}),
        "for_observations",
    )
    .await;
    bad(
        json!({"place": {"lat": "north", "lon": 15.0}, "rain": true}),
        "body",
    )
    .await;

    // Imperial users give °F; stored in °C and shown back in °F.
    let r = api(
        t.http,
        "PATCH",
        "/api/v1/me",
        Some(&token),
        r#"{"units": "imperial"}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let s = subscribe(&t, &token, json!({"place": {"name": "Catania", "lat": 37.49, "lon": 15.07}, "min_temp": 41, "max_temp": 95})).await;
    assert_eq!(
        (
            s["min_temp"].as_f64(),
            s["max_temp"].as_f64(),
            s["units"].as_str()
        ),
        (Some(41.0), Some(95.0), Some("imperial"))
    );
    let db = rusqlite::Connection::open(t.db_path()).unwrap();
    let (lo, hi): (f64, f64) = db
        .query_row(
            "SELECT min_temp_c, max_temp_c FROM subscriptions WHERE id = ?1",
            [s["id"].as_i64().unwrap()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        (lo - 5.0).abs() < 1e-9 && (hi - 35.0).abs() < 1e-9,
        "{lo} {hi}"
    );

    // CRUD, ownership, limit.
    let id = s["id"].as_i64().unwrap();
    let path = format!("/api/v1/subscriptions/{id}");
    assert_eq!(
        api(t.http, "GET", &path, Some(&token), "").await.json()["label"],
        "Catania"
    );
    assert_eq!(
        api(t.http, "GET", &path, Some(&other), "").await.status,
        404,
        "not yours"
    );
    let r = api(t.http, "PUT", &path, Some(&token), &json!({"place": {"lat": 37.49, "lon": 15.07}, "snow": true, "label": "ski", "enabled": false}).to_string()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.json()["label"].as_str(), r.json()["enabled"].as_bool()),
        (Some("ski"), Some(false))
    );
    subscribe(
        &t,
        &token,
        json!({"place": {"lat": 1.0, "lon": 1.0}, "rain": true}),
    )
    .await;
    let r = api(
        t.http,
        "POST",
        "/api/v1/subscriptions",
        Some(&token),
        &json!({"place": {"lat": 2.0, "lon": 2.0}, "rain": true}).to_string(),
    )
    .await;
    assert_eq!(r.status, 409, "over the limit of 2: {}", r.body);
    assert_eq!(
        api(t.http, "GET", "/api/v1/subscriptions", Some(&token), "")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        api(t.http, "DELETE", &path, Some(&other), "").await.status,
        404
    );
    assert_eq!(
        api(t.http, "DELETE", &path, Some(&token), "").await.status,
        204
    );
    assert_eq!(
        api(t.http, "GET", &path, Some(&token), "").await.status,
        404
    );
    // Only admins may force a poll.
    assert_eq!(
        api(
            t.http,
            "POST",
            "/api/v1/admin/weather/poll",
            Some(&other),
            ""
        )
        .await
        .status,
        403
    );
    t.app.shutdown().await.unwrap();
}

/// End to end with a third-party client: register and subscribe over HTTP, then
/// `mosquitto_sub` logged in as the user receives the alert when it turns cold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sub_receives_the_alert() {
    let fake = FakeWeather::start().await;
    let t = app_with(&fake, |_| {}).await;
    let (token, id) = register(t.http, "alice", PW).await;
    subscribe(&t, &token, json!({"place": {"name": "Catania", "lat": 37.49, "lon": 15.07}, "min_temp": 0, "label": "frost"})).await;
    fake.set_temp(Some(8.0));
    poll(&t, &token).await;

    let addr = t.mqtt.unwrap();
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args([
            "-u",
            "alice",
            "-P",
            &token,
            "-t",
            &format!("meteomesh/v1/users/{id}/#"),
            "-v",
            "-W",
            "30",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub (Debian package mosquitto-clients) is installed");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The retained state arrives first: mosquitto_sub is subscribed.
    let first = tokio::task::spawn_blocking({
        let rx_line = rx.recv_timeout(WAIT);
        move || rx_line
    })
    .await
    .unwrap()
    .expect("retained state");
    assert!(first.contains("/state "), "{first}");

    fake.set_temp(Some(-3.0));
    poll(&t, &token).await;
    let alert = loop {
        let line = rx.recv_timeout(WAIT).expect("the alert");
        if line.contains("/alerts ") {
            break line;
        }
    };
    let _ = sub.kill();
    let _ = sub.wait();
    let payload: Value = serde_json::from_str(alert.split_once(' ').unwrap().1).unwrap();
    assert_eq!(payload["state"], "raised");
    assert_eq!(payload["label"], "frost");
    assert_eq!(payload["value"], -3.0);
    t.app.shutdown().await.unwrap();
}
