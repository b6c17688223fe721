//! [`Forward`]: the one trait every module implements, so code can run, chain and store modules
//! without knowing their type.

use crate::error::Result;
use crate::tensor::Tensor;

/// A module that maps an input to an output: `y = m.forward(&x)?`.
///
/// `Input` is a type parameter (default [`Tensor`]) and `Output` an associated type, so one module
/// type can accept several input types, each with its own output type — e.g. an int8 module
/// taking a quantized tensor and returning one, and also a float tensor that it quantizes first.
/// Every float module ([`ConvModule`](crate::ConvModule), [`AnyConv`](crate::AnyConv))
/// implements `Forward<Tensor, Output = Tensor>`, every lowered int8 module
/// ([`QuantizedConvModule`](crate::QuantizedConvModule), [`AnyQuantizedConv`](crate::AnyQuantizedConv))
/// `Forward<QuantizedTensor, Output = QuantizedTensor>`, and a slice or `Vec` of modules whose
/// output type is their input type is a module too (the layers run in order: a chain). The modules' inherent `forward` methods are the same
/// functions; the trait is for generic code.
///
/// ```
/// use qconv::{Conv2d, ConvOptions, Forward, Tensor, WeightQParams, QuantDType};
/// # fn main() -> qconv::Result<()> {
/// fn run_twice<M: Forward<Output = Tensor>>(m: &M, x: &Tensor) -> qconv::Result<Tensor> {
///     m.forward(&m.forward(x)?)
/// }
/// let w = Tensor::from_vec(vec![0.25f32; 2 * 2 * 3 * 3], &[2, 2, 3, 3])?;
/// let conv = Conv2d::new(w, None, WeightQParams::per_tensor(0.01, 0, QuantDType::QInt8), ConvOptions::new().padding(1))?;
/// let x = Tensor::from_vec(vec![1.0f32; 2 * 4 * 4], &[1, 2, 4, 4])?;
/// assert_eq!(run_twice(&conv, &x)?.shape(), &[1, 2, 4, 4]);
/// // A chain of layers is a module too.
/// let chain = vec![conv.clone(), conv];
/// assert_eq!(Forward::forward(&chain, &x)?, run_twice(&chain[0], &x)?);
/// # Ok(()) }
/// ```
pub trait Forward<Input = Tensor> {
    /// What `forward` returns.
    type Output;

    /// Runs the module on `input`.
    fn forward(&self, input: &Input) -> Result<Self::Output>;
}

impl<I: Clone, M: Forward<I, Output = I>> Forward<I> for [M] {
    type Output = I;

    /// Runs the layers in order, each on the previous one's output (the input unchanged when
    /// there are none).
    fn forward(&self, input: &I) -> Result<I> {
        let mut x = input.clone();
        for m in self {
            x = m.forward(&x)?;
        }
        Ok(x)
    }
}

impl<I: Clone, M: Forward<I, Output = I>> Forward<I> for Vec<M> {
    type Output = I;

    fn forward(&self, input: &I) -> Result<I> {
        self.as_slice().forward(input)
    }
}

impl<I, M: Forward<I> + ?Sized> Forward<I> for &M {
    type Output = M::Output;

    fn forward(&self, input: &I) -> Result<M::Output> {
        (**self).forward(input)
    }
}

impl<I, M: Forward<I> + ?Sized> Forward<I> for Box<M> {
    type Output = M::Output;

    fn forward(&self, input: &I) -> Result<M::Output> {
        (**self).forward(input)
    }
}

impl<const D: usize> Forward<Tensor> for crate::ConvModule<D, false> {
    type Output = Tensor;

    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        crate::ConvModule::<D, false>::forward(self, input)
    }
}

impl<const D: usize> Forward<Tensor> for crate::ConvModule<D, true> {
    type Output = Tensor;

    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        crate::ConvModule::<D, true>::forward(self, input)
    }
}

impl Forward<Tensor> for crate::AnyConv {
    type Output = Tensor;

    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        crate::AnyConv::forward(self, input)
    }
}

impl<const D: usize, const TRANSPOSED: bool> Forward<crate::QuantizedTensor>
    for crate::QuantizedConvModule<D, TRANSPOSED>
{
    type Output = crate::QuantizedTensor;

    fn forward(&self, input: &crate::QuantizedTensor) -> Result<crate::QuantizedTensor> {
        crate::QuantizedConvModule::<D, TRANSPOSED>::forward(self, input)
    }
}

impl Forward<crate::QuantizedTensor> for crate::AnyQuantizedConv {
    type Output = crate::QuantizedTensor;

    fn forward(&self, input: &crate::QuantizedTensor) -> Result<crate::QuantizedTensor> {
        crate::AnyQuantizedConv::forward(self, input)
    }
}

#[cfg(test)]
mod tests {
    use super::Forward;
    use crate::{ActivationQParams, ConvOptions, QuantDType, QuantizedConv1d, QuantizedTensor, Tensor, WeightQParams};

    /// The int8 modules run through the trait, alone and as a chain (u8 codes in, u8 codes out).
    #[test]
    fn int8_modules_chain_through_the_trait() {
        let w = Tensor::from_vec((0..2 * 2 * 3).map(|i| (i as f32 - 5.0) / 20.0).collect(), &[2, 2, 3]).unwrap();
        let qp = WeightQParams::per_tensor(0.02, 0, QuantDType::QInt8);
        let out = ActivationQParams::new(0.05, 100).unwrap();
        let m = QuantizedConv1d::from_float(&w, None, &qp, ConvOptions::new().padding(1), out).unwrap();
        let x =
            QuantizedTensor::quantize(&Tensor::from_vec(vec![0.3f32; 2 * 5], &[1, 2, 5]).unwrap(), 0.02, 64).unwrap();
        let once = Forward::forward(&m, &x).unwrap();
        assert_eq!(once.codes(), m.forward(&x).unwrap().codes());
        let chain = vec![m.clone(), m.clone()];
        let twice = Forward::forward(&chain, &x).unwrap();
        assert_eq!(twice.codes(), m.forward(&once).unwrap().codes());
        assert_eq!(twice.shape(), &[1, 2, 5]);
    }
}
