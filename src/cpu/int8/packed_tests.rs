//! Tests of the packed int8 weight: the panel layout, the tap sums, the depthwise weights, the
//! zero-point mappings.

use super::*;

#[test]
fn gemm_layout_and_sums() {
    // 2 groups, Cg = 3, Kg = 18 (two panels per group), kernel 1×2, forward.
    let (c, k, g, taps) = (6, 36, 2, 2);
    let w: Vec<i8> = (0..k * 3 * taps).map(|i| (i % 251) as i8).collect();
    let p = PackedInt8Weight::with_level(Int8Isa::Portable, false, c, k, g, [1, 1, 2], &w, &[3]).unwrap();
    assert_eq!((p.cu, p.unit, p.panels, p.panel_len), (4, 4, 2, 2 * 4 * 16));
    for o in 0..k {
        let (gi, ol) = (o / 18, o % 18);
        for t in 0..taps {
            let mut sum = 0;
            for ci in 0..4 {
                let at = (gi * 2 + ol / 16) * p.panel_len + ((t * 4 + ci) / 4) * 64 + (ol % 16) * 4 + ci % 4;
                let want = if ci < 3 { w[(o * 3 + ci) * taps + t] } else { 0 };
                assert_eq!(p.data.codes()[at], want, "o {o} t {t} c {ci}");
                sum += want as i64;
            }
            assert_eq!(p.tap_sums[t * k + o], sum);
        }
        assert_eq!(p.wzp[o], 3);
    }
    // Rows past Kg in the second panel are zero.
    assert!((2..16).all(|j| p.data.codes()[p.panel_len + j * 4] == 0));
    assert!(!p.any_wzp || p.wzp[k..].iter().all(|&z| z == 0));
}

#[test]
fn transposed_zero_points_and_depthwise() {
    // Transposed, 2 groups of 3 outputs, per-channel zero points along axis 1 (3 entries).
    let w: Vec<i8> = (0..4 * 3 * 4).map(|i| (i as i8).wrapping_mul(37)).collect();
    let p = PackedInt8Weight::with_level(Int8Isa::Portable, true, 4, 6, 2, [1, 2, 2], &w, &[1, -2, 5]).unwrap();
    assert_eq!(&p.wzp[..6], &[1, -2, 5, 1, -2, 5]);
    assert!(p.any_wzp);
    // Depthwise (Cg = 1), channel multiplier 2: centred weights [o][tap].
    let w: Vec<i8> = (0..8 * 9).map(|i| (i * 29 % 256) as u8 as i8).collect();
    let zp: Vec<i32> = (0..8).map(|o| o - 4).collect();
    let p = PackedInt8Weight::with_level(Int8Isa::Portable, false, 4, 8, 4, [1, 3, 3], &w, &zp).unwrap();
    assert!(p.data.codes().is_empty());
    for o in 0..8 {
        for t in 0..9 {
            assert_eq!(p.dw[o * 9 + t] as i32, w[o * 9 + t] as i32 - zp[o]);
        }
    }
    assert_eq!(p.level(), Int8Isa::Portable);
}
