//! Helpers shared by the integration tests.

use qconv::io::StoredData;
use qconv::oracle::conv_naive;
use qconv::{AnyConv, ConvModule, Tensor};

/// `m.forward(x)`, or `m.forward_with_output_size(x, o)` when an output size is given.
#[allow(dead_code)] // not every test crate uses it
pub fn forward_opt(m: &AnyConv, x: &Tensor, output_size: Option<&[usize]>) -> qconv::Result<Tensor> {
    match output_size {
        Some(o) => m.forward_with_output_size(x, o),
        None => m.forward(x),
    }
}

/// Σ|x|·|ŵ| + |b| per output element: the same module with absolute weights and bias, no
/// quantization, applied to |x|.
#[allow(dead_code)] // not every test crate uses it
pub fn magnitude(m: &AnyConv, prefix: &str, x: &Tensor, output_size: Option<&[usize]>) -> Vec<f32> {
    let mut sd = m.state_dict(prefix);
    let abs = |v: Vec<f32>| v.into_iter().map(f32::abs).collect::<Vec<_>>();
    let w = m.get_weight();
    sd.insert_tensor(format!("{prefix}weight"), &Tensor::from_vec(abs(w.to_vec_f32().unwrap()), w.shape()).unwrap());
    if let Some(b) = sd.tensors.get(&format!("{prefix}bias")).cloned() {
        if let StoredData::F32(v) = b.data {
            sd.insert_tensor(format!("{prefix}bias"), &Tensor::from_vec(abs(v), &b.shape).unwrap());
        }
    }
    sd.metadata.insert(format!("{prefix}weight_qscheme"), "None".into());
    sd.metadata.insert(format!("{prefix}weight_dtype"), "torch.float32".into());
    let am = AnyConv::from_state_dict(&sd, prefix).unwrap();
    let ax = Tensor::from_vec(abs(x.to_vec_f32().unwrap()), x.shape()).unwrap();
    match output_size {
        Some(o) => am.forward_with_output_size(&ax, o),
        None => am.forward(&ax),
    }
    .unwrap()
    .to_vec_f32()
    .unwrap()
}

/// The oracle for a module and input: f64 accumulation over the fake-quantized weight, and
/// Σ|x|·|ŵ| + |b| per output for the tolerance.
#[allow(dead_code)] // not every test crate uses it
pub fn oracle<const D: usize, const T: bool>(
    m: &ConvModule<D, T>,
    x: &Tensor,
    output_size: Option<&[usize]>,
) -> (Vec<f64>, Vec<f64>) {
    let p = m.conv_problem(x.shape(), output_size).unwrap();
    let w = m.get_weight().to_vec_f32().unwrap();
    let b = m.bias().map(|b| b.to_vec_f32().unwrap());
    let xv = x.to_vec_f32().unwrap();
    let y = conv_naive(&p, &w, b.as_deref(), &xv);
    let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<f32>>();
    let mag = conv_naive(&p, &abs(&w), b.as_deref().map(abs).as_deref(), &abs(&xv));
    (y, mag)
}

/// [`oracle`] with `weight` in place of the module's fake-quantized weight (same layout), e.g.
/// the weight rounded to f16 that the tensor cores multiply with.
#[allow(dead_code)] // not every test crate uses it
pub fn oracle_with_weight<const D: usize, const T: bool>(
    m: &ConvModule<D, T>,
    x: &Tensor,
    weight: &[f32],
) -> (Vec<f64>, Vec<f64>) {
    let p = m.conv_problem(x.shape(), None).unwrap();
    let b = m.bias().map(|b| b.to_vec_f32().unwrap());
    let xv = x.to_vec_f32().unwrap();
    let y = conv_naive(&p, weight, b.as_deref(), &xv);
    let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<f32>>();
    let mag = conv_naive(&p, &abs(weight), b.as_deref().map(abs).as_deref(), &abs(&xv));
    (y, mag)
}

/// `[N, C, *s]` → `[N, *s, C]` on the host (any dtype, exact).
#[allow(dead_code)] // not every test crate uses it
pub fn channels_last(x: &Tensor) -> Tensor {
    x.to_channels_last().unwrap()
}

/// `[N, *s, C]` → `[N, C, *s]` on the host (any dtype, exact).
#[allow(dead_code)] // not every test crate uses it
pub fn channels_first(x: &Tensor) -> Tensor {
    x.to_channels_first().unwrap()
}
