//! Owns the "Notifications" card of the account page and its form posts
//! (`POST /account/notifications`: save delivery settings, send a test message, get a
//! Telegram link code, confirm an entered chat with the code sent to it or ask for a new
//! one). The card shows the Telegram status, including a chat Telegram
//! refused and why.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::account::account_view;
use super::html::{Field, alert, escape};
use super::kit::{SignedInForm, csrf_input, field};
use crate::domain::time::rfc3339_ms;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::modules::notifier::schedule::{format_clock, parse_clock};
use crate::modules::notifier::{NotifierError, Settings, TelegramStatus};
use crate::storage::notify::{NotifyMode, Prefs, QuietHours};

/// What the last post on the card produced, shown at its top.
#[derive(Debug, Default)]
pub struct Flash {
    pub ok: Option<String>,
    pub error: Option<String>,
    /// A fresh link code: (code, deep link).
    pub link: Option<(String, Option<String>)>,
    /// The submitted form, shown again with `errors`.
    pub form: HashMap<String, String>,
    pub errors: HashMap<String, String>,
}

fn status_html(s: &Settings) -> String {
    match &s.telegram {
        TelegramStatus::Disabled => {
            r#"<p class="hint">Telegram is not set up on this server; alerts reach you over MQTT.</p>"#.into()
        }
        TelegramStatus::NotLinked => {
            r#"<p>No Telegram chat yet. Link one below or enter your chat id in Settings.</p>"#.into()
        }
        TelegramStatus::Unconfirmed(chat) => format!(
            "<p>Chat <strong>{chat}</strong> is not confirmed yet: the bot sent it a code. \
             Type the code below; until then nothing else is sent there.</p>"
        ),
        TelegramStatus::Ok => format!(
            "<p>Alerts go to Telegram chat <strong>{}</strong>.</p>",
            s.chat_id.unwrap_or_default()
        ),
        TelegramStatus::Broken(reason, at) => alert(
            "error",
            &format!(
                "Telegram refused chat {} on {}: “{reason}”. Nothing is sent there until you fix it: \
                 unblock the bot in Telegram and send a test message, link again, or enter another chat id.",
                s.chat_id.unwrap_or_default(),
                rfc3339_ms(*at)
            ),
        ),
    }
}

/// The card for `user_id`, with `flash` from the last post.
pub async fn card(state: &AppState, csrf: &str, user_id: i64, flash: &Flash) -> String {
    let s = match state.notifier.settings(user_id).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "reading notification settings failed");
            return alert("error", "Notification settings are unavailable right now.");
        }
    };
    let get = |k: &str, default: String| flash.form.get(k).cloned().unwrap_or(default);
    let mode = get("mode", s.prefs.mode.as_str().into());
    let minutes = get("digest_minutes", s.prefs.digest_minutes.to_string());
    let quiet_start = get(
        "quiet_start",
        s.prefs
            .quiet
            .map(|q| format_clock(q.start))
            .unwrap_or_default(),
    );
    let quiet_end = get(
        "quiet_end",
        s.prefs
            .quiet
            .map(|q| format_clock(q.end))
            .unwrap_or_default(),
    );
    let err = |k: &str| flash.errors.get(k).map(String::as_str);
    let option = |value: &str, label: &str| {
        format!(
            r#"<option value="{value}"{}>{label}</option>"#,
            if mode == value { " selected" } else { "" }
        )
    };
    let mut out = String::from(r#"<div class="card" id="notifications"><h2>Notifications</h2>"#);
    if let Some(m) = &flash.ok {
        out.push_str(&alert("ok", m));
    }
    if let Some(m) = &flash.error {
        out.push_str(&alert("error", m));
    }
    out.push_str(&status_html(&s));
    if let Some((code, deep_link)) = &flash.link {
        out.push_str(&format!(
            r#"<div class="alert ok" role="status">Send <code>/start {code}</code> to the bot{link} within 15 minutes.</div>"#,
            code = escape(code),
            link = deep_link
                .as_ref()
                .map(|l| format!(
                    r#", or open <a href="{0}" rel="noopener">{0}</a>"#,
                    escape(l)
                ))
                .unwrap_or_default(),
        ));
    }
    out.push_str(&recent(state, user_id).await);
    let csrf = csrf_input(csrf);
    let telegram_on = s.telegram != TelegramStatus::Disabled;
    if telegram_on && s.chat_id.is_some() {
        out.push_str(&format!(
            r#"<form class="inline" method="post" action="/account/notifications">{csrf}<input type="hidden" name="action" value="test"><button type="submit">Send test message</button></form> "#
        ));
    }
    if let TelegramStatus::Unconfirmed(_) = s.telegram {
        out.push_str(&format!(
            r#"<form method="post" action="/account/notifications" novalidate>{csrf}<input type="hidden" name="action" value="confirm">{code}<button type="submit">Confirm chat</button></form><form class="inline" method="post" action="/account/notifications">{csrf}<input type="hidden" name="action" value="code"><button type="submit">Send a new code</button></form> "#,
            code = Field::text("code", "Code from the bot", "")
                .error(err("code"))
                .render(),
        ));
    }
    if s.link_enabled {
        out.push_str(&format!(
            r#"<form class="inline" method="post" action="/account/notifications">{csrf}<input type="hidden" name="action" value="link"><button type="submit">Link Telegram</button></form>"#
        ));
    }
    out.push_str(&format!(
        r#"<form method="post" action="/account/notifications" novalidate>{csrf}<input type="hidden" name="action" value="prefs">
<label for="f-mode">Delivery</label><select id="f-mode" name="mode">{immediate}{digest}</select>
{minutes}{start}{end}<button type="submit">Save notification settings</button></form></div>"#,
        immediate = option("immediate", "Immediately"),
        digest = option("digest", "As a digest every N minutes"),
        minutes = Field {
            kind: "number",
            ..Field::text("digest_minutes", "Digest every (minutes)", &minutes)
        }
        .error(err("digest_minutes"))
        .render(),
        start = Field {
            kind: "time",
            ..Field::text("quiet_start", "Quiet hours from", &quiet_start)
        }
        .error(err("quiet_hours"))
        .hint("In your time zone. Messages during quiet hours arrive as one digest when they end. Leave both empty for none.")
        .render(),
        end = Field {
            kind: "time",
            ..Field::text("quiet_end", "Quiet hours until", &quiet_end)
        }
        .render(),
    ));
    out
}

/// The last few Telegram messages with their outcome.
async fn recent(state: &AppState, user_id: i64) -> String {
    let rows = match state.notifier.deliveries(user_id, 5).await {
        Ok(rows) if !rows.is_empty() => rows,
        _ => return String::new(),
    };
    let mut out =
        String::from(r#"<p class="hint">Latest Telegram messages:</p><ul class="deliveries">"#);
    for r in rows {
        let what = match r.kind {
            crate::storage::notify::OutboxKind::Alert => "alert",
            crate::storage::notify::OutboxKind::Notice => "message",
        };
        let outcome = match (r.status.as_str(), &r.last_error) {
            ("delivered", _) => "delivered".to_owned(),
            ("failed", Some(e)) => format!("failed: {e}"),
            ("pending", Some(e)) if r.attempts > 0 => format!("waiting to retry ({e})"),
            (status, _) => status.to_owned(),
        };
        out.push_str(&format!(
            "<li>{} {what}: {}</li>",
            escape(&rfc3339_ms(r.created_at)),
            escape(&outcome)
        ));
    }
    out.push_str("</ul>");
    out
}

/// Reads the settings form into preferences, or field errors.
fn prefs_from_form(form: &HashMap<String, String>) -> Result<Prefs, HashMap<String, String>> {
    let mut errors = HashMap::new();
    let mode = NotifyMode::parse(field(form, "mode")).unwrap_or(NotifyMode::Immediate);
    let digest_minutes = match field(form, "digest_minutes").trim() {
        "" => 15,
        m => m.parse().unwrap_or_else(|_| {
            errors.insert(
                "digest_minutes".into(),
                "Enter whole minutes, 1 to 1440.".into(),
            );
            15
        }),
    };
    let quiet = match (
        field(form, "quiet_start").trim(),
        field(form, "quiet_end").trim(),
    ) {
        ("", "") => None,
        (a, b) => match (parse_clock(a), parse_clock(b)) {
            (Some(start), Some(end)) => Some(QuietHours { start, end }),
            _ => {
                errors.insert(
                    "quiet_hours".into(),
                    "Give both times as HH:MM, e.g. 22:00 and 07:00.".into(),
                );
                None
            }
        },
    };
    if errors.is_empty() {
        Ok(Prefs {
            mode,
            digest_minutes,
            quiet,
        })
    } else {
        Err(errors)
    }
}

pub async fn submit(
    State(state): State<AppState>,
    SignedInForm { auth, token, form }: SignedInForm,
) -> impl IntoResponse {
    let user_id = auth.user.id;
    let mut flash = Flash::default();
    let mut status = StatusCode::OK;
    match field(&form, "action") {
        "prefs" => match prefs_from_form(&form) {
            Ok(prefs) => match state.notifier.set_prefs(user_id, prefs).await {
                Ok(_) => flash.ok = Some("Notification settings saved.".into()),
                Err(NotifierError::Invalid(fields)) => {
                    status = StatusCode::UNPROCESSABLE_ENTITY;
                    flash.errors = fields.into_iter().map(|f| (f.field, f.message)).collect();
                    flash.form = form;
                }
                Err(e) => {
                    status = StatusCode::INTERNAL_SERVER_ERROR;
                    tracing::error!(error = %e, "saving notification settings failed");
                    flash.error = Some("Saving failed; please try again.".into());
                }
            },
            Err(errors) => {
                status = StatusCode::UNPROCESSABLE_ENTITY;
                flash.errors = errors;
                flash.form = form;
            }
        },
        "test" => match state.notifier.send_test(user_id, &auth.user.username).await {
            Ok(_) => {
                flash.ok =
                    Some("Test message queued; it should reach your chat within seconds.".into())
            }
            Err(e) => {
                let (page_status, message) = ApiError::from(e).for_page();
                status = page_status;
                flash.error = Some(message);
            }
        },
        "confirm" => match state
            .notifier
            .confirm_chat(user_id, field(&form, "code"))
            .await
        {
            Ok(()) => flash.ok = Some("Chat confirmed: alerts will arrive there.".into()),
            Err(NotifierError::WrongCode) => {
                status = StatusCode::UNPROCESSABLE_ENTITY;
                flash
                    .errors
                    .insert("code".into(), "That code is wrong.".into());
            }
            Err(e) => {
                let (page_status, message) = ApiError::from(e).for_page();
                status = page_status;
                flash.error = Some(message);
            }
        },
        "code" => match state
            .notifier
            .send_chat_code(user_id, &auth.user.username)
            .await
        {
            Ok(()) => flash.ok = Some("A new code is on its way to the chat.".into()),
            Err(e) => {
                let (page_status, message) = ApiError::from(e).for_page();
                status = page_status;
                flash.error = Some(message);
            }
        },
        "link" => match state.notifier.link_code(user_id).await {
            Ok(l) => flash.link = Some((l.code, l.deep_link)),
            Err(e) => {
                let (page_status, message) = ApiError::from(e).for_page();
                status = page_status;
                flash.error = Some(message);
            }
        },
        _ => status = StatusCode::BAD_REQUEST,
    }
    account_view(&state, &auth, &token, status, &flash).await
}
