#!/usr/bin/env bash
# Throughput of the simulator and the load generator, as two release-built processes on this
# machine, at increasing concurrency: sustained requests/s and streamed tokens/s with full
# instrumentation (engine spans + metrics, client spans) and OTLP export on. Prints a Markdown
# table (one row per level) to stdout; progress goes to stderr.
#
# Telemetry goes to a real OpenTelemetry Collector with a debug exporter when an `otelcol*`
# binary is found (OTELCOL, or scripts/build-stack.sh's cache); otherwise to a closed port, so
# every export fails, is retried and counted — the cost of telemetry is still paid, the sink is
# just missing (the table says which).
#
# Settings (environment):
#   LEVELS="50 100 200 300"  concurrent streams per level (closed loop)
#   DURATION=20s             per level
#   PROMPT=256 OUTPUT=256    tokens per request (outputs forced to OUTPUT with ignore_eos)
#   TIME_SCALE=10            simulated time speed-up (1 = real H100 step times)
#   PROFILE=h100-80gb-llama-8b
#   MAX_NUM_SEQS=512         engine batch limit (above the highest level so all streams run)
#   CARGO_TARGET_DIR, OTELCOL, PORT=18400, OTLP_PORT=14317
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
LEVELS=${LEVELS:-"50 100 200 300"}
DURATION=${DURATION:-20s}
PROMPT=${PROMPT:-256}
OUTPUT=${OUTPUT:-256}
TIME_SCALE=${TIME_SCALE:-10}
PROFILE=${PROFILE:-h100-80gb-llama-8b}
MAX_NUM_SEQS=${MAX_NUM_SEQS:-512}
PORT=${PORT:-18400}
OTLP_PORT=${OTLP_PORT:-14317}

trap bench_cleanup EXIT

build_infermon
start_debug_collector "$WORK" "$OTLP_PORT"

"$BIN" sim --listen "127.0.0.1:$PORT" --profile "$PROFILE" --time-scale "$TIME_SCALE" \
  --max-num-seqs "$MAX_NUM_SEQS" --otlp-endpoint "http://127.0.0.1:$OTLP_PORT" \
  2>"$WORK/sim.log" &
SIM=$!
PIDS+=("$SIM")
wait_for_port "$PORT" "$WORK/sim.log"

log "sink: $SINK"
load_before=$(cut -d' ' -f1 /proc/loadavg)
printf '| streams | req/s | output tok/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | e2e p99 | errors | sim CPU | load CPU | CPU µs/token |\n'
printf '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for level in $LEVELS; do
  log "level: $level concurrent streams for $DURATION…"
  sim_before=$(cpu_seconds "$SIM")
  /usr/bin/time -f '%e %U %S' -o "$WORK/load.time" \
    "$BIN" load --url "http://127.0.0.1:$PORT" --concurrency "$level" --duration "$DURATION" \
    --prompt-tokens "$PROMPT" --output-tokens "$OUTPUT" --ignore-eos --json --quiet \
    --otlp-endpoint "http://127.0.0.1:$OTLP_PORT" >"$WORK/load.json" 2>"$WORK/load.log"
  sim_after=$(cpu_seconds "$SIM")
  read -r wall user sys <"$WORK/load.time"
  jq -r --arg level "$level" --arg sim "$sim_before $sim_after" --arg load "$wall $user $sys" '
    def ms: . * 100000 | round / 100 | tostring + " ms";
    ($sim | split(" ") | map(tonumber)) as [$s0, $s1]
    | ($load | split(" ") | map(tonumber)) as [$wall, $u, $sy]
    | "| \($level) | \(.throughput.requests_per_s * 10 | round / 10) "
      + "| \(.throughput.output_tokens_per_s | round) "
      + "| \(.latency.ttft.p50 | ms) | \(.latency.ttft.p99 | ms) "
      + "| \(.latency.itl.p50 | ms) | \(.latency.itl.p99 | ms) "
      + "| \(.latency.e2e.p99 | ms) "
      + "| \(.requests.failed) "
      + "| \((($s1 - $s0) / .elapsed_s * 100) | round)% "
      + "| \((($u + $sy) / $wall * 100) | round)% "
      + "| \((($s1 - $s0 + $u + $sy) / .tokens.output * 1e7 | round) / 10) |"
  ' "$WORK/load.json"
done
printf '\nTelemetry sink: %s. Time scale %s, profile %s, %s prompt + %s output tokens per request,\n' \
  "$SINK" "$TIME_SCALE" "$PROFILE" "$PROMPT" "$OUTPUT"
printf '%s per level. CPU: %% of one core over the level (sim, load) and both processes'"'"' CPU per\n' "$DURATION"
printf 'streamed token. Machine: %s cores; 1-minute load average %s before, %s after.\n' \
  "$(nproc)" "$load_before" "$(cut -d' ' -f1 /proc/loadavg)"
