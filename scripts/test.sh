#!/usr/bin/env bash
# The project's test command (the README names it; .ci/run calls it).
#
#   scripts/test.sh            everything: lint, unit + in-process tests, config checks with the
#                              real stack programs, and the end-to-end tests on loopback
#   scripts/test.sh --quick    lint + cargo tests only (no Go builds, no external processes)
#
# Heavy builds are cached between runs on the same machine, keyed by version:
#   cargo target   ${CARGO_TARGET_DIR:-$HOME/.cache/infermon/cargo-target-<rustc version>}
#   stack binaries ${INFERMON_STACK_CACHE:-$HOME/.cache/infermon-stack}/<component>-<version>
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

quick=0
[[ "${1:-}" == "--quick" ]] && quick=1

step() { printf '\n==> %s [%s]\n' "$*" "$(date +%H:%M:%S)"; }

rust_id=$(rustc -V | tr -c 'A-Za-z0-9.\n' '-' | tr -d '\n')
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/infermon/cargo-target-$rust_id}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export CARGO_INCREMENTAL=0
mkdir -p "$CARGO_TARGET_DIR"

# Tests that need the stack's programs fail when they are missing; a quick run leaves them out
# by name and says so (a test that cannot run never reports `ok`).
if ((!quick)); then
  step "stack binaries (built from Go modules, cached)"
  scripts/build-stack.sh
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit, in-process, CLI)"
if ((quick)); then
  cargo test --workspace --exclude infermon-e2e --locked -- --skip with_alertmanager::
  echo "skipped (quick run; they need the stack's Alertmanager): the with_alertmanager:: tests of crates/infermon-cli/tests/alerts.rs"
else
  cargo test --workspace --exclude infermon-e2e --locked
fi

# The end-to-end crate's structural tests need no external process.
step "cargo test -p infermon-e2e (structural)"
cargo test -p infermon-e2e --locked --test '*structure*'

if ((quick)); then
  echo "skipped (quick run): stack builds, config checks, supply chain, end-to-end tests"
  exit 0
fi

step "config files checked by their own programs"
scripts/check-configs.sh
# Through bash, not the run bit: a lost chmod must not skip the alerting checks silently.
bash scripts/check-alerting.sh

step "Helm chart: helm lint/template per example, server-side dry-run on a real kube-apiserver"
bash scripts/check-helm.sh

# cargo-deny is built once per version into ~/.cache/infermon-tools (minutes cold, then cached).
step "supply chain: cargo deny (licenses, bans, sources) + Go module licenses of the stack"
scripts/check-supply-chain.sh

step "end-to-end: real collector, Prometheus, Jaeger, Alertmanager on loopback"
cargo build -p infermon-cli --locked
export INFERMON_BIN="$CARGO_TARGET_DIR/debug/infermon"
cargo test -p infermon-e2e --locked -- --test-threads=1
