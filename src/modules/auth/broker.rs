//! The credential check the embedded broker asks for: MQTT logins (a password or a
//! login token) and whether a live session's account still stands.

use super::*;

impl AuthService {
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
}

impl AuthService {
    /// Whether account `user_id` exists and passes `check`; `true` when the database
    /// cannot say (a storage hiccup must not end a live account's sessions).
    async fn account_matches(&self, user_id: i64, check: impl FnOnce(&User) -> bool) -> bool {
        match self.inner.db.users().by_id(user_id).await {
            Ok(user) => user.as_ref().is_some_and(check),
            Err(e) => {
                tracing::warn!(error = %e, "cannot check whether an account exists");
                true
            }
        }
    }
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
            return match self.inner.db.mesh().is_revoked(&name, &jti, iat).await {
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
            .users()
            .session_check(user_id, jti.as_deref(), &name, &own)
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
