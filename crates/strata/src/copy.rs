//! `copy`: an image from one transport to another (skopeo copy's job), its layers and config
//! carried over unchanged — the same diff_ids and config digest; each layer is hashed on the
//! way and compared with what the source says it is. Blobs go as stored unless another
//! compression is asked for: then a layer stored otherwise is decompressed and compressed
//! again (its diff_id, checked, stays the same).

use crate::compression::Compression;
use crate::control::Cancel;
use crate::error::{Error, Result};
use crate::image::{Image, Layer};
use crate::sink::{ImageWriter, LayerOut};

/// Write `img` through `writer` as it is, named `tags`; with `recompress`, layers not stored
/// in that compression are written in it. With `keep_manifest`, when every blob went as
/// stored, the source's own manifest bytes are written where the destination can hold them
/// (a registry, an OCI layout for an OCI manifest): the copy keeps the manifest digest too.
pub fn copy(
    img: &Image,
    writer: &mut dyn ImageWriter,
    tags: &[String],
    recompress: Option<Compression>,
    keep_manifest: bool,
    cancel: &Cancel,
) -> Result<Vec<LayerOut>> {
    let mut out = Vec::with_capacity(img.layers.len());
    for layer in &img.layers {
        let diff_id = crate::squash::diff_id_of(layer)?;
        let keep = match recompress {
            None => true,
            Some(c) => crate::layer::stored_compression(layer)? == c,
        };
        if keep {
            // Not verified by an earlier pass: the writer hashes the layer and compares.
            out.push(writer.kept_layer(layer, &diff_id, false)?);
            continue;
        }
        out.push(rewrite_layer(writer, layer, &diff_id, None, cancel)?);
    }
    let as_stored = out
        .iter()
        .zip(&img.layers)
        .all(|(o, l)| l.digest.as_deref() == Some(o.digest.as_str()));
    if keep_manifest
        && as_stored
        && let Some((media_type, raw)) = &img.manifest_raw
        && writer.finish_as(raw, media_type, &img.config_raw, tags)?
    {
        return Ok(out);
    }
    writer.finish(&img.config_raw, &out, tags)?;
    Ok(out)
}

/// `layer`'s tar written through `writer` as a new layer (named from `key` where a format
/// names it before its bytes: see [`ImageWriter::new_keyed_layer`]), checked to come out with
/// its `diff_id`.
pub(crate) fn rewrite_layer(
    writer: &mut dyn ImageWriter,
    layer: &Layer,
    diff_id: &str,
    key: Option<&str>,
    cancel: &Cancel,
) -> Result<LayerOut> {
    let mut produce = |w: &mut dyn std::io::Write| {
        let label = layer.label();
        let mut tar = crate::layer::open(layer, Some(diff_id.to_string()), true, None, cancel)
            .map_err(|e| Error::io(&label, e))?;
        std::io::copy(&mut tar, w).map_err(|e| Error::io(&label, e))?;
        Ok(())
    };
    let written = match key {
        Some(k) => writer.new_keyed_layer(k, None, &mut produce)?,
        None => writer.new_layer(&mut produce)?,
    };
    if written.diff_id != diff_id {
        return Err(Error::Digest {
            what: format!("{} (diff_id)", layer.label()),
            expected: diff_id.to_string(),
            actual: written.diff_id,
        });
    }
    Ok(written)
}
