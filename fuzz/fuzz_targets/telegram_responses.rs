//! Telegram Bot API answers: classification of any status and body, then the update list
//! as `getUpdates` reads it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meteomesh::modules::notifier::telegram::{Update, classify};

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let status = [200u16, 400, 401, 403, 404, 409, 429, 500, 502][usize::from(head) % 9];
    let body = String::from_utf8_lossy(rest);
    if let Ok(result) = classify(status, &body) {
        for item in result.as_array().cloned().unwrap_or_default() {
            let _ = serde_json::from_value::<Update>(item);
        }
    }
});
