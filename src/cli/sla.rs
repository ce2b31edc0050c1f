//! Owns `meteomesh sla ...`: the SLA client. It talks to a running server's JSON API
//! with an administrator's token and prints tables or, with `--json`, the API's answers.

use std::fmt::Write;

use serde_json::{Value, json};

use super::args::{Remote, SlaAction};
use crate::outbound::encode;

pub use super::remote::RemoteError as SlaCliError;
use super::remote::call;

fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(x) => format!("{x}"),
        None => "-".into(),
    }
}

fn range(v: &Value) -> String {
    match (v["desired_min"].as_f64(), v["desired_max"].as_f64()) {
        (Some(lo), Some(hi)) => format!("{lo}..{hi}"),
        (Some(lo), None) => format!(">= {lo}"),
        (None, Some(hi)) => format!("<= {hi}"),
        (None, None) => "-".into(),
    }
}

fn state(v: &Value) -> &'static str {
    if v["state"]["violated"] == true {
        "VIOLATED"
    } else if v["state"]["value"].is_null() {
        "no data"
    } else {
        "ok"
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.trim_end().to_owned()
}

fn status_table(slas: &[Value]) -> String {
    let mut rows = vec![
        [
            "NAME", "SELECTOR", "DESIRED", "VALUE", "STATE", "1H", "3H", "6H",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for s in slas {
        rows.push(vec![
            s["name"].as_str().unwrap_or("").to_owned(),
            s["selector"].as_str().unwrap_or("").to_owned(),
            range(s),
            num(&s["state"]["value"]),
            state(s).to_owned(),
            num(&s["violations"]["last_1h"]),
            num(&s["violations"]["last_3h"]),
            num(&s["violations"]["last_6h"]),
        ]);
    }
    table(&rows)
}

/// Turns an API answer into the table a person reads.
type Render = Box<dyn Fn(&Value) -> String>;

/// Runs one `sla` subcommand; returns what to print.
pub fn run(remote: &Remote, action: SlaAction) -> Result<String, SlaCliError> {
    let (value, render): (Value, Render) = match action {
        SlaAction::Add {
            name,
            selector,
            min,
            max,
            for_duration,
            order,
        } => {
            let order = arima_order(order.as_deref())?;
            let body = json!({"name": name, "selector": selector, "desired_min": min,
                              "desired_max": max, "for": for_duration, "order": order});
            let v = call(remote, "POST", "/api/v1/sla", Some(&body))?;
            (
                v,
                Box::new(|v| format!("saved\n{}", status_table(std::slice::from_ref(v)))),
            )
        }
        SlaAction::Remove { name } => {
            call(
                remote,
                "DELETE",
                &format!("/api/v1/sla/{}", encode(&name)),
                None,
            )?;
            (json!({"removed": name}), Box::new(|_| "removed".to_owned()))
        }
        SlaAction::List => {
            let v = call(remote, "GET", "/api/v1/sla", None)?;
            (
                v,
                Box::new(|v| status_table(v.as_array().map_or(&[][..], Vec::as_slice))),
            )
        }
        SlaAction::Status { name } => {
            let v = call(
                remote,
                "GET",
                &format!("/api/v1/sla/{}", encode(&name)),
                None,
            )?;
            (v, Box::new(status_text))
        }
        SlaAction::Violations { name, since } => {
            let mut path = format!("/api/v1/sla/{}/violations", encode(&name));
            if let Some(s) = since {
                path.push_str(&format!("?since={}", encode(&s)));
            }
            let v = call(remote, "GET", &path, None)?;
            (v, Box::new(violations_text))
        }
        SlaAction::Forecast { name, horizon } => {
            let mut path = format!("/api/v1/sla/{}/forecast", encode(&name));
            if let Some(h) = horizon {
                path.push_str(&format!("?horizon={}", encode(&h)));
            }
            let v = call(remote, "GET", &path, None)?;
            (v, Box::new(forecast_text))
        }
    };
    if remote.json {
        Ok(serde_json::to_string_pretty(&value).unwrap_or_default())
    } else {
        Ok(render(&value))
    }
}

/// `--order "p,d,q"` as the API's `order` object (`null` without it).
fn arima_order(order: Option<&str>) -> Result<Value, SlaCliError> {
    let Some(o) = order else {
        return Ok(Value::Null);
    };
    let parts: Vec<Option<usize>> = o.split(',').map(|p| p.trim().parse().ok()).collect();
    match parts.as_slice() {
        [Some(p), Some(d), Some(q)] => Ok(json!({"p": p, "d": d, "q": q})),
        _ => Err(SlaCliError::Usage(
            "--order takes \"p,d,q\", e.g. 1,0,1".into(),
        )),
    }
}

fn status_text(v: &Value) -> String {
    let mut out = status_table(std::slice::from_ref(v));
    let _ = write!(
        out,
        "\nsampled at {}",
        v["state"]["sampled_at"].as_str().unwrap_or("never")
    );
    out
}

fn violations_text(v: &Value) -> String {
    let c = &v["counts"];
    let mut rows = vec![vec!["AT".to_owned(), "VALUE".to_owned()]];
    for x in v["violations"].as_array().into_iter().flatten() {
        rows.push(vec![
            x["at"].as_str().unwrap_or("").to_owned(),
            num(&x["value"]),
        ]);
    }
    format!(
        "violations: {} in 1h, {} in 3h, {} in 6h\n{}",
        num(&c["last_1h"]),
        num(&c["last_3h"]),
        num(&c["last_6h"]),
        table(&rows)
    )
}

fn forecast_text(v: &Value) -> String {
    let o = &v["order"];
    let mut rows = vec![
        ["AT", "MEAN", "SE", "P(OUTSIDE)"]
            .map(String::from)
            .to_vec(),
    ];
    for s in v["steps"].as_array().into_iter().flatten() {
        rows.push(vec![
            s["at"].as_str().unwrap_or("").to_owned(),
            format!("{:.4}", s["mean"].as_f64().unwrap_or(f64::NAN)),
            format!("{:.4}", s["se"].as_f64().unwrap_or(f64::NAN)),
            format!(
                "{:.3}",
                s["probability_outside"].as_f64().unwrap_or(f64::NAN)
            ),
        ]);
    }
    format!(
        "ARIMA({},{},{}) on {} samples; P(violation within {} s) = {:.3}\n{}",
        o["p"],
        o["d"],
        o["q"],
        v["history_points"],
        v["horizon_seconds"],
        v["probability_within_horizon"].as_f64().unwrap_or(f64::NAN),
        table(&rows)
    )
}
