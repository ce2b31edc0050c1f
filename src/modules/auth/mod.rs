//! Owns accounts and authentication: registration, login with throttling, JWT login
//! tokens and their revocation, account changes, admin actions, and the credential check
//! the embedded broker uses for MQTT logins.
//!
//! Publishes: `system/accounts` ([`AccountEvent`]) when an account's live sessions must
//! end (deleted, password changed, token revoked). Consumes nothing.

mod password;
mod throttle;
mod token;

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
use crate::storage::users::{self, AdminGuarded, NewUser, User};
use crate::storage::{self, Db, StorageError};
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
            db.call(storage::jwt_secret).await?
        } else {
            cfg.jwt_secret.expose().to_owned()
        };
        let node_id = db.call(storage::node_id).await?;
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
        self.inner
            .db
            .call(move |c| users::update(c, &stored))
            .await?;
        Ok(())
    }

    async fn refresh_user_gauge(&self) -> Result<(), AuthError> {
        let n = self.inner.db.call(|c| users::count(c)).await?;
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

    /// Creates an account. With `by_admin` false this is self-registration, refused when
    /// registration is closed; the first account ever becomes admin.
    pub async fn register(
        &self,
        username: &str,
        password: &str,
        telegram_chat_id: Option<i64>,
        role: Role,
        by_admin: bool,
    ) -> Result<IssuedToken, AuthError> {
        if !by_admin && !self.inner.cfg.open_registration {
            return Err(AuthError::RegistrationClosed);
        }
        let mut errors = Vec::new();
        let name = normalize_username(username)
            .map_err(|e| errors.push(e))
            .ok();
        if let Err(e) = check_password("password", password) {
            errors.push(e);
        }
        let Some(name) = name.filter(|_| errors.is_empty()) else {
            return Err(AuthError::Invalid(errors));
        };
        let hash = self.inner.hasher.hash(password).await?;
        let timezone = self.inner.cfg.default_timezone.clone();
        let user = self
            .inner
            .db
            .call(move |c| {
                let new = NewUser {
                    username: &name,
                    password_hash: &hash,
                    telegram_chat_id,
                    // An administrator vouches for the chat; a user typing one must
                    // prove it (the notifier sends a code to it).
                    telegram_chat_confirmed: by_admin,
                    role,
                    timezone: &timezone,
                    now: system_now(),
                };
                users::insert_first_admin(c, &new)
            })
            .await?
            .ok_or(AuthError::UsernameTaken)?;
        tracing::info!(
            user_id = user.id,
            username = user.username,
            role = user.role.as_str(),
            "account created"
        );
        self.refresh_user_gauge().await?;
        self.publish(user.id, &user.username, AccountChange::Created)
            .await;
        Ok(self.issue(user))
    }

    /// Checks a username and password (throttled, see [`LoginClient`]). On HTTP the
    /// issued token carries the device cookie to set: the one presented, or a new one.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client: &LoginClient,
    ) -> Result<IssuedToken, AuthError> {
        let user = self.check_password(username, password, client).await?;
        let mut issued = self.issue(user);
        if matches!(client.channel, Channel::Http) {
            let device = client
                .device
                .clone()
                .unwrap_or_else(|| crate::domain::ids::hex(16));
            self.inner
                .throttle
                .trust(&issued.user.username, &device, Instant::now());
            issued.device = Some(device);
        }
        Ok(issued)
    }

    /// The password check behind [`AuthService::login`] and MQTT logins.
    pub async fn check_password(
        &self,
        username: &str,
        password: &str,
        client: &LoginClient,
    ) -> Result<User, AuthError> {
        let started = Instant::now();
        let channel = client.channel;
        let name = username.trim().to_lowercase();
        let outcome = self.check_password_inner(&name, password, client).await;
        let m = &self.inner.metrics;
        let label = match &outcome {
            Ok(_) => "success",
            Err(AuthError::Throttled { .. }) => "throttled",
            Err(AuthError::BadCredentials) => "bad_credentials",
            Err(_) => "error",
        };
        m.auth
            .logins
            .with_label_values(&[channel.label(), label])
            .inc();
        m.auth
            .duration
            .with_label_values(&[channel.label()])
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    async fn check_password_inner(
        &self,
        name: &str,
        password: &str,
        client: &LoginClient,
    ) -> Result<User, AuthError> {
        let lookup = name.to_owned();
        let user = self
            .inner
            .db
            .call(move |c| users::by_username(c, &lookup))
            .await?;
        let throttle = &self.inner.throttle;
        let now = Instant::now();
        let device = client
            .device_key()
            .filter(|d| user.is_some() && throttle.is_trusted(name, d, now));
        let keys = match device {
            // A device this account logged in from: only its own failures count.
            Some(device) => vec![Key::Device(format!("{name}/{device}"))],
            None => {
                let account = format!("user:{name}");
                let account = if user.is_some() {
                    Key::Account(account)
                } else {
                    Key::Client(account)
                };
                let ip = client.ip.map(|ip| Key::Client(format!("ip:{ip}")));
                std::iter::once(account).chain(ip).collect()
            }
        };
        let attempt = throttle
            .begin(keys, now)
            .map_err(|retry_after| AuthError::Throttled { retry_after })?;
        if password.len() > MAX_PASSWORD_LEN {
            attempt.failed(Instant::now());
            return Err(AuthError::BadCredentials);
        }
        let verdict = self
            .inner
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await;
        let Some(mut user) = user.filter(|_| verdict != Verified::No) else {
            attempt.failed(Instant::now());
            return Err(AuthError::BadCredentials);
        };
        attempt.succeeded();
        if let (Channel::Mqtt, Some(device)) = (client.channel, client.device_key()) {
            throttle.trust(name, &device, Instant::now());
        }
        if verdict == Verified::YesRehash {
            user.password_hash = self.inner.hasher.hash(password).await?;
            user.updated_at = system_now();
            self.store(&user).await?;
            tracing::info!(
                user_id = user.id,
                "password rehashed with current parameters"
            );
        }
        Ok(user)
    }

    /// Whether `password` is the user's (to confirm a destructive action).
    pub async fn confirm_password(&self, user: &User, password: &str) -> bool {
        password.len() <= MAX_PASSWORD_LEN
            && self
                .inner
                .hasher
                .verify(password, Some(&user.password_hash))
                .await
                != Verified::No
    }

    /// Verifies a token of an account on this node: signature, expiry, issued by this
    /// node, denylist, the very account it was issued for still there (its id and its
    /// random key), and issued since the account's last password change. A token of
    /// another mesh node is refused here even when its user id exists on this node:
    /// foreign users may only message ([`AuthService::identify`]).
    pub async fn authenticate(&self, token: &str) -> Result<Authenticated, AuthError> {
        self.authenticate_scoped(token, "").await
    }

    /// [`AuthService::authenticate`] for a token of exactly `scope` (`""`: a login token).
    async fn authenticate_scoped(
        &self,
        token: &str,
        scope: &str,
    ) -> Result<Authenticated, AuthError> {
        let claims = self
            .inner
            .keys
            .verify(token)
            .ok_or(AuthError::Unauthenticated)?;
        if claims.home != self.inner.node_id || claims.key.is_empty() || claims.scope != scope {
            return Err(AuthError::Unauthenticated);
        }
        let user_id = claims.user_id().ok_or(AuthError::Unauthenticated)?;
        let jti = claims.jti.clone();
        let (revoked, user) = self
            .inner
            .db
            .call(move |c| Ok((users::is_token_revoked(c, &jti)?, users::by_id(c, user_id)?)))
            .await?;
        match user {
            Some(user)
                if !revoked
                    && claims.generation == user.token_generation
                    && bool::from(claims.key.as_bytes().ct_eq(user.account_key.as_bytes())) =>
            {
                Ok(Authenticated { user, claims })
            }
            _ => Err(AuthError::Unauthenticated),
        }
    }

    /// Who a token belongs to across the mesh: a token of this node is checked fully
    /// ([`AuthService::authenticate`]); with a mesh-wide secret, a token issued by
    /// another node is accepted on its signature and expiry (its account lives there).
    pub async fn identify(&self, token: &str) -> Result<MeshIdentity, AuthError> {
        if let Some(claims) = self.foreign_claims(token).await? {
            if !claims.scope.is_empty() {
                return Err(AuthError::Unauthenticated);
            }
            return Ok(MeshIdentity {
                user_id: None,
                username: claims.name,
                claims_jti: claims.jti,
                expires_at: claims.exp,
            });
        }
        let auth = self.authenticate(token).await?;
        self.ensure_name_held(&auth.user.username).await?;
        Ok(MeshIdentity {
            user_id: Some(auth.user.id),
            username: auth.user.username,
            claims_jti: auth.claims.jti,
            expires_at: auth.claims.exp,
        })
    }

    /// The claims of a token issued by another node of the mesh: `None` for a token of
    /// this node (or without a mesh-wide secret); an error when it is invalid or its home
    /// node revoked it.
    async fn foreign_claims(&self, token: &str) -> Result<Option<Claims>, AuthError> {
        if !self.inner.mesh_wide {
            return Ok(None);
        }
        let Some(claims) = self.inner.keys.verify(token) else {
            return Ok(None);
        };
        if claims.home.is_empty() || claims.home == self.inner.node_id || claims.name.is_empty() {
            return Ok(None);
        }
        let (name, jti, iat) = (claims.name.clone(), claims.jti.clone(), claims.iat);
        let own = self.inner.node_id.clone();
        let (revoked, holder) = self
            .inner
            .db
            .call(move |c| {
                Ok((
                    storage::mesh::is_revoked(c, &name, &jti, iat)?,
                    storage::mesh::name_holder(c, &name, &own)?,
                ))
            })
            .await?;
        // One name, one person: a name held by an account of this node or of a third
        // node never speaks for the token's node here. A name no account known here
        // holds is accepted (the claim may still be on its way).
        if revoked || holder.is_some_and(|h| h != claims.home) {
            return Err(AuthError::Unauthenticated);
        }
        Ok(Some(claims))
    }

    /// Refuses an account of this node whose name an earlier account of another mesh
    /// node holds: the name, and every message to it, is that account's.
    async fn ensure_name_held(&self, username: &str) -> Result<(), AuthError> {
        let (name, own) = (username.to_owned(), self.inner.node_id.clone());
        let holder = self
            .inner
            .db
            .call(move |c| storage::mesh::name_holder(c, &name, &own))
            .await?;
        match holder {
            Some(node) if node != self.inner.node_id => Err(AuthError::NameHeldElsewhere {
                name: username.to_owned(),
                node,
            }),
            _ => Ok(()),
        }
    }

    /// Puts the token on the denylist until it would have expired anyway.
    pub async fn logout(&self, auth: &Authenticated) -> Result<(), AuthError> {
        let (jti, user_id, exp) = (auth.claims.jti.clone(), auth.user.id, auth.claims.exp);
        self.inner
            .db
            .call(move |c| users::revoke_token(c, &jti, user_id, exp))
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
            .call(move |c| users::delete_keeping_an_admin(c, user_id))
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
        Ok(self.inner.db.call(|c| users::list(c)).await?)
    }

    pub async fn user_by_name(&self, username: &str) -> Result<User, AuthError> {
        let name = username.trim().to_lowercase();
        self.inner
            .db
            .call(move |c| users::by_username(c, &name))
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
            .call(move |c| users::by_id(c, user_id))
            .await?
            .ok_or(AuthError::NotFound)
    }

    /// Sets a user's role; refuses to demote the last administrator.
    pub async fn set_role(&self, user_id: i64, role: Role) -> Result<User, AuthError> {
        let now = system_now();
        match self
            .inner
            .db
            .call(move |c| users::set_role_keeping_an_admin(c, user_id, role, now))
            .await?
        {
            AdminGuarded::Done(user) => Ok(user),
            AdminGuarded::NotFound => Err(AuthError::NotFound),
            AdminGuarded::LastAdmin => Err(AuthError::LastAdmin),
        }
    }

    /// Answers an MQTT login: a password, or a valid login token of the same user.
    pub async fn mqtt_login(
        &self,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<UserSession, AuthError> {
        if looks_like_jwt(password) {
            if let Some(claims) = self.foreign_claims(password).await? {
                if claims.name != username.trim().to_lowercase() {
                    return Err(AuthError::Unauthenticated);
                }
                return Ok(UserSession {
                    user_id: None,
                    account_key: None,
                    username: claims.name,
                    generation: claims.generation,
                    board_only: claims.scope == BOARD_SCOPE,
                    jti: Some(claims.jti),
                    issued_at: Some(claims.iat),
                    expires_at: Some(claims.exp),
                });
            }
            let scope = match self.inner.keys.verify(password) {
                Some(c) if c.scope == BOARD_SCOPE => BOARD_SCOPE,
                _ => "",
            };
            let auth = self.authenticate_scoped(password, scope).await?;
            if auth.user.username != username.trim().to_lowercase() {
                return Err(AuthError::Unauthenticated);
            }
            self.ensure_name_held(&auth.user.username).await?;
            return Ok(UserSession {
                user_id: Some(auth.user.id),
                account_key: Some(auth.user.account_key),
                username: auth.user.username,
                generation: auth.user.token_generation,
                board_only: scope == BOARD_SCOPE,
                jti: Some(auth.claims.jti),
                issued_at: Some(auth.claims.iat),
                expires_at: Some(auth.claims.exp),
            });
        }
        let client = LoginClient {
            channel: Channel::Mqtt,
            ip: client,
            device: None,
        };
        let user = self.check_password(username, password, &client).await?;
        self.ensure_name_held(&user.username).await?;
        Ok(UserSession {
            user_id: Some(user.id),
            account_key: Some(user.account_key),
            username: user.username,
            generation: user.token_generation,
            board_only: false,
            jti: None,
            issued_at: None,
            expires_at: None,
        })
    }

    /// Prunes expired denylist entries every hour until `shutdown`.
    pub async fn run_pruner(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(PRUNE_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match self.inner.db.call(|c| users::prune_revoked_tokens(c, system_now())).await {
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

impl AuthService {
    /// Whether account `user_id` exists and passes `check`; `true` when the database
    /// cannot say (a storage hiccup must not end a live account's sessions).
    async fn account_matches(&self, user_id: i64, check: impl FnOnce(&User) -> bool) -> bool {
        match self.inner.db.call(move |c| users::by_id(c, user_id)).await {
            Ok(user) => user.as_ref().is_some_and(check),
            Err(e) => {
                tracing::warn!(error = %e, "cannot check whether an account exists");
                true
            }
        }
    }
}

/// Who a request or session is across the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshIdentity {
    /// The account on this node; `None` when the user's home is another node.
    pub user_id: Option<i64>,
    pub username: String,
    pub claims_jti: String,
    pub expires_at: i64,
}

#[async_trait::async_trait]
impl UserAuthenticator for AuthService {
    async fn authenticate(
        &self,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<UserSession, Refusal> {
        match self.mqtt_login(username, password, client).await {
            Ok(session) => Ok(session),
            Err(AuthError::Throttled { .. }) => Err(Refusal::NotAuthorized),
            // The mesh module warns about such accounts when it finds them.
            Err(AuthError::NameHeldElsewhere { .. }) => Err(Refusal::NotAuthorized),
            Err(AuthError::BadCredentials | AuthError::Unauthenticated | AuthError::Invalid(_)) => {
                Err(Refusal::BadCredentials)
            }
            Err(e) => {
                tracing::error!(error = %e, "MQTT login failed on an internal error");
                Err(Refusal::NotAuthorized)
            }
        }
    }

    async fn account_exists(&self, user_id: i64, account_key: &str) -> bool {
        self.account_matches(user_id, |u| u.account_key == account_key)
            .await
    }

    async fn user_id_exists(&self, user_id: i64) -> bool {
        self.account_matches(user_id, |_| true).await
    }

    async fn still_valid(&self, session: &UserSession) -> bool {
        // A user of another node: valid unless their home node revoked the token (the
        // session also ends at token expiry).
        let Some(user_id) = session.user_id else {
            let (Some(jti), Some(iat)) = (session.jti.clone(), session.issued_at) else {
                return true;
            };
            let name = session.username.clone();
            return match self
                .inner
                .db
                .call(move |c| storage::mesh::is_revoked(c, &name, &jti, iat))
                .await
            {
                Ok(revoked) => !revoked,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot check a mesh session's token");
                    true
                }
            };
        };
        let jti = session.jti.clone();
        let (name, own) = (session.username.clone(), self.inner.node_id.clone());
        let lookup = self
            .inner
            .db
            .call(move |c| {
                let revoked = match &jti {
                    Some(jti) => users::is_token_revoked(c, jti)?,
                    None => false,
                };
                let holder = storage::mesh::name_holder(c, &name, &own)?;
                Ok((users::by_id(c, user_id)?, revoked, holder))
            })
            .await;
        match lookup {
            Ok((Some(user), false, holder)) => {
                user.token_generation == session.generation
                    && session.account_key.as_deref() == Some(user.account_key.as_str())
                    // Another node's earlier account won the name since this login.
                    && holder.is_none_or(|h| h == self.inner.node_id)
            }
            Ok(_) => false,
            // Keep the session on a storage hiccup; the next sweep asks again.
            Err(e) => {
                tracing::warn!(error = %e, "cannot check an MQTT session's account");
                true
            }
        }
    }
}
