//! The fast CPU convolution: a tiled implicit GEMM over a weight packed once per module.
//!
//! # Design
//!
//! **Sub-convolutions.** Every problem is first rewritten as a set of *sub-convolutions*, each a
//! dense correlation with unit output step over a grid of columns `m = (m0, m1, m2)`:
//! output `o_d = m_d·out_step_d + out_off_d` reads input `i_d = m_d·in_step_d + off_d(tap)` for the
//! taps of that sub-convolution. A forward convolution is one sub-convolution (`in_step = stride`,
//! `off = j·dilation − pad`, every tap). A transposed convolution (gather form) is split per
//! dimension into its `stride` *phases* (sub-pixel decomposition): outputs `o ≡ φ (mod stride)`
//! only receive the taps `j` with `(o + pad − j·dilation) ≡ 0 (mod stride)`, and there
//! `i = o/stride + (φ + pad − j·dilation)/stride` — a stride-1 correlation over `m = o / stride`
//! with a subset of the taps. No multiplication by the zeros of a dilated input ever happens, and
//! the result is a gather: every output element is produced by exactly one task, with no atomics.
//!
//! **Implicit GEMM.** Per (batch `n`, group `g`) and sub-convolution, the output is
//! `Out[Kg, cols] = W[Kg, taps·Cg] × Col[taps·Cg, cols]`. The reduction index is *tap-major*
//! (`r = tap·Cg + c`), which lets the transposed phases pick their taps out of one packed weight
//! without repacking. The reduction is cut into chunks of at most [`KC`] rows (whole taps when
//! `Cg < KC`, channel ranges of one tap otherwise). For each chunk a task gathers the `Col` tile of
//! its columns straight into micro-panels `[cols/NR][kc][NR]` — applying the padding-mode remap
//! (zeros/reflect/replicate/circular) while gathering, with contiguous copies for the in-bounds part
//! of each output row — and then runs the register-tiled micro-kernel (`MR × NR` = 6 × 16 `f32`
//! accumulators) over every `MR`-row weight panel. The tile accumulators live in a per-task buffer
//! (`Ct`); after the last chunk the tile is written to the output with the bias added (fused
//! epilogue). No full im2col matrix exists: a task holds at most `KC × NC` gathered values.
//!
//! **Packed weight.** [`PackedWeight`] stores, per group, `ceil(Kg/MR)` panels laid out
//! `[tap][c][MR]` (zero-padded rows past `Kg`), so the micro-kernel reads `MR` contiguous weights
//! per reduction step. Depthwise-like problems (`Kg == 1`) are packed with `MR = 1` instead.
//!
//! **Special paths.**
//! * 1×1, stride-1, unpadded forward convolution: the micro-kernel reads the input rows directly
//!   (leading dimension = the spatial size); only a ragged last panel is copied.
//! * `Kg == 1` (depthwise, also transposed): a direct path vectorised along the output row — per
//!   output row it builds one padded input row per (channel, tap row) and runs `axpy`s over it.
//!
//! **Micro-kernel and ISA.** The micro-kernel is written once, generically, so that LLVM
//! auto-vectorises it (the `NR` accumulators of a row are one or two vector registers); it is
//! instantiated twice: an `avx2,fma` copy (`#[target_feature]`, fused multiply-adds) selected at run
//! time with `is_x86_feature_detected!`, and a portable copy (plain multiply + add; fused on
//! aarch64, where NEON always has FMA). Later SIMD kernels (AVX-512, explicit intrinsics) plug in as
//! further implementations of the private `Kernel` trait.
//!
//! **Parallelism and determinism.** Rayon runs independent tasks, each owning a disjoint set of
//! output rows' sub-slices (safe `split_at_mut` partitioning, no `unsafe` writes): GEMM tasks are
//! (batch × group × `MR`-aligned block of output channels × range of output positions); direct
//! tasks are (batch × channel × range of output rows). The task grid adapts to the thread count,
//! but the arithmetic of every output element does not: its reduction always runs in the same
//! order (taps, then channels, from 0), partial sums are stored in `f32` between chunks (the same
//! as keeping them in registers), and the bias is added last. Results are therefore bit-identical
//! for any number of threads (on a given machine: the FMA and non-FMA kernels round differently).
//!
//! **Safety.** The only `unsafe` is the call of the `#[target_feature]` micro-kernel copies, which
//! is sound because their token type can only be constructed after the feature detection succeeds.
//! Lengths and geometry are validated up front (checked arithmetic, errors instead of panics), after
//! which every index provably stays in bounds.

use rayon::prelude::*;

use super::ConvProblem;
use crate::conv::PaddingMode;
use crate::error::{Error, Result};

/// Rows (output channels) of the micro-kernel tile.
const MR: usize = 6;
/// Columns (output positions) of the micro-kernel tile: contiguous, vectorised.
const NR: usize = 16;
/// Largest reduction chunk (rows of a gathered `Col` tile).
const KC: usize = 256;
/// Largest number of columns a GEMM task computes per sub-convolution (before the `Ct` budget).
const NC_MAX: usize = 256;
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
        if in_channels == 0 || in_channels % groups != 0 {
            return Err(Error::config(
                "in_channels",
                in_channels,
                format!("must be a positive multiple of groups = {groups}"),
            ));
        }
        if out_channels == 0 || out_channels % groups != 0 {
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
        let kk = checked_product(&kernel, "kernel size")?;
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
        let mr = if kg == 1 { 1 } else { MR };
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

fn checked_product(values: &[usize], what: &str) -> Result<usize> {
    values
        .iter()
        .try_fold(1usize, |acc, &v| acc.checked_mul(v))
        .ok_or_else(|| Error::Overflow(format!("{what}: product of {values:?} overflows usize")))
}

// ------------------------------------------------------------------------------------------------
// Micro-kernels
// ------------------------------------------------------------------------------------------------

/// A micro-kernel implementation (one per instruction set).
trait Kernel: Copy + Send + Sync {
    /// `c[MR×NR] = (accumulate ? c : 0) + Σ_r a_r ⊗ b_r`, where the reduction rows `r` run through
    /// `segs` in order: segment `(off, len)` supplies `len` weight rows `a[off + t·MR ..][..MR]`,
    /// and the `r`-th `b` row overall is `b[r·ldb ..][..NR]`.
    fn gemm(self, a: &[f32], segs: &[(usize, usize)], b: &[f32], ldb: usize, c: &mut [f32], accumulate: bool);

    /// Direct-path tile: `out[n] = Σ_t w_t · x[off_t + n·step]` for `n < DW`, over the taps
    /// `(off_t, w_t)` in order, summed in [`DW_SETS`] interleaved partial sums (tap `t` goes to
    /// set `t % DW_SETS`) that are added at the end as `((s0 + s1) + (s2 + s3))`.
    fn direct(self, x: &[f32], taps: &[(usize, f32)], step: usize, out: &mut [f32; DW]);
}

/// The generic micro-kernel body; `FMA` selects fused multiply-adds.
#[inline(always)]
fn gemm_body<const FMA: bool>(
    a: &[f32],
    segs: &[(usize, usize)],
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    accumulate: bool,
) {
    let c = &mut c[..MR * NR];
    let mut acc = [[0.0f32; NR]; MR];
    if accumulate {
        for (row, src) in acc.iter_mut().zip(c.chunks_exact(NR)) {
            row.copy_from_slice(src);
        }
    }
    let mut r = 0usize;
    for &(off, len) in segs {
        for ar in a[off..off + len * MR].chunks_exact(MR) {
            let ar: &[f32; MR] = ar.try_into().expect("MR elements");
            let br: &[f32; NR] = b[r * ldb..r * ldb + NR].try_into().expect("NR elements");
            r += 1;
            for (row, &av) in acc.iter_mut().zip(ar) {
                for (s, &bv) in row.iter_mut().zip(br) {
                    *s = if FMA { av.mul_add(bv, *s) } else { *s + av * bv };
                }
            }
        }
    }
    for (row, dst) in acc.iter().zip(c.chunks_exact_mut(NR)) {
        dst.copy_from_slice(row);
    }
}

/// Output positions per direct-path tile.
const DW: usize = 16;
/// Independent partial sums per direct-path tile (hides the FMA latency).
const DW_SETS: usize = 4;

#[inline(always)]
fn direct_body<const FMA: bool>(x: &[f32], taps: &[(usize, f32)], step: usize, out: &mut [f32; DW]) {
    let mut acc = [[0.0f32; DW]; DW_SETS];
    let mut chunks = taps.chunks_exact(DW_SETS);
    let fma = |a: &mut [f32; DW], w: f32, xs: &[f32]| {
        if step == 1 {
            let xs: &[f32; DW] = xs[..DW].try_into().expect("DW elements");
            for (s, &v) in a.iter_mut().zip(xs) {
                *s = if FMA { w.mul_add(v, *s) } else { *s + w * v };
            }
        } else {
            let xs = &xs[..(DW - 1) * step + 1];
            for (n, s) in a.iter_mut().enumerate() {
                let v = xs[n * step];
                *s = if FMA { w.mul_add(v, *s) } else { *s + w * v };
            }
        }
    };
    for group in &mut chunks {
        for (a, &(off, w)) in acc.iter_mut().zip(group) {
            fma(a, w, &x[off..]);
        }
    }
    for (a, &(off, w)) in acc.iter_mut().zip(chunks.remainder()) {
        fma(a, w, &x[off..]);
    }
    let [s0, s1, s2, s3] = acc;
    for n in 0..DW {
        out[n] = (s0[n] + s1[n]) + (s2[n] + s3[n]);
    }
}

/// Portable kernel: plain multiply-add (fused where the baseline ISA has FMA, i.e. aarch64).
#[derive(Clone, Copy, Debug)]
struct Portable;

const PORTABLE_FMA: bool = cfg!(target_arch = "aarch64");

impl Kernel for Portable {
    fn gemm(self, a: &[f32], segs: &[(usize, usize)], b: &[f32], ldb: usize, c: &mut [f32], accumulate: bool) {
        gemm_body::<PORTABLE_FMA>(a, segs, b, ldb, c, accumulate)
    }
    fn direct(self, x: &[f32], taps: &[(usize, f32)], step: usize, out: &mut [f32; DW]) {
        direct_body::<PORTABLE_FMA>(x, taps, step, out)
    }
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
mod x86 {
    use super::{direct_body, gemm_body, Kernel, DW};

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
    unsafe fn gemm_avx2(a: &[f32], segs: &[(usize, usize)], b: &[f32], ldb: usize, c: &mut [f32], accumulate: bool) {
        gemm_body::<true>(a, segs, b, ldb, c, accumulate)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn direct_avx2(x: &[f32], taps: &[(usize, f32)], step: usize, out: &mut [f32; DW]) {
        direct_body::<true>(x, taps, step, out)
    }

    impl Kernel for Avx2Fma {
        fn gemm(self, a: &[f32], segs: &[(usize, usize)], b: &[f32], ldb: usize, c: &mut [f32], accumulate: bool) {
            // SAFETY: an `Avx2Fma` value exists only if `detect` found AVX2 and FMA on this CPU,
            // which is all `gemm_avx2` requires beyond what safe Rust guarantees.
            unsafe { gemm_avx2(a, segs, b, ldb, c, accumulate) }
        }
        fn direct(self, x: &[f32], taps: &[(usize, f32)], step: usize, out: &mut [f32; DW]) {
            // SAFETY: as above, the token proves AVX2 and FMA are available.
            unsafe { direct_avx2(x, taps, step, out) }
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
                return Err(Error::config("dilation", format!("{:?}", p.dilation), "every dilation must be at least 1"));
            }
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
                let taps = (0..k)
                    .map(|j| make_tap(j, (j * dil) as isize - padi, s, out, len))
                    .collect();
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

/// Input index `i` of a dimension of length `len` under `mode`, or `None` for a zero.
#[inline]
fn remap(mode: PaddingMode, i: isize, len: usize) -> Option<usize> {
    let l = len as isize;
    if (0..l).contains(&i) {
        return Some(i as usize);
    }
    let j = match mode {
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

// ------------------------------------------------------------------------------------------------
// Entry point
// ------------------------------------------------------------------------------------------------

/// Runs the convolution `p` with the packed weight `w`: `y = conv(x, w) + bias`.
///
/// `x` has `p.input_len()` elements, `y` `p.output_len()` (fully overwritten) and `bias`, if
/// any, `p.out_channels`. See the [module documentation](self) for the algorithm.
///
/// Errors: [`Error::Shape`] if a length does not match `p` or `w` does not fit `p`;
/// [`Error::InvalidConfig`] for a zero stride or dilation, a non-zeros padding mode on a
/// transposed convolution, or a reflect/circular padding larger than the input allows;
/// [`Error::Overflow`] if a size does not fit the index arithmetic.
pub fn conv(p: &ConvProblem, w: &PackedWeight, bias: Option<&[f32]>, x: &[f32], y: &mut [f32]) -> Result<()> {
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
    let in_len = checked_product(
        &[p.batch, p.in_channels, p.in_size[0], p.in_size[1], p.in_size[2]],
        "input elements",
    )?;
    let out_len = checked_product(
        &[p.batch, p.out_channels, p.out_size[0], p.out_size[1], p.out_size[2]],
        "output elements",
    )?;
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
    let ctx = Ctx { p, geo, w, bias, x };
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    if let Some(k) = x86::Avx2Fma::detect() {
        ctx.run(k, y);
        return Ok(());
    }
    ctx.run(Portable, y);
    Ok(())
}

/// Everything a task reads.
struct Ctx<'a> {
    p: &'a ConvProblem,
    geo: Geometry,
    w: &'a PackedWeight,
    bias: Option<&'a [f32]>,
    x: &'a [f32],
}

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
}

/// Per-task scratch buffers, reused across the tasks a rayon worker runs.
#[derive(Default)]
struct Workspace {
    col: Vec<f32>,
    ct: Vec<f32>,
    segs: Vec<Seg>,
    asegs: Vec<(usize, usize)>,
    xpad: Vec<f32>,
    dtaps: Vec<(usize, f32)>,
}

/// Splits `n` items into `parts` near-equal consecutive ranges; returns the `parts + 1` bounds.
fn split_bounds(n: usize, parts: usize) -> Vec<usize> {
    (0..=parts).map(|i| i * n / parts).collect()
}

impl Ctx<'_> {
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
        let kblocks = kg.div_ceil(MR);
        // Columns per task and sub-convolution: NC_MAX, fewer when Kg is large (Ct budget).
        let nc = (CT_BUDGET / (kblocks * MR)).clamp(2 * NR, NC_MAX) / NR * NR;
        let units = plane.div_ceil(NR);
        let mut pt = plane.div_ceil(nc.saturating_mul(phases)).clamp(1, units);
        if ng.saturating_mul(pt) < want {
            pt = want.div_ceil(ng).clamp(pt, units);
        }
        let mut kt = 1;
        if ng.saturating_mul(pt) < want {
            kt = want.div_ceil(ng * pt).clamp(1, kblocks);
        }
        let pb: Vec<usize> = split_bounds(units, pt).into_iter().map(|u| (u * NR).min(plane)).collect();
        let kb: Vec<usize> = split_bounds(kblocks, kt).into_iter().map(|b| (b * MR).min(kg)).collect();
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
        tasks.into_par_iter().for_each_init(Workspace::default, |ws, task| self.gemm_task(kern, ws, task));
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
            let mut cols = 0;
            while end < segs.len() && segs[end].key == key {
                segs[end].col = cols;
                cols += segs[end].len;
                end += 1;
            }
            self.gemm_subconv(kern, ws, &mut task, &segs[start..end], cols);
            start = end;
        }
        ws.segs = segs;
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
        let nmr = kcount.div_ceil(MR);
        let ct_len = npanels * nmr * MR * NR;
        if ws.ct.len() < ct_len {
            ws.ct.resize(ct_len, 0.0);
        }
        let panel_len = geo.kk * cg * MR; // one packed MR panel of the weight
        let wbase = (task.g * self.w.panels + task.k0 / MR) * panel_len;
        let direct_1x1 = !p.transposed
            && p.kernel == [1, 1, 1]
            && p.stride == [1, 1, 1]
            && p.pad == [0, 0, 0]
            && p.in_size == p.out_size;
        // Reduction chunks: whole taps when Cg < KC, else channel ranges of one tap.
        let (taps_per_chunk, cchunks) = if cg >= KC { (1, cg.div_ceil(KC)) } else { (KC / cg, 1) };
        let cb = split_bounds(cg, cchunks);
        let mut first = true;
        let mut t0 = 0;
        while t0 < nt {
            let t1 = (t0 + taps_per_chunk).min(nt);
            for ci in 0..cchunks {
                let (c0, c1) = (cb[ci], cb[ci + 1]);
                let ncc = c1 - c0;
                let kc = (t1 - t0) * ncc;
                // Weight segments of this chunk (offsets inside one MR panel), merged when adjacent.
                ws.asegs.clear();
                for t in t0..t1 {
                    let j = self.tap_index(ph, ntaps, t);
                    let off = (j * cg + c0) * MR;
                    match ws.asegs.last_mut() {
                        Some(last) if last.0 + last.1 * MR == off => last.1 += ncc,
                        _ => ws.asegs.push((off, ncc)),
                    }
                }
                let col_len = npanels * kc * NR;
                if ws.col.len() < col_len {
                    ws.col.resize(col_len, 0.0);
                }
                let full_panels = if direct_1x1 { cols / NR } else { 0 };
                if direct_1x1 {
                    self.pack_1x1_tail(&mut ws.col, task, c0, c1, cols);
                } else {
                    self.gather(&mut ws.col, task, segs, ph, ntaps, (t0, t1), (c0, c1), kc, cols);
                }
                for q in 0..npanels {
                    let (b, ldb): (&[f32], usize) = if q < full_panels {
                        // 1×1: B rows are input channel rows, read in place.
                        let start = (task.n * p.in_channels + task.g * cg + c0) * geo.in_plane + task.p0 + q * NR;
                        (&self.x[start..start + (kc - 1) * geo.in_plane + NR], geo.in_plane)
                    } else {
                        (&ws.col[q * kc * NR..(q + 1) * kc * NR], NR)
                    };
                    for i in 0..nmr {
                        let a = &self.w.data[wbase + i * panel_len..wbase + (i + 1) * panel_len];
                        let c = &mut ws.ct[(q * nmr + i) * MR * NR..(q * nmr + i + 1) * MR * NR];
                        kern.gemm(a, &ws.asegs, b, ldb, c, !first);
                    }
                }
                first = false;
            }
            t0 = t1;
        }
        // Epilogue: Ct (+ bias) → output rows.
        for (kl, row) in task.rows.iter_mut().enumerate() {
            let b = bias(kl);
            let (i, m) = (kl / MR, kl % MR);
            let tile_row = |q: usize| &ws.ct[((q * nmr + i) * MR + m) * NR..((q * nmr + i) * MR + m + 1) * NR];
            if !p.transposed || (step2 == 1 && segs.len() == 1) {
                // Forward (or a single contiguous run): columns are consecutive output positions.
                let dest0 = segs[0].dest;
                for q in 0..npanels {
                    let w = NR.min(cols - q * NR);
                    let dst = &mut row[dest0 + q * NR..dest0 + q * NR + w];
                    for (d, &v) in dst.iter_mut().zip(&tile_row(q)[..w]) {
                        *d = v + b;
                    }
                }
            } else {
                for s in segs {
                    for u in 0..s.len {
                        let col = s.col + u;
                        row[s.dest + u * step2] = tile_row(col / NR)[col % NR] + b;
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
    fn gather(
        &self,
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
        if cols % NR != 0 {
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
                let i0 = remap(mode, (s.m0 * ph[0].in_step) as isize + tap0.off, l0);
                let i1 = remap(mode, (s.m1 * ph[1].in_step) as isize + tap1.off, l1);
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
                    let edge = |m: usize| {
                        remap(mode, (m * st2) as isize + tap2.off, l2).map_or(0.0, |i| xrow[i])
                    };
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
                        } else {
                            for (u, v) in xrow[first..].iter().step_by(st2).take(n).enumerate() {
                                put(col, kc, r, at + u, *v);
                            }
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
        tasks.into_par_iter().for_each_init(Workspace::default, |ws, task| self.direct_task(kern, ws, task));
    }

    fn direct_task<K: Kernel>(&self, kern: K, ws: &mut Workspace, task: DirectTask<'_>) {
        let p = self.p;
        let geo = &self.geo;
        let [l0, l1, l2] = p.in_size;
        let [_, o1n, o2n] = p.out_size;
        let mode = p.pad_mode;
        let cg = geo.cg;
        let g = task.k; // Kg == 1
        let b = self.bias.map_or(0.0, |b| b[task.k]);
        let wg = &self.w.data[g * geo.kk * cg..(g + 1) * geo.kk * cg]; // [tap][c]
        let s2 = geo.out_step[2];
        let mut taps = std::mem::take(&mut ws.asegs);
        let mut dtaps: Vec<(usize, f32)> = Vec::new();
        std::mem::swap(&mut dtaps, &mut ws.dtaps);
        for (ri, out_row) in task.out.chunks_mut(o2n).enumerate() {
            let row = task.row0 + ri;
            let (o0, o1) = (row / o1n, row % o1n);
            let ph0 = &geo.phases[0][o0 % geo.out_step[0]];
            let ph1 = &geo.phases[1][o1 % geo.out_step[1]];
            let (m0, m1) = (o0 / geo.out_step[0], o1 / geo.out_step[1]);
            // Input rows (channel, tap0, tap1) this output row reads (rows of zeros are skipped).
            taps.clear();
            for c in 0..cg {
                let chan = task.n * p.in_channels + g * cg + c;
                for (t0, tap0) in ph0.taps.iter().enumerate() {
                    let Some(i0) = remap(mode, (m0 * ph0.in_step) as isize + tap0.off, l0) else {
                        continue;
                    };
                    for (t1, tap1) in ph1.taps.iter().enumerate() {
                        let Some(i1) = remap(mode, (m1 * ph1.in_step) as isize + tap1.off, l1) else {
                            continue;
                        };
                        taps.push((((chan * l0 + i0) * l1 + i1) * l2, (c * ph0.taps.len() + t0) * ph1.taps.len() + t1));
                    }
                }
            }
            for (phi2, ph2) in geo.phases[2].iter().enumerate() {
                let count = ph2.count;
                let (Some(first), Some(last)) = (ph2.taps.first(), ph2.taps.last()) else {
                    for m2 in 0..count {
                        out_row[m2 * s2 + phi2] = b;
                    }
                    continue;
                };
                // Padded input rows covering every index the taps read, [lo, lo + padded), plus
                // slack so that the last tile may run past `count`.
                let lo = first.off.min(last.off);
                let tiles = count.div_ceil(DW);
                let hi = ((tiles * DW - 1) * ph2.in_step) as isize + first.off.max(last.off) + 1;
                let padded = (hi - lo) as usize;
                ws.xpad.clear();
                ws.xpad.resize(taps.len() * padded, 0.0);
                dtaps.clear();
                for (r, &(base, rc)) in taps.iter().enumerate() {
                    let xrow = &self.x[base..base + l2];
                    fill_padded(&mut ws.xpad[r * padded..(r + 1) * padded], xrow, lo, mode);
                    // rc = (c · n0 + t0) · n1 + t1
                    let (c, t01) = (rc / (ph0.taps.len() * ph1.taps.len()), rc % (ph0.taps.len() * ph1.taps.len()));
                    let (t0, t1) = (t01 / ph1.taps.len(), t01 % ph1.taps.len());
                    for tap2 in &ph2.taps {
                        let j = (ph0.taps[t0].j * p.kernel[1] + ph1.taps[t1].j) * p.kernel[2] + tap2.j;
                        dtaps.push((r * padded + (tap2.off - lo) as usize, wg[j * cg + c]));
                    }
                }
                let mut tile = [0.0f32; DW];
                for ti in 0..tiles {
                    let m = ti * DW;
                    kern.direct(&ws.xpad[m * ph2.in_step..], &dtaps, ph2.in_step, &mut tile);
                    for (u, &v) in tile.iter().enumerate().take(count - m) {
                        out_row[(m + u) * s2 + phi2] = v + b;
                    }
                }
            }
        }
        ws.asegs = taps;
        ws.dtaps = dtaps;
    }
}

/// `xpad[u] = x̃[lo + u]` for every `u < xpad.len()`, with the padding-mode remap (zeros outside).
fn fill_padded(xpad: &mut [f32], xrow: &[f32], lo: isize, mode: PaddingMode) {
    let len = xpad.len();
    let l = xrow.len() as isize;
    // In-bounds part: u with 0 <= lo + u < l.
    let a = (-lo).clamp(0, len as isize) as usize;
    let b = (l - lo).clamp(a as isize, len as isize) as usize;
    xpad[a..b].copy_from_slice(&xrow[(lo + a as isize) as usize..(lo + b as isize) as usize]);
    for u in (0..a).chain(b..len) {
        xpad[u] = remap(mode, lo + u as isize, xrow.len()).map_or(0.0, |i| xrow[i]);
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

/// Writes `src` to row `r`, columns `c0..`, of a panel tile.
#[inline]
fn write_run(col: &mut [f32], kc: usize, r: usize, c0: usize, mut src: &[f32]) {
    let mut c = c0;
    while !src.is_empty() {
        let lane = c % NR;
        let take = (NR - lane).min(src.len());
        let d = panel_index(kc, r, c);
        col[d..d + take].copy_from_slice(&src[..take]);
        src = &src[take..];
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
    use crate::cpu::conv_naive;

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
        let packed = PackedWeight::new(p.transposed, p.in_channels, p.out_channels, p.groups, p.kernel, w)
            .unwrap_or_else(|e| panic!("{p:?}: {e}"));
        let mut y = vec![f32::NAN; p.output_len()];
        conv(p, &packed, bias, x, &mut y).unwrap_or_else(|e| panic!("{p:?}: {e}"));
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
        let macs = p.flops() / 2.0 * if transposed { 1.0 } else { 1.0 };
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
        let out_size = [0, 1, 2].map(|d| in_size[d] - kernel[d] + 1);
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
        let p = ConvProblem { stride: [1, 1, 3], pad: [0, 0, 2], out_size: [1, 1, 1001], ..problem(5, 9, 1, [1, 1, 3000], [1, 1, 5]) };
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
            let packed = PackedWeight::new(p.transposed, p.in_channels, p.out_channels, p.groups, p.kernel, &w).unwrap();
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
            ("convT1d 256->128 L1024 k4 s2 p1", mk(true, 256, 128, 1, [1, 1, 1024], [1, 1, 4], [1, 1, 2], [0, 0, 1], one)),
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
            let packed = PackedWeight::new(p.transposed, p.in_channels, p.out_channels, p.groups, p.kernel, &w).unwrap();
            let mut y = vec![0.0f32; p.output_len()];
            conv(&p, &packed, Some(&bias), &x, &mut y).unwrap();
            // Repeat for at least ~0.5 s, report the best of 5 batches.
            let once = std::time::Instant::now();
            conv(&p, &packed, Some(&bias), &x, &mut y).unwrap();
            let reps = ((0.1 / once.elapsed().as_secs_f64().max(1e-6)) as usize).clamp(1, 10_000);
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
