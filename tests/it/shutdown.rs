//! SIGTERM ends the process with exit 0 within 5 s in every state a device is found in
//! (idle, right after a burst of writes, mid-poll with a provider that hangs, with
//! OpenWeatherMap's paced calls, with Telegram hanging, with its mesh links down), and the
//! work in flight survives: every acknowledged write, every queued alert.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::fake_telegram::FakeTelegram;
use common::fake_weather::{FakeWeather, Forced};
use common::*;
use serde_json::json;

const PW: &str = "correct-horse-1";
/// What the issue (and systemd's `TimeoutStopSec=30s` with room to spare) asks for.
const STOP_WITHIN: Duration = Duration::from_secs(5);

fn start(dir: &Path, envs: &[(&str, &str)]) -> ServeProcess {
    let config = write_test_config(dir, "");
    tokio::task::block_in_place(|| {
        ServeProcess::start(dir, &["--config", config.to_str().unwrap()], envs)
    })
}

/// Sends SIGTERM and checks the process exits 0 within [`STOP_WITHIN`]; returns its log.
fn stops_cleanly(p: ServeProcess, state: &str) -> Vec<String> {
    let sent = Instant::now();
    let (status, log) = tokio::task::block_in_place(|| p.terminate());
    let took = sent.elapsed();
    eprintln!("{state}: SIGTERM to exit took {took:?}");
    assert!(
        status.success(),
        "{state}: exit {status:?}\n{}",
        log.join("\n")
    );
    assert!(
        took < STOP_WITHIN,
        "{state}: stopping took {took:?}\n{}",
        log.join("\n")
    );
    assert!(
        log.iter().any(|l| l.contains("stopped cleanly")),
        "{state}: {}",
        log.join("\n")
    );
    log
}

fn count(dir: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(test_db_path(dir))
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path(), &[]);
    let _ = register(p.http, "alice", PW).await;
    stops_cleanly(p, "idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_after_a_write_burst_keeps_every_acknowledged_write() {
    // A provider that hangs keeps the poller busy, so the burst's change notices pile up
    // in front of it: the state in which a bus session used to wait forever at stop.
    let weather = FakeWeather::start().await;
    for _ in 0..50 {
        weather.force(Forced::Delay(Duration::from_secs(120)));
    }
    let dir = tempfile::tempdir().unwrap();
    let url = weather.url();
    let p = start(
        dir.path(),
        &[
            ("METEOMESH__WEATHER__MAX_SUBSCRIPTIONS_PER_USER", "5000"),
            ("METEOMESH__WEATHER__OPEN_METEO_URL", url.as_str()),
            ("METEOMESH__WEATHER__REQUEST_TIMEOUT", "60s"),
        ],
    );
    let http = p.http;
    let mut writers = Vec::new();
    for w in 0..3 {
        let (token, _) = register(http, &format!("writer{w}"), PW).await;
        writers.push(tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(5);
            let mut created = 0i64;
            let mut i = 0;
            while Instant::now() < until {
                let body = json!({"place": {"lat": 10.0 + w as f64 + i as f64 / 1000.0, "lon": 9},
                                  "max_temp": 30});
                let r = post_subscription(http, &token, &body.to_string()).await;
                assert_eq!(r.status, 201, "{}", r.body);
                created += 1;
                i += 1;
            }
            created
        }));
    }
    let mut created = 0;
    for w in writers {
        created += w.await.unwrap();
    }
    eprintln!("created {created} subscriptions in 5 s");
    // Let the modules chew on the burst's bus messages, as the outside test did.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stops_cleanly(p, "after a write burst");
    assert_eq!(
        count(dir.path(), "SELECT COUNT(*) FROM subscriptions"),
        created
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_poll_with_a_hanging_provider_stops_the_requests() {
    let weather = FakeWeather::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = weather.url();
    let p = start(
        dir.path(),
        &[
            ("METEOMESH__WEATHER__OPEN_METEO_URL", url.as_str()),
            ("METEOMESH__WEATHER__BATCH_SIZE", "2"),
            ("METEOMESH__WEATHER__REQUEST_TIMEOUT", "60s"),
        ],
    );
    let (token, _) = register(p.http, "alice", PW).await;
    for _ in 0..20 {
        weather.force(Forced::Delay(Duration::from_secs(120)));
    }
    for i in 0..10 {
        let body = json!({"place": {"lat": 40 + i, "lon": 9}, "max_temp": 30});
        let r = post_subscription(p.http, &token, &body.to_string()).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let poll = tokio::spawn(async move {
        api(
            p.http,
            "POST",
            "/api/v1/admin/weather/poll",
            Some(&token),
            "",
        )
        .await
    });
    let deadline = Instant::now() + WAIT;
    while weather.requests().is_empty() {
        assert!(Instant::now() < deadline, "no provider request");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_sigterm = weather.requests().len();
    stops_cleanly(p, "mid-poll, provider hanging");
    assert_eq!(
        weather.requests().len(),
        at_sigterm,
        "provider requests after SIGTERM: {:?}",
        weather.requests()
    );
    poll.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_poll_with_openweathermap_pacing() {
    let weather = FakeWeather::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = weather.url();
    let p = start(
        dir.path(),
        &[
            ("METEOMESH__WEATHER__PROVIDER", "openweathermap"),
            ("METEOMESH__WEATHER__OPENWEATHERMAP_URL", url.as_str()),
            (
                "METEOMESH__WEATHER__OPENWEATHERMAP_API_KEY",
                "0123456789abcdef0123456789abcdef",
            ),
            ("METEOMESH__WEATHER__OPENWEATHERMAP_CALLS_PER_MINUTE", "60"),
            ("METEOMESH__WEATHER__OPENWEATHERMAP_CALLS_PER_MONTH", "0"),
        ],
    );
    let (token, _) = register(p.http, "alice", PW).await;
    for i in 0..40 {
        let body = json!({"place": {"lat": 40.0 + i as f64 / 10.0, "lon": 9}, "max_temp": 30});
        let r = post_subscription(p.http, &token, &body.to_string()).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let deadline = Instant::now() + WAIT;
    while weather.requests().len() < 3 {
        assert!(Instant::now() < deadline, "{:?}", weather.requests());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at_sigterm = weather.requests().len();
    stops_cleanly(p, "mid-poll, OpenWeatherMap pacing");
    assert!(
        weather.requests().len() <= at_sigterm + 1,
        "provider requests after SIGTERM: {} then {}",
        at_sigterm,
        weather.requests().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_telegram_hanging_keeps_the_alert_queued() {
    let weather = FakeWeather::start().await;
    let tg = FakeTelegram::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (wurl, turl) = (weather.url(), tg.url());
    let envs = [
        ("METEOMESH__WEATHER__OPEN_METEO_URL", wurl.as_str()),
        (
            "METEOMESH__TELEGRAM__BOT_TOKEN",
            common::fake_telegram::TOKEN,
        ),
        ("METEOMESH__TELEGRAM__API_BASE", turl.as_str()),
    ];
    let p = start(dir.path(), &envs);
    let (token, user) = register(p.http, "alice", PW).await;
    rusqlite::Connection::open(test_db_path(dir.path()))
        .unwrap()
        .execute(
            "UPDATE users SET telegram_chat_id = 42, telegram_chat_confirmed = 1 WHERE id = ?1",
            [user],
        )
        .unwrap();
    tg.set_hang(true);
    weather.set_temp(Some(35.0));
    let r = post_subscription(
        p.http,
        &token,
        r#"{"place":{"lat":40,"lon":9},"max_temp":30}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    poll_weather(p.http, &token).await;
    tg.wait_until(WAIT, |s| s.attempts.iter().any(|a| a.0 == 42))
        .await;
    stops_cleanly(p, "Telegram hanging");

    // The alert was not delivered, so it is still queued, and goes out after a restart.
    tg.set_hang(false);
    let p = start(dir.path(), &envs);
    tg.wait_until(WAIT, |s| s.sent.iter().any(|m| m.chat_id == 42))
        .await;
    stops_cleanly(p, "after delivering");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_mesh_links_down() {
    let dir = tempfile::tempdir().unwrap();
    // One peer that never answers (a port nobody listens on) and one that hangs with its
    // connection open (stopped with SIGSTOP).
    let mut hung = common::mesh::MeshNode::new(&dir.path().join("hung"), &[], "");
    hung.start();
    let dead = format!("127.0.0.1:{}", common::mesh::free_port());
    let mut node = common::mesh::MeshNode::new(&dir.path().join("node"), &[dead, hung.mqtt()], "");
    node.start();
    let (token, _) = register(node.http(), "alice", PW).await;
    common::mesh::wait_status(node.http(), &token, "a link to the live peer", |s| {
        common::mesh::links_up(s) == 1
    })
    .await;
    hung.signal("-STOP");
    let p = node.process.take().unwrap();
    stops_cleanly(p, "mesh links down");
    hung.signal("-CONT");
}
