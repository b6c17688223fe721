//! Building the GEMM path's padded channels-last copy of the input (layout in `plan.rs`), from
//! channels-first (NCDHW) or channels-last (NDHWC) u8 codes, in parallel over padded rows.
//!
//! Channels-first input is transposed on the way: 8 channels × 8 pixels at a time as a
//! byte-matrix transpose of eight `u64` words (three rounds of masked shifts), the ragged edges
//! byte by byte. The buffer is kept by the calling thread for its next call (up to
//! [`KEEP_MAX`]), so a call does not page-fault a fresh allocation.

use rayon::prelude::*;

use super::plan::PadLayout;
use super::ActivationLayout;
use crate::problem::ConvProblem;

/// Largest copy (bytes) a thread keeps for its next call.
const KEEP_MAX: usize = 32 << 20;

thread_local! {
    static BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Gives a copy's buffer back to this thread for its next call.
pub(super) fn recycle(buf: Vec<u8>) {
    if buf.capacity() <= KEEP_MAX {
        BUF.with(|b| b.set(buf));
    }
}

/// The padded copy of `x` (`lay.len` bytes, see `plan.rs`).
pub(super) fn build(p: &ConvProblem, lay: &PadLayout, x: &[u8], xzp: u8, layout: ActivationLayout) -> Vec<u8> {
    let mut buf = BUF.with(|b| b.take());
    buf.clear();
    buf.resize(lay.len, 0);
    let [d0, d1, d2] = lay.dims;
    let rows = p.batch * d0 * d1;
    let row_len = d2 * lay.ps;
    // The pixel read wherever the padding reads nothing: `x_zp` in every real lane.
    let cg = p.in_channels / p.groups;
    let mut pad_px = vec![0u8; lay.ps];
    for g in 0..p.groups {
        pad_px[g * lay.cgp..g * lay.cgp + cg].fill(xzp);
    }
    let block = rows.div_ceil(8 * rayon::current_num_threads()).max(1);
    buf[..rows * row_len].par_chunks_mut(block * row_len).enumerate().for_each(|(bi, dst)| {
        for (r, row) in dst.chunks_exact_mut(row_len).enumerate() {
            fill_row(p, lay, x, &pad_px, layout, bi * block + r, row);
        }
    });
    buf
}

/// Fills padded row `r` (`(n, v0, v1)` flattened) of the copy.
fn fill_row(
    p: &ConvProblem,
    lay: &PadLayout,
    x: &[u8],
    pad_px: &[u8],
    layout: ActivationLayout,
    r: usize,
    row: &mut [u8],
) {
    let [d0, d1, d2] = lay.dims;
    let [l0, l1, l2] = p.in_size;
    let (n, v) = (r / (d0 * d1), r % (d0 * d1));
    let mode = p.pad_mode;
    let i0 = mode.source_index(lay.lo[0] + (v / d1) as isize, l0);
    let i1 = mode.source_index(lay.lo[1] + (v % d1) as isize, l1);
    let ps = lay.ps;
    let (Some(i0), Some(i1)) = (i0, i1) else {
        for px in row.chunks_exact_mut(ps) {
            px.copy_from_slice(pad_px);
        }
        return;
    };
    let c = p.in_channels;
    let cg = c / p.groups;
    // In-range columns [a, b) read input columns lo2 + v2 directly.
    let a = (-lay.lo[2]).clamp(0, d2 as isize) as usize;
    let b = (l2 as isize - lay.lo[2]).clamp(a as isize, d2 as isize) as usize;
    let src_col = |v2: usize| mode.source_index(lay.lo[2] + v2 as isize, l2);
    match layout {
        ActivationLayout::ChannelsLast => {
            let xrow = &x[((n * l0 + i0) * l1 + i1) * l2 * c..][..l2 * c];
            for (v2, px) in row.chunks_exact_mut(ps).enumerate() {
                match src_col(v2) {
                    None => px.copy_from_slice(pad_px),
                    Some(i2) => {
                        let src = &xrow[i2 * c..(i2 + 1) * c];
                        if lay.cgp == cg {
                            px.copy_from_slice(src);
                        } else {
                            for (dg, sg) in px.chunks_exact_mut(lay.cgp).zip(src.chunks_exact(cg)) {
                                dg[..cg].copy_from_slice(sg);
                            }
                        }
                    }
                }
            }
        }
        ActivationLayout::ChannelsFirst => {
            let plane = l0 * l1 * l2;
            let rbase = n * c * plane + (i0 * l1 + i1) * l2;
            let lane = |ch: usize| (ch / cg) * lay.cgp + ch % cg;
            // Edge columns: pixel by pixel with the remap.
            for v2 in (0..a).chain(b..d2) {
                let px = &mut row[v2 * ps..(v2 + 1) * ps];
                match src_col(v2) {
                    None => px.copy_from_slice(pad_px),
                    Some(i2) => {
                        for ch in 0..c {
                            px[lane(ch)] = x[rbase + ch * plane + i2];
                        }
                    }
                }
            }
            // The channel lanes past Cg of in-range pixels stay zero (the buffer was zeroed).
            let i2a = (lay.lo[2] + a as isize).max(0) as usize;
            let width = b - a;
            let dst = &mut row[a * ps..b * ps];
            transpose_in(x, rbase, plane, i2a, width, c, &lane, dst, ps);
        }
    }
}

/// `dst[u·ps + lane(ch)] = x[rbase + ch·plane + i2a + u]` for `u < width`, `ch < c`: a
/// channels-first row segment into channels-last pixels. Runs of 8 consecutive lanes of 8
/// consecutive channels go through an 8 × 8 byte transpose.
#[allow(clippy::too_many_arguments)]
fn transpose_in(
    x: &[u8],
    rbase: usize,
    plane: usize,
    i2a: usize,
    width: usize,
    c: usize,
    lane: &dyn Fn(usize) -> usize,
    dst: &mut [u8],
    ps: usize,
) {
    let mut ch = 0;
    while ch < c {
        let fast = ch + 8 <= c && lane(ch + 7) == lane(ch) + 7;
        if !fast {
            let src = &x[rbase + ch * plane + i2a..][..width];
            let l = lane(ch);
            for (u, &v) in src.iter().enumerate() {
                dst[u * ps + l] = v;
            }
            ch += 1;
            continue;
        }
        let l = lane(ch);
        let mut u = 0;
        while u + 8 <= width {
            let mut m = [0u64; 8];
            for (k, w) in m.iter_mut().enumerate() {
                let s = rbase + (ch + k) * plane + i2a + u;
                *w = u64::from_le_bytes(x[s..s + 8].try_into().expect("8 bytes"));
            }
            transpose8(&mut m);
            for (k, w) in m.iter().enumerate() {
                let d = (u + k) * ps + l;
                dst[d..d + 8].copy_from_slice(&w.to_le_bytes());
            }
            u += 8;
        }
        for uu in u..width {
            for k in 0..8 {
                dst[uu * ps + l + k] = x[rbase + (ch + k) * plane + i2a + uu];
            }
        }
        ch += 8;
    }
}

/// Transposes the 8 × 8 byte matrix whose row `k` is `m[k]` (byte `u` little-endian = column `u`).
#[inline(always)]
pub(super) fn transpose8(m: &mut [u64; 8]) {
    // Swap 4×4 blocks, then 2×2 blocks, then single bytes (masks select the off-diagonal parts).
    for (shift, mask, step) in
        [(32u32, 0x0000_0000_FFFF_FFFFu64, 4usize), (16, 0x0000_FFFF_0000_FFFF, 2), (8, 0x00FF_00FF_00FF_00FF, 1)]
    {
        for k in 0..8 {
            if k & step == 0 {
                let (a, b) = (m[k], m[k + step]);
                let t = ((a >> shift) ^ b) & mask;
                m[k] = a ^ (t << shift);
                m[k + step] = b ^ t;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::transpose8;

    #[test]
    fn transpose8_transposes() {
        let mut m = [0u64; 8];
        for (k, w) in m.iter_mut().enumerate() {
            *w = u64::from_le_bytes(std::array::from_fn(|u| (k * 8 + u) as u8));
        }
        transpose8(&mut m);
        for (k, w) in m.iter().enumerate() {
            assert_eq!(w.to_le_bytes(), std::array::from_fn(|u| (u * 8 + k) as u8));
        }
    }
}
