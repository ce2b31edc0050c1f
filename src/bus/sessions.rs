//! Owns the map from live MQTT sessions on the embedded broker to the user accounts
//! they logged in as, for ACL checks and for disconnecting a user's sessions when the
//! account is deleted or its token revoked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rmqtt::types::Id;

/// A session's account, and the login token it used as password (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSession {
    pub user_id: i64,
    /// The account's token generation at login (a password change raises it).
    pub generation: i64,
    pub jti: Option<String>,
    /// Unix seconds when the login token expires; the session ends then.
    pub expires_at: Option<i64>,
}

/// Authenticated connections that never completed are forgotten after this long.
const PENDING_TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct SessionRegistry {
    inner: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    pending: HashMap<Id, (UserSession, Instant)>,
    live: HashMap<Id, UserSession>,
}

impl SessionRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn authenticated(&self, id: Id, session: UserSession) {
        let mut r = self.lock();
        let now = Instant::now();
        r.pending
            .retain(|_, (_, at)| now.duration_since(*at) < PENDING_TTL);
        r.pending.insert(id, (session, now));
    }

    pub fn connected(&self, id: &Id) {
        let mut r = self.lock();
        if let Some((session, _)) = r.pending.remove(id) {
            r.live.insert(id.clone(), session);
        }
    }

    pub fn disconnected(&self, id: &Id) {
        let mut r = self.lock();
        r.live.remove(id);
        r.pending.remove(id);
    }

    /// The user a session belongs to; `None` for anonymous sessions.
    pub fn user_of(&self, id: &Id) -> Option<i64> {
        let r = self.lock();
        r.live
            .get(id)
            .or_else(|| r.pending.get(id).map(|(s, _)| s))
            .map(|s| s.user_id)
    }

    /// Sessions of `user_id`; with `jti`, only those that logged in with that token.
    pub fn sessions_of(&self, user_id: i64, jti: Option<&str>) -> Vec<Id> {
        self.lock()
            .live
            .iter()
            .filter(|(_, s)| s.user_id == user_id && (jti.is_none() || s.jti.as_deref() == jti))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every live user session.
    pub fn live(&self) -> Vec<(Id, UserSession)> {
        self.lock()
            .live
            .iter()
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect()
    }
}
