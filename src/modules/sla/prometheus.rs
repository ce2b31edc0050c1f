//! Owns the client of an external Prometheus server's HTTP API, for sites that run one:
//! `/api/v1/query` for current values and `/api/v1/query_range` for history. Blocking
//! (ureq); callers use `spawn_blocking`. Values of several matching series are summed,
//! like the embedded selector does.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::outbound::{agent, encode};

#[derive(Debug)]
pub struct Prometheus {
    base: String,
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    value: Option<(f64, String)>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

fn number(s: &str) -> Option<f64> {
    // Prometheus spells special values "NaN", "+Inf", "-Inf"; only finite ones count.
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

impl Prometheus {
    pub fn new(base: &str, timeout: Duration) -> Prometheus {
        Prometheus {
            base: base.trim_end_matches('/').to_owned(),
            agent: agent(timeout),
        }
    }

    fn get(&self, path_and_query: &str) -> Result<Data, String> {
        let url = format!("{}{path_and_query}", self.base);
        let mut response = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| format!("Prometheus unreachable: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(16 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| format!("reading Prometheus' answer: {e}"))?;
        let answer: Answer = serde_json::from_str(&body)
            .map_err(|e| format!("unexpected Prometheus answer ({status}): {e}"))?;
        if answer.status != "success" {
            return Err(format!(
                "Prometheus refused the query ({status}): {}",
                answer.error.unwrap_or_default()
            ));
        }
        answer
            .data
            .ok_or_else(|| "Prometheus answered no data".to_owned())
    }

    /// The current value of `selector` (sum over matching series); `None` when nothing
    /// matches.
    pub fn query(&self, selector: &str) -> Result<Option<f64>, String> {
        let data = self.get(&format!("/api/v1/query?query={}", encode(selector)))?;
        if data.result_type != "vector" {
            return Err(format!("expected a vector, got a {}", data.result_type));
        }
        let values: Vec<f64> = data
            .result
            .iter()
            .filter_map(|s| s.value.as_ref().and_then(|(_, v)| number(v)))
            .collect();
        Ok((!values.is_empty()).then(|| values.iter().sum()))
    }

    /// Samples of `selector` between `start` and `end` (Unix seconds) every `step`
    /// seconds, summed over matching series, oldest first.
    pub fn query_range(
        &self,
        selector: &str,
        start: i64,
        end: i64,
        step: u64,
    ) -> Result<Vec<(i64, f64)>, String> {
        let data = self.get(&format!(
            "/api/v1/query_range?query={}&start={start}&end={end}&step={step}",
            encode(selector)
        ))?;
        if data.result_type != "matrix" {
            return Err(format!("expected a matrix, got a {}", data.result_type));
        }
        let mut sum: BTreeMap<i64, f64> = BTreeMap::new();
        for series in &data.result {
            for (t, v) in &series.values {
                if let Some(v) = number(v) {
                    *sum.entry(t.round() as i64).or_default() += v;
                }
            }
        }
        Ok(sum.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_selectors() {
        assert_eq!(encode(r#"up{job="x"}"#), "up%7Bjob%3D%22x%22%7D");
    }

    #[test]
    fn numbers() {
        assert_eq!(number("1.5"), Some(1.5));
        assert_eq!(number("NaN"), None);
        assert_eq!(number("+Inf"), None);
    }
}
