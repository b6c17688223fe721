#!/usr/bin/env python3
"""Pair `qconv bench` with PyTorch's CPU baseline (`scripts/bench/torch_cpu.py`) in one run.

Runs the two sides alternately (ROUNDS times each, qconv first), takes the median of each side's
per-run medians, and prints a Markdown ratio table:

    python scripts/bench_compare.py [--torch-script scripts/bench/torch_cpu.py] [--rounds 2]
                                    [--qconv target/release/qconv] [--json out.jsonl]
                                    [--candle scripts/candle_peer/target/release/candle_peer]

The candle-core peer (`scripts/candle_peer`, a separate package: `cargo build --release` in that
folder) joins the rotation when its binary exists; its column says how many times faster qconv's
forward is than candle's float conv (candle has no 3-d convolutions).

Ratios below 1.0 mean qconv is faster. "vs float conv" compares qconv's module forward (cached
fake-quantized weight) with PyTorch's plain float convolution (oneDNN); "vs ref module" with
PyTorch's reference quantized module (which re-quantizes the weight on every call);
"fake-quant" compares the weight fake-quant step alone.

With --int8, PyTorch also runs its lowered FBGEMM module (`--ops float,ref,fq,int8`) and a second
table pairs qconv's `int8_module` rows (same activation and weight qparams settings) with it and
with qconv's own float module forward: int8 / FBGEMM below 1.0 means qconv's int8 is faster, and
float / int8 is the speedup of lowering the model in qconv.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_lines(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--torch-script", default=os.path.join(HERE, "bench", "torch_cpu.py"),
                    help="PyTorch CPU baseline (default: scripts/bench/torch_cpu.py)")
    ap.add_argument("--qconv", default=os.path.join(ROOT, "target", "release", "qconv"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", help="also write every raw row to this file")
    ap.add_argument("--int8", action="store_true",
                    help="also time PyTorch's lowered FBGEMM module and print the int8 ratio table")
    ap.add_argument("--candle", default=os.path.join(HERE, "candle_peer", "target", "release", "candle_peer"),
                    help="candle-core peer binary (skipped if missing)")
    args = ap.parse_args()
    if not os.path.exists(args.qconv):
        sys.exit(f"{args.qconv} not found: run `cargo build --release` first")
    if not os.path.exists(args.torch_script):
        sys.exit(f"{args.torch_script} not found: pass --torch-script")

    candle = os.path.exists(args.candle)
    if not candle:
        print(f"(no candle peer at {args.candle}: build scripts/candle_peer to add it)\n", file=sys.stderr)
    rows = []
    for _ in range(args.rounds):
        rows += run_lines([args.qconv, "bench"])
        rows += run_lines([sys.executable, args.torch_script] + (["--ops", "float,ref,fq,int8"] if args.int8 else []))
        if candle:
            rows += run_lines([args.candle])
    if args.json:
        with open(args.json, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")

    med = {}
    unsupported = {(r["peer"], r["case"]) for r in rows if r.get("unsupported")}
    rows = [r for r in rows if not r.get("unsupported")]
    for r in rows:
        med.setdefault((r["peer"], r["case"], r["op"]), []).append(r["median_us"])
    m = {k: statistics.median(v) for k, v in med.items()}
    cases = []
    for r in rows:
        if r["case"] not in cases:
            cases.append(r["case"])
    threads = {r["peer"]: r["threads"] for r in rows}
    torch_version = next((r.get("version") for r in rows if r["peer"] == "torch"), "?")

    cand = f", candle-core threads {threads.get('candle')}" if candle else ""
    print(f"Machine: {cpu_name()}, {os.cpu_count()} CPUs; qconv threads {threads.get('qconv')}, "
          f"PyTorch {torch_version} threads {threads.get('torch')}{cand}; {args.rounds} alternating rounds, "
          "medians in µs.\n")
    head = ("| case | qconv forward µs | torch float conv µs | torch ref module µs | vs float conv | vs ref module "
            "| qconv fake-quant µs | torch fake-quant µs | fake-quant speedup |")
    rule = "|---|---|---|---|---|---|---|---|---|"
    if candle:
        head += " candle µs | qconv speedup vs candle |"
        rule += "---|---|"
    print(head)
    print(rule)
    ratios = []
    cratios = []
    for c in cases:
        q = m.get(("qconv", c, "module_forward"))
        tf = m.get(("torch", c, "float_conv"))
        tr = m.get(("torch", c, "ref_module"))
        qf = m.get(("qconv", c, "weight_fakequant"))
        tq = m.get(("torch", c, "weight_fakequant"))
        if None in (q, tf, tr, qf, tq):
            continue
        ratios.append(q / tf)
        line = f"| {c} | {q:.1f} | {tf:.1f} | {tr:.1f} | {q / tf:.2f}× | {q / tr:.2f}× | {qf:.1f} | {tq:.1f} | {tq / qf:.1f}× |"
        if candle:
            cf = m.get(("candle", c, "float_conv"))
            if cf is not None:
                cratios.append(cf / q)
                line += f" {cf:.1f} | {cf / q:.1f}× |"
            elif ("candle", c) in unsupported:
                line += " unsupported | – |"
            else:
                line += " – | – |"
        print(line)
    if ratios:
        geo = statistics.geometric_mean(ratios)
        print(f"\nGeometric mean of qconv forward / torch float conv: {geo:.2f}×")
    if cratios:
        print(f"Smallest speedup over candle: {min(cratios):.1f}× (geometric mean {statistics.geometric_mean(cratios):.1f}×)")
    if args.int8:
        print_int8(m, cases)


def print_int8(m, cases):
    """The int8 table: qconv's lowered module against FBGEMM's and against qconv's float forward."""
    print("\n| case | qconv int8 µs | FBGEMM int8 µs | qconv float µs | int8 / FBGEMM | float / int8 |")
    print("|---|---|---|---|---|---|")
    ratios = []
    for c in cases:
        qi = m.get(("qconv", c, "int8_module"))
        ti = m.get(("torch", c, "int8_module"))
        qf = m.get(("qconv", c, "module_forward"))
        if None in (qi, ti, qf):
            continue
        ratios.append(qi / ti)
        print(f"| {c} | {qi:.1f} | {ti:.1f} | {qf:.1f} | {qi / ti:.2f}× | {qf / qi:.1f}× |")
    if ratios:
        print(f"\nGeometric mean of qconv int8 / FBGEMM int8: {statistics.geometric_mean(ratios):.2f}× "
              f"(worst case {max(ratios):.2f}×)")


if __name__ == "__main__":
    main()
