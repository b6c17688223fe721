//! The f64 oracle: the naive direct convolution every backend is tested against.
//!
//! [`conv_naive`] evaluates the formulas of [`ConvProblem`] literally — one output element at a
//! time, every input channel of its group, every kernel tap — with the unpacked weight and `f64`
//! accumulation. It is slow and meant for tests only; its sole virtue is being obviously right.
//! It sits on the floor beside [`crate::problem`], so the CPU engine's tests, the CUDA backend's
//! tests and emulations, and the integration tests in `tests/` all use it without one backend
//! importing the other.
//!
//! [`conv_int8_naive`] is the exact integer oracle of the lowered int8 convolutions
//! (docs/numerics.md §14.5): the same literal loops over u8 codes and i8 weight codes, each term
//! `(x − x_zp)(w − w_zp)` accumulated in `i64` ([`conv_int8_acc`]), then the scalar
//! [`RequantTable::requantize`].

use crate::problem::ConvProblem;
use crate::quant::requant::{channel_entry, RequantTable};

/// The input index that output index `o` reads through kernel tap `j` along one dimension.
///
/// Forward: `o·stride + j·dilation − pad`, remapped by the padding mode. Transposed (gather form):
/// the `i` with `i·stride = o + pad − j·dilation`, if that is an integer in `[0, len)`.
fn input_index(p: &ConvProblem, dim: usize, o: usize, j: usize) -> Option<usize> {
    let (s, d, pad, len) = (p.stride[dim] as i64, p.dilation[dim] as i64, p.pad[dim] as i64, p.in_size[dim]);
    let (o, j) = (o as i64, j as i64);
    if p.transposed {
        let t = o + pad - j * d;
        if t < 0 || t % s != 0 {
            return None;
        }
        let i = t / s;
        if i < len as i64 {
            Some(i as usize)
        } else {
            None
        }
    } else {
        p.pad_mode.source_index((o * s + j * d - pad) as isize, len)
    }
}

/// Direct convolution straight from the formulas of [`ConvProblem`]: `f64` accumulation, the
/// unpacked weight (forward `[K, C/g, k0, k1, k2]`, transposed `[C, K/g, k0, k1, k2]`), output
/// `[batch, out_channels, out_size...]` as `f64` (`p.output_len()` elements).
///
/// This is the test oracle of both backends ([`crate::cpu::conv`] and the CUDA kernels); it is
/// far too slow for production use.
///
/// # Panics
///
/// Panics if `x`, `weight` or `bias` do not have the lengths `p` implies, or if a stride, dilation,
/// group count or channel count is zero or the groups do not divide the channels.
pub fn conv_naive(p: &ConvProblem, weight: &[f32], bias: Option<&[f32]>, x: &[f32]) -> Vec<f64> {
    assert!(
        p.groups > 0 && p.in_channels.is_multiple_of(p.groups) && p.out_channels.is_multiple_of(p.groups),
        "bad groups"
    );
    assert!(p.stride.iter().chain(&p.dilation).all(|&v| v > 0), "stride and dilation must be positive");
    assert_eq!(x.len(), p.input_len(), "input length");
    assert_eq!(weight.len(), p.weight_len(), "weight length");
    if let Some(b) = bias {
        assert_eq!(b.len(), p.out_channels, "bias length");
    }
    let cg = p.in_channels / p.groups;
    let kg = p.out_channels / p.groups;
    let [l0, l1, l2] = p.in_size;
    let [o0n, o1n, o2n] = p.out_size;
    let [k0n, k1n, k2n] = p.kernel;
    let mut y = vec![0.0f64; p.output_len()];
    let mut out = 0;
    for n in 0..p.batch {
        for k in 0..p.out_channels {
            let g = k / kg;
            for o0 in 0..o0n {
                for o1 in 0..o1n {
                    for o2 in 0..o2n {
                        let mut acc = bias.map_or(0.0, |b| b[k] as f64);
                        for cl in 0..cg {
                            let c = g * cg + cl;
                            for j0 in 0..k0n {
                                for j1 in 0..k1n {
                                    for j2 in 0..k2n {
                                        let tap = (j0 * k1n + j1) * k2n + j2;
                                        let w = if p.transposed {
                                            weight[(c * kg + (k - g * kg)) * k0n * k1n * k2n + tap]
                                        } else {
                                            weight[(k * cg + cl) * k0n * k1n * k2n + tap]
                                        };
                                        let (Some(i0), Some(i1), Some(i2)) = (
                                            input_index(p, 0, o0, j0),
                                            input_index(p, 1, o1, j1),
                                            input_index(p, 2, o2, j2),
                                        ) else {
                                            continue;
                                        };
                                        let xv = x[(((n * p.in_channels + c) * l0 + i0) * l1 + i1) * l2 + i2];
                                        acc += w as f64 * xv as f64;
                                    }
                                }
                            }
                        }
                        y[out] = acc;
                        out += 1;
                    }
                }
            }
        }
    }
    y
}

/// The exact accumulators of a lowered int8 convolution: `acc[n, o, p] = Σ (x − x_zp)·(w −
/// w_zp[o])` over the input channels of `o`'s group and the kernel taps, in `i64`, laid out like
/// [`conv_naive`]'s output. Padded taps (zeros padding) and the holes of a transposed
/// convolution read the code `x_zp` and add nothing; reflect, replicate and circular padding read
/// the codes [`crate::problem::PaddingMode::source_index`] names. `weight` holds i8 codes in
/// PyTorch's layout; `weight_zero_points` has 1, `out_channels` or (transposed)
/// `out_channels / groups` entries, chosen per output channel by [`channel_entry`].
///
/// # Panics
///
/// As [`conv_naive`], and if `weight_zero_points` has another length.
pub fn conv_int8_acc(
    p: &ConvProblem,
    weight: &[i8],
    weight_zero_points: &[i32],
    x: &[u8],
    input_zero_point: i32,
) -> Vec<i64> {
    assert!(
        p.groups > 0 && p.in_channels.is_multiple_of(p.groups) && p.out_channels.is_multiple_of(p.groups),
        "bad groups"
    );
    assert!(p.stride.iter().chain(&p.dilation).all(|&v| v > 0), "stride and dilation must be positive");
    assert_eq!(x.len(), p.input_len(), "input length");
    assert_eq!(weight.len(), p.weight_len(), "weight length");
    let cg = p.in_channels / p.groups;
    let kg = p.out_channels / p.groups;
    let [l0, l1, l2] = p.in_size;
    let [o0n, o1n, o2n] = p.out_size;
    let [k0n, k1n, k2n] = p.kernel;
    let taps = k0n * k1n * k2n;
    let xzp = input_zero_point as i64;
    let mut y = vec![0i64; p.output_len()];
    let mut out = 0;
    for n in 0..p.batch {
        for k in 0..p.out_channels {
            let g = k / kg;
            let j = channel_entry(weight_zero_points.len(), k, p.out_channels, p.groups, p.transposed)
                .expect("weight_zero_points length");
            let wzp = weight_zero_points[j] as i64;
            for o0 in 0..o0n {
                for o1 in 0..o1n {
                    for o2 in 0..o2n {
                        let mut acc = 0i64;
                        for cl in 0..cg {
                            let c = g * cg + cl;
                            for j0 in 0..k0n {
                                for j1 in 0..k1n {
                                    for j2 in 0..k2n {
                                        let tap = (j0 * k1n + j1) * k2n + j2;
                                        let w = if p.transposed {
                                            weight[(c * kg + (k - g * kg)) * taps + tap]
                                        } else {
                                            weight[(k * cg + cl) * taps + tap]
                                        };
                                        let (Some(i0), Some(i1), Some(i2)) = (
                                            input_index(p, 0, o0, j0),
                                            input_index(p, 1, o1, j1),
                                            input_index(p, 2, o2, j2),
                                        ) else {
                                            continue; // reads x_zp: (x − x_zp) = 0
                                        };
                                        let xv = x[(((n * p.in_channels + c) * l0 + i0) * l1 + i1) * l2 + i2] as i64;
                                        acc += (xv - xzp) * (w as i64 - wzp);
                                    }
                                }
                            }
                        }
                        y[out] = acc;
                        out += 1;
                    }
                }
            }
        }
    }
    y
}

/// The u8 output codes of a lowered int8 convolution (docs/numerics.md §14.5): [`conv_int8_acc`]
/// requantized per output channel by `table` ([`RequantTable::requantize`]). Layout as
/// [`conv_naive`]'s output (`[batch, out_channels, out_size...]`).
///
/// # Panics
///
/// As [`conv_int8_acc`], and if `table` has another number of output channels.
pub fn conv_int8_naive(
    p: &ConvProblem,
    weight: &[i8],
    weight_zero_points: &[i32],
    x: &[u8],
    input_zero_point: i32,
    table: &RequantTable,
) -> Vec<u8> {
    assert_eq!(table.out_channels(), p.out_channels, "requant table channels");
    // Saturating, as `ConvProblem::output_len`: an empty batch may come with any output size.
    let plane = p.out_size.iter().fold(1usize, |a, &b| a.saturating_mul(b));
    let acc = conv_int8_acc(p, weight, weight_zero_points, x, input_zero_point);
    acc.iter().enumerate().map(|(i, &a)| table.requantize(a, (i / plane.max(1)) % p.out_channels)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::PaddingMode;

    /// An empty batch with output sizes whose product overflows: an empty result, no panic (a
    /// fuzz finding in the harness's oracle call).
    #[test]
    fn empty_batch_with_huge_output_sizes() {
        let p = ConvProblem {
            transposed: true,
            batch: 0,
            in_channels: 1,
            out_channels: 1,
            groups: 1,
            in_size: [1, 1, 1],
            out_size: [1 << 40, 1 << 40, 1],
            kernel: [1, 1, 1],
            stride: [1, 1, 1],
            pad: [0, 0, 0],
            dilation: [1, 1, 1],
            pad_mode: PaddingMode::Zeros,
        };
        let params = crate::quant::RequantParams {
            input_scale: 0.1,
            weight_scales: crate::quant::WeightScales::PerTensor(0.1),
            output_scale: 0.1,
            output_zero_point: 0,
            bias: None,
            relu: false,
        };
        let table = RequantTable::new(true, 1, 1, &params).unwrap();
        assert!(conv_int8_naive(&p, &[1], &[0], &[], 0, &table).is_empty());
    }

    /// A 1-d problem (`[1, 1, len]` after normalisation).
    #[allow(clippy::too_many_arguments)]
    fn p1d(
        transposed: bool,
        c: usize,
        k: usize,
        len: usize,
        out: usize,
        ks: usize,
        stride: usize,
        pad: usize,
        dil: usize,
        mode: PaddingMode,
    ) -> ConvProblem {
        ConvProblem {
            transposed,
            batch: 1,
            in_channels: c,
            out_channels: k,
            groups: 1,
            in_size: [1, 1, len],
            out_size: [1, 1, out],
            kernel: [1, 1, ks],
            stride: [1, 1, stride],
            pad: [0, 0, pad],
            dilation: [1, 1, dil],
            pad_mode: mode,
        }
    }

    #[test]
    fn forward_1d_by_hand() {
        // y[o] = x[o-1] - x[o+1] + 0.5, zero padding 1.
        let p = p1d(false, 1, 1, 5, 5, 3, 1, 1, 1, PaddingMode::Zeros);
        let y = conv_naive(&p, &[1.0, 0.0, -1.0], Some(&[0.5]), &[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(y, vec![-1.5, -1.5, -1.5, -1.5, 4.5]);
    }

    #[test]
    fn forward_1d_stride_dilation_channels_by_hand() {
        // Two input channels, kernel 2, stride 2, dilation 2, no padding:
        // y[o] = Σ_c Σ_j w[c, j] · x[c, 2o + 2j], L = 7 → out = (7 - 2 - 1)/2 + 1 = 3.
        let p = p1d(false, 2, 1, 7, 3, 2, 2, 0, 2, PaddingMode::Zeros);
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0];
        let w = [1.0, 2.0, 0.5, -1.0];
        // o=0: 1·1 + 2·3 + 0.5·10 − 30 = −18; o=1: 3 + 10 + 15 − 50 = −22; o=2: 5 + 14 + 25 − 70 = −26
        assert_eq!(conv_naive(&p, &w, None, &x), vec![-18.0, -22.0, -26.0]);
    }

    #[test]
    fn padding_modes_by_hand() {
        // A 1-tap kernel of weight 1 with padding 2 shows the padded input itself.
        let x = [1.0, 2.0, 3.0, 4.0];
        let cases = [
            (PaddingMode::Zeros, [0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 0.0]),
            (PaddingMode::Reflect, [3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0]),
            (PaddingMode::Replicate, [1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 4.0, 4.0]),
            (PaddingMode::Circular, [3.0, 4.0, 1.0, 2.0, 3.0, 4.0, 1.0, 2.0]),
        ];
        for (mode, want) in cases {
            let p = p1d(false, 1, 1, 4, 8, 1, 1, 2, 1, mode);
            assert_eq!(conv_naive(&p, &[1.0], None, &x), want.to_vec(), "{mode:?}");
        }
        // Asymmetric ('same' with an even kernel): pad 1 before, 2 after; kernel [1, 10, 100, 1000].
        let p = p1d(false, 1, 1, 4, 4, 4, 1, 1, 1, PaddingMode::Reflect);
        // padded: [2, 1, 2, 3, 4, 3, 2]; y[o] = Σ_j 10^j · padded[o + j]
        assert_eq!(conv_naive(&p, &[1.0, 10.0, 100.0, 1000.0], None, &x), vec![3212.0, 4321.0, 3432.0, 2343.0]);
    }

    #[test]
    fn transposed_1d_stride2_by_hand() {
        // Scatter form: y[2i + j] += x[i]·w[j] with x = [1, 2, 3], w = [1, 10, 100]:
        // full output (pad 0, length 7) = [1, 10, 102, 20, 203, 30, 300].
        let x = [1.0, 2.0, 3.0];
        let w = [1.0, 10.0, 100.0];
        let p = p1d(true, 1, 1, 3, 7, 3, 2, 0, 1, PaddingMode::Zeros);
        assert_eq!(conv_naive(&p, &w, None, &x), vec![1.0, 10.0, 102.0, 20.0, 203.0, 30.0, 300.0]);
        // padding 1 crops one element at each end; output_padding 1 adds one back at the end.
        let p = p1d(true, 1, 1, 3, 5, 3, 2, 1, 1, PaddingMode::Zeros);
        assert_eq!(conv_naive(&p, &w, Some(&[1.0]), &x), vec![11.0, 103.0, 21.0, 204.0, 31.0]);
        let p = p1d(true, 1, 1, 3, 6, 3, 2, 1, 1, PaddingMode::Zeros);
        assert_eq!(conv_naive(&p, &w, None, &x), vec![10.0, 102.0, 20.0, 203.0, 30.0, 300.0]);
        // dilation 2: y[2i + 2j] += x[i]·w[j] → [1, 0, 12, 0, 123, 0, 230, 0, 300]
        let p = p1d(true, 1, 1, 3, 9, 3, 2, 0, 2, PaddingMode::Zeros);
        assert_eq!(conv_naive(&p, &w, None, &x), vec![1.0, 0.0, 12.0, 0.0, 123.0, 0.0, 230.0, 0.0, 300.0]);
    }

    #[test]
    fn groups_by_hand() {
        // 2 groups, 2 input channels, 4 output channels (2 per group), 1×1 kernel, 2-d 1×2 input.
        let p = ConvProblem {
            transposed: false,
            batch: 1,
            in_channels: 2,
            out_channels: 4,
            groups: 2,
            in_size: [1, 1, 2],
            out_size: [1, 1, 2],
            kernel: [1, 1, 1],
            stride: [1; 3],
            pad: [0; 3],
            dilation: [1; 3],
            pad_mode: PaddingMode::Zeros,
        };
        let x = [1.0, 2.0, 10.0, 20.0];
        let w = [1.0, -1.0, 2.0, 3.0];
        assert_eq!(conv_naive(&p, &w, None, &x), vec![1.0, 2.0, -1.0, -2.0, 20.0, 40.0, 30.0, 60.0]);
        // The same as a transposed conv: weight [C, K/g] = [[1, -1], [2, 3]] gives the same result.
        let p = ConvProblem { transposed: true, ..p };
        assert_eq!(conv_naive(&p, &w, None, &x), vec![1.0, 2.0, -1.0, -2.0, 20.0, 40.0, 30.0, 60.0]);
    }

    #[test]
    fn int8_by_hand() {
        // y[o] = Σ_j (x̃[o - 1 + j] − 10)(w[j] − 1), zero padding reads the zero point 10.
        let p = p1d(false, 1, 1, 4, 4, 3, 1, 1, 1, PaddingMode::Zeros);
        let x = [12u8, 10, 255, 0];
        let w = [2i8, 1, -128];
        // centred x = [2, 0, 245, -10], w = [1, 0, -129]: y[o] = x̃[o-1] - 129·x̃[o+1]
        let want = [0, 2 - 129 * 245, 129 * 10, 245];
        assert_eq!(conv_int8_acc(&p, &w, &[1], &x, 10), want.to_vec());
        // Replicate reads the edge codes instead.
        let p = p1d(false, 1, 1, 4, 4, 3, 1, 1, 1, PaddingMode::Replicate);
        assert_eq!(conv_int8_acc(&p, &w, &[1], &x, 10)[0], 2);
        assert_eq!(conv_int8_acc(&p, &w, &[1], &x, 10)[3], 245 + 129 * 10);
    }

    /// The integer oracle equals the f64 oracle on the centred values (exact in f64).
    #[test]
    fn int8_matches_f64_oracle_on_centred_values() {
        use crate::testing::{random_problem, ProblemBudget, Rng};
        let mut rng = Rng::new(77);
        let mut done = 0;
        while done < 150 {
            let transposed = rng.chance(40);
            let Some(p) = random_problem(&mut rng, transposed, ProblemBudget::SMALL) else { continue };
            let x: Vec<u8> = (0..p.input_len()).map(|_| rng.next_u64() as u8).collect();
            let w: Vec<i8> = (0..p.weight_len()).map(|_| rng.next_u64() as i8).collect();
            let xzp = rng.range(0, 255) as i32;
            let nz = if rng.chance(50) {
                1
            } else if p.transposed {
                p.out_channels / p.groups
            } else {
                p.out_channels
            };
            let wzp: Vec<i32> = (0..nz).map(|_| rng.range(0, 255) as i32 - 128).collect();
            let acc = conv_int8_acc(&p, &w, &wzp, &x, xzp);
            // Centre the weights per output channel; transposed weights are [C, K/g, taps].
            let taps: usize = p.kernel.iter().product();
            let (cg, kg) = (p.in_channels / p.groups, p.out_channels / p.groups);
            let wf: Vec<f32> = w
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let o = if p.transposed {
                        let (c, kl) = (i / taps / kg, i / taps % kg);
                        (c / cg) * kg + kl
                    } else {
                        i / taps / cg
                    };
                    let j = channel_entry(nz, o, p.out_channels, p.groups, p.transposed).unwrap();
                    (v as i32 - wzp[j]) as f32
                })
                .collect();
            let xf: Vec<f32> = x.iter().map(|&v| (v as i32 - xzp) as f32).collect();
            // The f64 oracle reads zeros for padded taps: the same as x_zp after centring.
            let want = conv_naive(&p, &wf, None, &xf);
            assert!(acc.iter().zip(&want).all(|(&a, &b)| a as f64 == b), "{p:?}");
            done += 1;
        }
    }
}
