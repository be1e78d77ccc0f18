//! The service's paths: `/v2/<name>/<op>/<reference>` (a name may have slashes; the
//! reference is a tag or a digest) and Quay's `/c1/squash/<namespace>/<repository>/<tag>`.

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A `docker load`-able squashed image.
    Squash,
    /// The merged root filesystem as one tar.
    Flatten,
    /// The `files --json` document.
    Files,
    /// The `diff --json` document.
    Diff,
    /// The `waste --json` document.
    Waste,
}

impl Op {
    /// The route's name, as metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            Op::Squash => "squash",
            Op::Flatten => "flatten",
            Op::Files => "files",
            Op::Diff => "diff",
            Op::Waste => "waste",
        }
    }

    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "squash" => Op::Squash,
            "flatten" => Op::Flatten,
            "files" => Op::Files,
            "diff" => Op::Diff,
            "waste" => Op::Waste,
            _ => return None,
        })
    }
}

/// A parsed request path.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// The repository (`library/alpine`, `team/app`).
    pub name: String,
    /// What is asked.
    pub op: Op,
    /// A tag or a digest.
    pub reference: String,
}

/// `<name>/<op>/<reference>` after `/v2/`: the op is the last-but-one component, so names
/// may hold components called like ops (`a/files/b/squash/1`).
pub fn parse_v2(rest: &str) -> Option<Target> {
    let (head, reference) = rest.rsplit_once('/')?;
    let (name, op) = head.rsplit_once('/')?;
    let op = Op::parse(op)?;
    if name.is_empty() || reference.is_empty() {
        return None;
    }
    Some(Target {
        name: name.to_string(),
        op,
        reference: reference.to_string(),
    })
}

/// Quay's `<namespace>/<repository>/<tag>` after `/c1/squash/`.
pub fn parse_quay(rest: &str) -> Option<Target> {
    let mut parts = rest.split('/');
    let (ns, repo, tag) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || [ns, repo, tag].iter().any(|p| p.is_empty()) {
        return None;
    }
    Some(Target {
        name: format!("{ns}/{repo}"),
        op: Op::Squash,
        reference: tag.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = parse_v2("team/app/squash/v1").unwrap();
        assert_eq!(
            (t.name.as_str(), t.op, t.reference.as_str()),
            ("team/app", Op::Squash, "v1")
        );
        let t = parse_v2("a/files/b/diff/sha256:abc").unwrap();
        assert_eq!((t.name.as_str(), t.op), ("a/files/b", Op::Diff));
        assert!(parse_v2("app/unknown/1").is_none());
        assert!(parse_v2("squash/1").is_none());
        assert!(parse_v2("app/squash/").is_none());
        let q = parse_quay("org/app/latest").unwrap();
        assert_eq!(
            (q.name.as_str(), q.reference.as_str()),
            ("org/app", "latest")
        );
        assert!(parse_quay("org/app").is_none());
        assert!(parse_quay("a/b/c/d").is_none());
    }
}
