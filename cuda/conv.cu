/*
 * Forward convolution (Conv1d/2d/3d after normalisation to 3-d, ConvProblem in src/problem.rs):
 *   y[b,k,o] = bias[k] + sum_{c in group(k), j} w[k, c', j] * x~[b, c, o*stride + j*dilation - pad]
 * where x~ reads outside the input according to the padding mode (zeros, reflect, replicate,
 * circular; docs/numerics.md section 7 and docs/design.md: the mode is honoured, unlike PyTorch's
 * reference module). Weight f32 (the fake-quantized weight), activations f32/f16/bf16 converted
 * to f32 on load, f32 accumulation, output in the activation dtype.
 *
 * The kernels are in cuda/conv_igemm.cuh; the program list in src/cuda/kernels.rs instantiates
 * them for this file with QC_IGEMM_ENTRY and QC_DIRECT_ENTRY, two to an NVRTC program:
 *   qc_conv_fwd_<dtype>_<tile>   tiled implicit GEMM, tile = t128 | t64 | m32
 *   qc_conv_fwd_<dtype>_direct   direct kernel (depthwise and other small-Cg problems)
 * Argument: QcConvParams (cuda/params.h) with transposed = 0, phases = {1,1,1},
 * sub_size = out_size. Kernel choice, arguments and launch geometry: src/cuda/ops/simt.rs and
 * src/cuda/ops/params.rs; CPU transcription: src/cuda/emulate/conv_igemm.rs.
 */
#include "conv_igemm.cuh"
