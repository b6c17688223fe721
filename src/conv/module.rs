//! The six reference modules, as one generic type: `ConvModule<D, TRANSPOSED>`: construction,
//! the data derived from weight and qparams, the accessors PyTorch's module has, and the moves
//! between devices. The forward passes are in `module/forward.rs`.

use std::fmt;
use std::sync::Arc;

use crate::conv::options::{pad3, ConvOptions, Padding, PaddingMode};
use crate::cpu::PackedWeight;
use crate::cuda::codes::{self, PackedCodes};
use crate::cuda::{DeviceWeights, WeightSpec};
pub use crate::cuda::{Precision, WeightStorage};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::quant::{self, Plan, QParamTensor, QScheme, QuantDType, QuantizedWeight, WeightQParams};
use crate::tensor::{Device, Tensor};

mod forward;

/// A reference quantized convolution with `D` spatial dimensions; `TRANSPOSED` selects
/// `ConvTransposeNd`. Use the aliases [`Conv1d`] … [`ConvTranspose3d`].
///
/// The module keeps its float weight, bias and [`WeightQParams`] (what a PyTorch state dict holds)
/// and, derived from them once — at construction or when one of them changes, never in
/// [`forward`](ConvModule::forward) — the fake-quantized weight (`get_weight()`) and the weight
/// packed for the CPU kernels. [`to_device`](ConvModule::to_device) moves a module to a CUDA
/// device, where the fake-quantized weight and the bias stay resident and `forward` runs the
/// NVRTC-compiled kernels on device-resident inputs (see [`crate::cuda`]). Modules are
/// immutable during `forward`, `Send + Sync` (usable from many threads, each on its own stream
/// with `forward_on_stream`), and cheap to clone (the derived data is shared).
#[derive(Clone)]
pub struct ConvModule<const D: usize, const TRANSPOSED: bool> {
    in_channels: usize,
    out_channels: usize,
    /// The kernel size (`options.kernel_size` always holds it too).
    kernel: [usize; D],
    options: ConvOptions<D>,
    weight: Tensor,
    bias: Option<Tensor>,
    qparams: WeightQParams,
    derived: Arc<Derived>,
    /// The device-resident weight and bias when the module is on a CUDA device.
    cuda: Option<Arc<DeviceWeights>>,
    device: Device,
    precision: Precision,
    storage: WeightStorage,
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

    /// Expected weight shape for the given channels and options (which must state the kernel
    /// size: [`Error::InvalidConfig`] otherwise): `(out, in/groups, *k)`, transposed
    /// `(in, out/groups, *k)`.
    pub fn weight_shape(in_channels: usize, out_channels: usize, options: &ConvOptions<D>) -> Result<Vec<usize>> {
        let g = options.groups.max(1);
        let mut shape =
            if TRANSPOSED { vec![in_channels, out_channels / g] } else { vec![out_channels, in_channels / g] };
        shape.extend_from_slice(&options.kernel()?);
        Ok(shape)
    }

    /// Builds a module from a float weight (PyTorch layout: `(out, in/groups, *k)`, transposed
    /// `(in, out/groups, *k)`), an optional bias `(out,)`, weight qparams and options — the one
    /// argument order of every constructor: `(weight, bias, qparams, options)`.
    ///
    /// Channel counts and the kernel size come from the weight's shape (and `options.groups`);
    /// a kernel size stated in `options` must agree ([`Error::Shape`] on the weight otherwise). The module has a bias exactly when `bias` is `Some`.
    pub fn new(weight: Tensor, bias: Option<Tensor>, qparams: WeightQParams, options: ConvOptions<D>) -> Result<Self> {
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
        let mut kernel = [0; D];
        kernel.copy_from_slice(&s[2..]);
        if let Some(k) = options.kernel_size.filter(|&k| k != kernel) {
            return Err(Error::shape(
                "weight",
                s,
                format!("its kernel size is {kernel:?}, but the options state kernel_size {k:?}"),
            ));
        }
        let options = ConvOptions { kernel_size: Some(kernel), ..options };
        Self::with_channels(in_channels, out_channels, options, weight, bias, qparams)
    }

    /// PyTorch's name for [`new`](Self::new) (`from_float(float_conv, weight_qparams)`), same
    /// arguments.
    pub fn from_float(
        weight: Tensor,
        bias: Option<Tensor>,
        qparams: WeightQParams,
        options: ConvOptions<D>,
    ) -> Result<Self> {
        Self::new(weight, bias, qparams, options)
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
        Self::new(weight, bias, qparams, options)
    }

    /// Builds a module whose channel counts are known (a state dict's `module` entry): checks the
    /// weight's shape against them.
    pub(crate) fn with_channels(
        in_channels: usize,
        out_channels: usize,
        options: ConvOptions<D>,
        weight: Tensor,
        bias: Option<Tensor>,
        qparams: WeightQParams,
    ) -> Result<Self> {
        options.validate(in_channels, out_channels, TRANSPOSED)?;
        let expected = Self::weight_shape(in_channels, out_channels, &options)?;
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
        if let Some(b) = &bias {
            Self::check_bias(b, out_channels)?;
        }
        let derived =
            Arc::new(Self::derive(in_channels, out_channels, &options, &weight, &qparams, WeightStorage::Float)?);
        Ok(ConvModule {
            in_channels,
            out_channels,
            kernel: options.kernel()?,
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
        let packed =
            PackedWeight::new(TRANSPOSED, in_channels, out_channels, options.groups, pad3(&options.kernel()?, 1), &fq)?;
        let codes = match storage {
            WeightStorage::Float => None,
            WeightStorage::Int8Codes => Some(codes::pack_codes(
                TRANSPOSED,
                Self::spec_of(in_channels, out_channels, options).geometry(),
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
            Device::Cuda(n) => Some(Arc::new(self.upload(n, &derived, self.bias.as_ref())?)),
            Device::Cpu => None,
        };
        self.derived = derived;
        self.cuda = cuda;
        Ok(())
    }

    /// The weight's shape in the CUDA backend's terms.
    fn spec_of(in_channels: usize, out_channels: usize, options: &ConvOptions<D>) -> WeightSpec {
        WeightSpec {
            transposed: TRANSPOSED,
            in_channels,
            out_channels,
            groups: options.groups.max(1),
            taps: options.kernel_size.unwrap_or([1; D]).iter().product(),
        }
    }

    /// Uploads the weight forms of `derived` and `bias` to device `ordinal` (see
    /// [`DeviceWeights::upload`]).
    fn upload(&self, ordinal: usize, derived: &Derived, bias: Option<&Tensor>) -> Result<DeviceWeights> {
        let spec = Self::spec_of(self.in_channels, self.out_channels, &self.options);
        DeviceWeights::upload(ordinal, spec, &derived.weight_fq, bias, derived.codes.as_ref())
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
        self.kernel
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
            Device::Cuda(n) => Some(Arc::new(self.upload(n, &self.derived, bias.as_ref())?)),
            Device::Cpu => None,
        };
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
                let w = self.upload(n, &self.derived, self.bias.as_ref())?;
                w.self_check(&self.weight, &self.qparams)?;
                Some(Arc::new(w))
            }
        };
        Ok(m)
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
            tuple(&self.kernel),
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
