//! The layout kernels (`cuda/layout.cu`): the batched 2-d transposes that move activations
//! between NCHW and channels-last around the channels-last kernels, and the channel padding that
//! lets the tensor-core tiles use 16-byte loads when `C/groups` is not a multiple of 8. Both move
//! raw 2- or 4-byte elements. CPU transcription: `src/cuda/emulate/layout.rs`.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr};

use super::params::{QcPadChannelsParams, QcTransposeParams};
use super::{ceil_div, check_len, mul, same_device, to_i32, LaunchDims, MAX_GRID_STRIDE_BLOCKS, MAX_GRID_YZ};
use crate::cuda::kernels::{pad_channels_variant, transpose_variant, KernelVariant};
use crate::cuda::runtime::Runtime;
use crate::error::{Error, Result};

/// Threads per block of the layout kernels (32 × 8).
pub const TRANSPOSE_BLOCK: (u32, u32, u32) = (32, 8, 1);

/// Geometry of a batched transpose of `rows × cols` matrices (`None` when empty): one 32×32 tile
/// per block along x (grid-stride beyond the limit), matrices along z (grid-stride beyond 65535).
pub fn transpose_launch(p: &QcTransposeParams) -> Result<Option<LaunchDims>> {
    if p.batch < 0 || p.rows < 0 || p.cols < 0 {
        return Err(Error::config("QcTransposeParams", "(kernel arguments)", "sizes must be non-negative"));
    }
    mul("transposed elements", &[p.batch as u64, p.rows as u64, p.cols as u64])?;
    if p.batch == 0 || p.rows == 0 || p.cols == 0 {
        return Ok(None);
    }
    let tiles = ceil_div(p.rows as u64, 32) * ceil_div(p.cols as u64, 32);
    Ok(Some(LaunchDims {
        grid: (tiles.min(MAX_GRID_STRIDE_BLOCKS) as u32, 1, (p.batch as u64).min(MAX_GRID_YZ) as u32),
        block: TRANSPOSE_BLOCK,
        dynamic_shared_bytes: 0,
    }))
}

/// Arguments of `qc_pad_channels_*` (the runtime sets the pointers).
pub fn pad_channels_params(
    batch: usize,
    pixels: usize,
    groups: usize,
    cg: usize,
    cg_pad: usize,
    src_nhwc: bool,
) -> Result<QcPadChannelsParams> {
    if cg_pad < cg || groups == 0 {
        return Err(Error::config(
            "QcPadChannelsParams",
            "(kernel arguments)",
            format!("groups ({groups}) must be positive and cg_pad ({cg_pad}) at least cg ({cg})"),
        ));
    }
    mul("padded input elements", &[batch as u64, pixels as u64, groups as u64, cg_pad as u64])?;
    let as_i64 = |what: &'static str, v: usize| i64::try_from(v).map_err(|_| Error::Overflow(what.into()));
    Ok(QcPadChannelsParams {
        src: 0,
        dst: 0,
        batch: as_i64("batch", batch)?,
        pixels: as_i64("pixels", pixels)?,
        groups: to_i32("groups", groups)?,
        cg: to_i32("in_channels / groups", cg)?,
        cg_pad: to_i32("padded C/groups", cg_pad)?,
        src_nhwc: src_nhwc as i32,
    })
}

/// Grid and block of `qc_pad_channels_*` (one thread per pixel, grid-stride), or `None` when
/// there is nothing to copy.
pub fn pad_channels_launch(p: &QcPadChannelsParams) -> Result<Option<LaunchDims>> {
    if p.batch < 0 || p.pixels < 0 {
        return Err(Error::config("QcPadChannelsParams", "(kernel arguments)", "negative size"));
    }
    let total = (p.batch as u64).saturating_mul(p.pixels as u64);
    if total == 0 {
        return Ok(None);
    }
    let blocks = ceil_div(total, 256).min(MAX_GRID_STRIDE_BLOCKS);
    Ok(Some(LaunchDims { grid: (blocks as u32, 1, 1), block: (256, 1, 1), dynamic_shared_bytes: 0 }))
}

/// The shape of a batched transpose: `batch` row-major `rows × cols` matrices of `elem_bytes`-byte
/// elements (2 or 4). NCHW → channels-last is `(batch, C, spatial)`, channels-last → NCHW
/// `(batch, spatial, C)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransposeShape {
    /// Bytes per element (2 or 4).
    pub elem_bytes: usize,
    /// Matrices.
    pub batch: usize,
    /// Rows of each source matrix.
    pub rows: usize,
    /// Columns of each source matrix.
    pub cols: usize,
}

/// What `qc_pad_channels_*` copies: `batch` images of `pixels` positions and `groups` groups of
/// `cg` channels (NCHW, or channels-last when `src_nhwc`), elements of `elem_bytes` bytes, into a
/// channels-last buffer with `cg_pad` channel slots per group, the extra ones zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PadChannelsShape {
    /// Bytes per element (2 or 4).
    pub elem_bytes: usize,
    /// Images.
    pub batch: usize,
    /// Spatial positions per image.
    pub pixels: usize,
    /// Channel groups.
    pub groups: usize,
    /// Channels per group in the source.
    pub cg: usize,
    /// Channel slots per group in the destination (at least `cg`).
    pub cg_pad: usize,
    /// The source is channels-last (else NCHW).
    pub src_nhwc: bool,
}

/// The kernel arguments of a layout kernel: one source, one destination.
trait CopyParams: DeviceRepr {
    /// Stores the buffers' device addresses.
    fn set_buffers(&mut self, src: u64, dst: u64);
}

impl CopyParams for QcTransposeParams {
    fn set_buffers(&mut self, src: u64, dst: u64) {
        (self.src, self.dst) = (src, dst);
    }
}

impl CopyParams for QcPadChannelsParams {
    fn set_buffers(&mut self, src: u64, dst: u64) {
        (self.src, self.dst) = (src, dst);
    }
}

impl Runtime {
    /// Enqueues a batched transpose ([`TransposeShape`]): `dst[b][j][i] = src[b][i][j]`. Returns
    /// without waiting.
    pub fn transpose_device(
        &self,
        src: &CudaSlice<u8>,
        dst: &mut CudaSlice<u8>,
        shape: TransposeShape,
        stream: Option<&Arc<CudaStream>>,
    ) -> Result<()> {
        let TransposeShape { elem_bytes, batch, rows, cols } = shape;
        let s = self.pick(stream)?;
        let variant = transpose_variant(elem_bytes as u32).ok_or_else(|| {
            Error::config("element size", elem_bytes, "the layout kernels move 2- or 4-byte elements")
        })?;
        let as_i64 = |what: &'static str, v: usize| i64::try_from(v).map_err(|_| Error::Overflow(what.into()));
        let mut p = QcTransposeParams {
            src: 0,
            dst: 0,
            batch: as_i64("transpose batch", batch)?,
            rows: as_i64("transpose rows", rows)?,
            cols: as_i64("transpose cols", cols)?,
        };
        let Some(dims) = transpose_launch(&p)? else { return Ok(()) };
        let bytes = batch
            .checked_mul(rows)
            .and_then(|n| n.checked_mul(cols))
            .and_then(|n| n.checked_mul(elem_bytes))
            .ok_or_else(|| Error::Overflow("transpose size".into()))?;
        if src.len() < bytes || dst.len() < bytes {
            return Err(Error::shape(
                "transpose buffers",
                &[src.len(), dst.len()],
                format!("both must hold {bytes} bytes"),
            ));
        }
        launch_copy(self, variant, dims, s, (src, "transpose source"), (dst, "transpose destination"), &mut p)
    }

    /// Enqueues `qc_pad_channels_*` ([`PadChannelsShape`]): `src` into the channels-last `dst`
    /// with `cg_pad` channel slots per group, the extra ones zero. Returns without waiting.
    pub fn pad_channels_device(
        &self,
        src: &CudaSlice<u8>,
        dst: &mut CudaSlice<u8>,
        shape: PadChannelsShape,
        stream: Option<&Arc<CudaStream>>,
    ) -> Result<()> {
        let PadChannelsShape { elem_bytes, batch, pixels, groups, cg, cg_pad, src_nhwc } = shape;
        let s = self.pick(stream)?;
        let variant = pad_channels_variant(elem_bytes as u32).ok_or_else(|| {
            Error::config("element size", elem_bytes, "the channel-padding kernels move 2- or 4-byte elements")
        })?;
        let mut p = pad_channels_params(batch, pixels, groups, cg, cg_pad, src_nhwc)?;
        let e = elem_bytes as u64;
        check_len("input", src.len(), &[batch as u64, pixels as u64, groups as u64, cg as u64, e])?;
        check_len("padded input", dst.len(), &[batch as u64, pixels as u64, groups as u64, cg_pad as u64, e])?;
        let Some(dims) = pad_channels_launch(&p)? else { return Ok(()) };
        launch_copy(self, variant, dims, s, (src, "input"), (dst, "padded input"), &mut p)
    }
}

/// Launches a layout kernel that reads `src` and writes `dst` (each with its name for errors):
/// checks that both are on this device, stores their addresses into the kernel argument, launches
/// while cudarc's guards of both buffers are held.
fn launch_copy<P: CopyParams>(
    rt: &Runtime,
    variant: &'static KernelVariant,
    dims: LaunchDims,
    s: &Arc<CudaStream>,
    src: (&CudaSlice<u8>, &str),
    dst: (&mut CudaSlice<u8>, &str),
    params: &mut P,
) -> Result<()> {
    same_device(rt.ordinal(), src.1, src.0.context())?;
    same_device(rt.ordinal(), dst.1, dst.0.context())?;
    let f = rt.function(variant)?;
    let (src_ptr, _gs) = src.0.device_ptr(s);
    let (dst_ptr, _gd) = dst.0.device_ptr_mut(s);
    params.set_buffers(src_ptr, dst_ptr);
    rt.launch(&f, dims, params, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (Formerly part of `tensor_core_tiles_and_geometry`.)
    #[test]
    fn transpose_geometry() {
        // Transposes: one 32x32 tile per block, batch along z (capped, grid-stride).
        let t = QcTransposeParams { src: 0, dst: 0, batch: 70_000, rows: 33, cols: 64 };
        let l = transpose_launch(&t).unwrap().unwrap();
        assert_eq!(l.grid, (4, 1, 65_535));
        assert_eq!(transpose_launch(&QcTransposeParams { rows: 0, ..t }).unwrap(), None);
        assert!(transpose_launch(&QcTransposeParams { rows: -1, ..t }).is_err());
    }
}
