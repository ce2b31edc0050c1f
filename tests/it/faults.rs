//! Faults a device meets: a full disk, a damaged database file, a weather provider that
//! is down for days, and the wall clock jumping.

use crate::common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::fake_weather::FakeWeather;
use common::*;
use rusqlite::Connection;
use serde_json::json;

const PW: &str = "correct-horse-1";

fn integrity(path: &Path) -> String {
    let c = Connection::open(path).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// A size-limited tmpfs at `dir`, unmounted on drop; `None` where mounting is not
/// allowed (not root, or a container without CAP_SYS_ADMIN).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(SmallDisk(dir.to_owned()));
        }
        // Not made strict like libfaketime: whether a sandbox lets root mount is not
        // something CI can install. The max_size test covers SQLITE_FULL everywhere.
        eprintln!(
            "SKIPPED a_full_disk_refuses_writes_keeps_reads_and_recovers: cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)"
        );
        None
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `path` with a ballast file until it refuses more.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // The last partial chunk may have gone in; one more byte at a time to the brim.
    while f.write_all(&[0]).is_ok() {}
    let _ = f.sync_all();
}

async fn set_timezone(t: &TestApp, token: &str, zone: &str) -> Response {
    api(
        t.http,
        "PATCH",
        "/api/v1/me",
        Some(token),
        &json!({ "timezone": zone }).to_string(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_keeps_reads_and_recovers() {
    let outer = tempfile::tempdir().unwrap();
    let mnt = outer.path().join("disk");
    let Some(_disk) = SmallDisk::mount(&mnt, "8m") else {
        return;
    };
    let t = TestApp::start_with(|c| c.storage.path = mnt.join("meteomesh.db")).await;
    let (token, _) = register(t.http, "alice", PW).await;
    let r = post_subscription(
        t.http,
        &token,
        r#"{"place":{"lat":45,"lon":9},"max_temp":30}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);

    fill(&mnt.join("ballast"));
    // Every write appends to the WAL, which must grow: it soon cannot.
    let zones = ["Europe/Rome", "Europe/Paris"];
    let mut last_saved = None;
    let mut refusal = None;
    for i in 0..3000 {
        let zone = zones[i % 2];
        let r = set_timezone(&t, &token, zone).await;
        match r.status {
            200 => last_saved = Some(zone),
            _ => {
                refusal = Some(r);
                break;
            }
        }
    }
    let r = refusal.expect("3000 writes went through on a full disk");
    assert_eq!(r.status, 507, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "storage_full", "{}", r.body);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("full"),
        "{}",
        r.body
    );

    // Reads go on.
    let r = api(t.http, "GET", "/api/v1/subscriptions", Some(&token), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    let r = api(t.http, "GET", "/api/v1/me", Some(&token), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    if let Some(zone) = last_saved {
        assert_eq!(r.json()["timezone"], zone, "an acknowledged write was lost");
    }
    assert_eq!(get(t.http, "/healthz").await.status, 200);
    let m = get(t.http, "/metrics").await.body;
    assert!(
        metric_value(&m, "meteomesh_db_operations_total{outcome=\"error\"}").unwrap_or(0.0) >= 1.0,
        "failed writes are not counted"
    );

    // Space returns: writes work again without a restart.
    std::fs::remove_file(mnt.join("ballast")).unwrap();
    let r = set_timezone(&t, &token, "Asia/Tokyo").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api(t.http, "GET", "/api/v1/me", Some(&token), "").await;
    assert_eq!(r.json()["timezone"], "Asia/Tokyo");

    let path = t.db_path();
    t.app.shutdown().await.unwrap();
    assert_eq!(integrity(&path), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_max_size_caps_the_database_like_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    let app = start_ready(&config).await;
    let http = app.addresses.http.unwrap();
    let (token, _) = register(http, "alice", PW).await;
    app.shutdown().await.unwrap();

    // Restarted with the smallest cap: the file as it is now, nothing more (its free
    // pages, e.g. from a migration that rebuilt a table, still fill first).
    config.storage.max_size = Some(64 * 1024);
    config.weather.max_subscriptions_per_user = 1000;
    config.validate().unwrap();
    let app = start_ready(&config).await;
    let http = app.addresses.http.unwrap();
    let mut created = 0;
    let mut refusal = None;
    for i in 0..1000 {
        let body = json!({"label": format!("place number {i} with a long label to fill pages quickly"),
                          "place": {"lat": 40.0 + i as f64 / 100.0, "lon": 9}, "max_temp": 30});
        let r = post_subscription(http, &token, &body.to_string()).await;
        if r.status == 201 {
            created += 1;
        } else {
            refusal = Some(r);
            break;
        }
    }
    let r = refusal.expect("1,000 subscriptions fitted under a cap of the current size");
    assert_eq!(r.status, 507, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "storage_full");
    let r = api(http, "GET", "/api/v1/subscriptions", Some(&token), "").await;
    assert_eq!(r.json().as_array().unwrap().len(), created, "{}", r.body);
    app.shutdown().await.unwrap();

    // A larger cap: writes go on, the database is sound.
    config.storage.max_size = Some(64 * 1024 * 1024);
    let app = start_ready(&config).await;
    let http = app.addresses.http.unwrap();
    let r = post_subscription(http, &token, r#"{"place":{"lat":1,"lon":1},"max_temp":30}"#).await;
    assert_eq!(r.status, 201, "{}", r.body);
    app.shutdown().await.unwrap();
    assert_eq!(integrity(&config.storage.path), "ok");
}

/// Starts the binary on `db`; returns its exit status and stderr.
fn serve_once(dir: &Path, db: &Path) -> (Option<i32>, String) {
    let out = bin()
        .args([
            "--database",
            db.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("METEOMESH__BUS__TCP_LISTEN", "127.0.0.1:0")
        .env("METEOMESH__BUS__WS_LISTEN", "127.0.0.1:0")
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `bad` over `db`, starts the binary on it, and checks it refuses with exit code
/// 65 and a message that says so, leaving the file as it was. Returns stderr.
fn refused_untouched(dir: &Path, db: &Path, bad: &[u8]) -> String {
    std::fs::write(db, bad).unwrap();
    let (code, stderr) = tokio::task::block_in_place(|| serve_once(dir, db));
    assert_eq!(code, Some(65), "{stderr}");
    assert!(
        stderr.contains("damaged or not a meteomesh database"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(db).unwrap(), bad, "the file was changed");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_stops_the_start_and_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let app = start_ready(&config).await;
    let http = app.addresses.http.unwrap();
    let (token, _) = register(http, "alice", PW).await;
    for i in 0..40 {
        let body = json!({"place": {"lat": 40.0 + i as f64 / 10.0, "lon": 9}, "max_temp": 30});
        let r = post_subscription(http, &token, &body.to_string()).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    app.shutdown().await.unwrap();
    let db = config.storage.path.clone();
    let good = std::fs::read(&db).unwrap();
    assert!(
        good.len() > 8 * 4096,
        "database too small to damage: {}",
        good.len()
    );

    // 1. Not a database at all (a wrong file, or a header wiped).
    let mut bad = good.clone();
    bad[..16].copy_from_slice(b"this is no db!!\0");
    let stderr = refused_untouched(dir.path(), &db, &bad);
    assert!(stderr.contains("restore a backup"), "{stderr}");

    // 2. Pages scribbled over in the middle (a failing SD card).
    let mut bad = good.clone();
    let page = 4096;
    for p in [3usize, 5, 6] {
        for b in &mut bad[p * page + 8..(p + 1) * page] {
            *b = 0xA5;
        }
    }
    refused_untouched(dir.path(), &db, &bad);

    // 3. Cut short (copied while being written).
    refused_untouched(dir.path(), &db, &good[..good.len() / 2]);

    // The good file still starts.
    std::fs::write(&db, &good).unwrap();
    let app = start_ready(&config).await;
    app.shutdown().await.unwrap();
}

/// RSS of a process in bytes, from /proc.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_down_for_days_backs_off_counts_and_holds_memory_flat() {
    let weather = FakeWeather::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_test_config(dir.path(), "");
    let url = weather.url();
    let p = tokio::task::block_in_place(|| {
        ServeProcess::start(
            dir.path(),
            &["--config", config.to_str().unwrap()],
            &[
                ("METEOMESH__WEATHER__OPEN_METEO_URL", url.as_str()),
                ("METEOMESH__WEATHER__MAX_BACKOFF", "5ms"),
                ("METEOMESH__WEATHER__REQUEST_TIMEOUT", "2s"),
                // Two days of cycles in seconds: without limits, or the quota would
                // (rightly) pace the 3,600 calls over hours.
                ("METEOMESH__WEATHER__OPEN_METEO_CALLS_PER_MINUTE", "0"),
                ("METEOMESH__WEATHER__OPEN_METEO_CALLS_PER_HOUR", "0"),
                ("METEOMESH__WEATHER__OPEN_METEO_CALLS_PER_DAY", "0"),
            ],
        )
    });
    let (token, _) = register(p.http, "alice", PW).await;
    for i in 0..3 {
        let body = json!({"place": {"lat": 40 + i, "lon": 9}, "max_temp": 30});
        let r = post_subscription(p.http, &token, &body.to_string()).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    weather.lock().down = Some(503);
    let poll = || poll_weather(p.http, &token);
    // One cycle every 10 minutes: 300 cycles are two days without weather.
    const WARM: usize = 50;
    const CYCLES: usize = 300;
    for _ in 0..WARM {
        poll().await;
    }
    let before = rss(p.child.id());
    let mut calls = 0;
    for _ in WARM..CYCLES {
        let report = poll().await;
        assert_eq!(report["failed_places"], 3, "{report}");
        calls += report["provider_calls"].as_u64().unwrap();
    }
    let after = rss(p.child.id());
    // Retries stay bounded per cycle: four attempts, then wait for the next cycle.
    assert_eq!(calls, 4 * (CYCLES - WARM) as u64);
    eprintln!(
        "provider down for {CYCLES} cycles: RSS {} KiB -> {} KiB",
        before / 1024,
        after / 1024
    );
    assert!(
        after < before + 2 * 1024 * 1024,
        "RSS grew from {before} to {after} bytes while the provider was down"
    );
    let r = get(p.http, "/readyz").await;
    assert_eq!(
        r.status, 200,
        "the node stays ready without weather: {}",
        r.body
    );
    let v = r.json();
    assert_eq!(v["weather"]["ok"], false);
    // The poller's own first fetch of the new places may have failed too.
    let failures = v["weather"]["consecutive_failures"].as_u64().unwrap();
    assert!(
        (4 * CYCLES as u64..=4 * CYCLES as u64 + 8).contains(&failures),
        "{v}"
    );
    let m = get(p.http, "/metrics").await.body;
    let failed = metric_value(
        &m,
        "meteomesh_weather_provider_calls_total{outcome=\"unavailable\",provider=\"open-meteo\"}",
    );
    assert_eq!(failed, Some(failures as f64), "{m}");

    // The provider returns: the next cycle fetches.
    weather.lock().down = None;
    let report = poll().await;
    assert_eq!(report["observations"], 3, "{report}");
    assert_eq!(get(p.http, "/readyz").await.json()["weather"]["ok"], true);
    let (status, _) = tokio::task::block_in_place(|| p.terminate());
    assert!(status.success());
}

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_clock_jumping_back_and_forth_breaks_nothing() {
    if !Path::new(LIBFAKETIME).exists() {
        assert!(
            std::env::var_os("METEOMESH_TEST_STRICT").is_none(),
            "{LIBFAKETIME} is missing (apt-get install faketime) and METEOMESH_TEST_STRICT is set"
        );
        eprintln!("skipped: {LIBFAKETIME} is missing (apt-get install faketime)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_test_config(dir.path(), "");
    // libfaketime moves the wall clock only (timers run on the monotonic clock, as the
    // kernel's do when NTP steps the time); the file is read again on every call.
    let clock = dir.path().join("faketime");
    std::fs::write(&clock, "+0").unwrap();
    let clock_file = clock.to_str().unwrap().to_owned();
    let p = tokio::task::block_in_place(|| {
        ServeProcess::start(
            dir.path(),
            &["--config", config.to_str().unwrap(), "--log-level", "debug"],
            &[
                ("LD_PRELOAD", LIBFAKETIME),
                ("FAKETIME_TIMESTAMP_FILE", clock_file.as_str()),
                ("FAKETIME_NO_CACHE", "1"),
                ("DONT_FAKE_MONOTONIC", "1"),
            ],
        )
    });
    let (before_jump, id) = register(p.http, "alice", PW).await;
    let mut phone = MqttClient::connect(mqtt_options(
        p.mqtt.unwrap(),
        "alice-phone",
        Some(("alice", before_jump.as_str())),
    ))
    .await;
    let own = format!("meteomesh/v1/users/{id}/test");
    phone.subscribe(&own, rumqttc::QoS::AtLeastOnce).await;
    let mut svc = MqttClient::connect(mqtt_options(
        p.mqtt.unwrap(),
        "svc",
        Some((SERVICE_USER, SERVICE_PASSWORD)),
    ))
    .await;

    // Two days back (a correction), then to 1970 (a board without a clock battery after a
    // reboot), then back to the true time (NTP answers).
    for (spec, year) in [
        ("-2d", None),
        ("@1970-01-02 00:00:00", Some("1970-01-0")),
        ("+0", None),
    ] {
        std::fs::write(&clock, spec).unwrap();
        // Tokens issued before the jump are still good, new logins work and give good
        // tokens, writes and reads go on, the node stays ready.
        let r = api(p.http, "GET", "/api/v1/me", Some(&before_jump), "").await;
        assert_eq!(r.status, 200, "{spec}: {}", r.body);
        let r = post_json(
            p.http,
            "/api/v1/auth/login",
            &json!({"username": "alice", "password": PW}).to_string(),
        )
        .await;
        assert_eq!(r.status, 200, "{spec}: {}", r.body);
        let fresh = r.json()["token"].as_str().unwrap().to_owned();
        let body = json!({"place": {"lat": 45, "lon": 9}, "max_temp": 30});
        let r = post_subscription(p.http, &fresh, &body.to_string()).await;
        assert_eq!(r.status, 201, "{spec}: {}", r.body);
        let r = get(p.http, "/readyz").await;
        assert_eq!(r.status, 200, "{spec}: {}", r.body);
        // The MQTT session across the jump still carries messages.
        svc.publish(&own, rumqttc::QoS::AtLeastOnce, false, spec.as_bytes())
            .await;
        let got = phone.next_publish(|t| t == own).await;
        assert_eq!(&got.payload[..], spec.as_bytes());
        // The log's time stamps come from the wall clock: proof that the jump happened.
        let lines: Vec<String> = p.log.try_iter().collect();
        if let Some(year) = year {
            assert!(
                lines.iter().any(|l| l.starts_with(year)),
                "the clock did not move to {spec}: {lines:?}"
            );
        }
    }
    // A token issued while the clock read 1970 is still good at the true time.
    let r = api(
        p.http,
        "GET",
        "/api/v1/subscriptions",
        Some(&before_jump),
        "",
    )
    .await;
    assert_eq!(r.json().as_array().unwrap().len(), 3, "{}", r.body);
    let (status, log) = tokio::task::block_in_place(|| p.terminate());
    assert!(status.success(), "{log:?}");
}
