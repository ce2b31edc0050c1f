//! Owns presence: which users are connected to this node (from the broker) and to every
//! other node (from their `presence` envelopes, newest version wins), and so where a
//! unicast should go.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::contract::{OnlineUser, Presence};

pub struct PresenceTable {
    own_id: String,
    /// This node's users and their session counts.
    local: BTreeMap<String, u32>,
    version: u64,
    remote: HashMap<String, Remote>,
    /// A remote set not refreshed for this long no longer counts (unless its node's
    /// link is up, which tells us it is alive).
    stale_after: Duration,
}

struct Remote {
    version: u64,
    users: BTreeSet<String>,
    received: Instant,
}

impl PresenceTable {
    pub fn new(own_id: &str, stale_after: Duration, version_start: u64) -> PresenceTable {
        PresenceTable {
            own_id: own_id.to_owned(),
            local: BTreeMap::new(),
            version: version_start,
            remote: HashMap::new(),
            stale_after,
        }
    }

    /// Records a local session count; true when the user came or went.
    pub fn set_local(&mut self, user: &str, sessions: u32) -> bool {
        let changed = if sessions == 0 {
            self.local.remove(user).is_some()
        } else {
            self.local.insert(user.to_owned(), sessions).is_none()
        };
        if changed {
            self.version += 1;
        }
        changed
    }

    pub fn is_local(&self, user: &str) -> bool {
        self.local.contains_key(user)
    }

    pub fn local_users(&self) -> impl Iterator<Item = &String> {
        self.local.keys()
    }

    pub fn local_count(&self) -> u32 {
        self.local.len() as u32
    }

    /// This node's presence, for the mesh.
    pub fn own(&self) -> Presence {
        Presence {
            node: self.own_id.clone(),
            version: self.version,
            users: self.local.keys().cloned().collect(),
        }
    }

    /// Takes another node's set; true when it changed what we know.
    pub fn merge(&mut self, p: Presence, now: Instant) -> bool {
        if p.node == self.own_id {
            return false;
        }
        match self.remote.get_mut(&p.node) {
            Some(r) if r.version > p.version => false,
            Some(r) if r.version == p.version => {
                r.received = now;
                false
            }
            _ => {
                self.remote.insert(
                    p.node,
                    Remote {
                        version: p.version,
                        users: p.users.into_iter().collect(),
                        received: now,
                    },
                );
                true
            }
        }
    }

    /// Forgets a node's users (it left the directory).
    pub fn forget(&mut self, node: &str) {
        self.remote.remove(node);
    }

    fn live_remotes<'a>(
        &'a self,
        now: Instant,
        linked: &'a dyn Fn(&str) -> Option<bool>,
    ) -> impl Iterator<Item = (&'a String, &'a Remote)> + 'a {
        self.remote
            .iter()
            .filter(move |(node, r)| match linked(node) {
                // A direct link tells the truth: down means its users are out of reach.
                Some(up) => up,
                None => now.duration_since(r.received) < self.stale_after,
            })
    }

    /// Other nodes where `user` is connected. `linked(node)` is `Some(up)` for nodes we
    /// have a direct link to.
    pub fn remote_nodes_of(
        &self,
        user: &str,
        now: Instant,
        linked: &dyn Fn(&str) -> Option<bool>,
    ) -> Vec<String> {
        self.live_remotes(now, linked)
            .filter(|(_, r)| r.users.contains(user))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Everyone online anywhere, with their nodes.
    pub fn online(&self, now: Instant, linked: &dyn Fn(&str) -> Option<bool>) -> Vec<OnlineUser> {
        let mut map: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for user in self.local.keys() {
            map.entry(user).or_default().push(self.own_id.clone());
        }
        for (node, r) in self.live_remotes(now, linked) {
            for user in &r.users {
                map.entry(user).or_default().push(node.clone());
            }
        }
        map.into_iter()
            .map(|(user, mut nodes)| {
                nodes.sort();
                OnlineUser {
                    user: user.to_owned(),
                    nodes,
                }
            })
            .collect()
    }

    /// Users per node (this one included), as far as we know.
    pub fn users_on(&self, node: &str) -> Option<u32> {
        if node == self.own_id {
            return Some(self.local_count());
        }
        self.remote.get(node).map(|r| r.users.len() as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_remote_and_staleness() {
        let t0 = Instant::now();
        let mut p = PresenceTable::new("me", Duration::from_secs(90), 10);
        assert!(p.set_local("ann", 1));
        assert!(!p.set_local("ann", 2));
        assert_eq!(p.own().version, 11);
        let set = |v, users: &[&str]| Presence {
            node: "b".into(),
            version: v,
            users: users.iter().map(|u| u.to_string()).collect(),
        };
        assert!(p.merge(set(5, &["bob"]), t0));
        assert!(!p.merge(set(4, &[]), t0), "older set ignored");
        let unlinked = |_: &str| None;
        assert_eq!(p.remote_nodes_of("bob", t0, &unlinked), ["b"]);
        // Stale without a link; a link that is down hides them at once.
        assert!(
            p.remote_nodes_of("bob", t0 + Duration::from_secs(91), &unlinked)
                .is_empty()
        );
        assert!(p.remote_nodes_of("bob", t0, &|_| Some(false)).is_empty());
        let online = p.online(t0, &unlinked);
        assert_eq!(online.len(), 2);
        assert_eq!(online[1].user, "bob");
        assert!(p.set_local("ann", 0));
        assert!(!p.is_local("ann"));
    }
}
