//! The AVX2 int8 kernel, exact: `vpmaddubsw` would add two u8 × s8 products into a saturating
//! i16 (`2·255·(−128)` does not fit), so both operands are widened to i16 instead and multiplied
//! with `vpmaddwd` (two i16 × i16 products summed into an i32 lane, exact).
//!
//! Per quad of reduction bytes and 16 channels: the 64 packed weight bytes `[16][4]` are
//! sign-extended into four registers of 4 channels × 4 k; the 4 activation bytes are
//! zero-extended and broadcast as `(x0, x1, x2, x3)` to every 64-bit lane; `vpmaddwd` then gives
//! two half sums per channel (`x0w0 + x1w1`, `x2w2 + x3w3`), accumulated separately and added
//! when the block is stored. Blocks are 2 positions × 16 channels (8 accumulators, 4 weight
//! registers, one broadcast). The epilogues and the depthwise line are the portable bodies
//! compiled with AVX2 and FMA.

#[cfg(target_arch = "x86")]
use std::arch::x86::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::portable::{dw_line_generic, pair_row_generic, requant_line_generic, requant_tile_generic};
use super::{ARows, AccTile, Epi, EpiChannel, Int8Kernel, KPlan, ACC_PITCH};
use crate::cpu::kernels::{target_kernels, CpuFeatures};

/// The AVX2 int8 kernel's token: only [`Avx2I8::new`] constructs it, from detected features.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2I8(());

impl Avx2I8 {
    /// The token, where the CPU has AVX2 (and FMA, which the epilogue uses).
    pub(crate) fn new(f: CpuFeatures) -> Option<Avx2I8> {
        f.avx2_fma().then_some(Avx2I8(()))
    }
}

/// Rows per AVX2 block.
const MR2: usize = 2;

target_kernels! {
    impl Int8Kernel for Avx2I8 where features = "avx2,fma" {
        const NAME: &'static str = "avx2";
        const MR: usize = 32;
        const UNIT: usize = 4;

        fn task_begin(self) {}
        fn task_end(self) {}

        fn gemm(self, m: usize, a: ARows<'_>, plan: &KPlan, b: &[i8], panels: &[usize], acc: &mut AccTile) {
            assert!(m <= 32 && panels.len() <= 2, "block shape");
            assert!(plan.fits(m, &a, panels, b.len()), "block reads out of bounds");
            for (p, &panel) in panels.iter().enumerate() {
                let mut i = 0;
                while i < m {
                    let rows = (m - i).min(MR2);
                    let out = &mut acc.0[i * ACC_PITCH + 16 * p..i * ACC_PITCH + 16 * p + (rows - 1) * ACC_PITCH + 16];                    let rows_a = ARows { a0: a.a0 + i * a.lda, ..a };
                    if rows == 2 {
                        block::<2>(rows_a, plan, b, panel, out);
                    } else {
                        block::<1>(rows_a, plan, b, panel, out);
                    }
                    i += rows;
                }
            }
        }
        fn requant_tile(
            self,
            acc: &AccTile,
            m: usize,
            rowsums: &[i32],
            ep: &Epi<'_>,
            chans: std::ops::Range<usize>,
            dst: (&mut [u8], usize),
        ) {
            requant_tile_generic(acc, m, rowsums, ep, chans, dst)
        }
        fn requant_line(self, acc: &[i32], ch: &EpiChannel, out: &mut [u8]) {
            requant_line_generic(acc, ch, out)
        }
        fn dw_line(self, p: &[i32], taps: &[(usize, i32)], acc: &mut [i32]) {
            dw_line_generic(p, taps, acc)
        }
        fn pair_row(self, src: &[u8], zp: i32, delta: usize, dst: &mut [i32]) {
            pair_row_generic(src, zp, delta, dst)
        }
    }
}

/// `M` rows × 16 channels of one panel into `out` (rows `ACC_PITCH` apart). The caller has
/// checked with [`KPlan::fits`] that every row's runs lie inside `a` and the panel's inside `b`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn block<const M: usize>(a: ARows<'_>, plan: &KPlan, b: &[i8], panel: usize, out: &mut [i32]) {
    let ARows { data: a, a0, lda } = a;
    assert!(out.len() >= (M - 1) * ACC_PITCH + 16, "output rows");
    let mut acc = [[_mm256_setzero_si256(); 4]; M];
    let unit = plan.unit();
    for r in plan.runs() {
        let quads = r.units * unit / 4;
        // SAFETY: `plan.fits` (checked by the caller) bounds `a0 + i·lda + r.a + 4q + 4` for
        // `i < M`, `q < quads` by `a.len()` and `panel + r.b + 64q + 64` by `b.len()`.
        unsafe {
            let wp = b.as_ptr().add(panel + r.b);
            let xp = a.as_ptr().add(a0 + r.a);
            for q in 0..quads {
                let w = [
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(wp.add(64 * q) as *const __m128i)),
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(wp.add(64 * q + 16) as *const __m128i)),
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(wp.add(64 * q + 32) as *const __m128i)),
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(wp.add(64 * q + 48) as *const __m128i)),
                ];
                for (i, row) in acc.iter_mut().enumerate() {
                    let quad = (xp.add(i * lda + 4 * q) as *const i32).read_unaligned();
                    let x16 = _mm_cvtepu8_epi16(_mm_cvtsi32_si128(quad));
                    let xv = _mm256_broadcastq_epi64(x16);
                    for (s, &wv) in row.iter_mut().zip(&w) {
                        *s = _mm256_add_epi32(*s, _mm256_madd_epi16(xv, wv));
                    }
                }
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        let mut half = [0i32; 32];
        for (h, v) in row.iter().enumerate() {
            // SAFETY: `half` holds 32 i32: 8 per register.
            unsafe { _mm256_storeu_si256(half.as_mut_ptr().add(8 * h) as *mut __m256i, *v) };
        }
        for (j, o) in out[i * ACC_PITCH..i * ACC_PITCH + 16].iter_mut().enumerate() {
            *o = half[2 * j].wrapping_add(half[2 * j + 1]);
        }
    }
}
