//! The bottom-up walk behind `diff` and `waste`: each layer's entries applied to a path index,
//! reporting every creation, change and deletion — including what a whiteout, an opaque marker
//! or a directory replaced by a non-directory takes along. O(total entries): deletions visit
//! only the subtree they remove (the index is ordered by path).

use super::{Cache, Item, each_entry};
use crate::error::Result;
use crate::image::Layer;
use std::collections::BTreeMap;

/// A path as it stands after some layers. Kept small: one per path of the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// file, dir, symlink, char, block, fifo (a hardlink is the `file` it shares).
    pub kind: &'static str,
    /// A hardlink: its bytes belong to the file it shares, not counted again.
    pub hardlink: bool,
    pub mode: u32,
    /// The layer that wrote this version.
    pub layer: u32,
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    pub link: Option<Box<str>>,
    /// Fingerprint (xxh3-128) of a regular file's content.
    pub content: Option<(u64, u64)>,
}

pub type Index = BTreeMap<Box<[u8]>, State>;

/// What applying one entry did to the tree.
pub enum Event<'a> {
    Created(&'a [u8], &'a State),
    /// (path, what was there, what is there now)
    Changed(&'a [u8], &'a State, &'a State),
    /// (path, what was there) — deleted by a whiteout, an opaque marker, or a directory
    /// replaced by a non-directory.
    Deleted(&'a [u8], &'a State),
    /// Every change of this layer has been reported.
    LayerDone(usize),
}

/// The names a listing uses for entry types, as static strings.
pub fn static_kind(k: &str) -> &'static str {
    match k {
        "file" => "file",
        "dir" => "dir",
        "symlink" => "symlink",
        "hardlink" => "hardlink",
        "char" => "char",
        "block" => "block",
        "fifo" => "fifo",
        _ => "other",
    }
}

/// Remove `p` (unless `keep_root`) and everything below it that `doomed` selects, in path
/// order.
fn remove_tree(
    index: &mut Index,
    p: &[u8],
    keep_root: bool,
    doomed: impl Fn(&State) -> bool,
) -> Vec<(Box<[u8]>, State)> {
    let mut keys: Vec<Box<[u8]>> = Vec::new();
    if !keep_root && !p.is_empty() && index.get(p).is_some_and(&doomed) {
        keys.push(p.into());
    }
    // Children of `p` are exactly the keys in ["p/", "p0"): '0' follows '/'.
    let (lo, hi): (Vec<u8>, Option<Vec<u8>>) = if p.is_empty() {
        (Vec::new(), None)
    } else {
        ([p, b"/"].concat(), Some([p, b"0"].concat()))
    };
    let range = match &hi {
        Some(hi) => index.range::<[u8], _>((
            std::ops::Bound::Included(lo.as_slice()),
            std::ops::Bound::Excluded(hi.as_slice()),
        )),
        None => index.range::<[u8], _>(..),
    };
    keys.extend(range.filter(|(_, s)| doomed(s)).map(|(k, _)| k.clone()));
    keys.sort();
    keys.into_iter()
        .filter_map(|k| index.remove(&k).map(|s| (k, s)))
        .collect()
}

/// Applies layers bottom-up to a path index, reporting each change.
pub struct Walker {
    pub index: Index,
}

impl Walker {
    pub fn new(index: Index) -> Self {
        Walker { index }
    }

    /// Apply `layers` (bottom first), calling `on(layer index, event)` for each change.
    pub fn walk(
        &mut self,
        layers: &[&Layer],
        verify: bool,
        cache: &Cache,
        on: &mut dyn FnMut(usize, Event<'_>),
    ) -> Result<()> {
        let mut opaque: Vec<Vec<u8>> = Vec::new();
        let index = &mut self.index;
        each_entry(layers, verify, cache, &mut |item| {
            match item {
                Item::Start(_) => {}
                Item::End(l) => {
                    apply_opaque(index, &mut opaque, l.index, on);
                    on(l.index, Event::LayerDone(l.index));
                }
                Item::Entry(l, seen) => {
                    let layer = l.index;
                    let e = seen.entry;
                    let p = e.path.trim_start_matches('/').as_bytes();
                    match e.kind.as_str() {
                        "opaque" => opaque.push(p.to_vec()),
                        "whiteout" => {
                            for (k, s) in
                                remove_tree(index, p, false, |s| s.layer as usize != layer)
                            {
                                on(layer, Event::Deleted(&k, &s));
                            }
                        }
                        _ => {
                            let st = match &seen.hardlink_to {
                                // A hardlink is its target's file.
                                Some(t) => {
                                    let target = index.get(t.as_slice());
                                    State {
                                        kind: "file",
                                        hardlink: true,
                                        mode: e.mode,
                                        layer: layer as u32,
                                        size: target.map(|t| t.size).unwrap_or(0),
                                        uid: e.uid as u32,
                                        gid: e.gid as u32,
                                        link: None,
                                        content: target.and_then(|t| t.content),
                                    }
                                }
                                None => State {
                                    kind: static_kind(&e.kind),
                                    hardlink: false,
                                    mode: e.mode,
                                    layer: layer as u32,
                                    size: e.size,
                                    uid: e.uid as u32,
                                    gid: e.gid as u32,
                                    link: e.link.map(String::into_boxed_str),
                                    content: seen.content.as_deref().and_then(parse_fingerprint),
                                },
                            };
                            record(index, layer, p.into(), st, on);
                        }
                    }
                }
            }
            Ok(())
        })
    }
}

fn parse_fingerprint(hex: &str) -> Option<(u64, u64)> {
    let v = u128::from_str_radix(hex, 16).ok()?;
    Some(((v >> 64) as u64, v as u64))
}

/// Opaque markers of a layer hide the lower-layer children of their directory (wherever the
/// marker sat, so applied when the layer is done).
fn apply_opaque(
    index: &mut Index,
    opaque: &mut Vec<Vec<u8>>,
    layer: usize,
    on: &mut dyn FnMut(usize, Event<'_>),
) {
    for dir in opaque.drain(..) {
        for (k, s) in remove_tree(index, &dir, true, |s| s.layer as usize != layer) {
            on(layer, Event::Deleted(&k, &s));
        }
    }
}

/// A path written by a layer: created, or changed over what was below.
fn record(
    index: &mut Index,
    layer: usize,
    path: Box<[u8]>,
    st: State,
    on: &mut dyn FnMut(usize, Event<'_>),
) {
    match index.remove(&path) {
        Some(old) => {
            on(layer, Event::Changed(&path, &old, &st));
            if old.kind == "dir" && st.kind != "dir" {
                // A directory replaced by a non-directory takes its whole subtree along.
                for (k, s) in remove_tree(index, &path, true, |_| true) {
                    on(layer, Event::Deleted(&k, &s));
                }
            }
        }
        None => on(layer, Event::Created(&path, &st)),
    }
    index.insert(path, st);
}

/// What differs between two states of a path.
pub fn what_changed(old: &State, new: &State) -> Vec<String> {
    let mut what = Vec::new();
    if old.kind != new.kind {
        what.push("type".to_string());
    }
    if old.content != new.content || (new.kind == "file" && old.size != new.size) {
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
