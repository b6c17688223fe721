/*
 * Tensor-core convolution, forward and transposed: an implicit GEMM on mma.sync (m16n8k16 with
 * f16 or bf16 operands; m16n8k8 with TF32 operands for f32 activations), f32 accumulation,
 * channels-last activations, a cp.async multi-stage pipeline and ldmatrix from XOR-swizzled
 * shared memory. The PTX primitives and operand traits are in cuda/tensor_core.cuh; the split-K
 * reduction is cuda/splitk.cu; the transposes and channel padding that let NCHW inputs and
 * C/groups not a multiple of 8 use these tiles are cuda/layout.cu.
 *
 * GEMM view, per group g (grid.z = groups * splits):
 *     Y[m, n] = bias[g*Kg + n] + sum_r A[m, r] * B[n, r]
 *   m                     output position (batch-major; transposed: the phase's sub-grid, below),
 *                         grid.x tiles of BM
 *   n in [0, Kg)          output channel within the group, grid.y tiles of BN
 *   r = a*Cg + c          reduction over (active kernel tap a, input channel c of the group),
 *                         BK deep per stage (32 halves or 16 floats: 64 bytes per row)
 *   A[m, r] = x[b, o*stride - pad + j*dilation, g*Cg + c]  (channels-last input, remapped by the
 *             padding mode, zero outside): the im2col matrix, never materialised. With Cg a
 *             multiple of 8, every 8 consecutive r are 8 consecutive channels of one input pixel:
 *             one 16-byte cp.async (zero-filled when the pixel is padding or r is past the end).
 *   B[n, r] = w[g*Kg + n][tap][c], the weight packed by the host as [K][row] in the activation
 *             dtype (the fake-quantized f32 weight rounded to nearest even, or to TF32), row =
 *             taps*Cg rounded up to 8 and zero-padded, so B stays 16-byte aligned; or, in the *_q8
 *             entries, 8-bit codes packed the same way and dequantized with a per-output-channel
 *             w_scale / w_zero while they are staged into shared memory.
 * Transposed convolutions use the phase decomposition of cuda/conv_igemm.cuh (qc_phase,
 * qc_tap_set): one phase per group of grid.x blocks, rows m = b*sub_spatial + q for the outputs
 * o = r + q*stride, and only the phase's active taps in the reduction.
 * Block tile BM x BN, warps WM x WN, each warp a (BM/WM) x (BN/WN) tile of m16n8 accumulators.
 * Shared memory per stage: A [BM][32] and B [BN][32] 16-bit slots, rows of four 16-byte chunks,
 * chunk index XOR-ed with (row >> 1) & 3 so that the 8 rows an ldmatrix reads (and the cp.async
 * writes) hit distinct banks. STAGES-deep pipeline: tile kt+STAGES-1 is loading while kt is
 * multiplied. The output is written channels-last (out_nhwc = 1) or NCHW (out_nhwc = 0), bias
 * added in f32 before the one rounding to the activation dtype; with splits > 1 each block writes
 * f32 partial sums instead, which qc_splitk_reduce_* add in order (forward only).
 *
 * A second A loader (VEC_A = false, the *_gather entries, forward only) reads the 8 elements of a
 * chunk one by one, for any Cg (one channel per group): slower loads, same tensor-core math.
 *
 * Device functions by role: the loaders' per-thread rows (qc_tc_a_rows, qc_tc_b_rows), the
 * stage loader (the load_stage lambda of qc_conv_tc; qc_tc_store_b for the codes), the MMA step
 * (qc_tc_fragments, then QcMma<T>::mma per m16n8 tile), and the split-K epilogue
 * (qc_tc_store_partial_row); qc_conv_tc runs the pipeline and the output epilogue.
 *
 * Host requirements (src/cuda/ops/conv_tc.rs checks them before every launch): C/groups a
 * multiple of 8 for the vector loader, x / w 16-byte aligned, w_stride_m the packed row, split-K
 * and the element-wise loader for forward convolutions only, every per-dimension coordinate
 * within int32 as for the other kernels, grid.y and grid.z <= 65535. 64-bit offsets throughout.
 *
 * Entry points: qc_conv_tc_[tr_]<f16|bf16|tf32>_<128x128|128x64|64x64|gather>[_q8], one NVRTC
 * program each, instantiated by the program list in src/cuda/kernels.rs with QC_TC_ENTRY below.
 * CPU transcription (every thread's loads, swizzle, ldmatrix and MMA fragments, run against the
 * oracle): src/cuda/emulate/conv_tc.rs.
 */
#include "conv_igemm.cuh" /* common.cuh, qc_phase, qc_tap_set */
#include "tensor_core.cuh"

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

/* ---- the thread's coordinates ---------------------------------------------------------------- */

/** What the device functions below share, fixed for the whole kernel: this thread's place (tid,
 *  lane, warp tile, 16-byte chunk column kc), its block's (group g, first output channel n0, first
 *  row m0 of m_total), the group's channel counts and reduction length, the packed weight row and
 *  the input's channels and extent. qc_conv_tc builds it once.
 *
 *  The functions take it, and every other scalar, by const reference, as the lambdas they replaced
 *  captured them: NVVM simplifies a callee before inlining it, and ranks a by-value argument below
 *  an instruction when it orders the operands of commutative operations, so by-value scalars
 *  change the generated code where references keep it (examples/ptx_dump.rs compares it). */
struct QcTcCoords {
    int tid, lane, warp_m, warp_n, kc;
    int g, n0;
    long long m0, m_total;
    int cg, kg, kred;
    long long wrow, C;
    int D, H, W;
};

/* ---- the loaders' rows ------------------------------------------------------------------------ */

/** This thread's A rows (output positions), fixed for the whole loop: whether each exists (a_ok),
 *  its first input coordinate per dimension (forward o*stride - pad; transposed the sub-grid
 *  position q) and the offset of its batch and group in the input (a_xb). */
template <int A_CH, int ROW_STEP, bool TRANS>
__device__ __forceinline__ void qc_tc_a_rows(const QcConvParams& p, const QcTcCoords& t, const int (&ph)[3],
                                             long long (&a_xb)[A_CH], int (&a_base)[A_CH][3], bool (&a_ok)[A_CH]) {
    const long long &m0 = t.m0, &m_total = t.m_total, &C = t.C;
    const int &tid = t.tid, &g = t.g, &cg = t.cg;
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
}

/** This thread's B rows (output channels), fixed for the whole loop: whether each exists (b_ok)
 *  and its packed weight row; Q8, the row's codes, the channel's scale and zero point, and the
 *  (empty) codes of the stage in flight. */
template <typename T, int B_CH, int ROW_STEP, bool Q8>
__device__ __forceinline__ void qc_tc_b_rows(const QcConvParams& p, const QcTcCoords& t, const T* const& w,
                                             const T* (&b_row)[B_CH], bool (&b_ok)[B_CH],
                                             const unsigned char* (&q_row)[B_CH], float (&q_scale)[B_CH],
                                             float (&q_zero)[B_CH], uint2 (&q_pend)[B_CH], int (&q_valid)[B_CH]) {
    const int &n0 = t.n0, &tid = t.tid, &g = t.g, &kg = t.kg;
    const long long& wrow = t.wrow;
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
}

/* ---- the stage loader of the 8-bit codes ------------------------------------------------------ */

/** Q8: dequantizes the codes load_stage left in registers into one stage of B. */
template <typename T, int B_CH, int ROW_STEP>
__device__ __forceinline__ void qc_tc_store_b(const QcTcCoords& t, unsigned short* const& bs,
                                              const uint2 (&q_pend)[B_CH], const float (&q_scale)[B_CH],
                                              const float (&q_zero)[B_CH], const int (&q_valid)[B_CH],
                                              const bool& q_signed) {
    const int &tid = t.tid, &kc = t.kc;
#pragma unroll
    for (int i = 0; i < B_CH; ++i) {
        *reinterpret_cast<uint4*>(bs + qc_swz((tid >> 2) + i * ROW_STEP, kc)) =
            qc_dequant8<T>(q_pend[i], q_scale[i], q_zero[i], q_valid[i], q_signed);
    }
}

/* ---- the MMA step ----------------------------------------------------------------------------- */

/** The A and B fragments of one tensor-core k-step (k16, or TF32 k8) of a pipeline stage: this
 *  warp's MI row tiles and NI column tiles, ldmatrix.x4 from the swizzled stage tiles, TF32
 *  activations rounded by QcMma::prep_a. qc_conv_tc multiplies them (QcMma::mma). */
template <typename T, int MI, int NI, int WTM, int WTN>
__device__ __forceinline__ void qc_tc_fragments(const QcTcCoords& t, const unsigned short* const& as,
                                                const unsigned short* const& bs, const int& kk,
                                                unsigned (&af)[MI][4], unsigned (&bf)[NI][2]) {
    const int &warp_m = t.warp_m, &warp_n = t.warp_n, &lane = t.lane;
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
        qc_ldmatrix_x4(qc_smem_addr(bs + qc_swz(row, kk * 2 + ((lane >> 3) & 1))), bf[2 * nj][0], bf[2 * nj][1],
                       bf[2 * nj + 1][0], bf[2 * nj + 1][1]);
    }
}

/* ---- the epilogues ---------------------------------------------------------------------------- */

/** Split-K: row `mi`, `h` of this warp's accumulators as f32 partial sums into this block's
 *  reduction range, part[m][n] (qc_splitk_reduce in cuda/splitk.cu adds the ranges). */
template <int NI, int WTM, int WTN>
__device__ __forceinline__ void qc_tc_store_partial_row(const QcTcCoords& t, float* const& part,
                                                        const float (&acc)[NI][4], const int& mi, const int& h) {
    const int &n0 = t.n0, &kg = t.kg, &warp_m = t.warp_m, &warp_n = t.warp_n, &lane = t.lane;
    const long long &m0 = t.m0, &m_total = t.m_total;
    const long long m = m0 + warp_m * WTM + mi * 16 + (lane >> 2) + h * 8;
    if (m >= m_total) return;
#pragma unroll
    for (int ni = 0; ni < NI; ++ni) {
        const int n = n0 + warp_n * WTN + ni * 8 + (lane & 3) * 2;
        if (n < kg) part[m * kg + n] = acc[ni][h * 2];
        if (n + 1 < kg) part[m * kg + n + 1] = acc[ni][h * 2 + 1];
    }
}

/* ---- the kernel ------------------------------------------------------------------------------- */

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
    const QcTcCoords t = {tid, lane, warp_m, warp_n, kc, g, n0, m0, m_total, cg, kg, kred, wrow, C, D, H, W};
    long long a_xb[A_CH];
    int a_base[A_CH][3];
    bool a_ok[A_CH];
    qc_tc_a_rows<A_CH, ROW_STEP, TRANS>(p, t, ph, a_xb, a_base, a_ok);
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
    qc_tc_b_rows<T, B_CH, ROW_STEP, Q8>(p, t, w, b_row, b_ok, q_row, q_scale, q_zero, q_pend, q_valid);
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
        qc_tc_store_b<T, B_CH, ROW_STEP>(t, bs, q_pend, q_scale, q_zero, q_valid, q_signed);
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
        /* Two tensor-core k-steps per stage. */
#pragma unroll
        for (int kk = 0; kk < 2; ++kk) {
            unsigned af[MI][4];
            unsigned bf[NI][2];
            qc_tc_fragments<T, MI, NI, WTM, WTN>(t, as, bs, kk, af, bf);
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
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
            for (int h = 0; h < 2; ++h) qc_tc_store_partial_row<NI, WTM, WTN>(t, part, acc[mi], mi, h);
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

/* 128x128: 8 warps of 64x32; 128x64 and 64x64: 4 warps of 64x32 / 32x32. 48 KB / 48 KB / 32 KB
 * of shared memory (static limit 48 KB). The minimum-blocks hints (MINB) cap the registers so
 * that 2, 3 and 4 blocks fit per multiprocessor (16, 12 and 16 warps; measured on an H200, the
 * uncapped 128x64 tile ran 2 blocks = 8 warps, 12% occupancy; the transposed 128x128 tile keeps
 * MINB 1, no cap: capped for 2 blocks it would spill); the runtime raises the shared-memory
 * carveout so that their shared memory fits too. The *_q8 entries read `w` as uint8/int8 codes;
 * the TF32 entries (T = float) f32 activations and a weight pre-rounded to TF32. */
#define QC_TC_ENTRY(NAME, T, BM, BN, WM, WN, STAGES, MINB, VEC_A, TRANS, Q8)                      \
    extern "C" __global__ void __launch_bounds__((WM) * (WN) * 32, MINB) NAME(const QcConvParams p) { \
        qc_conv_tc<T, BM, BN, WM, WN, STAGES, VEC_A, TRANS, Q8>(p);                                \
    }
