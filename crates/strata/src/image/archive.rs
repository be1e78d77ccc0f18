//! An index of the members of an outer tar (a `docker save` or OCI archive), built once by
//! reading headers and seeking over data, so every member can be read in place by offset —
//! nothing is unpacked to disk.

use super::FileRegion;
use crate::error::{Error, Result};
use crate::pathname;
use crate::tarstream::{EntryType, TarError, TarReader, padded};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Where each regular member of an outer tar is: name → (data offset, length), in bytes.
pub struct ArchiveIndex {
    /// The archive, shared by the regions of its members.
    pub file: Arc<File>,
    /// The archive's path, for messages.
    pub path: String,
    members: HashMap<String, (u64, u64)>,
}

impl ArchiveIndex {
    /// Index the archive at `path`: regular members by their normalized names, symlinks and
    /// hardlinks to them by theirs.
    pub fn open(path: &Path) -> Result<ArchiveIndex> {
        let shown = path.display().to_string();
        let file = File::open(path).map_err(|e| Error::io(format!("opening {shown}"), e))?;
        Self::from_file(file, shown)
    }

    /// Index an archive already open (a file, or a memfd of bytes); `shown` names it in
    /// messages.
    pub fn from_file(file: File, shown: String) -> Result<ArchiveIndex> {
        let file_len = file
            .metadata()
            .map_err(|e| Error::io(format!("reading {shown}"), e))?
            .len();
        let mut members = HashMap::new();
        let mut links: Vec<(String, String)> = Vec::new();
        let mut pos = 0u64;
        let mut chunk = 4096usize;
        loop {
            if pos >= file_len {
                break; // EOF without an end-of-archive marker: accepted, as GNU tar does
            }
            let want = (chunk as u64).min(file_len - pos) as usize;
            let mut buf = vec![0u8; want];
            file.read_exact_at(&mut buf, pos)
                .map_err(|e| Error::io(format!("reading {shown}"), e))?;
            let mut r = TarReader::new(&buf[..]);
            let entry = match r.next_entry() {
                Ok(e) => e,
                // Up to the reader's bound on one entry's headers (4 MiB) and the main block.
                Err(TarError::Truncated(_)) if want == chunk && chunk < (8 << 20) => {
                    chunk *= 4; // long extension headers: read a bigger window
                    continue;
                }
                Err(e) => {
                    return Err(Error::Format(format!(
                        "{shown}: not a valid tar archive: {e}"
                    )));
                }
            };
            let Some(h) = entry else { break };
            let header_len = h.raw.len() as u64;
            let data_at = pos + header_len;
            let size = h.size;
            // Checked: a size near 2^64 must not wrap the position back into the archive.
            let end = data_at
                .checked_add(size)
                .and_then(|e| e.checked_add(padded(size) - size));
            if end.is_none_or(|e| data_at + size > file_len || e < data_at) {
                let name = String::from_utf8_lossy(h.path).into_owned();
                return Err(Error::Format(format!(
                    "{shown}: truncated archive: member {name} needs {size} bytes, file ends first"
                )));
            }
            if matches!(h.kind, EntryType::Regular) {
                let name = pathname::normalize(h.path)
                    .map(|p| String::from_utf8_lossy(pathname::trim_dir(&p)).into_owned())
                    .unwrap_or_else(|_| String::from_utf8_lossy(h.path).into_owned());
                members.insert(name, (data_at, size));
            } else if matches!(h.kind, EntryType::Symlink | EntryType::HardLink) {
                // docker save writes layer symlinks (`<id>/layer.tar -> ../<other>/layer.tar`)
                // when two images share a layer: resolved once every member is known (the
                // target may come later in the archive).
                let dir = pathname::split_parent(pathname::trim_dir(h.path)).0;
                let mut target = Vec::from(if h.kind == EntryType::Symlink {
                    dir
                } else {
                    &[][..]
                });
                if !target.is_empty() {
                    target.push(b'/');
                }
                target.extend_from_slice(h.link);
                if let (Ok(name), Ok(t)) =
                    (pathname::normalize(h.path), pathname::normalize(&target))
                {
                    let t = String::from_utf8_lossy(&t).into_owned();
                    links.push((
                        String::from_utf8_lossy(pathname::trim_dir(&name)).into_owned(),
                        t,
                    ));
                }
            }
            pos = end.unwrap_or(file_len).max(pos + 1);
            chunk = 4096;
        }
        // Links to links resolve in a few rounds; a loop simply stays unresolved.
        for _ in 0..8 {
            let before = members.len();
            for (name, target) in &links {
                if let Some(&loc) = members.get(target) {
                    members.entry(name.clone()).or_insert(loc);
                }
            }
            if members.len() == before {
                break;
            }
        }
        Ok(ArchiveIndex {
            file: Arc::new(file),
            path: shown,
            members,
        })
    }

    /// Whether the archive has a member (or a resolved link) called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.members.contains_key(name)
    }

    /// Where member `name` (a leading `./` ignored) is in the archive.
    pub fn region(&self, name: &str) -> Result<FileRegion> {
        let name = name.trim_start_matches("./");
        let &(offset, len) = self
            .members
            .get(name)
            .ok_or_else(|| Error::Format(format!("{}: missing member {name}", self.path)))?;
        Ok(FileRegion {
            file: self.file.clone(),
            offset,
            len,
        })
    }

    /// The bytes of member `name`, read into memory (for small ones: manifests, configs).
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        self.region(name)?
            .read_all()
            .map_err(|e| Error::io(format!("{}: reading {name}", self.path), e))
    }

    /// The names of every member, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.keys().map(String::as_str)
    }
}
