//! Owns the links to peer nodes: one MQTT session pair per peer (rumqttc to the peer's
//! broker, logged in with the mesh credential), reconnecting with jittered backoff. A
//! link publishes envelopes onto the peer's `mesh/links/{this node}` topic, and reads
//! the peer's retained directory and heartbeat, which it reports to the node task.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::bus::{BusClient, ConnectOptions, Sessions};
use crate::config::BrokerUrl;
use crate::contract::{self, BusMessage, Directory, Envelope, Heartbeat, PeerHello, Qos};

/// What a link reports.
#[derive(Debug)]
pub enum LinkEvent {
    Up { addr: String },
    Down { addr: String },
    Directory { addr: String, directory: Directory },
    Heartbeat { addr: String, heartbeat: Heartbeat },
}

pub struct Link {
    pub addr: String,
    /// The peer's node id, once its directory told us.
    pub node: Option<String>,
    client: BusClient,
    tasks: Vec<JoinHandle<()>>,
    pub connected: bool,
    pub last_heartbeat: Option<Instant>,
    pub rtt: Option<Duration>,
    pub since: Instant,
}

/// Credentials and limits every link uses.
#[derive(Clone)]
pub struct LinkSettings {
    pub own_id: String,
    pub username: String,
    pub password: String,
    pub max_packet_size: usize,
}

impl Link {
    pub fn start(
        addr: &str,
        settings: &LinkSettings,
        events: mpsc::Sender<LinkEvent>,
    ) -> Option<Link> {
        let target = BrokerUrl::parse_host_port(addr).ok()?;
        let (client, session) = BusClient::start(ConnectOptions {
            host: target.host,
            port: target.port,
            client_id: format!("meteomesh-link-{}", settings.own_id),
            username: settings.username.clone(),
            password: settings.password.clone(),
            keep_alive: Duration::from_secs(5),
            max_packet_size: settings.max_packet_size,
            last_will: None,
            sessions: Sessions::Both,
        });
        let watcher = tokio::spawn(watch(client.clone(), addr.to_owned(), events));
        Some(Link {
            addr: addr.to_owned(),
            node: None,
            client,
            tasks: vec![session, watcher],
            connected: false,
            last_heartbeat: None,
            rtt: None,
            since: Instant::now(),
        })
    }

    /// Whether messages should go this way: connected, and the peer's heartbeat not
    /// missing for longer than `patience`.
    pub fn usable(&self, now: Instant, patience: Duration) -> bool {
        self.connected
            && self
                .last_heartbeat
                .is_none_or(|at| now.duration_since(at) <= patience)
    }

    /// Hands an envelope to the peer without waiting; false when the link cannot take it.
    pub fn send(&self, own_id: &str, envelope: &Envelope) -> bool {
        let Ok(payload) = serde_json::to_vec(envelope) else {
            return false;
        };
        self.client
            .try_publish_raw(
                &contract::mesh_link(own_id),
                payload,
                Qos::AtLeastOnce,
                false,
            )
            .is_ok()
    }

    /// Leaves this node's hello on the peer's broker (retained).
    pub fn hello(&self, hello: &PeerHello) -> bool {
        let Ok(payload) = serde_json::to_vec(hello) else {
            return false;
        };
        self.client
            .try_publish_raw(
                &contract::mesh_peer_hello(&hello.node),
                payload,
                PeerHello::DELIVERY.qos,
                PeerHello::DELIVERY.retain,
            )
            .is_ok()
    }

    pub async fn stop(self) {
        self.client.disconnect().await;
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Reports the link's connection changes and what it reads from the peer.
async fn watch(client: BusClient, addr: String, events: mpsc::Sender<LinkEvent>) {
    let mut connected = client.watch_connected();
    let Ok(mut directory) = client
        .subscribe(contract::MESH_DIRECTORY, Directory::DELIVERY.qos)
        .await
    else {
        return;
    };
    let Ok(mut heartbeat) = client
        .subscribe(contract::MESH_HEARTBEAT, Heartbeat::DELIVERY.qos)
        .await
    else {
        return;
    };

    // The session may have connected before this task looked: report that first.
    if *connected.borrow_and_update()
        && events
            .send(LinkEvent::Up { addr: addr.clone() })
            .await
            .is_err()
    {
        return;
    }
    loop {
        let event = tokio::select! {
            changed = connected.changed() => {
                if changed.is_err() {
                    return;
                }
                let up = *connected.borrow_and_update();
                if up {
                    LinkEvent::Up { addr: addr.clone() }
                } else {
                    LinkEvent::Down { addr: addr.clone() }
                }
            }
            msg = directory.recv() => {
                let Some(msg) = msg else { return };
                match msg.decode::<Directory>() {
                    Ok(directory) => LinkEvent::Directory { addr: addr.clone(), directory },
                    Err(_) => continue,
                }
            }
            msg = heartbeat.recv() => {
                let Some(msg) = msg else { return };
                match msg.decode::<Heartbeat>() {
                    Ok(heartbeat) => LinkEvent::Heartbeat { addr: addr.clone(), heartbeat },
                    Err(_) => continue,
                }
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}
