//! The depthwise path (one input channel per group: depthwise convolutions, with or without a
//! channel multiplier, forward or transposed), channels-first, vectorised along output rows.
//!
//! Everything is centred first, so no zero-point correction is needed: the weights at packing
//! (`w − w_zp[o]`, i16), the activations when their pair rows are built (`x − x_zp`, i16, with the
//! padding mode baked in; zero padding gives 0). An input row becomes a row of *pairs* `P[v] =
//! (x̃[v], x̃[v + δ])` packed in an i32, `δ` the distance between consecutive dim-2 taps of a phase
//! (the dilation, or for a transposed convolution `dilation / gcd(stride, dilation)`), so that one
//! `vpmaddwd`/`vpdpwssd` lane adds two taps' products for one output: the weights of two taps
//! form one i32 pair (the second zero for an odd tap count). A strided dim 2 stores each pair row
//! as `stride` decimated sub-rows, so every tap reads consecutive outputs' pairs contiguously.
//!
//! **Pair volume.** A task builds, for its `(image, input channel)`, the pair rows of every input
//! plane and every padded dim-1 row (`lo1..lo1 + d1`, remapped or zero), `R` pairs apart. With a
//! unit dim-1 input step (stride 1, and every transposed phase) the positions `(m1, m2)` of a
//! plane then read `p[m1·R + m2 + tap offset]`: one *line* of `(count1 − 1)·R + count2`
//! positions covers the whole plane (the `R − count2` virtual columns per row are computed and
//! discarded), so the kernel ([`Int8Kernel::dw_line`]) runs long loops; a strided dim 1 runs one
//! line per output row. Each line is requantized ([`Int8Kernel::requant_line`]) and its rows
//! written out. Terms are at most `255 · 255` in magnitude, so i32 is exact up to
//! `MAX_EXACT_K` taps; larger kernels sum the pairs in i64 (scalar).

use std::cell::RefCell;

use super::entry::OutSink;
use super::kernels::{dot2, Epi, Int8Kernel, MAX_EXACT_K};
use super::packed::{PackedInt8Weight, CHANNEL_SLACK};
use super::padded::relayout;
use super::ActivationLayout;
use crate::alloc::try_resize;
use crate::cpu::geometry::{Geometry, Phase};
use crate::error::Result;
use crate::problem::ConvProblem;
use crate::quant::RequantTable;

/// Everything the depthwise tasks of one call read.
pub(super) struct DwCall<'a> {
    p: &'a ConvProblem,
    geo: &'a Geometry,
    w: &'a PackedInt8Weight,
    table: &'a RequantTable,
    xzp: i32,
    /// The input, channels-first (a transposed copy for channels-last input).
    x: std::borrow::Cow<'a, [u8]>,
    /// First padded index (relative to the input) and extent of dims 1 and 2.
    lo: [isize; 3],
    ext: [usize; 3],
    /// Dim-2 input step (decimation), pair distance, decimated sub-row length, row pitch.
    st: usize,
    delta: usize,
    sub: usize,
    pitch: usize,
    /// The dim-2 tap pairs of every dim-2 phase.
    pairs2: Vec<Vec<(isize, usize, Option<usize>)>>,
    /// The input row of each padded dim-1 row (`None`: zero padding).
    row_src: Vec<Option<usize>>,
    /// The in-range padded columns `[a, b)` of a row, read from input column `first` on, and the
    /// remapped edge columns `(v, input column)` of the other padding modes.
    cols: (usize, usize, usize),
    edges: Vec<(usize, usize)>,
    zero_corr: Vec<i32>,
}

/// A task: output channels `c·Kg + mo` for `mo` in `mo0..mo1`, output depth indices `o0a..o0b`,
/// of input channel `c` of image `n`.
#[derive(Clone, Copy, Debug)]
struct DwTask {
    n: usize,
    c: usize,
    mo: (usize, usize),
    o0: (usize, usize),
}

/// Bytes of pair rows a task builds at most (more only where one output plane needs more).
const PAIRS_BUDGET: usize = 4 << 20;

/// A task's scratch buffers, kept per thread.
#[derive(Default)]
struct Scratch {
    pairs: Vec<i32>,
    taps: Vec<(usize, i32)>,
    acc: Vec<i32>,
    codes: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `(lo, extent)` of the indices a dimension's phases read (`count·in_step` positions plus tap
/// offsets), at least one element.
fn extent(phases: &[Phase]) -> (isize, usize) {
    let (mut lo, mut hi) = (isize::MAX, isize::MIN);
    for ph in phases.iter().filter(|ph| ph.count > 0) {
        for t in &ph.taps {
            lo = lo.min(t.off);
            hi = hi.max(((ph.count - 1) * ph.in_step) as isize + t.off + 1);
        }
    }
    if lo < hi {
        (lo, (hi - lo) as usize)
    } else {
        (0, 1)
    }
}

impl<'a> DwCall<'a> {
    pub(super) fn new(
        p: &'a ConvProblem,
        geo: &'a Geometry,
        w: &'a PackedInt8Weight,
        table: &'a RequantTable,
        xzp: i32,
        x: &'a [u8],
        layout: ActivationLayout,
    ) -> Result<DwCall<'a>> {
        let x = match layout {
            ActivationLayout::ChannelsFirst => std::borrow::Cow::Borrowed(x),
            ActivationLayout::ChannelsLast => {
                std::borrow::Cow::Owned(relayout(x, p.in_channels, p.in_size.iter().product(), false)?)
            }
        };
        let ph2 = &geo.phases[2];
        // With at most one output per row the dim-2 step never separates two outputs: no
        // decimation (a huge stride would otherwise make every row `stride` codes long).
        let st = if ph2.iter().all(|ph| ph.count <= 1) { 1 } else { ph2.first().map_or(1, |ph| ph.in_step).max(1) };
        // Pair distance: the spacing of consecutive dim-2 taps (the same in every phase).
        let delta = ph2
            .iter()
            .find_map(|ph| (ph.taps.len() >= 2).then(|| ph.taps[0].off.abs_diff(ph.taps[1].off)))
            .unwrap_or(1)
            .max(1);
        let mut lo = [0isize; 3];
        let mut ext = [1usize; 3];
        for d in 1..3 {
            (lo[d], ext[d]) = extent(&geo.phases[d]);
        }
        let sub = ext[2].div_ceil(st);
        let pitch = st * sub;
        let pairs2 = ph2.iter().map(|ph| tap_pairs(ph, delta)).collect();
        let zero_corr = vec![0; p.out_channels + CHANNEL_SLACK];
        let [_, l1, l2] = p.in_size;
        let row_src = (0..ext[1]).map(|v| p.pad_mode.source_index(lo[1] + v as isize, l1)).collect();
        let ext2 = ext[2]; // the codes real outputs read (see `build_pairs`)
        let a = (-lo[2]).clamp(0, ext2 as isize) as usize;
        let b = (l2 as isize - lo[2]).clamp(a as isize, ext2 as isize) as usize;
        let first = (lo[2] + a as isize).max(0) as usize;
        let edges = (0..a)
            .chain(b..ext2)
            .filter_map(|v| p.pad_mode.source_index(lo[2] + v as isize, l2).map(|i| (v, i)))
            .collect();
        Ok(DwCall {
            p,
            geo,
            w,
            table,
            xzp,
            x,
            lo,
            ext,
            st,
            delta,
            sub,
            pitch,
            pairs2,
            row_src,
            cols: (a, b, first),
            edges,
            zero_corr,
        })
    }

    /// Releases the call's buffers.
    pub(super) fn finish(self) {}

    /// Runs every task with the kernels `kern`, writing `out`.
    pub(super) fn run<K: Int8Kernel>(&self, kern: K, out: &OutSink<'_>) -> Result<()> {
        let p = self.p;
        let kg = self.w.kg();
        let o0n = p.out_size[0];
        let planes = p.batch * p.in_channels;
        let want = 4 * crate::parallel::current_num_threads();
        // Split the output depth first, then the channel multiplier, when there are few planes;
        // and the depth so that a task's pair volume stays within `PAIRS_BUDGET`.
        let plane_bytes = (self.ext[1] * self.pitch * 4).max(1);
        let per_o0 = p.stride[0].max(1) * plane_bytes;
        let span0 = (p.kernel[0].saturating_sub(1) * p.dilation[0] + 1) * plane_bytes;
        let by_memory = o0n.div_ceil((PAIRS_BUDGET.saturating_sub(span0) / per_o0).max(1));
        let dt = want.div_ceil(planes).max(by_memory).clamp(1, o0n.max(1));
        let mt = want.div_ceil(planes * dt).clamp(1, kg);
        let mut tasks = Vec::with_capacity(planes * dt * mt);
        for n in 0..p.batch {
            for c in 0..p.in_channels {
                for i in 0..dt {
                    for j in 0..mt {
                        let o0 = (i * o0n / dt, (i + 1) * o0n / dt);
                        let mo = (j * kg / mt, (j + 1) * kg / mt);
                        if o0.0 < o0.1 && mo.0 < mo.1 {
                            tasks.push(DwTask { n, c, mo, o0 });
                        }
                    }
                }
            }
        }
        crate::parallel::try_for_each(tasks, |t| {
            SCRATCH.with(|s| match s.try_borrow_mut() {
                Ok(mut s) => self.task(kern, t, &mut s, out),
                Err(_) => self.task(kern, t, &mut Scratch::default(), out),
            })
        })
    }

    /// Builds the pair volume of channel `c` of image `n` into `s.pairs`: input planes
    /// `planes.0 <= i0 < planes.1`, rows
    /// `v1 < ext[1]`, `pitch` pairs per row (see the module documentation).
    fn build_pairs<K: Int8Kernel>(
        &self,
        kern: K,
        n: usize,
        c: usize,
        planes: (usize, usize),
        s: &mut Scratch,
    ) -> Result<()> {
        let [l0, l1, l2] = self.p.in_size;
        let (i0_lo, np) = (planes.0, planes.1 - planes.0);
        let (d1, pitch, sub, st, delta) = (self.ext[1], self.pitch, self.sub, self.st, self.delta);
        let rows = np * d1;
        // Every pair is written below.
        let what = || "the int8 depthwise pair rows".to_string();
        try_resize(&mut s.pairs, rows * pitch, 0, what)?;
        // The padded code rows, `pitch` apart (`x_zp` where zero padding reads nothing: centred
        // 0), `δ` spare codes after the last. Pair `v` of a row reads codes `v` and `v + δ`; the
        // pairs a real output reads have `v + δ` inside the padded extent of their row (both taps
        // of a pair are real taps), so the pairs near a row's end that read the next row's codes
        // feed only discarded (virtual) columns.
        s.codes.clear();
        try_resize(&mut s.codes, rows * pitch + delta, self.xzp as u8, what)?;
        let (a, b, first) = self.cols;
        // Only the `rows` rows: the `δ` spare codes after them are no row (with a pitch of at
        // most `δ`, chunking the whole buffer would make them one and read past the input).
        for (r, row) in s.codes[..rows * pitch].chunks_exact_mut(pitch).enumerate() {
            let (i0, v1) = (i0_lo + r / d1, r % d1);
            let Some(i1) = self.row_src[v1] else { continue };
            let base = (((n * self.p.in_channels + c) * l0 + i0) * l1 + i1) * l2;
            let xrow = &self.x[base..base + l2];
            copy_bytes(&mut row[a..b], &xrow[first..first + (b - a)]);
            for &(v, i2) in &self.edges {
                row[v] = xrow[i2];
            }
        }
        if st == 1 {
            kern.pair_row(&s.codes, self.xzp, delta, &mut s.pairs);
        } else {
            s.acc.clear();
            try_resize(&mut s.acc, pitch, 0, what)?;
            for (r, dst) in s.pairs.chunks_exact_mut(pitch).enumerate() {
                kern.pair_row(&s.codes[r * pitch..(r + 1) * pitch + delta], self.xzp, delta, &mut s.acc[..pitch]);
                for (rho, sr) in dst.chunks_exact_mut(sub).enumerate() {
                    for (u, d) in sr.iter_mut().enumerate() {
                        *d = s.acc[u * st + rho];
                    }
                }
            }
        }
        Ok(())
    }

    fn task<K: Int8Kernel>(&self, kern: K, t: DwTask, s: &mut Scratch, out: &OutSink<'_>) -> Result<()> {
        let p = self.p;
        let geo = self.geo;
        let l0 = p.in_size[0];
        let [_, o1n, o2n] = p.out_size;
        let kg = self.w.kg();
        let taps_n: usize = p.kernel.iter().product();
        let k = p.kernel;
        let (d1, pitch, sub, st) = (self.ext[1], self.pitch, self.sub, self.st);
        // The input planes the task's output planes read.
        let s0 = geo.out_step[0];
        let (mut lo, mut hi) = (usize::MAX, 0);
        for o0 in t.o0.0..t.o0.1 {
            let (ph0, m0) = (&geo.phases[0][o0 % s0], o0 / s0);
            for t0 in &ph0.taps {
                if let Some(i0) = p.pad_mode.source_index((m0 * ph0.in_step) as isize + t0.off, l0) {
                    (lo, hi) = (lo.min(i0), hi.max(i0 + 1));
                }
            }
        }
        let planes = if lo < hi { (lo, hi) } else { (0, 0) };
        self.build_pairs(kern, t.n, t.c, planes, s)?;
        let (mult, ba, bb) = self.table.lanes();
        let ep = Epi {
            mult,
            ba,
            bb,
            corr: &self.zero_corr,
            wzp: &self.w.wzp,
            has_bias: self.table.has_bias(),
            zp: self.table.output_zero_point(),
            lo: self.table.floor(),
        };
        for o0 in t.o0.0..t.o0.1 {
            let (ph0, m0) = (&geo.phases[0][o0 % s0], o0 / s0);
            for (phi1, ph1) in geo.phases[1].iter().enumerate() {
                if ph1.count == 0 {
                    continue;
                }
                // One line over the whole plane (unit dim-1 step), else one per output row.
                let flat = ph1.in_step == 1;
                let lines = if flat { 1 } else { ph1.count };
                for (phi2, ph2) in geo.phases[2].iter().enumerate() {
                    if ph2.count == 0 {
                        continue;
                    }
                    let count2 = ph2.count;
                    let (rows, wv) = if flat { (ph1.count, pitch) } else { (1, count2) };
                    let count = (rows - 1) * wv + count2;
                    for line in 0..lines {
                        let m1_0 = if flat { 0 } else { line };
                        for mo in t.mo.0..t.mo.1 {
                            let o = t.c * kg + mo;
                            let wrow = &self.w.dw[o * taps_n..(o + 1) * taps_n];
                            s.taps.clear();
                            for t0 in &ph0.taps {
                                let i0 = p.pad_mode.source_index((m0 * ph0.in_step) as isize + t0.off, l0);
                                let Some(i0) = i0 else { continue };
                                for t1 in &ph1.taps {
                                    let v1 = (m1_0 * ph1.in_step) as isize + t1.off - self.lo[1];
                                    let roff = ((i0 - planes.0) * d1 + v1 as usize) * pitch;
                                    for &(off, ja, jb) in &self.pairs2[phi2] {
                                        let v = (off - self.lo[2]) as usize;
                                        let pos = roff + (v % st) * sub + v / st;
                                        let wj = |j2: usize| wrow[(t0.j * k[1] + t1.j) * k[2] + j2];
                                        let (wa, wb) = (wj(ja), jb.map_or(0, wj));
                                        s.taps.push((pos, (wa as u16 as u32 | ((wb as u16 as u32) << 16)) as i32));
                                    }
                                }
                            }
                            s.acc.resize(count, 0);
                            s.codes.resize(count, 0);
                            if taps_n <= MAX_EXACT_K {
                                kern.dw_line(&s.pairs, &s.taps, &mut s.acc[..count]);
                                kern.requant_line(&s.acc[..count], &ep.channel(o), &mut s.codes[..count]);
                            } else {
                                for (m, code) in s.codes[..count].iter_mut().enumerate() {
                                    let v: i64 = s.taps.iter().map(|&(off, w)| dot2(s.pairs[off + m], w) as i64).sum();
                                    *code = self.table.requantize(v, o);
                                }
                            }
                            let first = (o0 * o1n + m1_0 * geo.out_step[1] + phi1) * o2n + phi2;
                            let at = (first, geo.out_step[1] * o2n, geo.out_step[2]);
                            out.write_rows(t.n, o, at, rows, count2, &s.codes[..count], wv);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The dim-2 taps of a phase as pairs `(offset of the first, its kernel index, the second's)`,
/// in increasing offset, the second `delta` further (none for an odd tap out).
fn tap_pairs(ph: &Phase, delta: usize) -> Vec<(isize, usize, Option<usize>)> {
    let mut taps: Vec<(isize, usize)> = ph.taps.iter().map(|t| (t.off, t.j)).collect();
    taps.sort_unstable();
    let mut out = Vec::with_capacity(taps.len().div_ceil(2));
    let mut i = 0;
    while i < taps.len() {
        if i + 1 < taps.len() && taps[i + 1].0 == taps[i].0 + delta as isize {
            out.push((taps[i].0, taps[i].1, Some(taps[i + 1].1)));
            i += 2;
        } else {
            out.push((taps[i].0, taps[i].1, None));
            i += 1;
        }
    }
    out
}

/// `dst.copy_from_slice(src)` for short rows without a `memcpy` call: 16-byte chunks and an
/// overlapping last chunk, or two overlapping smaller moves.
#[inline]
fn copy_bytes(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    #[inline(always)]
    fn two<const N: usize>(dst: &mut [u8], src: &[u8]) {
        let n = src.len();
        let head: [u8; N] = src[..N].try_into().expect("N bytes");
        let tail: [u8; N] = src[n - N..].try_into().expect("N bytes");
        dst[..N].copy_from_slice(&head);
        dst[n - N..n].copy_from_slice(&tail);
    }
    match n {
        0..=3 => dst[..n].copy_from_slice(src),
        4..=7 => two::<4>(dst, src),
        8..=15 => two::<8>(dst, src),
        16..=32 => two::<16>(dst, src),
        _ => dst[..n].copy_from_slice(src),
    }
}
