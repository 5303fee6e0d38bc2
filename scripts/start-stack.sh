#!/usr/bin/env bash
# Start the observability stack natively on loopback, with the repository's own config files:
# Prometheus, Alertmanager, Jaeger and the OpenTelemetry Collector (in that order, each
# waited for until ready). Binaries come from scripts/build-stack.sh (built if missing).
#
# Usage: scripts/start-stack.sh [component...]   (default: prometheus alertmanager jaeger otelcol)
#        scripts/stop-stack.sh                   (same INFERMON_STACK_RUN_DIR)
#
# Ports are moved only through the environment (the configs read the same variables), never
# by editing copies of the configs. Defaults:
#   INFERMON_OTLP_GRPC_PORT=4317          collector OTLP/gRPC   (send telemetry here)
#   INFERMON_OTLP_HTTP_PORT=4318          collector OTLP/HTTP
#   INFERMON_OTELCOL_HEALTH_PORT=13133    collector health_check
#   INFERMON_OTELCOL_METRICS_PORT=8888    collector internal metrics (scraped by Prometheus)
#   INFERMON_PROMETHEUS_PORT=9090         Prometheus UI/API, OTLP receiver at /api/v1/otlp
#   INFERMON_ALERTMANAGER_PORT=9093
#   INFERMON_JAEGER_QUERY_PORT=16686      Jaeger UI + /api/traces/<id>
#   INFERMON_JAEGER_QUERY_GRPC_PORT=16685
#   INFERMON_JAEGER_OTLP_GRPC_PORT=14317  INFERMON_JAEGER_OTLP_HTTP_PORT=14318
#   INFERMON_JAEGER_HEALTH_PORT=13134     INFERMON_JAEGER_METRICS_PORT=8889
# or INFERMON_STACK_PORT_BASE=N to place all twelve at N..N+11 (in the order above), for
# parallel test runs. Other knobs:
#   INFERMON_VLLM_TARGET=127.0.0.1:8000   vLLM-format /metrics endpoint the collector scrapes
#   INFERMON_VICTORIAMETRICS_PORT=8428    VictoriaMetrics (component `victoriametrics`, not in the
#                                         default set, not moved by the port base). When it is
#                                         started, Prometheus also remote-writes everything to it
#                                         (deploy/victoriametrics/prometheus-remote-write.yml)
#   INFERMON_STACK_RUN_DIR                pids, logs, data (default ${TMPDIR:-/tmp}/infermon-stack-$UID)
#   INFERMON_STACK_READY_TIMEOUT=90       seconds to wait for each component
#   INFERMON_STACK_KEEP_DATA=1            keep data from a previous run (default: start empty)
#
# On success it writes $INFERMON_STACK_RUN_DIR/stack.env (sourceable: URLs and ports) and
# prints it. On failure it prints the failing component's log, stops what it started and
# exits non-zero.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/scripts/stack-lib.sh"

RUN=${INFERMON_STACK_RUN_DIR:-${TMPDIR:-/tmp}/infermon-stack-$(id -u)}
TIMEOUT=${INFERMON_STACK_READY_TIMEOUT:-90}
HOST=127.0.0.1

log() { printf '[start-stack %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# ---- ports ----------------------------------------------------------------------------------
PORT_VARS=(INFERMON_OTLP_GRPC_PORT INFERMON_OTLP_HTTP_PORT INFERMON_OTELCOL_HEALTH_PORT
  INFERMON_OTELCOL_METRICS_PORT INFERMON_PROMETHEUS_PORT INFERMON_ALERTMANAGER_PORT
  INFERMON_JAEGER_QUERY_PORT INFERMON_JAEGER_QUERY_GRPC_PORT INFERMON_JAEGER_OTLP_GRPC_PORT
  INFERMON_JAEGER_OTLP_HTTP_PORT INFERMON_JAEGER_HEALTH_PORT INFERMON_JAEGER_METRICS_PORT)
PORT_DEFAULTS=(4317 4318 13133 8888 9090 9093 16686 16685 14317 14318 13134 8889)
for i in "${!PORT_VARS[@]}"; do
  v=${PORT_VARS[$i]}
  if [[ -z "${!v:-}" ]]; then
    if [[ -n "${INFERMON_STACK_PORT_BASE:-}" ]]; then
      printf -v "$v" '%s' $((INFERMON_STACK_PORT_BASE + i))
    else
      printf -v "$v" '%s' "${PORT_DEFAULTS[$i]}"
    fi
  fi
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v=${!v} is not a port number"
  export "${v?}"
done

# What the configs read besides the ports (see otel-collector/config.yaml, deploy/jaeger).
export INFERMON_BIND_HOST=$HOST
export INFERMON_PROMETHEUS_ADDR=$HOST:$INFERMON_PROMETHEUS_PORT
export INFERMON_JAEGER_OTLP_ADDR=$HOST:$INFERMON_JAEGER_OTLP_GRPC_PORT
export INFERMON_JAEGER_DATA_DIR=$RUN/jaeger/data
export INFERMON_VLLM_TARGET=${INFERMON_VLLM_TARGET:-$HOST:8000}
INFERMON_VICTORIAMETRICS_PORT=${INFERMON_VICTORIAMETRICS_PORT:-8428}
[[ "$INFERMON_VICTORIAMETRICS_PORT" =~ ^[0-9]+$ ]] || die "INFERMON_VICTORIAMETRICS_PORT=$INFERMON_VICTORIAMETRICS_PORT is not a port number"

COMPONENTS=("$@")
((${#COMPONENTS[@]})) || COMPONENTS=(prometheus alertmanager jaeger otelcol)
for c in "${COMPONENTS[@]}"; do
  case "$c" in prometheus | alertmanager | jaeger | otelcol | victoriametrics) ;; *) die "unknown component '$c'" ;; esac
done

# ---- binaries -------------------------------------------------------------------------------
# Only the requested components' binaries are needed; build whichever are missing.
binary_var() {
  case "$1" in
    prometheus) echo PROMETHEUS ;; alertmanager) echo ALERTMANAGER ;;
    jaeger) echo JAEGER ;; otelcol) echo OTELCOL ;; victoriametrics) echo VICTORIAMETRICS ;;
  esac
}
# shellcheck source=stack-env.sh
source "$ROOT/scripts/stack-env.sh" 2>/dev/null || true
MISSING=()
for c in "${COMPONENTS[@]}"; do
  v=$(binary_var "$c")
  [[ -n "${!v:-}" ]] || MISSING+=("$c")
done
if ((${#MISSING[@]})); then
  log "not built yet: ${MISSING[*]}; running scripts/build-stack.sh ${MISSING[*]}"
  "$ROOT/scripts/build-stack.sh" "${MISSING[@]}"
  source "$ROOT/scripts/stack-env.sh" 2>/dev/null || true
fi

# ---- run dir --------------------------------------------------------------------------------
mkdir -p "$RUN/pids" "$RUN/logs"
# Only the components asked for must not be running: one component can be restarted while
# the rest of the stack keeps running (e.g. the collector, in the outage test).
for c in "${COMPONENTS[@]}"; do
  f="$RUN/pids/$c.pid"
  [[ -e "$f" ]] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    die "$c is already running from $RUN (pid $pid): run scripts/stop-stack.sh first"
  fi
  rm -f "$f"
done
if [[ "${INFERMON_STACK_KEEP_DATA:-0}" != 1 ]]; then
  rm -rf "$RUN/prometheus" "$RUN/alertmanager" "$RUN/jaeger" "$RUN/otelcol" "$RUN/victoriametrics"
fi

port_free() { ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

STARTED=()
cleanup_on_failure() {
  local rc=$?
  if ((rc != 0)) && ((${#STARTED[@]})); then
    log "startup failed; stopping what was started"
    # Only what this run started: restarting one component must not take the others down.
    INFERMON_STACK_RUN_DIR=$RUN "$ROOT/scripts/stop-stack.sh" "${STARTED[@]}" >&2 || true
  fi
  exit $rc
}
trap cleanup_on_failure EXIT

# launch NAME PORT... -- CMD...: start CMD detached in its own session, logging to the run dir.
launch() {
  local name=$1
  shift
  local p
  while [[ $1 != -- ]]; do
    port_free "$1" || die "$name: port $1 on $HOST is already in use (set the INFERMON_*_PORT variables or INFERMON_STACK_PORT_BASE)"
    shift
  done
  shift
  mkdir -p "$RUN/$name"
  setsid "$@" </dev/null >"$RUN/logs/$name.log" 2>&1 &
  echo $! >"$RUN/pids/$name.pid"
  printf '%s\n' "$1" >"$RUN/pids/$name.exe"
  STARTED+=("$name")
  log "$name: started (pid $!, log $RUN/logs/$name.log)"
}

# wait_ready NAME URL: poll until URL answers 2xx, the process dies, or the timeout passes.
wait_ready() {
  local name=$1 url=$2 pid deadline=$((SECONDS + TIMEOUT))
  pid=$(cat "$RUN/pids/$name.pid")
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "----- $RUN/logs/$name.log -----" >&2
      tail -n 40 "$RUN/logs/$name.log" >&2
      die "$name exited during startup"
    fi
    if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
      log "$name: ready ($url)"
      return 0
    fi
    sleep 0.25
  done
  echo "----- $RUN/logs/$name.log -----" >&2
  tail -n 40 "$RUN/logs/$name.log" >&2
  die "$name not ready at $url after ${TIMEOUT}s"
}

start_prometheus() {
  # prometheus.yml resolves rules/ and targets/ relative to its own path. Run the repo's file
  # through a symlink in the run dir, next to the repo's rules and target lists generated for
  # the ports in use (file SD is Prometheus' own mechanism for targets that move).
  local cfg="$RUN/prometheus/config"
  mkdir -p "$cfg/targets" "$RUN/prometheus/data"
  ln -sfn "$ROOT/deploy/prometheus/prometheus.yml" "$cfg/prometheus.yml"
  if [[ " ${COMPONENTS[*]} " == *" victoriametrics "* ]]; then
    # Prometheus has no config includes and no environment expansion: with VictoriaMetrics the
    # config is the repo's file followed by the repo's remote_write section, its address moved
    # to the port in use (the same thing the target lists below do for scrape targets).
    rm -f "$cfg/prometheus.yml"
    {
      cat "$ROOT/deploy/prometheus/prometheus.yml"
      sed "s|127\.0\.0\.1:8428|$HOST:$INFERMON_VICTORIAMETRICS_PORT|" \
        "$ROOT/deploy/victoriametrics/prometheus-remote-write.yml"
    } >"$cfg/prometheus.yml"
  fi
  ln -sfn "$ROOT/deploy/prometheus/rules" "$cfg/rules"
  printf '[{"targets": ["%s:%s"]}]\n' "$HOST" "$INFERMON_PROMETHEUS_PORT" >"$cfg/targets/prometheus.json"
  printf '[{"targets": ["%s:%s"]}]\n' "$HOST" "$INFERMON_ALERTMANAGER_PORT" >"$cfg/targets/alertmanager.json"
  printf '[{"targets": ["%s:%s"]}]\n' "$HOST" "$INFERMON_OTELCOL_METRICS_PORT" >"$cfg/targets/otelcol.json"
  printf '[{"targets": ["%s:%s"]}]\n' "$HOST" "$INFERMON_JAEGER_METRICS_PORT" >"$cfg/targets/jaeger.json"
  launch prometheus "$INFERMON_PROMETHEUS_PORT" -- \
    "$PROMETHEUS" \
    --config.file="$cfg/prometheus.yml" \
    --storage.tsdb.path="$RUN/prometheus/data" \
    --web.listen-address="$HOST:$INFERMON_PROMETHEUS_PORT" \
    --web.enable-otlp-receiver \
    --web.enable-remote-write-receiver \
    --enable-feature=exemplar-storage
  wait_ready prometheus "http://$HOST:$INFERMON_PROMETHEUS_PORT/-/ready"
}

# VictoriaMetrics single-node: flags only (it has no config file for storage and ingestion);
# the flags and why are in deploy/victoriametrics/victoriametrics.flags.
start_victoriametrics() {
  mkdir -p "$RUN/victoriametrics/data"
  local flags
  mapfile -t flags < <(grep -v '^[[:space:]]*\(#\|$\)' "$ROOT/deploy/victoriametrics/victoriametrics.flags")
  launch victoriametrics "$INFERMON_VICTORIAMETRICS_PORT" -- \
    "$VICTORIAMETRICS" "${flags[@]}" \
    -storageDataPath="$RUN/victoriametrics/data" \
    -httpListenAddr="$HOST:$INFERMON_VICTORIAMETRICS_PORT"
  wait_ready victoriametrics "http://$HOST:$INFERMON_VICTORIAMETRICS_PORT/health"
}

start_alertmanager() {
  launch alertmanager "$INFERMON_ALERTMANAGER_PORT" -- \
    "$ALERTMANAGER" \
    --config.file="$ROOT/deploy/alertmanager/alertmanager.yml" \
    --storage.path="$RUN/alertmanager" \
    --web.listen-address="$HOST:$INFERMON_ALERTMANAGER_PORT" \
    --cluster.listen-address=
  wait_ready alertmanager "http://$HOST:$INFERMON_ALERTMANAGER_PORT/-/ready"
}

start_jaeger() {
  mkdir -p "$INFERMON_JAEGER_DATA_DIR"
  launch jaeger "$INFERMON_JAEGER_QUERY_PORT" "$INFERMON_JAEGER_QUERY_GRPC_PORT" \
    "$INFERMON_JAEGER_OTLP_GRPC_PORT" "$INFERMON_JAEGER_OTLP_HTTP_PORT" \
    "$INFERMON_JAEGER_HEALTH_PORT" "$INFERMON_JAEGER_METRICS_PORT" -- \
    "$JAEGER" --config "$ROOT/deploy/jaeger/config.yaml"
  wait_ready jaeger "http://$HOST:$INFERMON_JAEGER_HEALTH_PORT/status"
  wait_ready jaeger "http://$HOST:$INFERMON_JAEGER_QUERY_PORT/api/services"
}

start_otelcol() {
  launch otelcol "$INFERMON_OTLP_GRPC_PORT" "$INFERMON_OTLP_HTTP_PORT" \
    "$INFERMON_OTELCOL_HEALTH_PORT" "$INFERMON_OTELCOL_METRICS_PORT" -- \
    "$OTELCOL" --config "$ROOT/otel-collector/config.yaml"
  wait_ready otelcol "http://$HOST:$INFERMON_OTELCOL_HEALTH_PORT/"
}

# Dependencies first, so the collector's first exports have somewhere to go.
for c in victoriametrics prometheus alertmanager jaeger otelcol; do
  for want in "${COMPONENTS[@]}"; do
    [[ $want == "$c" ]] && "start_$c"
  done
done

cat >"$RUN/stack.env" <<EOF
# Written by scripts/start-stack.sh; source it to reach the running stack.
INFERMON_STACK_RUN_DIR=$RUN
OTEL_EXPORTER_OTLP_ENDPOINT=http://$HOST:$INFERMON_OTLP_GRPC_PORT
INFERMON_OTLP_GRPC_ENDPOINT=http://$HOST:$INFERMON_OTLP_GRPC_PORT
INFERMON_OTLP_HTTP_ENDPOINT=http://$HOST:$INFERMON_OTLP_HTTP_PORT
INFERMON_OTELCOL_HEALTH_URL=http://$HOST:$INFERMON_OTELCOL_HEALTH_PORT/
INFERMON_OTELCOL_METRICS_URL=http://$HOST:$INFERMON_OTELCOL_METRICS_PORT/metrics
INFERMON_PROMETHEUS_URL=http://$HOST:$INFERMON_PROMETHEUS_PORT
INFERMON_ALERTMANAGER_URL=http://$HOST:$INFERMON_ALERTMANAGER_PORT
INFERMON_JAEGER_URL=http://$HOST:$INFERMON_JAEGER_QUERY_PORT
INFERMON_VLLM_TARGET=$INFERMON_VLLM_TARGET
INFERMON_VICTORIAMETRICS_URL=http://$HOST:$INFERMON_VICTORIAMETRICS_PORT
EOF
for v in "${PORT_VARS[@]}"; do printf '%s=%s\n' "$v" "${!v}" >>"$RUN/stack.env"; done
log "stack ready: ${COMPONENTS[*]} (environment in $RUN/stack.env)"
cat "$RUN/stack.env"
