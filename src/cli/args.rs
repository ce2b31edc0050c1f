//! Owns the command line: subcommands and the flags that override config.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::CliOverrides;

/// Weather alerts and an MQTT message mesh in one small binary.
#[derive(Debug, Parser)]
#[command(name = "meteomesh", version, about, propagate_version = true)]
pub struct Cli {
    /// Config file (TOML). Default: ./meteomesh.toml when it exists.
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Override http.listen, e.g. 127.0.0.1:8080.
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Override storage.path (the SQLite file).
    #[arg(long, global = true, value_name = "PATH")]
    pub database: Option<PathBuf>,
    /// Override log.level, e.g. debug or `meteomesh=debug,info`.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Load and validate the config, then exit 0 (or 2 with the problem).
    CheckConfig,
    /// Print the effective config as TOML, secrets redacted.
    PrintConfig,
    /// Exit 0 when the local service answers /healthz, 1 otherwise.
    Healthcheck {
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Write a consistent copy of the database to FILE while the service runs.
    Backup {
        /// Target file; must not exist yet.
        file: PathBuf,
    },
    /// Manage user accounts in the database (works while the service runs).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage service-level objectives on a running server over its API (admin token).
    Sla {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: SlaAction,
    },
    /// Look at the mesh from a running node (any user's token).
    Mesh {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        action: MeshAction,
    },
    /// Talk to other users over the mesh as a client: fails over between nodes.
    Client(ClientArgs),
}

#[derive(Debug, Subcommand)]
pub enum MeshAction {
    /// Nodes, links, round trips, users per node, message counters.
    Status,
}

#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// MQTT addresses of mesh nodes, e.g. 192.168.1.20:1883,192.168.1.21:1883.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Your username.
    #[arg(long)]
    pub user: String,
    /// A login token (from /api/v1/auth/login); with a mesh-wide secret every node
    /// accepts it.
    #[arg(long, env = "METEOMESH_TOKEN", hide_env_values = true)]
    pub token: String,
    /// How to choose a node: first, least-users or lowest-rtt.
    #[arg(long, default_value = "first", value_parser = parse_choice)]
    pub choose: crate::config::NodeChoice,
    /// The nodes' heartbeat interval (mesh.heartbeat_interval).
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub heartbeat: std::time::Duration,
    /// Heartbeats missed before failing over.
    #[arg(long, default_value_t = 2)]
    pub missed_heartbeats: u32,
    /// Keep the node list in this file between runs.
    #[arg(long)]
    pub node_file: Option<PathBuf>,
    #[command(subcommand)]
    pub action: ClientAction,
}

fn parse_choice(s: &str) -> Result<crate::config::NodeChoice, String> {
    use crate::config::NodeChoice;
    match s {
        "first" => Ok(NodeChoice::First),
        "least-users" => Ok(NodeChoice::LeastUsers),
        "lowest-rtt" => Ok(NodeChoice::LowestRtt),
        other => Err(format!("`{other}`: use first, least-users or lowest-rtt")),
    }
}

#[derive(Debug, Subcommand)]
pub enum ClientAction {
    /// Send to one user. Without --fire, waits for their acknowledgement (exit 1 when
    /// not delivered); with --fire, queues it (kept while they are offline).
    Send {
        to: String,
        /// JSON, or any text (sent as a string).
        message: String,
        #[arg(long)]
        fire: bool,
    },
    /// Send to every online user. Without --fire, reports how many acknowledged.
    Broadcast {
        message: String,
        #[arg(long)]
        fire: bool,
    },
    /// Print incoming messages and connection events as JSON lines until interrupted.
    Listen {
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Who is online anywhere in the mesh.
    Online,
}

/// Where the server is and who is asking.
#[derive(Debug, clap::Args)]
pub struct Remote {
    /// Base address of the meteomesh HTTP API.
    #[arg(long, env = "METEOMESH_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// A login token (from /api/v1/auth/login); `sla` needs an administrator's.
    #[arg(long, env = "METEOMESH_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SlaAction {
    /// Create an SLA, or update the one with this name.
    Add {
        name: String,
        /// Metric selector, e.g. 'meteomesh_process_resident_memory_bytes' or
        /// 'meteomesh_http_requests_total{route="/healthz"}'.
        #[arg(long)]
        selector: String,
        /// Lowest desired value.
        #[arg(long, allow_hyphen_values = true)]
        min: Option<f64>,
        /// Highest desired value.
        #[arg(long, allow_hyphen_values = true)]
        max: Option<f64>,
        /// How long out of range before it counts as violated, e.g. 5m.
        #[arg(long = "for")]
        for_duration: Option<String>,
        /// Fixed ARIMA order "p,d,q" (default: chosen by AIC).
        #[arg(long)]
        order: Option<String>,
    },
    /// Delete an SLA and its violations.
    Remove { name: String },
    /// Every SLA with its state and violation counts.
    List,
    /// One SLA's state and violation counts over 1, 3 and 6 hours.
    Status { name: String },
    /// Violations since a time (RFC 3339 or Unix seconds; default 6 hours ago).
    Violations {
        name: String,
        #[arg(long)]
        since: Option<String>,
    },
    /// Forecast: mean, standard error and the probability of a violation.
    Forecast {
        name: String,
        /// e.g. 10m; default the server's sla.forecast_horizon.
        #[arg(long)]
        horizon: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Create an account. The password is asked for, or read from standard input when
    /// that is not a terminal.
    Add {
        username: String,
        /// `user` or `admin`.
        #[arg(long, default_value = "user")]
        role: String,
        /// Telegram chat id for alerts (negative for groups).
        #[arg(long, allow_hyphen_values = true)]
        telegram_chat_id: Option<i64>,
    },
    /// List accounts.
    List,
    /// Delete an account and everything it owns.
    Delete { username: String },
    /// Set a new password (asked for, or read from standard input); older login tokens
    /// stop working.
    Passwd { username: String },
    /// Make an account `user` or `admin`.
    SetRole { username: String, role: String },
}

impl Cli {
    pub fn overrides(&self) -> CliOverrides {
        CliOverrides {
            http_listen: self.listen,
            database: self.database.clone(),
            log_level: self.log_level.clone(),
        }
    }
}
