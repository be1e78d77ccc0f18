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
use std::io::Write;
use xxhash_rust::xxh3::Xxh3;

mod cache;
pub mod render;
mod spill;
pub mod walker;

use crate::control::{Cancel, ProgressRef};
pub use cache::Cache;
pub use render::{ci_failures, render_tree_diff, render_waste};
use spill::SpillList;
use walker::{Event, Kind, Node, Paths, State, Walker, What, what_changed};

/// One entry of a layer, as `files --json` reports it.
#[derive(Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Absolute path (`/etc/passwd`).
    pub path: String,
    /// What the entry is (`type` in JSON).
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Bytes of data (0 for all but regular files and other types with data).
    pub size: u64,
    /// Permission bits (with setuid, setgid and sticky).
    pub mode: u32,
    /// Owner's uid.
    pub uid: u64,
    /// Group's gid.
    pub gid: u64,
    /// Modification time, in seconds since the epoch.
    pub mtime: u64,
    /// Symlink or hardlink target (`null` otherwise).
    pub link: Option<String>,
    /// A whiteout (the path is deleted) or an opaque marker (the directory's lower contents are).
    pub deleted: bool,
}

/// What a listed entry is: a tar entry type, or one of the two deletion markers. Serialized
/// as the lowercase name (`file`, `dir`, `symlink`, `hardlink`, `char`, `block`, `fifo`,
/// `other`, `whiteout`, `opaque`).
#[derive(Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A hard link to an earlier entry.
    Hardlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
    /// Any other tar entry type.
    Other,
    /// `.wh.NAME`: NAME and its subtree are deleted.
    Whiteout,
    /// `.wh..wh..opq`: the directory's lower-layer contents are deleted.
    Opaque,
}

impl EntryKind {
    /// The kind of a tar entry.
    pub fn of(t: EntryType) -> EntryKind {
        match t {
            EntryType::Regular => EntryKind::File,
            EntryType::HardLink => EntryKind::Hardlink,
            EntryType::Symlink => EntryKind::Symlink,
            EntryType::Char => EntryKind::Char,
            EntryType::Block => EntryKind::Block,
            EntryType::Directory => EntryKind::Dir,
            EntryType::Fifo => EntryKind::Fifo,
            EntryType::Other(_) => EntryKind::Other,
        }
    }

    /// The name as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Hardlink => "hardlink",
            EntryKind::Char => "char",
            EntryKind::Block => "block",
            EntryKind::Fifo => "fifo",
            EntryKind::Other => "other",
            EntryKind::Whiteout => "whiteout",
            EntryKind::Opaque => "opaque",
        }
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Human-readable text.
    Text,
    /// One JSON document (the shapes are in the README), written as it is produced.
    Json,
}

fn wio(e: std::io::Error) -> Error {
    Error::output("writing output", e)
}

fn json_str(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn abs(p: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(p))
}

/// One entry, owned: what `files` shows, plus what `diff` needs. Also the unit of the cache.
#[derive(Serialize, serde::Deserialize, Clone, Debug)]
pub(crate) struct Seen {
    /// The entry as listed.
    pub entry: FileEntry,
    /// The path's bytes, relative, when they are not UTF-8 (`entry.path` is then lossy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_path: Option<Vec<u8>>,
    /// Normalized hardlink target.
    pub hardlink_to: Option<Vec<u8>>,
    /// Fingerprint (xxh3-128, hex) of the content (regular files).
    pub content: Option<String>,
}

/// What [`each_entry`] hands over, in order: per layer, `Start`, its entries, `End`.
pub(crate) enum Item<'a> {
    Start(&'a Layer),
    Entry(&'a Layer, Seen),
    End(&'a Layer),
}

/// Every entry of one layer's stream, content fingerprinted, read to the stream's true end.
fn read_listing(
    layer: &Layer,
    stream: crate::layer::LayerStream,
    f: &mut dyn FnMut(Seen) -> Result<()>,
) -> Result<()> {
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
        let Some((entry, key)) = entry_of(&h, &path) else {
            continue;
        };
        // The listed path is text; a name that is not UTF-8 keeps its bytes for the walk.
        let raw_path = std::str::from_utf8(&key).is_err().then_some(key);
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
        f(Seen {
            entry,
            raw_path,
            hardlink_to,
            content,
        })?;
    }
    rd.drain().map_err(tar_err)
}

/// How a listing reads its layers: verified or not, through the listing cache, until
/// cancelled, telling `progress` of the stored bytes it reads.
#[derive(Clone)]
pub struct Reading<'a> {
    /// Check blob digests and diff_ids (only a verified listing is cached).
    pub verify: bool,
    /// Listings already made, and where new ones go.
    pub cache: &'a Cache,
    /// Stops the reading when tripped.
    pub cancel: &'a Cancel,
    /// Told of every chunk of stored bytes read (layers the cache answers for read none).
    pub progress: Option<ProgressRef>,
}

impl<'a> Reading<'a> {
    /// Reading without progress reports.
    pub fn new(verify: bool, cache: &'a Cache, cancel: &'a Cancel) -> Self {
        Reading {
            verify,
            cache,
            cancel,
            progress: None,
        }
    }
}

/// The stored bytes a listing of `layers` reads: those of the layers the cache has no
/// listing for (what a progress bar's total should be).
pub fn bytes_to_read<'l>(layers: impl IntoIterator<Item = &'l Layer>, cache: &Cache) -> u64 {
    layers
        .into_iter()
        .filter(|l| !cache.has(l))
        .map(Layer::stored_size)
        .sum()
}

/// Feed `f` the entries of the chosen layers, bottom first, one at a time. Listings come from
/// the cache when it has them (no layer data is read then); other layers are read (verified,
/// contents fingerprinted) and their listings written to the cache on the way. Memory does
/// not grow with the layers: nothing is collected here.
pub(crate) fn each_entry(
    layers: &[&Layer],
    read: &Reading<'_>,
    f: &mut dyn FnMut(Item<'_>) -> Result<()>,
) -> Result<()> {
    let r = each_entry_of(layers, read, f);
    match r {
        Err(_) if read.cancel.is_cancelled() => Err(Error::Cancelled),
        r => r,
    }
}

fn each_entry_of(
    layers: &[&Layer],
    read: &Reading<'_>,
    f: &mut dyn FnMut(Item<'_>) -> Result<()>,
) -> Result<()> {
    let (verify, cache, cancel) = (read.verify, read.cache, read.cancel);
    let found: Vec<Option<cache::Cached>> = layers.iter().map(|l| cache.find(l)).collect();
    let to_read: Vec<&Layer> = layers
        .iter()
        .zip(&found)
        .filter(|(_, c)| c.is_none())
        .map(|(l, _)| *l)
        .collect();
    let mut pipeline = Pipeline::new(to_read, verify, read.progress.clone(), cancel);
    let mut read_i = 0;
    for (layer, cached) in layers.iter().zip(&found) {
        f(Item::Start(layer))?;
        match cached {
            Some(c) => cache.replay(c, &mut |seen| {
                cancel.check()?;
                f(Item::Entry(layer, seen))
            })?,
            None => {
                let stream = pipeline.next_for(layer)?;
                // Only a verified layer's listing may stand for its digest in the cache.
                let mut writer = if verify { cache.writer(layer) } else { None };
                let r = read_listing(layer, stream, &mut |seen| {
                    cancel.check()?;
                    if let Some(w) = &mut writer
                        && let Err(e) = w.add(&seen)
                    {
                        tracing::warn!("cannot write cache entry {}: {e}", w.dest().display());
                        writer = None;
                    }
                    f(Item::Entry(layer, seen))
                });
                if let Err(e) = r {
                    // A corrupt blob usually shows up as a parse error first: name the root
                    // cause. (Not when the consumer stopped: no need to hash the rest.)
                    if !matches!(e, Error::Stopped) {
                        pipeline.check(read_i, layer)?;
                    }
                    return Err(e);
                }
                pipeline.check(read_i, layer)?;
                read_i += 1;
                if let Some(w) = writer {
                    w.finish();
                }
            }
        }
        f(Item::End(layer))?;
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

/// The entry as listed, and the path it is about as raw bytes (a whiteout's target, an opaque
/// marker's directory).
fn entry_of(h: &crate::tarstream::Header<'_>, path: &[u8]) -> Option<(FileEntry, Vec<u8>)> {
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
        kind: EntryKind::of(h.kind),
        size: h.size,
        mode: h.mode() & 0o7777,
        uid: h.uid(),
        gid: h.gid(),
        mtime: h.mtime(),
        link,
        deleted: false,
    };
    let key = match whiteout::classify(base) {
        Ok(Marker::AufsMeta) => return None,
        Ok(Marker::Opaque) => {
            e.path = abs(dir);
            e.kind = EntryKind::Opaque;
            e.deleted = true;
            dir.to_vec()
        }
        Ok(Marker::Whiteout(name)) => {
            let mut p = dir.to_vec();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(name);
            e.path = abs(&p);
            e.kind = EntryKind::Whiteout;
            e.deleted = true;
            e.size = 0;
            p
        }
        _ => path.to_vec(),
    };
    Some((e, key))
}

/// Lines held back until a count can be printed before them: in memory up to 1 MiB, then in
/// an unnamed temp file.
#[derive(Default)]
struct HeldLines {
    count: u64,
    mem: Vec<u8>,
    file: Option<std::fs::File>,
}

impl HeldLines {
    const MEM: usize = 1 << 20;

    fn push(&mut self, line: &[u8]) -> Result<()> {
        self.count += 1;
        self.mem.extend_from_slice(line);
        if self.mem.len() > Self::MEM {
            let spill = |e| Error::io("writing a temp file of held-back lines", e);
            if self.file.is_none() {
                self.file = Some(tempfile::tempfile().map_err(spill)?);
            }
            if let Some(f) = self.file.as_mut() {
                f.write_all(&self.mem).map_err(spill)?;
            }
            self.mem.clear();
        }
        Ok(())
    }

    fn replay(&mut self, out: &mut dyn Write) -> Result<()> {
        if let Some(mut f) = self.file.take() {
            use std::io::Seek;
            let back = |e| Error::io("reading back held-back lines", e);
            f.seek(std::io::SeekFrom::Start(0)).map_err(back)?;
            std::io::copy(&mut f, out).map_err(wio)?;
        }
        out.write_all(&self.mem).map_err(wio)?;
        self.mem.clear();
        Ok(())
    }
}

/// `files`: every entry of the chosen layers (all when `only` is `None`), written to `out`
/// as the layers are read — one JSON line per entry, or a table per layer.
pub fn write_files(
    img: &Image,
    only: Option<usize>,
    read: &Reading<'_>,
    style: Style,
    out: &mut dyn Write,
) -> Result<()> {
    let chosen: Vec<&Layer> = img
        .layers
        .iter()
        .filter(|l| only.is_none_or(|o| o == l.index))
        .collect();
    if style == Style::Json {
        write!(
            out,
            "{{\"image\": {}, \"layers\": [",
            json_str(&img.reference)
        )
        .map_err(wio)?;
    }
    let mut first_layer = true;
    let mut first_entry = true;
    // Text needs the entry count first: one layer's lines are held back — past 1 MiB in an
    // unnamed temp file, so a layer of a million entries costs no more memory than JSON.
    let mut table = HeldLines::default();
    each_entry(&chosen, read, &mut |item| {
        match (item, style) {
            (Item::Start(l), Style::Json) => {
                let sep = if first_layer { "" } else { "," };
                first_layer = false;
                first_entry = true;
                write!(
                    out,
                    "{sep}\n {{\"index\": {}, \"digest\": {}, \"diff_id\": {}, \"entries\": [",
                    l.index,
                    json_str(&l.digest),
                    json_str(&l.diff_id)
                )
                .map_err(wio)?;
            }
            (Item::Entry(_, seen), Style::Json) => {
                let sep = if first_entry { "" } else { "," };
                first_entry = false;
                write!(out, "{sep}\n  {}", json_str(&seen.entry)).map_err(wio)?;
            }
            (Item::End(_), Style::Json) => {
                let nl = if first_entry { "" } else { "\n " };
                write!(out, "{nl}]}}").map_err(wio)?;
            }
            (Item::Start(_), Style::Text) => table = HeldLines::default(),
            (Item::Entry(_, seen), Style::Text) => {
                table.push(render::file_line(&seen.entry).as_bytes())?
            }
            (Item::End(l), Style::Text) => {
                let title = render::files_title(l.index, &l.digest, &l.diff_id, table.count);
                out.write_all(title.as_bytes()).map_err(wio)?;
                table.replay(out)?;
            }
        }
        Ok(())
    })?;
    if style == Style::Json {
        let nl = if first_layer { "" } else { "\n" };
        writeln!(out, "{nl}]}}").map_err(wio)?;
    }
    out.flush().map_err(wio)
}

/// A path a layer (or another image) created, changed or deleted, as `diff` reports it.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Absolute path.
    pub path: String,
    /// What the path is (`file`, `dir`, `symlink`, …; `type` in JSON).
    #[serde(rename = "type")]
    pub kind: String,
    /// Bytes of data (the new ones for `changed`, the last ones for `deleted`).
    pub size: u64,
    /// Permission bits (the new ones for `changed`, the last ones for `deleted`).
    pub mode: u32,
    /// For `changed`: what differs from below (content, mode, owner, type, link).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub what: Option<Vec<String>>,
}

fn change(path: &[u8], s: &State, what: Option<Vec<String>>) -> Change {
    Change {
        path: abs(path),
        kind: s.kind.as_str().to_string(),
        size: s.size(),
        mode: s.mode(),
        what,
    }
}

/// A change of the layer being walked, held back until the layer is written: the path is a
/// node of the walk's tree, named only when written.
#[derive(Clone)]
struct Pending {
    id: crate::pathtree::NodeId,
    /// What is shown: the new state (created, changed) or the one that went (deleted).
    shown: State,
    /// The path's state below this layer, if it had one (changed, deleted).
    before: Option<State>,
}

impl spill::Record for Pending {
    const SIZE: usize = 53;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.shown.to_bytes());
        out.push(u8::from(self.before.is_some()));
        out.extend_from_slice(&self.before.as_ref().map_or([0; 24], State::to_bytes));
    }
    fn get(b: &[u8]) -> Self {
        let state = |i: usize| {
            let mut w = [0u8; 24];
            w.copy_from_slice(&b[i..i + 24]);
            State::from_bytes(&w)
        };
        Pending {
            id: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            shown: state(4),
            before: (b[28] != 0).then(|| state(29)),
        }
    }
}

impl Pending {
    /// The record of a path whose state went from `before` to `after` in a layer, and the list
    /// it goes in; none for a path the layer both made and removed.
    fn of(
        id: crate::pathtree::NodeId,
        before: Option<State>,
        after: Option<State>,
    ) -> Option<(Class, Pending)> {
        let class = Class::of(before.as_ref(), after.as_ref())?;
        let shown = match class {
            Class::Deleted => before.clone()?,
            _ => after?,
        };
        Some((class, Pending { id, shown, before }))
    }

    fn change(&self, paths: &Paths, changed: bool) -> Change {
        let s = &self.shown;
        Change {
            path: abs(&paths.path_of(self.id)),
            kind: s.kind.as_str().to_string(),
            size: s.size(),
            mode: s.mode(),
            what: changed.then(|| {
                self.before
                    .as_ref()
                    .map_or(What::default(), |b| what_changed(b, s))
                    .names()
            }),
        }
    }
}

/// Which list a record belongs in, from the path's state before the layer and after it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Created,
    Changed,
    Deleted,
}

impl Class {
    fn of(before: Option<&State>, after: Option<&State>) -> Option<Class> {
        match (before, after) {
            (None, Some(_)) => Some(Class::Created),
            (Some(_), Some(_)) => Some(Class::Changed),
            (Some(_), None) => Some(Class::Deleted),
            (None, None) => None,
        }
    }
}

/// A layer's records, by class, held back until the layer is done.
#[derive(Default)]
struct LayerRecords {
    created: SpillList<Pending>,
    changed: SpillList<Pending>,
    deleted: SpillList<Pending>,
}

impl LayerRecords {
    fn list(&mut self, c: Class) -> &mut SpillList<Pending> {
        match c {
            Class::Created => &mut self.created,
            Class::Changed => &mut self.changed,
            Class::Deleted => &mut self.deleted,
        }
    }
}

/// The diff of the layers as they are walked. A layer's records are held back until the
/// layer is done — read to its end and its digest checked, so nothing of a layer that fails
/// verification is printed — 512 of each kind in memory, the rest in an unnamed temporary
/// file: a base layer's creations, every path of the image, cost no memory.
///
/// A path is listed once per layer, with its net change: a layer may touch a path twice (an
/// entry under a directory the layer creates later, a whiteout of a directory whose new
/// contents come in the same layer); the first record holds the state from below, and the
/// path's last state is kept aside until the layer is written.
struct DiffWriter<'o> {
    image: &'o str,
    style: Style,
    out: &'o mut dyn Write,
    layers_written: usize,
    records: LayerRecords,
    /// Nodes this layer has a record for, one bit each.
    touched: Vec<u64>,
    /// Nodes touched again: their state after the layer so far.
    again: hashbrown::HashMap<crate::pathtree::NodeId, Option<State>>,
}

impl DiffWriter<'_> {
    fn start(&mut self) -> std::io::Result<()> {
        if self.style == Style::Json {
            write!(
                self.out,
                "{{\"image\": {}, \"layers\": [",
                json_str(&self.image)
            )?;
        }
        Ok(())
    }

    /// An event of the layer being walked: `before` and `after` are the path's states around it.
    fn event(
        &mut self,
        id: crate::pathtree::NodeId,
        before: Option<&State>,
        after: Option<&State>,
    ) -> std::io::Result<()> {
        let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
        if self.touched.len() <= word {
            self.touched.resize(word + 1, 0);
        }
        if self.touched[word] & bit != 0 {
            self.again.insert(id, after.cloned());
            return Ok(());
        }
        self.touched[word] |= bit;
        match Pending::of(id, before.cloned(), after.cloned()) {
            Some((class, p)) => self.records.list(class).push(p),
            None => Ok(()),
        }
    }

    /// Paths the layer touched more than once get one record, of their net change, where
    /// their first was.
    fn settle(&mut self) -> std::io::Result<()> {
        if self.again.is_empty() {
            return Ok(());
        }
        let mut old = std::mem::take(&mut self.records);
        let mut new = LayerRecords::default();
        for class in [Class::Created, Class::Changed, Class::Deleted] {
            old.list(class).drain(&mut |p| {
                let Some(after) = self.again.get(&p.id) else {
                    return new.list(class).push(p);
                };
                match Pending::of(p.id, p.before, after.clone()) {
                    Some((net, p)) => new.list(net).push(p),
                    None => Ok(()), // made and removed by the same layer
                }
            })?;
        }
        self.records = new;
        self.again.clear();
        Ok(())
    }

    /// Layer `l` is done: write what was held back, and empty the lists.
    fn layer_done(&mut self, l: &Layer, paths: &Paths) -> std::io::Result<()> {
        self.settle()?;
        self.touched.fill(0);
        let out = &mut *self.out;
        let r = &mut self.records;
        let lists = [
            ("created", &mut r.created, false, '+'),
            ("changed", &mut r.changed, true, '~'),
            ("deleted", &mut r.deleted, false, '-'),
        ];
        match self.style {
            Style::Json => {
                let sep = if self.layers_written == 0 {
                    "\n"
                } else {
                    ",\n"
                };
                write!(
                    out,
                    "{sep} {{\"index\": {}, \"digest\": {}, \"diff_id\": {}",
                    l.index,
                    json_str(&l.digest),
                    json_str(&l.diff_id)
                )?;
                for (name, list, is_changed, _) in lists {
                    write!(out, ", \"{name}\": [")?;
                    let nl = if list.is_empty() { "" } else { "\n " };
                    let mut first = true;
                    list.drain(&mut |p| {
                        let sep = if first { "" } else { "," };
                        first = false;
                        write!(out, "{sep}\n  {}", json_str(&p.change(paths, is_changed)))
                    })?;
                    write!(out, "{nl}]")?;
                }
                write!(out, "}}")?;
            }
            Style::Text => {
                let counts = format!(
                    "{}: {} created, {} changed, {} deleted\n",
                    render::layer_title(l.index, &l.digest, &l.diff_id),
                    lists[0].1.len(),
                    lists[1].1.len(),
                    lists[2].1.len()
                );
                out.write_all(counts.as_bytes())?;
                for (_, list, is_changed, sign) in lists {
                    list.drain(&mut |p| {
                        let line = render::change_line(sign, &p.change(paths, is_changed));
                        out.write_all(line.as_bytes())
                    })?;
                }
            }
        }
        self.layers_written += 1;
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        if self.style == Style::Json {
            let nl = if self.layers_written == 0 { "" } else { "\n" };
            writeln!(self.out, "{nl}]}}")?;
        }
        self.out.flush()
    }
}

/// `diff`: what each layer created, changed and deleted, in one bottom-up pass over the layers
/// (the chosen one needs those below it, not those above), each layer written out when done.
pub fn write_diff(
    img: &Image,
    only: Option<usize>,
    read: &Reading<'_>,
    style: Style,
    out: &mut dyn Write,
) -> Result<()> {
    let all: Vec<&Layer> = img.layers.iter().collect();
    let mut w = DiffWriter {
        image: &img.reference,
        style,
        out,
        layers_written: 0,
        records: LayerRecords::default(),
        touched: Vec::new(),
        again: hashbrown::HashMap::new(),
    };
    w.start().map_err(wio)?;
    // The first error stops the walk: nothing more could be written (`strata diff | head`).
    let mut failed: Option<Error> = None;
    let wanted = |i: usize| only.is_none_or(|o| o == i);
    let held = |e| Error::io("temporary file of the layer's held-back changes", e);
    let mut paths = Paths::new();
    Walker::new().walk(&mut paths, &all, read, &mut |layer, ev| {
        if !wanted(layer) {
            return true;
        }
        let r = match ev {
            Event::Created(n, s) => w.event(n.id, None, Some(s)).map_err(held),
            Event::Changed(n, old, new) => w.event(n.id, Some(old), Some(new)).map_err(held),
            Event::Deleted(n, old) => w.event(n.id, Some(old), None).map_err(held),
            Event::LayerDone(_, paths) => {
                // The chosen layer is all there is to say: the layers above are not read.
                match w.layer_done(all[layer], paths) {
                    Ok(()) if only.is_some() => Err(Error::Stopped),
                    r => r.map_err(wio),
                }
            }
        };
        match r {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })?;
    match failed {
        Some(Error::Stopped) | None => w.finish().map_err(wio),
        Some(e) => Err(e),
    }
}

/// The counts of a [`TreeDiff`].
#[derive(Serialize, Debug, Default)]
pub struct TreeSummary {
    /// Paths in B and not in A.
    pub added: usize,
    /// Paths in A and not in B.
    pub removed: usize,
    /// Paths in both that differ.
    pub modified: usize,
    /// Bytes of the added paths.
    pub added_bytes: u64,
    /// Bytes of the removed paths.
    pub removed_bytes: u64,
    /// Bytes of regular files in A's merged tree.
    pub size_a: u64,
    /// Bytes of regular files in B's merged tree.
    pub size_b: u64,
    /// Bottom layers the two images share (same diff_id), read once.
    pub shared_layers: usize,
}

/// How image B's merged tree differs from image A's (`diff A B`).
#[derive(Serialize, Debug)]
pub struct TreeDiff {
    /// A's reference.
    pub image_a: String,
    /// B's reference.
    pub image_b: String,
    /// Paths only in B (as in B), sorted by path.
    pub added: Vec<Change>,
    /// Paths only in A (as in A), sorted by path.
    pub removed: Vec<Change>,
    /// Paths in both that differ (as in B, with what differs), sorted by path.
    pub modified: Vec<Change>,
    /// The counts.
    pub summary: TreeSummary,
}

/// How many bottom layers two images share (the same diff_ids): `diff A B` reads them once.
pub fn shared_layers(a: &Image, b: &Image) -> usize {
    a.layers
        .iter()
        .zip(&b.layers)
        .take_while(|(x, y)| x.diff_id.is_some() && x.diff_id == y.diff_id)
        .count()
}

/// The difference between two images' merged trees. Shared bottom layers are read once.
pub fn diff_images(a: &Image, b: &Image, read: &Reading<'_>) -> Result<TreeDiff> {
    let shared = shared_layers(a, b);
    // One tree of paths for both images: the same path is the same node.
    let mut paths = Paths::new();
    let mut base = Walker::new();
    let common: Vec<&Layer> = a.layers[..shared].iter().collect();
    base.walk(&mut paths, &common, read, &mut |_, _| true)?;
    let mut wa = base.clone();
    let rest_a: Vec<&Layer> = a.layers[shared..].iter().collect();
    wa.walk(&mut paths, &rest_a, read, &mut |_, _| true)?;
    let mut wb = base;
    let rest_b: Vec<&Layer> = b.layers[shared..].iter().collect();
    wb.walk(&mut paths, &rest_b, read, &mut |_, _| true)?;
    let mut summary = TreeSummary {
        size_a: wa.file_bytes(),
        size_b: wb.file_bytes(),
        shared_layers: shared,
        ..Default::default()
    };
    let (mut added, mut removed, mut modified) = (vec![], vec![], vec![]);
    for id in 1..paths.len() as crate::pathtree::NodeId {
        match (wa.state(id), wb.state(id)) {
            (None, Some(s)) => {
                summary.added_bytes += s.size();
                added.push(change(&paths.path_of(id), s, None));
            }
            (Some(s), None) => {
                summary.removed_bytes += s.size();
                removed.push(change(&paths.path_of(id), s, None));
            }
            (Some(x), Some(y)) => {
                let what = what_changed(x, y);
                if !what.is_empty() {
                    modified.push(change(&paths.path_of(id), y, Some(what.names())));
                }
            }
            (None, None) => {}
        }
    }
    for list in [&mut added, &mut removed, &mut modified] {
        list.sort_by(|x, y| x.path.cmp(&y.path));
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

/// One path of a [`WasteReport`]'s top list.
#[derive(Serialize, Debug)]
pub struct WastedPath {
    /// Absolute path.
    pub path: String,
    /// Bytes of its versions that do not survive, summed over the layers.
    pub wasted_bytes: u64,
    /// Layers holding copies that do not survive.
    pub layers: Vec<usize>,
}

/// Space in an image's layers that its merged tree does not show (`waste`).
#[derive(Serialize, Debug)]
pub struct WasteReport {
    /// The image's reference.
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
    /// The paths that lost the most bytes, most first.
    pub top: Vec<WastedPath>,
}

/// File data a layer lost: a version of the file at node `id`, written by `layer`.
/// 12 bytes: sizes are under 2^48 in the walk (`walker::MAX_SIZE`).
struct Loss {
    id: crate::pathtree::NodeId,
    bytes_low: u32,
    /// The size's high 16 bits, then the layer.
    bytes_high_layer: u32,
}

impl spill::Record for Loss {
    const SIZE: usize = 12;
    fn put(&self, out: &mut Vec<u8>) {
        for v in [self.id, self.bytes_low, self.bytes_high_layer] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    fn get(b: &[u8]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Loss {
            id: u32_at(0),
            bytes_low: u32_at(4),
            bytes_high_layer: u32_at(8),
        }
    }
}

impl Loss {
    fn new(id: crate::pathtree::NodeId, bytes: u64, layer: u16) -> Self {
        Loss {
            id,
            bytes_low: bytes as u32,
            bytes_high_layer: (((bytes >> 32) as u32) & 0xffff) | (u32::from(layer) << 16),
        }
    }

    fn bytes(&self) -> u64 {
        u64::from(self.bytes_low) | (u64::from(self.bytes_high_layer & 0xffff) << 32)
    }

    fn layer(&self) -> u16 {
        (self.bytes_high_layer >> 16) as u16
    }
}

/// The `top_n` paths that lost the most bytes (ties at the cut ordered by path), with the
/// layers whose versions were lost.
fn top_wasted(losses: &mut [Loss], top_n: usize, paths: &Paths) -> Vec<WastedPath> {
    if top_n == 0 {
        return Vec::new();
    }
    losses.sort_unstable_by_key(|l| (l.id, l.layer()));
    let groups = || losses.chunk_by(|a, b| a.id == b.id);
    let total = |g: &[Loss]| g.iter().map(Loss::bytes).sum::<u64>();
    // The smallest total among the top_n largest: the cut.
    let mut heap = std::collections::BinaryHeap::new();
    for g in groups() {
        heap.push(std::cmp::Reverse(total(g)));
        if heap.len() > top_n {
            heap.pop();
        }
    }
    let cut = heap.peek().map_or(0, |r| r.0);
    let mut top: Vec<WastedPath> = groups()
        .filter(|g| total(g) >= cut)
        .map(|g| {
            let mut layers: Vec<usize> = g.iter().map(|l| l.layer() as usize).collect();
            layers.dedup();
            WastedPath {
                path: abs(&paths.path_of(g[0].id)),
                wasted_bytes: total(g),
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
    top
}

/// Wasted space: every file version that a higher layer overwrites or removes, with the
/// `top_n` paths that lost the most.
pub fn waste(img: &Image, top_n: usize, read: &Reading<'_>) -> Result<WasteReport> {
    let all: Vec<&Layer> = img.layers.iter().collect();
    let mut total = 0u64;
    let mut wasted = 0u64;
    let mut dup = 0u64;
    // Every loss of file data, 12 bytes each, kept aside (mostly on file) during the walk;
    // grouped by path once the walk's states are freed, and only the top paths are named.
    let mut losses: SpillList<Loss> = SpillList::default();
    let mut spill_error: Option<std::io::Error> = None;
    // Bytes of a file's own data (a hardlink's belong to the file it shares).
    let bytes = |s: &State| {
        if s.kind == Kind::File && !s.hardlink() {
            s.size()
        } else {
            0
        }
    };
    let mut lost = |n: Node<'_>, s: &State| {
        if bytes(s) > 0
            && spill_error.is_none()
            && let Err(e) = losses.push(Loss::new(n.id, s.size(), s.layer()))
        {
            spill_error = Some(e);
        }
    };
    let mut paths = Paths::new();
    Walker::new().walk(&mut paths, &all, read, &mut |_, ev| {
        match ev {
            Event::Created(_, s) => total += bytes(s),
            Event::Changed(p, old, new) => {
                total += bytes(new);
                wasted += bytes(old);
                if bytes(old) > 0 && new.kind == Kind::File && old.content() == new.content() {
                    dup += old.size();
                }
                lost(p, old);
            }
            Event::Deleted(p, old) => {
                wasted += bytes(old);
                lost(p, old);
            }
            Event::LayerDone(..) => {}
        }
        true
    })?;
    if let Some(e) = spill_error {
        return Err(Error::io("temporary file of the waste figures", e));
    }
    let mut all_losses = Vec::with_capacity(losses.len());
    losses
        .drain(&mut |l| {
            all_losses.push(l);
            Ok(())
        })
        .map_err(|e| Error::io("temporary file of the waste figures", e))?;
    let top = top_wasted(&mut all_losses, top_n, &paths);
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
