//! Accounts and logins.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

use super::register;

pub struct AuthMetrics {
    pub users: IntGauge,
    pub logins: IntCounterVec,
    pub duration: HistogramVec,
}

impl AuthMetrics {
    pub(super) fn new(registry: &Registry) -> AuthMetrics {
        let users = register(
            registry,
            IntGauge::new("users", "Registered user accounts.").expect("valid"),
        );
        let logins = register(
            registry,
            IntCounterVec::new(
                Opts::new("logins_total", "Password logins, by channel and outcome."),
                &["channel", "outcome"],
            )
            .expect("valid"),
        );
        let auth_duration = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "auth_duration_seconds",
                    "Time to check a password login, waiting for a hashing slot included.",
                )
                .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                &["channel"],
            )
            .expect("valid"),
        );
        AuthMetrics {
            users,
            logins,
            duration: auth_duration,
        }
    }
}
