//! CPU fallback kernels.
//!
//! Every convolution is normalised to three spatial dimensions (1-d and 2-d problems add unit
//! dimensions in front) and described by a [`ConvProblem`]. The fast path ([`conv`]) runs a
//! tiled implicit GEMM over a weight packed once per module ([`PackedWeight`]); the naive direct
//! convolution ([`conv_naive`], f64 accumulation) is the test oracle.

mod engine;
mod naive;

pub use engine::{conv, PackedWeight};
pub use naive::conv_naive;

use crate::conv::PaddingMode;

/// A convolution normalised to 3 spatial dimensions `[D, H, W]`.
///
/// Layouts (row-major, contiguous):
/// * input  `[batch, in_channels, in_size[0], in_size[1], in_size[2]]`
/// * output `[batch, out_channels, out_size[0], out_size[1], out_size[2]]`
/// * weight, forward:    `[out_channels, in_channels / groups, k0, k1, k2]`
/// * weight, transposed: `[in_channels, out_channels / groups, k0, k1, k2]`
///
/// Forward: `y[n,k,o] = bias[k] + Σ_{c in group(k), j} w[k, c', j] · x̃[n, c, o·stride + j·dilation − pad]`
/// where `x̃` reads outside `[0, in_size)` according to `pad_mode` (zeros, reflect, replicate,
/// circular). Transposed (gather form): `y[n,k,o] = bias[k] + Σ_{c in group(k), j, i : i·stride =
/// o + pad − j·dilation, 0 <= i < in_size} w[c, k', j] · x[n, c, i]`; `pad_mode` is always zeros.
/// `out_size` is computed by the caller (it already includes 'same' padding's extra element at the
/// end and the transposed output padding), and every index stays inside the tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvProblem {
    /// Transposed convolution (gather form) instead of forward convolution.
    pub transposed: bool,
    /// Batch size N.
    pub batch: usize,
    /// Input channels C.
    pub in_channels: usize,
    /// Output channels K.
    pub out_channels: usize,
    /// Groups (divides C and K).
    pub groups: usize,
    /// Input spatial size.
    pub in_size: [usize; 3],
    /// Output spatial size.
    pub out_size: [usize; 3],
    /// Kernel size.
    pub kernel: [usize; 3],
    /// Stride.
    pub stride: [usize; 3],
    /// Leading padding per dimension (forward: before the input; transposed: the `padding` argument).
    pub pad: [usize; 3],
    /// Dilation.
    pub dilation: [usize; 3],
    /// How the forward convolution reads outside the input (transposed: always `Zeros`).
    pub pad_mode: PaddingMode,
}

impl ConvProblem {
    /// Elements of the input tensor (saturating at `usize::MAX`; the batch is multiplied first,
    /// so an empty batch gives 0 whatever the extent).
    pub fn input_len(&self) -> usize {
        sat_product(&[self.batch, self.in_channels], &self.in_size)
    }

    /// Elements of the output tensor (saturating, like [`ConvProblem::input_len`]).
    pub fn output_len(&self) -> usize {
        sat_product(&[self.batch, self.out_channels], &self.out_size)
    }

    /// Elements of the weight tensor (saturating).
    pub fn weight_len(&self) -> usize {
        let g = self.groups.max(1);
        let lead = if self.transposed {
            [self.in_channels, self.out_channels / g]
        } else {
            [self.out_channels, self.in_channels / g]
        };
        sat_product(&lead, &self.kernel)
    }

    /// Multiply-adds × 2 (BENCH.md's FLOP count).
    pub fn flops(&self) -> f64 {
        let k: f64 = self.kernel.iter().map(|&v| v as f64).product();
        if self.transposed {
            let sp: f64 = self.in_size.iter().map(|&v| v as f64).product();
            2.0 * (self.batch * self.in_channels * (self.out_channels / self.groups)) as f64 * k * sp
        } else {
            let sp: f64 = self.out_size.iter().map(|&v| v as f64).product();
            2.0 * (self.batch * self.out_channels * (self.in_channels / self.groups)) as f64 * k * sp
        }
    }
}

fn sat_product(lead: &[usize], rest: &[usize; 3]) -> usize {
    lead.iter().chain(rest).fold(1usize, |a, &b| a.saturating_mul(b))
}

/// The instruction set the CPU kernels use on this machine, chosen at run time: `"avx512f"` (the
/// CPU has AVX-512F, AVX2 and FMA), `"avx2+fma"` (AVX2 and FMA) or `"portable"` (auto-vectorised
/// code for any CPU).
pub fn simd_level() -> &'static str {
    engine::best_level_name()
}
