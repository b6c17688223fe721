//! Every file the command line reads or writes goes through here: model files (module prefixes,
//! one module, the listing of `qconv inspect`), input files and output files. One small module so
//! that the file layer underneath can change without touching the commands.

use std::path::{Path, PathBuf};

use qconv::io::{StateDict, StoredData, StoredTensor};
use qconv::{ActivationQParams, AnyConv, AnyQuantizedConv, QuantizedTensor, Tensor};
use serde_json::Value;

use crate::{CliError, CliResult};

/// A model file, read.
pub struct Model {
    path: PathBuf,
    sd: StateDict,
}

/// One module of a model file, as `qconv inspect` lists it (nothing is built or checked).
#[derive(Debug, serde::Serialize)]
pub struct Entry {
    pub prefix: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub weight: Option<TensorInfo>,
    pub bias: Option<TensorInfo>,
    pub qscheme: Option<String>,
    pub dtype: Option<String>,
    /// The `{p}module` JSON (hyper-parameters), as stored.
    pub module: Value,
    /// Whether this build of qconv runs the module type.
    pub runnable: bool,
}

/// Shape and stored dtype of a tensor.
#[derive(Debug, serde::Serialize)]
pub struct TensorInfo {
    pub shape: Vec<usize>,
    pub dtype: String,
}

/// The module types `qconv run` runs (reference modules, then lowered int8 modules).
const RUNNABLE: [&str; 12] = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "QuantizedConv1d",
    "QuantizedConv2d",
    "QuantizedConv3d",
    "QuantizedConvTranspose1d",
    "QuantizedConvTranspose2d",
    "QuantizedConvTranspose3d",
];

/// Reads a model file; a PyTorch checkpoint given by mistake is named as such.
pub fn open_model(path: &Path) -> CliResult<Model> {
    let sd = StateDict::load(path).map_err(|e| not_safetensors(path, e))?;
    Ok(Model { path: path.to_path_buf(), sd })
}

/// `e`, or, when `path` starts like a PyTorch checkpoint, an error saying so and how to export it.
fn not_safetensors(path: &Path, e: qconv::Error) -> CliError {
    use std::io::Read;
    if matches!(e, qconv::Error::Io { .. }) || !path.is_file() {
        return e.into();
    }
    let mut magic = [0u8; 4];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic));
    let torch = read.is_ok() && (magic == *b"PK\x03\x04" || (magic[0] == 0x80 && (2..=5).contains(&magic[1])));
    if !torch {
        return e.into();
    }
    CliError::Run(format!(
        "{} is a PyTorch checkpoint (a torch.save zip archive or pickle), not a safetensors model file: \
         export it first with `python scripts/export_pytorch.py MODEL.pt OUT.safetensors` (see the README)",
        path.display()
    ))
}

impl Model {
    /// Every module prefix in the file, sorted.
    pub fn prefixes(&self) -> Vec<String> {
        self.sd.module_prefixes()
    }

    /// The prefix `--prefix` names: as given or with a trailing dot added; without `--prefix`, the
    /// file's only module. An unknown prefix is a usage error listing the nearest ones.
    pub fn resolve(&self, prefix: Option<&str>) -> CliResult<String> {
        let all = self.prefixes();
        let Some(p) = prefix else {
            return match all.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err(CliError::Run(format!("{} holds no module", self.path.display()))),
                many => Err(CliError::Usage(format!(
                    "{} holds {} modules; choose one with --prefix: {}",
                    self.path.display(),
                    many.len(),
                    shortlist(many, 5)
                ))),
            };
        };
        if all.iter().any(|q| q == p) {
            return Ok(p.to_string());
        }
        let dotted = format!("{p}.");
        if !p.is_empty() && all.contains(&dotted) {
            return Ok(dotted);
        }
        Err(CliError::Usage(format!(
            "{} has no module under prefix {:?}; nearest: {}",
            self.path.display(),
            shorten(p),
            shortlist(&nearest(p, &all), 5)
        )))
    }

    /// The `"type"` of the module under `prefix` (as stored; `None` when unreadable).
    pub fn module_type(&self, prefix: &str) -> Option<String> {
        let json = self.sd.metadata.get(&format!("{prefix}module"))?;
        serde_json::from_str::<Value>(json).ok()?.get("type")?.as_str().map(str::to_string)
    }

    /// Builds the module under `prefix` (see [`Model::resolve`]).
    pub fn module(&self, prefix: &str) -> CliResult<AnyConv> {
        Ok(AnyConv::from_state_dict(&self.sd, prefix)?)
    }

    /// Builds the lowered int8 module under `prefix`.
    pub fn quantized_module(&self, prefix: &str) -> CliResult<AnyQuantizedConv> {
        Ok(AnyQuantizedConv::from_state_dict(&self.sd, prefix)?)
    }

    /// Every module, for `qconv inspect`.
    pub fn entries(&self) -> Vec<Entry> {
        let info = |k: String| {
            self.sd.tensors.get(&k).map(|t| TensorInfo { shape: t.shape.clone(), dtype: t.data.dtype_name().into() })
        };
        self.prefixes()
            .into_iter()
            .map(|p| {
                let module = self
                    .sd
                    .metadata
                    .get(&format!("{p}module"))
                    .and_then(|j| serde_json::from_str::<Value>(j).ok())
                    .unwrap_or(Value::Null);
                let type_name = module.get("type").and_then(Value::as_str).unwrap_or("?").to_string();
                Entry {
                    weight: info(format!("{p}weight")),
                    bias: info(format!("{p}bias")),
                    qscheme: self.sd.metadata.get(&format!("{p}weight_qscheme")).cloned(),
                    dtype: self.sd.metadata.get(&format!("{p}weight_dtype")).cloned(),
                    runnable: RUNNABLE.contains(&type_name.as_str()),
                    type_name,
                    module,
                    prefix: p,
                }
            })
            .collect()
    }
}

/// The tensor of an input file: the one named `input`, else the file's only tensor.
pub fn read_input(path: &Path) -> CliResult<Tensor> {
    let sd = StateDict::load(path).map_err(|e| not_safetensors(path, e))?;
    if sd.tensors.contains_key("input") {
        return Ok(sd.tensor("input")?);
    }
    let mut it = sd.tensors.iter();
    match (it.next(), it.next()) {
        (Some((name, t)), None) => Ok(t.to_tensor(name)?),
        _ => Err(CliError::Usage(format!(
            "{} has {} tensors and none is named `input`",
            path.display(),
            sd.tensors.len()
        ))),
    }
}

/// The activations of a lowered int8 module from an input file (docs/file-format.md, "Input and
/// output files"): U8 codes `input` with scalars `input_scale` (F32/F64) and `input_zero_point`
/// (I32/I64), or a float32 `input` quantized exactly as `torch.quantize_per_tensor`. Qparams in
/// the file win over `stored` (the model's input qparams); without either it is an error.
pub fn read_quantized_input(path: &Path, stored: Option<ActivationQParams>) -> CliResult<QuantizedTensor> {
    let sd = StateDict::load(path).map_err(|e| not_safetensors(path, e))?;
    let Some(t) = sd.tensors.get("input") else {
        return Err(CliError::Usage(format!(
            "{} has no tensor named `input` (a lowered int8 module reads `input` with `input_scale` and `input_zero_point`)",
            path.display()
        )));
    };
    let scalar = |name: &str| -> CliResult<Option<f64>> {
        match sd.tensors.get(name).map(|t| (&t.data, t.shape.clone())) {
            None => Ok(None),
            Some((StoredData::F64(v), _)) if v.len() == 1 => Ok(Some(v[0])),
            Some((StoredData::F32(v), _)) if v.len() == 1 => Ok(Some(v[0] as f64)),
            Some((d, shape)) => Err(CliError::Run(format!(
                "{}: `{name}` must be one F32 or F64 value, not {} {shape:?}",
                path.display(),
                d.dtype_name()
            ))),
        }
    };
    let int = |name: &str| -> CliResult<Option<i64>> {
        match sd.tensors.get(name).map(|t| (&t.data, t.shape.clone())) {
            None => Ok(None),
            Some((StoredData::I64(v), _)) if v.len() == 1 => Ok(Some(v[0])),
            Some((StoredData::I32(v), _)) if v.len() == 1 => Ok(Some(v[0] as i64)),
            Some((d, shape)) => Err(CliError::Run(format!(
                "{}: `{name}` must be one I32 or I64 value, not {} {shape:?}",
                path.display(),
                d.dtype_name()
            ))),
        }
    };
    let qparams = match (scalar("input_scale")?, int("input_zero_point")?) {
        (Some(s), Some(z)) => ActivationQParams::new(s, z)?,
        (None, None) => stored.ok_or_else(|| {
            CliError::Run(format!(
                "{} gives no `input_scale` / `input_zero_point` and the model stores no input qparams: \
                 add both scalars to the input file",
                path.display()
            ))
        })?,
        _ => {
            return Err(CliError::Run(format!(
                "{}: `input_scale` and `input_zero_point` must be given together",
                path.display()
            )))
        }
    };
    match &t.data {
        StoredData::U8(codes) => Ok(QuantizedTensor::with_qparams(codes.clone(), &t.shape, qparams)?),
        StoredData::F32(_) => Ok(QuantizedTensor::quantize_with(&t.to_tensor("input")?, qparams)?),
        d => Err(CliError::Run(format!(
            "{}: `input` must be U8 codes or F32 values for a lowered int8 module, not {}",
            path.display(),
            d.dtype_name()
        ))),
    }
}

/// Writes `tensors` to `path` (replacing it only once the new file is complete).
pub fn save(path: &Path, tensors: Vec<(&str, StoredTensor)>) -> CliResult {
    let mut sd = StateDict::new();
    for (name, t) in tensors {
        sd.tensors.insert(name.to_string(), t);
    }
    Ok(sd.save(path)?)
}

/// A host tensor as stored.
pub fn stored(t: &Tensor) -> CliResult<StoredTensor> {
    Ok(StoredTensor::from_tensor(&t.to_device(qconv::Device::Cpu)?))
}

/// `p` shortened for a message.
fn shorten(p: &str) -> String {
    if p.len() <= 80 {
        return p.to_string();
    }
    let cut = (0..=77).rev().find(|&i| p.is_char_boundary(i)).unwrap_or(0);
    format!("{}…", &p[..cut])
}

/// At most `n` names, then "… and N more".
fn shortlist(names: &[String], n: usize) -> String {
    if names.is_empty() {
        return "(none)".into();
    }
    let shown: Vec<String> = names.iter().take(n).map(|s| format!("{:?}", shorten(s))).collect();
    match names.len().saturating_sub(n) {
        0 => shown.join(", "),
        more => format!("{} … and {more} more", shown.join(", ")),
    }
}

/// `all`, nearest to `p` first (prefixes extending `p`, then by edit distance).
fn nearest(p: &str, all: &[String]) -> Vec<String> {
    let p: String = p.chars().take(256).collect();
    let mut scored: Vec<(bool, usize, &String)> =
        all.iter().map(|q| (!q.starts_with(&p), edit_distance(&p, q), q)).collect();
    scored.sort();
    scored.into_iter().map(|(_, _, q)| q.clone()).collect()
}

/// Levenshtein distance over characters (inputs are short: `p` is cut to 256 characters).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().take(256).collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_prefixes() {
        let all: Vec<String> = ["conv1.0.", "conv2.", "head.", "layer1.0.conv1."].map(String::from).to_vec();
        assert_eq!(nearest("conv1", &all)[0], "conv1.0.");
        assert_eq!(nearest("hed.", &all)[0], "head.");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        let many: Vec<String> = (0..8).map(|i| format!("m{i}.")).collect();
        assert!(shortlist(&many, 5).ends_with("… and 3 more"));
    }
}
