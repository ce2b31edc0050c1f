//! Subscriptions and the alerts the rules raise and clear.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

use super::{LATENCY_BUCKETS, register};

pub struct AlertMetrics {
    pub raised: IntCounter,
    pub cleared: IntCounter,
    pub evaluation: Histogram,
    pub subscriptions: IntGauge,
}

impl AlertMetrics {
    pub(super) fn new(registry: &Registry) -> AlertMetrics {
        let alerts_raised = register(
            registry,
            IntCounter::new("alerts_raised_total", "Alerts raised.").expect("valid"),
        );
        let alerts_cleared = register(
            registry,
            IntCounter::new("alerts_cleared_total", "Alerts cleared.").expect("valid"),
        );
        let rules_evaluation = register(
            registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "rules_evaluation_duration_seconds",
                    "Time to evaluate the subscriptions of one place against one observation (rules only, without storage and bus).",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid"),
        );
        let subscriptions = register(
            registry,
            IntGauge::new("subscriptions", "Weather subscriptions, enabled or not.")
                .expect("valid"),
        );
        AlertMetrics {
            raised: alerts_raised,
            cleared: alerts_cleared,
            evaluation: rules_evaluation,
            subscriptions,
        }
    }
}
