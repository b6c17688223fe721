//! CUDA against the CPU path and PyTorch (needs a usable CUDA device; every test reports itself
//! skipped, with the probe's reason, elsewhere — so `cargo test` passes on any machine).
//!
//! Tolerances, per element, against the f64 oracle `conv_naive` over the fake-quantized weight:
//! `8 · eps32 · Σ|x|·|ŵ|(+|b|)` for f32 activations (as tests/fixtures.rs and tests/modules.rs:
//! a few float32 roundings of the magnitude of the sum, whatever the summation order), plus one
//! rounding of the output to the activation dtype for f16 (`2^-11 · |y|`) and bf16
//! (`2^-8 · |y|`). Fake-quantized weights must be bit-identical to the CPU path for every plan.
//!
//! Everything here is small: the whole file runs in seconds on an H100.

mod common;

use common::{channels_first, channels_last, magnitude, oracle, oracle_with_weight};
use std::sync::Arc;

use half::{bf16, f16};
use qconv::cuda::runtime::Runtime;
use qconv::io::StateDict;
use qconv::quant::observer::{Observer, ObserverScheme};
use qconv::testing::Rng;
use qconv::{
    AnyConv, ConvModule, ConvOptions, DType, Device, Error, Padding, PaddingMode, Precision, QuantDType, Tensor,
    WeightStorage,
};

const CUDA: Device = Device::Cuda(0);

/// `true` when a CUDA device is usable; otherwise prints why the calling test is skipped.
fn gpu(test: &str) -> bool {
    match qconv::cuda::probe().unusable_reason() {
        None => true,
        Some(reason) => {
            eprintln!("{test}: skipped: {reason}");
            false
        }
    }
}

fn pick(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

fn out_eps(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 0.0,
        DType::F16 => 2f64.powi(-11),
        DType::BF16 => 2f64.powi(-8),
    }
}

fn make_input(rng: &mut Rng, shape: &[usize], dtype: DType) -> Tensor {
    let v = rng.vec(shape.iter().product(), -1.0, 1.0);
    match dtype {
        DType::F32 => Tensor::from_vec(v, shape).unwrap(),
        DType::F16 => Tensor::from_vec(v.into_iter().map(f16::from_f32).collect(), shape).unwrap(),
        DType::BF16 => Tensor::from_vec(v.into_iter().map(bf16::from_f32).collect(), shape).unwrap(),
    }
}

/// Runs `m` on the CPU and on CUDA and checks both against the oracle; returns the CUDA output.
fn check_module<const D: usize, const T: bool>(m: &ConvModule<D, T>, x: &Tensor, what: &str) -> Vec<f32>
where
    ConvModule<D, T>: Fwd,
{
    let cpu = m.fwd(x).unwrap();
    // Exact precision: the CPU path's numerics (the tensor-core path has its own test below).
    let md = m.to_device(CUDA).unwrap_or_else(|e| panic!("{what}: to_device: {e}")).with_precision(Precision::Exact);
    let xd = x.to_device(CUDA).unwrap();
    let yd = md.fwd(&xd).unwrap_or_else(|e| panic!("{what}: CUDA forward: {e}"));
    assert_eq!(yd.device(), CUDA);
    assert_eq!(yd.dtype(), x.dtype());
    assert_eq!(yd.shape(), cpu.shape(), "{what}: output shape");
    let got = yd.to_device(Device::Cpu).unwrap().to_vec_f32();
    let (want, mag) = oracle(m, x, None);
    let cpu = cpu.to_vec_f32();
    for i in 0..want.len() {
        let tol = 8.0 * f32::EPSILON as f64 * mag[i] + out_eps(x.dtype()) * want[i].abs() + 1e-30;
        for (dev, v) in [("cuda", got[i]), ("cpu", cpu[i])] {
            assert!(
                (v as f64 - want[i]).abs() <= tol,
                "{what} ({}, input {:?}): {dev} output[{i}] = {v} want {} (tol {tol:e})",
                x.dtype(),
                x.shape(),
                want[i]
            );
        }
    }
    got
}

trait Fwd {
    fn fwd(&self, x: &Tensor) -> qconv::Result<Tensor>;
}
impl<const D: usize> Fwd for ConvModule<D, false> {
    fn fwd(&self, x: &Tensor) -> qconv::Result<Tensor> {
        self.forward(x)
    }
}
impl<const D: usize> Fwd for ConvModule<D, true> {
    fn fwd(&self, x: &Tensor) -> qconv::Result<Tensor> {
        self.forward(x)
    }
}

fn random_module<const D: usize, const T: bool>(rng: &mut Rng) -> Option<(ConvModule<D, T>, [usize; D])> {
    let groups = [1, 1, 2, 3][pick(rng, 4)];
    let depthwise = pick(rng, 4) == 0;
    // Channel counts that reach every kernel: direct (C/groups <= 2), m32 (K/groups <= 32) and
    // the t64 tile (K/groups > 32).
    let (cin, cout) = if depthwise {
        (groups * 4, groups * 4)
    } else {
        let c = [1, 3, 8, 17][pick(rng, 4)];
        let k = [1, 5, 32, 40][pick(rng, 4)];
        (groups * c, groups * k)
    };
    let mut o = ConvOptions::<D>::new([0; D]);
    for d in 0..D {
        o.kernel_size[d] = 1 + pick(rng, 3);
        o.stride[d] = 1 + pick(rng, 3);
        o.dilation[d] = 1 + pick(rng, 2);
    }
    o.groups = if depthwise { cin } else { groups };
    o.padding_mode = if T {
        PaddingMode::Zeros
    } else {
        [PaddingMode::Zeros, PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular]
            [pick(rng, 5)]
    };
    let mut pads = [0; D];
    for p in pads.iter_mut() {
        *p = pick(rng, 3);
    }
    o.padding = Padding::Explicit(pads);
    if T {
        for d in 0..D {
            o.output_padding[d] = pick(rng, o.stride[d].max(o.dilation[d]));
        }
    }
    let shape = ConvModule::<D, T>::weight_shape(cin, cout, &o);
    let weight = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let bias = (pick(rng, 2) == 0).then(|| Tensor::from_vec(rng.vec(cout, -0.5, 0.5), &[cout]).unwrap());
    let scheme = [
        ObserverScheme::PerTensorAffine,
        ObserverScheme::PerTensorSymmetric,
        ObserverScheme::PerChannelAffine,
        ObserverScheme::PerChannelSymmetric,
        ObserverScheme::PerChannelAffineFloatQParams,
    ][pick(rng, 5)];
    let dtype = if pick(rng, 2) == 0 { QuantDType::QInt8 } else { QuantDType::QUInt8 };
    let mut obs = Observer::new(dtype, scheme).unwrap().ch_axis(if T { 1 } else { 0 });
    obs.observe(&weight).unwrap();
    o.bias = bias.is_some();
    let m = ConvModule::<D, T>::new(cin, cout, o, weight, bias, obs.weight_qparams()).unwrap();
    let mut sp = [0; D];
    for s in sp.iter_mut() {
        *s = 4 + pick(rng, 8);
    }
    // Skip configurations whose kernel does not fit the padded input (validation tests cover them).
    if !T && m.options().conv_output_size(&sp).is_err() {
        return None;
    }
    Some((m, sp))
}

fn sweep<const D: usize, const T: bool>(rng: &mut Rng, cases: usize)
where
    ConvModule<D, T>: Fwd,
{
    let mut done = 0;
    while done < cases {
        let Some((m, sp)) = random_module::<D, T>(rng) else { continue };
        let dtype = [DType::F32, DType::F16, DType::BF16][done % 3];
        let batched = pick(rng, 4) != 0;
        let mut xs = if batched { vec![1 + pick(rng, 3), m.in_channels()] } else { vec![m.in_channels()] };
        xs.extend_from_slice(&sp);
        let x = make_input(rng, &xs, dtype);
        check_module(&m, &x, &format!("{m}"));
        done += 1;
    }
}

/// `tests/fixtures/modules.safetensors`, relative to the working directory when it is there (test
/// executables copied to another machine by scripts/gpu-check.sh run from the repository root),
/// else in the source tree the tests were built from.
/// A Conv2d from `c` to `k` channels with a random weight in [-0.5, 0.5] (and bias, when `o`
/// has one), quantized by the default observer (per-channel symmetric qint8).
fn observed_conv2d(rng: &mut Rng, c: usize, k: usize, o: ConvOptions<2>) -> qconv::Conv2d {
    let shape = qconv::Conv2d::weight_shape(c, k, &o);
    let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let b = o.bias.then(|| Tensor::from_vec(rng.vec(k, -0.5, 0.5), &[k]).unwrap());
    qconv::Conv2d::from_float_observed(w, b, o).unwrap()
}

fn fixture_path() -> String {
    fixture("modules.safetensors")
}

fn fixture(name: &str) -> String {
    let rel = format!("tests/fixtures/{name}");
    if std::path::Path::new(&rel).exists() {
        rel
    } else {
        format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))
    }
}

#[test]
fn device_tensors_round_trip_and_refuse_host_access() {
    let x = Tensor::from_vec(vec![1.0f32, -2.5, 3.25, f32::MIN_POSITIVE], &[2, 2]).unwrap();
    if !gpu("device_tensors_round_trip_and_refuse_host_access") {
        // Without CUDA the upload is a typed error carrying the probe's reason.
        match x.to_device(CUDA) {
            Err(Error::CudaUnavailable { ordinal: 0, reason }) => assert!(!reason.is_empty()),
            other => panic!("expected CudaUnavailable, got {other:?}"),
        }
        return;
    }
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let h = x.to_dtype(dtype);
        let d = h.to_device(CUDA).unwrap();
        assert_eq!((d.device(), d.dtype(), d.shape()), (CUDA, dtype, h.shape()));
        assert!(matches!(d.as_slice::<f32>(), Err(Error::Unsupported { .. })));
        assert!(d.as_cuda_bytes().is_some());
        let back = d.to_device(Device::Cpu).unwrap();
        assert_eq!(back, h, "{dtype}: round trip");
        assert_eq!(d.try_to_vec_f32().unwrap(), h.to_vec_f32());
        assert_eq!(d.reshape(&[4]).unwrap().device(), CUDA);
    }
}

#[test]
fn fake_quant_is_bit_identical_for_every_plan() {
    if !gpu("fake_quant_is_bit_identical_for_every_plan") {
        return;
    }
    let rt = Runtime::get(0).unwrap();
    let sd = StateDict::load(fixture_path()).unwrap();
    let names: Vec<String> = serde_json::from_str(&sd.metadata["__cases__"]).unwrap();
    // Every fixture module (all qschemes, dtypes, float zero points, decomposed, ties, saturation).
    for case in &names {
        let (m, _) = AnyConv::from_state_dict_lenient(&sd, &format!("{case}.")).unwrap();
        let w = m.weight();
        let src = rt.htod(w.as_slice::<f32>().unwrap(), None).unwrap();
        let mut dst = rt.zeros::<f32>(w.numel(), None).unwrap();
        rt.fake_quantize_device(m.weight_qparams(), w.shape(), &src, Some(&mut dst), None, None)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let got = rt.dtoh(&dst, None).unwrap();
        let want = m.get_weight().as_slice::<f32>().unwrap();
        for i in 0..want.len() {
            assert_eq!(got[i].to_bits(), want[i].to_bits(), "{case}: weight element {i}: {} vs {}", got[i], want[i]);
        }
    }
    // A non-finite weight is the same typed error as on the CPU.
    let w = vec![0.5f32, f32::NAN, 1.0, 2.0];
    let qp = qconv::WeightQParams::per_tensor(QuantDType::QInt8, 0.1, 0);
    let src = rt.htod(&w, None).unwrap();
    let mut dst = rt.zeros::<f32>(4, None).unwrap();
    match rt.fake_quantize_device(&qp, &[4], &src, Some(&mut dst), None, None) {
        Err(Error::NonFiniteWeight { index: 1, .. }) => {}
        other => panic!("expected NonFiniteWeight at 1, got {other:?}"),
    }
}

#[test]
fn pytorch_fixtures_run_on_cuda() {
    if !gpu("pytorch_fixtures_run_on_cuda") {
        return;
    }
    let sd = StateDict::load(fixture_path()).unwrap();
    let names: Vec<String> = serde_json::from_str(&sd.metadata["__cases__"]).unwrap();
    let mut failures = Vec::new();
    for case in &names {
        let prefix = format!("{case}.");
        let (m, _) = AnyConv::from_state_dict_lenient(&sd, &prefix).unwrap();
        let fwd: serde_json::Value = serde_json::from_str(&sd.metadata[&format!("{prefix}forward")]).unwrap();
        let output_size: Option<Vec<usize>> =
            fwd["output_size"].as_array().map(|a| a.iter().map(|v| v.as_u64().unwrap() as usize).collect());
        let x = sd.tensor(&format!("{prefix}input")).unwrap();
        let want = sd.tensor(&format!("{prefix}output")).unwrap().to_vec_f32();
        // The module is moved (self-checking its fake-quantized weight on the device) and run there.
        let md = match m.to_device(CUDA) {
            Ok(md) => md,
            Err(e) => {
                failures.push(format!("{case}: to_device: {e}"));
                continue;
            }
        };
        let y = match md.forward(&x.to_device(CUDA).unwrap(), output_size.as_deref()) {
            Ok(y) => y.to_device(Device::Cpu).unwrap().to_vec_f32(),
            Err(e) => {
                failures.push(format!("{case}: forward: {e}"));
                continue;
            }
        };
        // Same criterion as tests/fixtures.rs for the CPU path: within 8 units of
        // eps32 · (Σ|x||ŵ| + |b|) of PyTorch's output.
        let mag = magnitude(&m, &prefix, &x, output_size.as_deref());
        for i in 0..want.len() {
            let units = (y[i] - want[i]).abs() / (f32::EPSILON * mag[i]).max(f32::MIN_POSITIVE);
            if units > 8.0 {
                failures.push(format!("{case}: output[{i}] = {} want {} ({units:.2} units)", y[i], want[i]));
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn randomized_sweep_against_the_oracle() {
    if !gpu("randomized_sweep_against_the_oracle") {
        return;
    }
    let mut rng = Rng::new(0xC0DA);
    sweep::<1, false>(&mut rng, 24);
    sweep::<2, false>(&mut rng, 36);
    sweep::<3, false>(&mut rng, 12);
    sweep::<1, true>(&mut rng, 18);
    sweep::<2, true>(&mut rng, 24);
    sweep::<3, true>(&mut rng, 9);
}

#[test]
fn large_tiles_and_empty_inputs() {
    if !gpu("large_tiles_and_empty_inputs") {
        return;
    }
    let mut rng = Rng::new(7);
    // Enough 128-column tiles (>= 2 per SM on any current GPU) for the 128x128 tile: 2*136*136
    // columns, 64 output channels per group.
    for (c, k) in [(8, 64), (16, 160)] {
        let o = ConvOptions::<2>::new([3, 3]).padding(Padding::Explicit([1, 1])).bias(true);
        let m = observed_conv2d(&mut rng, c, k, o.bias(true));
        let sp = if k == 64 { 136 } else { 40 };
        for dtype in [DType::F32, DType::BF16] {
            let x = make_input(&mut rng, &[2, c, sp, sp], dtype);
            check_module(&m, &x, &format!("{m}"));
        }
    }
    // Transposed with stride 2 (four phases of 2*66*66 columns: 4 * 69 tiles of 128) and 128
    // output channels: the 128x128 tile.
    let o = ConvOptions::<2>::new([4, 4]).stride([2, 2]).padding(Padding::Explicit([1, 1])).bias(true);
    let shape = qconv::ConvTranspose2d::weight_shape(8, 128, &o);
    let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let b = Tensor::from_vec(rng.vec(128, -0.5, 0.5), &[128]).unwrap();
    let m = qconv::ConvTranspose2d::from_float_observed(w, Some(b), o).unwrap();
    let x = make_input(&mut rng, &[2, 8, 66, 66], DType::F16);
    check_module(&m, &x, "ConvTranspose2d 8->128 s2");
    // Empty batch and zero-size spatial input (padding only): shapes and bias as on the CPU.
    let o = ConvOptions::<1>::new([3]).padding(Padding::Explicit([2])).bias(true);
    let w = Tensor::from_vec(rng.vec(2 * 3 * 3, -0.5, 0.5), &[2, 3, 3]).unwrap();
    let b = Tensor::from_vec(vec![0.25f32, -1.0], &[2]).unwrap();
    let m = qconv::Conv1d::from_float_observed(w, Some(b), o).unwrap();
    let md = m.to_device(CUDA).unwrap();
    for shape in [[0usize, 3, 5], [2, 3, 0]] {
        let x = Tensor::zeros(&shape, DType::F32).unwrap();
        let cpu = m.forward(&x).unwrap();
        let gpu = md.forward(&x.to_device(CUDA).unwrap()).unwrap().to_device(Device::Cpu).unwrap();
        assert_eq!(gpu, cpu, "input {shape:?}");
    }
}

#[test]
fn mixing_devices_is_a_typed_error() {
    if !gpu("mixing_devices_is_a_typed_error") {
        return;
    }
    let o = ConvOptions::<1>::new([3]);
    let w = Tensor::from_vec(vec![0.5f32; 2 * 2 * 3], &[2, 2, 3]).unwrap();
    let m = qconv::Conv1d::from_float_observed(w, None, o).unwrap();
    let md = m.to_device(CUDA).unwrap();
    let x = Tensor::from_vec(vec![1.0f32; 2 * 2 * 8], &[2, 2, 8]).unwrap();
    let xd = x.to_device(CUDA).unwrap();
    assert!(matches!(m.forward(&xd), Err(Error::Unsupported { .. })));
    assert!(matches!(md.forward(&x), Err(Error::Unsupported { .. })));
    let s = Runtime::get(0).unwrap().new_stream().unwrap();
    assert!(matches!(m.forward_on_stream(&x, &s), Err(Error::Unsupported { .. })));
    assert!(md.forward(&xd).is_ok());
}

#[test]
fn own_streams_and_many_threads_give_identical_results() {
    if !gpu("own_streams_and_many_threads_give_identical_results") {
        return;
    }
    let mut rng = Rng::new(99);
    let o = ConvOptions::<2>::new([3, 3]).padding(Padding::Explicit([1, 1])).groups(2).bias(true);
    let shape = qconv::Conv2d::weight_shape(16, 48, &o);
    let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let b = Tensor::from_vec(rng.vec(48, -0.5, 0.5), &[48]).unwrap();
    let m = Arc::new(qconv::Conv2d::from_float_observed(w, Some(b), o).unwrap().to_device(CUDA).unwrap());
    let x = make_input(&mut rng, &[4, 16, 20, 20], DType::F32);
    let xd = x.to_device(CUDA).unwrap();
    let reference = m.forward(&xd).unwrap().to_device(Device::Cpu).unwrap();
    // The same kernel on any stream computes the same bits.
    let rt = Runtime::get(0).unwrap();
    let s = rt.new_stream().unwrap();
    // Several launches queued on the caller's stream; the copy to the host waits for them.
    let ys: Vec<Tensor> = (0..3).map(|_| m.forward_on_stream(&xd, &s).unwrap()).collect();
    for y in ys {
        assert_eq!(y.to_device(Device::Cpu).unwrap(), reference);
    }
    // Eight threads, each with its own stream (and one on the default stream), sharing the module
    // and the input.
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (m, xd, rt) = (Arc::clone(&m), xd.clone(), Arc::clone(&rt));
            std::thread::spawn(move || {
                let s = rt.new_stream().unwrap();
                (0..5)
                    .map(|_| {
                        let y = if t == 0 { m.forward(&xd) } else { m.forward_on_stream(&xd, &s) };
                        y.unwrap().to_device(Device::Cpu).unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for y in h.join().unwrap() {
            assert_eq!(y, reference);
        }
    }
}

/// A few small launches of every kernel family, for compute-sanitizer (memcheck, racecheck) in
/// scripts/gpu-check.sh: fake-quant and quantize-only, the direct, 32-row and 64x64-tile forward
/// kernels, transposed (tiled and direct), f32 and f16, with odd sizes so that every tile has a
/// ragged edge.
#[test]
fn sanitizer_smoke() {
    if !gpu("sanitizer_smoke") {
        return;
    }
    let rt = Runtime::get(0).unwrap();
    let mut rng = Rng::new(5);
    let w = rng.vec(7 * 5 * 3, -1.0, 1.0);
    let qp = qconv::WeightQParams::per_channel(
        QuantDType::QInt8,
        vec![0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07],
        vec![0, 1, -1, 2, 0, 0, 3],
        0,
    );
    let src = rt.htod(&w, None).unwrap();
    let mut dst = rt.zeros::<f32>(w.len(), None).unwrap();
    let mut codes = rt.zeros::<i32>(w.len(), None).unwrap();
    rt.fake_quantize_device(&qp, &[7, 5, 3], &src, Some(&mut dst), None, None).unwrap();
    rt.fake_quantize_device(&qp, &[7, 5, 3], &src, None, Some(&mut codes), None).unwrap();
    let want = qconv::quant::quantize(&Tensor::from_vec(w, &[7, 5, 3]).unwrap(), &qp).unwrap();
    if let qconv::quant::QuantizedValues::Codes(c) = want.values {
        assert_eq!(rt.dtoh(&codes, None).unwrap(), c);
    }
    for (c, k, groups) in [(4, 4, 4), (6, 10, 1), (9, 40, 1)] {
        let o = ConvOptions::<2>::new([3, 3]).padding(Padding::Explicit([1, 1])).groups(groups).bias(true);
        let m = observed_conv2d(&mut rng, c, k, o.bias(true));
        for dtype in [DType::F32, DType::F16] {
            let x = make_input(&mut rng, &[2, c, 7, 9], dtype);
            check_module(&m, &x, &format!("{m}"));
        }
    }
    // Tensor cores (ragged tiles, both layouts, so the transposes run too).
    let o = ConvOptions::<2>::new([3, 3]).padding(Padding::Explicit([1, 1])).bias(true);
    let shape = qconv::Conv2d::weight_shape(16, 20, &o);
    let wt = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let b = Tensor::from_vec(rng.vec(20, -0.5, 0.5), &[20]).unwrap();
    let m = qconv::Conv2d::from_float_observed(wt, Some(b), o).unwrap();
    for dtype in [DType::F16, DType::BF16] {
        check_tensor_core(&m, &make_input(&mut rng, &[2, 16, 7, 9], dtype), "tensor cores");
    }
    // Split-K (9 output positions, a 2304-long reduction).
    let o = ConvOptions::<2>::new([3, 3]).padding(Padding::Explicit([1, 1])).bias(true);
    let shape = qconv::Conv2d::weight_shape(256, 16, &o);
    let wt = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let b = Tensor::from_vec(rng.vec(16, -0.5, 0.5), &[16]).unwrap();
    let sk = qconv::Conv2d::from_float_observed(wt, Some(b), o).unwrap();
    check_tensor_core(&sk, &make_input(&mut rng, &[1, 256, 3, 3], DType::F16), "tensor cores, split-K");
    // The channel padding (3 channels), the transposed tiles, the depthwise kernel.
    let o = ConvOptions::<2>::new([3, 3]).stride([2, 2]).padding(Padding::Explicit([1, 1])).bias(true);
    let shape = qconv::Conv2d::weight_shape(3, 16, &o);
    let wt = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let stem = qconv::Conv2d::from_float_observed(wt, None, o).unwrap();
    check_tensor_core(&stem, &make_input(&mut rng, &[2, 3, 9, 8], DType::F16), "tensor cores, padded channels");
    let o = ConvOptions::<2>::new([4, 4]).stride([2, 2]).padding(Padding::Explicit([1, 1])).bias(true);
    let shape = qconv::ConvTranspose2d::weight_shape(8, 12, &o);
    let wt = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let tr =
        qconv::ConvTranspose2d::from_float_observed(wt, Some(Tensor::zeros(&[12], DType::F32).unwrap()), o).unwrap();
    check_tensor_core(&tr, &make_input(&mut rng, &[2, 8, 5, 6], DType::BF16), "tensor cores, transposed");
    let o = ConvOptions::<2>::new([3, 3]).padding(Padding::Explicit([1, 1])).groups(8).bias(true);
    let shape = qconv::Conv2d::weight_shape(8, 8, &o);
    let wt = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let dw = qconv::Conv2d::from_float_observed(wt, Some(Tensor::zeros(&[8], DType::F32).unwrap()), o).unwrap();
    check_module(&dw, &make_input(&mut rng, &[2, 8, 5, 7], DType::F16), "depthwise, channels-last kernel");
    for (c, k) in [(2, 3), (9, 40)] {
        let o = ConvOptions::<2>::new([3, 3]).stride([2, 2]).padding(Padding::Explicit([1, 1])).bias(true);
        let shape = qconv::ConvTranspose2d::weight_shape(c, k, &o);
        let wt = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
        let m =
            qconv::ConvTranspose2d::from_float_observed(wt, Some(Tensor::zeros(&[k], DType::F32).unwrap()), o).unwrap();
        let x = make_input(&mut rng, &[2, c, 5, 6], DType::F32);
        check_module(&m, &x, &format!("{m}"));
    }
    // One input channel per group: the element-wise loader.
    let o = ConvOptions::<2>::new([3, 3]).padding(Padding::Explicit([1, 1])).groups(4).bias(true);
    let shape = qconv::Conv2d::weight_shape(4, 64, &o);
    let wt = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let el = qconv::Conv2d::from_float_observed(wt, None, o).unwrap();
    check_tensor_core(&el, &make_input(&mut rng, &[2, 4, 5, 6], DType::F16), "tensor cores, element-wise loader");
    // 8-bit weight codes: the *_q8 loaders (padded and not, element-wise) and, for f32, the
    // code expansion before the CUDA-core kernel.
    for (name, m) in [("stem", &stem), ("3x3", &m), ("element-wise", &el)] {
        let q = m.clone().with_weight_storage(WeightStorage::Int8Codes).unwrap();
        let c = m.in_channels();
        check_tensor_core(&q, &make_input(&mut rng, &[2, c, 7, 6], DType::BF16), &format!("codes, {name}"));
        check_module(&q, &make_input(&mut rng, &[2, c, 7, 6], DType::F32), &format!("codes, exact, {name}"));
    }
    // TF32 (padded stem and 16 channels) and its split-K reduction.
    for t in [&stem, &m, &sk] {
        let td = t.to_device(CUDA).unwrap().with_precision(Precision::Tf32);
        let c = t.in_channels();
        let x = make_input(&mut rng, &[1, c, 3, 3], DType::F32).to_device(CUDA).unwrap();
        td.forward(&x).unwrap().to_device(Device::Cpu).unwrap();
    }
}

/// The model exported from PyTorch by scripts/export_pytorch.py (four modules) on CUDA: every
/// module moved to the device agrees with the CPU path within the f32 tolerance, batched input.
#[test]
fn exported_pytorch_model_runs_on_cuda() {
    if !gpu("exported_pytorch_model_runs_on_cuda") {
        return;
    }
    let sd = StateDict::load(fixture("export_demo.safetensors")).unwrap();
    let mut rng = Rng::new(31);
    for prefix in sd.module_prefixes() {
        let m = AnyConv::from_state_dict(&sd, &prefix).unwrap();
        let (d, c) = (m.get_weight().ndim() - 2, m.in_channels());
        let mut shape = vec![2, c];
        shape.extend(std::iter::repeat_n(9, d));
        let x = make_input(&mut rng, &shape, DType::F32);
        let cpu = m.forward(&x, None).unwrap();
        let gpu = m.to_device(CUDA).unwrap().forward(&x.to_device(CUDA).unwrap(), None).unwrap();
        let gpu = gpu.to_device(Device::Cpu).unwrap();
        assert_eq!(gpu.shape(), cpu.shape(), "{prefix}");
        let mag = magnitude(&m, &prefix, &x, None);
        let (g, c) = (gpu.to_vec_f32(), cpu.to_vec_f32());
        for i in 0..c.len() {
            // Both within 8 units of the exact sum, so within 16 of each other.
            assert!(
                (g[i] - c[i]).abs() <= 16.0 * f32::EPSILON * mag[i],
                "{prefix}: output[{i}] = {} cpu {}",
                g[i],
                c[i]
            );
        }
    }
}

#[test]
fn runtime_modules_and_device_tensors_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Runtime>();
    send_sync::<Tensor>();
    send_sync::<qconv::Conv2d>();
    send_sync::<qconv::ConvTranspose3d>();
    send_sync::<AnyConv>();
}

/// Out of device memory is an error for that call (naming the driver call), and the runtime and
/// a resident module stay usable afterwards: the next forward gives the same bits as before.
#[test]
fn out_of_memory_is_an_error_and_the_runtime_survives() {
    if !gpu("out_of_memory_is_an_error_and_the_runtime_survives") {
        return;
    }
    let rt = Runtime::get(0).unwrap();
    let mut rng = Rng::new(31);
    let o = ConvOptions::<2>::new([3, 3]).padding(Padding::Explicit([1, 1])).bias(true);
    let shape = qconv::Conv2d::weight_shape(8, 16, &o);
    let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let b = Tensor::from_vec(rng.vec(16, -0.5, 0.5), &[16]).unwrap();
    let m = qconv::Conv2d::from_float_observed(w, Some(b), o).unwrap().to_device(CUDA).unwrap();
    let xd = make_input(&mut rng, &[2, 8, 12, 12], DType::F32).to_device(CUDA).unwrap();
    let before = m.forward(&xd).unwrap().to_device(Device::Cpu).unwrap();
    // 4 TiB: more than any current GPU has.
    let err = rt.zeros::<f32>(1 << 40, None).expect_err("a 4 TiB allocation must fail");
    let msg = err.to_string();
    assert!(matches!(err, Error::Cuda { .. }), "{msg}");
    assert!(msg.contains("cuMemAlloc"), "{msg}");
    // A forward whose output cannot be allocated: [1, 16, 2^17, 2^17] f32 is 1 TiB, from an input
    // that does fit ([1, 8, 2^17, 1] is small, but the transposed conv below blows it up).
    let ot = ConvOptions::<2>::new([1, 1]).stride([1, 1 << 17]).output_padding([0, 0]);
    let shape_t = qconv::ConvTranspose2d::weight_shape(8, 16, &ot);
    let wt = Tensor::from_vec(rng.vec(shape_t.iter().product(), -0.5, 0.5), &shape_t).unwrap();
    let mt = qconv::ConvTranspose2d::from_float_observed(wt, None, ot).unwrap().to_device(CUDA).unwrap();
    let xt = make_input(&mut rng, &[1, 8, 1 << 17, 2], DType::F32).to_device(CUDA).unwrap();
    match mt.forward(&xt) {
        Err(e) => eprintln!("1 TiB output: {e}"),
        Ok(y) => panic!("a 1 TiB output was allocated: shape {:?}", y.shape()),
    }
    for _ in 0..3 {
        assert_eq!(m.forward(&xd).unwrap().to_device(Device::Cpu).unwrap(), before);
    }
}

/// Inputs past 2^31 elements (issue: 64-bit offsets): a Conv2d through the tiled kernel and a
/// depthwise Conv1d through the direct kernel, f16, inputs (and outputs) of more than 2^31
/// elements. Sampled outputs — including the last rows, whose offsets need 64 bits — against an
/// f64 sum over the fake-quantized weight.
#[test]
fn inputs_past_two_to_the_31_elements() {
    if !gpu("inputs_past_two_to_the_31_elements") {
        return;
    }
    let free = {
        let rt = Runtime::get(0).unwrap();
        rt.context().bind_to_thread().unwrap();
        cudarc::driver::result::mem_get_info().map(|(free, _)| free).unwrap_or(0)
    };
    if free < 24 << 30 {
        eprintln!("inputs_past_two_to_the_31_elements: skipped: needs 24 GiB of free device memory, {free} B free");
        return;
    }
    // A cheap deterministic pattern of 251 distinct f16 values in [-1, 1].
    let table: Vec<f16> = (0..251).map(|i| f16::from_f32(i as f32 / 125.0 - 1.0)).collect();
    let value = |i: usize| table[(i.wrapping_mul(2654435761) >> 7) % 251];
    let mut rng = Rng::new(77);
    // (module, input shape) pairs: 4*23200*23200 = 2_152_960_000 and 4*540_000_000 elements.
    let o2 = ConvOptions::<2>::new([3, 3]).padding(Padding::Explicit([1, 1])).bias(true);
    let s2 = qconv::Conv2d::weight_shape(4, 4, &o2);
    let w2 = Tensor::from_vec(rng.vec(s2.iter().product(), -0.5, 0.5), &s2).unwrap();
    let m2 = qconv::Conv2d::from_float_observed(w2, Some(Tensor::from_vec(rng.vec(4, -0.5, 0.5), &[4]).unwrap()), o2)
        .unwrap();
    let o1 = ConvOptions::<1>::new([3]).padding(Padding::Explicit([1])).groups(4).bias(true);
    let s1 = qconv::Conv1d::weight_shape(4, 4, &o1);
    let w1 = Tensor::from_vec(rng.vec(s1.iter().product(), -0.5, 0.5), &s1).unwrap();
    let m1 = qconv::Conv1d::from_float_observed(w1, Some(Tensor::from_vec(rng.vec(4, -0.5, 0.5), &[4]).unwrap()), o1)
        .unwrap();
    // One spatial dimension past the kernels' 32-bit coordinate range is refused before launch.
    {
        let long = Tensor::zeros(&[1, 4, 1_073_790_000], DType::F16).unwrap().to_device(CUDA).unwrap();
        match m1.to_device(CUDA).unwrap().forward(&long) {
            Err(Error::InvalidConfig { param, rule, .. }) => {
                assert_eq!(param, "convolution size");
                assert!(rule.contains("< 2^31"), "{rule}");
            }
            other => panic!(
                "a spatial size of 1_073_790_000 must be refused on CUDA, got {:?}",
                other.map(|t| t.shape().to_vec())
            ),
        }
    }
    for case in 0..2 {
        let (c, k, hw): (usize, usize, [usize; 2]) =
            if case == 0 { (4, 4, [23200, 23200]) } else { (4, 4, [1, 540_000_000]) };
        let n = c * hw[0] * hw[1];
        assert!(n > 1 << 31);
        let x: Vec<f16> = (0..n).map(value).collect();
        let (wq, bias, groups) = if case == 0 {
            (m2.get_weight().to_vec_f32(), m2.bias().unwrap().to_vec_f32(), 1)
        } else {
            (m1.get_weight().to_vec_f32(), m1.bias().unwrap().to_vec_f32(), 4)
        };
        let y: Vec<f16> = if case == 0 {
            let xd = Tensor::from_vec(x, &[1, c, hw[0], hw[1]]).unwrap().to_device(CUDA).unwrap();
            let md = m2.to_device(CUDA).unwrap();
            let yd = md.forward(&xd).unwrap();
            assert_eq!(yd.shape(), &[1, k, hw[0], hw[1]]);
            drop(xd);
            yd.to_device(Device::Cpu).unwrap().as_slice::<f16>().unwrap().to_vec()
        } else {
            let xd = Tensor::from_vec(x, &[1, c, hw[1]]).unwrap().to_device(CUDA).unwrap();
            let md = m1.to_device(CUDA).unwrap();
            let yd = md.forward(&xd).unwrap();
            assert_eq!(yd.shape(), &[1, k, hw[1]]);
            drop(xd);
            yd.to_device(Device::Cpu).unwrap().as_slice::<f16>().unwrap().to_vec()
        };
        let (kh, cg) = if case == 0 { (3usize, c) } else { (1usize, 1) };
        let at = |ch: usize, h: i64, w: i64| -> f64 {
            if h < 0 || w < 0 || h >= hw[0] as i64 || w >= hw[1] as i64 {
                0.0
            } else {
                value((ch * hw[0] + h as usize) * hw[1] + w as usize).to_f64()
            }
        };
        let mut checked = 0;
        let mut positions: Vec<(usize, usize, usize)> =
            (0..400).map(|_| (pick(&mut rng, k), pick(&mut rng, hw[0]), pick(&mut rng, hw[1]))).collect();
        positions.extend([
            (k - 1, hw[0] - 1, hw[1] - 1),
            (k - 1, hw[0] - 1, 0),
            (0, 0, 0),
            (k - 1, hw[0] / 2, hw[1] - 2),
        ]);
        for (ko, oh, ow) in positions {
            let g = ko / (k / groups);
            let (mut acc, mut mag) = (bias[ko] as f64, (bias[ko] as f64).abs());
            for ci in 0..cg {
                for i in 0..kh {
                    for j in 0..3 {
                        let wv = wq[((ko * cg + ci) * kh + i) * 3 + j] as f64;
                        let xv = at(g * cg + ci, oh as i64 + i as i64 - (kh as i64 / 2), ow as i64 + j as i64 - 1);
                        acc += wv * xv;
                        mag += (wv * xv).abs();
                    }
                }
            }
            let got = y[(ko * hw[0] + oh) * hw[1] + ow].to_f64();
            let tol = 8.0 * f32::EPSILON as f64 * mag + 2f64.powi(-11) * acc.abs() + 1e-30;
            assert!((got - acc).abs() <= tol, "case {case}: y[{ko}, {oh}, {ow}] = {got}, want {acc} (tol {tol:e})");
            checked += 1;
        }
        eprintln!("inputs_past_two_to_the_31_elements: case {case}: {n} input elements, {checked} outputs checked");
    }
}

/// The weight a tensor-core forward multiplies with: `get_weight()` rounded to `dtype`.
fn rounded_weight<const D: usize, const T: bool>(m: &ConvModule<D, T>, dtype: DType) -> Vec<f32> {
    let w = m.get_weight().to_vec_f32();
    match dtype {
        DType::F16 => w.into_iter().map(|v| f16::from_f32(v).to_f32()).collect(),
        DType::BF16 => w.into_iter().map(|v| bf16::from_f32(v).to_f32()).collect(),
        DType::F32 => w,
    }
}

/// Runs `m` on CUDA with tensor cores, channels-first and channels-last, and checks both against
/// the f64 oracle over the weight rounded to the activation dtype (tolerance: a few f32 roundings
/// of Σ|x||ŵ| plus one rounding of the output); the two layouts must agree bit for bit.
trait ClFwd {
    fn fwd_last(&self, x: &Tensor) -> qconv::Result<Tensor>;
}
impl<const D: usize> ClFwd for ConvModule<D, false> {
    fn fwd_last(&self, x: &Tensor) -> qconv::Result<Tensor> {
        self.forward_channels_last(x)
    }
}
impl<const D: usize> ClFwd for ConvModule<D, true> {
    fn fwd_last(&self, x: &Tensor) -> qconv::Result<Tensor> {
        self.forward_channels_last(x, None)
    }
}

fn check_tensor_core<const D: usize, const T: bool>(m: &ConvModule<D, T>, x: &Tensor, what: &str)
where
    ConvModule<D, T>: Fwd + ClFwd,
{
    let dtype = x.dtype();
    let md = m.to_device(CUDA).unwrap();
    assert_eq!(md.precision(), Precision::TensorCore);
    let y_first = md.fwd(&x.to_device(CUDA).unwrap()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let xl = channels_last(x).to_device(CUDA).unwrap();
    let y_last = md.fwd_last(&xl).unwrap_or_else(|e| panic!("{what}: channels-last: {e}"));
    let y_first = y_first.to_device(Device::Cpu).unwrap();
    let y_last = y_last.to_device(Device::Cpu).unwrap();
    assert_eq!(y_last.shape(), channels_last(&y_first).shape(), "{what}");
    assert_eq!(channels_first(&y_last), y_first, "{what}: the two layouts differ");
    let (want, mag) = oracle_with_weight(m, x, &rounded_weight(m, dtype));
    let got = y_first.to_vec_f32();
    for i in 0..want.len() {
        let tol = 8.0 * f32::EPSILON as f64 * mag[i] + out_eps(dtype) * want[i].abs() + 1e-30;
        assert!(
            (got[i] as f64 - want[i]).abs() <= tol,
            "{what} ({dtype}, input {:?}): output[{i}] = {} want {} (tol {tol:e})",
            x.shape(),
            got[i],
            want[i]
        );
    }
}

/// Tensor cores (f16/bf16): every tile, ragged tiles in both GEMM dimensions, groups, stride,
/// dilation, every padding mode, 1-d/2-d/3-d, reduction lengths that are not multiples of 32.
#[test]
fn tensor_core_convolutions_match_the_rounded_weight_oracle() {
    if !gpu("tensor_core_convolutions_match_the_rounded_weight_oracle") {
        return;
    }
    let mut rng = Rng::new(1234);
    // (C, K, groups, kernel, stride, padding, dilation, mode, batch, input)
    type Case = (usize, usize, usize, [usize; 2], [usize; 2], [usize; 2], [usize; 2], PaddingMode, usize, [usize; 2]);
    let cases: Vec<Case> = vec![
        (16, 20, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 2, [9, 11]),
        (8, 136, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 4, [96, 96]), // 128x128 tiles
        (16, 40, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 4, [96, 96]), // 128x64 tiles
        (32, 48, 2, [3, 3], [2, 2], [2, 2], [2, 2], PaddingMode::Reflect, 2, [13, 10]),
        (24, 16, 1, [3, 2], [1, 2], [1, 1], [1, 1], PaddingMode::Replicate, 3, [7, 9]),
        (16, 24, 1, [3, 3], [1, 1], [2, 1], [1, 1], PaddingMode::Circular, 2, [6, 8]),
        (8, 8, 1, [1, 1], [1, 1], [0, 0], [1, 1], PaddingMode::Zeros, 2, [5, 7]),
        (64, 72, 4, [1, 1], [1, 1], [0, 0], [1, 1], PaddingMode::Zeros, 2, [15, 15]),
        (40, 8, 1, [5, 5], [3, 2], [2, 2], [1, 1], PaddingMode::Zeros, 1, [23, 19]),
        // Few output positions, long reductions: split-K (partial sums + ordered reduction).
        (512, 64, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 1, [7, 7]),
        (256, 96, 2, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 2, [5, 5]),
        // C/groups not a multiple of 8: the input's channels padded to 8 (qc_pad_channels) for the
        // 16-byte loader (a stem; C/groups 12; reflect; circular).
        (3, 16, 1, [7, 7], [2, 2], [3, 3], [1, 1], PaddingMode::Zeros, 2, [30, 27]),
        (24, 40, 2, [3, 3], [1, 1], [1, 1], [1, 2], PaddingMode::Reflect, 2, [9, 12]),
        (5, 70, 1, [2, 3], [1, 1], [0, 1], [1, 1], PaddingMode::Circular, 3, [6, 5]),
        // One input channel per group (16 outputs each): the element-wise loader.
        (4, 64, 4, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Reflect, 2, [9, 12]),
    ];
    for (c, k, groups, kernel, stride, pad, dil, mode, n, hw) in cases {
        let o = ConvOptions::<2>::new(kernel)
            .stride(stride)
            .padding(Padding::Explicit(pad))
            .dilation(dil)
            .groups(groups)
            .padding_mode(mode)
            .bias(true);
        let m = observed_conv2d(&mut rng, c, k, o.bias(true));
        for dtype in [DType::F16, DType::BF16] {
            let x = make_input(&mut rng, &[n, c, hw[0], hw[1]], dtype);
            check_tensor_core(&m, &x, &format!("{m}"));
        }
    }
    let o1 = ConvOptions::<1>::new([5]).padding(Padding::Explicit([2])).bias(false);
    let s1 = qconv::Conv1d::weight_shape(8, 16, &o1);
    let m1 = qconv::Conv1d::from_float_observed(
        Tensor::from_vec(rng.vec(s1.iter().product(), -0.5, 0.5), &s1).unwrap(),
        None,
        o1,
    )
    .unwrap();
    let o3 = ConvOptions::<3>::new([3, 3, 3]).padding(Padding::Explicit([1, 1, 1])).bias(true);
    let s3 = qconv::Conv3d::weight_shape(8, 8, &o3);
    let m3 = qconv::Conv3d::from_float_observed(
        Tensor::from_vec(rng.vec(s3.iter().product(), -0.5, 0.5), &s3).unwrap(),
        Some(Tensor::from_vec(rng.vec(8, -0.5, 0.5), &[8]).unwrap()),
        o3,
    )
    .unwrap();
    for dtype in [DType::F16, DType::BF16] {
        check_tensor_core(&m1, &make_input(&mut rng, &[3, 8, 100], dtype), &format!("{m1}"));
        check_tensor_core(&m3, &make_input(&mut rng, &[2, 8, 6, 7, 8], dtype), &format!("{m3}"));
    }
}

/// Tensor cores for transposed convolutions (phase decomposition): strides with phases that have
/// no active tap, dilation, groups, output_padding, 1-d/2-d/3-d, ragged tiles.
#[test]
fn tensor_core_transposed_convolutions_match_the_rounded_weight_oracle() {
    if !gpu("tensor_core_transposed_convolutions_match_the_rounded_weight_oracle") {
        return;
    }
    let mut rng = Rng::new(4242);
    // (C, K, groups, kernel, stride, padding, output_padding, dilation, batch, input)
    type Case = (usize, usize, usize, [usize; 2], [usize; 2], [usize; 2], [usize; 2], [usize; 2], usize, [usize; 2]);
    let cases: Vec<Case> = vec![
        (16, 24, 1, [4, 4], [2, 2], [1, 1], [0, 0], [1, 1], 2, [7, 6]),
        (16, 136, 1, [4, 4], [2, 2], [1, 1], [0, 0], [1, 1], 8, [28, 28]), // 128x128, ragged channels
        (16, 40, 1, [4, 4], [2, 2], [1, 1], [0, 0], [1, 1], 1, [16, 16]),  // 64x64
        (16, 16, 2, [3, 3], [2, 1], [1, 0], [1, 0], [2, 1], 2, [5, 7]),
        (8, 12, 1, [2, 2], [3, 3], [0, 0], [2, 1], [1, 1], 2, [4, 5]), // phases without taps
        (24, 8, 1, [1, 1], [1, 1], [0, 0], [0, 0], [1, 1], 3, [6, 6]),
    ];
    for (c, k, groups, kernel, stride, pad, opad, dil, n, hw) in cases {
        let o = ConvOptions::<2>::new(kernel)
            .stride(stride)
            .padding(Padding::Explicit(pad))
            .output_padding(opad)
            .dilation(dil)
            .groups(groups)
            .bias(true);
        let shape = qconv::ConvTranspose2d::weight_shape(c, k, &o);
        let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
        let b = Tensor::from_vec(rng.vec(k, -0.5, 0.5), &[k]).unwrap();
        let m = qconv::ConvTranspose2d::from_float_observed(w, Some(b), o).unwrap();
        for dtype in [DType::F16, DType::BF16] {
            let x = make_input(&mut rng, &[n, c, hw[0], hw[1]], dtype);
            check_tensor_core(&m, &x, &format!("{m}"));
        }
    }
    let o1 = ConvOptions::<1>::new([5]).stride([3]).padding(Padding::Explicit([2])).bias(false);
    let s1 = qconv::ConvTranspose1d::weight_shape(8, 16, &o1);
    let m1 = qconv::ConvTranspose1d::from_float_observed(
        Tensor::from_vec(rng.vec(s1.iter().product(), -0.5, 0.5), &s1).unwrap(),
        None,
        o1,
    )
    .unwrap();
    let o3 = ConvOptions::<3>::new([2, 3, 2]).stride([2, 1, 2]).padding(Padding::Explicit([0, 1, 0])).bias(true);
    let s3 = qconv::ConvTranspose3d::weight_shape(8, 8, &o3);
    let m3 = qconv::ConvTranspose3d::from_float_observed(
        Tensor::from_vec(rng.vec(s3.iter().product(), -0.5, 0.5), &s3).unwrap(),
        Some(Tensor::from_vec(rng.vec(8, -0.5, 0.5), &[8]).unwrap()),
        o3,
    )
    .unwrap();
    for dtype in [DType::F16, DType::BF16] {
        check_tensor_core(&m1, &make_input(&mut rng, &[3, 8, 20], dtype), &format!("{m1}"));
        check_tensor_core(&m3, &make_input(&mut rng, &[2, 8, 3, 4, 5], dtype), &format!("{m3}"));
    }
}

/// Channels-last inputs where the tensor cores do not apply (f32, exact precision, depthwise,
/// transposed): the layout kernels around the channels-first kernels give exactly the
/// channels-first result.
#[test]
fn channels_last_matches_channels_first_everywhere() {
    if !gpu("channels_last_matches_channels_first_everywhere") {
        return;
    }
    let mut rng = Rng::new(4321);
    let o = ConvOptions::<2>::new([3, 3]).padding(Padding::Explicit([1, 1])).groups(16).bias(true);
    let shape = qconv::Conv2d::weight_shape(16, 32, &o);
    let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let dw = qconv::Conv2d::from_float_observed(w, Some(Tensor::from_vec(rng.vec(32, -0.5, 0.5), &[32]).unwrap()), o)
        .unwrap()
        .to_device(CUDA)
        .unwrap();
    let o = ConvOptions::<2>::new([3, 3]).padding(Padding::Explicit([1, 1])).bias(true);
    let shape = qconv::Conv2d::weight_shape(16, 24, &o);
    let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let dense =
        qconv::Conv2d::from_float_observed(w, Some(Tensor::from_vec(rng.vec(24, -0.5, 0.5), &[24]).unwrap()), o)
            .unwrap()
            .to_device(CUDA)
            .unwrap();
    let exact = dense.clone().with_precision(Precision::Exact);
    // groups == C == K (a multiple of 8): the channels-last depthwise kernel, both layouts.
    let o = ConvOptions::<2>::new([3, 3])
        .stride([2, 1])
        .dilation([2, 1])
        .padding(Padding::Explicit([2, 1]))
        .padding_mode(PaddingMode::Reflect)
        .groups(16)
        .bias(true);
    let shape = qconv::Conv2d::weight_shape(16, 16, &o);
    let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let dw8_cpu =
        qconv::Conv2d::from_float_observed(w, Some(Tensor::from_vec(rng.vec(16, -0.5, 0.5), &[16]).unwrap()), o)
            .unwrap();
    let dw8 = dw8_cpu.to_device(CUDA).unwrap();
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let x = make_input(&mut rng, &[2, 16, 9, 10], dtype);
        check_module(&dw8_cpu, &x, "depthwise, channels-last kernel");
        let (xd, xl) = (x.to_device(CUDA).unwrap(), channels_last(&x).to_device(CUDA).unwrap());
        for (name, m) in [("depthwise x2", &dw), ("depthwise", &dw8), ("dense", &dense), ("dense exact", &exact)] {
            let a = m.forward(&xd).unwrap().to_device(Device::Cpu).unwrap();
            let b = m.forward_channels_last(&xl).unwrap().to_device(Device::Cpu).unwrap();
            assert_eq!(channels_first(&b), a, "{name} {dtype}");
        }
        // The CPU path agrees with the exact CUDA path within the f32 tolerance, both layouts.
        let cpu = exact.to_device(Device::Cpu).unwrap();
        let yc = cpu.forward_channels_last(&channels_last(&x)).unwrap();
        assert_eq!(channels_first(&yc), cpu.forward(&x).unwrap());
    }
    let o = ConvOptions::<2>::new([4, 4]).stride([2, 2]).padding(Padding::Explicit([1, 1])).bias(true);
    let shape = qconv::ConvTranspose2d::weight_shape(8, 12, &o);
    let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let tr = qconv::ConvTranspose2d::from_float_observed(
        w,
        Some(Tensor::from_vec(rng.vec(12, -0.5, 0.5), &[12]).unwrap()),
        o,
    )
    .unwrap()
    .to_device(CUDA)
    .unwrap();
    for dtype in [DType::F32, DType::F16] {
        let x = make_input(&mut rng, &[2, 8, 7, 6], dtype);
        let a = tr.forward(&x.to_device(CUDA).unwrap()).unwrap().to_device(Device::Cpu).unwrap();
        let b = tr.forward_channels_last(&channels_last(&x).to_device(CUDA).unwrap(), None).unwrap();
        assert_eq!(channels_first(&b.to_device(Device::Cpu).unwrap()), a, "transposed {dtype}");
    }
}

/// FakeQuantJob: asynchronous launches on the caller's stream, one check; the non-finite flag is
/// reset per launch and names the first bad element.
#[test]
fn fake_quant_job_launches_asynchronously_and_checks_once() {
    if !gpu("fake_quant_job_launches_asynchronously_and_checks_once") {
        return;
    }
    let rt = Runtime::get(0).unwrap();
    let s = rt.new_stream().unwrap();
    let mut rng = Rng::new(8);
    let shape = [6usize, 5, 3];
    let n = 90;
    let w = rng.vec(n, -1.0, 1.0);
    let qp = qconv::WeightQParams::per_channel(
        QuantDType::QInt8,
        vec![0.01, 0.02, 0.03, 0.04, 0.05, 0.06],
        vec![0, 1, -1, 2, 0, 3],
        0,
    );
    let want = qconv::quant::fake_quantize(&Tensor::from_vec(w.clone(), &shape).unwrap(), &qp).unwrap().to_vec_f32();
    let src = rt.htod(&w, Some(&s)).unwrap();
    let mut dst = rt.zeros::<f32>(n, Some(&s)).unwrap();
    let mut job = rt.fake_quant_job(&qp, &shape, Some(&s)).unwrap();
    assert_eq!(job.numel(), n);
    for _ in 0..3 {
        job.enqueue(&src, Some(&mut dst), None, Some(&s)).unwrap();
    }
    job.check(&src, Some(&s)).unwrap();
    let got = rt.dtoh(&dst, Some(&s)).unwrap();
    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
    let mut bad = w.clone();
    bad[41] = f32::NAN;
    bad[77] = f32::INFINITY;
    let src_bad = rt.htod(&bad, Some(&s)).unwrap();
    job.enqueue(&src_bad, Some(&mut dst), None, Some(&s)).unwrap();
    match job.check(&src_bad, Some(&s)) {
        Err(Error::NonFiniteWeight { index, .. }) => assert_eq!(index, 41),
        other => panic!("expected NonFiniteWeight, got {other:?}"),
    }
    // The flag is reset by the next launch.
    job.enqueue(&src, Some(&mut dst), None, Some(&s)).unwrap();
    job.check(&src, Some(&s)).unwrap();
    let short = rt.zeros::<f32>(n - 1, Some(&s)).unwrap();
    assert!(matches!(job.enqueue(&short, Some(&mut dst), None, Some(&s)), Err(Error::Shape { .. })));
}

/// Runs `m` on CUDA with its weight stored as floats and as 8-bit codes, every activation dtype,
/// both precisions and both layouts: the outputs must be identical bit for bit (the codes
/// dequantize to `get_weight()` exactly, in the tensor-core loaders and in `qc_dequant_codes`).
/// Returns the code storage's device weight bytes.
fn check_code_storage<const D: usize, const T: bool>(m: &ConvModule<D, T>, x_shape: &[usize], rng: &mut Rng) -> usize
where
    ConvModule<D, T>: Fwd + ClFwd,
{
    let what = format!("{m}");
    let float = m.to_device(CUDA).unwrap();
    let codes = m.clone().with_weight_storage(WeightStorage::Int8Codes).unwrap().to_device(CUDA).unwrap();
    assert_eq!(codes.weight_storage(), WeightStorage::Int8Codes);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let x = make_input(rng, x_shape, dtype);
        let (xd, xl) = (x.to_device(CUDA).unwrap(), channels_last(&x).to_device(CUDA).unwrap());
        for precision in [Precision::TensorCore, Precision::Exact] {
            let (f, q) = (float.clone().with_precision(precision), codes.clone().with_precision(precision));
            let a = f.fwd(&xd).unwrap_or_else(|e| panic!("{what}: {e}")).to_device(Device::Cpu).unwrap();
            let b = q.fwd(&xd).unwrap_or_else(|e| panic!("{what}: codes: {e}")).to_device(Device::Cpu).unwrap();
            let bits = |t: &Tensor| t.to_vec_f32().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
            assert_eq!(bits(&a), bits(&b), "{what} {dtype} {precision:?}: code storage differs");
            let al = f.fwd_last(&xl).unwrap().to_device(Device::Cpu).unwrap();
            let bl = q.fwd_last(&xl).unwrap().to_device(Device::Cpu).unwrap();
            assert_eq!(bits(&al), bits(&bl), "{what} {dtype} {precision:?}: code storage differs (channels-last)");
        }
    }
    let (k, numel) = (m.out_channels(), m.weight().numel());
    let cg = m.in_channels() / m.groups();
    let taps = numel / (k * cg);
    // Forward convolutions with C/groups not a multiple of 8 pad their channel slots to 8.
    let cg_pad = qconv::cuda::launch::tc_padded_cg(T, cg, k / m.groups()).unwrap_or(cg);
    let row = (taps * cg_pad).div_ceil(8) * 8;
    assert_eq!(codes.device_weight_bytes(), k * row + 8 * k, "{what}");
    assert!(float.device_weight_bytes() >= 4 * numel, "{what}");
    codes.device_weight_bytes()
}

/// `WeightStorage::Int8Codes`: every kernel family (tensor-core tiles incl. split-K, the
/// element-wise loader with a reduction that is not a multiple of 8, transposed tiles, depthwise,
/// the CUDA-core fallbacks, exact precision, f32), signed and unsigned codes, per-tensor and
/// per-channel qparams, after set_weight; 4x less device memory than the float32 weight.
#[test]
fn int8_code_storage_is_bit_identical_to_float_storage() {
    if !gpu("int8_code_storage_is_bit_identical_to_float_storage") {
        return;
    }
    let mut rng = Rng::new(88);
    // (C, K, groups, kernel, stride, padding, dilation, mode, batch, input)
    type Case = (usize, usize, usize, [usize; 2], [usize; 2], [usize; 2], [usize; 2], PaddingMode, usize, [usize; 2]);
    let cases: Vec<Case> = vec![
        (16, 20, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 2, [9, 11]),
        (8, 136, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 4, [48, 48]), // 128x128
        (16, 40, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 4, [40, 40]), // 128x64
        (32, 48, 2, [3, 3], [2, 2], [2, 2], [2, 2], PaddingMode::Reflect, 2, [13, 10]),
        (512, 64, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 1, [7, 7]), // split-K
        (3, 16, 1, [7, 7], [2, 2], [3, 3], [1, 1], PaddingMode::Zeros, 2, [30, 27]), // padded to 8
        (5, 70, 1, [2, 3], [1, 1], [0, 1], [1, 1], PaddingMode::Circular, 3, [6, 5]), // padded to 8
        (24, 32, 2, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Reflect, 2, [9, 8]), // 12 -> 16
        (4, 64, 4, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 2, [9, 12]),  // gather, 9
        (16, 16, 16, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 2, [9, 10]), // depthwise kernel
        (16, 32, 16, [3, 3], [2, 1], [1, 1], [1, 1], PaddingMode::Zeros, 2, [9, 10]), // CUDA cores
        (6, 4, 2, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Replicate, 2, [8, 8]), // CUDA cores
    ];
    for (i, (c, k, groups, kernel, stride, pad, dil, mode, n, hw)) in cases.into_iter().enumerate() {
        let o = ConvOptions::<2>::new(kernel)
            .stride(stride)
            .padding(Padding::Explicit(pad))
            .dilation(dil)
            .groups(groups)
            .padding_mode(mode)
            .bias(i % 2 == 0);
        let shape = qconv::Conv2d::weight_shape(c, k, &o);
        let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
        let b = (i % 2 == 0).then(|| Tensor::from_vec(rng.vec(k, -0.5, 0.5), &[k]).unwrap());
        let m = qconv::Conv2d::from_float_observed(w.clone(), b.clone(), o).unwrap();
        check_code_storage(&m, &[n, c, hw[0], hw[1]], &mut rng);
        if i == 0 {
            // Unsigned codes, per tensor (zero point 128).
            let qp = qconv::WeightQParams::per_tensor(QuantDType::QUInt8, 0.004, 128);
            let mq = qconv::Conv2d::from_float(w, b, qp, o).unwrap();
            check_code_storage(&mq, &[n, c, hw[0], hw[1]], &mut rng);
            // set_weight re-uploads the codes.
            let mut moved = mq.with_weight_storage(WeightStorage::Int8Codes).unwrap().to_device(CUDA).unwrap();
            let w2 = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
            moved.set_weight(w2.clone()).unwrap();
            let mut float = moved.clone().with_weight_storage(WeightStorage::Float).unwrap();
            float.set_weight(w2).unwrap();
            let x = make_input(&mut rng, &[n, c, hw[0], hw[1]], DType::F16).to_device(CUDA).unwrap();
            let a = moved.forward(&x).unwrap().to_device(Device::Cpu).unwrap();
            assert_eq!(a, float.forward(&x).unwrap().to_device(Device::Cpu).unwrap(), "after set_weight");
        }
    }
    // Transposed: tensor-core tiles (128x128, 64x64, groups) and the CUDA-core fallback (C/groups 5).
    for (c, k, groups, kernel, stride, n, hw) in [
        (16usize, 136usize, 1usize, [4usize, 4usize], [2usize, 2usize], 4usize, [14usize, 14usize]),
        (16, 40, 1, [4, 4], [2, 2], 1, [16, 16]),
        (16, 16, 2, [3, 3], [2, 1], 2, [5, 7]),
        (5, 12, 1, [3, 3], [2, 2], 2, [6, 5]),
    ] {
        let o =
            ConvOptions::<2>::new(kernel).stride(stride).padding(Padding::Explicit([1, 1])).groups(groups).bias(true);
        let shape = qconv::ConvTranspose2d::weight_shape(c, k, &o);
        let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
        let b = Tensor::from_vec(rng.vec(k, -0.5, 0.5), &[k]).unwrap();
        let m = qconv::ConvTranspose2d::from_float_observed(w.clone(), Some(b.clone()), o).unwrap();
        check_code_storage(&m, &[n, c, hw[0], hw[1]], &mut rng);
        // Per channel along axis 1 (the output channels of a transposed weight).
        let qp = qconv::WeightQParams::per_channel_symmetric_from_weight(&w, 1, QuantDType::QInt8).unwrap();
        let m = qconv::ConvTranspose2d::from_float(w, Some(b), qp, o).unwrap();
        check_code_storage(&m, &[n, c, hw[0], hw[1]], &mut rng);
    }
    // 1-d and 3-d.
    let o1 = ConvOptions::<1>::new([5]).padding(Padding::Explicit([2])).bias(false);
    let s1 = qconv::Conv1d::weight_shape(8, 16, &o1);
    let w1 = Tensor::from_vec(rng.vec(s1.iter().product(), -0.5, 0.5), &s1).unwrap();
    let bytes = check_code_storage(&qconv::Conv1d::from_float_observed(w1, None, o1).unwrap(), &[3, 8, 100], &mut rng);
    assert_eq!(bytes, 16 * 40 + 8 * 16);
    let o3 = ConvOptions::<3>::new([3, 3, 3]).padding(Padding::Explicit([1, 1, 1])).bias(true);
    let s3 = qconv::Conv3d::weight_shape(8, 8, &o3);
    let w3 = Tensor::from_vec(rng.vec(s3.iter().product(), -0.5, 0.5), &s3).unwrap();
    let b3 = Tensor::from_vec(rng.vec(8, -0.5, 0.5), &[8]).unwrap();
    check_code_storage(&qconv::Conv3d::from_float_observed(w3, Some(b3), o3).unwrap(), &[2, 8, 6, 7, 8], &mut rng);
}

/// `Precision::Tf32` with f32 activations: forward (every tile, split-K, groups, padding modes,
/// 1-d/3-d) and transposed convolutions on the TF32 tensor cores, against the f64 oracle over the
/// TF32-rounded weight and input (round to nearest, ties away: a truncating kernel fails the
/// tolerance, which only allows for f32 accumulation); channels-first and channels-last agree bit
/// for bit; problems the TF32 tiles do not take (C/groups 12 with 8 outputs, depthwise) and code storage
/// give the exact path's output.
#[test]
fn tf32_precision_matches_the_tf32_rounded_oracle() {
    use qconv::cuda::runtime::tf32_round;
    if !gpu("tf32_precision_matches_the_tf32_rounded_oracle") {
        return;
    }
    let mut rng = Rng::new(3232);
    fn check<const D: usize, const T: bool>(m: &ConvModule<D, T>, x: &Tensor, what: &str)
    where
        ConvModule<D, T>: Fwd + ClFwd,
    {
        let md = m.to_device(CUDA).unwrap().with_precision(Precision::Tf32);
        let y = md.fwd(&x.to_device(CUDA).unwrap()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let y = y.to_device(Device::Cpu).unwrap();
        let yl = md.fwd_last(&channels_last(x).to_device(CUDA).unwrap()).unwrap().to_device(Device::Cpu).unwrap();
        assert_eq!(channels_first(&yl), y, "{what}: the two layouts differ");
        let w: Vec<f32> = m.get_weight().to_vec_f32().into_iter().map(tf32_round).collect();
        let xr = Tensor::from_vec(x.to_vec_f32().into_iter().map(tf32_round).collect(), x.shape()).unwrap();
        let (want, mag) = oracle_with_weight(m, &xr, &w);
        let got = y.to_vec_f32();
        for i in 0..want.len() {
            let tol = 8.0 * f32::EPSILON as f64 * mag[i] + 1e-30;
            assert!(
                (got[i] as f64 - want[i]).abs() <= tol,
                "{what}: output[{i}] = {} want {} (tol {tol:e})",
                got[i],
                want[i]
            );
        }
    }
    // (C, K, groups, kernel, stride, padding, mode, batch, input)
    type Case = (usize, usize, usize, [usize; 2], [usize; 2], [usize; 2], PaddingMode, usize, [usize; 2]);
    let cases: Vec<Case> = vec![
        (16, 20, 1, [3, 3], [1, 1], [1, 1], PaddingMode::Zeros, 2, [9, 11]),
        (8, 136, 1, [3, 3], [1, 1], [1, 1], PaddingMode::Zeros, 4, [48, 48]), // 128x128
        (16, 40, 1, [3, 3], [1, 1], [1, 1], PaddingMode::Zeros, 4, [40, 40]), // 128x64
        (32, 48, 2, [3, 3], [2, 2], [2, 2], PaddingMode::Reflect, 2, [13, 10]),
        (512, 64, 1, [3, 3], [1, 1], [1, 1], PaddingMode::Zeros, 1, [7, 7]), // split-K
        (24, 16, 1, [3, 2], [1, 2], [1, 1], PaddingMode::Circular, 3, [7, 9]),
        // Channels padded to 8 / 16 for the TF32 tiles (no element-wise loader there).
        (3, 16, 1, [7, 7], [2, 2], [3, 3], PaddingMode::Zeros, 2, [30, 27]),
        (24, 40, 2, [3, 3], [1, 1], [1, 1], PaddingMode::Reflect, 2, [9, 12]),
    ];
    for (c, k, groups, kernel, stride, pad, mode, n, hw) in cases {
        let o = ConvOptions::<2>::new(kernel)
            .stride(stride)
            .padding(Padding::Explicit(pad))
            .groups(groups)
            .padding_mode(mode)
            .bias(true);
        let m = observed_conv2d(&mut rng, c, k, o.bias(true));
        check(&m, &make_input(&mut rng, &[n, c, hw[0], hw[1]], DType::F32), &format!("{m}"));
    }
    let o = ConvOptions::<2>::new([4, 4]).stride([2, 2]).padding(Padding::Explicit([1, 1])).bias(true);
    for (c, k, n, hw) in [(16usize, 136usize, 4usize, [14usize, 14usize]), (16, 40, 1, [16, 16])] {
        let shape = qconv::ConvTranspose2d::weight_shape(c, k, &o);
        let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
        let b = Tensor::from_vec(rng.vec(k, -0.5, 0.5), &[k]).unwrap();
        let m = qconv::ConvTranspose2d::from_float_observed(w, Some(b), o).unwrap();
        check(&m, &make_input(&mut rng, &[n, c, hw[0], hw[1]], DType::F32), &format!("{m}"));
    }
    let o1 = ConvOptions::<1>::new([5]).padding(Padding::Explicit([2])).bias(false);
    let s1 = qconv::Conv1d::weight_shape(8, 16, &o1);
    let w1 = Tensor::from_vec(rng.vec(s1.iter().product(), -0.5, 0.5), &s1).unwrap();
    let m1 = qconv::Conv1d::from_float_observed(w1, None, o1).unwrap();
    check(&m1, &make_input(&mut rng, &[3, 8, 100], DType::F32), "conv1d");
    let o3 = ConvOptions::<3>::new([3, 3, 3]).padding(Padding::Explicit([1, 1, 1])).bias(true);
    let s3 = qconv::Conv3d::weight_shape(8, 8, &o3);
    let w3 = Tensor::from_vec(rng.vec(s3.iter().product(), -0.5, 0.5), &s3).unwrap();
    let m3 = qconv::Conv3d::from_float_observed(w3, Some(Tensor::from_vec(rng.vec(8, -0.5, 0.5), &[8]).unwrap()), o3)
        .unwrap();
    check(&m3, &make_input(&mut rng, &[2, 8, 6, 7, 8], DType::F32), "conv3d");
    // Not on the TF32 tiles: C/groups 12 with 8 output channels (not padded), depthwise, and
    // code storage -> exactly the exact path.
    for (c, k, groups) in [(12usize, 8usize, 1usize), (16, 16, 16), (16, 32, 1)] {
        let o = ConvOptions::<2>::new([3, 3]).padding(Padding::Explicit([1, 1])).groups(groups).bias(true);
        let mut m = observed_conv2d(&mut rng, c, k, o.bias(true));
        if c == 16 && k == 32 {
            m = m.with_weight_storage(WeightStorage::Int8Codes).unwrap();
        }
        let md = m.to_device(CUDA).unwrap();
        let x = make_input(&mut rng, &[2, c, 9, 9], DType::F32).to_device(CUDA).unwrap();
        let exact = md.clone().with_precision(Precision::Exact).forward(&x).unwrap().to_device(Device::Cpu).unwrap();
        let tf32 = md.with_precision(Precision::Tf32).forward(&x).unwrap().to_device(Device::Cpu).unwrap();
        assert_eq!(exact, tf32, "C {c} K {k} groups {groups}");
    }
}
