//! Conversions between [`Tensor`] and [`ndarray`] arrays (the crate re-exports the `ndarray` it
//! uses as [`qconv::ndarray`](crate::ndarray), so the versions always match).
//!
//! Into a tensor (a copy into row-major order, any layout, any dimensionality; an owned array in
//! standard layout gives its buffer without copying):
//! `Tensor::from(array)`, `Tensor::from(&array)`, `Tensor::from(array.view())`, `array.into()`,
//! `Tensor::try_from(array)`, and [`Tensor::from_ndarray`] (which takes `&array` or a view).
//! Out of a host tensor: [`Tensor::to_ndarray`] (typed dimension: `Array4<f32>`, or `IxDyn`),
//! [`Tensor::to_ndarray_dyn`], `Array::<T, D>::try_from(&tensor)`, and the zero-copy
//! [`Tensor::view`].

use ndarray::{Array, ArrayBase, ArrayView, ArrayViewD, AsArray, Data, Dimension, IxDyn};

use crate::error::{Error, Result};
use crate::tensor::{Element, Tensor};

fn from_iter<'a, T: Element, D: Dimension>(a: ArrayView<'a, T, D>) -> Tensor {
    let shape = a.shape().to_vec();
    let data: Vec<T> = a.iter().copied().collect();
    Tensor::from_host(shape, T::wrap(data))
}

impl Tensor {
    /// Copies an ndarray (`&array`, `array.view()`, any layout and dimensionality) into a new
    /// tensor.
    ///
    /// ```
    /// use qconv::ndarray::Array4;
    /// use qconv::Tensor;
    /// let x = Array4::<f32>::zeros((1, 3, 8, 8));
    /// let t = Tensor::from_ndarray(&x)?;
    /// let u: Tensor = x.view().into();
    /// assert_eq!(t, u);
    /// # Ok::<(), qconv::Error>(())
    /// ```
    pub fn from_ndarray<'a, T: Element, D: Dimension>(a: impl AsArray<'a, T, D>) -> Result<Tensor> {
        Ok(from_iter(a.into()))
    }

    /// Copies a host tensor into an ndarray of element type `T` (the tensor's dtype) and
    /// dimension `D` (`Ix4`, … or `IxDyn`): `let a: Array4<f32> = t.to_ndarray()?;`. Errors:
    /// [`Error::DType`] for another element type, [`Error::Shape`] when `D` has another number
    /// of dimensions, [`Error::Unsupported`] for a device tensor.
    pub fn to_ndarray<T: Element, D: Dimension>(&self) -> Result<Array<T, D>> {
        self.to_ndarray_dyn::<T>()?.into_dimensionality::<D>().map_err(|_| {
            Error::shape(
                "tensor",
                self.shape(),
                format!("it has {} dimensions, not the {} asked for", self.ndim(), D::NDIM.unwrap_or(0)),
            )
        })
    }

    /// [`to_ndarray`](Self::to_ndarray) with a dynamic number of dimensions.
    pub fn to_ndarray_dyn<T: Element>(&self) -> Result<ndarray::ArrayD<T>> {
        Ok(self.view::<T>()?.to_owned())
    }

    /// A zero-copy ndarray view of a host tensor's elements (`T` must be the tensor's dtype).
    pub fn view<T: Element>(&self) -> Result<ArrayViewD<'_, T>> {
        let data = self.as_slice::<T>()?;
        ArrayViewD::from_shape(IxDyn(self.shape()), data)
            .map_err(|e| Error::shape("tensor", self.shape(), e.to_string()))
    }
}

impl<T: Element, D: Dimension> From<Array<T, D>> for Tensor {
    /// Takes the array's buffer when it is in standard (row-major, contiguous) layout; copies
    /// otherwise.
    fn from(a: Array<T, D>) -> Tensor {
        if a.is_standard_layout() {
            let shape = a.shape().to_vec();
            let n = a.len();
            // A standard-layout array's elements are contiguous from its offset in the buffer.
            let (mut v, offset) = a.into_raw_vec_and_offset();
            let start = offset.unwrap_or(0).min(v.len());
            v.drain(..start);
            v.truncate(n);
            return Tensor::from_host(shape, T::wrap(v));
        }
        from_iter(a.view())
    }
}

impl<T: Element, S: Data<Elem = T>, D: Dimension> From<&ArrayBase<S, D>> for Tensor {
    fn from(a: &ArrayBase<S, D>) -> Tensor {
        from_iter(a.view())
    }
}

impl<'a, T: Element, D: Dimension> From<ArrayView<'a, T, D>> for Tensor {
    fn from(a: ArrayView<'a, T, D>) -> Tensor {
        from_iter(a)
    }
}

impl<T: Element, D: Dimension> TryFrom<&Tensor> for Array<T, D> {
    type Error = Error;
    /// [`Tensor::to_ndarray`].
    fn try_from(t: &Tensor) -> Result<Self> {
        t.to_ndarray()
    }
}

#[cfg(test)]
mod tests {
    use half::f16;
    use ndarray::{array, s, Array2, Array3, Array4, ArrayD, Ix2, IxDyn};

    use crate::{DType, Error, Tensor};

    #[test]
    fn into_tensor_from_owned_views_and_references() {
        let a: Array2<f32> = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let want = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
        assert_eq!(Tensor::from_ndarray(&a).unwrap(), want);
        assert_eq!(Tensor::from_ndarray(a.view()).unwrap(), want);
        assert_eq!(Tensor::from(&a), want);
        assert_eq!(Tensor::from(a.view()), want);
        let t: Tensor = a.clone().into();
        assert_eq!(t, want);
        #[allow(clippy::unnecessary_fallible_conversions)] // what users write, and it must compile
        let tried = Tensor::try_from(a.clone()).unwrap();
        assert_eq!(tried, want);
        // Any layout: a transposed view and a strided slice are copied in logical order.
        let tt = Tensor::from(a.t());
        assert_eq!(tt.to_vec::<f32>().unwrap(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!(tt.shape(), &[3, 2]);
        assert_eq!(Tensor::from(a.slice(s![.., ..;2])).to_vec::<f32>().unwrap(), vec![1.0, 3.0, 4.0, 6.0]);
        // Dynamic dimension and half precision.
        let d = ArrayD::<f16>::from_elem(IxDyn(&[2, 1, 3]), f16::from_f32(0.5));
        let td: Tensor = d.into();
        assert_eq!((td.shape(), td.dtype()), (&[2usize, 1, 3][..], DType::F16));
    }

    #[test]
    fn out_of_a_tensor_with_typed_dimensions() {
        let t = Tensor::from_vec((0..24).map(|i| i as f32).collect::<Vec<_>>(), &[1, 2, 3, 4]).unwrap();
        let a: Array4<f32> = t.to_ndarray().unwrap();
        assert_eq!(a[[0, 1, 2, 3]], 23.0);
        let d = t.to_ndarray_dyn::<f32>().unwrap();
        assert_eq!(d.shape(), &[1, 2, 3, 4]);
        let b = Array4::<f32>::try_from(&t).unwrap();
        assert_eq!(a, b);
        assert_eq!(t.view::<f32>().unwrap()[[0, 0, 1, 0]], 4.0);
        // Round trip.
        assert_eq!(Tensor::from(a), t);
        // Wrong rank and wrong element type are typed errors.
        assert!(matches!(t.to_ndarray::<f32, Ix2>(), Err(Error::Shape { .. })));
        assert!(matches!(Array3::<f32>::try_from(&t), Err(Error::Shape { .. })));
        assert!(matches!(t.to_ndarray::<f16, IxDyn>(), Err(Error::DType { .. })));
    }
}
