//! The int8 engine: PyTorch's lowered convolutions (`torch.ao.nn.quantized.Conv*d`,
//! `ConvTranspose*d`, `ConvReLU*d`) on u8 activations and i8 weights, with exact integer
//! accumulation and FBGEMM's requantization to u8 codes (docs/numerics.md §14.5).
//!
//! [`conv_int8`] runs a [`ConvProblem`] (any dimension, stride, dilation, groups, padding mode,
//! forward or transposed) with a [`PackedInt8Weight`] (packed once per module) and a
//! [`RequantTable`](crate::quant::RequantTable) (built once per module and input scale), on
//! channels-first or channels-last codes ([`ActivationLayout`]). Two paths:
//!
//! * **GEMM** (more than one input channel per group): an implicit GEMM over a padded
//!   channels-last copy of the input, positions × channels, the reduction running over taps ×
//!   channels with no im2col; transposed convolutions as their stride phases (gather form, no
//!   scatter, no atomics). The zero-point correction is a per-channel constant because the copy
//!   pads with the activation zero point; weight zero points add a per-position row sum.
//! * **Depthwise** (one input channel per group, any channel multiplier): channels-first rows of
//!   centred activation pairs, two taps per `vpmaddwd` lane.
//!
//! The micro-kernels exist per instruction set (portable, AVX2, AVX512-VNNI) behind one trait
//! ([`Int8Isa`] picks the best once per process; a weight is packed for one level). Every level,
//! every path and every thread count gives the same codes: the sums are exact integers and the
//! epilogue is one fixed sequence of f32 operations. The exact integer oracle is
//! [`crate::oracle::conv_int8_naive`].
//!
//! # Files
//!
//! | file | holds |
//! |---|---|
//! | `aligned.rs` | `AlignedBytes`: 64-byte aligned buffers for the padded copy and the weight panels |
//! | `entry.rs` | [`conv_int8`]: validation, path choice, the one dispatch; `OutSink`, the output the tasks share |
//! | `packed.rs` | [`PackedInt8Weight`]: the VNNI-layout panels, the tap sums, the centred depthwise weights |
//! | `plan.rs` | the padded copy's layout, the sub-convolutions: position runs, reduction runs, i64 chunks |
//! | `padded.rs` | building the padded channels-last copy (8×8 byte transposes for channels-first input) |
//! | `gemm.rs` | the GEMM path: tasks, blocks, the fused requantization of each block |
//! | `depthwise.rs` | the depthwise path: pair rows, lines, requantization |
//! | `bench.rs` | a timing hook for `benches/int8.rs` and `qconv bench` (hidden) |
//! | `kernels/` | the `Int8Kernel` trait and one file per instruction set |
//! | `*_tests.rs`, `kernels/tests.rs` | tests against the oracle and between levels |

mod aligned;
#[doc(hidden)]
pub mod bench;
mod depthwise;
mod entry;
mod gemm;
pub(crate) mod kernels;
mod packed;
mod padded;
mod plan;

pub use entry::conv_int8;
pub use kernels::Int8Isa;
pub use packed::PackedInt8Weight;

#[cfg(doc)]
use crate::problem::ConvProblem;

/// The memory layout of activation codes (input and output of [`conv_int8`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ActivationLayout {
    /// `[N, C, D, H, W]`, PyTorch's logical layout (the default).
    #[default]
    ChannelsFirst,
    /// `[N, D, H, W, C]` (PyTorch's `channels_last` / `channels_last_3d` memory format).
    ChannelsLast,
}

/// The int8 kernel level this CPU uses (`"avx512-vnni"`, `"avx2"` or `"portable"`).
pub fn int8_level() -> &'static str {
    Int8Isa::best().name()
}
