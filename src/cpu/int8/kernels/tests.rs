//! Tests of the int8 kernels: every level's GEMM blocks and depthwise lines against the portable
//! ones on random operands, every level's epilogues against the scalar epilogue and the
//! requantization table on edge values, and the level detection.

use super::*;
use crate::quant::{RequantParams, RequantTable, WeightScales};
use crate::testing::Rng;

/// Runs `f` with the kernels of every level this CPU has.
fn each_level(mut f: impl FnMut(Int8Isa, &dyn Fn(&mut dyn FnMut(Probe)))) {
    for level in Int8Isa::available() {
        let run = |g: &mut dyn FnMut(Probe)| level.dispatch(ProbeJob(g));
        f(level, &run);
    }
}

#[allow(clippy::type_complexity)]
/// A kernel behind a `dyn` for the tests: the three operations, monomorphised per level.
struct Probe<'a> {
    gemm: &'a dyn Fn(usize, ARows<'_>, &KPlan, &[i8], &[usize], &mut AccTile),
    tile: &'a dyn Fn(&AccTile, usize, &[i32], &Epi<'_>, std::ops::Range<usize>, (&mut [u8], usize)),
    line: &'a dyn Fn(&[i32], &EpiChannel, &mut [u8]),
    dw: &'a dyn Fn(&[i32], &[(usize, i32)], &mut [i32]),
    pairs: &'a dyn Fn(&[u8], i32, usize, &mut [i32]),
    mr: usize,
    unit: usize,
}

struct ProbeJob<'g>(&'g mut dyn FnMut(Probe));

impl WithInt8Kernel for ProbeJob<'_> {
    type Output = ();
    fn run<K: Int8Kernel>(self, k: K) {
        (self.0)(Probe {
            gemm: &|m, a, plan, b, panels, acc| k.gemm(m, a, plan, b, panels, acc),
            tile: &|acc, m, rs, ep, chans, dst| k.requant_tile(acc, m, rs, ep, chans, dst),
            line: &|acc, ch, out| k.requant_line(acc, ch, out),
            dw: &|p, taps, acc| k.dw_line(p, taps, acc),
            pairs: &|src, zp, delta, dst| k.pair_row(src, zp, delta, dst),
            mr: K::MR,
            unit: K::UNIT,
        })
    }
}

#[test]
fn levels() {
    assert!(Int8Isa::supported(Int8Isa::Portable));
    assert!(Int8Isa::best().supported());
    assert_eq!(Int8Isa::available().first(), Some(&Int8Isa::Portable));
    if Int8Isa::Amx.supported() {
        assert_eq!(Int8Isa::best(), Int8Isa::Amx);
    } else if CpuFeatures::get().avx512_vnni() {
        assert_eq!(Int8Isa::best(), Int8Isa::Avx512Vnni);
    }
    for l in Int8Isa::ALL {
        assert!(!l.name().is_empty());
    }
}

#[test]
fn gemm_blocks_match_scalar_sums() {
    let mut rng = Rng::new(11);
    for _ in 0..40 {
        let lda = rng.range(4, 40) * 4;
        let nruns = rng.range(0, 5);
        // Run shapes in 4-byte quads; each kernel gets them in its own unit.
        let shapes: Vec<(usize, usize, usize)> =
            (0..nruns).map(|i| (rng.range(0, 30) * 4, i * 8 + rng.range(0, 3), rng.range(1, 5))).collect();
        let a: Vec<u8> = (0..lda * 40 + 2400).map(|_| rng.next_u64() as u8).collect();
        let b: Vec<i8> = (0..64 * 16 * 48 + 64 * 16 * 12).map(|_| rng.next_u64() as i8).collect();
        let a0 = rng.range(0, 16);
        let pq = [rng.range(0, 10), rng.range(0, 10)];
        each_level(|level, run| {
            run(&mut |k: Probe| {
                let u = k.unit / 4; // quads per unit
                let runs: Vec<KRun> =
                    shapes.iter().map(|&(ra, rb, n)| KRun { a: ra, b: rb * u * 64, units: n }).collect();
                let plan = KPlan::new(k.unit, runs.clone());
                let panels = [pq[0] * u * 64, pq[1] * u * 64];
                for np in 1..=2 {
                    for m in [1, 2, 5, 16, 17, k.mr.min(14), k.mr] {
                        if m > k.mr {
                            continue;
                        }
                        let mut acc = AccTile::new();
                        (k.gemm)(m, ARows { data: &a, a0, lda }, &plan, &b, &panels[..np], &mut acc);
                        for i in 0..m {
                            for (p, &panel) in panels.iter().enumerate().take(np) {
                                for j in 0..16 {
                                    let mut want = 0i32;
                                    for r in &runs {
                                        for kk in 0..r.units * k.unit {
                                            let x = a[a0 + i * lda + r.a + kk] as i32;
                                            let w = b[panel + r.b + (kk / 4) * 64 + 4 * j + kk % 4] as i32;
                                            want += x * w;
                                        }
                                    }
                                    let got = acc.0[i * ACC_PITCH + 16 * p + j];
                                    assert_eq!(got, want, "{level:?} m {m} row {i} panel {p} ch {j}");
                                }
                            }
                        }
                    }
                }
            })
        });
    }
}

#[test]
fn pair_rows_match_scalar() {
    let mut rng = Rng::new(14);
    for _ in 0..50 {
        let n = rng.range(0, 100);
        let delta = rng.range(1, 5);
        let src: Vec<u8> = (0..n + delta + rng.range(0, 3)).map(|_| rng.next_u64() as u8).collect();
        let zp = rng.range(0, 255) as i32;
        let want: Vec<i32> = (0..n)
            .map(|v| {
                let (lo, hi) = ((src[v] as i32 - zp) as u16 as u32, (src[v + delta] as i32 - zp) as u16 as u32);
                (lo | (hi << 16)) as i32
            })
            .collect();
        each_level(|level, run| {
            run(&mut |k: Probe| {
                let mut dst = vec![0; n];
                (k.pairs)(&src, zp, delta, &mut dst);
                assert_eq!(dst, want, "{level:?}");
            })
        });
    }
}

#[test]
fn gemm_rejects_reads_out_of_bounds() {
    let plan = KPlan::new(4, vec![KRun { a: 8, b: 0, units: 2 }]);
    let (a32, a31) = ([0u8; 32], [0u8; 31]);
    let rows = |data, a0, lda| ARows { data, a0, lda };
    assert!(plan.fits(2, &rows(&a32, 0, 16), &[0], 128));
    assert!(!plan.fits(2, &rows(&a31, 0, 16), &[0], 128));
    assert!(!plan.fits(2, &rows(&a32, 0, 16), &[1], 128));
    assert!(!plan.fits(usize::MAX, &rows(&a32, 1, usize::MAX), &[0], 128));
    assert!(plan.fits(0, &rows(&[], usize::MAX, 16), &[], 0));
}

#[test]
fn depthwise_lines_match_scalar() {
    let mut rng = Rng::new(12);
    for _ in 0..60 {
        let n = rng.range(0, 150);
        let p: Vec<i32> = (0..n + 80)
            .map(|_| {
                let (a, b) = (rng.range(0, 510) as i32 - 255, rng.range(0, 510) as i32 - 255);
                (a as u16 as u32 | ((b as u16 as u32) << 16)) as i32
            })
            .collect();
        let taps: Vec<(usize, i32)> = (0..rng.range(0, 9))
            .map(|_| {
                let (a, b) = (rng.range(0, 510) as i32 - 255, rng.range(0, 510) as i32 - 255);
                (rng.range(0, 80), (a as u16 as u32 | ((b as u16 as u32) << 16)) as i32)
            })
            .collect();
        let want: Vec<i32> = (0..n).map(|m| taps.iter().map(|&(o, w)| dot2(p[o + m], w)).sum()).collect();
        each_level(|level, run| {
            run(&mut |k: Probe| {
                let mut acc = vec![7; n];
                (k.dw)(&p, &taps, &mut acc);
                assert_eq!(acc, want, "{level:?}");
            })
        });
    }
}

/// Tables with edge qparams: ties (`mult = 0.5`), huge and tiny output scales (int32
/// overflow), zero and negative scales (±inf, NaN multipliers), NaN/±inf/±0/huge biases, per
/// tensor (fused bias) and per channel (divided bias), ReLU and zero points 0/255.
fn edge_tables() -> Vec<RequantTable> {
    let mut out = Vec::new();
    let biases: Vec<f32> = vec![0.0, -0.0, 0.3, -7.25, f32::NAN, f32::INFINITY, -1e30, 1e-30, 2.5, 1e9];
    let k = biases.len();
    for &(x, w, o) in &[
        (0.5, 0.5, 0.5),
        (2.0 / 127.0, 0.0037, 0.011),
        (0.01, 0.01, 1e-12),
        (0.01, 0.0, 0.1),
        (0.01, -0.02, 0.1),
        (0.01, 0.02, 0.0),
        (0.01, 0.02, -0.3),
        (1e6, 1e6, 1e-3),
        (f32::from_bits(0x38bc_8fac) as f64, 1.0, f32::from_bits(0x38bc_8fac) as f64),
    ] {
        for per_channel in [false, true] {
            for (zp, relu, bias) in [(0, false, true), (255, false, true), (77, true, true), (128, false, false)] {
                let ws = vec![w; k];
                let p = RequantParams {
                    input_scale: x,
                    weight_scales: if per_channel { WeightScales::PerChannel(&ws) } else { WeightScales::PerTensor(w) },
                    output_scale: o,
                    output_zero_point: zp,
                    bias: bias.then_some(&biases[..]),
                    relu,
                };
                out.push(RequantTable::new(false, k, 1, &p).unwrap());
            }
        }
    }
    out
}

#[test]
fn epilogues_match_requant_table_on_edges() {
    let accs: Vec<i32> = vec![
        0,
        1,
        -1,
        2,
        3,
        -3,
        5,
        7,
        127,
        -128,
        32767,
        -32768,
        65_025,
        (1 << 24) + 1,
        -(1 << 24) - 3,
        i32::MAX,
        i32::MIN,
        i32::MIN + 1,
        123_456_789,
        -987_654,
    ];
    let mut rng = Rng::new(13);
    for t in edge_tables() {
        let k = t.out_channels();
        let (mult, ba, bb) = t.lanes();
        let corr: Vec<i32> = (0..k + 32).map(|o| if o < k { rng.range(0, 2000) as i32 - 1000 } else { 0 }).collect();
        let wzp: Vec<i32> = (0..k + 32).map(|o| if o < k { rng.range(0, 255) as i32 - 128 } else { 0 }).collect();
        let ep = Epi {
            mult,
            ba,
            bb,
            corr: &corr,
            wzp: &wzp,
            has_bias: t.has_bias(),
            zp: t.output_zero_point(),
            lo: t.floor(),
        };
        for &a0 in &accs {
            for rs in [0, 1, -5, 1000] {
                let acc: Vec<i32> = (0..32i32).map(|j| a0.wrapping_add(j % 3)).collect();
                let want: Vec<u8> = (0..k)
                    .map(|o| {
                        let exact = acc[o] as i64 + corr[o] as i64 - wzp[o] as i64 * rs as i64;
                        let scalar = requant_one(
                            acc[o],
                            &EpiChannel { corr: corr[o].wrapping_sub(wzp[o].wrapping_mul(rs)), ..ep.channel(o) },
                        );
                        if (i32::MIN as i64..=i32::MAX as i64).contains(&exact) {
                            assert_eq!(scalar, t.requantize(exact, o), "scalar epilogue, acc {exact} channel {o}");
                        }
                        scalar
                    })
                    .collect();
                each_level(|level, run| {
                    run(&mut |kern: Probe| {
                        // Three rows of a tile: the row, the row with row sum 0, the row again.
                        let mut tile = AccTile::new();
                        for i in 0..3 {
                            tile.0[i * ACC_PITCH..i * ACC_PITCH + 32].copy_from_slice(&acc);
                        }
                        for n in [k, 1, 3] {
                            let mut out = vec![0u8; 2 * 40 + n];
                            (kern.tile)(&tile, 3, &[rs, 0, rs], &ep, 0..n, (&mut out, 40));
                            assert_eq!(out[..n], want[..n], "{level:?} row, acc {a0}, rowsum {rs}");
                            assert_eq!(out[80..80 + n], want[..n], "{level:?} row 2");
                            if rs == 0 {
                                let mut plain = vec![0u8; n];
                                (kern.tile)(&tile, 1, &[], &ep, 0..n, (&mut plain, 40));
                                assert_eq!(plain, want[..n], "{level:?} row without row sums");
                            }
                        }
                        for o in 0..k {
                            let line: Vec<i32> = (0..37).map(|m| a0.wrapping_add(m % 5)).collect();
                            let ch = ep.channel(o);
                            let want: Vec<u8> = line.iter().map(|&v| requant_one(v, &ch)).collect();
                            let mut out = vec![0u8; 37];
                            (kern.line)(&line, &ch, &mut out);
                            assert_eq!(out, want, "{level:?} line, acc {a0}, channel {o}");
                        }
                    })
                });
            }
        }
    }
}
