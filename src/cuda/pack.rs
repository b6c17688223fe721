//! Host-side packings of a convolution weight for the device kernels (pure functions, no CUDA):
//! the geometry of the tensor-core weight ([`WeightGeometry`], rows of [`tc_weight_row`]
//! elements), the shape a module's weight has in backend terms ([`WeightSpec`]), the TF32
//! rounding of the TF32 tiles' weight ([`tf32_round`]) and the `[taps][C]` packing of the
//! depthwise kernel ([`pack_depthwise`]). The 8-bit codes are packed by `cuda/codes.rs`.

/// C/groups as the tensor-core tiles see a forward convolution: `cg` itself when it is a
/// multiple of 8, else (forward convolutions with at least 2 channels per group and 16 output
/// channels per group) `cg` rounded up to 8, the input being copied with zero channels by
/// `qc_pad_channels` first: the 16-byte loader on 8/3 of the work beats the element-wise loader
/// for a 3-channel stem. `None` when no padding applies (the element-wise loader or the CUDA-core
/// kernels take the problem).
pub fn padded_cg(transposed: bool, cg: usize, kg: usize) -> Option<usize> {
    (!transposed && cg >= 2 && !cg.is_multiple_of(8) && kg >= 16).then(|| cg.div_ceil(8) * 8)
}

/// Elements per row of the packed tensor-core weight: `taps * C/groups` rounded up to 8.
pub fn tc_weight_row(cg: usize, taps: usize) -> usize {
    (cg * taps).div_ceil(8) * 8
}

/// The geometry of a weight packed for the tensor-core kernels (16-bit values, TF32 values or
/// 8-bit codes): `[out_channels][row]` with row = `taps · cg_pad` rounded up to 8 ([`tc_weight_row`]),
/// element (output channel k, tap t, input channel c of the group) at `k·row + t·cg_pad + c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightGeometry {
    /// Output channels K.
    pub out_channels: usize,
    /// Input channels per group.
    pub cg: usize,
    /// Channel slots per tap: `cg`, or more when the input's channels are padded
    /// ([`padded_cg`]); the slots past `cg` hold zeros.
    pub cg_pad: usize,
    /// Kernel taps.
    pub taps: usize,
    /// Groups.
    pub groups: usize,
}

impl WeightGeometry {
    /// Elements (or codes) per packed row.
    pub fn row(&self) -> usize {
        tc_weight_row(self.cg_pad, self.taps)
    }

    /// Index, in the module's own weight layout, of output channel `k`, input channel `c` of its
    /// group and tap `t`: forward `[K][cg][taps]`; transposed `[C][K/groups][taps]`, where output
    /// channel k = g·kg + m reads input channel g·cg + c.
    pub fn module_index(&self, transposed: bool, k: usize, c: usize, t: usize) -> usize {
        let kg = self.out_channels / self.groups.max(1);
        if transposed {
            let (g, m) = (k / kg, k % kg);
            ((g * self.cg + c) * kg + m) * self.taps + t
        } else {
            (k * self.cg + c) * self.taps + t
        }
    }

    /// A weight in the module's layout (`src`) packed `[K][row]`, element (k, t, c) at
    /// `k·row + t·cg_pad + c`, each value converted by `conv`; the padding slots hold
    /// `E::default()`.
    pub fn pack<S: Copy, E: Copy + Default>(&self, transposed: bool, src: &[S], conv: impl Fn(S) -> E) -> Vec<E> {
        let row = self.row();
        let mut out = vec![E::default(); self.out_channels * row];
        for k in 0..self.out_channels {
            for c in 0..self.cg {
                for t in 0..self.taps {
                    out[k * row + t * self.cg_pad + c] = conv(src[self.module_index(transposed, k, c, t)]);
                }
            }
        }
        out
    }
}

/// A convolution weight as the CUDA backend sees it: direction, channels, groups and kernel taps
/// (module layout: forward `[K, C/groups, taps]`, transposed `[C, K/groups, taps]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightSpec {
    /// Transposed convolution.
    pub transposed: bool,
    /// Input channels C.
    pub in_channels: usize,
    /// Output channels K.
    pub out_channels: usize,
    /// Groups (divides C and K).
    pub groups: usize,
    /// Kernel taps (the product of the kernel size).
    pub taps: usize,
}

impl WeightSpec {
    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.in_channels / self.groups.max(1)
    }

    /// Output channels per group.
    pub fn kg(&self) -> usize {
        self.out_channels / self.groups.max(1)
    }

    /// The geometry of the packed tensor-core weight (and codes): `cg_pad` is `C/groups`, rounded
    /// up to 8 where the forward tensor-core path pads the input's channels
    /// ([`padded_cg`]).
    pub fn geometry(&self) -> WeightGeometry {
        let (cg, kg) = (self.cg(), self.kg());
        WeightGeometry {
            out_channels: self.out_channels,
            cg,
            cg_pad: padded_cg(self.transposed, cg, kg).unwrap_or(cg),
            taps: self.taps,
            groups: self.groups.max(1),
        }
    }
}

/// `v` rounded to TF32 (10 explicit mantissa bits) to nearest, ties away from zero: the
/// rounding of PTX `cvt.rna.tf32.f32`, which the TF32 tiles apply to the activations. Non-finite
/// values are returned unchanged; values within half a TF32 ulp of the largest finite f32 round
/// to infinity, as the instruction does.
pub fn tf32_round(v: f32) -> f32 {
    if !v.is_finite() {
        return v;
    }
    f32::from_bits(v.to_bits().wrapping_add(0x1000) & !0x1fff)
}

/// A depthwise weight (module layout `[C, 1, taps]`) packed `[taps][C]` for the channels-last
/// depthwise kernel.
pub fn pack_depthwise(w: &[f32], channels: usize, taps: usize) -> Vec<f32> {
    let mut packed = vec![0f32; channels * taps];
    for ch in 0..channels {
        for t in 0..taps {
            packed[t * channels + ch] = w[ch * taps + t];
        }
    }
    packed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf32_rounding_is_to_nearest_ties_away() {
        let ulp = 2f32.powi(-10); // TF32 spacing in [1, 2)
        assert_eq!(tf32_round(1.0), 1.0);
        assert_eq!(tf32_round(1.0 + ulp), 1.0 + ulp);
        assert_eq!(tf32_round(1.0 + 0.49 * ulp), 1.0);
        assert_eq!(tf32_round(1.0 + 0.51 * ulp), 1.0 + ulp);
        // Ties go away from zero (not to even): 1 + ulp/2 -> 1 + ulp, 1 + 1.5 ulp -> 1 + 2 ulp.
        assert_eq!(tf32_round(1.0 + 0.5 * ulp), 1.0 + ulp);
        assert_eq!(tf32_round(1.0 + 1.5 * ulp), 1.0 + 2.0 * ulp);
        assert_eq!(tf32_round(-(1.0 + 0.5 * ulp)), -(1.0 + ulp));
        assert_eq!(tf32_round(-0.0).to_bits(), (-0.0f32).to_bits());
        // Carry into the exponent, overflow to infinity, subnormals, non-finite values.
        assert_eq!(tf32_round(2.0 - 0.25 * ulp), 2.0);
        assert_eq!(tf32_round(f32::MAX), f32::INFINITY);
        assert_eq!(tf32_round(f32::from_bits(0x0000_1000)), f32::from_bits(0x0000_2000));
        assert_eq!(tf32_round(f32::from_bits(0x0000_0fff)), 0.0);
        assert!(tf32_round(f32::NAN).is_nan());
        assert_eq!(tf32_round(f32::NEG_INFINITY), f32::NEG_INFINITY);
        for v in [0.1f32, -3.7, 1234.567, 1e-20] {
            let r = tf32_round(v);
            assert_eq!(r.to_bits() & 0x1fff, 0);
            assert!(((r - v) / v).abs() <= 2f32.powi(-11));
        }
    }
}
