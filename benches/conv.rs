//! Criterion benches over the CPU suite of docs/benchmarks.md: module forward (cached fake-quantized
//! weight) and weight fake-quant alone, per case.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qconv::bench::CPU_SUITE;

fn suite(c: &mut Criterion) {
    for case in CPU_SUITE {
        let built = case.build(1).expect("suite case builds");
        let mut g = c.benchmark_group(case.name);
        g.sample_size(20);
        g.throughput(Throughput::Elements(built.flops as u64));
        g.bench_function("module_forward", |b| b.iter(|| built.module.forward(&built.input).expect("forward")));
        g.throughput(Throughput::Elements(built.weight.numel() as u64));
        g.bench_function("weight_fakequant", |b| {
            b.iter(|| qconv::quant::fake_quantize(&built.weight, &built.qparams).expect("fake-quant"))
        });
        g.finish();
    }
}

criterion_group!(benches, suite);
criterion_main!(benches);
