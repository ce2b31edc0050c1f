//! Owns the life of one meteomesh instance: binds the sockets, opens storage, starts the
//! bus and the modules, serves HTTP, and runs the one shutdown path that stops them in
//! order (HTTP, modules, broker, then a WAL checkpoint) so work in flight is committed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{BrokerListeners, Bus, BusError};
use crate::config::{BusUser, Config, ProviderKind, WeatherConfig};
use crate::http;
use crate::metrics::Metrics;
use crate::modules::ModuleCtx;
use crate::modules::auth::{AuthError, AuthService};
use crate::modules::mesh::MeshError;
use crate::modules::system::SystemService;
use crate::storage::{Db, StorageError};
use crate::weather::{OpenMeteo, OpenWeatherMap, Provider};

pub mod logging;
mod modules;
pub mod supervisor;
mod tasks;

use modules::start_modules;

pub use crate::modules::Addresses;
pub use tasks::Tasks;

/// How long the modules get to commit their work and end once HTTP has drained (which
/// takes at most `http::DRAIN`). With the broker's and the runtime's share the whole
/// stop stays under 5 s, well inside systemd's `TimeoutStopSec`.
const MODULES_STOP: Duration = Duration::from_secs(2);
/// How long the broker and the bus's own clients get to stop.
const BUS_STOP: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen for HTTP on {0}: {1}")]
    HttpBind(SocketAddr, std::io::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error("not ready after {0:?}: the bus did not answer a round trip")]
    NotReady(Duration),
}

/// Every socket the app serves, bound up front so port 0 resolves before start.
pub struct Listeners {
    http: TcpListener,
    broker: Option<BrokerListeners>,
}

impl Listeners {
    /// Binds the HTTP listener and, in embedded mode, the broker's. Needs the runtime.
    pub async fn bind(config: &Config) -> Result<Listeners, AppError> {
        let http = TcpListener::bind(config.http.listen)
            .await
            .map_err(|e| AppError::HttpBind(config.http.listen, e))?;
        let broker = Bus::bind(&config.bus)?;
        Ok(Listeners { http, broker })
    }

    pub fn addresses(&self) -> Addresses {
        Addresses {
            http: self.http.local_addr().ok(),
            mqtt: self.broker.as_ref().and_then(|b| b.tcp_addr()),
            ws: self.broker.as_ref().and_then(|b| b.ws_addr()),
        }
    }
}

/// A started instance. Stop it with [`RunningApp::shutdown`] or by cancelling the token
/// it was started with and awaiting [`RunningApp::wait`].
pub struct RunningApp {
    pub addresses: Addresses,
    pub node_id: String,
    shutdown: CancellationToken,
    system: SystemService,
    http_task: JoinHandle<std::io::Result<()>>,
    tasks: Tasks,
    bus: Bus,
    db: Db,
}

impl RunningApp {
    /// Starts everything; returns once HTTP is listening and the modules are running.
    pub async fn start(
        config: &Config,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> Result<RunningApp, AppError> {
        let addresses = listeners.addresses();
        let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION")));
        let db = open_db(config, &metrics).await?;
        let node_id = db.meta().node_id().await?;
        crate::domain::time::raise_floor(db.meta().last_seen().await?);
        let auth = AuthService::new(
            db.clone(),
            &config.auth,
            &config.mesh.shared_secret,
            metrics.clone(),
        )
        .await?;
        let bus = start_bus(config, listeners.broker, &node_id, &auth, &metrics).await?;
        let ctx = ModuleCtx {
            bus: &bus,
            db: db.clone(),
            metrics: metrics.clone(),
            node_id: &node_id,
            addresses,
            shutdown: shutdown.clone(),
        };
        let mut tasks = Tasks::default();
        let (state, system) = start_modules(&ctx, config, auth, &mut tasks).await?;
        let router = http::router(state, &config.http);
        let http_task = tokio::spawn(http::serve(
            listeners.http,
            router,
            http::ConnectionLimits::from(&config.http),
            shutdown.clone(),
        ));
        tracing::info!(
            node = node_id,
            bus = ?config.bus.mode,
            db = %config.storage.path.display(),
            "meteomesh started"
        );
        Ok(RunningApp {
            addresses,
            node_id,
            shutdown,
            system,
            http_task,
            tasks,
            bus,
            db,
        })
    }

    /// Waits until a message makes the round trip through the bus (broker up, module
    /// subscriptions live). Retries quickly; fails after `timeout`.
    pub async fn ready(&self, timeout: Duration) -> Result<Duration, AppError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(AppError::NotReady(timeout));
            }
            let attempt = left.min(Duration::from_millis(500));
            if self.system.bus_connected() {
                if let Ok(rtt) = self.system.roundtrip(attempt).await {
                    return Ok(rtt);
                }
            } else {
                // Not connected yet: wait for the session instead of pinging into nothing.
                let _ = self.system.wait_connected(attempt).await;
            }
            if self.shutdown.is_cancelled() {
                return Err(AppError::NotReady(timeout));
            }
        }
    }

    /// Triggers the shutdown path and waits for it to finish.
    pub async fn shutdown(self) -> Result<(), AppError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits for the shutdown token, then stops everything in order.
    pub async fn wait(self) -> Result<(), AppError> {
        self.shutdown.cancelled().await;
        tracing::info!("shutting down");
        supervisor::stopping();
        let started = tokio::time::Instant::now();
        let http = self.http_task.await;
        let late = self
            .tasks
            .join_until(tokio::time::Instant::now() + MODULES_STOP)
            .await;
        if tokio::time::timeout(BUS_STOP, self.bus.stop())
            .await
            .is_err()
        {
            tracing::warn!("the bus did not stop in time; its sessions end with the process");
        }
        self.db.checkpoint().await?;
        let took_ms = started.elapsed().as_millis() as u64;
        if late.is_empty() {
            tracing::info!(took_ms, "stopped cleanly");
        } else {
            tracing::warn!(took_ms, aborted = ?late, "stopped, after cutting off tasks");
        }
        match http {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AppError::Http(e)),
            Err(e) => Err(AppError::Http(std::io::Error::other(e))),
        }
    }
}

/// The testable entry point: start, report readiness, serve until `shutdown`, stop.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let app = RunningApp::start(&config, listeners, shutdown.clone()).await?;
    match app.ready(Duration::from_secs(30)).await {
        Ok(rtt) => tracing::info!(
            http = %show(app.addresses.http),
            mqtt = %show(app.addresses.mqtt),
            ws = %show(app.addresses.ws),
            bus_roundtrip_ms = rtt.as_secs_f64() * 1000.0,
            "meteomesh ready"
        ),
        // Stay up: /readyz reports the problem and the bus client keeps reconnecting.
        Err(e) => tracing::warn!(error = %e, "meteomesh is serving but not ready"),
    }
    // Ready for systemd either way: the process serves, and /readyz tells the rest.
    supervisor::ready(&format!(
        "serving HTTP on {}, MQTT on {}",
        show(app.addresses.http),
        show(app.addresses.mqtt)
    ));
    let watchdog = supervisor::watchdog(app.db.clone(), shutdown);
    let result = app.wait().await;
    if let Some(w) = watchdog {
        let _ = w.await;
    }
    result
}

/// Opens the database with every operation timed into the metrics.
async fn open_db(config: &Config, metrics: &Arc<Metrics>) -> Result<Db, AppError> {
    let m = metrics.clone();
    Ok(Db::open_config(&config.storage)
        .await?
        .observed(Arc::new(move |took, ok| {
            m.db.duration.observe(took.as_secs_f64());
            m.db.operations
                .with_label_values(&[if ok { "ok" } else { "error" }])
                .inc();
        })))
}

/// Starts the bus (the embedded broker, or the link to an external one) with the
/// accounts that may log in to it.
async fn start_bus(
    config: &Config,
    broker: Option<BrokerListeners>,
    node_id: &str,
    auth: &AuthService,
    metrics: &Arc<Metrics>,
) -> Result<Bus, AppError> {
    // Peer nodes' links log in with the mesh credential, as a service account.
    let link_account: Vec<BusUser> = config
        .mesh
        .enabled
        .then(|| BusUser {
            username: config.mesh.link_username.clone(),
            password: config.mesh.link_password.clone(),
        })
        .into_iter()
        .collect();
    Ok(Bus::start(
        &config.bus,
        broker,
        node_id,
        &link_account,
        Some(Arc::new(auth.clone())),
        metrics.clone(),
    )
    .await?)
}

/// The weather provider the config names.
fn provider(config: &WeatherConfig) -> Arc<dyn Provider> {
    match config.provider {
        ProviderKind::OpenMeteo => Arc::new(OpenMeteo::new(
            &config.open_meteo_url,
            config.batch_size,
            config.open_meteo_api_key.expose(),
            config.request_timeout,
        )),
        ProviderKind::OpenWeatherMap => Arc::new(OpenWeatherMap::new(
            &config.openweathermap_url,
            config.openweathermap_api_key.expose(),
            config.request_timeout,
        )),
    }
}

/// Keeps the last wall-clock time seen in the database (every 10 minutes and at stop),
/// so a board that boots with a wrong clock still stamps tokens sensibly (see `clock`).
async fn record_seen(db: Db, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.cancelled() => true,
        };
        if crate::domain::time::is_set() {
            let now = crate::domain::time::system_now();
            if let Err(e) = db.meta().record_seen(now).await {
                tracing::warn!(error = %e, "recording the time failed");
            }
        }
        if stop {
            return;
        }
    }
}

fn show(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "off".to_owned(), |a| a.to_string())
}
