//! Owns `meteomesh user ...`: account management on the device, acting on the database
//! directly through the auth module (so the same validation and hashing apply). Works
//! while the service runs; a running service ends the MQTT sessions of deleted accounts
//! and changed passwords within its next 30 s sweep.

use std::io::{BufRead, IsTerminal};
use std::sync::Arc;

use super::args::UserAction;
use crate::config::Config;
use crate::domain::user::Role;
use crate::metrics::Metrics;
use crate::modules::auth::{AuthError, AuthService};
use crate::storage::{Db, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum UserCommandError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot read the password: {0}")]
    Input(std::io::Error),
}

fn parse_role(s: &str) -> Result<Role, UserCommandError> {
    Role::parse(s)
        .ok_or_else(|| UserCommandError::Usage(format!("role `{s}` is neither user nor admin")))
}

/// Asks twice on a terminal; reads one line from standard input otherwise (scripts).
fn read_password() -> Result<String, UserCommandError> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(UserCommandError::Input)?;
        let again = rpassword::prompt_password("Repeat: ").map_err(UserCommandError::Input)?;
        if first != again {
            return Err(UserCommandError::Usage("the passwords differ".into()));
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(UserCommandError::Input)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

fn describe(e: AuthError) -> UserCommandError {
    match e {
        AuthError::Invalid(fields) => UserCommandError::Usage(
            fields
                .iter()
                .map(|f| format!("{} {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        other => UserCommandError::Auth(other),
    }
}

/// Runs one `user` action and returns what to print.
pub fn run(config: &Config, action: UserAction) -> Result<String, UserCommandError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(UserCommandError::Input)?;
    runtime.block_on(async {
        let db = Db::open_config(&config.storage).await?;
        let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION")));
        let auth = AuthService::new(db, &config.auth, &config.mesh.shared_secret, metrics).await?;
        match action {
            UserAction::Add {
                username,
                role,
                telegram_chat_id,
            } => {
                let role = parse_role(&role)?;
                let password = read_password()?;
                let issued = auth
                    .register(&username, &password, telegram_chat_id, role, true)
                    .await
                    .map_err(describe)?;
                Ok(format!(
                    "created {} (id {}, {})",
                    issued.user.username,
                    issued.user.id,
                    issued.user.role.as_str()
                ))
            }
            UserAction::List => {
                let mut out = format!(
                    "{:>5}  {:<32}  {:<5}  {:<14}  {:<20}  {}\n",
                    "id", "username", "role", "telegram", "timezone", "created"
                );
                for u in auth.list_users().await? {
                    let created = jiff::Timestamp::from_second(u.created_at)
                        .map(|t| t.strftime("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_default();
                    out.push_str(&format!(
                        "{:>5}  {:<32}  {:<5}  {:<14}  {:<20}  {}\n",
                        u.id,
                        u.username,
                        u.role.as_str(),
                        u.telegram_chat_id
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "-".into()),
                        u.timezone,
                        created
                    ));
                }
                Ok(out.trim_end().to_owned())
            }
            UserAction::Delete { username } => {
                let user = auth.user_by_name(&username).await.map_err(describe)?;
                auth.delete_user(user.id).await.map_err(describe)?;
                Ok(format!("deleted {}", user.username))
            }
            UserAction::Passwd { username } => {
                let user = auth.user_by_name(&username).await.map_err(describe)?;
                let password = read_password()?;
                auth.set_password(user.id, &password)
                    .await
                    .map_err(describe)?;
                Ok(format!("password of {} changed", user.username))
            }
            UserAction::SetRole { username, role } => {
                let role = parse_role(&role)?;
                let user = auth.user_by_name(&username).await.map_err(describe)?;
                let user = auth.set_role(user.id, role).await.map_err(describe)?;
                Ok(format!("{} is now {}", user.username, user.role.as_str()))
            }
        }
    })
}
