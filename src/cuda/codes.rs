//! The 8-bit weight codes a module keeps on a CUDA device with [`WeightStorage::Int8Codes`]:
//! the codes packed like the tensor-core weight, and a float scale and zero point per output
//! channel, checked on the host to dequantize to `get_weight()` bit for bit.
//!
//! The device formula (the `*_q8` tensor-core loaders and `qc_dequant_codes`, `cuda/conv_tc.cu`
//! and `cuda/fakequant.cu`) is `f32((f32(code) − zero[k]) · scale[k])`, two f32 operations
//! rounded to nearest. It equals the CPU dequantization (docs/numerics.md §4) whenever the scale
//! is an f32 value and `code − zero` is exact in f32, which covers every 8-bit dtype with f32
//! (or f32-exact f64) scales. Rather than reason about each qparams flavour, [`pack_codes`]
//! evaluates the device formula for every element and compares it with the fake-quantized weight;
//! any difference is an error that names the element, so what is stored always reproduces
//! `get_weight()` exactly.
//!
//! [`WeightStorage::Int8Codes`]: crate::cuda::weights::WeightStorage::Int8Codes

use crate::cuda::pack::WeightGeometry;
use crate::error::{Error, Result};
use crate::quant::{self, Plan, WeightQParams};

/// The device form of a module's weight under `WeightStorage::Int8Codes`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PackedCodes {
    /// `[K][row]`: element (output channel `k`, tap `t`, input channel `c` of the group) at
    /// `k * row + t * cg_pad + c`, zero bytes in the slots past `cg` and past the taps. int8
    /// bit patterns when `signed`.
    pub codes: Vec<u8>,
    /// Scale of each output channel.
    pub scale: Vec<f32>,
    /// Zero point of each output channel, as a float.
    pub zero: Vec<f32>,
    /// The codes are int8 (else uint8).
    pub signed: bool,
    /// Codes per output channel: `taps * cg_pad` rounded up to 8.
    pub row: usize,
    /// Input channels per group (the slots from `cg` to `cg_pad` are padding).
    pub cg: usize,
}

/// The device formula, on the host: `f32((f32(code) − zero) · scale)`.
pub(crate) fn dequant(code: i32, scale: f32, zero: f32) -> f32 {
    (code as f32 - zero) * scale
}

fn refuse(rule: String) -> Error {
    Error::config("weight_storage", "Int8Codes", rule)
}

/// A plan's quantization axis, per-channel scales and zero points (as f32) and code range.
type Channels = (Option<usize>, Vec<f32>, Vec<f32>, i64, i64);

/// The per-channel (scale, zero point) lists of `plan` with its axis and code range, or why the
/// plan has no 8-bit codes.
fn plan_channels(plan: &Plan) -> Result<Channels> {
    let f32s = |v: &[f64]| v.iter().map(|&s| s as f32).collect::<Vec<f32>>();
    Ok(match plan {
        Plan::Identity | Plan::Half => return Err(refuse(
            "the weight is not quantized to integer codes (qscheme None or dtype float16); keep WeightStorage::Float"
                .into(),
        )),
        Plan::Int { axis, scales, zero_points, qmin, qmax } => {
            (*axis, f32s(scales), zero_points.iter().map(|&z| z as f32).collect(), *qmin, *qmax)
        }
        Plan::FloatZp { axis, scales, zero_points, qmin, qmax } => {
            (Some(*axis), scales.clone(), zero_points.clone(), *qmin, *qmax)
        }
        Plan::Decomposed { axis, scales, zero_points, qmin, qmax } => {
            let s = match scales {
                quant::DecScales::F32(v) | quant::DecScales::F64(v) => f32s(v),
            };
            let z = match zero_points {
                quant::DecZeroPoints::Int(v) => v.iter().map(|&z| z as f32).collect(),
                quant::DecZeroPoints::Float(v) => v.clone(),
            };
            (*axis, s, z, *qmin, *qmax)
        }
    })
}

/// Quantizes `weight` (module layout: forward `[K, C/g, *k]`, transposed `[C, K/g, *k]`) with
/// `qparams` and packs the codes for the device as `g` says (the tensor-core layout);
/// `weight_fq` is the module's `get_weight()`.
///
/// Errors (`InvalidConfig` on `weight_storage`) when the weight has no integer codes, when the
/// codes do not fit in 8 bits (qint32, a wider quant range), when the scales vary along an axis
/// other than the output channels, or when the device formula would not reproduce `weight_fq`
/// exactly (e.g. float64 per-channel scales that are not float32 values).
pub(crate) fn pack_codes(
    transposed: bool,
    g: WeightGeometry,
    weight: &[f32],
    shape: &[usize],
    qparams: &WeightQParams,
    weight_fq: &[f32],
) -> Result<PackedCodes> {
    let plan = qparams.plan(shape)?;
    let (axis, scales, zeros, qmin, qmax) = plan_channels(&plan)?;
    let signed = if qmin >= -128 && qmax <= 127 {
        true
    } else if qmin >= 0 && qmax <= 255 {
        false
    } else {
        return Err(refuse(format!(
            "the codes range over [{qmin}, {qmax}] ({}), which does not fit in 8 bits; keep WeightStorage::Float",
            qparams.dtype
        )));
    };
    let WeightGeometry { out_channels, cg, cg_pad, taps, groups } = g;
    let kg = out_channels / groups.max(1);
    // The output channel's index along the quantization axis.
    let channel_of: Box<dyn Fn(usize) -> usize> = match (axis, transposed) {
        (None, _) => Box::new(|_| 0),
        (Some(0), false) => Box::new(|k| k),
        (Some(1), true) => Box::new(move |k| k % kg),
        (Some(a), _) => {
            return Err(refuse(format!(
                "the weight is quantized per channel along axis {a}, and 8-bit code storage keeps one scale per output channel (axis {}); keep WeightStorage::Float",
                if transposed { 1 } else { 0 }
            )))
        }
    };
    let (codes_all, _) = quant::quantize_codes_planned(&plan, shape, weight)?;
    let row = g.row();
    let len = out_channels.checked_mul(row).ok_or_else(|| Error::Overflow("the 8-bit weight codes".into()))?;
    let mut codes = crate::alloc::try_filled(len, 0u8, || "the 8-bit weight codes".into())?;
    let mut scale = Vec::with_capacity(out_channels);
    let mut zero = Vec::with_capacity(out_channels);
    for k in 0..out_channels {
        let ch = channel_of(k);
        scale.push(scales[ch]);
        zero.push(zeros[ch]);
    }
    for k in 0..out_channels {
        for c in 0..cg {
            for t in 0..taps {
                let i = g.module_index(transposed, k, c, t);
                let q = codes_all[i];
                let v = dequant(q, scale[k], zero[k]);
                if v.to_bits() != weight_fq[i].to_bits() {
                    return Err(refuse(format!(
                        "weight element {i} has code {q}, and f32((f32(code) - {}) * {}) = {v:e} differs from its fake-quantized value {:e} (the scales or zero points are not float32-exact); keep WeightStorage::Float",
                        zero[k], scale[k], weight_fq[i]
                    )));
                }
                // q lies in [qmin, qmax], inside the 8-bit range chosen above.
                codes[k * row + t * cg_pad + c] = if signed { q as i8 as u8 } else { q as u8 };
            }
        }
    }
    Ok(PackedCodes { codes, scale, zero, signed, row, cg })
}

#[cfg(all(test, feature = "cuda"))]
mod tests {
    use super::*;
    use crate::cuda::emulate::conv_tc::dequant8;
    use crate::cuda::emulate::fakequant::dequant_codes;
    use crate::quant::{QParamTensor, QuantDType, QuantizedValues, WeightQParams};
    use crate::tensor::Tensor;
    use crate::testing::Rng;
    use half::{bf16, f16};

    /// A weight in `[-0.4, 0.4)` from the crate's test generator.
    fn weight(n: usize, seed: u64) -> Vec<f32> {
        Rng::new(seed).vec(n, -0.4, 0.4)
    }

    /// Packs a random weight with `qp` (`cg_pad` channel slots per tap) and checks, for every
    /// chunk the tensor-core loaders read, that the decoded 16-bit values equal the float
    /// storage's packing of `get_weight()` (the same loop as the module's upload, zeros in the
    /// padding), and that `qc_dequant_codes` gives `get_weight()`.
    fn check(transposed: bool, c: usize, k: usize, groups: usize, taps: usize, qp: &WeightQParams) -> PackedCodes {
        check_padded(transposed, c, k, groups, c / groups, taps, qp)
    }

    fn check_padded(
        transposed: bool,
        c: usize,
        k: usize,
        groups: usize,
        cg_pad: usize,
        taps: usize,
        qp: &WeightQParams,
    ) -> PackedCodes {
        let shape = if transposed { vec![c, k / groups, taps] } else { vec![k, c / groups, taps] };
        let w = weight(shape.iter().product(), (c * 31 + k * 7 + taps) as u64);
        let wt = Tensor::from_vec(w.clone(), &shape).unwrap();
        let fq = quant::fake_quantize(&wt, qp).unwrap().to_vec_f32().unwrap();
        let geo = WeightGeometry { out_channels: k, cg: c / groups, cg_pad, taps, groups };
        let p = pack_codes(transposed, geo, &w, &shape, qp, &fq).unwrap();
        let (cg, kg) = (c / groups, k / groups);
        let row = crate::cuda::pack::tc_weight_row(cg_pad, taps);
        assert_eq!(p.cg, cg);
        assert_eq!((p.row, p.codes.len(), p.scale.len(), p.zero.len()), (row, k * row, k, k));
        // The float storage's tensor-core packing (module.rs upload), in f32.
        let mut tc = vec![0f32; k * row];
        for ko in 0..k {
            for ci in 0..cg {
                for t in 0..taps {
                    let (g, m) = (ko / kg, ko % kg);
                    let i = if transposed { ((g * cg + ci) * kg + m) * taps + t } else { (ko * cg + ci) * taps + t };
                    tc[ko * row + t * cg_pad + ci] = fq[i];
                }
            }
        }
        let rf16: fn(f32) -> u16 = |v| f16::from_f32(v).to_bits();
        let rbf16: fn(f32) -> u16 = |v| bf16::from_f32(v).to_bits();
        // The chunks a loader reads and how many of their elements hold codes: 16-byte loader
        // (cg_pad a multiple of 8): chunks within a tap, `w_cg_valid = cg` masking the padded
        // slots; element-wise loader: the row read contiguously up to cg * taps.
        let chunks: Vec<(usize, usize)> = if cg_pad.is_multiple_of(8) {
            (0..taps).flat_map(|t| (0..cg_pad / 8).map(move |j| (t * cg_pad + 8 * j, (cg - 8 * j).min(8)))).collect()
        } else {
            (0..row / 8).map(|j| (8 * j, (cg * taps - 8 * j).min(8))).collect()
        };
        for ko in 0..k {
            for (chunk, &(r, valid)) in chunks.iter().enumerate() {
                let bytes = &p.codes[ko * row + r..ko * row + r + 8];
                for round in [rf16, rbf16] {
                    let got = dequant8(bytes, p.scale[ko], p.zero[ko], valid, p.signed, round);
                    let want: Vec<u16> = (0..8).map(|e| round(tc[ko * row + r + e])).collect();
                    assert_eq!(got.to_vec(), want, "channel {ko}, chunk {chunk}");
                }
                assert!(bytes[valid..].iter().all(|&b| b == 0), "padding bytes are zero");
            }
        }
        let back = dequant_codes(&p, transposed, k, (cg, cg_pad), groups, taps);
        assert_eq!(
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            fq.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        // The stored codes are get_quantized_weight()'s.
        let QuantizedValues::Codes(codes) = quant::quantize(&wt, qp).unwrap().values else { panic!("codes") };
        for ko in 0..k {
            for ci in 0..cg {
                for t in 0..taps {
                    let (g, m) = (ko / kg, ko % kg);
                    let i = if transposed { ((g * cg + ci) * kg + m) * taps + t } else { (ko * cg + ci) * taps + t };
                    let b = p.codes[ko * row + t * cg_pad + ci];
                    assert_eq!(if p.signed { b as i8 as i32 } else { b as i32 }, codes[i]);
                }
            }
        }
        p
    }

    #[test]
    fn codes_reproduce_the_fake_quantized_weight_in_every_loader() {
        let sym = |k: usize, s: f32| {
            WeightQParams::per_channel(
                (0..k).map(|i| s * (1.0 + i as f32 / 7.0)).collect(),
                vec![0; k],
                0,
                QuantDType::QInt8,
            )
        };
        // Forward, per channel (signed), every chunk full.
        assert!(check(false, 16, 8, 1, 9, &sym(8, 0.003)).signed);
        // Groups and C/groups = 3: 27 codes per row, 5 padding bytes, a partial last chunk.
        check(false, 6, 4, 2, 9, &sym(4, 0.004));
        // Unsigned codes per tensor (zero point 128), 1-d taps.
        let p = check(false, 8, 16, 1, 5, &WeightQParams::per_tensor(0.0035, 128, QuantDType::QUInt8));
        assert!(!p.signed && p.scale.iter().all(|&s| s == 0.0035) && p.zero.iter().all(|&z| z == 128.0));
        // Transposed, per channel along axis 1 (output channels), 2 groups.
        let kg = 6;
        let qp = WeightQParams::per_channel(
            (0..kg).map(|i| 0.002 + i as f32 * 1e-4).collect(),
            vec![0, 1, -2, 3, 0, 5],
            1,
            QuantDType::QInt8,
        );
        check(true, 8, 12, 2, 4, &qp);
        // Transposed per tensor.
        check(true, 8, 12, 1, 9, &WeightQParams::per_tensor(0.004, -3, QuantDType::QInt8));
        // quint4x2, float zero points, the decomposed path with a narrow range.
        check(
            false,
            8,
            8,
            1,
            9,
            &WeightQParams::per_channel_float(vec![0.06; 8], vec![7.5; 8], 0, QuantDType::QUInt4x2),
        );
        check(
            false,
            8,
            4,
            1,
            9,
            &WeightQParams::per_channel_float(
                vec![0.004, 0.003, 0.005, 0.0041],
                vec![127.5, 100.25, 128.0, 90.0],
                0,
                QuantDType::QUInt8,
            ),
        );
        let dec = WeightQParams::per_channel(vec![0.05; 8], vec![1; 8], 0, QuantDType::QInt8)
            .with_quant_range(-8, 7)
            .decomposed(true);
        check(false, 16, 8, 1, 9, &dec);
        // Input channels padded for the 16-byte loader: a 3-channel stem (8 slots) and 2 groups
        // of 12 (16 slots), with unsigned codes whose zero point is not 0 (padding must still
        // load as +0).
        let stem = check_padded(false, 3, 16, 1, 8, 49, &WeightQParams::per_tensor(0.004, 120, QuantDType::QUInt8));
        assert_eq!((stem.row, stem.cg), (392, 3));
        check_padded(false, 24, 32, 2, 16, 9, &sym(32, 0.002));
    }

    #[test]
    fn unsupported_qparams_are_refused_with_the_rule() {
        let shape = [8usize, 16, 9];
        let w = weight(8 * 16 * 9, 5);
        let wt = Tensor::from_vec(w.clone(), &shape).unwrap();
        let try_pack = |qp: WeightQParams| {
            let fq = quant::fake_quantize(&wt, &qp).unwrap().to_vec_f32().unwrap();
            let geo = WeightGeometry { out_channels: 8, cg: 16, cg_pad: 16, taps: 9, groups: 1 };
            pack_codes(false, geo, &w, &shape, &qp, &fq).unwrap_err().to_string()
        };
        let e = try_pack(WeightQParams::per_tensor(0.001, 0, QuantDType::QInt32));
        assert!(e.contains("weight_storage") && e.contains("does not fit in 8 bits"), "{e}");
        let e = try_pack(WeightQParams::float16());
        assert!(e.contains("not quantized to integer codes"), "{e}");
        let e = try_pack(WeightQParams::none());
        assert!(e.contains("not quantized to integer codes"), "{e}");
        let e = try_pack(WeightQParams::per_channel(vec![0.01; 16], vec![0; 16], 1, QuantDType::QInt8));
        assert!(e.contains("axis 1") && e.contains("(axis 0)"), "{e}");
        // Decomposed, float64 per-channel scales that are not float32 values.
        let mut qp = WeightQParams::per_channel(vec![0.01; 8], vec![0; 8], 0, QuantDType::QInt8).decomposed(true);
        qp.scale = QParamTensor::from_f64((0..8).map(|i| 0.003 + i as f64 * 1e-9 + 1e-12).collect());
        let e = try_pack(qp);
        assert!(e.contains("float32-exact"), "{e}");
    }
}
