//! Notifier benchmark (`cargo bench --bench bench_notify`; `scripts/bench-notify.sh` runs it
//! in release mode), everything on 127.0.0.1 with a fake Bot API and rate limits off:
//! (a) alerts/s from the bus through the outbox to Telegram, against a peer that sends
//!     the same messages straight to the fake with no outbox (same 4 connections);
//! (b) recovery: 10,000 pending outbox rows at start — time to ready, to the first and
//!     to the last delivery.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::fake_telegram::{self, FakeTelegram};
use common::*;
use meteomesh::domain::user::Role;
use meteomesh::storage::Db;
use meteomesh::storage::notify::{self, NewDelivery, OutboxKind};
use meteomesh::storage::users::{self, NewUser};
use rumqttc::QoS;
use serde_json::json;

const USERS: i64 = 100;
const MESSAGES: usize = 10_000;
const IN_FLIGHT: usize = 4;

fn event(user_id: i64, n: usize) -> serde_json::Value {
    json!({
        "id": format!("{n}-too_cold-1795363200000"), "user_id": user_id, "subscription_id": n,
        "label": format!("alert {n}"), "place": "Catania", "constraint": "too_cold",
        "state": "raised", "value": 1.5, "threshold_c": 3.0, "weather_code": 3,
        "started_at": "2026-11-22T13:05:00Z", "at": "2026-11-22T13:05:00Z", "notify": true
    })
}

fn configure(dir: &std::path::Path, tg: &FakeTelegram) -> meteomesh::config::Config {
    let mut c = test_config(dir);
    tg.configure(&mut c);
    c.telegram.per_chat_interval = Duration::ZERO;
    c.telegram.messages_per_second = 1_000_000;
    c.telegram.max_in_flight = IN_FLIGHT;
    c
}

async fn users_with_chats(config: &meteomesh::config::Config) -> Vec<i64> {
    let app = start_ready(config).await;
    app.shutdown().await.unwrap();
    let db = Db::open(&config.storage.path, Duration::from_secs(5))
        .await
        .unwrap();
    with_connection(db.path(), |c| {
        let mut ids = Vec::new();
        for u in 0..USERS {
            let user = users::insert(
                c,
                &NewUser {
                    username: &format!("user{u}"),
                    password_hash: "unused",
                    telegram_chat_id: Some(10_000 + u),
                    telegram_chat_confirmed: true,
                    role: Role::User,
                    timezone: "UTC",
                    now: 0,
                },
            )?
            .unwrap();
            ids.push(user.id);
        }
        Ok(ids)
    })
    .unwrap()
}

/// The peer: the same messages sent straight to the fake, 4 connections, no outbox.
fn direct_send(tg: &FakeTelegram) -> Duration {
    let url = format!("{}/bot{}/sendMessage", tg.url(), fake_telegram::TOKEN);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..IN_FLIGHT {
            let url = url.clone();
            s.spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                for n in (t..MESSAGES).step_by(IN_FLIGHT) {
                    let body =
                        json!({"chat_id": 1, "text": format!("direct {n}"), "parse_mode": "HTML"});
                    agent
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .send(body.to_string().as_bytes())
                        .unwrap()
                        .body_mut()
                        .read_to_string()
                        .unwrap();
                }
            });
        }
    });
    started.elapsed()
}

async fn bench_notifier() {
    let tg = FakeTelegram::start().await;

    // Peer first, so the fake's bookkeeping is warm for both.
    let peer = tokio::task::spawn_blocking({
        let tg = tg.clone();
        move || direct_send(&tg)
    })
    .await
    .unwrap();
    tg.lock().sent.clear();
    tg.lock().attempts.clear();
    println!(
        "BENCH peer (direct sendMessage, {IN_FLIGHT} connections, no outbox): {MESSAGES} in {:.2} s = {:.0} msg/s",
        peer.as_secs_f64(),
        MESSAGES as f64 / peer.as_secs_f64()
    );

    // (a) bus -> outbox -> Telegram.
    let dir = tempfile::tempdir().unwrap();
    let config = configure(dir.path(), &tg);
    let ids = users_with_chats(&config).await;
    let app = start_ready(&config).await;
    let mut svc = MqttClient::connect(mqtt_options(
        app.addresses.mqtt.unwrap(),
        "bench-notify",
        Some((SERVICE_USER, SERVICE_PASSWORD)),
    ))
    .await;
    let started = Instant::now();
    for n in 0..MESSAGES {
        let user = ids[n % ids.len()];
        svc.publish(
            &format!("meteomesh/v1/users/{user}/alerts"),
            QoS::AtLeastOnce,
            false,
            event(user, n).to_string().as_bytes(),
        )
        .await;
    }
    let published = started.elapsed();
    tg.wait_until(Duration::from_secs(600), |s| s.sent.len() >= MESSAGES)
        .await;
    let through = started.elapsed();
    println!(
        "BENCH outbox (bus -> SQLite outbox -> sendMessage, {IN_FLIGHT} in flight): {MESSAGES} alerts in {:.2} s = {:.0} alerts/s (publishing took {:.2} s); ratio to peer {:.2}",
        through.as_secs_f64(),
        MESSAGES as f64 / through.as_secs_f64(),
        published.as_secs_f64(),
        peer.as_secs_f64() / through.as_secs_f64()
    );
    app.shutdown().await.unwrap();

    // (b) 10,000 pending rows at start.
    let db = Db::open(&config.storage.path, Duration::from_secs(5))
        .await
        .unwrap();
    let now = jiff::Timestamp::now().as_millisecond();
    let rows: Vec<NewDelivery> = (0..MESSAGES)
        .map(|n| {
            let user = ids[n % ids.len()];
            NewDelivery {
                key: format!("recovery-{n}"),
                kind: OutboxKind::Alert,
                user_id: Some(user),
                chat_id: None,
                payload: event(user, n).to_string(),
                batched: false,
                not_before: now,
                created_at: now,
            }
        })
        .collect();
    with_connection(db.path(), move |c| notify::enqueue(c, &rows, &[])).unwrap();
    drop(db);
    tg.lock().sent.clear();
    let started = Instant::now();
    let app = start_ready(&config).await;
    let ready = started.elapsed();
    tg.wait_until(Duration::from_secs(60), |s| !s.sent.is_empty())
        .await;
    let first = started.elapsed();
    tg.wait_until(Duration::from_secs(600), |s| s.sent.len() >= MESSAGES)
        .await;
    let all = started.elapsed();
    println!(
        "BENCH recovery of {MESSAGES} pending rows: ready {:.0} ms, first delivery {:.0} ms, all delivered {:.2} s",
        ready.as_secs_f64() * 1000.0,
        first.as_secs_f64() * 1000.0,
        all.as_secs_f64()
    );
    app.shutdown().await.unwrap();
}

fn main() {
    common::run_benchmark(async {
        bench_notifier().await;
    });
}
