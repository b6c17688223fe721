//! # qconv
//!
//! PyTorch-style *reference quantized convolutions* in Rust: `Conv1d/2d/3d` and
//! `ConvTranspose1d/2d/3d` whose weight is fake-quantized (quantized, then dequantized) with
//! per-tensor or per-channel affine parameters, followed by a float convolution — exactly what
//! `torch.ao.nn.quantized.reference` does, with its bugs fixed.
//!
//! * [`quant`]: qschemes, quantized dtypes, [`WeightQParams`], observers and the bit-exact
//!   fake-quant rule of PyTorch CPU.
//! * [`conv`]: [`ConvOptions`], the six modules ([`Conv1d`] … [`ConvTranspose3d`]) and their
//!   state dicts.
//! * [`cpu`]: the CPU kernels (fast path and the naive oracle).
//! * [`cuda`]: the CUDA backend: a probe that never panics, NVRTC kernel compilation and cache,
//!   and the per-device [`cuda::runtime::Runtime`] (streams, device memory, launches); modules
//!   and tensors move there with `to_device(Device::Cuda(n))`.
//! * [`io`]: safetensors files holding one or many modules.
//!
//! ```
//! use qconv::{Conv2d, ConvOptions, Padding, Tensor, WeightQParams, QuantDType};
//! # fn main() -> qconv::Result<()> {
//! // A 2→3 channel 3×3 convolution with per-channel symmetric qint8 weights.
//! let weight: Vec<f32> = (0..3 * 2 * 9).map(|i| ((i * 37 % 19) as f32 - 9.0) / 20.0).collect();
//! let weight = Tensor::from_vec(weight, &[3, 2, 3, 3])?;
//! let qparams = WeightQParams::per_channel_symmetric_from_weight(&weight, 0, QuantDType::QInt8)?;
//! let conv = Conv2d::from_float(weight, None, qparams, ConvOptions::new([3, 3]).padding(Padding::Explicit([1, 1])))?;
//! let x = Tensor::from_vec(vec![0.5f32; 2 * 5 * 5], &[1, 2, 5, 5])?;
//! let y = conv.forward(&x)?;
//! assert_eq!(y.shape(), &[1, 3, 5, 5]);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// How this copy of qconv was built (target triple, profile, CUDA bindings version or CPU only).
pub const BUILD_INFO: &str = env!("QCONV_BUILD_INFO");

pub mod bench;
pub mod conv;
pub mod cpu;
pub mod cuda;
pub mod dtype;
pub mod error;
pub mod io;
pub mod oracle;
pub mod problem;
pub mod quant;
pub mod tensor;
#[doc(hidden)]
pub mod testing;
mod transfer;

pub use conv::{
    AnyConv, Conv1d, Conv2d, Conv3d, ConvModule, ConvOptions, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d,
    Padding, PaddingMode, Precision, WeightStorage,
};
pub use error::{Error, Result};

/// The README's code examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
pub use dtype::DType;
pub use quant::{QScheme, QuantDType, QuantizedWeight, WeightQParams};
pub use tensor::{Device, Element, Tensor};
