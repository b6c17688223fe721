//! Observers that compute weight qparams the way PyTorch's `MinMaxObserver` and
//! `PerChannelMinMaxObserver` do (`torch/ao/quantization/observer.py`, docs/numerics.md §4.8).
//!
//! All arithmetic is float32, in PyTorch's order of operations, so the scales and zero points come
//! out bit-identical. [`Observer::weight_qparams`] turns the result into [`WeightQParams`] the way
//! PyTorch's converters do (`get_qparam_dict`: symmetric qschemes map to the affine ones, and
//! `quant_min`/`quant_max` are recorded).

use crate::error::{Error, Result};
use crate::quant::{QParamTensor, QScheme, QuantDType, WeightQParams};
use crate::tensor::Tensor;

/// The qschemes an observer can compute parameters for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObserverScheme {
    /// `torch.per_tensor_affine`.
    PerTensorAffine,
    /// `torch.per_tensor_symmetric`.
    PerTensorSymmetric,
    /// `torch.per_channel_affine`.
    PerChannelAffine,
    /// `torch.per_channel_symmetric`.
    PerChannelSymmetric,
    /// `torch.per_channel_affine_float_qparams`.
    PerChannelAffineFloatQParams,
}

impl ObserverScheme {
    /// `true` for the per-channel schemes.
    pub fn is_per_channel(&self) -> bool {
        !matches!(self, ObserverScheme::PerTensorAffine | ObserverScheme::PerTensorSymmetric)
    }

    fn is_symmetric(&self) -> bool {
        matches!(self, ObserverScheme::PerTensorSymmetric | ObserverScheme::PerChannelSymmetric)
    }

    /// PyTorch's spelling.
    pub fn torch_name(&self) -> &'static str {
        match self {
            ObserverScheme::PerTensorAffine => "torch.per_tensor_affine",
            ObserverScheme::PerTensorSymmetric => "torch.per_tensor_symmetric",
            ObserverScheme::PerChannelAffine => "torch.per_channel_affine",
            ObserverScheme::PerChannelSymmetric => "torch.per_channel_symmetric",
            ObserverScheme::PerChannelAffineFloatQParams => "torch.per_channel_affine_float_qparams",
        }
    }

    /// Parses PyTorch's spelling (with or without `torch.`).
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.strip_prefix("torch.").unwrap_or(s) {
            "per_tensor_affine" => ObserverScheme::PerTensorAffine,
            "per_tensor_symmetric" => ObserverScheme::PerTensorSymmetric,
            "per_channel_affine" => ObserverScheme::PerChannelAffine,
            "per_channel_symmetric" => ObserverScheme::PerChannelSymmetric,
            "per_channel_affine_float_qparams" => ObserverScheme::PerChannelAffineFloatQParams,
            _ => {
                return Err(Error::Parse {
                    what: "observer qscheme",
                    value: s.to_string(),
                    expected: "a per-tensor or per-channel affine/symmetric qscheme".into(),
                })
            }
        })
    }
}

/// A min/max observer, per tensor (`MinMaxObserver`) or per channel (`PerChannelMinMaxObserver`).
///
/// ```
/// use qconv::quant::observer::{Observer, ObserverScheme};
/// use qconv::QuantDType;
/// # fn main() -> qconv::Result<()> {
/// let mut obs = Observer::new(QuantDType::QInt8, ObserverScheme::PerTensorSymmetric)?;
/// obs.observe_slice(&[1.0, -1.0, 0.5, 0.25]);
/// let (scale, zp) = obs.calculate_qparams();
/// assert_eq!(scale, vec![0.007843137718737125f32]);
/// assert_eq!(zp.to_i64_trunc(), vec![0]);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Observer {
    dtype: QuantDType,
    scheme: ObserverScheme,
    ch_axis: usize,
    quant_min: i64,
    quant_max: i64,
    custom_range: bool,
    eps: f32,
    min_val: Vec<f32>,
    max_val: Vec<f32>,
}

impl Observer {
    /// An observer with PyTorch's default range for `dtype` (quint8 0..255, qint8 −128..127,
    /// qint32 full, quint4x2 0..15); per-channel schemes observe axis 0 (see [`Observer::ch_axis`]).
    pub fn new(dtype: QuantDType, scheme: ObserverScheme) -> Result<Self> {
        let (quant_min, quant_max) = dtype.range().ok_or_else(|| Error::UnsupportedQuantization {
            qscheme: scheme.torch_name().into(),
            dtype: dtype.to_string(),
            rule: "observers compute parameters for integer dtypes only",
        })?;
        if dtype == QuantDType::QUInt4x2 && scheme != ObserverScheme::PerChannelAffineFloatQParams {
            return Err(Error::UnsupportedQuantization {
                qscheme: scheme.torch_name().into(),
                dtype: dtype.to_string(),
                rule: "reference modules accept quint4x2 only with per_channel_affine_float_qparams",
            });
        }
        Ok(Observer {
            dtype,
            scheme,
            ch_axis: 0,
            quant_min,
            quant_max,
            custom_range: false,
            eps: f32::EPSILON,
            min_val: Vec::new(),
            max_val: Vec::new(),
        })
    }

    /// Sets the channel axis (per-channel schemes).
    pub fn ch_axis(mut self, axis: usize) -> Self {
        self.ch_axis = axis;
        self
    }

    /// A user-specified range (PyTorch's `quant_min`/`quant_max` arguments): it must contain 0,
    /// `quant_min < quant_max`, and fit the dtype.
    pub fn quant_range(mut self, quant_min: i64, quant_max: i64) -> Result<Self> {
        let (dmin, dmax) = self.dtype.range().unwrap_or((quant_min, quant_max));
        let err = |rule: &str| Error::QuantRange {
            quant_min: Some(quant_min),
            quant_max: Some(quant_max),
            dtype: self.dtype.to_string(),
            rule: rule.to_string(),
        };
        if !(quant_min <= 0 && 0 <= quant_max) {
            return Err(err("a user-specified quantization range must include 0"));
        }
        if quant_min >= quant_max {
            return Err(err("quant_min must be strictly less than quant_max"));
        }
        if quant_min < dmin || quant_max > dmax {
            return Err(err("the range must fit the dtype"));
        }
        self.quant_min = quant_min;
        self.quant_max = quant_max;
        self.custom_range = true;
        Ok(self)
    }

    /// PyTorch's `reduce_range=True`: halves the range (quint8 0..127, qint8 −64..63).
    pub fn reduce_range(mut self) -> Result<Self> {
        if self.scheme == ObserverScheme::PerTensorSymmetric && self.dtype == QuantDType::QUInt8 {
            return Err(Error::UnsupportedQuantization {
                qscheme: self.scheme.torch_name().into(),
                dtype: self.dtype.to_string(),
                rule: "cannot reduce range for symmetric quantization for quint8",
            });
        }
        if matches!(self.dtype, QuantDType::QInt8 | QuantDType::QUInt8) || self.custom_range {
            self.quant_min = self.quant_min.div_euclid(2);
            self.quant_max = self.quant_max.div_euclid(2);
        }
        Ok(self)
    }

    /// The integer range used for the parameters.
    pub fn range(&self) -> (i64, i64) {
        (self.quant_min, self.quant_max)
    }

    /// Records the min/max of a flat slice (per-tensor schemes; per-channel schemes treat it as a
    /// single channel).
    pub fn observe_slice(&mut self, x: &[f32]) {
        if x.is_empty() {
            return;
        }
        let (mn, mx) = min_max(x.iter().copied());
        self.merge(vec![mn], vec![mx]);
    }

    /// Records the min/max of a tensor: over all elements, or per channel along `ch_axis`.
    pub fn observe(&mut self, x: &Tensor) -> Result<()> {
        let data = x.to_vec_f32()?;
        if data.is_empty() {
            return Ok(());
        }
        if !self.scheme.is_per_channel() {
            self.observe_slice(&data);
            return Ok(());
        }
        let shape = x.shape();
        if self.ch_axis >= shape.len() {
            return Err(Error::AxisOutOfRange { axis: self.ch_axis as i64, ndim: shape.len() });
        }
        let channels = shape[self.ch_axis];
        let inner: usize = shape[self.ch_axis + 1..].iter().product();
        let mut mn = vec![f32::INFINITY; channels];
        let mut mx = vec![f32::NEG_INFINITY; channels];
        for (i, run) in data.chunks(inner).enumerate() {
            let c = i % channels;
            let (a, b) = min_max(run.iter().copied());
            mn[c] = nan_min(mn[c], a);
            mx[c] = nan_max(mx[c], b);
        }
        self.merge(mn, mx);
        Ok(())
    }

    fn merge(&mut self, mn: Vec<f32>, mx: Vec<f32>) {
        if self.min_val.len() != mn.len() {
            self.min_val = mn;
            self.max_val = mx;
        } else {
            for (a, b) in self.min_val.iter_mut().zip(mn) {
                *a = nan_min(*a, b);
            }
            for (a, b) in self.max_val.iter_mut().zip(mx) {
                *a = nan_max(*a, b);
            }
        }
    }

    /// Scales (float32) and zero points (int64 for symmetric, int32 for affine, float32 for
    /// float qparams) exactly as PyTorch's `calculate_qparams()`; `([1.0], [0])` before any
    /// observation.
    pub fn calculate_qparams(&self) -> (Vec<f32>, QParamTensor) {
        if self.min_val.is_empty() {
            return (vec![1.0], QParamTensor::from_i64(vec![0]));
        }
        let (qmin, qmax) = (self.quant_min, self.quant_max);
        let n = self.min_val.len();
        let mut scales = Vec::with_capacity(n);
        match self.scheme {
            s if s.is_symmetric() => {
                let denom = ((qmax - qmin) as f64 / 2.0) as f32;
                for c in 0..n {
                    let min_neg = self.min_val[c].min(0.0);
                    let max_pos = self.max_val[c].max(0.0);
                    let amax = nan_max(-min_neg, max_pos);
                    scales.push(nan_max(amax / denom, self.eps));
                }
                let zp = if self.dtype == QuantDType::QUInt8 {
                    if self.custom_range {
                        (qmin + qmax).div_euclid(2)
                    } else {
                        128
                    }
                } else {
                    0
                };
                (scales, QParamTensor::from_i64(vec![zp; n]))
            }
            ObserverScheme::PerChannelAffineFloatQParams => {
                let denom = (qmax - qmin) as f32;
                let mut zps = Vec::with_capacity(n);
                for c in 0..n {
                    let s = (self.max_val[c] - self.min_val[c]) / denom;
                    let s = if s > self.eps { s } else { 1.0 };
                    scales.push(s);
                    zps.push((-self.min_val[c]) / s);
                }
                (scales, QParamTensor::from_f32(zps))
            }
            _ => {
                let denom = (qmax - qmin) as f32;
                let mut zps = Vec::with_capacity(n);
                for c in 0..n {
                    let min_neg = self.min_val[c].min(0.0);
                    let max_pos = self.max_val[c].max(0.0);
                    let s = nan_max((max_pos - min_neg) / denom, self.eps);
                    scales.push(s);
                    let r = (min_neg / s).round_ties_even() as i64;
                    zps.push((qmin - r).clamp(qmin, qmax) as i32);
                }
                (scales, QParamTensor::from_i32(zps))
            }
        }
    }

    /// The [`WeightQParams`] PyTorch's converters would build from this observer.
    pub fn weight_qparams(&self) -> WeightQParams {
        let (scales, zero_point) = self.calculate_qparams();
        let qscheme = match self.scheme {
            ObserverScheme::PerTensorAffine | ObserverScheme::PerTensorSymmetric => QScheme::PerTensorAffine,
            ObserverScheme::PerChannelAffine | ObserverScheme::PerChannelSymmetric => QScheme::PerChannelAffine,
            ObserverScheme::PerChannelAffineFloatQParams => QScheme::PerChannelAffineFloatQParams,
        };
        WeightQParams {
            qscheme,
            dtype: self.dtype,
            scale: QParamTensor::from_f32(scales),
            zero_point,
            axis: if self.scheme.is_per_channel() { self.ch_axis as i64 } else { 0 },
            quant_min: Some(self.quant_min),
            quant_max: Some(self.quant_max),
            is_decomposed: false,
        }
    }
}

/// torch.min/max propagate NaN.
fn nan_min(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.min(b)
    }
}

fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

fn min_max(it: impl Iterator<Item = f32>) -> (f32, f32) {
    it.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), x| (nan_min(a, x), nan_max(b, x)))
}

impl WeightQParams {
    /// Per-channel symmetric parameters observed from `weight` along `axis` (PyTorch's default
    /// weight observer for convolutions on x86 is this with qint8 and axis 0).
    pub fn per_channel_symmetric_from_weight(weight: &Tensor, axis: usize, dtype: QuantDType) -> Result<Self> {
        let mut obs = Observer::new(dtype, ObserverScheme::PerChannelSymmetric)?.ch_axis(axis);
        obs.observe(weight)?;
        Ok(obs.weight_qparams())
    }

    /// Per-tensor symmetric parameters observed from `weight` (PyTorch's default for transposed
    /// convolutions).
    pub fn per_tensor_symmetric_from_weight(weight: &Tensor, dtype: QuantDType) -> Result<Self> {
        let mut obs = Observer::new(dtype, ObserverScheme::PerTensorSymmetric)?;
        obs.observe(weight)?;
        Ok(obs.weight_qparams())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_symmetric_and_affine() {
        // docs/numerics.md §10b.
        let mut o = Observer::new(QuantDType::QInt8, ObserverScheme::PerChannelSymmetric).unwrap();
        o.observe_slice(&[1.0, -1.0, 0.5, 0.25]);
        assert_eq!(o.calculate_qparams().0, vec![0.007843137718737125f64 as f32]);
        let mut o = Observer::new(QuantDType::QInt8, ObserverScheme::PerChannelSymmetric).unwrap();
        o.observe_slice(&[0.3, -0.7, 0.7, 0.123]);
        assert_eq!(o.calculate_qparams().0, vec![0.0054901959374547005f64 as f32]);
        let mut o = Observer::new(QuantDType::QUInt8, ObserverScheme::PerTensorAffine).unwrap();
        o.observe_slice(&[-0.3, 0.1, 0.9, 1.7]);
        let (s, z) = o.calculate_qparams();
        assert_eq!(s, vec![0.007843137718737125f64 as f32]);
        assert_eq!(z.to_i64_trunc(), vec![38]);
    }

    #[test]
    fn unobserved_defaults_and_range_rules() {
        let o = Observer::new(QuantDType::QInt8, ObserverScheme::PerTensorAffine).unwrap();
        assert_eq!(o.calculate_qparams().0, vec![1.0]);
        let o = Observer::new(QuantDType::QInt8, ObserverScheme::PerTensorAffine).unwrap();
        assert!(matches!(o.clone().quant_range(1, 5), Err(Error::QuantRange { .. })));
        assert!(matches!(o.clone().quant_range(-200, 5), Err(Error::QuantRange { .. })));
        assert_eq!(o.reduce_range().unwrap().range(), (-64, 63));
        assert!(Observer::new(QuantDType::Float16, ObserverScheme::PerTensorAffine).is_err());
    }
}
