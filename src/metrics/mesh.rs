//! The mesh: envelopes, messages, links, nodes, queues, users online.

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::register;

pub struct MeshMetrics {
    pub envelopes: IntCounterVec,
    pub messages: IntCounterVec,
    pub local_deliveries: IntCounter,
    pub links_up: IntGauge,
    pub nodes: IntGauge,
    pub link_rtt: GaugeVec,
    pub queued: IntGauge,
    pub users_online: IntGauge,
}

impl MeshMetrics {
    pub(super) fn new(registry: &Registry) -> MeshMetrics {
        let mesh_envelopes = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "mesh_envelopes_total",
                    "Envelopes between nodes by outcome (received, sent incl. forwarded, duplicate and ttl_exceeded are dropped) and tag (msg, ack, alert, presence, adverts, ping, pong).",
                ),
                &["outcome", "tag"],
            )
            .expect("valid"),
        );
        let mesh_messages = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "mesh_messages_total",
                    "User messages accepted by this node, by mode.",
                ),
                &["mode"],
            )
            .expect("valid"),
        );
        let mesh_local_deliveries = register(
            registry,
            IntCounter::new(
                "mesh_local_deliveries_total",
                "Messages handed to users connected to this node.",
            )
            .expect("valid"),
        );
        let mesh_links_up = register(
            registry,
            IntGauge::new("mesh_links_up", "Links to peer nodes that are up.").expect("valid"),
        );
        let mesh_nodes = register(
            registry,
            IntGauge::new("mesh_nodes", "Nodes in the directory, this one included.")
                .expect("valid"),
        );
        let mesh_link_rtt = register(
            registry,
            GaugeVec::new(
                Opts::new(
                    "mesh_link_rtt_seconds",
                    "Last measured round trip to a peer node.",
                ),
                &["peer"],
            )
            .expect("valid"),
        );
        let mesh_queued = register(
            registry,
            IntGauge::new(
                "mesh_queued_messages",
                "Messages kept for recipients who have not acknowledged them.",
            )
            .expect("valid"),
        );
        let mesh_users_online = register(
            registry,
            IntGauge::new("mesh_users_online", "Users online anywhere in the mesh.")
                .expect("valid"),
        );
        MeshMetrics {
            envelopes: mesh_envelopes,
            messages: mesh_messages,
            local_deliveries: mesh_local_deliveries,
            links_up: mesh_links_up,
            nodes: mesh_nodes,
            link_rtt: mesh_link_rtt,
            queued: mesh_queued,
            users_online: mesh_users_online,
        }
    }
}
