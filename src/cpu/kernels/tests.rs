//! Tests of the kernels through the engine: each level against the oracle, AVX-512 bit-identical
//! to AVX2, and the feature detection.

use super::{CpuFeatures, Isa};
use crate::cpu::entry::conv_with;
use crate::cpu::packed::PackedWeight;
use crate::cpu::test_support::{check, check_with, problem};
use crate::problem::ConvProblem;
use crate::testing::{random_problem, ProblemBudget, Rng};

/// The portable kernels (the fallback without AVX2/FMA) against the oracle.
#[test]
fn portable_kernels_match_naive() {
    let mut rng = Rng::new(0x5851_F42D_4C95_7F2D);
    let mut done = 0;
    while done < 120 {
        let transposed = rng.chance(40);
        let Some(p) = random_problem(&mut rng, transposed, ProblemBudget::SMALL) else { continue };
        let x = rng.signed(p.input_len());
        let w = rng.signed(p.weight_len());
        let bias = rng.signed(p.out_channels);
        check_with(&p, &x, &w, Some(&bias), Isa::Portable);
        done += 1;
    }
}

/// The AVX2 + FMA kernels (forced below AVX-512) against the oracle, where the CPU has them.
#[test]
fn avx2_kernels_match_naive() {
    let mut rng = Rng::new(0x2545_F491_4F6C_DD1D);
    let mut done = 0;
    while done < 120 {
        let transposed = rng.chance(40);
        let Some(p) = random_problem(&mut rng, transposed, ProblemBudget::SMALL) else { continue };
        let x = rng.signed(p.input_len());
        let w = rng.signed(p.weight_len());
        let bias = rng.signed(p.out_channels);
        check_with(&p, &x, &w, Some(&bias), Isa::Avx2Fma);
        done += 1;
    }
}

/// The AVX-512 kernels (the default where the CPU has AVX-512F) run the same fused
/// multiply-adds in the same order as the AVX2 + FMA ones: bit-identical results on every path
/// (gathered, padded-input with row runs, 1×1 in place, direct; forward and transposed).
#[test]
fn avx512_bit_identical_to_avx2() {
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    let mut problems = vec![
        problem(64, 40, 1, [1, 28, 28], [1, 3, 3]),
        ConvProblem {
            pad: [0, 2, 2],
            dilation: [1, 2, 2],
            out_size: [1, 30, 30],
            ..problem(16, 12, 1, [1, 30, 30], [1, 3, 3])
        },
        problem(3, 16, 1, [1, 40, 40], [1, 7, 7]),
        ConvProblem {
            stride: [1, 2, 2],
            pad: [0, 3, 3],
            out_size: [1, 20, 20],
            ..problem(3, 16, 1, [1, 40, 40], [1, 7, 7])
        },
        problem(32, 32, 32, [1, 20, 20], [1, 3, 3]),
        ConvProblem {
            transposed: true,
            stride: [1, 2, 2],
            pad: [0, 1, 1],
            out_size: [1, 28, 28],
            ..problem(24, 20, 1, [1, 14, 14], [1, 4, 4])
        },
        problem(24, 18, 1, [1, 33, 33], [1, 1, 1]),
    ];
    while problems.len() < 60 {
        let transposed = rng.chance(40);
        if let Some(p) = random_problem(&mut rng, transposed, ProblemBudget::SMALL) {
            problems.push(p);
        }
    }
    for p in problems {
        let x = rng.signed(p.input_len());
        let w = rng.signed(p.weight_len());
        let bias = rng.signed(p.out_channels);
        let packed = PackedWeight::new(p.transposed, p.in_channels, p.out_channels, p.groups, p.kernel, &w).unwrap();
        let run = |isa: Isa| {
            let mut y = vec![0.0f32; p.output_len()];
            conv_with(&p, &packed, Some(&bias), &x, &mut y, isa).unwrap();
            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        assert!(run(Isa::best()) == run(Isa::Avx2Fma), "{p:?}: AVX-512 and AVX2 results differ");
        check(&p, &x, &w, Some(&bias));
    }
}

/// One detection per process; the features respect their implications; the float level, its
/// kernels' name (what `simd_level` has always printed) and the 8-row tiles follow from them, and
/// a capped level runs the best kernels at or below it.
#[test]
fn features_and_levels() {
    let f = CpuFeatures::get();
    assert_eq!(f, CpuFeatures::detect());
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        use std::arch::is_x86_feature_detected as has;
        assert_eq!(f.avx2_fma(), has!("avx2") && has!("fma"));
        assert_eq!(f.avx512f(), f.avx2_fma() && has!("avx512f"));
        assert_eq!(f.avx512_vnni(), f.avx512f() && has!("avx512bw") && has!("avx512vnni"));
        assert_eq!(f.avx_vnni(), f.avx2_fma() && has!("avxvnni"));
    }
    assert!(!f.avx512_vnni() || f.avx512f());
    assert!(!f.avx_vnni() || f.avx2_fma());
    let best = Isa::best();
    assert!(best.supported(f));
    assert!(Isa::ALL.iter().all(|&isa| isa <= best || !isa.supported(f)));
    let name = if f.avx512f() {
        "avx512f"
    } else if f.avx2_fma() {
        "avx2+fma"
    } else {
        "portable"
    };
    assert_eq!(crate::cpu::simd_level(), name);
    assert_eq!(best.wide_tiles(), f.avx512f());
    assert_eq!(Isa::Portable.kernel_name(), "portable");
    assert_eq!(Isa::Avx2Fma.kernel_name(), if f.avx2_fma() { "avx2+fma" } else { "portable" });
}

/// The benchmark hook runs every level this CPU has, both tile heights, packed and strided `B`.
#[test]
fn gemm_bench_hook() {
    use crate::cpu::kernel_bench::GemmBench;
    let levels = GemmBench::levels();
    assert_eq!(levels.first(), Some(&crate::cpu::simd_level()));
    assert_eq!(levels.last(), Some(&"portable"));
    for &level in &levels {
        for mr in [6, 8] {
            for ldb in [16, 900] {
                let mut bench = GemmBench::new(level, mr, 32, ldb).expect("a level of this CPU");
                assert_eq!(bench.flops(), (2 * mr * 16 * 32) as u64);
                bench.run(3);
                // Weights 0.5, inputs 0.25: every call adds 32 · 0.125 to each output.
                assert_eq!(bench.first_output(), 3.0 * 32.0 * 0.125, "{level} {mr} {ldb}");
            }
        }
    }
    assert!(GemmBench::new("avx9000", 6, 32, 16).is_none());
    assert!(GemmBench::new("portable", 7, 32, 16).is_none());
}
