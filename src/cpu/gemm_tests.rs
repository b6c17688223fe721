//! Tests of the GEMM path: large reductions (several chunks of taps or channels), many tiles,
//! long rows, phases without taps, and the stride-2 gathers at every kernel level.

use crate::cpu::kernels::Isa;
use crate::cpu::test_support::{check_random_data, check_with, problem};
use crate::problem::{ConvProblem, PaddingMode};
use crate::testing::Rng;

#[test]
fn large_reductions_and_tiles() {
    let mut rng = Rng::new(42);
    // 1×1 direct path: several KC chunks of channels, a ragged last panel, batch 2, 2 groups.
    let p = ConvProblem { batch: 2, ..problem(2 * 600, 2 * 13, 2, [1, 5, 7], [1, 1, 1]) };
    check_random_data(&mut rng, &p);
    // Cg < KC with several taps per chunk (40 · 9 = 360 rows = 2 chunks); many position tiles.
    check_random_data(&mut rng, &problem(40, 19, 1, [1, 20, 23], [1, 3, 3]));
    // Cg > KC with taps: channel chunks of single taps.
    let p = ConvProblem { pad: [0, 1, 1], out_size: [1, 6, 6], ..problem(300, 7, 1, [1, 6, 6], [1, 3, 3]) };
    check_random_data(&mut rng, &p);
    // Large Kg (narrow Ct budget) and a transposed 2-d problem with a big reduction.
    check_random_data(&mut rng, &problem(3, 700, 1, [1, 9, 40], [1, 2, 2]));
    let p = ConvProblem {
        transposed: true,
        stride: [1, 2, 2],
        pad: [0, 1, 1],
        out_size: [1, 16, 16],
        ..problem(300, 10, 1, [1, 8, 8], [1, 4, 4])
    };
    check_random_data(&mut rng, &p);
    // Long 1-d rows split into several tasks, forward strided and transposed.
    let p = ConvProblem {
        stride: [1, 1, 3],
        pad: [0, 0, 2],
        out_size: [1, 1, 1001],
        ..problem(5, 9, 1, [1, 1, 3000], [1, 1, 5])
    };
    check_random_data(&mut rng, &p);
    let p = ConvProblem {
        transposed: true,
        stride: [1, 1, 3],
        pad: [0, 0, 1],
        out_size: [1, 1, 3001],
        ..problem(7, 5, 1, [1, 1, 1000], [1, 1, 5])
    };
    check_random_data(&mut rng, &p);
    // Kernel taps with no contribution to a phase (k = 1, stride 3): those outputs are bias.
    let p = ConvProblem {
        transposed: true,
        stride: [2, 3, 3],
        out_size: [3, 8, 9],
        ..problem(4, 6, 2, [2, 3, 3], [1, 1, 1])
    };
    check_random_data(&mut rng, &p);
    // The same with Kg == 1 (direct path).
    let p = ConvProblem { out_channels: 2, ..p };
    check_random_data(&mut rng, &p);
}

/// Stride-2 gathers (the kernel-specific `run_s2` copies) at every SIMD level this CPU has:
/// rows with whole panels that end exactly at the input row's end (no readable pair past the
/// last element) or before it, ragged panels, every padding mode.
#[test]
fn stride2_gather_all_levels() {
    let mut rng = Rng::new(0x5712);
    for (i, w) in [32, 33, 34, 35, 47, 64, 65, 66, 97, 130].into_iter().enumerate() {
        let k = 1 + i % 7;
        let pad = (i % 4).min(k - 1).min(w / 2 - 1);
        let mode = [PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular][i % 4];
        let mut p = ConvProblem {
            stride: [1, 2, 2],
            pad: [0, pad, pad],
            pad_mode: mode,
            ..problem(3, 7, 1, [1, 5 + i % 3, w], [1, k.min(5), k])
        };
        p.out_size = [0, 1, 2].map(|d| (p.in_size[d] + 2 * p.pad[d] - p.kernel[d]) / p.stride[d] + 1);
        let x = rng.signed(p.input_len());
        let wt = rng.signed(p.weight_len());
        let bias = rng.signed(p.out_channels);
        for isa in [Isa::Portable, Isa::Avx2Fma, Isa::best()] {
            check_with(&p, &x, &wt, Some(&bias), isa);
        }
    }
}
