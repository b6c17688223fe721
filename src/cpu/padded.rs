//! The padded copy of the input, one of the GEMM path's sources of `B`.
//!
//! When output rows are short (or, with a strided dim 2, when the input rows one output row reads
//! fit in cache), one padded copy of the input is built per call (padding-mode remap baked in),
//! and the micro-kernel reads each row of `B` in place (leading dimension = the padded plane); no
//! gather at all. With a dim-2 input step `s > 1` (a strided forward convolution, e.g. a stem)
//! each padded row is stored as `s` sub-rows, one per input phase, so that a tap's inputs for
//! consecutive outputs are again contiguous. The GEMM path decides when the copy pays off and how
//! its tasks read it (`gemm.rs`).
//!
//! The copy's buffer is kept by the calling thread for its next call (up to 16 MiB), so it is
//! neither zeroed nor page-faulted per call; with zero padding and the same geometry, the next
//! call finds its zeros in place and only copies the input rows.
//!
//! Also here: [`fill_padded`] and [`in_bounds`], the padded row copy the direct path's windows
//! use too.

use rayon::prelude::*;

use super::geometry::Geometry;
use super::kernels::NR;
use crate::alloc::try_resize;
use crate::error::{Error, Result};
use crate::problem::{ConvProblem, PaddingMode};

/// A copy of the input padded along every dimension (padding-mode remap baked in), so that every
/// index a tap reads is in bounds: element `(n, c, i0, i1, i2)` is at
/// `((n·C + c)·P0 + i0 − lo0)·P1 + i1 − lo1)·P2 + col(i2 − lo2)`, followed by `NR` spare zeros
/// (`col` is the identity for a unit dim-2 step, see [`Padded::col`]).
#[derive(Debug, Default)]
pub(super) struct Padded {
    pub(super) data: Vec<f32>,
    /// First input index of the copy per dimension (may be negative: padding).
    pub(super) lo: [isize; 3],
    /// Extent of the copy: rows `dims[0] × dims[1]` of `dims[2]` values each (the row pitch).
    pub(super) dims: [usize; 3],
    /// Elements per `(n, c)` plane of the copy.
    pub(super) plane: usize,
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
    #[inline]
    pub(super) fn col(&self, o: usize) -> usize {
        let s = self.step2.max(1);
        (o % s) * self.sub + o / s
    }
}

/// Per dimension, the range `[lo, lo + dims)` of input indices any tap of any phase reads.
pub(super) fn padded_extent(geo: &Geometry) -> Option<([isize; 3], [usize; 3])> {
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

/// The stored layout of the padded copy: the extent of [`padded_extent`] with dim 2 rounded up to
/// whole sub-rows (`dims[2] = step2 · sub`), the dim-2 step, the sub-row length and the padded
/// row width before rounding. `None` if a size overflows.
#[derive(Clone, Copy, Debug)]
pub(super) struct PadLayout {
    pub(super) lo: [isize; 3],
    pub(super) dims: [usize; 3],
    pub(super) step2: usize,
    pub(super) sub: usize,
    pub(super) width: usize,
}

/// The [`PadLayout`] of `geo`'s padded copy (what [`build_padded`] allocates per plane).
pub(super) fn padded_layout(geo: &Geometry) -> Option<PadLayout> {
    let (lo, mut dims) = padded_extent(geo)?;
    let step2 = geo.phases[2].first().map_or(1, |ph| ph.in_step).max(1);
    let width = dims[2];
    let sub = width.div_ceil(step2);
    dims[2] = sub.checked_mul(step2)?;
    Some(PadLayout { lo, dims, step2, sub, width })
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
///
/// Errors: [`Error::Overflow`] if the copy's size does not fit `usize`, [`Error::OutOfMemory`] if
/// it cannot be allocated.
pub(super) fn build_padded(p: &ConvProblem, geo: &Geometry, x: &[f32]) -> Result<Padded> {
    let what = || "the padded input copy".to_string();
    let layout = padded_layout(geo).ok_or_else(|| Error::Overflow(what()))?;
    let PadLayout { lo, dims, step2, sub, width } = layout;
    let sizes = [p.batch, p.in_channels, dims[0], dims[1], dims[2]];
    let Some(total) = sizes.iter().try_fold(1usize, |a, &v| a.checked_mul(v)) else {
        return Err(Error::Overflow(format!("{}: {sizes:?} elements", what())));
    };
    let plane = dims.iter().try_fold(1usize, |a, &v| a.checked_mul(v)).ok_or_else(|| Error::Overflow(what()))?;
    let planes = p.batch * p.in_channels; // both factors of `total`: the products fit
    let len = total.checked_add(NR).ok_or_else(|| Error::Overflow(what()))?;
    let (mut data, prev) = PADDED_BUF.with(|b| b.take());
    if data.len() < len {
        try_resize(&mut data, len, 0.0, what)?;
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
        return Ok(Padded { data, lo, dims, plane, step2, sub, key });
    }
    // Blocks of rows across all planes, so that a few large planes (a stem's 3) still spread
    // over every thread.
    let block = rows.div_ceil(8 * crate::parallel::current_num_threads()).max(1);
    let fill_block = |(bi, dst): (usize, &mut [f32])| -> Result<()> {
        let mut tmp = Vec::new();
        try_resize(&mut tmp, if step2 > 1 && !zeros_in_place { dims[2] } else { 0 }, 0.0f32, what)?;
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
                // No input column in the row (the zeros are in place): nothing to copy (and `s0`
                // may lie past the input row).
                (true, _) if a == b => {}
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
        Ok(())
    };
    let copy = &mut data[..planes * plane];
    if crate::parallel::available() {
        copy.par_chunks_mut(block * dims[2]).enumerate().try_for_each(fill_block)?;
    } else {
        copy.chunks_mut(block * dims[2]).enumerate().try_for_each(fill_block)?;
    }
    Ok(Padded { data, lo, dims, plane, step2, sub, key })
}

/// Gives a padded copy's buffer back to this thread for the next call.
pub(super) fn recycle_padded(xp: Padded) {
    if xp.data.capacity() > 0 && xp.data.capacity() <= PADDED_KEEP_MAX {
        PADDED_BUF.with(|b| b.set((xp.data, xp.key)));
    }
}

/// The in-bounds part `[a, b)` of a padded row of `len` elements starting at input index `lo`
/// (`0 <= lo + u < l` for `u` in `[a, b)`; `a <= b`).
pub(super) fn in_bounds(lo: isize, len: usize, l: usize) -> (usize, usize) {
    let a = (-lo).clamp(0, len as isize) as usize;
    let b = (l as isize - lo).clamp(a as isize, len as isize) as usize;
    (a, b)
}

/// `xpad[u] = x̃[lo + u]` for every `u < xpad.len()`, with the padding-mode remap (zeros outside).
pub(super) fn fill_padded(xpad: &mut [f32], xrow: &[f32], lo: isize, mode: PaddingMode) {
    let len = xpad.len();
    let (a, b) = in_bounds(lo, len, xrow.len());
    // (A row wholly left of the input has `a == b` with `lo + a < 0`: nothing to copy.)
    if a < b {
        xpad[a..b].copy_from_slice(&xrow[(lo + a as isize) as usize..(lo + b as isize) as usize]);
    }
    if mode == PaddingMode::Zeros {
        xpad[..a].fill(0.0);
        xpad[b..].fill(0.0);
    } else {
        for u in (0..a).chain(b..len) {
            xpad[u] = mode.source_index(lo + u as isize, xrow.len()).map_or(0.0, |i| xrow[i]);
        }
    }
}

#[cfg(test)]
#[path = "padded_tests.rs"]
mod tests;
