//! The flatten engine: layers merged newest-first into one tar, so output starts before the
//! lower layers are read and nothing but a compact path index is kept.
//!
//! A path belongs to the highest layer that has an entry or a whiteout for it: its claim in
//! the path tree. The changeset rules (OCI image-spec `layer.md`) are each one small function
//! in [`rules`]: a non-directory or whiteout hides the subtree below it (`hides_lower`); an
//! opaque marker hides lower-layer children (`opaque_hides`); which entry survives
//! (`entry_visible`); what a whiteout does to lower layers (`whiteout_deletes`,
//! `whiteout_empties_dir`); a non-directory replacing a directory (`replaces_lower_subtree`);
//! `.wh.X` beside a new `X/` (`recreated_dir_starts_empty`); hardlinks (`link_takes_written_file`,
//! and `hardlinks.rs` for links whose target is shadowed or deleted); implied parents
//! (`needs_implied_dir`, [`IMPLIED_DIR_MODE`]). Squash's output on top of kept layers is
//! `onto.rs`.

use crate::control::{Cancel, ProgressRef};
use crate::error::{Error, Result};
use crate::image::Layer;
use crate::layer::{LayerStream, Pipeline};
use crate::pathname::{normalize, split_parent, trim_dir};
use crate::pathtree::{EMITTED, Kind, NodeId, PathTree, ROOT};
use crate::tarstream::{self, EntryType, Header, Rewrite, TarError, TarReader};
use crate::whiteout::{self, Marker};
use hardlinks::{Alias, Content, Inode, InodeId};
use std::collections::HashMap;
use std::io::Write;

mod hardlinks;
mod onto;
pub mod rules;

/// How a merge reads its layers.
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

/// What a merge did.
#[derive(Debug, Default, Clone)]
pub struct MergeStats {
    /// Layers merged.
    pub layers: usize,
    /// Tar entries read, over all layers.
    pub entries_read: u64,
    /// Entries written to the output.
    pub entries_written: u64,
    /// Nodes in the path index at the end (the root included).
    pub paths: usize,
    /// Approximate heap bytes the path index held.
    pub index_bytes: usize,
    /// Layers that had to be read a second time for hardlinks whose target was shadowed.
    pub rereads: usize,
}

pub use rules::IMPLIED_DIR_MODE;

/// Per-layer bookkeeping, dropped when the layer is done.
#[derive(Default)]
pub(super) struct LayerState {
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
pub(super) enum Shadow {
    Ordinal(u64),
    Inode(InodeId),
}

/// One entry being decided, and where it is: what the entry methods share.
#[derive(Clone, Copy)]
struct Cx<'a, 'h> {
    layer: &'a Layer,
    /// The layer's index + 1 (0 means "no layer" in the path tree's claims).
    layer1: u16,
    h: &'a Header<'h>,
    /// The normalized path, without `./` or a trailing slash.
    path: &'a [u8],
}

/// What to do with an entry's data after its header has been decided.
pub(super) enum Data {
    Skip,
    Copy,
}

/// The merge of layers into one tar written to `out`, newest layer first; set up with
/// [`Merger::index_only`] or `Merger::onto`, then [`Merger::run`].
pub struct Merger<'w> {
    tree: PathTree,
    out: &'w mut dyn Write,
    inodes: Vec<Inode>,
    /// Links waiting for a target in a lower layer: target node → (layer+1 of the link, inode).
    pending: HashMap<NodeId, Vec<(u16, InodeId)>>,
    root_emitted: bool,
    /// Decide paths but copy no data (the view of the layers a squash keeps).
    index_only: bool,
    /// Planning: write every header but no data, counting the data bytes the output would
    /// carry here instead — the exact size of the tar, from the headers alone.
    planned: Option<u64>,
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

impl<'w> Merger<'w> {
    /// A merge writing to `out`.
    pub fn new(out: &'w mut dyn Write) -> Self {
        Merger {
            tree: PathTree::new(),
            out,
            inodes: Vec::new(),
            pending: HashMap::new(),
            root_emitted: false,
            index_only: false,
            planned: None,
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

    /// Plan instead of merging: the same headers are written, but no data — layers are read
    /// for their headers only (data seeked past where they are local uncompressed files), and
    /// [`Merger::run_plan`] returns the data bytes the real merge would write.
    pub fn planning(mut self) -> Self {
        self.planned = Some(0);
        self
    }

    /// Plan `layers` (with [`Merger::planning`]): the data bytes, padded, that the merge would
    /// write besides what went to the output (headers, trailer).
    pub fn run_plan(mut self, layers: &[Layer], opts: &MergeOptions) -> Result<u64> {
        self.run_layers(layers, opts, None)?;
        self.planned
            .ok_or_else(|| Error::Format("run_plan needs a planning merger".into()))
    }

    /// Merge `layers` (bottom first, as in the image) into the output, then write the
    /// end-of-archive marker.
    pub fn run(mut self, layers: &[Layer], opts: &MergeOptions) -> Result<MergeStats> {
        self.run_layers(layers, opts, None)?;
        Ok(self.stats)
    }

    /// Like `run`, reading through `pipeline` — made beforehand by [`Merger::pipeline`], so
    /// that its verifiers were hashing the layers already (during a plan, say).
    pub fn run_with(
        mut self,
        pipeline: Pipeline<'_>,
        layers: &[Layer],
        opts: &MergeOptions,
    ) -> Result<MergeStats> {
        self.run_layers(layers, opts, Some(pipeline))?;
        Ok(self.stats)
    }

    /// The pipeline a merge of `layers` reads them through (newest first), started now: its
    /// blob checks begin at once.
    pub fn pipeline<'l>(layers: &'l [Layer], opts: &MergeOptions) -> Pipeline<'l> {
        Pipeline::new(
            layers.iter().rev().collect(),
            opts.verify,
            opts.progress.clone(),
            &opts.cancel,
        )
    }

    /// Like `run`, returning the merged view instead (with `index_only`).
    pub fn run_view(mut self, layers: &[Layer], opts: &MergeOptions) -> Result<PathTree> {
        self.run_layers(layers, opts, None)?;
        Ok(self.tree)
    }

    fn run_layers(
        &mut self,
        layers: &[Layer],
        opts: &MergeOptions,
        pipeline: Option<Pipeline<'_>>,
    ) -> Result<()> {
        self.cancel = opts.cancel.clone();
        let r = self.merge_all(layers, opts, pipeline);
        // Whatever failed, a cancelled merge says so.
        match r {
            Err(_) if self.cancel.is_cancelled() => Err(Error::Cancelled),
            r => r,
        }
    }

    fn merge_all(
        &mut self,
        layers: &[Layer],
        opts: &MergeOptions,
        given: Option<Pipeline<'_>>,
    ) -> Result<()> {
        let order: Vec<&Layer> = layers.iter().rev().collect();
        // A plan reads headers, one layer after the other; the merge after it verifies.
        let mut pipeline = match given {
            Some(p) => Some(p),
            None if self.planned.is_none() => Some(Merger::pipeline(layers, opts)),
            None => None,
        };
        for (i, layer) in order.iter().enumerate() {
            let Some(p) = pipeline.as_mut() else {
                let stream = crate::layer::open_headers(layer, opts.verify, &opts.cancel)?;
                self.merge_layer(layer, stream, None)?;
                self.stats.layers += 1;
                continue;
            };
            let t = std::time::Instant::now();
            let stream = p.next_for(layer)?;
            let r = self.merge_layer(layer, stream, Some(p));
            tracing::debug!("{}: merged in {:?}", layer.label(), t.elapsed());
            if let Err(e) = r {
                // A corrupt blob usually shows up as a parse error first: name the root cause.
                p.check(i, layer)?;
                return Err(e);
            }
            p.check(i, layer)?;
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

    fn merge_layer(
        &mut self,
        layer: &Layer,
        stream: LayerStream,
        mut pipeline: Option<&mut Pipeline<'_>>,
    ) -> Result<()> {
        let layer1 = u16::try_from(layer.index + 1)
            .map_err(|_| Error::Format("more than 65534 layers".into()))?;
        let mut st = LayerState::default();
        let mut rd = TarReader::new(stream).with_skipper(LayerStream::skip);
        let mut path_buf: Vec<u8> = Vec::new();
        while let Some(h) = rd.next_entry().map_err(|e| tar_err(layer, e))? {
            self.cancel.check()?;
            self.stats.entries_read += 1;
            // A blob known to be corrupt (any layer, checked in the background) ends the output
            // now rather than after more of it is written.
            if self.stats.entries_read.is_multiple_of(256)
                && let Some(p) = pipeline.as_mut()
            {
                p.failed_check()?;
            }
            let norm = normalize(h.path).map_err(|e| Error::Entry {
                layer: layer.label(),
                path: String::from_utf8_lossy(h.path).into_owned(),
                message: e.to_string(),
            })?;
            path_buf.clear();
            path_buf.extend_from_slice(trim_dir(&norm));
            drop(norm);
            let cx = Cx {
                layer,
                layer1,
                h: &h,
                path: &path_buf,
            };
            let action = self.entry(&cx, &mut st)?;
            match action {
                Data::Skip => {}
                Data::Copy if self.index_only => {}
                Data::Copy => self.copy_data(&mut rd).map_err(|e| tar_err(layer, e))?,
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
    fn entry(&mut self, cx: &Cx<'_, '_>, st: &mut LayerState) -> Result<Data> {
        let Cx {
            layer,
            layer1,
            h,
            path,
        } = *cx;
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
                None => self.hidden_entry(cx, st, None),
                Some(pid) => {
                    let id = self
                        .tree
                        .child_or_insert(pid, base)
                        .map_err(|e| Error::Entry {
                            layer: layer.label(),
                            path: lossy(path),
                            message: e.to_string(),
                        })?;
                    self.normal_entry(cx, st, id)
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
        if rules::opaque_hides(root.opaque, layer1) {
            result = None;
        } else if !parent.is_empty() {
            for comp in parent.split(|&b| b == b'/') {
                id = self
                    .tree
                    .child_or_insert(id, comp)
                    .map_err(|e| Error::Format(e.to_string()))?;
                let n = self.tree.get(id);
                if rules::hides_lower(n.kind, n.claim, layer1) {
                    result = None;
                    break;
                }
                deepest_existing = id;
                if rules::opaque_hides(n.opaque, layer1) {
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

    /// This layer removes the path from the layers below it (a whiteout, or a non-directory
    /// that a directory above shadows).
    fn delete_lower(&mut self, id: NodeId, layer1: u16) {
        let n = self.tree.get_mut(id);
        if rules::whiteout_deletes(n) {
            n.claim = layer1;
            n.kind = Kind::Whiteout;
        } else if rules::whiteout_empties_dir(n, layer1) {
            n.opaque = layer1;
        }
    }

    /// An entry with a place in the tree: written if it survives, else handled as hidden.
    fn normal_entry(&mut self, cx: &Cx<'_, '_>, st: &mut LayerState, id: NodeId) -> Result<Data> {
        let Cx {
            layer,
            layer1,
            h,
            path,
        } = *cx;
        let is_dir = h.kind == EntryType::Directory;
        let node = *self.tree.get(id);
        let visible = rules::entry_visible(&node, layer1, is_dir);
        if !visible {
            if node.claim == layer1 && node.kind != Kind::Whiteout && !is_dir {
                tracing::warn!(
                    "{}: duplicate entry {} (keeping the first)",
                    layer.label(),
                    lossy(path)
                );
            }
            if rules::replaces_lower_subtree(is_dir) {
                // Shadowed by a directory above, this non-directory still replaced whatever lay
                // below it: lower layers' children of this path are gone.
                self.delete_lower(id, layer1);
            }
            return self.hidden_entry(cx, st, Some(id));
        }
        // Claim the path for this layer.
        {
            let n = self.tree.get_mut(id);
            let starts_empty = rules::recreated_dir_starts_empty(n, layer1, is_dir);
            n.claim = layer1;
            n.kind = if is_dir { Kind::Dir } else { Kind::NonDir };
            if starts_empty {
                n.opaque = layer1;
            }
        }
        if h.kind == EntryType::HardLink {
            return self.link_entry(cx, st, Some(id));
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

    /// The current entry's data, padded, into the output — or, planning, only counted and
    /// skipped.
    fn copy_data(&mut self, rd: &mut TarReader<LayerStream>) -> std::result::Result<(), TarError> {
        match &mut self.planned {
            Some(n) => {
                *n = n.checked_add(rd.data_len_padded()).ok_or_else(|| {
                    TarError::Unsupported("entry sizes add up past 2^64 bytes".into())
                })?;
                rd.skip_data()
            }
            None => rd.copy_data_padded(self.out),
        }
    }

    /// `layer` opened again (a hardlink's content, a kept layer's file): for its headers only
    /// when planning.
    fn reopen(&self, layer: &Layer) -> Result<LayerStream> {
        if self.planned.is_some() {
            return crate::layer::open_headers(layer, false, &self.cancel);
        }
        crate::layer::open(layer, None, false, None, &self.cancel).map_err(|e| Error::Layer {
            layer: layer.label(),
            message: format!("read error: {e}"),
        })
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
        cx: &Cx<'_, '_>,
        st: &mut LayerState,
        id: Option<NodeId>,
    ) -> Result<Data> {
        let Cx {
            layer,
            layer1,
            h,
            path,
        } = *cx;
        if h.kind == EntryType::Directory {
            return Ok(Data::Skip);
        }
        if h.kind == EntryType::HardLink {
            return self.link_entry(cx, st, None);
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

    fn finish(&mut self, layer: &Layer) -> Result<()> {
        self.finish_links(layer)?;
        // Parents implied by deeper entries but never given a header: Docker's layer apply
        // creates them with `MkdirAll(parent, 0600)` (measured: drw------- in `docker export`).
        // On top of kept layers, a parent that exists there is left alone.
        let ids: Vec<NodeId> = self.tree.ids().collect();
        for &id in &ids {
            let n = *self.tree.get(id);
            if rules::needs_implied_dir(&n) {
                let p = self.tree.path_of(id);
                if n.kind != Kind::Whiteout && self.dir_below(&p) && !self.ancestor_replaced(&p) {
                    continue;
                }
                let mut p = p;
                p.push(b'/');
                self.out
                    .write_all(&tarstream::directory_header(&p, rules::IMPLIED_DIR_MODE))
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
