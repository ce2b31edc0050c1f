//! Who may publish and subscribe what: the public topics, each user's own subtrees, and
//! the narrower rights of a whiteboard page's credential. The broker's hooks call these.

use super::*;

/// Topic filters anyone on the broker may subscribe to, besides their own subtrees.
const PUBLIC_SUBSCRIBE: &[&str] = &[NodeStatus::FILTER, PONG, MESH_HEARTBEAT, MESH_DIRECTORY];
/// Topics anyone on the broker may publish to.
const PUBLIC_PUBLISH: &[&str] = &[PING];

/// Who a user session is: the account on this node (absent for a user whose home is
/// another mesh node) and the username, their identity across the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal<'a> {
    pub user_id: Option<i64>,
    pub username: &'a str,
}

/// The access rule for user accounts on the embedded broker (service accounts and
/// meteomesh itself are not limited): subscribe to their own subtrees
/// `meteomesh/v1/users/{id}/#` (home node only) and `meteomesh/v1/mesh/users/{name}/#`,
/// the online list, and the public filters; nothing wider. An anonymous session (only
/// when anonymous access is on) gets the public filters.
pub fn may_subscribe(user: Option<Principal>, filter: &str) -> bool {
    let own = user.is_some_and(|p| {
        p.user_id
            .is_some_and(|id| filter_within(filter, &format!("{}/#", user_root(id))))
            || filter_within(filter, &format!("{}/#", mesh_user_root(p.username)))
            || filter_within(filter, MESH_ONLINE)
            || filter_within(filter, BoardEvent::FILTER)
    });
    own || PUBLIC_SUBSCRIBE.iter().any(|p| filter_within(filter, p))
}

/// Users publish only where the contract invites them to: the public topics, and their
/// own mesh `send` and `ack` topics.
pub fn may_publish(user: Option<Principal>, topic: &str) -> bool {
    let own = user.is_some_and(|p| {
        topic == mesh_send(p.username)
            || topic == mesh_ack(p.username)
            || board_draw_of(topic).is_some_and(|(_, u)| u == p.username)
    });
    own || PUBLIC_PUBLISH.iter().any(|p| filter_matches(p, topic))
}

/// What the whiteboard page's credential may subscribe to: the boards' events, its own
/// board snapshots, and the mesh directory and heartbeat it fails over by.
pub fn board_credential_may_subscribe(username: &str, filter: &str) -> bool {
    filter_within(filter, BoardEvent::FILTER)
        || filter_within(filter, &format!("{}/boards/#", mesh_user_root(username)))
        || filter_within(filter, MESH_DIRECTORY)
        || filter_within(filter, MESH_HEARTBEAT)
}

/// What the whiteboard page's credential may publish: its own strokes.
pub fn board_credential_may_publish(username: &str, topic: &str) -> bool {
    board_draw_of(topic).is_some_and(|(_, u)| u == username)
}
