//! The server-rendered pages, one file per page, on the page kit ([`kit`]: session and
//! CSRF cookies, typed signed-in forms, the page response) and the HTML helpers
//! ([`html`]); static assets are compiled in from `static/`.

pub mod account;
pub mod alerts;
pub mod assets;
pub mod board;
pub(crate) mod html;
pub(crate) mod kit;
pub mod login;
pub mod mesh;
pub mod notify;
pub mod register;
pub mod sla;
