//! Walking a layer's sources into the fixed, sorted list of entries its tar will hold.
//!
//! Everything but file contents is read here, once: types, modes, owners, symlink targets,
//! device numbers, xattrs, file sizes. Both passes of a streamed build then write the same
//! headers, and a file whose size or bytes change between them is caught.

use super::plan::LayerSpec;
use crate::error::{Error, Result};
use crate::tarstream::Xattr;
use hashbrown::HashMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What a walked entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// Another path of a file already in the layer (same inode): a tar hardlink.
    Hardlink,
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
}

impl Kind {
    /// The tar typeflag byte of this kind.
    pub fn tar_flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::Hardlink => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        }
    }

    /// The kind's name in messages (a hardlink is a `file`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::File | Kind::Hardlink => "file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
            Kind::Char => "character device",
            Kind::Block => "block device",
            Kind::Fifo => "fifo",
        }
    }

    /// Kinds that are the same thing in the image (a hardlink is a file).
    fn same_as(self, other: Kind) -> bool {
        let norm = |k| if k == Kind::Hardlink { Kind::File } else { k };
        norm(self) == norm(other)
    }
}

/// No source: a parent directory of a destination.
pub const IMPLIED: u32 = u32::MAX;

/// One entry of a layer to be written: everything its tar header says.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Image path, relative, without a trailing `/`.
    pub path: Box<[u8]>,
    /// Index of the source it comes from in the layer, or [`IMPLIED`].
    pub source: u32,
    /// What it is.
    pub kind: Kind,
    /// Permission bits (with setuid, setgid and sticky).
    pub mode: u32,
    /// Owner's uid (0 unless owners are kept).
    pub uid: u32,
    /// Group's gid (0 unless owners are kept).
    pub gid: u32,
    /// Bytes of a regular file (0 for everything else).
    pub size: u64,
    /// The source's device number (`st_rdev`): used for character and block devices.
    pub rdev: u64,
    /// Symlink target, or the image path a hardlink points to.
    pub link: Box<[u8]>,
    /// Extended attributes, sorted by name (empty unless they are recorded).
    pub xattrs: Vec<Xattr>,
    /// (device, inode) of a regular file with more than one link.
    inode: Option<(u64, u64)>,
}

/// A walked layer: its sources and every entry, sorted byte-wise by path.
pub struct LayerTree {
    /// The sources it was walked from.
    pub spec: LayerSpec,
    /// Every entry, in tar order.
    pub entries: Vec<Entry>,
    /// Sum of the regular files' sizes.
    pub file_bytes: u64,
}

impl LayerTree {
    /// Where an entry's content is read from.
    pub fn source_path(&self, e: &Entry) -> Option<PathBuf> {
        let s = self.spec.sources.get(e.source as usize)?;
        let rel = e.path.get(s.dest.len()..)?;
        let rel = rel.strip_prefix(b"/").unwrap_or(rel);
        Some(if rel.is_empty() {
            s.src.clone()
        } else {
            s.src.join(OsStr::from_bytes(rel))
        })
    }
}

/// What a walk records besides types, modes and sizes.
#[derive(Clone, Copy, Debug, Default)]
pub struct WalkOptions {
    /// Keep numeric owners from the source (else 0:0).
    pub keep_owner: bool,
    /// Record extended attributes (except `security.selinux`, host policy, not content).
    pub xattrs: bool,
}

/// Attributes to give a parent directory that no source of this layer provides.
#[derive(Clone, Copy, Debug)]
pub struct DirAttrs {
    /// Permission bits.
    pub mode: u32,
    /// Owner's uid.
    pub uid: u32,
    /// Group's gid.
    pub gid: u32,
}

/// A parent directory's attributes when no layer gave it any: 0755, owned by root.
pub const DEFAULT_DIR: DirAttrs = DirAttrs {
    mode: 0o755,
    uid: 0,
    gid: 0,
};

fn shown(p: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(p))
}

/// Walk every source of `spec` (layer number `index`, for messages). Parents of each
/// destination are added as directories with `parent_attrs` (what a lower layer gave them) or
/// 0755 root; two sources may share directories but not put two things at one path.
pub fn walk(
    spec: &LayerSpec,
    index: usize,
    opts: &WalkOptions,
    parent_attrs: &dyn Fn(&[u8]) -> Option<DirAttrs>,
) -> Result<LayerTree> {
    let mut entries = Vec::new();
    for (i, s) in spec.sources.iter().enumerate() {
        walk_source(&s.src, &s.dest, i as u32, opts, &mut entries)?;
    }
    // A destination that already exists as a directory keeps its attributes (as Docker's COPY
    // into an existing directory does): only what is inside it is new.
    for e in entries.iter_mut() {
        if e.kind == Kind::Dir
            && let Some(s) = spec.sources.get(e.source as usize)
            && s.dest.len() == e.path.len()
            && let Some(a) = parent_attrs(&e.path)
        {
            (e.mode, e.uid, e.gid) = (a.mode, a.uid, a.gid);
        }
    }
    for s in &spec.sources {
        let mut at = 0;
        while let Some(slash) = s.dest[at..].iter().position(|&b| b == b'/') {
            let parent = &s.dest[..at + slash];
            let a = parent_attrs(parent).unwrap_or(DEFAULT_DIR);
            entries.push(dir_entry(parent, a));
            at += slash + 1;
        }
    }
    // Stable: for a path given twice, the source listed first (then an implied parent) wins.
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
    for e in entries {
        if let Some(prev) = out.last()
            && prev.path == e.path
        {
            if prev.kind == Kind::Dir && e.kind == Kind::Dir {
                continue;
            }
            let from = |x: &Entry| match spec.sources.get(x.source as usize) {
                Some(s) => s.src.display().to_string(),
                None => "a parent of another destination".into(),
            };
            return Err(Error::Usage(format!(
                "layer {index}: {} is given twice: a {} from {} and a {} from {}",
                shown(&e.path),
                prev.kind.name(),
                from(prev),
                e.kind.name(),
                from(&e)
            )));
        }
        out.push(e);
    }
    // Tar order: byte-wise by the names as written (directories end in `/`), which still
    // puts every parent before its children.
    out.sort_by(tar_name_cmp);
    // Hardlinks: the first path (in tar order) of an inode is the file, the others link to it.
    let mut first: HashMap<(u64, u64), Box<[u8]>> = HashMap::new();
    let mut file_bytes = 0;
    for e in &mut out {
        if let Some(key) = e.inode {
            match first.get(&key) {
                Some(target) => {
                    e.kind = Kind::Hardlink;
                    e.link = target.clone();
                    e.size = 0;
                }
                None => {
                    first.insert(key, e.path.clone());
                }
            }
        }
        file_bytes += e.size;
    }
    Ok(LayerTree {
        spec: spec.clone(),
        entries: out,
        file_bytes,
    })
}

/// Compare two entries by their tar names (a directory's has a trailing `/`).
fn tar_name_cmp(a: &Entry, b: &Entry) -> std::cmp::Ordering {
    fn name(e: &Entry) -> impl Iterator<Item = u8> + '_ {
        let slash: &'static [u8] = if e.kind == Kind::Dir { b"/" } else { b"" };
        e.path.iter().chain(slash.iter()).copied()
    }
    name(a).cmp(name(b))
}

fn dir_entry(path: &[u8], a: DirAttrs) -> Entry {
    Entry {
        path: path.into(),
        source: IMPLIED,
        kind: Kind::Dir,
        mode: a.mode,
        uid: a.uid,
        gid: a.gid,
        size: 0,
        rdev: 0,
        link: Box::default(),
        xattrs: Vec::new(),
        inode: None,
    }
}

fn walk_source(
    src: &Path,
    dest: &[u8],
    source: u32,
    opts: &WalkOptions,
    out: &mut Vec<Entry>,
) -> Result<()> {
    // The source itself is followed if it is a symlink (`--layer ./result:/` means the tree).
    let meta = std::fs::metadata(src)
        .map_err(|e| Error::io(format!("layer source {}", src.display()), e))?;
    if !meta.is_dir() {
        if dest.is_empty() {
            return Err(Error::Usage(format!(
                "{} is not a directory, so it cannot be the image root: give it a destination (SRC:/path)",
                src.display()
            )));
        }
        if let Some(e) = entry(src, dest, source, &meta, opts)? {
            out.push(e);
        }
        return Ok(());
    }
    if !dest.is_empty() {
        out.extend(entry(src, dest, source, &meta, opts)?);
    }
    let mut stack: Vec<(PathBuf, Vec<u8>)> = vec![(src.to_path_buf(), dest.to_vec())];
    while let Some((dir, image_dir)) = stack.pop() {
        let read = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("reading directory {}", dir.display()), e))?;
        for de in read {
            let de =
                de.map_err(|e| Error::io(format!("reading directory {}", dir.display()), e))?;
            let name = de.file_name();
            let mut image_path = image_dir.clone();
            if !image_path.is_empty() {
                image_path.push(b'/');
            }
            image_path.extend_from_slice(name.as_bytes());
            let path = de.path();
            // DirEntry::metadata does not follow symlinks.
            let meta = de
                .metadata()
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            let Some(e) = entry(&path, &image_path, source, &meta, opts)? else {
                continue;
            };
            if e.kind == Kind::Dir {
                stack.push((path, image_path));
            }
            out.push(e);
        }
    }
    Ok(())
}

/// One entry from its metadata; `None` for what an image cannot hold (sockets).
fn entry(
    path: &Path,
    image_path: &[u8],
    source: u32,
    meta: &Metadata,
    opts: &WalkOptions,
) -> Result<Option<Entry>> {
    let name = image_path.rsplit(|&b| b == b'/').next().unwrap_or_default();
    if name.starts_with(crate::whiteout::PREFIX) {
        // A layer cannot hold such a name: every reader would take it for a deletion.
        return Err(Error::Usage(format!(
            "{}: names starting with {} mean deletions in image layers and cannot be stored",
            path.display(),
            String::from_utf8_lossy(crate::whiteout::PREFIX)
        )));
    }
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        tracing::warn!("skipping socket {}", path.display());
        return Ok(None);
    };
    let link: Box<[u8]> = if kind == Kind::Symlink {
        std::fs::read_link(path)
            .map_err(|e| Error::io(format!("reading symlink {}", path.display()), e))?
            .as_os_str()
            .as_bytes()
            .into()
    } else {
        Box::default()
    };
    let (uid, gid) = if opts.keep_owner {
        (meta.uid(), meta.gid())
    } else {
        (0, 0)
    };
    let xattrs = if opts.xattrs {
        read_xattrs(path)?
    } else {
        Vec::new()
    };
    Ok(Some(Entry {
        path: image_path.into(),
        source,
        kind,
        mode: meta.mode() & 0o7777,
        uid,
        gid,
        size: if kind == Kind::File { meta.len() } else { 0 },
        rdev: meta.rdev(),
        link,
        xattrs,
        inode: (kind == Kind::File && meta.nlink() > 1).then(|| (meta.dev(), meta.ino())),
    }))
}

/// Extended attributes, sorted by name (listxattr's order is the filesystem's).
fn read_xattrs(path: &Path) -> Result<Vec<Xattr>> {
    let err = |e: rustix::io::Errno| {
        Error::io(
            format!("reading extended attributes of {}", path.display()),
            e.into(),
        )
    };
    let mut names = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name == b"security.selinux" || name.starts_with(b"system.") {
            continue;
        }
        let cname = std::ffi::OsStr::from_bytes(name);
        let mut value = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, cname, &mut value) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(e) => return Err(err(e)),
            }
        };
        value.truncate(len);
        out.push((name.into(), value.into_boxed_slice()));
    }
    out.sort();
    Ok(out)
}

/// The kind of every path the layers built so far put in the image, to refuse a later layer
/// that changes one's type (a file where a directory was hides the directory's tree).
#[derive(Default)]
pub struct Claims {
    seen: HashMap<Box<[u8]>, (Kind, u32, DirAttrs)>,
}

impl Claims {
    /// A path of the `--from` image, as its layers leave it.
    pub fn seed(&mut self, path: &[u8], kind: Kind, layer: u32, attrs: DirAttrs) {
        self.seen.insert(path.into(), (kind, layer, attrs));
    }

    /// Check `tree` (layer `index`) against the layers before it, then record it.
    pub fn add(&mut self, tree: &LayerTree, index: usize) -> Result<()> {
        for e in &tree.entries {
            if let Some((kind, layer, _)) = self.seen.get(&e.path)
                && !kind.same_as(e.kind)
            {
                let hint = if *kind == Kind::Symlink && e.kind == Kind::Dir {
                    " (give the path the symlink points to)"
                } else {
                    ""
                };
                return Err(Error::Usage(format!(
                    "{} is a {} in layer {index} but a {} in layer {layer}: layers may not change a path's type{hint}",
                    shown(&e.path),
                    e.kind.name(),
                    kind.name(),
                )));
            }
        }
        for e in &tree.entries {
            let attrs = DirAttrs {
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
            };
            self.seen
                .insert(e.path.clone(), (e.kind, index as u32, attrs));
        }
        Ok(())
    }

    /// A directory's attributes as the layers so far left it.
    pub fn dir(&self, path: &[u8]) -> Option<DirAttrs> {
        match self.seen.get(path) {
            Some((Kind::Dir, _, a)) => Some(*a),
            _ => None,
        }
    }
}
