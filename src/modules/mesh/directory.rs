//! Owns the node directory: every node this node knows (itself included), merged from
//! adverts with "newer wins" (the advertising node's own clock), so relaying only what
//! changed is loop-free; conversion to and from the stored rows.

use std::collections::BTreeMap;

use crate::contract::NodeAdvert;
use crate::storage::mesh::StoredNode;

pub struct Directory {
    pub own_id: String,
    nodes: BTreeMap<String, Known>,
}

#[derive(Debug, Clone)]
pub struct Known {
    pub advert: NodeAdvert,
    /// Unix seconds (our clock) we last heard of or from it.
    pub last_seen_at: i64,
}

impl Directory {
    pub fn new(own: NodeAdvert, stored: Vec<StoredNode>) -> Directory {
        let own_id = own.id.clone();
        let mut nodes: BTreeMap<String, Known> = stored
            .into_iter()
            .filter(|n| n.id != own_id)
            .map(|n| {
                (
                    n.id.clone(),
                    Known {
                        advert: NodeAdvert {
                            id: n.id,
                            mqtt: n.mqtt,
                            ws: n.ws,
                            http: n.http,
                            users: n.users,
                            started_at: n.started_at,
                            at: n.advertised_at,
                        },
                        last_seen_at: n.last_seen_at,
                    },
                )
            })
            .collect();
        nodes.insert(
            own_id.clone(),
            Known {
                advert: own,
                last_seen_at: crate::domain::time::system_now(),
            },
        );
        Directory { own_id, nodes }
    }

    pub fn own(&self) -> &NodeAdvert {
        &self.nodes[&self.own_id].advert
    }

    /// Replaces this node's advert (a fresh `at`, the current user count).
    pub fn refresh_own(&mut self, users: u32, at_ms: u64) -> NodeAdvert {
        let own = self
            .nodes
            .get_mut(&self.own_id)
            .expect("own node is always present");
        own.advert.users = users;
        own.advert.at = own.advert.at.max(at_ms.saturating_sub(1)) + 1;
        own.last_seen_at = crate::domain::time::system_now();
        own.advert.clone()
    }

    /// Merges adverts; returns the ones that were new or newer (to relay onwards).
    /// Adverts about this node from others never replace its own.
    pub fn merge(&mut self, adverts: Vec<NodeAdvert>, now: i64) -> Vec<NodeAdvert> {
        let mut changed = Vec::new();
        for a in adverts {
            if a.id == self.own_id || a.id.is_empty() || a.mqtt.is_empty() {
                continue;
            }
            match self.nodes.get_mut(&a.id) {
                Some(k) if k.advert.at >= a.at => {}
                Some(k) => {
                    k.advert = a.clone();
                    k.last_seen_at = now;
                    changed.push(a);
                }
                None => {
                    self.nodes.insert(
                        a.id.clone(),
                        Known {
                            advert: a.clone(),
                            last_seen_at: now,
                        },
                    );
                    changed.push(a);
                }
            }
        }
        changed
    }

    /// We heard from `id` directly (a heartbeat over our link).
    pub fn touch(&mut self, id: &str, users: u32, now: i64) {
        if let Some(k) = self.nodes.get_mut(id) {
            k.last_seen_at = now;
            k.advert.users = users;
        }
    }

    /// Forgets nodes not heard of since `cutoff`; returns their ids.
    pub fn expire(&mut self, cutoff: i64, keep: impl Fn(&str) -> bool) -> Vec<String> {
        let gone: Vec<String> = self
            .nodes
            .iter()
            .filter(|(id, k)| *id != &self.own_id && k.last_seen_at < cutoff && !keep(id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.nodes.remove(id);
        }
        gone
    }

    pub fn get(&self, id: &str) -> Option<&Known> {
        self.nodes.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Known> {
        self.nodes.values()
    }

    pub fn adverts(&self) -> Vec<NodeAdvert> {
        self.nodes.values().map(|k| k.advert.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn to_stored(&self) -> Vec<StoredNode> {
        self.nodes
            .values()
            .filter(|k| k.advert.id != self.own_id)
            .map(|k| StoredNode {
                id: k.advert.id.clone(),
                mqtt: k.advert.mqtt.clone(),
                ws: k.advert.ws.clone(),
                http: k.advert.http.clone(),
                users: k.advert.users,
                started_at: k.advert.started_at,
                advertised_at: k.advert.at,
                last_seen_at: k.last_seen_at,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advert(id: &str, at: u64) -> NodeAdvert {
        NodeAdvert {
            id: id.into(),
            mqtt: format!("127.0.0.1:{}", 1000 + at),
            ws: None,
            http: "http://127.0.0.1:1".into(),
            users: 0,
            started_at: 1,
            at,
        }
    }

    #[test]
    fn newer_wins_and_only_changes_are_relayed() {
        let mut d = Directory::new(advert("me", 1), vec![]);
        assert_eq!(d.merge(vec![advert("a", 5), advert("b", 5)], 100).len(), 2);
        // The same again: nothing to relay (this is what ends a relay loop).
        assert!(d.merge(vec![advert("a", 5)], 101).is_empty());
        assert!(d.merge(vec![advert("a", 4)], 101).is_empty());
        assert_eq!(d.merge(vec![advert("a", 6)], 102).len(), 1);
        // Nobody overwrites this node's own advert.
        assert!(d.merge(vec![advert("me", 99)], 102).is_empty());
        assert_eq!(d.own().at, 1);
        assert_eq!(d.len(), 3);
        let gone = d.expire(101, |id| id == "b");
        assert!(gone.is_empty(), "a was seen at 102, b is kept");
        let gone = d.expire(200, |_| false);
        assert_eq!(gone.len(), 2);
        assert_eq!(d.to_stored().len(), 0);
    }
}
