//! The GEMM path's plan of one call: the padded channels-last copy of the input, and each
//! sub-convolution (a forward convolution is one; a transposed one is one per stride phase, see
//! `cpu/geometry.rs`) as an implicit GEMM `C[positions][channels] = A · B` with no im2col copy.
//!
//! * **The copy** ([`PadLayout`]): `[n][d0][d1][d2][groups][cgp]` u8, `cgp = ceil(Cg/4)·4`,
//!   covering every input index any tap reads (`lo..lo + dims` per dimension). Padded pixels
//!   hold the activation zero point `x_zp` (so every tap of every position reads a code and the
//!   zero-point correction is a per-channel constant), reflect/replicate/circular pixels the
//!   remapped codes; the channel lanes past `Cg` hold unspecified bytes (their weights are zero,
//!   and the row sums skip them). Slack bytes follow, so that a kernel may read whole 16-row
//!   tiles and 64-byte units past the last position.
//! * **Positions** ([`MRun`]): runs of positions whose activation rows are a constant `lda =
//!   in_step2 · pixel` bytes apart. With a unit dim-1 input step (stride 1, and every transposed
//!   phase), a run covers a whole `(n, m0)` slab flattened over `(m1, m2)`: the copy's row pitch
//!   is a multiple of the dim-2 input step, position `m1·wv + m2` starts `wv·in_step2` pixels per
//!   row further, and the `wv − count2` *virtual* columns at the end of each row are computed and
//!   discarded (3×3 on 28×28: 30 of 28) in exchange for long runs. Otherwise each output row is
//!   a run.
//! * **Reduction** ([`KPlan`]): one run per tap (relative to a position's base pixel, weights at
//!   the tap's place in the packed panel), merged with the next where both the activations and
//!   the weights continue contiguously (the `kw` taps of a row of a dense forward convolution:
//!   `kw·Cg` bytes). A sub-convolution with more than `MAX_EXACT_K` real terms is cut into
//!   chunks of at most `MAX_CHUNK_K` whose raw sums the GEMM path adds in i64.

use super::kernels::{KPlan, KRun, MAX_CHUNK_K, MAX_EXACT_K};
use super::packed::PackedInt8Weight;
use crate::cpu::geometry::{checked_product, Geometry};
use crate::cpu::padded::padded_extent;
use crate::error::Result;
use crate::problem::ConvProblem;

/// Bytes after the copy beyond 32 position rows (a 64-byte unit may start at a run's last byte).
pub(super) const SLACK: usize = 128;

/// The padded channels-last copy's layout.
#[derive(Clone, Debug)]
pub(super) struct PadLayout {
    pub(super) lo: [isize; 3],
    /// Padded extent per dimension; `dims[2]` is the row pitch in pixels.
    pub(super) dims: [usize; 3],
    /// Channel lanes per group (`Cg` rounded up to 4).
    pub(super) cgp: usize,
    /// Bytes per pixel (`groups · cgp`).
    pub(super) ps: usize,
    /// Bytes of the copy including [`SLACK`].
    pub(super) len: usize,
}

/// A run of output positions of one sub-convolution.
#[derive(Clone, Copy, Debug)]
pub(super) struct MRun {
    pub(super) n: usize,
    pub(super) m0: usize,
    /// First dim-1 column of the run.
    pub(super) m1: usize,
    /// Byte offset (in the copy) of position 0's base pixel, before the group's lanes.
    pub(super) a0: usize,
    pub(super) npos: usize,
}

/// One sub-convolution of the GEMM path.
#[derive(Clone, Debug)]
pub(super) struct SubConv {
    /// Phase index per dimension.
    pub(super) key: [usize; 3],
    /// Columns per dimension.
    pub(super) count: [usize; 3],
    pub(super) runs: Vec<MRun>,
    /// Positions per row of a run (`count[2]` plus the virtual columns).
    pub(super) wv: usize,
    /// Bytes between consecutive positions.
    pub(super) lda: usize,
    /// The reduction, as one plan (exact in i32) or several chunks (summed in i64).
    pub(super) chunks: Vec<KPlan>,
    /// Every tap's activation offset (for the row sums of non-zero weight zero points).
    pub(super) tap_a: Vec<usize>,
    /// Every tap's flat kernel index (for the zero-point correction).
    pub(super) taps: Vec<usize>,
}

impl SubConv {
    /// Whether the raw sums need i64 (more than `MAX_EXACT_K` real terms).
    pub(super) fn wide(&self) -> bool {
        self.chunks.len() > 1
    }
}

/// The dim-2 input step between consecutive positions of a row: the stride, or 1 when every
/// row has at most one output (the step then separates nothing, and a huge stride would only
/// widen every padded row to a multiple of it).
fn step2(geo: &Geometry) -> usize {
    let ph2 = &geo.phases[2];
    if ph2.iter().all(|ph| ph.count <= 1) {
        1
    } else {
        ph2.first().map_or(1, |ph| ph.in_step).max(1)
    }
}

/// The layout of the padded copy for `p` (validated geometry `geo`).
pub(super) fn pad_layout(p: &ConvProblem, geo: &Geometry) -> Result<PadLayout> {
    let (lo, mut dims) = padded_extent(geo).unwrap_or(([0; 3], [1; 3]));
    for d in dims.iter_mut() {
        *d = (*d).max(1);
    }
    // Flattened runs need a row pitch that is a multiple of the dim-2 input step, and rows wide
    // enough for every phase's positions (`wv = dims[2] / step2 >= count2`): a phase without taps
    // (a transposed stride phase that no kernel tap reaches) reads nothing, so the extent above
    // does not cover its outputs, yet its positions still map to pixels through `wv`.
    let step2 = step2(geo);
    let count2 = geo.phases[2].iter().map(|ph| ph.count).max().unwrap_or(1);
    dims[2] = dims[2].max(checked_product(&[count2, step2], "padded row")?);
    dims[2] = dims[2].div_ceil(step2) * step2;
    let cgp = geo.cg.div_ceil(4) * 4;
    let ps = checked_product(&[p.groups, cgp], "padded pixel")?;
    let image = checked_product(&[dims[0], dims[1], dims[2], ps], "padded input")?;
    // Slack for whole 32-row blocks past the last position (AMX tiles) and a unit's overrun.
    let slack = checked_product(&[32, step2, ps], "padded input")?.saturating_add(SLACK);
    let len = checked_product(&[p.batch, image], "padded input")?
        .checked_add(slack)
        .ok_or_else(|| crate::error::Error::Overflow("padded input".into()))?;
    Ok(PadLayout { lo, dims, cgp, ps, len })
}

/// The sub-convolutions of `p` over the copy `lay`, for the weight `w`.
pub(super) fn sub_convs(p: &ConvProblem, geo: &Geometry, lay: &PadLayout, w: &PackedInt8Weight) -> Vec<SubConv> {
    let [d0, d1, d2] = lay.dims;
    let ps = lay.ps;
    let unit = w.unit;
    let units = w.cu / unit;
    let k = p.kernel;
    let mut out = Vec::new();
    for (p0, ph0) in geo.phases[0].iter().enumerate() {
        for (p1, ph1) in geo.phases[1].iter().enumerate() {
            for (p2, ph2) in geo.phases[2].iter().enumerate() {
                let count = [ph0.count, ph1.count, ph2.count];
                if count.contains(&0) {
                    continue;
                }
                let mut runs_k: Vec<KRun> = Vec::new();
                let (mut tap_a, mut taps) = (Vec::new(), Vec::new());
                for t0 in &ph0.taps {
                    for t1 in &ph1.taps {
                        for t2 in &ph2.taps {
                            let v = [t0.off - lay.lo[0], t1.off - lay.lo[1], t2.off - lay.lo[2]];
                            let a = ((v[0] as usize * d1 + v[1] as usize) * d2 + v[2] as usize) * ps;
                            let j = (t0.j * k[1] + t1.j) * k[2] + t2.j;
                            let b = j * w.cu * 16;
                            tap_a.push(a);
                            taps.push(j);
                            match runs_k.last_mut() {
                                Some(r) if r.a + r.units * unit == a && r.b + r.units * unit * 16 == b => {
                                    r.units += units
                                }
                                _ => runs_k.push(KRun { a, b, units }),
                            }
                        }
                    }
                }
                let (s0, s1, s2) = (ph0.in_step, ph1.in_step, step2(geo));
                let flat = s1 == 1;
                let wv = if flat { d2 / s2 } else { count[2] };
                let mut runs = Vec::new();
                for n in 0..p.batch {
                    for m0 in 0..count[0] {
                        let slab = (n * d0 + m0 * s0) * d1;
                        if flat {
                            let npos = (count[1] - 1) * wv + count[2];
                            runs.push(MRun { n, m0, m1: 0, a0: slab * d2 * ps, npos });
                        } else {
                            for m1 in 0..count[1] {
                                let a0 = (slab + m1 * s1) * d2 * ps;
                                runs.push(MRun { n, m0, m1, a0, npos: count[2] });
                            }
                        }
                    }
                }
                let real_k = taps.len() * geo.cg;
                let chunks = if real_k <= MAX_EXACT_K { vec![KPlan::new(unit, runs_k)] } else { chunk(unit, &runs_k) };
                out.push(SubConv { key: [p0, p1, p2], count, runs, wv, lda: s2 * ps, chunks, tap_a, taps });
            }
        }
    }
    out
}

/// Cuts `runs` into plans of at most `MAX_CHUNK_K` reduction bytes each (splitting long runs
/// at unit boundaries), so that no raw sum of a chunk leaves i32.
fn chunk(unit: usize, runs: &[KRun]) -> Vec<KPlan> {
    let per = MAX_CHUNK_K / unit;
    let mut plans = Vec::new();
    let (mut cur, mut used) = (Vec::new(), 0usize);
    for r in runs {
        let mut r = *r;
        while r.units > 0 {
            if used == per {
                plans.push(KPlan::new(unit, std::mem::take(&mut cur)));
                used = 0;
            }
            let take = r.units.min(per - used);
            cur.push(KRun { a: r.a, b: r.b, units: take });
            used += take;
            r = KRun { a: r.a + take * unit, b: r.b + take * unit * 16, units: r.units - take };
        }
    }
    if !cur.is_empty() {
        plans.push(KPlan::new(unit, cur));
    }
    plans
}
