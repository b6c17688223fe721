//! The direct path (`Kg == 1`: depthwise, channel multiplier 1, also transposed).
//!
//! Per output plane and dim-1 phase, a task builds a window of padded input rows
//! `[c][tap0][row][W]` (remap baked in; for a strided forward dim 2, one *decimated* row
//! `x̃[m·stride + off]` per tap instead, so the kernel always reads unit-stride), so that a single
//! tap template `(offset, weight)` serves every output row. One kernel call computes the whole
//! window (all its rows and columns) in tiles of [`RR`] = 4 output rows × [`DW`] = 16 positions
//! (vectorised along the row; the last column tile of a row of at least 16 is shifted left to end
//! at the row's end, so every store is whole) and stores the tiles with the bias added, straight
//! into the output rows (scattered afterwards only for interleaved transposed phases). With
//! exactly three dim-1 taps on consecutive window rows (the common 3×3 depthwise case), the taps
//! are stacked vertically, `(offset, [w; 3])`, and each input row is loaded once for the three
//! output rows it feeds (6 loads per 12 FMAs instead of 12 per 12). With zero padding, a window's
//! zero borders are left in place for the next window of the same shape (same call, phase, rows),
//! which then only copies the in-bounds parts.

use super::context::{split_bounds, Ctx};
use super::geometry::{Phase, Tap};
use super::kernels::{DirectWin, Kernel, DW, RR};
use super::padded::{fill_padded, in_bounds};
use super::rows::copy_short;
use super::workspace::Workspace;
use crate::alloc::{try_resize, try_with_capacity};
use crate::error::{Error, Result};
use crate::problem::PaddingMode;

/// Budget (in `f32`) of the padded input plane the direct path builds per task.
const PLANE_BUDGET: usize = 256 * 1024;

/// What determines the zero pattern of a zero-padded direct-path window: `(call, phase-0 tap
/// list, m0, first input row, rows, lo2, row length)`. Equal keys mean equal zeros, so a refill
/// only needs to copy the in-bounds parts.
pub(super) type WindowKey = (u64, usize, usize, isize, usize, isize, usize);

/// A direct-path task: output rows `row0..` of channel `k` of image `n` (`out` holds them).
pub(super) struct DirectTask<'y> {
    n: usize,
    k: usize,
    row0: usize,
    out: &'y mut [f32],
}

impl Ctx<'_> {
    /// The direct path's tasks over the output `y`: ranges of output rows of one channel plane.
    pub(super) fn direct_tasks<'y>(&self, y: &'y mut [f32]) -> Result<Vec<DirectTask<'y>>> {
        let p = self.p;
        let plane = self.geo.out_plane;
        let o2n = p.out_size[2];
        let nrows = p.out_size[0] * p.out_size[1];
        let threads = crate::parallel::current_num_threads();
        let rows_total = p.batch * p.out_channels;
        let rt = (4 * threads).div_ceil(rows_total).clamp(1, nrows.max(1));
        let rb = split_bounds(nrows, rt);
        let mut tasks = try_with_capacity(rows_total.saturating_mul(rt), || "the direct path's task list".into())?;
        for (row_idx, row) in y.chunks_mut(plane).enumerate() {
            let (n, k) = (row_idx / p.out_channels, row_idx % p.out_channels);
            let mut rest = row;
            for ri in 0..rt {
                let (piece, tail) = rest.split_at_mut((rb[ri + 1] - rb[ri]) * o2n);
                tasks.push(DirectTask { n, k, row0: rb[ri], out: piece });
                rest = tail;
            }
        }
        Ok(tasks)
    }

    /// Runs one direct task: per output plane and dim-1 phase, windows of padded rows and one
    /// kernel call per window and dim-2 phase.
    #[inline]
    pub(super) fn direct_task<K: Kernel>(&self, kern: K, ws: &mut Workspace, task: DirectTask<'_>) -> Result<()> {
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
            return Ok(());
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
                let per_row =
                    [geo.cg, ph0.taps.len(), row_len, row_step].iter().fold(1usize, |a, &v| a.saturating_mul(v));
                let window = (PLANE_BUDGET / per_row.max(1) / RR * RR).max(RR);
                let mut ma = m1a;
                while ma < m1b {
                    let mb = (ma + window).min(m1b);
                    let groups = (mb - ma).div_ceil(RR);
                    let v_rows = ((groups * RR - 1).saturating_mul(row_step)).saturating_add(span);
                    let layout = if decimated { RowLayout::Decimated(dec_w) } else { RowLayout::Padded(lo2, w2) };
                    let rows_map = RowMap { start: (ma * st1) as isize + lo1, span, stride: st1, compact };
                    self.fill_window(ws, (task.n, g), (ph0, m0), rows_map, v_rows, layout)?;
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
                            try_resize(&mut dout, rows.saturating_mul(ldo), 0.0, || {
                                "the direct path's output rows".into()
                            })?;
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
        Ok(())
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
    fn fill_window(
        &self,
        ws: &mut Workspace,
        (n, g): (usize, usize),
        (ph0, m0): (&Phase, usize),
        rows_map: RowMap,
        v_rows: usize,
        layout: RowLayout,
    ) -> Result<()> {
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
        let len = [cg, ph0.taps.len(), v_rows, row_len].iter().try_fold(1usize, |a, &v| a.checked_mul(v));
        let len = len.ok_or_else(|| Error::Overflow("the direct path's window of padded rows".into()))?;
        try_resize(&mut ws.xpad, len, 0.0, || "the direct path's window of padded rows".into())?;
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
            if a == b {
                return Ok(()); // no input column in any row: the zeros are all in place
            }
            let src_a = (lo2 + a as isize) as usize;
            let mut blocks = ws.xpad[..len].chunks_exact_mut((v_rows * w2).max(1));
            for c in 0..cg {
                let chan = n * p.in_channels + g * cg + c;
                for tap0 in &ph0.taps {
                    let Some(block) = blocks.next() else { return Ok(()) };
                    let Some(i0) = mode.source_index((m0 * ph0.in_step) as isize + tap0.off, l0) else { continue };
                    for v in va..vb {
                        let i1 = (i1_start + v as isize) as usize;
                        let base = ((chan * l0 + i0) * l1 + i1) * l2 + src_a;
                        copy_short(&mut block[v * w2 + a..v * w2 + b], &self.x[base..base + (b - a)]);
                    }
                }
            }
            return Ok(());
        }
        let mut rows = ws.xpad[..len].chunks_exact_mut(row_len.max(1));
        for c in 0..cg {
            let chan = n * p.in_channels + g * cg + c;
            for tap0 in &ph0.taps {
                let i0 = mode.source_index((m0 * ph0.in_step) as isize + tap0.off, l0);
                for v in 0..v_rows {
                    let Some(dst) = rows.next() else { return Ok(()) };
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
        Ok(())
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

#[cfg(test)]
#[path = "direct_tests.rs"]
mod tests;
