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
use std::collections::{BTreeMap, HashMap};
use xxhash_rust::xxh3::Xxh3;

/// One entry of a layer, as `files --json` reports it.
#[derive(Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
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

/// One entry, owned: what `files` shows, plus what `diff` needs. Also the unit of the cache.
#[derive(Serialize, serde::Deserialize, Clone, Debug)]
struct Seen {
    entry: FileEntry,
    /// Normalized hardlink target.
    hardlink_to: Option<Vec<u8>>,
    /// Fingerprint (xxh3-128) of the content (regular files).
    content: Option<String>,
}

/// Per-layer listings kept on disk, keyed by the layer's digest (content-addressed, so they
/// never go stale). Written to a temp name and renamed; unreadable entries are rebuilt.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: Option<std::path::PathBuf>,
}

const CACHE_VERSION: u32 = 2;

#[derive(Serialize, serde::Deserialize)]
struct CachedListing {
    version: u32,
    key: String,
    entries: Vec<Seen>,
}

impl Cache {
    /// `dir`: `--cache-dir`, else `$XDG_CACHE_HOME/strata`, else `~/.cache/strata`.
    pub fn new(dir: Option<std::path::PathBuf>, enabled: bool) -> Cache {
        if !enabled {
            return Cache { dir: None };
        }
        let dir = dir.or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(|x| std::path::PathBuf::from(x).join("strata"))
                .or_else(|| {
                    std::env::var_os("HOME")
                        .map(|h| std::path::PathBuf::from(h).join(".cache/strata"))
                })
        });
        Cache { dir }
    }

    pub fn disabled() -> Cache {
        Cache { dir: None }
    }

    fn key(layer: &Layer) -> Option<String> {
        layer.diff_id.clone().or_else(|| layer.digest.clone())
    }

    fn path(&self, key: &str) -> Option<std::path::PathBuf> {
        let name = key.replace(':', "-");
        if name.contains('/') {
            return None;
        }
        Some(
            self.dir
                .as_ref()?
                .join("listings")
                .join(format!("{name}.json")),
        )
    }

    fn load(&self, layer: &Layer) -> Option<Vec<Seen>> {
        let key = Self::key(layer)?;
        let path = self.path(&key)?;
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice::<CachedListing>(&bytes) {
            Ok(c) if c.version == CACHE_VERSION && c.key == key => Some(c.entries),
            _ => {
                tracing::warn!(
                    "cache entry {} is unreadable; rebuilding it",
                    path.display()
                );
                None
            }
        }
    }

    fn store(&self, layer: &Layer, entries: Vec<Seen>) {
        let (Some(key), Some(dir)) = (Self::key(layer), self.dir.as_ref()) else {
            return;
        };
        let Some(path) = self.path(&key) else { return };
        let listing = CachedListing {
            version: CACHE_VERSION,
            key,
            entries,
        };
        let r = (|| -> std::io::Result<()> {
            let parent = dir.join("listings");
            std::fs::create_dir_all(&parent)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&parent)?;
            serde_json::to_writer(std::io::BufWriter::new(tmp.as_file_mut()), &listing)?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        })();
        if let Err(e) = r {
            tracing::warn!("could not write cache entry {}: {e}", path.display());
        }
    }
}

/// Every entry of one layer's stream, content hashed, read to the stream's true end.
fn read_listing(layer: &Layer, stream: crate::layer::LayerStream) -> Result<Vec<Seen>> {
    let mut rd = TarReader::new(stream);
    let tar_err = |e: crate::tarstream::TarError| Error::Layer {
        layer: layer.label(),
        message: e.to_string(),
    };
    let mut listing: Vec<Seen> = Vec::new();
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
        if kind == EntryType::Regular && !entry.deleted {
            let mut hw = HashSink(Xxh3::new());
            rd.copy_data(&mut hw).map_err(tar_err)?;
            content = Some(format!("{:032x}", hw.0.digest128()));
        }
        listing.push(Seen {
            entry,
            hardlink_to,
            content,
        });
    }
    rd.drain().map_err(tar_err)?;
    Ok(listing)
}

/// Call `f` for each entry of the chosen layers (bottom first) with the layer's index.
/// Listings come from the cache when it has them (no layer data is read then); others are
/// read (verified, content digests computed) and stored in it.
fn each_entry(
    layers: &[&Layer],
    verify: bool,
    cache: &Cache,
    mut f: impl FnMut(usize, Seen) -> Result<()>,
) -> Result<()> {
    let mut cached: HashMap<usize, Vec<Seen>> = HashMap::new();
    for l in layers {
        if let Some(entries) = cache.load(l) {
            cached.insert(l.index, entries);
        }
    }
    let to_read: Vec<&Layer> = layers
        .iter()
        .copied()
        .filter(|l| !cached.contains_key(&l.index))
        .collect();
    let mut pipeline = Pipeline::new(to_read.clone(), verify, None);
    let mut read_i = 0;
    for layer in layers {
        if let Some(entries) = cached.remove(&layer.index) {
            for seen in entries {
                f(layer.index, seen)?;
            }
            continue;
        }
        let stream = pipeline.next_for(layer)?;
        let listing = match read_listing(layer, stream) {
            Ok(l) => l,
            Err(e) => {
                // A corrupt blob usually shows up as a parse error first: name the root cause.
                pipeline.check(read_i, layer)?;
                return Err(e);
            }
        };
        pipeline.check(read_i, layer)?;
        read_i += 1;
        if cache.dir.is_some() {
            cache.store(layer, listing.clone());
        }
        for seen in listing {
            f(layer.index, seen)?;
        }
    }
    Ok(())
}

/// Content fingerprints only tell versions of a file apart (the blob digests are what is
/// verified), so a fast 128-bit hash does: xxh3 runs at memory speed where SHA-256 would
/// double a cold listing's time.
struct HashSink(Xxh3);

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
pub fn files(img: &Image, only: Option<usize>, verify: bool, cache: &Cache) -> Result<FilesReport> {
    let chosen: Vec<&Layer> = img
        .layers
        .iter()
        .filter(|l| only.is_none_or(|o| o == l.index))
        .collect();
    let mut by_layer: BTreeMap<usize, Vec<FileEntry>> =
        chosen.iter().map(|l| (l.index, Vec::new())).collect();
    each_entry(&chosen, verify, cache, |i, seen| {
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
pub struct State {
    pub kind: String,
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub link: Option<String>,
    /// Fingerprint (xxh3-128) of a regular file's content.
    pub content: Option<String>,
    /// The layer that wrote this version.
    pub layer: usize,
    /// A hardlink: its bytes belong to the file it shares, not counted again.
    pub hardlink: bool,
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

pub type Index = HashMap<Vec<u8>, State>;

/// What applying one entry did to the tree.
pub enum Event<'a> {
    Created(&'a [u8], &'a State),
    /// (path, what was there, what is there now)
    Changed(&'a [u8], &'a State, &'a State),
    /// (path, what was there) — deleted by a whiteout, an opaque marker, or a directory
    /// replaced by a non-directory.
    Deleted(&'a [u8], &'a State),
}

/// Remove `p` and everything below it that `doomed` selects.
fn remove_tree(
    index: &mut Index,
    p: &[u8],
    doomed: impl Fn(&[u8], &State) -> bool,
) -> Vec<(Vec<u8>, State)> {
    let mut prefix = p.to_vec();
    prefix.push(b'/');
    let mut keys: Vec<Vec<u8>> = index
        .iter()
        .filter(|(k, s)| {
            (k.as_slice() == p || p.is_empty() || k.starts_with(&prefix)) && doomed(k, s)
        })
        .map(|(k, _)| k.clone())
        .collect();
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
        let mut current = usize::MAX;
        let mut opaque: Vec<Vec<u8>> = Vec::new();
        let index = &mut self.index;
        each_entry(layers, verify, cache, |layer, seen| {
            if layer != current {
                if current != usize::MAX {
                    apply_opaque(index, &mut opaque, current, on);
                }
                current = layer;
            }
            let e = seen.entry;
            let p = e.path.trim_start_matches('/').as_bytes().to_vec();
            match e.kind.as_str() {
                "opaque" => opaque.push(p),
                "whiteout" => {
                    for (k, s) in remove_tree(index, &p, |_, s| s.layer != layer) {
                        on(layer, Event::Deleted(&k, &s));
                    }
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
                                hardlink: true,
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
                            hardlink: false,
                        },
                    };
                    record(index, layer, p, st, on);
                }
            }
            Ok(())
        })?;
        if current != usize::MAX {
            apply_opaque(index, &mut opaque, current, on);
        }
        Ok(())
    }
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
        for (k, s) in remove_tree(index, &dir, |k, s| s.layer != layer && k != dir.as_slice()) {
            on(layer, Event::Deleted(&k, &s));
        }
    }
}

/// A path written by a layer: created, or changed over what was below.
fn record(
    index: &mut Index,
    layer: usize,
    path: Vec<u8>,
    st: State,
    on: &mut dyn FnMut(usize, Event<'_>),
) {
    match index.remove(&path) {
        Some(old) => {
            on(layer, Event::Changed(&path, &old, &st));
            if old.kind == "dir" && st.kind != "dir" {
                // A directory replaced by a non-directory takes its whole subtree along.
                for (k, s) in remove_tree(index, &path, |k, _| k != path.as_slice()) {
                    on(layer, Event::Deleted(&k, &s));
                }
            }
        }
        None => on(layer, Event::Created(&path, &st)),
    }
    index.insert(path, st);
}

/// What differs between two states of a path.
fn what_changed(old: &State, new: &State) -> Vec<String> {
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

fn change(path: &[u8], s: &State, what: Option<Vec<String>>) -> Change {
    Change {
        path: abs(path),
        kind: s.kind.clone(),
        size: s.size,
        what,
    }
}

/// Per-layer changes, in one bottom-up pass.
pub fn diff(img: &Image, only: Option<usize>, verify: bool, cache: &Cache) -> Result<DiffReport> {
    let all: Vec<&Layer> = img.layers.iter().collect();
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
    Walker::new(Index::new()).walk(&all, verify, cache, &mut |layer, ev| {
        let d = &mut out[layer];
        match ev {
            Event::Created(p, s) => d.created.push(change(p, s, None)),
            Event::Changed(p, old, new) => {
                d.changed.push(change(p, new, Some(what_changed(old, new))))
            }
            Event::Deleted(p, old) => d.deleted.push(change(p, old, None)),
        }
    })?;
    let layers = out
        .into_iter()
        .filter(|d| only.is_none_or(|o| o == d.index))
        .collect();
    Ok(DiffReport {
        image: img.reference.clone(),
        layers,
    })
}

#[derive(Serialize, Debug, Default)]
pub struct TreeSummary {
    pub added: usize,
    pub removed: usize,
    pub modified: usize,
    pub added_bytes: u64,
    pub removed_bytes: u64,
    /// Bytes of regular files in each merged tree.
    pub size_a: u64,
    pub size_b: u64,
    /// Bottom layers the two images share (same diff_id), read once.
    pub shared_layers: usize,
}

#[derive(Serialize, Debug)]
pub struct TreeDiff {
    pub image_a: String,
    pub image_b: String,
    pub added: Vec<Change>,
    pub removed: Vec<Change>,
    pub modified: Vec<Change>,
    pub summary: TreeSummary,
}

/// The difference between two images' merged trees. Shared bottom layers are read once.
pub fn diff_images(a: &Image, b: &Image, verify: bool, cache: &Cache) -> Result<TreeDiff> {
    let shared = a
        .layers
        .iter()
        .zip(&b.layers)
        .take_while(|(x, y)| x.diff_id.is_some() && x.diff_id == y.diff_id)
        .count();
    let mut base = Walker::new(Index::new());
    let common: Vec<&Layer> = a.layers[..shared].iter().collect();
    base.walk(&common, verify, cache, &mut |_, _| {})?;
    let mut wa = Walker::new(base.index.clone());
    wa.walk(
        &a.layers[shared..].iter().collect::<Vec<_>>(),
        verify,
        cache,
        &mut |_, _| {},
    )?;
    let mut wb = Walker::new(base.index);
    wb.walk(
        &b.layers[shared..].iter().collect::<Vec<_>>(),
        verify,
        cache,
        &mut |_, _| {},
    )?;
    let file_bytes = |i: &Index| {
        i.values()
            .filter(|s| s.kind == "file")
            .map(|s| s.size)
            .sum::<u64>()
    };
    let mut summary = TreeSummary {
        size_a: file_bytes(&wa.index),
        size_b: file_bytes(&wb.index),
        shared_layers: shared,
        ..Default::default()
    };
    let (mut added, mut removed, mut modified) = (vec![], vec![], vec![]);
    let mut keys: Vec<&Vec<u8>> = wa.index.keys().chain(wb.index.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        match (wa.index.get(k), wb.index.get(k)) {
            (None, Some(s)) => {
                summary.added_bytes += s.size;
                added.push(change(k, s, None));
            }
            (Some(s), None) => {
                summary.removed_bytes += s.size;
                removed.push(change(k, s, None));
            }
            (Some(x), Some(y)) => {
                let what = what_changed(x, y);
                if !what.is_empty() {
                    modified.push(change(k, y, Some(what)));
                }
            }
            (None, None) => {}
        }
    }
    summary.added = added.len();
    summary.removed = removed.len();
    summary.modified = modified.len();
    Ok(TreeDiff {
        image_a: a.reference.clone(),
        image_b: b.reference.clone(),
        added,
        removed,
        modified,
        summary,
    })
}

#[derive(Serialize, Debug)]
pub struct WastedPath {
    pub path: String,
    pub wasted_bytes: u64,
    /// Layers holding copies that do not survive.
    pub layers: Vec<usize>,
}

#[derive(Serialize, Debug)]
pub struct WasteReport {
    pub image: String,
    /// Bytes of file content in lower layers that the final tree does not show: overwritten,
    /// deleted, hidden by an opaque directory or a type change.
    pub wasted_bytes: u64,
    /// Of those, bytes overwritten by identical content (the same file added twice).
    pub duplicate_bytes: u64,
    /// Bytes of file content across all layers.
    pub total_bytes: u64,
    /// (total − wasted) / total; 1 for an image without file content.
    pub efficiency: f64,
    pub top: Vec<WastedPath>,
}

/// Wasted space: every file version that a higher layer overwrites or removes.
pub fn waste(img: &Image, verify: bool, top_n: usize, cache: &Cache) -> Result<WasteReport> {
    let all: Vec<&Layer> = img.layers.iter().collect();
    let mut total = 0u64;
    let mut wasted = 0u64;
    let mut dup = 0u64;
    let mut per_path: HashMap<Vec<u8>, (u64, Vec<usize>)> = HashMap::new();
    // Bytes of a file's own data (a hardlink's belong to the file it shares).
    let bytes = |s: &State| {
        if s.kind == "file" && !s.hardlink {
            s.size
        } else {
            0
        }
    };
    let lost = |p: &[u8], s: &State, per_path: &mut HashMap<Vec<u8>, (u64, Vec<usize>)>| {
        if s.kind == "file" && !s.hardlink && s.size > 0 {
            let e = per_path.entry(p.to_vec()).or_default();
            e.0 += s.size;
            e.1.push(s.layer);
        }
    };
    Walker::new(Index::new()).walk(&all, verify, cache, &mut |_, ev| match ev {
        Event::Created(_, s) => total += bytes(s),
        Event::Changed(p, old, new) => {
            total += bytes(new);
            wasted += bytes(old);
            if bytes(old) > 0 && new.kind == "file" && old.content == new.content {
                dup += old.size;
            }
            lost(p, old, &mut per_path);
        }
        Event::Deleted(p, old) => {
            wasted += bytes(old);
            lost(p, old, &mut per_path);
        }
    })?;
    let mut top: Vec<WastedPath> = per_path
        .into_iter()
        .map(|(p, (b, mut layers))| {
            layers.sort();
            layers.dedup();
            WastedPath {
                path: abs(&p),
                wasted_bytes: b,
                layers,
            }
        })
        .collect();
    top.sort_by(|a, b| {
        b.wasted_bytes
            .cmp(&a.wasted_bytes)
            .then(a.path.cmp(&b.path))
    });
    top.truncate(top_n);
    let efficiency = if total == 0 {
        1.0
    } else {
        (total - wasted) as f64 / total as f64
    };
    Ok(WasteReport {
        image: img.reference.clone(),
        wasted_bytes: wasted,
        duplicate_bytes: dup,
        total_bytes: total,
        efficiency,
        top,
    })
}

pub fn render_tree_diff(d: &TreeDiff) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for c in &d.added {
        let _ = writeln!(s, "+ {:<7} {:>12} {}", c.kind, c.size, c.path);
    }
    for c in &d.removed {
        let _ = writeln!(s, "- {:<7} {:>12} {}", c.kind, c.size, c.path);
    }
    for c in &d.modified {
        let what = c.what.as_ref().map(|w| w.join(", ")).unwrap_or_default();
        let _ = writeln!(s, "~ {:<7} {:>12} {} ({what})", c.kind, c.size, c.path);
    }
    let m = &d.summary;
    let _ = writeln!(
        s,
        "{} added ({} bytes), {} removed ({} bytes), {} modified; files: {} bytes in A, {} bytes in B; {} shared layers read once",
        m.added,
        m.added_bytes,
        m.removed,
        m.removed_bytes,
        m.modified,
        m.size_a,
        m.size_b,
        m.shared_layers
    );
    s
}

pub fn render_waste(w: &WasteReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "Total file bytes:  {}", w.total_bytes);
    let _ = writeln!(
        s,
        "Wasted bytes:      {} ({} of them identical re-additions)",
        w.wasted_bytes, w.duplicate_bytes
    );
    let _ = writeln!(s, "Efficiency:        {:.2}%", w.efficiency * 100.0);
    if !w.top.is_empty() {
        let _ = writeln!(s, "Top wasted paths:");
        for t in &w.top {
            let layers: Vec<String> = t.layers.iter().map(|l| l.to_string()).collect();
            let _ = writeln!(
                s,
                "  {:>12}  {}  (layers {})",
                t.wasted_bytes,
                t.path,
                layers.join(", ")
            );
        }
    }
    s
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

/// A size like `5000`, `20MB`, `1.5GiB`.
fn parse_bytes(s: &str) -> Option<f64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * mult)
}

/// The `--ci` thresholds a report crosses (empty: it passes).
pub fn ci_failures(
    w: &WasteReport,
    max_wasted: Option<&str>,
    min_efficiency: Option<&str>,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if let Some(m) = max_wasted {
        let limit = match m.trim().strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<f64>()
                .ok()
                .map(|p| p / 100.0 * w.total_bytes as f64),
            None => parse_bytes(m),
        }
        .ok_or_else(|| {
            Error::Usage(format!(
                "--max-wasted {m:?}: expected bytes (20MB, 1GiB) or a percentage (10%)"
            ))
        })?;
        if w.wasted_bytes as f64 > limit {
            out.push(format!("{} wasted bytes exceed {m}", w.wasted_bytes));
        }
    }
    if let Some(e) = min_efficiency {
        let pct: f64 = e.trim().trim_end_matches('%').parse().map_err(|_| {
            Error::Usage(format!(
                "--min-efficiency {e:?}: expected a percentage like 95"
            ))
        })?;
        if w.efficiency * 100.0 < pct {
            out.push(format!(
                "efficiency {:.2}% is below {pct}%",
                w.efficiency * 100.0
            ));
        }
    }
    Ok(out)
}
