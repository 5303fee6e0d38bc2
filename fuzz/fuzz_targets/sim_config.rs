//! The simulator's configuration file (`SimConfig::from_toml`, what `infermon sim --config` and
//! the `[sim]` file settings load), then the start-up checks (`SimConfig::resolve`). Must never
//! panic: a bad file is an error naming the field.
#![no_main]

use infermon_sim::{Profile, SimConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = SimConfig::from_toml(text, "fuzz.toml") else {
        return;
    };
    // A profile given as a path is read from disk; the fuzzer must not go reading files, and
    // the profile file format has its own target (sim_profile).
    if Profile::builtin_names().any(|name| name == config.profile) {
        let _ = config.resolve();
    }
    // What the simulator writes out (`--print-config` style) must read back the same, when the
    // values compare at all (NaN never equals itself).
    if config == config.clone() {
        if let Ok(written) = toml::to_string(&config) {
            let back = SimConfig::from_toml(&written, "written.toml")
                .unwrap_or_else(|e| panic!("{e}: {written}"));
            assert_eq!(back, config, "{written}");
        }
    }
});
