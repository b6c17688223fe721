//! CPU transcriptions of the CUDA kernels, test-only: one file per `cuda/` source they mirror,
//! each run against the CPU path or the f64 oracle, so that indexing, masking and the exact
//! arithmetic of the kernels are checked on machines without a GPU. Each `.cu` names its
//! transcription in its header; when a kernel changes, its transcription changes with it.
//!
//! | file | mirrors | checked against |
//! |---|---|---|
//! | [`fakequant`] | `cuda/fakequant.cu` (every mode, the fast path and its walk, `qc_dequant_codes`) | the CPU fake-quant, bit for bit |
//! | [`conv_igemm`] | `cuda/conv_igemm.cuh` (tiled implicit GEMM block by block, direct kernel thread by thread) | the f64 oracle |
//! | [`conv_tc`] | `cuda/conv_tc.cu` and `cuda/tensor_core.cuh` (loaders, swizzle, ldmatrix, MMA fragments, epilogue) | the f64 oracle, exactly |
//! | [`conv_wg`] | `cuda/conv_wg.cu` (sm_90a: TMA im2col/tiled copies from the host's tensor-map plan, 128-byte swizzle, wgmma descriptors and fragments, epilogue; the mbarrier ring as a state machine) | the f64 oracle, exactly; injected mistakes must be caught |
//! | [`conv_imma`] | `cuda/conv_imma.cu`, `cuda/int8.cuh` (int8 tiles: loaders, swizzle, 8-bit ldmatrix, m16n8k32 fragments, row sums, zero-point corrections, requantization) | `conv_int8_naive`, code for code |
//! | [`int8_simt`] | `cuda/int8_simt.cu` (`qc_dw_int8`, `qc_pad_channels_u8`) | `conv_int8_naive`, the copy's rule |
//! | [`splitk`] | `cuda/splitk.cu` (the ordered sum of the partials) | used by [`conv_tc`] |
//! | [`layout`] | `cuda/layout.cu` (`qc_pad_channels`) | the index rule it implements |
//!
//! They share the one padding rule, [`PaddingMode::source_index`], through [`source_index`],
//! and draw random data from [`crate::testing::Rng`].

use crate::cuda::ops::params::{QC_PAD_CIRCULAR, QC_PAD_REFLECT, QC_PAD_REPLICATE, QC_PAD_ZEROS};
use crate::problem::PaddingMode;

pub mod conv_igemm;
pub mod conv_imma;
pub mod conv_tc;
pub mod conv_wg;
pub mod fakequant;
pub mod int8_simt;
pub mod layout;
pub mod splitk;

/// The [`PaddingMode`] of a `QcPadMode` code (`QcConvParams::pad_mode`).
pub fn pad_mode(code: i32) -> PaddingMode {
    match code as u32 {
        QC_PAD_ZEROS => PaddingMode::Zeros,
        QC_PAD_REFLECT => PaddingMode::Reflect,
        QC_PAD_REPLICATE => PaddingMode::Replicate,
        QC_PAD_CIRCULAR => PaddingMode::Circular,
        m => panic!("pad_mode {m}"),
    }
}

/// `qc_source_index` / `qc_source_index_i32` of `cuda/common.cuh`: the input index a forward
/// convolution reads for index `i` of a dimension of length `len` under padding mode `code`, or
/// -1 for a zero — [`PaddingMode::source_index`], in the kernels' signed arithmetic.
pub fn source_index(code: i32, i: i64, len: i64) -> i64 {
    pad_mode(code).source_index(i as isize, len.max(0) as usize).map_or(-1, |j| j as i64)
}
