//! A timing hook for the GEMM micro-kernel, used by `benches/kernels.rs`; not part of the API.
//!
//! [`GemmBench`] holds the operands of one micro-kernel call with L1-resident weights and output
//! tile and runs it repeatedly, with the kernels of a chosen level, so that a benchmark measures
//! the kernel's throughput alone (no task setup, no gather).

use super::{CTile, Isa, Kernel, WithKernel, NR};

/// Repeated calls of the GEMM micro-kernel on fixed operands.
#[derive(Debug)]
pub struct GemmBench {
    isa: Isa,
    mr: usize,
    kc: usize,
    ldb: usize,
    boff: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl GemmBench {
    /// The kernel levels this CPU runs, best first, named as [`crate::cpu::simd_level`] names them.
    pub fn levels() -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Isa::ALL.iter().rev().map(|isa| isa.kernel_name()).collect();
        names.dedup();
        names
    }

    /// A call of an `mr`-row tile (6 or 8) over `kc` reduction rows whose inputs (16 per row) are
    /// `ldb` apart: 16 is a packed panel, anything else reads rows of a padded plane from an
    /// unaligned start. `None` if `level` is not one of [`GemmBench::levels`] or `mr`, `kc` or
    /// `ldb` are out of range.
    pub fn new(level: &str, mr: usize, kc: usize, ldb: usize) -> Option<GemmBench> {
        let isa = Isa::ALL.into_iter().find(|isa| isa.kernel_name() == level && Self::levels().contains(&level))?;
        if !(mr == super::MR || mr == super::MR_WIDE) || kc == 0 || ldb < NR {
            return None;
        }
        let boff = if ldb == NR { 0 } else { 3 };
        Some(GemmBench {
            isa,
            mr,
            kc,
            ldb,
            boff,
            a: vec![0.5; kc * mr],
            b: vec![0.25; boff + kc * ldb + NR],
            c: vec![0.0; mr * NR],
        })
    }

    /// Floating-point operations of one call.
    pub fn flops(&self) -> u64 {
        (2 * self.mr * NR * self.kc) as u64
    }

    /// Runs `calls` accumulating calls (one kernel dispatch for all of them).
    pub fn run(&mut self, calls: usize) {
        self.isa.dispatch(Calls { bench: self, calls })
    }

    /// The first output value (keeps the work observable).
    pub fn first_output(&self) -> f32 {
        self.c[0]
    }
}

/// [`GemmBench::run`] as a job for [`Isa::dispatch`].
struct Calls<'a> {
    bench: &'a mut GemmBench,
    calls: usize,
}

impl WithKernel for Calls<'_> {
    type Output = ();
    fn run<K: Kernel>(self, kern: K) {
        let GemmBench { mr, kc, ldb, boff, ref a, ref b, ref mut c, .. } = *self.bench;
        let segs = [(0usize, kc, boff)];
        for _ in 0..self.calls {
            let out = CTile { c, ldc: NR, accumulate: true };
            kern.gemm(mr, a, &segs, std::hint::black_box(b), ldb, out);
        }
    }
}
