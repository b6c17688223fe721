//! Helpers shared by the integration tests.

use qconv::io::StoredData;
use qconv::{AnyConv, Tensor};

/// Σ|x|·|ŵ| + |b| per output element: the same module with absolute weights and bias, no
/// quantization, applied to |x|.
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
