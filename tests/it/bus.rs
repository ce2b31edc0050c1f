//! The embedded broker and the bus: authentication, in-process module <-> external
//! client traffic, retained node status, keepalive 0, the WebSocket listener.

use crate::common;

use std::time::Duration;

use common::*;
use meteomesh::bus::{BusClient, ConnectOptions};
use meteomesh::contract::{self, NodeState, NodeStatus, Ping, Pong};
use rumqttc::{ConnectReturnCode, QoS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_missing_and_wrong_credentials() {
    let t = TestApp::start().await;
    let addr = t.mqtt.unwrap();
    let anon = try_connect(mqtt_options(addr, "anon", None)).await;
    assert_eq!(anon, Ok(ConnectReturnCode::NotAuthorized));
    let wrong = try_connect(mqtt_options(
        addr,
        "wrong",
        Some((SERVICE_USER, "nope-nope")),
    ))
    .await;
    assert_eq!(wrong, Ok(ConnectReturnCode::BadUserNamePassword));
    let unknown = try_connect(mqtt_options(addr, "who", Some(("who", SERVICE_PASSWORD)))).await;
    assert_eq!(unknown, Ok(ConnectReturnCode::BadUserNamePassword));
    // The modules' own account is not reachable with a guessable password.
    let internal = try_connect(mqtt_options(
        addr,
        "int",
        Some((meteomesh::bus::INTERNAL_USERNAME, "")),
    ))
    .await;
    assert_eq!(internal, Ok(ConnectReturnCode::BadUserNamePassword));
    let ok = try_connect(mqtt_options(
        addr,
        "svc",
        Some((SERVICE_USER, SERVICE_PASSWORD)),
    ))
    .await;
    assert_eq!(ok, Ok(ConnectReturnCode::Success));
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_access_can_be_enabled() {
    let t = TestApp::start_with(|c| c.bus.allow_anonymous = true).await;
    let anon = try_connect(mqtt_options(t.mqtt.unwrap(), "anon", None)).await;
    assert_eq!(anon, Ok(ConnectReturnCode::Success));
    t.app.shutdown().await.unwrap();
}

/// An external TCP client and the in-process system module talk both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_and_external_client_exchange_messages() {
    let t = TestApp::start().await;
    let mut ext = t.service_client("ext").await;

    // Module -> external: the retained online status of this node.
    ext.subscribe("meteomesh/v1/nodes/+/status", QoS::AtLeastOnce)
        .await;
    let status = ext.next_publish(|_| true).await;
    assert_eq!(status.topic, contract::node_status(&t.app.node_id));
    assert!(status.retain, "status is retained");
    let status: NodeStatus = serde_json::from_slice(&status.payload).unwrap();
    assert_eq!(status.state, NodeState::Online);
    assert_eq!(status.node, t.app.node_id);

    // External -> module -> external: a ping is answered by the module.
    ext.subscribe(contract::PONG, QoS::AtMostOnce).await;
    let ping = serde_json::to_vec(&Ping {
        id: "from-outside".into(),
    })
    .unwrap();
    ext.client
        .publish(contract::PING, QoS::AtMostOnce, false, ping)
        .await
        .unwrap();
    let pong = ext.next_publish(|t| t == contract::PONG).await;
    let pong: Pong = serde_json::from_slice(&pong.payload).unwrap();
    assert_eq!(
        pong,
        Pong {
            id: "from-outside".into(),
            node: t.app.node_id.clone()
        }
    );

    // A malformed ping is ignored, and the module keeps answering afterwards.
    ext.client
        .publish(
            contract::PING,
            QoS::AtMostOnce,
            false,
            b"{not json".to_vec(),
        )
        .await
        .unwrap();
    let ping = serde_json::to_vec(&Ping { id: "again".into() }).unwrap();
    ext.client
        .publish(contract::PING, QoS::AtMostOnce, false, ping)
        .await
        .unwrap();
    let pong = ext.next_publish(|t| t == contract::PONG).await;
    let pong: Pong = serde_json::from_slice(&pong.payload).unwrap();
    assert_eq!(pong.id, "again");
    t.app.shutdown().await.unwrap();
}

/// The library's typed bus client (what modules use) against an external subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_bus_client_publishes_to_external_subscriber() {
    let t = TestApp::start().await;
    let addr = t.mqtt.unwrap();
    let mut ext = t.service_client("ext-sub").await;
    ext.subscribe(contract::PING, QoS::AtLeastOnce).await;

    let (bus, session) = BusClient::start(ConnectOptions {
        host: addr.ip().to_string(),
        port: addr.port(),
        client_id: "typed-client".into(),
        username: SERVICE_USER.into(),
        password: SERVICE_PASSWORD.into(),
        keep_alive: Duration::from_secs(5),
        max_packet_size: 64 * 1024,
        last_will: None,
        sessions: meteomesh::bus::Sessions::Both,
    });
    bus.wait_connected(WAIT).await.unwrap();
    bus.publish(contract::PING, &Ping { id: "typed".into() })
        .await
        .unwrap();
    let got = ext.next_publish(|t| t == contract::PING).await;
    let ping: Ping = serde_json::from_slice(&got.payload).unwrap();
    assert_eq!(ping.id, "typed");
    bus.disconnect().await;
    session.await.unwrap();
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_zero_client_is_accepted() {
    let t = TestApp::start().await;
    let mut opts = mqtt_options(
        t.mqtt.unwrap(),
        "sleepy-sensor",
        Some((SERVICE_USER, SERVICE_PASSWORD)),
    );
    opts.set_keep_alive(Duration::ZERO);
    let mut c = MqttClient::connect(opts).await;
    c.subscribe("sensors/#", QoS::AtLeastOnce).await;
    c.client
        .publish("sensors/t1", QoS::AtLeastOnce, false, b"21.5".to_vec())
        .await
        .unwrap();
    let got = c.next_publish(|t| t == "sensors/t1").await;
    assert_eq!(&got.payload[..], b"21.5");
    t.app.shutdown().await.unwrap();
}

/// The node's status turns `offline` when it shuts down cleanly (retained, so a
/// late subscriber sees it too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_status_is_published_on_shutdown() {
    let t = TestApp::start().await;
    let mut ext = t.service_client("watcher").await;
    let topic = contract::node_status(&t.app.node_id);
    ext.subscribe(&topic, QoS::AtLeastOnce).await;
    let first: NodeStatus =
        serde_json::from_slice(&ext.next_publish(|_| true).await.payload).unwrap();
    assert_eq!(first.state, NodeState::Online);
    let shutdown = tokio::spawn(t.app.shutdown());
    let second: NodeStatus =
        serde_json::from_slice(&ext.next_publish(|_| true).await.payload).unwrap();
    assert_eq!(second.state, NodeState::Offline);
    shutdown.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_listener_speaks_mqtt() {
    let t = TestApp::start().await;
    let ws = t.ws.unwrap();
    // A browser-like client: HTTP upgrade with the `mqtt` subprotocol, then MQTT frames.
    let (client, mut eventloop) = rumqttc::AsyncClient::new(
        {
            let mut o =
                rumqttc::MqttOptions::new("ws-client", format!("ws://{ws}/mqtt"), ws.port());
            o.set_transport(rumqttc::Transport::Ws);
            o.set_credentials(SERVICE_USER, SERVICE_PASSWORD);
            o
        },
        8,
    );
    let _ = client;
    let ack = tokio::time::timeout(WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a))) => return a.code,
                Ok(_) => {}
                Err(e) => panic!("ws connect failed: {e}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ack, ConnectReturnCode::Success);
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_can_be_disabled() {
    let t = TestApp::start_with(|c| {
        c.bus.tcp_enabled = false;
        c.bus.ws_enabled = false;
    })
    .await;
    assert!(t.mqtt.is_none() && t.ws.is_none());
    // The modules still have their bus (internal loopback listener).
    let r = post_json(t.http, "/api/v1/system/bus-check", "{}").await;
    assert_eq!(r.status, 200, "{}", r.body);
    t.app.shutdown().await.unwrap();
}

/// A PUBLISH over `bus.max_packet_size` ends that client's connection; the broker and
/// other clients carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_packet_is_refused() {
    let t = TestApp::start_with(|c| c.bus.max_packet_size = 4096).await;
    let addr = t.mqtt.unwrap();
    let mut opts = mqtt_options(addr, "big", Some((SERVICE_USER, SERVICE_PASSWORD)));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let mut big = MqttClient::connect(opts).await;
    big.client
        .publish("big/x", QoS::AtLeastOnce, false, vec![b'x'; 8192])
        .await
        .unwrap();
    let outcome = tokio::time::timeout(WAIT, async {
        loop {
            match big.eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => return "acked",
                Ok(_) => {}
                Err(_) => return "disconnected",
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(outcome, "disconnected");

    // A normal client still works.
    let mut ok = t.service_client("small").await;
    ok.subscribe("small/x", QoS::AtLeastOnce).await;
    ok.client
        .publish("small/x", QoS::AtLeastOnce, false, vec![b'y'; 1024])
        .await
        .unwrap();
    assert_eq!(
        ok.next_publish(|t| t == "small/x").await.payload.len(),
        1024
    );
    t.app.shutdown().await.unwrap();
}

/// A subscriber that stops reading fills its inflight window and queue; the broker then
/// drops, and says so in metrics instead of losing messages silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_overflow_is_counted() {
    let t = TestApp::start_with(|c| {
        c.bus.max_inflight = 1;
        c.bus.max_queued_messages = 5;
    })
    .await;
    let mut stalled = t.service_client("stalled").await;
    stalled.subscribe("burst/#", QoS::AtLeastOnce).await;
    // From here `stalled` is never polled again: it acknowledges nothing.

    let mut publisher = t.service_client("publisher").await;
    const SENT: u16 = 40;
    for i in 0..SENT {
        publisher
            .client
            .publish("burst/x", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    let mut acked = 0;
    tokio::time::timeout(WAIT, async {
        while acked < SENT {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) =
                publisher.eventloop.poll().await.unwrap()
            {
                acked += 1;
            }
        }
    })
    .await
    .expect("the broker acknowledges every publish");

    // 1 in flight + 5 queued may wait; the rest are dropped and counted. The session
    // task drops asynchronously, so wait (bounded) for the counter to get there.
    let expected = u64::from(SENT) - 6 - 1;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let metrics = get(t.http, "/metrics").await.body;
        let dropped: u64 = metrics
            .lines()
            .find(|l| l.starts_with("meteomesh_bus_messages_dropped_total{reason=\"queue_full\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if dropped >= expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {dropped} of {expected} drops counted:\n{metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(stalled);
    t.app.shutdown().await.unwrap();
}
