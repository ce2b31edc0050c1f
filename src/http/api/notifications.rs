//! Owns the notification endpoints of the JSON API: the caller's delivery settings and
//! Telegram status (`/api/v1/me/notifications`), a test message
//! (`/api/v1/me/telegram/test`) and a Telegram link code (`/api/v1/me/telegram/link`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::domain::time::rfc3339_ms;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiQuery, ApiUser};
use crate::modules::notifier::schedule::{format_clock, parse_clock};
use crate::modules::notifier::{LinkCode, NotifierError, Settings, TelegramStatus};
use crate::storage::notify::{NotifyMode, Prefs, QuietHours};

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct QuietHoursView {
    /// Local "HH:MM" in the account's time zone; `start` > `end` spans midnight.
    pub start: String,
    pub end: String,
}

#[derive(Serialize)]
pub struct TelegramView {
    /// `disabled` (no bot on this server), `not_linked`, `unconfirmed` (the chat id entered
    /// waits for its code to be typed back), `ok`, or `broken` (Telegram refused the chat;
    /// fix it by unblocking the bot and updating or re-linking).
    status: &'static str,
    chat_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    broken_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    broken_at: Option<String>,
    link_enabled: bool,
}

#[derive(Serialize)]
pub struct SettingsView {
    mode: &'static str,
    digest_minutes: u32,
    quiet_hours: Option<QuietHoursView>,
    telegram: TelegramView,
}

impl From<Settings> for SettingsView {
    fn from(s: Settings) -> Self {
        let chat_id = match s.telegram {
            TelegramStatus::Unconfirmed(chat) => Some(chat),
            _ => s.chat_id,
        };
        let (status, broken_reason, broken_at) = match s.telegram {
            TelegramStatus::Disabled => ("disabled", None, None),
            TelegramStatus::NotLinked => ("not_linked", None, None),
            TelegramStatus::Unconfirmed(_) => ("unconfirmed", None, None),
            TelegramStatus::Ok => ("ok", None, None),
            TelegramStatus::Broken(reason, at) => ("broken", Some(reason), Some(rfc3339_ms(at))),
        };
        SettingsView {
            mode: s.prefs.mode.as_str(),
            digest_minutes: s.prefs.digest_minutes,
            quiet_hours: s.prefs.quiet.map(|q| QuietHoursView {
                start: format_clock(q.start),
                end: format_clock(q.end),
            }),
            telegram: TelegramView {
                status,
                chat_id,
                broken_reason,
                broken_at,
                link_enabled: s.link_enabled,
            },
        }
    }
}

pub async fn get_settings(
    State(state): State<AppState>,
    ApiUser(auth): ApiUser,
) -> Result<Json<SettingsView>, ApiError> {
    Ok(Json(state.notifier.settings(auth.user.id).await?.into()))
}

/// Fields left out keep their value; `quiet_hours: null` turns quiet hours off.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsRequest {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    digest_minutes: Option<u32>,
    #[serde(default, deserialize_with = "crate::http::extract::present")]
    quiet_hours: Option<Option<QuietHoursView>>,
}

/// Applies a settings request to the current preferences.
pub fn apply_request(mut prefs: Prefs, req: SettingsRequest) -> Result<Prefs, ApiError> {
    let mut errors = Vec::new();
    if let Some(mode) = req.mode {
        match NotifyMode::parse(&mode) {
            Some(m) => prefs.mode = m,
            None => errors.push(crate::domain::validation::FieldError::new(
                "mode",
                "use \"immediate\" or \"digest\"",
            )),
        }
    }
    if let Some(m) = req.digest_minutes {
        prefs.digest_minutes = m;
    }
    if let Some(quiet) = req.quiet_hours {
        prefs.quiet = match quiet {
            None => None,
            Some(q) => match (parse_clock(&q.start), parse_clock(&q.end)) {
                (Some(start), Some(end)) => Some(QuietHours { start, end }),
                _ => {
                    errors.push(crate::domain::validation::FieldError::new(
                        "quiet_hours",
                        "give start and end as \"HH:MM\", e.g. {\"start\": \"22:00\", \"end\": \"07:00\"}",
                    ));
                    None
                }
            },
        };
    }
    if errors.is_empty() {
        Ok(prefs)
    } else {
        Err(ApiError::Validation(errors))
    }
}

pub async fn put_settings(
    State(state): State<AppState>,
    ApiUser(auth): ApiUser,
    ApiJson(req): ApiJson<SettingsRequest>,
) -> Result<Json<SettingsView>, ApiError> {
    let current = state.notifier.settings(auth.user.id).await?;
    let prefs = apply_request(current.prefs, req)?;
    Ok(Json(
        state.notifier.set_prefs(auth.user.id, prefs).await?.into(),
    ))
}

#[derive(Serialize)]
pub struct QueuedView {
    queued: bool,
    key: String,
}

pub async fn send_test(
    State(state): State<AppState>,
    ApiUser(auth): ApiUser,
) -> Result<(StatusCode, Json<QueuedView>), ApiError> {
    let key = state
        .notifier
        .send_test(auth.user.id, &auth.user.username)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(QueuedView { queued: true, key })))
}

#[derive(Serialize)]
pub struct LinkView {
    code: String,
    /// What to send the bot if the link does not open Telegram.
    command: String,
    deep_link: Option<String>,
    expires_at: String,
}

impl From<LinkCode> for LinkView {
    fn from(l: LinkCode) -> Self {
        LinkView {
            command: format!("/start {}", l.code),
            code: l.code,
            deep_link: l.deep_link,
            expires_at: rfc3339_ms(l.expires_at),
        }
    }
}

pub async fn link(
    State(state): State<AppState>,
    ApiUser(auth): ApiUser,
) -> Result<(StatusCode, Json<LinkView>), ApiError> {
    let code = state.notifier.link_code(auth.user.id).await?;
    Ok((StatusCode::CREATED, Json(code.into())))
}

#[derive(Serialize)]
pub struct DeliveryView {
    key: String,
    kind: &'static str,
    /// `pending`, `delivered` or `failed`.
    status: String,
    attempts: i64,
    last_error: Option<String>,
    created_at: String,
    finished_at: Option<String>,
}

#[derive(Deserialize)]
pub struct DeliveriesQuery {
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    20
}

/// `GET /api/v1/me/deliveries?limit=20`: the caller's latest Telegram messages.
pub async fn deliveries(
    State(state): State<AppState>,
    ApiUser(auth): ApiUser,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Json<Vec<DeliveryView>>, ApiError> {
    if !(1..=200).contains(&q.limit) {
        return Err(ApiError::field("limit", "must be between 1 and 200"));
    }
    let rows = state.notifier.deliveries(auth.user.id, q.limit).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| DeliveryView {
                key: r.key,
                kind: r.kind.as_str(),
                status: r.status,
                attempts: r.attempts,
                last_error: r.last_error,
                created_at: rfc3339_ms(r.created_at),
                finished_at: r.finished_at.map(rfc3339_ms),
            })
            .collect(),
    ))
}

/// After a user entered a chat id (registration, account changes): sends it its
/// confirmation code. Failing to (no bot, a code sent moments ago) is not the request's
/// failure: the account shows the chat as unconfirmed, with a way to ask again.
pub async fn offer_chat_code(state: &AppState, user: &crate::storage::users::User) {
    if user.telegram_chat_id.is_none() || user.telegram_chat_confirmed {
        return;
    }
    match state.notifier.send_chat_code(user.id, &user.username).await {
        Ok(()) | Err(NotifierError::TelegramOff | NotifierError::CodeTooSoon { .. }) => {}
        Err(e) => {
            tracing::warn!(error = %e, user_id = user.id, "cannot send a chat confirmation code")
        }
    }
}

/// `POST /api/v1/me/telegram/code`: sends a new confirmation code to the chat the user
/// entered (at most one a minute).
pub async fn send_chat_code(
    State(state): State<AppState>,
    ApiUser(auth): ApiUser,
) -> Result<StatusCode, ApiError> {
    state
        .notifier
        .send_chat_code(auth.user.id, &auth.user.username)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    code: String,
}

/// `POST /api/v1/me/telegram/confirm`: proves the entered chat with the code sent to it.
pub async fn confirm_chat(
    State(state): State<AppState>,
    ApiUser(auth): ApiUser,
    ApiJson(req): ApiJson<ConfirmRequest>,
) -> Result<StatusCode, ApiError> {
    state.notifier.confirm_chat(auth.user.id, &req.code).await?;
    Ok(StatusCode::NO_CONTENT)
}
