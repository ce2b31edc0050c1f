//! The embedded broker: connections, traffic, drops, ACL refusals, and the bus round trip.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::{LATENCY_BUCKETS, register};

pub struct BusMetrics {
    pub connections: IntGauge,
    pub connects: IntCounter,
    pub messages_received: IntCounter,
    pub messages_delivered: IntCounter,
    pub messages_dropped: IntCounterVec,
    pub roundtrip: Histogram,
    pub acl_denied: IntCounterVec,
    pub connections_refused: IntCounterVec,
    pub client_retained_messages: IntGauge,
    pub client_retained_bytes: IntGauge,
}

impl BusMetrics {
    pub(super) fn new(registry: &Registry) -> BusMetrics {
        let bus_connections = register(
            registry,
            IntGauge::new(
                "bus_connections",
                "MQTT clients connected to the embedded broker now, meteomesh's own sessions included.",
            )
            .expect("valid"),
        );
        let bus_connects = register(
            registry,
            IntCounter::new(
                "bus_connects_total",
                "MQTT sessions the embedded broker accepted.",
            )
            .expect("valid"),
        );
        let bus_messages_received = register(
            registry,
            IntCounter::new(
                "bus_messages_received_total",
                "PUBLISH packets the embedded broker received from clients.",
            )
            .expect("valid"),
        );
        let bus_messages_delivered = register(
            registry,
            IntCounter::new(
                "bus_messages_delivered_total",
                "PUBLISH packets the embedded broker sent to subscribers.",
            )
            .expect("valid"),
        );
        let bus_messages_dropped = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "bus_messages_dropped_total",
                    "Messages the embedded broker dropped, by reason.",
                ),
                &["reason"],
            )
            .expect("valid"),
        );
        let bus_roundtrip = register(
            registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "bus_roundtrip_seconds",
                    "Ping to pong time through the bus, as measured by the bus check.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid"),
        );
        let bus_acl_denied = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "bus_acl_denied_total",
                    "Subscriptions and publishes the embedded broker refused by topic ACL.",
                ),
                &["action"],
            )
            .expect("valid"),
        );
        let bus_connections_refused = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "bus_connections_refused_total",
                    "Connections the embedded broker refused or closed before a session, by \
                     reason (will, client_id, sessions; connect_timeout, too_many_pending).",
                ),
                &["reason"],
            )
            .expect("valid"),
        );
        let bus_client_retained_messages = register(
            registry,
            IntGauge::new(
                "bus_client_retained_messages",
                "Retained messages service accounts keep on the embedded broker (budget: \
                 bus.max_retained_messages).",
            )
            .expect("valid"),
        );
        let bus_client_retained_bytes = register(
            registry,
            IntGauge::new(
                "bus_client_retained_bytes",
                "Their payload bytes (budget: bus.max_retained_bytes).",
            )
            .expect("valid"),
        );
        BusMetrics {
            connections: bus_connections,
            connects: bus_connects,
            messages_received: bus_messages_received,
            messages_delivered: bus_messages_delivered,
            messages_dropped: bus_messages_dropped,
            roundtrip: bus_roundtrip,
            acl_denied: bus_acl_denied,
            connections_refused: bus_connections_refused,
            client_retained_messages: bus_client_retained_messages,
            client_retained_bytes: bus_client_retained_bytes,
        }
    }
}
