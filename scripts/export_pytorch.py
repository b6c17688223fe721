#!/usr/bin/env python3
"""Export PyTorch quantized convolutions to qconv's safetensors model format.

Two kinds of module are written:

* **reference** modules (``torch.ao.nn.quantized.reference`` Conv1d/2d/3d, ConvTranspose1d/2d/3d:
  float weight + weight qparams; what ``convert_to_reference_fx`` produces), and the
  *functional* convolutions of such an FX graph (``quantize -> dequantize -> torch.conv*d`` /
  ``F.conv*d`` calls, e.g. a ``Conv3d`` subclass FX traced through, or ``F.conv2d(x, self.weight)``;
  an ``F.pad(mode=reflect|replicate|circular)`` with equal pads in front of a zero-padded call --
  what ``nn.ConvNd`` emits for a padding mode -- becomes the module's padding and padding_mode);
* **lowered** int8 modules (what ``convert_fx`` produces): ``torch.ao.nn.quantized.Conv{1,2,3}d``,
  ``ConvTranspose{1,2,3}d``, the fused ``torch.ao.nn.intrinsic.quantized.ConvReLU{1,2,3}d`` and the
  functional ``torch.ops.quantized.conv*`` calls of a lowered graph, with the input qparams
  traced through the graph.

Nothing is dropped silently: a convolution that cannot be exported makes the export fail with
an error naming every such convolution (plain float convolutions are skipped with a warning
unless ``float_qparams`` says how to quantize them).  The file layout is specified in
docs/file-format.md; a short summary follows.

Prefixes
--------
A module is stored under a *prefix* ``{p}``: its ``named_modules()`` name followed by a dot
(``"layer1.0.conv1."``), or ``""`` for a model that is itself a single conv.  A functional
convolution takes the path of the module that owns its weight (the ``get_attr`` target's
owner, or for a lowered graph the innermost entry of the node's ``nn_module_stack``) plus a dot;
where that path is the root or already taken, the FX node's name is used (``"conv2d."``).  A
TorchScript file keeps no module stack: its functional convolutions use the packed-weight
attribute's name without ``_packed_weight_N`` (``"layer1_0_conv1."``).  The exporter prints
the prefixes exactly as ``qconv --prefix`` takes them.

Reference entries (float weight)
--------------------------------
``{p}weight`` f32 (PyTorch layout: conv ``(out, in/groups, *k)``, transposed ``(in, out/groups, *k)``),
``{p}bias`` f32 (optional), ``{p}weight_scale`` f32|f64 ``()``/``(1,)``/``(C,)``,
``{p}weight_zero_point`` i32|i64|f32, ``{p}weight_axis`` i32|i64 scalar; metadata
``{p}weight_qscheme``, ``{p}weight_dtype``, ``{p}module`` (JSON, ``"type": "Conv2d"`` ...),
``{p}is_decomposed``, optional ``{p}weight_quant_min`` / ``{p}weight_quant_max``.

Lowered int8 entries
--------------------
``{p}weight`` i8 codes (PyTorch layout), ``{p}weight_scale`` f64 (scalar ``()`` per tensor,
``(C,)`` per channel), ``{p}weight_zero_point`` i64 (same shape), ``{p}weight_axis`` i64 scalar
(per channel only), ``{p}bias`` f32 (optional), ``{p}scale`` f64 scalar and ``{p}zero_point`` i64
scalar (output qparams), optional ``{p}input_scale`` f64 / ``{p}input_zero_point`` i64 scalars;
metadata ``{p}weight_qscheme`` (``torch.per_tensor_affine`` | ``torch.per_channel_affine``),
``{p}weight_dtype`` = ``torch.qint8``, ``{p}module`` JSON with ``"type": "QuantizedConv2d"`` ...
``"QuantizedConvTranspose3d"`` and ``"relu": true|false``.

File-level metadata: ``__format__ = "qconv-modules-v1"``, ``__torch_version__``,
``__modules__`` = JSON list of the prefixes written, without the trailing dot.

Plain float ``nn.ConvNd`` / ``nn.ConvTransposeNd`` modules (and float functional convolutions)
are skipped with a warning unless ``float_qparams`` says how to quantize them:

* ``"x86"`` -- what ``get_default_qconfig_mapping("x86")`` would do: convs get
  ``PerChannelMinMaxObserver(qint8, per_channel_symmetric, ch_axis=0)``, transposed convs get
  ``MinMaxObserver(qint8, per_tensor_symmetric)`` (PyTorch rejects per-channel observers for
  ConvTranspose); the observer runs on the weight, the dict comes from
  ``torch.ao.quantization.utils.get_qparam_dict`` (symmetric -> affine), and the module is built
  with ``nnqr.XXX.from_float``.
* ``"per-tensor"`` -- ``MinMaxObserver(qint8, per_tensor_symmetric)`` for every conv.
* ``"float"``   -- export unchanged with qscheme ``None`` / dtype ``torch.float32``.
* a callable ``f(name, module) -> dict | None`` returning a ``weight_qparams`` dict
  (``None`` skips the module).

Usage::

    python scripts/export_pytorch.py --demo OUT.safetensors
    python scripts/export_pytorch.py MODEL.pt OUT.safetensors [--float-qparams x86|per-tensor|float|skip]

``MODEL.pt`` is a TorchScript file (``torch.jit.save``) or a full pickled model
(``torch.save(model)``, loaded with ``torch.load(..., weights_only=False)`` -- only load files
you trust).  A lowered model with fused ``ConvReLU*d`` modules cannot go through
``torch.save`` -> ``torch.load`` in PyTorch 2.15 (``'ConvReLU2d' object has no attribute
'_modules'``); save it with ``torch.jit.save(torch.jit.script(model), path)`` instead.

In process: ``export_model(model, path, float_qparams=None)`` takes an ``nn.Module``, an FX
``GraphModule`` (reference or lowered) or a ``torch.jit.ScriptModule``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
import zipfile
from typing import Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

for _msg in (".*quantized tensor creation functions.*", ".*torch.ao.quantization is deprecated.*",
             ".*reduce_range will be deprecated.*"):
    warnings.filterwarnings("ignore", message=_msg)

try:  # registers torch.ops.quantized_decomposed (needed by is_decomposed modules)
    import torch.ao.quantization.fx._decomposed  # noqa: F401
except Exception:  # pragma: no cover
    pass

import torch.ao.nn.quantized.reference as nnqr  # noqa: E402
import torch.ao.nn.quantized as nnq  # noqa: E402
import torch.ao.nn.intrinsic.quantized as nniq  # noqa: E402

FORMAT_VERSION = "qconv-modules-v1"

REF_TYPES = {
    nnqr.Conv1d: "Conv1d",
    nnqr.Conv2d: "Conv2d",
    nnqr.Conv3d: "Conv3d",
    nnqr.ConvTranspose1d: "ConvTranspose1d",
    nnqr.ConvTranspose2d: "ConvTranspose2d",
    nnqr.ConvTranspose3d: "ConvTranspose3d",
}
FLOAT_TYPES = {
    nn.Conv1d: nnqr.Conv1d,
    nn.Conv2d: nnqr.Conv2d,
    nn.Conv3d: nnqr.Conv3d,
    nn.ConvTranspose1d: nnqr.ConvTranspose1d,
    nn.ConvTranspose2d: nnqr.ConvTranspose2d,
    nn.ConvTranspose3d: nnqr.ConvTranspose3d,
}

QParamsSpec = Union[None, str, Callable[[str, nn.Module], Optional[dict]]]


def ref_type_name(module: nn.Module) -> Optional[str]:
    """'Conv2d' etc. for a reference conv module (exact class), else None."""
    return REF_TYPES.get(type(module))


def is_transposed(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvTransposeNd)


def module_json(module: nn.Module, type_name: str) -> dict:
    """Hyper-parameters of a conv module as the `{p}module` JSON object."""
    pad = module.padding
    d = {
        "type": type_name,
        "in_channels": int(module.in_channels),
        "out_channels": int(module.out_channels),
        "kernel_size": [int(v) for v in module.kernel_size],
        "stride": [int(v) for v in module.stride],
        "padding": pad if isinstance(pad, str) else [int(v) for v in pad],
        "dilation": [int(v) for v in module.dilation],
        "groups": int(module.groups),
        "bias": module.bias is not None,
        "padding_mode": str(module.padding_mode),
    }
    if type_name.startswith("ConvTranspose"):
        d["output_padding"] = [int(v) for v in module.output_padding]
    return d


def _t(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to("cpu").contiguous().clone()


def _scale_tensor(s: torch.Tensor) -> torch.Tensor:
    s = _t(s)
    if s.dtype not in (torch.float32, torch.float64):
        s = s.to(torch.float32)  # f16/bf16 -> f32 is exact
    return s


def _zp_tensor(z: torch.Tensor) -> torch.Tensor:
    z = _t(z)
    if z.dtype in (torch.int32, torch.int64, torch.float32):
        return z
    if z.is_floating_point():
        return z.to(torch.float32)  # the float-qparams quantizer casts zps to f32
    return z.to(torch.int64)  # the integer quantizer casts zps to i64


def module_entries(prefix: str, module: nn.Module, weight_qparams: Optional[dict] = None
                   ) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Tensors and metadata for one conv module under `prefix` (e.g. "conv1." or "").

    `module` is a reference conv (nnqr.ConvNd / ConvTransposeNd), or a plain float
    nn.ConvNd / ConvTransposeNd together with `weight_qparams` (the dict a reference module
    takes; symmetric qschemes are mapped to *_affine as the converters do).
    """
    tname = ref_type_name(module)
    if tname is None:
        ref_cls = FLOAT_TYPES.get(type(module))
        if ref_cls is None:
            raise TypeError(f"{prefix!r}: {type(module).__name__} is not a supported conv module")
        if weight_qparams is None:
            raise ValueError(f"{prefix!r}: float {type(module).__name__} needs weight_qparams")
        qp = dict(weight_qparams)
        if qp.get("qscheme") == torch.per_tensor_symmetric:
            qp["qscheme"] = torch.per_tensor_affine
        elif qp.get("qscheme") == torch.per_channel_symmetric:
            qp["qscheme"] = torch.per_channel_affine
        module = ref_cls.from_float(module, qp)
        tname = ref_type_name(module)

    w = module.weight
    if w.dtype != torch.float32:
        raise ValueError(f"{prefix!r}: weight dtype {w.dtype} (only float32 is supported, as in PyTorch)")
    tensors: Dict[str, torch.Tensor] = {prefix + "weight": _t(w)}
    if module.bias is not None:
        tensors[prefix + "bias"] = _t(module.bias).to(torch.float32)

    qscheme = module.weight_qscheme
    if getattr(module, "weight_scale", None) is not None and isinstance(module.weight_scale, torch.Tensor):
        tensors[prefix + "weight_scale"] = _scale_tensor(module.weight_scale)
    if getattr(module, "weight_zero_point", None) is not None and isinstance(module.weight_zero_point, torch.Tensor):
        tensors[prefix + "weight_zero_point"] = _zp_tensor(module.weight_zero_point)
    axis_buf = getattr(module, "weight_axis", None)
    if axis_buf is not None or hasattr(module, "weight_axis_int"):
        axis_int = int(getattr(module, "weight_axis_int", int(axis_buf) if axis_buf is not None else 0))
        adt = axis_buf.dtype if isinstance(axis_buf, torch.Tensor) and axis_buf.dtype in (torch.int32, torch.int64) else torch.int32
        if isinstance(axis_buf, torch.Tensor) and int(axis_buf) != axis_int:
            # PyTorch's load_state_dict does not refresh weight_axis_int; the int is what runs.
            print(f"warning: {prefix!r}: weight_axis buffer {int(axis_buf)} != weight_axis_int {axis_int}; "
                  "writing the value get_weight() uses", file=sys.stderr)
        tensors[prefix + "weight_axis"] = torch.tensor(axis_int, dtype=adt)

    meta = {
        prefix + "weight_qscheme": str(qscheme),
        prefix + "weight_dtype": str(module.weight_dtype),
        prefix + "module": json.dumps(module_json(module, tname)),
        prefix + "is_decomposed": "true" if getattr(module, "is_decomposed", False) else "false",
    }
    for k in ("weight_quant_min", "weight_quant_max"):
        v = getattr(module, k, None)
        if v is not None:
            meta[prefix + k] = str(int(v))
    return tensors, meta


def observer_qparams(weight: torch.Tensor, per_channel: bool, ch_axis: int = 0,
                     dtype=torch.qint8, symmetric: bool = True) -> dict:
    """weight_qparams dict from a (PerChannel)MinMaxObserver run on `weight`."""
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver
    from torch.ao.quantization.utils import get_qparam_dict

    if per_channel:
        obs = PerChannelMinMaxObserver(
            ch_axis=ch_axis, dtype=dtype,
            qscheme=torch.per_channel_symmetric if symmetric else torch.per_channel_affine)
    else:
        obs = MinMaxObserver(dtype=dtype,
                             qscheme=torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine)
    obs(weight.detach().float())
    return get_qparam_dict(obs)


def resolve_float_qparams(spec: QParamsSpec, name: str, module: nn.Module) -> Optional[dict]:
    if spec is None or spec == "skip":
        return None
    if callable(spec):
        return spec(name, module)
    if spec == "x86":
        return observer_qparams(module.weight, per_channel=not is_transposed(module))
    if spec == "per-tensor":
        return observer_qparams(module.weight, per_channel=False)
    if spec == "float":
        return {"qscheme": None, "dtype": torch.float32}
    raise ValueError(f"unknown float_qparams {spec!r}")




# ============================================================================ lowered int8 modules

INT8_TYPES = {
    nnq.Conv1d: ("QuantizedConv1d", False),
    nnq.Conv2d: ("QuantizedConv2d", False),
    nnq.Conv3d: ("QuantizedConv3d", False),
    nnq.ConvTranspose1d: ("QuantizedConvTranspose1d", False),
    nnq.ConvTranspose2d: ("QuantizedConvTranspose2d", False),
    nnq.ConvTranspose3d: ("QuantizedConvTranspose3d", False),
    nniq.ConvReLU1d: ("QuantizedConv1d", True),
    nniq.ConvReLU2d: ("QuantizedConv2d", True),
    nniq.ConvReLU3d: ("QuantizedConv3d", True),
}
# quantized conv-like modules qconv has no counterpart for: exporting fails naming them
UNSUPPORTED_QUANTIZED = tuple(c for c in (getattr(nniq, "ConvAdd2d", None), getattr(nniq, "ConvAddReLU2d", None))
                              if c is not None)

# lowered functional ops: torch.ops.quantized.<name>(x, packed, scale, zero_point)
LOWERED_OPS = {
    "conv1d": ("QuantizedConv1d", False), "conv1d_relu": ("QuantizedConv1d", True),
    "conv2d": ("QuantizedConv2d", False), "conv2d_relu": ("QuantizedConv2d", True),
    "conv3d": ("QuantizedConv3d", False), "conv3d_relu": ("QuantizedConv3d", True),
    "conv_transpose1d": ("QuantizedConvTranspose1d", False),
    "conv_transpose2d": ("QuantizedConvTranspose2d", False),
    "conv_transpose3d": ("QuantizedConvTranspose3d", False),
}
UNPACK_OPS = {
    "QuantizedConv1d": "conv1d_unpack", "QuantizedConv2d": "conv2d_unpack", "QuantizedConv3d": "conv3d_unpack",
    "QuantizedConvTranspose1d": "conv_transpose1d_unpack", "QuantizedConvTranspose2d": "conv_transpose2d_unpack",
    "QuantizedConvTranspose3d": "conv_transpose3d_unpack",
}


def int8_type_name(module: nn.Module) -> Optional[Tuple[str, bool]]:
    """('QuantizedConv2d', relu) for a lowered conv module (exact class), else None."""
    return INT8_TYPES.get(type(module))


def _scalar(v, dtype) -> torch.Tensor:
    return torch.tensor(v, dtype=dtype)


def int8_entries(prefix: str, *, type_name: str, in_channels: int, out_channels: int, kernel_size, stride,
                 padding, dilation, groups: int, padding_mode: str = "zeros", output_padding=None,
                 relu: bool = False, weight: torch.Tensor, weight_scale, weight_zero_point,
                 weight_axis: Optional[int] = None, bias: Optional[torch.Tensor] = None, scale: float,
                 zero_point: int, input_scale: Optional[float] = None, input_zero_point: Optional[int] = None
                 ) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Tensors and metadata of one lowered int8 conv under `prefix` (docs/file-format.md).

    weight: int8 codes (a plain int8 tensor) in PyTorch layout; weight_scale / weight_zero_point:
    a number (per tensor) or a 1-d sequence/tensor (per channel, with weight_axis)."""
    if weight.dtype != torch.int8:
        raise ValueError(f"{prefix!r}: weight codes must be int8, got {weight.dtype}")
    transposed = type_name.startswith("QuantizedConvTranspose")
    per_channel = weight_axis is not None
    ws = torch.as_tensor(weight_scale, dtype=torch.float64).detach().cpu()
    wz = torch.as_tensor(weight_zero_point, dtype=torch.int64).detach().cpu()
    if per_channel:
        ws, wz = ws.reshape(-1).contiguous(), wz.reshape(-1).contiguous()
    else:
        if ws.numel() != 1 or wz.numel() != 1:
            raise ValueError(f"{prefix!r}: per-tensor weight qparams must be scalars")
        ws, wz = ws.reshape(()), wz.reshape(())
    t: Dict[str, torch.Tensor] = {prefix + "weight": weight.detach().cpu().contiguous().clone()}
    if bias is not None:
        t[prefix + "bias"] = bias.detach().cpu().to(torch.float32).contiguous().clone()
    t[prefix + "weight_scale"] = ws.clone()
    t[prefix + "weight_zero_point"] = wz.clone()
    if per_channel:
        t[prefix + "weight_axis"] = _scalar(int(weight_axis), torch.int64)
    t[prefix + "scale"] = _scalar(float(scale), torch.float64)
    t[prefix + "zero_point"] = _scalar(int(zero_point), torch.int64)
    if input_scale is not None and input_zero_point is not None:
        t[prefix + "input_scale"] = _scalar(float(input_scale), torch.float64)
        t[prefix + "input_zero_point"] = _scalar(int(input_zero_point), torch.int64)
    d = {
        "type": type_name,
        "in_channels": int(in_channels),
        "out_channels": int(out_channels),
        "kernel_size": [int(v) for v in kernel_size],
        "stride": [int(v) for v in stride],
        "padding": [int(v) for v in padding],
        "dilation": [int(v) for v in dilation],
        "groups": int(groups),
        "bias": bias is not None,
        "padding_mode": str(padding_mode),
    }
    if transposed:
        d["output_padding"] = [int(v) for v in (output_padding if output_padding is not None else [0] * len(stride))]
    d["relu"] = bool(relu)
    meta = {
        prefix + "weight_qscheme": "torch.per_channel_affine" if per_channel else "torch.per_tensor_affine",
        prefix + "weight_dtype": "torch.qint8",
        prefix + "module": json.dumps(d),
    }
    return t, meta


def _weight_qparams_of(w: torch.Tensor, prefix: str):
    """(codes, scale, zero_point, axis) of a quantized qint8 weight tensor."""
    if not w.is_quantized or w.dtype != torch.qint8:
        raise ValueError(f"{prefix!r}: weight must be a qint8 quantized tensor, got {w.dtype}")
    codes = w.int_repr()
    qs = w.qscheme()
    if qs == torch.per_tensor_affine:
        return codes, float(w.q_scale()), int(w.q_zero_point()), None
    if qs == torch.per_channel_affine:
        return codes, w.q_per_channel_scales(), w.q_per_channel_zero_points(), int(w.q_per_channel_axis())
    raise ValueError(f"{prefix!r}: unsupported weight qscheme {qs}")


def lowered_module_entries(prefix: str, module: nn.Module, input_qparams: Optional[Tuple[float, int]] = None
                           ) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Entries of a lowered module (nnq.Conv*d / ConvTranspose*d, nniq.ConvReLU*d)."""
    tr = int8_type_name(module)
    if tr is None:
        raise TypeError(f"{prefix!r}: {type(module).__name__} is not a lowered conv module")
    type_name, relu = tr
    w, b = module._weight_bias()
    codes, ws, wz, axis = _weight_qparams_of(w, prefix)
    iq = input_qparams or (None, None)
    return int8_entries(
        prefix, type_name=type_name, in_channels=module.in_channels, out_channels=module.out_channels,
        kernel_size=module.kernel_size, stride=module.stride, padding=module.padding, dilation=module.dilation,
        groups=module.groups, padding_mode=module.padding_mode,
        output_padding=getattr(module, "output_padding", None) if type_name.startswith("QuantizedConvTranspose")
        else None,
        relu=relu, weight=codes, weight_scale=ws, weight_zero_point=wz, weight_axis=axis, bias=b,
        scale=module.scale, zero_point=module.zero_point, input_scale=iq[0], input_zero_point=iq[1])


def lowered_op_entries(prefix: str, op_name: str, packed, scale: float, zero_point: int,
                       input_qparams: Optional[Tuple[float, int]] = None):
    """Entries of a functional lowered conv ``torch.ops.quantized.<op_name>(x, packed, scale, zp)``."""
    type_name, relu = LOWERED_OPS[op_name]
    w, b = getattr(torch.ops.quantized, UNPACK_OPS[type_name])(packed)
    codes, ws, wz, axis = _weight_qparams_of(w, prefix)
    n = w.dim() - 2
    # 1-d convolutions are packed as 2-d ones with a unit first spatial dimension
    cut = (lambda v: list(v)[-n:]) if n == 1 else (lambda v: list(v))
    transposed = bool(packed.transpose())
    groups = int(packed.groups())
    in_ch = w.shape[0] if transposed else w.shape[1] * groups
    out_ch = w.shape[1] * groups if transposed else w.shape[0]
    iq = input_qparams or (None, None)
    return int8_entries(
        prefix, type_name=type_name, in_channels=in_ch, out_channels=out_ch, kernel_size=list(w.shape[2:]),
        stride=cut(packed.stride()), padding=cut(packed.padding()), dilation=cut(packed.dilation()),
        groups=groups, padding_mode="zeros", output_padding=cut(packed.output_padding()) if transposed else None,
        relu=relu, weight=codes, weight_scale=ws, weight_zero_point=wz, weight_axis=axis, bias=b,
        scale=scale, zero_point=zero_point, input_scale=iq[0], input_zero_point=iq[1])


# ============================================================================ FX graphs

FUNCTIONAL_CONVS = {
    torch.conv1d: ("Conv1d", False), torch.conv2d: ("Conv2d", False), torch.conv3d: ("Conv3d", False),
    torch.conv_transpose1d: ("ConvTranspose1d", True), torch.conv_transpose2d: ("ConvTranspose2d", True),
    torch.conv_transpose3d: ("ConvTranspose3d", True),
}
for _f, _v in ((F.conv1d, "Conv1d"), (F.conv2d, "Conv2d"), (F.conv3d, "Conv3d"),
               (F.conv_transpose1d, "ConvTranspose1d"), (F.conv_transpose2d, "ConvTranspose2d"),
               (F.conv_transpose3d, "ConvTranspose3d")):
    FUNCTIONAL_CONVS.setdefault(_f, (_v, _v.startswith("ConvTranspose")))
# argument order after (input, weight, bias)
_CONV_ARGS = ("stride", "padding", "dilation", "groups")
_CONVT_ARGS = ("stride", "padding", "output_padding", "groups", "dilation")


def _is_fx(model) -> bool:
    return isinstance(model, torch.fx.GraphModule)


def _resolve(gm, a):
    """Python value of a graph argument: get_attr targets are looked up, constants returned."""
    if isinstance(a, torch.fx.Node):
        if a.op == "get_attr":
            obj = gm
            for part in a.target.split("."):
                obj = getattr(obj, part)
            return obj
        raise ValueError(f"value of node {a.name!r} is computed at run time")
    return a


def _num(v):
    if isinstance(v, torch.Tensor):
        return v.item()
    return v


def _op_name(target) -> Optional[str]:
    """'conv2d' for torch.ops.quantized.conv2d (packet or overload), else None."""
    name = getattr(target, "_qualified_op_name", None) or getattr(getattr(target, "_overloadpacket", None),
                                                                   "_qualified_op_name", None)
    if isinstance(name, str) and name.startswith("quantized::"):
        return name.split("::", 1)[1]
    return None


def _owner_prefix(node, target: Optional[str]) -> Optional[str]:
    """Path of the module owning a get_attr target ('conv1.0' for 'conv1.0.weight')."""
    if target and "." in target:
        return target.rsplit(".", 1)[0]
    stack = node.meta.get("nn_module_stack") if hasattr(node, "meta") else None
    if stack:
        key = list(stack.values())[-1]
        path = key[0] if isinstance(key, tuple) else key
        if isinstance(path, str) and path:
            return path
    return None


class _Prefixes:
    """Hands out unique prefixes (without the trailing dot)."""

    def __init__(self):
        self.used = set()

    def take(self, preferred: Optional[str], fallback: str) -> str:
        for cand in (preferred, fallback):
            if cand and cand not in self.used:
                self.used.add(cand)
                return cand
        i = 1
        while f"{fallback}_{i}" in self.used:
            i += 1
        self.used.add(f"{fallback}_{i}")
        return f"{fallback}_{i}"


# ---------------------------------------------------------------- input qparams of lowered modules

_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
                 nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                 nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Dropout, nn.Dropout1d,
                 nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.Flatten, nnq.Dropout)
_PASS_FUNCS = {F.relu, torch.relu, torch.relu_, F.relu_, F.relu6, F.max_pool1d, F.max_pool2d, F.max_pool3d,
               torch.max_pool1d, torch.max_pool2d, torch.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
               torch.avg_pool1d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
               F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d, torch.flatten, torch.reshape,
               F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, torch.dropout, torch.squeeze,
               torch.unsqueeze}
_PASS_METHODS = {"relu", "relu_", "flatten", "reshape", "view", "contiguous", "squeeze", "unsqueeze"}


def _is_quantized_module(m: nn.Module) -> bool:
    mod = type(m).__module__
    return mod.startswith("torch.ao.nn.quantized") or mod.startswith("torch.ao.nn.intrinsic.quantized")


def trace_input_qparams(gm, node) -> Optional[Tuple[float, int]]:
    """(scale, zero_point) of the quantized tensor feeding `node`'s first argument, followed back
    through relu, pooling, flatten/reshape, dropout and identity to the quantize node or quantized
    op that produced it; None if it cannot be found."""
    seen = 0
    cur = node.args[0] if node.args else None
    while isinstance(cur, torch.fx.Node) and seen < 1000:
        seen += 1
        if cur.op == "call_function":
            if cur.target is torch.quantize_per_tensor:
                try:
                    return float(_num(_resolve(gm, cur.args[1]))), int(_num(_resolve(gm, cur.args[2])))
                except (ValueError, AttributeError):
                    return None
            if cur.target in _PASS_FUNCS:
                cur = cur.args[0]
                continue
            if _op_name(cur.target) is not None and len(cur.args) >= 2:
                try:   # quantized::conv*/add/mul/cat/linear...: (..., scale, zero_point)
                    s, z = _num(_resolve(gm, cur.args[-2])), _num(_resolve(gm, cur.args[-1]))
                    if isinstance(s, float) and isinstance(z, int):
                        return s, z
                except (ValueError, AttributeError):
                    pass
                return None
            return None
        if cur.op == "call_method":
            if cur.target in _PASS_METHODS:
                cur = cur.args[0]
                continue
            return None
        if cur.op == "call_module":
            m = gm.get_submodule(cur.target)
            if type(m) in _PASS_MODULES:
                cur = cur.args[0]
                continue
            if _is_quantized_module(m) and hasattr(m, "scale") and hasattr(m, "zero_point"):
                return float(_num(m.scale)), int(_num(m.zero_point))
            return None
        return None
    return None


# ---------------------------------------------------------------- functional convolutions

def _conv_hparams(node, transposed: bool) -> dict:
    names = _CONVT_ARGS if transposed else _CONV_ARGS
    hp = {}
    for i, name in enumerate(names):
        if len(node.args) > 3 + i:
            hp[name] = node.args[3 + i]
        elif name in node.kwargs:
            hp[name] = node.kwargs[name]
    return hp


def _dequantized_weight(gm, wnode):
    """(get_attr target, weight tensor, weight_qparams dict) of a weight produced by
    quantize -> dequantize of a get_attr, (target, tensor, None) for a plain get_attr, or None."""
    if not isinstance(wnode, torch.fx.Node):
        return None
    if wnode.op == "get_attr":
        return wnode.target, _resolve(gm, wnode), None
    deq = wnode
    q = None
    if deq.op == "call_method" and deq.target == "dequantize":
        q = deq.args[0]
    elif deq.op == "call_function" and deq.target in (torch.dequantize,):
        q = deq.args[0]
    elif deq.op == "call_function" and str(deq.target).startswith("quantized_decomposed.dequantize_per_"):
        q = deq.args[0]
    if not isinstance(q, torch.fx.Node) or q.op != "call_function":
        return None
    src = q.args[0]
    if not isinstance(src, torch.fx.Node) or src.op != "get_attr":
        return None
    w = _resolve(gm, src)
    a = [_resolve(gm, v) for v in q.args[1:]]
    if q.target is torch.quantize_per_tensor:
        qp = dict(qscheme=torch.per_tensor_affine, dtype=a[2], scale=torch.as_tensor(a[0]),
                  zero_point=torch.as_tensor(a[1]))
    elif q.target is torch.quantize_per_channel:
        qp = dict(qscheme=torch.per_channel_affine, dtype=a[3], scale=torch.as_tensor(a[0]),
                  zero_point=torch.as_tensor(a[1]), axis=int(a[2]))
    elif str(q.target).startswith("quantized_decomposed.quantize_per_tensor"):
        # (w, scale, zero_point, quant_min, quant_max, dtype)
        dt = {torch.int8: torch.qint8, torch.uint8: torch.quint8, torch.int32: torch.qint32}[a[4]]
        qp = dict(qscheme=torch.per_tensor_affine, dtype=dt, scale=torch.as_tensor(a[0]),
                  zero_point=torch.as_tensor(a[1]), quant_min=int(a[2]), quant_max=int(a[3]), is_decomposed=True)
    elif str(q.target).startswith("quantized_decomposed.quantize_per_channel"):
        # (w, scales, zero_points, axis, quant_min, quant_max, dtype)
        dt = {torch.int8: torch.qint8, torch.uint8: torch.quint8, torch.int32: torch.qint32}[a[5]]
        qp = dict(qscheme=torch.per_channel_affine, dtype=dt, scale=torch.as_tensor(a[0]),
                  zero_point=torch.as_tensor(a[1]), axis=int(a[2]), quant_min=int(a[3]), quant_max=int(a[4]),
                  is_decomposed=True)
    else:
        return None
    return src.target, w, qp


def _folded_pad(node, n_sp: int, padding):
    """((p_1, ..., p_n), mode) when a functional conv with zero padding reads the output of an
    ``F.pad(x, pads, mode=reflect|replicate|circular)`` with equal pads on both sides of every
    spatial dimension -- what ``nn.ConvNd._conv_forward`` emits for a non-zero padding_mode --
    possibly through the activation's quantize -> dequantize; else None."""
    pad_vals = padding if isinstance(padding, (tuple, list)) else (padding,)
    if isinstance(padding, str) or any(int(v) != 0 for v in pad_vals):
        return None
    cur = node.args[0] if node.args else None
    for _ in range(4):
        if not isinstance(cur, torch.fx.Node):
            return None
        if cur.op == "call_function" and cur.target is F.pad:
            pads = cur.args[1] if len(cur.args) > 1 else cur.kwargs.get("pad")
            mode = cur.args[2] if len(cur.args) > 2 else cur.kwargs.get("mode", "constant")
            if mode not in ("reflect", "replicate", "circular") or pads is None or len(pads) != 2 * n_sp:
                return None
            pairs = [(int(pads[2 * i]), int(pads[2 * i + 1])) for i in range(n_sp)][::-1]   # last dim first
            if any(a != b for a, b in pairs):
                return None
            return tuple(a for a, _ in pairs), mode
        if (cur.op == "call_method" and cur.target == "dequantize") or \
                (cur.op == "call_function" and cur.target in (torch.quantize_per_tensor, torch.dequantize)):
            cur = cur.args[0]
            continue
        return None
    return None


def _reference_from_call(gm, node, float_qparams, name):
    """A reference module equivalent to a functional conv node, or raises ValueError."""
    type_name, transposed = FUNCTIONAL_CONVS[node.target]
    dw = _dequantized_weight(gm, node.args[1] if len(node.args) > 1 else node.kwargs.get("weight"))
    if dw is None:
        raise ValueError("its weight is neither a parameter nor a quantize -> dequantize of one")
    target, w, qp = dw
    bnode = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    b = None
    if bnode is not None:
        if isinstance(bnode, torch.fx.Node) and bnode.op != "get_attr":
            raise ValueError(f"its bias is computed at run time (node {bnode.name!r})")
        b = _resolve(gm, bnode)
    hp = {k: _resolve(gm, v) for k, v in _conv_hparams(node, transposed).items()}
    groups = int(hp.get("groups", 1))
    k = tuple(w.shape[2:])
    padding_mode = "zeros"
    if not transposed:
        folded = _folded_pad(node, len(k), hp.get("padding", 0))
        if folded is not None:
            hp["padding"], padding_mode = folded
    in_ch = w.shape[0] if transposed else w.shape[1] * groups
    out_ch = w.shape[1] * groups if transposed else w.shape[0]
    fcls = getattr(nn, type_name)
    kw = dict(stride=hp.get("stride", 1), padding=hp.get("padding", 0), dilation=hp.get("dilation", 1),
              groups=groups, bias=b is not None, padding_mode=padding_mode)
    if transposed:
        kw["output_padding"] = hp.get("output_padding", 0)
    with torch.no_grad():
        fmod = fcls(in_ch, out_ch, k, **kw)
        fmod.weight.copy_(w.detach())
        if b is not None:
            fmod.bias.copy_(b.detach())
    if qp is None:
        qp = resolve_float_qparams(float_qparams, name, fmod)
        if qp is None:
            return target, None, fmod
    return target, fmod, qp


def functional_convs(gm, float_qparams=None, prefixes: Optional[_Prefixes] = None):
    """Functional convolutions of an FX graph: a list of dicts with keys
    ``kind`` ('reference' | 'lowered' | 'float-skipped' | 'error'), ``node``, ``name`` (prefix
    without dot) and the entries (``tensors``, ``meta``) or ``error``."""
    prefixes = prefixes or _Prefixes()
    out = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        op = _op_name(node.target)
        if node.target in FUNCTIONAL_CONVS:
            wn = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
            try:
                dw = _dequantized_weight(gm, wn)
            except (ValueError, AttributeError, KeyError, IndexError):
                dw = None
            owner = _owner_prefix(node, dw[0] if dw else None)
            name = prefixes.take(owner, node.name)
            try:
                _, mod, qp = _reference_from_call(gm, node, float_qparams, name)
            except (ValueError, TypeError, KeyError, RuntimeError, IndexError) as e:
                out.append(dict(kind="error", node=node, name=name, error=str(e)))
                continue
            if mod is None:
                out.append(dict(kind="float-skipped", node=node, name=name))
                continue
            t, m = module_entries(name + ".", mod, qp)
            out.append(dict(kind="reference", node=node, name=name, tensors=t, meta=m))
        elif op is not None and op in LOWERED_OPS:
            owner = _owner_prefix(node, None)
            name = prefixes.take(owner, node.name)
            try:
                packed = _resolve(gm, node.args[1])
                scale, zp = float(_num(_resolve(gm, node.args[2]))), int(_num(_resolve(gm, node.args[3])))
                iq = trace_input_qparams(gm, node)
                if iq is None:
                    print(f"warning: {name + '.'!r}: input qparams not found in the graph; omitted", file=sys.stderr)
                t, m = lowered_op_entries(name + ".", op, packed, scale, zp, iq)
            except (ValueError, TypeError, RuntimeError, AttributeError) as e:
                out.append(dict(kind="error", node=node, name=name, error=str(e)))
                continue
            out.append(dict(kind="lowered", node=node, name=name, tensors=t, meta=m))
        elif op is not None and (op.startswith("conv") and not op.endswith(("prepack", "unpack"))):
            out.append(dict(kind="error", node=node, name=node.name,
                            error=f"quantized::{op} has no qconv counterpart"))
    return out


def _safe_resolve(gm, n):
    try:
        return _resolve(gm, n)
    except (ValueError, AttributeError):
        return None


def _module_call_nodes(gm) -> Dict[str, list]:
    calls: Dict[str, list] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
    return calls


# ============================================================================ TorchScript

_TS_INT8 = {}
for _n in (1, 2, 3):
    _TS_INT8[f"torch.ao.nn.quantized.modules.conv.Conv{_n}d"] = (f"QuantizedConv{_n}d", False)
    _TS_INT8[f"torch.ao.nn.quantized.modules.conv.ConvTranspose{_n}d"] = (f"QuantizedConvTranspose{_n}d", False)
    _TS_INT8[f"torch.ao.nn.intrinsic.quantized.modules.conv_relu.ConvReLU{_n}d"] = (f"QuantizedConv{_n}d", True)
_TS_PASS_MODULES = {f"torch.nn.modules.{m}" for m in (
    "activation.ReLU", "activation.ReLU6", "dropout.Dropout", "dropout.Dropout1d", "dropout.Dropout2d",
    "dropout.Dropout3d", "dropout.AlphaDropout", "linear.Identity", "flatten.Flatten")} | {
    f"torch.nn.modules.pooling.{p}{n}d" for p in ("MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool")
    for n in (1, 2, 3)} | {"torch.ao.nn.quantized.modules.dropout.Dropout"}
_TS_PASS_OPS = {"aten::relu", "aten::relu_", "aten::relu6", "aten::hardtanh", "aten::flatten", "aten::reshape",
                "aten::view", "aten::contiguous", "aten::dropout", "aten::feature_dropout", "aten::alpha_dropout",
                "aten::squeeze", "aten::unsqueeze"} | {
    f"aten::{p}{n}d" for p in ("max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool") for n in (1, 2, 3)}


def _ts_type_name(m) -> str:
    name = m._c._type().qualified_name()
    name = re.sub(r"___torch_mangle_\d+\.", "", name)
    return name[len("__torch__."):] if name.startswith("__torch__.") else name


def _ts_module_at(root, path: str):
    m = root
    for part in path.split(".") if path else []:
        m = getattr(m, part)
    return m


class _TSGraph:
    """Values of a scripted module's forward graph: module paths, attributes and constants."""

    def __init__(self, root):
        self.root = root
        self.graph = root.graph
        self.mod_path = {}       # Value -> module path
        self.attr = {}           # Value -> (module path, attribute name)
        self.producer = {}       # Value -> Node
        inputs = list(self.graph.inputs())
        self.mod_path[inputs[0]] = ""
        for node in self.graph.nodes():
            for o in node.outputs():
                self.producer[o] = node
            if node.kind() == "prim::GetAttr":
                parent = node.inputsAt(0)
                if parent in self.mod_path:
                    base = self.mod_path[parent]
                    name = node.s("name")
                    path = f"{base}.{name}" if base else name
                    if node.output().type().kind() == "ClassType" and \
                            isinstance(getattr(_ts_module_at(root, base), name, None), torch.jit.ScriptModule):
                        self.mod_path[node.output()] = path
                    else:
                        self.attr[node.output()] = (base, name)

    def value(self, v):
        if v in self.attr:
            base, name = self.attr[v]
            return getattr(_ts_module_at(self.root, base), name)
        node = self.producer.get(v)
        if node is not None and node.kind() == "prim::Constant":
            return v.toIValue()
        if node is not None and node.kind() in ("aten::FloatImplicit", "aten::IntImplicit", "aten::Float",
                                                "aten::Int", "aten::ScalarImplicit"):
            return self.value(node.inputsAt(0))
        raise ValueError("value computed at run time")

    def input_qparams(self, v) -> Optional[Tuple[float, int]]:
        for _ in range(1000):
            node = self.producer.get(v)
            if node is None:
                return None
            k = node.kind()
            if k == "aten::quantize_per_tensor":
                try:
                    return float(_num(self.value(node.inputsAt(1)))), int(_num(self.value(node.inputsAt(2))))
                except (ValueError, RuntimeError):
                    return None
            if k in _TS_PASS_OPS:
                v = node.inputsAt(0)
                continue
            if k == "prim::CallMethod" and node.s("name") == "forward":
                mv = node.inputsAt(0)
                if mv not in self.mod_path:
                    return None
                m = _ts_module_at(self.root, self.mod_path[mv])
                tn = _ts_type_name(m)
                if tn in _TS_PASS_MODULES:
                    v = node.inputsAt(1)
                    continue
                if (tn.startswith("torch.ao.nn.quantized") or tn.startswith("torch.ao.nn.intrinsic.quantized")) \
                        and hasattr(m, "scale") and hasattr(m, "zero_point"):
                    return float(_num(m.scale)), int(_num(m.zero_point))
                return None
            if k.startswith("quantized::"):
                ins = list(node.inputs())
                try:
                    s, z = _num(self.value(ins[-2])), _num(self.value(ins[-1]))
                    if isinstance(s, float) and isinstance(z, int):
                        return s, z
                except (ValueError, RuntimeError):
                    pass
                return None
            return None
        return None


def torchscript_convs(sm, prefixes: Optional[_Prefixes] = None):
    """Convolutions of a scripted/loaded TorchScript module (lowered modules and lowered functional
    ops; module calls are found in the top-level forward graph, as in a scripted FX GraphModule)."""
    prefixes = prefixes or _Prefixes()
    g = _TSGraph(sm)
    out = []
    called = set()
    for node in g.graph.nodes():
        k = node.kind()
        if k == "prim::CallMethod" and node.s("name") == "forward" and node.inputsAt(0) in g.mod_path:
            path = g.mod_path[node.inputsAt(0)]
            m = _ts_module_at(sm, path)
            tn = _ts_type_name(m)
            if tn in _TS_INT8:
                if path in called:
                    continue
                called.add(path)
                type_name, relu = _TS_INT8[tn]
                name = prefixes.take(path, path.replace(".", "_") or "module")
                iq = g.input_qparams(node.inputsAt(1))
                if iq is None:
                    print(f"warning: {name + '.'!r}: input qparams not found in the graph; omitted", file=sys.stderr)
                w, b = m._weight_bias()
                codes, ws, wz, axis = _weight_qparams_of(w, name + ".")
                tr = type_name.startswith("QuantizedConvTranspose")
                t, meta = int8_entries(
                    name + ".", type_name=type_name, in_channels=m.in_channels, out_channels=m.out_channels,
                    kernel_size=m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation,
                    groups=m.groups, padding_mode=m.padding_mode, output_padding=m.output_padding if tr else None,
                    relu=relu, weight=codes, weight_scale=ws, weight_zero_point=wz, weight_axis=axis, bias=b,
                    scale=m.scale, zero_point=m.zero_point, input_scale=iq[0] if iq else None,
                    input_zero_point=iq[1] if iq else None)
                out.append(dict(kind="lowered", name=name, tensors=t, meta=meta))
            elif "conv" in tn.lower() and (tn.startswith("torch.ao.nn") or tn.startswith("torch.nn.modules.conv")):
                kind = "float-skipped" if tn.startswith("torch.nn.modules.conv") else "error"
                out.append(dict(kind=kind, name=path, error=f"{tn} is not supported from a TorchScript file"))
        elif k.startswith("quantized::") and k.split("::", 1)[1] in LOWERED_OPS:
            op = k.split("::", 1)[1]
            pv = node.inputsAt(1)
            debug = node.output().debugName().split(".")[0]
            attr = g.attr.get(pv, ("", debug))[1]
            base = re.sub(r"_packed_weight_\d+$", "", attr)
            name = prefixes.take(base if base and base != attr else None, debug)
            try:
                packed = g.value(pv)
                scale, zp = float(_num(g.value(node.inputsAt(2)))), int(_num(g.value(node.inputsAt(3))))
                iq = g.input_qparams(node.inputsAt(0))
                if iq is None:
                    print(f"warning: {name + '.'!r}: input qparams not found in the graph; omitted", file=sys.stderr)
                t, meta = lowered_op_entries(name + ".", op, packed, scale, zp, iq)
            except (ValueError, RuntimeError, AttributeError) as e:
                out.append(dict(kind="error", name=name, error=str(e)))
                continue
            out.append(dict(kind="lowered", name=name, tensors=t, meta=meta))
        elif k in ("aten::conv1d", "aten::conv2d", "aten::conv3d", "aten::conv_transpose1d",
                   "aten::conv_transpose2d", "aten::conv_transpose3d", "aten::_convolution"):
            out.append(dict(kind="error", name=node.output().debugName(),
                            error=f"functional {k} in a TorchScript file (export reference models in process)"))
    # lowered conv modules that the top-level graph does not call (e.g. nested in a scripted eager
    # model): exported without input qparams
    for path, m in sm.named_modules():
        if path and _ts_type_name(m) in _TS_INT8 and path not in called:
            type_name, relu = _TS_INT8[_ts_type_name(m)]
            name = prefixes.take(path, path.replace(".", "_"))
            print(f"warning: {name + '.'!r}: not called by the top-level graph; input qparams omitted",
                  file=sys.stderr)
            w, b = m._weight_bias()
            codes, ws, wz, axis = _weight_qparams_of(w, name + ".")
            tr = type_name.startswith("QuantizedConvTranspose")
            t, meta = int8_entries(
                name + ".", type_name=type_name, in_channels=m.in_channels, out_channels=m.out_channels,
                kernel_size=m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups,
                padding_mode=m.padding_mode, output_padding=m.output_padding if tr else None, relu=relu,
                weight=codes, weight_scale=ws, weight_zero_point=wz, weight_axis=axis, bias=b, scale=m.scale,
                zero_point=m.zero_point)
            out.append(dict(kind="lowered", name=name, tensors=t, meta=meta))
    return out


# ============================================================================ whole models

class ExportError(ValueError):
    """Some convolutions of the model cannot be exported (the message names each one)."""


def _collect(model, float_qparams: QParamsSpec = None) -> list:
    """Every convolution of `model` as a list of dicts (kind, name, tensors, meta | error)."""
    prefixes = _Prefixes()
    items = []
    if isinstance(model, torch.jit.ScriptModule):
        return torchscript_convs(model, prefixes)
    calls = _module_call_nodes(model) if _is_fx(model) else {}
    mods = list(model.named_modules())
    for name, mod in mods:   # conv module paths first: functional convs must not take them
        if ref_type_name(mod) or int8_type_name(mod) or type(mod) in FLOAT_TYPES:
            prefixes.used.add(name)
    for name, mod in mods:
        prefix = name + "." if name else ""
        if ref_type_name(mod) is not None:
            t, m = module_entries(prefix, mod)
            items.append(dict(kind="reference", name=name, tensors=t, meta=m))
        elif int8_type_name(mod) is not None:
            iq = None
            if _is_fx(model):
                found = [trace_input_qparams(model, n) for n in calls.get(name, [])]
                found = [f for f in found if f is not None]
                if found:
                    iq = found[0]
                    if any(f != iq for f in found[1:]):
                        print(f"warning: {prefix!r} is called with different input qparams; using the first",
                              file=sys.stderr)
            if iq is None:
                why = "not found in the graph" if _is_fx(model) else "unknown (the model is not an FX GraphModule)"
                print(f"warning: {prefix!r}: input qparams {why}; omitted", file=sys.stderr)
            t, m = lowered_module_entries(prefix, mod, iq)
            items.append(dict(kind="lowered", name=name, tensors=t, meta=m))
        elif isinstance(mod, UNSUPPORTED_QUANTIZED):
            items.append(dict(kind="error", name=name, error=f"{type(mod).__name__} has no qconv counterpart"))
        elif type(mod) in FLOAT_TYPES:
            qp = resolve_float_qparams(float_qparams, name, mod)
            if qp is None:
                items.append(dict(kind="float-skipped", name=name))
                continue
            t, m = module_entries(prefix, mod, qp)
            items.append(dict(kind="reference", name=name, tensors=t, meta=m))
    if _is_fx(model):
        items.extend(functional_convs(model, float_qparams, prefixes))
    return items


def model_entries(model, float_qparams: QParamsSpec = None
                  ) -> Tuple[Dict[str, torch.Tensor], Dict[str, str], list]:
    """(tensors, metadata, names) of every convolution in `model`; raises ExportError naming every
    convolution that cannot be exported."""
    items = _collect(model, float_qparams)
    errors = [it for it in items if it["kind"] == "error"]
    if errors:
        lines = [f"  {it['name'] + '.'!r}: {it['error']}" for it in errors]
        raise ExportError(f"{len(errors)} convolution(s) cannot be exported:\n" + "\n".join(lines))
    tensors: Dict[str, torch.Tensor] = {}
    meta: Dict[str, str] = {}
    names = []
    for it in items:
        if it["kind"] == "float-skipped":
            print(f"warning: skipping float conv {it['name'] + '.'!r} (no float_qparams)", file=sys.stderr)
            continue
        tensors.update(it["tensors"])
        meta.update(it["meta"])
        names.append(it["name"])
    return tensors, meta, names


def save(tensors: Dict[str, torch.Tensor], meta: Dict[str, str], path: str) -> None:
    """safetensors.torch.save, with the header's metadata sorted so output is byte-reproducible.

    (The safetensors writer keeps ``__metadata__`` in a hash map, so its key order -- and the
    file bytes -- change from run to run.  Tensor order and data offsets are deterministic.)
    """
    import struct

    from safetensors.torch import save as st_save

    raw = st_save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta)
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    hb = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        f.write(raw[8 + n:])


class DemoNet(nn.Module):
    """Small deterministic net: Conv2d+ReLU (fused), grouped Conv2d, ConvTranspose2d, Conv1d."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, (3, 2), stride=(1, 2), groups=2, bias=False)
        self.up = nn.ConvTranspose2d(4, 2, 2, stride=2)
        self.head = nn.Conv1d(2, 3, 3, dilation=2)

    def forward(self, x):
        y = self.up(self.conv2(self.relu(self.conv1(x))))
        return self.head(y.flatten(2))


def demo_reference_model():
    """DemoNet quantized with the x86 qconfig through prepare_fx + convert_to_reference_fx."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_to_reference_fx, prepare_fx

    torch.manual_seed(0)
    model = DemoNet().eval()
    x = torch.randn(2, 3, 8, 8)
    prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), (x,))
    with torch.no_grad():
        prepared(x)
        prepared(torch.randn(2, 3, 8, 8))
    return convert_to_reference_fx(prepared), x


def export_model(model, path: str, float_qparams: QParamsSpec = None) -> list:
    """Write every conv of `model` to `path`; returns the list of module names written (the
    prefixes without their trailing dot).  `model`: an nn.Module, an FX GraphModule (reference or
    lowered) or a TorchScript module."""
    tensors, meta, names = model_entries(model, float_qparams)
    if not names:
        raise ExportError("no exportable conv module found")
    meta["__format__"] = FORMAT_VERSION
    meta["__torch_version__"] = torch.__version__
    meta["__modules__"] = json.dumps(names)
    save(tensors, meta, path)
    return names


def prefix_list(names) -> str:
    """The prefixes as `qconv --prefix` takes them: 'conv1.0.', and '' for a root module."""
    return " ".join((n + ".") if n else "''" for n in names)


def _is_torchscript_file(path: str) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_model(path: str):
    """A TorchScript file (torch.jit.save) or a pickled model (torch.save)."""
    if _is_torchscript_file(path):
        return torch.jit.load(path, map_location="cpu")
    try:
        return torch.load(path, weights_only=False, map_location="cpu")
    except AttributeError as e:
        if "_modules" in str(e):
            raise ExportError(
                f"torch.load({path!r}) failed inside PyTorch ({e}); lowered models with fused ConvReLU modules "
                "do not survive torch.save/torch.load -- save with torch.jit.save(torch.jit.script(model), path)"
            ) from e
        raise


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", action="store_true", help="export the built-in demo net (one positional: OUT)")
    ap.add_argument("--float-qparams", default="skip", choices=["skip", "x86", "per-tensor", "float"],
                    help="how to export plain float convs (default: skip them, with a warning)")
    ap.add_argument("paths", nargs="+",
                    help="MODEL OUT.safetensors (MODEL: torch.jit.save or torch.save file), "
                         "or OUT.safetensors with --demo")
    a = ap.parse_args(argv)
    try:
        if a.demo:
            if len(a.paths) != 1:
                ap.error("--demo takes one path: OUT.safetensors")
            model, _ = demo_reference_model()
            out = a.paths[0]
        else:
            if len(a.paths) != 2:
                ap.error("expected MODEL OUT.safetensors")
            model = load_model(a.paths[0])
            out = a.paths[1]
        names = export_model(model, out, a.float_qparams)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}: {len(names)} module(s), prefixes: {prefix_list(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
