# Helpers shared by the benchmark scripts (sourced, not run): logging, per-process CPU and
# memory, waiting for a port, and a real OpenTelemetry Collector as the telemetry sink.
# shellcheck shell=bash

# Processes to stop and a scratch folder to remove on exit (bench_cleanup, set as the EXIT
# trap by the scripts): SIGINT first (servers drain), then SIGKILL for what is left.
PIDS=()
WORK=$(mktemp -d)

bench_cleanup() {
  for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

log() { printf "%s %s\n" "$(date +%T)" "$*" >&2; }

# CPU seconds (user + system, with reaped children) a process has used so far.
cpu_seconds() {
  awk -v tck="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15 + $16 + $17) / tck }' "/proc/$1/stat"
}

rss_mib() {
  awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"
}

# wait_for_port PORT LOG: until something accepts on 127.0.0.1:PORT (at most 60 s).
wait_for_port() {
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  log "error: nothing listens on port $1 (see $2)"
  cat "$2" >&2 || true
  exit 1
}

# build_infermon: a release build of the CLI (in CARGO_TARGET_DIR, else target); sets BIN to it.
build_infermon() {
  log "building infermon (release)…"
  cargo build --release --quiet -p infermon-cli
  BIN="${CARGO_TARGET_DIR:-target}/release/infermon"
}

# start_debug_collector WORKDIR OTLP_PORT: a collector (OTELCOL, or scripts/build-stack.sh's
# cache) receiving OTLP/gRPC into its debug exporter, stopped on exit with PIDS; sets SINK (a
# description; it says so when no collector binary is found and none runs).
start_debug_collector() {
  local work=$1 port=$2
  OTELCOL=${OTELCOL:-$(ls -1 "${HOME}"/.cache/infermon-stack/otelcol*/otelcol* 2>/dev/null | head -n1 || true)}
  SINK="none reachable (exports fail, are retried and counted)"
  [[ -n "$OTELCOL" && -x "$OTELCOL" ]] || return 0
  cat >"$work/otelcol.yaml" <<YAML
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${port}
exporters:
  debug:
    verbosity: basic
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces: { receivers: [otlp], exporters: [debug] }
    metrics: { receivers: [otlp], exporters: [debug] }
YAML
  "$OTELCOL" --config "$work/otelcol.yaml" >"$work/otelcol.log" 2>&1 &
  PIDS+=($!)
  wait_for_port "$port" "$work/otelcol.log"
  SINK="OpenTelemetry Collector $(basename "$OTELCOL"), debug exporter"
}
