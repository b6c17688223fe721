//! The requantization of a lowered int8 convolution: the exact integer accumulator of an output
//! element becomes a u8 code, exactly as docs/numerics.md §14.5 (PyTorch's FBGEMM output
//! processing, bit for bit).
//!
//! [`RequantTable`] holds everything that is per output channel, computed once per (module,
//! input scale) on the host: `mult = f32(atws / out_scale)` with `atws = f32(f32(x_scale) ·
//! f32(w_scale))`, and the bias as one fused multiply-add pair. [`RequantTable::requantize`] is
//! the scalar epilogue: the integer oracle's ([`crate::oracle::conv_int8_naive`]) and the
//! portable kernels'; every SIMD epilogue must equal it bit for bit.
//!
//! **One bias form for both weight schemes.** Per-channel weights add `f32(b / atws)` (two
//! roundings: the divide here, the add in the epilogue); per-tensor weights compute
//! `fma(b, f32(1 / atws), v)` (one rounding). Since `fma(a, 1, v) = round(a + v)` exactly (also
//! for infinities, NaN and signed zeros), the epilogue always evaluates `fma(bias_a[o],
//! bias_b[o], v)` with `(bias_a, bias_b) = (f32(b / atws), 1)` per channel and `(b, f32(1 /
//! atws))` per tensor; without a bias it skips the step.
//!
//! **The conversion** is x86's `cvtps2dq`: round half to even, `i32::MIN` for NaN and for
//! `|y| ≥ 2³¹` (large *positive* results therefore give code 0, as in FBGEMM). Then the clamp to
//! int16, the output zero point, and the clamp to `[relu ? out_zp : 0, 255]`.
//!
//! Validation follows §14.7's "what qconv does": non-finite scales are
//! [`Error::NonFiniteScale`], zero points outside their dtype's range
//! [`Error::ZeroPointOutOfRange`]; zero and negative scales, NaN/inf/huge biases are accepted
//! and evaluated as the formula says.

use crate::error::{Error, Result};

/// The weight scales of a lowered convolution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WeightScales<'a> {
    /// One scale for the whole weight (`torch.per_tensor_affine`).
    PerTensor(f64),
    /// One scale per channel (`torch.per_channel_affine`): along axis 0 of a forward weight
    /// (`out_channels` entries), along axis 1 of a transposed one (`out_channels / groups`
    /// entries; output channel `o` uses entry `o mod (out_channels / groups)`). A transposed
    /// weight may also give `out_channels` entries, one per output channel.
    PerChannel(&'a [f64]),
}

/// The parameters of a [`RequantTable`]: the module's weight scales, bias and output qparams,
/// and the input scale of the call.
#[derive(Clone, Copy, Debug)]
pub struct RequantParams<'a> {
    /// The activations' scale (`x.q_scale()`, a double in PyTorch; rounded to f32 first).
    pub input_scale: f64,
    /// The weight scales.
    pub weight_scales: WeightScales<'a>,
    /// The output scale.
    pub output_scale: f64,
    /// The output zero point, `0..=255`.
    pub output_zero_point: i32,
    /// The float bias, one per output channel.
    pub bias: Option<&'a [f32]>,
    /// Fused ReLU (`ConvReLU*d`): the codes' floor is the output zero point.
    pub relu: bool,
}

/// Which entry of a per-channel qparam list of length `len` output channel `o` uses, for a
/// convolution with `out_channels` outputs in `groups` groups: `0` for one entry, `o` for
/// `out_channels` entries, `o mod (out_channels / groups)` for `out_channels / groups` entries
/// (transposed weights' axis 1). `None` for any other length.
pub fn channel_entry(len: usize, o: usize, out_channels: usize, groups: usize, transposed: bool) -> Option<usize> {
    let og = out_channels / groups.max(1);
    if len == 1 {
        Some(0)
    } else if len == out_channels {
        Some(o)
    } else if transposed && len == og && og > 0 {
        Some(o % og)
    } else {
        None
    }
}

/// The lengths a per-channel list may have, in words, for error messages.
pub(crate) fn channel_lengths_rule(out_channels: usize, groups: usize, transposed: bool) -> String {
    if transposed {
        format!(
            "a transposed weight takes 1 entry, out_channels/groups = {} (axis 1) or out_channels = {out_channels}",
            out_channels / groups.max(1)
        )
    } else {
        format!("a forward weight takes 1 entry or out_channels = {out_channels} (axis 0)")
    }
}

/// Checks an activation (quint8) zero point: `0..=255`.
pub fn check_activation_zero_point(zero_point: i64) -> Result<()> {
    if (0..=255).contains(&zero_point) {
        Ok(())
    } else {
        Err(Error::ZeroPointOutOfRange { zero_point, dtype: "torch.quint8".into(), min: 0, max: 255 })
    }
}

/// Checks a weight (qint8) zero point: `-128..=127`.
pub fn check_weight_zero_point(zero_point: i64) -> Result<()> {
    if (-128..=127).contains(&zero_point) {
        Ok(())
    } else {
        Err(Error::ZeroPointOutOfRange { zero_point, dtype: "torch.qint8".into(), min: -128, max: 127 })
    }
}

fn check_scale(scale: f64, channel: usize) -> Result<()> {
    if scale.is_finite() {
        Ok(())
    } else {
        Err(Error::NonFiniteScale { scale, channel })
    }
}

/// Extra zero entries past the last channel, so that SIMD epilogues may load whole vectors of
/// 16 channels starting at any channel below `out_channels` rounded up to 16.
const TABLE_SLACK: usize = 32;

/// The per-output-channel requantization of one lowered convolution call (docs/numerics.md
/// §14.5), see the [module documentation](self).
#[derive(Clone, Debug, PartialEq)]
pub struct RequantTable {
    out_channels: usize,
    /// `mult[o] = f32(atws[o] / f32(out_scale))`.
    mult: Vec<f32>,
    /// The bias as `fma(bias_a[o], bias_b[o], v)`.
    bias_a: Vec<f32>,
    bias_b: Vec<f32>,
    has_bias: bool,
    out_zp: i32,
    relu: bool,
}

/// `cvtps2dq` under the default MXCSR: round half to even; NaN or outside `[-2³¹, 2³¹)` gives
/// `i32::MIN`.
#[inline]
pub fn cvtps2dq(y: f32) -> i32 {
    if y.is_nan() || !(-2147483648.0..2147483648.0).contains(&y) {
        i32::MIN
    } else {
        y.round_ties_even() as i32
    }
}

impl RequantTable {
    /// Builds the table of a convolution with `out_channels` outputs in `groups` groups.
    ///
    /// Errors: [`Error::NonFiniteScale`] for a NaN or infinite input, weight or output scale
    /// (channel 0 for the input and output scales); [`Error::ZeroPointOutOfRange`] for an
    /// output zero point outside `0..=255`; [`Error::QParamShape`] for a per-channel list of
    /// another length than [`channel_entry`] accepts, [`Error::Shape`] for a bias that does not
    /// have `out_channels` elements; [`Error::InvalidConfig`] for zero channels or groups, or
    /// groups that do not divide the channels.
    pub fn new(transposed: bool, out_channels: usize, groups: usize, p: &RequantParams<'_>) -> Result<RequantTable> {
        if groups == 0 {
            return Err(Error::config("groups", groups, "must be at least 1"));
        }
        if out_channels == 0 || !out_channels.is_multiple_of(groups) {
            return Err(Error::config(
                "out_channels",
                out_channels,
                format!("must be a positive multiple of groups = {groups}"),
            ));
        }
        check_scale(p.input_scale, 0)?;
        check_scale(p.output_scale, 0)?;
        check_activation_zero_point(p.output_zero_point as i64)?;
        let (scales, per_channel): (&[f64], bool) = match &p.weight_scales {
            WeightScales::PerTensor(s) => (std::slice::from_ref(s), false),
            WeightScales::PerChannel(s) => (s, true),
        };
        if scales.is_empty()
            || (0..out_channels).any(|o| channel_entry(scales.len(), o, out_channels, groups, transposed).is_none())
        {
            return Err(Error::QParamShape {
                param: "weight_scale",
                shape: vec![scales.len()],
                rule: channel_lengths_rule(out_channels, groups, transposed),
            });
        }
        for (j, &s) in scales.iter().enumerate() {
            check_scale(s, j)?;
        }
        if let Some(b) = p.bias {
            if b.len() != out_channels {
                return Err(Error::shape(
                    "bias",
                    &[b.len()],
                    format!("expected {out_channels} elements (out_channels)"),
                ));
            }
        }
        let a = p.input_scale as f32;
        let os = p.output_scale as f32;
        let n = out_channels + TABLE_SLACK;
        let (mut mult, mut bias_a, mut bias_b) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
        for o in 0..out_channels {
            let j = channel_entry(scales.len(), o, out_channels, groups, transposed).unwrap_or(0);
            let atws = a * scales[j] as f32;
            mult[o] = atws / os;
            if let Some(b) = p.bias {
                if per_channel {
                    (bias_a[o], bias_b[o]) = (b[o] / atws, 1.0);
                } else {
                    (bias_a[o], bias_b[o]) = (b[o], 1.0 / atws);
                }
            }
        }
        Ok(RequantTable {
            out_channels,
            mult,
            bias_a,
            bias_b,
            has_bias: p.bias.is_some(),
            out_zp: p.output_zero_point,
            relu: p.relu,
        })
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// The output zero point.
    pub fn output_zero_point(&self) -> i32 {
        self.out_zp
    }

    /// Whether the ReLU is fused.
    pub fn relu(&self) -> bool {
        self.relu
    }

    /// The code of output channel `channel` for the exact accumulator `acc` (docs/numerics.md
    /// §14.5; `f32(acc)` rounds to nearest even, which matters only beyond `2²⁴`).
    ///
    /// # Panics
    ///
    /// If `channel >= self.out_channels()`.
    #[inline]
    pub fn requantize(&self, acc: i64, channel: usize) -> u8 {
        assert!(channel < self.out_channels, "channel {channel} of {}", self.out_channels);
        let mut v = acc as f32;
        if self.has_bias {
            v = fma_or_add(self.bias_a[channel], self.bias_b[channel], v);
        }
        self.finish(v * self.mult[channel])
    }

    /// The integer steps after the scaling: `cvtps2dq`, the int16 clamp, the zero point and the
    /// u8 clamp (floor `out_zp` with ReLU).
    #[inline]
    fn finish(&self, y: f32) -> u8 {
        let q = cvtps2dq(y).clamp(-32768, 32767) + self.out_zp;
        q.clamp(self.floor(), 255) as u8
    }

    /// The smallest code: `out_zp` with ReLU, else 0.
    #[inline]
    pub(crate) fn floor(&self) -> i32 {
        if self.relu {
            self.out_zp
        } else {
            0
        }
    }

    /// Whether the table adds a bias.
    #[inline]
    pub(crate) fn has_bias(&self) -> bool {
        self.has_bias
    }

    /// `mult`, `bias_a`, `bias_b` per channel, each `out_channels + 32` long (zeros past the
    /// last channel), for the SIMD epilogues.
    #[inline]
    pub(crate) fn lanes(&self) -> (&[f32], &[f32], &[f32]) {
        (&self.mult, &self.bias_a, &self.bias_b)
    }
}

/// `fma(a, b, v)`, as the plain sum `a + v` where `b == 1` (the same value: the product is
/// exact), so that per-channel biases need no software `fma` on targets without one.
#[inline]
fn fma_or_add(a: f32, b: f32, v: f32) -> f32 {
    if b == 1.0 {
        a + v
    } else {
        a.mul_add(b, v)
    }
}

#[cfg(test)]
#[path = "requant_tests.rs"]
mod tests;
