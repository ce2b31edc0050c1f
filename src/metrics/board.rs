//! The shared whiteboards.

use prometheus::{IntCounter, Registry};

use super::register;

pub struct BoardMetrics {
    pub events: IntCounter,
}

impl BoardMetrics {
    pub(super) fn new(registry: &Registry) -> BoardMetrics {
        let board_events = register(
            registry,
            IntCounter::new(
                "board_events_total",
                "Whiteboard events applied (points, clears, users coming and going).",
            )
            .expect("valid"),
        );
        BoardMetrics {
            events: board_events,
        }
    }
}
