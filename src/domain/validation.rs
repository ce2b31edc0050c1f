//! Error pieces shared across layers. Each layer keeps its own error enum; this holds
//! only the field-level validation message that modules produce and HTTP renders.

use serde::Serialize;

/// One invalid input field and what is wrong with it, in words a user can act on.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}
