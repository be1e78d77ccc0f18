//! A compact tree of path components, the merge's only per-path memory.
//!
//! Each node is 8 bytes plus what its user keeps on it (the merge's [`Marks`], 6 bytes),
//! and its component name in a shared byte arena, length first; the lookup table holds only
//! 4-byte node ids.
//! That keeps the whole index at roughly 40–60 bytes per path, where a `HashMap<PathBuf, _>`
//! costs 150+.

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

/// A node's index in the tree (4 bytes, so the lookup table stays small).
pub type NodeId = u32;
/// The root's node: the empty path.
pub const ROOT: NodeId = 0;

/// What the highest layer seen so far says about a path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// No layer had an entry or whiteout for it (it may be an implied parent).
    #[default]
    Unclaimed,
    /// A directory.
    Dir,
    /// Anything but a directory (a file, a link, a device).
    NonDir,
    /// Deleted by a whiteout.
    Whiteout,
}

/// What the merge keeps on each path.
#[derive(Clone, Copy, Debug, Default)]
pub struct Marks {
    /// Layer index + 1 of the entry (or whiteout) that decided this path; 0 when none did.
    pub claim: u16,
    /// Layer index + 1 of the highest opaque marker on this directory; 0 when none.
    pub opaque: u16,
    /// What the deciding entry was.
    pub kind: Kind,
    /// [`EMITTED`] and [`HAS_DESCENDANT`] bits.
    pub flags: u8,
}

/// A path component: its parent, its name in the arena, and its user's data `T` (reached
/// through the node, as `node.claim`).
#[derive(Clone, Copy, Debug)]
pub struct Node<T = Marks> {
    parent: NodeId,
    /// Where the name is in the arena: a LEB128 length, then the bytes.
    name_off: u32,
    data: T,
}

impl<T> std::ops::Deref for Node<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.data
    }
}

impl<T> std::ops::DerefMut for Node<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.data
    }
}

/// A header for this path has been written to the output.
pub const EMITTED: u8 = 1;
/// Some layer's entry lies below this path (and no higher layer removed it): the path must be
/// a directory in the result.
pub const HAS_DESCENDANT: u8 = 2;

/// Why a path cannot be added to the tree.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A component is longer than 65535 bytes.
    #[error("path component longer than 65535 bytes")]
    ComponentTooLong,
    /// The node ids or the name arena's offsets would pass `u32::MAX`.
    #[error("more than 4 Gi paths or names: image too large for one merge")]
    TooLarge,
}

/// Paths as a tree of [`Node`]s: each node found by (parent, name) through a hash table of
/// node ids, its name kept once in a byte arena.
pub struct PathTree<T = Marks> {
    nodes: Vec<Node<T>>,
    names: Vec<u8>,
    table: HashTable<NodeId>,
    hasher: DefaultHashBuilder,
    /// Recently stored names, by a hash of the name alone: a name seen again (`copyright`,
    /// `LC_MESSAGES`, `__init__.py`) points at the bytes already in the arena. Lossy — a slot
    /// keeps the last name that hashed to it — and small: a fifth of a big image's name bytes
    /// are repeats, and this finds most of them.
    recent_names: Box<[u32; RECENT_NAMES]>,
}

const RECENT_NAMES: usize = 4096;

impl<T: Copy + Default> Default for PathTree<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Default> PathTree<T> {
    /// A tree holding only the root.
    pub fn new() -> Self {
        PathTree {
            nodes: vec![Node {
                parent: ROOT,
                name_off: 0,
                data: T::default(),
            }],
            // The root's name: empty.
            names: vec![0],
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            // 0 is the root's (empty) name: no other name matches it.
            recent_names: Box::new([0; RECENT_NAMES]),
        }
    }

    /// The number of nodes, the root included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree holds only the root.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    fn hash(&self, parent: NodeId, name: &[u8]) -> u64 {
        self.hasher.hash_one((parent, name))
    }

    /// The node's last component (empty for the root).
    pub fn name(&self, id: NodeId) -> &[u8] {
        name_at(&self.names, self.nodes[id as usize].name_off)
    }

    /// The node's parent (the root is its own).
    pub fn parent(&self, id: NodeId) -> NodeId {
        self.nodes[id as usize].parent
    }

    /// The node `id`.
    pub fn get(&self, id: NodeId) -> &Node<T> {
        &self.nodes[id as usize]
    }

    /// The node `id`, to change its data.
    pub fn get_mut(&mut self, id: NodeId) -> &mut Node<T> {
        &mut self.nodes[id as usize]
    }

    /// The child of `parent` called `name`, if there is one.
    pub fn child(&self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        let h = self.hash(parent, name);
        let nodes = &self.nodes;
        let names = &self.names;
        self.table
            .find(h, |&id| {
                let n = &nodes[id as usize];
                n.parent == parent && name_at(names, n.name_off) == name
            })
            .copied()
    }

    /// The child of `parent` called `name`, added (with default data) when missing.
    pub fn child_or_insert(&mut self, parent: NodeId, name: &[u8]) -> Result<NodeId, TreeError> {
        if let Some(id) = self.child(parent, name) {
            return Ok(id);
        }
        if name.len() > u16::MAX as usize {
            return Err(TreeError::ComponentTooLong);
        }
        let id = NodeId::try_from(self.nodes.len()).map_err(|_| TreeError::TooLarge)?;
        let slot = self.hasher.hash_one(name) as usize % RECENT_NAMES;
        let recent = self.recent_names[slot];
        let name_off = if !name.is_empty() && name_at(&self.names, recent) == name {
            recent
        } else {
            let off = u32::try_from(self.names.len()).map_err(|_| TreeError::TooLarge)?;
            grow(&mut self.names, name.len() + 3);
            let mut len = name.len();
            while len >= 0x80 {
                self.names.push((len as u8 & 0x7f) | 0x80);
                len >>= 7;
            }
            self.names.push(len as u8);
            self.names.extend_from_slice(name);
            self.recent_names[slot] = off;
            off
        };
        grow(&mut self.nodes, 1);
        self.nodes.push(Node {
            parent,
            name_off,
            data: T::default(),
        });
        let h = self.hash(parent, name);
        let (nodes, names, hasher) = (&self.nodes, &self.names, &self.hasher);
        self.table.insert_unique(h, id, |&other| {
            let n = &nodes[other as usize];
            hasher.hash_one((n.parent, name_at(names, n.name_off)))
        });
        Ok(id)
    }

    /// Look a normalized path up without inserting.
    pub fn lookup(&self, path: &[u8]) -> Option<NodeId> {
        let mut id = ROOT;
        if path.is_empty() {
            return Some(ROOT);
        }
        for comp in path.split(|&b| b == b'/') {
            id = self.child(id, comp)?;
        }
        Some(id)
    }

    /// The full path of a node, components joined by `/`, no leading slash.
    pub fn path_of(&self, mut id: NodeId) -> Vec<u8> {
        let mut comps = Vec::new();
        while id != ROOT {
            comps.push(id);
            id = self.parent(id);
        }
        let mut out = Vec::new();
        for (i, c) in comps.iter().rev().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(self.name(*c));
        }
        out
    }

    /// Approximate heap bytes held (for the memory figures in the README).
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node<T>>()
            + self.names.capacity()
            + self.table.capacity() * (std::mem::size_of::<NodeId>() + 1)
    }

    /// Every node but the root, in the order they were added.
    pub fn ids(&self) -> impl Iterator<Item = NodeId> {
        1..self.nodes.len() as NodeId
    }
}

impl PathTree<Marks> {
    /// Mark every ancestor of `id` as having an emitted descendant.
    pub fn mark_descendant(&mut self, id: NodeId) {
        let mut p = self.parent(id);
        loop {
            let n = &mut self.nodes[p as usize];
            if n.flags & HAS_DESCENDANT != 0 {
                return;
            }
            n.flags |= HAS_DESCENDANT;
            if p == ROOT {
                return;
            }
            p = n.parent;
        }
    }

    /// Mark `id` and all its ancestors as directories that must exist.
    pub fn mark_is_dir(&mut self, mut id: NodeId) {
        loop {
            let n = &mut self.nodes[id as usize];
            if n.flags & HAS_DESCENDANT != 0 {
                return;
            }
            n.flags |= HAS_DESCENDANT;
            if id == ROOT {
                return;
            }
            id = n.parent;
        }
    }
}

/// The name stored at `off`: a LEB128 length (at most 3 bytes: names are under 64 KiB), then
/// the bytes.
fn name_at(names: &[u8], off: u32) -> &[u8] {
    let mut i = off as usize;
    let mut len = 0usize;
    let mut shift = 0;
    while let Some(&b) = names.get(i) {
        i += 1;
        len |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    names.get(i..i + len).unwrap_or(&[])
}

/// Make room for `more` items, growing by a quarter rather than doubling: on a big image the
/// slack of a doubled vector would be as large as the index itself.
pub fn grow<T>(v: &mut Vec<T>, more: usize) {
    if v.capacity() - v.len() < more {
        v.reserve_exact(more.max(v.capacity() / 4).max(1024));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_lookup_and_paths() {
        let mut t: PathTree = PathTree::new();
        let a = t.child_or_insert(ROOT, b"a").unwrap();
        let b = t.child_or_insert(a, b"b").unwrap();
        assert_eq!(t.child_or_insert(a, b"b").unwrap(), b);
        assert_eq!(t.lookup(b"a/b"), Some(b));
        assert_eq!(t.lookup(b"a/c"), None);
        assert_eq!(t.path_of(b), b"a/b");
        t.mark_descendant(b);
        assert_ne!(t.get(a).flags & HAS_DESCENDANT, 0);
        assert_eq!(std::mem::size_of::<Node>(), 16);
        assert_eq!(std::mem::size_of::<Node<()>>(), 8);
        // Names of every length class keep their bytes.
        for len in [0usize, 1, 127, 128, 300, 16383, 16384, 65535] {
            let name = vec![b'x'; len];
            let id = t.child_or_insert(ROOT, &name).unwrap();
            assert_eq!(t.name(id), &name[..]);
            assert_eq!(t.child(ROOT, &name), Some(id));
        }
        assert!(t.child_or_insert(ROOT, &vec![b'y'; 65536]).is_err());
        // A name seen again shares the bytes already stored.
        let before = t.names.len();
        let c = t.child_or_insert(b, b"copyright").unwrap();
        let stored = t.names.len() - before;
        let d = t.child_or_insert(a, b"copyright").unwrap();
        assert_eq!(t.names.len() - before, stored, "second copy not stored");
        assert_ne!(c, d);
        assert_eq!(
            (t.name(c), t.name(d)),
            (&b"copyright"[..], &b"copyright"[..])
        );
        assert_eq!(t.lookup(b"a/copyright"), Some(d));
    }
}
