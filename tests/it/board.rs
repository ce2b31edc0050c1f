//! Shared whiteboards over the mesh, with MQTT clients on two node processes: strokes
//! drawn on one node reach the other, a clear from either side wipes both, a late
//! joiner gets the current drawing as a snapshot, a restarted node keeps it, and nobody
//! can draw in another user's name.

use crate::common;

use common::mesh::{MeshNode, links_up, wait_status};
use common::{MqttClient, WAIT, mqtt_options, register};
use meteomesh::contract::{self, BoardEvent, BoardEventKind, BoardSnapshot};
use rumqttc::QoS;
use serde_json::json;

const PW: &str = "correct horse battery";

async fn user(node: std::net::SocketAddr, name: &str, token: &str) -> MqttClient {
    let mut c = MqttClient::connect(mqtt_options(
        node,
        &format!("board-{name}"),
        Some((name, token)),
    ))
    .await;
    c.subscribe(&contract::board_events("b1"), QoS::AtMostOnce)
        .await;
    c.subscribe(&contract::board_snapshot(name, "b1"), QoS::AtLeastOnce)
        .await;
    c
}

async fn draw(c: &mut MqttClient, name: &str, input: serde_json::Value) {
    c.publish(
        &contract::board_draw("b1", name),
        QoS::AtMostOnce,
        false,
        input.to_string().as_bytes(),
    )
    .await;
}

fn point(kind: &str, seq: u64, epoch: u64) -> serde_json::Value {
    json!({"type": kind, "stroke": 7, "seq": seq, "x": 0.1 * seq as f64, "y": 0.5,
           "color": "#cc0000", "epoch": epoch})
}

async fn next_event(c: &mut MqttClient) -> BoardEvent {
    let p = c.next_publish(|t| t == contract::board_events("b1")).await;
    serde_json::from_slice(&p.payload).unwrap()
}

async fn snapshot(c: &mut MqttClient, name: &str) -> BoardSnapshot {
    draw(c, name, json!({"type": "snapshot"})).await;
    let p = c
        .next_publish(|t| t == contract::board_snapshot(name, "b1"))
        .await;
    serde_json::from_slice(&p.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boards_converge_across_nodes_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = MeshNode::new(&dir.path().join("a"), &[], "");
    a.start();
    let mut b = MeshNode::new(&dir.path().join("b"), &[a.mqtt()], "");
    b.start();
    let (ann, _) = register(a.http(), "ann", PW).await;
    let (bob, _) = register(b.http(), "bob", PW).await;
    wait_status(a.http(), &ann, "link to B", |s| links_up(s) == 1).await;
    wait_status(b.http(), &ann, "link to A", |s| links_up(s) == 1).await;

    let mut ann_c = user(a.mqtt_addr(), "ann", &ann).await;
    let mut bob_c = user(b.mqtt_addr(), "bob", &bob).await;

    // Ann draws a stroke on A; Bob sees it on B, stamped with her name.
    draw(&mut ann_c, "ann", point("start", 1, 0)).await;
    draw(&mut ann_c, "ann", point("drag", 2, 0)).await;
    draw(&mut ann_c, "ann", point("end", 3, 0)).await;
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let e = next_event(&mut bob_c).await;
        assert_eq!((e.user.as_str(), e.stroke), ("ann", 7));
        kinds.push(e.kind);
    }
    assert_eq!(
        kinds,
        [
            BoardEventKind::Start,
            BoardEventKind::Drag,
            BoardEventKind::End
        ]
    );

    // Bob clears on B: the clear reaches A.
    draw(&mut bob_c, "bob", json!({"type": "clear", "epoch": 1})).await;
    loop {
        let e = next_event(&mut ann_c).await;
        if e.kind == BoardEventKind::Clear {
            assert_eq!((e.user.as_str(), e.epoch), ("bob", 1));
            break;
        }
    }
    // A point drawn before Ann saw the clear (epoch 0) is dropped everywhere; a new one
    // (epoch 1) is kept.
    draw(
        &mut ann_c,
        "ann",
        json!({"type": "start", "stroke": 8, "seq": 4, "x": 0.9,
                                   "y": 0.9, "color": "#00aa00", "epoch": 0}),
    )
    .await;
    draw(
        &mut ann_c,
        "ann",
        json!({"type": "start", "stroke": 9, "seq": 5, "x": 0.2,
                                   "y": 0.3, "color": "#00aa00", "epoch": 1}),
    )
    .await;
    loop {
        let e = next_event(&mut bob_c).await;
        if e.kind == BoardEventKind::Start {
            assert_eq!(e.stroke, 9, "the stale point never arrives: {e:?}");
            break;
        }
    }

    // Ann cannot draw as Bob: the broker drops it. A point she draws after it, on the
    // same path, shows that nothing came before it.
    draw(&mut ann_c, "bob", point("start", 6, 1)).await;
    draw(
        &mut ann_c,
        "ann",
        json!({"type": "end", "stroke": 9, "seq": 6, "x": 0.2,
                                   "y": 0.3, "color": "#00aa00", "epoch": 1}),
    )
    .await;
    let e = next_event(&mut bob_c).await;
    assert_eq!(
        (e.user.as_str(), e.kind),
        ("ann", BoardEventKind::End),
        "{e:?}"
    );

    // A late joiner on B gets the drawing as a snapshot: epoch 1, Ann's one point.
    let (carol, _) = register(b.http(), "carol", PW).await;
    let mut carol_c = user(b.mqtt_addr(), "carol", &carol).await;
    let snap = snapshot(&mut carol_c, "carol").await;
    assert_eq!((snap.epoch, snap.part, snap.parts), (1, 1, 1));
    let strokes: Vec<(String, u64)> = snap
        .points
        .iter()
        .map(|p| (p.user.clone(), p.stroke))
        .collect();
    assert_eq!(strokes, [("ann".to_owned(), 9), ("ann".to_owned(), 9)]);

    // B restarts: the drawing is still there.
    drop(carol_c);
    b.stop();
    b.start();
    let mut carol_c = user(b.mqtt_addr(), "carol", &carol).await;
    let snap = tokio::time::timeout(WAIT, snapshot(&mut carol_c, "carol"))
        .await
        .unwrap();
    assert_eq!(snap.epoch, 1);
    assert_eq!(snap.points.len(), 2, "{snap:?}");
    assert_eq!((snap.points[0].x, snap.points[0].y), (0.2, 0.3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_page_needs_a_session_and_a_valid_name() {
    let app = common::TestApp::start().await;
    let r = common::get(app.http, "/board/main").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location").as_deref(), Some("/login"));
    let (token, _) = register(app.http, "ann", PW).await;
    let cookie = format!("meteomesh_session={token}");
    let page = |path: &'static str| {
        let cookie = cookie.clone();
        async move { common::request(app.http, "GET", path, &[("Cookie", &cookie)], b"").await }
    };
    let r = page("/board/main").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(r#"data-board="main""#) && r.body.contains(r#"data-user="ann""#));
    let ws = app.ws.unwrap().port().to_string();
    assert!(r.body.contains(&format!(r#"data-ws-port="{ws}""#)));
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("connect-src 'self' ws: wss:") && csp.contains("default-src 'self'"),
        "{csp}"
    );
    assert_eq!(page("/board/Not%20valid").await.status, 404);
    let js = common::get(app.http, "/static/board.js").await;
    assert_eq!(js.status, 200);
    assert!(
        js.header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    // Other pages keep the strict policy without WebSockets.
    let r = page("/account").await;
    assert!(!r.header("content-security-policy").unwrap().contains("ws:"));
    // The mesh status page, for any signed-in user.
    let r = page("/mesh").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("<caption>Nodes</caption>") && r.body.contains("this node"));
    assert!(
        r.body.contains("not part of a mesh"),
        "mesh.enabled is off here"
    );
    assert_eq!(common::get(app.http, "/mesh").await.status, 303);
}
