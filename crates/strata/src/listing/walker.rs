//! The bottom-up walk behind `diff` and `waste`: each layer's entries applied to a path index,
//! reporting every creation, change and deletion — including what a whiteout, an opaque marker
//! or a directory replaced by a non-directory takes along. O(total entries): a deletion visits
//! only the subtree it removes.
//!
//! Memory is what a big image needs most here, so the index is compact: paths live in the
//! merge's [`PathTree`] (8 bytes a node plus the component name), with child links (4 bytes,
//! and a map entry per directory), and the state of each path is a 24-byte [`State`] in a
//! vector indexed by node — about 70 bytes per path in all, names included, where a map of
//! path strings to states costs 200+.

use super::{EntryKind, Item, Reading, each_entry};
use crate::error::{Error, Result};
use crate::image::Layer;
use crate::pathtree::{NodeId, PathTree, ROOT, grow};

/// Entry types as the walk keeps them (a hardlink is the `File` it shares).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A regular file (or a hardlink to one).
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
    /// Any other tar entry type.
    Other,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::File,
        Kind::Dir,
        Kind::Symlink,
        Kind::Char,
        Kind::Block,
        Kind::Fifo,
        Kind::Other,
    ];

    /// The kind stored as `k as u8`.
    pub fn from_u8(k: u8) -> Kind {
        Self::ALL.get(k as usize).copied().unwrap_or(Kind::Other)
    }

    /// The kind of path a listed entry makes (a hardlink makes a file).
    pub fn of(k: EntryKind) -> Kind {
        match k {
            EntryKind::File | EntryKind::Hardlink => Kind::File,
            EntryKind::Dir => Kind::Dir,
            EntryKind::Symlink => Kind::Symlink,
            EntryKind::Char => Kind::Char,
            EntryKind::Block => Kind::Block,
            EntryKind::Fifo => Kind::Fifo,
            EntryKind::Other | EntryKind::Whiteout | EntryKind::Opaque => Kind::Other,
        }
    }

    /// The name as in JSON (`file`, `dir`, `symlink`, …).
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

/// A path as it stands after some layers: 24 bytes, the walk's main per-path cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// The size (low 48 bits) and the layer that wrote this version (high 16 bits).
    size_layer: u64,
    /// A regular file's content fingerprint (low 64 bits of xxh3-128) or a symlink target's
    /// (xxh3-64): files and symlinks never need both. Meaningful with [`FINGERPRINTED`].
    print: u64,
    /// Index of the (uid, gid) pair in the owner table: images have few owners.
    owner: u32,
    /// Permission bits (the listing keeps only those).
    mode: u16,
    /// What the path is.
    pub kind: Kind,
    flags: u8,
}

/// Entry sizes the walk can hold: 256 TiB.
pub const MAX_SIZE: u64 = (1 << 48) - 1;

const ROOT_OWNER: u32 = 0;

/// `print` holds a fingerprint.
const FINGERPRINTED: u8 = 1;
/// A hardlink: its bytes belong to the file it shares, not counted again.
const HARDLINK: u8 = 2;

impl State {
    /// `size` must be at most [`MAX_SIZE`] (checked where entries come in).
    fn new(size: u64, layer: u16, kind: Kind, mode: u32, owner: u32) -> Self {
        State {
            size_layer: (size & MAX_SIZE) | (u64::from(layer) << 48),
            print: 0,
            owner,
            mode: (mode & 0o7777) as u16,
            kind,
            flags: 0,
        }
    }

    /// The entry's size, in bytes (a regular file's data; 0 for most others).
    pub fn size(&self) -> u64 {
        self.size_layer & MAX_SIZE
    }

    /// The layer that wrote this version.
    pub fn layer(&self) -> u16 {
        (self.size_layer >> 48) as u16
    }

    fn set_layer(&mut self, layer: u16) {
        self.size_layer = self.size() | (u64::from(layer) << 48);
    }

    /// Permission bits.
    pub fn mode(&self) -> u32 {
        u32::from(self.mode)
    }

    fn with_print(mut self, print: Option<u64>) -> Self {
        if let Some(p) = print {
            self.print = p;
            self.flags |= FINGERPRINTED;
        }
        self
    }

    /// A regular file's content fingerprint, when known.
    pub fn content(&self) -> Option<u64> {
        (self.kind == Kind::File && self.flags & FINGERPRINTED != 0).then_some(self.print)
    }

    /// A symlink's target, as a fingerprint (equal targets, equal values).
    pub fn link(&self) -> Option<u64> {
        (self.kind == Kind::Symlink && self.flags & FINGERPRINTED != 0).then_some(self.print)
    }

    /// Shares its inode with a path that holds the data.
    pub fn hardlink(&self) -> bool {
        self.flags & HARDLINK != 0
    }

    /// The state as 24 bytes, for records spilled to a file.
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.size_layer.to_le_bytes());
        b[8..16].copy_from_slice(&self.print.to_le_bytes());
        b[16..20].copy_from_slice(&self.owner.to_le_bytes());
        b[20..22].copy_from_slice(&self.mode.to_le_bytes());
        b[22] = self.kind as u8;
        b[23] = self.flags;
        b
    }

    /// The state [`State::to_bytes`] wrote.
    pub fn from_bytes(b: &[u8; 24]) -> State {
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        State {
            size_layer: u64_at(0),
            print: u64_at(8),
            owner: u32::from_le_bytes([b[16], b[17], b[18], b[19]]),
            mode: u16::from_le_bytes([b[20], b[21]]),
            kind: Kind::from_u8(b[22]),
            flags: b[23],
        }
    }

    fn set_hardlink(&mut self, on: bool) {
        if on {
            self.flags |= HARDLINK;
        } else {
            self.flags &= !HARDLINK;
        }
    }
}

/// The (uid, gid) pairs of the walks over one [`Paths`], each stored once; 0 is root's.
#[derive(Clone, Default)]
struct Owners {
    pairs: Vec<(u32, u32)>,
    index: hashbrown::HashMap<(u32, u32), u32>,
}

impl Owners {
    fn id(&mut self, uid: u32, gid: u32) -> u32 {
        *self.index.entry((uid, gid)).or_insert_with(|| {
            self.pairs.push((uid, gid));
            (self.pairs.len() - 1) as u32
        })
    }

    fn new() -> Self {
        let mut o = Owners::default();
        o.id(0, 0);
        o
    }

    fn get(&self, id: u32) -> (u32, u32) {
        self.pairs.get(id as usize).copied().unwrap_or((0, 0))
    }
}

/// Every path any layer named, as a tree with child links. Shared by the walks of two images
/// (`diff A B`), so the same path is the same node in both.
pub struct Paths {
    /// No per-node data: the walk's is in [`Walker`], one vector per image.
    tree: PathTree<()>,
    /// Each node's next sibling; 0 = none (the root is nobody's child).
    next_sibling: Vec<NodeId>,
    /// The first child of each node that has children: a map, as most paths are files.
    first_child: hashbrown::HashMap<NodeId, NodeId>,
    /// Shared by the walks too, so that equal owners are equal ids in both images.
    owners: Owners,
}

impl Default for Paths {
    fn default() -> Self {
        Self::new()
    }
}

impl Paths {
    /// An index holding only the root.
    pub fn new() -> Self {
        Paths {
            tree: PathTree::new(),
            next_sibling: vec![0],
            first_child: hashbrown::HashMap::new(),
            owners: Owners::new(),
        }
    }

    /// Sort `dir`'s child list by name, in place (a merge sort of the linked list: no memory),
    /// and give its first child.
    fn sort_children(&mut self, dir: NodeId) -> Option<NodeId> {
        let head = *self.first_child.get(&dir)?;
        let sorted = sort_list(head, &mut self.next_sibling, &self.tree);
        self.first_child.insert(dir, sorted);
        Some(sorted)
    }

    /// A state's (uid, gid).
    pub fn owner(&self, s: &State) -> (u32, u32) {
        self.owners.get(s.owner)
    }

    /// The number of nodes, the root included (node ids run below it).
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether no path was added (only the root is there).
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// The node of a normalized path (no leading slash), if any layer named it.
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
                let first = self.first_child.insert(id, child).unwrap_or(0);
                grow(&mut self.next_sibling, 1);
                self.next_sibling.push(first);
            }
            id = child;
        }
        Ok(id)
    }
}

/// Merge sort of the sibling list starting at `head` (linked by `next`, 0-terminated) by
/// name; gives the new head. Recursion depth is log2 of the list's length.
fn sort_list(head: NodeId, next: &mut [NodeId], tree: &PathTree<()>) -> NodeId {
    if head == 0 || next[head as usize] == 0 {
        return head;
    }
    // Split at the middle.
    let (mut slow, mut fast) = (head, next[head as usize]);
    while fast != 0 && next[fast as usize] != 0 {
        slow = next[slow as usize];
        fast = next[next[fast as usize] as usize];
    }
    let second = next[slow as usize];
    next[slow as usize] = 0;
    let (mut a, mut b) = (sort_list(head, next, tree), sort_list(second, next, tree));
    // Merge, stable.
    let (mut first, mut tail) = (0, 0);
    while a != 0 && b != 0 {
        let n = if tree.name(a) <= tree.name(b) {
            let n = a;
            a = next[a as usize];
            n
        } else {
            let n = b;
            b = next[b as usize];
            n
        };
        if tail == 0 {
            first = n;
        } else {
            next[tail as usize] = n;
        }
        tail = n;
    }
    let rest = if a != 0 { a } else { b };
    if tail == 0 {
        first = rest;
    } else {
        next[tail as usize] = rest;
    }
    first
}

/// A node in an event, with the tree to name it.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    /// The path's node.
    pub id: NodeId,
    /// The index the node belongs to.
    pub paths: &'a Paths,
}

impl Node<'_> {
    /// The node's path, no leading slash.
    pub fn path(&self) -> Vec<u8> {
        self.paths.path_of(self.id)
    }
}

/// What applying one entry did to the tree.
pub enum Event<'a> {
    /// (path, what is there now) — the path had no state below.
    Created(Node<'a>, &'a State),
    /// (path, what was there, what is there now)
    Changed(Node<'a>, &'a State, &'a State),
    /// (path, what was there) — deleted by a whiteout, an opaque marker, or a directory
    /// replaced by a non-directory.
    Deleted(Node<'a>, &'a State),
    /// Every change of this layer (its index) has been reported.
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
    /// A walk over no layers yet: every path absent.
    pub fn new() -> Self {
        Walker::default()
    }

    /// The path's state after the layers walked so far (`None`: absent).
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

    /// Apply `layers` (bottom first), calling `on(layer index, event)` for each change. When
    /// `on` returns false (its output is gone, say) the walk stops early, without error.
    pub fn walk(
        &mut self,
        paths: &mut Paths,
        layers: &[&Layer],
        read: &Reading<'_>,
        on: &mut dyn FnMut(usize, Event<'_>) -> bool,
    ) -> Result<()> {
        let stopped = std::cell::Cell::new(false);
        let mut on = |layer: usize, ev: Event<'_>| {
            if !stopped.get() && !on(layer, ev) {
                stopped.set(true);
            }
        };
        let r = self.walk_events(paths, layers, read, &stopped, &mut on);
        if stopped.get() {
            return Ok(()); // whatever ended the reading: the consumer asked for it
        }
        r
    }

    fn walk_events(
        &mut self,
        paths: &mut Paths,
        layers: &[&Layer],
        read: &Reading<'_>,
        stopped: &std::cell::Cell<bool>,
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
        each_entry(layers, read, &mut |item| {
            if stopped.get() {
                return Err(Error::Stopped);
            }
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
                    match e.kind {
                        EntryKind::Opaque => {
                            let id = paths.insert(p)?;
                            self.ensure_dirs(paths, id, true, layer, on);
                            opaque.push(id);
                        }
                        EntryKind::Whiteout => {
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
                                    let mut st = match target {
                                        Some(t) => t.clone(),
                                        None => State::new(
                                            0,
                                            0,
                                            Kind::File,
                                            e.mode,
                                            paths.owners.id(e.uid as u32, e.gid as u32),
                                        ),
                                    };
                                    st.set_layer(layer as u16);
                                    st.set_hardlink(true);
                                    st
                                }
                                None => {
                                    if e.size > MAX_SIZE {
                                        return Err(Error::Format(format!(
                                            "{}: entry of {} bytes, more than the walk holds",
                                            e.path, e.size
                                        )));
                                    }
                                    let kind = Kind::of(e.kind);
                                    let print = match kind {
                                        Kind::File => seen.content.as_deref().and_then(fingerprint),
                                        Kind::Symlink => e
                                            .link
                                            .as_deref()
                                            .map(|l| xxhash_rust::xxh3::xxh3_64(l.as_bytes())),
                                        _ => None,
                                    };
                                    let owner = paths.owners.id(e.uid as u32, e.gid as u32);
                                    State::new(e.size, layer as u16, kind, e.mode, owner)
                                        .with_print(print)
                                }
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
    /// by name. Nothing is collected: each directory's child list is sorted in place and the
    /// tree walked by its links, so a deleted tree of any size or width costs no memory.
    fn remove_tree(
        &mut self,
        paths: &mut Paths,
        root: NodeId,
        keep_root: bool,
        layer: usize,
        lower_only: bool,
        on: &mut dyn FnMut(usize, Event<'_>),
    ) {
        // This layer's own paths in the tree: they stay, and keep (or get back) their parents.
        let mut kept: Vec<NodeId> = Vec::new();
        let mut id = root;
        'visit: loop {
            if !(keep_root && id == root) {
                let slot = self.slot(id);
                match slot.as_ref() {
                    Some(s) if !lower_only || s.layer() as usize != layer => {
                        if let Some(mut s) = slot.take() {
                            self.unlink(id, &mut s);
                            on(layer, Event::Deleted(Node { id, paths }, &s));
                        }
                    }
                    Some(_) => kept.push(id),
                    None => {}
                }
            }
            // Down to the first child (by name), else on to the next sibling, climbing up
            // to the root as needed.
            if let Some(first) = paths.sort_children(id) {
                id = first;
                continue;
            }
            while id != root {
                let next = paths.next_sibling[id as usize];
                if next != 0 {
                    id = next;
                    continue 'visit;
                }
                id = paths.tree.parent(id);
            }
            break;
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
        paths: &mut Paths,
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
            let dir = State::new(0, layer as u16, Kind::Dir, 0o600, ROOT_OWNER);
            self.record(paths, a, layer, dir, on);
        }
    }

    /// A path written by a layer: created, or changed over what was below.
    fn record(
        &mut self,
        paths: &mut Paths,
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
            s.set_hardlink(*live > 0);
        }
    }

    /// Bytes of regular files in the tree.
    pub fn file_bytes(&self) -> u64 {
        self.states
            .iter()
            .flatten()
            .filter(|s| s.kind == Kind::File)
            .map(State::size)
            .sum()
    }

    /// The number of state slots: one past the highest node id the walk has touched.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether no path is present.
    pub fn is_empty(&self) -> bool {
        self.states.iter().all(Option::is_none)
    }
}

fn fingerprint(hex: &str) -> Option<u64> {
    u128::from_str_radix(hex, 16).ok().map(|v| v as u64)
}

/// What differs between two states of a path, as a set of [`What`] bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct What(u8);

impl What {
    const NAMES: [&str; 5] = ["type", "content", "mode", "owner", "link"];

    /// Whether nothing differs.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names of what changed, in a fixed order.
    pub fn names(self) -> Vec<String> {
        Self::NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| n.to_string())
            .collect()
    }
}

/// What differs from `old` to `new`: type, content (or a file's size), mode, owner, link
/// target. The layer that wrote each does not count.
pub fn what_changed(old: &State, new: &State) -> What {
    let checks = [
        old.kind != new.kind,
        old.content() != new.content() || (new.kind == Kind::File && old.size() != new.size()),
        old.mode != new.mode,
        old.owner != new.owner,
        old.link() != new.link(),
    ];
    What(
        checks
            .iter()
            .enumerate()
            .fold(0, |acc, (i, &c)| acc | (u8::from(c) << i)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-path cost the README and the memory figures count on.
    #[test]
    fn state_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Option<State>>(), 24);
    }

    #[test]
    fn state_round_trips_through_bytes() {
        let s = State::new(123_456_789_012, 9, Kind::Symlink, 0o777, 5).with_print(Some(77));
        assert_eq!(State::from_bytes(&s.to_bytes()), s);
    }

    /// Spilled records keep their kind as `kind as u8`.
    #[test]
    fn kinds_survive_a_byte() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_u8(k as u8), k);
        }
        assert_eq!(Kind::from_u8(200), Kind::Other);
    }

    #[test]
    fn state_packs_size_and_layer() {
        let mut s = State::new(MAX_SIZE, u16::MAX, Kind::File, 0o104755, 3);
        assert_eq!(
            (s.size(), s.layer(), s.mode()),
            (MAX_SIZE, u16::MAX, 0o4755)
        );
        s.set_layer(7);
        assert_eq!((s.size(), s.layer()), (MAX_SIZE, 7));
        assert_eq!(s.content(), None);
        let s = s.with_print(Some(42));
        assert_eq!((s.content(), s.link()), (Some(42), None));
    }

    #[test]
    fn what_changed_names_each_difference() {
        let mut p = Paths::new();
        let a = State::new(5, 0, Kind::File, 0o644, p.owners.id(0, 0)).with_print(Some(1));
        let b = State::new(5, 1, Kind::File, 0o755, p.owners.id(1000, 0)).with_print(Some(2));
        assert_eq!(what_changed(&a, &b).names(), ["content", "mode", "owner"]);
        assert!(what_changed(&a, &a.clone()).is_empty());
        let l = State::new(3, 1, Kind::Symlink, 0o777, 0).with_print(Some(9));
        assert_eq!(
            what_changed(&a, &l).names(),
            ["type", "content", "mode", "link"]
        );
        assert_eq!(p.owner(&b), (1000, 0));
    }
}
