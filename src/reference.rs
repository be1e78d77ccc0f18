//! Image references in the containers/skopeo transport convention.
//!
//! `docker-archive:PATH[:NAME:TAG|:@N]`, `oci:DIR[:REF]`, `oci-archive:PATH[:REF]`, or a bare
//! path whose kind is detected (a directory is an OCI layout; a file is a docker or OCI
//! archive, by what it holds). `-` reads an archive from stdin (spooled to a temp file).

use crate::error::{Error, Result};
use crate::image::oci_layout::{self, Platform};
use crate::image::{Image, archive::ArchiveIndex, docker_archive, spool_stdin};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    DockerArchive {
        path: PathBuf,
        select: Option<String>,
    },
    Oci {
        dir: PathBuf,
        tag: Option<String>,
    },
    OciArchive {
        path: PathBuf,
        tag: Option<String>,
    },
    /// A path whose format is decided by looking at it.
    Detect(PathBuf),
}

const TRANSPORTS: &str = "docker-archive:, oci:, oci-archive: (or a bare path)";

impl Reference {
    pub fn parse(s: &str) -> Result<Reference> {
        if let Some((transport, rest)) = s.split_once(':') {
            // Windows-style or odd paths aside, a known prefix decides.
            match transport {
                "docker-archive" => {
                    let (path, select) = split_path(rest);
                    return Ok(Reference::DockerArchive { path, select });
                }
                "oci" => {
                    let (dir, tag) = split_path(rest);
                    return Ok(Reference::Oci { dir, tag });
                }
                "oci-archive" => {
                    let (path, tag) = split_path(rest);
                    return Ok(Reference::OciArchive { path, tag });
                }
                "docker" | "docker-daemon" | "containers-storage" | "dir" => {
                    return Err(Error::Usage(format!(
                        "transport {transport}: is not supported yet; supported: {TRANSPORTS}"
                    )));
                }
                t if !Path::new(s).exists() && !t.contains('/') && !t.is_empty() => {
                    return Err(Error::Usage(format!(
                        "unknown transport {t}: in {s:?}; supported: {TRANSPORTS}"
                    )));
                }
                _ => {}
            }
        }
        Ok(Reference::Detect(PathBuf::from(s)))
    }

    pub fn open(&self, platform: &Platform) -> Result<Image> {
        let shown = self.to_string();
        match self {
            Reference::DockerArchive { path, select } => {
                let (path, spool) = local(path)?;
                let mut img = docker_archive::open(&path, select.as_deref(), &shown)?;
                img._spool = spool;
                Ok(img)
            }
            Reference::Oci { dir, tag } => {
                oci_layout::open_dir(dir, tag.as_deref(), platform, &shown)
            }
            Reference::OciArchive { path, tag } => {
                let (path, spool) = local(path)?;
                let mut img = oci_layout::open_archive(&path, tag.as_deref(), platform, &shown)?;
                img._spool = spool;
                Ok(img)
            }
            Reference::Detect(path) => {
                if path.is_dir() {
                    return oci_layout::open_dir(path, None, platform, &shown);
                }
                let (local_path, spool) = local(path)?;
                let index = ArchiveIndex::open(&local_path)?;
                let mut img = if index.contains("manifest.json") || index.contains("repositories") {
                    docker_archive::open_index(index, None, &shown)?
                } else if index.contains("index.json") {
                    drop(index);
                    oci_layout::open_archive(&local_path, None, platform, &shown)?
                } else {
                    return Err(Error::Format(format!(
                        "{}: neither a docker-archive nor an OCI archive (no manifest.json, repositories or index.json)",
                        path.display()
                    )));
                };
                img._spool = spool;
                Ok(img)
            }
        }
    }
}

/// A path, with stdin (`-`) spooled to a temp file.
fn local(path: &Path) -> Result<(PathBuf, Option<Arc<tempfile::TempPath>>)> {
    if path == Path::new("-") {
        let (p, guard) = spool_stdin()?;
        return Ok((p, Some(guard)));
    }
    if !path.exists() {
        return Err(Error::Usage(format!("{}: no such file", path.display())));
    }
    Ok((path.to_path_buf(), None))
}

/// `PATH[:SUFFIX]`: the path is everything before the first colon, unless the whole string
/// names an existing file (paths with colons).
fn split_path(rest: &str) -> (PathBuf, Option<String>) {
    if Path::new(rest).exists() {
        return (PathBuf::from(rest), None);
    }
    match rest.split_once(':') {
        Some((p, sel)) if !sel.is_empty() => (PathBuf::from(p), Some(sel.to_string())),
        Some((p, _)) => (PathBuf::from(p), None),
        None => (PathBuf::from(rest), None),
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |o: &Option<String>| o.as_ref().map(|s| format!(":{s}")).unwrap_or_default();
        match self {
            Reference::DockerArchive { path, select } => {
                write!(f, "docker-archive:{}{}", path.display(), opt(select))
            }
            Reference::Oci { dir, tag } => write!(f, "oci:{}{}", dir.display(), opt(tag)),
            Reference::OciArchive { path, tag } => {
                write!(f, "oci-archive:{}{}", path.display(), opt(tag))
            }
            Reference::Detect(p) => write!(f, "{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_parse() {
        assert_eq!(
            Reference::parse("docker-archive:/x/img.tar:busybox:latest").unwrap(),
            Reference::DockerArchive {
                path: "/x/img.tar".into(),
                select: Some("busybox:latest".into())
            }
        );
        assert_eq!(
            Reference::parse("docker-archive:/x/img.tar:@1").unwrap(),
            Reference::DockerArchive {
                path: "/x/img.tar".into(),
                select: Some("@1".into())
            }
        );
        assert_eq!(
            Reference::parse("oci:/x/layout:v1").unwrap(),
            Reference::Oci {
                dir: "/x/layout".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            Reference::parse("img.tar").unwrap(),
            Reference::Detect("img.tar".into())
        );
    }

    #[test]
    fn unknown_transport_is_an_error() {
        let e = Reference::parse("ftp:somewhere").unwrap_err().to_string();
        assert!(e.contains("unknown transport ftp:"), "{e}");
        assert!(
            Reference::parse("docker://busybox")
                .unwrap_err()
                .to_string()
                .contains("not supported yet")
        );
    }
}
