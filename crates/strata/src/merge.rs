//! The flatten engine: layers merged newest-first into one tar, so output starts before the
//! lower layers are read and nothing but a compact path index is kept.
//!
//! The rules (OCI image-spec `layer.md`, "Changesets" and "Whiteouts"), in the order a path is
//! decided — each is one small function below:
//! - a path belongs to the highest layer that has an entry or a whiteout for it (`claim`);
//! - a non-directory or a whiteout hides the whole subtree of lower layers (`hides_lower`);
//! - an opaque marker hides lower-layer children of its directory, not the directory itself
//!   nor entries of its own layer, wherever it sits in the tar;
//! - a whiteout and a new entry of the same name in one layer: the new entry stays, and a new
//!   directory then starts empty (it is opaque to the layers below);
//! - a directory over a directory keeps the lower children and takes the upper attributes;
//! - hardlinks keep the content their target had in the link's own layer: when that target is
//!   overwritten or deleted above, the first surviving alias receives the content and the
//!   others link to it; a link is only ever written after its target.

use crate::control::{Cancel, ProgressRef};
use crate::error::{Error, Result};
use crate::image::Layer;
use crate::layer::{LayerStream, Pipeline};
use crate::pathname::{normalize, split_parent, trim_dir};
use crate::pathtree::{EMITTED, HAS_DESCENDANT, Kind, NodeId, PathTree, ROOT};
use crate::tarstream::{self, EntryType, Header, Rewrite, TarError, TarReader};
use crate::whiteout::{self, Marker};
use std::collections::HashMap;
use std::io::Write;

#[derive(Default)]
pub struct MergeOptions {
    /// Check blob digests and diff_ids while reading.
    pub verify: bool,
    /// Told of every chunk of stored bytes read.
    pub progress: Option<ProgressRef>,
    /// Checked per entry and per chunk: a tripped handle ends the merge with
    /// [`Error::Cancelled`].
    pub cancel: Cancel,
}

#[derive(Debug, Default, Clone)]
pub struct MergeStats {
    pub layers: usize,
    pub entries_read: u64,
    pub entries_written: u64,
    pub paths: usize,
    pub index_bytes: usize,
    /// Layers that had to be read a second time for hardlinks whose target was shadowed.
    pub rereads: usize,
}

type InodeId = usize;

/// Mode of a directory no layer has an entry for, as Docker's layer apply makes it.
pub const IMPLIED_DIR_MODE: u32 = 0o600;

/// A hardlink's shared content, seen from the layer of the link.
enum Content {
    /// Not reached yet: it lives in a lower layer.
    Unresolved,
    /// Shadowed in the current layer, behind the reader: read the layer again at this ordinal.
    Reread(u64),
    /// Written to the output under this name; further aliases link to it.
    Emitted(Vec<u8>),
}

struct Inode {
    content: Content,
    /// Surviving names still to be written (their original link headers).
    aliases: Vec<Alias>,
}

struct Alias {
    name: Vec<u8>,
    raw: Vec<u8>,
}

/// Per-layer bookkeeping, dropped when the layer is done.
#[derive(Default)]
struct LayerState {
    /// Hardlink entries of this layer → the inode they share.
    links: HashMap<Vec<u8>, InodeId>,
    /// Regular files of this layer that were not written (shadowed), by path: their ordinal,
    /// or the inode created when a later link asked for them.
    shadowed: HashMap<Vec<u8>, Shadow>,
    rereads: Vec<InodeId>,
    /// The parent directory of the previous entry and its lookup result (entries come grouped
    /// by directory, so this skips most tree walks).
    cache_parent: Vec<u8>,
    cache_result: Option<Option<NodeId>>,
}

#[derive(Clone, Copy)]
enum Shadow {
    Ordinal(u64),
    Inode(InodeId),
}

/// What to do with an entry's data after its header has been decided.
enum Data {
    Skip,
    Copy,
}

pub struct Merger<'w> {
    tree: PathTree,
    out: &'w mut dyn Write,
    inodes: Vec<Inode>,
    /// Links waiting for a target in a lower layer: target node → (layer+1 of the link, inode).
    pending: HashMap<NodeId, Vec<(u16, InodeId)>>,
    root_emitted: bool,
    /// Decide paths but copy no data (the view of the layers a squash keeps).
    index_only: bool,
    /// Squash mode: the output is one layer that goes on top of this merged view.
    below: Option<&'w PathTree>,
    /// The layers that view was made of (bottom first), to fetch content from.
    below_layers: &'w [Layer],
    /// Links to write once the current entry's data is out: (aliases, their target).
    after_data: Vec<(Vec<Alias>, Vec<u8>)>,
    stats: MergeStats,
    cancel: Cancel,
}

/// The output failed while `layer` was being merged.
fn io_err(layer: &Layer, e: std::io::Error) -> Error {
    Error::output(format!("{}: write failed", layer.label()), e)
}

/// Reading `layer` failed — or, copying its data, writing did.
fn tar_err(layer: &Layer, e: TarError) -> Error {
    match e {
        TarError::Write(e) => io_err(layer, e),
        e => Error::Layer {
            layer: layer.label(),
            message: e.to_string(),
        },
    }
}

fn lossy(p: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(p))
}

/// A non-directory or a whiteout decided at a higher layer hides everything below it.
fn hides_lower(kind: Kind, claim: u16, layer1: u16) -> bool {
    claim > layer1 && matches!(kind, Kind::NonDir | Kind::Whiteout)
}

/// An opaque marker at a higher layer hides the lower-layer children of its directory.
fn opaque_hides(opaque: u16, layer1: u16) -> bool {
    opaque > layer1
}

/// Whether an entry at this path of this layer makes it into the output.
fn entry_visible(node: &crate::pathtree::Node, layer1: u16, is_dir: bool) -> bool {
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

impl<'w> Merger<'w> {
    pub fn new(out: &'w mut dyn Write) -> Self {
        Merger {
            tree: PathTree::new(),
            out,
            inodes: Vec::new(),
            pending: HashMap::new(),
            root_emitted: false,
            index_only: false,
            below: None,
            below_layers: &[],
            after_data: Vec::new(),
            stats: MergeStats::default(),
            cancel: Cancel::default(),
        }
    }

    /// Decide every path but copy no file data: for the merged view of kept layers.
    pub fn index_only(mut self) -> Self {
        self.index_only = true;
        self
    }

    /// Make the output a layer to apply on top of `below` (the merged view of the layers kept
    /// under a squash): deletions that hide something there stay as whiteouts or opaque
    /// markers, all others disappear; parents that exist there are not invented.
    pub fn onto(mut self, below: &'w PathTree, below_layers: &'w [Layer]) -> Self {
        self.below = Some(below);
        self.below_layers = below_layers;
        self
    }

    /// Merge `layers` (bottom first, as in the image) into the output, then write the
    /// end-of-archive marker.
    pub fn run(mut self, layers: &[Layer], opts: &MergeOptions) -> Result<MergeStats> {
        self.run_layers(layers, opts)?;
        Ok(self.stats)
    }

    /// Like `run`, returning the merged view instead (with `index_only`).
    pub fn run_view(mut self, layers: &[Layer], opts: &MergeOptions) -> Result<PathTree> {
        self.run_layers(layers, opts)?;
        Ok(self.tree)
    }

    fn run_layers(&mut self, layers: &[Layer], opts: &MergeOptions) -> Result<()> {
        self.cancel = opts.cancel.clone();
        let r = self.merge_all(layers, opts);
        // Whatever failed, a cancelled merge says so.
        match r {
            Err(_) if self.cancel.is_cancelled() => Err(Error::Cancelled),
            r => r,
        }
    }

    fn merge_all(&mut self, layers: &[Layer], opts: &MergeOptions) -> Result<()> {
        let order: Vec<&Layer> = layers.iter().rev().collect();
        let mut pipeline = Pipeline::new(
            order.clone(),
            opts.verify,
            opts.progress.clone(),
            &opts.cancel,
        );
        for (i, layer) in order.iter().enumerate() {
            let stream = pipeline.next_for(layer)?;
            if let Err(e) = self.merge_layer(layer, stream) {
                // A corrupt blob usually shows up as a parse error first: name the root cause.
                pipeline.check(i, layer)?;
                return Err(e);
            }
            pipeline.check(i, layer)?;
            self.stats.layers += 1;
        }
        if let Some(layer) = order.last() {
            self.finish(layer)?;
        } else {
            tarstream::write_trailer(self.out).map_err(|e| Error::output("writing output", e))?;
        }
        self.stats.paths = self.tree.len();
        self.stats.index_bytes = self.tree.heap_bytes();
        Ok(())
    }

    fn merge_layer(&mut self, layer: &Layer, stream: LayerStream) -> Result<()> {
        let layer1 = u16::try_from(layer.index + 1)
            .map_err(|_| Error::Format("more than 65534 layers".into()))?;
        let mut st = LayerState::default();
        let mut rd = TarReader::new(stream);
        let mut path_buf: Vec<u8> = Vec::new();
        while let Some(h) = rd.next_entry().map_err(|e| tar_err(layer, e))? {
            self.cancel.check()?;
            self.stats.entries_read += 1;
            let norm = normalize(h.path).map_err(|e| Error::Entry {
                layer: layer.label(),
                path: String::from_utf8_lossy(h.path).into_owned(),
                message: e.to_string(),
            })?;
            path_buf.clear();
            path_buf.extend_from_slice(trim_dir(&norm));
            drop(norm);
            let action = self.entry(layer, layer1, &mut st, &h, &path_buf)?;
            match action {
                Data::Skip => {}
                Data::Copy if self.index_only => {}
                Data::Copy => rd
                    .copy_data_padded(self.out)
                    .map_err(|e| tar_err(layer, e))?,
            }
            if !self.after_data.is_empty() {
                for (aliases, target) in std::mem::take(&mut self.after_data) {
                    for a in aliases {
                        self.write_link(layer, &a, &target)?;
                        self.stats.entries_written += 1;
                    }
                }
            }
        }
        // Read to the true end so the digest check runs (crane #2303).
        rd.drain().map_err(|e| tar_err(layer, e))?;
        self.check_deleted_link_targets(layer, layer1)?;
        if !st.rereads.is_empty() {
            if self.index_only {
                // No data is written: the first alias simply becomes the file.
                for &i in &st.rereads {
                    let aliases = std::mem::take(&mut self.inodes[i].aliases);
                    if let Some(first) = aliases.first() {
                        self.inodes[i].content = Content::Emitted(first.name.clone());
                    }
                }
            } else {
                self.reread(layer, &st)?;
            }
        }
        Ok(())
    }

    /// Decide one entry, write its header if it survives, and say what to do with its data.
    fn entry(
        &mut self,
        layer: &Layer,
        layer1: u16,
        st: &mut LayerState,
        h: &Header<'_>,
        path: &[u8],
    ) -> Result<Data> {
        if path.is_empty() {
            return self.root_entry(layer, h);
        }
        if whiteout::in_aufs_meta_dir(path) {
            return Ok(Data::Skip);
        }
        let (parent, base) = split_parent(path);
        let marker = whiteout::classify(base).map_err(|e| Error::Entry {
            layer: layer.label(),
            path: lossy(path),
            message: e.to_string(),
        })?;
        let parent_id = self
            .walk_parent(st, parent, layer1)
            .map_err(|e| Error::Entry {
                layer: layer.label(),
                path: lossy(path),
                message: e.to_string(),
            })?;
        match marker {
            Marker::AufsMeta => Ok(Data::Skip),
            Marker::Opaque => {
                if let Some(dir) = parent_id {
                    let n = self.tree.get_mut(dir);
                    if n.opaque == 0 {
                        n.opaque = layer1;
                    }
                }
                Ok(Data::Skip)
            }
            Marker::Whiteout(name) => {
                if let Some(pid) = parent_id {
                    self.whiteout(layer1, pid, name)?;
                }
                Ok(Data::Skip)
            }
            Marker::None => match parent_id {
                None => self.hidden_entry(layer, layer1, st, h, path, None),
                Some(pid) => {
                    let id = self
                        .tree
                        .child_or_insert(pid, base)
                        .map_err(|e| Error::Entry {
                            layer: layer.label(),
                            path: lossy(path),
                            message: e.to_string(),
                        })?;
                    self.normal_entry(layer, layer1, st, h, path, id)
                }
            },
        }
    }

    fn root_entry(&mut self, layer: &Layer, h: &Header<'_>) -> Result<Data> {
        if self.root_emitted || h.kind != EntryType::Directory {
            return Ok(Data::Skip);
        }
        self.root_emitted = true;
        self.write_header(layer, h, b"./", None)?;
        Ok(Data::Skip)
    }

    /// Walk (and create) the parent directories of an entry; `None` when a higher layer hides
    /// them. Every entry — whiteouts and shadowed ones too — makes its parents exist in its own
    /// layer (Docker `MkdirAll`s them, 0755), so the visible part of the chain is marked.
    fn walk_parent(
        &mut self,
        st: &mut LayerState,
        parent: &[u8],
        layer1: u16,
    ) -> Result<Option<NodeId>> {
        if let Some(r) = st.cache_result
            && st.cache_parent == parent
        {
            return Ok(r);
        }
        let mut id = ROOT;
        let mut result = Some(ROOT);
        let mut deepest_existing = ROOT;
        let root = self.tree.get(ROOT);
        if opaque_hides(root.opaque, layer1) {
            result = None;
        } else if !parent.is_empty() {
            for comp in parent.split(|&b| b == b'/') {
                id = self
                    .tree
                    .child_or_insert(id, comp)
                    .map_err(|e| Error::Format(e.to_string()))?;
                let n = self.tree.get(id);
                if hides_lower(n.kind, n.claim, layer1) {
                    result = None;
                    break;
                }
                deepest_existing = id;
                if opaque_hides(n.opaque, layer1) {
                    result = None;
                    break;
                }
            }
            if result.is_some() {
                result = Some(id);
            }
        }
        if deepest_existing != ROOT {
            self.tree.mark_is_dir(deepest_existing);
        }
        st.cache_parent.clear();
        st.cache_parent.extend_from_slice(parent);
        st.cache_result = Some(result);
        Ok(result)
    }

    fn whiteout(&mut self, layer1: u16, pid: NodeId, name: &[u8]) -> Result<()> {
        let id = self
            .tree
            .child_or_insert(pid, name)
            .map_err(|e| Error::Format(e.to_string()))?;
        self.delete_lower(id, layer1);
        Ok(())
    }

    /// A link of a higher layer whose target this layer deleted (and did not recreate) points
    /// at nothing: Docker would fail to apply it.
    fn check_deleted_link_targets(&self, layer: &Layer, layer1: u16) -> Result<()> {
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

    /// This layer removes the path from the layers below it (a whiteout, or a non-directory
    /// that a directory above shadows).
    fn delete_lower(&mut self, id: NodeId, layer1: u16) {
        let n = self.tree.get_mut(id);
        if n.claim == 0 {
            // Nothing above decided this path: it is deleted from here down (a directory that a
            // higher layer's entries imply is made afresh).
            n.claim = layer1;
            n.kind = Kind::Whiteout;
        } else if n.kind == Kind::Dir && n.claim >= layer1 && n.opaque == 0 {
            // A directory from this layer (`.wh.X` beside a new `X/`) or from above stays, but
            // starts empty of what lay below.
            n.opaque = layer1;
        }
    }

    fn take_pending(&mut self, id: NodeId, layer1: u16) -> Option<Vec<InodeId>> {
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

    fn normal_entry(
        &mut self,
        layer: &Layer,
        layer1: u16,
        st: &mut LayerState,
        h: &Header<'_>,
        path: &[u8],
        id: NodeId,
    ) -> Result<Data> {
        let is_dir = h.kind == EntryType::Directory;
        let node = *self.tree.get(id);
        let visible = entry_visible(&node, layer1, is_dir);
        if !visible {
            if node.claim == layer1 && node.kind != Kind::Whiteout && !is_dir {
                tracing::warn!(
                    "{}: duplicate entry {} (keeping the first)",
                    layer.label(),
                    lossy(path)
                );
            }
            if !is_dir {
                // Shadowed by a directory above, this non-directory still replaced whatever lay
                // below it: lower layers' children of this path are gone.
                self.delete_lower(id, layer1);
            }
            return self.hidden_entry(layer, layer1, st, h, path, Some(id));
        }
        // Claim the path for this layer.
        {
            let n = self.tree.get_mut(id);
            let recreated = n.claim == layer1 && n.kind == Kind::Whiteout;
            n.claim = layer1;
            n.kind = if is_dir { Kind::Dir } else { Kind::NonDir };
            if recreated && is_dir && n.opaque == 0 {
                n.opaque = layer1;
            }
        }
        if h.kind == EntryType::HardLink {
            return self.link_entry(layer, layer1, st, h, path, Some(id));
        }
        self.write_header(layer, h, path, None)?;
        self.mark_emitted(id);
        if !is_dir && let Some(waiting) = self.take_pending(id, layer1) {
            // Links from higher layers to this very file: they can point at it.
            return Ok(self.after_data_links(waiting, path.to_vec(), h.size));
        }
        if is_dir {
            if self.take_pending(id, layer1).is_some() {
                return Err(Error::Entry {
                    layer: layer.label(),
                    path: lossy(path),
                    message: "a hardlink of a higher layer points at this directory".into(),
                });
            }
            return Ok(Data::Skip);
        }
        Ok(if h.size > 0 { Data::Copy } else { Data::Skip })
    }

    /// An emitted file that higher-layer links wait for: they become links to it, written
    /// right after its data.
    fn after_data_links(&mut self, waiting: Vec<InodeId>, name: Vec<u8>, size: u64) -> Data {
        let mut aliases = Vec::new();
        for &w in &waiting {
            self.inodes[w].content = Content::Emitted(name.clone());
            aliases.append(&mut self.inodes[w].aliases);
        }
        self.after_data.push((aliases, name));
        if size > 0 { Data::Copy } else { Data::Skip }
    }

    fn mark_emitted(&mut self, id: NodeId) {
        self.tree.get_mut(id).flags |= EMITTED;
        self.tree.mark_descendant(id);
        self.stats.entries_written += 1;
    }

    /// An entry that does not survive under its own name. Its content may still be needed by
    /// hardlinks: waiting ones from higher layers get it now; later ones of this layer get it
    /// by a second read.
    fn hidden_entry(
        &mut self,
        layer: &Layer,
        layer1: u16,
        st: &mut LayerState,
        h: &Header<'_>,
        path: &[u8],
        id: Option<NodeId>,
    ) -> Result<Data> {
        if h.kind == EntryType::Directory {
            return Ok(Data::Skip);
        }
        if h.kind == EntryType::HardLink {
            return self.link_entry(layer, layer1, st, h, path, None);
        }
        let id = match id {
            Some(id) => Some(id),
            None if !self.pending.is_empty() => self.tree.lookup(path),
            None => None,
        };
        if let Some(id) = id
            && let Some(waiting) = self.take_pending(id, layer1)
        {
            let aliases: Vec<Alias> = waiting
                .iter()
                .flat_map(|&w| std::mem::take(&mut self.inodes[w].aliases))
                .collect();
            if let Some(first) = aliases.first() {
                let name = first.name.clone();
                self.write_content_as(layer, h, &name)?;
                for &w in &waiting {
                    self.inodes[w].content = Content::Emitted(name.clone());
                }
                // Later links of this layer to this path share the content just written.
                st.shadowed.insert(path.to_vec(), Shadow::Inode(waiting[0]));
                self.after_data
                    .push((aliases.into_iter().skip(1).collect(), name));
                return Ok(if h.size > 0 { Data::Copy } else { Data::Skip });
            }
        }
        st.shadowed
            .insert(path.to_vec(), Shadow::Ordinal(h.ordinal));
        Ok(Data::Skip)
    }

    fn link_entry(
        &mut self,
        layer: &Layer,
        layer1: u16,
        st: &mut LayerState,
        h: &Header<'_>,
        path: &[u8],
        visible_id: Option<NodeId>,
    ) -> Result<Data> {
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
            let alias = Alias {
                name: path.to_vec(),
                raw: h.raw.to_vec(),
            };
            self.add_alias(layer, ino, alias)?;
            self.tree.get_mut(id).flags |= EMITTED;
        }
        Ok(Data::Skip)
    }

    /// The inode a hardlink of this layer refers to.
    fn resolve_link(&mut self, layer1: u16, st: &mut LayerState, target: &[u8]) -> Result<InodeId> {
        if let Some(&ino) = st.links.get(target) {
            return Ok(ino);
        }
        if let Some(tid) = self.tree.lookup(target) {
            let n = self.tree.get(tid);
            if n.claim == layer1 && n.kind == Kind::NonDir && n.flags & EMITTED != 0 {
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

    fn new_inode(&mut self, content: Content) -> InodeId {
        self.inodes.push(Inode {
            content,
            aliases: Vec::new(),
        });
        self.inodes.len() - 1
    }

    /// A surviving link name: written now if its content is out, else queued on the inode.
    fn add_alias(&mut self, layer: &Layer, ino: InodeId, alias: Alias) -> Result<()> {
        if let Content::Emitted(name) = &self.inodes[ino].content {
            let name = name.clone();
            self.write_link(layer, &alias, &name)?;
            self.stats.entries_written += 1;
        } else {
            self.inodes[ino].aliases.push(alias);
        }
        Ok(())
    }

    fn write_link(&mut self, layer: &Layer, alias: &Alias, target: &[u8]) -> Result<()> {
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

    /// Write `h` (a file's header) under another name, as a regular entry with its data.
    fn write_content_as(&mut self, layer: &Layer, h: &Header<'_>, name: &[u8]) -> Result<()> {
        let rw = Rewrite {
            path: Some(name),
            ..Default::default()
        };
        self.out
            .write_all(&tarstream::rewrite_header(h, &rw))
            .map_err(|e| io_err(layer, e))?;
        self.stats.entries_written += 1;
        Ok(())
    }

    fn write_header(
        &mut self,
        layer: &Layer,
        h: &Header<'_>,
        name: &[u8],
        link: Option<&[u8]>,
    ) -> Result<()> {
        write_header_to(self.out, h, name, link).map_err(|e| io_err(layer, e))
    }

    /// Second read of a layer, for hardlinks whose target was shadowed in that same layer.
    fn reread(&mut self, layer: &Layer, st: &LayerState) -> Result<()> {
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
        let stream = crate::layer::open(layer, None, false, None, &self.cancel).map_err(|e| {
            Error::Layer {
                layer: layer.label(),
                message: format!("read error: {e}"),
            }
        })?;
        let mut rd = TarReader::new(stream);
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
            rd.copy_data_padded(self.out)
                .map_err(|e| tar_err(layer, e))?;
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

    fn finish(&mut self, layer: &Layer) -> Result<()> {
        self.finish_links(layer)?;
        // Parents implied by deeper entries but never given a header: Docker's layer apply
        // creates them with `MkdirAll(parent, 0600)` (measured: drw------- in `docker export`).
        // On top of kept layers, a parent that exists there is left alone.
        let ids: Vec<NodeId> = self.tree.ids().collect();
        for &id in &ids {
            let n = *self.tree.get(id);
            if n.flags & HAS_DESCENDANT != 0 && n.flags & EMITTED == 0 && n.kind != Kind::NonDir {
                let p = self.tree.path_of(id);
                if n.kind != Kind::Whiteout && self.dir_below(&p) && !self.ancestor_replaced(&p) {
                    continue;
                }
                let mut p = p;
                p.push(b'/');
                self.out
                    .write_all(&tarstream::directory_header(&p, IMPLIED_DIR_MODE))
                    .map_err(|e| io_err(layer, e))?;
                self.stats.entries_written += 1;
            }
        }
        if self.below.is_some() {
            self.write_deletions(layer, &ids)?;
        }
        tarstream::write_trailer(self.out).map_err(|e| io_err(layer, e))?;
        Ok(())
    }

    /// Links whose target never appeared in the merged layers: on top of kept layers they may
    /// point there; otherwise the image is broken (Docker would refuse it).
    fn finish_links(&mut self, layer: &Layer) -> Result<()> {
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

    /// Write the file that `target` is in the view below, under `name`: find the kept layer that
    /// provides it and read that layer again. When that entry is a hardlink whose own target
    /// survives in the result, nothing is copied: `Some(that path)` is returned to link to.
    fn copy_from_below(
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
            let stream = crate::layer::open(src, None, false, None, &self.cancel).map_err(|e| {
                Error::Layer {
                    layer: src.label(),
                    message: format!("read error: {e}"),
                }
            })?;
            let mut rd = TarReader::new(stream);
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
                rd.copy_data_padded(self.out).map_err(|e| tar_err(src, e))?;
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
    fn shadowed_in_result(&self, path: &[u8]) -> bool {
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
    fn ancestor_replaced(&self, path: &[u8]) -> bool {
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
    fn dir_below(&self, path: &[u8]) -> bool {
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
    fn write_deletions(&mut self, layer: &Layer, ids: &[NodeId]) -> Result<()> {
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

/// Write an entry's header under `name` (normalized, no trailing slash): the original bytes
/// when nothing changes, a rewritten header otherwise.
fn write_header_to(
    out: &mut dyn Write,
    h: &Header<'_>,
    name: &[u8],
    link: Option<&[u8]>,
) -> std::io::Result<()> {
    let is_dir = h.kind == EntryType::Directory;
    let same_name = if name == b"./" {
        h.path == b"./"
    } else {
        trim_dir(h.path) == name && (is_dir || !h.path.ends_with(b"/"))
    };
    let same_link = link.is_none_or(|l| l == h.link);
    if same_name && same_link {
        return out.write_all(h.raw);
    }
    let mut full = name.to_vec();
    if is_dir && !full.ends_with(b"/") {
        full.push(b'/');
    }
    let rw = Rewrite {
        path: Some(&full),
        link,
        ..Default::default()
    };
    out.write_all(&tarstream::rewrite_header(h, &rw))
}

/// Flatten an image's layers (bottom first) into `out`.
pub fn flatten(layers: &[Layer], out: &mut dyn Write, opts: &MergeOptions) -> Result<MergeStats> {
    Merger::new(out).run(layers, opts)
}
