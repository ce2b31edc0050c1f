//! The HTTP gateway: ops endpoints, the one JSON error shape for 400/404/405/413/415/422,
//! and request metrics.

use crate::common;

use common::*;

fn assert_error(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{}",
        r.headers
    );
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_endpoints() {
    let t = TestApp::start().await;
    let r = get(t.http, "/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");

    let r = get(t.http, "/readyz").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["ready"], true);
    assert_eq!(v["node"], t.app.node_id.as_str());
    assert_eq!(v["checks"]["database"]["ok"], true);
    assert_eq!(v["checks"]["bus"]["ok"], true);

    let r = post_json(
        t.http,
        "/api/v1/system/bus-check",
        r#"{"timeout_ms": 5000}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["mode"], "embedded");
    assert!(v["roundtrip_seconds"].as_f64().unwrap() > 0.0);

    let r = get(t.http, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.headers.contains("text/plain; version=0.0.4"));
    for needle in [
        "meteomesh_build_info{version=\"",
        "meteomesh_uptime_seconds ",
        "meteomesh_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1",
        "meteomesh_http_request_duration_seconds_bucket{method=\"GET\",route=\"/readyz\"",
        "meteomesh_bus_roundtrip_seconds_count 1",
        "meteomesh_bus_connections ",
        "meteomesh_bus_messages_received_total ",
    ] {
        assert!(r.body.contains(needle), "missing {needle} in\n{}", r.body);
    }
    t.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_shapes() {
    let t = TestApp::start().await;
    let path = "/api/v1/system/bus-check";

    assert_error(&get(t.http, "/api/v1/nothing-here").await, 404, "not_found");
    assert_error(&get(t.http, "/nothing").await, 404, "not_found");
    assert_error(&get(t.http, path).await, 405, "method_not_allowed");
    // Malformed JSON.
    assert_error(
        &post_json(t.http, path, "{\"timeout_ms\": ").await,
        400,
        "bad_request",
    );
    // Wrong or missing content type.
    let r = http(t.http, "POST", path, Some("text/plain"), b"{}").await;
    assert_error(&r, 415, "unsupported_media_type");
    let r = http(t.http, "POST", path, None, b"{}").await;
    assert_error(&r, 415, "unsupported_media_type");
    // Well-formed JSON with the wrong shape or value.
    let r = post_json(t.http, path, r#"{"timeout_ms": "soon"}"#).await;
    assert_error(&r, 422, "validation_failed");
    let r = post_json(t.http, path, r#"{"unknown": 1}"#).await;
    assert_error(&r, 422, "validation_failed");
    let r = post_json(t.http, path, r#"{"timeout_ms": 0}"#).await;
    assert_error(&r, 422, "validation_failed");
    assert_eq!(r.json()["error"]["fields"][0]["field"], "timeout_ms");
    // Over the body limit.
    let big = format!(
        r#"{{"pad": "{}"}}"#,
        "x".repeat(t.config.http.max_body_bytes)
    );
    assert_error(
        &post_json(t.http, path, &big).await,
        413,
        "payload_too_large",
    );
    // Garbage bytes that are not UTF-8.
    let r = http(
        t.http,
        "POST",
        path,
        Some("application/json"),
        &[0xff, 0xfe, 0x00],
    )
    .await;
    assert_error(&r, 400, "bad_request");

    // Unmatched paths are counted under one label, not one per path.
    let m = get(t.http, "/metrics").await.body;
    assert!(m.contains("route=\"unmatched\",status=\"404\"} 2"), "{m}");
    assert!(!m.contains("nothing-here"));
    t.app.shutdown().await.unwrap();
}

/// The names a family struct under `src/metrics/` registers: the first string argument
/// of a constructor (`Opts::new("x", ..)`, `IntGauge::new("x", ..)`, `gauge(registry, "x", ..)`).
fn registered_metric_names() -> std::collections::BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics");
    let mut names = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for (i, _) in text.match_indices('(') {
            let rest = text[i + 1..].trim_start();
            let rest = rest.strip_prefix("registry,").unwrap_or(rest).trim_start();
            let Some(literal) = rest.strip_prefix('"') else {
                continue;
            };
            let Some((name, after)) = literal.split_once('"') else {
                continue;
            };
            let is_name = name.starts_with(|c: char| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if is_name && after.trim_start().starts_with(',') {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

#[test]
fn the_documented_metrics_are_the_registered_ones() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/http-api.md"),
    )
    .unwrap();
    let start = doc.find("- `GET /metrics`").unwrap();
    let end = start + doc[start..].find("\n## ").unwrap();
    let documented: std::collections::BTreeSet<String> = doc[start..end]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|code| code.split('{').next().unwrap().to_owned())
        .filter(|n| {
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    let registered = registered_metric_names();
    assert!(registered.len() > 40, "{registered:?}");
    let undocumented: Vec<&String> = registered.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/http-api.md: {undocumented:?}"
    );
    // Label values and the prefix are the only other words in the list.
    let words = [
        "meteomesh_",
        "unmatched",
        "will",
        "client_id",
        "sessions",
        "connect_timeout",
        "too_many_pending",
    ];
    let unknown: Vec<&String> = documented
        .difference(&registered)
        .filter(|n| !words.contains(&n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "documented but not registered: {unknown:?}"
    );
}
