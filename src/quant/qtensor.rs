//! [`QuantizedTensor`]: the u8 activations of the lowered int8 convolutions (PyTorch's per-tensor
//! `torch.quint8` tensors): codes, a shape, a scale and a zero point; [`ActivationQParams`], the
//! checked (scale, zero point) pair of such a tensor.
//!
//! [`QuantizedTensor::quantize`] is `torch.quantize_per_tensor(x, scale, zero_point,
//! torch.quint8)` bit for bit and [`QuantizedTensor::dequantize`] is `.dequantize()`
//! (docs/numerics.md §14.2):
//!
//! ```text
//! quantize:   inv = f32(1 / f32(scale));  t = f32(x · inv)
//!             t = (t is NaN or t > 2147483520) ? 2147483520 : t
//!             q = clamp(wrapping_add_i32(cvtps2dq(t), zero_point), 0, 255)
//! dequantize: f32(scale) · f32(q − zero_point)
//! ```

use std::fmt;

use crate::alloc::try_collect;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::quant::requant::{check_activation_zero_point, cvtps2dq};
use crate::tensor::{checked_numel, Tensor};

/// The scale and zero point of u8 activations (`torch.quint8`, per tensor), checked: the scale
/// is finite (PyTorch also accepts NaN and ±inf; qconv refuses them, docs/numerics.md §14.7), the
/// zero point lies in `0..=255`. Zero and negative scales are accepted and evaluated as the
/// formulas say, as PyTorch does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivationQParams {
    scale: f64,
    zero_point: i32,
}

impl ActivationQParams {
    /// Checks and builds the pair.
    ///
    /// Errors: [`Error::NonFiniteScale`] for a NaN or infinite scale,
    /// [`Error::ZeroPointOutOfRange`] for a zero point outside `0..=255`.
    pub fn new(scale: f64, zero_point: i64) -> Result<ActivationQParams> {
        if !scale.is_finite() {
            return Err(Error::NonFiniteScale { scale, channel: 0 });
        }
        check_activation_zero_point(zero_point)?;
        Ok(ActivationQParams { scale, zero_point: zero_point as i32 })
    }

    /// The scale (a double, as PyTorch's `q_scale()`; rounded to f32 wherever it is used).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The zero point, `0..=255`.
    pub fn zero_point(&self) -> i32 {
        self.zero_point
    }
}

impl fmt::Display for ActivationQParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scale={}, zero_point={}", self.scale, self.zero_point)
    }
}

/// The u8 code of `x` under `torch.quantize_per_tensor(.., scale, zero_point, torch.quint8)`
/// with the inverse scale `inv = f32(1 / f32(scale))` already computed (module docs).
#[inline]
pub fn quantize_code(x: f32, inv: f32, zero_point: i32) -> u8 {
    let mut t = x * inv;
    // `_mm256_min_ps(t, 2147483520.0f)`: NaN takes the second operand.
    if t.is_nan() || t > 2147483520.0 {
        t = 2147483520.0;
    }
    cvtps2dq(t).wrapping_add(zero_point).clamp(0, 255) as u8
}

/// A per-tensor quantized u8 tensor (`torch.quint8`): row-major codes, a shape, a scale and a
/// zero point. Lowered convolutions take one and return one
/// ([`QuantizedConvModule::forward`](crate::QuantizedConvModule::forward)).
#[derive(Clone, PartialEq)]
pub struct QuantizedTensor {
    codes: Vec<u8>,
    shape: Vec<usize>,
    qparams: ActivationQParams,
}

impl QuantizedTensor {
    /// Wraps existing codes (PyTorch's `_make_per_tensor_quantized_tensor(codes, scale,
    /// zero_point)`).
    ///
    /// Errors: [`Error::Shape`] when `codes.len()` is not the product of `shape`; those of
    /// [`ActivationQParams::new`].
    pub fn from_codes(codes: Vec<u8>, shape: &[usize], scale: f64, zero_point: i64) -> Result<QuantizedTensor> {
        let qparams = ActivationQParams::new(scale, zero_point)?;
        Self::with_qparams(codes, shape, qparams)
    }

    /// [`from_codes`](Self::from_codes) with checked qparams.
    pub fn with_qparams(codes: Vec<u8>, shape: &[usize], qparams: ActivationQParams) -> Result<QuantizedTensor> {
        let n = checked_numel(shape)?;
        if codes.len() != n {
            return Err(Error::shape("codes", shape, format!("it holds {} codes, not {n}", codes.len())));
        }
        Ok(QuantizedTensor { codes, shape: shape.to_vec(), qparams })
    }

    /// `torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)`, bit for bit (module
    /// docs), for a float32 host tensor of any shape.
    ///
    /// Errors: [`Error::DType`] for a float16/bfloat16 tensor (PyTorch: "Quantize only works on
    /// Float Tensor"); [`Error::Unsupported`] for a tensor on a CUDA device; those of
    /// [`ActivationQParams::new`]; [`Error::OutOfMemory`].
    pub fn quantize(x: &Tensor, scale: f64, zero_point: i64) -> Result<QuantizedTensor> {
        Self::quantize_with(x, ActivationQParams::new(scale, zero_point)?)
    }

    /// [`quantize`](Self::quantize) with checked qparams.
    pub fn quantize_with(x: &Tensor, qparams: ActivationQParams) -> Result<QuantizedTensor> {
        if x.dtype() != DType::F32 {
            return Err(Error::DType {
                what: "input",
                got: x.dtype().to_string(),
                rule: "quantize_per_tensor only works on float32 tensors".into(),
            });
        }
        let v = x.as_slice::<f32>()?;
        let inv = 1.0f32 / qparams.scale as f32;
        let zp = qparams.zero_point;
        let codes =
            try_collect(v.iter().map(|&e| quantize_code(e, inv, zp)), || format!("{} quantized codes", v.len()))?;
        Ok(QuantizedTensor { codes, shape: x.shape().to_vec(), qparams })
    }

    /// `.dequantize()`: `f32(scale) · f32(q − zero_point)` per element, a float32 tensor of the
    /// same shape.
    pub fn dequantize(&self) -> Result<Tensor> {
        let s = self.qparams.scale as f32;
        let zp = self.qparams.zero_point;
        let v = try_collect(self.codes.iter().map(|&q| s * (q as i32 - zp) as f32), || {
            format!("{} dequantized values", self.codes.len())
        })?;
        Tensor::from_vec(v, &self.shape)
    }

    /// The codes, row-major.
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }

    /// The codes, moved out.
    pub fn into_codes(self) -> Vec<u8> {
        self.codes
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// `q_scale()`.
    pub fn scale(&self) -> f64 {
        self.qparams.scale
    }

    /// `q_zero_point()`.
    pub fn zero_point(&self) -> i32 {
        self.qparams.zero_point
    }

    /// Scale and zero point.
    pub fn qparams(&self) -> ActivationQParams {
        self.qparams
    }
}

impl fmt::Debug for QuantizedTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head: Vec<u8> = self.codes.iter().take(8).copied().collect();
        write!(
            f,
            "QuantizedTensor(quint8, shape={:?}, {}, codes={:?}{})",
            self.shape,
            self.qparams,
            head,
            if self.codes.len() > 8 { " …" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values checked against PyTorch 2.15 (`torch.quantize_per_tensor(torch.tensor(xs), scale,
    /// zp, torch.quint8).int_repr()`; the command is in docs/numerics.md §14.2).
    #[test]
    fn quantize_matches_torch_on_special_values() {
        let xs = vec![0.25f32, 0.75, -0.25, 1.25, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30, 3e9];
        let x = Tensor::from_vec(xs, &[10]).unwrap();
        // scale 0.5: ties (k + ½)·s → k + ½ rounds half to even; NaN/+inf/huge → 2147483520 → 255.
        let q = QuantizedTensor::quantize(&x, 0.5, 10).unwrap();
        assert_eq!(q.codes(), &[10, 12, 10, 12, 255, 255, 0, 255, 0, 255]);
        // zero point ≥ 128: 2147483520 + zp wraps to a negative int32 → 0.
        let q = QuantizedTensor::quantize(&x, 0.5, 200).unwrap();
        assert_eq!(q.codes(), &[200, 202, 200, 202, 0, 0, 0, 0, 0, 0]);
        // Scale 0: inv = +inf; positives and NaN → 255 (zp < 128), negatives 0, 0·inf = NaN → 255.
        let z = Tensor::from_vec(vec![1.0f32, -1.0, 0.0], &[3]).unwrap();
        assert_eq!(QuantizedTensor::quantize(&z, 0.0, 0).unwrap().codes(), &[255, 0, 255]);
        // Negative scale mirrors.
        let q = QuantizedTensor::quantize(&Tensor::from_vec(vec![1.0f32, -1.0, 0.5], &[3]).unwrap(), -0.1, 0);
        assert_eq!(q.unwrap().codes(), &[0, 10, 0]);
    }

    #[test]
    fn dequantize_is_scale_times_centred_code() {
        let q = QuantizedTensor::from_codes(vec![0, 10, 255], &[3], 0.1, 10).unwrap();
        let d = q.dequantize().unwrap();
        assert_eq!(d.as_slice::<f32>().unwrap(), &[0.1f32 * -10.0, 0.0, 0.1f32 * 245.0]);
    }

    #[test]
    fn bad_qparams_and_shapes_are_typed_errors() {
        let x = Tensor::from_vec(vec![1.0f32], &[1]).unwrap();
        assert!(matches!(QuantizedTensor::quantize(&x, 0.1, 256), Err(Error::ZeroPointOutOfRange { .. })));
        assert!(matches!(QuantizedTensor::quantize(&x, 0.1, -1), Err(Error::ZeroPointOutOfRange { .. })));
        assert!(matches!(QuantizedTensor::quantize(&x, f64::NAN, 0), Err(Error::NonFiniteScale { .. })));
        assert!(matches!(QuantizedTensor::quantize(&x, f64::INFINITY, 0), Err(Error::NonFiniteScale { .. })));
        assert!(matches!(QuantizedTensor::from_codes(vec![1, 2], &[3], 0.1, 0), Err(Error::Shape { .. })));
        let h = x.to_dtype(DType::F16).unwrap();
        assert!(matches!(QuantizedTensor::quantize(&h, 0.1, 0), Err(Error::DType { .. })));
    }
}
