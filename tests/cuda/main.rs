#![cfg(feature = "cuda")]
//! CUDA against the CPU path and PyTorch. Every test that needs a usable CUDA device is
//! `#[ignore = "needs a CUDA device"]`, so a plain `cargo test` lists it as ignored rather than
//! passed; `cargo test --test cuda -- --include-ignored` (what `scripts/gpu-check.sh` runs) runs
//! them, and each fails with the probe's reason where CUDA is unusable.
//!
//! Tolerances, per element, against the f64 oracle `conv_naive` over the fake-quantized weight:
//! `8 · eps32 · Σ|x|·|ŵ|(+|b|)` for f32 activations (as tests/fixtures.rs and tests/modules.rs:
//! a few float32 roundings of the magnitude of the sum, whatever the summation order), plus one
//! rounding of the output to the activation dtype for f16 (`2^-11 · |y|`) and bf16
//! (`2^-8 · |y|`). Fake-quantized weights must be bit-identical to the CPU path for every plan.
//!
//! Everything here is small: the whole suite runs in seconds on an H100.
//!
//! The tests are grouped by what they exercise: `basics.rs` (tensors, devices, runtime, fake-quant
//! kernels, errors, the sanitizer smoke run), `exact.rs` (the exact path against the oracle and
//! PyTorch: fixtures, random sweeps, large and empty problems, streams and threads, inputs past
//! 2^31 elements), `fast_paths.rs` (tensor cores, channels-last, 8-bit code storage, TF32) and
//! `int8.rs` (the lowered int8 convolutions against the exact integer oracle) and `sm90a.rs`
//! (the opt-in Hopper kernel, on compute capability 9.0); the helpers they share are below.

#[path = "../common/mod.rs"]
mod common;

mod basics;
mod exact;
mod fast_paths;
mod int8;
mod sm90a;

use common::{channels_first, channels_last, forward_opt, magnitude, oracle, oracle_with_weight};
use half::{bf16, f16};
use qconv::cuda::runtime::Runtime;
use qconv::io::StateDict;
use qconv::quant::observer::{Observer, ObserverScheme};
use qconv::testing::Rng;
use qconv::{
    AnyConv, ConvModule, ConvOptions, DType, Device, Error, Padding, PaddingMode, Precision, QuantDType, Tensor,
    WeightStorage,
};
use std::sync::Arc;

const CUDA: Device = Device::Cuda(0);

/// `true` when a CUDA device is usable; otherwise the test fails with the probe's reason. The
/// tests that call it are `#[ignore = "needs a CUDA device"]`: a plain `cargo test` does not run
/// them (nor count them as passed); `scripts/gpu-check.sh` runs them with `--include-ignored`.
fn gpu(test: &str) -> bool {
    if let Some(reason) = qconv::cuda::probe().unusable_reason() {
        panic!("{test}: needs a usable CUDA device: {reason}");
    }
    true
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
    let got = yd.to_device(Device::Cpu).unwrap().to_vec_f32().unwrap();
    let (want, mag) = oracle(m, x, None);
    let cpu = cpu.to_vec_f32().unwrap();
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
    let mut o = ConvOptions::<D>::new();
    let mut kernel = [0; D];
    #[allow(clippy::needless_range_loop)] // one loop draws every array in the original order
    for d in 0..D {
        kernel[d] = 1 + pick(rng, 3);
        o.stride[d] = 1 + pick(rng, 3);
        o.dilation[d] = 1 + pick(rng, 2);
    }
    o.kernel_size = Some(kernel);
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
    let shape = ConvModule::<D, T>::weight_shape(cin, cout, &o).unwrap();
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
    let m = ConvModule::<D, T>::new(weight, bias, obs.weight_qparams(), o).unwrap();
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
/// A Conv2d from `c` to `k` channels with a random weight and bias in [-0.5, 0.5],
/// quantized by the default observer (per-channel symmetric qint8).
fn observed_conv2d(rng: &mut Rng, c: usize, k: usize, o: ConvOptions<2>) -> qconv::Conv2d {
    let shape = qconv::Conv2d::weight_shape(c, k, &o).unwrap();
    let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let b = Some(Tensor::from_vec(rng.vec(k, -0.5, 0.5), &[k]).unwrap());
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

/// The weight a tensor-core forward multiplies with: `get_weight()` rounded to `dtype`.
fn rounded_weight<const D: usize, const T: bool>(m: &ConvModule<D, T>, dtype: DType) -> Vec<f32> {
    let w = m.get_weight().to_vec_f32().unwrap();
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
        self.forward_channels_last(x)
    }
}

fn check_tensor_core<const D: usize, const T: bool>(m: &ConvModule<D, T>, x: &Tensor, what: &str)
where
    ConvModule<D, T>: Fwd + ClFwd,
{
    assert_eq!(m.to_device(CUDA).unwrap().precision(), Precision::TensorCore, "the default precision");
    check_tensor_core_with(m, x, Precision::TensorCore, what);
}

/// [`check_tensor_core`] under another tensor-core precision (the opt-in sm_90a path).
fn check_tensor_core_with<const D: usize, const T: bool>(
    m: &ConvModule<D, T>,
    x: &Tensor,
    precision: Precision,
    what: &str,
) where
    ConvModule<D, T>: Fwd + ClFwd,
{
    let dtype = x.dtype();
    let md = m.to_device(CUDA).unwrap().with_precision(precision);
    let y_first = md.fwd(&x.to_device(CUDA).unwrap()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let xl = channels_last(x).to_device(CUDA).unwrap();
    let y_last = md.fwd_last(&xl).unwrap_or_else(|e| panic!("{what}: channels-last: {e}"));
    let y_first = y_first.to_device(Device::Cpu).unwrap();
    let y_last = y_last.to_device(Device::Cpu).unwrap();
    assert_eq!(y_last.shape(), channels_last(&y_first).shape(), "{what}");
    assert_eq!(channels_first(&y_last), y_first, "{what}: the two layouts differ");
    let (want, mag) = oracle_with_weight(m, x, &rounded_weight(m, dtype));
    let got = y_first.to_vec_f32().unwrap();
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
            let bits = |t: &Tensor| t.to_vec_f32().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
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
