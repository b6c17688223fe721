//! The crate's single error type.
//!
//! Every fallible public function returns [`Result<T>`]. Each variant names the offending value and
//! the rule it broke, so that the `Display` text alone tells a user what to fix.
//!
//! Messages are one line of at most [`MESSAGE_MAX`] bytes, whatever the input: values a user
//! supplied (keys, prefixes, file names, JSON text) are quoted shortened (the first characters,
//! then `… (N bytes)`), lists show at most five names and then `… and N more`, shapes at most
//! eight dimensions, and control characters are escaped. The helpers that do it ([`Quoted`],
//! [`Cut`], [`Names`], [`Dims`], [`ShownPath`]; public, so that a front end can shorten its own
//! messages the same way) are used by every variant's `Display`, and the whole
//! message passes through a writer that keeps it on one line and cuts it at [`MESSAGE_MAX`].

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

/// Convenience alias used by every fallible function of the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Longest `Display` text of an [`Error`], in bytes (longer messages end in `…`).
pub const MESSAGE_MAX: usize = 480;
/// A quoted value up to this many bytes is shown whole.
const QUOTE_MAX: usize = 80;
/// Characters of a longer quoted value that are shown.
const QUOTE_HEAD: usize = 60;
/// Names a list shows before `… and N more`.
const LIST_MAX: usize = 5;
/// Dimensions a shape shows before `…`.
const DIMS_MAX: usize = 8;

/// Everything that can go wrong in qconv.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    // ---- quantization parameters -------------------------------------------------------------
    /// The (qscheme, dtype) pair is not one PyTorch's reference modules accept.
    UnsupportedQuantization {
        /// The qscheme, as PyTorch spells it.
        qscheme: String,
        /// The quantized dtype, as PyTorch spells it.
        dtype: String,
        /// Why the pair is rejected.
        rule: &'static str,
    },
    /// A scale or zero-point tensor has the wrong number of dimensions or elements.
    QParamShape {
        /// `"weight_scale"` or `"weight_zero_point"`.
        param: &'static str,
        /// The shape that was given.
        shape: Vec<usize>,
        /// What was expected.
        rule: String,
    },
    /// A per-channel axis does not index a dimension of the weight.
    AxisOutOfRange {
        /// The axis that was given.
        axis: i64,
        /// Number of dimensions of the weight.
        ndim: usize,
    },
    /// The number of per-channel scales differs from the weight's size along the axis.
    ChannelMismatch {
        /// The per-channel axis.
        axis: usize,
        /// The weight's size along `axis`.
        expected: usize,
        /// The number of scales (or zero points) given.
        got: usize,
    },
    /// An integer zero point lies outside the range of the quantized dtype.
    ZeroPointOutOfRange {
        /// The offending zero point.
        zero_point: i64,
        /// The quantized dtype.
        dtype: String,
        /// Smallest valid value.
        min: i64,
        /// Largest valid value.
        max: i64,
    },
    /// A scale is NaN or infinite.
    NonFiniteScale {
        /// The offending scale.
        scale: f64,
        /// Its channel (0 for per-tensor).
        channel: usize,
    },
    /// A float zero point is NaN or infinite.
    NonFiniteZeroPoint {
        /// The offending zero point.
        zero_point: f64,
        /// Its channel.
        channel: usize,
    },
    /// `quant_min`/`quant_max` are not a valid sub-range of the dtype.
    QuantRange {
        /// Requested minimum (`None`: not given).
        quant_min: Option<i64>,
        /// Requested maximum (`None`: not given).
        quant_max: Option<i64>,
        /// The quantized dtype.
        dtype: String,
        /// What is wrong.
        rule: String,
    },
    /// A weight element is NaN or infinite, so it cannot be quantized.
    NonFiniteWeight {
        /// Flat index of the element.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// An operation needs quantization parameters that the module does not have.
    NotQuantized(String),

    // ---- convolution configuration and shapes ------------------------------------------------
    /// A convolution hyper-parameter is invalid.
    InvalidConfig {
        /// Name of the hyper-parameter (`"groups"`, `"stride"`, ...).
        param: &'static str,
        /// The value that was given, printed.
        value: String,
        /// The rule it breaks.
        rule: String,
    },
    /// A tensor's shape does not fit the operation.
    Shape {
        /// Which tensor (`"input"`, `"weight"`, `"bias"`, ...).
        what: &'static str,
        /// Its shape.
        shape: Vec<usize>,
        /// The rule it breaks.
        rule: String,
    },
    /// A tensor's dtype does not fit the operation.
    DType {
        /// Which tensor.
        what: &'static str,
        /// Its dtype.
        got: String,
        /// The rule it breaks.
        rule: String,
    },
    /// A requested transposed-convolution output size cannot be produced.
    OutputSize {
        /// The requested spatial size.
        requested: Vec<usize>,
        /// Smallest valid size per dimension.
        min: Vec<usize>,
        /// Largest valid size per dimension.
        max: Vec<usize>,
        /// The input's spatial size.
        input: Vec<usize>,
    },
    /// A size computation overflowed `usize`.
    Overflow(String),
    /// A buffer could not be allocated: the allocator refused `bytes` bytes (or the size does not
    /// fit the address space). Nothing was changed.
    OutOfMemory {
        /// What the buffer was for (`"the padded input copy"`, `"tensor \"x\" of m.safetensors"`, ...).
        what: String,
        /// Bytes requested.
        bytes: usize,
    },

    // ---- devices -------------------------------------------------------------------------------
    /// CUDA was asked for but cannot be used here.
    CudaUnavailable {
        /// The requested ordinal.
        ordinal: usize,
        /// Why (driver library missing, no device, context creation failed, ...).
        reason: String,
    },
    /// A CUDA driver or NVRTC call failed.
    Cuda {
        /// The call that failed.
        call: &'static str,
        /// The error code and text.
        message: String,
    },
    /// The operation is not available on this device.
    Unsupported {
        /// What was attempted.
        op: String,
        /// The device.
        device: String,
        /// Why not.
        reason: String,
    },
    /// A string could not be parsed (device names, dtypes, qschemes, padding modes, ...).
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// The text given.
        value: String,
        /// What would have been accepted.
        expected: String,
    },

    // ---- state dicts and files -----------------------------------------------------------------
    /// Required state-dict keys are missing and/or unknown keys are present.
    StateDictKeys {
        /// The module prefix.
        prefix: String,
        /// Keys the module needs that the file lacks.
        missing: Vec<String>,
        /// Keys under the prefix the module does not know.
        unexpected: Vec<String>,
    },
    /// A state-dict entry has a bad value.
    StateDictValue {
        /// The full key.
        key: String,
        /// What is wrong with it.
        rule: String,
    },
    /// The safetensors container itself is malformed (bytes given in memory).
    SafeTensors(String),
    /// A safetensors file is malformed or truncated: its header breaks a rule of the format, or
    /// the file ends before a byte range its header declares.
    SafeTensorsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        rule: String,
    },
    /// A model file holds no module, or several while the caller did not choose one by prefix.
    ModuleChoice {
        /// The file.
        path: PathBuf,
        /// The prefixes of the modules it holds (sorted; empty: none).
        prefixes: Vec<String>,
    },
    /// Reading or writing a file failed.
    Io {
        /// `"reading"`, `"writing"`, ...
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },

    // ---- CUDA kernel compilation (appended) ----------------------------------------------------
    /// NVRTC rejected a kernel source; `log` is the compiler's output.
    KernelCompile {
        /// The kernel source file (e.g. `conv.cu`).
        kernel: String,
        /// The target architecture (e.g. `sm_90`).
        arch: String,
        /// The program log (compiler errors and warnings).
        log: String,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidConfig`].
    pub(crate) fn config(param: &'static str, value: impl fmt::Display, rule: impl Into<String>) -> Self {
        Error::InvalidConfig { param, value: value.to_string(), rule: rule.into() }
    }

    /// Shorthand for [`Error::Shape`].
    pub(crate) fn shape(what: &'static str, shape: &[usize], rule: impl Into<String>) -> Self {
        Error::Shape { what, shape: shape.to_vec(), rule: rule.into() }
    }

    /// Shorthand for [`Error::OutOfMemory`] for `n` elements of `T`.
    pub(crate) fn oom<T>(what: impl Into<String>, n: usize) -> Self {
        Error::OutOfMemory { what: what.into(), bytes: n.saturating_mul(std::mem::size_of::<T>()) }
    }

    /// Shorthand for [`Error::Io`].
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        Error::Io { op, path: path.to_path_buf(), source }
    }

    /// The message, unbounded: [`Display`](fmt::Display) passes it through [`OneLine`].
    fn write_raw(&self, f: &mut dyn fmt::Write) -> fmt::Result {
        use Error as E;
        match self {
            E::UnsupportedQuantization { qscheme, dtype, rule } => {
                write!(f, "unsupported weight dtype and qscheme: {dtype}, {qscheme} ({rule})")
            }
            E::QParamShape { param, shape, rule } => write!(f, "{param} has shape {}, but {rule}", Dims(shape)),
            E::AxisOutOfRange { axis, ndim } => {
                write!(f, "per-channel axis {axis} is out of range for a {ndim}-d weight (expected 0 <= axis < {ndim})")
            }
            E::ChannelMismatch { axis, expected, got } => write!(
                f,
                "length of scales must equal the weight's size along axis {axis}: expected {expected}, got {got}"
            ),
            E::ZeroPointOutOfRange { zero_point, dtype, min, max } => {
                write!(f, "zero point {zero_point} is outside the range [{min}, {max}] of {dtype}")
            }
            E::NonFiniteScale { scale, channel } => {
                write!(f, "scale {scale} (channel {channel}) is not finite; scales must be finite numbers")
            }
            E::NonFiniteZeroPoint { zero_point, channel } => {
                write!(f, "zero point {zero_point} (channel {channel}) is not finite")
            }
            E::QuantRange { quant_min, quant_max, dtype, rule } => {
                let show = |v: &Option<i64>| v.map_or_else(|| "unset".to_string(), |v| v.to_string());
                write!(f, "quant range [{}, {}] is invalid for {dtype}: {rule}", show(quant_min), show(quant_max))
            }
            E::NonFiniteWeight { index, value } => {
                write!(f, "weight element {index} is {value}: weights must be finite to be quantized")
            }
            E::NotQuantized(msg) => f.write_str(msg),
            E::InvalidConfig { param, value, rule } => write!(f, "invalid {param} = {}: {rule}", Cut(value)),
            E::Shape { what, shape, rule } => write!(f, "{what} has shape {}, but {rule}", Dims(shape)),
            E::DType { what, got, rule } => write!(f, "{what} has dtype {got}, but {rule}"),
            E::OutputSize { requested, min, max, input } => write!(
                f,
                "requested an output size of {}, but valid sizes range from {} to {} (for an input of {})",
                Dims(requested),
                Dims(min),
                Dims(max),
                Dims(input)
            ),
            E::Overflow(what) => write!(f, "size overflow: {what}"),
            E::OutOfMemory { what, bytes } => {
                write!(f, "out of memory: cannot allocate {bytes} bytes for {what}")
            }
            E::CudaUnavailable { ordinal, reason } => write!(f, "CUDA device {ordinal} is unavailable: {reason}"),
            E::Cuda { call, message } => write!(f, "CUDA error in {call}: {message}"),
            E::Unsupported { op, device, reason } => write!(f, "{op} is not supported on {device}: {reason}"),
            E::Parse { what, value, expected } => {
                write!(f, "cannot parse {what} from {}: expected {expected}", Quoted(value))
            }
            E::StateDictKeys { prefix, missing, unexpected } => write!(
                f,
                "state dict for prefix {} does not match the module: missing keys {}, unexpected keys {}",
                Quoted(prefix),
                Names(missing),
                Names(unexpected)
            ),
            E::StateDictValue { key, rule } => write!(f, "state dict entry {}: {rule}", Quoted(key)),
            E::SafeTensors(rule) => write!(f, "malformed safetensors data: {rule}"),
            E::SafeTensorsFile { path, rule } => write!(f, "malformed safetensors file {}: {rule}", ShownPath(path)),
            E::ModuleChoice { path, prefixes } => match prefixes.len() {
                0 => write!(f, "{} holds no module (no metadata key ends in \"module\")", ShownPath(path)),
                n => write!(f, "{} holds {n} modules; choose one by its prefix: {}", ShownPath(path), Names(prefixes)),
            },
            E::Io { op, path, source } => write!(f, "{op} {}: {source}", ShownPath(path)),
            E::KernelCompile { kernel, arch, log } => {
                write!(f, "NVRTC could not compile {kernel} for {arch}: {}", log.trim())
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut w = OneLine { out: f, written: 0, cut: false };
        self.write_raw(&mut w)?;
        w.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<safetensors::SafeTensorError> for Error {
    fn from(e: safetensors::SafeTensorError) -> Self {
        Error::SafeTensors(e.to_string())
    }
}

/// A writer that keeps a message on one line (line breaks become ` | `, other control
/// characters `\u{..}` escapes) and cuts it at [`MESSAGE_MAX`] bytes with `…`. It allocates
/// nothing, so an out-of-memory error can still be shown.
struct OneLine<'a, 'b> {
    out: &'a mut fmt::Formatter<'b>,
    written: usize,
    cut: bool,
}

impl OneLine<'_, '_> {
    fn put(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Ok(());
        }
        // Room for the `…` (3 bytes) that marks a cut.
        if self.written + s.len() > MESSAGE_MAX - 3 {
            self.cut = true;
            return self.out.write_str("…");
        }
        self.written += s.len();
        self.out.write_str(s)
    }

    fn finish(self) -> fmt::Result {
        Ok(())
    }
}

impl fmt::Write for OneLine<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(i) = rest.find(|c: char| c.is_control()) {
            let (head, tail) = rest.split_at(i);
            // Cut the plain part at a character boundary that still fits.
            self.put_plain(head)?;
            let c = tail.chars().next().expect("found a control character");
            let mut buf = [0u8; 16];
            let esc = match c {
                '\n' | '\r' => " | ",
                '\t' => " ",
                _ => escape_char(c, &mut buf),
            };
            self.put(esc)?;
            rest = &tail[c.len_utf8()..];
        }
        self.put_plain(rest)
    }
}

impl OneLine<'_, '_> {
    /// Writes text without control characters, as much as fits (whole characters).
    fn put_plain(&mut self, s: &str) -> fmt::Result {
        if self.cut || s.is_empty() {
            return Ok(());
        }
        let room = (MESSAGE_MAX - 3).saturating_sub(self.written);
        if s.len() <= room {
            return self.put(s);
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.put(&s[..end])?;
        self.cut = true;
        self.out.write_str("…")
    }
}

/// `\u{XX}` for a control character, in `buf`.
fn escape_char(c: char, buf: &mut [u8; 16]) -> &str {
    let mut n = 0;
    for b in c.escape_unicode().map(|c| c as u8) {
        buf[n] = b;
        n += 1;
    }
    std::str::from_utf8(&buf[..n]).unwrap_or("?")
}

/// A user-supplied value in quotes (`Debug` escapes); longer than 80 bytes, shortened to its first
/// 60 characters and its length: `"layer1.0.conv1.…" (1048576 bytes)`.
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.len() <= QUOTE_MAX {
            return write!(f, "{s:?}");
        }
        let end = s.char_indices().nth(QUOTE_HEAD).map_or(s.len(), |(i, _)| i);
        write!(f, "\"{}…\" ({} bytes)", s[..end].escape_debug(), s.len())
    }
}

/// A user-supplied value shown unquoted, shortened like [`Quoted`].
pub struct Cut<'a>(pub &'a str);

impl fmt::Display for Cut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.len() <= QUOTE_MAX {
            return f.write_str(s);
        }
        let end = s.char_indices().nth(QUOTE_HEAD).map_or(s.len(), |(i, _)| i);
        write!(f, "{}… ({} bytes)", &s[..end], s.len())
    }
}

/// A list of names: at most 5, each [`Quoted`], then `… and N more`.
pub struct Names<'a, S: AsRef<str> = String>(pub &'a [S]);

impl<S: AsRef<str>> fmt::Display for Names<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('[')?;
        for (i, s) in self.0.iter().take(LIST_MAX).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", Quoted(s.as_ref()))?;
        }
        if self.0.len() > LIST_MAX {
            write!(f, ", … and {} more", self.0.len() - LIST_MAX)?;
        }
        f.write_char(']')
    }
}

/// A shape: at most 8 dimensions, then `… (N dims)`.
pub struct Dims<'a>(pub &'a [usize]);

impl fmt::Display for Dims<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() <= DIMS_MAX {
            return write!(f, "{:?}", self.0);
        }
        f.write_char('[')?;
        for d in &self.0[..DIMS_MAX] {
            write!(f, "{d}, ")?;
        }
        write!(f, "… ({} dims)]", self.0.len())
    }
}

/// A path as the user typed it: bytes that are not UTF-8 as `\xNN`, control characters escaped,
/// and a long path shortened to its start and its end (the file name).
pub struct ShownPath<'a>(pub &'a Path);

impl fmt::Display for ShownPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0.as_os_str().as_encoded_bytes();
        let show = |f: &mut fmt::Formatter<'_>, b: &[u8]| -> fmt::Result {
            for chunk in b.utf8_chunks() {
                for c in chunk.valid().chars() {
                    if c.is_control() {
                        write!(f, "{}", c.escape_default())?;
                    } else {
                        f.write_char(c)?;
                    }
                }
                for x in chunk.invalid() {
                    write!(f, "\\x{x:02x}")?;
                }
            }
            Ok(())
        };
        if bytes.len() <= 2 * QUOTE_MAX {
            return show(f, bytes);
        }
        // Start and end, cut at UTF-8 boundaries where the bytes are UTF-8.
        let mut a = QUOTE_HEAD;
        while a > 0 && (bytes[a] & 0xC0) == 0x80 {
            a -= 1;
        }
        let mut b = bytes.len() - QUOTE_HEAD;
        while b < bytes.len() && (bytes[b] & 0xC0) == 0x80 {
            b += 1;
        }
        show(f, &bytes[..a])?;
        f.write_str("…")?;
        show(f, &bytes[b..])?;
        write!(f, " ({} bytes)", bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_and_lists_are_shortened() {
        let prefix = "p".repeat(1 << 20);
        let names: Vec<String> = (0..100_000).map(|i| format!("m{i}.module")).collect();
        let e = Error::StateDictKeys { prefix: prefix.clone(), missing: names.clone(), unexpected: names };
        let s = e.to_string();
        assert!(s.len() <= MESSAGE_MAX, "{} bytes", s.len());
        assert!(s.contains("(1048576 bytes)"), "{s}");
        assert!(s.contains("… and 99995 more"), "{s}");
        assert!(!s.contains('\n'));
    }

    #[test]
    fn messages_stay_on_one_line_and_under_the_cap() {
        let e = Error::StateDictValue { key: "a\nb".into(), rule: format!("x\ny\r\u{7}{}", "é".repeat(1000)) };
        let s = e.to_string();
        assert!(!s.chars().any(|c| c.is_control()), "{s:?}");
        assert!(s.len() <= MESSAGE_MAX, "{}", s.len());
        assert!(s.ends_with('…'), "{s}");
        let e =
            Error::KernelCompile { kernel: "k.cu".into(), arch: "sm_90".into(), log: "k.cu(1): error\nmore\n".into() };
        assert_eq!(e.to_string(), "NVRTC could not compile k.cu for sm_90: k.cu(1): error | more");
    }

    #[test]
    fn paths_are_escaped_and_shortened() {
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"m\xff\n.st"));
        assert_eq!(ShownPath(p).to_string(), "m\\xff\\n.st");
        let long = format!("/{}/{}.safetensors", "d".repeat(300), "n".repeat(250));
        let s = ShownPath(Path::new(&long)).to_string();
        assert!(s.len() < 200 && s.ends_with(&format!("{}.safetensors ({} bytes)", "n".repeat(48), long.len())), "{s}");
    }

    #[test]
    fn a_missing_quant_bound_is_shown_as_unset() {
        let e =
            Error::QuantRange { quant_min: Some(-128), quant_max: None, dtype: "torch.qint8".into(), rule: "r".into() };
        assert_eq!(e.to_string(), "quant range [-128, unset] is invalid for torch.qint8: r");
    }
}
