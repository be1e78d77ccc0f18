//! Writing the files of an image, into a tar or a directory, with exact sizes and digests.
//!
//! A tar member's header needs its size (and, for content-addressed names, its digest) before
//! its content. On a seekable file the header is written as a placeholder, the content
//! streamed and hashed, then the header patched in place. On a pipe the content is produced
//! twice: a first pass that only counts and hashes, then the real one — never padded, never
//! estimated, nothing staged on disk.

use crate::error::{Error, Result};
use crate::image::FileRegion;
use crate::tarstream::{self, BLOCK, padded};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use xxhash_rust::xxh3::Xxh3;

/// Size and sha256 (hex) of some bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digested {
    /// Length, in bytes.
    pub size: u64,
    /// SHA-256, as lower-case hex (no `sha256:` prefix).
    pub sha256: String,
}

impl Digested {
    /// The digest as images write it: `sha256:<hex>`.
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.sha256)
    }
}

/// Counts and hashes what passes through to `inner`, buffering it: each full 1 MiB buffer is
/// written to `inner`, then handed whole to a helper thread that hashes it (so the hashing
/// overlaps the merge that produces the bytes) and gives it back to be filled again — the
/// bytes are copied once, into the buffer, and no buffer is allocated per chunk. Nothing
/// reaches `inner` after the last full buffer until `flush` or `finish`.
pub struct HashWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    /// Buffers the hasher is done with.
    spent: Option<Receiver<Vec<u8>>>,
    hasher: Option<JoinHandle<Hashes>>,
    /// Hashing here instead, when the helper thread could not be started.
    inline: Option<Hashes>,
    size: u64,
}

/// SHA-256, and for a first pass the fast check its second pass is compared with.
struct Hashes {
    sha: Sha256,
    check: Option<Xxh3>,
}

impl Hashes {
    fn new(with_check: bool) -> Self {
        Hashes {
            sha: Sha256::new(),
            check: with_check.then(Xxh3::new),
        }
    }

    fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        if let Some(x) = &mut self.check {
            x.update(data);
        }
    }
}

const HASH_CHUNK: usize = 1 << 20;
/// Buffers in the hasher's hands at once (queued or being hashed), beside the one filling.
const HASH_QUEUE: usize = 3;

impl<W: Write> HashWriter<W> {
    /// A writer to `inner` that counts and computes the SHA-256.
    pub fn new(inner: W) -> Self {
        Self::start(inner, false)
    }

    /// Also computes the xxh3-128 check a [`CheckWriter`] pass is compared with.
    pub fn checked(inner: W) -> Self {
        Self::start(inner, true)
    }

    fn start(inner: W, with_check: bool) -> Self {
        let (tx, rx) = sync_channel::<Vec<u8>>(HASH_QUEUE - 1);
        let (back, spent) = sync_channel::<Vec<u8>>(HASH_QUEUE);
        let hasher = std::thread::Builder::new()
            .name("output-hasher".into())
            .spawn(move || {
                let mut h = Hashes::new(with_check);
                for mut chunk in rx {
                    h.update(&chunk);
                    chunk.clear();
                    let _ = back.try_send(chunk);
                }
                h
            })
            .ok();
        let threaded = hasher.is_some();
        HashWriter {
            inner,
            buf: if threaded {
                Vec::with_capacity(HASH_CHUNK)
            } else {
                Vec::new()
            },
            tx: threaded.then_some(tx),
            spent: threaded.then_some(spent),
            hasher,
            inline: (!threaded).then(|| Hashes::new(with_check)),
            size: 0,
        }
    }

    /// Write the buffer on, then give it to the hasher.
    fn pass_on(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.inner.write_all(&self.buf)?;
        let next = match self.spent.as_ref().map(Receiver::try_recv) {
            Some(Ok(v)) => v,
            _ => Vec::with_capacity(HASH_CHUNK),
        };
        let full = std::mem::replace(&mut self.buf, next);
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(full).is_ok());
        if !sent {
            return Err(io::Error::other("the output hasher stopped"));
        }
        Ok(())
    }

    /// Wait for the hashing to end: the inner writer back (everything written to it, not
    /// flushed), with the size and digest of what was written.
    pub fn finish(self) -> Result<(W, Digested)> {
        self.finish_checked().map(|(w, d, _)| (w, d))
    }

    /// The digest, and the xxh3-128 check when made with [`HashWriter::checked`].
    pub fn finish_checked(mut self) -> Result<(W, Digested, Option<u128>)> {
        let h = match self.inline.take() {
            Some(h) => h,
            None => {
                self.pass_on().map_err(wio)?;
                drop(self.tx.take());
                // A hasher that died has not seen everything: its digest must not be used.
                match self.hasher.take().map(JoinHandle::join) {
                    Some(Ok(h)) => h,
                    _ => return Err(Error::Format("the output hasher thread failed".into())),
                }
            }
        };
        let d = Digested {
            size: self.size,
            sha256: hex::encode(h.sha.finalize()),
        };
        Ok((self.inner, d, h.check.map(|x| x.digest128())))
    }
}

/// A second pass: counts what passes through and fingerprints it with xxh3-128 (at memory
/// speed), to be compared with what the first pass measured — the SHA-256 is not computed
/// twice. Catches any accidental change between the passes (a file edited during a build);
/// it is not meant to stand against someone crafting xxh3 collisions in the sources mid-build
/// (who could as well change them before it).
pub struct CheckWriter<W: Write> {
    inner: W,
    check: Xxh3,
    size: u64,
}

impl<W: Write> CheckWriter<W> {
    /// A writer to `inner` that counts and fingerprints.
    pub fn new(inner: W) -> Self {
        CheckWriter {
            inner,
            check: Xxh3::new(),
            size: 0,
        }
    }

    /// The bytes written and their xxh3-128.
    pub fn finish(self) -> (u64, u128) {
        (self.size, self.check.digest128())
    }
}

impl<W: Write> Write for CheckWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.size += n as u64;
        self.check.update(&data[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(h) = &mut self.inline {
            let n = self.inner.write(data)?;
            h.update(&data[..n]);
            self.size += n as u64;
            return Ok(n);
        }
        let room = HASH_CHUNK - self.buf.len().min(HASH_CHUNK);
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        self.size += n as u64;
        if self.buf.len() >= HASH_CHUNK {
            self.pass_on()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.pass_on()?;
        self.inner.flush()
    }
}

/// Something that writes a blob, the same bytes every time it is called.
pub type Produce<'a> = dyn FnMut(&mut dyn Write) -> Result<()> + 'a;

/// Write the tar `produce` makes into `w` through `compression` (at `level`): the tar's
/// own digest and size (the layer's diff_id) come back; `w` sees the stored bytes.
pub fn compressed_tar(
    w: &mut dyn Write,
    compression: crate::compression::Compression,
    level: Option<u32>,
    produce: &mut Produce<'_>,
) -> Result<Digested> {
    let enc = crate::compression::Encoder::new(compression, level, w)
        .map_err(|e| Error::io("starting the compressor", e))?;
    let mut tar = HashWriter::new(enc);
    produce(&mut tar)?;
    let (enc, td) = tar.finish()?;
    enc.finish()
        .map_err(|e| Error::io("finishing the compressed stream", e))?;
    Ok(td)
}

/// Where an image's files go.
pub trait Members {
    /// A small file from memory (a config, a manifest, `index.json`).
    fn add_bytes(&mut self, name: &str, data: &[u8]) -> Result<()>;
    /// Copy a region (a blob as stored). `known`: its sha256 (hex), already verified, so
    /// it is not hashed again.
    fn add_region(
        &mut self,
        name: &str,
        region: &FileRegion,
        known: Option<&str>,
    ) -> Result<Digested>;
    /// A member whose name may depend on its digest, produced by `produce`.
    fn add_produced(
        &mut self,
        name_of: &dyn Fn(&Digested) -> String,
        produce: &mut Produce<'_>,
    ) -> Result<Digested>;
    /// A member of a known `size` (planned ahead) and a name that does not depend on its
    /// digest, produced by `produce` — once, even to a stream. Producing another size is an
    /// error (the input changed between the plan and now).
    fn add_sized(&mut self, name: &str, size: u64, produce: &mut Produce<'_>) -> Result<Digested> {
        let d = self.add_produced(&|_| name.to_string(), produce)?;
        check_planned(name, size, d.size)?;
        Ok(d)
    }
    /// Close the output (tar trailer; nothing for a directory).
    fn finish(&mut self) -> Result<()>;
    /// Whether `add_produced` runs its producer once (a directory, a seekable file), not
    /// twice (a pipe: size first, then bytes).
    fn produces_once(&self) -> bool {
        false
    }
}

/// A member produced at another size than planned.
fn check_planned(name: &str, planned: u64, produced: u64) -> Result<()> {
    if planned == produced {
        return Ok(());
    }
    Err(Error::Format(format!(
        "{name}: planned as {planned} bytes, produced {produced}: is the input being modified?"
    )))
}

fn wio(e: io::Error) -> Error {
    Error::output("writing output", e)
}

/// Move a region out with a kernel copy (`copy_file_range`, `sendfile`): `step(off, want)`
/// moves up to `want` bytes from `off` in the region's file, advancing `off`. A failure comes
/// back with whether nothing had been moved yet (a caller may then fall back).
fn kernel_copy(
    region: &FileRegion,
    mut step: impl FnMut(&mut u64, usize) -> rustix::io::Result<usize>,
) -> Result<(), (io::Error, bool)> {
    let mut off = region.offset;
    let end = region.offset + region.len;
    while off < end {
        let want = usize::try_from(end - off)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match step(&mut off, want) {
            Ok(0) => {
                let short = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file is shorter than its index says (truncated?)",
                );
                return Err((short, off == region.offset));
            }
            Ok(_) => {}
            Err(e) if e == rustix::io::Errno::INTR => {}
            Err(e) => return Err((e.into(), off == region.offset)),
        }
    }
    Ok(())
}

/// Copy a region into a new file with `copy_file_range` (no user-space copy), falling back
/// to reading and writing where the kernel cannot (across some filesystems).
fn copy_file_region(region: &FileRegion, out: &File) -> io::Result<u64> {
    use rustix::io::Errno;
    let copied = kernel_copy(region, |off, want| {
        rustix::fs::copy_file_range(&*region.file, Some(off), out, None, want)
    });
    match copied {
        Ok(()) => Ok(region.len),
        Err((e, true))
            if [Errno::XDEV, Errno::NOSYS, Errno::INVAL, Errno::OPNOTSUPP]
                .iter()
                .any(|n| e.raw_os_error() == Some(n.raw_os_error())) =>
        {
            let mut w = io::BufWriter::with_capacity(1 << 20, out);
            let n = io::copy(&mut region.reader(), &mut w)?;
            w.flush()?;
            Ok(n)
        }
        Err((e, _)) => Err(e),
    }
}

/// Regions smaller than this are copied through the output's buffer (a flush and a system
/// call each would cost more than the copy).
const SENDFILE_AT_LEAST: u64 = 1 << 20;

fn is_pipe(f: &File) -> bool {
    use std::os::unix::fs::FileTypeExt;
    f.metadata().is_ok_and(|m| m.file_type().is_fifo())
}

/// Send a region into a pipe with `sendfile(2)`: the kernel hands the pipe the page-cache
/// pages, nothing is copied through strata.
fn send_region(region: &FileRegion, pipe: &File) -> io::Result<()> {
    kernel_copy(region, |off, want| {
        rustix::fs::sendfile(pipe, &*region.file, Some(off), want)
    })
    .map_err(|(e, _)| e)
}

/// Copy a region to `w`, hashing it unless its digest is `known` (already verified).
fn copy_region(
    name: &str,
    region: &FileRegion,
    known: Option<&str>,
    w: &mut dyn Write,
) -> Result<Digested> {
    let copy_err = |e| Error::io(format!("copying {name}"), e);
    let d = match known {
        Some(sha) => {
            let n = io::copy(&mut region.reader(), w).map_err(copy_err)?;
            Digested {
                size: n,
                sha256: sha.to_string(),
            }
        }
        None => {
            let mut hw = HashWriter::new(w);
            io::copy(&mut region.reader(), &mut hw).map_err(copy_err)?;
            hw.finish()?.1
        }
    };
    if d.size != region.len {
        return Err(Error::Format(format!(
            "{name}: the source changed size while being copied"
        )));
    }
    Ok(d)
}

/// A writer that can also seek (an output file), as one trait object.
pub trait WriteSeek: Write + Seek {}
impl<T: Write + Seek> WriteSeek for T {}

/// Members of an outer tar.
pub enum TarMembers<'a> {
    /// To a file: produced members get a placeholder header, patched once their size and
    /// digest are known.
    Seekable {
        /// The output.
        w: &'a mut dyn WriteSeek,
        /// Where the next member starts, in bytes from the start of `w`.
        pos: u64,
    },
    /// To a pipe. `known`: the first passes of the produced members, already done by a
    /// [`Measure`] run of the same image; without them each member is produced twice here.
    Stream {
        /// The output.
        w: &'a mut dyn Write,
        /// First passes not used yet, in member order: (size and digest, xxh3-128 check).
        known: VecDeque<(Digested, u128)>,
        /// `w`'s own file when it is a pipe (a duplicate of its descriptor): verified regions
        /// go into it by `sendfile`, page-cache to pipe with no copy through user space.
        pipe: Option<File>,
    },
}

impl<'a> TarMembers<'a> {
    /// A tar written to a seekable `w`, from its current position.
    pub fn seekable(w: &'a mut dyn WriteSeek) -> Result<Self> {
        let pos = w.stream_position().map_err(wio)?;
        Ok(TarMembers::Seekable { w, pos })
    }

    /// A tar written to a stream: each produced member is produced twice.
    pub fn stream(w: &'a mut dyn Write) -> Self {
        TarMembers::Stream {
            w,
            known: VecDeque::new(),
            pipe: None,
        }
    }

    /// A stream whose produced members were measured beforehand, in this order.
    pub fn replay(w: &'a mut dyn Write, measured: Measure) -> Self {
        TarMembers::Stream {
            w,
            known: measured.produced.into(),
            pipe: None,
        }
    }

    /// Copy verified regions into `pipe` — the file `w` writes to, duplicated — in the
    /// kernel, `w` flushed first. Only a pipe is taken (anything else is ignored).
    pub fn with_pipe(mut self, pipe: Option<File>) -> Self {
        if let TarMembers::Stream { pipe: p, .. } = &mut self {
            *p = pipe.filter(is_pipe);
        }
        self
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            TarMembers::Seekable { w, .. } => *w,
            TarMembers::Stream { w, .. } => *w,
        }
    }

    fn advance(&mut self, n: u64) {
        if let TarMembers::Seekable { pos, .. } = self {
            *pos += n;
        }
    }

    fn write_all(&mut self, data: &[u8]) -> Result<()> {
        self.writer().write_all(data).map_err(wio)?;
        self.advance(data.len() as u64);
        Ok(())
    }

    fn pad(&mut self, size: u64) -> Result<()> {
        let p = (padded(size) - size) as usize;
        self.write_all(&tarstream::ZEROS[..p])
    }
}

fn header(name: &str, size: u64) -> Vec<u8> {
    tarstream::file_header(name.as_bytes(), 0o644, size)
}

impl Members for TarMembers<'_> {
    fn produces_once(&self) -> bool {
        matches!(self, TarMembers::Seekable { .. })
    }

    fn add_bytes(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.write_all(&header(name, data.len() as u64))?;
        self.write_all(data)?;
        self.pad(data.len() as u64)
    }

    fn add_region(
        &mut self,
        name: &str,
        region: &FileRegion,
        known: Option<&str>,
    ) -> Result<Digested> {
        self.write_all(&header(name, region.len))?;
        if let (
            TarMembers::Stream {
                w, pipe: Some(p), ..
            },
            Some(sha),
        ) = (&mut *self, known)
            && region.len >= SENDFILE_AT_LEAST
        {
            w.flush().map_err(wio)?;
            send_region(region, p).map_err(|e| Error::io(format!("copying {name}"), e))?;
            let d = Digested {
                size: region.len,
                sha256: sha.to_string(),
            };
            self.pad(d.size)?;
            return Ok(d);
        }
        let d = copy_region(name, region, known, self.writer())?;
        self.advance(d.size);
        self.pad(d.size)?;
        Ok(d)
    }

    fn add_produced(
        &mut self,
        name_of: &dyn Fn(&Digested) -> String,
        produce: &mut Produce<'_>,
    ) -> Result<Digested> {
        match self {
            TarMembers::Seekable { w, pos } => {
                let at = *pos;
                // Placeholder header; patched once size and digest are known.
                w.write_all(&[0u8; BLOCK]).map_err(wio)?;
                let mut hw = HashWriter::new(&mut **w);
                produce(&mut hw)?;
                let (_, d) = hw.finish()?;
                let name = name_of(&d);
                let hdr = header(&name, d.size);
                if hdr.len() != BLOCK {
                    return Err(Error::Format(format!(
                        "member name too long for a patched header: {name}"
                    )));
                }
                w.write_all(&tarstream::ZEROS[..(padded(d.size) - d.size) as usize])
                    .map_err(wio)?;
                let end = at + BLOCK as u64 + padded(d.size);
                w.seek(SeekFrom::Start(at)).map_err(wio)?;
                w.write_all(&hdr).map_err(wio)?;
                w.seek(SeekFrom::Start(end)).map_err(wio)?;
                *pos = end;
                Ok(d)
            }
            TarMembers::Stream { w, known, .. } => {
                // Pass 1: count and hash only (unless a Measure run did it).
                let (first, check) = match known.pop_front() {
                    Some(k) => k,
                    None => first_pass(produce)?,
                };
                let name = name_of(&first);
                w.write_all(&header(&name, first.size)).map_err(wio)?;
                // Pass 2: the real bytes, which must be the same.
                let mut cw = CheckWriter::new(&mut **w);
                produce(&mut cw)?;
                let (size, second) = cw.finish();
                if (size, second) != (first.size, check) {
                    return Err(Error::Format(format!(
                        "{name} changed between the two passes ({} bytes, then {size}{}): is the input being modified?",
                        first.size,
                        if size == first.size {
                            ", other content"
                        } else {
                            ""
                        }
                    )));
                }
                w.write_all(&tarstream::ZEROS[..(padded(first.size) - first.size) as usize])
                    .map_err(wio)?;
                Ok(first)
            }
        }
    }

    fn add_sized(&mut self, name: &str, size: u64, produce: &mut Produce<'_>) -> Result<Digested> {
        // A replayed stream measured this member too: its first pass is this member's.
        if let TarMembers::Stream { known, .. } = self
            && let Some((first, _)) = known.pop_front()
        {
            check_planned(name, size, first.size)?;
        }
        self.write_all(&header(name, size))?;
        let mut hw = HashWriter::new(self.writer());
        produce(&mut hw)?;
        let (_, d) = hw.finish()?;
        // The header is out: a wrong size cannot be mended, only refused.
        check_planned(name, size, d.size)?;
        self.advance(d.size);
        self.pad(d.size)?;
        Ok(d)
    }

    fn finish(&mut self) -> Result<()> {
        self.write_all(&tarstream::ZEROS)?;
        self.writer().flush().map_err(wio)
    }
}

/// Members as files under a directory (an OCI layout directory).
pub struct DirMembers {
    /// The directory; member names are paths under it.
    pub root: PathBuf,
}

impl DirMembers {
    fn path(&self, name: &str) -> Result<PathBuf> {
        let p = self.root.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        Ok(p)
    }

    fn create(path: &Path) -> Result<File> {
        File::create(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))
    }
}

impl Members for DirMembers {
    fn add_bytes(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let p = self.path(name)?;
        std::fs::write(&p, data).map_err(|e| Error::output(format!("writing {}", p.display()), e))
    }

    fn add_region(
        &mut self,
        name: &str,
        region: &FileRegion,
        known: Option<&str>,
    ) -> Result<Digested> {
        let p = self.path(name)?;
        let file = Self::create(&p)?;
        if let Some(sha) = known {
            // Nothing to hash: the kernel copies file to file.
            let n = copy_file_region(region, &file)
                .map_err(|e| Error::output(format!("writing {}", p.display()), e))?;
            return Ok(Digested {
                size: n,
                sha256: sha.to_string(),
            });
        }
        let mut w = io::BufWriter::with_capacity(1 << 20, file);
        let d = copy_region(name, region, known, &mut w)?;
        w.flush().map_err(wio)?;
        Ok(d)
    }

    fn add_produced(
        &mut self,
        name_of: &dyn Fn(&Digested) -> String,
        produce: &mut Produce<'_>,
    ) -> Result<Digested> {
        let tmp = self.path(".blob.partial")?;
        let f = Self::create(&tmp)?;
        let mut hw = HashWriter::new(io::BufWriter::with_capacity(1 << 20, f));
        produce(&mut hw)?;
        let (mut w, d) = hw.finish()?;
        w.flush().map_err(wio)?;
        let dest = self.path(&name_of(&d))?;
        std::fs::rename(&tmp, &dest)
            .map_err(|e| Error::io(format!("renaming to {}", dest.display()), e))?;
        Ok(d)
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }

    fn produces_once(&self) -> bool {
        true
    }
}

/// A dry run: produced members are produced once, counted and hashed, and nothing is written.
/// Running a whole image through it before streaming it to a pipe does every first pass up
/// front — so any error (an unreadable file, a corrupt layer) comes before the first byte out.
#[derive(Default)]
pub struct Measure {
    produced: Vec<(Digested, u128)>,
}

/// A first pass: size, SHA-256 and the check the second pass is compared with.
fn first_pass(produce: &mut Produce<'_>) -> Result<(Digested, u128)> {
    let mut counter = HashWriter::checked(io::sink());
    produce(&mut counter)?;
    let (_, d, check) = counter.finish_checked()?;
    let check = check.ok_or_else(|| Error::Format("first pass without a check".into()))?;
    Ok((d, check))
}

impl Members for Measure {
    fn add_bytes(&mut self, _name: &str, _data: &[u8]) -> Result<()> {
        Ok(())
    }

    fn add_region(
        &mut self,
        name: &str,
        region: &FileRegion,
        known: Option<&str>,
    ) -> Result<Digested> {
        match known {
            Some(sha) => Ok(Digested {
                size: region.len,
                sha256: sha.to_string(),
            }),
            None => copy_region(name, region, None, &mut io::sink()),
        }
    }

    fn add_produced(
        &mut self,
        _name_of: &dyn Fn(&Digested) -> String,
        produce: &mut Produce<'_>,
    ) -> Result<Digested> {
        let (d, check) = first_pass(produce)?;
        self.produced.push((d.clone(), check));
        Ok(d)
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the sizes of the writes (a header, a chunk straddling the buffer, several
    /// buffers at once, a flush between), the inner writer gets the same bytes in order and the
    /// digest is theirs.
    #[test]
    fn hash_writer_passes_every_byte_on_and_hashes_them() {
        let data: Vec<u8> = (0..3 * HASH_CHUNK + 12345)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for sizes in [
            vec![512, 1 << 16],
            vec![HASH_CHUNK - 1, 3],
            vec![3 * HASH_CHUNK],
            vec![1],
        ] {
            let mut hw = HashWriter::checked(Vec::new());
            let (mut at, mut k) = (0, 0);
            while at < data.len() {
                let n = sizes[k % sizes.len()].min(data.len() - at);
                hw.write_all(&data[at..at + n]).unwrap();
                if k == 2 {
                    hw.flush().unwrap();
                }
                at += n;
                k += 1;
            }
            let (out, d, check) = hw.finish_checked().unwrap();
            assert!(out == data, "{sizes:?}: the bytes passed on");
            assert_eq!(d.size, data.len() as u64);
            assert_eq!(d.sha256, hex::encode(Sha256::digest(&data)), "{sizes:?}");
            assert_eq!(check, Some(xxhash_rust::xxh3::xxh3_128(&data)));
        }
    }

    /// Nothing is held back past `flush`: a reader of the inner writer sees every byte.
    #[test]
    fn hash_writer_flush_passes_the_buffer_on() {
        let mut hw = HashWriter::new(Vec::new());
        hw.write_all(b"header").unwrap();
        hw.flush().unwrap();
        assert_eq!(hw.inner, b"header");
    }
}
