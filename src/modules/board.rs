//! Owns the shared whiteboards: each board's epoch and drawing (kept in SQLite, so a
//! restart keeps it), who is on it, and the rules that make boards on every node
//! converge: points are kept once per (user, stroke, seq); a clear raises the epoch and
//! wipes the points; a point of an older epoch is dropped; a point of a newer epoch means
//! a clear this node missed, so it clears first.
//!
//! Consumes: `boards/+/draw/+` (users' input; the user is taken from the topic, which
//! the broker only lets that user publish on) and `system/boards/remote` (events from
//! other nodes, via the mesh). Publishes: `boards/{board}/events` (for browsers),
//! `system/boards/local` (for the mesh), snapshots on the user's
//! `mesh/users/{name}/boards/{board}/snapshot`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::bus::{BusClient, BusError, Incoming};
use crate::contract::{
    self, BOARDS_LOCAL, BOARDS_REMOTE, BoardEvent, BoardEventKind, BoardInput, BoardPoint,
    BoardSnapshot, BoardUser, Qos, SNAPSHOT_PART,
};
use crate::metrics::Metrics;
use crate::modules::ModuleCtx;
use crate::storage::Db;
use crate::storage::boards::{BoardWrite, StoredPoint};

/// Points kept per board; beyond it the oldest go.
pub const MAX_POINTS: usize = 20_000;
/// A user not heard from for this long has left the board.
const HERE_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether `c` is a `#rrggbb` colour (what the page draws with).
fn valid_color(c: &str) -> bool {
    c.len() == 7 && c.starts_with('#') && c[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Nothing: a duplicate, or from an older epoch.
    Ignored,
    /// A point added (after a clear, if the event's epoch was newer).
    Added { cleared: bool },
    /// The board was wiped.
    Cleared,
    /// Someone came or left.
    Presence,
}

/// One board in memory.
#[derive(Debug, Default)]
pub struct Board {
    pub epoch: u64,
    pub points: Vec<BoardEvent>,
    seen: HashSet<(String, u64, u64)>,
    users: BTreeMap<String, (String, Instant)>,
}

impl Board {
    pub fn apply(&mut self, e: &BoardEvent, now: Instant) -> Applied {
        match e.kind {
            BoardEventKind::Clear => {
                if e.epoch <= self.epoch {
                    return Applied::Ignored;
                }
                self.wipe(e.epoch);
                Applied::Cleared
            }
            BoardEventKind::Here => {
                self.users.insert(e.user.clone(), (e.color.clone(), now));
                Applied::Presence
            }
            BoardEventKind::Gone => {
                self.users.remove(&e.user);
                Applied::Presence
            }
            BoardEventKind::Start | BoardEventKind::Drag | BoardEventKind::End => {
                if e.epoch < self.epoch {
                    return Applied::Ignored;
                }
                let cleared = e.epoch > self.epoch;
                if cleared {
                    self.wipe(e.epoch);
                }
                if !self.seen.insert((e.user.clone(), e.stroke, e.seq)) {
                    return Applied::Ignored;
                }
                self.points.push(e.clone());
                if self.points.len() > MAX_POINTS {
                    let drop = self.points.len() - MAX_POINTS;
                    for p in self.points.drain(..drop) {
                        self.seen.remove(&(p.user, p.stroke, p.seq));
                    }
                }
                Applied::Added { cleared }
            }
        }
    }

    fn wipe(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.points.clear();
        self.seen.clear();
    }

    pub fn users(&self) -> Vec<BoardUser> {
        self.users
            .iter()
            .map(|(user, (color, _))| BoardUser {
                user: user.clone(),
                color: color.clone(),
            })
            .collect()
    }

    /// Users not heard from within [`HERE_TIMEOUT`]; they are removed.
    fn expire_users(&mut self, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .users
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) > HERE_TIMEOUT)
            .map(|(u, _)| u.clone())
            .collect();
        for u in &gone {
            self.users.remove(u);
        }
        gone
    }
}

/// The event a user's input stands for; `None` for a snapshot request or bad input.
fn event_of(board: &str, user: &str, input: &BoardInput, epoch_now: u64) -> Option<BoardEvent> {
    let point = |kind, p: &BoardPoint| {
        let ok = p.x.is_finite() && p.y.is_finite() && valid_color(&p.color);
        ok.then(|| BoardEvent {
            board: board.to_owned(),
            user: user.to_owned(),
            kind,
            stroke: p.stroke,
            seq: p.seq,
            x: p.x.clamp(0.0, 1.0),
            y: p.y.clamp(0.0, 1.0),
            color: p.color.to_ascii_lowercase(),
            epoch: p.epoch,
        })
    };
    let bare = |kind, color: &str, epoch| BoardEvent {
        board: board.to_owned(),
        user: user.to_owned(),
        kind,
        stroke: 0,
        seq: 0,
        x: 0.0,
        y: 0.0,
        color: color.to_owned(),
        epoch,
    };
    match input {
        BoardInput::Start(p) => point(BoardEventKind::Start, p),
        BoardInput::Drag(p) => point(BoardEventKind::Drag, p),
        BoardInput::End(p) => point(BoardEventKind::End, p),
        BoardInput::Clear { epoch } => Some(bare(BoardEventKind::Clear, "", *epoch)),
        BoardInput::Here { color } if valid_color(color) => Some(bare(
            BoardEventKind::Here,
            &color.to_ascii_lowercase(),
            epoch_now,
        )),
        BoardInput::Here { .. } => None,
        BoardInput::Gone => Some(bare(BoardEventKind::Gone, "", epoch_now)),
        BoardInput::Snapshot => None,
    }
}

fn kind_name(k: BoardEventKind) -> &'static str {
    match k {
        BoardEventKind::Start => "start",
        BoardEventKind::Drag => "drag",
        BoardEventKind::End => "end",
        BoardEventKind::Clear => "clear",
        BoardEventKind::Here => "here",
        BoardEventKind::Gone => "gone",
    }
}

fn kind_of(name: &str) -> BoardEventKind {
    match name {
        "start" => BoardEventKind::Start,
        "end" => BoardEventKind::End,
        _ => BoardEventKind::Drag,
    }
}

struct Boards {
    db: Db,
    bus: BusClient,
    boards: HashMap<String, Board>,
    pending: Vec<BoardWrite>,
    metrics: Arc<Metrics>,
}

impl Boards {
    async fn board(&mut self, name: &str) -> &mut Board {
        if !self.boards.contains_key(name) {
            let n = name.to_owned();
            let (epoch, stored) = match self.db.boards().load(&n).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, board = name, "cannot load a board; starting empty");
                    (0, Vec::new())
                }
            };
            let mut board = Board {
                epoch,
                ..Board::default()
            };
            let now = Instant::now();
            for p in stored {
                let e = BoardEvent {
                    board: name.to_owned(),
                    user: p.username,
                    kind: kind_of(&p.kind),
                    stroke: p.stroke,
                    seq: p.seq,
                    x: p.x,
                    y: p.y,
                    color: p.color,
                    epoch,
                };
                board.apply(&e, now);
            }
            self.boards.insert(name.to_owned(), board);
        }
        self.boards.get_mut(name).expect("inserted above")
    }

    /// Applies an event; publishes it to this node's browsers (and, when it happened
    /// here, to the mesh) if it changed anything, and queues the write.
    async fn apply(&mut self, event: BoardEvent, local: bool) {
        let applied = self.board(&event.board).await.apply(&event, Instant::now());
        match applied {
            Applied::Ignored => return,
            Applied::Added { cleared } => {
                if cleared {
                    self.pending.push(BoardWrite::Clear {
                        board: event.board.clone(),
                        epoch: event.epoch,
                    });
                }
                self.pending.push(BoardWrite::Point {
                    board: event.board.clone(),
                    point: StoredPoint {
                        username: event.user.clone(),
                        stroke: event.stroke,
                        seq: event.seq,
                        kind: kind_name(event.kind).into(),
                        x: event.x,
                        y: event.y,
                        color: event.color.clone(),
                    },
                });
            }
            Applied::Cleared => self.pending.push(BoardWrite::Clear {
                board: event.board.clone(),
                epoch: event.epoch,
            }),
            Applied::Presence => {}
        }
        self.metrics.board.events.inc();
        if let Err(e) = self.publish(&event, local).await {
            tracing::debug!(error = %e, "cannot publish a board event");
        }
    }

    async fn publish(&self, event: &BoardEvent, local: bool) -> Result<(), BusError> {
        self.bus
            .publish(&contract::board_events(&event.board), event)
            .await?;
        if local {
            let payload = serde_json::to_vec(event).map_err(|e| BusError::Encode(e.to_string()))?;
            self.bus
                .publish_raw(BOARDS_LOCAL, payload, Qos::AtLeastOnce, false)
                .await?;
        }
        Ok(())
    }

    async fn on_input(&mut self, m: Incoming) {
        let Some((board, user)) =
            contract::board_draw_of(&m.topic).map(|(b, u)| (b.to_owned(), u.to_owned()))
        else {
            return;
        };
        let Ok(input) = serde_json::from_slice::<BoardInput>(&m.payload) else {
            tracing::debug!(board, user, "ignoring malformed board input");
            return;
        };
        if input == BoardInput::Snapshot {
            return self.snapshot(&board, &user).await;
        }
        let epoch = self.board(&board).await.epoch;
        if let Some(event) = event_of(&board, &user, &input, epoch) {
            self.apply(event, true).await;
        }
    }

    async fn snapshot(&mut self, name: &str, user: &str) {
        let board = self.board(name).await;
        let users = board.users();
        let epoch = board.epoch;
        let chunks: Vec<Vec<BoardEvent>> = if board.points.is_empty() {
            vec![Vec::new()]
        } else {
            board
                .points
                .chunks(SNAPSHOT_PART)
                .map(<[BoardEvent]>::to_vec)
                .collect()
        };
        let parts = chunks.len() as u32;
        let topic = contract::board_snapshot(user, name);
        for (i, points) in chunks.into_iter().enumerate() {
            let snap = BoardSnapshot {
                board: name.to_owned(),
                epoch,
                part: i as u32 + 1,
                parts,
                points,
                users: users.clone(),
            };
            let Ok(payload) = serde_json::to_vec(&snap) else {
                return;
            };
            if let Err(e) = self
                .bus
                .publish_raw(&topic, payload, Qos::AtLeastOnce, false)
                .await
            {
                tracing::debug!(error = %e, "cannot send a board snapshot");
                return;
            }
        }
    }

    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let writes = std::mem::take(&mut self.pending);
        if let Err(e) = self.db.boards().write(&writes, MAX_POINTS).await {
            tracing::warn!(error = %e, "cannot store board changes");
        }
    }

    async fn expire_users(&mut self) {
        let now = Instant::now();
        let mut gone = Vec::new();
        for (name, board) in &mut self.boards {
            for user in board.expire_users(now) {
                gone.push(BoardEvent {
                    board: name.clone(),
                    user,
                    kind: BoardEventKind::Gone,
                    stroke: 0,
                    seq: 0,
                    x: 0.0,
                    y: 0.0,
                    color: String::new(),
                    epoch: board.epoch,
                });
            }
        }
        // Each node expires its view by itself: tell only this node's browsers.
        for event in gone {
            let _ = self.publish(&event, false).await;
        }
    }
}

/// Starts the board module.
pub async fn start(ctx: &ModuleCtx<'_>) -> Result<JoinHandle<()>, BusError> {
    let (bus, db, metrics, shutdown) = (
        ctx.bus,
        ctx.db.clone(),
        ctx.metrics.clone(),
        ctx.shutdown.clone(),
    );
    let (client, session) = bus.client("board", None);
    let mut inputs = client
        .subscribe("meteomesh/v1/boards/+/draw/+", Qos::AtMostOnce)
        .await?;
    let mut remote = client.subscribe(BOARDS_REMOTE, Qos::AtLeastOnce).await?;
    let _ = client.wait_subscribed(Duration::from_secs(10)).await;
    let mut boards = Boards {
        db,
        bus: client.clone(),
        boards: HashMap::new(),
        pending: Vec::new(),
        metrics,
    };
    Ok(tokio::spawn(async move {
        let mut flush = tokio::time::interval(Duration::from_millis(200));
        let mut expiry = tokio::time::interval(Duration::from_secs(15));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(m) = inputs.recv() => boards.on_input(m).await,
                Some(m) = remote.recv() => {
                    if let Ok(event) = m.decode::<BoardEvent>()
                        && contract::valid_board(&event.board)
                    {
                        boards.apply(event, false).await;
                    }
                }
                _ = flush.tick() => boards.flush().await,
                _ = expiry.tick() => boards.expire_users().await,
            }
        }
        // Work in flight is committed, not dropped.
        boards.flush().await;
        client.disconnect().await;
        let _ = session.await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(user: &str, stroke: u64, seq: u64, epoch: u64) -> BoardEvent {
        BoardEvent {
            board: "b".into(),
            user: user.into(),
            kind: BoardEventKind::Drag,
            stroke,
            seq,
            x: 0.5,
            y: 0.5,
            color: "#123456".into(),
            epoch,
        }
    }

    fn clear(epoch: u64) -> BoardEvent {
        BoardEvent {
            kind: BoardEventKind::Clear,
            ..point("ann", 0, 0, epoch)
        }
    }

    /// The final drawing, as a comparable set.
    fn drawing(b: &Board) -> (u64, Vec<(String, u64, u64)>) {
        let mut v: Vec<_> = b
            .points
            .iter()
            .map(|p| (p.user.clone(), p.stroke, p.seq))
            .collect();
        v.sort();
        (b.epoch, v)
    }

    #[test]
    fn boards_converge_whatever_the_order() {
        let now = Instant::now();
        let events = vec![
            point("ann", 1, 1, 0),
            point("ann", 1, 2, 0),
            clear(1),
            point("bob", 5, 1, 1),
            point("ann", 2, 1, 0), // drawn before ann saw the clear: dropped
            point("bob", 5, 2, 1),
            point("bob", 5, 2, 1), // duplicate
        ];
        let mut reference = Board::default();
        for e in &events {
            reference.apply(e, now);
        }
        assert_eq!(
            drawing(&reference),
            (1, vec![("bob".into(), 5, 1), ("bob".into(), 5, 2)])
        );
        // Every rotation and the reverse order end the same.
        for k in 0..events.len() {
            let mut order = events.clone();
            order.rotate_left(k);
            let mut b = Board::default();
            for e in &order {
                b.apply(e, now);
            }
            assert_eq!(drawing(&b), drawing(&reference), "rotation {k}");
        }
        let mut b = Board::default();
        for e in events.iter().rev() {
            b.apply(e, now);
        }
        assert_eq!(drawing(&b), drawing(&reference));
    }

    #[test]
    fn input_is_checked_and_stamped() {
        let p = BoardPoint {
            stroke: 1,
            seq: 1,
            x: 1.7,
            y: -0.2,
            color: "#A0B0C0".into(),
            epoch: 3,
        };
        let e = event_of("b", "ann", &BoardInput::Start(p.clone()), 3).unwrap();
        assert_eq!((e.user.as_str(), e.x, e.y), ("ann", 1.0, 0.0));
        assert_eq!(e.color, "#a0b0c0");
        let bad = BoardPoint {
            color: "red; background: url(x)".into(),
            ..p.clone()
        };
        assert!(event_of("b", "ann", &BoardInput::Drag(bad), 3).is_none());
        let nan = BoardPoint { x: f64::NAN, ..p };
        assert!(event_of("b", "ann", &BoardInput::End(nan), 3).is_none());
        assert!(event_of("b", "ann", &BoardInput::Snapshot, 3).is_none());
        assert!(valid_color("#00ff00") && !valid_color("#00ff0") && !valid_color("00ff00x"));
    }
}
