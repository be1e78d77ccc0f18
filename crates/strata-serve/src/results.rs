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

/// The result files and the computations in flight.
pub struct Results {
    dir: PathBuf,
    cap: u64,
    inflight: Mutex<HashMap<String, watch::Receiver<Outcome>>>,
}

impl Results {
    /// Results in `dir`, at most `cap` bytes of them.
    pub fn new(dir: PathBuf, cap: u64) -> Results {
        Results {
            dir,
            cap,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The file of `key`: on disk, or being computed (then waited for), or computed now by
    /// `compute` (given the path to create) on a blocking thread holding `permit` — taken by
    /// `permit()` only when this request must compute (`None`: no worker free).
    pub async fn get(
        self: &Arc<Self>,
        key: &str,
        permit: impl FnOnce() -> Option<OwnedSemaphorePermit>,
        compute: impl FnOnce(&Path) -> strata::Result<()> + Send + 'static,
    ) -> Result<(PathBuf, Found), Arc<strata::Error>> {
        let path = self.path(key);
        if path.is_file() {
            touch(&path);
            return Ok((path, Found::Hit));
        }
        let (mut rx, found) = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(key) {
                Some(rx) => (rx.clone(), Found::Coalesced),
                None => {
                    let Some(permit) = permit() else {
                        return Err(Arc::new(strata::Error::Cancelled));
                    };
                    let (tx, rx) = watch::channel(None);
                    map.insert(key.to_string(), rx.clone());
                    let me = self.clone();
                    let key = key.to_string();
                    let p = path.clone();
                    tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        if let Err(e) = std::fs::create_dir_all(&me.dir) {
                            let _ = tx.send(Some(Err(Arc::new(strata::Error::output(
                                "creating the results directory",
                                e,
                            )))));
                        } else {
                            let r = compute(&p).map(|()| p.clone()).map_err(Arc::new);
                            let _ = tx.send(Some(r));
                        }
                        me.inflight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&key);
                        me.evict(&p);
                    });
                    (rx, Found::Computed)
                }
            }
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

/// Mark a result as used now (its modification time orders eviction).
fn touch(p: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(p) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}
