//! The `module_config` fuzz target's logic (run by `fuzz_targets/module_config.rs` and replayed
//! over the corpus by the main crate's `tests/fuzz_corpus.rs`).
//!
//! Arbitrary module configurations, qparams and input shapes → construct + forward (+ the
//! quantization entry points and a state-dict round trip). Property: no panic, every error is
//! one short line, forward's output shape matches `conv_problem`, save→load is exact.

use arbitrary::Arbitrary;
use qconv::oracle::conv_int8_naive;
use qconv::quant::{fake_quantize, quantize, QParamData, QParamTensor};
use qconv::{
    ActivationQParams, AnyConv, ConvModule, ConvOptions, DType, Padding, PaddingMode, QScheme, QuantDType,
    QuantizedConvModule, QuantizedTensor, Tensor, WeightQParams,
};

use super::{check_err, check_roundtrip, exercise_forward, MAX_ELEMS};

/// A size: mostly small (0..=7), sometimes one of a few huge values.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Dim(u8);

const BIG: [usize; 8] = [usize::MAX, usize::MAX / 2, usize::MAX / 2 + 1, 1 << 32, (1 << 31) + 1, 1 << 33, 65_536, 1000];

impl Dim {
    fn get(self) -> usize {
        if self.0 < 224 {
            (self.0 % 8) as usize
        } else {
            BIG[(self.0 % 8) as usize]
        }
    }
}

/// A float: one of a table of edge values, or raw bits.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum F {
    Table(u8),
    Bits(u32),
}

const FTABLE: [f32; 24] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.1,
    0.5,
    -0.37,
    2.5,
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::MIN_POSITIVE,
    1e-45,
    -1e-40,
    f32::MAX,
    f32::MIN,
    1e30,
    1e-30,
    65504.0,
    1e-8,
    3.0e38,
    0.0039215686,
    127.5,
    -128.5,
];

impl F {
    fn get(self) -> f32 {
        match self {
            F::Table(i) => FTABLE[i as usize % FTABLE.len()],
            F::Bits(b) => f32::from_bits(b),
        }
    }
}

/// An integer: small, or one of a table of edge values.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum I {
    Small(i8),
    Table(u8),
}

const ITABLE: [i64; 12] = [
    i64::MIN,
    i64::MAX,
    i32::MIN as i64,
    i32::MAX as i64,
    i32::MAX as i64 + 1,
    i32::MIN as i64 - 1,
    255,
    256,
    -129,
    15,
    16,
    -1,
];

impl I {
    fn get(self) -> i64 {
        match self {
            I::Small(v) => v as i64,
            I::Table(i) => ITABLE[i as usize % ITABLE.len()],
        }
    }
}

#[derive(Arbitrary, Debug)]
enum QShape {
    Scalar,
    One,
    /// `[C]` along the chosen axis (resolved later).
    PerChannel,
    Len(Dim),
    TwoD(Dim, Dim),
    /// A shape that disagrees with the number of values.
    Lying(Dim),
}

#[derive(Arbitrary, Debug)]
struct QTensor {
    dtype: u8,
    shape: QShape,
    floats: Vec<F>,
    ints: Vec<I>,
}

#[derive(Arbitrary, Debug)]
struct QP {
    qscheme: u8,
    dtype: u8,
    scale: QTensor,
    zero_point: QTensor,
    axis: I,
    quant_min: Option<I>,
    quant_max: Option<I>,
    decomposed: bool,
}

#[derive(Arbitrary, Debug)]
enum Pad {
    Explicit([Dim; 3]),
    Same,
    Valid,
}

#[derive(Arbitrary, Debug)]
enum InShape {
    /// `[N, C_in, s, s, ...]` with the module's channels.
    Batched(Dim, [Dim; 3]),
    /// `[C_in, s, ...]`.
    Unbatched([Dim; 3]),
    /// Anything.
    Raw(Vec<Dim>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    kind: u8,
    in_channels: Dim,
    out_channels: Dim,
    kernel: [Dim; 3],
    stride: [Dim; 3],
    dilation: [Dim; 3],
    padding: Pad,
    output_padding: [Dim; 3],
    groups: Dim,
    bias: u8,
    padding_mode: u8,
    /// Replace the expected weight shape by this one.
    weight_shape: Option<Vec<Dim>>,
    weight_vals: Vec<F>,
    bias_vals: Vec<F>,
    qparams: QP,
    input_shape: InShape,
    input_dtype: u8,
    input_vals: Vec<F>,
    output_size: Option<Vec<Dim>>,
    use_from_float: bool,
    new_qparams: Option<QP>,
}

fn fill(n: usize, vals: &[F], salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match vals.get(i % vals.len().max(1)) {
            Some(f) if !vals.is_empty() => f.get(),
            _ => (((i + salt) * 7919 % 31) as f32 - 15.0) / 16.0,
        })
        .collect()
}

fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b))
}

fn qtensor(t: &QTensor, channels: usize) -> QParamTensor {
    let shape: Vec<usize> = match t.shape {
        QShape::Scalar => vec![],
        QShape::One => vec![1],
        QShape::PerChannel => vec![channels.min(64)],
        QShape::Len(d) => vec![d.get().min(64)],
        QShape::TwoD(a, b) => vec![a.get().min(8), b.get().min(8)],
        QShape::Lying(d) => vec![d.get()],
    };
    // Values: as many as the shape says (capped), except for a lying shape.
    let n = match t.shape {
        QShape::Lying(d) => (d.get() % 7) + 1,
        _ => numel(&shape).unwrap_or(1).min(64),
    };
    let f = |i: usize| t.floats.get(i % t.floats.len().max(1)).map_or(0.1 + i as f32 * 0.01, |v| v.get());
    let z = |i: usize| t.ints.get(i % t.ints.len().max(1)).map_or(0, |v| v.get());
    let data = match t.dtype % 5 {
        0 | 4 => QParamData::F32((0..n).map(f).collect()),
        1 => QParamData::F64((0..n).map(|i| f(i) as f64).collect()),
        2 => QParamData::I32((0..n).map(|i| z(i) as i32).collect()),
        _ => QParamData::I64((0..n).map(z).collect()),
    };
    QParamTensor { shape, data }
}

fn qparams(q: &QP, weight_shape: &[usize], int_zp: bool) -> WeightQParams {
    let qscheme = match q.qscheme % 4 {
        0 => QScheme::PerTensorAffine,
        1 => QScheme::PerChannelAffine,
        2 => QScheme::PerChannelAffineFloatQParams,
        _ => QScheme::None,
    };
    let dtype = match q.dtype % 8 {
        0 => QuantDType::QInt8,
        1 => QuantDType::QUInt8,
        2 => QuantDType::QInt32,
        3 => QuantDType::QUInt4x2,
        4 => QuantDType::Float16,
        5 => QuantDType::Float32,
        6 => QuantDType::BFloat16,
        _ => QuantDType::Float64,
    };
    let axis = q.axis.get();
    let channels = usize::try_from(axis).ok().and_then(|a| weight_shape.get(a)).copied().unwrap_or(1);
    let mut zero_point = qtensor(&q.zero_point, channels);
    if int_zp {
        // Integer zero points from the int table (out-of-range values included).
        if let QParamData::F32(v) = &zero_point.data {
            zero_point.data = QParamData::I64(v.iter().map(|&x| x as i64).collect());
        }
    }
    WeightQParams {
        qscheme,
        dtype,
        scale: qtensor(&q.scale, channels),
        zero_point,
        axis,
        quant_min: q.quant_min.map(I::get),
        quant_max: q.quant_max.map(I::get),
        is_decomposed: q.decomposed,
    }
}

fn build<const D: usize, const T: bool>(inp: &Input, wrap: fn(ConvModule<D, T>) -> AnyConv) {
    let in_c = inp.in_channels.get();
    let out_c = inp.out_channels.get();
    let mut o = ConvOptions::<D>::new().kernel_size(std::array::from_fn(|d| inp.kernel[d].get()));
    o.stride = std::array::from_fn(|d| inp.stride[d].get());
    o.dilation = std::array::from_fn(|d| inp.dilation[d].get());
    o.padding = match &inp.padding {
        Pad::Explicit(p) => Padding::Explicit(std::array::from_fn(|d| p[d].get())),
        Pad::Same => Padding::Same,
        Pad::Valid => Padding::Valid,
    };
    o.output_padding = std::array::from_fn(|d| inp.output_padding[d].get());
    o.groups = inp.groups.get();
    let has_bias = !inp.bias.is_multiple_of(3);
    o.padding_mode = match inp.padding_mode % 4 {
        0 => PaddingMode::Zeros,
        1 => PaddingMode::Reflect,
        2 => PaddingMode::Replicate,
        _ => PaddingMode::Circular,
    };
    let wshape: Vec<usize> = match &inp.weight_shape {
        Some(s) => s.iter().take(6).map(|d| d.get()).collect(),
        None => match ConvModule::<D, T>::weight_shape(in_c, out_c, &o) {
            Ok(s) => s,
            Err(e) => return check_err("weight_shape", &e),
        },
    };
    let Some(wn) = numel(&wshape).filter(|&n| n <= MAX_ELEMS) else { return };
    let weight = Tensor::from_vec(fill(wn, &inp.weight_vals, 0), &wshape).expect("weight tensor");
    // bias: right length, or (bias % 3 == 2) a wrong one.
    let bias = if has_bias {
        let n = if inp.bias % 3 == 2 { out_c.saturating_add(1) } else { out_c };
        if n > MAX_ELEMS {
            return;
        }
        Some(Tensor::from_vec(fill(n, &inp.bias_vals, 3), &[n]).expect("bias tensor"))
    } else {
        None
    };
    let qp = qparams(&inp.qparams, &wshape, inp.kind & 0x80 != 0);

    // The quantization entry points on their own.
    match fake_quantize(&weight, &qp) {
        Ok(fq) => assert_eq!(fq.shape(), weight.shape()),
        Err(e) => check_err("fake_quantize", &e),
    }
    if let Err(e) = quantize(&weight, &qp) {
        check_err("quantize", &e);
    }
    if let Err(e) = qp.validate(&wshape) {
        check_err("validate", &e);
    }

    // The lowered int8 module of the same weight, options and qparams (when bit 6 of `kind` is
    // set), run on the same input once it is known.
    let lowered_args = (inp.kind & 0x40 != 0).then(|| (weight.clone(), bias.clone(), qp.clone()));
    let built = if inp.use_from_float {
        ConvModule::<D, T>::from_float(weight, bias, qp, o)
    } else {
        ConvModule::<D, T>::new(weight, bias, qp, o)
    };
    let mut m = match built {
        Ok(m) => m,
        Err(e) => return check_err("ConvModule::new", &e),
    };
    if let Some(q2) = &inp.new_qparams {
        let before = format!("{:?}", m.weight_qparams());
        if let Err(e) = m.set_weight_qparams(qparams(q2, m.weight().shape(), false)) {
            check_err("set_weight_qparams", &e);
            assert_eq!(before, format!("{:?}", m.weight_qparams()), "a failed set_weight_qparams changed the module");
        }
    }
    let m = wrap(m);
    if let Err(e) = m.get_quantized_weight() {
        check_err("get_quantized_weight", &e);
    }
    check_roundtrip(&m);

    // The input.
    let c = m.in_channels();
    let shape: Vec<usize> = match &inp.input_shape {
        InShape::Batched(n, s) => [n.get(), c].into_iter().chain(s[..D].iter().map(|d| d.get())).collect(),
        InShape::Unbatched(s) => std::iter::once(c).chain(s[..D].iter().map(|d| d.get())).collect(),
        InShape::Raw(v) => v.iter().take(6).map(|d| d.get()).collect(),
    };
    let Some(n) = numel(&shape).filter(|&n| n <= MAX_ELEMS) else { return };
    let x = Tensor::from_vec(fill(n, &inp.input_vals, 5), &shape).expect("input tensor");
    let x = match inp.input_dtype % 3 {
        0 => x,
        1 => x.to_dtype(DType::F16).unwrap(),
        _ => x.to_dtype(DType::BF16).unwrap(),
    };
    let os: Option<Vec<usize>> = inp.output_size.as_ref().map(|v| v.iter().take(6).map(|d| d.get()).collect());
    exercise_forward(&m, &x, os.as_deref());
    if let Some((w, b, q)) = lowered_args {
        lowered::<D, T>(&w, b, &q, o, &x, inp);
    }
}

/// Builds the lowered int8 module (output zero point and ReLU from the input bits), checks its
/// state-dict round trip, and runs it on `x` quantized with a fixed scale and zero point: the
/// codes must equal the exact integer oracle's, or both `conv_problem` and `forward` fail cleanly.
fn lowered<const D: usize, const T: bool>(
    weight: &Tensor,
    bias: Option<Tensor>,
    qp: &WeightQParams,
    o: ConvOptions<D>,
    x: &Tensor,
    inp: &Input,
) {
    let out = match ActivationQParams::new(0.05, (inp.bias as i64 * 37) % 256) {
        Ok(q) => q,
        Err(e) => return check_err("ActivationQParams::new", &e),
    };
    let m = match QuantizedConvModule::<D, T>::from_float(weight, bias, qp, o, out) {
        Ok(m) => m,
        Err(e) => return check_err("QuantizedConvModule::from_float", &e),
    };
    let m = match m.with_relu(inp.padding_mode & 0x10 != 0) {
        Ok(m) => m,
        Err(e) => return check_err("with_relu", &e),
    };
    let back = QuantizedConvModule::<D, T>::from_state_dict(&m.state_dict("q."), "q.")
        .expect("a saved lowered module must load");
    assert_eq!(format!("{:?}", m.state_dict("")), format!("{:?}", back.state_dict("")), "lowered round trip");
    let Ok(xf) = x.to_dtype(DType::F32) else { return };
    let (scale, zp) = (0.02, (inp.padding_mode as i64 * 53) % 256);
    let qx = match QuantizedTensor::quantize(&xf, scale, zp) {
        Ok(q) => q,
        Err(e) => return check_err("QuantizedTensor::quantize", &e),
    };
    let p = match m.conv_problem(qx.shape()) {
        Ok(p) => p,
        Err(e) => {
            check_err("QuantizedConvModule::conv_problem", &e);
            assert!(m.forward(&qx).is_err(), "conv_problem failed ({e}) but forward succeeded");
            return;
        }
    };
    if !super::affordable(&p) {
        return;
    }
    match m.forward(&qx) {
        Ok(y) => {
            let table = m.requant_table(scale).expect("the table forward used");
            let want = conv_int8_naive(&p, m.weight().codes(), m.weight().zero_points(), qx.codes(), zp as i32, &table);
            assert!(y.codes() == &want[..], "lowered forward differs from the integer oracle for {p:?}");
        }
        Err(e) => check_err("QuantizedConvModule::forward", &e),
    }
}

/// Runs one decoded input.
fn run_input(inp: &Input) {
    match inp.kind % 6 {
        0 => build::<1, false>(inp, AnyConv::Conv1d),
        1 => build::<2, false>(inp, AnyConv::Conv2d),
        2 => build::<3, false>(inp, AnyConv::Conv3d),
        3 => build::<1, true>(inp, AnyConv::ConvTranspose1d),
        4 => build::<2, true>(inp, AnyConv::ConvTranspose2d),
        _ => build::<3, true>(inp, AnyConv::ConvTranspose3d),
    }
}

/// Decodes raw fuzzer bytes as libfuzzer-sys's `fuzz_target!(|inp: Input| ..)` does (too short
/// or undecodable inputs are skipped) and runs them.
pub fn run(data: &[u8]) {
    use arbitrary::{Arbitrary, Unstructured};
    if data.len() < <Input as Arbitrary>::size_hint(0).0 {
        return;
    }
    if let Ok(inp) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        run_input(&inp);
    }
}

/// The decoded input of raw fuzzer bytes, as `Debug` text (what `cargo fuzz fmt` printed before
/// the target took raw bytes); `None` when the bytes do not decode.
pub fn describe(data: &[u8]) -> Option<String> {
    use arbitrary::{Arbitrary, Unstructured};
    Input::arbitrary_take_rest(Unstructured::new(data)).ok().map(|inp| format!("{inp:?}"))
}
