//! Tests of the entry point: random problems against the oracle, any output size, any thread
//! count, errors instead of panics, and the benchmark suite's problems.

use super::conv;
use crate::cpu::packed::PackedWeight;
use crate::cpu::test_support::{check, check_random_data, problem};
use crate::error::Error;
use crate::problem::{ConvProblem, PaddingMode};
use crate::testing::{random_problem, tiny_problems, ProblemBudget, Rng};

#[test]
fn random_forward_matches_naive() {
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    let mut done = 0;
    while done < 300 {
        if let Some(p) = random_problem(&mut rng, false, ProblemBudget::SMALL) {
            check_random_data(&mut rng, &p);
            done += 1;
        }
    }
}

#[test]
fn random_transposed_matches_naive() {
    let mut rng = Rng::new(0xD1B5_4A32_D192_ED03);
    let mut done = 0;
    while done < 300 {
        if let Some(p) = random_problem(&mut rng, true, ProblemBudget::SMALL) {
            check_random_data(&mut rng, &p);
            done += 1;
        }
    }
}

/// Every tiny geometry of [`tiny_problems`] (one-column rows, stride phases without taps, every
/// padding mode) against the oracle.
#[test]
fn tiny_geometries_match_naive() {
    let mut rng = Rng::new(0x7e57_0002);
    for p in tiny_problems() {
        check_random_data(&mut rng, &p);
    }
}

/// Any output size is allowed (reads past the natural end are padding; transposed outputs past
/// it get what the formula gives): compare against the oracle for arbitrary sizes.
#[test]
fn random_output_sizes() {
    let mut rng = Rng::new(0xA076_1D64_78BD_642F);
    let mut done = 0;
    while done < 200 {
        let transposed = rng.chance(50);
        let Some(mut p) = random_problem(&mut rng, transposed, ProblemBudget::SMALL) else { continue };
        for d in 0..3 {
            if p.kernel[d] > 1 || p.in_size[d] > 1 {
                p.out_size[d] = rng.range(1, p.out_size[d] + 3);
            }
        }
        let x = rng.signed(p.input_len());
        let w = rng.signed(p.weight_len());
        let packed = PackedWeight::new(p.transposed, p.in_channels, p.out_channels, p.groups, p.kernel, &w).unwrap();
        let mut y = vec![0.0f32; p.output_len()];
        match conv(&p, &packed, None, &x, &mut y) {
            Ok(()) => check(&p, &x, &w, None),
            // Only reflect/circular padding may be out of range for the larger sizes.
            Err(e) => assert!(
                matches!(p.pad_mode, PaddingMode::Reflect | PaddingMode::Circular),
                "{p:?}: unexpected error {e}"
            ),
        }
        done += 1;
    }
}

#[test]
fn bit_identical_for_any_thread_count() {
    let mut rng = Rng::new(7);
    let problems = [
        problem(37, 29, 1, [3, 9, 11], [2, 3, 3]),
        ConvProblem { batch: 2, ..problem(64, 64, 2, [1, 28, 28], [1, 1, 1]) },
        problem(8, 8, 8, [1, 40, 33], [1, 3, 3]),
        ConvProblem {
            transposed: true,
            stride: [1, 2, 2],
            pad: [0, 1, 1],
            out_size: [1, 30, 30],
            ..problem(32, 24, 1, [1, 15, 15], [1, 4, 4])
        },
    ];
    for p in problems {
        let x = rng.signed(p.input_len());
        let w = rng.signed(p.weight_len());
        let bias = rng.signed(p.out_channels);
        let packed = PackedWeight::new(p.transposed, p.in_channels, p.out_channels, p.groups, p.kernel, &w).unwrap();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut y = vec![0.0f32; p.output_len()];
            pool.install(|| conv(&p, &packed, Some(&bias), &x, &mut y)).unwrap();
            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let one = run(1);
        for threads in [2, 3, 8] {
            assert!(one == run(threads), "{p:?}: {threads} threads differ from 1");
        }
        check(&p, &x, &w, Some(&bias));
    }
}

#[test]
fn errors_instead_of_panics() {
    let p = ConvProblem { pad: [0, 1, 1], out_size: [1, 4, 4], ..problem(4, 6, 2, [1, 4, 4], [1, 3, 3]) };
    let w = vec![0.5f32; p.weight_len()];
    let packed = PackedWeight::new(false, 4, 6, 2, [1, 3, 3], &w).unwrap();
    let x = vec![1.0f32; p.input_len()];
    let mut y = vec![0.0f32; p.output_len()];
    assert!(conv(&p, &packed, None, &x, &mut y).is_ok());
    assert!(matches!(conv(&p, &packed, None, &x[1..], &mut y), Err(Error::Shape { .. })));
    assert!(matches!(conv(&p, &packed, None, &x, &mut y[1..]), Err(Error::Shape { .. })));
    assert!(matches!(conv(&p, &packed, Some(&[1.0; 5]), &x, &mut y), Err(Error::Shape { .. })));
    let other = PackedWeight::new(false, 4, 6, 1, [1, 3, 3], &vec![0.0; 6 * 4 * 9]).unwrap();
    assert!(matches!(conv(&p, &other, None, &x, &mut y), Err(Error::Shape { .. })));
    let bad = ConvProblem { stride: [1, 0, 1], ..p.clone() };
    assert!(matches!(conv(&bad, &packed, None, &x, &mut y), Err(Error::InvalidConfig { .. })));
    let bad = ConvProblem { dilation: [0, 1, 1], ..p.clone() };
    assert!(matches!(conv(&bad, &packed, None, &x, &mut y), Err(Error::InvalidConfig { .. })));
    // Reflect padding must be smaller than the input; circular at most the input.
    let big = ConvProblem { pad: [0, 4, 4], out_size: [1, 10, 10], pad_mode: PaddingMode::Reflect, ..p.clone() };
    let mut y_big = vec![0.0f32; big.output_len()];
    assert!(matches!(conv(&big, &packed, None, &x, &mut y_big), Err(Error::InvalidConfig { .. })));
    let ok = ConvProblem { pad_mode: PaddingMode::Circular, ..big.clone() };
    assert!(conv(&ok, &packed, None, &x, &mut y_big).is_ok());
    let bad = ConvProblem { pad: [0, 5, 5], out_size: [1, 12, 12], ..ok };
    let mut y_bad = vec![0.0f32; bad.output_len()];
    assert!(matches!(conv(&bad, &packed, None, &x, &mut y_bad), Err(Error::InvalidConfig { .. })));
    // Transposed convolutions pad with zeros only.
    let tp = ConvProblem {
        transposed: true,
        out_size: [1, 6, 6],
        pad_mode: PaddingMode::Reflect,
        ..problem(4, 6, 2, [1, 4, 4], [1, 3, 3])
    };
    let tpacked = PackedWeight::new(true, 4, 6, 2, [1, 3, 3], &vec![0.5; 4 * 3 * 9]).unwrap();
    let mut ty = vec![0.0f32; tp.output_len()];
    assert!(matches!(conv(&tp, &tpacked, None, &x, &mut ty), Err(Error::InvalidConfig { .. })));
    let tp = ConvProblem { pad_mode: PaddingMode::Zeros, ..tp };
    assert!(conv(&tp, &tpacked, None, &x, &mut ty).is_ok());
    // Sizes whose products overflow.
    let huge = ConvProblem { in_size: [usize::MAX / 2, 3, 1], ..p.clone() };
    assert!(conv(&huge, &packed, None, &x, &mut y).is_err());
    let huge = ConvProblem { stride: [1, usize::MAX, 1], ..p.clone() };
    assert!(conv(&huge, &packed, None, &x, &mut y).is_err());
    // Packing errors.
    assert!(matches!(PackedWeight::new(false, 4, 6, 0, [1, 3, 3], &w), Err(Error::InvalidConfig { .. })));
    assert!(matches!(PackedWeight::new(false, 4, 6, 4, [1, 3, 3], &w), Err(Error::InvalidConfig { .. })));
    assert!(matches!(PackedWeight::new(false, 4, 6, 2, [1, 0, 3], &w), Err(Error::InvalidConfig { .. })));
    assert!(matches!(PackedWeight::new(false, 4, 6, 2, [1, 3, 3], &w[1..]), Err(Error::Shape { .. })));
    assert!(PackedWeight::new(false, 4, 6, 2, [usize::MAX, 3, 3], &w).is_err());
    // Empty batches and empty outputs are fine.
    let empty = ConvProblem { batch: 0, ..p.clone() };
    assert!(conv(&empty, &packed, None, &[], &mut []).is_ok());
    // An empty input dimension with zero padding gives the bias.
    let hollow = ConvProblem { in_size: [1, 0, 4], pad: [0, 1, 1], out_size: [1, 1, 4], ..p };
    let mut yh = vec![0.0f32; hollow.output_len()];
    let bias = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    conv(&hollow, &packed, Some(&bias), &[], &mut yh).unwrap();
    assert_eq!(yh, bias.iter().flat_map(|&b| [b; 4]).collect::<Vec<_>>());
}

/// The problems of the CPU benchmark suite (`qconv bench`, docs/benchmarks.md): batch 1, zero
/// padding.
fn bench_problems() -> Vec<ConvProblem> {
    /// A problem of `[C, K, groups]` with `[stride, pad, dilation]` per dimension.
    fn mk(
        transposed: bool,
        [c, k, groups]: [usize; 3],
        in_size: [usize; 3],
        kernel: [usize; 3],
        [stride, pad, dil]: [[usize; 3]; 3],
    ) -> ConvProblem {
        let out_size = [0, 1, 2].map(|d| {
            let span = (kernel[d] - 1) * dil[d];
            if transposed {
                (in_size[d] - 1) * stride[d] - 2 * pad[d] + span + 1
            } else {
                (in_size[d] + 2 * pad[d] - span - 1) / stride[d] + 1
            }
        });
        ConvProblem {
            transposed,
            batch: 1,
            in_channels: c,
            out_channels: k,
            groups,
            in_size,
            out_size,
            kernel,
            stride,
            pad,
            dilation: dil,
            pad_mode: PaddingMode::Zeros,
        }
    }
    let one = [1; 3];
    vec![
        mk(false, [128, 128, 1], [1, 28, 28], [1, 3, 3], [one, [0, 1, 1], one]), // c2d_3x3
        mk(false, [256, 64, 1], [1, 56, 56], one, [one, [0; 3], one]),           // c2d_1x1
        mk(false, [3, 64, 1], [1, 224, 224], [1, 7, 7], [[1, 2, 2], [0, 3, 3], one]), // c2d_stem
        mk(false, [256, 256, 256], [1, 28, 28], [1, 3, 3], [one, [0, 1, 1], one]), // c2d_dw
        mk(false, [64, 64, 1], [1, 56, 56], [1, 3, 3], [one, [0, 2, 2], [1, 2, 2]]), // c2d_dil
        mk(false, [256, 256, 1], [1, 1, 2048], [1, 1, 5], [one, [0, 0, 2], one]), // c1d
        mk(false, [32, 64, 1], [8, 28, 28], [3, 3, 3], [one, one, one]),         // c3d
        mk(true, [128, 64, 1], [1, 28, 28], [1, 4, 4], [[1, 2, 2], [0, 1, 1], one]), // ct2d
        mk(true, [256, 128, 1], [1, 1, 1024], [1, 1, 4], [[1, 1, 2], [0, 0, 1], one]), // ct1d
        mk(true, [32, 16, 1], [8, 16, 16], [4, 4, 4], [[2, 2, 2], one, one]),    // ct3d
    ]
}

/// The benchmark suite's problems against the oracle (ignored: about 20 s in a release build,
/// `cargo test --release --lib bench_problems_match_naive -- --ignored`).
#[test]
#[ignore]
fn bench_problems_match_naive() {
    let mut rng = Rng::new(3);
    for p in bench_problems() {
        check_random_data(&mut rng, &p);
    }
}
