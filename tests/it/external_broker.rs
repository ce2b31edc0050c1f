//! External broker mode against Debian's Mosquitto: the modules run with no embedded
//! broker, through `bus.url` with credentials, and keep the same topic contract.
//!
//! Needs `mosquitto` (Debian package `mosquitto`); scripts/test.sh and CI install it.

use crate::common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command};
use std::time::Duration;

use common::*;
use meteomesh::config::{BusMode, Secret};
use meteomesh::contract::{self, BusMessage, NodeState, NodeStatus, Ping, Pong};
use rumqttc::{ConnectReturnCode, QoS};

const USER: &str = "meteomesh-node";
const PASSWORD: &str = "node-password-1";

struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mosquitto() -> Mosquitto {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let status = Command::new(debian_program("mosquitto_passwd"))
        .args(["-c", "-b"])
        .arg(&passwd)
        .args([USER, PASSWORD])
        .status()
        .unwrap();
    assert!(status.success());
    // A free port: bind, read, release. Mosquitto takes it a moment later.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\npersistence false\n",
            passwd.display()
        ),
    )
    .unwrap();
    let (child, addr) = spawn_mosquitto(&conf, port);
    Mosquitto {
        child,
        addr,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_use_an_external_mosquitto() {
    let broker = start_mosquitto();
    let url = format!("mqtt://{}", broker.addr);
    let t = TestApp::start_with(|c| {
        c.bus.mode = BusMode::External;
        c.bus.url = url.clone();
        c.bus.username = USER.into();
        c.bus.password = Secret::new(PASSWORD);
    })
    .await;
    // No embedded broker listeners in external mode.
    assert!(t.mqtt.is_none() && t.ws.is_none());

    // HTTP reports the mode and a working round trip through Mosquitto.
    let r = post_json(t.http, "/api/v1/system/bus-check", "{}").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["mode"], "external");
    assert_eq!(get(t.http, "/readyz").await.status, 200);

    // An ordinary client on Mosquitto sees the node's retained status ...
    let mut ext =
        MqttClient::connect(mqtt_options(broker.addr, "ext", Some((USER, PASSWORD)))).await;
    ext.subscribe(NodeStatus::FILTER, QoS::AtLeastOnce).await;
    let status: NodeStatus =
        serde_json::from_slice(&ext.next_publish(|_| true).await.payload).unwrap();
    assert_eq!(status.node, t.app.node_id);
    assert_eq!(status.state, NodeState::Online);

    // ... and its ping is answered by the module through Mosquitto.
    ext.subscribe(contract::PONG, QoS::AtMostOnce).await;
    let ping = serde_json::to_vec(&Ping {
        id: "via-mosquitto".into(),
    })
    .unwrap();
    ext.client
        .publish(contract::PING, QoS::AtMostOnce, false, ping)
        .await
        .unwrap();
    let pong: Pong =
        serde_json::from_slice(&ext.next_publish(|t| t == contract::PONG).await.payload).unwrap();
    assert_eq!(pong.id, "via-mosquitto");
    assert_eq!(pong.node, t.app.node_id);

    // Clean shutdown leaves the retained status `offline` on the external broker.
    t.app.shutdown().await.unwrap();
    let offline: NodeStatus =
        serde_json::from_slice(&ext.next_publish(|_| true).await.payload).unwrap();
    assert_eq!(offline.state, NodeState::Offline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_external_credentials_leave_the_node_unready() {
    let broker = start_mosquitto();
    // Sanity: Mosquitto itself refuses the wrong password.
    let refused = try_connect(mqtt_options(broker.addr, "x", Some((USER, "wrong")))).await;
    assert_ne!(refused, Ok(ConnectReturnCode::Success));

    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.bus.mode = BusMode::External;
    config.bus.url = format!("mqtt://{}", broker.addr);
    config.bus.username = USER.into();
    config.bus.password = Secret::new("wrong-password");
    let app = start_app(&config).await;
    assert!(app.ready(Duration::from_millis(1500)).await.is_err());
    let r = get(app.addresses.http.unwrap(), "/readyz").await;
    assert_eq!(r.status, 503);
    let v = r.json();
    assert_eq!(v["checks"]["bus"]["ok"], false);
    assert_eq!(v["checks"]["database"]["ok"], true);
    app.shutdown().await.unwrap();
}
