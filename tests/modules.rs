//! Module-level behaviour: randomized sweeps against the naive f64 oracle (every configuration
//! knob, f32/f16/bf16 inputs, batched and unbatched), state dicts, and concurrency.

mod common;

use common::oracle;
use half::{bf16, f16};
use qconv::io::{StateDict, StoredData, StoredTensor};
use qconv::quant::observer::{Observer, ObserverScheme};
use qconv::testing::Rng;
use qconv::{
    AnyConv, Conv1d, Conv2d, Conv3d, ConvModule, ConvOptions, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d, DType,
    Error, Padding, PaddingMode, QuantDType, Tensor, WeightQParams,
};

fn random_qparams(rng: &mut Rng, weight: &Tensor, out_axis: usize) -> WeightQParams {
    let scheme = match rng.next_u64() % 5 {
        0 => ObserverScheme::PerTensorAffine,
        1 => ObserverScheme::PerTensorSymmetric,
        2 => ObserverScheme::PerChannelAffine,
        3 => ObserverScheme::PerChannelSymmetric,
        _ => ObserverScheme::PerChannelAffineFloatQParams,
    };
    let dtype = if rng.next_u64().is_multiple_of(2) { QuantDType::QInt8 } else { QuantDType::QUInt8 };
    let mut obs = Observer::new(dtype, scheme).unwrap().ch_axis(out_axis);
    obs.observe(weight).unwrap();
    obs.weight_qparams()
}

fn pick(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

/// One random module + input per call; compares every output element against the oracle.
fn sweep_case<const D: usize, const T: bool>(rng: &mut Rng, dtype: DType)
where
    ConvModule<D, T>: AnyForward,
{
    let groups = [1, 1, 2, 3][pick(rng, 4)];
    let depthwise = pick(rng, 5) == 0;
    let (cin, cout) =
        if depthwise { (groups * 2, groups * 2) } else { (groups * (1 + pick(rng, 4)), groups * (1 + pick(rng, 4))) };
    let mut o = ConvOptions::<D>::new();
    let mut kernel = [0; D];
    #[allow(clippy::needless_range_loop)] // one loop draws every array in the original order
    for d in 0..D {
        kernel[d] = 1 + pick(rng, 3);
        o.stride[d] = 1 + pick(rng, 3);
        o.dilation[d] = 1 + pick(rng, 2);
    }
    o.kernel_size = Some(kernel);
    o.groups = if depthwise { cin } else { groups };
    let mode = if T { 0 } else { pick(rng, 6) };
    o.padding_mode = [
        PaddingMode::Zeros,
        PaddingMode::Zeros,
        PaddingMode::Zeros,
        PaddingMode::Reflect,
        PaddingMode::Replicate,
        PaddingMode::Circular,
    ][mode];
    let mut pads = [0; D];
    for p in pads.iter_mut() {
        *p = pick(rng, 3);
    }
    o.padding = Padding::Explicit(pads);
    if !T && pick(rng, 4) == 0 {
        o.padding = if pick(rng, 2) == 0 { Padding::Valid } else { Padding::Same };
        if o.padding == Padding::Same {
            o.stride = [1; D];
        }
    }
    if T {
        for d in 0..D {
            o.output_padding[d] = pick(rng, o.stride[d].max(o.dilation[d]));
        }
    }
    let shape = ConvModule::<D, T>::weight_shape(cin, cout, &o).unwrap();
    let n: usize = shape.iter().product();
    let weight = Tensor::from_vec(rng.vec(n, -0.5, 0.5), &shape).unwrap();
    let bias =
        if pick(rng, 2) == 0 { Some(Tensor::from_vec(rng.vec(cout, -0.5, 0.5), &[cout]).unwrap()) } else { None };
    let qp = random_qparams(rng, &weight, if T { 1 } else { 0 });
    let m = ConvModule::<D, T>::new(weight, bias, qp, o).unwrap();
    let batched = pick(rng, 3) != 0;
    let batch = 1 + pick(rng, 3);
    let mut xs = if batched { vec![batch, cin] } else { vec![cin] };
    let mut sp = [0; D];
    for s in sp.iter_mut() {
        *s = 3 + pick(rng, 9);
    }
    xs.extend_from_slice(&sp);
    let xv = rng.vec(xs.iter().product(), -1.0, 1.0);
    let x = match dtype {
        DType::F32 => Tensor::from_vec(xv, &xs).unwrap(),
        DType::F16 => Tensor::from_vec(xv.into_iter().map(f16::from_f32).collect(), &xs).unwrap(),
        DType::BF16 => Tensor::from_vec(xv.into_iter().map(bf16::from_f32).collect(), &xs).unwrap(),
    };
    if m.conv_problem(x.shape(), None).is_err() {
        return; // kernel larger than the padded input: covered by the validation tests
    }
    let y = m.forward_any(&x);
    assert_eq!(y.dtype(), dtype);
    let (want, mag) = oracle(&m, &x, None);
    let got = y.to_vec_f32().unwrap();
    assert_eq!(got.len(), want.len(), "{m}: output size");
    // f32 accumulation: a few roundings of Σ|x||w|; f16/bf16 outputs add one final rounding.
    let out_eps = match dtype {
        DType::F32 => 0.0,
        DType::F16 => 2f64.powi(-11),
        DType::BF16 => 2f64.powi(-8),
    };
    for i in 0..got.len() {
        let tol = 8.0 * f32::EPSILON as f64 * mag[i] + out_eps * want[i].abs() + 1e-30;
        assert!(
            (got[i] as f64 - want[i]).abs() <= tol,
            "{m} ({dtype}, input {xs:?}): output[{i}] = {} want {} (tol {tol:e})",
            got[i],
            want[i]
        );
    }
}

trait AnyForward {
    fn forward_any(&self, x: &Tensor) -> Tensor;
}
impl<const D: usize> AnyForward for ConvModule<D, false> {
    fn forward_any(&self, x: &Tensor) -> Tensor {
        ConvModule::<D, false>::forward(self, x).unwrap()
    }
}
impl<const D: usize> AnyForward for ConvModule<D, true> {
    fn forward_any(&self, x: &Tensor) -> Tensor {
        ConvModule::<D, true>::forward(self, x).unwrap()
    }
}

#[test]
fn randomized_sweep_against_the_naive_oracle() {
    let mut rng = Rng::new(2024);
    for i in 0..120 {
        let dt = [DType::F32, DType::F32, DType::F16, DType::BF16][i % 4];
        match i % 6 {
            0 => sweep_case::<1, false>(&mut rng, dt),
            1 => sweep_case::<2, false>(&mut rng, dt),
            2 => sweep_case::<3, false>(&mut rng, dt),
            3 => sweep_case::<1, true>(&mut rng, dt),
            4 => sweep_case::<2, true>(&mut rng, dt),
            _ => sweep_case::<3, true>(&mut rng, dt),
        }
    }
}

// ---- fake-quant is computed once ----------------------------------------------------------------

#[test]
fn get_weight_is_cached_and_refreshed_on_change() {
    let w = Tensor::from_vec(vec![0.5f32, -0.26, 0.1, 0.9], &[2, 2, 1]).unwrap();
    let mut m = Conv1d::from_float(
        w.clone(),
        None,
        WeightQParams::per_tensor(0.1, 0, QuantDType::QInt8),
        ConvOptions::new().kernel_size([1]),
    )
    .unwrap();
    assert!(std::ptr::eq(m.get_weight(), m.get_weight()));
    let s = 0.1f32;
    assert_eq!(m.get_weight().to_vec_f32().unwrap(), vec![s * 5.0, s * -3.0, s * 1.0, s * 9.0]);
    m.set_weight_qparams(WeightQParams::per_tensor(0.25, 0, QuantDType::QInt8)).unwrap();
    assert_eq!(m.get_weight().to_vec_f32().unwrap(), vec![0.5, -0.25, 0.0, 1.0]);
    // A failed update leaves the module unchanged.
    assert!(m.set_weight_qparams(WeightQParams::per_tensor(0.1, 300, QuantDType::QUInt8)).is_err());
    assert_eq!(m.get_weight().to_vec_f32().unwrap(), vec![0.5, -0.25, 0.0, 1.0]);
    m.set_weight(Tensor::from_vec(vec![1.0f32, 1.0, 1.0, 1.0], &[2, 2, 1]).unwrap()).unwrap();
    assert_eq!(m.get_weight().to_vec_f32().unwrap(), vec![1.0; 4]);
}

#[test]
fn padding_mode_is_honoured() {
    // A 1-d conv with kernel [1, 1, 1] and padding 1: the edge outputs show what was read outside.
    let w = Tensor::from_vec(vec![1.0f32, 1.0, 1.0], &[1, 1, 3]).unwrap();
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 4.0], &[1, 1, 3]).unwrap();
    let run = |mode| {
        let o = ConvOptions::new().kernel_size([3]).padding(Padding::Explicit([1])).padding_mode(mode);
        Conv1d::from_float(w.clone(), None, WeightQParams::none(), o)
            .unwrap()
            .forward(&x)
            .unwrap()
            .to_vec_f32()
            .unwrap()
    };
    assert_eq!(run(PaddingMode::Zeros), vec![3.0, 7.0, 6.0]);
    assert_eq!(run(PaddingMode::Reflect), vec![5.0, 7.0, 8.0]);
    assert_eq!(run(PaddingMode::Replicate), vec![4.0, 7.0, 10.0]);
    assert_eq!(run(PaddingMode::Circular), vec![7.0, 7.0, 7.0]);
}

#[test]
fn transposed_output_size_works_with_dilation() {
    let w = Tensor::from_vec(vec![1.0f32; 2 * 3 * 3], &[2, 3, 3]).unwrap();
    let o = ConvOptions::new().kernel_size([3]).stride([3]).dilation([2]).padding(Padding::Explicit([1]));
    let m = ConvTranspose1d::from_float(w, None, WeightQParams::none(), o).unwrap();
    let x = Tensor::from_vec(vec![1.0f32; 2 * 4], &[2, 4]).unwrap();
    // min = (4-1)*3 - 2 + 2*2 + 1 = 12; max = 14.
    for size in 12..=14 {
        let y = m.forward_with_output_size(&x, &[size]).unwrap();
        assert_eq!(y.shape(), &[3, size]);
        let (want, _) = oracle(&m, &x, Some(&[size]));
        assert_eq!(y.to_vec_f32().unwrap(), want.iter().map(|&v| v as f32).collect::<Vec<_>>());
    }
    assert_eq!(m.forward_with_output_size(&x, &[3, 13]).unwrap().shape(), &[3, 13]);
}

#[test]
fn zero_batch_gives_an_empty_output() {
    let w = Tensor::from_vec(vec![0.1f32; 4 * 2 * 9], &[4, 2, 3, 3]).unwrap();
    let m = Conv2d::from_float_observed(w, None, ConvOptions::new().kernel_size([3, 3])).unwrap();
    let y = m.forward(&Tensor::zeros(&[0, 2, 5, 5], DType::F32).unwrap()).unwrap();
    assert_eq!(y.shape(), &[0, 4, 3, 3]);
}

// ---- state dicts ----------------------------------------------------------------------------------

fn sample_modules() -> Vec<(String, AnyConv)> {
    let mut rng = Rng::new(9);
    let mut v = Vec::new();
    let w3 = Tensor::from_vec(rng.vec(4 * 2 * 27, -1.0, 1.0), &[4, 2, 3, 3, 3]).unwrap();
    let c3 = Conv3d::from_float(
        w3.clone(),
        Some(Tensor::from_vec(rng.vec(4, -1.0, 1.0), &[4]).unwrap()),
        WeightQParams::per_channel_symmetric_from_weight(&w3, 0, QuantDType::QInt8)
            .unwrap()
            .decomposed(true)
            .with_quant_range(-127, 127),
        ConvOptions::new().kernel_size([3, 3, 3]).padding(Padding::Same).padding_mode(PaddingMode::Replicate),
    )
    .unwrap();
    v.push(("enc.conv3.".to_string(), AnyConv::Conv3d(c3)));
    let wt = Tensor::from_vec(rng.vec(4 * 3 * 4, -1.0, 1.0), &[4, 3, 2, 2]).unwrap();
    let t2 = ConvTranspose2d::from_float(
        wt,
        None,
        WeightQParams::per_channel_float(vec![0.01, 0.02, 0.03], vec![1.5, 120.0, 7.25], 1, QuantDType::QUInt8),
        ConvOptions::new().kernel_size([2, 2]).stride([2, 2]).output_padding([1, 0]).groups(1),
    )
    .unwrap();
    v.push(("dec.up.".to_string(), AnyConv::ConvTranspose2d(t2)));
    let w1 = Tensor::from_vec(rng.vec(6 * 2 * 5, -1.0, 1.0), &[6, 2, 5]).unwrap();
    let c1 = Conv1d::from_float(
        w1,
        None,
        WeightQParams::float16(),
        ConvOptions::new().kernel_size([5]).groups(2).dilation([2]),
    )
    .unwrap();
    v.push(("".to_string(), AnyConv::Conv1d(c1)));
    let wt1 = Tensor::from_vec(rng.vec(2 * 2 * 3, -1.0, 1.0), &[2, 2, 3]).unwrap();
    let t1 =
        ConvTranspose1d::from_float(wt1, None, WeightQParams::none(), ConvOptions::new().kernel_size([3])).unwrap();
    v.push(("t1.".to_string(), AnyConv::ConvTranspose1d(t1)));
    let w2 = Tensor::from_vec(rng.vec(3 * 3 * 4, -1.0, 1.0), &[3, 3, 2, 2]).unwrap();
    let c2 = Conv2d::from_float(
        w2,
        Some(Tensor::from_vec(vec![0.1, 0.2, 0.3], &[3]).unwrap()),
        WeightQParams::per_tensor(1e-4, -7, QuantDType::QInt32),
        ConvOptions::new().kernel_size([2, 2]).padding(Padding::Valid),
    )
    .unwrap();
    v.push(("c2.".to_string(), AnyConv::Conv2d(c2)));
    let wt3 = Tensor::from_vec(rng.vec(2 * 2 * 8, -1.0, 1.0), &[2, 2, 2, 2, 2]).unwrap();
    let t3 =
        ConvTranspose3d::from_float_observed(wt3, None, ConvOptions::new().kernel_size([2, 2, 2]).stride([2, 1, 1]))
            .unwrap();
    v.push(("t3.".to_string(), AnyConv::ConvTranspose3d(t3)));
    v
}

#[test]
fn state_dict_file_round_trip_is_exact() {
    let dir = std::env::temp_dir().join(format!("qconv-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let mut sd = StateDict::new();
    let modules = sample_modules();
    for (p, m) in &modules {
        m.write_state_dict(&mut sd, p);
    }
    sd.save(&path).unwrap();
    let bytes_before = std::fs::read(&path).unwrap();
    let loaded = StateDict::load(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes_before, "loading must not modify the file");
    assert_eq!(loaded, sd);
    let mut prefixes = loaded.module_prefixes();
    prefixes.sort();
    let mut want: Vec<String> = modules.iter().map(|(p, _)| p.clone()).collect();
    want.sort();
    assert_eq!(prefixes, want);
    for (p, m) in &modules {
        let again = AnyConv::from_state_dict(&loaded, p).unwrap();
        assert_eq!(again.weight_qparams(), m.weight_qparams(), "{p}");
        assert_eq!(again.get_weight(), m.get_weight(), "{p}");
        assert_eq!(again.to_string(), m.to_string());
    }
    // Temporary files of the atomic save are gone.
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn decomposed_flag_and_quant_range_are_persisted() {
    let (p, m) = sample_modules().remove(0);
    let sd = m.state_dict(&p);
    assert_eq!(sd.metadata[&format!("{p}is_decomposed")], "true");
    assert_eq!(sd.metadata[&format!("{p}weight_quant_min")], "-127");
    let again = AnyConv::from_state_dict(&sd, &p).unwrap();
    assert!(again.weight_qparams().is_decomposed);
    assert_eq!(again.weight_qparams().quant_min, Some(-127));
}

#[test]
fn loading_refreshes_the_axis_from_the_file() {
    // PyTorch keeps a stale weight_axis_int (docs/numerics.md §8); here the stored axis wins.
    let w = Tensor::from_vec((0..2 * 3 * 2).map(|i| i as f32 / 10.0).collect(), &[2, 3, 2]).unwrap();
    let axis1 = WeightQParams::per_channel(vec![0.1, 0.2, 0.3], vec![0, 0, 0], 1, QuantDType::QInt8);
    let mut m = Conv1d::from_float(w.clone(), None, axis1, ConvOptions::new().kernel_size([2])).unwrap();
    let axis0 = Conv1d::from_float(
        w,
        None,
        WeightQParams::per_channel(vec![0.05, 0.07], vec![0, 0], 0, QuantDType::QInt8),
        ConvOptions::new().kernel_size([2]),
    )
    .unwrap();
    let report = m.load_state_dict(&axis0.state_dict("x."), "x.", true).unwrap();
    assert!(report.unexpected.is_empty());
    assert_eq!(m.weight_axis(), 0);
    assert_eq!(m.get_weight(), axis0.get_weight());
}

#[test]
fn missing_and_unexpected_keys_are_reported() {
    let (p, m) = sample_modules().remove(4);
    let mut sd = m.state_dict(&p);
    sd.tensors.insert(format!("{p}stray"), StoredTensor::new(vec![], StoredData::F32(vec![1.0])).unwrap());
    match AnyConv::from_state_dict(&sd, &p) {
        Err(Error::StateDictKeys { unexpected, missing, .. }) => {
            assert_eq!(unexpected, vec![format!("{p}stray")]);
            assert!(missing.is_empty());
        }
        other => panic!("expected StateDictKeys, got {other:?}"),
    }
    let (_, report) = AnyConv::from_state_dict_lenient(&sd, &p).unwrap();
    assert_eq!(report.unexpected, vec![format!("{p}stray")]);
    for key in ["weight", "bias", "weight_scale", "weight_zero_point"] {
        let mut sd = m.state_dict(&p);
        sd.tensors.remove(&format!("{p}{key}"));
        match AnyConv::from_state_dict(&sd, &p) {
            Err(Error::StateDictKeys { missing, .. }) => assert_eq!(missing, vec![format!("{p}{key}")]),
            other => panic!("{key}: expected StateDictKeys, got {other:?}"),
        }
    }
    for key in ["weight_qscheme", "module"] {
        let mut sd = m.state_dict(&p);
        sd.metadata.remove(&format!("{p}{key}"));
        assert!(matches!(AnyConv::from_state_dict(&sd, &p), Err(Error::StateDictKeys { .. })), "{key}");
    }
    // Keys of nested modules are not "unexpected" for the parent prefix.
    let mut sd = m.state_dict(&p);
    sd.tensors.insert(format!("{p}child.weight"), StoredTensor::new(vec![1], StoredData::F32(vec![1.0])).unwrap());
    assert!(AnyConv::from_state_dict(&sd, &p).is_ok());
}

#[test]
fn bad_state_dict_values_are_typed_errors() {
    let (p, m) = sample_modules().remove(4);
    type Edit = Box<dyn Fn(&mut StateDict)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "qscheme",
            Box::new(|sd: &mut StateDict| {
                sd.metadata.insert("c2.weight_qscheme".into(), "torch.nope".into());
            }),
        ),
        (
            "json",
            Box::new(|sd: &mut StateDict| {
                sd.metadata.insert("c2.module".into(), "{not json".into());
            }),
        ),
        (
            "type",
            Box::new(|sd: &mut StateDict| {
                sd.metadata.insert("c2.module".into(), r#"{"type":"Linear"}"#.into());
            }),
        ),
        (
            "scale dtype",
            Box::new(|sd: &mut StateDict| {
                sd.tensors
                    .insert("c2.weight_scale".into(), StoredTensor::new(vec![], StoredData::I32(vec![1])).unwrap());
            }),
        ),
        (
            "weight dtype",
            Box::new(|sd: &mut StateDict| {
                sd.tensors.insert("c2.weight".into(), StoredTensor::new(vec![1], StoredData::I64(vec![1])).unwrap());
            }),
        ),
        (
            "is_decomposed",
            Box::new(|sd: &mut StateDict| {
                sd.metadata.insert("c2.is_decomposed".into(), "maybe".into());
            }),
        ),
        (
            "quant_min",
            Box::new(|sd: &mut StateDict| {
                sd.metadata.insert("c2.weight_quant_min".into(), "-1.5".into());
            }),
        ),
    ];
    for (name, edit) in cases {
        let mut sd = m.state_dict(&p);
        edit(&mut sd);
        let e = AnyConv::from_state_dict(&sd, &p).unwrap_err();
        // An integer scale is read and then refused by the same validation as in code.
        assert!(
            matches!(e, Error::StateDictValue { .. } | Error::Shape { .. } | Error::QParamShape { .. }),
            "{name}: {e}"
        );
    }
}

#[test]
fn truncated_and_garbage_files_are_errors() {
    let (p, m) = sample_modules().remove(0);
    let bytes = m.state_dict(&p).to_bytes().unwrap();
    for cut in [0, 4, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        assert!(StateDict::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut lying = bytes.clone();
    lying[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(StateDict::from_bytes(&lying), Err(Error::SafeTensors(_))));
}

#[test]
fn modules_are_send_sync_and_deterministic_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Conv2d>();
    assert_send_sync::<AnyConv>();
    let mut rng = Rng::new(3);
    let w = Tensor::from_vec(rng.vec(16 * 8 * 9, -0.3, 0.3), &[16, 8, 3, 3]).unwrap();
    let m =
        Conv2d::from_float_observed(w, None, ConvOptions::new().kernel_size([3, 3]).padding(Padding::Same)).unwrap();
    let x = Tensor::from_vec(rng.vec(2 * 8 * 20 * 20, -1.0, 1.0), &[2, 8, 20, 20]).unwrap();
    let serial = m.forward(&x).unwrap();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..5 {
                    assert_eq!(m.forward(&x).unwrap(), serial);
                }
            });
        }
    });
    // The same bits whatever the size of the thread pool running the kernels.
    for threads in [1, 3, 7] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        assert_eq!(pool.install(|| m.forward(&x).unwrap()), serial, "{threads} threads");
    }
}

/// Channels-last inputs on the CPU: `[N, *spatial, C]` in, `[N, *out, K]` out, exactly the
/// channels-first result with the channel dimension moved; unbatched too; wrong channel counts
/// name the layout.
#[test]
fn channels_last_forward_on_the_cpu() {
    let mut rng = qconv::bench::Rng::new(55);
    let o = qconv::ConvOptions::<2>::new().kernel_size([3, 2]).stride([2, 1]).padding(qconv::Padding::Explicit([1, 0]));
    let shape = qconv::Conv2d::weight_shape(6, 4, &o).unwrap();
    let w = qconv::Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let b = qconv::Tensor::from_vec(rng.vec(4, -0.5, 0.5), &[4]).unwrap();
    let m = qconv::Conv2d::from_float_observed(w, Some(b), o).unwrap();
    for dtype in [qconv::DType::F32, qconv::DType::F16, qconv::DType::BF16] {
        let x =
            qconv::Tensor::from_vec(rng.vec(2 * 6 * 7 * 5, -1.0, 1.0), &[2, 6, 7, 5]).unwrap().to_dtype(dtype).unwrap();
        let y = m.forward(&x).unwrap();
        let yl = m.forward_channels_last(&common::channels_last(&x)).unwrap();
        assert_eq!(yl.shape(), &[2, 4, 4, 4]);
        assert_eq!(yl.dtype(), dtype);
        assert_eq!(common::channels_first(&yl), y);
    }
    // Unbatched [H, W, C].
    let x = qconv::Tensor::from_vec(rng.vec(6 * 7 * 5, -1.0, 1.0), &[6, 7, 5]).unwrap();
    let y = m.forward(&x).unwrap();
    let xl = common::channels_last(&x.reshape(&[1, 6, 7, 5]).unwrap()).reshape(&[7, 5, 6]).unwrap();
    let yl = m.forward_channels_last(&xl).unwrap();
    assert_eq!(yl.shape(), &[4, 4, 4]);
    assert_eq!(common::channels_first(&yl.reshape(&[1, 4, 4, 4]).unwrap()).reshape(&[4, 4, 4]).unwrap(), y);
    // The layout helpers: exact round trip; a 1-d tensor has no channel dimension to move.
    let x4 = qconv::Tensor::from_vec(rng.vec(2 * 3 * 4 * 5, -1.0, 1.0), &[2, 3, 4, 5]).unwrap();
    assert_eq!(x4.to_channels_last().unwrap().shape(), &[2, 4, 5, 3]);
    assert_eq!(x4.to_channels_last().unwrap().to_channels_first().unwrap(), x4);
    assert!(matches!(
        qconv::Tensor::zeros(&[3], qconv::DType::F32).unwrap().to_channels_last(),
        Err(qconv::Error::Shape { .. })
    ));
    // Channel count checked on the last dimension.
    match m.forward_channels_last(&qconv::Tensor::zeros(&[2, 7, 5, 4], qconv::DType::F32).unwrap()) {
        Err(qconv::Error::Shape { shape, rule, .. }) => {
            assert_eq!(shape, vec![2, 7, 5, 4]);
            assert!(rule.contains("channels-last"), "{rule}");
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
    // Transposed modules too.
    let o = qconv::ConvOptions::<1>::new().kernel_size([3]).stride([2]);
    let shape = qconv::ConvTranspose1d::weight_shape(3, 5, &o).unwrap();
    let w = qconv::Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let t = qconv::ConvTranspose1d::from_float_observed(w, None, o).unwrap();
    let x = qconv::Tensor::from_vec(rng.vec(2 * 3 * 9, -1.0, 1.0), &[2, 3, 9]).unwrap();
    let y = t.forward(&x).unwrap();
    let yl = t.forward_channels_last(&common::channels_last(&x)).unwrap();
    assert_eq!(common::channels_first(&yl), y);
}

/// `WeightStorage` is a device choice: on the CPU it changes nothing but is validated eagerly, and
/// qparams that 8-bit codes cannot reproduce are refused (on the storage switch and on later
/// changes), leaving the module as it was.
#[test]
fn weight_storage_is_validated_and_keeps_cpu_results() {
    use qconv::WeightStorage;
    let mut rng = Rng::new(31);
    let o = ConvOptions::<2>::new().kernel_size([3, 3]).padding(Padding::Explicit([1, 1]));
    let shape = Conv2d::weight_shape(8, 16, &o).unwrap();
    let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let b = Tensor::from_vec(rng.vec(16, -0.5, 0.5), &[16]).unwrap();
    let m = Conv2d::from_float_observed(w.clone(), Some(b.clone()), o).unwrap();
    assert_eq!(m.weight_storage(), WeightStorage::Float);
    let mut q = m.clone().with_weight_storage(WeightStorage::Int8Codes).unwrap();
    assert_eq!(q.weight_storage(), WeightStorage::Int8Codes);
    assert_eq!((q.device_weight_bytes(), m.device_weight_bytes()), (0, 0));
    let x = Tensor::from_vec(rng.vec(2 * 8 * 9 * 9, -1.0, 1.0), &[2, 8, 9, 9]).unwrap();
    assert_eq!(q.forward(&x).unwrap(), m.forward(&x).unwrap());
    assert_eq!(q.get_weight(), m.get_weight());

    // qint32 codes do not fit in 8 bits: refused when switching, and as a later change.
    let wide = WeightQParams::per_tensor(0.001, 0, QuantDType::QInt32);
    let m32 = Conv2d::from_float(w.clone(), Some(b.clone()), wide.clone(), o).unwrap();
    match m32.with_weight_storage(WeightStorage::Int8Codes) {
        Err(qconv::Error::InvalidConfig { param: "weight_storage", rule, .. }) => {
            assert!(rule.contains("8 bits"), "{rule}")
        }
        other => panic!("expected InvalidConfig on weight_storage, got {:?}", other.map(|_| ())),
    }
    let before = q.weight_qparams().clone();
    let err = q.set_weight_qparams(wide).unwrap_err();
    assert!(err.to_string().contains("weight_storage"), "{err}");
    assert_eq!(q.weight_qparams(), &before);
    assert_eq!(q.forward(&x).unwrap(), m.forward(&x).unwrap());
    // Per-channel along the input channels: one scale per output channel is all codes keep.
    let per_in = WeightQParams::per_channel(vec![0.004; 8], vec![0; 8], 1, QuantDType::QInt8);
    let err = q.set_weight_qparams(per_in).unwrap_err();
    assert!(err.to_string().contains("axis 1"), "{err}");
    // Back to float storage: always possible.
    let f = q.with_weight_storage(WeightStorage::Float).unwrap();
    assert_eq!(f.weight_storage(), WeightStorage::Float);
    assert_eq!(f.forward(&x).unwrap(), m.forward(&x).unwrap());
}
