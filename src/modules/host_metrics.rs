//! Owns the host and process gauges of `/metrics`: CPU usage ratio, memory used/total,
//! disk used/total of the filesystem holding the database, load average, and this
//! process's resident memory, CPU seconds, open file descriptors and threads. Sampled
//! with sysinfo every interval, refreshing only what is exported (no process list, no
//! network, no sensors) off the async executor.
//!
//! Publishes and consumes nothing on the bus.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sysinfo::{
    CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, Pid, ProcessRefreshKind,
    ProcessesToUpdate, RefreshKind, System,
};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::modules::ModuleCtx;

pub struct HostSampler {
    system: System,
    disks: Disks,
    pid: Option<Pid>,
    data_dir: PathBuf,
    /// The process CPU time already added to the counter, in ms.
    cpu_ms_counted: u64,
}

impl HostSampler {
    pub fn new(data_dir: &Path) -> Option<HostSampler> {
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        )
        .ok()?;
        let disks =
            Disks::new_with_refreshed_list_specifics(DiskRefreshKind::nothing().with_storage())
                .ok()?;
        let data_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
        Some(HostSampler {
            system,
            disks,
            pid: sysinfo::get_current_pid().ok(),
            data_dir,
            cpu_ms_counted: 0,
        })
    }

    /// Refreshes the exported values and writes them into `m`. Blocking (reads /proc).
    pub fn sample(&mut self, m: &Metrics) {
        self.system.refresh_cpu_usage();
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        m.host
            .cpu_usage
            .set(f64::from(self.system.global_cpu_usage()) / 100.0);
        m.host.memory_used.set(self.system.used_memory() as f64);
        m.host.memory_total.set(self.system.total_memory() as f64);
        if let Ok(load) = System::load_average() {
            m.host.load.with_label_values(&["1m"]).set(load.one);
            m.host.load.with_label_values(&["5m"]).set(load.five);
            m.host.load.with_label_values(&["15m"]).set(load.fifteen);
        }
        self.disks
            .refresh_specifics(false, DiskRefreshKind::nothing().with_storage());
        // The filesystem of the data directory: the disk with the longest mount point
        // that contains it.
        if let Some(disk) = self
            .disks
            .iter()
            .filter(|d| self.data_dir.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len())
        {
            m.host.disk_total.set(disk.total_space() as f64);
            m.host
                .disk_used
                .set(disk.total_space().saturating_sub(disk.available_space()) as f64);
        }
        let Some(pid) = self.pid else { return };
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            false,
            ProcessRefreshKind::nothing()
                .with_memory()
                .with_cpu()
                .without_tasks(),
        );
        if let Some(p) = self.system.process(pid) {
            m.host.process_resident_memory.set(p.memory() as f64);
            let cpu_ms = p.accumulated_cpu_time();
            if cpu_ms > self.cpu_ms_counted {
                m.host
                    .process_cpu_seconds
                    .inc_by((cpu_ms - self.cpu_ms_counted) as f64 / 1000.0);
                self.cpu_ms_counted = cpu_ms;
            }
        }
        // Counted from /proc directly: sysinfo would list every thread as a process.
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            m.host.process_open_fds.set(dir.count() as i64);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            m.host.process_threads.set(dir.count() as i64);
        }
    }
}

/// Samples every `interval` until `shutdown`.
pub fn start(ctx: &ModuleCtx<'_>, data_dir: PathBuf, interval: Duration) -> JoinHandle<()> {
    let (metrics, shutdown) = (ctx.metrics.clone(), ctx.shutdown.clone());
    tokio::spawn(async move {
        let Some(sampler) = tokio::task::spawn_blocking(move || HostSampler::new(&data_dir))
            .await
            .ok()
            .flatten()
        else {
            tracing::warn!("host metrics unavailable on this system");
            return;
        };
        let mut sampler = Some(sampler);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let (Some(mut s), m) = (sampler.take(), metrics.clone()) else {
                return;
            };
            sampler = tokio::task::spawn_blocking(move || {
                s.sample(&m);
                s
            })
            .await
            .ok();
        }
    })
}
