//! The CUDA forward of a lowered int8 convolution ([`forward_int8`]): given the module's device
//! weights ([`DeviceInt8Weights`]), the call's problem, its requant table and input zero point, and
//! the u8 input codes, pick the kernel family, give it the input layout it reads, and enqueue
//! (never wait). The module layer calls this and nothing else of the int8 kernels, as it calls
//! `forward` for the float modules.
//!
//! The choice: the depthwise kernel (`cuda/int8_simt.cu`) when the weight was uploaded in its form
//! (one input channel per group, forward), else the int8 tensor-core tiles (`cuda/conv_imma.cu`).
//! Both read channels-last codes; a channels-first input, or one whose `C/groups` is not a multiple
//! of 16 (tiles), is first copied channels-last by `qc_pad_channels_u8` (extra channel slots hold
//! the input zero point). Both write the output directly in the input's layout. Every code equals
//! `conv_int8_naive` (src/oracle.rs) bit for bit.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};

use super::ops::check_len;
use super::ops::conv_imma::{Int8Epilogue, Int8Io};
use super::ops::int8_simt::PadU8Shape;
use super::pack_int8::imma_cg_pad;
use super::weights_int8::{same_weight_geometry, DeviceInt8Weights};
use crate::error::{Error, Result};
use crate::problem::ConvProblem;
use crate::quant::requant::RequantTable;

/// The layout of an int8 call's input and output codes (both the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Int8Layout {
    /// `[N, C, *spatial]` (PyTorch's logical layout).
    ChannelsFirst,
    /// `[N, *spatial, C]`.
    ChannelsLast,
}

/// Whether the CUDA int8 kernels run `problem` (the depthwise kernel's rule,
/// [`dw_can_run`](super::ops::int8_simt::dw_can_run), or the tiles',
/// [`can_run`](super::ops::conv_imma::can_run): at most 33,025 terms per exact accumulator). When
/// `false`, [`DeviceInt8Weights::upload`] returns [`Error::Unsupported`] and the CPU engine is the
/// place to run the convolution.
pub fn int8_can_run(problem: &ConvProblem) -> bool {
    super::ops::int8_simt::dw_can_run(problem) || super::ops::conv_imma::can_run(problem)
}

/// Enqueues the lowered int8 convolution `problem` of the u8 codes `x` (layout `layout`, on the
/// weights' device) on `stream` (the device's default stream when `None`) into `y` (same layout,
/// `N · K · out_spatial` codes): exact int32 accumulation of `(x − x_zero)(w − w_zero)` and the
/// requantization of `table` (docs/numerics.md §14.5; the table of the module's qparams and this
/// call's input scale, [`RequantTable::new`]). Returns without waiting.
///
/// Errors (before any launch): [`Error::InvalidConfig`] when `problem` does not have the weights'
/// geometry; [`Error::ZeroPointOutOfRange`] for `x_zero` outside `0..=255`; [`Error::Shape`] for a
/// table of another channel count or a buffer too short; [`Error::Unsupported`] for buffers on
/// another device; whatever the launches report.
#[allow(clippy::too_many_arguments)]
pub fn forward_int8(
    w: &DeviceInt8Weights,
    problem: &ConvProblem,
    table: &RequantTable,
    x_zero: i32,
    x: &CudaSlice<u8>,
    layout: Int8Layout,
    y: &mut CudaSlice<u8>,
    stream: Option<&Arc<CudaStream>>,
) -> Result<()> {
    if !same_weight_geometry(problem, w.geometry()) {
        return Err(Error::config(
            "problem",
            format!("{problem:?}"),
            format!("the int8 device weights were uploaded for {:?}", w.geometry()),
        ));
    }
    let epi = Int8Epilogue::new(table, x_zero)?;
    let rt = &w.runtime;
    let in_sp: usize = problem.in_size.iter().product();
    let out_sp: usize = problem.out_size.iter().product();
    let (n, c, k) = (problem.batch, problem.in_channels, problem.out_channels);
    check_len("int8 input", x.len(), &[n as u64, c as u64, in_sp as u64])?;
    check_len("int8 output", y.len(), &[n as u64, k as u64, out_sp as u64])?;
    let requant = w.requant_table(table, stream)?;
    let out_len = n * k * out_sp;
    if out_len == 0 {
        return Ok(());
    }
    if in_sp == 0 {
        // No input position: every accumulator is 0 (a transposed convolution of an empty input
        // still has output_padding positions). The codes are the table's, per channel.
        let code = |k: usize| table.requantize(0, k);
        let host: Vec<u8> = (0..out_len)
            .map(|i| code(if layout == Int8Layout::ChannelsLast { i % k } else { (i / out_sp) % k }))
            .collect();
        let d = rt.htod(&host, stream)?;
        return copy_into(rt, &d, y, stream);
    }
    let channels_last = layout == Int8Layout::ChannelsLast;
    let groups = problem.groups.max(1);
    let cg = c / groups;
    if let Some(wd) = w.dw.as_ref() {
        let io = |x: &CudaSlice<u8>, y: &mut CudaSlice<u8>| {
            rt.conv_device_dw_int8(problem, wd, epi, Int8Io { x, y, requant: &requant }, channels_last, stream)
        };
        if channels_last {
            return io(x, y);
        }
        let mut xt = rt.alloc_uninit::<u8>(n * in_sp * c, stream)?;
        let shape = PadU8Shape { batch: n, pixels: in_sp, groups, cg, cg_pad: cg, src_nhwc: false, fill: x_zero as u8 };
        rt.pad_channels_u8(x, &mut xt, shape, stream)?;
        return io(&xt, y);
    }
    let Some(tw) = w.imma_weights() else {
        return Err(Error::Unsupported {
            op: "the int8 forward".into(),
            device: format!("cuda:{}", rt.ordinal()),
            reason: "the device weights hold no kernel form".into(),
        });
    };
    let cg_pad = imma_cg_pad(cg);
    let run = |x: &CudaSlice<u8>, y: &mut CudaSlice<u8>| {
        rt.conv_device_imma(problem, tw, epi, Int8Io { x, y, requant: &requant }, channels_last, stream)
    };
    if channels_last && cg_pad == cg {
        return run(x, y);
    }
    let padded = [n, in_sp, groups, cg_pad]
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| Error::Overflow(format!("the channel-padded int8 input of {problem:?}")))?;
    let mut xp = rt.alloc_uninit::<u8>(padded, stream)?;
    let shape = PadU8Shape { batch: n, pixels: in_sp, groups, cg, cg_pad, src_nhwc: channels_last, fill: x_zero as u8 };
    rt.pad_channels_u8(x, &mut xp, shape, stream)?;
    run(&xp, y)
}

/// Copies `src` into the front of `dst` on `stream`.
fn copy_into(
    rt: &super::runtime::Runtime,
    src: &CudaSlice<u8>,
    dst: &mut CudaSlice<u8>,
    stream: Option<&Arc<CudaStream>>,
) -> Result<()> {
    let s = rt.pick(stream)?;
    let len = src.len().min(dst.len());
    let mut view = dst.slice_mut(0..len);
    s.memcpy_dtod(&src.slice(0..len), &mut view).map_err(super::runtime::driver_err("cuMemcpyDtoDAsync"))
}
