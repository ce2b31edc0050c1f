//! The whiteboard part of the bus contract: drawing input, the events every node keeps,
//! and snapshots for a page that joins late.

use serde::{Deserialize, Serialize};

use super::*;

// ---------------------------------------------------------------------------------
// Shared whiteboards (see `modules::board`). Users draw by publishing [`BoardInput`] on
// their own `boards/{board}/draw/{username}`; the board module checks it, stamps the
// user, keeps the drawing and publishes [`BoardEvent`]s on `boards/{board}/events`,
// which the mesh carries to every node.

/// Board names: 1–32 of `[a-z0-9_-]`.
pub fn valid_board(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `meteomesh/v1/boards/{board}/draw/{username}` — a user's input to a board.
pub fn board_draw(board: &str, username: &str) -> String {
    format!("{ROOT}/boards/{board}/draw/{username}")
}
/// `meteomesh/v1/boards/{board}/events` — everything that happens on a board (QoS 0:
/// a lost point is redrawn by the next snapshot, and drawing must not queue).
pub fn board_events(board: &str) -> String {
    format!("{ROOT}/boards/{board}/events")
}
/// `meteomesh/v1/mesh/users/{username}/boards/{board}/snapshot` — a board's drawing for
/// one user, in parts.
pub fn board_snapshot(username: &str, board: &str) -> String {
    format!("{}/boards/{board}/snapshot", mesh_user_root(username))
}
/// `meteomesh/v1/system/boards/local` — internal: board events that happened on this
/// node, for the mesh to carry to the others.
pub const BOARDS_LOCAL: &str = "meteomesh/v1/system/boards/local";
/// `meteomesh/v1/system/boards/remote` — internal: board events from other nodes, for
/// the board module.
pub const BOARDS_REMOTE: &str = "meteomesh/v1/system/boards/remote";

/// (board, username) of a `boards/{board}/draw/{username}` topic.
pub fn board_draw_of(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_prefix("meteomesh/v1/boards/")?;
    let (board, user) = rest.split_once("/draw/")?;
    (valid_board(board) && !user.is_empty() && !user.contains('/')).then_some((board, user))
}

/// What a user sends to a board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BoardInput {
    /// A point of a stroke: `start`, then `drag`s, then `end`. `x`, `y` are relative
    /// to the board (0..1); `seq` increases within the user's strokes; `epoch` is the
    /// board epoch the user drew on.
    Start(BoardPoint),
    Drag(BoardPoint),
    End(BoardPoint),
    /// Wipe the board: `epoch` is the new epoch (the one the user saw, plus one).
    Clear {
        epoch: u64,
    },
    /// The user is on the board (sent on joining and every 30 s) with their colour.
    Here {
        color: String,
    },
    /// The user left.
    Gone,
    /// Send me the drawing (on `.../snapshot`).
    Snapshot,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoardPoint {
    pub stroke: u64,
    pub seq: u64,
    pub x: f64,
    pub y: f64,
    pub color: String,
    pub epoch: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoardEventKind {
    Start,
    Drag,
    End,
    Clear,
    Here,
    Gone,
}

/// One thing that happened on a board, as every node and browser sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoardEvent {
    pub board: String,
    pub user: String,
    pub kind: BoardEventKind,
    #[serde(default)]
    pub stroke: u64,
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub x: f64,
    #[serde(default)]
    pub y: f64,
    #[serde(default)]
    pub color: String,
    pub epoch: u64,
}

impl BusMessage for BoardEvent {
    const FILTER: &'static str = "meteomesh/v1/boards/+/events";
    const DELIVERY: Delivery = Delivery::EPHEMERAL;
}

/// A board's drawing for a joining or reconnecting user, in parts of at most
/// [`SNAPSHOT_PART`] points; apply live events on top (duplicates are dropped by
/// (user, stroke, seq)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoardSnapshot {
    pub board: String,
    pub epoch: u64,
    pub part: u32,
    pub parts: u32,
    pub points: Vec<BoardEvent>,
    /// Users on the board now, with their colours.
    pub users: Vec<BoardUser>,
}

pub const SNAPSHOT_PART: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardUser {
    pub user: String,
    pub color: String,
}
