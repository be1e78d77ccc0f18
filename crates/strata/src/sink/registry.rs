//! `-o docker://…`: pushing an image to a registry.
//!
//! Each blob is `HEAD`ed first (a registry that has it is not sent it again); a blob from the
//! same registry is mounted across repositories (`POST …/uploads/?mount=&from=`); a blob of
//! known digest goes up in one `PUT` streamed from where it is; a new layer — its digest
//! unknown until it is produced — goes up in bounded `PATCH` chunks as it is produced (never
//! staged whole in memory or on disk), a chunk resent from the registry's offset when a
//! request fails or a token expires. The manifest goes last, Docker schema 2 or OCI by
//! `--format`, under the reference's tag.

use super::members::{HashWriter, Produce};
use super::{Destination, Format, ImageWriter, LayerOut, Target};
use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::image::Layer;
use crate::image::registry::{DOCKER_MANIFEST, OCI_MANIFEST, parse_spec};
use crate::registry::Direction;
use crate::registry::client::{self, Body, Client, Request, error_text, header};
use crate::registry::name::ImageName;
use serde_json::json;
use std::io::{self, Read, Write};
use std::sync::Arc;

/// Bytes of a new layer sent per `PATCH`: what a failed request costs to resend, and the
/// memory an upload holds.
const UPLOAD_CHUNK: usize = 16 << 20;

/// The `docker://` destination.
pub struct Registry;

impl Destination for Registry {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn format(&self) -> Format {
        Format::DockerArchive
    }

    fn accepts(&self, f: Format) -> bool {
        matches!(f, Format::DockerArchive | Format::Oci)
    }

    fn default_compression(&self, _: Format) -> Compression {
        Compression::Gzip
    }

    fn write(
        &self,
        spec: &str,
        t: &Target<'_>,
        go: &mut dyn FnMut(&mut dyn ImageWriter) -> Result<()>,
    ) -> Result<Option<String>> {
        let name = parse_spec(spec)?;
        t.compression.check_level(t.level).map_err(Error::Usage)?;
        match (t.format, t.compression) {
            (_, Compression::Xz | Compression::Bzip2) => {
                return Err(Error::Usage(format!(
                    "registry layers are uncompressed, gzip or zstd, not {}",
                    t.compression.name()
                )));
            }
            (Format::DockerArchive, Compression::Zstd) => {
                return Err(Error::Usage(
                    "zstd layers need an OCI manifest: add --format oci".into(),
                ));
            }
            _ => {}
        }
        let client = t.registry.client(&name)?;
        let mut push = Push {
            client,
            name: name.clone(),
            format: t.format,
            compression: t.compression,
            level: t.level,
            pushed: None,
        };
        go(&mut push)?;
        push.pushed
            .map(Some)
            .ok_or_else(|| Error::Format("the image writer wrote no manifest".into()))
    }
}

struct Push {
    client: Arc<Client>,
    name: ImageName,
    format: Format,
    compression: Compression,
    level: Option<u32>,
    pushed: Option<String>,
}

impl Push {
    fn repo(&self) -> &str {
        &self.name.repository
    }

    fn scope(&self) -> String {
        client::push(self.repo())
    }

    /// Whether the registry has the blob in this repository.
    fn exists(&self, digest: &str) -> Result<bool> {
        let req = Request::new(
            "HEAD",
            format!("/v2/{}/blobs/{digest}", self.repo()),
            self.scope(),
        );
        let resp = self.client.send(&req)?;
        Ok(resp.status().is_success())
    }

    /// Start an upload (or mount `digest` from `from`): `None` when the mount made it.
    fn start(&self, mount: Option<(&str, &str)>) -> Result<Option<String>> {
        let mut url = format!("/v2/{}/blobs/uploads/", self.repo());
        let mut scope = self.scope();
        if let Some((digest, from)) = mount {
            url.push_str(&format!("?mount={digest}&from={from}"));
            scope = format!("{scope} {}", client::pull(from));
        }
        let resp = self.client.send(&Request::new("POST", url, scope))?;
        match resp.status().as_u16() {
            201 if mount.is_some() => Ok(None),
            202 => Ok(Some(self.location(&resp)?)),
            s => Err(self.refused("starting an upload", s, resp)),
        }
    }

    fn location(&self, resp: &client::Reply) -> Result<String> {
        let loc = header(resp.headers(), "location").ok_or_else(|| {
            Error::Format(format!(
                "{}: an upload answer without a Location",
                self.client.registry
            ))
        })?;
        Ok(self.client.url(loc))
    }

    fn refused(&self, what: &str, status: u16, resp: client::Reply) -> Error {
        Error::Output {
            context: format!("{}/{}: {what}", self.client.registry, self.repo()),
            source: io::Error::other(format!(
                "the registry answered {status}: {}",
                error_text(resp)
            )),
        }
    }

    /// Upload a blob of known digest and size, `open` giving its bytes (once per attempt).
    fn put_known(
        &self,
        digest: &str,
        len: u64,
        from: Option<&str>,
        open: &(dyn Fn() -> io::Result<Box<dyn Read + Send>> + Sync),
    ) -> Result<()> {
        if self.exists(digest)? {
            tracing::info!("{}: has {digest}", self.client.registry);
            return Ok(());
        }
        let mount = from.filter(|f| *f != self.repo()).map(|f| (digest, f));
        let Some(location) = self.start(mount)? else {
            tracing::info!(
                "{}: mounted {digest} from {}",
                self.client.registry,
                from.unwrap_or("")
            );
            return Ok(());
        };
        let what = format!("↑ {}", crate::image::short_digest(digest));
        let counted = || -> io::Result<Box<dyn Read + Send>> {
            let inner = open()?;
            // Each attempt is a transfer of its own: a retry counts what it sends again.
            let p = self
                .client
                .transfer(Direction::Upload, what.clone(), Some(len));
            Ok(Box::new(Counting { inner, progress: p }))
        };
        let req = Request::new("PUT", with_digest(&location, digest), self.scope())
            .header("Content-Type", "application/octet-stream")
            .body(Body::Stream {
                open: &counted,
                len,
            });
        let resp = self.client.send(&req)?;
        match resp.status().as_u16() {
            201 | 204 => Ok(()),
            s => Err(self.refused(&format!("uploading {digest}"), s, resp)),
        }
    }

    /// Upload a blob produced now, its digest known only at its end: chunked, streamed.
    fn put_produced(
        &self,
        produce: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<(String, u64)> {
        let location = self
            .start(None)?
            .ok_or_else(|| Error::Format("the registry mounted a blob not asked for".into()))?;
        let upload = Upload {
            push: self,
            location,
            buf: Vec::with_capacity(UPLOAD_CHUNK),
            sent: 0,
            progress: self
                .client
                .transfer(Direction::Upload, "↑ new layer".into(), None),
        };
        let mut hashed = HashWriter::new(upload);
        produce(&mut hashed)?;
        let (mut upload, d) = hashed.finish()?;
        upload.flush_chunk()?;
        let digest = d.digest();
        let req = Request::new("PUT", with_digest(&upload.location, &digest), self.scope());
        let resp = self.client.send(&req)?;
        match resp.status().as_u16() {
            201 | 204 => Ok((digest, d.size)),
            s => Err(self.refused(&format!("finishing the upload of {digest}"), s, resp)),
        }
    }

    fn media_type(&self, oci: &str) -> Result<String> {
        if self.format != Format::DockerArchive {
            return Ok(oci.to_string());
        }
        Ok(match oci {
            t if t.ends_with("+gzip") => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            t if t.ends_with("+zstd") => {
                return Err(Error::Usage(
                    "a zstd layer needs an OCI manifest: add --format oci".into(),
                ));
            }
            _ => "application/vnd.docker.image.rootfs.diff.tar",
        }
        .to_string())
    }
}

/// The source repository of a layer read from the same registry (for a mount).
fn same_registry_repo<'l>(layer: &'l Layer, registry: &str) -> Option<&'l str> {
    let rest = layer.location.strip_prefix("docker://")?;
    let (reg, path) = rest.split_once('/')?;
    (reg == registry).then(|| path.split('@').next().unwrap_or(path))
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

impl ImageWriter for Push {
    fn kept_layer(&mut self, layer: &Layer, diff_id: &str, _verified: bool) -> Result<LayerOut> {
        // A non-distributable layer stays where its urls say: its descriptor is kept, its
        // blob not uploaded (what Docker and skopeo do).
        if !layer.urls.is_empty()
            && let (Some(digest), Some(size), Some(mt)) =
                (&layer.digest, layer.blob.size(), &layer.media_type)
        {
            return Ok(LayerOut {
                diff_id: diff_id.to_string(),
                digest: digest.clone(),
                size,
                media_type: mt.clone(),
                urls: layer.urls.clone(),
            });
        }
        let kind = crate::layer::stored_compression(layer)?;
        if kind == Compression::None && self.compression != Compression::None {
            // An uncompressed layer (a docker-archive's) goes up compressed, as skopeo does:
            // its diff_id is checked as it is read.
            let want = diff_id.to_string();
            let out = self.new_layer(&mut |w: &mut dyn Write| {
                let mut r = layer
                    .blob
                    .open(true)
                    .map_err(|e| Error::io(layer.label(), e))?;
                let mut tar = HashWriter::new(w);
                io::copy(&mut r, &mut tar).map_err(|e| Error::io(layer.label(), e))?;
                let (_, d) = tar.finish()?;
                if d.digest() != want {
                    return Err(Error::Digest {
                        what: format!("{} (diff_id)", layer.label()),
                        expected: want.clone(),
                        actual: d.digest(),
                    });
                }
                Ok(())
            })?;
            return Ok(out);
        }
        // An uncompressed layer's blob digest is its diff_id.
        let digest = layer
            .digest
            .clone()
            .or_else(|| (kind == Compression::None).then(|| diff_id.to_string()))
            .ok_or_else(|| Error::Format(format!("{}: no digest to push it by", layer.label())))?;
        let len = match layer.blob.size() {
            Some(n) => n,
            None => layer.blob.local_region(true, &layer.label())?.len,
        };
        let from = same_registry_repo(layer, &self.name.registry);
        let blob = layer.blob.clone();
        // The blob reader checks the digest at the end of a stream; the registry checks it
        // again on the PUT.
        let open = move || blob.open(true);
        self.put_known(&digest, len, from, &open)?;
        let oci = super::oci_layer_media_type(kind);
        Ok(LayerOut {
            diff_id: diff_id.to_string(),
            digest,
            size: len,
            media_type: self.media_type(oci)?,
            urls: Vec::new(),
        })
    }

    fn new_layer(&mut self, produce: &mut Produce<'_>) -> Result<LayerOut> {
        let (compression, level) = (self.compression, self.level);
        let mut diff = None;
        let (digest, size) = self.put_produced(&mut |w| {
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
            digest,
            size,
            media_type: self.media_type(super::oci_layer_media_type(compression))?,
            urls: Vec::new(),
        })
    }

    fn finish_as(
        &mut self,
        manifest: &[u8],
        media_type: &str,
        config: &[u8],
        _tags: &[String],
    ) -> Result<bool> {
        if media_type != DOCKER_MANIFEST && media_type != OCI_MANIFEST {
            return Ok(false);
        }
        self.put_config(config)?;
        self.put_manifest(manifest, media_type)?;
        Ok(true)
    }

    fn finish(&mut self, config: &[u8], layers: &[LayerOut], _tags: &[String]) -> Result<()> {
        let cfg_digest = self.put_config(config)?;
        let docker = self.format == Format::DockerArchive;
        let (manifest_type, config_type) = if docker {
            (
                DOCKER_MANIFEST,
                "application/vnd.docker.container.image.v1+json",
            )
        } else {
            (OCI_MANIFEST, "application/vnd.oci.image.config.v1+json")
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": cfg_digest, "size": config.len()},
            "layers": layers.iter().map(|l| {
                let mut d = json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size});
                if !l.urls.is_empty() {
                    d["urls"] = json!(l.urls);
                }
                d
            }).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::Format(format!("encoding the manifest: {e}")))?;
        self.put_manifest(&bytes, manifest_type)
    }
}

impl Push {
    /// The config blob, unless the registry has it; its digest.
    fn put_config(&self, config: &[u8]) -> Result<String> {
        let cfg_digest = format!("sha256:{}", crate::image::sha256_hex(config));
        let cfg = config.to_vec();
        let open = move || -> io::Result<Box<dyn Read + Send>> {
            Ok(Box::new(io::Cursor::new(cfg.clone())))
        };
        self.put_known(&cfg_digest, config.len() as u64, None, &open)?;
        Ok(cfg_digest)
    }

    /// PUT the manifest under the reference's tag (or digest); remember what was pushed.
    fn put_manifest(&mut self, bytes: &[u8], manifest_type: &str) -> Result<()> {
        let digest = format!("sha256:{}", crate::image::sha256_hex(bytes));
        let reference = self
            .name
            .digest
            .clone()
            .unwrap_or_else(|| self.name.tag.clone().unwrap_or_else(|| "latest".into()));
        if self.name.digest.as_deref().is_some_and(|d| d != digest) {
            return Err(Error::Usage(format!(
                "docker://{}: the image written has digest {digest}, not the one in the reference",
                self.name
            )));
        }
        let resp = self.put_manifest_at(bytes, manifest_type, &reference)?;
        if let Some(said) = header(resp.headers(), "docker-content-digest")
            && said != digest
        {
            return Err(Error::Digest {
                what: format!("the manifest pushed to {}", self.name),
                expected: digest,
                actual: said.to_string(),
            });
        }
        let pinned = ImageName {
            tag: self
                .name
                .tag
                .clone()
                .or_else(|| self.name.digest.is_none().then(|| "latest".into())),
            ..self.name.with_digest(&digest)
        };
        self.pushed = Some(format!("docker://{pinned}"));
        Ok(())
    }
}

/// A registry reference (`//HOST/REPO:TAG`) as the destination of `copy --all`.
pub fn mirror_sink(
    spec: &str,
    opts: &crate::registry::Options,
) -> Result<impl crate::mirror::Sink + use<>> {
    let name = parse_spec(spec)?;
    Ok(Push {
        client: opts.client(&name)?,
        name,
        format: Format::Oci,
        compression: Compression::None,
        level: None,
        pushed: None,
    })
}

/// Blobs the registry has are not sent, blobs in another repository of it are mounted, the
/// others stream from the source (the registry checks each digest as it stores it); child
/// manifests go by digest, the top one under the reference's tag.
impl crate::mirror::Sink for Push {
    fn blob(
        &mut self,
        digest: &str,
        size: u64,
        from: Option<(&str, &str)>,
        open: &crate::mirror::OpenBlob<'_>,
    ) -> Result<()> {
        let mount = from
            .filter(|(registry, _)| *registry == self.name.registry)
            .map(|(_, repo)| repo);
        self.put_known(digest, size, mount, open)
    }

    fn child(&mut self, m: &crate::image::registry::Manifest) -> Result<()> {
        self.put_child(&m.raw, &m.media_type, &m.digest)
    }

    fn top(&mut self, m: &crate::image::registry::Manifest) -> Result<String> {
        self.put_manifest(&m.raw, &m.media_type)?;
        self.pushed
            .clone()
            .ok_or_else(|| Error::Format("no manifest was pushed".into()))
    }
}

impl Push {
    /// PUT a manifest an index names, by its digest (`fetch_manifest` checked its bytes).
    fn put_child(&self, bytes: &[u8], media_type: &str, digest: &str) -> Result<()> {
        self.put_manifest_at(bytes, media_type, digest).map(|_| ())
    }

    /// PUT manifest bytes under `reference` (a tag or a digest).
    fn put_manifest_at(
        &self,
        bytes: &[u8],
        media_type: &str,
        reference: &str,
    ) -> Result<client::Reply> {
        let req = Request::new(
            "PUT",
            format!("/v2/{}/manifests/{reference}", self.repo()),
            self.scope(),
        )
        .header("Content-Type", media_type)
        .body(Body::Bytes(bytes));
        let resp = self.client.send(&req)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(self.refused(&format!("putting the manifest {reference}"), status, resp));
        }
        Ok(resp)
    }
}

/// A body reader reporting its bytes to a transfer's progress.
struct Counting {
    inner: Box<dyn Read + Send>,
    progress: Option<Box<dyn crate::registry::Transfer>>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(p) = self.progress.as_mut() {
            p.advance(n as u64);
        }
        Ok(n)
    }
}

/// A blob upload in progress: bytes collect into a chunk, sent with `PATCH` when full.
struct Upload<'p> {
    push: &'p Push,
    /// Where the next request goes (each answer names the next).
    location: String,
    buf: Vec<u8>,
    /// Bytes the registry has.
    sent: u64,
    progress: Option<Box<dyn crate::registry::Transfer>>,
}

impl Upload<'_> {
    /// Send what is collected; after a failure, ask the registry what it has and resend
    /// the rest.
    fn flush_chunk(&mut self) -> Result<()> {
        let mut skip = 0usize;
        let mut tries = 0;
        while skip < self.buf.len() {
            let part = &self.buf[skip..];
            let start = self.sent;
            let end = start + part.len() as u64 - 1;
            let req = Request::new("PATCH", self.location.clone(), self.push.scope())
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", format!("{start}-{end}"))
                .body(Body::Bytes(part));
            let failed = match self.push.client.send(&req) {
                Ok(resp) if resp.status().as_u16() == 202 => {
                    self.location = self.push.location(&resp)?;
                    if let Some(p) = self.progress.as_mut() {
                        p.advance(part.len() as u64);
                    }
                    self.sent = end + 1;
                    skip = self.buf.len();
                    continue;
                }
                Ok(resp) if resp.status().as_u16() == 416 || resp.status().is_server_error() => {
                    format!("answered {}", resp.status().as_u16())
                }
                Ok(resp) => {
                    let s = resp.status().as_u16();
                    return Err(self.push.refused("uploading a chunk", s, resp));
                }
                Err(e @ (Error::Auth(_) | Error::Denied(_))) => return Err(e),
                Err(e) => e.to_string(),
            };
            tries += 1;
            if tries > 3 {
                return Err(Error::Output {
                    context: format!("{}: uploading a chunk", self.push.client.registry),
                    source: io::Error::other(failed),
                });
            }
            // Where is the registry? Its Range says how much it has.
            let had = self.status()?;
            if had < self.sent || had > end + 1 {
                return Err(Error::Output {
                    context: format!("{}: uploading a chunk", self.push.client.registry),
                    source: io::Error::other(format!(
                        "the registry has {had} bytes of the upload, expected {}..={}",
                        self.sent,
                        end + 1
                    )),
                });
            }
            skip += (had - self.sent) as usize;
            self.sent = had;
            tracing::warn!(
                "{}: chunk {failed}; resuming at byte {had}",
                self.push.client.registry
            );
        }
        self.buf.clear();
        Ok(())
    }

    /// Bytes the registry holds of this upload (`GET` of its location: `Range: 0-N`).
    fn status(&mut self) -> Result<u64> {
        let resp = self.push.client.send(&Request::new(
            "GET",
            self.location.clone(),
            self.push.scope(),
        ))?;
        if resp.status().as_u16() != 204 {
            let s = resp.status().as_u16();
            return Err(self.push.refused("asking for the upload's status", s, resp));
        }
        if let Some(l) = header(resp.headers(), "location") {
            self.location = self.push.client.url(l);
        }
        let range = header(resp.headers(), "range").unwrap_or("0-0");
        let end: u64 = range
            .rsplit('-')
            .next()
            .and_then(|e| e.trim().parse().ok())
            .unwrap_or(0);
        // "0-0" is what distribution says for an empty upload, too.
        Ok(if end == 0 && self.sent == 0 {
            0
        } else {
            end + 1
        })
    }
}

impl Write for Upload<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = UPLOAD_CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= UPLOAD_CHUNK {
            self.flush_chunk().map_err(io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
