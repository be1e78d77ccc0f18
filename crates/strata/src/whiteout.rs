//! The OCI whiteout names (image-spec `layer.md`, "Whiteouts"), decided on the basename only.
//!
//! - `.wh.NAME` deletes NAME (and its subtree) from the layers below.
//! - `.wh..wh..opq` makes its directory opaque: every lower-layer child is hidden.
//! - other `.wh..wh.*` names are AUFS bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`): dropped.
//!
//! `my.wh.file` is an ordinary name: the prefix must start the basename (docker-squash matched
//! it anywhere). A bare `.wh.` names nothing and is an error (image-spec #1301).

/// The prefix of a whiteout's basename.
pub const PREFIX: &[u8] = b".wh.";
/// The basename of an opaque-directory marker.
pub const OPAQUE: &[u8] = b".wh..wh..opq";
/// The prefix of AUFS metadata names (and of [`OPAQUE`]).
pub const META_PREFIX: &[u8] = b".wh..wh.";

/// What a basename means to the merge.
#[derive(Debug, PartialEq, Eq)]
pub enum Marker<'a> {
    /// An ordinary entry.
    None,
    /// Deletes this sibling name from lower layers.
    Whiteout(&'a [u8]),
    /// Hides all lower-layer children of the containing directory.
    Opaque,
    /// AUFS metadata, never part of the filesystem.
    AufsMeta,
}

/// A whiteout name that cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WhiteoutError {
    /// `.wh.`, `.wh..` or `.wh...`: the prefix names no file (the basename, lossily as UTF-8).
    #[error("invalid whiteout {0:?}: it names no file")]
    Empty(String),
}

/// What `basename` is: an ordinary name, a whiteout (with the name it deletes), an opaque
/// marker or AUFS metadata.
pub fn classify(basename: &[u8]) -> Result<Marker<'_>, WhiteoutError> {
    if !basename.starts_with(PREFIX) {
        return Ok(Marker::None);
    }
    if basename == OPAQUE {
        return Ok(Marker::Opaque);
    }
    if basename.starts_with(META_PREFIX) {
        return Ok(Marker::AufsMeta);
    }
    let target = &basename[PREFIX.len()..];
    if target.is_empty() || target == b"." || target == b".." {
        return Err(WhiteoutError::Empty(
            String::from_utf8_lossy(basename).into_owned(),
        ));
    }
    Ok(Marker::Whiteout(target))
}

/// Whether a normalized path lies inside an AUFS metadata directory at the root
/// (`.wh..wh.plnk/…`): such entries are bookkeeping too, not only the directory itself.
pub fn in_aufs_meta_dir(path: &[u8]) -> bool {
    match path.iter().position(|&b| b == b'/') {
        Some(i) => path[..i].starts_with(META_PREFIX),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_applies_to_basename_start_only() {
        assert_eq!(classify(b"my.wh.file"), Ok(Marker::None));
        assert_eq!(classify(b"file.wh."), Ok(Marker::None));
        assert_eq!(classify(b".wh.file"), Ok(Marker::Whiteout(b"file")));
    }

    #[test]
    fn opaque_and_aufs_metadata() {
        assert_eq!(classify(b".wh..wh..opq"), Ok(Marker::Opaque));
        assert_eq!(classify(b".wh..wh.plnk"), Ok(Marker::AufsMeta));
        assert_eq!(classify(b".wh..wh.aufs"), Ok(Marker::AufsMeta));
    }

    #[test]
    fn aufs_meta_dirs_cover_their_contents() {
        assert!(in_aufs_meta_dir(b".wh..wh.plnk/123.456"));
        assert!(!in_aufs_meta_dir(b".wh..wh.plnk"));
        assert!(!in_aufs_meta_dir(b"usr/.wh..wh.plnk/x"));
    }

    #[test]
    fn bare_whiteout_is_an_error() {
        assert!(classify(b".wh.").is_err());
        assert!(classify(b".wh..").is_err());
    }
}
