//! `docker-archive:PATH[:NAME:TAG|:@INDEX]` — what `docker save` writes.
//!
//! Two layouts: `manifest.json` (Docker ≥ 1.10; Docker 25+ also adds an OCI layout beside it,
//! with layers under `blobs/sha256/`), and the legacy v1 one (`repositories` + `<id>/json` with a
//! `parent` chain + `<id>/layer.tar`).

use super::archive::ArchiveIndex;
use super::{Image, Layer, diff_ids, parse_json, verify_blob};
use crate::error::{Error, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestItem {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The `docker-archive:` transport.
pub struct DockerArchive;

impl crate::transport::Transport for DockerArchive {
    fn name(&self) -> &'static str {
        "docker-archive"
    }

    fn open(&self, spec: &str, shown: &str, opts: &crate::transport::OpenOptions) -> Result<Image> {
        let (path, select) = super::split_path(spec);
        let (path, spool) = super::local(&path)?;
        let archive = ArchiveIndex::open(&path)?;
        let mut img = open_index_verified(archive, select.as_deref(), shown, opts.verify)?;
        img._spool = spool;
        Ok(img)
    }
}

/// Open the docker archive at `path`; `select` (`NAME:TAG` or `@INDEX`) picks an image when
/// it holds several. `reference` is what the image is called in messages.
pub fn open(path: &Path, select: Option<&str>, reference: &str) -> Result<Image> {
    let archive = ArchiveIndex::open(path)?;
    open_index(archive, select, reference)
}

/// The same, from an archive already indexed: by its `manifest.json`, else by the legacy
/// `repositories` file.
pub fn open_index(archive: ArchiveIndex, select: Option<&str>, reference: &str) -> Result<Image> {
    open_index_verified(archive, select, reference, true)
}

/// [`open_index`], with the config's digest (its member name) checked as an error when
/// `verify`, else only warned about (`--no-verify`: trusted input, read as it is).
pub fn open_index_verified(
    archive: ArchiveIndex,
    select: Option<&str>,
    reference: &str,
    verify: bool,
) -> Result<Image> {
    if archive.contains("manifest.json") {
        from_manifest(&archive, select, reference, verify)
    } else if archive.contains("repositories") {
        from_legacy(&archive, select, reference)
    } else {
        Err(Error::Format(format!(
            "{}: not a docker-archive (no manifest.json or repositories)",
            archive.path
        )))
    }
}

fn from_manifest(
    archive: &ArchiveIndex,
    select: Option<&str>,
    reference: &str,
    verify: bool,
) -> Result<Image> {
    let what = format!("{}: manifest.json", archive.path);
    let raw = archive.read("manifest.json")?;
    let items: Vec<ManifestItem> = serde_json::from_slice(&raw)
        .map_err(|e| Error::Format(format!("bad JSON in {what}: {e}")))?;
    let describe = |items: &[ManifestItem]| -> String {
        items
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let tags = m.repo_tags.clone().unwrap_or_default();
                if tags.is_empty() {
                    format!("@{i}")
                } else {
                    format!("@{i} ({})", tags.join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let chosen = match select {
        None if items.len() == 1 => &items[0],
        None if items.is_empty() => {
            return Err(Error::Format(format!("{what}: lists no image")));
        }
        None => {
            return Err(Error::Usage(format!(
                "{} holds {} images; pick one with {reference}:NAME:TAG or {reference}:@INDEX: {}",
                archive.path,
                items.len(),
                describe(&items)
            )));
        }
        Some(sel) => {
            if let Some(i) = sel.strip_prefix('@') {
                let i: usize = i
                    .parse()
                    .map_err(|_| Error::Usage(format!("bad image index {sel:?}")))?;
                items.get(i).ok_or_else(|| {
                    Error::Usage(format!(
                        "{} has no image @{i}; it holds: {}",
                        archive.path,
                        describe(&items)
                    ))
                })?
            } else {
                let want = normalize_tag(sel);
                items
                    .iter()
                    .find(|m| {
                        m.repo_tags
                            .iter()
                            .flatten()
                            .any(|t| normalize_tag(t) == want)
                    })
                    .ok_or_else(|| {
                        Error::Usage(format!(
                            "{} has no image tagged {sel}; it holds: {}",
                            archive.path,
                            describe(&items)
                        ))
                    })?
            }
        }
    };
    let config_raw = archive.read(&chosen.config)?;
    let config_digest = blob_digest(&chosen.config);
    if let Some(d) = &config_digest {
        let checked = verify_blob(
            &config_raw,
            d,
            &format!("{}: config {}", archive.path, chosen.config),
        );
        match checked {
            Err(e) if !verify => tracing::warn!("{e} (read anyway: --no-verify)"),
            r => r?,
        }
    }
    let config = parse_json(
        &config_raw,
        &format!("{}: config {}", archive.path, chosen.config),
    )?;
    let ids = diff_ids(&config);
    if !ids.is_empty() && ids.len() != chosen.layers.len() {
        return Err(Error::Format(format!(
            "{}: config lists {} diff_ids but manifest.json lists {} layers",
            archive.path,
            ids.len(),
            chosen.layers.len()
        )));
    }
    let mut layers = Vec::new();
    for (i, name) in chosen.layers.iter().enumerate() {
        layers.push(Layer {
            index: i,
            location: format!("{}: {name}", archive.path),
            blob: crate::blob::Blob::local(archive.region(name)?),
            media_type: None,
            digest: blob_digest(name),
            diff_id: ids.get(i).cloned(),
            urls: Vec::new(),
        });
    }
    Ok(Image {
        reference: reference.to_string(),
        transport: "docker-archive",
        tags: chosen.repo_tags.clone().unwrap_or_default(),
        config_raw,
        config,
        config_digest,
        manifest_digest: None,
        manifest_raw: None,
        layers,
        _spool: None,
    })
}

/// `blobs/sha256/HEX` (Docker 25+) and `HEX.json` (older) name their own digest.
fn blob_digest(name: &str) -> Option<String> {
    let hex = name
        .strip_prefix("blobs/sha256/")
        .or_else(|| name.strip_suffix(".json"))?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("sha256:{hex}"))
}

/// `busybox` means `busybox:latest`; `docker.io/library/x` means `x`.
fn normalize_tag(t: &str) -> String {
    let t = t
        .strip_prefix("docker.io/library/")
        .or_else(|| t.strip_prefix("docker.io/"))
        .unwrap_or(t);
    let last = t.rsplit('/').next().unwrap_or(t);
    if last.contains(':') || last.contains('@') {
        t.to_string()
    } else {
        format!("{t}:latest")
    }
}

fn from_legacy(archive: &ArchiveIndex, select: Option<&str>, reference: &str) -> Result<Image> {
    let what = format!("{}: repositories", archive.path);
    let repos = parse_json(&archive.read("repositories")?, &what)?;
    let mut all: Vec<(String, String)> = Vec::new();
    if let Some(obj) = repos.as_object() {
        for (repo, tags) in obj {
            for (tag, id) in tags.as_object().into_iter().flatten() {
                if let Some(id) = id.as_str() {
                    all.push((format!("{repo}:{tag}"), id.to_string()));
                }
            }
        }
    }
    all.sort();
    let list = || {
        all.iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (tag, top) = match select {
        None if all.len() == 1 => all[0].clone(),
        None => {
            let mut ids: Vec<&str> = all.iter().map(|(_, id)| id.as_str()).collect();
            ids.dedup();
            if ids.len() == 1 {
                all[0].clone()
            } else {
                return Err(Error::Usage(format!(
                    "{} holds several images; pick one with {reference}:NAME:TAG: {}",
                    archive.path,
                    list()
                )));
            }
        }
        Some(sel) => {
            let want = normalize_tag(sel);
            all.iter()
                .find(|(t, _)| normalize_tag(t) == want)
                .cloned()
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "{} has no image {sel}; it holds: {}",
                        archive.path,
                        list()
                    ))
                })?
        }
    };
    // Walk the parent chain from the top image down.
    let mut chain = Vec::new();
    let mut id = top.clone();
    let mut top_json: Option<Value> = None;
    let mut top_raw = Vec::new();
    loop {
        if chain.len() > 1000 || chain.contains(&id) {
            return Err(Error::Format(format!(
                "{}: parent chain of {top} loops",
                archive.path
            )));
        }
        let raw = archive.read(&format!("{id}/json"))?;
        let json = parse_json(&raw, &format!("{}: {id}/json", archive.path))?;
        let parent = json
            .get("parent")
            .and_then(Value::as_str)
            .map(str::to_string);
        if top_json.is_none() {
            top_json = Some(json);
            top_raw = raw;
        }
        chain.push(id.clone());
        match parent {
            Some(p) if !p.is_empty() => id = p,
            _ => break,
        }
    }
    chain.reverse();
    let mut layers = Vec::new();
    for (i, id) in chain.iter().enumerate() {
        let name = format!("{id}/layer.tar");
        layers.push(Layer {
            index: i,
            location: format!("{}: {name}", archive.path),
            blob: crate::blob::Blob::local(archive.region(&name)?),
            media_type: None,
            digest: None,
            diff_id: None,
            urls: Vec::new(),
        });
    }
    Ok(Image {
        reference: reference.to_string(),
        transport: "docker-archive",
        tags: vec![tag],
        config_raw: top_raw,
        config: top_json.unwrap_or(Value::Null),
        config_digest: None,
        manifest_digest: None,
        manifest_raw: None,
        layers,
        _spool: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_normalize_like_docker() {
        assert_eq!(normalize_tag("busybox"), "busybox:latest");
        assert_eq!(normalize_tag("docker.io/library/busybox:1"), "busybox:1");
        assert_eq!(normalize_tag("localhost:5000/x"), "localhost:5000/x:latest");
    }

    #[test]
    fn blob_names_carry_digests() {
        let hex = "a".repeat(64);
        assert_eq!(
            blob_digest(&format!("blobs/sha256/{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(
            blob_digest(&format!("{hex}.json")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(blob_digest("abc/layer.tar"), None);
    }
}
