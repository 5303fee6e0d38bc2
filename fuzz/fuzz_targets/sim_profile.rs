//! A simulator hardware/model profile file (`Profile::from_toml`, what
//! `profile = "path.toml"` loads), then the KV-cache sizing the simulator does with it at
//! start-up. Must never panic: a bad profile is an error naming the field.
#![no_main]

use infermon_sim::Profile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(profile) = Profile::from_toml(text, "fuzz.toml") else {
        return;
    };
    // Every utilisation and block size a valid sim config may pair it with, at the edges.
    for utilisation in [f64::MIN_POSITIVE, 0.9, 1.0] {
        for block_size in [1, 16, u32::MAX] {
            let _ = profile.kv_blocks(utilisation, block_size);
        }
    }
});
