//! # qconv
//!
//! PyTorch-style *reference quantized convolutions* in Rust: `Conv1d/2d/3d` and
//! `ConvTranspose1d/2d/3d` whose weight is fake-quantized (quantized, then dequantized) with
//! per-tensor or per-channel affine parameters, followed by a float convolution — exactly what
//! `torch.ao.nn.quantized.reference` does, with its bugs fixed.
//!
//! * [`Tensor`] and [`Device`]: dense tensors of f32, f16 or bf16 on the host or a CUDA device,
//!   with `From` conversions to and from [`ndarray`] arrays (re-exported) and a short
//!   `Debug`/`Display`.
//! * [`quant`]: qschemes, quantized dtypes, [`WeightQParams`], observers and the bit-exact
//!   fake-quant rule of PyTorch CPU.
//! * [`conv`]: [`ConvOptions`], the six modules ([`Conv1d`] … [`ConvTranspose3d`]), [`AnyConv`]
//!   for a module whose type is read from a file, and their state dicts. Every module implements
//!   [`Forward`].
//! * [`io`]: safetensors files holding one or many modules (`scripts/export_pytorch.py` writes
//!   them from PyTorch).
//! * [`cuda`]: the CUDA backend: a probe that never panics, NVRTC kernel compilation and cache,
//!   and the per-device [`cuda::runtime::Runtime`] (streams, device memory, launches); modules
//!   and tensors move there with `to_device(Device::Cuda(n))`. Needs a GPU of compute capability
//!   8.0 (`sm_80`) or newer.
//! * [`cpu`] and [`oracle`]: the CPU engine and the naive reference it is tested against.
//!
//! # Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `cuda-13` | yes | the CUDA backend, with CUDA 13 driver bindings (`cudarc`, loaded at run time: no toolkit needed to build) |
//! | `cuda-12` | no | the same for CUDA 12.x drivers: `default-features = false, features = ["cuda-12"]` |
//! | `cuda` | set by either | the CUDA backend; name a version feature instead (alone, or with both versions, the build stops with one message) |
//! | `cli` | yes | the `qconv` command line (`clap`, `indicatif`, `env_logger`, `libc`) |
//! | `bindgen` | no | regenerates the kernel argument bindings from `cuda/params.h` (needs libclang) |
//!
//! With `default-features = false` the crate is CPU-only and has no CUDA dependency. The API keeps
//! its shape: [`Device::Cuda`] exists and every CUDA request returns
//! [`Error::CudaUnavailable`] ("built without the cuda feature"); only the items that hand out
//! CUDA types (streams, device buffers) need the `cuda` feature, and are marked so.
//!
//! Diagnostics go through the [`log`](https://docs.rs/log) crate (target `qconv`); install any
//! logger to see them.
//!
//! ```
//! use qconv::{Conv2d, ConvOptions, Tensor, WeightQParams, QuantDType};
//! # fn main() -> qconv::Result<()> {
//! // A 2→3 channel 3×3 convolution with per-channel symmetric qint8 weights.
//! let weight: Vec<f32> = (0..3 * 2 * 9).map(|i| ((i * 37 % 19) as f32 - 9.0) / 20.0).collect();
//! let weight = Tensor::from_vec(weight, &[3, 2, 3, 3])?;
//! let qparams = WeightQParams::per_channel_symmetric_from_weight(&weight, 0, QuantDType::QInt8)?;
//! // Every constructor takes (weight, bias, qparams, options); the kernel size is the weight's.
//! let conv = Conv2d::new(weight, None, qparams, ConvOptions::new().padding(1))?;
//! let x = Tensor::from_vec(vec![0.5f32; 2 * 5 * 5], &[1, 2, 5, 5])?;
//! let y = conv.forward(&x)?;
//! assert_eq!(y.shape(), &[1, 3, 5, 5]);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// How this copy of qconv was built (target triple, profile, CUDA bindings version or CPU only).
pub const BUILD_INFO: &str = env!("QCONV_BUILD_INFO");

mod alloc;
#[doc(hidden)]
pub mod bench;
pub mod conv;
pub mod cpu;
pub mod cuda;
pub mod dtype;
pub mod error;
pub mod io;
mod module;
pub mod oracle;
pub mod parallel;
pub mod problem;
pub mod quant;
pub mod tensor;
mod tensor_fmt;
mod tensor_ndarray;
#[doc(hidden)]
pub mod testing;
mod transfer;

/// The `cudarc` crate of the CUDA types in the API (`CudaStream`, `CudaSlice`).
#[cfg(feature = "cuda")]
#[cfg_attr(docsrs, doc(cfg(feature = "cuda")))]
pub use cudarc;
/// The `half` crate of the [`Element`] types `f16` and `bf16`.
pub use half;
pub use module::Forward;
/// The `ndarray` this crate's conversions use (`Tensor::from(&array)`, `to_ndarray`): use it
/// (`qconv::ndarray::Array4`) or depend on the same major version.
pub use ndarray;

pub use conv::{
    AnyConv, AnyQuantizedConv, Conv1d, Conv2d, Conv3d, ConvModule, ConvOptions, ConvTranspose1d, ConvTranspose2d,
    ConvTranspose3d, Dims, Int8Weight, Padding, PaddingMode, Precision, QuantizedConv1d, QuantizedConv2d,
    QuantizedConv3d, QuantizedConvModule, QuantizedConvTranspose1d, QuantizedConvTranspose2d, QuantizedConvTranspose3d,
    WeightStorage,
};
pub use error::{Error, Result};

/// The README's code examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
pub use dtype::DType;
pub use quant::{ActivationQParams, QScheme, QuantDType, QuantizedTensor, QuantizedWeight, WeightQParams};
pub use tensor::{Device, Element, Tensor};
