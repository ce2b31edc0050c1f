//! Owns the one JSON error shape of the HTTP API and the mapping from every lower
//! layer's error to an HTTP status: `{"error": {"code": "...", "message": "..."}}`
//! (plus `fields` for validation errors). The pages use the same map
//! ([`ApiError::for_page`]), so a page answers with the status the API would.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::bus::BusError;
pub use crate::domain::validation::FieldError;
use crate::modules::auth::AuthError;
use crate::modules::mesh::MeshError;
use crate::modules::notifier::NotifierError;
use crate::modules::sla::SlaError;
use crate::modules::subscriptions::SubscriptionError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed on this resource")]
    MethodNotAllowed,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after: std::time::Duration,
    },
    #[error("{0}")]
    Unavailable(String),
    /// The database refused a write for lack of space; reads still work.
    #[error("{0}")]
    StorageFull(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Validation(vec![FieldError {
            field: field.to_owned(),
            message: message.into(),
        }])
    }

    /// The status and the message a page shows for this error: the same map as the
    /// API's, so a page and the API never disagree; an internal error's detail is
    /// logged, never shown.
    pub fn for_page(&self) -> (StatusCode, String) {
        let (status, _) = self.status_and_code();
        match self {
            ApiError::Internal(detail) => {
                tracing::error!(detail, "internal error answering a page");
                (
                    status,
                    "Something went wrong on the server; please try again.".to_owned(),
                )
            }
            ApiError::Validation(fields) => (
                status,
                fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            other => (status, other.to_string()),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
            }
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::StorageFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<&'a [FieldError]>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(detail) = &self {
            // The detail may name files or SQL; log it, do not show it.
            tracing::error!(detail, "internal error answering a request");
        }
        let fields = match &self {
            ApiError::Validation(f) => Some(f.as_slice()),
            _ => None,
        };
        let body = Body {
            error: Inner {
                code,
                message: self.to_string(),
                fields,
            },
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests { retry_after, .. } => {
                // Whole seconds, rounded up, so a client that waits exactly this long succeeds.
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            _ => {}
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Invalid(fields) => ApiError::Validation(fields),
            AuthError::UsernameTaken => ApiError::Conflict(e.to_string()),
            AuthError::LastAdmin | AuthError::NameHeldElsewhere { .. } => {
                ApiError::Conflict(e.to_string())
            }
            AuthError::BadCredentials | AuthError::Unauthenticated => {
                ApiError::Unauthorized(e.to_string())
            }
            AuthError::Throttled { retry_after } => ApiError::TooManyRequests {
                message: e.to_string(),
                retry_after,
            },
            AuthError::RegistrationClosed | AuthError::Forbidden => {
                ApiError::Forbidden(e.to_string())
            }
            AuthError::NotFound => ApiError::NotFound,
            AuthError::Storage(e) => e.into(),
            AuthError::Hashing(e) => ApiError::Internal(e),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "expected a body with `Content-Type: application/json`".into(),
            ),
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::BadRequest(format!("malformed JSON: {}", e.body_text()))
            }
            JsonRejection::JsonDataError(e) => ApiError::Validation(vec![FieldError {
                field: "body".into(),
                message: e.body_text(),
            }]),
            JsonRejection::BytesRejection(e) => {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest(e.body_text())
                }
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        match e {
            StorageError::Full => ApiError::StorageFull(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<MeshError> for ApiError {
    fn from(e: MeshError) -> ApiError {
        match e {
            MeshError::Unavailable => ApiError::Unavailable(e.to_string()),
            MeshError::Invalid(m) => ApiError::field("body", m),
            MeshError::Storage(e) => e.into(),
            MeshError::Bus(e) => e.into(),
        }
    }
}

impl From<BusError> for ApiError {
    fn from(e: BusError) -> ApiError {
        match e {
            BusError::NotConnected(_) | BusError::Closed => {
                ApiError::Unavailable(format!("message bus: {e}"))
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<NotifierError> for ApiError {
    fn from(e: NotifierError) -> ApiError {
        match e {
            NotifierError::Invalid(fields) => ApiError::Validation(fields),
            NotifierError::TelegramOff
            | NotifierError::LinkingOff
            | NotifierError::NoChat
            | NotifierError::ChatUnconfirmed
            | NotifierError::NothingToConfirm => ApiError::Conflict(e.to_string()),
            NotifierError::WrongCode => ApiError::field("code", e.to_string()),
            NotifierError::CodeTooSoon { retry_after } => ApiError::TooManyRequests {
                message: e.to_string(),
                retry_after,
            },
            NotifierError::NoAccount => ApiError::NotFound,
            NotifierError::Storage(e) => e.into(),
        }
    }
}

impl From<SlaError> for ApiError {
    fn from(e: SlaError) -> ApiError {
        match e {
            SlaError::Invalid(fields) => ApiError::Validation(fields),
            SlaError::NotFound => ApiError::NotFound,
            SlaError::TooMany(_) | SlaError::NotEnoughHistory { .. } => {
                ApiError::Conflict(e.to_string())
            }
            SlaError::Prometheus(_) => ApiError::Unavailable(e.to_string()),
            SlaError::Storage(e) => e.into(),
        }
    }
}

impl From<SubscriptionError> for ApiError {
    fn from(e: SubscriptionError) -> ApiError {
        match e {
            SubscriptionError::Invalid(fields) => ApiError::Validation(fields),
            SubscriptionError::NotFound => ApiError::NotFound,
            SubscriptionError::LimitReached(_) => ApiError::Conflict(e.to_string()),
            SubscriptionError::Geocoding(_) => ApiError::Unavailable(e.to_string()),
            SubscriptionError::Storage(e) => e.into(),
        }
    }
}
