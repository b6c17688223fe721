#!/usr/bin/env python3
"""Export PyTorch (reference-quantized) convolutions to qconv's safetensors model format.

qconv reimplements ``torch.ao.nn.quantized.reference`` Conv1d/2d/3d and
ConvTranspose1d/2d/3d.  This module writes every such module of a PyTorch model into one
safetensors file that the Rust crate reads (``qconv::io``).

Format
------
A module is stored under a *prefix* ``{p}``: its ``named_modules()`` name followed by a dot
(``"layer1.0.conv1."``), or ``""`` for a model that is itself a single conv.

Tensors (all contiguous, little endian, as safetensors stores them):

``{p}weight``             f32. PyTorch layout: conv ``(out, in/groups, *k)``,
                          transposed conv ``(in, out/groups, *k)``.
``{p}bias``               f32 ``(out,)``; absent when the module has no bias.
``{p}weight_scale``       f32 or f64 (the dtype the module holds); shape ``()``, ``(1,)`` or ``(C,)``.
``{p}weight_zero_point``  i32, i64 or f32 (the dtype the module holds; other integer dtypes are
                          widened to i64, f16/bf16/f64 are converted to f32 -- the same casts the
                          ATen quantizers apply, so numerics are unchanged).
``{p}weight_axis``        i32 or i64 scalar (``()``): the per-channel axis actually used
                          (``weight_axis_int``).  Written whenever the module has it (0 for
                          per-tensor, where it is meaningless).

For qscheme ``None`` only ``weight`` (and ``bias``) are needed; scale/zero point/axis are still
written when the module holds them.

String metadata (safetensors ``__metadata__``, all values are strings):

``{p}weight_qscheme``     ``"torch.per_tensor_affine"`` | ``"torch.per_channel_affine"`` |
                          ``"torch.per_channel_affine_float_qparams"`` | ``"None"``
``{p}weight_dtype``       ``str(dtype)``: ``"torch.quint8"``, ``"torch.qint8"``, ``"torch.qint32"``,
                          ``"torch.quint4x2"``, ``"torch.float16"``, ``"torch.float32"``, ...
``{p}module``             JSON object::

                            {"type": "Conv1d"|"Conv2d"|"Conv3d"|"ConvTranspose1d"|...,
                             "in_channels": int, "out_channels": int,
                             "kernel_size": [..], "stride": [..],
                             "padding": [..] | "same" | "valid",
                             "dilation": [..], "groups": int, "bias": bool,
                             "padding_mode": "zeros"|"reflect"|"replicate"|"circular",
                             "output_padding": [..]}          # transposed only

``{p}is_decomposed``      ``"true"`` | ``"false"``
``{p}weight_quant_min``   decimal integer, only when the module's value is not None
``{p}weight_quant_max``   decimal integer, only when the module's value is not None

File-level metadata: ``__format__ = "qconv-modules-v1"``, ``__torch_version__``,
``__modules__`` = JSON list of the prefixes written (without the trailing dot).

Plain float ``nn.ConvNd`` / ``nn.ConvTransposeNd`` modules are skipped unless ``float_qparams``
says how to quantize them:

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

``MODEL.pt`` is a full pickled model (``torch.save(model)``), loaded with
``torch.load(..., weights_only=False)`` -- only load files you trust.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn

for _msg in (".*quantized tensor creation functions.*", ".*torch.ao.quantization is deprecated.*",
             ".*reduce_range will be deprecated.*"):
    warnings.filterwarnings("ignore", message=_msg)

try:  # registers torch.ops.quantized_decomposed (needed by is_decomposed modules)
    import torch.ao.quantization.fx._decomposed  # noqa: F401
except Exception:  # pragma: no cover
    pass

import torch.ao.nn.quantized.reference as nnqr

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


def model_entries(model: nn.Module, float_qparams: QParamsSpec = None
                  ) -> Tuple[Dict[str, torch.Tensor], Dict[str, str], list]:
    tensors: Dict[str, torch.Tensor] = {}
    meta: Dict[str, str] = {}
    names = []
    for name, mod in model.named_modules():
        prefix = name + "." if name else ""
        if ref_type_name(mod) is not None:
            t, m = module_entries(prefix, mod)
        elif type(mod) in FLOAT_TYPES:
            qp = resolve_float_qparams(float_qparams, name, mod)
            if qp is None:
                print(f"warning: skipping float {type(mod).__name__} {name!r} (no float_qparams)", file=sys.stderr)
                continue
            t, m = module_entries(prefix, mod, qp)
        else:
            continue
        tensors.update(t)
        meta.update(m)
        names.append(name)
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


def export_model(model: nn.Module, path: str, float_qparams: QParamsSpec = None) -> list:
    """Write every conv of `model` to `path`; returns the list of module names written."""
    tensors, meta, names = model_entries(model, float_qparams)
    if not names:
        raise ValueError("no exportable conv module found")
    meta["__format__"] = FORMAT_VERSION
    meta["__torch_version__"] = torch.__version__
    meta["__modules__"] = json.dumps(names)
    save(tensors, meta, path)
    return names


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", action="store_true", help="export the built-in demo net (one positional: OUT)")
    ap.add_argument("--float-qparams", default="skip", choices=["skip", "x86", "per-tensor", "float"],
                    help="how to export plain float convs (default: skip them)")
    ap.add_argument("paths", nargs="+", help="MODEL.pt OUT.safetensors, or OUT.safetensors with --demo")
    a = ap.parse_args(argv)
    if a.demo:
        if len(a.paths) != 1:
            ap.error("--demo takes one path: OUT.safetensors")
        model, _ = demo_reference_model()
        out = a.paths[0]
    else:
        if len(a.paths) != 2:
            ap.error("expected MODEL.pt OUT.safetensors")
        model = torch.load(a.paths[0], weights_only=False, map_location="cpu")
        out = a.paths[1]
    try:
        names = export_model(model, out, a.float_qparams)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {len(names)} module(s): {', '.join(repr(n) for n in names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
