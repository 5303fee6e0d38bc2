#!/usr/bin/env bash
# Run every Grafana dashboard query against a running stack and print the coverage table
# (dashboard -> panel -> query -> series count; Jaeger panels: traces / service-graph edges).
#
# Usage: scripts/dashboard-coverage.sh [--prometheus URL] [--jaeger URL] [--range-minutes N]
# Without flags it reads the URLs of the stack scripts/start-stack.sh started
# ($INFERMON_STACK_RUN_DIR/stack.env). Exit status: 0 all covered, 1 a target failed,
# 2 targets skipped (no Jaeger URL).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN=${INFERMON_STACK_RUN_DIR:-${TMPDIR:-/tmp}/infermon-stack-$(id -u)}
if [[ $# -eq 0 && -f "$RUN/stack.env" ]]; then
  # shellcheck disable=SC1091
  source "$RUN/stack.env"
  set -- --prometheus "$INFERMON_PROMETHEUS_URL" --jaeger "$INFERMON_JAEGER_URL"
fi
exec cargo run --quiet --manifest-path "$ROOT/Cargo.toml" -p infermon-e2e --bin dashboard-coverage -- "$@"
