//! Tests of the packed weight: the panel height choice, and 6- and 8-row panels giving the same
//! bits at every kernel level.

use super::{tile_rows, PackedWeight};
use crate::cpu::entry::conv_with;
use crate::cpu::kernels::{Isa, MR, MR_WIDE};
use crate::cpu::test_support::{check, problem};
use crate::problem::ConvProblem;
use crate::testing::{random_problem, ProblemBudget, Rng};

#[test]
fn tile_rows_choice() {
    assert_eq!(tile_rows(128, true), MR_WIDE);
    assert_eq!(tile_rows(64, true), MR_WIDE);
    assert_eq!(tile_rows(16, true), MR_WIDE); // 16 rows instead of 18
    assert_eq!(tile_rows(6, true), MR); // 6 rows instead of 8
    assert_eq!(tile_rows(12, true), MR);
    assert_eq!(tile_rows(24, true), MR_WIDE); // a tie goes to the wider tile
    assert_eq!(tile_rows(128, false), MR);
    assert_eq!(tile_rows(2, true), MR);
}

/// Weights packed with 6- and 8-row panels give bit-identical outputs at every SIMD level
/// (the 8-row panels run as two 4-row halves below AVX-512).
#[test]
fn both_tile_heights_bit_identical() {
    let mut rng = Rng::new(0x51ED_2701);
    let mut problems = vec![
        problem(40, 24, 1, [1, 28, 28], [1, 3, 3]),
        problem(24, 16, 1, [1, 9, 50], [1, 1, 1]),
        ConvProblem {
            stride: [1, 2, 2],
            pad: [0, 3, 3],
            out_size: [1, 20, 20],
            ..problem(3, 16, 1, [1, 40, 40], [1, 7, 7])
        },
        ConvProblem {
            transposed: true,
            stride: [1, 2, 2],
            pad: [0, 1, 1],
            out_size: [1, 28, 28],
            ..problem(24, 20, 1, [1, 14, 14], [1, 4, 4])
        },
    ];
    while problems.len() < 30 {
        let transposed = rng.chance(40);
        if let Some(p) = random_problem(&mut rng, transposed, ProblemBudget::SMALL) {
            problems.push(p);
        }
    }
    for p in problems {
        if p.out_channels / p.groups == 1 {
            continue; // the direct path has no tiles
        }
        let x = rng.signed(p.input_len());
        let w = rng.signed(p.weight_len());
        let bias = rng.signed(p.out_channels);
        let dims = [p.in_channels, p.out_channels, p.groups];
        let mut outs = Vec::new();
        for mr in [MR, MR_WIDE] {
            let packed = PackedWeight::pack(p.transposed, dims, p.kernel, &w, mr).unwrap();
            for isa in [Isa::best(), Isa::Avx2Fma] {
                let mut y = vec![0.0f32; p.output_len()];
                conv_with(&p, &packed, Some(&bias), &x, &mut y, isa).unwrap();
                outs.push(y.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
        }
        assert!(outs.iter().all(|o| *o == outs[0]), "{p:?}: tile heights or levels differ");
        let packed = PackedWeight::pack(p.transposed, dims, p.kernel, &w, MR_WIDE).unwrap();
        let mut y = vec![0.0f32; p.output_len()];
        conv_with(&p, &packed, Some(&bias), &x, &mut y, Isa::Portable).unwrap();
        let mut y6 = vec![0.0f32; p.output_len()];
        let packed6 = PackedWeight::pack(p.transposed, dims, p.kernel, &w, MR).unwrap();
        conv_with(&p, &packed6, Some(&bias), &x, &mut y6, Isa::Portable).unwrap();
        assert!(y == y6, "{p:?}: portable tile heights differ");
        check(&p, &x, &w, Some(&bias));
    }
}
