//! The notifier against a fake Telegram Bot API on 127.0.0.1: exact text, rate limits,
//! 429/5xx handling, refused chats, digests, quiet hours, test messages, linking.
//! Alerts are injected on the bus by a service account (the rules' own path is covered
//! end to end by `alert_from_the_weather_reaches_telegram`).

use crate::common;

use std::time::{Duration, Instant};

use common::fake_telegram::{self, FakeTelegram, Forced};
use common::fake_weather::FakeWeather;
use common::*;
use rumqttc::QoS;
use serde_json::{Value, json};

const PW: &str = "correct-horse-1";

async fn app_with(tg: &FakeTelegram, edit: impl FnOnce(&mut meteomesh::config::Config)) -> TestApp {
    TestApp::start_with(|c| {
        tg.configure(c);
        c.telegram.request_timeout = Duration::from_secs(2);
        c.telegram.max_backoff = Duration::from_secs(2);
        c.telegram.per_chat_interval = Duration::ZERO;
        c.telegram.messages_per_second = 1000;
        edit(c);
    })
    .await
}

/// Registers a user whose Telegram chat is already proven (as when an administrator set
/// it); returns (token, id). Proving a chat is tested on its own
/// (`messages_go_only_to_a_chat_that_proved_it_belongs_to_the_account`).
async fn user(t: &TestApp, name: &str, chat: Option<i64>) -> (String, i64) {
    let (token, id) = register(t.http, name, PW).await;
    if let Some(chat) = chat {
        set_proven_chat(t, id, chat);
    }
    (token, id)
}

/// An alert event as the rules publish it; `n` makes it unique.
fn alert(user_id: i64, n: u32, label: &str) -> Value {
    json!({
        "id": format!("{n}-too_cold-1795363200000"), "user_id": user_id, "subscription_id": n,
        "label": label, "place": "Catania", "constraint": "too_cold", "state": "raised",
        "value": 1.5, "threshold_c": 3.0, "weather_code": 3,
        "started_at": "2026-11-22T13:05:00Z", "at": "2026-11-22T13:05:00Z", "notify": true
    })
}

async fn publish(svc: &mut MqttClient, events: &[Value]) {
    for e in events {
        let topic = format!("meteomesh/v1/users/{}/alerts", e["user_id"]);
        svc.publish(&topic, QoS::AtLeastOnce, false, e.to_string().as_bytes())
            .await;
    }
}

async fn settings(t: &TestApp, token: &str) -> Value {
    let r = api(t.http, "GET", "/api/v1/me/notifications", Some(token), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

async fn put_settings(t: &TestApp, token: &str, body: Value) -> Value {
    let r = api(
        t.http,
        "PUT",
        "/api/v1/me/notifications",
        Some(token),
        &body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// The value of one metric line (exact name with labels).
async fn metric(t: &TestApp, series: &str) -> f64 {
    metric_value(&get(t.http, "/metrics").await.body, series).unwrap_or(0.0)
}

async fn wait_metric(t: &TestApp, series: &str, want: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = metric(t, series).await;
        if v == want {
            return;
        }
        assert!(Instant::now() < deadline, "{series} is {v}, want {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_from_the_weather_reaches_telegram() {
    let tg = FakeTelegram::start().await;
    let weather = FakeWeather::start().await;
    weather.set_temp(Some(1.5));
    let wurl = weather.url();
    let t = app_with(&tg, |c| {
        c.weather.open_meteo_url = wurl.clone();
        c.weather.geocoding_url = wurl;
    })
    .await;
    let (token, id) = user(&t, "alice", Some(4242)).await;
    let r = api(
        t.http,
        "PATCH",
        "/api/v1/me",
        Some(&token),
        &json!({"timezone": "Europe/Rome"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut mqtt = MqttClient::connect(mqtt_options(
        t.mqtt.unwrap(),
        "alice-alerts",
        Some(("alice", &token)),
    ))
    .await;
    mqtt.subscribe(&format!("meteomesh/v1/users/{id}/alerts"), QoS::AtLeastOnce)
        .await;
    let r = api(
        t.http,
        "POST",
        "/api/v1/subscriptions",
        Some(&token),
        &json!({"label": "Home <& \"garden\">", "min_temp": 3, "ice": true,
                "place": {"name": "Catania", "lat": 37.49, "lon": 15.07, "timezone": "Europe/Rome"}})
        .to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    poll_weather(t.http, &token).await;

    let event: Value =
        serde_json::from_slice(&mqtt.next_publish(|t| t.ends_with("/alerts")).await.payload)
            .unwrap();
    tg.wait_until(WAIT, |s| !s.sent.is_empty()).await;
    let sent = tg.sent();
    assert_eq!(sent.len(), 1);
    let at: jiff::Timestamp = event["at"].as_str().unwrap().parse().unwrap();
    let local = at
        .to_zoned(jiff::tz::TimeZone::get("Europe/Rome").unwrap())
        .strftime("%-d %b %H:%M %Z")
        .to_string();
    assert_eq!(sent[0].chat_id, 4242);
    assert_eq!(sent[0].parse_mode.as_deref(), Some("HTML"));
    assert_eq!(
        sent[0].text,
        format!(
            "⚠️ <b>Home &lt;&amp; &quot;garden&quot;&gt;</b>: too cold\n1.5 °C (minimum 3.0 °C)\n\
             Now 1.5 °C, no precipitation\nCatania · {local}"
        )
    );
    // Freezing rain: the message names what is falling and how much, and the place now.
    let mut freezing = common::fake_weather::current(Some(-0.4));
    freezing["precipitation"] = json!(1.2);
    freezing["rain"] = json!(1.2);
    freezing["weather_code"] = json!(67);
    weather.lock().default = Some(freezing);
    poll_weather(t.http, &token).await;
    let event: Value =
        serde_json::from_slice(&mqtt.next_publish(|t| t.ends_with("/alerts")).await.payload)
            .unwrap();
    assert_eq!(event["constraint"], "ice");
    tg.wait_until(WAIT, |s| s.sent.len() == 2).await;
    let at: jiff::Timestamp = event["at"].as_str().unwrap().parse().unwrap();
    let local = at
        .to_zoned(jiff::tz::TimeZone::get("Europe/Rome").unwrap())
        .strftime("%-d %b %H:%M %Z")
        .to_string();
    assert_eq!(
        tg.sent()[1].text,
        format!(
            "⚠️ <b>Home &lt;&amp; &quot;garden&quot;&gt;</b>: ice (freezing rain)\n\
             Now -0.4 °C, 1.2 mm precipitation\nCatania · {local}"
        )
    );
    wait_metric(
        &t,
        "meteomesh_notifications_total{channel=\"telegram\",outcome=\"delivered\"}",
        2.0,
    )
    .await;
    wait_metric(
        &t,
        "meteomesh_notifications_total{channel=\"mqtt\",outcome=\"delivered\"}",
        2.0,
    )
    .await;
    // The token is never logged or shown: the metrics and the API carry no trace of it.
    assert!(!get(t.http, "/metrics").await.body.contains("TEST-token"));
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_hold_for_100_messages_to_10_chats() {
    let tg = FakeTelegram::start().await;
    let t = app_with(&tg, |c| {
        c.telegram.per_chat_interval = Duration::from_secs(1);
        c.telegram.messages_per_second = 8;
    })
    .await;
    let mut users = Vec::new();
    for i in 0..10 {
        users.push(user(&t, &format!("user{i}"), Some(100 + i)).await.1);
    }
    let mut svc = t.service_client("svc-rate").await;
    let events: Vec<Value> = (0..100)
        .map(|n| alert(users[n as usize % 10], n, &format!("s{n}")))
        .collect();
    publish(&mut svc, &events).await;
    tg.wait_until(Duration::from_secs(60), |s| s.sent.len() == 100)
        .await;
    let sent = tg.sent();
    for chat in 100..110 {
        let times: Vec<Instant> = sent
            .iter()
            .filter(|s| s.chat_id == chat)
            .map(|s| s.at)
            .collect();
        assert_eq!(times.len(), 10, "chat {chat}");
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_secs(1), "chat {chat}: gap {gap:?}");
        }
    }
    // Globally at most 8 per second: any window of 1 s holds at most 8 + 1 arrivals (the
    // limiter spaces sends 125 ms apart; arrival jitter can pull one more in).
    let mut all: Vec<Instant> = sent.iter().map(|s| s.at).collect();
    all.sort();
    for (i, &start) in all.iter().enumerate() {
        let in_window = all[i..]
            .iter()
            .take_while(|&&t| t - start < Duration::from_secs(1))
            .count();
        assert!(in_window <= 9, "{in_window} messages within 1 s");
    }
    let span = *all.last().unwrap() - all[0];
    assert!(span >= Duration::from_millis(99 * 125 - 500), "{span:?}");
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_waited_and_server_errors_back_off() {
    let tg = FakeTelegram::start().await;
    let t = app_with(&tg, |_| {}).await;
    let (_, id) = user(&t, "alice", Some(7)).await;
    let mut svc = t.service_client("svc-429").await;
    tg.force(Forced::RateLimited(2));
    publish(&mut svc, &[alert(id, 1, "a")]).await;
    tg.wait_until(WAIT, |s| s.sent.len() == 1).await;
    let attempts = tg.lock().attempts.clone();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].1, 429);
    assert_eq!(attempts[1].1, 200);
    let waited = attempts[1].2 - attempts[0].2;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    wait_metric(&t, "meteomesh_telegram_rate_limited_total", 1.0).await;

    tg.force(Forced::ServerError);
    tg.force(Forced::ServerError);
    publish(&mut svc, &[alert(id, 2, "b")]).await;
    tg.wait_until(WAIT, |s| s.sent.len() == 2).await;
    let attempts = tg.lock().attempts.clone();
    let statuses: Vec<u16> = attempts[2..].iter().map(|a| a.1).collect();
    assert_eq!(statuses, [500, 500, 200]);
    // Backoff 1 s then 2 s (±20 %, capped at max_backoff = 2 s).
    assert!(attempts[3].2 - attempts[2].2 >= Duration::from_millis(800));
    assert!(attempts[4].2 - attempts[3].2 >= Duration::from_millis(1600));
    wait_metric(
        &t,
        "meteomesh_notifications_total{channel=\"telegram\",outcome=\"retried\"}",
        2.0,
    )
    .await;
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_chats_are_marked_broken_until_the_chat_id_changes() {
    let tg = FakeTelegram::start().await;
    let t = app_with(&tg, |_| {}).await;
    let (alice, alice_id) = user(&t, "alice", Some(500)).await;
    let (bob, bob_id) = user(&t, "bob", Some(600)).await;
    tg.lock().refused.insert(500, Forced::Blocked);
    tg.lock().refused.insert(600, Forced::ChatNotFound);
    let mut svc = t.service_client("svc-broken").await;
    publish(&mut svc, &[alert(alice_id, 1, "a"), alert(bob_id, 2, "b")]).await;
    tg.wait_until(WAIT, |s| s.attempts.len() == 2).await;
    wait_metric(
        &t,
        "meteomesh_notifications_total{channel=\"telegram\",outcome=\"failed\"}",
        2.0,
    )
    .await;
    let s = settings(&t, &alice).await;
    assert_eq!(s["telegram"]["status"], "broken", "{s}");
    assert_eq!(
        s["telegram"]["broken_reason"],
        "Forbidden: bot was blocked by the user"
    );
    let s = settings(&t, &bob).await;
    assert_eq!(s["telegram"]["status"], "broken", "{s}");
    assert_eq!(
        s["telegram"]["broken_reason"],
        "Bad Request: chat not found"
    );

    // Nothing more goes to the refused chats.
    publish(
        &mut svc,
        &[alert(alice_id, 3, "c"), alert(alice_id, 4, "d")],
    )
    .await;
    wait_metric(
        &t,
        "meteomesh_notifications_total{channel=\"telegram\",outcome=\"skipped\"}",
        2.0,
    )
    .await;
    assert_eq!(tg.lock().attempts.len(), 2);

    // The delivery list says why.
    let r = api(
        t.http,
        "GET",
        "/api/v1/me/deliveries?limit=5",
        Some(&alice),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let list = r.json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["status"], "failed");
    assert_eq!(list[0]["kind"], "alert");
    assert_eq!(
        list[0]["last_error"],
        "Forbidden: bot was blocked by the user"
    );
    let r = api(
        t.http,
        "GET",
        "/api/v1/me/deliveries?limit=x",
        Some(&alice),
        "",
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);

    // The account page shows it.
    let page = request(
        t.http,
        "GET",
        "/account",
        &[("Cookie", &format!("meteomesh_session={alice}"))],
        b"",
    )
    .await;
    assert!(
        page.body.contains("bot was blocked by the user"),
        "{}",
        page.body
    );

    // A new chat id, once confirmed with the code sent to it, resumes delivery.
    let r = api(
        t.http,
        "PATCH",
        "/api/v1/me",
        Some(&alice),
        &json!({"telegram_chat_id": 501}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        settings(&t, &alice).await["telegram"]["status"],
        "unconfirmed"
    );
    tg.wait_until(WAIT, |s| s.sent.len() == 1).await;
    let code = tg.code_sent_to(501);
    assert_eq!(confirm_chat(t.http, &alice, &code).await.status, 204);
    assert_eq!(settings(&t, &alice).await["telegram"]["status"], "ok");
    publish(&mut svc, &[alert(alice_id, 5, "e")]).await;
    tg.wait_until(WAIT, |s| s.sent.len() == 2).await;
    assert_eq!(tg.sent()[1].chat_id, 501);
    t.app.shutdown().await.unwrap();
}

/// Waits until the outbox holds `n` undelivered rows (the gauge refreshes every 2 s).
async fn wait_pending(t: &TestApp, n: f64) {
    wait_metric(t, "meteomesh_outbox_pending", n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_groups_alerts_into_one_message() {
    let tg = FakeTelegram::start().await;
    let t = app_with(&tg, |_| {}).await;
    let (token, id) = user(&t, "alice", Some(9)).await;
    let s = put_settings(&t, &token, json!({"mode": "digest", "digest_minutes": 1})).await;
    assert_eq!(s["mode"], "digest");
    assert_eq!(s["digest_minutes"], 1);
    // All five must fall into one 1-minute window: start early in a minute. The
    // client connects after this wait because nothing polls it meanwhile.
    let second = jiff::Timestamp::now().as_second() % 60;
    if second >= 45 {
        tokio::time::sleep(Duration::from_secs((61 - second) as u64)).await;
    }
    let mut svc = t.service_client("svc-digest").await;
    let published = jiff::Timestamp::now();
    let events: Vec<Value> = (0..5).map(|n| alert(id, n, &format!("s{n}"))).collect();
    publish(&mut svc, &events).await;
    tg.wait_until(Duration::from_secs(75), |s| !s.sent.is_empty())
        .await;
    // Held until the minute boundary, then sent as one message.
    let boundary = (published.as_second() / 60 + 1) * 60;
    let now = jiff::Timestamp::now();
    assert!(
        now.as_second() >= boundary,
        "sent at {now}, before the window closed"
    );
    assert!(
        now.as_second() < boundary + 15,
        "sent at {now}, long after the window"
    );
    let sent = tg.sent();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0]
            .text
            .starts_with("🗓 <b>meteomesh digest</b>: 5 changes (times in UTC)\n"),
        "{}",
        sent[0].text
    );
    assert_eq!(sent[0].text.lines().count(), 6);
    for n in 0..5 {
        assert!(sent[0].text.contains(&format!("<b>s{n}</b>: too cold")));
    }
    wait_pending(&t, 0.0).await;
    t.app.shutdown().await.unwrap();
}

fn clock(ts: jiff::Timestamp) -> String {
    ts.to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%H:%M")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_hold_messages_and_release_them_as_one_digest() {
    let tg = FakeTelegram::start().await;
    let t = app_with(&tg, |_| {}).await;
    let (token, id) = user(&t, "alice", Some(11)).await;
    let now = jiff::Timestamp::now();
    let hour = jiff::SignedDuration::from_hours(1);
    put_settings(
        &t,
        &token,
        json!({"quiet_hours": {"start": clock(now - hour), "end": clock(now + hour)}}),
    )
    .await;
    let mut svc = t.service_client("svc-quiet").await;
    let events: Vec<Value> = (0..3).map(|n| alert(id, n, &format!("q{n}"))).collect();
    publish(&mut svc, &events).await;
    wait_pending(&t, 3.0).await;
    assert!(tg.sent().is_empty());
    // Turning quiet hours off releases what they held, as one digest.
    let s = put_settings(&t, &token, json!({"quiet_hours": null})).await;
    assert_eq!(s["quiet_hours"], Value::Null);
    tg.wait_until(WAIT, |s| !s.sent.is_empty()).await;
    let sent = tg.sent();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].text.contains(": 3 changes"), "{}", sent[0].text);
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_end_on_the_clock() {
    let tg = FakeTelegram::start().await;
    let t = app_with(&tg, |_| {}).await;
    let (token, id) = user(&t, "alice", Some(12)).await;
    // Quiet until the next full minute (or the one after, if that is too close).
    let now = jiff::Timestamp::now();
    let mut end = jiff::Timestamp::from_second((now.as_second() / 60 + 1) * 60).unwrap();
    if end.as_second() - now.as_second() < 8 {
        end = jiff::Timestamp::from_second(end.as_second() + 60).unwrap();
    }
    let start = now - jiff::SignedDuration::from_hours(1);
    put_settings(
        &t,
        &token,
        json!({"quiet_hours": {"start": clock(start), "end": clock(end)}}),
    )
    .await;
    let mut svc = t.service_client("svc-quiet-clock").await;
    publish(&mut svc, &[alert(id, 1, "x"), alert(id, 2, "y")]).await;
    wait_pending(&t, 2.0).await;
    tg.wait_until(Duration::from_secs(80), |s| !s.sent.is_empty())
        .await;
    assert!(
        jiff::Timestamp::now() >= end,
        "sent before the quiet hours ended"
    );
    let sent = tg.sent();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].text.contains(": 2 changes"), "{}", sent[0].text);
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_message_and_its_refusals() {
    let tg = FakeTelegram::start().await;
    let t = app_with(&tg, |_| {}).await;
    let (alice, _) = user(&t, "alice.b", Some(77)).await;
    let (bob, _) = user(&t, "bob", None).await;
    let r = api(t.http, "POST", "/api/v1/me/telegram/test", Some(&alice), "").await;
    assert_eq!(r.status, 202, "{}", r.body);
    tg.wait_until(WAIT, |s| s.sent.len() == 1).await;
    assert_eq!(
        tg.sent()[0].text,
        "✅ Test message from meteomesh for <b>alice.b</b>. Weather alerts will arrive in this chat."
    );
    let r = api(t.http, "POST", "/api/v1/me/telegram/test", Some(&bob), "").await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("no Telegram chat"), "{}", r.body);
    let r = api(t.http, "POST", "/api/v1/me/telegram/test", None, "").await;
    assert_eq!(r.status, 401);
    assert_eq!(settings(&t, &bob).await["telegram"]["status"], "not_linked");
    // Linking is off by default.
    let r = api(t.http, "POST", "/api/v1/me/telegram/link", Some(&alice), "").await;
    assert_eq!(r.status, 409, "{}", r.body);
    // Bad settings are refused with the field named.
    let r = api(
        t.http,
        "PUT",
        "/api/v1/me/notifications",
        Some(&alice),
        &json!({"mode": "sometimes", "digest_minutes": 0, "quiet_hours": {"start": "25:00", "end": "07:00"}}).to_string(),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let fields: Vec<String> = r.json()["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fields, ["mode", "quiet_hours"]);
    t.app.shutdown().await.unwrap();

    // Without a bot token there is no Telegram at all.
    let t = TestApp::start().await;
    let (token, _) = user(&t, "carol", Some(5)).await;
    assert_eq!(settings(&t, &token).await["telegram"]["status"], "disabled");
    let r = api(t.http, "POST", "/api/v1/me/telegram/test", Some(&token), "").await;
    assert_eq!(r.status, 409, "{}", r.body);
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linking_a_chat_with_start_and_stop() {
    let tg = FakeTelegram::start().await;
    let t = app_with(&tg, |c| {
        c.telegram.link = true;
        c.telegram.poll_timeout = Duration::from_secs(2);
    })
    .await;
    let (token, _) = user(&t, "alice", None).await;
    let r = api(t.http, "POST", "/api/v1/me/telegram/link", Some(&token), "").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let link = r.json();
    let code = link["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 10);
    assert_eq!(link["command"], format!("/start {code}"));
    // The bot's name comes from getMe, which may still be on its way.
    if !link["deep_link"].is_null() {
        assert_eq!(
            link["deep_link"],
            format!("https://t.me/{}?start={code}", fake_telegram::BOT)
        );
    }

    tg.push_update(555, "/start NOTACODE");
    tg.push_update(555, &format!("/start {code}"));
    tg.wait_until(WAIT, |s| s.sent.len() == 2).await;
    let sent = tg.sent();
    assert_eq!(sent[0].chat_id, 555);
    assert!(
        sent[0]
            .text
            .starts_with("Sorry, that link code is unknown or has expired.")
    );
    assert_eq!(
        sent[1].text,
        "✅ Linked to the meteomesh account <b>alice</b>. Weather alerts will arrive in this chat. Send /stop to unlink."
    );
    let me = api(t.http, "GET", "/api/v1/me", Some(&token), "")
        .await
        .json();
    assert_eq!(me["telegram_chat_id"], 555);
    assert_eq!(settings(&t, &token).await["telegram"]["status"], "ok");

    // A used code does not work twice.
    tg.push_update(556, &format!("/start {code}"));
    tg.push_update(555, "/stop");
    tg.wait_until(WAIT, |s| s.sent.len() == 4).await;
    let sent = tg.sent();
    let to_556 = sent.iter().find(|s| s.chat_id == 556).unwrap();
    assert!(to_556.text.starts_with("Sorry"), "{}", to_556.text);
    let stop = sent.iter().rfind(|s| s.chat_id == 555).unwrap();
    assert_eq!(
        stop.text,
        "Unlinked from <b>alice</b>. No more alerts will arrive here."
    );
    let me = api(t.http, "GET", "/api/v1/me", Some(&token), "")
        .await
        .json();
    assert_eq!(me["telegram_chat_id"], Value::Null);
    // The offset moved past every update, so none is handled twice.
    tg.wait_until(WAIT, |s| s.offsets_asked.last() == Some(&1004))
        .await;
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_entries_the_notifier_never_saw_are_sent_after_a_restart() {
    let tg = FakeTelegram::start().await;
    let t = app_with(&tg, |_| {}).await;
    let (_, id) = user(&t, "alice", Some(31)).await;
    let config = t.config.clone();
    t.app.shutdown().await.unwrap();
    // The rules committed an alert (state + journal) and the process died before the
    // notifier received it from the bus.
    let db = rusqlite::Connection::open(&config.storage.path).unwrap();
    db.execute(
        "INSERT INTO alert_log (key, user_id, event, created_at) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![
            "9-too_cold-1795363200000:raised",
            id,
            alert(id, 9, "journal").to_string(),
            jiff::Timestamp::now().as_millisecond()
        ],
    )
    .unwrap();
    drop(db);
    let app = start_ready(&config).await;
    tg.wait_until(WAIT, |s| s.sent.len() == 1).await;
    assert!(tg.sent()[0].text.contains("<b>journal</b>: too cold"));
    app.shutdown().await.unwrap();
    let db = rusqlite::Connection::open(&config.storage.path).unwrap();
    let handled: i64 = db
        .query_row("SELECT handled FROM alert_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(handled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_answers_weather_and_alerts_to_linked_chats_only() {
    let tg = FakeTelegram::start().await;
    let weather = FakeWeather::start().await;
    weather.set_temp(Some(1.5));
    let wurl = weather.url();
    let t = app_with(&tg, |c| {
        c.telegram.link = true;
        c.telegram.poll_timeout = Duration::from_secs(2);
        c.weather.open_meteo_url = wurl;
    })
    .await;
    let (token, id) = user(&t, "alice", Some(4242)).await;
    let mut mqtt = MqttClient::connect(mqtt_options(
        t.mqtt.unwrap(),
        "alice-alerts",
        Some(("alice", &token)),
    ))
    .await;
    mqtt.subscribe(&format!("meteomesh/v1/users/{id}/alerts"), QoS::AtLeastOnce)
        .await;
    for body in [
        json!({"label": "home", "min_temp": 3, "place": {"name": "Catania", "lat": 37.49, "lon": 15.07}}),
        json!({"label": "<b>cabin</b>", "max_temp": 30, "place": {"name": "Etna", "lat": 37.75, "lon": 15.0}}),
    ] {
        let r = post_subscription(t.http, &token, &body.to_string()).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    poll_weather(t.http, &token).await;
    // The rules have evaluated once the alert is out (and Telegram has it).
    mqtt.next_publish(|t| t.ends_with("/alerts")).await;
    tg.wait_until(WAIT, |s| s.sent.len() == 1).await;

    tg.push_update(4242, "/weather");
    tg.push_update(4242, "/alerts@meteomesh_bot");
    // A chat that is not linked learns nothing.
    tg.push_update(999, "/weather");
    tg.wait_until(WAIT, |s| s.sent.len() == 4).await;
    let sent = tg.sent();
    let to = |chat: i64| -> Vec<&str> {
        sent[1..]
            .iter()
            .filter(|m| m.chat_id == chat)
            .map(|m| m.text.as_str())
            .collect()
    };
    let linked = to(4242);
    assert_eq!(linked.len(), 2, "{linked:?}");
    let now = linked.iter().find(|t| t.starts_with("🌤")).unwrap();
    assert!(
        now.contains("• <b>home</b> — Catania: 1.5 °C, no precipitation, overcast (")
            && now.contains(") ⚠️ too cold")
            && now.contains("• <b>&lt;b&gt;cabin&lt;/b&gt;</b> — Etna: 1.5 °C"),
        "{now}"
    );
    let active = linked.iter().find(|t| t.starts_with("⚠️")).unwrap();
    assert_eq!(
        *active,
        "⚠️ <b>Active alerts</b>\n• <b>home</b> — Catania ⚠️ too cold"
    );
    let stranger = to(999);
    assert_eq!(stranger.len(), 1);
    assert!(
        stranger[0].starts_with("This chat is not linked"),
        "{}",
        stranger[0]
    );
    assert!(!stranger[0].contains("Catania"));
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_flooding_the_bot_cannot_grow_the_outbox() {
    let tg = FakeTelegram::start().await;
    let t = app_with(&tg, |c| {
        c.telegram.link = true;
        c.telegram.poll_timeout = Duration::from_secs(2);
    })
    .await;
    user(&t, "alice", Some(4242)).await;
    // Telegram asks to wait: the replies stay queued while the test counts them.
    tg.force(Forced::RateLimited(60));
    for _ in 0..50 {
        tg.push_update(999, "/weather");
    }
    tg.push_update(4242, "/alerts");
    let last = 1000 + 51;
    tg.wait_until(WAIT, |s| s.offsets_asked.iter().any(|o| *o >= last))
        .await;
    let queued = |chat: i64| {
        with_connection(&t.db_path(), |c| {
            Ok(c.query_row(
                "SELECT count(*) FROM outbox WHERE chat_id = ?1 AND key LIKE 'update:%'",
                [chat],
                |r| r.get::<_, i64>(0),
            )?)
        })
        .unwrap()
    };
    assert_eq!(queued(999), 3, "a flood is answered three times at most");
    assert_eq!(queued(4242), 1, "and others are still answered");
    t.app.shutdown().await.unwrap();
}
