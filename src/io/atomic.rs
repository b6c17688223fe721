//! Writing output files without destroying or hijacking anything.
//!
//! [`write_output`] resolves the output path first:
//! * a regular file, or nothing: the new content goes to a fresh temporary file in the same
//!   directory, is flushed and synced, and is renamed over the path, so the path always holds
//!   the old or the new file, never a part;
//! * a symbolic link: it is followed (links to links too, up to 40), and the rules apply to its
//!   final target, whose directory receives the temporary file; the link stays a link;
//! * a character device or a FIFO (`/dev/null`, `/dev/stdout`, a named pipe): the content is
//!   written through it, as `cp` does; nothing is renamed over it;
//! * a directory, a block device or a socket: an error; nothing is written.
//!
//! Temporary files are created with `O_CREAT | O_EXCL` (never through a planted symbolic link)
//! under an unpredictable name, `.<name>.qconv-tmp-<10 random letters or digits>`, in the
//! target's directory (`<name>` is the output's file name, shortened so that the temporary name
//! stays within the 255-byte limit of a file name). Every failure path removes the temporary
//! file; only a process killed while writing leaves one behind, and qconv never deletes a file
//! it did not create in this call (such leftovers can be deleted by hand).

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The marker in temporary file names.
pub const TEMP_MARKER: &str = ".qconv-tmp-";
/// Random characters in a temporary file name.
const RAND_LEN: usize = 10;
/// Longest file name (bytes) on the file systems qconv targets (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// What a path leads to.
#[derive(Debug)]
enum Target {
    /// Create or replace the regular file `path` (`mode`: the permissions of the file replaced).
    Replace { path: PathBuf, mode: Option<u32> },
    /// Write through the device or FIFO `path`.
    Through { path: PathBuf },
}

fn refuse(what: &str) -> io::Error {
    let kind = if what == "a directory" { io::ErrorKind::IsADirectory } else { io::ErrorKind::InvalidInput };
    io::Error::new(kind, format!("it is {what}; qconv writes regular files, character devices and FIFOs only"))
}

/// Follows symbolic links from `path` to what it finally names.
fn resolve(path: &Path, follow: bool) -> io::Result<Target> {
    if follow {
        // What the path opens to, through every link (the kernel's own resolution, so that
        // `/dev/stdout` → `/proc/self/fd/1` → `pipe:[..]` is seen as the pipe it is).
        match fs::metadata(path) {
            Ok(m) => {
                let ft = m.file_type();
                if ft.is_char_device() || ft.is_fifo() {
                    return Ok(Target::Through { path: path.to_path_buf() });
                }
                if ft.is_dir() {
                    return Err(refuse("a directory"));
                }
                if !ft.is_file() {
                    return Err(refuse(if ft.is_block_device() { "a block device" } else { "a socket" }));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {} // new, or a dangling link
            Err(e) => return Err(e),
        }
    }
    // A regular file or nothing: find the name to rename over (the final link target).
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        let meta = match fs::symlink_metadata(&p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Target::Replace { path: p, mode: None }),
            Err(e) => return Err(e),
            Ok(m) => m,
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            if !follow {
                // The link itself is replaced (the kernel cache never writes through links).
                return Ok(Target::Replace { path: p, mode: None });
            }
            let to = fs::read_link(&p)?;
            p = if to.is_absolute() { to } else { parent_dir(&p).join(to) };
            continue;
        }
        return if ft.is_file() {
            Ok(Target::Replace { path: p, mode: Some(meta.permissions().mode() & 0o7777) })
        } else if ft.is_dir() {
            Err(refuse("a directory"))
        } else if follow && (ft.is_char_device() || ft.is_fifo()) {
            Ok(Target::Through { path: p })
        } else if ft.is_block_device() {
            Err(refuse("a block device"))
        } else if ft.is_socket() {
            Err(refuse("a socket"))
        } else {
            Err(refuse("not a regular file"))
        };
    }
    Err(io::Error::other("too many levels of symbolic links"))
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `.<name>.qconv-tmp-`: the temporary name's prefix for output file `name`, `name` cut (at a
/// character boundary when it is UTF-8) so that the whole name fits [`NAME_MAX`].
pub(crate) fn temp_prefix(name: &OsStr) -> OsString {
    let room = NAME_MAX - 1 - TEMP_MARKER.len() - RAND_LEN;
    let bytes = name.as_bytes();
    let mut end = bytes.len().min(room);
    if let Ok(s) = std::str::from_utf8(bytes) {
        while !s.is_char_boundary(end) {
            end -= 1;
        }
    }
    let mut out = Vec::with_capacity(1 + end + TEMP_MARKER.len());
    out.push(b'.');
    out.extend_from_slice(&bytes[..end]);
    out.extend_from_slice(TEMP_MARKER.as_bytes());
    OsString::from_vec(out)
}

/// Writes what `fill` produces to `path` by the rules of this module. `follow`: follow symbolic
/// links and write through devices and FIFOs (outputs); without it a link at `path` is replaced
/// like a file and devices are refused (the kernel cache's entries). Errors are the OS's (or
/// `fill`'s, passed as `io::Error`); nothing is left behind on failure.
pub(crate) fn write_output(
    path: &Path,
    follow: bool,
    fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    match resolve(path, follow)? {
        Target::Through { path } => write_through(&path, fill),
        Target::Replace { path, mode } => replace(&path, mode, !follow, fill),
    }
}

fn write_through(path: &Path, fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
    // No O_TRUNC (meaningless for a device or FIFO, destructive if a regular file was swapped in
    // since `resolve` looked); what was opened is checked again before anything is written.
    let file = OpenOptions::new().write(true).custom_flags(libc::O_NOCTTY).open(path)?;
    let ft = file.metadata()?.file_type();
    if !(ft.is_char_device() || ft.is_fifo()) {
        return Err(io::Error::other("the output changed from a device or FIFO to something else while being opened"));
    }
    let mut w = file;
    fill(&mut w)?;
    w.flush()
}

/// Writes a temporary file next to `path` and renames it over `path`, which may be absent or a
/// regular file (or a symbolic link, when `over_links`).
fn replace(
    path: &Path,
    mode: Option<u32>,
    over_links: bool,
    fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the output path does not end in a file name"))?;
    let dir = parent_dir(path);
    let prefix = temp_prefix(name);
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .rand_bytes(RAND_LEN)
        .permissions(Permissions::from_mode(0o666)) // as File::create: the umask applies
        .tempfile_in(&dir)?;
    if let Some(m) = mode {
        // Keep the replaced file's permissions (set on the open file: no umask).
        tmp.as_file().set_permissions(Permissions::from_mode(m & 0o777))?;
    }
    fill(tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    // Never rename over anything but a regular file (or nothing): look again just before.
    if let Ok(m) = fs::symlink_metadata(path) {
        let ft = m.file_type();
        if !(ft.is_file() || (over_links && ft.is_symlink())) {
            return Err(io::Error::other(
                "the output was replaced by something other than a regular file while being written",
            ));
        }
    }
    tmp.persist(path).map_err(|e| e.error)?;
    // Make the rename durable (best effort: not every file system syncs directories).
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_fit_name_max() {
        let long = "é".repeat(125); // 250 bytes
        let p = temp_prefix(OsStr::new(&long));
        assert!(p.len() + RAND_LEN <= NAME_MAX, "{}", p.len());
        assert!(std::str::from_utf8(p.as_bytes()).is_ok(), "cut inside a character");
        assert_eq!(temp_prefix(OsStr::new("out.st")), OsStr::new(".out.st.qconv-tmp-"));
        let raw = OsStr::from_bytes(&[0xff; 250]);
        assert_eq!(temp_prefix(raw).len() + RAND_LEN, NAME_MAX);
    }
}
