//! A timing hook for the int8 engine (not part of the API): `benches/int8.rs` and, later, the
//! `qconv bench` command build a case with [`Int8Bench::new`] and time [`Int8Bench::run`].
//!
//! The data follow `scripts/bench/torch_cpu.py --ops int8`: weights uniform in `±1/sqrt(fan_in)`
//! quantized symmetric qint8 (per output channel for convolutions, per tensor for transposed
//! ones, as FBGEMM requires), a float bias in the same range, the input uniform in `[-1, 1)`
//! quantized per tensor with the reduced range (scale 2/127, zero point 64: codes 0..=127), and
//! the output qparams of a min/max observer over `[0, 255]` on the float output (computed by the
//! float engine on the dequantized operands).

use super::{conv_int8, ActivationLayout, Int8Isa, PackedInt8Weight};
use crate::cpu::{conv, PackedWeight};
use crate::error::Result;
use crate::problem::ConvProblem;
use crate::quant::{RequantParams, RequantTable, WeightScales};
use crate::testing::Rng;

/// The reduced-range activation scale of the suite.
pub const ACT_SCALE: f64 = 2.0 / 127.0;
/// The activation zero point of the suite.
pub const ACT_ZERO_POINT: i32 = 64;

/// One prepared int8 case.
#[derive(Debug)]
pub struct Int8Bench {
    /// The problem.
    pub p: ConvProblem,
    /// The packed weight.
    pub weight: PackedInt8Weight,
    /// The requantization of the case.
    pub table: RequantTable,
    /// The input codes, in `layout`.
    pub x: Vec<u8>,
    /// The output codes of the last run.
    pub y: Vec<u8>,
    /// The activations' layout.
    pub layout: ActivationLayout,
    /// The i8 weight codes (PyTorch's layout), for building the same case as a module.
    pub weight_codes: Vec<i8>,
    /// The weight scales: one per output channel (forward) or one (transposed); zero points 0.
    pub weight_scales: Vec<f32>,
    /// The float bias.
    pub bias: Vec<f32>,
    /// The output scale.
    pub output_scale: f64,
    /// The output zero point.
    pub output_zero_point: i32,
}

/// `round_ties_even(v / s)` clamped to `[lo, hi]`.
fn q(v: f32, s: f32, zp: i32, lo: i32, hi: i32) -> i32 {
    ((v / s).round_ties_even() as i32 + zp).clamp(lo, hi)
}

impl Int8Bench {
    /// Builds the case `p` (weights per channel for convolutions, per tensor for transposed ones)
    /// for the kernels of `level` (the best ones by default), with data drawn from `seed`.
    pub fn new(p: &ConvProblem, layout: ActivationLayout, level: Option<Int8Isa>, seed: u64) -> Result<Int8Bench> {
        let mut rng = Rng::new(seed);
        let taps: usize = p.kernel.iter().product();
        let (cg, kg) = (p.in_channels / p.groups, p.out_channels / p.groups);
        let fan_in = if p.transposed { kg } else { cg } * taps;
        let bound = 1.0 / (fan_in as f32).sqrt();
        let wf = rng.vec(p.weight_len(), -bound, bound);
        let bias = rng.vec(p.out_channels, -bound, bound);
        let xf = rng.vec(p.input_len(), -1.0, 1.0);
        // Weight scales: per output channel (forward, axis 0) or per tensor (transposed).
        let per = if p.transposed { p.weight_len() } else { cg * taps };
        let scales: Vec<f32> = if p.transposed {
            vec![wf.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-8) / 127.0]
        } else {
            wf.chunks(per).map(|r| r.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-8) / 127.0).collect()
        };
        let wq: Vec<i8> = wf.iter().enumerate().map(|(i, &v)| q(v, scales[i / per], 0, -128, 127) as i8).collect();
        let s_act = ACT_SCALE as f32;
        let xq: Vec<u8> = xf.iter().map(|&v| q(v, s_act, ACT_ZERO_POINT, 0, 255) as u8).collect();
        // The float output of the dequantized operands, for the output qparams.
        let wd: Vec<f32> = wq.iter().enumerate().map(|(i, &c)| c as f32 * scales[i / per]).collect();
        let xd: Vec<f32> = xq.iter().map(|&c| (c as i32 - ACT_ZERO_POINT) as f32 * s_act).collect();
        let fw = PackedWeight::new(p.transposed, p.in_channels, p.out_channels, p.groups, p.kernel, &wd)?;
        let mut yf = vec![0f32; p.output_len()];
        conv(p, &fw, Some(&bias), &xd, &mut yf)?;
        let (lo, hi) = yf.iter().fold((0f32, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
        let out_scale = ((hi - lo) / 255.0).max(1e-8) as f64;
        let out_zp = ((-lo as f64 / out_scale).round() as i32).clamp(0, 255);
        let ws: Vec<f64> = scales.iter().map(|&s| s as f64).collect();
        let params = RequantParams {
            input_scale: ACT_SCALE,
            weight_scales: if p.transposed { WeightScales::PerTensor(ws[0]) } else { WeightScales::PerChannel(&ws) },
            output_scale: out_scale,
            output_zero_point: out_zp,
            bias: Some(&bias),
            relu: false,
        };
        let table = RequantTable::new(p.transposed, p.out_channels, p.groups, &params)?;
        let level = level.unwrap_or_else(Int8Isa::best);
        let weight = PackedInt8Weight::with_level(
            level,
            p.transposed,
            p.in_channels,
            p.out_channels,
            p.groups,
            p.kernel,
            &wq,
            &[0],
        )?;
        let x = match layout {
            ActivationLayout::ChannelsFirst => xq,
            ActivationLayout::ChannelsLast => {
                let (c, s) = (p.in_channels, p.in_size.iter().product::<usize>());
                let mut y = vec![0u8; xq.len()];
                for n in 0..p.batch {
                    for ch in 0..c {
                        for i in 0..s {
                            y[(n * s + i) * c + ch] = xq[(n * c + ch) * s + i];
                        }
                    }
                }
                y
            }
        };
        Ok(Int8Bench {
            p: p.clone(),
            weight,
            table,
            x,
            y: vec![0; p.output_len()],
            layout,
            weight_codes: wq,
            weight_scales: scales,
            bias,
            output_scale: out_scale,
            output_zero_point: out_zp,
        })
    }

    /// One forward call.
    pub fn run(&mut self) -> Result<()> {
        conv_int8(&self.p, &self.weight, &self.table, ACT_ZERO_POINT, &self.x, self.layout, &mut self.y)
    }
}
