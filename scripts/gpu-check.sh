#!/usr/bin/env bash
# GPU check for qconv: one run on a machine with an NVIDIA GPU, the CUDA toolkit (for
# compute-sanitizer) and PyTorch, without network access and possibly without a Rust toolchain.
#
#   scripts/gpu-check.sh [--bin-dir DIR] [--torch-bench PATH/torch_gpu.py] [--report DIR]
#                        [--budget SECONDS] [--skip-torch] [--ncu]
#
# --bin-dir DIR   prebuilt binaries: the release `qconv` and the test executables `cuda-<hash>`
#                 and `nvrtc-<hash>` (from `cargo build --release && cargo test --release --no-run`,
#                 target/release/deps/). Without it, cargo builds them (needs a toolchain and the
#                 vendored dependencies already in ~/.cargo).
# --torch-bench   the PyTorch baseline script (default: scripts/bench/torch_gpu.py in this
#                 repository, else torch_gpu.py in --bin-dir).
# --report DIR    where everything is written (default: $OUT if set, else ./gpu-check-report).
# --budget S      overall time limit in seconds (default 540); every step gets at most what is left.
# --ncu           also profile one launch of the tensor-core kernel (g_3x3_128) and of the
#                 fake-quant kernel with Nsight Compute (speed of light, occupancy, warp stalls).
#
# Steps (each logged to <report>/<step>.log; <report>/summary.txt lists PASS/FAIL/SKIP per step
# with its duration): qconv info; qconv warmup for this GPU's sm_XY (and sm_90a on compute
# capability 9.0), cold (empty cache) then warm; every GPU test executable; compute-sanitizer
# memcheck and racecheck on the `sanitizer_smoke` test (and memcheck on `sm90a_sanitizer_smoke`
# on 9.0); on 9.0, the sm_90a tests again on their own (sm90a-tests: the opt-in Hopper kernel
# against the mma.sync tiles bit for bit and Precision::TensorCoreSm90a against the oracle);
# qconv bench --device cuda (on 9.0 with its "sm90a" rows) and torch_gpu.py on the same GPU (JSON
# lines), with a table of the sm90a rows against the default tensor-core rows and cuDNN. The
# script continues past failures and exits 1 if any step failed.
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR=""
TORCH_BENCH=""
REPORT="${OUT:-$PWD/gpu-check-report}"
BUDGET=540
SKIP_TORCH=0
NCU=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) BIN_DIR="$(cd "$2" && pwd)"; shift 2 ;;
    --torch-bench) TORCH_BENCH="$2"; shift 2 ;;
    --report) REPORT="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --skip-torch) SKIP_TORCH=1; shift ;;
    --ncu) NCU=1; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$REPORT"
REPORT="$(cd "$REPORT" && pwd)"
SUMMARY="$REPORT/summary.txt"
: > "$SUMMARY"
START=$(date +%s)
FAILED=0

note() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# step NAME TIMEOUT CMD...: runs CMD with stdout+stderr in NAME.log, bounded by min(TIMEOUT, budget left).
step() {
  local name="$1" limit="$2"; shift 2
  local remain; remain=$(left)
  if [ "$remain" -lt 5 ]; then note "SKIP  $name (time budget exhausted)"; FAILED=1; return 1; fi
  [ "$limit" -gt "$remain" ] && limit=$remain
  local t0; t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" > "$REPORT/$name.log" 2>&1
  local rc=$?
  local dt; dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if [ $rc -eq 0 ]; then
    note "PASS  $name (${dt}s)"
  else
    [ $rc -eq 124 ] && note "FAIL  $name (timed out after ${limit}s; see $name.log)" || note "FAIL  $name (exit $rc, ${dt}s; see $name.log)"
    FAILED=1
  fi
  return $rc
}

note "qconv GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), host $(hostname)"
note "repository: $ROOT ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$REPORT/nvidia-smi.txt" 2>&1 \
  && note "gpu: $(head -1 "$REPORT/nvidia-smi.txt")" || note "gpu: nvidia-smi failed"

# ---- libnvrtc -----------------------------------------------------------------------------------
find_nvrtc() {
  local d
  for d in ${CUDA_HOME:-} ${CUDA_PATH:-} /usr/local/cuda /usr/local/cuda-13* /usr/local/cuda-12*; do
    [ -n "$d" ] || continue
    for sub in lib64 lib targets/x86_64-linux/lib targets/sbsa-linux/lib; do
      ls "$d/$sub"/libnvrtc.so* >/dev/null 2>&1 && { echo "$d/$sub"; return 0; }
    done
  done
  # PyTorch's bundled NVRTC (pip wheels nvidia-cuda-nvrtc / nvidia/cu13).
  local sp
  for sp in $(python3 -c 'import site,sys; print(" ".join(site.getsitepackages()+[site.getusersitepackages()]))' 2>/dev/null); do
    for d in "$sp"/nvidia/cu13/lib "$sp"/nvidia/cuda_nvrtc/lib "$sp"/nvidia/*/lib; do
      ls "$d"/libnvrtc.so* >/dev/null 2>&1 && { echo "$d"; return 0; }
    done
  done
  return 1
}
if NVRTC_DIR=$(find_nvrtc); then
  export LD_LIBRARY_PATH="$NVRTC_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  note "libnvrtc: $NVRTC_DIR ($(ls "$NVRTC_DIR"/libnvrtc.so* | xargs -n1 basename | tr '\n' ' '))"
else
  note "libnvrtc: not found in the CUDA toolkit or PyTorch's wheels (relying on the default loader path)"
fi
# A private kernel cache, so that the first warmup really compiles.
export XDG_CACHE_HOME="$REPORT/xdg-cache"
rm -rf "$XDG_CACHE_HOME"

# ---- binaries -----------------------------------------------------------------------------------
if [ -z "$BIN_DIR" ]; then
  if command -v cargo >/dev/null 2>&1; then
    step build 300 bash -c "cd '$ROOT' && cargo build --release --offline && cargo test --release --offline --no-run"
    BIN_DIR="$REPORT/bin"
    mkdir -p "$BIN_DIR"
    cp "$ROOT/target/release/qconv" "$BIN_DIR/" 2>/dev/null
    for t in cuda nvrtc; do
      f=$(ls -t "$ROOT"/target/release/deps/$t-* 2>/dev/null | grep -v '\.d$' | head -1)
      [ -n "$f" ] && cp "$f" "$BIN_DIR/"
    done
  else
    note "FAIL  binaries: no --bin-dir given and no cargo on PATH"
    exit 1
  fi
fi
QCONV="$BIN_DIR/qconv"
[ -x "$QCONV" ] || { note "FAIL  binaries: $QCONV missing"; exit 1; }
CUDA_TEST=$(ls "$BIN_DIR"/cuda-* 2>/dev/null | grep -v '\.d$' | head -1)
NVRTC_TEST=$(ls "$BIN_DIR"/nvrtc-* 2>/dev/null | grep -v '\.d$' | head -1)

# Test executables read tests/fixtures relative to the working directory.
cd "$ROOT"

step info 30 "$QCONV" info
cat "$REPORT/info.log" >> "$SUMMARY"
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
ARCH_ARG=()
[ -n "$ARCH" ] && ARCH_ARG=(--arch "sm_$ARCH")
# Hopper: the opt-in wgmma/TMA program is compiled for sm_90a (its own target and cache entry).
[ "$ARCH" = "90" ] && ARCH_ARG=(--arch "sm_90,sm_90a")
step warmup-cold 240 "$QCONV" warmup ${ARCH_ARG[@]+"${ARCH_ARG[@]}"}
step warmup-warm 60 "$QCONV" warmup ${ARCH_ARG[@]+"${ARCH_ARG[@]}"}

# On this machine a test that cannot run is a failure: the GPU tests are #[ignore = "needs a
# CUDA device"] (run here with --include-ignored; each fails with the probe's reason where CUDA is
# unusable), the NVRTC tests fail instead of skipping under QCONV_REQUIRE_NVRTC=1, and an
# executable whose run executed no test (or skipped one) fails the step.
check_ran() {
  if grep -q "skipped:" "$REPORT/$1.log"; then
    note "FAIL  $1: tests were skipped (CUDA unusable here?):"
    grep "skipped:" "$REPORT/$1.log" | head -3 | sed 's/^/      /' | tee -a "$SUMMARY"
    FAILED=1
  fi
  local passed
  passed=$(grep -E "^test result" "$REPORT/$1.log" | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s += $1} END {print s + 0}')
  if [ "$passed" -eq 0 ]; then
    note "FAIL  $1: no test ran"
    FAILED=1
  fi
  if grep -qE "^test result.* [1-9][0-9]* ignored" "$REPORT/$1.log"; then
    note "FAIL  $1: tests were left ignored"
    FAILED=1
  fi
}
for t in "$CUDA_TEST" "$NVRTC_TEST"; do
  if [ -n "$t" ]; then
    name="test-$(basename "$t" | sed 's/-[0-9a-f]*$//')"
    step "$name" 240 env QCONV_REQUIRE_NVRTC=1 "$t" --include-ignored --test-threads=4 --nocapture
    grep -E "^test result" "$REPORT/$name.log" | sed 's/^/      /' >> "$SUMMARY"
    check_ran "$name"
  else
    note "FAIL  a test executable is missing in $BIN_DIR (cuda-*/nvrtc-*)"; FAILED=1
  fi
done

SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$SANITIZER" ] && [ -n "$CUDA_TEST" ]; then
  for tool in memcheck racecheck; do
    step "sanitizer-$tool" 120 "$SANITIZER" --tool "$tool" --error-exitcode 1 "$CUDA_TEST" sanitizer_smoke --exact --include-ignored --test-threads=1 --nocapture
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^test result" "$REPORT/sanitizer-$tool.log" | sed 's/^/      /' >> "$SUMMARY"
    check_ran "sanitizer-$tool"
  done
  if [ "$ARCH" = "90" ]; then
    # The sm_90a kernel (TMA + mbarrier + wgmma): memcheck catches out-of-bounds global stores of
    # the epilogue and a bad tensor map; racecheck does not model TMA/mbarrier ordering, so the
    # numeric comparisons of sm90a-tests are the pipeline's check.
    step sanitizer-memcheck-sm90a 180 "$SANITIZER" --tool memcheck --error-exitcode 1 "$CUDA_TEST" sm90a_sanitizer_smoke --exact --include-ignored --test-threads=1 --nocapture
    grep -E "ERROR SUMMARY|^test result" "$REPORT/sanitizer-memcheck-sm90a.log" | sed 's/^/      /' >> "$SUMMARY"
    check_ran sanitizer-memcheck-sm90a
  fi
else
  note "FAIL  compute-sanitizer not found (or no cuda test executable)"; FAILED=1
fi

# The opt-in sm_90a path on its own (they also ran above with every test): its verdict is what
# decides whether Precision::TensorCoreSm90a may become the default on Hopper (docs/gpu-results.md).
if [ "$ARCH" = "90" ] && [ -n "$CUDA_TEST" ]; then
  step sm90a-tests 180 "$CUDA_TEST" sm90a --include-ignored --test-threads=1 --nocapture
  grep -E "^test |^test result" "$REPORT/sm90a-tests.log" | sed 's/^/      /' >> "$SUMMARY"
  check_ran sm90a-tests
fi

# The exported PyTorch model through the CLI: `qconv run --device cuda` against `--device cpu` for
# each of its modules (random batched input; outputs must agree to 1e-5 of their magnitude).
cat > "$REPORT/run_compare.py" <<'EOF'
import json, os, random, struct, subprocess, sys
qconv, model, work = sys.argv[1], sys.argv[2], sys.argv[3]
def read(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return h, b[8 + n:]
def write(path, name, shape, values):
    data = struct.pack(f"<{len(values)}f", *values)
    head = json.dumps({name: {"dtype": "F32", "shape": shape, "data_offsets": [0, len(data)]}}).encode()
    head += b" " * (-len(head) % 8)
    open(path, "wb").write(struct.pack("<Q", len(head)) + head + data)
h, _ = read(model)
meta = h["__metadata__"]
random.seed(7)
bad = 0
for key in sorted(k for k in meta if k.endswith("module")):
    prefix = key[: -len("module")]
    cfg = json.loads(meta[key])
    dims = len(cfg["kernel_size"])
    shape = [2, cfg["in_channels"]] + [16] * dims
    n = 1
    for v in shape:
        n *= v
    x = os.path.join(work, "in.safetensors")
    write(x, "input", shape, [random.uniform(-1, 1) for _ in range(n)])
    outs = {}
    for dev in ("cpu", "cuda"):
        y = os.path.join(work, f"out_{dev}.safetensors")
        r = subprocess.run([qconv, "run", "--model", model, "--prefix", prefix, "--input", x, "--output", y,
                            "--device", dev], capture_output=True, text=True)
        print(f"{prefix} {dev}: exit {r.returncode} {r.stderr.strip()}")
        if r.returncode != 0:
            bad += 1
            continue
        hh, data = read(y)
        t = hh["output"]
        a, b = t["data_offsets"]
        outs[dev] = (t["shape"], struct.unpack(f"<{(b - a) // 4}f", data[a:b]))
    if len(outs) == 2:
        (sc, c), (sg, g) = outs["cpu"], outs["cuda"]
        scale = max([1e-30] + [abs(v) for v in c])
        err = max([0.0] + [abs(p - q) for p, q in zip(c, g)])
        ok = sc == sg and err <= 1e-5 * scale
        print(f"{prefix} shape {sg} max |cuda - cpu| = {err:.3e} (max |y| {scale:.3e}) {'ok' if ok else 'MISMATCH'}")
        bad += 0 if ok else 1
sys.exit(1 if bad else 0)
EOF
step run-cuda-vs-cpu 60 python3 "$REPORT/run_compare.py" "$QCONV" "$ROOT/tests/fixtures/export_demo.safetensors" "$REPORT"
grep -E "shape|exit [^0]" "$REPORT/run-cuda-vs-cpu.log" | sed 's/^/      /' >> "$SUMMARY"

step bench-qconv 150 "$QCONV" bench --device cuda
if [ "$SKIP_TORCH" = 0 ]; then
  if [ -z "$TORCH_BENCH" ]; then
    for c in "$ROOT/scripts/bench/torch_gpu.py" "$BIN_DIR/torch_gpu.py"; do [ -f "$c" ] && TORCH_BENCH="$c" && break; done
  fi
  if [ -n "$TORCH_BENCH" ] && [ -f "$TORCH_BENCH" ]; then
    step bench-torch 180 python3 "$TORCH_BENCH" "$REPORT/bench-torch.jsonl"
  else
    note "FAIL  bench-torch: torch_gpu.py not found (pass --torch-bench PATH)"; FAILED=1
  fi
fi
# Side by side: qconv module_forward (default precision: tensor cores for f16/bf16 where they
# apply) vs cuDNN float conv in the same layout, and the reference module; ratio = cuDNN / qconv
# time (> 1: qconv faster). Geometric means per dtype over the conv cases, channels-last.
python3 - "$REPORT/bench-qconv.log" "$REPORT/bench-torch.jsonl" > "$REPORT/bench-compare.txt" 2>&1 <<'PYEOF'
import json, math, sys
def rows(p):
    try:
        return [json.loads(l) for l in open(p) if l.startswith("{")]
    except OSError:
        return []
q, t = rows(sys.argv[1]), rows(sys.argv[2])
tt = {(r["case"], r["op"], r["dtype"], r.get("layout")): r for r in t}
mf = [r for r in q if r["op"] == "module_forward"]
qq = {(r["case"], r["dtype"], r.get("layout"), r.get("precision", "default")): r for r in mf if r.get("weights", "float") == "float"}
q8 = {(r["case"], r["dtype"], r.get("layout")): r for r in mf if r.get("weights") == "int8_codes"}
print(f"{'case':<15}{'dtype':<5}{'layout':<7}{'qconv us':>9}{'TFLOP/s':>8}{'cuDNN us':>9}{'TFLOP/s':>8}{'ratio':>7}{'exact us':>9}{'ref mod':>9}{'vs ref':>7}{'int8w us':>9}{'w MB':>7}{'int8w MB':>9}")
geo = {}
for (c, d, lay, prec), r in sorted(qq.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
    if prec != "default":
        continue
    c8 = q8.get((c, d, lay))
    cu = tt.get((c, "float_conv", d, lay))
    ex = qq.get((c, d, lay, "exact"))
    ref = tt.get((c, "ref_module", "f32", "nchw")) if d == "f32" and lay == "nchw" else None
    ratio = cu["median_us"] / r["median_us"] if cu else None
    if ratio and lay != "nchw":
        geo.setdefault(d, []).append(ratio)
    print(f"{c:<15}{d:<5}{lay:<7}{r['median_us']:>9.1f}{r['tflops']:>8.1f}"
          f"{(cu['median_us'] if cu else float('nan')):>9.1f}{(cu['tflops'] if cu else float('nan')):>8.1f}"
          f"{(ratio or float('nan')):>7.2f}{(ex['median_us'] if ex else float('nan')):>9.1f}"
          f"{(ref['median_us'] if ref else float('nan')):>9.1f}"
          f"{(ref['median_us'] / r['median_us'] if ref else float('nan')):>7.2f}"
          f"{(c8['median_us'] if c8 else float('nan')):>9.1f}"
          f"{r.get('weight_bytes', float('nan')) / 1e6:>7.2f}{(c8['weight_bytes'] / 1e6 if c8 else float('nan')):>9.3f}")
for d, v in geo.items():
    print(f"geomean cuDNN/qconv, channels-last, {d}: {math.exp(sum(map(math.log, v)) / len(v)):.2f} over {len(v)} cases (min {min(v):.2f})")
# Opt-in TF32 (qconv precision tf32) against cuDNN with allow_tf32 = True.
tf = [(k, r) for k, r in sorted(qq.items()) if k[3] == "tf32"]
if tf:
    print(f"{'case':<15}{'layout':<7}{'tf32 us':>9}{'TFLOP/s':>8}{'cuDNN tf32 us':>14}{'ratio':>7}")
    gt = []
    for (c, d, lay, _), r in tf:
        cu = tt.get((c, "float_conv", "f32_tf32", lay))
        ratio = cu["median_us"] / r["median_us"] if cu else None
        if ratio and lay != "nchw":
            gt.append(ratio)
        print(f"{c:<15}{lay:<7}{r['median_us']:>9.1f}{r['tflops']:>8.1f}{(cu['median_us'] if cu else float('nan')):>14.1f}{(ratio or float('nan')):>7.2f}")
    if gt:
        print(f"geomean cuDNN/qconv, channels-last, tf32: {math.exp(sum(map(math.log, gt)) / len(gt)):.2f} over {len(gt)} cases (min {min(gt):.2f})")
# The opt-in sm_90a kernel (precision "sm90a", Hopper only) against the default tensor-core
# path and cuDNN, channels-last.
hw = [(k, r) for k, r in sorted(qq.items()) if k[3] == "sm90a"]
if hw:
    print(f"{'case':<15}{'dtype':<5}{'sm90a us':>9}{'TFLOP/s':>8}{'mma us':>9}{'speedup':>8}{'cuDNN us':>9}{'ratio':>7}")
    gh = {}
    for (c, d, lay, _), r in hw:
        base = qq.get((c, d, lay, "default"))
        cu = tt.get((c, "float_conv", d, lay))
        ratio = cu["median_us"] / r["median_us"] if cu else None
        if ratio:
            gh.setdefault(d, []).append(ratio)
        print(f"{c:<15}{d:<5}{r['median_us']:>9.1f}{r['tflops']:>8.1f}"
              f"{(base['median_us'] if base else float('nan')):>9.1f}"
              f"{(base['median_us'] / r['median_us'] if base else float('nan')):>8.2f}"
              f"{(cu['median_us'] if cu else float('nan')):>9.1f}{(ratio or float('nan')):>7.2f}")
    for d, v in gh.items():
        print(f"geomean cuDNN/qconv sm90a, channels-last, {d}: {math.exp(sum(map(math.log, v)) / len(v)):.2f} over {len(v)} cases (min {min(v):.2f})")
for r in q:
    if r["op"] != "module_forward":
        print("qconv", json.dumps(r))
for r in t:
    if r["case"] == "g_fq":
        print("torch", json.dumps(r))
PYEOF
cat "$REPORT/bench-compare.txt" >> "$SUMMARY"

if [ "$NCU" = 1 ]; then
  NCU_BIN=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  if [ -n "$NCU_BIN" ]; then
    SECTIONS=(--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis)
    step ncu-conv 120 "$NCU_BIN" --clock-control none -k regex:qc_conv_tc -c 1 "${SECTIONS[@]}" "$QCONV" bench --device cuda --case g_3x3_128
    step ncu-fakequant 120 "$NCU_BIN" --clock-control none -k regex:qc_fakequant -c 1 "${SECTIONS[@]}" "$QCONV" bench --device cuda --case g_fq
  else
    note "SKIP  ncu: Nsight Compute not found"
  fi
fi

note "total: $(( $(date +%s) - START ))s; $([ $FAILED = 0 ] && echo 'all steps passed' || echo 'SOME STEPS FAILED')"
exit $FAILED
