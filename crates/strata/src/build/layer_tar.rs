//! Writing a walked layer as a tar, the same bytes every time: entries in the walk's sorted
//! order, headers from the walk (one fixed mtime, no atime/ctime, no user or group names),
//! file contents read now — and checked to be exactly the size the walk saw.

use super::walk::{Kind, LayerTree};
use crate::control::{Cancel, Pass, ProgressRef};
use crate::error::{Error, Result};
use crate::tarstream::{self, NewEntry, padded};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;

/// What every entry of a written layer shares.
pub struct TarOptions {
    /// The mtime of every entry (seconds since the epoch).
    pub mtime: u64,
}

const BUF: usize = 1 << 20;

/// Write `tree` as an uncompressed tar to `out`.
pub fn write_layer(
    tree: &LayerTree,
    opts: &TarOptions,
    out: &mut dyn Write,
    progress: Option<&ProgressRef>,
    cancel: &Cancel,
) -> Result<()> {
    let werr = |e| Error::output("writing output", e);
    let mut w = BufWriter::with_capacity(BUF, out);
    let mut header = Vec::with_capacity(3 * tarstream::BLOCK);
    let mut buf = vec![0u8; BUF];
    let mut name = Vec::new();
    for e in &tree.entries {
        cancel.check()?;
        name.clear();
        name.extend_from_slice(&e.path);
        if e.kind == Kind::Dir {
            name.push(b'/');
        }
        let (major, minor) = if matches!(e.kind, Kind::Char | Kind::Block) {
            (rustix::fs::major(e.rdev), rustix::fs::minor(e.rdev))
        } else {
            (0, 0)
        };
        header.clear();
        tarstream::entry_header(
            &NewEntry {
                path: &name,
                flag: e.kind.tar_flag(),
                mode: e.mode,
                uid: e.uid as u64,
                gid: e.gid as u64,
                size: e.size,
                mtime: opts.mtime,
                link: &e.link,
                device: (major, minor),
                xattrs: &e.xattrs,
            },
            &mut header,
        );
        w.write_all(&header).map_err(werr)?;
        if e.kind == Kind::File {
            copy_file(tree, e, &mut buf, &mut w)?;
            let pad = (padded(e.size) - e.size) as usize;
            w.write_all(&tarstream::ZEROS[..pad]).map_err(werr)?;
            if let Some(p) = progress {
                p.advance(e.size, None, Pass::Build);
            }
        }
    }
    tarstream::write_trailer(&mut w).map_err(werr)?;
    w.flush().map_err(werr)
}

/// Copy exactly `e.size` bytes of the file behind `e`; a file that is now shorter or longer
/// than the walk saw is an error (the tar header already promised its size).
fn copy_file(
    tree: &LayerTree,
    e: &super::walk::Entry,
    buf: &mut [u8],
    w: &mut dyn Write,
) -> Result<()> {
    let path = tree.source_path(e).ok_or_else(|| {
        Error::Format(format!(
            "no source for /{}",
            String::from_utf8_lossy(&e.path)
        ))
    })?;
    let is_root = tree
        .spec
        .sources
        .get(e.source as usize)
        .is_some_and(|s| s.dest.len() == e.path.len());
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    // Non-blocking: a file swapped for a fifo since the walk must not hang the build (its
    // read then fails, or comes up short).
    let mut flags = rustix::fs::OFlags::NONBLOCK;
    if !is_root {
        // A file swapped for a symlink since the walk must not be followed.
        flags |= rustix::fs::OFlags::NOFOLLOW;
    }
    opts.custom_flags(flags.bits() as i32);
    let mut f: File = opts
        .open(&path)
        .map_err(|err| Error::io(format!("reading {}", path.display()), err))?;
    let changed = |now: &str| {
        Error::Format(format!(
            "{} changed during the build ({now}; the walk saw {} bytes): rerun it when the sources are still",
            path.display(),
            e.size
        ))
    };
    let mut left = e.size;
    loop {
        // Ask for one byte more than is left, to see growth without an extra read.
        let want = buf
            .len()
            .min(left.saturating_add(1).min(usize::MAX as u64) as usize);
        let n = match f.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(Error::io(format!("reading {}", path.display()), err)),
        };
        if n as u64 > left {
            return Err(changed("it grew"));
        }
        if n == 0 {
            if left > 0 {
                return Err(changed("it shrank"));
            }
            return Ok(());
        }
        w.write_all(&buf[..n])
            .map_err(|err| Error::output("writing output", err))?;
        left -= n as u64;
        if left == 0 && n < want {
            // A short read of a regular file is its end.
            return Ok(());
        }
    }
}
