//! Accounts and login over the JSON API: every endpoint's success and error codes,
//! usernames, throttling, logout, token expiry and password changes, admin actions,
//! account deletion, metrics.

use crate::common;

use common::*;
use serde_json::json;

const PW: &str = "correct-horse-1";
const SECRET: &str = "test-secret-test-secret-test-secret!";

async fn app() -> TestApp {
    TestApp::start_with(|c| c.auth.jwt_secret = meteomesh::config::Secret::new(SECRET)).await
}

fn assert_code(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], code, "{}", r.body);
}

fn fields(r: &Response) -> Vec<String> {
    r.json()["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_and_usernames() {
    let t = app().await;
    let r = post_json(
        t.http,
        "/api/v1/auth/register",
        &json!({"username": "Alice", "password": PW, "telegram_chat_id": -100123}).to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["user"]["username"], "alice", "stored lowercase");
    assert_eq!(v["user"]["role"], "admin", "the first account is admin");
    assert_eq!(v["user"]["telegram_chat_id"], -100123);
    assert_eq!(v["user"]["timezone"], "UTC");
    assert_eq!(v["user"]["units"], "metric");
    assert!(v["user"].get("password_hash").is_none());
    let token = v["token"].as_str().unwrap().to_owned();

    // Taken, in any case.
    for name in ["alice", "ALICE", " Alice "] {
        let r = post_json(
            t.http,
            "/api/v1/auth/register",
            &json!({"username": name, "password": PW}).to_string(),
        )
        .await;
        assert_code(&r, 409, "conflict");
    }
    let (_, _) = register(t.http, "bob", PW).await;
    let me = api(t.http, "GET", "/api/v1/me", Some(&token), "").await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["username"], "alice");

    // Login is case-insensitive on the username.
    let r = post_json(
        t.http,
        "/api/v1/auth/login",
        &json!({"username": "ALICE", "password": PW}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["user"]["username"], "alice");

    // Unknown user and wrong password look the same.
    let wrong = post_json(
        t.http,
        "/api/v1/auth/login",
        &json!({"username": "alice", "password": "not-the-password"}).to_string(),
    )
    .await;
    let unknown = post_json(
        t.http,
        "/api/v1/auth/login",
        &json!({"username": "nobody", "password": "not-the-password"}).to_string(),
    )
    .await;
    assert_code(&wrong, 401, "unauthorized");
    assert_code(&unknown, 401, "unauthorized");
    assert_eq!(wrong.json(), unknown.json());

    // Metrics count accounts and login outcomes.
    let m = get(t.http, "/metrics").await.body;
    assert!(m.contains("meteomesh_users 2"), "{m}");
    assert!(
        m.contains("meteomesh_logins_total{channel=\"http\",outcome=\"success\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("meteomesh_logins_total{channel=\"http\",outcome=\"bad_credentials\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("meteomesh_auth_duration_seconds_count{channel=\"http\"} 3"),
        "{m}"
    );
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_input_is_validated() {
    let t = app().await;
    let cases = [
        (json!({"username": "ab", "password": PW}), vec!["username"]),
        (
            json!({"username": "a".repeat(33), "password": PW}),
            vec!["username"],
        ),
        (
            json!({"username": "bad name", "password": PW}),
            vec!["username"],
        ),
        (json!({"username": "ünï", "password": PW}), vec!["username"]),
        (
            json!({"username": "carol", "password": "short"}),
            vec!["password"],
        ),
        (
            json!({"username": "x", "password": "y"}),
            vec!["username", "password"],
        ),
        (
            json!({"username": "carol", "password": "p".repeat(2000)}),
            vec!["password"],
        ),
    ];
    for (body, expected) in cases {
        let r = post_json(t.http, "/api/v1/auth/register", &body.to_string()).await;
        assert_code(&r, 422, "validation_failed");
        assert_eq!(fields(&r), expected, "{body}");
    }
    // Wrong types and missing fields are 422 too; unknown fields are refused.
    for body in [
        json!({"username": "carol"}),
        json!({"username": "carol", "password": PW, "telegram_chat_id": "12"}),
        json!({"username": "carol", "password": PW, "role": "admin"}),
    ] {
        let r = post_json(t.http, "/api/v1/auth/register", &body.to_string()).await;
        assert_code(&r, 422, "validation_failed");
    }
    // Allowed characters.
    let (_, _) = register(t.http, "carol_1.x-y", PW).await;
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_and_checked() {
    let t = app().await;
    let (token, id) = register(t.http, "alice", PW).await;

    let r = api(t.http, "GET", "/api/v1/me", None, "").await;
    assert_code(&r, 401, "unauthorized");
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    let r = api(t.http, "GET", "/api/v1/me", Some("garbage"), "").await;
    assert_code(&r, 401, "unauthorized");

    // A token signed with the right key but expired is refused, as is one for a user
    // that does not exist, and one signed with another key.
    meteomesh::modules::auth::install_jwt_provider();
    let now = jsonwebtoken::get_current_timestamp() as i64;
    // A valid token names its home node and the account's random key.
    let account_key: String = rusqlite::Connection::open(t.db_path())
        .unwrap()
        .query_row("SELECT account_key FROM users WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap();
    let node = t.app.node_id.clone();
    let sign_claims = |claims: serde_json::Value, key: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    let sign = |sub: i64, iat: i64, exp: i64, key: &str| {
        sign_claims(
            json!({"sub": sub.to_string(), "iat": iat, "exp": exp, "jti": "x",
                   "home": node, "key": account_key}),
            key,
        )
    };
    let fresh = sign(id, now, now + 600, SECRET);
    assert_eq!(
        api(t.http, "GET", "/api/v1/me", Some(&fresh), "")
            .await
            .status,
        200
    );
    // Without the account key, or naming another home, it names no account here.
    for claims in [
        json!({"sub": id.to_string(), "iat": now, "exp": now + 600, "jti": "y", "home": node}),
        json!({"sub": id.to_string(), "iat": now, "exp": now + 600, "jti": "z",
               "home": "elsewhere", "key": account_key}),
    ] {
        assert_code(
            &api(
                t.http,
                "GET",
                "/api/v1/me",
                Some(&sign_claims(claims, SECRET)),
                "",
            )
            .await,
            401,
            "unauthorized",
        );
    }
    let expired = sign(id, now - 700, now - 100, SECRET);
    assert_code(
        &api(t.http, "GET", "/api/v1/me", Some(&expired), "").await,
        401,
        "unauthorized",
    );
    let ghost = sign(id + 100, now, now + 600, SECRET);
    assert_code(
        &api(t.http, "GET", "/api/v1/me", Some(&ghost), "").await,
        401,
        "unauthorized",
    );
    let forged = sign(id, now, now + 600, "another-secret-another-secret-another");
    assert_code(
        &api(t.http, "GET", "/api/v1/me", Some(&forged), "").await,
        401,
        "unauthorized",
    );

    // Logout revokes exactly the token used.
    let r = post_json(
        t.http,
        "/api/v1/auth/login",
        &json!({"username": "alice", "password": PW}).to_string(),
    )
    .await;
    let second = r.json()["token"].as_str().unwrap().to_owned();
    let r = api(t.http, "POST", "/api/v1/auth/logout", Some(&token), "").await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_code(
        &api(t.http, "GET", "/api/v1/me", Some(&token), "").await,
        401,
        "unauthorized",
    );
    assert_eq!(
        api(t.http, "GET", "/api/v1/me", Some(&second), "")
            .await
            .status,
        200
    );
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_token_lifetime_expires() {
    let t =
        TestApp::start_with(|c| c.auth.token_lifetime = std::time::Duration::from_secs(1)).await;
    let (token, _) = register(t.http, "alice", PW).await;
    assert_eq!(
        api(t.http, "GET", "/api/v1/me", Some(&token), "")
            .await
            .status,
        200
    );
    // Expiry is a matter of time passing: wait past it.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_code(
        &api(t.http, "GET", "/api/v1/me", Some(&token), "").await,
        401,
        "unauthorized",
    );
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_changes() {
    let t = app().await;
    let (token, _) = register(t.http, "alice", PW).await;

    let r = api(
        t.http,
        "PATCH",
        "/api/v1/me",
        Some(&token),
        &json!({"timezone": "Europe/Rome", "units": "imperial", "telegram_chat_id": 42})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["user"]["timezone"], "Europe/Rome");
    assert_eq!(v["user"]["units"], "imperial");
    assert_eq!(v["user"]["telegram_chat_id"], 42);
    assert!(v.get("token").is_none());

    // Absent leaves as is; null clears.
    let r = api(
        t.http,
        "PATCH",
        "/api/v1/me",
        Some(&token),
        r#"{"units": "metric"}"#,
    )
    .await;
    assert_eq!(r.json()["user"]["telegram_chat_id"], 42);
    let r = api(
        t.http,
        "PATCH",
        "/api/v1/me",
        Some(&token),
        r#"{"telegram_chat_id": null}"#,
    )
    .await;
    assert!(r.json()["user"]["telegram_chat_id"].is_null());

    // Invalid values.
    let r = api(
        t.http,
        "PATCH",
        "/api/v1/me",
        Some(&token),
        r#"{"timezone": "Mars/Olympus"}"#,
    )
    .await;
    assert_code(&r, 422, "validation_failed");
    assert_eq!(fields(&r), ["timezone"]);
    let r = api(
        t.http,
        "PATCH",
        "/api/v1/me",
        Some(&token),
        r#"{"units": "cubits"}"#,
    )
    .await;
    assert_code(&r, 422, "validation_failed");
    let r = api(
        t.http,
        "PATCH",
        "/api/v1/me",
        Some(&token),
        r#"{"new_password": "another-pw-1"}"#,
    )
    .await;
    assert_eq!(fields(&r), ["current_password"]);
    let r = api(
        t.http,
        "PATCH",
        "/api/v1/me",
        Some(&token),
        r#"{"current_password": "wrong-password", "new_password": "another-pw-1"}"#,
    )
    .await;
    assert_eq!(fields(&r), ["current_password"]);
    let r = api(
        t.http,
        "PATCH",
        "/api/v1/me",
        Some(&token),
        &json!({"current_password": PW, "new_password": "short"}).to_string(),
    )
    .await;
    assert_eq!(fields(&r), ["new_password"]);

    // A password change voids older tokens and hands out a fresh one.
    let r = api(
        t.http,
        "PATCH",
        "/api/v1/me",
        Some(&token),
        &json!({"current_password": PW, "new_password": "another-pw-1"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let fresh = r.json()["token"]["token"].as_str().unwrap().to_owned();
    assert_code(
        &api(t.http, "GET", "/api/v1/me", Some(&token), "").await,
        401,
        "unauthorized",
    );
    assert_eq!(
        api(t.http, "GET", "/api/v1/me", Some(&fresh), "")
            .await
            .status,
        200
    );
    let old_login = post_json(
        t.http,
        "/api/v1/auth/login",
        &json!({"username": "alice", "password": PW}).to_string(),
    )
    .await;
    assert_eq!(old_login.status, 401);
    let new_login = post_json(
        t.http,
        "/api/v1/auth/login",
        &json!({"username": "alice", "password": "another-pw-1"}).to_string(),
    )
    .await;
    assert_eq!(new_login.status, 200);
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_throttling() {
    let t = TestApp::start_with(|c| {
        c.auth.login_max_failures = 3;
        // The throttle's first delay outlasts any pause of a loaded machine.
        c.auth.login_first_delay = std::time::Duration::from_secs(60);
    })
    .await;
    let (_, _) = register(t.http, "alice", PW).await;
    let attempt = |user: &'static str, pw: &'static str| {
        let addr = t.http;
        async move {
            post_json(
                addr,
                "/api/v1/auth/login",
                &json!({"username": user, "password": pw}).to_string(),
            )
            .await
        }
    };
    for _ in 0..3 {
        assert_code(
            &attempt("alice", "wrong-password").await,
            401,
            "unauthorized",
        );
    }
    // Blocked now, even with the right password.
    let r = attempt("alice", PW).await;
    assert_code(&r, 429, "too_many_requests");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=15 * 60).contains(&retry), "{retry}");
    // The client address is blocked too, for any username.
    assert_code(
        &attempt("bob", "whatever-pw").await,
        429,
        "too_many_requests",
    );
    let m = get(t.http, "/metrics").await.body;
    assert!(
        m.contains("meteomesh_logins_total{channel=\"http\",outcome=\"throttled\"} 2"),
        "{m}"
    );
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let t = app().await;
    let (admin, admin_id) = register(t.http, "root", PW).await;
    let (user, user_id) = register(t.http, "bob", PW).await;

    // Listing: admin yes, user no, anonymous no.
    let r = api(t.http, "GET", "/api/v1/admin/users", Some(&admin), "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    assert_code(
        &api(t.http, "GET", "/api/v1/admin/users", Some(&user), "").await,
        403,
        "forbidden",
    );
    assert_code(
        &api(t.http, "GET", "/api/v1/admin/users", None, "").await,
        401,
        "unauthorized",
    );

    // Create.
    let body = json!({"username": "carol", "password": PW, "role": "admin"}).to_string();
    let r = api(t.http, "POST", "/api/v1/admin/users", Some(&admin), &body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let carol = r.json()["id"].as_i64().unwrap();
    assert_eq!(r.json()["role"], "admin");
    assert_code(
        &api(t.http, "POST", "/api/v1/admin/users", Some(&admin), &body).await,
        409,
        "conflict",
    );
    assert_code(
        &api(t.http, "POST", "/api/v1/admin/users", Some(&user), &body).await,
        403,
        "forbidden",
    );

    // Roles.
    let path = format!("/api/v1/admin/users/{user_id}/role");
    let r = api(t.http, "PUT", &path, Some(&admin), r#"{"role": "admin"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["role"], "admin");
    // bob is admin now and can list.
    assert_eq!(
        api(t.http, "GET", "/api/v1/admin/users", Some(&user), "")
            .await
            .status,
        200
    );
    let r = api(t.http, "PUT", &path, Some(&admin), r#"{"role": "owner"}"#).await;
    assert_code(&r, 422, "validation_failed");
    let r = api(
        t.http,
        "PUT",
        "/api/v1/admin/users/999/role",
        Some(&admin),
        r#"{"role": "user"}"#,
    )
    .await;
    assert_code(&r, 404, "not_found");

    // Delete.
    let r = api(
        t.http,
        "DELETE",
        &format!("/api/v1/admin/users/{carol}"),
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(r.status, 204);
    let r = api(
        t.http,
        "DELETE",
        &format!("/api/v1/admin/users/{carol}"),
        Some(&admin),
        "",
    )
    .await;
    assert_code(&r, 404, "not_found");

    // The last admin can be neither demoted nor deleted.
    let r = api(t.http, "PUT", &path, Some(&admin), r#"{"role": "user"}"#).await;
    assert_eq!(r.status, 200);
    let own = format!("/api/v1/admin/users/{admin_id}/role");
    assert_code(
        &api(t.http, "PUT", &own, Some(&admin), r#"{"role": "user"}"#).await,
        409,
        "conflict",
    );
    assert_code(
        &api(t.http, "DELETE", "/api/v1/me", Some(&admin), "").await,
        409,
        "conflict",
    );
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_account_removes_its_data() {
    let t = app().await;
    let (_admin, _) = register(t.http, "root", PW).await;
    let (token, id) = register(t.http, "bob", PW).await;
    // Leave a trace in another table: a second token, revoked.
    let r = post_json(
        t.http,
        "/api/v1/auth/login",
        &json!({"username": "bob", "password": PW}).to_string(),
    )
    .await;
    let second = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        api(t.http, "POST", "/api/v1/auth/logout", Some(&second), "")
            .await
            .status,
        204
    );

    let db = rusqlite::Connection::open(t.db_path()).unwrap();
    let owned = |db: &rusqlite::Connection| -> i64 {
        db.query_row(
            "SELECT (SELECT count(*) FROM users WHERE id = ?1) + (SELECT count(*) FROM revoked_tokens WHERE user_id = ?1)",
            [id],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(owned(&db), 2);

    assert_eq!(
        api(t.http, "DELETE", "/api/v1/me", Some(&token), "")
            .await
            .status,
        204
    );
    assert_eq!(owned(&db), 0, "user row and everything it owned are gone");
    assert_code(
        &api(t.http, "GET", "/api/v1/me", Some(&token), "").await,
        401,
        "unauthorized",
    );
    let r = post_json(
        t.http,
        "/api/v1/auth/login",
        &json!({"username": "bob", "password": PW}).to_string(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(
        get(t.http, "/metrics")
            .await
            .body
            .contains("meteomesh_users 1")
    );
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_registration() {
    let t = TestApp::start_with(|c| c.auth.open_registration = false).await;
    let r = post_json(
        t.http,
        "/api/v1/auth/register",
        &json!({"username": "alice", "password": PW}).to_string(),
    )
    .await;
    assert_code(&r, 403, "forbidden");
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let app = start_ready(&config).await;
    let (token, _) = register(app.addresses.http.unwrap(), "alice", PW).await;
    app.shutdown().await.unwrap();
    // No jwt_secret configured: the generated one was kept in the database.
    let app = start_ready(&config).await;
    let r = api(
        app.addresses.http.unwrap(),
        "GET",
        "/api/v1/me",
        Some(&token),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    app.shutdown().await.unwrap();
}
