/*
 * Transposed convolution (ConvTranspose1d/2d/3d), GATHER form: every output element is computed
 * by exactly one thread, which sums the inputs that scatter into it, so there are no atomics and
 * the result is deterministic (docs/design.md principle 1). From ConvProblem (src/cpu/mod.rs):
 *   y[b,k,o] = bias[k] + sum_{c in group(k), j, i : i*stride = o + pad - j*dilation, 0 <= i < in}
 *              w[c, k', j] * x[b, c, i]
 * with the weight stored [C, K/groups, taps] (QcConvParams weight strides), out_size chosen by the
 * host (output_padding / output_size already applied, docs/numerics.md section 6), padding mode zeros.
 *
 * Phase decomposition (cuda/conv_igemm.cuh): outputs are grouped by o mod stride, so that within
 * a block every output has the same set of contributing taps; inactive taps are skipped for the
 * whole block and the remaining work is a dense implicit GEMM, exactly like the forward kernel.
 *   qc_conv_tr_<dtype>_<tile>   tiled implicit GEMM per phase, tile = t128 | t64 | m32
 *   qc_conv_tr_<dtype>_direct   direct gather kernel (small Cg, e.g. depthwise)
 * Argument: QcConvParams with transposed = 1, phases = stride, sub_size = ceil(out_size/stride).
 */
#include "conv_igemm.cuh"

/* Two kernels per NVRTC program (src/cuda/kernels.rs): -DQC_PART=1, 3, 5 the t128 and m32 tiles of
 * f32, f16, bf16; 2, 4, 6 their t64 tile and direct kernel. */
#ifndef QC_PART
#error "compile with -DQC_PART=1..6 (see src/cuda/kernels.rs)"
#endif

#if QC_PART == 1
QC_IGEMM_ENTRY(qc_conv_tr_f32_t128, float, QcTileT128, true)
QC_IGEMM_ENTRY(qc_conv_tr_f32_m32, float, QcTileM32, true)
#elif QC_PART == 2
QC_IGEMM_ENTRY(qc_conv_tr_f32_t64, float, QcTileT64, true)
QC_DIRECT_ENTRY(qc_conv_tr_f32_direct, float, true)
#elif QC_PART == 3
QC_IGEMM_ENTRY(qc_conv_tr_f16_t128, qc_half, QcTileT128, true)
QC_IGEMM_ENTRY(qc_conv_tr_f16_m32, qc_half, QcTileM32, true)
#elif QC_PART == 4
QC_IGEMM_ENTRY(qc_conv_tr_f16_t64, qc_half, QcTileT64, true)
QC_DIRECT_ENTRY(qc_conv_tr_f16_direct, qc_half, true)
#elif QC_PART == 5
QC_IGEMM_ENTRY(qc_conv_tr_bf16_t128, qc_bf16, QcTileT128, true)
QC_IGEMM_ENTRY(qc_conv_tr_bf16_m32, qc_bf16, QcTileM32, true)
#elif QC_PART == 6
QC_IGEMM_ENTRY(qc_conv_tr_bf16_t64, qc_bf16, QcTileT64, true)
QC_DIRECT_ENTRY(qc_conv_tr_bf16_direct, qc_bf16, true)
#endif
