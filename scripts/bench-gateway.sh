#!/usr/bin/env bash
# What a gateway costs a streaming client, side by side in one run: the same load generator and
# the same simulated engine, directly, through `infermon gateway`, through LiteLLM's proxy
# (PyPI `litellm[proxy]`, a widely used gateway) and through nginx as a plain streaming reverse
# proxy (no buffering, pooled keep-alive upstream connections, TCP_NODELAY: the floor of what any
# HTTP proxy hop costs on this machine, with no observation at all), at increasing concurrency.
# Per level: client TTFT and inter-token latency (p50/p99) and what the gateway adds to them,
# the gateway's CPU seconds per 1,000 streamed tokens, and its RSS. Prints a Markdown table to
# stdout; progress goes to stderr.
#
# The infermon gateway runs as users run it, with telemetry on (OTLP to a real collector with a
# debug exporter when one is found, as scripts/bench-throughput.sh does). LiteLLM runs with its
# defaults (no callbacks), one worker, offline cost map.
#
# Settings (environment):
#   LEVELS="1 16 64 256"   concurrent streams (closed loop)
#   RATES="20 60"          instead of LEVELS: open loop, Poisson arrivals at these requests/s.
#                          With an engine at real speed (TIME_SCALE=1) and one request length,
#                          a closed loop keeps its clients in lockstep, and the engine's batching
#                          of each cohort, not the path, decides TTFT; Poisson arrivals (and
#                          OUTPUT=uniform:64:192) do not. "in flight" = req/s x mean e2e.
#                          Every path gets the same arrival times and lengths (--seed 1).
#   DURATION=15s           per level and target
#   PROMPT=128 OUTPUT=128  tokens per request (OUTPUT may be a distribution: uniform:64:192)
#   TIME_SCALE=10          simulated time speed-up of the engine
#   LITELLM=path/to/litellm (default: litellm on PATH, else /tmp/litellm-venv/bin/litellm;
#                            without it the LiteLLM rows are skipped)
#   NGINX=path/to/nginx    (default: nginx on PATH, else /usr/sbin/nginx; without it the nginx
#                          rows are skipped). One process, one worker: `master_process off`.
#   GATEWAY_CPUS=1 OTHER_CPUS=0
#                          pin the gateway under test (infermon's, LiteLLM or nginx) to cores of its own
#                          and everything else (engine, load generator, collector) to the rest,
#                          with taskset, so that what the gateway adds is its own work and not a
#                          wait for a core that the engine or the client holds. Both or neither.
#   CARGO_TARGET_DIR, PORT=18500 (engine; +1 gateway, +2 LiteLLM, +3 nginx), OTLP_PORT=14318
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
LEVELS=${LEVELS:-"1 16 64 256"}
ARRIVAL_FLAG=--concurrency LEVEL_NAME=streams ARRIVAL="closed loop"
if [[ -n ${RATES:-} ]]; then
  LEVELS=$RATES ARRIVAL_FLAG=--rate LEVEL_NAME="req/s offered" ARRIVAL="open loop (Poisson arrivals)"
fi
DURATION=${DURATION:-15s}
PROMPT=${PROMPT:-128}
OUTPUT=${OUTPUT:-128}
TIME_SCALE=${TIME_SCALE:-10}
PORT=${PORT:-18500}
OTLP_PORT=${OTLP_PORT:-14318}
LITELLM=${LITELLM:-$(command -v litellm || echo /tmp/litellm-venv/bin/litellm)}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
# A served name no tokenizer is known for: LiteLLM looks a llama tokenizer up on the Hugging Face
# Hub otherwise, which (offline) costs ~20 s of retries per request.
MODEL=bench-model
MASTER_KEY=sk-bench-$RANDOM$RANDOM

trap bench_cleanup EXIT

GATEWAY_CPUS=${GATEWAY_CPUS:-} OTHER_CPUS=${OTHER_CPUS:-}
ON_GATEWAY_CPUS=()
if [[ -n $GATEWAY_CPUS || -n $OTHER_CPUS ]]; then
  [[ -n $GATEWAY_CPUS && -n $OTHER_CPUS ]] ||
    { echo "bench-gateway.sh: set both GATEWAY_CPUS and OTHER_CPUS (e.g. GATEWAY_CPUS=1 OTHER_CPUS=0), or neither" >&2; exit 2; }
  command -v taskset >/dev/null || { echo "bench-gateway.sh: pinning needs taskset (util-linux)" >&2; exit 2; }
  ON_GATEWAY_CPUS=(taskset -c "$GATEWAY_CPUS")
fi

build_infermon
if [[ -n $OTHER_CPUS ]]; then
  # After the build: this shell and everything it starts from here on (engine, collector, load
  # generator) run on OTHER_CPUS; the gateways are started on GATEWAY_CPUS.
  taskset -cp "$OTHER_CPUS" $$ >/dev/null
  log "pinned: gateway on CPUs $GATEWAY_CPUS, engine, client and collector on CPUs $OTHER_CPUS"
fi
start_debug_collector "$WORK" "$OTLP_PORT"
OTLP_ARGS=(--otlp-endpoint "http://127.0.0.1:$OTLP_PORT")

"$BIN" sim --listen "127.0.0.1:$PORT" --model "$MODEL" --time-scale "$TIME_SCALE" --max-num-seqs 512 --no-otlp \
  2>"$WORK/sim.log" &
PIDS+=($!)
wait_for_port "$PORT" "$WORK/sim.log"

"${ON_GATEWAY_CPUS[@]}" "$BIN" gateway --listen "127.0.0.1:$((PORT + 1))" --upstream "sim=http://127.0.0.1:$PORT" \
  "${OTLP_ARGS[@]}" 2>"$WORK/gateway.log" &
GATEWAY=$!
PIDS+=("$GATEWAY")
wait_for_port "$((PORT + 1))" "$WORK/gateway.log"

TARGETS=(direct infermon-gateway)
LITELLM_PID=
if [[ -x "$LITELLM" ]]; then
  cat >"$WORK/litellm.yaml" <<EOF
model_list:
  - model_name: ${MODEL}
    litellm_params:
      model: openai/${MODEL}
      api_base: http://127.0.0.1:${PORT}/v1
      api_key: none
EOF
  # A master key, as LiteLLM requires one; the load generator sends it (--api-key) to both
  # gateways (infermon's, without tenants, ignores it).
  HF_HUB_OFFLINE=1 LITELLM_MASTER_KEY=$MASTER_KEY LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False \
    "${ON_GATEWAY_CPUS[@]}" "$LITELLM" --config "$WORK/litellm.yaml" --host 127.0.0.1 --port "$((PORT + 2))" \
    --num_workers 1 >"$WORK/litellm.log" 2>&1 &
  LITELLM_PID=$!
  PIDS+=("$LITELLM_PID")
  wait_for_port "$((PORT + 2))" "$WORK/litellm.log"
  TARGETS+=(litellm)
  LITELLM_VERSION=$("$(dirname "$LITELLM")/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || echo "?")
else
  log "LiteLLM not found ($LITELLM): its rows are skipped"
fi

NGINX_PID=
if [[ -x "$NGINX" ]]; then
  # The plainest streaming proxy: what the infermon gateway does minus all observation.
  cat >"$WORK/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log $WORK/nginx-error.log warn;
pid $WORK/nginx.pid;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-body;
  upstream engine { server 127.0.0.1:${PORT}; keepalive 1024; }
  server {
    listen 127.0.0.1:$((PORT + 3));
    location / {
      proxy_pass http://engine;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 600s;
      tcp_nodelay on;
    }
  }
}
EOF
  "${ON_GATEWAY_CPUS[@]}" "$NGINX" -c "$WORK/nginx.conf" -p "$WORK" >"$WORK/nginx.log" 2>&1 &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  wait_for_port "$((PORT + 3))" "$WORK/nginx.log"
  TARGETS+=(nginx)
  NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's|.*nginx/||')
else
  log "nginx not found ($NGINX): its rows are skipped"
fi

url_of() {
  case $1 in
    direct) echo "http://127.0.0.1:$PORT" ;;
    infermon-gateway) echo "http://127.0.0.1:$((PORT + 1))" ;;
    litellm) echo "http://127.0.0.1:$((PORT + 2))" ;;
    nginx) echo "http://127.0.0.1:$((PORT + 3))" ;;
  esac
}
pid_of() {
  case $1 in
    infermon-gateway) echo "$GATEWAY" ;;
    litellm) echo "$LITELLM_PID" ;;
    nginx) echo "$NGINX_PID" ;;
    *) echo "" ;;
  esac
}

# One request through each path first: first-use costs (connection pools, lazy imports) are
# not what is measured.
for target in "${TARGETS[@]}"; do
  curl -s -o /dev/null --max-time 60 "$(url_of "$target")/v1/chat/completions" \
    -H "authorization: Bearer $MASTER_KEY" -H 'content-type: application/json' \
    -d "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":4,\"stream\":true}" ||
    log "warm-up request through $target failed"
done

load_before=$(cut -d' ' -f1 /proc/loadavg)
printf '| %s | path | TTFT p50 | TTFT p99 | added TTFT p50 | added TTFT p99 | ITL p50 | ITL p99 | added ITL p50 | added ITL p99 | req/s | in flight | errors | gateway CPU s / 1k tokens | gateway RSS MiB |\n' "$LEVEL_NAME"
printf '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for level in $LEVELS; do
  for target in "${TARGETS[@]}"; do
    log "level $level, $target: $DURATION…"
    pid=$(pid_of "$target")
    before=0
    [[ -n "$pid" ]] && before=$(cpu_seconds "$pid")
    "$BIN" load --url "$(url_of "$target")" --model "$MODEL" "$ARRIVAL_FLAG" "$level" \
      --duration "$DURATION" --prompt-tokens "$PROMPT" --output-tokens "$OUTPUT" --ignore-eos \
      --api-key "$MASTER_KEY" --seed 1 --json --quiet --no-otlp >"$WORK/$target.$level.json" 2>"$WORK/load.log"
    after=0
    rss="–"
    if [[ -n "$pid" ]]; then
      after=$(cpu_seconds "$pid")
      rss=$(rss_mib "$pid")
    fi
    jq -r --arg level "$level" --arg target "$target" --arg cpu "$before $after" --arg rss "$rss" \
      --slurpfile direct "$WORK/direct.$level.json" '
      def ms: . * 100000 | round / 100 | tostring + " ms";
      def added(f): if $target == "direct" then "–" else (((. | f) - ($direct[0] | f)) | ms) end;
      ($cpu | split(" ") | map(tonumber)) as [$c0, $c1]
      | "| \($level) | \($target) "
        + "| \(.latency.ttft.p50 | ms) | \(.latency.ttft.p99 | ms) "
        + "| \(added(.latency.ttft.p50)) | \(added(.latency.ttft.p99)) "
        + "| \(.latency.itl.p50 | ms) | \(.latency.itl.p99 | ms) "
        + "| \(added(.latency.itl.p50)) | \(added(.latency.itl.p99)) "
        + "| \(.throughput.requests_per_s * 10 | round / 10) "
        + "| \(.throughput.requests_per_s * .latency.e2e.mean * 10 | round / 10) | \(.requests.failed) "
        + "| \(if $target == "direct" then "–" else ((($c1 - $c0) / .tokens.output * 1000 * 1000 | round) / 1000 | tostring) end) "
        + "| \($rss) |"
    ' "$WORK/$target.$level.json"
  done
done
printf '\nEngine: infermon sim at time scale %s, %s prompt + %s output tokens per request (ignore_eos),\n' \
  "$TIME_SCALE" "$PROMPT" "$OUTPUT"
printf '%s per level and path, %s. infermon gateway telemetry: %s. LiteLLM: %s. nginx: %s.\n' \
  "$DURATION" "$ARRIVAL" "$SINK" "${LITELLM_VERSION:-not run}" "${NGINX_VERSION:-not run}"
printf 'Machine: %s cores; 1-minute load average %s before, %s after. "added" = the path minus direct\n' \
  "$(nproc --all)" "$load_before" "$(cut -d' ' -f1 /proc/loadavg)"
if [[ -n $GATEWAY_CPUS ]]; then
  printf 'Pinned: the gateway under test on CPUs %s; engine, load generator and collector on CPUs %s.\n' \
    "$GATEWAY_CPUS" "$OTHER_CPUS"
fi
printf 'at the same level (the same client, engine and machine).\n'
