//! Host-side packings of a lowered int8 convolution's weight for the device kernels (pure
//! functions, no CUDA): the s8 codes of the tensor-core tiles (`cuda/conv_imma.cu`) packed
//! `[K][taps][cg_pad]` ([`pack_imma`], the geometry of [`WeightGeometry`] with `cg_pad` a multiple
//! of 16), the per-phase column sums their epilogue subtracts ([`col_sums`]), the weight zero
//! point of every output channel ([`expand_zero_points`]), and the centred `[taps][K]` int16
//! weight of the depthwise kernel (`cuda/int8_simt.cu`, [`pack_depthwise_centred`]).
//!
//! The active taps of a transposed convolution's phase are [`phase_taps`], the host's statement of
//! `qc_tap_set` (`cuda/conv_igemm.cuh`).

use crate::cuda::pack::WeightGeometry;
use crate::problem::ConvProblem;
use crate::quant::requant::channel_entry;

/// Channel slots per tap of the int8 tiles: a 16-byte chunk holds 16 codes of one tap.
pub const IMMA_CHANNEL_ALIGN: usize = 16;

/// `C/groups` as the int8 tiles see it: `cg` rounded up to a multiple of 16 (the input's extra
/// channel slots hold the input zero point, the weight's zero codes).
pub fn imma_cg_pad(cg: usize) -> usize {
    cg.div_ceil(IMMA_CHANNEL_ALIGN) * IMMA_CHANNEL_ALIGN
}

/// The packed weight geometry of the int8 tiles for `p` (rows of `taps · cg_pad` codes).
pub fn imma_geometry(p: &ConvProblem) -> WeightGeometry {
    let groups = p.groups.max(1);
    let cg = p.in_channels / groups;
    WeightGeometry {
        out_channels: p.out_channels,
        cg,
        cg_pad: imma_cg_pad(cg),
        taps: p.kernel.iter().product(),
        groups,
    }
}

/// The weight codes (PyTorch layout: forward `[K, C/groups, taps]`, transposed `[C, K/groups,
/// taps]`) packed `[K][taps][cg_pad]` for the int8 tiles, zero codes in the padded channel slots.
///
/// # Panics
///
/// If `w` is shorter than the weight of `p`.
pub fn pack_imma(p: &ConvProblem, w: &[i8]) -> Vec<i8> {
    imma_geometry(p).pack(p.transposed, w, |v| v)
}

/// The kernel offsets of dimension `d` that contribute to the outputs of residue `r` (transposed:
/// `(r + pad − j·dilation)` a multiple of the stride; forward, `r = 0`: every offset).
fn active_offsets(p: &ConvProblem, d: usize, r: usize) -> Vec<usize> {
    (0..p.kernel[d])
        .filter(|&j| {
            !p.transposed
                || (r as i64 + p.pad[d] as i64 - (j * p.dilation[d]) as i64).rem_euclid(p.stride[d].max(1) as i64) == 0
        })
        .collect()
}

/// The number of phases: transposed, the product of the strides; forward 1.
pub fn num_phases(p: &ConvProblem) -> usize {
    if p.transposed {
        p.stride.iter().map(|&s| s.max(1)).product()
    } else {
        1
    }
}

/// The active kernel taps (flattened `(j0·k1 + j1)·k2 + j2`) of phase `phase`, in the order the
/// kernels reduce them (`qc_phase`, `qc_tap_set`: row-major over the active offsets). Forward
/// convolutions have one phase with every tap.
pub fn phase_taps(p: &ConvProblem, phase: usize) -> Vec<usize> {
    let phases = if p.transposed { p.stride.map(|s| s.max(1)) } else { [1; 3] };
    let r = [phase / phases[2] / phases[1], (phase / phases[2]) % phases[1], phase % phases[2]];
    let [a0, a1, a2] = [0, 1, 2].map(|d| active_offsets(p, d, r[d]));
    let mut taps = Vec::with_capacity(a0.len() * a1.len() * a2.len());
    for &j0 in &a0 {
        for &j1 in &a1 {
            for &j2 in &a2 {
                taps.push((j0 * p.kernel[1] + j1) * p.kernel[2] + j2);
            }
        }
    }
    taps
}

/// The longest reduction of `p` over the valid channels: (active taps of the largest phase) ×
/// `C/groups` — the number of products in one exact accumulator.
pub fn max_reduction(p: &ConvProblem) -> u64 {
    let cg = (p.in_channels / p.groups.max(1)) as u64;
    let per_dim = |d: usize| {
        let phases = if p.transposed { p.stride[d].max(1) } else { 1 };
        (0..phases).map(|r| active_offsets(p, d, r).len() as u64).max().unwrap_or(0)
    };
    (0..3).map(per_dim).product::<u64>() * cg
}

/// `[num_phases][K]`: the sum of output channel `k`'s weight codes over the phase's active taps
/// and the `C/groups` channels of its group (the epilogue subtracts `x_zero` times it).
pub fn col_sums(p: &ConvProblem, w: &[i8]) -> Vec<i32> {
    let g = imma_geometry(p);
    let mut out = Vec::with_capacity(num_phases(p) * p.out_channels);
    for phase in 0..num_phases(p) {
        let taps = phase_taps(p, phase);
        for k in 0..p.out_channels {
            let s: i64 = taps
                .iter()
                .flat_map(|&t| (0..g.cg).map(move |c| (c, t)))
                .map(|(c, t)| w[g.module_index(p.transposed, k, c, t)] as i64)
                .sum();
            // |s| <= 128 * (taps x C/groups), within i32 wherever the tiles run (at most 33,025 terms).
            out.push(s.clamp(i32::MIN as i64, i32::MAX as i64) as i32);
        }
    }
    out
}

/// The weight zero point of every output channel (`[K]`) from a list of 1, `out_channels` or
/// (transposed) `out_channels / groups` entries ([`channel_entry`]); `None` for another length.
pub fn expand_zero_points(p: &ConvProblem, zero_points: &[i32]) -> Option<Vec<i32>> {
    (0..p.out_channels)
        .map(|k| channel_entry(zero_points.len(), k, p.out_channels, p.groups, p.transposed).map(|j| zero_points[j]))
        .collect()
}

/// The depthwise kernel's weight (`C/groups == 1`, forward): `[taps][K]` centred codes
/// `w − w_zero[k]` (in `−255..=255`) as int16; `zero` per output channel ([`expand_zero_points`]).
///
/// # Panics
///
/// If `w` or `zero` is shorter than `p` needs.
pub fn pack_depthwise_centred(p: &ConvProblem, w: &[i8], zero: &[i32]) -> Vec<i16> {
    let taps: usize = p.kernel.iter().product();
    let k_all = p.out_channels;
    let mut out = vec![0i16; taps * k_all];
    for k in 0..k_all {
        for t in 0..taps {
            out[t * k_all + k] = (w[k * taps + t] as i32 - zero[k]) as i16;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::PaddingMode;

    fn tr(kernel: usize, stride: usize, pad: usize, dil: usize) -> ConvProblem {
        ConvProblem {
            transposed: true,
            batch: 1,
            in_channels: 4,
            out_channels: 6,
            groups: 2,
            in_size: [1, 1, 5],
            out_size: [1, 1, (5 - 1) * stride + dil * (kernel - 1) + 1 - 2 * pad],
            kernel: [1, 1, kernel],
            stride: [1, 1, stride],
            pad: [0, 0, pad],
            dilation: [1, 1, dil],
            pad_mode: PaddingMode::Zeros,
        }
    }

    #[test]
    fn phases_taps_and_reductions() {
        assert_eq!(imma_cg_pad(1), 16);
        assert_eq!(imma_cg_pad(16), 16);
        assert_eq!(imma_cg_pad(17), 32);
        // Kernel 4, stride 2, pad 1: phase 0 takes taps 1 and 3, phase 1 taps 0 and 2.
        let p = tr(4, 2, 1, 1);
        assert_eq!(num_phases(&p), 2);
        assert_eq!(phase_taps(&p, 0), vec![1, 3]);
        assert_eq!(phase_taps(&p, 1), vec![0, 2]);
        assert_eq!(max_reduction(&p), 2 * 2);
        // Kernel 2, stride 3: one phase has no tap.
        let p = tr(2, 3, 0, 1);
        assert_eq!((phase_taps(&p, 0), phase_taps(&p, 1), phase_taps(&p, 2)), (vec![0], vec![1], vec![]));
        // Forward: one phase with every tap.
        let f = ConvProblem { transposed: false, out_size: [1, 1, 3], ..tr(3, 1, 0, 1) };
        assert_eq!((num_phases(&f), phase_taps(&f, 0)), (1, vec![0, 1, 2]));
        assert_eq!(max_reduction(&f), 3 * 2);
    }

    #[test]
    fn col_sums_and_zero_points() {
        // Transposed [C=4, K/g=3, taps=4], groups 2: output channel k = g*3 + m reads c in group g.
        let p = tr(4, 2, 1, 1);
        let w: Vec<i8> = (0..4 * 3 * 4).map(|i: i32| (i * 7 % 255 - 127) as i8).collect();
        let cs = col_sums(&p, &w);
        assert_eq!(cs.len(), 2 * 6);
        for phase in 0..2 {
            for k in 0..6 {
                let (g, m) = (k / 3, k % 3);
                let want: i32 = (0..2)
                    .flat_map(|c| phase_taps(&p, phase).into_iter().map(move |t| (c, t)))
                    .map(|(c, t)| w[((g * 2 + c) * 3 + m) * 4 + t] as i32)
                    .sum();
                assert_eq!(cs[phase * 6 + k], want);
            }
        }
        // Axis-1 zero points of a transposed weight: entry k mod (K/groups).
        assert_eq!(expand_zero_points(&p, &[1, 2, 3]).unwrap(), vec![1, 2, 3, 1, 2, 3]);
        assert_eq!(expand_zero_points(&p, &[5]).unwrap(), vec![5; 6]);
        assert!(expand_zero_points(&p, &[1, 2]).is_none());
        // Packing: [K][taps][16] with zero codes past the 2 channels.
        let packed = pack_imma(&p, &w);
        assert_eq!(packed.len(), 6 * 4 * 16);
        assert_eq!(packed[16 + 1], w[3 * 4 + 1]); // k 0, tap 1, c 1 = w[c 1][m 0][tap 1]
        assert!(packed[2..16].iter().all(|&v| v == 0));
    }

    #[test]
    fn depthwise_weight_is_centred_and_tap_major() {
        let p = ConvProblem {
            transposed: false,
            batch: 1,
            in_channels: 2,
            out_channels: 4,
            groups: 2,
            in_size: [1, 1, 3],
            out_size: [1, 1, 2],
            kernel: [1, 1, 2],
            stride: [1; 3],
            pad: [0; 3],
            dilation: [1; 3],
            pad_mode: PaddingMode::Zeros,
        };
        let w = [-128i8, 127, 0, 1, 2, 3, 4, 5];
        let z = [127, -128, 0, 1];
        assert_eq!(pack_depthwise_centred(&p, &w, &z), vec![-255, 128, 2, 3, 0, 129, 3, 4]);
    }
}
