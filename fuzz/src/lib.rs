//! The harness the app-level fuzz targets share: one real meteomesh started in-process
//! (temporary database, loopback port 0, weather and Telegram pointing at a closed port,
//! mesh on with no peers), an admin's login token, and an MQTT user session.
//!
//! Any panic anywhere in the app aborts the process, so libFuzzer reports it even when it
//! happens in a spawned task that would otherwise die quietly.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use meteomesh::app::{Listeners, RunningApp};
use meteomesh::config::{BusUser, Config, Secret};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const PASSWORD: &str = "fuzz-password-1";
const DEAD_URL: &str = "http://127.0.0.1:9";
const SERVICE: (&str, &str) = ("svc", "svc-password-1");

pub struct Harness {
    pub rt: tokio::runtime::Runtime,
    pub http: SocketAddr,
    pub mqtt: SocketAddr,
    /// Login token of the first account (an admin).
    pub admin_token: String,
    /// The MQTT session of the admin account ("fuzzer").
    pub user: AsyncClient,
    acks: std::sync::Mutex<mpsc::Receiver<()>>,
    _app: RunningApp,
    _dir: tempfile::TempDir,
}

pub fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(start)
}

fn start() -> Harness {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut c = Config::default();
    let zero = SocketAddr::from(([127, 0, 0, 1], 0));
    c.http.listen = zero;
    c.bus.tcp_listen = zero;
    c.bus.ws_listen = zero;
    c.storage.path = dir.path().join("fuzz.db");
    c.weather.open_meteo_url = DEAD_URL.into();
    c.weather.geocoding_url = DEAD_URL.into();
    c.weather.openweathermap_url = DEAD_URL.into();
    c.telegram.api_base = DEAD_URL.into();
    c.log.level = "error".into();
    c.mesh.enabled = true;
    c.mesh.link_password = Secret::new("fuzz-link-password-0001");
    c.mesh.shared_secret = Secret::new("fuzz-shared-secret-0123456789abcdef");
    c.bus.users.push(BusUser {
        username: SERVICE.0.into(),
        password: Secret::new(SERVICE.1),
    });
    c.validate().expect("fuzz config is valid");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let app = rt.block_on(async {
        let listeners = Listeners::bind(&c).await.expect("bind");
        let app = RunningApp::start(&c, listeners, CancellationToken::new())
            .await
            .expect("start");
        app.ready(Duration::from_secs(30)).await.expect("ready");
        app
    });
    let http = app.addresses.http.expect("http");
    let mqtt = app.addresses.mqtt.expect("mqtt");
    let body = format!(r#"{{"username":"fuzzer","password":"{PASSWORD}"}}"#);
    let (status, answer) = request(http, "POST", "/api/v1/auth/register", None, body.as_bytes());
    assert_eq!(status, 201, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    let admin_token = v["token"].as_str().expect("token").to_owned();

    let (tx, rx) = mpsc::channel(64);
    let user = rt.block_on(async {
        let mut opts = MqttOptions::new("fuzzer-1", mqtt.ip().to_string(), mqtt.port());
        opts.set_credentials("fuzzer", PASSWORD);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(opts, 64);
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        let _ = tx.send(()).await;
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        client
    });
    // Any panic, in any task, is a finding.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("panic: {info}");
        std::process::abort();
    }));
    Harness {
        rt,
        http,
        mqtt,
        admin_token,
        user,
        acks: std::sync::Mutex::new(rx),
        _app: app,
        _dir: dir,
    }
}

impl Harness {
    /// Publishes as the fuzzer's MQTT session (QoS 1) and waits for the broker's ack.
    pub fn publish(&self, topic: &str, payload: &[u8]) {
        let mut acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        self.rt.block_on(async {
            self.user
                .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
                .await
                .expect("queue publish");
            tokio::time::timeout(Duration::from_secs(10), acks.recv())
                .await
                .expect("the broker did not acknowledge a publish within 10 s");
        });
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(body).expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (status, body.to_owned())
}

/// Percent-encodes every byte outside the unreserved set and `=`, `&`, for query strings.
pub fn percent_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 3);
    for &b in data {
        if b.is_ascii_alphanumeric() || b"-._~=&".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
