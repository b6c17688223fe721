//! Helpers shared by the integration tests.

use qconv::cpu::conv_naive;
use qconv::io::StoredData;
use qconv::{AnyConv, ConvModule, Tensor};

/// Σ|x|·|ŵ| + |b| per output element: the same module with absolute weights and bias, no
/// quantization, applied to |x|.
#[allow(dead_code)] // not every test crate uses it
pub fn magnitude(m: &AnyConv, prefix: &str, x: &Tensor, output_size: Option<&[usize]>) -> Vec<f32> {
    let mut sd = m.state_dict(prefix);
    let abs = |v: Vec<f32>| v.into_iter().map(f32::abs).collect::<Vec<_>>();
    let w = m.get_weight();
    sd.insert_tensor(format!("{prefix}weight"), &Tensor::from_vec(abs(w.to_vec_f32()), w.shape()).unwrap());
    if let Some(b) = sd.tensors.get(&format!("{prefix}bias")).cloned() {
        if let StoredData::F32(v) = b.data {
            sd.insert_tensor(format!("{prefix}bias"), &Tensor::from_vec(abs(v), &b.shape).unwrap());
        }
    }
    sd.metadata.insert(format!("{prefix}weight_qscheme"), "None".into());
    sd.metadata.insert(format!("{prefix}weight_dtype"), "torch.float32".into());
    let am = AnyConv::from_state_dict(&sd, prefix).unwrap();
    let ax = Tensor::from_vec(abs(x.to_vec_f32()), x.shape()).unwrap();
    am.forward(&ax, output_size).unwrap().to_vec_f32()
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
    let w = m.get_weight().to_vec_f32();
    let b = m.bias().map(|b| b.to_vec_f32());
    let xv = x.to_vec_f32();
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
    let b = m.bias().map(|b| b.to_vec_f32());
    let xv = x.to_vec_f32();
    let y = conv_naive(&p, weight, b.as_deref(), &xv);
    let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<f32>>();
    let mag = conv_naive(&p, &abs(weight), b.as_deref().map(abs).as_deref(), &abs(&xv));
    (y, mag)
}

/// `[N, C, *s]` → `[N, *s, C]` on the host (any dtype, exact).
#[allow(dead_code)] // not every test crate uses it
pub fn channels_last(x: &Tensor) -> Tensor {
    let shape = x.shape().to_vec();
    let (n, c) = (shape[0], shape[1]);
    let per: usize = shape[2..].iter().product();
    let v = x.to_vec_f32();
    let mut out = vec![0f32; v.len()];
    for b in 0..n {
        for ch in 0..c {
            for s in 0..per {
                out[(b * per + s) * c + ch] = v[(b * c + ch) * per + s];
            }
        }
    }
    let mut new_shape = vec![n];
    new_shape.extend_from_slice(&shape[2..]);
    new_shape.push(c);
    Tensor::from_vec(out, &new_shape).unwrap().to_dtype(x.dtype())
}

/// `[N, *s, C]` → `[N, C, *s]` on the host (any dtype, exact).
#[allow(dead_code)] // not every test crate uses it
pub fn channels_first(x: &Tensor) -> Tensor {
    let shape = x.shape().to_vec();
    let (n, c) = (shape[0], shape[shape.len() - 1]);
    let per: usize = shape[1..shape.len() - 1].iter().product();
    let v = x.to_vec_f32();
    let mut out = vec![0f32; v.len()];
    for b in 0..n {
        for s in 0..per {
            for ch in 0..c {
                out[(b * c + ch) * per + s] = v[(b * per + s) * c + ch];
            }
        }
    }
    let mut new_shape = vec![n, c];
    new_shape.extend_from_slice(&shape[1..shape.len() - 1]);
    Tensor::from_vec(out, &new_shape).unwrap().to_dtype(x.dtype())
}
