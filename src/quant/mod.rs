//! Weight quantization: schemes, dtypes, parameters, observers and the exact fake-quant rule;
//! and [`requant`], the requantization of the lowered int8 convolutions; [`QuantizedTensor`], their
//! u8 activations.
//!
//! [`fake_quantize`] is PyTorch's `get_weight()` and [`quantize`] its `get_quantized_weight()`,
//! bit-identical to PyTorch CPU for finite weights (docs/numerics.md §3–§4). Non-finite weights are
//! rejected with [`crate::Error::NonFiniteWeight`] whenever the weight is actually quantized
//! (qscheme `None` passes the weight through untouched).

mod fakequant;
pub mod observer;
mod params;
mod qtensor;
pub mod requant;

use half::f16;

pub(crate) use params::{DecScales, DecZeroPoints, Plan};
pub use params::{QParamData, QParamTensor, QScheme, QuantDType, WeightQParams};
pub use qtensor::{quantize_code, ActivationQParams, QuantizedTensor};
pub use requant::{RequantParams, RequantTable, WeightScales};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The result of [`quantize`] (`get_quantized_weight()`).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedWeight {
    /// Shape of the weight.
    pub shape: Vec<usize>,
    /// The quantized values.
    pub values: QuantizedValues,
    /// The parameters they were quantized with.
    pub qparams: WeightQParams,
}

/// Values of a [`QuantizedWeight`].
#[derive(Clone, Debug, PartialEq)]
pub enum QuantizedValues {
    /// Integer codes, one per weight element (quint4x2 unpacked), in the weight's layout.
    Codes(Vec<i32>),
    /// float16 weights (dtype `torch.float16`).
    Float16(Vec<f16>),
}

fn weight_f32(weight: &Tensor) -> Result<&[f32]> {
    if weight.dtype() != DType::F32 {
        return Err(Error::DType {
            what: "weight",
            got: weight.dtype().to_string(),
            rule: "quantization only works on float32 weights".into(),
        });
    }
    weight.as_slice::<f32>()
}

/// `get_weight()`: quantizes then dequantizes `weight` (float32) with `qparams`.
pub fn fake_quantize(weight: &Tensor, qparams: &WeightQParams) -> Result<Tensor> {
    let w = weight_f32(weight)?;
    let plan = qparams.plan(weight.shape())?;
    Tensor::from_vec(fakequant::fake_quantize(&plan, weight.shape(), w)?, weight.shape())
}

/// Fake-quantizes a raw weight given a resolved plan (used by modules).
pub(crate) fn fake_quantize_planned(plan: &Plan, shape: &[usize], w: &[f32]) -> Result<Vec<f32>> {
    fakequant::fake_quantize(plan, shape, w)
}

/// The integer code and the dequantized value of every element of a float32 weight under a
/// resolved plan (see [`WeightQParams::plan`]).
pub(crate) fn quantize_codes_planned(plan: &Plan, shape: &[usize], w: &[f32]) -> Result<(Vec<i32>, Vec<f32>)> {
    fakequant::quantize_codes(plan, shape, w)
}

/// `get_quantized_weight()`: the quantize half.
///
/// Integer dtypes give one integer code per element; `float16` gives the binary16 weight; qscheme
/// `None` with a non-float16 dtype is an error, as in PyTorch.
pub fn quantize(weight: &Tensor, qparams: &WeightQParams) -> Result<QuantizedWeight> {
    let w = weight_f32(weight)?;
    let plan = qparams.plan(weight.shape())?;
    let values = match plan {
        // `_quantize_weight` checks float16 before the qscheme.
        _ if qparams.dtype == QuantDType::Float16 && !qparams.is_decomposed => {
            if qparams.qscheme != QScheme::None {
                fakequant::check_finite(w)?;
            }
            QuantizedValues::Float16(crate::alloc::try_collect(w.iter().map(|&x| f16::from_f32(x)), || {
                "the float16 weight".into()
            })?)
        }
        Plan::Identity | Plan::Half => {
            return Err(Error::NotQuantized(format!(
                "get_quantized_weight() is undefined for qscheme {} with dtype {}: the weight is not quantized",
                qparams.qscheme, qparams.dtype
            )))
        }
        _ => QuantizedValues::Codes(fakequant::quantize_codes(&plan, weight.shape(), w)?.0),
    };
    Ok(QuantizedWeight { shape: weight.shape().to_vec(), values, qparams: qparams.clone() })
}
