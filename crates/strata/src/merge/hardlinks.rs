//! Hardlinks across the merge (OCI image-spec `layer.md` § Hardlinks): a link keeps the
//! content its target had in the link's own layer. When that target is shadowed or deleted
//! above, the first surviving alias receives the content (from a waiting link, or by reading
//! the layer again) and the others link to it; a link is only ever written after its target.

use super::{Cx, Data, LayerState, Merger, Shadow, io_err, lossy, rules, tar_err, write_header_to};
use crate::error::{Error, Result};
use crate::image::Layer;
use crate::pathname::{normalize, trim_dir};
use crate::pathtree::{EMITTED, Kind, NodeId, ROOT};
use crate::tarstream::{self, EntryType, Rewrite, TarReader};

pub(super) type InodeId = usize;

/// Header bytes a waiting link keeps whole (its PAX records and all); beyond, its main block.
const ALIAS_HEADER_MAX: usize = 8 * 1024;

/// A hardlink's shared content, seen from the layer of the link.
pub(super) enum Content {
    /// Not reached yet: it lives in a lower layer.
    Unresolved,
    /// Shadowed in the current layer, behind the reader: read the layer again at this ordinal.
    Reread(u64),
    /// Written to the output under this name; further aliases link to it.
    Emitted(Vec<u8>),
}

pub(super) struct Inode {
    pub(super) content: Content,
    /// Surviving names still to be written (their original link headers).
    pub(super) aliases: Vec<Alias>,
}

pub(super) struct Alias {
    pub(super) name: Vec<u8>,
    pub(super) raw: Vec<u8>,
}

impl Merger<'_> {
    /// A hardlink entry: it shares an inode with its target (resolved in this layer first).
    pub(super) fn link_entry(
        &mut self,
        cx: &Cx<'_, '_>,
        st: &mut LayerState,
        visible_id: Option<NodeId>,
    ) -> Result<Data> {
        let Cx {
            layer,
            layer1,
            h,
            path,
        } = *cx;
        let target = normalize(h.link).map_err(|e| Error::Entry {
            layer: layer.label(),
            path: lossy(path),
            message: format!("hardlink target: {e}"),
        })?;
        let target = trim_dir(&target).to_vec();
        if target.is_empty() {
            return Err(Error::Entry {
                layer: layer.label(),
                path: lossy(path),
                message: "hardlink to the root directory".into(),
            });
        }
        let ino = self.resolve_link(layer1, st, &target)?;
        st.links.insert(path.to_vec(), ino);
        // Links from higher layers waiting on this name share this inode.
        let id_for_pending = match visible_id {
            Some(id) => Some(id),
            None if !self.pending.is_empty() => self.tree.lookup(path),
            None => None,
        };
        if let Some(pid) = id_for_pending
            && let Some(waiting) = self.take_pending(pid, layer1)
        {
            for w in waiting {
                let aliases = std::mem::take(&mut self.inodes[w].aliases);
                for a in aliases {
                    self.add_alias(layer, ino, a)?;
                }
            }
        }
        if let Some(id) = visible_id {
            self.tree.mark_descendant(id);
            // A link's own extension records say nothing about the inode it shares (its name
            // and target are kept apart): past a few KiB only the main block is kept, so that
            // links waiting for a lower target cannot pile up megabytes of headers each.
            let raw = if h.raw.len() > ALIAS_HEADER_MAX {
                h.main().to_vec()
            } else {
                h.raw.to_vec()
            };
            let alias = Alias {
                name: path.to_vec(),
                raw,
            };
            self.add_alias(layer, ino, alias)?;
            self.tree.get_mut(id).flags |= EMITTED;
        }
        Ok(Data::Skip)
    }

    /// The inode a hardlink of this layer refers to.
    pub(super) fn resolve_link(
        &mut self,
        layer1: u16,
        st: &mut LayerState,
        target: &[u8],
    ) -> Result<InodeId> {
        if let Some(&ino) = st.links.get(target) {
            return Ok(ino);
        }
        if let Some(tid) = self.tree.lookup(target) {
            let n = self.tree.get(tid);
            if rules::link_takes_written_file(n, layer1) {
                let ino = self.new_inode(Content::Emitted(target.to_vec()));
                st.links.insert(target.to_vec(), ino);
                return Ok(ino);
            }
        }
        if let Some(s) = st.shadowed.get_mut(target) {
            return Ok(match *s {
                Shadow::Inode(i) => i,
                Shadow::Ordinal(o) => {
                    let ino = self.new_inode(Content::Reread(o));
                    *s = Shadow::Inode(ino);
                    st.rereads.push(ino);
                    ino
                }
            });
        }
        // The target lives in a lower layer.
        let mut id = ROOT;
        for comp in target.split(|&b| b == b'/') {
            id = self
                .tree
                .child_or_insert(id, comp)
                .map_err(|e| Error::Format(e.to_string()))?;
        }
        let ino = self.new_inode(Content::Unresolved);
        self.pending.entry(id).or_default().push((layer1, ino));
        Ok(ino)
    }

    pub(super) fn new_inode(&mut self, content: Content) -> InodeId {
        self.inodes.push(Inode {
            content,
            aliases: Vec::new(),
        });
        self.inodes.len() - 1
    }

    /// A surviving link name: written now if its content is out, else queued on the inode.
    pub(super) fn add_alias(&mut self, layer: &Layer, ino: InodeId, alias: Alias) -> Result<()> {
        if let Content::Emitted(name) = &self.inodes[ino].content {
            let name = name.clone();
            self.write_link(layer, &alias, &name)?;
            self.stats.entries_written += 1;
        } else {
            self.inodes[ino].aliases.push(alias);
        }
        Ok(())
    }

    pub(super) fn write_link(&mut self, layer: &Layer, alias: &Alias, target: &[u8]) -> Result<()> {
        let mut r = TarReader::new(&alias.raw[..]);
        let h = r
            .next_entry()
            .map_err(|e| tar_err(layer, e))?
            .ok_or_else(|| Error::Format("lost a hardlink header".into()))?;
        if h.kind == EntryType::HardLink {
            write_header_to(self.out, &h, &alias.name, Some(target)).map_err(|e| io_err(layer, e))
        } else {
            let rw = Rewrite {
                path: Some(&alias.name),
                link: Some(target),
                kind: Some(b'1'),
                size: Some(0),
            };
            self.out
                .write_all(&tarstream::rewrite_header(&h, &rw))
                .map_err(|e| io_err(layer, e))
        }
    }

    pub(super) fn take_pending(&mut self, id: NodeId, layer1: u16) -> Option<Vec<InodeId>> {
        if self.pending.is_empty() {
            return None;
        }
        let list = self.pending.get_mut(&id)?;
        let (higher, same): (Vec<_>, Vec<_>) =
            list.drain(..).partition(|&(origin, _)| origin > layer1);
        *list = same;
        if list.is_empty() {
            self.pending.remove(&id);
        }
        if higher.is_empty() {
            None
        } else {
            Some(higher.into_iter().map(|(_, i)| i).collect())
        }
    }

    /// An emitted file that higher-layer links wait for: they become links to it, written
    /// right after its data.
    pub(super) fn after_data_links(
        &mut self,
        waiting: Vec<InodeId>,
        name: Vec<u8>,
        size: u64,
    ) -> Data {
        let mut aliases = Vec::new();
        for &w in &waiting {
            self.inodes[w].content = Content::Emitted(name.clone());
            aliases.append(&mut self.inodes[w].aliases);
        }
        self.after_data.push((aliases, name));
        if size > 0 { Data::Copy } else { Data::Skip }
    }

    /// A link of a higher layer whose target this layer deleted (and did not recreate) points
    /// at nothing: Docker would fail to apply it.
    pub(super) fn check_deleted_link_targets(&self, layer: &Layer, layer1: u16) -> Result<()> {
        for (&id, list) in &self.pending {
            let n = self.tree.get(id);
            if n.claim == layer1
                && n.kind == Kind::Whiteout
                && list.iter().any(|&(origin, _)| origin > layer1)
            {
                let alias = list
                    .iter()
                    .flat_map(|&(_, i)| self.inodes[i].aliases.first())
                    .next()
                    .map(|a| lossy(&a.name))
                    .unwrap_or_default();
                return Err(Error::Entry {
                    layer: layer.label(),
                    path: lossy(&self.tree.path_of(id)),
                    message: format!(
                        "deleted here, but hardlink {alias} of a higher layer points at it"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Second read of a layer, for hardlinks whose target was shadowed in that same layer.
    pub(super) fn reread(&mut self, layer: &Layer, st: &LayerState) -> Result<()> {
        let mut wanted: Vec<(u64, InodeId)> = st
            .rereads
            .iter()
            .filter_map(|&i| match self.inodes[i].content {
                Content::Reread(o) if !self.inodes[i].aliases.is_empty() => Some((o, i)),
                _ => None,
            })
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        wanted.sort();
        self.stats.rereads += 1;
        let stream = self.reopen(layer)?;
        let mut rd = TarReader::new(stream).with_skipper(crate::layer::LayerStream::skip);
        let mut next = 0;
        while next < wanted.len() {
            let Some(h) = rd.next_entry().map_err(|e| tar_err(layer, e))? else {
                break;
            };
            if h.ordinal != wanted[next].0 {
                continue;
            }
            let ino = wanted[next].1;
            next += 1;
            let aliases = std::mem::take(&mut self.inodes[ino].aliases);
            let first = aliases[0].name.clone();
            self.write_content_as(layer, &h, &first)?;
            self.copy_data(&mut rd).map_err(|e| tar_err(layer, e))?;
            self.inodes[ino].content = Content::Emitted(first.clone());
            for a in aliases.into_iter().skip(1) {
                self.write_link(layer, &a, &first)?;
                self.stats.entries_written += 1;
            }
        }
        if next < wanted.len() {
            return Err(Error::Layer {
                layer: layer.label(),
                message: "changed between two reads (hardlink target vanished)".into(),
            });
        }
        Ok(())
    }

    /// Links whose target never appeared in the merged layers: on top of kept layers they may
    /// point there; otherwise the image is broken (Docker would refuse it).
    pub(super) fn finish_links(&mut self, layer: &Layer) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let mut pending: Vec<_> = pending.into_iter().collect();
        pending.sort_by_key(|(id, _)| *id); // deterministic output order
        for (id, list) in pending {
            let target = self.tree.path_of(id);
            {
                // Every link waiting on this target shares one file.
                let aliases: Vec<Alias> = list
                    .iter()
                    .flat_map(|&(_, ino)| std::mem::take(&mut self.inodes[ino].aliases))
                    .collect();
                let Some(first) = aliases.first() else {
                    continue;
                };
                let below_file = self
                    .below
                    .and_then(|b| b.lookup(&target))
                    .is_some_and(|bid| {
                        let n = self.below.map(|b| *b.get(bid));
                        n.is_some_and(|n| n.kind == Kind::NonDir && n.flags & EMITTED != 0)
                    });
                if !below_file {
                    return Err(Error::Format(format!(
                        "hardlink {} points at {}, which no lower layer has",
                        lossy(&first.name),
                        lossy(&target)
                    )));
                }
                if self.shadowed_in_result(&target) {
                    // The squashed layers replace the file this link shares: find where its
                    // content still is — another surviving name below, or the kept layer's data.
                    let first_name = first.name.clone();
                    let to = match self.copy_from_below(layer, &target, &first_name)? {
                        Some(visible) => {
                            self.write_link(layer, first, &visible)?;
                            self.stats.entries_written += 1;
                            visible
                        }
                        None => first_name,
                    };
                    for a in &aliases[1..] {
                        self.write_link(layer, a, &to)?;
                        self.stats.entries_written += 1;
                    }
                    continue;
                }
                for a in &aliases {
                    self.write_link(layer, a, &target)?;
                    self.stats.entries_written += 1;
                }
            }
        }
        if let Some(a) = self.inodes.iter().find_map(|i| i.aliases.first()) {
            return Err(Error::Format(format!(
                "hardlink {} points at a file that no lower layer has",
                lossy(&a.name)
            )));
        }
        Ok(())
    }
}
