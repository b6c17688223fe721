//! The six reference modules, as one generic type: `ConvModule<D, TRANSPOSED>`.

use std::fmt;
use std::sync::Arc;

use crate::conv::codes::{self, PackedCodes};
use crate::conv::options::{ConvOptions, Padding, PaddingMode};
use crate::cpu::{self, PackedWeight};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::problem::ConvProblem;
use crate::quant::{self, Plan, QParamTensor, QScheme, QuantDType, QuantizedWeight, WeightQParams};
use cudarc::driver::{CudaSlice, CudaStream};

use crate::cuda::launch::{QcDequantLayout, WeightGeometry, QC_DQ_DEPTHWISE, QC_DQ_FORWARD, QC_DQ_TRANSPOSED};
use crate::cuda::runtime::{DeviceCodes, Runtime, TcWeight};
use crate::tensor::{checked_numel, CpuStorage, Device, Tensor};

/// A reference quantized convolution with `D` spatial dimensions; `TRANSPOSED` selects
/// `ConvTransposeNd`. Use the aliases [`Conv1d`] … [`ConvTranspose3d`].
///
/// The module keeps its float weight, bias and [`WeightQParams`] (what a PyTorch state dict holds)
/// and, derived from them once — at construction or when one of them changes, never in
/// [`forward`](ConvModule::forward) — the fake-quantized weight (`get_weight()`) and the weight
/// packed for the CPU kernels. [`to_device`](ConvModule::to_device) moves a module to a CUDA
/// device, where the fake-quantized weight and the bias stay resident and `forward` runs the
/// NVRTC-compiled kernels on device-resident inputs (see [`crate::cuda::runtime`]). Modules are
/// immutable during `forward`, `Send + Sync` (usable from many threads, each on its own stream
/// with `forward_on_stream`), and cheap to clone (the derived data is shared).
#[derive(Clone)]
pub struct ConvModule<const D: usize, const TRANSPOSED: bool> {
    in_channels: usize,
    out_channels: usize,
    options: ConvOptions<D>,
    weight: Tensor,
    bias: Option<Tensor>,
    qparams: WeightQParams,
    derived: Arc<Derived>,
    /// The device-resident weight and bias when the module is on a CUDA device.
    cuda: Option<Arc<CudaWeights>>,
    device: Device,
    precision: Precision,
    storage: WeightStorage,
}

/// How a CUDA forward pass multiplies (the CPU path is always [`Precision::Exact`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Tensor cores wherever the kernels apply, for f16 and bf16 activations: forward and
    /// transposed convolutions with `in_channels / groups` a multiple of 8, and forward ones with
    /// at least 16 output channels per group (the input's channels padded with zeros to a
    /// multiple of 8 first, e.g. a 3-channel stem; one channel per group uses an element-wise
    /// loader). Both operands in the activation dtype (the fake-quantized weight rounded to
    /// nearest even, as PyTorch's `module.half()` / `.bfloat16()` gives cuDNN), products
    /// accumulated in f32, bias added in f32, one rounding of the output. Other problems
    /// (depthwise, few output channels per group) and f32 activations run as `Exact`.
    #[default]
    TensorCore,
    /// The f32 fake-quantized weight and f32 fused multiply-adds for every activation dtype
    /// (f16/bf16 inputs widened exactly), one rounding of the output: the CPU path's numerics.
    Exact,
    /// Opt-in TF32 for f32 activations (PyTorch's `torch.backends.cudnn.allow_tf32 = True`):
    /// forward and transposed convolutions with `in_channels / groups` a multiple of 8, and
    /// forward ones with 2 to 7 (mod 8) input and at least 16 output channels per group (input
    /// channels padded to a multiple of 8), run on tensor cores with both operands rounded to TF32 (10 mantissa bits, to nearest with ties
    /// away from zero: the weight on the host, the activations in the kernel), products
    /// accumulated in f32, bias added in f32. Relative error grows to about 2⁻¹¹ per product.
    /// f16/bf16 activations run as [`TensorCore`](Precision::TensorCore); other problems and
    /// modules stored as 8-bit codes run f32 as `Exact`. The TF32 copy of the weight is built
    /// and uploaded on the first TF32 call (4 bytes per weight element, kept with the module).
    Tf32,
}

/// How a module keeps its weight in CUDA device memory (the CPU path always uses the host's
/// float32 `get_weight()`). Outputs do not depend on it: both forms hold the same values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WeightStorage {
    /// The fake-quantized weight in float32, plus the binary16 and bfloat16 copies the tensor-core
    /// kernels read (and a `[taps][C]` copy for depthwise modules): 4 to 8 bytes per weight
    /// element, nothing to convert per call.
    #[default]
    Float,
    /// The weight's 8-bit integer codes (`get_quantized_weight()`, packed for the kernels) and a
    /// float32 scale and zero point per output channel: about 1 byte per weight element, 4× less
    /// than float32. The tensor-core kernels dequantize the codes as they load them into shared
    /// memory, with a formula that reproduces `get_weight()` bit for bit (checked on the host for
    /// every element when the codes are built), so outputs are identical to `Float`'s. Every other
    /// CUDA kernel (exact precision, f32 activations, depthwise, transposed convolutions outside
    /// the tensor-core tiles) first expands the codes into a temporary float32 weight on the
    /// call's stream, freed when the call's work completes.
    ///
    /// Needs integer codes of at most 8 bits (qint8, quint8, quint4x2, or a decomposed range
    /// inside one of them), one scale per output channel (per tensor, or per channel along axis 0
    /// for convolutions and axis 1 for transposed convolutions), and scales and zero points that
    /// are float32 values; anything else is an [`Error::InvalidConfig`] on `weight_storage`.
    Int8Codes,
}

/// Memory layout of a forward pass's input and output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `[N, C, *spatial]` (PyTorch's default).
    ChannelsFirst,
    /// `[N, *spatial, C]` (PyTorch's `channels_last` memory format, as a plain shape).
    ChannelsLast,
}

/// A module's weight and bias in device memory (uploaded once by `to_device`, re-uploaded when
/// the weight, qparams or bias change).
struct CudaWeights {
    runtime: Arc<Runtime>,
    /// `get_weight()` in the module's weight layout, float32 (`WeightStorage::Float` only).
    weight: Option<CudaSlice<f32>>,
    bias: Option<CudaSlice<f32>>,
    /// For the tensor-core kernel: `get_weight()` packed `[K][row]` (tap-major, then channel, rows
    /// zero-padded to a multiple of 8) and rounded to binary16 / bfloat16 (bit patterns).
    tc_f16: Option<CudaSlice<u16>>,
    tc_bf16: Option<CudaSlice<u16>>,
    /// For the channels-last depthwise kernel (`groups == C == K`, a multiple of 8):
    /// `get_weight()` packed `[taps][C]`, float32 (unrounded: that kernel is exact).
    dw: Option<CudaSlice<f32>>,
    /// `WeightStorage::Int8Codes`: the codes, scales and zero points (then every other weight
    /// field is `None`).
    codes: Option<DeviceCodes>,
    /// `Precision::Tf32`: `get_weight()` packed like `tc_f16` as float32 rounded to TF32, built on
    /// the first TF32 call.
    tc_tf32: std::sync::Mutex<Option<Arc<CudaSlice<f32>>>>,
}

impl CudaWeights {
    /// Bytes of device memory holding the weight (not the bias).
    fn weight_bytes(&self) -> usize {
        let n = |len: Option<usize>, size: usize| len.unwrap_or(0) * size;
        n(self.weight.as_ref().map(|w| w.len()), 4)
            + n(self.tc_f16.as_ref().map(|w| w.len()), 2)
            + n(self.tc_bf16.as_ref().map(|w| w.len()), 2)
            + n(self.dw.as_ref().map(|w| w.len()), 4)
            + self.codes.as_ref().map_or(0, |c| c.codes.len() + 4 * (c.scale.len() + c.zero.len()))
            + self.tc_tf32.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, |w| 4 * w.len())
    }
}

/// A float32 weight a kernel reads: resident, or expanded from the codes for this call.
enum FloatWeight<'a> {
    Resident(&'a CudaSlice<f32>),
    Temporary(CudaSlice<f32>),
}

impl FloatWeight<'_> {
    fn get(&self) -> &CudaSlice<f32> {
        match self {
            FloatWeight::Resident(w) => w,
            FloatWeight::Temporary(w) => w,
        }
    }
}

/// What is computed from weight + qparams once per change.
struct Derived {
    weight_fq: Tensor,
    packed: PackedWeight,
    /// The device codes under `WeightStorage::Int8Codes`, built (and checked) with the rest.
    codes: Option<PackedCodes>,
}

/// `Conv1d` (`torch.ao.nn.quantized.reference.Conv1d`).
pub type Conv1d = ConvModule<1, false>;
/// `Conv2d` (`torch.ao.nn.quantized.reference.Conv2d`).
pub type Conv2d = ConvModule<2, false>;
/// `Conv3d` (`torch.ao.nn.quantized.reference.Conv3d`).
pub type Conv3d = ConvModule<3, false>;
/// `ConvTranspose1d` (`torch.ao.nn.quantized.reference.ConvTranspose1d`).
pub type ConvTranspose1d = ConvModule<1, true>;
/// `ConvTranspose2d` (`torch.ao.nn.quantized.reference.ConvTranspose2d`).
pub type ConvTranspose2d = ConvModule<2, true>;
/// `ConvTranspose3d` (`torch.ao.nn.quantized.reference.ConvTranspose3d`).
pub type ConvTranspose3d = ConvModule<3, true>;

fn pad3<const D: usize>(v: &[usize; D], fill: usize) -> [usize; 3] {
    let mut out = [fill; 3];
    out[3 - D..].copy_from_slice(v);
    out
}

impl<const D: usize, const TRANSPOSED: bool> ConvModule<D, TRANSPOSED> {
    /// The PyTorch class name, e.g. `"Conv2d"` or `"ConvTranspose3d"`.
    pub fn type_name() -> &'static str {
        match (D, TRANSPOSED) {
            (1, false) => "Conv1d",
            (2, false) => "Conv2d",
            (3, false) => "Conv3d",
            (1, true) => "ConvTranspose1d",
            (2, true) => "ConvTranspose2d",
            (3, true) => "ConvTranspose3d",
            _ => "ConvNd",
        }
    }

    /// Expected weight shape for the given channels and options.
    pub fn weight_shape(in_channels: usize, out_channels: usize, options: &ConvOptions<D>) -> Vec<usize> {
        let g = options.groups.max(1);
        let mut shape =
            if TRANSPOSED { vec![in_channels, out_channels / g] } else { vec![out_channels, in_channels / g] };
        shape.extend_from_slice(&options.kernel_size);
        shape
    }

    /// Builds a module from a float weight (PyTorch layout: `(out, in/groups, *k)`, transposed
    /// `(in, out/groups, *k)`), an optional bias `(out,)`, weight qparams and options — PyTorch's
    /// `from_float(float_conv, weight_qparams)`. Channel counts come from the weight's shape.
    ///
    /// `options.bias` is ignored: the module has a bias exactly when `bias` is `Some`.
    pub fn from_float(
        weight: Tensor,
        bias: Option<Tensor>,
        qparams: WeightQParams,
        mut options: ConvOptions<D>,
    ) -> Result<Self> {
        if weight.ndim() != D + 2 {
            return Err(Error::shape(
                "weight",
                weight.shape(),
                format!("a {} weight must have {} dimensions", Self::type_name(), D + 2),
            ));
        }
        if options.groups == 0 {
            return Err(Error::config("groups", 0, "groups must be a positive integer"));
        }
        let s = weight.shape();
        let (in_channels, out_channels) = if TRANSPOSED {
            (s[0], s[1].checked_mul(options.groups).ok_or_else(|| Error::Overflow("out_channels".into()))?)
        } else {
            (s[1].checked_mul(options.groups).ok_or_else(|| Error::Overflow("in_channels".into()))?, s[0])
        };
        options.bias = bias.is_some();
        Self::new(in_channels, out_channels, options, weight, bias, qparams)
    }

    /// Builds a module from a float weight and bias with qparams from PyTorch's default x86 weight
    /// observer: per-channel symmetric qint8 along axis 0 for convolutions, per-tensor symmetric
    /// qint8 for transposed convolutions (PyTorch rejects per-channel observers for those).
    pub fn from_float_observed(weight: Tensor, bias: Option<Tensor>, options: ConvOptions<D>) -> Result<Self> {
        let qparams = if TRANSPOSED {
            WeightQParams::per_tensor_symmetric_from_weight(&weight, QuantDType::QInt8)?
        } else {
            WeightQParams::per_channel_symmetric_from_weight(&weight, 0, QuantDType::QInt8)?
        };
        Self::from_float(weight, bias, qparams, options)
    }

    /// Builds a module with explicit channel counts (checked against the weight's shape).
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        options: ConvOptions<D>,
        weight: Tensor,
        bias: Option<Tensor>,
        qparams: WeightQParams,
    ) -> Result<Self> {
        options.validate(in_channels, out_channels, TRANSPOSED)?;
        let expected = Self::weight_shape(in_channels, out_channels, &options);
        if weight.shape() != expected.as_slice() {
            return Err(Error::shape(
                "weight",
                weight.shape(),
                format!(
                    "{} with in_channels={in_channels}, out_channels={out_channels}, groups={} needs weight shape {expected:?}",
                    Self::type_name(),
                    options.groups
                ),
            ));
        }
        if weight.dtype() != DType::F32 {
            return Err(Error::DType {
                what: "weight",
                got: weight.dtype().to_string(),
                rule: "module weights are float32 (quantization only works on float32 weights)".into(),
            });
        }
        if options.bias != bias.is_some() {
            return Err(Error::config(
                "bias",
                options.bias,
                if options.bias {
                    "options.bias is true but no bias tensor was given"
                } else {
                    "options.bias is false but a bias tensor was given"
                },
            ));
        }
        if let Some(b) = &bias {
            Self::check_bias(b, out_channels)?;
        }
        let derived =
            Arc::new(Self::derive(in_channels, out_channels, &options, &weight, &qparams, WeightStorage::Float)?);
        Ok(ConvModule {
            in_channels,
            out_channels,
            options,
            weight,
            bias,
            qparams,
            derived,
            cuda: None,
            device: Device::Cpu,
            precision: Precision::default(),
            storage: WeightStorage::default(),
        })
    }

    fn check_bias(b: &Tensor, out_channels: usize) -> Result<()> {
        if b.shape() != [out_channels] {
            return Err(Error::shape("bias", b.shape(), format!("it must have shape [{out_channels}] (out_channels)")));
        }
        if b.dtype() != DType::F32 {
            return Err(Error::DType {
                what: "bias",
                got: b.dtype().to_string(),
                rule: "the bias must be float32".into(),
            });
        }
        Ok(())
    }

    fn derive(
        in_channels: usize,
        out_channels: usize,
        options: &ConvOptions<D>,
        weight: &Tensor,
        qparams: &WeightQParams,
        storage: WeightStorage,
    ) -> Result<Derived> {
        let plan: Plan = qparams.plan(weight.shape())?;
        let w = weight.as_slice::<f32>()?;
        let fq = quant::fake_quantize_planned(&plan, weight.shape(), w)?;
        let packed = PackedWeight::new(
            TRANSPOSED,
            in_channels,
            out_channels,
            options.groups,
            pad3(&options.kernel_size, 1),
            &fq,
        )?;
        let codes = match storage {
            WeightStorage::Float => None,
            WeightStorage::Int8Codes => Some(codes::pack_codes(
                TRANSPOSED,
                Self::weight_geometry(in_channels, out_channels, options),
                w,
                weight.shape(),
                qparams,
                &fq,
            )?),
        };
        Ok(Derived { weight_fq: Tensor::from_vec(fq, weight.shape())?, packed, codes })
    }

    fn rederive(&mut self) -> Result<()> {
        let derived = Arc::new(Self::derive(
            self.in_channels,
            self.out_channels,
            &self.options,
            &self.weight,
            &self.qparams,
            self.storage,
        )?);
        let cuda = match self.device {
            Device::Cuda(n) => {
                Some(Arc::new(Self::upload(n, &derived, self.bias.as_ref(), self.tc_dims(), self.dw_dims())?))
            }
            Device::Cpu => None,
        };
        self.derived = derived;
        self.cuda = cuda;
        Ok(())
    }

    /// The geometry of the packed tensor-core weight (and codes): `cg_pad` is `C/groups`, rounded
    /// up to 8 where the forward tensor-core path pads the input's channels (`tc_padded_cg`).
    fn weight_geometry(in_channels: usize, out_channels: usize, options: &ConvOptions<D>) -> WeightGeometry {
        let groups = options.groups.max(1);
        let (cg, kg) = (in_channels / groups, out_channels / groups);
        WeightGeometry {
            out_channels,
            cg,
            cg_pad: crate::cuda::launch::tc_padded_cg(TRANSPOSED, cg, kg).unwrap_or(cg),
            taps: options.kernel_size.iter().product(),
            groups,
        }
    }

    fn dims(&self) -> WeightGeometry {
        Self::weight_geometry(self.in_channels, self.out_channels, &self.options)
    }

    /// Channel slots per tap of the tensor-core weight (see [`Self::weight_geometry`]).
    fn tc_cg_pad(&self) -> usize {
        self.dims().cg_pad
    }

    /// The tensor-core weight geometry when the f16/bf16 tensor-core kernels can run this module
    /// (`C/groups` a multiple of 8, or forward with at least 16 output channels per group:
    /// padded to 8 channels, or the element-wise loader for one channel per group), else `None`.
    fn tc_dims(&self) -> Option<WeightGeometry> {
        let d = self.dims();
        let kg = d.out_channels / d.groups;
        (d.cg > 0 && kg > 0 && (d.cg.is_multiple_of(8) || (!TRANSPOSED && kg >= 16))).then_some(d)
    }

    /// `(C, taps)` when the channels-last depthwise kernel can run this module (forward,
    /// `groups == in_channels == out_channels`, a multiple of 8), else `None`.
    fn dw_dims(&self) -> Option<(usize, usize)> {
        let c = self.in_channels;
        (!TRANSPOSED && self.options.groups == c && self.out_channels == c && c > 0 && c.is_multiple_of(8))
            .then(|| (c, self.options.kernel_size.iter().product()))
    }

    /// Uploads the fake-quantized weight and the bias to device `ordinal` (enqueued on the
    /// device's default stream), plus the tensor-core copies of the weight when `tc` gives
    /// `(K, C/groups, taps, groups)` and the depthwise copy when `dw` gives `(C, taps)`.
    fn upload(
        ordinal: usize,
        derived: &Derived,
        bias: Option<&Tensor>,
        tc: Option<WeightGeometry>,
        dw: Option<(usize, usize)>,
    ) -> Result<CudaWeights> {
        let runtime = Runtime::get(ordinal)?;
        let bias = match bias {
            Some(b) => Some(runtime.htod(b.as_slice::<f32>()?, None)?),
            None => None,
        };
        if let Some(c) = &derived.codes {
            let codes = DeviceCodes {
                codes: runtime.htod(&c.codes, None)?,
                scale: runtime.htod(&c.scale, None)?,
                zero: runtime.htod(&c.zero, None)?,
                signed: c.signed,
                cg_valid: c.cg,
            };
            return Ok(CudaWeights {
                runtime,
                weight: None,
                bias,
                tc_f16: None,
                tc_bf16: None,
                dw: None,
                codes: Some(codes),
                tc_tf32: Default::default(),
            });
        }
        let fq = derived.weight_fq.as_slice::<f32>()?;
        let weight = Some(runtime.htod(fq, None)?);
        let (mut tc_f16, mut tc_bf16) = (None, None);
        if let Some(dims) = tc {
            // Rounded to nearest even.
            let h = dims.pack(TRANSPOSED, fq, |v| half::f16::from_f32(v).to_bits());
            let b = dims.pack(TRANSPOSED, fq, |v| half::bf16::from_f32(v).to_bits());
            tc_f16 = Some(runtime.htod(&h, None)?);
            tc_bf16 = Some(runtime.htod(&b, None)?);
        }
        let dw = match dw {
            Some((c, taps)) => {
                // [C, 1, taps] -> [taps, C].
                let mut packed = vec![0f32; c * taps];
                for ch in 0..c {
                    for t in 0..taps {
                        packed[t * c + ch] = fq[ch * taps + t];
                    }
                }
                Some(runtime.htod(&packed, None)?)
            }
            None => None,
        };
        Ok(CudaWeights { runtime, weight, bias, tc_f16, tc_bf16, dw, codes: None, tc_tf32: Default::default() })
    }

    /// The tensor-core weight geometry when the TF32 tiles can run this module (`C/groups` a
    /// multiple of 8, forward or transposed, or padded to one: they have no element-wise
    /// loader), else `None`.
    fn tf32_dims(&self) -> Option<WeightGeometry> {
        let d = self.dims();
        (d.cg > 0 && d.out_channels / d.groups > 0 && d.cg_pad.is_multiple_of(8)).then_some(d)
    }

    /// The TF32 weight of `cw`, built and uploaded (on `stream`) on first use.
    fn tf32_weight(&self, cw: &CudaWeights, stream: Option<&Arc<CudaStream>>) -> Result<Option<Arc<CudaSlice<f32>>>> {
        let Some(dims) = self.tf32_dims() else { return Ok(None) };
        let mut slot = cw.tc_tf32.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            let fq = self.derived.weight_fq.as_slice::<f32>()?;
            let packed = dims.pack(TRANSPOSED, fq, crate::cuda::runtime::tf32_round);
            *slot = Some(Arc::new(cw.runtime.htod(&packed, stream)?));
        }
        Ok(slot.clone())
    }

    /// How CUDA forward passes multiply (see [`Precision`]).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// This module with `precision` for its CUDA forward passes (the CPU path is always exact).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// How the weight is (or will be, after [`to_device`](Self::to_device)) held on a CUDA device.
    pub fn weight_storage(&self) -> WeightStorage {
        self.storage
    }

    /// This module with its device weight held as `storage` (see [`WeightStorage`]). On a CUDA
    /// module the weight is uploaded again in the new form; on a CPU module the choice applies
    /// at `to_device` (and is checked now). Errors, leaving `self` consumed but nothing on the
    /// device changed, when the weight's qparams cannot be stored as 8-bit codes exactly.
    pub fn with_weight_storage(mut self, storage: WeightStorage) -> Result<Self> {
        if storage == self.storage {
            return Ok(self);
        }
        let old = std::mem::replace(&mut self.storage, storage);
        if let Err(e) = self.rederive() {
            self.storage = old;
            return Err(e);
        }
        Ok(self)
    }

    /// Bytes of device memory the module's weight occupies (the bias excluded): 0 on the CPU.
    pub fn device_weight_bytes(&self) -> usize {
        self.cuda.as_ref().map_or(0, |c| c.weight_bytes())
    }

    // ---- accessors mirroring the PyTorch module ------------------------------------------------

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }
    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }
    /// All hyper-parameters.
    pub fn options(&self) -> &ConvOptions<D> {
        &self.options
    }
    /// Kernel size.
    pub fn kernel_size(&self) -> [usize; D] {
        self.options.kernel_size
    }
    /// Stride.
    pub fn stride(&self) -> [usize; D] {
        self.options.stride
    }
    /// Padding.
    pub fn padding(&self) -> Padding<D> {
        self.options.padding
    }
    /// Dilation.
    pub fn dilation(&self) -> [usize; D] {
        self.options.dilation
    }
    /// Output padding (transposed convolutions; zeros otherwise).
    pub fn output_padding(&self) -> [usize; D] {
        self.options.output_padding
    }
    /// Groups.
    pub fn groups(&self) -> usize {
        self.options.groups
    }
    /// Padding mode (honoured, unlike PyTorch's reference modules).
    pub fn padding_mode(&self) -> PaddingMode {
        self.options.padding_mode
    }
    /// The float weight (`module.weight`).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    /// The float bias (`module.bias`), never quantized.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
    /// All weight qparams.
    pub fn weight_qparams(&self) -> &WeightQParams {
        &self.qparams
    }
    /// `module.weight_qscheme`.
    pub fn weight_qscheme(&self) -> QScheme {
        self.qparams.qscheme
    }
    /// `module.weight_dtype`.
    pub fn weight_dtype(&self) -> QuantDType {
        self.qparams.dtype
    }
    /// `module.weight_scale`.
    pub fn weight_scale(&self) -> &QParamTensor {
        &self.qparams.scale
    }
    /// `module.weight_zero_point`.
    pub fn weight_zero_point(&self) -> &QParamTensor {
        &self.qparams.zero_point
    }
    /// `module.weight_axis`.
    pub fn weight_axis(&self) -> i64 {
        self.qparams.axis
    }
    /// `module.is_decomposed`.
    pub fn is_decomposed(&self) -> bool {
        self.qparams.is_decomposed
    }
    /// The device the module computes on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// `get_weight()`: the fake-quantized weight (float32), computed when the module was built.
    pub fn get_weight(&self) -> &Tensor {
        &self.derived.weight_fq
    }

    /// `get_quantized_weight()`: integer codes (or float16 values) and the qparams.
    pub fn get_quantized_weight(&self) -> Result<QuantizedWeight> {
        quant::quantize(&self.weight, &self.qparams)
    }

    /// Replaces the float weight (same shape) and recomputes the fake-quantized weight.
    pub fn set_weight(&mut self, weight: Tensor) -> Result<()> {
        if weight.shape() != self.weight.shape() || weight.dtype() != DType::F32 {
            return Err(Error::shape(
                "weight",
                weight.shape(),
                format!("the new weight must be float32 with shape {:?}", self.weight.shape()),
            ));
        }
        let old = std::mem::replace(&mut self.weight, weight);
        if let Err(e) = self.rederive() {
            self.weight = old;
            return Err(e);
        }
        Ok(())
    }

    /// Replaces the bias (`None` removes it).
    pub fn set_bias(&mut self, bias: Option<Tensor>) -> Result<()> {
        if let Some(b) = &bias {
            Self::check_bias(b, self.out_channels)?;
        }
        let cuda = match self.device {
            Device::Cuda(n) => {
                Some(Arc::new(Self::upload(n, &self.derived, bias.as_ref(), self.tc_dims(), self.dw_dims())?))
            }
            Device::Cpu => None,
        };
        self.options.bias = bias.is_some();
        self.bias = bias;
        self.cuda = cuda;
        Ok(())
    }

    /// Replaces the weight qparams and recomputes the fake-quantized weight. On error the module
    /// is unchanged.
    pub fn set_weight_qparams(&mut self, qparams: WeightQParams) -> Result<()> {
        let old = std::mem::replace(&mut self.qparams, qparams);
        if let Err(e) = self.rederive() {
            self.qparams = old;
            return Err(e);
        }
        Ok(())
    }

    /// Moves the module to `device` (returns a moved copy; `self` is unchanged).
    ///
    /// CPU always works. For `Device::Cuda(n)` the fake-quantized weight (`get_weight()`,
    /// computed once on the host) and the bias are uploaded and stay resident on the device; the
    /// weight is also fake-quantized there by the CUDA kernel as a self-check that both devices
    /// agree bit for bit. Fails with [`Error::CudaUnavailable`] (with the probe's reason) when the
    /// device is not usable, [`Error::Cuda`] on a driver failure.
    pub fn to_device(&self, device: Device) -> Result<Self> {
        let mut m = self.clone();
        m.device = device;
        m.cuda = match device {
            Device::Cpu => None,
            Device::Cuda(_) if self.device == device => self.cuda.clone(),
            Device::Cuda(n) => {
                let w = Self::upload(n, &self.derived, self.bias.as_ref(), self.tc_dims(), self.dw_dims())?;
                self.self_check(&w)?;
                Some(Arc::new(w))
            }
        };
        Ok(m)
    }

    /// Runs the CUDA fake-quant kernel on the float weight and compares it with the CPU result;
    /// with 8-bit code storage, also expands the uploaded codes on the device and compares.
    fn self_check(&self, w: &CudaWeights) -> Result<()> {
        let rt = &w.runtime;
        let src = rt.htod(self.weight.as_slice::<f32>()?, None)?;
        let mut dst = rt.zeros::<f32>(src.len(), None)?;
        rt.fake_quantize_device(&self.qparams, self.weight.shape(), &src, Some(&mut dst), None, None)?;
        let cpu = self.derived.weight_fq.as_slice::<f32>()?;
        let compare = |what: &'static str, gpu: Vec<f32>| -> Result<()> {
            if let Some(i) = (0..cpu.len()).find(|&i| gpu[i].to_bits() != cpu[i].to_bits()) {
                return Err(Error::Cuda {
                    call: what,
                    message: format!(
                        "the CUDA kernel gave {} for weight element {i} where the CPU path gives {} (a qconv bug: please report it)",
                        gpu[i], cpu[i]
                    ),
                });
            }
            Ok(())
        };
        compare("fake-quant self-check", rt.dtoh(&dst, None)?)?;
        if let Some(c) = &w.codes {
            let layout = if TRANSPOSED { QC_DQ_TRANSPOSED } else { QC_DQ_FORWARD };
            rt.dequant_codes_device(c, self.dims(), layout, &mut dst, None)?;
            compare("weight-code self-check", rt.dtoh(&dst, None)?)?;
        }
        Ok(())
    }

    /// The float32 weight for a kernel without a code loader: the resident one, or (8-bit code
    /// storage) the codes expanded on `stream` into a temporary buffer in `layout`.
    fn float_weight<'a>(
        &self,
        cw: &'a CudaWeights,
        layout: QcDequantLayout,
        stream: Option<&Arc<CudaStream>>,
    ) -> Result<FloatWeight<'a>> {
        let resident = if layout == QC_DQ_DEPTHWISE { cw.dw.as_ref() } else { cw.weight.as_ref() };
        if let Some(w) = resident {
            return Ok(FloatWeight::Resident(w));
        }
        let c = cw.codes.as_ref().ok_or_else(|| Error::Unsupported {
            op: "forward".into(),
            device: self.device.to_string(),
            reason: "the module has neither a float nor a code weight on the device (internal error)".into(),
        })?;
        let mut w = cw.runtime.alloc_uninit::<f32>(self.weight.numel(), stream)?;
        cw.runtime.dequant_codes_device(c, self.dims(), layout, &mut w, stream)?;
        Ok(FloatWeight::Temporary(w))
    }

    // ---- forward -------------------------------------------------------------------------------

    /// The convolution this module runs, normalised to three spatial dimensions.
    fn problem(&self, batch: usize, in_spatial: [usize; D], out_spatial: [usize; D]) -> ConvProblem {
        let (lo, _) = self.options.padding_amounts();
        ConvProblem {
            transposed: TRANSPOSED,
            batch,
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            groups: self.options.groups,
            in_size: pad3(&in_spatial, 1),
            out_size: pad3(&out_spatial, 1),
            kernel: pad3(&self.options.kernel_size, 1),
            stride: pad3(&self.options.stride, 1),
            pad: pad3(&lo, 0),
            dilation: pad3(&self.options.dilation, 1),
            pad_mode: if TRANSPOSED { PaddingMode::Zeros } else { self.options.padding_mode },
        }
    }

    /// The normalised 3-d [`ConvProblem`] this module runs for an input of shape `input_shape`
    /// (batched or unbatched), with the same validation as `forward`. `output_size` is only valid
    /// for transposed convolutions. Useful to drive [`crate::oracle::conv_naive`] or to size buffers.
    pub fn conv_problem(&self, input_shape: &[usize], output_size: Option<&[usize]>) -> Result<ConvProblem> {
        let (batched, batch, spatial) = self.input_geometry(input_shape)?;
        let out = if TRANSPOSED {
            self.options.transposed_output_size(&spatial, batched, output_size)?.0
        } else if output_size.is_some() {
            return Err(Error::config(
                "output_size",
                format!("{output_size:?}"),
                format!("output_size is only valid for transposed convolutions, not {}", Self::type_name()),
            ));
        } else {
            self.options.conv_output_size(&spatial)?
        };
        Ok(self.problem(batch, spatial, out))
    }

    /// Validates an input shape and returns (batched?, batch, spatial size).
    fn input_geometry(&self, shape: &[usize]) -> Result<(bool, usize, [usize; D])> {
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
        Ok((batched, batch, spatial))
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
    fn geometry(&self, shape: &[usize], layout: Layout) -> Result<(bool, usize, [usize; D])> {
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

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        x: &Tensor,
        out_spatial: [usize; D],
        batched: bool,
        batch: usize,
        in_spatial: [usize; D],
        stream: Option<&Arc<CudaStream>>,
        layout: Layout,
    ) -> Result<Tensor> {
        if layout == Layout::ChannelsLast && self.device == Device::Cpu && x.device() == Device::Cpu {
            // The CPU kernels are channels-first: permute in, run, permute out.
            let xc = permute_host(x, batched, false)?;
            let y = self.run(&xc, out_spatial, batched, batch, in_spatial, stream, Layout::ChannelsFirst)?;
            return permute_host(&y, batched, true);
        }
        if x.device() != self.device {
            return Err(Error::Unsupported {
                op: "forward".into(),
                device: x.device().to_string(),
                reason: format!("the module is on {} and the input on {}", self.device, x.device()),
            });
        }
        let problem = self.problem(batch, in_spatial, out_spatial);
        let mut out_shape = Vec::with_capacity(D + 2);
        if batched {
            out_shape.push(batch);
        }
        out_shape.push(self.out_channels);
        out_shape.extend_from_slice(&out_spatial);
        let out_len = checked_numel(&out_shape)?;
        if let Device::Cuda(n) = self.device {
            return self.run_cuda(n, x, &problem, out_shape, out_len, stream, layout, batched);
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
            Error::Overflow(format!("cannot allocate the output of shape {out_shape:?} ({out_len} elements)"))
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
                _ => cpu::conv(&problem, &self.derived.packed, bias, &x.to_vec_f32(), &mut y)?,
            }
        } else if let Some(b) = &self.bias {
            // Empty input (zero-size spatial extent with padding): the output is the bias.
            let b = b.as_slice::<f32>()?;
            let per = out_spatial.iter().product::<usize>();
            for (i, v) in y.iter_mut().enumerate() {
                *v = b[(i / per.max(1)) % self.out_channels];
            }
        }
        Tensor::from_vec(y, &out_shape)?.try_to_dtype(x.dtype())
    }

    /// The CUDA half of [`run`](Self::run): enqueues the convolution on `stream` (the device's
    /// default stream when `None`) and returns the output tensor on the device without waiting.
    /// `out_shape` is channels-first; a channels-last call returns `[N, *out, K]`.
    #[allow(clippy::too_many_arguments)]
    fn run_cuda(
        &self,
        ordinal: usize,
        x: &Tensor,
        problem: &ConvProblem,
        out_shape: Vec<usize>,
        out_len: usize,
        stream: Option<&Arc<CudaStream>>,
        layout: Layout,
        batched: bool,
    ) -> Result<Tensor> {
        let cw = self.cuda.as_ref().ok_or_else(|| Error::Unsupported {
            op: "forward".into(),
            device: self.device.to_string(),
            reason: "the module has no device-resident weight (internal error)".into(),
        })?;
        let xs = x.cuda_storage().ok_or_else(|| Error::Unsupported {
            op: "forward".into(),
            device: x.device().to_string(),
            reason: format!("the module is on {} and the input on {}", self.device, x.device()),
        })?;
        let dtype = xs.dtype;
        let rt = &cw.runtime;
        let last_shape = match layout {
            Layout::ChannelsFirst => out_shape.clone(),
            Layout::ChannelsLast => {
                let lead = usize::from(batched);
                let mut v = out_shape[..lead].to_vec();
                v.extend_from_slice(&out_shape[lead + 1..]);
                v.push(out_shape[lead]);
                v
            }
        };
        if out_len == 0 || problem.input_len() == 0 {
            // Nothing to convolve (empty batch or empty input extent): the output is the bias
            // (or zeros); built on the host and uploaded. With `out_len > 0` the spatial product
            // divides `out_len`, so it cannot overflow.
            let bias = self.bias.as_ref().map(|b| b.as_slice::<f32>()).transpose()?;
            let per = if out_len == 0 { 1 } else { problem.out_size.iter().product::<usize>().max(1) };
            let y: Vec<f32> = (0..out_len).map(|i| bias.map_or(0.0, |b| b[(i / per) % self.out_channels])).collect();
            let mut host = Tensor::from_vec(y, &out_shape)?;
            if layout == Layout::ChannelsLast {
                host = permute_host(&host, batched, true)?;
            }
            let host = host.try_to_dtype(dtype)?;
            let bytes = match host.host_storage() {
                Some(CpuStorage::F32(v)) => v.iter().flat_map(|e| e.to_ne_bytes()).collect::<Vec<u8>>(),
                Some(CpuStorage::F16(v)) => v.iter().flat_map(|e| e.to_bits().to_ne_bytes()).collect(),
                Some(CpuStorage::BF16(v)) => v.iter().flat_map(|e| e.to_bits().to_ne_bytes()).collect(),
                None => Vec::new(),
            };
            return Ok(Tensor::from_cuda(last_shape, dtype, ordinal, rt.htod(&bytes, stream)?));
        }
        let es = dtype.size_in_bytes();
        let bytes =
            out_len.checked_mul(es).ok_or_else(|| Error::Overflow(format!("the output of shape {out_shape:?}")))?;
        let in_bytes = xs.bytes.len();
        let in_sp: usize = problem.in_size.iter().product();
        let out_sp: usize = problem.out_size.iter().product();
        let (n, c, k) = (problem.batch, problem.in_channels, problem.out_channels);
        let tensor_cores = matches!(self.precision, Precision::TensorCore | Precision::Tf32);
        let tf32 = match (self.precision, dtype, &cw.codes) {
            (Precision::Tf32, DType::F32, None) => self.tf32_weight(cw, stream)?,
            _ => None,
        };
        let tc_weight = match (tensor_cores, dtype, &cw.codes) {
            (true, DType::F16 | DType::BF16, Some(c)) if self.tc_dims().is_some() => Some(TcWeight::Codes(c)),
            (true, DType::F16, None) => cw.tc_f16.as_ref().map(TcWeight::Half),
            (true, DType::BF16, None) => cw.tc_bf16.as_ref().map(TcWeight::Half),
            (true, DType::F32, None) => tf32.as_deref().map(TcWeight::Tf32),
            _ => None,
        };
        let bias = cw.bias.as_ref();
        // The depthwise kernel decodes its work items (outputs / 8) in 32 bits.
        let dw_items_ok = out_len / 8 <= i32::MAX as usize;
        if self.dw_dims().is_some() && dw_items_ok {
            // Depthwise: the channels-last kernel (exact, any dtype), with transposes around it
            // for channels-first tensors.
            let wd = self.float_weight(cw, QC_DQ_DEPTHWISE, stream)?;
            let wd = wd.get();
            let y = match layout {
                Layout::ChannelsLast => {
                    let mut y = rt.alloc_uninit::<u8>(bytes, stream)?;
                    rt.conv_device_dw_nhwc(problem, dtype, wd, bias, &xs.bytes, &mut y, stream)?;
                    y
                }
                Layout::ChannelsFirst => {
                    let mut xt = rt.alloc_uninit::<u8>(in_bytes, stream)?;
                    rt.transpose_device(&xs.bytes, &mut xt, es, n, c, in_sp, stream)?;
                    let mut yt = rt.alloc_uninit::<u8>(bytes, stream)?;
                    rt.conv_device_dw_nhwc(problem, dtype, wd, bias, &xt, &mut yt, stream)?;
                    let mut y = rt.alloc_uninit::<u8>(bytes, stream)?;
                    rt.transpose_device(&yt, &mut y, es, n, out_sp, k, stream)?;
                    y
                }
            };
            return Ok(Tensor::from_cuda(last_shape, dtype, ordinal, y));
        }
        let simt_layout = if TRANSPOSED { QC_DQ_TRANSPOSED } else { QC_DQ_FORWARD };
        let groups = self.options.groups.max(1);
        let (cg, cg_pad) = (c / groups, self.tc_cg_pad());
        if let (Some(w), true) = (tc_weight, cg_pad != cg) {
            // C/groups not a multiple of 8: copy the input channels-last with cg_pad channel
            // slots per group (zeros past cg), then the 16-byte tensor-core loader.
            let padded_bytes = [n, in_sp, groups, cg_pad, es]
                .iter()
                .try_fold(1usize, |a, &b| a.checked_mul(b))
                .ok_or_else(|| Error::Overflow(format!("the channel-padded input of {problem:?}")))?;
            let mut xp = rt.alloc_uninit::<u8>(padded_bytes, stream)?;
            let nhwc = layout == Layout::ChannelsLast;
            rt.pad_channels_device(&xs.bytes, &mut xp, es, n, in_sp, groups, cg, cg_pad, nhwc, stream)?;
            let padded = ConvProblem { in_channels: groups * cg_pad, ..problem.clone() };
            let mut y = rt.alloc_uninit::<u8>(bytes, stream)?;
            rt.conv_device_tc(&padded, dtype, w, bias, &xp, &mut y, nhwc, stream)?;
            return Ok(Tensor::from_cuda(last_shape, dtype, ordinal, y));
        }
        let y = match (tc_weight, layout) {
            (Some(w), Layout::ChannelsLast) => {
                let mut y = rt.alloc_uninit::<u8>(bytes, stream)?;
                rt.conv_device_tc(problem, dtype, w, bias, &xs.bytes, &mut y, true, stream)?;
                y
            }
            (Some(w), Layout::ChannelsFirst) => {
                let mut xt = rt.alloc_uninit::<u8>(in_bytes, stream)?;
                rt.transpose_device(&xs.bytes, &mut xt, es, n, c, in_sp, stream)?;
                let mut y = rt.alloc_uninit::<u8>(bytes, stream)?;
                rt.conv_device_tc(problem, dtype, w, bias, &xt, &mut y, false, stream)?;
                y
            }
            (None, Layout::ChannelsFirst) => {
                let w = self.float_weight(cw, simt_layout, stream)?;
                let mut y = rt.zeros::<u8>(bytes, stream)?;
                rt.conv_device(problem, dtype, w.get(), bias, &xs.bytes, &mut y, stream)?;
                y
            }
            (None, Layout::ChannelsLast) => {
                let w = self.float_weight(cw, simt_layout, stream)?;
                let mut xt = rt.alloc_uninit::<u8>(in_bytes, stream)?;
                rt.transpose_device(&xs.bytes, &mut xt, es, n, in_sp, c, stream)?;
                let mut yt = rt.zeros::<u8>(bytes, stream)?;
                rt.conv_device(problem, dtype, w.get(), bias, &xt, &mut yt, stream)?;
                let mut y = rt.alloc_uninit::<u8>(bytes, stream)?;
                rt.transpose_device(&yt, &mut y, es, n, k, out_sp, stream)?;
                y
            }
        };
        Ok(Tensor::from_cuda(last_shape, dtype, ordinal, y))
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
        let (batched, batch, spatial) = self.input_geometry(x.shape())?;
        let out = self.options.conv_output_size(&spatial)?;
        self.run(x, out, batched, batch, spatial, None, Layout::ChannelsFirst)
    }

    /// [`forward`](Self::forward) on a channels-last input, `[N, *spatial, C]` (or unbatched
    /// `[*spatial, C]`): the output is `[N, *out, K]`. On CUDA this is the tensor cores' native
    /// layout (no transposes); elsewhere the channels are moved around the same computation.
    pub fn forward_channels_last(&self, x: &Tensor) -> Result<Tensor> {
        let (batched, batch, spatial) = self.geometry(x.shape(), Layout::ChannelsLast)?;
        let out = self.options.conv_output_size(&spatial)?;
        self.run(x, out, batched, batch, spatial, None, Layout::ChannelsLast)
    }

    /// [`forward_channels_last`](Self::forward_channels_last) enqueued on the caller's CUDA
    /// `stream`; returns without waiting. Errors for a CPU module.
    pub fn forward_channels_last_on_stream(&self, x: &Tensor, stream: &Arc<CudaStream>) -> Result<Tensor> {
        let (batched, batch, spatial) = self.geometry(x.shape(), Layout::ChannelsLast)?;
        let out = self.options.conv_output_size(&spatial)?;
        self.run(x, out, batched, batch, spatial, Some(stream), Layout::ChannelsLast)
    }

    /// [`forward`](Self::forward) for a module and input on a CUDA device, enqueued on the
    /// caller's `stream` (of that device) instead of the device's default stream. Returns without
    /// waiting; the output tensor is ready once `stream` has reached this point (copying it to
    /// the host waits for that). Errors for a CPU module.
    pub fn forward_on_stream(&self, x: &Tensor, stream: &Arc<CudaStream>) -> Result<Tensor> {
        let (batched, batch, spatial) = self.input_geometry(x.shape())?;
        let out = self.options.conv_output_size(&spatial)?;
        self.run(x, out, batched, batch, spatial, Some(stream), Layout::ChannelsFirst)
    }

    /// Output spatial size for an input of spatial size `input`.
    pub fn output_size(&self, input: &[usize; D]) -> Result<[usize; D]> {
        self.options.conv_output_size(input)
    }
}

impl<const D: usize> ConvModule<D, true> {
    /// Transposed convolution with the module's `output_padding`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with_output_size(x, None)
    }

    /// Transposed convolution producing `output_size` (spatial, or with the leading batch/channel
    /// entries), which must lie within `[min, min + stride − 1]` per dimension; it overrides the
    /// module's `output_padding`, as in `torch.nn.ConvTransposeNd` (PyTorch's reference module
    /// crashes here; docs/numerics.md §6).
    pub fn forward_with_output_size(&self, x: &Tensor, output_size: Option<&[usize]>) -> Result<Tensor> {
        let (batched, batch, spatial) = self.input_geometry(x.shape())?;
        let (out, _) = self.options.transposed_output_size(&spatial, batched, output_size)?;
        self.run(x, out, batched, batch, spatial, None, Layout::ChannelsFirst)
    }

    /// [`forward_with_output_size`](Self::forward_with_output_size) on a channels-last input,
    /// `[N, *spatial, C]` (or unbatched `[*spatial, C]`), giving `[N, *out, K]`; `output_size`
    /// is spatial (or channels-first with its leading entries).
    pub fn forward_channels_last(&self, x: &Tensor, output_size: Option<&[usize]>) -> Result<Tensor> {
        let (batched, batch, spatial) = self.geometry(x.shape(), Layout::ChannelsLast)?;
        let (out, _) = self.options.transposed_output_size(&spatial, batched, output_size)?;
        self.run(x, out, batched, batch, spatial, None, Layout::ChannelsLast)
    }

    /// [`forward_with_output_size`](Self::forward_with_output_size) for a module and input on a
    /// CUDA device, enqueued on the caller's `stream` (of that device). Returns without waiting;
    /// the output is ready once `stream` has reached this point. Errors for a CPU module.
    pub fn forward_on_stream(
        &self,
        x: &Tensor,
        output_size: Option<&[usize]>,
        stream: &Arc<CudaStream>,
    ) -> Result<Tensor> {
        let (batched, batch, spatial) = self.input_geometry(x.shape())?;
        let (out, _) = self.options.transposed_output_size(&spatial, batched, output_size)?;
        self.run(x, out, batched, batch, spatial, Some(stream), Layout::ChannelsFirst)
    }

    /// Output spatial size for an input of spatial size `input` and an optional requested size.
    pub fn output_size(&self, input: &[usize; D], output_size: Option<&[usize]>) -> Result<[usize; D]> {
        Ok(self.options.transposed_output_size(input, true, output_size)?.0)
    }
}

fn tuple<const D: usize>(v: &[usize; D]) -> String {
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    if D == 1 {
        format!("({},)", items[0])
    } else {
        format!("({})", items.join(", "))
    }
}

impl<const D: usize, const TRANSPOSED: bool> fmt::Display for ConvModule<D, TRANSPOSED> {
    /// PyTorch's repr: `QuantizedConv2d(Reference)(4, 6, kernel_size=(3, 5), stride=(1, 1))`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        write!(
            f,
            "Quantized{}(Reference)({}, {}, kernel_size={}, stride={}",
            Self::type_name(),
            self.in_channels,
            self.out_channels,
            tuple(&o.kernel_size),
            tuple(&o.stride)
        )?;
        match o.padding {
            Padding::Explicit(p) if p.iter().any(|&x| x != 0) => write!(f, ", padding={}", tuple(&p))?,
            Padding::Same => write!(f, ", padding=same")?,
            Padding::Valid => write!(f, ", padding=valid")?,
            _ => {}
        }
        if o.dilation.iter().any(|&x| x != 1) {
            write!(f, ", dilation={}", tuple(&o.dilation))?;
        }
        if o.output_padding.iter().any(|&x| x != 0) {
            write!(f, ", output_padding={}", tuple(&o.output_padding))?;
        }
        if o.groups != 1 {
            write!(f, ", groups={}", o.groups)?;
        }
        if self.bias.is_none() {
            write!(f, ", bias=False")?;
        }
        if o.padding_mode != PaddingMode::Zeros {
            write!(f, ", padding_mode={}", o.padding_mode)?;
        }
        write!(f, ")")
    }
}

impl<const D: usize, const TRANSPOSED: bool> fmt::Debug for ConvModule<D, TRANSPOSED> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} [qscheme={}, dtype={}]", self.qparams.qscheme, self.qparams.dtype)
    }
}
