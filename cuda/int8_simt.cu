/*
 * The CUDA-core kernels of the lowered int8 convolutions: the depthwise convolution (exact,
 * channels-last input) and the u8 channel copy that feeds the tensor-core tiles of
 * cuda/conv_imma.cu.
 *
 * qc_dw_int8 (QcInt8ConvParams): forward convolutions with one input channel per group
 * (groups == in_channels; out_channels = groups * kg, output channel k reads input channel k / kg).
 * Each thread owns 4 consecutive output channels of one output pixel (grid-stride over
 * batch * out_spatial * ceil(K / 4) items, fewer than 2^31: the host checks it), and adds, tap by
 * tap, (x - x_zero) * wc in int32, where wc = w - w_zero[k] is the centred weight code the host
 * packed [taps][K] as int16; a padded tap (zeros padding, or an index a padding mode still maps
 * outside: qc_source_index_i32) adds nothing, as it reads x_zero. |acc| <= taps * 255 * 255 stays
 * below 2^31 for taps <= 33,025 (host check). Then qc_requant_u8 (cuda/int8.cuh) and u8 stores,
 * channels-last (out_nhwc 1) or NCHW.
 *
 * qc_pad_channels_u8 (QcPadU8Params): cuda/layout.cu's channel padding for u8 codes, with the fill
 * code of the extra slots (the input zero point): one thread per pixel, grid-stride, NCHW or
 * channels-last source, channels-last destination with cg_pad slots per group. cg_pad == cg is
 * the NCHW -> channels-last transpose.
 *
 * Entry points: qc_dw_int8 and qc_pad_channels_u8, one program (src/cuda/kernels.rs). Host side:
 * src/cuda/ops/int8_simt.rs. CPU transcription: src/cuda/emulate/int8_simt.rs.
 */
#include "common.cuh"
#include "int8.cuh"

__device__ __forceinline__ void qc_dw_int8_run(const QcInt8ConvParams& q) {
    const QcConvParams& p = q.conv;
    const unsigned char* x = reinterpret_cast<const unsigned char*>(p.x);
    const short* w = reinterpret_cast<const short*>(p.w);
    const float4* table = reinterpret_cast<const float4*>(q.requant);
    unsigned char* y = reinterpret_cast<unsigned char*>(p.y);
    const int C = p.in_channels;
    const int K = p.out_channels;
    const int kg = p.kg;
    const int k4s = (K + 3) / 4;
    const long long items = (long long)p.batch * p.out_spatial * k4s; /* < 2^31 (host check) */
    const long long stride = (long long)gridDim.x * blockDim.x;
    const bool bias = p.has_bias != 0;
    for (long long it = (long long)blockIdx.x * blockDim.x + threadIdx.x; it < items; it += stride) {
        /* item -> (pixel, channel quad) -> (b, od, oh, ow), in 32 bits. */
        const unsigned u = (unsigned)it;
        const int k0 = (int)(u % (unsigned)k4s) * 4;
        const unsigned pu = u / (unsigned)k4s;
        const unsigned bu = pu / (unsigned)p.out_spatial;
        const unsigned s_lin = pu - bu * (unsigned)p.out_spatial; /* linear output position */
        unsigned su = s_lin;
        const int ow = (int)(su % (unsigned)p.out_size[2]);
        su /= (unsigned)p.out_size[2];
        const int oh = (int)(su % (unsigned)p.out_size[1]);
        const int od = (int)(su / (unsigned)p.out_size[1]);
        const unsigned char* xb = x + (long long)bu * p.in_spatial * C;
        int acc[4] = {0, 0, 0, 0};
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
                    const unsigned char* xp = xb + (((long long)id * p.in_size[1] + ih) * p.in_size[2] + iw) * C;
                    const short* wt = w + (long long)tap * K;
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int k = k0 + e;
                        if (k < K) acc[e] += ((int)__ldg(xp + k / kg) - q.x_zero) * (int)__ldg(wt + k);
                    }
                }
            }
        }
        const long long b = bu;
        const long long s = s_lin;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int k = k0 + e;
            if (k >= K) continue;
            const float4 t = table[k];
            const unsigned code = qc_requant_u8(acc[e], t.x, t.y, t.z, bias, q.out_zero, q.out_floor);
            const long long i = p.out_nhwc ? (b * p.out_spatial + s) * K + k : (b * K + k) * p.out_spatial + s;
            y[i] = (unsigned char)code;
        }
    }
}

__device__ __forceinline__ void qc_pad_u8_run(const QcPadU8Params& p) {
    const unsigned char* src = reinterpret_cast<const unsigned char*>(p.src);
    unsigned char* dst = reinterpret_cast<unsigned char*>(p.dst);
    const long long cin = (long long)p.groups * p.cg;
    const long long cout = (long long)p.groups * p.cg_pad;
    const long long total = p.batch * p.pixels;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const unsigned char fill = (unsigned char)p.fill;
    for (long long px = (long long)blockIdx.x * blockDim.x + threadIdx.x; px < total; px += stride) {
        const long long b = px / p.pixels;
        /* Source code of channel ch: base + ch * step (NCHW: planes apart; NHWC: adjacent). */
        const unsigned char* base = p.src_nhwc ? src + px * cin : src + b * cin * p.pixels + (px - b * p.pixels);
        const long long step = p.src_nhwc ? 1 : p.pixels;
        unsigned char* d = dst + px * cout;
        long long ch = 0;
        for (int g = 0; g < p.groups; ++g) {
            for (int c = 0; c < p.cg_pad; ++c) {
                unsigned char v = fill;
                if (c < p.cg) {
                    v = base[ch * step];
                    ++ch;
                }
                *d++ = v;
            }
        }
    }
}

#define QC_DW_INT8_ENTRY(NAME)                                                                         \
    extern "C" __global__ void __launch_bounds__(256) NAME(const QcInt8ConvParams p) { qc_dw_int8_run(p); }

#define QC_PAD_U8_ENTRY(NAME)                                                                          \
    extern "C" __global__ void __launch_bounds__(256) NAME(const QcPadU8Params p) { qc_pad_u8_run(p); }
