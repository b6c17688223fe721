//! CPU fallback kernels.
//!
//! Every convolution is normalised to three spatial dimensions (1-d and 2-d problems add unit
//! dimensions in front) and described by a [`ConvProblem`]. The fast path ([`conv`]) runs a
//! tiled implicit GEMM over a weight packed once per module ([`PackedWeight`]); the naive direct
//! convolution ([`crate::oracle::conv_naive`], f64 accumulation) is the test oracle.

mod engine;

/// The oracle moved to [`crate::oracle`]; this re-export keeps `qconv::cpu::conv_naive`.
pub use crate::oracle::conv_naive;
/// The problem type moved to [`crate::problem`]; this re-export keeps `qconv::cpu::ConvProblem`.
pub use crate::problem::ConvProblem;
pub use engine::{conv, PackedWeight};

/// The instruction set the CPU kernels use on this machine, chosen at run time: `"avx512f"` (the
/// CPU has AVX-512F, AVX2 and FMA), `"avx2+fma"` (AVX2 and FMA) or `"portable"` (auto-vectorised
/// code for any CPU).
pub fn simd_level() -> &'static str {
    engine::best_level_name()
}
