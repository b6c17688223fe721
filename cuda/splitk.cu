/*
 * The split-K reduction of the tensor-core convolution (cuda/conv_tc.cu): when a forward problem
 * fills less than half a wave of tiles, the host splits the reduction into ranges along grid.z,
 * each tile writes its f32 partial sums to QcConvParams.partial, and this kernel adds them in
 * split order, adds the bias and rounds once (QcMma<T>::cvt, the tiles' own output rounding).
 *
 * Entry points (argument QcConvParams, the tiles' own, with `partial` and `splits` set):
 *   qc_splitk_reduce_<f16|bf16|f32>   instantiated by the program list in src/cuda/kernels.rs
 *                                      with QC_SPLITK_ENTRY below.
 * Host side: src/cuda/ops/conv_tc.rs (split factor, grid, launch). CPU transcription: the
 * reduction in src/cuda/emulate/splitk.rs.
 */
#include "tensor_core.cuh"

/* y[m, g*Kg + n] = round(bias + sum over splits, in split order, of partial[split][g][m][n]):
 * deterministic (no atomics). One thread per output element, grid-stride; forward convolutions
 * (m = b*out_spatial + position), channels-last or NCHW output. */
template <typename T>
__device__ __forceinline__ void qc_splitk_reduce(const QcConvParams& p) {
    const float* part = reinterpret_cast<const float*>(p.partial);
    const float* bias = p.has_bias ? reinterpret_cast<const float*>(p.bias) : 0;
    unsigned short* y = reinterpret_cast<unsigned short*>(p.y);
    float* yf = reinterpret_cast<float*>(p.y);
    const long long m_total = (long long)p.batch * p.out_spatial;
    const long long K = p.out_channels;
    const long long total = m_total * K;
    const long long slice = (long long)p.groups * m_total * p.kg; /* one split's partials */
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        /* e enumerates the output channels-last: e = m*K + k. */
        const long long m = e / K;
        const int k = (int)(e - m * K);
        const int g = k / p.kg, n = k - g * p.kg;
        const float* src = part + ((long long)g * m_total + m) * p.kg + n;
        float v = src[0];
        for (int s = 1; s < p.splits; ++s) v = __fadd_rn(v, src[s * slice]);
        if (bias != 0) v = __fadd_rn(v, bias[k]);
        long long out;
        if (p.out_nhwc) {
            out = e;
        } else {
            const long long b = m / p.out_spatial;
            out = (b * K + k) * p.out_spatial + (m - b * p.out_spatial);
        }
        if constexpr (sizeof(T) == 2) {
            y[out] = QcMma<T>::cvt(v);
        } else {
            yf[out] = v;
        }
    }
}

#define QC_SPLITK_ENTRY(NAME, T)                                                       \
    extern "C" __global__ void __launch_bounds__(256) NAME(const QcConvParams p) { \
        qc_splitk_reduce<T>(p);                                                    \
    }
