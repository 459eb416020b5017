#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   (default 25 seconds per target, all targets)
#
# SECONDS is per target: with the 9 targets, 25 s keeps the whole fuzzing step
# (the build excluded) under 4 minutes. Naming targets runs only those.
#
# Each target first replays its known crashers in fuzz/regressions/<target>/,
# then fuzzes for SECONDS on a temporary copy of fuzz/corpus/<target>/ (so a
# run never dirties the repository). Exits non-zero if any input crashes, and
# prints where the crashing input was saved (fuzz/artifacts/<target>/,
# ignored by git). Reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <artifact>   (from fuzz/)
#
# Environment: ADIT_FUZZ_SANITIZER=address|none (default address; falls back
# to none when an AddressSanitizer build is impossible on this machine).
set -euo pipefail

secs="${1:-25}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
    echo "usage: $0 [SECONDS] [TARGET...]   (a positive number of seconds per target)" >&2
    exit 2
fi
shift || true

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$root/fuzz"
all_targets=(frame_decode mux_frames jwt_verify csr_parse join_token control_msg agent_config api_bodies toolbox)
targets=("${all_targets[@]}")
if [ "$#" -gt 0 ]; then
    targets=("$@")
    for target in "${targets[@]}"; do
        if [ ! -f "$fuzz_dir/fuzz_targets/$target.rs" ]; then
            echo "unknown fuzz target $target (known: ${all_targets[*]})" >&2
            exit 2
        fi
    done
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# Only the stable toolchain is installed; cargo-fuzz passes nightly-only
# flags (-Zsanitizer, -Cpasses=sancov-module), which stable rustc accepts
# under RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

work="$(mktemp -d "${TMPDIR:-/tmp}/adit-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

cd "$fuzz_dir"

sanitizer="${ADIT_FUZZ_SANITIZER:-address}"
echo "==> building fuzz targets (sanitizer: $sanitizer)"
if ! cargo fuzz build --sanitizer "$sanitizer"; then
    if [ "$sanitizer" = none ]; then
        echo "error: building the fuzz targets failed" >&2
        exit 1
    fi
    echo "warning: the $sanitizer build failed; retrying without a sanitizer" >&2
    sanitizer=none
    cargo fuzz build --sanitizer none
fi

# Run the binaries just built rather than `cargo fuzz run`, which checks (and,
# while the tree is being edited, redoes) the build once per target.
host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$fuzz_dir/target/$host/release"
if [ "$sanitizer" = address ]; then
    export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"
fi

failed=()
summary=()
started=$SECONDS
for target in "${targets[@]}"; do
    artifacts="$fuzz_dir/artifacts/$target"
    mkdir -p "$artifacts"
    run=("$bin_dir/$target")

    regressions=("$fuzz_dir/regressions/$target"/*)
    if [ -e "${regressions[0]}" ]; then
        echo "==> $target: replaying ${#regressions[@]} known crasher(s)"
        if ! "${run[@]}" -timeout=10 "${regressions[@]}" \
            >"$work/$target.replay.log" 2>&1; then
            tail -n 40 "$work/$target.replay.log" >&2
            echo "FAIL $target: an input in fuzz/regressions/$target/ still crashes (log above)" >&2
            failed+=("$target (regression)")
        fi
    fi

    corpus="$work/corpus/$target"
    mkdir -p "$corpus"
    cp "$fuzz_dir/corpus/$target"/* "$corpus"/
    echo "==> $target: fuzzing for ${secs}s"
    log="$work/$target.log"
    status=0
    # libFuzzer stops itself after max_total_time; the outer timeout only
    # guards against a wedged process.
    timeout --kill-after=30 "$((secs + 120))" \
        "${run[@]}" \
        -max_total_time="$secs" -timeout=10 -max_len=4096 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 "$corpus" \
        >"$log" 2>&1 || status=$?
    execs="$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true)"
    stat_execs="$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)"
    cov="$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9a-zA-Z]+' "$log" | tail -n 1 || true)"
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log" >&2
        # The stack trace can push a panic's message out of the tail.
        grep -m 1 -A 3 'panicked at' "$log" >&2 || true
        artifact="$(grep -Eo 'Test unit written to [^ ]+' "$log" | tail -n 1 | sed 's/Test unit written to //' || true)"
        echo "FAIL $target (exit $status): crashing input saved at ${artifact:-$artifacts/}" >&2
        failed+=("$target")
        summary+=("$target: CRASH after ${stat_execs:-?} execs; artifact ${artifact:-$artifacts/}")
    else
        summary+=("$target: ok, ${stat_execs:-?} execs (${execs:-no summary}); $cov")
    fi
done

echo
echo "==> fuzz summary (${secs}s per target, ${#targets[@]} targets, $((SECONDS - started))s in all without the build, sanitizer $sanitizer)"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all fuzz targets passed"
