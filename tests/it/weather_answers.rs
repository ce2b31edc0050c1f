//! Weather people can rely on, end to end against the fakes (real answer formats) and seen
//! by a real MQTT client on the user's alert topic: OpenWeatherMap's list of conditions,
//! Open-Meteo readings that are partly unknown, without `current` or old, the ice
//! constraint, the quota warning to administrators, no fresh data, and reminders.

use crate::common;

use super::weather::{alerts_of, app_with, next_alert, openweathermap_paid, subscribe};
use common::fake_weather::{FakeWeather, current, interval_start};
use common::*;
use rumqttc::QoS;
use serde_json::{Value, json};

const PW: &str = "correct-horse-1";

fn event(v: &Value) -> (&str, &str) {
    (
        v["constraint"].as_str().unwrap(),
        v["state"].as_str().unwrap(),
    )
}

/// An OpenWeatherMap answer in its real shape (fields it always sends, `rain` absent
/// unless given) with these conditions.
fn owm(conditions: &[(u16, &str, &str)], rain_1h: Option<f64>) -> Value {
    let weather: Vec<Value> = conditions
        .iter()
        .map(|(id, main, description)| {
            json!({"id": id, "main": main, "description": description, "icon": "10n"})
        })
        .collect();
    let mut body = json!({"coord": {"lon": -93.2923, "lat": 37.2153}, "weather": weather,
        "base": "stations", "main": {"temp": 0.6, "feels_like": -3.1, "temp_min": 0.2,
        "temp_max": 1.1, "pressure": 1012, "humidity": 96}, "visibility": 4828,
        "wind": {"speed": 3.09, "deg": 40}, "clouds": {"all": 100},
        "sys": {"type": 2, "id": 2004412, "country": "US"}, "timezone": -21600,
        "id": 4409896, "name": "Springfield", "cod": 200});
    if let Some(mm) = rain_1h {
        body["rain"] = json!({"1h": mm});
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openweathermap_reads_every_listed_condition() {
    let fake = FakeWeather::start().await;
    let t = app_with(&fake, openweathermap_paid).await;
    let (token, id) = register(t.http, "alice", PW).await;
    subscribe(
        &t,
        &token,
        json!({"place": {"lat": 37.22, "lon": -93.29}, "rain": true, "ice": true}),
    )
    .await;
    let mut alerts = alerts_of(&t, "alice", &token, id).await;
    let poll_with = async |body: Value| {
        fake.lock().owm = Some(body);
        let report = poll_weather(t.http, &token).await;
        assert_eq!(report["observations"], 1, "{report}");
    };
    poll_with(owm(&[(500, "Rain", "light rain")], Some(0.3))).await;
    let raised = next_alert(&mut alerts).await;
    assert_eq!(event(&raised), ("rain", "raised"));
    assert_eq!(raised["value"], 0.3);
    // Mist first, rain second, no `rain` key: still raining (weather[0] alone said
    // "no longer rain").
    poll_with(owm(
        &[(701, "Mist", "mist"), (500, "Rain", "light rain")],
        None,
    ))
    .await;
    // Freezing rain after mist: ice, and still rain.
    poll_with(owm(
        &[(701, "Mist", "mist"), (511, "Rain", "freezing rain")],
        None,
    ))
    .await;
    let ice = next_alert(&mut alerts).await;
    assert_eq!(
        event(&ice),
        ("ice", "raised"),
        "nothing came between: {ice}"
    );
    assert_eq!(ice["condition"], "light freezing rain");
    assert!(ice["value"].is_null(), "a code raised it, no amount: {ice}");
    // A thunderstorm without rain (211) is neither rain nor ice.
    poll_with(owm(&[(211, "Thunderstorm", "thunderstorm")], None)).await;
    let mut cleared = [next_alert(&mut alerts).await, next_alert(&mut alerts).await];
    cleared.sort_by_key(|v| v["constraint"].as_str().unwrap().to_owned());
    assert_eq!(
        cleared.iter().map(event).collect::<Vec<_>>(),
        vec![("ice", "cleared"), ("rain", "cleared")]
    );
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_missing_or_old_readings_decide_nothing() {
    let fake = FakeWeather::start().await;
    let t = app_with(&fake, |_| {}).await;
    let (token, id) = register(t.http, "alice", PW).await;
    subscribe(
        &t,
        &token,
        json!({"place": {"lat": 45.46, "lon": 9.19}, "rain": true, "max_temp": 30}),
    )
    .await;
    let mut alerts = alerts_of(&t, "alice", &token, id).await;
    let set = |c: Value| fake.lock().default = Some(c);
    let mut raining = current(Some(12.0));
    raining["rain"] = json!(0.6);
    raining["precipitation"] = json!(0.6);
    raining["weather_code"] = json!(61);
    set(raining);
    poll_weather(t.http, &token).await;
    let raised = next_alert(&mut alerts).await;
    assert_eq!(event(&raised), ("rain", "raised"));
    assert_eq!(raised["condition"], "light rain");
    assert_eq!(
        (
            raised["temperature_c"].as_f64(),
            raised["precipitation_mm"].as_f64()
        ),
        (Some(12.0), Some(0.6))
    );

    // rain null, showers 0.0, code null: it may still rain.
    let mut partly = current(Some(12.0));
    partly["rain"] = Value::Null;
    partly["weather_code"] = Value::Null;
    set(partly);
    poll_weather(t.http, &token).await;

    // No `current` block at all: a failed poll, nothing published.
    set(Value::Null);
    let report = poll_weather(t.http, &token).await;
    assert_eq!(
        (
            report["observations"].as_u64(),
            report["failed_places"].as_u64()
        ),
        (Some(0), Some(1)),
        "{report}"
    );

    // Dry and hot, but observed 35–50 minutes ago (past the 30-minute age, short of the
    // hour without data): neither clears the rain nor raises heat.
    let mut old = current(Some(35.0));
    old["time"] = json!(interval_start(
        jiff::Timestamp::now() - jiff::SignedDuration::from_mins(35)
    ));
    set(old);
    poll_weather(t.http, &token).await;

    // Fresh, dry and mild: the rain clears, and that is the next event.
    set(current(Some(20.0)));
    poll_weather(t.http, &token).await;
    let cleared = next_alert(&mut alerts).await;
    assert_eq!(event(&cleared), ("rain", "cleared"), "{cleared}");
    assert_eq!(
        cleared["temperature_c"], 20.0,
        "cleared by the fresh reading, not an earlier one: {cleared}"
    );
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subscription_is_not_alerted_from_old_data() {
    let fake = FakeWeather::start().await;
    let t = app_with(&fake, |_| {}).await;
    let (token, id) = register(t.http, "alice", PW).await;
    let place = json!({"lat": 41.9, "lon": 12.5});
    subscribe(
        &t,
        &token,
        json!({"place": place, "min_temp": -20, "label": "first"}),
    )
    .await;
    // The provider serves a 35–50-minute-old reading of 40 °C (past the 30-minute age);
    // it is stored as the place's latest.
    let mut old = current(Some(40.0));
    old["time"] = json!(interval_start(
        jiff::Timestamp::now() - jiff::SignedDuration::from_mins(35)
    ));
    fake.lock().default = Some(old);
    poll_weather(t.http, &token).await;
    let state_topic = format!("meteomesh/v1/users/{id}/subscriptions/+/state");
    let mut watcher = MqttClient::connect(mqtt_options(
        t.mqtt.unwrap(),
        "watcher",
        Some(("alice", &token)),
    ))
    .await;
    watcher.subscribe(&state_topic, QoS::AtLeastOnce).await;
    let mut alerts = alerts_of(&t, "alice", &token, id).await;
    // A new subscription is evaluated at once against that stored reading: too old.
    let hot = subscribe(
        &t,
        &token,
        json!({"place": place, "max_temp": 30, "label": "hot"}),
    )
    .await;
    let topic = hot["state_topic"].as_str().unwrap().to_owned();
    let state: Value = loop {
        let p = watcher.next_publish(|t| t == topic).await;
        let v: Value = serde_json::from_slice(&p.payload).unwrap();
        if !v["conditions"].is_null() {
            break v;
        }
    };
    assert_eq!(state["stale"], true, "{state}");
    assert_eq!(state["violated"], json!([]), "{state}");
    assert!(state["observed_at"].as_str().is_some(), "{state}");
    // The first alert comes from fresh data, with its value.
    fake.lock().default = Some(current(Some(33.0)));
    poll_weather(t.http, &token).await;
    let raised = next_alert(&mut alerts).await;
    assert_eq!(
        (event(&raised), raised["value"].as_f64()),
        (("too_hot", "raised"), Some(33.0))
    );
    assert_eq!(raised["label"], "hot");
    // The API lists each subscription with its state and the reading's time and age.
    let r = api(t.http, "GET", "/api/v1/subscriptions", Some(&token), "").await;
    let listed = r.json();
    let hot_state = &listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["label"] == "hot")
        .unwrap()["state"];
    assert_eq!(hot_state["violated"], json!(["too_hot"]), "{listed}");
    assert!(hot_state["observed_at"].as_str().is_some(), "{listed}");
    assert!(
        (0..1000).contains(&hot_state["age_seconds"].as_i64().unwrap()),
        "{listed}"
    );
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_are_told_when_the_quota_cannot_carry_the_interval() {
    let fake = FakeWeather::start().await;
    let tg = common::fake_telegram::FakeTelegram::start().await;
    let t = app_with(&fake, |c| {
        tg.configure(c);
        // A tight plan: 200 calls a day, 10 places a request.
        c.weather.open_meteo_calls_per_day = 200;
        c.weather.batch_size = 10;
        c.weather.max_subscriptions_per_user = 100;
    })
    .await;
    let (token, admin) = register(t.http, "alice", PW).await;
    set_proven_chat(&t, admin, 77);
    for i in 0..50 {
        subscribe(
            &t,
            &token,
            json!({"place": {"lat": 40.0 + i as f64 / 10.0, "lon": 9}, "max_temp": 30}),
        )
        .await;
    }
    // The new places are fetched a moment later; the quota is worked out first.
    let deadline = std::time::Instant::now() + WAIT;
    let weather = loop {
        let w = get(t.http, "/readyz").await.json()["weather"].clone();
        if w["quota_warning"].is_string() {
            break w;
        }
        assert!(std::time::Instant::now() < deadline, "{w}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // (200 − 10) a day carries 1 place every 15 minutes; 50 need 6 h 18 m 56 s each.
    assert_eq!(weather["interval_seconds"], 22_736, "{weather}");
    let warning = weather["quota_warning"].as_str().unwrap();
    assert!(
        warning.contains("50 places cannot be fetched every 15m")
            && warning.contains("every 6h 18m 56s instead"),
        "{warning}"
    );
    // The administrator hears it on Telegram, once.
    tg.wait_until(WAIT, |s| !s.sent.is_empty()).await;
    let sent = tg.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].chat_id, 77);
    assert!(
        sent[0]
            .text
            .starts_with("⚠️ <b>Weather quota</b> (open-meteo): 50 places cannot"),
        "{}",
        sent[0].text
    );
    let m = get(t.http, "/metrics").await.body;
    assert!(
        m.contains("meteomesh_weather_poll_interval_seconds 22736"),
        "{m}"
    );
    assert!(m.contains("meteomesh_weather_places_max 1"), "{m}");
    // Only the first request went out: the second would break the daily limit's pace.
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|p| p.starts_with("/v1/forecast"))
            .count(),
        1
    );
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_told_once_when_their_place_has_no_fresh_data_and_when_it_returns() {
    let fake = FakeWeather::start().await;
    let t = app_with(&fake, |c| {
        c.weather.stale_after = std::time::Duration::from_secs(3);
    })
    .await;
    let (token, id) = register(t.http, "alice", PW).await;
    subscribe(
        &t,
        &token,
        json!({"place": {"lat": 45.07, "lon": 7.69}, "max_temp": 30, "label": "turin"}),
    )
    .await;
    let mut alerts = alerts_of(&t, "alice", &token, id).await;
    // A reading stamped to the second, so it is fresh for the 3 s this test allows.
    let fresh = || {
        let mut c = current(Some(20.0));
        c["time"] = json!(jiff::Timestamp::now().to_string());
        c
    };
    fake.lock().default = Some(fresh());
    poll_weather(t.http, &token).await;
    // The provider goes down; no reading arrives, and the rules notice the age alone.
    fake.lock().down = Some(503);
    let stale = next_alert(&mut alerts).await;
    assert_eq!(event(&stale), ("no_data", "raised"), "{stale}");
    assert_eq!(stale["label"], "turin");
    assert!(stale["observed_at"].as_str().is_some(), "{stale}");
    // Back: the first fresh reading says so, and nothing was said in between.
    fake.lock().down = None;
    fake.lock().default = Some(fresh());
    poll_weather(t.http, &token).await;
    let back = next_alert(&mut alerts).await;
    assert_eq!(event(&back), ("no_data", "cleared"), "{back}");
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_while_a_constraint_holds() {
    let fake = FakeWeather::start().await;
    let t = app_with(&fake, |_| {}).await;
    let (token, id) = register(t.http, "alice", PW).await;
    let sub = subscribe(
        &t,
        &token,
        json!({"place": {"lat": 38.1, "lon": 13.36}, "max_temp": 30, "remind_hours": 1}),
    )
    .await;
    assert_eq!(sub["remind_hours"], 1);
    let sid = sub["id"].as_i64().unwrap();
    let mut alerts = alerts_of(&t, "alice", &token, id).await;
    fake.set_temp(Some(35.0));
    poll_weather(t.http, &token).await;
    let raised = next_alert(&mut alerts).await;
    assert_eq!(event(&raised), ("too_hot", "raised"));
    // Two hours pass since the last word (the stored state says so) and it is still hot:
    // one reminder.
    let two_hours_ago = jiff::Timestamp::now().as_millisecond() - 2 * 3_600_000;
    with_connection(&t.db_path(), |c| {
        c.execute(
            "UPDATE alert_state SET reminded_at = ?1
             WHERE subscription_id = ?2 AND kind = 'too_hot'",
            rusqlite::params![two_hours_ago, sid],
        )?;
        Ok(())
    })
    .unwrap();
    poll_weather(t.http, &token).await;
    let reminder = next_alert(&mut alerts).await;
    assert_eq!(event(&reminder), ("too_hot", "reminder"), "{reminder}");
    assert_eq!(reminder["id"], raised["id"], "the same episode");
    assert_eq!(reminder["notify"], true);
    // Not again within the hour; the clear is the next event.
    poll_weather(t.http, &token).await;
    fake.set_temp(Some(20.0));
    poll_weather(t.http, &token).await;
    let cleared = next_alert(&mut alerts).await;
    assert_eq!(event(&cleared), ("too_hot", "cleared"), "{cleared}");
    // Validated: at most a week.
    let r = post_subscription(
        t.http,
        &token,
        &json!({"place": {"lat": 1, "lon": 1}, "rain": true, "remind_hours": 169}).to_string(),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("remind_hours"), "{}", r.body);
    t.app.shutdown().await.unwrap();
}
