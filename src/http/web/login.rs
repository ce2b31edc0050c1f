//! The sign-in page (and `/`, which sends a visitor to it or to the account).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

use super::html::{Field, Nav, alert, page};
use crate::http::AppState;
use crate::modules::auth::{AuthError, LoginClient};

use super::kit::*;

pub async fn root(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    match current_user(&state, &headers).await {
        Some(_) => Page::redirect("/account"),
        None => Page::redirect("/login"),
    }
}

// ---- login ----------------------------------------------------------------------

fn login_form(csrf: &str, username: &str, error: Option<&str>) -> String {
    format!(
        r#"<div class="card"><h1>Log in</h1>{error}
<form method="post" action="/login" novalidate>{csrf}{user}{pw}
<button type="submit">Log in</button></form>
<p class="hint">No account yet? <a href="/register">Register</a></p></div>"#,
        error = error.map(|e| alert("error", e)).unwrap_or_default(),
        csrf = csrf_input(csrf),
        user = Field::text("username", "Username", username)
            .autocomplete("username")
            .required()
            .render(),
        pw = Field::password("password", "Password", "current-password").render(),
    )
}

pub async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    if current_user(&state, &headers).await.is_some() {
        return Page::redirect("/account");
    }
    let (token, set) = csrf(&state, &headers);
    let nav = Nav::anonymous(&token);
    Page::html(
        StatusCode::OK,
        page("Log in", &nav, &login_form(&token, "", None)),
    )
    .maybe_cookie(set)
}

/// The sign-in form.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub struct LoginForm {
    username: String,
    password: String,
}

pub async fn login_submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    CheckedForm { headers, form }: CheckedForm<LoginForm>,
) -> impl IntoResponse {
    let (token, _) = csrf(&state, &headers);
    let username = form.username.as_str();
    let client = LoginClient::http(peer.ip(), device_cookie(&headers));
    match state.auth.login(username, &form.password, &client).await {
        Ok(issued) => Page::redirect("/account")
            .cookie(session_cookie(&state, &issued))
            .cookie(device_cookie_header(&state, &issued)),
        Err(e) => {
            let (status, message) = match &e {
                AuthError::Throttled { retry_after } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "Too many failed logins. Try again in {}.",
                        wait_text(*retry_after)
                    ),
                ),
                AuthError::BadCredentials => (
                    StatusCode::UNAUTHORIZED,
                    "Wrong username or password.".to_owned(),
                ),
                other => {
                    tracing::error!(error = %other, "login page failed");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Something went wrong; please try again.".to_owned(),
                    )
                }
            };
            let nav = Nav::anonymous(&token);
            Page::html(
                status,
                page(
                    "Log in",
                    &nav,
                    &login_form(&token, username, Some(&message)),
                ),
            )
        }
    }
}

// ---- register -------------------------------------------------------------------
