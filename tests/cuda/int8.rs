//! The lowered int8 convolutions on CUDA (`qconv::cuda::forward_int8`, the int8 tensor-core tiles
//! and the int8 depthwise kernel) against the exact integer oracle `conv_int8_naive`, code for
//! code: random problems in both layouts, the PyTorch fixtures, the int32 bound, large tiles, and
//! the refusal past it. Written before a GPU run (the kernels were checked by their CPU
//! transcriptions, src/cuda/emulate/conv_imma.rs); like every test of this crate each one is
//! `#[ignore = "needs a CUDA device"]` (run by `scripts/gpu-check.sh` with `--include-ignored`).

use super::*;
use qconv::cuda::{forward_int8, int8_can_run, DeviceInt8Weights, Int8Layout};
use qconv::oracle::{conv_int8_acc, conv_int8_naive};
use qconv::problem::ConvProblem;
use qconv::quant::{RequantParams, RequantTable, WeightScales};
use qconv::testing::{load_int8_fixtures, random_problem, ProblemBudget};

/// `[N, C, S]` -> `[N, S, C]`.
fn nchw_to_nhwc(v: &[u8], n: usize, c: usize, s: usize) -> Vec<u8> {
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

/// Runs `forward_int8` for `p` in both layouts and compares with the oracle; returns how many
/// codes were compared.
fn run_both_layouts(
    p: &ConvProblem,
    w: &[i8],
    w_zero: &[i32],
    x: &[u8],
    x_zero: i32,
    table: &RequantTable,
    what: &str,
) -> usize {
    let rt = Runtime::get(0).unwrap();
    let want = conv_int8_naive(p, w, w_zero, x, x_zero, table);
    let dw = DeviceInt8Weights::upload(0, p, w, w_zero).unwrap_or_else(|e| panic!("{what}: upload: {e}"));
    let in_sp: usize = p.in_size.iter().product();
    let out_sp: usize = p.out_size.iter().product();
    for layout in [Int8Layout::ChannelsFirst, Int8Layout::ChannelsLast] {
        let (xh, want) = match layout {
            Int8Layout::ChannelsFirst => (x.to_vec(), want.clone()),
            Int8Layout::ChannelsLast => {
                (nchw_to_nhwc(x, p.batch, p.in_channels, in_sp), nchw_to_nhwc(&want, p.batch, p.out_channels, out_sp))
            }
        };
        let xd = rt.htod(&xh, None).unwrap();
        // Poisoned output: every code must be written.
        let mut yd = rt.htod(&vec![0xA5u8; want.len().max(1)], None).unwrap();
        forward_int8(&dw, p, table, x_zero, &xd, layout, &mut yd, None)
            .unwrap_or_else(|e| panic!("{what} {layout:?}: forward_int8: {e}"));
        let got = rt.dtoh(&yd, None).unwrap();
        let bad: Vec<usize> = (0..want.len()).filter(|&i| got[i] != want[i]).collect();
        assert!(
            bad.is_empty(),
            "{what} {layout:?} {p:?}: {} of {} codes differ, first at {}: {} (oracle {})",
            bad.len(),
            want.len(),
            bad[0],
            got[bad[0]],
            want[bad[0]]
        );
    }
    want.len()
}

/// Random codes (extremes over-represented), zero points and a table that spreads the output.
#[allow(clippy::type_complexity)]
fn random_call(
    rng: &mut Rng,
    p: &ConvProblem,
    zp_mode: Option<usize>,
) -> (Vec<i8>, Vec<i32>, Vec<u8>, i32, RequantTable) {
    fn code(rng: &mut Rng, lo: i32, hi: i32) -> i32 {
        match pick(rng, 8) {
            0 => lo,
            1 => hi,
            _ => lo + pick(rng, (hi - lo + 1) as usize) as i32,
        }
    }
    let x: Vec<u8> = (0..p.input_len()).map(|_| code(rng, 0, 255) as u8).collect();
    let w: Vec<i8> = (0..p.weight_len()).map(|_| code(rng, -128, 127) as i8).collect();
    let x_zero = code(rng, 0, 255);
    let per_channel = if p.transposed { p.out_channels / p.groups } else { p.out_channels };
    // Weight zero points: 0 all zero (the symmetric entries), 1 per tensor, 2 per channel.
    let w_zero: Vec<i32> = match zp_mode.unwrap_or_else(|| pick(rng, 3)) {
        0 => vec![0],
        1 => vec![code(rng, -128, 127) | 1],
        _ => (0..per_channel).map(|_| code(rng, -128, 127)).collect(),
    };
    let acc = conv_int8_acc(p, &w, &w_zero, &x, x_zero);
    let peak = acc.iter().map(|a| a.unsigned_abs()).max().unwrap_or(1).max(1) as f64;
    let scales: Vec<f64> = (0..per_channel).map(|_| 0.001 + rng.uniform(0.0, 0.01) as f64).collect();
    let bias: Vec<f32> =
        (0..p.out_channels).map(|_| rng.uniform(-0.3, 0.3) * (peak * 0.02 * scales[0]) as f32).collect();
    let params = RequantParams {
        input_scale: 0.02,
        weight_scales: if pick(rng, 2) == 0 {
            WeightScales::PerChannel(&scales)
        } else {
            WeightScales::PerTensor(scales[0])
        },
        output_scale: 0.02 * 0.01 * peak / 100.0,
        output_zero_point: 60 + pick(rng, 140) as i32,
        bias: (pick(rng, 3) != 0).then_some(&bias[..]),
        relu: pick(rng, 3) == 0,
    };
    let table = RequantTable::new(p.transposed, p.out_channels, p.groups, &params).unwrap();
    (w, w_zero, x, x_zero, table)
}

#[test]
#[ignore = "needs a CUDA device"]
fn int8_random_problems_match_the_oracle() {
    if !gpu("int8_random_problems_match_the_oracle") {
        return;
    }
    let mut rng = Rng::new(0x1A8);
    let budget = ProblemBudget { max_macs: 2e6, max_output: 60_000 };
    let (mut done, mut codes) = (0, 0);
    while done < 120 {
        let Some(p) = random_problem(&mut rng, done % 3 == 0, budget) else { continue };
        let (w, w_zero, x, x_zero, table) = random_call(&mut rng, &p, None);
        codes += run_both_layouts(&p, &w, &w_zero, &x, x_zero, &table, &format!("random problem {done}"));
        done += 1;
    }
    eprintln!("int8: {done} random problems, {codes} codes per layout, exact");
}

#[test]
#[ignore = "needs a CUDA device"]
fn int8_pytorch_fixtures_run_on_cuda() {
    if !gpu("int8_pytorch_fixtures_run_on_cuda") {
        return;
    }
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/int8.safetensors"));
    let fixtures = load_int8_fixtures(path).unwrap();
    assert_eq!(fixtures.len(), 74);
    for f in &fixtures {
        assert_eq!(f.want.len(), run_both_layouts(&f.problem, &f.w, &f.w_zero, &f.x, f.x_zero, &f.table, &f.name));
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn int8_large_tiles_int32_bound_and_refusal() {
    if !gpu("int8_large_tiles_int32_bound_and_refusal") {
        return;
    }
    let mut rng = Rng::new(0x1A9);
    let base = ConvProblem {
        transposed: false,
        batch: 2,
        in_channels: 256,
        out_channels: 256,
        groups: 1,
        in_size: [1, 14, 14],
        out_size: [1, 14, 14],
        kernel: [1, 3, 3],
        stride: [1; 3],
        pad: [0, 1, 1],
        dilation: [1; 3],
        pad_mode: PaddingMode::Zeros,
    };
    // Every tile: 256 channels (128x128 when symmetric), a transposed 4x4 stride-2 (phases), a
    // stem, depthwise with a multiplier, grouped reflect.
    let problems = [
        base.clone(),
        ConvProblem {
            transposed: true,
            in_size: [1, 7, 7],
            kernel: [1, 4, 4],
            stride: [1, 2, 2],
            out_size: [1, 14, 14],
            out_channels: 128,
            ..base.clone()
        },
        ConvProblem {
            in_channels: 3,
            out_channels: 64,
            in_size: [1, 32, 32],
            kernel: [1, 7, 7],
            stride: [1, 2, 2],
            pad: [0, 3, 3],
            out_size: [1, 16, 16],
            ..base.clone()
        },
        ConvProblem { in_channels: 64, out_channels: 128, groups: 64, ..base.clone() },
        ConvProblem { in_channels: 96, out_channels: 96, groups: 3, pad_mode: PaddingMode::Reflect, ..base.clone() },
    ];
    for (i, p) in problems.iter().enumerate() {
        for _ in 0..2 {
            let (w, w_zero, x, x_zero, table) = random_call(&mut rng, p, None);
            run_both_layouts(p, &w, &w_zero, &x, x_zero, &table, &format!("large case {i}"));
        }
    }
    // 33,025 terms at their extremes: the accumulator is -2,147,450,625 (just above -2^31).
    let n = 33_025;
    let bound = ConvProblem {
        batch: 1,
        in_channels: n,
        out_channels: 8,
        in_size: [1; 3],
        out_size: [1; 3],
        kernel: [1; 3],
        pad: [0; 3],
        ..base.clone()
    };
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
        run_both_layouts(&bound, &vec![w; bound.weight_len()], &[w_zero], &vec![x; n], x_zero, &table, "int32 bound");
    }
    // One more term: refused with a typed error, not computed inexactly.
    let over = ConvProblem { in_channels: n + 1, ..bound };
    assert!(int8_can_run(&bound) && !int8_can_run(&over));
    match DeviceInt8Weights::upload(0, &over, &vec![0; over.weight_len()], &[0]) {
        Err(Error::Unsupported { .. }) => {}
        other => panic!("expected Unsupported past 33,025 terms, got {other:?}"),
    }
}

/// A few small int8 calls that launch every kind of int8 entry point (symmetric and `*_wzp`
/// tiles, forward and transposed, the channel copy from NCHW and for a 3-channel stem, the
/// depthwise kernel), each checked against the oracle: run by `sanitizer_smoke` under
/// compute-sanitizer's memcheck and racecheck.
pub(crate) fn int8_smoke(rng: &mut Rng) {
    let base = ConvProblem {
        transposed: false,
        batch: 2,
        in_channels: 16,
        out_channels: 20,
        groups: 1,
        in_size: [1, 7, 9],
        out_size: [1, 7, 9],
        kernel: [1, 3, 3],
        stride: [1; 3],
        pad: [0, 1, 1],
        dilation: [1; 3],
        pad_mode: PaddingMode::Zeros,
    };
    let problems = [
        base.clone(),
        ConvProblem { in_channels: 3, out_channels: 70, pad_mode: PaddingMode::Reflect, ..base.clone() },
        ConvProblem { transposed: true, kernel: [1, 4, 4], stride: [1, 2, 2], out_size: [1, 14, 18], ..base.clone() },
        ConvProblem { in_channels: 8, out_channels: 16, groups: 8, ..base.clone() },
    ];
    for (i, p) in problems.iter().enumerate() {
        for zp_mode in 0..3 {
            let (w, w_zero, x, x_zero, table) = random_call(rng, p, Some(zp_mode));
            run_both_layouts(p, &w, &w_zero, &x, x_zero, &table, &format!("int8 smoke {i}"));
        }
    }
}
