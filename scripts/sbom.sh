#!/usr/bin/env bash
# CycloneDX SBOM (JSON, spec 1.5) of the `infermon` binary (crate infermon-cli), from the
# locked dependency graph, with cargo-cyclonedx built once per pinned version (tools-lib.sh).
#
#   scripts/sbom.sh                     writes target/sbom/infermon.cdx.json
#   scripts/sbom.sh --out PATH          writes PATH
#   scripts/sbom.sh --target TRIPLE     for another target (default: the host's)
#
# The output is validated before the script succeeds: parseable JSON, bomFormat CycloneDX,
# specVersion 1.5, the infermon application as metadata.component, a name, version and purl on
# every component, and every crate `cargo tree` says is built into the binary present in it.
# One summary line is printed. target/ is git-ignored: SBOMs are build output, not sources.
#
# Env: INFERMON_TOOLS_CACHE  where cargo-cyclonedx is built (default ~/.cache/infermon-tools)
#      SOURCE_DATE_EPOCH     timestamp to record (default: the HEAD commit's time)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source scripts/stack-lib.sh
source scripts/tools-lib.sh

# The header comment is the help text.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

out=$ROOT/target/sbom/infermon.cdx.json
target=$(rustc -vV | sed -n 's/^host: //p')
while (($#)); do
  case $1 in
    --out)
      out=${2:?--out needs a path}
      shift
      ;;
    --target)
      target=${2:?--target needs a target triple}
      shift
      ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done

# cargo-cyclonedx reads `cargo metadata`, which would quietly rewrite a stale Cargo.lock:
# insist on the lock as committed, so the SBOM describes what `--locked` builds.
cargo metadata --locked --format-version 1 >/dev/null ||
  die "Cargo.lock is not up to date with the manifests; the SBOM must describe the locked graph"

CDX=$(cargo_tool cargo-cyclonedx "$CARGO_CYCLONEDX_VERSION" cargo-cyclonedx) ||
  die "cannot build cargo-cyclonedx $CARGO_CYCLONEDX_VERSION"

# cargo-cyclonedx writes <binary>_bin.cdx.json next to every workspace member's Cargo.toml;
# only infermon's is wanted. Remove the ones this run creates, whatever happens.
existing=$(find crates tests -maxdepth 2 -name '*.cdx.json' 2>/dev/null | sort)
cleanup() {
  local f
  while IFS= read -r f; do
    [[ -n "$f" ]] && ! grep -qxF "$f" <<<"$existing" && rm -f "$f"
  done < <(find crates tests -maxdepth 2 -name '*.cdx.json' 2>/dev/null)
}
trap cleanup EXIT

if [[ -z "${SOURCE_DATE_EPOCH:-}" ]]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH
"$CDX" cyclonedx --manifest-path crates/infermon-cli/Cargo.toml --format json \
  --spec-version 1.5 --describe binaries --target "$target" --quiet
produced=crates/infermon-cli/infermon_bin.cdx.json
[[ -s "$produced" ]] || die "cargo-cyclonedx wrote no $produced"
mkdir -p "$(dirname "$out")"
mv "$produced" "$out"

# What the binary links, per cargo: normal and build dependencies for the target.
tree=$(mktemp)
trap 'cleanup; rm -f "$tree"' EXIT
cargo tree --locked -p infermon-cli -e normal,build --target "$target" --prefix none |
  sed -E 's/ \(.*//' | awk 'NF >= 2 {print $1, $2}' | sort -u >"$tree"

python3 - "$out" "$tree" <<'EOF'
import json, sys
path, tree = sys.argv[1], sys.argv[2]
try:
    bom = json.load(open(path))
except (OSError, json.JSONDecodeError) as e:
    sys.exit(f"sbom: {path} is not JSON: {e}")
problems = []
if bom.get("bomFormat") != "CycloneDX":
    problems.append(f"bomFormat {bom.get('bomFormat')!r}, want 'CycloneDX'")
if bom.get("specVersion") != "1.5":
    problems.append(f"specVersion {bom.get('specVersion')!r}, want '1.5'")
app = (bom.get("metadata") or {}).get("component") or {}
if app.get("name") != "infermon" or app.get("type") != "application":
    problems.append(f"metadata.component is {app.get('type')} {app.get('name')!r}, want application 'infermon'")
comps = bom.get("components") or []
if not comps:
    problems.append("no components")
for c in comps:
    if not (c.get("name") and c.get("version") and c.get("purl")):
        problems.append(f"component without name/version/purl: {c.get('bom-ref')}")
have = {(c.get("name"), "v" + str(c.get("version"))) for c in comps}
want = {tuple(l.split()) for l in open(tree) if l.strip()}
want.discard(("infermon-cli", "v" + str(app.get("version"))))
missing = sorted(want - have)
if missing:
    problems.append(f"{len(missing)} crates built into the binary are missing, e.g. {missing[:5]}")
if problems:
    for p in problems:
        print(f"sbom: {p}", file=sys.stderr)
    sys.exit(1)
licensed = sum(1 for c in comps if c.get("licenses"))
print(f"sbom: {path}: CycloneDX {bom['specVersion']}, {app['name']} {app.get('version')}, "
      f"{len(comps)} components ({licensed} with licenses), covers all {len(want)} crates cargo tree "
      f"builds into the binary")
EOF
