//! Owns accounts and authentication: registration, login with throttling, JWT login
//! tokens and their revocation, account changes, admin actions, and the credential check
//! the embedded broker uses for MQTT logins.
//!
//! Publishes: `system/accounts` ([`AccountEvent`]) when an account's live sessions must
//! end (deleted, password changed, token revoked). Consumes nothing.

mod broker;
mod login;
mod mesh;
mod password;
mod throttle;
mod token;

pub use mesh::MeshIdentity;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

pub use password::Verified;
pub use token::{Claims, install_provider as install_jwt_provider, looks_like_jwt};

use crate::bus::{BusClient, Refusal, UserAuthenticator, UserSession};
use crate::config::{AuthConfig, Secret};
use crate::contract::{ACCOUNT_EVENTS, AccountChange, AccountEvent};
use crate::domain::time::system_now;
use crate::domain::user::{
    MAX_PASSWORD_LEN, Role, Units, check_password, check_timezone, normalize_username,
};
use crate::domain::validation::FieldError;
use crate::metrics::Metrics;
use crate::storage::users::{AdminGuarded, NewUser, User};
use crate::storage::{Db, StorageError};
use password::Hasher;
pub use throttle::DEVICE_TRUST;
use throttle::{Key, Throttle};
use token::{BOARD_SCOPE, TokenKeys};

/// How long a whiteboard page's broker credential is valid.
pub const BOARD_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// How often expired denylist entries are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("the username is taken")]
    UsernameTaken,
    #[error("wrong username or password")]
    BadCredentials,
    #[error("too many failed logins; try again later")]
    Throttled { retry_after: Duration },
    #[error("registration is closed; ask an administrator for an account")]
    RegistrationClosed,
    #[error("missing, invalid, expired or revoked token")]
    Unauthenticated,
    #[error("administrators only")]
    Forbidden,
    #[error("no such user")]
    NotFound,
    #[error("this would leave no administrator")]
    LastAdmin,
    /// The account's name belongs to an earlier account of another mesh node, so this
    /// account cannot take part in the mesh (its weather alerts still work).
    #[error(
        "the name {name} belongs to an earlier account of mesh node {node}; messaging and \
         MQTT are off for this account"
    )]
    NameHeldElsewhere { name: String, node: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Hashing(String),
}

impl From<password::HashError> for AuthError {
    fn from(e: password::HashError) -> Self {
        AuthError::Hashing(e.to_string())
    }
}

/// A verified login token and the account it belongs to.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: User,
    pub claims: Claims,
}

/// A freshly issued token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub claims: Claims,
    pub user: User,
    /// After an HTTP login: the device cookie to set (see [`LoginClient`]).
    pub device: Option<String>,
}

/// Changes a user asks for on their own account; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct AccountUpdate {
    /// `Some(None)` clears the chat id.
    pub telegram_chat_id: Option<Option<i64>>,
    pub timezone: Option<String>,
    pub units: Option<Units>,
    /// (current password, new password)
    pub password: Option<(String, String)>,
}

/// Which door a login comes through.
#[derive(Debug, Clone, Copy)]
pub enum Channel {
    Http,
    Mqtt,
}

/// Who is logging in, for throttling: the channel, the client's address, and on HTTP the
/// device cookie it presented. A device that logged in to the account before is
/// throttled on its own, so failures from elsewhere never lock it out (on MQTT the
/// client's address stands for the device).
#[derive(Debug, Clone)]
pub struct LoginClient {
    pub channel: Channel,
    pub ip: Option<IpAddr>,
    pub device: Option<String>,
}

impl LoginClient {
    pub fn http(ip: IpAddr, device: Option<&str>) -> LoginClient {
        LoginClient {
            channel: Channel::Http,
            ip: Some(ip),
            // Only a well-formed cookie names a device; anything else is no device.
            device: device
                .filter(|d| crate::domain::ids::is_hex16(d))
                .map(str::to_owned),
        }
    }

    /// The device key for `account`, if the client has one.
    fn device_key(&self) -> Option<String> {
        match self.channel {
            Channel::Http => self.device.clone(),
            Channel::Mqtt => self.ip.map(|ip| format!("mqtt-ip:{ip}")),
        }
    }
}

impl Channel {
    fn label(self) -> &'static str {
        match self {
            Channel::Http => "http",
            Channel::Mqtt => "mqtt",
        }
    }
}

#[derive(Clone)]
pub struct AuthService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    cfg: AuthConfig,
    /// This node's id, written into the tokens it issues as their home.
    node_id: String,
    /// Tokens signed with the mesh's shared secret are accepted from any node.
    mesh_wide: bool,
    hasher: Hasher,
    keys: TokenKeys,
    throttle: Throttle,
    metrics: Arc<Metrics>,
    events: OnceLock<BusClient>,
}

impl AuthService {
    /// Loads (or generates and stores) the token key and prepares the hasher.
    /// With a non-empty `mesh_secret` tokens are signed with it and tokens of other
    /// nodes of the mesh are accepted (see [`AuthService::identify`]).
    pub async fn new(
        db: Db,
        cfg: &AuthConfig,
        mesh_secret: &Secret,
        metrics: Arc<Metrics>,
    ) -> Result<AuthService, AuthError> {
        let secret = if !mesh_secret.is_empty() {
            mesh_secret.expose().to_owned()
        } else if cfg.jwt_secret.is_empty() {
            db.meta().jwt_secret().await?
        } else {
            cfg.jwt_secret.expose().to_owned()
        };
        let node_id = db.meta().node_id().await?;
        let hasher = Hasher::new(cfg.hash_concurrency);
        let service = AuthService {
            inner: Arc::new(Inner {
                db,
                keys: TokenKeys::new(secret.as_bytes(), cfg.token_lifetime),
                throttle: Throttle::new(
                    cfg.login_max_failures,
                    cfg.login_failure_window,
                    cfg.login_first_delay,
                ),
                cfg: cfg.clone(),
                node_id,
                mesh_wide: !mesh_secret.is_empty(),
                hasher,
                metrics,
                events: OnceLock::new(),
            }),
        };
        service.refresh_user_gauge().await?;
        Ok(service)
    }

    /// Connects the service to the bus for its account events. Until then (and in
    /// tools without a bus) events are not sent.
    pub fn attach_bus(&self, client: BusClient) {
        let _ = self.inner.events.set(client);
    }

    pub fn open_registration(&self) -> bool {
        self.inner.cfg.open_registration
    }

    pub fn token_lifetime(&self) -> Duration {
        self.inner.cfg.token_lifetime
    }

    /// Writes a changed account back.
    async fn store(&self, user: &User) -> Result<(), AuthError> {
        let stored = user.clone();
        self.inner.db.users().update(&stored).await?;
        Ok(())
    }

    async fn refresh_user_gauge(&self) -> Result<(), AuthError> {
        let n = self.inner.db.users().count().await?;
        self.inner.metrics.auth.users.set(n);
        Ok(())
    }

    async fn publish(&self, user_id: i64, username: &str, change: AccountChange) {
        if matches!(
            change,
            AccountChange::TokensRevoked | AccountChange::Deleted
        ) {
            // A new password (or no account): no device keeps its exemption.
            self.inner.throttle.forget_devices(username);
        }
        let event = AccountEvent {
            user_id,
            username: username.to_owned(),
            change,
        };
        if let Some(bus) = self.inner.events.get()
            && let Err(e) = bus.publish(ACCOUNT_EVENTS, &event).await
        {
            tracing::warn!(error = %e, user_id, "cannot announce account change");
        }
    }

    /// The whiteboard page's broker credential for `auth`'s account: board topics only,
    /// valid for [`BOARD_CREDENTIAL_LIFETIME`], never accepted over HTTP. The page asks
    /// for a fresh one before each connection, so its login token stays in the cookie.
    pub fn issue_board_credential(&self, auth: &Authenticated) -> IssuedToken {
        self.issue_scoped(auth.user.clone(), (BOARD_SCOPE, BOARD_CREDENTIAL_LIFETIME))
    }

    /// A login token for `user`.
    fn issue(&self, user: User) -> IssuedToken {
        // The keys cap every lifetime at the login lifetime.
        self.issue_scoped(user, ("", Duration::MAX))
    }

    fn issue_scoped(&self, user: User, scope: (&str, Duration)) -> IssuedToken {
        let (token, claims) = self.inner.keys.issue_scoped(
            user.id,
            user.token_generation,
            (&user.username, &self.inner.node_id, &user.account_key),
            scope,
            crate::domain::time::now(),
        );
        IssuedToken {
            token,
            claims,
            user,
            device: None,
        }
    }

    /// Puts the token on the denylist until it would have expired anyway.
    pub async fn logout(&self, auth: &Authenticated) -> Result<(), AuthError> {
        let (jti, user_id, exp) = (auth.claims.jti.clone(), auth.user.id, auth.claims.exp);
        self.inner
            .db
            .users()
            .revoke_token(&jti, user_id, exp)
            .await?;
        self.publish(
            user_id,
            &auth.user.username,
            AccountChange::TokenRevoked {
                jti: auth.claims.jti.clone(),
            },
        )
        .await;
        Ok(())
    }

    /// Applies the user's own changes. A password change voids every earlier token and
    /// returns a fresh one for the caller.
    pub async fn update_account(
        &self,
        auth: &Authenticated,
        update: AccountUpdate,
    ) -> Result<(User, Option<IssuedToken>), AuthError> {
        let mut errors = Vec::new();
        let mut user = auth.user.clone();
        if let Some(chat) = update.telegram_chat_id {
            if chat != user.telegram_chat_id {
                user.telegram_chat_confirmed = false;
            }
            user.telegram_chat_id = chat;
        }
        if let Some(tz) = update.timezone {
            match check_timezone(&tz) {
                Ok(()) => user.timezone = tz,
                Err(e) => errors.push(e),
            }
        }
        if let Some(units) = update.units {
            user.units = units;
        }
        let mut password_changed = false;
        if let Some((current, new)) = &update.password {
            if let Err(e) = check_password("new_password", new) {
                errors.push(e);
            } else if self
                .inner
                .hasher
                .verify(current, Some(&auth.user.password_hash))
                .await
                == Verified::No
            {
                errors.push(FieldError::new(
                    "current_password",
                    "is not your current password",
                ));
            } else {
                user.password_hash = self.inner.hasher.hash(new).await?;
                password_changed = true;
            }
        }
        if !errors.is_empty() {
            return Err(AuthError::Invalid(errors));
        }
        let now = system_now();
        user.updated_at = now;
        if password_changed {
            user.token_generation += 1;
        }
        self.store(&user).await?;
        let fresh = if password_changed {
            self.publish(user.id, &user.username, AccountChange::TokensRevoked)
                .await;
            Some(self.issue(user.clone()))
        } else {
            None
        };
        Ok((user, fresh))
    }

    /// Deletes an account and everything it owns (foreign keys cascade). Refuses to
    /// delete the last administrator.
    pub async fn delete_user(&self, user_id: i64) -> Result<(), AuthError> {
        let username = match self
            .inner
            .db
            .users()
            .delete_keeping_an_admin(user_id)
            .await?
        {
            AdminGuarded::Done(name) => name,
            AdminGuarded::NotFound => return Err(AuthError::NotFound),
            AdminGuarded::LastAdmin => return Err(AuthError::LastAdmin),
        };
        tracing::info!(user_id, "account deleted");
        self.refresh_user_gauge().await?;
        self.publish(user_id, &username, AccountChange::Deleted)
            .await;
        Ok(())
    }

    pub async fn list_users(&self) -> Result<Vec<User>, AuthError> {
        Ok(self.inner.db.users().list().await?)
    }

    pub async fn user_by_name(&self, username: &str) -> Result<User, AuthError> {
        let name = username.trim().to_lowercase();
        self.inner
            .db
            .users()
            .by_username(&name)
            .await?
            .ok_or(AuthError::NotFound)
    }

    /// Sets a new password without the old one (admin on the device); voids every
    /// earlier token of the account.
    pub async fn set_password(&self, user_id: i64, new: &str) -> Result<User, AuthError> {
        check_password("password", new).map_err(|e| AuthError::Invalid(vec![e]))?;
        let mut user = self.user(user_id).await?;
        user.password_hash = self.inner.hasher.hash(new).await?;
        user.token_generation += 1;
        user.updated_at = system_now();
        self.store(&user).await?;
        self.publish(user.id, &user.username, AccountChange::TokensRevoked)
            .await;
        Ok(user)
    }

    pub async fn user(&self, user_id: i64) -> Result<User, AuthError> {
        self.inner
            .db
            .users()
            .by_id(user_id)
            .await?
            .ok_or(AuthError::NotFound)
    }

    /// Sets a user's role; refuses to demote the last administrator.
    pub async fn set_role(&self, user_id: i64, role: Role) -> Result<User, AuthError> {
        let now = system_now();
        match self
            .inner
            .db
            .users()
            .set_role_keeping_an_admin(user_id, role, now)
            .await?
        {
            AdminGuarded::Done(user) => Ok(user),
            AdminGuarded::NotFound => Err(AuthError::NotFound),
            AdminGuarded::LastAdmin => Err(AuthError::LastAdmin),
        }
    }

    /// Prunes expired denylist entries every hour until `shutdown`.
    pub async fn run_pruner(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(PRUNE_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match self.inner.db.users().prune_revoked_tokens(system_now()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(pruned = n, "expired revoked tokens pruned"),
                        Err(e) => tracing::warn!(error = %e, "cannot prune revoked tokens"),
                    }
                }
                _ = shutdown.cancelled() => break,
            }
        }
    }
}
