//! A fake Telegram Bot API on 127.0.0.1: records every `sendMessage` it accepts (with the
//! time it arrived), and can answer 429 with retry_after, 500, 400 "chat not found",
//! 403 "blocked", or hang. `getUpdates` serves updates a test pushes; `getMe` names the
//! bot. Only requests answered 200 count as delivered.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, Uri};
use serde_json::{Value, json};
use tokio::sync::Notify;

pub const TOKEN: &str = "123456:TEST-token_abc";
pub const BOT: &str = "meteomesh_test_bot";

/// An answer to give instead of the normal one.
#[derive(Debug, Clone)]
pub enum Forced {
    RateLimited(u64),
    ServerError,
    ChatNotFound,
    Blocked,
}

#[derive(Debug, Clone)]
pub struct Sent {
    pub chat_id: i64,
    pub text: String,
    pub parse_mode: Option<String>,
    pub at: Instant,
}

#[derive(Default)]
pub struct State {
    pub sent: Vec<Sent>,
    /// Every sendMessage request, answered or not: (chat, answer status or 0 for hung,
    /// arrival).
    pub attempts: Vec<(i64, u16, Instant)>,
    pub forced: VecDeque<Forced>,
    /// Chats that always get this refusal.
    pub refused: HashMap<i64, Forced>,
    pub hang: bool,
    /// Accept (and record) each message at once but answer this much later: the window
    /// in which a crash makes the sender resend a message Telegram already has.
    pub answer_delay: Option<Duration>,
    pub updates: Vec<Value>,
    pub offsets_asked: Vec<i64>,
    pub bad_token_requests: usize,
}

#[derive(Clone)]
pub struct FakeTelegram {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

impl FakeTelegram {
    pub async fn start() -> FakeTelegram {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeTelegram {
            addr,
            state: Arc::new(Mutex::new(State::default())),
            changed: Arc::new(Notify::new()),
        };
        let handler = fake.clone();
        let app = Router::new().fallback(move |uri: Uri, body: Bytes| {
            let fake = handler.clone();
            async move { fake.answer(uri, body).await }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Points `config`'s Telegram settings at this fake, with its token.
    pub fn configure(&self, config: &mut meteomesh::config::Config) {
        config.telegram.bot_token = meteomesh::config::Secret::new(TOKEN);
        config.telegram.api_base = self.url();
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A test that panics while holding the lock must not turn every later request
        // into a second panic that hides the first.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.lock().sent.clone()
    }

    pub fn force(&self, f: Forced) {
        self.lock().forced.push_back(f);
    }

    pub fn set_hang(&self, hang: bool) {
        self.lock().hang = hang;
        self.changed.notify_waiters();
    }

    pub fn push_update(&self, chat_id: i64, text: &str) {
        let mut s = self.lock();
        let id = 1000 + s.updates.len() as i64;
        s.updates
            .push(json!({"update_id": id, "message": {"message_id": id,
            "date": 1795363200, "chat": {"id": chat_id, "type": "private"}, "text": text}}));
        drop(s);
        self.changed.notify_waiters();
    }

    /// The confirmation code last sent to `chat` (the text inside `<code>…</code>`).
    pub fn code_sent_to(&self, chat: i64) -> String {
        let sent = self.sent();
        let text = &sent
            .iter()
            .rfind(|s| s.chat_id == chat)
            .expect("a message to the chat")
            .text;
        let start = text.find("<code>").expect("a code") + "<code>".len();
        let end = start + text[start..].find("</code>").expect("the code's end");
        text[start..end].to_owned()
    }

    /// Waits until `pred` holds for the recorded state (or panics after `timeout`).
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&State) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if pred(&self.lock()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let report = {
                    let s = self.lock();
                    format!(
                        "{} sent, attempts {:?}, offsets asked {:?}",
                        s.sent.len(),
                        s.attempts,
                        s.offsets_asked
                    )
                };
                panic!("fake Telegram: condition not met in {timeout:?}; {report}");
            }
        }
    }

    async fn answer(&self, uri: Uri, body: Bytes) -> (StatusCode, String) {
        let path = uri.path();
        let Some((token, method)) = path
            .strip_prefix("/bot")
            .and_then(|rest| rest.split_once('/'))
        else {
            return (
                StatusCode::NOT_FOUND,
                json!({"ok": false, "error_code": 404, "description": "Not Found"}).to_string(),
            );
        };
        if token != TOKEN {
            self.lock().bad_token_requests += 1;
            return (
                StatusCode::UNAUTHORIZED,
                json!({"ok": false, "error_code": 401, "description": "Unauthorized"}).to_string(),
            );
        }
        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        match method {
            "getMe" => (StatusCode::OK, json!({"ok": true, "result": {"id": 42, "is_bot": true, "username": BOT}}).to_string()),
            "getUpdates" => self.get_updates(&req).await,
            "sendMessage" => self.send_message(req).await,
            _ => (StatusCode::NOT_FOUND, json!({"ok": false, "error_code": 404, "description": "Not Found: method not found"}).to_string()),
        }
    }

    async fn get_updates(&self, req: &Value) -> (StatusCode, String) {
        let offset = req["offset"].as_i64().unwrap_or(0);
        let timeout = Duration::from_secs(req["timeout"].as_u64().unwrap_or(0).min(5));
        let deadline = tokio::time::Instant::now() + timeout;
        self.lock().offsets_asked.push(offset);
        // Tests wait on the offsets asked as well as on messages sent.
        self.changed.notify_waiters();
        loop {
            let notified = self.changed.notified();
            let pending: Vec<Value> = self
                .lock()
                .updates
                .iter()
                .filter(|u| u["update_id"].as_i64().unwrap_or(0) >= offset)
                .cloned()
                .collect();
            if !pending.is_empty() || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return (
                    StatusCode::OK,
                    json!({"ok": true, "result": pending}).to_string(),
                );
            }
        }
    }

    async fn send_message(&self, req: Value) -> (StatusCode, String) {
        let chat_id = req["chat_id"].as_i64().unwrap_or(0);
        let forced = {
            let mut s = self.lock();
            if s.hang {
                s.attempts.push((chat_id, 0, Instant::now()));
                None
            } else {
                Some(
                    s.refused
                        .get(&chat_id)
                        .cloned()
                        .or_else(|| s.forced.pop_front()),
                )
            }
        };
        let Some(forced) = forced else {
            self.changed.notify_waiters();
            // Hang until the client gives up (this future is dropped with the connection).
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return (StatusCode::OK, String::new());
        };
        let (status, body) = match forced {
            Some(Forced::RateLimited(s)) => (
                429,
                json!({"ok": false, "error_code": 429,
                "description": format!("Too Many Requests: retry after {s}"), "parameters": {"retry_after": s}}),
            ),
            Some(Forced::ServerError) => (
                500,
                json!({"ok": false, "error_code": 500, "description": "Internal Server Error"}),
            ),
            Some(Forced::ChatNotFound) => (
                400,
                json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}),
            ),
            Some(Forced::Blocked) => (
                403,
                json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}),
            ),
            None => (
                200,
                json!({"ok": true, "result": {"message_id": 1, "date": 1795363200,
                "chat": {"id": chat_id, "type": "private"}, "text": req["text"]}}),
            ),
        };
        let delay = {
            let mut s = self.lock();
            s.attempts.push((chat_id, status, Instant::now()));
            if status == 200 {
                s.sent.push(Sent {
                    chat_id,
                    text: req["text"].as_str().unwrap_or_default().to_owned(),
                    parse_mode: req["parse_mode"].as_str().map(str::to_owned),
                    at: Instant::now(),
                });
            }
            s.answer_delay
        };
        self.changed.notify_waiters();
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        (StatusCode::from_u16(status).unwrap(), body.to_string())
    }
}
