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
/// implements `Forward<Tensor, Output = Tensor>`, and so does a slice or `Vec` of such modules
/// (the layers run in order: a chain). The modules' inherent `forward` methods are the same
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

impl<M: Forward<Tensor, Output = Tensor>> Forward<Tensor> for [M] {
    type Output = Tensor;

    /// Runs the layers in order, each on the previous one's output (the input unchanged when
    /// there are none).
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let mut x = input.clone();
        for m in self {
            x = m.forward(&x)?;
        }
        Ok(x)
    }
}

impl<M: Forward<Tensor, Output = Tensor>> Forward<Tensor> for Vec<M> {
    type Output = Tensor;

    fn forward(&self, input: &Tensor) -> Result<Tensor> {
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
