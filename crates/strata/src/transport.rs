//! The transport seam: how a reference becomes an [`Image`].
//!
//! A transport is one file implementing [`Transport`]: given the part of a reference after
//! its name (`docker-archive:` → `PATH[:NAME:TAG]`), it supplies the config, the manifest
//! digest and the layers as [`Blob`](crate::blob::Blob)s — local file regions, or streams that
//! are read once and kept in the [`BlobStore`]. Everything else (verification, the merge,
//! squash, listings, extract, build) works on the [`Image`] and never asks where it came from.
//! Adding a transport is one file here plus one line in [`TRANSPORTS`].

use crate::blob::BlobStore;
use crate::error::Result;
use crate::image::platform::Platform;
use crate::image::{Image, docker_archive, docker_daemon, oci_layout, registry};
use std::sync::Arc;

/// What opening an image may need besides the reference.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// The platform to pick from a multi-platform index.
    pub platform: Platform,
    /// The platform was asked for (`--platform`): a single-platform image of another one is
    /// an error, not silently taken.
    pub require_platform: bool,
    /// Digests are checked where an image is opened (a config named by its digest); off
    /// (`--no-verify`), a mismatch there is a warning.
    pub verify: bool,
    /// Where streamed blobs are kept once read.
    pub store: Arc<BlobStore>,
    /// How registries are reached (`docker://`), and the clients already connected.
    pub registry: Arc<crate::registry::Options>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            platform: Platform::default(),
            require_platform: false,
            verify: true,
            store: Arc::new(BlobStore::temporary()),
            registry: Arc::default(),
        }
    }
}

/// A source of images.
pub trait Transport: Sync {
    /// The name before the colon in a reference (`docker-archive`).
    fn name(&self) -> &'static str;
    /// Open `spec`, the reference without `NAME:`. `shown` is the whole reference as the
    /// user gave it, for messages and [`Image::reference`].
    fn open(&self, spec: &str, shown: &str, opts: &OpenOptions) -> Result<Image>;
}

/// Every transport strata reads, by name: the reference parser's one table.
pub static TRANSPORTS: &[&dyn Transport] = &[
    &docker_archive::DockerArchive,
    &docker_daemon::DockerDaemon,
    &registry::Registry,
    &oci_layout::OciDir,
    &oci_layout::OciArchive,
];

/// The transport of that name.
pub fn by_name(name: &str) -> Option<&'static dyn Transport> {
    TRANSPORTS.iter().copied().find(|t| t.name() == name)
}

/// The names, for messages: `docker-archive:, oci:, oci-archive:`.
pub fn names() -> String {
    TRANSPORTS
        .iter()
        .map(|t| format!("{}:", t.name()))
        .collect::<Vec<_>>()
        .join(", ")
}
