//! Owns the mesh status page `/mesh` (any signed-in user): the nodes this node knows,
//! its links to them with round trips, users per node, and the message counters — the
//! same as `GET /api/v1/mesh` and `meteomesh mesh status`.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

use super::html::{Nav, alert, escape, page};
use super::kit::{Page, csrf, current_user};
use crate::http::AppState;

pub async fn mesh_page(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let Some(auth) = current_user(&state, &headers).await else {
        return Page::redirect("/login");
    };
    let (token, set) = csrf(&state, &headers);
    let nav = Nav::signed_in(&auth.user, &token);
    let status = match state.mesh.status().await {
        Ok(s) => s,
        Err(e) => {
            let body = alert("error", &format!("The mesh status is not available: {e}."));
            return Page::html(StatusCode::SERVICE_UNAVAILABLE, page("Mesh", &nav, &body))
                .maybe_cookie(set);
        }
    };
    let mut body = String::from("<h1>Mesh</h1>");
    if !status.enabled {
        body.push_str(&alert(
            "info",
            "This node is not part of a mesh (mesh.enabled is off); messages still reach its own users.",
        ));
    }
    let _ = write!(
        body,
        r#"<p>This node: <strong>{}</strong>. Users online anywhere: {}.</p>
<div class="table-wrap"><table>
<caption>Nodes</caption>
<thead><tr><th scope="col">Node</th><th scope="col">MQTT</th><th scope="col">Users</th><th scope="col">Link</th><th scope="col">Round trip</th></tr></thead><tbody>"#,
        escape(&status.node),
        status.users_online
    );
    for n in &status.nodes {
        let (link, rtt) = if n.this_node {
            ("this node".to_owned(), "—".to_owned())
        } else {
            match &n.link {
                Some(l) => (
                    format!("{} for {} s", l.state, l.for_seconds),
                    l.rtt_ms
                        .map_or_else(|| "—".to_owned(), |r| format!("{r:.1} ms")),
                ),
                None => ("not linked".to_owned(), "—".to_owned()),
            }
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&n.advert.id),
            escape(&n.advert.mqtt),
            n.advert.users,
            escape(&link),
            escape(&rtt)
        );
    }
    for p in &status.unidentified_peers {
        let _ = write!(
            body,
            "<tr><td>?</td><td>{}</td><td>—</td><td>no answer yet</td><td>—</td></tr>",
            escape(p)
        );
    }
    let _ = write!(
        body,
        r#"</tbody></table></div>
<h2>Messages</h2>
<dl class="facts">
<dt>Envelopes received</dt><dd>{}</dd>
<dt>Envelopes sent (own and forwarded)</dt><dd>{}</dd>
<dt>Duplicates dropped</dt><dd>{} ({} of them user messages)</dd>
<dt>Dropped after too many hops</dt><dd>{}</dd>
<dt>Handed to users here</dt><dd>{}</dd>
<dt>Waiting for offline users</dt><dd>{}</dd>
</dl>"#,
        status.envelopes_received,
        status.envelopes_sent,
        status.duplicates_dropped,
        status.duplicate_messages_dropped,
        status.ttl_exceeded,
        status.local_deliveries,
        status.queued_messages
    );
    Page::html(StatusCode::OK, page("Mesh", &nav, &body)).maybe_cookie(set)
}
