# Helpers shared by the stack scripts (sourced, not run). Expects versions.env to be sourced.

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

stack_cache_root() {
  printf '%s\n' "${INFERMON_STACK_CACHE:-${HOME:-/tmp}/.cache/infermon-stack}"
}

# The collector's cache key includes the manifest's hash, so adding a component to
# otel-collector/builder.yaml rebuilds it even though the release version is unchanged.
otelcol_manifest_hash() {
  sha256sum "$1/otel-collector/builder.yaml" | cut -c1-12
}
