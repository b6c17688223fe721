//! `cuda/conv_igemm.cuh` (the SIMT convolutions of `cuda/conv.cu` and `cuda/conv_transpose.cu`),
//! transcribed: the tiled implicit GEMM block by block ([`emulate_igemm`]: block → phase →
//! columns → active taps, the shared-memory tiles collapsed) and the direct kernel thread by
//! thread ([`emulate_direct`]), driven by the host's own arguments and grids; the test runs both
//! on random problems against the f64 oracle and counts every output's writes.

use super::source_index;
use crate::cuda::kernels::{ConvAlgo, ConvTile};
use crate::cuda::ops::conv_launch;
use crate::cuda::ops::params::QcConvParams;
use crate::cuda::ops::simt::DIRECT_OUTPUTS_PER_THREAD;
use crate::problem::ConvProblem;

struct Tap {
    ok: bool,
    off: i64,
}

/// `QcTapSet` / `qc_tap_set`: (first, step, count) per dim and the total.
struct TapSet {
    first: [i64; 3],
    step: [i64; 3],
    count: [i64; 3],
    total: i64,
}

fn phase_of(p: &QcConvParams, mut phase: i32) -> [i64; 3] {
    let r2 = phase % p.phases[2];
    phase /= p.phases[2];
    [(phase / p.phases[1]) as i64, (phase % p.phases[1]) as i64, r2 as i64]
}

/// `qc_decode_col`: (b, q, o).
fn decode_col(p: &QcConvParams, r: [i64; 3], n: i64) -> (i64, [i64; 3], [i64; 3]) {
    let b = n / p.sub_spatial;
    let mut s = n - b * p.sub_spatial;
    let q2 = s % p.sub_size[2] as i64;
    s /= p.sub_size[2] as i64;
    let q = [s / p.sub_size[1] as i64, s % p.sub_size[1] as i64, q2];
    let o = [0, 1, 2].map(|d| r[d] + q[d] * p.phases[d] as i64);
    (b, q, o)
}

#[allow(clippy::needless_range_loop)] // mirrors the CUDA loop
fn tap_set(p: &QcConvParams, r: [i64; 3]) -> TapSet {
    let mut s = TapSet { first: [0; 3], step: [1; 3], count: [0; 3], total: 0 };
    for d in 0..3 {
        s.count[d] = p.kernel[d] as i64;
        if p.transposed != 0 {
            let (mut first, mut second) = (-1i64, -1i64);
            for j in 0..p.kernel[d] as i64 {
                if (r[d] + p.pad[d] as i64 - j * p.dilation[d] as i64) % p.stride[d] as i64 == 0 {
                    if first < 0 {
                        first = j;
                    } else {
                        second = j;
                        break;
                    }
                }
            }
            s.first[d] = first.max(0);
            s.step[d] = if second < 0 { 1 } else { second - first };
            s.count[d] = if first < 0 {
                0
            } else if second < 0 {
                1
            } else {
                (p.kernel[d] as i64 - 1 - first) / (second - first) + 1
            };
        }
    }
    s.total = s.count.iter().product();
    s
}

/// `qc_active_tap`: active index → kernel offsets.
fn active_tap(s: &TapSet, a: i64) -> [i64; 3] {
    let a2 = a % s.count[2];
    let a01 = a / s.count[2];
    [
        s.first[0] + (a01 / s.count[1]) * s.step[0],
        s.first[1] + (a01 % s.count[1]) * s.step[1],
        s.first[2] + a2 * s.step[2],
    ]
}

/// The set of taps that contribute to phase r, by brute force (every tap, every dim).
fn active_taps_brute_force(p: &QcConvParams, r: [i64; 3]) -> Vec<[i64; 3]> {
    let mut v = Vec::new();
    for j0 in 0..p.kernel[0] as i64 {
        for j1 in 0..p.kernel[1] as i64 {
            for j2 in 0..p.kernel[2] as i64 {
                let j = [j0, j1, j2];
                if p.transposed == 0
                    || (0..3).all(|d| (r[d] + p.pad[d] as i64 - j[d] * p.dilation[d] as i64) % p.stride[d] as i64 == 0)
                {
                    v.push(j);
                }
            }
        }
    }
    v
}

/// `qc_tap_pos` for a column with (ok, base).
fn tap_pos(p: &QcConvParams, r: [i64; 3], ok: bool, base: [i64; 3], j: [i64; 3]) -> Tap {
    let mut idx = [0i64; 3];
    let mut ok = ok;
    for d in 0..3 {
        let len = p.in_size[d] as i64;
        idx[d] = if p.transposed != 0 {
            let i = base[d] + (r[d] + p.pad[d] as i64 - j[d] * p.dilation[d] as i64) / p.stride[d] as i64;
            if i >= 0 && i < len {
                i
            } else {
                -1
            }
        } else {
            source_index(p.pad_mode, base[d] + j[d] * p.dilation[d] as i64, len)
        };
        ok = ok && idx[d] >= 0;
    }
    let off = if ok { (idx[0] * p.in_size[1] as i64 + idx[1]) * p.in_size[2] as i64 + idx[2] } else { 0 };
    Tap { ok, off }
}

/// Runs `qc_igemm` block by block (the smem tiles collapsed: same steps, same masks).
/// Returns the output and how often each element was written.
fn emulate_igemm(p: &QcConvParams, tile: ConvTile, x: &[f32], w: &[f32], bias: &[f32]) -> (Vec<f64>, Vec<u32>) {
    let out_len = (p.batch as i64 * p.out_channels as i64 * p.out_spatial) as usize;
    let mut y = vec![f64::NAN; out_len];
    let mut writes = vec![0u32; out_len];
    let Some(dims) = conv_launch(p, ConvAlgo::Tiled(tile)).unwrap() else {
        return (y, writes);
    };
    let (bm, bn, bk) = (tile.bm() as i64, tile.bn() as i64, tile.bk() as i32);
    for gz in 0..dims.grid.2 as i64 {
        for by in 0..dims.grid.1 as i64 {
            for bx in 0..dims.grid.0 as i64 {
                let n_tiles = (p.n_cols + bn - 1) / bn;
                let phase = bx / n_tiles;
                let n0 = (bx - phase * n_tiles) * bn;
                let m0 = by * bm;
                let g = gz;
                let r = phase_of(p, phase as i32);
                // B columns.
                let cols: Vec<(bool, i64, [i64; 3])> = (0..bn)
                    .map(|nn| {
                        let n = n0 + nn;
                        let mut ok = n < p.n_cols;
                        let (b, q, o) = if ok { decode_col(p, r, n) } else { (0, [0; 3], [0; 3]) };
                        let mut base = [0i64; 3];
                        for d in 0..3 {
                            ok = ok && o[d] < p.out_size[d] as i64;
                            base[d] =
                                if p.transposed != 0 { q[d] } else { o[d] * p.stride[d] as i64 - p.pad[d] as i64 };
                        }
                        (ok, (b * p.in_channels as i64 + g * p.cg as i64) * p.in_spatial, base)
                    })
                    .collect();
                let mut acc = vec![0f64; (bm * bn) as usize];
                let taps = tap_set(p, r);
                // The arithmetic progression enumerates exactly the contributing taps.
                let listed: Vec<[i64; 3]> = (0..taps.total).map(|a| active_tap(&taps, a)).collect();
                assert_eq!(listed, active_taps_brute_force(p, r), "tap set of phase {r:?}");
                let mut a_idx = 0;
                let mut c0 = 0;
                while a_idx < taps.total {
                    let j = active_tap(&taps, a_idx);
                    let tap = (j[0] * p.kernel[1] as i64 + j[1]) * p.kernel[2] as i64 + j[2];
                    let pos: Vec<Tap> = cols.iter().map(|c| tap_pos(p, r, c.0, c.2, j)).collect();
                    for kk in 0..bk {
                        let c = c0 + kk;
                        // Rows m0 + m >= Kg and columns that are not ok are computed by the
                        // kernel but never stored; skipping them keeps this test fast.
                        for m in 0..bm.min(p.kg as i64 - m0) {
                            let mg = m0 + m;
                            let a = if mg < p.kg as i64 && c < p.cg {
                                w[(g * p.w_stride_group
                                    + mg * p.w_stride_m
                                    + c as i64 * p.w_stride_c
                                    + tap * p.w_stride_tap) as usize]
                            } else {
                                0.0
                            };
                            for nn in (0..bn as usize).filter(|&nn| cols[nn].0) {
                                let b = if pos[nn].ok && c < p.cg {
                                    x[(cols[nn].1 + c as i64 * p.in_spatial + pos[nn].off) as usize]
                                } else {
                                    0.0
                                };
                                acc[m as usize * bn as usize + nn] += a as f64 * b as f64;
                            }
                        }
                    }
                    c0 += bk;
                    if c0 >= p.cg {
                        c0 = 0;
                        a_idx += 1;
                    }
                }
                // Epilogue.
                for nn in 0..bn {
                    let n = n0 + nn;
                    if n >= p.n_cols {
                        continue;
                    }
                    let (b, _, o) = decode_col(p, r, n);
                    if (0..3).any(|d| o[d] >= p.out_size[d] as i64) {
                        continue;
                    }
                    let y_col = b * p.out_channels as i64 * p.out_spatial
                        + (o[0] * p.out_size[1] as i64 + o[1]) * p.out_size[2] as i64
                        + o[2];
                    for m in 0..bm {
                        let mg = m0 + m;
                        if mg >= p.kg as i64 {
                            continue;
                        }
                        let k = g * p.kg as i64 + mg;
                        let bk_ = if p.has_bias != 0 { bias[k as usize] as f64 } else { 0.0 };
                        let at = (y_col + k * p.out_spatial) as usize;
                        y[at] = acc[(m * bn + nn) as usize] + bk_;
                        writes[at] += 1;
                    }
                }
            }
        }
    }
    (y, writes)
}

/// `qc_direct_index`.
fn direct_index(p: &QcConvParams, d: usize, o: i64, j: i64) -> i64 {
    let len = p.in_size[d] as i64;
    if p.transposed != 0 {
        let t = o + p.pad[d] as i64 - j * p.dilation[d] as i64;
        if t < 0 || t % p.stride[d] as i64 != 0 {
            return -1;
        }
        let i = t / p.stride[d] as i64;
        return if i < len { i } else { -1 };
    }
    source_index(p.pad_mode, o * p.stride[d] as i64 + j * p.dilation[d] as i64 - p.pad[d] as i64, len)
}

/// Runs `qc_conv_direct` thread by thread (grid-stride loop included).
fn emulate_direct(p: &QcConvParams, x: &[f32], w: &[f32], bias: &[f32]) -> (Vec<f64>, Vec<u32>) {
    let out_len = (p.batch as i64 * p.out_channels as i64 * p.out_spatial) as usize;
    let mut y = vec![f64::NAN; out_len];
    let mut writes = vec![0u32; out_len];
    let Some(dims) = conv_launch(p, ConvAlgo::Direct).unwrap() else {
        return (y, writes);
    };
    let qw = DIRECT_OUTPUTS_PER_THREAD as i64;
    let wq = (p.out_size[2] as i64 + qw - 1) / qw;
    let total = p.batch as i64 * p.out_channels as i64 * p.out_size[0] as i64 * p.out_size[1] as i64 * wq;
    let threads = dims.threads() as i64;
    for thread in 0..threads {
        let mut idx = thread;
        while idx < total {
            let mut t = idx;
            let owq = t % wq;
            t /= wq;
            let o1 = t % p.out_size[1] as i64;
            t /= p.out_size[1] as i64;
            let o0 = t % p.out_size[0] as i64;
            t /= p.out_size[0] as i64;
            let k = t % p.out_channels as i64;
            let b = t / p.out_channels as i64;
            let g = k / p.kg as i64;
            let m = k - g * p.kg as i64;
            let mut acc = [0f64; 4];
            for c in 0..p.cg as i64 {
                let x_base = (b * p.in_channels as i64 + g * p.cg as i64 + c) * p.in_spatial;
                let w_base = g * p.w_stride_group + m * p.w_stride_m + c * p.w_stride_c;
                for j0 in 0..p.kernel[0] as i64 {
                    let i0 = direct_index(p, 0, o0, j0);
                    if i0 < 0 {
                        continue;
                    }
                    for j1 in 0..p.kernel[1] as i64 {
                        let i1 = direct_index(p, 1, o1, j1);
                        if i1 < 0 {
                            continue;
                        }
                        let row = x_base + (i0 * p.in_size[1] as i64 + i1) * p.in_size[2] as i64;
                        for j2 in 0..p.kernel[2] as i64 {
                            let tap = (j0 * p.kernel[1] as i64 + j1) * p.kernel[2] as i64 + j2;
                            let wv = w[(w_base + tap * p.w_stride_tap) as usize] as f64;
                            for (q, a) in acc.iter_mut().enumerate() {
                                let ow = owq * qw + q as i64;
                                if ow >= p.out_size[2] as i64 {
                                    break;
                                }
                                let i2 = direct_index(p, 2, ow, j2);
                                if i2 >= 0 {
                                    *a += wv * x[(row + i2) as usize] as f64;
                                }
                            }
                        }
                    }
                }
            }
            let bk = if p.has_bias != 0 { bias[k as usize] as f64 } else { 0.0 };
            let y_base = (((b * p.out_channels as i64 + k) * p.out_size[0] as i64 + o0) * p.out_size[1] as i64 + o1)
                * p.out_size[2] as i64;
            for (q, a) in acc.iter().enumerate() {
                let ow = owq * qw + q as i64;
                if ow < p.out_size[2] as i64 {
                    y[(y_base + ow) as usize] = a + bk;
                    writes[(y_base + ow) as usize] += 1;
                }
            }
            idx += threads;
        }
    }
    (y, writes)
}

fn check_close(what: &str, p: &ConvProblem, got: &[f64], writes: &[u32], want: &[f64]) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert_eq!(writes[i], 1, "{what}: output {i} written {} times for {p:?}", writes[i]);
        assert!((g - w).abs() <= 1e-9 * (1.0 + w.abs()), "{what}: output {i}: {g} vs {w} for {p:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::ops::params::conv_params;
    use crate::testing::{random_problem, ProblemBudget, Rng};

    #[test]
    fn conv_kernels_index_arithmetic_matches_the_naive_oracle() {
        // Small problems (the emulation runs every block's full tile), drawn by the crate's
        // generator: every padding mode, groups and depthwise, strides, dilations, output padding.
        let budget = ProblemBudget { max_macs: 1e5, max_output: 10_000 };
        let mut rng = Rng::new(0x0ddc_0ffe_e123_4567);
        for case in 0..160 {
            let transposed = case % 2 == 1;
            let prob =
                std::iter::repeat_with(|| random_problem(&mut rng, transposed, budget)).flatten().next().unwrap();
            let has_bias = case % 3 != 0;
            let params = conv_params(&prob, has_bias).unwrap();
            let x: Vec<f32> = (0..prob.input_len()).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let w: Vec<f32> = (0..prob.weight_len()).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let bias: Vec<f32> = (0..prob.out_channels).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let want = crate::oracle::conv_naive(&prob, &w, has_bias.then_some(&bias[..]), &x);
            for tile in ConvTile::ALL {
                let (got, writes) = emulate_igemm(&params, tile, &x, &w, &bias);
                check_close(tile.suffix(), &prob, &got, &writes, &want);
            }
            let (got, writes) = emulate_direct(&params, &x, &w, &bias);
            check_close("direct", &prob, &got, &writes, &want);
        }
    }
}
