//! The main job with built-in data: a small quantized conv network, built from deterministic
//! weights, run on the best device, compared against the same network with float weights.
//!
//! `cargo run --release --example quickstart`

use std::time::Instant;

use qconv::{Conv2d, ConvOptions, ConvTranspose2d, Device, Padding, PaddingMode, Result, Tensor, WeightQParams};

/// Deterministic data: SplitMix64, uniform floats from its top 24 bits.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let u = ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// A 4-layer encoder/decoder: conv → strided conv (reflect padding) → transposed conv → 1×1 conv.
struct Net {
    conv1: Conv2d,
    conv2: Conv2d,
    up: ConvTranspose2d,
    head: Conv2d,
}

fn weights(rng: &mut Rng, shape: &[usize], fan_in: usize) -> Result<(Tensor, Tensor)> {
    let bound = 1.0 / (fan_in as f32).sqrt();
    let n = shape.iter().product();
    let out = if shape.len() == 4 { shape[0] } else { 0 };
    let w = Tensor::from_vec(rng.vec(n, -bound, bound), shape)?;
    let b = Tensor::from_vec(rng.vec(out, -bound, bound), &[out])?;
    Ok((w, b))
}

impl Net {
    /// Builds the network; `quantized` picks PyTorch's x86 default weight observers (per-channel
    /// symmetric qint8 for convs, per-tensor for the transposed conv) or float weights.
    fn new(quantized: bool) -> Result<Net> {
        let mut rng = Rng::new(42);
        let (w1, b1) = weights(&mut rng, &[16, 3, 3, 3], 27)?;
        let (w2, b2) = weights(&mut rng, &[32, 16, 3, 3], 144)?;
        let (wu, _) = weights(&mut rng, &[32, 8, 4, 4], 128)?;
        let bu = Tensor::from_vec(rng.vec(8, -0.1, 0.1), &[8])?;
        let (wh, bh) = weights(&mut rng, &[4, 8, 1, 1], 8)?;
        let o1 = ConvOptions::new().kernel_size([3, 3]).padding(Padding::Same);
        let o2 = ConvOptions::new()
            .kernel_size([3, 3])
            .stride([2, 2])
            .padding(Padding::Explicit([1, 1]))
            .padding_mode(PaddingMode::Reflect);
        let ou = ConvOptions::new().kernel_size([4, 4]).stride([2, 2]).padding(Padding::Explicit([1, 1]));
        let oh = ConvOptions::new().kernel_size([1, 1]);
        if quantized {
            Ok(Net {
                conv1: Conv2d::from_float_observed(w1, Some(b1), o1)?,
                conv2: Conv2d::from_float_observed(w2, Some(b2), o2)?,
                up: ConvTranspose2d::from_float_observed(wu, Some(bu), ou)?,
                head: Conv2d::from_float_observed(wh, Some(bh), oh)?,
            })
        } else {
            let none = WeightQParams::none;
            Ok(Net {
                conv1: Conv2d::from_float(w1, Some(b1), none(), o1)?,
                conv2: Conv2d::from_float(w2, Some(b2), none(), o2)?,
                up: ConvTranspose2d::from_float(wu, Some(bu), none(), ou)?,
                head: Conv2d::from_float(wh, Some(bh), none(), oh)?,
            })
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let d = self.head.device();
        let h = relu(&self.conv1.forward(x)?, d)?;
        let h = relu(&self.conv2.forward(&h)?, d)?;
        let h = relu(&self.up.forward(&h)?, d)?;
        self.head.forward(&h)
    }

    fn to_device(&self, d: Device) -> Result<Net> {
        Ok(Net {
            conv1: self.conv1.to_device(d)?,
            conv2: self.conv2.to_device(d)?,
            up: self.up.to_device(d)?,
            head: self.head.to_device(d)?,
        })
    }
}

/// ReLU on the host (qconv provides convolutions only), then back to the network's device.
fn relu(t: &Tensor, device: Device) -> Result<Tensor> {
    let v = t.to_vec_f32()?.into_iter().map(|v| v.max(0.0)).collect();
    Tensor::from_vec(v, t.shape())?.to_device(device)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    println!("qconv quickstart: a 4-layer quantized conv network on built-in data\n");
    let probe = qconv::cuda::probe();
    let device = Device::best();
    let why = match probe.unusable_reason() {
        Some(r) => format!("CPU fallback because {r}"),
        None => format!("CUDA is usable ({})", probe.devices.first().map(|d| d.name.as_str()).unwrap_or("?")),
    };
    println!("device: {device} ({why}); CPU SIMD: {}, threads: {}", qconv::cpu::simd_level(), rayon_threads());

    let qnet = Net::new(true)?.to_device(device)?;
    let fnet = Net::new(false)?.to_device(device)?;
    for (name, q) in [("conv1", qnet.conv1.weight_qparams()), ("conv2", qnet.conv2.weight_qparams())] {
        println!("{name}: {} {} (axis {})", q.qscheme, q.dtype, q.axis);
    }
    println!("up:    {} {}", qnet.up.weight_qscheme(), qnet.up.weight_dtype());
    println!("{}\n{}\n{}\n{}", qnet.conv1, qnet.conv2, qnet.up, qnet.head);

    let mut rng = Rng::new(7);
    let x = Tensor::from_vec(rng.vec(2 * 3 * 64 * 64, -1.0, 1.0), &[2, 3, 64, 64])?.to_device(device)?;
    let yq = qnet.forward(&x)?;
    let yf = fnet.forward(&x)?;
    let (q, f) = (yq.to_vec_f32()?, yf.to_vec_f32()?);
    let max_dev = q.iter().zip(&f).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let max_ref = f.iter().map(|v| v.abs()).fold(0f32, f32::max);
    let mean = q.iter().map(|&v| v as f64).sum::<f64>() / q.len() as f64;
    let (lo, hi) = q.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    println!("\ninput  {:?} -> output {:?}", x.shape(), yq.shape());
    println!("output: mean {mean:.5}, min {lo:.5}, max {hi:.5}");
    println!(
        "max |quantized - float| = {max_dev:.3e} ({:.3}% of max |float output|)",
        100.0 * max_dev / max_ref.max(f32::MIN_POSITIVE)
    );
    let w_err = max_abs_diff(qnet.conv2.get_weight(), qnet.conv2.weight());
    println!("conv2 weight fake-quant error: max {w_err:.3e}");

    let mut times = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        qnet.forward(&x)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!("time per forward (batch 2, median of 20): {:.3} ms", times[times.len() / 2]);
    Ok(())
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    a.to_vec_f32().unwrap().iter().zip(b.to_vec_f32().unwrap()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
