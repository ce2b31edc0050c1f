//! User accounts on the embedded broker: login with a token or password, the per-user
//! topic ACL, and sessions ended when a token is revoked or the account deleted.

use crate::common;

use std::process::Stdio;

use common::*;
use rumqttc::{ConnectReturnCode, Event, Packet, QoS, SubscribeReasonCode};

const PW: &str = "correct-horse-1";

fn own(id: i64) -> String {
    format!("meteomesh/v1/users/{id}")
}

async fn user_client(t: &TestApp, client_id: &str, user: &str, password: &str) -> MqttClient {
    MqttClient::connect(mqtt_options(
        t.mqtt.unwrap(),
        client_id,
        Some((user, password)),
    ))
    .await
}

/// Subscribes and returns the SUBACK codes.
async fn subscribe_codes(c: &mut MqttClient, filter: &str) -> Vec<SubscribeReasonCode> {
    c.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(ack)) = c.eventloop.poll().await.unwrap() {
                return ack.return_codes;
            }
        }
    })
    .await
    .unwrap()
}

/// Waits until the broker closes this client's connection.
async fn disconnected(c: &mut MqttClient) {
    tokio::time::timeout(WAIT, async {
        loop {
            if c.eventloop.poll().await.is_err() {
                return;
            }
        }
    })
    .await
    .expect("the broker ends the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_only_their_own_topics() {
    let t = TestApp::start().await;
    let (alice_token, alice) = register(t.http, "alice", PW).await;
    let (_, bob) = register(t.http, "bob", PW).await;
    let mut service = t.service_client("service").await;

    // Alice logs in with her token, Bob with his password.
    let mut a = user_client(&t, "alice-phone", "alice", &alice_token).await;
    let mut b = user_client(&t, "bob-laptop", "bob", PW).await;
    assert_eq!(
        subscribe_codes(&mut a, &format!("{}/#", own(alice))).await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    assert_eq!(
        subscribe_codes(&mut b, &format!("{}/#", own(bob))).await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    // Bob may not look at Alice's topics, nor at everything.
    for filter in [
        format!("{}/#", own(alice)),
        "meteomesh/v1/users/+/#".to_owned(),
        "#".to_owned(),
        "meteomesh/v1/system/accounts".to_owned(),
    ] {
        assert_eq!(
            subscribe_codes(&mut b, &filter).await,
            [SubscribeReasonCode::Failure],
            "{filter}"
        );
    }
    // Public topics are open to users.
    assert_eq!(
        subscribe_codes(&mut b, "meteomesh/v1/nodes/+/status").await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );

    // The service publishes to Alice, then to Bob: Alice gets hers; Bob's first
    // message is his own, so Alice's never reached him.
    service
        .publish(
            &format!("{}/alerts", own(alice)),
            QoS::AtLeastOnce,
            false,
            b"for alice",
        )
        .await;
    service
        .publish(
            &format!("{}/alerts", own(bob)),
            QoS::AtLeastOnce,
            false,
            b"for bob",
        )
        .await;
    let got = a
        .next_publish(|t| t.starts_with("meteomesh/v1/users/"))
        .await;
    assert_eq!(&got.payload[..], b"for alice");
    let got = b
        .next_publish(|t| t.starts_with("meteomesh/v1/users/"))
        .await;
    assert_eq!(&got.payload[..], b"for bob");

    // Alice cannot publish into Bob's topics: dropped and counted.
    a.publish(
        &format!("{}/alerts", own(bob)),
        QoS::AtLeastOnce,
        false,
        b"spoof",
    )
    .await;
    service
        .publish(
            &format!("{}/alerts", own(bob)),
            QoS::AtLeastOnce,
            false,
            b"marker",
        )
        .await;
    let got = b
        .next_publish(|t| t.starts_with("meteomesh/v1/users/"))
        .await;
    assert_eq!(
        &got.payload[..],
        b"marker",
        "the spoofed message was not delivered"
    );
    let m = get(t.http, "/metrics").await.body;
    assert!(
        m.contains("meteomesh_bus_acl_denied_total{action=\"publish\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("meteomesh_bus_acl_denied_total{action=\"subscribe\"} 4"),
        "{m}"
    );
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_with_connack_codes() {
    let t = TestApp::start().await;
    let (alice_token, _) = register(t.http, "alice", PW).await;
    let (_, _) = register(t.http, "bob", PW).await;
    let addr = t.mqtt.unwrap();
    let code = |user: &'static str, pw: String| {
        try_connect(mqtt_options(addr, "c", Some((user, pw.leak()))))
    };
    assert_eq!(
        code("alice", "wrong-password".into()).await,
        Ok(ConnectReturnCode::BadUserNamePassword)
    );
    assert_eq!(
        code("nobody", PW.into()).await,
        Ok(ConnectReturnCode::BadUserNamePassword)
    );
    // Alice's token does not log Bob in.
    assert_eq!(
        code("bob", alice_token.clone()).await,
        Ok(ConnectReturnCode::BadUserNamePassword)
    );
    assert_eq!(
        code("alice", alice_token).await,
        Ok(ConnectReturnCode::Success)
    );
    assert_eq!(
        code("ALICE", PW.into()).await,
        Ok(ConnectReturnCode::Success)
    );
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_logins_are_throttled() {
    let t = TestApp::start_with(|c| {
        c.auth.login_max_failures = 2;
        // The throttle's first delay outlasts any pause of a loaded machine.
        c.auth.login_first_delay = std::time::Duration::from_secs(60);
    })
    .await;
    let (_, _) = register(t.http, "alice", PW).await;
    let addr = t.mqtt.unwrap();
    for _ in 0..2 {
        let r = try_connect(mqtt_options(addr, "c", Some(("alice", "wrong-password")))).await;
        assert_eq!(r, Ok(ConnectReturnCode::BadUserNamePassword));
    }
    let r = try_connect(mqtt_options(addr, "c", Some(("alice", PW)))).await;
    assert_eq!(r, Ok(ConnectReturnCode::NotAuthorized));
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_and_deleted_account_end_live_sessions() {
    let t = TestApp::start().await;
    let (_admin, _) = register(t.http, "root", PW).await;
    let (token, _) = register(t.http, "alice", PW).await;
    let (bob_token, _) = register(t.http, "bob", PW).await;

    // Alice: one session with her token, one with her password. Logging the token out
    // ends only the token's session.
    let mut by_token = user_client(&t, "a-token", "alice", &token).await;
    let mut by_password = user_client(&t, "a-password", "alice", PW).await;
    assert_eq!(
        api(t.http, "POST", "/api/v1/auth/logout", Some(&token), "")
            .await
            .status,
        204
    );
    disconnected(&mut by_token).await;
    // The revoked token no longer logs in.
    let r = try_connect(mqtt_options(
        t.mqtt.unwrap(),
        "again",
        Some(("alice", &token)),
    ))
    .await;
    assert_eq!(r, Ok(ConnectReturnCode::BadUserNamePassword));
    // The password session is still up: it answers a subscribe.
    assert_eq!(
        subscribe_codes(&mut by_password, "meteomesh/v1/system/pong").await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );

    // Deleting Bob ends all of his sessions.
    let mut bob = user_client(&t, "bob-1", "bob", PW).await;
    assert_eq!(
        api(t.http, "DELETE", "/api/v1/me", Some(&bob_token), "")
            .await
            .status,
        204
    );
    disconnected(&mut bob).await;
    t.app.shutdown().await.unwrap();
}

/// Runs `mosquitto_sub -C 1 -v` against `addr` with `args`, off the runtime.
async fn mosquitto_sub(addr: std::net::SocketAddr, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new("mosquitto_sub");
    cmd.args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args)
        .args(["-C", "1", "-v"])
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("mosquitto_sub (Debian package mosquitto-clients) is installed")
}

/// A third-party client: `mosquitto_sub` logs in with a token and reads its own topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sub_with_a_token() {
    let t = TestApp::start().await;
    let (token, id) = register(t.http, "alice", PW).await;
    let topic = format!("{}/alerts", own(id));
    // Retained, so mosquitto_sub gets it as soon as its subscription is in place.
    let mut service = t.service_client("service").await;
    service
        .publish(&topic, QoS::AtLeastOnce, true, b"hello alice")
        .await;
    let addr = t.mqtt.unwrap();
    let filter = format!("{}/#", own(id));
    let out = mosquitto_sub(
        addr,
        &["-u", "alice", "-P", &token, "-t", &filter, "-W", "20"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{topic} hello alice")
    );
    // With Bob's topic it is refused.
    let out = mosquitto_sub(
        addr,
        &["-u", "alice", "-P", "wrong-password", "-t", "#", "-W", "5"],
    )
    .await;
    assert!(!out.status.success());
    t.app.shutdown().await.unwrap();
}
