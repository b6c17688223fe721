//! One test per validation rule: each bad value gives its typed error (and a message naming it).

use qconv::quant::{fake_quantize, quantize, QParamTensor};
use qconv::{
    Conv1d, Conv2d, ConvOptions, ConvTranspose1d, ConvTranspose2d, DType, Device, Error, Padding, PaddingMode, QScheme,
    QuantDType, Tensor, WeightQParams,
};

fn w(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| (i as f32 * 0.37).sin()).collect(), shape).unwrap()
}

fn qp() -> WeightQParams {
    WeightQParams::per_tensor(0.01, 0, QuantDType::QInt8)
}

fn conv2d(opts: ConvOptions<2>, weight_shape: &[usize]) -> qconv::Result<Conv2d> {
    Conv2d::from_float(w(weight_shape), None, qp(), opts)
}

// ---- quantization parameters (docs/numerics.md §11 item 8) -------------------------------------------

#[test]
fn per_tensor_quint4x2_is_rejected() {
    let q = WeightQParams::per_tensor(0.1, 0, QuantDType::QUInt4x2);
    let e = fake_quantize(&w(&[2, 3]), &q).unwrap_err();
    assert!(matches!(e, Error::UnsupportedQuantization { .. }), "{e}");
    assert!(e.to_string().contains("quint4x2"));
}

#[test]
fn per_channel_quint4x2_with_integer_zero_points_is_rejected() {
    let q = WeightQParams::per_channel(vec![0.1, 0.1], vec![0, 0], 0, QuantDType::QUInt4x2);
    assert!(matches!(fake_quantize(&w(&[2, 3]), &q), Err(Error::UnsupportedQuantization { .. })));
}

#[test]
fn float32_dtype_with_a_qscheme_is_rejected() {
    let mut q = qp();
    q.dtype = QuantDType::Float32;
    assert!(matches!(fake_quantize(&w(&[2, 3]), &q), Err(Error::UnsupportedQuantization { .. })));
}

#[test]
fn non_float32_weights_are_rejected() {
    let w16 = w(&[2, 3]).to_dtype(DType::F16).unwrap();
    let e = fake_quantize(&w16, &qp()).unwrap_err();
    assert!(matches!(e, Error::DType { what: "weight", .. }), "{e}");
    let e = Conv1d::from_float(
        w(&[2, 1, 3]).to_dtype(DType::BF16).unwrap(),
        None,
        qp(),
        ConvOptions::new().kernel_size([3]),
    )
    .unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
}

#[test]
fn zero_dim_per_channel_scale_is_rejected() {
    let mut q = WeightQParams::per_channel(vec![0.1, 0.1], vec![0, 0], 0, QuantDType::QInt8);
    q.scale = QParamTensor::scalar_f32(0.1);
    let e = fake_quantize(&w(&[2, 3]), &q).unwrap_err();
    assert!(matches!(e, Error::QParamShape { param: "weight_scale", .. }), "{e}");
}

#[test]
fn multi_element_per_tensor_scale_is_rejected() {
    let mut q = qp();
    q.scale = QParamTensor::from_f32(vec![0.1, 0.2]);
    let e = fake_quantize(&w(&[2, 3]), &q).unwrap_err();
    assert!(matches!(e, Error::QParamShape { param: "weight_scale", .. }), "{e}");
}

#[test]
fn negative_axis_is_rejected() {
    let mut q = WeightQParams::per_channel(vec![0.1, 0.1], vec![0, 0], 0, QuantDType::QInt8);
    q.axis = -1;
    let e = fake_quantize(&w(&[2, 3]), &q).unwrap_err();
    assert!(matches!(e, Error::AxisOutOfRange { axis: -1, ndim: 2 }), "{e}");
}

#[test]
fn out_of_range_axis_is_rejected() {
    let q = WeightQParams::per_channel(vec![0.1, 0.1], vec![0, 0], 2, QuantDType::QInt8);
    assert!(matches!(fake_quantize(&w(&[2, 3]), &q), Err(Error::AxisOutOfRange { axis: 2, ndim: 2 })));
}

#[test]
fn channel_count_mismatch_is_rejected() {
    let q = WeightQParams::per_channel(vec![0.1, 0.1], vec![0, 0], 1, QuantDType::QInt8);
    let e = fake_quantize(&w(&[2, 3]), &q).unwrap_err();
    assert!(matches!(e, Error::ChannelMismatch { axis: 1, expected: 3, got: 2 }), "{e}");
}

#[test]
fn zero_point_count_mismatch_is_rejected() {
    let q = WeightQParams::per_channel(vec![0.1, 0.1], vec![0], 0, QuantDType::QInt8);
    assert!(matches!(fake_quantize(&w(&[2, 3]), &q), Err(Error::QParamShape { param: "weight_zero_point", .. })));
}

#[test]
fn zero_point_outside_dtype_range_is_rejected() {
    let q = WeightQParams::per_tensor(0.1, 256, QuantDType::QUInt8);
    let e = fake_quantize(&w(&[2, 3]), &q).unwrap_err();
    assert!(matches!(e, Error::ZeroPointOutOfRange { zero_point: 256, min: 0, max: 255, .. }), "{e}");
    let q = WeightQParams::per_channel(vec![0.1, 0.1], vec![0, -129], 0, QuantDType::QInt8);
    assert!(matches!(fake_quantize(&w(&[2, 3]), &q), Err(Error::ZeroPointOutOfRange { zero_point: -129, .. })));
}

#[test]
fn non_finite_scales_and_zero_points_are_rejected() {
    let q = WeightQParams::per_tensor(f32::NAN, 0, QuantDType::QInt8);
    assert!(matches!(fake_quantize(&w(&[2, 3]), &q), Err(Error::NonFiniteScale { .. })));
    let q = WeightQParams::per_channel(vec![0.1, f32::INFINITY], vec![0, 0], 0, QuantDType::QInt8);
    assert!(matches!(fake_quantize(&w(&[2, 3]), &q), Err(Error::NonFiniteScale { channel: 1, .. })));
    let q = WeightQParams::per_channel_float(vec![0.1, 0.1], vec![0.0, f32::NAN], 0, QuantDType::QUInt8);
    assert!(matches!(fake_quantize(&w(&[2, 3]), &q), Err(Error::NonFiniteZeroPoint { channel: 1, .. })));
}

#[test]
fn integer_scales_are_rejected() {
    let mut q = qp();
    q.scale = QParamTensor::from_i64(vec![1]);
    assert!(matches!(fake_quantize(&w(&[2, 3]), &q), Err(Error::QParamShape { param: "weight_scale", .. })));
}

#[test]
fn quant_range_rules() {
    let dec = qp().decomposed(true);
    let e = fake_quantize(&w(&[2, 3]), &dec.clone().with_quant_range(-200, 127)).unwrap_err();
    assert!(matches!(e, Error::QuantRange { quant_min: Some(-200), .. }), "{e}");
    let e = fake_quantize(&w(&[2, 3]), &dec.clone().with_quant_range(10, -10)).unwrap_err();
    assert!(matches!(e, Error::QuantRange { .. }), "{e}");
    let mut one_sided = dec;
    one_sided.quant_min = Some(-127);
    assert!(matches!(fake_quantize(&w(&[2, 3]), &one_sided), Err(Error::QuantRange { .. })));
}

#[test]
fn decomposed_quint4x2_and_float16_are_rejected() {
    let q = WeightQParams::per_channel_float(vec![0.1, 0.1], vec![0.0, 0.0], 0, QuantDType::QUInt4x2).decomposed(true);
    assert!(matches!(fake_quantize(&w(&[2, 3]), &q), Err(Error::UnsupportedQuantization { .. })));
    let q = WeightQParams::float16().decomposed(true);
    assert!(matches!(fake_quantize(&w(&[2, 3]), &q), Err(Error::UnsupportedQuantization { .. })));
}

#[test]
fn non_finite_weights_are_rejected_when_quantized() {
    let mut v = w(&[2, 3]).to_vec_f32().unwrap();
    v[4] = f32::INFINITY;
    let bad = Tensor::from_vec(v, &[2, 3]).unwrap();
    let e = fake_quantize(&bad, &qp()).unwrap_err();
    assert!(matches!(e, Error::NonFiniteWeight { index: 4, .. }), "{e}");
    assert!(matches!(fake_quantize(&bad, &WeightQParams::float16()), Err(Error::NonFiniteWeight { .. })));
    // qscheme None uses the weight as is.
    assert!(fake_quantize(&bad, &WeightQParams::none()).is_ok());
}

#[test]
fn quantized_weight_is_undefined_without_quantization() {
    assert!(matches!(quantize(&w(&[2, 3]), &WeightQParams::none()), Err(Error::NotQuantized(_))));
}

#[test]
fn symmetric_qscheme_names_are_rejected_when_parsing() {
    assert!(matches!("torch.per_tensor_symmetric".parse::<QScheme>(), Err(Error::Parse { .. })));
    assert!(matches!("torch.bogus".parse::<QuantDType>(), Err(Error::Parse { .. })));
}

// ---- convolution configuration (PyTorch's nn.ConvNd rules) ----------------------------------------

#[test]
fn groups_must_be_positive() {
    let e = conv2d(ConvOptions::new().kernel_size([3, 3]).groups(0), &[4, 4, 3, 3]).unwrap_err();
    assert!(matches!(e, Error::InvalidConfig { param: "groups", .. }), "{e}");
}

#[test]
fn groups_must_divide_channels() {
    // Channel counts come from the weight (divisible by construction); counts stated elsewhere (a
    // state dict's `module` entry) go through the same validation.
    let o = ConvOptions::<2>::new().kernel_size([3, 3]).groups(4);
    let e = o.validate(6, 4, false).unwrap_err();
    assert!(matches!(e, Error::InvalidConfig { param: "groups", .. }), "{e}");
    assert!(e.to_string().contains("in_channels (6)"));
    let e = o.validate(4, 6, false).unwrap_err();
    assert!(e.to_string().contains("out_channels (6)"), "{e}");
}

#[test]
fn zero_kernel_stride_or_dilation_is_rejected() {
    for (opts, shape) in [
        (ConvOptions::new(), [2, 2, 0, 3]),
        (ConvOptions::new().kernel_size([3, 3]).stride([1, 0]), [2, 2, 3, 3]),
        (ConvOptions::new().kernel_size([3, 3]).dilation([0, 1]), [2, 2, 3, 3]),
    ] {
        let e = Conv2d::new(w(&shape), None, qp(), opts).unwrap_err();
        assert!(matches!(e, Error::InvalidConfig { .. }), "{e}");
    }
}

#[test]
fn same_padding_needs_stride_one() {
    let e = conv2d(ConvOptions::new().kernel_size([3, 3]).padding(Padding::Same).stride([2, 1]), &[2, 2, 3, 3])
        .unwrap_err();
    assert!(matches!(e, Error::InvalidConfig { param: "padding", .. }), "{e}");
}

#[test]
fn string_padding_is_rejected_for_transposed() {
    let e = ConvTranspose2d::from_float(
        w(&[2, 2, 3, 3]),
        None,
        qp(),
        ConvOptions::new().kernel_size([3, 3]).padding(Padding::Same),
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidConfig { param: "padding", .. }), "{e}");
}

#[test]
fn transposed_accepts_only_zeros_padding_mode() {
    let e = ConvTranspose2d::from_float(
        w(&[2, 2, 3, 3]),
        None,
        qp(),
        ConvOptions::new().kernel_size([3, 3]).padding_mode(PaddingMode::Reflect),
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidConfig { param: "padding_mode", .. }), "{e}");
}

#[test]
fn output_padding_must_be_smaller_than_stride_or_dilation() {
    let e = ConvTranspose1d::from_float(
        w(&[2, 2, 3]),
        None,
        qp(),
        ConvOptions::new().kernel_size([3]).stride([2]).output_padding([2]),
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidConfig { param: "output_padding", .. }), "{e}");
    // ...and is only for transposed convolutions.
    let e = Conv1d::from_float(w(&[2, 2, 3]), None, qp(), ConvOptions::new().kernel_size([3]).output_padding([1]))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidConfig { param: "output_padding", .. }), "{e}");
}

#[test]
fn weight_shape_must_match_channels_and_kernel() {
    let e = Conv2d::new(w(&[2, 4, 3, 2]), None, qp(), ConvOptions::new().kernel_size([3, 3])).unwrap_err();
    assert!(matches!(e, Error::Shape { what: "weight", .. }), "{e}");
    let e = Conv2d::from_float(w(&[2, 4, 3]), None, qp(), ConvOptions::new().kernel_size([3, 3])).unwrap_err();
    assert!(matches!(e, Error::Shape { what: "weight", .. }), "{e}");
}

#[test]
fn bias_shape_and_flag_must_agree() {
    let e = Conv1d::from_float(w(&[2, 2, 3]), Some(w(&[3])), qp(), ConvOptions::new().kernel_size([3])).unwrap_err();
    assert!(matches!(e, Error::Shape { what: "bias", .. }), "{e}");
    // The options carry no bias flag (it could contradict the tensor): the bias is the one given.
    let m = Conv1d::new(w(&[2, 2, 3]), None, qp(), ConvOptions::new().kernel_size([3])).unwrap();
    assert!(m.bias().is_none());
}

// ---- inputs --------------------------------------------------------------------------------------

fn small_conv() -> Conv2d {
    conv2d(ConvOptions::new().kernel_size([3, 3]), &[2, 3, 3, 3]).unwrap()
}

#[test]
fn input_rank_must_fit() {
    let e = small_conv().forward(&w(&[3, 5])).unwrap_err();
    assert!(matches!(e, Error::Shape { what: "input", .. }), "{e}");
}

#[test]
fn input_channels_must_match() {
    let e = small_conv().forward(&w(&[1, 4, 5, 5])).unwrap_err();
    assert!(matches!(e, Error::Shape { what: "input", .. }), "{e}");
    assert!(e.to_string().contains("expected 3 input channels"));
}

#[test]
fn kernel_larger_than_padded_input_is_rejected() {
    let e = small_conv().forward(&w(&[1, 3, 2, 5])).unwrap_err();
    assert!(matches!(e, Error::Shape { what: "input", .. }), "{e}");
    assert!(e.to_string().contains("dilated kernel size 3"));
}

#[test]
fn reflect_padding_must_be_smaller_than_input() {
    let m = conv2d(
        ConvOptions::new().kernel_size([3, 3]).padding(Padding::Explicit([2, 2])).padding_mode(PaddingMode::Reflect),
        &[2, 3, 3, 3],
    )
    .unwrap();
    let e = m.forward(&w(&[1, 3, 2, 6])).unwrap_err();
    assert!(e.to_string().contains("reflect padding"), "{e}");
}

#[test]
fn circular_padding_must_not_exceed_input() {
    let m = conv2d(
        ConvOptions::new().kernel_size([1, 1]).padding(Padding::Explicit([3, 0])).padding_mode(PaddingMode::Circular),
        &[2, 3, 1, 1],
    )
    .unwrap();
    assert!(m.forward(&w(&[1, 3, 3, 4])).is_ok());
    let e = m.forward(&w(&[1, 3, 2, 4])).unwrap_err();
    assert!(e.to_string().contains("circular padding"), "{e}");
}

#[test]
fn output_size_out_of_range_is_rejected() {
    let m = ConvTranspose2d::from_float(
        w(&[2, 3, 3, 3]),
        None,
        qp(),
        ConvOptions::new().kernel_size([3, 3]).stride([2, 2]).padding(Padding::Explicit([1, 1])),
    )
    .unwrap();
    let x = w(&[1, 2, 5, 5]);
    // min = (5-1)*2 - 2 + 3 = 9, max = 10.
    assert_eq!(m.forward_with_output_size(&x, &[10, 9]).unwrap().shape(), &[1, 3, 10, 9]);
    let e = m.forward_with_output_size(&x, &[11, 9]).unwrap_err();
    assert!(matches!(e, Error::OutputSize { .. }), "{e}");
    assert!(e.to_string().contains("valid sizes range from [9, 9] to [10, 10]"), "{e}");
    let e = m.forward_with_output_size(&x, &[1, 9, 9]).unwrap_err();
    assert!(matches!(e, Error::InvalidConfig { param: "output_size", .. }), "{e}");
}

#[test]
fn transposed_padding_too_large_is_rejected() {
    let m = ConvTranspose1d::from_float(
        w(&[2, 2, 3]),
        None,
        qp(),
        ConvOptions::new().kernel_size([3]).padding(Padding::Explicit([3])),
    )
    .unwrap();
    let e = m.forward(&w(&[1, 2, 1])).unwrap_err();
    assert!(matches!(e, Error::Shape { what: "input", .. }), "{e}");
}

#[test]
fn tensor_data_length_must_match_shape() {
    assert!(matches!(Tensor::from_vec(vec![0f32; 5], &[2, 3]), Err(Error::Shape { .. })));
    assert!(matches!(Tensor::from_vec(vec![0f32; 0], &[usize::MAX, 3]), Err(Error::Overflow(_))));
    let t = w(&[2, 3]);
    assert!(matches!(t.as_slice::<half::f16>(), Err(Error::DType { .. })));
}

#[test]
fn device_strings_parse_or_fail_clearly() {
    assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
    assert_eq!("cuda:1".parse::<Device>().unwrap(), Device::Cuda(1));
    assert!(matches!("gpu".parse::<Device>(), Err(Error::Parse { .. })));
    assert!(matches!("cuda:x".parse::<Device>(), Err(Error::Parse { .. })));
}

#[test]
fn cuda_requests_fail_with_a_reason_instead_of_panicking() {
    let e = w(&[2]).to_device(Device::Cuda(0)).unwrap_err();
    assert!(matches!(e, Error::CudaUnavailable { .. } | Error::Unsupported { .. }), "{e}");
    assert!(small_conv().to_device(Device::Cuda(0)).is_err());
}
