//! Layer streams: a blob region → (sha256 of the stored bytes) → decompressor chosen by magic
//! bytes → (sha256 of the tar) → chunks, produced on a background thread so decompression and
//! hashing overlap the merge on the other core.
//!
//! Digests are checked after the stream's true end, past the tar end-of-archive blocks: the
//! consumer must read to EOF (`TarReader::drain`), and a mismatch arrives as the read error.

use crate::compression::{Compression, sniff};
use crate::image::{FileRegion, Layer};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const CHUNK: usize = 256 * 1024;
/// Chunks a running decoder may get ahead of the merge (per layer).
const AHEAD: usize = 64;

enum Msg {
    Data(Vec<u8>),
    End(Result<(), String>),
}

/// The consumer side: a `BufRead` over the chunks of one layer.
pub struct LayerStream {
    rx: Receiver<Msg>,
    cur: Vec<u8>,
    at: usize,
    end: Option<Result<(), String>>,
    thread: Option<JoinHandle<()>>,
    pub compression: Arc<Mutex<Option<Compression>>>,
}

impl LayerStream {
    fn recv(&mut self) -> io::Result<bool> {
        if let Some(end) = &self.end {
            return match end {
                Ok(()) => Ok(false),
                Err(m) => Err(io::Error::other(m.clone())),
            };
        }
        match self.rx.recv() {
            Ok(Msg::Data(v)) => {
                self.cur = v;
                self.at = 0;
                Ok(true)
            }
            Ok(Msg::End(r)) => {
                self.end = Some(r);
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                self.recv()
            }
            Err(_) => {
                self.end = Some(Err("layer reader stopped unexpectedly".into()));
                self.recv()
            }
        }
    }
}

impl Read for LayerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for LayerStream {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.at >= self.cur.len() {
            if !self.recv()? {
                return Ok(&[]);
            }
        }
        Ok(&self.cur[self.at..])
    }
    fn consume(&mut self, n: usize) {
        self.at += n;
    }
}

struct BlobHash {
    hasher: Sha256,
    len: u64,
}

/// Reads a region, hashing (optionally) and counting progress.
struct HashingRegion {
    inner: crate::image::RegionReader,
    hasher: Option<Arc<Mutex<BlobHash>>>,
    progress: Option<ProgressBar>,
}

impl Read for HashingRegion {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &self.hasher
            && let Ok(mut h) = h.lock()
        {
            h.hasher.update(&buf[..n]);
            h.len += n as u64;
        }
        if let Some(p) = &self.progress {
            p.inc(n as u64);
        }
        Ok(n)
    }
}

/// What to verify on one stream.
#[derive(Clone, Default)]
pub struct Verify {
    pub digest: Option<String>,
    pub diff_id: Option<String>,
}

impl Verify {
    pub fn of(layer: &Layer) -> Verify {
        Verify {
            digest: layer.digest.clone(),
            diff_id: layer.diff_id.clone(),
        }
    }
}

/// Start reading a layer in the background.
pub fn open(layer: &Layer, verify: Verify, progress: Option<ProgressBar>) -> LayerStream {
    open_region(layer.region.clone(), verify, progress)
}

/// Start reading a region in the background. The stream's errors do not name the layer: the
/// consumer adds that context.
pub fn open_region(
    region: FileRegion,
    verify: Verify,
    progress: Option<ProgressBar>,
) -> LayerStream {
    let (tx, rx) = sync_channel(AHEAD);
    let compression = Arc::new(Mutex::new(None));
    let comp2 = compression.clone();
    let thread = std::thread::Builder::new()
        .name("layer-reader".into())
        .spawn(move || {
            let r = produce(region, &verify, progress, &tx, &comp2);
            let _ = tx.send(Msg::End(r));
        })
        .ok();
    LayerStream {
        rx,
        cur: Vec::new(),
        at: 0,
        end: None,
        thread,
        compression,
    }
}

fn check(hasher: Sha256, want: &str, what: &str) -> Result<(), String> {
    let got = format!("sha256:{}", hex::encode(hasher.finalize()));
    if !want.starts_with("sha256:") {
        return Ok(()); // other algorithms are not verified (and not produced by any tool we read)
    }
    if got != want {
        return Err(format!(
            "{what} digest mismatch: expected {want}, got {got}"
        ));
    }
    Ok(())
}

fn produce(
    region: FileRegion,
    verify: &Verify,
    progress: Option<ProgressBar>,
    tx: &SyncSender<Msg>,
    comp_out: &Mutex<Option<Compression>>,
) -> Result<(), String> {
    let blob_hasher = verify.digest.as_ref().map(|_| {
        Arc::new(Mutex::new(BlobHash {
            hasher: Sha256::new(),
            len: 0,
        }))
    });
    let src = HashingRegion {
        inner: region.reader(),
        hasher: blob_hasher.clone(),
        progress,
    };
    let mut buffered = BufReader::with_capacity(CHUNK, src);
    let kind = sniff(&mut buffered).map_err(|e| e.to_string())?;
    if let Ok(mut c) = comp_out.lock() {
        *c = Some(kind);
    }
    // For an uncompressed blob the blob digest already covers the tar; hash once.
    let same_bytes = kind == Compression::None && verify.digest.is_some();
    let mut tar_hasher = match (&verify.diff_id, same_bytes) {
        (Some(_), false) => Some(Sha256::new()),
        _ => None,
    };
    let mut decoder = kind.decoder(buffered).map_err(|e| e.to_string())?;
    loop {
        let mut chunk = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match decoder.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(describe_decode_error(kind, e)),
            }
        }
        if filled == 0 {
            break;
        }
        chunk.truncate(filled);
        if let Some(h) = tar_hasher.as_mut() {
            h.update(&chunk);
        }
        if tx.send(Msg::Data(chunk)).is_err() {
            return Ok(()); // consumer went away (an error upstream); nothing to verify for
        }
    }
    drop(decoder);
    let blob = match blob_hasher {
        Some(h) => Some(
            Arc::try_unwrap(h)
                .map_err(|_| "hasher still shared".to_string())?
                .into_inner()
                .map_err(|_| "hasher poisoned".to_string())?,
        ),
        None => None,
    };
    if let (Some(want), Some(mut b)) = (&verify.digest, blob) {
        // The decoder may stop before the blob's end (trailing bytes): hash the rest too.
        if b.len < region.len {
            let tail = FileRegion {
                file: region.file.clone(),
                offset: region.offset + b.len,
                len: region.len - b.len,
            };
            let mut rest = tail.reader();
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = rest.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                b.hasher.update(&buf[..n]);
            }
        }
        if same_bytes
            && let Some(diff) = &verify.diff_id
            && diff != want
        {
            check(b.hasher.clone(), diff, "diff_id")?;
        }
        check(b.hasher, want, "blob")?;
    }
    if let (Some(want), Some(h)) = (&verify.diff_id, tar_hasher) {
        check(h, want, "diff_id")?;
    }
    Ok(())
}

fn describe_decode_error(kind: Compression, e: io::Error) -> String {
    match kind {
        Compression::None => format!("read error: {e}"),
        k if e.kind() == io::ErrorKind::UnexpectedEof => {
            format!("truncated {} stream: {e}", k.name())
        }
        k => format!("corrupt {} stream: {e}", k.name()),
    }
}

/// Opens layers in processing order, keeping the next one decoding ahead of the merge.
pub struct Pipeline<'a> {
    layers: Vec<&'a Layer>,
    next: usize,
    open: VecDeque<LayerStream>,
    depth: usize,
    verify: bool,
    progress: Option<ProgressBar>,
}

impl<'a> Pipeline<'a> {
    pub fn new(layers: Vec<&'a Layer>, verify: bool, progress: Option<ProgressBar>) -> Self {
        let mut p = Pipeline {
            layers,
            next: 0,
            open: VecDeque::new(),
            depth: 2,
            verify,
            progress,
        };
        p.fill();
        p
    }

    fn fill(&mut self) {
        while self.open.len() < self.depth && self.next < self.layers.len() {
            let l = self.layers[self.next];
            let v = if self.verify {
                Verify::of(l)
            } else {
                Verify::default()
            };
            self.open.push_back(open(l, v, self.progress.clone()));
            self.next += 1;
        }
    }

    pub fn next_stream(&mut self) -> Option<LayerStream> {
        let s = self.open.pop_front();
        self.fill();
        s
    }
}
