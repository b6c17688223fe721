//! The library's API conventions: option forms, kernel size from the weight, one argument order,
//! the Forward trait, ndarray conversions through the re-exported crate, short formatting, and
//! errors instead of panics.

use qconv::ndarray::{Array, Array4, Ix4};
use qconv::{
    AnyConv, Conv1d, Conv2d, ConvOptions, ConvTranspose2d, Device, Error, Forward, Padding, QuantDType, Tensor,
    WeightQParams,
};

fn weight(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| ((i * 37 % 19) as f32 - 9.0) / 20.0).collect::<Vec<_>>(), shape).unwrap()
}

fn input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| (i % 11) as f32 / 5.0 - 1.0).collect::<Vec<_>>(), shape).unwrap()
}

fn qp() -> WeightQParams {
    WeightQParams::per_tensor(0.01, 0, QuantDType::QInt8)
}

#[test]
fn options_take_a_number_or_an_array() {
    let a = ConvOptions::<2>::new().stride(2).padding(1).dilation(3).kernel_size(5);
    let b = ConvOptions::<2>::new().stride([2, 2]).padding([1, 1]).dilation([3, 3]).kernel_size([5, 5]);
    assert_eq!(a, b);
    assert_eq!(a.padding, Padding::Explicit([1, 1]));
    let t = ConvOptions::<2>::new().stride([2, 1]).output_padding(1);
    assert_eq!((t.stride, t.output_padding), ([2, 1], [1, 1]));
    assert_eq!(ConvOptions::<1>::new().padding(Padding::Same).padding, Padding::Same);
    assert_eq!(ConvOptions::<3>::new().padding(Padding::Valid).padding, Padding::Valid);
    assert_eq!(ConvOptions::<2>::default(), ConvOptions::<2>::new());
}

#[test]
fn kernel_size_comes_from_the_weight_and_a_mismatch_is_an_error() {
    let m = Conv2d::new(weight(&[4, 2, 3, 5]), None, qp(), ConvOptions::new().padding(1)).unwrap();
    assert_eq!(m.kernel_size(), [3, 5]);
    assert_eq!(m.options().kernel_size, Some([3, 5]));
    assert_eq!((m.in_channels(), m.out_channels()), (2, 4));
    // Stated and equal: fine. Stated and different: a shape error on the weight.
    Conv2d::new(weight(&[4, 2, 3, 5]), None, qp(), ConvOptions::new().kernel_size([3, 5])).unwrap();
    let e = Conv2d::new(weight(&[4, 2, 3, 5]), None, qp(), ConvOptions::new().kernel_size(3)).unwrap_err();
    assert!(matches!(e, Error::Shape { what: "weight", .. }), "{e}");
    assert!(e.to_string().contains("kernel_size [3, 3]") && e.to_string().contains("[3, 5]"), "{e}");
    // Padding::Same needs the kernel size: taken from the weight too.
    let same = Conv1d::new(weight(&[2, 2, 4]), None, qp(), ConvOptions::new().padding(Padding::Same)).unwrap();
    assert_eq!(same.forward(&input(&[1, 2, 9])).unwrap().shape(), &[1, 2, 9]);
    // Shapes without a module need the kernel size stated.
    let e = ConvOptions::<1>::new().conv_output_size(&[9]).unwrap_err();
    assert!(matches!(e, Error::InvalidConfig { param: "kernel_size", .. }), "{e}");
    assert!(Conv2d::weight_shape(2, 4, &ConvOptions::new()).is_err());
    assert_eq!(Conv2d::weight_shape(2, 4, &ConvOptions::new().kernel_size([3, 5])).unwrap(), vec![4, 2, 3, 5]);
}

#[test]
fn one_argument_order_weight_bias_qparams_options() {
    let w = weight(&[4, 2, 3, 3]);
    let b = Some(Tensor::from_vec(vec![0.5f32; 4], &[4]).unwrap());
    let pc = WeightQParams::per_channel(vec![0.01; 4], vec![0; 4], 0, QuantDType::QInt8);
    let sym = WeightQParams::per_channel_symmetric_from_weight(&w, 0, QuantDType::QInt8).unwrap();
    let o = ConvOptions::new().padding(1);
    let a = Conv2d::new(w.clone(), b.clone(), pc.clone(), o).unwrap();
    let f = Conv2d::from_float(w.clone(), b.clone(), pc, o).unwrap();
    assert_eq!(a.forward(&input(&[1, 2, 5, 5])).unwrap(), f.forward(&input(&[1, 2, 5, 5])).unwrap());
    Conv2d::new(w.clone(), b.clone(), sym, o).unwrap();
    Conv2d::from_float_observed(w, b, o).unwrap();
    let float_zp = WeightQParams::per_channel_float(vec![0.01; 4], vec![0.5; 4], 0, QuantDType::QUInt8);
    assert_eq!(float_zp.axis, 0);
}

#[test]
fn forward_trait_runs_modules_and_chains() {
    let c1 = Conv2d::new(weight(&[3, 2, 3, 3]), None, qp(), ConvOptions::new().padding(1)).unwrap();
    let c2 = Conv2d::new(weight(&[2, 3, 1, 1]), None, qp(), ConvOptions::new()).unwrap();
    let x = input(&[1, 2, 6, 6]);
    fn generic<M: Forward<Output = Tensor> + ?Sized>(m: &M, x: &Tensor) -> Tensor {
        m.forward(x).unwrap()
    }
    assert_eq!(generic(&c1, &x), c1.forward(&x).unwrap());
    let any: Vec<AnyConv> = vec![AnyConv::Conv2d(c1.clone()), AnyConv::Conv2d(c2.clone())];
    let chained = generic(any.as_slice(), &x);
    assert_eq!(chained, c2.forward(&c1.forward(&x).unwrap()).unwrap());
    let boxed: Vec<Box<dyn Forward<Output = Tensor>>> = vec![Box::new(c1), Box::new(c2)];
    assert_eq!(generic(&boxed, &x), chained);
    // Transposed modules: forward uses output_padding; output_size has its own method.
    let t = ConvTranspose2d::new(weight(&[2, 2, 3, 3]), None, qp(), ConvOptions::new().stride(2)).unwrap();
    assert_eq!(generic(&t, &x).shape(), &[1, 2, 13, 13]);
    assert_eq!(t.forward_with_output_size(&x, &[14, 14]).unwrap().shape(), &[1, 2, 14, 14]);
    let any_t = AnyConv::ConvTranspose2d(t);
    assert_eq!(any_t.forward_with_output_size(&x, &[14, 13]).unwrap().shape(), &[1, 2, 14, 13]);
    let e = any[0].forward_with_output_size(&x, &[14, 8]).unwrap_err();
    assert!(e.to_string().contains("[14, 8]") && !e.to_string().contains("Some("), "{e}");
}

#[test]
fn ndarray_in_and_out_through_the_reexport() {
    let a = Array::from_shape_fn((1, 2, 5, 5), |(_, c, h, w)| (c * 25 + h * 5 + w) as f32 / 50.0);
    let conv = Conv2d::new(weight(&[3, 2, 3, 3]), None, qp(), ConvOptions::new()).unwrap();
    let y = conv.forward(&Tensor::from(&a)).unwrap();
    let out: Array4<f32> = y.to_ndarray().unwrap();
    assert_eq!(out.dim(), (1, 3, 3, 3));
    assert_eq!(Tensor::from_ndarray(a.view()).unwrap(), a.clone().into());
    assert!(y.to_ndarray::<f32, qconv::ndarray::Ix2>().is_err());
    let back = Array::<f32, Ix4>::try_from(&y).unwrap();
    assert_eq!(back, out);
}

#[test]
fn formatting_is_short() {
    let t = Tensor::zeros(&[1000, 1000], qconv::DType::F32).unwrap();
    assert!(format!("{t:?}").len() < 120);
    let shown = t.to_string();
    assert!(shown.len() < 400 && shown.lines().count() <= 8, "{shown}");
}

#[test]
fn device_errors_are_results_not_panics() {
    let t = input(&[2, 3]);
    // The conversions return Result (no panicking forms remain).
    let v: qconv::Result<Vec<f32>> = t.to_vec_f32();
    assert_eq!(v.unwrap().len(), 6);
    let h: qconv::Result<Tensor> = t.to_dtype(qconv::DType::F16);
    assert_eq!(h.unwrap().dtype(), qconv::DType::F16);
    if !qconv::cuda::probe().usable() {
        let e = t.to_device(Device::Cuda(0)).unwrap_err();
        assert!(matches!(e, Error::CudaUnavailable { ordinal: 0, .. }), "{e}");
        let m = Conv1d::new(weight(&[2, 2, 1]), None, qp(), ConvOptions::new()).unwrap();
        assert!(matches!(m.to_device(Device::Cuda(0)), Err(Error::CudaUnavailable { .. })));
        assert_eq!(Device::best(), Device::Cpu);
    }
    #[cfg(not(feature = "cuda"))]
    assert_eq!(qconv::cuda::probe().unusable_reason(), Some("built without the cuda feature"));
}

#[test]
fn loading_an_entry_as_the_wrong_type_names_the_type() {
    let m = Conv2d::new(weight(&[4, 2, 3, 3]), None, qp(), ConvOptions::new()).unwrap();
    let sd = m.state_dict("layer.");
    let e = Conv1d::from_state_dict(&sd, "layer.").unwrap_err();
    assert!(e.to_string().contains("holds a Conv2d, not a Conv1d"), "{e}");
}
