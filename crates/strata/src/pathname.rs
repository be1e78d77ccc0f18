//! Normalizing the names found in layer tars: `./` prefixes, leading `/`, duplicate slashes and
//! `.` components go; `..` is resolved lexically and may never climb above the root.

use std::borrow::Cow;

/// Why a name cannot be normalized.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// A `..` climbs above the root (the name, lossily as UTF-8).
    #[error("path {0:?} escapes the root")]
    Escapes(String),
    /// The name has a NUL byte.
    #[error("path contains a NUL byte")]
    Nul,
}

/// Returns the path as `a/b/c` (no leading or trailing slash; empty for the root).
/// Borrows when the input is already in that form, as nearly all real entries are; a
/// borrowed name may keep one trailing slash (a directory's), which [`trim_dir`] strips.
pub fn normalize(raw: &[u8]) -> Result<Cow<'_, [u8]>, PathError> {
    if is_clean(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    if raw.contains(&0) {
        return Err(PathError::Nul);
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err(PathError::Escapes(
                        String::from_utf8_lossy(raw).into_owned(),
                    ));
                }
            }
            c => parts.push(c),
        }
    }
    Ok(Cow::Owned(parts.join(&b'/')))
}

/// Fast path: no leading slash, no empty, `.` or `..` component; a single trailing slash is
/// allowed (directories) and stripped by the caller.
fn is_clean(raw: &[u8]) -> bool {
    let raw = raw.strip_suffix(b"/").unwrap_or(raw);
    if raw.is_empty() {
        return false;
    }
    raw.split(|&b| b == b'/')
        .all(|c| !c.is_empty() && c != b"." && c != b".." && !c.contains(&0))
}

/// Strip one trailing slash (callers pass clean paths from `normalize`).
pub fn trim_dir(p: &[u8]) -> &[u8] {
    p.strip_suffix(b"/").unwrap_or(p)
}

/// Split `a/b/c` into (`a/b`, `c`); the root's children have an empty parent.
pub fn split_parent(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (&[], p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Result<String, PathError> {
        normalize(s.as_bytes()).map(|c| String::from_utf8(trim_dir(&c).to_vec()).unwrap())
    }

    #[test]
    fn prefixes_and_slashes() {
        assert_eq!(n("./etc/passwd").unwrap(), "etc/passwd");
        assert_eq!(n("/etc//passwd").unwrap(), "etc/passwd");
        assert_eq!(n("etc/").unwrap(), "etc");
        assert_eq!(n("./").unwrap(), "");
        assert_eq!(n("/").unwrap(), "");
        assert_eq!(n("a/./b/../c").unwrap(), "a/c");
    }

    #[test]
    fn dotdot_may_not_escape() {
        assert!(matches!(n("../etc"), Err(PathError::Escapes(_))));
        assert!(matches!(n("a/../../etc"), Err(PathError::Escapes(_))));
    }
}
