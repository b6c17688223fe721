//! State dicts with PyTorch's keys, and [`AnyConv`] for modules whose type is read from a file.
//!
//! Keys under a prefix `p` (docs/numerics.md §8, fixed per §12 items 3–5):
//! tensors `p.weight`, `p.bias` (when the module has one), `p.weight_scale`, `p.weight_zero_point`,
//! `p.weight_axis`; string metadata `p.weight_qscheme`, `p.weight_dtype`, `p.module` (the
//! hyper-parameters as JSON), and, when set, `p.is_decomposed`, `p.weight_quant_min`,
//! `p.weight_quant_max`. Unlike PyTorch, loading refreshes the axis from the stored value, reports
//! missing and unexpected keys, and persists `is_decomposed` and the quant range.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde_json::json;

use crate::alloc::try_to_vec;
use crate::conv::module::ConvModule;
pub use crate::conv::module_json::ModuleConfig;
use crate::conv::module_json::{module_type, padding_json, parse_config, parse_module_json};
use crate::error::{Cut, Error, Quoted, Result};
use crate::io::{ModelFile, StateDict, StoredData, StoredTensor};
use crate::quant::{QParamData, QParamTensor, QScheme, QuantDType, QuantizedWeight, WeightQParams};
use crate::tensor::{Device, Tensor};

const TENSOR_KEYS: [&str; 5] = ["weight", "bias", "weight_scale", "weight_zero_point", "weight_axis"];
const META_KEYS: [&str; 6] =
    ["weight_qscheme", "weight_dtype", "module", "is_decomposed", "weight_quant_min", "weight_quant_max"];

/// What [`ConvModule::load_state_dict`] found besides what it loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Keys directly under the prefix that the module does not use (tensors and metadata).
    pub unexpected: Vec<String>,
}

pub(super) fn missing(prefix: &str, keys: Vec<String>) -> Error {
    Error::StateDictKeys { prefix: prefix.to_string(), missing: keys, unexpected: vec![] }
}

/// `Ok` when the report lists no unexpected key.
pub(super) fn strict(prefix: &str, report: LoadReport) -> Result<()> {
    if report.unexpected.is_empty() {
        return Ok(());
    }
    Err(Error::StateDictKeys { prefix: prefix.to_string(), missing: vec![], unexpected: report.unexpected })
}

pub(super) fn bad(key: String, rule: impl Into<String>) -> Error {
    Error::StateDictValue { key, rule: rule.into() }
}

/// Keys of `sd` that sit directly under `prefix` (no further `.` after it) and are not ours.
fn unexpected_keys(sd: &StateDict, prefix: &str) -> Vec<String> {
    let direct = |k: &&String| k.strip_prefix(prefix).is_some_and(|rest| !rest.contains('.'));
    let mut out: Vec<String> = sd
        .tensors
        .keys()
        .filter(direct)
        .filter(|k| !TENSOR_KEYS.contains(&&k[prefix.len()..]))
        .chain(sd.metadata.keys().filter(direct).filter(|k| !META_KEYS.contains(&&k[prefix.len()..])))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    out.sort();
    out
}

/// A stored scale or zero point. Any shape and any of the four dtypes is read as is: whether it
/// fits the qscheme is decided by the same validation as for modules built in code, so every
/// module that can be built can be saved and reloaded.
pub(super) fn qparam_tensor(key: String, t: &StoredTensor) -> Result<QParamTensor> {
    let what = || format!("state dict entry {}", Quoted(&key));
    let data = match &t.data {
        StoredData::F32(v) => QParamData::F32(try_to_vec(v, what)?),
        StoredData::F64(v) => QParamData::F64(try_to_vec(v, what)?),
        StoredData::I32(v) => QParamData::I32(try_to_vec(v, what)?),
        StoredData::I64(v) => QParamData::I64(try_to_vec(v, what)?),
        other => {
            return Err(bad(
                key,
                format!("dtype {} is not allowed here (expected F32, F64, I32 or I64)", other.dtype_name()),
            ));
        }
    };
    Ok(QParamTensor { shape: t.shape.clone(), data })
}

fn stored_qparam(q: &QParamTensor) -> StoredTensor {
    let data = match &q.data {
        QParamData::F32(v) => StoredData::F32(v.clone()),
        QParamData::F64(v) => StoredData::F64(v.clone()),
        QParamData::I32(v) => StoredData::I32(v.clone()),
        QParamData::I64(v) => StoredData::I64(v.clone()),
    };
    StoredTensor { shape: q.shape.clone(), data }
}

/// A state dict that is read (tensors copied out) or consumed (tensors moved out, no copy).
enum Sd<'a> {
    Ref(&'a StateDict),
    Own(StateDict),
}

impl Sd<'_> {
    fn sd(&self) -> &StateDict {
        match self {
            Sd::Ref(sd) => sd,
            Sd::Own(sd) => sd,
        }
    }

    /// The F32 tensor under `key`, if any.
    fn float_tensor(&mut self, key: &str) -> Result<Option<Tensor>> {
        let wrong = |d: &StoredData| bad(key.to_string(), format!("expected an F32 tensor, found {}", d.dtype_name()));
        match self {
            Sd::Ref(sd) => match sd.tensors.get(key) {
                None => Ok(None),
                Some(StoredTensor { shape, data: StoredData::F32(v) }) => Tensor::from_slice(v, shape).map(Some),
                Some(t) => Err(wrong(&t.data)),
            },
            Sd::Own(sd) => match sd.tensors.get(key).map(|t| &t.data) {
                None => Ok(None),
                Some(StoredData::F32(_)) => {
                    let t = sd.tensors.remove(key).expect("present");
                    t.into_tensor(key).map(Some)
                }
                Some(d) => Err(wrong(d)),
            },
        }
    }
}

/// Reads the weight qparams stored under `prefix`.
pub fn qparams_from_state_dict(sd: &StateDict, prefix: &str) -> Result<WeightQParams> {
    let key = |k: &str| format!("{prefix}{k}");
    let meta = |k: &str| sd.metadata.get(&key(k));
    let mut absent = Vec::new();
    let qscheme = meta("weight_qscheme");
    let dtype = meta("weight_dtype");
    if qscheme.is_none() {
        absent.push(key("weight_qscheme"));
    }
    if dtype.is_none() {
        absent.push(key("weight_dtype"));
    }
    let (Some(qscheme), Some(dtype)) = (qscheme, dtype) else { return Err(missing(prefix, absent)) };
    let qscheme: QScheme = qscheme.parse().map_err(|e: Error| bad(key("weight_qscheme"), e.to_string()))?;
    let dtype: QuantDType = dtype.parse().map_err(|e: Error| bad(key("weight_dtype"), e.to_string()))?;
    let needs_qparams = qscheme != QScheme::None && dtype.is_integer();
    let scale = match sd.tensors.get(&key("weight_scale")) {
        Some(t) => Some(qparam_tensor(key("weight_scale"), t)?),
        None if needs_qparams => return Err(missing(prefix, vec![key("weight_scale")])),
        None => None,
    };
    let zero_point = match sd.tensors.get(&key("weight_zero_point")) {
        Some(t) => Some(qparam_tensor(key("weight_zero_point"), t)?),
        None if needs_qparams => return Err(missing(prefix, vec![key("weight_zero_point")])),
        None => None,
    };
    let axis = match sd.tensors.get(&key("weight_axis")) {
        Some(t) => {
            let v = match &t.data {
                StoredData::I32(v) if v.len() == 1 => v[0] as i64,
                StoredData::I64(v) if v.len() == 1 => v[0],
                other => {
                    return Err(bad(
                        key("weight_axis"),
                        format!("expected one I32 or I64 value, found {} {:?}", other.dtype_name(), t.shape),
                    ))
                }
            };
            Some(v)
        }
        None if needs_qparams && qscheme.is_per_channel() => return Err(missing(prefix, vec![key("weight_axis")])),
        None => None,
    };
    let parse_int = |k: &str| -> Result<Option<i64>> {
        meta(k)
            .map(|s| {
                s.trim().parse::<i64>().map_err(|_| bad(key(k), format!("{} is not a decimal integer", Quoted(s))))
            })
            .transpose()
    };
    // One bound without the other is left to the qparams' validation (which accepts it where
    // the bounds are unused, so that every module that can be built can be reloaded); its
    // error shows the missing bound as "unset".
    let (quant_min, quant_max) = (parse_int("weight_quant_min")?, parse_int("weight_quant_max")?);
    let is_decomposed = match meta("is_decomposed").map(|s| s.as_str()) {
        None | Some("false") | Some("False") => false,
        Some("true") | Some("True") => true,
        Some(s) => return Err(bad(key("is_decomposed"), format!("{} must be \"true\" or \"false\"", Quoted(s)))),
    };
    Ok(WeightQParams {
        qscheme,
        dtype,
        scale: scale.unwrap_or_else(|| QParamTensor::scalar_f32(1.0)),
        zero_point: zero_point.unwrap_or_else(|| QParamTensor::scalar_i64(0)),
        axis: axis.unwrap_or(0),
        quant_min,
        quant_max,
        is_decomposed,
    })
}

impl<const D: usize, const TRANSPOSED: bool> ConvModule<D, TRANSPOSED> {
    /// The `module` metadata JSON (the hyper-parameters).
    pub fn config_json(&self) -> String {
        let o = self.options();
        let mut v = json!({
            "type": Self::type_name(),
            "in_channels": self.in_channels(),
            "out_channels": self.out_channels(),
            "kernel_size": self.kernel_size().to_vec(),
            "stride": o.stride.to_vec(),
            "padding": padding_json(&o.padding),
            "dilation": o.dilation.to_vec(),
            "groups": o.groups,
            "bias": self.bias().is_some(),
            "padding_mode": o.padding_mode.as_str(),
        });
        if TRANSPOSED {
            v["output_padding"] = json!(o.output_padding.to_vec());
        }
        v.to_string()
    }

    /// The module's state dict under `prefix` (e.g. `"layer1.0.conv1."` or `""`).
    pub fn state_dict(&self, prefix: &str) -> StateDict {
        let mut sd = StateDict::new();
        self.write_state_dict(&mut sd, prefix);
        sd
    }

    /// Adds the module's entries under `prefix` to an existing state dict (many modules per file).
    pub fn write_state_dict(&self, sd: &mut StateDict, prefix: &str) {
        let k = |s: &str| format!("{prefix}{s}");
        sd.insert_tensor(k("weight"), self.weight());
        if let Some(b) = self.bias() {
            sd.insert_tensor(k("bias"), b);
        }
        let q = self.weight_qparams();
        sd.tensors.insert(k("weight_scale"), stored_qparam(&q.scale));
        sd.tensors.insert(k("weight_zero_point"), stored_qparam(&q.zero_point));
        let axis = i32::try_from(q.axis).map(|a| StoredData::I32(vec![a])).unwrap_or(StoredData::I64(vec![q.axis]));
        sd.tensors.insert(k("weight_axis"), StoredTensor { shape: vec![], data: axis });
        sd.metadata.insert(k("weight_qscheme"), q.qscheme.torch_name().into());
        sd.metadata.insert(k("weight_dtype"), q.dtype.torch_name().into());
        sd.metadata.insert(k("module"), self.config_json());
        sd.metadata.insert(k("is_decomposed"), q.is_decomposed.to_string());
        if let Some(v) = q.quant_min {
            sd.metadata.insert(k("weight_quant_min"), v.to_string());
        }
        if let Some(v) = q.quant_max {
            sd.metadata.insert(k("weight_quant_max"), v.to_string());
        }
    }

    /// Builds a module from the entries under `prefix`; any unexpected key directly under the
    /// prefix is an error (use [`ConvModule::from_state_dict_lenient`] to list them instead).
    pub fn from_state_dict(sd: &StateDict, prefix: &str) -> Result<Self> {
        let (m, report) = Self::from_state_dict_lenient(sd, prefix)?;
        strict(prefix, report).map(|()| m)
    }

    /// Like [`ConvModule::from_state_dict`], but returns unexpected keys in a report.
    pub fn from_state_dict_lenient(sd: &StateDict, prefix: &str) -> Result<(Self, LoadReport)> {
        Self::build(Sd::Ref(sd), prefix)
    }

    /// Like [`ConvModule::from_state_dict`], consuming `sd`: the weight and bias move into the
    /// module instead of being copied.
    pub fn from_state_dict_owned(sd: StateDict, prefix: &str) -> Result<Self> {
        let (m, report) = Self::build(Sd::Own(sd), prefix)?;
        strict(prefix, report).map(|()| m)
    }

    /// Builds the module stored under `prefix` in a safetensors file, reading only that module's
    /// tensors (the other tensors' bytes are never read). Unexpected keys directly under the
    /// prefix are an error.
    pub fn from_file(path: impl AsRef<Path>, prefix: &str) -> Result<Self> {
        Self::from_state_dict_owned(ModelFile::open(path)?.load_module(prefix)?, prefix)
    }

    fn build(mut sd: Sd<'_>, prefix: &str) -> Result<(Self, LoadReport)> {
        let key = format!("{prefix}module");
        let json = sd.sd().metadata.get(&key).ok_or_else(|| missing(prefix, vec![key.clone()]))?;
        let v = parse_module_json(&key, json)?;
        // The type first: a Conv2d entry read as a Conv1d is "holds a Conv2d", not a complaint
        // about the length of its kernel_size.
        let ty = module_type(&key, &v)?;
        if ty != Self::type_name() {
            return Err(bad(key, format!("holds a {}, not a {}", Cut(&ty), Self::type_name())));
        }
        let cfg = parse_config::<D>(&key, &v, TRANSPOSED)?;
        let qparams = qparams_from_state_dict(sd.sd(), prefix)?;
        let report = LoadReport { unexpected: unexpected_keys(sd.sd(), prefix) };
        let (weight, bias) = Self::weight_bias(&mut sd, prefix, cfg.bias)?;
        drop(sd);
        let m = Self::with_channels(cfg.in_channels, cfg.out_channels, cfg.options, weight, bias, qparams)?;
        Ok((m, report))
    }

    fn weight_bias(sd: &mut Sd<'_>, prefix: &str, has_bias: bool) -> Result<(Tensor, Option<Tensor>)> {
        let wk = format!("{prefix}weight");
        let bk = format!("{prefix}bias");
        let weight = sd.float_tensor(&wk)?;
        let bias = sd.float_tensor(&bk)?;
        let mut absent = Vec::new();
        if weight.is_none() {
            absent.push(wk);
        }
        if has_bias && bias.is_none() {
            absent.push(bk.clone());
        }
        if !absent.is_empty() {
            return Err(missing(prefix, absent));
        }
        if !has_bias && bias.is_some() {
            return Err(Error::StateDictKeys { prefix: prefix.to_string(), missing: vec![], unexpected: vec![bk] });
        }
        Ok((weight.expect("checked above"), bias))
    }

    /// Loads weight, bias and qparams from `prefix` into this module (PyTorch's
    /// `load_state_dict`, fixed): the per-channel axis comes from the stored value, missing keys
    /// are an error, and unexpected keys are an error when `strict` (listed in the report
    /// otherwise). A stored `module` entry must describe this module's hyper-parameters. On error
    /// the module is unchanged.
    pub fn load_state_dict(&mut self, sd: &StateDict, prefix: &str, strict: bool) -> Result<LoadReport> {
        let key = format!("{prefix}module");
        if let Some(json) = sd.metadata.get(&key) {
            let v = parse_module_json(&key, json)?;
            let cfg = parse_config::<D>(&key, &v, TRANSPOSED)?;
            if cfg.type_name != Self::type_name()
                || cfg.in_channels != self.in_channels()
                || cfg.out_channels != self.out_channels()
                || cfg.options != *self.options()
            {
                return Err(bad(key, format!("describes a different module ({}) than {self}", Cut(json))));
            }
        }
        let report = LoadReport { unexpected: unexpected_keys(sd, prefix) };
        if strict && !report.unexpected.is_empty() {
            return Err(Error::StateDictKeys {
                prefix: prefix.to_string(),
                missing: vec![],
                unexpected: report.unexpected,
            });
        }
        let qparams = qparams_from_state_dict(sd, prefix)?;
        let has_bias = sd.tensors.contains_key(&format!("{prefix}bias"));
        let (weight, bias) = Self::weight_bias(&mut Sd::Ref(sd), prefix, has_bias)?;
        *self = Self::with_channels(self.in_channels(), self.out_channels(), *self.options(), weight, bias, qparams)?;
        Ok(report)
    }
}

/// A module of any of the six types, e.g. as read from a file.
#[derive(Clone, Debug)]
pub enum AnyConv {
    /// `Conv1d`.
    Conv1d(ConvModule<1, false>),
    /// `Conv2d`.
    Conv2d(ConvModule<2, false>),
    /// `Conv3d`.
    Conv3d(ConvModule<3, false>),
    /// `ConvTranspose1d`.
    ConvTranspose1d(ConvModule<1, true>),
    /// `ConvTranspose2d`.
    ConvTranspose2d(ConvModule<2, true>),
    /// `ConvTranspose3d`.
    ConvTranspose3d(ConvModule<3, true>),
}

macro_rules! each {
    ($self:expr, $m:ident => $e:expr) => {
        match $self {
            AnyConv::Conv1d($m) => $e,
            AnyConv::Conv2d($m) => $e,
            AnyConv::Conv3d($m) => $e,
            AnyConv::ConvTranspose1d($m) => $e,
            AnyConv::ConvTranspose2d($m) => $e,
            AnyConv::ConvTranspose3d($m) => $e,
        }
    };
}

impl AnyConv {
    /// Builds the module stored under `prefix`, its type read from the `module` entry. Unexpected
    /// keys under the prefix are an error.
    pub fn from_state_dict(sd: &StateDict, prefix: &str) -> Result<Self> {
        let (m, report) = Self::from_state_dict_lenient(sd, prefix)?;
        strict(prefix, report).map(|()| m)
    }

    /// Like [`AnyConv::from_state_dict`], returning unexpected keys in a report.
    pub fn from_state_dict_lenient(sd: &StateDict, prefix: &str) -> Result<(Self, LoadReport)> {
        Self::build(Sd::Ref(sd), prefix)
    }

    /// Like [`AnyConv::from_state_dict`], consuming `sd`: the weight and bias move into the
    /// module instead of being copied.
    pub fn from_state_dict_owned(sd: StateDict, prefix: &str) -> Result<Self> {
        let (m, report) = Self::build(Sd::Own(sd), prefix)?;
        strict(prefix, report).map(|()| m)
    }

    /// Loads the module under `prefix` from a safetensors file — or, with `None`, the file's only
    /// module — reading only that module's tensors: the bytes of every other tensor are never
    /// read (they may be missing or garbage), and the weight moves from the file buffer into the
    /// module without a copy. Unexpected keys directly under the prefix are an error.
    ///
    /// Errors: those of [`ModelFile::open`] and [`ModelFile::load_module`];
    /// [`Error::ModuleChoice`] when `prefix` is `None` and the file holds no module or several;
    /// those of [`AnyConv::from_state_dict`].
    pub fn from_file(path: impl AsRef<Path>, prefix: Option<&str>) -> Result<Self> {
        Self::from_model_file(&mut ModelFile::open(path)?, prefix)
    }

    /// [`from_file`](Self::from_file) on an opened [`ModelFile`] (e.g. after listing its
    /// modules with [`ModelFile::module_prefixes`]).
    pub fn from_model_file(file: &mut ModelFile<'_>, prefix: Option<&str>) -> Result<Self> {
        let prefix = file.choose_module(prefix)?;
        Self::from_state_dict_owned(file.load_module(&prefix)?, &prefix)
    }

    fn build(sd: Sd<'_>, prefix: &str) -> Result<(Self, LoadReport)> {
        let key = format!("{prefix}module");
        let json = sd.sd().metadata.get(&key).ok_or_else(|| missing(prefix, vec![key.clone()]))?;
        let ty = module_type(&key, &parse_module_json(&key, json)?)?;
        Ok(match ty.as_str() {
            "Conv1d" => ConvModule::build(sd, prefix).map(|(m, r)| (AnyConv::Conv1d(m), r))?,
            "Conv2d" => ConvModule::build(sd, prefix).map(|(m, r)| (AnyConv::Conv2d(m), r))?,
            "Conv3d" => ConvModule::build(sd, prefix).map(|(m, r)| (AnyConv::Conv3d(m), r))?,
            "ConvTranspose1d" => ConvModule::build(sd, prefix).map(|(m, r)| (AnyConv::ConvTranspose1d(m), r))?,
            "ConvTranspose2d" => ConvModule::build(sd, prefix).map(|(m, r)| (AnyConv::ConvTranspose2d(m), r))?,
            "ConvTranspose3d" => ConvModule::build(sd, prefix).map(|(m, r)| (AnyConv::ConvTranspose3d(m), r))?,
            lowered if lowered.starts_with("Quantized") => {
                return Err(bad(
                    key,
                    format!(
                        "holds the lowered int8 module {}: load it with AnyQuantizedConv (or {}::from_state_dict); AnyConv holds reference modules",
                        Quoted(lowered),
                        Cut(lowered)
                    ),
                ))
            }
            other => {
                return Err(bad(
                    key,
                    format!("unknown module type {} (expected Conv1d/2d/3d or ConvTranspose1d/2d/3d)", Quoted(other)),
                ))
            }
        })
    }

    /// The module moved to `device` (see [`ConvModule::to_device`]).
    pub fn to_device(&self, device: Device) -> Result<Self> {
        Ok(match self {
            AnyConv::Conv1d(m) => AnyConv::Conv1d(m.to_device(device)?),
            AnyConv::Conv2d(m) => AnyConv::Conv2d(m.to_device(device)?),
            AnyConv::Conv3d(m) => AnyConv::Conv3d(m.to_device(device)?),
            AnyConv::ConvTranspose1d(m) => AnyConv::ConvTranspose1d(m.to_device(device)?),
            AnyConv::ConvTranspose2d(m) => AnyConv::ConvTranspose2d(m.to_device(device)?),
            AnyConv::ConvTranspose3d(m) => AnyConv::ConvTranspose3d(m.to_device(device)?),
        })
    }

    /// The device the module computes on.
    pub fn device(&self) -> Device {
        each!(self, m => m.device())
    }

    /// Runs the module on a channels-first input (`[N, C, *spatial]` or unbatched `[C, *spatial]`);
    /// a transposed convolution uses its `output_padding`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        each!(self, m => m.forward(x))
    }

    /// Runs a transposed convolution producing `output_size` (see
    /// [`ConvModule::forward_with_output_size`]); for a forward convolution this is an
    /// [`Error::InvalidConfig`] on `output_size`.
    pub fn forward_with_output_size(&self, x: &Tensor, output_size: &[usize]) -> Result<Tensor> {
        match self {
            AnyConv::ConvTranspose1d(m) => m.forward_with_output_size(x, output_size),
            AnyConv::ConvTranspose2d(m) => m.forward_with_output_size(x, output_size),
            AnyConv::ConvTranspose3d(m) => m.forward_with_output_size(x, output_size),
            _ => Err(self.not_transposed(output_size)),
        }
    }

    fn not_transposed(&self, output_size: &[usize]) -> Error {
        let items: Vec<String> = output_size.iter().map(|v| v.to_string()).collect();
        Error::config(
            "output_size",
            format!("[{}]", items.join(", ")),
            format!("output_size is only valid for transposed convolutions, not {}", self.type_name()),
        )
    }

    /// [`forward`](Self::forward) on a channels-last input (`[N, *spatial, C]`), giving
    /// `[N, *out, K]` (see [`ConvModule::forward_channels_last`]).
    pub fn forward_channels_last(&self, x: &Tensor) -> Result<Tensor> {
        each!(self, m => m.forward_channels_last(x))
    }

    /// [`forward_with_output_size`](Self::forward_with_output_size) on a channels-last input.
    pub fn forward_channels_last_with_output_size(&self, x: &Tensor, output_size: &[usize]) -> Result<Tensor> {
        match self {
            AnyConv::ConvTranspose1d(m) => m.forward_channels_last_with_output_size(x, output_size),
            AnyConv::ConvTranspose2d(m) => m.forward_channels_last_with_output_size(x, output_size),
            AnyConv::ConvTranspose3d(m) => m.forward_channels_last_with_output_size(x, output_size),
            _ => Err(self.not_transposed(output_size)),
        }
    }

    /// This module with `precision` for its CUDA forward passes (see [`crate::Precision`]).
    pub fn with_precision(self, precision: crate::Precision) -> Self {
        match self {
            AnyConv::Conv1d(m) => AnyConv::Conv1d(m.with_precision(precision)),
            AnyConv::Conv2d(m) => AnyConv::Conv2d(m.with_precision(precision)),
            AnyConv::Conv3d(m) => AnyConv::Conv3d(m.with_precision(precision)),
            AnyConv::ConvTranspose1d(m) => AnyConv::ConvTranspose1d(m.with_precision(precision)),
            AnyConv::ConvTranspose2d(m) => AnyConv::ConvTranspose2d(m.with_precision(precision)),
            AnyConv::ConvTranspose3d(m) => AnyConv::ConvTranspose3d(m.with_precision(precision)),
        }
    }

    /// This module with its device weight held as `storage` (see [`crate::WeightStorage`]).
    pub fn with_weight_storage(self, storage: crate::WeightStorage) -> Result<Self> {
        Ok(match self {
            AnyConv::Conv1d(m) => AnyConv::Conv1d(m.with_weight_storage(storage)?),
            AnyConv::Conv2d(m) => AnyConv::Conv2d(m.with_weight_storage(storage)?),
            AnyConv::Conv3d(m) => AnyConv::Conv3d(m.with_weight_storage(storage)?),
            AnyConv::ConvTranspose1d(m) => AnyConv::ConvTranspose1d(m.with_weight_storage(storage)?),
            AnyConv::ConvTranspose2d(m) => AnyConv::ConvTranspose2d(m.with_weight_storage(storage)?),
            AnyConv::ConvTranspose3d(m) => AnyConv::ConvTranspose3d(m.with_weight_storage(storage)?),
        })
    }

    /// Bytes of device memory holding the module's weight (0 on the CPU).
    pub fn device_weight_bytes(&self) -> usize {
        each!(self, m => m.device_weight_bytes())
    }

    /// The PyTorch class name.
    pub fn type_name(&self) -> &'static str {
        match self {
            AnyConv::Conv1d(_) => ConvModule::<1, false>::type_name(),
            AnyConv::Conv2d(_) => ConvModule::<2, false>::type_name(),
            AnyConv::Conv3d(_) => ConvModule::<3, false>::type_name(),
            AnyConv::ConvTranspose1d(_) => ConvModule::<1, true>::type_name(),
            AnyConv::ConvTranspose2d(_) => ConvModule::<2, true>::type_name(),
            AnyConv::ConvTranspose3d(_) => ConvModule::<3, true>::type_name(),
        }
    }

    /// `get_weight()`.
    pub fn get_weight(&self) -> &Tensor {
        each!(self, m => m.get_weight())
    }

    /// `get_quantized_weight()`.
    pub fn get_quantized_weight(&self) -> Result<QuantizedWeight> {
        each!(self, m => m.get_quantized_weight())
    }

    /// The float weight.
    pub fn weight(&self) -> &Tensor {
        each!(self, m => m.weight())
    }

    /// The weight qparams.
    pub fn weight_qparams(&self) -> &WeightQParams {
        each!(self, m => m.weight_qparams())
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        each!(self, m => m.in_channels())
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        each!(self, m => m.out_channels())
    }

    /// Number of spatial dimensions (1, 2 or 3).
    pub fn spatial_dims(&self) -> usize {
        match self {
            AnyConv::Conv1d(_) | AnyConv::ConvTranspose1d(_) => 1,
            AnyConv::Conv2d(_) | AnyConv::ConvTranspose2d(_) => 2,
            AnyConv::Conv3d(_) | AnyConv::ConvTranspose3d(_) => 3,
        }
    }

    /// The module's state dict under `prefix`.
    pub fn state_dict(&self, prefix: &str) -> StateDict {
        each!(self, m => m.state_dict(prefix))
    }

    /// Adds the module's entries under `prefix` to `sd`.
    pub fn write_state_dict(&self, sd: &mut StateDict, prefix: &str) {
        each!(self, m => m.write_state_dict(sd, prefix))
    }
}

impl fmt::Display for AnyConv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        each!(self, m => fmt::Display::fmt(m, f))
    }
}
