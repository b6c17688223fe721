//! The `{p}module` JSON entry: a module's hyper-parameters (docs/file-format.md), read strictly.
//!
//! Every field's presence and JSON type is checked, with a message naming the field, the type it
//! needs and the value found (shortened); a field that is not one of [`FIELDS`] is an error naming
//! the nearest known field by edit distance, so a misspelt `"paddding"` can never be ignored.

use serde_json::{json, Value};

use super::options::{ConvOptions, Padding, PaddingMode};
use super::state::bad;
use crate::error::{Cut, Error, Quoted, Result};

/// Hyper-parameters read from a `module` JSON entry.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleConfig<const D: usize> {
    /// The PyTorch class name.
    pub type_name: String,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Options (the kernel size always set).
    pub options: ConvOptions<D>,
    /// Whether the module has a bias (`"bias"`, default true as in PyTorch).
    pub bias: bool,
}

/// The fields of a `module` JSON entry (`output_padding` only for transposed convolutions).
pub(super) const FIELDS: [&str; 11] = [
    "type",
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "bias",
    "padding_mode",
    "output_padding",
];

/// What kind of JSON value `v` is, with the value (shortened), for messages.
fn json_kind(v: &Value) -> String {
    let kind = match v {
        Value::Null => return "null".into(),
        Value::Bool(_) => "the boolean",
        Value::Number(_) => "the number",
        Value::String(_) => "the string",
        Value::Array(_) => "the list",
        Value::Object(_) => "an object",
    };
    match v {
        Value::Object(_) => kind.into(),
        _ => format!("{kind} {}", Cut(&v.to_string())),
    }
}

/// Levenshtein distance (for "did you mean" hints on short field names).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
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

/// The known field nearest to `name` (by edit distance; ties: the first in [`FIELDS`]).
fn nearest_field(name: &str, transposed: bool) -> &'static str {
    // Long names only need their first characters compared (and must not cost quadratic time).
    let name: String = name.chars().take(64).collect();
    FIELDS
        .iter()
        .filter(|f| transposed || **f != "output_padding")
        .min_by_key(|f| edit_distance(&name, f))
        .copied()
        .unwrap_or("type")
}

pub(super) fn parse_module_json(key: &str, s: &str) -> Result<Value> {
    let v: Value = serde_json::from_str(s).map_err(|e| bad(key.to_string(), format!("invalid JSON: {e}")))?;
    if !v.is_object() {
        return Err(bad(key.to_string(), format!("must be a JSON object, not {}", json_kind(&v))));
    }
    Ok(v)
}

pub(super) fn module_type(key: &str, v: &Value) -> Result<String> {
    match v.get("type") {
        None => Err(bad(key.to_string(), "\"type\" is missing")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(bad(key.to_string(), format!("\"type\" must be a string, not {}", json_kind(other)))),
    }
}

/// Reads the fields of a module JSON object, checking each one's presence and JSON type.
struct Fields<'a> {
    key: &'a str,
    v: &'a Value,
}

impl Fields<'_> {
    fn err(&self, rule: String) -> Error {
        bad(self.key.to_string(), rule)
    }

    fn required(&self, name: &str) -> Result<&Value> {
        self.v.get(name).ok_or_else(|| self.err(format!("\"{name}\" is missing")))
    }

    fn uint_of(&self, name: &str, x: &Value) -> Result<usize> {
        match x.as_u64().map(usize::try_from) {
            Some(Ok(n)) => Ok(n),
            _ if x.is_number() => {
                Err(self
                    .err(format!("\"{name}\" must be a non-negative integer that fits usize, not {}", json_kind(x))))
            }
            _ => Err(self.err(format!("\"{name}\" must be a non-negative integer, not {}", json_kind(x)))),
        }
    }

    fn uint(&self, name: &str) -> Result<usize> {
        self.uint_of(name, self.required(name)?)
    }

    /// An integer for every dimension, or a list of `D` of them.
    fn dims<const D: usize>(&self, name: &str, x: &Value) -> Result<[usize; D]> {
        if x.is_number() {
            return Ok([self.uint_of(name, x)?; D]);
        }
        let Some(arr) = x.as_array() else {
            return Err(self.err(format!(
                "\"{name}\" must be a non-negative integer or a list of {D} of them, not {}",
                json_kind(x)
            )));
        };
        if arr.len() != D {
            return Err(
                self.err(format!("\"{name}\" must list {D} values (one per spatial dimension), not {}", arr.len()))
            );
        }
        let mut out = [0; D];
        for (o, e) in out.iter_mut().zip(arr) {
            *o = self.uint_of(name, e)?;
        }
        Ok(out)
    }

    fn string(&self, name: &str, x: &Value) -> Result<String> {
        x.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.err(format!("\"{name}\" must be a string, not {}", json_kind(x))))
    }
}

pub(super) fn parse_config<const D: usize>(key: &str, v: &Value, transposed: bool) -> Result<ModuleConfig<D>> {
    let f = Fields { key, v };
    let obj = v.as_object().ok_or_else(|| f.err("must be a JSON object".into()))?;
    // Every field must be known: a misspelt one would otherwise be ignored silently.
    for name in obj.keys() {
        if name == "output_padding" && !transposed {
            return Err(f.err("unknown field \"output_padding\": it is only valid for transposed convolutions".into()));
        }
        if !FIELDS.contains(&name.as_str()) {
            return Err(f.err(format!(
                "unknown field {}; the nearest known field is \"{}\"",
                Quoted(name),
                nearest_field(name, transposed)
            )));
        }
    }
    let type_name = module_type(key, v)?;
    let mut o = ConvOptions::<D>::new().kernel_size(f.dims("kernel_size", f.required("kernel_size")?)?);
    if let Some(s) = v.get("stride") {
        o.stride = f.dims("stride", s)?;
    }
    if let Some(d) = v.get("dilation") {
        o.dilation = f.dims("dilation", d)?;
    }
    if let Some(p) = v.get("padding") {
        o.padding = match p.as_str() {
            Some("same") => Padding::Same,
            Some("valid") => Padding::Valid,
            Some(other) => {
                return Err(f.err(format!(
                    "\"padding\" {} must be \"same\", \"valid\", an integer or a list of {D}",
                    Quoted(other)
                )))
            }
            None => Padding::Explicit(f.dims("padding", p)?),
        };
    }
    if transposed {
        if let Some(op) = v.get("output_padding") {
            o.output_padding = f.dims("output_padding", op)?;
        }
    }
    if let Some(g) = v.get("groups") {
        o.groups = f.uint_of("groups", g)?;
    }
    let bias = match v.get("bias") {
        Some(b) => b.as_bool().ok_or_else(|| f.err(format!("\"bias\" must be true or false, not {}", json_kind(b))))?,
        None => true,
    };
    if let Some(m) = v.get("padding_mode") {
        let m = f.string("padding_mode", m)?;
        o.padding_mode = m.parse::<PaddingMode>().map_err(|e| f.err(e.to_string()))?;
    }
    Ok(ModuleConfig {
        type_name,
        in_channels: f.uint("in_channels")?,
        out_channels: f.uint("out_channels")?,
        options: o,
        bias,
    })
}

pub(super) fn padding_json<const D: usize>(p: &Padding<D>) -> Value {
    match p {
        Padding::Explicit(v) => json!(v.to_vec()),
        Padding::Same => json!("same"),
        Padding::Valid => json!("valid"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_fields_by_edit_distance() {
        assert_eq!(edit_distance("paddding", "padding"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(nearest_field("paddding", false), "padding");
        assert_eq!(nearest_field("outputpadding", false), "padding");
        assert_eq!(nearest_field("outputpadding", true), "output_padding");
        assert_eq!(nearest_field(&"x".repeat(1 << 20), true), "type");
    }
}
