//! Owns talking to the service manager through systemd's notify socket (`$NOTIFY_SOCKET`):
//! `READY=1` once the app is ready (for `Type=notify`), `STOPPING=1` when the shutdown
//! path starts, and watchdog pings while the database answers (for `WatchdogSec=`).
//! Without systemd every call is a no-op. Publishes and consumes nothing on the bus.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::storage::Db;

fn send(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "cannot notify the service manager");
    }
}

/// Tells systemd the service is up, with a one-line status.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Pings the watchdog at half its interval for as long as the database answers, so a
/// wedged process (runtime or storage) is restarted by systemd. `None` when systemd set
/// no watchdog.
pub fn watchdog(db: Db, shutdown: CancellationToken) -> Option<JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()?;
    let every = (interval / 2).max(Duration::from_millis(100));
    tracing::info!(interval = ?interval, "systemd watchdog on");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            match tokio::time::timeout(every, db.ping()).await {
                Ok(Ok(())) => send(&[NotifyState::Watchdog]),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "database check failed; not pinging the watchdog")
                }
                Err(_) => tracing::warn!("database check timed out; not pinging the watchdog"),
            }
        }
    }))
}
