//! Sinks: writing a whole image (layers, config, manifest) in one of the on-disk formats.
//! One file per format, sharing `members` (exact-size tar members or files in a directory).

pub mod docker_archive;
pub mod members;
pub mod oci_layout;

use crate::compression::Compression;
use crate::error::Result;
use crate::image::Layer;
use members::Produce;

/// One layer as written.
#[derive(Clone, Debug)]
pub struct LayerOut {
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// Digest and size of the blob as stored (equal to the above when uncompressed).
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// An image being written, layer by layer, bottom first.
pub trait ImageWriter {
    /// A layer copied through from the source image (same diff_id; for OCI, the same blob).
    /// `verified`: its digests were checked while reading, so they need not be recomputed.
    fn kept_layer(&mut self, layer: &Layer, diff_id: &str, verified: bool) -> Result<LayerOut>;
    /// A new layer: `produce` writes its uncompressed tar (maybe twice, identically).
    fn new_layer(&mut self, produce: &mut Produce<'_>) -> Result<LayerOut>;
    /// Write the config and manifest(s) naming `tags`, and close.
    fn finish(&mut self, config: &[u8], layers: &[LayerOut], tags: &[String]) -> Result<()>;
}

/// OCI media type of a layer blob by its compression.
pub fn oci_layer_media_type(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => "application/vnd.oci.image.layer.v1.tar",
    }
}
