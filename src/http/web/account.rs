//! The account page: settings, password, notifications card, and signing out.

use std::collections::HashMap;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

use super::html::{Field, Nav, alert, escape, page};
use super::notify::{self, Flash};
use crate::domain::user::Units;
use crate::http::AppState;
use crate::modules::auth::{AccountUpdate, AuthError, Authenticated};

use super::kit::*;
use super::register::chat_id;

fn account_body(
    csrf: &str,
    auth: &Authenticated,
    settings: &HashMap<String, String>,
    errors: &HashMap<String, String>,
    notice: Option<&str>,
    notifications: &str,
) -> String {
    let u = &auth.user;
    let err = |k: &str| errors.get(k).map(String::as_str);
    let chat_default = u
        .telegram_chat_id
        .map(|c| c.to_string())
        .unwrap_or_default();
    let chat = settings
        .get("telegram_chat_id")
        .map(String::as_str)
        .unwrap_or(&chat_default);
    let tz = settings
        .get("timezone")
        .map(String::as_str)
        .unwrap_or(&u.timezone);
    let units = settings
        .get("units")
        .map(String::as_str)
        .unwrap_or(u.units.as_str());
    let option = |value: &str, label: &str| {
        format!(
            r#"<option value="{value}"{}>{label}</option>"#,
            if units == value { " selected" } else { "" }
        )
    };
    let created = jiff::Timestamp::from_second(u.created_at)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default();
    format!(
        r#"<h1>Your account</h1>{notice}
<div class="card"><dl><dt>Username</dt><dd>{name}</dd><dt>Role</dt><dd>{role}</dd><dt>Member since</dt><dd>{created}</dd></dl></div>
<div class="card"><h2>Settings</h2>
<form method="post" action="/account" novalidate>{csrf}<input type="hidden" name="action" value="settings">{chat}{tz}
<label for="f-units">Units</label><select id="f-units" name="units">{metric}{imperial}</select>
<button type="submit">Save settings</button></form></div>
{notifications}
<div class="card"><h2>Change password</h2>
<form method="post" action="/account" novalidate>{csrf}<input type="hidden" name="action" value="password">{current}{new}
<button type="submit">Change password</button></form></div>
<div class="card"><h2>Delete account</h2><p class="hint">Removes your account and everything it owns. This cannot be undone.</p>
<form method="post" action="/account">{csrf}<input type="hidden" name="action" value="delete">{confirm}
<button class="danger" type="submit">Delete my account</button></form></div>"#,
        notice = notice.map(|n| alert("ok", n)).unwrap_or_default(),
        name = escape(&u.username),
        role = u.role.as_str(),
        csrf = csrf_input(csrf),
        chat = Field::text("telegram_chat_id", "Telegram chat id", chat)
            .error(err("telegram_chat_id"))
            .hint("Leave empty for no Telegram alerts.")
            .render(),
        tz = Field::text("timezone", "Time zone", tz)
            .required()
            .error(err("timezone"))
            .hint("An IANA name such as Europe/Rome.")
            .render(),
        metric = option("metric", "Metric (°C, mm)"),
        imperial = option("imperial", "Imperial (°F, in)"),
        current = Field::password("current_password", "Current password", "current-password")
            .error(err("current_password"))
            .render(),
        new = Field::password("new_password", "New password", "new-password")
            .error(err("new_password"))
            .hint("At least 8 characters.")
            .render(),
        confirm = Field::password(
            "confirm_password",
            "Your password, to confirm",
            "current-password"
        )
        .error(err("confirm_password"))
        .render(),
    )
}

pub async fn account_page(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let Some(auth) = current_user(&state, &headers).await else {
        return Page::redirect("/login");
    };
    let (token, set) = csrf(&state, &headers);
    account_view(&state, &auth, &token, StatusCode::OK, &Flash::default())
        .await
        .maybe_cookie(set)
}

/// The account page with the notifications card showing `flash`.
pub(super) async fn account_view(
    state: &AppState,
    auth: &Authenticated,
    token: &str,
    status: StatusCode,
    flash: &Flash,
) -> Page {
    let nav = Nav::signed_in(&auth.user, token);
    let card = notify::card(state, token, auth.user.id, flash).await;
    let empty = HashMap::new();
    let body = account_body(token, auth, &empty, &empty, None, &card);
    Page::html(status, page("Account", &nav, &body))
}

pub async fn account_submit(
    State(state): State<AppState>,
    SignedInForm { auth, token, form }: SignedInForm,
) -> impl IntoResponse {
    let render = async |auth: &Authenticated,
                        status,
                        settings: &HashMap<String, String>,
                        errors: &HashMap<String, String>,
                        notice: Option<&str>| {
        let nav = Nav::signed_in(&auth.user, &token);
        let card = notify::card(&state, &token, auth.user.id, &Flash::default()).await;
        Page::html(
            status,
            page(
                "Account",
                &nav,
                &account_body(&token, auth, settings, errors, notice, &card),
            ),
        )
    };
    let empty = HashMap::new();
    match field(&form, "action") {
        "settings" => {
            let chat = match chat_id(field(&form, "telegram_chat_id")) {
                Ok(c) => c,
                Err(m) => {
                    let errors = HashMap::from([("telegram_chat_id".to_owned(), m)]);
                    return render(
                        &auth,
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &form,
                        &errors,
                        None,
                    )
                    .await;
                }
            };
            let update = AccountUpdate {
                telegram_chat_id: Some(chat),
                timezone: Some(field(&form, "timezone").trim().to_owned()),
                units: Units::parse(field(&form, "units")),
                password: None,
            };
            match state.auth.update_account(&auth, update).await {
                Ok((user, _)) => {
                    if user.telegram_chat_id != auth.user.telegram_chat_id {
                        crate::http::api::notifications::offer_chat_code(&state, &user).await;
                    }
                    let auth = Authenticated {
                        user,
                        claims: auth.claims,
                    };
                    render(
                        &auth,
                        StatusCode::OK,
                        &empty,
                        &empty,
                        Some("Settings saved."),
                    )
                    .await
                }
                Err(e) => {
                    render(
                        &auth,
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &form,
                        &errors_by_field(&e),
                        None,
                    )
                    .await
                }
            }
        }
        "password" => {
            let update = AccountUpdate {
                password: Some((
                    field(&form, "current_password").to_owned(),
                    field(&form, "new_password").to_owned(),
                )),
                ..AccountUpdate::default()
            };
            match state.auth.update_account(&auth, update).await {
                Ok((user, Some(fresh))) => {
                    let auth = Authenticated {
                        user,
                        claims: fresh.claims.clone(),
                    };
                    render(
                        &auth,
                        StatusCode::OK,
                        &empty,
                        &empty,
                        Some("Password changed. Other sessions have been logged out."),
                    )
                    .await
                    .cookie(session_cookie(&state, &fresh))
                }
                Ok((user, None)) => {
                    let auth = Authenticated {
                        user,
                        claims: auth.claims,
                    };
                    render(&auth, StatusCode::OK, &empty, &empty, None).await
                }
                Err(e) => {
                    render(
                        &auth,
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &empty,
                        &errors_by_field(&e),
                        None,
                    )
                    .await
                }
            }
        }
        "delete" => {
            let confirmed = state
                .auth
                .confirm_password(&auth.user, field(&form, "confirm_password"))
                .await;
            if !confirmed {
                let errors = HashMap::from([(
                    "confirm_password".to_owned(),
                    "That is not your password.".to_owned(),
                )]);
                return render(
                    &auth,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &empty,
                    &errors,
                    None,
                )
                .await;
            }
            match state.auth.delete_user(auth.user.id).await {
                Ok(()) => Page::redirect("/login").cookie(clear_session_cookie(&state)),
                Err(AuthError::LastAdmin) => {
                    let errors = HashMap::from([(
                        "confirm_password".to_owned(),
                        "You are the last administrator; make someone else admin first.".to_owned(),
                    )]);
                    render(&auth, StatusCode::CONFLICT, &empty, &errors, None).await
                }
                Err(e) => {
                    tracing::error!(error = %e, "account deletion failed");
                    render(
                        &auth,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &empty,
                        &empty,
                        None,
                    )
                    .await
                }
            }
        }
        _ => render(&auth, StatusCode::BAD_REQUEST, &empty, &empty, None).await,
    }
}

// ---- logout ---------------------------------------------------------------------

pub async fn logout_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> impl IntoResponse {
    if let Err(p) = check_csrf(&headers, &form) {
        return p;
    }
    if let Some(auth) = current_user(&state, &headers).await
        && let Err(e) = state.auth.logout(&auth).await
    {
        tracing::error!(error = %e, "logout failed");
    }
    Page::redirect("/login").cookie(clear_session_cookie(&state))
}
