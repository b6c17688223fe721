//! The tensor-core convolution (`cuda/conv_tc.cu`, primitives in `cuda/tensor_core.cuh`) and its
//! split-K reduction (`cuda/splitk.cu`): f16/bf16 activations (and f32 on the TF32 tiles),
//! channels-last input, the weight packed `[K][row]` in the activation dtype, as TF32 values, or
//! as 8-bit codes ([`TcWeight`]). [`can_run`] is the rule, [`padded_cg`] when the input's channels
//! are padded first; [`choose_tc_tile`] and [`choose_tc_splits`] pick the tile and the split-K
//! factor; [`Runtime::conv_device_tc`] launches (and reduces). CPU transcription:
//! `src/cuda/emulate/conv_tc.rs` (and `emulate/splitk.rs`).

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use super::params::{check_conv_params, conv_params, with_conv_ptrs, ConvIo, QcConvParams};
use super::{
    ceil_div, check_len, conv_launch, conv_variant_or_err, mul, same_device, tile_grid, LaunchDims,
    MAX_GRID_STRIDE_BLOCKS,
};
use crate::cuda::kernels::{conv_variant_codes, splitk_reduce_variant, ConvAlgo, TcTile};
use crate::cuda::pack::tc_weight_row;
use crate::cuda::runtime::Runtime;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::problem::ConvProblem;

/// A convolution weight held on the device as 8-bit codes (`WeightStorage::Int8Codes`): the codes
/// packed `[K][row]` like the tensor-core weight (`row` = `tc_weight_row(C/groups, taps)`), and a
/// float32 scale and zero point per output channel. Dequantizing gives
/// `f32((f32(code) − zero[k]) · scale[k])`, the fake-quantized weight.
pub struct DeviceCodes {
    /// `K * row` codes (int8 bit patterns when `signed`).
    pub codes: CudaSlice<u8>,
    /// `K` scales.
    pub scale: CudaSlice<f32>,
    /// `K` zero points.
    pub zero: CudaSlice<f32>,
    /// int8 codes (else uint8).
    pub signed: bool,
    /// Input channels per group that hold codes; the packed rows may have more channel slots
    /// per tap (padding for the 16-byte loader, see [`padded_cg`]), which load as zeros.
    pub cg_valid: usize,
}

/// The weight operand of [`Runtime::conv_device_tc`].
#[derive(Clone, Copy)]
pub enum TcWeight<'a> {
    /// Packed `[K][row]` in the activation dtype (binary16 / bfloat16 bit patterns).
    Half(&'a CudaSlice<u16>),
    /// Packed `[K][row]` float32 values already rounded to TF32
    /// ([`tf32_round`](crate::cuda::pack::tf32_round)), for f32 activations on the TF32 tiles.
    Tf32(&'a CudaSlice<f32>),
    /// 8-bit codes packed the same way, dequantized by the `*_q8` entries while they load.
    Codes(&'a DeviceCodes),
}

/// The rule, its only statement: whether the tensor-core tiles compute a convolution in `dtype`
/// with `cg` input channels per group as they see them (after any padding, [`padded_cg`]) and
/// `kg` output channels per group. f16 or bf16 activations: `cg` a multiple of 8 (16-byte channel
/// vectors; forward or transposed) or, forward only, at least 16 output channels per group (the
/// element-wise loader, e.g. one channel per group); f32 activations on the TF32 tiles, which
/// have only the vector loader: `cg` a multiple of 8. The forward, the device weights (which
/// upload the tensor-core copies exactly where it holds) and every launch ask it.
pub fn can_run(transposed: bool, cg: usize, kg: usize, dtype: DType) -> bool {
    let shape_ok = cg > 0 && kg > 0;
    match dtype {
        DType::F16 | DType::BF16 => shape_ok && (cg.is_multiple_of(8) || (!transposed && kg >= 16)),
        DType::F32 => shape_ok && cg.is_multiple_of(8),
    }
}

/// [`can_run`] for a params struct (its `cg` is the one the tiles see).
pub fn tc_supported(p: &QcConvParams, dtype: DType) -> bool {
    let n = |v: i32| usize::try_from(v).unwrap_or(0);
    can_run(p.transposed != 0, n(p.cg), n(p.kg), dtype)
}

pub use crate::cuda::pack::padded_cg;

/// [`conv_params`] for the tensor-core kernel: the same problem with the weight described as
/// packed `[K][row]` in the activation dtype (`row` = [`tc_weight_row`], tap-major then channel,
/// zero-padded), and the output layout.
pub fn tc_conv_params(problem: &ConvProblem, has_bias: bool, out_nhwc: bool) -> Result<QcConvParams> {
    let mut p = conv_params(problem, has_bias)?;
    let (cg, kg) = (p.cg as i64, p.kg as i64);
    let row = tc_weight_row(p.cg.max(0) as usize, p.taps.max(0) as usize) as i64;
    p.w_stride_group = kg * row;
    p.w_stride_m = row;
    p.w_stride_c = 1;
    p.w_stride_tap = cg;
    p.out_nhwc = out_nhwc as i32;
    Ok(p)
}

/// Blocks of `tile` that fit on one multiprocessor at once (from the register caps of
/// `cuda/conv_tc.cu` and 228 KiB of shared memory): 2 for 128×128 (1 for the transposed one,
/// which is not capped), 3 for 128×64, 4 for 64×64.
pub fn tc_resident_blocks(tile: TcTile, transposed: bool) -> u64 {
    match tile {
        TcTile::T128x128 if transposed => 1,
        TcTile::T128x128 => 2,
        TcTile::T128x64 | TcTile::Gather128x64 => 3,
        TcTile::T64x64 => 4,
    }
}

/// The tensor-core tile for `p`: the element-wise loader when `C/groups` is not a multiple of 8;
/// otherwise the first tile whose blocks fill (at least 90% of) one wave of resident blocks on
/// `sm_count` multiprocessors — 128×128 (only with more than 64 output channels per group),
/// 128×64 (forward only), 64×64 — and, when none does, the tile that fills the largest fraction
/// of a wave.
pub fn choose_tc_tile(p: &QcConvParams, sm_count: u32) -> TcTile {
    if p.cg % 8 != 0 {
        return TcTile::Gather128x64;
    }
    let transposed = p.transposed != 0;
    // Transposed: per phase, the sub-grid positions; all phases together cover the output.
    let m = (p.batch.max(0) as u64).saturating_mul(p.sub_spatial.max(0) as u64);
    let blocks = |t: TcTile| {
        ceil_div(m, t.bm() as u64)
            .saturating_mul(p.num_phases.max(1) as u64)
            .saturating_mul(ceil_div(p.kg.max(0) as u64, t.bn() as u64))
            .saturating_mul(p.groups.max(1) as u64)
    };
    let wave = |t: TcTile| sm_count.max(1) as u64 * tc_resident_blocks(t, transposed);
    // Measured on an H200 (g_ct2d, f16, channels-last): the transposed 128x128 tile (8 warps per
    // multiprocessor, not register-capped: it would spill) took 278-292 us, the 64x64 tile (16
    // warps) 324 us; so the larger tile comes first for both directions.
    let mut tiles = Vec::with_capacity(3);
    if p.kg > 64 {
        tiles.push(TcTile::T128x128);
    }
    if !transposed {
        tiles.push(TcTile::T128x64);
    }
    tiles.push(TcTile::T64x64);
    if let Some(&t) = tiles.iter().find(|&&t| blocks(t) * 10 >= wave(t) * 9) {
        return t;
    }
    // Fill fraction blocks / wave, compared without division.
    *tiles
        .iter()
        .max_by(|&&a, &&b| (blocks(a) as u128 * wave(b) as u128).cmp(&(blocks(b) as u128 * wave(a) as u128)))
        .unwrap_or(&TcTile::T64x64)
}

/// Split-K factor for the tensor-core `tile` on `p`: 1 unless the tile's blocks fill less than
/// half a wave of resident blocks; then enough reduction ranges to fill about one wave, each at
/// least 8 steps of 32 deep, at most 16. Forward convolutions only (transposed: 1).
pub fn choose_tc_splits(p: &QcConvParams, tile: TcTile, sm_count: u32) -> i32 {
    if p.transposed != 0 {
        return 1;
    }
    let m = (p.batch.max(0) as u64).saturating_mul(p.out_spatial.max(0) as u64);
    let blocks = ceil_div(m, tile.bm() as u64)
        .saturating_mul(ceil_div(p.kg.max(0) as u64, tile.bn() as u64))
        .saturating_mul(p.groups.max(1) as u64)
        .max(1);
    let wave = sm_count.max(1) as u64 * tc_resident_blocks(tile, false);
    if blocks * 2 > wave {
        return 1;
    }
    let steps = (p.taps.max(0) as u64 * p.cg.max(0) as u64).div_ceil(32);
    ceil_div(wave, blocks).min(steps / 8).clamp(1, 16) as i32
}

/// Grid of the tensor-core tiles: `(num_phases * ceil(batch * sub_spatial / BM), ceil(Kg / BN),
/// groups * splits)`, with the tile's threads. Errors unless `C/groups` is a multiple of 8 for the
/// vector loader (always for transposed problems) and the weight rows are the packed ones.
pub(super) fn launch_dims(p: &QcConvParams, tile: TcTile) -> Result<Option<LaunchDims>> {
    if p.cg % 8 != 0 && (tile.vector_loads() || p.transposed != 0) {
        return Err(Error::config(
            "QcConvParams",
            "(kernel arguments)",
            format!(
                "the tensor-core {tile:?} tile needs in_channels/groups a multiple of 8 (got {}){}",
                p.cg,
                if p.transposed != 0 { " (transposed)" } else { "" }
            ),
        ));
    }
    if p.w_stride_m != tc_weight_row(p.cg as usize, p.taps as usize) as i64 {
        return Err(Error::config(
            "QcConvParams",
            "(kernel arguments)",
            "w_stride_m must be the packed tensor-core weight row (tc_weight_row)",
        ));
    }
    // Rows per phase (forward: one phase, sub_spatial = out_spatial); phases along x.
    let m = mul("GEMM rows (batch x output positions)", &[p.batch as u64, p.sub_spatial as u64])? as u64;
    let gx = ceil_div(m, tile.bm() as u64)
        .checked_mul(p.num_phases as u64)
        .ok_or_else(|| Error::Overflow("grid size".into()))?;
    tile_grid(p, "gridDim.x (output-position tiles x phases)", gx, tile.bn(), tile.threads())
}

/// Grid of the split-K reduction: one thread per output element, grid-stride, 256 threads.
pub fn splitk_reduce_dims(p: &QcConvParams) -> LaunchDims {
    let total = (p.batch as u64) * (p.out_spatial as u64) * (p.out_channels as u64);
    let blocks = total.div_ceil(256).clamp(1, MAX_GRID_STRIDE_BLOCKS);
    LaunchDims { grid: (blocks as u32, 1, 1), block: (256, 1, 1), dynamic_shared_bytes: 0 }
}

impl Runtime {
    /// Enqueues the tensor-core convolution (`cuda/conv_tc.cu`): `io.x` channels-last
    /// (`[N, *in_size, C]`, f16/bf16 bytes, or f32 for the TF32 tiles), `weight` packed `[K][row]`
    /// (tap-major, then channel, rows of [`tc_weight_row`] elements, zero-padded) as binary16 /
    /// bfloat16 bit patterns, TF32 values or 8-bit codes ([`TcWeight`]), optional float32
    /// `io.bias`, into `io.y` (channels-last when `out_nhwc`, else `[N, K, *out_size]`); under
    /// split-K, the partial sums and their ordered reduction (`cuda/splitk.cu`). Errors (before any
    /// launch) when the problem is not one the tiles compute ([`can_run`]), a buffer is too short
    /// or misaligned, or the grid exceeds its limits. Returns without waiting.
    pub fn conv_device_tc(
        &self,
        problem: &ConvProblem,
        dtype: DType,
        weight: TcWeight<'_>,
        mut io: ConvIo<'_>,
        out_nhwc: bool,
        stream: Option<&Arc<CudaStream>>,
    ) -> Result<()> {
        let s = self.pick(stream)?;
        let mut p = tc_conv_params(problem, io.bias.is_some(), out_nhwc)?;
        check_conv_params(&p)?;
        if !tc_supported(&p, dtype) {
            return Err(Error::Unsupported {
                op: format!("the tensor-core convolution of {problem:?}"),
                device: "CUDA".into(),
                reason: format!(
                    "it needs f16/bf16 activations with in_channels/groups a multiple of 8 or, forward only, at least 16 output channels per group, or f32 activations (TF32) with in_channels/groups a multiple of 8 (got {dtype}, in_channels/groups {}, output channels per group {})",
                    p.cg, p.kg
                ),
            });
        }
        let es = dtype.size_in_bytes() as u64;
        check_len("input", io.x.len(), &[p.batch as u64, p.in_channels as u64, p.in_spatial as u64, es])?;
        check_len("output", io.y.len(), &[p.batch as u64, p.out_channels as u64, p.out_spatial as u64, es])?;
        let operand_ok = match weight {
            TcWeight::Half(_) | TcWeight::Codes(_) => dtype != DType::F32,
            TcWeight::Tf32(_) => dtype == DType::F32,
        };
        if !operand_ok {
            return Err(Error::Unsupported {
                op: "the tensor-core convolution".into(),
                device: "CUDA".into(),
                reason: format!("{dtype} activations need a TF32 weight, f16/bf16 a 16-bit or code weight"),
            });
        }
        let w_len = match weight {
            TcWeight::Half(w) => w.len(),
            TcWeight::Tf32(w) => w.len(),
            TcWeight::Codes(c) => {
                check_len("weight scales", c.scale.len(), &[p.out_channels as u64])?;
                check_len("weight zero points", c.zero.len(), &[p.out_channels as u64])?;
                same_device(self.ordinal(), "weight scales", c.scale.context())?;
                same_device(self.ordinal(), "weight zero points", c.zero.context())?;
                c.codes.len()
            }
        };
        check_len("packed weight", w_len, &[p.out_channels as u64, p.w_stride_m as u64])?;
        if let Some(b) = io.bias {
            check_len("bias", b.len(), &[p.out_channels as u64])?;
        }
        let tile = choose_tc_tile(&p, self.sm_count());
        let algo = ConvAlgo::TensorCore(tile);
        p.splits = choose_tc_splits(&p, tile, self.sm_count());
        let Some(dims) = conv_launch(&p, algo)? else { return Ok(()) };
        let variant = match weight {
            TcWeight::Half(_) | TcWeight::Tf32(_) => conv_variant_or_err(problem.transposed, dtype, algo)?,
            TcWeight::Codes(_) => {
                conv_variant_codes(problem.transposed, dtype, tile).ok_or_else(|| Error::Unsupported {
                    op: format!("convolution with {algo:?} on 8-bit weight codes"),
                    device: "CUDA".into(),
                    reason: format!("no kernel for {dtype}"),
                })?
            }
        };
        let f = self.function(variant)?;
        // The codes' scale and zero-point pointers (their guards live until the launches return).
        let _code_guards = match weight {
            TcWeight::Half(_) | TcWeight::Tf32(_) => None,
            TcWeight::Codes(c) => {
                let (sp, gs) = c.scale.device_ptr(s);
                let (zp, gz) = c.zero.device_ptr(s);
                p.w_scale = sp;
                p.w_zero = zp;
                p.w_codes_signed = c.signed as i32;
                p.w_cg_valid = i32::try_from(c.cg_valid).ok().filter(|&v| v <= p.cg).ok_or_else(|| {
                    Error::config("cg_valid", c.cg_valid, format!("must be at most C/groups ({})", p.cg))
                })?;
                Some((gs, gz))
            }
        };
        let ordinal = self.ordinal();
        let mut launch_with = |p: &mut QcConvParams, body: &dyn Fn(&QcConvParams) -> Result<()>| match weight {
            TcWeight::Half(w) => with_conv_ptrs(ordinal, s, w, &mut io, p, true, body),
            TcWeight::Tf32(w) => with_conv_ptrs(ordinal, s, w, &mut io, p, true, body),
            TcWeight::Codes(c) => with_conv_ptrs(ordinal, s, &c.codes, &mut io, p, true, body),
        };
        if p.splits == 1 {
            return launch_with(&mut p, &|p| self.launch(&f, dims, p, s));
        }
        // Split-K: partial sums per reduction range, then the ordered reduction (+ bias).
        let parts = [p.splits as u64, p.batch as u64, p.out_spatial as u64, p.out_channels as u64]
            .iter()
            .try_fold(1u64, |a, &b| a.checked_mul(b))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| Error::Overflow("split-K partial sums".into()))?;
        let mut partial = self.alloc_uninit::<f32>(parts, stream)?;
        let reduce = splitk_reduce_variant(dtype).ok_or_else(|| Error::Unsupported {
            op: "the split-K reduction".into(),
            device: "CUDA".into(),
            reason: format!("no kernel for {dtype}"),
        })?;
        let fr = self.function(reduce)?;
        let (part_ptr, _gp) = partial.device_ptr_mut(s);
        p.partial = part_ptr;
        let rdims = splitk_reduce_dims(&p);
        launch_with(&mut p, &|p| {
            self.launch(&f, dims, p, s)?;
            self.launch(&fr, rdims, p, s)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::kernels::ConvTile;
    use crate::cuda::ops::conv_launch;
    use crate::cuda::ops::params::problem_2d;

    /// The GPU suite's shapes (batch 32, 132 multiprocessors) and the tensor-core geometry.
    #[test]
    fn tensor_core_tiles_and_geometry() {
        let suite = |c: usize, k: usize, hw: usize, kernel: usize, pad: usize, tr: bool, stride: usize| {
            let mut p = problem_2d(tr, c, k, 1, hw, kernel, stride);
            p.batch = 32;
            p.pad = [0, pad, pad];
            let out = if tr { (hw - 1) * stride + kernel - 2 * pad } else { (hw + 2 * pad - kernel) / stride + 1 };
            p.out_size = [1, out, out];
            tc_conv_params(&p, true, true).unwrap()
        };
        let g_3x3_64 = suite(64, 64, 56, 3, 1, false, 1);
        assert_eq!(choose_tc_tile(&g_3x3_64, 132), TcTile::T128x64);
        assert_eq!(choose_tc_tile(&suite(128, 128, 28, 3, 1, false, 1), 132), TcTile::T128x64);
        assert_eq!(choose_tc_tile(&suite(256, 256, 14, 3, 1, false, 1), 132), TcTile::T64x64);
        let c1d_like = suite(512, 512, 64, 3, 1, false, 1);
        assert_eq!(choose_tc_tile(&c1d_like, 132), TcTile::T128x128);
        let ct2d = suite(256, 128, 28, 4, 1, true, 2);
        assert_eq!(choose_tc_tile(&ct2d, 132), TcTile::T128x128);
        let stem = suite(3, 64, 224, 7, 3, false, 2);
        assert_eq!(choose_tc_tile(&stem, 132), TcTile::Gather128x64);
        // Split-K only where the tiles fill less than half a wave (g_3x3_512: 200 blocks of 528).
        let g_3x3_512 = suite(512, 512, 7, 3, 1, false, 1);
        assert_eq!(choose_tc_tile(&g_3x3_512, 132), TcTile::T64x64);
        assert_eq!(choose_tc_splits(&g_3x3_512, TcTile::T64x64, 132), 3);
        assert_eq!(choose_tc_splits(&g_3x3_64, TcTile::T128x64, 132), 1);
        assert_eq!(choose_tc_splits(&ct2d, TcTile::T128x128, 132), 1);
        let mut split = g_3x3_512;
        split.splits = 3;
        let l = conv_launch(&split, ConvAlgo::TensorCore(TcTile::T64x64)).unwrap().unwrap();
        assert_eq!(l.grid.2, 3);
        assert!(conv_launch(&split, ConvAlgo::Tiled(ConvTile::T64)).is_err());
        // Geometry: x = position tiles (x phases), y = channel tiles, z = groups.
        let l = conv_launch(&g_3x3_64, ConvAlgo::TensorCore(TcTile::T128x64)).unwrap().unwrap();
        assert_eq!(l.grid, ((32 * 56 * 56usize).div_ceil(128) as u32, 1, 1));
        assert_eq!(l.block, (128, 1, 1));
        let l = conv_launch(&ct2d, ConvAlgo::TensorCore(TcTile::T128x128)).unwrap().unwrap();
        assert_eq!(l.grid, (4 * (32 * 28 * 28usize).div_ceil(128) as u32, 1, 1));
        // The vector tiles refuse C/groups not a multiple of 8; the packed row is checked.
        assert!(conv_launch(&stem, ConvAlgo::TensorCore(TcTile::T128x64)).is_err());
        assert!(conv_launch(&stem, ConvAlgo::TensorCore(TcTile::Gather128x64)).unwrap().is_some());
        assert_eq!(stem.w_stride_m, tc_weight_row(3, 49) as i64);
        assert_eq!(tc_weight_row(3, 49), 152);
        let mut bad = g_3x3_64;
        bad.w_stride_m += 1;
        assert!(conv_launch(&bad, ConvAlgo::TensorCore(TcTile::T128x64)).is_err());
        // out_nhwc only for the channels-last kernels.
        assert!(conv_launch(&g_3x3_64, ConvAlgo::Tiled(ConvTile::T64)).is_err());
        assert!(tc_supported(&g_3x3_64, DType::F16) && tc_supported(&g_3x3_64, DType::F32));
        // TF32 has no element-wise loader: the stem stays on the f16/bf16 tiles only.
        assert!(tc_supported(&stem, DType::BF16) && !tc_supported(&stem, DType::F32));
    }
}
