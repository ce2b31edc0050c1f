//! Owns the Prometheus registry of one app instance and the metrics the foundation
//! records: build info, uptime, HTTP requests and latency by route, and embedded-broker
//! traffic. Rendered as Prometheus text at `/metrics`.
//!
//! One registry per app (not a global) so several apps in one test process stay apart.

use std::time::Instant;

use prometheus::{
    Counter, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Request latency buckets in seconds: a Pi answers most requests in a few ms.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

pub struct Metrics {
    registry: Registry,
    started: Instant,
    uptime: prometheus::Gauge,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub bus_connections: IntGauge,
    pub bus_connects: IntCounter,
    pub bus_messages_received: IntCounter,
    pub bus_messages_delivered: IntCounter,
    pub bus_messages_dropped: IntCounterVec,
    pub bus_roundtrip: Histogram,
    pub bus_acl_denied: IntCounterVec,
    pub bus_connections_refused: IntCounterVec,
    pub bus_client_retained_messages: IntGauge,
    pub bus_client_retained_bytes: IntGauge,
    pub users: IntGauge,
    pub logins: IntCounterVec,
    pub auth_duration: HistogramVec,
    pub provider_calls: IntCounterVec,
    pub provider_duration: HistogramVec,
    pub places_polled: IntGauge,
    pub observations: IntCounter,
    pub alerts_raised: IntCounter,
    pub alerts_cleared: IntCounter,
    pub rules_evaluation: Histogram,
    pub subscriptions: IntGauge,
    pub notifications: IntCounterVec,
    pub outbox_pending: IntGauge,
    pub outbox_oldest_age: prometheus::Gauge,
    pub telegram_duration: Histogram,
    pub telegram_rate_limited: IntCounter,
    pub host_cpu_usage: Gauge,
    pub host_memory_used: Gauge,
    pub host_memory_total: Gauge,
    pub host_disk_used: Gauge,
    pub host_disk_total: Gauge,
    pub host_load: GaugeVec,
    pub process_resident_memory: Gauge,
    pub process_cpu_seconds: Counter,
    pub process_open_fds: IntGauge,
    pub process_threads: IntGauge,
    pub db_operations: IntCounterVec,
    pub db_duration: Histogram,
    pub http_p95: Gauge,
    pub sla_evaluations: IntCounter,
    pub sla_violations: IntCounter,
    pub sla_sample_duration: Histogram,
    pub mesh_envelopes: IntCounterVec,
    pub mesh_messages: IntCounterVec,
    pub mesh_local_deliveries: IntCounter,
    pub mesh_links_up: IntGauge,
    pub mesh_nodes: IntGauge,
    pub mesh_link_rtt: GaugeVec,
    pub mesh_queued: IntGauge,
    pub mesh_users_online: IntGauge,
    pub board_events: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
    // Names are fixed literals in this file; a duplicate is a programming error caught
    // by the unit test below.
    registry
        .register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

impl Metrics {
    pub fn new(version: &str) -> Metrics {
        let registry = Registry::new_custom(Some("meteomesh".into()), None)
            .expect("static registry prefix is valid");
        let build_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("build_info", "Always 1; labels carry the build."),
                &["version"],
            )
            .expect("valid"),
        );
        build_info.with_label_values(&[version]).set(1);
        let uptime = register(
            &registry,
            prometheus::Gauge::new("uptime_seconds", "Seconds since this process started.")
                .expect("valid"),
        );
        let http_requests = register(
            &registry,
            IntCounterVec::new(
                Opts::new("http_requests_total", "HTTP requests answered."),
                &["method", "route", "status"],
            )
            .expect("valid"),
        );
        let http_duration = register(
            &registry,
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
        let bus_connections = register(
            &registry,
            IntGauge::new(
                "bus_connections",
                "MQTT clients connected to the embedded broker now, meteomesh's own sessions included.",
            )
            .expect("valid"),
        );
        let bus_connects = register(
            &registry,
            IntCounter::new(
                "bus_connects_total",
                "MQTT sessions the embedded broker accepted.",
            )
            .expect("valid"),
        );
        let bus_messages_received = register(
            &registry,
            IntCounter::new(
                "bus_messages_received_total",
                "PUBLISH packets the embedded broker received from clients.",
            )
            .expect("valid"),
        );
        let bus_messages_delivered = register(
            &registry,
            IntCounter::new(
                "bus_messages_delivered_total",
                "PUBLISH packets the embedded broker sent to subscribers.",
            )
            .expect("valid"),
        );
        let bus_messages_dropped = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "bus_messages_dropped_total",
                    "Messages the embedded broker dropped, by reason.",
                ),
                &["reason"],
            )
            .expect("valid"),
        );
        let bus_roundtrip = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "bus_roundtrip_seconds",
                    "Ping to pong time through the bus, as measured by the bus check.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid"),
        );
        let bus_acl_denied = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "bus_acl_denied_total",
                    "Subscriptions and publishes the embedded broker refused by topic ACL.",
                ),
                &["action"],
            )
            .expect("valid"),
        );
        let bus_connections_refused = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "bus_connections_refused_total",
                    "Connections the embedded broker refused or closed before a session, by \
                     reason (will, client_id, sessions; connect_timeout, too_many_pending).",
                ),
                &["reason"],
            )
            .expect("valid"),
        );
        let bus_client_retained_messages = register(
            &registry,
            IntGauge::new(
                "bus_client_retained_messages",
                "Retained messages service accounts keep on the embedded broker (budget: \
                 bus.max_retained_messages).",
            )
            .expect("valid"),
        );
        let bus_client_retained_bytes = register(
            &registry,
            IntGauge::new(
                "bus_client_retained_bytes",
                "Their payload bytes (budget: bus.max_retained_bytes).",
            )
            .expect("valid"),
        );
        let users = register(
            &registry,
            IntGauge::new("users", "Registered user accounts.").expect("valid"),
        );
        let logins = register(
            &registry,
            IntCounterVec::new(
                Opts::new("logins_total", "Password logins, by channel and outcome."),
                &["channel", "outcome"],
            )
            .expect("valid"),
        );
        let auth_duration = register(
            &registry,
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
        let provider_calls = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "weather_provider_calls_total",
                    "Requests to the weather provider, by outcome.",
                ),
                &["provider", "outcome"],
            )
            .expect("valid"),
        );
        let provider_duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "weather_provider_request_duration_seconds",
                    "Time for one weather provider request.",
                )
                .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                &["provider"],
            )
            .expect("valid"),
        );
        let places_polled = register(
            &registry,
            IntGauge::new(
                "weather_places",
                "Distinct places (0.01° cells) polled per cycle.",
            )
            .expect("valid"),
        );
        let observations = register(
            &registry,
            IntCounter::new(
                "weather_observations_total",
                "Observations published on the bus.",
            )
            .expect("valid"),
        );
        let alerts_raised = register(
            &registry,
            IntCounter::new("alerts_raised_total", "Alerts raised.").expect("valid"),
        );
        let alerts_cleared = register(
            &registry,
            IntCounter::new("alerts_cleared_total", "Alerts cleared.").expect("valid"),
        );
        let rules_evaluation = register(
            &registry,
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
            &registry,
            IntGauge::new("subscriptions", "Weather subscriptions, enabled or not.")
                .expect("valid"),
        );
        let notifications = register(
            &registry,
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
            &registry,
            IntGauge::new(
                "outbox_pending",
                "Outbox rows not yet delivered (held digests included).",
            )
            .expect("valid"),
        );
        let outbox_oldest_age = register(
            &registry,
            prometheus::Gauge::new(
                "outbox_oldest_pending_age_seconds",
                "Age of the oldest undelivered outbox row; 0 when the outbox is empty.",
            )
            .expect("valid"),
        );
        let telegram_duration = register(
            &registry,
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
            &registry,
            IntCounter::new(
                "telegram_rate_limited_total",
                "429 Too Many Requests answers from Telegram.",
            )
            .expect("valid"),
        );
        let gauge =
            |name: &str, help: &str| register(&registry, Gauge::new(name, help).expect("valid"));
        let host_cpu_usage = gauge(
            "host_cpu_usage_ratio",
            "Share of all CPUs busy since the previous sample (0-1).",
        );
        let host_memory_used = gauge("host_memory_used_bytes", "Memory in use on the host.");
        let host_memory_total = gauge("host_memory_total_bytes", "Memory of the host.");
        let host_disk_used = gauge(
            "host_disk_used_bytes",
            "Used space of the filesystem holding the database.",
        );
        let host_disk_total = gauge(
            "host_disk_total_bytes",
            "Size of the filesystem holding the database.",
        );
        let host_load = register(
            &registry,
            GaugeVec::new(
                Opts::new("host_load_average", "Load average over the period."),
                &["period"],
            )
            .expect("valid"),
        );
        let process_resident_memory = gauge(
            "process_resident_memory_bytes",
            "Resident memory of this process.",
        );
        let process_cpu_seconds = register(
            &registry,
            Counter::new(
                "process_cpu_seconds_total",
                "CPU time this process has used (user + system).",
            )
            .expect("valid"),
        );
        let process_open_fds = register(
            &registry,
            IntGauge::new(
                "process_open_fds",
                "File descriptors this process holds open.",
            )
            .expect("valid"),
        );
        let process_threads = register(
            &registry,
            IntGauge::new("process_threads", "Threads of this process.").expect("valid"),
        );
        let db_operations = register(
            &registry,
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
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "db_operation_duration_seconds",
                    "Time of one database operation, waiting for the connection included.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid"),
        );
        let http_p95 = gauge(
            "http_request_p95_seconds",
            "95th percentile of HTTP request time over the last SLA sample interval (0 without requests).",
        );
        let sla_evaluations = register(
            &registry,
            IntCounter::new(
                "sla_evaluations_total",
                "SLA evaluations (one per SLA per interval).",
            )
            .expect("valid"),
        );
        let sla_violations = register(
            &registry,
            IntCounter::new(
                "sla_violations_total",
                "SLA evaluations that found the objective violated.",
            )
            .expect("valid"),
        );
        let sla_sample_duration = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "sla_sample_duration_seconds",
                    "Time of one sampling cycle: read every referenced series, store, evaluate.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid"),
        );
        let mesh_envelopes = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "mesh_envelopes_total",
                    "Envelopes between nodes by outcome (received, sent incl. forwarded, duplicate and ttl_exceeded are dropped) and tag (msg, ack, alert, presence, adverts, ping, pong).",
                ),
                &["outcome", "tag"],
            )
            .expect("valid"),
        );
        let mesh_messages = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "mesh_messages_total",
                    "User messages accepted by this node, by mode.",
                ),
                &["mode"],
            )
            .expect("valid"),
        );
        let mesh_local_deliveries = register(
            &registry,
            IntCounter::new(
                "mesh_local_deliveries_total",
                "Messages handed to users connected to this node.",
            )
            .expect("valid"),
        );
        let mesh_links_up = register(
            &registry,
            IntGauge::new("mesh_links_up", "Links to peer nodes that are up.").expect("valid"),
        );
        let mesh_nodes = register(
            &registry,
            IntGauge::new("mesh_nodes", "Nodes in the directory, this one included.")
                .expect("valid"),
        );
        let mesh_link_rtt = register(
            &registry,
            GaugeVec::new(
                Opts::new(
                    "mesh_link_rtt_seconds",
                    "Last measured round trip to a peer node.",
                ),
                &["peer"],
            )
            .expect("valid"),
        );
        let mesh_queued = register(
            &registry,
            IntGauge::new(
                "mesh_queued_messages",
                "Messages kept for recipients who have not acknowledged them.",
            )
            .expect("valid"),
        );
        let mesh_users_online = register(
            &registry,
            IntGauge::new("mesh_users_online", "Users online anywhere in the mesh.")
                .expect("valid"),
        );
        let board_events = register(
            &registry,
            IntCounter::new(
                "board_events_total",
                "Whiteboard events applied (points, clears, users coming and going).",
            )
            .expect("valid"),
        );
        Metrics {
            board_events,
            mesh_envelopes,
            mesh_messages,
            mesh_local_deliveries,
            mesh_links_up,
            mesh_nodes,
            mesh_link_rtt,
            mesh_queued,
            mesh_users_online,
            registry,
            started: Instant::now(),
            uptime,
            http_requests,
            http_duration,
            bus_connections,
            bus_connects,
            bus_messages_received,
            bus_messages_delivered,
            bus_messages_dropped,
            bus_roundtrip,
            bus_acl_denied,
            bus_connections_refused,
            bus_client_retained_messages,
            bus_client_retained_bytes,
            users,
            logins,
            auth_duration,
            provider_calls,
            provider_duration,
            places_polled,
            observations,
            alerts_raised,
            alerts_cleared,
            rules_evaluation,
            subscriptions,
            notifications,
            outbox_pending,
            outbox_oldest_age,
            telegram_duration,
            telegram_rate_limited,
            host_cpu_usage,
            host_memory_used,
            host_memory_total,
            host_disk_used,
            host_disk_total,
            host_load,
            process_resident_memory,
            process_cpu_seconds,
            process_open_fds,
            process_threads,
            db_operations,
            db_duration,
            http_p95,
            sla_evaluations,
            sla_violations,
            sla_sample_duration,
        }
    }

    /// Every metric family now, for the SLA sampler.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        self.registry.gather()
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        let mut out = Vec::with_capacity(4096);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_prefix_and_build_info() {
        let m = Metrics::new("1.2.3");
        m.http_requests
            .with_label_values(&["GET", "/healthz", "200"])
            .inc();
        let text = m.render();
        assert!(text.contains("meteomesh_build_info{version=\"1.2.3\"} 1"));
        assert!(text.contains("meteomesh_uptime_seconds"));
        assert!(text.contains(
            "meteomesh_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
        ));
    }
}
