//! What an SLA is: checking its definition, and evaluating one sample against it
//! (a violation needs the objective missed for its `for` duration, and transitions once).

use super::*;

/// Validates an input into a stored row.
pub fn validate(input: &SlaInput, now: i64) -> Result<SlaRow, Vec<FieldError>> {
    let mut errors = Vec::new();
    let name = input.name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        errors.push(FieldError::new(
            "name",
            "use 1 to 64 characters of letters, digits, `_`, `-` and `.`",
        ));
    }
    let selector = match Selector::parse(&input.selector) {
        Ok(s) => s.canonical(),
        Err(m) => {
            errors.push(FieldError::new("selector", m));
            String::new()
        }
    };
    for (field, v) in [
        ("desired_min", input.desired_min),
        ("desired_max", input.desired_max),
    ] {
        if v.is_some_and(|v| !v.is_finite()) {
            errors.push(FieldError::new(field, "must be a finite number"));
        }
    }
    match (input.desired_min, input.desired_max) {
        (None, None) => errors.push(FieldError::new(
            "desired_max",
            "give desired_min, desired_max or both",
        )),
        (Some(lo), Some(hi)) if lo >= hi => {
            errors.push(FieldError::new("desired_min", "must be below desired_max"))
        }
        _ => {}
    }
    let for_seconds = match input.for_duration.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if d <= Duration::from_secs(24 * 60 * 60) => d.as_secs() as i64,
            Ok(_) => {
                errors.push(FieldError::new("for", "must be at most 24h"));
                0
            }
            Err(_) => {
                errors.push(FieldError::new(
                    "for",
                    "use a duration such as \"5m\" or \"30s\"",
                ));
                0
            }
        },
    };
    if let Some(o) = input.order
        && (o.p > 2 || o.q > 2 || o.d > 1)
    {
        errors.push(FieldError::new("order", "p and q must be 0–2, d 0 or 1"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(SlaRow {
        name: name.to_owned(),
        selector,
        desired_min: input.desired_min,
        desired_max: input.desired_max,
        for_seconds,
        arima_order: input.order.map(|o| format!("{},{},{}", o.p, o.d, o.q)),
        out_since: None,
        violated_since: None,
        last_value: None,
        last_sampled_at: None,
        created_at: now,
        updated_at: now,
    })
}

pub(super) fn parse_order(s: &str) -> Option<Order> {
    let mut it = s.split(',').map(|v| v.trim().parse::<usize>().ok());
    Some(Order {
        p: it.next()??,
        d: it.next()??,
        q: it.next()??,
    })
}

fn outside(v: f64, row: &SlaRow) -> bool {
    row.desired_min.is_some_and(|lo| v < lo) || row.desired_max.is_some_and(|hi| v > hi)
}

/// Advances one SLA's state with a value sampled at `now`. Returns the evaluation and
/// the transition, if any.
pub fn evaluate(row: &SlaRow, value: Option<f64>, now: i64) -> (Evaluation, Option<SlaState>) {
    let mut e = Evaluation {
        name: row.name.clone(),
        value,
        at: now,
        out_since: row.out_since,
        violated_since: row.violated_since,
        violated: false,
    };
    let Some(v) = value else {
        // No data: neither a violation nor a recovery.
        return (e, None);
    };
    if !outside(v, row) {
        e.out_since = None;
        e.violated_since = None;
        let resolved = row.violated_since.is_some();
        return (e, resolved.then_some(SlaState::Resolved));
    }
    let since = row.out_since.unwrap_or(now);
    e.out_since = Some(since);
    if now - since >= row.for_seconds {
        e.violated = true;
        if row.violated_since.is_none() {
            e.violated_since = Some(now);
            return (e, Some(SlaState::Violated));
        }
    }
    (e, None)
}
