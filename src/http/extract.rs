//! Owns request extraction: a JSON body extractor whose rejections use the API's error
//! shape (400 malformed, 415 wrong content type, 413 too large, 422 wrong fields), and
//! the bearer-token user extractors of the JSON API.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::AppState;
use super::error::ApiError;
use crate::domain::user::Role;
use crate::modules::auth::{AuthError, Authenticated, MeshIdentity};

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // serde's derived structs also accept a JSON array of their fields in order
        // (`["alice", "pw"]` as a login); every body of this API is an object, so
        // anything else is refused before the fields are read.
        let axum::Json(value) = axum::Json::<serde_json::Value>::from_request(req, state).await?;
        if !value.is_object() {
            return Err(ApiError::field("body", "expected a JSON object"));
        }
        serde_json::from_value(value)
            .map(ApiJson)
            .map_err(|e| ApiError::field("body", e.to_string()))
    }
}

/// A path-parameter extractor whose rejection uses the API's error shape (404 for a
/// parameter that cannot name a resource, e.g. `/subscriptions/abc`).
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(|_| ApiError::NotFound)
    }
}

/// A query string extractor whose rejection uses the API's error shape (422 naming the
/// query).
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::field("query", e.body_text()))?;
        Ok(ApiQuery(value))
    }
}

/// The user behind `Authorization: Bearer <token>` (JSON API). Rejects with 401.
pub struct ApiUser(pub Authenticated);

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| ApiError::Unauthorized("send `Authorization: Bearer <token>`".into()))
}

impl FromRequestParts<AppState> for ApiUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(ApiUser(state.auth.authenticate(bearer(parts)?).await?))
    }
}

/// A user of this node or, with a mesh-wide secret, of any node of the mesh (the mesh
/// endpoints, where the username is the identity). Rejects with 401.
pub struct MeshUser(pub MeshIdentity);

impl FromRequestParts<AppState> for MeshUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(MeshUser(state.auth.identify(bearer(parts)?).await?))
    }
}

/// An [`ApiUser`] with the admin role. Rejects with 401 or 403.
pub struct ApiAdmin(pub Authenticated);

impl FromRequestParts<AppState> for ApiAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ApiUser(auth) = ApiUser::from_request_parts(parts, state).await?;
        if auth.user.role != Role::Admin {
            return Err(AuthError::Forbidden.into());
        }
        Ok(ApiAdmin(auth))
    }
}

/// For `#[serde(deserialize_with)]`: tells an absent field (`None`, with
/// `#[serde(default)]`) from an explicit `null` (`Some(None)`).
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}
