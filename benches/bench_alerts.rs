//! Alert pipeline benchmark (`cargo bench --bench bench_alerts`; `scripts/bench-alerts.sh`
//! runs it in release mode):
//! (a) 10,000 subscriptions over 1,000 places: provider calls per cycle, evaluation time
//!     per cycle, peak RSS;
//! (b) latency from an observation published on the bus to the alert received by an
//!     external MQTT subscriber, p50/p99 over 1,000 alerts.
//! Everything runs on 127.0.0.1 (fake weather provider included).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::fake_weather::FakeWeather;
use common::*;
use meteomesh::contract::{WEATHER_OBSERVED, WeatherObserved};
use meteomesh::domain::subscription::Subscription;
use meteomesh::domain::user::Role;
use meteomesh::domain::weather::Conditions;
use meteomesh::storage::Db;
use meteomesh::storage::subscriptions as store;
use meteomesh::storage::users::{self, NewUser};
use rumqttc::QoS;
use serde_json::Value;

const PW: &str = "bench-password-1";
const USERS: i64 = 100;
const PER_USER: i64 = 100;
const PLACES: i64 = 1000;

fn metric(text: &str, name: &str) -> f64 {
    metric_value(text, name).unwrap_or(0.0)
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn bench_alert_pipeline() {
    let fake = FakeWeather::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.weather.open_meteo_url = fake.url();
    config.weather.geocoding_url = fake.url();
    config.weather.max_subscriptions_per_user = 1000;
    // The pipeline's speed, not the provider's quota (which would pace 1,000 places
    // over hours; benches/bench_quota.rs measures that).
    config.weather.open_meteo_calls_per_minute = 0;
    config.weather.open_meteo_calls_per_hour = 0;
    config.weather.open_meteo_calls_per_day = 0;

    // An admin registered normally; then the bulk data straight into the database.
    let app = start_ready(&config).await;
    let (_, _) = register(app.addresses.http.unwrap(), "admin", PW).await;
    app.shutdown().await.unwrap();
    let db = Db::open(&config.storage.path, Duration::from_secs(5))
        .await
        .unwrap();
    with_connection(db.path(), |c| {
        for u in 0..USERS {
            let user = users::insert(
                c,
                &NewUser {
                    username: &format!("user{u}"),
                    password_hash: "unused",
                    telegram_chat_id: None,
                    telegram_chat_confirmed: false,
                    role: Role::User,
                    timezone: "UTC",
                    now: 0,
                },
            )?
            .unwrap();
            for s in 0..PER_USER {
                let place = (u * PER_USER + s) % PLACES;
                let sub = Subscription {
                    id: 0,
                    user_id: user.id,
                    label: format!("s{s}"),
                    place_name: format!("p{place}"),
                    lat: 30.0 + (place / 40) as f64 * 0.5,
                    lon: -10.0 + (place % 40) as f64 * 0.5,
                    timezone: "UTC".into(),
                    min_temp_c: Some(5.0),
                    max_temp_c: Some(30.0),
                    rain: true,
                    snow: false,
                    ice: false,
                    remind_hours: 0,
                    notify_on_clear: true,
                    for_observations: 1,
                    enabled: true,
                    created_at: 0,
                    updated_at: 0,
                };
                store::insert(c, &sub, 1000)?.unwrap();
            }
        }
        Ok(())
    })
    .unwrap();
    drop(db);

    let app = start_ready(&config).await;
    let http = app.addresses.http.unwrap();
    let r = post_json(
        http,
        "/api/v1/auth/login",
        &serde_json::json!({"username": "admin", "password": PW}).to_string(),
    )
    .await;
    let admin = r.json()["token"].as_str().unwrap().to_owned();

    // The cycle run at start (10 °C everywhere) must be fully evaluated first.
    let evaluated = |m: &str| metric(m, "meteomesh_rules_evaluation_duration_seconds_count");
    let settle = Instant::now() + Duration::from_secs(120);
    let mut base = get(http, "/metrics").await.body;
    while evaluated(&base) < PLACES as f64 {
        assert!(Instant::now() < settle, "start-up cycle not evaluated");
        tokio::time::sleep(Duration::from_millis(20)).await;
        base = get(http, "/metrics").await.body;
    }
    let (eval_before, count_before) = (
        metric(&base, "meteomesh_rules_evaluation_duration_seconds_sum"),
        evaluated(&base),
    );

    // (a) one cycle over 1,000 places, everything cold: every subscription raises.
    fake.set_temp(Some(2.0));
    let started = Instant::now();
    let r = api(http, "POST", "/api/v1/admin/weather/poll", Some(&admin), "").await;
    let fetch = started.elapsed();
    let report: Value = r.json();
    // Wait until the rules have evaluated all 1,000 observations.
    let deadline = Instant::now() + Duration::from_secs(120);
    let metrics = loop {
        let m = get(http, "/metrics").await.body;
        if evaluated(&m) >= count_before + PLACES as f64 {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "rules did not finish: report {report}, evaluated {}, observations {}, raised {}",
            metric(&m, "meteomesh_rules_evaluation_duration_seconds_count"),
            metric(&m, "meteomesh_weather_observations_total"),
            metric(&m, "meteomesh_alerts_raised_total")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let whole = started.elapsed();
    let eval_sum =
        metric(&metrics, "meteomesh_rules_evaluation_duration_seconds_sum") - eval_before;
    let raised = metric(&metrics, "meteomesh_alerts_raised_total");
    println!(
        "BENCH (a) subscriptions: {}, places: {}",
        USERS * PER_USER,
        report["places"]
    );
    println!(
        "BENCH (a) provider calls per cycle: {} (seed style, one per subscription: {})",
        report["provider_calls"],
        USERS * PER_USER
    );
    println!(
        "BENCH (a) fetch + publish of the cycle: {:.1} ms; cycle until every alert published: {:.1} ms",
        fetch.as_secs_f64() * 1e3,
        whole.as_secs_f64() * 1e3
    );
    println!(
        "BENCH (a) rule evaluation time per cycle (sum over the 1,000 places, without storage and bus): {:.2} ms; alerts raised: {raised}",
        eval_sum * 1e3
    );
    println!(
        "BENCH (a) peak RSS of the test process (server + harness): {:.1} MiB",
        vm_hwm_kib() as f64 / 1024.0
    );

    // (b) latency: a service account publishes observations for one place of a fresh
    // user; that user's MQTT client times each alert.
    let (token, uid) = register(http, "latency", PW).await;
    let sub = api(
        http,
        "POST",
        "/api/v1/subscriptions",
        Some(&token),
        r#"{"place": {"lat": 10.0, "lon": 10.0}, "min_temp": 5}"#,
    )
    .await;
    assert_eq!(sub.status, 201);
    let mut alerts = MqttClient::connect(mqtt_options(
        app.addresses.mqtt.unwrap(),
        "lat-sub",
        Some(("latency", &token)),
    ))
    .await;
    // Let the poller fetch the new place (two seconds after it appears) before timing,
    // so no fetched observation interleaves with the published ones.
    fake.set_temp(Some(20.0));
    alerts
        .subscribe(
            &format!("meteomesh/v1/users/{uid}/subscriptions/+/state"),
            QoS::AtLeastOnce,
        )
        .await;
    loop {
        let p = alerts.next_publish(|t| t.ends_with("/state")).await;
        let v: Value = serde_json::from_slice(&p.payload).unwrap();
        if !v["conditions"].is_null() {
            break;
        }
    }
    alerts
        .subscribe(
            &format!("meteomesh/v1/users/{uid}/alerts"),
            QoS::AtLeastOnce,
        )
        .await;
    let mut service = MqttClient::connect(mqtt_options(
        app.addresses.mqtt.unwrap(),
        "lat-pub",
        Some((SERVICE_USER, SERVICE_PASSWORD)),
    ))
    .await;
    let mut samples = Vec::with_capacity(1000);
    for i in 0..1000 {
        let temp = if i % 2 == 0 { 1.0 } else { 9.0 };
        let obs = WeatherObserved {
            cell_lat: 1000,
            cell_lon: 1000,
            provider: "bench".into(),
            // Now: an old reading would (rightly) decide nothing.
            received_at: jiff::Timestamp::now().as_second(),
            stretched_interval: 0,
            conditions: Conditions {
                temperature_c: Some(temp),
                ..Conditions::default()
            },
        };
        let payload = serde_json::to_vec(&obs).unwrap();
        let sent = Instant::now();
        service
            .publish(WEATHER_OBSERVED, QoS::AtLeastOnce, false, &payload)
            .await;
        let p = alerts.next_publish(|t| t.ends_with("/alerts")).await;
        samples.push(sent.elapsed());
        let v: Value = serde_json::from_slice(&p.payload).unwrap();
        assert_eq!(v["state"], if i % 2 == 0 { "raised" } else { "cleared" });
    }
    samples.sort();
    println!(
        "BENCH (b) observation -> alert at an MQTT subscriber over {} alerts: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3
    );
    app.shutdown().await.unwrap();
}

fn main() {
    common::run_benchmark(async {
        bench_alert_pipeline().await;
    });
}
