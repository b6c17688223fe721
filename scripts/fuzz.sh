#!/usr/bin/env bash
# Runs qconv's cargo-fuzz targets (fuzz/) for a bounded time each and prints the figures
# (executions, exec/s, coverage, crashes). Not part of CI: CI replays the minimised corpus
# (fuzz/corpus/<target>/) and the crash inputs (fuzz/regressions/<target>/) through the same code
# in tests/fuzz_corpus.rs.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 60 s, all targets)
#   scripts/fuzz.sh cmin [TARGET...]                      merge fuzz/work/<target>/ into
#                                                         fuzz/corpus/<target>/ and minimise it
#
# New inputs land in fuzz/work/<target>/ (ignored by git); the committed corpus and the
# regressions are read-only inputs of every run. After a run that found new coverage, run
# `scripts/fuzz.sh cmin` and commit fuzz/corpus/.
#
# Needs `cargo install cargo-fuzz`. On a stable toolchain it sets RUSTC_BOOTSTRAP=1 and builds
# without a sanitizer (`-s none`; set QCONV_FUZZ_SANITIZER=address on nightly for ASan).
# Polite by default: one core (CARGO_BUILD_JOBS=1, -jobs=1 -workers=1) at nice 19.
# Crash inputs land in fuzz/artifacts/<target>/; reproduce one with
#   (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none <target> artifacts/<target>/crash-...)
set -euo pipefail

mode=run
if [ "${1:-}" = cmin ]; then
    mode=cmin
    shift
    secs=0
else
    secs=${1:-60}
    shift || true
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(model_file module_config)

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
rustc --version | grep -q nightly || export RUSTC_BOOTSTRAP=1
san=${QCONV_FUZZ_SANITIZER:-none}
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2; exit 2; }

if [ "$mode" = cmin ]; then
    for t in "${targets[@]}"; do
        mkdir -p "corpus/$t" "work/$t"
        before=$(ls "corpus/$t" | wc -l)
        cp -n "work/$t"/* "corpus/$t"/ 2>/dev/null || true
        nice -n 19 cargo fuzz cmin -s "$san" "$t" "corpus/$t" -- -max_len=16384 -rss_limit_mb=2048 -timeout=10 \
            >"/tmp/qconv-cmin-$t.log" 2>&1
        rm -rf "work/$t"
        echo "$t: corpus $before -> $(ls "corpus/$t" | wc -l) files (log: /tmp/qconv-cmin-$t.log)"
    done
    exit 0
fi

for t in "${targets[@]}"; do nice -n 19 cargo fuzz build -s "$san" "$t"; done
if [ -z "$(ls corpus/model_file 2>/dev/null)" ]; then
    # A plain (uninstrumented) build: gen_seeds has no fuzz_target, so it cannot link libFuzzer's hooks.
    nice -n 19 cargo run --quiet --bin gen_seeds
fi

summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "work/$t" "regressions/$t" "artifacts/$t" logs
    before=$(ls "artifacts/$t" | wc -l)
    log="logs/$t.log"
    echo "== $t: ${secs}s"
    start=$(date +%s)
    # -jobs=1 makes libFuzzer run one worker process writing fuzz-0.log in the current folder.
    rm -f fuzz-0.log
    nice -n 19 cargo fuzz run -s "$san" "$t" "work/$t" "corpus/$t" "regressions/$t" -- \
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
    corpus="$(ls "corpus/$t" | wc -l)+$(ls "work/$t" | wc -l) new"
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
