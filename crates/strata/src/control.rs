//! What a caller controls while an operation runs: a [`Cancel`] handle it can trip from
//! another thread (a server whose client hung up), and a [`Progress`] callback it renders as
//! it likes (the CLI draws a bar; a server may count bytes).

use crate::error::{Error, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A cancellation handle, shared by clones. Operations check it per tar entry and per chunk
/// of data — in the merge, the decoders and the digest verifiers — and return
/// [`Error::Cancelled`] promptly once it is tripped; their threads end with them.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A handle that is not tripped.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Ask every operation holding a clone to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`Cancel::cancel`] was called on this handle or a clone.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(Error::Cancelled)` once cancelled.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    /// The same, as an I/O error (for readers and writers).
    pub fn check_io(&self) -> std::io::Result<()> {
        if self.is_cancelled() {
            // Not `Interrupted`: readers retry that.
            return Err(std::io::Error::other(Cancelled));
        }
        Ok(())
    }
}

/// The I/O error payload of a cancelled read.
#[derive(Debug)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cancelled")
    }
}

impl std::error::Error for Cancelled {}

/// Whether an I/O error is a cancellation.
pub fn is_cancelled(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|r| r.is::<Cancelled>())
}

/// Which pass over the data a progress report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Stored layer bytes read (by the merge, a listing walk, extract).
    Read,
    /// Source file bytes written into a new layer (build); a two-pass output counts twice.
    Build,
}

/// Progress reports: called from the threads that do the work, often (every chunk), so an
/// implementation should be cheap.
pub trait Progress: Send + Sync {
    /// `bytes` more were processed, of layer `layer` (its index in the image) when there is one.
    fn advance(&self, bytes: u64, layer: Option<usize>, pass: Pass);
}

/// A shared progress callback.
pub type ProgressRef = Arc<dyn Progress>;
