//! Quantization schemes, quantized dtypes and [`WeightQParams`] (PyTorch's `weight_qparams` dict),
//! with validation and resolution into an execution [`Plan`].

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// PyTorch's `weight_qscheme` for reference modules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QScheme {
    /// No quantization: the weight is used as is (`None` in PyTorch).
    None,
    /// One scale and zero point for the whole weight (`torch.per_tensor_affine`).
    PerTensorAffine,
    /// One scale and zero point per channel along an axis (`torch.per_channel_affine`).
    PerChannelAffine,
    /// Per channel, with floating zero points (`torch.per_channel_affine_float_qparams`).
    PerChannelAffineFloatQParams,
}

impl QScheme {
    /// PyTorch's spelling (`"torch.per_tensor_affine"`, ..., or `"None"`).
    pub fn torch_name(&self) -> &'static str {
        match self {
            QScheme::None => "None",
            QScheme::PerTensorAffine => "torch.per_tensor_affine",
            QScheme::PerChannelAffine => "torch.per_channel_affine",
            QScheme::PerChannelAffineFloatQParams => "torch.per_channel_affine_float_qparams",
        }
    }

    /// `true` for the two per-channel schemes.
    pub fn is_per_channel(&self) -> bool {
        matches!(self, QScheme::PerChannelAffine | QScheme::PerChannelAffineFloatQParams)
    }
}

impl fmt::Display for QScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.torch_name())
    }
}

impl FromStr for QScheme {
    type Err = Error;
    /// Parses PyTorch's spelling, with or without the `torch.` prefix; `"None"` is [`QScheme::None`].
    fn from_str(s: &str) -> Result<Self> {
        match s.strip_prefix("torch.").unwrap_or(s) {
            "None" | "none" => Ok(QScheme::None),
            "per_tensor_affine" => Ok(QScheme::PerTensorAffine),
            "per_channel_affine" => Ok(QScheme::PerChannelAffine),
            "per_channel_affine_float_qparams" => Ok(QScheme::PerChannelAffineFloatQParams),
            "per_tensor_symmetric" | "per_channel_symmetric" => Err(Error::Parse {
                what: "qscheme",
                value: s.to_string(),
                expected: "an affine qscheme: reference modules reject symmetric qschemes (PyTorch's converters map them to the affine ones)".into(),
            }),
            _ => Err(Error::Parse {
                what: "qscheme",
                value: s.to_string(),
                expected: "torch.per_tensor_affine, torch.per_channel_affine, torch.per_channel_affine_float_qparams or None".into(),
            }),
        }
    }
}

/// PyTorch's `weight_dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantDType {
    /// `torch.quint8`, codes 0..=255.
    QUInt8,
    /// `torch.qint8`, codes -128..=127.
    QInt8,
    /// `torch.qint32`, codes -2^31..=2^31-1.
    QInt32,
    /// `torch.quint4x2`, codes 0..=15 (packed two per byte by PyTorch; unpacked here).
    QUInt4x2,
    /// `torch.float16`: the weight is rounded to binary16 and back.
    Float16,
    /// `torch.float32` (valid only with [`QScheme::None`]).
    Float32,
    /// `torch.bfloat16` (valid only with [`QScheme::None`]).
    BFloat16,
    /// `torch.float64` (valid only with [`QScheme::None`]).
    Float64,
}

impl QuantDType {
    /// PyTorch's spelling, e.g. `"torch.qint8"`.
    pub fn torch_name(&self) -> &'static str {
        match self {
            QuantDType::QUInt8 => "torch.quint8",
            QuantDType::QInt8 => "torch.qint8",
            QuantDType::QInt32 => "torch.qint32",
            QuantDType::QUInt4x2 => "torch.quint4x2",
            QuantDType::Float16 => "torch.float16",
            QuantDType::Float32 => "torch.float32",
            QuantDType::BFloat16 => "torch.bfloat16",
            QuantDType::Float64 => "torch.float64",
        }
    }

    /// The integer code range `(min, max)` of a quantized integer dtype; `None` for float dtypes.
    pub fn range(&self) -> Option<(i64, i64)> {
        match self {
            QuantDType::QUInt8 => Some((0, 255)),
            QuantDType::QInt8 => Some((-128, 127)),
            QuantDType::QInt32 => Some((i32::MIN as i64, i32::MAX as i64)),
            QuantDType::QUInt4x2 => Some((0, 15)),
            _ => None,
        }
    }

    /// `true` for the quantized integer dtypes.
    pub fn is_integer(&self) -> bool {
        self.range().is_some()
    }
}

impl fmt::Display for QuantDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.torch_name())
    }
}

impl FromStr for QuantDType {
    type Err = Error;
    /// Parses PyTorch's spelling, with or without the `torch.` prefix (`half`, `float`, `double` too).
    fn from_str(s: &str) -> Result<Self> {
        match s.strip_prefix("torch.").unwrap_or(s) {
            "quint8" => Ok(QuantDType::QUInt8),
            "qint8" => Ok(QuantDType::QInt8),
            "qint32" => Ok(QuantDType::QInt32),
            "quint4x2" => Ok(QuantDType::QUInt4x2),
            "float16" | "half" => Ok(QuantDType::Float16),
            "float32" | "float" => Ok(QuantDType::Float32),
            "bfloat16" => Ok(QuantDType::BFloat16),
            "float64" | "double" => Ok(QuantDType::Float64),
            _ => Err(Error::Parse {
                what: "weight dtype",
                value: s.to_string(),
                expected: "torch.quint8, torch.qint8, torch.qint32, torch.quint4x2, torch.float16 or a float dtype"
                    .into(),
            }),
        }
    }
}

/// The values of a scale or zero-point tensor, keeping PyTorch's dtype (it changes the numerics).
#[derive(Clone, Debug, PartialEq)]
pub enum QParamData {
    /// float32 values.
    F32(Vec<f32>),
    /// float64 values.
    F64(Vec<f64>),
    /// int32 values.
    I32(Vec<i32>),
    /// int64 values.
    I64(Vec<i64>),
}

/// A small tensor of quantization parameters (`weight_scale` or `weight_zero_point`).
#[derive(Clone, Debug, PartialEq)]
pub struct QParamTensor {
    /// Shape: `[]`, `[1]` or `[C]`.
    pub shape: Vec<usize>,
    /// Values, in row-major order.
    pub data: QParamData,
}

impl QParamTensor {
    /// A 0-d float32 tensor.
    pub fn scalar_f32(v: f32) -> Self {
        QParamTensor { shape: vec![], data: QParamData::F32(vec![v]) }
    }
    /// A 0-d int64 tensor.
    pub fn scalar_i64(v: i64) -> Self {
        QParamTensor { shape: vec![], data: QParamData::I64(vec![v]) }
    }
    /// A 1-d float32 tensor.
    pub fn from_f32(v: Vec<f32>) -> Self {
        QParamTensor { shape: vec![v.len()], data: QParamData::F32(v) }
    }
    /// A 1-d float64 tensor.
    pub fn from_f64(v: Vec<f64>) -> Self {
        QParamTensor { shape: vec![v.len()], data: QParamData::F64(v) }
    }
    /// A 1-d int32 tensor.
    pub fn from_i32(v: Vec<i32>) -> Self {
        QParamTensor { shape: vec![v.len()], data: QParamData::I32(v) }
    }
    /// A 1-d int64 tensor.
    pub fn from_i64(v: Vec<i64>) -> Self {
        QParamTensor { shape: vec![v.len()], data: QParamData::I64(v) }
    }

    /// Number of values.
    pub fn numel(&self) -> usize {
        match &self.data {
            QParamData::F32(v) => v.len(),
            QParamData::F64(v) => v.len(),
            QParamData::I32(v) => v.len(),
            QParamData::I64(v) => v.len(),
        }
    }

    /// `true` for float32/float64 data.
    pub fn is_float(&self) -> bool {
        matches!(self.data, QParamData::F32(_) | QParamData::F64(_))
    }

    /// The dtype, as PyTorch spells it.
    pub fn dtype_name(&self) -> &'static str {
        match self.data {
            QParamData::F32(_) => "torch.float32",
            QParamData::F64(_) => "torch.float64",
            QParamData::I32(_) => "torch.int32",
            QParamData::I64(_) => "torch.int64",
        }
    }

    /// Values widened to f64 (exact for every variant except int64 beyond 2^53).
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            QParamData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            QParamData::F64(v) => v.clone(),
            QParamData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            QParamData::I64(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    /// Values as f32 (`tensor.to(float32)`).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            QParamData::F32(v) => v.clone(),
            QParamData::F64(v) => v.iter().map(|&x| x as f32).collect(),
            QParamData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            QParamData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Values as integers; floats are truncated toward zero (`.item().toLong()` / `.to(int64)`).
    pub fn to_i64_trunc(&self) -> Vec<i64> {
        match &self.data {
            QParamData::F32(v) => v.iter().map(|&x| x as i64).collect(),
            QParamData::F64(v) => v.iter().map(|&x| x as i64).collect(),
            QParamData::I32(v) => v.iter().map(|&x| x as i64).collect(),
            QParamData::I64(v) => v.clone(),
        }
    }
}

/// Weight quantization parameters — the fields of PyTorch's `weight_qparams` dict.
///
/// Build one with a constructor ([`WeightQParams::per_tensor`], [`WeightQParams::per_channel`],
/// [`WeightQParams::per_channel_float`], [`WeightQParams::float16`], [`WeightQParams::none`]) or
/// from an observer ([`crate::quant::observer`]). Fields are public so every combination PyTorch can
/// express can be expressed; a module validates them against its weight when it is built and
/// reports any broken rule as a typed [`Error`].
///
/// There is deliberately no default: PyTorch's default (quint8, scale 1, zero point 0) maps every
/// typical weight to zero (docs/numerics.md §2). Use an observer to derive qparams from a weight.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightQParams {
    /// The quantization scheme.
    pub qscheme: QScheme,
    /// The quantized dtype.
    pub dtype: QuantDType,
    /// Scale(s). Float32 or float64; one element per-tensor, one per channel per-channel.
    pub scale: QParamTensor,
    /// Zero point(s). An integer dtype selects PyTorch's integer formula, a float dtype the
    /// float-zero-point formula (per channel) or truncation toward zero (per tensor).
    pub zero_point: QParamTensor,
    /// Per-channel axis into the weight as stored (for transposed convolutions axis 0 is the
    /// input-channel dimension). Ignored per tensor.
    pub axis: i64,
    /// Lower bound of the integer range (honoured only when `is_decomposed`).
    pub quant_min: Option<i64>,
    /// Upper bound of the integer range (honoured only when `is_decomposed`).
    pub quant_max: Option<i64>,
    /// Use the `quantized_decomposed` formulas (as `_convert_to_reference_decomposed_fx` does).
    pub is_decomposed: bool,
}

impl WeightQParams {
    /// Per-tensor affine parameters with an integer zero point (0-d float32 scale, 0-d int64 zp).
    ///
    /// Every constructor takes its values first and the dtype last, in PyTorch's order
    /// (`torch.quantize_per_tensor(x, scale, zero_point, dtype)`).
    pub fn per_tensor(scale: f32, zero_point: i64, dtype: QuantDType) -> Self {
        WeightQParams {
            qscheme: QScheme::PerTensorAffine,
            dtype,
            scale: QParamTensor::scalar_f32(scale),
            zero_point: QParamTensor::scalar_i64(zero_point),
            axis: 0,
            quant_min: None,
            quant_max: None,
            is_decomposed: false,
        }
    }

    /// Per-channel affine parameters with integer zero points along `axis`
    /// (`torch.quantize_per_channel(x, scales, zero_points, axis, dtype)`'s order).
    pub fn per_channel(scales: Vec<f32>, zero_points: Vec<i64>, axis: usize, dtype: QuantDType) -> Self {
        WeightQParams {
            qscheme: QScheme::PerChannelAffine,
            dtype,
            scale: QParamTensor::from_f32(scales),
            zero_point: QParamTensor::from_i64(zero_points),
            axis: axis as i64,
            quant_min: None,
            quant_max: None,
            is_decomposed: false,
        }
    }

    /// Per-channel parameters with float zero points (`per_channel_affine_float_qparams`).
    pub fn per_channel_float(scales: Vec<f32>, zero_points: Vec<f32>, axis: usize, dtype: QuantDType) -> Self {
        WeightQParams {
            qscheme: QScheme::PerChannelAffineFloatQParams,
            dtype,
            scale: QParamTensor::from_f32(scales),
            zero_point: QParamTensor::from_f32(zero_points),
            axis: axis as i64,
            quant_min: None,
            quant_max: None,
            is_decomposed: false,
        }
    }

    /// float16 "quantization": the weight is rounded to binary16 and back.
    pub fn float16() -> Self {
        WeightQParams {
            qscheme: QScheme::PerTensorAffine,
            dtype: QuantDType::Float16,
            scale: QParamTensor::scalar_f32(1.0),
            zero_point: QParamTensor::scalar_i64(0),
            axis: 0,
            quant_min: None,
            quant_max: None,
            is_decomposed: false,
        }
    }

    /// No quantization: the float32 weight is used as is.
    pub fn none() -> Self {
        WeightQParams {
            qscheme: QScheme::None,
            dtype: QuantDType::Float32,
            scale: QParamTensor::scalar_f32(1.0),
            zero_point: QParamTensor::scalar_i64(0),
            axis: 0,
            quant_min: None,
            quant_max: None,
            is_decomposed: false,
        }
    }

    /// Sets `quant_min`/`quant_max` (honoured by the decomposed path).
    pub fn with_quant_range(mut self, quant_min: i64, quant_max: i64) -> Self {
        self.quant_min = Some(quant_min);
        self.quant_max = Some(quant_max);
        self
    }

    /// Selects the decomposed formulas.
    pub fn decomposed(mut self, is_decomposed: bool) -> Self {
        self.is_decomposed = is_decomposed;
        self
    }

    /// Checks every rule against a weight of shape `weight_shape` and resolves the exact formula.
    ///
    /// The rules are PyTorch's (docs/numerics.md §3 and §11 item 8) plus a few that PyTorch leaves to
    /// undefined behaviour: scales and float zero points must be finite, the axis must be
    /// non-negative, and `quant_min`/`quant_max` must be set together and lie within the dtype.
    pub fn validate(&self, weight_shape: &[usize]) -> Result<()> {
        self.plan(weight_shape).map(|_| ())
    }

    fn unsupported(&self, rule: &'static str) -> Error {
        Error::UnsupportedQuantization { qscheme: self.qscheme.to_string(), dtype: self.dtype.to_string(), rule }
    }

    fn check_scale_values(&self) -> Result<()> {
        if !self.scale.is_float() {
            return Err(Error::QParamShape {
                param: "weight_scale",
                shape: self.scale.shape.clone(),
                rule: format!("scales must be float32 or float64, not {}", self.scale.dtype_name()),
            });
        }
        for (c, s) in self.scale.to_f64().into_iter().enumerate() {
            if !s.is_finite() {
                return Err(Error::NonFiniteScale { scale: s, channel: c });
            }
        }
        if self.zero_point.is_float() {
            for (c, z) in self.zero_point.to_f64().into_iter().enumerate() {
                if !z.is_finite() {
                    return Err(Error::NonFiniteZeroPoint { zero_point: z, channel: c });
                }
            }
        }
        Ok(())
    }

    /// Checks that each qparam tensor's shape describes its number of values (the fields are
    /// public, so a shape may lie; its element count may even overflow `usize`).
    fn check_numel_matches(&self) -> Result<()> {
        for (param, t) in [("weight_scale", &self.scale), ("weight_zero_point", &self.zero_point)] {
            let shape_numel = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if shape_numel != Some(t.numel()) {
                return Err(Error::QParamShape {
                    param,
                    shape: t.shape.clone(),
                    rule: match shape_numel {
                        Some(_) => format!("it holds {} values", t.numel()),
                        None => format!("its element count overflows usize, and it holds {} values", t.numel()),
                    },
                });
            }
        }
        Ok(())
    }

    /// Checks the per-channel shape rules and returns the axis.
    fn per_channel_axis(&self, weight_shape: &[usize]) -> Result<usize> {
        if self.scale.shape.len() != 1 {
            return Err(Error::QParamShape {
                param: "weight_scale",
                shape: self.scale.shape.clone(),
                rule: "per-channel scales must be a 1-d tensor (scale tensor must have dimension 1)".into(),
            });
        }
        if self.zero_point.shape.len() != 1 {
            return Err(Error::QParamShape {
                param: "weight_zero_point",
                shape: self.zero_point.shape.clone(),
                rule: "per-channel zero points must be a 1-d tensor".into(),
            });
        }
        if self.zero_point.numel() != self.scale.numel() {
            return Err(Error::QParamShape {
                param: "weight_zero_point",
                shape: self.zero_point.shape.clone(),
                rule: format!("it must have as many elements as weight_scale ({})", self.scale.numel()),
            });
        }
        let ndim = weight_shape.len();
        if self.axis < 0 || self.axis as u64 >= ndim as u64 {
            return Err(Error::AxisOutOfRange { axis: self.axis, ndim });
        }
        let axis = self.axis as usize;
        if weight_shape[axis] != self.scale.numel() {
            return Err(Error::ChannelMismatch { axis, expected: weight_shape[axis], got: self.scale.numel() });
        }
        Ok(axis)
    }

    fn check_zero_points_in_range(&self, zps: &[i64], min: i64, max: i64) -> Result<()> {
        match zps.iter().find(|&&z| z < min || z > max) {
            Some(&z) => Err(Error::ZeroPointOutOfRange { zero_point: z, dtype: self.dtype.to_string(), min, max }),
            None => Ok(()),
        }
    }

    /// The clamp range of the decomposed path, validated.
    fn quant_range(&self, dtype_min: i64, dtype_max: i64) -> Result<(i64, i64)> {
        match (self.quant_min, self.quant_max) {
            (None, None) => Ok((dtype_min, dtype_max)),
            (Some(lo), Some(hi)) => {
                let err = |rule: String| Error::QuantRange {
                    quant_min: Some(lo),
                    quant_max: Some(hi),
                    dtype: self.dtype.to_string(),
                    rule,
                };
                if lo < dtype_min || hi > dtype_max {
                    return Err(err(format!("it must lie within [{dtype_min}, {dtype_max}]")));
                }
                if lo > hi {
                    return Err(err("quant_min must not exceed quant_max".into()));
                }
                Ok((lo, hi))
            }
            (lo, hi) => Err(Error::QuantRange {
                quant_min: lo,
                quant_max: hi,
                dtype: self.dtype.to_string(),
                rule: "quant_min and quant_max must be given together".into(),
            }),
        }
    }

    /// Validates against `weight_shape` and resolves the exact formula to run.
    pub(crate) fn plan(&self, weight_shape: &[usize]) -> Result<Plan> {
        // Scale and zero point must be well-formed tensors even where they are unused (qscheme
        // None, float16), so that every module that can be built can also be saved and reloaded.
        self.check_numel_matches()?;
        if self.qscheme == QScheme::None {
            return Ok(Plan::Identity);
        }
        if self.dtype == QuantDType::Float16 {
            if self.is_decomposed {
                return Err(self.unsupported("the decomposed path has no float16 variant"));
            }
            return Ok(Plan::Half);
        }
        let Some((dmin, dmax)) = self.dtype.range() else {
            return Err(self.unsupported("a float dtype other than float16 needs qscheme None"));
        };
        self.check_scale_values()?;
        // quant_min/quant_max: validated whenever given, honoured only when decomposed.
        let (qmin, qmax) = self.quant_range(dmin, dmax)?;
        let per_channel = self.qscheme.is_per_channel();
        let axis = if per_channel {
            Some(self.per_channel_axis(weight_shape)?)
        } else {
            if self.scale.numel() != 1 {
                return Err(Error::QParamShape {
                    param: "weight_scale",
                    shape: self.scale.shape.clone(),
                    rule: "per-tensor quantization needs exactly one scale".into(),
                });
            }
            if self.zero_point.numel() != 1 {
                return Err(Error::QParamShape {
                    param: "weight_zero_point",
                    shape: self.zero_point.shape.clone(),
                    rule: "per-tensor quantization needs exactly one zero point".into(),
                });
            }
            None
        };
        if self.is_decomposed {
            if self.dtype == QuantDType::QUInt4x2 {
                return Err(self.unsupported("the decomposed path supports quint8, qint8 and qint32 only"));
            }
            let zero_points = if self.zero_point.is_float() {
                DecZeroPoints::Float(self.zero_point.to_f32())
            } else {
                let z = self.zero_point.to_i64_trunc();
                self.check_zero_points_in_range(&z, dmin, dmax)?;
                DecZeroPoints::Int(z)
            };
            let scales = match &self.scale.data {
                QParamData::F64(v) if per_channel => DecScales::F64(v.clone()),
                // Per tensor, `scale.item()` is a Python float used as an f32 scalar operand.
                _ => DecScales::F32(self.scale.to_f64()),
            };
            return Ok(Plan::Decomposed { axis, scales, zero_points, qmin, qmax });
        }
        match axis {
            None => {
                if self.dtype == QuantDType::QUInt4x2 {
                    return Err(self.unsupported("per-tensor quantization does not support quint4x2"));
                }
                // `zero_point.item().toLong()`: float zero points are truncated toward zero.
                let z = self.zero_point.to_i64_trunc();
                self.check_zero_points_in_range(&z, dmin, dmax)?;
                Ok(Plan::Int { axis: None, scales: self.scale.to_f64(), zero_points: z, qmin: dmin, qmax: dmax })
            }
            Some(axis) if self.zero_point.is_float() => Ok(Plan::FloatZp {
                axis,
                scales: self.scale.to_f32(),
                zero_points: self.zero_point.to_f32(),
                qmin: dmin,
                qmax: dmax,
            }),
            Some(axis) => {
                if self.dtype == QuantDType::QUInt4x2 {
                    return Err(self.unsupported(
                        "per-channel quint4x2 needs float zero points (quantize_tensor_per_channel_affine is not implemented for QUInt4x2)",
                    ));
                }
                let z = self.zero_point.to_i64_trunc();
                self.check_zero_points_in_range(&z, dmin, dmax)?;
                Ok(Plan::Int { axis: Some(axis), scales: self.scale.to_f64(), zero_points: z, qmin: dmin, qmax: dmax })
            }
        }
    }
}

/// Scales of the decomposed path: the dtype decides the arithmetic precision.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum DecScales {
    /// float32 arithmetic; values stored widened (per tensor: `scale.item()`).
    F32(Vec<f64>),
    /// float64 per-channel scales: the arithmetic promotes to float64.
    F64(Vec<f64>),
}

/// Zero points of the decomposed path.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum DecZeroPoints {
    /// Integer zero points.
    Int(Vec<i64>),
    /// Float zero points (added after rounding, then truncated by the integer cast).
    Float(Vec<f32>),
}

/// The resolved fake-quant formula (see docs/numerics.md §3–§4).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Plan {
    /// qscheme None: the weight unchanged.
    Identity,
    /// float16: round to binary16 and back.
    Half,
    /// Integer zero points (§4.1 per tensor when `axis` is `None`, §4.2 per channel).
    Int { axis: Option<usize>, scales: Vec<f64>, zero_points: Vec<i64>, qmin: i64, qmax: i64 },
    /// Float zero points per channel (§4.3).
    FloatZp { axis: usize, scales: Vec<f32>, zero_points: Vec<f32>, qmin: i64, qmax: i64 },
    /// `quantized_decomposed` ops (§4.5).
    Decomposed { axis: Option<usize>, scales: DecScales, zero_points: DecZeroPoints, qmin: i64, qmax: i64 },
}
