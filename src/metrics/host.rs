//! The host and this process, sampled by the host_metrics module.

use prometheus::{Counter, Gauge, GaugeVec, IntGauge, Opts, Registry};

use super::{gauge, register};

pub struct HostMetrics {
    pub cpu_usage: Gauge,
    pub memory_used: Gauge,
    pub memory_total: Gauge,
    pub disk_used: Gauge,
    pub disk_total: Gauge,
    pub load: GaugeVec,
    pub process_resident_memory: Gauge,
    pub process_cpu_seconds: Counter,
    pub process_open_fds: IntGauge,
    pub process_threads: IntGauge,
}

impl HostMetrics {
    pub(super) fn new(registry: &Registry) -> HostMetrics {
        let host_cpu_usage = gauge(
            registry,
            "host_cpu_usage_ratio",
            "Share of all CPUs busy since the previous sample (0-1).",
        );
        let host_memory_used = gauge(
            registry,
            "host_memory_used_bytes",
            "Memory in use on the host.",
        );
        let host_memory_total = gauge(registry, "host_memory_total_bytes", "Memory of the host.");
        let host_disk_used = gauge(
            registry,
            "host_disk_used_bytes",
            "Used space of the filesystem holding the database.",
        );
        let host_disk_total = gauge(
            registry,
            "host_disk_total_bytes",
            "Size of the filesystem holding the database.",
        );
        let host_load = register(
            registry,
            GaugeVec::new(
                Opts::new("host_load_average", "Load average over the period."),
                &["period"],
            )
            .expect("valid"),
        );
        let process_resident_memory = gauge(
            registry,
            "process_resident_memory_bytes",
            "Resident memory of this process.",
        );
        let process_cpu_seconds = register(
            registry,
            Counter::new(
                "process_cpu_seconds_total",
                "CPU time this process has used (user + system).",
            )
            .expect("valid"),
        );
        let process_open_fds = register(
            registry,
            IntGauge::new(
                "process_open_fds",
                "File descriptors this process holds open.",
            )
            .expect("valid"),
        );
        let process_threads = register(
            registry,
            IntGauge::new("process_threads", "Threads of this process.").expect("valid"),
        );
        HostMetrics {
            cpu_usage: host_cpu_usage,
            memory_used: host_memory_used,
            memory_total: host_memory_total,
            disk_used: host_disk_used,
            disk_total: host_disk_total,
            load: host_load,
            process_resident_memory,
            process_cpu_seconds,
            process_open_fds,
            process_threads,
        }
    }
}
