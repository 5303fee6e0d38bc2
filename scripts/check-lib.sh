# Shared by the config-check scripts (sourced, not run): a check runner that reports each
# check on one line and collects the failures, and a clean environment to check in.

# Unset every INFERMON_* variable but the cache root: configs are checked with the defaults
# their ${env:...} references fall back to, whatever the calling shell exported.
clear_infermon_env() {
  local name
  while IFS='=' read -r name _; do
    [[ $name == INFERMON_* && $name != INFERMON_STACK_CACHE ]] && unset "$name"
  done < <(env)
}

# check NAME CMD...: run CMD, print "ok" or "FAIL" and CMD's output only on failure. Failed
# names collect in FAILED; CMD may use the scratch dir $TMP (removed on exit).
FAILED=()
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
check() {
  local name=$1
  shift
  if "$@" >"$TMP/out" 2>&1; then
    printf 'ok    %s\n' "$name"
  else
    printf 'FAIL  %s\n' "$name"
    sed 's/^/      /' "$TMP/out"
    FAILED+=("$name")
  fi
}
