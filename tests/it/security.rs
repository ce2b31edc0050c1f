//! Security properties of the HTTP gateway and the process as a whole: who may call
//! which endpoint (the table in docs/security.md), secrets kept out of logs, security
//! headers, and limits on slow or idle connections.

use crate::common;

use std::time::Duration;

use common::fake_telegram::{self, FakeTelegram};
use common::fake_weather::FakeWeather;
use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PW: &str = "correct-horse-1";

/// (method, path, JSON body) of every API endpoint that needs a login.
const USER_ENDPOINTS: &[(&str, &str, &str)] = &[
    ("POST", "/api/v1/auth/logout", ""),
    ("GET", "/api/v1/me", ""),
    ("PATCH", "/api/v1/me", r#"{"timezone":"UTC"}"#),
    ("DELETE", "/api/v1/me", ""),
    ("GET", "/api/v1/me/notifications", ""),
    ("PUT", "/api/v1/me/notifications", r#"{"mode":"immediate"}"#),
    ("GET", "/api/v1/me/deliveries", ""),
    ("POST", "/api/v1/me/telegram/test", ""),
    ("POST", "/api/v1/me/telegram/link", ""),
    ("GET", "/api/v1/places/search?q=Rome", ""),
    ("GET", "/api/v1/subscriptions", ""),
    (
        "POST",
        "/api/v1/subscriptions",
        r#"{"place":{"lat":1,"lon":1},"max_temp":20}"#,
    ),
    ("GET", "/api/v1/subscriptions/1", ""),
    (
        "PUT",
        "/api/v1/subscriptions/1",
        r#"{"place":{"lat":1,"lon":1},"max_temp":20}"#,
    ),
    ("DELETE", "/api/v1/subscriptions/1", ""),
    ("POST", "/api/v1/messages", r#"{"to":"bob","body":"hi"}"#),
    ("GET", "/api/v1/users/online", ""),
    ("GET", "/api/v1/mesh", ""),
];

/// Endpoints for admins only (a login is needed first).
const ADMIN_ENDPOINTS: &[(&str, &str, &str)] = &[
    ("GET", "/api/v1/admin/users", ""),
    (
        "POST",
        "/api/v1/admin/users",
        r#"{"username":"mallory","password":"correct-horse-9"}"#,
    ),
    ("DELETE", "/api/v1/admin/users/1", ""),
    ("PUT", "/api/v1/admin/users/1/role", r#"{"role":"user"}"#),
    ("POST", "/api/v1/admin/weather/poll", ""),
    ("GET", "/api/v1/sla", ""),
    (
        "POST",
        "/api/v1/sla",
        r#"{"name":"x","metric":"meteomesh_up","op":"<","threshold":1}"#,
    ),
    ("GET", "/api/v1/sla/x", ""),
    ("DELETE", "/api/v1/sla/x", ""),
    ("GET", "/api/v1/sla/x/violations", ""),
    ("GET", "/api/v1/sla/x/forecast", ""),
];

/// Pages that need a session: without one they send the browser to /login.
const SESSION_PAGES: &[&str] = &["/", "/account", "/alerts", "/sla", "/board/main", "/mesh"];

/// Pages and ops endpoints anyone may fetch.
const PUBLIC_GETS: &[&str] = &[
    "/login",
    "/register",
    "/healthz",
    "/readyz",
    "/metrics",
    "/static/style.css",
    "/static/board.js",
    "/static/icon.svg",
    "/favicon.ico",
];

fn assert_code(r: &Response, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    assert_eq!(r.json()["error"]["code"], code, "{what}: {}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_enforces_who_may_call_it() {
    let t = TestApp::start().await;
    let (admin, _) = register(t.http, "root", PW).await;
    let (alice, _) = register(t.http, "alice", PW).await;
    let (bob, bob_id) = register(t.http, "bob", PW).await;

    for &(method, path, body) in USER_ENDPOINTS.iter().chain(ADMIN_ENDPOINTS) {
        let what = format!("anonymous {method} {path}");
        let r = api(t.http, method, path, None, body).await;
        assert_code(&r, 401, "unauthorized", &what);
        let what = format!("forged token {method} {path}");
        let r = api(
            t.http,
            method,
            path,
            Some("eyJhbGciOiJIUzI1NiJ9.e30.x"),
            body,
        )
        .await;
        assert_code(&r, 401, "unauthorized", &what);
    }
    for &(method, path, body) in ADMIN_ENDPOINTS {
        let r = api(t.http, method, path, Some(&alice), body).await;
        assert_code(&r, 403, "forbidden", &format!("user {method} {path}"));
    }
    // The admin gets past the authorization check on each (the answer is then about the
    // request itself: 2xx, 404 for a missing SLA, 422 for fields).
    for &(method, path, body) in ADMIN_ENDPOINTS {
        if method == "DELETE" && path.starts_with("/api/v1/admin/users/") {
            continue; // would delete the admin; checked with bob below
        }
        let r = api(t.http, method, path, Some(&admin), body).await;
        assert!(
            ![401, 403].contains(&r.status),
            "admin {method} {path}: {} {}",
            r.status,
            r.body
        );
    }

    // A user's subscription is invisible to another user: 404, never 403 (no probing).
    let r = post_subscription(
        t.http,
        &alice,
        r#"{"place":{"lat":45,"lon":9},"max_temp":30}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_i64().unwrap();
    let path = format!("/api/v1/subscriptions/{id}");
    let replacement = r#"{"place":{"lat":1,"lon":1},"max_temp":1}"#;
    for (method, body) in [("GET", ""), ("PUT", replacement), ("DELETE", "")] {
        let r = api(t.http, method, &path, Some(&bob), body).await;
        assert_code(&r, 404, "not_found", &format!("bob {method} {path}"));
    }
    let r = api(t.http, "GET", "/api/v1/subscriptions", Some(&bob), "").await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(0), "{}", r.body);
    let r = api(t.http, "GET", &path, Some(&alice), "").await;
    assert_eq!(r.json()["max_temp"], 30.0, "{}", r.body);

    // Only an admin changes roles, and a user cannot make themselves one.
    let role_path = format!("/api/v1/admin/users/{bob_id}/role");
    let r = api(t.http, "PUT", &role_path, Some(&bob), r#"{"role":"admin"}"#).await;
    assert_code(&r, 403, "forbidden", "bob promotes himself");
    let r = api(t.http, "GET", "/api/v1/me", Some(&bob), "").await;
    assert_eq!(r.json()["role"], "user", "{}", r.body);
    let r = api(
        t.http,
        "DELETE",
        &format!("/api/v1/admin/users/{bob_id}"),
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);

    for page in SESSION_PAGES {
        let r = get(t.http, page).await;
        assert_eq!(r.status, 303, "anonymous {page}: {}", r.body);
        assert_eq!(r.header("location").as_deref(), Some("/login"), "{page}");
    }
    let session = format!("meteomesh_session={alice}");
    let r = request(t.http, "GET", "/sla", &[("Cookie", session.as_str())], b"").await;
    assert_eq!(r.status, 403, "user on /sla: {}", r.body);
    for path in PUBLIC_GETS {
        assert_eq!(get(t.http, path).await.status, 200, "anonymous {path}");
    }
}

/// Every route the router serves appears in docs/security.md, and every test that table
/// names exists in tests/.
#[test]
fn the_security_table_covers_every_route_and_names_real_tests() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/security.md")).unwrap();
    let router = std::fs::read_to_string(format!("{root}/src/http/mod.rs")).unwrap();
    let mut routes = 0;
    for line in router.lines() {
        let Some(rest) = line.trim().strip_prefix(".route(\"") else {
            continue;
        };
        let path = rest.split('"').next().unwrap();
        routes += 1;
        assert!(
            doc.contains(&format!("`{path}`")) || doc.contains(&format!(" {path}`")),
            "route {path} is missing from docs/security.md"
        );
    }
    assert!(routes > 30, "found only {routes} routes in src/http/mod.rs");

    let mut sources = String::new();
    for entry in std::fs::read_dir(format!("{root}/tests/it")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            sources.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    let mut named = 0;
    for line in doc.lines().filter(|l| l.starts_with('|')) {
        let Some(cell) = line.trim_end_matches('|').rsplit('|').next() else {
            continue;
        };
        for test in cell.split('`').skip(1).step_by(2) {
            let name = test.rsplit("::").next().unwrap();
            named += 1;
            assert!(
                sources.contains(&format!("fn {name}(")),
                "docs/security.md names `{test}`, which is not a test in tests/it/"
            );
        }
    }
    assert!(named > 10, "docs/security.md names only {named} tests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_api_answers_carry_security_headers() {
    let t = TestApp::start().await;
    let (token, _) = register(t.http, "alice", PW).await;
    let session = format!("meteomesh_session={token}");
    for path in ["/login", "/register", "/account", "/alerts", "/board/main"] {
        let r = request(t.http, "GET", path, &[("Cookie", session.as_str())], b"").await;
        assert!(r.status == 200 || r.status == 303, "{path}: {}", r.status);
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(
            r.header("x-frame-options").as_deref(),
            Some("DENY"),
            "{path}"
        );
        assert_eq!(
            r.header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            r.header("referrer-policy").as_deref(),
            Some("same-origin"),
            "{path}"
        );
        assert_eq!(
            r.header("cache-control").as_deref(),
            Some("no-store"),
            "{path}"
        );
    }
    for path in ["/api/v1/me", "/metrics", "/healthz", "/api/v1/nothing"] {
        let r = api(t.http, "GET", path, Some(&token), "").await;
        assert_eq!(
            r.header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
    }
}

/// Reads until the server closes the connection; `None` if it stays open past `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut got)).await;
    match read {
        Ok(_) => Some(got),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_senders_and_idle_connections_are_closed() {
    let t = TestApp::start_with(|c| c.http.header_timeout = Duration::from_secs(1)).await;

    // Slowloris: a header line trickles in a byte at a time and never ends.
    let mut slow = TcpStream::connect(t.http).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let trickle = async {
        loop {
            if slow.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // The connection must end (writes fail or reads see EOF) within the header deadline
    // plus slack; the trickle alone would go on for ever.
    tokio::time::timeout(WAIT, trickle)
        .await
        .expect("a client trickling header bytes was never disconnected");

    // A connection that sends nothing is closed too.
    let mut idle = TcpStream::connect(t.http).await.unwrap();
    assert!(
        closed_within(&mut idle, WAIT).await.is_some(),
        "an idle connection stayed open"
    );

    // Keep-alive: after one answer, an idle kept-alive connection is closed.
    let mut kept = TcpStream::connect(t.http).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_within(&mut kept, WAIT)
        .await
        .expect("idle keep-alive connection stayed open");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The server still answers normally.
    assert_eq!(get(t.http, "/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_bodies_time_out() {
    let t = TestApp::start_with(|c| c.http.request_timeout = Duration::from_secs(1)).await;
    let mut s = TcpStream::connect(t.http).await.unwrap();
    // Headers complete, body promised but only partly sent.
    s.write_all(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user",
    )
    .await
    .unwrap();
    let mut got = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, s.read(&mut got))
        .await
        .expect("a request with a stalled body was never answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&got[..n]);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains(r#""code":"unavailable""#), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_for_a_free_slot() {
    let t = TestApp::start_with(|c| {
        c.http.max_connections = 2;
        c.http.header_timeout = Duration::from_secs(120);
    })
    .await;
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(t.http).await.unwrap();
        // A complete request proves the server has taken the connection (it holds a slot).
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        holders.push(s);
    }
    let third = tokio::spawn(async move { get(t.http, "/healthz").await.status });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served while two held both slots"
    );
    drop(holders.pop());
    let status = tokio::time::timeout(WAIT, third)
        .await
        .expect("the waiting client was never served")
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_secrets_never_reach_the_log_at_trace_level() {
    const JWT_SECRET: &str = "jwt-secret-3d1f6a0b9c8e7d6f5a4b3c2d1e0f9a8b";
    const OWM_KEY: &str = "owm-key-5f4e3d2c1b0a";
    let tg = FakeTelegram::start().await;
    let weather = FakeWeather::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_test_config(
        dir.path(),
        &format!(
            "\n[telegram]\nbot_token = \"{}\"\napi_base = \"{}\"\n",
            fake_telegram::TOKEN,
            tg.url()
        ),
    );
    let weather_url = weather.url();
    let p = tokio::task::block_in_place(|| {
        ServeProcess::start(
            dir.path(),
            &["--config", config.to_str().unwrap(), "--log-level", "trace"],
            &[
                ("METEOMESH__AUTH__JWT_SECRET", JWT_SECRET),
                ("METEOMESH__WEATHER__PROVIDER", "openweathermap"),
                ("METEOMESH__WEATHER__OPENWEATHERMAP_API_KEY", OWM_KEY),
                ("METEOMESH__WEATHER__OPENWEATHERMAP_URL", &weather_url),
            ],
        )
    });
    // A user password goes through registration, login and an MQTT login.
    let r = post_json(
        p.http,
        "/api/v1/auth/register",
        &json!({"username": "alice", "password": PW, "telegram_chat_id": 5}).to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let r = post_json(
        p.http,
        "/api/v1/auth/login",
        &json!({"username": "alice", "password": PW}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut c = MqttClient::connect(mqtt_options(
        p.mqtt.unwrap(),
        "alice-1",
        Some(("alice", PW)),
    ))
    .await;
    let id = r.json()["user"]["id"].as_i64().unwrap();
    c.subscribe(
        &format!("meteomesh/v1/users/{id}/#"),
        rumqttc::QoS::AtLeastOnce,
    )
    .await;
    // A bus account's password goes through an MQTT login.
    let _svc = MqttClient::connect(mqtt_options(
        p.mqtt.unwrap(),
        "svc-1",
        Some((SERVICE_USER, SERVICE_PASSWORD)),
    ))
    .await;
    // The OpenWeatherMap key travels in the query string of every poll.
    let r = post_subscription(
        p.http,
        &token,
        r#"{"place":{"lat":45,"lon":9},"max_temp":30}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    poll_weather(p.http, &token).await;
    assert!(
        weather.requests().iter().any(|q| q.contains(OWM_KEY)),
        "the poll never reached the fake provider: {:?}",
        weather.requests()
    );
    // The bot token is in the path of every Bot API call.
    // The chat proves itself with the code the bot sent it, then gets a test message.
    tg.wait_until(WAIT, |s| s.sent.len() == 1).await;
    let code = tg.code_sent_to(5);
    assert_eq!(confirm_chat(p.http, &token, &code).await.status, 204);
    let r = api(p.http, "POST", "/api/v1/me/telegram/test", Some(&token), "").await;
    assert_eq!(r.status, 202, "{}", r.body);
    tg.wait_until(WAIT, |s| s.sent.len() == 2).await;
    let printed = tokio::task::block_in_place(|| {
        bin()
            .args(["print-config", "--config", config.to_str().unwrap()])
            .env("METEOMESH__AUTH__JWT_SECRET", JWT_SECRET)
            .output()
            .unwrap()
    });
    assert!(printed.status.success());
    let mut log = p.startup_log.clone();
    let (status, rest) = tokio::task::block_in_place(|| p.terminate());
    assert!(status.success());
    log.extend(rest);
    assert!(
        log.iter().any(|l| l.contains(" TRACE ")),
        "not a trace-level log: {log:?}"
    );
    let bot_secret = fake_telegram::TOKEN.split_once(':').unwrap().1;
    let printed = String::from_utf8_lossy(&printed.stdout);
    for secret in [
        JWT_SECRET,
        OWM_KEY,
        bot_secret,
        PW,
        SERVICE_PASSWORD,
        token.as_str(),
    ] {
        let leaks: Vec<&String> = log.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "a secret in the log: {leaks:?}");
        assert!(!printed.contains(secret), "print-config shows {secret}");
    }
}
