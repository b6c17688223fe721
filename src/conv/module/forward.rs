//! The forward passes of [`ConvModule`]: the input's geometry (batched or not, channels-first or
//! channels-last), the normalised [`ConvProblem`], and the run on the module's device — the CPU
//! engine (`crate::cpu::conv`), or the CUDA backend's one forward (`crate::cuda::forward`) on the
//! module's device weights.

use std::sync::Arc;

use super::ConvModule;
use crate::cpu;
#[cfg(feature = "cuda")]
use crate::cuda::forward::{self, ForwardCall};
use crate::cuda::Stream;
use crate::error::{Error, Result};
use crate::problem::ConvProblem;
use crate::tensor::{checked_numel, CpuStorage, Device, Tensor};

/// Memory layout of a forward pass's input and output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `[N, C, *spatial]` (PyTorch's default).
    ChannelsFirst,
    /// `[N, *spatial, C]` (PyTorch's `channels_last` memory format, as a plain shape).
    ChannelsLast,
}

/// An input's geometry: batched or not, the batch size, the spatial size.
#[derive(Clone, Copy, Debug)]
struct InputShape<const D: usize> {
    batched: bool,
    batch: usize,
    spatial: [usize; D],
}

impl<const D: usize, const TRANSPOSED: bool> ConvModule<D, TRANSPOSED> {
    /// The convolution this module runs, normalised to three spatial dimensions.
    fn problem(&self, batch: usize, in_spatial: [usize; D], out_spatial: [usize; D]) -> Result<ConvProblem> {
        self.options.problem(
            TRANSPOSED,
            batch,
            (self.in_channels, self.out_channels),
            &self.kernel,
            &in_spatial,
            &out_spatial,
        )
    }

    /// The normalised 3-d [`ConvProblem`] this module runs for an input of shape `input_shape`
    /// (batched or unbatched), with the same validation as `forward`. `output_size` is only valid
    /// for transposed convolutions. Useful to drive [`crate::oracle::conv_naive`] or to size buffers.
    pub fn conv_problem(&self, input_shape: &[usize], output_size: Option<&[usize]>) -> Result<ConvProblem> {
        let InputShape { batched, batch, spatial } = self.input_geometry(input_shape)?;
        let out = if TRANSPOSED {
            self.options.transposed_output_size(&spatial, batched, output_size)?.0
        } else if let Some(size) = output_size {
            return Err(Error::config(
                "output_size",
                format!("{size:?}"),
                format!("output_size is only valid for transposed convolutions, not {}", Self::type_name()),
            ));
        } else {
            self.options.conv_output_size(&spatial)?
        };
        self.problem(batch, spatial, out)
    }

    /// Validates an input shape and returns (batched?, batch, spatial size).
    fn input_geometry(&self, shape: &[usize]) -> Result<InputShape<D>> {
        let batched = match shape.len() {
            n if n == D + 2 => true,
            n if n == D + 1 => false,
            _ => {
                return Err(Error::shape(
                    "input",
                    shape,
                    format!("{} expects a {}-d (batched) or {}-d (unbatched) input", Self::type_name(), D + 2, D + 1),
                ))
            }
        };
        let lead = if batched { 2 } else { 1 };
        let (batch, channels) = if batched { (shape[0], shape[1]) } else { (1, shape[0]) };
        if channels != self.in_channels {
            return Err(Error::shape(
                "input",
                shape,
                format!("expected {} input channels (the module's in_channels), got {channels}", self.in_channels),
            ));
        }
        let mut spatial = [0; D];
        spatial.copy_from_slice(&shape[lead..]);
        Ok(InputShape { batched, batch, spatial })
    }

    /// The channels-first shape of a channels-last input shape (`[N, *spatial, C]` →
    /// `[N, C, *spatial]`, unbatched `[*spatial, C]` → `[C, *spatial]`); other ranks unchanged
    /// (input_geometry rejects them).
    fn channels_first_shape(shape: &[usize]) -> Vec<usize> {
        let lead = match shape.len() {
            n if n == D + 2 => 1,
            n if n == D + 1 => 0,
            _ => return shape.to_vec(),
        };
        let mut cf = shape[..lead].to_vec();
        cf.push(shape[shape.len() - 1]);
        cf.extend_from_slice(&shape[lead..shape.len() - 1]);
        cf
    }

    /// [`input_geometry`](Self::input_geometry) for either layout.
    fn geometry(&self, shape: &[usize], layout: Layout) -> Result<InputShape<D>> {
        match layout {
            Layout::ChannelsFirst => self.input_geometry(shape),
            Layout::ChannelsLast => self.input_geometry(&Self::channels_first_shape(shape)).map_err(|e| match e {
                Error::Shape { what, rule, .. } => Error::Shape {
                    what,
                    shape: shape.to_vec(),
                    rule: format!("{rule} (channels-last input: [N, *spatial, C] or [*spatial, C])"),
                },
                e => e,
            }),
        }
    }

    fn run(
        &self,
        x: &Tensor,
        input: InputShape<D>,
        out_spatial: [usize; D],
        stream: Option<&Arc<Stream>>,
        layout: Layout,
    ) -> Result<Tensor> {
        let InputShape { batched, batch, spatial: in_spatial } = input;
        if layout == Layout::ChannelsLast && self.device == Device::Cpu && x.device() == Device::Cpu {
            // The CPU kernels are channels-first: permute in, run, permute out.
            let xc = permute_host(x, batched, false)?;
            let y = self.run(&xc, input, out_spatial, stream, Layout::ChannelsFirst)?;
            return permute_host(&y, batched, true);
        }
        if x.device() != self.device {
            return Err(Error::Unsupported {
                op: "forward".into(),
                device: x.device().to_string(),
                reason: format!("the module is on {} and the input on {}", self.device, x.device()),
            });
        }
        let problem = self.problem(batch, in_spatial, out_spatial)?;
        let mut out_shape = Vec::with_capacity(D + 2);
        if batched {
            out_shape.push(batch);
        }
        out_shape.push(self.out_channels);
        out_shape.extend_from_slice(&out_spatial);
        let out_len = checked_numel(&out_shape)?;
        #[cfg(feature = "cuda")]
        if let Device::Cuda(_) = self.device {
            let cw = self.cuda.as_ref().ok_or_else(|| Error::Unsupported {
                op: "forward".into(),
                device: self.device.to_string(),
                reason: "the module has no device-resident weight (internal error)".into(),
            })?;
            let call = ForwardCall {
                problem: &problem,
                precision: self.precision,
                channels_last: layout == Layout::ChannelsLast,
                batched,
                out_shape,
                out_len,
                stream,
            };
            return forward::forward(cw, x, call);
        }
        if stream.is_some() {
            return Err(Error::Unsupported {
                op: "forward on a CUDA stream".into(),
                device: self.device.to_string(),
                reason: "the module is on the CPU; move it with to_device(Device::Cuda(n)) first".into(),
            });
        }
        let mut y = Vec::new();
        y.try_reserve_exact(out_len).map_err(|_| {
            Error::oom::<f32>(format!("the output of shape {}", crate::error::Dims(&out_shape)), out_len)
        })?;
        y.resize(out_len, 0f32);
        if out_len == 0 {
            // Nothing to compute (empty batch or extent); the spatial product may not even fit.
        } else if problem.input_len() > 0 {
            let bias = match &self.bias {
                Some(b) => Some(b.as_slice::<f32>()?),
                None => None,
            };
            let host = x.host_storage().ok_or_else(|| Error::Unsupported {
                op: "forward".into(),
                device: x.device().to_string(),
                reason: "the input lives on a CUDA device and the module on the CPU".into(),
            })?;
            match host {
                CpuStorage::F32(v) => cpu::conv(&problem, &self.derived.packed, bias, v, &mut y)?,
                _ => cpu::conv(&problem, &self.derived.packed, bias, &x.to_vec_f32()?, &mut y)?,
            }
        } else if let Some(b) = &self.bias {
            // Empty input (zero-size spatial extent with padding): the output is the bias.
            let b = b.as_slice::<f32>()?;
            let per = out_spatial.iter().product::<usize>();
            for (i, v) in y.iter_mut().enumerate() {
                *v = b[(i / per.max(1)) % self.out_channels];
            }
        }
        Tensor::from_vec(y, &out_shape)?.to_dtype(x.dtype())
    }
}

/// Moves the channel dimension of a host tensor: `to_last` `[N, C, *s]` → `[N, *s, C]` (or
/// unbatched `[C, *s]` → `[*s, C]`), else the inverse. Exact for every dtype.
fn permute_host(x: &Tensor, batched: bool, to_last: bool) -> Result<Tensor> {
    let moved = |t: &Tensor| if to_last { t.to_channels_last() } else { t.to_channels_first() };
    if batched {
        return moved(x);
    }
    let mut one = vec![1];
    one.extend_from_slice(x.shape());
    let y = moved(&x.reshape(&one)?)?;
    y.reshape(&y.shape()[1..])
}

impl<const D: usize> ConvModule<D, false> {
    /// Forward convolution of a batched `(N, C, *spatial)` or unbatched `(C, *spatial)` input.
    ///
    /// f16/bf16 inputs are widened to f32, computed with f32 accumulation against the f32
    /// fake-quantized weight, and the output is rounded back to the input dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let input = self.input_geometry(x.shape())?;
        let out = self.options.conv_output_size(&input.spatial)?;
        self.run(x, input, out, None, Layout::ChannelsFirst)
    }

    /// [`forward`](Self::forward) on a channels-last input, `[N, *spatial, C]` (or unbatched
    /// `[*spatial, C]`): the output is `[N, *out, K]`. On CUDA this is the tensor cores' native
    /// layout (no transposes); elsewhere the channels are moved around the same computation.
    pub fn forward_channels_last(&self, x: &Tensor) -> Result<Tensor> {
        let input = self.geometry(x.shape(), Layout::ChannelsLast)?;
        let out = self.options.conv_output_size(&input.spatial)?;
        self.run(x, input, out, None, Layout::ChannelsLast)
    }

    #[cfg(feature = "cuda")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cuda")))]
    /// [`forward_channels_last`](Self::forward_channels_last) enqueued on the caller's CUDA
    /// `stream`; returns without waiting. Errors for a CPU module.
    pub fn forward_channels_last_on_stream(
        &self,
        x: &Tensor,
        stream: &Arc<cudarc::driver::CudaStream>,
    ) -> Result<Tensor> {
        let input = self.geometry(x.shape(), Layout::ChannelsLast)?;
        let out = self.options.conv_output_size(&input.spatial)?;
        self.run(x, input, out, Some(stream), Layout::ChannelsLast)
    }

    #[cfg(feature = "cuda")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cuda")))]
    /// [`forward`](Self::forward) for a module and input on a CUDA device, enqueued on the
    /// caller's `stream` (of that device) instead of the device's default stream. Returns without
    /// waiting; the output tensor is ready once `stream` has reached this point (copying it to
    /// the host waits for that). Errors for a CPU module.
    pub fn forward_on_stream(&self, x: &Tensor, stream: &Arc<cudarc::driver::CudaStream>) -> Result<Tensor> {
        let input = self.input_geometry(x.shape())?;
        let out = self.options.conv_output_size(&input.spatial)?;
        self.run(x, input, out, Some(stream), Layout::ChannelsFirst)
    }

    /// Output spatial size for an input of spatial size `input`.
    pub fn output_size(&self, input: &[usize; D]) -> Result<[usize; D]> {
        self.options.conv_output_size(input)
    }
}

impl<const D: usize> ConvModule<D, true> {
    /// Transposed convolution with the module's `output_padding`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.transposed(x, None, None, Layout::ChannelsFirst)
    }

    /// Transposed convolution producing `output_size` (spatial, or with the leading batch/channel
    /// entries), which must lie within `[min, min + stride − 1]` per dimension; it overrides the
    /// module's `output_padding`, as in `torch.nn.ConvTransposeNd` (PyTorch's reference module
    /// crashes here; docs/numerics.md §6).
    pub fn forward_with_output_size(&self, x: &Tensor, output_size: &[usize]) -> Result<Tensor> {
        self.transposed(x, Some(output_size), None, Layout::ChannelsFirst)
    }

    /// [`forward`](Self::forward) on a channels-last input, `[N, *spatial, C]` (or unbatched
    /// `[*spatial, C]`), giving `[N, *out, K]`.
    pub fn forward_channels_last(&self, x: &Tensor) -> Result<Tensor> {
        self.transposed(x, None, None, Layout::ChannelsLast)
    }

    /// [`forward_with_output_size`](Self::forward_with_output_size) on a channels-last input;
    /// `output_size` is spatial (or channels-first with its leading entries).
    pub fn forward_channels_last_with_output_size(&self, x: &Tensor, output_size: &[usize]) -> Result<Tensor> {
        self.transposed(x, Some(output_size), None, Layout::ChannelsLast)
    }

    /// [`forward`](Self::forward) for a module and input on a CUDA device, enqueued on the
    /// caller's `stream` (of that device). Returns without waiting; the output is ready once
    /// `stream` has reached this point. Errors for a CPU module.
    #[cfg(feature = "cuda")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cuda")))]
    pub fn forward_on_stream(&self, x: &Tensor, stream: &Arc<cudarc::driver::CudaStream>) -> Result<Tensor> {
        self.transposed(x, None, Some(stream), Layout::ChannelsFirst)
    }

    /// [`forward_with_output_size`](Self::forward_with_output_size) enqueued on the caller's
    /// CUDA `stream` (see [`forward_on_stream`](Self::forward_on_stream)).
    #[cfg(feature = "cuda")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cuda")))]
    pub fn forward_with_output_size_on_stream(
        &self,
        x: &Tensor,
        output_size: &[usize],
        stream: &Arc<cudarc::driver::CudaStream>,
    ) -> Result<Tensor> {
        self.transposed(x, Some(output_size), Some(stream), Layout::ChannelsFirst)
    }

    fn transposed(
        &self,
        x: &Tensor,
        output_size: Option<&[usize]>,
        stream: Option<&Arc<Stream>>,
        layout: Layout,
    ) -> Result<Tensor> {
        let input = self.geometry(x.shape(), layout)?;
        let (out, _) = self.options.transposed_output_size(&input.spatial, input.batched, output_size)?;
        self.run(x, input, out, stream, layout)
    }

    /// Output spatial size for an input of spatial size `input` and an optional requested size.
    pub fn output_size(&self, input: &[usize; D], output_size: Option<&[usize]>) -> Result<[usize; D]> {
        Ok(self.options.transposed_output_size(input, true, output_size)?.0)
    }
}
