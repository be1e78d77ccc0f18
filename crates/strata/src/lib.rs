//! strata: container image layers — read from any transport, merged by the OCI changeset
//! rules, squashed, listed, extracted and built — streamed, with every digest verified.
//!
//! Data flows one way: a [`transport::Transport`] (picked by [`reference::Reference`]) opens an
//! [`image::Image`] — a config and layers whose bytes are [`blob::Blob`]s, local file regions
//! or streams read once and kept in a [`blob::BlobStore`] → [`layer`] turns each into a
//! verified, decompressed stream → an operation ([`merge`], [`squash`], [`listing`],
//! [`extract`], [`build`]) → a writer ([`sink`] for whole images). Operations take a
//! [`control::Cancel`] handle and a [`control::Progress`] callback; errors say whose fault
//! they are ([`error::ErrorKind`]).
//!
//! A transport only supplies blobs; everything else comes for free. Here an image is built in
//! memory around a layer that can be read once, as a stream, and flattened to a `Vec`:
//!
//! ```
//! use std::io::{Cursor, Read};
//! use std::sync::Arc;
//! use strata::blob::{Blob, BlobStore, Fetch};
//! use strata::image::{Image, Layer};
//!
//! // A layer: one directory, then the end-of-archive blocks.
//! let mut tar = strata::tarstream::directory_header(b"etc/", 0o755);
//! strata::tarstream::write_trailer(&mut tar)?;
//!
//! // A source that hands its bytes over as a stream (a registry, a daemon, a pipe).
//! struct Memory(Vec<u8>);
//! impl Fetch for Memory {
//!     fn open(&self) -> std::io::Result<Box<dyn Read + Send>> {
//!         Ok(Box::new(Cursor::new(self.0.clone())))
//!     }
//! }
//! let store = Arc::new(BlobStore::temporary());
//! let layer = Layer {
//!     index: 0,
//!     location: "memory".into(),
//!     blob: Blob::streamed(Box::new(Memory(tar)), None, None, store),
//!     media_type: None,
//!     digest: None,
//!     diff_id: None,
//!     urls: Vec::new(),
//! };
//! let image = Image {
//!     reference: "memory:demo".into(),
//!     transport: "memory",
//!     tags: vec![],
//!     config_raw: b"{}".to_vec(),
//!     config: serde_json::json!({}),
//!     config_digest: None,
//!     manifest_digest: None,
//!     manifest_raw: None,
//!     layers: vec![layer],
//!     _spool: None,
//! };
//! let mut rootfs = Vec::new();
//! let stats = strata::merge::flatten(&image.layers, &mut rootfs, &Default::default())?;
//! assert_eq!(stats.entries_written, 1);
//! assert!(image.layers[0].blob.is_local(), "kept after its one read");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod blob;
pub mod build;
pub mod compression;
pub mod control;
pub mod copy;
pub mod digest;
pub mod error;
pub mod extract;
pub mod image;
pub mod inspect;
pub mod layer;
pub mod listing;
pub mod merge;
pub mod mirror;
pub mod output;
pub mod parallel_gzip;
pub mod pathname;
pub mod pathtree;
pub mod reference;
pub mod registry;
pub mod sink;
pub mod squash;
pub mod tarstream;
pub mod timestamp;
pub mod transport;
pub mod whiteout;

pub use error::{Error, Result};
