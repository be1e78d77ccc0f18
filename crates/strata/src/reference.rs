//! Image references in the containers/skopeo transport convention.
//!
//! `docker-archive:PATH[:NAME:TAG|:@N]`, `oci:DIR[:REF]`, `oci-archive:PATH[:REF]`, or a bare
//! path whose kind is detected (a directory is an OCI layout; a file is a docker or OCI
//! archive, by what it holds). `-` reads an archive from stdin (spooled to a temp file).

use crate::error::{Error, Result};
use crate::image::oci_layout::{self, Platform};
use crate::image::{Image, archive::ArchiveIndex, docker_archive, local};
use crate::transport::{self, OpenOptions, Transport};
use std::path::{Path, PathBuf};

/// A parsed reference: a transport from [`transport::TRANSPORTS`] and what follows its name,
/// or a bare path whose format is decided by looking at it.
#[derive(Clone)]
pub struct Reference {
    transport: Option<&'static dyn Transport>,
    spec: String,
}

/// Transport names of containers/skopeo that strata does not read yet.
const NOT_YET: &[&str] = &["containers-storage", "dir"];

impl Reference {
    /// Parse a reference: a known transport's `name:` prefix picks it; an unknown name (when
    /// `s` is not an existing path) or one not supported yet is a usage error; anything else
    /// is a bare path.
    pub fn parse(s: &str) -> Result<Reference> {
        if let Some((name, rest)) = s.split_once(':') {
            // Windows-style or odd paths aside, a known prefix decides.
            if let Some(t) = transport::by_name(name) {
                return Ok(Reference {
                    transport: Some(t),
                    spec: rest.to_string(),
                });
            }
            let supported = format!("{} (or a bare path)", transport::names());
            if NOT_YET.contains(&name) {
                return Err(Error::Usage(format!(
                    "transport {name}: is not supported yet; supported: {supported}"
                )));
            }
            if !Path::new(s).exists()
                && !Path::new(name).exists()
                && !name.contains('/')
                && !name.is_empty()
            {
                return Err(Error::Usage(format!(
                    "unknown transport {name}: in {s:?}; supported: {supported}"
                )));
            }
        }
        Ok(Reference {
            transport: None,
            spec: s.to_string(),
        })
    }

    /// The transport's name (`None` for a bare path, detected when opened).
    pub fn transport_name(&self) -> Option<&'static str> {
        self.transport.map(|t| t.name())
    }

    /// What follows the transport's name (the whole reference for a bare path).
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// Open with the default options but for the platform.
    pub fn open(&self, platform: &Platform) -> Result<Image> {
        self.open_with(&OpenOptions {
            platform: platform.clone(),
            ..OpenOptions::default()
        })
    }

    /// Open the image with `opts`: through its transport, or for a bare path by what the
    /// path holds.
    pub fn open_with(&self, opts: &OpenOptions) -> Result<Image> {
        let shown = self.to_string();
        let img = match self.transport {
            Some(t) => t.open(&self.spec, &shown, opts)?,
            None => detect(Path::new(&self.spec), &shown, opts)?,
        };
        if opts.require_platform {
            require_platform(&img, &opts.platform)?;
        }
        Ok(img)
    }
}

/// An image asked for by platform must be of it, also when it has only one.
fn require_platform(img: &Image, want: &Platform) -> Result<()> {
    let field = |k: &str| {
        img.config
            .get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    let have = Platform {
        os: field("os").unwrap_or_default(),
        arch: field("architecture").unwrap_or_default(),
        variant: field("variant"),
    };
    if want.matches(&have) {
        return Ok(());
    }
    let shown = if have.os.is_empty() && have.arch.is_empty() {
        "of no stated platform".to_string()
    } else {
        format!("{have}")
    };
    Err(Error::Usage(format!(
        "{}: no image for platform {want}; available: {shown} (the only one)",
        img.reference
    )))
}

/// A bare path: a directory is an OCI layout; a file is a docker or OCI archive by what it
/// holds.
fn detect(path: &Path, shown: &str, opts: &OpenOptions) -> Result<Image> {
    let platform = &opts.platform;
    // `PATH:NAME:TAG`, `PATH:@N`, `DIR:REF` work bare too, as the hints print them.
    let (path, select) = if path.exists() || path == Path::new("-") {
        (path.to_path_buf(), None)
    } else {
        crate::image::split_path(&path.to_string_lossy())
    };
    if path.is_dir() {
        return oci_layout::open_dir(&path, select.as_deref(), platform, shown);
    }
    let (local_path, spool): (PathBuf, _) = local(&path)?;
    let index = ArchiveIndex::open(&local_path)?;
    let mut img = if index.contains("manifest.json") || index.contains("repositories") {
        docker_archive::open_index_verified(index, select.as_deref(), shown, opts.verify)?
    } else if index.contains("index.json") {
        drop(index);
        oci_layout::open_archive(&local_path, select.as_deref(), platform, shown)?
    } else {
        return Err(Error::Format(format!(
            "{}: neither a docker-archive nor an OCI archive (no manifest.json, repositories or index.json)",
            path.display()
        )));
    };
    img._spool = spool;
    Ok(img)
}

/// An image name as Docker's reference grammar has it (distribution's `reference`):
/// `[HOST[:PORT]/]path/components[:TAG]`, the path lowercase `[a-z0-9]` joined by `.`, `_`,
/// `__` or dashes, the tag `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; `:latest` when no tag.
/// Checked before any output, so a bad `--tag` never reaches `docker load` half written.
pub fn normalize_tag(tag: &str) -> Result<String> {
    let bad = |why: &str| Error::Usage(format!("--tag {tag:?}: {why}"));
    let (name, t) = match tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (tag, None),
    };
    if name.is_empty() {
        return Err(bad("no repository name"));
    }
    if name.len() > 255 {
        return Err(bad("the name is longer than 255 characters"));
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let first = parts[0];
    if parts.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost") {
        let (host, port) = match first.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (first, None),
        };
        let host_ok = host.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        });
        if !host_ok || port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad("a bad registry host"));
        }
        parts.remove(0);
    }
    for c in &parts {
        if !crate::registry::name::valid_component(c) {
            return Err(bad(
                "repository names are lowercase letters and digits, joined by '.', '_', '__' or '-'",
            ));
        }
    }
    let t = match t {
        None => "latest",
        Some(t) => {
            if !crate::registry::name::valid_tag(t) {
                return Err(bad(
                    "a tag is up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
                ));
            }
            t
        }
    };
    Ok(format!("{name}:{t}"))
}

impl std::fmt::Debug for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl PartialEq for Reference {
    fn eq(&self, other: &Self) -> bool {
        self.transport_name() == other.transport_name() && self.spec == other.spec
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.transport {
            Some(t) => write!(f, "{}:{}", t.name(), self.spec),
            None => write!(f, "{}", self.spec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (Option<&'static str>, String) {
        let r = Reference::parse(s).unwrap();
        (r.transport_name(), r.spec().to_string())
    }

    #[test]
    fn transports_parse() {
        assert_eq!(
            parts("docker-archive:/x/img.tar:busybox:latest"),
            (Some("docker-archive"), "/x/img.tar:busybox:latest".into())
        );
        assert_eq!(
            crate::image::split_path("/x/img.tar:busybox:latest"),
            ("/x/img.tar".into(), Some("busybox:latest".into()))
        );
        assert_eq!(
            crate::image::split_path("/x/img.tar:@1"),
            ("/x/img.tar".into(), Some("@1".into()))
        );
        assert_eq!(
            parts("oci:/x/layout:v1"),
            (Some("oci"), "/x/layout:v1".into())
        );
        assert_eq!(
            crate::image::split_path("/x/layout:v1"),
            ("/x/layout".into(), Some("v1".into()))
        );
        assert_eq!(parts("img.tar"), (None, "img.tar".into()));
    }

    #[test]
    fn tags_follow_docker_s_grammar() {
        assert_eq!(normalize_tag("app").unwrap(), "app:latest");
        assert_eq!(
            normalize_tag("my/app:v1.2-rc_3").unwrap(),
            "my/app:v1.2-rc_3"
        );
        assert_eq!(
            normalize_tag("localhost:5000/a__b/c-d:1").unwrap(),
            "localhost:5000/a__b/c-d:1"
        );
        assert_eq!(
            normalize_tag("registry.example.com/x").unwrap(),
            "registry.example.com/x:latest"
        );
        for bad in [
            "App", "a//b", "-a", "a-", "a:", "a:.x", "a:-x", "a..b", "a___b", "", ":1",
        ] {
            assert!(normalize_tag(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(normalize_tag(&format!("a:{}", "t".repeat(129))).is_err());
    }

    #[test]
    fn unknown_transport_is_an_error() {
        let e = Reference::parse("ftp:somewhere").unwrap_err().to_string();
        assert!(e.contains("unknown transport ftp:"), "{e}");
        assert!(
            Reference::parse("containers-storage:busybox")
                .unwrap_err()
                .to_string()
                .contains("not supported yet")
        );
        let r = Reference::parse("docker://busybox").unwrap();
        assert_eq!(
            (r.transport_name(), r.spec()),
            (Some("docker"), "//busybox")
        );
    }
}
