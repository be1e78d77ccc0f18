//! strata: read container images (docker-archive, OCI layout, OCI archive) and work on their
//! layers — inspect, flatten — streamed, verified, and by the OCI changeset rules.
//!
//! Data flows one way: a [`reference::Reference`] opens an [`image::Image`] (config + layers as
//! file regions) → [`layer`] turns each into a verified, decompressed stream → [`merge`] applies
//! the [`whiteout`] rules newest-first → an [`output::Sink`].

pub mod blob;
pub mod build;
pub mod compression;
pub mod control;
pub mod error;
pub mod extract;
pub mod image;
pub mod inspect;
pub mod layer;
pub mod listing;
pub mod merge;
pub mod output;
pub mod pathname;
pub mod pathtree;
pub mod reference;
pub mod sink;
pub mod squash;
pub mod tarstream;
pub mod timestamp;
pub mod transport;
pub mod whiteout;

pub use error::{Error, Result};
