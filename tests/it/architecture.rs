//! The architecture guard: scans `src/` and fails when the code leaves the shape that
//! ARCHITECTURE.md draws — SQLite outside `storage/`, a module importing another module,
//! the contract, the domain or the client library reaching into storage, HTTP, the app
//! or the broker, or an import cycle between top-level modules. Each rule also runs on a
//! small made-up tree that breaks it, so a rule that stops seeing is caught too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One source file: its path under `src/` and its text without `#[cfg(test)]` tails.
struct Source {
    path: String,
    text: String,
}

fn production_part(text: &str) -> &str {
    // Unit tests sit at the end of a file, behind `#[cfg(test)]`; they may use anything.
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

fn read_tree(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push(Source {
                    path: path
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/"),
                    text: production_part(&text).to_owned(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The top-level module a file belongs to (`lib.rs` and `main.rs` are the root).
fn top_level(path: &str) -> &str {
    let first = path.split('/').next().unwrap_or(path);
    first.strip_suffix(".rs").unwrap_or(first)
}

/// Every `crate::a::b…` path in `text`, as its segments.
fn crate_paths(text: &str) -> Vec<Vec<&str>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `some_crate::`
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let segments: Vec<&str> = rest[..end].split("::").filter(|s| !s.is_empty()).collect();
        if !segments.is_empty() {
            out.push(segments);
        }
        // `use crate::{a, b::c}` names several top-level modules at once.
        if rest[end..].starts_with('{') {
            let close = rest[end..].find('}').map_or(rest.len(), |c| end + c);
            for item in rest[end + 1..close].split(',') {
                let item = item.trim();
                let name = item.split("::").next().unwrap_or("").trim();
                if !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    out.push(item.split("::").map(str::trim).collect());
                }
            }
        }
    }
    out
}

fn word(text: &str, w: &str) -> bool {
    text.match_indices(w).any(|(i, _)| {
        let before = text[..i].chars().last();
        let after = text[i + w.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// Layers that must stay free of I/O layers (the client library's whole footprint).
const PURE: [&str; 3] = ["contract", "domain", "client"];
const NOT_FROM_PURE: [&str; 4] = ["storage", "http", "app", "bus"];

fn violations(tree: &[Source]) -> Vec<String> {
    let mut found = Vec::new();
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in tree {
        let top = top_level(&s.path);
        if top != "storage" && word(&s.text, "rusqlite") {
            found.push(format!("{}: uses rusqlite outside storage/", s.path));
        }
        if PURE.contains(&top) && word(&s.text, "rmqtt") {
            found.push(format!("{}: {top}/ uses the broker (rmqtt)", s.path));
        }
        let module = s
            .path
            .strip_prefix("modules/")
            .map(|p| p.split('/').next().unwrap_or(p).trim_end_matches(".rs"));
        for segments in crate_paths(&s.text) {
            let target = segments[0];
            if target != top && !matches!(top, "lib" | "main") {
                graph.entry(top).or_default().insert(target);
            }
            if PURE.contains(&top) && NOT_FROM_PURE.contains(&target) {
                found.push(format!("{}: {top}/ imports {target}/", s.path));
            }
            // `crate::modules::Addresses` names a type of modules/mod.rs, not a module.
            if let (Some(own), ["modules", other, ..]) = (module, segments.as_slice())
                && own != *other
                && other.starts_with(|c: char| c.is_ascii_lowercase())
            {
                found.push(format!(
                    "{}: module {own} imports module {other} (send a contract message instead)",
                    s.path
                ));
            }
        }
    }
    for cycle in cycles(&graph) {
        found.push(format!(
            "import cycle between top-level modules: {}",
            cycle.join(" -> ")
        ));
    }
    found.sort();
    found.dedup();
    found
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<&str, BTreeSet<&str>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for &w in self.graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for &v in graph.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn the_source_tree_keeps_the_architecture() {
    let tree = read_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(tree.len() > 20, "read only {} files", tree.len());
    let found = violations(&tree);
    assert!(
        found.is_empty(),
        "the architecture is broken:\n{}",
        found.join("\n")
    );
}

fn made_up(files: &[(&str, &str)]) -> Vec<Source> {
    files
        .iter()
        .map(|(path, text)| Source {
            path: (*path).to_owned(),
            text: production_part(text).to_owned(),
        })
        .collect()
}

#[test]
fn each_rule_catches_the_import_it_forbids() {
    let cases: [(&str, &str, &str); 6] = [
        (
            "modules/poller.rs",
            "use rusqlite::Connection;",
            "uses rusqlite outside storage/",
        ),
        (
            "modules/poller.rs",
            "use crate::modules::auth::unix_now;",
            "module poller imports module auth",
        ),
        (
            "contract/weather.rs",
            "use crate::storage::Db;",
            "contract/ imports storage/",
        ),
        (
            "client/mod.rs",
            "use crate::{bus::BusClient, domain};",
            "client/ imports bus/",
        ),
        (
            "domain/user.rs",
            "fn f(_: rmqtt::Id) {}",
            "domain/ uses the broker",
        ),
        (
            "http/mod.rs",
            "use crate::modules::auth;",
            "import cycle between top-level modules: http -> modules",
        ),
    ];
    for (path, text, complaint) in cases {
        let mut files = vec![(path, text)];
        if complaint.contains("cycle") {
            files.push(("modules/auth.rs", "use crate::http::AppState;"));
        }
        let found = violations(&made_up(&files));
        assert!(
            found.iter().any(|f| f.contains(complaint)),
            "{path} with `{text}`: expected `{complaint}`, found {found:?}"
        );
    }
    // The same code where it belongs passes, and unit tests may use anything.
    let fine = made_up(&[
        ("storage/users.rs", "use rusqlite::Connection;"),
        (
            "modules/auth/mod.rs",
            "use crate::modules::auth::password; use crate::domain::time;",
        ),
        (
            "modules/rules.rs",
            "fn f() {}\n#[cfg(test)]\nmod tests { use rusqlite::Connection; }",
        ),
        ("some_crate_user.rs", "use other_crate::storage;"),
    ]);
    assert_eq!(violations(&fine), Vec::<String>::new());
}
