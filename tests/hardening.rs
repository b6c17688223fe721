//! Hostile inputs: random configurations, qparams and shapes never panic; files that lie about
//! their contents are errors, not allocations; non-finite activations propagate like a float conv.

use std::panic::{catch_unwind, AssertUnwindSafe};

use qconv::io::StateDict;
use qconv::oracle::conv_naive;
use qconv::quant::{fake_quantize, QParamData, QParamTensor};
use qconv::testing::Rng;
use qconv::{
    Conv1d, Conv2d, ConvModule, ConvOptions, Error, Padding, PaddingMode, QScheme, QuantDType, Tensor, WeightQParams,
};

fn pick(rng: &mut Rng, n: u64) -> usize {
    (rng.next_u64() % n) as usize
}

/// Small values, mostly valid, sometimes zero or out of range.
fn hostile(rng: &mut Rng) -> usize {
    match pick(rng, 40) {
        0 => 0,
        1 => 7,
        _ => 1 + pick(rng, 3),
    }
}

fn random_qparams(rng: &mut Rng, channels: usize) -> WeightQParams {
    if pick(rng, 3) != 0 {
        // Mostly valid parameters, so that forward runs often.
        let scales = (0..channels).map(|_| rng.uniform(0.001, 0.1)).collect();
        return WeightQParams::per_channel(scales, vec![0; channels], 0, QuantDType::QInt8);
    }
    let dtype = [
        QuantDType::QUInt8,
        QuantDType::QInt8,
        QuantDType::QInt32,
        QuantDType::QUInt4x2,
        QuantDType::Float16,
        QuantDType::Float32,
    ][pick(rng, 6)];
    let n = if pick(rng, 4) == 0 { channels + pick(rng, 3) } else { channels }.max(1);
    let scales: Vec<f32> = (0..n)
        .map(|_| match pick(rng, 12) {
            0 => 0.0,
            1 => -0.1,
            2 => f32::NAN,
            3 => 1e-40,
            4 => 1e30,
            _ => rng.uniform(0.001, 0.1),
        })
        .collect();
    let zps: Vec<i64> = (0..n).map(|_| if pick(rng, 10) == 0 { 300 } else { pick(rng, 5) as i64 }).collect();
    let mut qp = match pick(rng, 5) {
        0 => WeightQParams::per_tensor(scales[0], zps[0], dtype),
        1 => WeightQParams::per_channel(scales, zps, pick(rng, 4), dtype),
        2 => {
            WeightQParams::per_channel_float(scales, zps.iter().map(|&z| z as f32 + 0.5).collect(), pick(rng, 3), dtype)
        }
        3 => WeightQParams::none(),
        _ => WeightQParams::float16(),
    };
    if pick(rng, 3) == 0 {
        qp.is_decomposed = true;
        if pick(rng, 2) == 0 {
            qp = qp.with_quant_range(-(pick(rng, 200) as i64), pick(rng, 300) as i64);
        }
    }
    if pick(rng, 8) == 0 {
        qp.axis = -1;
    }
    if pick(rng, 8) == 0 {
        qp.scale = QParamTensor { shape: vec![2, 2], data: QParamData::F64(vec![0.1; 4]) };
    }
    if pick(rng, 10) == 0 {
        qp.qscheme = QScheme::PerChannelAffineFloatQParams;
    }
    qp
}

fn sweep<const D: usize, const T: bool>(rng: &mut Rng) -> (usize, usize)
where
    ConvModule<D, T>: Forward,
{
    let cin = hostile(rng);
    let cout = hostile(rng);
    let mut o = ConvOptions::<D>::new();
    let mut kernel = [0; D];
    #[allow(clippy::needless_range_loop)] // one loop draws every array in the original order
    for d in 0..D {
        kernel[d] = hostile(rng);
        o.stride[d] = hostile(rng);
        o.dilation[d] = hostile(rng);
        o.output_padding[d] = pick(rng, 2);
    }
    o.kernel_size = Some(kernel);
    o.groups = hostile(rng);
    o.padding = match pick(rng, 12) {
        0 => Padding::Same,
        1 => Padding::Valid,
        _ => Padding::Explicit([pick(rng, 3); D]),
    };
    if !T || pick(rng, 20) == 0 {
        o.padding_mode =
            [PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular][pick(rng, 4)];
    }
    if !T && pick(rng, 10) != 0 {
        o.output_padding = [0; D];
    }
    if o.padding == Padding::Same && pick(rng, 4) != 0 {
        o.stride = [1; D];
    }
    let g = o.groups.max(1);
    let mut wshape = if T { vec![cin, cout / g] } else { vec![cout, cin / g] };
    wshape.extend_from_slice(&kernel);
    if pick(rng, 30) == 0 {
        wshape[0] += 1; // a weight that does not fit the channels
    }
    let n: usize = wshape.iter().product();
    let weight = Tensor::from_vec(rng.vec(n, -1.0, 1.0), &wshape).unwrap();
    let bias =
        if pick(rng, 2) == 0 { Some(Tensor::from_vec(rng.vec(cout, -1.0, 1.0), &[cout]).unwrap()) } else { None };
    let qp = random_qparams(rng, wshape[if T { 1 } else { 0 }]);
    let module = match ConvModule::<D, T>::new(weight, bias, qp, o) {
        Ok(m) => m,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return (0, 1);
        }
    };
    let mut xs = if pick(rng, 2) == 0 { vec![1 + pick(rng, 2), cin] } else { vec![cin] };
    if pick(rng, 30) == 0 {
        xs[0] += 1; // wrong channel count (or batch)
    }
    for _ in 0..D {
        xs.push(if pick(rng, 30) == 0 { 0 } else { 3 + pick(rng, 6) });
    }
    if pick(rng, 30) == 0 {
        xs.pop(); // wrong rank
    }
    let x = Tensor::from_vec(rng.vec(xs.iter().product(), -1.0, 1.0), &xs).unwrap();
    match module.forward_any(&x) {
        Ok(y) => {
            assert!(y.to_vec_f32().unwrap().iter().all(|v| v.is_finite()), "{module}: finite in, non-finite out");
            (1, 0)
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            (0, 1)
        }
    }
}

trait Forward {
    fn forward_any(&self, x: &Tensor) -> qconv::Result<Tensor>;
}
impl<const D: usize> Forward for ConvModule<D, false> {
    fn forward_any(&self, x: &Tensor) -> qconv::Result<Tensor> {
        self.forward(x)
    }
}
impl<const D: usize> Forward for ConvModule<D, true> {
    fn forward_any(&self, x: &Tensor) -> qconv::Result<Tensor> {
        self.forward(x)
    }
}

#[test]
fn random_hostile_configurations_never_panic() {
    let mut rng = Rng::new(0xBAD);
    let (mut ok, mut err) = (0, 0);
    for i in 0..3000 {
        let r = catch_unwind(AssertUnwindSafe(|| match i % 6 {
            0 => sweep::<1, false>(&mut rng),
            1 => sweep::<2, false>(&mut rng),
            2 => sweep::<3, false>(&mut rng),
            3 => sweep::<1, true>(&mut rng),
            4 => sweep::<2, true>(&mut rng),
            _ => sweep::<3, true>(&mut rng),
        }));
        let (a, b) = r.unwrap_or_else(|_| panic!("iteration {i} panicked"));
        ok += a;
        err += b;
    }
    // Both outcomes are exercised in quantity.
    eprintln!("{ok} forwards ran, {err} typed errors");
    assert!(ok > 300 && err > 300, "ok {ok}, err {err}");
}

#[test]
fn nan_and_inf_activations_propagate_like_a_float_conv() {
    let w = Tensor::from_vec(vec![0.5f32, -0.25, 0.125], &[1, 1, 3]).unwrap();
    let m = Conv1d::from_float(
        w,
        None,
        WeightQParams::per_tensor(0.125, 0, QuantDType::QInt8),
        ConvOptions::new().kernel_size([3]),
    )
    .unwrap();
    let xv = vec![1.0f32, f32::NAN, 2.0, 3.0, 4.0, f32::INFINITY, 5.0, 6.0, 7.0];
    let x = Tensor::from_vec(xv.clone(), &[1, 1, 9]).unwrap();
    let y = m.forward(&x).unwrap().to_vec_f32().unwrap();
    let p = m.conv_problem(x.shape(), None).unwrap();
    let want = conv_naive(&p, &m.get_weight().to_vec_f32().unwrap(), None, &xv);
    assert_eq!(y.len(), want.len());
    for (a, b) in y.iter().zip(&want) {
        assert_eq!(a.is_nan(), b.is_nan(), "{y:?} vs {want:?}");
        if !a.is_nan() {
            assert_eq!(*a as f64, *b, "{y:?} vs {want:?}");
        }
    }
    assert!(y[0].is_nan() && y[1].is_nan() && y[2].is_finite());
    assert_eq!((y[3], y[4]), (f32::INFINITY, f32::NEG_INFINITY));
}

#[test]
fn extreme_scales_behave_as_documented() {
    let w = Tensor::from_vec(vec![0.0f32, 0.5, -0.5, 1e-3], &[4]).unwrap();
    // A denormal scale: 1/s is +inf, so non-zero weights saturate and their dequantized value is
    // (q − zp)·s; zero weights give PyTorch's NaN code.
    let fq = fake_quantize(&w, &WeightQParams::per_tensor(1e-40, 0, QuantDType::QInt8)).unwrap().to_vec_f32().unwrap();
    assert_eq!(fq, vec![127.0 * 1e-40, 127.0 * 1e-40, -128.0 * 1e-40, 127.0 * 1e-40]);
    // A huge scale: every weight rounds to the zero point.
    let fq = fake_quantize(&w, &WeightQParams::per_tensor(1e30, 0, QuantDType::QInt8)).unwrap().to_vec_f32().unwrap();
    assert!(fq.iter().all(|&v| v == 0.0));
    // Codes never wrap: far out-of-range weights saturate at the dtype bounds.
    let big = Tensor::from_vec(vec![3e9f32, -3e9, 1e30], &[3]).unwrap();
    let fq =
        fake_quantize(&big, &WeightQParams::per_tensor(1.0, 200, QuantDType::QUInt8)).unwrap().to_vec_f32().unwrap();
    assert_eq!(fq, vec![55.0, -200.0, 55.0]);
    let q = WeightQParams::per_channel_float(vec![1.0], vec![0.0], 0, QuantDType::QUInt8);
    let fq =
        fake_quantize(&Tensor::from_vec(vec![3e9f32, 5e9, -3e9], &[1, 3]).unwrap(), &q).unwrap().to_vec_f32().unwrap();
    assert_eq!(fq, vec![255.0, 255.0, 0.0]);
}

/// A safetensors file whose header declares `shape` for a 4-byte payload.
fn lying_file(shape: &str) -> Vec<u8> {
    let header = format!(r#"{{"weight":{{"dtype":"F32","shape":{shape},"data_offsets":[0,4]}}}}"#);
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0, 0, 128, 63]);
    bytes
}

#[test]
fn files_that_lie_about_their_size_are_errors_not_allocations() {
    assert!(StateDict::from_bytes(&lying_file("[1]")).is_ok());
    for shape in ["[1099511627776,1099511627776]", "[18446744073709551615,2]", "[4]", "[0]"] {
        let e = StateDict::from_bytes(&lying_file(shape)).unwrap_err();
        assert!(matches!(e, Error::SafeTensors(_)), "{shape}: {e}");
    }
    // A header length far beyond the file.
    let mut b = lying_file("[1]");
    b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(StateDict::from_bytes(&b), Err(Error::SafeTensors(_))));
}

#[test]
fn size_arithmetic_overflow_is_an_error() {
    let w = Tensor::from_vec(vec![1.0f32; 4], &[2, 2, 1]).unwrap();
    let o = ConvOptions::new().kernel_size([1]).dilation([usize::MAX]);
    assert!(Conv1d::from_float(w.clone(), None, WeightQParams::none(), o).is_ok());
    // A stride so large that the transposed output would overflow usize.
    let t = qconv::ConvTranspose1d::from_float(
        w,
        None,
        WeightQParams::none(),
        ConvOptions::new().kernel_size([1]).stride([usize::MAX]),
    )
    .unwrap();
    let x = Tensor::from_vec(vec![1.0f32; 2 * 3], &[2, 3]).unwrap();
    let e = t.forward(&x).unwrap_err();
    assert!(matches!(e, Error::Overflow(_)), "{e}");
    // A 2-d kernel larger than any input.
    let w2 = Tensor::from_vec(vec![1.0f32; 9], &[1, 1, 3, 3]).unwrap();
    let c = Conv2d::from_float(
        w2,
        None,
        WeightQParams::none(),
        ConvOptions::new().kernel_size([3, 3]).dilation([1 << 40, 1]),
    )
    .unwrap();
    let e = c.forward(&Tensor::from_vec(vec![1.0f32; 16], &[1, 1, 4, 4]).unwrap()).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
}
