//! The exact path (`Precision::Exact`) against the f64 oracle and PyTorch: the fixtures, random
//! sweeps of every kernel, large tiles and empty inputs, exported models, own streams and many
//! threads, inputs past 2^31 elements.

use super::*;

#[test]
#[ignore = "needs a CUDA device"]
fn pytorch_fixtures_run_on_cuda() {
    if !gpu("pytorch_fixtures_run_on_cuda") {
        return;
    }
    let sd = StateDict::load(fixture_path()).unwrap();
    let names: Vec<String> = serde_json::from_str(&sd.metadata["__cases__"]).unwrap();
    let mut failures = Vec::new();
    for case in &names {
        let prefix = format!("{case}.");
        let (m, _) = AnyConv::from_state_dict_lenient(&sd, &prefix).unwrap();
        let fwd: serde_json::Value = serde_json::from_str(&sd.metadata[&format!("{prefix}forward")]).unwrap();
        let output_size: Option<Vec<usize>> =
            fwd["output_size"].as_array().map(|a| a.iter().map(|v| v.as_u64().unwrap() as usize).collect());
        let x = sd.tensor(&format!("{prefix}input")).unwrap();
        let want = sd.tensor(&format!("{prefix}output")).unwrap().to_vec_f32().unwrap();
        // The module is moved (self-checking its fake-quantized weight on the device) and run there.
        let md = match m.to_device(CUDA) {
            Ok(md) => md,
            Err(e) => {
                failures.push(format!("{case}: to_device: {e}"));
                continue;
            }
        };
        let y = match forward_opt(&md, &x.to_device(CUDA).unwrap(), output_size.as_deref()) {
            Ok(y) => y.to_device(Device::Cpu).unwrap().to_vec_f32().unwrap(),
            Err(e) => {
                failures.push(format!("{case}: forward: {e}"));
                continue;
            }
        };
        // Same criterion as tests/fixtures.rs for the CPU path: within 8 units of
        // eps32 · (Σ|x||ŵ| + |b|) of PyTorch's output.
        let mag = magnitude(&m, &prefix, &x, output_size.as_deref());
        for i in 0..want.len() {
            let units = (y[i] - want[i]).abs() / (f32::EPSILON * mag[i]).max(f32::MIN_POSITIVE);
            if units > 8.0 {
                failures.push(format!("{case}: output[{i}] = {} want {} ({units:.2} units)", y[i], want[i]));
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
#[ignore = "needs a CUDA device"]
fn randomized_sweep_against_the_oracle() {
    if !gpu("randomized_sweep_against_the_oracle") {
        return;
    }
    let mut rng = Rng::new(0xC0DA);
    sweep::<1, false>(&mut rng, 24);
    sweep::<2, false>(&mut rng, 36);
    sweep::<3, false>(&mut rng, 12);
    sweep::<1, true>(&mut rng, 18);
    sweep::<2, true>(&mut rng, 24);
    sweep::<3, true>(&mut rng, 9);
}

#[test]
#[ignore = "needs a CUDA device"]
fn large_tiles_and_empty_inputs() {
    if !gpu("large_tiles_and_empty_inputs") {
        return;
    }
    let mut rng = Rng::new(7);
    // Enough 128-column tiles (>= 2 per SM on any current GPU) for the 128x128 tile: 2*136*136
    // columns, 64 output channels per group.
    for (c, k) in [(8, 64), (16, 160)] {
        let o = ConvOptions::<2>::new().kernel_size([3, 3]).padding(Padding::Explicit([1, 1]));
        let m = observed_conv2d(&mut rng, c, k, o);
        let sp = if k == 64 { 136 } else { 40 };
        for dtype in [DType::F32, DType::BF16] {
            let x = make_input(&mut rng, &[2, c, sp, sp], dtype);
            check_module(&m, &x, &format!("{m}"));
        }
    }
    // Transposed with stride 2 (four phases of 2*66*66 columns: 4 * 69 tiles of 128) and 128
    // output channels: the 128x128 tile.
    let o = ConvOptions::<2>::new().kernel_size([4, 4]).stride([2, 2]).padding(Padding::Explicit([1, 1]));
    let shape = qconv::ConvTranspose2d::weight_shape(8, 128, &o).unwrap();
    let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let b = Tensor::from_vec(rng.vec(128, -0.5, 0.5), &[128]).unwrap();
    let m = qconv::ConvTranspose2d::from_float_observed(w, Some(b), o).unwrap();
    let x = make_input(&mut rng, &[2, 8, 66, 66], DType::F16);
    check_module(&m, &x, "ConvTranspose2d 8->128 s2");
    // Empty batch and zero-size spatial input (padding only): shapes and bias as on the CPU.
    let o = ConvOptions::<1>::new().kernel_size([3]).padding(Padding::Explicit([2]));
    let w = Tensor::from_vec(rng.vec(2 * 3 * 3, -0.5, 0.5), &[2, 3, 3]).unwrap();
    let b = Tensor::from_vec(vec![0.25f32, -1.0], &[2]).unwrap();
    let m = qconv::Conv1d::from_float_observed(w, Some(b), o).unwrap();
    let md = m.to_device(CUDA).unwrap();
    for shape in [[0usize, 3, 5], [2, 3, 0]] {
        let x = Tensor::zeros(&shape, DType::F32).unwrap();
        let cpu = m.forward(&x).unwrap();
        let gpu = md.forward(&x.to_device(CUDA).unwrap()).unwrap().to_device(Device::Cpu).unwrap();
        assert_eq!(gpu, cpu, "input {shape:?}");
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn own_streams_and_many_threads_give_identical_results() {
    if !gpu("own_streams_and_many_threads_give_identical_results") {
        return;
    }
    let mut rng = Rng::new(99);
    let o = ConvOptions::<2>::new().kernel_size([3, 3]).padding(Padding::Explicit([1, 1])).groups(2);
    let shape = qconv::Conv2d::weight_shape(16, 48, &o).unwrap();
    let w = Tensor::from_vec(rng.vec(shape.iter().product(), -0.5, 0.5), &shape).unwrap();
    let b = Tensor::from_vec(rng.vec(48, -0.5, 0.5), &[48]).unwrap();
    let m = Arc::new(qconv::Conv2d::from_float_observed(w, Some(b), o).unwrap().to_device(CUDA).unwrap());
    let x = make_input(&mut rng, &[4, 16, 20, 20], DType::F32);
    let xd = x.to_device(CUDA).unwrap();
    let reference = m.forward(&xd).unwrap().to_device(Device::Cpu).unwrap();
    // The same kernel on any stream computes the same bits.
    let rt = Runtime::get(0).unwrap();
    let s = rt.new_stream().unwrap();
    // Several launches queued on the caller's stream; the copy to the host waits for them.
    let ys: Vec<Tensor> = (0..3).map(|_| m.forward_on_stream(&xd, &s).unwrap()).collect();
    for y in ys {
        assert_eq!(y.to_device(Device::Cpu).unwrap(), reference);
    }
    // Eight threads, each with its own stream (and one on the default stream), sharing the module
    // and the input.
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (m, xd, rt) = (Arc::clone(&m), xd.clone(), Arc::clone(&rt));
            std::thread::spawn(move || {
                let s = rt.new_stream().unwrap();
                (0..5)
                    .map(|_| {
                        let y = if t == 0 { m.forward(&xd) } else { m.forward_on_stream(&xd, &s) };
                        y.unwrap().to_device(Device::Cpu).unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for y in h.join().unwrap() {
            assert_eq!(y, reference);
        }
    }
}

/// The model exported from PyTorch by scripts/export_pytorch.py (four modules) on CUDA: every
/// module moved to the device agrees with the CPU path within the f32 tolerance, batched input.
#[test]
#[ignore = "needs a CUDA device"]
fn exported_pytorch_model_runs_on_cuda() {
    if !gpu("exported_pytorch_model_runs_on_cuda") {
        return;
    }
    let sd = StateDict::load(fixture("export_demo.safetensors")).unwrap();
    let mut rng = Rng::new(31);
    for prefix in sd.module_prefixes() {
        let m = AnyConv::from_state_dict(&sd, &prefix).unwrap();
        let (d, c) = (m.get_weight().ndim() - 2, m.in_channels());
        let mut shape = vec![2, c];
        shape.extend(std::iter::repeat_n(9, d));
        let x = make_input(&mut rng, &shape, DType::F32);
        let cpu = m.forward(&x).unwrap();
        let gpu = m.to_device(CUDA).unwrap().forward(&x.to_device(CUDA).unwrap()).unwrap();
        let gpu = gpu.to_device(Device::Cpu).unwrap();
        assert_eq!(gpu.shape(), cpu.shape(), "{prefix}");
        let mag = magnitude(&m, &prefix, &x, None);
        let (g, c) = (gpu.to_vec_f32().unwrap(), cpu.to_vec_f32().unwrap());
        for i in 0..c.len() {
            // Both within 8 units of the exact sum, so within 16 of each other.
            assert!(
                (g[i] - c[i]).abs() <= 16.0 * f32::EPSILON * mag[i],
                "{prefix}: output[{i}] = {} cpu {}",
                g[i],
                c[i]
            );
        }
    }
}

/// Inputs past 2^31 elements (issue: 64-bit offsets): a Conv2d through the tiled kernel and a
/// depthwise Conv1d through the direct kernel, f16, inputs (and outputs) of more than 2^31
/// elements. Sampled outputs — including the last rows, whose offsets need 64 bits — against an
/// f64 sum over the fake-quantized weight.
#[test]
#[ignore = "needs a CUDA device"]
fn inputs_past_two_to_the_31_elements() {
    if !gpu("inputs_past_two_to_the_31_elements") {
        return;
    }
    let free = {
        let rt = Runtime::get(0).unwrap();
        rt.context().bind_to_thread().unwrap();
        cudarc::driver::result::mem_get_info().map(|(free, _)| free).unwrap_or(0)
    };
    if free < 24 << 30 {
        eprintln!("inputs_past_two_to_the_31_elements: skipped: needs 24 GiB of free device memory, {free} B free");
        return;
    }
    // A cheap deterministic pattern of 251 distinct f16 values in [-1, 1].
    let table: Vec<f16> = (0..251).map(|i| f16::from_f32(i as f32 / 125.0 - 1.0)).collect();
    let value = |i: usize| table[(i.wrapping_mul(2654435761) >> 7) % 251];
    let mut rng = Rng::new(77);
    // (module, input shape) pairs: 4*23200*23200 = 2_152_960_000 and 4*540_000_000 elements.
    let o2 = ConvOptions::<2>::new().kernel_size([3, 3]).padding(Padding::Explicit([1, 1]));
    let s2 = qconv::Conv2d::weight_shape(4, 4, &o2).unwrap();
    let w2 = Tensor::from_vec(rng.vec(s2.iter().product(), -0.5, 0.5), &s2).unwrap();
    let m2 = qconv::Conv2d::from_float_observed(w2, Some(Tensor::from_vec(rng.vec(4, -0.5, 0.5), &[4]).unwrap()), o2)
        .unwrap();
    let o1 = ConvOptions::<1>::new().kernel_size([3]).padding(Padding::Explicit([1])).groups(4);
    let s1 = qconv::Conv1d::weight_shape(4, 4, &o1).unwrap();
    let w1 = Tensor::from_vec(rng.vec(s1.iter().product(), -0.5, 0.5), &s1).unwrap();
    let m1 = qconv::Conv1d::from_float_observed(w1, Some(Tensor::from_vec(rng.vec(4, -0.5, 0.5), &[4]).unwrap()), o1)
        .unwrap();
    // One spatial dimension past the kernels' 32-bit coordinate range is refused before launch.
    {
        let long = Tensor::zeros(&[1, 4, 1_073_790_000], DType::F16).unwrap().to_device(CUDA).unwrap();
        match m1.to_device(CUDA).unwrap().forward(&long) {
            Err(Error::InvalidConfig { param, rule, .. }) => {
                assert_eq!(param, "convolution size");
                assert!(rule.contains("< 2^31"), "{rule}");
            }
            other => panic!(
                "a spatial size of 1_073_790_000 must be refused on CUDA, got {:?}",
                other.map(|t| t.shape().to_vec())
            ),
        }
    }
    for case in 0..2 {
        let (c, k, hw): (usize, usize, [usize; 2]) =
            if case == 0 { (4, 4, [23200, 23200]) } else { (4, 4, [1, 540_000_000]) };
        let n = c * hw[0] * hw[1];
        assert!(n > 1 << 31);
        let x: Vec<f16> = (0..n).map(value).collect();
        let (wq, bias, groups) = if case == 0 {
            (m2.get_weight().to_vec_f32().unwrap(), m2.bias().unwrap().to_vec_f32().unwrap(), 1)
        } else {
            (m1.get_weight().to_vec_f32().unwrap(), m1.bias().unwrap().to_vec_f32().unwrap(), 4)
        };
        let y: Vec<f16> = if case == 0 {
            let xd = Tensor::from_vec(x, &[1, c, hw[0], hw[1]]).unwrap().to_device(CUDA).unwrap();
            let md = m2.to_device(CUDA).unwrap();
            let yd = md.forward(&xd).unwrap();
            assert_eq!(yd.shape(), &[1, k, hw[0], hw[1]]);
            drop(xd);
            yd.to_device(Device::Cpu).unwrap().as_slice::<f16>().unwrap().to_vec()
        } else {
            let xd = Tensor::from_vec(x, &[1, c, hw[1]]).unwrap().to_device(CUDA).unwrap();
            let md = m1.to_device(CUDA).unwrap();
            let yd = md.forward(&xd).unwrap();
            assert_eq!(yd.shape(), &[1, k, hw[1]]);
            drop(xd);
            yd.to_device(Device::Cpu).unwrap().as_slice::<f16>().unwrap().to_vec()
        };
        let (kh, cg) = if case == 0 { (3usize, c) } else { (1usize, 1) };
        let at = |ch: usize, h: i64, w: i64| -> f64 {
            if h < 0 || w < 0 || h >= hw[0] as i64 || w >= hw[1] as i64 {
                0.0
            } else {
                value((ch * hw[0] + h as usize) * hw[1] + w as usize).to_f64()
            }
        };
        let mut checked = 0;
        let mut positions: Vec<(usize, usize, usize)> =
            (0..400).map(|_| (pick(&mut rng, k), pick(&mut rng, hw[0]), pick(&mut rng, hw[1]))).collect();
        positions.extend([
            (k - 1, hw[0] - 1, hw[1] - 1),
            (k - 1, hw[0] - 1, 0),
            (0, 0, 0),
            (k - 1, hw[0] / 2, hw[1] - 2),
        ]);
        for (ko, oh, ow) in positions {
            let g = ko / (k / groups);
            let (mut acc, mut mag) = (bias[ko] as f64, (bias[ko] as f64).abs());
            for ci in 0..cg {
                for i in 0..kh {
                    for j in 0..3 {
                        let wv = wq[((ko * cg + ci) * kh + i) * 3 + j] as f64;
                        let xv = at(g * cg + ci, oh as i64 + i as i64 - (kh as i64 / 2), ow as i64 + j as i64 - 1);
                        acc += wv * xv;
                        mag += (wv * xv).abs();
                    }
                }
            }
            let got = y[(ko * hw[0] + oh) * hw[1] + ow].to_f64();
            let tol = 8.0 * f32::EPSILON as f64 * mag + 2f64.powi(-11) * acc.abs() + 1e-30;
            assert!((got - acc).abs() <= tol, "case {case}: y[{ko}, {oh}, {ow}] = {got}, want {acc} (tol {tol:e})");
            checked += 1;
        }
        eprintln!("inputs_past_two_to_the_31_elements: case {case}: {n} input elements, {checked} outputs checked");
    }
}
