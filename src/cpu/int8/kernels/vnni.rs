//! The AVX512-VNNI int8 kernel.
//!
//! **GEMM.** Blocks of up to [`MRV`] = 14 output positions × 32 channels (two weight panels): per
//! quad of reduction bytes, two 64-byte weight loads (16 channels × 4 k each, the packing's
//! `[k/4][16][4]`), then per position one `vpbroadcastd` of its 4 activation bytes and two
//! `vpdpbusd` (u8 × s8, four products summed into each i32 lane, wrapping — exact within the
//! bounds the callers keep). 28 accumulators, 2 weight registers and a broadcast: 31 of the 32
//! `zmm` registers.
//!
//! **Epilogues.** 16 lanes at a time, the exact sequence of [`super::requant_one`]:
//! `vpaddd`/`vpmulld` for the zero-point correction, `vcvtdq2ps`, one `vfmadd` for the bias,
//! `vmulps`, `vcvtps2dq` (round half to even, `INT32_MIN` for NaN and out-of-range values, as
//! the default MXCSR gives), integer clamps, and a masked `vpmovdb` store.
//!
//! **Depthwise lines.** `vpdpwssd` (i16 pairs × i16 pairs into i32), four vectors of 16 outputs
//! per tap in flight.

use std::arch::x86_64::*;

use super::{ARows, AccTile, Epi, EpiChannel, Int8Kernel, KPlan, ACC_PITCH};
use crate::cpu::kernels::{target_kernels, CpuFeatures};

/// The AVX512-VNNI kernel's token: only [`Vnni::new`] constructs it, from detected features.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vnni(());

impl Vnni {
    /// The token, where the CPU has AVX512-VNNI (with AVX-512F/BW, AVX2 and FMA).
    pub(crate) fn new(f: CpuFeatures) -> Option<Vnni> {
        f.avx512_vnni().then_some(Vnni(()))
    }
}

/// Rows of a VNNI GEMM block.
pub(crate) const MRV: usize = 14;

target_kernels! {
    impl Int8Kernel for Vnni where features = "avx512f,avx512bw,avx512vnni,avx2,fma" {
        const NAME: &'static str = "avx512-vnni";
        const MR: usize = MRV;
        const UNIT: usize = 4;

        fn task_begin(self) {}
        fn task_end(self) {}

        fn gemm(self, m: usize, a: ARows<'_>, plan: &KPlan, b: &[i8], panels: &[usize], acc: &mut AccTile) {
            assert!((1..=MRV).contains(&m) && (1..=2).contains(&panels.len()), "block shape");
            assert!(plan.fits(m, &a, panels, b.len()), "block reads out of bounds");
            let bp = [panels[0], panels[panels.len() - 1]];
            macro_rules! rows {
                ($nv:literal: $($n:literal)*) => {
                    match m {
                        $($n => block::<$n, $nv>(a, plan, b, bp, acc),)*
                        _ => unreachable!("m checked above"),
                    }
                };
            }
            if panels.len() == 2 {
                rows!(2: 1 2 3 4 5 6 7 8 9 10 11 12 13 14)
            } else {
                rows!(1: 1 2 3 4 5 6 7 8 9 10 11 12 13 14)
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
            let (ch0, n) = (chans.start, chans.len());
            let (out, stride) = dst;
            assert!(m <= 32 && n <= 32 && ep.fits(ch0, 32) && (rowsums.is_empty() || rowsums.len() >= m), "epilogue tile");
            assert!(m == 0 || (m - 1).checked_mul(stride).and_then(|v| v.checked_add(n)).is_some_and(|e| e <= out.len()), "epilogue tile out of bounds");
            // SAFETY: the channel constants hold 32 lanes from `ch0` (`ep.fits`, checked).
            let ld = |v: &[f32], h: usize| unsafe { _mm512_loadu_ps(v.as_ptr().add(ch0 + 16 * h)) };
            // SAFETY: as above.
            let ldi = |v: &[i32], h: usize| unsafe { _mm512_loadu_si512(v.as_ptr().add(ch0 + 16 * h) as *const _) };
            let (mult, ba, bb) = ([ld(ep.mult, 0), ld(ep.mult, 1)], [ld(ep.ba, 0), ld(ep.ba, 1)], [ld(ep.bb, 0), ld(ep.bb, 1)]);
            let (corr, wzp) = ([ldi(ep.corr, 0), ldi(ep.corr, 1)], [ldi(ep.wzp, 0), ldi(ep.wzp, 1)]);
            let (zp16, lo8) = (_mm512_set1_epi16(ep.zp as i16), _mm512_set1_epi8(ep.lo as u8 as i8));
            let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
            let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
            for i in 0..m {
                let rs = _mm512_set1_epi32(rowsums.get(i).copied().unwrap_or(0));
                let q = [0, 1].map(|h| {
                    // SAFETY: row `i < 32` of the tile, lanes `16h..16h + 16 <= 32`.
                    let mut v = unsafe { _mm512_load_si512(acc.0.as_ptr().add(i * ACC_PITCH + 16 * h) as *const _) };
                    v = _mm512_add_epi32(v, corr[h]);
                    if !rowsums.is_empty() {
                        v = _mm512_sub_epi32(v, _mm512_mullo_epi32(wzp[h], rs));
                    }
                    let mut f = _mm512_cvtepi32_ps(v);
                    if ep.has_bias {
                        f = _mm512_fmadd_ps(ba[h], bb[h], f);
                    }
                    _mm512_cvtps_epi32(_mm512_mul_ps(f, mult[h]))
                });
                // FBGEMM's saturating packs (the same codes as `finish`, see `requant_line`).
                let w = _mm512_adds_epi16(_mm512_packs_epi32(q[0], q[1]), zp16);
                let b = _mm512_max_epu8(_mm512_packus_epi16(w, w), lo8);
                // SAFETY: the masked store writes `out[i·stride..][..n]`, in bounds (checked above).
                unsafe { _mm512_mask_storeu_epi8(out.as_mut_ptr().add(i * stride) as *mut _, mask, _mm512_permutexvar_epi32(order, b)) };
            }
        }
        fn requant_line(self, acc: &[i32], ch: &EpiChannel, out: &mut [u8]) {
            let n = out.len();
            assert!(acc.len() >= n, "epilogue line out of bounds");
            let corr = _mm512_set1_epi32(ch.corr);
            let (ba, bb, mult) = (_mm512_set1_ps(ch.ba), _mm512_set1_ps(ch.bb), _mm512_set1_ps(ch.mult));
            let scale = |v: __m512i| -> __m512i {
                let mut f = _mm512_cvtepi32_ps(_mm512_add_epi32(v, corr));
                if ch.has_bias {
                    f = _mm512_fmadd_ps(ba, bb, f);
                }
                _mm512_cvtps_epi32(_mm512_mul_ps(f, mult))
            };
            let mut m = 0;
            // 64 codes at a time through FBGEMM's saturating packs: `packs_epi32` clamps to int16,
            // `adds_epi16` adds the zero point (saturating), `packus_epi16` clamps to [0, 255];
            // the same codes as `finish` (the saturations only bind where the final clamp does).
            let (zp16, lo8) = (_mm512_set1_epi16(ch.zp as i16), _mm512_set1_epi8(ch.lo as u8 as i8));
            let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
            while m + 64 <= n {
                // SAFETY: `m + 64 <= n <= acc.len()` and `<= out.len()`.
                unsafe {
                    let q = [0, 1, 2, 3].map(|u| scale(_mm512_loadu_si512(acc.as_ptr().add(m + 16 * u) as *const _)));
                    let lo = _mm512_adds_epi16(_mm512_packs_epi32(q[0], q[1]), zp16);
                    let hi = _mm512_adds_epi16(_mm512_packs_epi32(q[2], q[3]), zp16);
                    let b = _mm512_max_epu8(_mm512_packus_epi16(lo, hi), lo8);
                    _mm512_storeu_si512(out.as_mut_ptr().add(m) as *mut _, _mm512_permutexvar_epi32(order, b));
                }
                m += 64;
            }
            let (zp, lo) = (_mm512_set1_epi32(ch.zp), _mm512_set1_epi32(ch.lo));
            while m < n {
                let mask = tail_mask((n - m).min(16));
                // SAFETY: the masked load and store touch only entries below `n`.
                unsafe {
                    let v = _mm512_maskz_loadu_epi32(mask, acc.as_ptr().add(m));
                    let q = finish(scale(v), zp, lo);
                    _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add(m) as *mut _, mask, q);
                }
                m += 16;
            }
        }
        fn dw_line(self, p: &[i32], taps: &[(usize, i32)], acc: &mut [i32]) {
            let n = acc.len();
            assert!(taps.iter().all(|t| t.0.checked_add(n).is_some_and(|e| e <= p.len())), "depthwise line reads out of bounds");
            let mut m = 0;
            while m + 64 <= n {
                let mut s = [_mm512_setzero_si512(); 4];
                for &(off, w) in taps {
                    let wv = _mm512_set1_epi32(w);
                    for (u, v) in s.iter_mut().enumerate() {
                        // SAFETY: `off + m + 16u + 16 <= off + n <= p.len()` (checked above).
                        let x = unsafe { _mm512_loadu_si512(p.as_ptr().add(off + m + 16 * u) as *const _) };
                        *v = _mm512_dpwssd_epi32(*v, x, wv);
                    }
                }
                for (u, v) in s.iter().enumerate() {
                    // SAFETY: `m + 16u + 16 <= n = acc.len()`.
                    unsafe { _mm512_storeu_si512(acc.as_mut_ptr().add(m + 16 * u) as *mut _, *v) };
                }
                m += 64;
            }
            while m < n {
                let mask = tail_mask((n - m).min(16));
                let mut s = _mm512_setzero_si512();
                for &(off, w) in taps {
                    // SAFETY: the masked load reads only `p[off + m ..][..len]`, inside `p`.
                    let x = unsafe { _mm512_maskz_loadu_epi32(mask, p.as_ptr().add(off + m)) };
                    s = _mm512_dpwssd_epi32(s, x, _mm512_set1_epi32(w));
                }
                // SAFETY: the masked store writes only `acc[m..][..len]`.
                unsafe { _mm512_mask_storeu_epi32(acc.as_mut_ptr().add(m), mask, s) };
                m += 16;
            }
        }
        fn pair_row(self, src: &[u8], zp: i32, delta: usize, dst: &mut [i32]) {
            let n = dst.len();
            assert!(n.checked_add(delta).is_some_and(|e| e <= src.len()), "pair row out of bounds");
            let (zpv, lo16) = (_mm512_set1_epi32(zp), _mm512_set1_epi32(0xFFFF));
            let pair = |a: __m128i, b: __m128i| {
                let a = _mm512_and_si512(_mm512_sub_epi32(_mm512_cvtepu8_epi32(a), zpv), lo16);
                let b = _mm512_slli_epi32(_mm512_sub_epi32(_mm512_cvtepu8_epi32(b), zpv), 16);
                _mm512_or_si512(a, b)
            };
            let mut v = 0;
            while v + 16 <= n {
                // SAFETY: `v + delta + 16 <= n + delta <= src.len()` and `v + 16 <= dst.len()`.
                unsafe {
                    let a = _mm_loadu_si128(src.as_ptr().add(v) as *const _);
                    let b = _mm_loadu_si128(src.as_ptr().add(v + delta) as *const _);
                    _mm512_storeu_si512(dst.as_mut_ptr().add(v) as *mut _, pair(a, b));
                }
                v += 16;
            }
            if v < n {
                let mask = tail_mask(n - v);
                let m64 = mask as u64;
                // SAFETY: the masked loads read `src[v..][..n − v]` and `src[v + delta..][..n − v]`,
                // inside `src` (checked above); the masked store writes `dst[v..n]`.
                unsafe {
                    let a = _mm512_castsi512_si128(_mm512_maskz_loadu_epi8(m64, src.as_ptr().add(v) as *const _));
                    let b = _mm512_castsi512_si128(_mm512_maskz_loadu_epi8(m64, src.as_ptr().add(v + delta) as *const _));
                    _mm512_mask_storeu_epi32(dst.as_mut_ptr().add(v), mask, pair(a, b));
                }
            }
        }
    }
}

/// The mask of the first `len <= 16` lanes.
#[inline(always)]
fn tail_mask(len: usize) -> __mmask16 {
    ((1u32 << len) - 1) as __mmask16
}

/// The integer steps after `cvtps2dq`: clamp to int16, add the zero point, clamp to `[lo, 255]`.
#[target_feature(enable = "avx512f")]
#[inline]
fn finish(q: __m512i, zp: __m512i, lo: __m512i) -> __m512i {
    let q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_set1_epi32(-32768)), _mm512_set1_epi32(32767));
    _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(q, zp), lo), _mm512_set1_epi32(255))
}

/// `M` rows × `NV` panels (`panels[1]` unused when `NV == 1`); the caller has checked the reads
/// with [`KPlan::fits`] and `M <= MRV`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
fn block<const M: usize, const NV: usize>(a: ARows<'_>, plan: &KPlan, b: &[i8], panels: [usize; 2], acc: &mut AccTile) {
    let ARows { data: a, a0, lda } = a;
    let mut s = [[_mm512_setzero_si512(); NV]; M];
    let unit = plan.unit();
    for r in plan.runs() {
        let quads = r.units * unit / 4;
        // SAFETY: `plan.fits` bounds `a0 + i·lda + r.a + 4q + 4 <= a.len()` for `i < M`,
        // `q < quads`, and `panels[p] + r.b + 64q + 64 <= b.len()`.
        unsafe {
            let xp = a.as_ptr().add(a0 + r.a);
            let wp = [b.as_ptr().add(panels[0] + r.b), b.as_ptr().add(panels[1] + r.b)];
            for q in 0..quads {
                let mut w = [_mm512_setzero_si512(); NV];
                for (p, v) in w.iter_mut().enumerate() {
                    *v = _mm512_loadu_si512(wp[p].add(64 * q) as *const _);
                }
                for (i, row) in s.iter_mut().enumerate() {
                    let x = _mm512_set1_epi32((xp.add(i * lda + 4 * q) as *const i32).read_unaligned());
                    for (p, v) in row.iter_mut().enumerate() {
                        *v = _mm512_dpbusd_epi32(*v, x, w[p]);
                    }
                }
            }
        }
    }
    for (i, row) in s.iter().enumerate() {
        for (p, v) in row.iter().enumerate() {
            // SAFETY: `i < M <= 32` rows of `ACC_PITCH = 32` and `16p + 16 <= 32`.
            unsafe { _mm512_storeu_si512(acc.0.as_mut_ptr().add(i * ACC_PITCH + 16 * p) as *mut _, *v) };
        }
    }
}
