//! Test support shared by every test of the crate: one deterministic PRNG and one generator of
//! random convolution problems.
//!
//! Unit tests of both backends, the CPU transcriptions of the CUDA kernels, the integration tests
//! in `tests/`, the examples and the benchmark data all draw from [`Rng`], so a seed means the
//! same stream everywhere. [`random_problem`] draws [`ConvProblem`]s that cover what the kernels
//! branch on (dimensions, groups and depthwise, channel counts across tile sizes, every padding
//! mode, strides, dilations, output padding) and that the f64 oracle can evaluate quickly.
//!
//! Not part of the documented API: it is public (hidden) only so that `tests/`, `examples/` and
//! `fuzz/` can use it.

use crate::problem::{ConvProblem, PaddingMode};

/// A small deterministic generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator with the given seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (`lo <= hi`).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// `true` with the given probability in percent.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    /// One of `items` (non-empty), uniformly.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.range(0, items.len() - 1)]
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    /// `n` values uniform in `[lo, hi)`.
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    /// `n` values uniform in `[-1, 1)`.
    pub fn signed(&mut self, n: usize) -> Vec<f32> {
        self.vec(n, -1.0, 1.0)
    }
}

/// Size limits of [`random_problem`].
#[derive(Clone, Copy, Debug)]
pub struct ProblemBudget {
    /// Largest multiply-add count (keeps the f64 oracle cheap).
    pub max_macs: f64,
    /// Largest output element count.
    pub max_output: usize,
}

impl ProblemBudget {
    /// What a unit test can afford per problem against the oracle.
    pub const SMALL: ProblemBudget = ProblemBudget { max_macs: 4e6, max_output: 200_000 };
}

/// A random valid problem, or `None` when the drawn sizes give an empty output or exceed `budget`
/// (callers draw again).
///
/// Channels come from six families: small dense, grouped, depthwise, depthwise with a channel
/// multiplier, one output channel per group, and dense with channel counts that cross the CPU
/// micro-kernel rows (6, 8) and the GPU tiles' 16- and 32-row steps. Forward problems use every
/// padding mode (with the largest padding each mode allows, and one extra trailing element now
/// and then, as `padding='same'` with an even kernel gives); transposed ones zeros padding and
/// output padding.
pub fn random_problem(rng: &mut Rng, transposed: bool, budget: ProblemBudget) -> Option<ConvProblem> {
    let ndim = rng.range(1, 3);
    let (groups, cg, kg) = match rng.range(0, 6) {
        0 => (1, rng.range(1, 5), rng.range(1, 5)),
        1 => (rng.range(2, 3), rng.range(1, 4), rng.range(1, 8)),
        2 => {
            let c = rng.range(1, 6);
            (c, 1, 1)
        }
        3 => (rng.range(2, 4), 1, rng.range(2, 3)),
        4 => (rng.range(1, 2), rng.range(1, 3), 1),
        5 => (rng.range(1, 2), rng.pick(&[3, 5, 9, 17]), rng.pick(&[33, 70])),
        _ => (1, rng.range(8, 40), rng.range(7, 20)),
    };
    let pad_mode = if transposed {
        PaddingMode::Zeros
    } else {
        rng.pick(&[PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular])
    };
    let mut p = ConvProblem {
        transposed,
        batch: rng.range(1, 3),
        in_channels: groups * cg,
        out_channels: groups * kg,
        groups,
        in_size: [1; 3],
        out_size: [1; 3],
        kernel: [1; 3],
        stride: [1; 3],
        pad: [0; 3],
        dilation: [1; 3],
        pad_mode,
    };
    for d in 3 - ndim..3 {
        let big = ndim == 1 && rng.chance(30);
        let len = if big { rng.range(20, 300) } else { rng.range(1, if ndim == 3 { 7 } else { 12 }) };
        let k = rng.range(1, if ndim == 3 { 3 } else { 5 });
        let s = rng.range(1, 3);
        let dil = rng.range(1, 3);
        let span = (k - 1) * dil;
        if transposed {
            let pad = rng.range(0, span);
            let out_pad = rng.range(0, s.max(dil) - 1);
            let full = (len - 1) * s + span + out_pad + 1;
            if full <= 2 * pad {
                return None;
            }
            p.out_size[d] = full - 2 * pad;
            p.pad[d] = pad;
        } else {
            let max_pad = match pad_mode {
                PaddingMode::Zeros => span + 1,
                PaddingMode::Replicate => 3,
                PaddingMode::Reflect => len - 1,
                PaddingMode::Circular => len,
            };
            let pad = rng.range(0, max_pad.min(span + 1));
            // Trailing padding may exceed the leading one by 1 ('same' with an even kernel).
            let extra = usize::from(pad < max_pad && rng.chance(30));
            let padded = len + 2 * pad + extra;
            if padded < span + 1 {
                return None;
            }
            p.out_size[d] = (padded - span - 1) / s + 1;
            p.pad[d] = pad;
        }
        p.in_size[d] = len;
        p.kernel[d] = k;
        p.stride[d] = s;
        p.dilation[d] = dil;
    }
    (p.flops() / 2.0 < budget.max_macs && p.output_len() < budget.max_output).then_some(p)
}

/// Every tiny geometry, forward and transposed: sizes 1–3 along one, two or three dimensions,
/// kernels 1–3, strides and dilations 1–2, padding 0–1 in every padding mode (zeros only for
/// transposed convolutions; reflect and circular only where the padding is smaller than the
/// size), depthwise and GEMM channel counts, batch 1 or 2. Edge cases that random problems
/// rarely draw: one-column rows, stride phases that no kernel tap reaches.
pub fn tiny_problems() -> Vec<ConvProblem> {
    let modes = [PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate, PaddingMode::Circular];
    let mut out = Vec::new();
    for transposed in [false, true] {
        for (c, k, groups) in [(1, 1, 1), (1, 2, 1), (2, 2, 2), (2, 4, 2), (3, 2, 1)] {
            for l in 1..=3usize {
                for shape in [[1, 1, l], [1, l, 2], [l, 1, 3]] {
                    // The kernel, stride, dilation and padding apply along the dimensions a
                    // 1-, 2- or 3-d module has (extent > 1, and always the last).
                    let active: [bool; 3] = std::array::from_fn(|d| shape[d] > 1 || d == 2);
                    for ks in 1..=3usize {
                        for (stride, dil, pad) in [(1, 1, 0), (2, 1, 1), (1, 2, 1), (2, 2, 0), (1, 1, 1)] {
                            for mode in modes {
                                if transposed && mode != PaddingMode::Zeros {
                                    continue;
                                }
                                let on = |d: usize, v: usize, off: usize| if active[d] { v } else { off };
                                let pd = |d: usize| on(d, pad, 0);
                                if matches!(mode, PaddingMode::Reflect | PaddingMode::Circular)
                                    && (0..3).any(|d| pd(d) >= shape[d])
                                {
                                    continue;
                                }
                                let size = |d: usize| -> Option<usize> {
                                    let (l, k, s, dl, p) =
                                        (shape[d], on(d, ks, 1), on(d, stride, 1), on(d, dil, 1), pd(d));
                                    if transposed {
                                        ((l - 1) * s + dl * (k - 1) + 1).checked_sub(2 * p)
                                    } else {
                                        (l + 2 * p).checked_sub(dl * (k - 1) + 1).map(|v| v / s + 1)
                                    }
                                };
                                let (Some(o0), Some(o1), Some(o2)) = (size(0), size(1), size(2)) else { continue };
                                if [o0, o1, o2].contains(&0) {
                                    continue;
                                }
                                out.push(ConvProblem {
                                    transposed,
                                    batch: 1 + out.len() % 2,
                                    in_channels: c,
                                    out_channels: k,
                                    groups,
                                    in_size: shape,
                                    out_size: [o0, o1, o2],
                                    kernel: std::array::from_fn(|d| on(d, ks, 1)),
                                    stride: std::array::from_fn(|d| on(d, stride, 1)),
                                    pad: std::array::from_fn(pd),
                                    dilation: std::array::from_fn(|d| on(d, dil, 1)),
                                    pad_mode: mode,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// One case of the lowered-module fixtures (`tests/fixtures/int8.safetensors`, written by
/// `scripts/gen_int8_fixtures.py` from PyTorch runs): the call as a backend receives it and the
/// expected output codes (PyTorch's, or the exact oracle's where the case's `check` is `oracle`).
#[derive(Clone, Debug)]
pub struct Int8Fixture {
    /// The case's name (its key prefix).
    pub name: String,
    /// The convolution (PyTorch's 1-d and 2-d ones with leading unit dimensions).
    pub problem: ConvProblem,
    /// Input codes, NCDHW.
    pub x: Vec<u8>,
    /// Input zero point.
    pub x_zero: i32,
    /// Weight codes, PyTorch layout.
    pub w: Vec<i8>,
    /// Weight zero points (1 per tensor, or one per channel along the weight axis).
    pub w_zero: Vec<i32>,
    /// The requantization of the module's qparams and the input scale.
    pub table: crate::quant::RequantTable,
    /// The expected output codes, NCDHW.
    pub want: Vec<u8>,
    /// `"fbgemm"` or `"oracle"`.
    pub check: String,
}

/// Every case of an int8 fixture file, in generation order (`__cases__`). Errors when the file
/// cannot be read or a case lacks an entry the format requires.
pub fn load_int8_fixtures(path: &std::path::Path) -> crate::error::Result<Vec<Int8Fixture>> {
    use crate::error::Error;
    use crate::io::{StateDict, StoredData, StoredTensor};
    use crate::quant::{RequantParams, RequantTable, WeightScales};
    let bad = |what: String| Error::Parse {
        what: "int8 fixture",
        value: what,
        expected: "the format of scripts/gen_int8_fixtures.py".into(),
    };
    let sd = StateDict::load(path)?;
    let cases: Vec<String> = sd
        .metadata
        .get("__cases__")
        .and_then(|c| serde_json::from_str(c).ok())
        .ok_or_else(|| bad("__cases__".into()))?;
    let floats = |t: &StoredTensor| -> Vec<f64> {
        match &t.data {
            StoredData::F64(v) => v.clone(),
            StoredData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            _ => Vec::new(),
        }
    };
    let ints = |t: &StoredTensor| -> Vec<i64> {
        match &t.data {
            StoredData::I64(v) => v.clone(),
            StoredData::I32(v) => v.iter().map(|&x| x as i64).collect(),
            _ => Vec::new(),
        }
    };
    let mut out = Vec::with_capacity(cases.len());
    for name in cases {
        let t = |k: &str| sd.tensors.get(&format!("{name}.{k}")).ok_or_else(|| bad(format!("{name}.{k}")));
        let meta = |k: &str| sd.metadata.get(&format!("{name}.{k}")).cloned().ok_or_else(|| bad(format!("{name}.{k}")));
        let m: serde_json::Value = serde_json::from_str(&meta("module")?).map_err(|_| bad(format!("{name}.module")))?;
        let list = |key: &str| -> crate::error::Result<Vec<usize>> {
            m[key]
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_u64().map(|v| v as usize)).collect())
                .ok_or_else(|| bad(format!("{name}.module.{key}")))
        };
        let count = |key: &str| m[key].as_u64().map(|v| v as usize).ok_or_else(|| bad(format!("{name}.module.{key}")));
        let transposed = m["type"].as_str().unwrap_or_default().contains("Transpose");
        let ks = list("kernel_size")?;
        let nd = ks.len().clamp(1, 3);
        let pad3 = |v: Vec<usize>, fill: usize| -> [usize; 3] {
            let mut a = [fill; 3];
            for (i, x) in v.into_iter().take(nd).enumerate() {
                a[3 - nd + i] = x;
            }
            a
        };
        let (kernel, stride, pad, dilation) =
            (pad3(ks, 1), pad3(list("stride")?, 1), pad3(list("padding")?, 0), pad3(list("dilation")?, 1));
        let out_pad = if transposed { pad3(list("output_padding")?, 0) } else { [0; 3] };
        let input = t("input")?;
        let (StoredData::U8(x), StoredData::I8(w), StoredData::U8(want)) =
            (&input.data, &t("weight")?.data, &t("output")?.data)
        else {
            return Err(bad(format!("{name}: input/output u8 and weight i8")));
        };
        let in_size = pad3(input.shape.get(2..).unwrap_or_default().to_vec(), 1);
        let mut out_size = [1; 3];
        for d in 0..3 {
            let span = dilation[d] * (kernel[d] - 1) + 1;
            out_size[d] = if transposed {
                ((in_size[d] - 1) * stride[d] + span + out_pad[d]).saturating_sub(2 * pad[d])
            } else {
                (in_size[d] + 2 * pad[d]).saturating_sub(span) / stride[d] + 1
            };
        }
        let problem = ConvProblem {
            transposed,
            batch: input.shape.first().copied().unwrap_or(0),
            in_channels: count("in_channels")?,
            out_channels: count("out_channels")?,
            groups: count("groups")?,
            in_size,
            out_size,
            kernel,
            stride,
            pad,
            dilation,
            pad_mode: m["padding_mode"].as_str().unwrap_or("zeros").parse()?,
        };
        let ws = floats(t("weight_scale")?);
        let bias = match sd.tensors.get(&format!("{name}.bias")).map(|b| &b.data) {
            Some(StoredData::F32(v)) => Some(v.clone()),
            None => None,
            Some(_) => return Err(bad(format!("{name}.bias"))),
        };
        let first = |v: Vec<f64>| v.first().copied().ok_or_else(|| bad(format!("{name}: an empty scalar")));
        let params = RequantParams {
            input_scale: first(floats(t("input_scale")?))?,
            weight_scales: if meta("weight_qscheme")? == "torch.per_channel_affine" {
                WeightScales::PerChannel(&ws)
            } else {
                WeightScales::PerTensor(first(ws.clone())?)
            },
            output_scale: first(floats(t("scale")?))?,
            output_zero_point: ints(t("zero_point")?).first().copied().unwrap_or(0) as i32,
            bias: bias.as_deref(),
            relu: m["relu"].as_bool().unwrap_or(false),
        };
        let table = RequantTable::new(transposed, problem.out_channels, problem.groups, &params)?;
        out.push(Int8Fixture {
            problem,
            x: x.clone(),
            x_zero: ints(t("input_zero_point")?).first().copied().unwrap_or(0) as i32,
            w: w.clone(),
            w_zero: ints(t("weight_zero_point")?).iter().map(|&v| v as i32).collect(),
            table,
            want: want.clone(),
            check: meta("check")?,
            name,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_splitmix64() {
        // The first outputs of SplitMix64 seeded with 0 (published reference values).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn random_problems_are_valid_and_varied() {
        let mut rng = Rng::new(1);
        let (mut fwd, mut tr, mut modes) = (0, 0, std::collections::BTreeSet::new());
        for i in 0..2000 {
            let Some(p) = random_problem(&mut rng, i % 3 == 0, ProblemBudget::SMALL) else { continue };
            assert!(p.in_channels.is_multiple_of(p.groups) && p.out_channels.is_multiple_of(p.groups));
            assert!(p.output_len() > 0 && p.input_len() > 0);
            if p.transposed {
                tr += 1;
                assert_eq!(p.pad_mode, PaddingMode::Zeros);
            } else {
                fwd += 1;
                modes.insert(p.pad_mode.as_str());
            }
        }
        assert!(fwd > 500 && tr > 300, "{fwd} forward, {tr} transposed");
        assert_eq!(modes.len(), 4);
    }
}
