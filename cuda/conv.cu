/*
 * Forward convolution (Conv1d/2d/3d after normalisation to 3-d, ConvProblem in src/cpu/mod.rs):
 *   y[b,k,o] = bias[k] + sum_{c in group(k), j} w[k, c', j] * x~[b, c, o*stride + j*dilation - pad]
 * where x~ reads outside the input according to the padding mode (zeros, reflect, replicate,
 * circular; docs/numerics.md section 7 and docs/design.md: the mode is honoured, unlike PyTorch's
 * reference module). Weight f32 (the fake-quantized weight), activations f32/f16/bf16 converted
 * to f32 on load, f32 accumulation, output in the activation dtype.
 *
 * The kernels are in cuda/conv_igemm.cuh; this file instantiates them:
 *   qc_conv_fwd_<dtype>_<tile>   tiled implicit GEMM, tile = t128 | t64 | m32
 *   qc_conv_fwd_<dtype>_direct   direct kernel (depthwise and other small-Cg problems)
 * Argument: QcConvParams (cuda/params.h) with transposed = 0, phases = {1,1,1},
 * sub_size = out_size. Launch geometry: src/cuda/launch.rs.
 */
#include "conv_igemm.cuh"

/* Two kernels per NVRTC program (src/cuda/kernels.rs): -DQC_PART=1, 3, 5 the t128 and m32 tiles of
 * f32, f16, bf16; 2, 4, 6 their t64 tile and direct kernel. */
#ifndef QC_PART
#error "compile with -DQC_PART=1..6 (see src/cuda/kernels.rs)"
#endif

#if QC_PART == 1
QC_IGEMM_ENTRY(qc_conv_fwd_f32_t128, float, QcTileT128, false)
QC_IGEMM_ENTRY(qc_conv_fwd_f32_m32, float, QcTileM32, false)
#elif QC_PART == 2
QC_IGEMM_ENTRY(qc_conv_fwd_f32_t64, float, QcTileT64, false)
QC_DIRECT_ENTRY(qc_conv_fwd_f32_direct, float, false)
#elif QC_PART == 3
QC_IGEMM_ENTRY(qc_conv_fwd_f16_t128, qc_half, QcTileT128, false)
QC_IGEMM_ENTRY(qc_conv_fwd_f16_m32, qc_half, QcTileM32, false)
#elif QC_PART == 4
QC_IGEMM_ENTRY(qc_conv_fwd_f16_t64, qc_half, QcTileT64, false)
QC_DIRECT_ENTRY(qc_conv_fwd_f16_direct, qc_half, false)
#elif QC_PART == 5
QC_IGEMM_ENTRY(qc_conv_fwd_bf16_t128, qc_bf16, QcTileT128, false)
QC_IGEMM_ENTRY(qc_conv_fwd_bf16_m32, qc_bf16, QcTileM32, false)
#elif QC_PART == 6
QC_IGEMM_ENTRY(qc_conv_fwd_bf16_t64, qc_bf16, QcTileT64, false)
QC_DIRECT_ENTRY(qc_conv_fwd_bf16_direct, qc_bf16, false)
#endif
