/*
 * The requantization of the lowered int8 convolutions (docs/numerics.md section 14.5), shared by
 * the tensor-core tiles (cuda/conv_imma.cu) and the CUDA-core depthwise kernel
 * (cuda/int8_simt.cu): one exact int32 accumulator of sum (x - x_zero)(w - w_zero) becomes a u8
 * code, bit for bit RequantTable::requantize of src/quant/requant.rs (the CPU's scalar epilogue
 * and the integer oracle's).
 *
 * Every float step is one explicitly rounded PTX instruction, so that NVRTC cannot contract or
 * reorder them: cvt.rn.f32.s32 (f32(acc), nearest even), the bias as RequantTable's
 * fma_or_add (per-channel weights: bias_b = 1 and add.rn.f32 of bias_a = f32(b / atws), the
 * f32(v + f32(b / atws)) of section 14.5; per-tensor weights: fma.rn.f32(b, f32(1 / atws), v), one
 * rounding; where a per-tensor 1 / atws is exactly 1 the two forms are the same number, since
 * fma(a, 1, v) is the one rounding of a + v), mul.rn.f32 (the scaling). The conversion is x86's cvtps2dq: cvt.rni.s32.f32 rounds half to even but
 * saturates out-of-range values (and gives 0 for NaN), while FBGEMM's cvtps2dq gives INT32_MIN
 * for NaN and for |y| >= 2^31 (a large positive result becomes code 0), so the range test is
 * explicit. Then the int16 clamp, the zero point and the clamp to [floor, 255].
 *
 * Passed to NVRTC as a named header (HEADERS in src/cuda/kernels.rs). CPU transcription:
 * requant() in src/cuda/emulate/conv_imma.rs, checked against RequantTable::requantize.
 */
#ifndef QCONV_INT8_CUH
#define QCONV_INT8_CUH

#include "params.h"

/** The code of one exact accumulator `acc` (|acc| < 2^31) of an output channel whose requant
 *  entry is {mult, bias_a, bias_b}; `bias` says whether the table adds a bias. */
__device__ __forceinline__ unsigned qc_requant_u8(int acc, float mult, float bias_a, float bias_b, bool bias,
                                                  int out_zero, int out_floor) {
    float v = __int2float_rn(acc);
    if (bias) v = bias_b == 1.0f ? __fadd_rn(bias_a, v) : __fmaf_rn(bias_a, bias_b, v);
    const float y = __fmul_rn(v, mult);
    /* cvtps2dq: false for NaN as well as outside [-2^31, 2^31). */
    int q = (y >= -2147483648.0f && y < 2147483648.0f) ? __float2int_rn(y) : (int)0x80000000;
    q = q < -32768 ? -32768 : (q > 32767 ? 32767 : q);
    q += out_zero;
    q = q < out_floor ? out_floor : (q > 255 ? 255 : q);
    return (unsigned)q;
}

#endif /* QCONV_INT8_CUH */
