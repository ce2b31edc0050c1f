//! The web pages: register, login, account, logout; session cookie attributes; CSRF.

use crate::common;

use common::*;

const PW: &str = "correct-horse-1";

/// A tiny cookie-keeping browser for form posts.
struct Browser {
    addr: std::net::SocketAddr,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn new(addr: std::net::SocketAddr) -> Browser {
        Browser {
            addr,
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, r: &Response) {
        for line in r.headers.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if !name.eq_ignore_ascii_case("set-cookie") {
                continue;
            }
            let pair = value.trim().split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            if !v.is_empty() {
                self.cookies.push((k.to_owned(), v.to_owned()));
            }
        }
    }

    fn get_cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    async fn get(&mut self, path: &str) -> Response {
        let c = self.cookie_header();
        let r = request(self.addr, "GET", path, &[("Cookie", &c)], b"").await;
        self.keep(&r);
        r
    }

    async fn post(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> Response {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let c = self.cookie_header();
        let mut headers = vec![
            ("Cookie", c.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        headers.extend_from_slice(extra);
        let r = request(self.addr, "POST", path, &headers, body.as_bytes()).await;
        self.keep(&r);
        r
    }

    fn csrf(&self) -> String {
        self.get_cookie("meteomesh_csrf").expect("csrf cookie")
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_account_logout() {
    let t = TestApp::start().await;
    let mut b = Browser::new(t.http);

    let r = b.get("/").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location").as_deref(), Some("/login"));
    let r = b.get("/register").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let csrf = b.csrf();
    assert!(r.body.contains(&format!(r#"name="csrf" value="{csrf}""#)));
    assert!(r.body.contains(r#"href="/static/style.css""#));

    // Errors appear next to the field, and the input is kept (never the password).
    let r = b
        .post(
            "/register",
            &[
                ("csrf", &csrf),
                ("username", "Al"),
                ("password", "short"),
                ("telegram_chat_id", "12x"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.body.contains("Telegram chat id must be a whole number"),
        "{}",
        r.body
    );
    assert!(r.body.contains(r#"value="Al""#));
    assert!(r.body.contains(r#"value="12x""#));
    let r = b
        .post(
            "/register",
            &[("csrf", &csrf), ("username", "Al"), ("password", "short")],
            &[],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.body.contains("Username must be 3 to 32 characters"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("Password must be at least 8 characters"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("value=\"short\""));

    let r = b
        .post(
            "/register",
            &[
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", PW),
                ("telegram_chat_id", "-1001"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location").as_deref(), Some("/account"));
    let set = r.header("set-cookie").unwrap();
    assert!(set.starts_with("meteomesh_session="), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=86400"] {
        assert!(set.contains(attr), "{set}");
    }
    let r = b.get("/account").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Your account") && r.body.contains("alice"));
    assert!(r.body.contains(r#"value="-1001""#));

    // Settings: a bad time zone is explained; a good one is saved.
    let r = b
        .post(
            "/account",
            &[
                ("csrf", &csrf),
                ("action", "settings"),
                ("telegram_chat_id", ""),
                ("timezone", "Nowhere/Land"),
                ("units", "imperial"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("not an IANA time zone"));
    assert!(r.body.contains(r#"value="Nowhere/Land""#));
    let r = b
        .post(
            "/account",
            &[
                ("csrf", &csrf),
                ("action", "settings"),
                ("telegram_chat_id", "77"),
                ("timezone", "Europe/Rome"),
                ("units", "imperial"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Settings saved."));
    assert!(r.body.contains(r#"value="Europe/Rome""#));
    assert!(r.body.contains(r#"value="imperial" selected"#));

    // Password change keeps this browser logged in.
    let r = b
        .post(
            "/account",
            &[
                ("csrf", &csrf),
                ("action", "password"),
                ("current_password", "nope-nope"),
                ("new_password", "second-pass-1"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("not your current password"));
    let r = b
        .post(
            "/account",
            &[
                ("csrf", &csrf),
                ("action", "password"),
                ("current_password", PW),
                ("new_password", "second-pass-1"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Password changed"));
    assert_eq!(b.get("/account").await.status, 200);

    // Logout revokes the session token and clears the cookie.
    let session = b.get_cookie("meteomesh_session").unwrap();
    let r = b.post("/logout", &[("csrf", &csrf)], &[]).await;
    assert_eq!(r.status, 303);
    assert!(b.get_cookie("meteomesh_session").is_none());
    assert_eq!(
        api(t.http, "GET", "/api/v1/me", Some(&session), "")
            .await
            .status,
        401
    );
    let r = b.get("/account").await;
    assert_eq!(r.header("location").as_deref(), Some("/login"));

    // Login: wrong password keeps the username; right password leads to the account.
    b.get("/login").await;
    let r = b
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", "wrong-one"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Wrong username or password."));
    assert!(r.body.contains(r#"value="alice""#));
    let r = b
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", "second-pass-1"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(b.get("/account").await.status, 200);
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_posts_without_a_valid_csrf_token_are_rejected() {
    let t = TestApp::start().await;
    let mut b = Browser::new(t.http);
    b.get("/register").await;
    let csrf = b.csrf();
    let fields =
        |token: &'static str| vec![("csrf", token), ("username", "mallory"), ("password", PW)];

    // No token field.
    let r = b.post("/register", &fields("")[1..], &[]).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("This form has expired"));
    // A token that does not match the cookie.
    let r = b
        .post(
            "/register",
            &fields("00000000000000000000000000000000"),
            &[],
        )
        .await;
    assert_eq!(r.status, 403);
    // No cookie at all (a cross-site page cannot send it: SameSite=Strict).
    let mut stranger = Browser::new(t.http);
    let leaked: &'static str = csrf.clone().leak();
    let r = stranger.post("/register", &fields(leaked), &[]).await;
    assert_eq!(r.status, 403);
    // Right token, but posted from another origin.
    let r = b
        .post(
            "/register",
            &fields(leaked),
            &[("Origin", "http://evil.example")],
        )
        .await;
    assert_eq!(r.status, 403);
    // Nothing was created.
    let r = post_json(
        t.http,
        "/api/v1/auth/login",
        &serde_json::json!({"username": "mallory", "password": PW}).to_string(),
    )
    .await;
    assert_eq!(r.status, 401);
    // With everything right it works.
    let origin = format!("http://{}", t.http);
    let r = b
        .post("/register", &fields(leaked), &[("Origin", &origin)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_deletion_from_the_page() {
    let t = TestApp::start().await;
    let (_admin, _) = register(t.http, "root", PW).await;
    let mut b = Browser::new(t.http);
    b.get("/register").await;
    let csrf = b.csrf();
    let r = b
        .post(
            "/register",
            &[("csrf", &csrf), ("username", "bob"), ("password", PW)],
            &[],
        )
        .await;
    assert_eq!(r.status, 303);
    let r = b
        .post(
            "/account",
            &[
                ("csrf", &csrf),
                ("action", "delete"),
                ("confirm_password", "wrong-pass"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 422);
    let r = b
        .post(
            "/account",
            &[
                ("csrf", &csrf),
                ("action", "delete"),
                ("confirm_password", PW),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 303);
    let r = post_json(
        t.http,
        "/api/v1/auth/login",
        &serde_json::json!({"username": "bob", "password": PW}).to_string(),
    )
    .await;
    assert_eq!(r.status, 401);
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_alerts_page_needs_a_session_and_a_csrf_token() {
    let t = TestApp::start().await;
    let mut b = Browser::new(t.http);
    assert_eq!(
        b.get("/alerts").await.header("location").as_deref(),
        Some("/login")
    );
    b.get("/register").await;
    let csrf = b.csrf();
    let r = b
        .post(
            "/register",
            &[("csrf", &csrf), ("username", "carol"), ("password", PW)],
            &[],
        )
        .await;
    assert_eq!(r.status, 303);
    let r = b.get("/alerts").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("No alerts yet"));
    // Without the token nothing is created.
    let r = b
        .post(
            "/alerts",
            &[
                ("action", "create"),
                ("lat", "45.0"),
                ("lon", "9.0"),
                ("rain", "on"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 403);
    // With coordinates instead of a search result it works, and shows the alert.
    let r = b
        .post(
            "/alerts",
            &[
                ("csrf", &csrf),
                ("action", "create"),
                ("lat", "45,0"),
                ("lon", "9.0"),
                ("rain", "on"),
                ("label", "garden"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Alert “garden” added."));
    assert!(r.body.contains("not checked yet"));
    // Bad input is explained next to the field and kept.
    let r = b
        .post(
            "/alerts",
            &[
                ("csrf", &csrf),
                ("action", "create"),
                ("lat", "45"),
                ("lon", "9"),
                ("min_temp", "warm"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("Too cold below must be a number"));
    assert!(r.body.contains(r#"value="warm""#));
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_place_picked_from_the_search_keeps_its_region_and_country() {
    let fake = common::fake_weather::FakeWeather::start().await;
    let url = fake.url();
    let t = TestApp::start_with(|c| {
        c.weather.geocoding_url = url.clone();
        c.weather.open_meteo_url = url;
    })
    .await;
    let mut b = Browser::new(t.http);
    b.get("/register").await;
    let csrf = b.csrf();
    let r = b
        .post(
            "/register",
            &[("csrf", &csrf), ("username", "erin"), ("password", PW)],
            &[],
        )
        .await;
    assert_eq!(r.status, 303);
    let page = b.get("/alerts?q=Catania").await;
    let picked = page
        .body
        .split(r#"name="place" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a search result to pick")
        .to_owned();
    assert!(picked.ends_with("|Catania, Sicily, Italy"), "{picked}");
    let r = b
        .post(
            "/alerts",
            &[
                ("csrf", &csrf),
                ("action", "create"),
                ("place", &picked),
                ("ice", "on"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Catania, Sicily, Italy"));
    assert!(r.body.contains("ice (freezing rain, sleet)"), "{}", r.body);
    // Reminders: whole hours, 0 to 168; a wrong value is explained and kept.
    let post_remind = |hours: &'static str| {
        [
            ("csrf", csrf.clone()),
            ("action", "create".to_owned()),
            ("place", picked.clone()),
            ("rain", "on".to_owned()),
            ("remind_hours", hours.to_owned()),
        ]
    };
    for (hours, status, says) in [
        ("two", 422, "Remind every must be a whole number of hours"),
        ("200", 422, "Remind every must be between 0 (never) and 168"),
        ("6", 200, "added."),
    ] {
        let fields = post_remind(hours);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = b.post("/alerts", &fields, &[]).await;
        assert_eq!(r.status, status, "{hours}: {}", r.body);
        assert!(r.body.contains(says), "{hours}: {}", r.body);
        if status == 422 {
            assert!(
                r.body.contains(&format!(r#"value="{hours}""#)),
                "{}",
                r.body
            );
        }
    }
    // Once fetched, the card says when the reading was observed, in the user's zone, and
    // how old it is.
    let token = post_json(
        t.http,
        "/api/v1/auth/login",
        &serde_json::json!({"username": "erin", "password": PW}).to_string(),
    )
    .await
    .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = api(t.http, "GET", "/api/v1/subscriptions", Some(&token), "")
        .await
        .json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["remind_hours"] == 6),
        "{listed}"
    );
    poll_weather(t.http, &token).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let page = b.get("/alerts").await.body;
        if page.contains(", observed ") {
            assert!(
                page.contains(" min ago)") || page.contains("(just now)"),
                "{page}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_card_sends_tests_links_and_saves_settings() {
    use common::fake_telegram::FakeTelegram;
    let tg = FakeTelegram::start().await;
    let t = TestApp::start_with(|c| {
        tg.configure(c);
        c.telegram.link = true;
        c.telegram.poll_timeout = std::time::Duration::from_secs(2);
    })
    .await;
    let mut b = Browser::new(t.http);
    b.get("/register").await;
    let csrf = b.csrf();
    let r = b
        .post(
            "/register",
            &[
                ("csrf", &csrf),
                ("username", "dana"),
                ("password", PW),
                ("telegram_chat_id", "321"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    // The chat typed at registration must prove itself: the bot sent it a code.
    let page = b.get("/account").await;
    assert!(page.body.contains("<h2>Notifications</h2>"));
    assert!(
        page.body
            .contains("Chat <strong>321</strong> is not confirmed yet"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("Send test message"));
    tg.wait_until(WAIT, |s| s.sent.len() == 1).await;
    let code = tg.code_sent_to(321);
    let r = b
        .post(
            "/account/notifications",
            &[
                ("csrf", &csrf),
                ("action", "confirm"),
                ("code", "NOTTHEC0DE"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("That code is wrong."));
    let r = b
        .post(
            "/account/notifications",
            &[("csrf", &csrf), ("action", "confirm"), ("code", &code)],
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Chat confirmed"));
    let page = b.get("/account").await;
    assert!(
        page.body
            .contains("Alerts go to Telegram chat <strong>321</strong>")
    );
    assert!(page.body.contains("Send test message"));
    assert!(page.body.contains("Link Telegram"));

    let r = b
        .post("/account/notifications", &[("action", "test")], &[])
        .await;
    assert_eq!(r.status, 403, "a post without the CSRF token is refused");
    let r = b
        .post(
            "/account/notifications",
            &[("csrf", &csrf), ("action", "test")],
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Test message queued"));
    tg.wait_until(WAIT, |s| s.sent.len() == 2).await;
    assert_eq!(tg.sent()[1].chat_id, 321);

    let r = b
        .post(
            "/account/notifications",
            &[("csrf", &csrf), ("action", "link")],
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Send <code>/start "), "{}", r.body);

    let r = b
        .post(
            "/account/notifications",
            &[
                ("csrf", &csrf),
                ("action", "prefs"),
                ("mode", "digest"),
                ("digest_minutes", "often"),
                ("quiet_start", ""),
                ("quiet_end", ""),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("Enter whole minutes, 1 to 1440."));
    assert!(r.body.contains(r#"value="often""#));
    let r = b
        .post(
            "/account/notifications",
            &[
                ("csrf", &csrf),
                ("action", "prefs"),
                ("mode", "digest"),
                ("digest_minutes", "30"),
                ("quiet_start", "22:00"),
                ("quiet_end", "07:00"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Notification settings saved."));
    assert!(r.body.contains(r#"value="22:00""#));
    assert!(r.body.contains(r#"<option value="digest" selected>"#));
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sla_page_is_for_admins_and_manages_slas() {
    let t = TestApp::start_with(|c| {
        c.sla.sample_interval = std::time::Duration::from_secs(1);
        c.sla.forecast_horizon = std::time::Duration::from_secs(10);
    })
    .await;
    let mut admin = Browser::new(t.http);
    admin.get("/register").await;
    let csrf = admin.csrf();
    let r = admin
        .post(
            "/register",
            &[("csrf", &csrf), ("username", "root"), ("password", PW)],
            &[],
        )
        .await;
    assert_eq!(r.status, 303);
    let page = admin.get("/sla").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"<a href="/sla">SLA</a>"#));
    assert!(page.body.contains("No SLAs yet"));
    let r = admin
        .post(
            "/sla",
            &[
                ("csrf", &csrf),
                ("action", "save"),
                ("name", "rss"),
                ("selector", "1bad"),
                ("desired_max", "lots"),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("Enter a number."));
    assert!(r.body.contains(r#"value="1bad""#));
    let r = admin
        .post(
            "/sla",
            &[
                ("csrf", &csrf),
                ("action", "save"),
                ("name", "rss"),
                ("selector", "meteomesh_process_resident_memory_bytes"),
                ("desired_max", "1e12"),
                ("for", ""),
                ("order", ""),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("SLA “rss” added."));
    assert!(
        r.body
            .contains("<code>meteomesh_process_resident_memory_bytes</code>")
    );
    // After a few samples the card draws the history.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let page = admin.get("/sla").await;
        if page.body.contains("<polyline") {
            assert!(page.body.contains(r#"<span class="badge ok">ok</span>"#));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", page.body);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }

    let mut user = Browser::new(t.http);
    user.get("/register").await;
    let ucsrf = user.csrf();
    user.post(
        "/register",
        &[("csrf", &ucsrf), ("username", "alice"), ("password", PW)],
        &[],
    )
    .await;
    let page = user.get("/sla").await;
    assert_eq!(page.status, 403);
    assert!(!page.body.contains(r#"<a href="/sla">"#));
    let r = user
        .post(
            "/sla",
            &[("csrf", &ucsrf), ("action", "remove"), ("name", "rss")],
            &[],
        )
        .await;
    assert_eq!(r.status, 403);

    let r = admin
        .post(
            "/sla",
            &[("csrf", &csrf), ("action", "remove"), ("name", "rss")],
            &[],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("SLA “rss” removed."));
    assert!(r.body.contains("No SLAs yet"));
    t.app.shutdown().await.unwrap();
}
