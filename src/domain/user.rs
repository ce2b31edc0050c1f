//! The vocabulary of accounts: roles, display units, and the rules a username and a
//! time zone must follow (the same on every node, so a name means one person mesh-wide).

use serde::{Deserialize, Serialize};

use super::validation::FieldError;

pub const MIN_PASSWORD_LEN: usize = 8;
/// Bounds the work one login can cause (argon2 reads the whole password).
pub const MAX_PASSWORD_LEN: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Units {
    Metric,
    Imperial,
}

impl Units {
    pub fn as_str(self) -> &'static str {
        match self {
            Units::Metric => "metric",
            Units::Imperial => "imperial",
        }
    }
    pub fn parse(s: &str) -> Option<Units> {
        match s {
            "metric" => Some(Units::Metric),
            "imperial" => Some(Units::Imperial),
            _ => None,
        }
    }
}

/// Lowercases and checks a username: 3–32 characters of `[a-z0-9_.-]`.
pub fn normalize_username(raw: &str) -> Result<String, FieldError> {
    let name = raw.trim().to_lowercase();
    if !(3..=32).contains(&name.len()) {
        return Err(FieldError::new("username", "must be 3 to 32 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
    {
        return Err(FieldError::new(
            "username",
            "may contain only letters a-z, digits and _ . -",
        ));
    }
    Ok(name)
}

pub fn check_password(field: &str, password: &str) -> Result<(), FieldError> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Err(FieldError::new(
            field,
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_PASSWORD_LEN} bytes"),
        ));
    }
    Ok(())
}

pub fn check_timezone(tz: &str) -> Result<(), FieldError> {
    jiff::tz::TimeZone::get(tz).map(|_| ()).map_err(|_| {
        FieldError::new(
            "timezone",
            format!("`{tz}` is not an IANA time zone, e.g. Europe/Rome"),
        )
    })
}
