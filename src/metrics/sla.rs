//! SLA evaluation and sampling.

use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};

use super::{LATENCY_BUCKETS, register};

pub struct SlaMetrics {
    pub evaluations: IntCounter,
    pub violations: IntCounter,
    pub sample_duration: Histogram,
}

impl SlaMetrics {
    pub(super) fn new(registry: &Registry) -> SlaMetrics {
        let sla_evaluations = register(
            registry,
            IntCounter::new(
                "sla_evaluations_total",
                "SLA evaluations (one per SLA per interval).",
            )
            .expect("valid"),
        );
        let sla_violations = register(
            registry,
            IntCounter::new(
                "sla_violations_total",
                "SLA evaluations that found the objective violated.",
            )
            .expect("valid"),
        );
        let sla_sample_duration = register(
            registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "sla_sample_duration_seconds",
                    "Time of one sampling cycle: read every referenced series, store, evaluate.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid"),
        );
        SlaMetrics {
            evaluations: sla_evaluations,
            violations: sla_violations,
            sample_duration: sla_sample_duration,
        }
    }
}
