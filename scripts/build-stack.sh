#!/usr/bin/env bash
# Build the observability stack's real binaries from their Go modules, at the versions pinned
# in scripts/versions.env, into a cache keyed by version:
#
#   ${INFERMON_STACK_CACHE:-$HOME/.cache/infermon-stack}/<component>-<version>/
#
# A component already built for its version is skipped, so a warm run takes seconds.
# Components: otelcol (Collector Builder + otel-collector/builder.yaml), prometheus
# (prometheus + promtool), alertmanager (alertmanager + amtool), jaeger (trace store).
#
# Usage: scripts/build-stack.sh [component...]      (default: all)
# Env:   INFERMON_STACK_CACHE  cache root
#        INFERMON_BUILD_JOBS   go build -p (default: number of CPUs)
# Then:  source scripts/stack-env.sh   to get $OTELCOL, $PROMETHEUS, ... exported.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=versions.env
source "$ROOT/scripts/versions.env"
source "$ROOT/scripts/stack-lib.sh"

CACHE=$(stack_cache_root)
LOGS="$CACHE/logs"
mkdir -p "$CACHE" "$LOGS"

JOBS=${INFERMON_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}
# Everything here is pure Go; without cgo nothing needs a C toolchain and links are static.
export CGO_ENABLED=0
export GOMAXPROCS=${GOMAXPROCS:-$JOBS}
# -buildvcs: module sources carry no VCS metadata; asking for it only produces errors.
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
# Some module zips ship a go.work naming sub-modules that the zip leaves out (Prometheus).
export GOWORK=off
export GOTOOLCHAIN=$STACK_GOTOOLCHAIN
GOBUILD=(go build -p "$JOBS" -trimpath)

command -v go >/dev/null || die "Go is not installed (need Go >= 1.26)"

log() { printf '[build-stack %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# Fetch a module's source through the ordinary Go module proxy and print its directory.
module_dir() {
  local json dir
  json=$(go mod download -json "$1" 2>&1) || die "cannot download Go module $1:"$'\n'"$json"
  dir=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' | head -n1)
  [[ -n "$dir" && -d "$dir" ]] || die "no source directory for $1:"$'\n'"$json"
  printf '%s\n' "$dir"
}

# enter_module MODULE@VERSION DIR: copy a module to the writable work dir DIR and cd into it:
# modules with `replace` directives (e.g. Jaeger) cannot be `go install mod@ver`'d, but build
# fine from their own module root.
enter_module() {
  local src
  src=$(module_dir "$1")
  cp -R "$src" "$2"
  chmod -R u+w "$2"
  cd "$2"
}

# prometheus_ldflags VERSION: stripped, with VERSION stamped where a Prometheus-project binary's
# `--version` reads it (github.com/prometheus/common/version).
prometheus_ldflags() {
  local v=github.com/prometheus/common/version
  printf '%s' "-s -w -X $v.Version=$1 -X $v.Branch=HEAD -X $v.BuildUser=infermon"
}

# build_component NAME VERSION BUILD_FUNCTION BINARY...
# Runs BUILD_FUNCTION OUTDIR WORKDIR with output logged; publishes OUTDIR atomically.
build_component() {
  local name=$1 version=$2 fn=$3
  shift 3
  local dest="$CACHE/$name-$version"
  local logf="$LOGS/$name-$version.log"
  if [[ -f "$dest/.complete" ]]; then
    local ok=1 b
    for b in "$@"; do [[ -x "$dest/$b" ]] || ok=0; done
    if ((ok)); then
      log "$name $version: cached in $dest"
      return 0
    fi
  fi
  local work
  work=$(mktemp -d "$CACHE/.build-$name-XXXXXX")
  local out="$work/out"
  mkdir -p "$out"
  log "$name $version: building (log: $logf) ..."
  local start=$SECONDS rc=0
  # Not `if ! (...)`: errexit is ignored inside a condition, and the build steps rely on it.
  set +e
  (
    set -e
    "$fn" "$out" "$work"
  ) >"$logf" 2>&1
  rc=$?
  set -e
  if ((rc != 0)); then
    echo "----- last lines of $logf -----" >&2
    tail -n 40 "$logf" >&2
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
    die "building $name $version failed (full log: $logf)"
  fi
  local b
  for b in "$@"; do
    [[ -x "$out/$b" ]] || die "building $name $version produced no $b (log: $logf)"
  done
  local secs=$((SECONDS - start))
  printf 'version=%s\nbuild_seconds=%s\nbuilt_at=%s\ngo=%s\n' \
    "$version" "$secs" "$(date -u +%FT%TZ)" "$(go env GOVERSION)" >"$out/.complete"
  rm -rf "$dest"
  mv "$out" "$dest"
  chmod -R u+w "$work" 2>/dev/null || true
  rm -rf "$work"
  # Older builds of this component (other versions or manifests) are dead weight now.
  local old
  for old in "$CACHE/$name"-*/; do
    old=${old%/}
    [[ "$old" != "$dest" && -f "$old/.complete" ]] && rm -rf "$old"
  done
  log "$name $version: built in ${secs}s -> $dest"
}

# ---- OpenTelemetry Collector, via the OpenTelemetry Collector Builder ---------------------
build_otelcol() {
  local out=$1 work=$2
  set -x
  GOBIN="$work/ocb" go install -trimpath "go.opentelemetry.io/collector/cmd/builder@v$OTELCOL_VERSION"
  cp "$ROOT/otel-collector/builder.yaml" "$out/builder.yaml"
  # The builder generates the distribution's sources, runs `go mod tidy`, then
  # `go build -trimpath -ldflags="-s -w"` itself.
  "$work/ocb/builder" --config "$ROOT/otel-collector/builder.yaml" --output-path "$work/src"
  mv "$work/src/otelcol-infermon" "$out/otelcol"
}

# ---- Prometheus + promtool ------------------------------------------------------------------
build_prometheus() {
  local out=$1 work=$2
  set -x
  enter_module "github.com/prometheus/prometheus@$PROMETHEUS_GOMOD_VERSION" "$work/src"
  # remove_all_sd: leave out the cloud service-discovery plugins (Kubernetes, AWS, Azure, GCE,
  # ...), which are most of the compile time; static, file and HTTP SD remain, which is all the
  # repo's configs use. No `builtinassets` tag: the web UI is not embedded, the APIs all work.
  "${GOBUILD[@]}" -tags remove_all_sd -ldflags "$(prometheus_ldflags "$PROMETHEUS_VERSION")" \
    -o "$out/" ./cmd/prometheus ./cmd/promtool
}

# ---- Alertmanager + amtool ------------------------------------------------------------------
build_alertmanager() {
  local out=$1 work=$2
  set -x
  enter_module "github.com/prometheus/alertmanager@v$ALERTMANAGER_VERSION" "$work/src"
  # The web UI's assets (ui/app/dist) are built with npm and are not in the module; embed
  # placeholder pages instead. The API, which amtool, Prometheus and Grafana use, is complete.
  local ui
  for ui in elm mantine; do
    mkdir -p "ui/app/dist/$ui"
    printf '<!doctype html><title>Alertmanager</title><p>Web UI not built into this binary; the API is at /api/v2/.\n' \
      >"ui/app/dist/$ui/index.html"
  done
  "${GOBUILD[@]}" -ldflags "$(prometheus_ldflags "$ALERTMANAGER_VERSION")" \
    -o "$out/" ./cmd/alertmanager ./cmd/amtool
}

# ---- Jaeger v2 (trace store; stands in for Tempo, see docs/stack.md) ------------------------
build_jaeger() {
  local out=$1 work=$2
  set -x
  enter_module "github.com/jaegertracing/jaeger@$JAEGER_GOMOD_VERSION" "$work/src"
  "${GOBUILD[@]}" \
    -ldflags "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=v$JAEGER_VERSION" \
    -o "$out/jaeger" ./cmd/jaeger
}

main() {
  local comps=("$@")
  ((${#comps[@]})) || comps=(otelcol prometheus alertmanager jaeger)
  local total_start=$SECONDS c
  for c in "${comps[@]}"; do
    case "$c" in
      otelcol) build_component otelcol "$OTELCOL_VERSION-$(otelcol_manifest_hash "$ROOT")" build_otelcol otelcol ;;
      prometheus) build_component prometheus "$PROMETHEUS_VERSION" build_prometheus prometheus promtool ;;
      alertmanager) build_component alertmanager "$ALERTMANAGER_VERSION" build_alertmanager alertmanager amtool ;;
      jaeger) build_component jaeger "$JAEGER_VERSION" build_jaeger jaeger ;;
      *) die "unknown component '$c' (expected: otelcol prometheus alertmanager jaeger)" ;;
    esac
  done
  log "done in $((SECONDS - total_start))s; use: source scripts/stack-env.sh"
}

main "$@"
