#![cfg(feature = "cli")]
//! The `qconv` binary end to end: run, weights, info, bench, and clean one-line errors.

use std::path::PathBuf;
use std::process::Command;

use qconv::io::{StateDict, StoredData};
use qconv::AnyConv;

fn qconv(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qconv")).args(args).output().expect("qconv runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qconv-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn run_and_weights_reproduce_the_library() {
    let model = fixture("export_demo.safetensors");
    let sd = StateDict::load(&model).unwrap();
    let m = AnyConv::from_state_dict(&sd, "conv2.").unwrap();
    let x = qconv::Tensor::from_vec(vec![0.25f32; 2 * m.in_channels() * 8 * 8], &[2, m.in_channels(), 8, 8]).unwrap();
    let mut input = StateDict::new();
    input.insert_tensor("input", &x);
    let in_path = tmp("in.safetensors");
    input.save(&in_path).unwrap();
    let out_path = tmp("out.safetensors");
    let (ok, _, err) = qconv(&[
        "run",
        "--model",
        &model,
        "--prefix",
        "conv2.",
        "--input",
        in_path.to_str().unwrap(),
        "--output",
        out_path.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(ok, "{err}");
    let y = StateDict::load(&out_path).unwrap().tensor("output").unwrap();
    assert_eq!(y, m.forward(&x).unwrap());

    let w_path = tmp("w.safetensors");
    let (ok, _, err) =
        qconv(&["weights", "--model", &model, "--prefix", "conv2.", "--output", w_path.to_str().unwrap()]);
    assert!(ok, "{err}");
    let w = StateDict::load(&w_path).unwrap();
    assert_eq!(&w.tensor("weight_fq").unwrap(), m.get_weight());
    let StoredData::I32(codes) = &w.tensors["weight_q"].data else { panic!("weight_q must be I32") };
    assert_eq!(codes.len(), m.weight().numel());
    assert_eq!(w.tensors["weight_q"].shape, m.weight().shape());
}

#[test]
fn errors_are_one_clean_line() {
    let model = fixture("export_demo.safetensors");
    // Several modules and no --prefix: a usage error naming the prefixes.
    let (ok, _, err) = qconv(&["weights", "--model", &model, "--output", "/nonexistent/x"]);
    assert!(!ok);
    assert!(err.starts_with("error: ") && err.contains("--prefix"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A missing file.
    let (ok, _, err) = qconv(&["weights", "--model", "/nonexistent.safetensors", "--prefix", "", "--output", "x"]);
    assert!(!ok);
    assert!(err.starts_with("error: reading /nonexistent.safetensors"), "{err}");
    // Garbage as a model file.
    let junk = tmp("junk.safetensors");
    std::fs::write(&junk, b"definitely not safetensors").unwrap();
    let (ok, _, err) = qconv(&["weights", "--model", junk.to_str().unwrap(), "--output", "x"]);
    assert!(!ok && err.starts_with("error: malformed safetensors"), "{err}");
    // Unknown flag, unknown command, bad device, output size on a forward conv.
    for args in [
        vec!["run", "--bogus", "1"],
        vec!["frobnicate"],
        vec!["bench", "--case", "nope"],
        vec!["bench", "--batch", "0"],
    ] {
        let (ok, _, err) = qconv(&args);
        assert!(!ok, "{args:?}");
        assert!(err.starts_with("error: ") && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn cuda_request_without_a_gpu_is_an_error_not_a_panic() {
    let model = fixture("export_demo.safetensors");
    let (ok, _, err) =
        qconv(&["run", "--model", &model, "--prefix", "head.", "--input", "x", "--output", "y", "--device", "cuda:0"]);
    assert!(!ok);
    assert!(err.starts_with("error: ") && !err.contains("panicked"), "{err}");
}

#[test]
fn info_reports_the_probe() {
    let (ok, out, err) = qconv(&["info"]);
    assert!(ok, "{err}");
    assert!(out.contains("cuda driver library:") && out.contains("compute device (auto):"), "{out}");
    if !qconv::cuda::probe().usable() {
        assert!(out.contains("cuda usable: no"), "{out}");
    }
}

#[test]
fn bench_prints_json_lines_pairing_with_torch_cpu() {
    let (ok, out, err) = qconv(&["bench", "--case", "c2d_dw", "--min-time", "0"]);
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3);
    for (row, op) in rows.iter().zip(["module_forward", "weight_fakequant", "int8_module"]) {
        assert_eq!(row["peer"], "qconv");
        assert_eq!(row["case"], "c2d_dw");
        assert_eq!(row["op"], op);
        assert!(row["median_us"].as_f64().unwrap() > 0.0);
        assert!(row["threads"].as_u64().unwrap() >= 1);
    }
    assert!(rows[0]["gflops"].as_f64().unwrap() > 0.0);
    assert!(rows[1]["gflops"].is_null());
    // The int8 row pairs with torch_cpu.py's `int8_module` rows: same case, op and settings.
    assert!(rows[2]["gflops"].as_f64().unwrap() > 0.0);
    assert_eq!(rows[2]["act_zero_point"], 64);
    assert_eq!(rows[2]["weight_qscheme"], "per_channel_symmetric");
}

/// Runs qconv with OS-string arguments; returns (exit code, stdout, stderr).
fn qconv_os(args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qconv")).args(args).output().expect("qconv runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn code(args: &[&str]) -> (Option<i32>, String, String) {
    let os: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    qconv_os(&os)
}

/// A fresh temporary directory for one test.
fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qconv-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_subcommand_answers_help_and_version() {
    for sub in ["info", "run", "weights", "inspect", "bench", "warmup"] {
        for flag in ["--help", "-h"] {
            let (c, out, err) = code(&[sub, flag]);
            assert_eq!(c, Some(0), "{sub} {flag}: {err}");
            assert!(out.contains(&format!("Usage: qconv {sub}")), "{sub} {flag}: {out}");
        }
        let (c, out, _) = code(&["help", sub]);
        assert_eq!(c, Some(0));
        assert!(out.contains(&format!("Usage: qconv {sub}")), "help {sub}: {out}");
    }
    for flag in ["--version", "-V"] {
        let (c, out, _) = code(&[flag]);
        assert_eq!(c, Some(0));
        assert!(out.starts_with(&format!("qconv {}", env!("CARGO_PKG_VERSION"))), "{out}");
    }
    let (c, out, _) = code(&["run", "--version"]);
    assert_eq!(c, Some(0), "{out}");
}

/// Every usage error exits with 2, is checked before any file is read, and suggests fixes.
#[test]
fn usage_errors_exit_2_before_any_work() {
    let model = fixture("export_demo.safetensors");
    let m = model.as_str();
    let cases: &[(&[&str], &str)] = &[
        (&["runn"], "similar subcommand exists: 'run'"),
        (&["run", "--modle", "x"], "similar argument exists: '--model'"),
        (&["run", "--model", "/nonexistent", "--input", "x", "--output", "y", "--output-size", "5,a"], "5,a"),
        (&["run", "--model", m, "--model", m, "--input", "x", "--output", "y"], "cannot be used multiple times"),
        (&["run", "--model", m, "--input", "x", "--output", "y", "--device", "gpu"], "expected auto, cpu"),
        (&["bench", "--batch", "1000000000"], "from 1 to 1024"),
        (&["bench", "--batch", "18446744073709551615"], "from 1 to 1024"),
        (&["bench", "--batch", "abc"], "from 1 to 1024"),
        (&["bench", "--min-time", "nan"], "seconds"),
        (&["bench", "--case", "nosuch"], "unknown case"),
        (&["bench", "--case", "g_3x3_64"], "GPU case"),
        (&["warmup", "--arch", "foo"], "not an architecture"),
        (&["warmup", "--arch", "sm_75"], "older than sm_80"),
        (
            &["warmup", "--arch", "sm_90,sm_100a"],
            "the only architecture-specific target qconv has kernels for is sm_90a",
        ),
        (&["weights", "--model", m, "--prefix", "nosuch.", "--output", "x"], "nearest: "),
        (&["weights", "--model", m, "--output", "x"], "choose one with --prefix"),
    ];
    for (args, needle) in cases {
        let (c, _, err) = code(args);
        assert_eq!(c, Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("/nonexistent") && !err.contains("panicked"), "{args:?}: {err}");
    }
    // Run-time errors exit with 1.
    let (c, _, err) = code(&["weights", "--model", "/nonexistent.safetensors", "--output", "x"]);
    assert_eq!(c, Some(1), "{err}");
}

fn write_input(path: &std::path::Path, shape: &[usize]) {
    let n: usize = shape.iter().product();
    let x = qconv::Tensor::from_vec((0..n).map(|i| (i % 7) as f32 * 0.25 - 0.5).collect::<Vec<_>>(), shape).unwrap();
    let mut sd = StateDict::new();
    sd.insert_tensor("input", &x);
    sd.save(path).unwrap();
}

#[test]
fn prefixes_with_or_without_the_dot_and_clear_messages() {
    let model = fixture("export_demo.safetensors");
    let dir = tmp_dir("prefix");
    let input = dir.join("in.safetensors");
    write_input(&input, &[1, 3, 6, 6]);
    let out = dir.join("out.safetensors");
    for prefix in ["conv1.0", "conv1.0."] {
        let (c, _, err) = code(&[
            "run",
            "--model",
            &model,
            "--prefix",
            prefix,
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--device",
            "cpu",
        ]);
        assert_eq!(c, Some(0), "{prefix}: {err}");
    }
    // --output-size on a forward convolution: a usage error in words, no Rust debug text.
    let (c, _, err) = code(&[
        "run",
        "--model",
        &model,
        "--prefix",
        "conv1.0",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--output-size",
        "14,8",
    ]);
    assert_eq!(c, Some(2), "{err}");
    assert!(err.contains("[14, 8]") && err.contains("Conv2d") && !err.contains("Some("), "{err}");
    // A PyTorch checkpoint given as the model.
    let pt = dir.join("model.pt");
    std::fs::write(&pt, b"PK\x03\x04rest of a zip archive").unwrap();
    let (c, _, err) = code(&["inspect", pt.to_str().unwrap()]);
    assert_eq!(c, Some(1));
    assert!(err.contains("PyTorch checkpoint") && err.contains("scripts/export_pytorch.py"), "{err}");
    assert!(!err.contains("HeaderTooLarge"), "{err}");
}

#[test]
fn inspect_lists_every_module() {
    let (c, out, err) = code(&["inspect", &fixture("export_demo.safetensors")]);
    assert_eq!(c, Some(0), "{err}");
    for needle in ["conv1.0.", "conv2.", "head.", "up.", "ConvTranspose2d", "F32 [4, 3, 3, 3]", "torch.qint8"] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    let (c, out, _) = code(&["inspect", &fixture("export_demo.safetensors"), "--json"]);
    assert_eq!(c, Some(0));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let modules = doc["modules"].as_array().unwrap();
    assert_eq!(modules.len(), 4);
    assert_eq!(modules[0]["prefix"], "conv1.0.");
    assert_eq!(modules[0]["type"], "Conv2d");
    assert_eq!(modules[0]["weight"]["shape"], serde_json::json!([4, 3, 3, 3]));
    assert_eq!(modules[0]["qscheme"], "torch.per_channel_affine");
    // Lowered int8 entries are listed too.
    let (c, out, _) = code(&["inspect", &fixture("int8.safetensors"), "--json"]);
    assert_eq!(c, Some(0));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let first = &doc["modules"][0];
    assert!(first["type"].as_str().unwrap().starts_with("QuantizedConv"), "{first}");
    assert_eq!(first["weight"]["dtype"], "I8");
}

/// A closed stdout or stderr ends qconv quietly: SIGPIPE or exit 0, never a panic or a message.
#[test]
fn closed_pipes_end_quietly() {
    let q = env!("CARGO_BIN_EXE_qconv");
    let dir = tmp_dir("pipes");
    let input = dir.join("in.safetensors");
    write_input(&input, &[1, 4, 5, 5]);
    let out = dir.join("out.safetensors");
    let model = fixture("export_demo.safetensors");
    let scripts = [
        format!("'{q}' info | head -c 0"),
        format!("'{q}' bench --case c2d_dw --min-time 0 | head -n 1 >/dev/null; sleep 0"),
        format!(
            "'{q}' run --model '{model}' --prefix up --input '{}' --output '{}' --device cpu 2>&1 >/dev/null | head -c 0",
            input.display(),
            out.display()
        ),
    ];
    for script in scripts {
        let o = Command::new("bash")
            .arg("-c")
            .arg(format!("{script}; echo status=${{PIPESTATUS[0]}} >&2"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        let status = err.lines().last().unwrap_or("");
        assert!(status == "status=0" || status == "status=141", "{script}: {err}");
        assert_eq!(err.lines().count(), 1, "{script}: {err}");
    }
    assert!(out.exists(), "run finished its work before stderr closed");
}

/// Non-UTF-8 paths (legal on Linux) work end to end.
#[test]
fn non_utf8_paths_work() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tmp_dir("utf8");
    let model = dir.join(OsStr::from_bytes(b"m\xff.st"));
    std::fs::copy(fixture("export_demo.safetensors"), &model).unwrap();
    let input = dir.join(OsStr::from_bytes(b"in\xfe.st"));
    write_input(&input, &[1, 4, 5, 5]);
    let out = dir.join(OsStr::from_bytes(b"out\xfd.st"));
    let args: Vec<&OsStr> = vec![
        "run".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--prefix".as_ref(),
        "up".as_ref(),
        "--input".as_ref(),
        input.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
        "--device".as_ref(),
        "cpu".as_ref(),
    ];
    let (c, _, err) = qconv_os(&args);
    assert_eq!(c, Some(0), "{err}");
    assert!(StateDict::load(&out).unwrap().tensors.contains_key("output"));
    let (c, _, err) = qconv_os(&["inspect".as_ref(), model.as_os_str()]);
    assert_eq!(c, Some(0), "{err}");
}

/// `warmup` refuses a cache directory it cannot write before compiling anything.
#[cfg(feature = "cuda")]
#[test]
fn warmup_fails_when_nothing_could_be_saved() {
    let dir = tmp_dir("warmup");
    let file = dir.join("a-file");
    std::fs::write(&file, b"").unwrap();
    let start = std::time::Instant::now();
    let (c, _, err) = code(&["warmup", "--arch", "sm_90", "--cache-dir", file.join("cache").to_str().unwrap()]);
    assert_eq!(c, Some(1), "{err}");
    assert!(err.contains("cannot save compiled kernels") && err.contains("--no-disk-cache"), "{err}");
    assert!(start.elapsed().as_secs() < 20, "refused before compiling");
}

/// A clean model file holding the lowered module of fixture case `case` (the fixture file adds
/// test entries under each prefix), with or without its stored input qparams.
fn lowered_model(case: &str, keep_input_qparams: bool) -> (PathBuf, qconv::AnyQuantizedConv, StateDict) {
    let sd = StateDict::load(fixture("int8.safetensors")).unwrap();
    let (m, _) = qconv::AnyQuantizedConv::from_state_dict_lenient(&sd, &format!("{case}.")).unwrap();
    let mut model = m.state_dict("layer.");
    if !keep_input_qparams {
        model.tensors.remove("layer.input_scale");
        model.tensors.remove("layer.input_zero_point");
    }
    let path = tmp(&format!("lowered_{case}_{keep_input_qparams}.safetensors"));
    model.save(&path).unwrap();
    let m = qconv::AnyQuantizedConv::from_state_dict(&model, "layer.").unwrap();
    (path, m, sd)
}

fn run_args<'a>(model: &'a str, input: &'a str, output: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["run", "--model", model, "--input", input, "--output", output];
    v.extend_from_slice(extra);
    v
}

#[test]
fn run_on_lowered_int8_modules() {
    let case = "convrelu2d_pt";
    let (model, m, sd) = lowered_model(case, true);
    let model = model.to_str().unwrap().to_string();
    let out_path = tmp("lowered_out.safetensors");
    let out = out_path.to_str().unwrap();
    // U8 codes with F32/I32 qparams beside them (they win over the stored ones): PyTorch's codes.
    let mut input = StateDict::new();
    input.tensors.insert("input".into(), sd.tensors[&format!("{case}.input")].clone());
    let StoredData::F64(s) = &sd.tensors[&format!("{case}.input_scale")].data else { panic!() };
    let StoredData::I64(z) = &sd.tensors[&format!("{case}.input_zero_point")].data else { panic!() };
    input
        .tensors
        .insert("input_scale".into(), qconv::io::StoredTensor::new(vec![], StoredData::F64(vec![s[0]])).unwrap());
    input.tensors.insert(
        "input_zero_point".into(),
        qconv::io::StoredTensor::new(vec![], StoredData::I32(vec![z[0] as i32])).unwrap(),
    );
    let in_path = tmp("lowered_in_u8.safetensors");
    input.save(&in_path).unwrap();
    let (ok, _, err) = qconv(&run_args(&model, in_path.to_str().unwrap(), out, &["--device", "cpu"]));
    assert!(ok, "{err}");
    let y = StateDict::load(&out_path).unwrap();
    assert_eq!(y.tensors["output"], sd.tensors[&format!("{case}.output")]);
    let StoredData::F64(os) = &y.tensors["output_scale"].data else { panic!("output_scale must be F64") };
    let StoredData::I64(oz) = &y.tensors["output_zero_point"].data else { panic!("output_zero_point must be I64") };
    assert_eq!((os[0], oz[0]), (m.output_qparams().scale(), m.output_qparams().zero_point() as i64));
    assert!(y.tensors["output_scale"].shape.is_empty() && y.tensors["output_zero_point"].shape.is_empty());

    // Stored input qparams win only when the file gives none; other qparams give other codes.
    input
        .tensors
        .insert("input_scale".into(), qconv::io::StoredTensor::new(vec![], StoredData::F32(vec![0.5])).unwrap());
    input.save(&in_path).unwrap();
    let (ok, _, err) = qconv(&run_args(&model, in_path.to_str().unwrap(), out, &[]));
    assert!(ok, "{err}");
    let x = qconv::QuantizedTensor::from_codes(
        match &input.tensors["input"].data {
            StoredData::U8(v) => v.clone(),
            _ => panic!(),
        },
        &input.tensors["input"].shape,
        0.5f32 as f64,
        z[0],
    )
    .unwrap();
    let StoredData::U8(got) = &StateDict::load(&out_path).unwrap().tensors["output"].data.clone() else { panic!() };
    assert_eq!(got.as_slice(), m.forward(&x).unwrap().codes());

    // A float input is quantized with the stored input qparams (torch.quantize_per_tensor).
    let mut input = StateDict::new();
    input.tensors.insert("input".into(), sd.tensors[&format!("{case}.input_float")].clone());
    let fin = tmp("lowered_in_f32.safetensors");
    input.save(&fin).unwrap();
    let (ok, _, err) = qconv(&run_args(&model, fin.to_str().unwrap(), out, &[]));
    assert!(ok, "{err}");
    let xf = input.tensor("input").unwrap();
    let xq = qconv::QuantizedTensor::quantize_with(&xf, m.input_qparams().unwrap()).unwrap();
    assert_eq!(
        xq.codes(),
        match &sd.tensors[&format!("{case}.input_q")].data {
            StoredData::U8(v) => v.as_slice(),
            _ => panic!(),
        }
    );
    let want = m.forward(&xq).unwrap();
    let StoredData::U8(got) = &StateDict::load(&out_path).unwrap().tensors["output"].data.clone() else { panic!() };
    assert_eq!(got.as_slice(), want.codes());

    // --dequantize: F32 values f32(scale) · f32(q − zp).
    let (ok, _, err) = qconv(&run_args(&model, fin.to_str().unwrap(), out, &["--dequantize"]));
    assert!(ok, "{err}");
    let yd = StateDict::load(&out_path).unwrap();
    assert_eq!(yd.tensor("output").unwrap(), want.dequantize().unwrap());
    assert!(!yd.tensors.contains_key("output_scale"));

    // Weights of a lowered module: the codes and their dequantized values.
    let w_path = tmp("lowered_w.safetensors");
    let (ok, _, err) = qconv(&["weights", "--model", &model, "--output", w_path.to_str().unwrap()]);
    assert!(ok, "{err}");
    let w = StateDict::load(&w_path).unwrap();
    let StoredData::I32(codes) = &w.tensors["weight_q"].data else { panic!("weight_q must be I32") };
    assert_eq!(codes.iter().map(|&c| c as i8).collect::<Vec<_>>(), m.weight().codes());
    assert_eq!(w.tensor("weight_fq").unwrap(), m.weight().dequantize().unwrap());

    // inspect lists the lowered entry with its fused ReLU.
    let (ok, stdout, err) = qconv(&["inspect", &model]);
    assert!(ok, "{err}");
    assert!(stdout.contains("QuantizedConv2d (relu)") && stdout.contains("I8 ["), "{stdout}");
}

#[test]
fn lowered_run_errors_are_clean() {
    let (model, _, sd) = lowered_model("conv1d_pc", false);
    let model = model.to_str().unwrap().to_string();
    let mut input = StateDict::new();
    input.tensors.insert("input".into(), sd.tensors["conv1d_pc.input_float"].clone());
    let fin = tmp("lowered_err_in.safetensors");
    input.save(&fin).unwrap();
    let out = tmp("lowered_err_out.safetensors");
    let out = out.to_str().unwrap();
    // A float input for a model without stored input qparams.
    let (ok, _, err) = qconv(&run_args(&model, fin.to_str().unwrap(), out, &[]));
    assert!(!ok && err.starts_with("error: ") && err.contains("input qparams"), "{err}");
    // One qparam without the other, an out-of-range zero point, CUDA, --output-size.
    input
        .tensors
        .insert("input_scale".into(), qconv::io::StoredTensor::new(vec![], StoredData::F64(vec![0.1])).unwrap());
    input.save(&fin).unwrap();
    let (ok, _, err) = qconv(&run_args(&model, fin.to_str().unwrap(), out, &[]));
    assert!(!ok && err.contains("together"), "{err}");
    input
        .tensors
        .insert("input_zero_point".into(), qconv::io::StoredTensor::new(vec![], StoredData::I64(vec![256])).unwrap());
    input.save(&fin).unwrap();
    let (ok, _, err) = qconv(&run_args(&model, fin.to_str().unwrap(), out, &[]));
    assert!(!ok && err.starts_with("error: ") && err.contains("256"), "{err}");
    for extra in [&["--device", "cuda:0"][..], &["--output-size", "5"][..]] {
        let (ok, _, err) = qconv(&run_args(&model, fin.to_str().unwrap(), out, extra));
        assert!(!ok && err.starts_with("error: ") && !err.contains("panicked"), "{extra:?}: {err}");
    }
    // --dequantize on a reference module is a usage error.
    let (ok, _, err) =
        qconv(&run_args(&fixture("export_demo.safetensors"), "x", out, &["--prefix", "head.", "--dequantize"]));
    assert!(!ok && err.contains("--dequantize"), "{err}");
}

/// `warmup --arch sm_90a` compiles Hopper's wgmma/TMA program, and only it (where libnvrtc is
/// found; CI has it).
#[cfg(feature = "cuda")]
#[test]
fn warmup_compiles_the_hopper_program_for_sm_90a() {
    if let Err(e) = qconv::cuda::nvrtc::nvrtc_available() {
        println!("skipped: {e}");
        return;
    }
    let (c, out, err) = code(&["warmup", "--arch", "sm_90a", "--no-disk-cache"]);
    assert_eq!(c, Some(0), "{err}");
    assert!(out.contains("qc_conv_wg_f16_128x128") && out.contains("qc_conv_wg_bf16_128x128"), "{out}");
    assert!(out.contains("sm_90a") && !out.contains("qc_conv_tc_"), "sm_90a compiles the Hopper program only: {out}");
}
