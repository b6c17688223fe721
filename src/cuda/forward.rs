//! The one CUDA forward: given a module's device weights ([`DeviceWeights`]) and a problem, pick
//! the kernel family and the weight form, move the activations between layouts as that family
//! needs, and enqueue (never wait). The module layer (`conv/module.rs`) calls [`forward`] and
//! nothing else of the backend's kernels, the way it calls `cpu::conv` for the CPU.
//!
//! The choice, in order (each family's rule is its own `can_run`):
//! 1. depthwise (`groups == C == K`, a multiple of 8, within the kernel's 32-bit item bound):
//!    the channels-last depthwise kernel, any dtype, exact;
//! 2. tensor cores, under [`Precision::TensorCore`] (f16/bf16) or [`Precision::Tf32`] (f32),
//!    where the tiles run the weight: the 16-bit or TF32 copy, or the 8-bit codes; the input
//!    copied channels-last with padded channels first when `C/groups` is not a multiple of 8;
//!    under the opt-in [`Precision::TensorCoreSm90a`] on compute capability 9.0, Hopper's
//!    wgmma/TMA kernel first where [`conv_wg::can_run`] holds (16-bit weight, unpadded input);
//! 3. otherwise the SIMT kernels, exact, on the float32 weight (expanded from the codes for this
//!    call under 8-bit storage).
//!
//! Channels-first tensors are transposed on the device around the channels-last kernels and the
//! reverse, so both layouts give the same bits.

use std::sync::Arc;

use cudarc::driver::CudaStream;

use super::ops::conv_tc::TcWeight;
use super::ops::conv_wg;
use super::ops::depthwise;
use super::ops::layout::{PadChannelsShape, TransposeShape};
use super::ops::params::{ConvIo, QC_DQ_DEPTHWISE};
use super::runtime::Runtime;
use super::weights::DeviceWeights;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::problem::ConvProblem;
use crate::tensor::{host_bytes, Device, Tensor};

pub use super::modes::Precision;

/// One forward call, in backend terms.
pub(crate) struct ForwardCall<'a> {
    /// The convolution, normalised to three spatial dimensions.
    pub problem: &'a ConvProblem,
    /// How to multiply.
    pub precision: Precision,
    /// `x` and the output are channels-last (`[N, *spatial, C]`, or unbatched `[*spatial, C]`).
    pub channels_last: bool,
    /// The input has a batch dimension.
    pub batched: bool,
    /// The output's channels-first shape and its element count.
    pub out_shape: Vec<usize>,
    pub out_len: usize,
    /// The caller's stream (`None`: the device's default stream).
    pub stream: Option<&'a Arc<CudaStream>>,
}

/// Enqueues the convolution of `x` (on the weights' device) on the call's stream and returns the
/// output tensor on the device without waiting; `[N, *out, K]` for a channels-last call.
pub(crate) fn forward(w: &DeviceWeights, x: &Tensor, call: ForwardCall<'_>) -> Result<Tensor> {
    let ForwardCall { problem, precision, channels_last, batched, out_shape, out_len, stream } = call;
    let ordinal = w.runtime.ordinal();
    let xs = x.cuda_storage().ok_or_else(|| Error::Unsupported {
        op: "forward".into(),
        device: x.device().to_string(),
        reason: format!("the module is on {} and the input on {}", Device::Cuda(ordinal), x.device()),
    })?;
    let dtype = xs.dtype;
    let rt = &w.runtime;
    let last_shape = if channels_last {
        let lead = usize::from(batched);
        let mut v = out_shape[..lead].to_vec();
        v.extend_from_slice(&out_shape[lead + 1..]);
        v.push(out_shape[lead]);
        v
    } else {
        out_shape.clone()
    };
    if out_len == 0 || problem.input_len() == 0 {
        // Nothing to convolve (empty batch or empty input extent). With `out_len > 0` the
        // spatial product divides `out_len`, so it cannot overflow.
        return empty_output(w, &last_shape, out_len, problem, channels_last, dtype, stream);
    }
    let es = dtype.size_in_bytes();
    let bytes = out_len.checked_mul(es).ok_or_else(|| Error::Overflow(format!("the output of shape {out_shape:?}")))?;
    let in_bytes = xs.bytes.len();
    let in_sp: usize = problem.in_size.iter().product();
    let out_sp: usize = problem.out_size.iter().product();
    let (n, c, k) = (problem.batch, problem.in_channels, problem.out_channels);
    let tensor_cores = matches!(precision, Precision::TensorCore | Precision::Tf32 | Precision::TensorCoreSm90a);
    let tf32 = match (precision, dtype, &w.codes) {
        (Precision::Tf32, DType::F32, None) => w.tf32_weight(stream)?,
        _ => None,
    };
    let tc_weight = match (tensor_cores, dtype, &w.codes) {
        (true, DType::F16 | DType::BF16, Some(c)) if w.spec.tensor_cores(dtype) => Some(TcWeight::Codes(c)),
        (true, DType::F16, None) => w.tc_f16.as_ref().map(TcWeight::Half),
        (true, DType::BF16, None) => w.tc_bf16.as_ref().map(TcWeight::Half),
        (true, DType::F32, None) => tf32.as_deref().map(TcWeight::Tf32),
        _ => None,
    };
    let bias = w.bias.as_ref();
    let xb = &xs.bytes;
    if w.spec.depthwise() && depthwise::items_fit(out_len as u64 / 8) {
        // Depthwise: the channels-last kernel (exact, any dtype), with transposes around it for
        // channels-first tensors.
        let wd = w.float_weight(QC_DQ_DEPTHWISE, stream)?;
        let wd = wd.get();
        let y = if channels_last {
            let mut y = rt.alloc_uninit::<u8>(bytes, stream)?;
            rt.conv_device_dw_nhwc(problem, dtype, wd, ConvIo { x: xb, y: &mut y, bias }, stream)?;
            y
        } else {
            let mut xt = rt.alloc_uninit::<u8>(in_bytes, stream)?;
            rt.transpose_device(
                xb,
                &mut xt,
                TransposeShape { elem_bytes: es, batch: n, rows: c, cols: in_sp },
                stream,
            )?;
            let mut yt = rt.alloc_uninit::<u8>(bytes, stream)?;
            rt.conv_device_dw_nhwc(problem, dtype, wd, ConvIo { x: &xt, y: &mut yt, bias }, stream)?;
            let mut y = rt.alloc_uninit::<u8>(bytes, stream)?;
            rt.transpose_device(
                &yt,
                &mut y,
                TransposeShape { elem_bytes: es, batch: n, rows: out_sp, cols: k },
                stream,
            )?;
            y
        };
        return Ok(Tensor::from_cuda(last_shape, dtype, ordinal, y));
    }
    let g = w.spec.geometry();
    let (groups, cg, cg_pad) = (g.groups, g.cg, g.cg_pad);
    if let (Some(tw), true) = (tc_weight, cg_pad != cg) {
        // C/groups not a multiple of 8: copy the input channels-last with cg_pad channel slots
        // per group (zeros past cg), then the 16-byte tensor-core loader.
        let padded_bytes = [n, in_sp, groups, cg_pad, es]
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .ok_or_else(|| Error::Overflow(format!("the channel-padded input of {problem:?}")))?;
        let mut xp = rt.alloc_uninit::<u8>(padded_bytes, stream)?;
        let shape =
            PadChannelsShape { elem_bytes: es, batch: n, pixels: in_sp, groups, cg, cg_pad, src_nhwc: channels_last };
        rt.pad_channels_device(xb, &mut xp, shape, stream)?;
        let padded = ConvProblem { in_channels: groups * cg_pad, ..problem.clone() };
        let mut y = rt.alloc_uninit::<u8>(bytes, stream)?;
        rt.conv_device_tc(&padded, dtype, tw, ConvIo { x: &xp, y: &mut y, bias }, channels_last, stream)?;
        return Ok(Tensor::from_cuda(last_shape, dtype, ordinal, y));
    }
    if let (Some(TcWeight::Half(w16)), true) = (tc_weight, use_sm90a(rt, precision, problem, dtype)) {
        // Opt-in: Hopper's wgmma/TMA kernel (channels-last input; channels-first transposed first).
        let mut y = rt.alloc_uninit::<u8>(bytes, stream)?;
        if channels_last {
            rt.conv_device_wg(problem, dtype, w16, ConvIo { x: xb, y: &mut y, bias }, true, stream)?;
        } else {
            let mut xt = rt.alloc_uninit::<u8>(in_bytes, stream)?;
            let shape = TransposeShape { elem_bytes: es, batch: n, rows: c, cols: in_sp };
            rt.transpose_device(xb, &mut xt, shape, stream)?;
            rt.conv_device_wg(problem, dtype, w16, ConvIo { x: &xt, y: &mut y, bias }, false, stream)?;
        }
        return Ok(Tensor::from_cuda(last_shape, dtype, ordinal, y));
    }
    let simt_layout = w.spec.dequant_layout();
    let y = match (tc_weight, channels_last) {
        (Some(tw), true) => {
            let mut y = rt.alloc_uninit::<u8>(bytes, stream)?;
            rt.conv_device_tc(problem, dtype, tw, ConvIo { x: xb, y: &mut y, bias }, true, stream)?;
            y
        }
        (Some(tw), false) => {
            let mut xt = rt.alloc_uninit::<u8>(in_bytes, stream)?;
            rt.transpose_device(
                xb,
                &mut xt,
                TransposeShape { elem_bytes: es, batch: n, rows: c, cols: in_sp },
                stream,
            )?;
            let mut y = rt.alloc_uninit::<u8>(bytes, stream)?;
            rt.conv_device_tc(problem, dtype, tw, ConvIo { x: &xt, y: &mut y, bias }, false, stream)?;
            y
        }
        (None, false) => {
            let wf = w.float_weight(simt_layout, stream)?;
            let mut y = rt.zeros::<u8>(bytes, stream)?;
            rt.conv_device(problem, dtype, wf.get(), ConvIo { x: xb, y: &mut y, bias }, stream)?;
            y
        }
        (None, true) => {
            let wf = w.float_weight(simt_layout, stream)?;
            let mut xt = rt.alloc_uninit::<u8>(in_bytes, stream)?;
            rt.transpose_device(
                xb,
                &mut xt,
                TransposeShape { elem_bytes: es, batch: n, rows: in_sp, cols: c },
                stream,
            )?;
            let mut yt = rt.zeros::<u8>(bytes, stream)?;
            rt.conv_device(problem, dtype, wf.get(), ConvIo { x: &xt, y: &mut yt, bias }, stream)?;
            let mut y = rt.alloc_uninit::<u8>(bytes, stream)?;
            rt.transpose_device(
                &yt,
                &mut y,
                TransposeShape { elem_bytes: es, batch: n, rows: k, cols: out_sp },
                stream,
            )?;
            y
        }
    };
    Ok(Tensor::from_cuda(last_shape, dtype, ordinal, y))
}

/// Whether the call goes to Hopper's kernel: [`Precision::TensorCoreSm90a`] chosen, a device of
/// compute capability 9.0, and a problem the kernel takes ([`conv_wg::can_run`]; the caller
/// supplies the 16-bit packed weight, which holds for f16/bf16 under float storage).
fn use_sm90a(rt: &Runtime, precision: Precision, problem: &ConvProblem, dtype: DType) -> bool {
    precision == Precision::TensorCoreSm90a
        && rt.info().compute_capability == (9, 0)
        && conv_wg::can_run(problem, dtype)
}

/// The output of a call with nothing to convolve (empty batch or empty input extent): the bias
/// broadcast over the output (or zeros), in the call's layout and dtype, built on the host and
/// uploaded on `stream`.
fn empty_output(
    w: &DeviceWeights,
    last_shape: &[usize],
    out_len: usize,
    problem: &ConvProblem,
    channels_last: bool,
    dtype: DType,
    stream: Option<&Arc<CudaStream>>,
) -> Result<Tensor> {
    let bias = w.host_bias();
    let k = problem.out_channels;
    // Channels-first, the channel of element i is (i / spatial) % K; channels-last, i % K.
    let per = if out_len == 0 { 1 } else { problem.out_size.iter().product::<usize>().max(1) };
    let channel = |i: usize| if channels_last { i % k } else { (i / per) % k };
    let y: Vec<f32> = (0..out_len).map(|i| bias.map_or(0.0, |b| b[channel(i)])).collect();
    let host = Tensor::from_vec(y, last_shape)?.to_dtype(dtype)?;
    let bytes = host.host_storage().map(host_bytes).unwrap_or_default();
    Ok(Tensor::from_cuda(last_shape.to_vec(), dtype, w.runtime.ordinal(), w.runtime.htod(&bytes, stream)?))
}
