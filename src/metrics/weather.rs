//! Polling the weather provider.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use super::register;

pub struct WeatherMetrics {
    pub provider_calls: IntCounterVec,
    pub provider_duration: HistogramVec,
    pub places_polled: IntGauge,
    pub observations: IntCounter,
    pub poll_interval: IntGauge,
    pub places_max: IntGauge,
    pub last_success: IntGaugeVec,
}

impl WeatherMetrics {
    pub(super) fn new(registry: &Registry) -> WeatherMetrics {
        let provider_calls = register(
            registry,
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
            registry,
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
            registry,
            IntGauge::new(
                "weather_places",
                "Distinct places (0.01° cells) polled per cycle.",
            )
            .expect("valid"),
        );
        let observations = register(
            registry,
            IntCounter::new(
                "weather_observations_total",
                "Observations published on the bus.",
            )
            .expect("valid"),
        );
        let poll_interval = register(
            registry,
            IntGauge::new(
                "weather_poll_interval_seconds",
                "Seconds between two fetches of each place: the configured interval, or longer when the provider's quota cannot carry every place at it.",
            )
            .expect("valid"),
        );
        let places_max = register(
            registry,
            IntGauge::new(
                "weather_places_max",
                "Places the provider's quota carries at the configured interval.",
            )
            .expect("valid"),
        );
        let last_success = register(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    "weather_last_success_timestamp_seconds",
                    "Unix time of the provider's last successful answer.",
                ),
                &["provider"],
            )
            .expect("valid"),
        );
        WeatherMetrics {
            last_success,
            provider_calls,
            provider_duration,
            places_polled,
            observations,
            poll_interval,
            places_max,
        }
    }
}
