//! The bottom-up walk behind `diff` and `waste`: each layer's entries applied to a path index,
//! reporting every creation, change and deletion — including what a whiteout, an opaque marker
//! or a directory replaced by a non-directory takes along. O(total entries): a deletion visits
//! only the subtree it removes.
//!
//! Memory is what a big image needs most here, so the index is compact: paths live in the
//! merge's [`PathTree`] (16 bytes a node plus the component name), with child links, and the
//! state of each path is a 56-byte [`State`] in a vector indexed by node — about 90 bytes per
//! path in all, where a map of path strings to states costs 200+.

use super::{Cache, Item, each_entry};
use crate::error::{Error, Result};
use crate::image::Layer;
use crate::pathtree::{NodeId, PathTree, ROOT, grow};

/// Entry types as the walk keeps them (a hardlink is the `File` it shares).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    Other,
}

impl Kind {
    pub fn parse(k: &str) -> Kind {
        match k {
            "file" | "hardlink" => Kind::File,
            "dir" => Kind::Dir,
            "symlink" => Kind::Symlink,
            "char" => Kind::Char,
            "block" => Kind::Block,
            "fifo" => Kind::Fifo,
            _ => Kind::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Char => "char",
            Kind::Block => "block",
            Kind::Fifo => "fifo",
            Kind::Other => "other",
        }
    }
}

/// A path as it stands after some layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub size: u64,
    /// Fingerprint (low 64 bits of xxh3-128) of a regular file's content.
    pub content: Option<u64>,
    pub link: Option<Box<str>>,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// The layer that wrote this version.
    pub layer: u16,
    pub kind: Kind,
    /// A hardlink: its bytes belong to the file it shares, not counted again.
    pub hardlink: bool,
}

/// Every path any layer named, as a tree with child links. Shared by the walks of two images
/// (`diff A B`), so the same path is the same node in both.
pub struct Paths {
    tree: PathTree,
    /// (first child, next sibling) per node; 0 = none (the root is nobody's child).
    links: Vec<(NodeId, NodeId)>,
}

impl Default for Paths {
    fn default() -> Self {
        Self::new()
    }
}

impl Paths {
    pub fn new() -> Self {
        Paths {
            tree: PathTree::new(),
            links: vec![(0, 0)],
        }
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    pub fn lookup(&self, path: &[u8]) -> Option<NodeId> {
        self.tree.lookup(path)
    }

    /// The path of a node, no leading slash.
    pub fn path_of(&self, id: NodeId) -> Vec<u8> {
        self.tree.path_of(id)
    }

    fn insert(&mut self, path: &[u8]) -> Result<NodeId> {
        let mut id = ROOT;
        if path.is_empty() {
            // The root itself (an opaque marker at the top).
            return Ok(ROOT);
        }
        for comp in path.split(|&b| b == b'/') {
            let before = self.tree.len();
            let child = self
                .tree
                .child_or_insert(id, comp)
                .map_err(|e| Error::Format(format!("/{}: {e}", String::from_utf8_lossy(path))))?;
            if self.tree.len() > before {
                let first = self.links[id as usize].0;
                grow(&mut self.links, 1);
                self.links.push((0, first));
                self.links[id as usize].0 = child;
            }
            id = child;
        }
        Ok(id)
    }
}

/// A node in an event, with the tree to name it.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    pub id: NodeId,
    pub paths: &'a Paths,
}

impl Node<'_> {
    pub fn path(&self) -> Vec<u8> {
        self.paths.path_of(self.id)
    }
}

/// What applying one entry did to the tree.
pub enum Event<'a> {
    Created(Node<'a>, &'a State),
    /// (path, what was there, what is there now)
    Changed(Node<'a>, &'a State, &'a State),
    /// (path, what was there) — deleted by a whiteout, an opaque marker, or a directory
    /// replaced by a non-directory.
    Deleted(Node<'a>, &'a State),
    /// Every change of this layer has been reported.
    LayerDone(usize, &'a Paths),
}

/// The state of every path of one image, by node.
#[derive(Clone, Default)]
pub struct Walker {
    states: Vec<Option<State>>,
    /// Hardlink groups: the group of each node that shares its inode, and each group's number
    /// of live paths — so the data of a file counts as gone only with its last path.
    groups: hashbrown::HashMap<NodeId, u32>,
    live: Vec<u32>,
}

impl Walker {
    pub fn new() -> Self {
        Walker::default()
    }

    pub fn state(&self, id: NodeId) -> Option<&State> {
        self.states.get(id as usize).and_then(Option::as_ref)
    }

    fn slot(&mut self, id: NodeId) -> &mut Option<State> {
        let i = id as usize;
        if self.states.len() <= i {
            let more = i + 1 - self.states.len();
            grow(&mut self.states, more);
            self.states.resize(i + 1, None);
        }
        &mut self.states[i]
    }

    /// Apply `layers` (bottom first), calling `on(layer index, event)` for each change.
    pub fn walk(
        &mut self,
        paths: &mut Paths,
        layers: &[&Layer],
        verify: bool,
        cache: &Cache,
        on: &mut dyn FnMut(usize, Event<'_>),
    ) -> Result<()> {
        // Whiteouts and opaque markers touch lower layers only, wherever they sit in the tar:
        // applied when the layer is done (a hardlink may still name what a whiteout removes).
        if layers.iter().any(|l| l.index > u16::MAX as usize) {
            return Err(Error::Format(format!(
                "more than {} layers: too many to walk",
                u16::MAX as usize + 1
            )));
        }
        let mut whiteouts: Vec<NodeId> = Vec::new();
        let mut opaque: Vec<NodeId> = Vec::new();
        each_entry(layers, verify, cache, &mut |item| {
            match item {
                Item::Start(_) => {}
                Item::End(l) => {
                    for w in whiteouts.drain(..) {
                        self.remove_tree(paths, w, false, l.index, true, on);
                    }
                    for dir in opaque.drain(..) {
                        self.remove_tree(paths, dir, true, l.index, true, on);
                    }
                    on(l.index, Event::LayerDone(l.index, paths));
                }
                Item::Entry(l, seen) => {
                    let layer = l.index;
                    let e = seen.entry;
                    let p = match &seen.raw_path {
                        Some(raw) => raw.as_slice(),
                        None => e.path.trim_start_matches('/').as_bytes(),
                    };
                    match e.kind.as_str() {
                        "opaque" => {
                            let id = paths.insert(p)?;
                            self.ensure_dirs(paths, id, true, layer, on);
                            opaque.push(id);
                        }
                        "whiteout" => {
                            let id = paths.insert(p)?;
                            self.ensure_dirs(paths, id, false, layer, on);
                            whiteouts.push(id);
                        }
                        _ => {
                            let st = match &seen.hardlink_to {
                                // A hardlink is its target's inode — a file (usually), a
                                // symlink or a fifo — metadata included.
                                Some(t) => {
                                    let target = paths.lookup(t).and_then(|id| self.state(id));
                                    State {
                                        size: target.map(|t| t.size).unwrap_or(0),
                                        content: target.and_then(|t| t.content),
                                        link: target.and_then(|t| t.link.clone()),
                                        uid: target.map_or(e.uid as u32, |t| t.uid),
                                        gid: target.map_or(e.gid as u32, |t| t.gid),
                                        mode: target.map_or(e.mode, |t| t.mode),
                                        layer: layer as u16,
                                        kind: target.map_or(Kind::File, |t| t.kind),
                                        hardlink: true,
                                    }
                                }
                                None => State {
                                    size: e.size,
                                    content: seen.content.as_deref().and_then(fingerprint),
                                    link: e.link.map(String::into_boxed_str),
                                    uid: e.uid as u32,
                                    gid: e.gid as u32,
                                    mode: e.mode,
                                    layer: layer as u16,
                                    kind: Kind::parse(&e.kind),
                                    hardlink: false,
                                },
                            };
                            let target = match &seen.hardlink_to {
                                Some(t) => paths.lookup(t).filter(|&t| self.state(t).is_some()),
                                None => None,
                            };
                            let id = paths.insert(p)?;
                            self.ensure_dirs(paths, id, false, layer, on);
                            self.record(paths, id, layer, st, on);
                            if let Some(t) = target
                                && t != id
                            {
                                self.link(t, id);
                            }
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Remove `root` (unless `keep_root`) and what lies below it — only what lower layers
    /// wrote when `lower_only` — reported as deletions by `layer`, parents first and siblings
    /// by name. Nothing is collected: a deleted tree of any size costs one stack of node ids.
    fn remove_tree(
        &mut self,
        paths: &Paths,
        root: NodeId,
        keep_root: bool,
        layer: usize,
        lower_only: bool,
        on: &mut dyn FnMut(usize, Event<'_>),
    ) {
        let mut stack = vec![root];
        let mut kids: Vec<NodeId> = Vec::new();
        // This layer's own paths in the tree: they stay, and keep (or get back) their parents.
        let mut kept: Vec<NodeId> = Vec::new();
        while let Some(id) = stack.pop() {
            if !(keep_root && id == root) {
                let slot = self.slot(id);
                match slot.as_ref() {
                    Some(s) if !lower_only || s.layer as usize != layer => {
                        if let Some(mut s) = slot.take() {
                            self.unlink(id, &mut s);
                            on(layer, Event::Deleted(Node { id, paths }, &s));
                        }
                    }
                    Some(_) => kept.push(id),
                    None => {}
                }
            }
            kids.clear();
            let mut c = paths.links[id as usize].0;
            while c != 0 {
                kids.push(c);
                c = paths.links[c as usize].1;
            }
            // Popped in name order.
            kids.sort_unstable_by(|a, b| paths.tree.name(*b).cmp(paths.tree.name(*a)));
            stack.extend_from_slice(&kids);
        }
        for id in kept {
            self.ensure_dirs(paths, id, false, layer, on);
        }
    }

    /// Docker applies an entry (a whiteout, an opaque marker) whose parent is missing or not
    /// a directory by making the parent a directory, 0600 root (`MkdirAll(parent, 0600)`;
    /// measured): those directories are this layer's creations — or changes, replacing what
    /// was there. `with_self`: `id` itself must be a directory too (an opaque marker's).
    fn ensure_dirs(
        &mut self,
        paths: &Paths,
        id: NodeId,
        with_self: bool,
        layer: usize,
        on: &mut dyn FnMut(usize, Event<'_>),
    ) {
        let mut chain = Vec::new();
        let mut a = if with_self { id } else { paths.tree.parent(id) };
        while a != ROOT {
            if self.state(a).is_some_and(|s| s.kind == Kind::Dir) {
                break;
            }
            chain.push(a);
            a = paths.tree.parent(a);
        }
        for &a in chain.iter().rev() {
            let dir = State {
                size: 0,
                content: None,
                link: None,
                uid: 0,
                gid: 0,
                mode: 0o600,
                layer: layer as u16,
                kind: Kind::Dir,
                hardlink: false,
            };
            self.record(paths, a, layer, dir, on);
        }
    }

    /// A path written by a layer: created, or changed over what was below.
    fn record(
        &mut self,
        paths: &Paths,
        id: NodeId,
        layer: usize,
        st: State,
        on: &mut dyn FnMut(usize, Event<'_>),
    ) {
        let node = Node { id, paths };
        match self.slot(id).take() {
            Some(mut old) => {
                self.unlink(id, &mut old);
                on(layer, Event::Changed(node, &old, &st));
                if old.kind == Kind::Dir && st.kind != Kind::Dir {
                    // A directory replaced by a non-directory takes its whole subtree along
                    // (the layer's own entries below it too: they were under a directory).
                    self.remove_tree(paths, id, true, layer, false, on);
                }
            }
            None => on(layer, Event::Created(node, &st)),
        }
        *self.slot(id) = Some(st);
    }

    /// `id` now shares `target`'s inode.
    fn link(&mut self, target: NodeId, id: NodeId) {
        let g = match self.groups.get(&target) {
            Some(&g) => g,
            None => {
                let g = self.live.len() as u32;
                self.live.push(1);
                self.groups.insert(target, g);
                g
            }
        };
        self.groups.insert(id, g);
        self.live[g as usize] += 1;
    }

    /// `id`'s state `s` leaves the tree: if other paths still share its inode, its data stays
    /// (reported as a hardlink's: not counted as gone); the last path takes the data along.
    fn unlink(&mut self, id: NodeId, s: &mut State) {
        if let Some(g) = self.groups.remove(&id) {
            let live = &mut self.live[g as usize];
            *live = live.saturating_sub(1);
            s.hardlink = *live > 0;
        }
    }

    /// Bytes of regular files in the tree.
    pub fn file_bytes(&self) -> u64 {
        self.states
            .iter()
            .flatten()
            .filter(|s| s.kind == Kind::File)
            .map(|s| s.size)
            .sum()
    }

    /// Node ids that hold a path, in node order.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.iter().all(Option::is_none)
    }
}

fn fingerprint(hex: &str) -> Option<u64> {
    u128::from_str_radix(hex, 16).ok().map(|v| v as u64)
}

/// What differs between two states of a path.
pub fn what_changed(old: &State, new: &State) -> Vec<String> {
    let mut what = Vec::new();
    if old.kind != new.kind {
        what.push("type".to_string());
    }
    if old.content != new.content || (new.kind == Kind::File && old.size != new.size) {
        what.push("content".into());
    }
    if old.mode != new.mode {
        what.push("mode".into());
    }
    if old.uid != new.uid || old.gid != new.gid {
        what.push("owner".into());
    }
    if old.link != new.link {
        what.push("link".into());
    }
    what
}
