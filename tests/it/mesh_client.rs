//! The mesh client (library and `meteomesh client`) against real node processes: it
//! fails over when its node is SIGKILLed and loses none of the messages queued for it
//! meanwhile; it chooses the node with the fewest users, or the one with the lowest
//! round trip when another node's link is slowed by a delaying proxy.

use crate::common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::mesh::{
    Inbox, delaying_proxy, mesh_of, node_ids, post_message, run_cli, status, until_node_lost,
    wait_full_mesh, wait_status,
};
use common::{WAIT, register};
use meteomesh::client::{ClientEvent, ClientOptions, MeshClient, NodeChoice};
use meteomesh::contract;
use serde_json::json;
use tokio::sync::mpsc;

const PW: &str = "correct horse battery";

async fn next_event(events: &mut mpsc::Receiver<ClientEvent>, what: &str) -> ClientEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} in time"))
        .expect("client running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_fails_over_and_loses_no_queued_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh_of(dir.path(), 3);
    let (alice, _) = register(nodes[0].http(), "alice", PW).await;
    let (bob, _) = register(nodes[1].http(), "bob", PW).await;
    wait_full_mesh(&nodes, &alice).await;
    let ids = node_ids(&nodes, &alice).await;
    let mut opts = ClientOptions::new(nodes.iter().map(|n| n.mqtt()).collect(), "bob", &bob);
    opts.node_file = Some(dir.path().join("bob-nodes.json"));
    let (client, mut events) = MeshClient::start(opts);
    client.wait_connected(WAIT).await.expect("connected");

    let mut sent = Vec::new();
    let mut got = Vec::new();
    let mut seen = HashSet::new();
    let mut take = |m: contract::InboxMessage, got: &mut Vec<serde_json::Value>| {
        assert!(seen.insert(m.id.clone()), "duplicate {m:?}");
        assert_eq!(m.from, "alice");
        got.push(m.body);
    };
    for round in 0..3 {
        let on = client.current().node.expect("connected to a node");
        let victim = ids.iter().position(|i| *i == on).unwrap();
        let killed_at = Instant::now();
        nodes[victim].kill();
        // Sent while the client's node is dead, through another node.
        let via = nodes[(victim + 1) % 3].http();
        let body = json!({"round": round});
        post_message(
            via,
            &alice,
            json!({"mode": "fire_send", "to": "bob", "body": body}),
        )
        .await;
        sent.push(body);
        let (lost_at, node) = until_node_lost(&mut events, |m| take(m, &mut got)).await;
        assert_eq!(node.as_deref(), Some(on.as_str()));
        assert!(lost_at >= killed_at);
        let now_on = client.wait_connected(WAIT).await.expect("failed over");
        assert_ne!(now_on, on);
        nodes[victim].start();
        wait_full_mesh(&nodes, &alice).await;
    }
    // Every message queued during the outages arrives, each once.
    while got.len() < sent.len() {
        if let ClientEvent::Message(m) = next_event(&mut events, "queued message").await {
            take(m, &mut got);
        }
    }
    for s in &sent {
        assert!(got.contains(s), "{s} missing from {got:?}");
    }
    // The node list was kept for the next run.
    let file = std::fs::read_to_string(dir.path().join("bob-nodes.json")).unwrap();
    for n in &nodes {
        assert!(file.contains(&n.mqtt()), "{file}");
    }
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_client_fails_over_and_keeps_listening() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = mesh_of(dir.path(), 2);
    let (alice, _) = register(nodes[0].http(), "alice", PW).await;
    let (bob, _) = register(nodes[0].http(), "bob", PW).await;
    wait_full_mesh(&nodes, &alice).await;
    let list = format!("{},{}", nodes[0].mqtt(), nodes[1].mqtt());
    let mut child = common::bin()
        .args(["client", "--nodes", &list, "--user", "bob", "listen"])
        .env("METEOMESH_TOKEN", &bob)
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let expect = |event: &str| loop {
        let v = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no {event} line"));
        if v["event"] == event {
            return v;
        }
    };
    let first = expect("connected");
    assert_eq!(first["addr"], nodes[0].mqtt().as_str(), "{first}");
    wait_status(nodes[1].http(), &alice, "bob online", |s| {
        s["users_online"] == 1
    })
    .await;
    nodes[0].kill();
    let lost = expect("node_lost");
    assert_eq!(lost["addr"], nodes[0].mqtt().as_str());
    let again = expect("connected");
    assert_eq!(again["addr"], nodes[1].mqtt().as_str());
    // Still listening: a message queued through the surviving node arrives.
    post_message(
        nodes[1].http(),
        &alice,
        json!({"mode": "fire_send", "to": "bob", "body": "after the failover"}),
    )
    .await;
    let msg = expect("message");
    assert_eq!(msg["message"]["body"], "after the failover");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_users_picks_the_emptier_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh_of(dir.path(), 2);
    let (alice, _) = register(nodes[0].http(), "alice", PW).await;
    wait_full_mesh(&nodes, &alice).await;
    // Three users on node 0, none on node 1.
    let mut inboxes = Vec::new();
    for name in ["user1", "user2", "user3"] {
        let (token, _) = register(nodes[0].http(), name, PW).await;
        inboxes.push(Inbox::open(nodes[0].mqtt_addr(), name, &token).await);
    }
    wait_status(nodes[1].http(), &alice, "users seen", |s| {
        s["users_online"] == 3
    })
    .await;
    // Clients choose from the directory node 0 publishes: wait until it counts them.
    let mut watcher = common::MqttClient::connect(common::mqtt_options(
        nodes[0].mqtt_addr(),
        "directory-watcher",
        Some(("alice", &alice)),
    ))
    .await;
    watcher
        .subscribe(contract::MESH_DIRECTORY, rumqttc::QoS::AtLeastOnce)
        .await;
    loop {
        let p = watcher
            .next_publish(|t| t == contract::MESH_DIRECTORY)
            .await;
        let dir: contract::Directory = serde_json::from_slice(&p.payload).unwrap();
        if dir.nodes.iter().any(|n| n.advert.users >= 3) {
            break;
        }
    }
    let node1 = status(nodes[1].http(), &alice).await["node"].clone();
    let mut opts = ClientOptions::new(vec![nodes[0].mqtt(), nodes[1].mqtt()], "alice", &alice);
    opts.choice = NodeChoice::LeastUsers;
    let (client, _events) = MeshClient::start(opts);
    // Listed first and reachable, but node 1 has 3 fewer users: the client moves there.
    let deadline = Instant::now() + WAIT;
    loop {
        if client.current().node.as_deref() == node1.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "still on {:?}", client.current());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowest_rtt_picks_the_faster_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh_of(dir.path(), 2);
    let (alice, _) = register(nodes[0].http(), "alice", PW).await;
    wait_full_mesh(&nodes, &alice).await;
    let node1 = status(nodes[1].http(), &alice).await["node"].clone();
    // Node 0 is reached through a proxy that holds every chunk 60 ms each way.
    let slow = delaying_proxy(nodes[0].mqtt_addr(), Duration::from_millis(60)).await;
    let mut opts = ClientOptions::new(vec![slow.to_string(), nodes[1].mqtt()], "alice", &alice);
    opts.choice = NodeChoice::LowestRtt;
    opts.discover = false;
    let (client, _events) = MeshClient::start(opts);
    let on = client.wait_connected(WAIT).await.expect("connected");
    assert_eq!(
        Some(on.as_str()),
        node1.as_str(),
        "the slow node is listed first but not chosen"
    );
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_sends_over_mqtt_and_gets_alerts_from_the_home_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh_of(dir.path(), 2);
    let (alice, _) = register(nodes[0].http(), "alice", PW).await;
    let (bob, bob_id) = register(nodes[0].http(), "bob", PW).await;
    wait_full_mesh(&nodes, &alice).await;
    // Alice on node 0, bob (home node 0) on node 1 with a token node 0 issued.
    let (a, mut a_events) =
        MeshClient::start(ClientOptions::new(vec![nodes[0].mqtt()], "alice", &alice));
    let (b, mut b_events) =
        MeshClient::start(ClientOptions::new(vec![nodes[1].mqtt()], "bob", &bob));
    a.wait_connected(WAIT).await.unwrap();
    b.wait_connected(WAIT).await.unwrap();
    wait_status(nodes[0].http(), &alice, "both online", |s| {
        s["users_online"] == 2
    })
    .await;

    assert!(
        a.send("bob", json!("sync hello")).await.unwrap(),
        "bob's client acks"
    );
    let (acked, online) = a.broadcast(json!("hello all")).await.unwrap();
    assert_eq!((acked, online), (1, 1));
    let mut bodies = Vec::new();
    while bodies.len() < 2 {
        if let ClientEvent::Message(m) = next_event(&mut b_events, "message").await {
            bodies.push(m.body);
        }
    }
    assert_eq!(bodies, [json!("sync hello"), json!("hello all")]);
    assert!(
        !a.send("nobody", json!(1)).await.unwrap(),
        "nobody is online"
    );
    let err = a.send("Not A Name", json!(1)).await.unwrap_err();
    assert!(err.to_string().contains("not a username"), "{err}");
    let online = a.online(WAIT).await.unwrap();
    let names: Vec<&str> = online.iter().map(|u| u.user.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);

    // A weather alert of bob's home node reaches him on node 1 (a service account
    // publishes it on node 0's bus, as the rules would).
    let mut svc = common::MqttClient::connect(common::mqtt_options(
        nodes[0].mqtt_addr(),
        "alert-injector",
        Some((common::SERVICE_USER, common::SERVICE_PASSWORD)),
    ))
    .await;
    let alert = json!({
        "id": "7-too_cold-1795363200000", "user_id": bob_id, "subscription_id": 7,
        "label": "home", "place": "Catania", "constraint": "too_cold", "state": "raised",
        "value": 1.5, "threshold_c": 3.0, "weather_code": 3,
        "started_at": "2026-11-22T13:05:00Z", "at": "2026-11-22T13:05:00Z", "notify": true
    });
    svc.publish(
        &contract::user_alerts(bob_id),
        rumqttc::QoS::AtLeastOnce,
        false,
        alert.to_string().as_bytes(),
    )
    .await;
    loop {
        if let ClientEvent::Message(m) = next_event(&mut b_events, "alert").await {
            assert_eq!(m.kind, "alert");
            assert_eq!(m.body["place"], "Catania");
            break;
        }
    }
    // Alice's own broadcast was not echoed to her.
    while let Ok(event) = a_events.try_recv() {
        assert!(!matches!(event, ClientEvent::Message(_)), "{event:?}");
    }
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_status_command_prints_the_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = mesh_of(dir.path(), 2);
    let (alice, _) = register(nodes[0].http(), "alice", PW).await;
    wait_full_mesh(&nodes, &alice).await;
    let url = format!("http://{}", nodes[1].http());
    let out = run_cli(dir.path(), &["mesh", "--url", &url, "status"], &alice);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&nodes[0].mqtt()) && text.contains(&nodes[1].mqtt()),
        "{text}"
    );
    assert!(text.contains("(this)") && text.contains(" up "), "{text}");
    assert!(text.contains("duplicates dropped"), "{text}");
    // A wrong token gets a clear refusal and a failing exit code.
    let out = run_cli(
        dir.path(),
        &["mesh", "--url", &url, "status"],
        "not-a-token",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}
