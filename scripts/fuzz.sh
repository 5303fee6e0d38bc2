#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ (cargo-fuzz, libFuzzer) for a set time each and reports the
# executions and whether anything crashed. Not part of CI: run it by hand or on a schedule.
# docs/reliability.md lists the targets and what each one calls.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/fuzz.sh [--seconds N] [--target NAME]... [--update-corpus] [--list]

Builds every fuzz target in fuzz/ with nightly Rust and cargo-fuzz, then runs each for N
seconds, starting from its committed corpus (fuzz/corpus/NAME) and crash reproducers
(fuzz/regressions/NAME), which it only reads. Prints per-target executions and whether it
crashed; exits 1 if any target crashed (panic, timeout, out of memory), 2 on a usage error.

  --seconds N      run time per target (default: $FUZZ_SECONDS, else 60)
  --target NAME    run only this target (repeatable); default: all of them
  --update-corpus  afterwards, merge what the run found into fuzz/corpus/NAME, minimised
                   (cargo fuzz cmin), to commit
  --list           print the targets and exit
  -h, --help       this text

Environment:
  FUZZ_SECONDS     default run time per target
  FUZZ_SANITIZER   cargo-fuzz sanitizer (default: none; the code under test is safe Rust, and
                   debug assertions and overflow checks stay on); e.g. address
  FUZZ_TIMEOUT     seconds one input may take before it counts as a hang (default: 10)
  FUZZ_RSS_MB      memory limit in MiB before an input counts as out of memory (default: 2048)

A crash leaves its input in fuzz/artifacts/NAME/ (gitignored). Reproduce it with
  cargo +nightly fuzz run --fuzz-dir fuzz NAME fuzz/artifacts/NAME/crash-…
then fix it, add a unit test with those bytes to the owning crate, and copy the file into
fuzz/regressions/NAME/ so every later run replays it.

Requires rustup's nightly toolchain (rustup toolchain install nightly); installs cargo-fuzz
with `cargo install cargo-fuzz --locked` when it is missing.
EOF
}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

seconds=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-none}
timeout_s=${FUZZ_TIMEOUT:-10}
rss_mb=${FUZZ_RSS_MB:-2048}
update_corpus=false
list_only=false
targets=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds)
            [[ $# -ge 2 ]] || { echo "fuzz.sh: --seconds needs a value" >&2; exit 2; }
            seconds=$2
            shift 2
            ;;
        --seconds=*) seconds=${1#--seconds=}; shift ;;
        --target)
            [[ $# -ge 2 ]] || { echo "fuzz.sh: --target needs a name" >&2; exit 2; }
            targets+=("$2")
            shift 2
            ;;
        --target=*) targets+=("${1#--target=}"); shift ;;
        --update-corpus) update_corpus=true; shift ;;
        --list) list_only=true; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "fuzz.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz.sh: --seconds must be a positive whole number, got '$seconds'" >&2
    exit 2
fi

# The targets are the [[bin]] entries of fuzz/Cargo.toml.
mapfile -t all_targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -vx 'infermon-fuzz')
if $list_only; then
    printf '%s\n' "${all_targets[@]}"
    exit 0
fi
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=("${all_targets[@]}")
fi
for t in "${targets[@]}"; do
    if ! printf '%s\n' "${all_targets[@]}" | grep -qx -- "$t"; then
        echo "fuzz.sh: no fuzz target '$t'; targets: ${all_targets[*]}" >&2
        exit 2
    fi
done

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: needs the nightly toolchain: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# Its own target dir, whatever CARGO_TARGET_DIR says: nightly, libFuzzer-instrumented builds
# share nothing with the stable ones.
fuzz_args=(--fuzz-dir fuzz --target-dir fuzz/target --sanitizer "$sanitizer")

echo "==> building ${#targets[@]} fuzz target(s) (nightly, sanitizer: $sanitizer)"
for t in "${targets[@]}"; do
    cargo +nightly fuzz build "${fuzz_args[@]}" "$t"
done

# A libFuzzer dictionary of the format's tokens, where one helps the mutator past them.
dictionary() {
    case "$1" in
        sim_request | gateway_request) echo fuzz/dicts/openai_request.dict ;;
        sse_decoder) echo fuzz/dicts/sse.dict ;;
        trace_context) echo fuzz/dicts/trace_context.dict ;;
        sim_config | sim_profile | sim_scenario | gateway_config | cli_config) echo fuzz/dicts/toml.dict ;;
    esac
}

logs=fuzz/target/logs
mkdir -p "$logs"
failed=()
summary=()
for t in "${targets[@]}"; do
    # New inputs go to a scratch corpus (the first directory), so the committed corpus and
    # reproducers are only read; --update-corpus merges the scratch one in afterwards.
    scratch=fuzz/target/corpus/$t
    mkdir -p "$scratch" "fuzz/corpus/$t" "fuzz/regressions/$t" "fuzz/artifacts/$t"
    log=$logs/$t.log
    echo "==> $t: ${seconds}s"
    extra=()
    dict=$(dictionary "$t")
    [[ -n "$dict" ]] && extra+=(-dict="$dict")
    status=0
    cargo +nightly fuzz run "${fuzz_args[@]}" "$t" \
        "$scratch" "fuzz/corpus/$t" "fuzz/regressions/$t" -- \
        -max_total_time="$seconds" -timeout="$timeout_s" -rss_limit_mb="$rss_mb" \
        -print_final_stats=1 "${extra[@]}" >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    if [[ $status -eq 0 ]]; then
        verdict="ok"
    else
        failed+=("$t")
        verdict="CRASHED (exit $status)"
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        [[ -n "$artifact" ]] && verdict+=": $artifact"
        echo "---- $t: last lines of $log"
        tail -n 40 "$log"
    fi
    line=$(printf '%-18s %12s execs  %6ss  %s' "$t" "${execs:-?}" "${took:-?}" "$verdict")
    summary+=("$line")
    echo "$line"
    if $update_corpus && [[ $status -eq 0 ]]; then
        # cmin keeps the smallest set of inputs that covers what all of them cover; edges only
        # (no hit counts), which keeps the committed corpus small.
        cp -n "$scratch"/* "fuzz/corpus/$t"/ 2>/dev/null || true
        cargo +nightly fuzz cmin "${fuzz_args[@]}" "$t" "fuzz/corpus/$t" -- -use_counters=0 \
            >"$logs/$t.cmin.log" 2>&1
        echo "    corpus: $(find "fuzz/corpus/$t" -type f | wc -l) inputs, $(du -sh "fuzz/corpus/$t" | cut -f1)"
    fi
done

echo
echo "==> summary (${seconds}s per target; logs in $logs/)"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz.sh: crashed: ${failed[*]}" >&2
    exit 1
fi
