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
pub mod render;
pub mod schedule;
pub mod telegram;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{BusError, Incoming};
use crate::config::{NotifierConfig, TelegramConfig};
use crate::contract::{AlertEvent, BusMessage, SlaEvent};
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
    let alerts = client
        .subscribe(AlertEvent::FILTER, AlertEvent::DELIVERY.qos)
        .await?;
    let sla_events = client
        .subscribe(SlaEvent::FILTER, SlaEvent::DELIVERY.qos)
        .await?;
    // Modules started after this one may publish at once; be listening by then.
    if !client.wait_subscribed(SUBSCRIBE_WAIT).await {
        tracing::warn!("the notifier's bus subscriptions are not confirmed yet; continuing");
    }
    let mut tasks = Vec::new();
    let consumer = service.clone();
    let stop = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        consumer.consume(alerts, sla_events, stop).await;
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

impl NotifierService {
    /// Takes alert events from the bus, a batch per transaction. Before the first, and
    /// on a timer in [`Self::maintain`], it takes journal entries it never received.
    async fn consume(
        &self,
        mut alerts: mpsc::Receiver<Incoming>,
        mut sla_events: mpsc::Receiver<Incoming>,
        shutdown: CancellationToken,
    ) {
        if let Err(e) = self.take_journal(0).await {
            tracing::error!(error = %e, "resuming unhandled alerts failed");
        }
        let mut batch = Vec::with_capacity(ENQUEUE_BATCH);
        loop {
            tokio::select! {
                n = alerts.recv_many(&mut batch, ENQUEUE_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    let events: Vec<AlertEvent> = batch
                        .drain(..)
                        .filter_map(|m| match m.decode::<AlertEvent>() {
                            Ok(e) => Some(e),
                            Err(e) => {
                                tracing::warn!(error = %e, "ignoring malformed alert event");
                                None
                            }
                        })
                        .collect();
                    self.inner
                        .metrics
                        .notify
                        .notifications
                        .with_label_values(&["mqtt", "delivered"])
                        .inc_by(events.len() as u64);
                    if let Err(e) = self.enqueue_events(events, Vec::new()).await {
                        // The journal still holds them; the sweep retries.
                        tracing::error!(error = %e, "writing alerts to the outbox failed");
                    }
                }
                Some(msg) = sla_events.recv() => match msg.decode::<SlaEvent>() {
                    Ok(event) => {
                        if let Err(e) = self.notify_admins(&event).await {
                            tracing::error!(error = %e, "queueing an SLA notice failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring malformed SLA event"),
                },
                _ = shutdown.cancelled() => break,
            }
        }
    }

    /// Tells every administrator with a Telegram chat about an SLA transition.
    async fn notify_admins(&self, event: &SlaEvent) -> Result<(), StorageError> {
        if self.inner.api.is_none() {
            return Ok(());
        }
        let now = now_ms();
        let event = event.clone();
        let queued = self
            .inner
            .db
            .call(move |c| {
                let mut deliveries = Vec::new();
                for (admin, chat) in notify::admin_chats(c)? {
                    let tz = notify::recipient(c, admin)?
                        .map_or_else(|| "UTC".to_owned(), |r| r.timezone);
                    deliveries.push(notice(
                        format!("sla:{}:{:?}:{}:{admin}", event.name, event.state, event.at),
                        Some(admin),
                        chat,
                        render::sla_event(&event, &tz),
                        now,
                    ));
                }
                notify::enqueue(c, &deliveries, &[])
            })
            .await?;
        if queued > 0 {
            self.inner.wake.notify_one();
        }
        Ok(())
    }

    /// Queues journal entries older than `grace_ms` that the notifier has not handled.
    async fn take_journal(&self, grace_ms: i64) -> Result<usize, StorageError> {
        let mut total = 0;
        loop {
            let cutoff = now_ms() - grace_ms;
            let entries = self
                .inner
                .db
                .call(move |c| notify::unhandled_alerts(c, ENQUEUE_BATCH, cutoff))
                .await?;
            if entries.is_empty() {
                break;
            }
            let n = entries.len();
            let mut unreadable = Vec::new();
            let mut events = Vec::with_capacity(n);
            for (key, json) in entries {
                match serde_json::from_str::<AlertEvent>(&json) {
                    Ok(e) => events.push(e),
                    Err(e) => {
                        // Marked handled so it cannot wedge the sweep.
                        tracing::warn!(key, error = %e, "unreadable alert journal entry");
                        unreadable.push(key);
                    }
                }
            }
            self.enqueue_events(events, unreadable).await?;
            total += n;
            if n < ENQUEUE_BATCH {
                break;
            }
        }
        if total > 0 {
            tracing::info!(alerts = total, "queued alerts the notifier had not seen");
        }
        Ok(total)
    }

    /// Writes one outbox row per event that should reach Telegram and marks the
    /// events handled, in one transaction.
    async fn enqueue_events(
        &self,
        events: Vec<AlertEvent>,
        mut handled: Vec<String>,
    ) -> Result<(), StorageError> {
        if events.is_empty() && handled.is_empty() {
            return Ok(());
        }
        let telegram = self.inner.api.is_some();
        let now = now_ms();
        let (queued, skipped) = self
            .inner
            .db
            .call(move |c| {
                let mut recipients: std::collections::HashMap<i64, Option<Recipient>> =
                    std::collections::HashMap::new();
                let mut deliveries = Vec::new();
                let mut skipped = 0u64;
                for event in events {
                    handled.push(event.key());
                    if !telegram || !event.notify {
                        continue;
                    }
                    let recipient = match recipients.get(&event.user_id) {
                        Some(r) => r.clone(),
                        None => {
                            let r = notify::recipient(c, event.user_id)?;
                            recipients.insert(event.user_id, r.clone());
                            r
                        }
                    };
                    let Some(r) = recipient.filter(|r| r.chat_id.is_some()) else {
                        continue;
                    };
                    if r.broken.is_some() {
                        skipped += 1;
                        continue;
                    }
                    let plan = schedule::plan(now, &r.prefs, &r.timezone);
                    deliveries.push(NewDelivery {
                        key: format!("{}:telegram", event.key()),
                        kind: OutboxKind::Alert,
                        user_id: Some(event.user_id),
                        chat_id: None,
                        payload: serde_json::to_string(&event).unwrap_or_default(),
                        batched: plan.batched,
                        not_before: plan.not_before,
                        created_at: now,
                    });
                }
                let queued = notify::enqueue(c, &deliveries, &handled)?;
                Ok((queued, skipped))
            })
            .await?;
        if skipped > 0 {
            self.inner
                .metrics
                .notify
                .notifications
                .with_label_values(&["telegram", "skipped"])
                .inc_by(skipped);
        }
        if queued > 0 {
            self.inner.wake.notify_one();
        }
        Ok(())
    }

    /// Every 2 s the outbox gauges; every 30 s the journal sweep; every hour pruning.
    async fn maintain(self, retention: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            n += 1;
            if let Err(e) = self.refresh_gauges().await {
                tracing::warn!(error = %e, "reading the outbox depth failed");
            }
            if n.is_multiple_of(15)
                && let Err(e) = self.take_journal(SWEEP_GRACE_MS).await
            {
                tracing::error!(error = %e, "sweeping the alert journal failed");
            }
            if n % 1800 == 1 {
                let now = now_ms();
                let before = now - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
                match self
                    .inner
                    .db
                    .call(move |c| notify::prune(c, before, now))
                    .await
                {
                    Ok(0) => {}
                    Ok(rows) => tracing::info!(rows, "pruned old deliveries"),
                    Err(e) => tracing::warn!(error = %e, "pruning the outbox failed"),
                }
            }
        }
    }

    async fn refresh_gauges(&self) -> Result<(), StorageError> {
        let (pending, oldest) = self.inner.db.call(|c| notify::depth(c)).await?;
        let m = &self.inner.metrics;
        m.notify.outbox_pending.set(pending);
        m.notify
            .outbox_oldest_age
            .set(oldest.map_or(0.0, |t| ((now_ms() - t) as f64 / 1000.0).max(0.0)));
        Ok(())
    }

    /// The user's notification settings and Telegram status.
    async fn recipient(&self, user_id: i64) -> Result<Recipient, NotifierError> {
        self.inner
            .db
            .call(move |c| notify::recipient(c, user_id))
            .await?
            .ok_or(NotifierError::NoAccount)
    }

    pub async fn settings(&self, user_id: i64) -> Result<Settings, NotifierError> {
        let r = self.recipient(user_id).await?;
        let telegram = match (&self.inner.api, r.chat_id, r.broken) {
            (None, _, _) => TelegramStatus::Disabled,
            (Some(_), None, _) => match r.unconfirmed_chat {
                Some(chat) => TelegramStatus::Unconfirmed(chat),
                None => TelegramStatus::NotLinked,
            },
            (Some(_), Some(_), Some((reason, at))) => TelegramStatus::Broken(reason, at),
            (Some(_), Some(_), None) => TelegramStatus::Ok,
        };
        Ok(Settings {
            prefs: r.prefs,
            chat_id: r.chat_id,
            telegram,
            link_enabled: self.inner.link_enabled,
        })
    }

    /// Replaces the user's preferences; held messages are released at once.
    pub async fn set_prefs(&self, user_id: i64, prefs: Prefs) -> Result<Settings, NotifierError> {
        validate(&prefs).map_err(NotifierError::Invalid)?;
        let now = now_ms();
        self.inner
            .db
            .call(move |c| notify::set_prefs(c, user_id, &prefs, now))
            .await?;
        self.inner.wake.notify_one();
        self.settings(user_id).await
    }

    /// Queues a test message to the user's chat, past quiet hours and digests. A test
    /// that gets through also clears a "broken" mark on that chat.
    pub async fn send_test(&self, user_id: i64, username: &str) -> Result<String, NotifierError> {
        if self.inner.api.is_none() {
            return Err(NotifierError::TelegramOff);
        }
        let r = self.recipient(user_id).await?;
        let chat = match (r.chat_id, r.unconfirmed_chat) {
            (Some(chat), _) => chat,
            (None, Some(_)) => return Err(NotifierError::ChatUnconfirmed),
            (None, None) => return Err(NotifierError::NoChat),
        };
        let now = now_ms();
        let nonce: u32 = rand::random();
        let key = format!("test:{user_id}:{now}:{nonce:08x}");
        let text = format!(
            "✅ Test message from meteomesh for <b>{}</b>. Weather alerts will arrive in this chat.",
            render::escape(username)
        );
        self.queue_notice(key.clone(), Some(user_id), chat, text)
            .await?;
        Ok(key)
    }

    /// Sends a confirmation code to the chat the user entered but has not proven yet:
    /// the only message such a chat ever gets, at most one per
    /// [`CHAT_CODE_INTERVAL`] per account. The user types it back with
    /// [`NotifierService::confirm_chat`].
    pub async fn send_chat_code(&self, user_id: i64, username: &str) -> Result<(), NotifierError> {
        if self.inner.api.is_none() {
            return Err(NotifierError::TelegramOff);
        }
        let chat = self
            .recipient(user_id)
            .await?
            .unconfirmed_chat
            .ok_or(NotifierError::NothingToConfirm)?;
        let now = now_ms();
        let interval = i64::try_from(CHAT_CODE_INTERVAL.as_millis()).unwrap_or(i64::MAX);
        if let Some(last) = self.chat_confirmation(user_id).await?
            && now - last.sent_at < interval
        {
            let left = u64::try_from(interval - (now - last.sent_at)).unwrap_or(0);
            return Err(NotifierError::CodeTooSoon {
                retry_after: std::time::Duration::from_millis(left),
            });
        }
        let confirmation = notify::ChatConfirmation {
            chat_id: chat,
            code: link::new_code(),
            expires_at: now + i64::try_from(CHAT_CODE_LIFETIME.as_millis()).unwrap_or(0),
            attempts: 0,
            sent_at: now,
        };
        let text = format!(
            "Your meteomesh confirmation code for <b>{}</b>: <code>{}</code>\n\n\
             Type it on the account page to receive weather alerts here. If you did not \
             ask for this, ignore this message: nothing else will be sent to this chat.",
            render::escape(username),
            confirmation.code
        );
        let message = notice(
            format!("confirm:{user_id}:{now}"),
            Some(user_id),
            chat,
            text,
            now,
        );
        self.inner
            .db
            .call(move |c| notify::put_chat_confirmation(c, user_id, &confirmation, &message))
            .await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Confirms the user's entered chat with the code sent to it. After
    /// [`MAX_CODE_ATTEMPTS`] wrong tries the code is void.
    pub async fn confirm_chat(&self, user_id: i64, code: &str) -> Result<(), NotifierError> {
        let r = self.recipient(user_id).await?;
        let chat = r.unconfirmed_chat.ok_or(NotifierError::NothingToConfirm)?;
        let now = now_ms();
        let pending = self
            .chat_confirmation(user_id)
            .await?
            .filter(|p| p.chat_id == chat && p.expires_at > now && p.attempts < MAX_CODE_ATTEMPTS)
            .ok_or(NotifierError::NothingToConfirm)?;
        let typed = code.trim().to_ascii_uppercase();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            typed.as_bytes(),
            pending.code.as_bytes(),
        )) {
            self.inner
                .db
                .call(move |c| notify::count_wrong_code(c, user_id))
                .await?;
            return Err(NotifierError::WrongCode);
        }
        let confirmed = self
            .inner
            .db
            .call(move |c| notify::confirm_chat(c, user_id, chat, now))
            .await?;
        if !confirmed {
            return Err(NotifierError::NothingToConfirm);
        }
        tracing::info!(user_id, "Telegram chat confirmed by its code");
        Ok(())
    }

    async fn chat_confirmation(
        &self,
        user_id: i64,
    ) -> Result<Option<notify::ChatConfirmation>, StorageError> {
        self.inner
            .db
            .call(move |c| notify::chat_confirmation(c, user_id))
            .await
    }

    /// Queues a finished message to a chat.
    async fn queue_notice(
        &self,
        key: String,
        user_id: Option<i64>,
        chat_id: i64,
        text: String,
    ) -> Result<(), StorageError> {
        let delivery = notice(key, user_id, chat_id, text, now_ms());
        self.inner
            .db
            .call(move |c| notify::enqueue(c, &[delivery], &[]))
            .await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Issues a one-time code that links the chat which sends `/start <code>` to the bot.
    pub async fn link_code(&self, user_id: i64) -> Result<LinkCode, NotifierError> {
        if !self.inner.link_enabled {
            return Err(NotifierError::LinkingOff);
        }
        let code = link::new_code();
        let expires_at = now_ms() + i64::try_from(LINK_CODE_LIFETIME.as_millis()).unwrap_or(0);
        let stored = code.clone();
        self.inner
            .db
            .call(move |c| notify::put_link_code(c, user_id, &stored, expires_at))
            .await?;
        let deep_link = self
            .bot_username()
            .map(|bot| format!("https://t.me/{bot}?start={code}"));
        Ok(LinkCode {
            code,
            deep_link,
            expires_at,
        })
    }

    /// The user's latest Telegram messages, newest first.
    pub async fn deliveries(
        &self,
        user_id: i64,
        limit: usize,
    ) -> Result<Vec<notify::DeliveryRow>, NotifierError> {
        Ok(self
            .inner
            .db
            .call(move |c| notify::recent_deliveries(c, user_id, limit))
            .await?)
    }

    pub fn bot_username(&self) -> Option<String> {
        self.inner
            .bot_username
            .read()
            .ok()
            .and_then(|name| name.clone())
    }
}

/// Checks preferences a user sent.
pub fn validate(prefs: &Prefs) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if !(1..=1440).contains(&prefs.digest_minutes) {
        errors.push(FieldError::new(
            "digest_minutes",
            "must be between 1 and 1440 minutes",
        ));
    }
    if let Some(q) = prefs.quiet
        && q.start == q.end
    {
        errors.push(FieldError::new(
            "quiet_hours",
            "start and end are equal; leave quiet hours empty to turn them off",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
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
