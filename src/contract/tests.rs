//! Unit tests of the contract: topic layouts, filters and the ACL.

use super::*;

#[test]
fn user_ids_are_read_back_from_private_topics() {
    assert_eq!(user_id_of(&format!("{}/alerts", user_root(42))), Some(42));
    assert_eq!(user_id_of(&user_root(7)), Some(7));
    assert_eq!(user_id_of("meteomesh/v1/mesh/users/bob/inbox"), None);
    assert_eq!(user_id_of("meteomesh/v1/users/bob/alerts"), None);
}

#[test]
fn filters() {
    assert!(filter_matches("a/+/c", "a/b/c"));
    assert!(!filter_matches("a/+/c", "a/b/d"));
    assert!(filter_matches("a/#", "a"));
    assert!(filter_matches("a/#", "a/b/c"));
    assert!(!filter_matches("a/b", "a/b/c"));
    assert!(!filter_matches("a/b/c", "a/b"));
    assert!(filter_matches("#", "x/y"));
    assert!(!filter_matches("#", "$SYS/x"));
    assert!(filter_matches(NodeStatus::FILTER, &node_status("n1")));
    assert!(filter_matches("+/+", "/x"));
}

#[test]
fn filter_containment() {
    assert!(filter_within("a/b/c", "a/#"));
    assert!(filter_within("a/+/c", "a/#"));
    assert!(filter_within("a/#", "a/#"));
    assert!(!filter_within("#", "a/#"));
    assert!(!filter_within("a/+", "a/b"));
    assert!(filter_within("a/b", "a/+"));
    assert!(filter_within("a/+", "a/+"));
    assert!(!filter_within("a/b/c", "a/+"));
    assert!(!filter_within("a/#", "a/+"));
}

#[test]
fn user_acl() {
    let user = |id| {
        Some(Principal {
            user_id: Some(id),
            username: "ann",
        })
    };
    let may_subscribe = |u: Option<i64>, f: &str| super::may_subscribe(u.and_then(user), f);
    let may_publish = |u: Option<i64>, t: &str| super::may_publish(u.and_then(user), t);
    assert!(may_subscribe(Some(7), "meteomesh/v1/users/7/#"));
    assert!(may_subscribe(Some(7), "meteomesh/v1/users/7/alerts"));
    assert!(may_subscribe(Some(7), "meteomesh/v1/users/7/+/x"));
    assert!(!may_subscribe(Some(7), "meteomesh/v1/users/8/#"));
    assert!(!may_subscribe(Some(7), "meteomesh/v1/users/77/#"));
    assert!(!may_subscribe(Some(7), "meteomesh/v1/users/+/#"));
    assert!(!may_subscribe(Some(7), "meteomesh/v1/#"));
    assert!(!may_subscribe(Some(7), "#"));
    assert!(!may_subscribe(Some(7), ACCOUNT_EVENTS));
    assert!(may_subscribe(Some(7), "meteomesh/v1/nodes/+/status"));
    assert!(may_subscribe(Some(7), "meteomesh/v1/nodes/abc/status"));
    assert!(may_subscribe(Some(7), PONG));
    assert!(may_publish(Some(7), PING));
    assert!(!may_publish(Some(7), PONG));
    assert!(!may_publish(Some(7), ACCOUNT_EVENTS));
    assert!(!may_publish(Some(7), "meteomesh/v1/users/7/alerts"));
    assert!(may_subscribe(None, PONG));
    assert!(!may_subscribe(None, "meteomesh/v1/users/7/#"));
    // Mesh topics go by username.
    assert!(may_subscribe(Some(7), "meteomesh/v1/mesh/users/ann/#"));
    assert!(may_subscribe(Some(7), &mesh_inbox("ann")));
    assert!(!may_subscribe(Some(7), &mesh_inbox("bob")));
    assert!(!may_subscribe(Some(7), "meteomesh/v1/mesh/users/+/inbox"));
    assert!(may_subscribe(Some(7), MESH_ONLINE));
    assert!(!may_subscribe(None, MESH_ONLINE));
    assert!(may_subscribe(None, MESH_HEARTBEAT));
    assert!(!may_subscribe(Some(7), MESH_LINKS));
    assert!(may_publish(Some(7), &mesh_send("ann")));
    assert!(may_publish(Some(7), &mesh_ack("ann")));
    assert!(!may_publish(Some(7), &mesh_send("bob")));
    assert!(!may_publish(Some(7), &mesh_inbox("ann")));
    assert!(!may_publish(Some(7), &mesh_link("x")));
    let remote = Some(Principal {
        user_id: None,
        username: "ann",
    });
    assert!(super::may_subscribe(remote, &mesh_inbox("ann")));
    assert!(!super::may_subscribe(remote, "meteomesh/v1/users/7/#"));
    // Boards: anyone signed in reads every board; draws only as themselves.
    assert!(may_subscribe(Some(7), &board_events("b1")));
    assert!(may_subscribe(Some(7), BoardEvent::FILTER));
    assert!(!may_subscribe(None, &board_events("b1")));
    assert!(may_publish(Some(7), &board_draw("b1", "ann")));
    assert!(!may_publish(Some(7), &board_draw("b1", "bob")));
    assert!(!may_publish(Some(7), &board_events("b1")));
    assert!(!may_publish(Some(7), &board_draw("Bad Name", "ann")));
    assert!(may_subscribe(Some(7), &board_snapshot("ann", "b1")));
    assert!(!may_subscribe(Some(7), BOARDS_LOCAL));
    assert_eq!(mesh_user_of(&mesh_send("ann"), "send"), Some("ann"));
    assert_eq!(
        mesh_user_of("meteomesh/v1/mesh/users/a/b/send", "send"),
        None
    );
    assert_eq!(mesh_link_sender(&mesh_link("n1")), Some("n1"));
}
