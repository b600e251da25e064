//! Arbitrary text as a gateway configuration file: parse and validate. Never panics.
#![no_main]

use chitty_providers::config::GatewayFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(file) = GatewayFile::parse(text)
    {
        let _ = file.gateway_config();
    }
});
