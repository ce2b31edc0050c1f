//! Links to peers: one per node of the directory (deduplicated when two addresses
//! reach the same node), hellos, pings, and the periodic exchange of adverts.

use super::*;

impl Node {
    pub(super) fn ensure_link(&mut self, addr: &str) {
        if self.links.contains_key(addr) || addr == self.dir.own().mqtt {
            return;
        }
        if let Some(link) = Link::start(addr, &self.link_settings, self.link_events.clone()) {
            tracing::info!(peer = addr, "mesh link starting");
            self.links.insert(addr.to_owned(), link);
        }
    }

    /// Starts a link to every known node that has none (all nodes link to all).
    pub(super) fn ensure_links(&mut self) {
        if !self.cfg.enabled || !self.cfg.auto_link {
            return;
        }
        let wanted: Vec<(String, String)> = self
            .dir
            .all()
            .filter(|k| k.advert.id != self.own_id)
            .map(|k| (k.advert.id.clone(), k.advert.mqtt.clone()))
            .collect();
        for (id, addr) in wanted {
            let has = self
                .links
                .values()
                .any(|l| l.node.as_deref() == Some(id.as_str()) || l.addr == addr);
            if !has {
                self.ensure_link(&addr);
            }
        }
    }

    pub(super) fn dir_changed(&mut self) {
        self.dir_dirty = true;
        self.dir_publish = true;
        self.metrics.mesh.nodes.set(self.dir.len() as i64);
    }

    pub(super) fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Up { addr } => {
                tracing::info!(peer = addr, "mesh link up");
                // Tell the peer everything we know, and who is here.
                let hello = self.hello();
                if let Some(link) = self.links.get_mut(&addr) {
                    link.connected = true;
                    link.since = Instant::now();
                    link.last_heartbeat = None;
                    link.hello(&hello);
                }
                self.presence_changed();
                self.names_due = true;
            }
            LinkEvent::Down { addr } => {
                if let Some(link) = self.links.get_mut(&addr) {
                    if link.connected {
                        tracing::warn!(peer = addr, "mesh link down");
                    }
                    link.connected = false;
                    link.since = Instant::now();
                }
                self.online_dirty = true;
                self.dir_publish = true;
            }
            LinkEvent::Heartbeat { addr, heartbeat } => {
                let mut learned = false;
                if let Some(link) = self.links.get_mut(&addr) {
                    link.last_heartbeat = Some(Instant::now());
                    if link.node.is_none() {
                        link.node = Some(heartbeat.node.clone());
                        learned = true;
                    }
                }
                self.dir
                    .touch(&heartbeat.node, heartbeat.users, system_now());
                if learned {
                    self.drop_duplicate_link(&addr, &heartbeat.node);
                }
            }
            LinkEvent::Directory { addr, directory } => {
                if let Some(link) = self.links.get_mut(&addr) {
                    link.node = Some(directory.node.clone());
                }
                self.drop_duplicate_link(&addr, &directory.node);
                let adverts = directory.nodes.into_iter().map(|e| e.advert).collect();
                let changed = self.dir.merge(adverts, system_now());
                if !changed.is_empty() {
                    self.dir_changed();
                    let data = serde_json::to_value(changed).unwrap_or_default();
                    let env = self.new_envelope("", Target::All, contract::TAG_ADVERTS, data);
                    self.route(&env, Some(&directory.node));
                    self.ensure_links();
                }
            }
        }
    }

    /// Two links to one node (a seed address and its advertised one): keep one.
    pub(super) fn drop_duplicate_link(&mut self, addr: &str, node: &str) {
        if node == self.own_id {
            // A seed that is this very node.
            if let Some(link) = self.links.remove(addr) {
                tokio::spawn(link.stop());
            }
            return;
        }
        let other = self
            .links
            .iter()
            .find(|(a, l)| a.as_str() != addr && l.node.as_deref() == Some(node))
            .map(|(a, _)| a.clone());
        if let Some(other) = other {
            // Keep the link to the address the node advertises.
            let advertised = self.dir.get(node).map(|k| k.advert.mqtt.clone());
            let drop = if advertised.as_deref() == Some(addr) {
                other
            } else {
                addr.to_owned()
            };
            if let Some(link) = self.links.remove(&drop) {
                tokio::spawn(link.stop());
            }
        }
    }

    pub(super) fn ping_links(&mut self) {
        let t_ms = u64::try_from(now_ms()).unwrap_or_default();
        let targets: Vec<String> = self.links.values().filter_map(|l| l.node.clone()).collect();
        for node in targets {
            let data = serde_json::to_value(LinkPing { t_ms }).unwrap_or_default();
            let env = self.new_envelope("", Target::Node(node.clone()), contract::TAG_PING, data);
            self.send_direct(&node, &env);
        }
    }

    pub(super) fn hello(&self) -> PeerHello {
        PeerHello {
            node: self.own_id.clone(),
            adverts: self.dir.adverts(),
            presence: self.presence.own(),
        }
    }

    /// What a peer's link left on our broker: its node list and its users.
    pub(super) fn on_hello(&mut self, m: Incoming) {
        if m.payload.is_empty() {
            return;
        }
        let Ok(hello) = m.decode::<PeerHello>() else {
            tracing::debug!(topic = m.topic, "ignoring a malformed hello");
            return;
        };
        if hello.node == self.own_id {
            return;
        }
        if self.presence.merge(hello.presence, Instant::now()) {
            self.presence_changed();
        }
        let changed = self.dir.merge(hello.adverts, system_now());
        if !changed.is_empty() {
            self.dir_changed();
            let data = serde_json::to_value(changed).unwrap_or_default();
            let env = self.new_envelope("", Target::All, contract::TAG_ADVERTS, data);
            self.route(&env, Some(&hello.node));
            self.ensure_links();
        }
    }

    /// Every `exchange_interval`: a fresh advert of this node to the whole mesh, and
    /// the full list to every peer.
    pub(super) fn exchange(&mut self) {
        let users = self.presence.local_count();
        let own = self
            .dir
            .refresh_own(users, u64::try_from(now_ms()).unwrap_or_default());
        self.dir_changed();
        let data = serde_json::to_value(vec![own]).unwrap_or_default();
        let env = self.new_envelope("", Target::All, contract::TAG_ADVERTS, data);
        self.flood(&env, None);
        let hello = self.hello();
        for link in self.links.values().filter(|l| l.connected) {
            link.hello(&hello);
        }
        self.names_due = true;
    }
}
