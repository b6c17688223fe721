//! `info`, `run`, `weights`, `inspect` and `bench` (the GPU suite and `warmup` are in `gpu.rs`).

use qconv::cpu::int8::bench::{ACT_SCALE, ACT_ZERO_POINT};
use qconv::quant::QuantizedValues;
use qconv::{bench, Device};

use crate::args::DeviceArg;
use crate::files::{self, Model};
use crate::{BenchArgs, CacheArgs, CliError, CliResult, InspectArgs, RunArgs, WeightsArgs};

pub fn info() -> CliResult {
    let p = qconv::cuda::probe();
    println!("qconv {} ({})", env!("CARGO_PKG_VERSION"), qconv::BUILD_INFO);
    println!("cpu: {} threads (rayon), SIMD: {}", rayon::current_num_threads(), qconv::cpu::simd_level());
    if cfg!(feature = "cuda") {
        println!("cuda driver library: {}", if p.driver_loaded { "loaded" } else { "not found" });
        match p.driver_version {
            Some(v) => println!("cuda driver version: {}.{}", v / 1000, v % 1000 / 10),
            None => println!("cuda driver version: -"),
        }
        println!("cuda bindings built for: {}.{}", p.bindings_version / 1000, p.bindings_version % 1000 / 10);
    } else {
        println!("cuda driver library: not used ({})", qconv::cuda::NOT_BUILT);
    }
    let (major, minor) = qconv::cuda::MIN_COMPUTE_CAPABILITY;
    println!("cuda devices: {} (qconv needs compute capability {major}.{minor} or newer)", p.devices.len());
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
    if cfg!(feature = "cuda") {
        println!("cuda context: {}", if p.context_ok { "ok" } else { "not created" });
        match p.nvrtc_version {
            Some((a, b)) => println!("nvrtc: loaded, version {a}.{b}"),
            None => println!("nvrtc: {}", if p.nvrtc_loaded { "loaded (version unknown)" } else { "not found" }),
        }
    }
    match p.unusable_reason() {
        None => println!("cuda usable: yes"),
        Some(r) => println!("cuda usable: no — {r}"),
    }
    let (dev, why) = compute_device(DeviceArg::Auto)?;
    println!("compute device (auto): {dev} — {why}");
    Ok(())
}

/// Resolves `--device` to the device that computes, with the reason for the choice: `auto` picks
/// `cuda:0` when the CUDA probe succeeds and the CPU otherwise; `cuda[:N]` fails with the probe's
/// reason when that device is unusable.
pub fn compute_device(arg: DeviceArg) -> CliResult<(Device, String)> {
    match arg {
        DeviceArg::Auto => Ok(match qconv::cuda::probe().unusable_reason() {
            Some(r) => (Device::Cpu, format!("CPU fallback: {r}")),
            None => (Device::Cuda(0), "CUDA: the probe found a usable device".into()),
        }),
        DeviceArg::Device(Device::Cpu) => Ok((Device::Cpu, "requested".into())),
        DeviceArg::Device(d @ Device::Cuda(n)) => {
            qconv::cuda::require(n)?;
            Ok((d, "requested".into()))
        }
    }
}

/// Applies `--cache-dir` / `--no-disk-cache` to the process-wide kernel cache (CUDA builds).
pub fn configure_cache(cache: &CacheArgs) -> CliResult {
    #[cfg(feature = "cuda")]
    crate::gpu::configure_cache(cache)?;
    #[cfg(not(feature = "cuda"))]
    let _ = cache;
    Ok(())
}

fn open(model: &crate::ModelArgs) -> CliResult<(Model, String)> {
    let m = files::open_model(&model.model)?;
    let prefix = m.resolve(model.prefix.as_deref())?;
    Ok((m, prefix))
}

pub fn run(a: &RunArgs) -> CliResult {
    configure_cache(&a.cache)?;
    let (model, prefix) = open(&a.model)?;
    if model.module_type(&prefix).is_some_and(|t| qconv::AnyQuantizedConv::is_lowered_type(&t)) {
        return run_lowered(a, &model, &prefix);
    }
    if a.dequantize {
        return Err(CliError::Usage(format!(
            "--dequantize applies to lowered int8 modules only; module {prefix:?} is a {}",
            model.module_type(&prefix).unwrap_or_default()
        )));
    }
    let (device, _) = compute_device(a.device)?;
    if let Some(size) = &a.output_size {
        let ty = model.module_type(&prefix).unwrap_or_default();
        if !ty.starts_with("ConvTranspose") {
            return Err(CliError::Usage(format!(
                "--output-size {} applies to transposed convolutions only; module {prefix:?} is a {ty}",
                list(&size.0)
            )));
        }
    }
    let module = model.module(&prefix)?.to_device(device)?;
    let x = files::read_input(&a.input)?;
    let x = x.to_device(device)?;
    // Computed on `device`; the output is copied back to the host (this waits for the GPU).
    let y = match &a.output_size {
        Some(size) => module.forward_with_output_size(&x, &size.0)?,
        None => module.forward(&x)?,
    };
    let y = y.to_device(Device::Cpu)?;
    files::save(&a.output, vec![("output", files::stored(&y)?)])?;
    eprintln!(
        "{module} on {device}: input {} -> output {} written to {}",
        list(x.shape()),
        list(y.shape()),
        a.output.display()
    );
    Ok(())
}

/// `run` on a lowered int8 module: u8 codes in, u8 codes (or dequantized values) out, on the CPU.
fn run_lowered(a: &RunArgs, model: &Model, prefix: &str) -> CliResult {
    let module = model.quantized_module(prefix)?;
    if let Some(size) = &a.output_size {
        return Err(CliError::Usage(format!(
            "--output-size {} does not apply to lowered int8 modules ({} takes its output padding from the model)",
            list(&size.0),
            module.type_name()
        )));
    }
    if let DeviceArg::Device(d @ Device::Cuda(_)) = a.device {
        return Err(CliError::Run(format!(
            "lowered int8 modules run on the CPU in this version of qconv; --device {d} is not supported (use cpu or auto)"
        )));
    }
    let x = files::read_quantized_input(&a.input, module.input_qparams())?;
    let y = module.forward(&x)?;
    if a.dequantize {
        files::save(&a.output, vec![("output", files::stored(&y.dequantize()?)?)])?;
    } else {
        let codes = qconv::io::StoredTensor::new(y.shape().to_vec(), qconv::io::StoredData::U8(y.codes().to_vec()))?;
        let scale = qconv::io::StoredTensor::new(vec![], qconv::io::StoredData::F64(vec![y.scale()]))?;
        let zp = qconv::io::StoredTensor::new(vec![], qconv::io::StoredData::I64(vec![y.zero_point() as i64]))?;
        files::save(&a.output, vec![("output", codes), ("output_scale", scale), ("output_zero_point", zp)])?;
    }
    eprintln!(
        "{module} on cpu: input {} ({}) -> output {} ({}) written to {}",
        list(x.shape()),
        x.qparams(),
        list(y.shape()),
        y.qparams(),
        a.output.display()
    );
    Ok(())
}

pub fn weights(a: &WeightsArgs) -> CliResult {
    let (model, prefix) = open(&a.model)?;
    if model.module_type(&prefix).is_some_and(|t| qconv::AnyQuantizedConv::is_lowered_type(&t)) {
        // A lowered module stores the codes: weight_q is them, weight_fq their dequantized values.
        let m = model.quantized_module(&prefix)?;
        let w = m.weight();
        let fq = files::stored(&w.dequantize()?)?;
        let codes = w.codes().iter().map(|&c| c as i32).collect();
        let q = qconv::io::StoredTensor::new(w.shape().to_vec(), qconv::io::StoredData::I32(codes))?;
        return files::save(&a.output, vec![("weight_fq", fq), ("weight_q", q)]);
    }
    let module = model.module(&prefix)?;
    let mut out = vec![("weight_fq", files::stored(module.get_weight())?)];
    match module.get_quantized_weight() {
        Ok(q) => match q.values {
            QuantizedValues::Codes(c) => {
                out.push(("weight_q", qconv::io::StoredTensor::new(q.shape, qconv::io::StoredData::I32(c))?));
            }
            QuantizedValues::Float16(_) => log::info!("weight_q omitted (dtype float16 has no integer codes)"),
        },
        Err(qconv::Error::NotQuantized(msg)) => log::info!("weight_q omitted ({msg})"),
        Err(e) => return Err(e.into()),
    }
    files::save(&a.output, out)
}

pub fn inspect(a: &InspectArgs) -> CliResult {
    let model = files::open_model(&a.model)?;
    let entries = model.entries();
    if a.json {
        let doc = serde_json::json!({ "file": a.model.to_string_lossy(), "modules": entries });
        println!("{doc}");
        return Ok(());
    }
    let shape = |t: &Option<files::TensorInfo>| match t {
        Some(t) => format!("{} {}", t.dtype, list(&t.shape)),
        None => "-".into(),
    };
    println!("{:<28} {:<34} {:<24} {:<14} {:<38} dtype", "prefix", "type", "weight", "bias", "qscheme");
    for e in &entries {
        let prefix = if e.prefix.is_empty() { "\"\"".to_string() } else { e.prefix.clone() };
        println!(
            "{:<28} {:<34} {:<24} {:<14} {:<38} {}",
            prefix,
            match (e.runnable, e.module.get("relu").and_then(serde_json::Value::as_bool)) {
                (false, _) => format!("{} (not runnable)", e.type_name),
                (true, Some(true)) => format!("{} (relu)", e.type_name),
                (true, _) => e.type_name.clone(),
            },
            shape(&e.weight),
            shape(&e.bias),
            e.qscheme.as_deref().unwrap_or("-"),
            e.dtype.as_deref().unwrap_or("-")
        );
    }
    println!("{} module(s) in {}", entries.len(), a.model.display());
    Ok(())
}

/// `[a, b, c]` without Rust's debug formatting.
pub fn list(v: &[usize]) -> String {
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", items.join(", "))
}

pub fn bench(a: &BenchArgs) -> CliResult {
    let is_gpu_case = a.case.as_deref().is_some_and(|c| c.starts_with("g_"));
    match a.device {
        DeviceArg::Device(Device::Cpu) if is_gpu_case => {
            return Err(CliError::Usage(format!(
                "--case {} is a GPU case; add --device cuda",
                a.case.as_deref().unwrap_or("")
            )))
        }
        DeviceArg::Device(Device::Cpu) => {}
        DeviceArg::Auto => return Err(CliError::Usage("bench needs --device cpu or cuda[:N], not auto".into())),
        DeviceArg::Device(Device::Cuda(_)) if a.case.is_some() && !is_gpu_case => {
            return Err(CliError::Usage(format!(
                "--case {} is a CPU case; GPU cases start with g_",
                a.case.as_deref().unwrap_or("")
            )))
        }
        DeviceArg::Device(Device::Cuda(n)) => {
            compute_device(a.device)?;
            return bench_cuda(a, n);
        }
    }
    let cases: Vec<bench::BenchCase> = match &a.case {
        Some(name) => vec![bench::find_case(name)?],
        None => bench::CPU_SUITE.to_vec(),
    };
    let batch = a.batch.map_or(1, |b| b.0);
    let min_time = a.min_time.0;
    let threads = rayon::current_num_threads();
    for c in cases {
        let built = c.build(batch)?;
        let fwd = bench::time_median_us(|| built.module.forward(&built.input).map(|_| ()), 20, min_time)?;
        let fq = bench::time_median_us(
            || qconv::quant::fake_quantize(&built.weight, &built.qparams).map(|_| ()),
            20,
            min_time,
        )?;
        // The lowered int8 forward with scripts/bench/torch_cpu.py's int8 settings (reduced-range
        // activations; weights per channel for convolutions, per tensor for transposed ones).
        let (qm, qx) = c.build_int8(batch)?;
        let i8t = bench::time_median_us(|| qm.forward(&qx).map(|_| ()), 20, min_time)?;
        let rows = [
            ("module_forward", fwd, Some(built.flops)),
            ("weight_fakequant", fq, None),
            ("int8_module", i8t, Some(built.flops)),
        ];
        for (op, t, flops) in rows {
            let mut row = serde_json::json!({
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
            if op == "int8_module" {
                row["engine"] = format!("qconv-{}", qconv::cpu::int8::int8_level()).into();
                row["act_scale"] = ACT_SCALE.into();
                row["act_zero_point"] = ACT_ZERO_POINT.into();
                row["weight_qscheme"] =
                    if c.transposed { "per_tensor_symmetric" } else { "per_channel_symmetric" }.into();
            }
            println!("{row}");
        }
    }
    Ok(())
}

#[cfg(feature = "cuda")]
fn bench_cuda(a: &BenchArgs, ordinal: usize) -> CliResult {
    configure_cache(&a.cache)?;
    crate::gpu::bench(ordinal, a.case.as_deref(), a.batch.map(|b| b.0))
}

#[cfg(not(feature = "cuda"))]
fn bench_cuda(_: &BenchArgs, ordinal: usize) -> CliResult {
    Err(qconv::Error::CudaUnavailable { ordinal, reason: qconv::cuda::NOT_BUILT.into() }.into())
}
