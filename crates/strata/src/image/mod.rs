//! Images: a config plus an ordered list of layers that open as byte streams.
//!
//! Every transport resolves to the same shape: each layer is a [`Blob`] — a region of a file
//! on disk (a blob file in an OCI layout, or a member of an outer tar read in place by
//! offset), or a stream kept in the blob store once read. One file per transport;
//! `reference` picks which.

pub mod archive;
pub mod docker_archive;
pub mod docker_daemon;
pub mod oci_layout;
pub mod platform;
pub mod registry;

use crate::blob::Blob;
use crate::error::{Error, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A byte range of a file, read with `pread` so many readers can share one descriptor.
#[derive(Clone, Debug)]
pub struct FileRegion {
    /// The file, shared by every region and reader of it.
    pub file: Arc<File>,
    /// Where the range starts in the file, in bytes.
    pub offset: u64,
    /// The range's length, in bytes.
    pub len: u64,
}

impl FileRegion {
    /// The whole file at `path`.
    pub fn whole(path: &Path) -> io::Result<FileRegion> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(FileRegion {
            file: Arc::new(file),
            offset: 0,
            len,
        })
    }

    /// A reader of the range from its start.
    pub fn reader(&self) -> RegionReader {
        RegionReader {
            region: self.clone(),
            pos: 0,
        }
    }

    /// The range's bytes, read into memory.
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(self.len as usize);
        self.reader().read_to_end(&mut v)?;
        Ok(v)
    }
}

/// Reads a [`FileRegion`] from its start; a file that ends before the region does is an
/// `UnexpectedEof` error.
pub struct RegionReader {
    region: FileRegion,
    pos: u64,
}

impl RegionReader {
    /// Bytes of the region not read yet.
    pub fn remaining(&self) -> u64 {
        self.region.len - self.pos
    }
}

impl Read for RegionReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.remaining();
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(left) as usize;
        let n = self
            .region
            .file
            .read_at(&mut buf[..want], self.region.offset + self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file is shorter than its index says (truncated?)",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// One layer, bottom = index 0.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The layer's position in the image (0 is the bottom layer).
    pub index: usize,
    /// Where the bytes are: the member name or blob path, for messages.
    pub location: String,
    /// The stored bytes.
    pub blob: Blob,
    /// The layer's media type, when the manifest gives one.
    pub media_type: Option<String>,
    /// Digest of the stored blob (verified while streaming when known).
    pub digest: Option<String>,
    /// Digest of the uncompressed tar, from the config's `rootfs.diff_ids` (verified likewise).
    pub diff_id: Option<String>,
    /// Where a non-distributable layer is fetched from (its descriptor's `urls`); empty for
    /// every other layer.
    pub urls: Vec<String>,
}

impl Layer {
    /// A short name for messages: index and digest.
    pub fn label(&self) -> String {
        let id = self
            .digest
            .as_deref()
            .or(self.diff_id.as_deref())
            .unwrap_or(&self.location);
        format!("layer {} ({})", self.index, short_digest(id))
    }

    /// The stored size (0 when a streamed blob's size is not known before reading it).
    pub fn stored_size(&self) -> u64 {
        self.blob.size().unwrap_or(0)
    }
}

/// A digest for display: `sha256:` and the first 12 hex digits; anything else as it is.
pub fn short_digest(d: &str) -> &str {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    if hex.len() > 12 && d.starts_with("sha256:") {
        &d[..7 + 12]
    } else {
        d
    }
}

/// A resolved image.
#[derive(Clone, Debug)]
pub struct Image {
    /// The reference as the user gave it.
    pub reference: String,
    /// The name of the transport that opened it (`docker-archive`, `oci`, …).
    pub transport: &'static str,
    /// The image's tags at its source (`busybox:latest`, an OCI ref name).
    pub tags: Vec<String>,
    /// The config's bytes as stored (what its digest covers).
    pub config_raw: Vec<u8>,
    /// The config, parsed.
    pub config: Value,
    /// The config's digest (`sha256:…`), when known.
    pub config_digest: Option<String>,
    /// The manifest's digest, when the image has a manifest blob.
    pub manifest_digest: Option<String>,
    /// The manifest as stored — its media type and bytes — when the transport has one (a
    /// registry, an OCI layout): what a copy that changes nothing writes again.
    pub manifest_raw: Option<(String, Vec<u8>)>,
    /// The layers, bottom first.
    pub layers: Vec<Layer>,
    /// The spool file behind `-` (stdin); removed when the image is dropped.
    pub _spool: Option<Arc<tempfile::TempPath>>,
}

impl Image {
    /// The `history` array of the config (empty when absent).
    pub fn history(&self) -> Vec<Value> {
        self.config
            .get("history")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    /// The layers from the bottom up to `--up-to` (all of them without one).
    pub fn layers_up_to(&self, spec: Option<&str>) -> Result<&[Layer]> {
        match spec {
            Some(spec) => Ok(&self.layers[..=self.layer_index(spec)?]),
            None => Ok(&self.layers),
        }
    }

    /// Resolve `--up-to`: a 0-based index from the bottom, or a digest / diff_id prefix.
    pub fn layer_index(&self, spec: &str) -> Result<usize> {
        // All digits is an index only as an index is written (no leading zero); digits are
        // also hex, so a digest prefix (4 digits or more) may match too — then the spec is
        // ambiguous.
        let index = spec
            .parse::<usize>()
            .ok()
            .filter(|_| spec == "0" || !spec.starts_with('0'));
        let want = spec.strip_prefix("sha256:").unwrap_or(spec);
        // A bare prefix of fewer than 4 hex digits names no digest (it would match by chance).
        let prefix = spec.starts_with("sha256:") || want.len() >= 4;
        let matches: Vec<usize> = if want.is_empty() || !prefix {
            Vec::new()
        } else {
            self.layers
                .iter()
                .filter(|l| {
                    [&l.digest, &l.diff_id].iter().any(|d| {
                        d.as_deref()
                            .map(|d| d.strip_prefix("sha256:").unwrap_or(d).starts_with(want))
                            .unwrap_or(false)
                    })
                })
                .map(|l| l.index)
                .collect()
        };
        let n = self.layers.len();
        match (index.filter(|&i| i < n), matches.as_slice()) {
            (Some(i), []) => Ok(i),
            (Some(i), [m]) if *m == i => Ok(i),
            (Some(i), [m, ..]) => Err(Error::Usage(format!(
                "{spec:?} is ambiguous in {}: layer {i}, or the layer whose digest starts with it (layer {m}); write sha256:{spec} for the digest",
                self.reference
            ))),
            (None, [one]) => Ok(*one),
            (None, []) if index.is_some() || spec.bytes().all(|b| b.is_ascii_digit()) => {
                Err(Error::Usage(format!(
                    "layer {spec} does not exist: {} has {n} layers (0..{})",
                    self.reference,
                    n.saturating_sub(1)
                )))
            }
            (None, []) => Err(Error::Usage(format!(
                "no layer of {} matches {spec:?}",
                self.reference
            ))),
            (None, _) => Err(Error::Usage(format!(
                "{spec:?} matches several layers of {}",
                self.reference
            ))),
        }
    }
}

/// Parse JSON, naming the document in the error.
pub fn parse_json(bytes: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| Error::Format(format!("bad JSON in {what}: {e}")))
}

/// The SHA-256 of `bytes`, as lower-case hex (no `sha256:` prefix).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Check a small blob (config, manifest, index) against its digest.
pub fn verify_blob(bytes: &[u8], digest: &str, what: &str) -> Result<()> {
    let Some(mut h) = crate::digest::Hasher::for_digest(digest) else {
        return Err(Error::Format(format!(
            "{what}: unsupported digest {digest:?} (sha256: or sha512: and its hex digits)"
        )));
    };
    h.update(bytes);
    let actual = h.finish();
    if actual != digest {
        return Err(Error::Digest {
            what: what.to_string(),
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(())
}

/// The strings of a JSON array (`Env`, `RepoTags`, `rootfs.diff_ids`); none when it is not one.
pub fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The `rootfs.diff_ids` of a config.
pub fn diff_ids(config: &Value) -> Vec<String> {
    strings(config.pointer("/rootfs/diff_ids"))
}

/// A path as text, for messages (non-UTF-8 bytes replaced).
pub fn path_string(p: &Path) -> String {
    p.display().to_string()
}

/// Open a file for reading only if it is a regular file: opened non-blocking (a fifo planted
/// where a blob or a cache entry should be must not hang the reader), then checked.
pub fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    regular_only(f)
}

/// `f` if it is a regular file, else an error saying what it is.
pub fn regular_only(f: File) -> io::Result<File> {
    let t = f.metadata()?.file_type();
    if !t.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file (a {})", file_type_name(t)),
        ));
    }
    Ok(f)
}

fn file_type_name(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else {
        "special file"
    }
}

/// A path, with stdin (`-`) spooled to a temp file.
pub fn local(path: &Path) -> Result<(PathBuf, Option<Arc<tempfile::TempPath>>)> {
    let (p, guard) = if path == Path::new("-") {
        let (p, guard) = spool_stdin()?;
        (p, Some(guard))
    } else if !path.exists() {
        return Err(Error::Usage(format!("{}: no such file", path.display())));
    } else {
        (path.to_path_buf(), None)
    };
    match inflate_archive(&p)? {
        Some((inflated, g)) => Ok((inflated, Some(g))),
        None => Ok((p, guard)),
    }
}

/// An archive compressed as a whole (`docker save | gzip`, also zstd, xz, bzip2 — `docker
/// load` takes them): inflated once into a temp file (the uncompressed size on disk), since
/// archives are read in place by offset. `None` for an archive that is not compressed.
fn inflate_archive(path: &Path) -> Result<Option<(PathBuf, Arc<tempfile::TempPath>)>> {
    let shown = path.display();
    let Ok(file) = File::open(path) else {
        return Ok(None); // the archive reader says why
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Ok(None);
    }
    let mut head = [0u8; 6];
    let n = file.read_at(&mut head, 0).unwrap_or(0);
    let kind = crate::compression::Compression::detect(&head[..n]);
    if kind == crate::compression::Compression::None {
        return Ok(None);
    }
    let mut tmp = tempfile::NamedTempFile::new()
        .map_err(|e| Error::io("creating a temp file to inflate the archive", e))?;
    let mut dec = kind
        .decoder(io::BufReader::with_capacity(1 << 20, file))
        .map_err(|e| Error::io(format!("{shown}: {} archive", kind.name()), e))?;
    io::copy(&mut dec, &mut tmp).map_err(|e| {
        Error::Format(format!(
            "{shown}: cannot inflate the {} archive: {e}",
            kind.name()
        ))
    })?;
    let p = tmp.into_temp_path();
    Ok(Some((p.to_path_buf(), Arc::new(p))))
}

/// `PATH[:SUFFIX]`: the path is everything before the first colon, unless the whole string
/// names an existing file (paths with colons).
pub fn split_path(rest: &str) -> (PathBuf, Option<String>) {
    if Path::new(rest).exists() {
        return (PathBuf::from(rest), None);
    }
    match rest.split_once(':') {
        Some((p, sel)) if !sel.is_empty() => (PathBuf::from(p), Some(sel.to_string())),
        Some((p, _)) => (PathBuf::from(p), None),
        None => (PathBuf::from(rest), None),
    }
}

/// Copy stdin into a temp file: its path, and the guard that removes it when dropped.
pub fn spool_stdin() -> Result<(PathBuf, Arc<tempfile::TempPath>)> {
    let mut tmp = tempfile::NamedTempFile::new()
        .map_err(|e| Error::io("creating a temp file to spool stdin", e))?;
    io::copy(&mut io::stdin().lock(), &mut tmp).map_err(|e| Error::io("reading stdin", e))?;
    let path = tmp.into_temp_path();
    Ok((path.to_path_buf(), Arc::new(path)))
}
