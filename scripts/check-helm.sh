#!/usr/bin/env bash
# Check the Helm chart deploy/helm/infermon with Helm and with Kubernetes' own API server
# (docs/kubernetes.md, "What the check proves"). Each check prints ok/FAIL; exits non-zero if
# any failed.
#
#   copies    the chart's files/ (collector agent/gateway configs, Jaeger config, Alertmanager
#             config and template, Prometheus rule files, Grafana dashboards) equal their
#             sources in the repository: one source of truth, copied, checked equal
#   pins      image tags in values.yaml equal scripts/versions.env; appVersion equals Cargo's
#   schema    values.schema.json describes every key of values.yaml and no other (but the few
#             check-helm.py's SCHEMA_ONLY gives a reason for), each with a description and
#             type, infermon's own objects closed; controls prove the comparison can fail
#   helm      `helm lint --strict` and `helm template` with each examples/*.yaml; the defaults
#             alone fail with the message naming the one required value; values with a
#             misspelt top-level key, a misspelt nested key, a wrong type and `tag: latest`
#             each make `helm lint` and `helm template` fail with Helm's schema error
#   render    scripts/check-helm.py on the renders: pinned images, requests and limits,
#             non-root, read-only root filesystem, no privilege escalation, seccomp
#             RuntimeDefault; every collector variable the chart sets is one its config reads;
#             the PrometheusRule's groups equal deploy/prometheus/rules/*.yml parsed; each
#             dashboard ConfigMap equals its grafana/dashboards/*.json; the collector, Jaeger
#             and Alertmanager configs as rendered pass `otelcol validate`, `jaeger validate`,
#             `amtool check-config` with the environment the chart gives them
#   apiserver a real etcd + kube-apiserver (built by scripts/build-stack.sh kube) on loopback,
#             prometheus-operator's CRDs installed, then every rendered object of every example
#             POSTed with ?dryRun=All&fieldValidation=Strict (schema, unknown or duplicate
#             fields, defaulting, validation, admission), in a namespace that warns on
#             PodSecurity "restricted" violations; only the expected ones are allowed
#
# Usage: scripts/check-helm.sh            all checks (builds helm and kube when not cached)
#        scripts/check-helm.sh --sync     copy the sources into the chart's files/ (then re-run)
#        scripts/check-helm.sh --no-apiserver   skip the apiserver dry-run (says so)
# Env:   INFERMON_STACK_CACHE  where scripts/build-stack.sh caches helm, kube-apiserver, etcd
#        INFERMON_KEEP_RENDER=DIR  keep the rendered manifests in DIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/versions.env
source scripts/stack-lib.sh
source scripts/check-lib.sh

CHART=deploy/helm/infermon
FILES=$CHART/files

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

# source -> copy in the chart. Directories are copied whole (by the glob given).
COPIES=(
  "otel-collector/agent.yaml=$FILES/otel-collector/agent.yaml"
  "otel-collector/gateway.yaml=$FILES/otel-collector/gateway.yaml"
  "deploy/jaeger/config.yaml=$FILES/jaeger/config.yaml"
  "deploy/alertmanager/alertmanager.yml=$FILES/alertmanager/alertmanager.yml"
  "deploy/alertmanager/templates/infermon.tmpl=$FILES/alertmanager/templates/infermon.tmpl"
)
COPY_DIRS=(
  "deploy/prometheus/rules=$FILES/prometheus/rules=*.yml"
  "grafana/dashboards=$FILES/dashboards=*.json"
)

sync() {
  local pair src dst glob f
  for pair in "${COPIES[@]}"; do
    src=${pair%%=*} dst=${pair#*=}
    [[ -f $src ]] || die "source $src is missing"
    mkdir -p "$(dirname "$dst")"
    cp "$src" "$dst"
  done
  for pair in "${COPY_DIRS[@]}"; do
    IFS='=' read -r src dst glob <<<"$pair"
    rm -rf "$dst"
    mkdir -p "$dst"
    for f in "$src"/$glob; do cp "$f" "$dst/"; done
  done
  echo "synced the chart's files/ from their sources; commit both"
}

# Every copy equals its source, and the chart holds no file its source directory lacks.
check_copies() {
  local pair src dst glob rc=0
  for pair in "${COPIES[@]}"; do
    src=${pair%%=*} dst=${pair#*=}
    cmp -s "$src" "$dst" || { echo "$dst differs from $src"; rc=1; }
  done
  for pair in "${COPY_DIRS[@]}"; do
    IFS='=' read -r src dst glob <<<"$pair"
    # The files the chart reads (glob), names and contents: a missing, extra or changed file
    # in either directory makes the listings differ.
    diff <(cd "$src" && for f in $glob; do echo "$f"; cat "$f"; done) \
      <(cd "$dst" 2>/dev/null && for f in $glob; do echo "$f"; cat "$f"; done) >/dev/null ||
      { echo "$dst/ differs from $src/ ($glob)"; rc=1; }
  done
  ((rc == 0)) || echo "run scripts/check-helm.sh --sync, then commit the chart's files/ with their sources"
  return $rc
}

check_pins() {
  python3 - "$CHART" "$OTELCOL_VERSION" "$JAEGER_VERSION" "$ALERTMANAGER_VERSION" <<'EOF'
import re, sys, yaml
chart, otel, jaeger, am = sys.argv[1:]
v = yaml.safe_load(open(f"{chart}/values.yaml"))
c = yaml.safe_load(open(f"{chart}/Chart.yaml"))
cargo = open("Cargo.toml").read()
ws = re.search(r'^\[workspace\.package\][^\[]*?^version\s*=\s*"([^"]+)"', cargo, re.M | re.S)
want = {
    "collector.image.tag": (v["collector"]["image"]["tag"], otel),
    "jaeger.image.tag": (v["jaeger"]["image"]["tag"], jaeger),
    "alertmanager.image.tag": (v["alertmanager"]["image"]["tag"], "v" + am),
    "Chart.yaml appVersion": (c["appVersion"], ws.group(1) if ws else "<no [workspace.package] version>"),
}
bad = [f"{k}: {got!r}, expected {exp!r}" for k, (got, exp) in want.items() if str(got) != exp]
print("\n".join(bad) or "all pinned as scripts/versions.env and Cargo.toml say")
sys.exit(1 if bad else 0)
EOF
}

# schema_refuses HELM VALUES EXPECTED: `helm lint --strict` and `helm template` with VALUES both
# fail, each with Helm's schema error containing EXPECTED (not some other failure).
schema_refuses() {
  local helm=$1 values=$2 expect=$3 cmd out
  for cmd in "lint --strict" template; do
    # $cmd unquoted on purpose: "lint --strict" is two words.
    # shellcheck disable=SC2086
    if out=$("$helm" $cmd "$CHART" -f "$values" --kube-version "$KUBERNETES_VERSION" 2>&1); then
      echo "helm $cmd accepted $values:"
      cat "$values"
      return 1
    fi
    if ! grep -qF "values don't meet the specifications of the schema" <<<"$out" ||
      ! grep -qF "$expect" <<<"$out"; then
      printf 'helm %s failed, but not with the schema error "%s":\n%s\n' "$cmd" "$expect" "$out"
      return 1
    fi
    echo "helm $cmd: $(grep -F -m1 "$expect" <<<"$out")"
  done
}

# check, and show what it found when it passed too (a failure shows it already).
check_shown() {
  local before=${#FAILED[@]}
  check "$@"
  if ((${#FAILED[@]} == before)); then sed 's/^/      /' "$TMP/out"; fi
}

main() {
  local apiserver=1
  while (($#)); do
    case $1 in
      --sync) sync; exit 0 ;;
      --no-apiserver) apiserver=0 ;;
      -h | --help) usage; exit 0 ;;
      *) usage >&2; exit 2 ;;
    esac
    shift
  done

  local comps=(helm)
  ((apiserver)) && comps+=(kube)
  scripts/build-stack.sh "${comps[@]}" >"$TMP/build.out" 2>&1 ||
    { cat "$TMP/build.out" >&2; die "scripts/build-stack.sh ${comps[*]} failed"; }
  local cache helm
  cache=$(stack_cache_root)
  helm=$cache/helm-$HELM_VERSION/helm
  # Helm keeps caches and config under $HOME by default; keep this run's to itself.
  export HELM_CACHE_HOME=$TMP/helm/cache HELM_CONFIG_HOME=$TMP/helm/config HELM_DATA_HOME=$TMP/helm/data

  check "chart files/ equal their sources" check_copies
  check "image tags and appVersion pinned as versions.env/Cargo.toml" check_pins
  check_shown "values.schema.json describes values.yaml's keys, and no others" \
    python3 scripts/check-helm.py schema --chart "$CHART"
  local kube=$cache/kube-$KUBERNETES_VERSION-etcd$ETCD_VERSION
  # Outputs captured first: `prog | grep -q` fails under pipefail when grep exits early.
  built_versions() {
    local out
    out=$("$helm" version --short)
    [[ $out == "v$HELM_VERSION"* ]] || { echo "built helm is $out, not $HELM_VERSION"; return 1; }
    ((!apiserver)) && return 0
    out=$("$kube/kube-apiserver" --version)
    [[ $out == "Kubernetes v$KUBERNETES_VERSION" ]] || { echo "built kube-apiserver is $out, not $KUBERNETES_VERSION"; return 1; }
    out=$("$kube/etcd" --version)
    grep -qx "etcd Version: $ETCD_VERSION" <<<"$out" || { echo "built etcd is not $ETCD_VERSION: $out"; return 1; }
  }
  check "built helm, kube-apiserver, etcd are the versions pinned" built_versions

  local render=${INFERMON_KEEP_RENDER:-$TMP/render}
  mkdir -p "$render"
  local examples=("$CHART"/examples/*.yaml) ex name
  ((${#examples[@]})) || die "no values examples in $CHART/examples/"
  for ex in "${examples[@]}"; do
    name=$(basename "$ex" .yaml)
    check "helm lint --strict ($name)" "$helm" lint --strict "$CHART" -f "$ex" --kube-version "$KUBERNETES_VERSION"
    # The Kubernetes version Helm renders for is the apiserver's below.
    check "helm template ($name)" bash -c '"$1" template infermon "$2" --namespace infermon -f "$3" \
      --kube-version "$4" >"$5"' _ "$helm" "$CHART" "$ex" "$KUBERNETES_VERSION" "$render/$name.yaml"
  done
  source scripts/stack-env.sh >/dev/null 2>&1 || true
  [[ -n ${OTELCOL:-} && -n ${JAEGER:-} && -n ${AMTOOL:-} ]] ||
    die "the collector, Jaeger and amtool are not built: run scripts/build-stack.sh"
  check_shown "rendered objects: hardening, env, copies, rules, dashboards, configs validated" \
    python3 scripts/check-helm.py render --chart "$CHART" --otelcol "$OTELCOL" --jaeger "$JAEGER" \
    --amtool "$AMTOOL" --work "$TMP/programs" "$render"/*.yaml
  # The one required value without a default: the defaults alone must fail, saying which.
  check "defaults alone fail naming metricsStore.address" bash -c \
    '! "$1" template infermon "$2" >"$3" 2>&1 && grep -q "metricsStore.address" "$3"' \
    _ "$helm" "$CHART" "$TMP/defaults.out"

  # The schema must refuse what it exists to refuse, through Helm itself: each values file is
  # examples/minimal.yaml (which passes above) plus one mistake, and Helm must name it.
  local bad expect n=0
  while IFS='|' read -r bad expect; do
    n=$((n + 1))
    { cat "$CHART/examples/minimal.yaml"; echo "$bad"; } >"$TMP/bad-$n.yaml"
    check_shown "schema refuses \`$bad\` (helm lint, helm template)" \
      schema_refuses "$helm" "$TMP/bad-$n.yaml" "$expect"
  done <<'MISTAKES'
gatway: {replicas: 3}|at '': additional properties 'gatway' not allowed
collector: {agent: {resoures: {limits: {memory: 1Gi}}}}|at '/collector/agent': additional properties 'resoures' not allowed
collector: {gateway: {replicas: two}}|at '/collector/gateway/replicas': got string, want integer
jaeger: {image: {tag: latest}}|at '/jaeger/image/tag': 'latest' does not match pattern
MISTAKES

  if ((apiserver)); then
    local crds
    crds=$(GOTOOLCHAIN=$STACK_GOTOOLCHAIN GOWORK=off go mod download -json \
      "github.com/prometheus-operator/prometheus-operator@v$PROMETHEUS_OPERATOR_VERSION" |
      sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')/example/prometheus-operator-crd-full
    [[ -d $crds ]] || die "no CRDs at $crds (prometheus-operator v$PROMETHEUS_OPERATOR_VERSION)"
    check_shown "kube-apiserver $KUBERNETES_VERSION server-side dry-run of every rendered object" \
      python3 scripts/check-helm.py apiserver --kube-apiserver "$kube/kube-apiserver" \
      --etcd "$kube/etcd" --crds "$crds" --work "$TMP/apiserver" "$render"/*.yaml
  else
    echo "skipped (--no-apiserver): server-side dry-run against kube-apiserver"
  fi

  if ((${#FAILED[@]})); then
    printf '\n%d Helm chart check(s) failed\n' "${#FAILED[@]}"
    exit 1
  fi
  printf '\nHelm chart checks passed\n'
}

main "$@"
