//! The mesh with real node processes on 127.0.0.1: a triangle (a cycle) delivers every
//! message exactly once and counts the duplicates it dropped; synchronous send answers
//! for online and offline users; queued messages follow their recipient to another
//! node, in order; a node learns the mesh from one seed and finds it again from its
//! stored list; clients fail over when their node is killed and lose nothing.

use crate::common;

use std::time::{Duration, Instant};

use common::mesh::{Inbox, MeshNode, links_up, nodes_known, post_message, status, wait_status};
use common::{WAIT, api, register};
use serde_json::{Value, json};

const PW: &str = "correct horse battery";

async fn wait_online(node: std::net::SocketAddr, token: &str, users: &[&str]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = api(node, "GET", "/api/v1/users/online", Some(token), "").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let online: Vec<String> = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["user"].as_str().unwrap().to_owned())
            .collect();
        if users.iter().all(|u| online.iter().any(|o| o == u)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{users:?} online at {node}; have {online:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sum(nodes: &[Value], key: &str) -> u64 {
    nodes.iter().map(|s| s[key].as_u64().unwrap()).sum()
}

/// Three nodes, B and C seeded with A only; returns once all know each other and every
/// link is up. Tokens: alice (home A), carol (home B), bob (home C).
async fn triangle(dir: &std::path::Path) -> ([MeshNode; 3], [String; 3]) {
    let mut a = MeshNode::new(&dir.join("a"), &[], "");
    a.start();
    let mut b = MeshNode::new(&dir.join("b"), &[a.mqtt()], "");
    let mut c = MeshNode::new(&dir.join("c"), &[a.mqtt()], "");
    b.start();
    c.start();
    let (alice, _) = register(a.http(), "alice", PW).await;
    let (carol, _) = register(b.http(), "carol", PW).await;
    let (bob, _) = register(c.http(), "bob", PW).await;
    for n in [&a, &b, &c] {
        wait_status(n.http(), &alice, "full mesh", |s| {
            nodes_known(s) == 3 && links_up(s) == 2
        })
        .await;
    }
    ([a, b, c], [alice, carol, bob])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triangle_delivers_every_message_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let ([a, b, c], [alice, carol, bob]) = triangle(dir.path()).await;
    let alice_in = Inbox::open(a.mqtt_addr(), "alice", &alice).await;
    let carol_in = Inbox::open(b.mqtt_addr(), "carol", &carol).await;
    let bob_in = Inbox::open(c.mqtt_addr(), "bob", &bob).await;
    for n in [&a, &b, &c] {
        wait_online(n.http(), &alice, &["alice", "bob", "carol"]).await;
    }

    // Unicast from a user on A to a user on C, synchronous: acknowledged by bob's client.
    let r = post_message(
        a.http(),
        &alice,
        json!({"mode": "send", "to": "bob", "body": {"text": "hi bob"}}),
    )
    .await;
    assert_eq!(r["delivered"], true, "{r}");
    let got = bob_in.wait_for(1).await;
    assert_eq!(got[0].from, "alice");
    assert_eq!(got[0].kind, "message");
    assert_eq!(got[0].body, json!({"text": "hi bob"}));

    let statuses = |token: String| {
        let nodes = [a.http(), b.http(), c.http()];
        async move {
            let mut v = Vec::new();
            for n in nodes {
                v.push(status(n, &token).await);
            }
            v
        }
    };
    // The unicast went straight over the A–C link: nothing to drop.
    assert_eq!(
        sum(&statuses(alice.clone()).await, "duplicate_messages_dropped"),
        0
    );

    // Broadcast from B: A and C each get it from B and again from each other.
    let r = post_message(
        b.http(),
        &carol,
        json!({"mode": "broadcast", "body": "to all"}),
    )
    .await;
    assert_eq!(
        (r["acked"].as_u64(), r["online"].as_u64()),
        (Some(2), Some(2)),
        "{r}"
    );
    // Every copy sent between nodes has arrived once the sent and received counts of
    // message envelopes agree; then the copies beyond the first at each node (one or
    // two, depending on which path was faster) were all dropped.
    let nodes = [a.http(), b.http(), c.http()];
    let deadline = Instant::now() + WAIT;
    let (received, dropped) = loop {
        let (mut sent, mut received) = (0.0, 0.0);
        for n in nodes {
            let m = common::get(n, "/metrics").await.body;
            let value = |outcome: &str| {
                common::metric_value(
                    &m,
                    &format!("meteomesh_mesh_envelopes_total{{outcome=\"{outcome}\",tag=\"msg\"}}"),
                )
                .unwrap_or(0.0)
            };
            sent += value("sent");
            received += value("received");
        }
        if sent == received && received >= 3.0 {
            let dropped = sum(&statuses(alice.clone()).await, "duplicate_messages_dropped");
            break (received as u64, dropped);
        }
        assert!(
            Instant::now() < deadline,
            "copies still in flight: {sent} sent, {received} received"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // 1 copy of the unicast, 2 first copies of the broadcast; the rest were duplicates.
    assert_eq!(dropped, received - 3, "received {received}");
    assert!(
        (1..=2).contains(&dropped),
        "a cycle of three makes one or two extra copies"
    );
    // Both extra copies are accounted for; each user holds exactly one.
    let alice_got = alice_in.wait_for(1).await;
    assert_eq!(alice_got.len(), 1, "{alice_got:?}");
    assert_eq!(alice_got[0].kind, "broadcast");
    assert_eq!(alice_got[0].from, "carol");
    let bob_got = bob_in.wait_for(2).await;
    assert_eq!(bob_got.len(), 2, "{bob_got:?}");
    assert_eq!(bob_got[1].body, json!("to all"));
    assert_eq!(
        carol_in.count(),
        0,
        "the sender does not get its own broadcast"
    );

    // Status and metrics tell the same story.
    let s = status(b.http(), &carol).await;
    assert_eq!(s["users_online"], 3);
    let metrics = common::get(c.http(), "/metrics").await.body;
    assert!(metrics.contains("meteomesh_mesh_links_up 2"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_send_answers_and_queued_messages_follow_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let ([a, b, c], [alice, _carol, bob]) = triangle(dir.path()).await;
    let (dave, _) = register(a.http(), "dave", PW).await;

    // Online recipient: delivered.
    let bob_in = Inbox::open(c.mqtt_addr(), "bob", &bob).await;
    wait_online(a.http(), &alice, &["bob"]).await;
    let r = post_message(
        a.http(),
        &alice,
        json!({"mode": "send", "to": "bob", "body": 1}),
    )
    .await;
    assert_eq!(r["delivered"], true, "{r}");
    bob_in.wait_for(1).await;

    // Offline everywhere: not delivered, and the answer comes within the timeout (3 s).
    let started = Instant::now();
    let r = post_message(
        a.http(),
        &alice,
        json!({"mode": "send", "to": "dave", "body": 2}),
    )
    .await;
    assert_eq!(r["delivered"], false, "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // Queued for dave (home A) while offline…
    for i in 0..5 {
        let r = post_message(
            a.http(),
            &alice,
            json!({"mode": "fire_send", "to": "dave", "body": {"n": i}}),
        )
        .await;
        assert_eq!(r["queued"], true, "{r}");
    }
    assert_eq!(status(a.http(), &alice).await["queued_messages"], 5);
    // …and delivered in order when dave connects to a different node (B).
    let dave_in = Inbox::open(b.mqtt_addr(), "dave", &dave).await;
    let got = dave_in.wait_for(5).await;
    let order: Vec<i64> = got.iter().map(|m| m.body["n"].as_i64().unwrap()).collect();
    assert_eq!(order, [0, 1, 2, 3, 4]);
    assert!(got.iter().all(|m| m.from == "alice" && m.ack));
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "increasing per sender: {seqs:?}"
    );
    // Acknowledged, so the queue empties.
    wait_status(a.http(), &alice, "queue emptied by acks", |s| {
        s["queued_messages"] == 0
    })
    .await;

    // Bad requests get a clear 4xx.
    let r = api(
        a.http(),
        "POST",
        "/api/v1/messages",
        Some(&alice),
        r#"{"mode": "send", "body": 1}"#,
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("`to`"), "{}", r.body);
    let r = api(
        a.http(),
        "POST",
        "/api/v1/messages",
        None,
        r#"{"mode":"fire_broadcast","body":1}"#,
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_learns_the_mesh_from_one_seed_and_remembers_it() {
    let dir = tempfile::tempdir().unwrap();
    let ([mut a, b, mut c], [alice, _, _]) = triangle(dir.path()).await;
    // C was seeded with A only and linked to B by itself. Stop C, then A (the seed).
    c.stop();
    a.kill();
    c.start();
    // C finds B from its stored node list although its only seed is down.
    let s = wait_status(c.http(), &alice, "link to B from the stored list", |s| {
        links_up(s) == 1
    })
    .await;
    let b_id = status(b.http(), &alice).await["node"].clone();
    let linked: Vec<&Value> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["link"]["state"] == "up")
        .map(|n| &n["id"])
        .collect();
    assert_eq!(linked, [&b_id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_at_home_is_refused_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let ([a, b, _c], [alice, carol, _]) = triangle(dir.path()).await;
    // Alice's token (home A) works on B, over HTTP and MQTT.
    let r = api(b.http(), "GET", "/api/v1/users/online", Some(&alice), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let opts = |id: &str| common::mqtt_options(b.mqtt_addr(), id, Some(("alice", &alice)));
    assert_eq!(
        common::try_connect(opts("before")).await,
        Ok(rumqttc::ConnectReturnCode::Success)
    );
    // She logs out on A: B learns it over the mesh and refuses the token.
    let r = api(a.http(), "POST", "/api/v1/auth/logout", Some(&alice), "").await;
    assert!(r.status == 204 || r.status == 200, "{}", r.body);
    let deadline = Instant::now() + WAIT;
    loop {
        let r = api(b.http(), "GET", "/api/v1/users/online", Some(&alice), "").await;
        if r.status == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B still accepts the revoked token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        common::try_connect(opts("after")).await,
        Ok(rumqttc::ConnectReturnCode::BadUserNamePassword)
    );
    // Other users' tokens are untouched.
    let r = api(b.http(), "GET", "/api/v1/users/online", Some(&carol), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
}
