#!/usr/bin/env python3
"""PyTorch's side of qconv's CPU benchmark suite (docs/benchmarks.md).

Builds every case of the suite (the same table as `CPU_SUITE` in src/bench.rs) and times, per case,
the ops chosen with --ops:

  float  op "float_conv":       F.conv{1,2,3}d / F.conv_transpose{1,2,3}d in f32 (oneDNN)
  ref    op "ref_module":       torch.ao.nn.quantized.reference module forward (the weight is
                                quantized and dequantized on every call, then the float conv)
  fq     op "weight_fakequant": the reference module's get_weight() alone
  int8   op "int8_module":      the lowered torch.ao.nn.quantized Conv*/ConvTranspose* forward,
                                engine fbgemm (settings below)

Default: --ops float,ref,fq (what scripts/bench_compare.py pairs with `qconv bench`).

Weights and bias are PyTorch's default initialisation (uniform in +-1/sqrt(fan_in)), the input is
uniform in [-1, 1), and the reference module's qparams are per-channel affine qint8 with zero point
0 and scale = max|w| / 127 along the output-channel axis (0 for convs, 1 for transposed convs).

int8 settings: input quantized per tensor to quint8 with the reduced range [0, 127] (scale 2/127,
zero point 64); weights qint8 symmetric, per output channel for convs and per tensor for transposed
convs (FBGEMM has no per-channel transposed conv); float bias; output quint8 with scale and zero
point from a MinMax observer over [0, 255] on the float module's output. Only the module forward
on the already-quantized input is timed.

Each timing: 3 warm-up calls, then at least --min-iters calls lasting at least --min-time seconds
(at most --max-iters), median. One JSON object per line on stdout: peer, version, case, op, batch,
median_us, gflops (null for weight_fakequant; int8 counts operations the same way), threads; int8
rows add engine, act_scale, act_zero_point, weight_qscheme. A path given with --json (or as the
only positional argument) receives the same lines.
"""
import argparse
import json
import sys
import time
import warnings

# name, transposed, dims, C, K, input spatial, kernel, stride, pad, dilation, groups
SUITE = (
    ("c2d_3x3", False, 2, 128, 128, (28, 28), 3, 1, 1, 1, 1),
    ("c2d_1x1", False, 2, 256, 64, (56, 56), 1, 1, 0, 1, 1),
    ("c2d_stem", False, 2, 3, 64, (224, 224), 7, 2, 3, 1, 1),
    ("c2d_dw", False, 2, 256, 256, (28, 28), 3, 1, 1, 1, 256),
    ("c2d_dil", False, 2, 64, 64, (56, 56), 3, 1, 2, 2, 1),
    ("c1d", False, 1, 256, 256, (2048,), 5, 1, 2, 1, 1),
    ("c3d", False, 3, 32, 64, (8, 28, 28), 3, 1, 1, 1, 1),
    ("ct2d", True, 2, 128, 64, (28, 28), 4, 2, 1, 1, 1),
    ("ct1d", True, 1, 256, 128, (1024,), 4, 2, 1, 1, 1),
    ("ct3d", True, 3, 32, 16, (8, 16, 16), 4, 2, 1, 1, 1),
)
CASE_NAMES = [c[0] for c in SUITE]

OPS = {"float": "float_conv", "ref": "ref_module", "fq": "weight_fakequant", "int8": "int8_module"}
DEFAULT_OPS = "float,ref,fq"

# Activation quantization of the int8 op: [-1, 1) onto quint8's reduced range [0, 127].
ACT_SCALE = 2.0 / 127.0
ACT_ZERO_POINT = 64


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default="all",
                    help="comma-separated case names, or 'all' (default); cases: " + ", ".join(CASE_NAMES))
    ap.add_argument("--ops", default=DEFAULT_OPS,
                    help=f"comma-separated subset of {','.join(OPS)}, or 'all' (default {DEFAULT_OPS})")
    ap.add_argument("--threads", type=int, default=0,
                    help="PyTorch intra-op threads (default: PyTorch's own default)")
    ap.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="seconds of timed calls per measurement, at least (default 1.0)")
    ap.add_argument("--min-iters", type=int, default=20, help="timed calls per measurement, at least (default 20)")
    ap.add_argument("--max-iters", type=int, default=2000, help="timed calls per measurement, at most (default 2000)")
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed (default 0)")
    ap.add_argument("--json", metavar="PATH", help="also write the rows to PATH")
    ap.add_argument("out", nargs="?", help="same as --json PATH")
    args = ap.parse_args(argv)

    if args.case == "all":
        args.cases = list(SUITE)
    else:
        wanted = [c for c in args.case.split(",") if c]
        unknown = [c for c in wanted if c not in CASE_NAMES]
        if unknown:
            ap.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASE_NAMES)}")
        args.cases = [c for c in SUITE if c[0] in wanted]
    names = list(OPS) if args.ops == "all" else [o for o in args.ops.split(",") if o]
    unknown = [o for o in names if o not in OPS]
    if unknown or not names:
        ap.error(f"--ops takes a comma-separated subset of {','.join(OPS)} (got {args.ops!r})")
    args.op_names = names
    if args.batch < 1 or args.min_iters < 1 or args.max_iters < args.min_iters or args.min_time < 0:
        ap.error("--batch and --min-iters must be positive, --max-iters >= --min-iters, --min-time >= 0")
    if args.json and args.out:
        ap.error("give the output path either with --json or positionally, not both")
    args.json = args.json or args.out
    return args


def median_us(fn, min_iters, max_iters, min_time):
    """Median wall time of fn() in microseconds, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    samples = []
    start = time.perf_counter()
    while len(samples) < min_iters or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        if len(samples) >= max_iters:
            break
    samples.sort()
    return samples[len(samples) // 2] * 1e6


def flop_count(transposed, batch, c, k, groups, kernel, dims, in_spatial, out_spatial):
    """Two per multiply-add: conv counts output positions, transposed conv input positions."""
    taps = kernel ** dims
    positions = 1
    for v in (in_spatial if transposed else out_spatial):
        positions *= v
    per_position = c * (k // groups) if transposed else k * (c // groups)
    return 2 * batch * per_position * taps * positions


class Case:
    """One suite case: float module, reference module, input, FLOPs."""

    def __init__(self, torch, spec, batch):
        import torch.nn as nn
        import torch.nn.functional as F
        from torch.ao.nn.quantized import reference as nnqr

        name, transposed, dims, c, k, spatial, kernel, stride, pad, dil, groups = spec
        self.name, self.transposed, self.dims = name, transposed, dims
        self.c, self.k, self.groups = c, k, groups
        self.kernel, self.stride, self.pad, self.dil = kernel, stride, pad, dil
        float_cls = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d) if transposed else \
                    (nn.Conv1d, nn.Conv2d, nn.Conv3d)
        ref_cls = (nnqr.ConvTranspose1d, nnqr.ConvTranspose2d, nnqr.ConvTranspose3d) if transposed else \
                  (nnqr.Conv1d, nnqr.Conv2d, nnqr.Conv3d)
        self.functional = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[dims - 1] if transposed else \
                          (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
        self.module = float_cls[dims - 1](c, k, kernel, stride=stride, padding=pad, dilation=dil,
                                          groups=groups, bias=True).eval()
        self.x = torch.rand(batch, c, *spatial) * 2 - 1

        axis = 1 if transposed else 0
        w = self.module.weight.detach()
        reduce_dims = [d for d in range(w.dim()) if d != axis]
        amax = w.abs().amax(dim=reduce_dims).clamp(min=1e-8)
        qparams = {
            "qscheme": torch.per_channel_affine,
            "dtype": torch.qint8,
            "scale": amax / 127.0,
            "zero_point": torch.zeros(w.shape[axis], dtype=torch.int32),
            "axis": axis,
        }
        self.ref = ref_cls[dims - 1].from_float(self.module, qparams).eval()
        with torch.no_grad():
            self.y = self.module(self.x)
        self.flops = flop_count(transposed, batch, c, k, groups, kernel, dims, spatial, tuple(self.y.shape[2:]))

    def float_call(self):
        m = self.module
        w, b = m.weight, m.bias
        if self.transposed:
            return lambda: self.functional(self.x, w, b, m.stride, m.padding, m.output_padding, m.groups, m.dilation)
        return lambda: self.functional(self.x, w, b, m.stride, m.padding, m.dilation, m.groups)

    def int8_module(self, torch):
        """The lowered quantized module with FBGEMM, its quantized input, and the qparams used."""
        import torch.ao.nn.quantized as nnq
        from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

        w = self.module.weight.detach()
        if self.transposed:
            obs = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
            obs(w)
            scale, zero_point = obs.calculate_qparams()
            qw = torch.quantize_per_tensor(w, float(scale), int(zero_point), torch.qint8)
            qscheme = "per_tensor_symmetric"
            cls = (nnq.ConvTranspose1d, nnq.ConvTranspose2d, nnq.ConvTranspose3d)[self.dims - 1]
        else:
            obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
            obs(w)
            scale, zero_point = obs.calculate_qparams()
            qw = torch.quantize_per_channel(w, scale.double(), zero_point, 0, torch.qint8)
            qscheme = "per_channel_symmetric"
            cls = (nnq.Conv1d, nnq.Conv2d, nnq.Conv3d)[self.dims - 1]
        qm = cls(self.c, self.k, self.kernel, stride=self.stride, padding=self.pad, dilation=self.dil,
                 groups=self.groups, bias=True)
        qm.set_weight_bias(qw, self.module.bias.detach())
        out_obs = MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
        out_obs(self.y)
        out_scale, out_zero_point = out_obs.calculate_qparams()
        qm.scale = float(out_scale)
        qm.zero_point = int(out_zero_point)
        qm.eval()
        qx = torch.quantize_per_tensor(self.x, ACT_SCALE, ACT_ZERO_POINT, torch.quint8)
        return qm, qx, qscheme


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import torch

    warnings.filterwarnings("ignore")  # deprecation notices of the quantized-tensor API
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if "int8" in args.op_names:
        if "fbgemm" not in torch.backends.quantized.supported_engines:
            sys.exit("the int8 op needs PyTorch's fbgemm quantized engine, which this build lacks")
        torch.backends.quantized.engine = "fbgemm"
    torch.manual_seed(args.seed)
    sink = open(args.json, "w") if args.json else None

    def emit(case, op, us, flops, **extra):
        row = {"peer": "torch", "version": torch.__version__, "case": case.name, "op": op, "batch": args.batch,
               "median_us": round(us, 2), "gflops": round(flops / us / 1e3, 2) if flops is not None else None,
               "threads": threads}
        row.update(extra)
        line = json.dumps(row)
        print(line, flush=True)
        if sink:
            sink.write(line + "\n")

    def timed(fn):
        return median_us(fn, args.min_iters, args.max_iters, args.min_time)

    with torch.no_grad():
        for spec in args.cases:
            case = Case(torch, spec, args.batch)
            for name in args.op_names:
                op = OPS[name]
                if name == "float":
                    emit(case, op, timed(case.float_call()), case.flops)
                elif name == "ref":
                    emit(case, op, timed(lambda: case.ref(case.x)), case.flops)
                elif name == "fq":
                    emit(case, op, timed(case.ref.get_weight), None)
                else:
                    qm, qx, qscheme = case.int8_module(torch)
                    emit(case, op, timed(lambda: qm(qx)), case.flops, engine="fbgemm",
                         act_scale=ACT_SCALE, act_zero_point=ACT_ZERO_POINT, weight_qscheme=qscheme)
    if sink:
        sink.close()


if __name__ == "__main__":
    main()
