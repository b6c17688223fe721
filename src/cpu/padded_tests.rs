//! Tests of the padded input copy: strided rows stored as sub-rows, and the buffer reused across
//! calls.

use crate::cpu::entry::conv;
use crate::cpu::gemm::padded_pays_off;
use crate::cpu::geometry::Geometry;
use crate::cpu::kernels::Isa;
use crate::cpu::packed::PackedWeight;
use crate::cpu::test_support::{check, check_with, problem};
use crate::problem::{ConvProblem, PaddingMode};
use crate::testing::Rng;

/// Strided forward convolutions whose output rows suit the padded source (stored as one
/// sub-row per input phase): few channels (indirect kernel) and many (segments), every padding
/// mode, strides 2 and 3, a long 1-d row, batch 2; all levels against the oracle.
#[test]
fn strided_padded_all_levels() {
    let mut rng = Rng::new(0x57_2ADD);
    let modes = [PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular];
    let cases = [
        // (C, K, in, kernel, stride, pad)
        (3, 16, [1, 64, 64], [1, 7, 7], 2, 3),
        (3, 8, [1, 40, 64], [1, 7, 7], 2, 3),
        (20, 24, [1, 64, 64], [1, 3, 3], 2, 1),
        (5, 12, [1, 48, 96], [1, 5, 5], 3, 2),
        (3, 16, [1, 1, 4096], [1, 1, 7], 2, 3),
        (4, 16, [3, 34, 64], [3, 3, 3], 2, 1),
        (3, 40, [1, 30, 64], [1, 7, 7], 2, 3), // packed panels (K >= PACK_MIN_ROWS)
        (24, 48, [1, 20, 40], [1, 3, 3], 2, 1), // packed panels spanning two rows
    ];
    for (i, &(c, k, in_size, kernel, s, pad)) in cases.iter().enumerate() {
        let mut p = ConvProblem {
            batch: 1 + i % 2,
            stride: [if in_size[0] > 1 { s } else { 1 }, if in_size[1] > 1 { s } else { 1 }, s],
            pad: kernel.map(|kd| if kd > 1 { pad } else { 0 }),
            pad_mode: modes[i % 4],
            ..problem(c, k, 1, in_size, kernel)
        };
        p.out_size = [0, 1, 2].map(|d| (p.in_size[d] + 2 * p.pad[d] - p.kernel[d]) / p.stride[d] + 1);
        let geo = Geometry::new(&p).unwrap();
        assert!(padded_pays_off(&p, &geo, p.input_len()), "{p:?} should read the padded copy");
        let x = rng.signed(p.input_len());
        let wt = rng.signed(p.weight_len());
        let bias = rng.signed(p.out_channels);
        for isa in [Isa::Portable, Isa::Avx2Fma, Isa::best()] {
            check_with(&p, &x, &wt, Some(&bias), isa);
        }
    }
}

/// The padded copy's buffer is reused by the next call of the calling thread, keeping its
/// zeros when the zero pattern is the same: new inputs, other geometries and padding modes in
/// between must never leak into a result.
#[test]
fn padded_buffer_reuse_across_calls() {
    let mut rng = Rng::new(0xB0F);
    let zeros = ConvProblem { pad: [0, 1, 1], out_size: [1, 20, 20], ..problem(8, 16, 1, [1, 20, 20], [1, 3, 3]) };
    let reflect = ConvProblem { pad_mode: PaddingMode::Reflect, ..zeros.clone() };
    let other = ConvProblem { pad: [0, 2, 2], out_size: [1, 22, 22], ..zeros.clone() };
    // Strided rows (sub-rows per input phase), stride 2 and 3, zero and reflect padding.
    let s2 = ConvProblem {
        stride: [1, 2, 2],
        pad: [0, 1, 1],
        out_size: [1, 20, 32],
        ..problem(8, 16, 1, [1, 40, 64], [1, 3, 3])
    };
    let s2r = ConvProblem { pad_mode: PaddingMode::Reflect, ..s2.clone() };
    let s3 = ConvProblem {
        stride: [1, 3, 3],
        pad: [0, 1, 1],
        out_size: [1, 10, 32],
        ..problem(8, 16, 1, [1, 30, 96], [1, 3, 3])
    };
    let w = rng.signed(zeros.weight_len());
    let packed = PackedWeight::new(false, 8, 16, 1, [1, 3, 3], &w).unwrap();
    let inputs: Vec<Vec<f32>> = (0..3).map(|_| rng.signed(zeros.input_len())).collect();
    let big: Vec<Vec<f32>> = (0..3).map(|_| rng.signed(s3.input_len().max(s2.input_len()))).collect();
    let fresh = |p: &ConvProblem, x: &[f32]| {
        // A fresh thread: nothing to reuse.
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut y = vec![0.0f32; p.output_len()];
                conv(p, &packed, None, x, &mut y).unwrap();
                y
            })
            .join()
            .unwrap()
        })
    };
    for (call, (p, x)) in [
        (&zeros, &inputs[0][..]),
        (&zeros, &inputs[1][..]),
        (&reflect, &inputs[1][..]),
        (&zeros, &inputs[2][..]),
        (&other, &inputs[0][..]),
        (&zeros, &inputs[0][..]),
        (&zeros, &inputs[0][..]),
        (&s2, &big[0][..s2.input_len()]),
        (&s2, &big[1][..s2.input_len()]),
        (&s2r, &big[1][..s2.input_len()]),
        (&s2, &big[2][..s2.input_len()]),
        (&s3, &big[0][..s3.input_len()]),
        (&s3, &big[1][..s3.input_len()]),
        (&s2, &big[0][..s2.input_len()]),
    ]
    .into_iter()
    .enumerate()
    {
        let geo = Geometry::new(p).unwrap();
        assert!(padded_pays_off(p, &geo, p.input_len()), "{p:?} reads the padded copy");
        let mut y = vec![f32::NAN; p.output_len()];
        conv(p, &packed, None, x, &mut y).unwrap();
        assert!(y == fresh(p, x), "call {call}: {p:?}");
        check(p, x, &w, None);
    }
}
