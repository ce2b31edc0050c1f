//! Notifications: the outbox and Telegram.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::register;

pub struct NotifyMetrics {
    pub notifications: IntCounterVec,
    pub outbox_pending: IntGauge,
    pub outbox_oldest_age: prometheus::Gauge,
    pub telegram_duration: Histogram,
    pub telegram_rate_limited: IntCounter,
}

impl NotifyMetrics {
    pub(super) fn new(registry: &Registry) -> NotifyMetrics {
        let notifications = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "notifications_total",
                    "Notification outcomes by channel (telegram, mqtt) and outcome (delivered, retried, rate_limited, failed, skipped).",
                ),
                &["channel", "outcome"],
            )
            .expect("valid"),
        );
        let outbox_pending = register(
            registry,
            IntGauge::new(
                "outbox_pending",
                "Outbox rows not yet delivered (held digests included).",
            )
            .expect("valid"),
        );
        let outbox_oldest_age = register(
            registry,
            prometheus::Gauge::new(
                "outbox_oldest_pending_age_seconds",
                "Age of the oldest undelivered outbox row; 0 when the outbox is empty.",
            )
            .expect("valid"),
        );
        let telegram_duration = register(
            registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "telegram_request_duration_seconds",
                    "Time of one Telegram sendMessage request.",
                )
                .buckets(vec![
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
            )
            .expect("valid"),
        );
        let telegram_rate_limited = register(
            registry,
            IntCounter::new(
                "telegram_rate_limited_total",
                "429 Too Many Requests answers from Telegram.",
            )
            .expect("valid"),
        );
        NotifyMetrics {
            notifications,
            outbox_pending,
            outbox_oldest_age,
            telegram_duration,
            telegram_rate_limited,
        }
    }
}
