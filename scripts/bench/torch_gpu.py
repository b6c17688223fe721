#!/usr/bin/env python3
"""PyTorch/cuDNN side of qconv's GPU benchmark suite (docs/benchmarks.md). Needs a CUDA GPU.

For every case of the suite (the same table as `GPU_SUITE` in src/bench.rs, with its batch
sizes) and every dtype of --dtypes (f16, bf16, f32), times:

  op "float_conv":  F.conv{1,2,3}d / F.conv_transpose{1,2,3}d (cuDNN) in that dtype, channels-first
                    ("nchw") and, for 2-d and 3-d cases, channels_last ("nhwc") /
                    channels_last_3d ("ndhwc") memory format (PyTorch has no channels-last 1-d
                    format); f32 twice: TF32 off (dtype "f32") and on (dtype "f32_tf32")
  op "ref_module":  the torch.ao.nn.quantized.reference module forward in f32, channels-first, at
                    PyTorch's default TF32 setting for convolutions (re-quantizes the weight on
                    every call)

and the weight fake-quant case g_fq (per-channel qint8, a 2048x2048x3x3 weight):
  op "quantize_dequantize":               torch.quantize_per_channel(...).dequantize()
  op "fake_quantize_per_channel_affine":  torch.fake_quantize_per_channel_affine(...)

Weights and qparams as in the CPU suite (PyTorch's default initialisation; per-channel affine qint8,
zero point 0, scale = max|w| / 127 along the output-channel axis). Timing: CUDA events around each
call, --warmup calls first, median of --iters calls.

One JSON object per line on stdout: peer ("torch-cuda"), device, version, case, op, dtype, layout,
batch, median_us, tflops; ref_module rows add tf32; g_fq rows have layout "-" and gbps (8 bytes
per element: one f32 read, one written) instead of tflops. A path given with --json (or as the
only positional argument, as scripts/gpu-check.sh passes it) receives the same lines.
"""
import argparse
import json
import sys
import warnings

# name, transposed, dims, batch, C, K, input spatial, kernel, stride, pad, dilation, groups
SUITE = (
    ("g_3x3_64", False, 2, 32, 64, 64, (56, 56), 3, 1, 1, 1, 1),
    ("g_3x3_128", False, 2, 32, 128, 128, (28, 28), 3, 1, 1, 1, 1),
    ("g_3x3_256", False, 2, 32, 256, 256, (14, 14), 3, 1, 1, 1, 1),
    ("g_3x3_512", False, 2, 32, 512, 512, (7, 7), 3, 1, 1, 1, 1),
    ("g_1x1_256_64", False, 2, 32, 256, 64, (56, 56), 1, 1, 0, 1, 1),
    ("g_1x1_1024_256", False, 2, 32, 1024, 256, (14, 14), 1, 1, 0, 1, 1),
    ("g_stem", False, 2, 32, 3, 64, (224, 224), 7, 2, 3, 1, 1),
    ("g_dw", False, 2, 32, 256, 256, (28, 28), 3, 1, 1, 1, 256),
    ("g_c1d", False, 1, 16, 512, 512, (4096,), 3, 1, 1, 1, 1),
    ("g_c3d", False, 3, 4, 64, 64, (16, 56, 56), 3, 1, 1, 1, 1),
    ("g_ct2d", True, 2, 32, 256, 128, (28, 28), 4, 2, 1, 1, 1),
)
FQ_CASE = "g_fq"
FQ_SHAPE = (2048, 2048, 3, 3)
CASE_NAMES = [c[0] for c in SUITE] + [FQ_CASE]
DTYPES = ("f16", "bf16", "f32")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default="all",
                    help="comma-separated case names, or 'all' (default); cases: " + ", ".join(CASE_NAMES))
    ap.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated subset of f16,bf16,f32 (default all)")
    ap.add_argument("--no-ref", action="store_true", help="skip the reference-module rows")
    ap.add_argument("--iters", type=int, default=50, help="timed calls per measurement (default 50)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed calls first (default 10)")
    ap.add_argument("--fq-iters", type=int, default=20, help="timed calls for g_fq (default 20)")
    ap.add_argument("--seed", type=int, default=0, help="torch.manual_seed (default 0)")
    ap.add_argument("--device", type=int, default=0, help="CUDA device ordinal (default 0)")
    ap.add_argument("--json", metavar="PATH", help="also write the rows to PATH")
    ap.add_argument("out", nargs="?", help="same as --json PATH")
    args = ap.parse_args(argv)
    wanted = CASE_NAMES if args.case == "all" else [c for c in args.case.split(",") if c]
    unknown = [c for c in wanted if c not in CASE_NAMES]
    if unknown or not wanted:
        ap.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASE_NAMES)}")
    args.cases = [c for c in SUITE if c[0] in wanted]
    args.fq = FQ_CASE in wanted
    args.dtype_names = [d for d in args.dtypes.split(",") if d]
    if not args.dtype_names or any(d not in DTYPES for d in args.dtype_names):
        ap.error(f"--dtypes takes a comma-separated subset of {','.join(DTYPES)} (got {args.dtypes!r})")
    if args.iters < 1 or args.warmup < 0 or args.fq_iters < 1:
        ap.error("--iters and --fq-iters must be positive, --warmup non-negative")
    if args.json and args.out:
        ap.error("give the output path either with --json or positionally, not both")
    args.json = args.json or args.out
    return args


def flop_count(transposed, batch, c, k, groups, kernel, dims, in_spatial, out_spatial):
    """Two per multiply-add: conv counts output positions, transposed conv input positions."""
    taps = kernel ** dims
    positions = 1
    for v in (in_spatial if transposed else out_spatial):
        positions *= v
    per_position = c * (k // groups) if transposed else k * (c // groups)
    return 2 * batch * per_position * taps * positions


def set_conv_tf32(torch, on):
    """TF32 for cuDNN convolutions, through the newer per-backend flag where it exists (mixing it
    with the legacy allow_tf32 flag makes PyTorch refuse to read the flags)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        conv.fp32_precision = "tf32" if on else "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = on


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from torch.ao.nn.quantized import reference as nnqr

    if not torch.cuda.is_available():
        sys.exit("torch_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    warnings.filterwarnings("ignore")  # deprecation notices of the quantized-tensor API
    torch.manual_seed(args.seed)
    dev = torch.device("cuda", args.device)
    torch.cuda.set_device(dev)
    device_name = torch.cuda.get_device_name(dev)
    tf32_default = True  # PyTorch's default for cuDNN convolutions
    sink = open(args.json, "w") if args.json else None

    def emit(**row):
        full = {"peer": "torch-cuda", "device": device_name, "version": torch.__version__}
        full.update(row)
        line = json.dumps(full)
        print(line, flush=True)
        if sink:
            sink.write(line + "\n")

    def cuda_median_us(fn, iters):
        for _ in range(args.warmup):
            fn()
        torch.cuda.synchronize()
        samples = []
        for _ in range(iters):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            samples.append(start.elapsed_time(stop) * 1e3)
        samples.sort()
        return samples[len(samples) // 2]

    torch_dtypes = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}
    with torch.no_grad():
        for (name, transposed, dims, batch, c, k, spatial, kernel, stride, pad, dil, groups) in args.cases:
            float_cls = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d) if transposed else \
                        (nn.Conv1d, nn.Conv2d, nn.Conv3d)
            ref_cls = (nnqr.ConvTranspose1d, nnqr.ConvTranspose2d, nnqr.ConvTranspose3d) if transposed else \
                      (nnqr.Conv1d, nnqr.Conv2d, nnqr.Conv3d)
            functional = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[dims - 1] if transposed else \
                         (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
            module = float_cls[dims - 1](c, k, kernel, stride=stride, padding=pad, dilation=dil, groups=groups,
                                         bias=True).to(dev).eval()
            x32 = torch.rand(batch, c, *spatial, device=dev) * 2 - 1
            out_spatial = tuple(module(x32).shape[2:])
            flops = flop_count(transposed, batch, c, k, groups, kernel, dims, spatial, out_spatial)
            if transposed:
                kwargs = dict(stride=module.stride, padding=module.padding, output_padding=module.output_padding,
                              groups=groups, dilation=module.dilation)
            else:
                kwargs = dict(stride=module.stride, padding=module.padding, dilation=module.dilation, groups=groups)
            last = {2: ("nhwc", torch.channels_last), 3: ("ndhwc", torch.channels_last_3d)}.get(dims)

            for dt_name in args.dtype_names:
                dt = torch_dtypes[dt_name]
                w, b, x = module.weight.to(dt), module.bias.to(dt), x32.to(dt)
                layouts = [("nchw", x, w)]
                if last is not None:
                    fmt = last[1]
                    layouts.append((last[0], x.contiguous(memory_format=fmt), w.contiguous(memory_format=fmt)))
                for layout, xx, ww in layouts:
                    for tf32 in ((False, True) if dt_name == "f32" else (None,)):
                        if tf32 is not None:
                            set_conv_tf32(torch, tf32)
                        us = cuda_median_us(lambda: functional(xx, ww, b, **kwargs), args.iters)
                        emit(case=name, op="float_conv", dtype=dt_name + ("_tf32" if tf32 else ""), layout=layout,
                             batch=batch, median_us=round(us, 2), tflops=round(flops / us / 1e6, 2))
            set_conv_tf32(torch, tf32_default)

            if not args.no_ref:
                axis = 1 if transposed else 0
                wt = module.weight.detach()
                amax = wt.abs().amax(dim=[d for d in range(wt.dim()) if d != axis]).clamp(min=1e-8)
                qparams = {"qscheme": torch.per_channel_affine, "dtype": torch.qint8, "scale": amax / 127.0,
                           "zero_point": torch.zeros(wt.shape[axis], dtype=torch.int32, device=dev), "axis": axis}
                ref = ref_cls[dims - 1].from_float(module, qparams).to(dev).eval()
                us = cuda_median_us(lambda: ref(x32), args.iters)
                emit(case=name, op="ref_module", dtype="f32", layout="nchw", batch=batch, tf32=tf32_default,
                     median_us=round(us, 2), tflops=round(flops / us / 1e6, 2))
            del module, x32
            torch.cuda.empty_cache()

        if args.fq:
            w = torch.rand(*FQ_SHAPE, device=dev) * 2 - 1
            scale = (w.abs().amax(dim=(1, 2, 3)) / 127.0).clamp(min=1e-8)
            zero_point = torch.zeros(FQ_SHAPE[0], dtype=torch.int32, device=dev)
            moved = w.numel() * 8
            calls = (
                ("quantize_dequantize",
                 lambda: torch.quantize_per_channel(w, scale, zero_point, 0, torch.qint8).dequantize()),
                ("fake_quantize_per_channel_affine",
                 lambda: torch.fake_quantize_per_channel_affine(w, scale, zero_point, 0, -128, 127)),
            )
            for op, fn in calls:
                us = cuda_median_us(fn, args.fq_iters)
                emit(case=FQ_CASE, op=op, dtype="f32", layout="-", median_us=round(us, 2),
                     gbps=round(moved / us / 1e3, 1))
    if sink:
        sink.close()


if __name__ == "__main__":
    main()
