/*
 * Transposed convolution (ConvTranspose1d/2d/3d), GATHER form: every output element is computed
 * by exactly one thread, which sums the inputs that scatter into it, so there are no atomics and
 * the result is deterministic (docs/design.md principle 1). From ConvProblem (src/problem.rs):
 *   y[b,k,o] = bias[k] + sum_{c in group(k), j, i : i*stride = o + pad - j*dilation, 0 <= i < in}
 *              w[c, k', j] * x[b, c, i]
 * with the weight stored [C, K/groups, taps] (QcConvParams weight strides), out_size chosen by the
 * host (output_padding / output_size already applied, docs/numerics.md section 6), padding mode zeros.
 *
 * Phase decomposition (cuda/conv_igemm.cuh): outputs are grouped by o mod stride, so that within
 * a block every output has the same set of contributing taps; inactive taps are skipped for the
 * whole block and the remaining work is a dense implicit GEMM, exactly like the forward kernel.
 * The program list in src/cuda/kernels.rs instantiates them for this file, two to a program:
 *   qc_conv_tr_<dtype>_<tile>   tiled implicit GEMM per phase, tile = t128 | t64 | m32
 *   qc_conv_tr_<dtype>_direct   direct gather kernel (small Cg, e.g. depthwise)
 * Argument: QcConvParams with transposed = 1, phases = stride, sub_size = ceil(out_size/stride).
 * Host side: src/cuda/ops/simt.rs; CPU transcription: src/cuda/emulate/conv_igemm.rs.
 */
#include "conv_igemm.cuh"
