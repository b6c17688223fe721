//! The portable int8 kernels: plain Rust over the same operands as the SIMD levels, for any CPU
//! (and the reference the SIMD kernels are tested against). The bodies are generic over the
//! block height and written on fixed-size arrays so that the compiler can vectorise them; the
//! AVX2 level reuses the depthwise and epilogue bodies compiled with its features.

use super::{dot2, requant_one, ARows, AccTile, Epi, EpiChannel, Int8Kernel, KPlan, ACC_PITCH};

/// The portable kernels' token.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PortableI8;

/// Rows of a portable GEMM block.
const MR: usize = 4;

/// The GEMM body for `M` rows (see [`Int8Kernel::gemm`]); bounds are checked here (slices).
#[inline(always)]
fn gemm_rows<const M: usize>(a: ARows<'_>, plan: &KPlan, b: &[i8], panel: usize, out: &mut [i32]) {
    let ARows { data: a, a0, lda } = a;
    let mut acc = [[0i32; 16]; M];
    for r in plan.runs() {
        let quads = r.units * plan.unit() / 4;
        let wq = &b[panel + r.b..panel + r.b + quads * 64];
        for (q, w) in wq.chunks_exact(64).enumerate() {
            for (i, row) in acc.iter_mut().enumerate() {
                let at = a0 + i * lda + r.a + 4 * q;
                let x: &[u8; 4] = a[at..at + 4].try_into().expect("4 bytes");
                for (j, s) in row.iter_mut().enumerate() {
                    let wj = &w[4 * j..4 * j + 4];
                    let t = (x[0] as i32) * (wj[0] as i32)
                        + (x[1] as i32) * (wj[1] as i32)
                        + (x[2] as i32) * (wj[2] as i32)
                        + (x[3] as i32) * (wj[3] as i32);
                    *s = s.wrapping_add(t);
                }
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        out[i * ACC_PITCH..i * ACC_PITCH + 16].copy_from_slice(row);
    }
}

/// [`Int8Kernel::gemm`] in plain Rust: blocks of at most `MR` rows.
#[inline(always)]
pub(super) fn gemm_generic(m: usize, a: ARows<'_>, plan: &KPlan, b: &[i8], panels: &[usize], acc: &mut AccTile) {
    for (p, &panel) in panels.iter().enumerate() {
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(MR);
            let out = &mut acc.0[i * ACC_PITCH + 16 * p..];
            let a = ARows { a0: a.a0 + i * a.lda, ..a };
            match rows {
                4 => gemm_rows::<4>(a, plan, b, panel, out),
                3 => gemm_rows::<3>(a, plan, b, panel, out),
                2 => gemm_rows::<2>(a, plan, b, panel, out),
                _ => gemm_rows::<1>(a, plan, b, panel, out),
            }
            i += rows;
        }
    }
}

/// One row of [`Int8Kernel::requant_tile`], element by element.
#[inline(always)]
fn requant_row_generic(acc: &[i32], rowsum: i32, ep: &Epi<'_>, ch0: usize, out: &mut [u8]) {
    for (j, (o, &v)) in out.iter_mut().zip(acc).enumerate() {
        let c = ch0 + j;
        let ch = EpiChannel {
            corr: ep.corr[c].wrapping_sub(ep.wzp[c].wrapping_mul(rowsum)),
            mult: ep.mult[c],
            ba: ep.ba[c],
            bb: ep.bb[c],
            has_bias: ep.has_bias,
            zp: ep.zp,
            lo: ep.lo,
        };
        *o = requant_one(v, &ch);
    }
}

/// [`Int8Kernel::requant_tile`] row by row.
#[inline(always)]
pub(super) fn requant_tile_generic(
    acc: &AccTile,
    m: usize,
    rowsums: &[i32],
    ep: &Epi<'_>,
    chans: std::ops::Range<usize>,
    dst: (&mut [u8], usize),
) {
    let (ch0, n) = (chans.start, chans.len());
    let (out, stride) = dst;
    for i in 0..m {
        let rs = rowsums.get(i).copied().unwrap_or(0);
        requant_row_generic(
            &acc.0[i * ACC_PITCH..(i + 1) * ACC_PITCH],
            rs,
            ep,
            ch0,
            &mut out[i * stride..i * stride + n],
        );
    }
}

/// [`Int8Kernel::requant_line`] element by element.
#[inline(always)]
pub(super) fn requant_line_generic(acc: &[i32], ch: &EpiChannel, out: &mut [u8]) {
    for (o, &v) in out.iter_mut().zip(acc) {
        *o = requant_one(v, ch);
    }
}

/// [`Int8Kernel::dw_line`]: tap by tap over the whole line (vectorisable along `m`).
#[inline(always)]
pub(super) fn dw_line_generic(p: &[i32], taps: &[(usize, i32)], acc: &mut [i32]) {
    let n = acc.len();
    acc.fill(0);
    for &(off, w) in taps {
        for (s, &x) in acc.iter_mut().zip(&p[off..off + n]) {
            *s = s.wrapping_add(dot2(x, w));
        }
    }
}

/// [`Int8Kernel::pair_row`] element by element (vectorisable).
#[inline(always)]
pub(super) fn pair_row_generic(src: &[u8], zp: i32, delta: usize, dst: &mut [i32]) {
    let n = dst.len();
    let (a, b) = (&src[..n], &src[delta..delta + n]);
    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        let (lo, hi) = ((x as i32 - zp) as u16 as u32, (y as i32 - zp) as u16 as u32);
        *d = (lo | (hi << 16)) as i32;
    }
}

impl Int8Kernel for PortableI8 {
    const NAME: &'static str = "portable";
    const MR: usize = 32;
    const UNIT: usize = 4;

    fn task_begin(self) {}
    fn task_end(self) {}
    fn gemm(self, m: usize, a: ARows<'_>, plan: &KPlan, b: &[i8], panels: &[usize], acc: &mut AccTile) {
        gemm_generic(m, a, plan, b, panels, acc)
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
