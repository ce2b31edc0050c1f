//! The SLA loop: every interval, read the referenced series (embedded history or
//! Prometheus), store the samples, evaluate each SLA and publish its transitions.

use super::*;

impl SlaService {
    pub(super) async fn run(&self, shutdown: CancellationToken) {
        if let Err(e) = self.announce_open_violations().await {
            tracing::warn!(error = %e, "re-announcing open SLA violations failed");
        }
        let mut tick = tokio::time::interval(self.inner.config.sample_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buckets = Vec::new();
        let mut last_prune: Option<Instant> = None;
        let mut clock_warned = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let started = Instant::now();
            // A board without RTC before NTP would file history under 1970.
            if !crate::domain::time::is_set() {
                if !clock_warned {
                    tracing::warn!(
                        "the system clock is behind the last time seen; SLA sampling waits for NTP"
                    );
                    clock_warned = true;
                }
                continue;
            }
            if let Err(e) = self.cycle(&mut buckets).await {
                tracing::warn!(error = %e, "SLA sampling cycle failed");
            }
            self.inner
                .metrics
                .sla
                .sample_duration
                .observe(started.elapsed().as_secs_f64());
            if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
                last_prune = Some(Instant::now());
                let before = now_s() - self.inner.config.retention.as_secs() as i64;
                match self.inner.db.sla().prune(before).await {
                    Ok(0) => {}
                    Ok(rows) => tracing::info!(rows, "pruned old metric samples and violations"),
                    Err(e) => tracing::warn!(error = %e, "pruning metric history failed"),
                }
            }
        }
    }

    /// Publishes the violation event again for every SLA in violation at start: a crash
    /// between committing a transition and publishing it would otherwise lose the
    /// admins' notice. The event is the original one (same time), and the notifier's
    /// outbox key (SLA, state, time, admin) turns a notice already queued into a no-op.
    async fn announce_open_violations(&self) -> Result<(), SlaError> {
        let open: Vec<SlaRow> = self
            .inner
            .db
            .sla()
            .list()
            .await?
            .into_iter()
            .filter(|r| r.violated_since.is_some())
            .collect();
        for row in open {
            let event = SlaEvent {
                name: row.name,
                selector: row.selector,
                state: SlaState::Violated,
                value: row.last_value,
                desired_min: row.desired_min,
                desired_max: row.desired_max,
                at: row.violated_since.unwrap_or_default(),
                since: row.out_since,
            };
            if let Err(e) = self.inner.publisher.publish(SLA_EVENTS, &event).await {
                tracing::warn!(error = %e, "publishing an SLA event failed");
            }
        }
        Ok(())
    }

    /// Reads the current value of every series in `names`.
    async fn read(&self, names: Vec<String>) -> Result<Vec<Option<f64>>, SlaError> {
        match &self.inner.prometheus {
            Some(prom) => {
                let prom = prom.clone();
                tokio::task::spawn_blocking(move || {
                    names
                        .iter()
                        .map(|n| prom.query(n))
                        .collect::<Result<Vec<_>, _>>()
                })
                .await
                .map_err(|e| SlaError::Prometheus(e.to_string()))?
                .map_err(SlaError::Prometheus)
            }
            None => {
                let families = self.inner.metrics.gather();
                Ok(names
                    .iter()
                    .map(|n| Selector::parse(n).ok().and_then(|s| s.value(&families)))
                    .collect())
            }
        }
    }

    /// One sampling cycle: p95 gauge, read, store, evaluate, publish transitions.
    async fn cycle(&self, buckets: &mut Vec<(f64, u64)>) -> Result<(), SlaError> {
        let m = &self.inner.metrics;
        let families = m.gather();
        let now_buckets =
            selector::histogram_buckets(&families, "meteomesh_http_request_duration_seconds");
        m.http
            .p95
            .set(selector::quantile_between(buckets, &now_buckets, 0.95).unwrap_or(0.0));
        *buckets = now_buckets;

        let slas = self.inner.db.sla().list().await?;
        let mut names: Vec<String> = CORE_SERIES.iter().map(|s| s.to_string()).collect();
        for s in &slas {
            if !names.contains(&s.selector) {
                names.push(s.selector.clone());
            }
        }
        let values = self.read(names.clone()).await?;
        let now = now_s();
        let mut evaluations = Vec::with_capacity(slas.len());
        let mut events = Vec::new();
        for row in &slas {
            let value = names
                .iter()
                .position(|n| *n == row.selector)
                .and_then(|i| values[i]);
            let (e, transition) = evaluate(row, value, now);
            m.sla.evaluations.inc();
            if e.violated {
                m.sla.violations.inc();
            }
            if let Some(state) = transition {
                events.push(SlaEvent {
                    name: row.name.clone(),
                    selector: row.selector.clone(),
                    state,
                    value,
                    desired_min: row.desired_min,
                    desired_max: row.desired_max,
                    at: now,
                    since: e.out_since,
                });
            }
            evaluations.push(e);
        }
        let samples: Vec<(String, f64)> = if self.inner.prometheus.is_some() {
            Vec::new()
        } else {
            names
                .into_iter()
                .zip(values)
                .filter_map(|(n, v)| Some((n, v?)))
                .collect()
        };
        self.inner
            .db
            .sla()
            .save_cycle(now, &samples, &evaluations)
            .await?;
        for event in events {
            match event.state {
                SlaState::Violated => {
                    tracing::warn!(sla = event.name, value = ?event.value, "SLA violated")
                }
                SlaState::Resolved => {
                    tracing::info!(sla = event.name, value = ?event.value, "SLA back in range")
                }
            }
            if let Err(e) = self.inner.publisher.publish(SLA_EVENTS, &event).await {
                tracing::warn!(error = %e, "publishing an SLA event failed");
            }
        }
        Ok(())
    }
}
