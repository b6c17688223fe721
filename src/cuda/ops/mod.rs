//! The kernel families, one file each: what a family computes (the `can_run`-style rule that is
//! the only statement of its eligibility), its kernel arguments, its grid, and its launch, as a
//! [`Runtime`] method. The layer above (`cuda/forward.rs`) picks a family per call; the
//! layer below ([`Runtime`]) loads and launches whatever it is given.
//!
//! | file | kernels | rule | launch |
//! |---|---|---|---|
//! | [`params`] | — | the conv-parameter builder shared by the convolution families: [`conv_params`](params::conv_params), its re-check, the buffer binding | — |
//! | [`simt`] | `cuda/conv.cu`, `cuda/conv_transpose.cu` | any problem | [`Runtime::conv_device`] |
//! | [`conv_tc`] | `cuda/conv_tc.cu`, `cuda/splitk.cu` | [`conv_tc::can_run`] | [`Runtime::conv_device_tc`] |
//! | [`conv_wg`] | `cuda/conv_wg.cu` (sm_90a: wgmma + TMA, opt-in) | [`conv_wg::can_run`] | [`Runtime::conv_device_wg`] |
//! | [`depthwise`] | `cuda/depthwise.cu` | [`depthwise::can_run`] | [`Runtime::conv_device_dw_nhwc`] |
//! | [`layout`] | `cuda/layout.cu` | 2- and 4-byte elements | [`Runtime::transpose_device`], [`Runtime::pad_channels_device`] |
//! | [`conv_imma`] | `cuda/conv_imma.cu` (int8 tensor cores) | [`conv_imma::can_run`] | [`Runtime::conv_device_imma`] |
//! | [`int8_simt`] | `cuda/int8_simt.cu` (int8 depthwise, u8 channel copy) | [`int8_simt::dw_can_run`] | [`Runtime::conv_device_dw_int8`], [`Runtime::pad_channels_u8`] |
//! | [`fakequant`] | `cuda/fakequant.cu` | [`fakequant::fakequant_fast_ok`] (the fast entry) | [`Runtime::fake_quantize_device`], [`Runtime::fake_quant_job`], [`Runtime::dequant_codes_device`] |
//!
//! Shared here: [`LaunchDims`], the grid limits, [`conv_launch`] (the grid of a convolution
//! kernel, re-checking its arguments first), and the checks every launch makes on its buffers.

use std::sync::Arc;

use cudarc::driver::CudaContext;

use super::kernels::{conv_variant, ConvAlgo, KernelVariant};
#[cfg(doc)]
use super::runtime::Runtime;
use crate::dtype::DType;
use crate::error::{Error, Result};
use params::{check_conv_params, QcConvParams};

pub mod conv_imma;
pub mod conv_tc;
pub mod conv_wg;
pub mod depthwise;
pub mod fakequant;
pub mod int8_simt;
pub mod layout;
pub mod params;
pub mod simt;

/// Largest `gridDim.x`.
pub const MAX_GRID_X: u64 = (1 << 31) - 1;

/// Largest `gridDim.y` and `gridDim.z`.
pub const MAX_GRID_YZ: u64 = 65_535;

/// Blocks launched at most by the grid-stride kernels (fake-quant, direct convolution); more
/// work is looped over inside the kernel.
pub const MAX_GRID_STRIDE_BLOCKS: u64 = 1 << 18;

/// Grid and block of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchDims {
    /// `gridDim` (x, y, z).
    pub grid: (u32, u32, u32),
    /// `blockDim` (x, y, z).
    pub block: (u32, u32, u32),
    /// Dynamic shared memory in bytes (0 except for the sm_90a kernel's pipeline,
    /// [`conv_wg::wg_smem_bytes`]: every other kernel uses static `__shared__` arrays).
    pub dynamic_shared_bytes: u32,
}

impl LaunchDims {
    /// Total threads launched.
    pub fn threads(&self) -> u64 {
        let (gx, gy, gz) = self.grid;
        let (bx, by, bz) = self.block;
        gx as u64 * gy as u64 * gz as u64 * bx as u64 * by as u64 * bz as u64
    }
}

/// `a / b` rounded up.
pub(crate) fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

pub(crate) fn to_i32(param: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::config(param, v, "must be below 2^31 for the CUDA kernels"))
}

pub(crate) fn mul(what: &str, values: &[u64]) -> Result<i64> {
    values
        .iter()
        .try_fold(1u64, |acc, &v| acc.checked_mul(v))
        .and_then(|v| i64::try_from(v).ok())
        .ok_or_else(|| Error::Overflow(format!("{what} ({values:?}) exceeds 2^63")))
}

/// The grid of the tiled kernels: `gx` along x (named `what_x`), output-channel tiles of
/// `channels_per_tile` along y, groups × splits along z; `threads` per block.
pub(crate) fn tile_grid(
    p: &QcConvParams,
    what_x: &str,
    gx: u64,
    channels_per_tile: u32,
    threads: u32,
) -> Result<Option<LaunchDims>> {
    Ok(Some(LaunchDims {
        grid: (
            grid_dim(what_x, gx, MAX_GRID_X)?,
            grid_dim(
                "gridDim.y (output-channel tiles per group)",
                ceil_div(p.kg as u64, channels_per_tile as u64),
                MAX_GRID_YZ,
            )?,
            grid_dim("gridDim.z (groups x splits)", p.groups as u64 * p.splits as u64, MAX_GRID_YZ)?,
        ),
        block: (threads, 1, 1),
        dynamic_shared_bytes: 0,
    }))
}

pub(crate) fn grid_dim(what: &str, v: u64, max: u64) -> Result<u32> {
    if v > max {
        return Err(Error::Unsupported {
            op: format!("a CUDA launch with {what} = {v}"),
            device: "CUDA".into(),
            reason: format!("the limit is {max}"),
        });
    }
    Ok(v as u32)
}

/// Grid and block for `algo` on `p`, or `None` when the output is empty (nothing to launch).
///
/// Tiled: `grid = (num_phases * ceil(n_cols / BN), ceil(Kg / BM), groups)`, 256 threads — the
/// same decomposition the kernel reads back from `blockIdx`. Direct: a grid-stride loop over
/// `batch * K * out0 * out1 * ceil(out2 / 4)` work items. Errors when `p` is inconsistent
/// ([`check_conv_params`]) or a grid dimension exceeds its hardware limit.
pub fn conv_launch(p: &QcConvParams, algo: ConvAlgo) -> Result<Option<LaunchDims>> {
    check_conv_params(p)?;
    if p.batch == 0 || p.out_channels == 0 || p.out_spatial == 0 {
        return Ok(None);
    }
    if p.splits != 1 && !matches!(algo, ConvAlgo::TensorCore(_)) {
        return Err(Error::config("QcConvParams", "(kernel arguments)", "splits > 1 needs the tensor-core kernel"));
    }
    if p.out_nhwc != 0 && !matches!(algo, ConvAlgo::TensorCore(_) | ConvAlgo::DepthwiseNhwc) {
        return Err(Error::config(
            "QcConvParams",
            "(kernel arguments)",
            "out_nhwc = 1 needs a channels-last kernel (tensor cores or depthwise)",
        ));
    }
    match algo {
        ConvAlgo::DepthwiseNhwc => depthwise::launch_dims(p),
        ConvAlgo::TensorCore(tile) => conv_tc::launch_dims(p, tile),
        ConvAlgo::Tiled(tile) => simt::tiled_launch_dims(p, tile),
        ConvAlgo::Direct => simt::direct_launch_dims(p),
        // Its grid comes from the tensor-map plan, not from the conv params alone.
        ConvAlgo::Wgmma(_) => Err(Error::config(
            "QcConvParams",
            "(kernel arguments)",
            "the sm_90a kernel launches with conv_wg::wg_launch_dims of its plan",
        )),
    }
}

/// Errors unless a device buffer of `have` elements holds the product of `dims`.
pub(crate) fn check_len(what: &'static str, have: usize, dims: &[u64]) -> Result<()> {
    let need = dims
        .iter()
        .try_fold(1u64, |a, &b| a.checked_mul(b))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| Error::Overflow(format!("{what} size {dims:?}")))?;
    if have < need {
        return Err(Error::shape(
            what,
            &[have],
            format!("the device buffer must hold at least {need} (bytes for activations, elements otherwise)"),
        ));
    }
    Ok(())
}

/// The convolution entry point for (direction, dtype, algorithm), or a typed error.
pub(crate) fn conv_variant_or_err(transposed: bool, dtype: DType, algo: ConvAlgo) -> Result<&'static KernelVariant> {
    conv_variant(transposed, dtype, algo).ok_or_else(|| Error::Unsupported {
        op: format!("convolution with {algo:?}"),
        device: "CUDA".into(),
        reason: format!("no kernel for {dtype}"),
    })
}

/// Errors unless a buffer (`what`) belongs to device `ordinal`.
pub(crate) fn same_device(ordinal: usize, what: &str, ctx: &Arc<CudaContext>) -> Result<()> {
    if ctx.ordinal() != ordinal {
        return Err(Error::Unsupported {
            op: format!("a kernel reading the {what}"),
            device: format!("cuda:{ordinal}"),
            reason: format!("the {what} lives on cuda:{}", ctx.ordinal()),
        });
    }
    Ok(())
}
