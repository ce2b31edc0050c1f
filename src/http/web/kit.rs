//! Owns the page kit every web page uses: the session, CSRF and device cookies, the
//! typed signed-in form, the page response, and error messages by field.
//!
//! The browser session is an HttpOnly, SameSite=Strict cookie holding the login token.
//! Every form carries a CSRF token that must equal the `meteomesh_csrf` cookie
//! (double submit); a POST whose `Origin` names another host is refused as well.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::html::{Nav, alert, escape, page};
use crate::http::AppState;
use crate::modules::auth::{AuthError, Authenticated, IssuedToken};

pub(crate) const SESSION_COOKIE: &str = "meteomesh_session";
pub(crate) const CSRF_COOKIE: &str = "meteomesh_csrf";
/// Names a browser that logged in before (login throttling exempts it; see
/// `modules::auth::LoginClient`). Random, meaningless without the server's record.
pub(crate) const DEVICE_COOKIE: &str = "meteomesh_device";

pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// A page answer plus the cookies to set.
pub(crate) struct Page {
    status: StatusCode,
    body: String,
    cookies: Vec<String>,
    location: Option<&'static str>,
    /// Scripts may open WebSockets to the mesh's brokers (the whiteboard).
    websockets: bool,
}

impl Page {
    pub(crate) fn html(status: StatusCode, body: String) -> Page {
        Page {
            status,
            body,
            cookies: Vec::new(),
            location: None,
            websockets: false,
        }
    }
    pub(crate) fn redirect(to: &'static str) -> Page {
        Page {
            status: StatusCode::SEE_OTHER,
            body: String::new(),
            cookies: Vec::new(),
            location: Some(to),
            websockets: false,
        }
    }
    pub(crate) fn cookie(mut self, c: String) -> Page {
        self.cookies.push(c);
        self
    }
    pub(crate) fn with_websockets(mut self) -> Page {
        self.websockets = true;
        self
    }
    /// Sets the cookie when there is one (a CSRF cookie only on first visit).
    pub(crate) fn maybe_cookie(mut self, c: Option<String>) -> Page {
        self.cookies.extend(c);
        self
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut r = (self.status, self.body).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(if self.websockets {
                "default-src 'self'; connect-src 'self' ws: wss:; form-action 'self'; frame-ancestors 'none'"
            } else {
                "default-src 'self'; form-action 'self'; frame-ancestors 'none'"
            }),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        if let Some(to) = self.location {
            h.insert(header::LOCATION, HeaderValue::from_static(to));
        }
        for c in self.cookies {
            if let Ok(v) = HeaderValue::from_str(&c) {
                h.append(header::SET_COOKIE, v);
            }
        }
        r
    }
}

pub(crate) fn cookie_attrs(state: &AppState, max_age: Option<u64>) -> String {
    let mut attrs = String::from("; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        attrs.push_str(&format!("; Max-Age={age}"));
    }
    if state.cookie_secure {
        attrs.push_str("; Secure");
    }
    attrs
}

pub(crate) fn session_cookie(state: &AppState, issued: &IssuedToken) -> String {
    let age = state.auth.token_lifetime().as_secs();
    format!(
        "{SESSION_COOKIE}={}{}",
        issued.token,
        cookie_attrs(state, Some(age))
    )
}

/// "5 seconds", "1 minute", "15 minutes".
pub(crate) fn wait_text(wait: std::time::Duration) -> String {
    let secs = wait.as_secs().max(1);
    let (n, unit) = if secs < 60 {
        (secs, "second")
    } else {
        (secs.div_ceil(60), "minute")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// The device cookie the client presented, if any.
pub(crate) fn device_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, DEVICE_COOKIE)
}

/// `Set-Cookie` for the device cookie of a login, kept as long as the server trusts it.
pub(crate) fn device_cookie_header(state: &AppState, issued: &IssuedToken) -> String {
    match &issued.device {
        Some(device) => format!(
            "{DEVICE_COOKIE}={device}{}",
            cookie_attrs(state, Some(crate::modules::auth::DEVICE_TRUST.as_secs()))
        ),
        None => format!("{DEVICE_COOKIE}={}", cookie_attrs(state, Some(0))),
    }
}

pub(crate) fn clear_session_cookie(state: &AppState) -> String {
    format!("{SESSION_COOKIE}={}", cookie_attrs(state, Some(0)))
}

/// The CSRF token of this browser, and the cookie to set when it is new.
pub(crate) fn csrf(state: &AppState, headers: &HeaderMap) -> (String, Option<String>) {
    match cookie(headers, CSRF_COOKIE) {
        Some(t) if crate::domain::ids::is_hex16(t) => (t.to_owned(), None),
        _ => {
            let token = crate::domain::ids::hex(16);
            let set = format!("{CSRF_COOKIE}={token}{}", cookie_attrs(state, None));
            (token, Some(set))
        }
    }
}

/// Refuses a form post whose CSRF field does not match the cookie, or that comes from a
/// page of another origin.
pub(crate) fn check_csrf(headers: &HeaderMap, form: &HashMap<String, String>) -> Result<(), Page> {
    let expired = || {
        Page::html(
            StatusCode::FORBIDDEN,
            page(
                "Form expired",
                &Nav::anonymous(""),
                &format!(
                    r#"<div class="card"><h1>This form has expired</h1>{}<p><a href="/">Start again</a></p></div>"#,
                    alert(
                        "error",
                        "The form could not be verified (missing or stale security token). Reload the page and submit again."
                    )
                ),
            ),
        )
    };
    if let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        let origin_host = origin.split("://").nth(1).unwrap_or(origin);
        if origin != "null" && origin_host != host {
            return Err(expired());
        }
    }
    let sent = form.get("csrf").map(String::as_str).unwrap_or("");
    match cookie(headers, CSRF_COOKIE) {
        Some(expected)
            if !sent.is_empty() && bool::from(expected.as_bytes().ct_eq(sent.as_bytes())) =>
        {
            Ok(())
        }
        _ => Err(expired()),
    }
}

/// Reads a posted form, checks its CSRF token (and Origin), and types its fields as `F`:
/// a field the form lacks is empty (`#[serde(default)]` on `F`), one it does not know is
/// ignored, so a browser's extra buttons never break a page.
async fn checked_form<F: DeserializeOwned>(
    req: Request,
    state: &AppState,
) -> Result<(HeaderMap, F), Response> {
    let headers = req.headers().clone();
    let Form(fields) = Form::<HashMap<String, String>>::from_request(req, state)
        .await
        .map_err(IntoResponse::into_response)?;
    check_csrf(&headers, &fields).map_err(IntoResponse::into_response)?;
    let fields =
        serde::de::value::MapDeserializer::<_, serde::de::value::Error>::new(fields.into_iter());
    let form = F::deserialize(fields).map_err(|_| {
        Page::html(
            StatusCode::BAD_REQUEST,
            "<p>That form does not belong to this page.</p>".to_owned(),
        )
        .into_response()
    })?;
    Ok((headers, form))
}

/// A form post without a session (sign-in, registration): the CSRF check passed and the
/// fields typed as `F`.
pub(crate) struct CheckedForm<F> {
    pub headers: HeaderMap,
    pub form: F,
}

impl<F: DeserializeOwned + Send> FromRequest<AppState> for CheckedForm<F> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (headers, form) = checked_form(req, state).await?;
        Ok(CheckedForm { headers, form })
    }
}

/// A form post that needs a session: the CSRF check passed, the signed-in user, this
/// browser's CSRF token and the fields (typed as `F`; pages not yet typed read them as a
/// map). Otherwise the handler never runs and the answer is 403, a redirect to login,
/// or the form's own rejection.
pub(crate) struct SignedInForm<F = HashMap<String, String>> {
    pub auth: Authenticated,
    pub token: String,
    pub form: F,
}

impl<F: DeserializeOwned + Send> FromRequest<AppState> for SignedInForm<F> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (headers, form) = checked_form(req, state).await?;
        let auth = current_user(state, &headers)
            .await
            .ok_or_else(|| Page::redirect("/login").into_response())?;
        let token = csrf(state, &headers).0;
        Ok(SignedInForm { auth, token, form })
    }
}

pub(crate) async fn current_user(state: &AppState, headers: &HeaderMap) -> Option<Authenticated> {
    let token = cookie(headers, SESSION_COOKIE)?;
    state.auth.authenticate(token).await.ok()
}

pub(crate) fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> &'a str {
    form.get(name).map(String::as_str).unwrap_or("")
}

pub(crate) fn csrf_input(token: &str) -> String {
    format!(
        r#"<input type="hidden" name="csrf" value="{}">"#,
        escape(token)
    )
}

pub(crate) fn errors_by_field(e: &AuthError) -> HashMap<String, String> {
    match e {
        AuthError::Invalid(fields) => fields
            .iter()
            .map(|f| {
                (
                    f.field.clone(),
                    format!("{} {}", label_of(&f.field), f.message),
                )
            })
            .collect(),
        _ => HashMap::new(),
    }
}

pub(crate) fn label_of(field: &str) -> &'static str {
    match field {
        "username" => "Username",
        "password" | "new_password" => "Password",
        "current_password" => "Current password",
        "timezone" => "Time zone",
        "telegram_chat_id" => "Telegram chat id",
        _ => "This field",
    }
}

// ---- root -----------------------------------------------------------------------
