//! Registration, password logins (throttled), password checks, and login tokens.

use super::*;

impl AuthService {
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
            .users()
            .insert_first_admin(&NewUser {
                username: &name,
                password_hash: &hash,
                telegram_chat_id,
                // An administrator vouches for the chat; a user typing one must prove it
                // (the notifier sends a code to it).
                telegram_chat_confirmed: by_admin,
                role,
                timezone: &timezone,
                now: system_now(),
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

    pub(super) async fn check_password_inner(
        &self,
        name: &str,
        password: &str,
        client: &LoginClient,
    ) -> Result<User, AuthError> {
        let lookup = name.to_owned();
        let user = self.inner.db.users().by_username(&lookup).await?;
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
    pub(super) async fn authenticate_scoped(
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
        let (revoked, user) = self.inner.db.users().token_check(&jti, user_id).await?;
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
}
