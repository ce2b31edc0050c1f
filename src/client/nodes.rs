//! Owns a client's node list: the addresses it was given, the nodes the mesh directory
//! names (when discovery is on), users per node and reachability, kept in a JSON file
//! between runs so a client whose configured nodes are gone still finds the mesh.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::contract::Directory;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KnownNode {
    pub mqtt: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub users: Option<u32>,
    #[serde(default = "yes")]
    pub reachable: bool,
}

fn yes() -> bool {
    true
}

pub struct NodeList {
    nodes: Vec<KnownNode>,
    file: Option<PathBuf>,
}

impl NodeList {
    /// The configured addresses first, then those remembered in `file`.
    pub fn load(configured: &[String], file: Option<PathBuf>) -> NodeList {
        let mut list = NodeList {
            nodes: Vec::new(),
            file,
        };
        for addr in configured {
            list.add(addr, None);
        }
        let remembered: Vec<KnownNode> = list
            .file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        for n in remembered {
            list.add(&n.mqtt, n.id.as_deref());
        }
        list
    }

    fn add(&mut self, addr: &str, id: Option<&str>) {
        let addr = addr.trim();
        if addr.is_empty() {
            return;
        }
        match self.nodes.iter_mut().find(|n| n.mqtt == addr) {
            Some(n) => {
                if id.is_some() {
                    n.id = id.map(str::to_owned);
                }
            }
            None => self.nodes.push(KnownNode {
                mqtt: addr.to_owned(),
                id: id.map(str::to_owned),
                users: None,
                reachable: true,
            }),
        }
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.mqtt.clone()).collect()
    }

    pub fn users(&self, addr: &str) -> Option<u32> {
        self.nodes.iter().find(|n| n.mqtt == addr)?.users
    }

    pub fn reachable(&self, addr: &str) -> bool {
        self.nodes.iter().any(|n| n.mqtt == addr && n.reachable)
    }

    pub fn set_users(&mut self, addr: &str, users: u32) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.mqtt == addr) {
            n.users = Some(users);
            n.reachable = true;
        }
    }

    pub fn set_reachable(&mut self, addr: &str, reachable: bool) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.mqtt == addr) {
            n.reachable = reachable;
        }
    }

    /// Takes what a node's directory says: ids, users, reachability from that node, and
    /// (with `discover`) nodes not known yet.
    pub fn merge(&mut self, dir: &Directory, discover: bool) {
        for e in &dir.nodes {
            let known = self
                .nodes
                .iter()
                .position(|n| n.mqtt == e.advert.mqtt || n.id.as_deref() == Some(&e.advert.id));
            match known {
                Some(i) => {
                    let n = &mut self.nodes[i];
                    n.id = Some(e.advert.id.clone());
                    n.users = Some(e.advert.users);
                    n.reachable = e.reachable;
                }
                None if discover && !e.advert.mqtt.is_empty() => self.nodes.push(KnownNode {
                    mqtt: e.advert.mqtt.clone(),
                    id: Some(e.advert.id.clone()),
                    users: Some(e.advert.users),
                    reachable: e.reachable,
                }),
                None => {}
            }
        }
        self.save();
    }

    /// Writes the list (atomically: temp file + rename).
    pub fn save(&self) {
        let Some(file) = &self.file else { return };
        let Ok(json) = serde_json::to_vec_pretty(&self.nodes) else {
            return;
        };
        let tmp = file.with_extension("tmp");
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{DirectoryEntry, NodeAdvert};

    #[test]
    fn merge_discover_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nodes.json");
        let mut list = NodeList::load(&["127.0.0.1:1".into()], Some(file.clone()));
        let entry = |id: &str, mqtt: &str, users| DirectoryEntry {
            advert: NodeAdvert {
                id: id.into(),
                mqtt: mqtt.into(),
                ws: None,
                http: String::new(),
                users,
                started_at: 0,
                at: 0,
            },
            reachable: true,
            rtt_ms: None,
        };
        let d = Directory {
            node: "a".into(),
            nodes: vec![entry("a", "127.0.0.1:1", 3), entry("b", "127.0.0.1:2", 0)],
        };
        list.merge(&d, false);
        assert_eq!(list.addrs(), ["127.0.0.1:1"]);
        list.merge(&d, true);
        assert_eq!(list.addrs(), ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(list.users("127.0.0.1:1"), Some(3));
        // A new run with a dead configured node still knows the other.
        let again = NodeList::load(&["127.0.0.1:9".into()], Some(file));
        assert_eq!(again.addrs(), ["127.0.0.1:9", "127.0.0.1:1", "127.0.0.1:2"]);
    }
}
