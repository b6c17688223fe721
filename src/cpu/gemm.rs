//! The GEMM path (`Kg > 1`): a tiled implicit GEMM per (batch `n`, group `g`) and
//! sub-convolution.
//!
//! `Out[Kg, cols] = W[Kg, taps·Cg] × Col[taps·Cg, cols]`. The reduction index is *tap-major*
//! (`r = tap·Cg + c`), so the transposed phases pick their taps out of the one packed weight. The
//! reduction is cut into chunks of at most [`KC`] rows (whole taps when `Cg < KC`, channel ranges
//! of one tap otherwise). A register-tiled micro-kernel (`mr × NR` `f32` accumulators, `NR` = 16
//! contiguous output positions; `mr` = 8 or 6, see `packed.rs`) multiplies an `mr`-row weight
//! panel by `NR` columns of `Col`, whose rows come from one of three sources
//! ([`BSource`]):
//! * *packed*: the task gathers the chunk's `Col` tile for its columns into micro-panels
//!   `[cols/NR][kc][NR]` (contiguous copies for the in-bounds part of each output row, remap at
//!   the edges; any stride, dilation or padding mode) — the general case. Stride-2 rows (e.g. a
//!   stem) are de-interleaved by a per-ISA copy of the gather loop (`Kernel::run_s2`; one
//!   two-register permute per 16 values with AVX-512, masked loads for ragged ends);
//! * *padded input* (`padded.rs`): the kernel reads each row of `B` in place from a padded copy
//!   of the input. Few channels per tap (a stem's 3) would make one kernel segment per tap of a
//!   few rows; those calls use an *indirect* kernel instead, which takes one input offset per
//!   reduction row (the weights being contiguous). A panel covers `NR` consecutive columns of the
//!   padded plane: consecutive output rows share panels (the few padded columns between them are
//!   computed and discarded) when that wastes less than rounding every row up to `NR` would (e.g.
//!   28-wide rows: 2 of 30 columns instead of 4 of 32), otherwise every row starts a new panel.
//!   Tasks then split the positions at whole output rows (a cut row would round two runs up to
//!   `NR`). Tasks with at least [`PACK_MIN_ROWS`] output channels instead make their columns the
//!   output positions themselves (nothing computed twice): a panel inside one output row is still
//!   read in place, and a panel spanning rows is packed from the copy, one masked load per row
//!   piece with AVX-512, then serves every micro-kernel call of the task's channel blocks;
//! * *input*: 1×1 stride-1 unpadded forward convolutions read the input itself (flat positions;
//!   only a ragged last panel is copied).
//!
//! The accumulators of a task's output tile live in a per-task buffer `Ct` (`[Kg block][cols]`)
//! between chunks; after the last chunk it is written to the output with the bias added (fused
//! epilogue). No full im2col matrix exists: a task holds at most one `kc × cols` tile.

use super::context::{split_bounds, BSource, Ctx};
use super::geometry::{checked_product, Geometry, Phase};
use super::kernels::{ASeg, CTile, Kernel, NR};
use super::padded::{padded_extent, padded_layout};
use super::rows::{fill_run, put, write_run, write_run_strided};
use super::workspace::Workspace;
use crate::alloc::{try_resize, try_with_capacity};
use crate::error::Result;
use crate::problem::ConvProblem;

/// Largest reduction chunk (rows of a gathered `Col` tile).
const KC: usize = 256;
/// Average segment length (reduction rows) below which a GEMM call with contiguous weights uses
/// the indirect kernel (one input offset per row) rather than a loop per segment.
const IND_MAX_SEG: usize = 16;
/// Output channels from which a padded-source task packs its panels (see `Ctx::packs_panels`).
const PACK_MIN_ROWS: usize = 32;
/// Largest number of columns a GEMM task computes per sub-convolution (before the `Ct` budget).
const NC_MAX: usize = 256;
/// Budget (in `f32`) of a task's output tile `Ct`; bounds the columns per task for large `Kg`.
const CT_BUDGET: usize = 64 * 1024;
/// Largest gap (in padded-plane columns) between two output rows that one panel run spans.
const MAX_GAP: usize = NR / 2;
/// Longest output row (per phase) for which the GEMM path reads the padded input in place.
const PADDED_MAX_ROW: usize = 64;
/// Largest input footprint (in `f32`) of one output row for which the GEMM path reads the padded
/// input in place for rows longer than `PADDED_MAX_ROW` (strided rows only).
const LONG_ROWS_BUDGET: usize = 16 * 1024;

/// Whether the GEMM path should read `B` from a padded input copy: the dim-2 input step must be 1
/// (panels are runs of one output row), rows short (long rows gather efficiently as long
/// contiguous copies, while reading `kc` far-apart long rows per panel defeats the prefetchers),
/// enough channels per tap to amortise a kernel segment, little waste from computing the padded
/// columns between rows (or from rounding row runs up to `NR`), and a padded copy of reasonable
/// size.
pub(super) fn padded_pays_off(p: &ConvProblem, geo: &Geometry, in_len: usize) -> bool {
    let Some((_, dims)) = padded_extent(geo) else { return false };
    // The copy as stored: dim 2 rounded up to whole sub-rows (a huge dim-2 step with one output
    // column makes a short row of a huge stored pitch).
    let Some(layout) = padded_layout(geo) else { return false };
    // A strided dim 2 (forward only: one phase) is stored as sub-rows, one per input phase.
    let step2 = geo.phases[2].first().map_or(1, |ph| ph.in_step);
    if step2 != 1 && geo.phases[2].len() != 1 {
        return false;
    }
    // Long rows: only if the input rows one output row reads stay cache-resident (their
    // `Cg·taps0·taps1` rows are read `NR` columns at a time, far apart).
    let long_ok = step2 > 1 && {
        let rows_read: usize = geo.cg * geo.phases[0][0].taps.len() * geo.phases[1][0].taps.len();
        rows_read.saturating_mul(dims[2]) <= LONG_ROWS_BUDGET
    };
    if geo.phases[2].iter().any(|ph| ph.count > PADDED_MAX_ROW && !long_ok) {
        return false;
    }
    // Few channels per tap make short kernel segments: fine for a forward convolution (the
    // indirect kernel takes them), not for the transposed phases (weights not contiguous).
    if geo.cg < 4 && p.transposed {
        return false;
    }
    // Consecutive rows of a phase share panels when the dim-1 input step is 1 and the gap small.
    let merged = geo.phases[1].iter().all(|ph| ph.in_step == 1);
    let (used, computed) = geo.phases[2].iter().fold((0, 0), |(u, r), ph| {
        let gap = dims[2].saturating_sub(ph.count);
        let cost =
            if merged && merge_rows_pays(ph.count, dims[2]) { ph.count + gap } else { ph.count.div_ceil(NR) * NR };
        (u + ph.count, r + cost)
    });
    // Waste: up to 25% with unit steps (a gather costs more), 1/16 with strided rows (the
    // stride-2 gather is cheaper).
    // (Tasks with many output channels pack their panels: nothing is computed twice.)
    let packs = geo.kg >= PACK_MIN_ROWS;
    if !packs && (computed * 4 > used * 5 || (step2 > 1 && computed * 16 > used * 17)) {
        return false;
    }
    let stored = layout.dims;
    match checked_product(&[p.batch, p.in_channels, stored[0], stored[1], stored[2]], "") {
        Ok(len) => len <= in_len.saturating_mul(4).saturating_add(1 << 20),
        Err(_) => false,
    }
}

/// Whether panels of the padded-input source should run across consecutive output rows of
/// `count` columns in a padded plane of width `width` (computing the `width − count` columns in
/// between) rather than start every row at a new panel.
fn merge_rows_pays(count: usize, width: usize) -> bool {
    let gap = width.saturating_sub(count);
    gap <= MAX_GAP && gap < count.div_ceil(NR) * NR - count
}

/// A GEMM task: output channels `k0..k0 + rows.len()` of group `g`, positions `p0..p1` of image `n`.
pub(super) struct GemmTask<'y> {
    n: usize,
    g: usize,
    k0: usize,
    p0: usize,
    p1: usize,
    rows: Vec<&'y mut [f32]>,
}

/// A run of columns of one sub-convolution inside one output row.
#[derive(Clone, Copy, Debug)]
pub(super) struct Seg {
    /// Sub-convolution (phase index per dimension).
    key: [usize; 3],
    m0: usize,
    m1: usize,
    m2: usize,
    len: usize,
    /// First column of the run in the sub-convolution's `Col`/`Ct` tiles.
    col: usize,
    /// Position of the first element in the task's output rows (`o − p0`).
    dest: usize,
    /// Padded-input source: offset of the run's first column in the padded plane (tap offset 0),
    /// and whether the run starts a new column run of panels (else it continues the previous
    /// run, the padded columns in between being computed and discarded).
    poff: usize,
    new_run: bool,
}

/// One sub-convolution's part of a GEMM task: its phase per dimension, their tap counts, the
/// task's column runs and their column count.
#[derive(Clone, Copy)]
struct SubConv<'a> {
    ph: [&'a Phase; 3],
    ntaps: [usize; 3],
    segs: &'a [Seg],
    cols: usize,
}

/// One reduction chunk: taps `taps.0..taps.1` × channels `chans.0..chans.1` (`kc` rows).
#[derive(Clone, Copy)]
struct Chunk {
    taps: (usize, usize),
    chans: (usize, usize),
    kc: usize,
}

impl Ctx<'_> {
    /// The GEMM path's task grid over the output `y`: every task owns its output rows' position
    /// ranges (see `context.rs`).
    pub(super) fn gemm_tasks<'y>(&self, y: &'y mut [f32]) -> Result<Vec<GemmTask<'y>>> {
        let p = self.p;
        let (kg, plane) = (self.geo.kg, self.geo.out_plane);
        let threads = crate::parallel::current_num_threads();
        let want = 4 * threads;
        let ng = p.batch * p.groups;
        // Sub-convolutions per output position block: the product of the transposed strides
        // (user sizes, saturated: a stride of 2^32 per dimension must not wrap to 0).
        let phases = self.geo.out_step.iter().fold(1usize, |a, &s| a.saturating_mul(s));
        let mr = self.w.mr;
        let kblocks = kg.div_ceil(mr);
        // Columns per task and sub-convolution: NC_MAX, fewer when Kg is large (Ct budget).
        let nc = (CT_BUDGET / (kblocks * mr)).clamp(2 * NR, NC_MAX) / NR * NR;
        // Tasks split the positions at multiples of `NR`, or at whole output rows when `B` is the
        // padded input read in runs (a task's panels run across its rows: cutting a row would
        // round two runs up to `NR` instead of one).
        let unit = if self.bsrc == BSource::Padded && kg < PACK_MIN_ROWS { p.out_size[2] } else { NR };
        let units = plane.div_ceil(unit);
        let mut pt = plane.div_ceil(nc.saturating_mul(phases)).clamp(1, units);
        if ng.saturating_mul(pt) < want {
            pt = want.div_ceil(ng).clamp(pt, units);
        }
        let mut kt = 1;
        if ng.saturating_mul(pt) < want {
            kt = want.div_ceil(ng * pt).clamp(1, kblocks);
        }
        // Few tasks: make their number a multiple of the thread count (balanced finish).
        if ng.saturating_mul(kt * pt) < 4 * want && !(ng * kt * pt).is_multiple_of(threads) {
            let balanced = (pt..=units.min(2 * pt)).find(|&v| (ng * kt * v).is_multiple_of(threads));
            pt = balanced.unwrap_or(pt);
        }
        let pb: Vec<usize> = split_bounds(units, pt).into_iter().map(|u| (u * unit).min(plane)).collect();
        let kb: Vec<usize> = split_bounds(kblocks, kt).into_iter().map(|b| (b * mr).min(kg)).collect();
        let mut tasks: Vec<GemmTask> =
            try_with_capacity(ng.saturating_mul(kt * pt), || "the GEMM path's task list".into())?;
        for n in 0..p.batch {
            for g in 0..p.groups {
                for ki in 0..kt {
                    for pi in 0..pt {
                        tasks.push(GemmTask {
                            n,
                            g,
                            k0: kb[ki],
                            p0: pb[pi],
                            p1: pb[pi + 1],
                            rows: Vec::with_capacity(kb[ki + 1] - kb[ki]),
                        });
                    }
                }
            }
        }
        // Hand every (n, k) output row's position ranges to their tasks (disjoint &mut slices).
        let mut kblock_of = vec![0usize; kg];
        for ki in 0..kt {
            kblock_of[kb[ki]..kb[ki + 1]].fill(ki);
        }
        for (row_idx, row) in y.chunks_mut(plane).enumerate() {
            let (n, k) = (row_idx / p.out_channels, row_idx % p.out_channels);
            let (g, kl) = (k / kg, k % kg);
            let base = ((n * p.groups + g) * kt + kblock_of[kl]) * pt;
            let mut rest = row;
            for pi in 0..pt {
                let (piece, tail) = rest.split_at_mut(pb[pi + 1] - pb[pi]);
                tasks[base + pi].rows.push(piece);
                rest = tail;
            }
        }
        Ok(tasks)
    }

    /// Runs one GEMM task: its column runs, grouped by sub-convolution.
    #[inline]
    pub(super) fn gemm_task<K: Kernel>(&self, kern: K, ws: &mut Workspace, mut task: GemmTask<'_>) -> Result<()> {
        if task.p1 <= task.p0 || task.rows.is_empty() {
            return Ok(());
        }
        let p = self.p;
        let geo = &self.geo;
        let [_, o1n, o2n] = p.out_size;
        // Column runs of every sub-convolution inside [p0, p1), grouped by sub-convolution.
        let mut segs = std::mem::take(&mut ws.segs);
        segs.clear();
        let (first_row, last_row) = (task.p0 / o2n, (task.p1 - 1) / o2n);
        for row in first_row..=last_row {
            let (o0, o1) = (row / o1n, row % o1n);
            let (ph0, m0) = (o0 % geo.out_step[0], o0 / geo.out_step[0]);
            let (ph1, m1) = (o1 % geo.out_step[1], o1 / geo.out_step[1]);
            let a = task.p0.max(row * o2n) - row * o2n;
            let b = task.p1.min((row + 1) * o2n) - row * o2n;
            let s2 = geo.out_step[2];
            for (ph2, phase) in geo.phases[2].iter().enumerate() {
                // o2 = m2·s2 + ph2 in [a, b)
                let lo = a.saturating_sub(ph2).div_ceil(s2);
                let hi = b.saturating_sub(ph2).div_ceil(s2).min(phase.count);
                if lo < hi {
                    segs.push(Seg {
                        key: [ph0, ph1, ph2],
                        m0,
                        m1,
                        m2: lo,
                        len: hi - lo,
                        col: 0,
                        poff: 0,
                        new_run: true,
                        dest: row * o2n + lo * s2 + ph2 - task.p0,
                    });
                }
            }
        }
        segs.sort_by_key(|s| s.key);
        let mut start = 0;
        while start < segs.len() {
            let key = segs[start].key;
            let mut end = start;
            let mut cols = 0usize;
            if self.bsrc == BSource::Padded {
                // With B read from the padded input in place, a panel covers `NR` consecutive
                // columns of the padded plane: consecutive output rows whose padded offsets are
                // at most `MAX_GAP` apart share one run (the gap columns are computed and
                // discarded), other runs start at a new panel.
                let [_, d1, d2] = self.xp.dims;
                let (st0, st1) = (geo.phases[0][key[0]].in_step, geo.phases[1][key[1]].in_step);
                // Merge only where the gap wastes less than rounding each row up to `NR` does.
                let count = geo.phases[2][key[2]].count;
                let max_gap = if merge_rows_pays(count, d2) { MAX_GAP } else { 0 };
                // With many output channels, panels are rather packed from the copy (columns =
                // output positions, nothing computed twice; see `gemm_subconv`).
                let pack = self.packs_panels(&task);
                let mut prev: Option<(usize, usize)> = None; // (padded end offset, end column)
                while end < segs.len() && segs[end].key == key {
                    let sg = &mut segs[end];
                    sg.poff = ((sg.m0 * st0) * d1 + sg.m1 * st1) * d2 + sg.m2;
                    if pack {
                        sg.col = cols;
                        cols += sg.len;
                        end += 1;
                        continue;
                    }
                    match prev {
                        Some((eo, ec)) if sg.poff >= eo && sg.poff - eo <= max_gap => {
                            sg.col = ec + (sg.poff - eo);
                            sg.new_run = false;
                        }
                        _ => {
                            sg.col = cols.div_ceil(NR) * NR;
                            sg.new_run = true;
                        }
                    }
                    cols = sg.col + sg.len;
                    prev = Some((sg.poff + sg.len, cols));
                    end += 1;
                }
                cols = cols.div_ceil(NR) * NR;
            } else {
                while end < segs.len() && segs[end].key == key {
                    segs[end].col = cols;
                    cols += segs[end].len;
                    end += 1;
                }
            }
            let done = self.gemm_subconv(kern, ws, &mut task, &segs[start..end], cols);
            if done.is_err() {
                ws.segs = segs;
                return done;
            }
            start = end;
        }
        ws.segs = segs;
        Ok(())
    }

    /// Whether a padded-source task packs its panels from the copy (rather than reading runs of
    /// the padded plane in place): when it has enough output channels that one packed panel
    /// serves many micro-kernel calls (a panel costs about one masked load and store per
    /// reduction row, a call `mr` FMAs per row).
    fn packs_panels(&self, task: &GemmTask<'_>) -> bool {
        task.rows.len() >= PACK_MIN_ROWS
    }

    /// Computes one sub-convolution's columns of a task and writes them (plus bias) to the output.
    fn gemm_subconv<K: Kernel>(
        &self,
        kern: K,
        ws: &mut Workspace,
        task: &mut GemmTask<'_>,
        segs: &[Seg],
        cols: usize,
    ) -> Result<()> {
        let p = self.p;
        let geo = &self.geo;
        let key = segs[0].key;
        let ph = [&geo.phases[0][key[0]], &geo.phases[1][key[1]], &geo.phases[2][key[2]]];
        let ntaps = [ph[0].taps.len(), ph[1].taps.len(), ph[2].taps.len()];
        let nt = ntaps[0] * ntaps[1] * ntaps[2];
        let kcount = task.rows.len();
        let kgk = task.k0 + p.out_channels / p.groups * task.g; // global index of the first channel
        let bias = |kl: usize| self.bias.map_or(0.0, |b| b[kgk + kl]);
        let step2 = geo.out_step[2];
        if nt == 0 {
            // No tap reaches these outputs: bias only.
            for (kl, row) in task.rows.iter_mut().enumerate() {
                let b = bias(kl);
                for s in segs {
                    for u in 0..s.len {
                        row[s.dest + u * step2] = b;
                    }
                }
            }
            return Ok(());
        }
        let cg = geo.cg;
        let npanels = cols.div_ceil(NR);
        let mr = self.w.mr;
        let nmr = kcount.div_ceil(mr);
        let ldc = npanels * NR; // Ct is [kcount rounded up to mr][ldc]
        let ct_len = nmr * mr * ldc;
        if ws.ct.len() < ct_len {
            try_resize(&mut ws.ct, ct_len, 0.0, || "the GEMM path's output tile".into())?;
        }
        let panel_len = geo.kk * cg * mr; // one packed panel of the weight
        let wbase = (task.g * self.w.panels + task.k0 / mr) * panel_len;
        // Reduction chunks: whole taps when Cg < KC, else channel ranges of one tap.
        // Padded input rows straddle cache lines: half-size chunks keep a panel's rows in L1, unless
        // few channels per tap (short, overlapping rows: the indirect kernel) make them few.
        let kc_max = if self.bsrc == BSource::Padded && cg >= IND_MAX_SEG { KC / 2 } else { KC };
        let (taps_per_chunk, cchunks) = if cg >= kc_max { (1, cg.div_ceil(kc_max)) } else { (kc_max / cg, 1) };
        let cb = split_bounds(cg, cchunks);
        // Padded B: each panel's first input element (for tap offset 0) and each tap's offset.
        ws.panel_base.clear();
        ws.tap_off.clear();
        if self.bsrc == BSource::Padded {
            let xp = &self.xp;
            let [_, p1, p2] = xp.dims;
            if self.packs_panels(task) {
                // Columns are the task's positions: each panel's pieces (one per output row it
                // touches). A panel within one row is read in place from its first input.
                ws.pieces.clear();
                ws.piece_at.clear();
                ws.piece_at.push(0);
                for q in 0..npanels {
                    let (lo, hi) = (q * NR, (q * NR + NR).min(cols));
                    for sg in segs.iter().filter(|sg| sg.col < hi && sg.col + sg.len > lo) {
                        let a = sg.col.max(lo);
                        let b = (sg.col + sg.len).min(hi);
                        ws.pieces.push((a - lo, b - a, sg.poff + (a - sg.col)));
                    }
                    ws.piece_at.push(ws.pieces.len());
                    let first = &ws.pieces[ws.piece_at[q]];
                    ws.panel_base.push(first.2);
                }
            } else {
                // Runs of columns (see `gemm_task`): each starts at a panel boundary.
                let mut runs = segs.iter().filter(|s| s.new_run).peekable();
                while let Some(r) = runs.next() {
                    let end = runs.peek().map_or(cols, |n| n.col);
                    for u in (0..end - r.col).step_by(NR) {
                        ws.panel_base.push(r.poff + u);
                    }
                }
            }
            for t in 0..nt {
                let (t2, rest) = (t % ntaps[2], t / ntaps[2]);
                let (t1, t0) = (rest % ntaps[1], rest / ntaps[1]);
                let o0 = (ph[0].taps[t0].off - xp.lo[0]) as usize;
                let o1 = (ph[1].taps[t1].off - xp.lo[1]) as usize;
                let o2 = xp.col((ph[2].taps[t2].off - xp.lo[2]) as usize);
                ws.tap_off.push((o0 * p1 + o1) * p2 + o2);
            }
        }
        let chan_base = task.n * p.in_channels + task.g * cg;
        let mut first = true;
        let mut t0 = 0;
        while t0 < nt {
            let t1 = (t0 + taps_per_chunk).min(nt);
            for ci in 0..cchunks {
                let (c0, c1) = (cb[ci], cb[ci + 1]);
                let ncc = c1 - c0;
                let kc = (t1 - t0) * ncc;
                let mut full_panels = 0; // panels read in place from x (1×1)
                match self.bsrc {
                    BSource::Packed => {
                        let col_len = npanels * kc * NR;
                        if ws.col.len() < col_len {
                            try_resize(&mut ws.col, col_len, 0.0, || "the GEMM path's column tile".into())?;
                        }
                        let sub = SubConv { ph, ntaps, segs, cols };
                        self.gather(kern, &mut ws.col, task, sub, Chunk { taps: (t0, t1), chans: (c0, c1), kc });
                    }
                    BSource::Input => {
                        full_panels = cols / NR;
                        if ws.col.len() < npanels * kc * NR {
                            try_resize(&mut ws.col, npanels * kc * NR, 0.0, || "the GEMM path's column tile".into())?;
                        }
                        self.pack_1x1_tail(&mut ws.col, task, c0, c1, cols);
                    }
                    BSource::Padded => {}
                }
                // The chunk's reduction rows, merged where both the weight and the input rows are
                // contiguous. Input offsets are relative to the panel's first input (the same for
                // every panel), except for the copied tail panel of the 1×1 path.
                let ldb_main = match self.bsrc {
                    BSource::Padded => self.xp.plane,
                    BSource::Input => geo.in_plane,
                    BSource::Packed => NR,
                };
                let rows_of = |asegs: &mut Vec<ASeg>, ldb: usize, chan0: usize, packed: bool| {
                    asegs.clear();
                    for (ti, t) in (t0..t1).enumerate() {
                        let j = self.tap_index(ph, ntaps, t);
                        let a_off = (j * cg + c0) * mr;
                        let b_off = match self.bsrc {
                            _ if packed => ti * ncc * NR,
                            BSource::Padded => chan0 * ldb + ws.tap_off[t],
                            BSource::Input => chan0 * ldb,
                            BSource::Packed => ti * ncc * NR,
                        };
                        match asegs.last_mut() {
                            Some(last) if last.0 + last.1 * mr == a_off && last.2 + last.1 * ldb == b_off => {
                                last.1 += ncc
                            }
                            _ => asegs.push((a_off, ncc, b_off)),
                        }
                    }
                };
                let mut asegs = std::mem::take(&mut ws.asegs);
                rows_of(&mut asegs, ldb_main, chan_base + c0, self.bsrc == BSource::Packed);
                // Padded source with packed panels: the rows of a packed panel, and every row's
                // input offset (relative to a piece's first input).
                let pack = self.bsrc == BSource::Padded && self.packs_panels(task);
                let mut psegs = std::mem::take(&mut ws.psegs);
                if pack {
                    rows_of(&mut psegs, NR, 0, true);
                    if ws.col.len() < kc * NR {
                        try_resize(&mut ws.col, kc * NR, 0.0, || "the GEMM path's packed panel".into())?;
                    }
                }
                // Many short segments (few channels per tap) whose weights are contiguous: one
                // indirect call, with an offset per reduction row, instead.
                let indirect = asegs.len() > 1
                    && kc < IND_MAX_SEG * asegs.len()
                    && asegs.windows(2).all(|s| s[0].0 + s[0].1 * mr == s[1].0);
                if indirect || pack {
                    ws.boffs.clear();
                    for &(_, len, boff) in &asegs {
                        for u in 0..len {
                            ws.boffs.push(boff + u * ldb_main);
                        }
                    }
                }
                for q in 0..npanels {
                    let tail = self.bsrc == BSource::Input && q >= full_panels;
                    if tail {
                        rows_of(&mut asegs, NR, 0, true); // `col` holds the tail panel as [kc][NR]
                    }
                    // A packed-panel task packs the panels that span several output rows (or end
                    // short); a panel inside one row is read in place like any other.
                    let packed_here = pack && {
                        let pieces = &ws.pieces[ws.piece_at[q]..ws.piece_at[q + 1]];
                        !(pieces.len() == 1 && pieces[0].1 == NR)
                    };
                    if packed_here {
                        let pieces = &ws.pieces[ws.piece_at[q]..ws.piece_at[q + 1]];
                        kern.pack_panel(&mut ws.col[..kc * NR], &self.xp.data, &ws.boffs, pieces);
                    }
                    let (b, ldb): (&[f32], usize) = match self.bsrc {
                        _ if packed_here => (&ws.col[..kc * NR], NR),
                        BSource::Padded => (&self.xp.data[ws.panel_base[q]..], ldb_main),
                        BSource::Input if !tail => (&self.x[task.p0 + q * NR..], ldb_main),
                        _ => (&ws.col[q * kc * NR..(q + 1) * kc * NR], NR),
                    };
                    for i in 0..nmr {
                        let a = &self.w.data[wbase + i * panel_len..wbase + (i + 1) * panel_len];
                        let c = &mut ws.ct[i * mr * ldc + q * NR..(i + 1) * mr * ldc];
                        let out = CTile { c, ldc, accumulate: !first };
                        if packed_here {
                            kern.gemm(mr, a, &psegs, b, ldb, out);
                        } else if indirect && !tail {
                            kern.gemm_ind(mr, &a[asegs[0].0..], b, &ws.boffs, out);
                        } else {
                            kern.gemm(mr, a, &asegs, b, ldb, out);
                        }
                    }
                }
                ws.asegs = asegs;
                ws.psegs = psegs;
                first = false;
            }
            t0 = t1;
        }
        // Epilogue: Ct (+ bias) → output rows.
        for (kl, row) in task.rows.iter_mut().enumerate() {
            let b = bias(kl);
            let crow = &ws.ct[kl * ldc..(kl + 1) * ldc];
            for s in segs {
                let src = &crow[s.col..s.col + s.len];
                if step2 == 1 {
                    for (d, &v) in row[s.dest..s.dest + s.len].iter_mut().zip(src) {
                        *d = v + b;
                    }
                } else {
                    for (u, &v) in src.iter().enumerate() {
                        row[s.dest + u * step2] = v + b;
                    }
                }
            }
        }
        Ok(())
    }

    /// Flattened kernel index of tap `t` of a sub-convolution (taps ordered dim 0, 1, 2).
    #[inline]
    fn tap_index(&self, ph: [&Phase; 3], ntaps: [usize; 3], t: usize) -> usize {
        let (t2, rest) = (t % ntaps[2], t / ntaps[2]);
        let (t1, t0) = (rest % ntaps[1], rest / ntaps[1]);
        let k = self.p.kernel;
        (ph[0].taps[t0].j * k[1] + ph[1].taps[t1].j) * k[2] + ph[2].taps[t2].j
    }

    /// 1×1 direct path: copies the ragged last panel (if any) into `col` panel layout.
    fn pack_1x1_tail(&self, col: &mut [f32], task: &GemmTask<'_>, c0: usize, c1: usize, cols: usize) {
        let w = cols % NR;
        if w == 0 {
            return;
        }
        let q = cols / NR;
        let kc = c1 - c0;
        let plane = self.geo.in_plane;
        let cg = self.geo.cg;
        for (r, c) in (c0..c1).enumerate() {
            let src = (task.n * self.p.in_channels + task.g * cg + c) * plane + task.p0 + q * NR;
            let dst = &mut col[(q * kc + r) * NR..(q * kc + r + 1) * NR];
            dst[..w].copy_from_slice(&self.x[src..src + w]);
            dst[w..].fill(0.0);
        }
    }

    /// Gathers the `Col` tile of the chunk's reduction rows `(t, c)`, `t in taps`, `c in chans`
    /// (tap-major), for the column runs of `sub`, into `col` as panels `[cols/NR][kc][NR]`.
    fn gather<K: Kernel>(&self, kern: K, col: &mut [f32], task: &GemmTask<'_>, sub: SubConv<'_>, chunk: Chunk) {
        let SubConv { ph, ntaps, segs, cols } = sub;
        let Chunk { taps, chans, kc } = chunk;
        let p = self.p;
        let geo = &self.geo;
        let [l0, l1, l2] = p.in_size;
        let mode = p.pad_mode;
        let ncc = chans.1 - chans.0;
        let chan_base = task.n * p.in_channels + task.g * geo.cg;
        // Zero the lanes past the last column (their results are discarded; keep them finite).
        if !cols.is_multiple_of(NR) {
            let q = cols / NR;
            for r in 0..kc {
                col[(q * kc + r) * NR + cols % NR..(q * kc + r + 1) * NR].fill(0.0);
            }
        }
        for t in taps.0..taps.1 {
            let (t2, rest) = (t % ntaps[2], t / ntaps[2]);
            let (t1, t0) = (rest % ntaps[1], rest / ntaps[1]);
            let (tap0, tap1, tap2) = (&ph[0].taps[t0], &ph[1].taps[t1], &ph[2].taps[t2]);
            let st2 = ph[2].in_step;
            for s in segs {
                let i0 = mode.source_index((s.m0 * ph[0].in_step) as isize + tap0.off, l0);
                let i1 = mode.source_index((s.m1 * ph[1].in_step) as isize + tap1.off, l1);
                let (Some(i0), Some(i1)) = (i0, i1) else {
                    for c in 0..ncc {
                        fill_run(col, kc, (t - taps.0) * ncc + c, s.col, s.len, 0.0);
                    }
                    continue;
                };
                // Split the run into the part before, inside and after the input along dim 2.
                let (m_end, in_lo, in_hi) = (s.m2 + s.len, tap2.lo.max(s.m2), tap2.hi.min(s.m2 + s.len));
                let (in_lo, in_hi) = if in_lo < in_hi { (in_lo, in_hi) } else { (m_end, m_end) };
                for c in 0..ncc {
                    let r = (t - taps.0) * ncc + c;
                    let base = ((chan_base + chans.0 + c) * l0 + i0) * l1 + i1;
                    let xrow = &self.x[base * l2..(base + 1) * l2];
                    let edge = |m: usize| mode.source_index((m * st2) as isize + tap2.off, l2).map_or(0.0, |i| xrow[i]);
                    let mut at = s.col;
                    for m in s.m2..in_lo.min(m_end) {
                        put(col, kc, r, at, edge(m));
                        at += 1;
                    }
                    if in_lo < in_hi {
                        let first = ((in_lo * st2) as isize + tap2.off) as usize;
                        let n = in_hi - in_lo;
                        if st2 == 1 {
                            write_run(col, kc, r, at, &xrow[first..first + n]);
                        } else if st2 == 2 {
                            kern.run_s2(col, kc, r, at, &xrow[first..], n);
                        } else {
                            write_run_strided(col, kc, r, at, &xrow[first..], st2, n);
                        }
                        at += n;
                    }
                    for m in in_hi..m_end {
                        put(col, kc, r, at, edge(m));
                        at += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "gemm_tests.rs"]
mod tests;
