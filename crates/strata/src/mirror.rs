//! `copy --all`: the manifest a reference names — an image index (or Docker manifest list)
//! and every manifest under it, attestations too, or a single manifest — copied byte for
//! byte with all their blobs, so that every digest stays. A [`Source`] (a registry, an OCI
//! layout) supplies manifests and blobs by digest; a [`Sink`] (a registry, an OCI layout)
//! takes them: blobs first, then each manifest once everything it names is there, the top
//! one last under the destination's tag.

use crate::error::{Error, Result};
use crate::image::registry::{MANIFEST_MAX, Manifest};
use serde_json::Value;
use std::collections::HashSet;
use std::io::{self, Read};

/// Indexes within indexes, at most.
const DEPTH: usize = 4;

/// Opens a blob's bytes (once per attempt: a retried upload opens it again).
pub type OpenBlob<'a> = dyn Fn() -> io::Result<Box<dyn Read + Send>> + Sync + 'a;

/// Where manifests and blobs come from.
pub trait Source: Sync {
    /// The reference, for messages.
    fn describe(&self) -> String;
    /// The manifest the reference names, as stored.
    fn top(&self) -> Result<Manifest>;
    /// The manifest of `digest`, its bytes checked against it.
    fn manifest(&self, digest: &str) -> Result<Manifest>;
    /// The bytes of blob `digest` of `size` bytes (checked by whoever stores them).
    fn blob(&self, digest: &str, size: u64) -> io::Result<Box<dyn Read + Send>>;
    /// `(registry, repository)` of a registry source: a sink in the same registry mounts.
    fn registry_repo(&self) -> Option<(&str, &str)> {
        None
    }
}

/// Where they go.
pub trait Sink {
    /// Store blob `digest` (`size` bytes) from `open`, unless it is there already; `from`:
    /// the source's registry and repository, to mount it from when in the same registry.
    fn blob(
        &mut self,
        digest: &str,
        size: u64,
        from: Option<(&str, &str)>,
        open: &OpenBlob<'_>,
    ) -> Result<()>;
    /// Store a manifest an index names (under its digest).
    fn child(&mut self, m: &Manifest) -> Result<()>;
    /// Store the top manifest under the destination's name, and say what was written.
    fn top(&mut self, m: &Manifest) -> Result<String>;
}

/// Copy what `src` names, and everything under it, into `dst`; returns what [`Sink::top`]
/// says was written.
pub fn mirror(src: &dyn Source, dst: &mut dyn Sink) -> Result<String> {
    let mut top = src.top()?;
    let kind = kind_of(&top, &src.describe())?;
    typed(&mut top, kind);
    let mut done = HashSet::new();
    everything_under(src, dst, &top, kind, 0, &mut done)?;
    dst.top(&top)
}

/// What a manifest document is, by its shape (its `mediaType` may be absent).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Index,
    Manifest,
}

/// The document's kind; a media type (the registry's `Content-Type`, the descriptor's, the
/// document's own) that says otherwise is refused: copying by it would leave out what the
/// document names.
fn kind_of(m: &Manifest, shown: &str) -> Result<Kind> {
    let kind = match (m.doc.get("manifests"), m.doc.get("config")) {
        (Some(Value::Array(_)), None) => Kind::Index,
        (None, Some(Value::Object(_))) => Kind::Manifest,
        _ => {
            return Err(Error::Format(format!(
                "{shown}: {} is neither an image index nor a manifest",
                m.digest
            )));
        }
    };
    let said = [
        m.media_type.as_str(),
        m.doc.get("mediaType").and_then(Value::as_str).unwrap_or(""),
    ];
    for t in said.into_iter().filter(|t| !t.is_empty()) {
        let says_index = t.contains("image.index") || t.contains("manifest.list");
        if says_index != (kind == Kind::Index) {
            return Err(Error::Format(format!(
                "{shown}: {} is called {t} but is {}",
                m.digest,
                if kind == Kind::Index {
                    "an index"
                } else {
                    "a manifest"
                }
            )));
        }
    }
    Ok(kind)
}

/// Give `m` a media type when neither its source nor the document named one (the sources
/// already fall back to the document's own): OCI's, by its kind — a Docker manifest always
/// names its own.
fn typed(m: &mut Manifest, kind: Kind) {
    if m.media_type.is_empty() {
        m.media_type = match kind {
            Kind::Index => crate::image::registry::OCI_INDEX,
            Kind::Manifest => crate::image::registry::OCI_MANIFEST,
        }
        .to_string();
    }
}

/// `copy --all SRC DST`, `docker://…` or `oci:DIR[:REF]` on either side (or an
/// `oci-archive:PATH[:REF]` source): what it wrote
/// (`docker://HOST/REPO:TAG@DIGEST`, `oci:DIR[:TAG]@DIGEST`). A layout is written beside its
/// place and moved there whole ([`write_dir`](crate::output::write_dir): an existing one
/// only with `force`, never one of `protect`).
pub fn copy_all(
    src: &str,
    src_registry: &crate::registry::Options,
    dst: &str,
    dst_registry: &crate::registry::Options,
    force: bool,
    protect: &[std::path::PathBuf],
) -> Result<String> {
    let only = || {
        Error::Usage(
            "copy --all copies from docker://, oci: or oci-archive: to docker:// or oci:".into(),
        )
    };
    if !["docker:", "oci:"].iter().any(|t| dst.starts_with(t)) {
        return Err(only());
    }
    let source: Box<dyn Source> = if let Some(spec) = src.strip_prefix("docker:") {
        Box::new(crate::image::registry::MirrorSource::open(
            spec,
            src_registry,
        )?)
    } else if let Some(spec) = src.strip_prefix("oci:") {
        let (dir, tag) = crate::image::split_path(spec);
        Box::new(crate::image::oci_layout::MirrorSource::open(
            &dir,
            tag.as_deref(),
            src,
        )?)
    } else if let Some(spec) = src.strip_prefix("oci-archive:") {
        let (path, tag) = crate::image::split_path(spec);
        Box::new(crate::image::oci_layout::MirrorSource::open_archive(
            &path,
            tag.as_deref(),
            src,
        )?)
    } else {
        return Err(only());
    };
    if let Some(spec) = dst.strip_prefix("docker:") {
        let mut sink = crate::sink::registry::mirror_sink(spec, dst_registry)?;
        return mirror(&*source, &mut sink);
    }
    let Some(spec) = dst.strip_prefix("oci:") else {
        return Err(only());
    };
    let (dir, tag) = crate::image::split_path(spec);
    let digest = crate::output::write_dir(&dir, force, protect, |tmp| {
        let mut sink = crate::sink::oci_layout::MirrorLayout::new(tmp, tag.as_deref());
        mirror(&*source, &mut sink)
    })?;
    Ok(format!("{dst}@{digest}"))
}

/// The blobs of a manifest, or the manifests of an index (each stored once what it names is).
/// `done`: the digests already copied (an index may name one manifest, or a blob, many
/// times; each is copied once).
fn everything_under(
    src: &dyn Source,
    dst: &mut dyn Sink,
    m: &Manifest,
    kind: Kind,
    depth: usize,
    done: &mut HashSet<String>,
) -> Result<()> {
    let shown = src.describe();
    if kind == Kind::Manifest {
        let descs = m.doc.get("config").into_iter().chain(
            m.doc
                .get("layers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        );
        for d in descs {
            // A non-distributable layer stays where its `urls` say (as skopeo leaves it).
            let foreign = d
                .get("mediaType")
                .and_then(Value::as_str)
                .is_some_and(|mt| mt.contains("foreign") || mt.contains("nondistributable"));
            if foreign && d.get("urls").is_some() {
                continue;
            }
            let (digest, size) = descriptor(d, &shown)?;
            if !done.insert(digest.clone()) {
                continue;
            }
            let open = || src.blob(&digest, size);
            dst.blob(&digest, size, src.registry_repo(), &open)?;
        }
        return Ok(());
    }
    if depth >= DEPTH {
        return Err(Error::Format(format!("{shown}: indexes nested too deeply")));
    }
    let children = m
        .doc
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for d in &children {
        let (digest, size) = descriptor(d, &shown)?;
        if size > MANIFEST_MAX {
            return Err(Error::Format(format!(
                "{shown}: manifest {digest} of {size} bytes: not a manifest"
            )));
        }
        if !done.insert(digest.clone()) {
            continue;
        }
        let mut child = src.manifest(&digest)?;
        if child.media_type.is_empty() {
            child.media_type = d
                .get("mediaType")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
        }
        let kind = kind_of(&child, &shown)?;
        typed(&mut child, kind);
        everything_under(src, dst, &child, kind, depth + 1, done)?;
        dst.child(&child)?;
    }
    Ok(())
}

/// A descriptor's digest and size, checked.
fn descriptor(d: &Value, shown: &str) -> Result<(String, u64)> {
    let digest = d
        .get("digest")
        .and_then(Value::as_str)
        .filter(|g| crate::digest::parse(g).is_some())
        .ok_or_else(|| Error::Format(format!("{shown}: a descriptor without a valid digest")))?;
    let size = d
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::Format(format!("{shown}: descriptor {digest} without a size")))?;
    Ok((digest.to_string(), size))
}

/// A manifest read from bytes that must have `digest` (a layout's blob, a registry's answer).
pub fn manifest_of(raw: Vec<u8>, digest: &str, media_type: &str, shown: &str) -> Result<Manifest> {
    crate::image::verify_blob(&raw, digest, &format!("{shown}: manifest"))?;
    let doc = crate::image::parse_json(&raw, &format!("{shown}: manifest {digest}"))?;
    let media_type = if media_type.is_empty() {
        doc.get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    } else {
        media_type.to_string()
    };
    Ok(Manifest {
        raw,
        digest: digest.to_string(),
        media_type,
        doc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A source of manifests and blobs in memory.
    struct Mem {
        top: String,
        manifests: BTreeMap<String, Vec<u8>>,
        blobs: BTreeMap<String, Vec<u8>>,
    }

    fn digest(b: &[u8]) -> String {
        format!("sha256:{}", crate::image::sha256_hex(b))
    }

    impl Source for Mem {
        fn describe(&self) -> String {
            "mem".into()
        }
        fn top(&self) -> Result<Manifest> {
            self.manifest(&self.top.clone())
        }
        fn manifest(&self, d: &str) -> Result<Manifest> {
            let raw = self.manifests.get(d).cloned().unwrap_or_default();
            manifest_of(raw, d, "", "mem")
        }
        fn blob(&self, d: &str, _: u64) -> io::Result<Box<dyn Read + Send>> {
            Ok(Box::new(io::Cursor::new(
                self.blobs.get(d).cloned().unwrap_or_default(),
            )))
        }
    }

    /// A sink that records the order things arrive in.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl Sink for Log {
        fn blob(
            &mut self,
            d: &str,
            _: u64,
            _: Option<(&str, &str)>,
            open: &OpenBlob<'_>,
        ) -> Result<()> {
            let mut v = Vec::new();
            open().unwrap().read_to_end(&mut v).unwrap();
            assert_eq!(digest(&v), d);
            self.0.push(format!("blob {d}"));
            Ok(())
        }
        fn child(&mut self, m: &Manifest) -> Result<()> {
            self.0.push(format!("child {}", m.digest));
            Ok(())
        }
        fn top(&mut self, m: &Manifest) -> Result<String> {
            self.0.push(format!("top {}", m.digest));
            Ok(m.digest.clone())
        }
    }

    #[test]
    fn each_manifest_comes_after_what_it_names_and_foreign_layers_stay() {
        let mut blobs = BTreeMap::new();
        let mut manifests = BTreeMap::new();
        let put = |map: &mut BTreeMap<String, Vec<u8>>, b: Vec<u8>| {
            let d = digest(&b);
            map.insert(d.clone(), b);
            d
        };
        let cfg = put(&mut blobs, b"{}".to_vec());
        let layer = put(&mut blobs, b"layer".to_vec());
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"digest": cfg, "size": 2},
            "layers": [
                {"digest": layer, "size": 5},
                {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                 "digest": digest(b"elsewhere"), "size": 9, "urls": ["https://example.com/x"]},
            ],
        }))
        .unwrap();
        let md = put(&mut manifests, m);
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"digest": md, "size": 1}],
        }))
        .unwrap();
        let top = put(&mut manifests, index);
        let src = Mem {
            top: top.clone(),
            manifests,
            blobs,
        };
        let mut log = Log::default();
        assert_eq!(mirror(&src, &mut log).unwrap(), top);
        assert_eq!(
            log.0,
            vec![
                format!("blob {cfg}"),
                format!("blob {layer}"),
                format!("child {md}"),
                format!("top {top}"),
            ]
        );
    }

    fn manifest(doc: serde_json::Value, media_type: &str) -> Manifest {
        let raw = serde_json::to_vec(&doc).unwrap();
        let d = digest(&raw);
        manifest_of(raw, &d, media_type, "mem").unwrap()
    }

    #[test]
    fn a_document_is_what_its_shape_says_and_a_media_type_saying_otherwise_is_refused() {
        let index = serde_json::json!({"schemaVersion": 2, "manifests": []});
        let image = serde_json::json!({"schemaVersion": 2, "config": {}, "layers": []});
        assert!(kind_of(&manifest(index.clone(), ""), "mem").unwrap() == Kind::Index);
        assert!(kind_of(&manifest(image.clone(), ""), "mem").unwrap() == Kind::Manifest);
        let e = kind_of(
            &manifest(index, "application/vnd.oci.image.manifest.v1+json"),
            "mem",
        );
        assert!(e.is_err());
        let lied = serde_json::json!({"mediaType": "application/vnd.docker.distribution.manifest.list.v2+json", "config": {}});
        assert!(kind_of(&manifest(lied, ""), "mem").is_err());
        assert!(kind_of(&manifest(serde_json::json!({"layers": []}), ""), "mem").is_err());
        let mut untyped = manifest(image, "");
        typed(&mut untyped, Kind::Manifest);
        assert_eq!(untyped.media_type, crate::image::registry::OCI_MANIFEST);
    }

    #[test]
    fn what_an_index_names_twice_is_copied_once() {
        let mut blobs = BTreeMap::new();
        let mut manifests = BTreeMap::new();
        let cfg = b"{}".to_vec();
        let cd = digest(&cfg);
        blobs.insert(cd.clone(), cfg);
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "config": {"digest": cd, "size": 2}, "layers": [{"digest": cd, "size": 2}],
        }))
        .unwrap();
        let md = digest(&m);
        manifests.insert(md.clone(), m);
        let inner = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "manifests": [{"digest": md, "size": 1}, {"digest": md, "size": 1}],
        }))
        .unwrap();
        let id = digest(&inner);
        manifests.insert(id.clone(), inner);
        let top = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "manifests": [{"digest": id, "size": 1}, {"digest": id, "size": 1}],
        }))
        .unwrap();
        let td = digest(&top);
        manifests.insert(td.clone(), top);
        let src = Mem {
            top: td.clone(),
            manifests,
            blobs,
        };
        let mut log = Log::default();
        mirror(&src, &mut log).unwrap();
        assert_eq!(
            log.0,
            vec![
                format!("blob {cd}"),
                format!("child {md}"),
                format!("child {id}"),
                format!("top {td}")
            ]
        );
    }

    #[test]
    fn a_manifest_that_is_not_its_digest_is_refused() {
        let d = digest(b"{}");
        let e = manifest_of(b"{ }".to_vec(), &d, "", "mem").err().unwrap();
        assert!(matches!(e, Error::Digest { .. }), "{e}");
        let e = descriptor(&serde_json::json!({"digest": "md5:00", "size": 1}), "mem");
        assert!(e.is_err());
    }
}
