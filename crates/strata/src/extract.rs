//! Extracting an image into a directory: the flattened stream (same rules as `flatten`) is
//! applied entry by entry, and every path is resolved inside the target directory by the
//! kernel (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`): `../`, absolute paths and
//! symlinks — whatever a layer says — can never make a write land outside it. Symlink targets
//! are written verbatim and never followed.
//!
//! The merge runs on its own thread (with the decoders and verifiers beside it) and hands the
//! flattened tar over a bounded channel; this thread only creates files.

use crate::control::{Cancel, ProgressRef};
use crate::error::{Error, Result};
use crate::image::Layer;
use crate::merge::{MergeOptions, Merger};
use crate::pathname::{normalize, split_parent, trim_dir};
use crate::tarstream::{EntryType, Header, TarReader};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use std::io::{self, BufRead, Read, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// How [`extract`] writes the files.
pub struct ExtractOptions {
    /// Set owners from the image (default when running as root).
    pub same_owner: bool,
    /// Set extended attributes from the entries' `SCHILY.xattr.*` PAX records.
    pub xattrs: bool,
    /// Check each layer's bytes against its digests while merging.
    pub verify: bool,
    /// Called as layer bytes are read.
    pub progress: Option<ProgressRef>,
    /// Stops the extraction when tripped.
    pub cancel: Cancel,
}

/// What [`extract`] wrote.
#[derive(Debug, Default)]
pub struct ExtractStats {
    /// Entries created (the root directory itself and skipped devices not counted).
    pub entries: u64,
    /// Bytes of regular file data written.
    pub bytes: u64,
    /// Character and block devices skipped because the process is not root.
    pub skipped_devices: u64,
}

const CHUNK: usize = 1 << 20;

/// The merge's output, as chunks over a channel.
struct ChannelWriter {
    tx: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.tx
                .send(full)
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "extraction stopped"))?;
        }
        Ok(())
    }
}

struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.at >= self.cur.len() {
            match self.rx.recv() {
                Ok(v) => {
                    self.cur = v;
                    self.at = 0;
                }
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.cur[self.at..])
    }
    fn consume(&mut self, n: usize) {
        self.at += n;
    }
}

/// A directory's attributes, applied after its children (mode may forbid writing; mtime
/// would change as children are added).
struct DirAttrs {
    path: Vec<u8>,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

struct Extractor<'a> {
    root: OwnedFd,
    opts: &'a ExtractOptions,
    is_root: bool,
    /// Bits the kernel strips from modes at creation (the process umask is never changed).
    umask: u32,
    /// The effective uid and gid new files get.
    ids: (u64, u64),
    dirs: Vec<DirAttrs>,
    /// The parent directory of the last entry, kept open.
    cached: Option<(Vec<u8>, OwnedFd)>,
    stats: ExtractStats,
    warned_xattr: bool,
}

fn fs_err(path: &[u8], what: &str, e: impl std::fmt::Display) -> Error {
    Error::Entry {
        layer: "extract".into(),
        path: shown(path),
        message: format!("{what}: {e}"),
    }
}

/// A path for a message: long ones are cut in the middle so the error stays one short line.
fn shown(path: &[u8]) -> String {
    let p = String::from_utf8_lossy(path);
    if p.len() <= 200 {
        return format!("/{p}");
    }
    let head: String = p.chars().take(80).collect();
    let tail: String = p
        .chars()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("/{head}…({} bytes)…{tail}", path.len())
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

impl Extractor<'_> {
    /// The directory `rel`, opened beneath the root (creating it when children come before
    /// its own entry). The last one is kept open: entries come grouped by directory.
    fn take_dir(&mut self, rel: &[u8]) -> Result<OwnedFd> {
        if let Some((p, _)) = &self.cached
            && p.as_slice() == rel
            && let Some((_, fd)) = self.cached.take()
        {
            return Ok(fd);
        }
        self.open_or_make(rel)
    }

    fn open_or_make(&self, rel: &[u8]) -> Result<OwnedFd> {
        if rel.is_empty() {
            return rustix::io::fcntl_dupfd_cloexec(&self.root, 0)
                .map_err(|e| fs_err(rel, "dup", e));
        }
        match self.open_dir(rel) {
            Ok(fd) => Ok(fd),
            Err(rustix::io::Errno::NOENT) => {
                let (parent, base) = split_parent(rel);
                let pfd = self.open_or_make(parent)?;
                match self.mkdir_private(&pfd, base) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(fs_err(rel, "creating directory", e)),
                }
                self.open_dir(rel)
                    .map_err(|e| fs_err(rel, "opening directory", e))
            }
            Err(e) => Err(fs_err(
                rel,
                "opening directory (a symlink or file in the way?)",
                e,
            )),
        }
    }

    fn open_dir(&self, rel: &[u8]) -> rustix::io::Result<OwnedFd> {
        rustix::fs::openat2(
            &self.root,
            rel,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            BENEATH,
        )
    }

    /// Make room for a new entry: anything already there that is not a directory goes.
    fn clear(&self, dir: &OwnedFd, base: &[u8], keep_dir: bool, path: &[u8]) -> Result<()> {
        match rustix::fs::statat(dir, base, AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(fs_err(path, "stat", e)),
            Ok(st) => {
                let is_dir = rustix::fs::FileType::from_raw_mode(st.st_mode)
                    == rustix::fs::FileType::Directory;
                if is_dir && keep_dir {
                    return Ok(());
                }
                if is_dir {
                    return Err(fs_err(
                        path,
                        "replacing a directory",
                        "target directory is not empty (use a fresh DIR)",
                    ));
                }
                rustix::fs::unlinkat(dir, base, AtFlags::empty())
                    .map_err(|e| fs_err(path, "removing old entry", e))
            }
        }
    }

    fn apply<R: BufRead>(
        &mut self,
        h: &Header<'_>,
        rd_data: &mut TarReader<R>,
        path: &[u8],
    ) -> Result<()> {
        let parent = split_parent(path).0;
        let dir = self.take_dir(parent)?;
        let r = self.apply_in(&dir, h, rd_data, path);
        self.cached = Some((parent.to_vec(), dir));
        r
    }

    /// Run `create`; if the name is taken (only possible with --force on a non-empty DIR),
    /// clear it and try once more.
    fn create_retry(
        &self,
        dir: &OwnedFd,
        base: &[u8],
        path: &[u8],
        what: &str,
        mut create: impl FnMut() -> rustix::io::Result<()>,
    ) -> Result<()> {
        match create() {
            Err(rustix::io::Errno::EXIST) => {
                self.clear(dir, base, false, path)?;
                create().map_err(|e| fs_err(path, what, e))
            }
            r => r.map_err(|e| fs_err(path, what, e)),
        }
    }

    fn apply_in<R: BufRead>(
        &mut self,
        dir: &OwnedFd,
        h: &Header<'_>,
        rd_data: &mut TarReader<R>,
        path: &[u8],
    ) -> Result<()> {
        let base = split_parent(path).1;
        let kind = h.kind;
        let (mode, uid, gid, mtime) = (h.mode() & 0o7777, h.uid(), h.gid(), h.mtime());
        let mode = self.safe_mode(mode, uid, gid);
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> = if self.opts.xattrs {
            h.pax_records()
                .into_iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix(b"SCHILY.xattr.")
                        .map(|n| (n.to_vec(), v.to_vec()))
                })
                .collect()
        } else {
            Vec::new()
        };
        let link = h.link.to_vec();
        let (devmajor, devminor) = (
            crate::tarstream::parse_numeric(&h.main()[329..337]).unwrap_or(0),
            crate::tarstream::parse_numeric(&h.main()[337..345]).unwrap_or(0),
        );
        match kind {
            EntryType::Directory => {
                match self.mkdir_private(dir, base) {
                    Ok(()) => {}
                    Err(rustix::io::Errno::EXIST) => {
                        // Keep a directory that is there already; anything else goes.
                        self.clear(dir, base, true, path)?;
                        match self.mkdir_private(dir, base) {
                            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                            Err(e) => return Err(fs_err(path, "creating directory", e)),
                        }
                    }
                    Err(e) => return Err(fs_err(path, "creating directory", e)),
                }
                if !xattrs.is_empty() {
                    let fd = self
                        .open_dir(path)
                        .map_err(|e| fs_err(path, "opening directory", e))?;
                    self.set_xattrs(&fd, path, &xattrs);
                }
                self.dirs.push(DirAttrs {
                    path: path.to_vec(),
                    mode,
                    uid,
                    gid,
                    mtime,
                });
            }
            EntryType::Regular | EntryType::Other(_) => {
                // Created with its permission bits (set again below when the umask took
                // some); setuid/setgid/sticky only after the owner, which clears them.
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let perm = Mode::from_raw_mode(mode & 0o777);
                let mut created = None;
                self.create_retry(dir, base, path, "creating file", || {
                    created = Some(rustix::fs::openat(dir, base, flags, perm)?);
                    Ok(())
                })?;
                let fd = created.ok_or_else(|| fs_err(path, "creating file", "no descriptor"))?;
                let mut f = std::fs::File::from(fd);
                rd_data
                    .copy_data(&mut f)
                    .map_err(|e| fs_err(path, "writing", e))?;
                self.stats.bytes += h.size;
                let fd: OwnedFd = f.into();
                let chowned = self.set_owner_fd(&fd, path, uid, gid)?;
                if chowned || mode & 0o7000 != 0 || mode & self.umask != 0 {
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
                        .map_err(|e| fs_err(path, "chmod", e))?;
                }
                self.set_xattrs(&fd, path, &xattrs);
                rustix::fs::futimens(&fd, &times(mtime))
                    .map_err(|e| fs_err(path, "setting mtime", e))?;
            }
            EntryType::Symlink => {
                self.create_retry(dir, base, path, "creating symlink", || {
                    rustix::fs::symlinkat(link.as_slice(), dir, base)
                })?;
                self.chown_at(dir, base, path, uid, gid)?;
                let _ = rustix::fs::utimensat(dir, base, &times(mtime), AtFlags::SYMLINK_NOFOLLOW);
            }
            EntryType::HardLink => {
                let target = normalize(&link).map_err(|e| fs_err(path, "hardlink target", e))?;
                let target = trim_dir(&target).to_vec();
                let (tparent, tbase) = split_parent(&target);
                let tdir = self
                    .open_dir_any(tparent)
                    .map_err(|e| fs_err(path, "hardlink target directory", e))?;
                // linkat(…, 0) does not follow a symlink target: it links the symlink itself.
                let what = format!("hardlink to /{}", String::from_utf8_lossy(&target));
                self.create_retry(dir, base, path, &what, || {
                    rustix::fs::linkat(&tdir, tbase, dir, base, AtFlags::empty())
                })?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let ft = match kind {
                    EntryType::Char => rustix::fs::FileType::CharacterDevice,
                    EntryType::Block => rustix::fs::FileType::BlockDevice,
                    _ => rustix::fs::FileType::Fifo,
                };
                if kind != EntryType::Fifo && !self.is_root {
                    tracing::warn!(
                        "skipping device /{} (needs root)",
                        String::from_utf8_lossy(path)
                    );
                    self.stats.skipped_devices += 1;
                    return Ok(());
                }
                let dev = rustix::fs::makedev(devmajor as u32, devminor as u32);
                self.create_retry(dir, base, path, "creating device node", || {
                    rustix::fs::mknodat(dir, base, ft, Mode::from_raw_mode(mode), dev)
                })?;
                self.chown_at(dir, base, path, uid, gid)?;
                rustix::fs::chmodat(dir, base, Mode::from_raw_mode(mode), AtFlags::empty())
                    .map_err(|e| fs_err(path, "chmod", e))?;
                let _ = rustix::fs::utimensat(dir, base, &times(mtime), AtFlags::SYMLINK_NOFOLLOW);
            }
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// A new directory only its owner can enter, whatever the umask; its own mode comes
    /// after its children.
    fn mkdir_private(&self, dir: &OwnedFd, base: &[u8]) -> rustix::io::Result<()> {
        rustix::fs::mkdirat(dir, base, Mode::from_raw_mode(0o700))?;
        if self.umask & 0o700 != 0 {
            rustix::fs::chmodat(dir, base, Mode::from_raw_mode(0o700), AtFlags::empty())?;
        }
        Ok(())
    }

    /// Set the owner of a name in `dir` (not following a symlink), when owners are kept.
    fn chown_at(&self, dir: &OwnedFd, base: &[u8], path: &[u8], uid: u64, gid: u64) -> Result<()> {
        if self.opts.same_owner {
            rustix::fs::chownat(
                dir,
                base,
                Some(uid_of(uid)),
                Some(gid_of(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| fs_err(path, "chown", e))?;
        }
        Ok(())
    }

    /// Open a directory that must already exist (a hardlink's target's).
    fn open_dir_any(&self, rel: &[u8]) -> rustix::io::Result<OwnedFd> {
        if rel.is_empty() {
            return rustix::io::fcntl_dupfd_cloexec(&self.root, 0);
        }
        self.open_dir(rel)
    }

    /// Set the owner when asked and it differs from the creator's; says whether it did.
    /// Setuid and setgid only with the owner they were meant for: when the owner is not
    /// restored (`--no-same-owner`, or not root), a setuid file of uid 1000 must not become a
    /// setuid file of the extracting user — what GNU tar and libarchive do.
    fn safe_mode(&self, mode: u32, uid: u64, gid: u64) -> u32 {
        let owner_kept = self.opts.same_owner || (uid == self.ids.0 && gid == self.ids.1);
        if owner_kept { mode } else { mode & !0o6000 }
    }

    fn set_owner_fd(&self, fd: &OwnedFd, path: &[u8], uid: u64, gid: u64) -> Result<bool> {
        if !self.opts.same_owner || (uid == self.ids.0 && gid == self.ids.1) {
            return Ok(false);
        }
        rustix::fs::fchown(fd, Some(uid_of(uid)), Some(gid_of(gid)))
            .map_err(|e| fs_err(path, "chown", e))?;
        Ok(true)
    }

    fn set_xattrs(&mut self, fd: &OwnedFd, path: &[u8], xattrs: &[(Vec<u8>, Vec<u8>)]) {
        for (name, value) in xattrs {
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            if let Err(e) =
                rustix::fs::fsetxattr(fd.as_fd(), name, value, rustix::fs::XattrFlags::empty())
                && !self.warned_xattr
            {
                tracing::warn!(
                    "xattr {name} on /{}: {e} (further xattr errors not shown)",
                    String::from_utf8_lossy(path)
                );
                self.warned_xattr = true;
            }
        }
    }

    /// Directory modes, owners and mtimes, deepest first.
    fn finish_dirs(&mut self) -> Result<()> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.path.len()));
        for d in dirs {
            let fd = self
                .open_dir(&d.path)
                .map_err(|e| fs_err(&d.path, "opening directory", e))?;
            // O_PATH descriptors cannot be chmod'ed directly: go through the parent.
            let (parent, base) = split_parent(&d.path);
            let pfd = self
                .open_dir_any(parent)
                .map_err(|e| fs_err(&d.path, "opening parent", e))?;
            if self.opts.same_owner {
                rustix::fs::chownat(
                    &pfd,
                    base,
                    Some(uid_of(d.uid)),
                    Some(gid_of(d.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| fs_err(&d.path, "chown", e))?;
            }
            rustix::fs::chmodat(&pfd, base, Mode::from_raw_mode(d.mode), AtFlags::empty())
                .map_err(|e| fs_err(&d.path, "chmod", e))?;
            rustix::fs::utimensat(&pfd, base, &times(d.mtime), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| fs_err(&d.path, "setting mtime", e))?;
            drop(fd);
        }
        Ok(())
    }
}

fn uid_of(u: u64) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(u as u32)
}

fn gid_of(g: u64) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(g as u32)
}

fn times(mtime: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Extract the merged `layers` into `dir` (which must exist).
pub fn extract(layers: &[Layer], dir: &Path, opts: &ExtractOptions) -> Result<ExtractStats> {
    let root = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("opening {}", dir.display()), e.into()))?;
    extract_beneath(layers, root, opts)
}

/// The process's umask, read without changing it (Linux 4.7+ shows it in
/// `/proc/self/status`); unknown, every bit counts as masked, so every mode is set anew.
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o777)
}

fn extract_beneath(layers: &[Layer], root: OwnedFd, opts: &ExtractOptions) -> Result<ExtractStats> {
    let (tx, rx) = sync_channel::<Vec<u8>>(8);
    let mopts = MergeOptions {
        verify: opts.verify,
        progress: opts.progress.clone(),
        cancel: opts.cancel.clone(),
    };
    std::thread::scope(|s| {
        let merge = s.spawn(move || {
            let mut w = ChannelWriter {
                tx,
                buf: Vec::with_capacity(CHUNK),
            };
            let r = Merger::new(&mut w).run(layers, &mopts);
            let r = r.and_then(|st| {
                w.flush()
                    .map(|_| st)
                    .map_err(|e| Error::output("handing over the merged stream", e))
            });
            drop(w);
            r
        });
        let mut ex = Extractor {
            root,
            opts,
            is_root: rustix::process::geteuid().is_root(),
            umask: current_umask(),
            ids: (
                rustix::process::geteuid().as_raw() as u64,
                rustix::process::getegid().as_raw() as u64,
            ),
            dirs: Vec::new(),
            cached: None,
            stats: ExtractStats::default(),
            warned_xattr: false,
        };
        let applied = apply_stream(
            &mut ex,
            ChannelReader {
                rx,
                cur: Vec::new(),
                at: 0,
            },
        );
        let merged = merge
            .join()
            .map_err(|_| Error::Format("the merge thread panicked".into()))?;
        match (merged, applied) {
            // The merge failed on its own (a digest mismatch, a corrupt layer): that is the
            // cause, whatever the cut-short stream then did to the extraction.
            (Err(m), _) if m.kind() != crate::error::ErrorKind::Output => return Err(m),
            (Err(m), Ok(())) => return Err(m),
            // The merge only stopped because extraction did.
            (_, Err(a)) => return Err(a),
            (Ok(_), Ok(())) => {}
        }
        ex.finish_dirs()?;
        Ok(ex.stats)
    })
}

fn apply_stream(ex: &mut Extractor<'_>, input: ChannelReader) -> Result<()> {
    let mut rd = TarReader::new(input);
    let mut path = Vec::new();
    loop {
        let Some(h) = rd
            .next_entry()
            .map_err(|e| Error::Format(format!("merged stream: {e}")))?
        else {
            return Ok(());
        };
        let norm = normalize(h.path).map_err(|e| fs_err(h.path, "path", e))?;
        path.clear();
        path.extend_from_slice(trim_dir(&norm));
        if path.is_empty() {
            continue; // the root: DIR itself
        }
        // Work on a detached copy of the header so the reader can stream the data.
        let raw = h.raw.to_vec();
        let mut hr = TarReader::new(&raw[..]);
        let hh = hr
            .next_entry()
            .map_err(|e| Error::Format(format!("merged stream: {e}")))?
            .ok_or_else(|| Error::Format("merged stream: lost a header".into()))?;
        ex.apply(&hh, &mut rd, &path)?;
    }
}
