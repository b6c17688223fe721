/*
 * Tensor-core primitives shared by cuda/conv_tc.cu (the tiles) and cuda/splitk.cu (the split-K
 * reduction, which rounds its sums with QcMma<T>::cvt exactly as the tiles' epilogue does): the
 * inline-PTX wrappers of cp.async, ldmatrix and mma.sync, the operand traits QcMma<T> (f16, bf16,
 * TF32) and the XOR swizzle of the shared-memory tiles.
 *
 * Passed to NVRTC as a named header (HEADERS in src/cuda/kernels.rs). Their CPU transcription
 * (fragment layouts, swizzle, ldmatrix) is src/cuda/emulate/conv_tc.rs.
 */
#ifndef QCONV_TENSOR_CORE_CUH
#define QCONV_TENSOR_CORE_CUH

#include "common.cuh"

/* A shared-memory tile row per stage: 32 16-bit slots = 64 bytes (32 halves, or 16 floats for TF32). */
#define QC_TC_BK 32

__device__ __forceinline__ unsigned qc_smem_addr(const void* ptr) {
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(ptr));
    return a;
}

/** 16-byte global -> shared copy; `pred` false writes 16 zero bytes and reads nothing. */
__device__ __forceinline__ void qc_cp_async16(unsigned dst, const void* src, bool pred) {
    const int n = pred ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}

__device__ __forceinline__ void qc_cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void qc_cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void qc_ldmatrix_x4(unsigned addr, unsigned& r0, unsigned& r1, unsigned& r2,
                                               unsigned& r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

/** The tensor-core product of one operand type (m16n8k16 for the 16-bit types, m16n8k8 for
 *  TF32), the preparation of an A fragment register, and the output conversion. */
template <typename T>
struct QcMma;

template <>
struct QcMma<qc_half> {
    static __device__ __forceinline__ void mma(float* c, const unsigned* a, const unsigned* b) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
    static __device__ __forceinline__ unsigned prep_a(unsigned r) { return r; }
    static __device__ __forceinline__ unsigned short cvt(float v) { return qc_float_to_half(v); }
};

template <>
struct QcMma<qc_bf16> {
    static __device__ __forceinline__ void mma(float* c, const unsigned* a, const unsigned* b) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
    static __device__ __forceinline__ unsigned prep_a(unsigned r) { return r; }
    static __device__ __forceinline__ unsigned short cvt(float v) { return qc_float_to_bf16(v); }
};

/* TF32 (opt-in precision for f32 activations): m16n8k8, f32 accumulation. Its fragments hold
 * one 32-bit element per register in the same (row, column) pattern as two 16-bit elements of
 * m16n8k16, and a 16-byte chunk holds 4 floats instead of 8 halves, so the same shared-memory
 * tiles (64 bytes per row and stage) and the same ldmatrix addressing serve both. The weight is
 * rounded to TF32 by the host; the activations are rounded here, to nearest with ties away from
 * zero (cvt.rna), after ldmatrix. */
template <>
struct QcMma<float> {
    static __device__ __forceinline__ void mma(float* c, const unsigned* a, const unsigned* b) {
        asm volatile(
            "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
    static __device__ __forceinline__ unsigned prep_a(unsigned r) {
        unsigned t;
        asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(t) : "f"(__uint_as_float(r)));
        return t;
    }
    static __device__ __forceinline__ float cvt(float v) { return v; }
};

/** Element offset of 16-byte chunk `chunk` (0..3) of row `row` in a [rows][32] tile. */
__device__ __forceinline__ int qc_swz(int row, int chunk) { return row * QC_TC_BK + ((chunk ^ ((row >> 1) & 3)) << 3); }

#endif /* QCONV_TENSOR_CORE_CUH */
