# Source this file to export the paths of the stack binaries that scripts/build-stack.sh built:
#
#   source scripts/stack-env.sh
#   "$OTELCOL" --version; "$PROMETHEUS" --version; "$JAEGER" --help
#
# Exports OTELCOL PROMETHEUS PROMTOOL ALERTMANAGER AMTOOL JAEGER, VICTORIAMETRICS VMALERT
# VMALERT_TOOL, HELM KUBE_APISERVER ETCD (empty where a component has
# not been built yet) and INFERMON_STACK_CACHE. Returns non-zero, with a hint, if any is
# missing; it never exits the calling shell.

_infermon_stack_env() {
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  # Sourced in a subshell so that versions.env's variables do not leak into the caller.
  local vars
  vars=$(
    set -e
    source "$root/scripts/versions.env"
    source "$root/scripts/stack-lib.sh"
    cache=$(stack_cache_root)
    col="$cache/otelcol-$OTELCOL_VERSION-$(otelcol_manifest_hash "$root")"
    prom="$cache/prometheus-$PROMETHEUS_VERSION"
    am="$cache/alertmanager-$ALERTMANAGER_VERSION"
    jg="$cache/jaeger-$JAEGER_VERSION"
    vm="$cache/victoriametrics-$VICTORIAMETRICS_GOMOD_VERSION"
    helm="$cache/helm-$HELM_VERSION"
    kube="$cache/kube-$KUBERNETES_VERSION-etcd$ETCD_VERSION"
    for kv in "OTELCOL=$col/otelcol" "PROMETHEUS=$prom/prometheus" "PROMTOOL=$prom/promtool" \
      "ALERTMANAGER=$am/alertmanager" "AMTOOL=$am/amtool" "JAEGER=$jg/jaeger" \
      "VICTORIAMETRICS=$vm/victoria-metrics" "VMALERT=$vm/vmalert" "VMALERT_TOOL=$vm/vmalert-tool" \
      "HELM=$helm/helm" "KUBE_APISERVER=$kube/kube-apiserver" "ETCD=$kube/etcd"; do
      name=${kv%%=*} path=${kv#*=}
      if [[ -x "$path" && -f "$(dirname "$path")/.complete" ]]; then
        printf '%s=%q\n' "$name" "$path"
      else
        printf '%s=\n' "$name"
        printf 'missing+=(%s)\n' "$name"
      fi
    done
    printf 'INFERMON_STACK_CACHE=%q\n' "$cache"
  ) || return 1
  local missing=()
  eval "$vars"
  export OTELCOL PROMETHEUS PROMTOOL ALERTMANAGER AMTOOL JAEGER VICTORIAMETRICS VMALERT VMALERT_TOOL
  export HELM KUBE_APISERVER ETCD
  export INFERMON_STACK_CACHE
  if ((${#missing[@]})); then
    echo "stack-env: not built yet: ${missing[*]} (run scripts/build-stack.sh)" >&2
    return 1
  fi
  return 0
}

_infermon_stack_env
