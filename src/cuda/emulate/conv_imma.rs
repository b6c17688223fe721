//! `qc_conv_imma` of `cuda/conv_imma.cu` (forward and transposed, symmetric and `*_wzp` entries)
//! with the primitives of `cuda/tensor_core.cuh` and the requantization of `cuda/int8.cuh`,
//! transcribed to run on the CPU: every thread's 16-byte loads (cp.async, or the zero point
//! stored where a chunk reads no input code), the XOR swizzle, `ldmatrix.x4` on 8-bit rows, the
//! PTX fragment layouts of `mma.m16n8k32.row.col.s32.u8.s8.s32`, the row sums of the `*_wzp`
//! entries (each thread's part of each stage's A tile), the epilogue's zero-point corrections in
//! modulo-2³² arithmetic, the requantization step by step, and the u8 stores in both output
//! layouts. The host side is the real one: `imma_params`, `pack_imma`, `col_sums`,
//! `expand_zero_points`, and the input copy of `qc_pad_channels_u8` (`emulate/int8_simt.rs`).
//!
//! Threads and warps run one after another, so this checks indexing, data movement and the exact
//! arithmetic, not the pipeline's timing (the barriers are reviewed by reading). The accumulators
//! are `i32` with checked additions: the claim that no partial sum of codes leaves int32 is
//! checked on every MMA. The emulated kernel must reproduce `conv_int8_naive` (src/oracle.rs) code
//! for code; [`Mutation`]s show that a swapped fragment register or accumulator does not.

use super::int8_simt::pad_u8;
use super::source_index;
use crate::cuda::kernels::TcTile;
use crate::cuda::ops::conv_imma::{imma_launch_dims, imma_params, requant_words, Int8Epilogue};
use crate::cuda::ops::int8_simt::{pad_u8_params, PadU8Shape};
use crate::cuda::ops::params::QcInt8ConvParams;
use crate::cuda::pack_int8::{col_sums, expand_zero_points, imma_cg_pad, pack_imma};
use crate::problem::ConvProblem;
use crate::quant::requant::{cvtps2dq, RequantTable};

/// A deliberate bug injected into the transcription, to show that the oracle comparison catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// The kernel as written.
    None,
    /// A fragment registers a1 and a2 exchanged (rows +8 and k +16) in the MMA.
    SwapA12,
    /// B fragment registers b0 and b1 exchanged (k 0-15 and 16-31).
    SwapB01,
    /// Accumulators c1 and c2 exchanged in the epilogue ((g, 2t+1) and (g+8, 2t)).
    SwapC12,
    /// The row sums left out of a `*_wzp` entry's correction.
    NoRowSums,
}

/// A block tile: BM × BN with WM × WN warps (as `QC_IMMA_ENTRY`'s arguments).
#[derive(Clone, Copy, Debug)]
pub struct Tile {
    bm: usize,
    bn: usize,
    wm: usize,
    wn: usize,
}

/// The tile of `t` (the geometry of `kernels.rs`'s program list).
pub fn tile_of(t: TcTile) -> Tile {
    match t {
        TcTile::T128x128 => Tile { bm: 128, bn: 128, wm: 2, wn: 4 },
        TcTile::T128x64 | TcTile::Gather128x64 => Tile { bm: 128, bn: 64, wm: 2, wn: 2 },
        TcTile::T64x64 => Tile { bm: 64, bn: 64, wm: 2, wn: 2 },
    }
}

/// The device buffers of one launch, as host slices.
pub struct Buffers<'a> {
    /// Input codes channels-last with `cg_pad` slots per group.
    pub x: &'a [u8],
    /// `pack_imma` codes.
    pub w: &'a [i8],
    /// `[num_phases][K]` column sums.
    pub col_sums: &'a [i32],
    /// `[K]` weight zero points.
    pub w_zero: &'a [i32],
    /// `[K][4]` requant words.
    pub requant: &'a [f32],
}

/// `qc_requant_u8` of cuda/int8.cuh: `__int2float_rn`, the bias (`__fadd_rn` when `bias_b` is 1,
/// else `__fmaf_rn`), `__fmul_rn`, the explicit cvtps2dq range test around `__float2int_rn`, the
/// clamps.
pub fn requant(acc: i32, mult: f32, bias_a: f32, bias_b: f32, bias: bool, out_zero: i32, out_floor: i32) -> u8 {
    let mut v = acc as f32;
    if bias {
        v = if bias_b == 1.0 { bias_a + v } else { bias_a.mul_add(bias_b, v) };
    }
    let y = v * mult;
    let mut q = if (-2147483648.0f32..2147483648.0f32).contains(&y) { y.round_ties_even() as i32 } else { i32::MIN };
    q = q.clamp(-32768, 32767) + out_zero;
    q.clamp(out_floor, 255) as u8
}

/// 16-byte chunk `chunk` of row `row` of a stage tile, in bytes (`qc_swz` × 2).
fn swz(row: usize, chunk: usize) -> usize {
    row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4)
}

fn word(smem: &[u8], byte: usize) -> u32 {
    u32::from_le_bytes(smem[byte..byte + 4].try_into().unwrap())
}

/// `ldmatrix.sync.aligned.m8n8.x4.b16`: lane l supplies the row address `addr(l)` of row l % 8 of
/// matrix l / 8 and receives, from each matrix j, word l % 4 of row l / 4.
fn ldmatrix_x4(smem: &[u8], addr: &dyn Fn(usize) -> usize) -> Vec<[u32; 4]> {
    (0..32).map(|lane| std::array::from_fn(|j| word(smem, addr(8 * j + lane / 4) + 4 * (lane % 4)))).collect()
}

/// One warp's `mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32` in the PTX fragment layouts: A
/// a0..a15 in registers 0-3 (rows groupID in 0 and 2, groupID + 8 in 1 and 3; k =
/// threadID_in_group·4 + byte, + 16 in 2 and 3), B b0..b7 in registers 0-1 (k = threadID·4 +
/// byte, + 16 in 1; column groupID), D c0..c3 = (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1).
/// Adds into `acc` with checked i32 additions.
fn mma_m16n8k32(acc: &mut [[i32; 4]], a: &[[u32; 4]], b: &[[u32; 2]]) {
    let mut am = [[0i32; 32]; 16];
    let mut bm = [[0i32; 8]; 32];
    for lane in 0..32 {
        let (gid, t) = (lane >> 2, lane & 3);
        for i in 0..4 {
            let byte = |w: u32| (w >> (8 * i)) as u8;
            am[gid][4 * t + i] = byte(a[lane][0]) as i32;
            am[gid + 8][4 * t + i] = byte(a[lane][1]) as i32;
            am[gid][16 + 4 * t + i] = byte(a[lane][2]) as i32;
            am[gid + 8][16 + 4 * t + i] = byte(a[lane][3]) as i32;
            bm[4 * t + i][gid] = byte(b[lane][0]) as i8 as i32;
            bm[16 + 4 * t + i][gid] = byte(b[lane][1]) as i8 as i32;
        }
    }
    for (lane, c) in acc.iter_mut().enumerate() {
        let (gid, t) = (lane >> 2, lane & 3);
        let cells = [(gid, 2 * t), (gid, 2 * t + 1), (gid + 8, 2 * t), (gid + 8, 2 * t + 1)];
        for (e, &(row, col)) in cells.iter().enumerate() {
            for k in 0..32 {
                c[e] = c[e].checked_add(am[row][k] * bm[k][col]).expect("a partial sum of codes left int32");
            }
        }
    }
}

/// Runs the kernel over the whole grid of `q` (from `imma_launch_dims`) and returns the output
/// codes in `q`'s output layout.
pub fn emulate(q: &QcInt8ConvParams, tile: TcTile, wzp: bool, buf: &Buffers<'_>, mutation: Mutation) -> Vec<u8> {
    let p = &q.conv;
    let Tile { bm, bn, wm, wn } = tile_of(tile);
    let threads = wm * wn * 32;
    let (wtm, wtn) = (bm / wm, bn / wn);
    let (mi_n, ni_n) = (wtm / 16, wtn / 8);
    let (a_ch, b_ch, row_step) = (bm * 4 / threads, bn * 4 / threads, threads / 4);
    let (rs_parts, bk) = (threads / bm, 64usize);
    let rs_ch = 4 / rs_parts;
    let (cg, kg, k_all) = (p.cg as i64, p.kg as i64, p.out_channels as i64);
    let c_all = p.in_channels as i64;
    let kdim = p.kernel.map(|v| v as i64);
    let (d_in, h_in, w_in) = (p.in_size[0] as i64, p.in_size[1] as i64, p.in_size[2] as i64);
    let trans = p.transposed != 0;
    let (per, sz) = if trans { (p.sub_spatial, p.sub_size) } else { (p.out_spatial, p.out_size) };
    let m_total = p.batch as i64 * per;
    let mut y = vec![0u8; (p.batch as i64 * k_all * p.out_spatial) as usize];
    let dims = imma_launch_dims(q, tile).unwrap().expect("a non-empty output");
    let m_tiles = (m_total + bm as i64 - 1) / bm as i64;
    assert_eq!(dims.grid.0 as i64, m_tiles * p.num_phases as i64);
    assert_eq!(dims.block.0 as usize, threads);
    for bx in 0..dims.grid.0 as i64 {
        for by in 0..dims.grid.1 as i64 {
            for g in 0..dims.grid.2 as i64 {
                // qc_phase and qc_tap_set (first, step, count per dimension; forward: every tap).
                let phase = if trans { bx / m_tiles } else { 0 };
                let m0 = (bx - phase * m_tiles) * bm as i64;
                let n0 = by * bn as i64;
                let ph = [
                    phase / p.phases[2] as i64 / p.phases[1] as i64,
                    (phase / p.phases[2] as i64) % p.phases[1] as i64,
                    phase % p.phases[2] as i64,
                ];
                let mut first = [0i64; 3];
                let mut step = [1i64; 3];
                let mut count = kdim;
                if trans {
                    for d in 0..3 {
                        let hits: Vec<i64> = (0..kdim[d])
                            .filter(|&j| (ph[d] + p.pad[d] as i64 - j * p.dilation[d] as i64) % p.stride[d] as i64 == 0)
                            .take(2)
                            .collect();
                        first[d] = hits.first().copied().unwrap_or(0);
                        step[d] = if hits.len() == 2 { hits[1] - hits[0] } else { 1 };
                        count[d] = match hits.len() {
                            0 => 0,
                            1 => 1,
                            _ => (kdim[d] - 1 - hits[0]) / (hits[1] - hits[0]) + 1,
                        };
                    }
                }
                let kred = count.iter().product::<i64>() * cg;
                let kt_n = (kred + bk as i64 - 1) / bk as i64;
                // Per thread: (r, c, j0, j1, j2).
                let (cnt1, cnt2) = (count[1].max(1), count[2].max(1));
                let mut st: Vec<[i64; 5]> = (0..threads)
                    .map(|tid| {
                        let r = (tid & 3) as i64 * 16;
                        let a = r / cg;
                        [r, r - a * cg, a / cnt2 / cnt1, (a / cnt2) % cnt1, a % cnt2]
                    })
                    .collect();
                // This thread's A rows: (ok, base, batch offset).
                let a_rows: Vec<(bool, [i64; 3], i64)> = (0..threads * a_ch)
                    .map(|k| {
                        let (tid, i) = (k / a_ch, k % a_ch);
                        let m = m0 + ((tid >> 2) + i * row_step) as i64;
                        let ok = m < m_total;
                        let mm = if ok { m } else { 0 };
                        let b = mm / per;
                        let s = mm - b * per;
                        let o =
                            [s / (sz[1] as i64 * sz[2] as i64), (s / sz[2] as i64) % sz[1] as i64, s % sz[2] as i64];
                        let ok = ok
                            && (!trans || (0..3).all(|d| ph[d] + o[d] * (p.stride[d] as i64) < p.out_size[d] as i64));
                        let base =
                            [0, 1, 2].map(|d| if trans { o[d] } else { o[d] * p.stride[d] as i64 - p.pad[d] as i64 });
                        (ok, base, b * p.in_spatial * c_all + g * cg)
                    })
                    .collect();
                let mut acc = vec![[0i32; 4]; wm * wn * 32 * mi_n * ni_n];
                let mut rsum = vec![0u32; threads];
                for _ in 0..kt_n {
                    let mut a_s = vec![0u8; bm * 64];
                    let mut b_s = vec![0u8; bn * 64];
                    for (tid, s) in st.iter_mut().enumerate() {
                        let kc = tid & 3;
                        let [r, c, j0, j1, j2] = *s;
                        let rk = r < kred;
                        let k = [0, 1, 2].map(|d| first[d] + [j0, j1, j2][d] * step[d]);
                        let dd = [0, 1, 2].map(|d| {
                            if trans {
                                (ph[d] + p.pad[d] as i64 - k[d] * p.dilation[d] as i64) / p.stride[d] as i64
                            } else {
                                k[d] * p.dilation[d] as i64
                            }
                        });
                        let w_off = ((k[0] * kdim[1] + k[1]) * kdim[2] + k[2]) * cg + c;
                        for i in 0..a_ch {
                            let (a_ok, base, xb) = a_rows[tid * a_ch + i];
                            let idx = [0, 1, 2].map(|d| base[d] + dd[d]);
                            let src = [
                                source_index(p.pad_mode, idx[0], d_in),
                                source_index(p.pad_mode, idx[1], h_in),
                                source_index(p.pad_mode, idx[2], w_in),
                            ];
                            let ok = rk && a_ok && src.iter().all(|&v| v >= 0);
                            let dst = swz((tid >> 2) + i * row_step, kc);
                            for e in 0..16 {
                                a_s[dst + e] = if ok {
                                    buf.x[(xb + ((src[0] * h_in + src[1]) * w_in + src[2]) * c_all + c) as usize + e]
                                } else {
                                    q.x_zero as u8
                                };
                            }
                        }
                        for i in 0..b_ch {
                            let n = n0 + ((tid >> 2) + i * row_step) as i64;
                            let ok = rk && n < kg;
                            let row = (g * kg + if n < kg { n } else { 0 }) * p.w_stride_m;
                            let dst = swz((tid >> 2) + i * row_step, kc);
                            for e in 0..16 {
                                b_s[dst + e] = if ok { buf.w[(row + w_off) as usize + e] as u8 } else { 0 };
                            }
                        }
                        // Advance by BK along the reduction.
                        let (mut c, mut j) = (c + bk as i64, [j0, j1, j2]);
                        while c >= cg {
                            c -= cg;
                            j[2] += 1;
                            if j[2] >= count[2] {
                                j[2] = 0;
                                j[1] += 1;
                                if j[1] >= count[1] {
                                    j[1] = 0;
                                    j[0] += 1;
                                }
                            }
                        }
                        *s = [r + bk as i64, c, j[0], j[1], j[2]];
                    }
                    // The two k32 steps of every warp.
                    for warp in 0..wm * wn {
                        let (wmi, wni) = (warp % wm, warp / wm);
                        for kk in 0..2 {
                            let af: Vec<Vec<[u32; 4]>> = (0..mi_n)
                                .map(|mi| {
                                    ldmatrix_x4(&a_s, &|l| swz(wmi * wtm + mi * 16 + (l & 15), kk * 2 + (l >> 4)))
                                })
                                .collect();
                            let mut bf: Vec<Vec<[u32; 2]>> = Vec::new();
                            for nj in 0..ni_n / 2 {
                                let regs = ldmatrix_x4(&b_s, &|l| {
                                    swz(wni * wtn + nj * 16 + (l & 7) + ((l >> 4) << 3), kk * 2 + ((l >> 3) & 1))
                                });
                                bf.push(regs.iter().map(|r| [r[0], r[1]]).collect());
                                bf.push(regs.iter().map(|r| [r[2], r[3]]).collect());
                            }
                            for mi in 0..mi_n {
                                let a: Vec<[u32; 4]> = af[mi]
                                    .iter()
                                    .map(|&r| if mutation == Mutation::SwapA12 { [r[0], r[2], r[1], r[3]] } else { r })
                                    .collect();
                                for ni in 0..ni_n {
                                    let b: Vec<[u32; 2]> = bf[ni]
                                        .iter()
                                        .map(|&r| if mutation == Mutation::SwapB01 { [r[1], r[0]] } else { r })
                                        .collect();
                                    let mut d = vec![[0i32; 4]; 32];
                                    for lane in 0..32 {
                                        d[lane] = acc[((warp * 32 + lane) * mi_n + mi) * ni_n + ni];
                                    }
                                    mma_m16n8k32(&mut d, &a, &b);
                                    for lane in 0..32 {
                                        acc[((warp * 32 + lane) * mi_n + mi) * ni_n + ni] = d[lane];
                                    }
                                }
                            }
                        }
                    }
                    // *_wzp: every thread sums its part of its row of this stage's A tile.
                    if wzp {
                        for (tid, rs) in rsum.iter_mut().enumerate() {
                            let (row, part) = (tid % bm, tid / bm);
                            for j in 0..rs_ch {
                                let at = swz(row, part * rs_ch + j);
                                *rs = a_s[at..at + 16].iter().fold(*rs, |s, &v| s.wrapping_add(v as u32));
                            }
                        }
                    }
                }
                // The row sums meet in shared memory: [RS_PARTS][BM].
                let rs_smem: Vec<u32> = (0..rs_parts * bm).map(|i| rsum[(i / bm) * bm + i % bm]).collect();
                let slots_zp = (kt_n as u32).wrapping_mul(bk as u32).wrapping_mul(q.x_zero as u32);
                let has_bias = p.has_bias != 0;
                for warp in 0..wm * wn {
                    let (wmi, wni) = (warp % wm, warp / wm);
                    for lane in 0..32 {
                        for ni in 0..ni_n {
                            let n = n0 + (wni * wtn + ni * 8 + (lane & 3) * 2) as i64;
                            let ko = |e: i64| (g * kg + if n + e < kg { n + e } else { 0 }) as usize;
                            let t = [0, 1].map(|e| &buf.requant[4 * ko(e)..4 * ko(e) + 4]);
                            let cs = [0, 1].map(|e| {
                                (buf.col_sums[phase as usize * k_all as usize + ko(e)] as u32)
                                    .wrapping_mul(q.x_zero as u32)
                            });
                            let wz = [0, 1].map(|e| if wzp { buf.w_zero[ko(e)] as u32 } else { 0 });
                            for mi in 0..mi_n {
                                for h in 0..2 {
                                    let ml = wmi * wtm + mi * 16 + (lane >> 2) + h * 8;
                                    let m = m0 + ml as i64;
                                    if m >= m_total {
                                        continue;
                                    }
                                    let b = m / per;
                                    let s = m - b * per;
                                    let qd = [
                                        s / (sz[1] as i64 * sz[2] as i64),
                                        (s / sz[2] as i64) % sz[1] as i64,
                                        s % sz[2] as i64,
                                    ];
                                    let o =
                                        [0, 1, 2]
                                            .map(|d| if trans { ph[d] + qd[d] * p.stride[d] as i64 } else { qd[d] });
                                    if (0..3).any(|d| o[d] >= p.out_size[d] as i64) {
                                        continue;
                                    }
                                    let o_lin = (o[0] * p.out_size[1] as i64 + o[1]) * p.out_size[2] as i64 + o[2];
                                    let mut row = 0u32;
                                    if wzp {
                                        for part in 0..rs_parts {
                                            row = row.wrapping_add(rs_smem[part * bm + ml]);
                                        }
                                        row = row.wrapping_sub(slots_zp);
                                        if mutation == Mutation::NoRowSums {
                                            row = 0;
                                        }
                                    }
                                    let mut regs = acc[((warp * 32 + lane) * mi_n + mi) * ni_n + ni];
                                    if mutation == Mutation::SwapC12 {
                                        regs.swap(1, 2);
                                    }
                                    for e in 0..2 {
                                        let mut a = (regs[h * 2 + e] as u32).wrapping_sub(cs[e]);
                                        if wzp {
                                            a = a.wrapping_sub(wz[e].wrapping_mul(row));
                                        }
                                        let code = requant(
                                            a as i32,
                                            t[e][0],
                                            t[e][1],
                                            t[e][2],
                                            has_bias,
                                            q.out_zero,
                                            q.out_floor,
                                        );
                                        let k = g * kg + n + e as i64;
                                        if n + (e as i64) < kg {
                                            let i = if p.out_nhwc != 0 {
                                                (b * p.out_spatial + o_lin) * k_all + k
                                            } else {
                                                (b * k_all + k) * p.out_spatial + o_lin
                                            };
                                            y[i as usize] = code;
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
    y
}

/// Everything one emulated forward needs from the host: the padded channels-last input (through
/// the transcription of `qc_pad_channels_u8`), the packed weight, column sums, zero points,
/// requant words and arguments, as `forward_int8` and `DeviceInt8Weights` build them.
#[allow(clippy::too_many_arguments)]
pub fn run_forward(
    p: &ConvProblem,
    w: &[i8],
    w_zero: &[i32],
    x_nchw: &[u8],
    x_zero: i32,
    table: &RequantTable,
    out_nhwc: bool,
    tile: TcTile,
    mutation: Mutation,
) -> Vec<u8> {
    let groups = p.groups;
    let cg = p.in_channels / groups;
    let in_sp: usize = p.in_size.iter().product();
    let shape = PadU8Shape {
        batch: p.batch,
        pixels: in_sp,
        groups,
        cg,
        cg_pad: imma_cg_pad(cg),
        src_nhwc: false,
        fill: x_zero as u8,
    };
    let xp = pad_u8(&pad_u8_params(shape).unwrap(), x_nchw);
    let zero = expand_zero_points(p, w_zero).unwrap();
    let wzp = zero.iter().any(|&z| z != 0);
    let packed = pack_imma(p, w);
    let cs = col_sums(p, w);
    let words = requant_words(table);
    let q = imma_params(p, Int8Epilogue::new(table, x_zero).unwrap(), out_nhwc).unwrap();
    let buf = Buffers { x: &xp, w: &packed, col_sums: &cs, w_zero: &zero, requant: &words };
    emulate(&q, tile, wzp, &buf, mutation)
}

#[cfg(test)]
#[path = "conv_imma_tests.rs"]
mod tests;
