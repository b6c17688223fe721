/*
 * The convolution kernel family shared by cuda/conv.cu (forward) and cuda/conv_transpose.cu
 * (transposed, gather form): a tiled implicit GEMM and a direct kernel.
 *
 * Notation: the problem is ConvProblem (src/problem.rs) normalised to three spatial dims
 * [D, H, W]; G groups, Cg = C/G input and Kg = K/G output channels per group, taps = kD*kH*kW.
 *
 * IMPLICIT GEMM, per group g and per phase (below):
 *     Y[m, n] = bias[g*Kg + m] + sum_r A[m, r] * B[r, n]
 *   m in [0, Kg)       output channel within the group                (GEMM M, grid.y tiles)
 *   n in [0, n_cols)   (batch b, output position in the phase sub-grid) (GEMM N, grid.x tiles)
 *   r = (tap, c)       tap-major, c in [0, Cg) input channel in group (GEMM K, the main loop)
 *   A[m, r] = w(g, m, c, tap)  through the strides of QcConvParams (any weight layout)
 *   B[r, n] = the input element that output n reads through tap `tap` from channel g*Cg + c,
 *             or 0 (zero padding / no contribution); the "im2col" matrix, never materialised.
 * Forward (ConvProblem): input index per dim = o*stride + j*dilation - pad, remapped by the
 * padding mode (qc_source_index, the rule of PaddingMode::source_index in src/problem.rs).
 * Transposed, gather form (ConvProblem): output o reads input i where i*stride = o + pad - j*dil.
 * PHASE DECOMPOSITION: outputs are split by o mod stride (per dim, phase r); inside one phase,
 * o = r + q*stride, and tap j contributes iff (r + pad - j*dil) mod stride == 0, the same for
 * every output of the phase: the block enumerates only the active taps (QcTapSet, an arithmetic
 * progression per dim), and an active tap reads i = q + (r + pad - j*dil)/stride. No work is
 * spent on the (stride^D - 1)/stride^D of (output, tap) pairs that contribute nothing. The
 * forward convolution is the special case of one phase whose sub-grid is the output
 * (phases = 1, sub_size = out_size, every tap active).
 * Each block owns one group (grid.z), one BM tile of m (grid.y), one phase and one BN tile of n
 * (grid.x = num_phases * n_tiles). The reduction runs over (tap, c) in BK-deep steps: tap-major
 * so that each thread recomputes the input position of its B column only when the tap changes;
 * a step never mixes taps (c0 restarts at 0), which wastes (BK - Cg % BK) rows when Cg is not a
 * multiple of BK (noted for the GPU-performance work; the direct kernel serves small Cg).
 * Coordinates are 32-bit, offsets 64-bit; the host (src/cuda/ops/params.rs) checks the bounds.
 * Shared-memory tiles are double buffered; global loads for step s+1 are issued into registers
 * before the FMAs of step s. Each thread accumulates a TM x TN register tile in f32 with explicit
 * fused multiply-adds (__fmaf_rn, independent of --fmad), rows ty + i*TY and columns tx + j*TX
 * (interleaved, conflict-free shared reads and coalesced stores). Bias is added in the epilogue,
 * then the value is converted to the activation dtype.
 *
 * CPU transcription (block by block and thread by thread, against the oracle):
 * src/cuda/emulate/conv_igemm.rs.
 *
 * DIRECT kernel (qc_conv_direct): one thread per (b, k, od, oh, 4 consecutive ow), looping over
 * Cg and the taps like the oracle (src/oracle.rs). Used for depthwise-like problems (small Cg), where the
 * GEMM's reduction is too short to fill a BK-deep tile.
 */
#ifndef QCONV_CONV_IGEMM_CUH
#define QCONV_CONV_IGEMM_CUH

#include "common.cuh"

/** Tile configuration: BM x BN block tile, BK-deep steps, TM x TN per thread, 256 threads;
 *  MIN_BLOCKS is the __launch_bounds__ occupancy hint (it caps registers at 65536/(256*MIN_BLOCKS)). */
template <int BM_, int BN_, int BK_, int TM_, int TN_, int MIN_BLOCKS_>
struct QcTile {
    static constexpr int MIN_BLOCKS = MIN_BLOCKS_;
    static constexpr int BM = BM_;
    static constexpr int BN = BN_;
    static constexpr int BK = BK_;
    static constexpr int TM = TM_;
    static constexpr int TN = TN_;
    static constexpr int TX = BN / TN; /* threads along n */
    static constexpr int TY = BM / TM; /* threads along m */
    static constexpr int THREADS = TX * TY;
    static constexpr int A_LOADS = BM * BK / THREADS; /* A elements each thread loads per step */
    static constexpr int B_LOADS = BN * BK / THREADS; /* B elements each thread loads per step */
    static constexpr int A_M_STEP = THREADS / BK;     /* m distance between a thread's A loads */
    static constexpr int B_K_STEP = THREADS / BN;     /* row distance between a thread's B loads */
    static constexpr int A_PAD = 32 / BK;             /* As row padding: conflict-free stores */
    static_assert(THREADS == 256, "kernels are launched with 256 threads");
    static_assert(BN % TN == 0 && BM % TM == 0, "thread tile must divide the block tile");
    static_assert(THREADS % BN == 0 && BK % B_K_STEP == 0, "each thread loads one B column");
    static_assert(THREADS % BK == 0 && BM % A_M_STEP == 0, "A loads must cover the tile");
    static_assert(32 % BK == 0, "A_PAD assumes BK divides 32");
};

/** The tile configurations instantiated (names used in kernel entry points, see src/cuda/kernels.rs). */
typedef QcTile<128, 128, 8, 8, 8, 1> QcTileT128; /* large problems: 64 outputs per thread */
typedef QcTile<64, 64, 16, 4, 4, 2> QcTileT64;   /* medium problems or few blocks */
typedef QcTile<32, 128, 8, 4, 4, 2> QcTileM32;   /* few output channels per group (Kg <= 32) */

/** The input position a thread's B column reads for the current tap. */
struct QcTapPos {
    long long off; /* spatial offset (id*H + ih)*W + iw within one input channel */
    bool ok;       /* false: the element is a zero (padding / no contribution / column outside) */
};

/** Per-thread description of its B column: one output position of the phase sub-grid. */
struct QcColumn {
    bool ok;            /* column inside n_cols and (transposed) inside out_size */
    long long x_base;   /* offset of input element (b, g*Cg, 0, 0, 0) */
    int base[3];        /* forward: o*stride - pad; transposed: q (sub-grid coordinate) */
};

/** Decodes phase index -> phase r[3] (row-major over phases[3]). */
__device__ __forceinline__ void qc_phase(const QcConvParams& p, int phase, int r[3]) {
    r[2] = phase % p.phases[2];
    phase /= p.phases[2];
    r[1] = phase % p.phases[1];
    r[0] = phase / p.phases[1];
}

/** Output coordinates of sub-grid column n (n < n_cols): batch b and o[3] = r + q * phases. */
__device__ __forceinline__ void qc_decode_col(const QcConvParams& p, const int r[3], long long n, long long& b,
                                              long long q[3], long long o[3]) {
    b = n / p.sub_spatial;
    long long s = n - b * p.sub_spatial;
    q[2] = s % p.sub_size[2];
    s /= p.sub_size[2];
    q[1] = s % p.sub_size[1];
    q[0] = s / p.sub_size[1];
    for (int d = 0; d < 3; ++d) o[d] = r[d] + q[d] * p.phases[d];
}

/** The taps that contribute to the outputs of one phase (block-uniform).
 *  Transposed: tap j contributes along dim d iff (r + pad - j*dil) is a multiple of stride. The
 *  solutions j of j*dil = r + pad (mod stride) form one residue class modulo
 *  stride / gcd(stride, dil), so the active j of a dim are first, first + step, ... < kernel,
 *  found from the first two solutions. Forward: every tap (first 0, step 1, count kernel).
 *  The active taps are the Cartesian product over the three dims, enumerated by an index
 *  a in [0, total): a -> (a0, a1, a2) row-major -> j_d = first_d + a_d * step_d. */
struct QcTapSet {
    int first[3];
    int step[3];
    int count[3];
    int total;
};

template <bool TRANSPOSED>
__device__ __forceinline__ QcTapSet qc_tap_set(const QcConvParams& p, const int r[3]) {
    QcTapSet s;
    for (int d = 0; d < 3; ++d) {
        s.first[d] = 0;
        s.step[d] = 1;
        s.count[d] = p.kernel[d];
        if (TRANSPOSED) {
            int first = -1, second = -1;
            for (int j = 0; j < p.kernel[d]; ++j) {
                if ((r[d] + p.pad[d] - j * p.dilation[d]) % p.stride[d] == 0) {
                    if (first < 0) {
                        first = j;
                    } else {
                        second = j;
                        break;
                    }
                }
            }
            s.first[d] = first < 0 ? 0 : first;
            s.step[d] = second < 0 ? 1 : second - first;
            s.count[d] = first < 0 ? 0 : (second < 0 ? 1 : (p.kernel[d] - 1 - first) / (second - first) + 1);
        }
    }
    s.total = s.count[0] * s.count[1] * s.count[2];
    return s;
}

/** Active-tap index -> kernel offsets j[3]. */
__device__ __forceinline__ void qc_active_tap(const QcTapSet& s, int a, int j[3]) {
    const int a2 = a % s.count[2];
    const int a01 = a / s.count[2];
    const int a1 = a01 % s.count[1];
    const int a0 = a01 / s.count[1];
    j[0] = s.first[0] + a0 * s.step[0];
    j[1] = s.first[1] + a1 * s.step[1];
    j[2] = s.first[2] + a2 * s.step[2];
}

/** Where column `col` reads through the (active) tap with kernel offsets j[3]. */
template <bool TRANSPOSED>
__device__ __forceinline__ QcTapPos qc_tap_pos(const QcConvParams& p, const int r[3], const QcColumn& col, const int j[3]) {
    QcTapPos t;
    t.ok = col.ok;
    t.off = 0;
    int idx[3];
    /* 32-bit coordinates: src/cuda/ops/params.rs (conv_params) guarantees that every coordinate
     * expression below, including the reflect remap 2(len-1) - i, stays below 2^31 in magnitude. */
    for (int d = 0; d < 3; ++d) {
        const int len = p.in_size[d];
        if (TRANSPOSED) {
            /* i*stride = o + pad - j*dil with o = r + q*stride: i = q + (r + pad - j*dil)/stride,
             * an exact division because the tap is active for this phase. */
            const int i = col.base[d] + (r[d] + p.pad[d] - j[d] * p.dilation[d]) / p.stride[d];
            idx[d] = (i >= 0 && i < len) ? i : -1;
        } else {
            /* i = o*stride + j*dilation - pad, remapped by the padding mode. */
            idx[d] = qc_source_index_i32(p.pad_mode, col.base[d] + j[d] * p.dilation[d], len);
        }
        t.ok = t.ok && idx[d] >= 0;
    }
    if (t.ok) t.off = ((long long)idx[0] * p.in_size[1] + idx[1]) * p.in_size[2] + idx[2];
    return t;
}

/** The implicit-GEMM convolution, one block = one (group, m tile, phase, n tile). */
template <typename T, class C, bool TRANSPOSED>
__device__ __forceinline__ void qc_igemm(const QcConvParams& p) {
    __shared__ float As[2][C::BK][C::BM + C::A_PAD];
    __shared__ float Bs[2][C::BK][C::BN];

    const T* __restrict__ x = reinterpret_cast<const T*>(p.x);
    const float* __restrict__ w = reinterpret_cast<const float*>(p.w);
    const int tid = threadIdx.x;
    const int tx = tid % C::TX;
    const int ty = tid / C::TX;

    /* Block coordinates (host: src/cuda/ops/simt.rs computes the same grid). */
    const long long n_tiles = qc_ceil_div(p.n_cols, C::BN);
    const int phase = (int)((long long)blockIdx.x / n_tiles);
    const long long n0 = ((long long)blockIdx.x - (long long)phase * n_tiles) * C::BN;
    const int m0 = blockIdx.y * C::BM;
    const int g = blockIdx.z;
    int r[3];
    qc_phase(p, phase, r);

    /* This thread's B column (fixed for the whole reduction). */
    const int b_col = tid % C::BN;
    const int b_row = tid / C::BN;
    QcColumn col;
    {
        const long long n = n0 + b_col;
        long long b = 0, q[3] = {0, 0, 0}, o[3] = {0, 0, 0};
        col.ok = n < p.n_cols;
        if (col.ok) qc_decode_col(p, r, n, b, q, o);
        for (int d = 0; d < 3; ++d) {
            col.ok = col.ok && o[d] < p.out_size[d];
            col.base[d] = TRANSPOSED ? (int)q[d] : (int)o[d] * p.stride[d] - p.pad[d];
        }
        col.x_base = (b * p.in_channels + (long long)g * p.cg) * p.in_spatial;
    }
    /* This thread's A loads: row (input channel) a_k, output channels a_m + j*A_M_STEP. */
    const int a_k = tid % C::BK;
    const int a_m = tid / C::BK;
    const long long w_group = (long long)g * p.w_stride_group;

    float acc[C::TM][C::TN];
#pragma unroll
    for (int i = 0; i < C::TM; ++i)
#pragma unroll
        for (int j = 0; j < C::TN; ++j) acc[i][j] = 0.0f;

    float a_reg[C::A_LOADS];
    float b_reg[C::B_LOADS];
    /* The phase's active taps live in shared memory: they are read only when the tap changes,
     * and keeping them out of registers leaves room for the 64 accumulators of T128. */
    __shared__ QcTapSet taps_smem;
    if (tid == 0) taps_smem = qc_tap_set<TRANSPOSED>(p, r);
    __syncthreads();
    const QcTapSet& taps = taps_smem;
    int pos_a = -1; /* active-tap index for which `pos` and `w_tap` were computed */
    long long w_tap = 0;
    QcTapPos pos;
    pos.ok = false;
    pos.off = 0;

    /* Global -> registers for the step (active tap a, channels c0 .. c0 + BK). */
    auto load = [&](int a, int c0) {
        if (a != pos_a) {
            int j[3];
            qc_active_tap(taps, a, j);
            pos = qc_tap_pos<TRANSPOSED>(p, r, col, j);
            w_tap = w_group + (long long)((j[0] * p.kernel[1] + j[1]) * p.kernel[2] + j[2]) * p.w_stride_tap;
            pos_a = a;
        }
#pragma unroll
        for (int j = 0; j < C::A_LOADS; ++j) {
            const int m = m0 + a_m + j * C::A_M_STEP;
            const int c = c0 + a_k;
            a_reg[j] = (m < p.kg && c < p.cg) ? __ldg(w + w_tap + m * p.w_stride_m + c * p.w_stride_c) : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < C::B_LOADS; ++j) {
            const int c = c0 + b_row + j * C::B_K_STEP;
            b_reg[j] = (pos.ok && c < p.cg) ? qc_load<T>(x, col.x_base + (long long)c * p.in_spatial + pos.off) : 0.0f;
        }
    };
    /* Registers -> shared buffer `buf`. */
    auto store = [&](int buf) {
#pragma unroll
        for (int j = 0; j < C::A_LOADS; ++j) As[buf][a_k][a_m + j * C::A_M_STEP] = a_reg[j];
#pragma unroll
        for (int j = 0; j < C::B_LOADS; ++j) Bs[buf][b_row + j * C::B_K_STEP][b_col] = b_reg[j];
    };

    /* The reduction: steps (a, c0) over the active taps a (block-uniform) and c0 = 0, BK, ...
     * below Cg. A step never mixes taps. */
    int a = 0;
    int c0 = 0;
    if (a < taps.total) {
        load(a, c0);
        store(0);
    }
    __syncthreads();
    int buf = 0;
    while (a < taps.total) {
        int next_a = a;
        int next_c0 = c0 + C::BK;
        if (next_c0 >= p.cg) {
            next_c0 = 0;
            ++next_a;
        }
        const bool has_next = next_a < taps.total;
        if (has_next) load(next_a, next_c0); /* in flight while the FMAs below run */
#pragma unroll
        for (int k = 0; k < C::BK; ++k) {
            /* One row of B in registers, A streamed one element at a time. */
            float b[C::TN];
#pragma unroll
            for (int j = 0; j < C::TN; ++j) b[j] = Bs[buf][k][tx + j * C::TX];
#pragma unroll
            for (int i = 0; i < C::TM; ++i) {
                const float av = As[buf][k][ty + i * C::TY];
#pragma unroll
                for (int j = 0; j < C::TN; ++j) acc[i][j] = __fmaf_rn(av, b[j], acc[i][j]);
            }
        }
        if (has_next) store(buf ^ 1); /* nobody reads buf^1 now: the last barrier ended its use */
        __syncthreads();
        buf ^= 1;
        a = next_a;
        c0 = next_c0;
    }

    /* Epilogue: bias, conversion, store. Output (b, k, o) at (b*K + k)*out_spatial + o_lin.
     * Column-major over the register tile so that only one column's decode is live at a time
     * (low register pressure next to the accumulators). */
    T* __restrict__ y = reinterpret_cast<T*>(p.y);
    const float* __restrict__ bias = reinterpret_cast<const float*>(p.bias);
#pragma unroll
    for (int j = 0; j < C::TN; ++j) {
        const long long n = n0 + tx + j * C::TX;
        if (n >= p.n_cols) continue;
        long long b, q[3], o[3];
        qc_decode_col(p, r, n, b, q, o);
        if (o[0] >= p.out_size[0] || o[1] >= p.out_size[1] || o[2] >= p.out_size[2]) continue;
        const long long y_col = b * p.out_channels * p.out_spatial + (o[0] * p.out_size[1] + o[1]) * p.out_size[2] + o[2];
#pragma unroll
        for (int i = 0; i < C::TM; ++i) {
            const int m = m0 + ty + i * C::TY;
            if (m >= p.kg) continue;
            const int k = g * p.kg + m;
            const float bk = p.has_bias ? __ldg(bias + k) : 0.0f;
            qc_store<T>(y, y_col + (long long)k * p.out_spatial, __fadd_rn(acc[i][j], bk));
        }
    }
}

/** Outputs per thread along W in the direct kernel. */
#define QC_DIRECT_QW 4
#define QC_DIRECT_THREADS 256

/** Input index along dim d read by output o through tap j, or -1 (forward or transposed). */
template <bool TRANSPOSED>
__device__ __forceinline__ long long qc_direct_index(const QcConvParams& p, int d, long long o, int j) {
    const long long len = p.in_size[d];
    if (TRANSPOSED) {
        /* The oracle's input_index (src/oracle.rs): t = o + pad - j*dil; needs t >= 0 and
         * t % stride == 0. */
        const long long t = o + p.pad[d] - (long long)j * p.dilation[d];
        if (t < 0 || t % p.stride[d] != 0) return -1;
        const long long i = t / p.stride[d];
        return i < len ? i : -1;
    }
    return qc_source_index(p.pad_mode, o * p.stride[d] + (long long)j * p.dilation[d] - p.pad[d], len);
}

/** Direct convolution: grid-stride over (b, k, od, oh, ow / QW); each thread QW outputs. */
template <typename T, bool TRANSPOSED>
__device__ __forceinline__ void qc_conv_direct(const QcConvParams& p) {
    const T* __restrict__ x = reinterpret_cast<const T*>(p.x);
    const float* __restrict__ w = reinterpret_cast<const float*>(p.w);
    T* __restrict__ y = reinterpret_cast<T*>(p.y);
    const float* __restrict__ bias = reinterpret_cast<const float*>(p.bias);
    const long long wq = qc_ceil_div(p.out_size[2], QC_DIRECT_QW);
    const long long total = (long long)p.batch * p.out_channels * p.out_size[0] * p.out_size[1] * wq;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        long long t = idx;
        const long long owq = t % wq;
        t /= wq;
        const long long o1 = t % p.out_size[1];
        t /= p.out_size[1];
        const long long o0 = t % p.out_size[0];
        t /= p.out_size[0];
        const int k = (int)(t % p.out_channels);
        const long long b = t / p.out_channels;
        const int g = k / p.kg;
        const int m = k - g * p.kg;
        const long long ow0 = owq * QC_DIRECT_QW;

        float acc[QC_DIRECT_QW];
#pragma unroll
        for (int q = 0; q < QC_DIRECT_QW; ++q) acc[q] = 0.0f;
        for (int c = 0; c < p.cg; ++c) {
            const long long x_base = (b * p.in_channels + (long long)g * p.cg + c) * p.in_spatial;
            const long long w_base = (long long)g * p.w_stride_group + (long long)m * p.w_stride_m + (long long)c * p.w_stride_c;
            for (int j0 = 0; j0 < p.kernel[0]; ++j0) {
                const long long i0 = qc_direct_index<TRANSPOSED>(p, 0, o0, j0);
                if (i0 < 0) continue;
                for (int j1 = 0; j1 < p.kernel[1]; ++j1) {
                    const long long i1 = qc_direct_index<TRANSPOSED>(p, 1, o1, j1);
                    if (i1 < 0) continue;
                    const long long row = x_base + (i0 * p.in_size[1] + i1) * p.in_size[2];
                    for (int j2 = 0; j2 < p.kernel[2]; ++j2) {
                        const int tap = (j0 * p.kernel[1] + j1) * p.kernel[2] + j2;
                        const float wv = __ldg(w + w_base + (long long)tap * p.w_stride_tap);
#pragma unroll
                        for (int q = 0; q < QC_DIRECT_QW; ++q) {
                            const long long ow = ow0 + q;
                            if (ow >= p.out_size[2]) break;
                            const long long i2 = qc_direct_index<TRANSPOSED>(p, 2, ow, j2);
                            if (i2 >= 0) acc[q] = __fmaf_rn(wv, qc_load<T>(x, row + i2), acc[q]);
                        }
                    }
                }
            }
        }
        const float bk = p.has_bias ? __ldg(bias + k) : 0.0f;
        const long long y_base = (((b * p.out_channels + k) * p.out_size[0] + o0) * p.out_size[1] + o1) * p.out_size[2];
#pragma unroll
        for (int q = 0; q < QC_DIRECT_QW; ++q) {
            const long long ow = ow0 + q;
            if (ow < p.out_size[2]) qc_store<T>(y, y_base + ow, __fadd_rn(acc[q], bk));
        }
    }
}

/* Entry-point generators. One extern "C" symbol per (direction, dtype, tile), instantiated by the
 * program list in src/cuda/kernels.rs (for cuda/conv.cu and cuda/conv_transpose.cu). */
#define QC_IGEMM_ENTRY(NAME, T, TILE, TRANSPOSED)                                                   \
    extern "C" __global__ void __launch_bounds__(256, TILE::MIN_BLOCKS) NAME(const QcConvParams p) { \
        qc_igemm<T, TILE, TRANSPOSED>(p);                                                            \
    }

#define QC_DIRECT_ENTRY(NAME, T, TRANSPOSED)                                                        \
    extern "C" __global__ void __launch_bounds__(QC_DIRECT_THREADS) NAME(const QcConvParams p) {    \
        qc_conv_direct<T, TRANSPOSED>(p);                                                           \
    }

#endif /* QCONV_CONV_IGEMM_CUH */
