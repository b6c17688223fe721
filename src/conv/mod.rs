//! Convolution options, shape rules, the six reference modules and their state dicts.

mod module;
mod module_json;
mod options;
mod state;

pub use module::{
    Conv1d, Conv2d, Conv3d, ConvModule, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d, Precision, WeightStorage,
};
pub use options::{ConvOptions, Dims, Padding, PaddingMode};
pub use state::{qparams_from_state_dict, AnyConv, LoadReport, ModuleConfig};
