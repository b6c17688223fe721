//! `qc_conv_wg` of `cuda/conv_wg.cu` (Hopper: wgmma fed by TMA), transcribed to run on the CPU
//! with the host's own plan ([`wg_plan`]: every tensor-map parameter the driver would get):
//!
//! * the TMA copies as the PTX ISA describes them: the im2col traversal of the pixel box
//!   (filter base + offsets, wrap to the next row / image, zero fill outside the tensor), the
//!   tiled box, both written row by row with the 128-byte swizzle of the **absolute** shared
//!   address, into stages placed where the kernel places them (dynamic base rounded up to 1024);
//! * the producer's coordinates and offsets per k-step, the consumers' descriptors
//!   (`qc_wg_desc`, decoded field by field) and the canonical K-major SW128 read of wgmma;
//! * the accumulator fragment layout (`row`, `col` of register `v` of thread `t`), checked against
//!   CuTe's `CLayout_64xN`, and the epilogue's bias, rounding and stores.
//!
//! With small integer data every sum is exact, so the emulated kernel must reproduce the f64
//! oracle rounded once to the activation dtype, bit for bit; [`Mutation`] injects the mistakes the
//! brief warns about (wrong swizzle, SBO, K advance, corner order, fragment layout, consumer
//! offset) to show that the comparison catches each. The mbarrier ring is checked by a separate
//! model ([`pipeline_model`]). What only a GPU confirms (that the hardware does what the PTX ISA
//! says) is listed in docs/gpu-results.md.

use half::{bf16, f16};

use crate::cuda::ops::conv_wg::{wg_plan, wg_stage_bytes, wg_stages, WgPlan, WG_BK, WG_BM};
use crate::dtype::DType;
use crate::oracle::conv_naive;
use crate::problem::{ConvProblem, PaddingMode};
use crate::testing::Rng;

/// A deliberate mistake in the transcription (the tests show each one changes the output).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    None,
    /// TMA writes with the 64-byte swizzle, wgmma reads with 128.
    TmaSwizzle64,
    /// Descriptor SBO 512 instead of 1024.
    Sbo512,
    /// The descriptor start is not advanced by 32 bytes per k16 step.
    NoKAdvance,
    /// The pixel-box corners passed H first instead of W first.
    CornersSwapped,
    /// The epilogue reads the fragment as if pairs were rows (`v & 1` ↔ `(v >> 1) & 1`).
    FragmentTransposed,
    /// The second consumer warpgroup starts 64 × 64 bytes (not 64 rows × 128 bytes) into A.
    ConsumerOffset,
}

/// `swizzle(a)` of the 128-, 64- and 32-byte modes on a shared-window byte address (PTX
/// tensor swizzling modes; CuTe `Swizzle<3|2|1, 4, 3>`).
pub fn swizzle(a: u32, span: u32) -> u32 {
    let mask = match span {
        128 => 7,
        64 => 3,
        32 => 1,
        _ => 0,
    };
    a ^ (((a >> 7) & mask) << 4)
}

/// `qc_wg_desc` of the kernel (start address, LBO 16, SBO 1024, 128-byte swizzle); `sbo` is a
/// parameter only for the mutation tests.
pub fn desc(saddr: u32, sbo: u32) -> u64 {
    ((saddr as u64 & 0x3FFFF) >> 4) | ((16u64 >> 4) << 16) | (((sbo as u64 & 0x3FFFF) >> 4) << 32) | (1u64 << 62)
}

/// A decoded matrix descriptor (sm_90 wgmma layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    pub start: u32,
    pub lbo: u32,
    pub sbo: u32,
    pub base_offset: u32,
    pub layout: u32,
}

/// Decodes a descriptor; panics on non-zero reserved bits.
pub fn decode(d: u64) -> Desc {
    let reserved = (3u64 << 14) | (3u64 << 30) | (7u64 << 46) | (0x3FFu64 << 52);
    assert_eq!(d & reserved, 0, "reserved descriptor bits set: {d:#x}");
    Desc {
        start: ((d & 0x3FFF) << 4) as u32,
        lbo: (((d >> 16) & 0x3FFF) << 4) as u32,
        sbo: (((d >> 32) & 0x3FFF) << 4) as u32,
        base_offset: ((d >> 49) & 7) as u32,
        layout: (d >> 62) as u32,
    }
}

/// Row and column of accumulator register `v` of thread `t` of a warpgroup (m64nN, f32).
pub fn fragment(t: usize, v: usize) -> (usize, usize) {
    let (warp, lane) = (t / 32, t % 32);
    (16 * warp + lane / 4 + 8 * ((v >> 1) & 1), 8 * (v >> 2) + 2 * (lane % 4) + (v & 1))
}

/// Emulated shared memory: absolute shared-window addresses `0 .. len`.
struct Smem(Vec<u8>);

impl Smem {
    fn put16(&mut self, addr: u32, span: u32, v: u16) {
        let a = swizzle(addr, span) as usize;
        self.0[a..a + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn get16(&self, addr: u32) -> u16 {
        let a = swizzle(addr, 128) as usize;
        u16::from_le_bytes([self.0[a], self.0[a + 1]])
    }
}

/// One im2col TMA load (PTX `cp.async.bulk.tensor.*.im2col`) of `plan.act` from `x` (element
/// bits at the byte offsets the map's strides give) to `dst`: `coords` = {c, w, h, d, n}
/// (innermost first, `rank` of them), `offs` = {ow, oh, od}.
fn tma_im2col(plan: &WgPlan, x: &[u16], coords: &[i64; 5], offs: [i64; 3], sm: &mut Smem, dst: u32, m: Mutation) {
    let a = &plan.act;
    let sp = a.rank as usize - 2;
    let es = plan.elem_bytes as i64;
    let (mut lower, mut upper) = (a.lower, a.upper);
    if m == Mutation::CornersSwapped && sp >= 2 {
        lower.swap(0, 1);
        upper.swap(0, 1);
    }
    let dim = |i: usize| a.global_dim[i] as i64;
    // The filter base: spatial coordinates then the image.
    let mut pos: Vec<i64> = (0..sp).map(|i| coords[1 + i]).collect();
    let mut img = coords[1 + sp];
    let span = if m == Mutation::TmaSwizzle64 { 64 } else { 128 };
    for p in 0..a.pixels_per_column as i64 {
        let src: Vec<i64> = (0..sp).map(|i| pos[i] + offs[i]).collect();
        let inside = img < dim(sp + 1) && (0..sp).all(|i| (0..dim(1 + i)).contains(&src[i]));
        for j in 0..a.channels_per_pixel as i64 {
            let c = coords[0] + j;
            let v = if inside && (0..dim(0)).contains(&c) {
                let mut off = c * es + img * a.global_strides[sp] as i64;
                for (i, &s) in src.iter().enumerate() {
                    off += s * a.global_strides[i] as i64;
                }
                x[(off / es) as usize]
            } else {
                0
            };
            sm.put16(dst + (p * a.channels_per_pixel as i64 * es + j * es) as u32, span, v);
        }
        // Advance over the box with the traversal strides: W, then H, then D, then the image.
        let mut i = 0;
        loop {
            if i == sp {
                img += 1;
                break;
            }
            pos[i] += a.element_strides[1 + i] as i64;
            if pos[i] < dim(1 + i) + upper[i] as i64 {
                break;
            }
            pos[i] = lower[i] as i64;
            i += 1;
        }
    }
}

/// One tiled TMA load of `plan.wgt` (rank 3, box {64, 1, bn}) at `at` = {c0, tap, n0}.
fn tma_tile(plan: &WgPlan, w: &[u16], at: [i64; 3], sm: &mut Smem, dst: u32, m: Mutation) {
    let [c0, tap, n0] = at;
    let t = &plan.wgt;
    let es = plan.elem_bytes as i64;
    let span = if m == Mutation::TmaSwizzle64 { 64 } else { 128 };
    for r in 0..t.box_dim[2] as i64 {
        for j in 0..t.box_dim[0] as i64 {
            let (c, n) = (c0 + j, n0 + r);
            let inside = c < t.global_dim[0] as i64 && tap < t.global_dim[1] as i64 && n < t.global_dim[2] as i64;
            let v = if inside {
                let off = c * es + tap * t.global_strides[0] as i64 + n * t.global_strides[1] as i64;
                w[(off / es) as usize]
            } else {
                0
            };
            sm.put16(dst + (r * 128 + j * es) as u32, span, v);
        }
    }
}

/// `wgmma.mma_async.m64nNk16` with both operands in shared memory (K-major, 128-byte swizzle):
/// `d[t][v] (+)= Σ_k A[row][k] · B[col][k]` for the fragment's (row, col).
fn wgmma(sm: &Smem, da: u64, db: u64, n: usize, d: &mut [[f32; 64]], scale_d: bool, cvt: fn(u16) -> f32) {
    let (a, b) = (decode(da), decode(db));
    for x in [a, b] {
        assert_eq!((x.layout, x.base_offset, x.lbo), (1, 0, 16), "{x:?}");
        assert_eq!(x.start % 16, 0);
    }
    // The canonical K-major SW128 element (row r, k) of a 16-deep step: 16-byte chunk k / 8.
    let read = |x: Desc, r: usize, k: usize| {
        let pre = x.start + (r % 8) as u32 * 128 + (r / 8) as u32 * x.sbo + (k / 8) as u32 * 16 + (k % 8) as u32 * 2;
        cvt(sm.get16(pre))
    };
    let av: Vec<[f32; 16]> = (0..64).map(|r| std::array::from_fn(|k| read(a, r, k))).collect();
    let bv: Vec<[f32; 16]> = (0..n).map(|r| std::array::from_fn(|k| read(b, r, k))).collect();
    for (t, dt) in d.iter_mut().enumerate() {
        for (v, acc) in dt.iter_mut().enumerate().take(n / 2) {
            let (r, c) = fragment(t, v);
            let sum: f32 = (0..16).map(|k| av[r][k] * bv[c][k]).sum();
            *acc = if scale_d { *acc + sum } else { sum };
        }
    }
}

/// Runs the whole grid; `x` channels-last, `w` packed `[K][row]`, both as element bits. Returns
/// `y` channels-last (`out_nhwc`) or NCHW, as element bits.
#[allow(clippy::too_many_arguments)]
fn emulate(
    pr: &ConvProblem,
    plan: &WgPlan,
    dtype: DType,
    x: &[u16],
    w: &[u16],
    bias: Option<&[f32]>,
    out_nhwc: bool,
    raw_base: u32,
    m: Mutation,
) -> Vec<u16> {
    let cvt: fn(u16) -> f32 = match dtype {
        DType::BF16 => |b| bf16::from_bits(b).to_f32(),
        _ => |b| f16::from_bits(b).to_f32(),
    };
    let round: fn(f32) -> u16 = match dtype {
        DType::BF16 => |v| bf16::from_f32(v).to_bits(),
        _ => |v| f16::from_f32(v).to_bits(),
    };
    let out_sp: i64 = pr.out_size.iter().map(|&v| v as i64).product();
    let (m_total, kk) = (pr.batch as i64 * out_sp, pr.out_channels as i64);
    let mut y = vec![0u16; (m_total * kk) as usize];
    // The kernel's layout: base rounded up to 1024, stage s at base + s * 32 KiB (A, then B).
    let smem = (raw_base + 1023) & !1023;
    assert_eq!(smem % 1024, 0);
    let (bn, stages, stage_bytes) = (plan.bn, wg_stages(plan.bn), wg_stage_bytes(plan.bn));
    let mut sm = Smem(vec![0u8; (smem + stages * stage_bytes) as usize]);
    let a_bytes = WG_BM * WG_BK * 2;
    let kdim = pr.kernel.map(|v| v as i64);
    let (dil, stride, pad) = (pr.dilation.map(|v| v as i64), pr.stride.map(|v| v as i64), pr.pad.map(|v| v as i64));
    let osz = pr.out_size.map(|v| v as i64);
    for bx in 0..plan.grid.0 as i64 {
        for by in 0..plan.grid.1 as i64 {
            // ---- qc_wg_produce's coordinates (per block), then per k-step ----
            let m0 = bx * WG_BM as i64;
            let n0 = by * bn as i64;
            let img = m0 / out_sp;
            let mut rest = m0 - img * out_sp;
            let q = rest % osz[2];
            rest /= osz[2];
            let (o1, o0) = (rest % osz[1], rest / osz[1]);
            let (bw, bh, bd) = (q * stride[2] - pad[2], o1 * stride[1] - pad[1], o0 * stride[0] - pad[0]);
            let mut d = [[[0f32; 64]; 128]; 2];
            for kt in 0..plan.k_steps as i64 {
                let s = (kt % stages as i64) as u32;
                let tap = kt / plan.c_chunks as i64;
                let ch = (kt - tap * plan.c_chunks as i64) * WG_BK as i64;
                let (t0, t1, t2) = (tap / (kdim[1] * kdim[2]), (tap / kdim[2]) % kdim[1], tap % kdim[2]);
                let offs = [t2 * dil[2], t1 * dil[1], t0 * dil[0]];
                let a_dst = smem + s * stage_bytes;
                let coords = match plan.spatial_dims {
                    3 => [ch, bw, bh, bd, img],
                    2 => [ch, bw, bh, img, 0],
                    _ => [ch, bw, img, 0, 0],
                };
                tma_im2col(plan, x, &coords, offs, &mut sm, a_dst, m);
                tma_tile(plan, w, [ch, tap, n0], &mut sm, a_dst + a_bytes, m);
                // ---- both consumer warpgroups: 4 wgmma k16 steps on this stage ----
                for (cw, dc) in d.iter_mut().enumerate() {
                    let row_bytes = if m == Mutation::ConsumerOffset { 64 } else { 128 };
                    let a = smem + s * stage_bytes + cw as u32 * 64 * row_bytes;
                    let b = smem + s * stage_bytes + a_bytes;
                    let sbo = if m == Mutation::Sbo512 { 512 } else { 1024 };
                    for k in 0..4u32 {
                        let adv = if m == Mutation::NoKAdvance { 0 } else { 32 * k };
                        wgmma(&sm, desc(a + adv, sbo), desc(b + adv, sbo), bn as usize, dc, kt > 0 || k > 0, cvt);
                    }
                }
            }
            // ---- the epilogue of qc_wg_consume ----
            for (cw, dc) in d.iter().enumerate() {
                for (t, dt) in dc.iter().enumerate() {
                    let (warp, lane) = ((t >> 5) as i64, (t & 31) as i64);
                    for h in 0..2i64 {
                        let mm = bx * WG_BM as i64 + 64 * cw as i64 + 16 * warp + (lane >> 2) + 8 * h;
                        if mm >= m_total {
                            continue;
                        }
                        let im = mm / out_sp;
                        let o_lin = mm - im * out_sp;
                        let base = if out_nhwc { mm * kk } else { im * kk * out_sp + o_lin };
                        let kstride = if out_nhwc { 1 } else { out_sp };
                        for j in 0..(bn / 8) as i64 {
                            let n = n0 + 8 * j + 2 * (lane & 3);
                            let (i0, i1) = if m == Mutation::FragmentTransposed {
                                (4 * j + h, 4 * j + h + 2)
                            } else {
                                (4 * j + 2 * h, 4 * j + 2 * h + 1)
                            };
                            let (mut v0, mut v1) = (dt[i0 as usize], dt[i1 as usize]);
                            if let Some(bias) = bias {
                                if n < kk {
                                    v0 += bias[n as usize];
                                }
                                if n + 1 < kk {
                                    v1 += bias[n as usize + 1];
                                }
                            }
                            let i0 = base + n * kstride;
                            if n < kk {
                                y[i0 as usize] = round(v0);
                            }
                            if n + 1 < kk {
                                y[(i0 + kstride) as usize] = round(v1);
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

/// A forward problem from its 3-d sizes (leading 1s for 1-d and 2-d): out from the usual
/// formula plus `extra` trailing outputs per dimension ('same' padding's extra element).
#[allow(clippy::too_many_arguments)]
fn problem(
    n: usize,
    c: usize,
    k: usize,
    in_size: [usize; 3],
    kernel: [usize; 3],
    stride: [usize; 3],
    pad: [usize; 3],
    dil: [usize; 3],
    extra: [usize; 3],
) -> ConvProblem {
    let out =
        std::array::from_fn(|d| (in_size[d] + 2 * pad[d] - dil[d] * (kernel[d] - 1) - 1) / stride[d] + 1 + extra[d]);
    ConvProblem {
        transposed: false,
        batch: n,
        in_channels: c,
        out_channels: k,
        groups: 1,
        in_size,
        out_size: out,
        kernel,
        stride,
        pad,
        dilation: dil,
        pad_mode: PaddingMode::Zeros,
    }
}

/// Runs `pr` through the emulated kernel with random small integers and compares with the f64
/// oracle rounded once; returns `false` on any difference (the caller asserts).
fn matches_oracle(pr: &ConvProblem, dtype: DType, out_nhwc: bool, raw_base: u32, m: Mutation, seed: u64) -> bool {
    let plan = wg_plan(pr, dtype).unwrap_or_else(|e| panic!("{pr:?}: {e}"));
    let mut rng = Rng::new(seed);
    let int = |rng: &mut Rng| rng.range(0, 7) as f32 - 3.0;
    let taps: usize = pr.kernel.iter().product();
    let in_sp: usize = pr.in_size.iter().product();
    let out_sp: usize = pr.out_size.iter().product();
    let (c, k) = (pr.in_channels, pr.out_channels);
    let xn: Vec<f32> = (0..pr.batch * c * in_sp).map(|_| int(&mut rng)).collect(); // NCHW
    let wm: Vec<f32> = (0..k * c * taps).map(|_| int(&mut rng)).collect(); // [K][C][taps]
    let bias: Vec<f32> = (0..k).map(|_| int(&mut rng) * 8.0).collect();
    let bits: fn(f32) -> u16 = match dtype {
        DType::BF16 => |v| bf16::from_f32(v).to_bits(),
        _ => |v| f16::from_f32(v).to_bits(),
    };
    let mut xl = vec![0u16; xn.len()];
    for b in 0..pr.batch {
        for s in 0..in_sp {
            for ci in 0..c {
                xl[(b * in_sp + s) * c + ci] = bits(xn[(b * c + ci) * in_sp + s]);
            }
        }
    }
    let row = plan.wgt.global_strides[1] as usize / 2;
    let mut packed = vec![0u16; k * row];
    for ko in 0..k {
        for ci in 0..c {
            for t in 0..taps {
                packed[ko * row + t * c + ci] = bits(wm[(ko * c + ci) * taps + t]);
            }
        }
    }
    let got = emulate(pr, &plan, dtype, &xl, &packed, Some(&bias), out_nhwc, raw_base, m);
    let want = conv_naive(pr, &wm, Some(&bias), &xn); // NCHW, f64, exact
    for b in 0..pr.batch {
        for s in 0..out_sp {
            for ko in 0..k {
                let g = if out_nhwc { got[(b * out_sp + s) * k + ko] } else { got[(b * k + ko) * out_sp + s] };
                if g != bits(want[(b * k + ko) * out_sp + s] as f32) {
                    return false;
                }
            }
        }
    }
    true
}

/// The cases: 1-d, 2-d and 3-d; padding, stride, dilation, 'same' padding's extra output;
/// C not a multiple of 64 (channel OOB fill) and above 64 (two chunks per tap); both tiles:
/// K <= 64 (128x64), K = 100 (one ragged 128-wide tile) and 136 (two, a ragged one); M tails and
/// tiles that wrap rows and images.
fn cases() -> Vec<ConvProblem> {
    vec![
        problem(2, 16, 24, [1, 9, 7], [1, 3, 3], [1, 1, 1], [0, 1, 1], [1, 1, 1], [0; 3]),
        problem(3, 72, 136, [1, 6, 11], [1, 3, 2], [1, 2, 1], [0, 1, 0], [1, 1, 2], [0; 3]),
        problem(2, 8, 16, [1, 8, 8], [1, 4, 4], [1, 1, 1], [0, 1, 1], [1, 1, 1], [0, 1, 1]),
        problem(2, 24, 8, [1, 1, 40], [1, 1, 5], [1, 1, 3], [0, 0, 2], [1, 1, 2], [0; 3]),
        problem(1, 16, 16, [4, 5, 6], [3, 2, 3], [2, 1, 1], [1, 0, 1], [1, 1, 1], [0; 3]),
        problem(2, 8, 32, [1, 12, 12], [1, 7, 7], [1, 2, 2], [0, 3, 3], [1, 1, 1], [0; 3]),
        problem(2, 32, 100, [1, 5, 9], [1, 3, 3], [1, 1, 1], [0, 1, 1], [1, 1, 1], [0; 3]),
    ]
}

#[test]
fn descriptor_fields_swizzle_and_fragments() {
    // Field positions: start / LBO / SBO >> 4 at bits 0, 16, 32; layout code 1 at 62.
    let d = desc(0x1_2340, 1024);
    assert_eq!(d & 0x3FFF, 0x1234);
    assert_eq!((d >> 16) & 0x3FFF, 1);
    assert_eq!((d >> 32) & 0x3FFF, 64);
    assert_eq!(d >> 62, 1);
    assert_eq!(decode(d), Desc { start: 0x1_2340, lbo: 16, sbo: 1024, base_offset: 0, layout: 1 });
    // The +32-byte K advance changes the start field by 2 and nothing else.
    assert_eq!(desc(0x1_2340 + 32, 1024) - d, 2);
    for a in [0u32, 1024, 0x3_FC00] {
        assert_eq!(decode(desc(a, 1024)).start, a);
    }
    // Swizzles: the PTX tables (row y holds chunk x ^ (y mod 8/4/2)) and bijections per repeat.
    for (span, repeat, modulo) in [(128u32, 1024u32, 8u32), (64, 512, 4), (32, 256, 2)] {
        let mut seen = vec![false; repeat as usize];
        for a in (0..repeat).step_by(16) {
            let (y, x) = (a / 128, (a / 16) % 8);
            assert_eq!(swizzle(a, span), y * 128 + ((x ^ (y % modulo)) * 16));
            let s = swizzle(a, span) as usize;
            assert!(!seen[s]);
            seen[s] = true;
        }
    }
    // TMA write == wgmma read: element (row r, k) of k-step ks, for a 1024-aligned tile.
    for base in [0u32, 1024, 7 * 1024] {
        for r in 0..128u32 {
            for ks in 0..4u32 {
                for kk in 0..16u32 {
                    let tma = swizzle(base + r * 128 + (16 * ks + kk) * 2, 128);
                    let x = decode(desc(base + 32 * ks, 1024));
                    let wg = swizzle(x.start + (r % 8) * 128 + (r / 8) * x.sbo + (kk / 8) * 16 + (kk % 8) * 2, 128);
                    assert_eq!(tma, wg);
                }
            }
        }
    }
    // Fragments: CuTe's CLayout_64xN = ((4,8,4),(2,2,N/8)) : ((128,1,16),(64,8,512)), index = m + 64 n,
    // and every (row, col) of the 64x128 tile owned exactly once.
    let mut owned = vec![0u8; 64 * 128];
    for t in 0..128 {
        for v in 0..64 {
            let (t0, t1, t2) = (t % 4, (t / 4) % 8, t / 32);
            let (v0, v1, v2) = (v % 2, (v / 2) % 2, v / 4);
            let idx = 128 * t0 + t1 + 16 * t2 + 64 * v0 + 8 * v1 + 512 * v2;
            let (r, c) = fragment(t, v);
            assert_eq!((r, c), (idx % 64, idx / 64), "t {t} v {v}");
            owned[r * 128 + c] += 1;
        }
    }
    assert!(owned.iter().all(|&o| o == 1));
}

#[test]
#[should_panic(expected = "reserved descriptor bits")]
fn reserved_descriptor_bits_are_rejected() {
    decode(desc(1024, 1024) | (1 << 46));
}

#[test]
fn the_emulated_kernel_reproduces_the_oracle() {
    for (i, pr) in cases().iter().enumerate() {
        for (dtype, out_nhwc) in [(DType::F16, true), (DType::BF16, false)] {
            // The dynamic base may come anywhere; the kernel rounds it up to 1024.
            let raw_base = [16u32, 1024, 1040][i % 3];
            let ok = matches_oracle(pr, dtype, out_nhwc, raw_base, Mutation::None, 7 + i as u64);
            assert!(ok, "case {i} {dtype} nhwc {out_nhwc}: {pr:?}");
        }
    }
}

#[test]
fn injected_mistakes_are_caught() {
    let all = cases();
    for m in [
        Mutation::TmaSwizzle64,
        Mutation::Sbo512,
        Mutation::NoKAdvance,
        Mutation::CornersSwapped,
        Mutation::FragmentTransposed,
        Mutation::ConsumerOffset,
    ] {
        let caught = all.iter().any(|pr| !matches_oracle(pr, DType::F16, true, 16, m, 3));
        assert!(caught, "{m:?} went unnoticed");
    }
}

#[test]
fn the_im2col_traversal_is_the_convolution_gather() {
    // Per (tile, tap, chunk) the kernel issues, every row of the A box holds x at
    // (n, o * stride - pad + tap * dilation, c) or zero: checked directly on the smem image,
    // for an asymmetric case (different strides, pads, dilations per dimension, batch wrap).
    let pr = problem(3, 16, 8, [1, 7, 10], [1, 3, 2], [1, 2, 1], [0, 1, 0], [1, 1, 3], [0; 3]);
    let plan = wg_plan(&pr, DType::F16).unwrap();
    let in_sp = 70usize;
    let x: Vec<u16> = (0..3 * in_sp * 16).map(|i| i as u16 + 1).collect(); // distinct, non-zero
    let out = pr.out_size;
    let out_sp = (out[1] * out[2]) as i64;
    for bx in 0..plan.grid.0 as i64 {
        let m0 = bx * 128;
        let (img, q, o1) = (m0 / out_sp, (m0 % out_sp) % out[2] as i64, (m0 % out_sp) / out[2] as i64);
        for tap in 0..6i64 {
            let (t1, t2) = (tap / 2, tap % 2);
            let mut sm = Smem(vec![0u8; 16384]);
            let coords = [0, q, o1 * 2 - 1, img, 0];
            tma_im2col(&plan, &x, &coords, [t2 * 3, t1, 0], &mut sm, 0, Mutation::None);
            for p in 0..128i64 {
                let mm = m0 + p;
                let (n, s) = (mm / out_sp, mm % out_sp);
                let (oh, ow) = (s / out[2] as i64, s % out[2] as i64);
                let (ih, iw) = (oh * 2 - 1 + t1, ow + t2 * 3);
                for c in 0..16i64 {
                    let want = if n < 3 && (0..7).contains(&ih) && (0..10).contains(&iw) {
                        x[((n * 7 + ih) * 10 + iw) as usize * 16 + c as usize]
                    } else {
                        0
                    };
                    assert_eq!(sm.get16((p * 128 + c * 2) as u32), want, "tile {bx} tap {tap} row {p} c {c}");
                }
                // Channels 16..63 of the box are past C: zero fill.
                assert_eq!(sm.get16((p * 128 + 40) as u32), 0);
            }
        }
    }
}

/// A mistake injected into [`pipeline_model`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipeBug {
    None,
    /// The producer waits on `empty` with the consumers' parity (no `^ 1` for a fresh barrier).
    ProducerParity,
    /// The consumers release a stage when they issue its wgmma, not after `wait_group 1`.
    ReleaseCurrent,
}

/// The mbarrier ring of `qc_conv_wg` as a state machine: the producer (waits `empty[s]` with
/// parity `phase ^ 1`, then fills), two consumers (wait `full[s]` with `phase`, issue a wgmma
/// group that reads the stage until the next iteration's `wait_group 1` (or the final
/// `wait_group 0`), then arrive on the previous stage's `empty`: the kernel's 128 arrivals per
/// warpgroup (count 256) are one arrival per consumer here (count 2)). Every interleaving a seeded
/// scheduler picks must finish (no deadlock) without the producer overwriting a stage a group
/// still reads. Returns the number of steps taken. `bug` injects a mistake (see the test).
pub fn pipeline_model(stages: usize, k_steps: usize, seed: u64, bug: PipeBug) -> usize {
    // Barrier: (phase bit, pending arrivals, expected count).
    #[derive(Clone, Copy)]
    struct Bar {
        phase: u32,
        pending: u32,
        count: u32,
    }
    impl Bar {
        fn arrive(&mut self) {
            self.pending -= 1;
            if self.pending == 0 {
                self.phase ^= 1;
                self.pending = self.count;
            }
        }
        /// try_wait.parity: true once the phase with this parity has completed.
        fn done(&self, parity: u32) -> bool {
            self.phase != parity
        }
    }
    let mut full = vec![Bar { phase: 0, pending: 1, count: 1 }; stages];
    let mut empty = vec![Bar { phase: 0, pending: 2, count: 2 }; stages];
    // readers[s]: wgmma groups currently reading stage s; filled[s]: the k-step it holds.
    let mut readers = vec![0u32; stages];
    let mut filled = vec![usize::MAX; stages];
    let mut prod = 0usize;
    // Consumer state: next k-step, and the k-step of its in-flight group (if any).
    let mut cons = [(0usize, None::<usize>); 2];
    let mut rng = Rng::new(seed);
    let mut steps = 0;
    while prod < k_steps || cons.iter().any(|c| c.0 < k_steps || c.1.is_some()) {
        steps += 1;
        assert!(steps < 100_000, "deadlock: producer {prod}, consumers {cons:?}");
        match rng.range(0, 3) {
            0 if prod < k_steps => {
                let s = prod % stages;
                let flip = if bug == PipeBug::ProducerParity { 0 } else { 1 };
                if empty[s].done(((prod / stages) as u32 & 1) ^ flip) {
                    assert_eq!(readers[s], 0, "stage {s} overwritten while read (k-step {prod})");
                    filled[s] = prod;
                    full[s].arrive(); // arrive.expect_tx, then the transaction completes
                    prod += 1;
                }
            }
            who @ (1 | 2) => {
                let c = &mut cons[who - 1];
                if c.0 < k_steps {
                    let kt = c.0;
                    let s = kt % stages;
                    if full[s].done((kt / stages) as u32 & 1) {
                        assert_eq!(filled[s], kt, "consumer read stage {s} holding another k-step");
                        readers[s] += 1;
                        if bug == PipeBug::ReleaseCurrent {
                            // Released at issue: the group may still be reading.
                            empty[s].arrive();
                        }
                        // wait_group 1: the previous group is done; release its stage.
                        if let Some(prev) = c.1 {
                            readers[prev % stages] -= 1;
                            if bug != PipeBug::ReleaseCurrent {
                                empty[prev % stages].arrive();
                            }
                        }
                        c.1 = Some(kt);
                        c.0 += 1;
                    }
                } else if let Some(prev) = c.1.take() {
                    // wait_group 0 after the loop (the kernel does not arrive: nothing refills).
                    readers[prev % stages] -= 1;
                }
            }
            _ => {}
        }
    }
    steps
}

#[test]
fn the_mbarrier_ring_neither_deadlocks_nor_overwrites() {
    for k_steps in [1, 2, 5, 6, 7, 13, 40] {
        for seed in 0..20 {
            pipeline_model(wg_stages(128) as usize, k_steps, seed, PipeBug::None);
            pipeline_model(wg_stages(64) as usize, k_steps, seed, PipeBug::None);
        }
    }
    // The smallest ring that works with one wgmma group in flight: two stages.
    pipeline_model(2, 9, 1, PipeBug::None);
    // The model catches the two classic mistakes: a producer parity that waits forever, and a
    // release before the reads are done (the producer refills a stage a group still reads).
    let fails = |bug| {
        (0..20).any(|seed| std::panic::catch_unwind(|| pipeline_model(wg_stages(128) as usize, 13, seed, bug)).is_err())
    };
    assert!(fails(PipeBug::ProducerParity) && fails(PipeBug::ReleaseCurrent));
}
