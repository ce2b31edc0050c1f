//! The broker's access rules for user sessions and the topic matchers under them. Beyond
//! "no panic", the properties that make the ACL safe:
//! - a filter a user may subscribe to never matches another user's topics or the
//!   service topics;
//! - a topic a user may publish to is never another user's;
//! - `filter_within(f, p)` implies every topic `f` matches, `p` matches too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meteomesh::contract::{
    Principal, filter_matches, filter_within, may_publish, may_subscribe,
};

const ALICE: Principal = Principal {
    user_id: Some(1),
    username: "alice",
};

/// Topics alice must never see or write.
const FOREIGN: &[&str] = &[
    "meteomesh/v1/users/2/alerts",
    "meteomesh/v1/users/2/subscriptions/1/state",
    "meteomesh/v1/users/12/alerts",
    "meteomesh/v1/mesh/users/bob/inbox",
    "meteomesh/v1/mesh/users/bob/send",
    "meteomesh/v1/mesh/users/alice2/inbox",
    "meteomesh/v1/system/accounts",
    "meteomesh/v1/mesh/links/n1/hello",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (filter, topic) = text
        .split_once('\0')
        .unwrap_or((text, "meteomesh/v1/users/1/x"));

    if may_subscribe(Some(ALICE), filter) {
        for t in FOREIGN {
            assert!(
                !filter_matches(filter, t),
                "alice may subscribe to {filter:?}, which matches {t}"
            );
        }
    }
    if may_subscribe(None, filter) {
        assert!(
            !filter_matches(filter, "meteomesh/v1/users/1/alerts"),
            "anonymous {filter:?}"
        );
        assert!(
            !filter_matches(filter, "meteomesh/v1/mesh/users/alice/inbox"),
            "anonymous {filter:?}"
        );
    }
    if may_publish(Some(ALICE), filter) {
        assert!(
            !FOREIGN.contains(&filter),
            "alice may publish to {filter:?}"
        );
        assert!(
            !filter.contains('+') && !filter.contains('#'),
            "publish to a filter {filter:?}"
        );
    }
    for pattern in [
        "meteomesh/v1/users/1/#",
        "meteomesh/v1/mesh/users/alice/#",
        "meteomesh/v1/+/x",
    ] {
        if filter_within(filter, pattern) && filter_matches(filter, topic) {
            assert!(
                filter_matches(pattern, topic),
                "{filter:?} is within {pattern} and matches {topic:?}, which {pattern} does not"
            );
        }
    }
});
