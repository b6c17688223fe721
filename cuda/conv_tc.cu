/*
 * Tensor-core forward convolution: implicit GEMM on mma.sync.m16n8k16 (f16 or bf16 operands,
 * f32 accumulation), channels-last activations, cp.async multi-stage pipeline, ldmatrix from
 * XOR-swizzled shared memory. Plus the layout kernels that let NCHW tensors use it.
 *
 * GEMM view, per group g (grid.z):
 *     Y[m, n] = bias[g*Kg + n] + sum_r A[m, r] * B[n, r]
 *   m in [0, N*OD*OH*OW)  output position (batch-major), grid.x tiles of BM
 *   n in [0, Kg)          output channel within the group, grid.y tiles of BN
 *   r = tap*Cg + c        reduction over (kernel tap, input channel of the group), BK = 32 deep
 *   A[m, r] = x[b, o*stride - pad + j*dilation, g*Cg + c]  (channels-last input, remapped by the
 *             padding mode, zero outside): the im2col matrix, never materialised. With Cg a
 *             multiple of 8, every 8 consecutive r are 8 consecutive channels of one input pixel:
 *             one 16-byte cp.async (zero-filled when the pixel is padding or r >= Cg*taps).
 *   B[n, r] = w[g*Kg + n][tap][c], the weight packed by the host as [K][taps][Cg] in the
 *             activation dtype (the fake-quantized f32 weight rounded to nearest even).
 * Block tile BM x BN, warps WM x WN, each warp a (BM/WM) x (BN/WN) tile of m16n8 accumulators.
 * Shared memory per stage: A [BM][32] and B [BN][32] halves, rows of four 16-byte chunks, chunk
 * index XOR-ed with (row >> 1) & 3 so that the 8 rows an ldmatrix reads (and the cp.async
 * writes) hit distinct banks. STAGES-deep pipeline: tile kt+STAGES-1 is loading while kt is
 * multiplied. The output is written channels-last (out_nhwc = 1) or NCHW (out_nhwc = 0), bias
 * added in f32 before the one rounding to the activation dtype.
 *
 * A second A loader (VEC_A = false, the *_gather entries) reads the 8 elements of a chunk one by
 * one, for any Cg (a 3-channel stem): slower loads, same tensor-core math. The packed weight rows
 * are w_stride_m elements long: Cg*taps rounded up to 8, zero-padded, so B stays 16-byte aligned.
 *
 * Host requirements (src/cuda/launch.rs checks them before every launch): forward convolution
 * (transposed = 0), Cg % 8 == 0 for the vector loader, x / w 16-byte aligned, every per-dimension coordinate within
 * int32 as for the other kernels, grid.y and grid.z <= 65535. 64-bit offsets throughout.
 *
 * Entry points: qc_conv_tc_<f16|bf16>_<BM>x<BN>; qc_transpose_b16 / qc_transpose_b32
 * (QcTransposeParams).
 */
#include "conv_igemm.cuh" /* common.cuh, qc_phase, qc_tap_set */

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

/** Eight 8-bit weight codes (bytes of `q`, element e in byte e) dequantized exactly as the
 *  host's fake-quant does, f32((f32(code) - zero) * scale), then rounded to T: elements at and
 *  past `valid` are +0 (the zero-fill of the 16-bit path). Returns the 16-byte chunk. */
template <typename T>
__device__ __forceinline__ uint4 qc_dequant8(uint2 q, float scale, float zero, int valid, bool sgn) {
    unsigned out[4];
#pragma unroll
    for (int e2 = 0; e2 < 4; ++e2) {
        unsigned pair = 0;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int e = 2 * e2 + h;
            const unsigned word = e < 4 ? q.x : q.y;
            const int sh = 8 * (e & 3);
            const int code = sgn ? ((int)(word << (24 - sh)) >> 24) : (int)((word >> sh) & 0xffu);
            const float v = __fmul_rn(__fsub_rn((float)code, zero), scale);
            const unsigned bits = e < valid ? (unsigned)QcMma<T>::cvt(v) : 0u;
            pair |= bits << (16 * h);
        }
        out[e2] = pair;
    }
    return make_uint4(out[0], out[1], out[2], out[3]);
}

template <typename T, int BM, int BN, int WM, int WN, int STAGES, bool VEC_A, bool TRANS, bool Q8>
__device__ __forceinline__ void qc_conv_tc(const QcConvParams& p) {
    constexpr int THREADS = WM * WN * 32;
    /* A stage row is 64 bytes = four 16-byte chunks: EPC elements per chunk, BK per row (32
     * halves or 16 floats); two tensor-core k-steps per stage (k16 or, TF32, k8). */
    constexpr int EPC = 16 / (int)sizeof(T);
    constexpr int BK = 4 * EPC;
    static_assert(sizeof(T) == 2 || (VEC_A && !Q8), "TF32: vector loads and float weights only");
    constexpr int WTM = BM / WM;
    constexpr int WTN = BN / WN;
    constexpr int MI = WTM / 16;
    constexpr int NI = WTN / 8;
    constexpr int A_CH = BM * 4 / THREADS; /* 16-byte A chunks per thread and stage */
    constexpr int B_CH = BN * 4 / THREADS;
    constexpr int ROW_STEP = THREADS / 4;
    static_assert(A_CH >= 1 && B_CH >= 1 && A_CH * THREADS == BM * 4 && B_CH * THREADS == BN * 4, "tile/threads");
    static_assert(MI >= 1 && NI >= 2 && NI % 2 == 0 && WTM % 16 == 0 && WTN % 16 == 0, "warp tile");
    static_assert(STAGES >= 2, "pipeline");
    __shared__ __align__(128) unsigned short smem_a[STAGES * BM * QC_TC_BK];
    __shared__ __align__(128) unsigned short smem_b[STAGES * BN * QC_TC_BK];

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int warp_m = warp % WM;
    const int warp_n = warp / WM;
    /* grid.z = groups * splits: group g, reduction range `split` (split-K, forward only). */
    const int g = (int)(blockIdx.z % (unsigned)p.groups);
    const int split = (int)(blockIdx.z / (unsigned)p.groups);
    const int n0 = blockIdx.y * BN;
    const int cg = p.cg;
    const int kg = p.kg;
    const long long wrow = p.w_stride_m; /* packed weight row: taps*Cg rounded up to 8, zero-padded */
    const long long C = p.in_channels;
    const T* x = reinterpret_cast<const T*>(p.x);
    const T* w = reinterpret_cast<const T*>(p.w);
    const int D = p.in_size[0], H = p.in_size[1], W = p.in_size[2];

    /* Rows: forward, m = b*out_spatial + output position; transposed, m = b*sub_spatial + q in
     * the phase's sub-grid (output o = r + q*stride), one phase per group of grid.x blocks. */
    int ph[3] = {0, 0, 0};
    QcTapSet ts;
    long long m0, m_total;
    if (TRANS) {
        m_total = (long long)p.batch * p.sub_spatial;
        const long long m_tiles = (m_total + BM - 1) / BM;
        const int phase = (int)(blockIdx.x / m_tiles);
        m0 = (long long)(blockIdx.x - (long long)phase * m_tiles) * BM;
        qc_phase(p, phase, ph);
        ts = qc_tap_set<true>(p, ph);
    } else {
        m_total = (long long)p.batch * p.out_spatial;
        m0 = (long long)blockIdx.x * BM;
        ts = qc_tap_set<false>(p, ph);
    }
    const int kred = ts.total * cg; /* reduction over the active taps */

    /* This thread's chunk column and its A rows (output positions), fixed for the whole loop. */
    const int kc = tid & 3;
    long long a_xb[A_CH];
    int a_base[A_CH][3];
    bool a_ok[A_CH];
#pragma unroll
    for (int i = 0; i < A_CH; ++i) {
        const long long m = m0 + (tid >> 2) + i * ROW_STEP;
        a_ok[i] = m < m_total;
        const long long mm = a_ok[i] ? m : 0;
        const long long per = TRANS ? p.sub_spatial : p.out_spatial;
        const int* sz = TRANS ? p.sub_size : p.out_size;
        const long long b = mm / per;
        long long s = mm - b * per;
        const int c2 = (int)(s % sz[2]);
        s /= sz[2];
        const int c1 = (int)(s % sz[1]);
        const int c0 = (int)(s / sz[1]);
        if (TRANS) {
            /* q; rows whose output r + q*stride falls past out_size are padding of the sub-grid. */
            a_base[i][0] = c0;
            a_base[i][1] = c1;
            a_base[i][2] = c2;
            a_ok[i] = a_ok[i] && ph[0] + c0 * p.stride[0] < p.out_size[0] && ph[1] + c1 * p.stride[1] < p.out_size[1] &&
                      ph[2] + c2 * p.stride[2] < p.out_size[2];
        } else {
            a_base[i][0] = c0 * p.stride[0] - p.pad[0];
            a_base[i][1] = c1 * p.stride[1] - p.pad[1];
            a_base[i][2] = c2 * p.stride[2] - p.pad[2];
        }
        a_xb[i] = b * p.in_spatial * C + (long long)g * cg;
    }
    const T* b_row[B_CH];
    bool b_ok[B_CH];
    /* Q8: the rows' codes, per-output-channel scale and zero point, and the codes of the stage
     * in flight (loaded into registers by load_stage, dequantized into shared memory by
     * store_b after the current stage's products). */
    const unsigned char* q_row[B_CH];
    float q_scale[B_CH], q_zero[B_CH];
    uint2 q_pend[B_CH];
    int q_valid[B_CH];
    const bool q_signed = Q8 && p.w_codes_signed != 0;
#pragma unroll
    for (int i = 0; i < B_CH; ++i) {
        const int k = n0 + (tid >> 2) + i * ROW_STEP;
        b_ok[i] = k < kg;
        b_row[i] = w + ((long long)g * kg + (b_ok[i] ? k : 0)) * wrow;
        if (Q8) {
            const long long ko = (long long)g * kg + (b_ok[i] ? k : 0);
            q_row[i] = reinterpret_cast<const unsigned char*>(p.w) + ko * wrow;
            q_scale[i] = reinterpret_cast<const float*>(p.w_scale)[ko];
            q_zero[i] = reinterpret_cast<const float*>(p.w_zero)[ko];
            q_pend[i] = make_uint2(0u, 0u);
            q_valid[i] = 0;
        }
    }
    /* This block's range of BK-deep steps: all of them, or its share under split-K. */
    const int KT_ALL = (kred + BK - 1) / BK;
    const int per_split = (KT_ALL + p.splits - 1) / p.splits;
    const int kt_begin = split * per_split;
    const int kt_end = kt_begin + per_split < KT_ALL ? kt_begin + per_split : KT_ALL;
    const int KT = kt_end > kt_begin ? kt_end - kt_begin : 0;
    /* Reduction position of this thread's chunk: r = a*Cg + c over the active taps a = (a0, a1,
     * a2) (row-major over ts.count); the kernel offsets are j_d = first_d + a_d*step_d. */
    int r = kt_begin * BK + kc * EPC;
    int c, j0, j1, j2;
    {
        const int a = cg > 0 ? r / cg : 0;
        c = r - a * cg;
        const int cnt2 = ts.count[2] > 0 ? ts.count[2] : 1;
        const int cnt1 = ts.count[1] > 0 ? ts.count[1] : 1;
        j2 = a % cnt2;
        const int t = a / cnt2;
        j1 = t % cnt1;
        j0 = t / cnt1;
    }

    auto load_stage = [&](int stage) {
        const bool rk = r < kred;
        unsigned short* as = smem_a + stage * BM * QC_TC_BK;
        unsigned short* bs = smem_b + stage * BN * QC_TC_BK;
        /* Active-tap counters -> kernel offsets -> input offsets (forward j*dil; transposed
         * (r + pad - j*dil)/stride, exact for an active tap) and the weight's tap index. */
        const int k0 = ts.first[0] + j0 * ts.step[0];
        const int k1 = ts.first[1] + j1 * ts.step[1];
        const int k2 = ts.first[2] + j2 * ts.step[2];
        const int d0 = TRANS ? (ph[0] + p.pad[0] - k0 * p.dilation[0]) / p.stride[0] : k0 * p.dilation[0];
        const int d1 = TRANS ? (ph[1] + p.pad[1] - k1 * p.dilation[1]) / p.stride[1] : k1 * p.dilation[1];
        const int d2 = TRANS ? (ph[2] + p.pad[2] - k2 * p.dilation[2]) / p.stride[2] : k2 * p.dilation[2];
        const long long w_off = ((long long)(k0 * p.kernel[1] + k1) * p.kernel[2] + k2) * cg + c;
        if (!VEC_A) {
            /* Any C/groups: the 8 reduction elements of the chunk one by one (they may span
             * taps), zero outside, packed into one 16-byte shared store. */
            const unsigned short* xs = reinterpret_cast<const unsigned short*>(x);
#pragma unroll
            for (int i = 0; i < A_CH; ++i) {
                unsigned long long lo = 0, hi = 0; /* elements 0-3 and 4-7 of the chunk */
                int rr = r, cc = c, q0 = j0, q1 = j1, q2 = j2;
#pragma unroll 1
                for (int e = 0; e < 8; ++e) {
                    unsigned long long v = 0;
                    if (rr < kred && a_ok[i]) {
                        int id = a_base[i][0] + q0 * p.dilation[0];
                        int ih = a_base[i][1] + q1 * p.dilation[1];
                        int iw = a_base[i][2] + q2 * p.dilation[2];
                        id = qc_source_index_i32(p.pad_mode, id, D);
                        ih = qc_source_index_i32(p.pad_mode, ih, H);
                        iw = qc_source_index_i32(p.pad_mode, iw, W);
                        if (id >= 0 && ih >= 0 && iw >= 0) {
                            v = xs[a_xb[i] + (((long long)id * H + ih) * W + iw) * C + cc];
                        }
                    }
                    if (e < 4) {
                        lo |= v << (16 * e);
                    } else {
                        hi |= v << (16 * (e - 4));
                    }
                    ++rr;
                    if (++cc == cg) {
                        cc = 0;
                        if (++q2 == p.kernel[2]) {
                            q2 = 0;
                            if (++q1 == p.kernel[1]) {
                                q1 = 0;
                                ++q0;
                            }
                        }
                    }
                }
                *reinterpret_cast<uint4*>(as + qc_swz((tid >> 2) + i * ROW_STEP, kc)) =
                    make_uint4((unsigned)lo, (unsigned)(lo >> 32), (unsigned)hi, (unsigned)(hi >> 32));
            }
        }
#pragma unroll
        for (int i = 0; i < A_CH && VEC_A; ++i) {
            int id = a_base[i][0] + d0, ih = a_base[i][1] + d1, iw = a_base[i][2] + d2;
            bool ok = rk && a_ok[i];
            if (p.pad_mode == QC_PAD_ZEROS) {
                ok = ok && (unsigned)id < (unsigned)D && (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
            } else {
                id = qc_source_index_i32(p.pad_mode, id, D);
                ih = qc_source_index_i32(p.pad_mode, ih, H);
                iw = qc_source_index_i32(p.pad_mode, iw, W);
                ok = ok && id >= 0 && ih >= 0 && iw >= 0;
            }
            const T* src = ok ? x + a_xb[i] + (((long long)id * H + ih) * W + iw) * C + c : x;
            qc_cp_async16(qc_smem_addr(as + qc_swz((tid >> 2) + i * ROW_STEP, kc)), src, ok);
        }
#pragma unroll
        for (int i = 0; i < B_CH; ++i) {
            const bool ok = rk && b_ok[i];
            /* Vector loader: the chunk lies in one tap (Cg % 8 == 0). Element-wise loader
             * (forward only, every tap active): the packed row is contiguous in r. */
            const long long off = VEC_A ? w_off : (long long)r;
            if (Q8) {
                /* 8 codes (8 bytes, aligned: rows and chunk offsets are multiples of 8); the
                 * element-wise loader's last chunk may pass the reduction's end (kred is not a
                 * multiple of 8 there), and with padded input channels a chunk may pass the
                 * tap's codes: those elements become zeros in store_b. */
                q_pend[i] = ok ? __ldg(reinterpret_cast<const uint2*>(q_row[i] + off)) : make_uint2(0u, 0u);
                if (VEC_A) {
                    /* Padded input channels: the slots past w_cg_valid of the tap are +0. */
                    const int left = p.w_cg_valid - c;
                    q_valid[i] = !ok ? 0 : left >= 8 ? 8 : left;
                } else {
                    q_valid[i] = !ok ? 0 : kred - r >= 8 ? 8 : kred - r;
                }
            } else {
                qc_cp_async16(qc_smem_addr(bs + qc_swz((tid >> 2) + i * ROW_STEP, kc)), ok ? b_row[i] + off : w, ok);
            }
        }
        /* Advance this thread's chunk by BK along the reduction (tap-major, channel-minor). */
        r += BK;
        c += BK;
        while (c >= cg) {
            c -= cg;
            if (++j2 >= ts.count[2]) {
                j2 = 0;
                if (++j1 >= ts.count[1]) {
                    j1 = 0;
                    ++j0;
                }
            }
        }
    };

    /* Q8: dequantize the codes load_stage left in registers into stage `stage` of B. */
    auto store_b = [&](int stage) {
        unsigned short* bs = smem_b + stage * BN * QC_TC_BK;
#pragma unroll
        for (int i = 0; i < B_CH; ++i) {
            *reinterpret_cast<uint4*>(bs + qc_swz((tid >> 2) + i * ROW_STEP, kc)) =
                qc_dequant8<T>(q_pend[i], q_scale[i], q_zero[i], q_valid[i], q_signed);
        }
    };

    float acc[MI][NI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.0f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < KT) {
            /* load_stage advances the chunk position: the kc of the store is fixed per thread. */
            load_stage(s);
            if (Q8) store_b(s);
        }
        qc_cp_commit();
    }
    for (int kt = 0; kt < KT; ++kt) {
        qc_cp_wait<STAGES - 2>();
        __syncthreads();
        const int nk = kt + STAGES - 1;
        if (nk < KT) load_stage(nk % STAGES);
        qc_cp_commit();
        const unsigned short* as = smem_a + (kt % STAGES) * BM * QC_TC_BK;
        const unsigned short* bs = smem_b + (kt % STAGES) * BN * QC_TC_BK;
#pragma unroll
        for (int kk = 0; kk < 2; ++kk) {
            unsigned af[MI][4];
            unsigned bf[NI][2];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                const int row = warp_m * WTM + mi * 16 + (lane & 15);
                qc_ldmatrix_x4(qc_smem_addr(as + qc_swz(row, kk * 2 + (lane >> 4))), af[mi][0], af[mi][1], af[mi][2],
                               af[mi][3]);
#pragma unroll
                for (int j = 0; j < 4; ++j) af[mi][j] = QcMma<T>::prep_a(af[mi][j]);
            }
#pragma unroll
            for (int nj = 0; nj < NI / 2; ++nj) {
                const int row = warp_n * WTN + nj * 16 + (lane & 7) + ((lane >> 4) << 3);
                qc_ldmatrix_x4(qc_smem_addr(bs + qc_swz(row, kk * 2 + ((lane >> 3) & 1))), bf[2 * nj][0],
                               bf[2 * nj][1], bf[2 * nj + 1][0], bf[2 * nj + 1][1]);
            }
#pragma unroll
            for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                for (int ni = 0; ni < NI; ++ni) QcMma<T>::mma(acc[mi][ni], af[mi], bf[ni]);
        }
        /* Q8: stage nk's slot was last read in iteration kt - 1, before this iteration's
         * barrier; its readers (iteration nk) wait at a later barrier. */
        if (Q8 && nk < KT) store_b(nk % STAGES);
    }
    qc_cp_wait<0>();

    if (p.splits > 1) {
        /* Split-K: this range's f32 partial sums, [split][g][m][n]; qc_splitk_reduce finishes. */
        float* part = reinterpret_cast<float*>(p.partial) + ((long long)split * p.groups + g) * m_total * kg;
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const long long m = m0 + warp_m * WTM + mi * 16 + (lane >> 2) + h * 8;
                if (m >= m_total) continue;
#pragma unroll
                for (int ni = 0; ni < NI; ++ni) {
                    const int n = n0 + warp_n * WTN + ni * 8 + (lane & 3) * 2;
                    if (n < kg) part[m * kg + n] = acc[mi][ni][h * 2];
                    if (n + 1 < kg) part[m * kg + n + 1] = acc[mi][ni][h * 2 + 1];
                }
            }
        }
        return;
    }
    /* Epilogue: bias in f32, one rounding, channels-last or NCHW stores. */
    const float* bias = p.has_bias ? reinterpret_cast<const float*>(p.bias) : 0;
    unsigned short* y = reinterpret_cast<unsigned short*>(p.y);
    float* yf = reinterpret_cast<float*>(p.y);
    const long long K = p.out_channels;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const long long m = m0 + warp_m * WTM + mi * 16 + (lane >> 2) + h * 8;
            if (m >= m_total) continue;
            /* (batch, linear output position) of row m. */
            long long b, o_lin;
            if (TRANS) {
                b = m / p.sub_spatial;
                long long s = m - b * p.sub_spatial;
                const int q2 = (int)(s % p.sub_size[2]);
                s /= p.sub_size[2];
                const int q1 = (int)(s % p.sub_size[1]);
                const int q0 = (int)(s / p.sub_size[1]);
                const int o0 = ph[0] + q0 * p.stride[0], o1 = ph[1] + q1 * p.stride[1], o2 = ph[2] + q2 * p.stride[2];
                if (o0 >= p.out_size[0] || o1 >= p.out_size[1] || o2 >= p.out_size[2]) continue;
                o_lin = ((long long)o0 * p.out_size[1] + o1) * p.out_size[2] + o2;
            } else {
                b = m / p.out_spatial;
                o_lin = m - b * p.out_spatial;
            }
            long long base, kstride;
            if (p.out_nhwc) {
                base = (b * p.out_spatial + o_lin) * K + (long long)g * kg;
                kstride = 1;
            } else {
                base = (b * K + (long long)g * kg) * p.out_spatial + o_lin;
                kstride = p.out_spatial;
            }
#pragma unroll
            for (int ni = 0; ni < NI; ++ni) {
                const int n = n0 + warp_n * WTN + ni * 8 + (lane & 3) * 2;
                float v0 = acc[mi][ni][h * 2];
                float v1 = acc[mi][ni][h * 2 + 1];
                if (bias != 0) {
                    if (n < kg) v0 = __fadd_rn(v0, bias[g * kg + n]);
                    if (n + 1 < kg) v1 = __fadd_rn(v1, bias[g * kg + n + 1]);
                }
                const long long i0 = base + n * kstride;
                if constexpr (sizeof(T) == 2) {
                    const unsigned short h0 = QcMma<T>::cvt(v0);
                    const unsigned short h1 = QcMma<T>::cvt(v1);
                    if (kstride == 1 && n + 1 < kg && (i0 & 1) == 0) {
                        *reinterpret_cast<unsigned*>(y + i0) = (unsigned)h0 | ((unsigned)h1 << 16);
                    } else {
                        if (n < kg) y[i0] = h0;
                        if (n + 1 < kg) y[i0 + kstride] = h1;
                    }
                } else {
                    if (kstride == 1 && n + 1 < kg && (i0 & 1) == 0) {
                        *reinterpret_cast<float2*>(yf + i0) = make_float2(v0, v1);
                    } else {
                        if (n < kg) yf[i0] = v0;
                        if (n + 1 < kg) yf[i0 + kstride] = v1;
                    }
                }
            }
        }
    }
}

#define QC_TC_ENTRY(NAME, T, BM, BN, WM, WN, STAGES, MINB, VEC_A, TRANS, Q8)                      \
    extern "C" __global__ void __launch_bounds__((WM) * (WN) * 32, MINB) NAME(const QcConvParams p) { \
        qc_conv_tc<T, BM, BN, WM, WN, STAGES, VEC_A, TRANS, Q8>(p);                                \
    }

/* 128x128: 8 warps of 64x32; 128x64 and 64x64: 4 warps of 64x32 / 32x32. 48 KB / 48 KB / 32 KB
 * of shared memory (static limit 48 KB). The minimum-blocks hints cap the registers so that 2, 3
 * and 4 blocks fit per multiprocessor (16, 12 and 16 warps; measured on an H200, the uncapped
 * 128x64 tile ran 2 blocks = 8 warps, 12% occupancy); the runtime raises the shared-memory
 * carveout so that their shared memory fits too. */
/* One NVRTC program per tile (src/cuda/kernels.rs), so that no program holds more than one
 * tensor-core kernel and a cold compilation of everything is bounded by the slowest tile:
 * -DQC_PART=1-3 the f16 tiles, 4-6 bf16, 7-8 the element-wise loader (f16, bf16), 9-12 the
 * transposed f16 and bf16 tiles; 13-24 the same twelve reading 8-bit weight codes (the *_q8
 * entries: `w` holds uint8/int8 codes packed like the 16-bit weight, dequantized with the
 * per-output-channel w_scale / w_zero while staged into shared memory); 25-27 the forward and
 * 28-29 the transposed TF32 tiles (f32 activations and weight, the weight pre-rounded to TF32);
 * 30 the depthwise, layout and split-K reduction kernels. */
#ifndef QC_PART
#error "compile with -DQC_PART=1..30 (see src/cuda/kernels.rs)"
#endif
#if QC_PART == 1
QC_TC_ENTRY(qc_conv_tc_f16_128x128, qc_half, 128, 128, 2, 4, 3, 2, true, false, false)
#elif QC_PART == 2
QC_TC_ENTRY(qc_conv_tc_f16_128x64, qc_half, 128, 64, 2, 2, 4, 3, true, false, false)
#elif QC_PART == 3
QC_TC_ENTRY(qc_conv_tc_f16_64x64, qc_half, 64, 64, 2, 2, 4, 4, true, false, false)
#elif QC_PART == 4
QC_TC_ENTRY(qc_conv_tc_bf16_128x128, qc_bf16, 128, 128, 2, 4, 3, 2, true, false, false)
#elif QC_PART == 5
QC_TC_ENTRY(qc_conv_tc_bf16_128x64, qc_bf16, 128, 64, 2, 2, 4, 3, true, false, false)
#elif QC_PART == 6
QC_TC_ENTRY(qc_conv_tc_bf16_64x64, qc_bf16, 64, 64, 2, 2, 4, 4, true, false, false)
#elif QC_PART == 7
QC_TC_ENTRY(qc_conv_tc_f16_gather, qc_half, 128, 64, 2, 2, 4, 3, false, false, false)
#elif QC_PART == 8
QC_TC_ENTRY(qc_conv_tc_bf16_gather, qc_bf16, 128, 64, 2, 2, 4, 3, false, false, false)
#elif QC_PART == 9
QC_TC_ENTRY(qc_conv_tc_tr_f16_128x128, qc_half, 128, 128, 2, 4, 3, 1, true, true, false)
#elif QC_PART == 10
QC_TC_ENTRY(qc_conv_tc_tr_f16_64x64, qc_half, 64, 64, 2, 2, 4, 4, true, true, false)
#elif QC_PART == 11
QC_TC_ENTRY(qc_conv_tc_tr_bf16_128x128, qc_bf16, 128, 128, 2, 4, 3, 1, true, true, false)
#elif QC_PART == 12
QC_TC_ENTRY(qc_conv_tc_tr_bf16_64x64, qc_bf16, 64, 64, 2, 2, 4, 4, true, true, false)
#elif QC_PART == 13
QC_TC_ENTRY(qc_conv_tc_f16_128x128_q8, qc_half, 128, 128, 2, 4, 3, 2, true, false, true)
#elif QC_PART == 14
QC_TC_ENTRY(qc_conv_tc_f16_128x64_q8, qc_half, 128, 64, 2, 2, 4, 3, true, false, true)
#elif QC_PART == 15
QC_TC_ENTRY(qc_conv_tc_f16_64x64_q8, qc_half, 64, 64, 2, 2, 4, 4, true, false, true)
#elif QC_PART == 16
QC_TC_ENTRY(qc_conv_tc_bf16_128x128_q8, qc_bf16, 128, 128, 2, 4, 3, 2, true, false, true)
#elif QC_PART == 17
QC_TC_ENTRY(qc_conv_tc_bf16_128x64_q8, qc_bf16, 128, 64, 2, 2, 4, 3, true, false, true)
#elif QC_PART == 18
QC_TC_ENTRY(qc_conv_tc_bf16_64x64_q8, qc_bf16, 64, 64, 2, 2, 4, 4, true, false, true)
#elif QC_PART == 19
QC_TC_ENTRY(qc_conv_tc_f16_gather_q8, qc_half, 128, 64, 2, 2, 4, 3, false, false, true)
#elif QC_PART == 20
QC_TC_ENTRY(qc_conv_tc_bf16_gather_q8, qc_bf16, 128, 64, 2, 2, 4, 3, false, false, true)
#elif QC_PART == 21
QC_TC_ENTRY(qc_conv_tc_tr_f16_128x128_q8, qc_half, 128, 128, 2, 4, 3, 1, true, true, true)
#elif QC_PART == 22
QC_TC_ENTRY(qc_conv_tc_tr_f16_64x64_q8, qc_half, 64, 64, 2, 2, 4, 4, true, true, true)
#elif QC_PART == 23
QC_TC_ENTRY(qc_conv_tc_tr_bf16_128x128_q8, qc_bf16, 128, 128, 2, 4, 3, 1, true, true, true)
#elif QC_PART == 24
QC_TC_ENTRY(qc_conv_tc_tr_bf16_64x64_q8, qc_bf16, 64, 64, 2, 2, 4, 4, true, true, true)
#elif QC_PART == 25
QC_TC_ENTRY(qc_conv_tc_tf32_128x128, float, 128, 128, 2, 4, 3, 2, true, false, false)
#elif QC_PART == 26
QC_TC_ENTRY(qc_conv_tc_tf32_128x64, float, 128, 64, 2, 2, 4, 3, true, false, false)
#elif QC_PART == 27
QC_TC_ENTRY(qc_conv_tc_tf32_64x64, float, 64, 64, 2, 2, 4, 4, true, false, false)
#elif QC_PART == 28
QC_TC_ENTRY(qc_conv_tc_tr_tf32_128x128, float, 128, 128, 2, 4, 3, 1, true, true, false)
#elif QC_PART == 29
QC_TC_ENTRY(qc_conv_tc_tr_tf32_64x64, float, 64, 64, 2, 2, 4, 4, true, true, false)
#endif

/* ---- split-K reduction ----------------------------------------------------------------------
 * y[m, g*Kg + n] = round(bias + sum over splits, in split order, of partial[split][g][m][n]):
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

/* ---- depthwise, channels-last, CUDA cores --------------------------------------------------
 * groups == C == K (one input and one output channel per group), C % 8 == 0. Each thread owns 8
 * consecutive channels of one output pixel (grid-stride over N*OD*OH*OW*C/8 items, so a warp
 * reads 16-byte vectors of consecutive channels: coalesced); taps in order, f32 weights packed
 * [taps][C] by the host (the fake-quantized weight, unrounded), f32 fused multiply-adds, bias
 * added last, one rounding of the output: the Exact numerics of the other kernels, so this kernel
 * serves both precisions. Padding modes by index remapping. Fewer than 2^31 work items (outputs
 * / 8): the host checks it and falls back to the channels-first direct kernel beyond. */

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

#if QC_PART == 30
extern "C" __global__ void __launch_bounds__(256) qc_splitk_reduce_f16(const QcConvParams p) {
    qc_splitk_reduce<qc_half>(p);
}
extern "C" __global__ void __launch_bounds__(256) qc_splitk_reduce_bf16(const QcConvParams p) {
    qc_splitk_reduce<qc_bf16>(p);
}
extern "C" __global__ void __launch_bounds__(256) qc_splitk_reduce_f32(const QcConvParams p) {
    qc_splitk_reduce<float>(p);
}
extern "C" __global__ void __launch_bounds__(256, 1) qc_dw_nhwc_f32(const QcConvParams p) { qc_dw_nhwc<float>(p); }
extern "C" __global__ void __launch_bounds__(256, 1) qc_dw_nhwc_f16(const QcConvParams p) { qc_dw_nhwc<qc_half>(p); }
extern "C" __global__ void __launch_bounds__(256, 1) qc_dw_nhwc_bf16(const QcConvParams p) { qc_dw_nhwc<qc_bf16>(p); }
#endif

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

#if QC_PART == 30
extern "C" __global__ void __launch_bounds__(256) qc_transpose_b16(const QcTransposeParams p) {
    qc_transpose<unsigned short>(p);
}

extern "C" __global__ void __launch_bounds__(256) qc_transpose_b32(const QcTransposeParams p) {
    qc_transpose<unsigned int>(p);
}

extern "C" __global__ void __launch_bounds__(256) qc_pad_channels_b16(const QcPadChannelsParams p) {
    qc_pad_channels<unsigned short>(p);
}

extern "C" __global__ void __launch_bounds__(256) qc_pad_channels_b32(const QcPadChannelsParams p) {
    qc_pad_channels<unsigned int>(p);
}
#endif
