#!/usr/bin/env bash
# Stop the stack that scripts/start-stack.sh started (same INFERMON_STACK_RUN_DIR).
# The collector goes first so it can flush its queues into Prometheus and Jaeger; each
# process gets SIGTERM, then SIGKILL after INFERMON_STACK_STOP_TIMEOUT seconds (default 15).
# Only the recorded PIDs are signalled, and only while they still run the recorded binary.
#
# Usage: scripts/stop-stack.sh [--clean]        --clean also deletes the run dir (data, logs)
#        scripts/stop-stack.sh component...    stops only those (e.g. otelcol), keeps the rest
set -euo pipefail

RUN=${INFERMON_STACK_RUN_DIR:-${TMPDIR:-/tmp}/infermon-stack-$(id -u)}
STOP_TIMEOUT=${INFERMON_STACK_STOP_TIMEOUT:-15}
CLEAN=0
# VictoriaMetrics last: Prometheus flushes its remote-write queue into it on shutdown.
ORDER=(otelcol jaeger alertmanager prometheus victoriametrics)
if [[ "${1:-}" == --clean ]]; then
  CLEAN=1
elif (($#)); then
  for c in "$@"; do
    [[ " ${ORDER[*]} " == *" $c "* ]] || { echo "stop-stack: unknown component '$c' (one of: ${ORDER[*]})" >&2; exit 2; }
  done
  ORDER=("$@")
fi

log() { printf '[stop-stack %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# Is PID still the process we started (not a recycled PID)?
ours() {
  local pid=$1 exe=$2
  kill -0 "$pid" 2>/dev/null || return 1
  [[ -z "$exe" ]] && return 0
  [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$exe" ]]
}

status=0
if [[ -d "$RUN/pids" ]]; then
  for name in "${ORDER[@]}"; do
    f="$RUN/pids/$name.pid"
    [[ -f "$f" ]] || continue
    pid=$(cat "$f")
    exe=$(cat "$RUN/pids/$name.exe" 2>/dev/null || true)
    if ours "$pid" "$exe"; then
      kill -TERM "$pid" 2>/dev/null || true
      deadline=$((SECONDS + STOP_TIMEOUT))
      while ours "$pid" "$exe" && ((SECONDS < deadline)); do sleep 0.2; done
      if ours "$pid" "$exe"; then
        log "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; killing"
        kill -KILL "$pid" 2>/dev/null || true
        status=1
      else
        log "$name (pid $pid) stopped"
      fi
    fi
    rm -f "$f" "$RUN/pids/$name.exe"
  done
else
  log "nothing to stop in $RUN"
fi

if ((CLEAN)); then
  rm -rf "$RUN"
  log "removed $RUN"
fi
exit $status
