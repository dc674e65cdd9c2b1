//! `config.json` parsing (both layouts) and validation on arbitrary text: never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use qwenc_codegen::QwenConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = QwenConfig::from_json_str(Path::new("config.json"), text) {
        if config.validate().is_ok() {
            // Derived sizes of a valid config do not panic.
            let _ = (config.q_dim(), config.kv_dim(), config.group_size());
            let _ = config.to_hf_json();
        }
    }
});
