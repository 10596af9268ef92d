//! File I/O that a hostile or unlucky file cannot turn against the app: bounded reads of
//! regular files only (a FIFO never blocks, a huge file is refused before it is read), and
//! atomic writes through a temporary file that never follow a symlink planted at the target
//! and clean up the temporary files an earlier crash left behind.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// A temporary file older than this, from a process that is gone, is a crash's leftover.
const STALE_AFTER: Duration = Duration::from_secs(60);

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Opens `path` for reading without blocking on a FIFO or device, and refuses anything that
/// is not a regular file (checked on the opened handle, so nothing can be swapped in between).
pub fn open_regular(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: opening a FIFO with no writer would wait for ever otherwise.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(invalid("not a regular file".into()));
    }
    Ok(file)
}

/// The whole of a regular file of at most `limit` bytes; a larger one is an error that says
/// both sizes, before anything is read.
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    if len > limit {
        return Err(invalid(format!(
            "the file has {len} bytes, more than the {limit} this reader takes"
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // `take`: a file that grows while it is read still stops at the limit.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(invalid(format!(
            "the file grew past the {limit} bytes this reader takes while it was read"
        )));
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_text_bounded(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_bounded(path, limit)?)
        .map_err(|e| invalid(format!("the file is not UTF-8 text: {e}")))
}

/// Where the temporary files of `path` go, and the prefix their names start with.
fn temp_prefix(path: &Path) -> io::Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .ok_or_else(|| invalid("not a file path".into()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, format!(".{}.", name.to_string_lossy())))
}

/// Writes `bytes` to `path` so that a crash mid-save never leaves a broken file: the bytes go
/// to a new temporary file beside it (created exclusively, so a symlink planted there is not
/// followed), are flushed to disk, and the temporary file is renamed over `path` (a rename
/// replaces a symlink at `path` itself; the file it pointed to is untouched). The permissions
/// of a regular file being replaced are kept. Temporary files of `path` that an earlier crash
/// left are removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (dir, prefix) = temp_prefix(path)?;
    let pid = std::process::id();
    let mut created = None;
    for _ in 0..64 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{prefix}{pid}-{n}.tmp"));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => {
                created = Some((tmp, f));
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    let (tmp, mut file) = created.ok_or_else(|| {
        io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary file name")
    })?;
    let written = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        if let Ok(meta) = fs::symlink_metadata(path) {
            if meta.is_file() {
                let _ = fs::set_permissions(&tmp, meta.permissions());
            }
        }
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(&dir);
    remove_stale_temps(&dir, &prefix);
    Ok(())
}

/// Removes `dir`'s temporary files named `{prefix}{pid}-{n}.tmp` whose process is gone (or
/// that are old): what a kill during an earlier save left. Best effort.
fn remove_stale_temps(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let own = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.strip_suffix(".tmp"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > STALE_AFTER);
        if pid != own && (!process_alive(pid) || old) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Is process `pid` running? (Linux: its /proc entry; elsewhere assume it is, so only age
/// decides.)
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// Makes a rename durable (best effort; only meaningful on Unix).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_at_once_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("wf.ron");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            return; // no mkfifo on this system
        }
        let err = read_bounded(&fifo, 1024).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(read_bounded(dir.path(), 1024).is_err(), "a folder");
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.json");
        fs::write(&p, vec![b' '; 2048]).unwrap();
        let err = read_bounded(&p, 1024).unwrap_err().to_string();
        assert!(err.contains("2048") && err.contains("1024"), "{err}");
        assert_eq!(read_bounded(&p, 4096).unwrap().len(), 2048);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_at_the_target_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        fs::write(&victim, b"precious").unwrap();
        let target = dir.path().join("stats.json");
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        write_atomic(&target, b"{}").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&target).unwrap(), b"{}");
        assert!(!fs::symlink_metadata(&target).unwrap().is_symlink());
    }

    #[test]
    fn leftovers_of_a_dead_process_are_cleaned_on_the_next_save() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("wf.ron");
        // PIDs above the kernel's limit (4194304) are never alive.
        let dead = dir.path().join(".wf.ron.4194999-0.tmp");
        let other_file = dir.path().join(".other.ron.4194999-0.tmp");
        let live = dir
            .path()
            .join(format!(".wf.ron.{}-999999.tmp", std::process::id()));
        for p in [&dead, &other_file, &live] {
            fs::write(p, b"partial").unwrap();
        }
        write_atomic(&target, b"new").unwrap();
        assert!(!dead.exists(), "a dead process's temp file is removed");
        assert!(
            other_file.exists(),
            "another file's temp files are not ours to touch"
        );
        assert!(live.exists(), "our own process may be writing it");
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 3, "{left:?}");
    }
}
