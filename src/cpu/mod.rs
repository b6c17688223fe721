//! The CPU engine: PyTorch-style convolutions in `f32`, fast and deterministic.
//!
//! Every convolution is normalised to three spatial dimensions (1-d and 2-d problems add unit
//! dimensions in front) and described by a [`ConvProblem`]. The fast path ([`conv`]) rewrites it
//! as sub-convolutions (a transposed convolution as its stride phases) and runs each either as a
//! tiled implicit GEMM over a weight packed once per module ([`PackedWeight`]), or, with one output
//! channel per group (depthwise), as a direct convolution over windows of padded input rows. The
//! micro-kernels are compiled per instruction set and picked once per call at run time
//! ([`simd_level`]). Results are bit-identical for any number of threads. The naive direct
//! convolution ([`crate::oracle::conv_naive`], f64 accumulation) is the test oracle.
//!
//! # Files
//!
//! A call flows down this list; each file's own documentation describes its part.
//!
//! | file | holds |
//! |---|---|
//! | `entry.rs` | [`conv`]: validation, choice of the GEMM path's input source, one ISA dispatch per call |
//! | `geometry.rs` | the sub-convolutions: per-dimension phases and taps, index validation |
//! | `packed.rs` | [`PackedWeight`]: the weight in micro-kernel panels, 6 or 8 rows |
//! | `context.rs` | the call context `Ctx` (what every task reads), dispatch to a path; parallelism and determinism |
//! | `gemm.rs` | the GEMM path (`Kg > 1`): its input source, tasks, column runs, reduction chunks, gather, epilogue |
//! | `padded.rs` | the padded input copy the GEMM path may read in place, and the padded row copy |
//! | `direct.rs` | the direct path (`Kg == 1`): tasks, windows of padded rows, tap templates |
//! | `workspace.rs` | the per-thread scratch buffers of the tasks |
//! | `rows.rs` | row copies into packed micro-panels, shared by the gather, the windows and the kernels |
//! | `kernels/` | the `Kernel` trait, one file per instruction set, the cached CPU feature detection |
//! | `*_tests.rs`, `kernels/tests.rs` | each file's tests; `test_support.rs` holds their oracle check |
//!
//! | `int8/` | the int8 engine of the lowered convolutions ([`int8::conv_int8`]): its own paths and kernels, sharing the geometry and the feature detection |
//!
//! Benchmarks live outside the library: `qconv bench` and `benches/conv.rs` time the CPU suite,
//! `benches/kernels.rs` the GEMM micro-kernel.

mod context;
mod direct;
mod entry;
mod gemm;
mod geometry;
pub mod int8;
pub(crate) mod kernels;
mod packed;
mod padded;
mod rows;
#[cfg(test)]
mod test_support;
mod workspace;

/// The oracle moved to [`crate::oracle`]; this re-export keeps `qconv::cpu::conv_naive`.
pub use crate::oracle::conv_naive;
/// The problem type moved to [`crate::problem`]; this re-export keeps `qconv::cpu::ConvProblem`.
pub use crate::problem::ConvProblem;
pub use entry::conv;
#[doc(hidden)]
#[doc(hidden)]
pub use kernels::bench as kernel_bench;
#[doc(hidden)]
pub use packed::PackedWeight;

/// The instruction set the CPU kernels use on this machine, chosen at run time: `"avx512f"` (the
/// CPU has AVX-512F, AVX2 and FMA), `"avx2+fma"` (AVX2 and FMA) or `"portable"` (auto-vectorised
/// code for any CPU).
pub fn simd_level() -> &'static str {
    kernels::Isa::best().kernel_name()
}
