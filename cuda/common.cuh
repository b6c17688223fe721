/*
 * qconv device helpers shared by every kernel source: activation dtypes and their conversions.
 *
 * No CUDA toolkit header is included anywhere (docs/design.md principle 6): the kernels must compile
 * with nothing but libnvrtc. Half-precision conversions therefore use inline PTX, and the dtype
 * "types" are plain 16-bit wrappers.
 *
 * Passed to NVRTC as a named header (HEADERS in src/cuda/kernels.rs), like params.h. The CPU
 * transcriptions (src/cuda/emulate/) use the same padding index rule through
 * emulate::source_index, i.e. PaddingMode::source_index of src/problem.rs.
 */
#ifndef QCONV_COMMON_CUH
#define QCONV_COMMON_CUH

#include "params.h"

/** IEEE binary16 storage (the bits only; arithmetic happens in f32). */
struct qc_half {
    unsigned short bits;
};

/** bfloat16 storage (the upper 16 bits of a binary32). */
struct qc_bf16 {
    unsigned short bits;
};

/* ---- scalar conversions -------------------------------------------------------------------- */

/** binary16 -> binary32, exact (PTX cvt.f32.f16, every architecture). */
__device__ __forceinline__ float qc_half_to_float(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

/** binary32 -> binary16, round to nearest even; |x| >= 65520 gives +-inf (PTX cvt.rn.f16.f32).
 *  Same result as half::f16::from_f32 for every non-NaN input (docs/numerics.md 4.4). */
__device__ __forceinline__ unsigned short qc_float_to_half(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

/** bfloat16 -> binary32, exact: the bf16 bits are the high half of the f32 bits. */
__device__ __forceinline__ float qc_bf16_to_float(unsigned short b) {
    return __uint_as_float(((unsigned int)b) << 16);
}

/** binary32 -> bfloat16, round to nearest even, NaN stays NaN. */
__device__ __forceinline__ unsigned short qc_float_to_bf16(float f) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned short b;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(b) : "f"(f));
    return b;
#else
    /* Pre-sm_80 fallback with the same rounding: add 0x7fff plus the lsb of the result. */
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (unsigned short)((u >> 16) | 0x0040u); /* quiet NaN */
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
#endif
}

/* ---- typed load / store (activations are converted to f32 on load) ------------------------ */

/** Loads element `i` of an activation tensor as f32 (read-only path). */
template <typename T>
__device__ __forceinline__ float qc_load(const T* p, long long i);

template <>
__device__ __forceinline__ float qc_load<float>(const float* p, long long i) {
    return __ldg(p + i);
}

template <>
__device__ __forceinline__ float qc_load<qc_half>(const qc_half* p, long long i) {
    return qc_half_to_float(__ldg(reinterpret_cast<const unsigned short*>(p) + i));
}

template <>
__device__ __forceinline__ float qc_load<qc_bf16>(const qc_bf16* p, long long i) {
    return qc_bf16_to_float(__ldg(reinterpret_cast<const unsigned short*>(p) + i));
}

/** Stores an f32 value as element `i` of an output tensor in the activation dtype. */
template <typename T>
__device__ __forceinline__ void qc_store(T* p, long long i, float v);

template <>
__device__ __forceinline__ void qc_store<float>(float* p, long long i, float v) {
    p[i] = v;
}

template <>
__device__ __forceinline__ void qc_store<qc_half>(qc_half* p, long long i, float v) {
    reinterpret_cast<unsigned short*>(p)[i] = qc_float_to_half(v);
}

template <>
__device__ __forceinline__ void qc_store<qc_bf16>(qc_bf16* p, long long i, float v) {
    reinterpret_cast<unsigned short*>(p)[i] = qc_float_to_bf16(v);
}

/* ---- convolution index helpers (ConvProblem and PaddingMode, src/problem.rs) ---------------- */

/** Where a FORWARD convolution reads index `i` of a dimension of length `len`, or -1 for a zero.
 *  The rule of PaddingMode::source_index (src/problem.rs): zeros keeps i; reflect maps
 *  i < 0 to -i and i >= len to 2(len-1) - i; replicate clamps; circular adds/subtracts len once.
 *  An index still outside after the remap reads a zero. */
__device__ __forceinline__ long long qc_source_index(int mode, long long i, long long len) {
    long long j = i;
    if (mode == QC_PAD_REFLECT) {
        j = i < 0 ? -i : (i >= len ? 2 * (len - 1) - i : i);
    } else if (mode == QC_PAD_REPLICATE) {
        j = i < 0 ? 0 : (i >= len ? len - 1 : i);
    } else if (mode == QC_PAD_CIRCULAR) {
        j = i < 0 ? i + len : (i >= len ? i - len : i);
    }
    return (j >= 0 && j < len) ? j : -1;
}

/** qc_source_index in 32-bit arithmetic (the caller guarantees |i| and 2*len fit in int32). */
__device__ __forceinline__ int qc_source_index_i32(int mode, int i, int len) {
    int j = i;
    if (mode == QC_PAD_REFLECT) {
        j = i < 0 ? -i : (i >= len ? 2 * (len - 1) - i : i);
    } else if (mode == QC_PAD_REPLICATE) {
        j = i < 0 ? 0 : (i >= len ? len - 1 : i);
    } else if (mode == QC_PAD_CIRCULAR) {
        j = i < 0 ? i + len : (i >= len ? i - len : i);
    }
    return (j >= 0 && j < len) ? j : -1;
}

/** Ceiling division of non-negative 64-bit values. */
__device__ __forceinline__ long long qc_ceil_div(long long a, long long b) {
    return (a + b - 1) / b;
}

#endif /* QCONV_COMMON_CUH */
