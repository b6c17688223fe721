//! Support of the CPU engine's tests: the check against the f64 oracle and a problem builder.
//! The PRNG and the random problem generator are the crate's ([`crate::testing`]).

use super::entry::conv_with;
use super::kernels::Isa;
use super::packed::PackedWeight;
use crate::oracle::conv_naive;
use crate::problem::{ConvProblem, PaddingMode};
use crate::testing::Rng;

/// Runs the fast path and the oracle and checks
/// `|y − ref| <= 1e-5 · (1 + Σ|x·w| + |bias|)` per output element, where the bound's sum comes
/// from a second oracle pass over absolute values (f32 accumulation of a few hundred terms is
/// far more accurate than that in practice).
pub(super) fn check(p: &ConvProblem, x: &[f32], w: &[f32], bias: Option<&[f32]>) {
    check_with(p, x, w, bias, Isa::best())
}

/// [`check`] with the kernels of at most `isa`.
pub(super) fn check_with(p: &ConvProblem, x: &[f32], w: &[f32], bias: Option<&[f32]>, isa: Isa) {
    let packed = PackedWeight::new(p.transposed, p.in_channels, p.out_channels, p.groups, p.kernel, w)
        .unwrap_or_else(|e| panic!("{p:?}: {e}"));
    let mut y = vec![f32::NAN; p.output_len()];
    conv_with(p, &packed, bias, x, &mut y, isa).unwrap_or_else(|e| panic!("{p:?}: {e}"));
    let want = conv_naive(p, w, bias, x);
    let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
    let bias_abs = bias.map(abs);
    let scale = conv_naive(p, &abs(w), bias_abs.as_deref(), &abs(x));
    for (i, ((&got, &want), &scale)) in y.iter().zip(&want).zip(&scale).enumerate() {
        let err = (got as f64 - want).abs();
        assert!(err <= 1e-5 * (1.0 + scale), "{p:?}\nelement {i}: got {got}, want {want} (scale {scale})");
    }
}

/// [`check`] on random data (inputs and weights in `[-1, 1)`, a bias 70% of the time).
pub(super) fn check_random_data(rng: &mut Rng, p: &ConvProblem) {
    let x = rng.signed(p.input_len());
    let w = rng.signed(p.weight_len());
    let bias = rng.chance(70).then(|| rng.signed(p.out_channels));
    check(p, &x, &w, bias.as_deref());
}

/// A dense forward problem: batch 1, unit strides and dilations, no padding, the full output.
pub(super) fn problem(c: usize, k: usize, groups: usize, in_size: [usize; 3], kernel: [usize; 3]) -> ConvProblem {
    let out_size = [0, 1, 2].map(|d| in_size[d].saturating_sub(kernel[d]) + 1);
    ConvProblem {
        transposed: false,
        batch: 1,
        in_channels: c,
        out_channels: k,
        groups,
        in_size,
        out_size,
        kernel,
        stride: [1; 3],
        pad: [0; 3],
        dilation: [1; 3],
        pad_mode: PaddingMode::Zeros,
    }
}
