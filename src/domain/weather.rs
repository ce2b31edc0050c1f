//! The vocabulary of weather: a place on the poller's grid, the conditions a provider
//! reports there (each value possibly unknown), and what the WMO weather codes mean —
//! which count as rain, snow and ice, and how to say them in a message.
//!
//! Both providers speak WMO 4677 codes here: Open-Meteo answers them, OpenWeatherMap's
//! condition ids are mapped to them (`weather::openweathermap`). docs/weather.md has the
//! full table.

use serde::{Deserialize, Serialize};

/// A point to fetch, already rounded to the poller's grid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Coord {
    pub lat: f64,
    pub lon: f64,
}

/// Current conditions at one place. Every value may be unknown (`None`): providers
/// answer `null` or leave fields out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conditions {
    pub temperature_c: Option<f64>,
    pub precipitation_mm: Option<f64>,
    pub rain_mm: Option<f64>,
    pub showers_mm: Option<f64>,
    pub snowfall_cm: Option<f64>,
    /// WMO code of the most significant condition reported.
    pub weather_code: Option<u16>,
    /// Every condition reported, as WMO codes, when the provider reports several
    /// (OpenWeatherMap lists e.g. mist and rain); empty when `weather_code` says it all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weather_codes: Vec<u16>,
    /// Provider's observation time, ISO 8601 (UTC or local as the provider gives it).
    pub observed_at: Option<String>,
}

impl Conditions {
    /// Every reported WMO code (the most significant one included).
    pub fn codes(&self) -> impl Iterator<Item = u16> + '_ {
        self.weather_code
            .into_iter()
            .chain(self.weather_codes.iter().copied())
    }

    /// The most significant reported code in `set`.
    pub fn code_in(&self, set: &[u16]) -> Option<u16> {
        self.codes().filter(|c| set.contains(c)).max()
    }

    /// The observation time in Unix milliseconds: RFC 3339, or a civil time without an
    /// offset read as UTC (Open-Meteo with `timezone=GMT` answers "2026-11-22T15:00").
    pub fn observed_at_ms(&self) -> Option<i64> {
        let s = self.observed_at.as_deref()?;
        // The timestamp parser only (no civil-time parser in the binary): a time without
        // an offset is read with "Z" appended.
        s.parse::<jiff::Timestamp>()
            .or_else(|_| format!("{s}Z").parse::<jiff::Timestamp>())
            .ok()
            .map(|t| t.as_millisecond())
    }
}

/// WMO codes that count as rain: drizzle (51–57), rain (61–67), rain and snow (68, 69),
/// rain showers (80–82), thunderstorm with rain (95, 96, 99). A thunderstorm without
/// precipitation (17) does not.
pub const RAIN_CODES: &[u16] = &[
    51, 53, 55, 56, 57, 61, 63, 65, 66, 67, 68, 69, 80, 81, 82, 95, 96, 99,
];
/// WMO codes that count as snow: rain and snow (68, 69), snowfall (71–75), snow grains
/// (77), ice pellets / sleet (79), snow showers (85, 86).
pub const SNOW_CODES: &[u16] = &[68, 69, 71, 73, 75, 77, 79, 85, 86];
/// WMO codes that count as ice on the road: freezing drizzle (56, 57), freezing rain
/// (66, 67), ice pellets / sleet (79).
pub const ICE_CODES: &[u16] = &[56, 57, 66, 67, 79];

/// A WMO code in words, for messages and pages.
pub fn describe(code: u16) -> &'static str {
    match code {
        0 => "clear sky",
        1 => "mainly clear",
        2 => "partly cloudy",
        3 => "overcast",
        4 => "smoke",
        5 => "haze",
        6 => "dust",
        7 => "sand or dust",
        10 => "mist",
        17 => "thunderstorm",
        18 => "squalls",
        19 => "tornado",
        45 => "fog",
        48 => "freezing fog",
        51 => "light drizzle",
        53 => "drizzle",
        55 => "dense drizzle",
        56 => "light freezing drizzle",
        57 => "freezing drizzle",
        61 => "light rain",
        63 => "rain",
        65 => "heavy rain",
        66 => "light freezing rain",
        67 => "freezing rain",
        68 => "light rain and snow",
        69 => "rain and snow",
        71 => "light snow",
        73 => "snow",
        75 => "heavy snow",
        77 => "snow grains",
        79 => "sleet",
        80 => "light rain showers",
        81 => "rain showers",
        82 => "violent rain showers",
        85 => "snow showers",
        86 => "heavy snow showers",
        95 => "thunderstorm with rain",
        96 => "thunderstorm with hail",
        99 => "thunderstorm with heavy hail",
        _ => "unknown conditions",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observation_times_in_both_provider_spellings() {
        let at = |s: &str| Conditions {
            observed_at: Some(s.into()),
            ..Conditions::default()
        };
        let utc = 1_795_359_600_000; // 2026-11-22T15:00:00Z
        assert_eq!(at("2026-11-22T15:00").observed_at_ms(), Some(utc));
        assert_eq!(at("2026-11-22T15:00:00Z").observed_at_ms(), Some(utc));
        assert_eq!(at("2026-11-22T16:00:00+01:00").observed_at_ms(), Some(utc));
        assert_eq!(at("yesterday").observed_at_ms(), None);
        assert_eq!(Conditions::default().observed_at_ms(), None);
    }

    #[test]
    fn every_code_of_a_set_has_words() {
        for code in RAIN_CODES.iter().chain(SNOW_CODES).chain(ICE_CODES) {
            assert_ne!(describe(*code), "unknown conditions", "code {code}");
        }
    }
}
