/*
 * Depthwise convolution on channels-last tensors, on CUDA cores (QcConvParams with out_nhwc = 1
 * and the weight packed [taps][C] in float32 by the host: w_stride_tap = C).
 *
 * groups == C == K (one input and one output channel per group), C % 8 == 0. Each thread owns 8
 * consecutive channels of one output pixel (grid-stride over N*OD*OH*OW*C/8 items, so a warp
 * reads 16-byte vectors of consecutive channels: coalesced); taps in order, f32 weights (the
 * fake-quantized weight, unrounded), f32 fused multiply-adds, bias added last, one rounding of the
 * output: the Exact numerics of the other kernels, so this kernel serves both precisions. Padding
 * modes by index remapping (qc_source_index_i32). Fewer than 2^31 work items (outputs / 8): the
 * host checks it and runs the channels-first direct kernel beyond.
 *
 * Entry points: qc_dw_nhwc_<f32|f16|bf16>, instantiated by the program list in
 * src/cuda/kernels.rs with QC_DW_ENTRY below. Host side (eligibility, arguments, grid, launch):
 * src/cuda/ops/depthwise.rs. No CPU transcription yet; tests/cuda checks it against the oracle
 * on a GPU.
 */
#include "common.cuh"

template <typename T>
struct QcVec8;

template <>
struct QcVec8<qc_half> {
    static __device__ __forceinline__ void load(const qc_half* p, float* v) {
        const uint4 u = *reinterpret_cast<const uint4*>(p);
        const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            v[2 * i] = qc_half_to_float((unsigned short)(w[i] & 0xffffu));
            v[2 * i + 1] = qc_half_to_float((unsigned short)(w[i] >> 16));
        }
    }
    static __device__ __forceinline__ void store(qc_half* p, const float* v) {
        unsigned w[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            w[i] = (unsigned)qc_float_to_half(v[2 * i]) | ((unsigned)qc_float_to_half(v[2 * i + 1]) << 16);
        }
        *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
    }
};

template <>
struct QcVec8<qc_bf16> {
    static __device__ __forceinline__ void load(const qc_bf16* p, float* v) {
        const uint4 u = *reinterpret_cast<const uint4*>(p);
        const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            v[2 * i] = qc_bf16_to_float((unsigned short)(w[i] & 0xffffu));
            v[2 * i + 1] = qc_bf16_to_float((unsigned short)(w[i] >> 16));
        }
    }
    static __device__ __forceinline__ void store(qc_bf16* p, const float* v) {
        unsigned w[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            w[i] = (unsigned)qc_float_to_bf16(v[2 * i]) | ((unsigned)qc_float_to_bf16(v[2 * i + 1]) << 16);
        }
        *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
    }
};

template <>
struct QcVec8<float> {
    static __device__ __forceinline__ void load(const float* p, float* v) {
        const float4 a = *reinterpret_cast<const float4*>(p);
        const float4 b = *reinterpret_cast<const float4*>(p + 4);
        v[0] = a.x;
        v[1] = a.y;
        v[2] = a.z;
        v[3] = a.w;
        v[4] = b.x;
        v[5] = b.y;
        v[6] = b.z;
        v[7] = b.w;
    }
    static __device__ __forceinline__ void store(float* p, const float* v) {
        *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
        *reinterpret_cast<float4*>(p + 4) = make_float4(v[4], v[5], v[6], v[7]);
    }
};

template <typename T>
__device__ __forceinline__ void qc_dw_nhwc(const QcConvParams& p) {
    const T* x = reinterpret_cast<const T*>(p.x);
    const float* w = reinterpret_cast<const float*>(p.w);
    const float* bias = p.has_bias ? reinterpret_cast<const float*>(p.bias) : 0;
    T* y = reinterpret_cast<T*>(p.y);
    const int C = p.in_channels;
    const int c8s = C / 8;
    const long long items = (long long)p.batch * p.out_spatial * c8s; /* < 2^31 (host check) */
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long it = (long long)blockIdx.x * blockDim.x + threadIdx.x; it < items; it += stride) {
        /* Decode item -> (pixel, channel group) -> (b, od, oh, ow) in 32 bits: the host launches
         * this kernel only for fewer than 2^31 items (64-bit division is a slow subroutine). */
        const unsigned u = (unsigned)it;
        const int c0 = (int)(u % (unsigned)c8s) * 8;
        const unsigned pu = u / (unsigned)c8s;
        const unsigned bu = pu / (unsigned)p.out_spatial;
        unsigned su = pu - bu * (unsigned)p.out_spatial;
        const int ow = (int)(su % (unsigned)p.out_size[2]);
        su /= (unsigned)p.out_size[2];
        const int oh = (int)(su % (unsigned)p.out_size[1]);
        const int od = (int)(su / (unsigned)p.out_size[1]);
        const long long pix = pu;
        const long long b = bu;
        const T* xb = x + b * p.in_spatial * C + c0;
        float acc[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[i] = 0.0f;
        int tap = 0;
        for (int j0 = 0; j0 < p.kernel[0]; ++j0) {
            const int id = qc_source_index_i32(p.pad_mode, od * p.stride[0] - p.pad[0] + j0 * p.dilation[0], p.in_size[0]);
            for (int j1 = 0; j1 < p.kernel[1]; ++j1) {
                const int ih =
                    qc_source_index_i32(p.pad_mode, oh * p.stride[1] - p.pad[1] + j1 * p.dilation[1], p.in_size[1]);
                for (int j2 = 0; j2 < p.kernel[2]; ++j2, ++tap) {
                    const int iw =
                        qc_source_index_i32(p.pad_mode, ow * p.stride[2] - p.pad[2] + j2 * p.dilation[2], p.in_size[2]);
                    if (id < 0 || ih < 0 || iw < 0) continue;
                    float xv[8], wv[8];
                    QcVec8<T>::load(xb + (((long long)id * p.in_size[1] + ih) * p.in_size[2] + iw) * C, xv);
                    QcVec8<float>::load(w + (long long)tap * C + c0, wv);
#pragma unroll
                    for (int i = 0; i < 8; ++i) acc[i] = __fmaf_rn(xv[i], wv[i], acc[i]);
                }
            }
        }
        if (bias != 0) {
#pragma unroll
            for (int i = 0; i < 8; ++i) acc[i] = __fadd_rn(acc[i], bias[c0 + i]);
        }
        QcVec8<T>::store(y + pix * C + c0, acc);
    }
}

#define QC_DW_ENTRY(NAME, T)                                                                          \
    extern "C" __global__ void __launch_bounds__(256, 1) NAME(const QcConvParams p) { qc_dw_nhwc<T>(p); }
