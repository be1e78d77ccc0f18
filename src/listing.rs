//! What each layer holds (`files`) and what it changed relative to the layers below (`diff`).
//!
//! `files` reads each layer's entries as they are, whiteouts shown as deletions. `diff` makes
//! one bottom-up pass over all layers with a path index (path → type, size, mode, owner, link
//! target, content digest): O(total entries), however deep the history.

use crate::error::{Error, Result};
use crate::image::{Image, Layer};
use crate::layer::Pipeline;
use crate::pathname::{normalize, split_parent, trim_dir};
use crate::tarstream::{EntryType, TarReader};
use crate::whiteout::{self, Marker};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

/// One entry of a layer, as `files --json` reports it.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Absolute path (`/etc/passwd`).
    pub path: String,
    /// file, dir, symlink, hardlink, char, block, fifo, other; `whiteout` or `opaque` for
    /// deletions.
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Symlink or hardlink target (`null` otherwise).
    pub link: Option<String>,
    /// A whiteout (the path is deleted) or an opaque marker (the directory's lower contents are).
    pub deleted: bool,
}

#[derive(Serialize, Debug)]
pub struct LayerFiles {
    pub index: usize,
    pub digest: Option<String>,
    pub diff_id: Option<String>,
    pub entries: Vec<FileEntry>,
}

#[derive(Serialize, Debug)]
pub struct FilesReport {
    pub image: String,
    pub layers: Vec<LayerFiles>,
}

fn abs(p: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(p))
}

/// One entry, owned: what `files` shows, plus what `diff` needs.
struct Seen {
    entry: FileEntry,
    /// Normalized hardlink target.
    hardlink_to: Option<Vec<u8>>,
    /// sha256 of the content (regular files, when asked).
    content: Option<String>,
}

/// Call `f` for each entry of the chosen layers (bottom first) with the layer's index; with
/// `hash`, regular files' content digests are computed on the way.
fn each_entry(
    layers: &[&Layer],
    verify: bool,
    hash: bool,
    mut f: impl FnMut(usize, Seen) -> Result<()>,
) -> Result<()> {
    let mut pipeline = Pipeline::new(layers.to_vec(), verify, None);
    for (i, layer) in layers.iter().enumerate() {
        let stream = pipeline
            .next_stream()
            .ok_or_else(|| Error::Format("layer pipeline ended early".into()))?
            .map_err(|e| Error::Layer {
                layer: layer.label(),
                message: format!("read error: {e}"),
            })?;
        let mut rd = TarReader::new(stream);
        let tar_err = |e: crate::tarstream::TarError| Error::Layer {
            layer: layer.label(),
            message: e.to_string(),
        };
        while let Some(h) = rd.next_entry().map_err(tar_err)? {
            let norm = normalize(h.path).map_err(|e| Error::Entry {
                layer: layer.label(),
                path: String::from_utf8_lossy(h.path).into_owned(),
                message: e.to_string(),
            })?;
            let path = trim_dir(&norm).to_vec();
            let Some(entry) = entry_of(&h, &path) else {
                continue;
            };
            let kind = h.kind;
            let hardlink_to = (kind == EntryType::HardLink).then(|| {
                normalize(h.link)
                    .map(|t| trim_dir(&t).to_vec())
                    .unwrap_or_default()
            });
            let mut content = None;
            if hash && kind == EntryType::Regular && !entry.deleted {
                let mut hw = HashSink(Sha256::new());
                rd.copy_data(&mut hw).map_err(tar_err)?;
                content = Some(hex::encode(hw.0.finalize()));
            }
            f(
                layer.index,
                Seen {
                    entry,
                    hardlink_to,
                    content,
                },
            )?;
        }
        rd.drain().map_err(tar_err)?;
        pipeline.verified(i).map_err(|message| Error::Layer {
            layer: layer.label(),
            message,
        })?;
    }
    Ok(())
}

struct HashSink(Sha256);

impl std::io::Write for HashSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn entry_of(h: &crate::tarstream::Header<'_>, path: &[u8]) -> Option<FileEntry> {
    if path.is_empty() || whiteout::in_aufs_meta_dir(path) {
        return None;
    }
    let (dir, base) = split_parent(path);
    let link = match h.kind {
        EntryType::Symlink | EntryType::HardLink => {
            Some(String::from_utf8_lossy(h.link).into_owned())
        }
        _ => None,
    };
    let mut e = FileEntry {
        path: abs(path),
        kind: h.kind.name().to_string(),
        size: h.size,
        mode: h.mode() & 0o7777,
        uid: h.uid(),
        gid: h.gid(),
        mtime: h.mtime(),
        link,
        deleted: false,
    };
    match whiteout::classify(base) {
        Ok(Marker::AufsMeta) => return None,
        Ok(Marker::Opaque) => {
            e.path = abs(dir);
            e.kind = "opaque".into();
            e.deleted = true;
        }
        Ok(Marker::Whiteout(name)) => {
            let mut p = dir.to_vec();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(name);
            e.path = abs(&p);
            e.kind = "whiteout".into();
            e.deleted = true;
            e.size = 0;
        }
        _ => {}
    }
    Some(e)
}

/// Every entry of the chosen layers (all when `only` is `None`).
pub fn files(img: &Image, only: Option<usize>, verify: bool) -> Result<FilesReport> {
    let chosen: Vec<&Layer> = img
        .layers
        .iter()
        .filter(|l| only.is_none_or(|o| o == l.index))
        .collect();
    let mut by_layer: BTreeMap<usize, Vec<FileEntry>> =
        chosen.iter().map(|l| (l.index, Vec::new())).collect();
    each_entry(&chosen, verify, false, |i, seen| {
        by_layer.entry(i).or_default().push(seen.entry);
        Ok(())
    })?;
    Ok(FilesReport {
        image: img.reference.clone(),
        layers: chosen
            .iter()
            .map(|l| LayerFiles {
                index: l.index,
                digest: l.digest.clone(),
                diff_id: l.diff_id.clone(),
                entries: by_layer.remove(&l.index).unwrap_or_default(),
            })
            .collect(),
    })
}

/// A path as it stands after some layers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    kind: String,
    size: u64,
    mode: u32,
    uid: u64,
    gid: u64,
    link: Option<String>,
    content: Option<String>,
    layer: usize,
}

#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    /// For `changed`: what differs from below (content, mode, owner, type, link).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub what: Option<Vec<String>>,
}

#[derive(Serialize, Debug)]
pub struct LayerDiff {
    pub index: usize,
    pub digest: Option<String>,
    pub diff_id: Option<String>,
    pub created: Vec<Change>,
    pub changed: Vec<Change>,
    pub deleted: Vec<Change>,
}

#[derive(Serialize, Debug)]
pub struct DiffReport {
    pub image: String,
    pub layers: Vec<LayerDiff>,
}

type Index = HashMap<Vec<u8>, State>;

/// Remove `p` and everything below it that `doomed` selects; report them.
fn remove_tree(index: &mut Index, p: &[u8], doomed: impl Fn(&State) -> bool) -> Vec<Change> {
    let mut prefix = p.to_vec();
    prefix.push(b'/');
    let keys: Vec<Vec<u8>> = index
        .iter()
        .filter(|(k, s)| (k.as_slice() == p || p.is_empty() || k.starts_with(&prefix)) && doomed(s))
        .map(|(k, _)| k.clone())
        .collect();
    let mut gone: Vec<Change> = keys
        .into_iter()
        .filter_map(|k| {
            index.remove(&k).map(|s| Change {
                path: abs(&k),
                kind: s.kind,
                size: s.size,
                what: None,
            })
        })
        .collect();
    gone.sort_by(|a, b| a.path.cmp(&b.path));
    gone
}

/// Opaque markers of a layer hide the lower-layer children of their directory (wherever the
/// marker sat, so applied when the layer is done).
fn apply_opaque(index: &mut Index, opaque: &mut Vec<Vec<u8>>, layer: usize, d: &mut LayerDiff) {
    for dir in opaque.drain(..) {
        let gone = remove_tree(index, &dir, |s| s.layer != layer);
        d.deleted
            .extend(gone.into_iter().filter(|c| c.path != abs(&dir)));
    }
}

/// A path written by a layer: created, or changed (with what changed) over what was below.
fn record(index: &mut Index, d: &mut LayerDiff, path: Vec<u8>, st: State) {
    match index.get(&path) {
        Some(old) => {
            let mut what = Vec::new();
            if old.kind != st.kind {
                what.push("type".to_string());
            }
            if old.content != st.content || (st.kind == "file" && old.size != st.size) {
                what.push("content".into());
            }
            if old.mode != st.mode {
                what.push("mode".into());
            }
            if old.uid != st.uid || old.gid != st.gid {
                what.push("owner".into());
            }
            if old.link != st.link {
                what.push("link".into());
            }
            d.changed.push(Change {
                path: abs(&path),
                kind: st.kind.clone(),
                size: st.size,
                what: Some(what),
            });
            if old.kind == "dir" && st.kind != "dir" {
                // A directory replaced by a non-directory takes its whole subtree along.
                let mut gone = remove_tree(index, &path, |_| true);
                gone.retain(|c| c.path != abs(&path));
                d.deleted.extend(gone);
            }
        }
        None => d.created.push(Change {
            path: abs(&path),
            kind: st.kind.clone(),
            size: st.size,
            what: None,
        }),
    }
    index.insert(path, st);
}

/// Per-layer changes, in one bottom-up pass.
pub fn diff(img: &Image, only: Option<usize>, verify: bool) -> Result<DiffReport> {
    let all: Vec<&Layer> = img.layers.iter().collect();
    let mut index: HashMap<Vec<u8>, State> = HashMap::new();
    let mut out: Vec<LayerDiff> = img
        .layers
        .iter()
        .map(|l| LayerDiff {
            index: l.index,
            digest: l.digest.clone(),
            diff_id: l.diff_id.clone(),
            created: vec![],
            changed: vec![],
            deleted: vec![],
        })
        .collect();
    let mut current = usize::MAX;
    let mut opaque: Vec<Vec<u8>> = Vec::new();
    each_entry(&all, verify, true, |layer, seen| {
        if layer != current {
            if current != usize::MAX {
                apply_opaque(&mut index, &mut opaque, current, &mut out[current]);
            }
            current = layer;
        }
        let e = seen.entry;
        let p = e.path.trim_start_matches('/').as_bytes().to_vec();
        match e.kind.as_str() {
            "opaque" => opaque.push(p),
            "whiteout" => {
                let gone = remove_tree(&mut index, &p, |s| s.layer != layer);
                out[layer].deleted.extend(gone);
            }
            _ => {
                let st = match &seen.hardlink_to {
                    // A hardlink is its target's file.
                    Some(t) => {
                        let target = index.get(t).cloned();
                        State {
                            kind: "file".into(),
                            size: target.as_ref().map(|t| t.size).unwrap_or(0),
                            mode: e.mode,
                            uid: e.uid,
                            gid: e.gid,
                            link: None,
                            content: target.and_then(|t| t.content),
                            layer,
                        }
                    }
                    None => State {
                        kind: e.kind.clone(),
                        size: e.size,
                        mode: e.mode,
                        uid: e.uid,
                        gid: e.gid,
                        link: e.link.clone(),
                        content: seen.content,
                        layer,
                    },
                };
                record(&mut index, &mut out[layer], p, st);
            }
        }
        Ok(())
    })?;
    if current != usize::MAX {
        apply_opaque(&mut index, &mut opaque, current, &mut out[current]);
    }
    let layers = out
        .into_iter()
        .filter(|d| only.is_none_or(|o| o == d.index))
        .collect();
    Ok(DiffReport {
        image: img.reference.clone(),
        layers,
    })
}

fn mode_string(kind: &str, mode: u32) -> String {
    let t = match kind {
        "dir" => 'd',
        "symlink" => 'l',
        "hardlink" => 'h',
        "char" => 'c',
        "block" => 'b',
        "fifo" => 'p',
        _ => '-',
    };
    let mut s = String::from(t);
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        let bit = 1 << (8 - i);
        let special = match i {
            2 if mode & 0o4000 != 0 => Some('s'),
            5 if mode & 0o2000 != 0 => Some('s'),
            8 if mode & 0o1000 != 0 => Some('t'),
            _ => None,
        };
        s.push(match (special, mode & bit != 0) {
            (Some(c), true) => c,
            (Some(c), false) => c.to_ascii_uppercase(),
            (None, true) => c,
            (None, false) => '-',
        });
    }
    s
}

fn layer_title(index: usize, digest: &Option<String>, diff_id: &Option<String>) -> String {
    let id = digest
        .as_deref()
        .or(diff_id.as_deref())
        .map(crate::image::short_digest)
        .unwrap_or("-");
    format!("layer {index} ({id})")
}

pub fn render_files(r: &FilesReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for l in &r.layers {
        let _ = writeln!(
            s,
            "{}: {} entries",
            layer_title(l.index, &l.digest, &l.diff_id),
            l.entries.len()
        );
        for e in &l.entries {
            if e.deleted {
                let what = if e.kind == "opaque" {
                    "opaque directory"
                } else {
                    "deleted"
                };
                let _ = writeln!(s, "  {what:<38} {}", e.path);
                continue;
            }
            let link = match (&e.link, e.kind.as_str()) {
                (Some(l), "hardlink") => format!(
                    " link to /{}",
                    l.trim_start_matches("./").trim_start_matches('/')
                ),
                (Some(l), _) => format!(" -> {l}"),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "  {} {:>5}/{:<5} {:>12} {}{}",
                mode_string(&e.kind, e.mode),
                e.uid,
                e.gid,
                e.size,
                e.path,
                link
            );
        }
    }
    s
}

pub fn render_diff(r: &DiffReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for l in &r.layers {
        let _ = writeln!(
            s,
            "{}: {} created, {} changed, {} deleted",
            layer_title(l.index, &l.digest, &l.diff_id),
            l.created.len(),
            l.changed.len(),
            l.deleted.len()
        );
        for c in &l.created {
            let _ = writeln!(s, "  + {:<7} {:>12} {}", c.kind, c.size, c.path);
        }
        for c in &l.changed {
            let what = c
                .what
                .as_ref()
                .map(|w| {
                    if w.is_empty() {
                        "metadata".to_string()
                    } else {
                        w.join(", ")
                    }
                })
                .unwrap_or_default();
            let _ = writeln!(s, "  ~ {:<7} {:>12} {} ({what})", c.kind, c.size, c.path);
        }
        for c in &l.deleted {
            let _ = writeln!(s, "  - {:<7} {:>12} {}", c.kind, c.size, c.path);
        }
    }
    s
}
