//! Vocabulary without I/O, shared by every layer: the one clock ([`time`]), accounts
//! ([`user`]), subscriptions ([`subscription`]), weather ([`weather`]), identifiers
//! ([`ids`]), validation messages ([`validation`]) and text escaping ([`text`]). It
//! imports no other layer, so the bus contract and the client library can use it.

pub mod ids;
pub mod subscription;
pub mod text;
pub mod time;
pub mod user;
pub mod validation;
pub mod weather;
