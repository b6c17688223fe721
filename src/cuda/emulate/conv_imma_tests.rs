//! The transcriptions of `cuda/conv_imma.cu` and `cuda/int8_simt.cu` against the exact integer
//! oracle `conv_int8_naive`, code for code.

use super::*;
use crate::cuda::emulate::int8_simt::{pad_u8, run_dw};
use crate::cuda::kernels::imma_variant;
use crate::cuda::ops::conv_imma::can_run;
use crate::cuda::ops::int8_simt::dw_can_run;
use crate::oracle::{conv_int8_acc, conv_int8_naive};
use crate::problem::PaddingMode;
use crate::quant::requant::{RequantParams, WeightScales};
use crate::testing::{random_problem, ProblemBudget, Rng};

/// One lowered call: problem, codes, zero points and the requant table.
struct Case {
    p: ConvProblem,
    w: Vec<i8>,
    w_zero: Vec<i32>,
    x: Vec<u8>,
    x_zero: i32,
    table: RequantTable,
}

/// How a case draws its data.
#[derive(Clone, Copy)]
struct Draw {
    /// Weight zero points: 0 = all zero (symmetric), 1 = one nonzero per tensor, 2 = per channel.
    wzp: u8,
    /// Input zero point (`None`: random).
    x_zero: Option<i32>,
    relu: bool,
    /// 0 = no bias, 1 = per-tensor weights with a bias (the fused form), 2 = per-channel weights with a bias.
    bias: u8,
}

/// Codes with their extremes over-represented: `lo`/`hi` a quarter of the time each.
fn code(rng: &mut Rng, lo: i32, hi: i32) -> i32 {
    match rng.range(0, 7) {
        0 => lo,
        1 => hi,
        _ => rng.range(0, (hi - lo) as usize) as i32 + lo,
    }
}

fn make_case(rng: &mut Rng, p: ConvProblem, d: Draw) -> Case {
    let x: Vec<u8> = (0..p.input_len()).map(|_| code(rng, 0, 255) as u8).collect();
    let w: Vec<i8> = (0..p.weight_len()).map(|_| code(rng, -128, 127) as i8).collect();
    let x_zero = d.x_zero.unwrap_or_else(|| code(rng, 0, 255));
    let per_channel_len = if p.transposed { p.out_channels / p.groups } else { p.out_channels };
    let w_zero: Vec<i32> = match d.wzp {
        0 => vec![0],
        1 => vec![code(rng, -128, 127).max(-127) | 1],
        _ => (0..per_channel_len).map(|_| code(rng, -128, 127)).collect(),
    };
    // Scales that spread the codes: the output scale maps the largest accumulator to about 150.
    let acc = conv_int8_acc(&p, &w, &w_zero, &x, x_zero);
    let peak = acc.iter().map(|a| a.unsigned_abs()).max().unwrap_or(1).max(1) as f64;
    let x_scale = 0.01 + rng.uniform(0.0, 0.05) as f64;
    let scales: Vec<f64> = (0..per_channel_len).map(|_| 0.001 + rng.uniform(0.0, 0.01) as f64).collect();
    let per_channel = d.bias == 2 || (d.bias == 0 && rng.chance(50));
    let ws = if per_channel { WeightScales::PerChannel(&scales) } else { WeightScales::PerTensor(scales[0]) };
    // A bias within a third of the accumulators' range, in real units.
    let real_peak = (peak * x_scale * scales[0]) as f32;
    let bias: Vec<f32> = (0..p.out_channels).map(|_| rng.uniform(-0.3, 0.3) * real_peak).collect();
    let params = RequantParams {
        input_scale: x_scale,
        weight_scales: ws,
        output_scale: x_scale * 0.01 * peak / 100.0,
        output_zero_point: if rng.chance(20) { rng.pick(&[0, 255]) } else { rng.range(60, 200) as i32 },
        bias: (d.bias != 0).then_some(&bias[..]),
        relu: d.relu,
    };
    let table = RequantTable::new(p.transposed, p.out_channels, p.groups, &params).unwrap();
    Case { p, w, w_zero, x, x_zero, table }
}

/// NCHW -> channels-last codes (`[N, C, S]` -> `[N, S, C]`).
fn to_nhwc(v: &[u8], n: usize, c: usize, s: usize) -> Vec<u8> {
    let mut out = vec![0u8; v.len()];
    for b in 0..n {
        for ch in 0..c {
            for i in 0..s {
                out[(b * s + i) * c + ch] = v[(b * c + ch) * s + i];
            }
        }
    }
    out
}

/// Runs the tile emulation on `case` in both output layouts and compares with the oracle; returns
/// how many distinct codes the output has (the cases must not be trivially saturated).
fn check_tiles(case: &Case, tile: TcTile, what: &str) -> usize {
    let p = &case.p;
    let want = conv_int8_naive(p, &case.w, &case.w_zero, &case.x, case.x_zero, &case.table);
    let out_sp: usize = p.out_size.iter().product();
    for out_nhwc in [false, true] {
        let got =
            run_forward(p, &case.w, &case.w_zero, &case.x, case.x_zero, &case.table, out_nhwc, tile, Mutation::None);
        let got = if out_nhwc { got } else { to_nhwc(&got, p.batch, p.out_channels, out_sp) };
        let want = to_nhwc(&want, p.batch, p.out_channels, out_sp);
        if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
            panic!("{what}: {tile:?} out_nhwc {out_nhwc} {p:?}: code {i} is {} (oracle {})", got[i], want[i]);
        }
    }
    want.iter().collect::<std::collections::BTreeSet<_>>().len()
}

#[allow(clippy::too_many_arguments)]
fn p2d(
    c: usize,
    k: usize,
    groups: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    mode: PaddingMode,
    n: usize,
    hw: [usize; 2],
) -> ConvProblem {
    let out = [0, 1].map(|d| (hw[d] + 2 * pad - dil * (kernel - 1) - 1) / stride + 1);
    ConvProblem {
        transposed: false,
        batch: n,
        in_channels: c,
        out_channels: k,
        groups,
        in_size: [1, hw[0], hw[1]],
        out_size: [1, out[0], out[1]],
        kernel: [1, kernel, kernel],
        stride: [1, stride, stride],
        pad: [0, pad, pad],
        dilation: [1, dil, dil],
        pad_mode: mode,
    }
}

#[allow(clippy::too_many_arguments)]
fn p2d_tr(
    c: usize,
    k: usize,
    groups: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: usize,
    dil: usize,
    out_pad: usize,
    hw: [usize; 2],
) -> ConvProblem {
    let out = [0, 1].map(|d| (hw[d] - 1) * stride[d] + dil * (kernel[d] - 1) + 1 + out_pad - 2 * pad);
    ConvProblem {
        transposed: true,
        batch: 2,
        in_channels: c,
        out_channels: k,
        groups,
        in_size: [1, hw[0], hw[1]],
        out_size: [1, out[0], out[1]],
        kernel: [1, kernel[0], kernel[1]],
        stride: [1, stride[0], stride[1]],
        pad: [0, pad, pad],
        dilation: [1, dil, dil],
        pad_mode: PaddingMode::Zeros,
    }
}

const SYM: Draw = Draw { wzp: 0, x_zero: None, relu: false, bias: 1 };

#[test]
fn requant_transcription_equals_the_table() {
    let mut rng = Rng::new(5);
    let accs =
        [0, 1, -1, 7, -7, 1 << 24, (1 << 24) + 1, -(1 << 24) - 3, i32::MAX, i32::MIN, 2_147_450_625, -2_147_450_625];
    for case in 0..200 {
        let k = 3;
        let bias = [rng.uniform(-50.0, 50.0), 0.0, f32::INFINITY];
        let scales = [0.0, rng.uniform(1e-4, 1.0) as f64, -0.25];
        let out_scale = match case % 4 {
            0 => 1e-12, // |y| >= 2^31: cvtps2dq's INT32_MIN, code 0
            1 => 0.0,   // mult = inf: NaN or INT32_MIN
            _ => rng.uniform(1e-3, 10.0) as f64,
        };
        let params = RequantParams {
            input_scale: rng.uniform(1e-3, 1.0) as f64,
            weight_scales: if case % 3 == 0 {
                WeightScales::PerTensor(scales[1])
            } else {
                WeightScales::PerChannel(&scales)
            },
            output_scale: out_scale,
            output_zero_point: rng.range(0, 255) as i32,
            bias: (case % 5 != 0).then_some(&bias[..]),
            relu: case % 2 == 0,
        };
        let table = RequantTable::new(false, k, 1, &params).unwrap();
        let words = requant_words(&table);
        let epi = Int8Epilogue::new(&table, 0).unwrap();
        for &acc in accs.iter().chain(&[rng.next_u64() as i32, (rng.next_u64() % 100_000) as i32 - 50_000]) {
            for ch in 0..k {
                let t = &words[4 * ch..4 * ch + 4];
                let got = requant(acc, t[0], t[1], t[2], epi.has_bias, epi.out_zero, epi.out_floor);
                assert_eq!(got, table.requantize(acc as i64, ch), "acc {acc} channel {ch} {params:?}");
            }
        }
    }
    // The conversion rule itself: y >= 2^31 gives INT32_MIN, not the saturated INT32_MAX.
    assert_eq!(cvtps2dq(3e9), i32::MIN);
    assert_eq!(requant(1, 3e9, 0.0, 1.0, false, 128, 0), 0);
}

#[test]
fn forward_tiles_reproduce_the_oracle() {
    use PaddingMode::*;
    let mut rng = Rng::new(11);
    let cases: [(ConvProblem, Draw, TcTile); 9] = [
        // 16 channels: no padding of the input's channels; zero point 255 in the padded taps.
        (p2d(16, 20, 1, 3, 1, 1, 1, Zeros, 1, [5, 6]), Draw { x_zero: Some(255), ..SYM }, TcTile::T64x64),
        // A 3-channel stem (16 slots), stride 2, ReLU, zero point 0.
        (p2d(3, 20, 1, 3, 2, 1, 1, Zeros, 2, [7, 6]), Draw { x_zero: Some(0), relu: true, ..SYM }, TcTile::T128x64),
        // Groups (2 x 20 channels -> 32 slots), dilation, reflect; per-channel weights with bias.
        (p2d(40, 24, 2, 3, 1, 2, 2, Reflect, 2, [7, 6]), Draw { bias: 2, ..SYM }, TcTile::T64x64),
        // Replicate and circular, no bias.
        (p2d(24, 36, 2, 3, 1, 1, 1, Replicate, 1, [4, 5]), Draw { bias: 0, ..SYM }, TcTile::T128x64),
        (p2d(8, 12, 1, 3, 1, 1, 1, Circular, 1, [3, 5]), Draw { bias: 0, ..SYM }, TcTile::T64x64),
        // 70 output channels on the 128x128 tile: a partial channel tile and partial pair stores.
        (p2d(32, 70, 1, 3, 1, 1, 1, Zeros, 1, [4, 4]), SYM, TcTile::T128x128),
        // Asymmetric weights (the *_wzp entries), per tensor and per channel, both tiles.
        (p2d(20, 20, 1, 3, 1, 1, 1, Zeros, 1, [5, 6]), Draw { wzp: 1, ..SYM }, TcTile::T64x64),
        (p2d(6, 33, 3, 3, 2, 1, 1, Reflect, 2, [5, 5]), Draw { wzp: 2, bias: 2, ..SYM }, TcTile::T128x64),
        // A 1x1 over 48 channels, zero point 255 and asymmetric weights.
        (p2d(48, 17, 1, 1, 1, 0, 1, Zeros, 3, [3, 4]), Draw { wzp: 2, x_zero: Some(255), ..SYM }, TcTile::T64x64),
    ];
    for (i, (p, d, tile)) in cases.into_iter().enumerate() {
        assert!(can_run(&p));
        assert!(check_tiles(&make_case(&mut rng, p, d), tile, &format!("forward case {i}")) >= 10);
    }
}

#[test]
fn transposed_tiles_reproduce_the_oracle() {
    let mut rng = Rng::new(12);
    // Phases with 1, 2 or no active taps per dimension, dilation, groups, output padding.
    let problems = [
        p2d_tr(16, 24, 1, [4, 4], [2, 2], 1, 1, 0, [4, 3]),
        p2d_tr(16, 20, 2, [3, 3], [2, 1], 1, 2, 1, [4, 5]),
        p2d_tr(8, 12, 1, [2, 2], [3, 3], 0, 1, 2, [3, 4]),
        p2d_tr(3, 70, 1, [3, 3], [2, 2], 0, 1, 1, [3, 3]),
    ];
    for (i, p) in problems.into_iter().enumerate() {
        for (d, tile) in [(SYM, TcTile::T64x64), (Draw { wzp: 2, x_zero: Some(255), ..SYM }, TcTile::T128x128)] {
            assert!(check_tiles(&make_case(&mut rng, p.clone(), d), tile, &format!("transposed case {i}")) >= 10);
        }
    }
}

#[test]
fn random_problems_reproduce_the_oracle() {
    let mut rng = Rng::new(13);
    let budget = ProblemBudget { max_macs: 3e5, max_output: 3000 };
    let (mut done, mut transposed, mut spread) = (0, 0, 0);
    while done < 48 {
        let tr = rng.chance(40);
        let Some(p) = random_problem(&mut rng, tr, budget) else { continue };
        let d = Draw {
            wzp: rng.range(0, 2) as u8,
            x_zero: rng.chance(30).then(|| rng.pick(&[0, 255])),
            relu: rng.chance(30),
            bias: rng.range(0, 2) as u8,
        };
        let case = make_case(&mut rng, p, d);
        // Every tile this direction and weight have (as choose_imma_tile may pick).
        let asym = d.wzp != 0 && case.w_zero.iter().any(|&z| z != 0);
        let tiles: Vec<TcTile> = [TcTile::T64x64, TcTile::T128x64, TcTile::T128x128]
            .into_iter()
            .filter(|&t| imma_variant(tr, t, asym).is_some())
            .collect();
        let tile = rng.pick(&tiles);
        spread += usize::from(check_tiles(&case, tile, &format!("random problem {done}")) >= 5);
        if dw_can_run(&case.p) {
            check_dw(&case, "random depthwise");
        }
        done += 1;
        transposed += usize::from(tr);
    }
    assert!(transposed >= 10 && spread >= 40, "{transposed} transposed, {spread} with 5 codes or more");
}

/// The depthwise kernel on a case, channels-last input, both output layouts.
fn check_dw(case: &Case, what: &str) {
    let p = &case.p;
    let in_sp: usize = p.in_size.iter().product();
    let out_sp: usize = p.out_size.iter().product();
    let x = to_nhwc(&case.x, p.batch, p.in_channels, in_sp);
    let want = to_nhwc(
        &conv_int8_naive(p, &case.w, &case.w_zero, &case.x, case.x_zero, &case.table),
        p.batch,
        p.out_channels,
        out_sp,
    );
    for out_nhwc in [false, true] {
        let got = run_dw(p, &case.w, &case.w_zero, &x, case.x_zero, &case.table, out_nhwc);
        let got = if out_nhwc { got } else { to_nhwc(&got, p.batch, p.out_channels, out_sp) };
        assert!(got == want, "{what}: out_nhwc {out_nhwc} {p:?}");
    }
}

#[test]
fn depthwise_kernel_reproduces_the_oracle() {
    use PaddingMode::*;
    let mut rng = Rng::new(14);
    let mut problems = vec![
        p2d(8, 8, 8, 3, 1, 1, 1, Zeros, 2, [6, 5]),
        p2d(5, 10, 5, 3, 2, 1, 1, Reflect, 1, [7, 6]),
        p2d(3, 9, 3, 5, 1, 2, 2, Circular, 1, [9, 9]),
        p2d(7, 7, 7, 3, 1, 1, 1, Replicate, 2, [4, 4]),
    ];
    // 1-d and 3-d.
    let mut one_d = p2d(6, 6, 6, 1, 1, 0, 1, Zeros, 1, [1, 9]);
    (one_d.kernel, one_d.pad, one_d.out_size) = ([1, 1, 4], [0, 0, 2], [1, 1, 10]);
    problems.push(one_d);
    problems.push(ConvProblem {
        in_size: [4, 5, 3],
        out_size: [4, 5, 3],
        kernel: [3, 3, 3],
        pad: [1, 1, 1],
        stride: [1; 3],
        ..p2d(4, 8, 4, 3, 1, 1, 1, Zeros, 1, [5, 3])
    });
    for (i, p) in problems.into_iter().enumerate() {
        assert!(dw_can_run(&p), "{p:?}");
        for d in [Draw { x_zero: Some(255), ..SYM }, Draw { wzp: 2, bias: 2, relu: true, ..SYM }] {
            check_dw(&make_case(&mut rng, p.clone(), d), &format!("depthwise case {i}"));
        }
    }
}

#[test]
fn exact_at_the_int32_bound() {
    // 33,025 terms of (255 - 0)(-128 - 127) = -65,025 each: -2,147,450,625, just above -2^31, on
    // the *_wzp tile (raw codes, column and row sums all at their extremes) and on the depthwise
    // kernel (a 1-d kernel of 33,025 taps); then (0 - 255)(127 - (-128)) with x_zero 255 on the
    // symmetric... weight side mirrored.
    let n = 33_025;
    let p = ConvProblem {
        transposed: false,
        batch: 1,
        in_channels: n,
        out_channels: 8,
        groups: 1,
        in_size: [1, 1, 1],
        out_size: [1, 1, 1],
        kernel: [1; 3],
        stride: [1; 3],
        pad: [0; 3],
        dilation: [1; 3],
        pad_mode: PaddingMode::Zeros,
    };
    assert!(can_run(&p) && !can_run(&ConvProblem { in_channels: n + 1, ..p.clone() }));
    let params = RequantParams {
        input_scale: 1.0,
        weight_scales: WeightScales::PerTensor(1.0),
        output_scale: 2.0e7,
        output_zero_point: 128,
        bias: None,
        relu: false,
    };
    let table = RequantTable::new(false, 8, 1, &params).unwrap();
    for (x, x_zero, w, w_zero) in [(255u8, 0, -128i8, 127), (0, 255, 127, -128), (0, 255, -128, 0)] {
        let case = Case {
            p: p.clone(),
            w: vec![w; p.weight_len()],
            w_zero: vec![w_zero],
            x: vec![x; n],
            x_zero,
            table: table.clone(),
        };
        let acc = conv_int8_acc(&p, &case.w, &case.w_zero, &case.x, x_zero);
        assert!(acc.iter().all(|&a| a.abs() == if w_zero == 0 { 33_025 * 255 * 128 } else { 2_147_450_625 }));
        check_tiles(&case, TcTile::T64x64, "int32 bound");
    }
    let dw = ConvProblem { in_channels: 1, out_channels: 1, groups: 1, in_size: [1, 1, n], kernel: [1, 1, n], ..p };
    assert!(dw_can_run(&dw));
    let case = Case {
        p: dw,
        w: vec![-128; n],
        w_zero: vec![127],
        x: vec![255; n],
        x_zero: 0,
        table: RequantTable::new(false, 1, 1, &params).unwrap(),
    };
    check_dw(&case, "int32 bound, depthwise");
}

#[test]
fn mutations_are_caught() {
    let mut rng = Rng::new(15);
    let p = p2d(20, 24, 1, 3, 1, 1, 1, PaddingMode::Zeros, 1, [5, 6]);
    let case = make_case(&mut rng, p, Draw { wzp: 2, ..SYM });
    let want = conv_int8_naive(&case.p, &case.w, &case.w_zero, &case.x, case.x_zero, &case.table);
    let run =
        |m| run_forward(&case.p, &case.w, &case.w_zero, &case.x, case.x_zero, &case.table, false, TcTile::T64x64, m);
    assert_eq!(run(Mutation::None), want);
    for m in [Mutation::SwapA12, Mutation::SwapB01, Mutation::SwapC12, Mutation::NoRowSums] {
        let got = run(m);
        let wrong = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert!(wrong > want.len() / 4, "{m:?} changed only {wrong} of {} codes", want.len());
    }
}

#[test]
fn u8_channel_copy_from_either_layout() {
    let mut rng = Rng::new(16);
    let (n, px, groups, cg) = (2, 7, 3, 5);
    let x: Vec<u8> = (0..n * px * groups * cg).map(|_| rng.next_u64() as u8).collect();
    let shape = PadU8Shape { batch: n, pixels: px, groups, cg, cg_pad: 16, src_nhwc: false, fill: 77 };
    let from_nchw = pad_u8(&pad_u8_params(shape).unwrap(), &x);
    let x_nhwc = to_nhwc(&x, n, groups * cg, px);
    let from_nhwc = pad_u8(&pad_u8_params(PadU8Shape { src_nhwc: true, ..shape }).unwrap(), &x_nhwc);
    assert_eq!(from_nchw, from_nhwc);
    for b in 0..n {
        for s in 0..px {
            for g in 0..groups {
                for c in 0..16 {
                    let v = from_nchw[((b * px + s) * groups + g) * 16 + c];
                    assert_eq!(v, if c < cg { x[(b * groups * cg + g * cg + c) * px + s] } else { 77 });
                }
            }
        }
    }
    // cg_pad == cg: the plain NCHW -> channels-last transpose.
    let t = pad_u8(&pad_u8_params(PadU8Shape { cg_pad: cg, ..shape }).unwrap(), &x);
    assert_eq!(t, x_nhwc);
}

#[test]
fn pytorch_fixtures_through_the_emulated_kernels() {
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/int8.safetensors"));
    let fixtures = crate::testing::load_int8_fixtures(path).unwrap();
    assert_eq!(fixtures.len(), 74);
    let (mut tiles, mut depthwise) = (0, 0);
    for (i, f) in fixtures.into_iter().enumerate() {
        let oracle = conv_int8_naive(&f.problem, &f.w, &f.w_zero, &f.x, f.x_zero, &f.table);
        assert_eq!(oracle, f.want, "{}: the integer oracle", f.name);
        let case = Case { p: f.problem, w: f.w, w_zero: f.w_zero, x: f.x, x_zero: f.x_zero, table: f.table };
        if dw_can_run(&case.p) {
            check_dw(&case, &f.name);
            depthwise += 1;
        }
        // Every case through the tiles too (the forward runs depthwise ones on their own kernel),
        // the tile rotating through those the direction and weights have.
        assert!(can_run(&case.p), "{}", f.name);
        let asym = case.w_zero.iter().any(|&z| z != 0);
        let options: Vec<TcTile> = [TcTile::T64x64, TcTile::T128x64, TcTile::T128x128]
            .into_iter()
            .filter(|&t| imma_variant(case.p.transposed, t, asym).is_some())
            .collect();
        check_tiles(&case, options[i % options.len()], &f.name);
        tiles += 1;
    }
    assert_eq!(tiles, 74);
    assert!(depthwise >= 8, "{depthwise} depthwise cases");
}
