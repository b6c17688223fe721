//! Every CUDA kernel qconv compiles, as ONE list: the NVRTC programs, the source file each is
//! built from, and the entry points (kernel variants) each defines.
//!
//! A [`KernelSource`] is one NVRTC program: a file of `cuda/` (templates and entry-point macros,
//! see [`SOURCE_FILES`]) followed by the definitions of the program's entry points, which the
//! list below spells out (`QC_TC_ENTRY(qc_conv_tc_f16_128x128, qc_half, 128, ...)`, …): the
//! `.cu` files hold no per-program switches. Each program is compiled once per architecture into
//! one CUBIN holding all of its entry points. Each tensor-core tile is a program of its own and
//! the CUDA-core kernels come two to a program, so that the programs are small, compile in
//! parallel, and the longest one bounds a cold compilation of everything.
//!
//! [`VARIANTS`] lists every entry point with what it computes, so that tests, `qconv warmup` and
//! the runtime iterate one list; `tests/nvrtc.rs` checks that every program's compiled entry
//! points are exactly its listed variants.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use super::nvrtc::Arch;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// The headers every kernel source may include, as `(include name, contents)`; passed to NVRTC
/// as named headers (no file system access at compile time).
pub const HEADERS: &[(&str, &str)] = &[
    ("params.h", include_str!("../../cuda/params.h")),
    ("common.cuh", include_str!("../../cuda/common.cuh")),
    ("conv_igemm.cuh", include_str!("../../cuda/conv_igemm.cuh")),
    ("tensor_core.cuh", include_str!("../../cuda/tensor_core.cuh")),
    ("int8.cuh", include_str!("../../cuda/int8.cuh")),
];

/// The kernel source files of `cuda/`, as `(file name, contents)`: each defines templates and the
/// macros that the program list instantiates.
pub const SOURCE_FILES: &[(&str, &str)] = &[
    ("fakequant.cu", include_str!("../../cuda/fakequant.cu")),
    ("conv.cu", include_str!("../../cuda/conv.cu")),
    ("conv_transpose.cu", include_str!("../../cuda/conv_transpose.cu")),
    ("conv_tc.cu", include_str!("../../cuda/conv_tc.cu")),
    ("splitk.cu", include_str!("../../cuda/splitk.cu")),
    ("depthwise.cu", include_str!("../../cuda/depthwise.cu")),
    ("layout.cu", include_str!("../../cuda/layout.cu")),
    ("conv_imma.cu", include_str!("../../cuda/conv_imma.cu")),
    ("int8_simt.cu", include_str!("../../cuda/int8_simt.cu")),
    ("conv_wg.cu", include_str!("../../cuda/conv_wg.cu")),
];

/// Expands the program list: the [`KernelSource`] enum (one variant per program, with its short
/// name and file) and [`VARIANTS`] (one [`KernelVariant`] per entry point, with the C++ macro call
/// that defines it: the entry's name is the macro's first argument).
macro_rules! kernel_programs {
    ($(
        $(#[doc = $doc:literal])*
        $prog:ident = $name:literal in $file:literal {
            $($entry:ident: $kind:expr, $dtype:expr, $tr:literal, $codes:literal => $mac:ident($($arg:tt),*);)*
        }
    )*) => {
        /// One NVRTC program: a source file of `cuda/` and the entry points the program list
        /// defines from it (see the [module documentation](self)).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum KernelSource {
            $($(#[doc = $doc])* $prog,)*
        }

        impl KernelSource {
            /// Number of programs.
            pub const COUNT: usize = [$(KernelSource::$prog),*].len();

            /// Every program, in a fixed order.
            pub const ALL: [KernelSource; KernelSource::COUNT] = [$(KernelSource::$prog),*];

            /// Short name (`"fakequant"`, `"conv_f32_t128_m32"`, …, `"layout"`), used in cache file
            /// names and by `qconv warmup`.
            pub fn name(&self) -> &'static str {
                match self {
                    $(KernelSource::$prog => $name,)*
                }
            }

            /// File name inside `cuda/` the program is built from (also the NVRTC program name,
            /// so compiler messages name it).
            pub fn file_name(&self) -> &'static str {
                match self {
                    $(KernelSource::$prog => $file,)*
                }
            }
        }

        /// Every kernel entry point, grouped by program.
        pub static VARIANTS: &[KernelVariant] = {
            use ConvAlgo::*;
            use ConvTile::*;
            use DType::*;
            use KernelKind::*;
            use TcTile::*;
            &[$($(KernelVariant {
                name: stringify!($entry),
                source: KernelSource::$prog,
                kind: $kind,
                dtype: $dtype,
                transposed: $tr,
                weight_codes: $codes,
                definition: concat!(stringify!($mac), "(", stringify!($entry) $(, ", ", stringify!($arg))*, ")"),
            },)*)*]
        };
    };
}

kernel_programs! {
    /// `cuda/fakequant.cu`: the fake-quant kernels (all modes, and the integer modes' fast path)
    /// and the 8-bit code expansion.
    FakeQuant = "fakequant" in "fakequant.cu" {
        qc_fakequant: FakeQuant, None, false, false => QC_FAKEQUANT_ENTRY(3, true);
        qc_fakequant_fast: FakeQuantFast, None, false, false => QC_FAKEQUANT_FAST_ENTRY();
        qc_dequant_codes: DequantCodes, None, false, true => QC_DEQUANT_CODES_ENTRY();
    }
    /// `cuda/fakequant.cu`: the quantize-only kernel (`get_quantized_weight()`).
    Quantize = "quantize" in "fakequant.cu" {
        qc_quantize: Quantize, None, false, false => QC_FAKEQUANT_ENTRY(3, false);
    }
    /// `cuda/conv.cu`, f32 activations: the 128×128 and 32×128 tiles.
    ConvF32T128M32 = "conv_f32_t128_m32" in "conv.cu" {
        qc_conv_fwd_f32_t128: Conv(Tiled(T128)), Some(F32), false, false => QC_IGEMM_ENTRY(float, QcTileT128, false);
        qc_conv_fwd_f32_m32: Conv(Tiled(M32)), Some(F32), false, false => QC_IGEMM_ENTRY(float, QcTileM32, false);
    }
    /// `cuda/conv.cu`, f32 activations: the 64×64 tile and the direct kernel.
    ConvF32T64Direct = "conv_f32_t64_direct" in "conv.cu" {
        qc_conv_fwd_f32_t64: Conv(Tiled(T64)), Some(F32), false, false => QC_IGEMM_ENTRY(float, QcTileT64, false);
        qc_conv_fwd_f32_direct: Conv(Direct), Some(F32), false, false => QC_DIRECT_ENTRY(float, false);
    }
    /// `cuda/conv.cu`, f16 activations: the 128×128 and 32×128 tiles.
    ConvF16T128M32 = "conv_f16_t128_m32" in "conv.cu" {
        qc_conv_fwd_f16_t128: Conv(Tiled(T128)), Some(F16), false, false => QC_IGEMM_ENTRY(qc_half, QcTileT128, false);
        qc_conv_fwd_f16_m32: Conv(Tiled(M32)), Some(F16), false, false => QC_IGEMM_ENTRY(qc_half, QcTileM32, false);
    }
    /// `cuda/conv.cu`, f16 activations: the 64×64 tile and the direct kernel.
    ConvF16T64Direct = "conv_f16_t64_direct" in "conv.cu" {
        qc_conv_fwd_f16_t64: Conv(Tiled(T64)), Some(F16), false, false => QC_IGEMM_ENTRY(qc_half, QcTileT64, false);
        qc_conv_fwd_f16_direct: Conv(Direct), Some(F16), false, false => QC_DIRECT_ENTRY(qc_half, false);
    }
    /// `cuda/conv.cu`, bf16 activations: the 128×128 and 32×128 tiles.
    ConvBf16T128M32 = "conv_bf16_t128_m32" in "conv.cu" {
        qc_conv_fwd_bf16_t128: Conv(Tiled(T128)), Some(BF16), false, false => QC_IGEMM_ENTRY(qc_bf16, QcTileT128, false);
        qc_conv_fwd_bf16_m32: Conv(Tiled(M32)), Some(BF16), false, false => QC_IGEMM_ENTRY(qc_bf16, QcTileM32, false);
    }
    /// `cuda/conv.cu`, bf16 activations: the 64×64 tile and the direct kernel.
    ConvBf16T64Direct = "conv_bf16_t64_direct" in "conv.cu" {
        qc_conv_fwd_bf16_t64: Conv(Tiled(T64)), Some(BF16), false, false => QC_IGEMM_ENTRY(qc_bf16, QcTileT64, false);
        qc_conv_fwd_bf16_direct: Conv(Direct), Some(BF16), false, false => QC_DIRECT_ENTRY(qc_bf16, false);
    }
    /// `cuda/conv_transpose.cu`, f32 activations: the 128×128 and 32×128 tiles.
    ConvTransposeF32T128M32 = "conv_transpose_f32_t128_m32" in "conv_transpose.cu" {
        qc_conv_tr_f32_t128: Conv(Tiled(T128)), Some(F32), true, false => QC_IGEMM_ENTRY(float, QcTileT128, true);
        qc_conv_tr_f32_m32: Conv(Tiled(M32)), Some(F32), true, false => QC_IGEMM_ENTRY(float, QcTileM32, true);
    }
    /// `cuda/conv_transpose.cu`, f32 activations: the 64×64 tile and the direct kernel.
    ConvTransposeF32T64Direct = "conv_transpose_f32_t64_direct" in "conv_transpose.cu" {
        qc_conv_tr_f32_t64: Conv(Tiled(T64)), Some(F32), true, false => QC_IGEMM_ENTRY(float, QcTileT64, true);
        qc_conv_tr_f32_direct: Conv(Direct), Some(F32), true, false => QC_DIRECT_ENTRY(float, true);
    }
    /// `cuda/conv_transpose.cu`, f16 activations: the 128×128 and 32×128 tiles.
    ConvTransposeF16T128M32 = "conv_transpose_f16_t128_m32" in "conv_transpose.cu" {
        qc_conv_tr_f16_t128: Conv(Tiled(T128)), Some(F16), true, false => QC_IGEMM_ENTRY(qc_half, QcTileT128, true);
        qc_conv_tr_f16_m32: Conv(Tiled(M32)), Some(F16), true, false => QC_IGEMM_ENTRY(qc_half, QcTileM32, true);
    }
    /// `cuda/conv_transpose.cu`, f16 activations: the 64×64 tile and the direct kernel.
    ConvTransposeF16T64Direct = "conv_transpose_f16_t64_direct" in "conv_transpose.cu" {
        qc_conv_tr_f16_t64: Conv(Tiled(T64)), Some(F16), true, false => QC_IGEMM_ENTRY(qc_half, QcTileT64, true);
        qc_conv_tr_f16_direct: Conv(Direct), Some(F16), true, false => QC_DIRECT_ENTRY(qc_half, true);
    }
    /// `cuda/conv_transpose.cu`, bf16 activations: the 128×128 and 32×128 tiles.
    ConvTransposeBf16T128M32 = "conv_transpose_bf16_t128_m32" in "conv_transpose.cu" {
        qc_conv_tr_bf16_t128: Conv(Tiled(T128)), Some(BF16), true, false => QC_IGEMM_ENTRY(qc_bf16, QcTileT128, true);
        qc_conv_tr_bf16_m32: Conv(Tiled(M32)), Some(BF16), true, false => QC_IGEMM_ENTRY(qc_bf16, QcTileM32, true);
    }
    /// `cuda/conv_transpose.cu`, bf16 activations: the 64×64 tile and the direct kernel.
    ConvTransposeBf16T64Direct = "conv_transpose_bf16_t64_direct" in "conv_transpose.cu" {
        qc_conv_tr_bf16_t64: Conv(Tiled(T64)), Some(BF16), true, false => QC_IGEMM_ENTRY(qc_bf16, QcTileT64, true);
        qc_conv_tr_bf16_direct: Conv(Direct), Some(BF16), true, false => QC_DIRECT_ENTRY(qc_bf16, true);
    }
    /// `cuda/conv_tc.cu`: the tensor-core 128×128 tile, f16.
    ConvTcF16T128x128 = "conv_tc_f16_128x128" in "conv_tc.cu" {
        qc_conv_tc_f16_128x128: Conv(TensorCore(T128x128)), Some(F16), false, false => QC_TC_ENTRY(qc_half, 128, 128, 2, 4, 3, 2, true, false, false);
    }
    /// `cuda/conv_tc.cu`: the tensor-core 128×64 tile, f16.
    ConvTcF16T128x64 = "conv_tc_f16_128x64" in "conv_tc.cu" {
        qc_conv_tc_f16_128x64: Conv(TensorCore(T128x64)), Some(F16), false, false => QC_TC_ENTRY(qc_half, 128, 64, 2, 2, 4, 3, true, false, false);
    }
    /// `cuda/conv_tc.cu`: the tensor-core 64×64 tile, f16.
    ConvTcF16T64x64 = "conv_tc_f16_64x64" in "conv_tc.cu" {
        qc_conv_tc_f16_64x64: Conv(TensorCore(T64x64)), Some(F16), false, false => QC_TC_ENTRY(qc_half, 64, 64, 2, 2, 4, 4, true, false, false);
    }
    /// `cuda/conv_tc.cu`: the tensor-core 128×128 tile, bf16.
    ConvTcBf16T128x128 = "conv_tc_bf16_128x128" in "conv_tc.cu" {
        qc_conv_tc_bf16_128x128: Conv(TensorCore(T128x128)), Some(BF16), false, false => QC_TC_ENTRY(qc_bf16, 128, 128, 2, 4, 3, 2, true, false, false);
    }
    /// `cuda/conv_tc.cu`: the tensor-core 128×64 tile, bf16.
    ConvTcBf16T128x64 = "conv_tc_bf16_128x64" in "conv_tc.cu" {
        qc_conv_tc_bf16_128x64: Conv(TensorCore(T128x64)), Some(BF16), false, false => QC_TC_ENTRY(qc_bf16, 128, 64, 2, 2, 4, 3, true, false, false);
    }
    /// `cuda/conv_tc.cu`: the tensor-core 64×64 tile, bf16.
    ConvTcBf16T64x64 = "conv_tc_bf16_64x64" in "conv_tc.cu" {
        qc_conv_tc_bf16_64x64: Conv(TensorCore(T64x64)), Some(BF16), false, false => QC_TC_ENTRY(qc_bf16, 64, 64, 2, 2, 4, 4, true, false, false);
    }
    /// `cuda/conv_tc.cu`: the tensor-core 128×64 tile with the element-wise input loader, f16.
    ConvTcF16Gather = "conv_tc_f16_gather" in "conv_tc.cu" {
        qc_conv_tc_f16_gather: Conv(TensorCore(Gather128x64)), Some(F16), false, false => QC_TC_ENTRY(qc_half, 128, 64, 2, 2, 4, 3, false, false, false);
    }
    /// `cuda/conv_tc.cu`: the tensor-core 128×64 tile with the element-wise input loader, bf16.
    ConvTcBf16Gather = "conv_tc_bf16_gather" in "conv_tc.cu" {
        qc_conv_tc_bf16_gather: Conv(TensorCore(Gather128x64)), Some(BF16), false, false => QC_TC_ENTRY(qc_bf16, 128, 64, 2, 2, 4, 3, false, false, false);
    }
    /// `cuda/conv_tc.cu`: the tensor-core transposed 128×128 tile, f16.
    ConvTcTrF16T128x128 = "conv_tc_tr_f16_128x128" in "conv_tc.cu" {
        qc_conv_tc_tr_f16_128x128: Conv(TensorCore(T128x128)), Some(F16), true, false => QC_TC_ENTRY(qc_half, 128, 128, 2, 4, 3, 1, true, true, false);
    }
    /// `cuda/conv_tc.cu`: the tensor-core transposed 64×64 tile, f16.
    ConvTcTrF16T64x64 = "conv_tc_tr_f16_64x64" in "conv_tc.cu" {
        qc_conv_tc_tr_f16_64x64: Conv(TensorCore(T64x64)), Some(F16), true, false => QC_TC_ENTRY(qc_half, 64, 64, 2, 2, 4, 4, true, true, false);
    }
    /// `cuda/conv_tc.cu`: the tensor-core transposed 128×128 tile, bf16.
    ConvTcTrBf16T128x128 = "conv_tc_tr_bf16_128x128" in "conv_tc.cu" {
        qc_conv_tc_tr_bf16_128x128: Conv(TensorCore(T128x128)), Some(BF16), true, false => QC_TC_ENTRY(qc_bf16, 128, 128, 2, 4, 3, 1, true, true, false);
    }
    /// `cuda/conv_tc.cu`: the tensor-core transposed 64×64 tile, bf16.
    ConvTcTrBf16T64x64 = "conv_tc_tr_bf16_64x64" in "conv_tc.cu" {
        qc_conv_tc_tr_bf16_64x64: Conv(TensorCore(T64x64)), Some(BF16), true, false => QC_TC_ENTRY(qc_bf16, 64, 64, 2, 2, 4, 4, true, true, false);
    }
    /// `cuda/conv_tc.cu`: the tensor-core 128×128 tile, f16, reading 8-bit weight codes.
    ConvTcQ8F16T128x128 = "conv_tc_f16_128x128_q8" in "conv_tc.cu" {
        qc_conv_tc_f16_128x128_q8: Conv(TensorCore(T128x128)), Some(F16), false, true => QC_TC_ENTRY(qc_half, 128, 128, 2, 4, 3, 2, true, false, true);
    }
    /// `cuda/conv_tc.cu`: the tensor-core 128×64 tile, f16, reading 8-bit weight codes.
    ConvTcQ8F16T128x64 = "conv_tc_f16_128x64_q8" in "conv_tc.cu" {
        qc_conv_tc_f16_128x64_q8: Conv(TensorCore(T128x64)), Some(F16), false, true => QC_TC_ENTRY(qc_half, 128, 64, 2, 2, 4, 3, true, false, true);
    }
    /// `cuda/conv_tc.cu`: the tensor-core 64×64 tile, f16, reading 8-bit weight codes.
    ConvTcQ8F16T64x64 = "conv_tc_f16_64x64_q8" in "conv_tc.cu" {
        qc_conv_tc_f16_64x64_q8: Conv(TensorCore(T64x64)), Some(F16), false, true => QC_TC_ENTRY(qc_half, 64, 64, 2, 2, 4, 4, true, false, true);
    }
    /// `cuda/conv_tc.cu`: the tensor-core 128×128 tile, bf16, reading 8-bit weight codes.
    ConvTcQ8Bf16T128x128 = "conv_tc_bf16_128x128_q8" in "conv_tc.cu" {
        qc_conv_tc_bf16_128x128_q8: Conv(TensorCore(T128x128)), Some(BF16), false, true => QC_TC_ENTRY(qc_bf16, 128, 128, 2, 4, 3, 2, true, false, true);
    }
    /// `cuda/conv_tc.cu`: the tensor-core 128×64 tile, bf16, reading 8-bit weight codes.
    ConvTcQ8Bf16T128x64 = "conv_tc_bf16_128x64_q8" in "conv_tc.cu" {
        qc_conv_tc_bf16_128x64_q8: Conv(TensorCore(T128x64)), Some(BF16), false, true => QC_TC_ENTRY(qc_bf16, 128, 64, 2, 2, 4, 3, true, false, true);
    }
    /// `cuda/conv_tc.cu`: the tensor-core 64×64 tile, bf16, reading 8-bit weight codes.
    ConvTcQ8Bf16T64x64 = "conv_tc_bf16_64x64_q8" in "conv_tc.cu" {
        qc_conv_tc_bf16_64x64_q8: Conv(TensorCore(T64x64)), Some(BF16), false, true => QC_TC_ENTRY(qc_bf16, 64, 64, 2, 2, 4, 4, true, false, true);
    }
    /// `cuda/conv_tc.cu`: the tensor-core 128×64 tile with the element-wise input loader, f16, reading 8-bit weight codes.
    ConvTcQ8F16Gather = "conv_tc_f16_gather_q8" in "conv_tc.cu" {
        qc_conv_tc_f16_gather_q8: Conv(TensorCore(Gather128x64)), Some(F16), false, true => QC_TC_ENTRY(qc_half, 128, 64, 2, 2, 4, 3, false, false, true);
    }
    /// `cuda/conv_tc.cu`: the tensor-core 128×64 tile with the element-wise input loader, bf16, reading 8-bit weight codes.
    ConvTcQ8Bf16Gather = "conv_tc_bf16_gather_q8" in "conv_tc.cu" {
        qc_conv_tc_bf16_gather_q8: Conv(TensorCore(Gather128x64)), Some(BF16), false, true => QC_TC_ENTRY(qc_bf16, 128, 64, 2, 2, 4, 3, false, false, true);
    }
    /// `cuda/conv_tc.cu`: the tensor-core transposed 128×128 tile, f16, reading 8-bit weight codes.
    ConvTcQ8TrF16T128x128 = "conv_tc_tr_f16_128x128_q8" in "conv_tc.cu" {
        qc_conv_tc_tr_f16_128x128_q8: Conv(TensorCore(T128x128)), Some(F16), true, true => QC_TC_ENTRY(qc_half, 128, 128, 2, 4, 3, 1, true, true, true);
    }
    /// `cuda/conv_tc.cu`: the tensor-core transposed 64×64 tile, f16, reading 8-bit weight codes.
    ConvTcQ8TrF16T64x64 = "conv_tc_tr_f16_64x64_q8" in "conv_tc.cu" {
        qc_conv_tc_tr_f16_64x64_q8: Conv(TensorCore(T64x64)), Some(F16), true, true => QC_TC_ENTRY(qc_half, 64, 64, 2, 2, 4, 4, true, true, true);
    }
    /// `cuda/conv_tc.cu`: the tensor-core transposed 128×128 tile, bf16, reading 8-bit weight codes.
    ConvTcQ8TrBf16T128x128 = "conv_tc_tr_bf16_128x128_q8" in "conv_tc.cu" {
        qc_conv_tc_tr_bf16_128x128_q8: Conv(TensorCore(T128x128)), Some(BF16), true, true => QC_TC_ENTRY(qc_bf16, 128, 128, 2, 4, 3, 1, true, true, true);
    }
    /// `cuda/conv_tc.cu`: the tensor-core transposed 64×64 tile, bf16, reading 8-bit weight codes.
    ConvTcQ8TrBf16T64x64 = "conv_tc_tr_bf16_64x64_q8" in "conv_tc.cu" {
        qc_conv_tc_tr_bf16_64x64_q8: Conv(TensorCore(T64x64)), Some(BF16), true, true => QC_TC_ENTRY(qc_bf16, 64, 64, 2, 2, 4, 4, true, true, true);
    }
    /// `cuda/conv_tc.cu`: the TF32 tensor-core 128×128 tile.
    ConvTcTf32T128x128 = "conv_tc_tf32_128x128" in "conv_tc.cu" {
        qc_conv_tc_tf32_128x128: Conv(TensorCore(T128x128)), Some(F32), false, false => QC_TC_ENTRY(float, 128, 128, 2, 4, 3, 2, true, false, false);
    }
    /// `cuda/conv_tc.cu`: the TF32 tensor-core 128×64 tile.
    ConvTcTf32T128x64 = "conv_tc_tf32_128x64" in "conv_tc.cu" {
        qc_conv_tc_tf32_128x64: Conv(TensorCore(T128x64)), Some(F32), false, false => QC_TC_ENTRY(float, 128, 64, 2, 2, 4, 3, true, false, false);
    }
    /// `cuda/conv_tc.cu`: the TF32 tensor-core 64×64 tile.
    ConvTcTf32T64x64 = "conv_tc_tf32_64x64" in "conv_tc.cu" {
        qc_conv_tc_tf32_64x64: Conv(TensorCore(T64x64)), Some(F32), false, false => QC_TC_ENTRY(float, 64, 64, 2, 2, 4, 4, true, false, false);
    }
    /// `cuda/conv_tc.cu`: the TF32 tensor-core transposed 128×128 tile.
    ConvTcTrTf32T128x128 = "conv_tc_tr_tf32_128x128" in "conv_tc.cu" {
        qc_conv_tc_tr_tf32_128x128: Conv(TensorCore(T128x128)), Some(F32), true, false => QC_TC_ENTRY(float, 128, 128, 2, 4, 3, 1, true, true, false);
    }
    /// `cuda/conv_tc.cu`: the TF32 tensor-core transposed 64×64 tile.
    ConvTcTrTf32T64x64 = "conv_tc_tr_tf32_64x64" in "conv_tc.cu" {
        qc_conv_tc_tr_tf32_64x64: Conv(TensorCore(T64x64)), Some(F32), true, false => QC_TC_ENTRY(float, 64, 64, 2, 2, 4, 4, true, true, false);
    }
    /// `cuda/splitk.cu`: the split-K reductions of the tensor-core tiles (f16, bf16, and f32 for
    /// the TF32 tiles).
    SplitKReduce = "splitk_reduce" in "splitk.cu" {
        qc_splitk_reduce_f16: SplitKReduce, Some(F16), false, false => QC_SPLITK_ENTRY(qc_half);
        qc_splitk_reduce_bf16: SplitKReduce, Some(BF16), false, false => QC_SPLITK_ENTRY(qc_bf16);
        qc_splitk_reduce_f32: SplitKReduce, Some(F32), false, false => QC_SPLITK_ENTRY(float);
    }
    /// `cuda/depthwise.cu`: the channels-last depthwise kernels (CUDA cores, every dtype).
    Depthwise = "depthwise" in "depthwise.cu" {
        qc_dw_nhwc_f32: Conv(DepthwiseNhwc), Some(F32), false, false => QC_DW_ENTRY(float);
        qc_dw_nhwc_f16: Conv(DepthwiseNhwc), Some(F16), false, false => QC_DW_ENTRY(qc_half);
        qc_dw_nhwc_bf16: Conv(DepthwiseNhwc), Some(BF16), false, false => QC_DW_ENTRY(qc_bf16);
    }
    /// `cuda/layout.cu`: the NCHW ↔ channels-last transposes and the channel padding of the
    /// tensor-core tiles' inputs.
    Layout = "layout" in "layout.cu" {
        qc_transpose_b16: Transpose(2), None, false, false => QC_TRANSPOSE_ENTRY(qc_b16);
        qc_transpose_b32: Transpose(4), None, false, false => QC_TRANSPOSE_ENTRY(qc_b32);
        qc_pad_channels_b16: PadChannels(2), None, false, false => QC_PAD_CHANNELS_ENTRY(qc_b16);
        qc_pad_channels_b32: PadChannels(4), None, false, false => QC_PAD_CHANNELS_ENTRY(qc_b32);
    }
    /// `cuda/conv_imma.cu`: the int8 tensor-core 128×128 tile (u8 × s8, requantized to u8),
    /// symmetric weights only (with the row sums of the `_wzp` entries it would spill).
    ConvImmaT128x128 = "conv_imma_128x128" in "conv_imma.cu" {
        qc_conv_imma_128x128: Int8Conv(Int8Algo::Imma(T128x128)), None, false, false => QC_IMMA_ENTRY(128, 128, 2, 4, 3, 2, false, false);
    }
    /// `cuda/conv_imma.cu`: the int8 tensor-core 128×64 tile, symmetric and any weight zero points.
    ConvImmaT128x64 = "conv_imma_128x64" in "conv_imma.cu" {
        qc_conv_imma_128x64: Int8Conv(Int8Algo::Imma(T128x64)), None, false, false => QC_IMMA_ENTRY(128, 64, 2, 2, 4, 3, false, false);
        qc_conv_imma_128x64_wzp: Int8Conv(Int8Algo::ImmaWzp(T128x64)), None, false, false => QC_IMMA_ENTRY(128, 64, 2, 2, 4, 3, false, true);
    }
    /// `cuda/conv_imma.cu`: the int8 tensor-core 64×64 tile, symmetric and any weight zero points.
    ConvImmaT64x64 = "conv_imma_64x64" in "conv_imma.cu" {
        qc_conv_imma_64x64: Int8Conv(Int8Algo::Imma(T64x64)), None, false, false => QC_IMMA_ENTRY(64, 64, 2, 2, 4, 4, false, false);
        qc_conv_imma_64x64_wzp: Int8Conv(Int8Algo::ImmaWzp(T64x64)), None, false, false => QC_IMMA_ENTRY(64, 64, 2, 2, 4, 4, false, true);
    }
    /// `cuda/conv_imma.cu`: the int8 tensor-core transposed 128×128 tile, symmetric and any weight
    /// zero points.
    ConvImmaTrT128x128 = "conv_imma_tr_128x128" in "conv_imma.cu" {
        qc_conv_imma_tr_128x128: Int8Conv(Int8Algo::Imma(T128x128)), None, true, false => QC_IMMA_ENTRY(128, 128, 2, 4, 3, 1, true, false);
        qc_conv_imma_tr_128x128_wzp: Int8Conv(Int8Algo::ImmaWzp(T128x128)), None, true, false => QC_IMMA_ENTRY(128, 128, 2, 4, 3, 1, true, true);
    }
    /// `cuda/conv_imma.cu`: the int8 tensor-core transposed 64×64 tile, symmetric and any weight
    /// zero points.
    ConvImmaTrT64x64 = "conv_imma_tr_64x64" in "conv_imma.cu" {
        qc_conv_imma_tr_64x64: Int8Conv(Int8Algo::Imma(T64x64)), None, true, false => QC_IMMA_ENTRY(64, 64, 2, 2, 4, 4, true, false);
        qc_conv_imma_tr_64x64_wzp: Int8Conv(Int8Algo::ImmaWzp(T64x64)), None, true, false => QC_IMMA_ENTRY(64, 64, 2, 2, 4, 4, true, true);
    }
    /// `cuda/int8_simt.cu`: the int8 depthwise kernel (CUDA cores) and the u8 channel copy.
    Int8Simt = "int8_simt" in "int8_simt.cu" {
        qc_dw_int8: Int8Conv(Int8Algo::Depthwise), None, false, false => QC_DW_INT8_ENTRY();
        qc_pad_channels_u8: PadChannelsU8, None, false, false => QC_PAD_U8_ENTRY();
    }
    /// `cuda/conv_wg.cu`: Hopper's wgmma + TMA forward convolution, 128×128 and 128×64 tiles, f16
    /// and bf16 (compiled for `sm_90a` only: [`KernelSource::targets`]).
    ConvWg = "conv_wg" in "conv_wg.cu" {
        qc_conv_wg_f16_128x128: Conv(Wgmma(128)), Some(F16), false, false => QC_WG_ENTRY(qc_half, 128);
        qc_conv_wg_f16_128x64: Conv(Wgmma(64)), Some(F16), false, false => QC_WG_ENTRY(qc_half, 64);
        qc_conv_wg_bf16_128x128: Conv(Wgmma(128)), Some(BF16), false, false => QC_WG_ENTRY(qc_bf16, 128);
        qc_conv_wg_bf16_128x64: Conv(Wgmma(64)), Some(BF16), false, false => QC_WG_ENTRY(qc_bf16, 64);
    }
}

impl KernelSource {
    /// The program's complete source text: its file of [`SOURCE_FILES`] followed by the
    /// definitions of its entry points ([`KernelVariant::definition`]). Built once per process.
    pub fn source(&self) -> &'static str {
        static TEXTS: OnceLock<Vec<String>> = OnceLock::new();
        let texts = TEXTS.get_or_init(|| {
            KernelSource::ALL
                .iter()
                .map(|s| {
                    let file = SOURCE_FILES.iter().find(|(name, _)| *name == s.file_name()).map_or("", |f| f.1);
                    let entries: Vec<&str> = s.variants().map(|v| v.definition).collect();
                    format!(
                        "{file}\n/* ---- the entry points of program {} (src/cuda/kernels.rs) ---- */\n{}\n",
                        s.name(),
                        entries.join("\n")
                    )
                })
                .collect()
        });
        &texts[*self as usize]
    }

    /// Whether this program is compiled for `arch`: the Hopper program (`cuda/conv_wg.cu`, wgmma
    /// and setmaxnreg) for `sm_90a` only; every other program for every plain `sm_XY` and never
    /// for an architecture-specific target (their `sm_90` CUBIN serves Hopper).
    pub fn targets(&self, arch: Arch) -> bool {
        match self {
            KernelSource::ConvWg => arch == Arch::SM90A,
            _ => !arch.specific,
        }
    }

    /// The programs compiled for `arch` ([`targets`](Self::targets)), in [`ALL`](Self::ALL)'s order.
    pub fn for_arch(arch: Arch) -> impl Iterator<Item = KernelSource> {
        KernelSource::ALL.into_iter().filter(move |s| s.targets(arch))
    }

    /// The target a device of plain architecture `device` compiles this program for: `sm_90a`
    /// for the Hopper program on compute capability 9.0, `device` itself for the others; `None`
    /// where the program cannot run on the device (the Hopper program elsewhere).
    pub fn target_on(&self, device: Arch) -> Option<Arch> {
        let device = device.base();
        match self {
            KernelSource::ConvWg => (device == Arch::new(9, 0)).then_some(Arch::SM90A),
            _ => Some(device),
        }
    }

    /// The entry points this program defines.
    pub fn variants(&self) -> impl Iterator<Item = &'static KernelVariant> {
        let source = *self;
        VARIANTS.iter().filter(move |v| v.source == source)
    }
}

impl fmt::Display for KernelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

impl FromStr for KernelSource {
    type Err = Error;
    /// Parses a short name (`"conv_f16_t64_direct"`, see [`KernelSource::name`]).
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
    /// Hopper's wgmma + TMA implicit GEMM (`cuda/conv_wg.cu`, sm_90a, forward, groups 1,
    /// f16/bf16; opt-in: [`Precision::TensorCoreSm90a`](crate::cuda::Precision)), tiles of 128
    /// output pixels × this many output channels (128, or 64).
    Wgmma(u32),
}

/// How a lowered int8 convolution (u8 × s8 codes, exact int32 sums, requantized to u8) is
/// computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Int8Algo {
    /// The tensor-core tiles of `cuda/conv_imma.cu` (`mma.m16n8k32`, channels-last input with
    /// `C/groups` padded to 16), for symmetric weights (every weight zero point 0).
    Imma(TcTile),
    /// The same tiles for any weight zero points: they also sum each row of activation codes
    /// (the `*_wzp` entries).
    ImmaWzp(TcTile),
    /// The CUDA-core depthwise kernel of `cuda/int8_simt.cu` (one input channel per group).
    Depthwise,
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
    /// A lowered int8 convolution ([`Int8Algo`]; forward or transposed).
    Int8Conv(Int8Algo),
    /// `qc_pad_channels_u8`: the channel padding (and NCHW → channels-last copy) of u8 codes,
    /// with the input zero point in the extra slots.
    PadChannelsU8,
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
    /// Activation dtype (convolutions, split-K); `None` for the weight and layout kernels.
    pub dtype: Option<DType>,
    /// Transposed convolution (gather form).
    pub transposed: bool,
    /// Tensor-core convolutions: the entry reads the weight as 8-bit codes with a scale and zero
    /// point per output channel (`*_q8`), dequantizing while it loads; `qc_dequant_codes` reads
    /// codes too.
    pub weight_codes: bool,
    /// The C++ that defines the entry point in its program: a macro of its source file called
    /// with the entry's name and template arguments (`QC_TC_ENTRY(qc_conv_tc_f16_64x64, qc_half,
    /// 64, 64, …)`).
    pub definition: &'static str,
}

/// Every entry point ([`VARIANTS`]).
pub fn all_variants() -> impl Iterator<Item = &'static KernelVariant> {
    VARIANTS.iter()
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
    VARIANTS.iter().find(|v| v.kind == KernelKind::SplitKReduce && v.dtype == Some(dtype))
}

/// The int8 tensor-core entry point for a direction and tile (`qc_conv_imma_*`; `wzp`: the
/// `*_wzp` entry, for weights with a zero point other than 0), or `None` where none exists
/// (transposed: the 128×128 and 64×64 tiles only; no element-wise loader; `wzp` and forward:
/// not the 128×128 tile).
pub fn imma_variant(transposed: bool, tile: TcTile, wzp: bool) -> Option<&'static KernelVariant> {
    let algo = if wzp { Int8Algo::ImmaWzp(tile) } else { Int8Algo::Imma(tile) };
    VARIANTS.iter().find(|v| v.transposed == transposed && v.kind == KernelKind::Int8Conv(algo))
}

/// `qc_dw_int8`, the int8 depthwise kernel (always listed; `Option` as the other look-ups).
pub fn dw_int8_variant() -> Option<&'static KernelVariant> {
    VARIANTS.iter().find(|v| v.kind == KernelKind::Int8Conv(Int8Algo::Depthwise))
}

/// `qc_pad_channels_u8` (always listed).
pub fn pad_channels_u8_variant() -> Option<&'static KernelVariant> {
    VARIANTS.iter().find(|v| v.kind == KernelKind::PadChannelsU8)
}

/// The channel-padding kernel for elements of `bytes` bytes (2 or 4).
pub fn pad_channels_variant(bytes: u32) -> Option<&'static KernelVariant> {
    VARIANTS.iter().find(|v| v.kind == KernelKind::PadChannels(bytes))
}

/// The layout kernel for elements of `bytes` bytes (2 or 4).
pub fn transpose_variant(bytes: u32) -> Option<&'static KernelVariant> {
    VARIANTS.iter().find(|v| v.kind == KernelKind::Transpose(bytes))
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
            let src = v.source.source();
            // `NAME(` (a kernel written out), or the first argument of an entry macro.
            let defined = src.contains(&needle)
                || src.contains(&format!("({},", v.name))
                || src.contains(&format!("({})", v.name));
            assert!(defined, "{} is not defined in {}", v.name, v.source.file_name());
            // The definition is the program's own macro, defined by its file or a header.
            assert!(v.source.source().contains(v.definition), "{}", v.definition);
            let (mac, args) = v.definition.split_once('(').unwrap();
            assert!(args.starts_with(v.name) && args.ends_with(')'), "{}", v.definition);
            let define = format!("#define {mac}(NAME");
            let text = std::iter::once(v.source.source()).chain(HEADERS.iter().map(|h| h.1));
            assert!(text.clone().any(|t| t.contains(&define)), "{mac} is not defined for {}", v.name);
        }
        // Every program's file is a source file; every source file serves a program.
        for s in KernelSource::ALL {
            assert!(SOURCE_FILES.iter().any(|f| f.0 == s.file_name()), "{}", s.file_name());
            assert!(s.source().ends_with('\n') && s.source().contains("the entry points of program"));
        }
        for (file, _) in SOURCE_FILES {
            assert!(KernelSource::ALL.iter().any(|s| s.file_name() == *file), "{file} is not compiled");
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
            assert_eq!(conv_variant(false, dtype, ConvAlgo::DepthwiseNhwc).unwrap().source, KernelSource::Depthwise);
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
                        let plain_args = p.definition.strip_prefix(&format!("QC_TC_ENTRY({}", p.name));
                        let code_args = c.definition.strip_prefix(&format!("QC_TC_ENTRY({}", c.name));
                        assert_eq!(
                            code_args.and_then(|a| a.strip_suffix(", true)")),
                            plain_args.and_then(|a| a.strip_suffix(", false)"))
                        );
                    }
                }
            }
        }
        assert_eq!(dequant_codes_variant().unwrap().source, KernelSource::FakeQuant);
        // The weight and convolution entries (as before the layout and split-K kernels joined
        // the one list), then those seven.
        let layout_or_splitk = |v: &&KernelVariant| {
            matches!(v.kind, KernelKind::Transpose(_) | KernelKind::PadChannels(_) | KernelKind::SplitKReduce)
        };
        let int8 = |v: &&KernelVariant| matches!(v.kind, KernelKind::Int8Conv(_) | KernelKind::PadChannelsU8);
        assert_eq!(
            VARIANTS.iter().filter(|v| !layout_or_splitk(v) && !int8(v)).count(),
            4 + 2 * 3 * 4 + 2 * 4 + 2 * 2 * 2 + 2 * 2 * 2 + 5 + 3 + 4
        );
        // The Hopper program: f16 and bf16, 128 and 64 channels per tile, forward only.
        for dtype in [DType::F16, DType::BF16] {
            for bn in [128, 64] {
                let v = conv_variant(false, dtype, ConvAlgo::Wgmma(bn)).unwrap();
                assert_eq!(v.source, KernelSource::ConvWg);
                assert!(v.name.ends_with(&format!("_128x{bn}")) && v.definition.ends_with(&format!(", {bn})")));
                assert!(conv_variant(true, dtype, ConvAlgo::Wgmma(bn)).is_none());
            }
            assert!(conv_variant(false, dtype, ConvAlgo::Wgmma(32)).is_none());
        }
        assert!(conv_variant(false, DType::F32, ConvAlgo::Wgmma(128)).is_none());
        assert_eq!(VARIANTS.iter().filter(layout_or_splitk).count(), 7);
        // The int8 family: 3 forward and 2 transposed tiles, 4 of them also as *_wzp, the
        // depthwise kernel, the u8 copy.
        assert_eq!(VARIANTS.iter().filter(int8).count(), 11);
        for tile in TcTile::ALL {
            for transposed in [false, true] {
                for wzp in [false, true] {
                    let exists = tile != TcTile::Gather128x64
                        && (!transposed || tile != TcTile::T128x64)
                        && (!wzp || transposed || tile != TcTile::T128x128);
                    let v = imma_variant(transposed, tile, wzp);
                    assert_eq!(v.is_some(), exists, "{transposed} {tile:?} {wzp}");
                    let Some(v) = v else { continue };
                    assert_eq!(v.source.file_name(), "conv_imma.cu");
                    let suffix = format!("{}{}", tile.suffix(), if wzp { "_wzp" } else { "" });
                    assert!(v.name.ends_with(&suffix) && v.dtype.is_none() && v.transposed == transposed);
                    assert!(v.definition.ends_with(&format!("{transposed}, {wzp})")), "{}", v.definition);
                    // The same tile geometry as the f16 tiles (choose_tc_tile's occupancy model).
                    let f16 = conv_variant(transposed, DType::F16, ConvAlgo::TensorCore(tile)).unwrap();
                    let geometry = |d: &str| d.split(", ").skip(2).take(6).collect::<Vec<_>>().join(", ");
                    let imma_args = v.definition.split(", ").skip(1).take(6).collect::<Vec<_>>().join(", ");
                    assert_eq!(imma_args, geometry(f16.definition), "{}", v.name);
                }
            }
        }
        assert_eq!(dw_int8_variant().unwrap().source, KernelSource::Int8Simt);
        assert_eq!(pad_channels_u8_variant().unwrap().source, KernelSource::Int8Simt);
        assert_eq!(transpose_variant(2).unwrap().name, "qc_transpose_b16");
        assert_eq!(transpose_variant(4).unwrap().name, "qc_transpose_b32");
        assert!(transpose_variant(8).is_none());
        assert_eq!(pad_channels_variant(2).unwrap().name, "qc_pad_channels_b16");
        assert_eq!(pad_channels_variant(4).unwrap().source, KernelSource::Layout);
        assert!(pad_channels_variant(1).is_none());
        assert_eq!(splitk_reduce_variant(DType::BF16).unwrap().name, "qc_splitk_reduce_bf16");
        assert_eq!(splitk_reduce_variant(DType::F32).unwrap().name, "qc_splitk_reduce_f32");
    }

    #[test]
    fn the_hopper_program_targets_sm_90a_only() {
        let (sm80, sm90) = (Arch::new(8, 0), Arch::new(9, 0));
        for s in KernelSource::ALL {
            let hopper = s == KernelSource::ConvWg;
            assert_eq!(s.targets(Arch::SM90A), hopper, "{s}");
            assert_eq!(s.targets(sm90), !hopper, "{s}");
            assert_eq!(s.targets(sm80), !hopper, "{s}");
            // What a device of each architecture compiles it for.
            assert_eq!(s.target_on(sm90), Some(if hopper { Arch::SM90A } else { sm90 }), "{s}");
            assert_eq!(s.target_on(sm80), (!hopper).then_some(sm80), "{s}");
            assert_eq!(s.target_on(Arch::new(12, 0)), (!hopper).then_some(Arch::new(12, 0)), "{s}");
        }
        assert_eq!(KernelSource::for_arch(Arch::SM90A).collect::<Vec<_>>(), [KernelSource::ConvWg]);
        assert_eq!(KernelSource::for_arch(sm90).count(), KernelSource::COUNT - 1);
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
