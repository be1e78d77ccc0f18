//! A compact tree of path components, the merge's only per-path memory.
//!
//! Each node is 16 bytes plus its component name in a shared byte arena; the lookup table holds
//! only 4-byte node ids. That keeps the whole index at roughly 40–60 bytes per path, where a
//! `HashMap<PathBuf, _>` costs 150+.

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

pub type NodeId = u32;
pub const ROOT: NodeId = 0;

/// What the highest layer seen so far says about a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// No layer had an entry or whiteout for it (it may be an implied parent).
    Unclaimed,
    Dir,
    NonDir,
    Whiteout,
}

#[derive(Clone, Copy, Debug)]
pub struct Node {
    parent: NodeId,
    name_off: u32,
    name_len: u16,
    /// Layer index + 1 of the entry (or whiteout) that decided this path; 0 when none did.
    pub claim: u16,
    /// Layer index + 1 of the highest opaque marker on this directory; 0 when none.
    pub opaque: u16,
    pub kind: Kind,
    pub flags: u8,
}

/// A header for this path has been written to the output.
pub const EMITTED: u8 = 1;
/// Some layer's entry lies below this path (and no higher layer removed it): the path must be
/// a directory in the result.
pub const HAS_DESCENDANT: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("path component longer than 65535 bytes")]
    ComponentTooLong,
    #[error("more than 4 Gi paths or names: image too large for one merge")]
    TooLarge,
}

pub struct PathTree {
    nodes: Vec<Node>,
    names: Vec<u8>,
    table: HashTable<NodeId>,
    hasher: DefaultHashBuilder,
}

impl Default for PathTree {
    fn default() -> Self {
        Self::new()
    }
}

impl PathTree {
    pub fn new() -> Self {
        PathTree {
            nodes: vec![Node {
                parent: ROOT,
                name_off: 0,
                name_len: 0,
                claim: 0,
                opaque: 0,
                kind: Kind::Unclaimed,
                flags: 0,
            }],
            names: Vec::new(),
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    fn hash(&self, parent: NodeId, name: &[u8]) -> u64 {
        self.hasher.hash_one((parent, name))
    }

    pub fn name(&self, id: NodeId) -> &[u8] {
        let n = &self.nodes[id as usize];
        &self.names[n.name_off as usize..n.name_off as usize + n.name_len as usize]
    }

    pub fn parent(&self, id: NodeId) -> NodeId {
        self.nodes[id as usize].parent
    }

    pub fn get(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    pub fn get_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize]
    }

    pub fn child(&self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        let h = self.hash(parent, name);
        let nodes = &self.nodes;
        let names = &self.names;
        self.table
            .find(h, |&id| {
                let n = &nodes[id as usize];
                n.parent == parent
                    && &names[n.name_off as usize..n.name_off as usize + n.name_len as usize]
                        == name
            })
            .copied()
    }

    pub fn child_or_insert(&mut self, parent: NodeId, name: &[u8]) -> Result<NodeId, TreeError> {
        if let Some(id) = self.child(parent, name) {
            return Ok(id);
        }
        let name_len = u16::try_from(name.len()).map_err(|_| TreeError::ComponentTooLong)?;
        let name_off = u32::try_from(self.names.len()).map_err(|_| TreeError::TooLarge)?;
        let id = NodeId::try_from(self.nodes.len()).map_err(|_| TreeError::TooLarge)?;
        grow(&mut self.names, name.len());
        self.names.extend_from_slice(name);
        grow(&mut self.nodes, 1);
        self.nodes.push(Node {
            parent,
            name_off,
            name_len,
            claim: 0,
            opaque: 0,
            kind: Kind::Unclaimed,
            flags: 0,
        });
        let h = self.hash(parent, name);
        let (nodes, names, hasher) = (&self.nodes, &self.names, &self.hasher);
        self.table.insert_unique(h, id, |&other| {
            let n = &nodes[other as usize];
            hasher.hash_one((
                n.parent,
                &names[n.name_off as usize..n.name_off as usize + n.name_len as usize],
            ))
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

    /// Approximate heap bytes held (for the memory figures in the README).
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.names.capacity()
            + self.table.capacity() * (std::mem::size_of::<NodeId>() + 1)
    }

    pub fn ids(&self) -> impl Iterator<Item = NodeId> {
        1..self.nodes.len() as NodeId
    }
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
        let mut t = PathTree::new();
        let a = t.child_or_insert(ROOT, b"a").unwrap();
        let b = t.child_or_insert(a, b"b").unwrap();
        assert_eq!(t.child_or_insert(a, b"b").unwrap(), b);
        assert_eq!(t.lookup(b"a/b"), Some(b));
        assert_eq!(t.lookup(b"a/c"), None);
        assert_eq!(t.path_of(b), b"a/b");
        t.mark_descendant(b);
        assert_ne!(t.get(a).flags & HAS_DESCENDANT, 0);
        assert_eq!(std::mem::size_of::<Node>(), 16);
    }
}
