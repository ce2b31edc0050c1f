//! Envelopes between nodes: numbering, counting, choosing links (direct to where a
//! user is, else a flood that never goes back where it came from), and what each
//! arriving envelope means by its tag.

use super::*;

impl Node {
    pub(super) fn new_envelope(
        &mut self,
        from: &str,
        to: Target,
        tag: &str,
        data: Value,
    ) -> Envelope {
        self.next_seq += 1;
        Envelope {
            id: format!("{}:{}", self.own_id, self.next_seq),
            origin: self.own_id.clone(),
            hops: 0,
            ttl: self.cfg.max_hops,
            from: from.to_owned(),
            to,
            tag: tag.to_owned(),
            data,
            reply: None,
        }
    }

    pub(super) fn count(&self, outcome: &str, env: &Envelope) {
        // Tags from peers are free text: keep the label set bounded.
        let tag = match env.tag.as_str() {
            t @ (contract::TAG_MESSAGE
            | contract::TAG_ACK
            | contract::TAG_ALERT
            | contract::TAG_PRESENCE
            | contract::TAG_ADVERTS
            | contract::TAG_PING
            | contract::TAG_PONG
            | contract::TAG_REVOKE
            | contract::TAG_NAMES
            | contract::TAG_BOARD) => t,
            _ => "other",
        };
        self.metrics
            .mesh
            .envelopes
            .with_label_values(&[outcome, tag])
            .inc();
    }

    /// `Some(usable)` for a node we have a direct link to.
    pub(super) fn linked(&self, node: &str) -> Option<bool> {
        let now = Instant::now();
        let patience = self.patience();
        self.links
            .values()
            .find(|l| l.node.as_deref() == Some(node))
            .map(|l| l.usable(now, patience))
    }

    pub(super) fn usable_link_to(&self, node: &str) -> Option<&Link> {
        let now = Instant::now();
        let patience = self.patience();
        self.links
            .values()
            .find(|l| l.node.as_deref() == Some(node) && l.usable(now, patience))
    }

    /// Sends on every usable link except towards `except` and the envelope's origin.
    pub(super) fn flood(&self, env: &Envelope, except: Option<&str>) {
        let now = Instant::now();
        let patience = self.patience();
        for link in self.links.values() {
            let node = link.node.as_deref();
            if node.is_some() && (node == except || node == Some(env.origin.as_str())) {
                continue;
            }
            if link.usable(now, patience) && link.send(&self.own_id, env) {
                self.count("sent", env);
            }
        }
    }

    pub(super) fn send_direct(&self, node: &str, env: &Envelope) -> bool {
        match self.usable_link_to(node) {
            Some(link) if link.send(&self.own_id, env) => {
                self.count("sent", env);
                true
            }
            _ => false,
        }
    }

    /// Sends an envelope on its way (this node's own, or one it relays with `hops` already
    /// raised). `except` is the node it came from.
    pub(super) fn route(&self, env: &Envelope, except: Option<&str>) {
        if env.hops > env.ttl {
            self.count("ttl_exceeded", env);
            return;
        }
        match &env.to {
            Target::Node(n) if n == &self.own_id => {}
            Target::Node(n) => {
                if !self.send_direct(n, env) {
                    self.flood(env, except);
                }
            }
            Target::User(u) => {
                let now = Instant::now();
                let linked = |n: &str| self.linked(n);
                let nodes: Vec<String> = self
                    .presence
                    .remote_nodes_of(u, now, &linked)
                    .into_iter()
                    .filter(|n| Some(n.as_str()) != except)
                    .collect();
                let all_direct =
                    !nodes.is_empty() && nodes.iter().all(|n| self.usable_link_to(n).is_some());
                if all_direct {
                    for n in &nodes {
                        self.send_direct(n, env);
                    }
                } else if !self.presence.is_local(u) || !nodes.is_empty() {
                    self.flood(env, except);
                }
            }
            Target::All => self.flood(env, except),
        }
    }

    pub(super) async fn on_link_message(&mut self, m: Incoming) {
        let Some(via) = contract::mesh_link_sender(&m.topic).map(str::to_owned) else {
            return;
        };
        let Ok(mut env) = m.decode::<Envelope>() else {
            tracing::debug!(via, "ignoring a malformed envelope");
            return;
        };
        self.count("received", &env);
        if env.origin == self.own_id || !self.seen.first_time(&env.id, Instant::now()) {
            self.count("duplicate", &env);
            return;
        }
        env.hops = env.hops.saturating_add(1);
        let for_me = matches!(&env.to, Target::Node(n) if n == &self.own_id);
        match env.tag.as_str() {
            contract::TAG_ADVERTS => self.on_adverts(env, &via),
            contract::TAG_PRESENCE => {
                if let Ok(p) = serde_json::from_value::<Presence>(env.data.clone())
                    && self.presence.merge(p, Instant::now())
                {
                    self.presence_changed();
                }
                self.route(&env, Some(&via));
            }
            contract::TAG_PING if for_me => {
                let pong = Envelope {
                    to: Target::Node(env.origin.clone()),
                    ..self.new_envelope("", Target::All, contract::TAG_PONG, env.data)
                };
                self.route(&pong, None);
            }
            contract::TAG_PONG if for_me => self.on_pong(&env.origin, env.data),
            contract::TAG_ACK if for_me => {
                if let Ok(ack) = serde_json::from_value::<MeshAck>(env.data) {
                    self.on_ack(&ack.msg, &ack.user);
                }
            }
            contract::TAG_BOARD => {
                self.pass_on_board_event(&env).await;
                self.route(&env, Some(&via));
            }
            contract::TAG_NAMES => {
                if let Ok(claims) = serde_json::from_value::<NameClaims>(env.data.clone()) {
                    self.on_name_claims(&env.origin, claims).await;
                }
                self.route(&env, Some(&via));
            }
            contract::TAG_REVOKE => {
                self.store_revocation(&env.data).await;
                self.route(&env, Some(&via));
            }
            contract::TAG_MESSAGE | contract::TAG_ALERT => self.on_user_envelope(&env, &via).await,
            _ if !for_me => self.route(&env, Some(&via)),
            _ => {}
        }
    }

    /// Adverts: relay only what was news (this is what ends advert loops).
    fn on_adverts(&mut self, mut env: Envelope, via: &str) {
        let Ok(adverts) = serde_json::from_value::<Vec<NodeAdvert>>(env.data.clone()) else {
            return;
        };
        let changed = self.dir.merge(adverts, system_now());
        if !changed.is_empty() {
            self.dir_changed();
            self.ensure_links();
            env.data = serde_json::to_value(changed).unwrap_or_default();
            self.route(&env, Some(via));
        }
    }

    /// A pong to this node's ping: the round trip to its origin.
    fn on_pong(&mut self, origin: &str, data: Value) {
        let Ok(ping) = serde_json::from_value::<LinkPing>(data) else {
            return;
        };
        let rtt = Duration::from_millis(
            u64::try_from(now_ms())
                .unwrap_or_default()
                .saturating_sub(ping.t_ms),
        );
        if let Some(link) = self
            .links
            .values_mut()
            .find(|l| l.node.as_deref() == Some(origin))
        {
            link.rtt = Some(rtt);
            self.metrics
                .mesh
                .link_rtt
                .with_label_values(&[origin])
                .set(rtt.as_secs_f64());
            self.dir_publish = true;
        }
    }

    /// Hands another node's board event to this node's board module.
    async fn pass_on_board_event(&self, env: &Envelope) {
        if let Ok(payload) = serde_json::to_vec(&env.data)
            && let Err(e) = self
                .bus
                .publish_raw(
                    contract::BOARDS_REMOTE,
                    payload,
                    contract::Qos::AtLeastOnce,
                    false,
                )
                .await
        {
            tracing::debug!(error = %e, "cannot pass on a board event");
        }
    }

    async fn store_revocation(&self, data: &Value) {
        let Ok(r) = serde_json::from_value::<Revocation>(data.clone()) else {
            return;
        };
        let stored = self
            .db
            .mesh()
            .add_revocation(&r.user, r.jti.as_deref(), r.issued_before, r.expires_at)
            .await;
        if let Err(e) = stored {
            storage_failed("cannot store a token revocation", &e);
        }
    }

    /// A message or alert for a user (or everyone): delivered to whoever is connected
    /// here, and passed on (a user with sessions on several nodes gets it on each).
    async fn on_user_envelope(&mut self, env: &Envelope, via: &str) {
        match env.to.clone() {
            Target::User(user) => {
                if self.presence.is_local(&user) {
                    self.deliver_local(&user, env).await;
                }
                self.route(env, Some(via));
            }
            Target::All => {
                let users: Vec<String> = self.presence.local_users().cloned().collect();
                for user in users.iter().filter(|u| **u != env.from) {
                    self.deliver_local(user, env).await;
                }
                self.route(env, Some(via));
            }
            Target::Node(_) => {}
        }
    }
}
