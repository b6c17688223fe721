//! The depthwise path (one input channel per group: depthwise convolutions, with or without a
//! channel multiplier, forward or transposed), channels-first, vectorised along output rows.
//!
//! Everything is centred first, so no zero-point correction is needed: the weights at packing
//! (`w − w_zp[o]`, i16), the activations per input row (`x − x_zp`, i16, with the padding mode
//! baked in; zero padding gives 0). An input row becomes a row of *pairs* `P[v] = (x̃[v],
//! x̃[v + δ])` packed in an i32, `δ` the distance between consecutive dim-2 taps of a phase
//! (the dilation, or for a transposed convolution `dilation / gcd(stride, dilation)`), so that one
//! `vpmaddwd`/`vpdpwssd` lane adds two taps' products for one output: the weights of two taps
//! form one i32 pair (the second zero for an odd tap count). A strided dim 2 stores each pair row
//! as `stride` decimated sub-rows, so every tap reads consecutive outputs' pairs contiguously.
//!
//! A task is a range of output rows of one input channel's plane of one image; it builds the pair
//! rows it reads (each once) and, per output row, dim-2 phase and output channel of the group,
//! lets the kernel sum the taps over the whole row ([`Int8Kernel::dw_line`]), requantizes the row
//! ([`Int8Kernel::requant_line`]) and writes it out. Terms are at most `255 · 255` in magnitude,
//! so i32 is exact up to `MAX_EXACT_K` taps; larger kernels sum the pairs in i64 (scalar).

use rayon::prelude::*;

use super::entry::OutSink;
use super::kernels::{dot2, Epi, Int8Kernel, MAX_EXACT_K};
use super::packed::{PackedInt8Weight, CHANNEL_SLACK};
use super::ActivationLayout;
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
    /// First padded dim-2 index (relative to the input) and padded pair-row length.
    lo2: isize,
    w2: usize,
    /// Dim-2 input step (decimation) and pair distance.
    st: usize,
    delta: usize,
    zero_corr: Vec<i32>,
}

/// A task: output rows `r0..r1` (flattened `(o0, o1)`) of input channel `c` of image `n`.
#[derive(Clone, Copy, Debug)]
struct DwTask {
    n: usize,
    c: usize,
    r0: usize,
    r1: usize,
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
            ActivationLayout::ChannelsLast => std::borrow::Cow::Owned(to_channels_first(p, x)),
        };
        let ph2 = &geo.phases[2];
        let st = ph2.first().map_or(1, |ph| ph.in_step).max(1);
        // Pair distance: the spacing of consecutive dim-2 taps (the same in every phase).
        let delta = ph2
            .iter()
            .find_map(|ph| (ph.taps.len() >= 2).then(|| ph.taps[0].off.abs_diff(ph.taps[1].off)))
            .unwrap_or(1)
            .max(1);
        let (mut lo2, mut hi2) = (0isize, 1isize);
        let mut any = false;
        for ph in ph2.iter().filter(|ph| ph.count > 0) {
            for t in &ph.taps {
                let last = ((ph.count - 1) * st) as isize + t.off;
                if !any {
                    (lo2, hi2, any) = (t.off, last + 1, true);
                }
                lo2 = lo2.min(t.off);
                hi2 = hi2.max(last + 1);
            }
        }
        let w2 = (hi2 - lo2).max(1) as usize;
        let zero_corr = vec![0; p.out_channels + CHANNEL_SLACK];
        Ok(DwCall { p, geo, w, table, xzp, x, lo2, w2, st, delta, zero_corr })
    }

    /// Releases the call's buffers.
    pub(super) fn finish(self) {}

    /// Runs every task with the kernels `kern`, writing `out`.
    pub(super) fn run<K: Int8Kernel>(&self, kern: K, out: &OutSink<'_>) {
        let p = self.p;
        let rows = p.out_size[0] * p.out_size[1];
        let planes = p.batch * p.in_channels;
        let want = 4 * rayon::current_num_threads().max(1);
        let rt = want.div_ceil(planes).clamp(1, rows.max(1));
        let mut tasks = Vec::with_capacity(planes * rt);
        for n in 0..p.batch {
            for c in 0..p.in_channels {
                for i in 0..rt {
                    let (r0, r1) = (i * rows / rt, (i + 1) * rows / rt);
                    if r0 < r1 {
                        tasks.push(DwTask { n, c, r0, r1 });
                    }
                }
            }
        }
        tasks.into_par_iter().for_each(|t| self.task(kern, t, out));
    }

    /// The centred pair row of input row `(i0, i1)` of channel `c` of image `n`, as `st`
    /// decimated sub-rows of `sub` pairs each.
    fn pair_row(&self, n: usize, c: usize, i0: usize, i1: usize, sub: usize, dst: &mut [i32]) {
        let [l0, l1, l2] = self.p.in_size;
        let base = ((n * self.p.in_channels + c) * l0 + i0) * l1 * l2 + i1 * l2;
        let xrow = &self.x[base..base + l2];
        let mode = self.p.pad_mode;
        let len = self.w2 + self.delta;
        let centred: Vec<i16> = (0..len)
            .map(|v| mode.source_index(self.lo2 + v as isize, l2).map_or(0, |i| (xrow[i] as i32 - self.xzp) as i16))
            .collect();
        let pair = |v: usize| -> i32 {
            let a = centred.get(v).copied().unwrap_or(0);
            let b = centred.get(v + self.delta).copied().unwrap_or(0);
            (a as u16 as u32 | ((b as u16 as u32) << 16)) as i32
        };
        for (rho, row) in dst.chunks_exact_mut(sub).enumerate() {
            for (u, d) in row.iter_mut().enumerate() {
                *d = pair(u * self.st + rho);
            }
        }
    }

    fn task<K: Int8Kernel>(&self, kern: K, t: DwTask, out: &OutSink<'_>) {
        let p = self.p;
        let geo = self.geo;
        let [l0, l1, _] = p.in_size;
        let [_, o1n, o2n] = p.out_size;
        let kg = self.w.kg();
        let taps_n: usize = p.kernel.iter().product();
        let k = p.kernel;
        let sub = self.w2.div_ceil(self.st);
        let row_len = self.st * sub;
        // Pair rows, built on first use: `slot[i0·l1 + i1]` is the row's offset in `pairs`.
        let mut slot = vec![usize::MAX; l0 * l1];
        let mut pairs: Vec<i32> = Vec::new();
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
        let mut line_taps: Vec<(usize, i32)> = Vec::new();
        let mut acc: Vec<i32> = Vec::new();
        let mut codes: Vec<u8> = Vec::new();
        for row in t.r0..t.r1 {
            let (o0, o1) = (row / o1n, row % o1n);
            let (ph0, m0) = (&geo.phases[0][o0 % geo.out_step[0]], o0 / geo.out_step[0]);
            let (ph1, m1) = (&geo.phases[1][o1 % geo.out_step[1]], o1 / geo.out_step[1]);
            // The input rows this output row reads (zeros padding: rows outside read nothing).
            let mut rows_used: Vec<(usize, usize, usize)> = Vec::new(); // (pair-row offset, j0, j1)
            for t0 in &ph0.taps {
                let Some(i0) = p.pad_mode.source_index((m0 * ph0.in_step) as isize + t0.off, l0) else { continue };
                for t1 in &ph1.taps {
                    let Some(i1) = p.pad_mode.source_index((m1 * ph1.in_step) as isize + t1.off, l1) else {
                        continue;
                    };
                    let s = &mut slot[i0 * l1 + i1];
                    if *s == usize::MAX {
                        *s = pairs.len();
                        pairs.resize(pairs.len() + row_len, 0);
                        let at = *s;
                        self.pair_row(t.n, t.c, i0, i1, sub, &mut pairs[at..at + row_len]);
                    }
                    rows_used.push((*s, t0.j, t1.j));
                }
            }
            for (phi2, ph2) in geo.phases[2].iter().enumerate() {
                if ph2.count == 0 {
                    continue;
                }
                let count = ph2.count;
                let pairs2 = tap_pairs(ph2, self.delta);
                for mo in 0..kg {
                    let o = t.c * kg + mo;
                    let wrow = &self.w.dw[o * taps_n..(o + 1) * taps_n];
                    line_taps.clear();
                    for &(roff, j0, j1) in &rows_used {
                        for &(off, ja, jb) in &pairs2 {
                            let v = (off - self.lo2) as usize;
                            let pos = roff + (v % self.st) * sub + v / self.st;
                            let wa = wrow[(j0 * k[1] + j1) * k[2] + ja];
                            let wb = jb.map_or(0, |jb| wrow[(j0 * k[1] + j1) * k[2] + jb]);
                            line_taps.push((pos, (wa as u16 as u32 | ((wb as u16 as u32) << 16)) as i32));
                        }
                    }
                    acc.resize(count, 0);
                    codes.resize(count, 0);
                    if taps_n <= MAX_EXACT_K {
                        kern.dw_line(&pairs, &line_taps, &mut acc);
                        kern.requant_line(&acc, &ep.channel(o), &mut codes);
                    } else {
                        for (m, code) in codes.iter_mut().enumerate() {
                            let v: i64 = line_taps.iter().map(|&(off, w)| dot2(pairs[off + m], w) as i64).sum();
                            *code = self.table.requantize(v, o);
                        }
                    }
                    out.write_line(t.n, o, (o0 * o1n + o1) * o2n + phi2, geo.out_step[2], &codes);
                }
            }
        }
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

/// A channels-last input (`[N, D, H, W, C]`) as channels-first.
fn to_channels_first(p: &ConvProblem, x: &[u8]) -> Vec<u8> {
    let c = p.in_channels;
    let plane: usize = p.in_size.iter().product();
    let mut y = vec![0u8; x.len()];
    y.par_chunks_mut((plane * c).max(1)).zip(x.par_chunks((plane * c).max(1))).for_each(|(dst, src)| {
        for (px, pixel) in src.chunks_exact(c).enumerate() {
            for (ch, &v) in pixel.iter().enumerate() {
                dst[ch * plane + px] = v;
            }
        }
    });
    y
}
