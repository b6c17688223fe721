//! Criterion bench of the CPU GEMM micro-kernel alone: one call of an `mr × 16` tile over 128
//! reduction rows with L1-resident operands, on one thread, for every kernel level this CPU runs
//! (best first: `avx512f`, `avx2+fma`, `portable`), both panel heights (6 and 8 rows), and two
//! input layouts: a packed panel (rows 16 apart) and rows of a padded plane (900 apart, a 30×30
//! plane, from an unaligned start). Throughput is reported in FLOPs.
//!
//! ```sh
//! cargo bench --bench kernels                    # every level, height and layout
//! cargo bench --bench kernels -- avx2+fma/mr8    # criterion's filter selects benchmarks
//! ```
//!
//! It takes no environment variables; the convolution-level timings are `qconv bench` and
//! `benches/conv.rs`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qconv::cpu::kernel_bench::GemmBench;

/// Reduction rows per call.
const KC: usize = 128;
/// Calls per timed iteration (amortises the dispatch and the timer).
const CALLS: usize = 100;

fn kernels(c: &mut Criterion) {
    for level in GemmBench::levels() {
        let mut g = c.benchmark_group(level);
        for mr in [6, 8] {
            for (layout, ldb) in [("packed", 16), ("plane", 900)] {
                let mut bench = GemmBench::new(level, mr, KC, ldb).expect("a level of this CPU");
                g.throughput(Throughput::Elements(bench.flops() * CALLS as u64));
                g.bench_function(format!("mr{mr}/{layout}"), |b| b.iter(|| bench.run(CALLS)));
                std::hint::black_box(bench.first_output());
            }
        }
        g.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
