/*
 * Int8 tensor-core convolution (the lowered modules of docs/numerics.md section 14), forward and
 * transposed: an implicit GEMM on mma.sync.m16n8k32 with u8 activation codes and s8 weight
 * codes, exact s32 accumulation, channels-last input, a cp.async multi-stage pipeline, ldmatrix
 * from XOR-swizzled shared memory, and the requantization to u8 codes fused in the epilogue
 * (cuda/int8.cuh). The tile geometry, the pipeline, the swizzle and the transposed phases are those
 * of the f16 tiles (cuda/conv_tc.cu, primitives in cuda/tensor_core.cuh): a stage row is 64 bytes
 * either way, 32 halves there, 64 codes here, and the 8-bit k32 fragments sit in the same bytes
 * of the ldmatrix.x4 registers as the 16-bit k16 ones (PTX ISA "Matrix Fragments for
 * mma.m16n8k32", .u8/.s8: A a0..a15 in four registers, rows groupID (registers 0, 2) and
 * groupID + 8 (1, 3), k = threadID_in_group * 4 + byte (+ 16 in registers 2, 3); B b0..b7 in two
 * registers, k = threadID_in_group * 4 + byte (+ 16 in the second), column groupID; C/D c0..c3:
 * (groupID, 2t), (groupID, 2t + 1), (groupID + 8, 2t), (groupID + 8, 2t + 1)).
 *
 * GEMM view, per group g (grid.z = groups):
 *     S[m, n] = sum_r A[m, r] * B[n, r]            (raw codes, s32, exact: no partial sum of
 *                                                   the R <= 33,025 products leaves int32)
 *   A[m, r] = x[b, o*stride - pad + j*dilation, g*Cg + c] for r = a*Cg + c (active tap a), a u8
 *             code, or x_zero wherever the kernel reads no input code: a padded tap (zeros
 *             padding, or an index a padding mode still maps outside), a transposed tap that
 *             falls outside the input, and every slot past the reduction's end. Cg is a multiple
 *             of 16 (the host pads the input's channels with the code x_zero, qc_pad_channels_u8),
 *             so a 16-byte chunk is 16 channels of one input pixel: one cp.async, or one
 *             st.shared of x_zero when the chunk reads no input.
 *   B[n, r] = w[g*Kg + n][tap][c], s8 codes packed by the host as [K][taps][Cg] (rows of
 *             w_stride_m = taps*Cg bytes, zero codes in padded channel slots); zero past the end.
 * The exact accumulator of docs/numerics.md 14.3 is then, over the S slots this block reduced
 * (S = KT * 64; every slot that is not a real (input code, weight code) pair holds x_zero in A
 * and 0 in B, so it adds nothing to any term):
 *     acc = S[m, n] - x_zero * colsum[phase][n] - w_zero[n] * (rowsum[m] - S * x_zero)
 * colsum (the host's, per phase: sum of the weight codes over the active taps and valid channels)
 * and, in the *_wzp entries (some weight zero point is not 0), rowsum[m] = sum_r A[m, r]: every
 * thread sums (dp4a) one row's part of each stage's A tile in shared memory, after that stage's
 * products, and the parts meet in shared memory after the loop. The corrections are
 * computed modulo 2^32 (unsigned arithmetic), which gives acc exactly because |acc| < 2^31.
 * Then qc_requant_u8 with the output channel's requant entry, and u8 stores, channels-last
 * (pairs of channels as one 16-bit store where aligned) or NCHW.
 *
 * Transposed convolutions use the phase decomposition of cuda/conv_igemm.cuh (qc_phase,
 * qc_tap_set), as the f16 tiles: one phase per group of grid.x blocks, rows m = b*sub_spatial + q
 * for the outputs o = r + q*stride, only the phase's active taps in the reduction.
 *
 * Host requirements (src/cuda/ops/conv_imma.rs checks them before every launch): Cg a multiple of
 * 16, x / w / y 16-byte aligned, w_stride_m = taps*Cg, every per-phase reduction (active taps x
 * the valid channels) at most 33,025, every per-dimension coordinate within int32, grid.y and
 * grid.z <= 65535, splits 1. 64-bit offsets throughout.
 *
 * Entry points: qc_conv_imma_[tr_]<128x128|128x64|64x64>[_wzp], one NVRTC program per tile with
 * its symmetric-weight entry and, except the forward 128x128 tile, its *_wzp entry (WZP: the row
 * sums, which the symmetric entries leave out entirely; a capped forward 128x128 tile with them
 * would spill), instantiated by the program list in src/cuda/kernels.rs with QC_IMMA_ENTRY below. CPU transcription (every
 * thread's loads, swizzle, ldmatrix, MMA fragments, row sums and epilogue, run against the integer
 * oracle): src/cuda/emulate/conv_imma.rs.
 */
#include "conv_igemm.cuh" /* common.cuh, qc_phase, qc_tap_set */
#include "int8.cuh"
#include "tensor_core.cuh"

/** D += A * B on one m16n8k32 tile: u8 A (row), s8 B (col), s32 accumulators. */
__device__ __forceinline__ void qc_mma_u8s8(int (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/** acc + the four unsigned bytes of `a`. */
__device__ __forceinline__ unsigned qc_sum_bytes(unsigned a, unsigned acc) {
    unsigned d;
    asm("dp4a.u32.u32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(0x01010101u), "r"(acc));
    return d;
}

template <int BM, int BN, int WM, int WN, int STAGES, bool TRANS, bool WZP>
__device__ __forceinline__ void qc_conv_imma(const QcInt8ConvParams& q) {
    const QcConvParams& p = q.conv;
    constexpr int THREADS = WM * WN * 32;
    constexpr int BK = 64; /* codes per stage row: four 16-byte chunks, two k32 steps */
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
    /* 64-byte rows, addressed in 16-bit units by qc_swz as the f16 tiles' (same bytes). */
    __shared__ __align__(128) unsigned short smem_a[STAGES * BM * QC_TC_BK];
    __shared__ __align__(128) unsigned short smem_b[STAGES * BN * QC_TC_BK];

    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int warp_m = warp % WM;
    const int warp_n = warp / WM;
    const int g = (int)blockIdx.z;
    const int n0 = blockIdx.y * BN;
    const int cg = p.cg;
    const int kg = p.kg;
    const long long wrow = p.w_stride_m; /* taps * Cg codes */
    const long long C = p.in_channels;
    const unsigned char* x = reinterpret_cast<const unsigned char*>(p.x);
    const signed char* w = reinterpret_cast<const signed char*>(p.w);
    const int D = p.in_size[0], H = p.in_size[1], W = p.in_size[2];
    const unsigned zp4 = (unsigned)q.x_zero * 0x01010101u;

    /* Rows: forward, m = b*out_spatial + output position; transposed, m = b*sub_spatial + q in
     * the phase's sub-grid (output o = r + q*stride), one phase per group of grid.x blocks. */
    int ph[3] = {0, 0, 0};
    int phase = 0;
    QcTapSet ts;
    long long m0, m_total;
    if (TRANS) {
        m_total = (long long)p.batch * p.sub_spatial;
        const long long m_tiles = (m_total + BM - 1) / BM;
        phase = (int)(blockIdx.x / m_tiles);
        m0 = (long long)(blockIdx.x - (long long)phase * m_tiles) * BM;
        qc_phase(p, phase, ph);
        ts = qc_tap_set<true>(p, ph);
    } else {
        m_total = (long long)p.batch * p.out_spatial;
        m0 = (long long)blockIdx.x * BM;
        ts = qc_tap_set<false>(p, ph);
    }
    const int kred = ts.total * cg; /* reduction over the active taps */

    /* This thread's chunk column and A rows (output positions), fixed for the whole loop. */
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
    /* This thread's B rows (output channels). */
    const signed char* b_row[B_CH];
    bool b_ok[B_CH];
#pragma unroll
    for (int i = 0; i < B_CH; ++i) {
        const int k = n0 + (tid >> 2) + i * ROW_STEP;
        b_ok[i] = k < kg;
        b_row[i] = w + ((long long)g * kg + (b_ok[i] ? k : 0)) * wrow;
    }
    const int KT = (kred + BK - 1) / BK;
    /* Reduction position of this thread's chunk: r = a*Cg + c over the active taps a = (a0, a1,
     * a2) (row-major over ts.count); the kernel offsets are j_d = first_d + a_d*step_d. */
    int r = kc * 16;
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
        const int k0 = ts.first[0] + j0 * ts.step[0];
        const int k1 = ts.first[1] + j1 * ts.step[1];
        const int k2 = ts.first[2] + j2 * ts.step[2];
        const int d0 = TRANS ? (ph[0] + p.pad[0] - k0 * p.dilation[0]) / p.stride[0] : k0 * p.dilation[0];
        const int d1 = TRANS ? (ph[1] + p.pad[1] - k1 * p.dilation[1]) / p.stride[1] : k1 * p.dilation[1];
        const int d2 = TRANS ? (ph[2] + p.pad[2] - k2 * p.dilation[2]) / p.stride[2] : k2 * p.dilation[2];
        const long long w_off = ((long long)(k0 * p.kernel[1] + k1) * p.kernel[2] + k2) * cg + c;
#pragma unroll
        for (int i = 0; i < A_CH; ++i) {
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
            unsigned short* dst = as + qc_swz((tid >> 2) + i * ROW_STEP, kc);
            if (ok) {
                qc_cp_async16(qc_smem_addr(dst), x + a_xb[i] + (((long long)id * H + ih) * W + iw) * C + c, true);
            } else {
                /* No input code here: the zero point (see the header). */
                *reinterpret_cast<uint4*>(dst) = make_uint4(zp4, zp4, zp4, zp4);
            }
        }
#pragma unroll
        for (int i = 0; i < B_CH; ++i) {
            const bool ok = rk && b_ok[i];
            qc_cp_async16(qc_smem_addr(bs + qc_swz((tid >> 2) + i * ROW_STEP, kc)), ok ? b_row[i] + w_off : w, ok);
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

    int acc[MI][NI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0;
    /* Row sums of A (WZP only): thread tid sums row tid % BM of every stage, its part
     * tid / BM of RS_PARTS (chunks RS_CH*part ...), from shared memory. */
    constexpr int RS_PARTS = THREADS / BM;
    constexpr int RS_CH = 4 / RS_PARTS;
    static_assert(RS_PARTS >= 1 && RS_PARTS * BM == THREADS && RS_CH * RS_PARTS == 4, "row-sum parts");
    const int rs_row = tid % BM;
    const int rs_part = tid / BM;
    unsigned rsum = 0u;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < KT) load_stage(s);
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
        /* Two k32 steps per stage (chunks 0-1, then 2-3). */
#pragma unroll
        for (int kk = 0; kk < 2; ++kk) {
            unsigned af[MI][4];
            unsigned bf[NI][2];
#pragma unroll
            for (int mi = 0; mi < MI; ++mi) {
                const int row = warp_m * WTM + mi * 16 + (lane & 15);
                qc_ldmatrix_x4(qc_smem_addr(as + qc_swz(row, kk * 2 + (lane >> 4))), af[mi][0], af[mi][1], af[mi][2],
                               af[mi][3]);
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
                for (int ni = 0; ni < NI; ++ni) qc_mma_u8s8(acc[mi][ni], af[mi], bf[ni]);
        }
        if (WZP) {
#pragma unroll
            for (int j = 0; j < RS_CH; ++j) {
                const uint4 v = *reinterpret_cast<const uint4*>(as + qc_swz(rs_row, rs_part * RS_CH + j));
                rsum = qc_sum_bytes(v.w, qc_sum_bytes(v.z, qc_sum_bytes(v.y, qc_sum_bytes(v.x, rsum))));
            }
        }
    }
    qc_cp_wait<0>();

    /* The rows' w_zero correction term, sum over the S slots of (A - x_zero) modulo 2^32, through
     * shared memory (smem_a, free once every warp has passed this barrier): [RS_PARTS][BM]. */
    unsigned* rs_smem = reinterpret_cast<unsigned*>(smem_a);
    if (WZP) {
        __syncthreads();
        rs_smem[rs_part * BM + rs_row] = rsum;
        __syncthreads();
    }
    const unsigned slots_zp = (unsigned)KT * (unsigned)BK * (unsigned)q.x_zero;

    /* Epilogue: per pair of output channels (n, n + 1), the corrections, the requantization and
     * u8 stores. */
    const float4* table = reinterpret_cast<const float4*>(q.requant);
    const int* colsum = reinterpret_cast<const int*>(q.col_sums) + (long long)phase * p.out_channels;
    const int* wzero = reinterpret_cast<const int*>(q.w_zero);
    unsigned char* y = reinterpret_cast<unsigned char*>(p.y);
    const long long K = p.out_channels;
    const bool bias = p.has_bias != 0;
#pragma unroll
    for (int ni = 0; ni < NI; ++ni) {
        const int n = n0 + warp_n * WTN + ni * 8 + (lane & 3) * 2;
        float4 t[2];
        unsigned cs[2], wz[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const long long ko = (long long)g * kg + (n + e < kg ? n + e : 0);
            t[e] = table[ko];
            cs[e] = (unsigned)colsum[ko] * (unsigned)q.x_zero;
            wz[e] = WZP ? (unsigned)wzero[ko] : 0u;
        }
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
                    const int o0 = ph[0] + q0 * p.stride[0], o1 = ph[1] + q1 * p.stride[1],
                              o2 = ph[2] + q2 * p.stride[2];
                    if (o0 >= p.out_size[0] || o1 >= p.out_size[1] || o2 >= p.out_size[2]) continue;
                    o_lin = ((long long)o0 * p.out_size[1] + o1) * p.out_size[2] + o2;
                } else {
                    b = m / p.out_spatial;
                    o_lin = m - b * p.out_spatial;
                }
                unsigned row = 0u; /* sum over the slots of (A - x_zero) */
                if (WZP) {
                    const int ml = warp_m * WTM + mi * 16 + (lane >> 2) + h * 8;
#pragma unroll
                    for (int part = 0; part < RS_PARTS; ++part) row += rs_smem[part * BM + ml];
                    row -= slots_zp;
                }
                unsigned code[2];
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    unsigned a = (unsigned)acc[mi][ni][h * 2 + e] - cs[e];
                    if (WZP) a -= wz[e] * row;
                    code[e] = qc_requant_u8((int)a, t[e].x, t[e].y, t[e].z, bias, q.out_zero, q.out_floor);
                }
                if (p.out_nhwc) {
                    const long long i0 = (b * p.out_spatial + o_lin) * K + (long long)g * kg + n;
                    if (n + 1 < kg && (i0 & 1) == 0) {
                        *reinterpret_cast<unsigned short*>(y + i0) = (unsigned short)(code[0] | (code[1] << 8));
                    } else {
                        if (n < kg) y[i0] = (unsigned char)code[0];
                        if (n + 1 < kg) y[i0 + 1] = (unsigned char)code[1];
                    }
                } else {
                    const long long i0 = (b * K + (long long)g * kg + n) * p.out_spatial + o_lin;
                    if (n < kg) y[i0] = (unsigned char)code[0];
                    if (n + 1 < kg) y[i0 + p.out_spatial] = (unsigned char)code[1];
                }
            }
        }
    }
}

/* 128x128: 8 warps of 64x32, 3 stages; 128x64 and 64x64: 4 warps of 64x32 / 32x32, 4 stages; 48 KB
 * / 48 KB / 32 KB of static shared memory, as the f16 tiles. The minimum-blocks hints (MINB) cap
 * the registers for 2, 3 and 4 resident blocks per multiprocessor (the transposed 128x128 tile:
 * 1, uncapped), so that choose_tc_tile's occupancy model (src/cuda/ops/conv_tc.rs) holds for these
 * tiles too. */
#define QC_IMMA_ENTRY(NAME, BM, BN, WM, WN, STAGES, MINB, TRANS, WZP)                                          \
    extern "C" __global__ void __launch_bounds__((WM) * (WN) * 32, MINB) NAME(const QcInt8ConvParams p) {     \
        qc_conv_imma<BM, BN, WM, WN, STAGES, TRANS, WZP>(p);                                                    \
    }
