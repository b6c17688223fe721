#!/usr/bin/env python3
"""Generate qconv's int8 (lowered module) fixtures from PyTorch (deterministic, CPU only).

    python scripts/gen_int8_fixtures.py [--out tests/fixtures] [-v]

Writes ``tests/fixtures/int8.safetensors``: one entry group per case ``{case}`` in the model format
of the lowered modules (docs/file-format.md, written by ``export_pytorch.int8_entries``) plus
test data.  Every case has its own generator seeded from crc32 of its name; re-running with the
same versions (PyTorch 2.15.0, numpy 2.4.6, safetensors 0.8.0) and arguments on a CPU with the same
FBGEMM kernels (the ``__cpu_*`` metadata) reproduces the file byte for byte.

Per case, prefix ``"{case}."``
  Model entries: ``weight`` (i8 codes, PyTorch layout), ``weight_scale`` (f64, ``()`` per tensor,
  ``(C,)`` per channel), ``weight_zero_point`` (i64, same shape), ``weight_axis`` (i64 scalar, per
  channel only), ``bias`` (f32, optional), ``scale`` / ``zero_point`` (output qparams, f64 / i64
  scalars), ``input_scale`` / ``input_zero_point`` (f64 / i64 scalars); metadata ``weight_qscheme``,
  ``weight_dtype`` (``torch.qint8``), ``module`` (JSON, ``"type": "QuantizedConv2d"`` ...,
  ``"relu"``).
  Test data: ``input`` (u8 codes, ``(N, C, *spatial)``), ``output`` (u8, the expected codes),
  ``input_float`` (f32) and ``input_q`` (u8, ``torch.quantize_per_tensor(input_float,
  input_scale, input_zero_point, torch.quint8)``); metadata ``check`` and ``note``.

``check``
  ``fbgemm``: ``output`` is what PyTorch's lowered module (engine ``fbgemm``) returned for
  ``input``, and scripts/int8_reference.py agrees bit for bit (asserted here).
  ``oracle``: ``output`` comes from scripts/int8_reference.py (the exact integer oracle plus the
  requantization of docs/numerics.md §14) because PyTorch cannot run the case (per-channel
  transposed weights, padding modes it refuses) or FBGEMM gives other codes for a documented
  reason (16-bit saturation, the per-tensor bias rounding of its depthwise kernels, its broken
  direct transposed path); the note says which and how many codes FBGEMM would differ in.
  qconv must reproduce ``output`` exactly in both cases.

File metadata: ``__cases__`` (JSON list, generation order), ``__format__``, ``__torch_version__``,
``__numpy_version__``, ``__quantized_engine__`` (``fbgemm``), ``__cpu_capability__``
(``torch.backends.cpu.get_cpu_capability()``), ``__cpu_flags__`` (the relevant /proc/cpuinfo
flags), ``__command__`` (this script's command line), ``__golden__`` (JSON: the golden vectors
of docs/numerics.md §14.9, checked here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import warnings
import zlib

import numpy as np

for _msg in (".*quantized tensor creation functions.*", ".*torch.ao.quantization is deprecated.*"):
    warnings.filterwarnings("ignore", message=_msg)

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_pytorch as ep  # noqa: E402
import int8_reference as ir  # noqa: E402

F32 = np.float32
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")


def gen(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return " ".join(fl for fl in CPU_FLAGS if fl in have)
    except OSError:
        pass
    return f"unknown ({platform.machine()})"


# ----------------------------------------------------------------------------- cases

CASES = []


def case(name, dims, cin, cout, k, *, transposed=False, stride=1, padding=0, dilation=1, groups=1,
         output_padding=0, padding_mode="zeros", relu=False, scheme="pc", w="uniform", w_zp=0, bias=True,
         x_shape=None, x_range="full", x_qparams=None, out_qparams=None, x_codes=None, w_scale=None,
         expect=None, note=""):
    """Register a case.

    scheme: "pt" | "pc" (per channel; axis 0 for convs, axis 1 -- out/groups scales -- for
    transposed ones, a qconv extension).  w: "uniform" | "edges" | "small" | "max" | callable(shape,
    rng).  w_zp: int, or "random" (per channel).  bias: True | False | array.  x_range: "full"
    (codes 0..255) | "reduced" (0..127, reduce_range) | "edges" (mostly 0 and 255).  x_qparams:
    (scale, zero_point) or None (derived from the data); out_qparams: (scale, zero_point) or None
    (derived from the exact result, a few codes clamped).  x_codes: callable(shape, rng) giving the
    input codes directly.  expect: None (PyTorch must agree) or the reason FBGEMM may differ:
    "saturation" | "bias-form" | "direct-bug" ("oracle" when it does).
    """
    CASES.append(dict(name=name, dims=dims, cin=cin, cout=cout, k=k, transposed=transposed, stride=stride,
                      padding=padding, dilation=dilation, groups=groups, output_padding=output_padding,
                      padding_mode=padding_mode, relu=relu, scheme=scheme, w=w, w_zp=w_zp, bias=bias,
                      x_shape=x_shape, x_range=x_range, x_qparams=x_qparams, out_qparams=out_qparams,
                      x_codes=x_codes, w_scale=w_scale, expect=expect, note=note))


def type_name(c):
    return ("QuantizedConvTranspose" if c["transposed"] else "QuantizedConv") + f"{c['dims']}d"


def define_cases():
    # --- every module, both weight schemes (x86/fbgemm defaults: per channel for convs,
    #     per tensor for transposed ones), full-range activations where FBGEMM is exact
    case("conv1d_pc", 1, 3, 5, 3, padding=1, x_shape=(2, 3, 11), note="Conv1d, per-channel (x86 default)")
    case("conv1d_pt", 1, 3, 5, 3, stride=2, x_shape=(2, 3, 12), scheme="pt", note="Conv1d, per-tensor")
    case("conv2d_pc", 2, 3, 6, 3, padding=1, x_shape=(2, 3, 6, 5), note="Conv2d, per-channel")
    case("conv2d_pt", 2, 3, 6, (3, 2), stride=(2, 1), padding=(1, 0), x_shape=(1, 3, 7, 6), scheme="pt",
         note="Conv2d, per-tensor, rectangular kernel, stride (2, 1)")
    case("conv3d_pc", 3, 2, 4, (2, 3, 3), padding=(0, 1, 1), x_shape=(1, 2, 3, 5, 4), note="Conv3d, per-channel")
    case("conv3d_pt", 3, 2, 4, 2, stride=2, x_shape=(2, 2, 4, 4, 5), scheme="pt", note="Conv3d, per-tensor, stride 2")
    case("convt1d_pt", 1, 3, 4, 3, transposed=True, stride=2, padding=1, output_padding=1, x_shape=(2, 3, 6),
         scheme="pt", note="ConvTranspose1d, per-tensor, output_padding 1")
    case("convt2d_pt", 2, 3, 5, (3, 2), transposed=True, stride=(2, 1), padding=(1, 0), x_shape=(1, 3, 4, 4),
         scheme="pt", note="ConvTranspose2d, per-tensor")
    case("convt3d_pt", 3, 2, 3, 2, transposed=True, stride=2, x_shape=(1, 2, 2, 3, 3), scheme="pt",
         note="ConvTranspose3d, per-tensor, stride 2")
    # --- fused ReLU (ConvReLU1d/2d/3d): the floor is the output zero point
    case("convrelu1d_pc", 1, 4, 6, 3, padding=2, dilation=2, relu=True, x_shape=(2, 4, 9),
         out_qparams=(0.05, 64), note="ConvReLU1d, per-channel, dilation 2, out zp 64 (ReLU floor 64)")
    case("convrelu2d_pt", 2, 3, 5, 3, padding=1, relu=True, scheme="pt", x_shape=(1, 3, 5, 5),
         out_qparams=(0.04, 128), note="ConvReLU2d, per-tensor, out zp 128")
    case("convrelu3d_pc", 3, 2, 4, 3, padding=1, relu=True, x_shape=(1, 2, 3, 4, 4), out_qparams=(0.03, 0),
         note="ConvReLU3d, per-channel, out zp 0")
    case("convrelu2d_zp255", 2, 3, 4, 3, padding=1, relu=True, x_shape=(1, 3, 5, 5), out_qparams=(0.02, 255),
         note="ConvReLU2d with out zp 255: every code is 255")
    # --- groups and depthwise
    case("conv2d_groups3", 2, 6, 9, 3, padding=1, groups=3, x_shape=(1, 6, 5, 5), note="Conv2d groups 3")
    case("conv1d_groups2_pt", 1, 4, 6, 3, stride=2, groups=2, scheme="pt", x_shape=(2, 4, 10),
         note="Conv1d groups 2, per-tensor")
    case("conv3d_groups2", 3, 4, 4, (1, 3, 3), padding=(0, 1, 1), groups=2, x_shape=(1, 4, 2, 4, 4),
         note="Conv3d groups 2")
    case("convt2d_groups2_pt", 2, 4, 6, 3, transposed=True, stride=2, padding=1, output_padding=1, groups=2,
         scheme="pt", x_shape=(1, 4, 3, 3), note="ConvTranspose2d groups 2, output_padding 1")
    case("convt3d_groups2_dil_pt", 3, 4, 4, 2, transposed=True, stride=(1, 2, 2), dilation=(2, 1, 1), groups=2,
         scheme="pt", x_shape=(1, 4, 2, 3, 2), note="ConvTranspose3d groups 2, dilation (2, 1, 1)")
    case("dw2d_c6_full", 2, 6, 6, 3, padding=1, groups=6, x_shape=(1, 6, 5, 5), x_range="edges", w="max",
         note="depthwise, 6 channels (not a multiple of 8: FBGEMM's GEMM path, exact), full-range codes")
    case("dw2d_c8_reduced", 2, 8, 8, 3, padding=1, groups=8, x_shape=(2, 8, 5, 6), x_range="reduced",
         note="depthwise 8 channels 3x3 pad 1 (FBGEMM depthwise kernel), reduced-range activations: exact")
    case("dw2d_c16_mult2_reduced", 2, 16, 32, 3, stride=2, padding=1, groups=16, x_shape=(1, 16, 6, 6),
         x_range="reduced", note="depthwise kernel with channel multiplier 2, stride 2, reduced range")
    case("dw2d_c8_5x5_relu_reduced", 2, 8, 8, 5, padding=2, groups=8, relu=True, x_shape=(1, 8, 6, 6),
         x_range="reduced", note="depthwise 5x5 + ReLU, reduced range")
    case("dw3d_c16_reduced", 3, 16, 16, 3, padding=1, groups=16, x_shape=(1, 16, 3, 4, 4), x_range="reduced",
         note="3-d depthwise kernel, reduced range")
    case("dw2d_c8_dil2_full", 2, 8, 8, 3, padding=2, dilation=2, groups=8, x_shape=(1, 8, 6, 6), x_range="edges",
         w="max", note="depthwise 8 channels with dilation 2: not FBGEMM's depthwise kernel (GEMM path), exact "
                       "with full-range codes")
    case("dw2d_c8_full_saturates", 2, 8, 8, 3, padding=1, groups=8, x_shape=(1, 8, 5, 5), x_range="edges", w="max",
         expect="saturation", note="depthwise kernel with full-range codes: FBGEMM saturates 16-bit pair sums")
    case("dw3d_c8_full_saturates", 3, 8, 8, 3, padding=1, groups=8, x_shape=(1, 8, 3, 4, 4), x_range="full",
         w="max", scheme="pt", expect="saturation", note="3-d depthwise kernel, full-range codes, per-tensor")
    case("dw2d_c8_zp200_saturates", 2, 8, 8, 3, padding=1, groups=8, x_shape=(1, 8, 4, 4),
         x_codes=lambda s, g: g.integers(0, 128, s), x_qparams=(0.02, 200), w="max", expect="saturation",
         note="codes <= 127 but zero point 200: the depthwise kernel reads padded taps as code 200 and saturates")
    case("groupwise2d_cpg4", 2, 32, 32, 3, padding=1, groups=8, x_shape=(1, 32, 4, 4), x_range="full",
         note="FBGEMM's groupwise kernel (4 channels per group, 3x3, pad 1), full range: exact")
    case("pointwise2d", 2, 6, 7, 1, x_shape=(2, 6, 4, 3), note="1x1 (FBGEMM pointwise path)")
    case("pointwise3d_pt", 3, 5, 3, 1, scheme="pt", x_shape=(1, 5, 2, 3, 3), note="1x1x1 per-tensor")
    # --- stride, dilation, padding
    case("conv2d_stride_dil_pad", 2, 3, 4, 3, stride=(2, 3), padding=(2, 1), dilation=(1, 2), x_shape=(1, 3, 9, 10),
         note="stride (2, 3), padding (2, 1), dilation (1, 2)")
    case("conv3d_dil2", 3, 2, 3, 2, dilation=2, padding=1, x_shape=(1, 2, 4, 4, 4), note="Conv3d dilation 2")
    case("convt1d_dil2_op", 1, 3, 2, 3, transposed=True, stride=3, padding=2, dilation=2, output_padding=2,
         scheme="pt", x_shape=(1, 3, 5), note="ConvTranspose1d stride 3 dilation 2 output_padding 2")
    case("convt2d_big_pad_pt", 2, 2, 3, 3, transposed=True, stride=2, padding=2, scheme="pt", x_shape=(1, 2, 4, 4),
         note="ConvTranspose2d padding 2 (crops the full output)")
    case("convt2d_direct_n1", 2, 8, 8, (2, 2), transposed=True, stride=(1, 2), scheme="pt", x_shape=(1, 8, 3, 4),
         x_range="reduced", note="FBGEMM's direct transposed kernel (8|C, kernel 2x2, no padding), batch 1, "
                                 "row stride 1, reduced range: exact")
    case("convt2d_direct_bug", 2, 8, 8, (2, 2), transposed=True, stride=2, scheme="pt", x_shape=(2, 8, 3, 4),
         x_range="reduced", expect="direct-bug",
         note="FBGEMM's direct transposed kernel with batch 2 and row stride 2: wrong in PyTorch 2.15")
    # --- padding modes (forward convs): zeros everywhere, reflect where PyTorch has it
    case("conv1d_reflect", 1, 2, 3, 3, padding=2, padding_mode="reflect", x_shape=(1, 2, 7),
         note="Conv1d reflect (PyTorch: F.pad then conv)")
    case("conv2d_reflect", 2, 3, 4, 3, padding=(1, 2), padding_mode="reflect", x_shape=(2, 3, 5, 6),
         note="Conv2d reflect")
    case("convrelu2d_reflect", 2, 3, 4, 3, padding=1, padding_mode="reflect", relu=True, x_shape=(1, 3, 4, 4),
         note="ConvReLU2d reflect")
    case("conv3d_reflect", 3, 2, 3, 3, padding=1, padding_mode="reflect", x_shape=(1, 2, 3, 4, 4),
         note="Conv3d reflect: PyTorch refuses ('Conv3d does not support reflection padding'); qconv extension")
    for dims, xs in ((1, (1, 2, 7)), (2, (1, 2, 5, 4)), (3, (1, 2, 3, 4, 3))):
        for mode in ("replicate", "circular"):
            case(f"conv{dims}d_{mode}", dims, 2, 3, 3, padding=1 if dims == 3 else 2, padding_mode=mode, x_shape=xs,
                 scheme="pc" if dims != 2 else "pt",
                 note=f"Conv{dims}d {mode}: PyTorch's lowered modules refuse it ('padding_mode' {mode} is not "
                      "supported by quantized convolution); qconv extension")
    # --- per-channel transposed weights (axis 1, out/groups scales): qconv extension
    case("convt1d_pc_axis1", 1, 3, 4, 3, transposed=True, stride=2, x_shape=(1, 3, 5),
         note="ConvTranspose1d per-channel axis 1: PyTorch refuses ('Per Channel Quantization is currently disabled "
              "for transposed conv'); qconv extension")
    case("convt2d_pc_axis1_groups2", 2, 4, 6, 3, transposed=True, stride=2, padding=1, groups=2, x_shape=(1, 4, 3, 3),
         w_zp="random", note="ConvTranspose2d per-channel axis 1, groups 2: output channel o uses scale o mod 3")
    case("convt3d_pc_axis1", 3, 2, 3, 2, transposed=True, stride=2, x_shape=(1, 2, 2, 2, 3),
         note="ConvTranspose3d per-channel axis 1")
    # --- zero points and codes at the edges
    case("conv2d_xzp0_edges", 2, 3, 4, 3, padding=1, x_shape=(1, 3, 5, 5), x_range="edges", x_qparams=(0.03, 0),
         w="edges", note="input zp 0, codes 0/255, weight codes -128/127")
    case("conv2d_xzp255", 2, 3, 4, 3, padding=1, x_shape=(1, 3, 5, 5), x_qparams=(0.03, 255), w="edges",
         note="input zp 255 (zero padding contributes nothing)")
    case("convt2d_xzp255_pt", 2, 3, 2, 3, transposed=True, stride=2, padding=1, scheme="pt", x_shape=(1, 3, 3, 3),
         x_qparams=(0.02, 255), note="transposed, input zp 255")
    case("conv2d_outzp0", 2, 3, 4, 3, x_shape=(1, 3, 5, 5), out_qparams=(0.05, 0), note="output zp 0 (negatives clamp)")
    case("conv2d_outzp255", 2, 3, 4, 3, x_shape=(1, 3, 5, 5), out_qparams=(0.05, 255),
         note="output zp 255 (positives clamp)")
    case("conv2d_wzp_pt", 2, 3, 4, 3, padding=1, scheme="pt", w_zp=-37, x_shape=(1, 3, 5, 5),
         note="per-tensor weight zp -37 (row offsets)")
    case("conv2d_wzp_pc", 2, 3, 5, 3, padding=1, w_zp="random", x_shape=(1, 3, 5, 5), x_qparams=(0.02, 17),
         note="per-channel weight zps in [-128, 127]")
    case("conv1d_wzp_edges_pt", 1, 3, 3, 3, scheme="pt", w_zp=127, w="edges", x_shape=(1, 3, 8),
         note="per-tensor weight zp 127 with codes -128/127")
    # --- bias
    case("conv2d_nobias_pc", 2, 3, 4, 3, bias=False, x_shape=(1, 3, 5, 5), note="no bias, per-channel")
    case("convt2d_nobias_pt", 2, 3, 4, 2, transposed=True, stride=2, bias=False, scheme="pt", x_shape=(1, 3, 3, 3),
         note="no bias, transposed")
    case("conv2d_bigbias_pt", 2, 3, 4, 3, bias="big", scheme="pt", x_shape=(1, 3, 5, 5),
         note="bias large against acc*atws (many codes clamp)")
    # --- scales
    case("conv2d_f64_scales", 2, 3, 4, 3, padding=1, x_shape=(1, 3, 5, 5), x_qparams=(0.012345678901234, 3),
         w_scale=lambda n, g: np.array([1 / 30, 1 / 70, 1 / 90, 1 / 110])[:n], out_qparams=(0.0987654321987, 128),
         note="f64 scales that are not float32 values: every scale is rounded to f32 first")
    case("conv2d_tiny_scales", 2, 3, 4, 3, x_shape=(1, 3, 5, 5), x_qparams=(3e-8, 100),
         w_scale=lambda n, g: 10 ** g.uniform(-9, -8, n), note="tiny input and weight scales")
    case("conv2d_huge_scales_pt", 2, 3, 4, 3, x_shape=(1, 3, 5, 5), scheme="pt", x_qparams=(4000.0, 100),
         w_scale=lambda n, g: np.array([2000.0]), note="huge scales, per-tensor")
    # --- odd qparams PyTorch accepts (docs/numerics.md §14.7: qconv reproduces them)
    case("odd_negative_out_scale", 2, 3, 4, 3, x_shape=(1, 3, 5, 5), out_qparams=(-0.05, 128),
         note="negative output scale: codes mirror around the zero point")
    case("odd_tiny_out_scale_overflow", 2, 3, 4, 3, x_shape=(1, 3, 5, 5), out_qparams=(1e-12, 128),
         note="output scale 1e-12: v*mult overflows int32, cvtps2dq gives INT32_MIN, every code is 0 "
              "(positives too, not 255)")
    case("odd_tiny_out_scale_relu", 2, 3, 4, 3, x_shape=(1, 3, 5, 5), relu=True, out_qparams=(1e-12, 77),
         note="the same with ReLU: every code is the zero point 77")
    case("odd_zero_out_scale", 2, 3, 4, 3, scheme="pt", x_shape=(1, 3, 5, 5), out_qparams=(0.0, 10),
         note="output scale 0: multiplier +inf; v*inf and 0*inf give INT32_MIN -> 0")
    case("odd_zero_weight_scale_pc", 2, 3, 4, 3, x_shape=(1, 3, 5, 5), bias=True,
         w_scale=lambda n, g: np.array([0.0, 0.01, 0.02, 0.0])[:n],
         note="per-channel weight scale 0 on channels 0 and 3: bias/0 = inf, 0*inf = NaN -> code 0")
    # --- golden vectors (docs/numerics.md §14.9): small Conv1d 1x1 cases with chosen accumulators
    tie_acc = np.array([5, 7, -5, -7, 3, 1, -1, 0])
    case("golden_requant_ties", 1, 1, 1, 1, scheme="pt", bias=False, x_shape=(1, 1, 8),
         x_codes=lambda s, g: (100 + tie_acc).reshape(s), x_qparams=(0.5, 100), w=lambda s, g: np.ones(s),
         w_scale=lambda n, g: np.array([0.5]), out_qparams=(0.5, 100),
         note="acc = [5, 7, -5, -7, 3, 1, -1, 0], atws 0.25, mult 0.5: v*mult = acc/2 rounds half to even")
    case("golden_relu_floor", 1, 1, 1, 1, scheme="pt", bias=False, relu=True, x_shape=(1, 1, 8),
         x_codes=lambda s, g: (100 + tie_acc * 12).reshape(s), x_qparams=(0.5, 100), w=lambda s, g: np.ones(s),
         w_scale=lambda n, g: np.array([0.5]), out_qparams=(0.5, 77),
         note="ReLU: codes below the zero point 77 become 77")
    case("golden_bias_form_fused", 1, 1, 1, 1, scheme="pt", bias="distinguish", x_shape=(1, 1, 8),
         x_codes=lambda s, g: (100 + np.array([3, -2, 5, 1, -7, 2, 9, -4])).reshape(s), x_qparams=(0.0123, 100),
         w=lambda s, g: np.ones(s), w_scale=lambda n, g: np.array([0.00731]), out_qparams="atws",
         note="per-tensor bias where fma(bias, 1/atws, acc) and the rounded product differ: PyTorch (GEMM "
              "kernels) = fused")
    case("golden_bias_form_depthwise", 2, 8, 8, 3, padding=1, groups=8, scheme="pt", bias="distinguish",
         x_shape=(1, 8, 4, 4), x_codes=lambda s, g: g.integers(4, 7, s), x_qparams=(0.0123, 5),
         w=lambda s, g: g.integers(-2, 3, s), w_scale=lambda n, g: np.array([0.00731]), out_qparams="atws",
         expect="bias-form", note="the same in FBGEMM's depthwise kernel, which rounds bias*(1/atws) first; qconv "
                                  "keeps the fused form")
    case("golden_bias_per_channel_divide", 1, 1, 2, 1, bias="distinguish-pc", x_shape=(1, 1, 8),
         x_codes=lambda s, g: (100 + np.array([3, -2, 5, 1, -7, 2, 9, -4])).reshape(s), x_qparams=(0.0123, 100),
         w=lambda s, g: np.ones(s), w_scale=lambda n, g: np.array([0.00731, 0.00731]), out_qparams="atws",
         note="per-channel bias: f32(acc + f32(bias / atws)) (divide, two roundings), not the fused form")
    case("golden_saturation", 2, 8, 8, 3, padding=1, groups=8, scheme="pt", bias=False, x_shape=(1, 8, 3, 3),
         x_codes=lambda s, g: np.full(s, 255), x_qparams=(0.01, 0), w=lambda s, g: np.full(s, 127),
         w_scale=lambda n, g: np.array([0.001]), out_qparams=(0.015, 0), expect="saturation",
         note="all codes 255, weights 127: exact acc at the centre 9*255*127 = 291465; FBGEMM's pair sums "
              "saturate at 32767")


# ----------------------------------------------------------------------------- building a case

def weight_codes(c, shape, g):
    w = c["w"]
    if callable(w):
        return np.asarray(w(shape, g)).astype(np.int8)
    if w == "uniform":
        return g.integers(-128, 128, shape).astype(np.int8)
    if w == "edges":
        return g.choice(np.array([-128, 127, -127, 126, 0, 1, -1], dtype=np.int8), shape)
    if w == "max":       # large same-sign codes: the worst case for 16-bit pair sums
        return g.choice(np.array([127, 126, 120, -128, -127], dtype=np.int8), shape, p=[0.4, 0.2, 0.2, 0.1, 0.1])
    if w == "small":
        return g.integers(-3, 4, shape).astype(np.int8)
    raise ValueError(w)


def build(c):
    g = gen(c["name"])
    dims, tr, G = c["dims"], c["transposed"], c["groups"]
    k = ir._tup(c["k"], dims)
    cin, cout = c["cin"], c["cout"]
    wshape = (cin, cout // G) + k if tr else (cout, cin // G) + k
    wq = weight_codes(c, wshape, g)
    per_channel = c["scheme"] == "pc"
    n_sc = (cout // G if tr else cout) if per_channel else 1
    if c["w_scale"] is not None:
        ws = np.asarray(c["w_scale"](n_sc, g), dtype=np.float64)
    else:
        ws = np.float32(10 ** g.uniform(-2.5, -1.5, n_sc)).astype(np.float64)   # observer-like f32 values
    if c["w_zp"] == "random":
        wz = g.integers(-128, 128, n_sc).astype(np.int64)
    else:
        wz = np.full(n_sc, int(c["w_zp"]), dtype=np.int64)
    axis = (1 if tr else 0) if per_channel else None

    # input: float values -> quantize_per_tensor (input_q); `input` = input_q unless x_codes is given
    xs = c["x_shape"]
    if c["x_range"] == "reduced":
        lo, hi = -1.0, 3.0
        x_float = g.uniform(lo * 1.1, hi * 1.1, xs).astype(F32)
        x_scale = float(F32((hi - lo) / 127))
        x_zp = int(round(-lo / x_scale))
    elif c["x_range"] == "edges":
        x_scale, x_zp = 0.03, 128
        x_float = (g.choice(np.array([-1e3, 1e3, 0.0, 0.5, -0.5]), xs, p=[0.35, 0.35, 0.1, 0.1, 0.1])).astype(F32)
    else:
        x_scale, x_zp = 0.021, 90
        x_float = (g.standard_normal(xs) * 2.0).astype(F32)
    if c["x_qparams"] is not None:
        x_scale, x_zp = c["x_qparams"]
        if c["x_range"] == "full":
            x_float = ((g.integers(0, 256, xs) - x_zp) * x_scale + g.uniform(-0.6, 0.6, xs) * x_scale).astype(F32)
    # exact ties (k + 1/2)*s in a few places: the activation quantize rounds them half to even
    flat = x_float.reshape(-1)
    nt = min(6, flat.size)
    flat[:nt] = ((np.arange(nt) - 2 + 0.5) * x_scale).astype(F32)
    x_float = flat.reshape(xs)
    xq_t = torch.quantize_per_tensor(torch.from_numpy(x_float), float(x_scale), int(x_zp), torch.quint8)
    input_q = xq_t.int_repr().numpy()
    assert np.array_equal(input_q, ir.quantize_per_tensor(x_float, x_scale, x_zp)), c["name"]
    if c["x_codes"] is not None:
        x = np.asarray(c["x_codes"](xs, g)).astype(np.uint8)
    else:
        x = input_q.copy()

    hp = dict(stride=ir._tup(c["stride"], dims), padding=ir._tup(c["padding"], dims),
              dilation=ir._tup(c["dilation"], dims), groups=G, transposed=tr,
              output_padding=ir._tup(c["output_padding"], dims), padding_mode=c["padding_mode"])
    s_o, z_o = ir.channel_params(ws if per_channel else ws[0], wz if per_channel else wz[0], cout, G, tr)
    acc = ir.int_conv(x, x_zp, wq, z_o, **{k_: v for k_, v in hp.items() if k_ != "transposed"}, transposed=tr)

    # bias
    exact = acc * float(x_scale) * s_o.reshape((1, -1) + (1,) * dims)
    spread = float(np.abs(exact).max()) or 1.0
    if isinstance(c["bias"], np.ndarray):
        bias = c["bias"].astype(F32)
    elif c["bias"] is True:
        bias = (g.standard_normal(cout) * spread * 0.2).astype(F32)
    elif c["bias"] == "big":
        bias = (g.standard_normal(cout) * spread * 3).astype(F32)
    elif c["bias"] in ("distinguish", "distinguish-pc"):
        bias = None       # set below, once atws is known
    else:
        bias = None

    # output qparams
    if c["out_qparams"] == "atws":
        at0, _ = ir.requant_params(x_scale, s_o[:1], 1.0)
        out_scale, out_zp = float(at0[0]), 128
    elif c["out_qparams"] is not None:
        out_scale, out_zp = c["out_qparams"]
    else:
        real = exact + (0 if bias is None else bias.astype(np.float64).reshape((1, -1) + (1,) * dims))
        lo, hi = min(float(real.min()), 0.0), max(float(real.max()), 0.0)
        out_scale = float(F32(max((hi - lo) / 255 * 0.85, 1e-30)))
        out_zp = int(np.clip(round(-lo / out_scale * 0.85 + 255 * 0.075), 0, 255))
    atws, mult = ir.requant_params(x_scale, s_o, out_scale)
    if c["bias"] in ("distinguish", "distinguish-pc"):
        forms = ("divide", "fused") if c["bias"] == "distinguish-pc" else ("fused", "rounded")
        bias = np.zeros(cout, F32)
        for o in range(cout):
            if mult[o] == F32(1):
                b = ir.find_distinguishing_bias(acc[:, o], atws[o], *forms)
                assert b is not None, c["name"]
                bias[o] = b

    out = ir.requantize(acc, atws, mult, bias, out_zp, c["relu"], per_channel, "fused")

    # PyTorch, where it can run the case
    check, note, ref = "oracle", c["note"], None
    cfg = dict(dims=dims, transposed=tr, groups=G, stride=hp["stride"], padding=hp["padding"],
               dilation=hp["dilation"], output_padding=hp["output_padding"], padding_mode=c["padding_mode"],
               relu=c["relu"], x_scale=x_scale, x_zp=x_zp, w_scale=ws if per_channel else float(ws[0]),
               w_zp=wz if per_channel else int(wz[0]), out_scale=out_scale, out_zp=out_zp)
    torch_ok = not (tr and per_channel) and (c["padding_mode"] in ("zeros", "reflect")) and \
        not (dims == 3 and c["padding_mode"] == "reflect")
    if torch_ok:
        ref = ir.torch_qconv(torch, cfg, x, wq, bias)
        nbad = int((ref != out).sum())
        if nbad == 0:
            check = "fbgemm"
            if c["expect"] is not None:
                note += f" (FBGEMM agrees here although the case is in the '{c['expect']}' class)"
        elif c["expect"] is None:
            raise AssertionError(f"{c['name']}: PyTorch differs from the reference in {nbad} codes")
        else:
            err = int(np.abs(ref.astype(int) - out.astype(int)).max())
            if c["expect"] == "bias-form":
                alt = ir.requantize(acc, atws, mult, bias, out_zp, c["relu"], per_channel, "rounded")
                assert np.array_equal(alt, ref), c["name"]
            note += f"; FBGEMM (PyTorch {torch.__version__}) differs in {nbad}/{out.size} codes, max |diff| {err}"
    elif c["expect"] is not None:
        raise AssertionError(f"{c['name']}: expect={c['expect']} needs a case PyTorch can run")

    tname = type_name(c)
    t, meta = ep.int8_entries(
        c["name"] + ".", type_name=tname, in_channels=cin, out_channels=cout, kernel_size=k, stride=hp["stride"],
        padding=hp["padding"], dilation=hp["dilation"], groups=G, padding_mode=c["padding_mode"],
        output_padding=hp["output_padding"] if tr else None, relu=c["relu"], weight=torch.from_numpy(wq),
        weight_scale=ws if per_channel else float(ws[0]), weight_zero_point=wz if per_channel else int(wz[0]),
        weight_axis=axis, bias=None if bias is None else torch.from_numpy(bias), scale=out_scale,
        zero_point=out_zp, input_scale=x_scale, input_zero_point=x_zp)
    p = c["name"] + "."
    t[p + "input"] = torch.from_numpy(x.copy())
    t[p + "output"] = torch.from_numpy(out.copy())
    t[p + "input_float"] = torch.from_numpy(x_float.copy())
    t[p + "input_q"] = torch.from_numpy(input_q.copy())
    meta[p + "check"] = check
    meta[p + "note"] = note
    info = dict(check=check, torch_out=ref, acc=acc, out=out, atws=atws, mult=mult, bias=bias, x=x, w=wq, x_scale=x_scale,
                out_scale=out_scale, out_zp=out_zp, tname=tname, per_channel=per_channel)
    return t, meta, info


# ----------------------------------------------------------------------------- golden vectors

def golden(infos):
    """The values docs/numerics.md §14.9 quotes, recomputed and checked."""
    gv = {}
    i = infos["golden_requant_ties"]
    assert i["acc"].reshape(-1).tolist() == [5, 7, -5, -7, 3, 1, -1, 0]
    assert i["out"].reshape(-1).tolist() == [102, 104, 98, 96, 102, 100, 100, 100], i["out"]
    gv["golden_requant_ties"] = dict(acc=i["acc"].reshape(-1).tolist(), out=i["out"].reshape(-1).tolist())
    i = infos["golden_relu_floor"]
    gv["golden_relu_floor"] = dict(acc=i["acc"].reshape(-1).tolist(), out=i["out"].reshape(-1).tolist())
    assert min(gv["golden_relu_floor"]["out"]) == 77
    for name in ("golden_bias_form_fused", "golden_bias_per_channel_divide"):
        i = infos[name]
        acc = i["acc"].reshape(i["acc"].shape[1], -1)
        o = 0
        b = F32(i["bias"][o])
        at = F32(i["atws"][o])
        pos = None
        forms = ("divide", "fused") if name.endswith("divide") else ("fused", "rounded")
        for p_ in range(acc.shape[1]):
            a = F32(acc[o, p_])
            va = ir.bias_add(a, b, at, forms[0])
            vb = ir.bias_add(a, b, at, forms[1])
            if ir.cvtps_epi32(va) != ir.cvtps_epi32(vb):
                pos = p_
                break
        assert pos is not None, name
        a = F32(acc[o, pos])
        row = dict(acc=int(acc[o, pos]), bias=float(b), bias_bits=f"0x{np.asarray(b).view(np.uint32):08x}",
                   atws=float(at), atws_bits=f"0x{np.asarray(at).view(np.uint32):08x}",
                   rcp=float(F32(1) / at), out_zp=i["out_zp"], mult=float(i["mult"][o]))
        for f in ("fused", "rounded", "divide"):
            v = ir.bias_add(a, b, at, f)
            row[f"v_{f}"] = float(v)
            row[f"code_{f}"] = int(ir.cvtps_epi32(v)) + i["out_zp"]
        row["code_torch"] = int(i["out"].reshape(i["out"].shape[1], -1)[o, pos])
        gv[name] = row
    i = infos["golden_saturation"]
    gv["golden_saturation"] = dict(acc_center=int(i["acc"][0, 0, 1, 1]), out_center=int(i["out"][0, 0, 1, 1]),
                                   out_center_fbgemm=int(i["torch_out"][0, 0, 1, 1]),
                                   acc_corner=int(i["acc"][0, 0, 0, 0]), out_corner=int(i["out"][0, 0, 0, 0]),
                                   out_corner_fbgemm=int(i["torch_out"][0, 0, 0, 0]))
    assert gv["golden_saturation"]["acc_center"] == 9 * 255 * 127
    i = infos["odd_tiny_out_scale_overflow"]
    assert int(i["out"].max()) == 0
    return gv


# ----------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                                  "fixtures"))
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    torch.backends.quantized.engine = "fbgemm"
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    define_cases()
    names = [c["name"] for c in CASES]
    assert len(set(names)) == len(names)
    tensors, meta, infos = {}, {}, {}
    for c in CASES:
        t, m, info = build(c)
        tensors.update(t)
        meta.update(m)
        infos[c["name"]] = info
        if a.verbose:
            print(f"  {c['name']:<32} {info['tname']:<26} {info['check']:<7} {m[c['name'] + '.note']}")
    gv = golden(infos)
    meta["__cases__"] = json.dumps(names)
    meta["__format__"] = ep.FORMAT_VERSION
    meta["__torch_version__"] = torch.__version__
    meta["__numpy_version__"] = np.__version__
    meta["__quantized_engine__"] = torch.backends.quantized.engine
    meta["__cpu_capability__"] = torch.backends.cpu.get_cpu_capability()
    meta["__cpu_flags__"] = cpu_flags()
    meta["__command__"] = shlex.join(["python3", "scripts/gen_int8_fixtures.py"] + list(sys.argv[1:] if argv is None
                                                                                         else argv))
    meta["__golden__"] = json.dumps(gv, sort_keys=True)
    path = os.path.join(a.out, "int8.safetensors")
    ep.save(tensors, meta, path)
    os.chmod(path, 0o644)
    back = load_file(path)
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)
    with safe_open(path, "pt") as f:
        md = f.metadata()
    counts = {}
    for c in CASES:
        key = (infos[c["name"]]["tname"], "per-channel" if infos[c["name"]]["per_channel"] else "per-tensor",
               md[c["name"] + ".check"])
        counts[key] = counts.get(key, 0) + 1
    print(f"{os.path.relpath(path)}: {os.path.getsize(path)} bytes, {len(CASES)} cases, {len(back)} tensors; "
          f"torch {torch.__version__}, engine fbgemm, {meta['__cpu_capability__']} ({meta['__cpu_flags__']})")
    for key in sorted(counts):
        print(f"  {key[0]:<26} {key[1]:<12} {key[2]:<7} {counts[key]}")
    n_fb = sum(1 for c in CASES if md[c["name"] + ".check"] == "fbgemm")
    print(f"  fbgemm-checked {n_fb}, oracle {len(CASES) - n_fb}; every fbgemm case equals int8_reference.py; "
          f"{len(gv)} golden vectors ok")


if __name__ == "__main__":
    main()
