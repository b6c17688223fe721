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

use crate::dtype::DType;
use crate::error::{Error, Result};

/// The headers every kernel source may include, as `(include name, contents)`; passed to NVRTC
/// as named headers (no file system access at compile time).
pub const HEADERS: &[(&str, &str)] = &[
    ("params.h", include_str!("../../cuda/params.h")),
    ("common.cuh", include_str!("../../cuda/common.cuh")),
    ("conv_igemm.cuh", include_str!("../../cuda/conv_igemm.cuh")),
];

macro_rules! kernel_sources {
    ($($(#[doc = $doc:literal])* $var:ident = ($name:literal, $file:literal, $define:literal);)*) => {
        /// One NVRTC program: one part of a source file of `cuda/`, selected by a `QC_PART`
        /// define. Each tensor-core tile is a program of its own and the CUDA-core kernels come
        /// two to a program, so that the programs are small, compile in parallel, and the longest
        /// one bounds a cold compilation of everything. Each program is compiled once per
        /// architecture into one CUBIN holding all of its entry points.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum KernelSource {
            $($(#[doc = $doc])* $var,)*
        }

        impl KernelSource {
            /// Number of programs.
            pub const COUNT: usize = [$(KernelSource::$var),*].len();

            /// Every program, in a fixed order.
            pub const ALL: [KernelSource; KernelSource::COUNT] = [$(KernelSource::$var),*];

            /// Short name (`"fakequant"`, `"conv_f32_t128_m32"`, …, `"conv_tc_misc"`), used in
            /// cache file names.
            pub fn name(&self) -> &'static str {
                match self {
                    $(KernelSource::$var => $name,)*
                }
            }

            /// File name inside `cuda/` (also the NVRTC program name, so compiler messages name
            /// it).
            pub fn file_name(&self) -> &'static str {
                match self {
                    $(KernelSource::$var => $file,)*
                }
            }

            /// Compiler options specific to this program, added after
            /// [`crate::cuda::nvrtc::BASE_OPTIONS`]: the `QC_PART` define that selects its entry
            /// points.
            pub fn options(&self) -> &'static [&'static str] {
                match self {
                    $(KernelSource::$var => &[$define],)*
                }
            }
        }
    };
}

kernel_sources! {
    /// `cuda/fakequant.cu`: the fake-quant kernel and the 8-bit code expansion.
    FakeQuant = ("fakequant", "fakequant.cu", "-DQC_PART=1");
    /// `cuda/fakequant.cu`: the quantize-only kernel (`get_quantized_weight()`).
    Quantize = ("quantize", "fakequant.cu", "-DQC_PART=2");
    /// `cuda/conv.cu`, f32 activations: the 128×128 and 32×128 tiles.
    ConvF32T128M32 = ("conv_f32_t128_m32", "conv.cu", "-DQC_PART=1");
    /// `cuda/conv.cu`, f32 activations: the 64×64 tile and the direct kernel.
    ConvF32T64Direct = ("conv_f32_t64_direct", "conv.cu", "-DQC_PART=2");
    /// `cuda/conv.cu`, f16 activations: the 128×128 and 32×128 tiles.
    ConvF16T128M32 = ("conv_f16_t128_m32", "conv.cu", "-DQC_PART=3");
    /// `cuda/conv.cu`, f16 activations: the 64×64 tile and the direct kernel.
    ConvF16T64Direct = ("conv_f16_t64_direct", "conv.cu", "-DQC_PART=4");
    /// `cuda/conv.cu`, bf16 activations: the 128×128 and 32×128 tiles.
    ConvBf16T128M32 = ("conv_bf16_t128_m32", "conv.cu", "-DQC_PART=5");
    /// `cuda/conv.cu`, bf16 activations: the 64×64 tile and the direct kernel.
    ConvBf16T64Direct = ("conv_bf16_t64_direct", "conv.cu", "-DQC_PART=6");
    /// `cuda/conv_transpose.cu`, f32 activations: the 128×128 and 32×128 tiles.
    ConvTransposeF32T128M32 = ("conv_transpose_f32_t128_m32", "conv_transpose.cu", "-DQC_PART=1");
    /// `cuda/conv_transpose.cu`, f32 activations: the 64×64 tile and the direct kernel.
    ConvTransposeF32T64Direct = ("conv_transpose_f32_t64_direct", "conv_transpose.cu", "-DQC_PART=2");
    /// `cuda/conv_transpose.cu`, f16 activations: the 128×128 and 32×128 tiles.
    ConvTransposeF16T128M32 = ("conv_transpose_f16_t128_m32", "conv_transpose.cu", "-DQC_PART=3");
    /// `cuda/conv_transpose.cu`, f16 activations: the 64×64 tile and the direct kernel.
    ConvTransposeF16T64Direct = ("conv_transpose_f16_t64_direct", "conv_transpose.cu", "-DQC_PART=4");
    /// `cuda/conv_transpose.cu`, bf16 activations: the 128×128 and 32×128 tiles.
    ConvTransposeBf16T128M32 = ("conv_transpose_bf16_t128_m32", "conv_transpose.cu", "-DQC_PART=5");
    /// `cuda/conv_transpose.cu`, bf16 activations: the 64×64 tile and the direct kernel.
    ConvTransposeBf16T64Direct = ("conv_transpose_bf16_t64_direct", "conv_transpose.cu", "-DQC_PART=6");
    /// `cuda/conv_tc.cu`: the tensor-core 128×128 tile, f16.
    ConvTcF16T128x128 = ("conv_tc_f16_128x128", "conv_tc.cu", "-DQC_PART=1");
    /// `cuda/conv_tc.cu`: the tensor-core 128×64 tile, f16.
    ConvTcF16T128x64 = ("conv_tc_f16_128x64", "conv_tc.cu", "-DQC_PART=2");
    /// `cuda/conv_tc.cu`: the tensor-core 64×64 tile, f16.
    ConvTcF16T64x64 = ("conv_tc_f16_64x64", "conv_tc.cu", "-DQC_PART=3");
    /// `cuda/conv_tc.cu`: the tensor-core 128×128 tile, bf16.
    ConvTcBf16T128x128 = ("conv_tc_bf16_128x128", "conv_tc.cu", "-DQC_PART=4");
    /// `cuda/conv_tc.cu`: the tensor-core 128×64 tile, bf16.
    ConvTcBf16T128x64 = ("conv_tc_bf16_128x64", "conv_tc.cu", "-DQC_PART=5");
    /// `cuda/conv_tc.cu`: the tensor-core 64×64 tile, bf16.
    ConvTcBf16T64x64 = ("conv_tc_bf16_64x64", "conv_tc.cu", "-DQC_PART=6");
    /// `cuda/conv_tc.cu`: the tensor-core 128×64 tile with the element-wise input loader, f16.
    ConvTcF16Gather = ("conv_tc_f16_gather", "conv_tc.cu", "-DQC_PART=7");
    /// `cuda/conv_tc.cu`: the tensor-core 128×64 tile with the element-wise input loader, bf16.
    ConvTcBf16Gather = ("conv_tc_bf16_gather", "conv_tc.cu", "-DQC_PART=8");
    /// `cuda/conv_tc.cu`: the tensor-core transposed 128×128 tile, f16.
    ConvTcTrF16T128x128 = ("conv_tc_tr_f16_128x128", "conv_tc.cu", "-DQC_PART=9");
    /// `cuda/conv_tc.cu`: the tensor-core transposed 64×64 tile, f16.
    ConvTcTrF16T64x64 = ("conv_tc_tr_f16_64x64", "conv_tc.cu", "-DQC_PART=10");
    /// `cuda/conv_tc.cu`: the tensor-core transposed 128×128 tile, bf16.
    ConvTcTrBf16T128x128 = ("conv_tc_tr_bf16_128x128", "conv_tc.cu", "-DQC_PART=11");
    /// `cuda/conv_tc.cu`: the tensor-core transposed 64×64 tile, bf16.
    ConvTcTrBf16T64x64 = ("conv_tc_tr_bf16_64x64", "conv_tc.cu", "-DQC_PART=12");
    /// `cuda/conv_tc.cu`: the tensor-core 128×128 tile, f16, reading 8-bit weight codes.
    ConvTcQ8F16T128x128 = ("conv_tc_f16_128x128_q8", "conv_tc.cu", "-DQC_PART=13");
    /// `cuda/conv_tc.cu`: the tensor-core 128×64 tile, f16, reading 8-bit weight codes.
    ConvTcQ8F16T128x64 = ("conv_tc_f16_128x64_q8", "conv_tc.cu", "-DQC_PART=14");
    /// `cuda/conv_tc.cu`: the tensor-core 64×64 tile, f16, reading 8-bit weight codes.
    ConvTcQ8F16T64x64 = ("conv_tc_f16_64x64_q8", "conv_tc.cu", "-DQC_PART=15");
    /// `cuda/conv_tc.cu`: the tensor-core 128×128 tile, bf16, reading 8-bit weight codes.
    ConvTcQ8Bf16T128x128 = ("conv_tc_bf16_128x128_q8", "conv_tc.cu", "-DQC_PART=16");
    /// `cuda/conv_tc.cu`: the tensor-core 128×64 tile, bf16, reading 8-bit weight codes.
    ConvTcQ8Bf16T128x64 = ("conv_tc_bf16_128x64_q8", "conv_tc.cu", "-DQC_PART=17");
    /// `cuda/conv_tc.cu`: the tensor-core 64×64 tile, bf16, reading 8-bit weight codes.
    ConvTcQ8Bf16T64x64 = ("conv_tc_bf16_64x64_q8", "conv_tc.cu", "-DQC_PART=18");
    /// `cuda/conv_tc.cu`: the tensor-core 128×64 tile with the element-wise input loader, f16, reading 8-bit weight codes.
    ConvTcQ8F16Gather = ("conv_tc_f16_gather_q8", "conv_tc.cu", "-DQC_PART=19");
    /// `cuda/conv_tc.cu`: the tensor-core 128×64 tile with the element-wise input loader, bf16, reading 8-bit weight codes.
    ConvTcQ8Bf16Gather = ("conv_tc_bf16_gather_q8", "conv_tc.cu", "-DQC_PART=20");
    /// `cuda/conv_tc.cu`: the tensor-core transposed 128×128 tile, f16, reading 8-bit weight codes.
    ConvTcQ8TrF16T128x128 = ("conv_tc_tr_f16_128x128_q8", "conv_tc.cu", "-DQC_PART=21");
    /// `cuda/conv_tc.cu`: the tensor-core transposed 64×64 tile, f16, reading 8-bit weight codes.
    ConvTcQ8TrF16T64x64 = ("conv_tc_tr_f16_64x64_q8", "conv_tc.cu", "-DQC_PART=22");
    /// `cuda/conv_tc.cu`: the tensor-core transposed 128×128 tile, bf16, reading 8-bit weight codes.
    ConvTcQ8TrBf16T128x128 = ("conv_tc_tr_bf16_128x128_q8", "conv_tc.cu", "-DQC_PART=23");
    /// `cuda/conv_tc.cu`: the tensor-core transposed 64×64 tile, bf16, reading 8-bit weight codes.
    ConvTcQ8TrBf16T64x64 = ("conv_tc_tr_bf16_64x64_q8", "conv_tc.cu", "-DQC_PART=24");
    /// `cuda/conv_tc.cu`: the TF32 tensor-core 128×128 tile.
    ConvTcTf32T128x128 = ("conv_tc_tf32_128x128", "conv_tc.cu", "-DQC_PART=25");
    /// `cuda/conv_tc.cu`: the TF32 tensor-core 128×64 tile.
    ConvTcTf32T128x64 = ("conv_tc_tf32_128x64", "conv_tc.cu", "-DQC_PART=26");
    /// `cuda/conv_tc.cu`: the TF32 tensor-core 64×64 tile.
    ConvTcTf32T64x64 = ("conv_tc_tf32_64x64", "conv_tc.cu", "-DQC_PART=27");
    /// `cuda/conv_tc.cu`: the TF32 tensor-core transposed 128×128 tile.
    ConvTcTrTf32T128x128 = ("conv_tc_tr_tf32_128x128", "conv_tc.cu", "-DQC_PART=28");
    /// `cuda/conv_tc.cu`: the TF32 tensor-core transposed 64×64 tile.
    ConvTcTrTf32T64x64 = ("conv_tc_tr_tf32_64x64", "conv_tc.cu", "-DQC_PART=29");
    /// `cuda/conv_tc.cu`: the channels-last depthwise kernels, the layout transposes and the split-K reductions.
    ConvTcMisc = ("conv_tc_misc", "conv_tc.cu", "-DQC_PART=30");
}

impl KernelSource {
    /// The source text, embedded at build time.
    pub fn source(&self) -> &'static str {
        match self.file_name() {
            "fakequant.cu" => include_str!("../../cuda/fakequant.cu"),
            "conv.cu" => include_str!("../../cuda/conv.cu"),
            "conv_transpose.cu" => include_str!("../../cuda/conv_transpose.cu"),
            _ => include_str!("../../cuda/conv_tc.cu"),
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
    /// `qc_fakequant_fast`: [`FakeQuant`](KernelKind::FakeQuant) for the integer modes when the
    /// host has checked that every channel takes the f32 fast path (fewer registers, more bytes
    /// in flight).
    FakeQuantFast,
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
    /// Channel padding of elements of this many bytes (2 or 4) for the tensor-core tiles
    /// (`qc_pad_channels_b16` / `_b32`).
    PadChannels(u32),
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
                name: "qc_fakequant_fast",
                source: KernelSource::FakeQuant,
                kind: KernelKind::FakeQuantFast,
                dtype: None,
                transposed: false,
                weight_codes: false,
                instantiation: "qc_fq_fast_entry<QC_FQ_INT_PER_TENSOR | QC_FQ_INT_PER_CHANNEL>",
            },
            KernelVariant {
                name: "qc_quantize",
                source: KernelSource::Quantize,
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
    "qc_conv_fwd_f32_t128", ConvF32T128M32, false, F32, ConvAlgo::Tiled(ConvTile::T128), false, "qc_igemm<float, QcTileT128, false>";
    "qc_conv_fwd_f32_t64", ConvF32T64Direct, false, F32, ConvAlgo::Tiled(ConvTile::T64), false, "qc_igemm<float, QcTileT64, false>";
    "qc_conv_fwd_f32_m32", ConvF32T128M32, false, F32, ConvAlgo::Tiled(ConvTile::M32), false, "qc_igemm<float, QcTileM32, false>";
    "qc_conv_fwd_f16_t128", ConvF16T128M32, false, F16, ConvAlgo::Tiled(ConvTile::T128), false, "qc_igemm<qc_half, QcTileT128, false>";
    "qc_conv_fwd_f16_t64", ConvF16T64Direct, false, F16, ConvAlgo::Tiled(ConvTile::T64), false, "qc_igemm<qc_half, QcTileT64, false>";
    "qc_conv_fwd_f16_m32", ConvF16T128M32, false, F16, ConvAlgo::Tiled(ConvTile::M32), false, "qc_igemm<qc_half, QcTileM32, false>";
    "qc_conv_fwd_bf16_t128", ConvBf16T128M32, false, BF16, ConvAlgo::Tiled(ConvTile::T128), false, "qc_igemm<qc_bf16, QcTileT128, false>";
    "qc_conv_fwd_bf16_t64", ConvBf16T64Direct, false, BF16, ConvAlgo::Tiled(ConvTile::T64), false, "qc_igemm<qc_bf16, QcTileT64, false>";
    "qc_conv_fwd_bf16_m32", ConvBf16T128M32, false, BF16, ConvAlgo::Tiled(ConvTile::M32), false, "qc_igemm<qc_bf16, QcTileM32, false>";
    "qc_conv_fwd_f32_direct", ConvF32T64Direct, false, F32, ConvAlgo::Direct, false, "qc_conv_direct<float, false>";
    "qc_conv_fwd_f16_direct", ConvF16T64Direct, false, F16, ConvAlgo::Direct, false, "qc_conv_direct<qc_half, false>";
    "qc_conv_fwd_bf16_direct", ConvBf16T64Direct, false, BF16, ConvAlgo::Direct, false, "qc_conv_direct<qc_bf16, false>";
    "qc_conv_tr_f32_t128", ConvTransposeF32T128M32, true, F32, ConvAlgo::Tiled(ConvTile::T128), false, "qc_igemm<float, QcTileT128, true>";
    "qc_conv_tr_f32_t64", ConvTransposeF32T64Direct, true, F32, ConvAlgo::Tiled(ConvTile::T64), false, "qc_igemm<float, QcTileT64, true>";
    "qc_conv_tr_f32_m32", ConvTransposeF32T128M32, true, F32, ConvAlgo::Tiled(ConvTile::M32), false, "qc_igemm<float, QcTileM32, true>";
    "qc_conv_tr_f16_t128", ConvTransposeF16T128M32, true, F16, ConvAlgo::Tiled(ConvTile::T128), false, "qc_igemm<qc_half, QcTileT128, true>";
    "qc_conv_tr_f16_t64", ConvTransposeF16T64Direct, true, F16, ConvAlgo::Tiled(ConvTile::T64), false, "qc_igemm<qc_half, QcTileT64, true>";
    "qc_conv_tr_f16_m32", ConvTransposeF16T128M32, true, F16, ConvAlgo::Tiled(ConvTile::M32), false, "qc_igemm<qc_half, QcTileM32, true>";
    "qc_conv_tr_bf16_t128", ConvTransposeBf16T128M32, true, BF16, ConvAlgo::Tiled(ConvTile::T128), false, "qc_igemm<qc_bf16, QcTileT128, true>";
    "qc_conv_tr_bf16_t64", ConvTransposeBf16T64Direct, true, BF16, ConvAlgo::Tiled(ConvTile::T64), false, "qc_igemm<qc_bf16, QcTileT64, true>";
    "qc_conv_tr_bf16_m32", ConvTransposeBf16T128M32, true, BF16, ConvAlgo::Tiled(ConvTile::M32), false, "qc_igemm<qc_bf16, QcTileM32, true>";
    "qc_conv_tr_f32_direct", ConvTransposeF32T64Direct, true, F32, ConvAlgo::Direct, false, "qc_conv_direct<float, true>";
    "qc_conv_tr_f16_direct", ConvTransposeF16T64Direct, true, F16, ConvAlgo::Direct, false, "qc_conv_direct<qc_half, true>";
    "qc_conv_tr_bf16_direct", ConvTransposeBf16T64Direct, true, BF16, ConvAlgo::Direct, false, "qc_conv_direct<qc_bf16, true>";
    "qc_conv_tc_f16_128x128", ConvTcF16T128x128, false, F16, ConvAlgo::TensorCore(TcTile::T128x128), false, "qc_conv_tc<qc_half, 128, 128, 2, 4, 3, true, false, false>";
    "qc_conv_tc_f16_128x64", ConvTcF16T128x64, false, F16, ConvAlgo::TensorCore(TcTile::T128x64), false, "qc_conv_tc<qc_half, 128, 64, 2, 2, 4, true, false, false>";
    "qc_conv_tc_f16_64x64", ConvTcF16T64x64, false, F16, ConvAlgo::TensorCore(TcTile::T64x64), false, "qc_conv_tc<qc_half, 64, 64, 2, 2, 4, true, false, false>";
    "qc_conv_tc_bf16_128x128", ConvTcBf16T128x128, false, BF16, ConvAlgo::TensorCore(TcTile::T128x128), false, "qc_conv_tc<qc_bf16, 128, 128, 2, 4, 3, true, false, false>";
    "qc_conv_tc_bf16_128x64", ConvTcBf16T128x64, false, BF16, ConvAlgo::TensorCore(TcTile::T128x64), false, "qc_conv_tc<qc_bf16, 128, 64, 2, 2, 4, true, false, false>";
    "qc_conv_tc_bf16_64x64", ConvTcBf16T64x64, false, BF16, ConvAlgo::TensorCore(TcTile::T64x64), false, "qc_conv_tc<qc_bf16, 64, 64, 2, 2, 4, true, false, false>";
    "qc_conv_tc_f16_gather", ConvTcF16Gather, false, F16, ConvAlgo::TensorCore(TcTile::Gather128x64), false, "qc_conv_tc<qc_half, 128, 64, 2, 2, 4, false, false, false>";
    "qc_conv_tc_bf16_gather", ConvTcBf16Gather, false, BF16, ConvAlgo::TensorCore(TcTile::Gather128x64), false, "qc_conv_tc<qc_bf16, 128, 64, 2, 2, 4, false, false, false>";
    "qc_conv_tc_tr_f16_128x128", ConvTcTrF16T128x128, true, F16, ConvAlgo::TensorCore(TcTile::T128x128), false, "qc_conv_tc<qc_half, 128, 128, 2, 4, 3, true, true, false>";
    "qc_conv_tc_tr_f16_64x64", ConvTcTrF16T64x64, true, F16, ConvAlgo::TensorCore(TcTile::T64x64), false, "qc_conv_tc<qc_half, 64, 64, 2, 2, 4, true, true, false>";
    "qc_conv_tc_tr_bf16_128x128", ConvTcTrBf16T128x128, true, BF16, ConvAlgo::TensorCore(TcTile::T128x128), false, "qc_conv_tc<qc_bf16, 128, 128, 2, 4, 3, true, true, false>";
    "qc_conv_tc_tr_bf16_64x64", ConvTcTrBf16T64x64, true, BF16, ConvAlgo::TensorCore(TcTile::T64x64), false, "qc_conv_tc<qc_bf16, 64, 64, 2, 2, 4, true, true, false>";
    "qc_conv_tc_f16_128x128_q8", ConvTcQ8F16T128x128, false, F16, ConvAlgo::TensorCore(TcTile::T128x128), true, "qc_conv_tc<qc_half, 128, 128, 2, 4, 3, true, false, true>";
    "qc_conv_tc_f16_128x64_q8", ConvTcQ8F16T128x64, false, F16, ConvAlgo::TensorCore(TcTile::T128x64), true, "qc_conv_tc<qc_half, 128, 64, 2, 2, 4, true, false, true>";
    "qc_conv_tc_f16_64x64_q8", ConvTcQ8F16T64x64, false, F16, ConvAlgo::TensorCore(TcTile::T64x64), true, "qc_conv_tc<qc_half, 64, 64, 2, 2, 4, true, false, true>";
    "qc_conv_tc_bf16_128x128_q8", ConvTcQ8Bf16T128x128, false, BF16, ConvAlgo::TensorCore(TcTile::T128x128), true, "qc_conv_tc<qc_bf16, 128, 128, 2, 4, 3, true, false, true>";
    "qc_conv_tc_bf16_128x64_q8", ConvTcQ8Bf16T128x64, false, BF16, ConvAlgo::TensorCore(TcTile::T128x64), true, "qc_conv_tc<qc_bf16, 128, 64, 2, 2, 4, true, false, true>";
    "qc_conv_tc_bf16_64x64_q8", ConvTcQ8Bf16T64x64, false, BF16, ConvAlgo::TensorCore(TcTile::T64x64), true, "qc_conv_tc<qc_bf16, 64, 64, 2, 2, 4, true, false, true>";
    "qc_conv_tc_f16_gather_q8", ConvTcQ8F16Gather, false, F16, ConvAlgo::TensorCore(TcTile::Gather128x64), true, "qc_conv_tc<qc_half, 128, 64, 2, 2, 4, false, false, true>";
    "qc_conv_tc_bf16_gather_q8", ConvTcQ8Bf16Gather, false, BF16, ConvAlgo::TensorCore(TcTile::Gather128x64), true, "qc_conv_tc<qc_bf16, 128, 64, 2, 2, 4, false, false, true>";
    "qc_conv_tc_tr_f16_128x128_q8", ConvTcQ8TrF16T128x128, true, F16, ConvAlgo::TensorCore(TcTile::T128x128), true, "qc_conv_tc<qc_half, 128, 128, 2, 4, 3, true, true, true>";
    "qc_conv_tc_tr_f16_64x64_q8", ConvTcQ8TrF16T64x64, true, F16, ConvAlgo::TensorCore(TcTile::T64x64), true, "qc_conv_tc<qc_half, 64, 64, 2, 2, 4, true, true, true>";
    "qc_conv_tc_tr_bf16_128x128_q8", ConvTcQ8TrBf16T128x128, true, BF16, ConvAlgo::TensorCore(TcTile::T128x128), true, "qc_conv_tc<qc_bf16, 128, 128, 2, 4, 3, true, true, true>";
    "qc_conv_tc_tr_bf16_64x64_q8", ConvTcQ8TrBf16T64x64, true, BF16, ConvAlgo::TensorCore(TcTile::T64x64), true, "qc_conv_tc<qc_bf16, 64, 64, 2, 2, 4, true, true, true>";
    "qc_conv_tc_tf32_128x128", ConvTcTf32T128x128, false, F32, ConvAlgo::TensorCore(TcTile::T128x128), false, "qc_conv_tc<float, 128, 128, 2, 4, 3, true, false, false>";
    "qc_conv_tc_tf32_128x64", ConvTcTf32T128x64, false, F32, ConvAlgo::TensorCore(TcTile::T128x64), false, "qc_conv_tc<float, 128, 64, 2, 2, 4, true, false, false>";
    "qc_conv_tc_tf32_64x64", ConvTcTf32T64x64, false, F32, ConvAlgo::TensorCore(TcTile::T64x64), false, "qc_conv_tc<float, 64, 64, 2, 2, 4, true, false, false>";
    "qc_conv_tc_tr_tf32_128x128", ConvTcTrTf32T128x128, true, F32, ConvAlgo::TensorCore(TcTile::T128x128), false, "qc_conv_tc<float, 128, 128, 2, 4, 3, true, true, false>";
    "qc_conv_tc_tr_tf32_64x64", ConvTcTrTf32T64x64, true, F32, ConvAlgo::TensorCore(TcTile::T64x64), false, "qc_conv_tc<float, 64, 64, 2, 2, 4, true, true, false>";
    "qc_dw_nhwc_f32", ConvTcMisc, false, F32, ConvAlgo::DepthwiseNhwc, false, "qc_dw_nhwc<float>";
    "qc_dw_nhwc_f16", ConvTcMisc, false, F16, ConvAlgo::DepthwiseNhwc, false, "qc_dw_nhwc<qc_half>";
    "qc_dw_nhwc_bf16", ConvTcMisc, false, BF16, ConvAlgo::DepthwiseNhwc, false, "qc_dw_nhwc<qc_bf16>";
];

/// The layout kernels and the split-K reductions (`cuda/conv_tc.cu`).
pub static TRANSPOSE_VARIANTS: [KernelVariant; 7] = [
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
    KernelVariant {
        name: "qc_pad_channels_b16",
        source: KernelSource::ConvTcMisc,
        kind: KernelKind::PadChannels(2),
        dtype: None,
        transposed: false,
        weight_codes: false,
        instantiation: "qc_pad_channels<unsigned short>",
    },
    KernelVariant {
        name: "qc_pad_channels_b32",
        source: KernelSource::ConvTcMisc,
        kind: KernelKind::PadChannels(4),
        dtype: None,
        transposed: false,
        weight_codes: false,
        instantiation: "qc_pad_channels<unsigned int>",
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

/// The channel-padding kernel for elements of `bytes` bytes (2 or 4).
pub fn pad_channels_variant(bytes: u32) -> Option<&'static KernelVariant> {
    TRANSPOSE_VARIANTS.iter().find(|v| v.kind == KernelKind::PadChannels(bytes))
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
        assert_eq!(VARIANTS.len(), 4 + 2 * 3 * 4 + 2 * 4 + 2 * 2 * 2 + 2 * 2 * 2 + 5 + 3);
        assert_eq!(transpose_variant(2).unwrap().name, "qc_transpose_b16");
        assert_eq!(transpose_variant(4).unwrap().name, "qc_transpose_b32");
        assert!(transpose_variant(8).is_none());
        assert_eq!(pad_channels_variant(2).unwrap().name, "qc_pad_channels_b16");
        assert_eq!(pad_channels_variant(4).unwrap().source, KernelSource::ConvTcMisc);
        assert!(pad_channels_variant(1).is_none());
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
