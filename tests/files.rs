//! The file layer under hostile and unlucky conditions (issue 13 items 1–5 and the "keep" list):
//! reads are bounded and read only what is needed, from regular files and pipes alike; writes
//! never destroy or hijack a device, a FIFO, a symbolic link's target or someone else's file,
//! and leave the old or the new output on every failure.
//!
//! Device nodes are made in temporary directories (`mknod`, as root; skipped otherwise) — never
//! the real `/dev/null`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qconv::io::{save_tensors, ModelFile, StateDict, StoredData, StoredTensor};
use qconv::{AnyConv, Conv2d, ConvOptions, Error, QuantDType, Tensor, WeightQParams};

fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("qconv-files-").tempdir().unwrap()
}

fn cstr(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn mkfifo(p: &Path) {
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(cstr(p).as_ptr(), 0o600) }, 0, "mkfifo {}", p.display());
}

/// `mknod p c major minor`; `false` when not permitted (not root).
fn mknod_char(p: &Path, major: u32, minor: u32) -> bool {
    // SAFETY: a valid NUL-terminated path; makedev has no preconditions.
    unsafe { libc::mknod(cstr(p).as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(major, minor)) == 0 }
}

/// A small per-channel qint8 Conv2d with bias.
fn conv(cin: usize, cout: usize, seed: f32) -> AnyConv {
    let n = cout * cin * 9;
    let w =
        Tensor::from_vec((0..n).map(|i| ((i as f32 * 0.37 + seed).sin()) * 0.5).collect(), &[cout, cin, 3, 3]).unwrap();
    let b = Tensor::from_vec((0..cout).map(|i| i as f32 * 0.01 - seed).collect(), &[cout]).unwrap();
    let qp = WeightQParams::per_channel_symmetric_from_weight(&w, 0, QuantDType::QInt8).unwrap();
    AnyConv::Conv2d(
        Conv2d::from_float(
            w,
            Some(b),
            qp,
            ConvOptions::new().kernel_size([3, 3]).padding(qconv::Padding::Explicit([1, 1])),
        )
        .unwrap(),
    )
}

/// A model file with a small module `a.` and a large one `b.` (whose bytes come after `a.`'s
/// when sorted by name: `b.weight` is the file's last F32 tensor).
fn two_module_file(dir: &Path) -> (PathBuf, AnyConv) {
    let a = conv(3, 4, 0.0);
    let b = conv(64, 64, 1.0);
    let mut sd = StateDict::new();
    a.write_state_dict(&mut sd, "a.");
    b.write_state_dict(&mut sd, "b.");
    let path = dir.join("model.safetensors");
    sd.save(&path).unwrap();
    (path, a)
}

fn input(c: usize) -> Tensor {
    Tensor::from_vec((0..2 * c * 5 * 5).map(|i| (i % 7) as f32 - 3.0).collect(), &[2, c, 5, 5]).unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec_f32().unwrap().iter().map(|v| v.to_bits()).collect()
}

fn one_line(e: &Error) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n') && s.len() <= qconv::error::MESSAGE_MAX, "not one short line: {s:?}");
    s
}

/// Files of `dir` other than `keep`, by name.
fn others(dir: &Path, keep: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    v.sort();
    v
}

// ---- 1. bounded reads ---------------------------------------------------------------------------

#[test]
fn dev_zero_and_dev_urandom_are_refused_at_once() {
    for dev in ["/dev/zero", "/dev/urandom"] {
        if !Path::new(dev).exists() {
            println!("skipped {dev}: not present");
            continue;
        }
        let t = Instant::now();
        let e = StateDict::load(dev).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2), "{dev} took {:?}", t.elapsed());
        assert!(matches!(e, Error::SafeTensorsFile { .. }), "{dev}: {e}");
        println!("{dev}: {}", one_line(&e));
        let e = AnyConv::from_file(dev, None).unwrap_err();
        assert!(matches!(e, Error::SafeTensorsFile { .. }), "{dev}: {e}");
    }
}

/// A reader that counts the bytes it hands out.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn a_huge_sparse_file_with_a_bad_header_is_refused_after_a_few_bytes() {
    let dir = tmpdir();
    let cases: [(&str, u64, &[u8], u64); 4] = [
        ("header length over the limit", 400 << 20, b"", 512 << 20),
        ("zero-filled header", 50 << 20, b"", 512 << 20),
        ("garbage after a brace", 50 << 20, b"{\"w\": [1, 2", 512 << 20),
        ("header length past the end of the file", 50 << 20, b"{", 4096),
    ];
    for (what, n, head, size) in cases {
        let path = dir.path().join("sparse.safetensors");
        let mut f = std::fs::File::create(&path).unwrap();
        f.set_len(size).unwrap();
        f.write_all(&n.to_le_bytes()).unwrap();
        f.write_all(head).unwrap();
        drop(f);
        let read = Arc::new(AtomicU64::new(0));
        let file = std::fs::File::open(&path).unwrap();
        let counting = Counting { inner: file, read: read.clone() };
        let t = Instant::now();
        let e = ModelFile::from_seekable(counting, size, &path).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2), "{what}: {:?}", t.elapsed());
        assert!(read.load(Ordering::Relaxed) <= 64 << 10, "{what}: read {} bytes", read.load(Ordering::Relaxed));
        assert!(matches!(e, Error::SafeTensorsFile { .. }), "{what}: {e}");
        println!("{what}: {}", one_line(&e));
        assert!(StateDict::load(&path).is_err());
    }
}

#[test]
fn header_rules_are_checked_before_any_tensor_byte() {
    let file = |header: &str, data: &[u8]| {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        b
    };
    let ok = file(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0, 0, 128, 63]);
    assert_eq!(StateDict::from_bytes(&ok).unwrap().tensors["a"].data, StoredData::F32(vec![1.0]));
    let bad = [
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"#,
            8,
            "overlap",
        ),
        (r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8, "gap"),
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, 4, "size"),
        (r#"{"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}}"#, 4, "dtype"),
        (r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}}"#, 4, "unknown field"),
        (
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            4,
            "twice",
        ),
        (r#"{"__metadata__":{"k":1}}"#, 0, "metadata value"),
        (r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}} x"#, 4, "trailing"),
        (r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 3, "truncated data"),
        (r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 5, "trailing data"),
    ];
    for (header, data_len, what) in bad {
        let e = StateDict::from_bytes(&file(header, &vec![0u8; data_len])).unwrap_err();
        assert!(matches!(e, Error::SafeTensors(_)), "{what}: {e}");
        println!("{what}: {}", one_line(&e));
    }
    let dims = format!(r#"{{"a":{{"dtype":"U8","shape":[{}],"data_offsets":[0,1]}}}}"#, vec!["1"; 65].join(","));
    let e = StateDict::from_bytes(&file(&dims, &[0])).unwrap_err();
    assert!(e.to_string().contains("more than 64 dimensions"), "{e}");
}

#[test]
fn models_and_inputs_load_from_a_fifo() {
    let dir = tmpdir();
    let (model, a) = two_module_file(dir.path());
    let bytes = std::fs::read(&model).unwrap();
    let fifo = dir.path().join("model.fifo");
    mkfifo(&fifo);
    for prefix in [Some("a."), None] {
        let writer = {
            let (fifo, bytes) = (fifo.clone(), bytes.clone());
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
                // The reader may stop early (an error, or only one module wanted): EPIPE is fine.
                let _ = f.write_all(&bytes);
            })
        };
        match prefix {
            Some(p) => {
                let m = AnyConv::from_file(&fifo, Some(p)).unwrap();
                assert_eq!(bits(&m.forward(&input(3)).unwrap()), bits(&a.forward(&input(3)).unwrap()));
            }
            None => {
                let e = AnyConv::from_file(&fifo, None).unwrap_err();
                assert!(matches!(&e, Error::ModuleChoice { prefixes, .. } if prefixes.len() == 2), "{e}");
            }
        }
        writer.join().unwrap();
    }
    // A whole state dict from a FIFO, and trailing bytes refused.
    for extra in [&b""[..], b"junk"] {
        let writer = {
            let (fifo, mut bytes) = (fifo.clone(), bytes.clone());
            bytes.extend_from_slice(extra);
            std::thread::spawn(move || {
                let _ = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap().write_all(&bytes);
            })
        };
        let r = StateDict::load(&fifo);
        writer.join().unwrap();
        if extra.is_empty() {
            assert_eq!(r.unwrap(), StateDict::load(&model).unwrap());
        } else {
            println!("trailing bytes: {}", one_line(&r.unwrap_err()));
        }
    }
}

// ---- 2. only what is needed -----------------------------------------------------------------------

#[test]
fn loading_one_module_reads_only_its_bytes() {
    let dir = tmpdir();
    let (model, a) = two_module_file(dir.path());
    let len = std::fs::metadata(&model).unwrap().len();
    let read = Arc::new(AtomicU64::new(0));
    let counting = Counting { inner: std::fs::File::open(&model).unwrap(), read: read.clone() };
    let mut f = ModelFile::from_seekable(counting, len, &model).unwrap();
    let after_header = read.load(Ordering::Relaxed);
    let a_bytes: u64 = f.tensors().iter().filter(|(k, _)| k.starts_with("a.")).map(|(_, t)| t.end - t.begin).sum();
    let m = AnyConv::from_model_file(&mut f, Some("a.")).unwrap();
    let total = read.load(Ordering::Relaxed);
    assert_eq!(total - after_header, a_bytes, "read {total} of {len} bytes for a module of {a_bytes}");
    assert!(total * 10 < len, "read {total} of {len} bytes");
    assert_eq!(bits(&m.forward(&input(3)).unwrap()), bits(&a.forward(&input(3)).unwrap()));
}

#[test]
fn a_module_loads_from_a_file_whose_other_tensors_are_garbage_or_cut_off() {
    let dir = tmpdir();
    let (model, a) = two_module_file(dir.path());
    let f = ModelFile::open(&model).unwrap();
    let data_start =
        std::fs::metadata(&model).unwrap().len() - f.tensors().values().map(|t| t.end - t.begin).sum::<u64>();
    let b_weight = f.tensors()["b.weight"].clone();
    let a_end = f.tensors().iter().filter(|(k, _)| k.starts_with("a.")).map(|(_, t)| t.end).max().unwrap();
    assert!(b_weight.begin >= a_end, "b.weight must lie after a.'s tensors");
    drop(f);
    // Garbage: b.weight's bytes overwritten with NaN patterns.
    let mut bytes = std::fs::read(&model).unwrap();
    for x in &mut bytes[(data_start + b_weight.begin) as usize..(data_start + b_weight.end) as usize] {
        *x = 0xff;
    }
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, &bytes).unwrap();
    // Cut off: the file ends in the middle of b.weight.
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..(data_start + b_weight.begin + 10) as usize]).unwrap();
    let want = bits(&a.forward(&input(3)).unwrap());
    for path in [&garbage, &cut] {
        let m = AnyConv::from_file(path, Some("a.")).unwrap();
        assert_eq!(bits(&m.forward(&input(3)).unwrap()), want);
        let sd = StateDict::load_prefix(path, "a.").unwrap();
        assert!(sd.tensors.keys().all(|k| k.starts_with("a.")) && sd.tensors.len() == 5);
    }
    let e = StateDict::load(&cut).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    let e = AnyConv::from_file(&cut, Some("b.")).unwrap_err();
    assert!(matches!(e, Error::SafeTensorsFile { .. }) && e.to_string().contains("\"b.weight\""), "{e}");
    println!("{}", one_line(&e));
}

// ---- 3–5. writes that never destroy or hijack -----------------------------------------------------

fn small_sd(v: f32) -> StateDict {
    let mut sd = StateDict::new();
    sd.insert_tensor("output", &Tensor::from_vec(vec![v; 300], &[3, 100]).unwrap());
    sd
}

#[test]
fn a_character_device_is_written_through_not_replaced() {
    let dir = tmpdir();
    let null = dir.path().join("null");
    if !mknod_char(&null, 1, 3) {
        println!("skipped: mknod needs root (CAP_MKNOD)");
        return;
    }
    small_sd(1.0).save(&null).unwrap();
    save_tensors(&null, &[("output", &Tensor::zeros(&[4], qconv::DType::F32).unwrap())], &BTreeMap::new()).unwrap();
    assert!(std::fs::symlink_metadata(&null).unwrap().file_type().is_char_device(), "the device was replaced");
    assert_eq!(others(dir.path(), &["null"]), Vec::<String>::new());
    // A full device (ENOSPC on write): a clean error, the node untouched, nothing left over.
    let full = dir.path().join("full");
    assert!(mknod_char(&full, 1, 7));
    let e = small_sd(2.0).save(&full).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    println!("full device: {}", one_line(&e));
    assert!(std::fs::symlink_metadata(&full).unwrap().file_type().is_char_device());
    assert_eq!(others(dir.path(), &["null", "full"]), Vec::<String>::new());
}

#[test]
fn a_fifo_is_written_through_and_its_reader_gets_the_file() {
    let dir = tmpdir();
    let fifo = dir.path().join("out.fifo");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(&fifo).unwrap())
    };
    let sd = small_sd(3.0);
    sd.save(&fifo).unwrap();
    let got = reader.join().unwrap();
    assert_eq!(StateDict::from_bytes(&got).unwrap(), sd);
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO was replaced");
    assert_eq!(others(dir.path(), &["out.fifo"]), Vec::<String>::new());
}

#[test]
fn symlinked_outputs_are_followed_and_their_target_replaced() {
    let dir = tmpdir();
    let d = dir.path();
    std::fs::create_dir(d.join("real")).unwrap();
    let target = d.join("real/out.safetensors");
    small_sd(0.0).save(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
    // link -> link2 -> real/out.safetensors (relative links).
    std::os::unix::fs::symlink("real/out.safetensors", d.join("link2")).unwrap();
    std::os::unix::fs::symlink("link2", d.join("link")).unwrap();
    small_sd(5.0).save(d.join("link")).unwrap();
    assert!(std::fs::symlink_metadata(d.join("link")).unwrap().file_type().is_symlink());
    assert!(std::fs::symlink_metadata(d.join("link2")).unwrap().file_type().is_symlink());
    assert_eq!(StateDict::load(&target).unwrap(), small_sd(5.0));
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o640, "permissions kept");
    assert_eq!(others(&d.join("real"), &["out.safetensors"]), Vec::<String>::new());
    // A dangling link creates its target.
    std::os::unix::fs::symlink("real/new.safetensors", d.join("dangling")).unwrap();
    small_sd(6.0).save(d.join("dangling")).unwrap();
    assert_eq!(StateDict::load(d.join("real/new.safetensors")).unwrap(), small_sd(6.0));
    // A link to a FIFO writes through the FIFO.
    let fifo = d.join("real/pipe");
    mkfifo(&fifo);
    std::os::unix::fs::symlink(&fifo, d.join("to-fifo")).unwrap();
    let reader = std::thread::spawn(move || std::fs::read(&fifo).unwrap());
    small_sd(7.0).save(d.join("to-fifo")).unwrap();
    assert_eq!(StateDict::from_bytes(&reader.join().unwrap()).unwrap(), small_sd(7.0));
    assert!(std::fs::symlink_metadata(d.join("real/pipe")).unwrap().file_type().is_fifo());
}

#[test]
fn directories_and_sockets_are_refused_untouched() {
    let dir = tmpdir();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let e = small_sd(1.0).save(&sub).unwrap_err();
    assert!(matches!(e, Error::Io { .. }) && sub.is_dir(), "{e}");
    println!("directory: {}", one_line(&e));
    let sock_path = dir.path().join("sock");
    let _sock = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let e = small_sd(1.0).save(&sock_path).unwrap_err();
    assert!(std::fs::symlink_metadata(&sock_path).unwrap().file_type().is_socket(), "{e}");
    println!("socket: {}", one_line(&e));
    assert_eq!(others(dir.path(), &["sub", "sock"]), Vec::<String>::new());
}

#[test]
fn planted_symlinks_at_temp_names_are_never_followed_or_deleted() {
    let dir = tmpdir();
    let d = dir.path();
    let victim = d.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    // The old predictable name, and names in the new pattern.
    let mut planted = vec![format!(".out.safetensors.tmp-{}", std::process::id())];
    planted.extend((0..50).map(|i| format!(".out.safetensors.qconv-tmp-{i:010}")));
    planted.push(".out.safetensors.qconv-tmp-AAAAAAAAAA".into());
    for name in &planted {
        std::os::unix::fs::symlink(&victim, d.join(name)).unwrap();
    }
    for i in 0..20 {
        small_sd(i as f32).save(d.join("out.safetensors")).unwrap();
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    for name in &planted {
        assert!(std::fs::symlink_metadata(d.join(name)).unwrap().file_type().is_symlink(), "{name} was removed");
    }
    let mut keep: Vec<&str> = planted.iter().map(String::as_str).collect();
    keep.extend(["victim", "out.safetensors"]);
    assert_eq!(others(d, &keep), Vec::<String>::new());
    assert_eq!(StateDict::load(d.join("out.safetensors")).unwrap(), small_sd(19.0));
}

#[test]
fn a_250_byte_output_name_works() {
    let dir = tmpdir();
    for name in ["o".repeat(250), format!("{}.st", "é".repeat(123))] {
        let path = dir.path().join(&name);
        small_sd(1.0).save(&path).unwrap();
        small_sd(2.0).save(&path).unwrap();
        assert_eq!(StateDict::load(&path).unwrap(), small_sd(2.0));
    }
    // Not UTF-8 either.
    let raw = dir.path().join(OsStr::from_bytes(&[b'm', 0xff, b'.', b's', b't']));
    small_sd(3.0).save(&raw).unwrap();
    let m = conv(3, 4, 0.0);
    let mut sd = StateDict::new();
    m.write_state_dict(&mut sd, "");
    sd.save(&raw).unwrap();
    assert!(AnyConv::from_file(&raw, None).is_ok());
    assert_eq!(others(dir.path(), &[]).len(), 3);
}

/// Writes `n_mb` MB to `path` in a loop until killed (the child side of the kill -9 test).
#[test]
fn child_writer() {
    let Ok(path) = std::env::var("QCONV_FILES_CHILD_WRITE") else { return };
    let big = Tensor::from_vec(vec![1.5f32; 64 << 20], &[64 << 20]).unwrap(); // 256 MiB
    loop {
        save_tensors(&path, &[("output", &big)], &BTreeMap::new()).unwrap();
    }
}

#[test]
fn kill_9_mid_write_leaves_old_or_new_and_only_recognisable_temp_files() {
    let dir = tmpdir();
    let out = dir.path().join("out.safetensors");
    let old = small_sd(42.0);
    old.save(&out).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env("QCONV_FILES_CHILD_WRITE", &out)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until a temporary file exists and has grown, then kill.
    let start = Instant::now();
    loop {
        let grown = std::fs::read_dir(dir.path()).unwrap().flatten().any(|e| {
            e.file_name().to_string_lossy().contains(".qconv-tmp-") && e.metadata().is_ok_and(|m| m.len() > (8 << 20))
        });
        if grown || start.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The output is the old file or a complete new one.
    let sd = StateDict::load(&out).unwrap();
    assert!(sd == old || sd.tensors["output"].shape == [64 << 20], "a partial output");
    let left = others(dir.path(), &["out.safetensors"]);
    assert!(!left.is_empty(), "the kill came after the rename (no temp file to check)");
    for name in &left {
        assert!(name.starts_with(".out.safetensors.qconv-tmp-") && name.len() == 37, "unrecognisable: {name}");
    }
    // The next save works and never deletes the leftover (not ours).
    small_sd(1.0).save(&out).unwrap();
    assert_eq!(others(dir.path(), &["out.safetensors"]), left);
}

/// Saves a 4 MiB state dict over `path` under RLIMIT_FSIZE = 1 MiB (the child side).
#[test]
fn child_fsize() {
    let Ok(path) = std::env::var("QCONV_FILES_CHILD_FSIZE") else { return };
    // SAFETY: ignoring SIGXFSZ (writes then fail with EFBIG) and lowering a limit of this process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit { rlim_cur: 1 << 20, rlim_max: 1 << 20 };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let big = Tensor::from_vec(vec![2.5f32; 1 << 20], &[1 << 20]).unwrap();
    let e = save_tensors(&path, &[("output", &big)], &BTreeMap::new()).unwrap_err();
    eprintln!("{e}");
    std::process::exit(if matches!(e, Error::Io { .. }) { 3 } else { 4 });
}

#[test]
fn a_full_disk_gives_a_clean_error_and_keeps_the_old_output() {
    let dir = tmpdir();
    let out = dir.path().join("out.safetensors");
    let old = small_sd(42.0);
    old.save(&out).unwrap();
    let r = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_fsize", "--nocapture", "--test-threads=1"])
        .env("QCONV_FILES_CHILD_FSIZE", &out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(3), "{err}");
    println!("file size limit: {}", err.lines().next().unwrap_or(""));
    assert_eq!(StateDict::load(&out).unwrap(), old);
    assert_eq!(others(dir.path(), &["out.safetensors"]), Vec::<String>::new());
}

// ---- keep: concurrency -------------------------------------------------------------------------------

#[test]
fn two_writers_to_one_path_leave_one_complete_file() {
    let dir = tmpdir();
    let out = dir.path().join("out.safetensors");
    let sds = [small_sd(1.0), {
        let mut sd = StateDict::new();
        sd.insert_tensor("output", &Tensor::from_vec(vec![2.0f32; 50_000], &[50_000]).unwrap());
        sd
    }];
    std::thread::scope(|s| {
        for sd in &sds {
            let out = &out;
            s.spawn(move || {
                for _ in 0..40 {
                    sd.save(out).unwrap();
                }
            });
        }
    });
    let got = StateDict::load(&out).unwrap();
    assert!(got == sds[0] || got == sds[1]);
    assert_eq!(others(dir.path(), &["out.safetensors"]), Vec::<String>::new());
}

#[test]
fn concurrent_runs_give_the_serial_result_and_a_replaced_model_the_old_or_the_new() {
    let dir = tmpdir();
    let (model, a) = two_module_file(dir.path());
    let x = input(3);
    let want_a = bits(&a.forward(&x).unwrap());
    // 8 concurrent load → forward → save runs give the serial result bit for bit.
    std::thread::scope(|s| {
        for i in 0..8 {
            let (model, x, want_a, d) = (&model, &x, &want_a, dir.path());
            s.spawn(move || {
                let m = AnyConv::from_file(model, Some("a.")).unwrap();
                let y = m.forward(x).unwrap();
                let out = d.join(format!("y{i}.safetensors"));
                save_tensors(&out, &[("output", &y)], &BTreeMap::new()).unwrap();
                let back = ModelFile::open(&out).unwrap().read_tensor("output").unwrap().into_tensor("output").unwrap();
                assert_eq!(&bits(&back), want_a);
            });
        }
    });
    // A second model under the same prefix; runs while it is swapped in and out see one or the other.
    let b = conv(3, 4, 2.0);
    let want_b = bits(&b.forward(&x).unwrap());
    let mut sd_a = StateDict::load(&model).unwrap();
    let mut sd_b = sd_a.clone();
    b.write_state_dict(&mut sd_b, "a.");
    a.write_state_dict(&mut sd_a, "a.");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..60 {
                if i % 2 == 0 { &sd_b } else { &sd_a }.save(&model).unwrap();
            }
            stop.store(true, Ordering::Relaxed);
        });
        for _ in 0..2 {
            s.spawn(|| {
                let mut runs = 0;
                while !stop.load(Ordering::Relaxed) || runs == 0 {
                    let m = AnyConv::from_file(&model, Some("a.")).unwrap();
                    let y = bits(&m.forward(&x).unwrap());
                    assert!(y == want_a || y == want_b, "a mix of two models");
                    runs += 1;
                }
            });
        }
    });
}

#[test]
fn stored_tensors_move_into_tensors_and_save_without_copies() {
    // `into_tensor` and `take_tensor` move the buffer (same address); `save_tensors` writes the
    // tensor's own memory (the file equals what `to_bytes` of a copy gives).
    let v = vec![1.0f32, 2.0, 3.0];
    let ptr = v.as_ptr();
    let t = StoredTensor::new(vec![3], StoredData::F32(v)).unwrap().into_tensor("x").unwrap();
    assert_eq!(t.as_slice::<f32>().unwrap().as_ptr(), ptr);
    let dir = tmpdir();
    let path = dir.path().join("t.safetensors");
    let meta = BTreeMap::from([("k".to_string(), "v".to_string())]);
    save_tensors(&path, &[("x", &t)], &meta).unwrap();
    let mut sd = StateDict::new();
    sd.insert_tensor("x", &t);
    sd.metadata = meta;
    assert_eq!(std::fs::read(&path).unwrap(), sd.to_bytes().unwrap());
    let mut back = StateDict::load(&path).unwrap();
    assert_eq!(back.take_tensor("x").unwrap(), t);
    // The safetensors crate reads what qconv writes.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("x").unwrap().shape(), &[3]);
}

#[test]
fn a_magic_link_to_a_pipe_is_written_through() {
    // `/dev/stdout` when stdout is a pipe: `/proc/self/fd/N` is a link to `pipe:[..]`, which only
    // the kernel can follow. (The pipe is this process's own, never the real stdout.)
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors pipe() writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", fds[1]));
    if !proc_path.exists() {
        println!("skipped: no /proc/self/fd");
        return;
    }
    // SAFETY: fds[0] is the read end just created, owned by the File from here on.
    let mut read_end = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        read_end.read_to_end(&mut v).unwrap();
        v
    });
    let sd = small_sd(8.0);
    sd.save(&proc_path).unwrap();
    // SAFETY: closes the write end (the reader then sees EOF).
    unsafe { libc::close(fds[1]) };
    assert_eq!(StateDict::from_bytes(&reader.join().unwrap()).unwrap(), sd);
}
