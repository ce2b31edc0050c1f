//! Shared test harness: start the real app in-process on ephemeral loopback ports with a
//! temporary database, a minimal HTTP client, MQTT helpers, and a child-process runner
//! for the binary.

#![allow(dead_code)]

pub mod fake_telegram;
pub mod fake_weather;
pub mod mesh;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use meteomesh::app::{Listeners, RunningApp};
use meteomesh::config::Config;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

pub const SERVICE_USER: &str = "svc";
pub const SERVICE_PASSWORD: &str = "svc-password-1";
/// Upper bound for anything a test waits on; generous for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(20);

/// A loopback address nothing listens on: tests never reach real weather services.
pub const DEAD_URL: &str = "http://127.0.0.1:9";

pub fn loopback0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A config for tests: loopback port 0 everywhere, database in `dir`, one service account.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.http.listen = loopback0();
    c.bus.tcp_listen = loopback0();
    c.bus.ws_listen = loopback0();
    c.storage.path = test_db_path(dir);
    // Weather providers point at a closed loopback port unless a test serves a fake.
    c.weather.open_meteo_url = DEAD_URL.into();
    c.weather.geocoding_url = DEAD_URL.into();
    c.weather.openweathermap_url = DEAD_URL.into();
    c.bus.users.push(meteomesh::config::BusUser {
        username: SERVICE_USER.into(),
        password: meteomesh::config::Secret::new(SERVICE_PASSWORD),
    });
    c
}

pub struct TestApp {
    pub app: RunningApp,
    pub http: SocketAddr,
    pub mqtt: Option<SocketAddr>,
    pub ws: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub config: Config,
}

/// Starts the app with `config` (not waiting for readiness).
pub async fn start_app(config: &Config) -> RunningApp {
    let listeners = Listeners::bind(config).await.unwrap();
    RunningApp::start(config, listeners, CancellationToken::new())
        .await
        .unwrap()
}

/// Starts the app with `config` and waits until it is ready.
pub async fn start_ready(config: &Config) -> RunningApp {
    let app = start_app(config).await;
    app.ready(WAIT).await.unwrap();
    app
}

impl TestApp {
    pub async fn start() -> TestApp {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        edit(&mut config);
        config.validate().unwrap();
        let app = start_ready(&config).await;
        TestApp {
            http: app.addresses.http.unwrap(),
            mqtt: app.addresses.mqtt,
            ws: app.addresses.ws,
            app,
            dir,
            config,
        }
    }

    /// An external MQTT client on the public TCP listener, logged in as the service account.
    pub async fn service_client(&self, client_id: &str) -> MqttClient {
        MqttClient::connect(mqtt_options(
            self.mqtt.expect("TCP listener enabled"),
            client_id,
            Some((SERVICE_USER, SERVICE_PASSWORD)),
        ))
        .await
    }

    pub fn db_path(&self) -> PathBuf {
        self.config.storage.path.clone()
    }
}

/// The value of one series in Prometheus text: `name` or `name{labels}`, spelled
/// exactly as /metrics prints it.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// Sends one HTTP/1.1 request and reads the whole answer (`Connection: close`).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Response {
    let headers: Vec<(&str, &str)> = content_type
        .map(|ct| vec![("Content-Type", ct)])
        .unwrap_or_default();
    request(addr, method, path, &headers, body).await
}

/// Like [`http`] with any headers.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("HTTP answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (headers, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    Response {
        status,
        headers: headers.to_owned(),
        body: body.to_owned(),
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Response {
    http(addr, "GET", path, None, b"").await
}

pub async fn post_json(addr: SocketAddr, path: &str, body: &str) -> Response {
    http(
        addr,
        "POST",
        path,
        Some("application/json"),
        body.as_bytes(),
    )
    .await
}

/// A JSON API call with a bearer token (`body` empty for none).
pub async fn api(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    request(addr, method, path, &headers, body.as_bytes()).await
}

/// Gives account `user_id` the Telegram chat `chat` as already proven, as when an
/// administrator set it (proving a chat has its own tests).
pub fn set_proven_chat(t: &TestApp, user_id: i64, chat: i64) {
    rusqlite::Connection::open(t.db_path())
        .unwrap()
        .execute(
            "UPDATE users SET telegram_chat_id = ?2, telegram_chat_confirmed = 1 WHERE id = ?1",
            [user_id, chat],
        )
        .unwrap();
}

/// `POST /api/v1/me/telegram/confirm` with `code`: proves the chat the user entered.
pub async fn confirm_chat(addr: SocketAddr, token: &str, code: &str) -> Response {
    let body = serde_json::json!({ "code": code }).to_string();
    api(
        addr,
        "POST",
        "/api/v1/me/telegram/confirm",
        Some(token),
        &body,
    )
    .await
}

/// `POST /api/v1/admin/weather/poll` as `admin`: runs a polling cycle, returns its report.
pub async fn poll_weather(addr: SocketAddr, admin: &str) -> serde_json::Value {
    let r = api(addr, "POST", "/api/v1/admin/weather/poll", Some(admin), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// `POST /api/v1/subscriptions` with `body` as `token`'s user.
pub async fn post_subscription(addr: SocketAddr, token: &str, body: &str) -> Response {
    api(addr, "POST", "/api/v1/subscriptions", Some(token), body).await
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// Registers `username` and returns (token, user id).
pub async fn register(addr: SocketAddr, username: &str, password: &str) -> (String, i64) {
    let r = post_json(
        addr,
        "/api/v1/auth/register",
        &serde_json::json!({"username": username, "password": password}).to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    (
        v["token"].as_str().unwrap().to_owned(),
        v["user"]["id"].as_i64().unwrap(),
    )
}

/// An external MQTT client (rumqttc) and its event loop, driven by the test.
pub struct MqttClient {
    pub client: AsyncClient,
    pub eventloop: EventLoop,
}

pub fn mqtt_options(addr: SocketAddr, id: &str, credentials: Option<(&str, &str)>) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    // A test drives its client only while it awaits it, so the client sends no PINGREQ
    // while the test waits on something else; 60 s (the broker allows 90 s of silence)
    // keeps a slow step on a loaded machine from looking like a dead client.
    o.set_keep_alive(Duration::from_secs(60));
    if let Some((u, p)) = credentials {
        o.set_credentials(u, p);
    }
    o
}

impl MqttClient {
    /// Connects and waits for the CONNACK; panics on refusal.
    pub async fn connect(opts: MqttOptions) -> MqttClient {
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let ack = tokio::time::timeout(WAIT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => return ack,
                    Ok(_) => {}
                    Err(e) => panic!("connect failed: {e}"),
                }
            }
        })
        .await
        .expect("CONNACK in time");
        assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
        MqttClient { client, eventloop }
    }

    /// Subscribes and waits for the SUBACK, so later publishes are sure to arrive.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).await.unwrap();
        tokio::time::timeout(WAIT, async {
            loop {
                if let Event::Incoming(Packet::SubAck(ack)) = self.eventloop.poll().await.unwrap() {
                    assert!(
                        ack.return_codes
                            .iter()
                            .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure)),
                        "subscription refused: {ack:?}"
                    );
                    return;
                }
            }
        })
        .await
        .expect("SUBACK in time");
    }

    /// Next PUBLISH whose topic passes `pred` (others are skipped).
    pub async fn next_publish(&mut self, pred: impl Fn(&str) -> bool) -> rumqttc::Publish {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Event::Incoming(Packet::Publish(p)) = self.eventloop.poll().await.unwrap()
                    && pred(&p.topic)
                {
                    return p;
                }
            }
        })
        .await
        .expect("message in time")
    }

    /// Publishes and drives the event loop until the packet has left: for QoS 1 until
    /// the broker's PUBACK, for QoS 0 until it is written.
    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .unwrap();
        tokio::time::timeout(WAIT, async {
            loop {
                match (qos, self.eventloop.poll().await.unwrap()) {
                    (QoS::AtLeastOnce, Event::Incoming(Packet::PubAck(_)))
                    | (QoS::AtMostOnce, Event::Outgoing(rumqttc::Outgoing::Publish(_))) => return,
                    _ => {}
                }
            }
        })
        .await
        .expect("publish sent in time");
    }
}

/// Tries to connect and returns the CONNACK code or the error text.
pub async fn try_connect(opts: MqttOptions) -> Result<rumqttc::ConnectReturnCode, String> {
    let (_client, mut eventloop) = AsyncClient::new(opts, 8);
    tokio::time::timeout(WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack.code),
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return Ok(code),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .expect("connect outcome in time")
}

/// A program from Debian's mosquitto packages (sbin is not always on PATH).
pub fn debian_program(program: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{program}` not found: install Debian's mosquitto package (scripts/test.sh does)");
}

/// Starts mosquitto with `config`, which must listen on 127.0.0.1:`port`, and waits until
/// it accepts connections.
pub fn spawn_mosquitto(config: &Path, port: u16) -> (Child, SocketAddr) {
    let child = Command::new(debian_program("mosquitto"))
        .arg("-c")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = std::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "mosquitto did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, addr)
}

/// The built binary.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meteomesh"))
}

/// A `meteomesh serve` child process, its addresses read from the "ready" log line.
pub struct ServeProcess {
    pub child: Child,
    pub http: SocketAddr,
    pub mqtt: Option<SocketAddr>,
    pub log: mpsc::Receiver<String>,
    /// The log lines before "meteomesh ready" (the ready line included).
    pub startup_log: Vec<String>,
}

fn field(line: &str, name: &str) -> Option<SocketAddr> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    line[start..].split_whitespace().next()?.parse().ok()
}

impl ServeProcess {
    /// Starts `meteomesh` with `args` and `envs` in `cwd`; waits for "meteomesh ready".
    pub fn start(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> ServeProcess {
        Self::start_command(bin(), cwd, args, envs)
    }

    /// Like [`ServeProcess::start`] with another build of the binary (a benchmark runs
    /// the shipped static one).
    pub fn start_command(
        command: Command,
        cwd: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> ServeProcess {
        let mut command = command;
        let mut child = command
            .args(args)
            .envs(envs.iter().copied())
            .env("NO_COLOR", "1")
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(WAIT) {
                Ok(line) if line.contains("meteomesh ready") => {
                    let http = field(&line, "http").expect("http address in ready line");
                    let mqtt = field(&line, "mqtt");
                    seen.push(line);
                    return ServeProcess {
                        child,
                        http,
                        mqtt,
                        log: rx,
                        startup_log: seen,
                    };
                }
                Ok(line) => seen.push(line),
                Err(_) => {
                    let _ = child.kill();
                    panic!("no ready line; log so far:\n{}", seen.join("\n"));
                }
            }
        }
    }

    /// Sends SIGTERM and returns the exit status and the rest of the log.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
        let status = wait_child(&mut self.child);
        (status, self.rest_of_log())
    }

    /// The log lines after "ready", up to the end of the process's stderr.
    pub fn rest_of_log(&self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.log.recv_timeout(WAIT) {
            lines.push(line);
        }
        lines
    }
}

/// Waits for a child to exit, killing it after [`WAIT`].
pub fn wait_child(child: &mut Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TOML config file for child processes: loopback port 0, database in `dir`.
pub fn write_test_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("meteomesh-test.toml");
    let db = test_db_path(dir);
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = \"{}\"\n\n[weather]\nopen_meteo_url = \"{DEAD_URL}\"\ngeocoding_url = \"{DEAD_URL}\"\nopenweathermap_url = \"{DEAD_URL}\"\n\n[bus]\ntcp_listen = \"127.0.0.1:0\"\nws_listen = \"127.0.0.1:0\"\n\n[[bus.users]]\nusername = \"{SERVICE_USER}\"\npassword = \"{SERVICE_PASSWORD}\"\n{extra}",
        db.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `f` on a connection of its own to the database at `path`: bulk setup and checks
/// in tests and benchmarks (the app's own code goes through storage's typed methods).
pub fn with_connection<T>(
    path: &Path,
    f: impl FnOnce(&mut rusqlite::Connection) -> Result<T, meteomesh::storage::StorageError>,
) -> Result<T, meteomesh::storage::StorageError> {
    let mut conn =
        rusqlite::Connection::open(path).map_err(meteomesh::storage::StorageError::from)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(meteomesh::storage::StorageError::from)?;
    f(&mut conn)
}

/// Runs a benchmark's `main` future on the runtime the tests use (2 workers). `cargo bench`
/// passes `--bench`; `cargo test --all-targets` runs a benchmark binary without it, and
/// then it only checks that it was built.
pub fn run_benchmark(benchmark: impl std::future::Future<Output = ()>) {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(benchmark);
}

/// Where [`test_config`] and [`write_test_config`] put the database under `dir`.
pub fn test_db_path(dir: &Path) -> PathBuf {
    dir.join("data").join("meteomesh.db")
}
