//! Squash: the merged layers written as one layer to go on top of the layers kept below it.
//! Deletions that hide something kept stay (as whiteouts or opaque markers); parents that exist
//! below are not invented; hardlinks into kept layers get their content from there.

use super::{Merger, io_err, lossy, tar_err};
use crate::error::{Error, Result};
use crate::image::Layer;
use crate::pathname::{normalize, split_parent, trim_dir};
use crate::pathtree::{EMITTED, HAS_DESCENDANT, Kind, NodeId, PathTree, ROOT};
use crate::tarstream::{self, EntryType, TarReader};
use crate::whiteout;

impl<'w> Merger<'w> {
    /// Make the output a layer to apply on top of `below` (the merged view of the layers kept
    /// under a squash): deletions that hide something there stay as whiteouts or opaque
    /// markers, all others disappear; parents that exist there are not invented.
    pub fn onto(mut self, below: &'w PathTree, below_layers: &'w [Layer]) -> Self {
        self.below = Some(below);
        self.below_layers = below_layers;
        self
    }

    /// Write the file that `target` is in the view below, under `name`: find the kept layer that
    /// provides it and read that layer again. When that entry is a hardlink whose own target
    /// survives in the result, nothing is copied: `Some(that path)` is returned to link to.
    pub(super) fn copy_from_below(
        &mut self,
        layer: &Layer,
        target: &[u8],
        name: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let (Some(below), layers) = (self.below, self.below_layers) else {
            return Err(Error::Format("no kept layers to copy from".into()));
        };
        let mut want = target.to_vec();
        // The layer to look in: the one that provides the path in the view below; after
        // following a hardlink, the link's own layer first, then the ones under it.
        let claim = below
            .lookup(&want)
            .map(|id| below.get(id).claim)
            .unwrap_or(0);
        let mut at = claim.checked_sub(1).map(usize::from);
        let mut steps = 0;
        while let Some(i) = at {
            steps += 1;
            let Some(src) = layers.get(i).filter(|_| steps <= 64) else {
                break;
            };
            let stream = self.reopen(src)?;
            let mut rd = TarReader::new(stream).with_skipper(crate::layer::LayerStream::skip);
            let mut next: Option<Vec<u8>> = None;
            let mut found = false;
            while let Some(h) = rd.next_entry().map_err(|e| tar_err(src, e))? {
                let Ok(p) = normalize(h.path) else { continue };
                if trim_dir(&p) != want.as_slice() {
                    continue;
                }
                found = true;
                if h.kind == EntryType::HardLink {
                    next = normalize(h.link).ok().map(|l| trim_dir(&l).to_vec());
                    break;
                }
                self.write_content_as(layer, &h, name)?;
                self.copy_data(&mut rd).map_err(|e| tar_err(src, e))?;
                return Ok(None);
            }
            match next {
                Some(n) => {
                    // Link to that name if it still holds this very file in the result.
                    let same_version = below.lookup(&n).is_some_and(|id| {
                        let bn = below.get(id);
                        usize::from(bn.claim) == i + 1
                            && bn.kind == Kind::NonDir
                            && bn.flags & EMITTED != 0
                    });
                    if same_version && !self.shadowed_in_result(&n) {
                        return Ok(Some(n));
                    }
                    want = n;
                    at = Some(i);
                }
                None if !found => at = i.checked_sub(1),
                None => break,
            }
        }
        Err(Error::Format(format!(
            "hardlink {} points at {}, which the kept layers do not hold",
            lossy(name),
            lossy(target)
        )))
    }

    /// Whether the merged layers replace or delete `path` (or an ancestor of it).
    pub(super) fn shadowed_in_result(&self, path: &[u8]) -> bool {
        let mut id = ROOT;
        let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        for (i, comp) in comps.iter().enumerate() {
            let n = self.tree.get(id);
            if n.opaque != 0 {
                return true;
            }
            let Some(next) = self.tree.child(id, comp) else {
                return false;
            };
            id = next;
            let n = self.tree.get(id);
            let last = i + 1 == comps.len();
            if n.claim != 0 && (last || matches!(n.kind, Kind::NonDir | Kind::Whiteout)) {
                return true;
            }
            if last && n.flags & HAS_DESCENDANT != 0 {
                return true; // entries were put under it: it is a directory now
            }
        }
        false
    }

    /// Whether the merged layers delete, replace or make opaque a proper ancestor of `path`
    /// (so what lies there below is gone).
    pub(super) fn ancestor_replaced(&self, path: &[u8]) -> bool {
        let mut id = ROOT;
        let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        for comp in &comps[..comps.len().saturating_sub(1)] {
            if self.tree.get(id).opaque != 0 {
                return true;
            }
            let Some(next) = self.tree.child(id, comp) else {
                return false;
            };
            id = next;
            let n = self.tree.get(id);
            if n.claim != 0 && matches!(n.kind, Kind::NonDir | Kind::Whiteout) {
                return true;
            }
        }
        self.tree.get(id).opaque != 0
    }

    /// In the view below (squash mode): is the path a directory there?
    pub(super) fn dir_below(&self, path: &[u8]) -> bool {
        self.below
            .and_then(|b| {
                b.lookup(path).map(|id| {
                    let n = b.get(id);
                    n.flags & HAS_DESCENDANT != 0 || (n.kind == Kind::Dir && n.flags & EMITTED != 0)
                })
            })
            .unwrap_or(false)
    }

    /// Squash mode: the deletions of the merged layers that still hide something below, as
    /// whiteouts and opaque markers (after every other entry; both apply to lower layers
    /// wherever they sit).
    pub(super) fn write_deletions(&mut self, layer: &Layer, ids: &[NodeId]) -> Result<()> {
        let Some(below) = self.below else {
            return Ok(());
        };
        let mut gone: std::collections::HashSet<NodeId> = std::collections::HashSet::new();
        let mut entries: Vec<Vec<u8>> = Vec::new();
        // The root can be made opaque too.
        let root = *self.tree.get(ROOT);
        if root.opaque != 0 && below.get(ROOT).flags & HAS_DESCENDANT != 0 {
            entries.push(whiteout::OPAQUE.to_vec());
        }
        for &id in ids {
            let parent = self.tree.parent(id);
            if gone.contains(&parent) {
                gone.insert(id);
                continue;
            }
            let n = *self.tree.get(id);
            if n.claim == 0 && n.opaque == 0 {
                continue;
            }
            let path = self.tree.path_of(id);
            let Some(bid) = below.lookup(&path) else {
                continue;
            };
            let bn = *below.get(bid);
            if bn.flags & (EMITTED | HAS_DESCENDANT) == 0 {
                continue;
            }
            // In the result as a directory: written from a layer, or implied by entries below it.
            let dir_in_result = (n.kind == Kind::Dir && n.flags & EMITTED != 0)
                || (n.kind != Kind::NonDir && n.flags & HAS_DESCENDANT != 0);
            if n.kind == Kind::Whiteout && n.flags & HAS_DESCENDANT == 0 {
                // Deleted here and not recreated: one whiteout hides the whole subtree below.
                let (dir, base) = split_parent(&path);
                let mut w = dir.to_vec();
                if !w.is_empty() {
                    w.push(b'/');
                }
                w.extend_from_slice(whiteout::PREFIX);
                w.extend_from_slice(base);
                entries.push(w);
                gone.insert(id);
            } else if dir_in_result
                && (n.opaque != 0 || n.kind == Kind::Whiteout)
                && bn.flags & HAS_DESCENDANT != 0
            {
                // Recreated (or made opaque) here: hide what lay in it below.
                let mut w = path.clone();
                w.push(b'/');
                w.extend_from_slice(whiteout::OPAQUE);
                entries.push(w);
            }
        }
        for e in entries {
            self.out
                .write_all(&tarstream::file_header(&e, 0o644, 0))
                .map_err(|e| io_err(layer, e))?;
            self.stats.entries_written += 1;
        }
        Ok(())
    }
}
