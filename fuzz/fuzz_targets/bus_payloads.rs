//! Every payload type of the bus contract (src/contract/), including the mesh
//! envelope that crosses between nodes: decoding any bytes gives a value or an error,
//! and a decoded value encodes and decodes to the same encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meteomesh::contract::*;

macro_rules! check {
    ($data:expr, $($ty:ty),+ $(,)?) => {$(
        if let Ok(value) = serde_json::from_slice::<$ty>($data) {
            let encoded = serde_json::to_vec(&value).expect(concat!("encode ", stringify!($ty)));
            let again: $ty = serde_json::from_slice(&encoded).expect(concat!("decode again ", stringify!($ty)));
            // Compared as JSON values: object key order is not part of the contract.
            assert_eq!(
                serde_json::to_value(&again).unwrap(),
                serde_json::to_value(&value).unwrap(),
                concat!(stringify!($ty), " does not round-trip")
            );
        }
    )+};
}

fuzz_target!(|data: &[u8]| {
    check!(
        data,
        Envelope,
        NodeAdvert,
        Heartbeat,
        Directory,
        OnlineUsers,
        PeerHello,
        Presence,
        Revocation,
        MeshMessage,
        MeshAck,
        InboxMessage,
        InboxAck,
        SendRequest,
        SendResult,
        LocalPresence,
        BoardInput,
        BoardEvent,
        BoardSnapshot,
        NodeStatus,
        Ping,
        Pong,
        AccountEvent,
        SubscriptionsChanged,
        WeatherObserved,
        AlertEvent,
        SubscriptionStateMsg,
        SlaEvent,
    );
});
