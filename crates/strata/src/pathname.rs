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
    /// Longer than Linux can create (`PATH_MAX`, counting the leading slash and the NUL).
    #[error("a path of {0} bytes: File name too long (PATH_MAX is {PATH_MAX})")]
    TooLong(usize),
    /// A component longer than Linux allows (`NAME_MAX`).
    #[error("a name of {0} bytes: File name too long (NAME_MAX is {NAME_MAX})")]
    NameTooLong(usize),
}

/// Linux's longest path, in bytes with its NUL: a layer path (from the root) must fit.
pub const PATH_MAX: usize = 4096;
/// Linux's longest name of one path component, in bytes.
pub const NAME_MAX: usize = 255;

/// Whether a normalized path (without its leading slash) is one Linux can create: names no
/// one can make are refused, and so implied parent directories cannot make an output grow
/// with the square of a path's depth.
fn check_lengths(p: &[u8]) -> Result<(), PathError> {
    let p = trim_dir(p);
    if let Some(c) = p.split(|&b| b == b'/').find(|c| c.len() > NAME_MAX) {
        return Err(PathError::NameTooLong(c.len()));
    }
    if p.len() + 2 > PATH_MAX {
        return Err(PathError::TooLong(p.len() + 1));
    }
    Ok(())
}

/// Returns the path as `a/b/c` (no leading or trailing slash; empty for the root).
/// Borrows when the input is already in that form, as nearly all real entries are; a
/// borrowed name may keep one trailing slash (a directory's), which [`trim_dir`] strips.
pub fn normalize(raw: &[u8]) -> Result<Cow<'_, [u8]>, PathError> {
    if is_clean(raw) {
        check_lengths(raw)?;
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
    let p = parts.join(&b'/');
    check_lengths(&p)?;
    Ok(Cow::Owned(p))
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
