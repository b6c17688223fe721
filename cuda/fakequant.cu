/*
 * Fake-quantization of a float32 weight on the GPU, bit-identical to the CPU path
 * (src/quant/fakequant.rs) and therefore to PyTorch CPU (docs/numerics.md section 4).
 *
 * Entry points (argument: QcFakeQuantParams, cuda/params.h):
 *   qc_fakequant  writes the dequantized weight to p.dst and, when p.codes != 0, the codes;
 *   qc_fakequant_fast  the same for the integer modes' f32 fast path (host-selected, below);
 *   qc_quantize   the quantize half only (get_quantized_weight()): codes, no dequantization;
 *   qc_dequant_codes  8-bit codes + per-channel scale/zero -> float32 weight (QcDequantParams).
 * The program list in src/cuda/kernels.rs instantiates them with the entry macros at the end of
 * this file; the host side (arguments, fast-path selection, grid, launch) is
 * src/cuda/ops/fakequant.rs, and the CPU transcription that pins every formula to the CPU path is
 * src/cuda/emulate/fakequant.rs.
 *
 * Bit-exactness rules, applied to every line below:
 *   - every f32/f64 operation is an explicit round-to-nearest intrinsic (__fmul_rn, __fadd_rn,
 *     __fsub_rn, __fdiv_rn, __dmul_rn, __dadd_rn, __ddiv_rn): NVCC/NVRTC never contracts those into
 *     an FMA, and the program is compiled with --fmad=false as a second guard;
 *   - round half to even is rintf / rint (PTX cvt.rni), like Rust's round_ties_even;
 *   - integer -> float conversions are __ll2float_rn / __ll2double_rn (round to nearest even,
 *     like Rust's `as f32` / `as f64`); float -> integer is a C cast (truncation, like `as i64`)
 *     applied only to values already known to be in range;
 *   - clamps follow fakequant.rs exactly, including where they happen in float and where in
 *     integer arithmetic.
 * Each helper names the Rust function it transcribes. Non-finite inputs are reported through
 * p.first_nonfinite (the CPU path rejects them with Error::NonFiniteWeight before quantizing);
 * the value computed for them is whatever the formula gives and is discarded by the host.
 */
#include "common.cuh"

#define QC_FQ_THREADS 256
/* Items (4-element vectors or elements) per thread and block chunk; src/cuda/ops/fakequant.rs sizes
 * the grid with the same number (FAKEQUANT_CHUNK). */
#define QC_FQ_CHUNK 16

/* ---- transcriptions of the scalar helpers of src/quant/fakequant.rs ------------------------ */

/** `clamp_f64_to_i64`: v <= lo -> lo, v >= hi -> hi, else `v as i64` (v is never NaN here). */
__device__ __forceinline__ long long qc_clamp_f64_to_i64(double v, long long lo, long long hi) {
    if (v <= (double)lo) return lo;
    if (v >= (double)hi) return hi;
    return (long long)v;
}

/** `quant_int` (docs/numerics.md §4.1/4.2): t = f32(x * inv); NaN t -> nan_code;
 *  q = clamp(f32(zp) + rne(t)) with the sum rounded to f32 and clamped in f64. */
__device__ __forceinline__ long long qc_quant_int(float x, float inv, long long zp, long long lo, long long hi,
                                                  long long nan_code) {
    float t = __fmul_rn(x, inv);
    if (t != t) return nan_code;
    float v = __fadd_rn(__ll2float_rn(zp), rintf(t));
    return qc_clamp_f64_to_i64((double)v, lo, hi);
}

/** `nan_code_per_tensor`: qint32 -> INT_MIN; 8-bit types -> clamp(int32 wrapping 2147483520 + zp). */
__device__ __forceinline__ long long qc_nan_code_per_tensor(long long zp, long long lo, long long hi) {
    if (lo == -2147483648LL) return lo;
    int wrapped = (int)(2147483520u + (unsigned int)(int)zp); /* i32::wrapping_add */
    long long v = (long long)wrapped;
    return v < lo ? lo : (v > hi ? hi : v);
}

/** `nan_code_per_channel`: qint32 -> INT_MIN, otherwise 0 (not clamped). */
__device__ __forceinline__ long long qc_nan_code_per_channel(long long lo) {
    return lo == -2147483648LL ? lo : 0;
}

/** `dec_to_int`: NaN -> nan_code_per_channel; else trunc(v) as i64, clamped in integers. */
__device__ __forceinline__ long long qc_dec_to_int(double v, long long lo, long long hi) {
    if (v != v) return qc_nan_code_per_channel(lo);
    long long q = (long long)v; /* v is finite and within [lo, hi] rounded to float: no overflow */
    return q < lo ? lo : (q > hi ? hi : q);
}

/** Rust's f32::clamp for a non-NaN value. */
__device__ __forceinline__ float qc_clampf(float v, float lo, float hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

/** Rust's f64::clamp for a non-NaN value. */
__device__ __forceinline__ double qc_clampd(double v, double lo, double hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

/** One element: integer code and dequantized value. */
struct QcElem {
    long long q;
    float w;
};

/* ---- the per-element formulas, one per mode (match arms of quantize_elems / decomposed) ----- */

/** Per-channel constants, loaded once per element's channel. */
struct QcChannel {
    double s64;   /* scale as stored on the host (f64; exact widening of f32 scales) */
    float sf;     /* f32(scale) */
    float inv;    /* the reciprocal the formula multiplies by */
    long long zi; /* integer zero point */
    float zf;     /* zero point as f32 */
    long long nan_code;
    /* Fast path (integer modes): codes and zero point within +-2^23 (q - zp exact in f32), scale
     * exactly an f32: the formulas run in f32 without changing a bit (see qc_fq_fast). */
    bool fast;
    float lo_f, hi_f, nan_f;
};

template <int MODE>
__device__ __forceinline__ QcChannel qc_channel(const QcFakeQuantParams& p, unsigned long long c) {
    QcChannel k;
    const double* scales = reinterpret_cast<const double*>(p.scales);
    k.s64 = scales[c];
    k.sf = __double2float_rn(k.s64); /* `scales[c] as f32` (exact for f32-origin scales) */
    k.zi = 0;
    k.zf = 0.0f;
    k.nan_code = 0;
    k.inv = 1.0f;
    k.fast = false;
    k.lo_f = k.hi_f = k.nan_f = 0.0f;
    if (MODE == QC_FQ_INT_PER_TENSOR) {
        /* 4.1: s = f32(scale); inv = f32(1 / s) (f32 division; s == 0 -> +inf). */
        k.inv = __fdiv_rn(1.0f, k.sf);
        k.zi = reinterpret_cast<const long long*>(p.zero_points_i64)[c];
        k.nan_code = qc_nan_code_per_tensor(k.zi, p.qmin, p.qmax);
    } else if (MODE == QC_FQ_INT_PER_CHANNEL) {
        /* 4.2: inv = 1.0f32 / (s64 as f32); zpf = zp as f32. */
        k.inv = __fdiv_rn(1.0f, k.sf);
        k.zi = reinterpret_cast<const long long*>(p.zero_points_i64)[c];
        k.zf = __ll2float_rn(k.zi);
        k.nan_code = qc_nan_code_per_channel(p.qmin);
    }
    if ((MODE == QC_FQ_INT_PER_TENSOR || MODE == QC_FQ_INT_PER_CHANNEL) && p.qmin >= -(1LL << 23) &&
        p.qmax <= (1LL << 23) && k.zi >= -(1LL << 23) && k.zi <= (1LL << 23) && (double)k.sf == k.s64) {
        k.fast = true;
        k.lo_f = (float)p.qmin;
        k.hi_f = (float)p.qmax;
        k.nan_f = (float)k.nan_code;
        if (MODE == QC_FQ_INT_PER_TENSOR) k.zf = __ll2float_rn(k.zi);
    }
    if (MODE == QC_FQ_INT_PER_TENSOR || MODE == QC_FQ_INT_PER_CHANNEL) {
        /* handled above */
    } else if (MODE == QC_FQ_FLOAT_ZP) {
        /* 4.3: inv = (s == 0) ? 1 : f32(1 / s). */
        k.inv = (k.sf == 0.0f) ? 1.0f : __fdiv_rn(1.0f, k.sf);
        k.zf = reinterpret_cast<const float*>(p.zero_points_f32)[c];
    } else if (MODE == QC_FQ_DECOMPOSED_F32 || MODE == QC_FQ_DECOMPOSED_F64) {
        /* 4.5: zp_f32(c) / zp_int(c) of `decomposed`. */
        if (p.zp_is_float) {
            k.zf = reinterpret_cast<const float*>(p.zero_points_f32)[c];
        } else {
            k.zi = reinterpret_cast<const long long*>(p.zero_points_i64)[c];
            k.zf = __ll2float_rn(k.zi);
        }
        if (MODE == QC_FQ_DECOMPOSED_F32) {
            /* per tensor: (1.0 / s) as f32 (f64 division); per channel: 1.0f32 / (s as f32). */
            k.inv = p.per_channel ? __fdiv_rn(1.0f, k.sf) : __double2float_rn(__ddiv_rn(1.0, k.s64));
        }
    }
    return k;
}

template <int MODE>
__device__ __forceinline__ QcElem qc_fq_elem(const QcFakeQuantParams& p, const QcChannel& k, float x) {
    QcElem e;
    const long long lo = p.qmin, hi = p.qmax;
    if (MODE == QC_FQ_INT_PER_TENSOR) {
        /* 4.1: q = quant_int(...); w = f32(s * f32(q - zp)). */
        e.q = qc_quant_int(x, k.inv, k.zi, lo, hi, k.nan_code);
        e.w = __fmul_rn(k.sf, __ll2float_rn(e.q - k.zi));
    } else if (MODE == QC_FQ_INT_PER_CHANNEL) {
        /* 4.2: w = f32(f64(f32(q) - f32(zp)) * s64) -- the multiply in DOUBLE, one rounding. */
        e.q = qc_quant_int(x, k.inv, k.zi, lo, hi, k.nan_code);
        e.w = __double2float_rn(__dmul_rn((double)__fsub_rn(__ll2float_rn(e.q), k.zf), k.s64));
    } else if (MODE == QC_FQ_FLOAT_ZP) {
        /* 4.3: v = f32(f32(x * inv) + zp) (two roundings, no FMA); q = clamp(rne(v));
         *      NaN -> clamp(0); w = f32(f32(f32(q) - zp) * s). */
        float v = __fadd_rn(__fmul_rn(x, k.inv), k.zf);
        if (v != v) {
            e.q = 0 < lo ? lo : (0 > hi ? hi : 0);
        } else {
            e.q = qc_clamp_f64_to_i64((double)rintf(v), lo, hi);
        }
        e.w = __fmul_rn(__fsub_rn(__ll2float_rn(e.q), k.zf), k.sf);
    } else if (MODE == QC_FQ_DECOMPOSED_F32) {
        /* 4.5, f32: v = rne(f32(x * inv)) + zf; clamp to [f32(qmin), f32(qmax)] unless NaN;
         *           q = dec_to_int(v); dequant per tensor or float zp: f32(f32(q) - zf) * f32(s),
         *           per channel with int zp: f32(f32(q - zi) * f32(s)). */
        float v = __fadd_rn(rintf(__fmul_rn(x, k.inv)), k.zf);
        if (!(v != v)) v = qc_clampf(v, __ll2float_rn(lo), __ll2float_rn(hi));
        e.q = qc_dec_to_int((double)v, lo, hi);
        if (p.zp_is_float || !p.per_channel) {
            e.w = __fmul_rn(__fsub_rn(__ll2float_rn(e.q), k.zf), k.sf);
        } else {
            e.w = __fmul_rn(__ll2float_rn(e.q - k.zi), k.sf);
        }
    } else if (MODE == QC_FQ_DECOMPOSED_F64) {
        /* 4.5, f64 per-channel scales: inv = 1.0 / s (f64); v = rne(f64(x) * inv) + f64(zf);
         *      clamp in f64 unless NaN; diff = float zp ? f64(f32(q) - zf) : f64(q - zi);
         *      w = f32(diff * s). */
        double inv = __ddiv_rn(1.0, k.s64);
        double v = __dadd_rn(rint(__dmul_rn((double)x, inv)), (double)k.zf);
        if (!(v != v)) v = qc_clampd(v, __ll2double_rn(lo), __ll2double_rn(hi));
        e.q = qc_dec_to_int(v, lo, hi);
        double diff = p.zp_is_float ? (double)__fsub_rn(__ll2float_rn(e.q), k.zf) : __ll2double_rn(e.q - k.zi);
        e.w = __double2float_rn(__dmul_rn(diff, k.s64));
    }
    return e;
}

/** `true` for NaN and +-inf (exponent all ones). */
__device__ __forceinline__ bool qc_is_nonfinite(float x) {
    return (__float_as_uint(x) & 0x7f800000u) == 0x7f800000u;
}

/** Grid-stride loop over all elements for one integer/decomposed mode. */
/* Channel of element i: (i / inner) % channels (row-major weight, docs/numerics.md §4.2). 64-bit
 * division is slow on the GPU, so indices below 2^32 (every realistic weight) use 32-bit. */
__device__ __forceinline__ unsigned long long qc_fq_channel(const QcFakeQuantParams& p, unsigned long long i) {
    if (p.channels == 1) return 0;
    if (p.numel <= 0xffffffffull) {
        return (unsigned int)(i) / (unsigned int)p.inner % (unsigned int)p.channels;
    }
    return (i / p.inner) % p.channels;
}

/* The integer modes in f32 when k.fast (codes within +-2^23, scale exactly an f32): every
 * step is the same operation on the same values as qc_fq_elem, only without 64-bit integers or
 * doubles. t = x*inv; NaN -> the NaN code; v = zp + rint(t) (an integer-valued float); the clamp
 * to [qmin, qmax] compares exactly in f32; q - zp is exact in f32. Per tensor w = s*f32(q - zp);
 * per channel w = f32(f64(q - zp) * s64), where the f64 product of a < 2^25 integer and a 24-bit
 * mantissa is exact (< 2^49), so rounding it to f32 equals the f32 product __fmul_rn. */
template <int MODE>
__device__ __forceinline__ float qc_fq_fast(const QcChannel& k, float x, float* qf_out) {
    const float t = __fmul_rn(x, k.inv);
    float qf;
    if (t != t) {
        qf = k.nan_f;
    } else {
        const float v = __fadd_rn(k.zf, rintf(t));
        qf = v <= k.lo_f ? k.lo_f : (v >= k.hi_f ? k.hi_f : v);
    }
    *qf_out = qf;
    return __fmul_rn(__fsub_rn(qf, k.zf), k.sf); /* s*(q - zp) per tensor: the same product */
}

template <int MODE, bool WRITE_DEQUANT>
__device__ __forceinline__ void qc_fq_one(const QcFakeQuantParams& p, const QcChannel& k, float x,
                                          unsigned long long i, float* w_out, int* q_out) {
    if (p.first_nonfinite != 0 && qc_is_nonfinite(x)) {
        atomicMin(reinterpret_cast<unsigned long long*>(p.first_nonfinite), i);
    }
    if ((MODE == QC_FQ_INT_PER_TENSOR || MODE == QC_FQ_INT_PER_CHANNEL) && k.fast) {
        float qf;
        *w_out = qc_fq_fast<MODE>(k, x, &qf);
        if (p.codes != 0) *q_out = (int)qf; /* integer-valued, within int32 */
        return;
    }
    const QcElem e = qc_fq_elem<MODE>(p, k, x);
    *w_out = e.w;
    *q_out = (int)e.q; /* q lies in [qmin, qmax] or is a NaN code: fits i32 */
}

/* The integer modes. Fast path: 4 elements per iteration with 16-byte loads and stores when
 * numel and inner are multiples of 4 and every buffer is 16-byte aligned (device allocations
 * are); the 4 elements then share one channel. Otherwise one element per iteration. */
template <int MODE, bool WRITE_DEQUANT>
__device__ __forceinline__ void qc_fq_loop(const QcFakeQuantParams& p) {
    const float* src = reinterpret_cast<const float*>(p.src);
    float* dst = WRITE_DEQUANT ? reinterpret_cast<float*>(p.dst) : 0;
    int* codes = reinterpret_cast<int*>(p.codes);
    unsigned long long cached_c = ~0ull;
    QcChannel k;
    const bool vec = (p.numel % 4 == 0) && (p.inner % 4 == 0) && (p.src % 16 == 0) && (p.dst % 16 == 0) &&
                     (p.codes % 16 == 0);
    /* Each block takes chunks of QC_FQ_CHUNK * blockDim.x consecutive items (4-element vectors or
     * single elements), its threads side by side (coalesced), chunk after chunk (grid-stride).
     * A thread's items are then close together and usually in one channel, so the per-channel
     * constants (a division among them) are computed about once per thread, not per item. */
    const unsigned long long items = vec ? p.numel / 4 : p.numel;
    const unsigned long long chunk = (unsigned long long)QC_FQ_CHUNK * blockDim.x;
    for (unsigned long long base = (unsigned long long)blockIdx.x * chunk; base < items;
         base += (unsigned long long)gridDim.x * chunk) {
        const unsigned long long end = base + chunk < items ? base + chunk : items;
        /* Vector path: two vectors per iteration, both loads issued before any arithmetic
         * (twice the bytes in flight per thread). */
        const unsigned step = vec ? 2 * blockDim.x : blockDim.x;
        for (unsigned long long v = base + threadIdx.x; v < end; v += step) {
            if (vec) {
                const unsigned long long v2 = v + blockDim.x;
                const bool two = v2 < end;
                const float4 x0 = __ldg(reinterpret_cast<const float4*>(src) + v);
                const float4 x1 = two ? __ldg(reinterpret_cast<const float4*>(src) + v2) : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
                for (int u = 0; u < 2; ++u) {
                    if (u == 1 && !two) break;
                    const unsigned long long vv = u == 0 ? v : v2;
                    const float4 x = u == 0 ? x0 : x1;
                    const unsigned long long i = vv * 4;
                    const unsigned long long c = qc_fq_channel(p, i);
                    if (c != cached_c) {
                        k = qc_channel<MODE>(p, c);
                        cached_c = c;
                    }
                    float4 w;
                    int4 q;
                    qc_fq_one<MODE, WRITE_DEQUANT>(p, k, x.x, i, &w.x, &q.x);
                    qc_fq_one<MODE, WRITE_DEQUANT>(p, k, x.y, i + 1, &w.y, &q.y);
                    qc_fq_one<MODE, WRITE_DEQUANT>(p, k, x.z, i + 2, &w.z, &q.z);
                    qc_fq_one<MODE, WRITE_DEQUANT>(p, k, x.w, i + 3, &w.w, &q.w);
                    if (dst != 0) reinterpret_cast<float4*>(dst)[vv] = w;
                    if (codes != 0) reinterpret_cast<int4*>(codes)[vv] = q;
                }
            } else {
                const float x = __ldg(src + v);
                const unsigned long long c = qc_fq_channel(p, v);
                if (c != cached_c) {
                    k = qc_channel<MODE>(p, c);
                    cached_c = c;
                }
                float w;
                int q;
                qc_fq_one<MODE, WRITE_DEQUANT>(p, k, x, v, &w, &q);
                if (dst != 0) dst[v] = w;
                if (codes != 0) codes[v] = q;
            }
        }
    }
}

template <bool WRITE_DEQUANT>
__device__ __forceinline__ void qc_fq_float_modes(const QcFakeQuantParams& p) {
    const float* src = reinterpret_cast<const float*>(p.src);
    float* dst = reinterpret_cast<float*>(p.dst);
    unsigned short* hcodes = reinterpret_cast<unsigned short*>(p.codes);
    unsigned long long* bad = reinterpret_cast<unsigned long long*>(p.first_nonfinite);
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.numel; i += stride) {
        const float x = __ldg(src + i);
        if (p.mode == QC_FQ_IDENTITY) {
            /* qscheme None: the weight unchanged, no finiteness check (fake_quantize, Identity). */
            if (WRITE_DEQUANT && dst != 0) dst[i] = x;
        } else {
            /* 4.4: f32(f16(x)), round to nearest even. */
            if (bad != 0 && qc_is_nonfinite(x)) atomicMin(bad, i);
            const unsigned short h = qc_float_to_half(x);
            if (WRITE_DEQUANT && dst != 0) dst[i] = qc_half_to_float(h);
            if (hcodes != 0) hcodes[i] = h;
        }
    }
}

template <bool WRITE_DEQUANT>
__device__ __forceinline__ void qc_fq_dispatch(const QcFakeQuantParams& p) {
    switch (p.mode) {
    case QC_FQ_IDENTITY:
    case QC_FQ_HALF: qc_fq_float_modes<WRITE_DEQUANT>(p); break;
    case QC_FQ_INT_PER_TENSOR: qc_fq_loop<QC_FQ_INT_PER_TENSOR, WRITE_DEQUANT>(p); break;
    case QC_FQ_INT_PER_CHANNEL: qc_fq_loop<QC_FQ_INT_PER_CHANNEL, WRITE_DEQUANT>(p); break;
    case QC_FQ_FLOAT_ZP: qc_fq_loop<QC_FQ_FLOAT_ZP, WRITE_DEQUANT>(p); break;
    case QC_FQ_DECOMPOSED_F32: qc_fq_loop<QC_FQ_DECOMPOSED_F32, WRITE_DEQUANT>(p); break;
    case QC_FQ_DECOMPOSED_F64: qc_fq_loop<QC_FQ_DECOMPOSED_F64, WRITE_DEQUANT>(p); break;
    default: break; /* the host validates the mode (src/cuda/ops/fakequant.rs) */
    }
}

/* ---- the integer modes' fast entry (qc_fakequant_fast) ----------------------------------------
 * Chosen by the host (src/cuda/ops/fakequant.rs, fakequant_fast_ok) when the mode is INT_PER_TENSOR
 * or INT_PER_CHANNEL, every channel takes the f32 fast path (qc_channel's k.fast: the host checks the
 * same conditions on every scale and zero point), numel and inner are multiples of 4, numel is
 * below 2^32 and every buffer is 16-byte aligned. Same arithmetic as qc_fq_loop's fast path, with
 * a lighter loop: 32-bit indices, four 16-byte loads in flight per thread, and the channel of a
 * thread's next vector tracked by addition (a thread's vectors within a block chunk are blockDim.x
 * apart) instead of two integer divisions per vector. Only the f32 fast formulas are compiled in,
 * so the kernel needs far fewer registers than the all-modes entry. */
template <int MODE>
__device__ __forceinline__ void qc_fq_fast_entry(const QcFakeQuantParams& p) {
    const float4* src = reinterpret_cast<const float4*>(p.src);
    float4* dst = reinterpret_cast<float4*>(p.dst);
    int4* codes = reinterpret_cast<int4*>(p.codes);
    unsigned long long* bad = reinterpret_cast<unsigned long long*>(p.first_nonfinite);
    const unsigned items = (unsigned)(p.numel / 4);
    const unsigned inner4 = (unsigned)(p.inner / 4);
    const unsigned channels = (unsigned)p.channels;
    const unsigned bd = blockDim.x;
    /* A step of bd vectors crosses at most one channel boundary. */
    const bool one_wrap = inner4 >= bd;
    const unsigned chunk = (unsigned)QC_FQ_CHUNK * bd;
    unsigned cached = 0xffffffffu;
    QcChannel k;
    for (unsigned base = blockIdx.x * chunk; base < items; base += gridDim.x * chunk) {
        const unsigned end = items - base > chunk ? base + chunk : items;
        unsigned v = base + threadIdx.x;
        if (v >= end) continue;
        /* (c, rem): channel and position within the channel's run of the vector being handled. */
        unsigned q = v / inner4;
        unsigned rem = v - q * inner4;
        unsigned c = q % channels;
        for (; v < end; v += 4 * bd) {
            float4 x[4];
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                const unsigned vu = v + u * bd;
                x[u] = vu < end ? __ldg(src + vu) : make_float4(0.f, 0.f, 0.f, 0.f);
            }
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                const unsigned vu = v + u * bd;
                if (vu >= end) break;
                if (c != cached) {
                    k = qc_channel<MODE>(p, c);
                    cached = c;
                }
                const float e[4] = {x[u].x, x[u].y, x[u].z, x[u].w};
                float w[4], qf[4];
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    if (bad != 0 && qc_is_nonfinite(e[j])) atomicMin(bad, (unsigned long long)vu * 4 + j);
                    w[j] = qc_fq_fast<MODE>(k, e[j], &qf[j]);
                }
                if (dst != 0) dst[vu] = make_float4(w[0], w[1], w[2], w[3]);
                if (codes != 0) codes[vu] = make_int4((int)qf[0], (int)qf[1], (int)qf[2], (int)qf[3]);
                /* Advance (c, rem) by bd vectors. */
                if (one_wrap) {
                    rem += bd;
                    if (rem >= inner4) {
                        rem -= inner4;
                        c = c + 1 == channels ? 0 : c + 1;
                    }
                } else {
                    const unsigned nv = vu + bd;
                    q = nv / inner4;
                    rem = nv - q * inner4;
                    c = q % channels;
                }
            }
        }
    }
}

/* ---- 8-bit weight codes -> float32 weight (QcDequantParams, cuda/params.h) ------------------
 * For the kernels without a code-reading loader (exact precision, f32 activations, depthwise,
 * the CUDA-core fallbacks) of a module whose device weight is stored as codes: one thread per
 * element, grid-stride, the same formula as the *_q8 loaders, which the host checked reproduces
 * get_weight() bit for bit. */
__device__ __forceinline__ void qc_dequant_codes_all(const QcDequantParams& p) {
    const unsigned char* codes = reinterpret_cast<const unsigned char*>(p.codes);
    const float* scale = reinterpret_cast<const float*>(p.scale);
    const float* zero = reinterpret_cast<const float*>(p.zero);
    float* dst = reinterpret_cast<float*>(p.dst);
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.numel; i += stride) {
        long long k, t, c;
        if (p.layout == QC_DQ_DEPTHWISE) {
            k = i % p.out_channels;
            t = i / p.out_channels;
            c = 0;
        } else if (p.layout == QC_DQ_TRANSPOSED) {
            t = i % p.taps;
            const long long rest = i / p.taps;
            const long long m = rest % p.kg;
            const long long ic = rest / p.kg;
            const long long g = ic / p.cg;
            c = ic - g * p.cg;
            k = g * p.kg + m;
        } else {
            t = i % p.taps;
            const long long rest = i / p.taps;
            c = rest % p.cg;
            k = rest / p.cg;
        }
        const unsigned char b = codes[k * p.row + t * p.cg_pad + c];
        const int code = p.codes_signed ? (int)(signed char)b : (int)b;
        dst[i] = __fmul_rn(__fsub_rn((float)code, zero[k]), scale[k]);
    }
}

/* ---- entry points ---------------------------------------------------------------------------
 * Instantiated by the program list in src/cuda/kernels.rs: qc_fakequant (WRITE_DEQUANT true,
 * get_weight(): the dequantized weight to p.dst and the codes to p.codes when non-zero),
 * qc_quantize (false, get_quantized_weight(): codes only), qc_fakequant_fast and
 * qc_dequant_codes. */
#define QC_FAKEQUANT_ENTRY(NAME, MINB, WRITE_DEQUANT)                                                  \
    extern "C" __global__ void __launch_bounds__(QC_FQ_THREADS, MINB) NAME(const QcFakeQuantParams p) { \
        qc_fq_dispatch<WRITE_DEQUANT>(p);                                                              \
    }

#define QC_FAKEQUANT_FAST_ENTRY(NAME)                                                               \
    extern "C" __global__ void __launch_bounds__(QC_FQ_THREADS, 4) NAME(const QcFakeQuantParams p) { \
        if (p.mode == QC_FQ_INT_PER_TENSOR) {                                                       \
            qc_fq_fast_entry<QC_FQ_INT_PER_TENSOR>(p);                                              \
        } else {                                                                                    \
            qc_fq_fast_entry<QC_FQ_INT_PER_CHANNEL>(p);                                             \
        }                                                                                           \
    }

#define QC_DEQUANT_CODES_ENTRY(NAME)                                                             \
    extern "C" __global__ void __launch_bounds__(QC_FQ_THREADS) NAME(const QcDequantParams p) { \
        qc_dequant_codes_all(p);                                                                 \
    }
