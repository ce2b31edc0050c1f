//! Owns the weather endpoints of the JSON API: place search, the caller's
//! subscriptions (CRUD), and the admin's "poll now".

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{ApiAdmin, ApiJson, ApiPath, ApiQuery, ApiUser};
use crate::modules::poller::CycleReport;
use crate::modules::subscriptions::{StateView, SubscriptionInput, SubscriptionView};
use crate::weather::PlaceCandidate;

#[derive(Deserialize)]
pub struct SearchQuery {
    q: String,
    #[serde(default = "five")]
    count: u8,
}

fn five() -> u8 {
    5
}

pub async fn search_places(
    State(state): State<AppState>,
    _user: ApiUser,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<Json<Vec<PlaceCandidate>>, ApiError> {
    Ok(Json(
        state
            .subscriptions
            .search_places(&query.q, query.count)
            .await?,
    ))
}

pub async fn list(
    State(state): State<AppState>,
    ApiUser(auth): ApiUser,
) -> Result<Json<Vec<SubscriptionView>>, ApiError> {
    let subs = state.subscriptions.list_with_status(&auth.user).await?;
    Ok(Json(
        subs.iter()
            .map(|s| SubscriptionView {
                state: Some(StateView::new(s)),
                ..SubscriptionView::new(&s.subscription, auth.user.units)
            })
            .collect(),
    ))
}

pub async fn create(
    State(state): State<AppState>,
    ApiUser(auth): ApiUser,
    ApiJson(input): ApiJson<SubscriptionInput>,
) -> Result<impl IntoResponse, ApiError> {
    let s = state.subscriptions.create(&auth.user, &input).await?;
    Ok((
        StatusCode::CREATED,
        Json(SubscriptionView::new(&s, auth.user.units)),
    ))
}

pub async fn get(
    State(state): State<AppState>,
    ApiUser(auth): ApiUser,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let s = state.subscriptions.get(&auth.user, id).await?;
    Ok(Json(SubscriptionView::new(&s, auth.user.units)))
}

pub async fn replace(
    State(state): State<AppState>,
    ApiUser(auth): ApiUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(input): ApiJson<SubscriptionInput>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let s = state.subscriptions.replace(&auth.user, id, &input).await?;
    Ok(Json(SubscriptionView::new(&s, auth.user.units)))
}

pub async fn delete(
    State(state): State<AppState>,
    ApiUser(auth): ApiUser,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    state.subscriptions.delete(&auth.user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn poll_now(
    State(state): State<AppState>,
    _admin: ApiAdmin,
) -> Result<Json<CycleReport>, ApiError> {
    state
        .poller
        .poll_now()
        .await
        .map(Json)
        .ok_or_else(|| ApiError::Unavailable("the poller is stopping".into()))
}
