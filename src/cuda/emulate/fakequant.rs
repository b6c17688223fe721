//! `cuda/fakequant.cu`, transcribed: `qc_fq_elem` + `qc_channel` per mode ([`kernel_elem`]), the
//! integer modes' f32 fast path ([`kernel_elem_fast`]), the vector walk of `qc_fakequant_fast`
//! ([`emulate_fast_walk`]) and `qc_dequant_codes` ([`dequant_codes`]); the tests compare them with
//! the CPU fake-quant bit for bit, the fast path with the general one at the edges, and the golden
//! vectors of docs/numerics.md.

use half::f16;

use crate::cuda::codes::PackedCodes;
use crate::cuda::ops::fakequant::{
    fakequant_args, fakequant_fast_ok, fakequant_launch, FakeQuantArgs, FAKEQUANT_CHUNK,
};
use crate::cuda::ops::params::{
    QC_FQ_DECOMPOSED_F32, QC_FQ_DECOMPOSED_F64, QC_FQ_FLOAT_ZP, QC_FQ_HALF, QC_FQ_IDENTITY, QC_FQ_INT_PER_CHANNEL,
    QC_FQ_INT_PER_TENSOR,
};

fn clamp_f64_to_i64(v: f64, lo: i64, hi: i64) -> i64 {
    if v <= lo as f64 {
        lo
    } else if v >= hi as f64 {
        hi
    } else {
        v as i64
    }
}

fn quant_int(x: f32, inv: f32, zp: i64, lo: i64, hi: i64, nan_code: i64) -> i64 {
    let t = x * inv;
    if t.is_nan() {
        return nan_code;
    }
    clamp_f64_to_i64((zp as f32 + t.round_ties_even()) as f64, lo, hi)
}

fn dec_to_int(v: f64, lo: i64, hi: i64) -> i64 {
    if v.is_nan() {
        return if lo == i32::MIN as i64 { lo } else { 0 };
    }
    (v as i64).clamp(lo, hi)
}

/// `qc_fq_elem` + `qc_channel` for element `i`: (code, dequantized value).
pub fn kernel_elem(a: &FakeQuantArgs, i: u64, x: f32) -> (i64, f32) {
    let p = &a.params;
    let (lo, hi) = (p.qmin, p.qmax);
    match p.mode as u32 {
        QC_FQ_HALF => return (0, f16::from_f32(x).to_f32()),
        QC_FQ_IDENTITY => return (0, x),
        _ => {}
    }
    let c = ((i / p.inner) % p.channels) as usize;
    let s64 = a.scales[c];
    let sf = s64 as f32;
    match p.mode as u32 {
        QC_FQ_INT_PER_TENSOR => {
            let inv = 1.0f32 / sf;
            let zi = a.zero_points_i64[c];
            let nan = if lo == i32::MIN as i64 {
                lo
            } else {
                (2_147_483_520u32.wrapping_add(zi as i32 as u32) as i32 as i64).clamp(lo, hi)
            };
            let q = quant_int(x, inv, zi, lo, hi, nan);
            (q, sf * ((q - zi) as f32))
        }
        QC_FQ_INT_PER_CHANNEL => {
            let inv = 1.0f32 / sf;
            let zi = a.zero_points_i64[c];
            let nan = if lo == i32::MIN as i64 { lo } else { 0 };
            let q = quant_int(x, inv, zi, lo, hi, nan);
            (q, (((q as f32) - zi as f32) as f64 * s64) as f32)
        }
        QC_FQ_FLOAT_ZP => {
            let inv = if sf == 0.0 { 1.0 } else { 1.0f32 / sf };
            let zf = a.zero_points_f32[c];
            let v = x * inv + zf;
            let q = if v.is_nan() { 0i64.clamp(lo, hi) } else { clamp_f64_to_i64(v.round_ties_even() as f64, lo, hi) };
            (q, ((q as f32) - zf) * sf)
        }
        QC_FQ_DECOMPOSED_F32 | QC_FQ_DECOMPOSED_F64 => {
            let (zi, zf) = if p.zp_is_float != 0 {
                (0, a.zero_points_f32[c])
            } else {
                (a.zero_points_i64[c], a.zero_points_i64[c] as f32)
            };
            if p.mode as u32 == QC_FQ_DECOMPOSED_F32 {
                let inv = if p.per_channel != 0 { 1.0f32 / sf } else { (1.0f64 / s64) as f32 };
                let mut v = (x * inv).round_ties_even() + zf;
                if !v.is_nan() {
                    v = v.clamp(lo as f32, hi as f32);
                }
                let q = dec_to_int(v as f64, lo, hi);
                let w = if p.zp_is_float != 0 || p.per_channel == 0 {
                    ((q as f32) - zf) * sf
                } else {
                    ((q - zi) as f32) * sf
                };
                (q, w)
            } else {
                let inv = 1.0f64 / s64;
                let mut v = (x as f64 * inv).round_ties_even() + zf as f64;
                if !v.is_nan() {
                    v = v.clamp(lo as f64, hi as f64);
                }
                let q = dec_to_int(v, lo, hi);
                let diff = if p.zp_is_float != 0 { ((q as f32) - zf) as f64 } else { (q - zi) as f64 };
                (q, (diff * s64) as f32)
            }
        }
        m => panic!("mode {m}"),
    }
}

/// `qc_fq_fast` (the f32 path of the integer modes) for element `i`, or `None` where the
/// kernel takes the general path.
pub fn kernel_elem_fast(a: &FakeQuantArgs, i: u64, x: f32) -> Option<(i64, f32)> {
    let p = &a.params;
    let mode = p.mode as u32;
    if mode != QC_FQ_INT_PER_TENSOR && mode != QC_FQ_INT_PER_CHANNEL {
        return None;
    }
    let c = ((i / p.inner) % p.channels) as usize;
    let s64 = a.scales[c];
    let sf = s64 as f32;
    let zi = a.zero_points_i64[c];
    let lim = 1i64 << 23;
    if p.qmin < -lim || p.qmax > lim || zi < -lim || zi > lim || sf as f64 != s64 {
        return None;
    }
    let (lo, hi) = (p.qmin, p.qmax);
    let nan = if mode == QC_FQ_INT_PER_TENSOR {
        if lo == i32::MIN as i64 {
            lo
        } else {
            (2_147_483_520u32.wrapping_add(zi as i32 as u32) as i32 as i64).clamp(lo, hi)
        }
    } else if lo == i32::MIN as i64 {
        lo
    } else {
        0
    };
    let (lo_f, hi_f, zf) = (lo as f32, hi as f32, zi as f32);
    let t = x * (1.0f32 / sf);
    let qf = if t.is_nan() {
        nan as f32
    } else {
        let v = zf + t.round_ties_even();
        if v <= lo_f {
            lo_f
        } else if v >= hi_f {
            hi_f
        } else {
            v
        }
    };
    // Per tensor s * (q - zp), per channel (q - zp) * s: the same product either way.
    let w = (qf - zf) * sf;
    Some((qf as i64, w))
}

/// The vector walk of `qc_fq_fast_entry` (cuda/fakequant.cu), transcribed: every block,
/// thread and step, with the channel tracked by addition. Returns how often each vector was
/// visited and whether the tracked (channel, position) was right at every visit.
pub fn emulate_fast_walk(items: u32, inner4: u32, channels: u32, grid: u32, bd: u32) -> (Vec<u32>, bool) {
    let mut seen = vec![0u32; items as usize];
    let mut right = true;
    let chunk = FAKEQUANT_CHUNK as u32 * bd;
    let one_wrap = inner4 >= bd;
    for block in 0..grid {
        for tid in 0..bd {
            let mut base = block * chunk;
            while base < items {
                let end = if items - base > chunk { base + chunk } else { items };
                let mut v = base + tid;
                if v < end {
                    let mut q = v / inner4;
                    let mut rem = v - q * inner4;
                    let mut c = q % channels;
                    'outer: while v < end {
                        for u in 0..4 {
                            let vu = v + u * bd;
                            if vu >= end {
                                break 'outer;
                            }
                            seen[vu as usize] += 1;
                            right &= c == (vu / inner4) % channels && rem == vu % inner4;
                            if one_wrap {
                                rem += bd;
                                if rem >= inner4 {
                                    rem -= inner4;
                                    c = if c + 1 == channels { 0 } else { c + 1 };
                                }
                            } else {
                                let nv = vu + bd;
                                q = nv / inner4;
                                rem = nv - q * inner4;
                                c = q % channels;
                            }
                        }
                        v += 4 * bd;
                    }
                }
                base += grid * chunk;
            }
        }
    }
    (seen, right)
}

/// `qc_dequant_codes` of cuda/fakequant.cu for the module layouts, transcribed.
pub fn dequant_codes(
    p: &PackedCodes,
    transposed: bool,
    k: usize,
    (cg, cg_pad): (usize, usize),
    groups: usize,
    taps: usize,
) -> Vec<f32> {
    let kg = k / groups;
    let mut out = vec![0f32; k * cg * taps];
    for (i, o) in out.iter_mut().enumerate() {
        let t = i % taps;
        let rest = i / taps;
        let (kk, c) = if transposed {
            let (m, ic) = (rest % kg, rest / kg);
            ((ic / cg) * kg + m, ic % cg)
        } else {
            (rest / cg, rest % cg)
        };
        let b = p.codes[kk * p.row + t * cg_pad + c];
        let code = if p.signed { b as i8 as i32 } else { b as i32 };
        *o = (code as f32 - p.zero[kk]) * p.scale[kk];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{self, QParamData, QParamTensor, QuantDType, QuantizedValues, WeightQParams};
    use crate::tensor::Tensor;
    use crate::testing::Rng;

    /// Weights with ties: exact (k + 1/2)·s for the scales used, their neighbours, and noise.
    fn tricky_weights(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| match i % 4 {
                0 => (rng.range(0, 300) as f32 - 150.0 + 0.5) * scale,
                1 => f32::from_bits(((rng.range(0, 300) as f32 - 150.0 + 0.5) * scale).to_bits() + 1),
                2 => rng.uniform(-1.0, 1.0) * 3.0,
                _ => rng.uniform(-1.0, 1.0) * 1e3,
            })
            .collect()
    }

    fn check_fakequant(qp: &WeightQParams, shape: &[usize], w: &[f32]) {
        let args = fakequant_args(qp, shape).unwrap();
        assert!(fakequant_launch(&args.params).unwrap().is_some());
        let t = Tensor::from_vec(w.to_vec(), shape).unwrap();
        let cpu = quant::fake_quantize(&t, qp).unwrap();
        let cpu = cpu.as_slice::<f32>().unwrap();
        let codes = match quant::quantize(&t, qp).map(|q| q.values) {
            Ok(QuantizedValues::Codes(c)) => Some(c),
            _ => None,
        };
        for (i, &x) in w.iter().enumerate() {
            let (q, v) = kernel_elem(&args, i as u64, x);
            assert_eq!(v.to_bits(), cpu[i].to_bits(), "{qp:?} element {i} = {x:e}: kernel {v:e} vs cpu {:e}", cpu[i]);
            if let Some((qf, vf)) = kernel_elem_fast(&args, i as u64, x) {
                assert_eq!(vf.to_bits(), v.to_bits(), "{qp:?} element {i} = {x:e}: fast path {vf:e} vs {v:e}");
                assert_eq!(qf, q, "{qp:?} element {i} = {x:e}: fast path code");
            }
            if let Some(c) = &codes {
                assert_eq!(q as i32, c[i], "{qp:?} element {i}: code");
            }
        }
    }

    #[test]
    fn fakequant_transcription_matches_the_cpu_bit_for_bit() {
        let mut rng = Rng::new(0x1234_5678_9abc_def1);
        let shape = [4, 3, 5];
        for dtype in [QuantDType::QUInt8, QuantDType::QInt8, QuantDType::QInt32] {
            let (lo, hi) = dtype.range().unwrap();
            for &scale in &[f32::from_bits(0x3b0cceaa), 0.02, 1.0, 0.1, 3.7e-5] {
                let w = tricky_weights(&mut rng, 60, scale);
                let zp = if lo == 0 { 128.min(hi) } else { -3 };
                check_fakequant(&WeightQParams::per_tensor(scale, zp, dtype), &shape, &w);
                check_fakequant(&WeightQParams::per_tensor(scale, zp, dtype).decomposed(true), &shape, &w);
                // A float64 per-tensor scale: f32(scale) normally, f32(1.0 / scale) decomposed.
                let mut pt64 = WeightQParams::per_tensor(scale, zp, dtype);
                pt64.scale = QParamTensor { shape: vec![], data: QParamData::F64(vec![scale as f64 * (1.0 + 1e-9)]) };
                check_fakequant(&pt64, &shape, &w);
                check_fakequant(&pt64.clone().decomposed(true), &shape, &w);
                for axis in 0..3 {
                    let ch = shape[axis];
                    let scales: Vec<f32> = (0..ch).map(|c| scale * (1.0 + c as f32 * 0.37)).collect();
                    let zps: Vec<i64> = (0..ch).map(|c| (lo + 3 * c as i64).min(hi)).collect();
                    let pc = WeightQParams::per_channel(scales.clone(), zps.clone(), axis, dtype);
                    check_fakequant(&pc, &shape, &w);
                    check_fakequant(&pc.clone().decomposed(true), &shape, &w);
                    check_fakequant(&pc.clone().decomposed(true).with_quant_range(lo + 1, hi - 1), &shape, &w);
                    // float64 scales: per-channel dequant in f64 (§4.2), decomposed f64 arithmetic.
                    let mut pc64 = pc.clone();
                    pc64.scale = QParamTensor::from_f64(scales.iter().map(|&s| s as f64 * (1.0 + 1e-12)).collect());
                    check_fakequant(&pc64, &shape, &w);
                    check_fakequant(&pc64.clone().decomposed(true), &shape, &w);
                    if dtype != QuantDType::QInt32 {
                        let fzp: Vec<f32> = (0..ch).map(|c| c as f32 * 1.25 + 0.5).collect();
                        let pf = WeightQParams::per_channel_float(scales.clone(), fzp, axis, dtype);
                        check_fakequant(&pf, &shape, &w);
                        check_fakequant(&pf.clone().decomposed(true), &shape, &w);
                    }
                }
            }
        }
        // quint4x2 (float zero points only), float16, identity.
        let w = tricky_weights(&mut rng, 60, 0.1);
        check_fakequant(
            &WeightQParams::per_channel_float(vec![0.1; 4], vec![0.5; 4], 0, QuantDType::QUInt4x2),
            &shape,
            &w,
        );
        check_fakequant(&WeightQParams::float16(), &shape, &w);
        check_fakequant(&WeightQParams::none(), &shape, &w);
    }

    #[test]
    fn fakequant_fast_path_equals_the_general_path_at_the_edges() {
        let xs = [
            0.0f32,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            -f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            0.5,
            -0.5,
            2.5,
            127.5,
            -128.5,
            1e10,
        ];
        let scales = [0.0f32, 1e-45, f32::MIN_POSITIVE, 1e-3, 0.5, 1.0, 3e38];
        let mut seen_fast = 0;
        for dtype in [QuantDType::QInt8, QuantDType::QUInt8, QuantDType::QInt32] {
            let (lo, hi) = dtype.range().unwrap();
            for &s in &scales {
                for zp in [lo, 0.max(lo), hi, (lo + hi) / 2] {
                    let qps = [
                        WeightQParams::per_tensor(s, zp, dtype),
                        WeightQParams::per_channel(vec![s, s * 0.75], vec![zp, zp], 0, dtype),
                    ];
                    for qp in qps {
                        let a = fakequant_args(&qp, &[2, 1]).unwrap();
                        for &x in &xs {
                            for i in 0..2u64 {
                                if let Some((qf, vf)) = kernel_elem_fast(&a, i, x) {
                                    seen_fast += 1;
                                    let (q, v) = kernel_elem(&a, i, x);
                                    assert_eq!((qf, vf.to_bits()), (q, v.to_bits()), "{qp:?} x = {x:e}");
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(seen_fast > 1000, "{seen_fast}");
    }

    #[test]
    fn fakequant_fast_entry_walk_and_selection() {
        // (items = numel/4, inner/4, channels, outer repeats): per channel along axis 0 (short
        // and long runs), along an inner axis (several outer repeats), per tensor; grids smaller
        // than the work and block sizes on both sides of inner/4.
        for (items, inner4, channels, outer) in
            [(2048u32 * 9, 9u32, 2048u32, 1u32), (4 * 36 * 8, 36, 8, 4), (5000, 5000, 1, 1), (3 * 300 * 10, 300, 3, 10)]
        {
            assert_eq!(items, inner4 * channels * outer);
            for (grid, bd) in [(3u32, 256u32), (1, 64), (40, 32), (7, 1024)] {
                let (seen, right) = emulate_fast_walk(items, inner4, channels, grid, bd);
                assert!(seen.iter().all(|&n| n == 1), "{items} {inner4} {channels}: every vector once");
                assert!(right, "{items} {inner4} {channels} grid {grid} block {bd}: tracked channel");
            }
        }
        // Selection: the integer modes with f32-exact scales only.
        let w = Tensor::from_vec(vec![0.5f32; 8 * 4 * 3 * 3], &[8, 4, 3, 3]).unwrap();
        let pc = WeightQParams::per_channel(vec![0.01; 8], vec![0; 8], 0, QuantDType::QInt8);
        assert!(fakequant_fast_ok(&fakequant_args(&pc, w.shape()).unwrap()));
        let pt = WeightQParams::per_tensor(0.02, 128, QuantDType::QUInt8);
        assert!(fakequant_fast_ok(&fakequant_args(&pt, w.shape()).unwrap()));
        assert!(!fakequant_fast_ok(&fakequant_args(&pt, &[7, 5, 3]).unwrap()), "numel % 4");
        let mut f64s = pc.clone();
        f64s.scale = QParamTensor::from_f64(vec![0.1; 8]); // 0.1 is not a float32
        assert!(!fakequant_fast_ok(&fakequant_args(&f64s, w.shape()).unwrap()));
        let q32 = WeightQParams::per_tensor(0.01, 0, QuantDType::QInt32);
        assert!(!fakequant_fast_ok(&fakequant_args(&q32, w.shape()).unwrap()), "qint32 range");
        let fzp = WeightQParams::per_channel_float(vec![0.01; 8], vec![1.5; 8], 0, QuantDType::QUInt8);
        assert!(!fakequant_fast_ok(&fakequant_args(&fzp, w.shape()).unwrap()), "float zero points");
        let inner3 = WeightQParams::per_channel(vec![0.01; 3], vec![0; 3], 2, QuantDType::QInt8);
        assert!(!fakequant_fast_ok(&fakequant_args(&inner3, w.shape()).unwrap()), "inner 3");
    }

    #[test]
    #[allow(clippy::excessive_precision)] // the golden values as docs/numerics.md prints them
    fn fakequant_golden_vectors_of_semantics_md() {
        // §10b: reciprocal vs division, quint8 → 128.
        let x = f32::from_bits(0x3e8c41db);
        let qp = WeightQParams::per_tensor(f32::from_bits(0x3b0cceaa), 0, QuantDType::QUInt8);
        let a = fakequant_args(&qp, &[1]).unwrap();
        assert_eq!(kernel_elem(&a, 0, x), (128, f32::from_bits(0x3e8cceaa)));
        // Ties, integer zp 1: [0.5,1.5,2.5,-0.5,-1.5] → [1,3,3,1,0].
        let a = fakequant_args(&WeightQParams::per_tensor(1.0, 1, QuantDType::QUInt8), &[5]).unwrap();
        let q: Vec<i64> =
            [0.5f32, 1.5, 2.5, -0.5, -1.5].iter().enumerate().map(|(i, &x)| kernel_elem(&a, i as u64, x).0).collect();
        assert_eq!(q, [1, 3, 3, 1, 0]);
        // Two roundings with a float zero point: 136, not the FMA's 137.
        let qp = WeightQParams::per_channel_float(
            vec![f32::from_bits(0x3b526ae8)],
            vec![f32::from_bits(0x426c548a)],
            0,
            QuantDType::QUInt8,
        );
        let a = fakequant_args(&qp, &[1]).unwrap();
        assert_eq!(kernel_elem(&a, 0, f32::from_bits(0x3e7e87fb)), (136, 0.24696020781993866));
        // Scale 0 per tensor: NaN code for x = 0, signed zeros.
        check_fakequant(&WeightQParams::per_tensor(0.0, 3, QuantDType::QUInt8), &[4], &[0.0, 1.0, -1.0, 0.5]);
        check_fakequant(&WeightQParams::per_tensor(0.0, 3, QuantDType::QInt32), &[4], &[0.0, 1.0, -1.0, 0.5]);
        check_fakequant(
            &WeightQParams::per_channel(vec![0.0, 1.0], vec![1, 0], 0, QuantDType::QInt8),
            &[2, 2],
            &[0.0, 1.0, -1.0, 0.5],
        );
        // qint32 float add above 2^24.
        let a = fakequant_args(&WeightQParams::per_tensor(1.0, 3, QuantDType::QInt32), &[1]).unwrap();
        assert_eq!(kernel_elem(&a, 0, 16777216.0).0, 16777220);
    }
}
