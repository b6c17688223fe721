//! Resource limits (issue 13 items 8 and 9): the library path of one `qconv run` — load a module
//! from a file, read a 16 MiB input, forward on the CPU, write the output — under address-space
//! limits from 24 to 256 MB either succeeds with the right output or fails with one line
//! (`Error::OutOfMemory`, ...), never by a signal or a panic; and without threads
//! (`RLIMIT_NPROC = 1`) it runs on the calling thread with bit-identical results.
//!
//! The runs are child processes of this test binary (it re-runs itself with `--exact child`).

use std::collections::BTreeMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use qconv::io::{save_tensors, ModelFile, StateDict};
use qconv::{AnyConv, Conv2d, ConvOptions, DType, QuantDType, Tensor, WeightQParams};

/// The input: 16 × 512 × 512 f32 = 16 MiB.
const SHAPE: [usize; 4] = [1, 16, 512, 512];

fn module() -> AnyConv {
    let n = 16 * 16 * 9;
    let w = Tensor::from_vec((0..n).map(|i| ((i as f32) * 0.61).sin() * 0.3).collect(), &[16, 16, 3, 3]).unwrap();
    let qp = WeightQParams::per_channel_symmetric_from_weight(&w, 0, QuantDType::QInt8).unwrap();
    let o = ConvOptions::new().kernel_size([3, 3]).padding(qconv::Padding::Explicit([1, 1]));
    AnyConv::Conv2d(Conv2d::from_float(w, None, qp, o).unwrap())
}

fn input() -> Tensor {
    let n: usize = SHAPE.iter().product();
    Tensor::from_vec((0..n).map(|i| ((i % 251) as f32 - 125.0) / 64.0).collect(), &SHAPE).unwrap()
}

/// Writes the model and the input to `dir`; returns their paths.
fn files(dir: &Path) -> (PathBuf, PathBuf) {
    let (model, inp) = (dir.join("model.safetensors"), dir.join("input.safetensors"));
    let mut sd = StateDict::new();
    module().write_state_dict(&mut sd, "m.");
    sd.save(&model).unwrap();
    save_tensors(&inp, &[("input", &input())], &BTreeMap::new()).unwrap();
    (model, inp)
}

/// The library path of `qconv run --model M --prefix m. --input X --output Y --device cpu`.
fn run_once(model: &Path, input: &Path, output: &Path) -> qconv::Result<()> {
    let m = AnyConv::from_file(model, Some("m."))?;
    let x = ModelFile::open(input)?.read_tensor("input")?.into_tensor("input")?;
    let y = m.forward(&x)?;
    save_tensors(output, &[("output", &y)], &BTreeMap::new())
}

fn vm_size_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find(|l| l.starts_with("VmSize:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// The child: applies `QCONV_LIMITS_AS` (bytes of address space, counting what this process
/// has mapped already, as `ulimit -v` does) and runs once. Exit 0: done; 1: one error line.
#[test]
fn child() {
    let Ok(dir) = std::env::var("QCONV_LIMITS_CHILD") else { return };
    let dir = PathBuf::from(dir);
    if let Ok(limit) = std::env::var("QCONV_LIMITS_AS") {
        let limit: u64 = limit.parse().unwrap();
        eprintln!("note: address space before the limit: {} KiB", vm_size_kib().unwrap_or(0));
        let lim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
        // SAFETY: lowers a resource limit of this process.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
    }
    let r = run_once(&dir.join("model.safetensors"), &dir.join("input.safetensors"), &dir.join("output.safetensors"));
    eprintln!("note: threads: {}", qconv::parallel::current_num_threads());
    match r {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1)
        }
    }
}

fn child_command(dir: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    // One malloc arena: otherwise the test thread's own arena (64 MB reserved before the limit
    // is set) would hold every buffer, and the limit would never bite.
    c.args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("QCONV_LIMITS_CHILD", dir)
        .env("MALLOC_ARENA_MAX", "1");
    c
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec_f32().unwrap().iter().map(|v| v.to_bits()).collect()
}

fn output_bits(dir: &Path) -> Vec<u32> {
    bits(&StateDict::load(dir.join("output.safetensors")).unwrap().take_tensor("output").unwrap())
}

#[test]
fn one_module_runs_cleanly_under_address_space_limits() {
    let dir = tempfile::Builder::new().prefix("qconv-limits-").tempdir().unwrap();
    let (model, inp) = files(dir.path());
    let want = bits(&module().forward(&input()).unwrap());
    let mut report = Vec::new();
    for mb in [24u64, 32, 48, 64, 96, 128, 160, 200, 256, 512] {
        let _ = std::fs::remove_file(dir.path().join("output.safetensors"));
        let out = child_command(dir.path()).env("QCONV_LIMITS_AS", (mb << 20).to_string()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
        let signal = out.status.signal();
        assert!(signal.is_none(), "{mb} MB: killed by signal {signal:?}: {err}");
        match out.status.code() {
            Some(0) => {
                assert_eq!(output_bits(dir.path()), want, "{mb} MB: wrong output");
                report.push(format!("{mb} MB: ok"));
            }
            Some(1) => {
                assert_eq!(errors.len(), 1, "{mb} MB: {err}");
                assert!(errors[0].len() < 600 && !errors[0].contains("panicked"), "{mb} MB: {err}");
                report.push(format!("{mb} MB: {}", errors[0]));
            }
            code => panic!("{mb} MB: exit code {code:?}: {err}"),
        }
        if mb == 24 {
            if let Some(l) = err.lines().find(|l| l.contains("address space before")) {
                report.push(format!("  ({})", l.trim_start_matches("note: ")));
            }
        }
    }
    println!("{}", report.join("\n"));
    // Generous limits must succeed (the test would prove nothing if every run failed).
    assert!(report.iter().any(|l| l.starts_with("512 MB: ok")), "{report:?}");
    let _ = (model, inp);
}

#[test]
fn without_threads_the_run_is_inline_and_bit_identical() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: switching to `nobody` with RLIMIT_NPROC = 1 needs root");
        return;
    }
    let dir = tempfile::Builder::new().prefix("qconv-nproc-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    files(dir.path());
    let want = bits(&module().forward(&input()).unwrap());
    let mut cmd = child_command(dir.path());
    // SAFETY: only async-signal-safe calls (setrlimit, setgroups, setgid, setuid) between fork
    // and exec.
    unsafe {
        cmd.pre_exec(|| {
            let one = libc::rlimit { rlim_cur: 1, rlim_max: 1 };
            if libc::setrlimit(libc::RLIMIT_NPROC, &one) != 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            println!("skipped: cannot start a child as nobody: {e}");
            return;
        }
    };
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(101) && err.contains("Permission denied") {
        println!("skipped: nobody cannot run this test binary: {err}");
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("note: threads: 1"), "the child had threads after all: {err}");
    assert_eq!(output_bits(dir.path()), want);
}

#[test]
fn inline_runs_are_bit_identical_to_threaded_ones() {
    // The GEMM path with a padded copy, the direct path, a transposed conv, f16 input and the
    // weight fake-quant, each threaded and on the calling thread.
    let x = input();
    let small = Tensor::from_vec((0..2 * 16 * 9 * 9).map(|i| (i % 13) as f32 - 6.0).collect(), &[2, 16, 9, 9]).unwrap();
    let w_dw = Tensor::from_vec((0..16 * 9).map(|i| i as f32 * 0.01).collect(), &[16, 1, 3, 3]).unwrap();
    let dw = AnyConv::Conv2d(
        Conv2d::from_float(w_dw, None, WeightQParams::none(), ConvOptions::new().kernel_size([3, 3]).groups(16))
            .unwrap(),
    );
    let w_t = Tensor::from_vec((0..16 * 8 * 4).map(|i| (i as f32 * 0.3).cos()).collect(), &[16, 8, 2, 2]).unwrap();
    let tr = AnyConv::ConvTranspose2d(
        qconv::ConvTranspose2d::from_float(
            w_t,
            None,
            WeightQParams::none(),
            ConvOptions::new().kernel_size([2, 2]).stride([2, 2]),
        )
        .unwrap(),
    );
    let cases: Vec<(&AnyConv, Tensor)> = vec![];
    let m = module();
    let mut cases = cases;
    cases.push((&m, x.clone()));
    cases.push((&m, x.to_dtype(DType::F16).unwrap()));
    cases.push((&dw, small.clone()));
    cases.push((&tr, small));
    for (m, x) in cases {
        let threaded = bits(&m.forward(&x).unwrap());
        let inline = qconv::parallel::run_inline(|| {
            assert!(!qconv::parallel::available());
            bits(&m.forward(&x).unwrap())
        });
        assert_eq!(threaded, inline, "{m}");
    }
    let w =
        Tensor::from_vec((0..512 * 512 * 9).map(|i| ((i as f32) * 0.001).sin()).collect(), &[512, 512, 3, 3]).unwrap();
    let qp = WeightQParams::per_channel_symmetric_from_weight(&w, 0, QuantDType::QInt8).unwrap();
    let a = qconv::quant::fake_quantize(&w, &qp).unwrap();
    let b = qconv::parallel::run_inline(|| qconv::quant::fake_quantize(&w, &qp).unwrap());
    assert_eq!(bits(&a), bits(&b));
}
