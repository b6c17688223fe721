//! The CPU benchmark suite of docs/benchmarks.md, shared by `qconv bench` and the criterion benches,
//! and the GPU suite's cases; `gpu` (`bench/gpu.rs`, with the `cuda` feature) runs the GPU suite with CUDA-event timing
//! for `qconv bench --device cuda`.
//!
//! Each case builds its module the way `scripts/bench/torch_cpu.py` does: uniform weights in
//! `±1/sqrt(fan_in)` (PyTorch's default initialisation range), per-channel affine qint8 qparams with
//! zero point 0 and `scale = max|w| / 127` along the output-channel axis (0 for convolutions, 1 for
//! transposed ones), and an input uniform in `[-1, 1)`. Data comes from a fixed-seed generator, so
//! runs are repeatable.

use std::time::Instant;

use crate::conv::{AnyConv, AnyQuantizedConv, ConvModule, ConvOptions, Int8Weight, QuantizedConvModule};
use crate::cpu::int8::bench::{Int8Bench, ACT_SCALE, ACT_ZERO_POINT};
use crate::cpu::int8::ActivationLayout;
use crate::error::{Error, Result};
use crate::quant::{ActivationQParams, QuantDType, QuantizedTensor, WeightQParams};
use crate::tensor::Tensor;

#[cfg(feature = "cuda")]
pub mod gpu;

/// One benchmark case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchCase {
    /// Case name, as in docs/benchmarks.md (`c2d_3x3`, ...).
    pub name: &'static str,
    /// Transposed convolution.
    pub transposed: bool,
    /// Spatial dimensions (1, 2, 3).
    pub dims: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Input spatial size (first `dims` entries used).
    pub spatial: [usize; 3],
    /// Kernel size (same in every dimension).
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding.
    pub pad: usize,
    /// Dilation.
    pub dilation: usize,
    /// Groups.
    pub groups: usize,
}

#[allow(clippy::too_many_arguments)]
const fn case(
    name: &'static str,
    transposed: bool,
    dims: usize,
    c: usize,
    k: usize,
    spatial: [usize; 3],
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    groups: usize,
) -> BenchCase {
    BenchCase {
        name,
        transposed,
        dims,
        in_channels: c,
        out_channels: k,
        spatial,
        kernel,
        stride,
        pad,
        dilation,
        groups,
    }
}

/// The CPU suite (f32, batch 1, all with bias).
pub const CPU_SUITE: [BenchCase; 10] = [
    case("c2d_3x3", false, 2, 128, 128, [28, 28, 0], 3, 1, 1, 1, 1),
    case("c2d_1x1", false, 2, 256, 64, [56, 56, 0], 1, 1, 0, 1, 1),
    case("c2d_stem", false, 2, 3, 64, [224, 224, 0], 7, 2, 3, 1, 1),
    case("c2d_dw", false, 2, 256, 256, [28, 28, 0], 3, 1, 1, 1, 256),
    case("c2d_dil", false, 2, 64, 64, [56, 56, 0], 3, 1, 2, 2, 1),
    case("c1d", false, 1, 256, 256, [2048, 0, 0], 5, 1, 2, 1, 1),
    case("c3d", false, 3, 32, 64, [8, 28, 28], 3, 1, 1, 1, 1),
    case("ct2d", true, 2, 128, 64, [28, 28, 0], 4, 2, 1, 1, 1),
    case("ct1d", true, 1, 256, 128, [1024, 0, 0], 4, 2, 1, 1, 1),
    case("ct3d", true, 3, 32, 16, [8, 16, 16], 4, 2, 1, 1, 1),
];

/// The GPU suite of docs/benchmarks.md (f32 module weights, all with bias), with each case's batch size
/// (32, except `g_c1d` 16 and `g_c3d` 4), as in `scripts/bench/torch_gpu.py`.
pub const GPU_SUITE: [(BenchCase, usize); 11] = [
    (case("g_3x3_64", false, 2, 64, 64, [56, 56, 0], 3, 1, 1, 1, 1), 32),
    (case("g_3x3_128", false, 2, 128, 128, [28, 28, 0], 3, 1, 1, 1, 1), 32),
    (case("g_3x3_256", false, 2, 256, 256, [14, 14, 0], 3, 1, 1, 1, 1), 32),
    (case("g_3x3_512", false, 2, 512, 512, [7, 7, 0], 3, 1, 1, 1, 1), 32),
    (case("g_1x1_256_64", false, 2, 256, 64, [56, 56, 0], 1, 1, 0, 1, 1), 32),
    (case("g_1x1_1024_256", false, 2, 1024, 256, [14, 14, 0], 1, 1, 0, 1, 1), 32),
    (case("g_stem", false, 2, 3, 64, [224, 224, 0], 7, 2, 3, 1, 1), 32),
    (case("g_dw", false, 2, 256, 256, [28, 28, 0], 3, 1, 1, 1, 256), 32),
    (case("g_c1d", false, 1, 512, 512, [4096, 0, 0], 3, 1, 1, 1, 1), 16),
    (case("g_c3d", false, 3, 64, 64, [16, 56, 56], 3, 1, 1, 1, 1), 4),
    (case("g_ct2d", true, 2, 256, 128, [28, 28, 0], 4, 2, 1, 1, 1), 32),
];

/// Looks a GPU-suite case up by name; returns it with its batch size.
pub fn find_gpu_case(name: &str) -> Result<(BenchCase, usize)> {
    GPU_SUITE.iter().copied().find(|(c, _)| c.name == name).ok_or_else(|| Error::Parse {
        what: "GPU benchmark case",
        value: name.to_string(),
        expected: GPU_SUITE.iter().map(|(c, _)| c.name).collect::<Vec<_>>().join(", "),
    })
}

/// Looks a case up by name.
pub fn find_case(name: &str) -> Result<BenchCase> {
    CPU_SUITE.iter().copied().find(|c| c.name == name).ok_or_else(|| Error::Parse {
        what: "benchmark case",
        value: name.to_string(),
        expected: CPU_SUITE.iter().map(|c| c.name).collect::<Vec<_>>().join(", "),
    })
}

/// The benchmarks draw their data from the crate's one test generator.
pub use crate::testing::Rng;

/// Per-channel affine qint8 qparams with zero point 0 and `scale = max|w| / 127` along `axis`
/// (what `scripts/bench/torch_cpu.py` uses).
pub fn absmax_qparams(weight: &Tensor, axis: usize) -> Result<WeightQParams> {
    let w = weight.as_slice::<f32>()?;
    let shape = weight.shape();
    let channels = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut amax = vec![0f32; channels];
    for (i, run) in w.chunks(inner.max(1)).enumerate() {
        let c = i % channels;
        amax[c] = run.iter().fold(amax[c], |m, x| m.max(x.abs()));
    }
    let scales = amax.iter().map(|&a| a.max(1e-8) / 127.0).collect();
    Ok(WeightQParams::per_channel(scales, vec![0; channels], axis, QuantDType::QInt8))
}

/// A built case: module, input and the numbers needed to report it.
#[derive(Clone, Debug)]
pub struct BuiltCase {
    /// The module (fake-quantized weight cached).
    pub module: AnyConv,
    /// The input batch.
    pub input: Tensor,
    /// Its float weight and qparams (for timing fake-quant alone).
    pub weight: Tensor,
    /// The qparams.
    pub qparams: WeightQParams,
    /// FLOPs of one forward (docs/benchmarks.md's formula).
    pub flops: f64,
}

fn build_d<const D: usize, const T: bool>(c: &BenchCase, batch: usize, rng: &mut Rng) -> Result<BuiltCase> {
    let opts = ConvOptions::<D>::new()
        .kernel_size(c.kernel)
        .stride(c.stride)
        .padding(c.pad)
        .dilation(c.dilation)
        .groups(c.groups);
    let shape = ConvModule::<D, T>::weight_shape(c.in_channels, c.out_channels, &opts)?;
    let fan_in = shape[1] * c.kernel.pow(D as u32);
    let bound = 1.0 / (fan_in as f32).sqrt();
    let n: usize = shape.iter().product();
    let weight = Tensor::from_vec(rng.vec(n, -bound, bound), &shape)?;
    let bias = Tensor::from_vec(rng.vec(c.out_channels, -bound, bound), &[c.out_channels])?;
    let qparams = absmax_qparams(&weight, if T { 1 } else { 0 })?;
    let module = ConvModule::<D, T>::new(weight.clone(), Some(bias), qparams.clone(), opts)?;
    let mut in_shape = vec![batch, c.in_channels];
    in_shape.extend_from_slice(&c.spatial[..D]);
    // The batch is the caller's: an input too large for usize or memory is an error, not a panic.
    let n_in = crate::tensor::checked_numel(&in_shape)?;
    let mut values = crate::alloc::try_with_capacity(n_in, || format!("the input of shape {in_shape:?}"))?;
    values.extend((0..n_in).map(|_| rng.uniform(-1.0, 1.0)));
    let input = Tensor::from_vec(values, &in_shape)?;
    let kprod = c.kernel.pow(D as u32) as f64;
    let flops = if T {
        let sp: usize = c.spatial[..D].iter().product();
        2.0 * batch as f64 * (c.in_channels * (c.out_channels / c.groups)) as f64 * kprod * sp as f64
    } else {
        let out = module.options().conv_output_size(&c.spatial[..D].try_into().expect("D entries"))?;
        let sp: usize = out.iter().product();
        2.0 * batch as f64 * (c.out_channels * (c.in_channels / c.groups)) as f64 * kprod * sp as f64
    };
    Ok(BuiltCase { module: wrap(module), input, weight, qparams, flops })
}

fn wrap<const D: usize, const T: bool>(m: ConvModule<D, T>) -> AnyConv {
    // The const parameters pick exactly one arm; the conversions go through `Any`-free clones.
    let any: Box<dyn std::any::Any> = Box::new(m);
    match (D, T) {
        (1, false) => AnyConv::Conv1d(*any.downcast().expect("Conv1d")),
        (2, false) => AnyConv::Conv2d(*any.downcast().expect("Conv2d")),
        (3, false) => AnyConv::Conv3d(*any.downcast().expect("Conv3d")),
        (1, true) => AnyConv::ConvTranspose1d(*any.downcast().expect("ConvTranspose1d")),
        (2, true) => AnyConv::ConvTranspose2d(*any.downcast().expect("ConvTranspose2d")),
        _ => AnyConv::ConvTranspose3d(*any.downcast().expect("ConvTranspose3d")),
    }
}

impl BenchCase {
    /// The case as a backend problem for `batch` (1-d and 2-d with leading unit dimensions; no
    /// output padding): what the int8 GPU rows run directly.
    pub fn problem(&self, batch: usize) -> crate::problem::ConvProblem {
        let lead = 3 - self.dims.clamp(1, 3);
        let at = |v: usize, fill: usize| -> [usize; 3] { std::array::from_fn(|d| if d < lead { fill } else { v }) };
        let in_size: [usize; 3] = std::array::from_fn(|d| if d < lead { 1 } else { self.spatial[d - lead] });
        let span = self.dilation * (self.kernel - 1) + 1;
        let out_size = in_size.map(|l| {
            if self.transposed {
                ((l.max(1) - 1) * self.stride + span).saturating_sub(2 * self.pad)
            } else {
                (l + 2 * self.pad).saturating_sub(span) / self.stride + 1
            }
        });
        let mut out_size = out_size;
        out_size[..lead].fill(1);
        crate::problem::ConvProblem {
            transposed: self.transposed,
            batch,
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            groups: self.groups,
            in_size,
            out_size,
            kernel: at(self.kernel, 1),
            stride: at(self.stride, 1),
            pad: at(self.pad, 0),
            dilation: at(self.dilation, 1),
            pad_mode: crate::problem::PaddingMode::Zeros,
        }
    }

    /// Builds module and input for `batch`, deterministically.
    pub fn build(&self, batch: usize) -> Result<BuiltCase> {
        let mut rng = Rng::new(0x5EED ^ self.name.len() as u64);
        match (self.dims, self.transposed) {
            (1, false) => build_d::<1, false>(self, batch, &mut rng),
            (2, false) => build_d::<2, false>(self, batch, &mut rng),
            (3, false) => build_d::<3, false>(self, batch, &mut rng),
            (1, true) => build_d::<1, true>(self, batch, &mut rng),
            (2, true) => build_d::<2, true>(self, batch, &mut rng),
            (3, true) => build_d::<3, true>(self, batch, &mut rng),
            _ => Err(Error::config("dims", self.dims, "must be 1, 2 or 3")),
        }
    }
}

/// The lowered int8 module of case `c` from the data of `b` (same codes, qparams and bias).
fn int8_d<const D: usize, const T: bool>(c: &BenchCase, b: &Int8Bench) -> Result<QuantizedConvModule<D, T>> {
    let mut shape =
        if T { vec![c.in_channels, c.out_channels / c.groups] } else { vec![c.out_channels, c.in_channels / c.groups] };
    shape.extend_from_slice(&b.p.kernel[3 - D..]);
    let qparams = if T {
        WeightQParams::per_tensor(b.weight_scales[0], 0, QuantDType::QInt8)
    } else {
        WeightQParams::per_channel(b.weight_scales.clone(), vec![0; c.out_channels], 0, QuantDType::QInt8)
    };
    let weight = Int8Weight::new(b.weight_codes.clone(), &shape, qparams)?;
    let bias = Tensor::from_slice(&b.bias, &[c.out_channels])?;
    let opts = ConvOptions::<D>::new().stride(c.stride).padding(c.pad).dilation(c.dilation).groups(c.groups);
    let output = ActivationQParams::new(b.output_scale, b.output_zero_point as i64)?;
    QuantizedConvModule::new(weight, Some(bias), output, opts)
}

impl BenchCase {
    /// The case as a lowered int8 module and its quantized input for `batch`, with
    /// `scripts/bench/torch_cpu.py --ops int8`'s settings (see [`Int8Bench`]).
    pub fn build_int8(&self, batch: usize) -> Result<(AnyQuantizedConv, QuantizedTensor)> {
        let b = Int8Bench::new(&self.problem(batch), ActivationLayout::ChannelsFirst, None, 7)?;
        let m = match (self.dims, self.transposed) {
            (1, false) => AnyQuantizedConv::Conv1d(int8_d(self, &b)?),
            (2, false) => AnyQuantizedConv::Conv2d(int8_d(self, &b)?),
            (3, false) => AnyQuantizedConv::Conv3d(int8_d(self, &b)?),
            (1, true) => AnyQuantizedConv::ConvTranspose1d(int8_d(self, &b)?),
            (2, true) => AnyQuantizedConv::ConvTranspose2d(int8_d(self, &b)?),
            (3, true) => AnyQuantizedConv::ConvTranspose3d(int8_d(self, &b)?),
            _ => return Err(Error::config("dims", self.dims, "must be 1, 2 or 3")),
        };
        let mut shape = vec![batch, self.in_channels];
        shape.extend_from_slice(&self.spatial[..self.dims.clamp(1, 3)]);
        let x = QuantizedTensor::from_codes(b.x, &shape, ACT_SCALE, ACT_ZERO_POINT as i64)?;
        Ok((m, x))
    }
}

/// Median wall time of `f` in microseconds, measured like `scripts/bench/torch_cpu.py`: 3 warm-up calls,
/// then at least `min_iters` calls and at least `min_secs` seconds (at most 2000 calls).
pub fn time_median_us(mut f: impl FnMut() -> Result<()>, min_iters: usize, min_secs: f64) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    let mut ts = Vec::new();
    let start = Instant::now();
    while ts.len() < min_iters || start.elapsed().as_secs_f64() < min_secs {
        let t0 = Instant::now();
        f()?;
        ts.push(t0.elapsed().as_secs_f64());
        if ts.len() > 2000 {
            break;
        }
    }
    ts.sort_by(f64::total_cmp);
    Ok(ts[ts.len() / 2] * 1e6)
}

/// Peak resident set size of this process in KiB (Linux `VmHWM`), when available.
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GPU suite's cases as backend problems (the int8 rows): the output sizes of the modules.
    #[test]
    fn gpu_cases_as_problems() {
        let out = |name: &str| {
            let (c, b) = find_gpu_case(name).unwrap();
            let p = c.problem(b);
            assert!(p.output_len() > 0 && p.input_len() > 0 && p.weight_len() > 0, "{name}");
            (p.batch, p.out_size, p.kernel)
        };
        assert_eq!(out("g_3x3_64"), (32, [1, 56, 56], [1, 3, 3]));
        assert_eq!(out("g_stem"), (32, [1, 112, 112], [1, 7, 7]));
        assert_eq!(out("g_c1d"), (16, [1, 1, 4096], [1, 1, 3]));
        assert_eq!(out("g_c3d"), (4, [16, 56, 56], [3, 3, 3]));
        assert_eq!(out("g_ct2d"), (32, [1, 56, 56], [1, 4, 4]));
    }

    /// The int8 rows of `qconv bench` time the module forward: it computes the engine case's codes.
    #[test]
    fn int8_modules_compute_the_engine_cases_codes() {
        for name in ["c2d_dw", "c1d", "ct1d"] {
            let c = find_case(name).unwrap();
            let (m, x) = c.build_int8(1).unwrap();
            let mut b = Int8Bench::new(&c.problem(1), ActivationLayout::ChannelsFirst, None, 7).unwrap();
            b.run().unwrap();
            let y = m.forward(&x).unwrap();
            assert_eq!(y.codes(), b.y.as_slice(), "{name}");
            assert!(y.codes().iter().any(|&q| q != y.codes()[0]), "{name}");
        }
    }

    /// Every GPU case has an int8 kernel (the int8 rows of bench::gpu run them all).
    #[cfg(feature = "cuda")]
    #[test]
    fn gpu_cases_have_int8_kernels() {
        let (dw, b) = find_gpu_case("g_dw").unwrap();
        assert!(crate::cuda::ops::int8_simt::dw_can_run(&dw.problem(b)));
        for (c, b) in GPU_SUITE {
            let p = c.problem(b);
            assert!(crate::cuda::ops::conv_imma::can_run(&p), "{}", c.name);
        }
    }
}
