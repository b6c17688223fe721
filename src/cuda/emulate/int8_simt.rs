//! `cuda/int8_simt.cu`, transcribed: `qc_dw_int8` thread by thread over its grid-stride loop (the
//! 32-bit item decode, the taps through the padding rule, the centred int32 products, the
//! requantization of `cuda/int8.cuh` as [`requant`], both output layouts) and
//! `qc_pad_channels_u8` one pixel per iteration. The tests run them against `conv_int8_naive`
//! (src/oracle.rs) with the host's real packing and arguments.

use super::conv_imma::requant;
use super::source_index;
use crate::cuda::ops::conv_imma::{requant_words, Int8Epilogue};
use crate::cuda::ops::int8_simt::{dw_int8_launch_dims, dw_int8_params};
use crate::cuda::ops::params::{QcInt8ConvParams, QcPadU8Params};
use crate::cuda::pack_int8::{expand_zero_points, pack_depthwise_centred};
use crate::problem::ConvProblem;
use crate::quant::requant::RequantTable;

/// `qc_pad_channels_u8`, transcribed (one pixel per iteration): `src` NCHW or channels-last,
/// the result channels-last with `cg_pad` slots per group, `fill` in the extra ones.
pub fn pad_u8(p: &QcPadU8Params, src: &[u8]) -> Vec<u8> {
    let (groups, cg, cgp) = (p.groups as i64, p.cg as i64, p.cg_pad as i64);
    let (cin, cout) = (groups * cg, groups * cgp);
    let mut dst = vec![0u8; (p.batch * p.pixels * cout) as usize];
    for px in 0..p.batch * p.pixels {
        let b = px / p.pixels;
        let base = if p.src_nhwc != 0 { px * cin } else { b * cin * p.pixels + (px - b * p.pixels) };
        let step = if p.src_nhwc != 0 { 1 } else { p.pixels };
        let mut d = px * cout;
        let mut ch = 0;
        for _g in 0..groups {
            for c in 0..cgp {
                let mut v = p.fill as u8;
                if c < cg {
                    v = src[(base + ch * step) as usize];
                    ch += 1;
                }
                dst[d as usize] = v;
                d += 1;
            }
        }
    }
    dst
}

/// `qc_dw_int8`, transcribed: every thread of the launch's grid, grid-stride; `x` channels-last
/// codes, `w` the `[taps][K]` centred weight, `table` the requant words. Returns the output in
/// `q`'s layout.
pub fn dw_int8(q: &QcInt8ConvParams, x: &[u8], w: &[i16], table: &[f32]) -> Vec<u8> {
    let p = &q.conv;
    let (c_all, k_all, kg) = (p.in_channels as i64, p.out_channels as i64, p.kg as i64);
    let k4s = (k_all + 3) / 4;
    let items = p.batch as i64 * p.out_spatial * k4s;
    let dims = dw_int8_launch_dims(q).unwrap().expect("a non-empty output");
    let stride = dims.grid.0 as i64 * dims.block.0 as i64;
    let mut y = vec![0u8; (p.batch as i64 * k_all * p.out_spatial) as usize];
    let bias = p.has_bias != 0;
    for thread in 0..stride {
        let mut it = thread;
        while it < items {
            let u = it as u32;
            let k0 = (u % k4s as u32) as i64 * 4;
            let pu = u / k4s as u32;
            let bu = pu / p.out_spatial as u32;
            let s_lin = pu - bu * p.out_spatial as u32;
            let mut su = s_lin;
            let ow = (su % p.out_size[2] as u32) as i64;
            su /= p.out_size[2] as u32;
            let oh = (su % p.out_size[1] as u32) as i64;
            let od = (su / p.out_size[1] as u32) as i64;
            let xb = bu as i64 * p.in_spatial * c_all;
            let mut acc = [0i32; 4];
            let mut tap = 0i64;
            for j0 in 0..p.kernel[0] as i64 {
                let id = source_index(
                    p.pad_mode,
                    od * p.stride[0] as i64 - p.pad[0] as i64 + j0 * p.dilation[0] as i64,
                    p.in_size[0] as i64,
                );
                for j1 in 0..p.kernel[1] as i64 {
                    let ih = source_index(
                        p.pad_mode,
                        oh * p.stride[1] as i64 - p.pad[1] as i64 + j1 * p.dilation[1] as i64,
                        p.in_size[1] as i64,
                    );
                    for j2 in 0..p.kernel[2] as i64 {
                        let iw = source_index(
                            p.pad_mode,
                            ow * p.stride[2] as i64 - p.pad[2] as i64 + j2 * p.dilation[2] as i64,
                            p.in_size[2] as i64,
                        );
                        let t = tap;
                        tap += 1;
                        if id < 0 || ih < 0 || iw < 0 {
                            continue;
                        }
                        let xp = xb + ((id * p.in_size[1] as i64 + ih) * p.in_size[2] as i64 + iw) * c_all;
                        for (e, a) in acc.iter_mut().enumerate() {
                            let k = k0 + e as i64;
                            if k < k_all {
                                let xv = x[(xp + k / kg) as usize] as i32 - q.x_zero;
                                *a = a.checked_add(xv * w[(t * k_all + k) as usize] as i32).expect("int32 accumulator");
                            }
                        }
                    }
                }
            }
            for (e, &a) in acc.iter().enumerate() {
                let k = k0 + e as i64;
                if k >= k_all {
                    continue;
                }
                let t = &table[4 * k as usize..4 * k as usize + 4];
                let code = requant(a, t[0], t[1], t[2], bias, q.out_zero, q.out_floor);
                let (b, s) = (bu as i64, s_lin as i64);
                let i = if p.out_nhwc != 0 {
                    (b * p.out_spatial + s) * k_all + k
                } else {
                    (b * k_all + k) * p.out_spatial + s
                };
                y[i as usize] = code;
            }
            it += stride;
        }
    }
    y
}

/// The depthwise forward as `forward_int8` runs it on a channels-last input: the host's packing
/// and arguments, then [`dw_int8`].
pub fn run_dw(
    p: &ConvProblem,
    w: &[i8],
    w_zero: &[i32],
    x_nhwc: &[u8],
    x_zero: i32,
    table: &RequantTable,
    out_nhwc: bool,
) -> Vec<u8> {
    let zero = expand_zero_points(p, w_zero).unwrap();
    let wc = pack_depthwise_centred(p, w, &zero);
    let q = dw_int8_params(p, Int8Epilogue::new(table, x_zero).unwrap(), out_nhwc).unwrap();
    dw_int8(&q, x_nhwc, &wc, &requant_words(table))
}
