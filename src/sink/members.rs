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
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Size and sha256 (hex) of some bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digested {
    pub size: u64,
    pub sha256: String,
}

impl Digested {
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.sha256)
    }
}

/// Counts and hashes what passes through to `inner`.
pub struct HashWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }
    pub fn finish(self) -> (W, Digested) {
        let d = Digested {
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
        };
        (self.inner, d)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Something that writes a blob, the same bytes every time it is called.
pub type Produce<'a> = dyn FnMut(&mut dyn Write) -> Result<()> + 'a;

/// Where an image's files go.
pub trait Members {
    fn add_bytes(&mut self, name: &str, data: &[u8]) -> Result<()>;
    /// Copy a region (a blob as stored).
    fn add_region(&mut self, name: &str, region: &FileRegion) -> Result<Digested>;
    /// A member whose name may depend on its digest, produced by `produce`.
    fn add_produced(
        &mut self,
        name_of: &dyn Fn(&Digested) -> String,
        produce: &mut Produce<'_>,
    ) -> Result<Digested>;
    /// Close the output (tar trailer; nothing for a directory).
    fn finish(&mut self) -> Result<()>;
}

fn wio(e: io::Error) -> Error {
    Error::io("writing output", e)
}

pub trait WriteSeek: Write + Seek {}
impl<T: Write + Seek> WriteSeek for T {}

/// Members of an outer tar.
pub enum TarMembers<'a> {
    Seekable { w: &'a mut dyn WriteSeek, pos: u64 },
    Stream { w: &'a mut dyn Write },
}

impl<'a> TarMembers<'a> {
    pub fn seekable(w: &'a mut dyn WriteSeek) -> Result<Self> {
        let pos = w.stream_position().map_err(wio)?;
        Ok(TarMembers::Seekable { w, pos })
    }

    pub fn stream(w: &'a mut dyn Write) -> Self {
        TarMembers::Stream { w }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            TarMembers::Seekable { w, .. } => *w,
            TarMembers::Stream { w } => *w,
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
    fn add_bytes(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.write_all(&header(name, data.len() as u64))?;
        self.write_all(data)?;
        self.pad(data.len() as u64)
    }

    fn add_region(&mut self, name: &str, region: &FileRegion) -> Result<Digested> {
        self.write_all(&header(name, region.len))?;
        let mut hw = HashWriter::new(self.writer());
        io::copy(&mut region.reader(), &mut hw)
            .map_err(|e| Error::io(format!("copying {name}"), e))?;
        let (_, d) = hw.finish();
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
                let (_, d) = hw.finish();
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
            TarMembers::Stream { w } => {
                // Pass 1: count and hash only.
                let mut counter = HashWriter::new(io::sink());
                produce(&mut counter)?;
                let (_, first) = counter.finish();
                let name = name_of(&first);
                w.write_all(&header(&name, first.size)).map_err(wio)?;
                // Pass 2: the real bytes, which must be the same.
                let mut hw = HashWriter::new(&mut **w);
                produce(&mut hw)?;
                let (_, second) = hw.finish();
                if second != first {
                    return Err(Error::Format(format!(
                        "{name} changed between the two passes ({} bytes, then {}): is the input being modified?",
                        first.size, second.size
                    )));
                }
                w.write_all(&tarstream::ZEROS[..(padded(first.size) - first.size) as usize])
                    .map_err(wio)?;
                Ok(first)
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        self.write_all(&tarstream::ZEROS)?;
        self.writer().flush().map_err(wio)
    }
}

/// Members as files under a directory (an OCI layout directory).
pub struct DirMembers {
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
        std::fs::write(&p, data).map_err(|e| Error::io(format!("writing {}", p.display()), e))
    }

    fn add_region(&mut self, name: &str, region: &FileRegion) -> Result<Digested> {
        let p = self.path(name)?;
        let f = Self::create(&p)?;
        let mut hw = HashWriter::new(io::BufWriter::with_capacity(1 << 20, f));
        io::copy(&mut region.reader(), &mut hw)
            .map_err(|e| Error::io(format!("copying {name}"), e))?;
        let (mut w, d) = hw.finish();
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
        let (mut w, d) = hw.finish();
        w.flush().map_err(wio)?;
        let dest = self.path(&name_of(&d))?;
        std::fs::rename(&tmp, &dest)
            .map_err(|e| Error::io(format!("renaming to {}", dest.display()), e))?;
        Ok(d)
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}
