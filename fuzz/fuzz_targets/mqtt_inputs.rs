//! What a user's MQTT session may publish — mesh sends and acks, whiteboard strokes,
//! pings — with any payload, through the real broker into the modules that read them.
//! A panic in any module aborts (see the harness); the session must stay usable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meteomesh::contract::{PING, board_draw, mesh_ack, mesh_send};
use meteomesh_fuzz::harness;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let h = harness();
    let topic = match pick % 4 {
        0 => mesh_send("fuzzer"),
        1 => mesh_ack("fuzzer"),
        2 => board_draw("main", "fuzzer"),
        _ => PING.to_owned(),
    };
    h.publish(&topic, payload);
});
