//! `qc_conv_tc` of `cuda/conv_tc.cu` with the primitives of `cuda/tensor_core.cuh` (forward and
//! transposed convolutions), transcribed to run on the CPU:
//! every thread's loaders (16-byte and element-wise A loads, the 16-bit / TF32 / 8-bit-code B
//! loads with their masking), the XOR swizzle, `ldmatrix.x4` and the PTX fragment layouts of
//! `mma.m16n8k16` (f16) and `mma.m16n8k8` (TF32), the transposed phases and their active taps,
//! split-K and the epilogue's output positions.
//! Threads and warps run one after another, so this checks indexing and data movement, not the
//! pipeline's timing (the barriers are reviewed by reading). With small integer data every
//! product and sum is exact, so the emulated kernel must reproduce `conv_naive` exactly; a swapped
//! fragment register, a wrong swizzle or a mask off by one changes the result.
//!
//! When the kernel's indexing changes, this transcription changes with it (as the igemm and
//! fake-quant transcriptions of `emulate/conv_igemm.rs` and `emulate/fakequant.rs` do). The split-K
//! reduction is `emulate/splitk.rs`'s; `qc_dequant8`, the code loaders' dequantization, is
//! [`dequant8`].

use half::f16;

use super::source_index;
use super::splitk;
use crate::cuda::ops::conv_tc::tc_conv_params;
use crate::cuda::ops::params::QcConvParams;
use crate::cuda::pack::{tc_weight_row, tf32_round};
use crate::oracle::conv_naive;
use crate::problem::{ConvProblem, PaddingMode};
use crate::testing::Rng;

/// The operand type of the tile (`T` of the template).
#[derive(Clone, Copy, PartialEq)]
enum Operand {
    F16,
    Tf32,
}

/// The B operand: packed `[K][row]` values, or 8-bit codes with per-channel scale and zero.
enum BOperand<'a> {
    Values(&'a [f32]),
    Codes { codes: &'a [u8], signed: bool, scale: &'a [f32], zero: &'a [f32], cg_valid: i64 },
}

/// A block tile: BM × BN with WM × WN warps.
#[derive(Clone, Copy)]
struct Tile {
    bm: usize,
    bn: usize,
    wm: usize,
    wn: usize,
}

/// Runs the kernel over the whole grid; `x` is channels-last `[N, D, H, W, C]`. Returns the
/// output channels-last `[m][K]` in f64 (exact sums of the fragment products) and every stage's
/// B tile as the kernel leaves it in shared memory (bytes, in launch order).
fn emulate(
    p: &QcConvParams,
    tile: Tile,
    vec_a: bool,
    op: Operand,
    splits: usize,
    x: &[f32],
    b: &BOperand,
) -> (Vec<f64>, Vec<u8>) {
    let mut b_trace = Vec::new();
    let Tile { bm, bn, wm, wn } = tile;
    let threads = wm * wn * 32;
    let epc = if op == Operand::F16 { 8 } else { 4 };
    let bk = 4 * epc;
    let (wtm, wtn) = (bm / wm, bn / wn);
    let (mi_n, ni_n) = (wtm / 16, wtn / 8);
    let (a_ch, b_ch, row_step) = (bm * 4 / threads, bn * 4 / threads, threads / 4);
    let (cg, kg, groups) = (p.cg as i64, p.kg as i64, p.groups as usize);
    let c_all = p.in_channels as i64;
    let kdim = p.kernel.map(|v| v as i64);
    let (d_in, h_in, w_in) = (p.in_size[0] as i64, p.in_size[1] as i64, p.in_size[2] as i64);
    let trans = p.transposed != 0;
    // Rows: forward, output positions; transposed, positions of one phase's sub-grid.
    let (per, sz) = if trans { (p.sub_spatial, p.sub_size) } else { (p.out_spatial, p.out_size) };
    let m_total = p.batch as i64 * per;
    let out_total = p.batch as i64 * p.out_spatial;
    let wrow = p.w_stride_m;
    let mut part = vec![0f64; splits * groups * out_total as usize * kg as usize];
    let swz = |row: usize, chunk: usize| row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4); // bytes
    let put = |smem: &mut [u8], off: usize, vals: &[f32]| {
        for (e, &v) in vals.iter().enumerate() {
            match op {
                Operand::F16 => {
                    smem[off + 2 * e..off + 2 * e + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes())
                }
                Operand::Tf32 => smem[off + 4 * e..off + 4 * e + 4].copy_from_slice(&v.to_bits().to_le_bytes()),
            }
        }
    };
    let word = |smem: &[u8], byte: usize| u32::from_le_bytes(smem[byte..byte + 4].try_into().unwrap());
    for phase in 0..p.num_phases {
        // qc_phase and qc_tap_set: the phase's residues and its active taps per dimension
        // (first, step, count); forward: every tap.
        let ph = [phase / p.phases[2] / p.phases[1], (phase / p.phases[2]) % p.phases[1], phase % p.phases[2]]
            .map(|v| v as i64);
        let mut tap_first = [0i64; 3];
        let mut tap_step = [1i64; 3];
        let mut count = kdim;
        if trans {
            for d in 0..3 {
                let hits: Vec<i64> = (0..kdim[d])
                    .filter(|&j| (ph[d] + p.pad[d] as i64 - j * p.dilation[d] as i64) % p.stride[d] as i64 == 0)
                    .take(2)
                    .collect();
                tap_first[d] = hits.first().copied().unwrap_or(0);
                tap_step[d] = if hits.len() == 2 { hits[1] - hits[0] } else { 1 };
                count[d] = match hits.len() {
                    0 => 0,
                    1 => 1,
                    _ => (kdim[d] - 1 - hits[0]) / (hits[1] - hits[0]) + 1,
                };
            }
        }
        let kred = count.iter().product::<i64>() * cg;
        let kt_all = (kred + bk as i64 - 1) / bk as i64;
        let per_split = (kt_all + splits as i64 - 1) / splits as i64;
        for g in 0..groups as i64 {
            for split in 0..splits as i64 {
                for m0 in (0..m_total).step_by(bm) {
                    for n0 in (0..kg).step_by(bn) {
                        let kt_begin = split * per_split;
                        let kt_end = (kt_begin + per_split).min(kt_all);
                        let kt_n = (kt_end - kt_begin).max(0);
                        // Per-thread reduction position (r, c, j0, j1, j2) over the active taps.
                        let (cnt1, cnt2) = (count[1].max(1), count[2].max(1));
                        let mut st: Vec<[i64; 5]> = (0..threads)
                            .map(|tid| {
                                let r = kt_begin * bk as i64 + (tid & 3) as i64 * epc as i64;
                                let a = r / cg;
                                let c = r - a * cg;
                                [r, c, a / cnt2 / cnt1, (a / cnt2) % cnt1, a % cnt2]
                            })
                            .collect();
                        let mut acc = vec![[0f64; 4]; wm * wn * 32 * mi_n * ni_n];
                        for _ in 0..kt_n {
                            let mut a_s = vec![0u8; bm * 64];
                            let mut b_s = vec![0u8; bn * 64];
                            for (tid, s) in st.iter_mut().enumerate() {
                                let kc = tid & 3;
                                let [r, c, j0, j1, j2] = *s;
                                let rk = r < kred;
                                for i in 0..a_ch {
                                    let row = (tid >> 2) + i * row_step;
                                    let m = m0 + row as i64;
                                    let ok = m < m_total;
                                    let mm = if ok { m } else { 0 };
                                    let bidx = mm / per;
                                    let sp = mm - bidx * per;
                                    let o = [
                                        sp / (sz[1] as i64 * sz[2] as i64),
                                        (sp / sz[2] as i64) % sz[1] as i64,
                                        sp % sz[2] as i64,
                                    ];
                                    // Transposed rows past the output (r + q*stride >= out) are padding.
                                    let ok = ok
                                        && (!trans
                                            || (0..3)
                                                .all(|d| ph[d] + o[d] * (p.stride[d] as i64) < (p.out_size[d] as i64)));
                                    let base = [0, 1, 2].map(|d| {
                                        if trans {
                                            o[d]
                                        } else {
                                            o[d] * p.stride[d] as i64 - p.pad[d] as i64
                                        }
                                    });
                                    // j: kernel offsets (forward) or active-tap counters (transposed).
                                    let read = |j: [i64; 3], ch: i64| -> f32 {
                                        let idx = [0, 1, 2].map(|d| {
                                            if trans {
                                                let k = tap_first[d] + j[d] * tap_step[d];
                                                base[d]
                                                    + (ph[d] + p.pad[d] as i64 - k * p.dilation[d] as i64)
                                                        / p.stride[d] as i64
                                            } else {
                                                base[d] + j[d] * p.dilation[d] as i64
                                            }
                                        });
                                        let id = source_index(p.pad_mode, idx[0], d_in);
                                        let ih = source_index(p.pad_mode, idx[1], h_in);
                                        let iw = source_index(p.pad_mode, idx[2], w_in);
                                        if id < 0 || ih < 0 || iw < 0 {
                                            return 0.0;
                                        }
                                        x[((((bidx * d_in + id) * h_in + ih) * w_in + iw) * c_all + g * cg + ch)
                                            as usize]
                                    };
                                    let mut vals = vec![0f32; epc];
                                    if vec_a {
                                        if rk && ok {
                                            for (e, v) in vals.iter_mut().enumerate() {
                                                *v = read([j0, j1, j2], c + e as i64);
                                            }
                                        }
                                    } else {
                                        let (mut rr, mut cc, mut q) = (r, c, [j0, j1, j2]);
                                        for v in vals.iter_mut() {
                                            if rr < kred && ok {
                                                *v = read(q, cc);
                                            }
                                            rr += 1;
                                            cc += 1;
                                            if cc == cg {
                                                cc = 0;
                                                q[2] += 1;
                                                if q[2] == kdim[2] {
                                                    q[2] = 0;
                                                    q[1] += 1;
                                                    if q[1] == kdim[1] {
                                                        q[1] = 0;
                                                        q[0] += 1;
                                                    }
                                                }
                                            }
                                        }
                                    }
                                    put(&mut a_s, swz(row, kc), &vals);
                                }
                                let k = [0, 1, 2].map(|d| tap_first[d] + [j0, j1, j2][d] * tap_step[d]);
                                let w_off = ((k[0] * kdim[1] + k[1]) * kdim[2] + k[2]) * cg + c;
                                for i in 0..b_ch {
                                    let row = (tid >> 2) + i * row_step;
                                    let k = n0 + row as i64;
                                    let ok = rk && k < kg;
                                    let ko = g * kg + if k < kg { k } else { 0 };
                                    let off = if vec_a { w_off } else { r };
                                    let vals: Vec<f32> = match b {
                                        BOperand::Values(w) => (0..epc)
                                            .map(|e| if ok { w[(ko * wrow + off) as usize + e] } else { 0.0 })
                                            .collect(),
                                        BOperand::Codes { codes, signed, scale, zero, cg_valid } => {
                                            let valid = if !ok {
                                                0
                                            } else if vec_a {
                                                (cg_valid - c).min(8)
                                            } else {
                                                (kred - r).min(8)
                                            };
                                            (0..8)
                                                .map(|e| {
                                                    let byte =
                                                        if ok { codes[(ko * wrow + off) as usize + e] } else { 0 };
                                                    let code = if *signed { byte as i8 as i32 } else { byte as i32 };
                                                    let v = (code as f32 - zero[ko as usize]) * scale[ko as usize];
                                                    if (e as i64) < valid {
                                                        v
                                                    } else {
                                                        0.0
                                                    }
                                                })
                                                .collect()
                                        }
                                    };
                                    put(&mut b_s, swz(row, kc), &vals);
                                }
                                // Advance by BK along the reduction.
                                let (r, mut c, mut j0, mut j1, mut j2) = (r + bk as i64, c + bk as i64, j0, j1, j2);
                                while c >= cg {
                                    c -= cg;
                                    j2 += 1;
                                    if j2 >= count[2] {
                                        j2 = 0;
                                        j1 += 1;
                                        if j1 >= count[1] {
                                            j1 = 0;
                                            j0 += 1;
                                        }
                                    }
                                }
                                *s = [r, c, j0, j1, j2];
                            }
                            b_trace.extend_from_slice(&b_s);
                            // ldmatrix.x4: matrix j's rows come from lanes 8j..8j+7; lane l gets
                            // word l%4 of row l/4 of each matrix.
                            let ldm = |smem: &[u8], addr: &dyn Fn(usize) -> usize| -> Vec<[u32; 4]> {
                                (0..32)
                                    .map(|lane| {
                                        std::array::from_fn(|j| word(smem, addr(8 * j + lane / 4) + 4 * (lane % 4)))
                                    })
                                    .collect()
                            };
                            for warp in 0..wm * wn {
                                let (wmi, wni) = (warp % wm, warp / wm);
                                for kk in 0..2 {
                                    let af: Vec<Vec<[u32; 4]>> = (0..mi_n)
                                        .map(|mi| {
                                            let regs =
                                                ldm(&a_s, &|l| swz(wmi * wtm + mi * 16 + (l & 15), kk * 2 + (l >> 4)));
                                            match op {
                                                Operand::F16 => regs,
                                                Operand::Tf32 => regs
                                                    .iter()
                                                    .map(|r| r.map(|w| tf32_round(f32::from_bits(w)).to_bits()))
                                                    .collect(),
                                            }
                                        })
                                        .collect();
                                    let mut bf: Vec<Vec<[u32; 2]>> = Vec::new();
                                    for nj in 0..ni_n / 2 {
                                        let regs = ldm(&b_s, &|l| {
                                            swz(
                                                wni * wtn + nj * 16 + (l & 7) + ((l >> 4) << 3),
                                                kk * 2 + ((l >> 3) & 1),
                                            )
                                        });
                                        bf.push(regs.iter().map(|r| [r[0], r[1]]).collect());
                                        bf.push(regs.iter().map(|r| [r[2], r[3]]).collect());
                                    }
                                    for mi in 0..mi_n {
                                        for ni in 0..ni_n {
                                            let d = mma(op, &af[mi], &bf[ni]);
                                            for lane in 0..32 {
                                                let a = &mut acc[((warp * 32 + lane) * mi_n + mi) * ni_n + ni];
                                                for e in 0..4 {
                                                    a[e] += d[lane][e];
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        // Epilogue: the accumulators' output positions.
                        for warp in 0..wm * wn {
                            let (wmi, wni) = (warp % wm, warp / wm);
                            for lane in 0..32 {
                                for mi in 0..mi_n {
                                    for h in 0..2 {
                                        let m = m0 + (wmi * wtm + mi * 16 + (lane >> 2) + h * 8) as i64;
                                        if m >= m_total {
                                            continue;
                                        }
                                        // The output position of row m.
                                        let bidx = m / per;
                                        let sp = m - bidx * per;
                                        let q = [
                                            sp / (sz[1] as i64 * sz[2] as i64),
                                            (sp / sz[2] as i64) % sz[1] as i64,
                                            sp % sz[2] as i64,
                                        ];
                                        let o =
                                            [0, 1, 2]
                                                .map(|d| if trans { ph[d] + q[d] * p.stride[d] as i64 } else { q[d] });
                                        if (0..3).any(|d| o[d] >= p.out_size[d] as i64) {
                                            continue;
                                        }
                                        let m_out = bidx * p.out_spatial
                                            + (o[0] * p.out_size[1] as i64 + o[1]) * p.out_size[2] as i64
                                            + o[2];
                                        for ni in 0..ni_n {
                                            let n = n0 + (wni * wtn + ni * 8 + (lane & 3) * 2) as i64;
                                            for e in 0..2 {
                                                if n + (e as i64) < kg {
                                                    let v =
                                                        acc[((warp * 32 + lane) * mi_n + mi) * ni_n + ni][h * 2 + e];
                                                    let i = ((split * groups as i64 + g) * out_total + m_out) * kg
                                                        + n
                                                        + e as i64;
                                                    part[i as usize] = v;
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // The split-K reduction (cuda/splitk.cu): sum over splits, channels-last [m][g*kg + n].
    let y = splitk::reduce(&part, splits, groups, out_total, kg, p.out_channels as i64);
    (y, b_trace)
}

/// `qc_dequant8` of cuda/conv_tc.cu, transcribed: byte e of the 8 is element e, sign- or
/// zero-extended, dequantized in f32, rounded to the 16-bit type; +0 from `valid` on.
pub fn dequant8(q: &[u8], scale: f32, zero: f32, valid: usize, signed: bool, round: fn(f32) -> u16) -> [u16; 8] {
    let mut out = [0u16; 8];
    for e in 0..8 {
        let code = if signed { q[e] as i8 as i32 } else { q[e] as i32 };
        let v = (code as f32 - zero) * scale;
        out[e] = if e < valid { round(v) } else { 0 };
    }
    out
}

/// One warp's `mma.sync` in the PTX fragment layouts: returns D (without C) per lane.
fn mma(op: Operand, a: &[[u32; 4]], b: &[[u32; 2]]) -> Vec<[f64; 4]> {
    let (kdim, mut am, mut bm) = match op {
        Operand::F16 => (16, vec![[0f64; 16]; 16], vec![[0f64; 8]; 16]),
        Operand::Tf32 => (8, vec![[0f64; 16]; 16], vec![[0f64; 8]; 16]),
    };
    let half = |w: u32, s: usize| f16::from_bits((w >> (16 * s)) as u16).to_f64();
    for lane in 0..32 {
        let (gid, t) = (lane >> 2, lane & 3);
        match op {
            Operand::F16 => {
                for s in 0..2 {
                    am[gid][2 * t + s] = half(a[lane][0], s);
                    am[gid + 8][2 * t + s] = half(a[lane][1], s);
                    am[gid][2 * t + 8 + s] = half(a[lane][2], s);
                    am[gid + 8][2 * t + 8 + s] = half(a[lane][3], s);
                    bm[2 * t + s][gid] = half(b[lane][0], s);
                    bm[2 * t + 8 + s][gid] = half(b[lane][1], s);
                }
            }
            Operand::Tf32 => {
                let f = |w: u32| f32::from_bits(w) as f64;
                am[gid][t] = f(a[lane][0]);
                am[gid + 8][t] = f(a[lane][1]);
                am[gid][t + 4] = f(a[lane][2]);
                am[gid + 8][t + 4] = f(a[lane][3]);
                bm[t][gid] = f(b[lane][0]);
                bm[t + 4][gid] = f(b[lane][1]);
            }
        }
    }
    (0..32)
        .map(|lane| {
            let (gid, t) = (lane >> 2, lane & 3);
            let dot = |row: usize, col: usize| (0..kdim).map(|k| am[row][k] * bm[k][col]).sum::<f64>();
            [dot(gid, 2 * t), dot(gid, 2 * t + 1), dot(gid + 8, 2 * t), dot(gid + 8, 2 * t + 1)]
        })
        .collect()
}

/// A small integer in `lo..=hi` from the crate's test generator.
fn int(rng: &mut Rng, lo: i64, hi: i64) -> i64 {
    lo + rng.range(0, (hi - lo) as usize) as i64
}

/// A forward 2-d problem: (C, K, groups, kernel, stride, pad, dilation, mode, batch, input).
#[allow(clippy::too_many_arguments)]
fn problem(
    c: usize,
    k: usize,
    groups: usize,
    kernel: [usize; 2],
    stride: usize,
    pad: usize,
    dil: usize,
    mode: PaddingMode,
    n: usize,
    hw: [usize; 2],
) -> ConvProblem {
    let out = [0, 1].map(|d| (hw[d] + 2 * pad - dil * (kernel[d] - 1) - 1) / stride + 1);
    ConvProblem {
        transposed: false,
        batch: n,
        in_channels: c,
        out_channels: k,
        groups,
        in_size: [1, hw[0], hw[1]],
        out_size: [1, out[0], out[1]],
        kernel: [1, kernel[0], kernel[1]],
        stride: [1, stride, stride],
        pad: [0, pad, pad],
        dilation: [1, dil, dil],
        pad_mode: mode,
    }
}

/// A transposed 2-d problem: (C, K, groups, kernel, stride, pad, dilation, batch, input).
#[allow(clippy::too_many_arguments)]
fn problem_tr(
    c: usize,
    k: usize,
    groups: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: usize,
    dil: usize,
    n: usize,
    hw: [usize; 2],
) -> ConvProblem {
    let out = [0, 1].map(|d| (hw[d] - 1) * stride[d] + dil * (kernel[d] - 1) + 1 - 2 * pad);
    ConvProblem {
        transposed: true,
        batch: n,
        in_channels: c,
        out_channels: k,
        groups,
        in_size: [1, hw[0], hw[1]],
        out_size: [1, out[0], out[1]],
        kernel: [1, kernel[0], kernel[1]],
        stride: [1, stride[0], stride[1]],
        pad: [0, pad, pad],
        dilation: [1, dil, dil],
        pad_mode: PaddingMode::Zeros,
    }
}

/// Runs one case: random small integers for x and the weight (or codes), the emulated kernel
/// (with `cg_pad` channel slots: the input padded as `qc_pad_channels` does) against
/// `conv_naive` on the unpadded problem.
#[allow(clippy::too_many_arguments)]
fn check(pr: &ConvProblem, cg_pad: usize, tile: Tile, vec_a: bool, op: Operand, q8: bool, splits: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let (cg, kg) = (pr.in_channels / pr.groups, pr.out_channels / pr.groups);
    let taps: usize = pr.kernel.iter().product();
    let in_sp: usize = pr.in_size.iter().product();
    let x: Vec<f32> = (0..pr.batch * pr.in_channels * in_sp).map(|_| int(&mut rng, -3, 3) as f32).collect(); // NCHW
                                                                                                             // Module-layout weight [K][cg][taps] and its packed [K][row] form (cg_pad slots per tap).
    let row = tc_weight_row(cg_pad, taps);
    let k_all = pr.out_channels;
    let (mut w, mut packed, mut codes) =
        (vec![0f32; k_all * cg * taps], vec![0f32; k_all * row], vec![0u8; k_all * row]);
    let zero: Vec<f32> = (0..k_all).map(|_| int(&mut rng, 1, 4) as f32).collect();
    let scale = vec![0.5f32; k_all];
    for code in codes.iter_mut() {
        *code = int(&mut rng, 100, 250) as u8; // garbage in every slot the loaders must mask
    }
    for ko in 0..k_all {
        for ci in 0..cg {
            for t in 0..taps {
                let (v, q) = if q8 {
                    let q = int(&mut rng, 0, 9);
                    ((q as f32 - zero[ko]) * 0.5, q)
                } else {
                    (int(&mut rng, -3, 3) as f32, 0)
                };
                // Module layout: forward [K][cg][taps]; transposed [C][kg][taps].
                let wi = if pr.transposed {
                    (((ko / kg) * cg + ci) * kg + ko % kg) * taps + t
                } else {
                    (ko * cg + ci) * taps + t
                };
                w[wi] = v;
                packed[ko * row + t * cg_pad + ci] = v;
                codes[ko * row + t * cg_pad + ci] = q as u8;
            }
        }
    }
    // Channels-last input with cg_pad slots per group (zeros in the extra ones).
    let cp = pr.groups * cg_pad;
    let mut xl = vec![0f32; pr.batch * in_sp * cp];
    for b in 0..pr.batch {
        for s in 0..in_sp {
            for g in 0..pr.groups {
                for ci in 0..cg {
                    xl[(b * in_sp + s) * cp + g * cg_pad + ci] = x[(b * pr.in_channels + g * cg + ci) * in_sp + s];
                }
            }
        }
    }
    let padded = ConvProblem { in_channels: cp, ..pr.clone() };
    let p = tc_conv_params(&padded, false, true).unwrap();
    assert_eq!(p.w_stride_m as usize, row);
    let (got, trace) = emulate(&p, tile, vec_a, op, splits, &xl, &BOperand::Values(&packed));
    if q8 {
        // The code loaders must leave exactly the 16-bit weight's bytes in shared memory, +0 in
        // every padding slot and past the reduction (the garbage codes there must not leak).
        let codes = BOperand::Codes { codes: &codes, signed: false, scale: &scale, zero: &zero, cg_valid: cg as i64 };
        let (got_q8, trace_q8) = emulate(&p, tile, vec_a, op, splits, &xl, &codes);
        assert!(trace_q8 == trace, "{pr:?}: the code loader's shared-memory B tiles differ from the 16-bit weight's");
        assert_eq!(got_q8, got);
    }
    let want = conv_naive(pr, &w, None, &x); // NCHW
    let out_sp: usize = pr.out_size.iter().product();
    for bb in 0..pr.batch {
        for s in 0..out_sp {
            for k in 0..k_all {
                let g = got[(bb * out_sp + s) * k_all + k];
                let e = want[(bb * k_all + k) * out_sp + s];
                assert_eq!(g, e, "{pr:?} cg_pad {cg_pad} vec {vec_a} q8 {q8} splits {splits}: output ({bb}, {k}, {s})");
            }
        }
    }
}

const T64: Tile = Tile { bm: 64, bn: 64, wm: 2, wn: 2 };
const T128X64: Tile = Tile { bm: 128, bn: 64, wm: 2, wn: 2 };
const T128: Tile = Tile { bm: 128, bn: 128, wm: 2, wn: 4 };

#[test]
fn f16_tiles_reproduce_the_oracle() {
    use PaddingMode::*;
    check(&problem(16, 20, 1, [3, 3], 1, 1, 1, Zeros, 1, [5, 6]), 16, T64, true, Operand::F16, false, 1, 1);
    check(&problem(32, 24, 2, [3, 3], 2, 2, 2, Reflect, 2, [7, 6]), 16, T128X64, true, Operand::F16, false, 2, 2);
    // The element-wise loader (one channel per group of 16 outputs; 3 channels unpadded).
    check(&problem(2, 32, 2, [3, 3], 1, 1, 1, Circular, 1, [5, 5]), 1, T128X64, false, Operand::F16, false, 1, 3);
    check(&problem(3, 20, 1, [3, 3], 1, 1, 1, Replicate, 1, [5, 6]), 3, T128X64, false, Operand::F16, false, 2, 4);
    // Input channels padded to 8 (a stem) and to 16 (2 groups of 12).
    check(&problem(3, 20, 1, [3, 3], 2, 1, 1, Zeros, 2, [7, 6]), 8, T64, true, Operand::F16, false, 1, 5);
    check(&problem(24, 36, 2, [3, 3], 1, 1, 1, Reflect, 1, [4, 5]), 16, T128, true, Operand::F16, false, 2, 6);
}

#[test]
fn tf32_tiles_reproduce_the_oracle() {
    use PaddingMode::*;
    check(&problem(8, 20, 1, [3, 3], 1, 1, 1, Zeros, 1, [5, 6]), 8, T64, true, Operand::Tf32, false, 1, 11);
    check(&problem(32, 24, 2, [3, 3], 1, 1, 1, Reflect, 2, [4, 5]), 16, T128X64, true, Operand::Tf32, false, 2, 12);
    check(&problem(24, 70, 1, [3, 3], 1, 1, 1, Zeros, 1, [3, 3]), 24, T128, true, Operand::Tf32, false, 3, 13);
    check(&problem(3, 20, 1, [3, 3], 2, 1, 1, Circular, 1, [7, 6]), 8, T64, true, Operand::Tf32, false, 1, 14);
}

#[test]
fn code_tiles_reproduce_the_oracle_and_mask_the_padding() {
    use PaddingMode::*;
    // 16-byte loader: padded stem (garbage codes in slots 3..8 of each tap), 2 groups of 12
    // padded to 16 with split-K, unpadded 16 channels.
    check(&problem(3, 20, 1, [3, 3], 1, 1, 1, Zeros, 1, [5, 6]), 8, T64, true, Operand::F16, true, 1, 21);
    check(&problem(24, 36, 2, [3, 3], 1, 1, 1, Replicate, 1, [4, 4]), 16, T128X64, true, Operand::F16, true, 2, 22);
    check(&problem(16, 20, 1, [3, 3], 1, 1, 1, Zeros, 1, [4, 4]), 16, T128, true, Operand::F16, true, 1, 23);
    // Element-wise loader: the row's tail past cg * taps holds garbage.
    check(&problem(3, 20, 1, [3, 3], 1, 1, 1, Reflect, 2, [5, 5]), 3, T128X64, false, Operand::F16, true, 2, 24);
    check(&problem(2, 32, 2, [3, 3], 1, 1, 1, Zeros, 1, [5, 5]), 1, T128X64, false, Operand::F16, true, 1, 25);
}

#[test]
fn transposed_tiles_reproduce_the_oracle() {
    // Phases with 1, 2 or no active taps per dimension, dilation, groups; f16, TF32 and codes.
    let cases = [
        problem_tr(16, 24, 1, [4, 4], [2, 2], 1, 1, 2, [4, 3]),
        problem_tr(16, 20, 2, [3, 3], [2, 1], 1, 2, 1, [4, 5]),
        problem_tr(8, 12, 1, [2, 2], [3, 3], 0, 1, 2, [3, 4]),
    ];
    for (i, pr) in cases.iter().enumerate() {
        let cg = pr.in_channels / pr.groups;
        let seed = 31 + i as u64;
        check(pr, cg, T64, true, Operand::F16, false, 1, seed);
        check(pr, cg, T128, true, Operand::F16, true, 1, seed);
        check(pr, cg, T64, true, Operand::Tf32, false, 1, seed);
    }
}
