//! The problem floor under both backends: [`ConvProblem`] (every convolution normalised to three
//! spatial dimensions), [`PaddingMode`] and its one index rule ([`PaddingMode::source_index`]).
//!
//! `cpu/` and `cuda/` receive a `ConvProblem`, a [`crate::dtype::DType`], qparams and buffers —
//! never a module type — and [`crate::oracle`] evaluates the same problem literally. This file
//! imports nothing from the crate but the error type.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// How a forward convolution reads outside its input (PyTorch's `padding_mode`).
///
/// PyTorch's *reference* quantized convolutions ignore this setting and always pad with zeros
/// (docs/numerics.md §7); qconv honours it the way `torch.nn.ConvNd` does. Transposed convolutions
/// accept only [`PaddingMode::Zeros`], like PyTorch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PaddingMode {
    /// Read zeros (the default).
    #[default]
    Zeros,
    /// Mirror without repeating the edge (`x[-1] = x[1]`); padding must be smaller than the input.
    Reflect,
    /// Repeat the edge element.
    Replicate,
    /// Wrap around (`x[-1] = x[L-1]`); padding must not exceed the input.
    Circular,
}

impl PaddingMode {
    /// PyTorch's spelling: `zeros`, `reflect`, `replicate`, `circular`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PaddingMode::Zeros => "zeros",
            PaddingMode::Reflect => "reflect",
            PaddingMode::Replicate => "replicate",
            PaddingMode::Circular => "circular",
        }
    }
}

impl fmt::Display for PaddingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PaddingMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "zeros" => Ok(PaddingMode::Zeros),
            "reflect" => Ok(PaddingMode::Reflect),
            "replicate" => Ok(PaddingMode::Replicate),
            "circular" => Ok(PaddingMode::Circular),
            _ => Err(Error::Parse {
                what: "padding_mode",
                value: s.to_string(),
                expected: "zeros, reflect, replicate or circular".into(),
            }),
        }
    }
}

impl PaddingMode {
    /// The one padding index rule: which input index a forward convolution reads when it asks
    /// for index `i` of a dimension of length `len`, or `None` when it reads a zero.
    ///
    /// Inside `[0, len)` every mode reads `i` itself. Outside, zeros reads a zero; reflect mirrors
    /// without repeating the edge (`-i` before the start, `2(len-1) - i` after the end); replicate
    /// clamps to `[0, len-1]`; circular wraps by one period (`i + len` before, `i - len` after).
    /// An index that is still outside after the remap (only possible when the padding exceeds
    /// what the mode allows, which validation rejects) reads a zero. Every consumer — the CPU
    /// engine, the f64 oracle, and the CPU transcriptions of the CUDA kernels — calls this
    /// function; the CUDA kernels implement the same rule in `cuda/common.cuh`
    /// (`qc_source_index`).
    #[inline]
    pub fn source_index(self, i: isize, len: usize) -> Option<usize> {
        let l = len as isize;
        if (0..l).contains(&i) {
            return Some(i as usize);
        }
        let j = match self {
            PaddingMode::Zeros => return None,
            PaddingMode::Reflect => {
                if i < 0 {
                    -i
                } else {
                    2 * (l - 1) - i
                }
            }
            PaddingMode::Replicate => {
                if i < 0 {
                    0
                } else {
                    l - 1
                }
            }
            PaddingMode::Circular => {
                if i < 0 {
                    i + l
                } else {
                    i - l
                }
            }
        };
        if (0..l).contains(&j) {
            Some(j as usize)
        } else {
            None
        }
    }
}

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

    /// Multiply-adds × 2 (docs/benchmarks.md's FLOP count).
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
