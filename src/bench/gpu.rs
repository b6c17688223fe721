//! The GPU suite of docs/benchmarks.md (`qconv bench --device cuda`), timed with CUDA events:
//! [`GpuTimer`] (the median of bracketed launches on the device's default stream) and
//! [`run_suite`], which builds each case of [`super::GPU_SUITE`] like the CPU suite,
//! moves it to the device in every configuration the suite reports (layout, precision, weight
//! storage, dtype) and hands one JSON row per timing to the caller — the fields of
//! `scripts/bench/torch_gpu.py`.

use std::sync::Arc;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaStream;
use serde_json::{json, Value};

use super::{absmax_qparams, find_gpu_case, BenchCase, Rng, GPU_SUITE};
use crate::cuda::runtime::{driver_err, Runtime};
use crate::cuda::{Precision, WeightStorage};
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::{Device, Tensor};

/// Times work enqueued on one CUDA stream with events.
pub struct GpuTimer {
    stream: Arc<CudaStream>,
}

impl GpuTimer {
    /// A timer on the runtime's default stream (where module forwards without a stream run).
    pub fn new(rt: &Runtime) -> Self {
        GpuTimer { stream: rt.default_stream().clone() }
    }

    /// Median, in microseconds, of `iters` calls of `f`, each bracketed by CUDA events on the
    /// stream, after 10 warm-up calls and a synchronisation.
    pub fn median_us(&self, f: &dyn Fn() -> Result<()>, iters: usize) -> Result<f64> {
        for _ in 0..10 {
            f()?;
        }
        self.stream.synchronize().map_err(driver_err("cuStreamSynchronize"))?;
        let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let mut ts = Vec::with_capacity(iters.max(1));
        for _ in 0..iters.max(1) {
            let a = self.stream.record_event(flags).map_err(driver_err("cuEventRecord"))?;
            f()?;
            let b = self.stream.record_event(flags).map_err(driver_err("cuEventRecord"))?;
            b.synchronize().map_err(driver_err("cuEventSynchronize"))?;
            ts.push(a.elapsed_ms(&b).map_err(driver_err("cuEventElapsedTime"))? as f64 * 1e3);
        }
        ts.sort_by(f64::total_cmp);
        Ok(ts[ts.len() / 2])
    }
}

/// One timed configuration: (layout, precision, weight storage, the call).
type TimedRun<'a> = (&'static str, &'static str, &'static str, Box<dyn Fn() -> Result<()> + 'a>);

/// Runs the GPU suite on CUDA device `ordinal` (every kernel loaded first) and passes each result
/// row to `emit` as it comes: `case` picks one case (`"g_fq"`: the weight fake-quant case alone;
/// `None`: every case, then `g_fq`), `batch` overrides the cases' batch sizes.
pub fn run_suite(ordinal: usize, case: Option<&str>, batch: Option<usize>, emit: &mut dyn FnMut(Value)) -> Result<()> {
    let rt = Runtime::get(ordinal)?;
    rt.load_all()?;
    let run_fq = case.is_none_or(|c| c == "g_fq");
    let cases: Vec<(BenchCase, usize)> = match case {
        Some("g_fq") => Vec::new(),
        Some(name) => vec![find_gpu_case(name)?],
        None => GPU_SUITE.to_vec(),
    };
    let timer = GpuTimer::new(&rt);
    let device_name = rt.info().name.clone();
    let round2 = |v: f64| (v * 100.0).round() / 100.0;
    for (c, default_batch) in cases {
        let batch = batch.unwrap_or(default_batch);
        let built = c.build(batch)?;
        let module = built.module.to_device(Device::Cuda(ordinal))?;
        let exact = module.clone().with_precision(Precision::Exact);
        let tf32 = module.clone().with_precision(Precision::Tf32);
        // Hopper's opt-in wgmma/TMA kernel (rows only on compute capability 9.0).
        let sm90a = module.clone().with_precision(Precision::TensorCoreSm90a);
        let hopper = rt.info().compute_capability == (9, 0);
        // The same module with its weight kept as 8-bit codes (the suite's qparams allow it).
        let codes =
            built.module.clone().with_weight_storage(WeightStorage::Int8Codes)?.to_device(Device::Cuda(ordinal))?;
        let dims = built.input.shape().len() - 2;
        let last_name = match dims {
            1 => "nwc",
            2 => "nhwc",
            _ => "ndhwc",
        };
        for dtype in [DType::F16, DType::BF16, DType::F32] {
            let host = built.input.to_dtype(dtype)?;
            let x = host.to_device(Device::Cuda(ordinal))?;
            // The same values channels-last ([N, *spatial, C]).
            let xl = host.to_channels_last()?.to_device(Device::Cuda(ordinal))?;
            // (layout, precision, timed call); f32 is exact whatever the precision says.
            let mut runs: Vec<TimedRun> = vec![
                ("nchw", "default", "float", Box::new(|| module.forward(&x).map(|_| ()))),
                (last_name, "default", "float", Box::new(|| module.forward_channels_last(&xl).map(|_| ()))),
            ];
            if dtype == DType::F32 {
                runs.push(("nchw", "tf32", "float", Box::new(|| tf32.forward(&x).map(|_| ()))));
                runs.push((last_name, "tf32", "float", Box::new(|| tf32.forward_channels_last(&xl).map(|_| ()))));
            } else {
                runs.push(("nchw", "exact", "float", Box::new(|| exact.forward(&x).map(|_| ()))));
                runs.push((
                    last_name,
                    "default",
                    "int8_codes",
                    Box::new(|| codes.forward_channels_last(&xl).map(|_| ())),
                ));
                if hopper {
                    runs.push((last_name, "sm90a", "float", Box::new(|| sm90a.forward_channels_last(&xl).map(|_| ()))));
                }
            }
            for (layout, precision, weights, f) in runs {
                let t = timer.median_us(&*f, 50)?;
                emit(json!({
                    "peer": "qconv", "device": device_name, "version": env!("CARGO_PKG_VERSION"),
                    "case": c.name, "op": "module_forward", "dtype": dtype.to_string(), "layout": layout,
                    "precision": precision, "weights": weights, "batch": batch, "median_us": round2(t),
                    "tflops": round2(built.flops / t / 1e6),
                    "weight_bytes": if weights == "float" { module.device_weight_bytes() } else { codes.device_weight_bytes() },
                }));
            }
        }
        int8_rows(&rt, &c, batch, &timer, &mut *emit)?;
    }
    if run_fq {
        // g_fq: per-channel qint8 fake-quant of a 2048x2048x3x3 weight: the kernel launch (and
        // the reset of its 8-byte non-finite flag), timed asynchronously; the flag is checked
        // once after timing.
        let shape = [2048usize, 2048, 3, 3];
        let n: usize = shape.iter().product();
        let mut rng = Rng::new(0xF0);
        let w = Tensor::from_vec(rng.vec(n, -1.0, 1.0), &shape)?;
        let qp = absmax_qparams(&w, 0)?;
        let src = rt.htod(w.as_slice::<f32>()?, None)?;
        let dst = std::cell::RefCell::new(rt.zeros::<f32>(n, None)?);
        let job = std::cell::RefCell::new(rt.fake_quant_job(&qp, &shape, None)?);
        let t = timer.median_us(&|| job.borrow_mut().enqueue(&src, Some(&mut dst.borrow_mut()), None, None), 50)?;
        job.borrow_mut().check(&src, None)?;
        emit(json!({
            "peer": "qconv", "device": device_name, "version": env!("CARGO_PKG_VERSION"),
            "case": "g_fq", "op": "fake_quantize_per_channel", "dtype": "f32", "layout": "-",
            "median_us": round2(t), "gbps": (n as f64 * 8.0 / t / 1e3 * 10.0).round() / 10.0,
        }));
    }
    Ok(())
}

/// The lowered int8 rows of one case (`op` `int8_forward`, `dtype` `u8`, `weights`
/// `int8_lowered`): `qconv::cuda::forward_int8` on the int8 tensor-core tiles (or the int8
/// depthwise kernel) in both layouts, activations in the reduced range `0..=127` of the x86
/// default qconfig, symmetric per-channel weights, a bias, the requant table cached — to set
/// against the f16 tensor-core rows of the same case (docs/benchmarks.md: int8 at least 1.5× the
/// f16 forward on the 3×3 cases).
fn int8_rows(
    rt: &Arc<Runtime>,
    c: &BenchCase,
    batch: usize,
    timer: &GpuTimer,
    emit: &mut dyn FnMut(Value),
) -> Result<()> {
    use crate::cuda::{forward_int8, DeviceInt8Weights, Int8Layout};
    use crate::quant::{RequantParams, RequantTable, WeightScales};
    let p = c.problem(batch);
    let mut rng = Rng::new(0x1A8 ^ c.name.len() as u64);
    let x: Vec<u8> = (0..p.input_len()).map(|_| (rng.next_u64() & 127) as u8).collect();
    let w: Vec<i8> = (0..p.weight_len()).map(|_| rng.next_u64() as i8).collect();
    let per_channel = if p.transposed { p.out_channels / p.groups } else { p.out_channels };
    let scales = vec![0.002f64; per_channel];
    let bias = rng.vec(p.out_channels, -0.1, 0.1);
    let params = RequantParams {
        input_scale: 0.02,
        weight_scales: WeightScales::PerChannel(&scales),
        output_scale: 0.05,
        output_zero_point: 128,
        bias: Some(&bias),
        relu: false,
    };
    let table = RequantTable::new(p.transposed, p.out_channels, p.groups, &params)?;
    let weights = DeviceInt8Weights::upload(rt.ordinal(), &p, &w, &[0])?;
    let xd = rt.htod(&x, None)?;
    let y = std::cell::RefCell::new(rt.alloc_uninit::<u8>(p.output_len(), None)?);
    let last_name = ["nwc", "nhwc", "ndhwc"][c.dims.clamp(1, 3) - 1];
    let round2 = |v: f64| (v * 100.0).round() / 100.0;
    for (layout, name) in [(Int8Layout::ChannelsFirst, "nchw"), (Int8Layout::ChannelsLast, last_name)] {
        let run = || forward_int8(&weights, &p, &table, 64, &xd, layout, &mut y.borrow_mut(), None);
        let t = timer.median_us(&run, 50)?;
        emit(json!({
            "peer": "qconv", "device": rt.info().name, "version": env!("CARGO_PKG_VERSION"),
            "case": c.name, "op": "int8_forward", "dtype": "u8", "layout": name,
            "precision": "int8", "weights": "int8_lowered", "batch": batch, "median_us": round2(t),
            "tops": round2(p.flops() / t / 1e6), "weight_bytes": p.weight_len(),
        }));
    }
    Ok(())
}
