#!/usr/bin/env python3
"""Checks docs/numerics.md §14.2 (the activation quantize and dequantize) against real PyTorch.

    python3 scripts/check_quantize.py        # needs torch and numpy; prints the totals, exits 1 on a mismatch

Compares ``torch.quantize_per_tensor(x, scale, zp, torch.quint8)`` and ``.dequantize()`` with
``int8_reference.quantize_per_tensor`` / ``dequantize`` (the formula qconv's
``QuantizedTensor::quantize`` / ``dequantize`` implement) on exact ties ``(k + 1/2)·f32(scale)``
and their float neighbours, NaN, ±inf, ±1e30, ±3e9, ±0, the smallest subnormal, 2147483520 and
2^31, and random values; scales from 1e-8 to 1e6 and 0; zero points 0, 1, 127, 128, 200, 255;
whole tensors and short ones at every offset (FBGEMM quantizes 8 floats per AVX2 step and the
tail separately: both must follow the formula). Also prints what PyTorch does with bad qparams.
"""

import os
import sys
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from int8_reference import dequantize, quantize_per_tensor  # noqa: E402

warnings.filterwarnings("ignore")
torch.backends.quantized.engine = "fbgemm"
rng = np.random.default_rng(0)
bad = total = 0
specials = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 3e9, -3e9, 0.0, -0.0, 1e-45,
                     2147483520.0, 2147483648.0], dtype=np.float32)
for scale in [0.1, 0.05, 1 / 3, 1e-3, 0.5, 2.0, 1e-8, 1e6, 0.0, 0.007843137718737125]:
    for zp in [0, 1, 127, 128, 200, 255]:
        s32 = np.float32(scale)
        ties = ((np.arange(-300, 300) + 0.5) * np.float64(s32)).astype(np.float32)
        x = np.concatenate([ties, np.nextafter(ties, np.inf), np.nextafter(ties, -np.inf), specials,
                            rng.normal(0, 50, size=301).astype(np.float32)])
        for n in [len(x), 1, 3, 7, 9, 17]:
            for off in (range(8) if n < len(x) else [0]):
                xs = x[off:off + n]
                t = torch.quantize_per_tensor(torch.from_numpy(xs.copy()), scale, zp, torch.quint8)
                got, want = t.int_repr().numpy(), quantize_per_tensor(xs, scale, zp)
                total += len(xs)
                miss = int((got != want).sum())
                bad += miss
                if miss:
                    print("quantize mismatch", scale, zp, n, off, xs[got != want][:5])
                d, dw = t.dequantize().numpy(), dequantize(got, scale, zp)
                if not np.array_equal(d.view(np.uint32), dw.view(np.uint32)):
                    bad += 1
                    print("dequantize mismatch", scale, zp, n, off)
print(f"torch {torch.__version__}: {total} values, {bad} mismatches")
for sc, zp in [(0.1, 256), (0.1, -1), (float("nan"), 0), (float("inf"), 0), (-0.1, 0)]:
    try:
        r = torch.quantize_per_tensor(torch.tensor([1.0, -1.0, 0.5]), sc, zp, torch.quint8)
        print(f"scale {sc}, zp {zp}: accepted, codes {r.int_repr().tolist()}")
    except RuntimeError as e:
        print(f"scale {sc}, zp {zp}: {str(e).splitlines()[0]}")
sys.exit(1 if bad else 0)
