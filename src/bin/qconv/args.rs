//! Argument values, each parsed and bounded by clap before any work starts (a bad value is a
//! usage error, exit status 2). The bounds are documented in each option's `--help`.

use std::str::FromStr;

use qconv::Device;

/// `--device`: `auto`, `cpu`, `cuda` or `cuda:N` with N < [`MAX_ORDINAL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    /// CUDA device 0 when the probe finds it usable, else the CPU.
    Auto,
    /// This device.
    Device(Device),
}

/// Largest accepted CUDA ordinal plus one.
pub const MAX_ORDINAL: usize = 1024;

impl FromStr for DeviceArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(DeviceArg::Auto);
        }
        match s.parse::<Device>() {
            Ok(Device::Cuda(n)) if n >= MAX_ORDINAL => Err(format!("the CUDA ordinal must be below {MAX_ORDINAL}")),
            Ok(d) => Ok(DeviceArg::Device(d)),
            Err(_) => Err("expected auto, cpu, cuda or cuda:N".into()),
        }
    }
}

/// `--output-size`: 1 to 5 integers, each at most `i32::MAX`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSize(pub Vec<usize>);

impl FromStr for OutputSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let v = s
            .split(',')
            .map(|x| x.trim().parse::<usize>().ok().filter(|&n| n <= i32::MAX as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or("expected comma-separated integers from 0 to 2147483647, e.g. 14,8")?;
        if v.len() > 5 {
            return Err(format!("expected 1 to 5 sizes, got {}", v.len()));
        }
        Ok(OutputSize(v))
    }
}

/// `--batch`: 1 to [`MAX_BATCH`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch(pub usize);

/// Largest accepted `--batch`.
pub const MAX_BATCH: usize = 1024;

impl FromStr for Batch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<usize>() {
            Ok(n) if (1..=MAX_BATCH).contains(&n) => Ok(Batch(n)),
            _ => Err(format!("expected an integer from 1 to {MAX_BATCH}")),
        }
    }
}

/// `--min-time`: seconds, 0 to [`MAX_MIN_TIME`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MinTime(pub f64);

/// Largest accepted `--min-time`, in seconds.
pub const MAX_MIN_TIME: f64 = 3600.0;

impl FromStr for MinTime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<f64>() {
            Ok(t) if (0.0..=MAX_MIN_TIME).contains(&t) => Ok(MinTime(t)),
            _ => Err(format!("expected a number of seconds from 0 to {MAX_MIN_TIME}")),
        }
    }
}

/// `--case`: a case of the CPU suite, of the GPU suite, or `g_fq`.
pub fn bench_case(s: &str) -> Result<String, String> {
    let cpu = qconv::bench::CPU_SUITE.iter().map(|c| c.name);
    let gpu = qconv::bench::GPU_SUITE.iter().map(|(c, _)| c.name).chain(["g_fq"]);
    if cpu.clone().chain(gpu.clone()).any(|n| n == s) {
        return Ok(s.to_string());
    }
    Err(format!(
        "unknown case; CPU cases: {}; GPU cases: {}",
        cpu.collect::<Vec<_>>().join(", "),
        gpu.collect::<Vec<_>>().join(", ")
    ))
}

/// `--arch`: compilation targets `(major, minor, specific)`, each `sm_80` or newer; `specific`
/// for the architecture-specific `sm_90a` (Hopper's wgmma/TMA program), the only one accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchList(pub Vec<(u32, u32, bool)>);

impl FromStr for ArchList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for item in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            let (cc, specific) = parse_arch(item)?;
            if cc < (8, 0) {
                return Err(format!(
                    "{item} is older than sm_80: qconv's kernels need compute capability 8.0 (Ampere) or newer"
                ));
            }
            let target = (cc.0, cc.1, specific);
            if !out.contains(&target) {
                out.push(target);
            }
        }
        if out.is_empty() {
            return Err("expected one or more architectures, e.g. sm_80,sm_90".into());
        }
        Ok(ArchList(out))
    }
}

/// `sm_XY`, `compute_XY`, `XY` or `X.Y` (the last digit is the minor version), or `sm_90a`
/// (`90a`, `compute_90a`); returns the compute capability and whether the target is the
/// architecture-specific one.
fn parse_arch(item: &str) -> Result<((u32, u32), bool), String> {
    let bad = || format!("{item:?} is not an architecture (expected sm_XY, e.g. sm_80 or sm_90, or sm_90a)");
    if let Some((major, minor)) = item.split_once('.') {
        let cc = (major.parse::<u32>().map_err(|_| bad())?, minor.parse::<u32>().map_err(|_| bad())?);
        return if cc.0 > 0 && cc.1 <= 9 { Ok((cc, false)) } else { Err(bad()) };
    }
    let digits = item.strip_prefix("sm_").or_else(|| item.strip_prefix("compute_")).unwrap_or(item);
    if digits.ends_with(['a', 'f']) && digits.len() > 2 {
        let base = &digits[..digits.len() - 1];
        if digits == "90a" {
            return Ok(((9, 0), true));
        }
        return Err(format!(
            "{item}: the only architecture-specific target qconv has kernels for is sm_90a (compile for sm_{base}; its kernels run there)"
        ));
    }
    if digits.len() < 2 || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (major, minor) = digits.split_at(digits.len() - 1);
    let cc = (major.parse::<u32>().map_err(|_| bad())?, minor.parse::<u32>().map_err(|_| bad())?);
    if cc.0 == 0 {
        return Err(bad());
    }
    Ok((cc, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        assert!("0".parse::<Batch>().is_err());
        assert!("1025".parse::<Batch>().is_err());
        assert!("18446744073709551615".parse::<Batch>().is_err());
        assert_eq!("1024".parse::<Batch>(), Ok(Batch(1024)));
        assert!("5,a".parse::<OutputSize>().is_err());
        assert!("1,2,3,4,5,6".parse::<OutputSize>().is_err());
        assert!("2147483648".parse::<OutputSize>().is_err());
        assert_eq!("14, 8".parse::<OutputSize>(), Ok(OutputSize(vec![14, 8])));
        assert!("nan".parse::<MinTime>().is_err() && "-1".parse::<MinTime>().is_err());
        assert!("inf".parse::<MinTime>().is_err() && "3601".parse::<MinTime>().is_err());
        assert!("gpu".parse::<DeviceArg>().is_err() && "cuda:1024".parse::<DeviceArg>().is_err());
        assert_eq!("cuda:1".parse::<DeviceArg>(), Ok(DeviceArg::Device(Device::Cuda(1))));
        assert_eq!("auto".parse::<DeviceArg>(), Ok(DeviceArg::Auto));
    }

    #[test]
    fn architectures() {
        assert_eq!(
            "sm_80,90, 8.6,sm_80".parse::<ArchList>(),
            Ok(ArchList(vec![(8, 0, false), (9, 0, false), (8, 6, false)]))
        );
        assert_eq!("sm_120".parse::<ArchList>(), Ok(ArchList(vec![(12, 0, false)])));
        let old = "sm_75".parse::<ArchList>().unwrap_err();
        assert!(old.contains("older than sm_80"), "{old}");
        // sm_90a (Hopper's wgmma/TMA program) is its own target, beside sm_90.
        assert_eq!("sm_90,sm_90a,90a".parse::<ArchList>(), Ok(ArchList(vec![(9, 0, false), (9, 0, true)])));
        for other in ["sm_100a", "sm_80a", "sm_90f"] {
            let e = other.parse::<ArchList>().unwrap_err();
            assert!(e.contains("sm_90a"), "{e}");
        }
        assert!("foo".parse::<ArchList>().is_err() && "".parse::<ArchList>().is_err());
    }
}
