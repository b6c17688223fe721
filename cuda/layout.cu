/*
 * Layout kernels: the batched 2-d transpose that moves activations between NCHW and channels-last
 * around the channels-last kernels, and the channel padding that lets the tensor-core tiles use
 * 16-byte loads when C/groups is not a multiple of 8. Both move raw 2- or 4-byte elements.
 *
 * Entry points (instantiated by the program list in src/cuda/kernels.rs with the macros below):
 *   qc_transpose_b16 / qc_transpose_b32         QcTransposeParams
 *   qc_pad_channels_b16 / qc_pad_channels_b32   QcPadChannelsParams
 * Host side: src/cuda/ops/layout.rs. CPU transcription: src/cuda/emulate/layout.rs.
 */
#include "common.cuh"

/* The element types, one token each (the entry macros take them as arguments). */
typedef unsigned short qc_b16;
typedef unsigned int qc_b32;

/* ---- layout: batched 2-d transpose through a 32x32 shared tile (32x8 threads) -------------- */

template <typename E>
__device__ __forceinline__ void qc_transpose(const QcTransposeParams& p) {
    __shared__ E tile[32][33];
    const long long tiles_c = (p.cols + 31) / 32;
    const long long tiles = tiles_c * ((p.rows + 31) / 32);
    const int tx = threadIdx.x, ty = threadIdx.y;
    for (long long b = blockIdx.z; b < p.batch; b += gridDim.z) {
        const E* src = reinterpret_cast<const E*>(p.src) + b * p.rows * p.cols;
        E* dst = reinterpret_cast<E*>(p.dst) + b * p.rows * p.cols;
        for (long long t = blockIdx.x; t < tiles; t += gridDim.x) {
            const long long r0 = (t / tiles_c) * 32;
            const long long c0 = (t % tiles_c) * 32;
            for (int i = ty; i < 32; i += 8) {
                const long long r = r0 + i, col = c0 + tx;
                if (r < p.rows && col < p.cols) tile[i][tx] = src[r * p.cols + col];
            }
            __syncthreads();
            for (int i = ty; i < 32; i += 8) {
                const long long col = c0 + i, r = r0 + tx;
                if (r < p.rows && col < p.cols) dst[col * p.rows + r] = tile[tx][i];
            }
            __syncthreads();
        }
    }
}

/* ---- channel padding for the tensor-core tiles (QcPadChannelsParams) ------------------------
 * One thread per pixel (grid-stride): consecutive threads read consecutive pixels of each NCHW
 * channel plane (coalesced) and write their pixel's groups * cg_pad channels. */
template <typename E>
__device__ __forceinline__ void qc_pad_channels(const QcPadChannelsParams& p) {
    const E* src = reinterpret_cast<const E*>(p.src);
    E* dst = reinterpret_cast<E*>(p.dst);
    const long long cin = (long long)p.groups * p.cg;
    const long long cout = (long long)p.groups * p.cg_pad;
    const long long total = p.batch * p.pixels;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long px = (long long)blockIdx.x * blockDim.x + threadIdx.x; px < total; px += stride) {
        const long long b = px / p.pixels;
        /* Source element of channel ch: base + ch * step (NCHW: planes apart; NHWC: adjacent). */
        const E* base = p.src_nhwc ? src + px * cin : src + b * cin * p.pixels + (px - b * p.pixels);
        const long long step = p.src_nhwc ? 1 : p.pixels;
        E* d = dst + px * cout;
        long long ch = 0;
        for (int g = 0; g < p.groups; ++g) {
            for (int c = 0; c < p.cg_pad; ++c) {
                E v = 0;
                if (c < p.cg) {
                    v = base[ch * step];
                    ++ch;
                }
                *d++ = v;
            }
        }
    }
}

#define QC_TRANSPOSE_ENTRY(NAME, E)                                                          \
    extern "C" __global__ void __launch_bounds__(256) NAME(const QcTransposeParams p) { \
        qc_transpose<E>(p);                                                             \
    }

#define QC_PAD_CHANNELS_ENTRY(NAME, E)                                                          \
    extern "C" __global__ void __launch_bounds__(256) NAME(const QcPadChannelsParams p) { \
        qc_pad_channels<E>(p);                                                             \
    }
