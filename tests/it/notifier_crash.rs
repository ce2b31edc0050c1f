//! Crash safety of the outbox with the real binary: 200 alerts queued while Telegram
//! hangs, the process killed (SIGKILL) or stopped (SIGTERM), restarted with Telegram
//! answering — every alert arrives; duplicates only after SIGKILL and at most the
//! in-flight window.

use crate::common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::fake_telegram::{self, FakeTelegram};
use common::*;
use rumqttc::QoS;
use serde_json::json;

const ALERTS: u32 = 200;
const USERS: u32 = 20;
const IN_FLIGHT: usize = 4;

fn config(dir: &Path, tg: &FakeTelegram) -> std::path::PathBuf {
    write_test_config(
        dir,
        &format!(
            "\n[telegram]\nbot_token = \"{}\"\napi_base = \"{}\"\nrequest_timeout = \"2s\"\nmax_backoff = \"1s\"\nper_chat_interval = \"0s\"\nmessages_per_second = 1000\nmax_in_flight = {IN_FLIGHT}\n",
            fake_telegram::TOKEN,
            tg.url()
        ),
    )
}

fn start(dir: &Path, config: &Path) -> ServeProcess {
    tokio::task::block_in_place(|| {
        ServeProcess::start(dir, &["--config", config.to_str().unwrap()], &[])
    })
}

async fn metric(p: &ServeProcess, series: &str) -> f64 {
    metric_value(&get(p.http, "/metrics").await.body, series).unwrap_or(0.0)
}

/// Registers the users and publishes the alerts on the bus; returns once all are in the
/// outbox.
async fn queue_alerts(p: &ServeProcess) {
    // The administrator creates the accounts with their chats (an administrator's word
    // proves a chat; a chat a user types in must confirm a code first).
    let r = post_json(
        p.http,
        "/api/v1/auth/register",
        &json!({"username": "root", "password": "correct-horse-1"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let admin = r.json()["token"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for i in 0..USERS {
        let r = api(
            p.http,
            "POST",
            "/api/v1/admin/users",
            Some(&admin),
            &json!({"username": format!("user{i}"), "password": "correct-horse-1",
                    "telegram_chat_id": 1000 + i})
            .to_string(),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push(r.json()["id"].as_i64().unwrap());
    }
    let mut svc = MqttClient::connect(mqtt_options(
        p.mqtt.unwrap(),
        "svc-crash",
        Some((SERVICE_USER, SERVICE_PASSWORD)),
    ))
    .await;
    for n in 0..ALERTS {
        let user = ids[(n % USERS) as usize];
        let event = json!({
            "id": format!("{n}-too_cold-1795363200000"), "user_id": user, "subscription_id": n,
            "label": format!("alert {n}"), "place": "Catania", "constraint": "too_cold",
            "state": "raised", "value": 1.5, "threshold_c": 3.0, "weather_code": 3,
            "started_at": "2026-11-22T13:05:00Z", "at": "2026-11-22T13:05:00Z", "notify": true
        });
        svc.publish(
            &format!("meteomesh/v1/users/{user}/alerts"),
            QoS::AtLeastOnce,
            false,
            event.to_string().as_bytes(),
        )
        .await;
    }
    let deadline = std::time::Instant::now() + WAIT;
    while metric(p, "meteomesh_outbox_pending").await < f64::from(ALERTS) {
        assert!(std::time::Instant::now() < deadline, "alerts not queued");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every alert reached the fake; returns the number of duplicates.
async fn delivered_with_duplicates(tg: &FakeTelegram) -> usize {
    tg.wait_until(Duration::from_secs(60), |s| {
        s.sent.iter().map(|m| &m.text).collect::<HashSet<_>>().len() == ALERTS as usize
    })
    .await;
    let sent = tg.sent();
    let distinct: HashSet<&String> = sent.iter().map(|m| &m.text).collect();
    assert_eq!(distinct.len(), ALERTS as usize, "lost alerts");
    sent.len() - distinct.len()
}

/// A running binary with the 200 alerts in its outbox while Telegram hangs.
struct Outage {
    tg: FakeTelegram,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    p: ServeProcess,
}

async fn outage() -> Outage {
    let tg = FakeTelegram::start().await;
    tg.set_hang(true);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &tg);
    let p = start(dir.path(), &config);
    queue_alerts(&p).await;
    Outage { tg, dir, config, p }
}

/// Restarts the binary on the same database with Telegram answering, waits until every
/// alert arrived, stops it cleanly; returns the number of duplicates.
async fn restart_and_count_duplicates(dir: &Path, config: &Path, tg: &FakeTelegram) -> usize {
    tg.set_hang(false);
    let p = start(dir, config);
    let duplicates = delivered_with_duplicates(tg).await;
    let (status, _) = tokio::task::block_in_place(|| p.terminate());
    assert!(status.success());
    duplicates
}

/// Kills the process without warning.
fn sigkill(mut p: ServeProcess) {
    p.child.kill().unwrap();
    wait_child(&mut p.child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_telegram_hangs_loses_nothing() {
    let Outage { tg, dir, config, p } = outage().await;
    tg.wait_until(WAIT, |s| s.attempts.len() >= IN_FLIGHT).await;
    sigkill(p);
    let duplicates = restart_and_count_duplicates(dir.path(), &config, &tg).await;
    eprintln!("SIGKILL while hanging: {ALERTS} delivered, 0 lost, {duplicates} duplicates");
    assert!(duplicates <= IN_FLIGHT, "{duplicates} duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_delivery_resends_at_most_the_in_flight_window() {
    let Outage { tg, dir, config, p } = outage().await;
    // Telegram takes each message at once but answers late; kill in the middle.
    tg.lock().answer_delay = Some(Duration::from_millis(300));
    tg.set_hang(false);
    tg.wait_until(Duration::from_secs(60), |s| s.sent.len() >= 40)
        .await;
    sigkill(p);
    tg.lock().answer_delay = None;
    let duplicates = restart_and_count_duplicates(dir.path(), &config, &tg).await;
    eprintln!("SIGKILL mid-delivery: {ALERTS} delivered, 0 lost, {duplicates} duplicates");
    assert!(duplicates <= IN_FLIGHT, "{duplicates} duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_telegram_hangs_loses_and_repeats_nothing() {
    let Outage { tg, dir, config, p } = outage().await;
    tg.wait_until(WAIT, |s| s.attempts.len() >= IN_FLIGHT).await;
    let (status, _) = tokio::task::block_in_place(|| p.terminate());
    assert!(status.success(), "{status:?}");
    let duplicates = restart_and_count_duplicates(dir.path(), &config, &tg).await;
    eprintln!("SIGTERM while hanging: {ALERTS} delivered, 0 lost, {duplicates} duplicates");
    assert_eq!(duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_token_never_reaches_the_log_even_at_trace_level() {
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &tg);
    let p = tokio::task::block_in_place(|| {
        ServeProcess::start(
            dir.path(),
            &["--config", config.to_str().unwrap(), "--log-level", "trace"],
            &[],
        )
    });
    let r = post_json(
        p.http,
        "/api/v1/auth/register",
        &json!({"username": "alice", "password": "correct-horse-1", "telegram_chat_id": 5})
            .to_string(),
    )
    .await;
    let token = r.json()["token"].as_str().unwrap().to_owned();
    // The chat proves itself with the code the bot sent it, then gets a test message.
    tg.wait_until(WAIT, |s| s.sent.len() == 1).await;
    let code = tg.code_sent_to(5);
    assert_eq!(confirm_chat(p.http, &token, &code).await.status, 204);
    let r = api(p.http, "POST", "/api/v1/me/telegram/test", Some(&token), "").await;
    assert_eq!(r.status, 202, "{}", r.body);
    tg.wait_until(WAIT, |s| s.sent.len() == 2).await;
    let out = tokio::task::block_in_place(|| {
        bin()
            .args(["print-config", "--config", config.to_str().unwrap()])
            .output()
            .unwrap()
    });
    let (status, log) = tokio::task::block_in_place(|| p.terminate());
    assert!(status.success());
    let secret = fake_telegram::TOKEN.split_once(':').unwrap().1;
    assert!(log.len() > 10, "trace log too short: {log:?}");
    let leaks: Vec<&String> = log.iter().filter(|l| l.contains(secret)).collect();
    assert!(leaks.is_empty(), "token in the log: {leaks:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
}
