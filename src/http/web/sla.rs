//! Owns the administrators' SLA page (`/sla`): every SLA with its state, the 1/3/6 h
//! violation counts, the forecast probability of a violation, and a server-rendered SVG
//! chart of the last hour with the desired band; forms to add, update and remove SLAs.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

use super::html::{Field, Nav, alert, escape, page};
use super::kit::{Page, SignedInForm, csrf, csrf_input, current_user, field};
use crate::domain::user::Role;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::modules::auth::Authenticated;
use crate::modules::sla::arima::Order;
use crate::modules::sla::{SlaError, SlaInput, SlaStatus};

const W: f64 = 600.0;
const H: f64 = 160.0;
const PAD: f64 = 4.0;

fn fmt_value(v: f64) -> String {
    if v.abs() >= 1e6 || (v != 0.0 && v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// The history as a line over the desired band (green) in an inline SVG.
pub fn chart(points: &[(i64, f64)], lo: Option<f64>, hi: Option<f64>, label: &str) -> String {
    if points.len() < 2 {
        return r#"<p class="hint">No history yet.</p>"#.to_owned();
    }
    let (t0, t1) = (points[0].0 as f64, points[points.len() - 1].0 as f64);
    let mut vmin = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mut vmax = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    // Show a band edge when it is near the data, so the eye sees the distance to it.
    let span = (vmax - vmin).max(vmax.abs() * 0.1).max(1e-9);
    for edge in [lo, hi].into_iter().flatten() {
        if edge > vmin - span && edge < vmax + span {
            vmin = vmin.min(edge);
            vmax = vmax.max(edge);
        }
    }
    if vmax - vmin < 1e-12 {
        vmin -= 1.0;
        vmax += 1.0;
    }
    let x = |t: f64| PAD + (t - t0) / (t1 - t0).max(1.0) * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD - (v - vmin) / (vmax - vmin) * (H - 2.0 * PAD);
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}"><title>{}</title>"#,
        escape(label),
        escape(label)
    );
    let band_top = hi.map_or(PAD, |h| y(h).clamp(PAD, H - PAD));
    let band_bottom = lo.map_or(H - PAD, |l| y(l).clamp(PAD, H - PAD));
    if band_bottom > band_top {
        let _ = write!(
            svg,
            r#"<rect class="band" x="{PAD}" y="{band_top:.1}" width="{:.1}" height="{:.1}"/>"#,
            W - 2.0 * PAD,
            band_bottom - band_top
        );
    }
    let line: Vec<String> = points
        .iter()
        .map(|&(t, v)| format!("{:.1},{:.1}", x(t as f64), y(v)))
        .collect();
    let _ = write!(
        svg,
        r#"<polyline class="line" points="{}"/><text x="{PAD}" y="12">{}</text><text x="{PAD}" y="{:.0}">{}</text></svg>"#,
        line.join(" "),
        escape(&fmt_value(vmax)),
        H - 6.0,
        escape(&fmt_value(vmin))
    );
    svg
}

fn range(s: &SlaStatus) -> String {
    match (s.row.desired_min, s.row.desired_max) {
        (Some(lo), Some(hi)) => format!("between {} and {}", fmt_value(lo), fmt_value(hi)),
        (Some(lo), None) => format!("at least {}", fmt_value(lo)),
        (None, Some(hi)) => format!("at most {}", fmt_value(hi)),
        (None, None) => "-".into(),
    }
}

async fn sla_card(state: &AppState, s: &SlaStatus, token: &str) -> String {
    let badge = if s.violated {
        r#"<span class="badge alert">violated</span>"#
    } else if s.row.last_value.is_none() {
        r#"<span class="badge">no data</span>"#
    } else {
        r#"<span class="badge ok">ok</span>"#
    };
    let since = crate::domain::time::system_now() - 3600;
    let history = state.sla.history(&s.row, since).await.unwrap_or_default();
    let forecast = match state.sla.forecast(&s.row.name, None).await {
        Ok(f) => format!(
            "{:.0} % within {} min (ARIMA({},{},{}))",
            f.probability_within_horizon * 100.0,
            f.horizon_seconds / 60,
            f.order.p,
            f.order.d,
            f.order.q
        ),
        Err(SlaError::NotEnoughHistory { .. }) => "needs more history".to_owned(),
        Err(e) => format!("unavailable: {}", ApiError::from(e).for_page().1),
    };
    format!(
        r#"<div class="card"><h2>{name} {badge}</h2>
<dl><dt>Metric</dt><dd><code>{selector}</code></dd><dt>Desired</dt><dd>{range}</dd>
<dt>Now</dt><dd>{value}</dd><dt>Violations</dt><dd>{c1} in 1 h · {c3} in 3 h · {c6} in 6 h</dd>
<dt>Forecast</dt><dd>{forecast}</dd></dl>
{chart}
<form method="post" action="/sla">{csrf}<input type="hidden" name="action" value="remove"><input type="hidden" name="name" value="{name}"><button class="danger" type="submit">Remove {name}</button></form></div>"#,
        name = escape(&s.row.name),
        selector = escape(&s.row.selector),
        range = escape(&range(s)),
        value = s.row.last_value.map_or("no data".to_owned(), fmt_value),
        c1 = s.counts[0],
        c3 = s.counts[1],
        c6 = s.counts[2],
        forecast = escape(&forecast),
        chart = chart(
            &history,
            s.row.desired_min,
            s.row.desired_max,
            &format!("{} over the last hour", s.row.name)
        ),
        csrf = csrf_input(token),
    )
}

async fn render(
    state: &AppState,
    auth: &Authenticated,
    token: &str,
    status: StatusCode,
    notice: Option<String>,
    form: &HashMap<String, String>,
    errors: &HashMap<String, String>,
) -> Page {
    let mut body = String::from("<h1>Service levels</h1>");
    if let Some(n) = notice {
        body.push_str(&alert("ok", &n));
    }
    match state.sla.list().await {
        Ok(slas) if slas.is_empty() => {
            body.push_str(r#"<p class="hint">No SLAs yet. Add one below.</p>"#);
        }
        Ok(slas) => {
            for s in &slas {
                body.push_str(&sla_card(state, s, token).await);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "listing SLAs failed");
            body.push_str(&alert("error", "SLAs are unavailable right now."));
        }
    }
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let err = |k: &str| errors.get(k).map(String::as_str);
    let _ = write!(
        body,
        r#"<div class="card"><h2>Add or update an SLA</h2>
<form method="post" action="/sla" novalidate>{csrf}<input type="hidden" name="action" value="save">{name}{selector}{min}{max}{for_}{order}
<button type="submit">Save SLA</button></form></div>"#,
        csrf = csrf_input(token),
        name = Field::text("name", "Name", get("name"))
            .required()
            .error(err("name"))
            .hint("Saving an existing name updates it.")
            .render(),
        selector = Field::text("selector", "Metric selector", get("selector"))
            .required()
            .error(err("selector"))
            .hint(r#"A /metrics series, e.g. meteomesh_process_resident_memory_bytes or meteomesh_http_requests_total{route="/healthz"}"#)
            .render(),
        min = Field::text("desired_min", "Desired minimum", get("desired_min"))
            .error(err("desired_min"))
            .render(),
        max = Field::text("desired_max", "Desired maximum", get("desired_max"))
            .error(err("desired_max"))
            .render(),
        for_ = Field::text("for", "For", get("for"))
            .error(err("for"))
            .hint("How long out of range before it counts, e.g. 5m. Empty: at once.")
            .render(),
        order = Field::text("order", "ARIMA order", get("order"))
            .error(err("order"))
            .hint("p,d,q such as 1,0,1. Empty: chosen by AIC.")
            .render(),
    );
    let nav = Nav::signed_in(&auth.user, token);
    Page::html(status, page("Service levels", &nav, &body))
}

fn forbidden(auth: &Authenticated, token: &str) -> Page {
    let nav = Nav::signed_in(&auth.user, token);
    Page::html(
        StatusCode::FORBIDDEN,
        page(
            "Service levels",
            &nav,
            &alert("error", "Only administrators manage service levels."),
        ),
    )
}

pub async fn sla_page(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let Some(auth) = current_user(&state, &headers).await else {
        return Page::redirect("/login");
    };
    let (token, set) = csrf(&state, &headers);
    if auth.user.role != Role::Admin {
        return forbidden(&auth, &token).maybe_cookie(set);
    }
    let empty = HashMap::new();
    render(&state, &auth, &token, StatusCode::OK, None, &empty, &empty)
        .await
        .maybe_cookie(set)
}

fn number(form: &HashMap<String, String>, name: &str) -> Result<Option<f64>, String> {
    match field(form, name).trim().replace(',', ".").as_str() {
        "" => Ok(None),
        v => v
            .parse::<f64>()
            .map(Some)
            .map_err(|_| "Enter a number.".to_owned()),
    }
}

pub async fn sla_submit(
    State(state): State<AppState>,
    SignedInForm { auth, token, form }: SignedInForm,
) -> impl IntoResponse {
    if auth.user.role != Role::Admin {
        return forbidden(&auth, &token);
    }
    let empty = HashMap::new();
    let name = field(&form, "name").trim().to_owned();
    match field(&form, "action") {
        "remove" => {
            let (status, notice) = match state.sla.remove(&name).await {
                Ok(()) => (StatusCode::OK, format!("SLA “{name}” removed.")),
                Err(SlaError::NotFound) => {
                    (StatusCode::NOT_FOUND, format!("There is no SLA “{name}”."))
                }
                Err(e) => ApiError::from(e).for_page(),
            };
            render(&state, &auth, &token, status, Some(notice), &empty, &empty).await
        }
        "save" => {
            let mut errors = HashMap::new();
            let min = number(&form, "desired_min").unwrap_or_else(|m| {
                errors.insert("desired_min".to_owned(), m);
                None
            });
            let max = number(&form, "desired_max").unwrap_or_else(|m| {
                errors.insert("desired_max".to_owned(), m);
                None
            });
            let order = match field(&form, "order").trim() {
                "" => None,
                o => {
                    let parts: Vec<Option<usize>> =
                        o.split(',').map(|p| p.trim().parse().ok()).collect();
                    match parts.as_slice() {
                        [Some(p), Some(d), Some(q)] => Some(Order {
                            p: *p,
                            d: *d,
                            q: *q,
                        }),
                        _ => {
                            errors
                                .insert("order".to_owned(), "Write p,d,q, e.g. 1,0,1.".to_owned());
                            None
                        }
                    }
                }
            };
            let mut status = StatusCode::UNPROCESSABLE_ENTITY;
            if errors.is_empty() {
                let input = SlaInput {
                    name: name.clone(),
                    selector: field(&form, "selector").to_owned(),
                    desired_min: min,
                    desired_max: max,
                    for_duration: Some(field(&form, "for").to_owned()),
                    order,
                };
                match state.sla.upsert(input).await {
                    Ok((_, created)) => {
                        let what = if created { "added" } else { "updated" };
                        let notice = format!("SLA “{name}” {what}.");
                        return render(
                            &state,
                            &auth,
                            &token,
                            StatusCode::OK,
                            Some(notice),
                            &empty,
                            &empty,
                        )
                        .await;
                    }
                    Err(SlaError::Invalid(fields)) => {
                        for f in fields {
                            errors.insert(f.field, f.message);
                        }
                    }
                    Err(e) => {
                        let (page_status, message) = ApiError::from(e).for_page();
                        status = page_status;
                        errors.insert("name".to_owned(), message);
                    }
                }
            }
            render(&state, &auth, &token, status, None, &form, &errors).await
        }
        _ => {
            render(
                &state,
                &auth,
                &token,
                StatusCode::BAD_REQUEST,
                None,
                &empty,
                &empty,
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_draws_line_and_band() {
        let points: Vec<(i64, f64)> = (0..10).map(|i| (i * 15, 10.0 + i as f64)).collect();
        let svg = chart(&points, None, Some(15.0), "rss <1h>");
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains(r#"aria-label="rss &lt;1h&gt;""#));
        assert!(svg.contains(r#"<rect class="band""#));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(
            svg.split("points=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .split(' ')
                .count(),
            10
        );
        assert!(chart(&points[..1], None, None, "x").contains("No history yet"));
    }
}
