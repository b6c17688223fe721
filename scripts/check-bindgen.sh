#!/usr/bin/env bash
# Checks that src/cuda/params_sys.rs (committed) matches a fresh bindgen run on cuda/params.h
# (docs/design.md principle 7). Needs libclang (Debian/Ubuntu: apt-get install -y libclang-dev);
# installs nothing itself.
#
#   scripts/check-bindgen.sh           compare; exit 1 with a diff when they differ
#   scripts/check-bindgen.sh --update  copy the fresh bindings over the committed file
set -euo pipefail
cd "$(dirname "$0")/.."

committed=src/cuda/params_sys.rs
# A separate target directory: the bindgen build must not disturb the normal one.
target_dir=${CARGO_TARGET_DIR:-target}/bindgen-check
export CARGO_TARGET_DIR="$target_dir"

# The build script writes $OUT_DIR/params_sys.rs and prints its path as a cargo warning.
log=$(cargo build --features bindgen --message-format=short 2>&1) || {
    echo "$log" >&2
    echo "check-bindgen: 'cargo build --features bindgen' failed (is libclang installed?)" >&2
    exit 2
}
fresh=$(printf '%s\n' "$log" | sed -n 's/.*regenerated cuda\/params.h bindings: //p' | tail -n 1)
if [[ -z "$fresh" || ! -f "$fresh" ]]; then
    # Up-to-date build: the script did not rerun; find the newest generated file instead.
    fresh=$(ls -t "$target_dir"/debug/build/qconv-*/out/params_sys.rs 2>/dev/null | head -n 1 || true)
fi
if [[ -z "$fresh" || ! -f "$fresh" ]]; then
    echo "check-bindgen: could not find the generated params_sys.rs under $target_dir" >&2
    exit 2
fi

if [[ "${1:-}" == "--update" ]]; then
    cp "$fresh" "$committed"
    echo "check-bindgen: updated $committed from $fresh"
    exit 0
fi
if diff -u "$committed" "$fresh"; then
    echo "check-bindgen: $committed matches a fresh bindgen run on cuda/params.h"
else
    echo "check-bindgen: $committed is stale; run scripts/check-bindgen.sh --update and commit it" >&2
    exit 1
fi
