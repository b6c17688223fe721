//! Criterion benches of the int8 engine over the CPU suite of docs/benchmarks.md, with the
//! settings of `scripts/bench/torch_cpu.py --ops int8` (reduced-range activations, scale 2/127
//! and zero point 64; per-channel weights for convolutions, per-tensor for transposed ones;
//! output qparams from the float output's min/max): the lowered int8 forward on channels-first
//! and channels-last codes, and qconv's float module forward for comparison.
//!
//! `QCONV_INT8_TABLE=1 cargo bench --bench int8` prints instead one line per case with the
//! medians (µs, `qconv::bench::time_median_us`: 3 warm-up calls, then at least 200 calls and 2
//! s) of the int8 forward (channels-first and channels-last) and the float forward, for a paired
//! comparison with `python3 scripts/bench/torch_cpu.py --ops int8` in the same session.
//! `QCONV_INT8_THREADS=n` runs the table on `n` threads. `QCONV_INT8_CPU=1` prints the CPU time per call on one thread instead (a measure of work that
//! other processes on the machine disturb less). `QCONV_INT8_CASES=c2d_3x3,c1d` restricts the cases, `QCONV_INT8_LEVEL=avx2` (or `portable`,
//! `avx512-vnni`) the kernels, `QCONV_INT8_LAYOUT=nchw` (or `nhwc`) the layout (and skips the
//! float forward).

use criterion::{criterion_group, Criterion, Throughput};
use qconv::bench::{time_median_us, BenchCase, CPU_SUITE};
use qconv::cpu::int8::bench::Int8Bench;
use qconv::cpu::int8::{ActivationLayout, Int8Isa};
use qconv::cpu::ConvProblem;
use qconv::PaddingMode;

/// The suite case as a batch-1 problem.
fn problem(c: &BenchCase) -> ConvProblem {
    let lead = 3 - c.dims;
    let mut p = ConvProblem {
        transposed: c.transposed,
        batch: 1,
        in_channels: c.in_channels,
        out_channels: c.out_channels,
        groups: c.groups,
        in_size: [1; 3],
        out_size: [1; 3],
        kernel: [1; 3],
        stride: [1; 3],
        pad: [0; 3],
        dilation: [1; 3],
        pad_mode: PaddingMode::Zeros,
    };
    for d in lead..3 {
        let l = c.spatial[d - lead];
        p.in_size[d] = l;
        p.kernel[d] = c.kernel;
        p.stride[d] = c.stride;
        p.pad[d] = c.pad;
        p.dilation[d] = c.dilation;
        let span = c.dilation * (c.kernel - 1);
        p.out_size[d] = if c.transposed {
            (l - 1) * c.stride + span + 1 - 2 * c.pad
        } else {
            (l + 2 * c.pad - span - 1) / c.stride + 1
        };
    }
    p
}

fn level() -> Option<Int8Isa> {
    let name = std::env::var("QCONV_INT8_LEVEL").ok()?;
    Int8Isa::ALL.into_iter().find(|l| l.name() == name)
}

fn cases() -> Vec<BenchCase> {
    let only = std::env::var("QCONV_INT8_CASES").ok();
    CPU_SUITE.iter().copied().filter(|c| only.as_ref().is_none_or(|o| o.split(',').any(|n| n == c.name))).collect()
}

fn suite(c: &mut Criterion) {
    for case in cases() {
        let p = problem(&case);
        let mut g = c.benchmark_group(format!("int8/{}", case.name));
        g.sample_size(30);
        g.throughput(Throughput::Elements(p.flops() as u64));
        for (name, layout) in [("nchw", ActivationLayout::ChannelsFirst), ("nhwc", ActivationLayout::ChannelsLast)] {
            let mut b = Int8Bench::new(&p, layout, level(), 7).expect("case builds");
            g.bench_function(name, |bch| bch.iter(|| b.run().expect("int8 forward")));
        }
        let built = case.build(1).expect("float case builds");
        g.bench_function("float_forward", |b| b.iter(|| built.module.forward(&built.input).expect("forward")));
        g.finish();
    }
}

/// This process's CPU time (user + system) in seconds, from `/proc/self/stat` (10 ms ticks).
fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = s.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

/// CPU time per call (µs) of `f` over at least 3 s (robust to other processes on the machine,
/// unlike the wall time; meaningful with one thread).
fn cpu_us(mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let (c0, t0) = (cpu_seconds(), std::time::Instant::now());
    let mut n = 0;
    while t0.elapsed().as_secs_f64() < 3.0 || n < 20 {
        f();
        n += 1;
    }
    (cpu_seconds() - c0) / n as f64 * 1e6
}

/// `QCONV_INT8_CPU=1`: one thread, CPU time per call of the int8 forward (both layouts).
fn cpu_table() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
    println!("level {} one thread, CPU µs per call", level().unwrap_or_else(Int8Isa::best).name());
    for case in cases() {
        let p = problem(&case);
        let only = std::env::var("QCONV_INT8_LAYOUT").ok();
        let t: Vec<f64> = [("nchw", ActivationLayout::ChannelsFirst), ("nhwc", ActivationLayout::ChannelsLast)]
            .into_iter()
            .map(|(name, layout)| {
                if only.as_ref().is_some_and(|o| o != name) {
                    return f64::NAN;
                }
                let mut b = Int8Bench::new(&p, layout, level(), 7).expect("case builds");
                pool.install(|| cpu_us(|| b.run().expect("int8 forward")))
            })
            .collect();
        println!("{:<10} {:>10.1} {:>10.1}", case.name, t[0], t[1]);
    }
}

/// One line per case: int8 NCHW, int8 NHWC and float forward medians.
fn table() {
    println!("level {} threads {}", level().unwrap_or_else(Int8Isa::best).name(), rayon::current_num_threads());
    println!("{:<10} {:>12} {:>12} {:>12} {:>8}", "case", "int8_nchw_us", "int8_nhwc_us", "float_us", "float/i8");
    for case in cases() {
        let p = problem(&case);
        let only = std::env::var("QCONV_INT8_LAYOUT").ok();
        let mut t = Vec::new();
        for (name, layout) in [("nchw", ActivationLayout::ChannelsFirst), ("nhwc", ActivationLayout::ChannelsLast)] {
            if only.as_ref().is_some_and(|o| o != name) {
                t.push(f64::NAN);
                continue;
            }
            let mut b = Int8Bench::new(&p, layout, level(), 7).expect("case builds");
            t.push(time_median_us(|| b.run(), 200, 2.0).expect("int8 forward"));
        }
        let f = if only.is_some() {
            f64::NAN
        } else {
            let built = case.build(1).expect("float case builds");
            time_median_us(|| built.module.forward(&built.input).map(|_| ()), 50, 2.0).expect("forward")
        };
        println!("{:<10} {:>12.1} {:>12.1} {:>12.1} {:>8.2}", case.name, t[0], t[1], f, f / t[0]);
    }
}

criterion_group!(benches, suite);

fn main() {
    if std::env::var_os("QCONV_INT8_CPU").is_some() {
        cpu_table();
        return;
    }
    if std::env::var_os("QCONV_INT8_TABLE").is_some() {
        match std::env::var("QCONV_INT8_THREADS").ok().and_then(|t| t.parse().ok()) {
            Some(t) => rayon::ThreadPoolBuilder::new().num_threads(t).build().expect("pool").install(table),
            None => table(),
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
