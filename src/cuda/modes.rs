//! How a module uses a CUDA device: [`Precision`] and [`WeightStorage`]. Plain data, compiled in
//! every build (with or without the `cuda` feature), so module code that names them compiles
//! either way.

/// How a CUDA forward pass multiplies (the CPU path is always [`Precision::Exact`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Tensor cores wherever the kernels apply, for f16 and bf16 activations: forward and
    /// transposed convolutions with `in_channels / groups` a multiple of 8, and forward ones with
    /// at least 16 output channels per group (the input's channels padded with zeros to a
    /// multiple of 8 first, e.g. a 3-channel stem; one channel per group uses an element-wise
    /// loader). Both operands in the activation dtype (the fake-quantized weight rounded to
    /// nearest even, as PyTorch's `module.half()` / `.bfloat16()` gives cuDNN), products
    /// accumulated in f32, bias added in f32, one rounding of the output. Other problems
    /// (depthwise, few output channels per group) and f32 activations run as `Exact`.
    #[default]
    TensorCore,
    /// The f32 fake-quantized weight and f32 fused multiply-adds for every activation dtype
    /// (f16/bf16 inputs widened exactly), one rounding of the output: the CPU path's numerics.
    Exact,
    /// Opt-in TF32 for f32 activations (PyTorch's `torch.backends.cudnn.allow_tf32 = True`):
    /// forward and transposed convolutions with `in_channels / groups` a multiple of 8, and
    /// forward ones with 2 to 7 (mod 8) input and at least 16 output channels per group (input
    /// channels padded to a multiple of 8), run on tensor cores with both operands rounded to TF32
    /// (10 mantissa bits, to nearest with ties away from zero: the weight on the host, the
    /// activations in the kernel), products
    /// accumulated in f32, bias added in f32. Relative error grows to about 2⁻¹¹ per product.
    /// f16/bf16 activations run as [`TensorCore`](Precision::TensorCore); other problems and
    /// modules stored as 8-bit codes run f32 as `Exact`. The TF32 copy of the weight is built
    /// and uploaded on the first TF32 call (4 bytes per weight element, kept with the module).
    Tf32,
    /// Opt-in, **not yet verified on a GPU**: [`TensorCore`](Precision::TensorCore), except that
    /// on a device of compute capability 9.0 (H100, H200) the forward convolutions Hopper's own
    /// kernel takes run on it (`cuda/conv_wg.cu`, compiled for `sm_90a`: `wgmma` fed by TMA
    /// with an im2col tensor map): groups 1, f16/bf16 activations, `in_channels` a multiple of 8,
    /// zero padding, strides up to 8 and padding/dilated kernel extents within the TMA im2col
    /// limits, weights stored as [`WeightStorage::Float`]. Same numerics as `TensorCore` (both
    /// operands in the activation dtype, products accumulated in f32 in an order the hardware
    /// does not specify, bias added in f32, one rounding of the output). Every other problem and
    /// device runs exactly as under `TensorCore`. Stays opt-in until `scripts/gpu-check.sh` has
    /// verified it on a Hopper GPU (docs/gpu-results.md).
    TensorCoreSm90a,
}

/// How a module keeps its weight in CUDA device memory (the CPU path always uses the host's
/// float32 `get_weight()`). Outputs do not depend on it: both forms hold the same values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WeightStorage {
    /// The fake-quantized weight in float32, plus the binary16 and bfloat16 copies the tensor-core
    /// kernels read (and a `[taps][C]` copy for depthwise modules): 4 to 8 bytes per weight
    /// element, nothing to convert per call.
    #[default]
    Float,
    /// The weight's 8-bit integer codes (`get_quantized_weight()`, packed for the kernels) and a
    /// float32 scale and zero point per output channel: about 1 byte per weight element, 4× less
    /// than float32. The tensor-core kernels dequantize the codes as they load them into shared
    /// memory, with a formula that reproduces `get_weight()` bit for bit (checked on the host for
    /// every element when the codes are built), so outputs are identical to `Float`'s. Every other
    /// CUDA kernel (exact precision, f32 activations, depthwise, transposed convolutions outside
    /// the tensor-core tiles) first expands the codes into a temporary float32 weight on the
    /// call's stream, freed when the call's work completes.
    ///
    /// Needs integer codes of at most 8 bits (qint8, quint8, quint4x2, or a decomposed range
    /// inside one of them), one scale per output channel (per tensor, or per channel along axis 0
    /// for convolutions and axis 1 for transposed convolutions), and scales and zero points that
    /// are float32 values; anything else is an [`Error::InvalidConfig`](crate::Error::InvalidConfig) on `weight_storage`.
    Int8Codes,
}
