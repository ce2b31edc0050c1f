//! Owns the Prometheus registry of one app instance and every metric meteomesh records,
//! one family struct per area (one file each): build info and uptime here; HTTP, the
//! bus, auth, weather, alerts, notifications, the host, the database, SLAs, the mesh
//! and the whiteboards. Rendered as Prometheus text at `/metrics`.
//!
//! One registry per app (not a global) so several apps in one test process stay apart.

use std::time::Instant;

use prometheus::{Encoder, Gauge, IntGaugeVec, Opts, Registry, TextEncoder};

mod alerts;
mod auth;
mod board;
mod bus;
mod db;
mod host;
mod http;
mod mesh;
mod notify;
mod sla;
mod weather;

pub use alerts::AlertMetrics;
pub use auth::AuthMetrics;
pub use board::BoardMetrics;
pub use bus::BusMetrics;
pub use db::DbMetrics;
pub use host::HostMetrics;
pub use http::HttpMetrics;
pub use mesh::MeshMetrics;
pub use notify::NotifyMetrics;
pub use sla::SlaMetrics;
pub use weather::WeatherMetrics;

/// Request latency buckets in seconds: a Pi answers most requests in a few ms.
pub(crate) const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

pub struct Metrics {
    registry: Registry,
    started: Instant,
    uptime: Gauge,
    pub http: HttpMetrics,
    pub bus: BusMetrics,
    pub auth: AuthMetrics,
    pub weather: WeatherMetrics,
    pub alerts: AlertMetrics,
    pub notify: NotifyMetrics,
    pub host: HostMetrics,
    pub db: DbMetrics,
    pub sla: SlaMetrics,
    pub mesh: MeshMetrics,
    pub board: BoardMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

pub(crate) fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    m: M,
) -> M {
    // Names are fixed literals in this file; a duplicate is a programming error caught
    // by the unit test below.
    registry
        .register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

/// A gauge registered under `name`.
pub(crate) fn gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    register(registry, Gauge::new(name, help).expect("valid"))
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
            Gauge::new("uptime_seconds", "Seconds since this process started.").expect("valid"),
        );
        Metrics {
            http: HttpMetrics::new(&registry),
            bus: BusMetrics::new(&registry),
            auth: AuthMetrics::new(&registry),
            weather: WeatherMetrics::new(&registry),
            alerts: AlertMetrics::new(&registry),
            notify: NotifyMetrics::new(&registry),
            host: HostMetrics::new(&registry),
            db: DbMetrics::new(&registry),
            sla: SlaMetrics::new(&registry),
            mesh: MeshMetrics::new(&registry),
            board: BoardMetrics::new(&registry),
            registry,
            started: Instant::now(),
            uptime,
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
        m.http
            .requests
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
