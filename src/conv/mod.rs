//! Convolution options, shape rules, the six reference modules and their state dicts, and the six
//! lowered int8 modules (`quantized.rs`, `quantized_state.rs`).

mod module;
mod module_json;
mod options;
mod quantized;
mod quantized_state;
mod state;

pub use module::{
    Conv1d, Conv2d, Conv3d, ConvModule, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d, Precision, WeightStorage,
};
pub use options::{ConvOptions, Dims, Padding, PaddingMode};
pub use quantized::{
    Int8Weight, QuantizedConv1d, QuantizedConv2d, QuantizedConv3d, QuantizedConvModule, QuantizedConvTranspose1d,
    QuantizedConvTranspose2d, QuantizedConvTranspose3d,
};
pub use quantized_state::AnyQuantizedConv;
pub use state::{qparams_from_state_dict, AnyConv, LoadReport, ModuleConfig};
