//! The GEMM path (more than one input channel per group): each sub-convolution of `plan.rs` as
//! blocks of positions × 32 channels, raw sums from the micro-kernel, and the requantization of
//! each block straight into the output.
//!
//! **Tasks.** The blocks of every sub-convolution (at most `K::MR` consecutive positions of a
//! run) are cut into consecutive ranges, and the `(group, pair of 16-channel panels)` list into
//! ranges; a task is one block range × one channel range, sized so that there are about four
//! tasks per thread. Inside a task the loop is channels outer, blocks inner: one pair of weight
//! panels stays in L1 while the blocks' activation rows stream from L2. Results do not depend on
//! the split: every output element is one exact integer sum and one fixed epilogue.
//!
//! **Epilogue.** A block's raw sums go to a 4 KiB scratch (`AccTile`), from which each position's
//! 16 or 32 channels are corrected (`+ corr[o] − w_zp[o]·rowsum`) and requantized by the kernel
//! (`requant_tile`) into the output: one contiguous row of channels for channels-last
//! output, one byte per channel plane for channels-first output. No i32 tensor is ever written.
//! Sub-convolutions with more than `MAX_EXACT_K` real terms run their chunks one after the other
//! and add the raw sums in i64, then requantize with the scalar epilogue.

use std::sync::Arc;

use super::entry::OutSink;
use super::kernels::{ARows, AccTile, Epi, Int8Kernel, KPlan, ACC_PITCH, MAX_MR};
use super::packed::{AmxPack, PackedInt8Weight, CHANNEL_SLACK};
use super::padded::transpose16;
use super::plan::{PadLayout, SubConv};
use crate::alloc::try_resize;
use crate::error::Result;
use crate::problem::ConvProblem;
use crate::quant::RequantTable;

/// Bytes of weight panels a task keeps in L1 across its blocks (blocks outer below this).
const L1_WEIGHTS: usize = 24 << 10;

/// Marks a block row that is no output element (a virtual column).
const SKIP: usize = usize::MAX;

/// Everything the GEMM tasks of one call read.
pub(super) struct GemmCall<'a> {
    pub(super) p: &'a ConvProblem,
    pub(super) w: &'a PackedInt8Weight,
    pub(super) table: &'a RequantTable,
    pub(super) lay: PadLayout,
    pub(super) subs: Vec<SubConv>,
    pub(super) xp: &'a [u8],
    pub(super) xzp: i32,
    /// Output step per dimension (1 forward, the stride transposed).
    pub(super) out_step: [usize; 3],
}

/// What the kernel reads for one sub-convolution: the reduction chunks and the weight panels.
struct Operands<'a> {
    plans: &'a [KPlan],
    data: &'a [i8],
    panel_len: usize,
}

/// Consecutive positions of one run of one sub-convolution.
#[derive(Clone, Copy, Debug)]
struct Block {
    sub: usize,
    run: usize,
    pos0: usize,
    m: usize,
}

/// A task: blocks `b0..b1`, channel pairs `c0..c1` (flattened `(group, pair)`).
#[derive(Clone, Copy, Debug)]
struct Task {
    b0: usize,
    b1: usize,
    c0: usize,
    c1: usize,
}

impl GemmCall<'_> {
    /// Runs every task with the kernels `kern`, writing `out`.
    pub(super) fn run<K: Int8Kernel>(&self, kern: K, out: &OutSink<'_>) -> Result<()> {
        let mr = K::MR.min(MAX_MR);
        let mut blocks = Vec::new();
        for (si, s) in self.subs.iter().enumerate() {
            for (ri, r) in s.runs.iter().enumerate() {
                let mut pos0 = 0;
                while pos0 < r.npos {
                    let m = mr.min(r.npos - pos0);
                    blocks.push(Block { sub: si, run: ri, pos0, m });
                    pos0 += m;
                }
            }
        }
        let pairs_per_group = self.w.panels.div_ceil(2);
        let pairs = self.p.groups * pairs_per_group;
        let want = 4 * crate::parallel::current_num_threads();
        let bt = blocks.len().clamp(1, want);
        let ct = want.div_ceil(bt).clamp(1, pairs.max(1));
        let bb: Vec<usize> = (0..=bt).map(|i| i * blocks.len() / bt).collect();
        let cb: Vec<usize> = (0..=ct).map(|i| i * pairs / ct).collect();
        let tasks: Vec<Task> = (0..bt)
            .flat_map(|i| (0..ct).map(move |j| (i, j)))
            .map(|(i, j)| Task { b0: bb[i], b1: bb[i + 1], c0: cb[j], c1: cb[j + 1] })
            .filter(|t| t.b0 < t.b1 && t.c0 < t.c1)
            .collect();
        let corr: Vec<Vec<i64>> = self.subs.iter().map(|s| self.correction(s)).collect();
        let corr32: Vec<Vec<i32>> = corr.iter().map(|c| c.iter().map(|&v| v as i32).collect()).collect();
        // The weights and plans the kernel reads: the canonical packing, or (AMX) its 64-byte-unit
        // form for each sub-convolution's plan.
        let amx: Vec<Arc<AmxPack>> = if K::UNIT == 64 {
            self.subs.iter().map(|s| self.w.amx_pack(&s.chunks)).collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let operands: Vec<Operands<'_>> = self
            .subs
            .iter()
            .enumerate()
            .map(|(i, s)| match amx.get(i) {
                Some(p) => Operands { plans: &p.plans, data: p.data.codes(), panel_len: p.panel_len },
                None => Operands { plans: &s.chunks, data: self.w.data.codes(), panel_len: self.w.panel_len },
            })
            .collect();
        crate::parallel::try_for_each(tasks, |t| {
            kern.task_begin();
            let r = self.task(kern, &blocks[t.b0..t.b1], t.c0..t.c1, pairs_per_group, (&corr, &corr32), &operands, out);
            kern.task_end();
            r
        })
    }

    /// `corr[o] = −x_zp · Σ_{t ∈ taps} (tap_sums[t, o] − Cg·w_zp[o])` (zeros past the channels).
    fn correction(&self, s: &SubConv) -> Vec<i64> {
        let k = self.p.out_channels;
        let cg = self.w.cg() as i64;
        let mut corr = vec![0i64; k + CHANNEL_SLACK];
        for (o, c) in corr.iter_mut().enumerate().take(k) {
            let sum: i64 = s.taps.iter().map(|&t| self.w.tap_sums[t * k + o]).sum();
            *c = -(self.xzp as i64) * (sum - cg * s.taps.len() as i64 * self.w.wzp[o] as i64);
        }
        corr
    }

    /// The output pixel (within its image) of every row of `blk`, [`SKIP`] for virtual columns.
    fn pixels(&self, blk: &Block) -> [usize; MAX_MR] {
        let s = &self.subs[blk.sub];
        let r = &s.runs[blk.run];
        let [_, o1n, o2n] = self.p.out_size;
        let st = self.out_step;
        let mut pix = [SKIP; MAX_MR];
        for (i, px) in pix.iter_mut().enumerate().take(blk.m) {
            let pos = blk.pos0 + i;
            let (m1, m2) = (r.m1 + pos / s.wv, pos % s.wv);
            if m2 < s.count[2] {
                let o0 = r.m0 * st[0] + s.key[0];
                let o1 = m1 * st[1] + s.key[1];
                let o2 = m2 * st[2] + s.key[2];
                *px = (o0 * o1n + o1) * o2n + o2;
            }
        }
        pix
    }

    /// Σ over the window of each row of `blk` of the group's real activation codes.
    fn row_sums(&self, blk: &Block, g: usize) -> [i64; MAX_MR] {
        let s = &self.subs[blk.sub];
        let r = &s.runs[blk.run];
        let cg = self.w.cg();
        let mut rs = [0i64; MAX_MR];
        for (i, v) in rs.iter_mut().enumerate().take(blk.m) {
            let base = r.a0 + g * self.lay.cgp + (blk.pos0 + i) * s.lda;
            *v = s.tap_a.iter().map(|&a| self.xp[base + a..base + a + cg].iter().map(|&x| x as i64).sum::<i64>()).sum();
        }
        rs
    }

    #[allow(clippy::too_many_arguments)]
    fn task<K: Int8Kernel>(
        &self,
        kern: K,
        blocks: &[Block],
        pairs: std::ops::Range<usize>,
        per_group: usize,
        corr: (&[Vec<i64>], &[Vec<i32>]),
        ops: &[Operands<'_>],
        out: &OutSink<'_>,
    ) -> Result<()> {
        let w = self.w;
        let kg = w.kg();
        let mut acc = AccTile::new();
        let mut codes = [0u8; MAX_MR * ACC_PITCH];
        let pix: Vec<[usize; MAX_MR]> = blocks.iter().map(|b| self.pixels(b)).collect();
        // Row sums (non-zero weight zero points) per group of the task's pairs and block.
        let g_first = pairs.start / per_group;
        let sums: Vec<Vec<[i64; MAX_MR]>> = if w.any_wzp {
            (g_first..=(pairs.end - 1) / per_group)
                .map(|g| blocks.iter().map(|b| self.row_sums(b, g)).collect())
                .collect()
        } else {
            Vec::new()
        };
        let (mult, ba, bb) = self.table.lanes();
        // Loop order: blocks outer when the task's weight panels fit in L1 together (each block's
        // activation rows then serve every pair from L1), else pairs outer (one pair of panels
        // in L1 for all blocks, the activation rows streaming from L2).
        let b_bytes = pairs.len() * 2 * ops.first().map_or(0, |o| o.panel_len);
        let order: Vec<(usize, usize)> = if b_bytes <= L1_WEIGHTS {
            (0..blocks.len()).flat_map(|bi| (0..pairs.len()).map(move |pi| (pi, bi))).collect()
        } else {
            (0..pairs.len()).flat_map(|pi| (0..blocks.len()).map(move |bi| (pi, bi))).collect()
        };
        // Channels-first output: rows of codes go to a task buffer `[position][task channel]`
        // first (position `pos_at[bi] + i` of block `bi`), written out by 16 × 16 transposes.
        let buffered = out.channels_first();
        let tw = 32 * pairs.len();
        let mut pos_at = Vec::with_capacity(blocks.len());
        let mut tbuf = Vec::new();
        if buffered {
            let mut at = 0;
            for b in blocks {
                pos_at.push(at);
                at += b.m;
            }
            try_resize(&mut tbuf, (at + 16) * tw, 0u8, || "an int8 output block buffer".to_string())?;
        }
        for &(pi, bi) in &order {
            let pair = pairs.start + pi;
            let (g, pr) = (pair / per_group, pair % per_group);
            let first = g * w.panels + 2 * pr;
            let np = (w.panels - 2 * pr).min(2);
            let ch0 = g * kg + 32 * pr;
            let nch = (kg - 32 * pr).min(32);
            let blk = &blocks[bi];
            let s = &self.subs[blk.sub];
            let op = &ops[blk.sub];
            let panels = [first * op.panel_len, (first + 1) * op.panel_len];
            let panels = &panels[..np];
            let r = &s.runs[blk.run];
            let rows = ARows { data: self.xp, a0: r.a0 + g * self.lay.cgp + blk.pos0 * s.lda, lda: s.lda };
            let rs = if w.any_wzp { sums[g - g_first][bi] } else { [0; MAX_MR] };
            let n = r.n;
            if !s.wide() {
                kern.gemm(blk.m, rows, &op.plans[0], op.data, panels, &mut acc);
                let ep = Epi {
                    mult,
                    ba,
                    bb,
                    corr: &corr.1[blk.sub],
                    wzp: &w.wzp,
                    has_bias: self.table.has_bias(),
                    zp: self.table.output_zero_point(),
                    lo: self.table.floor(),
                };
                let rs32: [i32; MAX_MR] = rs.map(|v| v as i32);
                let rowsums: &[i32] = if w.any_wzp { &rs32 } else { &[] };
                if buffered {
                    let at = pos_at[bi] * tw + 32 * pi;
                    kern.requant_tile(&acc, blk.m, rowsums, &ep, ch0..ch0 + nch, (&mut tbuf[at..], tw));
                } else {
                    kern.requant_tile(&acc, blk.m, rowsums, &ep, ch0..ch0 + nch, (&mut codes, ACC_PITCH));
                    for (i, &px) in pix[bi].iter().enumerate().take(blk.m) {
                        if px != SKIP {
                            out.write_codes(n, px, ch0, &codes[i * ACC_PITCH..i * ACC_PITCH + nch]);
                        }
                    }
                }
            } else {
                let mut wide = [[0i64; ACC_PITCH]; MAX_MR];
                for plan in op.plans {
                    kern.gemm(blk.m, rows, plan, op.data, panels, &mut acc);
                    for (i, row) in wide.iter_mut().enumerate().take(blk.m) {
                        for (d, &v) in row.iter_mut().zip(&acc.0[i * ACC_PITCH..(i + 1) * ACC_PITCH]) {
                            *d += v as i64;
                        }
                    }
                }
                for (i, &px) in pix[bi].iter().enumerate().take(blk.m) {
                    if px == SKIP {
                        continue;
                    }
                    let fill = |dst: &mut [u8]| {
                        for (j, d) in dst.iter_mut().enumerate() {
                            let o = ch0 + j;
                            let v = wide[i][j] + corr.0[blk.sub][o] - w.wzp[o] as i64 * rs[i];
                            *d = self.table.requantize(v, o);
                        }
                    };
                    if buffered {
                        let at = (pos_at[bi] + i) * tw + 32 * pi;
                        fill(&mut tbuf[at..at + nch]);
                    } else {
                        out.write_row(n, px, ch0, nch, fill);
                    }
                }
            }
        }
        if buffered {
            self.write_transposed(blocks, &pix, &tbuf, tw, pairs, per_group, out);
        }
        Ok(())
    }

    /// Writes a channels-first task buffer (see [`GemmCall::task`]) to the output: per segment
    /// of output pixels of one image (consecutive positions, pixels the dim-2 output step apart)
    /// and per pair of panels, 16 positions × 16 channels at a time through a 16 × 16 byte
    /// transpose, the ragged edges byte by byte.
    #[allow(clippy::too_many_arguments)]
    fn write_transposed(
        &self,
        blocks: &[Block],
        pix: &[[usize; MAX_MR]],
        tbuf: &[u8],
        tw: usize,
        pairs: std::ops::Range<usize>,
        per_group: usize,
        out: &OutSink<'_>,
    ) {
        let kg = self.w.kg();
        // Segments `(first task position, length, image, first pixel)` of consecutive positions
        // whose pixels are `step` apart (the dim-2 output step: 1, or a transposed stride).
        let step = self.out_step[2];
        let mut segs: Vec<(usize, usize, usize, usize)> = Vec::new();
        let mut at = 0;
        for (bi, b) in blocks.iter().enumerate() {
            let n = self.subs[b.sub].runs[b.run].n;
            for (i, &px) in pix[bi].iter().enumerate().take(b.m) {
                if px != SKIP {
                    match segs.last_mut() {
                        Some(sg) if sg.0 + sg.1 == at + i && sg.2 == n && sg.3 + sg.1 * step == px => sg.1 += 1,
                        _ => segs.push((at + i, 1, n, px)),
                    }
                }
            }
            at += b.m;
        }
        for (pi, pair) in pairs.enumerate() {
            let (g, pr) = (pair / per_group, pair % per_group);
            let ch0 = g * kg + 32 * pr;
            let nch = (kg - 32 * pr).min(32);
            let col = 32 * pi;
            for &(p0, len, n, px0) in &segs {
                let mut j = 0;
                while j < nch {
                    let jn = (nch - j).min(16);
                    // 16 positions × 16 channels at a time; the buffer has 16 spare rows and each
                    // pair 32 columns, so a ragged block reads in bounds and writes `take` codes.
                    for i in (0..len).step_by(16) {
                        let take = (len - i).min(16);
                        let mut t = [0u8; 256];
                        transpose16(&tbuf[(p0 + i) * tw + col + j..], tw, &mut t, 16);
                        out.write_block16(n, ch0 + j, jn, (px0 + i * step, step, take), &t);
                    }
                    j += jn;
                }
            }
        }
    }
}
