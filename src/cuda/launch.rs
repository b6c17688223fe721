//! The kernel-argument and launch-geometry helpers under their former path, `cuda::launch`.
//!
//! Not part of the documented API: the helpers now live with their kernel family in
//! [`crate::cuda::ops`] (and the weight geometry in [`crate::cuda::pack`]); this module only
//! re-exports them so that code written against the old path keeps compiling.

pub use super::ops::conv_tc::{
    choose_tc_splits, choose_tc_tile, padded_cg as tc_padded_cg, tc_conv_params, tc_resident_blocks, tc_supported,
};
pub use super::ops::depthwise::{dw_nhwc_items, dw_nhwc_params, dw_nhwc_supported};
pub use super::ops::fakequant::{
    dequant_launch, dequant_params, fakequant_args, fakequant_fast_ok, fakequant_launch, FakeQuantArgs,
    FAKEQUANT_CHUNK, FAKEQUANT_THREADS,
};
pub use super::ops::layout::{pad_channels_launch, pad_channels_params, transpose_launch, TRANSPOSE_BLOCK};
pub use super::ops::params::*;
pub use super::ops::simt::{choose_conv_algo, DIRECT_OUTPUTS_PER_THREAD, DIRECT_THREADS};
pub use super::ops::{conv_launch, LaunchDims, MAX_GRID_STRIDE_BLOCKS, MAX_GRID_X, MAX_GRID_YZ};
pub use super::pack::{tc_weight_row, WeightGeometry};
