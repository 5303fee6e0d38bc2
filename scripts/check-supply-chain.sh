#!/usr/bin/env bash
# Supply-chain checks (issue #15; docs/reliability.md, "Supply chain"). Runs both, reports
# each, exits non-zero if either failed:
#
#   rust  cargo deny check licenses bans sources      policy in deny.toml: permissive licenses
#                                                    only, no wildcard versions, crates.io only
#   go    licenses of every Go module linked into     scripts/go-licenses.py: fails on GPL, AGPL,
#         the stack binaries scripts/build-stack.sh   LGPL, SSPL; lists unrecognised ones for
#         builds (otelcol, prometheus, promtool,      review; report written to
#         alertmanager, amtool, jaeger, helm,         $INFERMON_STACK_CACHE/supply-chain/go-licenses.tsv
#         kube-apiserver, etcd, victoria-metrics,
#         vmalert, vmalert-tool)
#
# Usage: scripts/check-supply-chain.sh [--rust | --go] [--go-report PATH]
# Env:   INFERMON_DENY_ADVISORIES=1  also `cargo deny check advisories` (needs the advisory
#                                    database from GitHub: not reachable from CI or dev machines)
#        INFERMON_TOOLS_CACHE        where cargo-deny is built once per version (tools-lib.sh)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/versions.env
source scripts/stack-lib.sh
source scripts/tools-lib.sh
source scripts/check-lib.sh

# The header comment is the help text.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

do_rust=1 do_go=1 go_report=
while (($#)); do
  case $1 in
    --rust) do_go=0 ;;
    --go) do_rust=0 ;;
    --go-report)
      go_report=${2:?--go-report needs a path}
      shift
      ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done

# ---- Rust: cargo deny ------------------------------------------------------------------------
if ((do_rust)); then
  DENY=$(cargo_tool cargo-deny "$CARGO_DENY_VERSION" cargo-deny) || die "cannot build cargo-deny $CARGO_DENY_VERSION"
  deny_checks=(licenses bans sources)
  [[ ${INFERMON_DENY_ADVISORIES:-0} == 1 ]] && deny_checks+=(advisories)
  # --locked: the graph checked is Cargo.lock's, exactly what `cargo build --locked` builds.
  # Warnings (duplicate versions) are shown only when something fails.
  check "cargo deny ${deny_checks[*]} (deny.toml)" \
    "$DENY" --color never --all-features --locked --config deny.toml check "${deny_checks[@]}"
fi

# ---- Go: licenses of the modules in the stack binaries --------------------------------------
if ((do_go)); then
  scripts/build-stack.sh >/dev/null || die "scripts/build-stack.sh failed (run it for details)"
  source scripts/stack-env.sh || die "stack binaries missing after build"
  go_report=${go_report:-$INFERMON_STACK_CACHE/supply-chain/go-licenses.tsv}
  go_licenses() {
    # prometheus, alertmanager, jaeger, kube-apiserver (k8s.io/kubernetes) and etcd are built
    # from a copy of their module (their build
    # info says "(devel)"): name the version so their own license is checked too.
    GOTOOLCHAIN=$STACK_GOTOOLCHAIN GOWORK=off python3 scripts/go-licenses.py \
      --out "$go_report" \
      --main "github.com/prometheus/prometheus=$PROMETHEUS_GOMOD_VERSION" \
      --main "github.com/prometheus/alertmanager=v$ALERTMANAGER_VERSION" \
      --main "github.com/jaegertracing/jaeger=$JAEGER_GOMOD_VERSION" \
      --main "k8s.io/kubernetes=v$KUBERNETES_VERSION" \
      --main "go.etcd.io/etcd/server/v3=v$ETCD_VERSION" \
      "otelcol=$OTELCOL" "prometheus=$PROMETHEUS" "promtool=$PROMTOOL" \
      "alertmanager=$ALERTMANAGER" "amtool=$AMTOOL" "jaeger=$JAEGER" \
      "helm=$HELM" "kube-apiserver=$KUBE_APISERVER" "etcd=$ETCD" \
      "victoria-metrics=$VICTORIAMETRICS" "vmalert=$VMALERT" "vmalert-tool=$VMALERT_TOOL" >"$TMP/go-licenses.out"
    local rc=$?
    cat "$TMP/go-licenses.out"
    return $rc
  }
  # The classifier must still tell GPL from MPL from Apache, or a clean report means nothing.
  check "license classifier self-test (known texts)" python3 scripts/go-licenses.py --self-test
  failed_before=${#FAILED[@]}
  check "go module licenses of the stack binaries (no GPL/AGPL/LGPL/SSPL)" go_licenses
  # The summary and the review list are worth seeing on success too (a failure showed them).
  if ((${#FAILED[@]} == failed_before)); then sed 's/^/      /' "$TMP/go-licenses.out"; fi
fi

if ((${#FAILED[@]})); then
  printf '\n%d supply-chain check(s) failed\n' "${#FAILED[@]}"
  exit 1
fi
printf '\nsupply-chain checks passed\n'
