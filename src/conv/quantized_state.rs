//! State dicts of the lowered int8 modules (docs/file-format.md, "Lowered int8 modules"), and
//! [`AnyQuantizedConv`] for a lowered module whose type is read from a file.
//!
//! Keys under a prefix `p`: tensors `p.weight` (I8), `p.weight_scale` (F64; F32 accepted),
//! `p.weight_zero_point` (I64; I32 accepted), `p.weight_axis` (per channel), `p.bias` (F32,
//! optional), `p.scale` / `p.zero_point` (output qparams, scalars), optional `p.input_scale` /
//! `p.input_zero_point`; metadata `p.weight_qscheme`, `p.weight_dtype` (`torch.qint8`) and
//! `p.module` (JSON with `"type": "QuantizedConv2d"` … and `"relu"`). Loading is strict as for
//! the reference modules: missing keys, unknown keys directly under the prefix and unknown JSON
//! fields are errors.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde_json::{json, Value};

use super::module_json::{module_type, padding_json, parse_config, parse_module_json};
use super::quantized::{Int8Weight, QuantizedConvModule};
use super::state::{bad, missing, qparams_from_state_dict, strict, LoadReport};
use crate::alloc::try_to_vec;
use crate::error::{Cut, Quoted, Result};
use crate::io::{ModelFile, StateDict, StoredData, StoredTensor};
use crate::quant::{ActivationQParams, QScheme, QuantizedTensor};
use crate::tensor::Tensor;

const TENSOR_KEYS: [&str; 9] = [
    "weight",
    "bias",
    "weight_scale",
    "weight_zero_point",
    "weight_axis",
    "scale",
    "zero_point",
    "input_scale",
    "input_zero_point",
];
const META_KEYS: [&str; 3] = ["weight_qscheme", "weight_dtype", "module"];

/// Keys of `sd` directly under `prefix` (no further `.`) that a lowered module does not use.
fn unexpected_keys(sd: &StateDict, prefix: &str) -> Vec<String> {
    let direct = |k: &&String| k.strip_prefix(prefix).is_some_and(|rest| !rest.contains('.'));
    sd.tensors
        .keys()
        .filter(direct)
        .filter(|k| !TENSOR_KEYS.contains(&&k[prefix.len()..]))
        .chain(sd.metadata.keys().filter(direct).filter(|k| !META_KEYS.contains(&&k[prefix.len()..])))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The one value of a scalar (`()` or `(1,)`) F32/F64 tensor.
fn scalar_f64(sd: &StateDict, key: &str) -> Result<Option<f64>> {
    let Some(t) = sd.tensors.get(key) else { return Ok(None) };
    match &t.data {
        StoredData::F64(v) if v.len() == 1 => Ok(Some(v[0])),
        StoredData::F32(v) if v.len() == 1 => Ok(Some(v[0] as f64)),
        d => Err(bad(key.into(), format!("expected one F64 or F32 value, found {} {:?}", d.dtype_name(), t.shape))),
    }
}

/// The one value of a scalar I64/I32 tensor.
fn scalar_i64(sd: &StateDict, key: &str) -> Result<Option<i64>> {
    let Some(t) = sd.tensors.get(key) else { return Ok(None) };
    match &t.data {
        StoredData::I64(v) if v.len() == 1 => Ok(Some(v[0])),
        StoredData::I32(v) if v.len() == 1 => Ok(Some(v[0] as i64)),
        d => Err(bad(key.into(), format!("expected one I64 or I32 value, found {} {:?}", d.dtype_name(), t.shape))),
    }
}

fn scalar_tensor_f64(v: f64) -> StoredTensor {
    StoredTensor { shape: vec![], data: StoredData::F64(vec![v]) }
}

fn scalar_tensor_i64(v: i64) -> StoredTensor {
    StoredTensor { shape: vec![], data: StoredData::I64(vec![v]) }
}

impl<const D: usize, const TRANSPOSED: bool> QuantizedConvModule<D, TRANSPOSED> {
    /// The `module` metadata JSON (the hyper-parameters and `"relu"`).
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
        v["relu"] = json!(self.relu());
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
        let w = self.weight();
        sd.tensors
            .insert(k("weight"), StoredTensor { shape: w.shape().to_vec(), data: StoredData::I8(w.codes().to_vec()) });
        if let Some(b) = self.bias() {
            sd.insert_tensor(k("bias"), b);
        }
        let qshape = if w.is_per_channel() { vec![w.scales().len()] } else { vec![] };
        sd.tensors.insert(
            k("weight_scale"),
            StoredTensor { shape: qshape.clone(), data: StoredData::F64(w.scales().to_vec()) },
        );
        let zps = w.zero_points().iter().map(|&z| z as i64).collect();
        sd.tensors.insert(k("weight_zero_point"), StoredTensor { shape: qshape, data: StoredData::I64(zps) });
        if w.is_per_channel() {
            sd.tensors.insert(k("weight_axis"), scalar_tensor_i64(w.qparams().axis));
        }
        sd.tensors.insert(k("scale"), scalar_tensor_f64(self.scale()));
        sd.tensors.insert(k("zero_point"), scalar_tensor_i64(self.zero_point() as i64));
        if let Some(q) = self.input_qparams() {
            sd.tensors.insert(k("input_scale"), scalar_tensor_f64(q.scale()));
            sd.tensors.insert(k("input_zero_point"), scalar_tensor_i64(q.zero_point() as i64));
        }
        sd.metadata.insert(k("weight_qscheme"), w.qparams().qscheme.torch_name().into());
        sd.metadata.insert(k("weight_dtype"), w.qparams().dtype.torch_name().into());
        sd.metadata.insert(k("module"), self.config_json());
    }

    /// Builds a module from the entries under `prefix`; any unexpected key directly under the
    /// prefix is an error (use [`from_state_dict_lenient`](Self::from_state_dict_lenient) to
    /// list them instead).
    pub fn from_state_dict(sd: &StateDict, prefix: &str) -> Result<Self> {
        let (m, report) = Self::from_state_dict_lenient(sd, prefix)?;
        strict(prefix, report).map(|()| m)
    }

    /// Like [`from_state_dict`](Self::from_state_dict), returning unexpected keys in a report.
    pub fn from_state_dict_lenient(sd: &StateDict, prefix: &str) -> Result<(Self, LoadReport)> {
        let key = format!("{prefix}module");
        let json = sd.metadata.get(&key).ok_or_else(|| missing(prefix, vec![key.clone()]))?;
        let mut v = parse_module_json(&key, json)?;
        let ty = module_type(&key, &v)?;
        if ty != Self::type_name() {
            return Err(bad(key, format!("holds a {}, not a {}", Cut(&ty), Self::type_name())));
        }
        let relu = match v.as_object_mut().and_then(|o| o.remove("relu")) {
            None => false,
            Some(Value::Bool(b)) => b,
            Some(other) => {
                return Err(bad(key, format!("\"relu\" must be true or false, not {}", Cut(&other.to_string()))))
            }
        };
        let cfg = parse_config::<D>(&key, &v, TRANSPOSED)?;
        let report = LoadReport { unexpected: unexpected_keys(sd, prefix) };
        let k = |s: &str| format!("{prefix}{s}");
        let mut absent = Vec::new();
        for name in ["weight", "scale", "zero_point"] {
            if !sd.tensors.contains_key(&k(name)) {
                absent.push(k(name));
            }
        }
        let has_bias = sd.tensors.contains_key(&k("bias"));
        if cfg.bias && !has_bias {
            absent.push(k("bias"));
        }
        let (in_scale, in_zp) = (scalar_f64(sd, &k("input_scale"))?, scalar_i64(sd, &k("input_zero_point"))?);
        match (in_scale, in_zp) {
            (Some(_), None) => absent.push(k("input_zero_point")),
            (None, Some(_)) => absent.push(k("input_scale")),
            _ => {}
        }
        if !absent.is_empty() {
            return Err(missing(prefix, absent));
        }
        if !cfg.bias && has_bias {
            return Err(crate::Error::StateDictKeys {
                prefix: prefix.to_string(),
                missing: vec![],
                unexpected: vec![k("bias")],
            });
        }
        let qparams = qparams_from_state_dict(sd, prefix)?;
        let w = &sd.tensors[&k("weight")];
        let StoredData::I8(codes) = &w.data else {
            return Err(bad(
                k("weight"),
                format!("expected an I8 tensor of int8 codes, found {}", w.data.dtype_name()),
            ));
        };
        let weight =
            Int8Weight::new(try_to_vec(codes, || format!("the weight {}", Quoted(&k("weight"))))?, &w.shape, qparams)?;
        let bias = match sd.tensors.get(&k("bias")) {
            None => None,
            Some(StoredTensor { shape, data: StoredData::F32(b) }) => Some(Tensor::from_slice(b, shape)?),
            Some(t) => return Err(bad(k("bias"), format!("expected an F32 tensor, found {}", t.data.dtype_name()))),
        };
        let scale = scalar_f64(sd, &k("scale"))?.unwrap_or_default();
        let zero_point = scalar_i64(sd, &k("zero_point"))?.unwrap_or_default();
        let output = ActivationQParams::new(scale, zero_point)?;
        let input = match (in_scale, in_zp) {
            (Some(s), Some(z)) => Some(ActivationQParams::new(s, z)?),
            _ => None,
        };
        let m = Self::with_channels(cfg.in_channels, cfg.out_channels, cfg.options, weight, bias, output)?
            .with_relu(relu)?
            .with_input_qparams(input);
        Ok((m, report))
    }

    /// Builds the module stored under `prefix` in a safetensors file, reading only that module's
    /// tensors. Unexpected keys directly under the prefix are an error.
    pub fn from_file(path: impl AsRef<Path>, prefix: &str) -> Result<Self> {
        Self::from_state_dict(&ModelFile::open(path)?.load_module(prefix)?, prefix)
    }
}

/// A lowered int8 module of any of the six types, e.g. as read from a file.
#[derive(Clone, Debug)]
pub enum AnyQuantizedConv {
    /// `QuantizedConv1d`.
    Conv1d(QuantizedConvModule<1, false>),
    /// `QuantizedConv2d`.
    Conv2d(QuantizedConvModule<2, false>),
    /// `QuantizedConv3d`.
    Conv3d(QuantizedConvModule<3, false>),
    /// `QuantizedConvTranspose1d`.
    ConvTranspose1d(QuantizedConvModule<1, true>),
    /// `QuantizedConvTranspose2d`.
    ConvTranspose2d(QuantizedConvModule<2, true>),
    /// `QuantizedConvTranspose3d`.
    ConvTranspose3d(QuantizedConvModule<3, true>),
}

macro_rules! each {
    ($self:expr, $m:ident => $e:expr) => {
        match $self {
            AnyQuantizedConv::Conv1d($m) => $e,
            AnyQuantizedConv::Conv2d($m) => $e,
            AnyQuantizedConv::Conv3d($m) => $e,
            AnyQuantizedConv::ConvTranspose1d($m) => $e,
            AnyQuantizedConv::ConvTranspose2d($m) => $e,
            AnyQuantizedConv::ConvTranspose3d($m) => $e,
        }
    };
}

impl AnyQuantizedConv {
    /// Whether `type_name` (a `{p}module` JSON `"type"`) names a lowered int8 module.
    pub fn is_lowered_type(type_name: &str) -> bool {
        type_name.starts_with("Quantized")
    }

    /// Builds the module stored under `prefix`, its type read from the `module` entry.
    /// Unexpected keys under the prefix are an error.
    pub fn from_state_dict(sd: &StateDict, prefix: &str) -> Result<Self> {
        let (m, report) = Self::from_state_dict_lenient(sd, prefix)?;
        strict(prefix, report).map(|()| m)
    }

    /// Like [`from_state_dict`](Self::from_state_dict), returning unexpected keys in a report.
    pub fn from_state_dict_lenient(sd: &StateDict, prefix: &str) -> Result<(Self, LoadReport)> {
        let key = format!("{prefix}module");
        let json = sd.metadata.get(&key).ok_or_else(|| missing(prefix, vec![key.clone()]))?;
        let ty = module_type(&key, &parse_module_json(&key, json)?)?;
        Ok(match ty.as_str() {
            "QuantizedConv1d" => QuantizedConvModule::from_state_dict_lenient(sd, prefix).map(|(m, r)| (Self::Conv1d(m), r))?,
            "QuantizedConv2d" => QuantizedConvModule::from_state_dict_lenient(sd, prefix).map(|(m, r)| (Self::Conv2d(m), r))?,
            "QuantizedConv3d" => QuantizedConvModule::from_state_dict_lenient(sd, prefix).map(|(m, r)| (Self::Conv3d(m), r))?,
            "QuantizedConvTranspose1d" => {
                QuantizedConvModule::from_state_dict_lenient(sd, prefix).map(|(m, r)| (Self::ConvTranspose1d(m), r))?
            }
            "QuantizedConvTranspose2d" => {
                QuantizedConvModule::from_state_dict_lenient(sd, prefix).map(|(m, r)| (Self::ConvTranspose2d(m), r))?
            }
            "QuantizedConvTranspose3d" => {
                QuantizedConvModule::from_state_dict_lenient(sd, prefix).map(|(m, r)| (Self::ConvTranspose3d(m), r))?
            }
            other => {
                return Err(bad(
                    key,
                    format!(
                        "{} is not a lowered int8 module type (expected QuantizedConv1d/2d/3d or QuantizedConvTranspose1d/2d/3d)",
                        Quoted(other)
                    ),
                ))
            }
        })
    }

    /// Loads the module under `prefix` from a safetensors file — or, with `None`, the file's only
    /// module — reading only that module's tensors.
    pub fn from_file(path: impl AsRef<Path>, prefix: Option<&str>) -> Result<Self> {
        let mut file = ModelFile::open(path)?;
        let prefix = file.choose_module(prefix)?;
        Self::from_state_dict(&file.load_module(&prefix)?, &prefix)
    }

    /// The type name (`"QuantizedConv2d"`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Conv1d(_) => QuantizedConvModule::<1, false>::type_name(),
            Self::Conv2d(_) => QuantizedConvModule::<2, false>::type_name(),
            Self::Conv3d(_) => QuantizedConvModule::<3, false>::type_name(),
            Self::ConvTranspose1d(_) => QuantizedConvModule::<1, true>::type_name(),
            Self::ConvTranspose2d(_) => QuantizedConvModule::<2, true>::type_name(),
            Self::ConvTranspose3d(_) => QuantizedConvModule::<3, true>::type_name(),
        }
    }

    /// The backend problem this module runs for a channels-first input shape (see
    /// [`QuantizedConvModule::conv_problem`]).
    pub fn conv_problem(&self, input_shape: &[usize]) -> Result<crate::problem::ConvProblem> {
        each!(self, m => m.conv_problem(input_shape))
    }

    /// The number of spatial dimensions (1, 2 or 3).
    pub fn spatial_dims(&self) -> usize {
        match self {
            Self::Conv1d(_) | Self::ConvTranspose1d(_) => 1,
            Self::Conv2d(_) | Self::ConvTranspose2d(_) => 2,
            Self::Conv3d(_) | Self::ConvTranspose3d(_) => 3,
        }
    }

    /// Runs the module on channels-first u8 activations (see [`QuantizedConvModule::forward`]).
    pub fn forward(&self, x: &QuantizedTensor) -> Result<QuantizedTensor> {
        each!(self, m => m.forward(x))
    }

    /// Runs the module on channels-last activations (see
    /// [`QuantizedConvModule::forward_channels_last`]).
    pub fn forward_channels_last(&self, x: &QuantizedTensor) -> Result<QuantizedTensor> {
        each!(self, m => m.forward_channels_last(x))
    }

    /// The stored input qparams, if any.
    pub fn input_qparams(&self) -> Option<ActivationQParams> {
        each!(self, m => m.input_qparams())
    }

    /// The output qparams.
    pub fn output_qparams(&self) -> ActivationQParams {
        each!(self, m => m.output_qparams())
    }

    /// Whether the ReLU is fused.
    pub fn relu(&self) -> bool {
        each!(self, m => m.relu())
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        each!(self, m => m.in_channels())
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        each!(self, m => m.out_channels())
    }

    /// The qint8 weight.
    pub fn weight(&self) -> &Int8Weight {
        each!(self, m => m.weight())
    }

    /// The weight's qscheme.
    pub fn weight_qscheme(&self) -> QScheme {
        each!(self, m => m.weight().qparams().qscheme)
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

impl fmt::Display for AnyQuantizedConv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        each!(self, m => fmt::Display::fmt(m, f))
    }
}
