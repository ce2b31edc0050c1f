//! Owns the process's log output: one stderr layer with the operator's filter, rmqtt's
//! chatter held at warn, and the HTTP client's request dumps (which carry secrets in
//! URLs) cut off above info whatever the filter says.
//!
//! Filters are target lists (`info`, `meteomesh=debug,info`): tracing's `Targets`, not
//! `EnvFilter`, whose span and field matching needs a regex engine in the binary.

use tracing_subscriber::filter::Targets;

/// Parses a filter such as `info` or `meteomesh=debug,rmqtt=warn,info`.
fn parse_filter(filter: &str) -> Result<Targets, String> {
    filter.parse::<Targets>().map_err(|e| e.to_string())
}

/// Installs the subscriber; `level` is `log.level` (`RUST_LOG` wins when set and valid).
pub fn init(level: &str) {
    use tracing_subscriber::filter::filter_fn;
    use tracing_subscriber::layer::{Layer, SubscriberExt};
    use tracing_subscriber::util::SubscriberInitExt;
    // rmqtt logs every client hiccup at info; keep its chatter at warn unless asked.
    let configured = format!("rmqtt=warn,rmqtt_net=warn,{level}");
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| parse_filter(&f).ok())
        .or_else(|| parse_filter(&configured).ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    // The HTTP client logs request URLs (and hex dumps of them) at debug and trace; those
    // URLs carry secrets (the Telegram bot token is in the path, the OpenWeatherMap key
    // in the query), so its chatter stops at info whatever the filter says.
    let no_secrets =
        filter_fn(|m| !(m.target().starts_with("ureq") && *m.level() > tracing::Level::INFO));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter)
        .with_filter(no_secrets);
    tracing_subscriber::registry().with(layer).init();
}
