//! `infermon gpu-agent`, run as the built binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use infermon::contract::value;

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_infermon"))
        .arg("gpu-agent")
        .args(args)
        // Keep the environment from choosing devices, intervals or endpoints for us.
        .env_remove("INFERMON_GPU_DEVICES")
        .env_remove("INFERMON_GPU_INTERVAL")
        .env_remove("INFERMON_GPU_FAKE")
        .env_remove("INFERMON_ALLOW_NO_GPU")
        .env_remove("INFERMON_CONFIG")
        .output()
        .expect("run infermon")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn nvml_missing(out: &Output) -> bool {
    stderr(out).contains("NVML not available")
}

#[test]
fn once_json_prints_one_reading_of_the_fake_devices() {
    let out = agent(&["--fake", "2", "--once", "--json", "--interval", "20ms"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let devices = json["devices"].as_array().expect("devices array");
    assert_eq!(devices.len(), 2);
    for (i, d) in devices.iter().enumerate() {
        assert_eq!(d["index"], i as u64);
        assert_eq!(d["vendor"], value::VENDOR_SIMULATED);
        let m = &d["metrics"];
        for ratio in [
            "utilization",
            "memory_utilization",
            "sm_activity",
            "tensor_activity",
        ] {
            let v = m[ratio]
                .as_f64()
                .unwrap_or_else(|| panic!("{ratio} missing: {m}"));
            assert!((0.0..=1.0).contains(&v), "{ratio} = {v}");
        }
        assert!(m["power_watts"].as_f64().unwrap() <= m["power_limit_watts"].as_f64().unwrap());
        assert!(
            m["memory_usage_bytes"].as_i64().unwrap() <= m["memory_limit_bytes"].as_i64().unwrap()
        );
        assert_eq!(m["read_errors"], 0);
        // Unsupported on the simulated Hopper-class device: absent, and explained.
        assert!(m.get("retired_pages").is_none(), "{m}");
        assert!(d["unavailable"]["retired_pages"].is_string());
    }
}

#[test]
fn device_selection_picks_fake_devices_and_rejects_absent_ones() {
    let out = agent(&[
        "--fake",
        "4",
        "--devices",
        "1,3",
        "--once",
        "--json",
        "--interval",
        "10ms",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let indices: Vec<u64> = json["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [1, 3]);

    let out = agent(&["--fake", "2", "--devices", "5", "--once"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no GPU matches `5`"), "{err}");
}

#[test]
fn without_nvml_the_agent_fails_with_one_clear_line() {
    let out = agent(&["--once"]);
    if !nvml_missing(&out) {
        // A machine with an NVIDIA driver: the reading itself must work.
        assert!(out.status.success(), "{}", stderr(&out));
        return;
    }
    assert!(!out.status.success());
    let err = stderr(&out);
    let lines: Vec<&str> = err.trim().lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0]
            .ends_with("NVML not available: libnvidia-ml.so.1 not found — GPU metrics disabled"),
        "{err}"
    );
}

#[test]
fn allow_no_gpu_turns_the_missing_driver_into_an_empty_reading() {
    let out = agent(&["--allow-no-gpu", "--once", "--json", "--interval", "10ms"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["devices"].is_array());
    if nvml_missing(&out) {
        assert_eq!(json["devices"].as_array().unwrap().len(), 0);
    }
}

#[test]
fn bad_flags_get_one_line_that_says_how_to_fix_them() {
    for (args, expected) in [
        (&["--json"][..], "needs --once"),
        (&["--interval", "0s", "--fake", "1"][..], "at least 10 ms"),
        (&["--devices", "gpu zero"][..], "invalid GPU selector"),
        (&["--fake", "0"][..], "--fake"),
    ] {
        let out = agent(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

/// The exporting mode starts, polls, and exits cleanly on SIGTERM (what Kubernetes sends).
#[cfg(unix)]
#[test]
fn export_mode_runs_until_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_infermon"))
        .args([
            "gpu-agent",
            "--fake",
            "2",
            "--interval",
            "50ms",
            "--no-otlp",
        ])
        .env("RUST_LOG", "info")
        .env_remove("INFERMON_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agent");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Bounded wait for the start-up line, generous enough for a loaded machine: only a hang
    // fails here, no timing is asserted.
    let started = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains("gpu-agent polling") => break true,
            Ok(_) => continue,
            Err(_) => break false,
        }
    };
    assert!(started, "the agent never reported polling");
    std::thread::sleep(Duration::from_millis(200));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit status {status}");
}
