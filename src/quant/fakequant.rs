//! The fake-quant rule, bit-identical to PyTorch CPU (x86, FBGEMM build) for finite weights.
//!
//! Every formula is spelled out in docs/numerics.md §4; the comments name the section. Rust never
//! contracts `a * b + c` into an FMA, so each `f32` expression below rounds exactly where PyTorch's
//! does.
//!
//! Deliberate differences (documented in the README), all outside PyTorch's well-defined domain:
//! * values whose scaled magnitude reaches 2^31 saturate to the dtype's bound (PyTorch's AVX2 path
//!   wraps around in int32 and its float-zero-point path truncates `lrintf`'s 64-bit result);
//! * qint32 codes are computed without int32 overflow in `q − zero_point`.

use std::mem::MaybeUninit;

use half::f16;
use rayon::prelude::*;

use crate::alloc::{try_collect, try_filled, try_to_vec, try_with_capacity};

use super::params::{DecScales, DecZeroPoints, Plan};
use crate::error::{Error, Result};

/// Elements per parallel task; below this the work runs on the calling thread.
const PAR_GRAIN: usize = 1 << 15;

/// Integer code and dequantized value of one element.
type Elem = (i32, f32);

/// Rejects NaN and ±inf weights (they have no meaningful quantized value).
pub(crate) fn check_finite(w: &[f32]) -> Result<()> {
    // Fast scan first; find the index only on failure.
    if !any_nonfinite(w) {
        return Ok(());
    }
    let (index, &value) = w.iter().enumerate().find(|(_, x)| !x.is_finite()).expect("a non-finite element exists");
    Err(Error::NonFiniteWeight { index, value })
}

/// Whether `w` holds a NaN or an infinity: a branch-free fold over the magnitude bits (as `i32`,
/// which vectorises even without SSE4.1), run with AVX2 where the CPU has it.
fn any_nonfinite(w: &[f32]) -> bool {
    #[inline(always)]
    fn fold(w: &[f32]) -> bool {
        w.iter().fold(0u32, |acc, x| acc | u32::from((x.to_bits() & 0x7fff_ffff) as i32 > 0x7f7f_ffff)) != 0
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn fold_avx2(w: &[f32]) -> bool {
            fold(w)
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above); the function is otherwise safe.
            return unsafe { fold_avx2(w) };
        }
    }
    fold(w)
}

#[inline(always)]
fn clamp_f64_to_i64(v: f64, lo: i64, hi: i64) -> i64 {
    // `clamp<double, T>`: saturating; `v` is never NaN here.
    if v <= lo as f64 {
        lo
    } else if v >= hi as f64 {
        hi
    } else {
        v as i64
    }
}

/// §4.1/§4.2 quantize: `t = f32(x·inv)`, `r = rne(t)`, `q = clamp(f32(zp) + r)`.
/// `nan_code` is what PyTorch's x86 path produces for a NaN `t` (only possible when the
/// reciprocal of the scale is infinite and the weight is zero).
#[inline(always)]
fn quant_int(x: f32, inv: f32, zp: i64, qmin: i64, qmax: i64, nan_code: i64) -> i64 {
    let t = x * inv;
    if t.is_nan() {
        return nan_code;
    }
    let v = zp as f32 + t.round_ties_even();
    clamp_f64_to_i64(v as f64, qmin, qmax)
}

/// Code of a NaN `t` per tensor (AVX2 for 8-bit types: `min_ps` maps NaN to 2147483520, then an
/// int32 add of the zero point and a clamp; scalar for qint32: INT_MIN).
fn nan_code_per_tensor(zp: i64, qmin: i64, qmax: i64) -> i64 {
    if qmin == i32::MIN as i64 {
        return qmin;
    }
    (2_147_483_520i32.wrapping_add(zp as i32) as i64).clamp(qmin, qmax)
}

/// Code of a NaN `t` per channel (scalar path: the integer cast of NaN gives 0 for 8-bit types,
/// INT_MIN for qint32).
fn nan_code_per_channel(qmin: i64) -> i64 {
    if qmin == i32::MIN as i64 {
        qmin
    } else {
        0
    }
}

/// Calls `f(channel, run)` for each maximal run of consecutive elements that share a channel, in
/// parallel for large tensors. `out` is split the same way as the input.
fn for_each_run<T: Send>(
    shape: &[usize],
    axis: Option<usize>,
    w: &[f32],
    out: &mut [T],
    f: impl Fn(usize, &[f32], &mut [T]) + Sync,
) {
    if w.is_empty() {
        return;
    }
    // `w` is not empty, so the inner size (a factor of its length) fits.
    let (channels, inner) = match axis {
        Some(a) => (shape[a], shape[a + 1..].iter().product::<usize>()),
        None => (1, w.len()),
    };
    if channels == 0 || inner == 0 {
        return;
    }
    let run = |(i, (wc, oc)): (usize, (&[f32], &mut [T]))| f(i % channels, wc, oc);
    if w.len() >= PAR_GRAIN && crate::parallel::available() {
        if inner >= PAR_GRAIN || axis.is_none() {
            // Long runs: split each run into chunks (same channel inside a run).
            let chunk = if axis.is_none() { PAR_GRAIN } else { inner };
            w.par_chunks(chunk).zip(out.par_chunks_mut(chunk)).enumerate().for_each(|(i, (wc, oc))| {
                let c = if axis.is_none() { 0 } else { i % channels };
                f(c, wc, oc)
            });
        } else {
            w.par_chunks(inner).zip(out.par_chunks_mut(inner)).enumerate().for_each(run);
        }
    } else {
        w.chunks(inner).zip(out.chunks_mut(inner)).enumerate().for_each(run);
    }
}

/// Runs `plan` over the weight and returns the integer code and dequantized value of every element.
///
/// `Plan::Identity` and `Plan::Half` have no integer codes; callers handle them first.
fn quantize_elems(plan: &Plan, shape: &[usize], w: &[f32]) -> Result<Vec<Elem>> {
    let mut out = try_filled(w.len(), (0i32, 0f32), || "the quantized weight".into())?;
    match plan {
        Plan::Identity | Plan::Half => unreachable!("float plans have no integer codes"),
        Plan::Int { axis: None, scales, zero_points, qmin, qmax } => {
            // §4.1: s = f32(scale), inv = f32(1/s), dequant f32(s · f32(q − zp)).
            let s = scales[0] as f32;
            let inv = 1.0f32 / s;
            let zp = zero_points[0];
            let (lo, hi) = (*qmin, *qmax);
            let nan = nan_code_per_tensor(zp, lo, hi);
            for_each_run(shape, None, w, &mut out, |_, wc, oc| {
                for (x, o) in wc.iter().zip(oc.iter_mut()) {
                    let q = quant_int(*x, inv, zp, lo, hi, nan);
                    *o = (q as i32, s * ((q - zp) as f32));
                }
            });
        }
        Plan::Int { axis: Some(axis), scales, zero_points, qmin, qmax } => {
            // §4.2: quantize with f32(scale_c); dequant f32(f64(f32(q) − f32(zp)) · scale_c as f64).
            let (lo, hi) = (*qmin, *qmax);
            let nan = nan_code_per_channel(lo);
            for_each_run(shape, Some(*axis), w, &mut out, |c, wc, oc| {
                let s64 = scales[c];
                let inv = 1.0f32 / (s64 as f32);
                let zp = zero_points[c];
                let zpf = zp as f32;
                for (x, o) in wc.iter().zip(oc.iter_mut()) {
                    let q = quant_int(*x, inv, zp, lo, hi, nan);
                    *o = (q as i32, (((q as f32) - zpf) as f64 * s64) as f32);
                }
            });
        }
        Plan::FloatZp { axis, scales, zero_points, qmin, qmax } => {
            // §4.3: inv = (s == 0) ? 1 : f32(1/s); q = clamp(lrintf(f32(f32(x·inv) + zp)));
            // dequant f32(f32(f32(q) − zp) · s).
            let (lo, hi) = (*qmin, *qmax);
            for_each_run(shape, Some(*axis), w, &mut out, |c, wc, oc| {
                let s = scales[c];
                let zp = zero_points[c];
                let inv = if s == 0.0 { 1.0f32 } else { 1.0f32 / s };
                for (x, o) in wc.iter().zip(oc.iter_mut()) {
                    let v = *x * inv + zp;
                    let q = if v.is_nan() { 0i64.clamp(lo, hi) } else { (v.round_ties_even() as i64).clamp(lo, hi) };
                    *o = (q as i32, ((q as f32) - zp) * s);
                }
            });
        }
        Plan::Decomposed { axis, scales, zero_points, qmin, qmax } => {
            decomposed(shape, w, &mut out, *axis, scales, zero_points, *qmin, *qmax)
        }
    }
    Ok(out)
}

/// Converts a clamped float to the integer dtype like `.to(int_dtype)`: truncation toward zero;
/// NaN gives 0 (8-bit) or INT_MIN (int32) as on x86.
#[inline(always)]
fn dec_to_int(v: f64, qmin: i64, qmax: i64) -> i64 {
    if v.is_nan() {
        return nan_code_per_channel(qmin);
    }
    // `v` is already clamped to [qmin, qmax] in float; the clamp here only absorbs the float
    // rounding of the int32 bounds (f32(2^31 − 1) = 2^31), where PyTorch's cast overflows.
    (v.trunc() as i64).clamp(qmin, qmax)
}

/// §4.5: the `quantized_decomposed` quantize/dequantize pair.
#[allow(clippy::too_many_arguments)]
fn decomposed(
    shape: &[usize],
    w: &[f32],
    out: &mut [Elem],
    axis: Option<usize>,
    scales: &DecScales,
    zero_points: &DecZeroPoints,
    qmin: i64,
    qmax: i64,
) {
    let zp_int = |c: usize| match zero_points {
        DecZeroPoints::Int(z) => z[c],
        DecZeroPoints::Float(_) => 0,
    };
    let zp_f32 = |c: usize| match zero_points {
        DecZeroPoints::Int(z) => z[c] as f32,
        DecZeroPoints::Float(z) => z[c],
    };
    let float_zp = matches!(zero_points, DecZeroPoints::Float(_));
    match scales {
        DecScales::F32(s) => {
            // float32 arithmetic: per tensor `inv = f32(1.0 / scale.item())` (f64 division), per
            // channel `1.0 / scales` on a float32 tensor; both equal f32(1/s) for f32 scales.
            let (lo, hi) = (qmin as f32, qmax as f32);
            for_each_run(shape, axis, w, out, |c, wc, oc| {
                let c = if axis.is_none() { 0 } else { c };
                let inv = if axis.is_none() { (1.0 / s[c]) as f32 } else { 1.0f32 / (s[c] as f32) };
                let sf = s[c] as f32;
                let zf = zp_f32(c);
                let zi = zp_int(c);
                for (x, o) in wc.iter().zip(oc.iter_mut()) {
                    let v = (*x * inv).round_ties_even() + zf;
                    let v = if v.is_nan() { v } else { v.clamp(lo, hi) };
                    let q = dec_to_int(v as f64, qmin, qmax);
                    let deq = if float_zp || axis.is_none() {
                        // per tensor: (f32(q) − z) · f32(s); float zp: f32(q) − zp in f32.
                        ((q as f32) - zf) * sf
                    } else {
                        // per channel, int zp: int64 subtract, then f32 multiply.
                        ((q - zi) as f32) * sf
                    };
                    *o = (q as i32, deq);
                }
            });
        }
        DecScales::F64(s) => {
            // float64 per-channel scales promote the arithmetic to float64.
            let (lo, hi) = (qmin as f64, qmax as f64);
            for_each_run(shape, axis, w, out, |c, wc, oc| {
                let inv = 1.0f64 / s[c];
                let zf = zp_f32(c);
                let zi = zp_int(c);
                for (x, o) in wc.iter().zip(oc.iter_mut()) {
                    let v = (*x as f64 * inv).round_ties_even() + zf as f64;
                    let v = if v.is_nan() { v } else { v.clamp(lo, hi) };
                    let q = dec_to_int(v, qmin, qmax);
                    let diff = if float_zp { ((q as f32) - zf) as f64 } else { (q - zi) as f64 };
                    *o = (q as i32, (diff * s[c]) as f32);
                }
            });
        }
    }
}

/// `get_weight()`: the fake-quantized weight (quantize, then dequantize).
pub(crate) fn fake_quantize(plan: &Plan, shape: &[usize], w: &[f32]) -> Result<Vec<f32>> {
    let what = || "the fake-quantized weight".to_string();
    match plan {
        Plan::Identity => try_to_vec(w, what),
        Plan::Half => {
            check_finite(w)?;
            try_collect(w.iter().map(|&x| f16::from_f32(x).to_f32()), what)
        }
        _ => {
            if let Some(fast) = FastPlan::new(plan, shape) {
                let mut fq = try_with_capacity(w.len(), what)?;
                // The finite check runs inside the (parallel) pass, on data already in cache.
                let nonfinite = fast.run(w, &mut fq.spare_capacity_mut()[..w.len()], None);
                // SAFETY: `run` wrote every one of the first `w.len()` elements.
                unsafe { fq.set_len(w.len()) };
                if nonfinite {
                    check_finite(w)?;
                }
                return Ok(fq);
            }
            check_finite(w)?;
            try_collect(quantize_elems(plan, shape, w)?.into_iter().map(|(_, v)| v), what)
        }
    }
}

/// The quantize half: integer codes (one per element) and the dequantized weight.
pub(crate) fn quantize_codes(plan: &Plan, shape: &[usize], w: &[f32]) -> Result<(Vec<i32>, Vec<f32>)> {
    if let Some(fast) = FastPlan::new(plan, shape) {
        let n = w.len();
        let fq_what = || "the fake-quantized weight".to_string();
        let (mut fq, mut codes) =
            (try_with_capacity(n, fq_what)?, try_with_capacity(n, || "the quantized weight's codes".to_string())?);
        let nonfinite = fast.run(w, &mut fq.spare_capacity_mut()[..n], Some(&mut codes.spare_capacity_mut()[..n]));
        // SAFETY: `run` wrote every one of the first `n` elements of both buffers.
        unsafe {
            fq.set_len(n);
            codes.set_len(n);
        }
        if nonfinite {
            check_finite(w)?;
        }
        return Ok((codes, fq));
    }
    check_finite(w)?;
    let elems = quantize_elems(plan, shape, w)?;
    let mut codes = try_with_capacity(elems.len(), || "the quantized weight's codes".to_string())?;
    let mut fq = try_with_capacity(elems.len(), || "the fake-quantized weight".to_string())?;
    for (c, v) in elems {
        codes.push(c);
        fq.push(v);
    }
    Ok((codes, fq))
}

// ---- the f32 fast path ---------------------------------------------------------------------------
//
// For every plan whose codes and zero points are small integers (all dtypes but qint32) and whose
// dequantization multiply rounds like an f32 multiply (f32 scales; an f64 scale that is exactly an
// f32 gives the same result, since the f64 product of two f32 values is exact), the formulas above
// can be evaluated entirely in f32 with the same roundings: `q − zp` is exact, the clamp bounds are
// exact, and codes are exact integers in f32. That form vectorises (8 lanes with AVX2, where
// `round_ties_even` is one `vroundps`), so the fast path is bit-identical to the general one and
// several times faster. The general path above remains for qint32 and non-f32 scales.

/// Which element formula the fast path runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FastMode {
    /// §4.1/§4.2: `q = clamp(zp + rne(x·inv))`, NaN → `nan`; `ŵ = (q − zp)·s`.
    IntZp,
    /// §4.3: `q = clamp(rne(x·inv + zp))`, NaN → `nan`; `ŵ = (q − zp)·s`.
    FloatZp,
    /// §4.5 in f32: `q = trunc(clamp(rne(x·inv) + zp))`, NaN → `nan`; `ŵ = (q − zp)·s`.
    Decomposed,
}

/// Per-channel constants of the fast path.
#[derive(Clone, Copy, Debug)]
struct Lane {
    inv: f32,
    zp: f32,
    s: f32,
    lo: f32,
    hi: f32,
    nan: f32,
}

struct FastPlan {
    mode: FastMode,
    lanes: Vec<Lane>,
    /// Elements per channel run (the product of the dims after the axis); `None` per tensor.
    inner: Option<usize>,
    /// For short runs (e.g. axis 1 of a transposed weight, runs of k·k elements), the constants
    /// expanded over one repeating row of `channels · inner` elements, so that the loop runs over
    /// whole rows with per-element constants instead of paying a setup per tiny run.
    row: Option<Row>,
}

/// Per-element `inv`, `zp`, `s` over one row (structure of arrays, so loads vectorise); the
/// clamp bounds and the NaN code are the same for every channel.
struct Row {
    inv: Vec<f32>,
    zp: Vec<f32>,
    s: Vec<f32>,
}

/// Runs shorter than this use the expanded row.
const SHORT_RUN: usize = 8;
/// Largest expanded row.
const MAX_ROW: usize = 1 << 16;

fn f32_exact(v: f64) -> bool {
    (v as f32) as f64 == v
}

impl FastPlan {
    fn new(plan: &Plan, shape: &[usize]) -> Option<FastPlan> {
        let small = |lo: i64, hi: i64| lo >= -(1 << 24) && hi <= (1 << 24);
        let inner = |axis: Option<usize>| axis.map(|a| shape[a + 1..].iter().product::<usize>());
        match plan {
            Plan::Int { axis, scales, zero_points, qmin, qmax } if small(*qmin, *qmax) => {
                let (lo, hi) = (*qmin as f32, *qmax as f32);
                let lanes = scales
                    .iter()
                    .zip(zero_points)
                    .map(|(&s64, &zp)| {
                        let s = s64 as f32;
                        let nan = match axis {
                            None => nan_code_per_tensor(zp, *qmin, *qmax),
                            Some(_) => nan_code_per_channel(*qmin),
                        };
                        Lane { inv: 1.0 / s, zp: zp as f32, s, lo, hi, nan: nan as f32 }
                    })
                    .collect();
                // Per channel the dequant multiply is in f64: identical only for f32-exact scales.
                if axis.is_some() && !scales.iter().all(|&s| f32_exact(s)) {
                    return None;
                }
                Some(FastPlan { mode: FastMode::IntZp, lanes, inner: inner(*axis), row: None }.with_row())
            }
            Plan::FloatZp { axis, scales, zero_points, qmin, qmax } if small(*qmin, *qmax) => {
                let (lo, hi) = (*qmin as f32, *qmax as f32);
                let nan = 0f32.max(lo).min(hi);
                let lanes = scales
                    .iter()
                    .zip(zero_points)
                    .map(|(&s, &zp)| Lane { inv: if s == 0.0 { 1.0 } else { 1.0 / s }, zp, s, lo, hi, nan })
                    .collect();
                Some(FastPlan { mode: FastMode::FloatZp, lanes, inner: inner(Some(*axis)), row: None }.with_row())
            }
            Plan::Decomposed { axis, scales: DecScales::F32(s), zero_points, qmin, qmax } if small(*qmin, *qmax) => {
                let (lo, hi) = (*qmin as f32, *qmax as f32);
                let nan = nan_code_per_channel(*qmin) as f32;
                let lanes = (0..s.len())
                    .map(|c| {
                        let zp = match zero_points {
                            DecZeroPoints::Int(z) => z[c] as f32,
                            DecZeroPoints::Float(z) => z[c],
                        };
                        // Per tensor `inv = f32(1.0 / scale.item())`; per channel `1.0 / scales` in f32.
                        let inv = if axis.is_none() { (1.0 / s[c]) as f32 } else { 1.0 / (s[c] as f32) };
                        Lane { inv, zp, s: s[c] as f32, lo, hi, nan }
                    })
                    .collect();
                Some(FastPlan { mode: FastMode::Decomposed, lanes, inner: inner(*axis), row: None }.with_row())
            }
            _ => None,
        }
    }

    /// Builds the expanded row when the channel runs are short.
    fn with_row(mut self) -> Self {
        if let Some(inner) = self.inner {
            let len = inner * self.lanes.len();
            // `len > 0`: a weight with no channel along the axis (zero-size) has no row to expand
            // (fuzzer finding: an empty row divided by zero when sizing the work chunks).
            if inner > 0 && inner < SHORT_RUN && len > 0 && len <= MAX_ROW {
                let expand = |f: fn(&Lane) -> f32| -> Vec<f32> {
                    self.lanes.iter().flat_map(|l| std::iter::repeat_n(f(l), inner)).collect()
                };
                self.row = Some(Row { inv: expand(|l| l.inv), zp: expand(|l| l.zp), s: expand(|l| l.s) });
            }
        }
        self
    }

    /// Fills every element of `fq` (and `codes`) for the whole weight, in parallel for large
    /// weights. Returns whether `w` holds a NaN or an infinity (then the outputs are meaningless:
    /// the caller reports the error).
    fn run(&self, w: &[f32], fq: &mut [MaybeUninit<f32>], codes: Option<&mut [MaybeUninit<i32>]>) -> bool {
        let n = w.len();
        let (run_len, chunk) = match (self.inner, &self.row) {
            (None, _) => (PAR_GRAIN, PAR_GRAIN),
            (Some(0), _) => return false,
            (Some(_), Some(row)) => (row.inv.len(), row.inv.len() * (PAR_GRAIN / row.inv.len()).max(1)),
            (Some(inner), None) => (inner, inner * (PAR_GRAIN / inner).max(1)),
        };
        let runs_per_chunk = chunk / run_len;
        let nonfinite = std::sync::atomic::AtomicBool::new(false);
        let body = |k: usize, wc: &[f32], fc: &mut [MaybeUninit<f32>], cc: Option<&mut [MaybeUninit<i32>]>| {
            if any_nonfinite(wc) {
                nonfinite.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            chunk_dispatch(self, k * runs_per_chunk, run_len, wc, fc, cc)
        };
        let parallel = n >= 2 * PAR_GRAIN && crate::parallel::available();
        match codes {
            Some(codes) if parallel => w
                .par_chunks(chunk)
                .zip(fq.par_chunks_mut(chunk))
                .zip(codes.par_chunks_mut(chunk))
                .enumerate()
                .for_each(|(k, ((wc, fc), cc))| body(k, wc, fc, Some(cc))),
            None if parallel => w
                .par_chunks(chunk)
                .zip(fq.par_chunks_mut(chunk))
                .enumerate()
                .for_each(|(k, (wc, fc))| body(k, wc, fc, None)),
            Some(codes) => w
                .chunks(chunk)
                .zip(fq.chunks_mut(chunk))
                .zip(codes.chunks_mut(chunk))
                .enumerate()
                .for_each(|(k, ((wc, fc), cc))| body(k, wc, fc, Some(cc))),
            None => {
                w.chunks(chunk).zip(fq.chunks_mut(chunk)).enumerate().for_each(|(k, (wc, fc))| body(k, wc, fc, None))
            }
        }
        nonfinite.into_inner()
    }
}

/// Processes one chunk: consecutive runs of `run_len` elements starting at run `first_run`.
#[inline(always)]
fn chunk_generic(
    p: &FastPlan,
    first_run: usize,
    run_len: usize,
    w: &[f32],
    fq: &mut [MaybeUninit<f32>],
    mut codes: Option<&mut [MaybeUninit<i32>]>,
) {
    if let Some(row) = &p.row {
        // Chunks start on row boundaries, so element `j` of a row uses the constants at `j`.
        let base = p.lanes[0];
        for (k, wr) in w.chunks(run_len).enumerate() {
            let off = k * run_len;
            let fr = &mut fq[off..off + wr.len()];
            let (inv, zp, s) = (&row.inv[..wr.len()], &row.zp[..wr.len()], &row.s[..wr.len()]);
            // One loop per mode (the mode is loop-invariant), so each loop vectorises.
            macro_rules! rows {
                ($mode:expr) => {{
                    // Zipped iterators (no indexing) so the loop has no bounds checks.
                    let consts = inv.iter().zip(zp).zip(s).map(|((&inv, &zp), &s)| Lane { inv, zp, s, ..base });
                    match codes.as_deref_mut() {
                        None => {
                            for ((o, &x), l) in fr.iter_mut().zip(wr).zip(consts) {
                                o.write(fast_elem($mode, &l, x).1);
                            }
                        }
                        Some(c) => {
                            let cr = &mut c[off..off + wr.len()];
                            for (((o, c), &x), l) in fr.iter_mut().zip(cr.iter_mut()).zip(wr).zip(consts) {
                                let (q, d) = fast_elem($mode, &l, x);
                                o.write(d);
                                c.write(q as i32);
                            }
                        }
                    }
                }};
            }
            match p.mode {
                FastMode::IntZp => rows!(FastMode::IntZp),
                FastMode::FloatZp => rows!(FastMode::FloatZp),
                FastMode::Decomposed => rows!(FastMode::Decomposed),
            }
        }
        return;
    }
    let channels = p.lanes.len();
    let mut off = 0;
    let mut run = first_run;
    while off < w.len() {
        let len = run_len.min(w.len() - off);
        let lane = p.lanes[if p.inner.is_some() { run % channels } else { 0 }];
        let (wr, fr) = (&w[off..off + len], &mut fq[off..off + len]);
        match codes.as_deref_mut() {
            None => {
                for (o, &x) in fr.iter_mut().zip(wr) {
                    o.write(fast_elem(p.mode, &lane, x).1);
                }
            }
            Some(c) => {
                for ((o, c), &x) in fr.iter_mut().zip(c[off..off + len].iter_mut()).zip(wr) {
                    let (q, d) = fast_elem(p.mode, &lane, x);
                    o.write(d);
                    c.write(q as i32);
                }
            }
        }
        off += len;
        run += 1;
    }
}

/// The same chunk loop compiled for AVX2 (`round_ties_even` becomes `vroundps`; Rust never
/// contracts `a * b + c` into an FMA, so the roundings are unchanged).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn chunk_avx2(
    p: &FastPlan,
    first_run: usize,
    run_len: usize,
    w: &[f32],
    fq: &mut [MaybeUninit<f32>],
    codes: Option<&mut [MaybeUninit<i32>]>,
) {
    chunk_generic(p, first_run, run_len, w, fq, codes)
}

fn chunk_dispatch(
    p: &FastPlan,
    first_run: usize,
    run_len: usize,
    w: &[f32],
    fq: &mut [MaybeUninit<f32>],
    codes: Option<&mut [MaybeUninit<i32>]>,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above); the function is otherwise safe.
            return unsafe { chunk_avx2(p, first_run, run_len, w, fq, codes) };
        }
    }
    chunk_generic(p, first_run, run_len, w, fq, codes)
}

/// One element of the fast path: (code, dequantized value), both in f32.
#[inline(always)]
fn fast_elem(mode: FastMode, l: &Lane, x: f32) -> (f32, f32) {
    let q = match mode {
        FastMode::IntZp => {
            let t = x * l.inv;
            if t.is_nan() {
                l.nan
            } else {
                (l.zp + t.round_ties_even()).max(l.lo).min(l.hi)
            }
        }
        FastMode::FloatZp => {
            let v = x * l.inv + l.zp;
            if v.is_nan() {
                l.nan
            } else {
                v.round_ties_even().max(l.lo).min(l.hi)
            }
        }
        FastMode::Decomposed => {
            let v = (x * l.inv).round_ties_even() + l.zp;
            if v.is_nan() {
                l.nan
            } else {
                v.max(l.lo).min(l.hi).trunc()
            }
        }
    };
    (q, (q - l.zp) * l.s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{QuantDType, WeightQParams};

    /// The finite check runs inside the fast path's (parallel) pass: a NaN or an infinity anywhere,
    /// in a serial or a parallel-sized weight, per tensor or per channel, is still reported with
    /// the index of the first one, by both the fake-quant and the quantize half.
    #[test]
    fn non_finite_found_in_every_chunk() {
        for (n, ch) in [(12usize, 3usize), (4 * PAR_GRAIN + 36, 4), (3 * PAR_GRAIN, 3 * PAR_GRAIN / 9)] {
            let base: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin()).collect();
            let shape = [ch, n / ch];
            let plans = [
                WeightQParams::per_channel(vec![0.01; ch], vec![0; ch], 0, QuantDType::QInt8),
                WeightQParams::per_tensor(0.01, 128, QuantDType::QUInt8),
            ];
            for plan in plans.iter().map(|q| q.plan(&shape).unwrap()) {
                assert!(FastPlan::new(&plan, &shape).is_some(), "the fast path takes this plan");
                assert!(fake_quantize(&plan, &shape, &base).is_ok());
                for (at, bad) in [(0, f32::NAN), (n / 2 + 1, f32::INFINITY), (n - 1, f32::NEG_INFINITY)] {
                    let mut w = base.clone();
                    w[at] = bad;
                    if at > 0 {
                        w[n - 1] = if at == n - 1 { bad } else { f32::NAN }; // a later one too
                    }
                    let first = if at > 0 && at != n - 1 { at } else { at.min(n - 1) };
                    for r in
                        [fake_quantize(&plan, &shape, &w).map(|_| ()), quantize_codes(&plan, &shape, &w).map(|_| ())]
                    {
                        match r {
                            Err(Error::NonFiniteWeight { index, .. }) => assert_eq!(index, first, "n {n}"),
                            other => panic!("n {n}, bad at {at}: {other:?}"),
                        }
                    }
                }
            }
        }
    }

    /// The fast path must agree bit for bit with the general path on every plan it accepts,
    /// including ties, saturation, zero and negative scales, and tiny scales (NaN codes).
    #[test]
    fn fast_path_matches_general_path() {
        let mut w: Vec<f32> = vec![0.0, -0.0, 0.5, 1.5, 2.5, -0.5, -2.5, 1e30, -1e30, 127.5, -128.5, 255.5, 1e-40];
        w.extend((0..4095).map(|i| ((i as f32) * 0.7311).sin() * 3.0));
        let n = w.len();
        assert_eq!(n, 4108);
        // Short channel runs (the expanded-row path) and long ones (per-run constants).
        for shape in [[1027, 4], [316, 13], [4, 1027]] {
            check_fast_path(&w, shape, shape == [316, 13]);
        }
    }

    fn check_fast_path(w: &[f32], shape: [usize; 2], with_axis1: bool) {
        let n = w.len();
        let ch = shape[0];
        let scales = |k: f32| (0..ch).map(|c| k * (1.0 + c as f32 * 0.01)).collect::<Vec<f32>>();
        let mut plans = vec![
            WeightQParams::per_tensor(0.01, 100, QuantDType::QUInt8),
            WeightQParams::per_tensor(0.0, 200, QuantDType::QUInt8),
            WeightQParams::per_tensor(1e-45, 130, QuantDType::QUInt8),
            WeightQParams::per_tensor(-0.5, 3, QuantDType::QInt8),
            WeightQParams::per_tensor(1.0, 0, QuantDType::QInt8),
            WeightQParams::per_channel(scales(0.02), vec![0; ch], 0, QuantDType::QInt8),
            WeightQParams::per_channel(scales(0.0), vec![7; ch], 0, QuantDType::QUInt8),
            WeightQParams::per_channel_float(scales(0.03), vec![1.5; ch], 0, QuantDType::QUInt8),
            WeightQParams::per_channel_float(scales(0.3), vec![0.5; ch], 0, QuantDType::QUInt4x2),
            WeightQParams::per_channel_float(scales(0.0), vec![1.0; ch], 0, QuantDType::QUInt8),
            WeightQParams::per_tensor(0.01, 0, QuantDType::QInt8).decomposed(true).with_quant_range(-127, 127),
            WeightQParams::per_channel(scales(0.02), vec![128; ch], 0, QuantDType::QUInt8).decomposed(true),
            WeightQParams::per_channel_float(scales(0.02), vec![0.75; ch], 0, QuantDType::QUInt8).decomposed(true),
        ];
        if with_axis1 {
            let axis1 = WeightQParams::per_channel(
                (0..13).map(|c| 0.05 + c as f32 * 0.001).collect(),
                vec![1; 13],
                1,
                QuantDType::QInt8,
            );
            plans.push(axis1);
        }
        for qp in plans {
            let plan = qp.plan(&shape).unwrap();
            let (codes, fq) = quantize_codes(&plan, &shape, w).unwrap();
            let fq_only = fake_quantize(&plan, &shape, w).unwrap();
            let (gc, gf): (Vec<i32>, Vec<f32>) = quantize_elems(&plan, &shape, w).unwrap().into_iter().unzip();
            assert!(FastPlan::new(&plan, &shape).is_some(), "{qp:?} has a fast path");
            for i in 0..n {
                assert_eq!(codes[i], gc[i], "{qp:?} code [{i}] x={}", w[i]);
                assert_eq!(fq[i].to_bits(), gf[i].to_bits(), "{qp:?} value [{i}] x={}", w[i]);
                assert_eq!(fq_only[i].to_bits(), gf[i].to_bits());
            }
        }
    }

    #[test]
    fn general_path_is_kept_for_qint32_and_f64_scales() {
        let plan = WeightQParams::per_tensor(0.1, 0, QuantDType::QInt32).plan(&[4]).unwrap();
        assert!(FastPlan::new(&plan, &[4]).is_none());
        let mut qp = WeightQParams::per_channel(vec![0.1, 0.2], vec![0, 0], 0, QuantDType::QInt8);
        qp.scale = crate::quant::QParamTensor::from_f64(vec![0.1, 0.08656351797648074]);
        assert!(FastPlan::new(&qp.plan(&[2, 3]).unwrap(), &[2, 3]).is_none());
    }
}
