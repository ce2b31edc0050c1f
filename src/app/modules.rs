//! Owns the order in which the modules start: the system module first (readiness rides
//! on it), the notifier before the rules (so nothing raised is missed), the mesh only on
//! the embedded broker. Each module's task goes into the app's [`Tasks`] under its name.

use std::sync::Arc;

use super::{AppError, Tasks, provider, record_seen};
use crate::config::{BusMode, Config};
use crate::http::AppState;
use crate::modules::auth::AuthService;
use crate::modules::mesh::{self, MeshService};
use crate::modules::system::{self, SystemService};
use crate::modules::{ModuleCtx, board, host_metrics, notifier, poller, rules, sla, subscriptions};

/// Starts every module; returns the state the HTTP layer serves from.
pub(super) async fn start_modules(
    ctx: &ModuleCtx<'_>,
    config: &Config,
    auth: AuthService,
    tasks: &mut Tasks,
) -> Result<(AppState, SystemService), AppError> {
    let started_at = u64::try_from(crate::domain::time::system_now()).unwrap_or_default();
    let (system, system_task) = system::start(ctx, started_at).await?;
    tasks.add("system", system_task);

    let (auth_client, auth_session) = ctx.bus.publisher("auth");
    auth.attach_bus(auth_client.clone());
    tasks.spawn("auth-pruner", auth.clone().run_pruner(ctx.shutdown.clone()));
    tasks.add(
        "auth",
        auth_client.close_on_shutdown(auth_session, ctx.shutdown.clone()),
    );

    let (subscriptions, subscriptions_task) = subscriptions::start(ctx, &config.weather).await?;
    tasks.add("subscriptions", subscriptions_task);
    // The notifier subscribes before the rules can raise anything.
    let (notifier, notifier_tasks) =
        notifier::start(ctx, &config.telegram, &config.notifier).await?;
    tasks.extend("notifier", notifier_tasks);
    tasks.add("rules", rules::start(ctx, &config.weather).await?);
    let (poller, poller_task) =
        poller::start(ctx, &config.weather, provider(&config.weather)).await?;
    tasks.add("poller", poller_task);

    let data_dir = config
        .storage
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| std::path::PathBuf::from("."), |d| d.to_owned());
    tasks.spawn("clock", record_seen(ctx.db.clone(), ctx.shutdown.clone()));
    tasks.add(
        "host-metrics",
        host_metrics::start(ctx, data_dir, config.sla.sample_interval),
    );
    let (sla, sla_task) = sla::start(ctx, &config.sla);
    tasks.add("sla", sla_task);
    tasks.add("board", board::start(ctx).await?);
    let mesh = match ctx.bus.mode() {
        BusMode::Embedded => {
            let (mesh, mesh_tasks) = mesh::start(ctx, config).await?;
            tasks.extend("mesh", mesh_tasks);
            mesh
        }
        // Presence comes from the embedded broker's hooks; an external broker has none.
        BusMode::External => MeshService::unavailable(),
    };
    let state = AppState {
        db: ctx.db.clone(),
        metrics: Arc::clone(&ctx.metrics),
        system: system.clone(),
        auth,
        subscriptions,
        poller,
        notifier,
        sla,
        mesh,
        bus_mode: ctx.bus.mode(),
        ws_port: ctx.addresses.ws.map(|a| a.port()),
        request_timeout: config.http.request_timeout,
        cookie_secure: config.auth.cookie_secure,
    };
    Ok((state, system))
}
