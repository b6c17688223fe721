//! `Debug` and `Display` for [`Tensor`]: short, whatever the size.
//!
//! `Debug` is one line: shape, dtype, device and at most [`DEBUG_VALUES`] leading values
//! (`Tensor { shape: [1000, 1000], dtype: f32, device: cpu, values: [0.5, 0.25, …] }`).
//! `Display` prints the elements nested like ndarray and numpy, with each dimension longer than
//! `2 · EDGE` shown as its first and last [`EDGE`] entries around `...`, then a line with the
//! shape, dtype and device; a 1000×1000 tensor takes 8 lines. A precision (`{:.3}`) applies to
//! every element. Device tensors print their description only: formatting never copies from a
//! device.

use std::fmt;

use crate::tensor::{CpuStorage, Tensor};

/// Values shown by `Debug`.
pub const DEBUG_VALUES: usize = 6;
/// Entries shown at each end of a summarised dimension by `Display`.
pub const EDGE: usize = 3;

/// Element `i` of host storage, widened to f32.
fn value(s: &CpuStorage, i: usize) -> f32 {
    match s {
        CpuStorage::F32(v) => v[i],
        CpuStorage::F16(v) => v[i].to_f32(),
        CpuStorage::BF16(v) => v[i].to_f32(),
    }
}

fn write_value(f: &mut fmt::Formatter<'_>, v: f32) -> fmt::Result {
    match f.precision() {
        Some(p) => write!(f, "{v:.p$}"),
        None => write!(f, "{v}"),
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor {{ shape: {:?}, dtype: {}, device: {}", self.shape(), self.dtype(), self.device())?;
        if let Some(s) = self.host_storage() {
            let n = self.numel();
            f.write_str(", values: [")?;
            for i in 0..n.min(DEBUG_VALUES) {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_value(f, value(s, i))?;
            }
            if n > DEBUG_VALUES {
                f.write_str(", …")?;
            }
            f.write_str("]")?;
        }
        f.write_str(" }")
    }
}

/// Indices shown along a dimension of length `n` (`None`: the `...` marker).
fn shown(n: usize) -> Vec<Option<usize>> {
    if n <= 2 * EDGE {
        (0..n).map(Some).collect()
    } else {
        (0..EDGE).map(Some).chain([None]).chain((n - EDGE..n).map(Some)).collect()
    }
}

/// Writes the sub-array at `offset` over `shape[dim..]` (strides `strides[dim..]`).
fn write_nested(
    f: &mut fmt::Formatter<'_>,
    s: &CpuStorage,
    shape: &[usize],
    strides: &[usize],
    dim: usize,
    offset: usize,
) -> fmt::Result {
    if dim == shape.len() {
        return write_value(f, value(s, offset));
    }
    f.write_str("[")?;
    let last = dim + 1 == shape.len();
    for (k, idx) in shown(shape[dim]).into_iter().enumerate() {
        if k > 0 {
            if last {
                f.write_str(", ")?;
            } else {
                // A newline per nested level, indented under the opening brackets.
                f.write_str(",")?;
                for _ in 0..shape.len() - dim - 1 {
                    f.write_str("\n")?;
                }
                write!(f, "{:width$}", "", width = dim + 1)?;
            }
        }
        match idx {
            Some(i) => write_nested(f, s, shape, strides, dim + 1, offset + i * strides[dim])?,
            None => f.write_str("...")?,
        }
    }
    f.write_str("]")
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = self.shape();
        if let Some(s) = self.host_storage() {
            if shape.contains(&0) {
                f.write_str("[]")?;
            } else {
                let mut strides = vec![1; shape.len()];
                for d in (0..shape.len().saturating_sub(1)).rev() {
                    strides[d] = strides[d + 1] * shape[d + 1];
                }
                write_nested(f, s, shape, &strides, 0, 0)?;
            }
            f.write_str("\n")?;
        }
        write!(f, "Tensor{:?} {} {}", shape, self.dtype(), self.device())
    }
}

#[cfg(test)]
mod tests {
    use crate::tensor::Tensor;

    #[test]
    fn debug_and_display_stay_short() {
        let n = 1000 * 1000;
        let t = Tensor::from_vec((0..n).map(|i| i as f32).collect::<Vec<_>>(), &[1000, 1000]).unwrap();
        let d = format!("{t:?}");
        assert_eq!(d, "Tensor { shape: [1000, 1000], dtype: f32, device: cpu, values: [0, 1, 2, 3, 4, 5, …] }");
        let s = t.to_string();
        assert!(s.len() < 400 && s.lines().count() == 8, "{s}");
        assert!(s.starts_with("[[0, 1, 2, ..., 997, 998, 999],\n [1000, 1001, 1002, ..., 1997, 1998, 1999],"), "{s}");
        assert!(s.ends_with("999997, 999998, 999999]]\nTensor[1000, 1000] f32 cpu"), "{s}");
        let small = Tensor::from_vec(vec![0.5f32, 1.25, -2.0, 3.0], &[2, 2]).unwrap();
        assert_eq!(format!("{small:.2}"), "[[0.50, 1.25],\n [-2.00, 3.00]]\nTensor[2, 2] f32 cpu");
        let three = Tensor::from_vec((0..8).map(|i| i as f32).collect::<Vec<_>>(), &[2, 2, 2]).unwrap();
        assert_eq!(three.to_string(), "[[[0, 1],\n  [2, 3]],\n\n [[4, 5],\n  [6, 7]]]\nTensor[2, 2, 2] f32 cpu");
        let scalar = Tensor::from_vec(vec![half::f16::from_f32(1.5)], &[]).unwrap();
        assert_eq!(scalar.to_string(), "1.5\nTensor[] f16 cpu");
        assert_eq!(Tensor::zeros(&[0, 4], crate::DType::BF16).unwrap().to_string(), "[]\nTensor[0, 4] bf16 cpu");
    }
}
