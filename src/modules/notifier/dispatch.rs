//! Owns sending the Telegram outbox: picks due rows, groups a user's batched rows into
//! one digest, keeps the rate limits (one message per `per_chat_interval` per chat,
//! `messages_per_second` overall, `max_in_flight` requests at once), and settles each
//! row: delivered, retried later (429: after `retry_after`; 5xx/timeouts: exponential
//! backoff with jitter), or failed for good (4xx) — a refused chat (400 chat not found,
//! 403) marks the user's channel broken.
//!
//! The limiter is hand-written rather than governor's: the scheduler must look at a
//! chat's and the global budget before committing to a row, and governor's limiters
//! only offer check-and-consume.
//!
//! On shutdown it stops picking rows and waits up to [`STOP_GRACE`] for the requests in
//! flight, so a clean stop commits every outcome it can; a request Telegram leaves
//! hanging is abandoned with its rows still due, and goes out again after the restart
//! (at least once, as after a crash).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::render;
use super::telegram::{TelegramApi, TelegramError};
use crate::contract::AlertEvent;
use crate::domain::time::now_ms;
use crate::metrics::Metrics;
use crate::storage::notify::{Due, OutboxKind};
use crate::storage::{Db, StorageError};

/// Rows read per refill of the in-memory queue.
const BATCH: usize = 256;
/// Longest sleep when nothing is scheduled (new rows wake the loop earlier).
const IDLE: Duration = Duration::from_secs(30);
/// How long a stop waits for requests in flight (the whole stop has 5 s).
pub const STOP_GRACE: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone)]
pub struct Limits {
    pub per_chat_interval: Duration,
    pub messages_per_second: u32,
    pub max_in_flight: usize,
    pub max_backoff: Duration,
}

/// One Telegram message: one row, or several batched rows as a digest.
#[derive(Debug)]
struct Job {
    ids: Vec<i64>,
    chat: i64,
    /// The account the chat belongs to: a refusal marks that account's chat broken.
    user_id: Option<i64>,
    text: String,
    attempts: i64,
}

struct Sent {
    job: Job,
    result: Result<(), TelegramError>,
    took: Duration,
}

pub struct Dispatcher {
    pub db: Db,
    pub api: Arc<TelegramApi>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub wake: Arc<Notify>,
}

struct State {
    queue: VecDeque<Job>,
    chat_next: HashMap<i64, Instant>,
    busy_chats: HashSet<i64>,
    in_flight_rows: HashSet<i64>,
    global_next: Instant,
    /// Set after the bot token was refused: nothing is sent until then.
    paused_until: Instant,
}

impl Dispatcher {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tasks: JoinSet<Sent> = JoinSet::new();
        let now = Instant::now();
        let mut st = State {
            queue: VecDeque::new(),
            chat_next: HashMap::new(),
            busy_chats: HashSet::new(),
            in_flight_rows: HashSet::new(),
            global_next: now,
            paused_until: now,
        };
        let mut refill = true;
        // Set at the stop: when requests still in flight are abandoned.
        let mut give_up: Option<Instant> = None;
        loop {
            let mut wake_at = Instant::now() + IDLE;
            let stopping = give_up.is_some();
            if !stopping {
                if refill || st.queue.is_empty() {
                    match self.refill(&mut st).await {
                        Ok(next_due) => {
                            if let Some(at) = next_due {
                                wake_at = wake_at.min(at);
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "reading the outbox failed");
                            wake_at = Instant::now() + Duration::from_secs(1);
                        }
                    }
                    refill = false;
                }
                if let Some(at) = self.launch(&mut st, &mut tasks) {
                    wake_at = wake_at.min(at);
                }
            } else if tasks.is_empty() {
                break;
            }
            tokio::select! {
                Some(done) = tasks.join_next() => {
                    if let Ok(sent) = done {
                        self.settle(&mut st, sent).await;
                    }
                    refill = st.queue.is_empty();
                }
                _ = self.wake.notified(), if !stopping => refill = true,
                _ = tokio::time::sleep_until(wake_at.into()), if !stopping => refill = true,
                _ = shutdown.cancelled(), if !stopping => {
                    give_up = Some(Instant::now() + STOP_GRACE);
                }
                _ = tokio::time::sleep_until(give_up.unwrap_or(wake_at).into()), if stopping => {
                    tracing::warn!(requests = tasks.len(), "Telegram did not answer in time; the messages stay queued");
                    break;
                }
            }
        }
    }

    /// Reloads the queue from the outbox. Returns when the next row falls due if none
    /// is due now.
    async fn refill(&self, st: &mut State) -> Result<Option<Instant>, StorageError> {
        let now = now_ms();
        let rows = self.db.notify().due(now, BATCH).await?;
        let rows: Vec<Due> = rows
            .into_iter()
            .filter(|r| !st.in_flight_rows.contains(&r.id))
            .collect();
        let (jobs, dropped) = build_jobs(rows);
        for (ids, reason) in dropped {
            self.metrics
                .notify
                .notifications
                .with_label_values(&["telegram", "failed"])
                .inc_by(ids.len() as u64);
            self.db.notify().mark_failed(&ids, reason, now).await?;
        }
        st.queue = jobs.into();
        if !st.queue.is_empty() {
            return Ok(None);
        }
        let next = self.db.notify().next_due_at().await?;
        Ok(next.map(|at| {
            let wait = u64::try_from(at - now_ms()).unwrap_or(0);
            Instant::now() + Duration::from_millis(wait)
        }))
    }

    /// Starts every job the limits allow. Returns when to look again for the rest.
    fn launch(&self, st: &mut State, tasks: &mut JoinSet<Sent>) -> Option<Instant> {
        let now = Instant::now();
        if st.paused_until > now {
            return Some(st.paused_until);
        }
        let global_gap = Duration::from_secs(1) / self.limits.messages_per_second.max(1);
        let mut next: Option<Instant> = None;
        let mut i = 0;
        while i < st.queue.len() {
            if tasks.len() >= self.limits.max_in_flight {
                return next;
            }
            let chat = st.queue[i].chat;
            if st.busy_chats.contains(&chat) {
                i += 1;
                continue;
            }
            if let Some(&at) = st.chat_next.get(&chat).filter(|&&at| at > now) {
                next = Some(next.map_or(at, |n| n.min(at)));
                i += 1;
                continue;
            }
            if st.global_next > now {
                return Some(next.map_or(st.global_next, |n| n.min(st.global_next)));
            }
            let Some(job) = st.queue.remove(i) else {
                break;
            };
            st.global_next = now + global_gap;
            // The chat's next slot is set when this request ends (see `settle`), so two
            // messages reach Telegram at least `per_chat_interval` apart.
            st.busy_chats.insert(chat);
            st.in_flight_rows.extend(job.ids.iter().copied());
            let api = self.api.clone();
            tasks.spawn(async move {
                let started = Instant::now();
                let (chat, text) = (job.chat, job.text.clone());
                let result = tokio::task::spawn_blocking(move || api.send_message(chat, &text))
                    .await
                    .unwrap_or_else(|e| Err(TelegramError::Unavailable(e.to_string())));
                Sent {
                    job,
                    result,
                    took: started.elapsed(),
                }
            });
        }
        // Forget spacing records that no longer hold anything back.
        st.chat_next.retain(|_, at| *at > now);
        next
    }

    /// Records the outcome of one request in the outbox and the limiter.
    async fn settle(&self, st: &mut State, sent: Sent) {
        let Sent { job, result, took } = sent;
        st.busy_chats.remove(&job.chat);
        st.chat_next
            .insert(job.chat, Instant::now() + self.limits.per_chat_interval);
        for id in &job.ids {
            st.in_flight_rows.remove(id);
        }
        self.metrics
            .notify
            .telegram_duration
            .observe(took.as_secs_f64());
        let count = job.ids.len() as u64;
        let now = now_ms();
        let ids = job.ids.clone();
        let outcome = |label: &str| {
            self.metrics
                .notify
                .notifications
                .with_label_values(&["telegram", label])
                .inc_by(count);
        };
        let written = match result {
            Ok(()) => {
                outcome("delivered");
                let (user, chat) = (job.user_id, job.chat);
                self.db
                    .notify()
                    .mark_delivered_to(&ids, now, user.map(|u| (u, chat)))
                    .await
            }
            Err(TelegramError::RateLimited(wait)) => {
                outcome("rate_limited");
                self.metrics.notify.telegram_rate_limited.inc();
                st.chat_next.insert(job.chat, Instant::now() + wait);
                let until = now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
                self.db
                    .notify()
                    .reschedule(&ids, until, "429 Too Many Requests", false)
                    .await
            }
            Err(TelegramError::ChatRefused(reason)) => {
                outcome("failed");
                match job.user_id {
                    Some(user) => {
                        tracing::warn!(
                            user,
                            reason,
                            "Telegram refused the user's chat; marking it broken"
                        );
                        st.queue.retain(|j| j.chat != job.chat);
                        let chat = job.chat;
                        self.db
                            .notify()
                            .fail_and_break(&ids, &reason, user, chat, now)
                            .await
                    }
                    None => self.db.notify().mark_failed(&ids, &reason, now).await,
                }
            }
            Err(TelegramError::Rejected {
                status,
                description,
            }) => {
                outcome("failed");
                tracing::warn!(status, description, "Telegram rejected a message for good");
                let reason = format!("{status}: {description}");
                self.db.notify().mark_failed(&ids, &reason, now).await
            }
            Err(e @ (TelegramError::BadToken(_) | TelegramError::Conflict(_))) => {
                outcome("retried");
                tracing::error!(error = %e, "Telegram delivery paused");
                st.paused_until = Instant::now() + self.limits.max_backoff;
                let reason = e.to_string();
                let until = now + millis(self.limits.max_backoff);
                self.db
                    .notify()
                    .reschedule(&ids, until, &reason, true)
                    .await
            }
            Err(TelegramError::Unavailable(reason)) => {
                outcome("retried");
                let wait = backoff(job.attempts, self.limits.max_backoff);
                tracing::info!(reason, retry_in = ?wait, "Telegram unavailable; will retry");
                let until = now + millis(wait);
                self.db
                    .notify()
                    .reschedule(&ids, until, &reason, true)
                    .await
            }
        };
        if let Err(e) = written {
            // The row stays pending and is sent again: a duplicate, never a loss.
            tracing::error!(error = %e, "recording a Telegram delivery failed");
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

/// Exponential backoff after `attempts` failures: 1 s, 2 s, 4 s, … up to `cap`, with
/// ±20 % jitter so many rows do not retry in one burst.
pub fn backoff(attempts: i64, cap: Duration) -> Duration {
    let exp = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    let base = Duration::from_secs(1).saturating_mul(1u32 << exp).min(cap);
    let jitter = rand::random_range(0.8..1.2);
    base.mul_f64(jitter).min(cap)
}

/// Turns due rows into messages: each immediate row alone; a user's batched rows
/// together as digests. Rows that cannot be sent come back with the reason.
fn build_jobs(rows: Vec<Due>) -> (Vec<Job>, Vec<(Vec<i64>, &'static str)>) {
    let mut jobs = Vec::new();
    let mut dropped: Vec<(Vec<i64>, &'static str)> = Vec::new();
    let mut digests: HashMap<(i64, i64), Vec<(Due, AlertEvent)>> = HashMap::new();
    let mut order: Vec<(i64, i64)> = Vec::new();
    for row in rows {
        let Some(chat) = row.chat_id else {
            dropped.push((vec![row.id], "no Telegram chat id on the account any more"));
            continue;
        };
        if row.broken {
            dropped.push((vec![row.id], "Telegram chat refused earlier"));
            continue;
        }
        match row.kind {
            OutboxKind::Notice => jobs.push(Job {
                ids: vec![row.id],
                chat,
                user_id: row.user_id,
                text: render::fit(row.payload.clone()),
                attempts: row.attempts,
            }),
            OutboxKind::Alert => {
                let Ok(event) = serde_json::from_str::<AlertEvent>(&row.payload) else {
                    dropped.push((vec![row.id], "unreadable alert payload"));
                    continue;
                };
                if row.batched {
                    let key = (row.user_id.unwrap_or_default(), chat);
                    let group = digests.entry(key).or_default();
                    if group.is_empty() {
                        order.push(key);
                    }
                    group.push((row, event));
                } else {
                    jobs.push(Job {
                        ids: vec![row.id],
                        chat,
                        user_id: row.user_id,
                        text: render::alert(&event, &row.timezone, row.units),
                        attempts: row.attempts,
                    });
                }
            }
        }
    }
    for key in order {
        let Some(group) = digests.remove(&key) else {
            continue;
        };
        let (tz, units) = (group[0].0.timezone.clone(), group[0].0.units);
        let events: Vec<AlertEvent> = group.iter().map(|(_, e)| e.clone()).collect();
        let (text, used) = render::digest(&events, &tz, units);
        // Rows beyond what fits stay pending and make the next digest.
        let used = &group[..used];
        jobs.push(Job {
            ids: used.iter().map(|(r, _)| r.id).collect(),
            chat: key.1,
            user_id: Some(key.0),
            text,
            attempts: used.iter().map(|(r, _)| r.attempts).max().unwrap_or(0),
        });
    }
    (jobs, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap() {
        let cap = Duration::from_secs(60);
        assert!(backoff(0, cap) >= Duration::from_millis(800));
        assert!(backoff(0, cap) <= Duration::from_millis(1200));
        assert!(backoff(3, cap) >= Duration::from_millis(6400));
        let capped = backoff(30, cap);
        assert!(capped <= cap && capped >= cap.mul_f64(0.8), "{capped:?}");
    }
}
