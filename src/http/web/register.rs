//! The registration page: a new account, with an optional Telegram chat to prove.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

use super::html::{Field, Nav, alert, page};
use crate::domain::user::Role;
use crate::http::AppState;
use crate::modules::auth::AuthError;

use super::kit::*;

/// The registration form.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub struct RegisterForm {
    username: String,
    password: String,
    telegram_chat_id: String,
}

fn register_form(
    csrf: &str,
    form: &RegisterForm,
    errors: &HashMap<String, String>,
    general: Option<&str>,
) -> String {
    let err = |k: &str| errors.get(k).map(String::as_str);
    format!(
        r#"<div class="card"><h1>Create an account</h1>{general}
<form method="post" action="/register" novalidate>{csrf}{user}{pw}{chat}
<button type="submit">Create account</button></form>
<p class="hint">Already registered? <a href="/login">Log in</a></p></div>"#,
        general = general.map(|e| alert("error", e)).unwrap_or_default(),
        csrf = csrf_input(csrf),
        user = Field::text("username", "Username", &form.username)
            .autocomplete("username")
            .required()
            .error(err("username"))
            .hint("3 to 32 characters: a-z, 0-9, _ . -")
            .render(),
        pw = Field::password("password", "Password", "new-password")
            .error(err("password"))
            .hint("At least 8 characters.")
            .render(),
        chat = Field::text(
            "telegram_chat_id",
            "Telegram chat id (optional)",
            &form.telegram_chat_id
        )
        .error(err("telegram_chat_id"))
        .hint("For alerts by Telegram; you can add it later.")
        .render(),
    )
}

/// Parses an optional chat id field: empty is none.
pub(super) fn chat_id(raw: &str) -> Result<Option<i64>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<i64>()
        .map(Some)
        .map_err(|_| "Telegram chat id must be a whole number (negative for groups)".to_owned())
}

pub async fn register_page(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let (token, set) = csrf(&state, &headers);
    let nav = Nav::anonymous(&token);
    let body = if state.auth.open_registration() {
        register_form(&token, &RegisterForm::default(), &HashMap::new(), None)
    } else {
        format!(
            r#"<div class="card"><h1>Create an account</h1>{}</div>"#,
            alert(
                "error",
                "Registration is closed. Ask the administrator of this device for an account."
            )
        )
    };
    Page::html(StatusCode::OK, page("Register", &nav, &body)).maybe_cookie(set)
}

pub async fn register_submit(
    State(state): State<AppState>,
    CheckedForm { headers, form }: CheckedForm<RegisterForm>,
) -> impl IntoResponse {
    let (token, _) = csrf(&state, &headers);
    let nav = Nav::anonymous(&token);
    let chat = match chat_id(&form.telegram_chat_id) {
        Ok(c) => c,
        Err(message) => {
            let errors = HashMap::from([("telegram_chat_id".to_owned(), message)]);
            return Page::html(
                StatusCode::UNPROCESSABLE_ENTITY,
                page(
                    "Register",
                    &nav,
                    &register_form(&token, &form, &errors, None),
                ),
            );
        }
    };
    match state
        .auth
        .register(&form.username, &form.password, chat, Role::User, false)
        .await
    {
        Ok(issued) => {
            crate::http::api::notifications::offer_chat_code(&state, &issued.user).await;
            Page::redirect("/account").cookie(session_cookie(&state, &issued))
        }
        Err(e) => {
            let (status, general) = match &e {
                AuthError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, None),
                AuthError::UsernameTaken => (StatusCode::CONFLICT, None),
                AuthError::RegistrationClosed => {
                    (StatusCode::FORBIDDEN, Some("Registration is closed."))
                }
                other => {
                    tracing::error!(error = %other, "register page failed");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        Some("Something went wrong; please try again."),
                    )
                }
            };
            let mut errors = errors_by_field(&e);
            if matches!(e, AuthError::UsernameTaken) {
                errors.insert("username".into(), "This username is taken.".into());
            }
            Page::html(
                status,
                page(
                    "Register",
                    &nav,
                    &register_form(&token, &form, &errors, general),
                ),
            )
        }
    }
}

// ---- account --------------------------------------------------------------------
