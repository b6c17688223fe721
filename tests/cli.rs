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
    assert_eq!(y, m.forward(&x, None).unwrap());

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
    assert_eq!(rows.len(), 2);
    for (row, op) in rows.iter().zip(["module_forward", "weight_fakequant"]) {
        assert_eq!(row["peer"], "qconv");
        assert_eq!(row["case"], "c2d_dw");
        assert_eq!(row["op"], op);
        assert!(row["median_us"].as_f64().unwrap() > 0.0);
        assert!(row["threads"].as_u64().unwrap() >= 1);
    }
    assert!(rows[0]["gflops"].as_f64().unwrap() > 0.0);
    assert!(rows[1]["gflops"].is_null());
}
