//! From PyTorch to Rust: a quantized model exported by `scripts/export_pytorch.py`, an input file,
//! one layer, and the whole chain of layers.
//!
//! ```sh
//! # 1. PyTorch side (needs torch): quantize with FX, convert to reference modules, export.
//! #    `--demo` exports the built-in DemoNet; for your own model pass MODEL.pt OUT.safetensors.
//! python3 scripts/export_pytorch.py --demo model.safetensors
//! # 2. Rust side: this program (without an argument it reads the committed export of DemoNet,
//! #    tests/fixtures/export_demo.safetensors, so it runs without torch).
//! cargo run --release --example from_pytorch -- model.safetensors
//! ```
//!
//! DemoNet is `conv1` (Conv2d 3→4, fused with a ReLU) → `conv2` (grouped Conv2d 4→4) → `up`
//! (ConvTranspose2d 4→2) → flatten → `head` (Conv1d 2→3). The exporter stores each convolution
//! under its module path (`conv1.0.` is the convolution inside the fused ConvReLU2d); activations
//! and reshapes between them are the caller's: here a ReLU through ndarray and a reshape.

use std::path::PathBuf;

use qconv::io::StateDict;
use qconv::ndarray::Array;
use qconv::{AnyConv, Device, Forward, Result, Tensor};

fn main() -> Result<()> {
    let model_path = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/export_demo.safetensors"));

    // The model file: every module it holds, as `qconv inspect` lists them.
    let model = StateDict::load(&model_path)?;
    println!("{}:", model_path.display());
    for prefix in model.module_prefixes() {
        let m = AnyConv::from_state_dict(&model, &prefix)?;
        println!("  {prefix:<10} {m}");
    }

    // An input file, as `qconv run --input` reads it: one tensor named `input`, (N, C, H, W).
    let x = Array::from_shape_fn((2, 3, 8, 8), |(n, c, h, w)| ((n * 7 + c * 5 + h * 3 + w) % 11) as f32 / 5.0 - 1.0);
    let x = Tensor::from(x);
    let dir = std::env::temp_dir().join(format!("qconv-from-pytorch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| qconv::Error::Io { op: "creating", path: dir.clone(), source: e })?;
    let input_path = dir.join("input.safetensors");
    let mut input = StateDict::new();
    input.insert_tensor("input", &x);
    input.save(&input_path)?;
    println!("\ninput file: {} ({x:?})", input_path.display());

    // One layer: what `qconv run --model M --prefix conv1.0 --input X --output Y` computes.
    let device = Device::best(); // CUDA when usable, else the CPU
    let conv1 = AnyConv::from_state_dict(&model, "conv1.0.")?.to_device(device)?;
    let y1 = conv1.forward(&x.to_device(device)?)?.to_device(Device::Cpu)?;
    println!("\none layer on {device}: conv1.0. -> {y1:?}");
    println!(
        "same from the command line:\n  qconv run --model {} --prefix conv1.0 --input {} --output y.safetensors",
        model_path.display(),
        input_path.display()
    );

    // The chain: conv1 → ReLU → [conv2 → up] (a Vec of modules is a module) → flatten → head.
    let layer = |p: &str| AnyConv::from_state_dict(&model, p);
    let relu = |t: &Tensor| -> Result<Tensor> { Ok(Tensor::from(t.to_ndarray_dyn::<f32>()?.mapv(|v| v.max(0.0)))) };
    let middle = vec![layer("conv2.")?, layer("up.")?];
    let head = layer("head.")?;
    let y = middle.forward(&relu(&conv1.forward(&x)?.to_device(Device::Cpu)?)?)?;
    let (n, c) = (y.shape()[0], y.shape()[1]);
    let flat = y.reshape(&[n, c, y.numel() / (n * c)])?; // torch's y.flatten(2)
    let out = head.forward(&flat)?;
    println!("\nthe whole net: {:?} -> {:?}\n{out:.4}", x.shape(), out.shape());
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
