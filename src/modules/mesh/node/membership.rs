//! Who is here and who is who: this broker's presence, alerts and board events handed
//! to the mesh, account changes (revocations), and the usernames each node holds.

use super::*;

impl Node {
    pub(super) async fn on_local_presence(&mut self, m: Incoming) {
        let Some(user) = m.topic.rsplit('/').next().map(str::to_owned) else {
            return;
        };
        let sessions = if m.payload.is_empty() {
            0
        } else {
            match m.decode::<LocalPresence>() {
                Ok(p) => p.sessions,
                Err(_) => return,
            }
        };
        if self.presence.set_local(&user, sessions) {
            self.users_count
                .store(self.presence.local_count(), Ordering::Relaxed);
            self.presence_changed();
            self.announce_presence();
        }
    }

    pub(super) fn presence_changed(&mut self) {
        self.online_dirty = true;
        self.dir_publish = true;
    }

    pub(super) fn announce_presence(&mut self) {
        let data = serde_json::to_value(self.presence.own()).unwrap_or_default();
        let env = self.new_envelope("", Target::All, contract::TAG_PRESENCE, data);
        self.route(&env, None);
    }

    pub(super) async fn on_alert(&mut self, m: Incoming) {
        let Ok(alert) = m.decode::<AlertEvent>() else {
            return;
        };
        let id = alert.user_id;
        let name = match self.usernames.get(&id) {
            Some(n) => n.clone(),
            None => match self.db.users().by_id(id).await {
                Ok(Some(u)) => {
                    self.usernames.insert(id, u.username.clone());
                    u.username
                }
                _ => return,
            },
        };
        if !self.online_anywhere(&name) {
            return;
        }
        let data = serde_json::to_value(&alert).unwrap_or_default();
        let env = self.new_envelope("", Target::User(name.clone()), contract::TAG_ALERT, data);
        if self.presence.is_local(&name) {
            self.deliver_local(&name, &env).await;
        }
        self.route(&env, None);
    }

    /// A board event happened here: every other node applies it too.
    pub(super) fn on_local_board_event(&mut self, m: Incoming) {
        if !self.cfg.enabled {
            return;
        }
        let Ok(data) = serde_json::from_slice::<Value>(&m.payload) else {
            return;
        };
        let env = self.new_envelope("", Target::All, contract::TAG_BOARD, data);
        self.route(&env, None);
    }

    /// Tokens of a user of this node were revoked: tell the other nodes, which accept
    /// this node's tokens with a mesh-wide secret.
    pub(super) fn on_account_event(&mut self, m: Incoming) {
        if !self.cfg.enabled {
            return;
        }
        let Ok(event) = m.decode::<AccountEvent>() else {
            return;
        };
        if event.username.is_empty() {
            return;
        }
        let now = system_now();
        let (jti, issued_before) = match event.change {
            AccountChange::Created => {
                self.names_due = true;
                return;
            }
            AccountChange::TokenRevoked { jti } => (Some(jti), None),
            AccountChange::Deleted => {
                self.names_due = true;
                (None, Some(now))
            }
            AccountChange::TokensRevoked => (None, Some(now)),
        };
        let revocation = Revocation {
            user: event.username,
            jti,
            issued_before,
            expires_at: now + i64::try_from(self.token_lifetime.as_secs()).unwrap_or(i64::MAX / 4),
        };
        let data = serde_json::to_value(revocation).unwrap_or_default();
        let env = self.new_envelope("", Target::All, contract::TAG_REVOKE, data);
        self.route(&env, None);
    }

    /// Tells every node which usernames this node's accounts hold (the whole list).
    pub(super) async fn announce_names(&mut self) {
        let claims = match self.db.mesh().local_name_claims().await {
            Ok(claims) => claims,
            Err(e) => {
                storage_failed("cannot read this node's usernames", &e);
                return;
            }
        };
        self.names_due = false;
        // The list travels in one envelope, so it must fit one MQTT packet: about 8,000
        // names at the default `bus.max_packet_size`. The oldest accounts go first.
        let mut room = self.link_settings.max_packet_size.saturating_sub(4096);
        let total = claims.len();
        let names: Vec<ClaimedName> = claims
            .into_iter()
            .take_while(|c| {
                let size = c.name.len() + 32;
                room = room.saturating_sub(size);
                room > 0
            })
            .map(|c| ClaimedName {
                name: c.name,
                since: c.since,
            })
            .collect();
        if names.len() < total {
            tracing::warn!(
                told = names.len(),
                accounts = total,
                "not every username fits one mesh packet (raise bus.max_packet_size): \
                 the newest accounts' names are not protected mesh-wide"
            );
        }
        let data = serde_json::to_value(NameClaims { names }).unwrap_or_default();
        let env = self.new_envelope("", Target::All, contract::TAG_NAMES, data);
        self.route(&env, None);
    }

    /// Stores what node `origin` claims, and warns about this node's accounts whose name
    /// an earlier account there holds (they are kept out of the mesh).
    pub(super) async fn on_name_claims(&mut self, origin: &str, claims: NameClaims) {
        if origin.is_empty() || origin == self.own_id {
            return;
        }
        // A peer is trusted, but its list is still bounded and shaped like usernames.
        let claims: Vec<store::NameClaim> = claims
            .names
            .into_iter()
            .filter(|c| crate::domain::user::normalize_username(&c.name).is_ok_and(|n| n == c.name))
            .take(MAX_NAME_CLAIMS)
            .map(|c| store::NameClaim {
                name: c.name,
                since: c.since,
            })
            .collect();
        let (home, own) = (origin.to_owned(), self.own_id.clone());
        let lost = match self
            .db
            .mesh()
            .replace_name_claims(&home, &claims, &own)
            .await
        {
            Ok(lost) => lost,
            Err(e) => {
                storage_failed("cannot store another node's usernames", &e);
                return;
            }
        };
        let now_lost: HashSet<String> = lost.iter().map(|(n, _)| n.clone()).collect();
        for (name, holder) in lost {
            if !self.names_lost.contains(&name) {
                tracing::warn!(
                    username = name,
                    holder,
                    "an earlier account of another mesh node holds this account's name: \
                     it is kept out of messaging and MQTT until renamed or removed"
                );
            }
        }
        self.names_lost = now_lost;
    }
}
