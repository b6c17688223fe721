//! Digest of the CPU path's outputs, for refactors that must not change a single bit.
//!
//! ```sh
//! cargo run --release --example cpu_digest            # totals
//! cargo run --release --example cpu_digest -- -v      # one line per case
//! cargo run --release --example cpu_digest -- 500     # 500 random engine problems (default 300)
//! ```
//!
//! It hashes (FNV-1a over the output bits) three sets of outputs:
//! * every PyTorch fixture module of `tests/fixtures/modules.safetensors` run on its stored input;
//! * a seeded sweep of random engine problems (`qconv::cpu::conv`): forward and transposed,
//!   1-d to 3-d, groups and depthwise, every padding mode, strides, dilations, batch > 1, and
//!   channel counts that cross the micro-kernel tiles;
//! * module forwards with f16/bf16 inputs and channels-last layouts.
//!
//! Two builds give the same digests exactly when they compute the same bits. The digests depend
//! on the SIMD level the engine picks (`qconv info` prints it), so compare builds on one machine.

use qconv::cpu::{conv, PackedWeight};
use qconv::io::StateDict;
use qconv::problem::{ConvProblem, PaddingMode};
use qconv::{AnyConv, Conv2d, ConvOptions, ConvTranspose2d, DType, Padding, Tensor, WeightQParams};

/// FNV-1a, 64 bits.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn f32s(&mut self, v: &[f32]) {
        for x in v {
            self.bytes(&x.to_bits().to_le_bytes());
        }
    }
}

/// SplitMix64: a small deterministic generator (the digest must not depend on a crate's PRNG).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0).collect()
    }
}

/// A random engine problem (`None` when the drawn sizes give no output).
fn random_problem(rng: &mut Rng, transposed: bool) -> Option<ConvProblem> {
    let ndim = rng.range(1, 3);
    let (groups, cg, kg) = match rng.range(0, 6) {
        0 => (1, rng.range(1, 8), rng.range(1, 8)),
        1 => (rng.range(2, 4), rng.range(1, 6), rng.range(1, 10)),
        2 => {
            let c = rng.range(1, 24);
            (c, 1, 1)
        }
        3 => (rng.range(2, 8), 1, rng.range(2, 3)),
        4 => (1, rng.range(1, 3), rng.range(16, 72)),
        _ => (1, rng.range(8, 80), rng.range(7, 40)),
    };
    let pad_mode = if transposed {
        PaddingMode::Zeros
    } else {
        [PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular][rng.range(0, 3)]
    };
    let mut p = ConvProblem {
        transposed,
        batch: rng.range(1, 3),
        in_channels: groups * cg,
        out_channels: groups * kg,
        groups,
        in_size: [1; 3],
        out_size: [1; 3],
        kernel: [1; 3],
        stride: [1; 3],
        pad: [0; 3],
        dilation: [1; 3],
        pad_mode,
    };
    for d in 3 - ndim..3 {
        let len = match ndim {
            1 => rng.range(1, 400),
            2 => rng.range(1, 40),
            _ => rng.range(1, 12),
        };
        let k = rng.range(1, if ndim == 3 { 3 } else { 7 });
        let s = rng.range(1, 3);
        let dil = rng.range(1, 2);
        let span = (k - 1) * dil;
        if transposed {
            let pad = rng.range(0, span);
            let out_pad = rng.range(0, s.max(dil) - 1);
            let full = (len - 1) * s + span + out_pad + 1;
            if full <= 2 * pad {
                return None;
            }
            p.out_size[d] = full - 2 * pad;
            p.pad[d] = pad;
        } else {
            let max_pad = match pad_mode {
                PaddingMode::Zeros => span + 1,
                PaddingMode::Replicate => 3,
                PaddingMode::Reflect => len - 1,
                PaddingMode::Circular => len,
            };
            let pad = rng.range(0, max_pad.min(span + 1));
            let extra = usize::from(pad < max_pad && rng.chance(30));
            let padded = len + 2 * pad + extra;
            if padded < span + 1 {
                return None;
            }
            p.out_size[d] = (padded - span - 1) / s + 1;
            p.pad[d] = pad;
        }
        p.in_size[d] = len;
        p.kernel[d] = k;
        p.stride[d] = s;
        p.dilation[d] = dil;
    }
    (p.flops() < 1e8).then_some(p)
}

fn engine_sweep(count: usize, verbose: bool) -> Fnv {
    let mut rng = Rng(0x005E_ED0F_C0DE);
    let mut total = Fnv::new();
    let mut done = 0;
    while done < count {
        let transposed = rng.chance(40);
        let Some(p) = random_problem(&mut rng, transposed) else { continue };
        let x = rng.vec(p.input_len());
        let w = rng.vec(p.weight_len());
        let bias = rng.chance(70).then(|| rng.vec(p.out_channels));
        let packed = PackedWeight::new(p.transposed, p.in_channels, p.out_channels, p.groups, p.kernel, &w)
            .expect("valid random problem");
        let mut y = vec![0.0f32; p.output_len()];
        conv(&p, &packed, bias.as_deref(), &x, &mut y).expect("valid random problem");
        let mut h = Fnv::new();
        h.f32s(&y);
        total.bytes(&h.0.to_le_bytes());
        if verbose {
            println!("engine {done:4} {:016x} {p:?}", h.0);
        }
        done += 1;
    }
    total
}

fn fixtures(verbose: bool) -> Fnv {
    let path = format!("{}/tests/fixtures/modules.safetensors", env!("CARGO_MANIFEST_DIR"));
    let sd = StateDict::load(&path).expect("fixture file");
    let cases: Vec<String> = serde_json::from_str(&sd.metadata["__cases__"]).expect("__cases__");
    let mut total = Fnv::new();
    for case in &cases {
        let prefix = format!("{case}.");
        let Ok((m, _)) = AnyConv::from_state_dict_lenient(&sd, &prefix) else { continue };
        let fwd: serde_json::Value = serde_json::from_str(&sd.metadata[&format!("{prefix}forward")]).unwrap();
        let output_size: Option<Vec<usize>> =
            fwd.get("output_size").and_then(|v| serde_json::from_value(v.clone()).ok());
        let x = sd.tensor(&format!("{prefix}input")).unwrap();
        let mut h = Fnv::new();
        match match output_size.as_deref() {
            Some(o) => m.forward_with_output_size(&x, o),
            None => m.forward(&x),
        } {
            Ok(y) => h.f32s(&y.to_vec_f32().unwrap()),
            Err(e) => h.bytes(e.to_string().as_bytes()),
        }
        total.bytes(&h.0.to_le_bytes());
        if verbose {
            println!("fixture {case:40} {:016x}", h.0);
        }
    }
    total
}

fn modules(verbose: bool) -> qconv::Result<Fnv> {
    let mut rng = Rng(0x00D1_6E57);
    let mut total = Fnv::new();
    for (i, dtype) in [DType::F32, DType::F16, DType::BF16].into_iter().enumerate() {
        for (c, k, size, ks) in [(3usize, 16usize, 33usize, 7usize), (24, 40, 17, 3), (64, 64, 14, 1), (8, 8, 9, 3)] {
            let w = Tensor::from_vec(rng.vec(k * c * ks * ks), &[k, c, ks, ks])?;
            let b = Tensor::from_vec(rng.vec(k), &[k])?;
            let qp = WeightQParams::per_channel_symmetric_from_weight(&w, 0, qconv::QuantDType::QInt8)?;
            let conv =
                Conv2d::from_float(w, Some(b), qp, ConvOptions::new().kernel_size([ks, ks]).padding(Padding::Same))?;
            let x = Tensor::from_vec(rng.vec(2 * c * size * size), &[2, c, size, size])?.to_dtype(dtype).unwrap();
            let wt = Tensor::from_vec(rng.vec(c * k * ks * ks), &[c, k, ks, ks])?;
            let qpt = WeightQParams::per_tensor_symmetric_from_weight(&wt, qconv::QuantDType::QInt8)?;
            let tconv =
                ConvTranspose2d::from_float(wt, None, qpt, ConvOptions::new().kernel_size([ks, ks]).stride([2, 2]))?;
            let outs = [
                conv.forward(&x)?,
                conv.forward_channels_last(&x.to_channels_last()?)?,
                tconv.forward(&x)?,
                tconv.forward_channels_last(&x.to_channels_last()?)?,
            ];
            for (j, y) in outs.iter().enumerate() {
                let mut h = Fnv::new();
                h.f32s(&y.to_vec_f32()?);
                total.bytes(&h.0.to_le_bytes());
                if verbose {
                    println!("module {i} {c}->{k} {size} k{ks} out{j} {:016x}", h.0);
                }
            }
        }
    }
    Ok(total)
}

fn main() -> qconv::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let verbose = args.iter().any(|a| a == "-v");
    let count = args.iter().find_map(|a| a.parse::<usize>().ok()).unwrap_or(300);
    let f = fixtures(verbose);
    let e = engine_sweep(count, verbose);
    let m = modules(verbose)?;
    println!("SIMD level: {}", qconv::cpu::simd_level());
    println!("fixtures       {:016x}", f.0);
    println!("engine sweep   {:016x}  ({count} problems)", e.0);
    println!("module forward {:016x}", m.0);
    Ok(())
}
