//! Where results go: stdout, or a file written to a temp name beside it and renamed into place
//! only on success — a failure leaves nothing behind, and an existing file is never replaced
//! without `--force`.

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
                if path.exists() && !force {
                    return Err(Error::Usage(format!(
                        "{} already exists; use --force to replace it",
                        path.display()
                    )));
                }
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let tmp = tempfile::Builder::new()
                    .prefix(&format!(".{name}."))
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
            Sink::Stdout(w) => w,
            Sink::File { tmp, .. } => tmp.as_file_mut(),
        };
        Encoder::new(compression, level, BufWriter::with_capacity(BUF, w))
            .map_err(|e| Error::io("starting the compressor", e))
    }

    /// Make the output visible: flush, and for a file, rename the temp file into place.
    pub fn commit(self) -> Result<()> {
        match self {
            Sink::Stdout(mut w) => w.flush().map_err(|e| Error::output("writing stdout", e)),
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

/// Write a directory at `dest`: built under a temp name beside it by `f`, moved into place only
/// when `f` succeeds (else removed). An existing `dest` is refused unless `force`.
pub fn write_dir<R>(dest: &Path, force: bool, f: impl FnOnce(&Path) -> Result<R>) -> Result<R> {
    if dest.exists() && !force {
        return Err(Error::Usage(format!(
            "{} already exists; use --force to replace it",
            dest.display()
        )));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".strata-out.")
        .tempdir_in(&parent)
        .map_err(|e| {
            Error::io(
                format!("creating a temp directory in {}", parent.display()),
                e,
            )
        })?;
    let r = f(tmp.path())?;
    if dest.exists() {
        let removed = if dest.is_dir() {
            std::fs::remove_dir_all(dest)
        } else {
            std::fs::remove_file(dest)
        };
        removed.map_err(|e| Error::io(format!("replacing {}", dest.display()), e))?;
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, dest).map_err(|e| {
        let _ = std::fs::remove_dir_all(&kept);
        Error::io(
            format!("moving the output into place at {}", dest.display()),
            e,
        )
    })?;
    Ok(r)
}
