//! Where results go: stdout, or a file written to a temp name beside it and renamed into place
//! only on success — a failure leaves nothing behind, and an existing file is never replaced
//! without `--force`. What `--force` may replace is only what strata would have written there:
//! a regular file for a file output, an OCI layout for a directory output — never the working
//! directory, `/`, an ancestor of an input, or a directory of other files. A device, fifo or
//! socket (or a symlink to one: `/dev/null`, `/dev/stdout`) is written as it is, never
//! replaced. Temp names carry the writer's process id (`.NAME.strata-PID.XXXXXX.partial`), so a
//! later run writing the same target removes the ones a killed run left.

use crate::compression::{Compression, Encoder};
use crate::error::{Error, Result};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const BUF: usize = 1 << 20;

/// An output stream: stdout, or a file that appears only on [`Sink::commit`].
pub enum Sink {
    /// Standard output, buffered (on a duplicate of its descriptor).
    Stdout(BufWriter<File>),
    /// A device, fifo or socket named as the output: written in place, never replaced.
    Device(BufWriter<File>),
    /// A file, written to a temp file beside its destination.
    File {
        /// The temp file being written (`.<name>.….partial` in the destination's directory).
        tmp: tempfile::NamedTempFile,
        /// Where the file goes on commit.
        dest: PathBuf,
        /// Replace an existing `dest` on commit.
        force: bool,
    },
}

impl Sink {
    /// The output at `target`; `None` or `-` means stdout. An existing file is refused
    /// unless `force`.
    pub fn create(target: Option<&Path>, force: bool) -> Result<Sink> {
        match target.filter(|p| *p != Path::new("-")) {
            None => {
                let out = io::stdout();
                let fd = out
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|e| Error::io("duplicating stdout", e))?;
                // A pipe of 64 KiB makes the writer sleep and wake sixteen times per MiB; ask
                // for 1 MiB (the unprivileged limit). Not a pipe, or refused: no matter.
                let _ = rustix::pipe::fcntl_setpipe_size(&fd, BUF);
                Ok(Sink::Stdout(BufWriter::with_capacity(BUF, File::from(fd))))
            }
            Some(path) => {
                // Followed through symlinks: `/dev/stdout` is a link to a device — or, when
                // stdout was redirected, to a regular file; either way a name under /dev or
                // /proc is never replaced by a rename, only written through.
                let in_place = path.starts_with("/dev") || path.starts_with("/proc");
                match std::fs::metadata(path) {
                    Ok(m) if is_special(&m) || (in_place && m.is_file()) => {
                        let f = std::fs::OpenOptions::new()
                            .write(true)
                            .truncate(m.is_file())
                            .open(path)
                            .map_err(|e| Error::output(format!("opening {}", path.display()), e))?;
                        return Ok(Sink::Device(BufWriter::with_capacity(BUF, f)));
                    }
                    Ok(m) if m.is_dir() => {
                        return Err(Error::Usage(format!(
                            "{} is a directory; a tar output is a file (or -o - for stdout)",
                            path.display()
                        )));
                    }
                    Ok(_) if !force => {
                        return Err(Error::Usage(format!(
                            "{} already exists; use --force to replace it",
                            path.display()
                        )));
                    }
                    _ => {}
                }
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                remove_stale_temps(&dir, &name);
                let tmp = tempfile::Builder::new()
                    .prefix(&temp_prefix(&name))
                    .suffix(".partial")
                    // Like any new file: 0666 less the umask (tempfile's default is 0600).
                    .permissions(std::fs::Permissions::from_mode(0o666))
                    .tempfile_in(&dir)
                    .map_err(|e| {
                        Error::io(format!("creating a temp file in {}", dir.display()), e)
                    })?;
                Ok(Sink::File {
                    tmp,
                    dest: path.to_path_buf(),
                    force,
                })
            }
        }
    }

    /// The writer, wrapped in the chosen compression.
    pub fn writer(
        &mut self,
        compression: Compression,
        level: Option<u32>,
    ) -> Result<Encoder<BufWriter<&mut dyn Write>>> {
        let w: &mut dyn Write = match self {
            Sink::Stdout(w) | Sink::Device(w) => w,
            Sink::File { tmp, .. } => tmp.as_file_mut(),
        };
        Encoder::new(compression, level, BufWriter::with_capacity(BUF, w))
            .map_err(|e| Error::io("starting the compressor", e))
    }

    /// Make the output visible: flush, and for a file, rename the temp file into place.
    pub fn commit(self) -> Result<()> {
        match self {
            Sink::Stdout(mut w) => w.flush().map_err(|e| Error::output("writing stdout", e)),
            Sink::Device(mut w) => w.flush().map_err(|e| Error::output("writing output", e)),
            Sink::File { tmp, dest, force } => {
                let shown = dest.display().to_string();
                let r = if force {
                    tmp.persist(&dest)
                } else {
                    tmp.persist_noclobber(&dest)
                };
                r.map_err(|e| {
                    Error::io(format!("moving the output into place at {shown}"), e.error)
                })?;
                Ok(())
            }
        }
    }
}

/// Finish an encoder and flush everything below it.
pub fn finish<W: Write>(enc: Encoder<BufWriter<W>>) -> Result<()> {
    let mut buf = enc
        .finish()
        .map_err(|e| Error::io("finishing the compressed stream", e))?;
    buf.flush().map_err(|e| Error::output("writing output", e))
}

/// Whether a file type is one that is written in place: a character or block device, a
/// fifo or a socket.
fn is_special(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    t.is_char_device() || t.is_block_device() || t.is_fifo() || t.is_socket()
}

/// Temp names of outputs for `name`: recognisable, and carrying this process's id.
fn temp_prefix(name: &str) -> String {
    format!(".{name}.strata-{}.", std::process::id())
}

/// Remove temp outputs for `name` in `dir` that a killed run left: those whose process is gone.
fn remove_stale_temps(dir: &Path, name: &str) {
    let lead = format!(".{name}.strata-");
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let now = std::time::SystemTime::now();
    for e in rd.flatten() {
        let file = e.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&lead)) else {
            continue;
        };
        // Exactly `PID.XXXXXX.partial` (a temp) or `PID.old` (a replaced layout set aside).
        let Some((pid, tail)) = rest.split_once('.') else {
            continue;
        };
        let aside = tail == "old";
        let temp = tail
            .strip_suffix(".partial")
            .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !(aside || temp) {
            continue;
        }
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        // Dead here, and untouched for an hour: a writer in another PID namespace (another
        // container on a shared directory) is not dead just because its pid is unknown here.
        let idle = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_AFTER);
        if pid as u32 == std::process::id() || process_alive(pid) || !idle {
            continue;
        }
        let p = e.path();
        if aside {
            // A run killed between setting the old layout aside and putting the new one in
            // place: the old one is the only copy — put it back, never delete it.
            let dest = dir.join(name);
            if std::fs::symlink_metadata(&dest).is_err() {
                tracing::warn!(
                    "restoring {} from {} (a run was killed mid-replace)",
                    dest.display(),
                    p.display()
                );
                let _ = std::fs::rename(&p, &dest);
                continue;
            }
        }
        tracing::info!("removing {} left by a run that was killed", p.display());
        let _ = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
            _ => std::fs::remove_file(&p),
        };
    }
}

/// How long a dead writer's temp must lie untouched before a later run removes it.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether a process of that id exists (signal 0: nothing is sent).
fn process_alive(pid: i32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// Why `--force` may not replace the directory `dest`, if it may not: only an OCI layout that
/// is neither `/`, the working directory or one of its ancestors, nor an input or an ancestor
/// of one.
fn refuse_replacing(dest: &Path, protect: &[PathBuf]) -> Option<String> {
    let shown = dest.display();
    let Ok(canon) = std::fs::canonicalize(dest) else {
        return Some(format!("{shown} cannot be resolved"));
    };
    if canon == Path::new("/") {
        return Some(format!(
            "refusing to replace {shown}: it is the root directory"
        ));
    }
    if let Ok(cwd) = std::env::current_dir().and_then(std::fs::canonicalize)
        && cwd.starts_with(&canon)
    {
        return Some(format!(
            "refusing to replace {shown}: it is the working directory or holds it"
        ));
    }
    for input in protect {
        if let Ok(i) = std::fs::canonicalize(input)
            && i.starts_with(&canon)
        {
            return Some(format!(
                "refusing to replace {shown}: it holds the input {}",
                input.display()
            ));
        }
    }
    if !canon.is_dir() {
        return Some(format!(
            "{shown} exists and is not a directory; --force replaces only an OCI layout there"
        ));
    }
    if !canon.join("oci-layout").is_file() {
        return Some(format!(
            "{shown} is not an OCI layout (no oci-layout file); --force replaces only an OCI layout, remove it yourself if it must go"
        ));
    }
    None
}

/// Write a directory at `dest`: built under a temp name beside it by `f`, moved into place only
/// when `f` succeeds (else removed). An existing `dest` is refused unless `force`, and even
/// then unless it is an OCI layout that holds neither the working directory nor anything in
/// `protect` (the inputs); the old one is renamed aside and removed only once the new one is
/// in place.
pub fn write_dir<R>(
    dest: &Path,
    force: bool,
    protect: &[PathBuf],
    f: impl FnOnce(&Path) -> Result<R>,
) -> Result<R> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    // First, so that a layout a killed run had set aside is back before anything is decided.
    remove_stale_temps(&parent, &name);
    let exists = std::fs::symlink_metadata(dest).is_ok();
    if exists && !force {
        return Err(Error::Usage(format!(
            "{} already exists; use --force to replace it",
            dest.display()
        )));
    }
    if exists && let Some(why) = refuse_replacing(dest, protect) {
        return Err(Error::Usage(why));
    }
    let tmp = tempfile::Builder::new()
        .prefix(&temp_prefix(&name))
        .suffix(".partial")
        .tempdir_in(&parent)
        .map_err(|e| {
            Error::io(
                format!("creating a temp directory in {}", parent.display()),
                e,
            )
        })?;
    let r = f(tmp.path())?;
    // The old layout goes aside first, and away only once the new one is in place.
    let aside = if exists {
        let aside = parent.join(format!("{}old", temp_prefix(&name)));
        std::fs::rename(dest, &aside)
            .map_err(|e| Error::output(format!("moving {} aside", dest.display()), e))?;
        Some(aside)
    } else {
        None
    };
    let kept = tmp.keep();
    if let Err(e) = std::fs::rename(&kept, dest) {
        let _ = std::fs::remove_dir_all(&kept);
        if let Some(a) = &aside {
            let _ = std::fs::rename(a, dest);
        }
        return Err(Error::output(
            format!("moving the output into place at {}", dest.display()),
            e,
        ));
    }
    if let Some(a) = aside
        && let Err(e) = std::fs::remove_dir_all(&a)
    {
        tracing::warn!("could not remove the replaced {}: {e}", a.display());
    }
    Ok(r)
}
