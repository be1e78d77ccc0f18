//! Registries: the Docker Registry HTTP API v2 (the OCI distribution spec) as a client.
//!
//! [`name`] parses `docker://` names as Docker does; [`credentials`] finds what a user is
//! logged in with; [`auth`] turns challenges into Basic or Bearer authorization; [`tls`] builds
//! the TLS roots; [`client`] sends requests with retries, redirects and resumable blob reads.
//! The transport reading images is `image::registry`, the destination writing them
//! `sink::registry`.

pub mod auth;
pub mod client;
pub mod credentials;
pub mod name;
pub mod tls;

use crate::error::Result;
use client::Client;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How to reach registries: credentials, TLS, patience. One per command (or per served
/// request); its clients — and their tokens — are shared by every image it opens.
pub struct Options {
    /// Where credentials come from.
    pub lookup: credentials::Lookup,
    /// Verify TLS (`--tls-verify`, default on); off also allows plain HTTP.
    pub tls_verify: bool,
    /// `--cert-dir`.
    pub cert_dir: Option<PathBuf>,
    /// Speak plain HTTP to every registry (a service told `--registry http://…`).
    pub plain_http: bool,
    /// Connect and per-read/write timeout.
    pub timeout: Duration,
    /// Retries of a failed request or a cut stream.
    pub retries: u32,
    /// The first retry's wait (doubling after).
    pub backoff: Duration,
    /// Blobs fetched at once ahead of the merge, and uploaded at once.
    pub jobs: usize,
    /// The clients connected so far (none at first).
    pub clients: Clients,
    /// Where transfers report their progress (a progress bar per blob on a terminal).
    pub transfers: Option<Arc<dyn Transfers>>,
}

/// Which way a blob goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the registry.
    Download,
    /// To the registry.
    Upload,
}

/// Progress of blob transfers: each download or upload gets a [`Transfer`].
pub trait Transfers: Send + Sync {
    /// A transfer begins: `label` says what (`↓ sha256:1234abcd`), `total` its size when
    /// known.
    fn start(&self, direction: Direction, label: String, total: Option<u64>) -> Box<dyn Transfer>;
    /// The registry answered `status` to a request that is retried (429, 5xx).
    fn answered(&self, _status: u16) {}
}

/// One transfer's progress; it ended when dropped.
pub trait Transfer: Send {
    /// `bytes` more went through.
    fn advance(&mut self, bytes: u64);
}

/// The registry clients of one [`Options`], by registry.
#[derive(Debug, Default)]
pub struct Clients(Mutex<HashMap<String, Arc<Client>>>);

impl Default for Options {
    fn default() -> Self {
        Options {
            lookup: credentials::Lookup::default(),
            tls_verify: true,
            cert_dir: None,
            plain_http: false,
            timeout: Duration::from_secs(60),
            retries: 4,
            backoff: Duration::from_millis(250),
            jobs: 4,
            clients: Clients::default(),
            transfers: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("lookup", &self.lookup)
            .field("tls_verify", &self.tls_verify)
            .field("cert_dir", &self.cert_dir)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("jobs", &self.jobs)
            .finish_non_exhaustive()
    }
}

impl Clone for Options {
    /// The same settings, with no clients (and so no tokens) of its own yet.
    fn clone(&self) -> Self {
        Options {
            lookup: self.lookup.clone(),
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir.clone(),
            plain_http: self.plain_http,
            timeout: self.timeout,
            retries: self.retries,
            backoff: self.backoff,
            jobs: self.jobs,
            clients: Clients::default(),
            transfers: self.transfers.clone(),
        }
    }
}

impl Options {
    /// The client of `registry` (as names give it), connected on first use.
    pub fn client(&self, name: &name::ImageName) -> Result<Arc<Client>> {
        let key = name.registry.clone();
        if let Some(c) = self.lock().get(&key) {
            return Ok(c.clone());
        }
        // Connected outside the lock: a ping may take a while.
        let c = Arc::new(Client::connect(&name.registry, name.api_host(), self)?);
        Ok(self.lock().entry(key).or_insert(c).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Client>>> {
        self.clients.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
