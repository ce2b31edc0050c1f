//! Weather provider answers (Open-Meteo batches, OpenWeatherMap single places): any body
//! and status must give conditions or a provider error, never a panic, and a batch answer
//! must have exactly as many entries as places asked for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meteomesh::weather::{open_meteo, openweathermap};

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let body = String::from_utf8_lossy(rest);
    let expected = usize::from(head % 8) + 1;
    if let Ok(conditions) = open_meteo::parse(&body, expected) {
        assert_eq!(conditions.len(), expected);
    }
    let status = [200u16, 401, 404, 429, 500][usize::from(head) % 5];
    let _ = openweathermap::parse(status, &body);
});
