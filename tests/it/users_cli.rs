//! `meteomesh user ...` against the database of a running service.

use crate::common;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use common::*;
use serde_json::json;

fn user_cmd(config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = bin()
        .args(["--config", config.to_str().unwrap(), "user"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn failed(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manage_users_while_the_service_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_test_config(dir.path(), "");
    let server = ServeProcess::start(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    let login = |user: &'static str, pw: &'static str| {
        let addr = server.http;
        async move {
            post_json(
                addr,
                "/api/v1/auth/login",
                &json!({"username": user, "password": pw}).to_string(),
            )
            .await
        }
    };

    let out = user_cmd(
        &config,
        &[
            "add",
            "Alice",
            "--role",
            "admin",
            "--telegram-chat-id",
            "-42",
        ],
        "first-password\n",
    );
    assert_eq!(ok(&out), "created alice (id 1, admin)");
    let r = login("alice", "first-password").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["user"]["telegram_chat_id"], -42);
    let token = r.json()["token"].as_str().unwrap().to_owned();

    assert!(failed(&user_cmd(&config, &["add", "alice"], "another-password\n")).contains("taken"));
    assert!(failed(&user_cmd(&config, &["add", "bob"], "short\n")).contains("at least 8"));
    assert!(failed(&user_cmd(&config, &["add", "b c"], "long-enough-1\n")).contains("username"));
    assert!(
        failed(&user_cmd(
            &config,
            &["add", "bob", "--role", "owner"],
            "long-enough-1\n"
        ))
        .contains("owner")
    );
    assert_eq!(
        ok(&user_cmd(&config, &["add", "bob"], "bob-password\n")),
        "created bob (id 2, user)"
    );

    let list = ok(&user_cmd(&config, &["list"], ""));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(lines[1].contains("alice") && lines[1].contains("admin") && lines[1].contains("-42"));
    assert!(lines[2].contains("bob") && lines[2].contains("user"));

    // A new password takes effect at once and voids the old tokens.
    assert_eq!(
        ok(&user_cmd(
            &config,
            &["passwd", "alice"],
            "second-password\n"
        )),
        "password of alice changed"
    );
    assert_eq!(login("alice", "first-password").await.status, 401);
    assert_eq!(login("alice", "second-password").await.status, 200);
    assert_eq!(
        api(server.http, "GET", "/api/v1/me", Some(&token), "")
            .await
            .status,
        401
    );

    assert_eq!(
        ok(&user_cmd(&config, &["set-role", "bob", "admin"], "")),
        "bob is now admin"
    );
    let r = login("bob", "bob-password").await;
    assert_eq!(r.json()["user"]["role"], "admin");

    assert_eq!(
        ok(&user_cmd(&config, &["delete", "bob"], "")),
        "deleted bob"
    );
    assert_eq!(login("bob", "bob-password").await.status, 401);
    assert!(failed(&user_cmd(&config, &["delete", "bob"], "")).contains("no such user"));
    // The last admin stays.
    assert!(failed(&user_cmd(&config, &["delete", "alice"], "")).contains("no administrator"));

    let (status, _) = server.terminate();
    assert!(status.success());
}
