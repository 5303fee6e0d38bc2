//! A simulator fault scenario file (`Scenario::from_toml`, what `scenario = "path.toml"` and
//! `infermon sim --scenario` load), then what the engine does with it every step: the faults
//! active at a time, and the error and latency-spike draws. Must never panic.
#![no_main]

use infermon_sim::{Faults, Scenario};
use libfuzzer_sys::fuzz_target;
use rand::rngs::SmallRng;
use rand::SeedableRng as _;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(scenario) = Scenario::from_toml(text, "fuzz.toml") else {
        return;
    };
    let mut rng = SmallRng::seed_from_u64(0);
    let mut times: Vec<f64> = vec![0.0, 1e-9, 59.999, 60.0, 1e7, f64::MAX];
    for timed in &scenario.faults {
        times.extend([timed.from_s, timed.to_s]);
    }
    for t in times {
        let active = scenario.active_at(&Faults::default(), t);
        let _ = active.roll_error(&mut rng);
        let _ = active.roll_spike(&mut rng);
    }
});
