//! Tests of the requantization: the golden vectors of docs/numerics.md §14.9, the literal §14.5
//! formula on edge values, and the validation errors.

use super::*;

fn table(x: f64, w: WeightScales<'_>, out: f64, zp: i32, bias: Option<&[f32]>, relu: bool, k: usize) -> RequantTable {
    let p = RequantParams { input_scale: x, weight_scales: w, output_scale: out, output_zero_point: zp, bias, relu };
    RequantTable::new(false, k, 1, &p).expect("valid table")
}

/// §14.5 written out branch by branch, independently of the table's precomputation.
#[allow(clippy::too_many_arguments)]
fn literal(acc: i64, x: f64, ws: f64, out: f64, zp: i32, bias: Option<f32>, per_channel: bool, relu: bool) -> u8 {
    let atws = (x as f32) * (ws as f32);
    let mult = atws / (out as f32);
    let mut v = acc as f32;
    if let Some(b) = bias {
        v = if per_channel { v + b / atws } else { b.mul_add(1.0 / atws, v) };
    }
    let y = v * mult;
    let q =
        if y.is_nan() || y >= 2f32.powi(31) || y < -(2f32.powi(31)) { i32::MIN } else { y.round_ties_even() as i32 };
    let q = (q.clamp(-32768, 32767) + zp).clamp(0, 255);
    (if relu { q.max(zp) } else { q }) as u8
}

#[test]
fn golden_requant_ties() {
    let t = table(0.5, WeightScales::PerTensor(0.5), 0.5, 100, None, false, 1);
    let acc = [5, 7, -5, -7, 3, 1, -1, 0];
    let got: Vec<u8> = acc.iter().map(|&a| t.requantize(a, 0)).collect();
    assert_eq!(got, [102, 104, 98, 96, 102, 100, 100, 100]);
}

#[test]
fn golden_relu_floor() {
    let t = table(0.5, WeightScales::PerTensor(0.5), 0.5, 77, None, true, 1);
    let acc = [60, 84, -60, -84, 36, 12, -12, 0];
    let got: Vec<u8> = acc.iter().map(|&a| t.requantize(a, 0)).collect();
    assert_eq!(got, [107, 119, 77, 77, 95, 83, 77, 77]);
}

#[test]
fn golden_bias_forms() {
    // atws = 0x38bc8fac exactly (x_scale · 1), mult = 1 (out_scale = atws).
    let atws = f32::from_bits(0x38bc_8fac) as f64;
    let b = [f32::from_bits(0x3b2d_d473)];
    let fused = table(atws, WeightScales::PerTensor(1.0), atws, 128, Some(&b), false, 1);
    assert_eq!(fused.requantize(3, 0), 161, "per tensor: fma(b, rcp, v) = 32.500004 -> 161");
    let b = [f32::from_bits(0x3b2d_d472)];
    let divide = table(atws, WeightScales::PerChannel(&[1.0]), atws, 128, Some(&b), false, 1);
    assert_eq!(divide.requantize(-2, 0), 155, "per channel: v + f32(b/atws) = 27.499998 -> 155");
}

#[test]
fn golden_tiny_out_scale_overflows_to_int32_min() {
    let t = table(0.01, WeightScales::PerTensor(0.01), 1e-12, 128, None, false, 1);
    // mult = 1e-4 / 1e-12 = 1e8: acc 1 saturates to 255, |acc| >= 22 overflows int32 -> code 0.
    assert_eq!(t.requantize(1, 0), 255);
    for acc in [1000, -1000, 123_456] {
        assert_eq!(t.requantize(acc, 0), 0, "acc {acc}");
    }
    let t = table(0.01, WeightScales::PerTensor(0.01), 1e-12, 128, None, true, 1);
    assert_eq!(t.requantize(1000, 0), 128);
    assert_eq!(t.requantize(0, 0), 128);
}

#[test]
fn matches_literal_formula_on_edges() {
    let scales = [0.5, 1e-8, 3.7e-3, 1e6, -0.02, 0.0, 1.0 / 3.0, 2.0 / 127.0];
    let outs = [0.015, 1e-12, -0.5, 0.0, 3.0, 1e30];
    let biases = [None, Some(0.0f32), Some(-0.0), Some(0.3), Some(-1e30), Some(f32::INFINITY), Some(f32::NAN)];
    let accs = [0i64, 1, -1, 2, -3, 127, 65_025, -65_025, 1 << 24, (1 << 24) + 1, i32::MAX as i64, i32::MIN as i64];
    let mut n = 0;
    for &x in &scales {
        for &w in &scales {
            for &out in &outs {
                for &bias in &biases {
                    for per_channel in [false, true] {
                        for (zp, relu) in [(0, false), (255, false), (100, true), (3, false)] {
                            let b = bias.map(|b| [b]);
                            let ws =
                                if per_channel { WeightScales::PerChannel(&[w]) } else { WeightScales::PerTensor(w) };
                            let t = table(x, ws, out, zp, b.as_ref().map(|b| &b[..]), relu, 1);
                            for &acc in &accs {
                                let want = literal(acc, x, w, out, zp, bias, per_channel, relu);
                                assert_eq!(t.requantize(acc, 0), want, "acc {acc} x {x} w {w} out {out} b {bias:?}");
                                n += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(n > 100_000);
}

#[test]
fn cvtps2dq_edges() {
    assert_eq!(cvtps2dq(0.5), 0);
    assert_eq!(cvtps2dq(1.5), 2);
    assert_eq!(cvtps2dq(-2.5), -2);
    assert_eq!(cvtps2dq(-0.0), 0);
    assert_eq!(cvtps2dq(f32::NAN), i32::MIN);
    assert_eq!(cvtps2dq(2147483648.0), i32::MIN);
    assert_eq!(cvtps2dq(2147483520.0), 2147483520);
    assert_eq!(cvtps2dq(-2147483648.0), i32::MIN);
    assert_eq!(cvtps2dq(f32::NEG_INFINITY), i32::MIN);
}

#[test]
fn per_channel_transposed_uses_axis_1() {
    // 2 groups of 3 output channels: channel o uses scale o mod 3.
    let scales = [0.1, 0.2, 0.4];
    let p = RequantParams {
        input_scale: 1.0,
        weight_scales: WeightScales::PerChannel(&scales),
        output_scale: 0.1,
        output_zero_point: 0,
        bias: None,
        relu: false,
    };
    let t = RequantTable::new(true, 6, 2, &p).unwrap();
    for o in 0..6 {
        let want = literal(10, 1.0, scales[o % 3], 0.1, 0, None, true, false);
        assert_eq!(t.requantize(10, o), want, "channel {o}");
    }
    assert!(matches!(RequantTable::new(false, 6, 2, &p), Err(Error::QParamShape { .. })), "forward: axis 0 only");
    assert_eq!(channel_entry(3, 5, 6, 2, true), Some(2));
    assert_eq!(channel_entry(6, 5, 6, 2, true), Some(5));
    assert_eq!(channel_entry(1, 5, 6, 2, false), Some(0));
    assert_eq!(channel_entry(3, 5, 6, 2, false), None);
}

#[test]
fn validation_errors() {
    let base = RequantParams {
        input_scale: 0.1,
        weight_scales: WeightScales::PerTensor(0.1),
        output_scale: 0.1,
        output_zero_point: 0,
        bias: None,
        relu: false,
    };
    let bad = |p: RequantParams<'_>| RequantTable::new(false, 4, 1, &p).unwrap_err();
    assert!(matches!(bad(RequantParams { input_scale: f64::NAN, ..base }), Error::NonFiniteScale { .. }));
    assert!(matches!(bad(RequantParams { output_scale: f64::INFINITY, ..base }), Error::NonFiniteScale { .. }));
    let ws = [0.1, 0.1, f64::NEG_INFINITY, 0.1];
    let e = bad(RequantParams { weight_scales: WeightScales::PerChannel(&ws), ..base });
    assert!(matches!(e, Error::NonFiniteScale { channel: 2, .. }), "{e}");
    let e = bad(RequantParams { output_zero_point: 256, ..base });
    assert!(matches!(e, Error::ZeroPointOutOfRange { zero_point: 256, min: 0, max: 255, .. }), "{e}");
    assert!(matches!(bad(RequantParams { output_zero_point: -1, ..base }), Error::ZeroPointOutOfRange { .. }));
    let e = bad(RequantParams { weight_scales: WeightScales::PerChannel(&[0.1, 0.2]), ..base });
    assert!(matches!(e, Error::QParamShape { .. }), "{e}");
    let e = bad(RequantParams { weight_scales: WeightScales::PerChannel(&[]), ..base });
    assert!(matches!(e, Error::QParamShape { .. }), "{e}");
    let e = bad(RequantParams { bias: Some(&[0.0; 3]), ..base });
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    assert!(matches!(RequantTable::new(false, 4, 3, &base), Err(Error::InvalidConfig { .. })));
    assert!(matches!(RequantTable::new(false, 0, 1, &base), Err(Error::InvalidConfig { .. })));
    assert!(matches!(RequantTable::new(false, 4, 0, &base), Err(Error::InvalidConfig { .. })));
    assert!(check_weight_zero_point(-129).is_err() && check_weight_zero_point(127).is_ok());
    assert!(check_activation_zero_point(255).is_ok() && check_activation_zero_point(300).is_err());
    // Zero and negative scales are accepted (§14.7).
    assert!(RequantTable::new(false, 4, 1, &RequantParams { output_scale: 0.0, input_scale: -1.0, ..base }).is_ok());
}
