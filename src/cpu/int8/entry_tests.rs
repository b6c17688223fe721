//! Tests of the int8 engine through its entry point: random problems against the exact integer
//! oracle on every kernel level and both layouts, thread-count invariance, the i64 path, the
//! errors, and the PyTorch fixtures.

use super::conv_int8;
use crate::cpu::int8::{ActivationLayout, Int8Isa, PackedInt8Weight};
use crate::error::Error;
use crate::oracle::{conv_int8_acc, conv_int8_naive};
use crate::problem::{ConvProblem, PaddingMode};
use crate::quant::{RequantParams, RequantTable, WeightScales};
use crate::testing::{random_problem, tiny_problems, ProblemBudget, Rng};

/// A lowered convolution's data: codes, zero points and requantization.
pub(super) struct Case {
    pub(super) p: ConvProblem,
    pub(super) x: Vec<u8>,
    pub(super) xzp: i32,
    pub(super) w: Vec<i8>,
    pub(super) wzp: Vec<i32>,
    pub(super) table: RequantTable,
}

/// `[N, C, S]` (S = spatial elements) → `[N, S, C]`, and back with `inverse`.
pub(super) fn to_layout(x: &[u8], n: usize, c: usize, inverse: bool) -> Vec<u8> {
    let s = x.len().checked_div(n * c).unwrap_or(0);
    let mut y = vec![0u8; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for i in 0..s {
                let (cf, cl) = ((b * c + ch) * s + i, (b * s + i) * c + ch);
                if inverse {
                    y[cf] = x[cl];
                } else {
                    y[cl] = x[cf];
                }
            }
        }
    }
    y
}

/// Random codes over the full ranges (edges included), random zero points, per-tensor or
/// per-channel weights, a bias or none, ReLU or none, and an output scale that spreads the
/// accumulators over the codes.
pub(super) fn random_case(rng: &mut Rng, p: ConvProblem) -> Case {
    let edge_u8 = |rng: &mut Rng| match rng.range(0, 9) {
        0 => 0u8,
        1 => 255,
        _ => rng.next_u64() as u8,
    };
    let x: Vec<u8> = (0..p.input_len()).map(|_| edge_u8(rng)).collect();
    let w: Vec<i8> = (0..p.weight_len())
        .map(|_| match rng.range(0, 9) {
            0 => -128i8,
            1 => 127,
            _ => rng.next_u64() as i8,
        })
        .collect();
    let xzp = match rng.range(0, 3) {
        0 => 0,
        1 => 255,
        _ => rng.range(0, 255) as i32,
    };
    let per_channel = rng.chance(50);
    let og = if p.transposed && rng.chance(50) { p.out_channels / p.groups } else { p.out_channels };
    let nz = if per_channel { og } else { 1 };
    let wzp: Vec<i32> = (0..nz).map(|_| if rng.chance(50) { 0 } else { rng.pick(&[-128i32, 127, 0, 5, -7]) }).collect();
    let acc = conv_int8_acc(&p, &w, &wzp, &x, xzp);
    let max = acc.iter().map(|a| a.unsigned_abs()).max().unwrap_or(1).max(1) as f64;
    let input_scale = 2.0 / 127.0;
    let ws: Vec<f64> = (0..nz).map(|_| 0.001 + rng.uniform(0.0, 0.01) as f64).collect();
    let output_scale = input_scale * 0.006 * max / rng.pick(&[60.0, 128.0, 400.0]);
    let bias: Vec<f32> = (0..p.out_channels).map(|_| rng.uniform(-0.5, 0.5) * output_scale as f32 * 100.0).collect();
    let params = RequantParams {
        input_scale,
        weight_scales: if per_channel { WeightScales::PerChannel(&ws) } else { WeightScales::PerTensor(ws[0]) },
        output_scale,
        output_zero_point: rng.pick(&[0, 255, 128, 17]),
        bias: rng.chance(70).then_some(&bias[..]),
        relu: rng.chance(30),
    };
    let table = RequantTable::new(p.transposed, p.out_channels, p.groups, &params).expect("valid table");
    Case { p, x, xzp, w, wzp, table }
}

/// Runs `case` with the kernels of `level` in `layout` and returns channels-first codes.
pub(super) fn run_case(case: &Case, level: Int8Isa, layout: ActivationLayout) -> Vec<u8> {
    let p = &case.p;
    let w = PackedInt8Weight::with_level(
        level,
        p.transposed,
        p.in_channels,
        p.out_channels,
        p.groups,
        p.kernel,
        &case.w,
        &case.wzp,
    )
    .expect("packs");
    let mut y = vec![0u8; p.output_len()];
    match layout {
        ActivationLayout::ChannelsFirst => {
            conv_int8(p, &w, &case.table, case.xzp, &case.x, layout, &mut y).expect("runs");
            y
        }
        ActivationLayout::ChannelsLast => {
            let x = to_layout(&case.x, p.batch, p.in_channels, false);
            conv_int8(p, &w, &case.table, case.xzp, &x, layout, &mut y).expect("runs");
            to_layout(&y, p.batch, p.out_channels, true)
        }
    }
}

/// Checks `case` on every level this CPU runs and both layouts against the oracle.
pub(super) fn check_case(case: &Case) {
    let want = conv_int8_naive(&case.p, &case.w, &case.wzp, &case.x, case.xzp, &case.table);
    for level in Int8Isa::available() {
        for layout in [ActivationLayout::ChannelsFirst, ActivationLayout::ChannelsLast] {
            let got = run_case(case, level, layout);
            if got != want {
                let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                let i = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
                panic!(
                    "{level:?} {layout:?}: {bad} of {} codes differ (first at {i}: {} vs {}) for {:?}, x_zp {}, w_zp {:?}",
                    want.len(),
                    got[i],
                    want[i],
                    case.p,
                    case.xzp,
                    &case.wzp[..case.wzp.len().min(4)]
                );
            }
        }
    }
}

#[test]
fn random_forward_matches_oracle() {
    let mut rng = Rng::new(0x1234_5678_9ABC_DEF0);
    let mut done = 0;
    while done < 150 {
        if let Some(p) = random_problem(&mut rng, false, ProblemBudget::SMALL) {
            check_case(&random_case(&mut rng, p));
            done += 1;
        }
    }
}

#[test]
fn random_transposed_matches_oracle() {
    let mut rng = Rng::new(0x0FED_CBA9_8765_4321);
    let mut done = 0;
    while done < 150 {
        if let Some(p) = random_problem(&mut rng, true, ProblemBudget::SMALL) {
            check_case(&random_case(&mut rng, p));
            done += 1;
        }
    }
}

/// A 2-d problem `c → k` channels on `h × w` with a square kernel.
#[allow(clippy::too_many_arguments)]
fn p2d(
    c: usize,
    k: usize,
    groups: usize,
    hw: [usize; 2],
    ks: usize,
    stride: usize,
    pad: usize,
    dil: usize,
) -> ConvProblem {
    let out = |l: usize| (l + 2 * pad - dil * (ks - 1) - 1) / stride + 1;
    ConvProblem {
        transposed: false,
        batch: 1,
        in_channels: c,
        out_channels: k,
        groups,
        in_size: [1, hw[0], hw[1]],
        out_size: [1, out(hw[0]), out(hw[1])],
        kernel: [1, ks, ks],
        stride: [1, stride, stride],
        pad: [0, pad, pad],
        dilation: [1, dil, dil],
        pad_mode: PaddingMode::Zeros,
    }
}

/// Shapes that cross the kernels' block sizes: channel counts around 16/32/64, positions around
/// 14/32, many groups, strides and dilations, the benchmark suite's kinds at small sizes.
#[test]
fn block_edges_match_oracle() {
    let mut rng = Rng::new(42);
    let problems = [
        p2d(128, 40, 1, [9, 11], 3, 1, 1, 1),
        p2d(64, 33, 1, [7, 7], 3, 2, 1, 1),
        p2d(3, 64, 1, [20, 20], 7, 2, 3, 1),
        p2d(32, 48, 2, [6, 30], 3, 1, 2, 2),
        p2d(20, 17, 1, [5, 5], 1, 1, 0, 1),
        p2d(256, 64, 1, [5, 6], 1, 1, 0, 1),
        p2d(24, 24, 24, [9, 9], 3, 1, 1, 1),
        p2d(16, 32, 16, [9, 9], 5, 2, 2, 1),
        p2d(6, 6, 3, [8, 40], 3, 1, 1, 3),
        ConvProblem { transposed: true, out_size: [1, 14, 14], ..p2d(40, 24, 1, [7, 7], 4, 2, 1, 1) },
        ConvProblem { transposed: true, out_size: [1, 16, 16], ..p2d(8, 8, 8, [8, 8], 4, 2, 1, 1) },
        ConvProblem {
            transposed: true,
            in_size: [4, 4, 4],
            out_size: [8, 8, 8],
            kernel: [4, 4, 4],
            stride: [2, 2, 2],
            pad: [1, 1, 1],
            dilation: [1, 1, 1],
            ..p2d(32, 16, 1, [4, 4], 4, 2, 1, 1)
        },
        // 3-d depthwise over a deep input (tasks build only the planes they read), reflect and
        // transposed.
        ConvProblem {
            in_size: [20, 6, 7],
            out_size: [10, 6, 7],
            kernel: [3, 3, 3],
            stride: [2, 1, 1],
            pad: [1, 1, 1],
            dilation: [1, 1, 1],
            pad_mode: PaddingMode::Reflect,
            ..p2d(4, 8, 4, [6, 7], 3, 1, 1, 1)
        },
        ConvProblem {
            transposed: true,
            in_size: [9, 4, 5],
            out_size: [18, 8, 10],
            kernel: [4, 4, 4],
            stride: [2, 2, 2],
            pad: [1, 1, 1],
            dilation: [1, 1, 1],
            ..p2d(3, 3, 3, [4, 5], 3, 1, 1, 1)
        },
    ];
    for p in problems {
        for _ in 0..2 {
            check_case(&random_case(&mut rng, p.clone()));
        }
    }
}

/// The results do not depend on the number of threads (tasks are split per thread count).
#[test]
fn bit_identical_for_any_thread_count() {
    let mut rng = Rng::new(99);
    let cases = [
        random_case(&mut rng, p2d(64, 40, 1, [13, 13], 3, 1, 1, 1)),
        random_case(&mut rng, p2d(32, 32, 32, [17, 17], 3, 1, 1, 1)),
        random_case(
            &mut rng,
            ConvProblem { transposed: true, out_size: [1, 22, 22], ..p2d(32, 20, 1, [11, 11], 4, 2, 1, 1) },
        ),
    ];
    for case in &cases {
        for level in Int8Isa::available() {
            let base = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap()
                .install(|| run_case(case, level, ActivationLayout::ChannelsFirst));
            for threads in [2, 3, 5, 8] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                for layout in [ActivationLayout::ChannelsFirst, ActivationLayout::ChannelsLast] {
                    let got = pool.install(|| run_case(case, level, layout));
                    assert!(got == base, "{level:?} {layout:?} {threads} threads");
                }
            }
            // Without any thread pool (what runs when none can be started): the calling thread.
            for layout in [ActivationLayout::ChannelsFirst, ActivationLayout::ChannelsLast] {
                let got = crate::parallel::run_inline(|| run_case(case, level, layout));
                assert!(got == base, "{level:?} {layout:?} inline");
            }
        }
    }
}

/// More than 33,025 terms per accumulator: the raw sums are added in i64, and extreme codes
/// make the exact accumulators leave the i32 range.
#[test]
fn large_reduction_uses_i64() {
    let mut rng = Rng::new(5);
    let p = p2d(3700, 3, 1, [3, 4], 3, 1, 1, 1);
    let mut case = random_case(&mut rng, p);
    case.x.iter_mut().for_each(|v| *v = 255);
    case.xzp = 0;
    for (i, v) in case.w.iter_mut().enumerate() {
        *v = if i % 97 == 0 { 0 } else { -128 };
    }
    case.wzp = vec![127];
    let acc = conv_int8_acc(&case.p, &case.w, &case.wzp, &case.x, case.xzp);
    assert!(acc.iter().any(|&a| a < i32::MIN as i64), "accumulators beyond i32");
    let params = RequantParams {
        input_scale: 1.0,
        weight_scales: WeightScales::PerTensor(1.0),
        output_scale: 2e7,
        output_zero_point: 128,
        bias: None,
        relu: false,
    };
    case.table = RequantTable::new(false, 3, 1, &params).unwrap();
    check_case(&case);
    // And random codes with weight zero points.
    let mut case = random_case(&mut rng, p2d(3700, 3, 1, [3, 4], 3, 1, 1, 1));
    case.wzp = vec![-100, 3, 127];
    check_case(&case);
}

#[test]
fn errors_instead_of_panics() {
    let mut rng = Rng::new(1);
    let case = random_case(&mut rng, p2d(8, 8, 1, [5, 5], 3, 1, 1, 1));
    let p = &case.p;
    let w = PackedInt8Weight::new(false, 8, 8, 1, p.kernel, &case.w, &case.wzp).unwrap();
    let mut y = vec![0u8; p.output_len()];
    let cf = ActivationLayout::ChannelsFirst;
    let e = conv_int8(p, &w, &case.table, 256, &case.x, cf, &mut y).unwrap_err();
    assert!(matches!(e, Error::ZeroPointOutOfRange { zero_point: 256, .. }), "{e}");
    assert!(matches!(conv_int8(p, &w, &case.table, -1, &case.x, cf, &mut y), Err(Error::ZeroPointOutOfRange { .. })));
    let e = conv_int8(p, &w, &case.table, 0, &case.x[1..], cf, &mut y).unwrap_err();
    assert!(matches!(e, Error::Shape { what: "input", .. }), "{e}");
    let e = conv_int8(p, &w, &case.table, 0, &case.x, cf, &mut y[1..]).unwrap_err();
    assert!(matches!(e, Error::Shape { what: "output", .. }), "{e}");
    let other = ConvProblem { out_channels: 16, ..p.clone() };
    assert!(matches!(
        conv_int8(&other, &w, &case.table, 0, &case.x, cf, &mut y),
        Err(Error::Shape { what: "weight", .. })
    ));
    let t4 = RequantTable::new(
        false,
        4,
        1,
        &RequantParams {
            input_scale: 1.0,
            weight_scales: WeightScales::PerTensor(1.0),
            output_scale: 1.0,
            output_zero_point: 0,
            bias: None,
            relu: false,
        },
    )
    .unwrap();
    assert!(matches!(conv_int8(p, &w, &t4, 0, &case.x, cf, &mut y), Err(Error::Shape { what: "requant table", .. })));
    let zero_stride = ConvProblem { stride: [1, 0, 1], ..p.clone() };
    assert!(matches!(
        conv_int8(&zero_stride, &w, &case.table, 0, &case.x, cf, &mut y),
        Err(Error::InvalidConfig { .. })
    ));
    let reflect = ConvProblem { pad: [0, 5, 5], pad_mode: PaddingMode::Reflect, ..p.clone() };
    assert!(conv_int8(&reflect, &w, &case.table, 0, &case.x, cf, &mut y).is_err());
    // Packing errors.
    assert!(matches!(PackedInt8Weight::new(false, 8, 8, 1, p.kernel, &case.w[1..], &[0]), Err(Error::Shape { .. })));
    assert!(matches!(
        PackedInt8Weight::new(false, 8, 8, 1, p.kernel, &case.w, &[0, 1]),
        Err(Error::QParamShape { .. })
    ));
    assert!(matches!(
        PackedInt8Weight::new(false, 8, 8, 1, p.kernel, &case.w, &[128]),
        Err(Error::ZeroPointOutOfRange { zero_point: 128, .. })
    ));
    assert!(matches!(PackedInt8Weight::new(false, 8, 8, 3, p.kernel, &case.w, &[0]), Err(Error::InvalidConfig { .. })));
    assert!(matches!(PackedInt8Weight::new(false, 8, 8, 0, p.kernel, &case.w, &[0]), Err(Error::InvalidConfig { .. })));
    assert!(matches!(
        PackedInt8Weight::new(false, 8, 8, 1, [1, 0, 3], &case.w, &[0]),
        Err(Error::InvalidConfig { .. })
    ));
    // An empty output is fine.
    let empty = ConvProblem { batch: 0, ..p.clone() };
    assert!(conv_int8(&empty, &w, &case.table, 0, &[], cf, &mut []).is_ok());
}

#[path = "fixtures_tests.rs"]
mod fixtures;

/// Every tiny geometry of [`tiny_problems`] (fuzz findings: a depthwise 1-d convolution with
/// one-column rows read past its input; a transposed stride phase without taps whose positions
/// mapped past the output row) on every level and layout against the oracle.
#[test]
fn tiny_geometries_match_oracle() {
    let mut rng = Rng::new(0x7e57_0001);
    let problems = tiny_problems();
    assert!(problems.len() > 1000, "{} problems", problems.len());
    for p in problems {
        check_case(&random_case(&mut rng, p));
    }
}

/// Convolutions whose last-dimension stride (65,536) exceeds their rows, with one output per row
/// and 1000 rows of padding (fuzz findings: in the depthwise path each pair row was `stride`
/// codes long, half a gigabyte per plane and 37 s per call; in the GEMM path each padded row was
/// rounded up to a multiple of the stride, 2 GB for a 7-channel input), depthwise and GEMM.
#[test]
fn huge_last_stride_one_output_per_row() {
    let mut rng = Rng::new(0x7e57_0003);
    let dw = ConvProblem {
        transposed: false,
        batch: 2,
        in_channels: 7,
        out_channels: 7,
        groups: 7,
        in_size: [4, 4, 4],
        out_size: [3, 286, 1],
        kernel: [1, 2, 7],
        stride: [2, 7, 65_536],
        pad: [1, 1000, 2],
        dilation: [7, 7, 1],
        pad_mode: PaddingMode::Zeros,
    };
    check_case(&random_case(&mut rng, dw.clone()));
    check_case(&random_case(&mut rng, ConvProblem { groups: 1, batch: 2, ..dw }));
}
