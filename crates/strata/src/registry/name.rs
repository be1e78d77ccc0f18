//! Image names as Docker reads them: `[HOST[:PORT]/]REPO[:TAG][@DIGEST]`.
//!
//! The rules are distribution's `reference` package (`normalize.go`, `regexp.go`): a first
//! component is a registry host when it has a `.` or a `:`, is `localhost`, or has an upper-case
//! letter; without one the registry is Docker Hub, whose one-component names live under
//! `library/`. No tag and no digest means `latest`; a digest pins the manifest (a tag beside it
//! is only a label, as Docker treats it).

use crate::error::{Error, Result};
use std::fmt;

/// Docker Hub's canonical name, as references and credentials stores write it.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's registry API is served from.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The key Docker has always stored Docker Hub credentials under.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A parsed, normalised image name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageName {
    /// The registry as references name it (`docker.io`, `quay.io`, `127.0.0.1:5000`, `[::1]:5000`).
    pub registry: String,
    /// The repository path (`library/alpine`, `team/app/api`).
    pub repository: String,
    /// The tag, when one was given.
    pub tag: Option<String>,
    /// The manifest digest, when one was given.
    pub digest: Option<String>,
}

/// Longest repository name distribution accepts (`reference.NameTotalLengthMax`).
const NAME_MAX: usize = 255;

impl ImageName {
    /// Parse a name as Docker does (`alpine`, `quay.io/org/app:1`, `localhost:5000/a@sha256:…`).
    pub fn parse(s: &str) -> Result<ImageName> {
        let bad = |why: &str| Error::Usage(format!("bad image name {s:?}: {why}"));
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if crate::digest::parse(d).is_none() {
                    return Err(bad(
                        "the digest must be sha256: or sha512: and its hex digits",
                    ));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // The tag is after the last colon of the last path component (a port's colon is in
        // the first).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(bad(
                "a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with . or -",
            ));
        }
        let (registry, repository) = match path.split_once('/') {
            Some((first, remainder)) if is_host(first) => {
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), path.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        if registry.starts_with('[') && !valid_ipv6_host(&registry) {
            return Err(bad(
                "an IPv6 registry is written [ADDRESS] or [ADDRESS]:PORT",
            ));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty() {
            return Err(bad("no repository"));
        }
        if let Some(c) = repository.split('/').find(|c| !valid_component(c)) {
            return Err(bad(&format!(
                "{c:?}: repository components are lower-case letters and digits, separated by '.', '_', '__' or dashes"
            )));
        }
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(bad("longer than 255 characters"));
        }
        Ok(ImageName {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The host (and port) the registry API is served from: Docker Hub's is not its name.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What names the manifest in the API: the digest when pinned, else the tag (`latest`).
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The same image pinned to `digest` (the tag kept as a label).
    pub fn with_digest(&self, digest: &str) -> ImageName {
        ImageName {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        match (&self.tag, &self.digest) {
            (Some(t), _) => write!(f, ":{t}")?,
            (None, None) => write!(f, ":latest")?,
            (None, Some(_)) => {}
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Distribution's rule for the first component: a host has a dot, a colon (a port, or IPv6),
/// is `localhost`, or has an upper-case letter (which repositories never have).
fn is_host(first: &str) -> bool {
    first.contains(['.', ':'])
        || first == "localhost"
        || first.starts_with('[')
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

fn valid_ipv6_host(h: &str) -> bool {
    let Some(close) = h.find(']') else {
        return false;
    };
    let addr = &h[1..close];
    let after = &h[close + 1..];
    addr.parse::<std::net::Ipv6Addr>().is_ok()
        && (after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
}

/// `[\w][\w.-]{0,127}`: a tag.
pub(crate) fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`: a repository path component.
pub(crate) fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__', or any number of '-'.
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// (input, registry, repository, tag, digest, API host)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        &'a str,
    );

    #[test]
    fn names_normalise_as_docker_does() {
        let d = format!("sha256:{HEX}");
        // (input, registry, repository, tag, digest, API host)
        let cases: &[Case] = &[
            (
                "alpine",
                "docker.io",
                "library/alpine",
                None,
                None,
                "registry-1.docker.io",
            ),
            (
                "alpine:3.20",
                "docker.io",
                "library/alpine",
                Some("3.20"),
                None,
                "registry-1.docker.io",
            ),
            (
                "library/alpine",
                "docker.io",
                "library/alpine",
                None,
                None,
                "registry-1.docker.io",
            ),
            (
                "docker.io/alpine",
                "docker.io",
                "library/alpine",
                None,
                None,
                "registry-1.docker.io",
            ),
            (
                "index.docker.io/library/alpine",
                "docker.io",
                "library/alpine",
                None,
                None,
                "registry-1.docker.io",
            ),
            (
                "bitnami/redis:7",
                "docker.io",
                "bitnami/redis",
                Some("7"),
                None,
                "registry-1.docker.io",
            ),
            (
                "quay.io/org/team/app:v1",
                "quay.io",
                "org/team/app",
                Some("v1"),
                None,
                "quay.io",
            ),
            ("localhost/app", "localhost", "app", None, None, "localhost"),
            (
                "localhost:5000/a/b:c",
                "localhost:5000",
                "a/b",
                Some("c"),
                None,
                "localhost:5000",
            ),
            (
                "127.0.0.1:5000/app",
                "127.0.0.1:5000",
                "app",
                None,
                None,
                "127.0.0.1:5000",
            ),
            (
                "[::1]:5000/app:1",
                "[::1]:5000",
                "app",
                Some("1"),
                None,
                "[::1]:5000",
            ),
            ("[fe80::1]/app", "[fe80::1]", "app", None, None, "[fe80::1]"),
            ("Registry/app", "Registry", "app", None, None, "Registry"),
            (
                "my-reg.local/a__b/c-d.e",
                "my-reg.local",
                "a__b/c-d.e",
                None,
                None,
                "my-reg.local",
            ),
        ];
        for (input, reg, repo, tag, digest, api) in cases {
            let n = ImageName::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(n.registry, *reg, "{input}");
            assert_eq!(n.repository, *repo, "{input}");
            assert_eq!(n.tag.as_deref(), *tag, "{input}");
            assert_eq!(n.digest.as_deref(), *digest, "{input}");
            assert_eq!(n.api_host(), *api, "{input}");
        }
        let n = ImageName::parse(&format!("alpine:3@{d}")).unwrap();
        assert_eq!(
            (n.tag.as_deref(), n.digest.as_deref()),
            (Some("3"), Some(d.as_str()))
        );
        assert_eq!(n.manifest_reference(), d, "the digest pins");
        assert_eq!(n.to_string(), format!("docker.io/library/alpine:3@{d}"));
        let n = ImageName::parse(&format!("127.0.0.1:5000/x@{d}")).unwrap();
        assert_eq!(n.tag, None);
        assert_eq!(n.to_string(), format!("127.0.0.1:5000/x@{d}"));
        assert_eq!(
            ImageName::parse("alpine").unwrap().manifest_reference(),
            "latest"
        );
        assert_eq!(
            ImageName::parse("alpine").unwrap().to_string(),
            "docker.io/library/alpine:latest"
        );
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            "",
            "Alpine",
            "UPPER/app/x:1:2",
            "a//b",
            "app:",
            "app:-x",
            "app@sha256:abc",
            "quay.io/",
            "a/-b",
            "a/b-",
            "a/b...c",
            "[::1/app",
            "[zz]:5000/app",
            "[::1]:x/app",
        ] {
            assert!(ImageName::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let long = format!("a/{}", "b".repeat(300));
        assert!(ImageName::parse(&long).is_err());
    }
}
