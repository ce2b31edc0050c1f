//! Load benchmark (`cargo bench --bench bench_load`; `scripts/bench.sh` runs it in release
//! mode): meteomesh — the shipped static binary when `METEOMESH_BENCH_BIN` names it —
//! beside Debian's mosquitto on the same machine, both with password logins and an ACL:
//! (a) broker fan-in (8 publishers → 1 subscriber) and fan-out (1 → 8) at full speed, QoS
//!     0 and 1: deliveries/s, p50/p99 latency; and latency at a paced 1,000 msg/s;
//! (b) 1,000 MQTT clients connected and subscribed: memory per client;
//! (c) HTTP API: requests/s for login and for listing subscriptions (keep-alive);
//! (d) soak: `METEOMESH_BENCH_SOAK_SECS` (600) of moderate MQTT + HTTP load; RSS sampled
//!     every 10 s must not grow after the first minute.
//! Writes the Markdown tables to target/bench/bench.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{ServeProcess, WAIT, write_test_config};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const USER: &str = "bench";
const PASSWORD: &str = "bench-password-1";
const FAN: usize = 8;
const PER_RUN: usize = 40_000;
const CLIENTS: usize = 1_000;

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_nanos() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

struct Broker {
    name: &'static str,
    mqtt: SocketAddr,
    pid: u32,
}

fn options(b: &Broker, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, b.mqtt.ip().to_string(), b.mqtt.port());
    o.set_credentials(USER, PASSWORD);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_inflight(100);
    o
}

/// Connects and waits for the CONNACK.
async fn connect(b: &Broker, id: &str, cap: usize) -> (AsyncClient, EventLoop) {
    let (c, mut ev) = AsyncClient::new(options(b, id), cap);
    loop {
        match tokio::time::timeout(WAIT, ev.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return (c, ev),
            Ok(Ok(_)) => {}
            other => panic!("{} connect {id}: {other:?}", b.name),
        }
    }
}

async fn subscribe(c: &AsyncClient, ev: &mut EventLoop, filter: &str, qos: QoS) {
    c.subscribe(filter, qos).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = ev.poll().await.unwrap() {
            return;
        }
    }
}

/// Receives until `want` messages or `idle` without one; returns latencies in µs and
/// when the last message came.
fn receiver(
    mut ev: EventLoop,
    want: usize,
    idle: Duration,
) -> tokio::task::JoinHandle<(Vec<f64>, Instant)> {
    tokio::spawn(async move {
        let mut lat = Vec::with_capacity(want);
        let mut last = Instant::now();
        while lat.len() < want {
            match tokio::time::timeout(idle, ev.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    let sent = u64::from_be_bytes(p.payload[..8].try_into().unwrap());
                    lat.push((now_nanos().saturating_sub(sent)) as f64 / 1000.0);
                    last = Instant::now();
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("subscriber: {e}"),
                Err(_) => break,
            }
        }
        (lat, last)
    })
}

/// Drives a publisher's event loop (acks) until it is dropped.
fn pump(mut ev: EventLoop) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while ev.poll().await.is_ok() {} })
}

fn payload() -> Vec<u8> {
    let mut p = now_nanos().to_be_bytes().to_vec();
    p.resize(64, 0);
    p
}

struct Run {
    rate: f64,
    delivered: usize,
    expected: usize,
    p50: f64,
    p99: f64,
}

/// `publishers` clients each send `each` messages to their own topic under `base`;
/// `subscribers` clients subscribe to `base/+`. Paced at `rate` msg/s overall if given.
async fn pubsub(
    b: &Broker,
    tag: &str,
    qos: QoS,
    (publishers, subscribers): (usize, usize),
    each: usize,
    rate: Option<f64>,
) -> Run {
    let base = format!("bench/{tag}/{}", now_nanos());
    let expected = publishers * each * subscribers;
    let mut receivers = Vec::new();
    for s in 0..subscribers {
        let (c, mut ev) = connect(b, &format!("{tag}-s{s}-{}", now_nanos()), 16).await;
        subscribe(&c, &mut ev, &format!("{base}/+"), qos).await;
        receivers.push((c, receiver(ev, publishers * each, Duration::from_secs(5))));
    }
    let mut pubs = Vec::new();
    for p in 0..publishers {
        let (c, ev) = connect(b, &format!("{tag}-p{p}-{}", now_nanos()), 1024).await;
        pubs.push((c, pump(ev)));
    }
    let started = Instant::now();
    let mut senders = Vec::new();
    for (i, (c, _)) in pubs.iter().enumerate() {
        let c = c.clone();
        let topic = format!("{base}/{i}");
        let gap = rate.map(|r| Duration::from_secs_f64(publishers as f64 / r));
        senders.push(tokio::spawn(async move {
            let t0 = Instant::now();
            for n in 0..each {
                if let Some(gap) = gap {
                    let due = t0 + gap * n as u32;
                    tokio::time::sleep_until(due.into()).await;
                }
                c.publish(&topic, qos, false, payload()).await.unwrap();
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let mut lat = Vec::new();
    let mut last = started;
    for (_, r) in receivers {
        let (l, at) = r.await.unwrap();
        lat.extend(l);
        last = last.max(at);
    }
    // Up to the last message received (the receivers wait 5 s more for lost ones).
    let elapsed = (last - started).as_secs_f64().max(1e-3);
    let delivered = lat.len();
    lat.sort_by(f64::total_cmp);
    for (c, h) in pubs {
        let _ = c.disconnect().await;
        h.abort();
    }
    Run {
        rate: delivered as f64 / elapsed,
        delivered,
        expected,
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
    }
}

async fn many_clients(b: &Broker) -> (u64, u64) {
    let before = rss_kib(b.pid);
    let mut clients = Vec::new();
    for chunk in 0..CLIENTS / 50 {
        let mut batch = Vec::new();
        for i in 0..50 {
            let n = chunk * 50 + i;
            let b = Broker {
                name: b.name,
                mqtt: b.mqtt,
                pid: b.pid,
            };
            batch.push(tokio::spawn(async move {
                let (c, mut ev) = connect(&b, &format!("many-{n}"), 4).await;
                subscribe(&c, &mut ev, &format!("bench/many/{n}"), QoS::AtLeastOnce).await;
                (c, pump(ev))
            }));
        }
        for h in batch {
            clients.push(h.await.unwrap());
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(b.pid);
    for (c, h) in clients {
        let _ = c.disconnect().await;
        tokio::time::sleep(Duration::from_micros(200)).await;
        h.abort();
    }
    (before, after)
}

/// A keep-alive HTTP/1.1 connection for the API load.
struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    async fn open(addr: SocketAddr) -> Http {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Http {
            stream,
            buf: Vec::new(),
        }
    }

    async fn call(&mut self, method: &str, path: &str, token: Option<&str>, body: &str) -> u16 {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(req.as_bytes()).await.unwrap();
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    self.read().await;
                }
                self.buf.drain(..end + 4 + len);
                return status;
            }
            self.read().await;
        }
    }

    async fn read(&mut self) {
        let mut chunk = [0u8; 16384];
        let n = self.stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// `workers` connections call `method path` for `secs`; requests/s and p50/p99 in ms.
async fn http_load(
    addr: SocketAddr,
    workers: usize,
    secs: u64,
    method: &'static str,
    path: &'static str,
    token: Option<String>,
    body: String,
) -> (f64, f64, f64) {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let token = token.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Http::open(addr).await;
            let mut lat = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                let status = h.call(method, path, token.as_deref(), &body).await;
                assert_eq!(status / 100, 2, "{method} {path}: {status}");
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort_by(f64::total_cmp);
    (
        lat.len() as f64 / secs as f64,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
    )
}

fn start_mosquitto(dir: &Path) -> (Child, SocketAddr) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let pw = dir.join("passwd");
    let ok = Command::new(common::debian_program("mosquitto_passwd"))
        .args(["-b", "-c", pw.to_str().unwrap(), USER, PASSWORD])
        .status()
        .unwrap();
    assert!(ok.success());
    let acl = dir.join("acl");
    std::fs::write(&acl, format!("user {USER}\ntopic readwrite #\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for p in [dir, pw.as_path(), acl.as_path()] {
        let mode = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nallow_anonymous false\npassword_file {}\nacl_file {}\npersistence false\nmax_inflight_messages 32\nmax_queued_messages 1000\nmax_packet_size 262144\nmax_connections -1\nlistener {port} 127.0.0.1\n",
            pw.display(),
            acl.display()
        ),
    )
    .unwrap();
    common::spawn_mosquitto(&conf, port)
}

/// (label, (publishers, subscribers), messages per publisher, paced rate).
type Shape = (&'static str, (usize, usize), usize, Option<f64>);
/// (label, method, path, token, body, connections).
type HttpLoad = (
    &'static str,
    &'static str,
    &'static str,
    Option<String>,
    String,
    usize,
);

fn qos_name(q: QoS) -> &'static str {
    match q {
        QoS::AtMostOnce => "0",
        QoS::AtLeastOnce => "1",
        QoS::ExactlyOnce => "2",
    }
}

async fn broker_http_and_soak() {
    let t_all = Instant::now();
    epoch();
    let dir = tempfile::tempdir().unwrap();
    let config = write_test_config(dir.path(), "");
    let bin = std::env::var("METEOMESH_BENCH_BIN").ok();
    let command = match &bin {
        Some(path) => Command::new(path),
        None => common::bin(),
    };
    let users = format!("{USER}:{PASSWORD}");
    let p = tokio::task::block_in_place(|| {
        ServeProcess::start_command(
            command,
            dir.path(),
            &["--config", config.to_str().unwrap()],
            &[
                ("METEOMESH__BUS__USERS", users.as_str()),
                ("METEOMESH__BUS__MAX_CONNECTIONS", "2000"),
            ],
        )
    });
    let mdir = tempfile::tempdir().unwrap();
    let (mut mosq, mosq_addr) = start_mosquitto(mdir.path());
    let brokers = [
        Broker {
            name: "meteomesh",
            mqtt: p.mqtt.unwrap(),
            pid: p.child.id(),
        },
        Broker {
            name: "mosquitto",
            mqtt: mosq_addr,
            pid: mosq.id(),
        },
    ];
    let mut md = String::new();
    let binary = bin
        .clone()
        .unwrap_or_else(|| "target/release/meteomesh (glibc)".into());
    writeln!(md, "Binary: `{binary}`; mosquitto: Debian's, same limits (inflight 32, queue 1000, 256 KiB packets), password file and ACL file. Clients: rumqttc in one process on the same machine, 64-byte payloads.\n").unwrap();

    // (a) throughput and latency.
    writeln!(md, "### Broker throughput and latency\n").unwrap();
    writeln!(md, "| run | QoS | meteomesh msg/s | mosquitto msg/s | ratio | meteomesh p50 / p99 ms | mosquitto p50 / p99 ms | delivered (mm / mosq) |").unwrap();
    writeln!(md, "|---|---|---|---|---|---|---|---|").unwrap();
    let shapes: [Shape; 3] = [
        ("fan-in 8→1", (FAN, 1), PER_RUN / FAN, None),
        ("fan-out 1→8", (1, FAN), PER_RUN / FAN, None),
        ("paced 1→1 at 1,000/s", (1, 1), 5_000, Some(1000.0)),
    ];
    for (label, shape, each, rate) in shapes {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let mut runs = Vec::new();
            for b in &brokers {
                let r = pubsub(b, "tp", qos, shape, each, rate).await;
                println!(
                    "BENCH {label} qos{} {}: {:.0} msg/s, p50 {:.2} ms, p99 {:.2} ms, {}/{}",
                    qos_name(qos),
                    b.name,
                    r.rate,
                    r.p50 / 1000.0,
                    r.p99 / 1000.0,
                    r.delivered,
                    r.expected
                );
                runs.push(r);
            }
            let (m, q) = (&runs[0], &runs[1]);
            writeln!(
                md,
                "| {label} | {} | {:.0} | {:.0} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {}/{} / {}/{} |",
                qos_name(qos),
                m.rate,
                q.rate,
                m.rate / q.rate,
                m.p50 / 1000.0,
                m.p99 / 1000.0,
                q.p50 / 1000.0,
                q.p99 / 1000.0,
                m.delivered,
                m.expected,
                q.delivered,
                q.expected
            )
            .unwrap();
        }
    }

    // (b) 1,000 clients.
    writeln!(
        md,
        "\n### {CLIENTS} clients connected and subscribed (QoS 1)\n"
    )
    .unwrap();
    writeln!(
        md,
        "| broker | RSS before | RSS with {CLIENTS} clients | per client |"
    )
    .unwrap();
    writeln!(md, "|---|---|---|---|").unwrap();
    let mut per = HashMap::new();
    for b in &brokers {
        let (before, after) = many_clients(b).await;
        let each = (after.saturating_sub(before)) as f64 / CLIENTS as f64;
        per.insert(b.name, each);
        println!(
            "BENCH {CLIENTS} clients {}: {before} KiB -> {after} KiB, {each:.1} KiB/client",
            b.name
        );
        writeln!(
            md,
            "| {} | {:.1} MiB | {:.1} MiB | {each:.1} KiB |",
            b.name,
            before as f64 / 1024.0,
            after as f64 / 1024.0
        )
        .unwrap();
    }
    writeln!(
        md,
        "\nPer-client memory ratio meteomesh/mosquitto: {:.2}",
        per["meteomesh"] / per["mosquitto"]
    )
    .unwrap();

    // (c) HTTP API.
    let http = p.http;
    let r = common::post_json(
        http,
        "/api/v1/auth/register",
        &json!({"username": "alice", "password": PASSWORD}).to_string(),
    )
    .await;
    let token = r.json()["token"].as_str().unwrap().to_owned();
    for i in 0..10 {
        let body = json!({"place": {"lat": 40.0 + i as f64, "lon": 9}, "max_temp": 30});
        let r = common::post_subscription(http, &token, &body.to_string()).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    writeln!(md, "\n### HTTP API (keep-alive connections)\n").unwrap();
    writeln!(md, "| request | connections | req/s | p50 ms | p99 ms |").unwrap();
    writeln!(md, "|---|---|---|---|---|").unwrap();
    let login = json!({"username": "alice", "password": PASSWORD}).to_string();
    let loads: [HttpLoad; 3] = [
        (
            "GET /api/v1/subscriptions (10 items)",
            "GET",
            "/api/v1/subscriptions",
            Some(token.clone()),
            String::new(),
            8,
        ),
        ("GET /healthz", "GET", "/healthz", None, String::new(), 8),
        (
            "POST /api/v1/auth/login (Argon2id)",
            "POST",
            "/api/v1/auth/login",
            None,
            login,
            2,
        ),
    ];
    for (label, method, path, tok, body, workers) in loads {
        let (rps, p50, p99) = http_load(http, workers, 8, method, path, tok, body).await;
        println!("BENCH http {label}: {rps:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms");
        writeln!(
            md,
            "| {label} | {workers} | {rps:.0} | {p50:.2} | {p99:.2} |"
        )
        .unwrap();
    }

    // (d) soak.
    let soak: u64 = std::env::var("METEOMESH_BENCH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let mm = &brokers[0];
    let rate = 200.0;
    let per_pub = (rate * soak as f64) as usize;
    let soak_task = {
        let b = Broker {
            name: mm.name,
            mqtt: mm.mqtt,
            pid: mm.pid,
        };
        tokio::spawn(async move {
            pubsub(&b, "soak", QoS::AtLeastOnce, (1, 2), per_pub, Some(rate)).await
        })
    };
    let http_task = {
        let token = token.clone();
        tokio::spawn(async move {
            let mut h = Http::open(http).await;
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < Duration::from_secs(soak) {
                let due = start + Duration::from_millis(50 * n);
                tokio::time::sleep_until(due.into()).await;
                let path = if n.is_multiple_of(100) {
                    "/metrics"
                } else {
                    "/api/v1/subscriptions"
                };
                assert_eq!(h.call("GET", path, Some(&token), "").await, 200);
                n += 1;
            }
            n
        })
    };
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(soak) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        samples.push((started.elapsed().as_secs(), rss_kib(mm.pid)));
    }
    let requests = http_task.await.unwrap();
    let run = soak_task.await.unwrap();
    let warm = samples
        .iter()
        .find(|(t, _)| *t >= 60.min(soak / 2))
        .map(|s| s.1)
        .unwrap_or(samples[0].1);
    let last = samples.last().unwrap().1;
    let max = samples.iter().map(|s| s.1).max().unwrap();
    let growth = last as i64 - warm as i64;
    println!(
        "BENCH soak {soak} s: RSS after warm-up {warm} KiB, end {last} KiB, max {max} KiB; {} of {} messages, p99 {:.2} ms; {requests} HTTP requests",
        run.delivered,
        run.expected,
        run.p99 / 1000.0
    );
    writeln!(
        md,
        "\n### Soak: {soak} s at {rate:.0} msg/s QoS 1 (1 → 2 subscribers) + 20 HTTP req/s\n"
    )
    .unwrap();
    writeln!(md, "| RSS after warm-up | RSS at the end | RSS max | growth | messages delivered | p99 ms | HTTP requests |").unwrap();
    writeln!(md, "|---|---|---|---|---|---|---|").unwrap();
    writeln!(
        md,
        "| {:.1} MiB | {:.1} MiB | {:.1} MiB | {:+} KiB | {}/{} | {:.2} | {requests} |",
        warm as f64 / 1024.0,
        last as f64 / 1024.0,
        max as f64 / 1024.0,
        growth,
        run.delivered,
        run.expected,
        run.p99 / 1000.0
    )
    .unwrap();
    let trace: Vec<String> = samples
        .iter()
        .map(|(t, r)| format!("{t}s:{:.1}", *r as f64 / 1024.0))
        .collect();
    writeln!(md, "\nRSS samples (MiB): {}", trace.join(" ")).unwrap();

    let _ = mosq.kill();
    let _ = mosq.wait();
    let (status, _) = tokio::task::block_in_place(|| p.terminate());
    assert!(status.success());
    writeln!(md, "\nWhole run: {:.0} s.", t_all.elapsed().as_secs_f64()).unwrap();
    std::fs::create_dir_all("target/bench").unwrap();
    std::fs::write("target/bench/bench.md", &md).unwrap();
    println!("BENCH report: target/bench/bench.md");
    assert_eq!(run.delivered, run.expected, "the soak lost messages");
    assert!(
        growth < 4 * 1024,
        "RSS grew by {growth} KiB during the soak"
    );
}

fn main() {
    common::run_benchmark(async {
        broker_http_and_soak().await;
    });
}
