//! Sinks: writing a whole image (layers, config, manifest) in one of the on-disk formats.
//! One file per format, sharing `members` (exact-size tar members or files in a directory).

pub mod docker_archive;
pub mod members;
pub mod oci_layout;
pub mod registry;

use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::image::Layer;
use crate::output::{Sink, write_dir};
use members::{DirMembers, Measure, Members, Produce, TarMembers};
use std::io::BufWriter;
use std::path::Path;

/// One layer as written.
#[derive(Clone, Debug)]
pub struct LayerOut {
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// Digest of the blob as stored (equal to the above when uncompressed).
    pub digest: String,
    /// Size of the blob as stored, in bytes.
    pub size: u64,
    /// The blob's media type in the manifest.
    pub media_type: String,
    /// A non-distributable layer's `urls`, kept in the descriptor (its blob is not pushed).
    pub urls: Vec<String>,
}

/// An image being written, layer by layer, bottom first.
pub trait ImageWriter {
    /// A layer copied through from the source image (same diff_id; for OCI, the same blob).
    /// `verified`: its digests were checked while reading, so they need not be recomputed.
    fn kept_layer(&mut self, layer: &Layer, diff_id: &str, verified: bool) -> Result<LayerOut>;
    /// A new layer: `produce` writes its uncompressed tar (maybe twice, identically).
    fn new_layer(&mut self, produce: &mut Produce<'_>) -> Result<LayerOut>;
    /// A new layer whose tar is made from inputs `key` stands for (a digest of them): a format
    /// that names a member before its bytes (docker-archive) names it from `key`, not from
    /// its digest. With `size` — the tar's exact length, planned ahead — it is produced once
    /// even to a stream. Other formats ignore both.
    fn new_keyed_layer(
        &mut self,
        _key: &str,
        _size: Option<u64>,
        produce: &mut Produce<'_>,
    ) -> Result<LayerOut> {
        self.new_layer(produce)
    }
    /// Whether a size planned ahead saves [`new_keyed_layer`](ImageWriter::new_keyed_layer)
    /// a pass (a docker-archive to a stream; a file or directory needs none).
    fn takes_planned_size(&self) -> bool {
        false
    }
    /// Write the config and manifest(s) naming `tags`, and close.
    fn finish(&mut self, config: &[u8], layers: &[LayerOut], tags: &[String]) -> Result<()>;
    /// Like [`finish`](ImageWriter::finish), but with the source's own manifest bytes (of
    /// `media_type`, describing exactly `layers` and `config`), so that a copy keeps the
    /// manifest digest. `false`: this writer cannot keep it (another format), nothing written.
    fn finish_as(
        &mut self,
        _manifest: &[u8],
        _media_type: &str,
        _config: &[u8],
        _tags: &[String],
    ) -> Result<bool> {
        Ok(false)
    }
}

/// OCI media type of a layer blob by its compression.
pub fn oci_layer_media_type(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => "application/vnd.oci.image.layer.v1.tar",
    }
}

/// The on-disk formats an image can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// What `docker save` writes and `docker load` reads (a tar).
    DockerArchive,
    /// An OCI image layout directory.
    Oci,
    /// An OCI image layout in a tar.
    OciArchive,
}

impl Format {
    /// New layers' compression when none is asked for: what `docker save` writes (none) for a
    /// docker-archive, gzip (what every registry and runtime reads) for OCI.
    pub fn default_compression(self) -> Compression {
        match self {
            Format::DockerArchive => Compression::None,
            Format::Oci | Format::OciArchive => Compression::Gzip,
        }
    }
}

/// Where and how to write an image.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// The format to write.
    pub format: Format,
    /// A file, a directory (oci), or `-`/`None` for stdout.
    pub path: Option<&'a Path>,
    /// Replace an existing file or directory at `path`.
    pub force: bool,
    /// Compression of new layers (oci, oci-archive).
    pub compression: Compression,
    /// The compression level (the format's default when `None`).
    pub level: Option<u32>,
    /// To a pipe: run the whole image once through [`Measure`] first, so every member's
    /// first pass (and every error) comes before the first byte written. Without it each
    /// member is produced twice in a row as it comes.
    pub measure_first: bool,
    /// Paths `--force` must never replace, nor a directory holding them: the inputs.
    pub protect: &'a [std::path::PathBuf],
    /// How registries are reached (`-o docker://…`).
    pub registry: &'a crate::registry::Options,
}

impl<'a> Target<'a> {
    /// A push to a registry (`docker://`) with `format`'s manifest, new layers gzip'd.
    pub fn push(format: Format, registry: &'a crate::registry::Options) -> Target<'a> {
        Target {
            format,
            path: None,
            force: false,
            compression: Compression::Gzip,
            level: None,
            measure_first: false,
            protect: &[],
            registry,
        }
    }
}

fn writer_for<'m>(t: &Target<'_>, members: &'m mut dyn Members) -> Box<dyn ImageWriter + 'm> {
    match t.format {
        Format::DockerArchive => Box::new(docker_archive::DockerArchive::new(members)),
        Format::Oci | Format::OciArchive => {
            Box::new(oci_layout::OciLayout::new(members, t.compression, t.level))
        }
    }
}

/// What no format can write.
fn check(t: &Target<'_>) -> Result<()> {
    t.compression.check_level(t.level).map_err(Error::Usage)?;
    if matches!(t.compression, Compression::Xz | Compression::Bzip2) {
        return Err(Error::Usage(format!(
            "image layers are written uncompressed, gzip or zstd (OCI has no media type for {})",
            t.compression.name()
        )));
    }
    if t.format == Format::DockerArchive && t.compression != Compression::None {
        return Err(Error::Usage(
            "docker-archive layers are uncompressed tars; --compress applies to oci and oci-archive"
                .into(),
        ));
    }
    Ok(())
}

/// Write an image as one tar (docker-archive or oci-archive; `t.path` is not used) to a
/// writer that cannot seek — a pipe, a socket, an HTTP body. Each new layer is produced twice
/// (its size and digest come before its bytes); with `t.measure_first` the whole image runs
/// through a dry pass first, so every error comes before the first byte.
pub fn write_image_to<R>(
    t: &Target<'_>,
    w: &mut dyn std::io::Write,
    go: impl FnMut(&mut dyn ImageWriter) -> Result<R>,
) -> Result<R> {
    write_image_into(t, w, None, go)
}

/// [`write_image_to`], with `pipe` the file `w` writes to when it may be a pipe (a duplicate
/// descriptor): verified regions are then sent into it by the kernel.
fn write_image_into<R>(
    t: &Target<'_>,
    w: &mut dyn std::io::Write,
    pipe: Option<std::fs::File>,
    mut go: impl FnMut(&mut dyn ImageWriter) -> Result<R>,
) -> Result<R> {
    check(t)?;
    if t.format == Format::Oci {
        return Err(Error::Usage(
            "--format oci writes a directory: give it with -o DIR".into(),
        ));
    }
    if t.measure_first {
        let mut m = Measure::default();
        go(writer_for(t, &mut m).as_mut())?;
        go(writer_for(t, &mut TarMembers::replay(w, m).with_pipe(pipe)).as_mut())
    } else {
        go(writer_for(t, &mut TarMembers::stream(w).with_pipe(pipe)).as_mut())
    }
}

/// Write an image: `go` writes it through the writer it is given (and may be called twice,
/// for a measured stream). Files and directories appear only when complete.
pub fn write_image<R>(
    t: &Target<'_>,
    mut go: impl FnMut(&mut dyn ImageWriter) -> Result<R>,
) -> Result<R> {
    check(t)?;
    if t.format == Format::Oci {
        let dir = t.path.filter(|p| *p != Path::new("-")).ok_or_else(|| {
            Error::Usage("--format oci writes a directory: give it with -o DIR".into())
        })?;
        return write_dir(dir, t.force, t.protect, |root| {
            let mut members = DirMembers {
                root: root.to_path_buf(),
            };
            go(writer_for(t, &mut members).as_mut())
        });
    }
    let mut sink = Sink::create(t.path, t.force)?;
    let r = match &mut sink {
        Sink::Stdout(w) | Sink::Device(w) => {
            let pipe = w.get_ref().try_clone().ok();
            write_image_into(t, w, pipe, go)?
        }
        Sink::File { tmp, .. } => {
            let mut bw = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
            let r = go(writer_for(t, &mut TarMembers::seekable(&mut bw)?).as_mut())?;
            bw.into_inner()
                .map_err(|e| Error::output("writing output", e.into_error()))?;
            r
        }
    };
    sink.commit()?;
    Ok(r)
}

/// Where an image can be written, by reference: `docker-archive:PATH`, `oci:DIR`,
/// `oci-archive:PATH` (skopeo's names). A destination is one type implementing this, listed
/// in [`DESTINATIONS`] — the writing side of [`Transport`](crate::transport::Transport).
pub trait Destination: Sync {
    /// The name before the colon (`oci-archive`).
    fn name(&self) -> &'static str;
    /// The format it writes (it decides the compression default and whether a pipe is used).
    fn format(&self) -> Format;
    /// Whether `--format f` can be asked of it (a registry takes Docker's and OCI's
    /// manifests).
    fn accepts(&self, f: Format) -> bool {
        f == self.format()
    }
    /// New layers' compression when none is asked for.
    fn default_compression(&self, f: Format) -> Compression {
        f.default_compression()
    }
    /// Write the image `go` produces — maybe twice, identically — to `spec` (the reference
    /// after the name), with `t`'s options (its `format` and `path` are this destination's).
    /// Returns what was written when that says more than the reference (a registry's
    /// `NAME:TAG@DIGEST`).
    fn write(
        &self,
        spec: &str,
        t: &Target<'_>,
        go: &mut dyn FnMut(&mut dyn ImageWriter) -> Result<()>,
    ) -> Result<Option<String>>;
}

/// An image writer that names the image `tag`, whatever the operation asked for (the name a
/// destination reference carries: `oci:DIR:REF`, `docker-daemon:NAME:TAG`).
pub struct Tagged<'a, 'w> {
    /// The writer that does the work.
    pub inner: &'a mut (dyn ImageWriter + 'w),
    /// The one name the image gets.
    pub tag: String,
}

impl ImageWriter for Tagged<'_, '_> {
    fn kept_layer(&mut self, layer: &Layer, diff_id: &str, verified: bool) -> Result<LayerOut> {
        self.inner.kept_layer(layer, diff_id, verified)
    }
    fn new_layer(&mut self, produce: &mut Produce<'_>) -> Result<LayerOut> {
        self.inner.new_layer(produce)
    }
    fn new_keyed_layer(
        &mut self,
        key: &str,
        size: Option<u64>,
        produce: &mut Produce<'_>,
    ) -> Result<LayerOut> {
        self.inner.new_keyed_layer(key, size, produce)
    }
    fn takes_planned_size(&self) -> bool {
        self.inner.takes_planned_size()
    }
    fn finish(&mut self, config: &[u8], layers: &[LayerOut], _tags: &[String]) -> Result<()> {
        self.inner
            .finish(config, layers, std::slice::from_ref(&self.tag))
    }
    fn finish_as(
        &mut self,
        manifest: &[u8],
        media_type: &str,
        config: &[u8],
        _tags: &[String],
    ) -> Result<bool> {
        self.inner.finish_as(
            manifest,
            media_type,
            config,
            std::slice::from_ref(&self.tag),
        )
    }
}

/// A file or directory on disk in one of the [`Format`]s.
struct OnDisk(&'static str, Format);

impl Destination for OnDisk {
    fn name(&self) -> &'static str {
        self.0
    }

    fn format(&self) -> Format {
        self.1
    }

    fn write(
        &self,
        spec: &str,
        t: &Target<'_>,
        go: &mut dyn FnMut(&mut dyn ImageWriter) -> Result<()>,
    ) -> Result<Option<String>> {
        // `PATH[:NAME]` as skopeo writes them: the name tags the image (`oci:DIR:v1`).
        let (path, name) = match spec.split_once(':') {
            Some((p, n)) if !n.is_empty() && !Path::new(spec).exists() => (p, Some(n)),
            _ => (spec, None),
        };
        let t = Target {
            format: self.1,
            path: Some(Path::new(path)),
            ..*t
        };
        match name {
            None => write_image(&t, go)?,
            Some(n) => write_image(&t, |w| {
                go(&mut Tagged {
                    inner: w,
                    tag: n.to_string(),
                })
            })?,
        }
        Ok(None)
    }
}

/// Every destination strata writes, by name.
pub static DESTINATIONS: &[&dyn Destination] = &[
    &OnDisk("docker-archive", Format::DockerArchive),
    &OnDisk("oci", Format::Oci),
    &OnDisk("oci-archive", Format::OciArchive),
    &crate::image::docker_daemon::DockerDaemon,
    &registry::Registry,
];

/// `NAME:SPEC` naming a destination of [`DESTINATIONS`], split; `None` for anything else (a
/// plain path).
pub fn destination(reference: &str) -> Option<(&'static dyn Destination, &str)> {
    let (name, spec) = reference.split_once(':')?;
    let d = DESTINATIONS.iter().copied().find(|d| d.name() == name)?;
    Some((d, spec))
}
