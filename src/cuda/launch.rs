//! Kernel arguments and launch geometry: pure functions that the CUDA runtime calls before every
//! launch.
//!
//! * [`conv_params`] turns a [`ConvProblem`] into the [`QcConvParams`] of `cuda/params.h`
//!   (pointers left 0 for the runtime to fill), checking every size the kernels rely on;
//! * [`choose_conv_algo`] picks a kernel (tiled implicit GEMM with a tile size, or direct);
//! * [`conv_launch`] computes grid and block for a params struct and an algorithm, re-checking
//!   the struct's invariants and every grid limit;
//! * [`fakequant_args`] resolves [`WeightQParams`] into a [`QcFakeQuantParams`] plus the small
//!   arrays (scales, zero points) to upload, and [`fakequant_launch`] its geometry.
//!
//! The unit tests below contain line-by-line Rust transcriptions of `cuda/fakequant.cu` and of the
//! convolution kernels' index arithmetic (block → phase → columns → taps), driven by these
//! functions, and compare them with the CPU fake-quant (bit for bit) and with the naive
//! convolution oracle: they pin down argument construction, grid coverage and the phase
//! decomposition on machines without a GPU.

pub use super::params_sys::{
    QcConvParams, QcFakeQuantMode, QcFakeQuantParams, QcPadMode, QcTransposeParams, QC_FQ_DECOMPOSED_F32,
    QC_FQ_DECOMPOSED_F64, QC_FQ_FLOAT_ZP, QC_FQ_HALF, QC_FQ_IDENTITY, QC_FQ_INT_PER_CHANNEL, QC_FQ_INT_PER_TENSOR,
    QC_PAD_CIRCULAR, QC_PAD_REFLECT, QC_PAD_REPLICATE, QC_PAD_ZEROS,
};
pub use super::params_sys::{
    QcDequantLayout, QcDequantParams, QcPadChannelsParams, QC_DQ_DEPTHWISE, QC_DQ_FORWARD, QC_DQ_TRANSPOSED,
};

use super::kernels::{ConvAlgo, ConvTile, TcTile};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::problem::{ConvProblem, PaddingMode};
use crate::quant::{Plan, QParamData, WeightQParams};

/// Largest `gridDim.x`.
pub const MAX_GRID_X: u64 = (1 << 31) - 1;
/// Largest `gridDim.y` and `gridDim.z`.
pub const MAX_GRID_YZ: u64 = 65_535;
/// Threads per block of the fake-quant kernels (`QC_FQ_THREADS`).
pub const FAKEQUANT_THREADS: u32 = 256;
/// Items per thread in one block chunk of the fake-quant kernels (`QC_FQ_CHUNK`).
pub const FAKEQUANT_CHUNK: u64 = 16;
/// Threads per block of the direct convolution kernels (`QC_DIRECT_THREADS`).
pub const DIRECT_THREADS: u32 = 256;
/// Outputs along W per thread of the direct kernels (`QC_DIRECT_QW`).
pub const DIRECT_OUTPUTS_PER_THREAD: u64 = 4;
/// Blocks launched at most by the grid-stride kernels (fake-quant, direct convolution); more
/// work is looped over inside the kernel.
pub const MAX_GRID_STRIDE_BLOCKS: u64 = 1 << 18;

/// Grid and block of one launch (all kernels use static shared memory only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchDims {
    /// `gridDim` (x, y, z).
    pub grid: (u32, u32, u32),
    /// `blockDim` (x, y, z).
    pub block: (u32, u32, u32),
    /// Dynamic shared memory in bytes (always 0: the tiles are static `__shared__` arrays).
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

fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

fn to_i32(param: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::config(param, v, "must be below 2^31 for the CUDA kernels"))
}

fn mul(what: &str, values: &[u64]) -> Result<i64> {
    values
        .iter()
        .try_fold(1u64, |acc, &v| acc.checked_mul(v))
        .and_then(|v| i64::try_from(v).ok())
        .ok_or_else(|| Error::Overflow(format!("{what} ({values:?}) exceeds 2^63")))
}

fn pad_mode_code(mode: PaddingMode) -> i32 {
    (match mode {
        PaddingMode::Zeros => QC_PAD_ZEROS,
        PaddingMode::Reflect => QC_PAD_REFLECT,
        PaddingMode::Replicate => QC_PAD_REPLICATE,
        PaddingMode::Circular => QC_PAD_CIRCULAR,
    }) as i32
}

/// The kernel arguments of a convolution, with every pointer 0 (the runtime sets `x`, `w`,
/// `bias` and `y`). The weight is expected in the module's layout: forward
/// `[K, C/groups, k0, k1, k2]`, transposed `[C, K/groups, k0, k1, k2]`, contiguous.
///
/// Errors when a group count, stride, dilation or kernel size is zero, groups do not divide the
/// channels, a transposed problem has a padding mode other than zeros, a size does not fit the
/// kernels' `int32` fields, or a tensor size overflows 64-bit indexing.
pub fn conv_params(p: &ConvProblem, has_bias: bool) -> Result<QcConvParams> {
    if p.groups == 0 {
        return Err(Error::config("groups", 0, "must be positive"));
    }
    if !p.in_channels.is_multiple_of(p.groups) || !p.out_channels.is_multiple_of(p.groups) {
        return Err(Error::config(
            "groups",
            p.groups,
            format!("must divide in_channels ({}) and out_channels ({})", p.in_channels, p.out_channels),
        ));
    }
    for (name, v) in [("kernel_size", p.kernel), ("stride", p.stride), ("dilation", p.dilation)] {
        if v.contains(&0) {
            return Err(Error::config(name, format!("{v:?}"), "every element must be positive"));
        }
    }
    if p.transposed && p.pad_mode != PaddingMode::Zeros {
        return Err(Error::config("padding_mode", p.pad_mode.as_str(), "transposed convolutions only support zeros"));
    }
    let i32s = |name: &'static str, v: [usize; 3]| -> Result<[i32; 3]> {
        Ok([to_i32(name, v[0])?, to_i32(name, v[1])?, to_i32(name, v[2])?])
    };
    // The tiled kernels compute coordinates in 32 bits: o*stride + j*dilation - pad, the reflect
    // remap 2(len-1) - i and the transposed (r + pad - j*dilation) must all stay below 2^31.
    for d in 0..3 {
        let bound = [
            (p.out_size[d] as u128 + 1) * p.stride[d] as u128,
            (p.kernel[d] as u128 - 1) * p.dilation[d] as u128,
            p.pad[d] as u128,
            2 * p.in_size[d] as u128 + 2,
        ]
        .iter()
        .sum::<u128>();
        if bound >= 1 << 31 {
            return Err(Error::config(
                "convolution size",
                format!(
                    "dimension {d}: in {}, out {}, kernel {}, stride {}, padding {}, dilation {}",
                    p.in_size[d], p.out_size[d], p.kernel[d], p.stride[d], p.pad[d], p.dilation[d]
                ),
                "the CUDA kernels need (out+1)*stride + (kernel-1)*dilation + padding + 2*in + 2 < 2^31 per dimension",
            ));
        }
    }
    let (cg, kg) = (p.in_channels / p.groups, p.out_channels / p.groups);
    let taps = mul("kernel taps", &p.kernel.map(|v| v as u64))?;
    let in_spatial = mul("input spatial size", &p.in_size.map(|v| v as u64))?;
    let out_spatial = mul("output spatial size", &p.out_size.map(|v| v as u64))?;
    // Tensor sizes must be indexable with i64 (the kernels' offsets).
    mul("input elements", &[p.batch as u64, p.in_channels as u64, in_spatial as u64])?;
    mul("output elements", &[p.batch as u64, p.out_channels as u64, out_spatial as u64])?;
    mul("weight elements", &[p.in_channels.max(p.out_channels) as u64, cg.max(kg) as u64, taps as u64])?;
    let phases = if p.transposed { p.stride } else { [1; 3] };
    let sub_size = [0, 1, 2].map(|d| p.out_size[d].div_ceil(phases[d]));
    let sub_spatial = mul("phase sub-grid", &sub_size.map(|v| v as u64))?;
    let n_cols = mul("GEMM columns", &[p.batch as u64, sub_spatial as u64])?;
    let (cg64, kg64, taps64) = (cg as i64, kg as i64, taps);
    let (w_stride_group, w_stride_m, w_stride_c) = if p.transposed {
        // [C, K/g, taps]: element (g, m, c, t) at ((g*Cg + c)*Kg + m)*taps + t
        (cg64 * kg64 * taps64, taps64, kg64 * taps64)
    } else {
        // [K, C/g, taps]: element (g, m, c, t) at ((g*Kg + m)*Cg + c)*taps + t
        (kg64 * cg64 * taps64, cg64 * taps64, taps64)
    };
    Ok(QcConvParams {
        x: 0,
        w: 0,
        bias: 0,
        y: 0,
        w_stride_group,
        w_stride_m,
        w_stride_c,
        w_stride_tap: 1,
        in_spatial,
        out_spatial,
        sub_spatial,
        n_cols,
        batch: to_i32("batch", p.batch)?,
        in_channels: to_i32("in_channels", p.in_channels)?,
        out_channels: to_i32("out_channels", p.out_channels)?,
        groups: to_i32("groups", p.groups)?,
        cg: to_i32("in_channels / groups", cg)?,
        kg: to_i32("out_channels / groups", kg)?,
        in_size: i32s("input size", p.in_size)?,
        out_size: i32s("output size", p.out_size)?,
        kernel: i32s("kernel_size", p.kernel)?,
        stride: i32s("stride", p.stride)?,
        pad: i32s("padding", p.pad)?,
        dilation: i32s("dilation", p.dilation)?,
        sub_size: i32s("phase sub-grid", sub_size)?,
        phases: i32s("stride", phases)?,
        taps: to_i32("kernel taps", taps as usize)?,
        num_phases: to_i32("phases", phases.iter().product())?,
        pad_mode: pad_mode_code(p.pad_mode),
        transposed: p.transposed as i32,
        has_bias: has_bias as i32,
        out_nhwc: 0,
        partial: 0,
        splits: 1,
        w_codes_signed: 0,
        w_scale: 0,
        w_zero: 0,
        w_cg_valid: 0,
        reserved2: 0,
    })
}

/// Checks that a params struct is internally consistent (derived fields match the primary ones),
/// as [`conv_params`] builds it; [`conv_launch`] calls it so a hand-edited struct cannot make a
/// kernel index out of bounds.
pub fn check_conv_params(p: &QcConvParams) -> Result<()> {
    let bad = |rule: String| Err(Error::config("QcConvParams", "(kernel arguments)", rule));
    let pos = |v: &[i32]| v.iter().all(|&x| x > 0);
    let nonneg = |v: &[i32]| v.iter().all(|&x| x >= 0);
    if !(p.groups > 0 && p.batch >= 0 && p.in_channels >= 0 && p.out_channels >= 0) {
        return bad("groups must be positive and batch/channels non-negative".into());
    }
    if p.cg.checked_mul(p.groups) != Some(p.in_channels) || p.kg.checked_mul(p.groups) != Some(p.out_channels) {
        return bad("cg * groups must equal in_channels and kg * groups out_channels".into());
    }
    if !(pos(&p.kernel) && pos(&p.stride) && pos(&p.dilation) && pos(&p.phases)) {
        return bad("kernel, stride, dilation and phases must be positive".into());
    }
    if !(nonneg(&p.in_size) && nonneg(&p.out_size) && nonneg(&p.pad) && nonneg(&p.sub_size)) {
        return bad("sizes and padding must be non-negative".into());
    }
    let prod = |v: [i32; 3]| v.iter().map(|&x| x as i64).product::<i64>();
    if p.taps as i64 != prod(p.kernel) || p.num_phases as i64 != prod(p.phases) {
        return bad("taps and num_phases must be the products of kernel and phases".into());
    }
    if p.in_spatial != prod(p.in_size) || p.out_spatial != prod(p.out_size) || p.sub_spatial != prod(p.sub_size) {
        return bad("in_spatial, out_spatial and sub_spatial must be the products of their sizes".into());
    }
    let transposed = match p.transposed {
        0 => false,
        1 => true,
        t => return bad(format!("transposed must be 0 or 1, not {t}")),
    };
    let expected_phases = if transposed { p.stride } else { [1; 3] };
    if p.phases != expected_phases {
        return bad(format!("phases must be {expected_phases:?}"));
    }
    if (0..3).any(|d| (p.sub_size[d] as i64) * (p.phases[d] as i64) < p.out_size[d] as i64) {
        return bad("sub_size * phases must cover out_size".into());
    }
    if Some(p.n_cols) != (p.batch as i64).checked_mul(p.sub_spatial) {
        return bad("n_cols must be batch * sub_spatial".into());
    }
    if !(0..=3).contains(&p.pad_mode) || (transposed && p.pad_mode != QC_PAD_ZEROS as i32) {
        return bad(format!("invalid pad_mode {} (transposed convolutions need zeros)", p.pad_mode));
    }
    if !(0..=1).contains(&p.has_bias) {
        return bad(format!("has_bias must be 0 or 1, not {}", p.has_bias));
    }
    if !(0..=1).contains(&p.out_nhwc) {
        return bad(format!("out_nhwc must be 0 or 1, not {}", p.out_nhwc));
    }
    if p.splits < 1 || (p.splits > 1 && transposed) {
        return bad(format!("splits must be at least 1, and 1 for transposed convolutions (got {})", p.splits));
    }
    Ok(())
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

/// Whether the tensor-core kernel (`cuda/conv_tc.cu`) computes `p` in `dtype`: f16 or bf16
/// activations, and either `C/groups` a multiple of 8 (16-byte channel vectors; forward or
/// transposed) or, forward only, at least 16 output channels per group (the element-wise loader,
/// e.g. a 3-channel stem); or f32 activations on the TF32 tiles, which have only the vector
/// loader: `C/groups` a multiple of 8. Depthwise convolutions are not.
pub fn tc_supported(p: &QcConvParams, dtype: DType) -> bool {
    let shape_ok = p.cg > 0 && p.kg > 0;
    match dtype {
        DType::F16 | DType::BF16 => shape_ok && (p.cg % 8 == 0 || (p.transposed == 0 && p.kg >= 16)),
        DType::F32 => shape_ok && p.cg % 8 == 0,
    }
}

/// Elements per row of the packed tensor-core weight: `taps * C/groups` rounded up to 8.
pub fn tc_weight_row(cg: usize, taps: usize) -> usize {
    (cg * taps).div_ceil(8) * 8
}

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

/// The geometry of a weight packed for the tensor-core kernels (16-bit values, TF32 values or
/// 8-bit codes): `[out_channels][row]` with row = `taps · cg_pad` rounded up to 8 ([`tc_weight_row`]),
/// element (output channel k, tap t, input channel c of the group) at `k·row + t·cg_pad + c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightGeometry {
    /// Output channels K.
    pub out_channels: usize,
    /// Input channels per group.
    pub cg: usize,
    /// Channel slots per tap: `cg`, or more when the input's channels are padded
    /// ([`tc_padded_cg`]); the slots past `cg` hold zeros.
    pub cg_pad: usize,
    /// Kernel taps.
    pub taps: usize,
    /// Groups.
    pub groups: usize,
}

impl WeightGeometry {
    /// Elements (or codes) per packed row.
    pub fn row(&self) -> usize {
        tc_weight_row(self.cg_pad, self.taps)
    }

    /// Index, in the module's own weight layout, of output channel `k`, input channel `c` of its
    /// group and tap `t`: forward `[K][cg][taps]`; transposed `[C][K/groups][taps]`, where output
    /// channel k = g·kg + m reads input channel g·cg + c.
    pub fn module_index(&self, transposed: bool, k: usize, c: usize, t: usize) -> usize {
        let kg = self.out_channels / self.groups.max(1);
        if transposed {
            let (g, m) = (k / kg, k % kg);
            ((g * self.cg + c) * kg + m) * self.taps + t
        } else {
            (k * self.cg + c) * self.taps + t
        }
    }

    /// A weight in the module's layout (`src`) packed `[K][row]`, element (k, t, c) at
    /// `k·row + t·cg_pad + c`, each value converted by `conv`; the padding slots hold
    /// `E::default()`.
    pub fn pack<S: Copy, E: Copy + Default>(&self, transposed: bool, src: &[S], conv: impl Fn(S) -> E) -> Vec<E> {
        let row = self.row();
        let mut out = vec![E::default(); self.out_channels * row];
        for k in 0..self.out_channels {
            for c in 0..self.cg {
                for t in 0..self.taps {
                    out[k * row + t * self.cg_pad + c] = conv(src[self.module_index(transposed, k, c, t)]);
                }
            }
        }
        out
    }
}

/// Arguments of `qc_dequant_codes` for codes packed as `g` says: the float32 weight is written in
/// `layout` (the module's own layout for `QC_DQ_FORWARD` / `QC_DQ_TRANSPOSED`, `[taps][K]` for
/// `QC_DQ_DEPTHWISE`). The runtime sets the pointers.
pub fn dequant_params(g: WeightGeometry, layout: QcDequantLayout, signed: bool) -> Result<QcDequantParams> {
    let WeightGeometry { out_channels, cg, cg_pad, taps, groups } = g;
    if cg_pad < cg {
        return Err(Error::config("cg_pad", cg_pad, format!("must be at least C/groups ({cg})")));
    }
    if groups == 0 || !out_channels.is_multiple_of(groups) {
        return Err(Error::config(
            "groups",
            groups,
            format!("must be positive and divide out_channels ({out_channels})"),
        ));
    }
    if layout == QC_DQ_DEPTHWISE && (cg != 1 || groups != out_channels) {
        return Err(Error::config(
            "QcDequantParams",
            "(kernel arguments)",
            format!("the depthwise layout needs one channel per group (cg {cg}, groups {groups}, K {out_channels})"),
        ));
    }
    if layout > QC_DQ_DEPTHWISE {
        return Err(Error::config("QcDequantParams", "(kernel arguments)", format!("unknown layout {layout}")));
    }
    let numel = mul("weight elements", &[out_channels as u64, cg as u64, taps as u64])?;
    let row =
        cg_pad.checked_mul(taps).map(|n| n.div_ceil(8) * 8).ok_or_else(|| Error::Overflow("weight row".into()))?;
    Ok(QcDequantParams {
        codes: 0,
        scale: 0,
        zero: 0,
        dst: 0,
        numel,
        row: i64::try_from(row).map_err(|_| Error::Overflow("weight row".into()))?,
        out_channels: to_i32("out_channels", out_channels)?,
        cg: to_i32("in_channels / groups", cg)?,
        kg: to_i32("out_channels / groups", out_channels / groups)?,
        taps: to_i32("kernel taps", taps)?,
        layout: layout as i32,
        codes_signed: signed as i32,
        cg_pad: to_i32("padded C/groups", cg_pad)?,
        reserved: 0,
    })
}

/// C/groups as the tensor-core tiles see a forward convolution: `cg` itself when it is a
/// multiple of 8, else (forward convolutions with at least 2 channels per group and 16 output
/// channels per group) `cg` rounded up to 8, the input being copied with zero channels by
/// `qc_pad_channels` first: the 16-byte loader on 8/3 of the work beats the element-wise loader
/// for a 3-channel stem. `None` when no padding applies (the element-wise loader or the CUDA-core
/// kernels take the problem).
pub fn tc_padded_cg(transposed: bool, cg: usize, kg: usize) -> Option<usize> {
    (!transposed && cg >= 2 && !cg.is_multiple_of(8) && kg >= 16).then(|| cg.div_ceil(8) * 8)
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

/// Grid and block of `qc_dequant_codes` (grid-stride, 256 threads), or `None` for an empty
/// weight.
pub fn dequant_launch(p: &QcDequantParams) -> Result<Option<LaunchDims>> {
    if p.numel < 0 {
        return Err(Error::config("QcDequantParams", "(kernel arguments)", format!("numel {} < 0", p.numel)));
    }
    if p.numel == 0 {
        return Ok(None);
    }
    let blocks = ceil_div(p.numel as u64, 256).min(MAX_GRID_STRIDE_BLOCKS);
    Ok(Some(LaunchDims { grid: (blocks as u32, 1, 1), block: (256, 1, 1), dynamic_shared_bytes: 0 }))
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

/// Whether the channels-last depthwise kernel (`qc_dw_nhwc_*`) computes `p`: a forward
/// convolution with `groups == in_channels == out_channels`, a multiple of 8 (any dtype).
pub fn dw_nhwc_supported(p: &QcConvParams) -> bool {
    p.transposed == 0
        && p.groups == p.in_channels
        && p.in_channels == p.out_channels
        && p.in_channels > 0
        && p.in_channels % 8 == 0
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

/// Picks the kernel for a convolution: the direct kernel when each output reads at most two input
/// channels (depthwise and similar: the GEMM's reduction would be too short to fill a BK-deep
/// tile), else the implicit GEMM with the largest tile that still gives at least two blocks per
/// multiprocessor (`sm_count` from the device; a tile with 32 rows when a group has at most 32
/// output channels).
pub fn choose_conv_algo(p: &QcConvParams, sm_count: u32) -> ConvAlgo {
    if p.cg <= 2 {
        return ConvAlgo::Direct;
    }
    if p.kg <= 32 {
        return ConvAlgo::Tiled(ConvTile::M32);
    }
    let blocks = |t: ConvTile| {
        ceil_div(p.n_cols.max(0) as u64, t.bn() as u64)
            * p.num_phases.max(1) as u64
            * ceil_div(p.kg.max(0) as u64, t.bm() as u64)
            * p.groups.max(1) as u64
    };
    if blocks(ConvTile::T128) >= 2 * sm_count.max(1) as u64 {
        ConvAlgo::Tiled(ConvTile::T128)
    } else {
        ConvAlgo::Tiled(ConvTile::T64)
    }
}

/// The grid of the tiled kernels: `gx` along x (named `what_x`), output-channel tiles of
/// `channels_per_tile` along y, groups × splits along z; `threads` per block.
fn tile_grid(
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

fn grid_dim(what: &str, v: u64, max: u64) -> Result<u32> {
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
        ConvAlgo::DepthwiseNhwc => {
            if !dw_nhwc_supported(p) || p.out_nhwc != 1 {
                return Err(Error::config(
                    "QcConvParams",
                    "(kernel arguments)",
                    "the channels-last depthwise kernel needs groups == in_channels == out_channels, a multiple of 8, a forward convolution and out_nhwc = 1",
                ));
            }
            let items = dw_nhwc_items(p)?;
            if items > i32::MAX as u64 {
                return Err(Error::Unsupported {
                    op: format!("the channels-last depthwise kernel with {items} work items"),
                    device: "CUDA".into(),
                    reason: "it decodes work items in 32 bits: at most 2^31 - 1 (outputs / 8)".into(),
                });
            }
            let blocks = ceil_div(items, DIRECT_THREADS as u64).clamp(1, MAX_GRID_STRIDE_BLOCKS);
            Ok(Some(LaunchDims { grid: (blocks as u32, 1, 1), block: (DIRECT_THREADS, 1, 1), dynamic_shared_bytes: 0 }))
        }
        ConvAlgo::TensorCore(tile) => {
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
        ConvAlgo::Tiled(tile) => {
            let n_tiles = ceil_div(p.n_cols as u64, tile.bn() as u64);
            let gx = n_tiles.checked_mul(p.num_phases as u64).ok_or_else(|| Error::Overflow("grid size".into()))?;
            tile_grid(p, "gridDim.x (column tiles x phases)", gx, tile.bm(), tile.threads())
        }
        ConvAlgo::Direct => {
            let items = [
                p.batch as u64,
                p.out_channels as u64,
                p.out_size[0] as u64,
                p.out_size[1] as u64,
                ceil_div(p.out_size[2] as u64, DIRECT_OUTPUTS_PER_THREAD),
            ];
            let total = mul("direct-kernel work items", &items)? as u64;
            let blocks = ceil_div(total, DIRECT_THREADS as u64).clamp(1, MAX_GRID_STRIDE_BLOCKS);
            Ok(Some(LaunchDims { grid: (blocks as u32, 1, 1), block: (DIRECT_THREADS, 1, 1), dynamic_shared_bytes: 0 }))
        }
    }
}

/// Everything the fake-quant kernels need besides device pointers.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeQuantArgs {
    /// The kernel arguments; the runtime sets `src`, `dst`, `codes`, `scales`,
    /// `zero_points_i64`, `zero_points_f32` and `first_nonfinite` (0 where unused).
    pub params: QcFakeQuantParams,
    /// Upload to `params.scales` (f64; empty for the identity and float16 modes).
    pub scales: Vec<f64>,
    /// Upload to `params.zero_points_i64` (empty when the mode reads float zero points).
    pub zero_points_i64: Vec<i64>,
    /// Upload to `params.zero_points_f32` (empty when the mode reads integer zero points).
    pub zero_points_f32: Vec<f32>,
}

/// Resolves `qparams` for a float32 weight of shape `shape` into fake-quant kernel arguments.
///
/// Validation is [`WeightQParams::validate`]'s (the CPU path's plan), so both devices accept and
/// reject the same parameters; the arrays hold exactly the values the CPU formulas use
/// (docs/numerics.md §4 and `src/quant/fakequant.rs`).
pub fn fakequant_args(qparams: &WeightQParams, shape: &[usize]) -> Result<FakeQuantArgs> {
    let plan = qparams.plan(shape)?;
    let numel = mul("weight elements", &shape.iter().map(|&v| v as u64).collect::<Vec<_>>())? as u64;
    let axis_dims = |axis: Option<usize>| -> (u64, u64) {
        match axis {
            Some(a) => (shape[a] as u64, shape[a + 1..].iter().map(|&v| v as u64).product()),
            None => (1, numel),
        }
    };
    let mut params = QcFakeQuantParams { numel, channels: 1, inner: numel, ..Default::default() };
    let mut args = FakeQuantArgs { params, scales: vec![], zero_points_i64: vec![], zero_points_f32: vec![] };
    let mode = match &plan {
        Plan::Identity => QC_FQ_IDENTITY,
        Plan::Half => QC_FQ_HALF,
        Plan::Int { axis, scales, zero_points, qmin, qmax } => {
            (params.channels, params.inner) = axis_dims(*axis);
            (params.qmin, params.qmax) = (*qmin, *qmax);
            args.scales = scales.clone();
            args.zero_points_i64 = zero_points.clone();
            if axis.is_some() {
                QC_FQ_INT_PER_CHANNEL
            } else {
                // The per-tensor formula reads only element 0.
                args.scales.truncate(1);
                args.zero_points_i64.truncate(1);
                QC_FQ_INT_PER_TENSOR
            }
        }
        Plan::FloatZp { axis, scales, zero_points, qmin, qmax } => {
            (params.channels, params.inner) = axis_dims(Some(*axis));
            (params.qmin, params.qmax) = (*qmin, *qmax);
            args.scales = scales.iter().map(|&s| s as f64).collect(); // exact widening
            args.zero_points_f32 = zero_points.clone();
            QC_FQ_FLOAT_ZP
        }
        Plan::Decomposed { axis, qmin, qmax, .. } => {
            // Same resolution as WeightQParams::plan: float64 arithmetic only for float64
            // per-channel scales; float zero points when the zero-point tensor is floating.
            (params.channels, params.inner) = axis_dims(*axis);
            (params.qmin, params.qmax) = (*qmin, *qmax);
            params.per_channel = axis.is_some() as i32;
            let channels = params.channels as usize;
            args.scales = qparams.scale.to_f64();
            args.scales.truncate(channels);
            if qparams.zero_point.is_float() {
                params.zp_is_float = 1;
                args.zero_points_f32 = qparams.zero_point.to_f32();
                args.zero_points_f32.truncate(channels);
            } else {
                args.zero_points_i64 = qparams.zero_point.to_i64_trunc();
                args.zero_points_i64.truncate(channels);
            }
            if axis.is_some() && matches!(qparams.scale.data, QParamData::F64(_)) {
                QC_FQ_DECOMPOSED_F64
            } else {
                QC_FQ_DECOMPOSED_F32
            }
        }
    };
    params.mode = mode as i32;
    args.params = params;
    Ok(args)
}

/// Whether `qc_fakequant_fast` computes `args` (the runtime also needs 16-byte aligned buffers):
/// an integer mode (per tensor or per channel) where every channel takes the f32 fast path — codes
/// and zero points within ±2²³ and every scale exactly a float32, the conditions `qc_channel` of
/// `cuda/fakequant.cu` checks per channel — with `numel` and `inner` multiples of 4 and `numel`
/// below 2³² (32-bit indices).
pub fn fakequant_fast_ok(args: &FakeQuantArgs) -> bool {
    let p = &args.params;
    let mode_ok = p.mode == QC_FQ_INT_PER_TENSOR as i32 || p.mode == QC_FQ_INT_PER_CHANNEL as i32;
    let lim = 1i64 << 23;
    mode_ok
        && p.numel > 0
        && p.numel.is_multiple_of(4)
        && p.inner.is_multiple_of(4)
        && p.numel < 1u64 << 32
        && p.channels >= 1
        && p.qmin >= -lim
        && p.qmax <= lim
        && args.scales.len() as u64 >= p.channels
        && args.zero_points_i64.len() as u64 >= p.channels
        && args.scales.iter().take(p.channels as usize).all(|&s| (s as f32) as f64 == s)
        && args.zero_points_i64.iter().take(p.channels as usize).all(|&z| (-lim..=lim).contains(&z))
}

/// Grid and block of `qc_fakequant` / `qc_quantize`, or `None` for an empty weight. Errors when
/// the struct is inconsistent (unknown mode, channels/inner not dividing numel, an empty range,
/// codes outside int32).
pub fn fakequant_launch(p: &QcFakeQuantParams) -> Result<Option<LaunchDims>> {
    let bad = |rule: String| Err(Error::config("QcFakeQuantParams", "(kernel arguments)", rule));
    if !(QC_FQ_IDENTITY as i32..=QC_FQ_DECOMPOSED_F64 as i32).contains(&p.mode) {
        return bad(format!("unknown mode {}", p.mode));
    }
    if p.numel == 0 {
        return Ok(None);
    }
    let float_mode = p.mode == QC_FQ_IDENTITY as i32 || p.mode == QC_FQ_HALF as i32;
    if !float_mode {
        let run = p.channels.checked_mul(p.inner);
        if p.channels == 0 || p.inner == 0 || run.is_none_or(|r| !p.numel.is_multiple_of(r)) {
            return bad(format!("channels ({}) * inner ({}) must divide numel ({})", p.channels, p.inner, p.numel));
        }
        if p.qmin > p.qmax || p.qmin < i32::MIN as i64 || p.qmax > i32::MAX as i64 {
            return bad(format!("[{}, {}] is not a valid int32 code range", p.qmin, p.qmax));
        }
    }
    // The integer modes handle 4 elements per item where they can (16-byte accesses), and each
    // block takes chunks of FAKEQUANT_CHUNK items per thread; the grid-stride loop covers the rest.
    let blocks = ceil_div(ceil_div(p.numel, 4), FAKEQUANT_THREADS as u64 * FAKEQUANT_CHUNK).min(MAX_GRID_STRIDE_BLOCKS);
    Ok(Some(LaunchDims { grid: (blocks as u32, 1, 1), block: (FAKEQUANT_THREADS, 1, 1), dynamic_shared_bytes: 0 }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{self, QParamTensor, QScheme, QuantDType, QuantizedValues};
    use crate::tensor::Tensor;
    use half::f16;

    // ---- a transcription of cuda/fakequant.cu ---------------------------------------------------

    fn clamp_f64_to_i64(v: f64, lo: i64, hi: i64) -> i64 {
        if v <= lo as f64 {
            lo
        } else if v >= hi as f64 {
            hi
        } else {
            v as i64
        }
    }

    fn quant_int(x: f32, inv: f32, zp: i64, lo: i64, hi: i64, nan_code: i64) -> i64 {
        let t = x * inv;
        if t.is_nan() {
            return nan_code;
        }
        clamp_f64_to_i64((zp as f32 + t.round_ties_even()) as f64, lo, hi)
    }

    fn dec_to_int(v: f64, lo: i64, hi: i64) -> i64 {
        if v.is_nan() {
            return if lo == i32::MIN as i64 { lo } else { 0 };
        }
        (v as i64).clamp(lo, hi)
    }

    /// `qc_fq_elem` + `qc_channel` for element `i`: (code, dequantized value).
    fn kernel_elem(a: &FakeQuantArgs, i: u64, x: f32) -> (i64, f32) {
        let p = &a.params;
        let (lo, hi) = (p.qmin, p.qmax);
        match p.mode as u32 {
            QC_FQ_HALF => return (0, f16::from_f32(x).to_f32()),
            QC_FQ_IDENTITY => return (0, x),
            _ => {}
        }
        let c = ((i / p.inner) % p.channels) as usize;
        let s64 = a.scales[c];
        let sf = s64 as f32;
        match p.mode as u32 {
            QC_FQ_INT_PER_TENSOR => {
                let inv = 1.0f32 / sf;
                let zi = a.zero_points_i64[c];
                let nan = if lo == i32::MIN as i64 {
                    lo
                } else {
                    (2_147_483_520u32.wrapping_add(zi as i32 as u32) as i32 as i64).clamp(lo, hi)
                };
                let q = quant_int(x, inv, zi, lo, hi, nan);
                (q, sf * ((q - zi) as f32))
            }
            QC_FQ_INT_PER_CHANNEL => {
                let inv = 1.0f32 / sf;
                let zi = a.zero_points_i64[c];
                let nan = if lo == i32::MIN as i64 { lo } else { 0 };
                let q = quant_int(x, inv, zi, lo, hi, nan);
                (q, (((q as f32) - zi as f32) as f64 * s64) as f32)
            }
            QC_FQ_FLOAT_ZP => {
                let inv = if sf == 0.0 { 1.0 } else { 1.0f32 / sf };
                let zf = a.zero_points_f32[c];
                let v = x * inv + zf;
                let q =
                    if v.is_nan() { 0i64.clamp(lo, hi) } else { clamp_f64_to_i64(v.round_ties_even() as f64, lo, hi) };
                (q, ((q as f32) - zf) * sf)
            }
            QC_FQ_DECOMPOSED_F32 | QC_FQ_DECOMPOSED_F64 => {
                let (zi, zf) = if p.zp_is_float != 0 {
                    (0, a.zero_points_f32[c])
                } else {
                    (a.zero_points_i64[c], a.zero_points_i64[c] as f32)
                };
                if p.mode as u32 == QC_FQ_DECOMPOSED_F32 {
                    let inv = if p.per_channel != 0 { 1.0f32 / sf } else { (1.0f64 / s64) as f32 };
                    let mut v = (x * inv).round_ties_even() + zf;
                    if !v.is_nan() {
                        v = v.clamp(lo as f32, hi as f32);
                    }
                    let q = dec_to_int(v as f64, lo, hi);
                    let w = if p.zp_is_float != 0 || p.per_channel == 0 {
                        ((q as f32) - zf) * sf
                    } else {
                        ((q - zi) as f32) * sf
                    };
                    (q, w)
                } else {
                    let inv = 1.0f64 / s64;
                    let mut v = (x as f64 * inv).round_ties_even() + zf as f64;
                    if !v.is_nan() {
                        v = v.clamp(lo as f64, hi as f64);
                    }
                    let q = dec_to_int(v, lo, hi);
                    let diff = if p.zp_is_float != 0 { ((q as f32) - zf) as f64 } else { (q - zi) as f64 };
                    (q, (diff * s64) as f32)
                }
            }
            m => panic!("mode {m}"),
        }
    }

    /// `qc_fq_fast` (the f32 path of the integer modes) for element `i`, or `None` where the
    /// kernel takes the general path.
    fn kernel_elem_fast(a: &FakeQuantArgs, i: u64, x: f32) -> Option<(i64, f32)> {
        let p = &a.params;
        let mode = p.mode as u32;
        if mode != QC_FQ_INT_PER_TENSOR && mode != QC_FQ_INT_PER_CHANNEL {
            return None;
        }
        let c = ((i / p.inner) % p.channels) as usize;
        let s64 = a.scales[c];
        let sf = s64 as f32;
        let zi = a.zero_points_i64[c];
        let lim = 1i64 << 23;
        if p.qmin < -lim || p.qmax > lim || zi < -lim || zi > lim || sf as f64 != s64 {
            return None;
        }
        let (lo, hi) = (p.qmin, p.qmax);
        let nan = if mode == QC_FQ_INT_PER_TENSOR {
            if lo == i32::MIN as i64 {
                lo
            } else {
                (2_147_483_520u32.wrapping_add(zi as i32 as u32) as i32 as i64).clamp(lo, hi)
            }
        } else if lo == i32::MIN as i64 {
            lo
        } else {
            0
        };
        let (lo_f, hi_f, zf) = (lo as f32, hi as f32, zi as f32);
        let t = x * (1.0f32 / sf);
        let qf = if t.is_nan() {
            nan as f32
        } else {
            let v = zf + t.round_ties_even();
            if v <= lo_f {
                lo_f
            } else if v >= hi_f {
                hi_f
            } else {
                v
            }
        };
        // Per tensor s * (q - zp), per channel (q - zp) * s: the same product either way.
        let w = (qf - zf) * sf;
        Some((qf as i64, w))
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn range(&mut self, lo: usize, hi: usize) -> usize {
            lo + (self.next() % (hi - lo + 1) as u64) as usize
        }
        fn f32(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    /// Weights with ties: exact (k + 1/2)·s for the scales used, their neighbours, and noise.
    fn tricky_weights(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| match i % 4 {
                0 => (rng.range(0, 300) as f32 - 150.0 + 0.5) * scale,
                1 => f32::from_bits(((rng.range(0, 300) as f32 - 150.0 + 0.5) * scale).to_bits() + 1),
                2 => rng.f32() * 3.0,
                _ => rng.f32() * 1e3,
            })
            .collect()
    }

    fn check_fakequant(qp: &WeightQParams, shape: &[usize], w: &[f32]) {
        let args = fakequant_args(qp, shape).unwrap();
        assert!(fakequant_launch(&args.params).unwrap().is_some());
        let t = Tensor::from_vec(w.to_vec(), shape).unwrap();
        let cpu = quant::fake_quantize(&t, qp).unwrap();
        let cpu = cpu.as_slice::<f32>().unwrap();
        let codes = match quant::quantize(&t, qp).map(|q| q.values) {
            Ok(QuantizedValues::Codes(c)) => Some(c),
            _ => None,
        };
        for (i, &x) in w.iter().enumerate() {
            let (q, v) = kernel_elem(&args, i as u64, x);
            assert_eq!(v.to_bits(), cpu[i].to_bits(), "{qp:?} element {i} = {x:e}: kernel {v:e} vs cpu {:e}", cpu[i]);
            if let Some((qf, vf)) = kernel_elem_fast(&args, i as u64, x) {
                assert_eq!(vf.to_bits(), v.to_bits(), "{qp:?} element {i} = {x:e}: fast path {vf:e} vs {v:e}");
                assert_eq!(qf, q, "{qp:?} element {i} = {x:e}: fast path code");
            }
            if let Some(c) = &codes {
                assert_eq!(q as i32, c[i], "{qp:?} element {i}: code");
            }
        }
    }

    #[test]
    fn fakequant_transcription_matches_the_cpu_bit_for_bit() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let shape = [4, 3, 5];
        for dtype in [QuantDType::QUInt8, QuantDType::QInt8, QuantDType::QInt32] {
            let (lo, hi) = dtype.range().unwrap();
            for &scale in &[f32::from_bits(0x3b0cceaa), 0.02, 1.0, 0.1, 3.7e-5] {
                let w = tricky_weights(&mut rng, 60, scale);
                let zp = if lo == 0 { 128.min(hi) } else { -3 };
                check_fakequant(&WeightQParams::per_tensor(dtype, scale, zp), &shape, &w);
                check_fakequant(&WeightQParams::per_tensor(dtype, scale, zp).decomposed(true), &shape, &w);
                // A float64 per-tensor scale: f32(scale) normally, f32(1.0 / scale) decomposed.
                let mut pt64 = WeightQParams::per_tensor(dtype, scale, zp);
                pt64.scale = QParamTensor { shape: vec![], data: QParamData::F64(vec![scale as f64 * (1.0 + 1e-9)]) };
                check_fakequant(&pt64, &shape, &w);
                check_fakequant(&pt64.clone().decomposed(true), &shape, &w);
                for axis in 0..3 {
                    let ch = shape[axis];
                    let scales: Vec<f32> = (0..ch).map(|c| scale * (1.0 + c as f32 * 0.37)).collect();
                    let zps: Vec<i64> = (0..ch).map(|c| (lo + 3 * c as i64).min(hi)).collect();
                    let pc = WeightQParams::per_channel(dtype, scales.clone(), zps.clone(), axis);
                    check_fakequant(&pc, &shape, &w);
                    check_fakequant(&pc.clone().decomposed(true), &shape, &w);
                    check_fakequant(&pc.clone().decomposed(true).with_quant_range(lo + 1, hi - 1), &shape, &w);
                    // float64 scales: per-channel dequant in f64 (§4.2), decomposed f64 arithmetic.
                    let mut pc64 = pc.clone();
                    pc64.scale = QParamTensor::from_f64(scales.iter().map(|&s| s as f64 * (1.0 + 1e-12)).collect());
                    check_fakequant(&pc64, &shape, &w);
                    check_fakequant(&pc64.clone().decomposed(true), &shape, &w);
                    if dtype != QuantDType::QInt32 {
                        let fzp: Vec<f32> = (0..ch).map(|c| c as f32 * 1.25 + 0.5).collect();
                        let pf = WeightQParams::per_channel_float(dtype, scales.clone(), fzp, axis);
                        check_fakequant(&pf, &shape, &w);
                        check_fakequant(&pf.clone().decomposed(true), &shape, &w);
                    }
                }
            }
        }
        // quint4x2 (float zero points only), float16, identity.
        let w = tricky_weights(&mut rng, 60, 0.1);
        check_fakequant(
            &WeightQParams::per_channel_float(QuantDType::QUInt4x2, vec![0.1; 4], vec![0.5; 4], 0),
            &shape,
            &w,
        );
        check_fakequant(&WeightQParams::float16(), &shape, &w);
        check_fakequant(&WeightQParams::none(), &shape, &w);
    }

    #[test]
    fn fakequant_fast_path_equals_the_general_path_at_the_edges() {
        let xs = [
            0.0f32,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            -f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            0.5,
            -0.5,
            2.5,
            127.5,
            -128.5,
            1e10,
        ];
        let scales = [0.0f32, 1e-45, f32::MIN_POSITIVE, 1e-3, 0.5, 1.0, 3e38];
        let mut seen_fast = 0;
        for dtype in [QuantDType::QInt8, QuantDType::QUInt8, QuantDType::QInt32] {
            let (lo, hi) = dtype.range().unwrap();
            for &s in &scales {
                for zp in [lo, 0.max(lo), hi, (lo + hi) / 2] {
                    let qps = [
                        WeightQParams::per_tensor(dtype, s, zp),
                        WeightQParams::per_channel(dtype, vec![s, s * 0.75], vec![zp, zp], 0),
                    ];
                    for qp in qps {
                        let a = fakequant_args(&qp, &[2, 1]).unwrap();
                        for &x in &xs {
                            for i in 0..2u64 {
                                if let Some((qf, vf)) = kernel_elem_fast(&a, i, x) {
                                    seen_fast += 1;
                                    let (q, v) = kernel_elem(&a, i, x);
                                    assert_eq!((qf, vf.to_bits()), (q, v.to_bits()), "{qp:?} x = {x:e}");
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(seen_fast > 1000, "{seen_fast}");
    }

    /// The vector walk of `qc_fq_fast_entry` (cuda/fakequant.cu), transcribed: every block,
    /// thread and step, with the channel tracked by addition. Returns how often each vector was
    /// visited and whether the tracked (channel, position) was right at every visit.
    fn emulate_fast_walk(items: u32, inner4: u32, channels: u32, grid: u32, bd: u32) -> (Vec<u32>, bool) {
        let mut seen = vec![0u32; items as usize];
        let mut right = true;
        let chunk = FAKEQUANT_CHUNK as u32 * bd;
        let one_wrap = inner4 >= bd;
        for block in 0..grid {
            for tid in 0..bd {
                let mut base = block * chunk;
                while base < items {
                    let end = if items - base > chunk { base + chunk } else { items };
                    let mut v = base + tid;
                    if v < end {
                        let mut q = v / inner4;
                        let mut rem = v - q * inner4;
                        let mut c = q % channels;
                        'outer: while v < end {
                            for u in 0..4 {
                                let vu = v + u * bd;
                                if vu >= end {
                                    break 'outer;
                                }
                                seen[vu as usize] += 1;
                                right &= c == (vu / inner4) % channels && rem == vu % inner4;
                                if one_wrap {
                                    rem += bd;
                                    if rem >= inner4 {
                                        rem -= inner4;
                                        c = if c + 1 == channels { 0 } else { c + 1 };
                                    }
                                } else {
                                    let nv = vu + bd;
                                    q = nv / inner4;
                                    rem = nv - q * inner4;
                                    c = q % channels;
                                }
                            }
                            v += 4 * bd;
                        }
                    }
                    base += grid * chunk;
                }
            }
        }
        (seen, right)
    }

    #[test]
    fn fakequant_fast_entry_walk_and_selection() {
        // (items = numel/4, inner/4, channels, outer repeats): per channel along axis 0 (short
        // and long runs), along an inner axis (several outer repeats), per tensor; grids smaller
        // than the work and block sizes on both sides of inner/4.
        for (items, inner4, channels, outer) in
            [(2048u32 * 9, 9u32, 2048u32, 1u32), (4 * 36 * 8, 36, 8, 4), (5000, 5000, 1, 1), (3 * 300 * 10, 300, 3, 10)]
        {
            assert_eq!(items, inner4 * channels * outer);
            for (grid, bd) in [(3u32, 256u32), (1, 64), (40, 32), (7, 1024)] {
                let (seen, right) = emulate_fast_walk(items, inner4, channels, grid, bd);
                assert!(seen.iter().all(|&n| n == 1), "{items} {inner4} {channels}: every vector once");
                assert!(right, "{items} {inner4} {channels} grid {grid} block {bd}: tracked channel");
            }
        }
        // Selection: the integer modes with f32-exact scales only.
        let w = Tensor::from_vec(vec![0.5f32; 8 * 4 * 3 * 3], &[8, 4, 3, 3]).unwrap();
        let pc = WeightQParams::per_channel(QuantDType::QInt8, vec![0.01; 8], vec![0; 8], 0);
        assert!(fakequant_fast_ok(&fakequant_args(&pc, w.shape()).unwrap()));
        let pt = WeightQParams::per_tensor(QuantDType::QUInt8, 0.02, 128);
        assert!(fakequant_fast_ok(&fakequant_args(&pt, w.shape()).unwrap()));
        assert!(!fakequant_fast_ok(&fakequant_args(&pt, &[7, 5, 3]).unwrap()), "numel % 4");
        let mut f64s = pc.clone();
        f64s.scale = QParamTensor::from_f64(vec![0.1; 8]); // 0.1 is not a float32
        assert!(!fakequant_fast_ok(&fakequant_args(&f64s, w.shape()).unwrap()));
        let q32 = WeightQParams::per_tensor(QuantDType::QInt32, 0.01, 0);
        assert!(!fakequant_fast_ok(&fakequant_args(&q32, w.shape()).unwrap()), "qint32 range");
        let fzp = WeightQParams::per_channel_float(QuantDType::QUInt8, vec![0.01; 8], vec![1.5; 8], 0);
        assert!(!fakequant_fast_ok(&fakequant_args(&fzp, w.shape()).unwrap()), "float zero points");
        let inner3 = WeightQParams::per_channel(QuantDType::QInt8, vec![0.01; 3], vec![0; 3], 2);
        assert!(!fakequant_fast_ok(&fakequant_args(&inner3, w.shape()).unwrap()), "inner 3");
    }

    #[test]
    #[allow(clippy::excessive_precision)] // the golden values as docs/numerics.md prints them
    fn fakequant_golden_vectors_of_semantics_md() {
        // §10b: reciprocal vs division, quint8 → 128.
        let x = f32::from_bits(0x3e8c41db);
        let qp = WeightQParams::per_tensor(QuantDType::QUInt8, f32::from_bits(0x3b0cceaa), 0);
        let a = fakequant_args(&qp, &[1]).unwrap();
        assert_eq!(kernel_elem(&a, 0, x), (128, f32::from_bits(0x3e8cceaa)));
        // Ties, integer zp 1: [0.5,1.5,2.5,-0.5,-1.5] → [1,3,3,1,0].
        let a = fakequant_args(&WeightQParams::per_tensor(QuantDType::QUInt8, 1.0, 1), &[5]).unwrap();
        let q: Vec<i64> =
            [0.5f32, 1.5, 2.5, -0.5, -1.5].iter().enumerate().map(|(i, &x)| kernel_elem(&a, i as u64, x).0).collect();
        assert_eq!(q, [1, 3, 3, 1, 0]);
        // Two roundings with a float zero point: 136, not the FMA's 137.
        let qp = WeightQParams::per_channel_float(
            QuantDType::QUInt8,
            vec![f32::from_bits(0x3b526ae8)],
            vec![f32::from_bits(0x426c548a)],
            0,
        );
        let a = fakequant_args(&qp, &[1]).unwrap();
        assert_eq!(kernel_elem(&a, 0, f32::from_bits(0x3e7e87fb)), (136, 0.24696020781993866));
        // Scale 0 per tensor: NaN code for x = 0, signed zeros.
        check_fakequant(&WeightQParams::per_tensor(QuantDType::QUInt8, 0.0, 3), &[4], &[0.0, 1.0, -1.0, 0.5]);
        check_fakequant(&WeightQParams::per_tensor(QuantDType::QInt32, 0.0, 3), &[4], &[0.0, 1.0, -1.0, 0.5]);
        check_fakequant(
            &WeightQParams::per_channel(QuantDType::QInt8, vec![0.0, 1.0], vec![1, 0], 0),
            &[2, 2],
            &[0.0, 1.0, -1.0, 0.5],
        );
        // qint32 float add above 2^24.
        let a = fakequant_args(&WeightQParams::per_tensor(QuantDType::QInt32, 1.0, 3), &[1]).unwrap();
        assert_eq!(kernel_elem(&a, 0, 16777216.0).0, 16777220);
    }

    #[test]
    fn fakequant_args_layout_and_launch() {
        let qp = WeightQParams::per_channel(QuantDType::QInt8, vec![0.1, 0.2, 0.3], vec![0, 1, 2], 1);
        let a = fakequant_args(&qp, &[2, 3, 4, 5]).unwrap();
        assert_eq!((a.params.numel, a.params.channels, a.params.inner), (120, 3, 20));
        assert_eq!(a.params.mode, QC_FQ_INT_PER_CHANNEL as i32);
        assert_eq!((a.params.qmin, a.params.qmax), (-128, 127));
        assert_eq!(a.zero_points_i64, [0, 1, 2]);
        assert!(a.zero_points_f32.is_empty());
        let l = fakequant_launch(&a.params).unwrap().unwrap();
        assert_eq!(l.grid, (1, 1, 1));
        assert_eq!(l.block, (256, 1, 1));
        let mut big = a.params;
        big.numel = 3 * 20 * (1 << 30);
        assert_eq!(fakequant_launch(&big).unwrap().unwrap().grid.0 as u64, MAX_GRID_STRIDE_BLOCKS);
        let mut broken = a.params;
        broken.inner = 7;
        assert!(fakequant_launch(&broken).is_err());
        broken = a.params;
        broken.mode = 99;
        assert!(fakequant_launch(&broken).is_err());
        broken = a.params;
        broken.numel = 0;
        assert_eq!(fakequant_launch(&broken).unwrap(), None);
        // Validation is the CPU path's.
        let bad = WeightQParams::per_channel(QuantDType::QInt8, vec![0.1, 0.2], vec![0, 1], 1);
        assert!(matches!(fakequant_args(&bad, &[2, 3]), Err(Error::ChannelMismatch { .. })));
        let mut none = WeightQParams::none();
        none.qscheme = QScheme::None;
        assert_eq!(fakequant_args(&none, &[3]).unwrap().params.mode, QC_FQ_IDENTITY as i32);
    }

    // ---- a transcription of the convolution kernels' index arithmetic --------------------------

    struct Tap {
        ok: bool,
        off: i64,
    }

    fn source_index(mode: i32, i: i64, len: i64) -> i64 {
        let j = match mode as u32 {
            QC_PAD_REFLECT => {
                if i < 0 {
                    -i
                } else if i >= len {
                    2 * (len - 1) - i
                } else {
                    i
                }
            }
            QC_PAD_REPLICATE => i.clamp(0, (len - 1).max(0)),
            QC_PAD_CIRCULAR => {
                if i < 0 {
                    i + len
                } else if i >= len {
                    i - len
                } else {
                    i
                }
            }
            _ => i,
        };
        if (0..len).contains(&j) {
            j
        } else {
            -1
        }
    }

    fn phase_of(p: &QcConvParams, mut phase: i32) -> [i64; 3] {
        let r2 = phase % p.phases[2];
        phase /= p.phases[2];
        [(phase / p.phases[1]) as i64, (phase % p.phases[1]) as i64, r2 as i64]
    }

    /// `qc_decode_col`: (b, q, o).
    fn decode_col(p: &QcConvParams, r: [i64; 3], n: i64) -> (i64, [i64; 3], [i64; 3]) {
        let b = n / p.sub_spatial;
        let mut s = n - b * p.sub_spatial;
        let q2 = s % p.sub_size[2] as i64;
        s /= p.sub_size[2] as i64;
        let q = [s / p.sub_size[1] as i64, s % p.sub_size[1] as i64, q2];
        let o = [0, 1, 2].map(|d| r[d] + q[d] * p.phases[d] as i64);
        (b, q, o)
    }

    /// `QcTapSet` / `qc_tap_set`: (first, step, count) per dim and the total.
    struct TapSet {
        first: [i64; 3],
        step: [i64; 3],
        count: [i64; 3],
        total: i64,
    }

    #[allow(clippy::needless_range_loop)] // mirrors the CUDA loop
    fn tap_set(p: &QcConvParams, r: [i64; 3]) -> TapSet {
        let mut s = TapSet { first: [0; 3], step: [1; 3], count: [0; 3], total: 0 };
        for d in 0..3 {
            s.count[d] = p.kernel[d] as i64;
            if p.transposed != 0 {
                let (mut first, mut second) = (-1i64, -1i64);
                for j in 0..p.kernel[d] as i64 {
                    if (r[d] + p.pad[d] as i64 - j * p.dilation[d] as i64) % p.stride[d] as i64 == 0 {
                        if first < 0 {
                            first = j;
                        } else {
                            second = j;
                            break;
                        }
                    }
                }
                s.first[d] = first.max(0);
                s.step[d] = if second < 0 { 1 } else { second - first };
                s.count[d] = if first < 0 {
                    0
                } else if second < 0 {
                    1
                } else {
                    (p.kernel[d] as i64 - 1 - first) / (second - first) + 1
                };
            }
        }
        s.total = s.count.iter().product();
        s
    }

    /// `qc_active_tap`: active index → kernel offsets.
    fn active_tap(s: &TapSet, a: i64) -> [i64; 3] {
        let a2 = a % s.count[2];
        let a01 = a / s.count[2];
        [
            s.first[0] + (a01 / s.count[1]) * s.step[0],
            s.first[1] + (a01 % s.count[1]) * s.step[1],
            s.first[2] + a2 * s.step[2],
        ]
    }

    /// The set of taps that contribute to phase r, by brute force (every tap, every dim).
    fn active_taps_brute_force(p: &QcConvParams, r: [i64; 3]) -> Vec<[i64; 3]> {
        let mut v = Vec::new();
        for j0 in 0..p.kernel[0] as i64 {
            for j1 in 0..p.kernel[1] as i64 {
                for j2 in 0..p.kernel[2] as i64 {
                    let j = [j0, j1, j2];
                    if p.transposed == 0
                        || (0..3)
                            .all(|d| (r[d] + p.pad[d] as i64 - j[d] * p.dilation[d] as i64) % p.stride[d] as i64 == 0)
                    {
                        v.push(j);
                    }
                }
            }
        }
        v
    }

    /// `qc_tap_pos` for a column with (ok, base).
    fn tap_pos(p: &QcConvParams, r: [i64; 3], ok: bool, base: [i64; 3], j: [i64; 3]) -> Tap {
        let mut idx = [0i64; 3];
        let mut ok = ok;
        for d in 0..3 {
            let len = p.in_size[d] as i64;
            idx[d] = if p.transposed != 0 {
                let i = base[d] + (r[d] + p.pad[d] as i64 - j[d] * p.dilation[d] as i64) / p.stride[d] as i64;
                if i >= 0 && i < len {
                    i
                } else {
                    -1
                }
            } else {
                source_index(p.pad_mode, base[d] + j[d] * p.dilation[d] as i64, len)
            };
            ok = ok && idx[d] >= 0;
        }
        let off = if ok { (idx[0] * p.in_size[1] as i64 + idx[1]) * p.in_size[2] as i64 + idx[2] } else { 0 };
        Tap { ok, off }
    }

    /// Runs `qc_igemm` block by block (the smem tiles collapsed: same steps, same masks).
    /// Returns the output and how often each element was written.
    fn emulate_igemm(p: &QcConvParams, tile: ConvTile, x: &[f32], w: &[f32], bias: &[f32]) -> (Vec<f64>, Vec<u32>) {
        let out_len = (p.batch as i64 * p.out_channels as i64 * p.out_spatial) as usize;
        let mut y = vec![f64::NAN; out_len];
        let mut writes = vec![0u32; out_len];
        let Some(dims) = conv_launch(p, ConvAlgo::Tiled(tile)).unwrap() else {
            return (y, writes);
        };
        let (bm, bn, bk) = (tile.bm() as i64, tile.bn() as i64, tile.bk() as i32);
        for gz in 0..dims.grid.2 as i64 {
            for by in 0..dims.grid.1 as i64 {
                for bx in 0..dims.grid.0 as i64 {
                    let n_tiles = (p.n_cols + bn - 1) / bn;
                    let phase = bx / n_tiles;
                    let n0 = (bx - phase * n_tiles) * bn;
                    let m0 = by * bm;
                    let g = gz;
                    let r = phase_of(p, phase as i32);
                    // B columns.
                    let cols: Vec<(bool, i64, [i64; 3])> = (0..bn)
                        .map(|nn| {
                            let n = n0 + nn;
                            let mut ok = n < p.n_cols;
                            let (b, q, o) = if ok { decode_col(p, r, n) } else { (0, [0; 3], [0; 3]) };
                            let mut base = [0i64; 3];
                            for d in 0..3 {
                                ok = ok && o[d] < p.out_size[d] as i64;
                                base[d] =
                                    if p.transposed != 0 { q[d] } else { o[d] * p.stride[d] as i64 - p.pad[d] as i64 };
                            }
                            (ok, (b * p.in_channels as i64 + g * p.cg as i64) * p.in_spatial, base)
                        })
                        .collect();
                    let mut acc = vec![0f64; (bm * bn) as usize];
                    let taps = tap_set(p, r);
                    // The arithmetic progression enumerates exactly the contributing taps.
                    let listed: Vec<[i64; 3]> = (0..taps.total).map(|a| active_tap(&taps, a)).collect();
                    assert_eq!(listed, active_taps_brute_force(p, r), "tap set of phase {r:?}");
                    let mut a_idx = 0;
                    let mut c0 = 0;
                    while a_idx < taps.total {
                        let j = active_tap(&taps, a_idx);
                        let tap = (j[0] * p.kernel[1] as i64 + j[1]) * p.kernel[2] as i64 + j[2];
                        let pos: Vec<Tap> = cols.iter().map(|c| tap_pos(p, r, c.0, c.2, j)).collect();
                        for kk in 0..bk {
                            let c = c0 + kk;
                            // Rows m0 + m >= Kg and columns that are not ok are computed by the
                            // kernel but never stored; skipping them keeps this test fast.
                            for m in 0..bm.min(p.kg as i64 - m0) {
                                let mg = m0 + m;
                                let a = if mg < p.kg as i64 && c < p.cg {
                                    w[(g * p.w_stride_group
                                        + mg * p.w_stride_m
                                        + c as i64 * p.w_stride_c
                                        + tap * p.w_stride_tap) as usize]
                                } else {
                                    0.0
                                };
                                for nn in (0..bn as usize).filter(|&nn| cols[nn].0) {
                                    let b = if pos[nn].ok && c < p.cg {
                                        x[(cols[nn].1 + c as i64 * p.in_spatial + pos[nn].off) as usize]
                                    } else {
                                        0.0
                                    };
                                    acc[m as usize * bn as usize + nn] += a as f64 * b as f64;
                                }
                            }
                        }
                        c0 += bk;
                        if c0 >= p.cg {
                            c0 = 0;
                            a_idx += 1;
                        }
                    }
                    // Epilogue.
                    for nn in 0..bn {
                        let n = n0 + nn;
                        if n >= p.n_cols {
                            continue;
                        }
                        let (b, _, o) = decode_col(p, r, n);
                        if (0..3).any(|d| o[d] >= p.out_size[d] as i64) {
                            continue;
                        }
                        let y_col = b * p.out_channels as i64 * p.out_spatial
                            + (o[0] * p.out_size[1] as i64 + o[1]) * p.out_size[2] as i64
                            + o[2];
                        for m in 0..bm {
                            let mg = m0 + m;
                            if mg >= p.kg as i64 {
                                continue;
                            }
                            let k = g * p.kg as i64 + mg;
                            let bk_ = if p.has_bias != 0 { bias[k as usize] as f64 } else { 0.0 };
                            let at = (y_col + k * p.out_spatial) as usize;
                            y[at] = acc[(m * bn + nn) as usize] + bk_;
                            writes[at] += 1;
                        }
                    }
                }
            }
        }
        (y, writes)
    }

    /// `qc_direct_index`.
    fn direct_index(p: &QcConvParams, d: usize, o: i64, j: i64) -> i64 {
        let len = p.in_size[d] as i64;
        if p.transposed != 0 {
            let t = o + p.pad[d] as i64 - j * p.dilation[d] as i64;
            if t < 0 || t % p.stride[d] as i64 != 0 {
                return -1;
            }
            let i = t / p.stride[d] as i64;
            return if i < len { i } else { -1 };
        }
        source_index(p.pad_mode, o * p.stride[d] as i64 + j * p.dilation[d] as i64 - p.pad[d] as i64, len)
    }

    /// Runs `qc_conv_direct` thread by thread (grid-stride loop included).
    fn emulate_direct(p: &QcConvParams, x: &[f32], w: &[f32], bias: &[f32]) -> (Vec<f64>, Vec<u32>) {
        let out_len = (p.batch as i64 * p.out_channels as i64 * p.out_spatial) as usize;
        let mut y = vec![f64::NAN; out_len];
        let mut writes = vec![0u32; out_len];
        let Some(dims) = conv_launch(p, ConvAlgo::Direct).unwrap() else {
            return (y, writes);
        };
        let qw = DIRECT_OUTPUTS_PER_THREAD as i64;
        let wq = (p.out_size[2] as i64 + qw - 1) / qw;
        let total = p.batch as i64 * p.out_channels as i64 * p.out_size[0] as i64 * p.out_size[1] as i64 * wq;
        let threads = dims.threads() as i64;
        for thread in 0..threads {
            let mut idx = thread;
            while idx < total {
                let mut t = idx;
                let owq = t % wq;
                t /= wq;
                let o1 = t % p.out_size[1] as i64;
                t /= p.out_size[1] as i64;
                let o0 = t % p.out_size[0] as i64;
                t /= p.out_size[0] as i64;
                let k = t % p.out_channels as i64;
                let b = t / p.out_channels as i64;
                let g = k / p.kg as i64;
                let m = k - g * p.kg as i64;
                let mut acc = [0f64; 4];
                for c in 0..p.cg as i64 {
                    let x_base = (b * p.in_channels as i64 + g * p.cg as i64 + c) * p.in_spatial;
                    let w_base = g * p.w_stride_group + m * p.w_stride_m + c * p.w_stride_c;
                    for j0 in 0..p.kernel[0] as i64 {
                        let i0 = direct_index(p, 0, o0, j0);
                        if i0 < 0 {
                            continue;
                        }
                        for j1 in 0..p.kernel[1] as i64 {
                            let i1 = direct_index(p, 1, o1, j1);
                            if i1 < 0 {
                                continue;
                            }
                            let row = x_base + (i0 * p.in_size[1] as i64 + i1) * p.in_size[2] as i64;
                            for j2 in 0..p.kernel[2] as i64 {
                                let tap = (j0 * p.kernel[1] as i64 + j1) * p.kernel[2] as i64 + j2;
                                let wv = w[(w_base + tap * p.w_stride_tap) as usize] as f64;
                                for (q, a) in acc.iter_mut().enumerate() {
                                    let ow = owq * qw + q as i64;
                                    if ow >= p.out_size[2] as i64 {
                                        break;
                                    }
                                    let i2 = direct_index(p, 2, ow, j2);
                                    if i2 >= 0 {
                                        *a += wv * x[(row + i2) as usize] as f64;
                                    }
                                }
                            }
                        }
                    }
                }
                let bk = if p.has_bias != 0 { bias[k as usize] as f64 } else { 0.0 };
                let y_base = (((b * p.out_channels as i64 + k) * p.out_size[0] as i64 + o0) * p.out_size[1] as i64
                    + o1)
                    * p.out_size[2] as i64;
                for (q, a) in acc.iter().enumerate() {
                    let ow = owq * qw + q as i64;
                    if ow < p.out_size[2] as i64 {
                        y[(y_base + ow) as usize] = a + bk;
                        writes[(y_base + ow) as usize] += 1;
                    }
                }
                idx += threads;
            }
        }
        (y, writes)
    }

    /// A random small problem: forward with any padding mode, or transposed with output padding.
    fn random_problem(rng: &mut Rng, transposed: bool) -> ConvProblem {
        let dims = rng.range(1, 3);
        let groups = [1, 1, 2, 3][rng.range(0, 3)];
        let cg = [1, 2, 3, 5, 9, 17][rng.range(0, 5)];
        let kg = [1, 2, 4, 33, 70][rng.range(0, 4)];
        let mut p = ConvProblem {
            transposed,
            batch: rng.range(1, 2),
            in_channels: cg * groups,
            out_channels: kg * groups,
            groups,
            in_size: [1; 3],
            out_size: [1; 3],
            kernel: [1; 3],
            stride: [1; 3],
            pad: [0; 3],
            dilation: [1; 3],
            pad_mode: PaddingMode::Zeros,
        };
        if !transposed {
            p.pad_mode = [PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular]
                [rng.range(0, 3)];
        }
        for d in 3 - dims..3 {
            let len = rng.range(2, if dims == 3 { 5 } else { 9 });
            let k = rng.range(1, 3);
            let s = rng.range(1, 3);
            let dil = rng.range(1, 2);
            p.in_size[d] = len;
            p.kernel[d] = k;
            p.stride[d] = s;
            p.dilation[d] = dil;
            if transposed {
                let pad = rng.range(0, (dil * (k - 1)).min(2));
                let out_pad = rng.range(0, s.max(dil) - 1);
                p.pad[d] = pad;
                p.out_size[d] = (len - 1) * s + dil * (k - 1) + 1 + out_pad - 2 * pad;
            } else {
                let max_pad = match p.pad_mode {
                    PaddingMode::Reflect => len - 1,
                    _ => len.min(2),
                };
                let (lo, hi) = (rng.range(0, max_pad.min(2)), rng.range(0, max_pad.min(2)));
                p.pad[d] = lo;
                let span = dil * (k - 1) + 1;
                if len + lo + hi < span {
                    p.kernel[d] = 1;
                }
                let span = dil * (p.kernel[d] - 1) + 1;
                p.out_size[d] = (len + lo + hi - span) / s + 1;
            }
        }
        p
    }

    fn check_close(what: &str, p: &ConvProblem, got: &[f64], writes: &[u32], want: &[f64]) {
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert_eq!(writes[i], 1, "{what}: output {i} written {} times for {p:?}", writes[i]);
            assert!((g - w).abs() <= 1e-9 * (1.0 + w.abs()), "{what}: output {i}: {g} vs {w} for {p:?}");
        }
    }

    #[test]
    fn conv_kernels_index_arithmetic_matches_the_naive_oracle() {
        let mut rng = Rng(0x0ddc_0ffe_e123_4567);
        for case in 0..160 {
            let transposed = case % 2 == 1;
            let prob = random_problem(&mut rng, transposed);
            let has_bias = case % 3 != 0;
            let params = conv_params(&prob, has_bias).unwrap();
            let x: Vec<f32> = (0..prob.input_len()).map(|_| rng.f32()).collect();
            let w: Vec<f32> = (0..prob.weight_len()).map(|_| rng.f32()).collect();
            let bias: Vec<f32> = (0..prob.out_channels).map(|_| rng.f32()).collect();
            let want = crate::oracle::conv_naive(&prob, &w, has_bias.then_some(&bias[..]), &x);
            for tile in ConvTile::ALL {
                let (got, writes) = emulate_igemm(&params, tile, &x, &w, &bias);
                check_close(tile.suffix(), &prob, &got, &writes, &want);
            }
            let (got, writes) = emulate_direct(&params, &x, &w, &bias);
            check_close("direct", &prob, &got, &writes, &want);
        }
    }

    fn problem_2d(
        transposed: bool,
        c: usize,
        k: usize,
        groups: usize,
        hw: usize,
        kernel: usize,
        stride: usize,
    ) -> ConvProblem {
        let out = if transposed { (hw - 1) * stride + kernel } else { (hw - kernel) / stride + 1 };
        ConvProblem {
            transposed,
            batch: 2,
            in_channels: c,
            out_channels: k,
            groups,
            in_size: [1, hw, hw],
            out_size: [1, out, out],
            kernel: [1, kernel, kernel],
            stride: [1, stride, stride],
            pad: [0; 3],
            dilation: [1; 3],
            pad_mode: PaddingMode::Zeros,
        }
    }

    fn geo(out_channels: usize, cg: usize, cg_pad: usize, groups: usize, taps: usize) -> WeightGeometry {
        WeightGeometry { out_channels, cg, cg_pad, taps, groups }
    }

    #[test]
    fn dequant_params_fields_launch_and_errors() {
        let p = dequant_params(geo(12, 3, 3, 2, 9), QC_DQ_TRANSPOSED, true).unwrap();
        assert_eq!((p.numel, p.row, p.out_channels, p.cg, p.kg, p.taps), (12 * 27, 32, 12, 3, 6, 9));
        assert_eq!((p.layout, p.codes_signed, p.codes, p.dst), (QC_DQ_TRANSPOSED as i32, 1, 0, 0));
        let d = dequant_launch(&p).unwrap().unwrap();
        assert_eq!((d.grid, d.block), ((2, 1, 1), (256, 1, 1)));
        assert!(dequant_launch(&dequant_params(geo(0, 3, 3, 1, 9), QC_DQ_FORWARD, false).unwrap()).unwrap().is_none());
        let dw = dequant_params(geo(16, 1, 1, 16, 9), QC_DQ_DEPTHWISE, false).unwrap();
        assert_eq!((dw.row, dw.kg, dw.codes_signed), (16, 1, 0));
        assert!(dequant_params(geo(16, 2, 2, 8, 9), QC_DQ_DEPTHWISE, false).is_err());
        assert!(dequant_params(geo(12, 3, 3, 5, 9), QC_DQ_FORWARD, false).is_err());
        assert!(dequant_params(geo(12, 3, 3, 0, 9), QC_DQ_FORWARD, false).is_err());
        assert!(dequant_params(geo(12, 3, 3, 1, 9), 7, false).is_err());
        // Padded channel slots: rows of taps * cg_pad codes.
        let padded = dequant_params(geo(16, 3, 8, 1, 49), QC_DQ_FORWARD, true).unwrap();
        assert_eq!((padded.row, padded.cg, padded.cg_pad), (392, 3, 8));
        assert!(dequant_params(geo(16, 3, 2, 1, 49), QC_DQ_FORWARD, true).is_err());
        assert!(dequant_params(geo(1 << 40, 1 << 20, 1 << 20, 1, 1 << 10), QC_DQ_FORWARD, false).is_err());
    }

    /// `qc_pad_channels` of cuda/conv_tc.cu, transcribed (one pixel per iteration).
    fn emulate_pad_channels(p: &QcPadChannelsParams, src: &[u32]) -> Vec<u32> {
        let (groups, cg, cgp) = (p.groups as i64, p.cg as i64, p.cg_pad as i64);
        let (cin, cout) = (groups * cg, groups * cgp);
        let mut dst = vec![u32::MAX; (p.batch * p.pixels * cout) as usize];
        for px in 0..p.batch * p.pixels {
            let b = px / p.pixels;
            let base = if p.src_nhwc != 0 { px * cin } else { b * cin * p.pixels + (px - b * p.pixels) };
            let step = if p.src_nhwc != 0 { 1 } else { p.pixels };
            let mut d = px * cout;
            let mut ch = 0;
            for _g in 0..groups {
                for c in 0..cgp {
                    let mut v = 0;
                    if c < cg {
                        v = src[(base + ch * step) as usize];
                        ch += 1;
                    }
                    dst[d as usize] = v;
                    d += 1;
                }
            }
        }
        dst
    }

    #[test]
    fn pad_channels_params_and_kernel_transcription() {
        assert_eq!(tc_padded_cg(false, 3, 64), Some(8));
        assert_eq!(tc_padded_cg(false, 12, 16), Some(16));
        assert_eq!(tc_padded_cg(false, 16, 64), None); // already a multiple of 8
        assert_eq!(tc_padded_cg(false, 1, 64), None); // 8x the work: element-wise loader
        assert_eq!(tc_padded_cg(false, 3, 8), None); // few output channels: CUDA cores
        assert_eq!(tc_padded_cg(true, 3, 64), None); // transposed
                                                     // (batch, pixels, groups, cg, cg_pad) with NCHW and channels-last sources.
        for (n, px, groups, cg, cgp) in [(2usize, 5usize, 1usize, 3usize, 8usize), (1, 7, 2, 12, 16), (3, 1, 3, 5, 8)] {
            for nhwc in [false, true] {
                let p = pad_channels_params(n, px, groups, cg, cgp, nhwc).unwrap();
                let d = pad_channels_launch(&p).unwrap().unwrap();
                assert!(d.grid.0 as u64 * 256 >= (n * px) as u64);
                // x(b, channel, s) = b*1000 + channel*10 + s, laid out as the source says.
                let cin = groups * cg;
                let mut src = vec![0u32; n * px * cin];
                for b in 0..n {
                    for ch in 0..cin {
                        for s in 0..px {
                            let i = if nhwc { (b * px + s) * cin + ch } else { (b * cin + ch) * px + s };
                            src[i] = (b * 1000 + ch * 10 + s) as u32 + 1;
                        }
                    }
                }
                let dst = emulate_pad_channels(&p, &src);
                for b in 0..n {
                    for s in 0..px {
                        for g in 0..groups {
                            for c in 0..cgp {
                                let got = dst[((b * px + s) * groups + g) * cgp + c];
                                let want = if c < cg { (b * 1000 + (g * cg + c) * 10 + s) as u32 + 1 } else { 0 };
                                assert_eq!(got, want, "b {b} s {s} g {g} c {c} nhwc {nhwc}");
                            }
                        }
                    }
                }
            }
        }
        assert!(pad_channels_params(1, 1, 1, 9, 8, false).is_err());
        assert!(pad_channels_params(1, 1, 0, 3, 8, false).is_err());
        assert!(pad_channels_launch(&pad_channels_params(0, 5, 1, 3, 8, true).unwrap()).unwrap().is_none());
    }

    #[test]
    fn conv_params_fields_and_errors() {
        let p = conv_params(&problem_2d(false, 8, 16, 2, 10, 3, 2), true).unwrap();
        assert_eq!((p.cg, p.kg, p.taps, p.num_phases), (4, 8, 9, 1));
        assert_eq!((p.w_stride_group, p.w_stride_m, p.w_stride_c, p.w_stride_tap), (8 * 4 * 9, 36, 9, 1));
        assert_eq!((p.in_spatial, p.out_spatial, p.n_cols), (100, 16, 32));
        assert_eq!(p.phases, [1, 1, 1]);
        assert_eq!(p.has_bias, 1);
        check_conv_params(&p).unwrap();
        let t = conv_params(&problem_2d(true, 8, 16, 2, 5, 3, 2), false).unwrap();
        assert_eq!(t.out_size, [1, 11, 11]);
        assert_eq!((t.phases, t.sub_size, t.num_phases), ([1, 2, 2], [1, 6, 6], 4));
        assert_eq!((t.w_stride_group, t.w_stride_m, t.w_stride_c), (4 * 8 * 9, 9, 8 * 9));
        assert_eq!(t.n_cols, 2 * 36);

        let mut bad = problem_2d(false, 8, 16, 3, 10, 3, 1);
        assert!(matches!(conv_params(&bad, false), Err(Error::InvalidConfig { param: "groups", .. })));
        bad.groups = 0;
        assert!(conv_params(&bad, false).is_err());
        let mut bad = problem_2d(false, 8, 16, 2, 10, 3, 1);
        bad.stride = [1, 0, 1];
        assert!(matches!(conv_params(&bad, false), Err(Error::InvalidConfig { param: "stride", .. })));
        let mut bad = problem_2d(true, 8, 16, 2, 10, 3, 1);
        bad.pad_mode = PaddingMode::Reflect;
        assert!(matches!(conv_params(&bad, false), Err(Error::InvalidConfig { param: "padding_mode", .. })));
        let mut huge = problem_2d(false, 8, 16, 2, 10, 3, 1);
        huge.in_size = [1 << 31, 1, 1];
        assert!(conv_params(&huge, false).is_err());
        huge.in_size = [1 << 30, 1, 1];
        assert!(matches!(conv_params(&huge, false), Err(Error::InvalidConfig { param: "convolution size", .. })));
        huge.in_size = [1 << 20, 1 << 20, 1 << 20];
        assert!(matches!(conv_params(&huge, false), Err(Error::Overflow(_))));

        // Every derived field is re-checked before a launch.
        let mut broken = p;
        broken.n_cols += 1;
        assert!(conv_launch(&broken, ConvAlgo::Direct).is_err());
        broken = p;
        broken.taps = 8;
        assert!(check_conv_params(&broken).is_err());
        broken = p;
        broken.phases = [1, 2, 2];
        assert!(check_conv_params(&broken).is_err());
        broken = t;
        broken.pad_mode = QC_PAD_CIRCULAR as i32;
        assert!(check_conv_params(&broken).is_err());
    }

    #[test]
    fn conv_launch_geometry_and_limits() {
        let p = conv_params(&problem_2d(false, 64, 256, 1, 58, 3, 1), true).unwrap();
        // n_cols = 2 * 56 * 56 = 6272.
        let l = conv_launch(&p, ConvAlgo::Tiled(ConvTile::T128)).unwrap().unwrap();
        assert_eq!(l.grid, (49, 2, 1));
        assert_eq!(l.block, (256, 1, 1));
        let l = conv_launch(&p, ConvAlgo::Tiled(ConvTile::T64)).unwrap().unwrap();
        assert_eq!(l.grid, (98, 4, 1));
        let l = conv_launch(&p, ConvAlgo::Direct).unwrap().unwrap();
        assert_eq!(l.grid, (2 * 256 * 56 * 14 / 256, 1, 1));
        let t = conv_params(&problem_2d(true, 64, 32, 1, 7, 4, 2), false).unwrap();
        let l = conv_launch(&t, ConvAlgo::Tiled(ConvTile::M32)).unwrap().unwrap();
        // out 16x16, 4 phases of 8x8, n_cols = 2 * 64 = 128 -> 1 tile per phase.
        assert_eq!(l.grid, (4, 1, 1));

        // Groups beyond gridDim.z are refused, not silently truncated.
        let mut g = problem_2d(false, 70_000 * 4, 70_000, 70_000, 4, 1, 1);
        g.batch = 1;
        let gp = conv_params(&g, false).unwrap();
        assert!(matches!(conv_launch(&gp, ConvAlgo::Tiled(ConvTile::T64)), Err(Error::Unsupported { .. })));
        assert!(conv_launch(&gp, ConvAlgo::Direct).unwrap().is_some());
        // Empty outputs launch nothing.
        let mut e = problem_2d(false, 4, 4, 1, 5, 3, 1);
        e.batch = 0;
        assert_eq!(conv_launch(&conv_params(&e, false).unwrap(), ConvAlgo::Direct).unwrap(), None);
    }

    #[test]
    fn algorithm_choice() {
        let dw = conv_params(&problem_2d(false, 64, 64, 64, 56, 3, 1), false).unwrap();
        assert_eq!(choose_conv_algo(&dw, 132), ConvAlgo::Direct);
        let narrow = conv_params(&problem_2d(false, 64, 32, 1, 56, 3, 1), false).unwrap();
        assert_eq!(choose_conv_algo(&narrow, 132), ConvAlgo::Tiled(ConvTile::M32));
        let big = conv_params(&problem_2d(false, 256, 256, 1, 114, 3, 1), false).unwrap();
        assert_eq!(choose_conv_algo(&big, 132), ConvAlgo::Tiled(ConvTile::T128));
        let small = conv_params(&problem_2d(false, 256, 256, 1, 9, 3, 1), false).unwrap();
        assert_eq!(choose_conv_algo(&small, 132), ConvAlgo::Tiled(ConvTile::T64));
    }

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
        // Depthwise channels-last geometry and its 32-bit item bound.
        let dw = dw_nhwc_params(&problem_2d(false, 64, 64, 64, 56, 3, 1), true).unwrap();
        assert!(dw_nhwc_supported(&dw));
        let l = conv_launch(&dw, ConvAlgo::DepthwiseNhwc).unwrap().unwrap();
        assert_eq!(l.grid.0 as u64, dw_nhwc_items(&dw).unwrap().div_ceil(256));
        let mut huge = dw;
        huge.batch = 1 << 20;
        huge.n_cols = huge.batch as i64 * huge.sub_spatial;
        assert!(matches!(conv_launch(&huge, ConvAlgo::DepthwiseNhwc), Err(Error::Unsupported { .. })));
        // Transposes: one 32x32 tile per block, batch along z (capped, grid-stride).
        let t = QcTransposeParams { src: 0, dst: 0, batch: 70_000, rows: 33, cols: 64 };
        let l = transpose_launch(&t).unwrap().unwrap();
        assert_eq!(l.grid, (4, 1, 65_535));
        assert_eq!(transpose_launch(&QcTransposeParams { rows: 0, ..t }).unwrap(), None);
        assert!(transpose_launch(&QcTransposeParams { rows: -1, ..t }).is_err());
    }
}
