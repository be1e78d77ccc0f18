//! `oci:DIR[:REF]` and `oci-archive:PATH[:REF]` — the OCI image layout (`oci-layout`,
//! `index.json`, `blobs/<alg>/<hex>`), in a directory or in a tar read in place.
//! Nested indexes are followed; a multi-platform index is resolved with `--platform`.

use super::archive::ArchiveIndex;
use super::{FileRegion, Image, Layer, diff_ids, parse_json, verify_blob};
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Where the layout's files are.
pub trait Store {
    /// The layout's place, for messages (a directory or an archive's path).
    fn describe(&self) -> String;
    /// Where file `name` (relative to the layout's root: `index.json`, `blobs/…`) is.
    fn region(&self, name: &str) -> Result<FileRegion>;
    /// The bytes of file `name`, read into memory (for small ones: indexes, manifests,
    /// configs).
    fn read(&self, name: &str) -> Result<Vec<u8>> {
        self.region(name)?
            .read_all()
            .map_err(|e| Error::io(format!("{}: reading {name}", self.describe()), e))
    }
}

/// A layout in a directory (the path of its root).
pub struct DirStore(pub PathBuf);

impl Store for DirStore {
    fn describe(&self) -> String {
        self.0.display().to_string()
    }
    fn region(&self, name: &str) -> Result<FileRegion> {
        let p = self.0.join(name);
        open_beneath(&self.0, name)
            .and_then(|f| {
                let len = f.metadata()?.len();
                Ok(FileRegion {
                    file: std::sync::Arc::new(f),
                    offset: 0,
                    len,
                })
            })
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Error::Format(format!("{}: missing {name}", self.describe()))
                } else {
                    Error::io(format!("opening {}", p.display()), e)
                }
            })
    }
}

/// Open `name` inside the layout at `root`, by the kernel's rules (`openat2` with
/// `RESOLVE_BENEATH`): no `..`, absolute path or symlink leads out of the layout; and only a
/// regular file (opened non-blocking, so a fifo there cannot hang the reader).
fn open_beneath(root: &Path, name: &str) -> std::io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let fd = rustix::fs::openat2(
        &dir,
        name,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH,
    )
    .map_err(|e| match e {
        rustix::io::Errno::XDEV => std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{name} leads out of the layout"),
        ),
        e => e.into(),
    })?;
    super::regular_only(std::fs::File::from(fd))
}

impl Store for ArchiveIndex {
    fn describe(&self) -> String {
        self.path.clone()
    }
    fn region(&self, name: &str) -> Result<FileRegion> {
        ArchiveIndex::region(self, name)
    }
}

pub use super::platform::Platform;

/// The config media types of container images (OCI's and Docker's).
pub const IMAGE_CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// The `oci:DIR[:REF]` transport.
pub struct OciDir;

impl crate::transport::Transport for OciDir {
    fn name(&self) -> &'static str {
        "oci"
    }

    fn open(&self, spec: &str, shown: &str, opts: &crate::transport::OpenOptions) -> Result<Image> {
        let (dir, tag) = super::split_path(spec);
        open_dir(&dir, tag.as_deref(), &opts.platform, shown)
    }
}

/// The `oci-archive:PATH[:REF]` transport.
pub struct OciArchive;

impl crate::transport::Transport for OciArchive {
    fn name(&self) -> &'static str {
        "oci-archive"
    }

    fn open(&self, spec: &str, shown: &str, opts: &crate::transport::OpenOptions) -> Result<Image> {
        let (path, tag) = super::split_path(spec);
        let (path, spool) = super::local(&path)?;
        let mut img = open_archive(&path, tag.as_deref(), &opts.platform, shown)?;
        img._spool = spool;
        Ok(img)
    }
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const OCI_MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// Open the OCI layout in directory `dir`; `tag` (an `org.opencontainers.image.ref.name`)
/// picks among its images, `platform` within a multi-platform index. `reference` is what the
/// image is called in messages.
pub fn open_dir(
    dir: &Path,
    tag: Option<&str>,
    platform: &Platform,
    reference: &str,
) -> Result<Image> {
    if !dir.join("oci-layout").is_file() && !dir.join("index.json").is_file() {
        return Err(Error::Format(format!(
            "{}: not an OCI image layout (no oci-layout or index.json)",
            dir.display()
        )));
    }
    open_store(
        &DirStore(dir.to_path_buf()),
        tag,
        platform,
        reference,
        "oci",
    )
}

/// An OCI archive already indexed (for callers that hold the archive some other way).
pub fn open_index(
    index: &ArchiveIndex,
    tag: Option<&str>,
    platform: &Platform,
    reference: &str,
) -> Result<Image> {
    open_store(index, tag, platform, reference, "oci-archive")
}

/// The same, for an OCI layout in a tar archive at `path`, read in place.
pub fn open_archive(
    path: &Path,
    tag: Option<&str>,
    platform: &Platform,
    reference: &str,
) -> Result<Image> {
    let index = ArchiveIndex::open(path)?;
    if !index.contains("index.json") {
        return Err(Error::Format(format!(
            "{}: not an OCI archive (no index.json)",
            index.path
        )));
    }
    open_store(&index, tag, platform, reference, "oci-archive")
}

/// `blobs/ALG/HEX` of a digest: only a registered algorithm with its exact hex length, so
/// the name is never a path out of the layout.
pub(crate) fn blob_name(digest: &str) -> Result<String> {
    let (alg, hex) = crate::digest::parse(digest).ok_or_else(|| {
        Error::Format(format!(
            "bad digest {digest:?} (expected sha256: or sha512: and its hex digits)"
        ))
    })?;
    Ok(format!("blobs/{}/{hex}", alg.name()))
}

fn descriptor_digest(desc: &Value, what: &str) -> Result<String> {
    desc.get("digest")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Error::Format(format!("{what}: descriptor without a digest")))
}

fn is_index(media_type: Option<&str>, doc: Option<&Value>) -> bool {
    match media_type {
        Some(m) => m.contains("image.index") || m.contains("manifest.list"),
        None => doc.map(|d| d.get("manifests").is_some()).unwrap_or(false),
    }
}

/// The descriptors of `index.json` that `tag` names (a ref name or a digest; all of them
/// without one), and every ref name there.
fn candidates(store: &dyn Store, tag: Option<&str>) -> Result<(Vec<Value>, Vec<String>)> {
    let where_ = store.describe();
    let index = parse_json(&store.read("index.json")?, &format!("{where_}: index.json"))?;
    let manifests = index
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let refs: Vec<String> = manifests
        .iter()
        .filter_map(|m| m.pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1"))))
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let candidates: Vec<Value> = match tag {
        // A digest names one manifest, named or not (the hint for unnamed ones lists them so).
        Some(t) if crate::digest::parse(t).is_some() => {
            let c: Vec<Value> = manifests
                .iter()
                .filter(|m| m.get("digest").and_then(Value::as_str) == Some(t))
                .cloned()
                .collect();
            if c.is_empty() {
                return Err(Error::Usage(format!(
                    "{where_}: no manifest {t} in index.json"
                )));
            }
            c
        }
        Some(t) => {
            let c: Vec<Value> = manifests
                .iter()
                .filter(|m| {
                    m.get("annotations")
                        .and_then(|a| a.get(REF_NAME))
                        .and_then(Value::as_str)
                        == Some(t)
                })
                .cloned()
                .collect();
            if c.len() > 1 && c.iter().all(|d| Platform::of(d).is_none()) {
                let digests: Vec<&str> = c
                    .iter()
                    .filter_map(|d| d.get("digest").and_then(Value::as_str))
                    .collect();
                return Err(Error::Usage(format!(
                    "{where_}: {} manifests are named {t:?}; choose one by digest (oci:DIR:DIGEST): {}",
                    c.len(),
                    digests.join(", ")
                )));
            }
            if c.is_empty() {
                return Err(Error::Usage(format!(
                    "{where_}: no image named {t:?}; names present: {}",
                    if refs.is_empty() {
                        "(none)".to_string()
                    } else {
                        refs.join(", ")
                    }
                )));
            }
            c
        }
        None => manifests,
    };
    Ok((candidates, refs))
}

fn open_store(
    store: &dyn Store,
    tag: Option<&str>,
    platform: &Platform,
    reference: &str,
    transport: &'static str,
) -> Result<Image> {
    let where_ = store.describe();
    let (candidates, refs) = candidates(store, tag)?;
    let mut tags: Vec<String> = match tag {
        Some(t) => vec![t.to_string()],
        None if candidates.len() == 1 => refs.clone(),
        None => Vec::new(),
    };
    let desc = resolve(store, &candidates, platform, &where_, 0)?;
    let manifest_digest = descriptor_digest(&desc, &where_)?;
    let manifest_raw = store.read(&blob_name(&manifest_digest)?)?;
    verify_blob(
        &manifest_raw,
        &manifest_digest,
        &format!("{where_}: manifest"),
    )?;
    let manifest = parse_json(
        &manifest_raw,
        &format!("{where_}: manifest {manifest_digest}"),
    )?;
    let cfg_desc = manifest.get("config").ok_or_else(|| {
        Error::Format(format!(
            "{where_}: manifest {manifest_digest} has no config"
        ))
    })?;
    // An artifact (a Helm chart, a signature, an SBOM) rides in the same layout: say so,
    // rather than fail on its "layers" as tars or squash a non-image.
    if let Some(mt) = cfg_desc.get("mediaType").and_then(Value::as_str)
        && !IMAGE_CONFIG_TYPES.contains(&mt)
    {
        return Err(Error::Usage(format!(
            "{where_}: not an image: config media type {mt}"
        )));
    }
    let config_digest = descriptor_digest(cfg_desc, &where_)?;
    let config_raw = store.read(&blob_name(&config_digest)?)?;
    verify_blob(&config_raw, &config_digest, &format!("{where_}: config"))?;
    let config = parse_json(&config_raw, &format!("{where_}: config {config_digest}"))?;
    let ids = diff_ids(&config);
    let layer_descs = manifest
        .get("layers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !ids.is_empty() && ids.len() != layer_descs.len() {
        return Err(Error::Format(format!(
            "{where_}: config lists {} diff_ids but the manifest lists {} layers",
            ids.len(),
            layer_descs.len()
        )));
    }
    let mut layers = Vec::new();
    for (i, d) in layer_descs.iter().enumerate() {
        let digest = descriptor_digest(d, &where_)?;
        let name = blob_name(&digest)?;
        let region = store.region(&name).map_err(|e| match e {
            Error::Format(_) => {
                Error::Format(format!("{where_}: layer {i}: missing blob {digest}"))
            }
            other => other,
        })?;
        if let Some(size) = d.get("size").and_then(Value::as_u64)
            && size != region.len
        {
            return Err(Error::Format(format!(
                "{where_}: layer {i}: blob {digest} is {} bytes, the manifest says {size}",
                region.len
            )));
        }
        layers.push(Layer {
            index: i,
            location: format!("{where_}: {name}"),
            blob: super::Blob::local(region),
            media_type: d
                .get("mediaType")
                .and_then(Value::as_str)
                .map(str::to_string),
            digest: Some(digest),
            diff_id: ids.get(i).cloned(),
            urls: Vec::new(),
        });
    }
    tags.dedup();
    Ok(Image {
        reference: reference.to_string(),
        transport,
        tags,
        config_raw,
        config,
        config_digest: Some(config_digest),
        manifest_digest: Some(manifest_digest),
        manifest_raw: Some((
            manifest
                .get("mediaType")
                .and_then(Value::as_str)
                .unwrap_or(OCI_MANIFEST_TYPE)
                .to_string(),
            manifest_raw,
        )),
        layers,
        _spool: None,
    })
}

/// From a list of descriptors, find the one image manifest meant: follow indexes, pick the
/// platform.
fn resolve(
    store: &dyn Store,
    descs: &[Value],
    platform: &Platform,
    where_: &str,
    depth: usize,
) -> Result<Value> {
    if depth > 8 {
        return Err(Error::Format(format!(
            "{where_}: indexes nested too deeply"
        )));
    }
    if descs.is_empty() {
        return Err(Error::Format(format!("{where_}: index lists no manifests")));
    }
    let pick: Value = if descs.len() == 1 {
        descs[0].clone()
    } else {
        let with_platform: Vec<&Value> =
            descs.iter().filter(|d| Platform::of(d).is_some()).collect();
        if with_platform.is_empty() {
            let names: Vec<String> = descs
                .iter()
                .map(|d| {
                    d.get("annotations")
                        .and_then(|a| a.get(REF_NAME))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| {
                            d.get("digest")
                                .and_then(Value::as_str)
                                .unwrap_or("?")
                                .to_string()
                        })
                })
                .collect();
            return Err(Error::Usage(format!(
                "{where_} holds {} images; name one with oci:DIR:REF: {}",
                descs.len(),
                names.join(", ")
            )));
        }
        super::platform::pick(&with_platform, platform, where_)?
    };
    let media = pick.get("mediaType").and_then(Value::as_str);
    if media.is_some() && !is_index(media, None) {
        return Ok(pick);
    }
    // Unknown or index media type: look at the document itself.
    let digest = descriptor_digest(&pick, where_)?;
    let raw = store.read(&blob_name(&digest)?)?;
    verify_blob(&raw, &digest, &format!("{where_}: index {digest}"))?;
    let doc = parse_json(&raw, &format!("{where_}: {digest}"))?;
    if is_index(media, Some(&doc)) {
        let inner = doc
            .get("manifests")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        resolve(store, &inner, platform, where_, depth + 1)
    } else {
        Ok(pick)
    }
}

/// An OCI layout directory as the source of `copy --all`: the one manifest (or index) `tag`
/// names in its `index.json`, and its blobs as files.
pub struct MirrorSource {
    store: Box<dyn Store + Send + Sync>,
    top: Value,
    shown: String,
}

impl MirrorSource {
    /// The layout at `dir`, at `tag` (a ref name or digest; none: its only manifest).
    pub fn open(dir: &Path, tag: Option<&str>, shown: &str) -> Result<MirrorSource> {
        Self::of(Box::new(DirStore(dir.to_path_buf())), tag, shown)
    }

    /// The same for an OCI archive at `path`, read in place.
    pub fn open_archive(path: &Path, tag: Option<&str>, shown: &str) -> Result<MirrorSource> {
        let index = ArchiveIndex::open(path)?;
        if !index.contains("index.json") {
            return Err(Error::Format(format!(
                "{}: not an OCI archive (no index.json)",
                index.path
            )));
        }
        Self::of(Box::new(index), tag, shown)
    }

    fn of(
        store: Box<dyn Store + Send + Sync>,
        tag: Option<&str>,
        shown: &str,
    ) -> Result<MirrorSource> {
        let (mut c, _) = candidates(&*store, tag)?;
        if c.len() != 1 {
            return Err(Error::Usage(format!(
                "{shown}: {} manifests in index.json{}; choose one (oci:DIR:{})",
                c.len(),
                if tag.is_some() { " by that name" } else { "" },
                if tag.is_some() { "DIGEST" } else { "REF" }
            )));
        }
        Ok(MirrorSource {
            store,
            top: c.remove(0),
            shown: shown.to_string(),
        })
    }

    fn read_manifest(&self, digest: &str, media_type: &str) -> Result<super::registry::Manifest> {
        let region = self.store.region(&blob_name(digest)?)?;
        if region.len > super::registry::MANIFEST_MAX {
            return Err(Error::Format(format!(
                "{}: manifest {digest} of {} bytes: not a manifest",
                self.shown, region.len
            )));
        }
        let raw = region
            .read_all()
            .map_err(|e| Error::io(format!("{}: reading {digest}", self.shown), e))?;
        crate::mirror::manifest_of(raw, digest, media_type, &self.shown)
    }
}

impl crate::mirror::Source for MirrorSource {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn top(&self) -> Result<super::registry::Manifest> {
        let digest = descriptor_digest(&self.top, &self.shown)?;
        let media_type = self
            .top
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.read_manifest(&digest, media_type)
    }

    fn manifest(&self, digest: &str) -> Result<super::registry::Manifest> {
        self.read_manifest(digest, "")
    }

    fn blob(&self, digest: &str, _size: u64) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        let name = blob_name(digest).map_err(std::io::Error::other)?;
        let region = self.store.region(&name).map_err(std::io::Error::other)?;
        Ok(Box::new(region.reader()))
    }
}
