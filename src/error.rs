//! The crate's single error type.
//!
//! Every fallible public function returns [`Result<T>`]. Each variant names the offending value and
//! the rule it broke, so that the `Display` text alone tells a user what to fix.

use std::path::PathBuf;

/// Convenience alias used by every fallible function of the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in qconv.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- quantization parameters -------------------------------------------------------------
    /// The (qscheme, dtype) pair is not one PyTorch's reference modules accept.
    #[error("unsupported weight dtype and qscheme: {dtype}, {qscheme} ({rule})")]
    UnsupportedQuantization {
        /// The qscheme, as PyTorch spells it.
        qscheme: String,
        /// The quantized dtype, as PyTorch spells it.
        dtype: String,
        /// Why the pair is rejected.
        rule: &'static str,
    },
    /// A scale or zero-point tensor has the wrong number of dimensions or elements.
    #[error("{param} has shape {shape:?}, but {rule}")]
    QParamShape {
        /// `"weight_scale"` or `"weight_zero_point"`.
        param: &'static str,
        /// The shape that was given.
        shape: Vec<usize>,
        /// What was expected.
        rule: String,
    },
    /// A per-channel axis does not index a dimension of the weight.
    #[error("per-channel axis {axis} is out of range for a {ndim}-d weight (expected 0 <= axis < {ndim})")]
    AxisOutOfRange {
        /// The axis that was given.
        axis: i64,
        /// Number of dimensions of the weight.
        ndim: usize,
    },
    /// The number of per-channel scales differs from the weight's size along the axis.
    #[error("length of scales must equal the weight's size along axis {axis}: expected {expected}, got {got}")]
    ChannelMismatch {
        /// The per-channel axis.
        axis: usize,
        /// The weight's size along `axis`.
        expected: usize,
        /// The number of scales (or zero points) given.
        got: usize,
    },
    /// An integer zero point lies outside the range of the quantized dtype.
    #[error("zero point {zero_point} is outside the range [{min}, {max}] of {dtype}")]
    ZeroPointOutOfRange {
        /// The offending zero point.
        zero_point: i64,
        /// The quantized dtype.
        dtype: String,
        /// Smallest valid value.
        min: i64,
        /// Largest valid value.
        max: i64,
    },
    /// A scale is NaN or infinite.
    #[error("scale {scale} (channel {channel}) is not finite; scales must be finite numbers")]
    NonFiniteScale {
        /// The offending scale.
        scale: f64,
        /// Its channel (0 for per-tensor).
        channel: usize,
    },
    /// A float zero point is NaN or infinite.
    #[error("zero point {zero_point} (channel {channel}) is not finite")]
    NonFiniteZeroPoint {
        /// The offending zero point.
        zero_point: f64,
        /// Its channel.
        channel: usize,
    },
    /// `quant_min`/`quant_max` are not a valid sub-range of the dtype.
    #[error("quant range [{quant_min}, {quant_max}] is invalid for {dtype}: {rule}")]
    QuantRange {
        /// Requested minimum.
        quant_min: i64,
        /// Requested maximum.
        quant_max: i64,
        /// The quantized dtype.
        dtype: String,
        /// What is wrong.
        rule: String,
    },
    /// A weight element is NaN or infinite, so it cannot be quantized.
    #[error("weight element {index} is {value}: weights must be finite to be quantized")]
    NonFiniteWeight {
        /// Flat index of the element.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// An operation needs quantization parameters that the module does not have.
    #[error("{0}")]
    NotQuantized(String),

    // ---- convolution configuration and shapes ------------------------------------------------
    /// A convolution hyper-parameter is invalid.
    #[error("invalid {param} = {value}: {rule}")]
    InvalidConfig {
        /// Name of the hyper-parameter (`"groups"`, `"stride"`, ...).
        param: &'static str,
        /// The value that was given, printed.
        value: String,
        /// The rule it breaks.
        rule: String,
    },
    /// A tensor's shape does not fit the operation.
    #[error("{what} has shape {shape:?}, but {rule}")]
    Shape {
        /// Which tensor (`"input"`, `"weight"`, `"bias"`, ...).
        what: &'static str,
        /// Its shape.
        shape: Vec<usize>,
        /// The rule it breaks.
        rule: String,
    },
    /// A tensor's dtype does not fit the operation.
    #[error("{what} has dtype {got}, but {rule}")]
    DType {
        /// Which tensor.
        what: &'static str,
        /// Its dtype.
        got: String,
        /// The rule it breaks.
        rule: String,
    },
    /// A requested transposed-convolution output size cannot be produced.
    #[error("requested an output size of {requested:?}, but valid sizes range from {min:?} to {max:?} (for an input of {input:?})")]
    OutputSize {
        /// The requested spatial size.
        requested: Vec<usize>,
        /// Smallest valid size per dimension.
        min: Vec<usize>,
        /// Largest valid size per dimension.
        max: Vec<usize>,
        /// The input's spatial size.
        input: Vec<usize>,
    },
    /// A size computation overflowed `usize`.
    #[error("size overflow: {0}")]
    Overflow(String),

    // ---- devices -------------------------------------------------------------------------------
    /// CUDA was asked for but cannot be used here.
    #[error("CUDA device {ordinal} is unavailable: {reason}")]
    CudaUnavailable {
        /// The requested ordinal.
        ordinal: usize,
        /// Why (driver library missing, no device, context creation failed, ...).
        reason: String,
    },
    /// A CUDA driver or NVRTC call failed.
    #[error("CUDA error in {call}: {message}")]
    Cuda {
        /// The call that failed.
        call: &'static str,
        /// The error code and text.
        message: String,
    },
    /// The operation is not available on this device.
    #[error("{op} is not supported on {device}: {reason}")]
    Unsupported {
        /// What was attempted.
        op: String,
        /// The device.
        device: String,
        /// Why not.
        reason: String,
    },
    /// A string could not be parsed (device names, dtypes, qschemes, padding modes, ...).
    #[error("cannot parse {what} from {value:?}: expected {expected}")]
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// The text given.
        value: String,
        /// What would have been accepted.
        expected: String,
    },

    // ---- state dicts and files -----------------------------------------------------------------
    /// Required state-dict keys are missing and/or unknown keys are present.
    #[error("state dict for prefix {prefix:?} does not match the module: missing keys {missing:?}, unexpected keys {unexpected:?}")]
    StateDictKeys {
        /// The module prefix.
        prefix: String,
        /// Keys the module needs that the file lacks.
        missing: Vec<String>,
        /// Keys under the prefix the module does not know.
        unexpected: Vec<String>,
    },
    /// A state-dict entry has a bad value.
    #[error("state dict entry {key:?}: {rule}")]
    StateDictValue {
        /// The full key.
        key: String,
        /// What is wrong with it.
        rule: String,
    },
    /// The safetensors container itself is malformed.
    #[error("malformed safetensors data: {0}")]
    SafeTensors(String),
    /// Reading or writing a file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// `"reading"`, `"writing"`, ...
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    // ---- CUDA kernel compilation (appended) ----------------------------------------------------
    /// NVRTC rejected a kernel source; `log` is the compiler's output.
    #[error("NVRTC could not compile {kernel} for {arch}:\n{log}")]
    KernelCompile {
        /// The kernel source file (e.g. `conv.cu`).
        kernel: String,
        /// The target architecture (e.g. `sm_90`).
        arch: String,
        /// The program log (compiler errors and warnings).
        log: String,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidConfig`].
    pub(crate) fn config(param: &'static str, value: impl std::fmt::Display, rule: impl Into<String>) -> Self {
        Error::InvalidConfig { param, value: value.to_string(), rule: rule.into() }
    }

    /// Shorthand for [`Error::Shape`].
    pub(crate) fn shape(what: &'static str, shape: &[usize], rule: impl Into<String>) -> Self {
        Error::Shape { what, shape: shape.to_vec(), rule: rule.into() }
    }
}

impl From<safetensors::SafeTensorError> for Error {
    fn from(e: safetensors::SafeTensorError) -> Self {
        Error::SafeTensors(e.to_string())
    }
}
