//! One module per subcommand; `main.rs` only parses arguments and calls these.

pub mod build;
pub mod extract;
pub mod flatten;
pub mod progress;
pub mod signals;
pub mod squash;

use std::io::IsTerminal;
use std::path::Path;
use strata::compression::Compression;
use strata::sink::Format;

/// Where `-o` and `--format` say an image goes: a destination reference (`oci:DIR`, whose
/// format is its own), or a path (or stdout) in `--format` (default docker-archive).
pub struct ImageOutput {
    pub format: Format,
    /// The destination and its spec, when `-o` named one.
    pub dest: Option<(&'static dyn strata::sink::Destination, String)>,
    /// How a `docker://` destination is reached.
    pub registry: std::sync::Arc<strata::registry::Options>,
}

impl ImageOutput {
    pub fn resolve(
        output: Option<&Path>,
        format: Option<Format>,
        registry: &std::sync::Arc<strata::registry::Options>,
    ) -> strata::Result<ImageOutput> {
        let named = output
            .and_then(|o| o.to_str())
            .and_then(strata::sink::destination);
        match named {
            Some((d, spec)) => {
                if let Some(f) = format.filter(|f| !d.accepts(*f)) {
                    return Err(strata::Error::Usage(format!(
                        "-o {}:{spec} writes {}; it contradicts --format {}",
                        d.name(),
                        d.name(),
                        format_name(f)
                    )));
                }
                Ok(ImageOutput {
                    format: format.unwrap_or(d.format()),
                    dest: Some((d, spec.to_string())),
                    registry: registry.clone(),
                })
            }
            None => Ok(ImageOutput {
                format: format.unwrap_or(Format::DockerArchive),
                dest: None,
                registry: registry.clone(),
            }),
        }
    }

    /// New layers' compression when `--compress` is not given.
    pub fn default_compression(&self) -> Compression {
        match &self.dest {
            Some((d, _)) => d.default_compression(self.format),
            None => self.format.default_compression(),
        }
    }

    /// Whether the image goes to stdout.
    pub fn to_stdout(&self, output: Option<&Path>) -> bool {
        self.format != Format::Oci
            && match &self.dest {
                Some((_, spec)) => spec == "-",
                None => output.is_none_or(|p| p == Path::new("-")),
            }
    }

    /// Write the image `go` produces.
    pub fn write<R>(
        &self,
        target: &strata::sink::Target<'_>,
        mut go: impl FnMut(&mut dyn strata::sink::ImageWriter) -> strata::Result<R>,
    ) -> strata::Result<R> {
        let target = strata::sink::Target {
            format: self.format,
            registry: &self.registry,
            ..*target
        };
        match &self.dest {
            None => strata::sink::write_image(&target, go),
            Some((d, spec)) => {
                let mut out = None;
                let wrote = d.write(spec, &target, &mut |w| {
                    out = Some(go(w)?);
                    Ok(())
                })?;
                tracing::info!("wrote {}:{spec}", d.name());
                // What a push made, pinned by digest: on stdout, for scripts.
                if let Some(w) = wrote {
                    println!("{w}");
                }
                out.ok_or_else(|| strata::Error::Format("the image writer wrote nothing".into()))
            }
        }
    }
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::DockerArchive => "docker-archive",
        Format::Oci => "oci",
        Format::OciArchive => "oci-archive",
    }
}

/// `--tag` values for a Docker image (docker-archive, docker-daemon) checked against Docker's
/// reference grammar (`:latest` added) before any output. For an OCI layout a tag is its
/// reference name (`oci:DIR:REF`), taken as given.
pub fn checked_tags(tags: &[String], format: Format) -> strata::Result<Vec<String>> {
    if format != Format::DockerArchive {
        return Ok(tags.to_vec());
    }
    tags.iter()
        .map(|t| strata::reference::normalize_tag(t))
        .collect()
}

/// `1 layer`, `2 layers`.
pub fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The local paths an image reference reads (for `--force` never to replace them).
pub fn input_paths(reference: &str) -> Vec<std::path::PathBuf> {
    match strata::reference::Reference::parse(reference) {
        Ok(r) if r.transport_name().is_none() => vec![r.spec().into()],
        Ok(r) => vec![strata::image::split_path(r.spec()).0],
        Err(_) => Vec::new(),
    }
}

/// No output given and stdout a terminal: a tar there helps nobody.
pub fn refuse_terminal(output: Option<&Path>) -> strata::Result<()> {
    if output.is_none() && std::io::stdout().is_terminal() {
        return Err(strata::Error::Usage(
            "refusing to write a tar to a terminal; use -o FILE (or -o - to insist)".into(),
        ));
    }
    Ok(())
}

/// `--compress`: the library's [`Compression`] as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressArg {
    None,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

impl From<CompressArg> for Compression {
    fn from(c: CompressArg) -> Compression {
        match c {
            CompressArg::None => Compression::None,
            CompressArg::Gzip => Compression::Gzip,
            CompressArg::Zstd => Compression::Zstd,
            CompressArg::Xz => Compression::Xz,
            CompressArg::Bzip2 => Compression::Bzip2,
        }
    }
}

/// `--compress` of image layers (squash, build, copy): what an image's layer media types can
/// say — no xz or bzip2, which only `flatten`'s output takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LayerCompressArg {
    None,
    Gzip,
    Zstd,
}

impl From<LayerCompressArg> for Compression {
    fn from(c: LayerCompressArg) -> Compression {
        match c {
            LayerCompressArg::None => Compression::None,
            LayerCompressArg::Gzip => Compression::Gzip,
            LayerCompressArg::Zstd => Compression::Zstd,
        }
    }
}

/// `--format`: the library's [`Format`] as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// What `docker save` writes and `docker load` reads (a tar).
    DockerArchive,
    /// An OCI image layout directory.
    Oci,
    /// An OCI image layout in a tar.
    OciArchive,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::DockerArchive => Format::DockerArchive,
            FormatArg::Oci => Format::Oci,
            FormatArg::OciArchive => Format::OciArchive,
        }
    }
}
