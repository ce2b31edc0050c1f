//! Owns the server-rendered web pages: register, login, account, logout.
//!
//! The browser session is an HttpOnly, SameSite=Strict cookie holding the login token.
//! Every form carries a CSRF token that must equal the `meteomesh_csrf` cookie
//! (double submit); a POST whose `Origin` names another host is refused as well.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Form;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::html::{Field, Nav, alert, escape, page};
use super::notify_page::{self, Flash};
use crate::domain::user::{Role, Units};
use crate::modules::auth::{AccountUpdate, AuthError, Authenticated, IssuedToken, LoginClient};

const SESSION_COOKIE: &str = "meteomesh_session";
const CSRF_COOKIE: &str = "meteomesh_csrf";
/// Names a browser that logged in before (login throttling exempts it; see
/// `modules::auth::LoginClient`). Random, meaningless without the server's record.
const DEVICE_COOKIE: &str = "meteomesh_device";

pub async fn icon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("static/icon.svg"),
    )
}

pub async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("static/style.css"),
    )
}

pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
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
pub(super) struct Page {
    status: StatusCode,
    body: String,
    cookies: Vec<String>,
    location: Option<&'static str>,
    /// Scripts may open WebSockets to the mesh's brokers (the whiteboard).
    websockets: bool,
}

impl Page {
    pub(super) fn html(status: StatusCode, body: String) -> Page {
        Page {
            status,
            body,
            cookies: Vec::new(),
            location: None,
            websockets: false,
        }
    }
    pub(super) fn redirect(to: &'static str) -> Page {
        Page {
            status: StatusCode::SEE_OTHER,
            body: String::new(),
            cookies: Vec::new(),
            location: Some(to),
            websockets: false,
        }
    }
    pub(super) fn cookie(mut self, c: String) -> Page {
        self.cookies.push(c);
        self
    }
    pub(super) fn with_websockets(mut self) -> Page {
        self.websockets = true;
        self
    }
    /// Sets the cookie when there is one (a CSRF cookie only on first visit).
    pub(super) fn maybe_cookie(mut self, c: Option<String>) -> Page {
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

fn cookie_attrs(state: &AppState, max_age: Option<u64>) -> String {
    let mut attrs = String::from("; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        attrs.push_str(&format!("; Max-Age={age}"));
    }
    if state.cookie_secure {
        attrs.push_str("; Secure");
    }
    attrs
}

fn session_cookie(state: &AppState, issued: &IssuedToken) -> String {
    let age = state.auth.token_lifetime().as_secs();
    format!(
        "{SESSION_COOKIE}={}{}",
        issued.token,
        cookie_attrs(state, Some(age))
    )
}

/// "5 seconds", "1 minute", "15 minutes".
fn wait_text(wait: std::time::Duration) -> String {
    let secs = wait.as_secs().max(1);
    let (n, unit) = if secs < 60 {
        (secs, "second")
    } else {
        (secs.div_ceil(60), "minute")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// The device cookie the client presented, if any.
pub(super) fn device_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, DEVICE_COOKIE)
}

/// `Set-Cookie` for the device cookie of a login, kept as long as the server trusts it.
pub(super) fn device_cookie_header(state: &AppState, issued: &IssuedToken) -> String {
    match &issued.device {
        Some(device) => format!(
            "{DEVICE_COOKIE}={device}{}",
            cookie_attrs(state, Some(crate::modules::auth::DEVICE_TRUST.as_secs()))
        ),
        None => format!("{DEVICE_COOKIE}={}", cookie_attrs(state, Some(0))),
    }
}

fn clear_session_cookie(state: &AppState) -> String {
    format!("{SESSION_COOKIE}={}", cookie_attrs(state, Some(0)))
}

/// The CSRF token of this browser, and the cookie to set when it is new.
pub(super) fn csrf(state: &AppState, headers: &HeaderMap) -> (String, Option<String>) {
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
pub(super) fn check_csrf(headers: &HeaderMap, form: &HashMap<String, String>) -> Result<(), Page> {
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

/// A form post that needs a session: the CSRF check passed, the signed-in user, this
/// browser's CSRF token and the fields. Otherwise the handler never runs and the answer
/// is 403, a redirect to login, or the form's own rejection.
pub(super) struct SignedInForm {
    pub auth: Authenticated,
    pub token: String,
    pub form: HashMap<String, String>,
}

impl FromRequest<AppState> for SignedInForm {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let headers = req.headers().clone();
        let Form(form) = Form::<HashMap<String, String>>::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        check_csrf(&headers, &form).map_err(IntoResponse::into_response)?;
        let auth = current_user(state, &headers)
            .await
            .ok_or_else(|| Page::redirect("/login").into_response())?;
        let token = csrf(state, &headers).0;
        Ok(SignedInForm { auth, token, form })
    }
}

pub(super) async fn current_user(state: &AppState, headers: &HeaderMap) -> Option<Authenticated> {
    let token = cookie(headers, SESSION_COOKIE)?;
    state.auth.authenticate(token).await.ok()
}

pub(super) fn field<'a>(form: &'a HashMap<String, String>, name: &str) -> &'a str {
    form.get(name).map(String::as_str).unwrap_or("")
}

pub(super) fn csrf_input(token: &str) -> String {
    format!(
        r#"<input type="hidden" name="csrf" value="{}">"#,
        escape(token)
    )
}

fn errors_by_field(e: &AuthError) -> HashMap<String, String> {
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

fn label_of(field: &str) -> &'static str {
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

pub async fn login_submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> impl IntoResponse {
    if let Err(p) = check_csrf(&headers, &form) {
        return p;
    }
    let (token, _) = csrf(&state, &headers);
    let username = field(&form, "username");
    let client = LoginClient::http(peer.ip(), device_cookie(&headers));
    match state
        .auth
        .login(username, field(&form, "password"), &client)
        .await
    {
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

fn register_form(
    csrf: &str,
    form: &HashMap<String, String>,
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
        user = Field::text("username", "Username", field(form, "username"))
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
            field(form, "telegram_chat_id")
        )
        .error(err("telegram_chat_id"))
        .hint("For alerts by Telegram; you can add it later.")
        .render(),
    )
}

/// Parses an optional chat id field: empty is none.
fn chat_id(raw: &str) -> Result<Option<i64>, String> {
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
        register_form(&token, &HashMap::new(), &HashMap::new(), None)
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
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> impl IntoResponse {
    if let Err(p) = check_csrf(&headers, &form) {
        return p;
    }
    let (token, _) = csrf(&state, &headers);
    let nav = Nav::anonymous(&token);
    let chat = match chat_id(field(&form, "telegram_chat_id")) {
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
        .register(
            field(&form, "username"),
            field(&form, "password"),
            chat,
            Role::User,
            false,
        )
        .await
    {
        Ok(issued) => {
            super::notifications::offer_chat_code(&state, &issued.user).await;
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
    let card = notify_page::card(state, token, auth.user.id, flash).await;
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
        let card = notify_page::card(&state, &token, auth.user.id, &Flash::default()).await;
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
                        super::notifications::offer_chat_code(&state, &user).await;
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
