#!/usr/bin/env python3
"""Tests of scripts/export_pytorch.py (plain unittest; about 10 s; needs torch, numpy, safetensors).

    python scripts/test_export.py [-v]

Without torch installed it prints a skip line and exits 0.

* A reference model (``convert_to_reference_fx``) whose ``Conv3d`` subclass FX traced through
  (torchvision r3d_18's pattern) and a module calling ``F.conv2d(x, self.weight)``: every
  convolution is exported (count asserted), functional ones under the path of the module that
  owns the weight, with the graph's weight and qparams.
* A Conv2d subclass with reflect / circular padding (FX: F.pad + conv2d with padding 0) is exported
  with its padding and padding_mode.
* A functional convolution whose weight is computed at run time makes the export fail, naming it.
* A lowered model (``convert_fx``) with ConvReLU2d + ConvTranspose2d + Conv1d, exported in process
  and from a TorchScript file through the command line: codes, qparams, bias and hyper-parameters
  read back equal the torch modules; input qparams are traced through relu/maxpool/dropout/
  flatten; running the exported entries with scripts/int8_reference.py reproduces the modules'
  output codes bit for bit, and so does `qconv run` on the exported file (u8 codes in, and a float
  input quantized with the stored input qparams; skipped unless target/release/qconv or $QCONV_BIN
  exists).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest
import warnings

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from safetensors import safe_open
except ImportError:  # pragma: no cover
    print("test_export.py: skipped (torch / safetensors not installed)")
    sys.exit(0)

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import export_pytorch as ep  # noqa: E402
import int8_reference as ir  # noqa: E402

warnings.filterwarnings("ignore")
from torch.ao.quantization import get_default_qconfig_mapping  # noqa: E402
from torch.ao.quantization.quantize_fx import convert_fx, convert_to_reference_fx, prepare_fx  # noqa: E402
import torch.ao.nn.quantized as nnq  # noqa: E402
import torch.ao.nn.intrinsic.quantized as nniq  # noqa: E402


def read(path):
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def quiet(fn, *a, **k):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        r = fn(*a, **k)
    return r, err.getvalue()


def calibrate(model, example, engine="x86"):
    torch.backends.quantized.engine = engine
    p = prepare_fx(model, get_default_qconfig_mapping(engine), (example,))
    with torch.no_grad():
        p(example)
        p(example * 1.5)
    return p


# ----------------------------------------------------------------------------- reference models

class Conv3DSimple(nn.Conv3d):
    """torchvision.models.video.resnet.Conv3DSimple: a Conv3d subclass, so FX traces into it."""

    def __init__(self, cin, cout, stride=1, padding=1):
        super().__init__(cin, cout, kernel_size=(3, 3, 3), stride=stride, padding=padding, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Sequential(Conv3DSimple(c, c), nn.BatchNorm3d(c), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(Conv3DSimple(c, c), nn.BatchNorm3d(c))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.conv2(self.conv1(x)) + x)


class Proj(nn.Module):
    """A module calling F.conv2d(x, self.weight) directly."""

    def __init__(self, cin, cout):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 1, 1) * 0.2)

    def forward(self, x):
        return F.conv2d(x, self.weight)


class R3DLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 4, (1, 3, 3), padding=(0, 1, 1), bias=False), nn.BatchNorm3d(4),
                                  nn.ReLU(inplace=True))
        self.layer1 = nn.Sequential(BasicBlock(4), BasicBlock(4))
        self.proj = Proj(4, 6)

    def forward(self, x):
        y = self.layer1(self.stem(x))
        return self.proj(y.mean(2))


class PaddedConv(nn.Conv2d):
    """A Conv2d subclass with a padding mode: FX records F.pad + conv2d(padding=0)."""


class PaddedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = PaddedConv(3, 4, 3, padding=1, padding_mode="reflect")
        self.b = PaddedConv(4, 4, 3, padding=(1, 2), padding_mode="circular")

    def forward(self, x):
        return self.b(self.a(x))


class ComputedWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.w = nn.Parameter(torch.randn(5, 4, 1, 1))

    def forward(self, x):
        return F.conv2d(self.conv(x), self.w * 2.0)


class ReferenceExport(unittest.TestCase):
    def test_conv3d_subclass_and_functional_conv(self):
        torch.manual_seed(0)
        x = torch.randn(1, 3, 4, 6, 6)
        ref = convert_to_reference_fx(calibrate(R3DLike().eval(), x))
        n_float = sum(isinstance(m, (nn.Conv2d, nn.Conv3d)) for m in R3DLike().modules())
        n_func = sum(1 for n in ref.graph.nodes if n.op == "call_function" and n.target in ep.FUNCTIONAL_CONVS)
        self.assertEqual(n_func, 5, "4 traced-through Conv3DSimple + 1 F.conv2d")
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "r.safetensors")
            names, log = quiet(ep.export_model, ref, path)
            self.assertEqual(len(names), n_float + 1, names)     # 5 Conv3d (4 traced through) + the F.conv2d
            self.assertEqual(sorted(names), sorted(["stem.0.0", "layer1.0.conv1.0", "layer1.0.conv2.0",
                                                    "layer1.1.conv1.0", "layer1.1.conv2.0", "proj"]))
            t, md = read(path)
            self.assertEqual(json.loads(md["__modules__"]), names)
            # a traced-through conv: weight and per-channel qparams as in the graph
            m = json.loads(md["layer1.0.conv1.0.module"])
            self.assertEqual((m["type"], m["kernel_size"], m["padding"], m["bias"]), ("Conv3d", [3, 3, 3], [1, 1, 1],
                                                                                     False))
            w_graph = ref.get_parameter("layer1.0.conv1.0.weight")
            self.assertTrue(torch.equal(t["layer1.0.conv1.0.weight"], w_graph.detach()))
            qnode = next(n for n in ref.graph.nodes if n.op == "call_function" and n.target is torch.quantize_per_channel
                         and n.args[0].target == "layer1.0.conv1.0.weight")
            self.assertTrue(torch.equal(t["layer1.0.conv1.0.weight_scale"], getattr(ref, qnode.args[1].target)))
            self.assertEqual(md["layer1.0.conv1.0.weight_qscheme"], "torch.per_channel_affine")
            # the F.conv2d(x, self.weight): prefix = the owning module's path
            m = json.loads(md["proj.module"])
            self.assertEqual((m["type"], m["in_channels"], m["out_channels"], m["bias"]), ("Conv2d", 4, 6, False))
            self.assertTrue(torch.equal(t["proj.weight"], ref.get_parameter("proj.weight").detach()))
            # the exported reference modules reproduce the functional calls' fake-quantized weights
            import torch.ao.nn.quantized.reference as nnqr
            scale = t["proj.weight_scale"]
            mod = nnqr.Conv2d(4, 6, 1, bias=False, weight_qparams=dict(
                qscheme=torch.per_channel_affine, dtype=torch.qint8, scale=scale, zero_point=t["proj.weight_zero_point"],
                axis=int(t["proj.weight_axis"])))
            with torch.no_grad():
                mod.weight.copy_(t["proj.weight"])
            deq = next(n for n in ref.graph.nodes if n.op == "call_function" and n.target is torch.conv2d).args[1]
            with torch.no_grad():
                q = deq.args[0]
                w_expected = torch.quantize_per_channel(ref.get_parameter("proj.weight"), getattr(ref, q.args[1].target),
                                                        getattr(ref, q.args[2].target), q.args[3], q.args[4]).dequantize()
            self.assertTrue(torch.equal(mod.get_weight(), w_expected))

    def test_cli_prints_prefixes_with_the_trailing_dot(self):
        torch.manual_seed(0)
        x = torch.randn(1, 3, 4, 6, 6)
        ref = convert_to_reference_fx(calibrate(R3DLike().eval(), x))
        with tempfile.TemporaryDirectory() as d:
            model_path, out = os.path.join(d, "m.pt"), os.path.join(d, "o.safetensors")
            torch.save(ref, model_path)
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
                rc = ep.main([model_path, out])
            self.assertEqual(rc, 0)
            self.assertIn("prefixes: stem.0.0. layer1.0.conv1.0. layer1.0.conv2.0.", buf.getvalue())
            self.assertIn(" proj.", buf.getvalue())

    def test_functional_conv_after_pad_keeps_the_padding_mode(self):
        torch.manual_seed(0)
        x = torch.randn(1, 3, 6, 7)
        ref = convert_to_reference_fx(calibrate(PaddedNet().eval(), x))
        self.assertTrue(any(n.target is F.pad for n in ref.graph.nodes))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "p.safetensors")
            names, _ = quiet(ep.export_model, ref, path)
            self.assertEqual(names, ["a", "b"])
            _, md = read(path)
            a, b = json.loads(md["a.module"]), json.loads(md["b.module"])
            self.assertEqual((a["padding"], a["padding_mode"]), ([1, 1], "reflect"))
            self.assertEqual((b["padding"], b["padding_mode"]), ([1, 2], "circular"))

    def test_unexportable_functional_conv_fails_naming_it(self):
        torch.manual_seed(0)
        x = torch.randn(1, 3, 6, 6)
        ref = convert_to_reference_fx(calibrate(ComputedWeight().eval(), x))
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(ep.ExportError) as cm:
                quiet(ep.export_model, ref, os.path.join(d, "x.safetensors"))
            self.assertIn("'conv2d.'", str(cm.exception))
            self.assertIn("1 convolution(s) cannot be exported", str(cm.exception))
            self.assertFalse(os.path.exists(os.path.join(d, "x.safetensors")))


# ----------------------------------------------------------------------------- lowered models

class LoweredNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2, output_padding=0)
        self.drop = nn.Dropout(0.1)
        self.c3 = nn.Conv1d(4, 5, 3, stride=2, dilation=2, bias=False)

    def forward(self, x):
        y = self.pool(self.relu(self.c1(x)))      # fused into ConvReLU2d
        y = self.drop(self.up(y))
        return self.c3(torch.flatten(y, 2))


def lowered_model():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 8, 8)
    q = convert_fx(calibrate(LoweredNet().eval(), x, engine="fbgemm"))
    return q, x


class LoweredExport(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.q, cls.x = lowered_model()
        torch.backends.quantized.engine = "fbgemm"
        # every module's input and output, for the end-to-end check
        cls.io = {}
        hooks = [m.register_forward_hook(lambda mod, i, o, n=n: cls.io.__setitem__(n, (i[0], o)))
                 for n, m in cls.q.named_modules() if ep.int8_type_name(m)]
        with torch.no_grad():
            cls.q(cls.x)
        for h in hooks:
            h.remove()

    def check_file(self, path, names):
        self.assertEqual(sorted(names), ["c1", "c3", "up"])
        t, md = read(path)
        self.assertEqual(json.loads(md["__modules__"]), names)
        types = {"c1": (nniq.ConvReLU2d, "QuantizedConv2d", True), "up": (nnq.ConvTranspose2d,
                                                                          "QuantizedConvTranspose2d", False),
                 "c3": (nnq.Conv1d, "QuantizedConv1d", False)}
        for n, (cls_, tname, relu) in types.items():
            mod = self.q.get_submodule(n)
            self.assertIs(type(mod), cls_)
            p = n + "."
            w, b = mod._weight_bias()
            self.assertEqual(t[p + "weight"].dtype, torch.int8)
            self.assertTrue(torch.equal(t[p + "weight"], w.int_repr()))
            if w.qscheme() == torch.per_channel_affine:
                self.assertEqual(md[p + "weight_qscheme"], "torch.per_channel_affine")
                self.assertTrue(torch.equal(t[p + "weight_scale"], w.q_per_channel_scales()))
                self.assertEqual(t[p + "weight_scale"].dtype, torch.float64)
                self.assertTrue(torch.equal(t[p + "weight_zero_point"], w.q_per_channel_zero_points()))
                self.assertEqual(int(t[p + "weight_axis"]), 0)
                self.assertEqual(t[p + "weight_axis"].dtype, torch.int64)
            else:
                self.assertEqual(md[p + "weight_qscheme"], "torch.per_tensor_affine")
                self.assertEqual(t[p + "weight_scale"].shape, ())
                self.assertEqual(float(t[p + "weight_scale"]), w.q_scale())
                self.assertEqual(int(t[p + "weight_zero_point"]), w.q_zero_point())
                self.assertNotIn(p + "weight_axis", t)
            self.assertEqual(md[p + "weight_dtype"], "torch.qint8")
            if b is None:
                self.assertNotIn(p + "bias", t)
            else:
                self.assertTrue(torch.equal(t[p + "bias"], b))
            self.assertEqual((t[p + "scale"].dtype, t[p + "zero_point"].dtype), (torch.float64, torch.int64))
            self.assertEqual(float(t[p + "scale"]), mod.scale)
            self.assertEqual(int(t[p + "zero_point"]), mod.zero_point)
            m = json.loads(md[p + "module"])
            self.assertEqual((m["type"], m["relu"]), (tname, relu))
            self.assertEqual((m["in_channels"], m["out_channels"], m["groups"], m["bias"]),
                             (mod.in_channels, mod.out_channels, mod.groups, b is not None))
            for k in ("kernel_size", "stride", "padding", "dilation"):
                self.assertEqual(m[k], list(getattr(mod, k)), k)
            self.assertEqual(m["padding_mode"], "zeros")
            self.assertEqual("output_padding" in m, tname.startswith("QuantizedConvTranspose"))
        # input qparams: c1 from the quantize node, up through ReLU (fused) + MaxPool from c1,
        # c3 through Dropout + flatten from up
        qnode = next(n for n in self.q.graph.nodes if n.target is torch.quantize_per_tensor)
        in_scale = float(getattr(self.q, qnode.args[1].target))
        in_zp = int(getattr(self.q, qnode.args[2].target))
        expect = {"c1": (in_scale, in_zp), "up": (self.q.c1.scale, self.q.c1.zero_point),
                  "c3": (self.q.up.scale, self.q.up.zero_point)}
        for n, (s, z) in expect.items():
            self.assertEqual(float(t[n + ".input_scale"]), s, n)
            self.assertEqual(int(t[n + ".input_zero_point"]), z, n)
            xin, yout = self.io[n]
            self.assertEqual((xin.q_scale(), xin.q_zero_point()), (s, z), n)
        # end to end: the exported entries + int8_reference reproduce every module's output codes
        for n in ("c1", "up", "c3"):
            p = n + "."
            m = json.loads(md[p + "module"])
            xin, yout = self.io[n]
            y = ir.qconv_int8(
                xin.int_repr().numpy(), float(t[p + "input_scale"]), int(t[p + "input_zero_point"]),
                t[p + "weight"].numpy(), t[p + "weight_scale"].numpy(), t[p + "weight_zero_point"].numpy(),
                t[p + "bias"].numpy() if p + "bias" in t else None, float(t[p + "scale"]), int(t[p + "zero_point"]),
                stride=m["stride"], padding=m["padding"], dilation=m["dilation"], groups=m["groups"],
                transposed=m["type"].startswith("QuantizedConvTranspose"),
                output_padding=m.get("output_padding", 0), padding_mode=m["padding_mode"], relu=m["relu"])
            self.assertTrue(np.array_equal(y, yout.int_repr().numpy()), n)

    def test_in_process(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "q.safetensors")
            names, log = quiet(ep.export_model, self.q, path)
            self.assertEqual(log, "")
            self.check_file(path, names)

    def test_torchscript_through_the_cli(self):
        with tempfile.TemporaryDirectory() as d:
            ts, out = os.path.join(d, "q_ts.pt"), os.path.join(d, "q.safetensors")
            torch.jit.save(torch.jit.script(self.q), ts)
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()) as err:
                rc = ep.main([ts, out])
            self.assertEqual(rc, 0, err.getvalue())
            self.assertIn("3 module(s), prefixes: c1. up. c3.", buf.getvalue())
            _, md = read(out)
            self.check_file(out, json.loads(md["__modules__"]))

    def test_qconv_run_reproduces_the_modules(self):
        """The exported file through `qconv run` (u8 codes in; for c1 also the float input, quantized
        with the stored input qparams): every module's output codes and qparams, bit for bit."""
        exe = os.environ.get("QCONV_BIN", os.path.join(ROOT, "target", "release", "qconv"))
        if not os.path.exists(exe):
            self.skipTest(f"{exe} not built (cargo build --release, or set QCONV_BIN)")
        from safetensors.torch import load_file, save_file
        with tempfile.TemporaryDirectory() as d:
            model, xin_path, out = (os.path.join(d, f) for f in ("q.safetensors", "x.safetensors", "y.safetensors"))
            quiet(ep.export_model, self.q, model)
            for n in ("c1", "up", "c3"):
                xin, yout = self.io[n]
                inputs = [{"input": xin.int_repr().contiguous(),
                           "input_scale": torch.tensor(xin.q_scale(), dtype=torch.float64),
                           "input_zero_point": torch.tensor(xin.q_zero_point(), dtype=torch.int64)}]
                if n == "c1":
                    inputs.append({"input": self.x.contiguous()})
                for tensors in inputs:
                    save_file(tensors, xin_path)
                    r = subprocess.run([exe, "run", "--model", model, "--prefix", n, "--input", xin_path,
                                        "--output", out], capture_output=True, text=True)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    y = load_file(out)
                    self.assertTrue(torch.equal(y["output"], yout.int_repr()), n)
                    self.assertEqual(float(y["output_scale"]), yout.q_scale(), n)
                    self.assertEqual(int(y["output_zero_point"]), yout.q_zero_point(), n)

    def test_torch_save_of_fused_convrelu(self):
        """PyTorch 2.15 cannot torch.load a lowered model with ConvReLU2d; the exporter says what to do."""
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "q.pt")
            torch.save(self.q, path)
            try:
                model = ep.load_model(path)
            except ep.ExportError as e:
                self.assertIn("torch.jit.save", str(e))
            else:  # a PyTorch that fixed it: then the loaded model must export too
                names, _ = quiet(ep.export_model, model, os.path.join(d, "o.safetensors"))
                self.assertEqual(len(names), 3)


if __name__ == "__main__":
    unittest.main()
