//! Owns `meteomesh mesh ...` (the mesh as a running node sees it, over its API) and
//! `meteomesh client ...` (the mesh client library on the command line, printing JSON
//! lines).

use std::time::Duration;

use serde_json::{Value, json};

use super::args::{ClientAction, ClientArgs, MeshAction, Remote};
use super::remote::{RemoteError, call};
use crate::client::{ClientEvent, ClientOptions, MeshClient};

pub fn mesh(remote: &Remote, action: MeshAction) -> Result<String, RemoteError> {
    match action {
        MeshAction::Status => {
            let v = call(remote, "GET", "/api/v1/mesh", None)?;
            if remote.json {
                return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            Ok(status_table(&v))
        }
    }
}

fn status_table(v: &Value) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "node {} (mesh {})\n",
        v["node"].as_str().unwrap_or("?"),
        if v["enabled"].as_bool() == Some(true) {
            "on"
        } else {
            "off"
        }
    );
    let _ = writeln!(
        out,
        "{:<14} {:<22} {:>5}  {:<8} {:>8}",
        "NODE", "MQTT", "USERS", "LINK", "RTT ms"
    );
    for n in v["nodes"].as_array().into_iter().flatten() {
        let link = if n["this_node"].as_bool() == Some(true) {
            "(this)".to_owned()
        } else {
            n["link"]["state"].as_str().unwrap_or("none").to_owned()
        };
        let rtt = n["link"]["rtt_ms"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"));
        let _ = writeln!(
            out,
            "{:<14} {:<22} {:>5}  {:<8} {:>8}",
            n["id"].as_str().unwrap_or("?"),
            n["mqtt"].as_str().unwrap_or("?"),
            n["users"].as_u64().unwrap_or(0),
            link,
            rtt
        );
    }
    for p in v["unidentified_peers"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<14} {:<22} {:>5}  {:<8}",
            "?",
            p.as_str().unwrap_or("?"),
            "-",
            "no answer"
        );
    }
    let _ = write!(
        out,
        "envelopes: {} received, {} sent, {} duplicates dropped, {} over ttl\n\
         local deliveries: {}; queued messages: {}; users online: {}; \
         usernames held by other nodes: {}",
        v["envelopes_received"],
        v["envelopes_sent"],
        v["duplicates_dropped"],
        v["ttl_exceeded"],
        v["local_deliveries"],
        v["queued_messages"],
        v["users_online"],
        v["names_held_elsewhere"]
    );
    out
}

#[derive(Debug, thiserror::Error)]
pub enum ClientCliError {
    #[error("{0}")]
    Client(#[from] crate::client::ClientError),
    #[error("not delivered")]
    NotDelivered,
    #[error("no node of {0:?} answered")]
    NoNode(Vec<String>),
    #[error("cannot start: {0}")]
    Runtime(std::io::Error),
}

/// Text that parses as JSON is sent as that JSON; anything else as a string.
fn body(message: &str) -> Value {
    serde_json::from_str(message).unwrap_or_else(|_| Value::String(message.to_owned()))
}

fn line(v: Value) {
    println!("{v}");
}

pub fn client(args: ClientArgs) -> Result<String, ClientCliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClientCliError::Runtime)?;
    runtime.block_on(run_client(args))
}

async fn run_client(args: ClientArgs) -> Result<String, ClientCliError> {
    let mut opts = ClientOptions::new(args.nodes.clone(), &args.user, &args.token);
    opts.choice = args.choose;
    opts.heartbeat_interval = args.heartbeat;
    opts.missed_heartbeats = args.missed_heartbeats.max(1);
    opts.node_file = args.node_file;
    let (client, mut events) = MeshClient::start(opts);
    let listening = matches!(args.action, ClientAction::Listen { .. });
    let Some(node) = client.wait_connected(Duration::from_secs(15)).await else {
        return Err(ClientCliError::NoNode(args.nodes));
    };
    if listening {
        line(json!({"event": "connected", "node": node, "addr": client.current().addr}));
    }
    let result = match args.action {
        ClientAction::Send { to, message, fire } => {
            if fire {
                let id = client.fire_send(&to, body(&message)).await?;
                Ok(json!({"queued": true, "id": id}).to_string())
            } else if client.send(&to, body(&message)).await? {
                Ok(json!({"delivered": true}).to_string())
            } else {
                Err(ClientCliError::NotDelivered)
            }
        }
        ClientAction::Broadcast { message, fire } => {
            if fire {
                let online = client.fire_broadcast(body(&message)).await?;
                Ok(json!({"online": online}).to_string())
            } else {
                let (acked, online) = client.broadcast(body(&message)).await?;
                Ok(json!({"acked": acked, "online": online}).to_string())
            }
        }
        ClientAction::Online => {
            let users = client.online(Duration::from_secs(3)).await?;
            Ok(serde_json::to_string(&users).unwrap_or_default())
        }
        ClientAction::Listen { count } => {
            let mut received = 0usize;
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            tokio::pin!(stop);
            loop {
                let event = tokio::select! {
                    e = events.recv() => e,
                    _ = &mut stop => None,
                };
                let Some(event) = event else { break };
                match event {
                    ClientEvent::Connected { addr } => {
                        line(json!({"event": "connected", "addr": addr}));
                    }
                    ClientEvent::NodeLost {
                        addr, node, reason, ..
                    } => {
                        line(
                            json!({"event": "node_lost", "addr": addr, "node": node, "reason": reason}),
                        );
                    }
                    ClientEvent::Message(m) => {
                        line(json!({"event": "message", "message": m}));
                        received += 1;
                        if count.is_some_and(|c| received >= c) {
                            break;
                        }
                    }
                }
            }
            Ok(String::new())
        }
    };
    client.close().await;
    result
}
