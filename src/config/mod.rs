//! Owns the configuration: the layered load (defaults → TOML file →
//! `METEOMESH__SECTION__KEY` env → CLI flags), validation with messages that say how to
//! fix a bad value, and redaction of secrets. Each `[section]` lives in its own file with
//! its defaults and its own `validate`; this file runs them in order.
//!
//! Every struct denies unknown keys so a typo fails at start instead of being ignored.
//! Secrets are wrapped in [`Secret`], whose `Debug` and `Serialize` never show the value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod auth;
mod bus;
mod http;
mod log;
mod mesh;
mod notifier;
mod secret;
mod sla;
mod storage;
mod telegram;
mod weather;

pub use auth::*;
pub use bus::*;
pub use http::*;
pub use log::*;
pub use mesh::*;
pub use notifier::*;
pub use secret::*;
pub use sla::*;
pub use storage::*;
pub use telegram::*;
pub use weather::*;

/// Name of the config file looked up in the working directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "meteomesh.toml";
/// Prefix of environment overrides: `METEOMESH__HTTP__LISTEN=127.0.0.1:9000`.
pub const ENV_PREFIX: &str = "METEOMESH";
const ENV_SEPARATOR: &str = "__";
/// Service accounts from the environment: `user:password[,user:password...]`.
pub const ENV_USERS: &str = "METEOMESH__BUS__USERS";
/// Mesh seed peers from the environment: `host:port[,host:port...]`.
pub const ENV_PEERS: &str = "METEOMESH__MESH__PEERS";

fn parse_env_users(value: &str) -> Result<Vec<BusUser>, ConfigError> {
    value
        .split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(|entry| {
            let (username, password) = entry.trim().split_once(':').ok_or_else(|| {
                ConfigError::invalid(
                    ENV_USERS,
                    "write it as user:password[,user:password...] (no commas in passwords)",
                )
            })?;
            Ok(BusUser {
                username: username.to_owned(),
                password: Secret::new(password),
            })
        })
        .collect()
}

/// A configuration problem found at start; the message names the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub log: LogConfig,
    pub storage: StorageConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub weather: WeatherConfig,
    pub notifier: NotifierConfig,
    pub telegram: TelegramConfig,
    pub sla: SlaConfig,
    pub bus: BusConfig,
    pub mesh: MeshConfig,
}

/// Overrides given on the command line; they win over every other layer.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    pub http_listen: Option<SocketAddr>,
    pub database: Option<PathBuf>,
    pub log_level: Option<String>,
}

/// Where the config came from, for `print-config` and the start-up log.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub file: Option<PathBuf>,
}

impl Config {
    /// Loads the layers in order. `file` is `--config`; without it `./meteomesh.toml` is
    /// read when present. `env` is the process environment (a parameter so tests can
    /// pass their own).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        cli: &CliOverrides,
    ) -> Result<Loaded, ConfigError> {
        let file = match file {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError::Read {
                        path: path.to_owned(),
                        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                    });
                }
                Some(path.to_owned())
            }
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()),
        };

        // `bus.users` is a list of tables, which env vars cannot spell; take it in the
        // `user:password,user:password` form here instead.
        // `mesh.peers` likewise, as `host:port,host:port`.
        let mut env_users = None;
        let mut env_peers = None;
        let env: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, v)| match k.as_str() {
                ENV_USERS => {
                    env_users = Some(v.clone());
                    false
                }
                ENV_PEERS => {
                    env_peers = Some(v.clone());
                    false
                }
                _ => true,
            })
            .collect();
        let env_users = env_users.map(|v| parse_env_users(&v)).transpose()?;

        let text = match &file {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let mut config = Config::layered(text.as_deref(), file.as_deref(), env)?;

        if let Some(users) = env_users {
            config.bus.users = users;
        }
        if let Some(peers) = env_peers {
            config.mesh.peers = peers
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(listen) = cli.http_listen {
            config.http.listen = listen;
        }
        if let Some(db) = &cli.database {
            config.storage.path = db.clone();
        }
        if let Some(level) = &cli.log_level {
            config.log.level = level.clone();
        }
        config.validate()?;
        Ok(Loaded { config, file })
    }

    /// The file's TOML (if any) under the environment's overrides, deserialised.
    fn layered(
        text: Option<&str>,
        file: Option<&Path>,
        env: std::collections::HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(text) = text {
            let shown = file.map_or_else(|| "config".into(), |p| p.display().to_string());
            // Parse with toml first: its errors carry line and column.
            toml::from_str::<toml::Table>(text)
                .map_err(|e| ConfigError::Parse(format!("{shown}: {e}")))?;
            builder = builder.add_source(config::File::from_str(text, config::FileFormat::Toml));
        }
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .source(Some(env)),
        );
        let layered = builder.build().map_err(|e| describe_error(e, file))?;
        layered
            .try_deserialize()
            .map_err(|e| describe_error(e, file))
    }

    /// A config from TOML text alone (no environment, no file), validated. For tools and
    /// the fuzzer; the service itself goes through [`Config::load`].
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config = Config::layered(Some(text), None, Default::default())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values serde cannot: ranges, combinations, URLs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.log.validate()?;
        self.storage.validate()?;
        self.http.validate()?;
        self.auth.validate()?;
        self.weather.validate()?;
        self.notifier.validate()?;
        self.telegram.validate()?;
        self.sla.validate()?;
        self.bus.validate(self.http.listen)?;
        self.mesh.validate(&self.bus, &self.auth)?;
        Ok(())
    }

    /// The effective config as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Turns the layered loader's error into one that names the key and the fix.
fn describe_error(e: config::ConfigError, file: Option<&Path>) -> ConfigError {
    let origin = file
        .map(|p| format!(" (in {} or a METEOMESH__* variable)", p.display()))
        .unwrap_or_else(|| " (in a METEOMESH__* variable)".to_owned());
    let text = e.to_string();
    let hint = if text.contains("unknown field") {
        "; remove it or check its spelling against config.example.toml"
    } else if text.contains("invalid socket address") {
        "; write it as IP:PORT, e.g. \"0.0.0.0:8080\""
    } else if text.contains("time unit") || text.contains("duration") {
        "; write a duration such as \"500ms\", \"15s\", \"10m\" or \"2h\""
    } else if text.contains("unknown variant") {
        "; use one of the values listed"
    } else {
        "; see config.example.toml for the expected form"
    };
    ConfigError::Parse(format!("{text}{origin}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn load_env(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load(None, env, &CliOverrides::default()).map(|l| l.config)
    }

    #[test]
    fn secret_never_shows_in_debug_or_serialize() {
        let mut c = Config::default();
        c.bus.password = Secret::new("hunter2-very-secret");
        c.bus.users.push(BusUser {
            username: "svc".into(),
            password: Secret::new("another-secret"),
        });
        let debug = format!("{c:?}");
        let toml = c.to_redacted_toml();
        for out in [&debug, &toml] {
            assert!(!out.contains("hunter2"), "{out}");
            assert!(!out.contains("another-secret"), "{out}");
            assert!(out.contains(REDACTED));
        }
    }

    #[test]
    fn env_overrides_nested_keys_and_parses_types() {
        let c = load_env(&[
            ("METEOMESH__HTTP__LISTEN", "127.0.0.1:9999"),
            ("METEOMESH__BUS__WS_ENABLED", "false"),
            ("METEOMESH__BUS__MAX_INFLIGHT", "7"),
            ("METEOMESH__STORAGE__BUSY_TIMEOUT", "250ms"),
            ("OTHER_VAR", "ignored"),
        ])
        .unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:9999".parse().unwrap());
        assert!(!c.bus.ws_enabled);
        assert_eq!(c.bus.max_inflight, 7);
        assert_eq!(c.storage.busy_timeout, Duration::from_millis(250));
    }

    #[test]
    fn env_strings_are_not_reinterpreted_as_numbers() {
        let c = load_env(&[
            ("METEOMESH__BUS__PASSWORD", "0012345678"),
            ("METEOMESH__BUS__CLIENT_ID_PREFIX", "007"),
            ("METEOMESH__BUS__USERNAME", "true"),
        ])
        .unwrap();
        assert_eq!(c.bus.password.expose(), "0012345678");
        assert_eq!(c.bus.client_id_prefix, "007");
        assert_eq!(c.bus.username, "true");
    }

    #[test]
    fn env_mesh_peers_and_checks() {
        let c = load_env(&[
            (ENV_PEERS, "127.0.0.2:1883, pi.lan:1884"),
            ("METEOMESH__MESH__ENABLED", "true"),
            ("METEOMESH__MESH__ADVERTISE_HOST", "127.0.0.1"),
            ("METEOMESH__MESH__LINK_PASSWORD", "link-password-123456"),
        ])
        .unwrap();
        assert_eq!(c.mesh.peers, ["127.0.0.2:1883", "pi.lan:1884"]);
        let err = load_env(&[
            (ENV_PEERS, "nohost"),
            ("METEOMESH__MESH__ENABLED", "true"),
            ("METEOMESH__MESH__ADVERTISE_HOST", "127.0.0.1"),
            ("METEOMESH__MESH__LINK_PASSWORD", "link-password-123456"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("mesh.peers[0]"), "{err}");
        let err = load_env(&[
            ("METEOMESH__MESH__ENABLED", "true"),
            ("METEOMESH__MESH__LINK_PASSWORD", "link-password-123456"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("mesh.advertise_host"), "{err}");
        let err = load_env(&[("METEOMESH__MESH__SHARED_SECRET", "short")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("mesh.shared_secret"), "{err}");
    }

    #[test]
    fn env_service_accounts() {
        let c = load_env(&[(ENV_USERS, "svc:pass-word-1, other:p:w-long-1")]).unwrap();
        assert_eq!(c.bus.users.len(), 2);
        assert_eq!(c.bus.users[0].username, "svc");
        assert_eq!(c.bus.users[1].password.expose(), "p:w-long-1");
        let err = load_env(&[(ENV_USERS, "nocolon")]).unwrap_err().to_string();
        assert!(err.contains(ENV_USERS), "{err}");
        let err = load_env(&[(ENV_USERS, "svc:short")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("bus.users[0].password"), "{err}");
    }

    #[test]
    fn broker_url_forms() {
        assert_eq!(
            BrokerUrl::parse("mqtt://broker.lan:1884").unwrap(),
            BrokerUrl {
                host: "broker.lan".into(),
                port: 1884
            }
        );
        assert_eq!(BrokerUrl::parse("mqtt://10.0.0.2").unwrap().port, 1883);
        assert_eq!(BrokerUrl::parse("mqtt://[::1]:1883").unwrap().host, "::1");
        assert!(BrokerUrl::parse("http://x:1").is_err());
        assert!(BrokerUrl::parse("mqtt://:1883").is_err());
        assert!(BrokerUrl::parse("mqtt://h:0").is_err());
        assert!(BrokerUrl::parse("mqtt://h:99999").is_err());
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = load_env(&[("METEOMESH__HTTP__LISTEN", "localhost")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("http.listen") && err.contains("IP:PORT"),
            "{err}"
        );
        let err = load_env(&[("METEOMESH__STORAGE__BUSY_TIMEOUT", "soon")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("busy_timeout") && err.contains("duration"),
            "{err}"
        );
        let err = load_env(&[("METEOMESH__HTTP__COLOUR", "blue")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour") && err.contains("spelling"), "{err}");
        let err = load_env(&[("METEOMESH__LOG__LEVEL", "loud[")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.level"), "{err}");
    }
}
