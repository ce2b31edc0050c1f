//! Owns the process's log output: one stderr layer with the operator's filter, rmqtt's
//! chatter held at warn, and the HTTP client's request dumps (which carry secrets in
//! URLs) cut off above info whatever the filter says.

/// Installs the subscriber; `level` is `log.level` (`RUST_LOG` wins when set).
pub fn init(level: &str) {
    use tracing_subscriber::filter::{EnvFilter, filter_fn};
    use tracing_subscriber::layer::{Layer, SubscriberExt};
    use tracing_subscriber::util::SubscriberInitExt;
    // rmqtt logs every client hiccup at info; keep its chatter at warn unless asked.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("rmqtt=warn,rmqtt_net=warn,{level}")));
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
