//! Device tensors, devices and runtimes, the fake-quant kernels bit for bit, typed errors (mixed
//! devices, out of memory) and the compute-sanitizer smoke run.

use super::*;

#[test]
#[ignore = "needs a CUDA device"]
fn device_tensors_round_trip_and_refuse_host_access() {
    // Without CUDA, the upload's typed error is checked by tests/api.rs.
    let x = Tensor::from_vec(vec![1.0f32, -2.5, 3.25, f32::MIN_POSITIVE], &[2, 2]).unwrap();
    gpu("device_tensors_round_trip_and_refuse_host_access");
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let h = x.to_dtype(dtype).unwrap();
        let d = h.to_device(CUDA).unwrap();
        assert_eq!((d.device(), d.dtype(), d.shape()), (CUDA, dtype, h.shape()));
        assert!(matches!(d.as_slice::<f32>(), Err(Error::Unsupported { .. })));
        assert!(d.as_cuda_bytes().is_some());
        let back = d.to_device(Device::Cpu).unwrap();
        assert_eq!(back, h, "{dtype}: round trip");
        assert_eq!(d.to_vec_f32().unwrap(), h.to_vec_f32().unwrap());
        assert_eq!(d.reshape(&[4]).unwrap().device(), CUDA);
        // A device buffer made elsewhere comes back as a tensor, checked.
        let bytes = d.as_cuda_bytes().unwrap().clone();
        let again = Tensor::from_cuda_bytes(bytes.clone(), h.shape(), dtype, CUDA).unwrap();
        assert_eq!(again.to_device(Device::Cpu).unwrap(), h, "{dtype}: from_cuda_bytes");
        let too_big = Tensor::from_cuda_bytes(bytes.clone(), &[3, 2], dtype, CUDA).unwrap_err();
        assert!(matches!(too_big, Error::Shape { .. }), "{too_big}");
        let host = Tensor::from_cuda_bytes(bytes, h.shape(), dtype, Device::Cpu).unwrap_err();
        assert!(matches!(host, Error::Unsupported { .. }), "{host}");
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn fake_quant_is_bit_identical_for_every_plan() {
    if !gpu("fake_quant_is_bit_identical_for_every_plan") {
        return;
    }
    let rt = Runtime::get(0).unwrap();
    let sd = StateDict::load(fixture_path()).unwrap();
    let names: Vec<String> = serde_json::from_str(&sd.metadata["__cases__"]).unwrap();
    // Every fixture module (all qschemes, dtypes, float zero points, decomposed, ties, saturation).
    for case in &names {
        let (m, _) = AnyConv::from_state_dict_lenient(&sd, &format!("{case}.")).unwrap();
        let w = m.weight();
        let src = rt.htod(w.as_slice::<f32>().unwrap(), None).unwrap();
        let mut dst = rt.zeros::<f32>(w.numel(), None).unwrap();
        rt.fake_quantize_device(m.weight_qparams(), w.shape(), &src, Some(&mut dst), None, None)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let got = rt.dtoh(&dst, None).unwrap();
        let want = m.get_weight().as_slice::<f32>().unwrap();
        for i in 0..want.len() {
            assert_eq!(got[i].to_bits(), want[i].to_bits(), "{case}: weight element {i}: {} vs {}", got[i], want[i]);
        }
    }
    // A non-finite weight is the same typed error as on the CPU.
    let w = vec![0.5f32, f32::NAN, 1.0, 2.0];
    let qp = qconv::WeightQParams::per_tensor(0.1, 0, QuantDType::QInt8);
    let src = rt.htod(&w, None).unwrap();
    let mut dst = rt.zeros::<f32>(4, None).unwrap();
    match rt.fake_quantize_device(&qp, &[4], &src, Some(&mut dst), None, None) {
        Err(Error::NonFiniteWeight { index: 1, .. }) => {}
        other => panic!("expected NonFiniteWeight at 1, got {other:?}"),
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn mixing_devices_is_a_typed_error() {
    if !gpu("mixing_devices_is_a_typed_error") {
        return;
    }
    let o = ConvOptions::<1>::new().kernel_size([3]);
    let w = Tensor::from_vec(vec![0.5f32; 2 * 2 * 3], &[2, 2, 3]).unwrap();
    let m = qconv::Conv1d::from_float_observed(w, None, o).unwrap();
    let md = m.to_device(CUDA).unwrap();
    let x = Tensor::from_vec(vec![1.0f32; 2 * 2 * 8], &[2, 2, 8]).unwrap();
    let xd = x.to_device(CUDA).unwrap();
    assert!(matches!(m.forward(&xd), Err(Error::Unsupported { .. })));
    assert!(matches!(md.forward(&x), Err(Error::Unsupported { .. })));
    let s = Runtime::get(0).unwrap().new_stream().unwrap();
    assert!(matches!(m.forward_on_stream(&x, &s), Err(Error::Unsupported { .. })));
    assert!(md.forward(&xd).is_ok());
}

/// A few small launches of every kernel family, for compute-sanitizer (memcheck, racecheck) in
/// scripts/gpu-check.sh: fake-quant and quantize-only, the direct, 32-row and 64x64-tile forward
/// kernels, transposed (tiled and direct), f32 and f16, with odd sizes so that every tile has a
/// ragged edge.
#[test]
#[ignore = "needs a CUDA device"]
fn sanitizer_smoke() {
    if !gpu("sanitizer_smoke") {
        return;
    }
    let rt = Runtime::get(0).unwrap();
    let mut rng = Rng::new(5);
    let w = rng.vec(7 * 5 * 3, -1.0, 1.0);
    let qp = qconv::WeightQParams::per_channel(
        vec![0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07],
        vec![0, 1, -1, 2, 0, 0, 3],
        0,
        QuantDType::QInt8,
    );
    let src = rt.htod(&w, None).unwrap();
    let mut dst = rt.zeros::<f32>(w.len(), None).unwrap();
    let mut codes = rt.zeros::<i32>(w.len(), None).unwrap();
    rt.fake_quantize_device(&qp, &[7, 5, 3], &src, Some(&mut dst), None, None).unwrap();
    rt.fake_quantize_device(&qp, &[7, 5, 3], &src, None, Some(&mut codes), None).unwrap();
    let want = qconv::quant::quantize(&Tensor::from_vec(w, &[7, 5, 3]).unwrap(), &qp).unwrap();
    if let qconv::quant::QuantizedValues::Codes(c) = want.values {
        assert_eq!(rt.dtoh(&codes, None).unwrap(), c);
    }
    for (c, k, groups) in [(4, 4, 4), (6, 10, 1), (9, 40, 1)] {
        let o = ConvOptions::<2>::new().kernel_size([3, 3]).padding(Padding::Explicit([1, 1])).groups(groups);
        let m = observed_conv2d(&mut rng, c, k, o);
        for dtype in [DType::F32, DType::F16] {
            let x = make_input(&mut rng, &[2, c, 7, 9], dtype);
            check_module(&m, &x, &format!("{m}"));
        }
    }
    // Tensor cores (ragged tiles, both layouts, so the transposes run too).
    let o = ConvOptions::<2>::new().kernel_size([3, 3]).padding(Padding::Explicit([1, 1]));
    let shape = qconv::Conv2d::weight_shape(16, 20, &o).unwrap();
    let wt = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let b = Tensor::from_vec(rng.vec(20, -0.5, 0.5), &[20]).unwrap();
    let m = qconv::Conv2d::from_float_observed(wt, Some(b), o).unwrap();
    for dtype in [DType::F16, DType::BF16] {
        check_tensor_core(&m, &make_input(&mut rng, &[2, 16, 7, 9], dtype), "tensor cores");
    }
    // Split-K (9 output positions, a 2304-long reduction).
    let o = ConvOptions::<2>::new().kernel_size([3, 3]).padding(Padding::Explicit([1, 1]));
    let shape = qconv::Conv2d::weight_shape(256, 16, &o).unwrap();
    let wt = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let b = Tensor::from_vec(rng.vec(16, -0.5, 0.5), &[16]).unwrap();
    let sk = qconv::Conv2d::from_float_observed(wt, Some(b), o).unwrap();
    check_tensor_core(&sk, &make_input(&mut rng, &[1, 256, 3, 3], DType::F16), "tensor cores, split-K");
    // The channel padding (3 channels), the transposed tiles, the depthwise kernel.
    let o = ConvOptions::<2>::new().kernel_size([3, 3]).stride([2, 2]).padding(Padding::Explicit([1, 1]));
    let shape = qconv::Conv2d::weight_shape(3, 16, &o).unwrap();
    let wt = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let stem = qconv::Conv2d::from_float_observed(wt, None, o).unwrap();
    check_tensor_core(&stem, &make_input(&mut rng, &[2, 3, 9, 8], DType::F16), "tensor cores, padded channels");
    let o = ConvOptions::<2>::new().kernel_size([4, 4]).stride([2, 2]).padding(Padding::Explicit([1, 1]));
    let shape = qconv::ConvTranspose2d::weight_shape(8, 12, &o).unwrap();
    let wt = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let tr =
        qconv::ConvTranspose2d::from_float_observed(wt, Some(Tensor::zeros(&[12], DType::F32).unwrap()), o).unwrap();
    check_tensor_core(&tr, &make_input(&mut rng, &[2, 8, 5, 6], DType::BF16), "tensor cores, transposed");
    let o = ConvOptions::<2>::new().kernel_size([3, 3]).padding(Padding::Explicit([1, 1])).groups(8);
    let shape = qconv::Conv2d::weight_shape(8, 8, &o).unwrap();
    let wt = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let dw = qconv::Conv2d::from_float_observed(wt, Some(Tensor::zeros(&[8], DType::F32).unwrap()), o).unwrap();
    check_module(&dw, &make_input(&mut rng, &[2, 8, 5, 7], DType::F16), "depthwise, channels-last kernel");
    for (c, k) in [(2, 3), (9, 40)] {
        let o = ConvOptions::<2>::new().kernel_size([3, 3]).stride([2, 2]).padding(Padding::Explicit([1, 1]));
        let shape = qconv::ConvTranspose2d::weight_shape(c, k, &o).unwrap();
        let wt = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
        let m =
            qconv::ConvTranspose2d::from_float_observed(wt, Some(Tensor::zeros(&[k], DType::F32).unwrap()), o).unwrap();
        let x = make_input(&mut rng, &[2, c, 5, 6], DType::F32);
        check_module(&m, &x, &format!("{m}"));
    }
    // One input channel per group: the element-wise loader.
    let o = ConvOptions::<2>::new().kernel_size([3, 3]).padding(Padding::Explicit([1, 1])).groups(4);
    let shape = qconv::Conv2d::weight_shape(4, 64, &o).unwrap();
    let wt = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let el = qconv::Conv2d::from_float_observed(wt, None, o).unwrap();
    check_tensor_core(&el, &make_input(&mut rng, &[2, 4, 5, 6], DType::F16), "tensor cores, element-wise loader");
    // 8-bit weight codes: the *_q8 loaders (padded and not, element-wise) and, for f32, the
    // code expansion before the CUDA-core kernel.
    for (name, m) in [("stem", &stem), ("3x3", &m), ("element-wise", &el)] {
        let q = m.clone().with_weight_storage(WeightStorage::Int8Codes).unwrap();
        let c = m.in_channels();
        check_tensor_core(&q, &make_input(&mut rng, &[2, c, 7, 6], DType::BF16), &format!("codes, {name}"));
        check_module(&q, &make_input(&mut rng, &[2, c, 7, 6], DType::F32), &format!("codes, exact, {name}"));
    }
    // TF32 (padded stem and 16 channels) and its split-K reduction.
    for t in [&stem, &m, &sk] {
        let td = t.to_device(CUDA).unwrap().with_precision(Precision::Tf32);
        let c = t.in_channels();
        let x = make_input(&mut rng, &[1, c, 3, 3], DType::F32).to_device(CUDA).unwrap();
        td.forward(&x).unwrap().to_device(Device::Cpu).unwrap();
    }
    // The int8 family: every kind of tile entry, the depthwise kernel and the u8 channel copy.
    super::int8::int8_smoke(&mut rng);
}

#[test]
fn runtime_modules_and_device_tensors_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Runtime>();
    send_sync::<Tensor>();
    send_sync::<qconv::Conv2d>();
    send_sync::<qconv::ConvTranspose3d>();
    send_sync::<AnyConv>();
}

/// Out of device memory is an error for that call (naming the driver call), and the runtime and
/// a resident module stay usable afterwards: the next forward gives the same bits as before.
#[test]
#[ignore = "needs a CUDA device"]
fn out_of_memory_is_an_error_and_the_runtime_survives() {
    if !gpu("out_of_memory_is_an_error_and_the_runtime_survives") {
        return;
    }
    let rt = Runtime::get(0).unwrap();
    let mut rng = Rng::new(31);
    let o = ConvOptions::<2>::new().kernel_size([3, 3]).padding(Padding::Explicit([1, 1]));
    let shape = qconv::Conv2d::weight_shape(8, 16, &o).unwrap();
    let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let b = Tensor::from_vec(rng.vec(16, -0.5, 0.5), &[16]).unwrap();
    let m = qconv::Conv2d::from_float_observed(w, Some(b), o).unwrap().to_device(CUDA).unwrap();
    let xd = make_input(&mut rng, &[2, 8, 12, 12], DType::F32).to_device(CUDA).unwrap();
    let before = m.forward(&xd).unwrap().to_device(Device::Cpu).unwrap();
    // 4 TiB: more than any current GPU has.
    let err = rt.zeros::<f32>(1 << 40, None).expect_err("a 4 TiB allocation must fail");
    let msg = err.to_string();
    assert!(matches!(err, Error::Cuda { .. }), "{msg}");
    assert!(msg.contains("cuMemAlloc"), "{msg}");
    // A forward whose output cannot be allocated: [1, 16, 2^17, 2^17] f32 is 1 TiB, from an input
    // that does fit ([1, 8, 2^17, 1] is small, but the transposed conv below blows it up).
    let ot = ConvOptions::<2>::new().kernel_size([1, 1]).stride([1, 1 << 17]).output_padding([0, 0]);
    let shape_t = qconv::ConvTranspose2d::weight_shape(8, 16, &ot).unwrap();
    let wt = Tensor::from_vec(rng.vec(shape_t.iter().product(), -0.5, 0.5), &shape_t).unwrap();
    let mt = qconv::ConvTranspose2d::from_float_observed(wt, None, ot).unwrap().to_device(CUDA).unwrap();
    let xt = make_input(&mut rng, &[1, 8, 1 << 17, 2], DType::F32).to_device(CUDA).unwrap();
    match mt.forward(&xt) {
        Err(e) => eprintln!("1 TiB output: {e}"),
        Ok(y) => panic!("a 1 TiB output was allocated: shape {:?}", y.shape()),
    }
    for _ in 0..3 {
        assert_eq!(m.forward(&xd).unwrap().to_device(Device::Cpu).unwrap(), before);
    }
}

/// FakeQuantJob: asynchronous launches on the caller's stream, one check; the non-finite flag is
/// reset per launch and names the first bad element.
#[test]
#[ignore = "needs a CUDA device"]
fn fake_quant_job_launches_asynchronously_and_checks_once() {
    if !gpu("fake_quant_job_launches_asynchronously_and_checks_once") {
        return;
    }
    let rt = Runtime::get(0).unwrap();
    let s = rt.new_stream().unwrap();
    let mut rng = Rng::new(8);
    let shape = [6usize, 5, 3];
    let n = 90;
    let w = rng.vec(n, -1.0, 1.0);
    let qp = qconv::WeightQParams::per_channel(
        vec![0.01, 0.02, 0.03, 0.04, 0.05, 0.06],
        vec![0, 1, -1, 2, 0, 3],
        0,
        QuantDType::QInt8,
    );
    let want =
        qconv::quant::fake_quantize(&Tensor::from_vec(w.clone(), &shape).unwrap(), &qp).unwrap().to_vec_f32().unwrap();
    let src = rt.htod(&w, Some(&s)).unwrap();
    let mut dst = rt.zeros::<f32>(n, Some(&s)).unwrap();
    let mut job = rt.fake_quant_job(&qp, &shape, Some(&s)).unwrap();
    assert_eq!(job.numel(), n);
    for _ in 0..3 {
        job.enqueue(&src, Some(&mut dst), None, Some(&s)).unwrap();
    }
    job.check(&src, Some(&s)).unwrap();
    let got = rt.dtoh(&dst, Some(&s)).unwrap();
    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
    let mut bad = w.clone();
    bad[41] = f32::NAN;
    bad[77] = f32::INFINITY;
    let src_bad = rt.htod(&bad, Some(&s)).unwrap();
    job.enqueue(&src_bad, Some(&mut dst), None, Some(&s)).unwrap();
    match job.check(&src_bad, Some(&s)) {
        Err(Error::NonFiniteWeight { index, .. }) => assert_eq!(index, 41),
        other => panic!("expected NonFiniteWeight, got {other:?}"),
    }
    // The flag is reset by the next launch.
    job.enqueue(&src, Some(&mut dst), None, Some(&s)).unwrap();
    job.check(&src, Some(&s)).unwrap();
    let short = rt.zeros::<f32>(n - 1, Some(&s)).unwrap();
    assert!(matches!(job.enqueue(&short, Some(&mut dst), None, Some(&s)), Err(Error::Shape { .. })));
}
