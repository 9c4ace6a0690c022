//! Any text as a scenario file: parsed or rejected with located errors,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = procession::scenario::parse(text, std::path::Path::new("fuzz.toml")) {
        // Every error renders, and names the file.
        let shown = errors.to_string();
        assert!(shown.contains("fuzz.toml"), "{shown}");
    }
});
