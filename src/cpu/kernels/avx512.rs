//! The AVX-512F kernel: the generic bodies compiled with 512-bit vectors (one `zmm` register per
//! accumulator row of [`NR`] = 16, weights fed by embedded-broadcast FMAs), plus the 8-row GEMM
//! tiles and the panel packing written with intrinsics. Its fused multiply-adds run in the same
//! order as the AVX2 + FMA kernel's, so the results are bit-identical.

#[cfg(target_arch = "x86")]
use std::arch::x86::{
    __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
};

use super::generic::{direct_body, direct_v_body, gemm_body, gemm_ind_body};
use super::{target_kernels, ASeg, CTile, CpuFeatures, DirectWin, Kernel, Piece, RowOffsets, MR, MR_WIDE, NR};
use crate::cpu::rows::write_run_strided;

/// The AVX-512F kernel's token: only [`Avx512::new`] constructs it, from detected features.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512(());

impl Avx512 {
    /// The token, where the CPU has AVX-512F, AVX2 and FMA.
    pub(crate) fn new(f: CpuFeatures) -> Option<Avx512> {
        f.avx512f().then_some(Avx512(()))
    }
}

target_kernels! {
    impl Kernel for Avx512 where features = "avx512f,avx2,fma" {
        const NAME: &'static str = "avx512f";
        const WIDE_TILES: bool = true;

        fn gemm(self, mr: usize, a: &[f32], segs: &[ASeg], b: &[f32], ldb: usize, out: CTile<'_>) {
            if mr == MR_WIDE {
                gemm8(a, segs, b, ldb, out)
            } else {
                assert_eq!(mr, MR, "panel rows");
                gemm_body::<true, MR, MR>(a, segs, b, ldb, out)
            }
        }
        fn gemm_ind(self, mr: usize, a: &[f32], b: &[f32], offs: &RowOffsets, out: CTile<'_>) {
            if mr == MR_WIDE {
                gemm_ind8(a, b, offs, out)
            } else {
                assert_eq!(mr, MR, "panel rows");
                gemm_ind_body::<true, MR, MR>(a, b, &offs.offs, out)
            }
        }
        fn direct(self, x: &[f32], taps: &[(usize, f32)], win: DirectWin, out: &mut [f32]) {
            direct_body::<true>(x, taps, win, out)
        }
        fn direct_v3(self, x: &[f32], taps: &[(usize, [f32; 3])], win: DirectWin, out: &mut [f32]) {
            direct_v_body::<true, 3>(x, taps, win, out)
        }
        fn pack_panel(self, dst: &mut [f32], src: &[f32], rows: &RowOffsets, pieces: &[Piece]) {
            pack_panel_masked(dst, src, rows, pieces)
        }
        fn run_s2(self, col: &mut [f32], kc: usize, r: usize, c0: usize, src: &[f32], n: usize) {
            write_run_strided(col, kc, r, c0, src, 2, n)
        }
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
fn gemm8(a: &[f32], segs: &[ASeg], b: &[f32], ldb: usize, out: CTile<'_>) {
    let (c, ldc, accumulate) = out.into_parts();
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

/// The 8 × 16 indirect micro-kernel ([`Kernel::gemm_ind`](super::Kernel::gemm_ind) with 8-row
/// panels), with the reduction row loop of [`gemm8`].
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn gemm_ind8(a: &[f32], b: &[f32], offs: &RowOffsets, out: CTile<'_>) {
    let (c, ldc, acc) = out.into_parts();
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

/// [`Kernel::pack_panel`](super::Kernel::pack_panel) with masked loads: one 16-lane register per row, each piece merged
/// into its lanes (lanes outside every piece stay zero), one store.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn pack_panel_masked(dst: &mut [f32], src: &[f32], rows: &RowOffsets, pieces: &[Piece]) {
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
    assert!(rows.offs.is_empty() || rows.max.checked_add(end).is_some_and(|e| e <= src.len()), "pieces out of bounds");
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
