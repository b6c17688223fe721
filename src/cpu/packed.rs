//! The packed weight: a convolution weight laid out once, per module, for the micro-kernels.
//!
//! [`PackedWeight`] stores, per group, `ceil(Kg/mr)` panels laid out `[tap][c][mr]` (zero-padded
//! rows past `Kg`), so the GEMM micro-kernel reads `mr` contiguous weights per reduction step;
//! `Kg == 1` weights are stored `[tap][c]` (`mr = 1`) for the direct path. `mr` is
//! [`MR_WIDE`] = 8 when the CPU's kernels run 8-row tiles (AVX-512) and 8-row panels pad `Kg`
//! no more than 6-row ones (every multiple of 8: no wasted rows for 64 or 128 channels, where
//! 6-row panels compute 3% extra), else [`MR`] = 6 (the most whose 2-register accumulator rows
//! fit the 16 AVX2 registers). Every kernel accepts both heights.

use super::geometry::checked_product;
use super::kernels::{Isa, MR, MR_WIDE};
use crate::error::{Error, Result};
use crate::problem::ConvProblem;

/// A convolution weight packed once for the micro-kernel.
///
/// Layout: per group, `ceil(Kg / mr)` panels of `[tap][c][mr]` (`tap` over the `k0·k1·k2` kernel
/// taps, `c` over the `Cg` input channels of the group, `mr` output channels, zero-padded past
/// `Kg`). `mr` is the GEMM micro-kernel's row count, chosen when packing: 8 where the CPU's
/// kernels run 8-row tiles (AVX-512) and 8-row panels pad `Kg` to no more rows than 6-row ones,
/// else 6; or 1 when `Kg == 1` (depthwise-like), which uses the direct path.
#[derive(Clone, Debug)]
pub struct PackedWeight {
    pub(super) transposed: bool,
    pub(super) in_channels: usize,
    pub(super) out_channels: usize,
    pub(super) groups: usize,
    pub(super) kernel: [usize; 3],
    /// Rows per panel: [`MR`], [`MR_WIDE`], or 1 (`Kg == 1`).
    pub(super) mr: usize,
    /// Panels per group.
    pub(super) panels: usize,
    pub(super) data: Vec<f32>,
}

impl PackedWeight {
    /// Packs `weight`, laid out `[K, C/g, k0, k1, k2]` (forward) or `[C, K/g, k0, k1, k2]`
    /// (transposed), as described in [`ConvProblem`].
    ///
    /// Errors: [`Error::InvalidConfig`] if a channel count, the group count or a kernel size is
    /// zero or the groups do not divide both channel counts; [`Error::Shape`] if `weight` does not
    /// have `C·K/g·k0·k1·k2` elements; [`Error::Overflow`] if that product overflows.
    pub fn new(
        transposed: bool,
        in_channels: usize,
        out_channels: usize,
        groups: usize,
        kernel: [usize; 3],
        weight: &[f32],
    ) -> Result<PackedWeight> {
        if groups == 0 {
            return Err(Error::config("groups", groups, "must be at least 1"));
        }
        if in_channels == 0 || !in_channels.is_multiple_of(groups) {
            return Err(Error::config(
                "in_channels",
                in_channels,
                format!("must be a positive multiple of groups = {groups}"),
            ));
        }
        if out_channels == 0 || !out_channels.is_multiple_of(groups) {
            return Err(Error::config(
                "out_channels",
                out_channels,
                format!("must be a positive multiple of groups = {groups}"),
            ));
        }
        if kernel.contains(&0) {
            return Err(Error::config("kernel_size", format!("{kernel:?}"), "every kernel size must be at least 1"));
        }
        let cg = in_channels / groups;
        let kg = out_channels / groups;
        checked_product(&kernel, "kernel size")?;
        let shape = if transposed {
            [in_channels, kg, kernel[0], kernel[1], kernel[2]]
        } else {
            [out_channels, cg, kernel[0], kernel[1], kernel[2]]
        };
        let expected = checked_product(&shape, "weight elements")?;
        if weight.len() != expected {
            return Err(Error::shape(
                "weight",
                &[weight.len()],
                format!("a weight of shape {shape:?} needs {expected} elements"),
            ));
        }
        let mr = if kg == 1 { 1 } else { tile_rows(kg, Isa::best().wide_tiles()) };
        Self::pack(transposed, [in_channels, out_channels, groups], kernel, weight, mr)
    }

    /// Packs with `mr` rows per panel (`1` only for `Kg == 1`); the lengths are checked by `new`.
    pub(super) fn pack(
        transposed: bool,
        [in_channels, out_channels, groups]: [usize; 3],
        kernel: [usize; 3],
        weight: &[f32],
        mr: usize,
    ) -> Result<PackedWeight> {
        let (cg, kg) = (in_channels / groups, out_channels / groups);
        let kk = checked_product(&kernel, "kernel size")?;
        let panels = kg.div_ceil(mr);
        let len = checked_product(&[groups, panels, kk, cg, mr], "packed weight elements")?;
        let mut data = crate::alloc::try_filled(len, 0.0f32, || "the packed weight".into())?;
        let mut at = 0;
        for g in 0..groups {
            for panel in 0..panels {
                for tap in 0..kk {
                    for c in 0..cg {
                        for m in 0..mr {
                            let k = panel * mr + m;
                            if k < kg {
                                data[at] = if transposed {
                                    weight[((g * cg + c) * kg + k) * kk + tap]
                                } else {
                                    weight[((g * kg + k) * cg + c) * kk + tap]
                                };
                            }
                            at += 1;
                        }
                    }
                }
            }
        }
        Ok(PackedWeight { transposed, in_channels, out_channels, groups, kernel, mr, panels, data })
    }

    /// Whether this is the weight of a transposed convolution.
    pub fn transposed(&self) -> bool {
        self.transposed
    }

    /// Input channels C.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Output channels K.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Groups.
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Kernel size `[k0, k1, k2]`.
    pub fn kernel(&self) -> [usize; 3] {
        self.kernel
    }

    /// Whether this weight fits `p` (same direction, channels, groups and kernel size).
    pub fn matches(&self, p: &ConvProblem) -> bool {
        self.transposed == p.transposed
            && self.in_channels == p.in_channels
            && self.out_channels == p.out_channels
            && self.groups == p.groups
            && self.kernel == p.kernel
    }

    /// Number of packed `f32` values (including the zero padding of the last panel of a group).
    pub fn packed_len(&self) -> usize {
        self.data.len()
    }
}

/// Rows per weight panel for `kg > 1` output channels per group: [`MR_WIDE`] where `wide` and it
/// pads `kg` to no more rows than [`MR`] does (128 → 128 rather than 132), else [`MR`]. Every
/// kernel accepts both; the AVX2 and portable ones run an 8-row panel as two 4-row halves.
pub(super) fn tile_rows(kg: usize, wide: bool) -> usize {
    if wide && kg.div_ceil(MR_WIDE) * MR_WIDE <= kg.div_ceil(MR) * MR {
        MR_WIDE
    } else {
        MR
    }
}

#[cfg(test)]
#[path = "packed_tests.rs"]
mod tests;
