//! The node's timers and questions: expiry of seen ids, waiters and queues, saving
//! the directory, publishing the online list, the API calls, and the status report.

use super::*;

impl Node {
    pub(super) async fn expire(&mut self) {
        let cutoff = system_now() - i64::try_from(self.cfg.node_expiry.as_secs()).unwrap_or(0);
        let patience = self.patience();
        let now = Instant::now();
        let links = &self.links;
        let gone = self.dir.expire(cutoff, |id| {
            links
                .values()
                .any(|l| l.node.as_deref() == Some(id) && l.usable(now, patience))
        });
        for id in gone {
            tracing::info!(
                node = id,
                "mesh node forgotten: not heard of within node_expiry"
            );
            self.presence.forget(&id);
            let node = id.clone();
            if let Err(e) = self.db.mesh().forget_name_claims(&node).await {
                storage_failed("cannot forget a node's usernames", &e);
            }
            let addrs: Vec<String> = self
                .links
                .iter()
                .filter(|(_, l)| l.node.as_deref() == Some(id.as_str()))
                .map(|(a, _)| a.clone())
                .collect();
            for a in addrs {
                if let Some(link) = self.links.remove(&a) {
                    link.stop().await;
                }
            }
            self.dir_changed();
        }
        let now_s = system_now();
        match self.db.mesh().expire(now_s).await {
            Ok(0) => {}
            Ok(n) => {
                self.metrics.mesh.queued.sub(n as i64);
                tracing::info!(expired = n, "queued mesh messages expired unread");
            }
            Err(e) => storage_failed("cannot expire queued messages", &e),
        }
        if let Err(e) = self.db.mesh().prune_revocations(now_s).await {
            storage_failed("cannot prune token revocations", &e);
        }
        let cutoff = Instant::now() - LOCAL_ACK_WINDOW.min(Duration::from_secs(600));
        self.local_deliveries.retain(|_, (_, at)| *at > cutoff);
    }

    pub(super) async fn save_directory(&mut self) {
        let nodes = self.dir.to_stored();
        if let Err(e) = self.db.mesh().save_nodes(&nodes).await {
            storage_failed("cannot store the node list", &e);
        } else {
            self.dir_dirty = false;
        }
    }

    pub(super) async fn flush_acked(&mut self) {
        if self.acked_queued.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.acked_queued);
        match self.db.mesh().remove(&ids).await {
            Ok(n) => self.metrics.mesh.queued.sub(n as i64),
            Err(e) => storage_failed("cannot remove acknowledged messages", &e),
        }
    }

    pub(super) async fn on_fast_tick(&mut self) {
        if self.names_due && self.cfg.enabled {
            self.announce_names().await;
        }
        let now = Instant::now();
        let expired: Vec<String> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(w) = self.waiters.remove(&id) {
                self.finish(&id, w);
            }
        }
        let patience = self.patience();
        let usable = self
            .links
            .values()
            .filter(|l| l.usable(now, patience))
            .count();
        if usable != self.links_usable {
            self.links_usable = usable;
            self.metrics.mesh.links_up.set(usable as i64);
            self.online_dirty = true;
            self.dir_publish = true;
            // A link came or went: queued messages may have a way now.
            self.presence_changed();
        }
        if self.online_dirty {
            self.online_dirty = false;
            let linked = |n: &str| self.linked(n);
            let online = OnlineUsers {
                users: self.presence.online(now, &linked),
            };
            self.metrics
                .mesh
                .users_online
                .set(online.users.len() as i64);
            if self.last_online.as_ref() != Some(&online) {
                // Users who came back or moved to another node: their queued messages go
                // now instead of at the next retry.
                let before: HashMap<&str, &Vec<String>> = self
                    .last_online
                    .iter()
                    .flat_map(|o| o.users.iter())
                    .map(|u| (u.user.as_str(), &u.nodes))
                    .collect();
                for u in &online.users {
                    if before.get(u.user.as_str()) != Some(&&u.nodes)
                        && let Some(r) = self.retry.get_mut(&u.user)
                    {
                        *r = (now, RETRY_FIRST);
                    }
                }
                if let Err(e) = self.bus.publish(contract::MESH_ONLINE, &online).await {
                    tracing::debug!(error = %e, "cannot publish the online list");
                }
                self.last_online = Some(online);
            }
        }
        // Clients choose nodes from the directory: publish changes promptly, but at most
        // five times a second.
        if self.dir_publish && self.dir_published.elapsed() >= Duration::from_millis(200) {
            self.dir_publish = false;
            self.dir_published = now;
            let directory = self.directory_view();
            if let Err(e) = self.bus.publish(contract::MESH_DIRECTORY, &directory).await {
                tracing::debug!(error = %e, "cannot publish the directory");
            }
        }
        // Acknowledged rows still count against the recipient's cap: remove them soon
        // (one transaction per tick, however many acks came in).
        self.flush_acked().await;
    }

    pub(super) async fn on_slow_tick(&mut self) {
        self.flush_acked().await;
        if self.dir_dirty {
            self.save_directory().await;
        }
        // Queued messages whose recipient is reachable and whose retry is due.
        let now = Instant::now();
        let recipients = match self.db.mesh().recipients().await {
            Ok(r) => r,
            Err(_) => return,
        };
        for user in recipients {
            let due = self.retry.get(&user).is_none_or(|r| r.0 <= now);
            if due && self.online_anywhere(&user) {
                self.resend_queued(user).await;
            }
        }
    }

    pub(super) fn directory_view(&self) -> contract::Directory {
        let nodes = self
            .dir
            .all()
            .map(|k| {
                let id = &k.advert.id;
                let link = self.links.values().find(|l| l.node.as_ref() == Some(id));
                let mut advert = k.advert.clone();
                let reachable = *id == self.own_id || self.linked(id) == Some(true);
                if let Some(users) = self.presence.users_on(id) {
                    advert.users = users;
                }
                if !reachable && self.linked(id).is_some() {
                    // Its link is down: whoever was there has gone elsewhere or is gone.
                    advert.users = 0;
                }
                contract::DirectoryEntry {
                    reachable,
                    rtt_ms: link.and_then(|l| l.rtt).map(|d| d.as_secs_f64() * 1000.0),
                    advert,
                }
            })
            .collect();
        contract::Directory {
            node: self.own_id.clone(),
            nodes,
        }
    }

    pub(super) async fn on_api(&mut self, call: ApiCall) {
        match call {
            ApiCall::Send { from, req, reply } => self.send(&from, req, Reply::Api(reply)).await,
            ApiCall::Online { reply } => {
                let linked = |n: &str| self.linked(n);
                let _ = reply.send(self.presence.online(Instant::now(), &linked));
            }
            ApiCall::Status { reply } => {
                let _ = reply.send(self.status().await);
            }
        }
    }

    pub(super) async fn status(&self) -> MeshStatus {
        let now = Instant::now();
        let patience = self.patience();
        let view = self.directory_view();
        let nodes = view
            .nodes
            .into_iter()
            .map(|e| {
                let id = e.advert.id.clone();
                let link = self
                    .links
                    .values()
                    .find(|l| l.node.as_ref() == Some(&id))
                    .map(|l| LinkStatus {
                        state: if l.usable(now, patience) {
                            "up"
                        } else if l.connected {
                            "silent"
                        } else {
                            "down"
                        }
                        .into(),
                        for_seconds: now.duration_since(l.since).as_secs(),
                        rtt_ms: l.rtt.map(|d| d.as_secs_f64() * 1000.0),
                    });
                NodeStatusEntry {
                    this_node: id == self.own_id,
                    last_seen_at: self.dir.get(&id).map(|k| k.last_seen_at),
                    advert: e.advert,
                    link,
                }
            })
            .collect();
        let pending_links = self
            .links
            .values()
            .filter(|l| l.node.is_none())
            .map(|l| l.addr.clone())
            .collect();
        let counter = |outcome: &str| -> u64 {
            [
                "msg", "ack", "alert", "presence", "adverts", "ping", "pong", "revoke", "board",
                "names", "other",
            ]
            .iter()
            .map(|tag| {
                self.metrics
                    .mesh
                    .envelopes
                    .with_label_values(&[outcome, tag])
                    .get()
            })
            .sum()
        };
        let duplicate_messages = self
            .metrics
            .mesh
            .envelopes
            .with_label_values(&["duplicate", contract::TAG_MESSAGE])
            .get();
        let queued = self.db.mesh().waiting_count().await.unwrap_or(0);
        let remote_names = self.db.mesh().remote_name_count().await.unwrap_or(0);
        MeshStatus {
            node: self.own_id.clone(),
            enabled: self.cfg.enabled,
            nodes,
            unidentified_peers: pending_links,
            envelopes_received: counter("received"),
            envelopes_sent: counter("sent"),
            duplicates_dropped: counter("duplicate"),
            duplicate_messages_dropped: duplicate_messages,
            ttl_exceeded: counter("ttl_exceeded"),
            local_deliveries: self.metrics.mesh.local_deliveries.get(),
            queued_messages: queued,
            names_held_elsewhere: remote_names,
            users_online: self.last_online.as_ref().map_or(0, |o| o.users.len()),
        }
    }
}
