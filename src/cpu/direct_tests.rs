//! Tests of the direct path (`Kg == 1`): windows split by the budget, decimated and compact
//! windows, absurd strides, and the whole-window kernels at every level.

use crate::cpu::entry::{conv, conv_with};
use crate::cpu::kernels::Isa;
use crate::cpu::packed::PackedWeight;
use crate::cpu::test_support::{check_random_data, check_with, problem};
use crate::error::Error;
use crate::problem::{ConvProblem, PaddingMode};
use crate::testing::Rng;

#[test]
fn direct_path_cases() {
    let mut rng = Rng::new(11);
    // Kg == 1 with a large group: the padded-row window is split (budget) into several windows.
    let p = ConvProblem { pad: [0, 1, 1], out_size: [1, 40, 40], ..problem(300, 1, 1, [1, 40, 40], [1, 3, 3]) };
    check_random_data(&mut rng, &p);
    // Strided depthwise (decimated rows), every padding mode, 2-d and 3-d.
    for mode in [PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular] {
        let p = ConvProblem {
            stride: [1, 2, 2],
            pad: [0, 1, 1],
            out_size: [1, 7, 7],
            pad_mode: mode,
            batch: 2,
            ..problem(6, 6, 6, [1, 13, 14], [1, 3, 3])
        };
        check_random_data(&mut rng, &p);
        let p = ConvProblem {
            stride: [2, 1, 3],
            pad: [1, 2, 2],
            dilation: [1, 2, 1],
            out_size: [3, 5, 4],
            pad_mode: mode,
            ..problem(3, 6, 3, [5, 5, 9], [3, 3, 3])
        };
        check_random_data(&mut rng, &p);
        // Row stride larger than the rows one output reads: the compact window (only each
        // output row's span is filled), with dilation, padding past the input, and a stride
        // far beyond the input (fuzzer case: stride 65536, replicate).
        let p = ConvProblem {
            stride: [1, 3, 2],
            pad: [0, 2, 1],
            out_size: [1, 5, 5],
            pad_mode: mode,
            batch: 2,
            ..problem(5, 5, 5, [1, 11, 10], [1, 2, 3])
        };
        check_random_data(&mut rng, &p);
        let p = ConvProblem {
            stride: [1, 7, 1],
            dilation: [1, 2, 1],
            pad: [0, 1, 0],
            out_size: [1, 3, 8],
            pad_mode: mode,
            ..problem(4, 4, 4, [1, 17, 8], [1, 2, 1])
        };
        check_random_data(&mut rng, &p);
        if mode != PaddingMode::Reflect && mode != PaddingMode::Circular {
            let p = ConvProblem {
                stride: [1, 65536, 7],
                dilation: [1, 7, 7],
                pad: [0, 1, 1000],
                out_size: [1, 1, 286],
                pad_mode: mode,
                batch: 2,
                ..problem(7, 7, 7, [1, 2, 2], [1, 1, 1])
            };
            check_random_data(&mut rng, &p);
        }
    }
    // Absurd strides stay cheap and correct (also in debug builds: no overflow).
    let p =
        ConvProblem { stride: [1, 1, usize::MAX / 64], out_size: [1, 3, 1], ..problem(2, 2, 2, [1, 3, 5], [1, 1, 3]) };
    check_random_data(&mut rng, &p);
    let p = ConvProblem { out_channels: 4, ..p };
    check_random_data(&mut rng, &p);
    let huge = ConvProblem { stride: [1, 1, usize::MAX], ..p.clone() };
    let packed = PackedWeight::new(false, 2, 4, 2, [1, 1, 3], &[0.0; 4 * 3]).unwrap();
    let mut y = vec![0.0; huge.output_len()];
    assert!(matches!(conv(&huge, &packed, None, &vec![0.0; huge.input_len()], &mut y), Err(Error::Overflow(_))));
    let p = ConvProblem {
        stride: [1, 1, 1000],
        pad: [0, 0, 1],
        out_size: [1, 3, 2],
        ..problem(2, 2, 2, [1, 3, 1500], [1, 1, 3])
    };
    check_random_data(&mut rng, &p);
    let p = ConvProblem {
        transposed: true,
        stride: [1, 1, 1000],
        out_size: [1, 3, 2004],
        ..problem(2, 2, 2, [1, 3, 3], [1, 1, 3])
    };
    check_random_data(&mut rng, &p);
    let p = ConvProblem { out_channels: 6, ..p };
    check_random_data(&mut rng, &p);
}

/// The direct path's whole-window kernel calls at every SIMD level this CPU has: depthwise
/// forward and transposed problems whose rows are not multiples of the tile (`RR × DW`; every
/// ragged-store width class), several windows per plane (budget) and per 3-d plane, zero
/// padding (zero borders reused across channels and calls) next to the other modes, output
/// rows written in place (`out_step = 1`) or scattered (transposed phases). The AVX-512 and
/// AVX2 results are bit-identical.
#[test]
fn direct_windows_all_levels() {
    fn sized(mut p: ConvProblem) -> ConvProblem {
        p.out_size = [0, 1, 2].map(|d| {
            let span = (p.kernel[d] - 1) * p.dilation[d];
            if p.transposed {
                (p.in_size[d] - 1) * p.stride[d] + span + 1 - 2 * p.pad[d]
            } else {
                (p.in_size[d] + 2 * p.pad[d] - span - 1) / p.stride[d] + 1
            }
        });
        p
    }
    let mut rng = Rng::new(0xD1EC7);
    let mut problems = Vec::new();
    for w in [1, 3, 5, 9, 16, 17, 28, 35] {
        for mode in [PaddingMode::Zeros, PaddingMode::Replicate] {
            let h = 1 + (w * 7) % 11;
            let p = ConvProblem { pad: [0, 1, 1], pad_mode: mode, batch: 2, ..problem(5, 5, 5, [1, h, w], [1, 3, 3]) };
            problems.push(sized(p));
        }
        let t = ConvProblem {
            transposed: true,
            stride: [1, 2, 2],
            pad: [0, 1, 1],
            ..problem(4, 4, 4, [1, 1 + w % 6, w], [1, 4, 3])
        };
        problems.push(sized(t));
    }
    // Many windows per plane (300 input channels per group: the budget splits the rows), 3-d
    // planes, dilation.
    problems.push(sized(ConvProblem { pad: [0, 1, 1], ..problem(300, 1, 1, [1, 45, 29], [1, 3, 3]) }));
    problems.push(sized(ConvProblem {
        pad: [1, 2, 2],
        dilation: [1, 2, 2],
        ..problem(3, 3, 3, [4, 9, 19], [3, 3, 3])
    }));
    problems.push(sized(ConvProblem {
        transposed: true,
        stride: [2, 1, 3],
        pad: [1, 0, 1],
        ..problem(2, 4, 2, [3, 6, 7], [3, 2, 4])
    }));
    for p in &problems {
        let x = rng.signed(p.input_len());
        let w = rng.signed(p.weight_len());
        let bias = rng.signed(p.out_channels);
        for isa in [Isa::Portable, Isa::Avx2Fma, Isa::best()] {
            check_with(p, &x, &w, Some(&bias), isa);
        }
        let packed = PackedWeight::new(p.transposed, p.in_channels, p.out_channels, p.groups, p.kernel, &w).unwrap();
        let run = |isa| {
            let mut y = vec![0.0f32; p.output_len()];
            conv_with(p, &packed, Some(&bias), &x, &mut y, isa).unwrap();
            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(run(Isa::Avx2Fma), run(Isa::best()), "{p:?}");
    }
}
