//! Owns the HTTP gateway: one listener for the JSON API (`/api/v1/...`), the web pages
//! and the ops endpoints; request metrics and timeouts; the 404/405 answers in the API's
//! error shape. Handlers call module services; they never touch SQL.

mod api;
pub mod error;
mod extract;
mod serve;
mod web;

pub use serve::{ConnectionLimits, serve};

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};

use crate::config::{BusMode, HttpConfig};
use crate::metrics::Metrics;
use crate::modules::auth::AuthService;
use crate::modules::mesh::MeshService;
use crate::modules::notifier::NotifierService;
use crate::modules::poller::PollerHandle;
use crate::modules::sla::SlaService;
use crate::modules::subscriptions::SubscriptionService;
use crate::modules::system::SystemService;
use crate::storage::Db;
use api::{accounts, mesh, notifications, ops, sla, weather};
use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub metrics: Arc<Metrics>,
    pub system: SystemService,
    pub auth: AuthService,
    pub subscriptions: SubscriptionService,
    pub poller: PollerHandle,
    pub notifier: NotifierService,
    pub sla: SlaService,
    pub mesh: MeshService,
    pub bus_mode: BusMode,
    /// The broker's WebSocket port, for the whiteboard page (`None` when off).
    pub ws_port: Option<u16>,
    pub request_timeout: Duration,
    /// Mark session cookies `Secure` (a TLS proxy is in front).
    pub cookie_secure: bool,
}

pub fn router(state: AppState, cfg: &HttpConfig) -> Router {
    Router::new()
        .route("/", get(web::login::root))
        .route(
            "/login",
            get(web::login::login_page).post(web::login::login_submit),
        )
        .route(
            "/register",
            get(web::register::register_page).post(web::register::register_submit),
        )
        .route(
            "/account",
            get(web::account::account_page).post(web::account::account_submit),
        )
        .route("/account/notifications", post(web::notify::submit))
        .route("/sla", get(web::sla::sla_page).post(web::sla::sla_submit))
        .route("/logout", post(web::account::logout_submit))
        .route(
            "/alerts",
            get(web::alerts::alerts_page).post(web::alerts::alerts_submit),
        )
        .route("/static/style.css", get(web::assets::stylesheet))
        .route("/static/board.js", get(web::board::script))
        .route("/board/{name}", get(web::board::board_page))
        .route("/board-credential", get(web::board::credential))
        .route("/mesh", get(web::mesh::mesh_page))
        .route("/static/icon.svg", get(web::assets::icon))
        .route("/favicon.ico", get(web::assets::icon))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/api/v1/system/bus-check", post(api::bus::bus_check))
        .route("/api/v1/auth/register", post(accounts::register))
        .route("/api/v1/auth/login", post(accounts::login))
        .route("/api/v1/auth/logout", post(accounts::logout))
        .route(
            "/api/v1/me",
            get(accounts::me)
                .patch(accounts::update_me)
                .delete(accounts::delete_me),
        )
        .route(
            "/api/v1/admin/users",
            get(accounts::list_users).post(accounts::create_user),
        )
        .route("/api/v1/admin/users/{id}", delete(accounts::delete_user))
        .route("/api/v1/admin/users/{id}/role", put(accounts::set_role))
        .route("/api/v1/admin/weather/poll", post(weather::poll_now))
        .route(
            "/api/v1/me/notifications",
            get(notifications::get_settings).put(notifications::put_settings),
        )
        .route("/api/v1/me/deliveries", get(notifications::deliveries))
        .route("/api/v1/me/telegram/test", post(notifications::send_test))
        .route("/api/v1/me/telegram/link", post(notifications::link))
        .route(
            "/api/v1/me/telegram/code",
            post(notifications::send_chat_code),
        )
        .route(
            "/api/v1/me/telegram/confirm",
            post(notifications::confirm_chat),
        )
        .route("/api/v1/sla", get(sla::list).post(sla::upsert))
        .route("/api/v1/sla/{name}", get(sla::get_one).delete(sla::remove))
        .route("/api/v1/sla/{name}/violations", get(sla::violations))
        .route("/api/v1/sla/{name}/forecast", get(sla::forecast))
        .route("/api/v1/places/search", get(weather::search_places))
        .route("/api/v1/messages", post(mesh::send))
        .route("/api/v1/users/online", get(mesh::online))
        .route("/api/v1/mesh", get(mesh::status))
        .route(
            "/api/v1/subscriptions",
            get(weather::list).post(weather::create),
        )
        .route(
            "/api/v1/subscriptions/{id}",
            get(weather::get)
                .put(weather::replace)
                .delete(weather::delete),
        )
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Times every request, bounds it by the configured timeout, marks the answer `nosniff`,
/// and counts it by route template (never by raw path, so labels stay bounded).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let mut response = match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::Unavailable("the request timed out".into()).into_response(),
    };
    // Every answer, JSON and metrics included, is read as the type it declares.
    response.headers_mut().insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    state
        .metrics
        .http
        .requests
        .with_label_values(&[&method, &route, response.status().as_str()])
        .inc();
    state
        .metrics
        .http
        .duration
        .with_label_values(&[&method, &route])
        .observe(started.elapsed().as_secs_f64());
    response
}
