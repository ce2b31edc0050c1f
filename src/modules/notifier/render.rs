//! Owns the text of Telegram messages: alerts and digests in the user's units and time
//! zone, as Telegram HTML (only `&`, `<`, `>` need escaping outside tags), never longer
//! than Telegram's 4096 characters. Texts are pure functions of the outbox row and the
//! user's settings, so a duplicate after a crash is byte-identical and easy to spot.

use crate::contract::{AlertEvent, AlertState, SlaEvent, SlaState, WeatherNotice};
use crate::domain::subscription::Kind;
pub use crate::domain::text::escape;
use crate::domain::time::rfc3339_ms;
use crate::domain::user::Units;
use crate::domain::weather::{Conditions, describe};
use crate::storage::subscriptions::StoredStatus;
use crate::storage::telegram_link::ChatAccount;

/// Telegram's limit for one message.
pub const MAX_CHARS: usize = 4096;
/// Longest label or place name shown; longer ones are cut with an ellipsis.
const MAX_NAME_CHARS: usize = 120;

fn name(s: &str) -> String {
    if s.chars().count() <= MAX_NAME_CHARS {
        return escape(s);
    }
    let cut: String = s.chars().take(MAX_NAME_CHARS - 1).collect();
    format!("{}…", escape(&cut))
}

fn temperature(c: f64, units: Units) -> String {
    match units {
        Units::Metric => format!("{c:.1} °C"),
        Units::Imperial => format!("{:.1} °F", c * 9.0 / 5.0 + 32.0),
    }
}

fn amount(kind: Kind, v: f64, units: Units) -> String {
    match (kind, units) {
        (Kind::Snow, Units::Metric) => format!("{v:.1} cm"),
        (Kind::Snow, Units::Imperial) => format!("{:.1} in", v / 2.54),
        (_, Units::Metric) => format!("{v:.1} mm"),
        (_, Units::Imperial) => format!("{:.2} in", v / 25.4),
    }
}

fn what(kind: Kind) -> &'static str {
    match kind {
        Kind::TooCold => "too cold",
        Kind::TooHot => "too hot",
        Kind::Rain => "rain",
        Kind::Snow => "snow",
        Kind::Ice => "ice",
        Kind::NoData => "no fresh weather data",
    }
}

/// "too cold", "rain", or for precipitation the observed condition: "freezing rain"
/// stays as it is when it names the constraint, "ice (freezing rain)" when not.
fn headline(e: &AlertEvent) -> String {
    match e.state {
        AlertState::Raised => raised_headline(e),
        AlertState::Reminder => format!("still {}", raised_headline(e)),
        AlertState::Cleared if e.constraint == Kind::NoData => {
            "fresh weather data again".to_owned()
        }
        AlertState::Cleared => format!("no longer {}", what(e.constraint)),
    }
}

/// What holds: the constraint, or the observed condition for precipitation.
fn raised_headline(e: &AlertEvent) -> String {
    let what = what(e.constraint);
    match e.condition.as_deref() {
        Some(c) if c.contains(what) => escape(c),
        Some(c) => format!("{what} ({})", escape(c)),
        None => what.to_owned(),
    }
}

/// "Now 0.4 °C, 1.2 mm precipitation" — the place in the reading that decided.
fn now_line(e: &AlertEvent, units: Units) -> Option<String> {
    let temp = e.temperature_c.map(|t| temperature(t, units));
    let precipitation = e.precipitation_mm.map(|p| {
        if p > 0.0 {
            format!("{} precipitation", amount(Kind::Rain, p, units))
        } else {
            "no precipitation".to_owned()
        }
    });
    let parts: Vec<String> = temp.into_iter().chain(precipitation).collect();
    (!parts.is_empty()).then(|| format!("Now {}", parts.join(", ")))
}

/// "1.5 °C (minimum 3.0 °C)" — the value and, for temperatures, the threshold.
fn detail(e: &AlertEvent, units: Units) -> Option<String> {
    let value = e.value?;
    Some(match e.constraint {
        Kind::TooCold | Kind::TooHot => {
            let t = temperature(value, units);
            match e.threshold_c {
                Some(th) if e.constraint == Kind::TooCold => {
                    format!("{t} (minimum {})", temperature(th, units))
                }
                Some(th) => format!("{t} (maximum {})", temperature(th, units)),
                None => t,
            }
        }
        kind => amount(kind, value, units),
    })
}

fn local(rfc3339: &str, tz: &str, pattern: &str) -> String {
    let Ok(ts) = rfc3339.parse::<jiff::Timestamp>() else {
        return escape(rfc3339);
    };
    let zone = jiff::tz::TimeZone::get(tz).unwrap_or(jiff::tz::TimeZone::UTC);
    escape(&ts.to_zoned(zone).strftime(pattern).to_string())
}

/// "22 Nov 14:05 CET" for Unix seconds.
fn local_unix(at: i64, tz: &str) -> String {
    let at = jiff::Timestamp::from_second(at)
        .map(|t| t.to_string())
        .unwrap_or_default();
    local(&at, tz, "%-d %b %H:%M %Z")
}

/// One alert as its own message.
pub fn alert(e: &AlertEvent, tz: &str, units: Units) -> String {
    let icon = match e.state {
        AlertState::Raised => "⚠️",
        AlertState::Cleared => "✅",
        AlertState::Reminder => "🔁",
    };
    let mut text = format!("{icon} <b>{}</b>: {}", name(&e.label), headline(e));
    let lines: Vec<String> = if e.constraint == Kind::NoData {
        // The last reading is old: say when it was, not what it said.
        e.observed_at
            .iter()
            .map(|at| format!("last reading {}", local(at, tz, "%-d %b %H:%M %Z")))
            .collect()
    } else {
        let since = (e.state == AlertState::Reminder)
            .then(|| format!("since {}", local(&e.started_at, tz, "%-d %b %H:%M")));
        detail(e, units)
            .into_iter()
            .chain(now_line(e, units))
            .chain(since)
            .collect()
    };
    for line in lines {
        text.push('\n');
        text.push_str(&line);
    }
    text.push_str(&format!(
        "\n{} · {}",
        name(&e.place),
        local(&e.at, tz, "%-d %b %H:%M %Z")
    ));
    text
}

/// One line of a digest.
fn digest_line(e: &AlertEvent, tz: &str, units: Units) -> String {
    let mut line = format!(
        "• {} <b>{}</b>: {}",
        local(&e.at, tz, "%H:%M"),
        name(&e.label),
        headline(e)
    );
    if let Some(d) = detail(e, units) {
        line.push_str(", ");
        line.push_str(&d);
    }
    line
}

/// A digest of `events` (oldest first). Returns the text and how many events it holds:
/// when they do not all fit in one message, the rest go in the next one.
pub fn digest(events: &[AlertEvent], tz: &str, units: Units) -> (String, usize) {
    let lines: Vec<String> = events.iter().map(|e| digest_line(e, tz, units)).collect();
    let header = |n: usize| {
        let zone = escape(tz);
        if n == 1 {
            format!("🗓 <b>meteomesh digest</b>: 1 change (times in {zone})")
        } else {
            format!("🗓 <b>meteomesh digest</b>: {n} changes (times in {zone})")
        }
    };
    // Grow until the next line would not fit (the header grows by at most a digit or two).
    let mut used = 0;
    let mut len = header(lines.len()).chars().count() + 8;
    for line in &lines {
        let extra = line.chars().count() + 1;
        if used > 0 && len + extra > MAX_CHARS {
            break;
        }
        len += extra;
        used += 1;
    }
    let mut text = header(used);
    for line in &lines[..used] {
        text.push('\n');
        text.push_str(line);
    }
    (fit(text), used)
}

/// An SLA transition, for administrators (times in `tz`).
pub fn sla_event(e: &SlaEvent, tz: &str) -> String {
    let value = e.value.map_or("no data".to_owned(), |v| format!("{v}"));
    let range = match (e.desired_min, e.desired_max) {
        (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
        (Some(lo), None) => format!("at least {lo}"),
        (None, Some(hi)) => format!("at most {hi}"),
        (None, None) => "in range".to_owned(),
    };
    let when = local_unix(e.at, tz);
    match e.state {
        SlaState::Violated => format!(
            "🚨 <b>SLA violated</b>: {}\n<code>{}</code> = {value}, desired {range}\n{when}",
            name(&e.name),
            escape(&e.selector)
        ),
        SlaState::Resolved => format!(
            "✅ <b>SLA back in range</b>: {}\n<code>{}</code> = {value}, desired {range}\n{when}",
            name(&e.name),
            escape(&e.selector)
        ),
    }
}

/// Cuts a message to [`MAX_CHARS`] at a line boundary (so no tag or entity is split).
pub fn fit(text: String) -> String {
    if text.chars().count() <= MAX_CHARS {
        return text;
    }
    let mut out = String::new();
    for line in text.split('\n') {
        if out.chars().count() + line.chars().count() + 2 > MAX_CHARS {
            break;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
    }
    out.push_str("\n…");
    out
}

/// `/weather` (every subscription with its place's last reading) or `/alerts` (only
/// the active ones) for the accounts linked to a chat; none means the chat is not linked.
pub fn chat_status(accounts: &[ChatAccount], alerts_only: bool) -> String {
    if accounts.is_empty() {
        return "This chat is not linked to a meteomesh account. Open your account page, press “Link Telegram” and send the code here with /start.".to_owned();
    }
    let mut lines = vec![
        if alerts_only {
            "⚠️ <b>Active alerts</b>"
        } else {
            "🌤 <b>Weather now</b>"
        }
        .to_owned(),
    ];
    for a in accounts {
        let units = Units::parse(&a.units).unwrap_or(Units::Metric);
        if accounts.len() > 1 {
            lines.push(format!("<b>{}</b>", escape(&a.username)));
        }
        let shown: Vec<&StoredStatus> = a
            .subscriptions
            .iter()
            .filter(|s| !alerts_only || !s.violated.is_empty())
            .collect();
        if shown.is_empty() {
            lines.push(
                if alerts_only {
                    "No active alerts."
                } else {
                    "No alerts set up yet."
                }
                .to_owned(),
            );
        }
        for s in shown {
            let sub = &s.subscription;
            let mut line = format!("• <b>{}</b> — {}", name(&sub.label), name(&sub.place_name));
            if !alerts_only {
                let latest = s
                    .latest
                    .as_ref()
                    .and_then(|(json, _)| serde_json::from_str::<Conditions>(json).ok());
                line.push_str(&match latest {
                    Some(c) => format!(": {}", reading(&c, &a.timezone, units)),
                    None => ": not checked yet".to_owned(),
                });
            }
            if !s.violated.is_empty() {
                let kinds: Vec<&str> = s.violated.iter().map(|k| what(*k)).collect();
                line.push_str(&format!(" ⚠️ {}", kinds.join(", ")));
            }
            lines.push(line);
        }
    }
    fit(lines.join("\n"))
}

/// "3.0 °C, no precipitation, overcast (13:00)".
fn reading(c: &Conditions, tz: &str, units: Units) -> String {
    let mut parts: Vec<String> = c
        .temperature_c
        .map(|t| temperature(t, units))
        .into_iter()
        .collect();
    if let Some(p) = c.precipitation_mm {
        parts.push(if p > 0.0 {
            amount(Kind::Rain, p, units)
        } else {
            "no precipitation".to_owned()
        });
    }
    if let Some(code) = c.weather_code {
        parts.push(describe(code).to_owned());
    }
    let mut text = if parts.is_empty() {
        "unknown".to_owned()
    } else {
        parts.join(", ")
    };
    if let Some(ms) = c.observed_at_ms() {
        text.push_str(&format!(" ({})", local(&rfc3339_ms(ms), tz, "%H:%M")));
    }
    text
}

/// The weather quota cannot carry every place at the configured interval (or can again).
pub fn weather_notice(n: &WeatherNotice, tz: &str) -> String {
    let when = local_unix(n.at, tz);
    match &n.warning {
        Some(w) => format!(
            "⚠️ <b>Weather quota</b> ({}): {}\n{when}",
            escape(&n.provider),
            escape(w)
        ),
        None => format!(
            "✅ <b>Weather quota</b> ({}): all {} places are fetched at the configured interval again\n{when}",
            escape(&n.provider),
            n.places
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(state: AlertState) -> AlertEvent {
        AlertEvent {
            id: "7-too_cold-1795363200000".into(),
            user_id: 1,
            subscription_id: 7,
            label: "Home <& \"garden\">".into(),
            place: "Catania".into(),
            constraint: Kind::TooCold,
            state,
            value: Some(1.5),
            threshold_c: Some(3.0),
            weather_code: Some(3),
            condition: None,
            temperature_c: None,
            precipitation_mm: None,
            observed_at: None,
            started_at: "2026-11-22T13:00:00Z".into(),
            at: "2026-11-22T13:05:00Z".into(),
            notify: true,
        }
    }

    #[test]
    fn alert_text_in_metric_and_imperial() {
        assert_eq!(
            alert(&event(AlertState::Raised), "Europe/Rome", Units::Metric),
            "⚠️ <b>Home &lt;&amp; &quot;garden&quot;&gt;</b>: too cold\n\
             1.5 °C (minimum 3.0 °C)\nCatania · 22 Nov 14:05 CET"
        );
        assert_eq!(
            alert(
                &event(AlertState::Cleared),
                "America/New_York",
                Units::Imperial
            ),
            "✅ <b>Home &lt;&amp; &quot;garden&quot;&gt;</b>: no longer too cold\n\
             34.7 °F (minimum 37.4 °F)\nCatania · 22 Nov 08:05 EST"
        );
    }

    #[test]
    fn rain_and_snow_amounts() {
        let mut e = event(AlertState::Raised);
        e.constraint = Kind::Snow;
        e.value = Some(2.54);
        e.threshold_c = None;
        assert!(alert(&e, "UTC", Units::Imperial).contains("\n1.0 in\n"));
        e.constraint = Kind::Rain;
        e.value = None;
        assert_eq!(
            alert(&e, "UTC", Units::Metric),
            "⚠️ <b>Home &lt;&amp; &quot;garden&quot;&gt;</b>: rain\nCatania · 22 Nov 13:05 UTC"
        );
    }

    #[test]
    fn precipitation_alerts_say_what_is_falling_and_how_the_place_is_now() {
        let mut e = event(AlertState::Raised);
        e.constraint = Kind::Ice;
        e.value = None;
        e.threshold_c = None;
        e.condition = Some("freezing rain".into());
        e.temperature_c = Some(-0.4);
        e.precipitation_mm = Some(1.2);
        assert_eq!(
            alert(&e, "Europe/Rome", Units::Metric),
            "⚠️ <b>Home &lt;&amp; &quot;garden&quot;&gt;</b>: ice (freezing rain)\n\
             Now -0.4 °C, 1.2 mm precipitation\nCatania · 22 Nov 14:05 CET"
        );
        // A weather code raised it and nothing was measured: no "0.0 mm".
        e.constraint = Kind::Rain;
        e.condition = Some("thunderstorm with rain".into());
        e.precipitation_mm = Some(0.0);
        let text = alert(&e, "UTC", Units::Imperial);
        assert!(
            text.contains(": thunderstorm with rain\nNow 31.3 °F, no precipitation\n"),
            "{text}"
        );
        assert!(!text.contains("0.0"), "{text}");
        e.state = AlertState::Cleared;
        assert!(alert(&e, "UTC", Units::Metric).contains(": no longer rain\n"));
        let (digest, _) = digest(&[event(AlertState::Raised), e], "UTC", Units::Metric);
        assert!(digest.contains("no longer rain"), "{digest}");
    }

    #[test]
    fn no_fresh_data_says_when_the_last_reading_was() {
        let mut e = event(AlertState::Raised);
        e.constraint = Kind::NoData;
        e.value = None;
        e.threshold_c = None;
        e.temperature_c = Some(20.0);
        e.observed_at = Some("2026-11-22T12:00:00Z".into());
        assert_eq!(
            alert(&e, "Europe/Rome", Units::Metric),
            "⚠️ <b>Home &lt;&amp; &quot;garden&quot;&gt;</b>: no fresh weather data\n\
             last reading 22 Nov 13:00 CET\nCatania · 22 Nov 14:05 CET"
        );
        e.state = AlertState::Cleared;
        assert!(alert(&e, "UTC", Units::Metric).contains(": fresh weather data again\n"));
    }

    #[test]
    fn a_reminder_says_it_still_holds_and_since_when() {
        let mut e = event(AlertState::Reminder);
        e.temperature_c = Some(1.5);
        assert_eq!(
            alert(&e, "Europe/Rome", Units::Metric),
            "🔁 <b>Home &lt;&amp; &quot;garden&quot;&gt;</b>: still too cold\n\
             1.5 °C (minimum 3.0 °C)\nNow 1.5 °C\nsince 22 Nov 14:00\nCatania · 22 Nov 14:05 CET"
        );
    }

    #[test]
    fn digest_splits_at_the_limit() {
        let events: Vec<AlertEvent> = (0..200).map(|_| event(AlertState::Raised)).collect();
        let (text, used) = digest(&events, "UTC", Units::Metric);
        assert!(used < 200 && used > 10, "{used}");
        assert!(text.chars().count() <= MAX_CHARS);
        assert!(text.starts_with(&format!("🗓 <b>meteomesh digest</b>: {used} changes")));
        assert_eq!(text.lines().count(), used + 1);
        let (text, used) = digest(&events[..1], "UTC", Units::Metric);
        assert_eq!(used, 1);
        assert_eq!(
            text,
            "🗓 <b>meteomesh digest</b>: 1 change (times in UTC)\n\
             • 13:05 <b>Home &lt;&amp; &quot;garden&quot;&gt;</b>: too cold, 1.5 °C (minimum 3.0 °C)"
        );
    }

    #[test]
    fn long_names_and_texts_are_cut() {
        let mut e = event(AlertState::Raised);
        e.label = "x".repeat(5000);
        let text = alert(&e, "UTC", Units::Metric);
        assert!(text.chars().count() < 400);
        let long = format!("a\n{}", "b".repeat(5000));
        assert_eq!(fit(long), "a\n…");
    }
}
