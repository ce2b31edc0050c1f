//! Owns the "My alerts" page: search a place, pick it, set constraints, and see each
//! subscription's current state; delete a subscription. Plain HTML forms (no script),
//! with the same session cookie and CSRF protection as the account pages.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

use super::html::{Field, Nav, alert, escape, page};
use super::kit::{Page, SignedInForm, csrf, csrf_input, current_user, field};
use crate::domain::subscription::Kind;
use crate::domain::time::system_now;
use crate::domain::user::Units;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::modules::auth::Authenticated;
use crate::modules::subscriptions::{
    PlaceInput, SubscriptionError, SubscriptionInput, SubscriptionStatus, from_celsius,
};
use crate::storage::users::User;
use crate::weather::PlaceCandidate;

fn unit(u: Units) -> &'static str {
    match u {
        Units::Metric => "°C",
        Units::Imperial => "°F",
    }
}

fn kind_label(k: Kind) -> &'static str {
    match k {
        Kind::TooCold => "too cold",
        Kind::TooHot => "too hot",
        Kind::Rain => "rain",
        Kind::Snow => "snow",
        Kind::Ice => "ice",
        Kind::NoData => "no fresh data",
    }
}

fn status_card(s: &SubscriptionStatus, user: &User, csrf: &str) -> String {
    let units = user.units;
    let sub = &s.subscription;
    let mut rules = Vec::new();
    if let Some(c) = sub.min_temp_c {
        rules.push(format!("below {} {}", from_celsius(c, units), unit(units)));
    }
    if let Some(c) = sub.max_temp_c {
        rules.push(format!("above {} {}", from_celsius(c, units), unit(units)));
    }
    if sub.rain {
        rules.push("rain".into());
    }
    if sub.snow {
        rules.push("snow".into());
    }
    if sub.ice {
        rules.push("ice (freezing rain, sleet)".into());
    }
    let now = match (&s.conditions, s.observed_at) {
        (Some(c), Some(at)) => {
            let temp = c
                .temperature_c
                .map(|t| format!("{} {}", from_celsius(t, units), unit(units)))
                .unwrap_or_else(|| "unknown temperature".into());
            // In the user's zone, with its age: an old reading is easy to spot.
            let zone = jiff::tz::TimeZone::get(&user.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
            let when = jiff::Timestamp::from_second(at)
                .map(|t| t.to_zoned(zone).strftime("%-d %b %H:%M %Z").to_string())
                .unwrap_or_default();
            let minutes = (system_now() - at).max(0) / 60;
            let age = match minutes {
                0 => "just now".to_owned(),
                m if m < 120 => format!("{m} min ago"),
                m => format!("{} h ago", m / 60),
            };
            format!("{temp}, observed {when} ({age})")
        }
        _ => "not checked yet".into(),
    };
    let state = if !sub.enabled {
        r#"<span class="badge">paused</span>"#.to_owned()
    } else if s.violated.is_empty() {
        r#"<span class="badge ok">all clear</span>"#.to_owned()
    } else {
        let kinds: Vec<&str> = s.violated.iter().map(|k| kind_label(*k)).collect();
        format!(
            r#"<span class="badge alert">alert: {}</span>"#,
            kinds.join(", ")
        )
    };
    format!(
        r#"<div class="card sub" data-id="{id}"><h2>{label} {state}</h2>
<dl><dt>Place</dt><dd>{place}</dd><dt>Alert when</dt><dd>{rules}</dd><dt>Now</dt><dd>{now}</dd></dl>
<form method="post" action="/alerts">{csrf}<input type="hidden" name="action" value="delete"><input type="hidden" name="id" value="{id}">
<button class="link" type="submit">Delete “{label}”</button></form></div>"#,
        id = sub.id,
        label = escape(&sub.label),
        place = escape(&sub.place_name),
        rules = escape(&rules.join(" · ")),
        now = escape(&now),
        csrf = csrf_input(csrf),
    )
}

struct View<'a> {
    auth: &'a Authenticated,
    csrf: &'a str,
    statuses: &'a [SubscriptionStatus],
    query: &'a str,
    candidates: &'a [PlaceCandidate],
    form: &'a HashMap<String, String>,
    errors: &'a HashMap<String, String>,
    notice: Option<&'a str>,
}

fn render(v: &View<'_>) -> String {
    let err = |k: &str| v.errors.get(k).map(String::as_str);
    let mut out = String::from("<h1>My alerts</h1>");
    if let Some(n) = v.notice {
        out.push_str(&alert("ok", n));
    }
    if let Some(e) = err("general") {
        out.push_str(&alert("error", e));
    }
    out.push_str(&search_form(v));
    out.push_str(&create_form(v));
    if v.statuses.is_empty() {
        out.push_str(
            r#"<div class="card"><p>No alerts yet. Search for a place above to add one.</p></div>"#,
        );
    }
    for s in v.statuses {
        out.push_str(&status_card(s, &v.auth.user, v.csrf));
    }
    out
}

/// The place search (a GET form, so results can be bookmarked).
fn search_form(v: &View<'_>) -> String {
    let err = |k: &str| v.errors.get(k).map(String::as_str);
    let mut out = String::from("<div class=\"card\"><h2>Add an alert</h2>\n");
    let _ = write!(
        out,
        r#"<form method="get" action="/alerts" role="search"><label for="f-q">Find a place</label>
<input id="f-q" name="q" type="search" value="{q}" placeholder="e.g. Catania" autocomplete="off">
<button type="submit">Search</button></form>"#,
        q = escape(v.query)
    );
    if !v.query.is_empty() && v.candidates.is_empty() && err("q").is_none() {
        out.push_str(&alert("error", "No place found with that name."));
    }
    if let Some(e) = err("q") {
        let _ = write!(out, r#"<p class="field-error">{}</p>"#, escape(e));
    }
    out
}

/// The form that creates an alert: a found place (or coordinates) and constraints.
fn create_form(v: &View<'_>) -> String {
    let units = v.auth.user.units;
    let err = |k: &str| v.errors.get(k).map(String::as_str);
    let mut out = String::new();
    let picked = field(v.form, "place");
    let mut places = String::new();
    for (i, c) in v.candidates.iter().enumerate() {
        let desc = [
            Some(c.name.as_str()),
            c.admin1.as_deref(),
            c.country.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        // The stored name keeps region and country: there are many Springfields.
        let value = format!("{}|{}|{}|{desc}", c.lat, c.lon, c.timezone);
        let checked = if picked == value || (picked.is_empty() && i == 0) {
            " checked"
        } else {
            ""
        };
        let _ = write!(
            places,
            r#"<label class="choice"><input type="radio" name="place" value="{value}"{checked}> {desc} <span class="hint">({lat:.2}, {lon:.2})</span></label>"#,
            value = escape(&value),
            desc = escape(&desc),
            lat = c.lat,
            lon = c.lon
        );
    }
    if v.candidates.is_empty() && !picked.is_empty() {
        let _ = write!(
            places,
            r#"<input type="hidden" name="place" value="{}">"#,
            escape(picked)
        );
    }
    let coords = if v.candidates.is_empty() && picked.is_empty() {
        format!(
            "{}{}",
            Field::text("lat", "Latitude (or search above)", field(v.form, "lat"))
                .error(err("place.lat"))
                .render(),
            Field::text("lon", "Longitude", field(v.form, "lon"))
                .error(err("place.lon"))
                .render(),
        )
    } else {
        String::new()
    };
    let check = |name: &str| {
        if field(v.form, name) == "on" {
            " checked"
        } else {
            ""
        }
    };
    let _ = write!(
        out,
        r#"<form method="post" action="/alerts" novalidate>{csrf}<input type="hidden" name="action" value="create"><input type="hidden" name="q" value="{q}">
<fieldset><legend>Place</legend>{places}{coords}</fieldset>
{label}{min}{max}
<label class="choice"><input type="checkbox" name="rain" id="f-rain"{rain}> Alert on rain</label>
<label class="choice"><input type="checkbox" name="snow" id="f-snow"{snow}> Alert on snow</label>
<label class="choice"><input type="checkbox" name="ice" id="f-ice"{ice}> Alert on ice (freezing drizzle, freezing rain, sleet)</label>{cons}
{remind}
<button type="submit">Add alert</button></form></div>"#,
        csrf = csrf_input(v.csrf),
        q = escape(v.query),
        label = Field::text("label", "Name (optional)", field(v.form, "label"))
            .error(err("label"))
            .render(),
        min = Field::text(
            "min_temp",
            &format!("Too cold below ({})", unit(units)),
            field(v.form, "min_temp")
        )
        .error(err("min_temp"))
        .hint("Leave empty for no lower limit.")
        .render(),
        max = Field::text(
            "max_temp",
            &format!("Too hot above ({})", unit(units)),
            field(v.form, "max_temp")
        )
        .error(err("max_temp"))
        .render(),
        remind = Field::text(
            "remind_hours",
            "Remind every (hours)",
            field(v.form, "remind_hours")
        )
        .error(err("remind_hours"))
        .hint("Empty: only when it starts and when it ends.")
        .render(),
        rain = check("rain"),
        snow = check("snow"),
        ice = check("ice"),
        cons = err("constraints")
            .map(|e| format!(
                r#"<p class="field-error" id="f-constraints-error">{}</p>"#,
                escape(e)
            ))
            .unwrap_or_default(),
    );
    out
}

#[derive(serde::Deserialize)]
pub struct SearchParams {
    #[serde(default)]
    q: String,
}

/// Who is looking at the page.
#[derive(Clone, Copy)]
struct Viewer<'a> {
    state: &'a AppState,
    auth: &'a Authenticated,
    token: &'a str,
}

async fn show(
    viewer: &Viewer<'_>,
    status: StatusCode,
    query: &str,
    form: &HashMap<String, String>,
    mut errors: HashMap<String, String>,
    notice: Option<&str>,
) -> Page {
    let Viewer { state, auth, token } = *viewer;
    let mut candidates = Vec::new();
    if !query.trim().is_empty() {
        match state.subscriptions.search_places(query, 5).await {
            Ok(found) => candidates = found,
            Err(SubscriptionError::Invalid(fields)) => {
                errors.insert("q".into(), format!("The search {}", fields[0].message));
            }
            Err(e) => {
                let message = ApiError::from(e).for_page().1;
                errors.insert("general".into(), format!("Place search failed: {message}"));
            }
        }
    }
    let statuses = state
        .subscriptions
        .list_with_status(&auth.user)
        .await
        .unwrap_or_default();
    let nav = Nav::signed_in(&auth.user, token);
    let body = render(&View {
        auth,
        csrf: token,
        statuses: &statuses,
        query,
        candidates: &candidates,
        form,
        errors: &errors,
        notice,
    });
    Page::html(status, page("My alerts", &nav, &body))
}

pub async fn alerts_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<SearchParams>,
) -> impl IntoResponse {
    let Some(auth) = current_user(&state, &headers).await else {
        return Page::redirect("/login");
    };
    let (token, set) = csrf(&state, &headers);
    let viewer = Viewer {
        state: &state,
        auth: &auth,
        token: &token,
    };
    show(
        &viewer,
        StatusCode::OK,
        &params.q,
        &HashMap::new(),
        HashMap::new(),
        None,
    )
    .await
    .maybe_cookie(set)
}

/// Parses an optional number field; `Err` names the problem.
fn number(form: &HashMap<String, String>, name: &str) -> Result<Option<f64>, String> {
    let raw = field(form, name).trim().replace(',', ".");
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<f64>()
        .map(Some)
        .map_err(|_| "must be a number".to_owned())
}

pub async fn alerts_submit(
    State(state): State<AppState>,
    SignedInForm { auth, token, form }: SignedInForm,
) -> impl IntoResponse {
    let viewer = Viewer {
        state: &state,
        auth: &auth,
        token: &token,
    };
    let query = field(&form, "q").to_owned();
    let empty = HashMap::new();
    match field(&form, "action") {
        "delete" => {
            let id = field(&form, "id").parse::<i64>().unwrap_or(0);
            let notice = match state.subscriptions.delete(&auth.user, id).await {
                Ok(()) => "Alert deleted.",
                Err(_) => "That alert was already gone.",
            };
            show(
                &viewer,
                StatusCode::OK,
                "",
                &empty,
                HashMap::new(),
                Some(notice),
            )
            .await
        }
        "create" => {
            let mut errors = HashMap::new();
            let mut nums = HashMap::new();
            for name in ["min_temp", "max_temp", "lat", "lon"] {
                match number(&form, name) {
                    Ok(v) => {
                        nums.insert(name, v);
                    }
                    Err(m) => {
                        let key = if name == "lat" || name == "lon" {
                            format!("place.{name}")
                        } else {
                            name.to_owned()
                        };
                        errors.insert(key, format!("{} {m}", label(name)));
                    }
                }
            }
            let place = match field(&form, "place").splitn(4, '|').collect::<Vec<_>>()[..] {
                [lat, lon, tz, name] => {
                    lat.parse()
                        .ok()
                        .zip(lon.parse().ok())
                        .map(|(lat, lon)| PlaceInput {
                            name: Some(name.to_owned()),
                            lat,
                            lon,
                            timezone: Some(tz.to_owned()),
                        })
                }
                _ => match (
                    nums.get("lat").copied().flatten(),
                    nums.get("lon").copied().flatten(),
                ) {
                    (Some(lat), Some(lon)) => Some(PlaceInput {
                        name: None,
                        lat,
                        lon,
                        timezone: None,
                    }),
                    _ => None,
                },
            };
            let remind_hours = match field(&form, "remind_hours").trim() {
                "" => 0,
                text => text.parse::<u32>().unwrap_or_else(|_| {
                    errors.insert(
                        "remind_hours".into(),
                        "Remind every must be a whole number of hours, 0 to 168.".into(),
                    );
                    0
                }),
            };
            if place.is_none() {
                errors.entry("general".into()).or_insert_with(|| {
                    "Search for a place and pick it, or give latitude and longitude.".into()
                });
            }
            let Some(place) = place.filter(|_| errors.is_empty()) else {
                return show(
                    &viewer,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &query,
                    &form,
                    errors,
                    None,
                )
                .await;
            };
            let input = SubscriptionInput {
                label: Some(field(&form, "label").to_owned()),
                place,
                min_temp: nums.get("min_temp").copied().flatten(),
                max_temp: nums.get("max_temp").copied().flatten(),
                rain: field(&form, "rain") == "on",
                snow: field(&form, "snow") == "on",
                ice: field(&form, "ice") == "on",
                remind_hours,
                notify_on_clear: true,
                for_observations: 1,
                enabled: true,
            };
            match state.subscriptions.create(&auth.user, &input).await {
                Ok(s) => {
                    let notice = format!("Alert “{}” added.", s.label);
                    show(
                        &viewer,
                        StatusCode::OK,
                        "",
                        &empty,
                        HashMap::new(),
                        Some(&notice),
                    )
                    .await
                }
                Err(SubscriptionError::Invalid(fields)) => {
                    for f in fields {
                        errors.insert(
                            f.field.clone(),
                            format!("{} {}", label(&f.field), f.message),
                        );
                    }
                    show(
                        &viewer,
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &query,
                        &form,
                        errors,
                        None,
                    )
                    .await
                }
                Err(e) => {
                    let (status, message) = ApiError::from(e).for_page();
                    errors.insert("general".into(), message);
                    show(&viewer, status, &query, &form, errors, None).await
                }
            }
        }
        _ => {
            show(
                &viewer,
                StatusCode::BAD_REQUEST,
                "",
                &empty,
                HashMap::new(),
                None,
            )
            .await
        }
    }
}

fn label(field: &str) -> &'static str {
    match field {
        "min_temp" => "Too cold below",
        "max_temp" => "Too hot above",
        "lat" | "place.lat" => "Latitude",
        "lon" | "place.lon" => "Longitude",
        "label" => "Name",
        "constraints" => "Choose",
        "place.timezone" => "Time zone",
        "remind_hours" => "Remind every",
        _ => "This field",
    }
}
