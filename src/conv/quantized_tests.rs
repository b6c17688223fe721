//! Tests of the lowered int8 modules: the 74 PyTorch fixtures through the module API (codes bit
//! for bit, both layouts, and the activation quantize of each case's float input), state-dict
//! round trips, the constructors against the exact integer oracle (every padding mode,
//! per-channel transposed weights), and the typed errors.

use super::*;
use crate::conv::AnyQuantizedConv;
use crate::io::{StateDict, StoredData, StoredTensor};
use crate::oracle::conv_int8_naive;
use crate::quant::QParamTensor;
use crate::testing::Rng;
use crate::{Conv2d, ConvTranspose2d, Error};

fn fixtures() -> StateDict {
    StateDict::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/int8.safetensors")).expect("fixture file")
}

fn f64_of(sd: &StateDict, key: &str) -> f64 {
    match &sd.tensors[key].data {
        StoredData::F64(v) => v[0],
        StoredData::F32(v) => v[0] as f64,
        d => panic!("{key}: {}", d.dtype_name()),
    }
}

fn i64_of(sd: &StateDict, key: &str) -> i64 {
    match &sd.tensors[key].data {
        StoredData::I64(v) => v[0],
        StoredData::I32(v) => v[0] as i64,
        d => panic!("{key}: {}", d.dtype_name()),
    }
}

fn u8s(sd: &StateDict, key: &str) -> (Vec<u8>, Vec<usize>) {
    match &sd.tensors[key].data {
        StoredData::U8(v) => (v.clone(), sd.tensors[key].shape.clone()),
        d => panic!("{key}: {}", d.dtype_name()),
    }
}

/// `[N, C, *sp]` → `[N, *sp, C]`.
fn to_last(x: &[u8], shape: &[usize]) -> (Vec<u8>, Vec<usize>) {
    let (n, c) = (shape[0], shape[1]);
    let plane: usize = shape[2..].iter().product();
    let mut out = vec![0u8; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..plane {
                out[(b * plane + p) * c + ch] = x[(b * c + ch) * plane + p];
            }
        }
    }
    let mut s = vec![n];
    s.extend_from_slice(&shape[2..]);
    s.push(c);
    (out, s)
}

#[test]
fn pytorch_fixtures_through_the_module_api() {
    let sd = fixtures();
    let cases: Vec<String> = serde_json::from_str(&sd.metadata["__cases__"]).expect("case list");
    assert_eq!(cases.len(), 74);
    let mut relu = 0;
    for name in &cases {
        let p = format!("{name}.");
        let (m, report) = AnyQuantizedConv::from_state_dict_lenient(&sd, &p).unwrap_or_else(|e| panic!("{name}: {e}"));
        let extra: Vec<String> =
            ["check", "input", "input_float", "input_q", "note", "output"].iter().map(|k| format!("{p}{k}")).collect();
        assert_eq!(report.unexpected, extra, "{name}");
        relu += usize::from(m.relu());
        let (codes, shape) = u8s(&sd, &format!("{p}input"));
        let x = QuantizedTensor::from_codes(
            codes.clone(),
            &shape,
            f64_of(&sd, &format!("{p}input_scale")),
            i64_of(&sd, &format!("{p}input_zero_point")),
        )
        .unwrap();
        assert_eq!(m.input_qparams(), Some(x.qparams()), "{name}: stored input qparams");
        let (want, want_shape) = u8s(&sd, &format!("{p}output"));
        let y = m.forward(&x).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(y.shape(), want_shape.as_slice(), "{name}");
        let bad = y.codes().iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(bad, 0, "{name}: {bad} of {} codes differ", want.len());
        assert_eq!(y.qparams(), m.output_qparams());
        // Channels-last in, channels-last out: the same codes.
        let (xl, sl) = to_last(&codes, &shape);
        let yl = m.forward_channels_last(&QuantizedTensor::with_qparams(xl, &sl, x.qparams()).unwrap()).unwrap();
        assert_eq!(to_last(y.codes(), y.shape()), (yl.codes().to_vec(), yl.shape().to_vec()), "{name}: channels-last");
        // The activation quantize of the case's float input equals torch.quantize_per_tensor.
        let xf = sd.tensor(&format!("{p}input_float")).unwrap();
        let q = QuantizedTensor::quantize_with(&xf, x.qparams()).unwrap();
        assert_eq!(q.codes(), u8s(&sd, &format!("{p}input_q")).0.as_slice(), "{name}: quantize");
        // Save → load → save is the identity, and the reloaded module computes the same codes.
        let saved = m.state_dict(&p);
        let back = AnyQuantizedConv::from_state_dict(&StateDict::from_bytes(&saved.to_bytes().unwrap()).unwrap(), &p)
            .unwrap_or_else(|e| panic!("{name}: reload: {e}"));
        assert_eq!(back.state_dict(&p).to_bytes().unwrap(), saved.to_bytes().unwrap(), "{name}: round trip");
        assert_eq!(back.forward(&x).unwrap().codes(), y.codes(), "{name}: reloaded");
        // The stored entries are the fixture's (the exporter's format), value for value.
        for (k, t) in &saved.tensors {
            assert_eq!(t, &sd.tensors[k], "{name}: {k}");
        }
        for (k, v) in &saved.metadata {
            if !k.ends_with("module") {
                assert_eq!(v, &sd.metadata[k], "{name}: {k}");
            }
        }
    }
    assert!(relu >= 5, "{relu} fused-ReLU cases");
}

/// A random i8 weight, per-channel qparams along `axis` with `channels` entries.
fn random_weight(rng: &mut Rng, shape: &[usize], axis: usize, channels: usize) -> Int8Weight {
    let n: usize = shape.iter().product();
    let codes: Vec<i8> = (0..n).map(|_| rng.range(0, 255) as i32 as i8).collect();
    let scales: Vec<f32> = (0..channels).map(|_| rng.uniform(0.001, 0.02)).collect();
    let zps: Vec<i64> = (0..channels).map(|_| rng.range(0, 20) as i64 - 10).collect();
    Int8Weight::new(codes, shape, WeightQParams::per_channel(scales, zps, axis, QuantDType::QInt8)).unwrap()
}

fn oracle<const D: usize, const T: bool>(m: &QuantizedConvModule<D, T>, x: &QuantizedTensor) -> Vec<u8> {
    let p = m.conv_problem(x.shape()).unwrap();
    let table = m.requant_table(x.scale()).unwrap();
    conv_int8_naive(&p, m.weight().codes(), m.weight().zero_points(), x.codes(), x.zero_point(), &table)
}

#[test]
fn every_padding_mode_and_per_channel_transposed_match_the_oracle() {
    let mut rng = Rng::new(7);
    let out = ActivationQParams::new(0.05, 120).unwrap();
    for mode in [PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular] {
        for relu in [false, true] {
            let w = random_weight(&mut rng, &[6, 2, 3, 3], 0, 6);
            let bias = Tensor::from_vec(rng.vec(6, -0.5, 0.5), &[6]).unwrap();
            let opts = ConvOptions::new().padding([1, 2]).stride([2, 1]).dilation([1, 2]).groups(2).padding_mode(mode);
            let m = QuantizedConv2d::new(w, Some(bias), out, opts).unwrap().with_relu(relu).unwrap();
            let codes: Vec<u8> = (0..2 * 4 * 7 * 9).map(|_| rng.range(0, 255) as u8).collect();
            let x = QuantizedTensor::from_codes(codes, &[2, 4, 7, 9], 0.02, 77).unwrap();
            let y = m.forward(&x).unwrap();
            assert_eq!(y.codes(), oracle(&m, &x).as_slice(), "{mode:?} relu {relu}");
            assert!(y.codes().iter().any(|&c| c != y.codes()[0]), "{mode:?}: a constant output tests little");
        }
    }
    // Per-channel ConvTranspose2d along axis 1 (out/groups scales): a qconv extension.
    let w = random_weight(&mut rng, &[4, 3, 3, 2], 1, 3);
    let opts = ConvOptions::new().stride(2).padding(1).output_padding([1, 0]).groups(2);
    let m = QuantizedConvTranspose2d::new(w, None, out, opts).unwrap();
    let codes: Vec<u8> = (0..4 * 5 * 4).map(|_| rng.range(0, 255) as u8).collect();
    let x = QuantizedTensor::from_codes(codes, &[1, 4, 5, 4], 0.03, 3).unwrap();
    let y = m.forward(&x).unwrap();
    assert_eq!(y.shape(), &[1, 6, 10, 6]);
    assert_eq!(y.codes(), oracle(&m, &x).as_slice());
}

#[test]
fn from_float_and_from_reference_quantize_the_weight_like_pytorch() {
    let mut rng = Rng::new(3);
    let wf = Tensor::from_vec(rng.vec(4 * 3 * 3, -0.4, 0.4), &[4, 3, 3]).unwrap();
    let qp = WeightQParams::per_channel(vec![0.003, 0.002, 0.004, 0.001], vec![0, 1, -2, 3], 0, QuantDType::QInt8);
    let reference = crate::Conv1d::new(wf.clone(), None, qp.clone(), ConvOptions::new().padding(1)).unwrap();
    let out = ActivationQParams::new(0.1, 128).unwrap();
    let input = ActivationQParams::new(0.02, 5).unwrap();
    let a = QuantizedConv1d::from_reference(&reference, Some(input), out).unwrap();
    let b = QuantizedConv1d::from_float(&wf, None, &qp, ConvOptions::new().padding(1), out).unwrap();
    // get_quantized_weight() of the reference module is the lowered module's weight.
    let Ok(crate::quant::QuantizedWeight { values: crate::quant::QuantizedValues::Codes(want), .. }) =
        reference.get_quantized_weight()
    else {
        panic!("codes")
    };
    let got: Vec<i32> = a.weight().codes().iter().map(|&c| c as i32).collect();
    assert_eq!(got, want);
    assert_eq!(a.weight().codes(), b.weight().codes());
    assert_eq!(a.input_qparams(), Some(input));
    assert_eq!(b.input_qparams(), None);
    // dequantize(weight) is get_weight() (the reference module's fake-quantized weight).
    assert_eq!(
        a.weight().dequantize().unwrap().as_slice::<f32>().unwrap(),
        reference.get_weight().as_slice::<f32>().unwrap()
    );
    let x = QuantizedTensor::quantize(&Tensor::from_vec(rng.vec(2 * 3 * 8, -1.0, 1.0), &[2, 3, 8]).unwrap(), 0.02, 5)
        .unwrap();
    assert_eq!(a.forward(&x).unwrap().codes(), oracle(&a, &x).as_slice());
    assert_eq!(
        a.to_string(),
        "QuantizedConv1d(3, 4, kernel_size=(3,), stride=(1,), scale=0.1, zero_point=128, padding=(1,), bias=False)"
    );
}

#[test]
fn pytorch_rules_are_typed_errors() {
    let out = ActivationQParams::new(0.1, 0).unwrap();
    let w = |shape: &[usize]| {
        let n = shape.iter().product();
        Int8Weight::new(vec![1; n], shape, WeightQParams::per_tensor(0.01, 0, QuantDType::QInt8)).unwrap()
    };
    let wf = Tensor::from_vec(vec![0.1f32; 2 * 2 * 9], &[2, 2, 3, 3]).unwrap();
    // Weight dtype and qscheme.
    let quint8 = WeightQParams::per_tensor(0.01, 0, QuantDType::QUInt8);
    assert!(matches!(Int8Weight::quantize(&wf, &quint8), Err(Error::UnsupportedQuantization { .. })));
    let fq = WeightQParams::per_channel_float(vec![0.1, 0.1], vec![0.0, 0.0], 0, QuantDType::QInt8);
    assert!(matches!(Int8Weight::quantize(&wf, &fq), Err(Error::UnsupportedQuantization { .. })));
    let zp = WeightQParams::per_tensor(0.01, 128, QuantDType::QInt8);
    assert!(matches!(Int8Weight::new(vec![0; 36], &[2, 2, 3, 3], zp), Err(Error::ZeroPointOutOfRange { .. })));
    let nan = WeightQParams::per_tensor(f32::NAN, 0, QuantDType::QInt8);
    assert!(matches!(Int8Weight::new(vec![0; 36], &[2, 2, 3, 3], nan), Err(Error::NonFiniteScale { .. })));
    let short = WeightQParams::per_channel(vec![0.1; 3], vec![0; 3], 0, QuantDType::QInt8);
    assert!(matches!(Int8Weight::new(vec![0; 36], &[2, 2, 3, 3], short), Err(Error::ChannelMismatch { .. })));
    assert!(matches!(
        Int8Weight::new(vec![0; 35], &[2, 2, 3, 3], WeightQParams::per_tensor(0.1, 0, QuantDType::QInt8)),
        Err(Error::Shape { .. })
    ));
    // Per-channel axis 1 on a forward convolution, axis 0 on a transposed one.
    let ax1 = WeightQParams::per_channel(vec![0.1; 2], vec![0; 2], 1, QuantDType::QInt8);
    let w_ax1 = Int8Weight::new(vec![0; 36], &[2, 2, 3, 3], ax1).unwrap();
    assert!(matches!(
        QuantizedConv2d::new(w_ax1, None, out, ConvOptions::new()),
        Err(Error::InvalidConfig { param: "weight_axis", .. })
    ));
    let ax0 = WeightQParams::per_channel(vec![0.1; 2], vec![0; 2], 0, QuantDType::QInt8);
    let w_ax0 = Int8Weight::new(vec![0; 36], &[2, 2, 3, 3], ax0).unwrap();
    assert!(matches!(
        QuantizedConvTranspose2d::new(w_ax0, None, out, ConvOptions::new()),
        Err(Error::InvalidConfig { param: "weight_axis", .. })
    ));
    // Options: string padding, groups, padding mode of transposed, output padding, ReLU on transposed.
    let same = ConvOptions::new().padding(Padding::Same);
    assert!(matches!(
        QuantizedConv2d::new(w(&[2, 2, 3, 3]), None, out, same),
        Err(Error::InvalidConfig { param: "padding", .. })
    ));
    assert!(matches!(
        QuantizedConv2d::new(w(&[3, 1, 3, 3]), None, out, ConvOptions::new().groups(2)),
        Err(Error::InvalidConfig { .. })
    ));
    let refl = ConvOptions::new().padding_mode(PaddingMode::Reflect);
    assert!(matches!(
        QuantizedConvTranspose2d::new(w(&[2, 2, 3, 3]), None, out, refl),
        Err(Error::InvalidConfig { .. })
    ));
    let op = ConvOptions::new().output_padding(1);
    assert!(matches!(QuantizedConvTranspose2d::new(w(&[2, 2, 3, 3]), None, out, op), Err(Error::InvalidConfig { .. })));
    let t = QuantizedConvTranspose2d::new(w(&[2, 2, 3, 3]), None, out, ConvOptions::new()).unwrap();
    assert!(matches!(t.with_relu(true), Err(Error::InvalidConfig { param: "relu", .. })));
    assert!(matches!(QuantizedConv3d::new(w(&[2, 2, 3, 3]), None, out, ConvOptions::new()), Err(Error::Shape { .. })));
    // Bias shape and dtype.
    let b3 = Tensor::from_vec(vec![0.0f32; 3], &[3]).unwrap();
    assert!(matches!(
        QuantizedConv2d::new(w(&[2, 2, 3, 3]), Some(b3), out, ConvOptions::new()),
        Err(Error::Shape { .. })
    ));
    let bh = Tensor::from_vec(vec![0.0f32; 2], &[2]).unwrap().to_dtype(DType::BF16).unwrap();
    assert!(matches!(
        QuantizedConv2d::new(w(&[2, 2, 3, 3]), Some(bh), out, ConvOptions::new()),
        Err(Error::DType { .. })
    ));
    // Output qparams.
    assert!(matches!(ActivationQParams::new(0.1, 256), Err(Error::ZeroPointOutOfRange { .. })));
    assert!(matches!(ActivationQParams::new(f64::INFINITY, 0), Err(Error::NonFiniteScale { .. })));
    // Inputs: unbatched, channels, too small, reflect padding too large.
    let m = QuantizedConv2d::new(w(&[2, 2, 3, 3]), None, out, ConvOptions::new()).unwrap();
    let x = |shape: &[usize]| QuantizedTensor::from_codes(vec![0; shape.iter().product()], shape, 0.1, 0).unwrap();
    assert!(matches!(m.forward(&x(&[2, 5, 5])), Err(Error::Shape { .. })));
    assert!(matches!(m.forward(&x(&[1, 3, 5, 5])), Err(Error::Shape { .. })));
    assert!(matches!(m.forward(&x(&[1, 2, 2, 5])), Err(Error::Shape { .. })));
    let r = QuantizedConv2d::new(
        w(&[2, 2, 3, 3]),
        None,
        out,
        ConvOptions::new().padding(3).padding_mode(PaddingMode::Reflect),
    );
    assert!(matches!(r.unwrap().forward(&x(&[1, 2, 3, 3])), Err(Error::Shape { .. })));
    // An empty batch gives an empty output.
    assert_eq!(m.forward(&x(&[0, 2, 5, 5])).unwrap().shape(), &[0, 2, 3, 3]);
}

#[test]
fn state_dict_errors_and_the_reference_loader() {
    let sd = fixtures();
    let p = "conv2d_pc.";
    let sub = |f: &dyn Fn(&mut StateDict)| {
        let mut s = QuantizedConv2d::from_state_dict_lenient(&sd, p).unwrap().0.state_dict(p);
        f(&mut s);
        QuantizedConv2d::from_state_dict(&s, p)
    };
    assert!(sub(&|_| {}).is_ok());
    let e = sub(&|s| {
        s.tensors.remove("conv2d_pc.scale");
    });
    assert!(matches!(e, Err(Error::StateDictKeys { .. })), "{e:?}");
    let e = sub(&|s| {
        s.metadata.insert("conv2d_pc.weight_dtype".into(), "torch.quint8".into());
    });
    assert!(matches!(e, Err(Error::UnsupportedQuantization { .. })), "{e:?}");
    let e = sub(&|s| {
        s.tensors
            .insert("conv2d_pc.zero_point".into(), StoredTensor { shape: vec![], data: StoredData::I64(vec![300]) });
    });
    assert!(matches!(e, Err(Error::ZeroPointOutOfRange { .. })), "{e:?}");
    let e = sub(&|s| {
        s.tensors.remove("conv2d_pc.input_scale");
    });
    assert!(matches!(e, Err(Error::StateDictKeys { .. })), "{e:?}");
    let e = sub(&|s| {
        let j = s.metadata["conv2d_pc.module"].replace("\"relu\":false", "\"relu\":1");
        s.metadata.insert("conv2d_pc.module".into(), j);
    });
    assert!(matches!(e, Err(Error::StateDictValue { .. })), "{e:?}");
    let e = sub(&|s| {
        s.tensors.insert("conv2d_pc.extra".into(), StoredTensor { shape: vec![], data: StoredData::I64(vec![1]) });
    });
    assert!(matches!(e, Err(Error::StateDictKeys { .. })), "{e:?}");
    // A reference loader names the lowered type; a lowered loader names the reference type.
    let e = crate::AnyConv::from_state_dict_lenient(&sd, p).unwrap_err().to_string();
    assert!(e.contains("lowered int8 module") && e.contains("AnyQuantizedConv"), "{e}");
    let e = QuantizedConv1d::from_state_dict_lenient(&sd, p).unwrap_err().to_string();
    assert!(e.contains("holds a QuantizedConv2d, not a QuantizedConv1d"), "{e}");
    let reference = Conv2d::new(
        Tensor::from_vec(vec![0.1f32; 18], &[2, 1, 3, 3]).unwrap(),
        None,
        WeightQParams::per_tensor(0.01, 0, QuantDType::QInt8),
        ConvOptions::new(),
    )
    .unwrap();
    let e = AnyQuantizedConv::from_state_dict(&reference.state_dict(""), "").unwrap_err().to_string();
    assert!(e.contains("not a lowered int8 module type"), "{e}");
    // Per-tensor qparams given as f32 are saved as f64 and reload to the same module.
    let wt = Tensor::from_vec(vec![0.1f32; 2 * 3 * 4], &[2, 3, 2, 2]).unwrap();
    let qp = WeightQParams {
        scale: QParamTensor::scalar_f32(0.01),
        ..WeightQParams::per_tensor(0.01, 3, QuantDType::QInt8)
    };
    let t = QuantizedConvTranspose2d::from_float(
        &wt,
        None,
        &qp,
        ConvOptions::new(),
        ActivationQParams::new(0.2, 7).unwrap(),
    )
    .unwrap();
    let back = QuantizedConvTranspose2d::from_state_dict(&t.state_dict("t."), "t.").unwrap();
    assert_eq!(back.weight().codes(), t.weight().codes());
    assert_eq!(back.weight().scales(), t.weight().scales());
    let _ = ConvTranspose2d::type_name();
}
