//! Times candle-core's CPU convolutions on the CPU suite of `docs/benchmarks.md` (f32, batch 1,
//! with bias) and prints one JSON line per case, with the fields of `scripts/bench/torch_cpu.py`
//! (`peer`, `case`, `op`, `median_us`, `gflops`, `threads`). Candle has no 3-d convolutions; those
//! cases print `"unsupported": true`. Threads: candle's default (all cores, `RAYON_NUM_THREADS`).

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};

struct Case {
    name: &'static str,
    transposed: bool,
    c: usize,
    k: usize,
    spatial: &'static [usize],
    kernel: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    groups: usize,
}

const SUITE: &[Case] = &[
    Case { name: "c2d_3x3", transposed: false, c: 128, k: 128, spatial: &[28, 28], kernel: 3, stride: 1, pad: 1, dil: 1, groups: 1 },
    Case { name: "c2d_1x1", transposed: false, c: 256, k: 64, spatial: &[56, 56], kernel: 1, stride: 1, pad: 0, dil: 1, groups: 1 },
    Case { name: "c2d_stem", transposed: false, c: 3, k: 64, spatial: &[224, 224], kernel: 7, stride: 2, pad: 3, dil: 1, groups: 1 },
    Case { name: "c2d_dw", transposed: false, c: 256, k: 256, spatial: &[28, 28], kernel: 3, stride: 1, pad: 1, dil: 1, groups: 256 },
    Case { name: "c2d_dil", transposed: false, c: 64, k: 64, spatial: &[56, 56], kernel: 3, stride: 1, pad: 2, dil: 2, groups: 1 },
    Case { name: "c1d", transposed: false, c: 256, k: 256, spatial: &[2048], kernel: 5, stride: 1, pad: 2, dil: 1, groups: 1 },
    Case { name: "c3d", transposed: false, c: 32, k: 64, spatial: &[8, 28, 28], kernel: 3, stride: 1, pad: 1, dil: 1, groups: 1 },
    Case { name: "ct2d", transposed: true, c: 128, k: 64, spatial: &[28, 28], kernel: 4, stride: 2, pad: 1, dil: 1, groups: 1 },
    Case { name: "ct1d", transposed: true, c: 256, k: 128, spatial: &[1024], kernel: 4, stride: 2, pad: 1, dil: 1, groups: 1 },
    Case { name: "ct3d", transposed: true, c: 32, k: 16, spatial: &[8, 16, 16], kernel: 4, stride: 2, pad: 1, dil: 1, groups: 1 },
];

/// Median of the per-call times (µs): 3 warm-up calls, then at least 20 calls and 1 s.
fn time_us(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    let mut ts = Vec::new();
    let end = Instant::now() + std::time::Duration::from_secs(1);
    while ts.len() < 20 || Instant::now() < end {
        let t = Instant::now();
        f()?;
        ts.push(t.elapsed().as_secs_f64() * 1e6);
        if ts.len() > 2000 {
            break;
        }
    }
    ts.sort_by(f64::total_cmp);
    Ok(ts[ts.len() / 2])
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    for case in SUITE {
        let d = case.spatial.len();
        let kk = case.kernel.pow(d as u32);
        let out: Vec<usize> = case
            .spatial
            .iter()
            .map(|&l| {
                if case.transposed {
                    (l - 1) * case.stride - 2 * case.pad + case.dil * (case.kernel - 1) + 1
                } else {
                    (l + 2 * case.pad - case.dil * (case.kernel - 1) - 1) / case.stride + 1
                }
            })
            .collect();
        let flops = if case.transposed {
            2 * case.c * (case.k / case.groups) * kk * case.spatial.iter().product::<usize>()
        } else {
            2 * case.k * (case.c / case.groups) * kk * out.iter().product::<usize>()
        } as f64;
        if d == 3 {
            println!(
                "{{\"peer\":\"candle\",\"case\":\"{}\",\"op\":\"float_conv\",\"unsupported\":true,\"threads\":{threads},\"version\":\"0.11.1\"}}",
                case.name
            );
            continue;
        }
        let mut xs = vec![1usize];
        xs.push(case.c);
        xs.extend_from_slice(case.spatial);
        let x = Tensor::rand(-1f32, 1f32, xs, &dev)?;
        let wshape: Vec<usize> = if case.transposed {
            [case.c, case.k / case.groups].into_iter().chain(std::iter::repeat_n(case.kernel, d)).collect()
        } else {
            [case.k, case.c / case.groups].into_iter().chain(std::iter::repeat_n(case.kernel, d)).collect()
        };
        let w = Tensor::rand(-0.1f32, 0.1f32, wshape, &dev)?;
        let bias_shape: Vec<usize> = [1, case.k].into_iter().chain(std::iter::repeat_n(1, d)).collect();
        let bias = Tensor::rand(-0.1f32, 0.1f32, bias_shape, &dev)?;
        let forward = || -> Result<Tensor> {
            let y = match (d, case.transposed) {
                (1, false) => x.conv1d(&w, case.pad, case.stride, case.dil, case.groups)?,
                (2, false) => x.conv2d(&w, case.pad, case.stride, case.dil, case.groups)?,
                (1, true) => x.conv_transpose1d(&w, case.pad, 0, case.stride, case.dil, case.groups)?,
                _ => x.conv_transpose2d(&w, case.pad, 0, case.stride, case.dil)?,
            };
            y.broadcast_add(&bias)
        };
        let y = forward()?;
        assert_eq!(&y.dims()[2..], &out[..], "{}: output size", case.name);
        assert_eq!(y.dtype(), DType::F32);
        let us = time_us(|| forward().map(|_| ()))?;
        println!(
            "{{\"peer\":\"candle\",\"case\":\"{}\",\"op\":\"float_conv\",\"median_us\":{us:.1},\"gflops\":{:.2},\"threads\":{threads},\"version\":\"0.11.1\"}}",
            case.name,
            flops / us / 1e3
        );
    }
    Ok(())
}
