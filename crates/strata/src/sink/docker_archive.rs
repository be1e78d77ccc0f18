//! What `docker save` writes: `manifest.json`, the config `<sha256>.json`, one uncompressed
//! `<id>/layer.tar` per layer, plus the legacy `repositories` and `<id>/VERSION` + `<id>/json`,
//! so that old and new engines (and podman) load it.

use super::members::{Digested, Members, Produce};
use super::{ImageWriter, LayerOut};
use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::image::Layer;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufReader, Read};

/// An [`ImageWriter`] of the `docker save` format, into any [`Members`].
pub struct DockerArchive<'a> {
    out: &'a mut dyn Members,
    /// Legacy v1 ids, bottom first: each derived from its parent's and its own diff_id.
    ids: Vec<String>,
}

impl<'a> DockerArchive<'a> {
    /// A writer adding its files to `out`.
    pub fn new(out: &'a mut dyn Members) -> Self {
        DockerArchive {
            out,
            ids: Vec::new(),
        }
    }

    fn next_id(&self, diff_id: &str) -> String {
        let parent = self.ids.last().map(String::as_str).unwrap_or("");
        hex::encode(Sha256::digest(format!("{parent} {diff_id}").as_bytes()))
    }
}

fn layer_out(d: &Digested) -> LayerOut {
    LayerOut {
        diff_id: d.digest(),
        digest: d.digest(),
        size: d.size,
        media_type: "application/vnd.docker.image.rootfs.diff.tar".into(),
        urls: Vec::new(),
    }
}

impl ImageWriter for DockerArchive<'_> {
    fn kept_layer(&mut self, layer: &Layer, diff_id: &str, verified: bool) -> Result<LayerOut> {
        let id = self.next_id(diff_id);
        let name = format!("{id}/layer.tar");
        let region = layer.blob.local_region(verified, &layer.label())?;
        let kind = crate::layer::detect(&region).map_err(|e| Error::io(layer.label(), e))?;
        let d = if kind == Compression::None {
            let known = diff_id
                .strip_prefix("sha256:")
                .filter(|_| verified && layer.diff_id.is_some());
            self.out.add_region(&name, &region, known)?
        } else {
            // docker save layers are uncompressed tars: inflate while copying.
            let label = layer.label();
            self.out.add_produced(&|_| name.clone(), &mut |w| {
                let mut dec = kind
                    .decoder(BufReader::with_capacity(1 << 20, region.reader()))
                    .map_err(|e| Error::io(label.clone(), e))?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = dec
                        .read(&mut buf)
                        .map_err(|e| Error::io(label.clone(), e))?;
                    if n == 0 {
                        return Ok(());
                    }
                    w.write_all(&buf[..n])
                        .map_err(|e| Error::output("writing output", e))?;
                }
            })?
        };
        if d.digest() != diff_id {
            return Err(Error::Digest {
                what: layer.label(),
                expected: diff_id.to_string(),
                actual: d.digest(),
            });
        }
        self.ids.push(id);
        Ok(layer_out(&d))
    }

    fn new_layer(&mut self, produce: &mut Produce<'_>) -> Result<LayerOut> {
        let parent = self.ids.last().cloned().unwrap_or_default();
        let id_of = move |d: &Digested| {
            let name = hex::encode(Sha256::digest(
                format!("{parent} {}", d.digest()).as_bytes(),
            ));
            format!("{name}/layer.tar")
        };
        let d = self.out.add_produced(&id_of, produce)?;
        let id = self.next_id(&d.digest());
        self.ids.push(id);
        Ok(layer_out(&d))
    }

    fn new_keyed_layer(
        &mut self,
        key: &str,
        size: Option<u64>,
        produce: &mut Produce<'_>,
    ) -> Result<LayerOut> {
        // The v1 id (and member name) from the inputs, so the header can precede the bytes.
        let id = self.next_id(key);
        let name = format!("{id}/layer.tar");
        let d = match size {
            Some(size) => self.out.add_sized(&name, size, produce)?,
            None => self.out.add_produced(&|_| name.clone(), produce)?,
        };
        self.ids.push(id);
        Ok(layer_out(&d))
    }

    fn takes_planned_size(&self) -> bool {
        !self.out.produces_once()
    }

    fn finish(&mut self, config: &[u8], _layers: &[LayerOut], tags: &[String]) -> Result<()> {
        let cfg_hex = hex::encode(Sha256::digest(config));
        let cfg: Value =
            serde_json::from_slice(config).map_err(|e| Error::Format(format!("config: {e}")))?;
        for (i, id) in self.ids.iter().enumerate() {
            self.out.add_bytes(&format!("{id}/VERSION"), b"1.0")?;
            let mut v1 = json!({
                "id": id,
                "created": cfg.get("created").cloned().unwrap_or(Value::Null),
                "container_config": {"Cmd": null},
                "os": cfg.get("os").cloned().unwrap_or(json!("linux")),
            });
            if i > 0 {
                v1["parent"] = json!(self.ids[i - 1]);
            }
            if i + 1 == self.ids.len() {
                v1["config"] = cfg.get("config").cloned().unwrap_or(Value::Null);
                v1["architecture"] = cfg.get("architecture").cloned().unwrap_or(Value::Null);
            }
            self.out.add_bytes(
                &format!("{id}/json"),
                &serde_json::to_vec(&v1).unwrap_or_default(),
            )?;
        }
        self.out.add_bytes(&format!("{cfg_hex}.json"), config)?;
        let manifest = json!([{
            "Config": format!("{cfg_hex}.json"),
            "RepoTags": if tags.is_empty() { Value::Null } else { json!(tags) },
            "Layers": self.ids.iter().map(|id| format!("{id}/layer.tar")).collect::<Vec<_>>(),
        }]);
        self.out.add_bytes(
            "manifest.json",
            &serde_json::to_vec(&manifest).unwrap_or_default(),
        )?;
        let mut repos = serde_json::Map::new();
        if let Some(top) = self.ids.last() {
            for t in tags {
                if let Some((name, tag)) = split_tag(t) {
                    let entry = repos.entry(name.to_string()).or_insert_with(|| json!({}));
                    entry[tag] = json!(top);
                }
            }
        }
        self.out.add_bytes(
            "repositories",
            &serde_json::to_vec(&Value::Object(repos)).unwrap_or_default(),
        )?;
        self.out.finish()
    }
}

/// `name:tag` (the tag after the last colon that is not part of a registry port).
pub fn split_tag(t: &str) -> Option<(&str, &str)> {
    let slash = t.rfind('/').map(|i| i + 1).unwrap_or(0);
    let colon = t[slash..].rfind(':')? + slash;
    Some((&t[..colon], &t[colon + 1..]))
}
