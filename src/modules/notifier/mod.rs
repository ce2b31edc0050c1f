//! Owns notifications. Every alert event is first written to the outbox (SQLite, one
//! transaction with marking its journal entry handled), then delivered by the
//! dispatcher; a restart resumes the outbox, and journal entries the notifier never
//! saw (a crash between the rules' commit and the bus hop) are taken at start and every
//! 30 s. Per user: `immediate` or `digest` every N minutes, and quiet hours whose
//! messages go out as one digest when they end. Also the account-facing side:
//! preferences, test messages, and linking a Telegram chat with a one-time code.
//!
//! Guarantee: at least once. A row is marked delivered after Telegram's answer; a crash
//! between the answer and the commit resends at most `telegram.max_in_flight` messages,
//! byte-identical to the first (the text is a pure function of the row). A clean stop
//! waits for the requests in flight and resends nothing.
//!
//! MQTT: the alert already reached the user's topic when the notifier sees it (the
//! broker delivers to every subscriber); the notifier counts it, adds nothing.
//!
//! Consumes: `users/+/alerts` ([`AlertEvent`]) and `system/sla` ([`SlaEvent`], sent to
//! every administrator with a Telegram chat). Publishes nothing.

mod dispatch;
mod link;
mod pipeline;
pub(crate) mod render;
pub(crate) mod schedule;
mod settings;
pub mod telegram;

pub use settings::validate;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{BusError, Inbox};
use crate::config::{NotifierConfig, TelegramConfig};
use crate::contract::{AlertEvent, SlaEvent, WeatherNotice};
use crate::domain::time::now_ms;
use crate::domain::validation::FieldError;
use crate::metrics::Metrics;
use crate::modules::ModuleCtx;
use crate::storage::notify::{self, NewDelivery, OutboxKind, Prefs, Recipient};
use crate::storage::{Db, StorageError};
use telegram::TelegramApi;

/// How long a Telegram link code is valid.
pub const LINK_CODE_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Journal entries younger than this are left to the bus path by the periodic sweep.
const SWEEP_GRACE_MS: i64 = 5_000;
/// How long start-up waits for the broker to confirm the subscriptions.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);
/// Events taken from the bus or the journal per outbox transaction.
const ENQUEUE_BATCH: usize = 256;
/// Shortest gap between two confirmation codes for one account.
pub const CHAT_CODE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a confirmation code can be typed back.
const CHAT_CODE_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60 * 60);
/// Wrong codes before a confirmation code is void.
const MAX_CODE_ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("Telegram is not set up on this server (the operator sets telegram.bot_token)")]
    TelegramOff,
    #[error("Telegram linking is not enabled on this server (the operator sets telegram.link)")]
    LinkingOff,
    #[error("no Telegram chat on your account: link Telegram or set telegram_chat_id first")]
    NoChat,
    #[error(
        "your Telegram chat is not confirmed yet: type the code the bot sent to it \
         (POST /api/v1/me/telegram/confirm), or link it with the bot"
    )]
    ChatUnconfirmed,
    #[error("no chat waits for confirmation: enter a chat id first, or ask for a new code")]
    NothingToConfirm,
    #[error("that code is wrong")]
    WrongCode,
    #[error("a code was sent moments ago; ask again later")]
    CodeTooSoon { retry_after: std::time::Duration },
    #[error("no such account")]
    NoAccount,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A user's notification settings and Telegram status, as the API shows them.
#[derive(Debug, Clone)]
pub struct Settings {
    pub prefs: Prefs,
    pub chat_id: Option<i64>,
    pub telegram: TelegramStatus,
    pub link_enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TelegramStatus {
    /// No bot token on this server.
    Disabled,
    /// No chat id on the account.
    NotLinked,
    /// A chat id the user entered, waiting for its code to be typed back.
    Unconfirmed(i64),
    Ok,
    /// Telegram refused the chat: (reason, Unix ms).
    Broken(String, i64),
}

/// A fresh link code and how to use it.
#[derive(Debug, Clone)]
pub struct LinkCode {
    pub code: String,
    /// `https://t.me/<bot>?start=<code>` once the bot's name is known.
    pub deep_link: Option<String>,
    pub expires_at: i64,
}

#[derive(Clone)]
pub struct NotifierService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    metrics: Arc<Metrics>,
    api: Option<Arc<TelegramApi>>,
    link_enabled: bool,
    bot_username: RwLock<Option<String>>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for NotifierService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NotifierService")
    }
}

/// Starts the notifier: the bus consumer, the dispatcher, the maintenance loop and,
/// when enabled, the Telegram link poller.
pub async fn start(
    ctx: &ModuleCtx<'_>,
    telegram: &TelegramConfig,
    config: &NotifierConfig,
) -> Result<(NotifierService, Vec<JoinHandle<()>>), BusError> {
    let (bus, db, metrics, shutdown) = (
        ctx.bus,
        ctx.db.clone(),
        ctx.metrics.clone(),
        ctx.shutdown.clone(),
    );
    let api = (!telegram.bot_token.is_empty()).then(|| {
        Arc::new(TelegramApi::new(
            &telegram.api_base,
            telegram.bot_token.expose(),
            telegram.request_timeout,
            telegram.poll_timeout,
        ))
    });
    let service = NotifierService {
        inner: Arc::new(Inner {
            db: db.clone(),
            metrics: metrics.clone(),
            api: api.clone(),
            link_enabled: telegram.link && api.is_some(),
            bot_username: RwLock::new(None),
            wake: Arc::new(Notify::new()),
        }),
    };
    let (client, session) = bus.consumer("notifier");
    let alerts = client.subscribe_to::<AlertEvent>().await?;
    let sla_events = client.subscribe_to::<SlaEvent>().await?;
    let weather_notices = client.subscribe_to::<WeatherNotice>().await?;
    // Modules started after this one may publish at once; be listening by then.
    if !client.wait_subscribed(SUBSCRIBE_WAIT).await {
        tracing::warn!("the notifier's bus subscriptions are not confirmed yet; continuing");
    }
    let mut tasks = Vec::new();
    let consumer = service.clone();
    let stop = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        consumer
            .consume(alerts, sla_events, weather_notices, stop)
            .await;
        client.disconnect().await;
        let _ = session.await;
    }));
    tasks.push(tokio::spawn(
        service.clone().maintain(config.retention, shutdown.clone()),
    ));
    if let Some(api) = api {
        let dispatcher = dispatch::Dispatcher {
            db: db.clone(),
            api: api.clone(),
            metrics,
            limits: dispatch::Limits {
                per_chat_interval: telegram.per_chat_interval,
                messages_per_second: telegram.messages_per_second,
                max_in_flight: telegram.max_in_flight,
                max_backoff: telegram.max_backoff,
            },
            wake: service.inner.wake.clone(),
        };
        tasks.push(tokio::spawn(dispatcher.run(shutdown.clone())));
        if service.inner.link_enabled {
            let poller = link::LinkPoller {
                service: service.clone(),
                api,
                poll_timeout: telegram.poll_timeout,
            };
            tasks.push(tokio::spawn(poller.run(shutdown)));
        }
    }
    Ok((service, tasks))
}

/// A finished message to `chat_id`, due at once (outside digests and quiet hours).
fn notice(key: String, user_id: Option<i64>, chat_id: i64, text: String, now: i64) -> NewDelivery {
    NewDelivery {
        key,
        kind: OutboxKind::Notice,
        user_id,
        chat_id: Some(chat_id),
        payload: text,
        batched: false,
        not_before: now,
        created_at: now,
    }
}
