#!/usr/bin/env bash
# Bounded fuzzing of every cargo-fuzz target, for CI and by hand.
#
#   fuzz/run.sh                  # each target for FUZZ_SECONDS (default 60)
#   fuzz/run.sh log_recovery     # only the named targets
#   fuzz/run.sh --replay         # run the stored corpus once (regression check, seconds)
#
# The corpus in fuzz/corpus/<target>/ is read-only seed input; new inputs go to a temp dir, so
# a CI run leaves the tree clean. A crash stops the script with a non-zero status and the input
# under fuzz/artifacts/<target>/; copy it into fuzz/corpus/<target>/ once fixed, so every later
# run replays it first (that is the regression test).
#
# Only a stable toolchain exists on our machines: cargo-fuzz passes -Z flags (the address
# sanitizer), which stable rustc accepts with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")"

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

replay=0
targets=()
for arg in "$@"; do
    case "$arg" in
        --replay) replay=1 ;;
        *) targets+=("$arg") ;;
    esac
done
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

max_len() {
    case "$1" in
        request_frame) echo 65536 ;;
        *) echo 8192 ;;
    esac
}

cargo fuzz build -O
status=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    scratch="$(mktemp -d)"
    if [ "$replay" -eq 1 ]; then
        args=(-runs=0)
        echo "== $target: replaying $(ls "corpus/$target" | wc -l) corpus inputs"
    else
        args=(-max_total_time="$FUZZ_SECONDS")
        echo "== $target: fuzzing for ${FUZZ_SECONDS}s"
    fi
    if ! cargo fuzz run -O "$target" "$scratch" "corpus/$target" -- \
        "${args[@]}" -max_len="$(max_len "$target")" -timeout=20 -rss_limit_mb=4096 \
        -print_final_stats=1 2>&1 | grep -v -E '^#[0-9]+|NEW_FUNC|^\s*$'; then
        echo "!! $target: crash or failure; input saved under fuzz/artifacts/$target/" >&2
        status=1
    fi
    rm -rf "$scratch"
done
exit "$status"
