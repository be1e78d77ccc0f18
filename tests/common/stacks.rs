//! Random layer stacks for property tests: small name universe, every kind of entry, and
//! only layers a real tool could write.

use super::{LayerBuilder, Meta};
use proptest::prelude::*;
use std::collections::BTreeSet;

const PATHS: &[&str] = &["a", "b", "c", "a/x", "a/y", "a/x/p", "b/q", "b/q/r"];

#[derive(Clone, Debug)]
pub enum Op {
    File(usize, u8, u32),
    Dir(usize, u32),
    Symlink(usize),
    Hardlink(usize, usize),
    Whiteout(usize),
    Opaque(usize),
}

impl Op {
    fn path(&self) -> &'static str {
        match *self {
            Op::File(p, ..)
            | Op::Dir(p, _)
            | Op::Symlink(p)
            | Op::Hardlink(p, _)
            | Op::Whiteout(p)
            | Op::Opaque(p) => PATHS[p],
        }
    }
    /// The name this op writes into the tar (to reject duplicates).
    fn tar_name(&self) -> String {
        let p = self.path();
        let (dir, base) = match p.rfind('/') {
            Some(i) => (&p[..=i], &p[i + 1..]),
            None => ("", p),
        };
        match self {
            Op::Whiteout(_) => format!("{dir}.wh.{base}"),
            Op::Opaque(_) => format!("{p}/.wh..wh..opq"),
            _ => p.to_string(),
        }
    }
    fn is_non_dir_entry(&self) -> bool {
        matches!(self, Op::File(..) | Op::Symlink(_) | Op::Hardlink(..))
    }
}

pub fn op() -> impl Strategy<Value = Op> {
    let n = PATHS.len();
    prop_oneof![
        4 => (0..n, 0u8..3, prop_oneof![Just(0o644u32), Just(0o600), Just(0o4755)]).prop_map(|(p, c, m)| Op::File(p, c, m)),
        3 => (0..n, prop_oneof![Just(0o755u32), Just(0o700)]).prop_map(|(p, m)| Op::Dir(p, m)),
        1 => (0..n).prop_map(Op::Symlink),
        2 => (0..n, 0..n).prop_map(|(p, t)| Op::Hardlink(p, t)),
        2 => (0..n).prop_map(Op::Whiteout),
        1 => (0..n).prop_map(Op::Opaque),
    ]
}

/// Keep only layers a real tool could write: no duplicate names, nothing under a non-directory
/// of the same layer, no opaque marker inside a path this layer makes a non-directory.
pub fn valid(layer: &[Op]) -> bool {
    let mut names = BTreeSet::new();
    for o in layer {
        if !names.insert(o.tar_name()) {
            return false;
        }
    }
    // A marker (opaque or whiteout) inside a directory the same layer whites out: Docker's
    // result depends on their order in the tar, and no tool writes it.
    for w in layer.iter().filter(|o| matches!(o, Op::Whiteout(_))) {
        let p = w.path();
        if layer.iter().any(|o| {
            let under = o.path().starts_with(p)
                && o.path().len() > p.len()
                && o.path().as_bytes()[p.len()] == b'/';
            (matches!(o, Op::Opaque(_)) && (o.path() == p || under))
                || (matches!(o, Op::Whiteout(_)) && under)
        }) {
            return false;
        }
    }
    // Likewise a marker whose parent lies strictly below an opaque directory of the same layer.
    let strictly_under =
        |p: &str, d: &str| p.len() > d.len() && p.starts_with(d) && p.as_bytes()[d.len()] == b'/';
    for d in layer.iter().filter(|o| matches!(o, Op::Opaque(_))) {
        if layer.iter().any(|o| {
            let parent = match o {
                Op::Whiteout(_) => o.path().rsplit_once('/').map(|(p, _)| p).unwrap_or(""),
                Op::Opaque(_) => o.path(),
                _ => return false,
            };
            strictly_under(parent, d.path())
        }) {
            return false;
        }
    }
    for a in layer.iter().filter(|o| o.is_non_dir_entry()) {
        let p = a.path();
        if layer.iter().any(|b| {
            let q = match b {
                Op::Opaque(_) => format!("{}/x", b.path()),
                _ => b.path().to_string(),
            };
            q.len() > p.len() && q.starts_with(p) && q.as_bytes()[p.len()] == b'/'
        }) {
            return false;
        }
    }
    true
}

/// Keep the ops, in order, that leave the layer valid.
pub fn sanitize(layer: &[Op]) -> Vec<Op> {
    let mut kept: Vec<Op> = Vec::new();
    for o in layer {
        kept.push(o.clone());
        if !valid(&kept) {
            kept.pop();
        }
    }
    kept
}

pub fn build(layer: &[Op]) -> Vec<u8> {
    let mut b = LayerBuilder::new();
    for o in layer {
        match *o {
            Op::File(p, c, m) => {
                b.file_meta(
                    PATHS[p],
                    format!("content {c}").as_bytes(),
                    &Meta {
                        mode: m,
                        ..Default::default()
                    },
                );
            }
            Op::Dir(p, m) => {
                b.dir_mode(PATHS[p], m);
            }
            Op::Symlink(p) => {
                b.symlink(PATHS[p], "../target");
            }
            Op::Hardlink(p, t) => {
                b.hardlink(PATHS[p], PATHS[t]);
            }
            Op::Whiteout(p) => {
                b.whiteout(PATHS[p]);
            }
            Op::Opaque(p) => {
                b.opaque(PATHS[p]);
            }
        }
    }
    b.build()
}

/// A stack of 1..5 valid layers, as the ops that make them (readable when a case fails).
pub fn stack() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op(), 0..7), 1..5)
        .prop_map(|s| s.iter().map(|l| sanitize(l)).collect())
}

/// The layer tars of a stack.
pub fn tars(stack: &[Vec<Op>]) -> Vec<Vec<u8>> {
    stack.iter().map(|l| build(l)).collect()
}
