//! Dumps the PTX of every NVRTC program, and compares two dumps entry point by entry point: the
//! check that a refactor of `cuda/` (or of the program list in `src/cuda/kernels.rs`) leaves the
//! generated code unchanged. Needs libnvrtc on the library path; no GPU.
//!
//! ```text
//! cargo run --release --example ptx_dump -- dump DIR [ARCH ...] [--only PREFIX]   # default: sm_80 sm_90 sm_90a
//! cargo run --release --example ptx_dump -- cubin DIR [ARCH ...] [--only PREFIX]  # the CUBINs
//! cargo run --release --example ptx_dump -- compare OLD_DIR NEW_DIR
//! ```
//!
//! `dump` writes `DIR/<program>-<arch>.ptx` for every program the architecture compiles
//! (`KernelSource::for_arch`: `sm_90a` takes the Hopper program only), or those
//! whose short name starts with `PREFIX`, compiled with the options the runtime uses. `compare` splits every file of both directories into its
//! functions (`.entry` and `.func`, keyed by architecture and name) and module-scope declarations
//! (`.global`, `.shared`, `.const`, `.extern`, keyed by symbol), so that programs may be split or
//! merged between the two dumps (the one normalisation: basic-block labels lose the function's
//! position in its program, `$L__BB12_3` → `$L__BB#_3`): it prints one line per entry point (identical, changed with the
//! first differing line, or present on one side only) and exits with status 1 unless every entry
//! point and declaration is identical. The header lines (`.version`, `.target`, compiler
//! comments) are compared per architecture as well.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use qconv::cuda::kernels::KernelSource;
use qconv::cuda::nvrtc::{self, Arch};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("dump") if args.len() >= 2 => dump(Path::new(&args[1]), &args[2..], false),
        Some("cubin") if args.len() >= 2 => dump(Path::new(&args[1]), &args[2..], true),
        Some("compare") if args.len() == 3 => compare(Path::new(&args[1]), Path::new(&args[2])),
        _ => {
            eprintln!("usage: ptx_dump dump|cubin DIR [ARCH ...] [--only PREFIX] | ptx_dump compare OLD_DIR NEW_DIR");
            2
        }
    };
    std::process::exit(code);
}

fn dump(dir: &Path, args: &[String], cubin: bool) -> i32 {
    // `--only PREFIX`: the programs whose short name starts with PREFIX.
    let (archs, only) = match args.iter().position(|a| a == "--only") {
        Some(i) => (&args[..i], args.get(i + 1).map(String::as_str)),
        None => (args, None),
    };
    let archs: Vec<Arch> = if archs.is_empty() {
        vec![Arch::new(8, 0), Arch::new(9, 0), Arch::SM90A]
    } else {
        match archs.iter().map(|a| a.parse::<Arch>()).collect::<qconv::Result<Vec<_>>>() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("{e}");
                return 2;
            }
        }
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return 1;
    }
    let mut failures = 0;
    for arch in &archs {
        for source in KernelSource::for_arch(*arch).filter(|s| only.is_none_or(|o| s.name().starts_with(o))) {
            let path = dir.join(format!("{}-{arch}.{}", source.name(), if cubin { "cubin" } else { "ptx" }));
            let bytes = if cubin {
                nvrtc::compile(source, *arch, &[]).map(|k| {
                    // ptxas' report, one line per entry point, beside the file.
                    for r in &k.resources {
                        println!(
                            "{} {arch} regs {} spill {}/{} stack {} smem {}",
                            r.name, r.registers, r.spill_stores, r.spill_loads, r.stack_frame, r.shared_bytes
                        );
                    }
                    k.cubin
                })
            } else {
                nvrtc::compile_ptx(source, *arch, &[]).map(String::into_bytes)
            };
            match bytes.map(|b| std::fs::write(&path, b)) {
                Ok(Ok(())) => println!("{}", path.display()),
                Ok(Err(e)) => {
                    eprintln!("{}: {e}", path.display());
                    failures += 1;
                }
                Err(e) => {
                    eprintln!("{source} for {arch}: {e}");
                    failures += 1;
                }
            }
        }
    }
    i32::from(failures > 0)
}

/// What one dump holds, per architecture: functions, module-scope declarations and header lines.
#[derive(Default)]
struct Dump {
    /// (arch, function name) → (is an entry point, text).
    functions: BTreeMap<(String, String), (bool, String)>,
    /// (arch, symbol) → declaration text.
    declarations: BTreeMap<(String, String), String>,
    /// arch → the header lines (a set: programs may be split or merged).
    headers: BTreeMap<String, BTreeSet<String>>,
}

fn read_dump(dir: &Path) -> std::io::Result<Dump> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ptx"))
        .collect();
    files.sort();
    let mut d = Dump::default();
    for f in files {
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let arch = stem.rsplit_once('-').map_or(String::new(), |(_, a)| a.to_string());
        let text = std::fs::read_to_string(&f)?;
        split_ptx(&text, &arch, &mut d);
    }
    Ok(d)
}

/// The identifier a function header or declaration names: the token before its parameter list
/// (functions) or before `[`, `=` or `;` (variables).
fn symbol(line: &str, function: bool) -> String {
    let l = line.trim();
    if function {
        // `.visible .entry NAME(` or `.func (.param .b32 func_retval0) NAME(`.
        let body = match l.find(')') {
            Some(i) if l.contains("func_retval") => &l[i + 1..],
            _ => l,
        };
        let head = body.split('(').next().unwrap_or(body);
        return head.split_whitespace().last().unwrap_or_default().to_string();
    }
    let head = l.split(['[', '=', ';']).next().unwrap_or(l);
    head.split_whitespace().last().unwrap_or_default().to_string()
}

/// `text` with the function number of its basic-block labels replaced by `#` (`$L__BB12_3` →
/// `$L__BB#_3`): ptxas numbers them by the function's position in its program, which changes
/// when programs are split or merged.
fn normalise_labels(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("$L__BB") {
        out.push_str(&rest[..i + 6]);
        rest = &rest[i + 6..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with('_') {
            out.push('#');
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

fn split_ptx(text: &str, arch: &str, d: &mut Dump) {
    let text = normalise_labels(text);
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    let header = d.headers.entry(arch.to_string()).or_default();
    while i < lines.len() {
        let l = lines[i];
        let is_fn =
            [".visible .entry", ".entry", ".visible .func", ".func", ".weak .func"].iter().any(|p| l.starts_with(p));
        let is_decl = [".global", ".shared", ".const", ".extern", ".visible .global", ".visible .shared"]
            .iter()
            .any(|p| l.starts_with(p));
        if is_fn {
            let name = symbol(l, true);
            let start = i;
            // A definition ends with the `}` in column 0 that closes its body (opened by a `{` in
            // column 0); a prototype (no body) with its first `;`.
            let mut body = false;
            while i < lines.len() {
                body |= lines[i] == "{";
                if (body && lines[i] == "}") || (!body && lines[i].trim_end().ends_with(';')) {
                    break;
                }
                i += 1;
            }
            let body = lines[start..=i.min(lines.len() - 1)].join("\n");
            d.functions.insert((arch.to_string(), name), (l.contains(".entry"), body));
        } else if is_decl {
            let start = i;
            while i < lines.len() && !lines[i].trim_end().ends_with(';') {
                i += 1;
            }
            let body = lines[start..=i.min(lines.len() - 1)].join("\n");
            d.declarations.insert((arch.to_string(), symbol(&body, false)), body);
        } else if !l.trim().is_empty() && !l.trim_start().starts_with("// .globl") {
            header.insert(l.to_string());
        }
        i += 1;
    }
}

fn first_difference(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let n = la.iter().zip(&lb).take_while(|(x, y)| x == y).count();
    let changed = la.len().max(lb.len()) - la.iter().zip(&lb).filter(|(x, y)| x == y).count();
    format!(
        "{changed} of {} lines differ; first at line {}: {:?} vs {:?}",
        la.len().max(lb.len()),
        n + 1,
        la.get(n).copied().unwrap_or("<end>"),
        lb.get(n).copied().unwrap_or("<end>")
    )
}

fn compare(old: &Path, new: &Path) -> i32 {
    let (a, b) = match (read_dump(old), read_dump(new)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let mut differences = 0;
    let mut identical = 0;
    let keys: BTreeSet<_> = a.functions.keys().chain(b.functions.keys()).cloned().collect();
    for key in keys {
        let (arch, name) = &key;
        match (a.functions.get(&key), b.functions.get(&key)) {
            (Some(x), Some(y)) if x == y => {
                identical += 1;
                println!("identical  {arch} {name}");
            }
            (Some(x), Some(y)) => {
                differences += 1;
                println!("CHANGED    {arch} {name}: {}", first_difference(&x.1, &y.1));
            }
            (Some(_), None) => {
                differences += 1;
                println!("REMOVED    {arch} {name}");
            }
            (None, _) => {
                differences += 1;
                println!("ADDED      {arch} {name}");
            }
        }
    }
    let keys: BTreeSet<_> = a.declarations.keys().chain(b.declarations.keys()).cloned().collect();
    for key in keys {
        if a.declarations.get(&key) != b.declarations.get(&key) {
            differences += 1;
            println!(
                "DECLARATION {} {}: {:?} vs {:?}",
                key.0,
                key.1,
                a.declarations.get(&key).map(String::as_str).unwrap_or("<none>"),
                b.declarations.get(&key).map(String::as_str).unwrap_or("<none>")
            );
        }
    }
    let none = BTreeSet::new();
    for arch in a.headers.keys().chain(b.headers.keys()).collect::<BTreeSet<_>>() {
        let (x, y) = (a.headers.get(arch).unwrap_or(&none), b.headers.get(arch).unwrap_or(&none));
        for line in x.difference(y) {
            differences += 1;
            println!("HEADER     {arch}: only in {}: {line}", old.display());
        }
        for line in y.difference(x) {
            differences += 1;
            println!("HEADER     {arch}: only in {}: {line}", new.display());
        }
    }
    println!(
        "{identical} functions identical, {differences} differences ({} declarations compared)",
        a.declarations.len().max(b.declarations.len())
    );
    i32::from(differences > 0)
}
