//! The real observability stack on loopback, for end-to-end tests.
//!
//! Starting and stopping go through `scripts/start-stack.sh` / `scripts/stop-stack.sh`, the
//! same scripts a person uses, so the tests exercise the repository's own configs and the
//! cached binaries built from their Go modules. Ports move only through the environment
//! (`INFERMON_STACK_PORT_BASE`), never by editing copies of the configs.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How many consecutive ports `start-stack.sh` uses from `INFERMON_STACK_PORT_BASE`.
const STACK_PORTS: u16 = 12;

/// The repository root of the checkout under test: the nearest directory above the working
/// directory that holds `scripts/start-stack.sh` (cargo runs a test binary in its package's
/// directory, in this crate or another that links it), else the checkout this crate was
/// compiled in.
///
/// Not the compile-time path alone: cargo hashes a workspace member's path relative to the
/// workspace, so two clones sharing a target directory share this crate's artifacts, and a
/// binary built in one clone would run the other clone's scripts and configs.
pub fn repo_root() -> PathBuf {
    let marker = Path::new("scripts").join("start-stack.sh");
    std::env::current_dir()
        .ok()
        .and_then(|cwd| {
            cwd.ancestors()
                .find(|dir| dir.join(&marker).is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("tests/ has a parent")
                .to_path_buf()
        })
}

/// Below Linux's ephemeral range (32768-60999 by default): a component restarted in a test
/// must find its port free, and an outgoing connection may hold any ephemeral port as its
/// local port (seen in the soak run: a restarted Jaeger could not bind its health port).
const PORTS_END: u16 = 32_000;

/// Finds `count` consecutive free loopback ports and returns the first.
pub fn free_port_range(count: u16) -> u16 {
    // Start at a pid-derived offset so parallel test binaries rarely probe the same range.
    let mut base = 20_000 + (std::process::id() % 1_000) as u16 * 10;
    loop {
        if (base..base + count).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
        base = if base + 2 * count > PORTS_END {
            20_000
        } else {
            base + count
        };
    }
}

/// One free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// A running stack; stopped (and its data removed) on drop, also when a test panics.
pub struct Stack {
    run_dir: PathBuf,
    env: HashMap<String, String>,
    base_env: Vec<(String, String)>,
}

impl Stack {
    /// Starts the given components (`prometheus`, `alertmanager`, `jaeger`, `otelcol`), with
    /// `extra_env` passed to the start script (e.g. `INFERMON_VLLM_TARGET`).
    pub fn start(components: &[&str], extra_env: &[(&str, String)]) -> Stack {
        let base = free_port_range(STACK_PORTS);
        let run_dir =
            std::env::temp_dir().join(format!("infermon-e2e-{}-{base}", std::process::id()));
        let mut base_env = vec![
            ("INFERMON_STACK_PORT_BASE".to_string(), base.to_string()),
            (
                "INFERMON_STACK_RUN_DIR".to_string(),
                run_dir.display().to_string(),
            ),
        ];
        base_env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let mut stack = Stack {
            run_dir,
            env: HashMap::new(),
            base_env,
        };
        stack.run_start(components);
        stack.env = parse_env_file(&stack.run_dir.join("stack.env"));
        stack
    }

    fn run_start(&self, components: &[&str]) {
        let output = Command::new(repo_root().join("scripts/start-stack.sh"))
            .args(components)
            .envs(self.base_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run scripts/start-stack.sh");
        assert!(
            output.status.success(),
            "start-stack.sh {components:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A value from the stack's `stack.env` (e.g. `INFERMON_PROMETHEUS_URL`).
    pub fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from stack.env"))
    }

    pub fn prometheus_url(&self) -> &str {
        self.var("INFERMON_PROMETHEUS_URL")
    }

    pub fn jaeger_url(&self) -> &str {
        self.var("INFERMON_JAEGER_URL")
    }

    /// The collector's OTLP/gRPC endpoint, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn otlp_endpoint(&self) -> &str {
        self.var("INFERMON_OTLP_GRPC_ENDPOINT")
    }

    /// Stops one component (SIGTERM, as an operator or an orchestrator would).
    pub fn stop_component(&self, name: &str) {
        let output = Command::new(repo_root().join("scripts/stop-stack.sh"))
            .arg(name)
            .env("INFERMON_STACK_RUN_DIR", &self.run_dir)
            .output()
            .expect("run scripts/stop-stack.sh");
        assert!(
            output.status.success(),
            "stop-stack.sh {name} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts one component again, on the same ports and data.
    pub fn start_component(&mut self, name: &str) {
        self.base_env
            .push(("INFERMON_STACK_KEEP_DATA".into(), "1".into()));
        self.run_start(&[name]);
        self.base_env.pop();
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/stop-stack.sh"))
            .arg("--clean")
            .env("INFERMON_STACK_RUN_DIR", &self.run_dir)
            .stdout(Stdio::null())
            .status();
    }
}

fn parse_env_file(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The `infermon` binary under test: `INFERMON_BIN`, or the one next to this test's build.
pub fn infermon_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("INFERMON_BIN") {
        return PathBuf::from(bin);
    }
    // target/debug/deps/<test> → target/debug/infermon
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("infermon"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p infermon-cli` first or set INFERMON_BIN",
        bin.display()
    );
    bin
}

/// A child process killed on drop (SIGTERM first, so it can flush its telemetry).
pub struct Process {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Spawns `program args` with `env`, logging stdout and stderr to a temp file.
    pub fn spawn(name: &str, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Process {
        static SPAWNED: AtomicU64 = AtomicU64::new(0);
        let n = SPAWNED.fetch_add(1, Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!(
            "infermon-e2e-{}-{n}-{name}.log",
            std::process::id()
        ));
        let file = std::fs::File::create(&log).expect("create log");
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        Process {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// `infermon sim --listen ADDR --time-scale SCALE` plus `extra` flags: each test's engine
    /// differs only in those flags and its environment.
    pub fn sim(
        name: &str,
        bin: &Path,
        addr: &str,
        time_scale: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Process {
        let mut args = vec!["sim", "--listen", addr, "--time-scale", time_scale];
        args.extend_from_slice(extra);
        Process::spawn(name, bin, &args, env)
    }

    /// An engine that exposes only vLLM's `/metrics` format (scraped by the collector) and
    /// exports nothing itself, ten times faster than real time.
    pub fn vllm_metrics_sim(bin: &Path, addr: &str, extra: &[&str]) -> Process {
        let mut args = vec!["--metrics", "vllm", "--no-otlp"];
        args.extend_from_slice(extra);
        Process::sim("sim-vllm", bin, addr, "10", &args, &[])
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident set size in KiB (Linux).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit; returns the exit status' success.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    /// Kills the process at once (SIGKILL: no drain, open connections reset) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.is_running() {
            self.terminate();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The JSON summary `infermon load --json` printed into a process's output: the first value
/// starting at the beginning of a line (log lines around it may contain braces).
pub fn json_summary(output: &str) -> Option<serde_json::Value> {
    let start = if output.starts_with('{') {
        0
    } else {
        output.find("\n{")? + 1
    };
    serde_json::Deserializer::from_str(&output[start..])
        .into_iter::<serde_json::Value>()
        .next()?
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_root_is_the_checkout_the_test_runs_in() {
        // Cargo runs this binary in `tests/` of the checkout under test.
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(repo_root(), cwd.parent().unwrap());
        assert!(repo_root().join("scripts/start-stack.sh").is_file());
    }
}
