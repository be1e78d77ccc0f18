//! Layer streams: a blob region → decompressor chosen by magic bytes → the tar bytes.
//!
//! Work is spread over the two cores: the stored blob's digest is checked by a small pool of
//! verifier threads that read the region on their own (so several layers hash at once while
//! the merge runs); a compressed layer is inflated on a background thread, and its diff_id —
//! the digest of the tar — is hashed by the consumer as chunks arrive. An uncompressed layer is
//! read directly, its blob digest doubling as its diff_id.
//!
//! The diff_id check runs at the stream's true end, past the tar end-of-archive blocks: the
//! consumer must read to EOF (`TarReader::drain`), and a mismatch arrives as the read error.

use crate::blob::mismatch_of;
use crate::compression::Compression;
use crate::control::{Cancel, Pass, ProgressRef};
use crate::digest::Hasher;
use crate::image::{FileRegion, Layer};
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

/// Decoded chunks handed from a decoder thread to the consumer.
const CHUNK: usize = 256 * 1024;
/// Read buffers of uncompressed layers and of blob hashing: bigger ones bought no speed here
/// (page-cache copies dominate) and each costs its size in every open stream and verifier.
const READ_BUF: usize = 64 * 1024;
/// Chunks a decoder may get ahead of the merge (per layer): 16 MiB.
const AHEAD: usize = 64;
/// Verifier threads hashing blobs concurrently.
const VERIFIERS: usize = 2;

enum Msg {
    Data(Vec<u8>),
    End(Result<(), String>),
}

/// Reports bytes read as progress, and stops reading once cancelled (checked per chunk).
struct Counted {
    inner: Box<dyn Read + Send>,
    progress: Option<ProgressRef>,
    layer: usize,
    cancel: Cancel,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.cancel.check_io()?;
        let n = self.inner.read(buf)?;
        if let Some(p) = &self.progress {
            p.advance(n as u64, Some(self.layer), Pass::Read);
        }
        Ok(n)
    }
}

enum Source {
    /// Uncompressed, not read yet: its buffer is made at the first read (the pipeline opens
    /// the next layer early, which only a decoder thread needs).
    Unread(Option<Counted>),
    /// Uncompressed: read straight from the file (or the stream).
    Direct(BufReader<Counted>),
    /// Uncompressed and local, read for its headers only (a squash's planning pass): data is
    /// skipped by moving the position, not by reading it.
    Seekable(Seekable),
    /// Compressed: chunks from a decoder thread.
    Threaded {
        rx: Receiver<Msg>,
        cur: Vec<u8>,
        at: usize,
    },
}

/// One layer's tar bytes, as a `BufRead`.
pub struct LayerStream {
    source: Source,
    /// diff_id to check at the end (compressed layers; uncompressed ones are checked by the
    /// blob verifier).
    diff: Option<(Option<Hasher>, String)>,
    end: Option<Result<(), String>>,
    /// The stored blob's compression, from its first bytes.
    pub compression: Compression,
}

impl LayerStream {
    fn finish(&mut self, r: Result<(), String>) {
        let r = r.and_then(|()| match self.diff.take() {
            Some((h, want)) => check(h, &want, "diff_id"),
            None => Ok(()),
        });
        self.end = Some(r);
    }

    fn ended(&self) -> io::Result<&[u8]> {
        match &self.end {
            Some(Err(m)) => Err(io::Error::other(m.clone())),
            _ => Ok(&[]),
        }
    }
}

/// A local region read through a small buffer, whose skips past the buffer cost nothing.
struct Seekable {
    region: FileRegion,
    /// Where the buffer's bytes start, from the region's start.
    pos: u64,
    buf: Vec<u8>,
    at: usize,
    cancel: Cancel,
}

/// Headers and PAX records are small: a short buffer, refilled where the next one starts.
const SEEK_BUF: usize = 16 * 1024;

impl Seekable {
    fn fill(&mut self) -> io::Result<&[u8]> {
        if self.at >= self.buf.len() {
            self.cancel.check_io()?;
            self.pos += self.buf.len() as u64;
            let left = self.region.len.saturating_sub(self.pos);
            let want = left.min(SEEK_BUF as u64) as usize;
            self.buf.resize(want, 0);
            self.at = 0;
            let mut filled = 0;
            while filled < want {
                let at = self.region.offset + self.pos + filled as u64;
                let n = match self.region.file.read_at(&mut self.buf[filled..], at) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file is shorter than its index says (truncated?)",
                    ));
                }
                filled += n;
            }
        }
        Ok(&self.buf[self.at..])
    }

    /// Skip `n` bytes; fewer when the region ends first (the count comes back).
    fn skip(&mut self, n: u64) -> u64 {
        let buffered = (self.buf.len() - self.at) as u64;
        if n <= buffered {
            self.at += n as usize;
            return n;
        }
        let start = self.pos + self.at as u64;
        let end = start.saturating_add(n).min(self.region.len);
        self.pos = end;
        self.buf.clear();
        self.at = 0;
        end - start
    }
}

impl LayerStream {
    /// Skip `n` bytes of the tar: seeking where the stream is a local uncompressed region read
    /// for its headers, reading otherwise. Returns how many were skipped (fewer at the end).
    pub fn skip(&mut self, n: u64) -> io::Result<u64> {
        if let Source::Seekable(s) = &mut self.source {
            return Ok(s.skip(n));
        }
        let mut done = 0;
        while done < n {
            let k = self
                .fill_buf()?
                .len()
                .min(usize::try_from(n - done).unwrap_or(usize::MAX));
            if k == 0 {
                break;
            }
            self.consume(k);
            done += k as u64;
        }
        Ok(done)
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
        if self.end.is_some() {
            return self.ended();
        }
        match &mut self.source {
            Source::Unread(c) => {
                let Some(c) = c.take() else {
                    return self.ended();
                };
                self.source = Source::Direct(BufReader::with_capacity(READ_BUF, c));
                self.fill_buf()
            }
            Source::Direct(r) => {
                let n = r.fill_buf()?.len();
                if n == 0 {
                    self.finish(Ok(()));
                    return self.ended();
                }
                match &mut self.source {
                    Source::Direct(r) => r.fill_buf(),
                    _ => unreachable!(),
                }
            }
            Source::Seekable(r) => {
                if r.fill()?.is_empty() {
                    self.finish(Ok(()));
                    return self.ended();
                }
                match &mut self.source {
                    Source::Seekable(r) => r.fill(),
                    _ => unreachable!(),
                }
            }
            Source::Threaded { rx, cur, at } => {
                while *at >= cur.len() {
                    match rx.recv() {
                        Ok(Msg::Data(v)) => {
                            if let Some((Some(h), _)) = self.diff.as_mut() {
                                h.update(&v);
                            }
                            *cur = v;
                            *at = 0;
                        }
                        Ok(Msg::End(r)) => {
                            self.finish(r);
                            return self.ended();
                        }
                        Err(_) => {
                            self.finish(Err("layer reader stopped unexpectedly".into()));
                            return self.ended();
                        }
                    }
                }
                match &self.source {
                    Source::Threaded { cur, at, .. } => Ok(&cur[*at..]),
                    _ => unreachable!(),
                }
            }
        }
    }

    fn consume(&mut self, n: usize) {
        match &mut self.source {
            Source::Unread(_) => {}
            Source::Direct(r) => r.consume(n),
            Source::Seekable(r) => r.at += n,
            Source::Threaded { at, .. } => *at += n,
        }
    }
}

/// Check a digest strata computed; one it cannot compute (an unknown algorithm) is an
/// error, never a pass.
fn check(hasher: Option<Hasher>, want: &str, what: &str) -> Result<(), String> {
    match hasher {
        Some(h) => crate::digest::check(h, want, what),
        None => Err(format!(
            "{what} {want:?}: unsupported digest (sha256: or sha512: and its hex digits)"
        )),
    }
}

/// The compression of a region, from its first bytes.
pub fn detect(region: &FileRegion) -> io::Result<Compression> {
    let mut head = [0u8; 6];
    let mut r = region.reader();
    let mut n = 0;
    while n < head.len() {
        let k = r.read(&mut head[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(Compression::detect(&head[..n]))
}

/// How a layer's blob is compressed: from its media type when it says, else from its first
/// bytes (reading a streamed blob into the store first).
pub fn stored_compression(layer: &Layer) -> crate::Result<Compression> {
    if let Some(mt) = &layer.media_type {
        if mt.ends_with("gzip") {
            return Ok(Compression::Gzip);
        }
        if mt.ends_with("zstd") {
            return Ok(Compression::Zstd);
        }
        if mt.ends_with(".tar") {
            return Ok(Compression::None);
        }
    }
    let region = layer.blob.local_region(true, &layer.label())?;
    detect(&region).map_err(|e| crate::Error::io(layer.label(), e))
}

/// Open a layer's tar stream. `diff_id`: check the tar's digest at the end (only done here
/// for compressed local layers and for streamed ones; a local blob's check goes to a
/// `Verifier`). `verify`: a streamed blob's digest is checked as it is read.
pub fn open(
    layer: &Layer,
    diff_id: Option<String>,
    verify: bool,
    progress: Option<ProgressRef>,
    cancel: &Cancel,
) -> io::Result<LayerStream> {
    let count = |inner: Box<dyn Read + Send>, progress: Option<ProgressRef>| Counted {
        inner,
        progress,
        layer: layer.index,
        cancel: cancel.clone(),
    };
    if let Some(region) = layer.blob.region() {
        let kind = detect(&region)?;
        let counted = count(Box::new(region.reader()), progress);
        // A streamed blob kept in the store had its blob digest checked; an uncompressed
        // one's diff_id still needs a hash when it is not that digest.
        if kind == Compression::None
            && let Some(want) = diff_id
                .clone()
                .filter(|d| Some(d.as_str()) != layer.blob.stream_digest())
        {
            let hashed = Hashed {
                inner: counted,
                hasher: Hasher::for_digest(&want),
                want,
                checked: false,
            };
            return start(kind, count(Box::new(hashed), None), None, false);
        }
        return start(kind, counted, diff_id, false);
    }
    // A stream: its compression is peeked from its first bytes, and the blob digest is
    // checked by the blob's own reader at its end.
    let mut raw = layer.blob.open(verify)?;
    let head = read_head(&mut raw)?;
    let kind = Compression::detect(&head);
    let peek = io::Cursor::new(head).chain(raw);
    let counted = count(Box::new(peek), progress);
    // Uncompressed, the stored bytes are the tar: its diff_id needs a hash of its own only
    // when it differs from the blob digest the blob reader checks.
    // (The blob reader checks the blob's own digest: only that one may stand in for it.)
    let diff_id = diff_id.filter(|d| {
        verify && (kind != Compression::None || Some(d.as_str()) != layer.blob.stream_digest())
    });
    if kind == Compression::None
        && let Some(want) = diff_id
    {
        let hashed = Hashed {
            inner: counted,
            hasher: Hasher::for_digest(&want),
            want,
            checked: false,
        };
        let counted = count(Box::new(hashed), None);
        return start(kind, counted, None, true);
    }
    start(kind, counted, diff_id, true)
}

/// Open a layer to read its tar headers, not to verify it (a squash's planning pass, which
/// the content pass after it verifies): a local uncompressed blob is read through a small
/// buffer that skips data by seeking; a compressed one is inflated (its data cannot be
/// skipped); a streamed one is first read once into the blob store (its digest checked when
/// `verify`), which the content pass then reads.
pub fn open_headers(layer: &Layer, verify: bool, cancel: &Cancel) -> crate::Result<LayerStream> {
    let err = |e: io::Error| crate::Error::Layer {
        layer: layer.label(),
        message: format!("read error: {e}"),
    };
    let Some(region) = layer.blob.fetch_region(verify, &layer.label())? else {
        // Read but not kept (the store could not hold it): read it as a stream once more —
        // the merge after the plan fetches it again.
        return open(layer, None, verify, None, cancel).map_err(err);
    };
    let kind = detect(&region).map_err(err)?;
    if kind != Compression::None {
        return open(layer, None, false, None, cancel).map_err(err);
    }
    Ok(LayerStream {
        source: Source::Seekable(Seekable {
            region,
            pos: 0,
            buf: Vec::new(),
            at: 0,
            cancel: cancel.clone(),
        }),
        diff: None,
        end: None,
        compression: kind,
    })
}

/// The first bytes of a stream (up to what compression detection looks at).
fn read_head(r: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; 6];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(n);
    Ok(head)
}

fn start(
    kind: Compression,
    counted: Counted,
    diff_id: Option<String>,
    streamed: bool,
) -> io::Result<LayerStream> {
    if kind == Compression::None {
        return Ok(LayerStream {
            source: Source::Unread(Some(counted)),
            diff: None,
            end: None,
            compression: kind,
        });
    }
    let (tx, rx) = sync_channel(AHEAD);
    let spawned = std::thread::Builder::new()
        .name("layer-decoder".into())
        .spawn(move || {
            let (layer, t) = (counted.layer, std::time::Instant::now());
            let r = decode(kind, counted, streamed, &tx);
            tracing::debug!("layer {layer}: decoded in {:?}", t.elapsed());
            let _ = tx.send(Msg::End(r));
        });
    spawned?;
    Ok(LayerStream {
        source: Source::Threaded {
            rx,
            cur: Vec::new(),
            at: 0,
        },
        diff: diff_id.map(|d| (Hasher::for_digest(&d), d)),
        end: None,
        compression: kind,
    })
}

/// A reader that checks the digest of everything read through it at its end.
struct Hashed<R> {
    inner: R,
    hasher: Option<Hasher>,
    want: String,
    checked: bool,
}

impl<R: Read> Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            if !self.checked {
                self.checked = true;
                check(self.hasher.take(), &self.want, "diff_id").map_err(io::Error::other)?;
            }
        } else if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

fn decode(
    kind: Compression,
    input: Counted,
    streamed: bool,
    tx: &SyncSender<Msg>,
) -> Result<(), String> {
    let mut buffered = BufReader::with_capacity(CHUNK, input);
    let mut decoder = kind
        .decoder(&mut buffered)
        .map_err(|e| describe_decode_error(kind, e))?;
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
        if tx.send(Msg::Data(chunk)).is_err() {
            return Ok(()); // the consumer went away (an error upstream)
        }
    }
    drop(decoder);
    if streamed {
        // A stream's digest covers every stored byte, trailing ones too: read to its end so
        // the blob reader checks it (and keeps the copy).
        io::copy(&mut buffered, &mut io::sink()).map_err(|e| describe_decode_error(kind, e))?;
    }
    Ok(())
}

fn describe_decode_error(kind: Compression, e: io::Error) -> String {
    if let Some(m) = mismatch_of(&e) {
        return m.to_string();
    }
    match kind {
        Compression::None => format!("read error: {e}"),
        k if e.kind() == io::ErrorKind::UnexpectedEof => {
            format!("truncated {} stream: {e}", k.name())
        }
        k => format!("corrupt {} stream: {e}", k.name()),
    }
}

/// Background checks of stored blobs: each job hashes a whole region (trailing bytes
/// included) and compares it with the expected digests.
struct Verifier {
    results: Vec<Option<Receiver<Result<(), String>>>>,
    /// Verdicts that arrived before they were waited for.
    early: Vec<Option<Result<(), String>>>,
    /// Tripped when the verifier is dropped (its pipeline's merge ended, maybe failed): the
    /// jobs still queued or running stop rather than hash for nobody.
    stop: Cancel,
}

impl Drop for Verifier {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What one verification checks: a region and the digests it must have (with their names).
type Check = (FileRegion, Vec<(String, &'static str)>);

struct Job {
    cancel: Cancel,
    stop: Cancel,
    region: FileRegion,
    expect: Vec<(String, &'static str)>,
    done: SyncSender<Result<(), String>>,
}

impl Verifier {
    fn start(jobs: Vec<Option<Check>>, cancel: &Cancel) -> Verifier {
        let stop = Cancel::new();
        let mut queue = VecDeque::new();
        let mut results = Vec::new();
        for job in jobs {
            match job {
                Some((region, expect)) if !expect.is_empty() => {
                    let (tx, rx) = sync_channel(1);
                    queue.push_back(Job {
                        cancel: cancel.clone(),
                        stop: stop.clone(),
                        region,
                        expect,
                        done: tx,
                    });
                    results.push(Some(rx));
                }
                _ => results.push(None),
            }
        }
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..VERIFIERS.min(results.iter().flatten().count()) {
            let q = queue.clone();
            let _ = std::thread::Builder::new()
                .name("layer-verifier".into())
                .spawn(move || {
                    loop {
                        let job = match q.lock() {
                            Ok(mut q) => q.pop_front(),
                            Err(_) => None,
                        };
                        let Some(job) = job else { return };
                        let stopped = || job.cancel.is_cancelled() || job.stop.is_cancelled();
                        let r = hash_region(&job.region, &job.expect, &stopped);
                        let _ = job.done.send(r);
                    }
                });
        }
        Verifier {
            results,
            early: Vec::new(),
            stop,
        }
    }

    /// The first failed verdict among those already in (without waiting): job index and why.
    fn failed(&mut self) -> Option<(usize, String)> {
        if self.early.len() < self.results.len() {
            self.early.resize_with(self.results.len(), || None);
        }
        for i in 0..self.results.len() {
            if let Some(rx) = &self.results[i]
                && let Ok(r) = rx.try_recv()
            {
                self.results[i] = None;
                self.early[i] = Some(r);
            }
            if let Some(Err(m)) = &self.early[i] {
                return Some((i, m.clone()));
            }
        }
        None
    }

    /// Wait for the verdict on job `i`.
    fn wait(&mut self, i: usize) -> Result<(), String> {
        if let Some(r) = self.early.get_mut(i).and_then(Option::take) {
            return r;
        }
        match self.results.get_mut(i).and_then(Option::take) {
            None => Ok(()),
            Some(rx) => rx
                .recv()
                .unwrap_or_else(|_| Err("verifier stopped unexpectedly".into())),
        }
    }
}

/// Hash a whole region once per algorithm the expected digests use, and check each.
fn hash_region(
    region: &FileRegion,
    expect: &[(String, &'static str)],
    stopped: &dyn Fn() -> bool,
) -> Result<(), String> {
    use crate::digest::{Algorithm, parse};
    let mut hashers: Vec<(Algorithm, Hasher)> = Vec::new();
    for (want, _) in expect {
        if let Some((alg, _)) = parse(want)
            && !hashers.iter().any(|(a, _)| *a == alg)
        {
            hashers.push((alg, Hasher::new(alg)));
        }
    }
    let mut r = region.reader();
    let mut buf = vec![0u8; READ_BUF];
    loop {
        if stopped() {
            return Err("cancelled".into());
        }
        let n = r.read(&mut buf).map_err(|e| format!("read error: {e}"))?;
        if n == 0 {
            break;
        }
        for (_, h) in hashers.iter_mut() {
            h.update(&buf[..n]);
        }
    }
    for (want, what) in expect {
        let h = parse(want).and_then(|(alg, _)| {
            hashers
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, h)| h.clone())
        });
        check(h, want, what)?;
    }
    Ok(())
}

/// Opens layers in processing order, keeping the next one decoding ahead of the merge, with
/// blob digests checked in the background.
pub struct Pipeline<'a> {
    layers: Vec<&'a Layer>,
    next: usize,
    open: VecDeque<io::Result<LayerStream>>,
    diff_ids: Vec<Option<String>>,
    verifier: Verifier,
    progress: Option<ProgressRef>,
    verify: bool,
    cancel: Cancel,
    /// Streamed blobs fetched into the store ahead of the two open streams (`-j`).
    _prefetch: Option<crate::blob::Prefetcher>,
}

impl<'a> Pipeline<'a> {
    /// A pipeline over `layers`, in the order they will be read: with `verify`, local blobs'
    /// digests are queued for the verifier threads; the first two streams are opened now.
    pub fn new(
        layers: Vec<&'a Layer>,
        verify: bool,
        progress: Option<ProgressRef>,
        cancel: &Cancel,
    ) -> Self {
        let mut jobs = Vec::new();
        let mut diff_ids = Vec::new();
        for l in &layers {
            if !verify {
                jobs.push(None);
                diff_ids.push(None);
                continue;
            }
            let Some(region) = l.blob.region() else {
                // Streamed: both digests are checked as the stream is read.
                jobs.push(None);
                diff_ids.push(l.diff_id.clone());
                continue;
            };
            let kind = detect(&region).unwrap_or(Compression::None);
            let mut expect = Vec::new();
            if let Some(d) = &l.digest {
                expect.push((d.clone(), "blob"));
            }
            if kind == Compression::None {
                // The blob is the tar: one hash serves both.
                if let Some(d) = &l.diff_id {
                    expect.push((d.clone(), "diff_id"));
                }
                diff_ids.push(None);
            } else {
                diff_ids.push(l.diff_id.clone());
            }
            jobs.push(Some((region, expect)));
        }
        let verifier = Verifier::start(jobs, cancel);
        let mut p = Pipeline {
            layers,
            next: 0,
            open: VecDeque::new(),
            diff_ids,
            verifier,
            progress,
            verify,
            cancel: cancel.clone(),
            _prefetch: None,
        };
        // Sources that fetch ahead (registries) get the layers after the two opened now
        // copied into the store meanwhile: the prefetcher skips blobs being read already.
        let jobs = p
            .layers
            .iter()
            .map(|l| l.blob.prefetch_jobs())
            .max()
            .unwrap_or(0);
        p.fill();
        if jobs > 0 {
            let blobs = p.layers.iter().map(|l| l.blob.clone()).collect();
            p._prefetch = Some(crate::blob::Prefetcher::start(blobs, jobs, cancel));
        }
        p
    }

    fn fill(&mut self) {
        while self.open.len() < 2 && self.next < self.layers.len() {
            let i = self.next;
            self.open.push_back(open(
                self.layers[i],
                self.diff_ids[i].take(),
                self.verify,
                self.progress.clone(),
                &self.cancel,
            ));
            self.next += 1;
        }
    }

    /// The stream of the next layer in processing order.
    pub fn next_stream(&mut self) -> Option<io::Result<LayerStream>> {
        let s = self.open.pop_front();
        self.fill();
        s
    }

    /// The next stream, which must be `layer`'s, with errors as the library error naming it.
    pub fn next_for(&mut self, layer: &Layer) -> crate::Result<LayerStream> {
        self.next_stream()
            .ok_or_else(|| crate::Error::Format("layer pipeline ended early".into()))?
            .map_err(|e| crate::Error::Layer {
                layer: layer.label(),
                message: format!("read error: {e}"),
            })
    }

    /// A blob check that has already failed, if any (for any layer, without waiting): the
    /// output can stop as soon as a mismatch is known, not only when that layer is reached.
    pub fn failed_check(&mut self) -> crate::Result<()> {
        match self.verifier.failed() {
            None => Ok(()),
            Some((i, message)) => Err(crate::Error::Layer {
                layer: self.layers.get(i).map(|l| l.label()).unwrap_or_default(),
                message,
            }),
        }
    }

    /// The background blob check of the `i`-th layer in processing order.
    pub fn verified(&mut self, i: usize) -> Result<(), String> {
        self.verifier.wait(i)
    }

    /// The same, as the library error naming `layer`.
    pub fn check(&mut self, i: usize, layer: &Layer) -> crate::Result<()> {
        self.verified(i).map_err(|message| crate::Error::Layer {
            layer: layer.label(),
            message,
        })
    }
}
