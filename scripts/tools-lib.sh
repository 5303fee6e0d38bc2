# Cargo-installed tools at pinned versions, cached between runs (sourced, not run).
#
#   source scripts/tools-lib.sh
#   deny=$(cargo_tool cargo-deny "$CARGO_DENY_VERSION" cargo-deny) || exit 1
#
# Each tool is built once per version into
#   ${INFERMON_TOOLS_CACHE:-$HOME/.cache/infermon-tools}/<crate>-<version>/bin/
# with `cargo install --locked` (the tool's own Cargo.lock, so a rebuild gets the same
# dependencies). A fresh machine pays the build once (minutes: docs/reliability.md has the
# measured times); a warm one finds the binary.

# The pinned versions: bump here, and the next run builds the new one beside the old.
CARGO_DENY_VERSION=0.20.2
CARGO_CYCLONEDX_VERSION=0.5.9

tools_cache_root() {
  printf '%s\n' "${INFERMON_TOOLS_CACHE:-${HOME:-/tmp}/.cache/infermon-tools}"
}

# cargo_tool CRATE VERSION BINARY: print the path of BINARY from CRATE@VERSION, building it
# first if the cache lacks it. Build output goes to stderr.
cargo_tool() {
  local crate=$1 version=$2 bin=$3
  local dest
  dest="$(tools_cache_root)/$crate-$version"
  if [[ -x "$dest/bin/$bin" ]]; then
    printf '%s\n' "$dest/bin/$bin"
    return 0
  fi
  mkdir -p "$(dirname "$dest")"
  local tmp start=$SECONDS
  tmp=$(mktemp -d "$dest.tmp-XXXXXX")
  echo "[tools] building $crate $version (once per version) into $dest ..." >&2
  # Not the workspace's CARGO_TARGET_DIR: the tool's build products are not worth keeping once
  # the binary is installed, and must not mix with the project's.
  if ! env -u CARGO_TARGET_DIR cargo install "$crate" --locked --version "$version" \
    --root "$tmp" --quiet >&2; then
    rm -rf "$tmp"
    echo "[tools] cargo install $crate@$version failed" >&2
    return 1
  fi
  # Published whole or not at all: a half-built tool never looks cached.
  rm -rf "$dest"
  mv "$tmp" "$dest"
  echo "[tools] built $crate $version in $((SECONDS - start))s" >&2
  printf '%s\n' "$dest/bin/$bin"
}
