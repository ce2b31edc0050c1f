//! The behaviour of meteomesh, one module per capability. Each module owns a background
//! loop (`run`) and a small service API for `http/`; modules affect each other only
//! through typed messages on the bus.

pub mod auth;
pub(crate) mod board;
pub(crate) mod host_metrics;
pub(crate) mod mesh;
pub mod notifier;
pub(crate) mod poller;
pub(crate) mod rules;
pub(crate) mod sla;
pub(crate) mod subscriptions;
pub(crate) mod system;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::metrics::Metrics;
use crate::storage::Db;

/// What every module starts from (with its own config section): the bus, the
/// database, the metrics, the node's identity and addresses, and the stop signal each
/// module's loop watches.
pub struct ModuleCtx<'a> {
    pub bus: &'a Bus,
    pub db: Db,
    pub metrics: Arc<Metrics>,
    pub node_id: &'a str,
    pub addresses: Addresses,
    pub shutdown: CancellationToken,
}

/// The addresses the app bound (`None` for a disabled listener), for modules that
/// advertise where they can be reached (the mesh).
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub http: Option<SocketAddr>,
    pub mqtt: Option<SocketAddr>,
    pub ws: Option<SocketAddr>,
}
