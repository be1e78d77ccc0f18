//! Results on local disk, by content: a squash or flatten is computed once per (manifest
//! digest, options) into a file, which every request for it is then served from — with its
//! exact length known before the first byte. Identical requests arriving while it is computed
//! wait for the same computation (one upstream fetch per blob). Past the size cap the least
//! recently used files go.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, watch};

/// How a result was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// On disk already.
    Hit,
    /// Computed for this request.
    Computed,
    /// Computed for another request that was waiting for it too.
    Coalesced,
}

type Outcome = Option<Result<PathBuf, Arc<strata::Error>>>;

/// A computation in flight: its result channel, and who still waits for it.
struct Flight {
    rx: watch::Receiver<Outcome>,
    waiters: usize,
    cancel: strata::control::Cancel,
}

/// The result files and the computations in flight.
pub struct Results {
    dir: PathBuf,
    cap: u64,
    inflight: Mutex<HashMap<String, Flight>>,
    /// Computations running now.
    pub running: prometheus_client::metrics::gauge::Gauge,
}

impl Results {
    /// Results in `dir`, at most `cap` bytes of them.
    pub fn new(dir: PathBuf, cap: u64) -> Results {
        Results {
            dir,
            cap,
            inflight: Mutex::new(HashMap::new()),
            running: Default::default(),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The file of `key`: on disk, or being computed (then waited for), or computed now by
    /// `compute` (given the path to create) on a blocking thread holding `permit` — taken by
    /// `permit()` only when this request must compute (`None`: no worker free). When every
    /// request waiting for a computation has gone (clients that hung up), it is cancelled.
    pub async fn get(
        self: &Arc<Self>,
        key: &str,
        permit: impl FnOnce() -> Option<OwnedSemaphorePermit>,
        compute: impl FnOnce(&Path, &strata::control::Cancel) -> strata::Result<()> + Send + 'static,
    ) -> Result<(PathBuf, Found), Arc<strata::Error>> {
        let path = self.path(key);
        if path.is_file() {
            touch(&path);
            return Ok((path, Found::Hit));
        }
        let (mut rx, found) = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get_mut(key) {
                Some(f) => {
                    f.waiters += 1;
                    (f.rx.clone(), Found::Coalesced)
                }
                None => {
                    let Some(permit) = permit() else {
                        return Err(Arc::new(strata::Error::Cancelled));
                    };
                    let (tx, rx) = watch::channel(None);
                    let cancel = strata::control::Cancel::default();
                    map.insert(
                        key.to_string(),
                        Flight {
                            rx: rx.clone(),
                            waiters: 1,
                            cancel: cancel.clone(),
                        },
                    );
                    let me = self.clone();
                    let key = key.to_string();
                    let p = path.clone();
                    self.running.inc();
                    tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        if let Err(e) = std::fs::create_dir_all(&me.dir) {
                            let _ = tx.send(Some(Err(Arc::new(strata::Error::output(
                                "creating the results directory",
                                e,
                            )))));
                        } else {
                            let r = compute(&p, &cancel).map(|()| p.clone()).map_err(Arc::new);
                            let _ = tx.send(Some(r));
                        }
                        me.inflight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&key);
                        me.running.dec();
                        me.evict(&p);
                    });
                    (rx, Found::Computed)
                }
            }
        };
        // Dropped with this request (its client gone): one waiter fewer.
        let _waiting = Waiting {
            results: self.clone(),
            key: key.to_string(),
        };
        loop {
            if let Some(r) = rx.borrow().clone() {
                return r.map(|p| (p, found));
            }
            if rx.changed().await.is_err() {
                return Err(Arc::new(strata::Error::Format(
                    "the computation ended without a result".into(),
                )));
            }
        }
    }

    /// Remove the least recently used results past the cap, never `keep`.
    fn evict(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                let name = e.file_name();
                // Temp files of results being written are not results yet.
                (m.is_file() && !name.to_string_lossy().starts_with('.')).then(|| {
                    (
                        m.modified().unwrap_or(std::time::UNIX_EPOCH),
                        m.len(),
                        e.path(),
                    )
                })
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, p) in files {
            if total <= self.cap {
                break;
            }
            if p != keep && std::fs::remove_file(&p).is_ok() {
                total -= len;
            }
        }
    }
}

/// One request waiting for a computation; the last to go cancels it.
struct Waiting {
    results: Arc<Results>,
    key: String,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut map = self
            .results
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(f) = map.get_mut(&self.key) {
            f.waiters = f.waiters.saturating_sub(1);
            if f.waiters == 0 && f.rx.borrow().is_none() {
                tracing::info!("nobody waits for {} any more: cancelled", self.key);
                f.cancel.cancel();
            }
        }
    }
}

/// Mark a result as used now (its modification time orders eviction).
fn touch(p: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(p) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}
