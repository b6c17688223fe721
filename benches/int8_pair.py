#!/usr/bin/env python3
"""Paired timing of qconv's int8 engine against PyTorch's FBGEMM on the CPU suite.

    python3 benches/int8_pair.py [--rounds 3] [--threads 2] [--cases c2d_3x3,c1d] [--quiet 300]
    python3 benches/int8_pair.py --cpu-time [--rounds 3]

Each round runs, case by case and back to back on the same machine, `scripts/bench/torch_cpu.py
--ops int8` (FBGEMM's lowered modules, reduced-range activations, medians) and `benches/int8.rs`
in its table mode (qconv's int8 forward on channels-first and channels-last codes and qconv's
float module forward, medians), both with the same thread count. The machine may be shared: per case and
column the best median over the rounds is kept (the least disturbed run), and `uptime` is printed
before each round. Prints one table: the medians (µs), int8 / FBGEMM and float / int8.

With --cpu-time both sides run on one thread and report the process CPU time per call instead
(FBGEMM through `scripts/bench/torch_cpu.py`'s own case builder, qconv through the table's
QCONV_INT8_CPU mode): a comparison of the work per call that a busy machine disturbs less than
wall-clock medians, not a measurement of the two-thread targets.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

CASES = ["c2d_3x3", "c2d_1x1", "c2d_stem", "c2d_dw", "c2d_dil", "c1d", "c3d", "ct2d", "ct1d", "ct3d"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def idle_fraction(seconds=2.0):
    """Fraction of CPU time the whole machine spent idle over `seconds` (from /proc/stat)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)
    i0, t0 = snap()
    time.sleep(seconds)
    i1, t1 = snap()
    return (i1 - i0) / max(t1 - t0, 1)


def wait_quiet(max_wait):
    """Waits (at most `max_wait` s) until the machine is at least 85% idle over 2 s."""
    t0 = time.time()
    while True:
        idle = idle_fraction()
        if idle >= 0.85 or time.time() - t0 >= max_wait:
            return idle


def fbgemm(threads, cases):
    cmd = [sys.executable, os.path.join(ROOT, "scripts/bench/torch_cpu.py"), "--ops", "int8",
           "--threads", str(threads), "--min-time", "1"]
    if cases:
        cmd += ["--case", cases]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res = {}
    for line in out.splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        res[d["case"]] = d["median_us"]
    return res


def qconv(threads, cases):
    env = dict(os.environ, QCONV_INT8_TABLE="1", QCONV_INT8_THREADS=str(threads))
    if cases:
        env["QCONV_INT8_CASES"] = cases
    out = subprocess.run(["cargo", "bench", "--bench", "int8"], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout
    res = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 5 and f[0].startswith(("c", "ct")) and f[0] != "case":
            res[f[0]] = tuple(float(v) for v in f[1:4])
    return res


def fbgemm_cpu(cases):
    """One thread, process CPU time per call (µs) of FBGEMM's lowered module, per case."""
    sys.path.insert(0, os.path.join(ROOT, "scripts/bench"))
    import torch
    import torch_cpu
    import warnings
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.backends.quantized.engine = "fbgemm"
    torch.manual_seed(0)
    out = {}
    with torch.no_grad():
        for spec in torch_cpu.parse_args(["--case", ",".join(cases), "--ops", "int8"]).cases:
            case = torch_cpu.Case(torch, spec, 1)
            qm, qx, _ = case.int8_module(torch)
            for _ in range(3):
                qm(qx)
            n, t0, c0 = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - t0 < 3.0 or n < 20:
                qm(qx)
                n += 1
            out[spec[0]] = (time.process_time() - c0) / n * 1e6
    return out


def qconv_cpu(cases):
    """One thread, CPU time per call (µs) of qconv's int8 forward (channels-first, -last)."""
    env = dict(os.environ, QCONV_INT8_CPU="1", QCONV_INT8_CASES=",".join(cases))
    out = subprocess.run(["cargo", "bench", "--bench", "int8"], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout
    res = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 3 and f[0] in cases:
            res[f[0]] = (float(f[1]), float(f[2]))
    return res


def cpu_main(a):
    names = a.cases.split(",") if a.cases else CASES
    best_f, best_q = {}, {}
    for r in range(a.rounds):
        print(f"round {r + 1}: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}",
              file=sys.stderr)
        for k, v in fbgemm_cpu(names).items():
            best_f[k] = min(best_f.get(k, math.inf), v)
        for k, v in qconv_cpu(names).items():
            old = best_q.get(k, (math.inf,) * 2)
            best_q[k] = tuple(min(x, y) for x, y in zip(old, v))
    print(f"one thread, CPU time per call (µs), best of {a.rounds} rounds")
    print(f"{'case':<10} {'fbgemm':>8} {'i8_nchw':>8} {'i8_nhwc':>8} {'nchw/fb':>8} {'nhwc/fb':>8}")
    lr_c, lr_l = [], []
    for case in names:
        if case in best_f and case in best_q:
            fb, (nchw, nhwc) = best_f[case], best_q[case]
            lr_c.append(math.log(nchw / fb))
            lr_l.append(math.log(nhwc / fb))
            print(f"{case:<10} {fb:>8.1f} {nchw:>8.1f} {nhwc:>8.1f} {nchw / fb:>8.2f} {nhwc / fb:>8.2f}")
    if lr_c:
        print(f"{'geomean':<10} {'':>8} {'':>8} {'':>8} {math.exp(sum(lr_c) / len(lr_c)):>8.2f} "
              f"{math.exp(sum(lr_l) / len(lr_l)):>8.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default="")
    ap.add_argument("--quiet", type=float, default=0.0,
                    help="before each block, wait up to this many seconds for a machine at least 85%% idle")
    ap.add_argument("--cpu-time", action="store_true",
                    help="one thread each, CPU time per call instead of wall medians (less disturbed by a "
                         "busy machine; a measure of work, not of the 2-thread targets)")
    a = ap.parse_args()
    if a.cpu_time:
        return cpu_main(a)
    best_f, best_q = {}, {}
    names = a.cases.split(",") if a.cases else CASES
    for r in range(a.rounds):
        print(f"round {r + 1}: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}",
              file=sys.stderr)
        # Case by case, FBGEMM then qconv, each after waiting for an idle machine (if asked).
        for case in names:
            if a.quiet:
                print(f"  {case}: idle {wait_quiet(a.quiet):.0%} before FBGEMM", file=sys.stderr)
            for k, v in fbgemm(a.threads, case).items():
                best_f[k] = min(best_f.get(k, math.inf), v)
            if a.quiet:
                print(f"  {case}: idle {wait_quiet(a.quiet):.0%} before qconv", file=sys.stderr)
            for k, v in qconv(a.threads, case).items():
                old = best_q.get(k, (math.inf,) * 3)
                best_q[k] = tuple(min(x, y) for x, y in zip(old, v))
    print(f"{a.threads} threads, best of {a.rounds} rounds (medians, µs)")
    print(f"{'case':<10} {'fbgemm':>8} {'i8_nchw':>8} {'i8_nhwc':>8} {'float':>8} {'nchw/fb':>8} {'nhwc/fb':>8} "
          f"{'float/i8':>8}")
    lr_c, lr_l = [], []
    for case, fb in best_f.items():
        if case not in best_q:
            continue
        nchw, nhwc, fl = best_q[case]
        lr_c.append(math.log(nchw / fb))
        lr_l.append(math.log(nhwc / fb))
        print(f"{case:<10} {fb:>8.1f} {nchw:>8.1f} {nhwc:>8.1f} {fl:>8.1f} {nchw / fb:>8.2f} {nhwc / fb:>8.2f} "
              f"{fl / nchw:>8.2f}")
    if lr_c:
        print(f"{'geomean':<10} {'':>8} {'':>8} {'':>8} {'':>8} {math.exp(sum(lr_c) / len(lr_c)):>8.2f} "
              f"{math.exp(sum(lr_l) / len(lr_l)):>8.2f}")


if __name__ == "__main__":
    main()
