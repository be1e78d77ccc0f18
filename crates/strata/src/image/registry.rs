//! The `docker://` transport: an image in a registry (Docker Registry HTTP API v2, the OCI
//! distribution spec).
//!
//! The manifest is fetched (a tag resolved, a digest verified), an index or manifest list is
//! narrowed to `--platform`, the config is fetched and verified, and every layer becomes a
//! streamed [`Blob`]: fetched on its first read — resumed by `Range` if cut — teed into the
//! blob store and verified to its end; never fetched twice in one command.

use super::platform::{self, Platform};
use super::{Image, Layer, parse_json, verify_blob};
use crate::blob::{Blob, Fetch};
use crate::error::{Error, Result};
use crate::registry::client::{self, Client, Request, error_text, header};
use crate::registry::name::ImageName;
use crate::transport::{OpenOptions, Transport};
use serde_json::Value;
use std::io::{self, Read};
use std::sync::Arc;

/// Manifest media types strata reads, sent as `Accept` (schema 1 is asked for only so that
/// a registry holding one says so, rather than 404).
pub const MANIFEST_TYPES: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_LIST,
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// An OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// A Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// A Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Manifests are small; distribution itself refuses ones over 4 MiB.
pub const MANIFEST_MAX: u64 = 4 << 20;
/// Configs larger than this are not image configs.
const CONFIG_MAX: u64 = 32 << 20;

/// The `docker://` transport.
pub struct Registry;

impl Transport for Registry {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn open(&self, spec: &str, shown: &str, opts: &OpenOptions) -> Result<Image> {
        let name = parse_spec(spec)?;
        let client = opts.registry.client(&name)?;
        open_image(&client, &name, shown, opts)
    }
}

/// `//NAME` of `docker://NAME`, parsed.
pub fn parse_spec(spec: &str) -> Result<ImageName> {
    let rest = spec.strip_prefix("//").ok_or_else(|| {
        Error::Usage(format!(
            "docker:{spec}: a registry image is docker://[HOST[:PORT]/]REPO[:TAG][@DIGEST]"
        ))
    })?;
    ImageName::parse(rest)
}

/// A manifest as fetched: its bytes, digest and media type.
pub struct Manifest {
    /// The bytes, as the registry stores them (what the digest covers).
    pub raw: Vec<u8>,
    /// Its digest.
    pub digest: String,
    /// Its media type (`Content-Type`, else its `mediaType` field).
    pub media_type: String,
    /// Parsed.
    pub doc: Value,
}

/// Fetch the manifest `reference` (a tag or a digest) of `repo`; a digest is verified, a
/// tag's digest is that of the bytes (and must agree with `Docker-Content-Digest`).
pub fn fetch_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
    shown: &str,
) -> Result<Manifest> {
    let req = Request::new(
        "GET",
        format!("/v2/{repo}/manifests/{reference}"),
        client::pull(repo),
    )
    .header("Accept", MANIFEST_TYPES.join(", "));
    let resp = client.send(&req)?;
    let status = resp.status().as_u16();
    if status == 404 {
        return Err(Error::NotFound(format!(
            "{shown}: no such image in {} ({})",
            client.registry,
            error_text(resp)
        )));
    }
    if status != 200 {
        return Err(Error::Format(format!(
            "{shown}: GET manifest answered {status}: {}",
            error_text(resp)
        )));
    }
    let content_type = header(resp.headers(), "content-type")
        .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
    let said_digest = header(resp.headers(), "docker-content-digest").map(str::to_string);
    let mut raw = Vec::new();
    resp.into_body()
        .into_reader()
        .take(MANIFEST_MAX + 1)
        .read_to_end(&mut raw)
        .map_err(|e| Error::io(format!("{shown}: reading the manifest"), e))?;
    if raw.len() as u64 > MANIFEST_MAX {
        return Err(Error::Format(format!(
            "{shown}: the manifest is over {} MiB: not a manifest",
            MANIFEST_MAX >> 20
        )));
    }
    let digest = if crate::digest::parse(reference).is_some() {
        verify_blob(&raw, reference, &format!("{shown}: manifest"))?;
        reference.to_string()
    } else {
        let d = format!("sha256:{}", super::sha256_hex(&raw));
        if let Some(said) = said_digest.filter(|s| s.starts_with("sha256:"))
            && said != d
        {
            return Err(Error::Digest {
                what: format!("{shown}: manifest (Docker-Content-Digest)"),
                expected: said,
                actual: d,
            });
        }
        d
    };
    let doc = parse_json(&raw, &format!("{shown}: manifest"))?;
    let media_type = content_type
        .filter(|c| MANIFEST_TYPES.contains(&c.as_str()))
        .or_else(|| {
            doc.get("mediaType")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    if doc.get("schemaVersion").and_then(Value::as_u64) == Some(1)
        || media_type.starts_with("application/vnd.docker.distribution.manifest.v1")
    {
        return Err(Error::Usage(format!(
            "{shown}: a Docker schema 1 manifest (deprecated since 2017): strata reads schema 2 and OCI images; push it again with a current docker or skopeo"
        )));
    }
    Ok(Manifest {
        raw,
        digest,
        media_type,
        doc,
    })
}

fn is_index(m: &Manifest) -> bool {
    m.media_type == OCI_INDEX
        || m.media_type == DOCKER_LIST
        || (m.media_type.is_empty() && m.doc.get("manifests").is_some())
}

/// The image's manifest: an index is narrowed to the platform (attestations, `unknown/unknown`,
/// are never images).
pub fn resolve_manifest(
    client: &Client,
    name: &ImageName,
    platform: &Platform,
    shown: &str,
) -> Result<Manifest> {
    let mut m = fetch_manifest(client, &name.repository, name.manifest_reference(), shown)?;
    for _ in 0..4 {
        if !is_index(&m) {
            return Ok(m);
        }
        let descs: Vec<&Value> = m
            .doc
            .get("manifests")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let images: Vec<&Value> = descs
            .into_iter()
            .filter(|d| Platform::of(d).is_some_and(|p| p.os != "unknown" && p.arch != "unknown"))
            .collect();
        let pick = platform::pick(&images, platform, shown)?;
        let digest = pick
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Format(format!("{shown}: index entry without a digest")))?;
        if crate::digest::parse(digest).is_none() {
            return Err(Error::Format(format!(
                "{shown}: index entry with a bad digest {digest:?}"
            )));
        }
        m = fetch_manifest(client, &name.repository, digest, shown)?;
    }
    Err(Error::Format(format!("{shown}: indexes nested too deeply")))
}

/// Open the image `name` through `client`.
pub fn open_image(
    client: &Arc<Client>,
    name: &ImageName,
    shown: &str,
    opts: &OpenOptions,
) -> Result<Image> {
    let repo = &name.repository;
    let m = resolve_manifest(client, name, &opts.platform, shown)?;
    let where_ = format!("{shown}@{}", super::short_digest(&m.digest));
    let cfg = m
        .doc
        .get("config")
        .ok_or_else(|| Error::Format(format!("{where_}: manifest without a config")))?;
    if let Some(mt) = cfg.get("mediaType").and_then(Value::as_str)
        && !super::oci_layout::IMAGE_CONFIG_TYPES.contains(&mt)
    {
        return Err(Error::Usage(format!(
            "{where_}: not a container image but an artifact (config media type {mt})"
        )));
    }
    let (cfg_digest, cfg_size) = descriptor(cfg, &where_, "config")?;
    if cfg_size.is_some_and(|s| s > CONFIG_MAX) {
        return Err(Error::Format(format!(
            "{where_}: config of {} bytes: not an image config",
            cfg_size.unwrap_or(0)
        )));
    }
    let mut config_raw = Vec::new();
    client
        .blob_reader(repo, &cfg_digest, cfg_size)
        .take(CONFIG_MAX + 1)
        .read_to_end(&mut config_raw)
        .map_err(|e| Error::io(format!("{where_}: config {cfg_digest}"), e))?;
    if opts.verify {
        verify_blob(&config_raw, &cfg_digest, &format!("{where_}: config"))?;
    }
    let config = parse_json(&config_raw, &format!("{where_}: config"))?;
    let ids = super::diff_ids(&config);
    let descs = m
        .doc
        .get("layers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !ids.is_empty() && ids.len() != descs.len() {
        return Err(Error::Format(format!(
            "{where_}: config lists {} diff_ids but the manifest {} layers",
            ids.len(),
            descs.len()
        )));
    }
    let mut layers = Vec::with_capacity(descs.len());
    for (i, d) in descs.iter().enumerate() {
        let what = format!("layer {i}");
        let (digest, size) = descriptor(d, &where_, &what)?;
        let media_type = d
            .get("mediaType")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mt = media_type.as_deref().unwrap_or("");
        if mt.contains("+encrypted") {
            return Err(Error::Usage(format!(
                "{where_}: {what} is encrypted ({mt}): strata does not decrypt layers"
            )));
        }
        let urls: Vec<String> = super::strings(d.get("urls"))
            .into_iter()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .collect();
        let foreign = mt.contains("foreign") || mt.contains("nondistributable");
        if foreign && urls.is_empty() {
            return Err(Error::Usage(format!(
                "{where_}: {what} is non-distributable ({mt}) and names no urls to fetch it from"
            )));
        }
        let urls = if foreign { urls } else { Vec::new() };
        let fetch = RegistryBlob {
            client: client.clone(),
            jobs: opts.registry.jobs,
            repo: repo.clone(),
            digest: digest.clone(),
            size,
            urls: urls.clone(),
        };
        layers.push(Layer {
            index: i,
            location: format!("docker://{}/{repo}@{digest}", name.registry),
            blob: Blob::streamed(
                Box::new(fetch),
                Some(digest.clone()),
                size,
                opts.store.clone(),
            ),
            media_type,
            digest: Some(digest),
            diff_id: ids.get(i).cloned(),
            urls,
        });
    }
    Ok(Image {
        reference: shown.to_string(),
        transport: "docker",
        tags: vec![familiar(name)],
        config_raw,
        config,
        config_digest: Some(cfg_digest),
        manifest_digest: Some(m.digest),
        manifest_raw: Some((m.media_type, m.raw)),
        layers,
        _spool: None,
    })
}

/// The name as Docker shows it: Docker Hub's without `docker.io/` and `library/`.
pub fn familiar(name: &ImageName) -> String {
    let tag = name.tag.as_deref().unwrap_or("latest");
    if name.registry == crate::registry::name::DOCKER_HUB {
        let repo = name
            .repository
            .strip_prefix("library/")
            .unwrap_or(&name.repository);
        format!("{repo}:{tag}")
    } else {
        format!("{}/{}:{tag}", name.registry, name.repository)
    }
}

fn descriptor(d: &Value, where_: &str, what: &str) -> Result<(String, Option<u64>)> {
    let digest = d
        .get("digest")
        .and_then(Value::as_str)
        .filter(|s| crate::digest::parse(s).is_some())
        .ok_or_else(|| {
            Error::Format(format!(
                "{where_}: {what}: descriptor without a valid digest"
            ))
        })?;
    Ok((digest.to_string(), d.get("size").and_then(Value::as_u64)))
}

/// A layer blob in a registry (or at a non-distributable layer's URL).
struct RegistryBlob {
    client: Arc<Client>,
    jobs: usize,
    repo: String,
    digest: String,
    size: Option<u64>,
    urls: Vec<String>,
}

impl Fetch for RegistryBlob {
    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(match self.urls.first() {
            Some(u) => Box::new(self.client.foreign_reader(u, &self.digest, self.size)),
            None => Box::new(self.client.blob_reader(&self.repo, &self.digest, self.size)),
        })
    }

    fn prefetch_jobs(&self) -> usize {
        self.jobs
    }
}

/// A registry reference as the source of `copy --all`: the manifest it names, as stored (an
/// index is not narrowed), and its blobs.
pub struct MirrorSource {
    client: Arc<Client>,
    name: ImageName,
    shown: String,
}

impl MirrorSource {
    /// `spec` (`//HOST/REPO:TAG`), reached with `opts`.
    pub fn open(spec: &str, opts: &crate::registry::Options) -> Result<MirrorSource> {
        let name = parse_spec(spec)?;
        Ok(MirrorSource {
            client: opts.client(&name)?,
            name,
            shown: format!("docker:{spec}"),
        })
    }
}

impl crate::mirror::Source for MirrorSource {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn top(&self) -> Result<Manifest> {
        let reference = self.name.manifest_reference();
        fetch_manifest(&self.client, &self.name.repository, reference, &self.shown)
    }

    fn manifest(&self, digest: &str) -> Result<Manifest> {
        fetch_manifest(&self.client, &self.name.repository, digest, &self.shown)
    }

    fn blob(&self, digest: &str, size: u64) -> io::Result<Box<dyn Read + Send>> {
        let r = self
            .client
            .blob_reader(&self.name.repository, digest, Some(size));
        Ok(Box::new(r))
    }

    fn registry_repo(&self) -> Option<(&str, &str)> {
        Some((&self.name.registry, &self.name.repository))
    }
}
