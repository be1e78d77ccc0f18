//! Per-layer listings kept on disk, keyed by the layer's digest (content-addressed, so they
//! never go stale), read back one entry at a time.
//!
//! Format: JSON lines — a header `{"version", "key"}`, one listing entry per line, and a
//! trailer `{"entries": N, "xxh3": "…"}` whose checksum covers every byte before it. An entry
//! is trusted only when the trailer matches (a torn or edited file is rebuilt), so streaming it
//! into a walk never fails half-way. Written to a temp name and renamed into place.

use super::Seen;
use crate::error::{Error, Result};
use crate::image::Layer;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use xxhash_rust::xxh3::Xxh3;

const VERSION: u32 = 4;
const BUF: usize = 32 << 10;

/// The listing cache: a directory of per-layer listings, or disabled.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    key: String,
}

#[derive(Serialize, Deserialize)]
struct Trailer {
    entries: u64,
    xxh3: String,
}

/// A listing found valid in the cache, still open: what is replayed is what was checked.
pub struct Cached {
    path: PathBuf,
    file: File,
    entries: u64,
}

impl Cache {
    /// `dir`: `--cache-dir`, else `$XDG_CACHE_HOME/strata`, else `~/.cache/strata`. Not
    /// `enabled` (or no directory found), the cache is disabled.
    pub fn new(dir: Option<PathBuf>, enabled: bool) -> Cache {
        if !enabled {
            return Cache { dir: None };
        }
        let dir = dir.or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(|x| PathBuf::from(x).join("strata"))
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/strata"))
                })
        });
        Cache { dir }
    }

    /// The cache's directory (`None` when disabled).
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }

    /// A cache that holds nothing and keeps nothing.
    pub fn disabled() -> Cache {
        Cache { dir: None }
    }

    /// Whether listings are read from and written to a directory.
    pub fn enabled(&self) -> bool {
        self.dir.is_some()
    }

    fn key(layer: &Layer) -> Option<String> {
        layer.diff_id.clone().or_else(|| layer.digest.clone())
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        let name = key.replace(':', "-");
        if name.contains('/') {
            return None;
        }
        Some(
            self.dir
                .as_ref()?
                .join("listings")
                .join(format!("{name}.jsonl")),
        )
    }

    /// Whether the cache holds a complete, intact listing of the layer (so listing it reads
    /// none of its bytes).
    pub fn has(&self, layer: &Layer) -> bool {
        self.find(layer).is_some()
    }

    /// The layer's listing, if the cache holds a complete, intact one.
    pub(crate) fn find(&self, layer: &Layer) -> Option<Cached> {
        let key = Self::key(layer)?;
        let path = self.path(&key)?;
        if !path.exists() {
            return None;
        }
        match check(&path, &key) {
            Ok((file, entries)) => Some(Cached {
                path,
                file,
                entries,
            }),
            Err(why) => {
                tracing::warn!(
                    "cache entry {} is unusable ({why}); rebuilding it",
                    path.display()
                );
                None
            }
        }
    }

    /// Feed a checked listing to `f`, one entry at a time.
    pub(crate) fn replay(&self, c: &Cached, f: &mut dyn FnMut(Seen) -> Result<()>) -> Result<()> {
        let err = |e: String| Error::Format(format!("cache entry {}: {e}", c.path.display()));
        let mut file = &c.file;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| err(e.to_string()))?;
        let mut r = BufReader::with_capacity(BUF, file);
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line)
            .map_err(|e| err(e.to_string()))?;
        for _ in 0..c.entries {
            line.clear();
            r.read_until(b'\n', &mut line)
                .map_err(|e| err(e.to_string()))?;
            let seen: Seen = serde_json::from_slice(&line).map_err(|e| err(e.to_string()))?;
            f(seen)?;
        }
        Ok(())
    }

    /// Start writing a layer's listing (`None` when the cache is off or cannot be written).
    pub(crate) fn writer(&self, layer: &Layer) -> Option<CacheWriter> {
        let key = Self::key(layer)?;
        let dest = self.path(&key)?;
        let parent = dest.parent()?.to_path_buf();
        let r = (|| -> std::io::Result<CacheWriter> {
            std::fs::create_dir_all(&parent)?;
            let tmp = tempfile::NamedTempFile::new_in(&parent)?;
            // Lines are short: a small buffer writes them in few calls.
            let out = BufWriter::with_capacity(16 << 10, tmp.reopen()?);
            let mut w = CacheWriter {
                tmp,
                out,
                hash: Xxh3::new(),
                entries: 0,
                dest: dest.clone(),
                line: Vec::new(),
            };
            let header = serde_json::to_vec(&Header {
                version: VERSION,
                key,
            })?;
            w.put(&header)?;
            Ok(w)
        })();
        r.map_err(|e| tracing::warn!("cannot write cache entry {}: {e}", dest.display()))
            .ok()
    }
}

/// Header, trailer, line count and checksum of a cache file: the open file and the number of
/// entries when all is well.
fn check(path: &std::path::Path, key: &str) -> std::result::Result<(File, u64), String> {
    let mut f = crate::image::open_regular(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let tail_len = len.min(512);
    f.seek(SeekFrom::Start(len - tail_len))
        .map_err(|e| e.to_string())?;
    let mut tail = vec![0u8; tail_len as usize];
    f.read_exact(&mut tail).map_err(|e| e.to_string())?;
    if tail.last() != Some(&b'\n') {
        return Err("no trailer".into());
    }
    let start = tail[..tail.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .ok_or("no trailer")?;
    let trailer: Trailer =
        serde_json::from_slice(&tail[start..]).map_err(|_| "no trailer".to_string())?;
    let body_len = len - (tail.len() - start) as u64;
    f.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let mut r = BufReader::with_capacity(BUF, (&f).take(body_len));
    let mut first = Vec::new();
    r.read_until(b'\n', &mut first).map_err(|e| e.to_string())?;
    let header: Header = serde_json::from_slice(&first).map_err(|_| "bad header".to_string())?;
    if header.version != VERSION || header.key != key {
        return Err(format!("version {} for {}", header.version, header.key));
    }
    let mut h = Xxh3::new();
    h.update(&first);
    let mut lines = 0u64;
    loop {
        let buf = r.fill_buf().map_err(|e| e.to_string())?;
        if buf.is_empty() {
            break;
        }
        h.update(buf);
        lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        let n = buf.len();
        r.consume(n);
    }
    if format!("{:032x}", h.digest128()) != trailer.xxh3 {
        return Err("checksum mismatch".into());
    }
    // The count is outside the checksum: it must match the lines it covers.
    if lines != trailer.entries {
        return Err(format!(
            "{lines} entries, the trailer says {}",
            trailer.entries
        ));
    }
    Ok((f, trailer.entries))
}

/// A listing being written; it appears in the cache only when [`CacheWriter::finish`]ed.
pub struct CacheWriter {
    tmp: tempfile::NamedTempFile,
    out: BufWriter<File>,
    hash: Xxh3,
    entries: u64,
    dest: PathBuf,
    line: Vec<u8>,
}

impl CacheWriter {
    fn put(&mut self, json: &[u8]) -> std::io::Result<()> {
        self.hash.update(json);
        self.hash.update(b"\n");
        self.out.write_all(json)?;
        self.out.write_all(b"\n")
    }

    /// Append an entry.
    pub(crate) fn add(&mut self, seen: &Seen) -> std::io::Result<()> {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        serde_json::to_writer(&mut line, seen).map_err(std::io::Error::other)?;
        let r = self.put(&line);
        self.line = line;
        self.entries += 1;
        r
    }

    /// Where the listing goes once finished.
    pub fn dest(&self) -> &std::path::Path {
        &self.dest
    }

    /// Write the trailer and move the listing into place.
    pub fn finish(self) {
        let CacheWriter {
            tmp,
            mut out,
            hash,
            entries,
            dest,
            ..
        } = self;
        let trailer = Trailer {
            entries,
            xxh3: format!("{:032x}", hash.digest128()),
        };
        let r = (|| -> std::io::Result<()> {
            let t = serde_json::to_vec(&trailer)?;
            out.write_all(&t)?;
            out.write_all(b"\n")?;
            out.flush()?;
            drop(out);
            tmp.persist(&dest).map_err(|e| e.error)?;
            Ok(())
        })();
        if let Err(e) = r {
            tracing::warn!("cannot write cache entry {}: {e}", dest.display());
        }
    }
}
