/*
 * The Hopper convolution (sm_90a only): a forward implicit GEMM on wgmma.mma_async
 * (m64nBNk16, BN = 128 or 64, f16 or bf16 operands, f32 accumulation) fed by TMA, with an
 * mbarrier ring pipeline and warp-specialised warpgroups. Opt-in (Precision::TensorCoreSm90a)
 * until it has run on a GPU;
 * docs/gpu-results.md lists what awaits that run.
 *
 * GEMM view (groups 1):
 *     Y[m, n] = bias[n] + sum_r A[m, r] * B[n, r]
 *   m = output pixel, batch-major (W fastest: the order the im2col TMA traverses), BM = 128
 *   n = output channel, BN = 128, or 64 when K <= 64 (no half-empty tiles)
 *   r = tap * C + c (tap-major, channel-minor: the packed tensor-core weight's order), one
 *       reduction step (k-step) = 64 channels of one tap = 128 bytes of f16/bf16
 *   A: the im2col TMA copies, per k-step, 128 output pixels x 64 channels of the tap's input
 *      pixels into shared memory (row-major [128][64], 128-byte swizzle); padding, the tail of
 *      the last tile, and channels >= C are zero-filled by the copy engine. The map's pixel box
 *      is [-pad, (out-1)*stride + 1 - pad) per spatial dimension (exactly `out` filter bases),
 *      traversed with the convolution stride; the instruction gives the tile's first output
 *      pixel (its filter base) and the tap's offsets (s*dil_W, r*dil_H, t*dil_D).
 *   B: the tiled TMA copies the packed weight box {64 channels, tap, BN output channels}
 *      (rank 3 view {C, taps, K} of the [K][row] rows) the same way.
 * Both tiles are K-major with 128-byte rows, the canonical SW128 layout of wgmma: descriptor
 * start = tile + 32 bytes per k16 step, LBO 16 (unused), SBO 1024 (8 rows), swizzle code 1.
 *
 * Block: 384 threads = 3 warpgroups, __launch_bounds__(384, 1). Warpgroup 0 is the producer
 * (setmaxnreg.dec 40): one thread waits for a free stage, arms its "full" barrier with the
 * bytes of the two boxes (16 KiB + BN * 128) and issues both TMA copies. Warpgroups 1 and 2
 * are the consumers (setmaxnreg.inc 232), rows 0-63 and 64-127 of the tile: each waits for the
 * stage's "full" barrier, issues 4 wgmma (k16 each) into its BN/2 accumulators per thread,
 * commits, waits until at
 * most the group just issued is pending and releases the previous stage ("empty" barrier, one
 * arrival per consumer thread, 256 in all). 6 stages of 32 KiB (BN 128) or 8 of 24 KiB (BN 64)
 * in dynamic shared memory (QcWgTile<BN>), every stage on a 1024-byte boundary (the swizzle's
 * repeat: TMA and wgmma both key the XOR to the absolute address; the base is rounded up at run
 * time).
 *
 * Epilogue from the registers: accumulator v of thread t of a consumer warpgroup is row
 * 16*(t/32) + (t%32)/4 + 8*((v>>1)&1), column 8*(v>>2) + 2*(t%4) + (v&1); bias added in f32,
 * one rounding to the activation dtype (QcMma<T>::cvt, as the mma.sync tiles), channels-last or
 * NCHW stores, masked at m_total and K.
 *
 * Host requirements (src/cuda/ops/conv_wg.rs `can_run` and the encode checks, before every
 * launch): compute capability 9.0, groups 1, C a multiple of 8 (16-byte pixels), padding mode
 * zeros, forward, the TMA limits of the im2col map (corners, offsets, strides <= 8), y 4-byte
 * aligned for the paired stores, 64-bit offsets throughout.
 *
 * Entry points: qc_conv_wg_<f16|bf16>_128x<128|64>, one NVRTC program for sm_90a
 * (src/cuda/kernels.rs). CPU transcription: src/cuda/emulate/conv_wg.rs.
 */
#include "tensor_core.cuh" /* common.cuh, QcMma<T>::cvt */

#if !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "conv_wg.cu uses wgmma and setmaxnreg: compile it for sm_90a (-arch=sm_90a)"
#endif

#define QC_WG_BM 128
#define QC_WG_BK_BYTES 128
/* Pipeline stages of the 128- and 64-channel tiles (32 KiB and 24 KiB per stage). */
#define QC_WG_STAGES_N128 6
#define QC_WG_STAGES_N64 8

/** The tile of BN output channels (128, or 64 for convolutions with at most 64 output
 *  channels): stage layout A [128][128 B] then B [BN][128 B], both on 1024-byte boundaries. */
template <int BN>
struct QcWgTile {
    static_assert(BN == 128 || BN == 64, "tile");
    static constexpr int STAGES = BN == 128 ? QC_WG_STAGES_N128 : QC_WG_STAGES_N64;
    static constexpr unsigned A_BYTES = QC_WG_BM * QC_WG_BK_BYTES;
    static constexpr unsigned STAGE_BYTES = A_BYTES + BN * QC_WG_BK_BYTES;
    /* Dynamic shared memory the host requests: the stages, the 2 * STAGES barriers, and 1 KiB to
     * round the base up to a 1024-byte boundary. */
    static constexpr unsigned SMEM_BYTES = STAGES * STAGE_BYTES + 2 * STAGES * 8 + 1024;
    static_assert(STAGE_BYTES % 1024 == 0, "stages stay 1024-aligned");
};

/* ---- mbarrier -------------------------------------------------------------------------------- */

__device__ __forceinline__ void qc_mbar_init(unsigned bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}

__device__ __forceinline__ void qc_mbar_expect_tx(unsigned bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}

__device__ __forceinline__ void qc_mbar_arrive(unsigned bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}

/** Waits until the phase of parity `parity` of the barrier has completed. */
__device__ __forceinline__ void qc_mbar_wait(unsigned bar, unsigned parity) {
    asm volatile(
        "{\n.reg .pred P1;\nQC_WAIT_%=:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1, %2;\n"
        "@!P1 bra QC_WAIT_%=;\n}" ::"r"(bar),
        "r"(parity), "r"(0x989680)
        : "memory");
}

/* ---- TMA ------------------------------------------------------------------------------------- */

__device__ __forceinline__ void qc_tma_im2col_3d(unsigned dst, const QcTensorMap* map, unsigned bar, int c, int w,
                                                 int n, unsigned short ow) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes"
        " [%0], [%1, {%3, %4, %5}], [%2], {%6};" ::"r"(dst),
        "l"((unsigned long long)map), "r"(bar), "r"(c), "r"(w), "r"(n), "h"(ow)
        : "memory");
}

__device__ __forceinline__ void qc_tma_im2col_4d(unsigned dst, const QcTensorMap* map, unsigned bar, int c, int w,
                                                 int h, int n, unsigned short ow, unsigned short oh) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes"
        " [%0], [%1, {%3, %4, %5, %6}], [%2], {%7, %8};" ::"r"(dst),
        "l"((unsigned long long)map), "r"(bar), "r"(c), "r"(w), "r"(h), "r"(n), "h"(ow), "h"(oh)
        : "memory");
}

__device__ __forceinline__ void qc_tma_im2col_5d(unsigned dst, const QcTensorMap* map, unsigned bar, int c, int w,
                                                 int h, int d, int n, unsigned short ow, unsigned short oh,
                                                 unsigned short od) {
    asm volatile(
        "cp.async.bulk.tensor.5d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes"
        " [%0], [%1, {%3, %4, %5, %6, %7}], [%2], {%8, %9, %10};" ::"r"(dst),
        "l"((unsigned long long)map), "r"(bar), "r"(c), "r"(w), "r"(h), "r"(d), "r"(n), "h"(ow), "h"(oh), "h"(od)
        : "memory");
}

__device__ __forceinline__ void qc_tma_tile_3d(unsigned dst, const QcTensorMap* map, unsigned bar, int c0, int c1,
                                               int c2) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
        " [%0], [%1, {%3, %4, %5}], [%2];" ::"r"(dst),
        "l"((unsigned long long)map), "r"(bar), "r"(c0), "r"(c1), "r"(c2)
        : "memory");
}

__device__ __forceinline__ void qc_prefetch_map(const QcTensorMap* map) {
    asm volatile("prefetch.tensormap [%0];" ::"l"((unsigned long long)map) : "memory");
}

/* ---- wgmma ----------------------------------------------------------------------------------- */

/** The shared-memory matrix descriptor of a K-major operand with 128-byte swizzle: start address,
 *  LBO 16 bytes (unused by swizzled K-major layouts), SBO 1024 bytes (8 rows of 128 bytes),
 *  base offset 0 (tiles on 1024-byte boundaries), layout code 1 (SWIZZLE_128B). Fields >> 4. */
__device__ __forceinline__ unsigned long long qc_wg_desc(unsigned saddr) {
    return (unsigned long long)((saddr & 0x3FFFFu) >> 4) | ((unsigned long long)(16u >> 4) << 16) |
           ((unsigned long long)(1024u >> 4) << 32) | (1ull << 62);
}

__device__ __forceinline__ void qc_wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void qc_wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void qc_wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

/** Keeps the compiler from moving accumulator uses across a wgmma wait (CUTLASS's
 *  warpgroup_fence_operand). */
template <int R>
__device__ __forceinline__ void qc_wg_fence_acc(float (&d)[R]) {
#pragma unroll
    for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#define QC_WG_D8(i)                                                                                             \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), \
        "+f"(d[i + 7])
#define QC_WG_REGS32 \
    "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}"
#define QC_WG_REGS64                                                                                        \
    "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27," \
    "%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,"  \
    "%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}"

/** One m64nBNk16 product per operand type and tile width: D (+)= A * B^T, both from shared
 *  memory (K-major, no transpose); `scale_d` 0 ignores D's previous contents (the first k-step). */
template <typename T, int BN>
struct QcWgmma;

#define QC_WG_MMA(T, PTXTYPE)                                                                                 \
    template <>                                                                                               \
    struct QcWgmma<T, 128> {                                                                                  \
        static __device__ __forceinline__ void mma(float (&d)[64], unsigned long long da, unsigned long long db, \
                                                   int scale_d) {                                             \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                          \
                         "wgmma.mma_async.sync.aligned.m64n128k16.f32." PTXTYPE "." PTXTYPE " " QC_WG_REGS64     \
                         ", %64, %65, p, 1, 1, 0, 0;\n}"                                                        \
                         : QC_WG_D8(0), QC_WG_D8(8), QC_WG_D8(16), QC_WG_D8(24), QC_WG_D8(32), QC_WG_D8(40),    \
                           QC_WG_D8(48), QC_WG_D8(56)                                                         \
                         : "l"(da), "l"(db), "r"(scale_d));                                                   \
        }                                                                                                     \
    };                                                                                                        \
    template <>                                                                                               \
    struct QcWgmma<T, 64> {                                                                                   \
        static __device__ __forceinline__ void mma(float (&d)[32], unsigned long long da, unsigned long long db, \
                                                   int scale_d) {                                             \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                          \
                         "wgmma.mma_async.sync.aligned.m64n64k16.f32." PTXTYPE "." PTXTYPE " " QC_WG_REGS32      \
                         ", %32, %33, p, 1, 1, 0, 0;\n}"                                                        \
                         : QC_WG_D8(0), QC_WG_D8(8), QC_WG_D8(16), QC_WG_D8(24)                                 \
                         : "l"(da), "l"(db), "r"(scale_d));                                                   \
        }                                                                                                     \
    };

QC_WG_MMA(qc_half, "f16")
QC_WG_MMA(qc_bf16, "bf16")

/* ---- the producer ---------------------------------------------------------------------------- */

/** The one producer thread: for every k-step, wait for the stage to be free, arm its barrier
 *  and copy the A box (im2col) and the B box (tiled) into it. */
template <int BN>
__device__ __forceinline__ void qc_wg_produce(const QcWgConvParams& p, unsigned smem, unsigned full0,
                                              unsigned empty0) {
    using Tile = QcWgTile<BN>;
    const QcConvParams& c = p.conv;
    /* The tile's first output pixel: its image and output coordinates -> the filter base. */
    const long long m0 = (long long)blockIdx.x * QC_WG_BM;
    const int n0 = blockIdx.y * BN;
    const int img = (int)(m0 / c.out_spatial);
    long long rest = m0 - (long long)img * c.out_spatial;
    const int q = (int)(rest % c.out_size[2]);
    rest /= c.out_size[2];
    const int o1 = (int)(rest % c.out_size[1]);
    const int o0 = (int)(rest / c.out_size[1]);
    const int bw = q * c.stride[2] - c.pad[2];
    const int bh = o1 * c.stride[1] - c.pad[1];
    const int bd = o0 * c.stride[0] - c.pad[0];
    const int kw = c.kernel[2], khw = c.kernel[1] * c.kernel[2];
    for (int kt = 0; kt < p.k_steps; ++kt) {
        const int s = kt % Tile::STAGES;
        const unsigned phase = (unsigned)(kt / Tile::STAGES) & 1u;
        qc_mbar_wait(empty0 + 8 * s, phase ^ 1u);
        const unsigned full = full0 + 8 * s;
        qc_mbar_expect_tx(full, Tile::STAGE_BYTES);
        const int tap = kt / p.c_chunks;
        const int ch = (kt - tap * p.c_chunks) * 64;
        const int t0 = tap / khw, t1 = (tap / kw) % c.kernel[1], t2 = tap % kw;
        const unsigned short ow = (unsigned short)(t2 * c.dilation[2]);
        const unsigned short oh = (unsigned short)(t1 * c.dilation[1]);
        const unsigned short od = (unsigned short)(t0 * c.dilation[0]);
        const unsigned a_dst = smem + s * Tile::STAGE_BYTES;
        if (p.spatial_dims == 3) {
            qc_tma_im2col_5d(a_dst, &p.act, full, ch, bw, bh, bd, img, ow, oh, od);
        } else if (p.spatial_dims == 2) {
            qc_tma_im2col_4d(a_dst, &p.act, full, ch, bw, bh, img, ow, oh);
        } else {
            qc_tma_im2col_3d(a_dst, &p.act, full, ch, bw, img, ow);
        }
        qc_tma_tile_3d(a_dst + Tile::A_BYTES, &p.wgt, full, ch, tap, n0);
    }
}

/* ---- the consumers ---------------------------------------------------------------------------- */

/** Consumer warpgroup `cw` (0 or 1): rows 64*cw ... 64*cw + 63 of the tile, every k-step, then
 *  the epilogue. */
template <typename T, int BN>
__device__ __forceinline__ void qc_wg_consume(const QcWgConvParams& p, unsigned smem, unsigned full0,
                                              unsigned empty0, int cw) {
    using Tile = QcWgTile<BN>;
    const QcConvParams& c = p.conv;
    const int t = threadIdx.x & 127;
    float d[BN / 2];
    for (int kt = 0; kt < p.k_steps; ++kt) {
        const int s = kt % Tile::STAGES;
        qc_mbar_wait(full0 + 8 * s, (unsigned)(kt / Tile::STAGES) & 1u);
        const unsigned a = smem + s * Tile::STAGE_BYTES + cw * (64 * QC_WG_BK_BYTES);
        const unsigned b = smem + s * Tile::STAGE_BYTES + Tile::A_BYTES;
        qc_wg_fence();
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            QcWgmma<T, BN>::mma(d, qc_wg_desc(a + 32 * k), qc_wg_desc(b + 32 * k), kt > 0 || k > 0);
        }
        qc_wg_commit();
        /* The group of k-step kt-1 has finished reading its stage: release it (every consumer
         * thread arrives after its own wait, as CUTLASS's consumer_release: 256 arrivals). */
        qc_wg_wait<1>();
        qc_wg_fence_acc(d);
        if (kt > 0) qc_mbar_arrive(empty0 + 8 * ((kt - 1) % Tile::STAGES));
    }
    qc_wg_wait<0>();
    qc_wg_fence_acc(d);

    /* Epilogue: bias in f32, one rounding, channels-last or NCHW. */
    const int warp = t >> 5, lane = t & 31;
    const long long m_total = (long long)c.batch * c.out_spatial;
    const long long K = c.out_channels;
    const int n0 = blockIdx.y * BN;
    const float* bias = c.has_bias ? reinterpret_cast<const float*>(c.bias) : 0;
    unsigned short* y = reinterpret_cast<unsigned short*>(c.y);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const long long m = (long long)blockIdx.x * QC_WG_BM + 64 * cw + 16 * warp + (lane >> 2) + 8 * h;
        if (m >= m_total) continue;
        const long long img = m / c.out_spatial;
        const long long o_lin = m - img * c.out_spatial;
        const long long base = c.out_nhwc ? m * K : img * K * c.out_spatial + o_lin;
        const long long kstride = c.out_nhwc ? 1 : c.out_spatial;
#pragma unroll
        for (int j = 0; j < BN / 8; ++j) {
            const int n = n0 + 8 * j + 2 * (lane & 3);
            float v0 = d[4 * j + 2 * h];
            float v1 = d[4 * j + 2 * h + 1];
            if (bias != 0) {
                if (n < K) v0 = __fadd_rn(v0, bias[n]);
                if (n + 1 < K) v1 = __fadd_rn(v1, bias[n + 1]);
            }
            const unsigned short h0 = QcMma<T>::cvt(v0);
            const unsigned short h1 = QcMma<T>::cvt(v1);
            const long long i0 = base + n * kstride;
            if (kstride == 1 && n + 1 < K && (i0 & 1) == 0) {
                *reinterpret_cast<unsigned*>(y + i0) = (unsigned)h0 | ((unsigned)h1 << 16);
            } else {
                if (n < K) y[i0] = h0;
                if (n + 1 < K) y[i0 + kstride] = h1;
            }
        }
    }
}

/* ---- the kernel ------------------------------------------------------------------------------- */

template <typename T, int BN>
__device__ __forceinline__ void qc_conv_wg(const QcWgConvParams& p) {
    using Tile = QcWgTile<BN>;
    extern __shared__ __align__(1024) unsigned char qc_wg_smem[];
    /* Stage s: A at smem + s*32 KiB, B 16 KiB later; the barriers after the stages. */
    const unsigned smem = (qc_smem_addr(qc_wg_smem) + 1023u) & ~1023u;
    const unsigned full0 = smem + Tile::STAGES * Tile::STAGE_BYTES;
    const unsigned empty0 = full0 + 8 * Tile::STAGES;
    const int wg = threadIdx.x >> 7;
    if (threadIdx.x == 0) {
        qc_prefetch_map(&p.act);
        qc_prefetch_map(&p.wgt);
#pragma unroll
        for (int s = 0; s < Tile::STAGES; ++s) {
            qc_mbar_init(full0 + 8 * s, 1);
            qc_mbar_init(empty0 + 8 * s, 256);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    if (wg == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
        if (threadIdx.x == 0) qc_wg_produce<BN>(p, smem, full0, empty0);
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
        qc_wg_consume<T, BN>(p, smem, full0, empty0, wg - 1);
    }
}

/* 384 threads, one block per multiprocessor (the register cap 65536 / 384 = 168 per thread, which
 * setmaxnreg redistributes: 128 * 40 + 256 * 232 = 64512). */
#define QC_WG_ENTRY(NAME, T, BN)                                                                  \
    extern "C" __global__ void __launch_bounds__(384, 1) NAME(const __grid_constant__ QcWgConvParams p) { \
        qc_conv_wg<T, BN>(p);                                                                     \
    }
