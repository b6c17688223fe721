//! The channels-last depthwise convolution (`cuda/depthwise.cu`): `groups == C == K`, a multiple
//! of 8, forward, any dtype, exact f32 arithmetic, the weight packed `[taps][C]` in float32.
//! [`can_run`] is the rule (and [`items_fit`] the 32-bit bound on one launch's work),
//! [`Runtime::conv_device_dw_nhwc`] launches.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};

use super::params::{check_conv_params, conv_params, with_conv_ptrs, ConvIo, QcConvParams};
use super::simt::DIRECT_THREADS;
use super::{ceil_div, check_len, conv_launch, conv_variant_or_err, mul, LaunchDims, MAX_GRID_STRIDE_BLOCKS};
use crate::cuda::kernels::ConvAlgo;
use crate::cuda::runtime::Runtime;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::problem::ConvProblem;

/// The rule, its only statement: whether the channels-last depthwise kernel (`qc_dw_nhwc_*`)
/// computes convolutions of this shape — forward, `groups == in_channels == out_channels`, a
/// positive multiple of 8 (any dtype). The forward, the device weights (which upload the
/// `[taps][C]` copy exactly where it holds) and every launch ask it.
pub fn can_run(transposed: bool, in_channels: usize, out_channels: usize, groups: usize) -> bool {
    !transposed
        && groups == in_channels
        && in_channels == out_channels
        && in_channels > 0
        && in_channels.is_multiple_of(8)
}

/// [`can_run`] for a params struct.
pub fn dw_nhwc_supported(p: &QcConvParams) -> bool {
    let n = |v: i32| usize::try_from(v).unwrap_or(0);
    can_run(p.transposed != 0, n(p.in_channels), n(p.out_channels), n(p.groups))
}

/// Whether one launch takes `items` work items (outputs / 8): the kernel decodes them in 32 bits,
/// so at most 2^31 - 1. Beyond, the forward runs the SIMT direct kernel instead.
pub fn items_fit(items: u64) -> bool {
    items <= i32::MAX as u64
}

/// Work items of the channels-last depthwise kernel: `batch * out_spatial * C / 8` (the kernel
/// takes fewer than 2^31).
pub fn dw_nhwc_items(p: &QcConvParams) -> Result<u64> {
    Ok(mul("depthwise work items", &[p.batch as u64, p.out_spatial as u64, (p.in_channels / 8) as u64])? as u64)
}

/// [`conv_params`] for the channels-last depthwise kernel: the weight described as packed
/// `[taps][C]` float32, `out_nhwc = 1`.
pub fn dw_nhwc_params(problem: &ConvProblem, has_bias: bool) -> Result<QcConvParams> {
    let mut p = conv_params(problem, has_bias)?;
    p.w_stride_group = 1;
    p.w_stride_m = 0;
    p.w_stride_c = 0;
    p.w_stride_tap = p.in_channels as i64;
    p.out_nhwc = 1;
    Ok(p)
}

/// Grid of the depthwise kernel: a grid-stride loop over [`dw_nhwc_items`] work items, 256
/// threads. Errors unless [`dw_nhwc_supported`] and `out_nhwc = 1`, or past the 32-bit item bound.
pub(super) fn launch_dims(p: &QcConvParams) -> Result<Option<LaunchDims>> {
    if !dw_nhwc_supported(p) || p.out_nhwc != 1 {
        return Err(Error::config(
            "QcConvParams",
            "(kernel arguments)",
            "the channels-last depthwise kernel needs groups == in_channels == out_channels, a multiple of 8, a forward convolution and out_nhwc = 1",
        ));
    }
    let items = dw_nhwc_items(p)?;
    if !items_fit(items) {
        return Err(Error::Unsupported {
            op: format!("the channels-last depthwise kernel with {items} work items"),
            device: "CUDA".into(),
            reason: "it decodes work items in 32 bits: at most 2^31 - 1 (outputs / 8)".into(),
        });
    }
    let blocks = ceil_div(items, DIRECT_THREADS as u64).clamp(1, MAX_GRID_STRIDE_BLOCKS);
    Ok(Some(LaunchDims { grid: (blocks as u32, 1, 1), block: (DIRECT_THREADS, 1, 1), dynamic_shared_bytes: 0 }))
}

impl Runtime {
    /// Enqueues the channels-last depthwise convolution (`qc_dw_nhwc_*`, any dtype): `io.x`
    /// `[N, *in_size, C]` (bytes of `dtype`), `weight` the fake-quantized float32 weight packed
    /// `[taps][C]`, optional float32 `io.bias`, into `io.y` `[N, *out_size, C]`. Errors (before
    /// any launch) unless [`can_run`], or when a buffer is too short or misaligned. Returns
    /// without waiting.
    pub fn conv_device_dw_nhwc(
        &self,
        problem: &ConvProblem,
        dtype: DType,
        weight: &CudaSlice<f32>,
        mut io: ConvIo<'_>,
        stream: Option<&Arc<CudaStream>>,
    ) -> Result<()> {
        let s = self.pick(stream)?;
        let mut p = dw_nhwc_params(problem, io.bias.is_some())?;
        check_conv_params(&p)?;
        if !dw_nhwc_supported(&p) {
            return Err(Error::Unsupported {
                op: format!("the channels-last depthwise convolution of {problem:?}"),
                device: "CUDA".into(),
                reason: "it needs groups == in_channels == out_channels, a multiple of 8".into(),
            });
        }
        let es = dtype.size_in_bytes() as u64;
        check_len("input", io.x.len(), &[p.batch as u64, p.in_channels as u64, p.in_spatial as u64, es])?;
        check_len("output", io.y.len(), &[p.batch as u64, p.out_channels as u64, p.out_spatial as u64, es])?;
        check_len("packed weight", weight.len(), &[p.in_channels as u64, p.taps as u64])?;
        if let Some(b) = io.bias {
            check_len("bias", b.len(), &[p.out_channels as u64])?;
        }
        let algo = ConvAlgo::DepthwiseNhwc;
        let Some(dims) = conv_launch(&p, algo)? else { return Ok(()) };
        let f = self.function(conv_variant_or_err(false, dtype, algo)?)?;
        with_conv_ptrs(self.ordinal(), s, weight, &mut io, &mut p, true, |p| self.launch(&f, dims, p, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::ops::params::problem_2d;

    /// (Formerly part of `tensor_core_tiles_and_geometry`.)
    #[test]
    fn depthwise_geometry_and_its_32_bit_item_bound() {
        // Depthwise channels-last geometry and its 32-bit item bound.
        let dw = dw_nhwc_params(&problem_2d(false, 64, 64, 64, 56, 3, 1), true).unwrap();
        assert!(dw_nhwc_supported(&dw));
        let l = conv_launch(&dw, ConvAlgo::DepthwiseNhwc).unwrap().unwrap();
        assert_eq!(l.grid.0 as u64, dw_nhwc_items(&dw).unwrap().div_ceil(256));
        let mut huge = dw;
        huge.batch = 1 << 20;
        huge.n_cols = huge.batch as i64 * huge.sub_spatial;
        assert!(matches!(conv_launch(&huge, ConvAlgo::DepthwiseNhwc), Err(Error::Unsupported { .. })));
    }
}
