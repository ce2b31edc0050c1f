//! Owns the map from live MQTT sessions on the embedded broker to the user accounts
//! they logged in as: for ACL checks, for disconnecting a user's sessions when the
//! account is deleted or its token revoked, and for presence (how many sessions each
//! username has here; every change is reported on a channel the bus publishes from).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rmqtt::types::Id;
use tokio::sync::mpsc;

use super::topics::Principal;

/// A session's account, and the login token it used as password (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSession {
    /// The account on this node; `None` for a user whose home is another mesh node
    /// (signed in with a mesh-wide token).
    pub user_id: Option<i64>,
    /// The identity across the mesh.
    pub username: String,
    /// The account's token generation at login (a password change raises it).
    pub generation: i64,
    pub jti: Option<String>,
    /// Unix seconds the login token was issued (revocations from a mesh go by it).
    pub issued_at: Option<i64>,
    /// Unix seconds when the login token expires; the session ends then.
    pub expires_at: Option<i64>,
}

/// Authenticated connections that never completed are forgotten after this long.
const PENDING_TTL: Duration = Duration::from_secs(60);

/// A user's session count on this broker changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub username: String,
    pub sessions: u32,
}

pub struct SessionRegistry {
    inner: Mutex<Registry>,
    presence: mpsc::UnboundedSender<PresenceChange>,
}

#[derive(Default)]
struct Registry {
    pending: HashMap<Id, (UserSession, Instant)>,
    live: HashMap<Id, UserSession>,
    per_user: HashMap<String, u32>,
}

impl SessionRegistry {
    pub fn new(presence: mpsc::UnboundedSender<PresenceChange>) -> SessionRegistry {
        SessionRegistry {
            inner: Mutex::new(Registry::default()),
            presence,
        }
    }

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
            let name = session.username.clone();
            // A client id reconnecting replaces its old session (rmqtt may report the
            // old one's disconnect after the new connect).
            if let Some(old) = r.live.insert(id.clone(), session) {
                self.count(&mut r, &old.username, -1);
            }
            self.count(&mut r, &name, 1);
        }
    }

    pub fn disconnected(&self, id: &Id) {
        let mut r = self.lock();
        r.pending.remove(id);
        if let Some(old) = r.live.remove(id) {
            self.count(&mut r, &old.username, -1);
        }
    }

    fn count(&self, r: &mut Registry, username: &str, delta: i32) {
        let n = r.per_user.entry(username.to_owned()).or_default();
        *n = n.saturating_add_signed(delta);
        let sessions = *n;
        if sessions == 0 {
            r.per_user.remove(username);
        }
        let _ = self.presence.send(PresenceChange {
            username: username.to_owned(),
            sessions,
        });
    }

    /// Who a session belongs to; `None` for anonymous sessions.
    pub fn principal_of(&self, id: &Id) -> Option<(Option<i64>, String)> {
        let r = self.lock();
        r.live
            .get(id)
            .or_else(|| r.pending.get(id).map(|(s, _)| s))
            .map(|s| (s.user_id, s.username.clone()))
    }

    /// Sessions of `user_id`; with `jti`, only those that logged in with that token.
    pub fn sessions_of(&self, user_id: i64, jti: Option<&str>) -> Vec<Id> {
        self.lock()
            .live
            .iter()
            .filter(|(_, s)| {
                s.user_id == Some(user_id) && (jti.is_none() || s.jti.as_deref() == jti)
            })
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

/// Borrows a principal for the ACL functions.
pub fn principal(p: &Option<(Option<i64>, String)>) -> Option<Principal<'_>> {
    p.as_ref().map(|(user_id, username)| Principal {
        user_id: *user_id,
        username,
    })
}
