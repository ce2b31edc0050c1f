//! Configuration files: any text gives a config that passed validation or an error that
//! says what is wrong, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meteomesh::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(text) {
        Ok(config) => {
            // What validated also prints (print-config) without panicking.
            let _ = config.to_redacted_toml();
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
