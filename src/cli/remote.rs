//! Owns the HTTP client side of the command-line tools that talk to a running server's
//! JSON API (`meteomesh sla`, `meteomesh mesh`): one call with a bearer token, and the
//! API's error shape turned into a readable message.

use std::fmt::Write;
use std::time::Duration;

use serde_json::Value;

use super::args::Remote;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the server answered {status}: {message}")]
    Refused { status: u16, message: String },
}

pub fn call(
    remote: &Remote,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, RemoteError> {
    let agent = crate::outbound::agent(Duration::from_secs(30));
    let url = format!("{}{path}", remote.url.trim_end_matches('/'));
    let auth = format!("Bearer {}", remote.token);
    let unreachable = |e: ureq::Error| RemoteError::Unreachable {
        url: remote.url.clone(),
        reason: e.to_string(),
    };
    let mut response = match (method, body) {
        ("POST", Some(b)) => agent
            .post(&url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(b.to_string().as_bytes()),
        ("DELETE", _) => agent.delete(&url).header("Authorization", &auth).call(),
        _ => agent.get(&url).header("Authorization", &auth).call(),
    }
    .map_err(unreachable)?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().map_err(unreachable)?;
    let value: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    if status >= 400 {
        let mut message = value["error"]["message"]
            .as_str()
            .unwrap_or("no explanation")
            .to_owned();
        if let Some(fields) = value["error"]["fields"].as_array() {
            for f in fields {
                let _ = write!(
                    message,
                    "; {}: {}",
                    f["field"].as_str().unwrap_or("?"),
                    f["message"].as_str().unwrap_or("?")
                );
            }
        }
        return Err(RemoteError::Refused { status, message });
    }
    Ok(value)
}
