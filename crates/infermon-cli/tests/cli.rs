//! The built `infermon` binary: help, one-line errors for bad input, the demo end to end, and
//! `load --json` against a separate `sim` process.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_infermon");
/// Nothing listens here: telemetry export must fail quietly without failing the command.
const DEAD_COLLECTOR: &str = "http://127.0.0.1:9";

fn infermon(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    // The tests decide where telemetry goes; the developer's environment does not.
    for var in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_SDK_DISABLED",
        "INFERMON_CONFIG",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn run(args: &[&str]) -> Output {
    infermon(args).output().expect("the infermon binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_every_command_and_every_command_has_help() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for command in ["sim", "load", "demo", "gpu-agent", "relay"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
        let sub = run(&[command, "--help"]);
        assert!(sub.status.success(), "{command} --help failed");
        assert!(text(&sub.stdout).contains("Usage: infermon"), "{command}");
    }
    let load_help = text(&run(&["load", "--help"]).stdout);
    for flag in [
        "--rate",
        "--concurrency",
        "--prompt-tokens",
        "--json",
        "INFERMON_URL",
    ] {
        assert!(load_help.contains(flag), "{flag} missing from load --help");
    }
}

#[test]
fn bad_flags_give_one_clear_line_and_a_failing_exit() {
    let cases: &[(&[&str], &str)] = &[
        (&["load", "--rat", "5"], "--rate"),
        (&["load", "--rate", "abc"], "--rate"),
        (
            &["load", "--prompt-tokens", "uniform:9:1"],
            "MIN is larger than MAX",
        ),
        (&["load", "--duration", "5 parsecs"], "30s"),
        (
            &["load", "--rate", "5", "--concurrency", "2"],
            "cannot be used with",
        ),
        (
            &["load", "--url", "localhost:8000", "--model", "m"],
            "http://127.0.0.1:8000",
        ),
        (
            &["load", "--rate", "0", "--model", "m"],
            "--rate must be a positive",
        ),
        (&["sim", "--profile", "nope"], "unknown simulator profile"),
        (&["demo", "--time-scale", "0"], "time_scale"),
        (&["sim", "--time-scale", "1e-310"], "(got 1e-310)"),
        (&["sim", "--time-scale", "1e300"], "time_scale"),
        (&["sim", "--time-scale", "NaN"], "time_scale"),
        (&["sim", "--max-connections", "0"], "--max-connections"),
        (&["sim", "--drain-timeout", "soon"], "30s"),
        (&["frobnicate"], "unrecognized subcommand"),
        (
            &[
                "load",
                "--url",
                "http://127.0.0.1:9",
                "--requests",
                "1",
                "--no-otlp",
            ],
            "Connection refused",
        ),
    ];
    for (args, expected) in cases {
        let out = run(args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}:\n{stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_bad_label_policy_variable_stops_the_command_with_one_line() {
    let out = infermon(&["load", "--rate", "1", "--model", "m", "--no-otlp"])
        .env("INFERMON_LABEL_IDLE_EVICTION", "15 minutes")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("INFERMON_LABEL_IDLE_EVICTION") && stderr.contains("30s"),
        "{stderr}"
    );
}

#[test]
fn config_file_mistakes_are_one_line_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("infermon.toml");
    std::fs::write(&path, "[load]\nrat = 5\n").unwrap();
    let out = run(&["load", "--config", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unknown key `rat`"), "{stderr}");

    std::fs::write(&path, "[load]\nrate = \"fast\"\n").unwrap();
    let stderr = text(&run(&["load", "--config", path.to_str().unwrap()]).stderr);
    assert!(
        stderr.contains("--rate") && stderr.contains("from config file"),
        "{stderr}"
    );
}

#[test]
fn demo_runs_for_its_duration_and_prints_a_summary() {
    let out = run(&[
        "demo",
        "--duration",
        "5s",
        "--refresh",
        "1s",
        "--rate",
        "20",
        "--time-scale",
        "5",
        "--otlp-endpoint",
        DEAD_COLLECTOR,
    ]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("KV cache"), "live view missing:\n{stdout}");
    assert!(stdout.contains("running"), "{stdout}");
    let summary = stdout
        .split("summary (client side)")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    assert!(summary.contains("p99.9"), "{summary}");
    let succeeded: u64 = summary
        .lines()
        .find_map(|l| l.strip_prefix("requests"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|s| s.trim().split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in:\n{summary}"));
    assert!(succeeded > 0, "{summary}");
    // An unreachable collector is reported, not repeated once per export attempt.
    assert!(
        stderr.lines().count() <= 5,
        "telemetry floods stderr without a collector:\n{stderr}"
    );
    // ... said once, with what to do about it, and never called "ok".
    let no_collector = format!("no OpenTelemetry collector at {DEAD_COLLECTOR}");
    assert_eq!(stderr.matches(&no_collector).count(), 1, "{stderr}");
    assert!(stderr.contains("scripts/start-stack.sh"), "{stderr}");
    assert!(stderr.contains("--no-otlp"), "{stderr}");
    assert!(!stdout.contains("export ok"), "{stdout}");
    // Interval counts say which interval they count.
    assert!(stdout.contains("  last 1s "), "{stdout}");
    // A failed telemetry shutdown is one plain line, not the SDK's error value.
    assert!(!stderr.contains("InternalFailure"), "{stderr}");
    // Requests the client cancelled at exit are accounted for on the engine's side: each was
    // aborted by the engine or had already finished there — except one sent in the last moment,
    // still on its way to the engine when the client gave up (seen once in CI: 1 cancelled,
    // 0 aborted, finished = succeeded).
    let count = |prefix: &str, field: usize| -> u64 {
        summary
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|l| l.split(',').nth(field))
            .and_then(|s| s.trim().split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} count #{field} in:\n{summary}"))
    };
    let (cancelled, finished, aborted) =
        (count("requests", 3), count("engine", 0), count("engine", 1));
    let accounted = aborted + finished.saturating_sub(succeeded);
    assert!(accounted + 1 >= cancelled, "{summary}");
}

#[test]
fn demo_with_a_collector_that_never_answers_explains_the_lost_telemetry_in_one_line() {
    // Accepts connections (the kernel completes them) but never speaks: exports hang until the
    // telemetry shutdown gives up.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let out = run(&[
        "demo",
        "--duration",
        "2s",
        "--refresh",
        "1s",
        "--rate",
        "10",
        "--time-scale",
        "5",
        "--otlp-endpoint",
        &endpoint,
    ]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("first export pending"), "{stdout}");
    let lost: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("telemetry: "))
        .collect();
    assert_eq!(lost.len(), 1, "{stderr}");
    assert!(lost[0].contains(&endpoint), "{stderr}");
    // ... and the last word: abandoned exports do not log their failures after it.
    assert_eq!(stderr.lines().last(), Some(lost[0]), "{stderr}");
    assert!(!stderr.contains("InternalFailure"), "{stderr}");
    assert!(!stderr.contains("Failed to shutdown"), "{stderr}");
    drop(silent);
}

#[test]
fn demo_without_otlp_says_export_is_off() {
    let out = run(&[
        "demo",
        "--duration",
        "3s",
        "--refresh",
        "1s",
        "--rate",
        "10",
        "--time-scale",
        "5",
        "--no-otlp",
    ]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("telemetry  OTLP export off (--no-otlp)"),
        "{stdout}"
    );
    assert!(!stdout.contains("export ok"), "{stdout}");
    assert!(!stderr.contains("collector"), "{stderr}");
}

/// `infermon sim` in the background; stopped with Ctrl-C (SIGINT) when dropped.
struct Sim {
    child: Child,
    url: String,
    /// Its stderr lines so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Sim {
    fn start() -> Sim {
        Self::start_with(&["--time-scale", "10"])
    }

    fn start_with(extra: &[&str]) -> Sim {
        let mut args = vec![
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--otlp-endpoint",
            DEAD_COLLECTOR,
        ];
        args.extend_from_slice(extra);
        let mut child = infermon(&args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("sim exited before announcing its address")
                .unwrap();
            if let Some(rest) = line.split("on http://").nth(1) {
                break format!("http://{}", rest.split("/v1").next().unwrap());
            }
        };
        // Keep draining stderr so the simulator never blocks on a full pipe.
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Sim { child, url, log }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit.
    fn wait_exit(&mut self, bound: Duration) -> (std::process::ExitStatus, Duration) {
        let start = std::time::Instant::now();
        while start.elapsed() < bound {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sim still running {bound:?} after the signal");
    }

    fn log(&self) -> String {
        // The reader thread may still be taking the last lines.
        std::thread::sleep(Duration::from_millis(200));
        self.log.lock().unwrap().join("\n")
    }

    /// Starts a stream far longer than any test and returns its connection, the response
    /// headers already read.
    fn open_long_stream(&self) -> std::net::TcpStream {
        use std::io::{Read as _, Write as _};
        let address = self.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        let body = r#"{"model":"llama-3.1-8b-instruct","prompt":"go","max_tokens":100000,"ignore_eos":true,"stream":true}"#;
        write!(
            stream,
            "POST /v1/completions HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"), "{}", text(&head));
        stream
    }
}

/// Everything left on a connection until the server closes it.
fn read_to_close(mut stream: std::net::TcpStream) -> String {
    use std::io::Read as _;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    text(&rest)
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
    }
}

#[test]
fn load_json_against_sim_counts_every_request() {
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("infermon.toml");
    let log = dir.path().join("requests.jsonl");
    // Settings from all three sources: file (requests, prompt length), environment
    // (concurrency) and flags (url, output length).
    std::fs::write(
        &config,
        "[load]\nrequests = 30\nprompt-tokens = \"uniform:32:256\"\nconcurrency = 99\n",
    )
    .unwrap();
    let out = infermon(&[
        "load",
        "--config",
        config.to_str().unwrap(),
        "--url",
        &sim.url,
        "--output-tokens",
        "uniform:8:64",
        "--json",
        "--quiet",
        "--requests-log",
        log.to_str().unwrap(),
        "--otlp-endpoint",
        DEAD_COLLECTOR,
    ])
    .env("INFERMON_CONCURRENCY", "6")
    .output()
    .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"));
    let requests = &summary["requests"];
    assert_eq!(requests["sent"], 30);
    assert_eq!(requests["succeeded"], 30);
    assert_eq!(requests["failed"], 0);
    assert_eq!(summary["latency"]["e2e"]["count"], 30);
    assert_eq!(summary["latency"]["ttft"]["count"], 30);
    for q in ["p50", "p95", "p99", "p99.9"] {
        assert!(summary["latency"]["ttft"][q].as_f64().unwrap() > 0.0, "{q}");
    }
    let output = summary["tokens"]["output"].as_u64().unwrap();
    assert!((30..=30 * 64).contains(&output), "{output}");
    let input = summary["tokens"]["input"].as_u64().unwrap();
    assert!((30 * 32..=30 * 260).contains(&input), "{input}");
    assert_eq!(summary["errors"], serde_json::json!({}));

    // --requests-log: one line per request, each with its own trace, its tokens as counted.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 30);
    let traces: std::collections::HashSet<&str> = lines
        .iter()
        .map(|l| l["trace_id"].as_str().expect("a sampled client span"))
        .collect();
    assert_eq!(traces.len(), 30, "one trace per request");
    assert!(lines.iter().all(|l| l["outcome"] == "success"));
    let logged: u64 = lines
        .iter()
        .map(|l| l["output_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(logged, output);
}

#[test]
fn load_says_when_the_requests_log_cannot_be_created() {
    let sim = Sim::start();
    let out = infermon(&[
        "load",
        "--url",
        &sim.url,
        "--requests",
        "1",
        "--requests-log",
        "/nonexistent-dir/requests.jsonl",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--requests-log: cannot create /nonexistent-dir/requests.jsonl"),
        "{stderr}"
    );
}

#[test]
fn sigterm_with_open_streams_drains_then_ends_them_with_an_error_and_exits() {
    let mut sim = Sim::start_with(&["--time-scale", "1", "--drain-timeout", "1s"]);
    let streams: Vec<_> = (0..3).map(|_| sim.open_long_stream()).collect();
    sim.signal("TERM");
    let readers: Vec<_> = streams
        .into_iter()
        .map(|s| std::thread::spawn(move || read_to_close(s)))
        .collect();
    let (status, took) = sim.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{}", sim.log());
    assert!(
        took >= Duration::from_millis(900),
        "exited after {took:?}, before the 1 s drain"
    );
    for reader in readers {
        let rest = reader.join().unwrap();
        assert!(
            rest.contains(r#""code":"shutdown""#),
            "no final error event: {rest:.300}"
        );
        // The chunked body ends properly: [DONE], then the terminating zero-length chunk.
        assert!(rest.contains("data: [DONE]"), "{rest:.300}");
        assert!(
            rest.ends_with("0\r\n\r\n"),
            "{:?}",
            &rest[rest.len().saturating_sub(80)..]
        );
    }
    let log = sim.log();
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("drain timeout reached"), "{log}");
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut sim = Sim::start_with(&["--time-scale", "1", "--drain-timeout", "60s"]);
    let stream = sim.open_long_stream();
    sim.signal("INT");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        sim.child.try_wait().unwrap().is_none(),
        "exited on the first signal"
    );
    sim.signal("INT");
    let (status, took) = sim.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{}", sim.log());
    assert!(took < Duration::from_secs(10));
    drop(stream);
    assert!(sim.log().contains("second SIGINT"), "{}", sim.log());
}
