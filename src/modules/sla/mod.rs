//! Owns service-level objectives: definitions, periodic evaluation against sampled
//! metrics, violations, and forecasts of the next violation.

pub mod arima;
pub mod selector;
