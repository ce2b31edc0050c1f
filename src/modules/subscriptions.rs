//! Owns users' weather subscriptions: validation (constraints in the user's units,
//! stored in °C), the per-user limit, CRUD, and place search through the geocoder with
//! a SQLite cache.
//!
//! Publishes: `subscriptions/changed` after every create, update and delete.

use std::sync::Arc;

use tokio::task::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::bus::BusClient;
use crate::config::WeatherConfig;
use crate::contract::{Change, SUBSCRIPTIONS_CHANGED, SubscriptionsChanged};
use crate::domain::subscription::{Kind, Subscription};
use crate::domain::time::system_now;
use crate::domain::user::Units;
use crate::domain::user::check_timezone;
use crate::domain::validation::FieldError;
use crate::metrics::Metrics;
use crate::modules::ModuleCtx;
use crate::storage::users::User;
use crate::storage::{Db, StorageError};
use crate::weather::{Geocoder, PlaceCandidate, ProviderError};

/// Coldest and hottest thresholds accepted, in °C.
pub const MIN_C: f64 = -90.0;
pub const MAX_C: f64 = 60.0;

#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("no such subscription")]
    NotFound,
    #[error("you already have {0} subscriptions, the most allowed")]
    LimitReached(usize),
    #[error("place search is unavailable: {0}")]
    Geocoding(ProviderError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a user sends to create or replace a subscription. Temperatures are in the
/// user's units.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionInput {
    #[serde(default)]
    pub label: Option<String>,
    pub place: PlaceInput,
    #[serde(default)]
    pub min_temp: Option<f64>,
    #[serde(default)]
    pub max_temp: Option<f64>,
    #[serde(default)]
    pub rain: bool,
    #[serde(default)]
    pub snow: bool,
    /// Freezing drizzle, freezing rain or sleet.
    #[serde(default)]
    pub ice: bool,
    /// Remind every this many hours while a constraint holds (0: never; at most 168).
    #[serde(default)]
    pub remind_hours: u32,
    #[serde(default = "yes")]
    pub notify_on_clear: bool,
    /// Consecutive observations before an alert is raised or cleared.
    #[serde(default = "one")]
    pub for_observations: u32,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}

/// A place picked from search results, or bare coordinates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceInput {
    #[serde(default)]
    pub name: Option<String>,
    pub lat: f64,
    pub lon: f64,
    /// IANA zone; defaults to the user's.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// A subscription as the API shows it, temperatures in the user's units.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionView {
    pub id: i64,
    pub label: String,
    pub place: PlaceView,
    pub units: Units,
    pub min_temp: Option<f64>,
    pub max_temp: Option<f64>,
    pub rain: bool,
    pub snow: bool,
    pub ice: bool,
    pub remind_hours: u32,
    pub notify_on_clear: bool,
    pub for_observations: u32,
    pub enabled: bool,
    /// MQTT topic of the retained current state.
    pub state_topic: String,
    /// The current state (in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<StateView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlaceView {
    pub name: String,
    pub lat: f64,
    pub lon: f64,
    pub timezone: String,
}

pub fn to_celsius(v: f64, units: Units) -> f64 {
    match units {
        Units::Metric => v,
        Units::Imperial => (v - 32.0) * 5.0 / 9.0,
    }
}

pub fn from_celsius(c: f64, units: Units) -> f64 {
    let v = match units {
        Units::Metric => c,
        Units::Imperial => c * 9.0 / 5.0 + 32.0,
    };
    (v * 100.0).round() / 100.0
}

impl SubscriptionView {
    pub fn new(s: &Subscription, units: Units) -> SubscriptionView {
        SubscriptionView {
            id: s.id,
            label: s.label.clone(),
            place: PlaceView {
                name: s.place_name.clone(),
                lat: s.lat,
                lon: s.lon,
                timezone: s.timezone.clone(),
            },
            units,
            min_temp: s.min_temp_c.map(|c| from_celsius(c, units)),
            max_temp: s.max_temp_c.map(|c| from_celsius(c, units)),
            rain: s.rain,
            snow: s.snow,
            ice: s.ice,
            remind_hours: s.remind_hours,
            notify_on_clear: s.notify_on_clear,
            for_observations: s.for_observations,
            enabled: s.enabled,
            state_topic: crate::contract::subscription_state(s.user_id, s.id),
            state: None,
        }
    }
}

/// Checks `input` for `user` and returns the subscription to store (id 0).
pub fn validate(input: &SubscriptionInput, user: &User) -> Result<Subscription, Vec<FieldError>> {
    let mut errors = Vec::new();
    let p = &input.place;
    if !(-90.0..=90.0).contains(&p.lat) || !p.lat.is_finite() {
        errors.push(FieldError::new("place.lat", "must be between -90 and 90"));
    }
    if !(-180.0..=180.0).contains(&p.lon) || !p.lon.is_finite() {
        errors.push(FieldError::new("place.lon", "must be between -180 and 180"));
    }
    let timezone = p.timezone.clone().unwrap_or_else(|| user.timezone.clone());
    if let Err(mut e) = check_timezone(&timezone) {
        e.field = "place.timezone".into();
        errors.push(e);
    }
    let place_name = p
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:.2}, {:.2}", p.lat, p.lon));
    // Room for "name, region, country" as the place search gives it.
    if place_name.chars().count() > 200 {
        errors.push(FieldError::new(
            "place.name",
            "must be at most 200 characters",
        ));
    }
    let label = input
        .label
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| place_name.clone());
    if label.chars().count() > 64 {
        errors.push(FieldError::new("label", "must be at most 64 characters"));
    }
    let unit = match user.units {
        Units::Metric => "°C",
        Units::Imperial => "°F",
    };
    let mut temp = |field: &str, v: Option<f64>| -> Option<f64> {
        let v = v?;
        let c = to_celsius(v, user.units);
        if !c.is_finite() || !(MIN_C..=MAX_C).contains(&c) {
            errors.push(FieldError::new(
                field,
                format!(
                    "must be between {} and {} {unit}",
                    from_celsius(MIN_C, user.units),
                    from_celsius(MAX_C, user.units)
                ),
            ));
            return None;
        }
        Some(c)
    };
    let min = temp("min_temp", input.min_temp);
    let max = temp("max_temp", input.max_temp);
    if let (Some(lo), Some(hi)) = (min, max)
        && lo >= hi
    {
        errors.push(FieldError::new("max_temp", "must be above min_temp"));
    }
    if input.min_temp.is_none()
        && input.max_temp.is_none()
        && !input.rain
        && !input.snow
        && !input.ice
    {
        errors.push(FieldError::new(
            "constraints",
            "set at least one of min_temp, max_temp, rain, snow, ice",
        ));
    }
    if input.remind_hours > 168 {
        errors.push(FieldError::new(
            "remind_hours",
            "must be between 0 (never) and 168 (a week)",
        ));
    }
    if !(1..=10).contains(&input.for_observations) {
        errors.push(FieldError::new(
            "for_observations",
            "must be between 1 and 10",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let now = system_now();
    Ok(Subscription {
        id: 0,
        user_id: user.id,
        label,
        place_name,
        lat: p.lat,
        lon: p.lon,
        timezone,
        min_temp_c: min,
        max_temp_c: max,
        rain: input.rain,
        snow: input.snow,
        ice: input.ice,
        remind_hours: input.remind_hours,
        notify_on_clear: input.notify_on_clear,
        for_observations: input.for_observations,
        enabled: input.enabled,
        created_at: now,
        updated_at: now,
    })
}

/// A subscription with what is known of it now.
#[derive(Debug, Clone)]
pub struct SubscriptionStatus {
    pub subscription: Subscription,
    pub violated: Vec<Kind>,
    pub conditions: Option<crate::domain::weather::Conditions>,
    /// Unix seconds when the latest reading of its place was observed.
    pub observed_at: Option<i64>,
}

/// What the API shows of a subscription's state (in `GET /api/v1/subscriptions`).
#[derive(Debug, Clone, Serialize)]
pub struct StateView {
    pub violated: Vec<Kind>,
    /// RFC 3339: when the latest reading of its place was observed.
    pub observed_at: Option<String>,
    pub age_seconds: Option<i64>,
}

impl StateView {
    pub fn new(s: &SubscriptionStatus) -> StateView {
        StateView {
            violated: s.violated.clone(),
            observed_at: s
                .observed_at
                .and_then(|t| jiff::Timestamp::from_second(t).ok())
                .map(|t| t.to_string()),
            age_seconds: s.observed_at.map(|t| (system_now() - t).max(0)),
        }
    }
}

#[derive(Clone)]
pub struct SubscriptionService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    events: BusClient,
    geocoder: Geocoder,
    limit: usize,
    cache_ttl: i64,
    metrics: Arc<Metrics>,
}

/// Starts the subscription service with its publisher on the bus; the task ends the
/// publisher's session at the stop.
pub async fn start(
    ctx: &ModuleCtx<'_>,
    cfg: &WeatherConfig,
) -> Result<(SubscriptionService, JoinHandle<()>), StorageError> {
    let (client, session) = ctx.bus.publisher("subscriptions");
    let service =
        SubscriptionService::new(ctx.db.clone(), client.clone(), cfg, ctx.metrics.clone()).await?;
    Ok((
        service,
        client.close_on_shutdown(session, ctx.shutdown.clone()),
    ))
}

impl SubscriptionService {
    async fn new(
        db: Db,
        events: BusClient,
        cfg: &WeatherConfig,
        metrics: Arc<Metrics>,
    ) -> Result<SubscriptionService, StorageError> {
        let service = SubscriptionService {
            inner: Arc::new(Inner {
                db,
                events,
                geocoder: Geocoder::new(&cfg.geocoding_url, cfg.request_timeout),
                limit: cfg.max_subscriptions_per_user,
                cache_ttl: cfg.geocoding_cache_ttl.as_secs() as i64,
                metrics,
            }),
        };
        service.refresh_gauge().await?;
        Ok(service)
    }

    async fn refresh_gauge(&self) -> Result<(), StorageError> {
        let n: i64 = self.inner.db.subscriptions().count().await?;
        self.inner.metrics.alerts.subscriptions.set(n);
        Ok(())
    }

    async fn announce(&self, s: &Subscription, change: Change) {
        let msg = SubscriptionsChanged {
            user_id: s.user_id,
            subscription_id: s.id,
            change,
        };
        if let Err(e) = self.inner.events.publish(SUBSCRIPTIONS_CHANGED, &msg).await {
            tracing::warn!(error = %e, "cannot announce a subscription change");
        }
    }

    pub async fn create(
        &self,
        user: &User,
        input: &SubscriptionInput,
    ) -> Result<Subscription, SubscriptionError> {
        let new = validate(input, user).map_err(SubscriptionError::Invalid)?;
        let limit = self.inner.limit;
        let stored = self
            .inner
            .db
            .subscriptions()
            .insert(&new, limit)
            .await?
            .ok_or(SubscriptionError::LimitReached(limit))?;
        self.refresh_gauge().await?;
        self.announce(&stored, Change::Created).await;
        Ok(stored)
    }

    /// The user's subscriptions with their violated constraints and latest conditions.
    pub async fn list_with_status(
        &self,
        user: &User,
    ) -> Result<Vec<SubscriptionStatus>, SubscriptionError> {
        let id = user.id;
        Ok(self
            .inner
            .db
            .subscriptions()
            .statuses_of_user(id)
            .await?
            .into_iter()
            .map(|s| {
                let (conditions, observed_at) = match s.latest {
                    Some((json, at)) => {
                        let c: Option<crate::domain::weather::Conditions> =
                            serde_json::from_str(&json).ok();
                        // The provider's own time when it says; else when it arrived.
                        let observed = c
                            .as_ref()
                            .and_then(|c| c.observed_at_ms())
                            .map_or(at, |ms| ms.div_euclid(1000));
                        (c, Some(observed))
                    }
                    None => (None, None),
                };
                SubscriptionStatus {
                    subscription: s.subscription,
                    violated: s.violated,
                    conditions,
                    observed_at,
                }
            })
            .collect())
    }

    /// The user's subscription `id` (another user's is "not found").
    pub async fn get(&self, user: &User, id: i64) -> Result<Subscription, SubscriptionError> {
        let owner = user.id;
        self.inner
            .db
            .subscriptions()
            .by_id(id)
            .await?
            .filter(|s| s.user_id == owner)
            .ok_or(SubscriptionError::NotFound)
    }

    /// Replaces subscription `id` with `input`; its alert state starts afresh.
    pub async fn replace(
        &self,
        user: &User,
        id: i64,
        input: &SubscriptionInput,
    ) -> Result<Subscription, SubscriptionError> {
        let old = self.get(user, id).await?;
        let mut new = validate(input, user).map_err(SubscriptionError::Invalid)?;
        new.id = old.id;
        new.created_at = old.created_at;
        let stored = new.clone();
        self.inner.db.subscriptions().update(&stored).await?;
        self.announce(&new, Change::Updated).await;
        Ok(new)
    }

    pub async fn delete(&self, user: &User, id: i64) -> Result<(), SubscriptionError> {
        let old = self.get(user, id).await?;
        self.inner.db.subscriptions().delete(id).await?;
        self.refresh_gauge().await?;
        self.announce(&old, Change::Deleted).await;
        Ok(())
    }

    /// Place candidates for `query`, from the cache when fresh.
    pub async fn search_places(
        &self,
        query: &str,
        count: u8,
    ) -> Result<Vec<PlaceCandidate>, SubscriptionError> {
        let q = query.trim().to_lowercase();
        if q.chars().count() < 2 || q.chars().count() > 100 {
            return Err(SubscriptionError::Invalid(vec![FieldError::new(
                "q",
                "must be 2 to 100 characters",
            )]));
        }
        if !(1..=20).contains(&count) {
            return Err(SubscriptionError::Invalid(vec![FieldError::new(
                "count",
                "must be between 1 and 20",
            )]));
        }
        let (now, ttl) = (system_now(), self.inner.cache_ttl);
        let key = q.clone();
        let cached = self
            .inner
            .db
            .subscriptions()
            .cached_places(&key, count, now, ttl)
            .await?;
        if let Some(json) = cached.and_then(|j| serde_json::from_str(&j).ok()) {
            return Ok(json);
        }
        let inner = self.inner.clone();
        let lookup = q.clone();
        let found = tokio::task::spawn_blocking(move || inner.geocoder.search(&lookup, count))
            .await
            .map_err(|e| SubscriptionError::Geocoding(ProviderError::Unavailable(e.to_string())))?
            .map_err(SubscriptionError::Geocoding)?;
        let json = serde_json::to_string(&found).unwrap_or_else(|_| "[]".into());
        self.inner
            .db
            .subscriptions()
            .cache_places(&q, count, &json, now)
            .await?;
        Ok(found)
    }
}
