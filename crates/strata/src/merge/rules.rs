//! The changeset rules, one small function each. Sections cited are of the OCI image-spec's
//! `layer.md`; where the spec is silent, Docker's layer apply (`pkg/archive`) is the reference,
//! checked by the end-to-end tests against `docker export`.
//!
//! `layer1` is the deciding layer's index + 1; a node's `claim` is the layer + 1 that decided
//! its path (0: none yet, so a higher number is a higher layer).

use crate::pathtree::{EMITTED, HAS_DESCENDANT, Kind, Marks};

/// Mode of a directory no layer has an entry for, as Docker's layer apply makes it
/// (`MkdirAll(parent, 0600)`; measured `drw-------` in `docker export`).
pub const IMPLIED_DIR_MODE: u32 = 0o600;

/// § Whiteouts, § Changes to Filesystem Objects: a whiteout, or a non-directory, decided at a
/// higher layer hides the whole subtree of the layers below it. A directory over a directory
/// hides nothing: the lower children stay and the directory takes the upper attributes.
pub fn hides_lower(kind: Kind, claim: u16, layer1: u16) -> bool {
    claim > layer1 && matches!(kind, Kind::NonDir | Kind::Whiteout)
}

/// § Opaque Whiteout: an opaque marker at a higher layer hides the lower-layer children of its
/// directory — not the directory itself, nor its own layer's entries, wherever it sits in the tar.
pub fn opaque_hides(opaque: u16, layer1: u16) -> bool {
    opaque > layer1
}

/// § Applying Changesets: the highest layer's entry for a path is the one that survives; a
/// whiteout of the same layer applies to lower layers only, so the entry beside it survives.
pub fn entry_visible(node: &Marks, layer1: u16, is_dir: bool) -> bool {
    // A non-directory cannot stand where a higher layer put children.
    if !is_dir && node.flags & HAS_DESCENDANT != 0 {
        return false;
    }
    match node.claim {
        // Untouched above.
        0 => true,
        // Same layer: only a whiteout came first, and it applies to lower layers only.
        c if c == layer1 => node.kind == Kind::Whiteout,
        // A higher layer decided this path.
        _ => false,
    }
}

/// § Whiteouts: a whiteout deletes a path that nothing above decided, from its layer down (a
/// directory that a higher layer's entries imply is then made afresh).
pub fn whiteout_deletes(node: &Marks) -> bool {
    node.claim == 0
}

/// § Whiteouts ("MUST only apply to resources in lower/parent layers"): a directory of this
/// layer (`.wh.X` beside a new `X/`) or of a higher one stays, but empty of what lay below.
pub fn whiteout_empties_dir(node: &Marks, layer1: u16) -> bool {
    node.kind == Kind::Dir && node.claim >= layer1 && node.opaque == 0
}

/// § Changes to Filesystem Objects: a non-directory replaces a directory and its subtree; even
/// when a higher directory shadows it, the lower layers' children of its path are gone.
pub fn replaces_lower_subtree(is_dir: bool) -> bool {
    !is_dir
}

/// § Whiteouts: `.wh.X` and a new directory `X/` in one layer — the new directory starts
/// empty of the layers below (it is opaque to them).
pub fn recreated_dir_starts_empty(node: &Marks, layer1: u16, is_dir: bool) -> bool {
    is_dir && node.claim == layer1 && node.kind == Kind::Whiteout && node.opaque == 0
}

/// § Hardlinks: a link to a file this same layer already wrote shares that written file.
/// (Any other target is resolved in this layer's shadowed files, then the layers below.)
pub fn link_takes_written_file(target: &Marks, layer1: u16) -> bool {
    target.claim == layer1 && target.kind == Kind::NonDir && target.flags & EMITTED != 0
}

/// Implied parents: a directory that deeper entries need but no layer wrote gets a header
/// with [`IMPLIED_DIR_MODE`] (Docker's layer apply creates it so).
pub fn needs_implied_dir(node: &Marks) -> bool {
    node.flags & HAS_DESCENDANT != 0 && node.flags & EMITTED == 0 && node.kind != Kind::NonDir
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(claim: u16, kind: Kind) -> Marks {
        Marks {
            claim,
            kind,
            ..Marks::default()
        }
    }

    #[test]
    fn hiding_is_by_higher_layers_only() {
        assert!(hides_lower(Kind::Whiteout, 3, 2));
        assert!(hides_lower(Kind::NonDir, 3, 2));
        assert!(
            !hides_lower(Kind::Dir, 3, 2),
            "a directory over a directory keeps children"
        );
        assert!(!hides_lower(Kind::Whiteout, 2, 2), "same layer: not below");
        assert!(opaque_hides(3, 2) && !opaque_hides(2, 2));
    }

    #[test]
    fn a_same_layer_whiteout_lets_the_entry_beside_it_survive() {
        assert!(entry_visible(&node(2, Kind::Whiteout), 2, false));
        assert!(!entry_visible(&node(3, Kind::NonDir), 2, false));
        assert!(entry_visible(&node(0, Kind::NonDir), 2, true));
        assert!(recreated_dir_starts_empty(
            &node(2, Kind::Whiteout),
            2,
            true
        ));
        assert!(!recreated_dir_starts_empty(
            &node(2, Kind::Whiteout),
            2,
            false
        ));
    }
}
