//! An OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`), as a directory or as a
//! tar of one. Kept layers are copied blob for blob (same digests); new layers are compressed
//! as asked, their blob digest and diff_id computed in the same pass.

use super::members::{Digested, Members, Produce};
use super::{ImageWriter, LayerOut, oci_layer_media_type};
use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::image::Layer;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// An [`ImageWriter`] of the OCI image layout, into any [`Members`].
pub struct OciLayout<'a> {
    out: &'a mut dyn Members,
    compression: Compression,
    level: Option<u32>,
}

impl<'a> OciLayout<'a> {
    /// A writer adding its files to `out`, new layers compressed with `compression` at
    /// `level`.
    pub fn new(out: &'a mut dyn Members, compression: Compression, level: Option<u32>) -> Self {
        OciLayout {
            out,
            compression,
            level,
        }
    }
}

fn blob_name(d: &Digested) -> String {
    format!("blobs/sha256/{}", d.sha256)
}

impl ImageWriter for OciLayout<'_> {
    fn kept_layer(&mut self, layer: &Layer, diff_id: &str, verified: bool) -> Result<LayerOut> {
        // A streamed blob not read yet, copied once into a directory: straight from its
        // source into the layout, hashed on the way (not into the store and then here).
        if !layer.blob.is_local()
            && self.out.produces_once()
            && let (Some(want), Some(_)) = (&layer.digest, &layer.media_type)
        {
            let kind = crate::layer::stored_compression(layer)?;
            let d = self.out.add_produced(&blob_name, &mut |w| {
                let mut r = layer
                    .blob
                    .open_unkept()
                    .map_err(|e| Error::io(layer.label(), e))?;
                std::io::copy(&mut r, w).map_err(|e| Error::io(layer.label(), e))?;
                Ok(())
            })?;
            if *want != d.digest() {
                return Err(Error::Digest {
                    what: layer.label(),
                    expected: want.clone(),
                    actual: d.digest(),
                });
            }
            return Ok(LayerOut {
                diff_id: diff_id.to_string(),
                digest: d.digest(),
                size: d.size,
                media_type: oci_layer_media_type(kind).to_string(),
                urls: Vec::new(),
            });
        }
        // A streamed blob's digest is checked as it is kept in the store (read verified
        // here): its copy need not be hashed again.
        let streamed = layer.blob.stream_digest().is_some()
            && layer.blob.stream_digest() == layer.digest.as_deref();
        let verified = verified || streamed;
        let region = layer.blob.local_region(verified, &layer.label())?;
        let kind = crate::layer::detect(&region).map_err(|e| Error::io(layer.label(), e))?;
        // The name needs the digest: a verified source already told us, else hash on the way.
        let known = layer
            .digest
            .as_deref()
            .and_then(|d| d.strip_prefix("sha256:"))
            .filter(|_| verified);
        let d = match known {
            Some(hex) => self
                .out
                .add_region(&format!("blobs/sha256/{hex}"), &region, Some(hex))?,
            None => self.out.add_produced(&blob_name, &mut |w| {
                std::io::copy(&mut region.reader(), w).map_err(|e| Error::io(layer.label(), e))?;
                Ok(())
            })?,
        };
        if let Some(want) = &layer.digest
            && *want != d.digest()
        {
            return Err(Error::Digest {
                what: layer.label(),
                expected: want.clone(),
                actual: d.digest(),
            });
        }
        Ok(LayerOut {
            diff_id: diff_id.to_string(),
            digest: d.digest(),
            size: d.size,
            media_type: oci_layer_media_type(kind).to_string(),
            urls: Vec::new(),
        })
    }

    fn new_layer(&mut self, produce: &mut Produce<'_>) -> Result<LayerOut> {
        let (compression, level) = (self.compression, self.level);
        if compression == Compression::None {
            // The blob is the tar: one hash gives both digests.
            let d = self.out.add_produced(&blob_name, produce)?;
            return Ok(LayerOut {
                diff_id: d.digest(),
                digest: d.digest(),
                size: d.size,
                media_type: oci_layer_media_type(compression).to_string(),
                urls: Vec::new(),
            });
        }
        let mut diff: Option<Digested> = None;
        let d = self.out.add_produced(&blob_name, &mut |w| {
            diff = Some(super::members::compressed_tar(
                w,
                compression,
                level,
                produce,
            )?);
            Ok(())
        })?;
        let diff = diff.ok_or_else(|| Error::Format("layer was never produced".into()))?;
        Ok(LayerOut {
            diff_id: diff.digest(),
            digest: d.digest(),
            size: d.size,
            media_type: oci_layer_media_type(compression).to_string(),
            urls: Vec::new(),
        })
    }

    fn finish(&mut self, config: &[u8], layers: &[LayerOut], tags: &[String]) -> Result<()> {
        let cfg_hex = hex::encode(Sha256::digest(config));
        self.out
            .add_bytes(&format!("blobs/sha256/{cfg_hex}"), config)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{cfg_hex}"),
                "size": config.len(),
            },
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.media_type, "digest": l.digest, "size": l.size,
            })).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec(&manifest).map_err(|e| Error::Format(e.to_string()))?;
        self.index(&manifest, config, tags)
    }

    fn finish_as(
        &mut self,
        manifest: &[u8],
        media_type: &str,
        config: &[u8],
        tags: &[String],
    ) -> Result<bool> {
        if media_type != "application/vnd.oci.image.manifest.v1+json" {
            return Ok(false);
        }
        let cfg_hex = hex::encode(Sha256::digest(config));
        self.out
            .add_bytes(&format!("blobs/sha256/{cfg_hex}"), config)?;
        self.index(manifest, config, tags)?;
        Ok(true)
    }
}

impl OciLayout<'_> {
    /// The manifest blob, `oci-layout` and `index.json` naming `tags`; then close.
    fn index(&mut self, manifest: &[u8], config: &[u8], tags: &[String]) -> Result<()> {
        let m_hex = hex::encode(Sha256::digest(manifest));
        self.out
            .add_bytes(&format!("blobs/sha256/{m_hex}"), manifest)?;
        let cfg: Value =
            serde_json::from_slice(config).map_err(|e| Error::Format(format!("config: {e}")))?;
        let platform = platform_of(&cfg);
        let descriptor = |tag: Option<&str>| {
            let mut d = json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{m_hex}"),
                "size": manifest.len(),
            });
            if let Some(p) = &platform {
                d["platform"] = p.clone();
            }
            if let Some(t) = tag {
                d["annotations"] = json!({"org.opencontainers.image.ref.name": t});
            }
            d
        };
        let manifests: Vec<Value> = if tags.is_empty() {
            vec![descriptor(None)]
        } else {
            tags.iter().map(|t| descriptor(Some(t))).collect()
        };
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
        self.out
            .add_bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        self.out.add_bytes(
            "index.json",
            &serde_json::to_vec(&index).map_err(|e| Error::Format(e.to_string()))?,
        )?;
        self.out.finish()
    }
}

/// The index descriptor's platform, from the config as it is (image-spec `image-index.md`):
/// `os` and `architecture`, and `variant`, `os.version`, `os.features` when the config has
/// them. Nothing is defaulted: a config that names no platform gives a descriptor without one.
fn platform_of(cfg: &Value) -> Option<Value> {
    let os = cfg.get("os").filter(|v| v.is_string())?;
    let arch = cfg.get("architecture").filter(|v| v.is_string())?;
    let mut p = json!({"os": os, "architecture": arch});
    for (from, to) in [
        ("variant", "variant"),
        ("os.version", "os.version"),
        ("os.features", "os.features"),
    ] {
        if let Some(v) = cfg.get(from).filter(|v| !v.is_null()) {
            p[to] = v.clone();
        }
    }
    Some(p)
}

/// The OCI layout `copy --all` writes into `root` (the temp directory
/// [`write_dir`](crate::output::write_dir) moves into place): each blob and manifest a file
/// under `blobs/`, its size and digest checked as it is written; `index.json` names the top
/// manifest, with `tag` as its ref name.
pub struct MirrorLayout {
    root: std::path::PathBuf,
    tag: Option<String>,
}

impl MirrorLayout {
    /// A layout being written at `root`, its top manifest named `tag`.
    pub fn new(root: &std::path::Path, tag: Option<&str>) -> MirrorLayout {
        MirrorLayout {
            root: root.to_path_buf(),
            tag: tag.map(str::to_string),
        }
    }

    /// Write blob `digest` from `r`: exactly `size` bytes that hash to it, else nothing.
    fn store(&self, digest: &str, size: u64, r: &mut dyn std::io::Read) -> Result<()> {
        use std::io::{Read, Write};
        let path = self.root.join(crate::image::oci_layout::blob_name(digest)?);
        if path.is_file() {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(&self.root);
        let shown = path.display().to_string();
        std::fs::create_dir_all(dir).map_err(|e| Error::output(format!("creating {shown}"), e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| Error::output(format!("creating a temp file beside {shown}"), e))?;
        let mut hasher = crate::digest::Hasher::for_digest(digest)
            .ok_or_else(|| Error::Format(format!("bad digest {digest:?}")))?;
        // One byte past the size says the source sent too much.
        let mut limited = r.take(size.saturating_add(1));
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let n = limited
                .read(&mut buf)
                .map_err(|e| Error::io(format!("reading blob {digest}"), e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            got += n as u64;
            tmp.write_all(&buf[..n])
                .map_err(|e| Error::output(format!("writing {shown}"), e))?;
        }
        if got != size {
            return Err(Error::Format(format!(
                "blob {digest}: {got}{} bytes where its descriptor says {size}",
                if got > size { "+" } else { "" }
            )));
        }
        let actual = hasher.finish();
        if actual != digest {
            return Err(Error::Digest {
                what: format!("blob {digest}"),
                expected: digest.to_string(),
                actual,
            });
        }
        tmp.persist(&path)
            .map_err(|e| Error::output(format!("moving {shown} into place"), e.error))?;
        Ok(())
    }
}

impl crate::mirror::Sink for MirrorLayout {
    fn blob(
        &mut self,
        digest: &str,
        size: u64,
        _from: Option<(&str, &str)>,
        open: &crate::mirror::OpenBlob<'_>,
    ) -> Result<()> {
        let mut r = open().map_err(|e| Error::io(format!("reading blob {digest}"), e))?;
        self.store(digest, size, &mut r)
    }

    fn child(&mut self, m: &crate::image::registry::Manifest) -> Result<()> {
        self.store(&m.digest, m.raw.len() as u64, &mut &m.raw[..])
    }

    fn top(&mut self, m: &crate::image::registry::Manifest) -> Result<String> {
        self.child(m)?;
        let mut desc = json!({
            "mediaType": m.media_type,
            "digest": m.digest,
            "size": m.raw.len(),
        });
        if let Some(t) = &self.tag {
            desc["annotations"] = json!({ "org.opencontainers.image.ref.name": t });
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [desc],
        });
        let write = |name: &str, bytes: &[u8]| {
            std::fs::write(self.root.join(name), bytes)
                .map_err(|e| Error::output(format!("writing {name}"), e))
        };
        write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        write(
            "index.json",
            &serde_json::to_vec(&index).map_err(|e| Error::Format(e.to_string()))?,
        )?;
        Ok(m.digest.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_comes_from_the_config_and_is_not_invented() {
        let arm =
            json!({"os": "linux", "architecture": "arm", "variant": "v7", "os.features": ["x"]});
        assert_eq!(
            platform_of(&arm).unwrap(),
            json!({"os": "linux", "architecture": "arm", "variant": "v7", "os.features": ["x"]})
        );
        let win = json!({"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.1"});
        assert_eq!(platform_of(&win).unwrap()["os.version"], "10.0.17763.1");
        assert!(platform_of(&json!({"architecture": "amd64"})).is_none());
    }
}
