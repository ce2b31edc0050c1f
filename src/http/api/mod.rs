//! The JSON API under `/api/v1`, one file per resource (accounts, notifications, SLAs,
//! weather, the mesh, the bus check) plus the operational endpoints (`/healthz`,
//! `/readyz`, `/metrics`). Errors map to statuses in `http::error`, the one map.

pub mod accounts;
pub mod bus;
pub mod mesh;
pub mod notifications;
pub mod ops;
pub mod sla;
pub mod weather;
