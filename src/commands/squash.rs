//! `strata squash`: a `docker load`-able (or OCI) image with the top layers merged into one.

use super::flatten::progress_bar;
use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::output::Sink;
use crate::sink::ImageWriter;
use crate::sink::docker_archive::DockerArchive;
use crate::sink::members::{DirMembers, TarMembers};
use crate::sink::oci_layout::OciLayout;
use crate::squash::{SquashOptions, SquashReport, rfc3339_from_epoch, squash};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    DockerArchive,
    Oci,
    OciArchive,
}

pub struct SquashArgs {
    pub output: Option<PathBuf>,
    pub format: Format,
    pub tags: Vec<String>,
    pub from: Option<String>,
    pub last: Option<usize>,
    pub compress: Option<Compression>,
    pub level: Option<u32>,
    pub created: Option<String>,
    pub force: bool,
    pub quiet: bool,
    pub verify: bool,
}

fn created(args: &SquashArgs) -> Result<Option<String>> {
    if let Some(c) = &args.created {
        let ok = c.len() >= 20
            && c.as_bytes().get(4) == Some(&b'-')
            && c.as_bytes().get(10) == Some(&b'T');
        if !ok {
            return Err(Error::Usage(format!(
                "--created {c:?}: expected RFC 3339, like 2024-01-02T03:04:05Z"
            )));
        }
        return Ok(Some(c.clone()));
    }
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => {
            let secs: i64 = v.trim().parse().map_err(|_| {
                Error::Usage(format!(
                    "SOURCE_DATE_EPOCH={v:?} is not a number of seconds"
                ))
            })?;
            Ok(Some(rfc3339_from_epoch(secs)))
        }
        _ => Ok(None),
    }
}

pub fn run(img: &Image, args: &SquashArgs) -> Result<SquashReport> {
    let from = match (&args.from, args.last) {
        (Some(_), Some(_)) => {
            return Err(Error::Usage("--from and --last exclude each other".into()));
        }
        (Some(spec), None) => img.layer_index(spec)?,
        (None, Some(0)) => return Err(Error::Usage("--last 0 squashes nothing".into())),
        (None, Some(n)) => img.layers.len().saturating_sub(n),
        (None, None) => 0,
    };
    let tags = if args.tags.is_empty() {
        img.tags.clone()
    } else {
        args.tags.clone()
    };
    let total: u64 = img.layers[from.min(img.layers.len())..]
        .iter()
        .map(|l| l.stored_size())
        .sum();
    let progress = progress_bar(total, args.quiet);
    let opts = SquashOptions {
        from,
        created: created(args)?,
        verify: args.verify,
        progress: progress.clone(),
    };
    let compression = args.compress.unwrap_or(Compression::Gzip);
    if args.format == Format::DockerArchive && args.compress.is_some_and(|c| c != Compression::None)
    {
        return Err(Error::Usage("docker-archive layers are uncompressed tars; --compress applies to oci and oci-archive".into()));
    }
    let report = match args.format {
        Format::Oci => {
            let dir = args
                .output
                .as_deref()
                .filter(|p| *p != Path::new("-"))
                .ok_or_else(|| {
                    Error::Usage("--format oci writes a directory: give it with -o DIR".into())
                })?;
            write_dir(dir, args.force, |members| {
                let mut w = OciLayout::new(members, compression, args.level);
                squash(img, &opts, &mut w, &tags)
            })?
        }
        Format::DockerArchive | Format::OciArchive => {
            let mut sink = Sink::create(args.output.as_deref(), args.force)?;
            let report = {
                let go = |members: &mut dyn crate::sink::members::Members| -> Result<SquashReport> {
                    let mut w: Box<dyn ImageWriter + '_> = match args.format {
                        Format::DockerArchive => Box::new(DockerArchive::new(members)),
                        _ => Box::new(OciLayout::new(members, compression, args.level)),
                    };
                    squash(img, &opts, w.as_mut(), &tags)
                };
                match &mut sink {
                    Sink::Stdout(w) => go(&mut TarMembers::stream(w))?,
                    Sink::File { tmp, .. } => {
                        let mut bw = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
                        let r = go(&mut TarMembers::seekable(&mut bw)?)?;
                        bw.into_inner()
                            .map_err(|e| Error::io("writing output", e.into_error()))?;
                        r
                    }
                }
            };
            sink.commit()?;
            report
        }
    };
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    Ok(report)
}

/// Write a directory beside `dest` under a temp name, then move it into place.
fn write_dir(
    dest: &Path,
    force: bool,
    f: impl FnOnce(&mut DirMembers) -> Result<SquashReport>,
) -> Result<SquashReport> {
    if dest.exists() && !force {
        return Err(Error::Usage(format!(
            "{} already exists; use --force to replace it",
            dest.display()
        )));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".strata-oci.")
        .tempdir_in(&parent)
        .map_err(|e| {
            Error::io(
                format!("creating a temp directory in {}", parent.display()),
                e,
            )
        })?;
    let mut members = DirMembers {
        root: tmp.path().to_path_buf(),
    };
    let report = f(&mut members)?;
    if dest.exists() {
        let r = if dest.is_dir() {
            std::fs::remove_dir_all(dest)
        } else {
            std::fs::remove_file(dest)
        };
        r.map_err(|e| Error::io(format!("replacing {}", dest.display()), e))?;
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, dest).map_err(|e| {
        Error::io(
            format!("moving the output into place at {}", dest.display()),
            e,
        )
    })?;
    Ok(report)
}
