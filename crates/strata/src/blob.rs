//! Blobs: the stored bytes of a layer, wherever they are.
//!
//! A blob is either a byte range of a local file (a member of an archive, a file of an OCI
//! layout), read with `pread` as often as an operation likes, or a stream from a source that
//! delivers it once (a registry, a daemon, a pipe). A streamed blob is read from its source at
//! most once per process: the first [`Blob::open`] tees the bytes into the [`BlobStore`] as they
//! pass, hashes them on the way, and at the end — digest checked — renames the copy under its
//! digest. Every later open, and every operation that needs the bytes twice (the merge's
//! hardlink re-reads, squash's kept layers, a two-pass pipe output), reads that local copy.

use crate::error::{Error, Result};
use crate::image::FileRegion;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// A source that can deliver a blob's bytes, from the start, as a stream.
pub trait Fetch: Send + Sync {
    /// Open the blob at its source. Strata calls this at most once per blob and process when
    /// the stream is read to its end (the bytes are kept in the blob store after that).
    fn open(&self) -> io::Result<Box<dyn Read + Send>>;
    /// How many blobs of this source are worth fetching at once ahead of their reader (into
    /// the store): 0, the default, fetches each only when it is read.
    fn prefetch_jobs(&self) -> usize {
        0
    }
}

/// A streamed blob's fetch as others see it.
struct Shared {
    state: Fetching,
    /// A prefetch's temp file, which followers read as it grows.
    tmp: Option<PathBuf>,
    /// Bytes of it written so far.
    written: u64,
    /// Why the last prefetch kept nothing.
    failure: Option<Failure>,
    /// Readers following the prefetch now: while there are any, it is not stopped.
    followers: usize,
}

#[derive(Clone, Debug)]
enum Failure {
    Mismatch(DigestMismatch),
    Other(String),
}

enum Claim {
    Local(FileRegion),
    Follow(File),
    Fetch,
}

/// Who is reading a streamed blob from its source.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fetching {
    Idle,
    /// A consumer streams it (a merge, a listing): others fetch on their own.
    Consumer,
    /// A prefetcher copies it into the store: others wait for the copy.
    Prefetch,
}

/// A layer's stored bytes.
#[derive(Clone)]
pub struct Blob {
    inner: Arc<Inner>,
}

enum Inner {
    Local(FileRegion),
    Streamed {
        fetch: Box<dyn Fetch>,
        digest: Option<String>,
        size: Option<u64>,
        store: Arc<BlobStore>,
        /// The local copy, once the stream was read to its end.
        copy: OnceLock<FileRegion>,
        /// Who is reading it from the source now and how far, and the signal of a change.
        shared: Mutex<Shared>,
        changed: Condvar,
    },
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.inner {
            Inner::Local(r) => write!(f, "Blob::Local({} bytes at {})", r.len, r.offset),
            Inner::Streamed { digest, .. } => write!(f, "Blob::Streamed({digest:?})"),
        }
    }
}

/// The error a streamed blob's reader returns when its bytes do not have its digest.
#[derive(Clone, Debug)]
pub struct DigestMismatch {
    /// The digest the blob was named by (`sha256:<hex>`).
    pub expected: String,
    /// The digest of the bytes actually read (`sha256:<hex>`).
    pub actual: String,
}

impl fmt::Display for DigestMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "blob digest mismatch: expected {}, got {}",
            self.expected, self.actual
        )
    }
}

impl std::error::Error for DigestMismatch {}

/// The digest mismatch an I/O error carries, if it is one (see [`DigestMismatch`]).
pub fn mismatch_of(e: &io::Error) -> Option<&DigestMismatch> {
    e.get_ref().and_then(|r| r.downcast_ref::<DigestMismatch>())
}

impl Blob {
    /// A blob that is a byte range of a local file.
    pub fn local(region: FileRegion) -> Blob {
        Blob {
            inner: Arc::new(Inner::Local(region)),
        }
    }

    /// A blob delivered as a stream by `fetch`, kept in `store` once read. `digest` (the
    /// `sha256:` of the stored bytes) is checked at the end of the first read, and names the
    /// local copy; `size`, when known, is what `inspect` shows before any byte is read.
    pub fn streamed(
        fetch: Box<dyn Fetch>,
        digest: Option<String>,
        size: Option<u64>,
        store: Arc<BlobStore>,
    ) -> Blob {
        // Looked up and registered under one lock: two images opened at once that name the
        // same blob must get the same one (one fetch), not one each.
        let st = store.clone();
        let key = digest.clone();
        let mut map = key
            .as_ref()
            .map(|_| st.live.lock().unwrap_or_else(|p| p.into_inner()));
        if let (Some(d), Some(map)) = (&key, &map)
            && let Some(inner) = map.get(d).and_then(std::sync::Weak::upgrade)
        {
            return Blob { inner };
        }
        let blob = Blob {
            inner: Arc::new(Inner::Streamed {
                fetch,
                digest,
                size,
                store,
                copy: OnceLock::new(),
                shared: Mutex::new(Shared {
                    state: Fetching::Idle,
                    tmp: None,
                    written: 0,
                    failure: None,
                    followers: 0,
                }),
                changed: Condvar::new(),
            }),
        };
        if let (Some(d), Some(map)) = (key, map.as_mut()) {
            map.retain(|_, w| w.strong_count() > 0);
            map.insert(d, Arc::downgrade(&blob.inner));
        }
        blob
    }

    /// How many blobs of its source are worth fetching ahead at once (0: local, kept, or a
    /// source that streams only when read).
    pub fn prefetch_jobs(&self) -> usize {
        match &*self.inner {
            Inner::Streamed { fetch, .. } if self.region().is_none() => fetch.prefetch_jobs(),
            _ => 0,
        }
    }

    /// The digest a streamed blob's reader checks (`None` for a local blob, checked by the
    /// verifier instead, or a stream without one).
    pub fn stream_digest(&self) -> Option<&str> {
        match &*self.inner {
            Inner::Local(_) => None,
            Inner::Streamed { digest, .. } => digest.as_deref(),
        }
    }

    /// The size of the stored bytes, when known without reading them.
    pub fn size(&self) -> Option<u64> {
        match &*self.inner {
            Inner::Local(r) => Some(r.len),
            Inner::Streamed { size, copy, .. } => copy.get().map(|r| r.len).or(*size),
        }
    }

    /// Whether the bytes are local (a file region, or a streamed blob already kept).
    pub fn is_local(&self) -> bool {
        self.region().is_some()
    }

    /// The bytes as a local file region: always for local blobs; for a streamed one once it
    /// was read to its end in this process, or when the store already holds its digest.
    pub fn region(&self) -> Option<FileRegion> {
        match &*self.inner {
            Inner::Local(r) => Some(r.clone()),
            Inner::Streamed {
                digest,
                store,
                copy,
                ..
            } => {
                if let Some(r) = copy.get() {
                    return Some(r.clone());
                }
                let r = store.get(digest.as_deref()?)?;
                Some(copy.get_or_init(|| r).clone())
            }
        }
    }

    /// Open the stored bytes from the start. A streamed blob not yet kept is fetched from its
    /// source and copied into the store as it is read; the digest is checked at its end (the
    /// read that reaches the end fails with a [`DigestMismatch`] when `verify` is set; without
    /// it a mismatching copy is used for this process but never stored under the digest).
    pub fn open(&self, verify: bool) -> io::Result<Box<dyn Read + Send>> {
        match self.claim() {
            Claim::Local(r) => Ok(Box::new(r.reader())),
            Claim::Follow(f) => {
                if let Some((mut st, _)) = self.shared() {
                    st.followers += 1;
                }
                Ok(Box::new(Follower {
                    file: f,
                    pos: 0,
                    verify,
                    blob: self.clone(),
                }))
            }
            Claim::Fetch => self.tee(verify, Fetching::Consumer),
        }
    }

    /// The bytes from the start without keeping a copy: the local copy when there is one,
    /// else the source read directly (not verified, not teed into the store). For a
    /// consumer that reads the blob once and checks its digest itself — copying it into an
    /// OCI layout writes it once, not once into the store and again into the layout.
    pub fn open_unkept(&self) -> io::Result<Box<dyn Read + Send>> {
        if let Some(r) = self.region() {
            return Ok(Box::new(r.reader()));
        }
        match &*self.inner {
            Inner::Streamed { fetch, .. } => fetch.open(),
            Inner::Local(r) => Ok(Box::new(r.reader())),
        }
    }

    fn shared(&self) -> Option<(std::sync::MutexGuard<'_, Shared>, &Condvar)> {
        match &*self.inner {
            Inner::Streamed {
                shared, changed, ..
            } => Some((shared.lock().unwrap_or_else(|p| p.into_inner()), changed)),
            Inner::Local(_) => None,
        }
    }

    /// How a reader gets the bytes: the local copy; the temp file a prefetch is filling
    /// (followed as it grows — a prefetcher never waits on anyone, so this cannot
    /// deadlock); or a fetch of its own (marked, so a prefetcher leaves the blob alone).
    fn claim(&self) -> Claim {
        let Some((mut st, changed)) = self.shared() else {
            return self.region().map_or(Claim::Fetch, Claim::Local);
        };
        loop {
            if let Some(r) = self.region() {
                return Claim::Local(r);
            }
            match (st.state, &st.tmp) {
                (Fetching::Prefetch, Some(path)) => match File::open(path) {
                    Ok(f) => return Claim::Follow(f),
                    Err(e) => {
                        tracing::debug!("cannot follow a prefetch ({e}): fetching");
                        return Claim::Fetch;
                    }
                },
                // A prefetch that has not opened its source yet: its temp file comes next.
                (Fetching::Prefetch, None) => {
                    st = changed.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                (Fetching::Idle, _) => {
                    st.state = Fetching::Consumer;
                    return Claim::Fetch;
                }
                (Fetching::Consumer, _) => return Claim::Fetch,
            }
        }
    }

    /// The fetch ended (`failure` when it did not keep the bytes): others may fetch now.
    fn release(&self, failure: Option<Failure>) {
        if let Some((mut st, changed)) = self.shared() {
            if st.state == Fetching::Prefetch {
                st.failure = failure;
            }
            st.state = Fetching::Idle;
            st.tmp = None;
            changed.notify_all();
        }
    }

    /// Copy the blob from its source into the store now, unless it is local, kept, or being
    /// read by someone already. Errors are left for the blob's readers to meet.
    pub fn prefetch(&self, stop: &dyn Fn() -> bool) {
        if self.claim_prefetch() {
            self.run_prefetch(stop);
        }
    }

    /// Mark the blob as fetched by a prefetch (readers from now on wait for it and follow
    /// it), unless it is local or being read: whether it was claimed.
    fn claim_prefetch(&self) -> bool {
        let Some((mut st, _)) = self.shared() else {
            return false;
        };
        if self.region().is_some() || st.state != Fetching::Idle {
            return false;
        }
        st.state = Fetching::Prefetch;
        st.written = 0;
        st.failure = None;
        true
    }

    /// Fetch a blob [`claim_prefetch`](Blob::claim_prefetch) claimed into the store (or, if
    /// `stop` says so first, give the claim up).
    fn run_prefetch(&self, stop: &dyn Fn() -> bool) {
        if stop() {
            self.release(Some(Failure::Other("the fetch ahead was stopped".into())));
            return;
        }
        let Ok(mut r) = self.tee(true, Fetching::Prefetch) else {
            return;
        };
        let mut buf = vec![0u8; 256 << 10];
        // Stopped only when nobody follows: another operation may be reading along.
        let followed = || self.shared().is_some_and(|(st, _)| st.followers > 0);
        loop {
            if stop() && !followed() {
                return; // dropping the tee releases the blob, keeping nothing
            }
            match r.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("prefetch failed: {e}");
                    return;
                }
            }
        }
    }

    /// A reader of the source that tees into the store; releases the blob when dropped.
    fn tee(&self, verify: bool, who: Fetching) -> io::Result<Box<dyn Read + Send>> {
        let Inner::Streamed {
            fetch,
            digest,
            store,
            ..
        } = &*self.inner
        else {
            unreachable!("a local blob always has its region");
        };
        let opened = fetch
            .open()
            .and_then(|source| store.begin().map(|tmp| (source, tmp)));
        let (source, tmp) = match opened {
            Ok(x) => x,
            Err(e) => {
                self.release(Some(Failure::Other(e.to_string())));
                return Err(e);
            }
        };
        if who == Fetching::Prefetch
            && let Some((mut st, changed)) = self.shared()
        {
            st.tmp = Some(tmp.path().to_path_buf());
            changed.notify_all();
        }
        Ok(Box::new(Tee {
            source,
            tmp: Some(tmp),
            // The blob's own algorithm; SHA-256 when it has no (known) digest.
            hasher: digest
                .as_deref()
                .and_then(crate::digest::Hasher::for_digest)
                .unwrap_or(crate::digest::Hasher::new(crate::digest::Algorithm::Sha256)),
            len: 0,
            digest: digest.clone(),
            verify,
            blob: self.clone(),
            announce: who == Fetching::Prefetch,
            failure: None,
        }))
    }

    /// The bytes as a local region, reading a streamed blob to its end first if it was not
    /// read yet (for operations that need random access or several reads).
    pub fn local_region(&self, verify: bool, label: &str) -> Result<FileRegion> {
        self.fetch_region(verify, label)?
            .ok_or_else(|| Error::Layer {
                layer: label.to_string(),
                message: "blob was read but not kept".into(),
            })
    }

    /// Like [`Blob::local_region`], but a blob that was read to its end and still not kept
    /// (its store could not hold it) is `None`, not an error.
    pub fn fetch_region(&self, verify: bool, label: &str) -> Result<Option<FileRegion>> {
        if let Some(r) = self.region() {
            return Ok(Some(r));
        }
        let mut r = self.open(verify).map_err(|e| read_error(label, e))?;
        io::copy(&mut r, &mut io::sink()).map_err(|e| read_error(label, e))?;
        Ok(self.region())
    }

    fn keep(&self, region: FileRegion) {
        if let Inner::Streamed { copy, .. } = &*self.inner {
            let _ = copy.set(region);
        }
    }
}

fn read_error(label: &str, e: io::Error) -> Error {
    match mismatch_of(&e) {
        Some(m) => Error::Digest {
            what: label.to_string(),
            expected: m.expected.clone(),
            actual: m.actual.clone(),
        },
        None => Error::Layer {
            layer: label.to_string(),
            message: format!("read error: {e}"),
        },
    }
}

/// A streamed blob's first read: bytes pass through to the reader, into a temp file of the
/// store and into a hasher; at the source's end the copy is kept.
struct Tee {
    source: Box<dyn Read + Send>,
    tmp: Option<tempfile::NamedTempFile>,
    hasher: crate::digest::Hasher,
    len: u64,
    digest: Option<String>,
    verify: bool,
    blob: Blob,
    /// A prefetch: followers are told of every write.
    announce: bool,
    /// Why the copy is not kept, when the end said so.
    failure: Option<Failure>,
}

impl Tee {
    fn end(&mut self) -> io::Result<()> {
        let Some(tmp) = self.tmp.take() else {
            return Ok(());
        };
        let hasher = std::mem::replace(
            &mut self.hasher,
            crate::digest::Hasher::new(crate::digest::Algorithm::Sha256),
        );
        let actual = hasher.finish();
        let matches = self.digest.as_deref() == Some(actual.as_str());
        // A digest that does not match — or that strata cannot compute — fails a verified read.
        if !matches
            && self.verify
            && let Some(want) = self.digest.clone()
        {
            let m = DigestMismatch {
                expected: want,
                actual,
            };
            self.failure = Some(Failure::Mismatch(m.clone()));
            return Err(io::Error::new(io::ErrorKind::InvalidData, m));
        }
        let Inner::Streamed { store, .. } = &*self.blob.inner else {
            return Ok(());
        };
        // Only verified bytes are kept under their digest; others stay with this process.
        let region = if matches {
            store.commit(tmp, &actual, self.len)?
        } else {
            let file = tmp.reopen()?;
            FileRegion {
                file: Arc::new(file),
                offset: 0,
                len: self.len,
            }
        };
        self.blob.keep(region);
        Ok(())
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        let failure = match (&self.failure, &self.tmp) {
            (Some(f), _) => Some(f.clone()),
            // Dropped before its end: cut, failed or stopped.
            (None, Some(_)) => Some(Failure::Other("the fetch it followed ended early".into())),
            (None, None) => None,
        };
        self.blob.release(failure);
    }
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // An empty buffer reads 0 bytes without being the end of the stream.
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.source.read(buf)?;
        if n == 0 {
            self.end()?;
            return Ok(0);
        }
        if let Some(tmp) = self.tmp.as_mut() {
            tmp.write_all(&buf[..n])?;
        }
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        if self.announce
            && let Some((mut st, changed)) = self.blob.shared()
        {
            st.written = self.len;
            changed.notify_all();
        }
        Ok(n)
    }
}

/// A reader of a blob a prefetch is copying into the store: its temp file, read as it
/// grows; at the prefetch's end, what it kept (or why it kept nothing).
struct Follower {
    file: File,
    pos: u64,
    verify: bool,
    blob: Blob,
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some((mut st, _)) = self.blob.shared() {
            st.followers = st.followers.saturating_sub(1);
        }
    }
}

impl Read for Follower {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        if buf.is_empty() {
            return Ok(0);
        }
        let Some((mut st, changed)) = self.blob.shared() else {
            return Ok(0);
        };
        loop {
            let avail = if st.state == Fetching::Prefetch {
                st.written.saturating_sub(self.pos)
            } else {
                // Ended: the whole file is there (kept), or it failed.
                match (self.blob.region(), &st.failure) {
                    (Some(r), _) => r.len.saturating_sub(self.pos),
                    (None, Some(Failure::Mismatch(m))) if self.verify => {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, m.clone()));
                    }
                    (None, Some(Failure::Mismatch(_))) => {
                        // Unverified: the bytes as they came (to the end the file has).
                        let len = self.file.metadata()?.len();
                        len.saturating_sub(self.pos)
                    }
                    (None, Some(Failure::Other(why))) => {
                        return Err(io::Error::other(why.clone()));
                    }
                    (None, None) => {
                        return Err(io::Error::other("the fetch it followed ended early"));
                    }
                }
            };
            if avail > 0 || st.state != Fetching::Prefetch {
                drop(st);
                let want = (buf.len() as u64).min(avail) as usize;
                if want == 0 {
                    return Ok(0);
                }
                let n = self.file.read_at(&mut buf[..want], self.pos)?;
                self.pos += n as u64;
                return Ok(n);
            }
            st = changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A temp file of the store, hashed as it is written.
struct HashingFile {
    file: io::BufWriter<tempfile::NamedTempFile>,
    hasher: Sha256,
    len: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Threads copying streamed blobs into the store ahead of their readers; stopped and joined
/// when dropped.
pub struct Prefetcher {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Claimed fetches run to their end (others may come to follow them) unless cancelled:
    /// dropping this leaves them be.
    detached: bool,
}

impl Prefetcher {
    /// Claim every blob of `blobs` not local and not being read now, then fetch them in order,
    /// `jobs` at a time: whoever reads one from now on — this operation or another in the
    /// process — follows that one fetch. For a server whose requests share images: the
    /// fetches go on when this is dropped (into the store, for whoever asks next), and stop
    /// only on `cancel` when nobody follows them.
    pub fn claim_all(blobs: Vec<Blob>, jobs: usize, cancel: &crate::control::Cancel) -> Prefetcher {
        let claimed: Vec<Blob> = blobs.into_iter().filter(|b| b.claim_prefetch()).collect();
        Self::spawn(claimed, jobs.max(1), cancel, true)
    }

    /// Fetch `blobs`, in order, `jobs` at a time (none when `jobs` is 0), until done,
    /// dropped or `cancel`led.
    pub fn start(blobs: Vec<Blob>, jobs: usize, cancel: &crate::control::Cancel) -> Prefetcher {
        Self::spawn(blobs, jobs, cancel, false)
    }

    fn spawn(
        blobs: Vec<Blob>,
        jobs: usize,
        cancel: &crate::control::Cancel,
        claimed: bool,
    ) -> Prefetcher {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let blobs = Arc::new(blobs);
        let threads = (0..jobs.min(blobs.len()))
            .filter_map(|_| {
                let (stop, next, blobs, cancel) =
                    (stop.clone(), next.clone(), blobs.clone(), cancel.clone());
                std::thread::Builder::new()
                    .name("blob-prefetch".into())
                    .spawn(move || {
                        let stopped = || stop.load(Ordering::Relaxed) || cancel.is_cancelled();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(b) = blobs.get(i) else { return };
                            if claimed {
                                // A claim is always run or given up: readers wait on it.
                                b.run_prefetch(&stopped);
                                continue;
                            }
                            if stopped() {
                                return;
                            }
                            b.prefetch(&stopped);
                        }
                    })
                    .ok()
            })
            .collect::<Vec<_>>();
        if claimed && threads.is_empty() {
            // No thread to run the claims: give them up, or their readers would wait.
            for b in blobs.iter() {
                b.release(Some(Failure::Other("no thread to fetch it".into())));
            }
        }
        Prefetcher {
            stop,
            threads,
            detached: claimed,
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Default size cap of the blob store, in bytes (10 GiB).
pub const DEFAULT_STORE_CAP: u64 = 10 << 30;

/// Temp files older than this in the store are left over from a killed run.
const STALE_TEMP: Duration = Duration::from_secs(24 * 3600);

/// A content-addressed store of streamed blobs: `DIR/sha256/<hex>`, written to a temp file
/// in `DIR/tmp/` and renamed (so several processes can fill it at once: a rename of the same
/// content over the same name is harmless), least recently used evicted past a size cap.
/// Nothing touches the disk until the first blob is kept.
pub struct BlobStore {
    place: Place,
    cap: u64,
    /// Serialises eviction within the process.
    lock: Mutex<()>,
    /// Streamed blobs alive in this process, by digest: two images naming one blob (two
    /// requests of a server, `diff A B`) share its one fetch.
    live: Mutex<HashMap<String, std::sync::Weak<Inner>>>,
}

enum Place {
    Dir(PathBuf),
    /// For this process only, made at the first use, removed on drop.
    Temp(OnceLock<tempfile::TempDir>),
}

impl fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.place {
            Place::Dir(d) => write!(f, "BlobStore({}, cap {})", d.display(), self.cap),
            Place::Temp(_) => write!(f, "BlobStore(temporary)"),
        }
    }
}

impl BlobStore {
    /// The store at `dir` (usually `<cache dir>/blobs`), holding at most `cap` bytes.
    pub fn new(dir: PathBuf, cap: u64) -> BlobStore {
        BlobStore {
            place: Place::Dir(dir),
            cap,
            lock: Mutex::new(()),
            live: Mutex::new(HashMap::new()),
        }
    }

    /// A store that lives as long as this value, in the system's temp directory: what
    /// `--no-cache` gives, so that a blob is still fetched only once.
    pub fn temporary() -> BlobStore {
        BlobStore {
            place: Place::Temp(OnceLock::new()),
            cap: u64::MAX,
            lock: Mutex::new(()),
            live: Mutex::new(HashMap::new()),
        }
    }

    /// The store's directory, when it exists (a temporary one is made by its first blob).
    pub fn dir(&self) -> Option<&Path> {
        match &self.place {
            Place::Dir(d) => Some(d),
            Place::Temp(t) => t.get().map(|t| t.path()),
        }
    }

    fn make_dir(&self) -> io::Result<&Path> {
        match &self.place {
            Place::Dir(d) => Ok(d),
            Place::Temp(t) => {
                if t.get().is_none() {
                    let made = tempfile::Builder::new().prefix("strata-blobs-").tempdir()?;
                    let _ = t.set(made);
                }
                t.get()
                    .map(|t| t.path())
                    .ok_or_else(|| io::Error::other("temp blob store vanished"))
            }
        }
    }

    /// The path of a digest, when it is one (`sha256:` and 64 hex digits: never a path).
    fn path_of(&self, digest: &str) -> Option<PathBuf> {
        let (alg, hex) = crate::digest::parse(digest)?;
        self.dir().map(|d| d.join(alg.name()).join(hex))
    }

    /// The kept copy of `digest`, marked as just used.
    pub fn get(&self, digest: &str) -> Option<FileRegion> {
        let path = self.path_of(digest)?;
        let file = crate::image::open_regular(&path).ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() {
            return None;
        }
        // The least recently used go first: a use counts as a modification time.
        let _ = file.set_modified(SystemTime::now());
        Some(FileRegion {
            file: Arc::new(file),
            offset: 0,
            len: meta.len(),
        })
    }

    fn begin(&self) -> io::Result<tempfile::NamedTempFile> {
        let tmp = self.make_dir()?.join("tmp");
        fs::create_dir_all(&tmp)?;
        tempfile::Builder::new()
            .prefix(".blob-")
            .suffix(".partial")
            .tempfile_in(tmp)
    }

    /// Copy what `write` produces into the store, hashing it on the way, and keep it under its
    /// digest: for content whose digest is learnt only by reading it (a `docker save` stream's
    /// layers). Returns the digest and the kept copy.
    pub fn put_with(
        &self,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<(String, FileRegion)> {
        let tmp = self.begin()?;
        let mut w = HashingFile {
            file: io::BufWriter::with_capacity(256 * 1024, tmp),
            hasher: Sha256::new(),
            len: 0,
        };
        write(&mut w)?;
        let tmp = w.file.into_inner().map_err(|e| e.into_error())?;
        let digest = format!("sha256:{}", hex::encode(w.hasher.finalize()));
        let region = self.commit(tmp, &digest, w.len)?;
        Ok((digest, region))
    }

    /// [`BlobStore::put_with`] of everything `r` reads.
    pub fn put(&self, r: &mut dyn Read) -> io::Result<(String, FileRegion)> {
        self.put_with(&mut |w| io::copy(r, w).map(|_| ()))
    }

    /// Keep a verified temp file under its digest, then evict past the cap.
    fn commit(
        &self,
        tmp: tempfile::NamedTempFile,
        digest: &str,
        len: u64,
    ) -> io::Result<FileRegion> {
        let path = self
            .path_of(digest)
            .ok_or_else(|| io::Error::other(format!("not a sha256 digest: {digest}")))?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file = tmp.persist(&path).map_err(|e| e.error)?;
        let region = FileRegion {
            file: Arc::new(file),
            offset: 0,
            len,
        };
        self.evict(&path);
        Ok(region)
    }

    /// Remove the least recently used blobs until the store is under its cap (never `keep`,
    /// the one just added), and temp files left by killed runs. Files another process has
    /// open stay readable to it: only their names go.
    fn evict(&self, keep: &Path) {
        let Ok(_guard) = self.lock.lock() else {
            return;
        };
        let Some(dir) = self.dir() else { return };
        let now = SystemTime::now();
        if let Ok(rd) = fs::read_dir(dir.join("tmp")) {
            for e in rd.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_TEMP);
                if old {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let mut blobs: Vec<(SystemTime, u64, PathBuf)> = ["sha256", "sha512"]
            .iter()
            .filter_map(|alg| fs::read_dir(dir.join(alg)).ok())
            .flatten()
            .flatten()
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                m.is_file()
                    .then(|| (m.modified().unwrap_or(now), m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = blobs.iter().map(|b| b.1).sum();
        if total <= self.cap {
            return;
        }
        blobs.sort();
        for (_, len, path) in blobs {
            if total <= self.cap {
                break;
            }
            if path == keep {
                continue;
            }
            if fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bytes(Vec<u8>, Arc<std::sync::atomic::AtomicUsize>);

    impl Fetch for Bytes {
        fn open(&self) -> io::Result<Box<dyn Read + Send>> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Box::new(io::Cursor::new(self.0.clone())))
        }
    }

    fn digest_of(b: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(b)))
    }

    fn streamed(
        data: &[u8],
        digest: String,
        store: &Arc<BlobStore>,
    ) -> (Blob, Arc<std::sync::atomic::AtomicUsize>) {
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let b = Blob::streamed(
            Box::new(Bytes(data.to_vec(), n.clone())),
            Some(digest),
            Some(data.len() as u64),
            store.clone(),
        );
        (b, n)
    }

    fn read_all(b: &Blob) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        b.open(true)?.read_to_end(&mut v)?;
        Ok(v)
    }

    /// A source that delivers its bytes slowly, a chunk at a time.
    struct Slow(Vec<u8>, Arc<std::sync::atomic::AtomicUsize>);

    struct Trickle(io::Cursor<Vec<u8>>);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(Duration::from_millis(2));
            let n = buf.len().min(1000);
            self.0.read(&mut buf[..n])
        }
    }

    impl Fetch for Slow {
        fn open(&self) -> io::Result<Box<dyn Read + Send>> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(Box::new(Trickle(io::Cursor::new(self.0.clone()))))
        }
        fn prefetch_jobs(&self) -> usize {
            1
        }
    }

    #[test]
    fn a_reader_follows_a_prefetch_in_progress_and_nothing_is_fetched_twice() {
        let store = Arc::new(BlobStore::temporary());
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        for (digest, good) in [(digest_of(&data), true), (digest_of(b"other"), false)] {
            let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let b = Blob::streamed(
                Box::new(Slow(data.clone(), n.clone())),
                Some(digest),
                None,
                store.clone(),
            );
            assert_eq!(b.prefetch_jobs(), 1);
            let p = Prefetcher::start(vec![b.clone()], 1, &Default::default());
            // Wait until the prefetch is under way, then read along.
            while b.shared().is_some_and(|(st, _)| st.written == 0) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let got = read_all(&b);
            drop(p);
            assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 1, "one fetch");
            if good {
                assert_eq!(got.unwrap(), data);
                assert!(b.is_local());
            } else {
                let e = got.unwrap_err();
                assert!(mismatch_of(&e).is_some(), "{e}");
                assert!(!b.is_local(), "a mismatch is not kept");
            }
        }
    }

    #[test]
    fn two_images_naming_one_blob_share_its_fetch() {
        let store = Arc::new(BlobStore::temporary());
        let data = b"shared layer bytes".to_vec();
        let (a, n) = streamed(&data, digest_of(&data), &store);
        let (b, m) = streamed(&data, digest_of(&data), &store);
        assert_eq!(read_all(&a).unwrap(), data);
        assert_eq!(read_all(&b).unwrap(), data);
        let opens = n.load(std::sync::atomic::Ordering::SeqCst)
            + m.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(opens, 1, "one fetch for both");
        // Gone, the next one is new (and finds the kept copy).
        drop((a, b));
        let (c, k) = streamed(&data, digest_of(&data), &store);
        assert!(c.is_local());
        assert_eq!(k.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn a_streamed_blob_is_fetched_once_and_kept_under_its_digest() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::new(d.path().join("blobs"), u64::MAX));
        let data = b"hello layer".repeat(1000);
        let (b, n) = streamed(&data, digest_of(&data), &store);
        assert_eq!(read_all(&b).unwrap(), data);
        assert_eq!(read_all(&b).unwrap(), data);
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Another blob value with the same digest (another process) finds the copy.
        let (b2, n2) = streamed(&data, digest_of(&data), &store);
        assert!(b2.is_local());
        assert_eq!(read_all(&b2).unwrap(), data);
        assert_eq!(n2.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn a_mismatch_fails_the_read_and_keeps_nothing() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::new(d.path().join("blobs"), u64::MAX));
        let wrong = digest_of(b"something else");
        let (b, _) = streamed(b"payload", wrong.clone(), &store);
        let e = read_all(&b).unwrap_err();
        let m = mismatch_of(&e).expect("a digest mismatch");
        assert_eq!(m.expected, wrong);
        assert!(store.get(&wrong).is_none());
        assert!(!b.is_local());
        // Unverified, the bytes are used but not stored under the digest.
        let mut v = Vec::new();
        b.open(false).unwrap().read_to_end(&mut v).unwrap();
        assert_eq!(v, b"payload");
        assert!(store.get(&wrong).is_none());
        assert!(b.is_local());
    }

    #[test]
    fn a_stream_cut_short_keeps_nothing() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::new(d.path().join("blobs"), u64::MAX));
        let data = vec![7u8; 100_000];
        let (b, _) = streamed(&data, digest_of(&data), &store);
        let mut r = b.open(true).unwrap();
        let mut buf = [0u8; 10];
        r.read_exact(&mut buf).unwrap();
        drop(r);
        assert!(!b.is_local());
        assert_eq!(fs::read_dir(d.path().join("blobs/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn the_least_recently_used_blobs_go_past_the_cap() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::new(d.path().join("blobs"), 2500));
        let blobs: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 1000]).collect();
        for (i, data) in blobs.iter().enumerate() {
            let (b, _) = streamed(data, digest_of(data), &store);
            read_all(&b).unwrap();
            // Distinct use times, oldest first; blob 0 is used again before blob 2 arrives.
            let t = SystemTime::now() - Duration::from_secs(100 - i as u64 * 10);
            std::fs::File::open(store.path_of(&digest_of(data)).unwrap())
                .unwrap()
                .set_modified(t)
                .unwrap();
            if i == 1 {
                assert!(store.get(&digest_of(&blobs[0])).is_some());
            }
        }
        assert!(store.get(&digest_of(&blobs[0])).is_some());
        assert!(
            store.get(&digest_of(&blobs[1])).is_none(),
            "blob 1 was least recently used"
        );
        assert!(store.get(&digest_of(&blobs[2])).is_some());
    }

    #[test]
    fn digests_are_never_paths() {
        let store = BlobStore::new(PathBuf::from("/nonexistent"), 1);
        assert!(
            store
                .path_of(&format!("sha256:{}", "a".repeat(64)))
                .is_some()
        );
        assert!(store.path_of("sha256:../../etc/passwd").is_none());
        assert!(store.path_of("../x:y").is_none());
        assert!(
            store
                .path_of(&format!("sha256:{}", "A".repeat(64)))
                .is_none()
        );
    }
}
