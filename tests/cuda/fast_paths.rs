//! The fast paths against their own oracles: tensor cores (forward and transposed) against the
//! rounded-weight oracle, channels-last against channels-first, 8-bit code storage against float
//! storage, TF32 against the TF32-rounded oracle.

use super::*;

/// Tensor cores (f16/bf16): every tile, ragged tiles in both GEMM dimensions, groups, stride,
/// dilation, every padding mode, 1-d/2-d/3-d, reduction lengths that are not multiples of 32.
#[test]
#[ignore = "needs a CUDA device"]
fn tensor_core_convolutions_match_the_rounded_weight_oracle() {
    if !gpu("tensor_core_convolutions_match_the_rounded_weight_oracle") {
        return;
    }
    let mut rng = Rng::new(1234);
    // (C, K, groups, kernel, stride, padding, dilation, mode, batch, input)
    type Case = (usize, usize, usize, [usize; 2], [usize; 2], [usize; 2], [usize; 2], PaddingMode, usize, [usize; 2]);
    let cases: Vec<Case> = vec![
        (16, 20, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 2, [9, 11]),
        (8, 136, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 4, [96, 96]), // 128x128 tiles
        (16, 40, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 4, [96, 96]), // 128x64 tiles
        (32, 48, 2, [3, 3], [2, 2], [2, 2], [2, 2], PaddingMode::Reflect, 2, [13, 10]),
        (24, 16, 1, [3, 2], [1, 2], [1, 1], [1, 1], PaddingMode::Replicate, 3, [7, 9]),
        (16, 24, 1, [3, 3], [1, 1], [2, 1], [1, 1], PaddingMode::Circular, 2, [6, 8]),
        (8, 8, 1, [1, 1], [1, 1], [0, 0], [1, 1], PaddingMode::Zeros, 2, [5, 7]),
        (64, 72, 4, [1, 1], [1, 1], [0, 0], [1, 1], PaddingMode::Zeros, 2, [15, 15]),
        (40, 8, 1, [5, 5], [3, 2], [2, 2], [1, 1], PaddingMode::Zeros, 1, [23, 19]),
        // Few output positions, long reductions: split-K (partial sums + ordered reduction).
        (512, 64, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 1, [7, 7]),
        (256, 96, 2, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 2, [5, 5]),
        // C/groups not a multiple of 8: the input's channels padded to 8 (qc_pad_channels) for the
        // 16-byte loader (a stem; C/groups 12; reflect; circular).
        (3, 16, 1, [7, 7], [2, 2], [3, 3], [1, 1], PaddingMode::Zeros, 2, [30, 27]),
        (24, 40, 2, [3, 3], [1, 1], [1, 1], [1, 2], PaddingMode::Reflect, 2, [9, 12]),
        (5, 70, 1, [2, 3], [1, 1], [0, 1], [1, 1], PaddingMode::Circular, 3, [6, 5]),
        // One input channel per group (16 outputs each): the element-wise loader.
        (4, 64, 4, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Reflect, 2, [9, 12]),
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
            check_tensor_core(&m, &x, &format!("{m}"));
        }
    }
    let o1 = ConvOptions::<1>::new().kernel_size([5]).padding(Padding::Explicit([2]));
    let s1 = qconv::Conv1d::weight_shape(8, 16, &o1).unwrap();
    let m1 = qconv::Conv1d::from_float_observed(
        Tensor::from_vec(rng.vec(s1.iter().product(), -0.5, 0.5), &s1).unwrap(),
        None,
        o1,
    )
    .unwrap();
    let o3 = ConvOptions::<3>::new().kernel_size([3, 3, 3]).padding(Padding::Explicit([1, 1, 1]));
    let s3 = qconv::Conv3d::weight_shape(8, 8, &o3).unwrap();
    let m3 = qconv::Conv3d::from_float_observed(
        Tensor::from_vec(rng.vec(s3.iter().product(), -0.5, 0.5), &s3).unwrap(),
        Some(Tensor::from_vec(rng.vec(8, -0.5, 0.5), &[8]).unwrap()),
        o3,
    )
    .unwrap();
    for dtype in [DType::F16, DType::BF16] {
        check_tensor_core(&m1, &make_input(&mut rng, &[3, 8, 100], dtype), &format!("{m1}"));
        check_tensor_core(&m3, &make_input(&mut rng, &[2, 8, 6, 7, 8], dtype), &format!("{m3}"));
    }
}

/// Tensor cores for transposed convolutions (phase decomposition): strides with phases that have
/// no active tap, dilation, groups, output_padding, 1-d/2-d/3-d, ragged tiles.
#[test]
#[ignore = "needs a CUDA device"]
fn tensor_core_transposed_convolutions_match_the_rounded_weight_oracle() {
    if !gpu("tensor_core_transposed_convolutions_match_the_rounded_weight_oracle") {
        return;
    }
    let mut rng = Rng::new(4242);
    // (C, K, groups, kernel, stride, padding, output_padding, dilation, batch, input)
    type Case = (usize, usize, usize, [usize; 2], [usize; 2], [usize; 2], [usize; 2], [usize; 2], usize, [usize; 2]);
    let cases: Vec<Case> = vec![
        (16, 24, 1, [4, 4], [2, 2], [1, 1], [0, 0], [1, 1], 2, [7, 6]),
        (16, 136, 1, [4, 4], [2, 2], [1, 1], [0, 0], [1, 1], 8, [28, 28]), // 128x128, ragged channels
        (16, 40, 1, [4, 4], [2, 2], [1, 1], [0, 0], [1, 1], 1, [16, 16]),  // 64x64
        (16, 16, 2, [3, 3], [2, 1], [1, 0], [1, 0], [2, 1], 2, [5, 7]),
        (8, 12, 1, [2, 2], [3, 3], [0, 0], [2, 1], [1, 1], 2, [4, 5]), // phases without taps
        (24, 8, 1, [1, 1], [1, 1], [0, 0], [0, 0], [1, 1], 3, [6, 6]),
    ];
    for (c, k, groups, kernel, stride, pad, opad, dil, n, hw) in cases {
        let o = ConvOptions::<2>::new()
            .kernel_size(kernel)
            .stride(stride)
            .padding(Padding::Explicit(pad))
            .output_padding(opad)
            .dilation(dil)
            .groups(groups);
        let shape = qconv::ConvTranspose2d::weight_shape(c, k, &o).unwrap();
        let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
        let b = Tensor::from_vec(rng.vec(k, -0.5, 0.5), &[k]).unwrap();
        let m = qconv::ConvTranspose2d::from_float_observed(w, Some(b), o).unwrap();
        for dtype in [DType::F16, DType::BF16] {
            let x = make_input(&mut rng, &[n, c, hw[0], hw[1]], dtype);
            check_tensor_core(&m, &x, &format!("{m}"));
        }
    }
    let o1 = ConvOptions::<1>::new().kernel_size([5]).stride([3]).padding(Padding::Explicit([2]));
    let s1 = qconv::ConvTranspose1d::weight_shape(8, 16, &o1).unwrap();
    let m1 = qconv::ConvTranspose1d::from_float_observed(
        Tensor::from_vec(rng.vec(s1.iter().product(), -0.5, 0.5), &s1).unwrap(),
        None,
        o1,
    )
    .unwrap();
    let o3 = ConvOptions::<3>::new().kernel_size([2, 3, 2]).stride([2, 1, 2]).padding(Padding::Explicit([0, 1, 0]));
    let s3 = qconv::ConvTranspose3d::weight_shape(8, 8, &o3).unwrap();
    let m3 = qconv::ConvTranspose3d::from_float_observed(
        Tensor::from_vec(rng.vec(s3.iter().product(), -0.5, 0.5), &s3).unwrap(),
        Some(Tensor::from_vec(rng.vec(8, -0.5, 0.5), &[8]).unwrap()),
        o3,
    )
    .unwrap();
    for dtype in [DType::F16, DType::BF16] {
        check_tensor_core(&m1, &make_input(&mut rng, &[3, 8, 20], dtype), &format!("{m1}"));
        check_tensor_core(&m3, &make_input(&mut rng, &[2, 8, 3, 4, 5], dtype), &format!("{m3}"));
    }
}

/// Channels-last inputs where the tensor cores do not apply (f32, exact precision, depthwise,
/// transposed): the layout kernels around the channels-first kernels give exactly the
/// channels-first result.
#[test]
#[ignore = "needs a CUDA device"]
fn channels_last_matches_channels_first_everywhere() {
    if !gpu("channels_last_matches_channels_first_everywhere") {
        return;
    }
    let mut rng = Rng::new(4321);
    let o = ConvOptions::<2>::new().kernel_size([3, 3]).padding(Padding::Explicit([1, 1])).groups(16);
    let shape = qconv::Conv2d::weight_shape(16, 32, &o).unwrap();
    let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let dw = qconv::Conv2d::from_float_observed(w, Some(Tensor::from_vec(rng.vec(32, -0.5, 0.5), &[32]).unwrap()), o)
        .unwrap()
        .to_device(CUDA)
        .unwrap();
    let o = ConvOptions::<2>::new().kernel_size([3, 3]).padding(Padding::Explicit([1, 1]));
    let shape = qconv::Conv2d::weight_shape(16, 24, &o).unwrap();
    let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let dense =
        qconv::Conv2d::from_float_observed(w, Some(Tensor::from_vec(rng.vec(24, -0.5, 0.5), &[24]).unwrap()), o)
            .unwrap()
            .to_device(CUDA)
            .unwrap();
    let exact = dense.clone().with_precision(Precision::Exact);
    // groups == C == K (a multiple of 8): the channels-last depthwise kernel, both layouts.
    let o = ConvOptions::<2>::new()
        .kernel_size([3, 3])
        .stride([2, 1])
        .dilation([2, 1])
        .padding(Padding::Explicit([2, 1]))
        .padding_mode(PaddingMode::Reflect)
        .groups(16);
    let shape = qconv::Conv2d::weight_shape(16, 16, &o).unwrap();
    let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let dw8_cpu =
        qconv::Conv2d::from_float_observed(w, Some(Tensor::from_vec(rng.vec(16, -0.5, 0.5), &[16]).unwrap()), o)
            .unwrap();
    let dw8 = dw8_cpu.to_device(CUDA).unwrap();
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let x = make_input(&mut rng, &[2, 16, 9, 10], dtype);
        check_module(&dw8_cpu, &x, "depthwise, channels-last kernel");
        let (xd, xl) = (x.to_device(CUDA).unwrap(), channels_last(&x).to_device(CUDA).unwrap());
        for (name, m) in [("depthwise x2", &dw), ("depthwise", &dw8), ("dense", &dense), ("dense exact", &exact)] {
            let a = m.forward(&xd).unwrap().to_device(Device::Cpu).unwrap();
            let b = m.forward_channels_last(&xl).unwrap().to_device(Device::Cpu).unwrap();
            assert_eq!(channels_first(&b), a, "{name} {dtype}");
        }
        // The CPU path agrees with the exact CUDA path within the f32 tolerance, both layouts.
        let cpu = exact.to_device(Device::Cpu).unwrap();
        let yc = cpu.forward_channels_last(&channels_last(&x)).unwrap();
        assert_eq!(channels_first(&yc), cpu.forward(&x).unwrap());
    }
    let o = ConvOptions::<2>::new().kernel_size([4, 4]).stride([2, 2]).padding(Padding::Explicit([1, 1]));
    let shape = qconv::ConvTranspose2d::weight_shape(8, 12, &o).unwrap();
    let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let tr = qconv::ConvTranspose2d::from_float_observed(
        w,
        Some(Tensor::from_vec(rng.vec(12, -0.5, 0.5), &[12]).unwrap()),
        o,
    )
    .unwrap()
    .to_device(CUDA)
    .unwrap();
    for dtype in [DType::F32, DType::F16] {
        let x = make_input(&mut rng, &[2, 8, 7, 6], dtype);
        let a = tr.forward(&x.to_device(CUDA).unwrap()).unwrap().to_device(Device::Cpu).unwrap();
        let b = tr.forward_channels_last(&channels_last(&x).to_device(CUDA).unwrap()).unwrap();
        assert_eq!(channels_first(&b.to_device(Device::Cpu).unwrap()), a, "transposed {dtype}");
    }
}

/// `WeightStorage::Int8Codes`: every kernel family (tensor-core tiles incl. split-K, the
/// element-wise loader with a reduction that is not a multiple of 8, transposed tiles, depthwise,
/// the CUDA-core fallbacks, exact precision, f32), signed and unsigned codes, per-tensor and
/// per-channel qparams, after set_weight; 4x less device memory than the float32 weight.
#[test]
#[ignore = "needs a CUDA device"]
fn int8_code_storage_is_bit_identical_to_float_storage() {
    if !gpu("int8_code_storage_is_bit_identical_to_float_storage") {
        return;
    }
    let mut rng = Rng::new(88);
    // (C, K, groups, kernel, stride, padding, dilation, mode, batch, input)
    type Case = (usize, usize, usize, [usize; 2], [usize; 2], [usize; 2], [usize; 2], PaddingMode, usize, [usize; 2]);
    let cases: Vec<Case> = vec![
        (16, 20, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 2, [9, 11]),
        (8, 136, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 4, [48, 48]), // 128x128
        (16, 40, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 4, [40, 40]), // 128x64
        (32, 48, 2, [3, 3], [2, 2], [2, 2], [2, 2], PaddingMode::Reflect, 2, [13, 10]),
        (512, 64, 1, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 1, [7, 7]), // split-K
        (3, 16, 1, [7, 7], [2, 2], [3, 3], [1, 1], PaddingMode::Zeros, 2, [30, 27]), // padded to 8
        (5, 70, 1, [2, 3], [1, 1], [0, 1], [1, 1], PaddingMode::Circular, 3, [6, 5]), // padded to 8
        (24, 32, 2, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Reflect, 2, [9, 8]), // 12 -> 16
        (4, 64, 4, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 2, [9, 12]),  // gather, 9
        (16, 16, 16, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Zeros, 2, [9, 10]), // depthwise kernel
        (16, 32, 16, [3, 3], [2, 1], [1, 1], [1, 1], PaddingMode::Zeros, 2, [9, 10]), // CUDA cores
        (6, 4, 2, [3, 3], [1, 1], [1, 1], [1, 1], PaddingMode::Replicate, 2, [8, 8]), // CUDA cores
    ];
    for (i, (c, k, groups, kernel, stride, pad, dil, mode, n, hw)) in cases.into_iter().enumerate() {
        let o = ConvOptions::<2>::new()
            .kernel_size(kernel)
            .stride(stride)
            .padding(Padding::Explicit(pad))
            .dilation(dil)
            .groups(groups)
            .padding_mode(mode);
        let shape = qconv::Conv2d::weight_shape(c, k, &o).unwrap();
        let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
        let b = (i % 2 == 0).then(|| Tensor::from_vec(rng.vec(k, -0.5, 0.5), &[k]).unwrap());
        let m = qconv::Conv2d::from_float_observed(w.clone(), b.clone(), o).unwrap();
        check_code_storage(&m, &[n, c, hw[0], hw[1]], &mut rng);
        if i == 0 {
            // Unsigned codes, per tensor (zero point 128).
            let qp = qconv::WeightQParams::per_tensor(0.004, 128, QuantDType::QUInt8);
            let mq = qconv::Conv2d::from_float(w, b, qp, o).unwrap();
            check_code_storage(&mq, &[n, c, hw[0], hw[1]], &mut rng);
            // set_weight re-uploads the codes.
            let mut moved = mq.with_weight_storage(WeightStorage::Int8Codes).unwrap().to_device(CUDA).unwrap();
            let w2 = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
            moved.set_weight(w2.clone()).unwrap();
            let mut float = moved.clone().with_weight_storage(WeightStorage::Float).unwrap();
            float.set_weight(w2).unwrap();
            let x = make_input(&mut rng, &[n, c, hw[0], hw[1]], DType::F16).to_device(CUDA).unwrap();
            let a = moved.forward(&x).unwrap().to_device(Device::Cpu).unwrap();
            assert_eq!(a, float.forward(&x).unwrap().to_device(Device::Cpu).unwrap(), "after set_weight");
        }
    }
    // Transposed: tensor-core tiles (128x128, 64x64, groups) and the CUDA-core fallback (C/groups 5).
    for (c, k, groups, kernel, stride, n, hw) in [
        (16usize, 136usize, 1usize, [4usize, 4usize], [2usize, 2usize], 4usize, [14usize, 14usize]),
        (16, 40, 1, [4, 4], [2, 2], 1, [16, 16]),
        (16, 16, 2, [3, 3], [2, 1], 2, [5, 7]),
        (5, 12, 1, [3, 3], [2, 2], 2, [6, 5]),
    ] {
        let o = ConvOptions::<2>::new()
            .kernel_size(kernel)
            .stride(stride)
            .padding(Padding::Explicit([1, 1]))
            .groups(groups);
        let shape = qconv::ConvTranspose2d::weight_shape(c, k, &o).unwrap();
        let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
        let b = Tensor::from_vec(rng.vec(k, -0.5, 0.5), &[k]).unwrap();
        let m = qconv::ConvTranspose2d::from_float_observed(w.clone(), Some(b.clone()), o).unwrap();
        check_code_storage(&m, &[n, c, hw[0], hw[1]], &mut rng);
        // Per channel along axis 1 (the output channels of a transposed weight).
        let qp = qconv::WeightQParams::per_channel_symmetric_from_weight(&w, 1, QuantDType::QInt8).unwrap();
        let m = qconv::ConvTranspose2d::from_float(w, Some(b), qp, o).unwrap();
        check_code_storage(&m, &[n, c, hw[0], hw[1]], &mut rng);
    }
    // 1-d and 3-d.
    let o1 = ConvOptions::<1>::new().kernel_size([5]).padding(Padding::Explicit([2]));
    let s1 = qconv::Conv1d::weight_shape(8, 16, &o1).unwrap();
    let w1 = Tensor::from_vec(rng.vec(s1.iter().product(), -0.5, 0.5), &s1).unwrap();
    let bytes = check_code_storage(&qconv::Conv1d::from_float_observed(w1, None, o1).unwrap(), &[3, 8, 100], &mut rng);
    assert_eq!(bytes, 16 * 40 + 8 * 16);
    let o3 = ConvOptions::<3>::new().kernel_size([3, 3, 3]).padding(Padding::Explicit([1, 1, 1]));
    let s3 = qconv::Conv3d::weight_shape(8, 8, &o3).unwrap();
    let w3 = Tensor::from_vec(rng.vec(s3.iter().product(), -0.5, 0.5), &s3).unwrap();
    let b3 = Tensor::from_vec(rng.vec(8, -0.5, 0.5), &[8]).unwrap();
    check_code_storage(&qconv::Conv3d::from_float_observed(w3, Some(b3), o3).unwrap(), &[2, 8, 6, 7, 8], &mut rng);
}

/// `Precision::Tf32` with f32 activations: forward (every tile, split-K, groups, padding modes,
/// 1-d/3-d) and transposed convolutions on the TF32 tensor cores, against the f64 oracle over the
/// TF32-rounded weight and input (round to nearest, ties away: a truncating kernel fails the
/// tolerance, which only allows for f32 accumulation); channels-first and channels-last agree bit
/// for bit; problems the TF32 tiles do not take (C/groups 12 with 8 outputs, depthwise) and code storage
/// give the exact path's output.
#[test]
#[ignore = "needs a CUDA device"]
fn tf32_precision_matches_the_tf32_rounded_oracle() {
    use qconv::cuda::runtime::tf32_round;
    if !gpu("tf32_precision_matches_the_tf32_rounded_oracle") {
        return;
    }
    let mut rng = Rng::new(3232);
    fn check<const D: usize, const T: bool>(m: &ConvModule<D, T>, x: &Tensor, what: &str)
    where
        ConvModule<D, T>: Fwd + ClFwd,
    {
        let md = m.to_device(CUDA).unwrap().with_precision(Precision::Tf32);
        let y = md.fwd(&x.to_device(CUDA).unwrap()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let y = y.to_device(Device::Cpu).unwrap();
        let yl = md.fwd_last(&channels_last(x).to_device(CUDA).unwrap()).unwrap().to_device(Device::Cpu).unwrap();
        assert_eq!(channels_first(&yl), y, "{what}: the two layouts differ");
        let w: Vec<f32> = m.get_weight().to_vec_f32().unwrap().into_iter().map(tf32_round).collect();
        let xr = Tensor::from_vec(x.to_vec_f32().unwrap().into_iter().map(tf32_round).collect(), x.shape()).unwrap();
        let (want, mag) = oracle_with_weight(m, &xr, &w);
        let got = y.to_vec_f32().unwrap();
        for i in 0..want.len() {
            let tol = 8.0 * f32::EPSILON as f64 * mag[i] + 1e-30;
            assert!(
                (got[i] as f64 - want[i]).abs() <= tol,
                "{what}: output[{i}] = {} want {} (tol {tol:e})",
                got[i],
                want[i]
            );
        }
    }
    // (C, K, groups, kernel, stride, padding, mode, batch, input)
    type Case = (usize, usize, usize, [usize; 2], [usize; 2], [usize; 2], PaddingMode, usize, [usize; 2]);
    let cases: Vec<Case> = vec![
        (16, 20, 1, [3, 3], [1, 1], [1, 1], PaddingMode::Zeros, 2, [9, 11]),
        (8, 136, 1, [3, 3], [1, 1], [1, 1], PaddingMode::Zeros, 4, [48, 48]), // 128x128
        (16, 40, 1, [3, 3], [1, 1], [1, 1], PaddingMode::Zeros, 4, [40, 40]), // 128x64
        (32, 48, 2, [3, 3], [2, 2], [2, 2], PaddingMode::Reflect, 2, [13, 10]),
        (512, 64, 1, [3, 3], [1, 1], [1, 1], PaddingMode::Zeros, 1, [7, 7]), // split-K
        (24, 16, 1, [3, 2], [1, 2], [1, 1], PaddingMode::Circular, 3, [7, 9]),
        // Channels padded to 8 / 16 for the TF32 tiles (no element-wise loader there).
        (3, 16, 1, [7, 7], [2, 2], [3, 3], PaddingMode::Zeros, 2, [30, 27]),
        (24, 40, 2, [3, 3], [1, 1], [1, 1], PaddingMode::Reflect, 2, [9, 12]),
    ];
    for (c, k, groups, kernel, stride, pad, mode, n, hw) in cases {
        let o = ConvOptions::<2>::new()
            .kernel_size(kernel)
            .stride(stride)
            .padding(Padding::Explicit(pad))
            .groups(groups)
            .padding_mode(mode);
        let m = observed_conv2d(&mut rng, c, k, o);
        check(&m, &make_input(&mut rng, &[n, c, hw[0], hw[1]], DType::F32), &format!("{m}"));
    }
    let o = ConvOptions::<2>::new().kernel_size([4, 4]).stride([2, 2]).padding(Padding::Explicit([1, 1]));
    for (c, k, n, hw) in [(16usize, 136usize, 4usize, [14usize, 14usize]), (16, 40, 1, [16, 16])] {
        let shape = qconv::ConvTranspose2d::weight_shape(c, k, &o).unwrap();
        let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
        let b = Tensor::from_vec(rng.vec(k, -0.5, 0.5), &[k]).unwrap();
        let m = qconv::ConvTranspose2d::from_float_observed(w, Some(b), o).unwrap();
        check(&m, &make_input(&mut rng, &[n, c, hw[0], hw[1]], DType::F32), &format!("{m}"));
    }
    let o1 = ConvOptions::<1>::new().kernel_size([5]).padding(Padding::Explicit([2]));
    let s1 = qconv::Conv1d::weight_shape(8, 16, &o1).unwrap();
    let w1 = Tensor::from_vec(rng.vec(s1.iter().product(), -0.5, 0.5), &s1).unwrap();
    let m1 = qconv::Conv1d::from_float_observed(w1, None, o1).unwrap();
    check(&m1, &make_input(&mut rng, &[3, 8, 100], DType::F32), "conv1d");
    let o3 = ConvOptions::<3>::new().kernel_size([3, 3, 3]).padding(Padding::Explicit([1, 1, 1]));
    let s3 = qconv::Conv3d::weight_shape(8, 8, &o3).unwrap();
    let w3 = Tensor::from_vec(rng.vec(s3.iter().product(), -0.5, 0.5), &s3).unwrap();
    let m3 = qconv::Conv3d::from_float_observed(w3, Some(Tensor::from_vec(rng.vec(8, -0.5, 0.5), &[8]).unwrap()), o3)
        .unwrap();
    check(&m3, &make_input(&mut rng, &[2, 8, 6, 7, 8], DType::F32), "conv3d");
    // Not on the TF32 tiles: C/groups 12 with 8 output channels (not padded), depthwise, and
    // code storage -> exactly the exact path.
    for (c, k, groups) in [(12usize, 8usize, 1usize), (16, 16, 16), (16, 32, 1)] {
        let o = ConvOptions::<2>::new().kernel_size([3, 3]).padding(Padding::Explicit([1, 1])).groups(groups);
        let mut m = observed_conv2d(&mut rng, c, k, o);
        if c == 16 && k == 32 {
            m = m.with_weight_storage(WeightStorage::Int8Codes).unwrap();
        }
        let md = m.to_device(CUDA).unwrap();
        let x = make_input(&mut rng, &[2, c, 9, 9], DType::F32).to_device(CUDA).unwrap();
        let exact = md.clone().with_precision(Precision::Exact).forward(&x).unwrap().to_device(Device::Cpu).unwrap();
        let tf32 = md.with_precision(Precision::Tf32).forward(&x).unwrap().to_device(Device::Cpu).unwrap();
        assert_eq!(exact, tf32, "C {c} K {k} groups {groups}");
    }
}
