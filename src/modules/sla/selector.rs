//! Owns metric selectors, `metric_name{label="value",...}` (PromQL's instant-vector
//! selector with `=` matchers only): parsing, the canonical spelling used as the history
//! series key, and reading the current value from the app's own registry — the sum of
//! every series of the family whose labels match. `name_count` / `name_sum` of a
//! histogram read its count and sum. Also the p95 of a histogram between two samples.

use prometheus::proto::{MetricFamily, MetricType};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

fn is_name(s: &str, metric: bool) -> bool {
    let mut chars = s.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (metric && c == ':');
    chars.next().is_some_and(ok_first)
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (metric && c == ':'))
}

impl Selector {
    /// Parses `name` or `name{a="x",b="y"}`.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let text = text.trim();
        let (name, rest) = match text.find('{') {
            Some(i) => (&text[..i], Some(&text[i..])),
            None => (text, None),
        };
        let name = name.trim();
        if !is_name(name, true) {
            return Err(format!(
                "`{name}` is not a metric name; use letters, digits, `_` and `:`, e.g. meteomesh_process_resident_memory_bytes"
            ));
        }
        let mut labels = Vec::new();
        if let Some(rest) = rest {
            let inner = rest
                .strip_prefix('{')
                .and_then(|r| r.strip_suffix('}'))
                .ok_or("labels must be closed with `}`")?;
            let mut chars = inner.chars().peekable();
            loop {
                while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
                if chars.peek().is_none() {
                    break;
                }
                let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
                let key = key.trim().to_owned();
                if !is_name(&key, false) {
                    return Err(format!("`{key}` is not a label name"));
                }
                if chars.next() != Some('=') || chars.next_if_eq(&'~').is_some() {
                    return Err(format!("label `{key}`: only `=` matchers are supported"));
                }
                while chars.next_if(|c| c.is_whitespace()).is_some() {}
                if chars.next() != Some('"') {
                    return Err(format!("label `{key}`: the value must be in double quotes"));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some('n') => value.push('\n'),
                            Some(c) => value.push(c),
                            None => return Err("unfinished escape".into()),
                        },
                        Some('"') => break,
                        Some(c) => value.push(c),
                        None => return Err(format!("label `{key}`: unclosed quote")),
                    }
                }
                labels.push((key, value));
            }
        }
        labels.sort();
        labels.dedup_by(|a, b| a.0 == b.0);
        Ok(Selector {
            name: name.to_owned(),
            labels,
        })
    }

    /// The canonical spelling (labels sorted), used as the history series key.
    pub fn canonical(&self) -> String {
        if self.labels.is_empty() {
            return self.name.clone();
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }

    /// The current value in `families`; `None` when nothing matches.
    pub fn value(&self, families: &[MetricFamily]) -> Option<f64> {
        let (family, part) = families
            .iter()
            .find(|f| f.name() == self.name)
            .map(|f| (f, Part::Value))
            .or_else(|| {
                [("_count", Part::Count), ("_sum", Part::Sum)]
                    .into_iter()
                    .find_map(|(suffix, part)| {
                        let base = self.name.strip_suffix(suffix)?;
                        families
                            .iter()
                            .find(|f| {
                                f.name() == base && f.get_field_type() == MetricType::HISTOGRAM
                            })
                            .map(|f| (f, part))
                    })
            })?;
        let mut total = None;
        for m in family.get_metric() {
            let matches = self.labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == k && l.value() == v)
            });
            if !matches {
                continue;
            }
            let v = match (family.get_field_type(), part) {
                (MetricType::GAUGE, _) => m.get_gauge().value(),
                (MetricType::COUNTER, _) => m.get_counter().value(),
                (MetricType::HISTOGRAM, Part::Count) => m.get_histogram().sample_count() as f64,
                (MetricType::HISTOGRAM, Part::Sum) => m.get_histogram().sample_sum(),
                (MetricType::UNTYPED, _) => m.untyped.value(),
                _ => continue,
            };
            total = Some(total.unwrap_or(0.0) + v);
        }
        total
    }
}

#[derive(Debug, Clone, Copy)]
enum Part {
    Value,
    Count,
    Sum,
}

/// Cumulative bucket counts of every series of a histogram family, summed: (upper bound,
/// count) in order, `+Inf` last.
pub fn histogram_buckets(families: &[MetricFamily], name: &str) -> Vec<(f64, u64)> {
    let Some(family) = families.iter().find(|f| f.name() == name) else {
        return Vec::new();
    };
    // Every series of one histogram vector has the same buckets; `+Inf` is implicit.
    let mut sum: Vec<(f64, u64)> = Vec::new();
    for m in family.get_metric() {
        let h = m.get_histogram();
        let buckets = h.get_bucket();
        if sum.is_empty() {
            sum = buckets.iter().map(|b| (b.upper_bound(), 0)).collect();
            sum.push((f64::INFINITY, 0));
        }
        for (slot, b) in sum.iter_mut().zip(buckets) {
            slot.1 += b.cumulative_count();
        }
        if let Some(inf) = sum.last_mut() {
            inf.1 += h.sample_count();
        }
    }
    sum
}

/// The `q` quantile of the observations made between two bucket snapshots (Prometheus'
/// `histogram_quantile` over the increase: linear within the bucket; the top finite
/// bound when it falls in `+Inf`). `None` without observations in between.
pub fn quantile_between(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, u64)> = after
        .iter()
        .enumerate()
        .map(|(i, &(ub, c))| (ub, c.saturating_sub(before.get(i).map_or(0, |b| b.1))))
        .collect();
    let total = delta.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower_bound = 0.0;
    let mut lower_count = 0u64;
    for &(ub, count) in &delta {
        if count as f64 >= rank {
            if ub.is_infinite() {
                return Some(lower_bound);
            }
            let in_bucket = (count - lower_count) as f64;
            let frac = if in_bucket > 0.0 {
                (rank - lower_count as f64) / in_bucket
            } else {
                0.0
            };
            return Some(lower_bound + (ub - lower_bound) * frac);
        }
        lower_bound = ub;
        lower_count = count;
    }
    Some(lower_bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Gauge, GaugeVec, Histogram, HistogramOpts, Opts, Registry};

    #[test]
    fn parses_and_canonicalises() {
        let s = Selector::parse(r#" up{job="node", instance = "a\"b" ,} "#).unwrap();
        assert_eq!(s.name, "up");
        assert_eq!(
            s.labels,
            vec![
                ("instance".into(), "a\"b".into()),
                ("job".into(), "node".into())
            ]
        );
        assert_eq!(s.canonical(), r#"up{instance="a\"b",job="node"}"#);
        assert_eq!(Selector::parse("x").unwrap().canonical(), "x");
        for bad in [
            "",
            "1x",
            "x{a}",
            "x{a=b}",
            r#"x{a=~"b"}"#,
            r#"x{a="b""#,
            r#"x{a="b""#,
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_values_from_a_registry() {
        let r = Registry::new();
        let g = Gauge::new("mem_bytes", "m").unwrap();
        g.set(5.0);
        r.register(Box::new(g)).unwrap();
        let v = GaugeVec::new(Opts::new("load", "l"), &["period"]).unwrap();
        v.with_label_values(&["1m"]).set(0.5);
        v.with_label_values(&["5m"]).set(0.25);
        r.register(Box::new(v)).unwrap();
        let h =
            Histogram::with_opts(HistogramOpts::new("lat", "l").buckets(vec![0.1, 1.0])).unwrap();
        h.observe(0.05);
        h.observe(0.5);
        r.register(Box::new(h)).unwrap();
        let f = r.gather();
        let val = |s: &str| Selector::parse(s).unwrap().value(&f);
        assert_eq!(val("mem_bytes"), Some(5.0));
        assert_eq!(val(r#"load{period="5m"}"#), Some(0.25));
        assert_eq!(val("load"), Some(0.75));
        assert_eq!(val(r#"load{period="2m"}"#), None);
        assert_eq!(val("lat_count"), Some(2.0));
        assert_eq!(val("lat_sum"), Some(0.55));
        assert_eq!(val("nothing"), None);
    }

    #[test]
    fn quantiles_between_snapshots() {
        let before = vec![(0.1, 10), (1.0, 10), (f64::INFINITY, 10)];
        // 100 new observations: 50 below 0.1, 40 in (0.1, 1], 10 above 1.
        let after = vec![(0.1, 60), (1.0, 100), (f64::INFINITY, 110)];
        let p50 = quantile_between(&before, &after, 0.5).unwrap();
        assert!((p50 - 0.1).abs() < 1e-9, "{p50}");
        let p80 = quantile_between(&before, &after, 0.8).unwrap();
        assert!((p80 - (0.1 + 0.9 * 30.0 / 40.0)).abs() < 1e-9, "{p80}");
        assert_eq!(quantile_between(&before, &after, 0.95), Some(1.0));
        assert_eq!(quantile_between(&after, &after, 0.95), None);
    }
}
