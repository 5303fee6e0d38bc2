#!/usr/bin/env bash
# Build the observability stack's real binaries from their Go modules, at the versions pinned
# in scripts/versions.env, into a cache keyed by version:
#
#   ${INFERMON_STACK_CACHE:-$HOME/.cache/infermon-stack}/<component>-<version>/
#
# A component already built for its version is skipped, so a warm run takes seconds.
# Components: otelcol (Collector Builder + otel-collector/builder.yaml), prometheus
# (prometheus + promtool), alertmanager (alertmanager + amtool), jaeger (trace store),
# victoriametrics (victoria-metrics + vmalert + vmalert-tool: the scale-out metrics store option),
# helm, kube (kube-apiserver + etcd: the Helm chart's server-side dry-run, scripts/check-helm.sh).
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

# ---- VictoriaMetrics single-node + vmalert + vmalert-tool (scale-out metrics store option) ---
# The module has no replace directives, so `go install pkg@version` builds it as released. The
# cluster release (vminsert/vmselect/vmstorage, tags vX-cluster) is not served by the module
# proxy, see docs/scale.md.
build_victoriametrics() {
  local out=$1
  set -x
  local mod=github.com/VictoriaMetrics/VictoriaMetrics app
  for app in victoria-metrics vmalert vmalert-tool; do
    # buildinfo.Version is what `-version` prints and what VictoriaMetrics exports as vm_app_version.
    GOBIN="$out" go install -p "$JOBS" -trimpath \
      -ldflags "-s -w -X $mod/lib/buildinfo.Version=$app-$VICTORIAMETRICS_GOMOD_VERSION" \
      "$mod/app/$app@$VICTORIAMETRICS_GOMOD_VERSION"
  done
}

# ---- Helm (scripts/check-helm.sh: lint + template of deploy/helm/infermon) ------------------
build_helm() {
  local out=$1
  set -x
  # As Helm's Makefile stamps them: the version Helm prints, and the default Kubernetes version
  # (1.<client-go minor>) that `helm template`/`lint` render for without --kube-version (else
  # 1.20, which charts requiring a newer Kubernetes refuse).
  local gomod minor
  gomod=$(module_dir "helm.sh/helm/v3@v$HELM_VERSION")/go.mod
  minor=$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod")
  [[ -n $minor ]] || die "no k8s.io/client-go requirement in $gomod"
  local h=helm.sh/helm/v3
  GOBIN="$out" go install -p "$JOBS" -trimpath \
    -ldflags "-s -w -X $h/internal/version.version=v$HELM_VERSION
      -X $h/pkg/lint/rules.k8sVersionMajor=1 -X $h/pkg/lint/rules.k8sVersionMinor=$minor
      -X $h/pkg/chartutil.k8sVersionMajor=1 -X $h/pkg/chartutil.k8sVersionMinor=$minor" \
    "$h/cmd/helm@v$HELM_VERSION"
}

# ---- kube-apiserver + etcd (scripts/check-helm.sh: server-side dry-run of the chart) ---------
build_kube() {
  local out=$1 work=$2
  set -x
  local minor=${KUBERNETES_VERSION#*.}
  # etcd's server module replaces its sibling modules with ../api etc., which its zip leaves
  # out: drop those replaces so the published go.etcd.io/etcd/*/v3 of the same version are used.
  enter_module "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" "$work/etcd"
  go mod edit -dropreplace=go.etcd.io/etcd/api/v3 -dropreplace=go.etcd.io/etcd/client/pkg/v3 \
    -dropreplace=go.etcd.io/etcd/client/v3 -dropreplace=go.etcd.io/etcd/pkg/v3
  GOFLAGS="$GOFLAGS -mod=mod" "${GOBUILD[@]}" -ldflags "-s -w" -o "$out/etcd" .
  # k8s.io/kubernetes replaces every k8s.io/<staging> module with ./staging/src/..., which its
  # zip leaves out: point each at its published release, v0.<minor>.<patch>.
  enter_module "k8s.io/kubernetes@v$KUBERNETES_VERSION" "$work/kubernetes"
  local args=() m
  while read -r m; do
    args+=("-replace=$m=$m@v0.$minor")
  done < <(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => \./staging/.*#\1#p' go.mod)
  ((${#args[@]})) || die "k8s.io/kubernetes@v$KUBERNETES_VERSION: no staging replaces found in go.mod"
  go mod edit "${args[@]}"
  # providerless: no cloud-provider SDKs (most of the code, none of it used on loopback).
  # gitVersion: what /version reports, and so the Kubernetes version Helm's --kube-version and
  # the dry-run agree on.
  local v=k8s.io/component-base/version
  GOFLAGS="$GOFLAGS -mod=mod" "${GOBUILD[@]}" -tags providerless \
    -ldflags "-s -w -X $v.gitVersion=v$KUBERNETES_VERSION -X $v.gitMajor=1 -X $v.gitMinor=${minor%%.*}" \
    -o "$out/kube-apiserver" ./cmd/kube-apiserver
}

main() {
  local comps=("$@")
  ((${#comps[@]})) || comps=(otelcol prometheus alertmanager jaeger victoriametrics helm kube)
  local total_start=$SECONDS c
  for c in "${comps[@]}"; do
    case "$c" in
      otelcol) build_component otelcol "$OTELCOL_VERSION-$(otelcol_manifest_hash "$ROOT")" build_otelcol otelcol ;;
      prometheus) build_component prometheus "$PROMETHEUS_VERSION" build_prometheus prometheus promtool ;;
      alertmanager) build_component alertmanager "$ALERTMANAGER_VERSION" build_alertmanager alertmanager amtool ;;
      jaeger) build_component jaeger "$JAEGER_VERSION" build_jaeger jaeger ;;
      victoriametrics) build_component victoriametrics "$VICTORIAMETRICS_GOMOD_VERSION" build_victoriametrics victoria-metrics vmalert vmalert-tool ;;
      helm) build_component helm "$HELM_VERSION" build_helm helm ;;
      kube) build_component kube "$KUBERNETES_VERSION-etcd$ETCD_VERSION" build_kube kube-apiserver etcd ;;
      *) die "unknown component '$c' (expected: otelcol prometheus alertmanager jaeger victoriametrics helm kube)" ;;
    esac
  done
  log "done in $((SECONDS - total_start))s; use: source scripts/stack-env.sh"
}

main "$@"
