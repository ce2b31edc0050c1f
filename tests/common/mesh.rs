//! Mesh test helpers: node processes with mesh config, a raw inbox reader that counts
//! every copy it gets (and acknowledges), status polling, a delaying TCP proxy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meteomesh::contract::{self, InboxAck, InboxMessage};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::Value;
use tokio::sync::Notify;

use super::{ServeProcess, WAIT, api, write_test_config};

pub const LINK_PASSWORD: &str = "link-password-0123456789";
pub const SHARED_SECRET: &str = "mesh-shared-secret-0123456789-abcdef";

/// A free loopback port below the kernel's ephemeral range (32768 and up by default),
/// so no outgoing connection takes it between a node's stop and its restart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919) ^ rand_id();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(104_729)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One node: its directory (database, config) and, while running, its process.
pub struct MeshNode {
    pub dir: PathBuf,
    pub mqtt_port: u16,
    pub http_port: u16,
    pub peers: Vec<String>,
    pub extra: String,
    pub process: Option<ServeProcess>,
}

impl MeshNode {
    /// Prepares a node in `dir` with fixed ports (so a restart keeps its address).
    pub fn new(dir: &Path, peers: &[String], extra: &str) -> MeshNode {
        std::fs::create_dir_all(dir).unwrap();
        MeshNode {
            dir: dir.to_owned(),
            mqtt_port: free_port(),
            http_port: free_port(),
            peers: peers.to_vec(),
            extra: extra.to_owned(),
            process: None,
        }
    }

    pub fn mqtt(&self) -> String {
        format!("127.0.0.1:{}", self.mqtt_port)
    }

    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt().parse().unwrap()
    }

    pub fn http(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.http_port).parse().unwrap()
    }

    pub fn start(&mut self) {
        let peers = self
            .peers
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = write_test_config(
            &self.dir,
            &format!(
                "\n[mesh]\nenabled = true\nlink_password = \"{LINK_PASSWORD}\"\nshared_secret = \"{SHARED_SECRET}\"\npeers = [{peers}]\n{}\n",
                self.extra
            ),
        );
        let listen = format!("127.0.0.1:{}", self.http_port);
        let mqtt = self.mqtt();
        self.process = Some(ServeProcess::start(
            &self.dir,
            &["--config", config.to_str().unwrap()],
            &[
                ("METEOMESH__HTTP__LISTEN", listen.as_str()),
                ("METEOMESH__BUS__TCP_LISTEN", mqtt.as_str()),
                ("METEOMESH__LOG__LEVEL", "info"),
            ],
        ));
    }

    /// SIGKILL: no goodbye, no clean stop.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// SIGSTOP / SIGCONT: a node that hangs with its connections open (only the
    /// heartbeat tells).
    pub fn signal(&self, sig: &str) {
        let pid = self
            .process
            .as_ref()
            .expect("running")
            .child
            .id()
            .to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    pub fn stop(&mut self) {
        if let Some(p) = self.process.take() {
            let (status, _) = p.terminate();
            assert!(status.success(), "clean stop");
        }
    }
}

impl Drop for MeshNode {
    fn drop(&mut self) {
        // A failing test shows what each node logged.
        if std::thread::panicking()
            && let Some(p) = &self.process
        {
            eprintln!("--- log of the node in {}", self.dir.display());
            while let Ok(line) = p.log.try_recv() {
                eprintln!("{line}");
            }
        }
        self.kill();
    }
}

/// `n` running nodes in `dir`, every one after the first seeded with the first.
pub fn mesh_of(dir: &Path, n: usize) -> Vec<MeshNode> {
    let mut nodes: Vec<MeshNode> = Vec::new();
    for i in 0..n {
        let seeds: Vec<String> = nodes.first().map(|a| vec![a.mqtt()]).unwrap_or_default();
        let mut node = MeshNode::new(&dir.join(format!("n{i}")), &seeds, "");
        node.start();
        nodes.push(node);
    }
    nodes
}

/// Waits until every running node knows all `nodes` and links to every other running one.
pub async fn wait_full_mesh(nodes: &[MeshNode], token: &str) {
    let live = nodes.iter().filter(|n| n.process.is_some()).count();
    for n in nodes.iter().filter(|n| n.process.is_some()) {
        wait_status(n.http(), token, "links to every live node", |s| {
            nodes_known(s) == nodes.len() && links_up(s) == live - 1
        })
        .await;
    }
}

/// Each node's id, in the order of `nodes`.
pub async fn node_ids(nodes: &[MeshNode], token: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for n in nodes {
        ids.push(
            status(n.http(), token).await["node"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    ids
}

/// `GET /api/v1/mesh` on a node.
pub async fn status(node: SocketAddr, token: &str) -> Value {
    let r = api(node, "GET", "/api/v1/mesh", Some(token), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// Polls a node's mesh status until `pred` holds (the mesh converges by itself; this is
/// the event we wait for), or panics with the last status.
pub async fn wait_status(
    node: SocketAddr,
    token: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = status(node, token).await;
        if pred(&s) {
            return s;
        }
        if Instant::now() > deadline {
            panic!("{what}: not reached; last status: {s:#}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Nodes known and links up, as a status says.
pub fn links_up(s: &Value) -> usize {
    s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["link"]["state"] == "up")
        .count()
}

pub fn nodes_known(s: &Value) -> usize {
    s["nodes"].as_array().unwrap().len()
}

/// A user's inbox over a raw MQTT session: records every copy that arrives and
/// acknowledges the ones that ask for it.
pub struct Inbox {
    pub messages: Arc<Mutex<Vec<InboxMessage>>>,
    /// Wall-clock microseconds each message arrived (same order as `messages`).
    arrivals: Arc<Mutex<Vec<u64>>>,
    notify: Arc<Notify>,
    pub client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Inbox {
    pub async fn open(node: SocketAddr, user: &str, token: &str) -> Inbox {
        let mut opts = super::mqtt_options(
            node,
            &format!("inbox-{user}-{}", rand_id()),
            Some((user, token)),
        );
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        client
            .subscribe(contract::mesh_inbox(user), QoS::AtLeastOnce)
            .await
            .unwrap();
        // Connected and subscribed before anyone sends.
        tokio::time::timeout(WAIT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => return,
                    Ok(_) => {}
                    Err(e) => panic!("inbox connect: {e}"),
                }
            }
        })
        .await
        .expect("inbox subscribed in time");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let times = arrivals.clone();
        let notify = Arc::new(Notify::new());
        let (m, n, c, u) = (
            messages.clone(),
            notify.clone(),
            client.clone(),
            user.to_owned(),
        );
        let task = tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = event
                    && let Ok(msg) = serde_json::from_slice::<InboxMessage>(&p.payload)
                {
                    if msg.ack {
                        let ack = serde_json::to_vec(&InboxAck { id: msg.id.clone() }).unwrap();
                        let _ = c.try_publish(contract::mesh_ack(&u), QoS::AtLeastOnce, false, ack);
                    }
                    times.lock().unwrap().push(micros_now());
                    m.lock().unwrap().push(msg);
                    n.notify_waiters();
                }
            }
        });
        Inbox {
            messages,
            arrivals,
            notify,
            client,
            task,
        }
    }

    /// Waits until at least `n` messages arrived; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<InboxMessage> {
        self.wait_for_within(n, WAIT).await
    }

    pub async fn wait_for_within(&self, n: usize, limit: Duration) -> Vec<InboxMessage> {
        tokio::time::timeout(limit, async {
            loop {
                let notified = self.notify.notified();
                {
                    let m = self.messages.lock().unwrap();
                    if m.len() >= n {
                        return m.clone();
                    }
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            // The report is built before panicking so the lock is not poisoned for the
            // receiving task.
            let seqs: Vec<u64> = self
                .messages
                .lock()
                .unwrap()
                .iter()
                .map(|m| m.seq)
                .collect();
            panic!("{n} messages in time; got {}: seqs {seqs:?}", seqs.len())
        })
    }

    /// Milliseconds from the wall-clock microseconds a sender put in `body[field]` to
    /// each message's arrival.
    pub fn latencies_ms(&self, field: &str) -> Vec<f64> {
        let m = self.messages.lock().unwrap();
        let t = self.arrivals.lock().unwrap();
        m.iter()
            .zip(t.iter())
            .filter_map(|(msg, at)| Some((*at as f64 - msg.body[field].as_u64()? as f64) / 1000.0))
            .collect()
    }

    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    pub async fn close(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

pub fn micros_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn rand_id() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

/// `POST /api/v1/messages`; asserts 200 and returns the answer.
pub async fn post_message(node: SocketAddr, token: &str, body: Value) -> Value {
    let r = api(
        node,
        "POST",
        "/api/v1/messages",
        Some(token),
        &body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// Reads a mesh client's events until it reports its node lost; returns when it noticed
/// and which node it was. Messages met on the way go to `message`.
pub async fn until_node_lost(
    events: &mut tokio::sync::mpsc::Receiver<meteomesh::client::ClientEvent>,
    mut message: impl FnMut(InboxMessage),
) -> (Instant, Option<String>) {
    use meteomesh::client::ClientEvent;
    loop {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("the client noticed in time")
            .expect("client running");
        match event {
            ClientEvent::NodeLost { at, node, .. } => return (at, node),
            ClientEvent::Message(m) => message(m),
            ClientEvent::Connected { .. } => {}
        }
    }
}

/// `meteomesh ARGS` with a token in the environment, run to the end.
pub fn run_cli(dir: &Path, args: &[&str], token: &str) -> std::process::Output {
    super::bin()
        .args(args)
        .env("METEOMESH_TOKEN", token)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// A TCP proxy on 127.0.0.1 that holds every chunk for `delay` in both directions (a
/// slow link for the round-trip node choice).
pub async fn delaying_proxy(upstream: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pipe(ri, wo, delay));
            tokio::spawn(pipe(ro, wi, delay));
        }
    });
    addr
}

async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tokio::time::sleep(delay).await;
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}
