//! The six lowered int8 modules, as one generic type `QuantizedConvModule<D, TRANSPOSED>`
//! (PyTorch's `torch.ao.nn.quantized.Conv*d` / `ConvTranspose*d` and the fused
//! `torch.ao.nn.intrinsic.quantized.ConvReLU*d`), and [`Int8Weight`], their qint8 weight.
//!
//! A module holds int8 weight codes with per-tensor or per-channel qparams, a float bias, the
//! output scale and zero point, optionally the input qparams it was exported with, and the weight
//! packed once for the CPU int8 engine ([`crate::cpu::int8`]). `forward` takes u8 activations
//! ([`QuantizedTensor`]) and returns u8 codes computed exactly as docs/numerics.md §14.5 says
//! (bit-exact with PyTorch's FBGEMM wherever FBGEMM is exact). The requantization table of an
//! input scale is built on the first call with that scale and cached. The modules compute on
//! the CPU only. Their state dicts are in `quantized_state.rs`.

use std::fmt;
use std::sync::{Arc, Mutex};

use crate::alloc::{try_collect, try_filled};
use crate::conv::module::ConvModule;
use crate::conv::options::{pad3, ConvOptions, Padding, PaddingMode};
use crate::cpu::int8::{conv_int8, ActivationLayout, PackedInt8Weight};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::problem::ConvProblem;
use crate::quant::{self, ActivationQParams, Plan, QScheme, QuantDType, QuantizedTensor, QuantizedValues};
use crate::quant::{RequantParams, RequantTable, WeightQParams, WeightScales};
use crate::tensor::{checked_numel, Tensor};

/// A qint8 weight: codes in PyTorch's layout with per-tensor or per-channel affine qparams
/// (PyTorch's quantized weight tensor, `torch.quantize_per_tensor/per_channel(w, …, torch.qint8)`).
#[derive(Clone, Debug, PartialEq)]
pub struct Int8Weight {
    codes: Vec<i8>,
    shape: Vec<usize>,
    qparams: WeightQParams,
    /// The scales (one per tensor, one per channel along the axis), as doubles.
    scales: Vec<f64>,
    /// The zero points, `-128..=127`, parallel to `scales`.
    zero_points: Vec<i32>,
}

/// Checks the rules PyTorch's quantized-convolution prepack puts on weight qparams and resolves
/// them: (scales, zero points).
fn lowered_plan(qparams: &WeightQParams, shape: &[usize]) -> Result<(Vec<f64>, Vec<i32>)> {
    let unsupported = |rule: &'static str| Error::UnsupportedQuantization {
        qscheme: qparams.qscheme.to_string(),
        dtype: qparams.dtype.to_string(),
        rule,
    };
    if qparams.dtype != QuantDType::QInt8 {
        return Err(unsupported("lowered convolutions take torch.qint8 weights (PyTorch: expected scalar type QInt8)"));
    }
    if !matches!(qparams.qscheme, QScheme::PerTensorAffine | QScheme::PerChannelAffine) {
        return Err(unsupported(
            "lowered convolutions take torch.per_tensor_affine or torch.per_channel_affine weights",
        ));
    }
    if qparams.is_decomposed {
        return Err(unsupported("lowered convolutions do not take decomposed qparams"));
    }
    if qparams.zero_point.is_float() {
        return Err(Error::QParamShape {
            param: "weight_zero_point",
            shape: qparams.zero_point.shape.clone(),
            rule: format!("a qint8 weight's zero points are integers, not {}", qparams.zero_point.dtype_name()),
        });
    }
    match qparams.plan(shape)? {
        Plan::Int { scales, zero_points, .. } => Ok((scales, zero_points.into_iter().map(|z| z as i32).collect())),
        _ => Err(unsupported("lowered convolutions take integer affine qparams")),
    }
}

impl Int8Weight {
    /// Wraps int8 codes of shape `shape` with their qparams (`torch.qint8`, per-tensor or
    /// per-channel affine, integer zero points in `-128..=127`, finite scales).
    ///
    /// Errors: [`Error::Shape`] when `codes.len()` is not the product of `shape`;
    /// [`Error::UnsupportedQuantization`] for another dtype or qscheme; the qparam errors of
    /// [`WeightQParams::validate`].
    pub fn new(codes: Vec<i8>, shape: &[usize], qparams: WeightQParams) -> Result<Int8Weight> {
        let n = checked_numel(shape)?;
        if codes.len() != n {
            return Err(Error::shape("weight", shape, format!("it holds {} codes, not {n}", codes.len())));
        }
        let (scales, zero_points) = lowered_plan(&qparams, shape)?;
        Ok(Int8Weight { codes, shape: shape.to_vec(), qparams, scales, zero_points })
    }

    /// Quantizes a float32 weight: `torch.quantize_per_tensor` / `torch.quantize_per_channel`
    /// with `qparams` and dtype `torch.qint8`, bit for bit (docs/numerics.md §4).
    ///
    /// Errors: those of [`Int8Weight::new`]; [`Error::NonFiniteWeight`] for a NaN or infinite
    /// element; [`Error::DType`] for a weight that is not float32.
    pub fn quantize(weight: &Tensor, qparams: &WeightQParams) -> Result<Int8Weight> {
        lowered_plan(qparams, weight.shape())?;
        let q = quant::quantize(weight, qparams)?;
        let QuantizedValues::Codes(c) = q.values else {
            return Err(Error::NotQuantized("a qint8 weight has integer codes".into()));
        };
        // qint8 codes lie in -128..=127 by construction.
        let codes = try_collect(c.iter().map(|&v| v.clamp(-128, 127) as i8), || format!("{} weight codes", c.len()))?;
        Int8Weight::new(codes, weight.shape(), qparams.clone())
    }

    /// The codes, row-major in PyTorch's layout.
    pub fn codes(&self) -> &[i8] {
        &self.codes
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The qparams.
    pub fn qparams(&self) -> &WeightQParams {
        &self.qparams
    }

    /// The scales as doubles: one per tensor, one per channel along the axis.
    pub fn scales(&self) -> &[f64] {
        &self.scales
    }

    /// The zero points, parallel to [`scales`](Self::scales).
    pub fn zero_points(&self) -> &[i32] {
        &self.zero_points
    }

    /// Whether the qparams are per channel.
    pub fn is_per_channel(&self) -> bool {
        self.qparams.qscheme == QScheme::PerChannelAffine
    }

    /// `.dequantize()`: `f32(scale) · f32(q − zero_point)` per element (float32, same shape).
    pub fn dequantize(&self) -> Result<Tensor> {
        let axis = self.is_per_channel().then_some(self.qparams.axis as usize);
        let inner: usize = axis.map_or(1, |a| self.shape[a + 1..].iter().product());
        let len = axis.map_or(1, |a| self.shape[a]);
        let v = try_collect(
            self.codes.iter().enumerate().map(|(i, &q)| {
                let c = if axis.is_some() { (i / inner.max(1)) % len.max(1) } else { 0 };
                self.scales[c] as f32 * (q as i32 - self.zero_points[c]) as f32
            }),
            || format!("{} dequantized weights", self.codes.len()),
        )?;
        Tensor::from_vec(v, &self.shape)
    }
}

/// A lowered int8 convolution with `D` spatial dimensions; `TRANSPOSED` selects
/// `ConvTransposeNd`. Use the aliases [`QuantizedConv1d`] … [`QuantizedConvTranspose3d`].
///
/// Immutable once built (the builders return new modules), `Send + Sync`, cheap to clone (the
/// packed weight and the cache of requantization tables are shared).
#[derive(Clone)]
pub struct QuantizedConvModule<const D: usize, const TRANSPOSED: bool> {
    in_channels: usize,
    out_channels: usize,
    kernel: [usize; D],
    options: ConvOptions<D>,
    weight: Int8Weight,
    bias: Option<Tensor>,
    output: ActivationQParams,
    input: Option<ActivationQParams>,
    relu: bool,
    packed: Arc<PackedInt8Weight>,
    /// Requantization tables by input scale (bits), most recent last.
    tables: Arc<Mutex<TableCache>>,
}

/// Requantization tables keyed by the bits of the input scale.
type TableCache = Vec<(u64, Arc<RequantTable>)>;

/// Most requantization tables a module keeps (one per input scale it meets).
const TABLE_CACHE: usize = 4;

/// `QuantizedConv1d` (`torch.ao.nn.quantized.Conv1d`; `ConvReLU1d` with ReLU).
pub type QuantizedConv1d = QuantizedConvModule<1, false>;
/// `QuantizedConv2d` (`torch.ao.nn.quantized.Conv2d`; `ConvReLU2d` with ReLU).
pub type QuantizedConv2d = QuantizedConvModule<2, false>;
/// `QuantizedConv3d` (`torch.ao.nn.quantized.Conv3d`; `ConvReLU3d` with ReLU).
pub type QuantizedConv3d = QuantizedConvModule<3, false>;
/// `QuantizedConvTranspose1d` (`torch.ao.nn.quantized.ConvTranspose1d`).
pub type QuantizedConvTranspose1d = QuantizedConvModule<1, true>;
/// `QuantizedConvTranspose2d` (`torch.ao.nn.quantized.ConvTranspose2d`).
pub type QuantizedConvTranspose2d = QuantizedConvModule<2, true>;
/// `QuantizedConvTranspose3d` (`torch.ao.nn.quantized.ConvTranspose3d`).
pub type QuantizedConvTranspose3d = QuantizedConvModule<3, true>;

impl<const D: usize, const TRANSPOSED: bool> QuantizedConvModule<D, TRANSPOSED> {
    /// The type name of the file format, e.g. `"QuantizedConv2d"` or `"QuantizedConvTranspose3d"`.
    pub fn type_name() -> &'static str {
        match (D, TRANSPOSED) {
            (1, false) => "QuantizedConv1d",
            (2, false) => "QuantizedConv2d",
            (3, false) => "QuantizedConv3d",
            (1, true) => "QuantizedConvTranspose1d",
            (2, true) => "QuantizedConvTranspose2d",
            (3, true) => "QuantizedConvTranspose3d",
            _ => "QuantizedConvNd",
        }
    }

    /// Builds a module from a qint8 weight (PyTorch layout: `(out, in/groups, *k)`, transposed
    /// `(in, out/groups, *k)`), an optional float32 bias `(out,)`, the output qparams and the
    /// options — `(weight, bias, qparams, options)` as every constructor. Channel counts and the
    /// kernel size come from the weight's shape (a kernel size stated in `options` must agree).
    ///
    /// Every rule PyTorch's quantized convolutions enforce is a typed error
    /// (docs/numerics.md §14.7): [`Error::InvalidConfig`] for bad options or `"same"`/`"valid"`
    /// padding; [`Error::Shape`] / [`Error::DType`] for the weight and bias; per-channel weights
    /// must use axis 0 (`out` scales), or axis 1 for transposed ones (`out/groups` scales, a
    /// qconv extension). Padding modes: all four for forward convolutions (reflect, replicate,
    /// circular as the reference modules), zeros for transposed ones.
    pub fn new(
        weight: Int8Weight,
        bias: Option<Tensor>,
        output_qparams: ActivationQParams,
        options: ConvOptions<D>,
    ) -> Result<Self> {
        let s = weight.shape();
        if s.len() != D + 2 {
            return Err(Error::shape(
                "weight",
                s,
                format!("a {} weight must have {} dimensions", Self::type_name(), D + 2),
            ));
        }
        if options.groups == 0 {
            return Err(Error::config("groups", 0, "groups must be a positive integer"));
        }
        let grown = |v: usize, what: &str| v.checked_mul(options.groups).ok_or_else(|| Error::Overflow(what.into()));
        let (in_channels, out_channels) =
            if TRANSPOSED { (s[0], grown(s[1], "out_channels")?) } else { (grown(s[1], "in_channels")?, s[0]) };
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
        Self::with_channels(in_channels, out_channels, options, weight, bias, output_qparams)
    }

    /// Quantizes a float32 weight with `weight_qparams` (qint8, see [`Int8Weight::quantize`]) and
    /// builds the module as [`new`](Self::new) does.
    pub fn from_float(
        weight: &Tensor,
        bias: Option<Tensor>,
        weight_qparams: &WeightQParams,
        options: ConvOptions<D>,
        output_qparams: ActivationQParams,
    ) -> Result<Self> {
        Self::new(Int8Weight::quantize(weight, weight_qparams)?, bias, output_qparams, options)
    }

    /// PyTorch's `from_reference(ref_module, output_scale, output_zero_point)`: the reference
    /// module's `get_quantized_weight()` (its qparams must be qint8 affine), its bias and
    /// options, and the activation qparams: `input` is stored (used by `qconv run` on float
    /// inputs), `output` are the module's output qparams.
    pub fn from_reference(
        reference: &ConvModule<D, TRANSPOSED>,
        input_qparams: Option<ActivationQParams>,
        output_qparams: ActivationQParams,
    ) -> Result<Self> {
        let m = Self::from_float(
            reference.weight(),
            reference.bias().cloned(),
            reference.weight_qparams(),
            *reference.options(),
            output_qparams,
        )?;
        Ok(m.with_input_qparams(input_qparams))
    }

    /// Builds a module whose channel counts are known (a state dict's `module` entry).
    pub(crate) fn with_channels(
        in_channels: usize,
        out_channels: usize,
        options: ConvOptions<D>,
        weight: Int8Weight,
        bias: Option<Tensor>,
        output: ActivationQParams,
    ) -> Result<Self> {
        options.validate(in_channels, out_channels, TRANSPOSED)?;
        if !matches!(options.padding, Padding::Explicit(_)) {
            return Err(Error::config(
                "padding",
                if options.padding == Padding::Same { "'same'" } else { "'valid'" },
                "lowered convolutions take integer padding (PyTorch's quantized convolutions refuse 'same' and 'valid')",
            ));
        }
        let expected = ConvModule::<D, TRANSPOSED>::weight_shape(in_channels, out_channels, &options)?;
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
        if weight.is_per_channel() {
            let want = if TRANSPOSED { 1 } else { 0 };
            if weight.qparams().axis != want {
                return Err(Error::config(
                    "weight_axis",
                    weight.qparams().axis,
                    format!(
                        "a per-channel {} weight is quantized along axis {want} ({} scales)",
                        Self::type_name(),
                        if TRANSPOSED { "out_channels / groups" } else { "out_channels" }
                    ),
                ));
            }
        }
        if let Some(b) = &bias {
            if b.shape() != [out_channels] {
                return Err(Error::shape(
                    "bias",
                    b.shape(),
                    format!("it must have shape [{out_channels}] (out_channels)"),
                ));
            }
            if b.dtype() != DType::F32 {
                return Err(Error::DType {
                    what: "bias",
                    got: b.dtype().to_string(),
                    rule: "the bias of a lowered convolution must be float32".into(),
                });
            }
            b.as_slice::<f32>()?; // host only
        }
        let packed = PackedInt8Weight::new(
            TRANSPOSED,
            in_channels,
            out_channels,
            options.groups,
            pad3(&options.kernel()?, 1),
            weight.codes(),
            weight.zero_points(),
        )?;
        Ok(QuantizedConvModule {
            in_channels,
            out_channels,
            kernel: options.kernel()?,
            options,
            weight,
            bias,
            output,
            input: None,
            relu: false,
            packed: Arc::new(packed),
            tables: Arc::default(),
        })
    }

    /// This module with a fused ReLU (`ConvReLU*d`: the codes' floor is the output zero point)
    /// or without. [`Error::InvalidConfig`] for ReLU on a transposed convolution (PyTorch has
    /// no fused `ConvTransposeReLU`).
    pub fn with_relu(mut self, relu: bool) -> Result<Self> {
        if relu && TRANSPOSED {
            return Err(Error::config("relu", relu, "transposed convolutions have no fused ReLU"));
        }
        if relu != self.relu {
            self.relu = relu;
            self.tables = Arc::default();
        }
        Ok(self)
    }

    /// This module with stored input qparams (the scale and zero point of the activations it
    /// receives in the exported model; `None` removes them). `forward` always uses the input
    /// tensor's own qparams; these serve to quantize float inputs (`qconv run`).
    pub fn with_input_qparams(mut self, input_qparams: Option<ActivationQParams>) -> Self {
        self.input = input_qparams;
        self
    }

    /// This module with other output qparams.
    pub fn with_output_qparams(mut self, output_qparams: ActivationQParams) -> Self {
        if output_qparams != self.output {
            self.output = output_qparams;
            self.tables = Arc::default();
        }
        self
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
    /// All hyper-parameters (the kernel size always set).
    pub fn options(&self) -> &ConvOptions<D> {
        &self.options
    }
    /// Kernel size.
    pub fn kernel_size(&self) -> [usize; D] {
        self.kernel
    }
    /// Groups.
    pub fn groups(&self) -> usize {
        self.options.groups
    }
    /// Padding mode.
    pub fn padding_mode(&self) -> PaddingMode {
        self.options.padding_mode
    }
    /// The qint8 weight (`module.weight()`).
    pub fn weight(&self) -> &Int8Weight {
        &self.weight
    }
    /// The float bias (`module.bias()`).
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
    /// The output scale (`module.scale`).
    pub fn scale(&self) -> f64 {
        self.output.scale()
    }
    /// The output zero point (`module.zero_point`).
    pub fn zero_point(&self) -> i32 {
        self.output.zero_point()
    }
    /// The output qparams.
    pub fn output_qparams(&self) -> ActivationQParams {
        self.output
    }
    /// The stored input qparams, if any.
    pub fn input_qparams(&self) -> Option<ActivationQParams> {
        self.input
    }
    /// Whether the ReLU is fused.
    pub fn relu(&self) -> bool {
        self.relu
    }

    /// The requantization table for activations of scale `input_scale` (cached per module).
    pub fn requant_table(&self, input_scale: f64) -> Result<Arc<RequantTable>> {
        let key = input_scale.to_bits();
        let mut cache = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, t)) = cache.iter().find(|(k, _)| *k == key) {
            return Ok(t.clone());
        }
        let bias = self.bias.as_ref().map(|b| b.as_slice::<f32>()).transpose()?;
        let params = RequantParams {
            input_scale,
            weight_scales: if self.weight.is_per_channel() {
                WeightScales::PerChannel(self.weight.scales())
            } else {
                WeightScales::PerTensor(self.weight.scales()[0])
            },
            output_scale: self.output.scale(),
            output_zero_point: self.output.zero_point(),
            bias,
            relu: self.relu,
        };
        let table = Arc::new(RequantTable::new(TRANSPOSED, self.out_channels, self.options.groups, &params)?);
        if cache.len() >= TABLE_CACHE {
            cache.remove(0);
        }
        cache.push((key, table.clone()));
        Ok(table)
    }

    /// The normalised 3-d [`ConvProblem`] this module runs for a channels-first input shape
    /// `[N, C, *spatial]`, with the checks of `forward`.
    pub fn conv_problem(&self, input_shape: &[usize]) -> Result<ConvProblem> {
        if input_shape.len() != D + 2 {
            return Err(Error::shape(
                "input",
                input_shape,
                format!("{} expects a batched {}-d input (N, C, *spatial)", Self::type_name(), D + 2),
            ));
        }
        if input_shape[1] != self.in_channels {
            return Err(Error::shape(
                "input",
                input_shape,
                format!(
                    "expected {} input channels (the module's in_channels), got {}",
                    self.in_channels, input_shape[1]
                ),
            ));
        }
        let mut spatial = [0; D];
        spatial.copy_from_slice(&input_shape[2..]);
        let out = if TRANSPOSED {
            self.options.transposed_output_size(&spatial, true, None)?.0
        } else {
            self.options.conv_output_size(&spatial)?
        };
        self.options.problem(
            TRANSPOSED,
            input_shape[0],
            (self.in_channels, self.out_channels),
            &self.kernel,
            &spatial,
            &out,
        )
    }

    /// Runs the module on u8 activations `[N, C, *spatial]` (batched, as PyTorch requires):
    /// `[N, out_channels, *out]` codes with the module's output qparams.
    pub fn forward(&self, x: &QuantizedTensor) -> Result<QuantizedTensor> {
        self.run(x, ActivationLayout::ChannelsFirst)
    }

    /// [`forward`](Self::forward) on channels-last activations `[N, *spatial, C]`, giving
    /// `[N, *out, out_channels]` (the same codes, PyTorch's `channels_last` memory format).
    pub fn forward_channels_last(&self, x: &QuantizedTensor) -> Result<QuantizedTensor> {
        self.run(x, ActivationLayout::ChannelsLast)
    }

    fn run(&self, x: &QuantizedTensor, layout: ActivationLayout) -> Result<QuantizedTensor> {
        let s = x.shape();
        let cf_shape: Vec<usize> = match layout {
            ActivationLayout::ChannelsLast if s.len() == D + 2 => [&[s[0], s[D + 1]], &s[1..D + 1]].concat(),
            _ => s.to_vec(),
        };
        let p = self.conv_problem(&cf_shape)?;
        let table = self.requant_table(x.scale())?;
        let mut y = try_filled(p.output_len(), 0u8, || format!("{} output codes", p.output_len()))?;
        if p.batch > 0 {
            conv_int8(&p, &self.packed, &table, x.zero_point(), x.codes(), layout, &mut y)?;
        }
        let out = &p.out_size[3 - D..];
        let shape: Vec<usize> = match layout {
            ActivationLayout::ChannelsFirst => [&[p.batch, p.out_channels], out].concat(),
            ActivationLayout::ChannelsLast => [&[p.batch], out, &[p.out_channels]].concat(),
        };
        QuantizedTensor::with_qparams(y, &shape, self.output)
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

impl<const D: usize, const TRANSPOSED: bool> fmt::Display for QuantizedConvModule<D, TRANSPOSED> {
    /// PyTorch's repr: `QuantizedConv2d(4, 6, kernel_size=(3, 3), stride=(1, 1), scale=0.1,
    /// zero_point=3, padding=(1, 1))`; `QuantizedConvReLU2d(…)` with a fused ReLU.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        let name = if self.relu { Self::type_name().replace("Conv", "ConvReLU") } else { Self::type_name().into() };
        write!(
            f,
            "{name}({}, {}, kernel_size={}, stride={}, scale={}, zero_point={}",
            self.in_channels,
            self.out_channels,
            tuple(&self.kernel),
            tuple(&o.stride),
            self.output.scale(),
            self.output.zero_point()
        )?;
        if let Padding::Explicit(p) = o.padding {
            if p.iter().any(|&x| x != 0) {
                write!(f, ", padding={}", tuple(&p))?;
            }
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

impl<const D: usize, const TRANSPOSED: bool> fmt::Debug for QuantizedConvModule<D, TRANSPOSED> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} [qscheme={}, dtype=torch.qint8]", self.weight.qparams().qscheme)
    }
}

#[cfg(test)]
#[path = "quantized_tests.rs"]
mod tests;
