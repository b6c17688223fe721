#!/usr/bin/env python3
"""Generate qconv's committed test fixtures from PyTorch (deterministic, CPU only).

Generated with PyTorch 2.15.0 (CPU, x86-64, quantized engine x86/FBGEMM, AVX2+ path),
safetensors 0.8.0, numpy 2.4.6, Python 3.11.  Re-running with the same versions reproduces the files
byte for byte (every case has its own generator seeded from crc32 of its name).

    python scripts/gen_fixtures.py [--out tests/fixtures] [--no-check]

Files
-----
``tests/fixtures/modules.safetensors`` -- one entry group per module case ``{case}``:

  Model-format entries of ``scripts/export_pytorch.py`` with prefix ``"{case}."``:
    ``{case}.weight`` f32, ``{case}.bias`` f32 (optional), ``{case}.weight_scale`` (f32|f64,
    shape ()|(1,)|(C,)), ``{case}.weight_zero_point`` (i32|i64|f32), ``{case}.weight_axis``
    (i32|i64 scalar); metadata ``{case}.weight_qscheme``, ``{case}.weight_dtype``,
    ``{case}.module`` (JSON), ``{case}.is_decomposed``, optional ``{case}.weight_quant_min`` /
    ``{case}.weight_quant_max``.
  Test data:
    ``{case}.input``      f32, batched ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``
    ``{case}.output``     f32, the expected output (see below)
    ``{case}.weight_fq``  f32, ``module.get_weight()`` of the PyTorch reference module (bit exact)
    ``{case}.weight_q``   i32, integer codes of ``module.get_quantized_weight()`` in the weight's
                          shape (``int_repr()``; quint4x2 unpacked to one code per element;
                          decomposed path: the plain integer tensor).  Absent for qscheme None
                          and for dtype float16.
    metadata ``{case}.forward`` JSON ``{"output_size": [..] | null, "note": "..."}``;
    ``output_size`` is passed to ``ConvTransposeNd.forward`` (it may include the leading
    batch/channel dims, as PyTorch allows).
  File metadata: ``__torch_version__``, ``__format__`` (``qconv-modules-v1``),
  ``__cases__`` (JSON list of case names, in generation order).

``tests/fixtures/observers.safetensors`` -- per observer case ``{name}``:
    ``obs.{name}.x``           f32 input fed once to the observer
    ``obs.{name}.scale``       as returned by ``calculate_qparams()`` (f32, shape (1,) or (C,))
    ``obs.{name}.zero_point``  as returned (i64 or i32; f32 for float_qparams)
    metadata ``obs.{name}.config`` JSON ``{"observer": "MinMaxObserver"|"PerChannelMinMaxObserver",
    "qscheme": "torch.per_tensor_affine"|..., "dtype": "torch.qint8"|..., "ch_axis": int|null,
    "quant_min": int|null, "quant_max": int|null, "reduce_range": bool}`` (quant_min/max as passed
    to the constructor; null = dtype default).  File metadata ``__torch_version__``,
    ``__cases__`` (JSON list of names).

``tests/fixtures/export_demo.safetensors`` -- ``export_pytorch.py --demo`` output (a real
``convert_to_reference_fx`` model, prefixes such as ``"conv1.0."``); format check only.

Expected outputs
----------------
``output`` is computed in float64: a *float* ``nn.ConvNd`` / ``nn.ConvTransposeNd`` with the
same hyper-parameters (including ``padding_mode``) is converted to double, its weight set to
``get_weight().double()`` and its bias to ``bias.double()``, and run on ``input.double()``
(with ``output_size=`` for transposed cases that have one); the result is rounded to f32.
This is what a *correct* reference module computes.  It differs from PyTorch's reference
module in two places where that module is buggy (docs/numerics.md §6, §7):
  * padding_mode reflect/replicate/circular: the reference ignores it (pads with zeros); the
    fixtures honour it;
  * ConvTranspose ``forward(x, output_size=...)``: the reference raises; the fixtures use the
    float module's output-size rule (dilation included).
For all other cases the script checks that the f32 reference forward agrees with the f64
output to a tight tolerance.  Compare Rust outputs against ``output`` with a tolerance of a few
f32 ulps of ``sum |x||w|`` (the f32 conv rounding), while ``weight_fq`` must match bit for bit.

The script also re-derives ``weight_fq``/``weight_q`` with an independent numpy model of
docs/numerics.md §4 and fails if anything differs (skip with ``--no-check``).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import warnings
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F  # noqa: F401

for _msg in (".*quantized tensor creation functions.*", ".*torch.ao.quantization is deprecated.*",
             ".*reduce_range will be deprecated.*", ".*Please use quant_min and quant_max.*",
             ".*padding='same' with even kernel.*"):
    warnings.filterwarnings("ignore", message=_msg)

import torch.ao.quantization.fx._decomposed  # noqa: F401,E402  (registers quantized_decomposed ops)
import torch.ao.nn.quantized.reference as nnqr  # noqa: E402
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver  # noqa: E402
from torch.ao.quantization.utils import get_qparam_dict  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from safetensors import safe_open  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_pytorch as ep  # noqa: E402

torch.backends.quantized.engine = "x86" if "x86" in torch.backends.quantized.supported_engines else torch.backends.quantized.engine

PTA = torch.per_tensor_affine
PCA = torch.per_channel_affine
PCFQ = torch.per_channel_affine_float_qparams
QRANGE = {torch.quint8: (0, 255), torch.qint8: (-128, 127), torch.qint32: (-(2 ** 31), 2 ** 31 - 1),
          torch.quint4x2: (0, 15)}


def f32_from_bits(b: int) -> float:
    return struct.unpack("<f", struct.pack("<I", b))[0]


def gen(name: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(name.encode()))


# ----------------------------------------------------------------------------- qparams helpers

def pt(dtype, scale, zp, scale_dtype=torch.float32, zp_dtype=torch.int32, shape=(1,), **extra):
    s = torch.tensor(scale, dtype=scale_dtype).reshape(shape)
    z = torch.tensor(zp, dtype=zp_dtype).reshape(shape)
    return dict(qscheme=PTA, dtype=dtype, scale=s, zero_point=z, **extra)


def pc(dtype, scales, zps, axis=0, scale_dtype=torch.float32, zp_dtype=torch.int64, qscheme=PCA, **extra):
    return dict(qscheme=qscheme, dtype=dtype, scale=torch.tensor(scales, dtype=scale_dtype),
                zero_point=torch.tensor(zps, dtype=zp_dtype), axis=axis, **extra)


def obs(kind: str, dtype=torch.qint8, axis=0, **kw):
    """qparams callable: run an observer on the weight and convert with get_qparam_dict.

    kind: pt_sym | pt_aff | pc_sym | pc_aff | pc_fq
    """
    def f(w):
        if kind.startswith("pt"):
            o = MinMaxObserver(dtype=dtype, qscheme=torch.per_tensor_symmetric if kind == "pt_sym"
                               else torch.per_tensor_affine, **kw)
        else:
            qs = {"pc_sym": torch.per_channel_symmetric, "pc_aff": torch.per_channel_affine,
                  "pc_fq": PCFQ}[kind]
            o = PerChannelMinMaxObserver(ch_axis=axis, dtype=dtype, qscheme=qs, **kw)
        o(w)
        return get_qparam_dict(o)
    f.desc = f"{kind} {dtype}" + ("" if kind.startswith("pt") else f" axis={axis}")
    return f


# ----------------------------------------------------------------------------- numpy model (§4)

def np_fake_quant(w: np.ndarray, qp: dict, decomposed: bool):
    """Independent model of get_weight()/get_quantized_weight(); returns (w_hat f32, q int64|None)."""
    qscheme, dtype = qp.get("qscheme"), qp["dtype"]
    if qscheme is None:
        return w.copy(), None
    f32 = np.float32
    if not decomposed and dtype == torch.float16:
        return w.astype(np.float16).astype(f32), None
    lo, hi = QRANGE[dtype]
    scale, zp = qp["scale"], qp["zero_point"]
    with np.errstate(all="ignore"):
        if decomposed:
            qmin, qmax = (qp["quant_min"], qp["quant_max"]) if qp.get("quant_min") is not None and \
                qp.get("quant_max") is not None else (lo, hi)
            if qscheme == PTA:
                s = float(scale.item())
                z = zp.item()
                inv = f32(1.0 / s)
                r = np.rint((w * inv).astype(f32))
                v = (r + f32(z)).astype(f32)
                v = np.clip(v, qmin, qmax)
                q = np.trunc(v).astype(np.int64)
                w_hat = ((q.astype(f32) - f32(z)).astype(f32) * f32(s)).astype(f32)
                return w_hat, q
            axis = int(qp["axis"])
            shape = [1] * w.ndim
            shape[axis] = -1
            sn = scale.numpy()
            inv = (np.ones_like(sn) / sn).reshape(shape)
            zn = zp.numpy().reshape(shape)
            r = np.rint(w * inv)  # f32 (or f64 with f64 scales)
            v = r + (zn.astype(r.dtype) if zn.dtype.kind != "f" else zn.astype(np.result_type(r.dtype, zn.dtype)))
            v = np.clip(v, qmin, qmax)
            q = np.trunc(v).astype(np.int64)
            if zn.dtype.kind == "f":
                w_hat = ((q.astype(zn.dtype) - zn) * sn.reshape(shape)).astype(f32)
            else:
                w_hat = ((q - zn).astype(np.result_type(np.float32, sn.dtype)) * sn.reshape(shape)).astype(f32)
            return w_hat, q

        if qscheme == PTA:
            s = f32(float(scale.item()))
            z = int(zp.item())  # truncation toward zero for float zp
            inv = f32(1.0) / s
            t = (w * inv).astype(f32)
            r = np.rint(t)
            if dtype == torch.qint32:
                qf = (f32(z) + r).astype(np.float64)
                qf = np.where(np.isnan(qf), lo, qf)
            else:
                qf = r.astype(np.float64) + z
                qf = np.where(np.isnan(qf), hi, qf)  # AVX2: NaN -> qmax (only scale 0 * x 0 here)
            q = np.clip(qf, lo, hi).astype(np.int64)
            w_hat = (s * (q - z).astype(f32)).astype(f32)
            return w_hat, q

        axis = int(qp["axis"])
        shape = [1] * w.ndim
        shape[axis] = -1
        if zp.dtype.is_floating_point:  # §4.3
            s = scale.to(torch.float32).numpy().reshape(shape)
            z = zp.to(torch.float32).numpy().reshape(shape)
            inv = np.where(s == 0, f32(1.0), f32(1.0) / s).astype(f32)
            v = ((w * inv).astype(f32) + z).astype(f32)
            q = np.clip(np.rint(v), lo, hi).astype(np.int64)
            w_hat = ((q.astype(f32) - z).astype(f32) * s).astype(f32)
            return w_hat, q
        s64 = scale.to(torch.float64).numpy().reshape(shape)
        z = zp.to(torch.int64).numpy().reshape(shape)
        s = s64.astype(f32)
        inv = (f32(1.0) / s).astype(f32)
        t = (w * inv).astype(f32)
        r = np.rint(t)
        if dtype == torch.qint32:
            qf = (z.astype(f32) + r).astype(np.float64)
        else:
            qf = r.astype(np.float64) + z
        qf = np.where(np.isnan(qf), 0, qf)
        q = np.clip(qf, lo, hi).astype(np.int64)
        w_hat = ((q.astype(f32) - z.astype(f32)).astype(f32).astype(np.float64) * s64).astype(f32)
        return w_hat, q


# ----------------------------------------------------------------------------- module cases

CASES = []


def case(name, cls, args, kw=None, qp=None, w=None, w_scale=0.5, bias=True, x=None, output_size=None,
         note="", decomposed=False):
    """Register a module case.

    cls: nnqr class; args: (in, out, kernel); kw: other ctor kwargs (no weight_qparams/bias);
    qp: dict or callable(weight) -> dict; w: weight tensor or callable(shape, gen) (default
    randn*w_scale); x: input shape (tuple) or tensor.
    """
    CASES.append(dict(name=name, cls=cls, args=args, kw=kw or {}, qp=qp, w=w, w_scale=w_scale, bias=bias,
                      x=x, output_size=output_size, note=note, decomposed=decomposed))


def unique(names):
    seen = set()
    for n in names:
        assert n not in seen, n
        seen.add(n)


def unpack_quint4x2(packed: torch.Tensor, shape) -> torch.Tensor:
    b = packed.flatten().to(torch.int32)
    n = int(np.prod(shape))
    codes = torch.stack([b & 15, (b >> 4) & 15], dim=1).flatten()[:n]
    return codes.reshape(shape)


def weight_codes(m) -> torch.Tensor | None:
    if m.weight_qscheme is None or m.weight_dtype == torch.float16:
        return None
    q = m.get_quantized_weight()
    if not q.is_quantized:  # decomposed path: plain integer tensor
        return q.to(torch.int32)
    if m.weight_dtype == torch.quint4x2:
        codes = unpack_quint4x2(q.int_repr(), tuple(q.shape))
        # verify the unpacking against dequantize
        s = q.q_per_channel_scales().float()
        z = q.q_per_channel_zero_points().float()
        ax = q.q_per_channel_axis()
        shp = [1] * q.dim()
        shp[ax] = -1
        deq = ((codes.float() - z.reshape(shp)) * s.reshape(shp))
        assert torch.equal(deq, q.dequantize()), "quint4x2 unpacking mismatch"
        return codes
    return q.int_repr().to(torch.int32)


def float_twin(m, type_name):
    """Float nn module (float64) with the same hyper-parameters, weight = get_weight()."""
    fcls = getattr(nn, type_name)
    kw = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups,
              bias=m.bias is not None, padding_mode=m.padding_mode)
    if type_name.startswith("ConvTranspose"):
        kw["output_padding"] = m.output_padding
    f = fcls(m.in_channels, m.out_channels, m.kernel_size, **kw).double()
    with torch.no_grad():
        f.weight.copy_(m.get_weight().detach().double())
        if m.bias is not None:
            f.bias.copy_(m.bias.detach().double())
    return f


def build_case(c):
    g = gen(c["name"])
    cls = c["cls"]
    tname = ep.REF_TYPES[cls]
    transposed = tname.startswith("ConvTranspose")
    # weight shape from a throw-away module
    probe = cls(*c["args"], **c["kw"], bias=bool(c["bias"]))
    wshape = tuple(probe.weight.shape)
    w = c["w"]
    if w is None:
        w = torch.randn(wshape, generator=g) * c["w_scale"]
    elif callable(w):
        w = w(wshape, g)
    w = torch.as_tensor(w, dtype=torch.float32).reshape(wshape).contiguous()
    assert torch.isfinite(w).all()
    qp = c["qp"]
    desc = None
    if callable(qp):
        desc = getattr(qp, "desc", None)
        qp = qp(w)
    if qp is not None and c["decomposed"]:
        qp = dict(qp, is_decomposed=True)
    m = cls(*c["args"], **c["kw"], bias=bool(c["bias"]), weight_qparams=qp)
    with torch.no_grad():
        m.weight.copy_(w)
        if m.bias is not None:
            b = c["bias"] if isinstance(c["bias"], torch.Tensor) else torch.randn(m.bias.shape, generator=g) * 0.3
            m.bias.copy_(b)
    # input
    x = c["x"]
    if not isinstance(x, torch.Tensor):
        x = torch.randn(x, generator=g)
    x = x.float().contiguous()
    wfq = m.get_weight().detach().clone()
    codes = weight_codes(m)
    # expected output in float64
    os_ = c["output_size"]
    fm = float_twin(m, tname)
    with torch.no_grad():
        y64 = fm(x.double(), output_size=os_) if transposed and os_ is not None else fm(x.double())
    y = y64.float()
    # cross-check against the PyTorch reference module where it is correct
    ref_status = "ok"
    with torch.no_grad():
        if transposed and os_ is not None:
            try:
                m(x, output_size=os_)
                ref_status = "reference accepted output_size (unexpected)"
            except Exception as e:  # noqa: BLE001
                ref_status = f"reference raises {type(e).__name__}"
        else:
            yr = m(x)
            assert yr.shape == y.shape, (c["name"], yr.shape, y.shape)
            bound = _conv_bound(fm, x, tname)
            err = (yr.double() - y64).abs()
            if m.padding_mode == "zeros" or transposed:
                tol = 8 * 2.0 ** -24 * bound + 1e-30
                assert bool((err <= tol).all()), (c["name"], float((err / (bound + 1e-30)).max()))
            else:
                f32twin = float_twin(m, tname).float()
                e2 = (f32twin(x).double() - y64).abs()
                assert bool((e2 <= 8 * 2.0 ** -24 * bound + 1e-30).all()), c["name"]
                ref_status = "reference ignores padding_mode (differs)" if not bool(
                    (err <= 8 * 2.0 ** -24 * bound + 1e-30).all()) else "reference ignores padding_mode (same here)"
    tensors, meta = ep.module_entries(c["name"] + ".", m)
    p = c["name"] + "."
    tensors[p + "input"] = x
    tensors[p + "output"] = y.contiguous()
    tensors[p + "weight_fq"] = wfq.contiguous()
    if codes is not None:
        tensors[p + "weight_q"] = codes.contiguous()
    note = c["note"] or ""
    if desc and "qparams" not in note:
        note = (note + "; " if note else "") + f"qparams from observer {desc}"
    meta[p + "forward"] = json.dumps({"output_size": list(os_) if os_ is not None else None, "note": note})
    return tensors, meta, dict(m=m, qp=qp, w=w, wfq=wfq, codes=codes, ref_status=ref_status, y=y)


def _conv_bound(fm, x, tname):
    """sum |x||w| (+|b|) per output element, via the float module with |w|, |x|."""
    absm = float_twin_abs(fm)
    with torch.no_grad():
        return absm(x.double().abs())


def float_twin_abs(fm):
    import copy
    a = copy.deepcopy(fm)
    with torch.no_grad():
        a.weight.abs_()
        if a.bias is not None:
            a.bias.abs_()
    return a


def self_check(name, info, decomposed):
    """Compare PyTorch's fake-quantized weight/codes with the numpy model (bit exact)."""
    m, qp = info["m"], info["qp"]
    if qp is None:
        qp = dict(qscheme=PTA, dtype=torch.quint8, scale=torch.tensor(1.0), zero_point=torch.tensor(0))
    what, q = np_fake_quant(info["w"].numpy(), qp, decomposed)
    got = info["wfq"].numpy()
    ok = np.array_equal(what.view(np.uint32), got.view(np.uint32))
    okq = True
    if info["codes"] is not None and q is not None:
        okq = np.array_equal(q, info["codes"].numpy().astype(np.int64))
    if not (ok and okq):
        bad = np.nonzero(what.view(np.uint32) != got.view(np.uint32))
        raise AssertionError(f"{name}: numpy model mismatch (w_hat ok={ok}, q ok={okq}); "
                             f"first bad idx {[b[:3] for b in bad]}")


# ----------------------------------------------------------------------------- the case list

def define_cases():
    C1, C2, C3 = nnqr.Conv1d, nnqr.Conv2d, nnqr.Conv3d
    T1, T2, T3 = nnqr.ConvTranspose1d, nnqr.ConvTranspose2d, nnqr.ConvTranspose3d
    x86c = obs("pc_sym", torch.qint8, 0)   # x86 default for Conv
    x86t = obs("pt_sym", torch.qint8)      # x86 default for ConvTranspose

    # --- every module, batched and unbatched (x86-default qparams)
    case("conv1d_batched", C1, (3, 4, 3), qp=x86c, x=(2, 3, 9), note="Conv1d batched, x86 qparams")
    case("conv1d_unbatched", C1, (2, 3, 3), dict(padding=1), qp=x86c, x=(2, 7), note="Conv1d unbatched input")
    case("conv2d_batched", C2, (3, 4, 3), dict(padding=1), qp=x86c, x=(2, 3, 6, 5), note="Conv2d batched")
    case("conv2d_unbatched", C2, (2, 3, (2, 3)), qp=x86c, x=(2, 5, 6), note="Conv2d unbatched input")
    case("conv3d_batched", C3, (2, 3, (2, 3, 2)), qp=x86c, x=(2, 2, 4, 5, 4), note="Conv3d batched")
    case("conv3d_unbatched", C3, (2, 2, 3), dict(padding=1), qp=x86c, x=(2, 4, 3, 4), note="Conv3d unbatched input")
    case("convtranspose1d_batched", T1, (3, 2, 3), dict(stride=2), qp=x86t, x=(2, 3, 5), note="ConvTranspose1d batched")
    case("convtranspose1d_unbatched", T1, (2, 3, 2), dict(padding=1), qp=x86t, x=(2, 6),
         note="ConvTranspose1d unbatched input")
    case("convtranspose2d_batched", T2, (3, 4, (3, 2)), dict(stride=(2, 1), padding=(1, 0)), qp=x86t,
         x=(2, 3, 4, 3), note="ConvTranspose2d batched")
    case("convtranspose2d_unbatched", T2, (2, 2, 3), dict(stride=2), qp=x86t, x=(2, 3, 3),
         note="ConvTranspose2d unbatched input")
    case("convtranspose3d_batched", T3, (2, 3, 2), dict(stride=2), qp=x86t, x=(1, 2, 3, 2, 3),
         note="ConvTranspose3d batched")
    case("convtranspose3d_unbatched", T3, (2, 2, (2, 1, 2)), dict(padding=(1, 0, 0)), qp=x86t, x=(2, 3, 3, 2),
         note="ConvTranspose3d unbatched input")

    # --- qscheme x dtype
    sat = lambda lo, hi: (lambda shape, g: torch.rand(shape, generator=g) * (hi - lo) + lo)  # noqa: E731
    case("pt_quint8", C2, (2, 3, (2, 3)), qp=pt(torch.quint8, 0.02, 100), w=sat(-2.5, 3.5), x=(1, 2, 4, 5),
         note="per_tensor_affine quint8 s=0.02 zp=100 (i32 zp, (1,) scale), saturation both sides")
    case("pt_qint8", C2, (2, 3, (2, 3)), qp=pt(torch.qint8, 0.0125, -3, shape=()), w=sat(-2.0, 2.0),
         x=(1, 2, 4, 5), note="per_tensor_affine qint8 s=0.0125 zp=-3 (0-d scale/zp), saturation")
    case("pt_qint32", C2, (2, 3, (2, 3)), qp=pt(torch.qint32, 1e-4, 12345, zp_dtype=torch.int64), x=(1, 2, 4, 5),
         note="per_tensor_affine qint32 s=1e-4 zp=12345 (i64 zp)")
    case("pc_quint8", C2, (2, 3, (2, 3)), qp=pc(torch.quint8, [0.01, 0.005, 0.02], [128, 7, 250], zp_dtype=torch.int32),
         w=sat(-1.5, 1.5), x=(1, 2, 4, 5), note="per_channel_affine quint8 int32 zp, saturation")
    case("pc_qint8", C2, (2, 3, (2, 3)), qp=pc(torch.qint8, [0.01, 0.004, 0.02], [0, -10, 5]), w=sat(-1.0, 1.0),
         x=(1, 2, 4, 5), note="per_channel_affine qint8 int64 zp, saturation")
    case("pc_qint32", C2, (2, 3, (2, 3)), qp=pc(torch.qint32, [1e-5, 3e-4, 0.1], [-7, 0, 2 ** 20]), x=(1, 2, 4, 5),
         note="per_channel_affine qint32")
    case("pcfq_quint8", C2, (2, 4, (2, 3)), qp=obs("pc_fq", torch.quint8, 0), x=(1, 2, 4, 5),
         note="per_channel_affine_float_qparams quint8 float zp from observer")
    case("pcfq_quint4x2", C2, (2, 4, (2, 3)), qp=obs("pc_fq", torch.quint4x2, 0), x=(1, 2, 4, 5),
         note="per_channel_affine_float_qparams quint4x2 (range 0..15) from observer")
    case("pcfq_quint4x2_odd_axis1", C1, (3, 3, 5), qp=pc(torch.quint4x2, [0.1, 0.2, 0.3], [0.5, 1.0, 2.0], axis=1,
                                                         zp_dtype=torch.float32, qscheme=PCFQ),
         w=sat(-1.0, 4.0), x=(1, 3, 7), note="quint4x2 float zp, axis 1, odd element count (45), saturation")
    case("pcfq_int_zp", C2, (2, 3, (2, 3)), qp=pc(torch.quint8, [0.01, 0.02, 0.005], [100, 1, 255],
                                                  zp_dtype=torch.int32, qscheme=PCFQ),
         w=sat(-1.0, 1.0), x=(1, 2, 4, 5),
         note="per_channel_affine_float_qparams with INTEGER zp -> integer formula (docs/numerics.md §4.2)")
    case("pca_float_zp", C2, (2, 3, (2, 3)), qp=pc(torch.qint8, [0.01, 0.02, 0.25], [0.5, -3.25, 1.0],
                                                   zp_dtype=torch.float32, qscheme=PCA),
         w=sat(-1.5, 1.5), x=(1, 2, 4, 5),
         note="per_channel_affine with FLOAT zp -> float formula (docs/numerics.md §4.3), qint8 range")
    fp16w = lambda shape, g: torch.cat([torch.tensor([1e-6, 2049.0, -3.0e-5, 0.1, 65519.0, 1.0 / 3]),  # noqa: E731
                                        torch.randn(int(np.prod(shape)) - 6, generator=g)]).reshape(shape)
    case("fp16_per_tensor", C2, (2, 3, (2, 3)), qp=dict(qscheme=PTA, dtype=torch.float16), w=fp16w, x=(1, 2, 4, 5),
         note="dtype float16 + per_tensor_affine: weight.half().float() (subnormal, tie, 65519->65504)")
    case("fp16_qscheme_none", C2, (2, 3, (2, 3)), qp=dict(qscheme=None, dtype=torch.float16), w=fp16w, x=(1, 2, 4, 5),
         note="dtype float16 with qscheme None: weight unchanged (no fp16 rounding)")
    case("none_float32", C2, (2, 3, (2, 3)), qp=dict(qscheme=None, dtype=torch.float32), x=(1, 2, 4, 5),
         note="qscheme None, dtype float32: weight unchanged")
    case("default_qparams", C2, (2, 2, 3), qp=None, w=lambda s, g: torch.linspace(-3, 3, int(np.prod(s))).reshape(s),
         x=(1, 2, 4, 4), note="weight_qparams=None: quint8 scale 1 zp 0 (negatives clamp to 0)")
    # decomposed
    dqw = lambda shape, g: torch.cat([torch.tensor([-1.28, 1.28, 1.275, -1.275, -1.5, 1.5]),  # noqa: E731
                                      torch.randn(int(np.prod(shape)) - 6, generator=g) * 0.8]).reshape(shape)
    case("decomposed_pt_qint8_restricted", C2, (2, 3, (2, 3)),
         qp=pt(torch.qint8, 0.01, 0, quant_min=-127, quant_max=127), w=dqw, x=(1, 2, 4, 5), decomposed=True,
         note="is_decomposed, per-tensor qint8 s=0.01, quant range -127..127")
    case("decomposed_pc_qint8_restricted", C2, (2, 3, (2, 3)),
         qp=pc(torch.qint8, [0.01, 0.008, 0.0125], [0, 3, -2], quant_min=-127, quant_max=127), w=dqw,
         x=(1, 2, 4, 5), decomposed=True, note="is_decomposed, per-channel qint8, quant range -127..127")
    case("decomposed_pc_float_zp", C2, (2, 3, (2, 3)),
         qp=pc(torch.quint8, [0.5, 0.25, 0.125], [1.0, 2.5, 0.75], zp_dtype=torch.float32, qscheme=PCFQ),
         w=lambda s, g: (torch.randint(-20, 40, s, generator=g).float() * 0.25 + 0.125),
         x=(1, 2, 4, 5), decomposed=True,
         note="is_decomposed, per-channel quint8 float zp (zp added after rounding, truncated)")
    case("decomposed_pt_float_zp", C1, (1, 4, 1), qp=pt(torch.quint8, 0.5, 1.0, zp_dtype=torch.float32, shape=()),
         w=torch.tensor([0.25, 0.75, -0.3, 1.1]), x=(1, 1, 3), decomposed=True,
         note="is_decomposed, per-tensor quint8 float zp 1.0 (0.25->0, 0.75->1)")
    case("decomposed_pt_quint8_full", C2, (2, 3, (2, 3)), qp=obs("pt_aff", torch.quint8), x=(1, 2, 4, 5),
         decomposed=True, note="is_decomposed, per-tensor quint8 affine observer (quant_min/max 0..255)")
    case("decomposed_pc_qint8_x86", C2, (2, 3, (2, 3)), qp=x86c, x=(1, 2, 4, 5), decomposed=True,
         note="is_decomposed, per-channel symmetric observer (what _convert_to_reference_decomposed_fx gives)")

    # --- observer-produced qparams, scale shapes, zp dtypes, axes
    case("obs_pt_symmetric_qint8", C2, (2, 3, 3), qp=obs("pt_sym", torch.qint8), x=(1, 2, 5, 5),
         note="MinMaxObserver per_tensor_symmetric qint8 -> per_tensor_affine, scale (1,), zp i64")
    case("obs_pt_affine_quint8", C1, (2, 3, 3), qp=obs("pt_aff", torch.quint8), x=(2, 2, 6),
         note="MinMaxObserver per_tensor_affine quint8, zp i32")
    case("obs_pt_affine_qint8", C1, (2, 3, 3), qp=obs("pt_aff", torch.qint8), w=sat(-0.2, 1.0), x=(2, 2, 6),
         note="MinMaxObserver per_tensor_affine qint8 (nonzero zp), zp i32")
    case("obs_pt_symmetric_quint8", C1, (2, 3, 3), qp=obs("pt_sym", torch.quint8), x=(2, 2, 6),
         note="MinMaxObserver per_tensor_symmetric quint8 (zp 128)")
    case("obs_pc_symmetric_qint8", C2, (2, 4, 3), qp=obs("pc_sym", torch.qint8, 0), x=(1, 2, 5, 5),
         note="PerChannelMinMaxObserver per_channel_symmetric qint8 axis 0 -> per_channel_affine, zp i64")
    case("obs_pc_affine_quint8", C2, (2, 4, 3), qp=obs("pc_aff", torch.quint8, 0), x=(1, 2, 5, 5),
         note="PerChannelMinMaxObserver per_channel_affine quint8 axis 0, zp i32")
    case("obs_pc_symmetric_quint8", C2, (2, 4, 3), qp=obs("pc_sym", torch.quint8, 0), x=(1, 2, 5, 5),
         note="per_channel_symmetric quint8 (zp 128)")
    case("obs_pc_restricted_qint8", C2, (2, 4, 3), qp=obs("pc_sym", torch.qint8, 0, quant_min=-127, quant_max=127),
         x=(1, 2, 5, 5), note="per_channel_symmetric qint8 quant range -127..127 (normal path ignores the range)")
    case("obs_pc_axis1_conv2d", C2, (3, 4, (2, 3)), qp=obs("pc_sym", torch.qint8, 1), x=(1, 3, 4, 5),
         note="per-channel axis 1 on a Conv2d weight (in/groups dim)")
    case("obs_pc_axis1_conv1d_groups", C1, (4, 6, 3), dict(groups=2), qp=obs("pc_aff", torch.quint8, 1), x=(1, 4, 8),
         note="per-channel axis 1 on a grouped Conv1d (2 channels = in/groups)")
    case("obs_pc_axis0_convtranspose2d", T2, (3, 4, 2), dict(stride=2), qp=obs("pc_sym", torch.qint8, 0),
         x=(1, 3, 3, 3), note="ConvTranspose2d per-channel axis 0 (= in channels)")
    case("obs_pc_axis1_convtranspose2d", T2, (4, 6, 2), dict(groups=2), qp=obs("pc_sym", torch.qint8, 1),
         x=(1, 4, 3, 3), note="ConvTranspose2d groups=2 per-channel axis 1 (= out/groups, 3 channels)")
    case("obs_pc_axis1_convtranspose1d", T1, (2, 3, 3), qp=obs("pc_aff", torch.quint8, 1), x=(1, 2, 4),
         note="ConvTranspose1d per-channel axis 1 affine quint8")
    case("scale_0d_per_tensor", C1, (2, 2, 3), qp=pt(torch.qint8, 0.01, 1, shape=()), x=(1, 2, 6),
         note="per-tensor 0-d scale and zp tensors")
    case("scale_f64_per_tensor", C1, (2, 2, 3), qp=pt(torch.qint8, 0.0123456789012345, 0, scale_dtype=torch.float64,
                                                      zp_dtype=torch.int64), x=(1, 2, 6),
         note="per-tensor f64 scale (rounded to f32 for quantize and dequantize)")
    f64s = [0.08656351797648074, 0.0123456789012345, 0.00314159265358979]
    case("scale_f64_per_channel", C1, (2, 3, 3), qp=pc(torch.qint8, f64s, [0, 1, -1], scale_dtype=torch.float64),
         w=lambda s, g: torch.randn(s, generator=g).double().mul(torch.tensor(f64s, dtype=torch.float64)
                                                                 .reshape(-1, 1, 1) * 50).float(),
         x=(1, 2, 6), note="per-channel f64 scales not f32-representable (dequant multiplies in f64)")
    case("zp_float_trunc_pos", C1, (2, 2, 3), qp=pt(torch.qint8, 0.05, 2.7, zp_dtype=torch.float32), x=(1, 2, 6),
         note="per-tensor float zp tensor 2.7 -> 2 (truncated)")
    case("zp_float_trunc_neg", C1, (2, 2, 3), qp=pt(torch.qint8, 0.05, -2.7, zp_dtype=torch.float32, shape=()),
         x=(1, 2, 6), note="per-tensor float zp tensor -2.7 -> -2 (truncated)")

    # --- conv hyper-parameters
    case("conv2d_groups", C2, (4, 6, 3), dict(groups=2), qp=x86c, x=(1, 4, 5, 5), note="groups=2")
    case("conv2d_depthwise", C2, (3, 6, 3), dict(groups=3, padding=1), qp=x86c, x=(2, 3, 4, 4),
         note="depthwise, channel multiplier 2")
    case("conv1d_depthwise", C1, (4, 4, 3), dict(groups=4), qp=x86c, x=(1, 4, 7), note="depthwise Conv1d")
    case("conv3d_depthwise", C3, (2, 2, 2), dict(groups=2, stride=(1, 2, 1)), qp=x86c, x=(1, 2, 3, 4, 3),
         note="depthwise Conv3d, stride")
    case("conv1d_dilation_stride", C1, (2, 3, 3), dict(stride=2, dilation=2, padding=2), qp=x86c, x=(1, 2, 11),
         note="stride 2, dilation 2, padding 2")
    case("conv2d_asym", C2, (2, 3, (3, 2)), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2)), qp=x86c,
         x=(1, 2, 7, 6), note="asymmetric kernel/stride/padding/dilation")
    case("conv3d_asym", C3, (2, 4, (1, 2, 3)), dict(stride=(1, 2, 1), padding=(0, 1, 2), dilation=(2, 1, 1), groups=2),
         qp=x86c, x=(1, 2, 4, 5, 4), note="asymmetric 3d, groups 2")
    case("conv1d_same_even_dilation", C1, (2, 2, 4), dict(padding="same", dilation=2), qp=x86c, x=(1, 2, 9),
         note="padding 'same', even kernel 4, dilation 2 (extra pad at the end)")
    case("conv2d_same", C2, (2, 3, (3, 4)), dict(padding="same", dilation=(1, 2)), qp=x86c, x=(1, 2, 5, 7),
         note="padding 'same' 2d, kernel (3,4), dilation (1,2)")
    case("conv3d_same", C3, (1, 2, (2, 3, 2)), dict(padding="same"), qp=x86c, x=(1, 1, 3, 4, 3),
         note="padding 'same' 3d, even kernel dims")
    case("conv1d_valid", C1, (2, 2, 3), dict(padding="valid"), qp=x86c, x=(1, 2, 6), note="padding 'valid'")
    case("conv2d_valid", C2, (2, 2, (2, 3)), dict(padding="valid", stride=(2, 1)), qp=x86c, x=(2, 5, 6),
         note="padding 'valid', stride, unbatched")
    for mode in ("reflect", "replicate", "circular"):
        case(f"conv1d_{mode}", C1, (2, 3, 3), dict(padding=2, padding_mode=mode), qp=x86c, x=(1, 2, 6),
             note=f"padding_mode {mode} (reference ignores it; expected honours it)")
        case(f"conv2d_{mode}", C2, (2, 3, (3, 2)), dict(padding=(1, 2), padding_mode=mode, stride=(1, 2)), qp=x86c,
             x=(1, 2, 5, 4), note=f"padding_mode {mode} 2d asymmetric padding")
        case(f"conv3d_{mode}", C3, (1, 2, (3, 2, 3)), dict(padding=(1, 1, 2), padding_mode=mode), qp=x86c,
             x=(1, 1, 3, 4, 4), note=f"padding_mode {mode} 3d")
    case("conv2d_same_reflect", C2, (2, 2, (3, 4)), dict(padding="same", padding_mode="reflect"), qp=x86c,
         x=(1, 2, 5, 6), note="'same' + reflect (even kernel -> asymmetric reflect pad)")
    case("conv1d_same_reflect_dilation", C1, (2, 2, 4), dict(padding="same", padding_mode="reflect", dilation=2),
         qp=x86c, x=(2, 9), note="'same' + reflect + dilation, unbatched")
    case("conv2d_circular_unbatched", C2, (1, 2, 3), dict(padding=1, padding_mode="circular"), qp=x86c, x=(1, 4, 4),
         note="circular, unbatched")
    case("conv3d_same_replicate", C3, (1, 1, 2), dict(padding="same", padding_mode="replicate"), qp=x86c,
         x=(1, 1, 3, 3, 3), note="'same' + replicate 3d")
    # transposed
    case("convtranspose1d_dilation_groups", T1, (4, 2, 3), dict(stride=2, groups=2, dilation=2, padding=1,
                                                                output_padding=1),
         qp=x86t, x=(1, 4, 5), note="ConvTranspose1d groups 2, dilation 2, output_padding 1")
    case("convtranspose2d_output_padding", T2, (2, 3, (3, 2)), dict(stride=(2, 3), padding=(1, 0),
                                                                    output_padding=(1, 2)),
         qp=x86t, x=(1, 2, 3, 3), note="output_padding (1,2)")
    case("convtranspose3d_asym", T3, (2, 2, (2, 1, 3)), dict(stride=(1, 2, 2), padding=(0, 0, 1),
                                                             output_padding=(0, 1, 1), dilation=(2, 1, 1)),
         qp=x86t, x=(1, 2, 2, 3, 2), note="asymmetric 3d transposed, dilation, output_padding")
    case("convtranspose2d_depthwise", T2, (3, 3, 3), dict(groups=3, stride=2, padding=1), qp=x86t, x=(1, 3, 3, 3),
         note="depthwise transposed")
    case("convtranspose2d_output_size", T2, (2, 3, 3), dict(stride=2, padding=1), qp=x86t, x=(1, 2, 5, 5),
         output_size=[10, 9], note="output_size (10,9) (reference crashes; float module rule)")
    case("convtranspose2d_output_size_full", T2, (2, 3, 3), dict(stride=(2, 3), padding=1, dilation=(1, 2)),
         qp=x86t, x=(2, 2, 3, 3), output_size=[2, 3, 6, 10],
         note="output_size given with batch/channel dims (N,C,H,W), dilation")
    case("convtranspose1d_output_size_unbatched", T1, (2, 2, 3), dict(stride=3, padding=1, dilation=2), qp=x86t,
         x=(2, 4), output_size=[14], note="unbatched, dilation 2, output_size 14 (min 12, max 14)")
    case("convtranspose1d_output_size_unbatched_lead", T1, (2, 2, 3), dict(stride=3, padding=1), qp=x86t,
         x=(2, 4), output_size=[2, 11], note="unbatched, output_size with channel dim (C,L)")
    case("convtranspose3d_output_size_dilation", T3, (1, 2, 2), dict(stride=2, dilation=(1, 2, 1), padding=(0, 1, 0)),
         qp=x86t, x=(1, 1, 2, 3, 2), output_size=[5, 5, 4], note="3d output_size with dilation")

    # --- ties and saturation (scale powers of two so (k+0.5)*s is exact)
    tie = lambda s: (lambda shape, g: ((torch.randperm(int(np.prod(shape)), generator=g)  # noqa: E731
                                         - int(np.prod(shape)) // 2).float() + 0.5).reshape(shape) * s)
    case("ties_pt_qint8_odd_zp", C1, (5, 8, 7), qp=pt(torch.qint8, 0.125, 3), w=tie(0.125), x=(1, 5, 9),
         note="weights (k+0.5)*s exactly, k in -140..139, odd zp 3: ties to even then +zp, saturation")
    case("ties_pt_quint8_even_zp", C1, (5, 8, 7), qp=pt(torch.quint8, 0.25, 128), w=tie(0.25), x=(1, 5, 9),
         note="ties quint8 zp 128, saturation both sides")
    case("ties_pc_quint8_int_zp", C1, (5, 4, 7), qp=pc(torch.quint8, [0.125, 0.25, 0.0625, 0.5], [1, 2, 127, 0]),
         w=lambda s, g: tie(1.0)(s, g) * torch.tensor([0.125, 0.25, 0.0625, 0.5]).reshape(-1, 1, 1), x=(1, 5, 9),
         note="per-channel ties with int zps 1/2/127/0")
    case("ties_pc_float_zp", C1, (5, 4, 7), qp=pc(torch.quint8, [0.25, 0.25, 0.5, 1.0], [1.0, 0.5, 2.25, 0.0],
                                                  zp_dtype=torch.float32, qscheme=PCFQ),
         w=lambda s, g: tie(1.0)(s, g) * torch.tensor([0.25, 0.25, 0.5, 1.0]).reshape(-1, 1, 1) / 2, x=(1, 5, 9),
         note="float zp ties (zp added before rounding), saturation")
    case("ties_decomposed_pt_qint8", C1, (5, 8, 7), qp=pt(torch.qint8, 0.125, 3, quant_min=-100, quant_max=100),
         w=tie(0.125), x=(1, 5, 9), decomposed=True, note="decomposed ties, zp 3, range -100..100")
    case("saturation_pt_qint8", C1, (2, 3, 3), qp=pt(torch.qint8, 0.001, 0), w=sat(-50.0, 50.0), x=(1, 2, 5),
         note="nearly all weights saturate (|w| up to 50, s=0.001)")

    # --- §10b golden vectors: Conv1d(1, n, 1), weight (n,1,1) carries the vector
    def gv(name, vec, qp, note, decomposed=False):
        v = torch.tensor(vec, dtype=torch.float32) if not isinstance(vec, torch.Tensor) else vec
        case(name, C1, (1, v.numel(), 1), qp=qp, w=v, x=torch.tensor([[[1.0, -2.0, 0.5]]]), note=note,
             decomposed=decomposed, bias=False)

    s_rec = f32_from_bits(0x3B0CCEAA)
    x_rec = f32_from_bits(0x3E8C41DB)
    gv("golden_reciprocal_quint8", [x_rec], pt(torch.quint8, s_rec, 0),
       "x*f32(1/s) not x/s: quint8 q=128, w_hat=0.2750142216682434")
    gv("golden_reciprocal_qint8", [x_rec], pt(torch.qint8, s_rec, 0), "same, qint8 -> q=127 (clamped)")
    ties = [0.5, 1.5, 2.5, -0.5, -1.5]
    gv("golden_ties_int_zp_pt", ties, pt(torch.quint8, 1.0, 1), "ties int zp per-tensor: q=[1,3,3,1,0]")
    gv("golden_ties_int_zp_pc", ties, pc(torch.quint8, [1.0] * 5, [1] * 5), "ties int zp per-channel: q=[1,3,3,1,0]")
    tf = [0.5, 1.5, 2.5, -0.5, 0.25, 0.75, 300, -5]
    gv("golden_ties_float_zp", tf, pc(torch.quint8, [1.0] * 8, [1.0] * 8, zp_dtype=torch.float32, qscheme=PCFQ),
       "float zp 1.0: q=[2,2,4,0,1,2,255,0], w_hat=[1,1,3,-1,0,1,254,-1]")
    gv("golden_ties_float_zp_half", tf, pc(torch.quint8, [1.0] * 8, [0.5] * 8, zp_dtype=torch.float32, qscheme=PCFQ),
       "float zp 0.5: w_hat=[0.5,1.5,2.5,-0.5,0.5,0.5,254.5,-0.5]")
    gv("golden_two_roundings_float_zp", [f32_from_bits(0x3E7E87FB)],
       pc(torch.quint8, [f32_from_bits(0x3B526AE8)], [f32_from_bits(0x426C548A)], zp_dtype=torch.float32,
          qscheme=PCFQ), "two roundings (no FMA): q=136, w_hat=0.24696020781993866")
    gv("golden_qint32_float_add_zp3", [16777216.0], pt(torch.qint32, 1.0, 3),
       "qint32 zp added in f32: 16777216+3 -> q=16777220")
    gv("golden_qint32_float_add_zp1", [16777216.0], pt(torch.qint32, 1.0, 1), "qint32: 16777216+1 -> q=16777216")
    s64 = 0.08656351797648074
    xg = float(np.float32(-127 * s64))
    gv("golden_f64_scale_pc", [xg], pc(torch.qint8, [s64], [0], scale_dtype=torch.float64),
       "f64 per-channel scale, q=-127 -> w_hat=-10.993566513061523")
    gv("golden_f64_scale_pt", [xg], pt(torch.qint8, s64, 0, scale_dtype=torch.float64),
       "f64 per-tensor scale -> w_hat=-10.99356746673584")
    gv("golden_f32_scale_pc", [xg], pc(torch.qint8, [s64], [0], scale_dtype=torch.float32),
       "f32 per-channel scale -> w_hat=-10.99356746673584")
    zv = [0.3, -0.3, 0.05, -0.05, 1.0, -1.0]
    gv("golden_trunc_zp_2_7", zv, pt(torch.qint8, 0.1, 2.7, zp_dtype=torch.float32), "per-tensor float zp 2.7 -> 2")
    gv("golden_trunc_zp_neg2_7", zv, pt(torch.qint8, 0.1, -2.7, zp_dtype=torch.float32),
       "per-tensor float zp -2.7 -> -2")
    gv("golden_trunc_zp_2_5", zv, pt(torch.qint8, 0.1, 2.5, zp_dtype=torch.float32), "per-tensor float zp 2.5 -> 2")
    gv("golden_decomposed_quant_min", [-1.28, 1.28, -1.27],
       pt(torch.qint8, 0.01, 0, quant_min=-127, quant_max=127), "decomposed quant_min -127: -1.28 -> -1.27",
       decomposed=True)
    gv("golden_normal_ignores_quant_min", [-1.28, 1.28, -1.27],
       pt(torch.qint8, 0.01, 0, quant_min=-127, quant_max=127), "normal path ignores quant_min: -1.28 stays")
    gv("golden_decomposed_float_zp", [0.25, 0.75],
       pc(torch.quint8, [0.5, 0.5], [1.0, 1.0], zp_dtype=torch.float32, qscheme=PCFQ),
       "decomposed float zp: 0.25 -> 0.0, 0.75 -> 1.0", decomposed=True)
    gv("golden_normal_float_zp", [0.25, 0.75],
       pc(torch.quint8, [0.5, 0.5], [1.0, 1.0], zp_dtype=torch.float32, qscheme=PCFQ),
       "normal float zp: 0.25 -> 0.5, 0.75 -> 0.5")
    # scale 0 / negative scale (weights nonzero: 0 * inf = NaN would make weight_q platform dependent)
    gv("scale_zero_pt_qint8", [0.5, -0.5, 3.0, -1e-3], pt(torch.qint8, 0.0, 0),
       "per-tensor scale 0: inv=+inf, q saturates by sign, w_hat = +-0")
    gv("scale_zero_pt_quint8", [0.5, -0.5, 3.0], pt(torch.quint8, 0.0, 3), "per-tensor scale 0 quint8 zp 3")
    gv("scale_zero_pc_float_zp", [0.4, 3.6, -1.0], pc(torch.quint8, [0.0] * 3, [0.0] * 3, zp_dtype=torch.float32,
                                                      qscheme=PCFQ),
       "float zp, scale 0 -> inv=1: q=[0,4,0], w_hat=0")
    gv("negative_scale_pt", [1.0, -1.0, 2.0], pt(torch.quint8, -0.5, 100),
       "negative scale -0.5 zp 100: q=[98,102,96], w_hat=[1,-1,2]")
    gv("negative_scale_pc", [1.0, -1.0, 2.0], pc(torch.qint8, [-0.5, 0.25, -0.125], [3, 0, -4]),
       "negative per-channel scales")


# expected values from docs/numerics.md §10b / §4 (q codes, w_hat); checked after generation
GOLDEN = {
    "golden_reciprocal_quint8": ([128], [0.2750142216682434]),
    "golden_reciprocal_qint8": ([127], None),
    "golden_ties_int_zp_pt": ([1, 3, 3, 1, 0], None),
    "golden_ties_int_zp_pc": ([1, 3, 3, 1, 0], None),
    "golden_ties_float_zp": ([2, 2, 4, 0, 1, 2, 255, 0], [1, 1, 3, -1, 0, 1, 254, -1]),
    "golden_ties_float_zp_half": (None, [0.5, 1.5, 2.5, -0.5, 0.5, 0.5, 254.5, -0.5]),
    "golden_two_roundings_float_zp": ([136], [0.24696020781993866]),
    "golden_qint32_float_add_zp3": ([16777220], None),
    "golden_qint32_float_add_zp1": ([16777216], None),
    "golden_f64_scale_pc": ([-127], [-10.993566513061523]),
    "golden_f64_scale_pt": ([-127], [-10.99356746673584]),
    "golden_f32_scale_pc": ([-127], [-10.99356746673584]),
    "golden_trunc_zp_2_7": ([5, -1, 2, 2, 12, -8], None),
    "golden_trunc_zp_neg2_7": ([1, -5, -2, -2, 8, -12], None),
    "golden_trunc_zp_2_5": ([5, -1, 2, 2, 12, -8], None),
    "golden_decomposed_quant_min": ([-127, 127, -127], [float(np.float32(-1.27)), float(np.float32(1.27)),
                                                         float(np.float32(-1.27))]),
    "golden_normal_ignores_quant_min": ([-128, 127, -127], None),
    "golden_decomposed_float_zp": (None, [0.0, 1.0]),
    "golden_normal_float_zp": (None, [0.5, 0.5]),
    "scale_zero_pt_qint8": ([127, -128, 127, -128], [0.0, -0.0, 0.0, -0.0]),
    "scale_zero_pc_float_zp": ([0, 4, 0], [0.0, 0.0, 0.0]),
    "negative_scale_pt": ([98, 102, 96], [1.0, -1.0, 2.0]),
    "decomposed_pt_float_zp": (None, [0.0, 1.0, -0.5, 1.0]),
}
OBS_GOLDEN = {
    "golden_sym_a": ([0], [0.007843137718737125]),   # (zero_point, scale)
    "golden_sym_b": ([0], [0.0054901959374547005]),
    "golden_affine_quint8": ([38], [0.007843137718737125]),
}


def check_golden(tensors, prefix_fmt, golden, qkey, wkey):
    for name, (q, w) in golden.items():
        p = prefix_fmt.format(name)
        if q is not None:
            got = tensors[p + qkey].flatten().tolist()
            assert got == q, (name, got, q)
        if w is not None:
            got = tensors[p + wkey].flatten()
            exp = torch.tensor(w, dtype=got.dtype)
            assert torch.equal(got.view(torch.int32) if got.dtype == torch.float32 else got,
                               exp.view(torch.int32) if exp.dtype == torch.float32 else exp), (name, got, w)


# ----------------------------------------------------------------------------- observers

OBS = []


def obs_case(name, kind, x, dtype, qscheme, ch_axis=None, quant_min=None, quant_max=None, reduce_range=False):
    OBS.append(dict(name=name, kind=kind, x=x, dtype=dtype, qscheme=qscheme, ch_axis=ch_axis,
                    quant_min=quant_min, quant_max=quant_max, reduce_range=reduce_range))


def define_observers():
    M, P = "MinMaxObserver", "PerChannelMinMaxObserver"
    q8, u8, u4, q32 = torch.qint8, torch.quint8, torch.quint4x2, torch.qint32
    pts, pta = torch.per_tensor_symmetric, torch.per_tensor_affine
    pcs, pca = torch.per_channel_symmetric, torch.per_channel_affine
    t = torch.tensor
    obs_case("golden_sym_a", P, t([[1.0, -1.0, 0.5, 0.25]]), q8, pcs, 0)
    obs_case("golden_sym_b", P, t([[0.3, -0.7, 0.7, 0.123]]), q8, pcs, 0)
    obs_case("golden_sym_ab", P, t([[1.0, -1.0, 0.5, 0.25], [0.3, -0.7, 0.7, 0.123]]), q8, pcs, 0)
    obs_case("golden_sym_pt", M, t([0.3, -0.7, 0.7, 0.123]), q8, pts)
    obs_case("golden_affine_quint8", M, t([-0.3, 0.1, 0.9, 1.7]), u8, pta)
    r = lambda name, shape, s=0.5: torch.randn(shape, generator=gen(name)) * s  # noqa: E731
    obs_case("pc_sym_qint8_axis0", P, r("a0", (4, 3, 3, 3)), q8, pcs, 0)
    obs_case("pc_sym_qint8_axis1", P, r("a1", (4, 3, 3, 3)), q8, pcs, 1)
    obs_case("pc_aff_quint8_axis0", P, r("a2", (4, 3, 3, 3)), u8, pca, 0)
    obs_case("pc_aff_qint8_axis1", P, r("a3", (4, 3, 3, 3)) + 0.4, q8, pca, 1)
    obs_case("pc_sym_quint8_axis0", P, r("a4", (4, 3, 3, 3)), u8, pcs, 0)
    obs_case("pc_sym_qint8_restricted", P, r("a5", (4, 3, 3, 3)), q8, pcs, 0, -127, 127)
    obs_case("pc_aff_qint8_restricted", P, r("a5b", (4, 3, 3, 3)) + 0.2, q8, pca, 0, -127, 127)
    obs_case("pc_sym_quint8_custom_range", P, r("a5c", (3, 2, 3)), u8, pcs, 0, 0, 200)
    obs_case("pc_fq_quint4x2_axis0", P, r("a6", (4, 3, 3, 3)), u4, torch.per_channel_affine_float_qparams, 0)
    obs_case("pc_fq_quint8_axis1", P, r("a7", (4, 3, 3, 3)), u8, torch.per_channel_affine_float_qparams, 1)
    obs_case("pt_sym_qint8", M, r("b0", (4, 3, 3, 3)), q8, pts)
    obs_case("pt_aff_quint8", M, r("b1", (4, 3, 3, 3)), u8, pta)
    obs_case("pt_aff_qint8", M, r("b2", (4, 3, 3, 3)) + 0.3, q8, pta)
    obs_case("pt_sym_quint8", M, r("b3", (4, 3, 3, 3)), u8, pts)
    obs_case("pt_sym_qint8_restricted", M, r("b4", (4, 3, 3, 3)), q8, pts, None, -127, 127)
    obs_case("pt_aff_quint8_reduce_range", M, r("b5", (4, 3, 3, 3)), u8, pta, reduce_range=True)
    obs_case("pt_sym_qint8_reduce_range", M, r("b5b", (4, 3, 3, 3)), q8, pts, reduce_range=True)
    obs_case("pt_aff_qint32", M, r("b6", (2, 3, 3)), q32, pta)
    obs_case("pt_aff_all_positive", M, r("b7", (3, 4)).abs() + 0.1, u8, pta)
    obs_case("pt_aff_all_negative", M, -r("b8", (3, 4)).abs() - 0.1, q8, pta)
    zc = r("c0", (4, 2, 3))
    zc[1] = 0.0
    zc[2] = 0.5
    zc[3] = -0.25
    obs_case("pc_sym_qint8_zero_const_channels", P, zc, q8, pcs, 0)
    obs_case("pc_aff_quint8_zero_const_channels", P, zc, u8, pca, 0)
    obs_case("pc_fq_quint8_zero_const_channels", P, zc, u8, torch.per_channel_affine_float_qparams, 0)
    obs_case("pt_sym_qint8_all_zero", M, torch.zeros(2, 3), q8, pts)
    obs_case("pt_aff_quint8_constant", M, torch.full((2, 3), 0.75), u8, pta)


def build_obs(o):
    kw = dict(dtype=o["dtype"], qscheme=o["qscheme"], reduce_range=o["reduce_range"])
    if o["quant_min"] is not None:
        kw.update(quant_min=o["quant_min"], quant_max=o["quant_max"])
    if o["kind"] == "PerChannelMinMaxObserver":
        ob = PerChannelMinMaxObserver(ch_axis=o["ch_axis"], **kw)
    else:
        ob = MinMaxObserver(**kw)
    x = o["x"].float().contiguous().clone()
    ob(x)
    s, z = ob.calculate_qparams()
    p = f"obs.{o['name']}."
    tensors = {p + "x": x, p + "scale": s.detach().contiguous().clone(), p + "zero_point": z.detach().contiguous().clone()}
    cfg = {"observer": o["kind"], "qscheme": str(o["qscheme"]), "dtype": str(o["dtype"]), "ch_axis": o["ch_axis"],
           "quant_min": o["quant_min"], "quant_max": o["quant_max"], "reduce_range": o["reduce_range"]}
    return tensors, {p + "config": json.dumps(cfg)}


# ----------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                                  "fixtures"))
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)

    define_cases()
    unique([c["name"] for c in CASES])
    tensors, meta = {}, {}
    for c in CASES:
        t, m, info = build_case(c)
        if not a.no_check:
            self_check(c["name"], info, c["decomposed"])
        tensors.update(t)
        meta.update(m)
        if a.verbose or info["ref_status"] != "ok":
            print(f"  {c['name']}: {info['ref_status']}")
    meta["__torch_version__"] = torch.__version__
    meta["__format__"] = ep.FORMAT_VERSION
    meta["__cases__"] = json.dumps([c["name"] for c in CASES])
    check_golden(tensors, "{}.", GOLDEN, "weight_q", "weight_fq")
    path = os.path.join(a.out, "modules.safetensors")
    ep.save(tensors, meta, path)

    define_observers()
    unique([o["name"] for o in OBS])
    ot, om = {}, {}
    for o in OBS:
        t, m = build_obs(o)
        ot.update(t)
        om.update(m)
    check_golden(ot, "obs.{}.", OBS_GOLDEN, "zero_point", "scale")
    om["__torch_version__"] = torch.__version__
    om["__cases__"] = json.dumps([o["name"] for o in OBS])
    opath = os.path.join(a.out, "observers.safetensors")
    ep.save(ot, om, opath)

    model, _ = ep.demo_reference_model()
    dpath = os.path.join(a.out, "export_demo.safetensors")
    ep.export_model(model, dpath)

    # reload + summary
    for p, n in ((path, len(CASES)), (opath, len(OBS)), (dpath, None)):
        os.chmod(p, 0o644)
        back = load_file(p)
        with safe_open(p, "pt") as f:
            md = f.metadata()
        print(f"{os.path.relpath(p)}: {os.path.getsize(p)} bytes, {len(back)} tensors, {len(md)} metadata keys"
              + (f", {n} cases" if n else ""))
    ref = load_file(path)
    assert all(torch.equal(ref[k], tensors[k]) for k in tensors)
    print(f"torch {torch.__version__}; {len(CASES)} module cases, {len(OBS)} observer cases"
          + ("" if a.no_check else "; numpy model matches every weight_fq/weight_q bit for bit")
          + f"; {len(GOLDEN) + len(OBS_GOLDEN)} golden vectors ok")


if __name__ == "__main__":
    main()
