//! The fast CPU convolution: a tiled implicit GEMM over a weight packed once per module.
//!
//! # Design
//!
//! **Sub-convolutions.** Every problem is first rewritten as a set of *sub-convolutions*, each a
//! dense correlation over a grid of columns `m = (m0, m1, m2)`: output `o_d = m_d·out_step_d + φ_d`
//! reads input `i_d = m_d·in_step_d + off_d(tap)` for the taps of that sub-convolution. A forward
//! convolution is one sub-convolution (`out_step = 1`, `in_step = stride`, `off = j·dilation − pad`,
//! every tap). A transposed convolution (gather form) is split per dimension into its `stride`
//! *phases* (sub-pixel decomposition): the outputs `o = m·stride + φ` only receive the taps `j` with
//! `j·dilation ≡ (φ + pad) (mod stride)`, each reading `i = m + ((φ + pad) − j·dilation)/stride` —
//! a stride-1 correlation with a subset of the taps. Nothing is ever multiplied by the zeros of a
//! dilated input, and every output element is produced by exactly one task (no scatter, no atomics).
//! Input indices outside `[0, L)` are remapped by the padding mode (zeros/reflect/replicate/circular)
//! wherever the input is read, so asymmetric (e.g. `'same'`) padding needs no special case.
//!
//! **Implicit GEMM** (`Kg > 1`). Per (batch `n`, group `g`) and sub-convolution,
//! `Out[Kg, cols] = W[Kg, taps·Cg] × Col[taps·Cg, cols]`. The reduction index is *tap-major*
//! (`r = tap·Cg + c`), so the transposed phases pick their taps out of the one packed weight. The
//! reduction is cut into chunks of at most `KC` rows (whole taps when `Cg < KC`, channel ranges of
//! one tap otherwise). A register-tiled micro-kernel (`mr × NR` `f32` accumulators, `NR` = 16
//! contiguous output positions; `mr` = 8 with AVX-512, else 6, see *Packed weight*) multiplies an
//! `mr`-row weight panel by `NR` columns of `Col`, whose rows come from one of three sources:
//! * *packed*: the task gathers the chunk's `Col` tile for its columns into micro-panels
//!   `[cols/NR][kc][NR]` (contiguous copies for the in-bounds part of each output row, remap at the
//!   edges; any stride, dilation or padding mode) — the general case. Stride-2 rows (e.g. a
//!   stem) are de-interleaved by a per-ISA copy of the gather loop (`Kernel::run_s2`; one
//!   two-register permute per 16 values with AVX-512, masked loads for ragged ends);
//! * *padded input*: when output rows are short (or, with a strided dim 2, when the input rows
//!   one output row reads fit in cache), one padded copy of the input is built per call (remap
//!   baked in), and the kernel reads each row of `B` in place (leading dimension = the padded
//!   plane); no gather at all. With a dim-2 input step `s > 1` (a strided forward convolution,
//!   e.g. a stem) each padded row is stored as `s` sub-rows, one per input phase, so that a tap's
//!   inputs for consecutive outputs are again contiguous. Few channels per tap (a stem's 3) would
//!   make one kernel segment per tap of a few rows; those calls use an *indirect* kernel instead,
//!   which takes one input offset per reduction row (the weights being contiguous). A panel covers `NR` consecutive columns of the padded plane: consecutive output rows
//!   share panels (the few padded columns between them are computed and discarded) when that
//!   wastes less than rounding every row up to `NR` would (e.g. 28-wide rows: 2 of 30 columns
//!   instead of 4 of 32), otherwise every row starts a new panel. Tasks then split the
//!   positions at whole output rows (a cut row would round two runs up to `NR`). Tasks with at
//!   least `PACK_MIN_ROWS` output channels instead make their columns the output positions
//!   themselves (nothing computed twice): a panel inside one output row is still read in place,
//!   and a panel spanning rows is packed from the copy, one masked load per row piece with
//!   AVX-512, then serves every micro-kernel call of the task's channel blocks. The copy's
//!   buffer is kept by the calling thread for its next call (up to 16 MiB), so it is neither
//!   zeroed nor page-faulted per call; with zero padding and the same geometry, the next call
//!   finds its zeros in place and only copies the input rows;
//! * *input*: 1×1 stride-1 unpadded forward convolutions read the input itself (flat positions;
//!   only a ragged last panel is copied).
//!
//! The accumulators of a task's output tile live in a per-task buffer `Ct` (`[Kg block][cols]`)
//! between chunks; after the last chunk it is written to the output with the bias added (fused
//! epilogue). No full im2col matrix exists: a task holds at most one `kc × cols` tile.
//!
//! **Direct path** (`Kg == 1`: depthwise, channel multiplier 1, also transposed). Per output plane
//! and dim-1 phase, a task builds a window of padded input rows `[c][tap0][row][W]` (remap baked
//! in; for a strided forward dim 2, one *decimated* row `x̃[m·stride + off]` per tap instead, so the
//! kernel always reads unit-stride), so that a single tap template `(offset, weight)` serves every
//! output row. One kernel call computes the whole window (all its rows and columns) in tiles of
//! 4 output rows × 16 positions (vectorised along the row; the last column tile of a row of at
//! least 16 is shifted left to end at the row's end, so every store is whole) and stores the
//! tiles with the bias added, straight into the output rows (scattered afterwards only for
//! interleaved transposed phases). With exactly three dim-1 taps on consecutive window rows (the
//! common 3×3 depthwise case), the taps are stacked vertically, `(offset, [w; 3])`, and each input
//! row is loaded once for the three output rows it feeds (6 loads per 12 FMAs instead of 12 per
//! 12). With zero padding, a window's zero borders are left in place for the next window of the
//! same shape (same call, phase, rows), which then only copies the in-bounds parts.
//!
//! **Packed weight.** [`PackedWeight`] stores, per group, `ceil(Kg/mr)` panels laid out
//! `[tap][c][mr]` (zero-padded rows past `Kg`), so the micro-kernel reads `mr` contiguous weights
//! per reduction step; `Kg == 1` weights are stored `[tap][c]` (`mr = 1`) for the direct path.
//! `mr` is 8 when the CPU has AVX-512 and 8-row panels pad `Kg` no more than 6-row ones (every
//! multiple of 8: no wasted rows for 64 or 128 channels, where 6-row panels compute 3% extra),
//! else 6 (the most whose 2-register accumulator rows fit the 16 AVX2 registers).
//!
//! **Micro-kernels and ISA.** The kernels are written once, generically, so that LLVM
//! auto-vectorises them (each row of `NR` accumulators is two AVX registers, all kept in registers);
//! each is instantiated three times: an `avx512f` copy (one 16-lane `zmm` register per accumulator
//! row, weights fed by embedded-broadcast FMAs; on Zen 4 this halves the instructions per FLOP
//! although the FMA throughput is the same; the 8-row GEMM tile is written with intrinsics, as LLVM
//! does not keep an auto-vectorised one in registers), an `avx2,fma` copy (`#[target_feature]`, fused
//! multiply-adds), the best selected at run time with `is_x86_feature_detected!`, and a portable
//! copy (plain multiply + add; fused on aarch64, where NEON always has FMA). The AVX-512 and AVX2
//! copies run the same fused operations in the same order, so their results are bit-identical.
//! Further SIMD kernels plug in as implementations of the private `Kernel` trait.
//!
//! **Parallelism and determinism.** Rayon runs independent tasks, each owning a disjoint set of
//! output-row sub-slices (safe `split_at_mut` partitioning, no shared mutable state): GEMM tasks
//! are (batch × group × `mr`-aligned block of output channels × range of output positions), direct
//! tasks (batch × channel × range of output rows). Scratch buffers are thread-local and reused
//! across tasks and calls. The task grid adapts to the thread count, but the arithmetic of an output
//! element does not: its reduction always runs in the same order, partial sums are stored in `f32`
//! between chunks (exactly as if kept in registers), and the bias is added last. Results are
//! therefore bit-identical for any number of threads (on a given machine: the FMA and the portable
//! kernels round differently).
//!
//! **Safety.** `unsafe` appears in two places. (1) The calls of the `#[target_feature]` kernel
//! copies, sound because their token types can only be constructed after the feature detection
//! succeeds. (2) The raw-pointer loads and stores of the AVX-512 intrinsic kernels (the 8-row GEMM
//! tiles and the panel packing), each preceded by assertions, once per call, that every element
//! they touch is inside its slice (masked loads touch only their enabled lanes). Lengths and
//! geometry are validated up front (checked arithmetic, errors instead of panics), after which
//! every other index stays in bounds by construction (and is still bounds-checked).

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::problem::{ConvProblem, PaddingMode};

/// Rows (output channels) of the micro-kernel tile when the CPU has AVX2 (or less): 6 rows of
/// two `ymm` accumulators each (12 of the 16 registers).
const MR: usize = 6;
/// Rows of the micro-kernel tile with AVX-512: 8 rows of one `zmm` accumulator (8 of 32
/// registers), chosen per weight when it pads `Kg` no more than [`MR`] does (see [`tile_rows`]).
const MR_WIDE: usize = 8;
/// Columns (output positions) of the micro-kernel tile: contiguous, vectorised.
const NR: usize = 16;
/// Largest reduction chunk (rows of a gathered `Col` tile).
const KC: usize = 256;
/// Average segment length (reduction rows) below which a GEMM call with contiguous weights uses
/// the indirect kernel (one input offset per row) rather than a loop per segment.
const IND_MAX_SEG: usize = 16;
/// Output channels from which a padded-source task packs its panels (see `Ctx::packs_panels`).
const PACK_MIN_ROWS: usize = 32;
/// Largest number of columns a GEMM task computes per sub-convolution (before the `Ct` budget).
const NC_MAX: usize = 256;
/// Largest gap (in padded-plane columns) between two output rows that one panel run spans.
const MAX_GAP: usize = NR / 2;
/// Longest output row (per phase) for which the GEMM path reads the padded input in place.
const PADDED_MAX_ROW: usize = 64;
/// Largest input footprint (in `f32`) of one output row for which the GEMM path reads the padded
/// input in place for rows longer than `PADDED_MAX_ROW` (strided rows only).
const LONG_ROWS_BUDGET: usize = 16 * 1024;
/// Budget (in `f32`) of the padded input plane the direct path builds per task.
const PLANE_BUDGET: usize = 256 * 1024;
/// Budget (in `f32`) of a task's output tile `Ct`; bounds the columns per task for large `Kg`.
const CT_BUDGET: usize = 64 * 1024;

// ------------------------------------------------------------------------------------------------
// Packed weight
// ------------------------------------------------------------------------------------------------

/// A convolution weight packed once for the micro-kernel.
///
/// Layout: per group, `ceil(Kg / mr)` panels of `[tap][c][mr]` (`tap` over the `k0·k1·k2` kernel
/// taps, `c` over the `Cg` input channels of the group, `mr` output channels, zero-padded past
/// `Kg`). `mr` is the micro-kernel's row count (6), or 1 when `Kg == 1` (depthwise-like), which uses
/// the direct path.
#[derive(Clone, Debug)]
pub struct PackedWeight {
    transposed: bool,
    in_channels: usize,
    out_channels: usize,
    groups: usize,
    kernel: [usize; 3],
    mr: usize,
    panels: usize,
    data: Vec<f32>,
}

impl PackedWeight {
    /// Packs `weight`, laid out `[K, C/g, k0, k1, k2]` (forward) or `[C, K/g, k0, k1, k2]`
    /// (transposed), as described in [`ConvProblem`].
    ///
    /// Errors: [`Error::InvalidConfig`] if a channel count, the group count or a kernel size is
    /// zero or the groups do not divide both channel counts; [`Error::Shape`] if `weight` does not
    /// have `C·K/g·k0·k1·k2` elements; [`Error::Overflow`] if that product overflows.
    pub fn new(
        transposed: bool,
        in_channels: usize,
        out_channels: usize,
        groups: usize,
        kernel: [usize; 3],
        weight: &[f32],
    ) -> Result<PackedWeight> {
        if groups == 0 {
            return Err(Error::config("groups", groups, "must be at least 1"));
        }
        if in_channels == 0 || !in_channels.is_multiple_of(groups) {
            return Err(Error::config(
                "in_channels",
                in_channels,
                format!("must be a positive multiple of groups = {groups}"),
            ));
        }
        if out_channels == 0 || !out_channels.is_multiple_of(groups) {
            return Err(Error::config(
                "out_channels",
                out_channels,
                format!("must be a positive multiple of groups = {groups}"),
            ));
        }
        if kernel.contains(&0) {
            return Err(Error::config("kernel_size", format!("{kernel:?}"), "every kernel size must be at least 1"));
        }
        let cg = in_channels / groups;
        let kg = out_channels / groups;
        checked_product(&kernel, "kernel size")?;
        let shape = if transposed {
            [in_channels, kg, kernel[0], kernel[1], kernel[2]]
        } else {
            [out_channels, cg, kernel[0], kernel[1], kernel[2]]
        };
        let expected = checked_product(&shape, "weight elements")?;
        if weight.len() != expected {
            return Err(Error::shape(
                "weight",
                &[weight.len()],
                format!("a weight of shape {shape:?} needs {expected} elements"),
            ));
        }
        let mr = if kg == 1 { 1 } else { tile_rows(kg, wide_tiles_pay()) };
        Self::pack(transposed, [in_channels, out_channels, groups], kernel, weight, mr)
    }

    /// Packs with `mr` rows per panel (`1` only for `Kg == 1`); the lengths are checked by `new`.
    fn pack(
        transposed: bool,
        [in_channels, out_channels, groups]: [usize; 3],
        kernel: [usize; 3],
        weight: &[f32],
        mr: usize,
    ) -> Result<PackedWeight> {
        let (cg, kg) = (in_channels / groups, out_channels / groups);
        let kk = checked_product(&kernel, "kernel size")?;
        let panels = kg.div_ceil(mr);
        let len = checked_product(&[groups, panels, kk, cg, mr], "packed weight elements")?;
        let mut data = vec![0.0f32; len];
        let mut at = 0;
        for g in 0..groups {
            for panel in 0..panels {
                for tap in 0..kk {
                    for c in 0..cg {
                        for m in 0..mr {
                            let k = panel * mr + m;
                            if k < kg {
                                data[at] = if transposed {
                                    weight[((g * cg + c) * kg + k) * kk + tap]
                                } else {
                                    weight[((g * kg + k) * cg + c) * kk + tap]
                                };
                            }
                            at += 1;
                        }
                    }
                }
            }
        }
        Ok(PackedWeight { transposed, in_channels, out_channels, groups, kernel, mr, panels, data })
    }

    /// Whether this is the weight of a transposed convolution.
    pub fn transposed(&self) -> bool {
        self.transposed
    }

    /// Input channels C.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Output channels K.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Groups.
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Kernel size `[k0, k1, k2]`.
    pub fn kernel(&self) -> [usize; 3] {
        self.kernel
    }

    /// Whether this weight fits `p` (same direction, channels, groups and kernel size).
    pub fn matches(&self, p: &ConvProblem) -> bool {
        self.transposed == p.transposed
            && self.in_channels == p.in_channels
            && self.out_channels == p.out_channels
            && self.groups == p.groups
            && self.kernel == p.kernel
    }

    /// Number of packed `f32` values (including the zero padding of the last panel of a group).
    pub fn packed_len(&self) -> usize {
        self.data.len()
    }
}

/// Whether the best micro-kernel of this CPU has [`MR_WIDE`]-row tiles (AVX-512).
fn wide_tiles_pay() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    if x86::Avx512::detect().is_some() {
        return true;
    }
    false
}

/// Rows per weight panel for `kg > 1` output channels per group: [`MR_WIDE`] where `wide` and it
/// pads `kg` to no more rows than [`MR`] does (128 → 128 rather than 132), else [`MR`]. Every
/// kernel accepts both; the AVX2 and portable ones run an 8-row panel as two 4-row halves.
fn tile_rows(kg: usize, wide: bool) -> usize {
    if wide && kg.div_ceil(MR_WIDE) * MR_WIDE <= kg.div_ceil(MR) * MR {
        MR_WIDE
    } else {
        MR
    }
}

fn checked_product(values: &[usize], what: &str) -> Result<usize> {
    values
        .iter()
        .try_fold(1usize, |acc, &v| acc.checked_mul(v))
        .ok_or_else(|| Error::Overflow(format!("{what}: product of {values:?} overflows usize")))
}

// ------------------------------------------------------------------------------------------------
// Micro-kernels
// ------------------------------------------------------------------------------------------------

/// A run of reduction rows for the micro-kernel: `(weight offset, rows, input offset)`.
type ASeg = (usize, usize, usize);

/// A micro-kernel implementation (one per instruction set).
trait Kernel: Copy + Send + Sync {
    /// `c[m·ldc + n] = (accumulate ? c[m·ldc + n] : 0) + Σ_r a_r[m] · b_r[n]` (`m < mr`, `n < NR`),
    /// where the reduction rows `r` run through `segs` in order: segment `(a_off, len, b_off)`
    /// supplies `len` rows, the `t`-th being the weights `a[a_off + t·mr ..][..mr]` and the inputs
    /// `b[b_off + t·ldb ..][..NR]`. `mr` is [`MR`] or [`MR_WIDE`] (the weight's panel rows).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        self,
        mr: usize,
        a: &[f32],
        segs: &[ASeg],
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    );

    /// Indirect variant of [`Kernel::gemm`] for short, scattered input rows: reduction row `t`
    /// is the weights `a[t·mr ..][..mr]` and the inputs `b[offs[t] ..][..NR]`.
    #[allow(clippy::too_many_arguments)]
    fn gemm_ind(self, mr: usize, a: &[f32], b: &[f32], offs: &RowOffsets, c: &mut [f32], ldc: usize, acc: bool);

    /// Direct-path window: `out[r·ldo + n] = (Σ_t w_t · x[off_t + r·pitch + n]) + bias` for
    /// `r < rows`, `n < cols` (see [`DirectWin`]), summed over the taps `(off_t, w_t)` in order.
    /// `x` must be readable for whole `RR × DW` tiles: `off_t + (ceil(rows/RR)·RR − 1)·pitch +
    /// ceil(cols/DW)·DW <= x.len()` for every tap.
    fn direct(self, x: &[f32], taps: &[(usize, f32)], win: DirectWin, out: &mut [f32]);

    /// Direct-path window with `K` vertically stacked taps per entry: entry `(off, w)` stands for
    /// the taps `(off + t·pitch, w[t])`, `t < K` (consecutive input rows). Computes
    /// `out[r·ldo + n] = (Σ_entries Σ_t w[t] · x[off + (r + t)·pitch + n]) + bias`, summed entry by
    /// entry, `t` ascending, so each input row is loaded once for the `K` output rows it feeds.
    /// `x` must be readable for whole tiles: `off + (ceil(rows/RR)·RR + K − 2)·pitch +
    /// ceil(cols/DW)·DW <= x.len()`.
    fn direct_v3(self, x: &[f32], taps: &[(usize, [f32; 3])], win: DirectWin, out: &mut [f32]);

    /// Packs one panel of the padded source: row `r` of `dst` (`[rows][NR]`) gets, for every piece
    /// `(lane, len, off)`, `src[rows[r] + off ..][..len]` at lanes `lane..lane + len`, and zeros
    /// at lanes no piece covers.
    fn pack_panel(self, dst: &mut [f32], src: &[f32], rows: &RowOffsets, pieces: &[Piece]);

    /// Stride-2 gather of one run into packed micro-panels: row `r`, columns `c0..c0 + n` of a
    /// `[cols/NR][kc][NR]` tile get `src[0], src[2], …, src[2·(n − 1)]` (see `write_run_strided`).
    fn run_s2(self, col: &mut [f32], kc: usize, r: usize, c0: usize, src: &[f32], n: usize);
}

/// The accumulator tile of a micro-kernel call: `c`'s first `R` rows of `NR` values (`ldc`
/// apart) when accumulating, else zeros.
#[inline(always)]
fn tile_load<const R: usize>(c: &[f32], ldc: usize, accumulate: bool) -> [[f32; NR]; R] {
    let mut acc = [[0.0f32; NR]; R];
    if accumulate {
        for (m, row) in acc.iter_mut().enumerate() {
            row.copy_from_slice(&c[m * ldc..m * ldc + NR]);
        }
    }
    acc
}

/// Stores an accumulator tile back to `c` (see [`tile_load`]).
#[inline(always)]
fn tile_store<const R: usize>(acc: &[[f32; NR]; R], c: &mut [f32], ldc: usize) {
    for (m, row) in acc.iter().enumerate() {
        c[m * ldc..m * ldc + NR].copy_from_slice(row);
    }
}

/// One reduction row: `acc[m][n] += a[m] · b[n]`; `FMA` selects fused multiply-adds.
#[inline(always)]
fn tile_step<const FMA: bool, const R: usize>(acc: &mut [[f32; NR]; R], ar: &[f32; R], br: &[f32; NR]) {
    for (row, &av) in acc.iter_mut().zip(ar) {
        for (s, &bv) in row.iter_mut().zip(br) {
            *s = if FMA { av.mul_add(bv, *s) } else { *s + av * bv };
        }
    }
}

/// The generic micro-kernel body for `R` rows of panels with `LDA` rows (`R <= LDA`); `FMA`
/// selects fused multiply-adds. Reads the weights `a[a_off + t·LDA ..][..R]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gemm_body<const FMA: bool, const R: usize, const LDA: usize>(
    a: &[f32],
    segs: &[ASeg],
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let mut acc = tile_load::<R>(c, ldc, accumulate);
    for &(off, len, boff) in segs {
        for t in 0..len {
            let ar: &[f32; R] = a[off + t * LDA..off + t * LDA + R].try_into().expect("R elements");
            let at = boff + t * ldb;
            let br: &[f32; NR] = b[at..at + NR].try_into().expect("NR elements");
            tile_step::<FMA, R>(&mut acc, ar, br);
        }
    }
    tile_store(&acc, c, ldc);
}

/// The generic kernel for either panel height: [`MR`] rows at once, [`MR_WIDE`] rows as two
/// halves of 4 (the accumulators of 8 rows do not fit 16 `ymm` registers). Each output element
/// sees the same operations in the same order either way.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gemm_generic<const FMA: bool>(
    mr: usize,
    a: &[f32],
    segs: &[ASeg],
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if mr == MR_WIDE {
        gemm_body::<FMA, 4, MR_WIDE>(a, segs, b, ldb, c, ldc, accumulate);
        gemm_body::<FMA, 4, MR_WIDE>(&a[4..], segs, b, ldb, &mut c[4 * ldc..], ldc, accumulate);
    } else {
        assert_eq!(mr, MR, "panel rows");
        gemm_body::<FMA, MR, MR>(a, segs, b, ldb, c, ldc, accumulate);
    }
}

/// The input offsets of the reduction rows of an indirect GEMM call, with their maximum (so a
/// kernel checks its reads with one comparison).
#[derive(Debug, Default)]
struct RowOffsets {
    offs: Vec<usize>,
    max: usize,
}

impl RowOffsets {
    fn clear(&mut self) {
        self.offs.clear();
        self.max = 0;
    }

    fn push(&mut self, off: usize) {
        self.offs.push(off);
        self.max = self.max.max(off);
    }

    /// Whether `a` holds `mr` weights per row, and `b` `NR` inputs from every offset.
    fn fits(&self, mr: usize, a: &[f32], b: &[f32]) -> bool {
        self.offs.len().checked_mul(mr).is_some_and(|n| n <= a.len())
            && (self.offs.is_empty() || self.max.checked_add(NR).is_some_and(|end| end <= b.len()))
    }
}

/// The generic body of [`Kernel::gemm_ind`] for `R` rows of panels with `LDA` rows.
#[inline(always)]
fn gemm_ind_body<const FMA: bool, const R: usize, const LDA: usize>(
    a: &[f32],
    b: &[f32],
    offs: &[usize],
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let mut acc = tile_load::<R>(c, ldc, accumulate);
    for (t, &at) in offs.iter().enumerate() {
        let ar: &[f32; R] = a[t * LDA..t * LDA + R].try_into().expect("R elements");
        let br: &[f32; NR] = b[at..at + NR].try_into().expect("NR elements");
        tile_step::<FMA, R>(&mut acc, ar, br);
    }
    tile_store(&acc, c, ldc);
}

/// [`gemm_ind_body`] for either panel height (as [`gemm_generic`]).
#[inline(always)]
fn gemm_ind_generic<const FMA: bool>(
    mr: usize,
    a: &[f32],
    b: &[f32],
    offs: &RowOffsets,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if mr == MR_WIDE {
        gemm_ind_body::<FMA, 4, MR_WIDE>(a, b, &offs.offs, c, ldc, accumulate);
        gemm_ind_body::<FMA, 4, MR_WIDE>(&a[4..], b, &offs.offs, &mut c[4 * ldc..], ldc, accumulate);
    } else {
        assert_eq!(mr, MR, "panel rows");
        gemm_ind_body::<FMA, MR, MR>(a, b, &offs.offs, c, ldc, accumulate);
    }
}

/// A piece of a packed padded-source panel: lanes `lane..lane + len` come from the input row at
/// offset `off` (one output row's part of the panel).
type Piece = (usize, usize, usize);

/// The portable body of [`Kernel::pack_panel`].
#[inline(always)]
fn pack_panel_generic(dst: &mut [f32], src: &[f32], rows: &RowOffsets, pieces: &[Piece]) {
    let covered: usize = pieces.iter().map(|p| p.1).sum();
    for (d, &ro) in dst.chunks_exact_mut(NR).zip(&rows.offs) {
        if covered < NR {
            d.fill(0.0);
        }
        for &(lane, len, off) in pieces {
            d[lane..lane + len].copy_from_slice(&src[ro + off..ro + off + len]);
        }
    }
}

/// Output positions per direct-path tile row (contiguous, vectorised).
const DW: usize = 16;
/// Output rows per direct-path tile (independent accumulators that hide the FMA latency).
const RR: usize = 4;

/// Geometry of one direct-path kernel call (see [`Kernel::direct`]).
#[derive(Clone, Copy, Debug)]
struct DirectWin {
    /// Distance in `x` between consecutive output rows.
    pitch: usize,
    rows: usize,
    cols: usize,
    /// Distance in `out` between consecutive output rows.
    ldo: usize,
    bias: f32,
}

#[inline(always)]
fn direct_body<const FMA: bool>(x: &[f32], taps: &[(usize, f32)], win: DirectWin, out: &mut [f32]) {
    let DirectWin { pitch, rows, cols, ldo, bias } = win;
    let span = (RR - 1) * pitch + DW;
    let Some((&(off0, w0), rest)) = taps.split_first() else {
        for r in 0..rows {
            out[r * ldo..r * ldo + cols].fill(bias);
        }
        return;
    };
    for r0 in (0..rows).step_by(RR) {
        let nr = RR.min(rows - r0);
        for (c0, nc) in col_tiles(cols) {
            let base = r0 * pitch + c0;
            // The first tap initialises the accumulators (`w·x` rounds like `fma(w, x, 0)`).
            let xs = &x[base + off0..base + off0 + span];
            let mut acc = [[0.0f32; DW]; RR];
            for (rr, a) in acc.iter_mut().enumerate() {
                let xr: &[f32; DW] = xs[rr * pitch..rr * pitch + DW].try_into().expect("DW elements");
                for (s, &v) in a.iter_mut().zip(xr) {
                    *s = w0 * v;
                }
            }
            for &(off, w) in rest {
                let xs = &x[base + off..base + off + span];
                for (rr, a) in acc.iter_mut().enumerate() {
                    let xr: &[f32; DW] = xs[rr * pitch..rr * pitch + DW].try_into().expect("DW elements");
                    for (s, &v) in a.iter_mut().zip(xr) {
                        *s = if FMA { w.mul_add(v, *s) } else { *s + w * v };
                    }
                }
            }
            store_direct_tile(&acc, nr, nc, bias, &mut out[r0 * ldo + c0..], ldo);
        }
    }
}

/// One entry of [`Kernel::direct_v3`]-style kernels: adds `w[t] · x[(rr + t)·pitch + n]` to
/// `acc[rr]` for every `t < K`, input row by input row. `FIRST`: `acc` holds nothing yet (the
/// first product of each row initialises it, rounding like `fma(w, x, 0)`).
#[inline(always)]
fn direct_v_entry<const FMA: bool, const K: usize, const FIRST: bool>(
    acc: &mut [[f32; DW]; RR],
    xs: &[f32],
    pitch: usize,
    w: &[f32; K],
) {
    for i in 0..RR + K - 1 {
        let mut xr = [0.0f32; DW];
        xr.copy_from_slice(&xs[i * pitch..i * pitch + DW]);
        for (t, &wt) in w.iter().enumerate() {
            if i >= t && i - t < RR {
                for (s, &v) in acc[i - t].iter_mut().zip(&xr) {
                    *s = if FIRST && t == 0 {
                        wt * v
                    } else if FMA {
                        wt.mul_add(v, *s)
                    } else {
                        *s + wt * v
                    };
                }
            }
        }
    }
}

#[inline(always)]
fn direct_v_body<const FMA: bool, const K: usize>(
    x: &[f32],
    taps: &[(usize, [f32; K])],
    win: DirectWin,
    out: &mut [f32],
) {
    let DirectWin { pitch, rows, cols, ldo, bias } = win;
    let span = (RR + K - 2) * pitch + DW;
    let Some((&(off0, w0), rest)) = taps.split_first() else {
        for r in 0..rows {
            out[r * ldo..r * ldo + cols].fill(bias);
        }
        return;
    };
    for r0 in (0..rows).step_by(RR) {
        let nr = RR.min(rows - r0);
        for (c0, nc) in col_tiles(cols) {
            let base = r0 * pitch + c0;
            let mut acc = [[0.0f32; DW]; RR];
            direct_v_entry::<FMA, K, true>(&mut acc, &x[base + off0..base + off0 + span], pitch, &w0);
            for &(off, w) in rest {
                direct_v_entry::<FMA, K, false>(&mut acc, &x[base + off..base + off + span], pitch, &w);
            }
            store_direct_tile(&acc, nr, nc, bias, &mut out[r0 * ldo + c0..], ldo);
        }
    }
}

/// The column tiles `(c0, nc)` of a direct-path row of `cols` outputs. When `cols >= DW`, every
/// tile is whole: the last one is moved left to end at `cols` (its overlap with the previous
/// tile is computed twice, identically), so that stores never need a ragged tail.
#[inline(always)]
fn col_tiles(cols: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..cols).step_by(DW).map(move |c0| if cols >= DW { (c0.min(cols - DW), DW) } else { (c0, cols - c0) })
}

/// Writes rows `rr < nr`, columns `n < nc` of a direct-path tile plus `bias` to
/// `out[rr·ldo + n]`.
#[inline(always)]
fn store_direct_tile(acc: &[[f32; DW]; RR], nr: usize, nc: usize, bias: f32, out: &mut [f32], ldo: usize) {
    #[allow(clippy::needless_range_loop)] // constant indices keep `acc` in registers
    for rr in 0..RR {
        if rr < nr {
            let at = rr * ldo;
            if nc == DW {
                // Straight from the register (no round trip through a stack copy).
                let dst: &mut [f32; DW] = (&mut out[at..at + DW]).try_into().expect("DW elements");
                for (d, &a) in dst.iter_mut().zip(&acc[rr]) {
                    *d = a + bias;
                }
            } else {
                let mut v = acc[rr];
                for s in v.iter_mut() {
                    *s += bias;
                }
                copy_short(&mut out[at..at + nc], &v[..nc]);
            }
        }
    }
}

/// Portable kernel: plain multiply-add (fused where the baseline ISA has FMA, i.e. aarch64).
#[derive(Clone, Copy, Debug)]
struct Portable;

const PORTABLE_FMA: bool = cfg!(target_arch = "aarch64");

impl Kernel for Portable {
    fn gemm(self, mr: usize, a: &[f32], segs: &[ASeg], b: &[f32], ldb: usize, c: &mut [f32], ldc: usize, acc: bool) {
        gemm_generic::<PORTABLE_FMA>(mr, a, segs, b, ldb, c, ldc, acc)
    }
    fn gemm_ind(self, mr: usize, a: &[f32], b: &[f32], offs: &RowOffsets, c: &mut [f32], ldc: usize, acc: bool) {
        gemm_ind_generic::<PORTABLE_FMA>(mr, a, b, offs, c, ldc, acc)
    }
    fn direct(self, x: &[f32], taps: &[(usize, f32)], win: DirectWin, out: &mut [f32]) {
        direct_body::<PORTABLE_FMA>(x, taps, win, out)
    }
    fn direct_v3(self, x: &[f32], taps: &[(usize, [f32; 3])], win: DirectWin, out: &mut [f32]) {
        direct_v_body::<PORTABLE_FMA, 3>(x, taps, win, out)
    }
    fn pack_panel(self, dst: &mut [f32], src: &[f32], rows: &RowOffsets, pieces: &[Piece]) {
        pack_panel_generic(dst, src, rows, pieces)
    }
    fn run_s2(self, col: &mut [f32], kc: usize, r: usize, c0: usize, src: &[f32], n: usize) {
        write_run_strided(col, kc, r, c0, src, 2, n)
    }
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
mod x86 {
    #[cfg(target_arch = "x86")]
    use std::arch::x86::{
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
        _mm512_storeu_ps,
    };
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
        _mm512_storeu_ps,
    };

    use super::{
        direct_body, direct_v_body, gemm_body, gemm_generic, gemm_ind_body, gemm_ind_generic, pack_panel_generic,
        write_run_strided, ASeg, DirectWin, Kernel, Piece, RowOffsets, MR, MR_WIDE, NR,
    };

    /// AVX2 + FMA kernel. Only [`Avx2Fma::detect`] constructs it, after checking the CPU.
    #[derive(Clone, Copy, Debug)]
    pub(super) struct Avx2Fma(());

    impl Avx2Fma {
        pub(super) fn detect() -> Option<Avx2Fma> {
            (std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"))
                .then_some(Avx2Fma(()))
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_avx2(
        mr: usize,
        a: &[f32],
        segs: &[ASeg],
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) {
        gemm_generic::<true>(mr, a, segs, b, ldb, c, ldc, accumulate)
    }

    #[target_feature(enable = "avx2,fma")]
    fn gemm_ind_avx2(mr: usize, a: &[f32], b: &[f32], offs: &RowOffsets, c: &mut [f32], ldc: usize, acc: bool) {
        gemm_ind_generic::<true>(mr, a, b, offs, c, ldc, acc)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn direct_avx2(x: &[f32], taps: &[(usize, f32)], win: DirectWin, out: &mut [f32]) {
        direct_body::<true>(x, taps, win, out)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn direct_v3_avx2(x: &[f32], taps: &[(usize, [f32; 3])], win: DirectWin, out: &mut [f32]) {
        direct_v_body::<true, 3>(x, taps, win, out)
    }

    #[target_feature(enable = "avx2,fma")]
    fn pack_panel_avx2(dst: &mut [f32], src: &[f32], rows: &RowOffsets, pieces: &[Piece]) {
        pack_panel_generic(dst, src, rows, pieces)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_s2_avx2(col: &mut [f32], kc: usize, r: usize, c0: usize, src: &[f32], n: usize) {
        write_run_strided(col, kc, r, c0, src, 2, n)
    }

    /// AVX-512F kernel: the same generic bodies compiled with 512-bit vectors (one `zmm` register
    /// per accumulator row of `NR = 16`). Only [`Avx512::detect`] constructs it, after checking the
    /// CPU. Its fused multiply-adds round exactly like the AVX2 + FMA kernel's.
    #[derive(Clone, Copy, Debug)]
    pub(super) struct Avx512(());

    impl Avx512 {
        pub(super) fn detect() -> Option<Avx512> {
            (std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma"))
            .then_some(Avx512(()))
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_avx512(
        mr: usize,
        a: &[f32],
        segs: &[ASeg],
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) {
        if mr == MR_WIDE {
            gemm8_avx512(a, segs, b, ldb, c, ldc, accumulate)
        } else {
            assert_eq!(mr, MR, "panel rows");
            gemm_body::<true, MR, MR>(a, segs, b, ldb, c, ldc, accumulate)
        }
    }

    /// Whether `count` runs of `width` values, `step` apart from `off`, end within `len`
    /// (checked arithmetic: no wrap-around can pass).
    #[inline(always)]
    fn fits(off: usize, count: usize, step: usize, width: usize, len: usize) -> bool {
        match count.checked_sub(1) {
            None => true,
            Some(last) => match last.checked_mul(step) {
                Some(v) => off <= len && width <= len - off && v <= len - off - width,
                None => false,
            },
        }
    }

    /// The 8 × 16 accumulator tile of `c` (rows `ldc` apart) when accumulating, else zeros.
    /// The caller has checked `fits(0, 8, ldc, 16, c.len())`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    fn tile8_load(c: &[f32], ldc: usize, accumulate: bool) -> [__m512; MR_WIDE] {
        debug_assert!(fits(0, MR_WIDE, ldc, NR, c.len()));
        let mut acc = [_mm512_setzero_ps(); MR_WIDE];
        if accumulate {
            for (m, v) in acc.iter_mut().enumerate() {
                // SAFETY: row `m < 8` of the tile, `m·ldc + 16 <= c.len()` (checked by the caller).
                *v = unsafe { _mm512_loadu_ps(c.as_ptr().add(m * ldc)) };
            }
        }
        acc
    }

    /// Stores the tile back (same bounds as [`tile8_load`]).
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    fn tile8_store(acc: &[__m512; MR_WIDE], c: &mut [f32], ldc: usize) {
        debug_assert!(fits(0, MR_WIDE, ldc, NR, c.len()));
        for (m, v) in acc.iter().enumerate() {
            // SAFETY: as for the loads of `tile8_load`.
            unsafe { _mm512_storeu_ps(c.as_mut_ptr().add(m * ldc), *v) };
        }
    }

    /// One reduction row: 16 inputs at `bp`, 8 weights at `ap` (embedded-broadcast FMAs).
    ///
    /// # Safety
    /// `bp` must be readable for 16 values and `ap` for 8.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    unsafe fn tile8_step(acc: &mut [__m512; MR_WIDE], ap: *const f32, bp: *const f32) {
        // SAFETY: the caller guarantees both reads.
        unsafe {
            let bv = _mm512_loadu_ps(bp);
            for (m, v) in acc.iter_mut().enumerate() {
                *v = _mm512_fmadd_ps(_mm512_set1_ps(*ap.add(m)), bv, *v);
            }
        }
    }

    /// The 8 × 16 AVX-512 micro-kernel, written with intrinsics (LLVM does not keep an
    /// auto-vectorised 8-row tile in registers): per reduction row, one load of 16 inputs and 8
    /// fused multiply-adds with an embedded weight broadcast. Same operations, same order, as
    /// [`gemm_body`] with `FMA`, so its results are bit-identical to the AVX2 kernel's.
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn gemm8_avx512(a: &[f32], segs: &[ASeg], b: &[f32], ldb: usize, c: &mut [f32], ldc: usize, accumulate: bool) {
        // Every bound the loops rely on, checked once per call.
        assert!(fits(0, MR_WIDE, ldc, NR, c.len()), "output tile out of bounds");
        for &(off, len, boff) in segs {
            assert!(fits(off, len, MR_WIDE, MR_WIDE, a.len()), "weight rows out of bounds");
            assert!(fits(boff, len, ldb, NR, b.len()), "input rows out of bounds");
        }
        let mut acc = tile8_load(c, ldc, accumulate);
        for &(off, len, boff) in segs {
            let (mut ap, mut bp) = (a[off..].as_ptr(), b[boff..].as_ptr());
            for _ in 0..len {
                // SAFETY: in the `t`-th iteration (`t < len`), `ap` and `bp` point at offsets
                // `off + t·8` and `boff + t·ldb`, and `off + t·8 + 8 <= a.len()`, `boff + t·ldb +
                // 16 <= b.len()` (checked above).
                unsafe { tile8_step(&mut acc, ap, bp) };
                // Past the last row these point outside the slices, but are never read.
                ap = ap.wrapping_add(MR_WIDE);
                bp = bp.wrapping_add(ldb);
            }
        }
        tile8_store(&acc, c, ldc);
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    fn gemm_ind_avx512(mr: usize, a: &[f32], b: &[f32], offs: &RowOffsets, c: &mut [f32], ldc: usize, acc: bool) {
        if mr != MR_WIDE {
            assert_eq!(mr, MR, "panel rows");
            return gemm_ind_body::<true, MR, MR>(a, b, &offs.offs, c, ldc, acc);
        }
        // Every bound the loop relies on, checked once per call.
        assert!(offs.fits(MR_WIDE, a, b), "weight or input rows out of bounds");
        assert!(fits(0, MR_WIDE, ldc, NR, c.len()), "output tile out of bounds");
        let mut tile = tile8_load(c, ldc, acc);
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        for (t, &at) in offs.offs.iter().enumerate() {
            // SAFETY: `t·8 + 8 <= a.len()` and `at + 16 <= max + 16 <= b.len()` (checked above).
            unsafe { tile8_step(&mut tile, ap.add(t * MR_WIDE), bp.add(at)) };
        }
        tile8_store(&tile, c, ldc);
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn direct_avx512(x: &[f32], taps: &[(usize, f32)], win: DirectWin, out: &mut [f32]) {
        direct_body::<true>(x, taps, win, out)
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn direct_v3_avx512(x: &[f32], taps: &[(usize, [f32; 3])], win: DirectWin, out: &mut [f32]) {
        direct_v_body::<true, 3>(x, taps, win, out)
    }

    /// [`Kernel::pack_panel`] with masked loads: one 16-lane register per row, each piece merged
    /// into its lanes (lanes outside every piece stay zero), one store.
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn pack_panel_avx512(dst: &mut [f32], src: &[f32], rows: &RowOffsets, pieces: &[Piece]) {
        let mut masks = [(0u16, 0usize, 0usize); NR];
        let n = pieces.len();
        assert!(n <= NR, "at most one piece per lane");
        let mut end = 0usize; // largest `off + len` over the pieces
        for (m, &(lane, len, off)) in masks.iter_mut().zip(pieces) {
            assert!(len >= 1 && lane + len <= NR, "piece lanes out of the panel");
            *m = ((((1u32 << len) - 1) << lane) as u16, off, lane);
            end = end.max(off.checked_add(len).expect("piece end"));
        }
        // Every element a piece reads: `rows.max + end <= src.len()`; `dst` holds every row.
        assert!(
            rows.offs.is_empty() || rows.max.checked_add(end).is_some_and(|e| e <= src.len()),
            "pieces out of bounds"
        );
        assert!(rows.offs.len() * NR <= dst.len(), "panel out of bounds");
        let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
        for (r, &ro) in rows.offs.iter().enumerate() {
            let mut v = _mm512_setzero_ps();
            for &(mask, off, lane) in &masks[..n] {
                // Lane `l` of the load reads `src[ro + off − lane + l]`; only the lanes of the
                // piece (`lane <= l < lane + len`, i.e. `src[ro + off ..][..len]`, in bounds as
                // checked above) are accessed, the others are masked off and never touched.
                let at = sp.wrapping_add(ro + off).wrapping_sub(lane);
                // SAFETY: a masked load accesses only its enabled lanes, all in bounds (above).
                v = unsafe { _mm512_mask_loadu_ps(v, mask, at) };
            }
            // SAFETY: `r < rows`, so `r·16 + 16 <= dst.len()` (checked above).
            unsafe { _mm512_storeu_ps(dp.add(r * NR), v) };
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn run_s2_avx512(col: &mut [f32], kc: usize, r: usize, c0: usize, src: &[f32], n: usize) {
        write_run_strided(col, kc, r, c0, src, 2, n)
    }

    impl Kernel for Avx512 {
        fn gemm(
            self,
            mr: usize,
            a: &[f32],
            segs: &[ASeg],
            b: &[f32],
            ldb: usize,
            c: &mut [f32],
            ldc: usize,
            acc: bool,
        ) {
            // SAFETY: an `Avx512` value exists only if `detect` found AVX-512F, AVX2 and FMA on
            // this CPU, which is all `gemm_avx512` requires beyond what safe Rust guarantees.
            unsafe { gemm_avx512(mr, a, segs, b, ldb, c, ldc, acc) }
        }
        fn gemm_ind(self, mr: usize, a: &[f32], b: &[f32], offs: &RowOffsets, c: &mut [f32], ldc: usize, acc: bool) {
            // SAFETY: as above, the token proves AVX-512F, AVX2 and FMA are available.
            unsafe { gemm_ind_avx512(mr, a, b, offs, c, ldc, acc) }
        }
        fn direct(self, x: &[f32], taps: &[(usize, f32)], win: DirectWin, out: &mut [f32]) {
            // SAFETY: as above, the token proves AVX-512F, AVX2 and FMA are available.
            unsafe { direct_avx512(x, taps, win, out) }
        }
        fn direct_v3(self, x: &[f32], taps: &[(usize, [f32; 3])], win: DirectWin, out: &mut [f32]) {
            // SAFETY: as above, the token proves AVX-512F, AVX2 and FMA are available.
            unsafe { direct_v3_avx512(x, taps, win, out) }
        }
        fn pack_panel(self, dst: &mut [f32], src: &[f32], rows: &RowOffsets, pieces: &[Piece]) {
            // SAFETY: as above, the token proves AVX-512F, AVX2 and FMA are available.
            unsafe { pack_panel_avx512(dst, src, rows, pieces) }
        }
        fn run_s2(self, col: &mut [f32], kc: usize, r: usize, c0: usize, src: &[f32], n: usize) {
            // SAFETY: as above, the token proves AVX-512F, AVX2 and FMA are available.
            unsafe { run_s2_avx512(col, kc, r, c0, src, n) }
        }
    }

    impl Kernel for Avx2Fma {
        fn gemm(
            self,
            mr: usize,
            a: &[f32],
            segs: &[ASeg],
            b: &[f32],
            ldb: usize,
            c: &mut [f32],
            ldc: usize,
            acc: bool,
        ) {
            // SAFETY: an `Avx2Fma` value exists only if `detect` found AVX2 and FMA on this CPU,
            // which is all `gemm_avx2` requires beyond what safe Rust guarantees.
            unsafe { gemm_avx2(mr, a, segs, b, ldb, c, ldc, acc) }
        }
        fn gemm_ind(self, mr: usize, a: &[f32], b: &[f32], offs: &RowOffsets, c: &mut [f32], ldc: usize, acc: bool) {
            // SAFETY: as above, the token proves AVX2 and FMA are available.
            unsafe { gemm_ind_avx2(mr, a, b, offs, c, ldc, acc) }
        }
        fn direct(self, x: &[f32], taps: &[(usize, f32)], win: DirectWin, out: &mut [f32]) {
            // SAFETY: as above, the token proves AVX2 and FMA are available.
            unsafe { direct_avx2(x, taps, win, out) }
        }
        fn direct_v3(self, x: &[f32], taps: &[(usize, [f32; 3])], win: DirectWin, out: &mut [f32]) {
            // SAFETY: as above, the token proves AVX2 and FMA are available.
            unsafe { direct_v3_avx2(x, taps, win, out) }
        }
        fn pack_panel(self, dst: &mut [f32], src: &[f32], rows: &RowOffsets, pieces: &[Piece]) {
            // SAFETY: as above, the token proves AVX2 and FMA are available.
            unsafe { pack_panel_avx2(dst, src, rows, pieces) }
        }
        fn run_s2(self, col: &mut [f32], kc: usize, r: usize, c0: usize, src: &[f32], n: usize) {
            // SAFETY: as above, the token proves AVX2 and FMA are available.
            unsafe { run_s2_avx2(col, kc, r, c0, src, n) }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Geometry: sub-convolutions
// ------------------------------------------------------------------------------------------------

/// One kernel tap of a dimension's phase.
#[derive(Clone, Copy, Debug)]
struct Tap {
    /// Kernel index along this dimension.
    j: usize,
    /// Input index offset: `i = m·in_step + off`.
    off: isize,
    /// Columns `m` in `[lo, hi)` read inside the input (the rest read padding).
    lo: usize,
    hi: usize,
}

/// A phase of one dimension: the outputs `o = m·out_step + out_off`, `m < count`.
#[derive(Clone, Debug)]
struct Phase {
    count: usize,
    in_step: usize,
    taps: Vec<Tap>,
}

/// Per-dimension phases and the derived sizes of a validated problem.
#[derive(Debug)]
struct Geometry {
    cg: usize,
    kg: usize,
    kk: usize,
    /// `out_step` per dimension (1 forward, the stride transposed); phase index of `o` is
    /// `o % out_step`, its column `o / out_step`.
    out_step: [usize; 3],
    phases: [Vec<Phase>; 3],
    in_plane: usize,
    out_plane: usize,
}

fn to_isize(v: u128, what: &str) -> Result<isize> {
    // Keep a wide margin so that sums of a few such values cannot overflow either.
    if v > (isize::MAX as u128) / 8 {
        return Err(Error::Overflow(format!("{what} = {v} is too large for index arithmetic")));
    }
    Ok(v as isize)
}

fn make_tap(j: usize, off: isize, in_step: usize, count: usize, len: usize) -> Tap {
    // m·in_step + off >= 0  <=>  m >= ceil(-off / in_step)
    let step = in_step as isize;
    let lo = if off < 0 { ((-off) + step - 1) / step } else { 0 } as usize;
    // m·in_step + off <= len - 1  <=>  m <= (len - 1 - off) / in_step
    let last = len as isize - 1 - off;
    let hi = if last < 0 { 0 } else { (last / step) as usize + 1 };
    let hi = hi.min(count);
    let lo = lo.min(hi);
    Tap { j, off, lo, hi }
}

impl Geometry {
    fn new(p: &ConvProblem) -> Result<Geometry> {
        let cg = p.in_channels / p.groups;
        let kg = p.out_channels / p.groups;
        let kk = checked_product(&p.kernel, "kernel size")?;
        let mut out_step = [1usize; 3];
        let mut phases: [Vec<Phase>; 3] = Default::default();
        for d in 0..3 {
            let (len, out, k, s, dil, pad) =
                (p.in_size[d], p.out_size[d], p.kernel[d], p.stride[d], p.dilation[d], p.pad[d]);
            if s == 0 {
                return Err(Error::config("stride", format!("{:?}", p.stride), "every stride must be at least 1"));
            }
            if dil == 0 {
                return Err(Error::config(
                    "dilation",
                    format!("{:?}", p.dilation),
                    "every dilation must be at least 1",
                ));
            }
            to_isize(s as u128, "stride")?;
            let span = to_isize((k as u128 - 1) * dil as u128, "kernel span")?;
            let padi = to_isize(pad as u128, "padding")?;
            to_isize(len as u128, "input size")?;
            if !p.transposed {
                if out > 0 {
                    let reach = to_isize((out as u128 - 1) * s as u128, "output reach")?;
                    let hi = reach + span - padi; // largest input index read
                    let lo = -padi; // smallest input index read
                    let l = len as isize;
                    let ok = match p.pad_mode {
                        PaddingMode::Zeros => true,
                        PaddingMode::Replicate => l >= 1,
                        PaddingMode::Reflect => l >= 1 && -lo < l && hi <= 2 * (l - 1),
                        PaddingMode::Circular => l >= 1 && -lo <= l && hi < 2 * l,
                    };
                    if !ok {
                        return Err(Error::config(
                            "padding",
                            format!("{:?}", p.pad),
                            format!(
                                "{} padding of dimension {d} reads input indices {lo}..={hi} of an input of size {len}; \
                                 reflect needs padding < size, circular padding <= size on both sides",
                                p.pad_mode.as_str()
                            ),
                        ));
                    }
                }
                let taps = (0..k).map(|j| make_tap(j, (j * dil) as isize - padi, s, out, len)).collect();
                phases[d] = vec![Phase { count: out, in_step: s, taps }];
            } else {
                if p.pad_mode != PaddingMode::Zeros {
                    return Err(Error::config(
                        "padding_mode",
                        p.pad_mode.as_str(),
                        "transposed convolutions only support zeros padding",
                    ));
                }
                to_isize(out as u128 + pad as u128, "output size + padding")?;
                out_step[d] = s;
                // Phase φ = o mod s (φ < min(out, s)): o = m·s + φ, and with r = (φ + pad) mod s,
                // m_lo = (φ + pad) / s, tap j contributes iff j·dil ≡ r (mod s), reading
                // i = m + m_lo − (j·dil − r)/s.
                let nph = out.min(s);
                let mut list = Vec::with_capacity(nph);
                for phi in 0..nph {
                    let count = (out - phi).div_ceil(s);
                    let r = (phi + pad) % s;
                    let m_lo = ((phi + pad) / s) as isize;
                    let taps = (0..k)
                        .filter(|&j| (j * dil) % s == r)
                        .map(|j| {
                            let t = ((j * dil - r) / s) as isize;
                            make_tap(j, m_lo - t, 1, count, len)
                        })
                        .collect();
                    list.push(Phase { count, in_step: 1, taps });
                }
                phases[d] = list;
            }
        }
        Ok(Geometry {
            cg,
            kg,
            kk,
            out_step,
            phases,
            in_plane: checked_product(&p.in_size, "input spatial size")?,
            out_plane: checked_product(&p.out_size, "output spatial size")?,
        })
    }
}

// ------------------------------------------------------------------------------------------------
// Entry point
// ------------------------------------------------------------------------------------------------

/// Runs the convolution `p` with the packed weight `w`: `y = conv(x, w) + bias`.
///
/// `x` has `p.input_len()` elements, `y` `p.output_len()` (fully overwritten) and `bias`, if
/// any, `p.out_channels`. The algorithm is described in the documentation of `src/cpu/engine.rs`.
///
/// Errors: [`Error::Shape`] if a length does not match `p` or `w` does not fit `p`;
/// [`Error::InvalidConfig`] for a zero stride or dilation, a non-zeros padding mode on a
/// transposed convolution, or a reflect/circular padding larger than the input allows;
/// [`Error::Overflow`] if a size does not fit the index arithmetic.
pub fn conv(p: &ConvProblem, w: &PackedWeight, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) -> Result<()> {
    conv_with(p, w, bias, x, y, Level::Best)
}

/// Which micro-kernels [`conv_with`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    /// The best the CPU has (AVX-512F, else AVX2 + FMA, else portable).
    Best,
    /// At most AVX2 + FMA (tests and comparisons).
    #[cfg_attr(not(test), allow(dead_code))]
    Avx2,
    /// The portable kernels only (tests of the non-SIMD fallback).
    #[cfg_attr(not(test), allow(dead_code))]
    Portable,
}

/// The instruction set [`conv`] uses on this CPU (reported by [`super::simd_level`]).
pub(crate) fn best_level_name() -> &'static str {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        if x86::Avx512::detect().is_some() {
            return "avx512f";
        }
        if x86::Avx2Fma::detect().is_some() {
            return "avx2+fma";
        }
    }
    "portable"
}

/// [`conv`] with the micro-kernels of at most `level`.
fn conv_with(
    p: &ConvProblem,
    w: &PackedWeight,
    bias: Option<&[f32]>,
    x: &[f32],
    y: &mut [f32],
    level: Level,
) -> Result<()> {
    if !w.matches(p) {
        return Err(Error::shape(
            "weight",
            &[w.in_channels, w.out_channels, w.groups, w.kernel[0], w.kernel[1], w.kernel[2]],
            format!(
                "the packed weight (in_channels, out_channels, groups, kernel{}) does not fit the problem \
                 (in_channels {}, out_channels {}, groups {}, kernel {:?}, transposed {})",
                if w.transposed { ", transposed" } else { "" },
                p.in_channels,
                p.out_channels,
                p.groups,
                p.kernel,
                p.transposed
            ),
        ));
    }
    let in_len =
        checked_product(&[p.batch, p.in_channels, p.in_size[0], p.in_size[1], p.in_size[2]], "input elements")?;
    let out_len =
        checked_product(&[p.batch, p.out_channels, p.out_size[0], p.out_size[1], p.out_size[2]], "output elements")?;
    if x.len() != in_len {
        return Err(Error::shape(
            "input",
            &[x.len()],
            format!("the problem needs {in_len} input elements ([{}, {}] × {:?})", p.batch, p.in_channels, p.in_size),
        ));
    }
    if y.len() != out_len {
        return Err(Error::shape(
            "output",
            &[y.len()],
            format!(
                "the problem needs {out_len} output elements ([{}, {}] × {:?})",
                p.batch, p.out_channels, p.out_size
            ),
        ));
    }
    if let Some(b) = bias {
        if b.len() != p.out_channels {
            return Err(Error::shape("bias", &[b.len()], format!("expected {} elements", p.out_channels)));
        }
    }
    let geo = Geometry::new(p)?;
    if out_len == 0 {
        return Ok(());
    }
    let bsrc = if w.mr == 1 {
        BSource::Packed // unused by the direct path
    } else if !p.transposed
        && p.kernel == [1, 1, 1]
        && p.stride == [1, 1, 1]
        && p.pad == [0, 0, 0]
        && p.in_size == p.out_size
    {
        BSource::Input
    } else if padded_pays_off(p, &geo, in_len) {
        BSource::Padded
    } else {
        BSource::Packed
    };
    let xp = if bsrc == BSource::Padded { build_padded(p, &geo, x) } else { Padded::default() };
    let call_id = CALL_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ctx = Ctx { p, geo, w, bias, x, bsrc, xp, call_id };
    ctx.run_best(level, y);
    recycle_padded(ctx.xp);
    Ok(())
}

/// Where the GEMM path's micro-kernel reads its input rows (`B`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BSource {
    /// Gathered into packed `[kc][NR]` micro-panels per task (any stride and padding).
    Packed,
    /// 1×1 stride-1 unpadded forward: the input rows themselves (flat positions).
    Input,
    /// The padded copy of the input: one row run per panel, no gather.
    Padded,
}

/// A copy of the input padded along every dimension (padding-mode remap baked in), so that every
/// index a tap reads is in bounds: element `(n, c, i0, i1, i2)` is at
/// `((n·C + c)·P0 + i0 − lo0)·P1 + i1 − lo1)·P2 + col(i2 − lo2)`, followed by `NR` spare zeros
/// (`col` is the identity for a unit dim-2 step, see [`Padded::col`]).
#[derive(Debug, Default)]
struct Padded {
    data: Vec<f32>,
    /// First input index of the copy per dimension (may be negative: padding).
    lo: [isize; 3],
    /// Extent of the copy: rows `dims[0] × dims[1]` of `dims[2]` values each (the row pitch).
    dims: [usize; 3],
    plane: usize,
    /// The dim-2 input step `s` of the (single) dim-2 phase: each row is stored as `s` sub-rows
    /// of `sub` values, sub-row `φ` holding padded elements `φ, φ + s, φ + 2s, …`, so that every
    /// tap reads `NR` consecutive outputs' inputs contiguously (`dims[2] = s·sub`).
    step2: usize,
    sub: usize,
    /// The zero pattern's key (zero padding only), see [`PadKey`].
    key: Option<PadKey>,
}

impl Padded {
    /// Position within a copied row of padded dim-2 index `o` (`o − lo[2]`).
    fn col(&self, o: usize) -> usize {
        let s = self.step2.max(1);
        (o % s) * self.sub + o / s
    }
}

/// Whether the GEMM path should read `B` from a padded input copy: the dim-2 input step must be 1
/// (panels are runs of one output row), rows short (long rows gather efficiently as long
/// contiguous copies, while reading `kc` far-apart long rows per panel defeats the prefetchers),
/// enough channels per tap to amortise a kernel segment, little waste from computing the padded
/// columns between rows (or from rounding row runs up to `NR`), and a padded copy of reasonable
/// size.
fn padded_pays_off(p: &ConvProblem, geo: &Geometry, in_len: usize) -> bool {
    let Some((_, dims)) = padded_extent(geo) else { return false };
    // A strided dim 2 (forward only: one phase) is stored as sub-rows, one per input phase.
    let step2 = geo.phases[2].first().map_or(1, |ph| ph.in_step);
    if step2 != 1 && geo.phases[2].len() != 1 {
        return false;
    }
    // Long rows: only if the input rows one output row reads stay cache-resident (their
    // `Cg·taps0·taps1` rows are read `NR` columns at a time, far apart).
    let long_ok = step2 > 1 && {
        let rows_read: usize = geo.cg * geo.phases[0][0].taps.len() * geo.phases[1][0].taps.len();
        rows_read.saturating_mul(dims[2]) <= LONG_ROWS_BUDGET
    };
    if geo.phases[2].iter().any(|ph| ph.count > PADDED_MAX_ROW && !long_ok) {
        return false;
    }
    // Few channels per tap make short kernel segments: fine for a forward convolution (the
    // indirect kernel takes them), not for the transposed phases (weights not contiguous).
    if geo.cg < 4 && p.transposed {
        return false;
    }
    // Consecutive rows of a phase share panels when the dim-1 input step is 1 and the gap small.
    let merged = geo.phases[1].iter().all(|ph| ph.in_step == 1);
    let (used, computed) = geo.phases[2].iter().fold((0, 0), |(u, r), ph| {
        let gap = dims[2].saturating_sub(ph.count);
        let cost =
            if merged && merge_rows_pays(ph.count, dims[2]) { ph.count + gap } else { ph.count.div_ceil(NR) * NR };
        (u + ph.count, r + cost)
    });
    // Waste: up to 25% with unit steps (a gather costs more), 1/16 with strided rows (the
    // stride-2 gather is cheaper).
    // (Tasks with many output channels pack their panels: nothing is computed twice.)
    let packs = geo.kg >= PACK_MIN_ROWS;
    if !packs && (computed * 4 > used * 5 || (step2 > 1 && computed * 16 > used * 17)) {
        return false;
    }
    match checked_product(&[p.batch, p.in_channels, dims[0], dims[1], dims[2]], "") {
        Ok(len) => len <= in_len.saturating_mul(4).saturating_add(1 << 20),
        Err(_) => false,
    }
}

/// Whether panels of the padded-input source should run across consecutive output rows of
/// `count` columns in a padded plane of width `width` (computing the `width − count` columns in
/// between) rather than start every row at a new panel.
fn merge_rows_pays(count: usize, width: usize) -> bool {
    let gap = width.saturating_sub(count);
    gap <= MAX_GAP && gap < count.div_ceil(NR) * NR - count
}

/// Per dimension, the range `[lo, lo + dims)` of input indices any tap of any phase reads.
fn padded_extent(geo: &Geometry) -> Option<([isize; 3], [usize; 3])> {
    let mut lo = [0isize; 3];
    let mut dims = [0usize; 3];
    for d in 0..3 {
        let (mut a, mut b) = (isize::MAX, isize::MIN);
        for ph in &geo.phases[d] {
            if let (Some(first), Some(last)) = (ph.taps.first(), ph.taps.last()) {
                a = a.min(first.off.min(last.off));
                b = b.max(((ph.count - 1) * ph.in_step) as isize + first.off.max(last.off) + 1);
            }
        }
        if a < b {
            lo[d] = a;
            dims[d] = usize::try_from(b - a).ok()?;
        }
    }
    Some((lo, dims))
}

/// Largest padded-copy buffer (in `f32`, 16 MiB) a thread keeps for its next call.
const PADDED_KEEP_MAX: usize = 4 << 20;

/// What fixes the zero pattern of a zero-padded copy: `(planes, dim-2 step, dims, lo, input
/// size)`. A copy built with the same key has its zeros in the same places.
type PadKey = (usize, usize, [usize; 3], [isize; 3], [usize; 3]);

thread_local! {
    /// The padded input copy's buffer, kept by the calling thread across calls: every element is
    /// overwritten, so reusing it saves zeroing (and page-faulting) a fresh allocation per call.
    /// With the key of a zero-padded copy, the next copy of the same key only copies the input
    /// rows (its zeros are already in place).
    static PADDED_BUF: std::cell::Cell<(Vec<f32>, Option<PadKey>)> =
        const { std::cell::Cell::new((Vec::new(), None)) };
}

/// Builds the padded input copy (in parallel over the `(n, c)` planes), in this thread's
/// recycled buffer (given back by [`recycle_padded`]).
fn build_padded(p: &ConvProblem, geo: &Geometry, x: &[f32]) -> Padded {
    let Some((lo, mut dims)) = padded_extent(geo) else { return Padded::default() };
    let step2 = geo.phases[2].first().map_or(1, |ph| ph.in_step).max(1);
    let width = dims[2]; // padded row length
    let sub = width.div_ceil(step2);
    dims[2] = sub * step2;
    let plane = dims[0] * dims[1] * dims[2];
    let planes = p.batch * p.in_channels;
    let (mut data, prev) = PADDED_BUF.with(|b| b.take());
    let len = planes * plane + NR;
    if data.len() < len {
        data.resize(len, 0.0);
    } else {
        data.truncate(len);
    }
    // Read (whole `NR` panels) past the last plane, never used: zero like the padding.
    data[planes * plane..].fill(0.0);
    let [l0, l1, l2] = p.in_size;
    let mode = p.pad_mode;
    let key = (mode == PaddingMode::Zeros).then_some((planes, step2, dims, lo, p.in_size));
    // Same zero pattern as the last copy in this buffer: copy the input rows only.
    let zeros_in_place = key.is_some() && key == prev;
    let (a, b) = in_bounds(lo[2], width, l2);
    let s0 = (lo[2] + a as isize).max(0) as usize; // input index of padded column `a`
    let rows_per_plane = dims[0] * dims[1];
    let rows = planes * rows_per_plane;
    if rows == 0 || dims[2] == 0 {
        return Padded { data, lo, dims, plane, step2, sub, key };
    }
    // Blocks of rows across all planes, so that a few large planes (a stem's 3) still spread
    // over every thread.
    let block = rows.div_ceil(8 * rayon::current_num_threads()).max(1);
    data[..planes * plane].par_chunks_mut(block * dims[2]).enumerate().for_each(|(bi, dst)| {
        let mut tmp = vec![0.0f32; if step2 > 1 && !zeros_in_place { dims[2] } else { 0 }];
        for (r, row) in dst.chunks_exact_mut(dims[2]).enumerate() {
            let g = bi * block + r;
            let (nc, v) = (g / rows_per_plane, g % rows_per_plane);
            let (v0, v1) = (v / dims[1], v % dims[1]);
            let i0 = mode.source_index(lo[0] + v0 as isize, l0);
            let i1 = mode.source_index(lo[1] + v1 as isize, l1);
            let (Some(i0), Some(i1)) = (i0, i1) else {
                if !zeros_in_place {
                    row.fill(0.0);
                }
                continue;
            };
            let xrow = &x[((nc * l0 + i0) * l1 + i1) * l2..][..l2];
            match (zeros_in_place, step2) {
                (true, 1) => row[a..b].copy_from_slice(&xrow[s0..s0 + (b - a)]),
                (true, 2) => {
                    // Padded column `u` (input `s0 + u − a`) sits at `col(u)` of its sub-row:
                    // even columns in the first half of the row, odd ones in the second.
                    let (even, odd) = row.split_at_mut(sub);
                    let mut u = a;
                    if u % 2 == 1 && u < b {
                        odd[u / 2] = xrow[s0];
                        u += 1;
                    }
                    let pairs = (b - u) / 2;
                    let src = &xrow[s0 + (u - a)..][..2 * pairs];
                    let j = u / 2;
                    for ((e, o), pair) in
                        even[j..j + pairs].iter_mut().zip(&mut odd[j..j + pairs]).zip(src.chunks_exact(2))
                    {
                        *e = pair[0];
                        *o = pair[1];
                    }
                    if u + 2 * pairs < b {
                        even[(u + 2 * pairs) / 2] = xrow[s0 + (u + 2 * pairs - a)];
                    }
                }
                (true, _) => {
                    // Padded column `u` (input `s0 + u − a`) sits at `col(u)` of its sub-row.
                    for phase in 0..step2 {
                        let first = a + (phase + step2 - a % step2) % step2; // first `u >= a`, `u ≡ phase`
                        if first >= b {
                            continue;
                        }
                        let count = (b - first).div_ceil(step2);
                        let at = phase * sub + first / step2;
                        let src = xrow[s0 + (first - a)..].iter().step_by(step2);
                        for (d, &v) in row[at..at + count].iter_mut().zip(src) {
                            *d = v;
                        }
                    }
                }
                (false, 1) => fill_padded(row, xrow, lo[2], mode),
                (false, _) => {
                    // Pad into `tmp` (its tail past `width` stays zero), then split the row into
                    // its `step2` sub-rows.
                    fill_padded(&mut tmp[..width], xrow, lo[2], mode);
                    for (phase, dst) in row.chunks_exact_mut(sub).enumerate() {
                        for (d, &v) in dst.iter_mut().zip(tmp[phase..].iter().step_by(step2)) {
                            *d = v;
                        }
                    }
                }
            }
        }
    });
    Padded { data, lo, dims, plane, step2, sub, key }
}

/// Gives a padded copy's buffer back to this thread for the next call.
fn recycle_padded(xp: Padded) {
    if xp.data.capacity() > 0 && xp.data.capacity() <= PADDED_KEEP_MAX {
        PADDED_BUF.with(|b| b.set((xp.data, xp.key)));
    }
}

/// Everything a task reads.
struct Ctx<'a> {
    p: &'a ConvProblem,
    geo: Geometry,
    w: &'a PackedWeight,
    bias: Option<&'a [f32]>,
    x: &'a [f32],
    bsrc: BSource,
    xp: Padded,
    /// Unique per `conv` call (keys the reuse of zero borders in `Workspace::xpad`).
    call_id: u64,
}

/// Source of [`Ctx::call_id`].
static CALL_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What determines the zero pattern of a zero-padded direct-path window: `(call, phase-0 tap
/// list, m0, first input row, rows, lo2, row length)`. Equal keys mean equal zeros, so a refill
/// only needs to copy the in-bounds parts.
type WindowKey = (u64, usize, usize, isize, usize, isize, usize);

/// A GEMM task: output channels `k0..k0 + rows.len()` of group `g`, positions `p0..p1` of image `n`.
struct GemmTask<'y> {
    n: usize,
    g: usize,
    k0: usize,
    p0: usize,
    p1: usize,
    rows: Vec<&'y mut [f32]>,
}

/// A direct-path task: output rows `row0..` of channel `k` of image `n` (`out` holds them).
struct DirectTask<'y> {
    n: usize,
    k: usize,
    row0: usize,
    out: &'y mut [f32],
}

/// A run of columns of one sub-convolution inside one output row.
#[derive(Clone, Copy, Debug)]
struct Seg {
    /// Sub-convolution (phase index per dimension).
    key: [usize; 3],
    m0: usize,
    m1: usize,
    m2: usize,
    len: usize,
    /// First column of the run in the sub-convolution's `Col`/`Ct` tiles.
    col: usize,
    /// Position of the first element in the task's output rows (`o − p0`).
    dest: usize,
    /// Padded-input source: offset of the run's first column in the padded plane (tap offset 0),
    /// and whether the run starts a new column run of panels (else it continues the previous
    /// run, the padded columns in between being computed and discarded).
    poff: usize,
    new_run: bool,
}

/// Per-task scratch buffers, reused across the tasks a rayon worker runs.
#[derive(Default)]
struct Workspace {
    col: Vec<f32>,
    ct: Vec<f32>,
    segs: Vec<Seg>,
    asegs: Vec<ASeg>,
    /// Reduction rows of a packed panel (`[kc][NR]` layout), see `gemm_subconv`.
    psegs: Vec<ASeg>,
    boffs: RowOffsets,
    /// Pieces of the packed padded-source panels, and where each panel's start.
    pieces: Vec<Piece>,
    piece_at: Vec<usize>,
    panel_base: Vec<usize>,
    tap_off: Vec<usize>,
    xpad: Vec<f32>,
    dtaps: Vec<(usize, f32)>,
    dvtaps: Vec<(usize, [f32; 3])>,
    dout: Vec<f32>,
    /// Zero pattern of `xpad` as the last `fill_window` left it (zero padding, padded layout).
    xpad_key: Option<WindowKey>,
}

thread_local! {
    /// The scratch buffers of this thread, kept across tasks and calls (like a oneDNN scratchpad).
    static WORKSPACE: std::cell::RefCell<Workspace> = std::cell::RefCell::new(Workspace::default());
}

/// Runs `f` with this thread's workspace (a fresh one in the unexpected case that it is in use).
fn with_workspace<R>(f: impl FnOnce(&mut Workspace) -> R) -> R {
    WORKSPACE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut ws) => f(&mut ws),
        Err(_) => f(&mut Workspace::default()),
    })
}

/// Splits `n` items into `parts` near-equal consecutive ranges; returns the `parts + 1` bounds.
fn split_bounds(n: usize, parts: usize) -> Vec<usize> {
    (0..=parts).map(|i| i * n / parts).collect()
}

impl Ctx<'_> {
    /// Runs with the best micro-kernels of at most `level`.
    fn run_best(&self, level: Level, y: &mut [f32]) {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        if let Some(k) = x86::Avx512::detect().filter(|_| level == Level::Best) {
            return self.run(k, y);
        }
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        if let Some(k) = x86::Avx2Fma::detect().filter(|_| level != Level::Portable) {
            return self.run(k, y);
        }
        self.run(Portable, y)
    }

    fn run<K: Kernel>(&self, kern: K, y: &mut [f32]) {
        if self.w.mr == 1 {
            self.run_direct(kern, y);
        } else {
            self.run_gemm(kern, y);
        }
    }

    // --------------------------------------------------------------------------------------------
    // GEMM path
    // --------------------------------------------------------------------------------------------

    fn run_gemm<K: Kernel>(&self, kern: K, y: &mut [f32]) {
        let p = self.p;
        let (kg, plane) = (self.geo.kg, self.geo.out_plane);
        let threads = rayon::current_num_threads().max(1);
        let want = 4 * threads;
        let ng = p.batch * p.groups;
        let phases: usize = self.geo.out_step.iter().product();
        let mr = self.w.mr;
        let kblocks = kg.div_ceil(mr);
        // Columns per task and sub-convolution: NC_MAX, fewer when Kg is large (Ct budget).
        let nc = (CT_BUDGET / (kblocks * mr)).clamp(2 * NR, NC_MAX) / NR * NR;
        // Tasks split the positions at multiples of `NR`, or at whole output rows when `B` is the
        // padded input read in runs (a task's panels run across its rows: cutting a row would
        // round two runs up to `NR` instead of one).
        let unit = if self.bsrc == BSource::Padded && kg < PACK_MIN_ROWS { p.out_size[2] } else { NR };
        let units = plane.div_ceil(unit);
        let mut pt = plane.div_ceil(nc.saturating_mul(phases)).clamp(1, units);
        if ng.saturating_mul(pt) < want {
            pt = want.div_ceil(ng).clamp(pt, units);
        }
        let mut kt = 1;
        if ng.saturating_mul(pt) < want {
            kt = want.div_ceil(ng * pt).clamp(1, kblocks);
        }
        // Few tasks: make their number a multiple of the thread count (balanced finish).
        if ng.saturating_mul(kt * pt) < 4 * want && !(ng * kt * pt).is_multiple_of(threads) {
            let balanced = (pt..=units.min(2 * pt)).find(|&v| (ng * kt * v).is_multiple_of(threads));
            pt = balanced.unwrap_or(pt);
        }
        let pb: Vec<usize> = split_bounds(units, pt).into_iter().map(|u| (u * unit).min(plane)).collect();
        let kb: Vec<usize> = split_bounds(kblocks, kt).into_iter().map(|b| (b * mr).min(kg)).collect();
        let mut tasks: Vec<GemmTask> = Vec::with_capacity(ng * kt * pt);
        for n in 0..p.batch {
            for g in 0..p.groups {
                for ki in 0..kt {
                    for pi in 0..pt {
                        tasks.push(GemmTask {
                            n,
                            g,
                            k0: kb[ki],
                            p0: pb[pi],
                            p1: pb[pi + 1],
                            rows: Vec::with_capacity(kb[ki + 1] - kb[ki]),
                        });
                    }
                }
            }
        }
        // Hand every (n, k) output row's position ranges to their tasks (disjoint &mut slices).
        let mut kblock_of = vec![0usize; kg];
        for ki in 0..kt {
            kblock_of[kb[ki]..kb[ki + 1]].fill(ki);
        }
        for (row_idx, row) in y.chunks_mut(plane).enumerate() {
            let (n, k) = (row_idx / p.out_channels, row_idx % p.out_channels);
            let (g, kl) = (k / kg, k % kg);
            let base = ((n * p.groups + g) * kt + kblock_of[kl]) * pt;
            let mut rest = row;
            for pi in 0..pt {
                let (piece, tail) = rest.split_at_mut(pb[pi + 1] - pb[pi]);
                tasks[base + pi].rows.push(piece);
                rest = tail;
            }
        }
        tasks.into_par_iter().for_each(|task| with_workspace(|ws| self.gemm_task(kern, ws, task)));
    }

    fn gemm_task<K: Kernel>(&self, kern: K, ws: &mut Workspace, mut task: GemmTask<'_>) {
        if task.p1 <= task.p0 || task.rows.is_empty() {
            return;
        }
        let p = self.p;
        let geo = &self.geo;
        let [_, o1n, o2n] = p.out_size;
        // Column runs of every sub-convolution inside [p0, p1), grouped by sub-convolution.
        let mut segs = std::mem::take(&mut ws.segs);
        segs.clear();
        let (first_row, last_row) = (task.p0 / o2n, (task.p1 - 1) / o2n);
        for row in first_row..=last_row {
            let (o0, o1) = (row / o1n, row % o1n);
            let (ph0, m0) = (o0 % geo.out_step[0], o0 / geo.out_step[0]);
            let (ph1, m1) = (o1 % geo.out_step[1], o1 / geo.out_step[1]);
            let a = task.p0.max(row * o2n) - row * o2n;
            let b = task.p1.min((row + 1) * o2n) - row * o2n;
            let s2 = geo.out_step[2];
            for (ph2, phase) in geo.phases[2].iter().enumerate() {
                // o2 = m2·s2 + ph2 in [a, b)
                let lo = a.saturating_sub(ph2).div_ceil(s2);
                let hi = b.saturating_sub(ph2).div_ceil(s2).min(phase.count);
                if lo < hi {
                    segs.push(Seg {
                        key: [ph0, ph1, ph2],
                        m0,
                        m1,
                        m2: lo,
                        len: hi - lo,
                        col: 0,
                        poff: 0,
                        new_run: true,
                        dest: row * o2n + lo * s2 + ph2 - task.p0,
                    });
                }
            }
        }
        segs.sort_by_key(|s| s.key);
        let mut start = 0;
        while start < segs.len() {
            let key = segs[start].key;
            let mut end = start;
            let mut cols = 0usize;
            if self.bsrc == BSource::Padded {
                // With B read from the padded input in place, a panel covers `NR` consecutive
                // columns of the padded plane: consecutive output rows whose padded offsets are
                // at most `MAX_GAP` apart share one run (the gap columns are computed and
                // discarded), other runs start at a new panel.
                let [_, d1, d2] = self.xp.dims;
                let (st0, st1) = (geo.phases[0][key[0]].in_step, geo.phases[1][key[1]].in_step);
                // Merge only where the gap wastes less than rounding each row up to `NR` does.
                let count = geo.phases[2][key[2]].count;
                let max_gap = if merge_rows_pays(count, d2) { MAX_GAP } else { 0 };
                // With many output channels, panels are rather packed from the copy (columns =
                // output positions, nothing computed twice; see `gemm_subconv`).
                let pack = self.packs_panels(&task);
                let mut prev: Option<(usize, usize)> = None; // (padded end offset, end column)
                while end < segs.len() && segs[end].key == key {
                    let sg = &mut segs[end];
                    sg.poff = ((sg.m0 * st0) * d1 + sg.m1 * st1) * d2 + sg.m2;
                    if pack {
                        sg.col = cols;
                        cols += sg.len;
                        end += 1;
                        continue;
                    }
                    match prev {
                        Some((eo, ec)) if sg.poff >= eo && sg.poff - eo <= max_gap => {
                            sg.col = ec + (sg.poff - eo);
                            sg.new_run = false;
                        }
                        _ => {
                            sg.col = cols.div_ceil(NR) * NR;
                            sg.new_run = true;
                        }
                    }
                    cols = sg.col + sg.len;
                    prev = Some((sg.poff + sg.len, cols));
                    end += 1;
                }
                cols = cols.div_ceil(NR) * NR;
            } else {
                while end < segs.len() && segs[end].key == key {
                    segs[end].col = cols;
                    cols += segs[end].len;
                    end += 1;
                }
            }
            self.gemm_subconv(kern, ws, &mut task, &segs[start..end], cols);
            start = end;
        }
        ws.segs = segs;
    }

    /// Whether a padded-source task packs its panels from the copy (rather than reading runs of
    /// the padded plane in place): when it has enough output channels that one packed panel
    /// serves many micro-kernel calls (a panel costs about one masked load and store per
    /// reduction row, a call `mr` FMAs per row).
    fn packs_panels(&self, task: &GemmTask<'_>) -> bool {
        task.rows.len() >= PACK_MIN_ROWS
    }

    /// Computes one sub-convolution's columns of a task and writes them (plus bias) to the output.
    fn gemm_subconv<K: Kernel>(&self, kern: K, ws: &mut Workspace, task: &mut GemmTask<'_>, segs: &[Seg], cols: usize) {
        let p = self.p;
        let geo = &self.geo;
        let key = segs[0].key;
        let ph = [&geo.phases[0][key[0]], &geo.phases[1][key[1]], &geo.phases[2][key[2]]];
        let ntaps = [ph[0].taps.len(), ph[1].taps.len(), ph[2].taps.len()];
        let nt = ntaps[0] * ntaps[1] * ntaps[2];
        let kcount = task.rows.len();
        let kgk = task.k0 + p.out_channels / p.groups * task.g; // global index of the first channel
        let bias = |kl: usize| self.bias.map_or(0.0, |b| b[kgk + kl]);
        let step2 = geo.out_step[2];
        if nt == 0 {
            // No tap reaches these outputs: bias only.
            for (kl, row) in task.rows.iter_mut().enumerate() {
                let b = bias(kl);
                for s in segs {
                    for u in 0..s.len {
                        row[s.dest + u * step2] = b;
                    }
                }
            }
            return;
        }
        let cg = geo.cg;
        let npanels = cols.div_ceil(NR);
        let mr = self.w.mr;
        let nmr = kcount.div_ceil(mr);
        let ldc = npanels * NR; // Ct is [kcount rounded up to mr][ldc]
        let ct_len = nmr * mr * ldc;
        if ws.ct.len() < ct_len {
            ws.ct.resize(ct_len, 0.0);
        }
        let panel_len = geo.kk * cg * mr; // one packed panel of the weight
        let wbase = (task.g * self.w.panels + task.k0 / mr) * panel_len;
        // Reduction chunks: whole taps when Cg < KC, else channel ranges of one tap.
        // Padded input rows straddle cache lines: half-size chunks keep a panel's rows in L1, unless
        // few channels per tap (short, overlapping rows: the indirect kernel) make them few.
        let kc_max = if self.bsrc == BSource::Padded && cg >= IND_MAX_SEG { KC / 2 } else { KC };
        let (taps_per_chunk, cchunks) = if cg >= kc_max { (1, cg.div_ceil(kc_max)) } else { (kc_max / cg, 1) };
        let cb = split_bounds(cg, cchunks);
        // Padded B: each panel's first input element (for tap offset 0) and each tap's offset.
        ws.panel_base.clear();
        ws.tap_off.clear();
        if self.bsrc == BSource::Padded {
            let xp = &self.xp;
            let [_, p1, p2] = xp.dims;
            if self.packs_panels(task) {
                // Columns are the task's positions: each panel's pieces (one per output row it
                // touches). A panel within one row is read in place from its first input.
                ws.pieces.clear();
                ws.piece_at.clear();
                ws.piece_at.push(0);
                for q in 0..npanels {
                    let (lo, hi) = (q * NR, (q * NR + NR).min(cols));
                    for sg in segs.iter().filter(|sg| sg.col < hi && sg.col + sg.len > lo) {
                        let a = sg.col.max(lo);
                        let b = (sg.col + sg.len).min(hi);
                        ws.pieces.push((a - lo, b - a, sg.poff + (a - sg.col)));
                    }
                    ws.piece_at.push(ws.pieces.len());
                    let first = &ws.pieces[ws.piece_at[q]];
                    ws.panel_base.push(first.2);
                }
            } else {
                // Runs of columns (see `gemm_task`): each starts at a panel boundary.
                let mut runs = segs.iter().filter(|s| s.new_run).peekable();
                while let Some(r) = runs.next() {
                    let end = runs.peek().map_or(cols, |n| n.col);
                    for u in (0..end - r.col).step_by(NR) {
                        ws.panel_base.push(r.poff + u);
                    }
                }
            }
            for t in 0..nt {
                let (t2, rest) = (t % ntaps[2], t / ntaps[2]);
                let (t1, t0) = (rest % ntaps[1], rest / ntaps[1]);
                let o0 = (ph[0].taps[t0].off - xp.lo[0]) as usize;
                let o1 = (ph[1].taps[t1].off - xp.lo[1]) as usize;
                let o2 = xp.col((ph[2].taps[t2].off - xp.lo[2]) as usize);
                ws.tap_off.push((o0 * p1 + o1) * p2 + o2);
            }
        }
        let chan_base = task.n * p.in_channels + task.g * cg;
        let mut first = true;
        let mut t0 = 0;
        while t0 < nt {
            let t1 = (t0 + taps_per_chunk).min(nt);
            for ci in 0..cchunks {
                let (c0, c1) = (cb[ci], cb[ci + 1]);
                let ncc = c1 - c0;
                let kc = (t1 - t0) * ncc;
                let mut full_panels = 0; // panels read in place from x (1×1)
                match self.bsrc {
                    BSource::Packed => {
                        let col_len = npanels * kc * NR;
                        if ws.col.len() < col_len {
                            ws.col.resize(col_len, 0.0);
                        }
                        self.gather(kern, &mut ws.col, task, segs, ph, ntaps, (t0, t1), (c0, c1), kc, cols);
                    }
                    BSource::Input => {
                        full_panels = cols / NR;
                        if ws.col.len() < npanels * kc * NR {
                            ws.col.resize(npanels * kc * NR, 0.0);
                        }
                        self.pack_1x1_tail(&mut ws.col, task, c0, c1, cols);
                    }
                    BSource::Padded => {}
                }
                // The chunk's reduction rows, merged where both the weight and the input rows are
                // contiguous. Input offsets are relative to the panel's first input (the same for
                // every panel), except for the copied tail panel of the 1×1 path.
                let ldb_main = match self.bsrc {
                    BSource::Padded => self.xp.plane,
                    BSource::Input => geo.in_plane,
                    BSource::Packed => NR,
                };
                let rows_of = |asegs: &mut Vec<ASeg>, ldb: usize, chan0: usize, packed: bool| {
                    asegs.clear();
                    for (ti, t) in (t0..t1).enumerate() {
                        let j = self.tap_index(ph, ntaps, t);
                        let a_off = (j * cg + c0) * mr;
                        let b_off = match self.bsrc {
                            _ if packed => ti * ncc * NR,
                            BSource::Padded => chan0 * ldb + ws.tap_off[t],
                            BSource::Input => chan0 * ldb,
                            BSource::Packed => ti * ncc * NR,
                        };
                        match asegs.last_mut() {
                            Some(last) if last.0 + last.1 * mr == a_off && last.2 + last.1 * ldb == b_off => {
                                last.1 += ncc
                            }
                            _ => asegs.push((a_off, ncc, b_off)),
                        }
                    }
                };
                let mut asegs = std::mem::take(&mut ws.asegs);
                rows_of(&mut asegs, ldb_main, chan_base + c0, self.bsrc == BSource::Packed);
                // Padded source with packed panels: the rows of a packed panel, and every row's
                // input offset (relative to a piece's first input).
                let pack = self.bsrc == BSource::Padded && self.packs_panels(task);
                let mut psegs = std::mem::take(&mut ws.psegs);
                if pack {
                    rows_of(&mut psegs, NR, 0, true);
                    if ws.col.len() < kc * NR {
                        ws.col.resize(kc * NR, 0.0);
                    }
                }
                // Many short segments (few channels per tap) whose weights are contiguous: one
                // indirect call, with an offset per reduction row, instead.
                let indirect = asegs.len() > 1
                    && kc < IND_MAX_SEG * asegs.len()
                    && asegs.windows(2).all(|s| s[0].0 + s[0].1 * mr == s[1].0);
                if indirect || pack {
                    ws.boffs.clear();
                    for &(_, len, boff) in &asegs {
                        for u in 0..len {
                            ws.boffs.push(boff + u * ldb_main);
                        }
                    }
                }
                for q in 0..npanels {
                    let tail = self.bsrc == BSource::Input && q >= full_panels;
                    if tail {
                        rows_of(&mut asegs, NR, 0, true); // `col` holds the tail panel as [kc][NR]
                    }
                    // A packed-panel task packs the panels that span several output rows (or end
                    // short); a panel inside one row is read in place like any other.
                    let packed_here = pack && {
                        let pieces = &ws.pieces[ws.piece_at[q]..ws.piece_at[q + 1]];
                        !(pieces.len() == 1 && pieces[0].1 == NR)
                    };
                    if packed_here {
                        let pieces = &ws.pieces[ws.piece_at[q]..ws.piece_at[q + 1]];
                        kern.pack_panel(&mut ws.col[..kc * NR], &self.xp.data, &ws.boffs, pieces);
                    }
                    let (b, ldb): (&[f32], usize) = match self.bsrc {
                        _ if packed_here => (&ws.col[..kc * NR], NR),
                        BSource::Padded => (&self.xp.data[ws.panel_base[q]..], ldb_main),
                        BSource::Input if !tail => (&self.x[task.p0 + q * NR..], ldb_main),
                        _ => (&ws.col[q * kc * NR..(q + 1) * kc * NR], NR),
                    };
                    for i in 0..nmr {
                        let a = &self.w.data[wbase + i * panel_len..wbase + (i + 1) * panel_len];
                        let c = &mut ws.ct[i * mr * ldc + q * NR..(i + 1) * mr * ldc];
                        if packed_here {
                            kern.gemm(mr, a, &psegs, b, ldb, c, ldc, !first);
                        } else if indirect && !tail {
                            kern.gemm_ind(mr, &a[asegs[0].0..], b, &ws.boffs, c, ldc, !first);
                        } else {
                            kern.gemm(mr, a, &asegs, b, ldb, c, ldc, !first);
                        }
                    }
                }
                ws.asegs = asegs;
                ws.psegs = psegs;
                first = false;
            }
            t0 = t1;
        }
        // Epilogue: Ct (+ bias) → output rows.
        for (kl, row) in task.rows.iter_mut().enumerate() {
            let b = bias(kl);
            let crow = &ws.ct[kl * ldc..(kl + 1) * ldc];
            for s in segs {
                let src = &crow[s.col..s.col + s.len];
                if step2 == 1 {
                    for (d, &v) in row[s.dest..s.dest + s.len].iter_mut().zip(src) {
                        *d = v + b;
                    }
                } else {
                    for (u, &v) in src.iter().enumerate() {
                        row[s.dest + u * step2] = v + b;
                    }
                }
            }
        }
    }

    /// Flattened kernel index of tap `t` of a sub-convolution (taps ordered dim 0, 1, 2).
    #[inline]
    fn tap_index(&self, ph: [&Phase; 3], ntaps: [usize; 3], t: usize) -> usize {
        let (t2, rest) = (t % ntaps[2], t / ntaps[2]);
        let (t1, t0) = (rest % ntaps[1], rest / ntaps[1]);
        let k = self.p.kernel;
        (ph[0].taps[t0].j * k[1] + ph[1].taps[t1].j) * k[2] + ph[2].taps[t2].j
    }

    /// 1×1 direct path: copies the ragged last panel (if any) into `col` panel layout.
    fn pack_1x1_tail(&self, col: &mut [f32], task: &GemmTask<'_>, c0: usize, c1: usize, cols: usize) {
        let w = cols % NR;
        if w == 0 {
            return;
        }
        let q = cols / NR;
        let kc = c1 - c0;
        let plane = self.geo.in_plane;
        let cg = self.geo.cg;
        for (r, c) in (c0..c1).enumerate() {
            let src = (task.n * self.p.in_channels + task.g * cg + c) * plane + task.p0 + q * NR;
            let dst = &mut col[(q * kc + r) * NR..(q * kc + r + 1) * NR];
            dst[..w].copy_from_slice(&self.x[src..src + w]);
            dst[w..].fill(0.0);
        }
    }

    /// Gathers the `Col` tile of reduction rows `(t, c)`, `t in taps`, `c in chans` (tap-major),
    /// for the column runs `segs`, into `col` as panels `[cols/NR][kc][NR]`.
    #[allow(clippy::too_many_arguments)]
    fn gather<K: Kernel>(
        &self,
        kern: K,
        col: &mut [f32],
        task: &GemmTask<'_>,
        segs: &[Seg],
        ph: [&Phase; 3],
        ntaps: [usize; 3],
        taps: (usize, usize),
        chans: (usize, usize),
        kc: usize,
        cols: usize,
    ) {
        let p = self.p;
        let geo = &self.geo;
        let [l0, l1, l2] = p.in_size;
        let mode = p.pad_mode;
        let ncc = chans.1 - chans.0;
        let chan_base = task.n * p.in_channels + task.g * geo.cg;
        // Zero the lanes past the last column (their results are discarded; keep them finite).
        if !cols.is_multiple_of(NR) {
            let q = cols / NR;
            for r in 0..kc {
                col[(q * kc + r) * NR + cols % NR..(q * kc + r + 1) * NR].fill(0.0);
            }
        }
        for t in taps.0..taps.1 {
            let (t2, rest) = (t % ntaps[2], t / ntaps[2]);
            let (t1, t0) = (rest % ntaps[1], rest / ntaps[1]);
            let (tap0, tap1, tap2) = (&ph[0].taps[t0], &ph[1].taps[t1], &ph[2].taps[t2]);
            let st2 = ph[2].in_step;
            for s in segs {
                let i0 = mode.source_index((s.m0 * ph[0].in_step) as isize + tap0.off, l0);
                let i1 = mode.source_index((s.m1 * ph[1].in_step) as isize + tap1.off, l1);
                let (Some(i0), Some(i1)) = (i0, i1) else {
                    for c in 0..ncc {
                        fill_run(col, kc, (t - taps.0) * ncc + c, s.col, s.len, 0.0);
                    }
                    continue;
                };
                // Split the run into the part before, inside and after the input along dim 2.
                let (m_end, in_lo, in_hi) = (s.m2 + s.len, tap2.lo.max(s.m2), tap2.hi.min(s.m2 + s.len));
                let (in_lo, in_hi) = if in_lo < in_hi { (in_lo, in_hi) } else { (m_end, m_end) };
                for c in 0..ncc {
                    let r = (t - taps.0) * ncc + c;
                    let base = ((chan_base + chans.0 + c) * l0 + i0) * l1 + i1;
                    let xrow = &self.x[base * l2..(base + 1) * l2];
                    let edge = |m: usize| mode.source_index((m * st2) as isize + tap2.off, l2).map_or(0.0, |i| xrow[i]);
                    let mut at = s.col;
                    for m in s.m2..in_lo.min(m_end) {
                        put(col, kc, r, at, edge(m));
                        at += 1;
                    }
                    if in_lo < in_hi {
                        let first = ((in_lo * st2) as isize + tap2.off) as usize;
                        let n = in_hi - in_lo;
                        if st2 == 1 {
                            write_run(col, kc, r, at, &xrow[first..first + n]);
                        } else if st2 == 2 {
                            kern.run_s2(col, kc, r, at, &xrow[first..], n);
                        } else {
                            write_run_strided(col, kc, r, at, &xrow[first..], st2, n);
                        }
                        at += n;
                    }
                    for m in in_hi..m_end {
                        put(col, kc, r, at, edge(m));
                        at += 1;
                    }
                }
            }
        }
    }

    // --------------------------------------------------------------------------------------------
    // Direct path (Kg == 1)
    // --------------------------------------------------------------------------------------------

    fn run_direct<K: Kernel>(&self, kern: K, y: &mut [f32]) {
        let p = self.p;
        let plane = self.geo.out_plane;
        let o2n = p.out_size[2];
        let nrows = p.out_size[0] * p.out_size[1];
        let threads = rayon::current_num_threads().max(1);
        let rows_total = p.batch * p.out_channels;
        let rt = (4 * threads).div_ceil(rows_total).clamp(1, nrows.max(1));
        let rb = split_bounds(nrows, rt);
        let mut tasks = Vec::with_capacity(rows_total * rt);
        for (row_idx, row) in y.chunks_mut(plane).enumerate() {
            let (n, k) = (row_idx / p.out_channels, row_idx % p.out_channels);
            let mut rest = row;
            for ri in 0..rt {
                let (piece, tail) = rest.split_at_mut((rb[ri + 1] - rb[ri]) * o2n);
                tasks.push(DirectTask { n, k, row0: rb[ri], out: piece });
                rest = tail;
            }
        }
        tasks.into_par_iter().for_each(|task| with_workspace(|ws| self.direct_task(kern, ws, task)));
    }

    fn direct_task<K: Kernel>(&self, kern: K, ws: &mut Workspace, task: DirectTask<'_>) {
        let p = self.p;
        let geo = &self.geo;
        let [_, o1n, o2n] = p.out_size;
        let g = task.k; // Kg == 1
        let b = self.bias.map_or(0.0, |b| b[task.k]);
        let row1 = task.row0 + task.out.len() / o2n;
        let (s0, s1) = (geo.out_step[0], geo.out_step[1]);
        // Dim 2, input step 1 (stride-1 forward, every transposed phase): padded rows cover
        // [lo2, hi2), every index any phase's taps read plus slack so that the last tile of a row
        // may run past its end. Input step > 1 (strided forward, one phase): one decimated row
        // `xd[m] = x̃[m·step + off]` per tap, so the kernel always reads unit-stride.
        let decimated = geo.phases[2].first().is_some_and(|ph| ph.in_step > 1);
        let out = task.out;
        if geo.phases[2].iter().all(|ph| ph.taps.is_empty()) {
            out.fill(b); // no tap reaches any output
            return;
        }
        let (mut lo2, mut hi2) = (0isize, 0isize);
        if !decimated {
            (lo2, hi2) = (isize::MAX, isize::MIN);
            for ph2 in &geo.phases[2] {
                if let (Some(first), Some(last)) = (ph2.taps.first(), ph2.taps.last()) {
                    let tiles = ph2.count.div_ceil(DW);
                    lo2 = lo2.min(first.off.min(last.off));
                    hi2 = hi2.max((tiles * DW - 1) as isize + first.off.max(last.off) + 1);
                }
            }
        }
        let w2 = (hi2 - lo2) as usize;
        let dec_w = geo.phases[2].first().map_or(0, |ph| ph.count.div_ceil(DW) * DW);
        let row_len = if decimated { geo.phases[2].first().map_or(0, |ph| ph.taps.len()) * dec_w } else { w2 };
        let mut dtaps = std::mem::take(&mut ws.dtaps);
        let mut dvtaps = std::mem::take(&mut ws.dvtaps);
        for o0 in task.row0 / o1n..=(row1 - 1) / o1n {
            let (ph0, m0) = (&geo.phases[0][o0 % s0], o0 / s0);
            // Output rows o1 in [a, b) of this plane belong to the task.
            let a = task.row0.max(o0 * o1n) - o0 * o1n;
            let bnd = row1.min((o0 + 1) * o1n) - o0 * o1n;
            for (phi1, ph1) in geo.phases[1].iter().enumerate() {
                // o1 = m1·s1 + phi1 in [a, bnd)
                let (m1a, m1b) =
                    (a.saturating_sub(phi1).div_ceil(s1), bnd.saturating_sub(phi1).div_ceil(s1).min(ph1.count));
                if m1a >= m1b {
                    continue;
                }
                let (Some(f1), Some(l1)) = (ph1.taps.first(), ph1.taps.last()) else {
                    self.direct_bias_rows(out, task.row0, o0, (phi1, m1a, m1b), b);
                    continue;
                };
                if ph0.taps.is_empty() {
                    self.direct_bias_rows(out, task.row0, o0, (phi1, m1a, m1b), b);
                    continue;
                }
                let (lo1, hi1) = (f1.off.min(l1.off), f1.off.max(l1.off) + 1);
                let st1 = ph1.in_step;
                // Windows of output rows [ma, mb): padded input rows [c][tap0][v][w2] with
                // v ↔ input row ma·st1 + lo1 + v (remapped), sized to the padded-row budget.
                // When the row stride exceeds the taps' span, the rows between two output rows'
                // spans are never read: the window is then compact, output row r's span at
                // v = r·span + j ↔ input row (ma + r)·st1 + lo1 + j (a stride of 65536 would
                // otherwise fill 65536 rows per output row).
                let span = (hi1 - lo1) as usize;
                let compact = st1 > span;
                let row_step = if compact { span } else { st1 };
                let per_row = geo.cg * ph0.taps.len() * row_len * row_step;
                let window = (PLANE_BUDGET / per_row.max(1) / RR * RR).max(RR);
                let mut ma = m1a;
                while ma < m1b {
                    let mb = (ma + window).min(m1b);
                    let groups = (mb - ma).div_ceil(RR);
                    let v_rows = (groups * RR - 1) * row_step + span;
                    let layout = if decimated { RowLayout::Decimated(dec_w) } else { RowLayout::Padded(lo2, w2) };
                    let rows_map = RowMap { start: (ma * st1) as isize + lo1, span, stride: st1, compact };
                    self.fill_window(ws, (task.n, g), (ph0, m0), rows_map, v_rows, layout);
                    let pitch = row_step * row_len;
                    for (phi2, ph2) in geo.phases[2].iter().enumerate() {
                        if ph2.taps.is_empty() {
                            for m1 in ma..mb {
                                let base = (o0 * o1n + m1 * s1 + phi1 - task.row0) * o2n;
                                for m2 in 0..ph2.count {
                                    out[base + m2 * geo.out_step[2] + phi2] = b;
                                }
                            }
                            continue;
                        }
                        // Tap template: (offset in the window, weight), in (c, tap0, tap1, tap2) order;
                        // with exactly 3 dim-1 taps on consecutive window rows (pitch = one row),
                        // the stacked form `(offset of the top row, [w; 3])` in (c, tap0, tap2) order.
                        let vert = st1 == 1
                            && ph1.taps.len() == 3
                            && ph1
                                .taps
                                .iter()
                                .fold(0u32, |m, t| m | 1u32.checked_shl((t.off - lo1) as u32).unwrap_or(0))
                                == 0b111;
                        dtaps.clear();
                        dvtaps.clear();
                        let wg = &self.w.data[g * geo.kk * geo.cg..(g + 1) * geo.kk * geo.cg]; // [tap][c]
                        let tap_off = |row: usize, t2: usize, tap2: &Tap| {
                            if decimated {
                                (row * ph2.taps.len() + t2) * dec_w
                            } else {
                                row * w2 + (tap2.off - lo2) as usize
                            }
                        };
                        for c in 0..geo.cg {
                            for (t0, tap0) in ph0.taps.iter().enumerate() {
                                let row0 = (c * ph0.taps.len() + t0) * v_rows;
                                if vert {
                                    for (t2, tap2) in ph2.taps.iter().enumerate() {
                                        let mut wv = [0.0f32; 3];
                                        for tap1 in &ph1.taps {
                                            let j = (tap0.j * p.kernel[1] + tap1.j) * p.kernel[2] + tap2.j;
                                            wv[(tap1.off - lo1) as usize] = wg[j * geo.cg + c];
                                        }
                                        dvtaps.push((tap_off(row0, t2, tap2), wv));
                                    }
                                    continue;
                                }
                                for tap1 in &ph1.taps {
                                    let row = row0 + (tap1.off - lo1) as usize;
                                    for (t2, tap2) in ph2.taps.iter().enumerate() {
                                        let j = (tap0.j * p.kernel[1] + tap1.j) * p.kernel[2] + tap2.j;
                                        dtaps.push((tap_off(row, t2, tap2), wg[j * geo.cg + c]));
                                    }
                                }
                            }
                        }
                        let s2 = geo.out_step[2];
                        let rows = mb - ma;
                        let base = (o0 * o1n + ma * s1 + phi1 - task.row0) * o2n;
                        let run = |win: DirectWin, dst: &mut [f32]| {
                            if vert {
                                kern.direct_v3(&ws.xpad, &dvtaps, win, dst);
                            } else {
                                kern.direct(&ws.xpad, &dtaps, win, dst);
                            }
                        };
                        if s2 == 1 {
                            // Output rows are `s1·o2n` apart in `out`: the kernel stores in place.
                            run(DirectWin { pitch, rows, cols: ph2.count, ldo: s1 * o2n, bias: b }, &mut out[base..]);
                        } else {
                            // Interleaved phases: compute densely, then scatter every `s2`-th element.
                            let ldo = ph2.count;
                            let mut dout = std::mem::take(&mut ws.dout);
                            dout.resize(rows * ldo, 0.0);
                            run(DirectWin { pitch, rows, cols: ph2.count, ldo, bias: b }, &mut dout);
                            for (r, src) in dout.chunks_exact(ldo).enumerate() {
                                let at = base + r * s1 * o2n + phi2;
                                for (d, &v) in out[at..].iter_mut().step_by(s2).zip(src) {
                                    *d = v;
                                }
                            }
                            ws.dout = dout;
                        }
                    }
                    ma = mb;
                }
            }
        }
        ws.dtaps = dtaps;
        ws.dvtaps = dvtaps;
    }

    /// Writes the bias to output rows `o1 = m1·s1 + phi1`, `m1 in [m1a, m1b)`, of plane `o0`.
    fn direct_bias_rows(&self, out: &mut [f32], row0: usize, o0: usize, rows: (usize, usize, usize), b: f32) {
        let [_, o1n, o2n] = self.p.out_size;
        let (phi1, m1a, m1b) = rows;
        for m1 in m1a..m1b {
            let base = (o0 * o1n + m1 * self.geo.out_step[1] + phi1 - row0) * o2n;
            out[base..base + o2n].fill(b);
        }
    }

    /// Fills `ws.xpad` with the window `[c][tap0][v][row]` of channel `c` of group `g` of image
    /// `n`: the input plane of tap `tap0` of `ph0` at column `m0`, input row `i1_start + v`, laid out
    /// per `layout` along dim 2, all with the padding-mode remap (zeros where nothing is read).
    #[allow(clippy::too_many_arguments)]
    fn fill_window(
        &self,
        ws: &mut Workspace,
        (n, g): (usize, usize),
        (ph0, m0): (&Phase, usize),
        rows_map: RowMap,
        v_rows: usize,
        layout: RowLayout,
    ) {
        let i1_start = rows_map.start;
        let p = self.p;
        let [l0, l1, l2] = p.in_size;
        let mode = p.pad_mode;
        let cg = self.geo.cg;
        let ph2 = &self.geo.phases[2][0];
        let row_len = match layout {
            RowLayout::Padded(_, w2) => w2,
            RowLayout::Decimated(w) => ph2.taps.len() * w,
        };
        let len = cg * ph0.taps.len() * v_rows * row_len;
        ws.xpad.resize(len, 0.0);
        // Zero padding, padded rows: a window with the same key as the previous one has its
        // zeros in the same places already; only the in-bounds parts are copied.
        let key = match layout {
            RowLayout::Padded(lo2, w2) if mode == PaddingMode::Zeros && !rows_map.compact => {
                Some((self.call_id, ph0.taps.as_ptr() as usize, m0, i1_start, v_rows, lo2, w2))
            }
            _ => None,
        };
        let reuse = key.is_some() && ws.xpad_key == key && ws.xpad.len() == len;
        ws.xpad_key = key;
        if let (true, RowLayout::Padded(lo2, w2)) = (reuse, layout) {
            // Zero padding: the in-bounds rows are one range, the in-bounds columns another; only
            // they are copied (everything else is zero already).
            let (va, vb) = in_bounds(i1_start, v_rows, l1);
            let (a, b) = in_bounds(lo2, w2, l2);
            let src_a = (lo2 + a as isize) as usize;
            let mut blocks = ws.xpad[..len].chunks_exact_mut((v_rows * w2).max(1));
            for c in 0..cg {
                let chan = n * p.in_channels + g * cg + c;
                for tap0 in &ph0.taps {
                    let Some(block) = blocks.next() else { return };
                    let Some(i0) = mode.source_index((m0 * ph0.in_step) as isize + tap0.off, l0) else { continue };
                    for v in va..vb {
                        let i1 = (i1_start + v as isize) as usize;
                        let base = ((chan * l0 + i0) * l1 + i1) * l2 + src_a;
                        copy_short(&mut block[v * w2 + a..v * w2 + b], &self.x[base..base + (b - a)]);
                    }
                }
            }
            return;
        }
        let mut rows = ws.xpad[..len].chunks_exact_mut(row_len.max(1));
        for c in 0..cg {
            let chan = n * p.in_channels + g * cg + c;
            for tap0 in &ph0.taps {
                let i0 = mode.source_index((m0 * ph0.in_step) as isize + tap0.off, l0);
                for v in 0..v_rows {
                    let Some(dst) = rows.next() else { return };
                    let i1 = mode.source_index(rows_map.input_row(v), l1);
                    let (Some(i0), Some(i1)) = (i0, i1) else {
                        dst.fill(0.0);
                        continue;
                    };
                    let base = ((chan * l0 + i0) * l1 + i1) * l2;
                    let xrow = &self.x[base..base + l2];
                    match layout {
                        RowLayout::Padded(lo2, _) => fill_padded(dst, xrow, lo2, mode),
                        RowLayout::Decimated(w) => {
                            for (tap, d) in ph2.taps.iter().zip(dst.chunks_exact_mut(w)) {
                                fill_decimated(d, xrow, tap, ph2.in_step, mode);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Which input row (dim 1) each window row of the direct path holds.
#[derive(Clone, Copy, Debug)]
struct RowMap {
    /// Input row of window row 0 (before the padding-mode remap).
    start: isize,
    /// Rows one output row reads (`hi1 - lo1`).
    span: usize,
    /// Input rows between consecutive output rows (the phase's input step).
    stride: usize,
    /// `false`: window row `v` is input row `start + v`. `true` (stride > span): output row `r`'s
    /// span is stored at `r·span`, so window row `v` is input row
    /// `start + (v / span)·stride + v % span`.
    compact: bool,
}

impl RowMap {
    fn input_row(&self, v: usize) -> isize {
        if self.compact {
            let (r, j) = (v / self.span.max(1), v % self.span.max(1));
            // Bounded by the window (at most a plane budget of rows) and the validated problem
            // sizes; saturate rather than wrap (a saturated row remaps to padding or an edge).
            (r as isize).saturating_mul(self.stride as isize).saturating_add(j as isize).saturating_add(self.start)
        } else {
            self.start + v as isize
        }
    }
}

/// How the direct path lays out one input row along dim 2.
#[derive(Clone, Copy, Debug)]
enum RowLayout {
    /// `(lo, len)`: the remapped input indices `lo..lo + len`.
    Padded(isize, usize),
    /// `w`: per tap of the (single, strided) phase, `xd[m] = x̃[m·step + off]` for `m < w`.
    Decimated(usize),
}

/// `dst[m] = x̃[m·step + tap.off]` for every `m < dst.len()`, with the padding-mode remap.
fn fill_decimated(dst: &mut [f32], xrow: &[f32], tap: &Tap, step: usize, mode: PaddingMode) {
    let n = dst.len();
    // In-bounds columns [lo, hi) (none: lo = hi = n).
    let (lo, hi) = if tap.lo.min(n) < tap.hi.min(n) { (tap.lo, tap.hi.min(n)) } else { (n, n) };
    // Lanes past the row's end (m >= count) may have indices beyond the validated range.
    let edge = |m: usize| {
        m.checked_mul(step)
            .and_then(|v| isize::try_from(v).ok())
            .and_then(|v| v.checked_add(tap.off))
            .and_then(|i| mode.source_index(i, xrow.len()))
            .map_or(0.0, |i| xrow[i])
    };
    for (m, d) in dst[..lo].iter_mut().enumerate() {
        *d = edge(m);
    }
    if lo < hi {
        let first = ((lo * step) as isize + tap.off) as usize;
        let src = &xrow[first..first + (hi - lo - 1) * step + 1];
        if step == 2 {
            for (d, pair) in dst[lo..hi].iter_mut().zip(src.chunks(2)) {
                *d = pair[0];
            }
        } else {
            for (k, d) in dst[lo..hi].iter_mut().enumerate() {
                *d = src[k * step];
            }
        }
    }
    for (m, d) in dst.iter_mut().enumerate().skip(hi) {
        *d = edge(m);
    }
}

/// The in-bounds part `[a, b)` of a padded row of `len` elements starting at input index `lo`
/// (`0 <= lo + u < l` for `u` in `[a, b)`; `a <= b`).
fn in_bounds(lo: isize, len: usize, l: usize) -> (usize, usize) {
    let a = (-lo).clamp(0, len as isize) as usize;
    let b = (l as isize - lo).clamp(a as isize, len as isize) as usize;
    (a, b)
}

/// `xpad[u] = x̃[lo + u]` for every `u < xpad.len()`, with the padding-mode remap (zeros outside).
fn fill_padded(xpad: &mut [f32], xrow: &[f32], lo: isize, mode: PaddingMode) {
    let len = xpad.len();
    let (a, b) = in_bounds(lo, len, xrow.len());
    xpad[a..b].copy_from_slice(&xrow[(lo + a as isize) as usize..(lo + b as isize) as usize]);
    if mode == PaddingMode::Zeros {
        xpad[..a].fill(0.0);
        xpad[b..].fill(0.0);
    } else {
        for u in (0..a).chain(b..len) {
            xpad[u] = mode.source_index(lo + u as isize, xrow.len()).map_or(0.0, |i| xrow[i]);
        }
    }
}

/// Index of column `c`, reduction row `r` in a `[cols/NR][kc][NR]` panel tile.
#[inline(always)]
fn panel_index(kc: usize, r: usize, c: usize) -> usize {
    ((c / NR) * kc + r) * NR + c % NR
}

#[inline(always)]
fn put(col: &mut [f32], kc: usize, r: usize, c: usize, v: f32) {
    col[panel_index(kc, r, c)] = v;
}

/// `dst.copy_from_slice(src)` for short slices without a `memcpy` call: two overlapping
/// fixed-size moves cover every length from `n/2` to `n`.
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    #[inline(always)]
    fn two<const N: usize>(dst: &mut [f32], src: &[f32]) {
        let n = src.len();
        let head: &[f32; N] = src[..N].try_into().expect("N elements");
        let tail: &[f32; N] = src[n - N..].try_into().expect("N elements");
        <&mut [f32; N]>::try_from(&mut dst[..N]).expect("N elements").copy_from_slice(head);
        <&mut [f32; N]>::try_from(&mut dst[n - N..n]).expect("N elements").copy_from_slice(tail);
    }
    let n = src.len();
    match n {
        0 => {}
        1..=3 => {
            for (d, &v) in dst[..n].iter_mut().zip(src) {
                *d = v;
            }
        }
        4..=7 => two::<4>(dst, src),
        8..=15 => two::<8>(dst, src),
        16..=31 => two::<16>(dst, src),
        _ => dst[..n].copy_from_slice(src),
    }
}

/// Writes `src` to row `r`, columns `c0..`, of a panel tile.
#[inline]
fn write_run(col: &mut [f32], kc: usize, r: usize, c0: usize, mut src: &[f32]) {
    let mut c = c0;
    while !src.is_empty() {
        let lane = c % NR;
        let take = (NR - lane).min(src.len());
        let d = panel_index(kc, r, c);
        copy_short(&mut col[d..d + take], &src[..take]);
        src = &src[take..];
        c += take;
    }
}

/// Writes `n` values `src[0], src[step], ...` to row `r`, columns `c0..c0 + n`, of a panel tile.
#[inline(always)]
fn write_run_strided(col: &mut [f32], kc: usize, r: usize, c0: usize, src: &[f32], step: usize, n: usize) {
    let mut c = c0;
    let mut at = 0;
    while at < n {
        let lane = c % NR;
        let take = (NR - lane).min(n - at);
        let d = panel_index(kc, r, c);
        let dst = &mut col[d..d + take];
        if step == 2 && take == NR && src.len() >= at * 2 + 2 * NR {
            // A whole panel row with a readable pair past its end: fixed sizes and no odd tail,
            // so the even-element extraction vectorises (a two-register permute per panel row
            // where the kernel's instruction set has one).
            let s: &[f32; 2 * NR] = src[at * 2..at * 2 + 2 * NR].try_into().expect("2·NR elements");
            let d: &mut [f32; NR] = dst.try_into().expect("NR elements");
            for (v, pair) in d.iter_mut().zip(s.chunks_exact(2)) {
                *v = pair[0];
            }
            at += take;
            c += take;
            continue;
        }
        let src = &src[at * step..(at + take - 1) * step + 1];
        if step == 2 && take == NR {
            // A whole panel row: fixed sizes, so the even-element extraction vectorises.
            let s: &[f32; 2 * NR - 1] = src.try_into().expect("2·NR − 1 elements");
            let d: &mut [f32; NR] = dst.try_into().expect("NR elements");
            for (k, v) in d.iter_mut().enumerate() {
                *v = s[2 * k];
            }
        } else if step == 2 {
            for (dst, pair) in dst.iter_mut().zip(src.chunks(2)) {
                *dst = pair[0];
            }
        } else {
            for (k, dst) in dst.iter_mut().enumerate() {
                *dst = src[k * step];
            }
        }
        at += take;
        c += take;
    }
}

/// Fills row `r`, columns `c0..c0 + n`, of a panel tile with `v`.
#[inline]
fn fill_run(col: &mut [f32], kc: usize, r: usize, c0: usize, n: usize, v: f32) {
    let mut c = c0;
    let end = c0 + n;
    while c < end {
        let lane = c % NR;
        let take = (NR - lane).min(end - c);
        let d = panel_index(kc, r, c);
        col[d..d + take].fill(v);
        c += take;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::conv_naive;

    /// xorshift64* — a tiny deterministic PRNG for the randomised tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        /// Uniform in `lo..=hi`.
        fn range(&mut self, lo: usize, hi: usize) -> usize {
            lo + (self.next() % (hi - lo + 1) as u64) as usize
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
        /// Uniform in `[-1, 1)`.
        fn f32(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
        fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.f32()).collect()
        }
    }

    /// Runs the fast path and the oracle and checks
    /// `|y − ref| <= 1e-5 · (1 + Σ|x·w| + |bias|)` per output element, where the bound's sum comes
    /// from a second oracle pass over absolute values (f32 accumulation of a few hundred terms is
    /// far more accurate than that in practice).
    fn check(p: &ConvProblem, x: &[f32], w: &[f32], bias: Option<&[f32]>) {
        check_with(p, x, w, bias, Level::Best)
    }

    /// [`check`], optionally with the portable kernels only.
    fn check_with(p: &ConvProblem, x: &[f32], w: &[f32], bias: Option<&[f32]>, level: Level) {
        let packed = PackedWeight::new(p.transposed, p.in_channels, p.out_channels, p.groups, p.kernel, w)
            .unwrap_or_else(|e| panic!("{p:?}: {e}"));
        let mut y = vec![f32::NAN; p.output_len()];
        conv_with(p, &packed, bias, x, &mut y, level).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        let want = conv_naive(p, w, bias, x);
        let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
        let bias_abs = bias.map(abs);
        let scale = conv_naive(p, &abs(w), bias_abs.as_deref(), &abs(x));
        for (i, ((&got, &want), &scale)) in y.iter().zip(&want).zip(&scale).enumerate() {
            let err = (got as f64 - want).abs();
            assert!(err <= 1e-5 * (1.0 + scale), "{p:?}\nelement {i}: got {got}, want {want} (scale {scale})");
        }
    }

    fn check_random_data(rng: &mut Rng, p: &ConvProblem) {
        let x = rng.vec(p.input_len());
        let w = rng.vec(p.weight_len());
        let bias = rng.chance(70).then(|| rng.vec(p.out_channels));
        check(p, &x, &w, bias.as_deref());
    }

    /// A random problem, or `None` if the drawn sizes give an empty output.
    fn random_problem(rng: &mut Rng, transposed: bool) -> Option<ConvProblem> {
        let ndim = rng.range(1, 3);
        let (groups, cg, kg) = match rng.range(0, 5) {
            0 => (1, rng.range(1, 5), rng.range(1, 5)),
            1 => (rng.range(2, 3), rng.range(1, 4), rng.range(1, 8)),
            2 => {
                let c = rng.range(1, 6);
                (c, 1, 1) // depthwise
            }
            3 => (rng.range(2, 4), 1, rng.range(2, 3)), // depthwise with a multiplier
            4 => (rng.range(1, 2), rng.range(1, 3), 1), // Kg = 1 with Cg > 1
            _ => (1, rng.range(8, 40), rng.range(7, 20)), // crosses MR, and KC with several taps
        };
        let pad_mode = if transposed {
            PaddingMode::Zeros
        } else {
            [PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular][rng.range(0, 3)]
        };
        let mut p = ConvProblem {
            transposed,
            batch: rng.range(1, 3),
            in_channels: groups * cg,
            out_channels: groups * kg,
            groups,
            in_size: [1; 3],
            out_size: [1; 3],
            kernel: [1; 3],
            stride: [1; 3],
            pad: [0; 3],
            dilation: [1; 3],
            pad_mode,
        };
        for d in 3 - ndim..3 {
            let big = ndim == 1 && rng.chance(30);
            let len = if big { rng.range(20, 300) } else { rng.range(1, if ndim == 3 { 7 } else { 12 }) };
            let k = rng.range(1, if ndim == 3 { 3 } else { 5 });
            let s = rng.range(1, 3);
            let dil = rng.range(1, 3);
            let span = (k - 1) * dil;
            let out;
            if transposed {
                let pad = rng.range(0, span);
                let out_pad = rng.range(0, s.max(dil) - 1);
                let full = (len - 1) * s + span + out_pad + 1;
                if full <= 2 * pad {
                    return None;
                }
                out = full - 2 * pad;
                p.pad[d] = pad;
            } else {
                let max_pad = match pad_mode {
                    PaddingMode::Zeros => span + 1,
                    PaddingMode::Replicate => 3,
                    PaddingMode::Reflect => len - 1,
                    PaddingMode::Circular => len,
                };
                let pad = rng.range(0, max_pad.min(span + 1));
                // Trailing padding may exceed the leading one by 1 ('same' with an even kernel).
                let extra = usize::from(pad < max_pad && rng.chance(30));
                let padded = len + 2 * pad + extra;
                if padded < span + 1 {
                    return None;
                }
                out = (padded - span - 1) / s + 1;
                p.pad[d] = pad;
            }
            p.in_size[d] = len;
            p.out_size[d] = out;
            p.kernel[d] = k;
            p.stride[d] = s;
            p.dilation[d] = dil;
        }
        // Keep the oracle cheap.
        let macs = p.flops() / 2.0;
        (macs < 4e6 && p.output_len() < 200_000).then_some(p)
    }

    #[test]
    fn random_forward_matches_naive() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut done = 0;
        while done < 300 {
            if let Some(p) = random_problem(&mut rng, false) {
                check_random_data(&mut rng, &p);
                done += 1;
            }
        }
    }

    #[test]
    fn random_transposed_matches_naive() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let mut done = 0;
        while done < 300 {
            if let Some(p) = random_problem(&mut rng, true) {
                check_random_data(&mut rng, &p);
                done += 1;
            }
        }
    }

    fn problem(c: usize, k: usize, groups: usize, in_size: [usize; 3], kernel: [usize; 3]) -> ConvProblem {
        let out_size = [0, 1, 2].map(|d| in_size[d].saturating_sub(kernel[d]) + 1);
        ConvProblem {
            transposed: false,
            batch: 1,
            in_channels: c,
            out_channels: k,
            groups,
            in_size,
            out_size,
            kernel,
            stride: [1; 3],
            pad: [0; 3],
            dilation: [1; 3],
            pad_mode: PaddingMode::Zeros,
        }
    }

    #[test]
    fn large_reductions_and_tiles() {
        let mut rng = Rng(42);
        // 1×1 direct path: several KC chunks of channels, a ragged last panel, batch 2, 2 groups.
        let p = ConvProblem { batch: 2, ..problem(2 * 600, 2 * 13, 2, [1, 5, 7], [1, 1, 1]) };
        check_random_data(&mut rng, &p);
        // Cg < KC with several taps per chunk (40 · 9 = 360 rows = 2 chunks); many position tiles.
        check_random_data(&mut rng, &problem(40, 19, 1, [1, 20, 23], [1, 3, 3]));
        // Cg > KC with taps: channel chunks of single taps.
        let p = ConvProblem { pad: [0, 1, 1], out_size: [1, 6, 6], ..problem(300, 7, 1, [1, 6, 6], [1, 3, 3]) };
        check_random_data(&mut rng, &p);
        // Large Kg (narrow Ct budget) and a transposed 2-d problem with a big reduction.
        check_random_data(&mut rng, &problem(3, 700, 1, [1, 9, 40], [1, 2, 2]));
        let p = ConvProblem {
            transposed: true,
            stride: [1, 2, 2],
            pad: [0, 1, 1],
            out_size: [1, 16, 16],
            ..problem(300, 10, 1, [1, 8, 8], [1, 4, 4])
        };
        check_random_data(&mut rng, &p);
        // Long 1-d rows split into several tasks, forward strided and transposed.
        let p = ConvProblem {
            stride: [1, 1, 3],
            pad: [0, 0, 2],
            out_size: [1, 1, 1001],
            ..problem(5, 9, 1, [1, 1, 3000], [1, 1, 5])
        };
        check_random_data(&mut rng, &p);
        let p = ConvProblem {
            transposed: true,
            stride: [1, 1, 3],
            pad: [0, 0, 1],
            out_size: [1, 1, 3001],
            ..problem(7, 5, 1, [1, 1, 1000], [1, 1, 5])
        };
        check_random_data(&mut rng, &p);
        // Kernel taps with no contribution to a phase (k = 1, stride 3): those outputs are bias.
        let p = ConvProblem {
            transposed: true,
            stride: [2, 3, 3],
            out_size: [3, 8, 9],
            ..problem(4, 6, 2, [2, 3, 3], [1, 1, 1])
        };
        check_random_data(&mut rng, &p);
        // The same with Kg == 1 (direct path).
        let p = ConvProblem { out_channels: 2, ..p };
        check_random_data(&mut rng, &p);
    }

    /// The portable kernels (the fallback without AVX2/FMA) against the oracle.
    #[test]
    fn portable_kernels_match_naive() {
        let mut rng = Rng(0x5851_F42D_4C95_7F2D);
        let mut done = 0;
        while done < 120 {
            let transposed = rng.chance(40);
            let Some(p) = random_problem(&mut rng, transposed) else { continue };
            let x = rng.vec(p.input_len());
            let w = rng.vec(p.weight_len());
            let bias = rng.vec(p.out_channels);
            check_with(&p, &x, &w, Some(&bias), Level::Portable);
            done += 1;
        }
    }

    /// The AVX2 + FMA kernels (forced below AVX-512) against the oracle, where the CPU has them.
    #[test]
    fn avx2_kernels_match_naive() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let mut done = 0;
        while done < 120 {
            let transposed = rng.chance(40);
            let Some(p) = random_problem(&mut rng, transposed) else { continue };
            let x = rng.vec(p.input_len());
            let w = rng.vec(p.weight_len());
            let bias = rng.vec(p.out_channels);
            check_with(&p, &x, &w, Some(&bias), Level::Avx2);
            done += 1;
        }
    }

    /// The AVX-512 kernels (the default where the CPU has AVX-512F) run the same fused
    /// multiply-adds in the same order as the AVX2 + FMA ones: bit-identical results on every path
    /// (gathered, padded-input with row runs, 1×1 in place, direct; forward and transposed).
    #[test]
    fn tile_rows_choice() {
        assert_eq!(tile_rows(128, true), MR_WIDE);
        assert_eq!(tile_rows(64, true), MR_WIDE);
        assert_eq!(tile_rows(16, true), MR_WIDE); // 16 rows instead of 18
        assert_eq!(tile_rows(6, true), MR); // 6 rows instead of 8
        assert_eq!(tile_rows(12, true), MR);
        assert_eq!(tile_rows(24, true), MR_WIDE); // a tie goes to the wider tile
        assert_eq!(tile_rows(128, false), MR);
        assert_eq!(tile_rows(2, true), MR);
    }

    /// Weights packed with 6- and 8-row panels give bit-identical outputs at every SIMD level
    /// (the 8-row panels run as two 4-row halves below AVX-512).
    #[test]
    fn both_tile_heights_bit_identical() {
        let mut rng = Rng(0x51ED_2701);
        let mut problems = vec![
            problem(40, 24, 1, [1, 28, 28], [1, 3, 3]),
            problem(24, 16, 1, [1, 9, 50], [1, 1, 1]),
            ConvProblem {
                stride: [1, 2, 2],
                pad: [0, 3, 3],
                out_size: [1, 20, 20],
                ..problem(3, 16, 1, [1, 40, 40], [1, 7, 7])
            },
            ConvProblem {
                transposed: true,
                stride: [1, 2, 2],
                pad: [0, 1, 1],
                out_size: [1, 28, 28],
                ..problem(24, 20, 1, [1, 14, 14], [1, 4, 4])
            },
        ];
        while problems.len() < 30 {
            let transposed = rng.chance(40);
            if let Some(p) = random_problem(&mut rng, transposed) {
                problems.push(p);
            }
        }
        for p in problems {
            if p.out_channels / p.groups == 1 {
                continue; // the direct path has no tiles
            }
            let x = rng.vec(p.input_len());
            let w = rng.vec(p.weight_len());
            let bias = rng.vec(p.out_channels);
            let dims = [p.in_channels, p.out_channels, p.groups];
            let mut outs = Vec::new();
            for mr in [MR, MR_WIDE] {
                let packed = PackedWeight::pack(p.transposed, dims, p.kernel, &w, mr).unwrap();
                for level in [Level::Best, Level::Avx2] {
                    let mut y = vec![0.0f32; p.output_len()];
                    conv_with(&p, &packed, Some(&bias), &x, &mut y, level).unwrap();
                    outs.push(y.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
                }
            }
            assert!(outs.iter().all(|o| *o == outs[0]), "{p:?}: tile heights or levels differ");
            let packed = PackedWeight::pack(p.transposed, dims, p.kernel, &w, MR_WIDE).unwrap();
            let mut y = vec![0.0f32; p.output_len()];
            conv_with(&p, &packed, Some(&bias), &x, &mut y, Level::Portable).unwrap();
            let mut y6 = vec![0.0f32; p.output_len()];
            let packed6 = PackedWeight::pack(p.transposed, dims, p.kernel, &w, MR).unwrap();
            conv_with(&p, &packed6, Some(&bias), &x, &mut y6, Level::Portable).unwrap();
            assert!(y == y6, "{p:?}: portable tile heights differ");
            check(&p, &x, &w, Some(&bias));
        }
    }

    #[test]
    fn avx512_bit_identical_to_avx2() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut problems = vec![
            problem(64, 40, 1, [1, 28, 28], [1, 3, 3]),
            ConvProblem {
                pad: [0, 2, 2],
                dilation: [1, 2, 2],
                out_size: [1, 30, 30],
                ..problem(16, 12, 1, [1, 30, 30], [1, 3, 3])
            },
            problem(3, 16, 1, [1, 40, 40], [1, 7, 7]),
            ConvProblem {
                stride: [1, 2, 2],
                pad: [0, 3, 3],
                out_size: [1, 20, 20],
                ..problem(3, 16, 1, [1, 40, 40], [1, 7, 7])
            },
            problem(32, 32, 32, [1, 20, 20], [1, 3, 3]),
            ConvProblem {
                transposed: true,
                stride: [1, 2, 2],
                pad: [0, 1, 1],
                out_size: [1, 28, 28],
                ..problem(24, 20, 1, [1, 14, 14], [1, 4, 4])
            },
            problem(24, 18, 1, [1, 33, 33], [1, 1, 1]),
        ];
        while problems.len() < 60 {
            let transposed = rng.chance(40);
            if let Some(p) = random_problem(&mut rng, transposed) {
                problems.push(p);
            }
        }
        for p in problems {
            let x = rng.vec(p.input_len());
            let w = rng.vec(p.weight_len());
            let bias = rng.vec(p.out_channels);
            let packed =
                PackedWeight::new(p.transposed, p.in_channels, p.out_channels, p.groups, p.kernel, &w).unwrap();
            let run = |level: Level| {
                let mut y = vec![0.0f32; p.output_len()];
                conv_with(&p, &packed, Some(&bias), &x, &mut y, level).unwrap();
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            assert!(run(Level::Best) == run(Level::Avx2), "{p:?}: AVX-512 and AVX2 results differ");
            check(&p, &x, &w, Some(&bias));
        }
    }

    #[test]
    fn direct_path_cases() {
        let mut rng = Rng(11);
        // Kg == 1 with a large group: the padded-row window is split (budget) into several windows.
        let p = ConvProblem { pad: [0, 1, 1], out_size: [1, 40, 40], ..problem(300, 1, 1, [1, 40, 40], [1, 3, 3]) };
        check_random_data(&mut rng, &p);
        // Strided depthwise (decimated rows), every padding mode, 2-d and 3-d.
        for mode in [PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular] {
            let p = ConvProblem {
                stride: [1, 2, 2],
                pad: [0, 1, 1],
                out_size: [1, 7, 7],
                pad_mode: mode,
                batch: 2,
                ..problem(6, 6, 6, [1, 13, 14], [1, 3, 3])
            };
            check_random_data(&mut rng, &p);
            let p = ConvProblem {
                stride: [2, 1, 3],
                pad: [1, 2, 2],
                dilation: [1, 2, 1],
                out_size: [3, 5, 4],
                pad_mode: mode,
                ..problem(3, 6, 3, [5, 5, 9], [3, 3, 3])
            };
            check_random_data(&mut rng, &p);
            // Row stride larger than the rows one output reads: the compact window (only each
            // output row's span is filled), with dilation, padding past the input, and a stride
            // far beyond the input (fuzzer case: stride 65536, replicate).
            let p = ConvProblem {
                stride: [1, 3, 2],
                pad: [0, 2, 1],
                out_size: [1, 5, 5],
                pad_mode: mode,
                batch: 2,
                ..problem(5, 5, 5, [1, 11, 10], [1, 2, 3])
            };
            check_random_data(&mut rng, &p);
            let p = ConvProblem {
                stride: [1, 7, 1],
                dilation: [1, 2, 1],
                pad: [0, 1, 0],
                out_size: [1, 3, 8],
                pad_mode: mode,
                ..problem(4, 4, 4, [1, 17, 8], [1, 2, 1])
            };
            check_random_data(&mut rng, &p);
            if mode != PaddingMode::Reflect && mode != PaddingMode::Circular {
                let p = ConvProblem {
                    stride: [1, 65536, 7],
                    dilation: [1, 7, 7],
                    pad: [0, 1, 1000],
                    out_size: [1, 1, 286],
                    pad_mode: mode,
                    batch: 2,
                    ..problem(7, 7, 7, [1, 2, 2], [1, 1, 1])
                };
                check_random_data(&mut rng, &p);
            }
        }
        // Absurd strides stay cheap and correct (also in debug builds: no overflow).
        let p = ConvProblem {
            stride: [1, 1, usize::MAX / 64],
            out_size: [1, 3, 1],
            ..problem(2, 2, 2, [1, 3, 5], [1, 1, 3])
        };
        check_random_data(&mut rng, &p);
        let p = ConvProblem { out_channels: 4, ..p };
        check_random_data(&mut rng, &p);
        let huge = ConvProblem { stride: [1, 1, usize::MAX], ..p.clone() };
        let packed = PackedWeight::new(false, 2, 4, 2, [1, 1, 3], &[0.0; 4 * 3]).unwrap();
        let mut y = vec![0.0; huge.output_len()];
        assert!(matches!(conv(&huge, &packed, None, &vec![0.0; huge.input_len()], &mut y), Err(Error::Overflow(_))));
        let p = ConvProblem {
            stride: [1, 1, 1000],
            pad: [0, 0, 1],
            out_size: [1, 3, 2],
            ..problem(2, 2, 2, [1, 3, 1500], [1, 1, 3])
        };
        check_random_data(&mut rng, &p);
        let p = ConvProblem {
            transposed: true,
            stride: [1, 1, 1000],
            out_size: [1, 3, 2004],
            ..problem(2, 2, 2, [1, 3, 3], [1, 1, 3])
        };
        check_random_data(&mut rng, &p);
        let p = ConvProblem { out_channels: 6, ..p };
        check_random_data(&mut rng, &p);
    }

    /// The direct path's whole-window kernel calls at every SIMD level this CPU has: depthwise
    /// forward and transposed problems whose rows are not multiples of the tile (`RR × DW`; every
    /// ragged-store width class), several windows per plane (budget) and per 3-d plane, zero
    /// padding (zero borders reused across channels and calls) next to the other modes, output
    /// rows written in place (`out_step = 1`) or scattered (transposed phases). The AVX-512 and
    /// AVX2 results are bit-identical.
    #[test]
    fn direct_windows_all_levels() {
        fn sized(mut p: ConvProblem) -> ConvProblem {
            p.out_size = [0, 1, 2].map(|d| {
                let span = (p.kernel[d] - 1) * p.dilation[d];
                if p.transposed {
                    (p.in_size[d] - 1) * p.stride[d] + span + 1 - 2 * p.pad[d]
                } else {
                    (p.in_size[d] + 2 * p.pad[d] - span - 1) / p.stride[d] + 1
                }
            });
            p
        }
        let mut rng = Rng(0xD1EC7);
        let mut problems = Vec::new();
        for w in [1, 3, 5, 9, 16, 17, 28, 35] {
            for mode in [PaddingMode::Zeros, PaddingMode::Replicate] {
                let h = 1 + (w * 7) % 11;
                let p =
                    ConvProblem { pad: [0, 1, 1], pad_mode: mode, batch: 2, ..problem(5, 5, 5, [1, h, w], [1, 3, 3]) };
                problems.push(sized(p));
            }
            let t = ConvProblem {
                transposed: true,
                stride: [1, 2, 2],
                pad: [0, 1, 1],
                ..problem(4, 4, 4, [1, 1 + w % 6, w], [1, 4, 3])
            };
            problems.push(sized(t));
        }
        // Many windows per plane (300 input channels per group: the budget splits the rows), 3-d
        // planes, dilation.
        problems.push(sized(ConvProblem { pad: [0, 1, 1], ..problem(300, 1, 1, [1, 45, 29], [1, 3, 3]) }));
        problems.push(sized(ConvProblem {
            pad: [1, 2, 2],
            dilation: [1, 2, 2],
            ..problem(3, 3, 3, [4, 9, 19], [3, 3, 3])
        }));
        problems.push(sized(ConvProblem {
            transposed: true,
            stride: [2, 1, 3],
            pad: [1, 0, 1],
            ..problem(2, 4, 2, [3, 6, 7], [3, 2, 4])
        }));
        for p in &problems {
            let x = rng.vec(p.input_len());
            let w = rng.vec(p.weight_len());
            let bias = rng.vec(p.out_channels);
            for level in [Level::Portable, Level::Avx2, Level::Best] {
                check_with(p, &x, &w, Some(&bias), level);
            }
            let packed =
                PackedWeight::new(p.transposed, p.in_channels, p.out_channels, p.groups, p.kernel, &w).unwrap();
            let run = |level| {
                let mut y = vec![0.0f32; p.output_len()];
                conv_with(p, &packed, Some(&bias), &x, &mut y, level).unwrap();
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(run(Level::Avx2), run(Level::Best), "{p:?}");
        }
    }

    /// Stride-2 gathers (the kernel-specific `run_s2` copies) at every SIMD level this CPU has:
    /// rows with whole panels that end exactly at the input row's end (no readable pair past the
    /// last element) or before it, ragged panels, every padding mode.
    /// Strided forward convolutions whose output rows suit the padded source (stored as one
    /// sub-row per input phase): few channels (indirect kernel) and many (segments), every padding
    /// mode, strides 2 and 3, a long 1-d row, batch 2; all levels against the oracle.
    #[test]
    fn strided_padded_all_levels() {
        let mut rng = Rng(0x57_2ADD);
        let modes = [PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular];
        let cases = [
            // (C, K, in, kernel, stride, pad)
            (3, 16, [1, 64, 64], [1, 7, 7], 2, 3),
            (3, 8, [1, 40, 64], [1, 7, 7], 2, 3),
            (20, 24, [1, 64, 64], [1, 3, 3], 2, 1),
            (5, 12, [1, 48, 96], [1, 5, 5], 3, 2),
            (3, 16, [1, 1, 4096], [1, 1, 7], 2, 3),
            (4, 16, [3, 34, 64], [3, 3, 3], 2, 1),
            (3, 40, [1, 30, 64], [1, 7, 7], 2, 3), // packed panels (K >= PACK_MIN_ROWS)
            (24, 48, [1, 20, 40], [1, 3, 3], 2, 1), // packed panels spanning two rows
        ];
        for (i, &(c, k, in_size, kernel, s, pad)) in cases.iter().enumerate() {
            let mut p = ConvProblem {
                batch: 1 + i % 2,
                stride: [if in_size[0] > 1 { s } else { 1 }, if in_size[1] > 1 { s } else { 1 }, s],
                pad: kernel.map(|kd| if kd > 1 { pad } else { 0 }),
                pad_mode: modes[i % 4],
                ..problem(c, k, 1, in_size, kernel)
            };
            p.out_size = [0, 1, 2].map(|d| (p.in_size[d] + 2 * p.pad[d] - p.kernel[d]) / p.stride[d] + 1);
            let geo = Geometry::new(&p).unwrap();
            assert!(padded_pays_off(&p, &geo, p.input_len()), "{p:?} should read the padded copy");
            let x = rng.vec(p.input_len());
            let wt = rng.vec(p.weight_len());
            let bias = rng.vec(p.out_channels);
            for level in [Level::Portable, Level::Avx2, Level::Best] {
                check_with(&p, &x, &wt, Some(&bias), level);
            }
        }
    }

    /// The padded copy's buffer is reused by the next call of the calling thread, keeping its
    /// zeros when the zero pattern is the same: new inputs, other geometries and padding modes in
    /// between must never leak into a result.
    #[test]
    fn padded_buffer_reuse_across_calls() {
        let mut rng = Rng(0xB0F);
        let zeros = ConvProblem { pad: [0, 1, 1], out_size: [1, 20, 20], ..problem(8, 16, 1, [1, 20, 20], [1, 3, 3]) };
        let reflect = ConvProblem { pad_mode: PaddingMode::Reflect, ..zeros.clone() };
        let other = ConvProblem { pad: [0, 2, 2], out_size: [1, 22, 22], ..zeros.clone() };
        // Strided rows (sub-rows per input phase), stride 2 and 3, zero and reflect padding.
        let s2 = ConvProblem {
            stride: [1, 2, 2],
            pad: [0, 1, 1],
            out_size: [1, 20, 32],
            ..problem(8, 16, 1, [1, 40, 64], [1, 3, 3])
        };
        let s2r = ConvProblem { pad_mode: PaddingMode::Reflect, ..s2.clone() };
        let s3 = ConvProblem {
            stride: [1, 3, 3],
            pad: [0, 1, 1],
            out_size: [1, 10, 32],
            ..problem(8, 16, 1, [1, 30, 96], [1, 3, 3])
        };
        let w = rng.vec(zeros.weight_len());
        let packed = PackedWeight::new(false, 8, 16, 1, [1, 3, 3], &w).unwrap();
        let inputs: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(zeros.input_len())).collect();
        let big: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(s3.input_len().max(s2.input_len()))).collect();
        let fresh = |p: &ConvProblem, x: &[f32]| {
            // A fresh thread: nothing to reuse.
            std::thread::scope(|s| {
                s.spawn(|| {
                    let mut y = vec![0.0f32; p.output_len()];
                    conv(p, &packed, None, x, &mut y).unwrap();
                    y
                })
                .join()
                .unwrap()
            })
        };
        for (call, (p, x)) in [
            (&zeros, &inputs[0][..]),
            (&zeros, &inputs[1][..]),
            (&reflect, &inputs[1][..]),
            (&zeros, &inputs[2][..]),
            (&other, &inputs[0][..]),
            (&zeros, &inputs[0][..]),
            (&zeros, &inputs[0][..]),
            (&s2, &big[0][..s2.input_len()]),
            (&s2, &big[1][..s2.input_len()]),
            (&s2r, &big[1][..s2.input_len()]),
            (&s2, &big[2][..s2.input_len()]),
            (&s3, &big[0][..s3.input_len()]),
            (&s3, &big[1][..s3.input_len()]),
            (&s2, &big[0][..s2.input_len()]),
        ]
        .into_iter()
        .enumerate()
        {
            let geo = Geometry::new(p).unwrap();
            assert!(padded_pays_off(p, &geo, p.input_len()), "{p:?} reads the padded copy");
            let mut y = vec![f32::NAN; p.output_len()];
            conv(p, &packed, None, x, &mut y).unwrap();
            assert!(y == fresh(p, x), "call {call}: {p:?}");
            check(p, x, &w, None);
        }
    }

    #[test]
    fn stride2_gather_all_levels() {
        let mut rng = Rng(0x5712);
        for (i, w) in [32, 33, 34, 35, 47, 64, 65, 66, 97, 130].into_iter().enumerate() {
            let k = 1 + i % 7;
            let pad = (i % 4).min(k - 1).min(w / 2 - 1);
            let mode = [PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular][i % 4];
            let mut p = ConvProblem {
                stride: [1, 2, 2],
                pad: [0, pad, pad],
                pad_mode: mode,
                ..problem(3, 7, 1, [1, 5 + i % 3, w], [1, k.min(5), k])
            };
            p.out_size = [0, 1, 2].map(|d| (p.in_size[d] + 2 * p.pad[d] - p.kernel[d]) / p.stride[d] + 1);
            let x = rng.vec(p.input_len());
            let wt = rng.vec(p.weight_len());
            let bias = rng.vec(p.out_channels);
            for level in [Level::Portable, Level::Avx2, Level::Best] {
                check_with(&p, &x, &wt, Some(&bias), level);
            }
        }
    }

    /// Any output size is allowed (reads past the natural end are padding; transposed outputs past
    /// it get what the formula gives): compare against the oracle for arbitrary sizes.
    #[test]
    fn random_output_sizes() {
        let mut rng = Rng(0xA076_1D64_78BD_642F);
        let mut done = 0;
        while done < 200 {
            let transposed = rng.chance(50);
            let Some(mut p) = random_problem(&mut rng, transposed) else { continue };
            for d in 0..3 {
                if p.kernel[d] > 1 || p.in_size[d] > 1 {
                    p.out_size[d] = rng.range(1, p.out_size[d] + 3);
                }
            }
            let x = rng.vec(p.input_len());
            let w = rng.vec(p.weight_len());
            let packed =
                PackedWeight::new(p.transposed, p.in_channels, p.out_channels, p.groups, p.kernel, &w).unwrap();
            let mut y = vec![0.0f32; p.output_len()];
            match conv(&p, &packed, None, &x, &mut y) {
                Ok(()) => check(&p, &x, &w, None),
                // Only reflect/circular padding may be out of range for the larger sizes.
                Err(e) => assert!(
                    matches!(p.pad_mode, PaddingMode::Reflect | PaddingMode::Circular),
                    "{p:?}: unexpected error {e}"
                ),
            }
            done += 1;
        }
    }

    #[test]
    fn bit_identical_for_any_thread_count() {
        let mut rng = Rng(7);
        let problems = [
            problem(37, 29, 1, [3, 9, 11], [2, 3, 3]),
            ConvProblem { batch: 2, ..problem(64, 64, 2, [1, 28, 28], [1, 1, 1]) },
            problem(8, 8, 8, [1, 40, 33], [1, 3, 3]),
            ConvProblem {
                transposed: true,
                stride: [1, 2, 2],
                pad: [0, 1, 1],
                out_size: [1, 30, 30],
                ..problem(32, 24, 1, [1, 15, 15], [1, 4, 4])
            },
        ];
        for p in problems {
            let x = rng.vec(p.input_len());
            let w = rng.vec(p.weight_len());
            let bias = rng.vec(p.out_channels);
            let packed =
                PackedWeight::new(p.transposed, p.in_channels, p.out_channels, p.groups, p.kernel, &w).unwrap();
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut y = vec![0.0f32; p.output_len()];
                pool.install(|| conv(&p, &packed, Some(&bias), &x, &mut y)).unwrap();
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            let one = run(1);
            for threads in [2, 3, 8] {
                assert!(one == run(threads), "{p:?}: {threads} threads differ from 1");
            }
            check(&p, &x, &w, Some(&bias));
        }
    }

    #[test]
    fn errors_instead_of_panics() {
        let p = ConvProblem { pad: [0, 1, 1], out_size: [1, 4, 4], ..problem(4, 6, 2, [1, 4, 4], [1, 3, 3]) };
        let w = vec![0.5f32; p.weight_len()];
        let packed = PackedWeight::new(false, 4, 6, 2, [1, 3, 3], &w).unwrap();
        let x = vec![1.0f32; p.input_len()];
        let mut y = vec![0.0f32; p.output_len()];
        assert!(conv(&p, &packed, None, &x, &mut y).is_ok());
        assert!(matches!(conv(&p, &packed, None, &x[1..], &mut y), Err(Error::Shape { .. })));
        assert!(matches!(conv(&p, &packed, None, &x, &mut y[1..]), Err(Error::Shape { .. })));
        assert!(matches!(conv(&p, &packed, Some(&[1.0; 5]), &x, &mut y), Err(Error::Shape { .. })));
        let other = PackedWeight::new(false, 4, 6, 1, [1, 3, 3], &vec![0.0; 6 * 4 * 9]).unwrap();
        assert!(matches!(conv(&p, &other, None, &x, &mut y), Err(Error::Shape { .. })));
        let bad = ConvProblem { stride: [1, 0, 1], ..p.clone() };
        assert!(matches!(conv(&bad, &packed, None, &x, &mut y), Err(Error::InvalidConfig { .. })));
        let bad = ConvProblem { dilation: [0, 1, 1], ..p.clone() };
        assert!(matches!(conv(&bad, &packed, None, &x, &mut y), Err(Error::InvalidConfig { .. })));
        // Reflect padding must be smaller than the input; circular at most the input.
        let big = ConvProblem { pad: [0, 4, 4], out_size: [1, 10, 10], pad_mode: PaddingMode::Reflect, ..p.clone() };
        let mut y_big = vec![0.0f32; big.output_len()];
        assert!(matches!(conv(&big, &packed, None, &x, &mut y_big), Err(Error::InvalidConfig { .. })));
        let ok = ConvProblem { pad_mode: PaddingMode::Circular, ..big.clone() };
        assert!(conv(&ok, &packed, None, &x, &mut y_big).is_ok());
        let bad = ConvProblem { pad: [0, 5, 5], out_size: [1, 12, 12], ..ok };
        let mut y_bad = vec![0.0f32; bad.output_len()];
        assert!(matches!(conv(&bad, &packed, None, &x, &mut y_bad), Err(Error::InvalidConfig { .. })));
        // Transposed convolutions pad with zeros only.
        let tp = ConvProblem {
            transposed: true,
            out_size: [1, 6, 6],
            pad_mode: PaddingMode::Reflect,
            ..problem(4, 6, 2, [1, 4, 4], [1, 3, 3])
        };
        let tpacked = PackedWeight::new(true, 4, 6, 2, [1, 3, 3], &vec![0.5; 4 * 3 * 9]).unwrap();
        let mut ty = vec![0.0f32; tp.output_len()];
        assert!(matches!(conv(&tp, &tpacked, None, &x, &mut ty), Err(Error::InvalidConfig { .. })));
        let tp = ConvProblem { pad_mode: PaddingMode::Zeros, ..tp };
        assert!(conv(&tp, &tpacked, None, &x, &mut ty).is_ok());
        // Sizes whose products overflow.
        let huge = ConvProblem { in_size: [usize::MAX / 2, 3, 1], ..p.clone() };
        assert!(conv(&huge, &packed, None, &x, &mut y).is_err());
        let huge = ConvProblem { stride: [1, usize::MAX, 1], ..p.clone() };
        assert!(conv(&huge, &packed, None, &x, &mut y).is_err());
        // Packing errors.
        assert!(matches!(PackedWeight::new(false, 4, 6, 0, [1, 3, 3], &w), Err(Error::InvalidConfig { .. })));
        assert!(matches!(PackedWeight::new(false, 4, 6, 4, [1, 3, 3], &w), Err(Error::InvalidConfig { .. })));
        assert!(matches!(PackedWeight::new(false, 4, 6, 2, [1, 0, 3], &w), Err(Error::InvalidConfig { .. })));
        assert!(matches!(PackedWeight::new(false, 4, 6, 2, [1, 3, 3], &w[1..]), Err(Error::Shape { .. })));
        assert!(PackedWeight::new(false, 4, 6, 2, [usize::MAX, 3, 3], &w).is_err());
        // Empty batches and empty outputs are fine.
        let empty = ConvProblem { batch: 0, ..p.clone() };
        assert!(conv(&empty, &packed, None, &[], &mut []).is_ok());
        // An empty input dimension with zero padding gives the bias.
        let hollow = ConvProblem { in_size: [1, 0, 4], pad: [0, 1, 1], out_size: [1, 1, 4], ..p };
        let mut yh = vec![0.0f32; hollow.output_len()];
        let bias = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        conv(&hollow, &packed, Some(&bias), &[], &mut yh).unwrap();
        assert_eq!(yh, bias.iter().flat_map(|&b| [b; 4]).collect::<Vec<_>>());
    }

    /// One benchmark problem: (name, C, K, groups, in, kernel, stride, pad, dilation, transposed, out_pad).
    #[allow(clippy::type_complexity)]
    fn bench_problems() -> Vec<(&'static str, ConvProblem)> {
        #[allow(clippy::too_many_arguments)]
        fn mk(
            transposed: bool,
            c: usize,
            k: usize,
            groups: usize,
            in_size: [usize; 3],
            kernel: [usize; 3],
            stride: [usize; 3],
            pad: [usize; 3],
            dil: [usize; 3],
        ) -> ConvProblem {
            let out_size = [0, 1, 2].map(|d| {
                let span = (kernel[d] - 1) * dil[d];
                if transposed {
                    (in_size[d] - 1) * stride[d] - 2 * pad[d] + span + 1
                } else {
                    (in_size[d] + 2 * pad[d] - span - 1) / stride[d] + 1
                }
            });
            ConvProblem {
                transposed,
                batch: 1,
                in_channels: c,
                out_channels: k,
                groups,
                in_size,
                out_size,
                kernel,
                stride,
                pad,
                dilation: dil,
                pad_mode: PaddingMode::Zeros,
            }
        }
        let one = [1; 3];
        vec![
            ("conv2d 128->128 28x28 k3 p1", mk(false, 128, 128, 1, [1, 28, 28], [1, 3, 3], one, [0, 1, 1], one)),
            ("conv2d 256->64 56x56 k1", mk(false, 256, 64, 1, [1, 56, 56], one, one, [0; 3], one)),
            ("conv2d 3->64 224x224 k7 s2 p3", mk(false, 3, 64, 1, [1, 224, 224], [1, 7, 7], [1, 2, 2], [0, 3, 3], one)),
            ("depthwise 256 28x28 k3 p1", mk(false, 256, 256, 256, [1, 28, 28], [1, 3, 3], one, [0, 1, 1], one)),
            ("conv2d 64->64 56x56 k3 p2 d2", mk(false, 64, 64, 1, [1, 56, 56], [1, 3, 3], one, [0, 2, 2], [1, 2, 2])),
            ("conv1d 256->256 L2048 k5 p2", mk(false, 256, 256, 1, [1, 1, 2048], [1, 1, 5], one, [0, 0, 2], one)),
            ("conv3d 32->64 8x28x28 k3 p1", mk(false, 32, 64, 1, [8, 28, 28], [3, 3, 3], one, [1, 1, 1], one)),
            ("convT2d 128->64 28x28 k4 s2 p1", mk(true, 128, 64, 1, [1, 28, 28], [1, 4, 4], [1, 2, 2], [0, 1, 1], one)),
            (
                "convT1d 256->128 L1024 k4 s2 p1",
                mk(true, 256, 128, 1, [1, 1, 1024], [1, 1, 4], [1, 1, 2], [0, 0, 1], one),
            ),
            ("convT3d 32->16 8x16x16 k4 s2 p1", mk(true, 32, 16, 1, [8, 16, 16], [4, 4, 4], [2, 2, 2], [1, 1, 1], one)),
        ]
    }

    /// Prints GFLOP/s of the benchmark problems (batch 1, bias, f32):
    /// `cargo test --release --lib cpu::engine::tests::perf -- --ignored --nocapture`
    /// (`QCONV_BENCH=<name substring>` selects problems).
    #[test]
    #[ignore]
    fn perf() {
        let mut rng = Rng(1);
        println!("threads: {}", rayon::current_num_threads());
        // QCONV_BENCH=substring restricts the run (handy under a profiler).
        let filter = std::env::var("QCONV_BENCH").unwrap_or_default();
        for (name, p) in bench_problems().into_iter().filter(|(name, _)| name.contains(filter.as_str())) {
            let x = rng.vec(p.input_len());
            let w = rng.vec(p.weight_len());
            let bias = rng.vec(p.out_channels);
            let packed =
                PackedWeight::new(p.transposed, p.in_channels, p.out_channels, p.groups, p.kernel, &w).unwrap();
            let mut y = vec![0.0f32; p.output_len()];
            conv(&p, &packed, Some(&bias), &x, &mut y).unwrap();
            // Repeat for at least ~0.5 s, report the best of 5 batches.
            let once = std::time::Instant::now();
            conv(&p, &packed, Some(&bias), &x, &mut y).unwrap();
            // QCONV_REPS=<n> fixes the repetitions (for instruction or cycle counts).
            let reps = std::env::var("QCONV_REPS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| ((0.1 / once.elapsed().as_secs_f64().max(1e-6)) as usize).clamp(1, 10_000));
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    conv(&p, &packed, Some(&bias), &x, &mut y).unwrap();
                }
                best = best.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            println!("{name:36} {:8.3} ms {:8.1} GFLOP/s", best * 1e3, p.flops() / best / 1e9);
        }
    }

    /// Micro-kernel throughput with L1-resident operands (one thread), for both panel heights
    /// (`QCONV_NO_AVX512=1` measures the AVX2 kernel).
    #[test]
    #[ignore]
    fn kernel_peak() {
        let kc = 128;
        for mr in [MR, MR_WIDE] {
            // QCONV_LDB=<n> reads B rows `n` apart, from an unaligned start (like the padded input).
            let ldb: usize = std::env::var("QCONV_LDB").ok().and_then(|v| v.parse().ok()).unwrap_or(NR);
            let boff = if ldb == NR { 0 } else { 3 };
            let a = vec![0.5f32; kc * mr];
            let b = vec![0.25f32; boff + kc * ldb + NR];
            let mut c = vec![0.0f32; mr * NR];
            let segs = [(0usize, kc, boff)];
            let calls = 200_000;
            let t = std::time::Instant::now();
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            if let Some(k) = x86::Avx512::detect().filter(|_| std::env::var_os("QCONV_NO_AVX512").is_none()) {
                for _ in 0..calls {
                    k.gemm(mr, &a, &segs, std::hint::black_box(&b), ldb, &mut c, NR, true);
                }
            } else if let Some(k) = x86::Avx2Fma::detect() {
                for _ in 0..calls {
                    k.gemm(mr, &a, &segs, std::hint::black_box(&b), ldb, &mut c, NR, true);
                }
            }
            let s = t.elapsed().as_secs_f64();
            let gflops = (2 * mr * NR * kc * calls) as f64 / s / 1e9;
            println!("kernel {mr}x{NR}: {gflops:.1} GFLOP/s (one thread), c[0] = {}", c[0]);
        }
    }

    /// The benchmark problems are also correct (checked on a sample of output elements is not
    /// needed: they are small enough for the oracle in release builds).
    #[test]
    #[ignore]
    fn bench_problems_match_naive() {
        let mut rng = Rng(3);
        for (_, p) in bench_problems() {
            check_random_data(&mut rng, &p);
        }
    }
}
