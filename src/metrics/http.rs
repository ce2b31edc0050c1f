//! HTTP: requests and their latency by route, and the p95 the SLAs watch.

use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::{LATENCY_BUCKETS, gauge, register};

pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub p95: Gauge,
}

impl HttpMetrics {
    pub(super) fn new(registry: &Registry) -> HttpMetrics {
        let http_requests = register(
            registry,
            IntCounterVec::new(
                Opts::new("http_requests_total", "HTTP requests answered."),
                &["method", "route", "status"],
            )
            .expect("valid"),
        );
        let http_duration = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "Time to answer an HTTP request.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["method", "route"],
            )
            .expect("valid"),
        );
        let http_p95 = gauge(
            registry,
            "http_request_p95_seconds",
            "95th percentile of HTTP request time over the last SLA sample interval (0 without requests).",
        );
        HttpMetrics {
            requests: http_requests,
            duration: http_duration,
            p95: http_p95,
        }
    }
}
