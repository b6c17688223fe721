//! The fake-quant rule, bit-identical to PyTorch CPU (x86, FBGEMM build) for finite weights.
//!
//! Every formula is spelled out in SEMANTICS.md §4; the comments name the section. Rust never
//! contracts `a * b + c` into an FMA, so each `f32` expression below rounds exactly where PyTorch's
//! does.
//!
//! Deliberate differences (documented in the README), all outside PyTorch's well-defined domain:
//! * values whose scaled magnitude reaches 2^31 saturate to the dtype's bound (PyTorch's AVX2 path
//!   wraps around in int32 and its float-zero-point path truncates `lrintf`'s 64-bit result);
//! * qint32 codes are computed without int32 overflow in `q − zero_point`.

use half::f16;
use rayon::prelude::*;

use super::params::{DecScales, DecZeroPoints, Plan};
use crate::error::{Error, Result};

/// Elements per parallel task; below this the work runs on the calling thread.
const PAR_GRAIN: usize = 1 << 15;

/// Integer code and dequantized value of one element.
type Elem = (i32, f32);

/// Rejects NaN and ±inf weights (they have no meaningful quantized value).
pub(crate) fn check_finite(w: &[f32]) -> Result<()> {
    // Fast scan first; find the index only on failure.
    if w.iter().all(|x| x.is_finite()) {
        return Ok(());
    }
    let (index, &value) = w.iter().enumerate().find(|(_, x)| !x.is_finite()).expect("a non-finite element exists");
    Err(Error::NonFiniteWeight { index, value })
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
    let (channels, inner) = match axis {
        Some(a) => (shape[a], shape[a + 1..].iter().product::<usize>()),
        None => (1, w.len()),
    };
    if channels == 0 || inner == 0 || w.is_empty() {
        return;
    }
    let run = |(i, (wc, oc)): (usize, (&[f32], &mut [T]))| f(i % channels, wc, oc);
    if w.len() >= PAR_GRAIN {
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
fn quantize_elems(plan: &Plan, shape: &[usize], w: &[f32]) -> Vec<Elem> {
    let mut out = vec![(0i32, 0f32); w.len()];
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
    out
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
    match plan {
        Plan::Identity => Ok(w.to_vec()),
        Plan::Half => {
            check_finite(w)?;
            Ok(w.iter().map(|&x| f16::from_f32(x).to_f32()).collect())
        }
        _ => {
            check_finite(w)?;
            Ok(quantize_elems(plan, shape, w).into_iter().map(|(_, v)| v).collect())
        }
    }
}

/// The quantize half: integer codes (one per element) and the dequantized weight, or `None` codes
/// for float plans.
pub(crate) fn quantize_codes(plan: &Plan, shape: &[usize], w: &[f32]) -> Result<(Vec<i32>, Vec<f32>)> {
    check_finite(w)?;
    let elems = quantize_elems(plan, shape, w);
    Ok(elems.into_iter().unzip())
}
