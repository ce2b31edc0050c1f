//! The database: operations and their time.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

use super::{LATENCY_BUCKETS, register};

pub struct DbMetrics {
    pub operations: IntCounterVec,
    pub duration: Histogram,
}

impl DbMetrics {
    pub(super) fn new(registry: &Registry) -> DbMetrics {
        let db_operations = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "db_operations_total",
                    "Database operations (one call = one or more statements), by outcome.",
                ),
                &["outcome"],
            )
            .expect("valid"),
        );
        let db_duration = register(
            registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "db_operation_duration_seconds",
                    "Time of one database operation, waiting for the connection included.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid"),
        );
        DbMetrics {
            operations: db_operations,
            duration: db_duration,
        }
    }
}
