//! The `qconv` command line: `info`, `run`, `weights`, `bench`.
//!
//! Errors print one line (`error: ...`) and exit with status 1 (2 for usage errors); the program
//! never panics on user input.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;

use qconv::bench::{self, BenchCase};
use qconv::io::{StateDict, StoredData, StoredTensor};
use qconv::quant::QuantizedValues;
use qconv::{AnyConv, Device, Error};

const USAGE: &str = "\
qconv — PyTorch-exact reference quantized convolutions

USAGE:
  qconv info
      Devices found, CUDA driver / NVRTC probe results, and why CUDA is unusable.
  qconv run --model M.safetensors --input X.safetensors --output Y.safetensors
            [--prefix P] [--device auto|cpu|cuda[:N]] [--output-size A,B,..]
      Runs the module stored under prefix P (default: the file's only module) on the tensor
      `input` of X (or X's only tensor) and writes the result as `output` to Y.
  qconv weights --model M.safetensors [--prefix P] --output W.safetensors
      Writes `weight_fq` (f32, get_weight()) and `weight_q` (i32 codes of get_quantized_weight(),
      where defined) of the module.
  qconv bench [--device cpu|cuda[:N]] [--case NAME] [--batch N] [--min-time SECONDS]
      The CPU suite of docs/benchmarks.md (fields as scripts/bench/torch_cpu.py), or with --device cuda the GPU
      suite (f16, bf16, f32; channels-first and channels-last inputs; the default precision;
      for f32 also tf32; for f16/bf16 also exact, and channels-last with the weight stored as
      8-bit codes (weights int8_codes, with the device weight bytes); CUDA-event timing, median
      of >= 50 launches; fields as scripts/bench/torch_gpu.py). One JSON line per case, dtype, layout, precision and op;
      --case g_fq runs the weight fake-quant case alone.
  qconv warmup [--arch sm_80,sm_90,...] [--cache-dir DIR]
      Compiles every CUDA kernel with NVRTC into the disk kernel cache (default
      $XDG_CACHE_HOME/qconv or ~/.cache/qconv) for the given architectures (default: those of
      the devices present); needs libnvrtc but no GPU. Prints compile time, registers, spills and
      shared memory per kernel and architecture; exits 1 if any kernel fails.

Options of run, bench and warmup:
  --cache-dir DIR     kernel cache directory;  --no-disk-cache   keep compiled kernels in memory only
  qconv help
";

/// A usage error (exit status 2) or a library error (exit status 1).
enum CliError {
    Usage(String),
    Lib(Error),
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError::Lib(e)
    }
}

type CliResult<T> = std::result::Result<T, CliError>;

/// Arguments that take no value.
const FLAGS: &[&str] = &["--no-disk-cache"];

/// `--flag value` pairs after the subcommand.
struct Args {
    pairs: Vec<(String, String)>,
}

impl Args {
    fn parse(mut rest: VecDeque<String>, allowed: &[&str]) -> CliResult<Args> {
        let mut pairs = Vec::new();
        while let Some(flag) = rest.pop_front() {
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (flag.clone(), None),
            };
            if !allowed.contains(&name.as_str()) {
                return Err(CliError::Usage(format!(
                    "unknown argument {flag:?} (expected one of: {})",
                    allowed.join(", ")
                )));
            }
            let value = match inline {
                Some(v) => v,
                None if FLAGS.contains(&name.as_str()) => "true".to_string(),
                None => rest.pop_front().ok_or_else(|| CliError::Usage(format!("{name} needs a value")))?,
            };
            pairs.push((name, value));
        }
        Ok(Args { pairs })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> CliResult<&str> {
        self.get(name).ok_or_else(|| CliError::Usage(format!("{name} is required")))
    }
}

fn main() -> ExitCode {
    // A bug must still end in one clear line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal error{at}: {msg} (please report this as a qconv bug)");
    }));
    let mut argv: VecDeque<String> = std::env::args().skip(1).collect();
    let cmd = argv.pop_front().unwrap_or_else(|| "help".into());
    let result = match cmd.as_str() {
        "info" => Args::parse(argv, &[]).and_then(|_| info()),
        "run" => Args::parse(
            argv,
            &[
                "--model",
                "--prefix",
                "--input",
                "--output",
                "--device",
                "--output-size",
                "--cache-dir",
                "--no-disk-cache",
            ],
        )
        .and_then(|a| run(&a)),
        "warmup" => Args::parse(argv, &["--arch", "--cache-dir", "--no-disk-cache"]).and_then(|a| warmup(&a)),
        "weights" => Args::parse(argv, &["--model", "--prefix", "--output"]).and_then(|a| weights(&a)),
        "bench" => {
            Args::parse(argv, &["--case", "--batch", "--min-time", "--device", "--cache-dir", "--no-disk-cache"])
                .and_then(|a| bench_cmd(&a))
        }
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(CliError::Usage(format!("unknown command {other:?}; try `qconv help`"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(msg)) => {
            eprintln!("error: {msg}");
            eprintln!("usage: qconv info | run | weights | bench | warmup | help");
            ExitCode::from(2)
        }
        Err(CliError::Lib(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn info() -> CliResult<()> {
    let p = qconv::cuda::probe();
    println!("qconv {} ({})", env!("CARGO_PKG_VERSION"), qconv::BUILD_INFO);
    println!("cpu: {} threads (rayon), SIMD: {}", rayon::current_num_threads(), qconv::cpu::simd_level());
    println!("cuda driver library: {}", if p.driver_loaded { "loaded" } else { "not found" });
    match p.driver_version {
        Some(v) => println!("cuda driver version: {}.{}", v / 1000, v % 1000 / 10),
        None => println!("cuda driver version: -"),
    }
    println!("cuda bindings built for: {}.{}", p.bindings_version / 1000, p.bindings_version % 1000 / 10);
    println!("cuda devices: {}", p.devices.len());
    for d in &p.devices {
        println!(
            "  cuda:{}: {} (sm_{}{}, {:.1} GiB)",
            d.ordinal,
            d.name,
            d.compute_capability.0,
            d.compute_capability.1,
            d.total_memory as f64 / (1u64 << 30) as f64
        );
    }
    println!("cuda context: {}", if p.context_ok { "ok" } else { "not created" });
    match p.nvrtc_version {
        Some((a, b)) => println!("nvrtc: loaded, version {a}.{b}"),
        None => println!("nvrtc: {}", if p.nvrtc_loaded { "loaded (version unknown)" } else { "not found" }),
    }
    match p.unusable_reason() {
        None => println!("cuda usable: yes"),
        Some(r) => println!("cuda usable: no — {r}"),
    }
    let (dev, why) = compute_device("auto")?;
    println!("compute device (auto): {dev} — {why}");
    Ok(())
}

/// Resolves `--device` to the device that will compute, with the reason for the choice: `auto`
/// picks `cuda:0` when the CUDA probe succeeds and the CPU otherwise; `cuda[:N]` fails with the
/// probe's reason when that device is unusable.
fn compute_device(spec: &str) -> CliResult<(Device, String)> {
    match spec {
        "auto" => {
            let p = qconv::cuda::probe();
            Ok(match p.unusable_reason() {
                Some(r) => (Device::Cpu, format!("CPU fallback: {r}")),
                None => (Device::Cuda(0), "CUDA: the probe found a usable device".into()),
            })
        }
        s => {
            let d: Device = s.parse()?;
            match d {
                Device::Cpu => Ok((Device::Cpu, "requested".into())),
                Device::Cuda(n) => {
                    qconv::cuda::require(n)?;
                    Ok((d, "requested".into()))
                }
            }
        }
    }
}

/// Applies `--cache-dir` / `--no-disk-cache` to the process-wide kernel cache.
fn configure_cache(args: &Args) -> CliResult<()> {
    use qconv::cuda::runtime::{configure_kernel_cache, DiskCache};
    let disk = match (args.get("--cache-dir"), args.get("--no-disk-cache")) {
        (Some(_), Some(_)) => {
            return Err(CliError::Usage("--cache-dir and --no-disk-cache exclude each other".into()));
        }
        (Some(d), None) => DiskCache::Dir(PathBuf::from(d)),
        (None, Some("true")) => DiskCache::Off,
        (None, Some(v)) => return Err(CliError::Usage(format!("--no-disk-cache takes no value (got {v:?})"))),
        (None, None) => DiskCache::Default,
    };
    configure_kernel_cache(disk)?;
    Ok(())
}

fn pick_prefix(sd: &StateDict, prefix: Option<&str>, path: &str) -> CliResult<String> {
    if let Some(p) = prefix {
        return Ok(p.to_string());
    }
    let prefixes = sd.module_prefixes();
    match prefixes.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(CliError::Lib(Error::StateDictKeys {
            prefix: String::new(),
            missing: vec!["<prefix>module".into()],
            unexpected: vec![],
        })),
        many => {
            Err(CliError::Usage(format!("{path} holds {} modules; choose one with --prefix: {many:?}", many.len())))
        }
    }
}

fn load_module(args: &Args) -> CliResult<AnyConv> {
    let path = args.required("--model")?;
    let sd = StateDict::load(path)?;
    let prefix = pick_prefix(&sd, args.get("--prefix"), path)?;
    Ok(AnyConv::from_state_dict(&sd, &prefix)?)
}

fn run(args: &Args) -> CliResult<()> {
    configure_cache(args)?;
    let (device, _) = compute_device(args.get("--device").unwrap_or("auto"))?;
    let module = load_module(args)?.to_device(device)?;
    let input_path = args.required("--input")?;
    let output_path = PathBuf::from(args.required("--output")?);
    let inputs = StateDict::load(input_path)?;
    let x = if inputs.tensors.contains_key("input") {
        inputs.tensor("input")?
    } else if inputs.tensors.len() == 1 {
        let (name, t) = inputs.tensors.iter().next().expect("one tensor");
        t.to_tensor(name)?
    } else {
        return Err(CliError::Usage(format!(
            "{input_path} has {} tensors and none is named `input`",
            inputs.tensors.len()
        )));
    };
    let output_size = match args.get("--output-size") {
        None => None,
        Some(s) => Some(
            s.split(',')
                .map(|v| v.trim().parse::<usize>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| CliError::Usage(format!("--output-size {s:?} must be comma-separated integers")))?,
        ),
    };
    let x = x.to_device(device)?;
    // Computed on `device`; the output is copied back to the host (this waits for the GPU).
    let y = module.forward(&x, output_size.as_deref())?.to_device(Device::Cpu)?;
    let mut out = StateDict::new();
    out.insert_tensor("output", &y);
    out.save(&output_path)?;
    eprintln!(
        "{module} on {device}: input {:?} -> output {:?} written to {}",
        x.shape(),
        y.shape(),
        output_path.display()
    );
    Ok(())
}

fn weights(args: &Args) -> CliResult<()> {
    let module = load_module(args)?;
    let out_path = args.required("--output")?;
    let mut out = StateDict::new();
    out.insert_tensor("weight_fq", module.get_weight());
    match module.get_quantized_weight() {
        Ok(q) => match q.values {
            QuantizedValues::Codes(c) => {
                out.tensors.insert("weight_q".into(), StoredTensor::new(q.shape, StoredData::I32(c))?);
            }
            QuantizedValues::Float16(_) => eprintln!("note: weight_q omitted (dtype float16 has no integer codes)"),
        },
        Err(Error::NotQuantized(msg)) => eprintln!("note: weight_q omitted ({msg})"),
        Err(e) => return Err(e.into()),
    }
    out.save(out_path)?;
    Ok(())
}

fn warmup(args: &Args) -> CliResult<()> {
    use qconv::cuda::nvrtc::{nvrtc_available, Arch};
    configure_cache(args)?;
    let version = nvrtc_available()?;
    let archs: Vec<Arch> = match args.get("--arch") {
        Some(list) => list.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.parse()).collect::<Result<_, _>>()?,
        None => {
            let mut v = Vec::new();
            for d in &qconv::cuda::probe().devices {
                let a = Arch::from_compute_capability(d.compute_capability)?;
                if !v.contains(&a) {
                    v.push(a);
                }
            }
            v
        }
    };
    if archs.is_empty() {
        return Err(CliError::Usage(
            "no CUDA device found to take the architecture from; pass --arch sm_80,sm_90,...".into(),
        ));
    }
    let cache = qconv::cuda::runtime::kernel_cache();
    match cache.dir() {
        Some(d) => println!("nvrtc {}.{}; kernel cache: {}", version.0, version.1, d.display()),
        None => println!("nvrtc {}.{}; kernel cache: memory only (nothing is kept)", version.0, version.1),
    }
    println!(
        "{:<9} {:<18} {:>10}  {:<26} {:>4} {:>12} {:>9}",
        "arch", "source", "time", "kernel", "regs", "spill st/ld", "smem B"
    );
    let mut failures = 0;
    let (mut compiled, mut cached) = (0, 0);
    let start = std::time::Instant::now();
    let results = cache.warm_all(&archs);
    let wall = start.elapsed();
    for (source, arch, result) in results {
        match result {
            Ok(k) => {
                let time = if k.from_disk_cache {
                    cached += 1;
                    "cached".to_string()
                } else {
                    compiled += 1;
                    format!("{:.2} s", k.compile_time.as_secs_f64())
                };
                if k.resources.is_empty() {
                    println!(
                        "{:<9} {:<18} {:>10}  (compiled; this NVRTC returned no ptxas report)",
                        arch.to_string(),
                        source.name(),
                        time
                    );
                }
                for r in &k.resources {
                    println!(
                        "{:<9} {:<18} {:>10}  {:<26} {:>4} {:>12} {:>9}",
                        arch.to_string(),
                        source.name(),
                        time,
                        r.name,
                        r.registers,
                        format!("{}/{}", r.spill_stores, r.spill_loads),
                        r.shared_bytes
                    );
                }
            }
            Err(e) => {
                failures += 1;
                println!(
                    "{:<9} {:<18} FAILED: {}",
                    arch.to_string(),
                    source.name(),
                    e.to_string().replace('\n', " | ")
                );
            }
        }
    }
    println!(
        "total: {} programs ({compiled} compiled, {cached} from the disk cache) in {:.3} s wall, on up to {} threads",
        compiled + cached + failures,
        wall.as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if failures > 0 {
        return Err(CliError::Lib(Error::Cuda {
            call: "warmup",
            message: format!("{failures} kernel program(s) failed to compile"),
        }));
    }
    Ok(())
}

/// `qconv bench --device cuda`: the GPU suite of docs/benchmarks.md, timed with CUDA events by
/// the library (`qconv::bench::gpu`); one JSON row per line.
fn bench_cuda(args: &Args, ordinal: usize) -> CliResult<()> {
    configure_cache(args)?;
    let batch = match args.get("--batch") {
        None => None,
        Some(s) => Some(
            s.parse::<usize>()
                .ok()
                .filter(|&b| b > 0)
                .ok_or_else(|| CliError::Usage(format!("--batch {s:?} must be a positive integer")))?,
        ),
    };
    bench::gpu::run_suite(ordinal, args.get("--case"), batch, &mut |row| println!("{row}"))?;
    Ok(())
}

fn bench_cmd(args: &Args) -> CliResult<()> {
    if let Some(d) = args.get("--device") {
        if let (Device::Cuda(n), _) = compute_device(d)? {
            return bench_cuda(args, n);
        }
    }
    let cases: Vec<BenchCase> = match args.get("--case") {
        Some(name) => vec![bench::find_case(name)?],
        None => bench::CPU_SUITE.to_vec(),
    };
    let batch = match args.get("--batch") {
        None => 1,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|&b| b > 0)
            .ok_or_else(|| CliError::Usage(format!("--batch {s:?} must be a positive integer")))?,
    };
    let min_time = match args.get("--min-time") {
        None => 1.0,
        Some(s) => s
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite() && *t >= 0.0)
            .ok_or_else(|| CliError::Usage(format!("--min-time {s:?} must be a non-negative number of seconds")))?,
    };
    let threads = rayon::current_num_threads();
    for c in cases {
        let built = c.build(batch)?;
        let fwd = bench::time_median_us(|| built.module.forward(&built.input, None).map(|_| ()), 20, min_time)?;
        let fq = bench::time_median_us(
            || qconv::quant::fake_quantize(&built.weight, &built.qparams).map(|_| ()),
            20,
            min_time,
        )?;
        for (op, t, flops) in [("module_forward", fwd, Some(built.flops)), ("weight_fakequant", fq, None)] {
            let row = serde_json::json!({
                "peer": "qconv",
                "version": env!("CARGO_PKG_VERSION"),
                "case": c.name,
                "op": op,
                "batch": batch,
                "median_us": (t * 100.0).round() / 100.0,
                "gflops": flops.map(|f| (f / t / 1e3 * 100.0).round() / 100.0),
                "threads": threads,
                "peak_rss_kib": bench::peak_rss_kib(),
            });
            println!("{row}");
        }
    }
    Ok(())
}
