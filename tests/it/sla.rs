//! /metrics and the SLA manager: exposition parsed by a Prometheus text-format parser,
//! SLA CRUD (admins only), violation counts over 1/3/6 h, transitions on the bus and to
//! admins on Telegram, forecasts (and their refusal on short history), and the external
//! Prometheus mode against a fake Prometheus API.

use crate::common;

use std::time::Duration;

use common::fake_telegram::FakeTelegram;
use common::*;
use rumqttc::QoS;
use serde_json::{Value, json};

const PW: &str = "correct-horse-1";

async fn sla_app(edit: impl FnOnce(&mut meteomesh::config::Config)) -> TestApp {
    TestApp::start_with(|c| {
        c.sla.sample_interval = Duration::from_secs(1);
        c.sla.forecast_horizon = Duration::from_secs(10);
        c.sla.forecast_window = Duration::from_secs(3600);
        edit(c);
    })
    .await
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_hold_every_family() {
    let t = sla_app(|_| {}).await;
    register(t.http, "root", PW).await;
    // Wait for one host sample and one SLA cycle.
    let deadline = std::time::Instant::now() + WAIT;
    let text = loop {
        let text = get(t.http, "/metrics").await.body;
        if text.contains("meteomesh_process_resident_memory_bytes ")
            && text.contains("meteomesh_sla_sample_duration_seconds_count")
            && !text.contains("meteomesh_sla_sample_duration_seconds_count 0")
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no host sample:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let names: std::collections::HashSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for family in [
        "meteomesh_http_requests_total",
        "meteomesh_http_request_duration_seconds",
        "meteomesh_db_operations_total",
        "meteomesh_db_operation_duration_seconds",
        "meteomesh_users",
        "meteomesh_subscriptions",
        "meteomesh_alerts_raised_total",
        "meteomesh_outbox_pending",
        "meteomesh_bus_connections",
        "meteomesh_bus_messages_received_total",
        "meteomesh_bus_messages_delivered_total",
        "meteomesh_host_cpu_usage_ratio",
        "meteomesh_host_memory_used_bytes",
        "meteomesh_host_memory_total_bytes",
        "meteomesh_host_disk_used_bytes",
        "meteomesh_host_disk_total_bytes",
        "meteomesh_host_load_average",
        "meteomesh_process_resident_memory_bytes",
        "meteomesh_process_cpu_seconds_total",
        "meteomesh_process_open_fds",
        "meteomesh_process_threads",
        "meteomesh_uptime_seconds",
        "meteomesh_http_request_p95_seconds",
        "meteomesh_sla_evaluations_total",
    ] {
        assert!(names.contains(family), "{family} missing");
    }
    let value = |name: &str| match &scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .unwrap()
        .value
    {
        prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{name}: {other:?}"),
    };
    let cpu = value("meteomesh_host_cpu_usage_ratio");
    assert!((0.0..=1.0).contains(&cpu), "{cpu}");
    assert!(value("meteomesh_process_resident_memory_bytes") > 1e6);
    assert!(value("meteomesh_host_disk_total_bytes") >= value("meteomesh_host_disk_used_bytes"));
    assert!(value("meteomesh_process_threads") >= 2.0);
    assert!(value("meteomesh_process_open_fds") >= 3.0);
    assert_eq!(value("meteomesh_users"), 1.0);
    // No user ids in labels.
    assert!(!text.contains("user_id="));
    t.app.shutdown().await.unwrap();
}

/// An app that sends Telegram to a fake, and its first account (an admin) with the
/// Telegram chat `chat`: (fake, app, admin token).
async fn app_with_telegram_admin(chat: i64) -> (FakeTelegram, TestApp, String) {
    let tg = FakeTelegram::start().await;
    let t = sla_app(|c| tg.configure(c)).await;
    let r = post_json(
        t.http,
        "/api/v1/auth/register",
        &json!({"username": "root", "password": PW}).to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let admin = r.json()["token"].as_str().unwrap().to_owned();
    set_proven_chat(&t, r.json()["user"]["id"].as_i64().unwrap(), chat);
    (tg, t, admin)
}

async fn post_sla(t: &TestApp, token: &str, body: Value) -> Response {
    api(
        t.http,
        "POST",
        "/api/v1/sla",
        Some(token),
        &body.to_string(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sla_crud_is_for_admins_and_counts_violations_by_window() {
    let t = sla_app(|_| {}).await;
    let (admin, _) = register(t.http, "root", PW).await;
    let (user, _) = register(t.http, "alice", PW).await;
    let body = json!({"name": "rss", "selector": "meteomesh_process_resident_memory_bytes",
                      "desired_max": 1e12, "for": "1m"});
    let r = post_sla(&t, &user, body.clone()).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        api(t.http, "GET", "/api/v1/sla", Some(&user), "")
            .await
            .status,
        403
    );
    assert_eq!(
        api(t.http, "GET", "/api/v1/sla", None, "").await.status,
        401
    );
    let r = post_sla(&t, &admin, body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    assert_eq!(v["for_seconds"], 60);
    assert_eq!(v["state"]["violated"], false);
    // Adding an existing name updates it.
    let r = post_sla(
        &t,
        &admin,
        json!({"name": "rss", "selector": "meteomesh_process_resident_memory_bytes", "desired_max": 5e11}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["desired_max"], 5e11);
    let r = post_sla(&t, &admin, json!({"name": "x", "selector": "1bad"})).await;
    assert_eq!(r.status, 422, "{}", r.body);

    // Violations at injected times: 30 min, 2 h, 5 h and 7 h ago.
    let db = rusqlite::Connection::open(t.db_path()).unwrap();
    for ago in [1800, 7200, 18000, 25200] {
        db.execute(
            "INSERT INTO sla_violations (sla, value, at) VALUES ('rss', 1.0, ?1)",
            [now() - ago],
        )
        .unwrap();
    }
    let v = api(t.http, "GET", "/api/v1/sla/rss", Some(&admin), "")
        .await
        .json();
    assert_eq!(
        v["violations"],
        json!({"last_1h": 1, "last_3h": 2, "last_6h": 3})
    );
    let r = api(
        t.http,
        "GET",
        &format!("/api/v1/sla/rss/violations?since={}", now() - 8 * 3600),
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["violations"].as_array().unwrap().len(), 4);
    let list = api(t.http, "GET", "/api/v1/sla", Some(&admin), "")
        .await
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Removing deletes its violations too.
    let r = api(t.http, "DELETE", "/api/v1/sla/rss", Some(&admin), "").await;
    assert_eq!(r.status, 204);
    let left: i64 = db
        .query_row("SELECT count(*) FROM sla_violations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    assert_eq!(
        api(t.http, "GET", "/api/v1/sla/rss", Some(&admin), "")
            .await
            .status,
        404
    );
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_violation_publishes_one_event_and_notifies_admins_once() {
    let (tg, t, admin) = app_with_telegram_admin(999).await;
    let mut svc = t.service_client("svc-sla").await;
    svc.subscribe("meteomesh/v1/system/sla", QoS::AtLeastOnce)
        .await;
    // One user exists; at most zero are wanted.
    let r = post_sla(
        &t,
        &admin,
        json!({"name": "no-users", "selector": "meteomesh_users", "desired_max": 0}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let event: Value =
        serde_json::from_slice(&svc.next_publish(|t| t.ends_with("/sla")).await.payload).unwrap();
    assert_eq!(event["name"], "no-users");
    assert_eq!(event["state"], "violated");
    assert_eq!(event["value"], 1.0);
    tg.wait_until(WAIT, |s| s.sent.len() == 1).await;
    let sent = tg.sent();
    assert_eq!(sent[0].chat_id, 999);
    assert!(
        sent[0].text.starts_with(
            "🚨 <b>SLA violated</b>: no-users\n<code>meteomesh_users</code> = 1, desired at most 0"
        ),
        "{}",
        sent[0].text
    );
    // Three more evaluations while still violated: no new event, no new message, one
    // violation row per evaluation.
    let before = api(t.http, "GET", "/api/v1/sla/no-users", Some(&admin), "")
        .await
        .json();
    let start = before["violations"]["last_1h"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let v = api(t.http, "GET", "/api/v1/sla/no-users", Some(&admin), "")
            .await
            .json();
        if v["violations"]["last_1h"].as_i64().unwrap() >= start + 3 {
            assert_eq!(v["state"]["violated"], true);
            assert_eq!(v["state"]["value"], 1.0);
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let extra = tokio::time::timeout(
        Duration::from_millis(500),
        svc.next_publish(|t| t.ends_with("/sla")),
    )
    .await;
    assert!(extra.is_err(), "a second event while still violated");
    assert_eq!(tg.sent().len(), 1);
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecasts_need_history_and_then_report_steps_and_probability() {
    let t = sla_app(|_| {}).await;
    let (admin, _) = register(t.http, "root", PW).await;
    let r = post_sla(
        &t,
        &admin,
        json!({"name": "queue", "selector": "meteomesh_injected_depth", "desired_max": 60,
               "order": {"p": 1, "d": 0, "q": 0}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api(
        t.http,
        "GET",
        "/api/v1/sla/queue/forecast",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not enough history"),
        "{}",
        r.body
    );

    // 120 samples of an AR(1) around 50, injected one per sample interval.
    let db = rusqlite::Connection::open(t.db_path()).unwrap();
    // A series the app itself does not have, so only the injected samples exist.
    db.execute(
        "INSERT INTO metric_series (name) VALUES ('meteomesh_injected_depth')",
        [],
    )
    .unwrap();
    let id = db.last_insert_rowid();
    let (mut x, mut seed) = (0.0f64, 12345u64);
    for k in 0..120 {
        // A small deterministic LCG for the noise.
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let noise = ((seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 4.0;
        x = 0.7 * x + noise;
        db.execute(
            "INSERT OR REPLACE INTO metric_samples (series, at, value) VALUES (?1, ?2, ?3)",
            rusqlite::params![id, now() - 120 + k, 50.0 + x],
        )
        .unwrap();
    }
    let r = api(
        t.http,
        "GET",
        "/api/v1/sla/queue/forecast?horizon=10s",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let f = r.json();
    assert_eq!(f["order"], json!({"p": 1, "d": 0, "q": 0}));
    assert_eq!(f["history_points"], 120);
    // One step per sample interval (1 s here).
    assert_eq!(f["steps"].as_array().unwrap().len(), 10);
    let p = f["probability_within_horizon"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));
    let step = &f["steps"][0];
    assert!(
        (step["mean"].as_f64().unwrap() - 50.0).abs() < 5.0,
        "{step}"
    );
    assert!(step["se"].as_f64().unwrap() > 0.0);
    let r = api(
        t.http,
        "GET",
        "/api/v1/sla/queue/forecast?horizon=soon",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    t.app.shutdown().await.unwrap();
}

/// A fake Prometheus HTTP API: two series for `up{job="node"}`, 0.75 and 0.5 now, and a
/// gently rising history for ranges. Records the queries it was asked.
async fn fake_prometheus() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::extract::Query;
    use std::collections::HashMap;
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (a1, a2) = (asked.clone(), asked.clone());
    let app = axum::Router::new()
        .route(
            "/api/v1/query",
            axum::routing::get(move |Query(q): Query<HashMap<String, String>>| {
                let asked = a1.clone();
                async move {
                    let query = q.get("query").cloned().unwrap_or_default();
                    asked.lock().unwrap().push(format!("query {query}"));
                    let result = if query == r#"up{job="node"}"# {
                        json!([
                            {"metric": {"__name__": "up", "job": "node", "instance": "a"}, "value": [1795363200.0, "0.75"]},
                            {"metric": {"__name__": "up", "job": "node", "instance": "b"}, "value": [1795363200.0, "0.5"]}
                        ])
                    } else {
                        json!([])
                    };
                    axum::Json(json!({"status": "success", "data": {"resultType": "vector", "result": result}}))
                }
            }),
        )
        .route(
            "/api/v1/query_range",
            axum::routing::get(move |Query(q): Query<HashMap<String, String>>| {
                let asked = a2.clone();
                async move {
                    let start: i64 = q["start"].parse().unwrap();
                    let end: i64 = q["end"].parse().unwrap();
                    let step: i64 = q["step"].parse().unwrap();
                    asked.lock().unwrap().push(format!("range {} {step}", q["query"]));
                    let values: Vec<Value> = (0..)
                        .map(|k| start + k * step)
                        .take_while(|t| *t <= end)
                        .enumerate()
                        .map(|(k, t)| json!([t, format!("{}", 1.0 + 0.001 * k as f64 + 0.01 * ((k * 7919) % 13) as f64)]))
                        .collect();
                    axum::Json(json!({"status": "success", "data": {"resultType": "matrix",
                        "result": [{"metric": {"job": "node"}, "values": values}]}}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_prometheus_supplies_values_and_history() {
    let (url, asked) = fake_prometheus().await;
    let t = sla_app(|c| c.sla.prometheus_url = url).await;
    let (admin, _) = register(t.http, "root", PW).await;
    let r = post_sla(
        &t,
        &admin,
        json!({"name": "node-up", "selector": r#"up{job="node"}"#, "desired_max": 1,
               "order": {"p": 1, "d": 1, "q": 0}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let deadline = std::time::Instant::now() + WAIT;
    let v = loop {
        let v = api(t.http, "GET", "/api/v1/sla/node-up", Some(&admin), "")
            .await
            .json();
        if v["state"]["violated"] == true {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(v["state"]["value"], 1.25);
    let r = api(
        t.http,
        "GET",
        "/api/v1/sla/node-up/forecast",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let f = r.json();
    // The latest 500 of the hour of history at the 1 s step.
    assert_eq!(f["history_points"], 500, "{f}");
    assert_eq!(f["steps"].as_array().unwrap().len(), 10);
    let asked = asked.lock().unwrap().clone();
    assert!(
        asked.iter().any(|q| q == r#"query up{job="node"}"#),
        "{asked:?}"
    );
    assert!(
        asked.iter().any(|q| q == r#"range up{job="node"} 1"#),
        "{asked:?}"
    );
    // Nothing is stored locally in this mode.
    let db = rusqlite::Connection::open(t.db_path()).unwrap();
    let samples: i64 = db
        .query_row("SELECT count(*) FROM metric_samples", [], |r| r.get(0))
        .unwrap();
    assert_eq!(samples, 0);
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sla_client_subcommand_drives_the_api() {
    let t = sla_app(|_| {}).await;
    let (admin, _) = register(t.http, "root", PW).await;
    let (user, _) = register(t.http, "alice", PW).await;
    let url = format!("http://{}", t.http);
    let run = |args: &[&str], token: &str| {
        let out = tokio::task::block_in_place(|| {
            bin()
                .arg("sla")
                .args(args)
                .env("METEOMESH_URL", &url)
                .env("METEOMESH_TOKEN", token)
                .output()
                .unwrap()
        });
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = run(
        &[
            "add",
            "users",
            "--selector",
            "meteomesh_users",
            "--max",
            "0",
            "--for",
            "0s",
        ],
        &admin,
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("saved\nNAME"), "{out}");
    let (code, _, err) = run(
        &["add", "x", "--selector", "meteomesh_users", "--max", "1"],
        &user,
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("the server answered 403"), "{err}");
    let (code, _, err) = run(&["add", "x", "--selector", "1bad", "--max", "1"], &admin);
    assert_eq!(code, Some(1));
    assert!(err.contains("selector:"), "{err}");
    // Wait until the sampler has found the violation.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, out, _) = run(&["status", "users"], &admin);
        if out.contains("VIOLATED") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, out, _) = run(&["list"], &admin);
    assert_eq!(code, Some(0));
    let line = out.lines().nth(1).unwrap();
    assert!(
        line.starts_with("users") && line.contains("<= 0") && line.contains("VIOLATED"),
        "{out}"
    );
    let (code, out, _) = run(&["--json", "violations", "users"], &admin);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["counts"]["last_1h"].as_i64().unwrap() >= 1, "{v}");
    let (code, _, err) = run(&["forecast", "users"], &admin);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("409") && err.contains("not enough history"),
        "{err}"
    );
    let (code, out, _) = run(&["remove", "users"], &admin);
    assert_eq!((code, out.trim()), (Some(0), "removed"));
    let (code, _, err) = run(&["status", "users"], &admin);
    assert_eq!(code, Some(1));
    assert!(err.contains("404"), "{err}");
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_violation_is_announced_again_after_a_restart_without_duplicates() {
    let (tg, t, admin) = app_with_telegram_admin(777).await;
    let r = post_sla(
        &t,
        &admin,
        json!({"name": "no-users", "selector": "meteomesh_users", "desired_max": 0}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    tg.wait_until(WAIT, |s| s.sent.len() == 1).await;
    let config = t.config.clone();
    t.app.shutdown().await.unwrap();

    // The notice was lost (as if the process died between the commit and the bus).
    let db = rusqlite::Connection::open(&config.storage.path).unwrap();
    db.execute("DELETE FROM outbox WHERE key LIKE 'sla:%'", [])
        .unwrap();
    drop(db);
    let app = start_ready(&config).await;
    tg.wait_until(WAIT, |s| s.sent.len() == 2).await;
    let sent = tg.sent();
    assert_eq!(sent[1].chat_id, 777);
    assert_eq!(
        sent[0].text, sent[1].text,
        "the same notice, for the same transition"
    );
    app.shutdown().await.unwrap();

    // Restarted again with the notice on record: announced, but not sent twice.
    let app = start_ready(&config).await;
    let http = app.addresses.http.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = get(http, "/metrics").await.body;
        let evaluations = metric_value(&text, "meteomesh_sla_evaluations_total").unwrap_or(0.0);
        if evaluations >= 3.0 && metric_value(&text, "meteomesh_outbox_pending") == Some(0.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(tg.sent().len(), 2);
    app.shutdown().await.unwrap();
}
