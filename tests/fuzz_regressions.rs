//! Regression tests for the failures the fuzz targets in `fuzz/` found (`scripts/fuzz.sh`).
//!
//! Each test rebuilds the minimised fuzz input through the public API (the raw libFuzzer inputs
//! are kept in `fuzz/regressions/` for `cargo fuzz run <target> <file>`). Properties: no panic,
//! every error has a message, and a module that could be built survives save → load exactly.

use qconv::io::{StateDict, StoredData, StoredTensor};
use qconv::quant::{QParamData, QParamTensor};
use qconv::{AnyConv, Conv1d, Conv2d, ConvOptions, ConvTranspose2d, QuantDType, Tensor, WeightQParams};

fn weight(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| (i as f32 - 1.5) / 4.0).collect(), shape).unwrap()
}

/// Either the module is rejected with a message, or its state dict round-trips exactly.
fn rejected_or_round_trips(built: qconv::Result<AnyConv>) {
    let m = match built {
        Err(e) => {
            assert!(!e.to_string().trim().is_empty(), "empty error message: {e:?}");
            return;
        }
        Ok(m) => m,
    };
    let bytes =
        m.state_dict("m.").to_bytes().unwrap_or_else(|e| panic!("the state dict of {m} does not serialise: {e}"));
    let sd = StateDict::from_bytes(&bytes).expect("to_bytes output parses");
    let m2 = AnyConv::from_state_dict(&sd, "m.").unwrap_or_else(|e| panic!("save → load of {m} failed: {e}"));
    assert_eq!(m.to_string(), m2.to_string());
    assert_eq!(m.weight_qparams().qscheme, m2.weight_qparams().qscheme);
    assert_eq!(m.weight_qparams().dtype, m2.weight_qparams().dtype);
    let (a, b) = (m.get_weight().to_vec_f32().unwrap(), m2.get_weight().to_vec_f32().unwrap());
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "get_weight() changed in the round trip");
}

fn conv1d(qparams: WeightQParams) -> qconv::Result<AnyConv> {
    Conv1d::from_float(weight(&[2, 1, 3]), None, qparams, ConvOptions::new().kernel_size([3])).map(AnyConv::Conv1d)
}

// ---- fuzz finding 1: StateDict::to_bytes panics on a shape that disagrees with the data --------
// module_config: crash input fuzz/regressions/module_config/to_bytes-overflow-panic.
// `attempt to multiply with overflow` in safetensors-0.4.5/src/tensor.rs:610 (TensorView::new),
// called from src/io/mod.rs:212 (StateDict::to_bytes): the stored shape is trusted.

#[test]
fn to_bytes_with_a_huge_lying_shape_is_an_error() {
    let mut sd = StateDict::new();
    sd.tensors
        .insert("x".into(), StoredTensor { shape: vec![usize::MAX / 2 + 1], data: StoredData::F32(vec![0.0; 3]) });
    let e = sd.to_bytes().expect_err("a shape that disagrees with the data must not serialise");
    assert!(!e.to_string().is_empty());
}

#[test]
fn to_bytes_with_a_small_lying_shape_is_an_error() {
    let mut sd = StateDict::new();
    sd.tensors.insert("x".into(), StoredTensor { shape: vec![2], data: StoredData::F64(vec![1.0; 3]) });
    assert!(sd.to_bytes().is_err());
}

#[test]
fn unused_qparams_with_a_huge_lying_shape_do_not_panic_on_save() {
    let mut q = WeightQParams::none();
    q.scale = QParamTensor { shape: vec![usize::MAX / 2 + 1], data: QParamData::F32(vec![1.0]) };
    rejected_or_round_trips(conv1d(q));
}

// ---- fuzz finding 2: modules whose qparams load rejects --------------------------------------
// module_config: fuzz/regressions/module_config/roundtrip-*. ConvModule::new accepts the qparams,
// StateDict::from_bytes reads the saved file, but AnyConv::from_state_dict rejects it
// (src/conv/state.rs, qparam_tensor: "shape [..] must be (), (1,) or (C,)" / "dtype I32 is not
// allowed here").

#[test]
fn per_tensor_zero_point_of_shape_1x1_round_trips() {
    let mut q = WeightQParams::per_tensor(2.5, 0, QuantDType::QInt8);
    q.zero_point = QParamTensor { shape: vec![1, 1], data: QParamData::I64(vec![0]) };
    rejected_or_round_trips(conv1d(q));
}

#[test]
fn per_tensor_scale_of_shape_1x1_round_trips() {
    let mut q = WeightQParams::per_tensor(0.05, 128, QuantDType::QUInt8);
    q.scale = QParamTensor { shape: vec![1, 1], data: QParamData::F32(vec![0.05]) };
    rejected_or_round_trips(conv1d(q));
}

#[test]
fn unused_two_d_scale_round_trips() {
    let mut q = WeightQParams::none();
    q.dtype = QuantDType::Float64;
    q.scale = QParamTensor { shape: vec![7, 7], data: QParamData::F32(vec![0.006; 49]) };
    rejected_or_round_trips(conv1d(q));
}

#[test]
fn unused_integer_scale_round_trips() {
    let mut q = WeightQParams::none();
    q.scale = QParamTensor { shape: vec![], data: QParamData::I32(vec![1]) };
    rejected_or_round_trips(conv1d(q));
}

#[test]
fn float16_with_unused_lying_scale_round_trips() {
    let mut q = WeightQParams::float16();
    q.scale = QParamTensor { shape: vec![2], data: QParamData::F64(vec![1.0; 3]) };
    rejected_or_round_trips(conv1d(q));
}

// ---- fuzz finding 3: empty batch with a huge output extent --------------------------------------
// module_config: fuzz/regressions/module_config/forward-empty-batch-out-spatial-overflow.
// `attempt to multiply with overflow` at src/conv/module.rs:559 (`out_spatial.iter().product()`
// in the bias fill of `run`): the output has 0 elements (batch 0) but the product of its spatial
// sizes exceeds usize.

#[test]
fn transposed_forward_of_an_empty_batch_with_a_huge_extent() {
    let m = ConvTranspose2d::from_float(
        weight(&[1, 1, 1, 1]),
        Some(Tensor::from_vec(vec![0.25f32], &[1]).unwrap()),
        WeightQParams::none(),
        ConvOptions::new().kernel_size([1, 1]),
    )
    .unwrap();
    let x = Tensor::from_vec(Vec::<f32>::new(), &[0, 1, 1 << 32, 1 << 32]).unwrap();
    match m.forward(&x) {
        Ok(y) => assert_eq!(y.shape(), &[0, 1, 1 << 32, 1 << 32]),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

#[test]
fn forward_of_an_empty_batch_with_a_huge_extent() {
    let m = Conv2d::from_float(
        weight(&[1, 1, 1, 1]),
        Some(Tensor::from_vec(vec![0.25f32], &[1]).unwrap()),
        WeightQParams::none(),
        ConvOptions::new().kernel_size([1, 1]),
    )
    .unwrap();
    let x = Tensor::from_vec(Vec::<f32>::new(), &[0, 1, 1 << 32, 1 << 32]).unwrap();
    match m.forward(&x) {
        Ok(y) => assert_eq!(y.shape(), &[0, 1, 1 << 32, 1 << 32]),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

// ---- fuzz finding 4: output_size with a huge transposed stride ----------------------------------
// module_config: fuzz/regressions/module_config/transposed-output-size-stride-overflow.
// `attempt to add with overflow` at src/conv/options.rs:407 (`max[d] = min[d] + self.stride[d] - 1`
// in transposed_output_size), reached from forward_with_output_size / conv_problem.

#[test]
fn output_size_with_a_huge_transposed_stride() {
    let m = qconv::ConvTranspose1d::from_float(
        weight(&[1, 1, 1]),
        None,
        WeightQParams::none(),
        ConvOptions::new().kernel_size([1]).stride([usize::MAX]),
    )
    .unwrap();
    let x = Tensor::from_vec(vec![1.0f32], &[1, 1, 1]).unwrap();
    for size in [1usize, 2, 7] {
        match m.forward_with_output_size(&x, &[size]) {
            Ok(y) => assert_eq!(y.shape(), &[1, 1, size]),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        match m.conv_problem(x.shape(), Some(&[size])) {
            Ok(p) => assert_eq!(p.out_size[2], size),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

// ---- finding 5 (harness review, confirmed by this test): padding='same' with a huge dilation ----
// `padding_amounts` computes `dilation * (kernel - 1)` unchecked (src/conv/options.rs, Padding::Same),
// and `validate` does not bound it, so forward overflows.

#[test]
fn same_padding_with_a_huge_dilation() {
    let built = Conv1d::from_float(
        weight(&[1, 1, 3]),
        None,
        WeightQParams::none(),
        ConvOptions::new().kernel_size([3]).dilation([usize::MAX]).padding(qconv::Padding::Same),
    );
    let m = match built {
        Ok(m) => m,
        Err(e) => return assert!(!e.to_string().is_empty()),
    };
    let x = Tensor::from_vec(vec![1.0f32; 4], &[1, 1, 4]).unwrap();
    match m.forward(&x) {
        Ok(y) => assert_eq!(y.shape(), &[1, 1, 4]),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

// ---- finding 6 (module_config timeout, > 10 s for ~4,000 multiply-adds) -------------------------
// fuzz/regressions/module_config/depthwise-replicate-huge-stride: a depthwise Conv2d with a
// 1×1 kernel, stride (65536, 7), padding (1, 1000), replicate padding, input (2, 7, 2, 2).
// The output is (2, 7, 1, 286), yet forward ran for more than 10 s under libFuzzer.

// Fixed: windows of the direct path are compact when the row stride exceeds the rows an output
// reads (src/cpu/direct.rs, RowMap).
#[test]
fn depthwise_replicate_with_a_huge_stride_is_fast() {
    let m = Conv2d::from_float(
        weight(&[7, 1, 1, 1]),
        Some(Tensor::from_vec(vec![0.5f32; 7], &[7]).unwrap()),
        WeightQParams::none(),
        ConvOptions::new()
            .kernel_size([1, 1])
            .stride([65536, 7])
            .dilation([7, 7])
            .padding(qconv::Padding::Explicit([1, 1000]))
            .padding_mode(qconv::PaddingMode::Replicate)
            .groups(7),
    )
    .unwrap();
    let x = Tensor::from_vec((0..56).map(|i| i as f32).collect(), &[2, 7, 2, 2]).unwrap();
    let t = std::time::Instant::now();
    let y = m.forward(&x).unwrap();
    assert_eq!(y.shape(), &[2, 7, 1, 286]);
    assert!(t.elapsed().as_secs_f64() < 2.0, "forward took {:?} for 4004 outputs", t.elapsed());
}

// Fuzzer finding (2026-11-26, module_config, from the seed corpus after the short-channel-run
// fake-quant change): a per-channel weight with no channel along the axis made an empty expanded
// row, and sizing the parallel chunks divided by its length (zero). Crash input:
// fuzz/regressions/module_config/fake-quant-no-channels-div-by-zero.
#[test]
fn fake_quant_of_a_weight_without_channels() {
    for shape in [[0usize, 3, 1, 1], [0, 2, 1, 3]] {
        let w = Tensor::from_vec(Vec::<f32>::new(), &shape).unwrap();
        let qp = WeightQParams::per_channel(vec![], vec![], 0, qconv::QuantDType::QInt8);
        let fq = qconv::quant::fake_quantize(&w, &qp).unwrap();
        assert_eq!(fq.shape(), &shape);
        assert_eq!(fq.numel(), 0);
    }
}

// ---- issue 13 item 10: products of user sizes ---------------------------------------------------
// A ConvTranspose2d with stride [2^32, 2^32] on a 1×4×1×1 input (output 3×3): the CPU GEMM path
// sized its tasks by `out_step.iter().product()`, which wrapped to 0 (release) and divided by
// zero (or overflowed in debug).

#[test]
fn transposed_stride_2pow32_squared_runs_and_matches_the_oracle() {
    let s = 1usize << 32;
    let w = weight(&[4, 2, 3, 3]);
    let b = Tensor::from_vec(vec![0.5f32, -0.25], &[2]).unwrap();
    let m = ConvTranspose2d::from_float(
        w,
        Some(b),
        WeightQParams::none(),
        ConvOptions::new().kernel_size([3, 3]).stride([s, s]),
    )
    .unwrap();
    let x = Tensor::from_vec(vec![1.0f32, -2.0, 0.5, 3.0], &[1, 4, 1, 1]).unwrap();
    let y = m.forward(&x).unwrap();
    assert_eq!(y.shape(), &[1, 2, 3, 3]);
    let p = m.conv_problem(x.shape(), None).unwrap();
    let want = qconv::oracle::conv_naive(
        &p,
        &m.get_weight().to_vec_f32().unwrap(),
        Some(&[0.5, -0.25]),
        &x.to_vec_f32().unwrap(),
    );
    for (a, b) in y.to_vec_f32().unwrap().iter().zip(&want) {
        assert!((*a as f64 - b).abs() <= 1e-5, "{a} vs {b}");
    }
    // Inline (no threads) gives the same bits.
    let inline = qconv::parallel::run_inline(|| m.forward(&x).unwrap());
    assert_eq!(inline, y);
}

// module_config fuzz crash (issue 13: 194 s into a run on 11b3dc0): `handle_alloc_error` in the
// CPU padded copy (`build_padded`, a `Vec::resize` sized by the geometry). Input
// fuzz/regressions/module_config/padded-copy-stride-2pow33-batch-1000: a Conv1d with a stride of
// 2^33 and a batch of 1000. With one output column, the stored row pitch of the copy (the padded
// row rounded up to whole sub-rows of the dim-2 step) was 2^33 although the row itself was short,
// and the decision to build the copy looked at the unrounded row. The decision now uses the
// stored layout (and the copy is allocated fallibly); the fuzz input is replayed by
// tests/fuzz_corpus.rs, this is the same case through the public API.
#[test]
fn conv1d_with_stride_2pow33_and_batch_1000_uses_no_huge_padded_copy() {
    let s = 1usize << 33;
    // (in, out, kernel, dilation, padding, length); the first is the fuzz input's module.
    for (cin, cout, k, dil, pad, len) in
        [(3usize, 4usize, 1usize, 6usize, 0usize, 5usize), (4, 5, 3, 1, 1, 5), (4, 5, 2, 2, 0, 3)]
    {
        let o =
            ConvOptions::new().kernel_size([k]).stride([s]).dilation([dil]).padding(qconv::Padding::Explicit([pad]));
        let m = Conv1d::from_float(weight(&[cout, cin, k]), None, WeightQParams::none(), o).unwrap();
        let x = Tensor::from_vec((0..1000 * cin * len).map(|i| (i % 5) as f32).collect(), &[1000, cin, len]).unwrap();
        let y = m.forward(&x).unwrap();
        assert_eq!(y.shape(), &[1000, cout, 1]);
        let p = m.conv_problem(x.shape(), None).unwrap();
        let want = qconv::oracle::conv_naive(&p, &m.get_weight().to_vec_f32().unwrap(), None, &x.to_vec_f32().unwrap());
        for (a, b) in y.to_vec_f32().unwrap().iter().zip(&want) {
            assert!((*a as f64 - b).abs() <= 1e-4, "{a} vs {b}");
        }
    }
}

// Fuzzer finding (module_config, 2026 reliability pass, fuzz/regressions/module_config/
// padded-row-left-of-the-input): a Conv1d(3 → 4, kernel 1, stride 1000, dilation 1000,
// padding 4) on an unbatched (3, 2) input. Its only tap reads input index −4: the padded copy's
// row lies wholly left of the input, and the padded row copy sliced the input at `lo + a = −3`
// (an empty range, but an out-of-bounds start) — a panic in `fill_padded`. The same empty range
// could be sliced past the input's end when a zero-padded copy or window was reused.
#[test]
fn padded_rows_wholly_outside_the_input() {
    let check = |m: &AnyConv, x: &Tensor| {
        let p = qconv_problem(m, x);
        for _ in 0..2 {
            // Twice: the second call reuses the zero pattern of the first.
            let y = m.forward(x).unwrap();
            let want =
                qconv::oracle::conv_naive(&p, &m.get_weight().to_vec_f32().unwrap(), None, &x.to_vec_f32().unwrap());
            for (a, b) in y.to_vec_f32().unwrap().iter().zip(&want) {
                assert!((*a as f64 - b).abs() <= 1e-4, "{m}: {a} vs {b}");
            }
        }
    };
    let o = ConvOptions::new().kernel_size([1]).stride([1000]).dilation([1000]).padding(qconv::Padding::Explicit([4]));
    let m = AnyConv::Conv1d(Conv1d::from_float(weight(&[4, 3, 1]), None, WeightQParams::none(), o).unwrap());
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]).unwrap();
    check(&m, &x);
    // A sweep of rows left of, right of and across the input: GEMM (padded copy) and direct
    // (depthwise) paths, forward and transposed.
    for (k, stride, dil, pad, len, groups) in [
        (1usize, 1000usize, 1000usize, 4usize, 2usize, 1usize),
        (2, 1000, 1000, 7, 3, 4),
        (2, 1, 5, 9, 1, 4),
        (3, 2, 1, 6, 2, 1),
        (1, 3, 1, 5, 1, 4),
    ] {
        let o = ConvOptions::new()
            .kernel_size([k])
            .stride([stride])
            .dilation([dil])
            .padding(qconv::Padding::Explicit([pad]))
            .groups(groups);
        let m =
            AnyConv::Conv1d(Conv1d::from_float(weight(&[4, 4 / groups, k]), None, WeightQParams::none(), o).unwrap());
        let x = Tensor::from_vec((0..8 * len).map(|i| i as f32 - 3.0).collect(), &[2, 4, len]).unwrap();
        if m.forward(&x).is_ok() {
            check(&m, &x);
        }
        let t = qconv::ConvTranspose1d::from_float(weight(&[4, 4 / groups, k]), None, WeightQParams::none(), o);
        if let Ok(t) = t {
            let t = AnyConv::ConvTranspose1d(t);
            if t.forward(&x).is_ok() {
                check(&t, &x);
            }
        }
    }
}

fn qconv_problem(m: &AnyConv, x: &Tensor) -> qconv::problem::ConvProblem {
    match m {
        AnyConv::Conv1d(m) => m.conv_problem(x.shape(), None).unwrap(),
        AnyConv::ConvTranspose1d(m) => m.conv_problem(x.shape(), None).unwrap(),
        _ => unreachable!("1-d modules only"),
    }
}
