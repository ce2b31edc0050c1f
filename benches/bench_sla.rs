//! SLA sampling benchmark (`cargo bench --bench bench_sla`; `scripts/bench-sla.sh` runs it
//! in release mode):
//! (a) CPU and wall time per sample cycle with 50 SLAs (read every series, store the
//!     samples, evaluate, write violations) — the sampler's own histogram plus process
//!     CPU time over the run;
//! (b) database growth per series per day: one day of 15 s samples for 20 series
//!     written through the same storage code, file size measured after a checkpoint.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use meteomesh::storage::Db;
use meteomesh::storage::sla as store;
use serde_json::json;

const SLAS: usize = 50;

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 Hz on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn metric(text: &str, name: &str) -> f64 {
    metric_value(text, name).unwrap_or(0.0)
}

async fn bench_sla_sampling() {
    let t = TestApp::start_with(|c| {
        c.sla.sample_interval = Duration::from_secs(1);
        c.sla.forecast_horizon = Duration::from_secs(10);
    })
    .await;
    let (admin, _) = register(t.http, "root", "bench-password-1").await;
    let selectors = [
        "meteomesh_process_resident_memory_bytes",
        "meteomesh_host_cpu_usage_ratio",
        "meteomesh_host_memory_used_bytes",
        "meteomesh_host_load_average{period=\"1m\"}",
        "meteomesh_http_request_p95_seconds",
        "meteomesh_outbox_pending",
        "meteomesh_db_operations_total{outcome=\"ok\"}",
        "meteomesh_bus_connections",
        "meteomesh_users",
        "meteomesh_http_request_duration_seconds_count",
    ];
    for i in 0..SLAS {
        let r = api(
            t.http,
            "POST",
            "/api/v1/sla",
            Some(&admin),
            &json!({"name": format!("sla{i}"), "selector": selectors[i % selectors.len()],
                    "desired_max": if i % 2 == 0 { 1e15 } else { 0.0 }})
            .to_string(),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let before = get(t.http, "/metrics").await.body;
    let (count0, sum0) = (
        metric(&before, "meteomesh_sla_sample_duration_seconds_count"),
        metric(&before, "meteomesh_sla_sample_duration_seconds_sum"),
    );
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let after = get(t.http, "/metrics").await.body;
    let cycles = metric(&after, "meteomesh_sla_sample_duration_seconds_count") - count0;
    let busy = metric(&after, "meteomesh_sla_sample_duration_seconds_sum") - sum0;
    println!(
        "BENCH sampling with {SLAS} SLAs (10 distinct series + 4 core): {cycles} cycles in {wall:.1} s; cycle wall time {:.2} ms on average; whole process CPU {:.2} ms per cycle (sampler, host metrics, HTTP and broker idle work together) = {:.3} % of one core at a 15 s interval",
        busy / cycles * 1000.0,
        cpu / cycles * 1000.0,
        cpu / cycles / 15.0 * 100.0
    );
    t.app.shutdown().await.unwrap();

    // (b) one day of samples for 20 series.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("growth.db");
    let db = Db::open(&path, Duration::from_secs(5)).await.unwrap();
    with_connection(db.path(), |c| {
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    })
    .unwrap();
    let empty = std::fs::metadata(&path).unwrap().len();
    let series: Vec<String> = (0..20)
        .map(|i| format!("meteomesh_bench_series_{i}{{route=\"/api/v1/thing\"}}"))
        .collect();
    let day = 24 * 3600 / 15;
    with_connection(db.path(), move |c| {
        for k in 0..day {
            let samples: Vec<(String, f64)> = series
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), (k as f64 * 0.37 + i as f64).sin() * 1e6))
                .collect();
            store::save_cycle(c, 1_795_363_200 + k * 15, &samples, &[])?;
        }
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    })
    .unwrap();
    let full = std::fs::metadata(&path).unwrap().len();
    let per_series = (full - empty) as f64 / 20.0;
    println!(
        "BENCH history growth: {day} samples per series per day (15 s) = {:.0} KiB per series per day ({:.1} bytes per sample); {:.1} MiB per series at the default 7-day retention",
        per_series / 1024.0,
        per_series / day as f64,
        per_series * 7.0 / 1024.0 / 1024.0
    );
}

fn main() {
    common::run_benchmark(async {
        bench_sla_sampling().await;
    });
}
