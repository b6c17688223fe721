//! The generic kernel bodies, written once and compiled per instruction set (the SIMD files call
//! them inside `#[target_feature]` functions, `FMA` selecting fused multiply-adds), and the
//! [`Portable`] kernel that runs them on the baseline target.

use super::{ASeg, CTile, DirectWin, Kernel, Piece, RowOffsets, DW, MR, MR_WIDE, NR, RR};
use crate::cpu::rows::{copy_short, write_run_strided};

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
pub(super) fn gemm_body<const FMA: bool, const R: usize, const LDA: usize>(
    a: &[f32],
    segs: &[ASeg],
    b: &[f32],
    ldb: usize,
    out: CTile<'_>,
) {
    let (c, ldc, accumulate) = out.into_parts();
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
pub(super) fn gemm_generic<const FMA: bool>(
    mr: usize,
    a: &[f32],
    segs: &[ASeg],
    b: &[f32],
    ldb: usize,
    mut out: CTile<'_>,
) {
    if mr == MR_WIDE {
        gemm_body::<FMA, 4, MR_WIDE>(a, segs, b, ldb, out.reborrow());
        gemm_body::<FMA, 4, MR_WIDE>(&a[4..], segs, b, ldb, out.rows_from(4));
    } else {
        assert_eq!(mr, MR, "panel rows");
        gemm_body::<FMA, MR, MR>(a, segs, b, ldb, out);
    }
}

/// The generic body of [`Kernel::gemm_ind`] for `R` rows of panels with `LDA` rows.
#[inline(always)]
pub(super) fn gemm_ind_body<const FMA: bool, const R: usize, const LDA: usize>(
    a: &[f32],
    b: &[f32],
    offs: &[usize],
    out: CTile<'_>,
) {
    let (c, ldc, accumulate) = out.into_parts();
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
pub(super) fn gemm_ind_generic<const FMA: bool>(
    mr: usize,
    a: &[f32],
    b: &[f32],
    offs: &RowOffsets,
    mut out: CTile<'_>,
) {
    if mr == MR_WIDE {
        gemm_ind_body::<FMA, 4, MR_WIDE>(a, b, &offs.offs, out.reborrow());
        gemm_ind_body::<FMA, 4, MR_WIDE>(&a[4..], b, &offs.offs, out.rows_from(4));
    } else {
        assert_eq!(mr, MR, "panel rows");
        gemm_ind_body::<FMA, MR, MR>(a, b, &offs.offs, out);
    }
}

/// The portable body of [`Kernel::pack_panel`].
#[inline(always)]
pub(super) fn pack_panel_generic(dst: &mut [f32], src: &[f32], rows: &RowOffsets, pieces: &[Piece]) {
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

/// The generic body of [`Kernel::direct`].
#[inline(always)]
pub(super) fn direct_body<const FMA: bool>(x: &[f32], taps: &[(usize, f32)], win: DirectWin, out: &mut [f32]) {
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

/// The generic body of [`Kernel::direct_v3`] (`K = 3`).
#[inline(always)]
pub(super) fn direct_v_body<const FMA: bool, const K: usize>(
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
pub(crate) struct Portable;

const PORTABLE_FMA: bool = cfg!(target_arch = "aarch64");

impl Kernel for Portable {
    const NAME: &'static str = "portable";
    const WIDE_TILES: bool = false;

    fn gemm(self, mr: usize, a: &[f32], segs: &[ASeg], b: &[f32], ldb: usize, out: CTile<'_>) {
        gemm_generic::<PORTABLE_FMA>(mr, a, segs, b, ldb, out)
    }
    fn gemm_ind(self, mr: usize, a: &[f32], b: &[f32], offs: &RowOffsets, out: CTile<'_>) {
        gemm_ind_generic::<PORTABLE_FMA>(mr, a, b, offs, out)
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
