//! The trust boundary between users (docs/security.md, threat model): each test performs
//! one attack an ordinary self-registered account, an anonymous client or an account of
//! another mesh node could try, and checks it fails.

use crate::common;

use std::time::Duration;

use common::*;
use rumqttc::{ConnectReturnCode, LastWill, QoS, SubscribeReasonCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PW: &str = "correct-horse-1";

fn alerts(id: i64) -> String {
    format!("meteomesh/v1/users/{id}/alerts")
}

fn user_opts(t: &TestApp, client_id: &str, user: &str, password: &str) -> rumqttc::MqttOptions {
    mqtt_options(t.mqtt.unwrap(), client_id, Some((user, password)))
}

/// Subscribes and returns the SUBACK codes.
async fn subscribe_codes(c: &mut MqttClient, filter: &str) -> Vec<SubscribeReasonCode> {
    c.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::SubAck(ack)) =
                c.eventloop.poll().await.unwrap()
            {
                return ack.return_codes;
            }
        }
    })
    .await
    .unwrap()
}

/// Sends DISCONNECT (the session ends cleanly, no will) and closes the connection.
async fn disconnect(mut c: MqttClient) {
    c.client.disconnect().await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            match c.eventloop.poll().await {
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("DISCONNECT sent in time");
}

/// The retained message of the concrete `topic`, as a new subscriber receives it (one
/// that subscribed just before it was published is sent it live instead: ask again).
async fn retained_on(t: &TestApp, topic: &str) -> rumqttc::Publish {
    // A new client id each time: rmqtt may still be tearing down the last one's session.
    static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    loop {
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut c = t.service_client(&format!("retained-probe-{n}")).await;
        c.subscribe(topic, QoS::AtLeastOnce).await;
        let got = c.next_publish(|_| true).await;
        disconnect(c).await;
        if got.retain {
            return got;
        }
    }
}

async fn metric(t: &TestApp, series: &str) -> f64 {
    metric_value(&get(t.http, "/metrics").await.body, series).unwrap_or(0.0)
}

/// Waits (up to `within`) for the watcher to see its topic's retained message cleared
/// (an empty payload); copies of the old state that were still on their way are skipped.
async fn cleared(watcher: &mut MqttClient, within: Duration) {
    tokio::time::timeout(within, async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) =
                watcher.eventloop.poll().await.unwrap()
                && p.payload.is_empty()
            {
                return;
            }
        }
    })
    .await
    .expect("the retained message is cleared in time");
}

/// Connects with `opts` until the broker says `want` (a released client id is freed by
/// the broker right after the old connection closes, not before).
async fn connect_eventually(opts: rumqttc::MqttOptions, want: ConnectReturnCode) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = try_connect(opts.clone()).await;
        if got == Ok(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "last answer {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_wills_obey_the_publish_rules() {
    let t = TestApp::start_with(|c| c.bus.allow_anonymous = true).await;
    let (alice_token, _) = register(t.http, "alice", PW).await;
    let (_, bob) = register(t.http, "bob", PW).await;
    let status = format!("meteomesh/v1/nodes/{}/status", t.app.node_id);
    let will = |topic: &str, retain: bool| LastWill::new(topic, "forged", QoS::AtLeastOnce, retain);

    // Wills a user could not publish: another user's alerts (Telegram), the weather
    // feed (alerts for others), account events (disconnecting others), retained node
    // status and $SYS, and a retained will on the user's own topic.
    for (topic, retain) in [
        (alerts(bob), false),
        ("meteomesh/v1/weather/observed".to_owned(), false),
        ("meteomesh/v1/system/accounts".to_owned(), false),
        // Notices that reach administrators' Telegram chats.
        ("meteomesh/v1/system/weather".to_owned(), false),
        ("meteomesh/v1/system/sla".to_owned(), false),
        (status.clone(), true),
        ("$SYS/brokers".to_owned(), true),
        ("meteomesh/v1/mesh/users/alice/send".to_owned(), true),
        ("meteomesh/v1/mesh/users/+/send".to_owned(), false),
    ] {
        let mut o = user_opts(&t, "alice-will", "alice", &alice_token);
        o.set_last_will(will(&topic, retain));
        assert_eq!(
            try_connect(o).await,
            Ok(ConnectReturnCode::NotAuthorized),
            "{topic} retain={retain}"
        );
        // Anonymous clients are held to the same rule.
        let mut o = mqtt_options(t.mqtt.unwrap(), "anon-will", None);
        o.set_last_will(will(&topic, retain));
        assert_eq!(
            try_connect(o).await,
            Ok(ConnectReturnCode::NotAuthorized),
            "anonymous: {topic}"
        );
    }

    // A will the user may publish is fine, and so is an anonymous client without one.
    let mut o = user_opts(&t, "alice-will", "alice", &alice_token);
    o.set_last_will(will("meteomesh/v1/mesh/users/alice/send", false));
    assert_eq!(try_connect(o).await, Ok(ConnectReturnCode::Success));
    let o = mqtt_options(t.mqtt.unwrap(), "anon-plain", None);
    assert_eq!(try_connect(o).await, Ok(ConnectReturnCode::Success));

    // Nothing forged was retained as the node's status.
    let retained = retained_on(&t, &status).await;
    assert!(
        String::from_utf8_lossy(&retained.payload).contains("online"),
        "{:?}",
        retained.payload
    );
    assert_eq!(
        metric(
            &t,
            "meteomesh_bus_connections_refused_total{reason=\"will\"}"
        )
        .await,
        18.0
    );
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ids_belong_to_one_identity() {
    let t = TestApp::start().await;
    let (alice_token, alice) = register(t.http, "alice", PW).await;
    let (bob_token, _) = register(t.http, "bob", PW).await;

    // The modules' own client ids (and the mesh links') are not for users or services.
    for id in [
        format!("meteomesh-{}-notifier", t.app.node_id),
        format!("meteomesh-{}-mesh-in", t.app.node_id),
        "meteomesh-link-n1".to_owned(),
    ] {
        assert_eq!(
            try_connect(user_opts(&t, &id, "bob", &bob_token)).await,
            Ok(ConnectReturnCode::NotAuthorized),
            "{id}"
        );
    }
    let internal = format!("meteomesh-{}-system", t.app.node_id);
    assert_eq!(
        try_connect(user_opts(&t, &internal, SERVICE_USER, SERVICE_PASSWORD)).await,
        Ok(ConnectReturnCode::NotAuthorized)
    );
    // The node's modules kept their sessions: /readyz's bus round trip still answers.
    assert_eq!(get(t.http, "/readyz").await.status, 200);

    // Alice's persistent session with a queued alert.
    let mut persistent = user_opts(&t, "alice-phone", "alice", &alice_token);
    persistent.set_clean_session(false);
    let mut a = MqttClient::connect(persistent.clone()).await;
    a.subscribe(&alerts(alice), QoS::AtLeastOnce).await;
    // While it is live, Bob cannot take the id over.
    let mut bob_as_phone = user_opts(&t, "alice-phone", "bob", &bob_token);
    bob_as_phone.set_clean_session(false);
    assert_eq!(
        try_connect(bob_as_phone.clone()).await,
        Ok(ConnectReturnCode::NotAuthorized)
    );
    disconnect(a).await;
    let mut service = t.service_client("svc").await;
    service
        .publish(&alerts(alice), QoS::AtLeastOnce, false, b"queued for alice")
        .await;
    // Offline, the stored session is still Alice's: Bob neither gets it nor a clean one.
    assert_eq!(
        try_connect(bob_as_phone.clone()).await,
        Ok(ConnectReturnCode::NotAuthorized)
    );
    bob_as_phone.set_clean_session(true);
    assert_eq!(
        try_connect(bob_as_phone).await,
        Ok(ConnectReturnCode::NotAuthorized)
    );
    // Alice comes back to her queued message.
    let mut a = MqttClient::connect(persistent).await;
    let got = a.next_publish(|t| t.ends_with("/alerts")).await;
    assert_eq!(&got.payload[..], b"queued for alice");

    // A clean session's id is free again once it ends: ids are not squatted forever.
    let temp = user_opts(&t, "shared-name", "alice", &alice_token);
    disconnect(MqttClient::connect(temp).await).await;
    connect_eventually(
        user_opts(&t, "shared-name", "bob", &bob_token),
        ConnectReturnCode::Success,
    )
    .await;
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_cannot_hold_unbounded_sessions() {
    let t = TestApp::start_with(|c| c.bus.max_sessions_per_user = 3).await;
    let (token, _) = register(t.http, "alice", PW).await;
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(MqttClient::connect(user_opts(&t, &format!("a{i}"), "alice", &token)).await);
    }
    assert_eq!(
        try_connect(user_opts(&t, "a3", "alice", &token)).await,
        Ok(ConnectReturnCode::NotAuthorized)
    );
    // Reconnecting with an id the account holds still works (it replaces that session).
    assert_eq!(
        try_connect(user_opts(&t, "a0", "alice", &token)).await,
        Ok(ConnectReturnCode::Success)
    );
    // Other users are not affected.
    let (bob, _) = register(t.http, "bob", PW).await;
    assert_eq!(
        try_connect(user_opts(&t, "b0", "bob", &bob)).await,
        Ok(ConnectReturnCode::Success)
    );
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_cannot_retain_and_the_nodes_state_is_never_crowded_out() {
    let t = TestApp::start_with(|c| {
        c.bus.max_retained_messages = 3;
        c.bus.max_retained_bytes = 1000;
    })
    .await;
    let (token, alice) = register(t.http, "alice", PW).await;

    // A user's retained publishes (here on her own board topic) are refused; a QoS 1
    // PUBACK comes after the broker's decision, so the counter is final here.
    let denied = "meteomesh_bus_acl_denied_total{action=\"publish\"}";
    let before = metric(&t, denied).await;
    let mut a = MqttClient::connect(user_opts(&t, "alice-1", "alice", &token)).await;
    let draw = "meteomesh/v1/boards/main/draw/alice";
    for i in 0..20 {
        a.publish(
            draw,
            QoS::AtLeastOnce,
            true,
            format!("{{\"n\":{i}}}").as_bytes(),
        )
        .await;
    }
    assert_eq!(metric(&t, denied).await - before, 20.0);

    // A service account retains within its budget: 3 messages, 1000 bytes.
    let mut s = t.service_client("svc").await;
    for i in 0..5 {
        s.publish(&format!("svc/r/{i}"), QoS::AtLeastOnce, true, b"x")
            .await;
    }
    s.publish("svc/r/0", QoS::AtLeastOnce, true, &[b'y'; 2000])
        .await;
    let kept = "meteomesh_bus_client_retained_messages";
    assert_eq!(metric(&t, kept).await, 3.0);
    assert_eq!(metric(&t, "meteomesh_bus_client_retained_bytes").await, 3.0);
    assert_eq!(metric(&t, denied).await - before, 23.0);
    assert_eq!(&retained_on(&t, "svc/r/0").await.payload[..], b"x");
    // Clearing one frees its place.
    s.publish("svc/r/0", QoS::AtLeastOnce, true, b"").await;
    s.publish("svc/r/4", QoS::AtLeastOnce, true, b"z").await;
    assert_eq!(metric(&t, kept).await, 3.0);
    assert_eq!(&retained_on(&t, "svc/r/4").await.payload[..], b"z");

    // The node's own retained state still updates: a new subscription's state appears.
    let r = post_subscription(
        t.http,
        &token,
        r#"{"place":{"lat":45,"lon":9},"max_temp":30}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_i64().unwrap();
    let state = retained_on(
        &t,
        &format!("meteomesh/v1/users/{alice}/subscriptions/{id}/state"),
    )
    .await;
    assert!(!state.payload.is_empty());
    t.app.shutdown().await.unwrap();
}

/// A raw MQTT 3.1.1 client: rumqttc refuses to send an invalid topic name itself.
struct RawMqtt(tokio::net::TcpStream);

fn mqtt_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn packet(kind: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![kind];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend(body);
    out
}

impl RawMqtt {
    async fn connect(t: &TestApp, client_id: &str, user: &str, password: &str) -> RawMqtt {
        let mut stream = tokio::net::TcpStream::connect(t.mqtt.unwrap())
            .await
            .unwrap();
        let mut body = Vec::new();
        mqtt_string(&mut body, b"MQTT");
        body.extend_from_slice(&[4, 0xC2, 0, 60]);
        mqtt_string(&mut body, client_id.as_bytes());
        mqtt_string(&mut body, user.as_bytes());
        mqtt_string(&mut body, password.as_bytes());
        stream.write_all(&packet(0x10, body)).await.unwrap();
        let mut ack = [0u8; 4];
        tokio::time::timeout(WAIT, stream.read_exact(&mut ack))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ack, [0x20, 2, 0, 0], "CONNACK accepted");
        RawMqtt(stream)
    }

    async fn publish_qos0(&mut self, topic: &[u8], payload: &[u8]) {
        let mut body = Vec::new();
        mqtt_string(&mut body, topic);
        body.extend_from_slice(payload);
        self.0.write_all(&packet(0x30, body)).await.unwrap();
    }

    /// Whether the broker closes the connection (rather than answering a PINGREQ).
    async fn closed_by_broker(&mut self) -> bool {
        let _ = self.0.write_all(&[0xC0, 0]).await;
        let mut buf = [0u8; 64];
        match tokio::time::timeout(WAIT, self.0.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) => false,
            Err(_) => panic!("neither PINGRESP nor close in time"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_topic_names_and_shared_subscriptions_are_refused() {
    let t = TestApp::start().await;
    let (token, _) = register(t.http, "alice", PW).await;
    let mut watcher = t.service_client("watcher").await;
    watcher.subscribe("#", QoS::AtMostOnce).await;

    // MQTT-3.3.2-2 and 1.5.3-2: wildcards and NUL have no place in a topic name. The
    // broker closes the connection, for users and service accounts alike.
    let mut n = 0;
    for topic in [
        &b"meteomesh/v1/mesh/users/alice/+"[..],
        b"meteomesh/v1/mesh/users/alice/#",
        b"meteomesh/v1/mesh/users/alice/send\0x",
    ] {
        for (user, password) in [("alice", token.as_str()), (SERVICE_USER, SERVICE_PASSWORD)] {
            n += 1;
            let mut raw = RawMqtt::connect(&t, &format!("raw-{n}"), user, password).await;
            raw.publish_qos0(topic, b"bad").await;
            assert!(raw.closed_by_broker().await, "{user}: {topic:?}");
        }
    }
    // A valid publish on the same connection kind is kept open.
    let mut raw = RawMqtt::connect(&t, "raw", SERVICE_USER, SERVICE_PASSWORD).await;
    raw.publish_qos0(b"svc/fine", b"ok").await;
    assert!(!raw.closed_by_broker().await);
    let got = watcher.next_publish(|t| t.starts_with("svc/")).await;
    assert_eq!(&*got.topic, "svc/fine", "no invalid topic was routed");

    // `$share/...` is not supported: refused, not granted as a literal filter.
    let mut s = t.service_client("svc").await;
    for filter in ["$share/g/meteomesh/v1/#", "$queue/meteomesh/v1/#"] {
        assert_eq!(
            subscribe_codes(&mut s, filter).await,
            [SubscribeReasonCode::Failure],
            "{filter}"
        );
    }
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_accounts_id_and_tokens_never_serve_another_account() {
    let t = TestApp::start().await;
    let (_admin, _) = register(t.http, "root", PW).await;
    let (alice_token, alice) = register(t.http, "alice", PW).await;
    let r = post_json(
        t.http,
        "/api/v1/auth/login",
        &json!({"username": "alice", "password": PW}).to_string(),
    )
    .await;
    let logged_out = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        api(t.http, "POST", "/api/v1/auth/logout", Some(&logged_out), "")
            .await
            .status,
        204
    );
    assert_eq!(
        api(t.http, "DELETE", "/api/v1/me", Some(&alice_token), "")
            .await
            .status,
        204
    );

    // The next account gets a new id; Alice's tokens do not name it.
    let (_, carol) = register(t.http, "carol", PW).await;
    assert!(carol > alice, "carol {carol}, alice was {alice}");
    for token in [&alice_token, &logged_out] {
        assert_eq!(
            api(t.http, "GET", "/api/v1/me", Some(token), "")
                .await
                .status,
            401
        );
        assert_eq!(
            try_connect(user_opts(&t, "old-token", "carol", token)).await,
            Ok(ConnectReturnCode::BadUserNamePassword)
        );
    }

    // Also after a restart, and when the deleted account had the highest id.
    let (dave_token, dave) = register(t.http, "dave", PW).await;
    assert_eq!(
        api(t.http, "DELETE", "/api/v1/me", Some(&dave_token), "")
            .await
            .status,
        204
    );
    let config = t.config.clone();
    t.app.shutdown().await.unwrap();
    let app = start_ready(&config).await;
    let http = app.addresses.http.unwrap();
    let (_, erin) = register(http, "erin", PW).await;
    assert!(erin > dave, "erin {erin}, dave was {dave}");
    assert_eq!(
        api(http, "GET", "/api/v1/me", Some(&dave_token), "")
            .await
            .status,
        401
    );
    app.shutdown().await.unwrap();
}

/// Creates a subscription for the account and returns a service client (`watcher_id`)
/// that has received its retained state, so a test sees the state cleared live.
async fn watched_subscription_state(
    t: &TestApp,
    token: &str,
    user_id: i64,
    watcher_id: &str,
) -> MqttClient {
    let r = post_subscription(
        t.http,
        token,
        r#"{"place":{"lat":45,"lon":9},"max_temp":30}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_i64().unwrap();
    let state = format!("meteomesh/v1/users/{user_id}/subscriptions/{id}/state");
    let mut watcher = t.service_client(watcher_id).await;
    watcher.subscribe(&state, QoS::AtLeastOnce).await;
    assert!(!watcher.next_publish(|_| true).await.payload.is_empty());
    watcher
}

/// Leaves what an account leaves on the broker: a subscription whose retained state a
/// service client watches (returned, so a test sees the state cleared live), and a stored
/// persistent session (`alice-phone`) subscribed to the account's alerts.
async fn leave_broker_state(t: &TestApp, token: &str, user_id: i64, user: &str) -> MqttClient {
    let watcher = watched_subscription_state(t, token, user_id, "watcher").await;
    let mut persistent = user_opts(t, "alice-phone", user, token);
    persistent.set_clean_session(false);
    let mut a = MqttClient::connect(persistent).await;
    a.subscribe(&alerts(user_id), QoS::AtLeastOnce).await;
    disconnect(a).await;
    watcher
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_account_clears_what_it_left_on_the_broker() {
    let t = TestApp::start().await;
    let (_admin, _) = register(t.http, "root", PW).await;
    let (token, alice) = register(t.http, "alice", PW).await;
    let (bob_token, _) = register(t.http, "bob", PW).await;
    // Retained subscription state, and a stored persistent session with a queued alert.
    let mut watcher = leave_broker_state(&t, &token, alice, "alice").await;
    let mut service = t.service_client("svc").await;
    service
        .publish(&alerts(alice), QoS::AtLeastOnce, false, b"queued")
        .await;

    assert_eq!(
        api(t.http, "DELETE", "/api/v1/me", Some(&token), "")
            .await
            .status,
        204
    );
    // The stored session is gone (its id is free for another account) and so is the
    // retained state under the account's topics.
    connect_eventually(
        user_opts(&t, "alice-phone", "bob", &bob_token),
        ConnectReturnCode::Success,
    )
    .await;
    cleared(&mut watcher, WAIT).await;
    t.app.shutdown().await.unwrap();
}

/// A login token as another node of the mesh signs it with the shared secret.
fn foreign_token(secret: &str, user_id: i64, name: &str, home: &str) -> String {
    meteomesh::modules::auth::install_jwt_provider();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({
        "sub": user_id.to_string(), "iat": now, "exp": now + 3600, "jti": "feedc0de",
        "generation": 0, "name": name, "home": home, "key": "their-own-account-key",
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_another_node_never_acts_as_a_local_account() {
    const SECRET: &str = "a-mesh-wide-secret-of-32-characters-or-more";
    let t = TestApp::start_with(|c| {
        c.mesh.shared_secret = meteomesh::config::Secret::new(SECRET);
    })
    .await;
    let (_, root) = register(t.http, "root", PW).await;
    let (mallory_token, mallory) = register(t.http, "mallory", PW).await;
    // eve of node B: her id there is 1 (B's admin), and another of B's users has
    // mallory's id here.
    for (id, name) in [(root, "eve"), (mallory, "trudy")] {
        let token = foreign_token(SECRET, id, name, "node-b");
        for (method, path, body) in [
            ("GET", "/api/v1/me", ""),
            ("GET", "/api/v1/admin/users", ""),
            ("GET", "/api/v1/subscriptions", ""),
            (
                "PUT",
                "/api/v1/me/notifications",
                r#"{"telegram_chat_id": 42}"#,
            ),
        ] {
            let r = api(t.http, method, path, Some(&token), body).await;
            assert_eq!(r.status, 401, "{name}: {method} {path}: {}", r.body);
        }
        // Messaging identifies them as themselves, never as the local account.
        let r = api(t.http, "GET", "/api/v1/users/online", Some(&token), "").await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = api(t.http, "GET", "/api/v1/me", Some(&mallory_token), "").await;
    assert_eq!(r.json()["telegram_chat_id"], serde_json::Value::Null);

    // Nor does another node's user who took a local user's name: here the name is
    // mallory's, over HTTP and MQTT.
    let impostor = foreign_token(SECRET, 7, "mallory", "node-b");
    let r = api(t.http, "GET", "/api/v1/users/online", Some(&impostor), "").await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        try_connect(user_opts(&t, "impostor", "mallory", &impostor)).await,
        Ok(ConnectReturnCode::BadUserNamePassword)
    );
    let eve = foreign_token(SECRET, 7, "eve", "node-b");
    assert_eq!(
        try_connect(user_opts(&t, "eve", "eve", &eve)).await,
        Ok(ConnectReturnCode::Success)
    );
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_must_be_objects_and_path_errors_use_the_error_shape() {
    let t = TestApp::start().await;
    let (token, _) = register(t.http, "alice", PW).await;
    for (path, body) in [
        ("/api/v1/auth/login", r#"["alice", "correct-horse-1"]"#),
        ("/api/v1/auth/register", r#"["mallory", "correct-horse-1"]"#),
        ("/api/v1/auth/login", r#""alice""#),
        ("/api/v1/auth/login", "null"),
    ] {
        let r = post_json(t.http, path, body).await;
        assert_eq!(r.status, 422, "{path} {body}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "validation_failed");
    }
    for path in [
        "/api/v1/subscriptions/abc",
        "/api/v1/subscriptions/99999999999999999999",
    ] {
        let r = api(t.http, "GET", path, Some(&token), "").await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["error"]["code"], "not_found", "{}", r.body);
    }
    t.app.shutdown().await.unwrap();
}

/// An idle TCP connection to `addr` from the loopback address `from`.
async fn idle_socket(from: [u8; 4], addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    socket.connect(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_the_gateway_from_everyone() {
    let t = TestApp::start_with(|c| {
        c.http.max_connections = 100;
        c.http.max_connections_per_client = 10;
        // Long enough that idle sockets are not closed for us during the test.
        c.http.header_timeout = Duration::from_secs(300);
    })
    .await;
    // 150 silent connections from one address: 10 are held, the rest answered 429.
    let mut sockets = Vec::new();
    for _ in 0..150 {
        sockets.push(idle_socket([127, 0, 0, 2], t.http).await);
    }
    // Each socket either gets the 429 or stays silent (held); wait for all at once.
    let mut answers = tokio::task::JoinSet::new();
    for mut s in sockets {
        answers.spawn(async move {
            let mut buf = [0u8; 512];
            let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
            let answer = match read {
                Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).to_string()),
                _ => None,
            };
            (s, answer)
        });
    }
    let mut held = Vec::new();
    let mut refused = 0;
    while let Some(done) = answers.join_next().await {
        match done.unwrap() {
            (_, Some(text)) => {
                assert!(text.starts_with("HTTP/1.1 429"), "{text}");
                refused += 1;
            }
            (s, None) => held.push(s),
        }
    }
    assert_eq!(held.len(), 10, "held connections");
    assert_eq!(refused, 140);
    // Everyone else is served at once.
    let r = get(t.http, "/healthz").await;
    assert_eq!(r.status, 200);
    drop(held);
    t.app.shutdown().await.unwrap();
}

async fn login_from(t: &TestApp, user: &str, forwarded_for: &str) -> u16 {
    request(
        t.http,
        "POST",
        "/api/v1/auth/login",
        &[
            ("Content-Type", "application/json"),
            ("X-Forwarded-For", forwarded_for),
        ],
        json!({"username": user, "password": "wrong-password"})
            .to_string()
            .as_bytes(),
    )
    .await
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_trusted_proxy_names_the_client_address() {
    // Behind a trusted proxy each forwarded client has its own failure count.
    let t = TestApp::start_with(|c| {
        c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        // The throttle's first delay outlasts any pause of a loaded machine.
        c.auth.login_first_delay = Duration::from_secs(60);
    })
    .await;
    for i in 0..5 {
        assert_eq!(login_from(&t, &format!("u{i}"), "192.0.2.1").await, 401);
    }
    assert_eq!(login_from(&t, "u5", "192.0.2.1").await, 429);
    assert_eq!(login_from(&t, "u6", "192.0.2.2").await, 401);
    t.app.shutdown().await.unwrap();

    // Anyone else's X-Forwarded-For is ignored: it cannot dodge the count.
    let t = TestApp::start_with(|c| c.auth.login_first_delay = Duration::from_secs(60)).await;
    for i in 0..5 {
        assert_eq!(
            login_from(&t, &format!("u{i}"), &format!("192.0.2.{i}")).await,
            401
        );
    }
    assert_eq!(login_from(&t, "u5", "192.0.2.99").await, 429);
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_page_gets_a_board_only_credential_not_the_login_token() {
    let t = TestApp::start().await;
    let (token, id) = register(t.http, "ann", PW).await;
    let cookie = format!("meteomesh_session={token}");
    let page = request(t.http, "GET", "/board/main", &[("Cookie", &cookie)], b"").await;
    assert_eq!(page.status, 200);
    assert!(
        !page.body.contains(&token),
        "the page carries the login token"
    );
    assert!(!page.body.contains("data-token"));

    assert_eq!(get(t.http, "/board-credential").await.status, 401);
    let r = request(
        t.http,
        "GET",
        "/board-credential",
        &[("Cookie", &cookie)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let credential = r.json()["token"].as_str().unwrap().to_owned();
    assert_ne!(credential, token);

    // Worthless over HTTP.
    for path in [
        "/api/v1/me",
        "/api/v1/subscriptions",
        "/api/v1/users/online",
    ] {
        let r = api(t.http, "GET", path, Some(&credential), "").await;
        assert_eq!(r.status, 401, "{path}");
    }
    let r = request(
        t.http,
        "GET",
        "/account",
        &[("Cookie", &format!("meteomesh_session={credential}"))],
        b"",
    )
    .await;
    assert_eq!(r.status, 303, "a page session with the credential");

    // On the broker: the board topics and nothing else of the account.
    let mut c = MqttClient::connect(user_opts(&t, "board-ann", "ann", &credential)).await;
    for (filter, ok) in [
        ("meteomesh/v1/boards/+/events".to_owned(), true),
        (
            "meteomesh/v1/mesh/users/ann/boards/main/snapshot".to_owned(),
            true,
        ),
        ("meteomesh/v1/mesh/directory".to_owned(), true),
        (format!("meteomesh/v1/users/{id}/#"), false),
        ("meteomesh/v1/mesh/users/ann/#".to_owned(), false),
        ("meteomesh/v1/mesh/users/ann/inbox".to_owned(), false),
    ] {
        let want = if ok {
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        } else {
            SubscribeReasonCode::Failure
        };
        assert_eq!(subscribe_codes(&mut c, &filter).await, [want], "{filter}");
    }
    let denied = "meteomesh_bus_acl_denied_total{action=\"publish\"}";
    let before = metric(&t, denied).await;
    c.publish(
        "meteomesh/v1/mesh/users/ann/send",
        QoS::AtLeastOnce,
        false,
        b"{}",
    )
    .await;
    c.publish(
        "meteomesh/v1/boards/main/draw/ann",
        QoS::AtLeastOnce,
        false,
        br##"{"type":"here","color":"#123456"}"##,
    )
    .await;
    assert_eq!(metric(&t, denied).await - before, 1.0);

    // Nor can it pick up a stored session of the account, whose subscriptions reach
    // beyond the boards.
    let mut phone = user_opts(&t, "ann-phone", "ann", &token);
    phone.set_clean_session(false);
    let mut p = MqttClient::connect(phone).await;
    p.subscribe(&format!("meteomesh/v1/users/{id}/#"), QoS::AtLeastOnce)
        .await;
    disconnect(p).await;
    let mut stolen = user_opts(&t, "ann-phone", "ann", &credential);
    stolen.set_clean_session(false);
    assert_eq!(
        try_connect(stolen).await,
        Ok(ConnectReturnCode::NotAuthorized)
    );
    t.app.shutdown().await.unwrap();
}

/// A login through a trusted proxy (127.0.0.1) for the client `forwarded_for`, with the
/// cookies a browser would send. Returns the answer.
async fn proxied_login(
    t: &TestApp,
    user: &str,
    password: &str,
    forwarded_for: &str,
    cookie: Option<&str>,
) -> Response {
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("X-Forwarded-For", forwarded_for),
    ];
    if let Some(c) = cookie {
        headers.push(("Cookie", c));
    }
    let body = json!({"username": user, "password": password}).to_string();
    request(
        t.http,
        "POST",
        "/api/v1/auth/login",
        &headers,
        body.as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_cannot_lock_the_household_out() {
    let t = TestApp::start_with(|c| {
        c.auth.login_max_failures = 3;
        // Long enough that the steps below happen within one delay on a slow machine.
        c.auth.login_first_delay = Duration::from_secs(5);
        c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    register(t.http, "alice", PW).await;
    // Alice's phone logged in before: it holds a device cookie. Her MQTT client too.
    let r = proxied_login(&t, "alice", PW, "192.0.2.10", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let set = r.header("set-cookie").expect("device cookie");
    let device = set.split(';').next().unwrap().to_owned();
    assert!(device.starts_with("meteomesh_device="), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert_eq!(
        try_connect(user_opts(&t, "alice-mqtt", "alice", PW)).await,
        Ok(ConnectReturnCode::Success)
    );

    // Mallory guesses from elsewhere; progressively slower, never a flat lock.
    for _ in 0..3 {
        let r = proxied_login(&t, "alice", "guess-guess", "198.51.100.66", None).await;
        assert_eq!(r.status, 401);
    }
    let r = proxied_login(&t, "alice", "guess-guess", "198.51.100.66", None).await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.header("retry-after").as_deref(),
        Some("5"),
        "the first delay is short"
    );
    // An unknown device (a new laptop) waits like Mallory...
    let r = proxied_login(&t, "alice", PW, "192.0.2.11", None).await;
    assert_eq!(r.status, 429, "the account waits");
    // ...but the phone that logged in before is let in with the right password, from
    // any address, and so is her MQTT client.
    let r = proxied_login(&t, "alice", PW, "192.0.2.12", Some(&device)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        try_connect(user_opts(&t, "alice-mqtt", "alice", PW)).await,
        Ok(ConnectReturnCode::Success)
    );

    // A flood of cheap failures (oversized passwords, ever new names and addresses)
    // tries to push the account's count out of the table.
    let long = "x".repeat(1100);
    for i in 0..1700 {
        let r = proxied_login(
            &t,
            &format!("nobody{i}"),
            &long,
            &format!("203.0.113.{}", i % 250),
            None,
        )
        .await;
        assert!(r.status == 401 || r.status == 429, "{}", r.status);
    }
    // The count survived: once the 5 s delay is over, Mallory's next failure is his
    // fourth (the delay doubles), not a first one.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = proxied_login(&t, "alice", "guess-again", "198.51.100.67", None).await;
        if r.status == 401 {
            break;
        }
        assert_eq!(r.status, 429);
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = proxied_login(&t, "alice", "guess-again", "198.51.100.67", None).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after").as_deref(), Some("10"));
    // A made-up device cookie is no device.
    let r = proxied_login(
        &t,
        "alice",
        PW,
        "192.0.2.13",
        Some("meteomesh_device=00000000000000000000000000000000"),
    )
    .await;
    assert_eq!(r.status, 429);
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_deleted_from_the_command_line_leaves_nothing_on_the_broker() {
    let t = TestApp::start().await;
    let (_admin, _) = register(t.http, "root", PW).await;
    let (token, alice) = register(t.http, "alice", PW).await;
    let mut watcher = leave_broker_state(&t, &token, alice, "alice").await;
    // Carol leaves retained state but holds no session at all.
    let (carol_token, carol) = register(t.http, "carol", PW).await;
    let mut carol_watcher =
        watched_subscription_state(&t, &carol_token, carol, "carol-watcher").await;

    // `meteomesh user delete`, as the admin on the device would, beside the server.
    for name in ["alice", "carol"] {
        let action = meteomesh::cli::args::UserAction::Delete {
            username: name.into(),
        };
        let config = t.config.clone();
        tokio::task::spawn_blocking(move || meteomesh::cli::users::run(&config, action))
            .await
            .unwrap()
            .unwrap();
    }
    // The broker's sweep (every 30 s) notices: the retained states are cleared...
    cleared(&mut watcher, Duration::from_secs(45)).await;
    cleared(&mut carol_watcher, Duration::from_secs(45)).await;
    // ...and the stored session is gone, its id free again.
    let (bob, _) = register(t.http, "bob", PW).await;
    connect_eventually(
        user_opts(&t, "alice-phone", "bob", &bob),
        ConnectReturnCode::Success,
    )
    .await;
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_only_to_a_chat_that_proved_it_belongs_to_the_account() {
    let tg = common::fake_telegram::FakeTelegram::start().await;
    let t = TestApp::start_with(|c| {
        tg.configure(c);
        c.telegram.per_chat_interval = Duration::ZERO;
    })
    .await;
    let (_root, _) = register(t.http, "root", PW).await;
    // Mallory types a stranger's chat id into her account.
    let (mallory, mallory_id) = register(t.http, "mallory", PW).await;
    const STRANGER: i64 = 4242;
    let r = api(
        t.http,
        "PATCH",
        "/api/v1/me",
        Some(&mallory),
        &json!({"telegram_chat_id": STRANGER}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["user"]["telegram_chat_confirmed"], false);
    // The stranger gets exactly one message: a code, saying how to ignore it.
    tg.wait_until(WAIT, |s| !s.sent.is_empty()).await;
    let code = tg.code_sent_to(STRANGER);
    assert!(
        tg.sent()[0].text.contains("ignore"),
        "{}",
        tg.sent()[0].text
    );
    let settings = api(
        t.http,
        "GET",
        "/api/v1/me/notifications",
        Some(&mallory),
        "",
    )
    .await;
    assert_eq!(settings.json()["telegram"]["status"], "unconfirmed");

    // Nothing else reaches the chat: no test message, no alert, no second code at once.
    let r = api(
        t.http,
        "POST",
        "/api/v1/me/telegram/test",
        Some(&mallory),
        "",
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = api(
        t.http,
        "POST",
        "/api/v1/me/telegram/code",
        Some(&mallory),
        "",
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.body);
    let mut service = t.service_client("svc").await;
    let alert = |user_id: i64, n: u32| {
        json!({
            "id": format!("{n}-too_cold-1795363200000"), "user_id": user_id,
            "subscription_id": n, "label": "home", "place": "Catania",
            "constraint": "too_cold", "state": "raised", "value": 1.5, "threshold_c": 3.0,
            "weather_code": 3, "started_at": "2026-11-22T13:05:00Z",
            "at": "2026-11-22T13:05:00Z", "notify": true
        })
        .to_string()
    };
    service
        .publish(
            &alerts(mallory_id),
            QoS::AtLeastOnce,
            false,
            alert(mallory_id, 1).as_bytes(),
        )
        .await;
    // Guessing the code: five wrong tries void it.
    for _ in 0..5 {
        let r = confirm_chat(t.http, &mallory, "WRONGWRONG").await;
        assert_eq!(r.status, 422, "{}", r.body);
    }
    let r = confirm_chat(t.http, &mallory, &code).await;
    assert_eq!(r.status, 409, "a voided code: {}", r.body);

    // Alice, whose chat it really is, confirms it with the code she was sent.
    let (alice, alice_id) = register(t.http, "alice", PW).await;
    let r = api(
        t.http,
        "PATCH",
        "/api/v1/me",
        Some(&alice),
        r#"{"telegram_chat_id": 777}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    tg.wait_until(WAIT, |s| s.sent.iter().any(|m| m.chat_id == 777))
        .await;
    let code = tg.code_sent_to(777);
    assert_eq!(confirm_chat(t.http, &alice, &code).await.status, 204);
    let me = api(t.http, "GET", "/api/v1/me", Some(&alice), "")
        .await
        .json();
    assert_eq!(me["telegram_chat_confirmed"], true);
    service
        .publish(
            &alerts(alice_id),
            QoS::AtLeastOnce,
            false,
            alert(alice_id, 2).as_bytes(),
        )
        .await;
    tg.wait_until(WAIT, |s| {
        s.sent.iter().filter(|m| m.chat_id == 777).count() == 2
    })
    .await;
    // Mallory's alert, published first, never went to the stranger.
    assert_eq!(
        tg.sent().iter().filter(|m| m.chat_id == STRANGER).count(),
        1,
        "only the code reached the stranger"
    );
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_crowd_out_the_node_or_its_service_accounts() {
    let t = TestApp::start_with(|c| c.bus.max_connections = 4).await;
    let (alice, _) = register(t.http, "alice", PW).await;
    let (bob, _) = register(t.http, "bob", PW).await;
    let mut held = Vec::new();
    for id in ["a0", "a1", "a2"] {
        held.push(MqttClient::connect(user_opts(&t, id, "alice", &alice)).await);
    }
    held.push(MqttClient::connect(user_opts(&t, "b0", "bob", &bob)).await);
    // Clients have their four sessions; the fifth waits for one to end.
    assert_eq!(
        try_connect(user_opts(&t, "b1", "bob", &bob)).await,
        Ok(ConnectReturnCode::NotAuthorized)
    );
    assert_eq!(
        metric(
            &t,
            "meteomesh_bus_connections_refused_total{reason=\"full\"}"
        )
        .await,
        1.0
    );
    // Service accounts and the node's own modules keep their headroom.
    let _service = t.service_client("svc").await;
    let r = post_json(t.http, "/api/v1/system/bus-check", "{}").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get(t.http, "/readyz").await.status, 200);
    // A session that ends frees its place.
    disconnect(held.remove(0)).await;
    connect_eventually(user_opts(&t, "b1", "bob", &bob), ConnectReturnCode::Success).await;
    t.app.shutdown().await.unwrap();
}

/// Item 14: one name, one person across the mesh. The earliest account with a name holds
/// it on every node: no node registers it again, an account that lost it (created on a
/// node cut off from the mesh) is kept out of messaging and MQTT, and no node accepts a
/// token for the name from any node but the holder's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_name_is_one_person_across_the_mesh() {
    use common::mesh::{MeshNode, SHARED_SECRET, node_ids, wait_full_mesh, wait_status};
    let dir = tempfile::tempdir().unwrap();
    // A and C start apart, each its own mesh: both get a "bob", A's first.
    let mut a = MeshNode::new(&dir.path().join("a"), &[], "");
    let mut c = MeshNode::new(&dir.path().join("c"), &[], "");
    a.start();
    c.start();
    let (alice, _) = register(a.http(), "alice", PW).await;
    let (bob_a, _) = register(a.http(), "bob", PW).await;
    // A later second, so C's bob is the later claim whatever the node ids.
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        == second
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (carol, _) = register(c.http(), "carol", PW).await;
    let (bob_c, _) = register(c.http(), "bob", PW).await;

    // B joins A and learns A's names: neither "alice" nor "Alice" can be had there.
    let mut b = MeshNode::new(&dir.path().join("b"), &[a.mqtt()], "");
    b.start();
    let (root_b, _) = register(b.http(), "root-b", PW).await;
    wait_status(b.http(), &root_b, "A's names known", |s| {
        s["names_held_elsewhere"].as_i64() >= Some(2)
    })
    .await;
    for name in ["alice", "Alice", "BOB"] {
        let r = post_json(
            b.http(),
            "/api/v1/auth/register",
            &json!({"username": name, "password": PW}).to_string(),
        )
        .await;
        assert_eq!(r.status, 409, "{name} on B: {}", r.body);
    }

    // C joins the mesh: its bob is the later claim and loses the name everywhere.
    c.stop();
    c.peers = vec![a.mqtt()];
    c.start();
    let nodes = [a, b, c];
    wait_full_mesh(&nodes, &alice).await;
    let [a, b, c] = &nodes;
    wait_status(c.http(), &carol, "A's and B's names known", |s| {
        s["names_held_elsewhere"].as_i64() >= Some(3)
    })
    .await;
    let ids = node_ids(&nodes, &alice).await;
    wait_status(a.http(), &alice, "C's names known", |s| {
        s["names_held_elsewhere"].as_i64() >= Some(3)
    })
    .await;

    // C's bob: no messaging, no MQTT, on C or anywhere; told why.
    let r = api(c.http(), "GET", "/api/v1/users/online", Some(&bob_c), "").await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body.contains(&ids[0]),
        "names the holder's node: {}",
        r.body
    );
    let r = api(
        c.http(),
        "POST",
        "/api/v1/messages",
        Some(&bob_c),
        r#"{"req": "r1", "to": "alice", "body": "it's bob", "mode": "fire_send"}"#,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    for (node, who) in [(c, "password"), (c, "token"), (b, "token"), (a, "token")] {
        let password = if who == "password" {
            PW
        } else {
            bob_c.as_str()
        };
        let opts = mqtt_options(node.mqtt_addr(), "bob-c", Some(("bob", password)));
        let code = try_connect(opts).await.unwrap();
        assert_ne!(code, ConnectReturnCode::Success, "C's bob with a {who}");
    }
    // His weather account still works.
    let r = api(c.http(), "GET", "/api/v1/me", Some(&bob_c), "").await;
    assert_eq!(r.status, 200, "{}", r.body);

    // A's bob is bob on every node, over HTTP and MQTT.
    for node in [a, b, c] {
        let r = api(node.http(), "GET", "/api/v1/users/online", Some(&bob_a), "").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let opts = mqtt_options(node.mqtt_addr(), "bob-a", Some(("bob", &bob_a)));
        assert_eq!(try_connect(opts).await, Ok(ConnectReturnCode::Success));
    }
    // A token for a held name from any other node is refused (here one B's node would
    // sign for an "alice" of its own), and names nobody else holds still travel.
    let forged = foreign_token(SHARED_SECRET, 9, "alice", &ids[1]);
    for node in [a, c] {
        let r = api(
            node.http(),
            "GET",
            "/api/v1/users/online",
            Some(&forged),
            "",
        )
        .await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let r = api(b.http(), "GET", "/api/v1/users/online", Some(&carol), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// An MQTT 3.1.1 CONNECT with username and password, keepalive 0 ("never ping").
fn connect_packet(client_id: &str, user: &str, password: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 0];
    for field in [client_id, user, password] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        packet.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    packet.extend(body);
    packet
}

/// Whether the server closed `socket` (end of stream or reset) within `within`.
async fn closed_by_server(mut socket: tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, socket.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Item 4: connections that never complete a CONNECT are closed at the deadline, and
/// shed early past the per-address cap, while logged-in clients (even ones that never
/// ping) and everyone else are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_send_connect_are_closed() {
    let t = TestApp::start_with(|c| {
        c.bus.connect_timeout = Duration::from_secs(5);
        c.bus.max_pending_per_address = 8;
    })
    .await;
    let (token, _) = register(t.http, "alice", PW).await;
    let mqtt = t.mqtt.unwrap();
    let mut quiet = tokio::net::TcpStream::connect(mqtt).await.unwrap();
    quiet
        .write_all(&connect_packet("quiet", "alice", &token))
        .await
        .unwrap();
    let mut connack = [0u8; 4];
    quiet.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");

    let started = std::time::Instant::now();
    // 20 silent sockets from one address, 3 that trickle part of a CONNECT and stop.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(idle_socket([127, 0, 0, 2], mqtt).await);
    }
    let mut trickling = Vec::new();
    for _ in 0..3 {
        let mut s = idle_socket([127, 0, 0, 3], mqtt).await;
        s.write_all(&[0x10, 0x40, 0, 4]).await.unwrap();
        trickling.push(s);
    }
    // On the WebSocket listener: one silent socket, one that upgrades and then says
    // nothing.
    let ws = t.ws.unwrap();
    trickling.push(idle_socket([127, 0, 0, 4], ws).await);
    let mut upgraded = idle_socket([127, 0, 0, 4], ws).await;
    upgraded
        .write_all(
            b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
        )
        .await
        .unwrap();
    let mut response = [0u8; 12];
    upgraded.read_exact(&mut response).await.unwrap();
    assert_eq!(&response, b"HTTP/1.1 101", "upgraded");
    let mut rest = [0u8; 512];
    let _ = upgraded.read(&mut rest).await.unwrap();
    trickling.push(upgraded);
    // A refused CONNECT does not vouch for a silent socket from the same address and
    // port afterwards.
    let refused = tokio::net::TcpSocket::new_v4().unwrap();
    refused.set_reuseaddr(true).unwrap();
    refused.bind(([127, 0, 0, 5], 0).into()).unwrap();
    let from = refused.local_addr().unwrap();
    let mut refused = refused.connect(mqtt).await.unwrap();
    refused
        .write_all(&connect_packet("refused", "alice", "wrong-password"))
        .await
        .unwrap();
    let mut answer = [0u8; 4];
    refused.read_exact(&mut answer).await.unwrap();
    assert_ne!(answer[3], 0, "CONNECT refused");
    assert!(closed_by_server(refused, WAIT).await);
    let again = tokio::net::TcpSocket::new_v4().unwrap();
    again.set_reuseaddr(true).unwrap();
    again.bind(from).unwrap();
    trickling.push(again.connect(mqtt).await.unwrap());
    // Meanwhile everyone else gets in.
    assert_eq!(
        try_connect(user_opts(&t, "during-flood", "alice", &token)).await,
        Ok(ConnectReturnCode::Success)
    );
    assert_eq!(get(t.http, "/healthz").await.status, 200);

    // All 26 are closed by the server; 12 of the silent ones (past the cap of 8 from
    // their address) well before the deadline.
    let mut closing = tokio::task::JoinSet::new();
    for s in silent.into_iter().chain(trickling) {
        closing.spawn(async move {
            let closed = closed_by_server(s, WAIT).await;
            (closed, started.elapsed())
        });
    }
    let mut early = 0;
    while let Some(done) = closing.join_next().await {
        let (closed, after) = done.unwrap();
        assert!(closed, "a connection without CONNECT was left open");
        if after < Duration::from_secs(4) {
            early += 1;
        }
    }
    assert!(early >= 12, "{early} shed before the deadline");
    assert!(
        metric(
            &t,
            r#"meteomesh_bus_connections_refused_total{reason="too_many_pending"}"#
        )
        .await
            >= 12.0
    );
    assert!(
        metric(
            &t,
            r#"meteomesh_bus_connections_refused_total{reason="connect_timeout"}"#
        )
        .await
            >= 14.0
    );

    // The logged-in client that never pings outlived the deadline and still answers.
    quiet.write_all(&[0xC0, 0]).await.unwrap();
    let mut pong = [0u8; 2];
    tokio::time::timeout(WAIT, quiet.read_exact(&mut pong))
        .await
        .expect("PINGRESP in time")
        .unwrap();
    assert_eq!(pong, [0xD0, 0]);
    t.app.shutdown().await.unwrap();
}

/// A peer's `names` envelope is input like any other: one that is not a claim list, names
/// that are not usernames (other spellings, paths, too long), and claims that say they
/// come from this very node or from nowhere are all dropped; only a well-formed claim of
/// another node is kept. The node keeps serving throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_name_claims_from_a_peer_are_dropped() {
    use common::mesh::{LINK_PASSWORD, MeshNode, status, wait_status};
    use meteomesh::contract::{Envelope, TAG_NAMES, Target, mesh_link};

    let dir = tempfile::tempdir().unwrap();
    let mut node = MeshNode::new(&dir.path().join("a"), &[], "");
    tokio::task::block_in_place(|| node.start());
    let (alice, _) = register(node.http(), "alice", PW).await;
    let own = status(node.http(), &alice).await["node"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut link = MqttClient::connect(mqtt_options(
        node.mqtt_addr(),
        "evil-link",
        Some(("meteomesh-link", LINK_PASSWORD)),
    ))
    .await;
    let mut n = 0;
    let mut send = |origin: &str, data: serde_json::Value| {
        n += 1;
        let env = Envelope {
            id: format!("{origin}:{n}"),
            origin: origin.to_owned(),
            hops: 0,
            ttl: 4,
            from: String::new(),
            to: Target::All,
            tag: TAG_NAMES.to_owned(),
            data,
            reply: None,
        };
        serde_json::to_vec(&env).unwrap()
    };
    let topic = mesh_link("evil");
    let claim = |name: &str| json!({"name": name, "since": 1});
    let hostile = [
        send("evil", json!("not a claim list")),
        send("evil", json!({"names": 42})),
        send(
            "evil",
            json!({"names": [claim("Alice"), claim("../etc/passwd"), claim("x"),
                             claim(&"a".repeat(200)), claim("al ice"), claim("")]}),
        ),
        send(&own, json!({"names": [claim("carol")]})),
        send("", json!({"names": [claim("dave")]})),
    ];
    for payload in hostile {
        link.publish(&topic, QoS::AtLeastOnce, false, &payload)
            .await;
    }
    // A well-formed claim last: once it counts, every envelope before it (same link,
    // in order) has been handled.
    let valid = send("evil", json!({"names": [claim("bob")]}));
    link.publish(&topic, QoS::AtLeastOnce, false, &valid).await;
    let s = wait_status(node.http(), &alice, "the valid claim counted", |s| {
        s["names_held_elsewhere"].as_i64() >= Some(1)
    })
    .await;
    assert_eq!(
        s["names_held_elsewhere"], 1,
        "only bob is held elsewhere: {s:#}"
    );

    // bob is taken; the names in the dropped claims are not.
    let r = post_json(
        node.http(),
        "/api/v1/auth/register",
        &json!({"username": "bob", "password": PW}).to_string(),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let _ = register(node.http(), "carol", PW).await;
    let _ = register(node.http(), "dave", PW).await;
    let r = api(node.http(), "GET", "/api/v1/me", Some(&alice), "").await;
    assert_eq!(r.status, 200, "alice keeps her name: {}", r.body);
    assert_eq!(get(node.http(), "/healthz").await.status, 200);
}
