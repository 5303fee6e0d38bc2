#!/usr/bin/env bash
# Shell-level end-to-end smoke test of the native stack (no Rust code involved):
#   1. serve a vLLM-format /metrics fixture (scripts/testdata/vllm-metrics.txt) on loopback;
#   2. scripts/start-stack.sh on its own ports and run dir;
#   3. send one trace (request span + queue/prefill/decode children + first_token event) and
#      contract metrics to the collector as OTLP/HTTP JSON;
#   4. assert through the HTTP APIs: the metrics in Prometheus under the contract names with
#      job/instance from the resource; spanmetrics with an exemplar whose trace_id Jaeger
#      resolves to the whole trace; hostmetrics; the vLLM fixture under contract names; the
#      collector's own telemetry and every stack target up; Alertmanager discovered;
#   5. stop everything (also on failure).
#
# Env: INFERMON_STACK_PORT_BASE (default 24300; ports base..base+11, fixture at base+20),
#      INFERMON_SMOKE_TIMEOUT (seconds per assertion, default 60), INFERMON_SMOKE_KEEP=1 keeps
#      the run dir (logs, data) for inspection.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/scripts/stack-lib.sh"
for tool in curl jq python3; do
  command -v "$tool" >/dev/null || die "smoke-stack needs $tool"
done

export INFERMON_STACK_PORT_BASE=${INFERMON_STACK_PORT_BASE:-24300}
export INFERMON_STACK_RUN_DIR=${INFERMON_STACK_RUN_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/infermon-smoke.XXXXXX")}
TIMEOUT=${INFERMON_SMOKE_TIMEOUT:-60}
VLLM_PORT=$((INFERMON_STACK_PORT_BASE + 20))
export INFERMON_VLLM_TARGET=127.0.0.1:$VLLM_PORT
RUN=$INFERMON_STACK_RUN_DIR
T0=$SECONDS

log() { printf '[smoke %4ss] %s\n' "$((SECONDS - T0))" "$*"; }

FIXTURE_PID=
cleanup() {
  local rc=$?
  "$ROOT/scripts/stop-stack.sh" >/dev/null 2>&1 || true
  [[ -n "$FIXTURE_PID" ]] && kill "$FIXTURE_PID" 2>/dev/null
  if ((rc != 0)); then
    echo "smoke: FAILED; component logs:" >&2
    for f in "$RUN"/logs/*.log; do
      [[ -f "$f" ]] || continue
      echo "----- $f (last 15 lines)" >&2
      tail -n 15 "$f" >&2
    done
  fi
  if [[ "${INFERMON_SMOKE_KEEP:-0}" == 1 || $rc != 0 ]]; then
    echo "smoke: run dir kept: $RUN" >&2
  else
    rm -rf "$RUN"
  fi
  exit $rc
}
trap cleanup EXIT

# ---- 1. vLLM-format fixture -------------------------------------------------------------------
# Prometheus' scraper (inside the collector) rejects unknown content types, hence not
# `python3 -m http.server`.
python3 - "$ROOT/scripts/testdata/vllm-metrics.txt" "$VLLM_PORT" <<'EOF' &
import http.server, sys
body = open(sys.argv[1], "rb").read()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/metrics":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), H).serve_forever()
EOF
FIXTURE_PID=$!

# ---- 2. stack ---------------------------------------------------------------------------------
"$ROOT/scripts/start-stack.sh" >"$RUN.start.log" 2>&1 || { cat "$RUN.start.log" >&2; rm -f "$RUN.start.log"; exit 1; }
rm -f "$RUN.start.log"
set -a
source "$RUN/stack.env"
set +a
PROM=$INFERMON_PROMETHEUS_URL
log "stack up ($RUN); Prometheus $PROM, Jaeger $INFERMON_JAEGER_URL, OTLP $INFERMON_OTLP_HTTP_ENDPOINT"

# ---- 3. OTLP in -------------------------------------------------------------------------------
hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
TRACE_ID=$(hex 16)
ROOT_SPAN=$(hex 8)
NOW=$(date +%s%N)
ns() { echo $((NOW - 300000000 + $1 * 1000000)); } # ms offsets from request arrival
RESOURCE='{"attributes": [
  {"key": "service.name", "value": {"stringValue": "infermon-smoke"}},
  {"key": "service.instance.id", "value": {"stringValue": "smoke-1"}},
  {"key": "host.name", "value": {"stringValue": "smoke-host"}}]}'
GENAI_ATTRS='{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
  {"key": "gen_ai.request.model", "value": {"stringValue": "smoke-model"}}'
span() { # name span_id parent kind start_ms end_ms extra_json
  printf '{"traceId": "%s", "spanId": "%s", "parentSpanId": "%s", "name": "%s", "kind": %s,
    "startTimeUnixNano": "%s", "endTimeUnixNano": "%s", "attributes": [%s]%s}' \
    "$TRACE_ID" "$2" "$3" "$1" "$4" "$(ns "$5")" "$(ns "$6")" "$GENAI_ATTRS" "${7:-}"
}
TRACE=$(
  cat <<EOF
{"resourceSpans": [{"resource": $RESOURCE, "scopeSpans": [{"scope": {"name": "infermon-smoke"}, "spans": [
  $(span "chat smoke-model" "$ROOT_SPAN" "" 2 0 250 ', "events": [{"name": "first_token", "timeUnixNano": "'"$(ns 60)"'",
      "attributes": [{"key": "gen_ai.server.time_to_first_token", "value": {"doubleValue": 0.06}}]}]'),
  $(span queue "$(hex 8)" "$ROOT_SPAN" 1 0 10),
  $(span prefill "$(hex 8)" "$ROOT_SPAN" 1 10 60),
  $(span decode "$(hex 8)" "$ROOT_SPAN" 1 60 250)
]}]}]}
EOF
)
METRICS=$(
  cat <<EOF
{"resourceMetrics": [{"resource": $RESOURCE, "scopeMetrics": [{"scope": {"name": "infermon-smoke"}, "metrics": [
  {"name": "gen_ai.server.request.duration", "unit": "s", "histogram": {"aggregationTemporality": 2, "dataPoints": [
    {"attributes": [$GENAI_ATTRS], "startTimeUnixNano": "$(ns 0)", "timeUnixNano": "$NOW",
     "count": "1", "sum": 0.25, "explicitBounds": [0.1, 0.5, 1], "bucketCounts": ["0", "1", "0", "0"]}]}},
  {"name": "llm.requests", "unit": "{request}", "sum": {"aggregationTemporality": 2, "isMonotonic": true, "dataPoints": [
    {"attributes": [$GENAI_ATTRS, {"key": "llm.request.outcome", "value": {"stringValue": "success"}},
                    {"key": "gen_ai.response.finish_reason", "value": {"stringValue": "stop"}}],
     "startTimeUnixNano": "$(ns 0)", "timeUnixNano": "$NOW", "asDouble": 1}]}},
  {"name": "llm.kv_cache.usage", "unit": "1", "gauge": {"dataPoints": [
    {"attributes": [$GENAI_ATTRS], "timeUnixNano": "$NOW", "asDouble": 0.5}]}}
]}]}]}
EOF
)
post() {
  curl -fsS -o /dev/null -H 'Content-Type: application/json' --data-binary "$2" \
    "$INFERMON_OTLP_HTTP_ENDPOINT/v1/$1" || die "OTLP/HTTP post to /v1/$1 was refused"
}
post traces "$TRACE"
post metrics "$METRICS"
SENT=$SECONDS
log "sent trace $TRACE_ID and 3 metrics over OTLP/HTTP"

# ---- 4. assertions ----------------------------------------------------------------------------
FAILED=0
# count QUERY: number of series a Prometheus instant query returns.
count() { curl -fsS --get --data-urlencode "query=$1" "$PROM/api/v1/query" | jq '.data.result | length'; }
value() { curl -fsS --get --data-urlencode "query=$1" "$PROM/api/v1/query" | jq -r '.data.result[0].value[1] // empty'; }
# expect DESC CMD...: poll CMD until it succeeds or TIMEOUT passes.
expect() {
  local desc=$1 deadline=$((SECONDS + TIMEOUT)) start=$SECONDS
  shift
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then
      log "ok    $desc ($((SECONDS - start))s)"
      return 0
    fi
    sleep 1
  done
  log "FAIL  $desc"
  FAILED=$((FAILED + 1))
}
has() { (($(count "$1") > 0)); }
equals() { [[ "$(value "$1")" == "$2" ]]; }

expect "OTLP histogram -> gen_ai_server_request_duration_seconds{job,instance from resource}" \
  has 'gen_ai_server_request_duration_seconds_count{job="infermon-smoke", instance="smoke-1", gen_ai_request_model="smoke-model", gen_ai_operation_name="chat"}'
log "      first OTLP metric queryable $((SECONDS - SENT))s after sending"
expect "OTLP counter -> llm_requests_total{llm_request_outcome=success}" \
  has 'llm_requests_total{job="infermon-smoke", llm_request_outcome="success", gen_ai_response_finish_reason="stop"}'
expect "OTLP unit-1 gauge -> llm_kv_cache_usage_ratio" equals 'llm_kv_cache_usage_ratio{job="infermon-smoke"}' 0.5
expect "resource host.name promoted to a label" has 'llm_kv_cache_usage_ratio{host_name="smoke-host"}'
expect "target_info carries the resource" has 'target_info{job="infermon-smoke", instance="smoke-1"}'

expect "spanmetrics calls for the request span" \
  has 'traces_span_metrics_calls_total{service_name="infermon-smoke", span_name="chat smoke-model", span_kind="SPAN_KIND_SERVER", gen_ai_request_model="smoke-model", gen_ai_operation_name="chat"}'
expect "spanmetrics duration histogram in seconds" \
  has 'traces_span_metrics_duration_seconds_bucket{service_name="infermon-smoke", span_name="chat smoke-model", le="0.32"}'
exemplar_has_trace() {
  curl -fsS --get --data-urlencode 'query=traces_span_metrics_duration_seconds_bucket{service_name="infermon-smoke"}' \
    --data-urlencode "start=$(($(date +%s) - 600))" --data-urlencode "end=$(($(date +%s) + 60))" \
    "$PROM/api/v1/query_exemplars" |
    jq -e --arg t "$TRACE_ID" '[.data[].exemplars[].labels.trace_id] | index($t) != null'
}
expect "exemplar with our trace_id in Prometheus (/api/v1/query_exemplars)" exemplar_has_trace
jaeger_has_trace() {
  curl -fsS "$INFERMON_JAEGER_URL/api/traces/$TRACE_ID" |
    jq -e '.data[0].spans as $s | ($s | length) == 4
      and ([$s[].operationName] | sort) == ["chat smoke-model", "decode", "prefill", "queue"]
      and ([$s[].logs[].fields[] | select(.key == "event") | .value] | index("first_token") != null)'
}
expect "Jaeger resolves the exemplar's trace: request span, queue/prefill/decode, first_token" jaeger_has_trace

expect "hostmetrics: CPU" has 'system_cpu_time_seconds_total'
expect "hostmetrics: memory" has 'system_memory_usage_bytes'
expect "hostmetrics: network" has 'system_network_io_bytes_total'
expect "hostmetrics: disk" has 'system_disk_io_bytes_total'
expect "hostmetrics: filesystem" has 'system_filesystem_usage_bytes'
expect "hostmetrics: load" has '{__name__=~"system_cpu_load_average_1m.*"}'
expect "hostmetrics carry host.name (resourcedetection)" has 'system_memory_usage_bytes{host_name!=""}'

V='job="vllm", instance="'$INFERMON_VLLM_TARGET'", gen_ai_request_model="smoke-model"'
expect "vLLM TTFT -> gen_ai_server_time_to_first_token_seconds" has "gen_ai_server_time_to_first_token_seconds_bucket{$V}"
expect "vLLM e2e latency -> gen_ai_server_request_duration_seconds" has "gen_ai_server_request_duration_seconds_count{$V}"
expect "vLLM inter-token latency -> gen_ai_server_time_per_output_token_seconds" has "gen_ai_server_time_per_output_token_seconds_count{$V}"
expect "vLLM queue/prefill/decode -> llm_request_*_duration_seconds" \
  has "llm_request_queue_duration_seconds_count{$V} and on() llm_request_prefill_duration_seconds_count{$V} and on() llm_request_decode_duration_seconds_count{$V}"
expect "vLLM kv_cache_usage_perc -> llm_kv_cache_usage_ratio" equals "llm_kv_cache_usage_ratio{$V}" 0.42
expect "vLLM num_requests_running -> llm_scheduler_requests{llm_request_state=running}" equals "llm_scheduler_requests{$V, llm_request_state=\"running\"}" 3
expect "vLLM num_requests_waiting -> llm_scheduler_requests{llm_request_state=waiting}" equals "llm_scheduler_requests{$V, llm_request_state=\"waiting\"}" 1
expect "vLLM num_preemptions -> llm_scheduler_preemptions_total" equals "llm_scheduler_preemptions_total{$V}" 2
expect "vLLM prompt tokens -> llm_tokens_total{gen_ai_token_type=input}" equals "llm_tokens_total{$V, gen_ai_token_type=\"input\"}" 1234
expect "vLLM generation tokens -> llm_tokens_total{gen_ai_token_type=output}" equals "llm_tokens_total{$V, gen_ai_token_type=\"output\"}" 5678
expect "vLLM request_prompt/generation_tokens -> llm_request_tokens{gen_ai_token_type}" has "llm_request_tokens_count{$V, gen_ai_token_type=\"output\"}"
expect "vLLM request_success -> llm_requests_total{finish_reason, outcome=success}" \
  equals "llm_requests_total{$V, gen_ai_response_finish_reason=\"stop\", llm_request_outcome=\"success\"}" 10
no_model_name_left() { (($(count '{job="vllm", model_name!=""}') == 0)) && has "llm_kv_cache_usage_ratio{$V}"; }
expect "no vLLM series keeps the raw model_name label" no_model_name_left
no_python_series() { (($(count '{job="vllm", __name__=~"python_.*"}') == 0)); }
expect "vLLM process/python series filtered out" no_python_series

for job in prometheus alertmanager otelcol jaeger; do
  expect "Prometheus scrapes $job (up == 1)" equals "up{job=\"$job\"}" 1
done
expect "collector self-telemetry: accepted spans counted" has '{job="otelcol", __name__=~"otelcol_receiver_accepted_spans.*"}'
expect "collector self-telemetry: exporter sent points and queue size" \
  has 'otelcol_exporter_sent_metric_points{job="otelcol"} and on() otelcol_exporter_queue_size{job="otelcol"}'
am_discovered() {
  curl -fsS "$PROM/api/v1/alertmanagers" | jq -e '.data.activeAlertmanagers | length == 1'
}
expect "Prometheus discovered Alertmanager" am_discovered

if ((FAILED)); then
  die "$FAILED smoke assertion(s) failed"
fi
log "all smoke assertions passed"
