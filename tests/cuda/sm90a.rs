//! The opt-in Hopper kernel (`cuda/conv_wg.cu`, sm_90a: wgmma + TMA), on a device of compute
//! capability 9.0; elsewhere these tests check that it is refused and never taken. Never run on
//! a GPU yet: docs/gpu-results.md lists what they are to confirm.

use super::*;
use qconv::cuda::ops::conv_wg;
use qconv::cuda::ops::params::ConvIo;
use qconv::cuda::pack::tc_weight_row;
use qconv::problem::ConvProblem;

fn hopper() -> bool {
    Runtime::get(0).unwrap().info().compute_capability == (9, 0)
}

/// A forward problem (1-d/2-d/3-d through leading 1s), groups 1, zero padding.
#[allow(clippy::too_many_arguments)]
fn problem(
    n: usize,
    c: usize,
    k: usize,
    in_size: [usize; 3],
    kernel: [usize; 3],
    stride: [usize; 3],
    pad: [usize; 3],
    dil: [usize; 3],
) -> ConvProblem {
    let out = std::array::from_fn(|d| (in_size[d] + 2 * pad[d] - dil[d] * (kernel[d] - 1) - 1) / stride[d] + 1);
    ConvProblem {
        transposed: false,
        batch: n,
        in_channels: c,
        out_channels: k,
        groups: 1,
        in_size,
        out_size: out,
        kernel,
        stride,
        pad,
        dilation: dil,
        pad_mode: PaddingMode::Zeros,
    }
}

/// The problems of the direct comparison: every im2col rank, padding, stride, dilation, C below,
/// at and above one 64-channel chunk, K and M tails, many k-steps (the stage ring wraps).
fn problems() -> Vec<ConvProblem> {
    vec![
        problem(2, 16, 24, [1, 9, 7], [1, 3, 3], [1; 3], [0, 1, 1], [1; 3]),
        problem(3, 72, 136, [1, 6, 11], [1, 3, 2], [1, 2, 1], [0, 1, 0], [1, 1, 2]),
        problem(2, 24, 8, [1, 1, 40], [1, 1, 5], [1, 1, 3], [0, 0, 2], [1, 1, 2]),
        problem(1, 16, 16, [4, 5, 6], [3, 2, 3], [2, 1, 1], [1, 0, 1], [1; 3]),
        problem(2, 8, 32, [1, 12, 12], [1, 7, 7], [1, 2, 2], [0, 3, 3], [1; 3]),
        problem(4, 128, 256, [1, 28, 28], [1, 3, 3], [1; 3], [0, 1, 1], [1; 3]),
    ]
}

/// Runs `pr` through `conv_device_wg` and `conv_device_tc` with the same integer-valued f16/bf16
/// data (every sum exact in f32): the outputs must be identical bit for bit.
fn wg_equals_tc(rt: &Runtime, pr: &ConvProblem, dtype: DType, out_nhwc: bool, bias: bool, rng: &mut Rng) {
    let bits = |v: f32| match dtype {
        DType::BF16 => bf16::from_f32(v).to_bits(),
        _ => f16::from_f32(v).to_bits(),
    };
    let int = |rng: &mut Rng| (rng.next_u64() % 7) as f32 - 3.0;
    let taps: usize = pr.kernel.iter().product();
    let row = tc_weight_row(pr.in_channels, taps);
    let x: Vec<u8> = (0..pr.input_len()).flat_map(|_| bits(int(rng)).to_le_bytes()).collect();
    let w: Vec<u16> = (0..pr.out_channels * row).map(|_| bits(int(rng))).collect();
    let b: Vec<f32> = (0..pr.out_channels).map(|_| 4.0 * int(rng)).collect();
    let (xd, wd, bd) = (rt.htod(&x, None).unwrap(), rt.htod(&w, None).unwrap(), rt.htod(&b, None).unwrap());
    let out_bytes = pr.output_len() * 2;
    let (mut y_wg, mut y_tc) = (rt.zeros::<u8>(out_bytes, None).unwrap(), rt.zeros::<u8>(out_bytes, None).unwrap());
    let bias = bias.then_some(&bd);
    let what = format!("{pr:?} {dtype} nhwc {out_nhwc}");
    rt.conv_device_wg(pr, dtype, &wd, ConvIo { x: &xd, y: &mut y_wg, bias }, out_nhwc, None)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let tw = qconv::cuda::ops::conv_tc::TcWeight::Half(&wd);
    rt.conv_device_tc(pr, dtype, tw, ConvIo { x: &xd, y: &mut y_tc, bias }, out_nhwc, None).unwrap();
    let (a, b) = (rt.dtoh(&y_wg, None).unwrap(), rt.dtoh(&y_tc, None).unwrap());
    if let Some(i) = (0..a.len()).step_by(2).find(|&i| a[i..i + 2] != b[i..i + 2]) {
        panic!("{what}: element {} differs: wgmma {:?}, mma.sync {:?}", i / 2, &a[i..i + 2], &b[i..i + 2]);
    }
}

/// The Hopper kernel against the mma.sync tiles, bit for bit on integer data (both sum exactly):
/// every case, f16 and bf16, channels-last and NCHW outputs, with and without bias.
#[test]
#[ignore = "needs a CUDA device"]
fn sm90a_kernel_matches_the_mma_sync_tiles_bit_for_bit() {
    if !gpu("sm90a_kernel_matches_the_mma_sync_tiles_bit_for_bit") {
        return;
    }
    let rt = Runtime::get(0).unwrap();
    let mut rng = Rng::new(90);
    if !hopper() {
        // Elsewhere the kernel is refused with a typed error, before anything runs.
        let pr = &problems()[0];
        let w = rt.zeros::<u16>(pr.out_channels * tc_weight_row(pr.in_channels, 9), None).unwrap();
        let x = rt.zeros::<u8>(pr.input_len() * 2, None).unwrap();
        let mut y = rt.zeros::<u8>(pr.output_len() * 2, None).unwrap();
        let r = rt.conv_device_wg(pr, DType::F16, &w, ConvIo { x: &x, y: &mut y, bias: None }, true, None);
        assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
        println!("not compute capability 9.0: the sm_90a kernel is refused (checked); nothing else to run");
        return;
    }
    for (i, pr) in problems().iter().enumerate() {
        assert!(conv_wg::can_run(pr, DType::F16), "{pr:?}");
        for (dtype, out_nhwc) in [(DType::F16, true), (DType::BF16, false), (DType::F16, false), (DType::BF16, true)] {
            wg_equals_tc(&rt, pr, dtype, out_nhwc, i % 2 == 0, &mut rng);
        }
    }
}

/// `Precision::TensorCoreSm90a` through the module API: forward convolutions against the
/// rounded-weight oracle, both layouts (channels-first inputs are transposed for the kernel),
/// and equal to `TensorCore` within the same tolerance; problems the kernel does not take
/// (groups, reflect padding, C not a multiple of 8) still run (on the mma.sync tiles).
#[test]
#[ignore = "needs a CUDA device"]
fn sm90a_precision_matches_the_rounded_weight_oracle() {
    if !gpu("sm90a_precision_matches_the_rounded_weight_oracle") {
        return;
    }
    let mut rng = Rng::new(91);
    type Case = (usize, usize, usize, [usize; 2], [usize; 2], [usize; 2], [usize; 2], PaddingMode, usize, [usize; 2]);
    let cases: Vec<Case> = vec![
        (16, 20, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 2, [9, 11]),
        (64, 136, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 4, [30, 30]),
        (8, 64, 1, [7, 7], [2, 2], [3, 3], [1, 1], PaddingMode::Zeros, 2, [40, 36]),
        (96, 40, 1, [3, 2], [2, 1], [1, 0], [2, 1], PaddingMode::Zeros, 3, [13, 10]),
        // Not taken by the Hopper kernel: groups, reflect padding, C % 8 != 0.
        (32, 48, 2, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 2, [9, 9]),
        (16, 24, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Reflect, 2, [6, 8]),
        (3, 16, 1, [7, 7], [2, 2], [3, 3], [1, 1], PaddingMode::Zeros, 2, [30, 27]),
    ];
    for (c, k, groups, kernel, stride, pad, dil, mode, n, hw) in cases {
        let o = ConvOptions::<2>::new()
            .kernel_size(kernel)
            .stride(stride)
            .padding(Padding::Explicit(pad))
            .dilation(dil)
            .groups(groups)
            .padding_mode(mode);
        let m = observed_conv2d(&mut rng, c, k, o);
        for dtype in [DType::F16, DType::BF16] {
            let x = make_input(&mut rng, &[n, c, hw[0], hw[1]], dtype);
            check_tensor_core_with(&m, &x, Precision::TensorCoreSm90a, &format!("{m}"));
        }
    }
    let o3 = ConvOptions::<3>::new().kernel_size([3, 3, 3]).padding(Padding::Explicit([1, 1, 1]));
    let s3 = qconv::Conv3d::weight_shape(16, 24, &o3).unwrap();
    let m3 = qconv::Conv3d::from_float_observed(
        Tensor::from_vec(rng.vec(s3.iter().product(), -0.5, 0.5), &s3).unwrap(),
        Some(Tensor::from_vec(rng.vec(24, -0.5, 0.5), &[24]).unwrap()),
        o3,
    )
    .unwrap();
    let o1 = ConvOptions::<1>::new().kernel_size([5]).stride([2]).padding(Padding::Explicit([2]));
    let s1 = qconv::Conv1d::weight_shape(32, 16, &o1).unwrap();
    let m1 = qconv::Conv1d::from_float_observed(
        Tensor::from_vec(rng.vec(s1.iter().product(), -0.5, 0.5), &s1).unwrap(),
        None,
        o1,
    )
    .unwrap();
    // 'same' padding with an even kernel: the extra output at the end (the pixel box's upper
    // corner comes from the output size, not from the padding).
    let same = ConvOptions::<2>::new().kernel_size([4, 4]).padding(Padding::Same).dilation([1, 2]);
    let ms = observed_conv2d(&mut rng, 24, 40, same);
    for dtype in [DType::F16, DType::BF16] {
        check_tensor_core_with(&ms, &make_input(&mut rng, &[2, 24, 11, 13], dtype), Precision::TensorCoreSm90a, "same");
        check_tensor_core_with(&m3, &make_input(&mut rng, &[2, 16, 6, 7, 8], dtype), Precision::TensorCoreSm90a, "c3d");
        check_tensor_core_with(&m1, &make_input(&mut rng, &[3, 32, 100], dtype), Precision::TensorCoreSm90a, "c1d");
    }
}

/// A few small launches of the Hopper kernel for compute-sanitizer (memcheck) in
/// scripts/gpu-check.sh: ragged M and K tiles, padding reads, both output layouts.
#[test]
#[ignore = "needs a CUDA device"]
fn sm90a_sanitizer_smoke() {
    if !gpu("sm90a_sanitizer_smoke") {
        return;
    }
    if !hopper() {
        println!("not compute capability 9.0: nothing to run");
        return;
    }
    let rt = Runtime::get(0).unwrap();
    let mut rng = Rng::new(92);
    for pr in &problems()[..3] {
        wg_equals_tc(&rt, pr, DType::F16, true, true, &mut rng);
        wg_equals_tc(&rt, pr, DType::BF16, false, false, &mut rng);
    }
}
