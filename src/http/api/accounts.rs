//! Owns the account endpoints of the JSON API: registration, login, logout, the
//! caller's own account (`/api/v1/me`), and the admin's user management.

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use crate::domain::user::{Role, Units};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{ApiAdmin, ApiJson, ApiPath, ApiUser};
use crate::modules::auth::{AccountUpdate, IssuedToken, LoginClient};
use crate::storage::users::User;

/// A user as the API shows it (never the password hash).
#[derive(Serialize)]
pub struct UserView {
    id: i64,
    username: String,
    telegram_chat_id: Option<i64>,
    /// False while the chat has not proved it belongs to the account (nothing but its
    /// confirmation code is sent there).
    telegram_chat_confirmed: bool,
    role: Role,
    timezone: String,
    units: Units,
    created_at: String,
    updated_at: String,
}

fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id,
            username: u.username.clone(),
            telegram_chat_id: u.telegram_chat_id,
            telegram_chat_confirmed: u.telegram_chat_id.is_some() && u.telegram_chat_confirmed,
            role: u.role,
            timezone: u.timezone.clone(),
            units: u.units,
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
        }
    }
}

#[derive(Serialize)]
pub struct TokenView {
    token: String,
    token_type: &'static str,
    /// Unix seconds.
    expires_at: i64,
    user: UserView,
}

impl From<&IssuedToken> for TokenView {
    fn from(t: &IssuedToken) -> Self {
        TokenView {
            token: t.token.clone(),
            token_type: "Bearer",
            expires_at: t.claims.exp,
            user: UserView::from(&t.user),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    username: String,
    password: String,
    #[serde(default)]
    telegram_chat_id: Option<i64>,
}

pub async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let issued = state
        .auth
        .register(
            &req.username,
            &req.password,
            req.telegram_chat_id,
            Role::User,
            false,
        )
        .await?;
    super::notifications::offer_chat_code(&state, &issued.user).await;
    Ok((StatusCode::CREATED, Json(TokenView::from(&issued))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    username: String,
    password: String,
}

pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let client = LoginClient::http(peer.ip(), crate::http::web::kit::device_cookie(&headers));
    let issued = state
        .auth
        .login(&req.username, &req.password, &client)
        .await?;
    // API clients that keep cookies (and browsers) get the device cookie too.
    let cookie = crate::http::web::kit::device_cookie_header(&state, &issued);
    Ok((
        [(axum::http::header::SET_COOKIE, cookie)],
        Json(TokenView::from(&issued)),
    ))
}

pub async fn logout(
    State(state): State<AppState>,
    ApiUser(auth): ApiUser,
) -> Result<StatusCode, ApiError> {
    state.auth.logout(&auth).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn me(ApiUser(auth): ApiUser) -> Json<UserView> {
    Json(UserView::from(&auth.user))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    telegram_chat_id: Option<Option<i64>>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    units: Option<Units>,
    #[serde(default)]
    current_password: Option<String>,
    #[serde(default)]
    new_password: Option<String>,
}

#[derive(Serialize)]
pub struct UpdateMeResponse {
    user: UserView,
    /// A fresh token when the password changed (older tokens no longer work).
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<TokenView>,
}

pub async fn update_me(
    State(state): State<AppState>,
    ApiUser(auth): ApiUser,
    ApiJson(req): ApiJson<UpdateMeRequest>,
) -> Result<Json<UpdateMeResponse>, ApiError> {
    let password = match (req.current_password, req.new_password) {
        (Some(current), Some(new)) => Some((current, new)),
        (None, None) => None,
        (None, Some(_)) => {
            return Err(ApiError::field(
                "current_password",
                "is required to change the password",
            ));
        }
        (Some(_), None) => return Err(ApiError::field("new_password", "is missing")),
    };
    let update = AccountUpdate {
        telegram_chat_id: req.telegram_chat_id,
        timezone: req.timezone,
        units: req.units,
        password,
    };
    let (user, fresh) = state.auth.update_account(&auth, update).await?;
    if user.telegram_chat_id != auth.user.telegram_chat_id {
        super::notifications::offer_chat_code(&state, &user).await;
    }
    Ok(Json(UpdateMeResponse {
        user: UserView::from(&user),
        token: fresh.as_ref().map(TokenView::from),
    }))
}

pub async fn delete_me(
    State(state): State<AppState>,
    ApiUser(auth): ApiUser,
) -> Result<StatusCode, ApiError> {
    state.auth.delete_user(auth.user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_users(
    State(state): State<AppState>,
    _admin: ApiAdmin,
) -> Result<Json<Vec<UserView>>, ApiError> {
    let users = state.auth.list_users().await?;
    Ok(Json(users.iter().map(UserView::from).collect()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    username: String,
    password: String,
    #[serde(default)]
    telegram_chat_id: Option<i64>,
    #[serde(default = "default_role")]
    role: Role,
}

fn default_role() -> Role {
    Role::User
}

pub async fn create_user(
    State(state): State<AppState>,
    _admin: ApiAdmin,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let issued = state
        .auth
        .register(
            &req.username,
            &req.password,
            req.telegram_chat_id,
            req.role,
            true,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&issued.user))))
}

pub async fn delete_user(
    State(state): State<AppState>,
    ApiAdmin(admin): ApiAdmin,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    state.auth.delete_user(id).await?;
    tracing::info!(admin = admin.user.id, user_id = id, "user deleted by admin");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRoleRequest {
    role: Role,
}

pub async fn set_role(
    State(state): State<AppState>,
    ApiAdmin(admin): ApiAdmin,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<SetRoleRequest>,
) -> Result<Json<UserView>, ApiError> {
    let user = state.auth.set_role(id, req.role).await?;
    tracing::info!(
        admin = admin.user.id,
        user_id = id,
        role = req.role.as_str(),
        "role set by admin"
    );
    Ok(Json(UserView::from(&user)))
}
