//! A deliberately simple reference model: apply layers bottom-up to an in-memory directory
//! tree, the way `docker load` applies them to a real one (unlink-and-recreate, directories
//! merge, hardlinks share an inode), with the OCI rule that whiteouts and opaque markers touch
//! lower layers only. Nothing here shares code with the engine under test.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Fifo,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub ino: usize,
}

#[derive(Default, Debug)]
pub struct Tree {
    pub nodes: BTreeMap<String, Node>,
    next_ino: usize,
}

fn clean(raw: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

fn parent(p: &str) -> Option<&str> {
    p.rfind('/').map(|i| &p[..i])
}

fn is_under(p: &str, dir: &str) -> bool {
    p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/'
}

impl Tree {
    fn ino(&mut self) -> usize {
        self.next_ino += 1;
        self.next_ino
    }

    fn remove_subtree(&mut self, p: &str) {
        let doomed: Vec<String> = self
            .nodes
            .keys()
            .filter(|k| *k == p || is_under(k, p))
            .cloned()
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    /// Missing (or non-directory) parents become directories 0600, as Docker's layer apply
    /// (`MkdirAll(parent, 0600)`) makes them.
    /// Returns the directories it made: they belong to the layer being applied.
    fn ensure_parents(&mut self, p: &str) -> Vec<String> {
        let mut made = Vec::new();
        let mut acc = Vec::new();
        let comps: Vec<&str> = p.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            acc.push(*c);
            let a = acc.join("/");
            match self.nodes.get(&a) {
                Some(n) if n.kind == Kind::Dir => {}
                found => {
                    if found.is_some() {
                        self.remove_subtree(&a);
                    }
                    let ino = self.ino();
                    made.push(a.clone());
                    self.nodes.insert(
                        a,
                        Node {
                            kind: Kind::Dir,
                            mode: 0o600,
                            uid: 0,
                            gid: 0,
                            ino,
                        },
                    );
                }
            }
        }
        made
    }

    /// Apply one layer tar.
    pub fn apply(&mut self, layer: &[u8]) -> Result<(), String> {
        let mut ar = tar::Archive::new(layer);
        let mut created: BTreeSet<String> = BTreeSet::new();
        let mut opaque: Vec<String> = Vec::new();
        let mut whiteouts: Vec<String> = Vec::new();
        for e in ar.entries().map_err(|e| e.to_string())? {
            let mut e = e.map_err(|e| e.to_string())?;
            let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let p = clean(&raw);
            if p.is_empty() {
                continue;
            }
            let base = p.rsplit('/').next().unwrap_or(&p).to_string();
            let dir = parent(&p).unwrap_or("").to_string();
            if base.starts_with(".wh.") && !dir.is_empty() {
                // Docker MkdirAll()s the parent of every entry, whiteouts included.
                created.extend(self.ensure_parents(&p));
            }
            if base == ".wh..wh..opq" {
                opaque.push(dir);
                continue;
            }
            if base.starts_with(".wh..wh.")
                || p.split('/')
                    .next()
                    .is_some_and(|c| c.starts_with(".wh..wh."))
            {
                continue;
            }
            if let Some(name) = base.strip_prefix(".wh.") {
                whiteouts.push(if dir.is_empty() {
                    name.to_string()
                } else {
                    format!("{dir}/{name}")
                });
                continue;
            }
            let h = e.header().clone();
            let mode = h.mode().map_err(|e| e.to_string())? & 0o7777;
            let uid = h.uid().map_err(|e| e.to_string())?;
            let gid = h.gid().map_err(|e| e.to_string())?;
            let et = h.entry_type();
            let new_is_dir = et.is_dir();
            match self.nodes.get(&p) {
                Some(n) if n.kind == Kind::Dir && new_is_dir => {}
                Some(_) => self.remove_subtree(&p),
                None => {}
            }
            created.extend(self.ensure_parents(&p));
            let node = if et.is_dir() {
                let ino = self
                    .nodes
                    .get(&p)
                    .map(|n| n.ino)
                    .unwrap_or_else(|| self.ino());
                Node {
                    kind: Kind::Dir,
                    mode,
                    uid,
                    gid,
                    ino,
                }
            } else if et.is_file() {
                let mut data = Vec::new();
                e.read_to_end(&mut data).map_err(|e| e.to_string())?;
                Node {
                    kind: Kind::File(data),
                    mode,
                    uid,
                    gid,
                    ino: self.ino(),
                }
            } else if et.is_symlink() {
                let t = e
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                Node {
                    kind: Kind::Symlink(t),
                    mode,
                    uid,
                    gid,
                    ino: self.ino(),
                }
            } else if et.is_hard_link() {
                let t = clean(
                    &e.link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default(),
                );
                match self.nodes.get(&t) {
                    Some(n) if n.kind != Kind::Dir => n.clone(),
                    _ => return Err(format!("hardlink {p} -> {t}: no such file")),
                }
            } else if et.is_fifo() {
                Node {
                    kind: Kind::Fifo,
                    mode,
                    uid,
                    gid,
                    ino: self.ino(),
                }
            } else {
                continue;
            };
            self.nodes.insert(p.clone(), node);
            created.insert(p);
        }
        // Whiteouts and opaque markers: lower-layer paths only, wherever they sat in the tar.
        let mut doomed: BTreeSet<String> = BTreeSet::new();
        for w in &whiteouts {
            for k in self.nodes.keys() {
                if (k == w || is_under(k, w)) && !created.contains(k) {
                    doomed.insert(k.clone());
                }
            }
        }
        for d in &opaque {
            for k in self.nodes.keys() {
                if (d.is_empty() || is_under(k, d)) && !created.contains(k) {
                    doomed.insert(k.clone());
                }
            }
        }
        for k in &doomed {
            self.nodes.remove(k);
        }
        let survivors: Vec<String> = self.nodes.keys().cloned().collect();
        for k in survivors {
            self.ensure_parents(&k);
        }
        Ok(())
    }
}

/// Read a flattened tar into a tree, checking the stream's own invariants on the way: no
/// duplicates, no whiteout names, and no hardlink before its target.
pub fn read_flat(tar_bytes: &[u8]) -> Result<Tree, String> {
    let mut t = Tree::default();
    let mut ar = tar::Archive::new(tar_bytes);
    for e in ar.entries().map_err(|e| e.to_string())? {
        let mut e = e.map_err(|e| e.to_string())?;
        let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let p = clean(&raw);
        if p.is_empty() {
            continue;
        }
        if p.rsplit('/').next().unwrap_or("").starts_with(".wh.") {
            return Err(format!("whiteout name in output: {p}"));
        }
        if t.nodes.contains_key(&p) {
            return Err(format!("duplicate path in output: {p}"));
        }
        let h = e.header().clone();
        let mode = h.mode().map_err(|e| e.to_string())? & 0o7777;
        let uid = h.uid().map_err(|e| e.to_string())?;
        let gid = h.gid().map_err(|e| e.to_string())?;
        let et = h.entry_type();
        let node = if et.is_dir() {
            Node {
                kind: Kind::Dir,
                mode,
                uid,
                gid,
                ino: t.ino(),
            }
        } else if et.is_file() {
            let mut data = Vec::new();
            e.read_to_end(&mut data).map_err(|e| e.to_string())?;
            Node {
                kind: Kind::File(data),
                mode,
                uid,
                gid,
                ino: t.ino(),
            }
        } else if et.is_symlink() {
            let l = e
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            Node {
                kind: Kind::Symlink(l),
                mode,
                uid,
                gid,
                ino: t.ino(),
            }
        } else if et.is_hard_link() {
            let l = clean(
                &e.link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default(),
            );
            match t.nodes.get(&l) {
                Some(n) if n.kind != Kind::Dir => n.clone(),
                _ => return Err(format!("hardlink {p} -> {l} comes before its target")),
            }
        } else if et.is_fifo() {
            Node {
                kind: Kind::Fifo,
                mode,
                uid,
                gid,
                ino: t.ino(),
            }
        } else {
            return Err(format!("unexpected entry type for {p}"));
        };
        t.nodes.insert(p, node);
    }
    Ok(t)
}

/// A comparable view: per path (kind, mode, owner, content/target), plus hardlink groups.
#[derive(Debug, PartialEq, Eq)]
pub struct Canon {
    pub paths: BTreeMap<String, String>,
    pub links: BTreeSet<Vec<String>>,
}

pub fn canon(t: &Tree) -> Canon {
    let mut paths = BTreeMap::new();
    let mut groups: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (p, n) in &t.nodes {
        let what = match &n.kind {
            Kind::File(d) => format!("file {}", super::sha256_hex(d)),
            Kind::Dir => "dir".to_string(),
            Kind::Symlink(l) => format!("symlink -> {l}"),
            Kind::Fifo => "fifo".to_string(),
        };
        paths.insert(
            p.clone(),
            format!("{what} mode={:o} uid={} gid={}", n.mode, n.uid, n.gid),
        );
        if matches!(n.kind, Kind::File(_)) {
            groups.entry(n.ino).or_default().push(p.clone());
        }
    }
    let links = groups.into_values().filter(|g| g.len() > 1).collect();
    Canon { paths, links }
}

/// Apply a whole stack with the model.
/// The tree the model builds from `layers`, bottom first.
pub fn tree_of(layers: &[Vec<u8>]) -> Result<Tree, String> {
    let mut t = Tree::default();
    for l in layers {
        t.apply(l)?;
    }
    Ok(t)
}

pub fn model_of(layers: &[Vec<u8>]) -> Result<Canon, String> {
    Ok(canon(&tree_of(layers)?))
}

/// Flatten with strata and read the result back.
pub fn strata_of(layers: &[Vec<u8>]) -> Result<Canon, String> {
    let out = super::flatten_layers(layers).map_err(|e| e.to_string())?;
    Ok(canon(&read_flat(&out)?))
}

/// The differences between two trees, readable; `None` when equal.
pub fn diff_report(want: &Canon, got: &Canon, want_name: &str, got_name: &str) -> Option<String> {
    if want == got {
        return None;
    }
    let mut msg = String::new();
    for (p, w) in &want.paths {
        match got.paths.get(p) {
            None => msg.push_str(&format!("missing  {p}: {w}\n")),
            Some(g) if g != w => {
                msg.push_str(&format!("differs  {p}: {want_name} {w}, {got_name} {g}\n"))
            }
            _ => {}
        }
    }
    for (p, g) in &got.paths {
        if !want.paths.contains_key(p) {
            msg.push_str(&format!("extra    {p}: {g}\n"));
        }
    }
    if want.links != got.links {
        msg.push_str(&format!(
            "hardlink groups: {want_name} {:?}, {got_name} {:?}\n",
            want.links, got.links
        ));
    }
    Some(msg)
}

/// Assert strata and the model agree, with a readable diff.
pub fn assert_same(layers: &[Vec<u8>]) -> Canon {
    let want = model_of(layers).expect("model");
    let got = strata_of(layers).expect("strata");
    if let Some(msg) = diff_report(&want, &got, "want", "got") {
        panic!("strata differs from the model:\n{msg}");
    }
    got
}

/// A directory tree read into the comparable form (hardlinks by inode).
pub fn read_dir_tree(root: &std::path::Path) -> Tree {
    use std::os::unix::fs::MetadataExt;
    let mut t = Tree::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                stack.push(p.clone());
                Kind::Dir
            } else if ft.is_symlink() {
                Kind::Symlink(
                    std::fs::read_link(&p)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                )
            } else if ft.is_file() {
                Kind::File(std::fs::read(&p).unwrap())
            } else {
                Kind::Fifo
            };
            let ino = if ft.is_file() && m.nlink() > 1 {
                m.ino() as usize
            } else {
                1 << 40 | t.nodes.len()
            };
            t.nodes.insert(
                rel,
                Node {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid() as u64,
                    gid: m.gid() as u64,
                    ino,
                },
            );
        }
    }
    t
}
