//! [`PackedInt8Weight`]: the i8 weight codes of a lowered convolution, laid out once per module
//! for the kernels of one [`Int8Isa`] level, with the sums the zero-point corrections need.
//!
//! **GEMM layout** (more than one input channel per group): per group, per panel of 16 output
//! channels, per kernel tap, the group's input channels padded to the level's unit `u` (4 bytes;
//! 64 for AMX tiles) as quads: `[g][panel][tap][cu/4][16][4]` with `cu = ceil(Cg/u)·u`; channels
//! past `Cg` and past the group's last output channel are zero. One quad row (16 channels × 4
//! k) is one `zmm` for `vpdpbusd`; 16 consecutive rows are one AMX B tile. A reduction run (a tap,
//! or several taps that are contiguous in the padded activations) is a contiguous stretch of a
//! panel, so one packing serves every geometry, forward or transposed (whose phases pick subsets
//! of the taps).
//!
//! **Depthwise layout** (one input channel per group): the centred weights `w − w_zp[o]` as i16,
//! `[o][tap]`, from which each call builds its pairs of taps.
//!
//! **Sums.** `tap_sums[t·K + o] = Σ_c w[o, c, t]` over the real input channels, so a call with
//! activation zero point `x_zp` corrects a sub-convolution with taps `T` by the per-channel
//! constant `−x_zp · Σ_{t∈T} (tap_sums[t, o] − Cg·w_zp[o])` (docs/numerics.md §14.3).

use std::sync::{Arc, Mutex};

use super::aligned::AlignedBytes;
use super::kernels::{Int8Isa, KPlan, KRun};
use crate::cpu::geometry::checked_product;
use crate::error::{Error, Result};
use crate::problem::ConvProblem;
use crate::quant::requant::{channel_entry, channel_lengths_rule, check_weight_zero_point};

/// Zero entries past the last output channel in the per-channel vectors (SIMD loads).
pub(super) const CHANNEL_SLACK: usize = 32;

/// A lowered convolution's int8 weight, packed once for the int8 kernels: per group and panel
/// of 16 output channels, per kernel tap, the group's input channels as quads of 4 bytes
/// (`[k/4][16][4]`, the layout of `vpdpbusd` operands and of AMX B tiles), with the per-tap
/// column sums of the zero-point correction; one input channel per group (depthwise) keeps the
/// centred weights instead.
#[derive(Clone, Debug)]
pub struct PackedInt8Weight {
    pub(super) transposed: bool,
    pub(super) in_channels: usize,
    pub(super) out_channels: usize,
    pub(super) groups: usize,
    pub(super) kernel: [usize; 3],
    /// The kernel level the GEMM packing is laid out for.
    pub(super) level: Int8Isa,
    /// Weight zero point per output channel (`out_channels + CHANNEL_SLACK`, zeros past the end).
    pub(super) wzp: Vec<i32>,
    pub(super) any_wzp: bool,
    /// `Σ_c w[o, c, t]`, `[tap][out_channels]` (GEMM layout only).
    pub(super) tap_sums: Vec<i64>,
    /// Reduction bytes per tap in a panel (`Cg` rounded up to the unit).
    pub(super) cu: usize,
    /// Unit of the packing in bytes.
    pub(super) unit: usize,
    /// Panels of 16 output channels per group.
    pub(super) panels: usize,
    /// Bytes per panel (`taps · cu · 16`).
    pub(super) panel_len: usize,
    /// The GEMM packing (empty for depthwise weights), 64-byte aligned.
    pub(super) data: AlignedBytes,
    /// The centred depthwise weights `[o][tap]` (empty for GEMM weights).
    pub(super) dw: Vec<i16>,
    /// AMX packings derived for the reduction plans met so far (see [`AmxPack`]).
    amx: Arc<Mutex<Vec<Arc<AmxPack>>>>,
}

/// The weight laid out for the AMX kernel and one reduction plan: the runs of each of the plan's
/// chunks (4-byte units of the canonical packing) in activation order, those whose activations
/// are contiguous merged, each padded to whole 64-byte units (1 KiB B tiles per panel), the pad
/// zero, panels `panel_len` bytes apart.
#[derive(Debug)]
pub(super) struct AmxPack {
    /// The plan's runs as `(activation offset, canonical weight offset, quads)`, chunk by chunk
    /// (`usize::MAX` entries separate chunks): the cache key.
    key: Vec<(usize, usize, usize)>,
    /// The chunks' plans with 64-byte units and offsets into the AMX panels.
    pub(super) plans: Vec<KPlan>,
    pub(super) panel_len: usize,
    pub(super) data: AlignedBytes,
}

/// Most AMX packings a weight keeps (one per geometry it meets; a module has one).
const AMX_CACHE: usize = 8;

impl PackedInt8Weight {
    /// Packs the i8 codes `weight_codes`, in PyTorch's layout (`[out_channels, in_channels /
    /// groups, k0, k1, k2]` forward, `[in_channels, out_channels / groups, k0, k1, k2]`
    /// transposed), with `weight_zero_points` (1 entry per tensor, `out_channels` per channel,
    /// or for a transposed weight `out_channels / groups`: output channel `o` uses entry `o mod
    /// (out_channels / groups)`), for the best int8 kernels of this CPU.
    ///
    /// Errors: [`Error::InvalidConfig`] if a channel count, the group count or a kernel size is
    /// zero or the groups do not divide both channel counts; [`Error::Shape`] if `weight_codes`
    /// has another length; [`Error::QParamShape`] for a zero-point list of another length;
    /// [`Error::ZeroPointOutOfRange`] for a zero point outside `-128..=127`;
    /// [`Error::Overflow`] if a size overflows.
    pub fn new(
        transposed: bool,
        in_channels: usize,
        out_channels: usize,
        groups: usize,
        kernel: [usize; 3],
        weight_codes: &[i8],
        weight_zero_points: &[i32],
    ) -> Result<PackedInt8Weight> {
        Self::with_level(
            Int8Isa::best(),
            transposed,
            in_channels,
            out_channels,
            groups,
            kernel,
            weight_codes,
            weight_zero_points,
        )
    }

    /// [`PackedInt8Weight::new`] for the kernels of `level` (tests and benchmarks compare
    /// levels); a level this CPU lacks runs the best one below it.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn with_level(
        level: Int8Isa,
        transposed: bool,
        in_channels: usize,
        out_channels: usize,
        groups: usize,
        kernel: [usize; 3],
        weight_codes: &[i8],
        weight_zero_points: &[i32],
    ) -> Result<PackedInt8Weight> {
        if groups == 0 {
            return Err(Error::config("groups", groups, "must be at least 1"));
        }
        for (param, v) in [("in_channels", in_channels), ("out_channels", out_channels)] {
            if v == 0 || !v.is_multiple_of(groups) {
                return Err(Error::config(param, v, format!("must be a positive multiple of groups = {groups}")));
            }
        }
        if kernel.contains(&0) {
            return Err(Error::config("kernel_size", format!("{kernel:?}"), "every kernel size must be at least 1"));
        }
        let level = Int8Isa::ALL.into_iter().rev().find(|l| *l <= level && l.supported()).unwrap_or(Int8Isa::Portable);
        let (cg, kg) = (in_channels / groups, out_channels / groups);
        let taps = checked_product(&kernel, "kernel size")?;
        let shape = if transposed {
            [in_channels, kg, kernel[0], kernel[1], kernel[2]]
        } else {
            [out_channels, cg, kernel[0], kernel[1], kernel[2]]
        };
        let expected = checked_product(&shape, "weight elements")?;
        if weight_codes.len() != expected {
            return Err(Error::shape(
                "weight",
                &[weight_codes.len()],
                format!("expected {expected} int8 codes, the PyTorch layout {shape:?}"),
            ));
        }
        let nz = weight_zero_points.len();
        if nz == 0 || (0..out_channels).any(|o| channel_entry(nz, o, out_channels, groups, transposed).is_none()) {
            return Err(Error::QParamShape {
                param: "weight_zero_point",
                shape: vec![nz],
                rule: channel_lengths_rule(out_channels, groups, transposed),
            });
        }
        for &z in weight_zero_points {
            check_weight_zero_point(z as i64)?;
        }
        let mut wzp = vec![0i32; out_channels + CHANNEL_SLACK];
        for (o, z) in wzp.iter_mut().enumerate().take(out_channels) {
            *z = weight_zero_points[channel_entry(nz, o, out_channels, groups, transposed).unwrap_or(0)];
        }
        let any_wzp = wzp.iter().any(|&z| z != 0);
        // Code of (output channel o, input channel c of its group, tap t).
        let code = |o: usize, c: usize, t: usize| -> i8 {
            if transposed {
                let (g, ol) = (o / kg, o % kg);
                weight_codes[((g * cg + c) * kg + ol) * taps + t]
            } else {
                weight_codes[(o * cg + c) * taps + t]
            }
        };
        let mut w = PackedInt8Weight {
            transposed,
            in_channels,
            out_channels,
            groups,
            kernel,
            level,
            wzp,
            any_wzp,
            tap_sums: Vec::new(),
            cu: 0,
            unit: 4,
            panels: 0,
            panel_len: 0,
            data: AlignedBytes::default(),
            dw: Vec::new(),
            amx: Arc::default(),
        };
        if cg == 1 {
            let mut dw = Vec::with_capacity(checked_product(&[out_channels, taps], "weight elements")?);
            for o in 0..out_channels {
                dw.extend((0..taps).map(|t| (code(o, 0, t) as i32 - w.wzp[o]) as i16));
            }
            w.dw = dw;
            return Ok(w);
        }
        let unit = w.unit;
        let cu = cg.div_ceil(unit) * unit;
        let panels = kg.div_ceil(16);
        let panel_len = checked_product(&[taps, cu, 16], "packed weight")?;
        let mut data = AlignedBytes::zeroed(
            checked_product(&[groups, panels, panel_len], "packed weight")?,
            "the packed int8 weight",
        )?;
        let codes = data.codes_mut();
        let mut tap_sums = vec![0i64; checked_product(&[taps, out_channels], "tap sums")?];
        for o in 0..out_channels {
            let (g, ol) = (o / kg, o % kg);
            let base = (g * panels + ol / 16) * panel_len + (ol % 16) * 4;
            for t in 0..taps {
                let mut sum = 0i64;
                for c in 0..cg {
                    let v = code(o, c, t);
                    sum += v as i64;
                    let k = t * cu + c;
                    codes[base + (k / 4) * 64 + k % 4] = v;
                }
                tap_sums[t * out_channels + o] = sum;
            }
        }
        (w.cu, w.panels, w.panel_len, w.data, w.tap_sums) = (cu, panels, panel_len, data, tap_sums);
        Ok(w)
    }

    /// The AMX packing for the reduction `chunks` (4-byte-unit plans over this weight's
    /// canonical packing), built on first use and kept.
    pub(super) fn amx_pack(&self, chunks: &[KPlan]) -> Result<Arc<AmxPack>> {
        let mut key = Vec::new();
        for (ci, c) in chunks.iter().enumerate() {
            if ci > 0 {
                key.push((usize::MAX, usize::MAX, usize::MAX));
            }
            key.extend(c.runs().iter().map(|r| (r.a, r.b, r.units * c.unit() / 4)));
        }
        let mut cache = self.amx.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = cache.iter().find(|p| p.key == key) {
            return Ok(hit.clone());
        }
        let mut plans = Vec::with_capacity(chunks.len());
        let mut at = 0usize; // bytes into an AMX panel
        let mut copies = Vec::new(); // (canonical offset, AMX offset, bytes)
        for c in chunks {
            // Runs in activation order; runs whose activations continue each other become one
            // AMX run (their weights are copied one after the other, whatever their canonical
            // places: e.g. the taps of a transposed phase, which the canonical order reverses).
            let mut runs4: Vec<KRun> = c.runs().to_vec();
            runs4.sort_by_key(|r| r.a);
            let mut runs = Vec::with_capacity(runs4.len());
            let mut i = 0;
            while i < runs4.len() {
                let a0 = runs4[i].a;
                let mut len = 0; // activation bytes of the merged run
                while i < runs4.len() && runs4[i].a == a0 + len {
                    let bytes = runs4[i].units * c.unit();
                    copies.push((runs4[i].b, at + 16 * len, 16 * bytes));
                    len += bytes;
                    i += 1;
                }
                let units = len.div_ceil(64);
                runs.push(KRun { a: a0, b: at, units });
                at += units * 1024;
            }
            plans.push(KPlan::new(64, runs));
        }
        let panels = self.groups * self.panels;
        let mut data = AlignedBytes::zeroed(panels * at, "the AMX weight packing")?;
        let dst = data.codes_mut();
        let src = self.data.codes();
        for p in 0..panels {
            for &(from, to, bytes) in &copies {
                dst[p * at + to..p * at + to + bytes].copy_from_slice(&src[p * self.panel_len + from..][..bytes]);
            }
        }
        let pack = Arc::new(AmxPack { key, plans, panel_len: at, data });
        if cache.len() >= AMX_CACHE {
            cache.remove(0);
        }
        cache.push(pack.clone());
        Ok(pack)
    }

    /// Whether the weight was packed for `p`'s channels, groups, kernel and direction.
    pub(super) fn matches(&self, p: &ConvProblem) -> bool {
        self.transposed == p.transposed
            && self.in_channels == p.in_channels
            && self.out_channels == p.out_channels
            && self.groups == p.groups
            && self.kernel == p.kernel
    }

    /// The kernel level this weight runs with.
    pub fn level(&self) -> Int8Isa {
        self.level
    }

    /// Input channels per group.
    pub(super) fn cg(&self) -> usize {
        self.in_channels / self.groups
    }

    /// Output channels per group.
    pub(super) fn kg(&self) -> usize {
        self.out_channels / self.groups
    }
}

#[cfg(test)]
#[path = "packed_tests.rs"]
mod tests;
