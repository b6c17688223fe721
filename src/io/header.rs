//! The safetensors header: its 8-byte length, the JSON it holds, and the rules a header must keep
//! before any tensor byte is read.
//!
//! A file is `[u64 little-endian n][n bytes of JSON][data]`. The JSON maps each tensor name to
//! `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets into the data) and may hold a
//! `"__metadata__"` map of strings. The header is refused when it is longer than
//! [`MAX_HEADER`] (safetensors' own limit), is not such a JSON object (unknown fields, a key
//! given twice, trailing bytes other than spaces), declares an unknown dtype, a shape of more
//! than [`MAX_DIMS`] dimensions, a byte size that is not `shape × dtype`, or byte ranges that do
//! not tile the data from offset 0 in order without gap or overlap. The header is parsed as it is
//! read (a zero-filled or random "header" fails at its first byte), never read whole first.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Longest header accepted, in bytes (safetensors' `MAX_HEADER_SIZE`).
pub const MAX_HEADER: u64 = 100_000_000;
/// Most dimensions a stored tensor may have.
pub const MAX_DIMS: usize = 64;

/// Element types a header may declare: safetensors' dtype names and their sizes in bits. qconv
/// reads the first eight into [`crate::io::StoredData`]; the others can be listed and skipped.
const DTYPES: [(&str, u64); 20] = [
    ("F32", 32),
    ("F64", 64),
    ("F16", 16),
    ("BF16", 16),
    ("I32", 32),
    ("I64", 64),
    ("I8", 8),
    ("U8", 8),
    ("BOOL", 8),
    ("I16", 16),
    ("U16", 16),
    ("U32", 32),
    ("U64", 64),
    ("F8_E5M2", 8),
    ("F8_E4M3", 8),
    ("F8_E8M0", 8),
    ("F6_E2M3", 6),
    ("F6_E3M2", 6),
    ("F4", 4),
    ("C64", 64),
];

/// One tensor as its header entry declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The safetensors dtype name (`"F32"`, `"I64"`, ...).
    pub dtype: &'static str,
    /// The shape.
    pub shape: Vec<usize>,
    /// Byte range `[begin, end)` in the data section (after the header).
    pub begin: u64,
    /// End of the byte range.
    pub end: u64,
}

/// A parsed and validated header.
#[derive(Debug, Default)]
pub(crate) struct Header {
    pub(crate) tensors: BTreeMap<String, TensorInfo>,
    pub(crate) metadata: BTreeMap<String, String>,
    /// Bytes of the data section the header declares (the end of the last range).
    pub(crate) data_len: u64,
}

/// Reads the 8-byte length and the header from `r` (positioned at the start of the file) and
/// validates it. `file_len`, when known, bounds the header length. Returns the header and its
/// length `n` (the data starts at `8 + n`). Errors are the rule broken, as text.
pub(crate) fn read_header(r: &mut dyn Read, file_len: Option<u64>) -> Result<(Header, u64), HeaderError> {
    let mut len = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match r.read(&mut len[got..]) {
            Ok(0) => {
                return Err(HeaderError::Rule(format!(
                    "it is {got} bytes long; a safetensors file starts with an 8-byte header length"
                )))
            }
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HeaderError::Io(e)),
        }
    }
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER {
        return Err(HeaderError::Rule(format!(
            "its header length {n} exceeds safetensors' limit of {MAX_HEADER} bytes"
        )));
    }
    if n < 2 {
        return Err(HeaderError::Rule(format!("its header length {n} is too short for a JSON object")));
    }
    if let Some(size) = file_len {
        if 8 + n > size {
            return Err(HeaderError::Rule(format!(
                "its header length {n} runs past the end of the file ({size} bytes)"
            )));
        }
    }
    let mut body = std::io::BufReader::with_capacity(16 * 1024, r.take(n));
    let mut de = serde_json::Deserializer::from_reader(&mut body);
    let parsed = RawHeader::deserialize(&mut de).and_then(|h| de.end().map(|()| h));
    let raw = match parsed {
        Ok(h) => h,
        Err(e) if e.is_io() => return Err(HeaderError::Io(std::io::Error::other(e.to_string()))),
        Err(e) => return Err(HeaderError::Rule(format!("its {n}-byte header is not a valid safetensors header: {e}"))),
    };
    // The JSON ended where the header length says (trailing spaces allowed): the whole `n` bytes
    // were consumed, unless the file ended first.
    if body.into_inner().limit() != 0 {
        return Err(HeaderError::Rule(format!("it ends inside its {n}-byte header")));
    }
    Ok((raw.validate()?, n))
}

/// Why a header was refused.
#[derive(Debug)]
pub(crate) enum HeaderError {
    /// Reading failed.
    Io(std::io::Error),
    /// A rule of the format is broken (text: "its header ...").
    Rule(String),
}

impl From<String> for HeaderError {
    fn from(s: String) -> Self {
        HeaderError::Rule(s)
    }
}

/// The header as written, before the rules on sizes and offsets.
struct RawHeader {
    tensors: Vec<(String, RawInfo)>,
    metadata: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInfo {
    dtype: String,
    shape: Shape,
    data_offsets: (u64, u64),
}

/// A shape of at most [`MAX_DIMS`] dimensions (refused while parsing, before any allocation).
struct Shape(Vec<usize>);

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a list of at most {MAX_DIMS} non-negative integers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                let mut v = Vec::new();
                while let Some(d) = seq.next_element::<usize>()? {
                    if v.len() == MAX_DIMS {
                        return Err(de::Error::custom(format!("a shape has more than {MAX_DIMS} dimensions")));
                    }
                    v.push(d);
                }
                Ok(Shape(v))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A string map whose keys must be unique.
struct UniqueMap(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for UniqueMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings to strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueMap, A::Error> {
                let mut m = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    if m.contains_key(&k) {
                        return Err(de::Error::custom(format!(
                            "metadata key {} is given twice",
                            crate::error::Quoted(&k)
                        )));
                    }
                    m.insert(k, v);
                }
                Ok(UniqueMap(m))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHeader;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of tensor entries and an optional \"__metadata__\" map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
                let mut tensors = Vec::new();
                let mut metadata: Option<BTreeMap<String, String>> = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "__metadata__" {
                        if metadata.is_some() {
                            return Err(de::Error::custom("\"__metadata__\" is given twice"));
                        }
                        metadata = Some(map.next_value::<Option<UniqueMap>>()?.map(|m| m.0).unwrap_or_default());
                    } else {
                        let info = map
                            .next_value::<RawInfo>()
                            .map_err(|e| de::Error::custom(format!("tensor {}: {e}", crate::error::Quoted(&key))))?;
                        tensors.push((key, info));
                    }
                }
                Ok(RawHeader { tensors, metadata: metadata.unwrap_or_default() })
            }
        }
        d.deserialize_map(V)
    }
}

impl RawHeader {
    /// Applies the rules on names, dtypes, sizes and offsets.
    fn validate(self) -> Result<Header, String> {
        let q = |s: &str| crate::error::Quoted(s).to_string();
        let mut tensors = BTreeMap::new();
        let mut ranges: Vec<(u64, u64, usize)> = Vec::with_capacity(self.tensors.len());
        for (i, (name, raw)) in self.tensors.into_iter().enumerate() {
            let Some(&(dtype, bits)) = DTYPES.iter().find(|(d, _)| *d == raw.dtype) else {
                return Err(format!("tensor {} has an unknown dtype {}", q(&name), q(&raw.dtype)));
            };
            let shape = raw.shape.0;
            let numel = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
            let bits_total = numel.and_then(|n| n.checked_mul(bits));
            let Some(bits_total) = bits_total.filter(|b| b % 8 == 0) else {
                return Err(format!(
                    "tensor {} has shape {} of {dtype}, whose byte size overflows or is not whole",
                    q(&name),
                    crate::error::Dims(&shape)
                ));
            };
            let (begin, end) = raw.data_offsets;
            if end < begin || end - begin != bits_total / 8 {
                return Err(format!(
                    "tensor {} declares bytes {begin}..{end}, but shape {} of {dtype} needs {} bytes",
                    q(&name),
                    crate::error::Dims(&shape),
                    bits_total / 8
                ));
            }
            if tensors.contains_key(&name) {
                return Err(format!("tensor {} is given twice", q(&name)));
            }
            ranges.push((begin, end, i));
            tensors.insert(name, TensorInfo { dtype, shape, begin, end });
        }
        // The ranges must tile the data: sorted by offset, each starts where the previous ends.
        ranges.sort_unstable();
        let mut at = 0u64;
        for &(begin, end, _) in &ranges {
            if begin != at {
                let what = if begin < at { "overlaps the previous tensor's bytes" } else { "leaves a gap before it" };
                let name = tensors.iter().find(|(_, t)| t.begin == begin && t.end == end).map(|(n, _)| n.as_str());
                return Err(format!(
                    "tensor {} at bytes {begin}..{end} {what} (the data so far ends at {at})",
                    q(name.unwrap_or("?"))
                ));
            }
            at = end;
        }
        Ok(Header { tensors, metadata: self.metadata, data_len: at })
    }
}

/// The header JSON for `entries` (name, dtype, shape, byte length) laid out in that order, and
/// `metadata`, padded with spaces to a multiple of 8 bytes.
pub(crate) fn header_json(entries: &[(&str, &str, &[usize], u64)], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    use serde_json::{Map, Value};
    let mut out = String::from("{");
    let mut first = true;
    let mut push = |out: &mut String, k: &str, v: &Value| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&Value::from(k).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    };
    if !metadata.is_empty() {
        let m: Map<String, Value> = metadata.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
        push(&mut out, "__metadata__", &Value::Object(m));
    }
    let mut at = 0u64;
    for &(name, dtype, shape, bytes) in entries {
        let v = serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [at, at + bytes] });
        push(&mut out, name, &v);
        at += bytes;
    }
    out.push('}');
    while out.len() % 8 != 0 {
        out.push(' ');
    }
    out.into_bytes()
}
