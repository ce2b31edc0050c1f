//! Mesh benchmark (`cargo bench --bench bench_mesh`; `scripts/bench-mesh.sh` runs it in
//! release mode), real node processes on 127.0.0.1:
//! (a) queued messages (`fire_send`, stored until acknowledged) from a user on one node
//!     to a user on another across a 3-node chain A–B–C, beside the same load between
//!     two users of one node: messages/s, p50/p99 latency, duplicates delivered;
//! (b) failover: 20 SIGKILLs of the node a client is on (the connection drops) and 10
//!     SIGSTOPs (it hangs; only the heartbeat tells); time to notice (p50/p99) and to be
//!     connected again, and no queued message lost.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::mesh::{
    Inbox, MeshNode, links_up, mesh_of, micros_now, node_ids, nodes_known, post_message, status,
    until_node_lost, wait_full_mesh, wait_status,
};
use common::{WAIT, register};
use meteomesh::client::{ClientEvent, ClientOptions, MeshClient};
use meteomesh::contract::{self, SendMode, SendRequest};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::json;

const PW: &str = "correct horse battery";
const MESSAGES: usize = 2_000;
const KILLS: usize = 20;
const WINDOW: usize = 200;
const FREEZES: usize = 10;

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Sends MESSAGES fire_send requests from `from` at `send_node` to `to` (reading its
/// inbox at `recv_node`) and reports rate, latency and duplicates.
async fn run_load(
    label: &str,
    (messages, window): (usize, usize),
    send_node: std::net::SocketAddr,
    recv_node: std::net::SocketAddr,
    (from, from_token): (&str, &str),
    (to, to_token): (&str, &str),
) -> f64 {
    let inbox = Inbox::open(recv_node, to, to_token).await;
    let opts = common::mqtt_options(
        send_node,
        &format!("bench-{from}"),
        Some((from, from_token)),
    );
    let (client, mut eventloop) = AsyncClient::new(opts, 4096);
    let pump = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Disconnect)) | Err(_) => break,
                _ => {}
            }
        }
    });
    let started = Instant::now();
    for n in 0..messages {
        // Closed loop: at most `window` messages on their way (the recipient's queue holds
        // mesh.offline_max_per_user; a sender beyond it gets queue_full answers).
        while n.saturating_sub(inbox.count()) >= window {
            inbox.wait_for_within(n + 1 - window, WAIT).await;
        }
        let req = SendRequest {
            req: format!("r{n}"),
            mode: SendMode::FireSend,
            to: Some(to.to_owned()),
            seq: Some(n as u64 + 1),
            body: json!({"t": micros_now()}),
        };
        client
            .publish(
                contract::mesh_send(from),
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&req).unwrap(),
            )
            .await
            .unwrap();
    }
    let got = inbox
        .wait_for_within(messages, Duration::from_secs(300))
        .await;
    let took = started.elapsed();
    // Copies that got through more than once (a resend after a slow ack).
    let mut seen = HashSet::new();
    let duplicates = got.iter().filter(|m| !seen.insert(m.seq)).count();
    let mut sorted = inbox.latencies_ms("t");
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rate = messages as f64 / took.as_secs_f64();
    println!(
        "BENCH {label}, window {window}: {messages} fire_send in {:.2} s = {rate:.0} msg/s; latency p50 {:.1} ms, p99 {:.1} ms; copies delivered twice {duplicates}",
        took.as_secs_f64(),
        pct(&sorted, 0.5),
        pct(&sorted, 0.99),
    );
    client.disconnect().await.ok();
    let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
    inbox.close().await;
    rate
}

async fn bench_chain_against_one_node() {
    let dir = tempfile::tempdir().unwrap();
    // One node: both users on it.
    let mut solo = MeshNode::new(&dir.path().join("solo"), &[], "");
    solo.start();
    let (ann, _) = register(solo.http(), "ann", PW).await;
    let (ben, _) = register(solo.http(), "ben", PW).await;
    run_load(
        "one node",
        (200, 1),
        solo.mqtt_addr(),
        solo.mqtt_addr(),
        ("ann", &ann),
        ("ben", &ben),
    )
    .await;
    let single = run_load(
        "one node",
        (MESSAGES, WINDOW),
        solo.mqtt_addr(),
        solo.mqtt_addr(),
        ("ann", &ann),
        ("ben", &ben),
    )
    .await;
    solo.stop();

    // A chain: A–B–C, links only to the listed peers.
    let fixed = "auto_link = false";
    let mut a = MeshNode::new(&dir.path().join("a"), &[], fixed);
    let mut b = MeshNode::new(&dir.path().join("b"), &[], fixed);
    let mut c = MeshNode::new(&dir.path().join("c"), &[], fixed);
    a.peers = vec![b.mqtt()];
    b.peers = vec![a.mqtt(), c.mqtt()];
    c.peers = vec![b.mqtt()];
    a.start();
    b.start();
    c.start();
    let (alice, _) = register(a.http(), "alice", PW).await;
    let (bob, _) = register(c.http(), "bob", PW).await;
    wait_status(b.http(), &alice, "B links to A and C", |s| links_up(s) == 2).await;
    wait_status(a.http(), &alice, "A knows C", |s| nodes_known(s) == 3).await;
    run_load(
        "3-node chain A-B-C",
        (200, 1),
        a.mqtt_addr(),
        c.mqtt_addr(),
        ("alice", &alice),
        ("bob", &bob),
    )
    .await;
    let chain = run_load(
        "3-node chain A-B-C",
        (MESSAGES, WINDOW),
        a.mqtt_addr(),
        c.mqtt_addr(),
        ("alice", &alice),
        ("bob", &bob),
    )
    .await;
    let s = status(b.http(), &alice).await;
    println!(
        "BENCH chain: B forwarded {} envelopes, dropped {} duplicates; chain/one-node throughput {:.2}x",
        s["envelopes_sent"],
        s["duplicates_dropped"],
        chain / single
    );
}

async fn bench_failover() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh_of(dir.path(), 3);
    let (alice, _) = register(nodes[0].http(), "alice", PW).await;
    let (bob, _) = register(nodes[1].http(), "bob", PW).await;
    wait_full_mesh(&nodes, &alice).await;
    let ids = node_ids(&nodes, &alice).await;
    let (client, mut events) = MeshClient::start(ClientOptions::new(
        nodes.iter().map(|n| n.mqtt()).collect(),
        "bob",
        &bob,
    ));
    client.wait_connected(WAIT).await.expect("connected");
    let mut detect = Vec::new();
    let mut reconnect = Vec::new();
    let mut received = HashSet::new();
    for round in 0..KILLS {
        let on = client.current().node.expect("on a node");
        let victim = ids.iter().position(|i| *i == on).unwrap();
        let killed = Instant::now();
        nodes[victim].kill();
        let via = nodes[(victim + 1) % 3].http();
        post_message(
            via,
            &alice,
            json!({"mode": "fire_send", "to": "bob", "body": round}),
        )
        .await;
        let (at, _) = until_node_lost(&mut events, |m| {
            received.insert(m.body.as_u64().unwrap());
        })
        .await;
        detect.push(at.duration_since(killed).as_secs_f64() * 1000.0);
        client.wait_connected(WAIT).await.expect("failed over");
        reconnect.push(killed.elapsed().as_secs_f64() * 1000.0);
        nodes[victim].start();
        wait_full_mesh(&nodes, &alice).await;
    }
    // Frozen nodes (SIGSTOP): the connection stays open, only missing heartbeats tell.
    let mut frozen_detect = Vec::new();
    for _ in 0..FREEZES {
        let on = client.current().node.expect("on a node");
        let victim = ids.iter().position(|i| *i == on).unwrap();
        let frozen = Instant::now();
        nodes[victim].signal("-STOP");
        let (at, _) = until_node_lost(&mut events, |m| {
            received.insert(m.body.as_u64().unwrap());
        })
        .await;
        frozen_detect.push(at.duration_since(frozen).as_secs_f64() * 1000.0);
        client.wait_connected(WAIT).await.expect("failed over");
        nodes[victim].signal("-CONT");
        wait_full_mesh(&nodes, &alice).await;
    }
    frozen_detect.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "BENCH failover over {FREEZES} SIGSTOPs (heartbeat 250 ms, 2 missed): detected p50 {:.0} ms, p99 {:.0} ms (max {:.0})",
        pct(&frozen_detect, 0.5),
        pct(&frozen_detect, 0.99),
        frozen_detect.last().unwrap()
    );
    while received.len() < KILLS {
        if let ClientEvent::Message(m) = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("queued messages")
            .unwrap()
        {
            received.insert(m.body.as_u64().unwrap());
        }
    }
    detect.sort_by(|a, b| a.partial_cmp(b).unwrap());
    reconnect.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "BENCH failover over {KILLS} SIGKILLs: detected p50 {:.0} ms, p99 {:.0} ms (max {:.0}); connected to another node p50 {:.0} ms, p99 {:.0} ms; fire_send during outages: {KILLS} sent, {} received",
        pct(&detect, 0.5),
        pct(&detect, 0.99),
        detect.last().unwrap(),
        pct(&reconnect, 0.5),
        pct(&reconnect, 0.99),
        received.len()
    );
    client.close().await;
}

fn main() {
    common::run_benchmark(async {
        bench_chain_against_one_node().await;
        bench_failover().await;
    });
}
