//! Every CUDA kernel qconv compiles: the sources in `cuda/`, the headers they include, and the
//! list of entry points (kernel variants) each source instantiates.
//!
//! A [`KernelSource`] is one NVRTC program (one `.cu` file); it is compiled once per architecture
//! into one CUBIN holding all of its entry points. [`VARIANTS`] lists every entry point with what
//! it computes, so tests, `qconv warmup` and the runtime iterate one list. The entry names are
//! the `extern "C"` symbols defined in the sources; `tests/nvrtc.rs` checks that every listed
//! variant appears in the compiled program and that no compiled entry is missing from the list.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::tensor::DType;

/// The headers every kernel source may include, as `(include name, contents)`; passed to NVRTC
/// as named headers (no file system access at compile time).
pub const HEADERS: &[(&str, &str)] = &[
    ("params.h", include_str!("../../cuda/params.h")),
    ("common.cuh", include_str!("../../cuda/common.cuh")),
    ("conv_igemm.cuh", include_str!("../../cuda/conv_igemm.cuh")),
];

/// One NVRTC program: a source file of `cuda/`, or one part of it selected by a `QC_PART`
/// define (the convolution files are split by dtype or kernel family so that the programs are
/// small and compile in parallel). Each program is compiled once per architecture into one CUBIN
/// holding all of its entry points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelSource {
    /// `cuda/fakequant.cu`: fake-quant and quantize-only kernels.
    FakeQuant,
    /// `cuda/conv.cu`, f32 activations: forward convolution (implicit GEMM and direct).
    ConvF32,
    /// `cuda/conv.cu`, f16 activations.
    ConvF16,
    /// `cuda/conv.cu`, bf16 activations.
    ConvBf16,
    /// `cuda/conv_transpose.cu`, f32 activations: transposed convolution in gather form.
    ConvTransposeF32,
    /// `cuda/conv_transpose.cu`, f16 activations.
    ConvTransposeF16,
    /// `cuda/conv_transpose.cu`, bf16 activations.
    ConvTransposeBf16,
    /// `cuda/conv_tc.cu`: tensor-core tiles with 16-byte loads, f16.
    ConvTcF16,
    /// `cuda/conv_tc.cu`: tensor-core tiles with 16-byte loads, bf16.
    ConvTcBf16,
    /// `cuda/conv_tc.cu`: tensor-core tiles with the element-wise loader, f16 and bf16.
    ConvTcGather,
    /// `cuda/conv_tc.cu`: channels-last depthwise kernels and the layout transposes.
    ConvTcMisc,
    /// `cuda/conv_tc.cu`: tensor-core transposed convolutions, f16.
    ConvTcTransposeF16,
    /// `cuda/conv_tc.cu`: tensor-core transposed convolutions, bf16.
    ConvTcTransposeBf16,
    /// `cuda/conv_tc.cu`: the f16 tiles of [`ConvTcF16`](Self::ConvTcF16) reading 8-bit weight
    /// codes.
    ConvTcQ8F16,
    /// `cuda/conv_tc.cu`: the bf16 tiles reading 8-bit weight codes.
    ConvTcQ8Bf16,
    /// `cuda/conv_tc.cu`: the element-wise loader tiles reading 8-bit weight codes.
    ConvTcQ8Gather,
    /// `cuda/conv_tc.cu`: the transposed f16 tiles reading 8-bit weight codes.
    ConvTcQ8TransposeF16,
    /// `cuda/conv_tc.cu`: the transposed bf16 tiles reading 8-bit weight codes.
    ConvTcQ8TransposeBf16,
    /// `cuda/conv_tc.cu`: TF32 tensor-core tiles for f32 activations (`Precision::Tf32`).
    ConvTcTf32,
    /// `cuda/conv_tc.cu`: TF32 tensor-core transposed tiles.
    ConvTcTf32Transpose,
}

impl KernelSource {
    /// Every program, in a fixed order.
    pub const ALL: [KernelSource; 20] = [
        KernelSource::FakeQuant,
        KernelSource::ConvF32,
        KernelSource::ConvF16,
        KernelSource::ConvBf16,
        KernelSource::ConvTransposeF32,
        KernelSource::ConvTransposeF16,
        KernelSource::ConvTransposeBf16,
        KernelSource::ConvTcF16,
        KernelSource::ConvTcBf16,
        KernelSource::ConvTcGather,
        KernelSource::ConvTcMisc,
        KernelSource::ConvTcTransposeF16,
        KernelSource::ConvTcTransposeBf16,
        KernelSource::ConvTcQ8F16,
        KernelSource::ConvTcQ8Bf16,
        KernelSource::ConvTcQ8Gather,
        KernelSource::ConvTcQ8TransposeF16,
        KernelSource::ConvTcQ8TransposeBf16,
        KernelSource::ConvTcTf32,
        KernelSource::ConvTcTf32Transpose,
    ];

    /// Short name (`"fakequant"`, `"conv_f32"`, …, `"conv_tc_misc"`), used in cache file names.
    pub fn name(&self) -> &'static str {
        match self {
            KernelSource::FakeQuant => "fakequant",
            KernelSource::ConvF32 => "conv_f32",
            KernelSource::ConvF16 => "conv_f16",
            KernelSource::ConvBf16 => "conv_bf16",
            KernelSource::ConvTransposeF32 => "conv_transpose_f32",
            KernelSource::ConvTransposeF16 => "conv_transpose_f16",
            KernelSource::ConvTransposeBf16 => "conv_transpose_bf16",
            KernelSource::ConvTcF16 => "conv_tc_f16",
            KernelSource::ConvTcBf16 => "conv_tc_bf16",
            KernelSource::ConvTcGather => "conv_tc_gather",
            KernelSource::ConvTcMisc => "conv_tc_misc",
            KernelSource::ConvTcTransposeF16 => "conv_tc_transpose_f16",
            KernelSource::ConvTcTransposeBf16 => "conv_tc_transpose_bf16",
            KernelSource::ConvTcQ8F16 => "conv_tc_q8_f16",
            KernelSource::ConvTcQ8Bf16 => "conv_tc_q8_bf16",
            KernelSource::ConvTcQ8Gather => "conv_tc_q8_gather",
            KernelSource::ConvTcQ8TransposeF16 => "conv_tc_q8_transpose_f16",
            KernelSource::ConvTcQ8TransposeBf16 => "conv_tc_q8_transpose_bf16",
            KernelSource::ConvTcTf32 => "conv_tc_tf32",
            KernelSource::ConvTcTf32Transpose => "conv_tc_tf32_transpose",
        }
    }

    /// File name inside `cuda/` (also the NVRTC program name, so compiler messages name it).
    pub fn file_name(&self) -> &'static str {
        match self {
            KernelSource::FakeQuant => "fakequant.cu",
            KernelSource::ConvF32 | KernelSource::ConvF16 | KernelSource::ConvBf16 => "conv.cu",
            KernelSource::ConvTransposeF32 | KernelSource::ConvTransposeF16 | KernelSource::ConvTransposeBf16 => {
                "conv_transpose.cu"
            }
            KernelSource::ConvTcF16
            | KernelSource::ConvTcBf16
            | KernelSource::ConvTcGather
            | KernelSource::ConvTcMisc
            | KernelSource::ConvTcTransposeF16
            | KernelSource::ConvTcTransposeBf16
            | KernelSource::ConvTcQ8F16
            | KernelSource::ConvTcQ8Bf16
            | KernelSource::ConvTcQ8Gather
            | KernelSource::ConvTcQ8TransposeF16
            | KernelSource::ConvTcQ8TransposeBf16
            | KernelSource::ConvTcTf32
            | KernelSource::ConvTcTf32Transpose => "conv_tc.cu",
        }
    }

    /// The source text, embedded at build time.
    pub fn source(&self) -> &'static str {
        match self.file_name() {
            "fakequant.cu" => include_str!("../../cuda/fakequant.cu"),
            "conv.cu" => include_str!("../../cuda/conv.cu"),
            "conv_transpose.cu" => include_str!("../../cuda/conv_transpose.cu"),
            _ => include_str!("../../cuda/conv_tc.cu"),
        }
    }

    /// Compiler options specific to this program, added after
    /// [`crate::cuda::nvrtc::BASE_OPTIONS`]: the `QC_PART` define that selects its entry points.
    pub fn options(&self) -> &'static [&'static str] {
        match self {
            KernelSource::FakeQuant => &[],
            KernelSource::ConvF32 | KernelSource::ConvTransposeF32 | KernelSource::ConvTcF16 => &["-DQC_PART=1"],
            KernelSource::ConvF16 | KernelSource::ConvTransposeF16 | KernelSource::ConvTcBf16 => &["-DQC_PART=2"],
            KernelSource::ConvBf16 | KernelSource::ConvTransposeBf16 | KernelSource::ConvTcGather => &["-DQC_PART=3"],
            KernelSource::ConvTcMisc => &["-DQC_PART=4"],
            KernelSource::ConvTcTransposeF16 => &["-DQC_PART=5"],
            KernelSource::ConvTcTransposeBf16 => &["-DQC_PART=6"],
            KernelSource::ConvTcQ8F16 => &["-DQC_PART=7"],
            KernelSource::ConvTcQ8Bf16 => &["-DQC_PART=8"],
            KernelSource::ConvTcQ8Gather => &["-DQC_PART=9"],
            KernelSource::ConvTcQ8TransposeF16 => &["-DQC_PART=10"],
            KernelSource::ConvTcQ8TransposeBf16 => &["-DQC_PART=11"],
            KernelSource::ConvTcTf32 => &["-DQC_PART=12"],
            KernelSource::ConvTcTf32Transpose => &["-DQC_PART=13"],
        }
    }

    /// The entry points this program defines.
    pub fn variants(&self) -> impl Iterator<Item = &'static KernelVariant> {
        let source = *self;
        all_variants().filter(move |v| v.source == source)
    }
}

impl fmt::Display for KernelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

impl FromStr for KernelSource {
    type Err = Error;
    /// Parses a short name (`"conv_f16"`, see [`KernelSource::name`]).
    fn from_str(s: &str) -> Result<Self> {
        KernelSource::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| Error::Parse {
            what: "kernel program",
            value: s.to_string(),
            expected: KernelSource::ALL.map(|k| k.name()).join(", "),
        })
    }
}

/// A tile configuration of the implicit-GEMM convolution (`QcTile` in `cuda/conv_igemm.cuh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvTile {
    /// 128×128 block tile, BK 8, 8×8 outputs per thread: large problems.
    T128,
    /// 64×64 block tile, BK 16, 4×4 outputs per thread: medium problems or few blocks.
    T64,
    /// 32×128 block tile, BK 8, 4×4 outputs per thread: few output channels per group.
    M32,
}

impl ConvTile {
    /// Every tile configuration.
    pub const ALL: [ConvTile; 3] = [ConvTile::T128, ConvTile::T64, ConvTile::M32];

    /// Rows of the block tile (output channels of a group), `BM`.
    pub fn bm(&self) -> u32 {
        match self {
            ConvTile::T128 => 128,
            ConvTile::T64 => 64,
            ConvTile::M32 => 32,
        }
    }

    /// Columns of the block tile (output positions), `BN`.
    pub fn bn(&self) -> u32 {
        match self {
            ConvTile::T128 | ConvTile::M32 => 128,
            ConvTile::T64 => 64,
        }
    }

    /// Depth of one reduction step (input channels per step), `BK`.
    pub fn bk(&self) -> u32 {
        match self {
            ConvTile::T128 | ConvTile::M32 => 8,
            ConvTile::T64 => 16,
        }
    }

    /// Threads per block (always 256).
    pub fn threads(&self) -> u32 {
        256
    }

    /// Shared memory of the A and B tiles in bytes (double buffered, A rows padded by `32 / BK`
    /// floats); the kernel adds a few dozen bytes for the phase's tap set (see ptxas' report).
    pub fn shared_bytes(&self) -> u32 {
        let (bm, bn, bk) = (self.bm(), self.bn(), self.bk());
        4 * 2 * bk * ((bm + 32 / bk) + bn)
    }

    /// Suffix of the entry names (`"t128"`, `"t64"`, `"m32"`).
    pub fn suffix(&self) -> &'static str {
        match self {
            ConvTile::T128 => "t128",
            ConvTile::T64 => "t64",
            ConvTile::M32 => "m32",
        }
    }
}

/// A block tile of the tensor-core convolution (`cuda/conv_tc.cu`): output positions × output
/// channels, reduction steps of 32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcTile {
    /// 128 positions × 128 channels, 8 warps of 64×32, 3 pipeline stages (48 KiB shared).
    T128x128,
    /// 128 positions × 64 channels, 4 warps of 64×32, 4 stages (48 KiB shared).
    T128x64,
    /// 64 positions × 64 channels, 4 warps of 32×32, 4 stages (32 KiB shared).
    T64x64,
    /// 128 × 64 with the element-wise input loader: any `C/groups` (e.g. a 3-channel stem).
    Gather128x64,
}

impl TcTile {
    /// Every tensor-core tile.
    pub const ALL: [TcTile; 4] = [TcTile::T128x128, TcTile::T128x64, TcTile::T64x64, TcTile::Gather128x64];

    /// Output positions per block (GEMM M).
    pub fn bm(&self) -> u32 {
        match self {
            TcTile::T128x128 | TcTile::T128x64 | TcTile::Gather128x64 => 128,
            TcTile::T64x64 => 64,
        }
    }

    /// Output channels per block (GEMM N).
    pub fn bn(&self) -> u32 {
        match self {
            TcTile::T128x128 => 128,
            TcTile::T128x64 | TcTile::T64x64 | TcTile::Gather128x64 => 64,
        }
    }

    /// `true` for the tiles that load the input in 16-byte channel vectors (`C/groups` a
    /// multiple of 8); `false` for the element-wise loader.
    pub fn vector_loads(&self) -> bool {
        *self != TcTile::Gather128x64
    }

    /// Threads per block.
    pub fn threads(&self) -> u32 {
        match self {
            TcTile::T128x128 => 256,
            TcTile::T128x64 | TcTile::T64x64 | TcTile::Gather128x64 => 128,
        }
    }

    /// Static shared memory in bytes (stages × (BM + BN) × 32 halves).
    pub fn shared_bytes(&self) -> u32 {
        let stages = if *self == TcTile::T128x128 { 3 } else { 4 };
        stages * (self.bm() + self.bn()) * 32 * 2
    }

    /// Suffix of the entry names (`"128x128"`, ...).
    pub fn suffix(&self) -> &'static str {
        match self {
            TcTile::T128x128 => "128x128",
            TcTile::T128x64 => "128x64",
            TcTile::T64x64 => "64x64",
            TcTile::Gather128x64 => "gather",
        }
    }
}

/// How a convolution is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvAlgo {
    /// Tiled implicit GEMM with the given tile.
    Tiled(ConvTile),
    /// Direct kernel: one thread per 4 consecutive outputs along W (depthwise, small `C/groups`).
    Direct,
    /// Tensor-core implicit GEMM (f16/bf16, channels-last input, weight in the activation dtype).
    TensorCore(TcTile),
    /// Depthwise convolution on channels-last tensors (8 channels per thread, CUDA cores, f32
    /// weights packed `[taps][C]`).
    DepthwiseNhwc,
}

/// What a kernel entry point computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelKind {
    /// `qc_fakequant`: quantize then dequantize (`get_weight()`), optional codes.
    FakeQuant,
    /// `qc_quantize`: integer codes only (`get_quantized_weight()`).
    Quantize,
    /// A convolution (forward or transposed, see [`KernelVariant::transposed`]).
    Conv(ConvAlgo),
    /// A batched 2-d transpose of elements of this many bytes (2 or 4): the layout changes
    /// between NCHW and channels-last.
    Transpose(u32),
    /// The split-K reduction of the tensor-core kernels (sums the partials in order, adds the
    /// bias, rounds once).
    SplitKReduce,
    /// `qc_dequant_codes`: 8-bit weight codes and per-channel scales to a float32 weight.
    DequantCodes,
}

/// One kernel entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelVariant {
    /// The `extern "C"` symbol.
    pub name: &'static str,
    /// The program that defines it.
    pub source: KernelSource,
    /// What it computes.
    pub kind: KernelKind,
    /// Activation dtype (convolutions); `None` for the weight kernels (float32 weights).
    pub dtype: Option<DType>,
    /// Transposed convolution (gather form).
    pub transposed: bool,
    /// Tensor-core convolutions only: the entry reads the weight as 8-bit codes with a scale
    /// and zero point per output channel (`*_q8`), dequantizing while it loads.
    pub weight_codes: bool,
    /// The C++ template instantiation behind the entry point.
    pub instantiation: &'static str,
}

macro_rules! conv_variants {
    ($($name:literal, $src:ident, $tr:literal, $dt:ident, $algo:expr, $codes:literal, $inst:literal;)*) => {
        &[
            KernelVariant {
                name: "qc_fakequant",
                source: KernelSource::FakeQuant,
                kind: KernelKind::FakeQuant,
                dtype: None,
                transposed: false,
                weight_codes: false,
                instantiation: "qc_fq_dispatch<true>",
            },
            KernelVariant {
                name: "qc_quantize",
                source: KernelSource::FakeQuant,
                kind: KernelKind::Quantize,
                dtype: None,
                transposed: false,
                weight_codes: false,
                instantiation: "qc_fq_dispatch<false>",
            },
            KernelVariant {
                name: "qc_dequant_codes",
                source: KernelSource::FakeQuant,
                kind: KernelKind::DequantCodes,
                dtype: None,
                transposed: false,
                weight_codes: true,
                instantiation: "qc_dequant_codes",
            },
            $(KernelVariant {
                name: $name,
                source: KernelSource::$src,
                kind: KernelKind::Conv($algo),
                dtype: Some(DType::$dt),
                transposed: $tr,
                weight_codes: $codes,
                instantiation: $inst,
            },)*
        ]
    };
}

/// Every kernel variant, grouped by source.
pub static VARIANTS: &[KernelVariant] = conv_variants![
    "qc_conv_fwd_f32_t128", ConvF32, false, F32, ConvAlgo::Tiled(ConvTile::T128), false, "qc_igemm<float, QcTileT128, false>";
    "qc_conv_fwd_f32_t64", ConvF32, false, F32, ConvAlgo::Tiled(ConvTile::T64), false, "qc_igemm<float, QcTileT64, false>";
    "qc_conv_fwd_f32_m32", ConvF32, false, F32, ConvAlgo::Tiled(ConvTile::M32), false, "qc_igemm<float, QcTileM32, false>";
    "qc_conv_fwd_f16_t128", ConvF16, false, F16, ConvAlgo::Tiled(ConvTile::T128), false, "qc_igemm<qc_half, QcTileT128, false>";
    "qc_conv_fwd_f16_t64", ConvF16, false, F16, ConvAlgo::Tiled(ConvTile::T64), false, "qc_igemm<qc_half, QcTileT64, false>";
    "qc_conv_fwd_f16_m32", ConvF16, false, F16, ConvAlgo::Tiled(ConvTile::M32), false, "qc_igemm<qc_half, QcTileM32, false>";
    "qc_conv_fwd_bf16_t128", ConvBf16, false, BF16, ConvAlgo::Tiled(ConvTile::T128), false, "qc_igemm<qc_bf16, QcTileT128, false>";
    "qc_conv_fwd_bf16_t64", ConvBf16, false, BF16, ConvAlgo::Tiled(ConvTile::T64), false, "qc_igemm<qc_bf16, QcTileT64, false>";
    "qc_conv_fwd_bf16_m32", ConvBf16, false, BF16, ConvAlgo::Tiled(ConvTile::M32), false, "qc_igemm<qc_bf16, QcTileM32, false>";
    "qc_conv_fwd_f32_direct", ConvF32, false, F32, ConvAlgo::Direct, false, "qc_conv_direct<float, false>";
    "qc_conv_fwd_f16_direct", ConvF16, false, F16, ConvAlgo::Direct, false, "qc_conv_direct<qc_half, false>";
    "qc_conv_fwd_bf16_direct", ConvBf16, false, BF16, ConvAlgo::Direct, false, "qc_conv_direct<qc_bf16, false>";
    "qc_conv_tr_f32_t128", ConvTransposeF32, true, F32, ConvAlgo::Tiled(ConvTile::T128), false, "qc_igemm<float, QcTileT128, true>";
    "qc_conv_tr_f32_t64", ConvTransposeF32, true, F32, ConvAlgo::Tiled(ConvTile::T64), false, "qc_igemm<float, QcTileT64, true>";
    "qc_conv_tr_f32_m32", ConvTransposeF32, true, F32, ConvAlgo::Tiled(ConvTile::M32), false, "qc_igemm<float, QcTileM32, true>";
    "qc_conv_tr_f16_t128", ConvTransposeF16, true, F16, ConvAlgo::Tiled(ConvTile::T128), false, "qc_igemm<qc_half, QcTileT128, true>";
    "qc_conv_tr_f16_t64", ConvTransposeF16, true, F16, ConvAlgo::Tiled(ConvTile::T64), false, "qc_igemm<qc_half, QcTileT64, true>";
    "qc_conv_tr_f16_m32", ConvTransposeF16, true, F16, ConvAlgo::Tiled(ConvTile::M32), false, "qc_igemm<qc_half, QcTileM32, true>";
    "qc_conv_tr_bf16_t128", ConvTransposeBf16, true, BF16, ConvAlgo::Tiled(ConvTile::T128), false, "qc_igemm<qc_bf16, QcTileT128, true>";
    "qc_conv_tr_bf16_t64", ConvTransposeBf16, true, BF16, ConvAlgo::Tiled(ConvTile::T64), false, "qc_igemm<qc_bf16, QcTileT64, true>";
    "qc_conv_tr_bf16_m32", ConvTransposeBf16, true, BF16, ConvAlgo::Tiled(ConvTile::M32), false, "qc_igemm<qc_bf16, QcTileM32, true>";
    "qc_conv_tr_f32_direct", ConvTransposeF32, true, F32, ConvAlgo::Direct, false, "qc_conv_direct<float, true>";
    "qc_conv_tr_f16_direct", ConvTransposeF16, true, F16, ConvAlgo::Direct, false, "qc_conv_direct<qc_half, true>";
    "qc_conv_tr_bf16_direct", ConvTransposeBf16, true, BF16, ConvAlgo::Direct, false, "qc_conv_direct<qc_bf16, true>";
    "qc_conv_tc_f16_128x128", ConvTcF16, false, F16, ConvAlgo::TensorCore(TcTile::T128x128), false, "qc_conv_tc<qc_half, 128, 128, 2, 4, 3, true, false, false>";
    "qc_conv_tc_f16_128x64", ConvTcF16, false, F16, ConvAlgo::TensorCore(TcTile::T128x64), false, "qc_conv_tc<qc_half, 128, 64, 2, 2, 4, true, false, false>";
    "qc_conv_tc_f16_64x64", ConvTcF16, false, F16, ConvAlgo::TensorCore(TcTile::T64x64), false, "qc_conv_tc<qc_half, 64, 64, 2, 2, 4, true, false, false>";
    "qc_conv_tc_bf16_128x128", ConvTcBf16, false, BF16, ConvAlgo::TensorCore(TcTile::T128x128), false, "qc_conv_tc<qc_bf16, 128, 128, 2, 4, 3, true, false, false>";
    "qc_conv_tc_bf16_128x64", ConvTcBf16, false, BF16, ConvAlgo::TensorCore(TcTile::T128x64), false, "qc_conv_tc<qc_bf16, 128, 64, 2, 2, 4, true, false, false>";
    "qc_conv_tc_bf16_64x64", ConvTcBf16, false, BF16, ConvAlgo::TensorCore(TcTile::T64x64), false, "qc_conv_tc<qc_bf16, 64, 64, 2, 2, 4, true, false, false>";
    "qc_conv_tc_f16_gather", ConvTcGather, false, F16, ConvAlgo::TensorCore(TcTile::Gather128x64), false, "qc_conv_tc<qc_half, 128, 64, 2, 2, 4, false, false, false>";
    "qc_conv_tc_bf16_gather", ConvTcGather, false, BF16, ConvAlgo::TensorCore(TcTile::Gather128x64), false, "qc_conv_tc<qc_bf16, 128, 64, 2, 2, 4, false, false, false>";
    "qc_conv_tc_tr_f16_128x128", ConvTcTransposeF16, true, F16, ConvAlgo::TensorCore(TcTile::T128x128), false, "qc_conv_tc<qc_half, 128, 128, 2, 4, 3, true, true, false>";
    "qc_conv_tc_tr_f16_64x64", ConvTcTransposeF16, true, F16, ConvAlgo::TensorCore(TcTile::T64x64), false, "qc_conv_tc<qc_half, 64, 64, 2, 2, 4, true, true, false>";
    "qc_conv_tc_tr_bf16_128x128", ConvTcTransposeBf16, true, BF16, ConvAlgo::TensorCore(TcTile::T128x128), false, "qc_conv_tc<qc_bf16, 128, 128, 2, 4, 3, true, true, false>";
    "qc_conv_tc_tr_bf16_64x64", ConvTcTransposeBf16, true, BF16, ConvAlgo::TensorCore(TcTile::T64x64), false, "qc_conv_tc<qc_bf16, 64, 64, 2, 2, 4, true, true, false>";
    "qc_conv_tc_f16_128x128_q8", ConvTcQ8F16, false, F16, ConvAlgo::TensorCore(TcTile::T128x128), true, "qc_conv_tc<qc_half, 128, 128, 2, 4, 3, true, false, true>";
    "qc_conv_tc_f16_128x64_q8", ConvTcQ8F16, false, F16, ConvAlgo::TensorCore(TcTile::T128x64), true, "qc_conv_tc<qc_half, 128, 64, 2, 2, 4, true, false, true>";
    "qc_conv_tc_f16_64x64_q8", ConvTcQ8F16, false, F16, ConvAlgo::TensorCore(TcTile::T64x64), true, "qc_conv_tc<qc_half, 64, 64, 2, 2, 4, true, false, true>";
    "qc_conv_tc_bf16_128x128_q8", ConvTcQ8Bf16, false, BF16, ConvAlgo::TensorCore(TcTile::T128x128), true, "qc_conv_tc<qc_bf16, 128, 128, 2, 4, 3, true, false, true>";
    "qc_conv_tc_bf16_128x64_q8", ConvTcQ8Bf16, false, BF16, ConvAlgo::TensorCore(TcTile::T128x64), true, "qc_conv_tc<qc_bf16, 128, 64, 2, 2, 4, true, false, true>";
    "qc_conv_tc_bf16_64x64_q8", ConvTcQ8Bf16, false, BF16, ConvAlgo::TensorCore(TcTile::T64x64), true, "qc_conv_tc<qc_bf16, 64, 64, 2, 2, 4, true, false, true>";
    "qc_conv_tc_f16_gather_q8", ConvTcQ8Gather, false, F16, ConvAlgo::TensorCore(TcTile::Gather128x64), true, "qc_conv_tc<qc_half, 128, 64, 2, 2, 4, false, false, true>";
    "qc_conv_tc_bf16_gather_q8", ConvTcQ8Gather, false, BF16, ConvAlgo::TensorCore(TcTile::Gather128x64), true, "qc_conv_tc<qc_bf16, 128, 64, 2, 2, 4, false, false, true>";
    "qc_conv_tc_tr_f16_128x128_q8", ConvTcQ8TransposeF16, true, F16, ConvAlgo::TensorCore(TcTile::T128x128), true, "qc_conv_tc<qc_half, 128, 128, 2, 4, 3, true, true, true>";
    "qc_conv_tc_tr_f16_64x64_q8", ConvTcQ8TransposeF16, true, F16, ConvAlgo::TensorCore(TcTile::T64x64), true, "qc_conv_tc<qc_half, 64, 64, 2, 2, 4, true, true, true>";
    "qc_conv_tc_tr_bf16_128x128_q8", ConvTcQ8TransposeBf16, true, BF16, ConvAlgo::TensorCore(TcTile::T128x128), true, "qc_conv_tc<qc_bf16, 128, 128, 2, 4, 3, true, true, true>";
    "qc_conv_tc_tr_bf16_64x64_q8", ConvTcQ8TransposeBf16, true, BF16, ConvAlgo::TensorCore(TcTile::T64x64), true, "qc_conv_tc<qc_bf16, 64, 64, 2, 2, 4, true, true, true>";
    "qc_conv_tc_tf32_128x128", ConvTcTf32, false, F32, ConvAlgo::TensorCore(TcTile::T128x128), false, "qc_conv_tc<float, 128, 128, 2, 4, 3, true, false, false>";
    "qc_conv_tc_tf32_128x64", ConvTcTf32, false, F32, ConvAlgo::TensorCore(TcTile::T128x64), false, "qc_conv_tc<float, 128, 64, 2, 2, 4, true, false, false>";
    "qc_conv_tc_tf32_64x64", ConvTcTf32, false, F32, ConvAlgo::TensorCore(TcTile::T64x64), false, "qc_conv_tc<float, 64, 64, 2, 2, 4, true, false, false>";
    "qc_conv_tc_tr_tf32_128x128", ConvTcTf32Transpose, true, F32, ConvAlgo::TensorCore(TcTile::T128x128), false, "qc_conv_tc<float, 128, 128, 2, 4, 3, true, true, false>";
    "qc_conv_tc_tr_tf32_64x64", ConvTcTf32Transpose, true, F32, ConvAlgo::TensorCore(TcTile::T64x64), false, "qc_conv_tc<float, 64, 64, 2, 2, 4, true, true, false>";
    "qc_dw_nhwc_f32", ConvTcMisc, false, F32, ConvAlgo::DepthwiseNhwc, false, "qc_dw_nhwc<float>";
    "qc_dw_nhwc_f16", ConvTcMisc, false, F16, ConvAlgo::DepthwiseNhwc, false, "qc_dw_nhwc<qc_half>";
    "qc_dw_nhwc_bf16", ConvTcMisc, false, BF16, ConvAlgo::DepthwiseNhwc, false, "qc_dw_nhwc<qc_bf16>";
];

/// The layout kernels and the split-K reductions (`cuda/conv_tc.cu`).
pub static TRANSPOSE_VARIANTS: [KernelVariant; 5] = [
    KernelVariant {
        name: "qc_splitk_reduce_f16",
        source: KernelSource::ConvTcMisc,
        kind: KernelKind::SplitKReduce,
        dtype: Some(DType::F16),
        transposed: false,
        weight_codes: false,
        instantiation: "qc_splitk_reduce<qc_half>",
    },
    KernelVariant {
        name: "qc_splitk_reduce_bf16",
        source: KernelSource::ConvTcMisc,
        kind: KernelKind::SplitKReduce,
        dtype: Some(DType::BF16),
        transposed: false,
        weight_codes: false,
        instantiation: "qc_splitk_reduce<qc_bf16>",
    },
    KernelVariant {
        name: "qc_splitk_reduce_f32",
        source: KernelSource::ConvTcMisc,
        kind: KernelKind::SplitKReduce,
        dtype: Some(DType::F32),
        transposed: false,
        weight_codes: false,
        instantiation: "qc_splitk_reduce<float>",
    },
    KernelVariant {
        name: "qc_transpose_b16",
        source: KernelSource::ConvTcMisc,
        kind: KernelKind::Transpose(2),
        dtype: None,
        transposed: false,
        weight_codes: false,
        instantiation: "qc_transpose<unsigned short>",
    },
    KernelVariant {
        name: "qc_transpose_b32",
        source: KernelSource::ConvTcMisc,
        kind: KernelKind::Transpose(4),
        dtype: None,
        transposed: false,
        weight_codes: false,
        instantiation: "qc_transpose<unsigned int>",
    },
];

/// Every entry point: [`VARIANTS`] (weights and convolutions) then [`TRANSPOSE_VARIANTS`].
pub fn all_variants() -> impl Iterator<Item = &'static KernelVariant> {
    VARIANTS.iter().chain(TRANSPOSE_VARIANTS.iter())
}

/// Looks a variant up by its entry name.
pub fn variant(name: &str) -> Option<&'static KernelVariant> {
    all_variants().find(|v| v.name == name)
}

/// The convolution entry point for a direction, activation dtype and algorithm (reading the
/// weight in the activation dtype, or float32), or `None` where none exists (the tensor-core
/// kernels: f16/bf16 only, transposed with the 128×128 and 64×64 tiles).
pub fn conv_variant(transposed: bool, dtype: DType, algo: ConvAlgo) -> Option<&'static KernelVariant> {
    VARIANTS.iter().find(|v| {
        v.transposed == transposed && v.dtype == Some(dtype) && v.kind == KernelKind::Conv(algo) && !v.weight_codes
    })
}

/// The tensor-core entry point that reads 8-bit weight codes (`*_q8`) for a direction,
/// activation dtype and tile, or `None` where [`conv_variant`] has no tensor-core entry either.
pub fn conv_variant_codes(transposed: bool, dtype: DType, tile: TcTile) -> Option<&'static KernelVariant> {
    VARIANTS.iter().find(|v| {
        v.transposed == transposed
            && v.dtype == Some(dtype)
            && v.kind == KernelKind::Conv(ConvAlgo::TensorCore(tile))
            && v.weight_codes
    })
}

/// `qc_dequant_codes` (always listed; `Option` so that callers handle a missing entry as an
/// error rather than a panic).
pub fn dequant_codes_variant() -> Option<&'static KernelVariant> {
    VARIANTS.iter().find(|v| v.kind == KernelKind::DequantCodes)
}

/// The split-K reduction for `dtype` (f16, bf16, or f32 for the TF32 tiles).
pub fn splitk_reduce_variant(dtype: DType) -> Option<&'static KernelVariant> {
    TRANSPOSE_VARIANTS.iter().find(|v| v.kind == KernelKind::SplitKReduce && v.dtype == Some(dtype))
}

/// The layout kernel for elements of `bytes` bytes (2 or 4).
pub fn transpose_variant(bytes: u32) -> Option<&'static KernelVariant> {
    TRANSPOSE_VARIANTS.iter().find(|v| v.kind == KernelKind::Transpose(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_defined_in_their_source() {
        let mut seen = HashSet::new();
        for v in all_variants() {
            assert!(seen.insert(v.name), "duplicate variant {}", v.name);
            let needle = format!("{}(", v.name);
            let defined = v.source.source().contains(&needle) || v.source.source().contains(&format!("({},", v.name));
            assert!(defined, "{} is not defined in {}", v.name, v.source.file_name());
        }
    }

    #[test]
    fn every_conv_combination_exists() {
        for transposed in [false, true] {
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                for algo in ConvTile::ALL.map(ConvAlgo::Tiled).into_iter().chain([ConvAlgo::Direct]) {
                    let v = conv_variant(transposed, dtype, algo).unwrap();
                    assert_eq!(v.source.file_name(), if transposed { "conv_transpose.cu" } else { "conv.cu" });
                }
                for tile in TcTile::ALL {
                    let v = conv_variant(transposed, dtype, ConvAlgo::TensorCore(tile));
                    // f32: the TF32 tiles (vector loads only).
                    let exists = (dtype != DType::F32 || tile != TcTile::Gather128x64)
                        && (!transposed || matches!(tile, TcTile::T128x128 | TcTile::T64x64));
                    assert_eq!(v.is_some(), exists, "{transposed} {dtype} {tile:?}");
                    if let Some(v) = v {
                        assert_eq!(v.source.file_name(), "conv_tc.cu");
                        assert!(v.name.ends_with(tile.suffix()));
                    }
                }
            }
        }
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            assert_eq!(conv_variant(false, dtype, ConvAlgo::DepthwiseNhwc).unwrap().source, KernelSource::ConvTcMisc);
            assert!(conv_variant(true, dtype, ConvAlgo::DepthwiseNhwc).is_none());
        }
        for transposed in [false, true] {
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                for tile in TcTile::ALL {
                    let plain = conv_variant(transposed, dtype, ConvAlgo::TensorCore(tile));
                    let codes = conv_variant_codes(transposed, dtype, tile);
                    assert_eq!(
                        plain.is_some() && dtype != DType::F32,
                        codes.is_some(),
                        "{transposed} {dtype} {tile:?}"
                    );
                    if let (Some(p), Some(c)) = (plain, codes) {
                        assert!(c.weight_codes && !p.weight_codes);
                        assert_eq!(c.name, format!("{}_q8", p.name));
                        assert_eq!(c.instantiation.strip_suffix(", true>"), p.instantiation.strip_suffix(", false>"));
                    }
                }
            }
        }
        assert_eq!(dequant_codes_variant().unwrap().source, KernelSource::FakeQuant);
        assert_eq!(VARIANTS.len(), 3 + 2 * 3 * 4 + 2 * 4 + 2 * 2 * 2 + 2 * 2 * 2 + 5 + 3);
        assert_eq!(transpose_variant(2).unwrap().name, "qc_transpose_b16");
        assert_eq!(transpose_variant(4).unwrap().name, "qc_transpose_b32");
        assert!(transpose_variant(8).is_none());
        assert_eq!(splitk_reduce_variant(DType::BF16).unwrap().name, "qc_splitk_reduce_bf16");
        assert_eq!(splitk_reduce_variant(DType::F32).unwrap().name, "qc_splitk_reduce_f32");
    }

    #[test]
    fn sources_parse_and_include_only_known_headers() {
        for s in KernelSource::ALL {
            assert_eq!(s.name().parse::<KernelSource>().unwrap(), s);
            for text in std::iter::once(s.source()).chain(HEADERS.iter().map(|h| h.1)) {
                // params.h includes <stdint.h> for host compilers (bindgen) only.
                let includes =
                    text.lines().filter(|l| l.trim_start().starts_with("#include") && !l.contains("<stdint.h>"));
                for line in includes {
                    assert!(HEADERS.iter().any(|(name, _)| line.contains(&format!("\"{name}\""))), "{line}");
                }
            }
        }
        assert!("nope".parse::<KernelSource>().is_err());
    }

    #[test]
    fn shared_memory_formula_matches_the_tiles() {
        assert_eq!(ConvTile::T128.shared_bytes(), 16640);
        assert_eq!(ConvTile::T64.shared_bytes(), 16640);
        assert_eq!(ConvTile::M32.shared_bytes(), 10496);
        assert_eq!(TcTile::T128x128.shared_bytes(), 49152);
        assert_eq!(TcTile::T128x64.shared_bytes(), 49152);
        assert_eq!(TcTile::T64x64.shared_bytes(), 32768);
        assert_eq!(TcTile::Gather128x64.shared_bytes(), 49152);
    }
}
