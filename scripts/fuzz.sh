#!/usr/bin/env bash
# Runs qconv's cargo-fuzz targets (fuzz/) for a bounded time each and prints the figures
# (executions, exec/s, coverage, crashes). Not part of CI.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 60 s, all targets)
#
# Needs `cargo install cargo-fuzz`. On a stable toolchain it sets RUSTC_BOOTSTRAP=1 and builds
# without a sanitizer (`-s none`; set QCONV_FUZZ_SANITIZER=address on nightly for ASan).
# Polite by default: one core (CARGO_BUILD_JOBS=1, -jobs=1 -workers=1) at nice 19.
# Crash inputs land in fuzz/artifacts/<target>/; reproduce one with
#   (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none <target> artifacts/<target>/crash-...)
set -euo pipefail

secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(model_file module_config)

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
rustc --version | grep -q nightly || export RUSTC_BOOTSTRAP=1
san=${QCONV_FUZZ_SANITIZER:-none}
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2; exit 2; }

for t in "${targets[@]}"; do nice -n 19 cargo fuzz build -s "$san" "$t"; done
if ! ls corpus/model_file/seed-* >/dev/null 2>&1; then
    # A plain (uninstrumented) build: gen_seeds has no fuzz_target, so it cannot link libFuzzer's hooks.
    nice -n 19 cargo run --quiet --bin gen_seeds
fi

summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t" logs
    before=$(ls "artifacts/$t" | wc -l)
    log="logs/$t.log"
    echo "== $t: ${secs}s"
    start=$(date +%s)
    # -jobs=1 makes libFuzzer run one worker process writing fuzz-0.log in the current folder.
    rm -f fuzz-0.log
    nice -n 19 cargo fuzz run -s "$san" "$t" "corpus/$t" -- \
        -max_total_time="$secs" -jobs=1 -workers=1 -max_len=16384 -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"$log.driver" 2>&1 || true
    end=$(date +%s)
    [ -f fuzz-0.log ] && mv fuzz-0.log "$log" || mv "$log.driver" "$log"
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
    eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
    if [ -z "$execs" ]; then # the worker died on a crash before printing its final stats
        execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#' || true)
    fi
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1 || true)
    corpus=$(ls "corpus/$t" | wc -l)
    after=$(ls "artifacts/$t" | wc -l)
    crashes=$((after - before))
    line="$t: ${execs:-?} executions in $((end - start))s (${eps:-?} exec/s), ${cov:-cov ?}, corpus $corpus, new crash/oom/timeout artifacts: $crashes"
    summary+=("$line")
    grep -m1 -A3 "panicked at" "$log" || true
    echo "$line"
done
echo
echo "== summary"
printf '%s\n' "${summary[@]}"
