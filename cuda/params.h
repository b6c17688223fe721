/*
 * qconv kernel arguments: the ONLY definition of every struct passed to a kernel.
 *
 * Every kernel takes exactly one argument, one of the structs below, by value. Device pointers
 * are stored as uint64_t (a CUdeviceptr) so that the Rust side fills them without casts and the
 * layout is the same on host and device. Fields are ordered 8-byte first and every struct is
 * padded explicitly to a multiple of 8 bytes, so no compiler inserts hidden padding.
 *
 * The Rust bindings (src/cuda/params_sys.rs) are GENERATED from this file by bindgen
 * (`cargo build --features bindgen`, see build.rs); scripts/check-bindgen.sh verifies that the
 * committed file matches a fresh generation. Edit this file, never the bindings.
 *
 * Plain C on purpose: it is parsed by clang (bindgen, host) and by NVRTC (device), which has no
 * <stdint.h> without the CUDA toolkit, hence the typedefs below.
 */
#ifndef QCONV_PARAMS_H
#define QCONV_PARAMS_H

#if defined(__CUDACC_RTC__)
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
#else
#include <stdint.h>
#endif

/* ---------------------------------------------------------------------------------------------
 * Fake-quant (cuda/fakequant.cu). Modes map one to one onto `Plan` in src/quant/params.rs; the
 * formulas are docs/numerics.md section 4 and src/quant/fakequant.rs.
 * ------------------------------------------------------------------------------------------- */

/** Which fake-quant formula runs (value of QcFakeQuantParams.mode). */
enum QcFakeQuantMode {
    /** qscheme None: dst = src (Plan::Identity). */
    QC_FQ_IDENTITY = 0,
    /** float16: dst = f32(f16(src)), round to nearest even (Plan::Half, docs/numerics.md §4.4). */
    QC_FQ_HALF = 1,
    /** Integer zero point, per tensor (Plan::Int { axis: None }, docs/numerics.md §4.1). */
    QC_FQ_INT_PER_TENSOR = 2,
    /** Integer zero points, per channel; dequant multiplies by the f64 scale (Plan::Int, 4.2). */
    QC_FQ_INT_PER_CHANNEL = 3,
    /** Float zero points, per channel (Plan::FloatZp, docs/numerics.md §4.3). */
    QC_FQ_FLOAT_ZP = 4,
    /** quantized_decomposed ops with float32 arithmetic (Plan::Decomposed + DecScales::F32, 4.5). */
    QC_FQ_DECOMPOSED_F32 = 5,
    /** quantized_decomposed ops with float64 per-channel scales (DecScales::F64, 4.5). */
    QC_FQ_DECOMPOSED_F64 = 6
};

/** Argument of `qc_fakequant`, `qc_fakequant_fast` and `qc_quantize` (cuda/fakequant.cu). */
typedef struct QcFakeQuantParams {
    /** const float*: the float32 weight, `numel` elements, contiguous. */
    uint64_t src;
    /** float*: the fake-quantized (dequantized) weight, or 0 (`qc_fakequant` only). */
    uint64_t dst;
    /** int32_t*: the integer codes, or 0. In QC_FQ_HALF mode a uint16_t* receiving the binary16
     *  bit patterns instead. */
    uint64_t codes;
    /** const double*: `channels` scales (per tensor: 1). float32 scales are widened exactly. */
    uint64_t scales;
    /** const int64_t*: `channels` integer zero points (INT modes, DECOMPOSED with zp_is_float 0). */
    uint64_t zero_points_i64;
    /** const float*: `channels` float zero points (FLOAT_ZP, DECOMPOSED with zp_is_float 1). */
    uint64_t zero_points_f32;
    /** unsigned long long*, or 0: receives atomicMin(flat index) of any NaN/inf input element.
     *  The host initialises it to ~0ull; any other value afterwards is a NonFiniteWeight error. */
    uint64_t first_nonfinite;
    /** Number of weight elements. */
    uint64_t numel;
    /** Channels along the quantization axis (1 per tensor). */
    uint64_t channels;
    /** Product of the weight dims after the axis (per tensor: numel). Element i has channel
     *  (i / inner) % channels. */
    uint64_t inner;
    /** Lowest integer code (dtype range, or quant_min on the decomposed path). */
    int64_t qmin;
    /** Highest integer code (dtype range, or quant_max on the decomposed path). */
    int64_t qmax;
    /** A QcFakeQuantMode value. */
    int32_t mode;
    /** DECOMPOSED_F32 only: 1 for the per-channel formulas, 0 for per tensor. */
    int32_t per_channel;
    /** DECOMPOSED modes only: 1 when the zero points are float (zero_points_f32 is read). */
    int32_t zp_is_float;
    /** Explicit padding to a multiple of 8 bytes; set to 0. */
    int32_t reserved;
} QcFakeQuantParams;

/* ---------------------------------------------------------------------------------------------
 * Convolution (cuda/conv.cu, cuda/conv_transpose.cu, cuda/conv_tc.cu with cuda/splitk.cu,
 * cuda/depthwise.cu). The problem is the one of `ConvProblem` in src/problem.rs: three spatial
 * dimensions [D, H, W] (1-d and 2-d add unit dimensions in front), NCDHW activations (the
 * channels-last kernels: NDHWC), out_size computed by the host.
 * ------------------------------------------------------------------------------------------- */

/** How a forward convolution reads outside the input (value of QcConvParams.pad_mode). */
enum QcPadMode {
    /** Read zeros. */
    QC_PAD_ZEROS = 0,
    /** Mirror without repeating the edge: i < 0 reads -i, i >= L reads 2(L-1) - i. */
    QC_PAD_REFLECT = 1,
    /** Repeat the edge: i is clamped to [0, L-1]. */
    QC_PAD_REPLICATE = 2,
    /** Wrap around: i < 0 reads i + L, i >= L reads i - L. */
    QC_PAD_CIRCULAR = 3
};

/** Argument of every convolution kernel (forward, transposed, tiled and direct). */
typedef struct QcConvParams {
    /** const T*: input activations [batch, in_channels, in_size[0..3]] in the activation dtype. */
    uint64_t x;
    /** const float*: the (fake-quantized) weight. Element (group g, output channel m within the
     *  group, input channel c within the group, tap t) is at
     *  g*w_stride_group + m*w_stride_m + c*w_stride_c + t*w_stride_tap. */
    uint64_t w;
    /** const float*: bias [out_channels], or 0 when has_bias is 0. */
    uint64_t bias;
    /** T*: output [batch, out_channels, out_size[0..3]] in the activation dtype. */
    uint64_t y;
    /** Weight stride between groups (elements). */
    int64_t w_stride_group;
    /** Weight stride between output channels of a group. */
    int64_t w_stride_m;
    /** Weight stride between input channels of a group. */
    int64_t w_stride_c;
    /** Weight stride between kernel taps (flattened kd*kh*kw). */
    int64_t w_stride_tap;
    /** in_size[0] * in_size[1] * in_size[2]. */
    int64_t in_spatial;
    /** out_size[0] * out_size[1] * out_size[2]. */
    int64_t out_spatial;
    /** Elements of one phase sub-grid: sub_size[0] * sub_size[1] * sub_size[2]. */
    int64_t sub_spatial;
    /** GEMM columns per phase: batch * sub_spatial. */
    int64_t n_cols;
    /** Batch size N. */
    int32_t batch;
    /** Input channels C. */
    int32_t in_channels;
    /** Output channels K. */
    int32_t out_channels;
    /** Groups (divides C and K). */
    int32_t groups;
    /** Input channels per group, C / groups. */
    int32_t cg;
    /** Output channels per group, K / groups. */
    int32_t kg;
    /** Input spatial size [D, H, W]. */
    int32_t in_size[3];
    /** Output spatial size [D, H, W]. */
    int32_t out_size[3];
    /** Kernel size. */
    int32_t kernel[3];
    /** Stride. */
    int32_t stride[3];
    /** Leading padding (forward: before the input; transposed: the `padding` argument). */
    int32_t pad[3];
    /** Dilation. */
    int32_t dilation[3];
    /** Per-phase output sub-grid: transposed ceil(out_size / stride), forward out_size. */
    int32_t sub_size[3];
    /** Phases per dimension: transposed stride, forward 1. */
    int32_t phases[3];
    /** kernel[0] * kernel[1] * kernel[2]. */
    int32_t taps;
    /** phases[0] * phases[1] * phases[2]. */
    int32_t num_phases;
    /** A QcPadMode value (transposed: always QC_PAD_ZEROS). */
    int32_t pad_mode;
    /** 1 for a transposed convolution (gather form). */
    int32_t transposed;
    /** 1 when `bias` points to out_channels floats. */
    int32_t has_bias;
    /** Channels-last kernels (the tensor-core tiles of cuda/conv_tc.cu, and cuda/depthwise.cu, which
     *  requires 1): 1 when `y` is channels-last [batch, out_size[0..3], out_channels], 0 for
     *  [batch, out_channels, out_size[0..3]]. Those kernels always read `x` channels-last,
     *  [batch, in_size[0..3], in_channels]; the tiles read `w` in the activation dtype (or as
     *  codes), the depthwise kernel as float32 [taps][C]. Every other kernel requires 0. */
    int32_t out_nhwc;
    /** Tensor-core kernels only: float*: split-K partial sums, [splits][groups][batch*out_spatial]
     *  [out_channels / groups], written instead of `y` when splits > 1 and summed (in split order,
     *  plus bias) by qc_splitk_reduce_*; 0 otherwise. */
    uint64_t partial;
    /** Tensor-core kernels only: the reduction is split into this many ranges along grid.z
     *  (grid.z = groups * splits; forward convolutions only). Every other kernel requires 1. */
    int32_t splits;
    /** Tensor-core kernels reading 8-bit weight codes (the *_q8 entries) only: 1 when the codes
     *  in `w` are signed (int8), 0 when unsigned (uint8). Every other kernel ignores it; set 0. */
    int32_t w_codes_signed;
    /** *_q8 entries only: const float*: the scale of each output channel [out_channels]. Those
     *  entries read `w` as one byte per element, packed like the 16-bit tensor-core weight, and
     *  use f32((f32(code) - w_zero[k]) * w_scale[k]) rounded to the activation dtype, which is
     *  the fake-quantized weight's value. 0 for every other kernel. */
    uint64_t w_scale;
    /** *_q8 entries only: const float*: the zero point of each output channel [out_channels],
     *  as a float. 0 for every other kernel. */
    uint64_t w_zero;
    /** *_q8 entries with 16-byte loads only: the channels per group that hold codes (<= cg). When
     *  the input's channels were padded (QcPadChannelsParams), the code slots from w_cg_valid to
     *  cg of each tap are padding and load as +0, like the zeros of the 16-bit weight. Set cg
     *  otherwise (0 for the other kernels). */
    int32_t w_cg_valid;
    /** Explicit padding to a multiple of 8 bytes; set to 0. */
    int32_t reserved2;
} QcConvParams;

/* ---------------------------------------------------------------------------------------------
 * 8-bit weight codes (WeightStorage::Int8Codes in src/cuda/weights.rs). A module stored this way
 * keeps on the device only its codes, packed [out_channels][row] like the tensor-core weight
 * (row = taps * cg_pad rounded up to 8, where cg_pad is C/groups, or C/groups rounded up to 8 when
 * the tensor-core path pads the input's channels; element (output channel k, tap t, input channel
 * c of the group) at k * row + t * cg_pad + c), and a float scale and zero point per output
 * channel. The tensor-core *_q8 entries dequantize while loading; the other kernels get a float32
 * weight from `qc_dequant_codes` (cuda/fakequant.cu) first.
 * ------------------------------------------------------------------------------------------- */

/** Which float32 layout `qc_dequant_codes` writes (value of QcDequantParams.layout). */
enum QcDequantLayout {
    /** A forward convolution's weight [out_channels][cg][taps]. */
    QC_DQ_FORWARD = 0,
    /** A transposed convolution's weight [in_channels][kg][taps] (output channel g*kg + m of
     *  group g = input channel / cg). */
    QC_DQ_TRANSPOSED = 1,
    /** The channels-last depthwise kernel's weight [taps][out_channels] (cg == kg == 1). */
    QC_DQ_DEPTHWISE = 2
};

/** Argument of `qc_dequant_codes`: dst[i] = f32((f32(code) - zero[k]) * scale[k]) for the
 *  element i of `layout`, whose code is codes[k * row + t * cg_pad + c]. */
typedef struct QcDequantParams {
    /** const uint8_t* (or int8_t* when codes_signed): the packed codes, out_channels * row bytes. */
    uint64_t codes;
    /** const float*: scale per output channel [out_channels]. */
    uint64_t scale;
    /** const float*: zero point per output channel [out_channels]. */
    uint64_t zero;
    /** float*: `numel` elements in `layout`. */
    uint64_t dst;
    /** out_channels * cg * taps. */
    int64_t numel;
    /** Codes per output channel (taps * cg_pad rounded up to 8). */
    int64_t row;
    /** Output channels K. */
    int32_t out_channels;
    /** Input channels per group. */
    int32_t cg;
    /** Output channels per group. */
    int32_t kg;
    /** Kernel taps (kd * kh * kw). */
    int32_t taps;
    /** A QcDequantLayout value. */
    int32_t layout;
    /** 1 for int8 codes, 0 for uint8. */
    int32_t codes_signed;
    /** Channel slots per tap in a row of codes: cg, or cg rounded up to 8 when the tensor-core
     *  path pads the input channels (QcPadChannelsParams); the code of (k, t, c) is at
     *  k * row + t * cg_pad + c. */
    int32_t cg_pad;
    /** Explicit padding to a multiple of 8 bytes; set to 0. */
    int32_t reserved;
} QcDequantParams;

/** Argument of `qc_pad_channels_b16` / `qc_pad_channels_b32` (cuda/layout.cu): copies an input
 *  with `groups` groups of `cg` channels (NCHW when src_nhwc is 0, channels-last when 1) into a
 *  channels-last buffer with `cg_pad` >= cg channel slots per group, the extra slots zero:
 *  dst[b][s][g * cg_pad + c] = c < cg ? x(b, g * cg + c, s) : 0. The tensor-core tiles then read
 *  C/groups = cg_pad, a multiple of 8, with 16-byte loads (a 3-channel stem becomes 8 channels). */
typedef struct QcPadChannelsParams {
    /** const element*: batch * pixels * groups * cg elements of 2 (b16) or 4 (b32) bytes. */
    uint64_t src;
    /** element*: batch * pixels * groups * cg_pad elements. */
    uint64_t dst;
    /** Images N. */
    int64_t batch;
    /** Spatial positions per image (D * H * W). */
    int64_t pixels;
    /** Channel groups. */
    int32_t groups;
    /** Channels per group in the source. */
    int32_t cg;
    /** Channel slots per group in the destination (>= cg). */
    int32_t cg_pad;
    /** 1 when the source is channels-last, 0 when NCHW. */
    int32_t src_nhwc;
} QcPadChannelsParams;

/** Argument of the layout kernels `qc_transpose_b16` / `qc_transpose_b32` (cuda/layout.cu):
 *  for each of `batch` matrices, dst[b][j][i] = src[b][i][j] with src [rows, cols] row-major.
 *  NCHW -> NHWC is rows = C, cols = spatial; NHWC -> NCHW is rows = spatial, cols = C. */
typedef struct QcTransposeParams {
    /** const element*: `batch * rows * cols` elements of 2 (b16) or 4 (b32) bytes. */
    uint64_t src;
    /** element*: `batch * rows * cols` elements. */
    uint64_t dst;
    /** Number of matrices. */
    int64_t batch;
    /** Rows of each source matrix. */
    int64_t rows;
    /** Columns of each source matrix. */
    int64_t cols;
} QcTransposeParams;

/* ---------------------------------------------------------------------------------------------
 * Lowered int8 convolutions (cuda/conv_imma.cu, cuda/int8_simt.cu): u8 activation codes, s8
 * weight codes, an exact int32 accumulation of sum (x - x_zero)(w - w_zero), and the
 * requantization of docs/numerics.md section 14.5 fused into the epilogue, u8 output codes.
 * ------------------------------------------------------------------------------------------- */

/** Argument of the int8 convolution kernels: the tensor-core tiles qc_conv_imma_* and the
 *  CUDA-core depthwise kernel qc_dw_int8. */
typedef struct QcInt8ConvParams {
    /** The problem, as for the float kernels, read with these meanings. x: const uint8_t*, the
     *  input codes channels-last [batch, in_size[0..3], in_channels] (the tiles: in_channels =
     *  groups * cg with cg a multiple of 16, the input's channels padded with the code x_zero
     *  where needed). w: the tiles, const int8_t* [out_channels][w_stride_m] rows (tap-major,
     *  then the cg channels of the group, zero codes in padded channel slots); the depthwise
     *  kernel, const int16_t* [taps][out_channels] centred codes w - w_zero. y: uint8_t*, the
     *  output codes, channels-last [batch, out_size[0..3], out_channels] when out_nhwc is 1, else
     *  [batch, out_channels, out_size[0..3]]. bias: unused (0); has_bias: whether the requant
     *  table adds its bias. splits 1; partial, w_scale, w_zero, w_codes_signed, w_cg_valid 0. */
    QcConvParams conv;
    /** const float*: [out_channels][4] = {mult, bias_a, bias_b, 0} per output channel, the
     *  RequantTable of src/quant/requant.rs: v = f32(acc), v = fma(bias_a, bias_b, v) when
     *  has_bias, y = v * mult, then cvtps2dq and the clamps. */
    uint64_t requant;
    /** Tiles only (0 for the depthwise kernel): const int32_t* [num_phases][out_channels], the sum
     *  of output channel k's weight codes over the phase's active taps and the cg valid channels
     *  (forward convolutions: one phase, every tap). */
    uint64_t col_sums;
    /** Tiles only: const int32_t* [out_channels], the weight zero point of each output channel;
     *  read by the *_wzp entries (some weight zero point is not 0). */
    uint64_t w_zero;
    /** The input zero point (0..=255): the code every padded tap and padded channel reads. */
    int32_t x_zero;
    /** The output zero point (0..=255). */
    int32_t out_zero;
    /** The lowest output code: out_zero with a fused ReLU, else 0. */
    int32_t out_floor;
    /** Explicit padding to a multiple of 8 bytes; set to 0. */
    int32_t reserved;
} QcInt8ConvParams;

/** Argument of `qc_pad_channels_u8` (cuda/int8_simt.cu): QcPadChannelsParams for u8 codes, with
 *  the code of the extra slots: dst[b][s][g * cg_pad + c] = c < cg ? x(b, g * cg + c, s) : fill.
 *  With cg_pad == cg it is the plain NCHW -> channels-last transpose of the codes. */
typedef struct QcPadU8Params {
    /** const uint8_t*: batch * pixels * groups * cg codes, NCHW (src_nhwc 0) or channels-last. */
    uint64_t src;
    /** uint8_t*: batch * pixels * groups * cg_pad codes, channels-last. */
    uint64_t dst;
    /** Images N. */
    int64_t batch;
    /** Spatial positions per image (D * H * W). */
    int64_t pixels;
    /** Channel groups. */
    int32_t groups;
    /** Channels per group in the source. */
    int32_t cg;
    /** Channel slots per group in the destination (>= cg). */
    int32_t cg_pad;
    /** 1 when the source is channels-last, 0 when NCHW. */
    int32_t src_nhwc;
    /** The code written to the slots from cg to cg_pad (0..=255): the input zero point. */
    int32_t fill;
    /** Explicit padding to a multiple of 8 bytes; set to 0. */
    int32_t reserved;
} QcPadU8Params;

/* ---------------------------------------------------------------------------------------------
 * The Hopper path (cuda/conv_wg.cu, sm_90a only, opt-in: Precision::TensorCoreSm90a): wgmma fed
 * by TMA. The activations are read through an im2col tensor map, the packed 16-bit weight
 * through a tiled one; both maps are encoded on the host (cuTensorMapEncodeIm2col / Tiled, see
 * src/cuda/ops/conv_wg.rs for every parameter) and live in the kernel parameter, which the
 * kernel declares `const __grid_constant__` so that their address is a param-space address.
 * ------------------------------------------------------------------------------------------- */

/** An opaque CUDA tensor map (CUtensorMap: 128 bytes, 64-byte aligned; 128 as CUDA 13 declares it). */
typedef struct QcTensorMap {
    /** Written by the driver's encode function; never read by the host. */
    uint64_t opaque[16];
} __attribute__((aligned(128))) QcTensorMap;

/** Argument of `qc_conv_wg_*` (cuda/conv_wg.cu): a forward convolution with groups 1, f16/bf16
 *  activations channels-last. */
typedef struct QcWgConvParams {
    /** im2col map of x [batch, (D,) (H,) W, in_channels]: box of 128 pixels x 64 channels,
     *  128-byte swizzle, zero fill (the padding). */
    QcTensorMap act;
    /** Tiled map of the packed weight [out_channels][taps][in_channels] (rows of w_stride_m):
     *  box {64 channels, 1 tap, 128 output channels}, 128-byte swizzle, zero fill. */
    QcTensorMap wgt;
    /** The problem as for the tensor-core tiles (tc_conv_params): y, bias, has_bias, out_nhwc and
     *  the sizes are read; x and w only through the maps (kept for the host's checks). groups 1,
     *  splits 1, pad_mode zeros, transposed 0. */
    QcConvParams conv;
    /** Spatial dimensions of the im2col map: 1 (rank 3, NWC), 2 (rank 4, NHWC) or 3 (rank 5). */
    int32_t spatial_dims;
    /** 64-channel chunks per tap: ceil(in_channels / 64). */
    int32_t c_chunks;
    /** Reduction steps: taps * c_chunks (>= 1). */
    int32_t k_steps;
    /** Explicit padding to 640 bytes (a multiple of the 128-byte alignment); set to 0. */
    int32_t reserved[23];
} QcWgConvParams;

#endif /* QCONV_PARAMS_H */
