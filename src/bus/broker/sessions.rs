//! Owns the map from live MQTT sessions on the embedded broker to the user accounts
//! they logged in as: for ACL checks, for disconnecting a user's sessions when the
//! account is deleted or its token revoked, and for presence (how many sessions each
//! username has here; every change is reported on a channel the bus publishes from).
//!
//! It also owns which identity each client id belongs to. A client id held by a live
//! session, or by a stored persistent session, belongs to the identity that created it
//! until that session ends: no other identity may connect with it (which would hand over
//! its subscriptions and queued messages). Each user's sessions are counted against a cap.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rmqtt::types::Id;
use tokio::sync::mpsc;

/// A session's account, and the login token it used as password (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSession {
    /// The account on this node; `None` for a user whose home is another mesh node
    /// (signed in with a mesh-wide token).
    pub user_id: Option<i64>,
    /// The account's random key (`None` with `user_id`): tells this account from any
    /// other that ever had the same id.
    pub account_key: Option<String>,
    /// The identity across the mesh.
    pub username: String,
    /// The account's token generation at login (a password change raises it).
    pub generation: i64,
    /// Logged in with the whiteboard page's credential: board topics only.
    pub board_only: bool,
    pub jti: Option<String>,
    /// Unix seconds the login token was issued (revocations from a mesh go by it).
    pub issued_at: Option<i64>,
    /// Unix seconds when the login token expires; the session ends then.
    pub expires_at: Option<i64>,
}

/// Authenticated connections that never completed are forgotten after this long.
const PENDING_TTL: Duration = Duration::from_secs(60);

/// Who may own a client id. Two sessions are the same identity only when their owners
/// are equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// meteomesh's own modules (the internal credential).
    Internal,
    /// A service account from config (the mesh link account among them).
    Service(String),
    /// A user account: `local:{id}:{account key}`, or `mesh:{username}` for a user whose
    /// home is another node.
    User(String),
    /// A client without a username (only with `bus.allow_anonymous`).
    Anonymous,
}

impl Owner {
    pub fn of_user(session: &UserSession) -> Owner {
        // A whiteboard credential is an identity of its own: it must not pick up a
        // stored session of its account, whose subscriptions reach beyond the boards.
        let kind = if session.board_only { "board-" } else { "" };
        match (session.user_id, &session.account_key) {
            (Some(id), Some(key)) => Owner::User(format!("{kind}local:{id}:{key}")),
            _ => Owner::User(format!("{kind}mesh:{}", session.username)),
        }
    }
}

/// Why a client id cannot be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimRefused {
    /// Another identity holds it (live, or as a stored persistent session).
    Taken,
    /// The identity already has as many sessions as it may.
    TooManySessions,
    /// Clients (users and anonymous) hold as many sessions as the broker gives them.
    Full,
}

/// Limits on the client ids a new claim may add to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps {
    /// Client ids one owner may hold.
    pub per_owner: Option<usize>,
    /// Client ids all users and anonymous clients may hold together.
    pub clients: Option<usize>,
}

struct Claim {
    owner: Owner,
    /// The session holding the id; `None` between authentication and connection.
    session: Option<Id>,
    at: Instant,
}

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
    claims: HashMap<String, Claim>,
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

    /// Reserves `client_id` for `owner` before the connection is accepted, within
    /// `caps` (a reconnect with a client id the owner already holds always passes).
    pub fn claim(&self, client_id: &str, owner: &Owner, caps: Caps) -> Result<(), ClaimRefused> {
        let mut r = self.lock();
        let now = Instant::now();
        // Connections that authenticated but never came up hold nothing.
        r.claims
            .retain(|_, c| c.session.is_some() || now.duration_since(c.at) < PENDING_TTL);
        if let Some(c) = r.claims.get_mut(client_id) {
            if c.owner == *owner {
                c.at = now;
                return Ok(());
            }
            let abandoned = c.session.is_none() && now.duration_since(c.at) >= PENDING_TTL;
            if !abandoned {
                return Err(ClaimRefused::Taken);
            }
        }
        let held = |pred: &dyn Fn(&Owner) -> bool| {
            r.claims
                .values()
                .filter(|c| pred(&c.owner))
                .filter(|c| c.session.is_some() || now.duration_since(c.at) < PENDING_TTL)
                .count()
        };
        if let Some(cap) = caps.per_owner
            && held(&|o| o == owner) >= cap
        {
            return Err(ClaimRefused::TooManySessions);
        }
        if let Some(cap) = caps.clients
            && held(&|o| matches!(o, Owner::User(_) | Owner::Anonymous)) >= cap
        {
            return Err(ClaimRefused::Full);
        }
        r.claims.insert(
            client_id.to_owned(),
            Claim {
                owner: owner.clone(),
                session: None,
                at: now,
            },
        );
        Ok(())
    }

    /// The broker removed a session for good (clean disconnect, expiry, kick): its
    /// client id is free again, unless a newer session already holds it.
    pub fn terminated(&self, id: &Id) {
        let mut r = self.lock();
        let key: &str = &id.client_id;
        if r.claims
            .get(key)
            .is_some_and(|c| c.session.as_ref() == Some(id))
        {
            r.claims.remove(key);
        }
    }

    /// The sessions client ids are held by (to check against the broker's own list).
    pub fn claimed_sessions(&self) -> Vec<Id> {
        self.lock()
            .claims
            .values()
            .filter_map(|c| c.session.clone())
            .collect()
    }

    /// The local accounts (id, key) holding client ids, live or stored.
    pub fn accounts_holding_sessions(&self) -> Vec<(i64, String)> {
        let mut accounts: Vec<(i64, String)> = self
            .lock()
            .claims
            .values()
            .filter_map(|c| match &c.owner {
                Owner::User(key) => {
                    let (id, key) = key.strip_prefix("local:")?.split_once(':')?;
                    Some((id.parse().ok()?, key.to_owned()))
                }
                _ => None,
            })
            .collect();
        accounts.sort();
        accounts.dedup();
        accounts
    }

    /// The sessions, live or stored, of the local account `user_id`.
    pub fn sessions_of_account(&self, user_id: i64) -> Vec<Id> {
        let prefix = format!("local:{user_id}:");
        self.lock()
            .claims
            .values()
            .filter(|c| matches!(&c.owner, Owner::User(key) if key.starts_with(&prefix)))
            .filter_map(|c| c.session.clone())
            .collect()
    }

    pub fn connected(&self, id: &Id) {
        let mut r = self.lock();
        if let Some(c) = r.claims.get_mut(&*id.client_id) {
            c.session = Some(id.clone());
        }
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

    /// The user account a session logged in as; `None` for other sessions.
    pub fn user_of(&self, id: &Id) -> Option<UserSession> {
        let r = self.lock();
        r.live
            .get(id)
            .or_else(|| r.pending.get(id).map(|(s, _)| s))
            .cloned()
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
