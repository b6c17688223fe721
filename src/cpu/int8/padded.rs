//! Building the GEMM path's padded channels-last copy of the input (layout in `plan.rs`), from
//! channels-first (NCDHW) or channels-last (NDHWC) u8 codes, in parallel over padded rows.
//!
//! Channels-first input is transposed on the way: 8 channels × 8 pixels at a time as a
//! byte-matrix transpose of eight `u64` words (three rounds of masked shifts), the ragged edges
//! byte by byte. The buffer is kept by the calling thread for its next call (up to
//! [`KEEP_MAX`]), so a call does not page-fault a fresh allocation.

use super::aligned::AlignedBytes;
use super::plan::PadLayout;
use super::ActivationLayout;
use crate::alloc::try_filled;
use crate::error::Result;
use crate::problem::ConvProblem;

/// Largest copy (bytes) a thread keeps for its next call.
const KEEP_MAX: usize = 32 << 20;

thread_local! {
    static BUF: std::cell::RefCell<AlignedBytes> = std::cell::RefCell::new(AlignedBytes::default());
}

/// Gives a copy's buffer back to this thread for its next call.
pub(super) fn recycle(buf: AlignedBytes) {
    if buf.capacity() <= KEEP_MAX {
        BUF.with(|b| *b.borrow_mut() = buf);
    }
}

/// The padded copy of `x` (`lay.len` bytes, see `plan.rs`).
pub(super) fn build(
    p: &ConvProblem,
    lay: &PadLayout,
    x: &[u8],
    xzp: u8,
    layout: ActivationLayout,
) -> Result<AlignedBytes> {
    // Every byte a nonzero weight meets is written below; the channel lanes past `Cg` and the
    // slack keep whatever the recycled buffer holds (their weights are zero).
    let mut buf = BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    buf.set_len(lay.len, "the int8 padded input copy")?;
    let [d0, d1, d2] = lay.dims;
    let rows = p.batch * d0 * d1;
    let row_len = d2 * lay.ps;
    // The pixel read wherever the padding reads nothing: `x_zp` in every real lane.
    let cg = p.in_channels / p.groups;
    let mut pad_px = vec![0u8; lay.ps];
    for g in 0..p.groups {
        pad_px[g * lay.cgp..g * lay.cgp + cg].fill(xzp);
    }
    let block = rows.div_ceil(8 * crate::parallel::current_num_threads()).max(1);
    crate::parallel::for_each_chunk_mut(&mut buf.bytes_mut()[..rows * row_len], block * row_len, |bi, dst| {
        for (r, row) in dst.chunks_exact_mut(row_len).enumerate() {
            fill_row(p, lay, x, &pad_px, layout, bi * block + r, row);
        }
    });
    Ok(buf)
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
            for v2 in (0..a).chain(b..d2) {
                let px = &mut row[v2 * ps..(v2 + 1) * ps];
                match src_col(v2) {
                    None => px.copy_from_slice(pad_px),
                    Some(i2) => copy_pixel(&xrow[i2 * c..], c, cg, lay.cgp, px),
                }
            }
            let first = (lay.lo[2] + a as isize).max(0) as usize;
            if lay.cgp == cg {
                // The pixels are contiguous on both sides.
                row[a * ps..b * ps].copy_from_slice(&xrow[first * c..(first + b - a) * c]);
            } else {
                for (k, px) in row[a * ps..b * ps].chunks_exact_mut(ps).enumerate() {
                    copy_pixel(&xrow[(first + k) * c..], c, cg, lay.cgp, px);
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
            // The channel lanes past Cg keep whatever they hold (their weights are zero).
            let i2a = (lay.lo[2] + a as isize).max(0) as usize;
            let width = b - a;
            let dst = &mut row[a * ps..b * ps];
            transpose_in(x, rbase, plane, i2a, width, c, &lane, dst, ps);
        }
    }
}

/// Copies one channels-last pixel (`c` channels at the start of `src`) into a padded pixel of
/// `groups` lanes of `cgp` bytes each. The lanes past `Cg` are never read with a nonzero weight
/// (and the row sums skip them), so a group is copied as a whole `cgp`-byte (or 4-byte) block
/// where `src` has those bytes, reading into the next group or pixel.
#[inline(always)]
fn copy_pixel(src: &[u8], c: usize, cg: usize, cgp: usize, px: &mut [u8]) {
    for (g, dg) in px.chunks_exact_mut(cgp).enumerate() {
        let s0 = g * cg;
        if cgp == 4 && s0 + 4 <= src.len() {
            dg.copy_from_slice(&src[s0..s0 + 4]);
        } else if s0 + cgp <= src.len() {
            dg.copy_from_slice(&src[s0..s0 + cgp]);
        } else {
            dg[..cg].copy_from_slice(&src[s0..s0 + cg]);
        }
    }
    debug_assert!(c == cg * px.len() / cgp);
}

/// `dst[u·ps + lane(ch)] = x[rbase + ch·plane + i2a + u]` for `u < width`, `ch < c`: a
/// channels-first row segment into channels-last pixels. Runs of 16 (or 8) consecutive lanes of
/// as many consecutive channels go through 16 × 16 (8 × 8) byte transposes, the rest byte by
/// byte.
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
        let l = lane(ch);
        let mut u = 0;
        if ch + 16 <= c && lane(ch + 15) == l + 15 {
            while u + 16 <= width {
                let src = &x[rbase + ch * plane + i2a + u..];
                transpose16(src, plane, &mut dst[u * ps + l..], ps);
                u += 16;
            }
            // A ragged end: read 16 columns where the input has them, write `width − u` pixels.
            if u < width && rbase + (ch + 15) * plane + i2a + u + 16 <= x.len() {
                let mut t = [0u8; 256];
                transpose16(&x[rbase + ch * plane + i2a + u..], plane, &mut t, 16);
                for (r, px) in t.chunks_exact(16).take(width - u).enumerate() {
                    dst[(u + r) * ps + l..(u + r) * ps + l + 16].copy_from_slice(px);
                }
                u = width;
            }
            for uu in u..width {
                for k in 0..16 {
                    dst[uu * ps + l + k] = x[rbase + (ch + k) * plane + i2a + uu];
                }
            }
            ch += 16;
            continue;
        }
        if !(ch + 8 <= c && lane(ch + 7) == l + 7) {
            let src = &x[rbase + ch * plane + i2a..][..width];
            for (u, &v) in src.iter().enumerate() {
                dst[u * ps + l] = v;
            }
            ch += 1;
            continue;
        }
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

/// Changes the layout of images of `c` channels × `s` positions (`src.len() / (c·s)` of them):
/// channels-first to channels-last (`to_last`) or back, 16 × 16 byte blocks at a time, in
/// parallel over images and blocks of 16 destination rows.
pub(super) fn relayout(src: &[u8], c: usize, s: usize, to_last: bool) -> Result<Vec<u8>> {
    let mut dst = try_filled(src.len(), 0u8, || "an int8 layout copy".to_string())?;
    let image = c * s;
    if image == 0 {
        return Ok(dst);
    }
    // Each image is a `rows × cols` matrix transposed into `cols × rows`.
    let (rows, cols) = if to_last { (c, s) } else { (s, c) };
    crate::parallel::for_each_chunk_mut(&mut dst, image, |ii, d| {
        let x = &src[ii * image..(ii + 1) * image];
        crate::parallel::for_each_chunk_mut(d, 16 * rows, |cb, dblk| {
            let c0 = 16 * cb;
            let cn = (cols - c0).min(16);
            let mut r = 0;
            if cn == 16 {
                while r + 16 <= rows {
                    // dst[(c0 + k)·rows + r + j] = x[(r + j)·cols + c0 + k]
                    transpose16(&x[r * cols + c0..], cols, &mut dblk[r..], rows);
                    r += 16;
                }
            }
            for k in 0..cn {
                for rr in r..rows {
                    dblk[k * rows + rr] = x[rr * cols + c0 + k];
                }
            }
        });
    });
    Ok(dst)
}

/// Transposes a 16 × 16 byte block: `dst[c·ds + r] = src[r·ss + c]` for `r, c < 16`.
///
/// On x86_64: SSE2 (always present there), four rounds of unpacks of row pairs (bytes, words,
/// dwords, qwords), after which register `i` holds the column whose index is `i` with its four
/// bits reversed.
#[inline]
pub(super) fn transpose16(src: &[u8], ss: usize, dst: &mut [u8], ds: usize) {
    assert!(15 * ss + 16 <= src.len() && 15 * ds + 16 <= dst.len(), "16 × 16 block out of bounds");
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86_64; every row `r < 16` of `src` (`r·ss .. r·ss + 16`) and
        // of `dst` (`c·ds .. c·ds + 16`) is in bounds (checked above).
        unsafe {
            let mut r: [__m128i; 16] = std::array::from_fn(|i| _mm_loadu_si128(src.as_ptr().add(i * ss) as *const _));
            let mut a = [_mm_setzero_si128(); 16];
            for i in 0..8 {
                a[i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
                a[i + 8] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
            }
            for i in 0..8 {
                r[i] = _mm_unpacklo_epi16(a[2 * i], a[2 * i + 1]);
                r[i + 8] = _mm_unpackhi_epi16(a[2 * i], a[2 * i + 1]);
            }
            for i in 0..8 {
                a[i] = _mm_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
                a[i + 8] = _mm_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
            }
            for i in 0..8 {
                r[i] = _mm_unpacklo_epi64(a[2 * i], a[2 * i + 1]);
                r[i + 8] = _mm_unpackhi_epi64(a[2 * i], a[2 * i + 1]);
            }
            for (i, v) in r.iter().enumerate() {
                let c = (i & 1) << 3 | (i & 2) << 1 | (i & 4) >> 1 | (i & 8) >> 3;
                _mm_storeu_si128(dst.as_mut_ptr().add(c * ds) as *mut _, *v);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for r in 0..16 {
        for c in 0..16 {
            dst[c * ds + r] = src[r * ss + c];
        }
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
    fn transpose16_transposes() {
        let src: Vec<u8> = (0..20 * 16).map(|i| (i * 7 % 251) as u8).collect();
        let mut dst = vec![0u8; 18 * 16];
        super::transpose16(&src, 20, &mut dst, 18);
        for r in 0..16 {
            for c in 0..16 {
                assert_eq!(dst[c * 18 + r], src[r * 20 + c]);
            }
        }
    }

    #[test]
    fn relayout_round_trips() {
        for (c, s) in [(3, 5), (16, 16), (17, 40), (40, 17), (1, 9)] {
            let x: Vec<u8> = (0..2 * c * s).map(|i| (i * 13 % 256) as u8).collect();
            let y = super::relayout(&x, c, s, true).unwrap();
            for n in 0..2 {
                for ch in 0..c {
                    for i in 0..s {
                        assert_eq!(y[(n * s + i) * c + ch], x[(n * c + ch) * s + i]);
                    }
                }
            }
            assert_eq!(super::relayout(&y, c, s, false).unwrap(), x);
        }
    }

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
