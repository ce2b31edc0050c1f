//! The notifier's side of the alert pipeline: alerts from the bus (and the rules'
//! journal after a crash) into the outbox, SLA events to administrators, housekeeping
//! (retention, gauges).

use super::*;

impl NotifierService {
    /// Takes alert events from the bus, a batch per transaction. Before the first, and
    /// on a timer in [`Self::maintain`], it takes journal entries it never received.
    pub(super) async fn consume(
        &self,
        mut alerts: Inbox<AlertEvent>,
        mut sla_events: Inbox<SlaEvent>,
        mut weather_notices: Inbox<WeatherNotice>,
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
                        .filter_map(|m| match m {
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
                Some(event) = sla_events.recv() => match event {
                    Ok(event) => {
                        let key = format!("sla:{}:{:?}:{}", event.name, event.state, event.at);
                        let notified = self.notify_admins(&key, |tz| render::sla_event(&event, tz));
                        if let Err(e) = notified.await {
                            tracing::error!(error = %e, "queueing an SLA notice failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring malformed SLA event"),
                },
                Some(notice) = weather_notices.recv() => match notice {
                    Ok(notice) => {
                        let key = format!("weather:{}:{}", notice.warning.is_some(), notice.at);
                        let notified =
                            self.notify_admins(&key, |tz| render::weather_notice(&notice, tz));
                        if let Err(e) = notified.await {
                            tracing::error!(error = %e, "queueing a weather notice failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring malformed weather notice"),
                },
                _ = shutdown.cancelled() => break,
            }
        }
    }

    /// Tells every administrator with a Telegram chat (an SLA transition, a quota that
    /// cannot carry the places): `text` renders it in the administrator's time zone;
    /// `key` names the event, so a duplicate is queued once.
    async fn notify_admins(
        &self,
        key: &str,
        text: impl Fn(&str) -> String,
    ) -> Result<(), StorageError> {
        if self.inner.api.is_none() {
            return Ok(());
        }
        let now = now_ms();
        let admins = self.inner.db.notify().admin_recipients().await?;
        let deliveries: Vec<NewDelivery> = admins
            .into_iter()
            .map(|(admin, chat, tz)| {
                notice(format!("{key}:{admin}"), Some(admin), chat, text(&tz), now)
            })
            .collect();
        if deliveries.is_empty() {
            return Ok(());
        }
        let queued = self.inner.db.notify().enqueue(&deliveries, &[]).await?;
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
                .notify()
                .unhandled_alerts(ENQUEUE_BATCH, cutoff)
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
    /// events handled, in one transaction (the recipients are read just before).
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
        let user_ids: Vec<i64> = events
            .iter()
            .filter(|e| e.notify)
            .map(|e| e.user_id)
            .collect();
        let recipients = if telegram {
            self.inner.db.notify().recipients(&user_ids).await?
        } else {
            std::collections::HashMap::new()
        };
        let mut deliveries = Vec::new();
        let mut skipped = 0u64;
        for event in events {
            handled.push(event.key());
            if !telegram || !event.notify {
                continue;
            }
            let recipient = recipients.get(&event.user_id).cloned().flatten();
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
        // The rows and the journal's "handled" marks are written in one transaction.
        let queued = self
            .inner
            .db
            .notify()
            .enqueue(&deliveries, &handled)
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
    pub(super) async fn maintain(self, retention: Duration, shutdown: CancellationToken) {
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
                match self.inner.db.notify().prune(before, now).await {
                    Ok(0) => {}
                    Ok(rows) => tracing::info!(rows, "pruned old deliveries"),
                    Err(e) => tracing::warn!(error = %e, "pruning the outbox failed"),
                }
            }
        }
    }

    async fn refresh_gauges(&self) -> Result<(), StorageError> {
        let (pending, oldest) = self.inner.db.notify().depth().await?;
        let m = &self.inner.metrics;
        m.notify.outbox_pending.set(pending);
        m.notify
            .outbox_oldest_age
            .set(oldest.map_or(0.0, |t| ((now_ms() - t) as f64 / 1000.0).max(0.0)));
        Ok(())
    }
}
