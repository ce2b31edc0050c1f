//! Quota benchmark on a simulated clock (`cargo bench --bench bench_quota`, instant): how
//! many places each provider's free tier carries at the default settings, and what a day
//! of polling 10, 100, 1,000 and 10,000 places costs — calls made, the busiest minute,
//! hour, day (and 31 days for OpenWeatherMap) against the limits, and how often each
//! place is then fetched. The same pacer and plan as the poller (`weather::quota`).

use std::time::Duration;

use meteomesh::config::{Config, ProviderKind};
use meteomesh::weather::quota::{self, DAY, Simulation};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    for provider in [ProviderKind::OpenMeteo, ProviderKind::OpenWeatherMap] {
        let mut config = Config::default().weather;
        config.provider = provider;
        let plan = quota::plan(&config);
        let batch = match provider {
            ProviderKind::OpenMeteo => config.batch_size,
            ProviderKind::OpenWeatherMap => 1,
        };
        let interval = config.poll_interval.max(plan.update_interval);
        let length = plan
            .limits
            .iter()
            .map(|l| l.window)
            .max()
            .unwrap_or(DAY)
            .max(DAY);
        let fit = plan.places_at(interval, 1.0, batch as f64);
        println!(
            "{} free tier, every {}: {fit} places fit; simulated {} days",
            provider.as_str(),
            humantime::format_duration(interval),
            length.as_secs() / 86_400
        );
        println!(
            "| places | calls/day | busiest window / limit | each place every | full cycles |"
        );
        println!("|---|---|---|---|---|");
        for places in [10, 100, 1_000, 10_000] {
            let sim = Simulation::run(&plan, places, batch, 1.0, interval, length);
            let days = length.as_secs_f64() / 86_400.0;
            let per_day = sim.calls.iter().map(|c| c.1).sum::<f64>() / days;
            let windows: Vec<String> = plan
                .limits
                .iter()
                .map(|l| {
                    let busiest = sim.busiest(l.window);
                    assert!(busiest <= l.calls, "{places} places broke {l:?}");
                    format!("{busiest:.0}/{:.0}", l.calls)
                })
                .collect();
            let every = Duration::from_secs(
                plan.feasible_interval(interval, places as f64, batch as f64)
                    .as_secs(),
            );
            println!(
                "| {places} | {per_day:.0} | {} | {} | {} |",
                windows.join(", "),
                humantime::format_duration(every),
                sim.cycles
            );
        }
        println!();
    }
}
