//! A raw, header-preserving tar reader and the few header writers strata needs.
//!
//! The reader keeps every byte of an entry's header blocks (PAX `x` records, GNU `L`/`K`
//! long names, old-GNU sparse extension blocks) so a surviving entry can be copied out
//! byte-for-byte. It honours a PAX `size` record (Go and Python write files > 8 GiB that way),
//! which the `tar` crate's raw mode does not.

use std::io::{self, BufRead, Write};

/// The tar block size, in bytes: headers are one block, data is padded to whole blocks.
pub const BLOCK: usize = 512;
/// Extension payloads (PAX records, GNU long names) larger than this are refused: a header
/// claiming gigabytes of "name" is an attack, not an image.
const MAX_EXTENSION: u64 = 1 << 20;
/// All the header bytes of one entry together (extension headers, old-GNU sparse blocks, the
/// main header) larger than this are refused, so that a stream of extension headers cannot
/// grow memory without bound.
const MAX_HEADERS: usize = 4 << 20;
/// Entry sizes beyond this (4 EiB) are refused: no real file is that big, and the block
/// arithmetic on them would wrap.
pub const MAX_ENTRY: u64 = 1 << 62;

/// Why a tar stream cannot be read (or copied out).
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// Reading the stream failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A valid tar feature strata does not apply (GNU sparse files): refused, never copied
    /// through as its raw map.
    #[error("{0}")]
    Unsupported(String),
    /// Writing copied data failed: the output's fault, not the tar's.
    #[error("write failed: {0}")]
    Write(io::Error),
    /// The stream ended inside an entry (the part being read: "a header", "entry data", …).
    #[error("truncated tar stream (ended inside {0})")]
    Truncated(&'static str),
    /// A header block is malformed.
    #[error("corrupt tar header at byte {offset}: {what}")]
    Corrupt {
        /// Offset of the bad block in the stream, in bytes.
        offset: u64,
        /// What is wrong with it.
        what: String,
    },
}

/// The kind of a tar entry, from its typeflag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryType {
    /// A regular file (`0`, NUL, or `7`, a contiguous file).
    Regular,
    /// A hard link to an earlier entry (`1`).
    HardLink,
    /// A symbolic link (`2`).
    Symlink,
    /// A character device (`3`).
    Char,
    /// A block device (`4`).
    Block,
    /// A directory (`5`).
    Directory,
    /// A named pipe (`6`).
    Fifo,
    /// Anything else (GNU sparse, vendor types), with its typeflag: carried through unchanged.
    Other(u8),
}

impl EntryType {
    /// The type of a typeflag byte.
    pub fn from_flag(flag: u8) -> Self {
        match flag {
            b'0' | 0 | b'7' => EntryType::Regular,
            b'1' => EntryType::HardLink,
            b'2' => EntryType::Symlink,
            b'3' => EntryType::Char,
            b'4' => EntryType::Block,
            b'5' => EntryType::Directory,
            b'6' => EntryType::Fifo,
            other => EntryType::Other(other),
        }
    }
    /// A short name for listings and messages (`file`, `dir`, `symlink`, …).
    pub fn name(self) -> &'static str {
        match self {
            EntryType::Regular => "file",
            EntryType::HardLink => "hardlink",
            EntryType::Symlink => "symlink",
            EntryType::Char => "char",
            EntryType::Block => "block",
            EntryType::Directory => "dir",
            EntryType::Fifo => "fifo",
            EntryType::Other(_) => "other",
        }
    }
}

/// One entry's header, as read. Borrowed from the reader; valid until the next `next_entry`.
#[derive(Debug)]
pub struct Header<'a> {
    /// All header bytes: extension headers with their payloads, then the main 512-byte block
    /// (and old-GNU sparse extension blocks).
    pub raw: &'a [u8],
    /// Offset of the main ustar block inside `raw`.
    pub main_at: usize,
    /// Effective path (after PAX / GNU long-name records).
    pub path: &'a [u8],
    /// Effective link target (likewise; empty when there is none).
    pub link: &'a [u8],
    /// The entry's type, from its typeflag.
    pub kind: EntryType,
    /// Bytes of data that follow the header (before padding); 0 for links, directories,
    /// devices and fifos whatever the size field says.
    pub size: u64,
    /// Offset of the first header byte in the stream.
    pub offset: u64,
    /// Ordinal of this entry in its stream (0-based).
    pub ordinal: u64,
}

impl Header<'_> {
    /// The main 512-byte ustar block.
    pub fn main(&self) -> &[u8] {
        &self.raw[self.main_at..self.main_at + BLOCK]
    }
    /// The mode field (permission, setuid/setgid and sticky bits); 0 when unreadable.
    pub fn mode(&self) -> u32 {
        parse_numeric(&self.main()[100..108]).unwrap_or(0) as u32
    }
    /// The owner's uid: a PAX `uid` record, else the header field; 0 when unreadable.
    pub fn uid(&self) -> u64 {
        self.pax_number(b"uid")
            .unwrap_or_else(|| parse_numeric(&self.main()[108..116]).unwrap_or(0))
    }
    /// The group's gid: a PAX `gid` record, else the header field; 0 when unreadable.
    pub fn gid(&self) -> u64 {
        self.pax_number(b"gid")
            .unwrap_or_else(|| parse_numeric(&self.main()[116..124]).unwrap_or(0))
    }
    /// The modification time field, in seconds since the epoch (PAX `mtime` records are not
    /// read); 0 when unreadable.
    pub fn mtime(&self) -> u64 {
        parse_numeric(&self.main()[136..148]).unwrap_or(0)
    }
    /// The PAX records of this entry (`x` headers only), in order.
    pub fn pax_records(&self) -> Vec<(&[u8], &[u8])> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < self.main_at {
            let block = &self.raw[at..at + BLOCK];
            let size = parse_numeric(&block[124..136]).unwrap_or(0) as usize;
            let data_end = (at + BLOCK + size).min(self.main_at);
            if block[156] == b'x' {
                out.extend(PaxIter(&self.raw[at + BLOCK..data_end]));
            }
            at += BLOCK + padded(size as u64) as usize;
        }
        out
    }
    fn pax_number(&self, key: &[u8]) -> Option<u64> {
        if self.main_at == 0 {
            return None;
        }
        self.pax_records()
            .into_iter()
            .rev()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
    }
}

/// One PAX record: key and value.
type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// PAX records (`LEN KEY=VALUE\n`, LEN counting the whole record), checked: a record whose
/// length is not a number, runs past the data or does not end in a newline, or has no `=`, is
/// an error — never copied through unread.
fn parse_pax(data: &[u8]) -> Result<Vec<PaxRecord<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("a PAX record without a length")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or("a PAX record with a bad length")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err("a PAX record whose length does not match it".into());
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or("a PAX record without '='")?;
        out.push((&rec[..eq], &rec[eq + 1..]));
        rest = &rest[len..];
    }
    Ok(out)
}

/// Iterator over `len key=value\n` PAX records; stops at the first malformed one (the
/// reader has checked them all before an entry is handed out).
struct PaxIter<'a>(&'a [u8]);

impl<'a> Iterator for PaxIter<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let data = self.0;
        let sp = data.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&data[..sp]).ok()?.parse().ok()?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return None;
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec.iter().position(|&b| b == b'=')?;
        self.0 = &data[len..];
        Some((&rec[..eq], &rec[eq + 1..]))
    }
}

/// `n` bytes rounded up to whole blocks.
pub fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// Parse a tar numeric field: octal (space/NUL terminated) or GNU base-256.
pub fn parse_numeric(field: &[u8]) -> Option<u64> {
    if let Some(&first) = field.first()
        && first & 0x80 != 0
    {
        if first == 0xff {
            return None; // negative
        }
        let mut v: u64 = (first & 0x7f) as u64;
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(v);
    }
    let mut v: u64 = 0;
    let mut seen = false;
    for &b in field {
        match b {
            b'0'..=b'7' => {
                v = v.checked_mul(8)?.checked_add((b - b'0') as u64)?;
                seen = true;
            }
            b' ' | 0 if !seen => continue,
            b' ' | 0 => break,
            _ => return None,
        }
    }
    Some(v)
}

fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

fn checksum_ok(block: &[u8]) -> bool {
    let Some(stored) = parse_numeric(&block[148..156]) else {
        return false;
    };
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as u64;
        signed += (b as i8) as i64;
    }
    stored == unsigned || stored as i64 == signed
}

/// Streaming reader of raw tar entries over any `BufRead`.
pub struct TarReader<R> {
    inner: R,
    pos: u64,
    ordinal: u64,
    raw: Vec<u8>,
    path: Vec<u8>,
    link: Vec<u8>,
    /// Data bytes (incl. padding) of the current entry not yet consumed.
    remaining: u64,
    pad: u64,
    done: bool,
    /// Skips data without reading it, where the stream can (see [`TarReader::with_skipper`]).
    skipper: Option<Skipper<R>>,
}

/// Skips `n` bytes of a stream, returning how many it skipped (fewer: the stream ended).
pub type Skipper<R> = fn(&mut R, u64) -> io::Result<u64>;

impl<R: BufRead> TarReader<R> {
    /// A reader at the start of `inner`.
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            pos: 0,
            ordinal: 0,
            raw: Vec::with_capacity(4 * BLOCK),
            path: Vec::new(),
            link: Vec::new(),
            remaining: 0,
            pad: 0,
            done: false,
            skipper: None,
        }
    }

    /// Skip data that is not read (shadowed entries, the rest of a layer after the entries
    /// wanted) with `skip`, which may seek, instead of reading it through.
    pub fn with_skipper(mut self, skip: Skipper<R>) -> Self {
        self.skipper = Some(skip);
        self
    }

    /// The underlying stream, positioned where this reader stopped.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Bytes of the stream consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn read_exact_counted(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), TarError> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(TarError::Truncated(what)),
            Err(e) => Err(e.into()),
        }
    }

    /// Returns false at a clean end of stream (EOF exactly on a block boundary).
    fn read_block_into_raw(&mut self) -> Result<bool, TarError> {
        let start = self.raw.len();
        self.raw.resize(start + BLOCK, 0);
        let mut filled = 0;
        while filled < BLOCK {
            let n = match self
                .inner
                .read(&mut self.raw[start + filled..start + BLOCK])
            {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                if filled == 0 && start == 0 {
                    self.raw.truncate(start);
                    return Ok(false);
                }
                return Err(TarError::Truncated("a header"));
            }
            filled += n;
        }
        self.pos += BLOCK as u64;
        Ok(true)
    }

    /// Skip whatever is left of the current entry's data.
    pub fn skip_data(&mut self) -> Result<(), TarError> {
        if let Some(skip) = self.skipper {
            return self.skip_data_with(skip);
        }
        let n = self.remaining + self.pad;
        self.discard(n, "entry data")?;
        self.remaining = 0;
        self.pad = 0;
        Ok(())
    }

    /// The current entry's data as an output carries it (before any of it is read): its size
    /// rounded up to whole blocks.
    pub fn data_len_padded(&self) -> u64 {
        padded(self.remaining)
    }

    /// Skip the current entry's data with `skip`, which may seek instead of reading and says
    /// how many bytes it skipped (fewer: the stream ended).
    pub fn skip_data_with(
        &mut self,
        skip: impl FnOnce(&mut R, u64) -> io::Result<u64>,
    ) -> Result<(), TarError> {
        let n = self.remaining + self.pad;
        let done = skip(&mut self.inner, n)?;
        self.pos += done;
        if done < n {
            return Err(TarError::Truncated("entry data"));
        }
        self.remaining = 0;
        self.pad = 0;
        Ok(())
    }

    fn discard(&mut self, mut n: u64, what: &'static str) -> Result<(), TarError> {
        while n > 0 {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Err(TarError::Truncated(what));
            }
            let k = (buf.len() as u64).min(n) as usize;
            self.inner.consume(k);
            self.pos += k as u64;
            n -= k as u64;
        }
        Ok(())
    }

    /// Copy the current entry's data (without padding) to `out`, then skip the padding.
    pub fn copy_data<W: Write + ?Sized>(&mut self, out: &mut W) -> Result<(), TarError> {
        while self.remaining > 0 {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Err(TarError::Truncated("entry data"));
            }
            let k = (buf.len() as u64).min(self.remaining) as usize;
            out.write_all(&buf[..k]).map_err(TarError::Write)?;
            self.inner.consume(k);
            self.pos += k as u64;
            self.remaining -= k as u64;
        }
        let pad = self.pad;
        self.discard(pad, "entry padding")?;
        self.pad = 0;
        Ok(())
    }

    /// Copy the data *with* its padding (for raw pass-through of an unchanged entry).
    pub fn copy_data_padded<W: Write + ?Sized>(&mut self, out: &mut W) -> Result<(), TarError> {
        let size = self.remaining;
        self.copy_data(out)?;
        let pad = padded(size) - size;
        out.write_all(&ZEROS[..pad as usize])
            .map_err(TarError::Write)?;
        Ok(())
    }

    /// Read the next entry header. `None` at the end-of-archive marker or a clean EOF.
    pub fn next_entry(&mut self) -> Result<Option<Header<'_>>, TarError> {
        if self.done {
            return Ok(None);
        }
        if self.remaining + self.pad > 0 {
            self.skip_data()?;
        }
        self.raw.clear();
        self.path.clear();
        self.link.clear();
        let mut pax_path: Option<Vec<u8>> = None;
        let mut pax_link: Option<Vec<u8>> = None;
        let mut pax_size: Option<u64> = None;
        let mut gnu_path: Option<Vec<u8>> = None;
        let mut gnu_link: Option<Vec<u8>> = None;
        let mut pax_sparse = false;
        let start = self.pos;
        loop {
            let block_at = self.raw.len();
            if !self.read_block_into_raw()? {
                self.done = true;
                return Ok(None);
            }
            let block = &self.raw[block_at..];
            if block.iter().all(|&b| b == 0) {
                if block_at != 0 {
                    return Err(TarError::Truncated("extension headers"));
                }
                self.done = true;
                return Ok(None);
            }
            if !checksum_ok(block) {
                return Err(TarError::Corrupt {
                    offset: self.pos - BLOCK as u64,
                    what: "bad header checksum".into(),
                });
            }
            let flag = block[156];
            let size = parse_numeric(&block[124..136]).ok_or_else(|| TarError::Corrupt {
                offset: self.pos - BLOCK as u64,
                what: "bad size field".into(),
            })?;
            match flag {
                b'x' | b'g' | b'L' | b'K' => {
                    if size > MAX_EXTENSION {
                        return Err(TarError::Corrupt {
                            offset: self.pos - BLOCK as u64,
                            what: format!("extension header of {size} bytes"),
                        });
                    }
                    let data_at = self.raw.len();
                    let total = padded(size) as usize;
                    if data_at + total > MAX_HEADERS {
                        return Err(TarError::Corrupt {
                            offset: self.pos - BLOCK as u64,
                            what: format!(
                                "extension headers of more than {MAX_HEADERS} bytes for one entry"
                            ),
                        });
                    }
                    self.raw.resize(data_at + total, 0);
                    let mut tmp = std::mem::take(&mut self.raw);
                    let r = self.read_exact_counted(&mut tmp[data_at..], "extension header");
                    self.raw = tmp;
                    r?;
                    let data = &self.raw[data_at..data_at + size as usize];
                    match flag {
                        b'x' => {
                            let records = parse_pax(data).map_err(|what| TarError::Corrupt {
                                offset: self.pos,
                                what,
                            })?;
                            for (k, v) in records {
                                if k.starts_with(b"GNU.sparse.") {
                                    pax_sparse = true;
                                }
                                match k {
                                    b"path" => pax_path = Some(v.to_vec()),
                                    b"linkpath" => pax_link = Some(v.to_vec()),
                                    b"size" => {
                                        let n = std::str::from_utf8(v)
                                            .ok()
                                            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                                            .and_then(|s| s.parse::<u64>().ok());
                                        pax_size = Some(n.ok_or_else(|| TarError::Corrupt {
                                            offset: self.pos,
                                            what: format!(
                                                "bad PAX size {:?}",
                                                String::from_utf8_lossy(v)
                                            ),
                                        })?);
                                    }
                                    _ => {}
                                }
                            }
                        }
                        b'L' => gnu_path = Some(cstr(data).to_vec()),
                        b'K' => gnu_link = Some(cstr(data).to_vec()),
                        _ => {} // global PAX headers carry nothing per-entry we use
                    }
                    continue;
                }
                _ => {}
            }
            // Main header.
            let main_at = block_at;
            let block = &self.raw[main_at..main_at + BLOCK];
            let ustar = &block[257..263] == b"ustar\0";
            let gnu_sparse_ext = flag == b'S' && block[482] != 0;
            let name_field = cstr(&block[0..100]);
            let path = if let Some(p) = pax_path.take() {
                p
            } else if let Some(p) = gnu_path.take() {
                p
            } else if ustar && block[345] != 0 {
                let mut p = cstr(&block[345..500]).to_vec();
                p.push(b'/');
                p.extend_from_slice(name_field);
                p
            } else {
                name_field.to_vec()
            };
            let link = pax_link
                .take()
                .or_else(|| gnu_link.take())
                .unwrap_or_else(|| cstr(&block[157..257]).to_vec());
            let kind = EntryType::from_flag(flag);
            if flag == b'S' || pax_sparse {
                // Its data is a sparse map plus the stored parts, not the file: copied through
                // it would be the wrong file, and a PAX 1.0 one lands as `GNUSparseFile.0/`.
                return Err(TarError::Unsupported(format!(
                    "{}: a GNU sparse file, which strata does not expand; store the layer without --sparse",
                    String::from_utf8_lossy(&path)
                )));
            }
            let size = pax_size.unwrap_or(size);
            if size > MAX_ENTRY {
                return Err(TarError::Corrupt {
                    offset: self.pos - BLOCK as u64,
                    what: format!("an entry of {size} bytes, beyond any real file"),
                });
            }
            self.path = path;
            self.link = link;
            if gnu_sparse_ext {
                // Old-GNU sparse maps continue in extension blocks flagged at byte 504.
                loop {
                    let at = self.raw.len();
                    if !self.read_block_into_raw()? {
                        return Err(TarError::Truncated("sparse header"));
                    }
                    if self.raw[at + 504] == 0 {
                        break;
                    }
                    if self.raw.len() > MAX_HEADERS {
                        return Err(TarError::Corrupt {
                            offset: self.pos - BLOCK as u64,
                            what: "an old-GNU sparse map of more than 4 MiB".into(),
                        });
                    }
                }
            }
            // Hardlinks, symlinks, directories, devices and fifos have no data, whatever the
            // size field says (some writers put the target's size there).
            let data = match kind {
                EntryType::HardLink
                | EntryType::Symlink
                | EntryType::Directory
                | EntryType::Char
                | EntryType::Block
                | EntryType::Fifo => 0,
                _ => size,
            };
            self.remaining = data;
            self.pad = padded(data) - data;
            let ordinal = self.ordinal;
            self.ordinal += 1;
            return Ok(Some(Header {
                raw: &self.raw,
                main_at,
                path: &self.path,
                link: &self.link,
                kind,
                size: data,
                offset: start,
                ordinal,
            }));
        }
    }

    /// After the end-of-archive marker: consume everything that is left, so a digest over the
    /// whole stream sees every byte (crane #2303).
    pub fn drain(&mut self) -> Result<(), TarError> {
        if self.remaining + self.pad > 0 {
            self.skip_data()?;
        }
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            let k = buf.len();
            self.inner.consume(k);
            self.pos += k as u64;
        }
    }
}

/// Two zero blocks: the end-of-archive marker, and the source of padding.
pub static ZEROS: [u8; 2 * BLOCK] = [0; 2 * BLOCK];

/// Write the end-of-archive marker.
pub fn write_trailer<W: Write + ?Sized>(out: &mut W) -> io::Result<()> {
    out.write_all(&ZEROS)
}

fn write_octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    if s.len() <= width {
        field[..width].copy_from_slice(s.as_bytes());
        field[width] = 0;
    } else {
        // GNU base-256 for values that do not fit.
        field.fill(0);
        let mut v = value;
        for b in field.iter_mut().rev() {
            *b = (v & 0xff) as u8;
            v >>= 8;
        }
        field[0] |= 0x80;
    }
}

fn set_checksum(block: &mut [u8]) {
    block[148..156].fill(b' ');
    let sum: u64 = block.iter().map(|&b| b as u64).sum();
    let s = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(s.as_bytes());
}

fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // The length prefix counts itself, so find the fixed point.
    let base = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = base + 1;
    while len != base + len.to_string().len() {
        len = base + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// What to change when re-emitting an entry under a new name, link target or type.
#[derive(Default)]
pub struct Rewrite<'a> {
    /// A new path (else the original's).
    pub path: Option<&'a [u8]>,
    /// A new link target (else the original's).
    pub link: Option<&'a [u8]>,
    /// A new typeflag byte (else the original's).
    pub kind: Option<u8>,
    /// A new size field, in bytes (else the original's data size).
    pub size: Option<u64>,
}

/// Re-render an entry's header with changes: the result is a PAX extended header (when needed:
/// long or non-ASCII names, and every PAX record of the original except path/linkpath/size)
/// followed by a POSIX ustar block. Other fields (mode, owner, times, device numbers, user and
/// group names) are copied from the original.
pub fn rewrite_header(h: &Header<'_>, rw: &Rewrite<'_>) -> Vec<u8> {
    let path = rw.path.unwrap_or(h.path);
    let link = rw.link.unwrap_or(h.link);
    let mut main = [0u8; BLOCK];
    main.copy_from_slice(h.main());
    let flag = rw.kind.unwrap_or(main[156]);
    let size = rw.size.unwrap_or(h.size);

    let mut pax = Vec::new();
    for (k, v) in h.pax_records() {
        if !matches!(k, b"path" | b"linkpath" | b"size") {
            pax_record(&mut pax, k, v);
        }
    }
    main[0..100].fill(0);
    if path.len() <= 100 && path.is_ascii() {
        main[..path.len()].copy_from_slice(path);
    } else {
        pax_record(&mut pax, b"path", path);
        let cut = path.len().min(100);
        main[..cut].copy_from_slice(&path[..cut]);
    }
    main[157..257].fill(0);
    if link.len() <= 100 && link.is_ascii() {
        main[157..157 + link.len()].copy_from_slice(link);
    } else {
        pax_record(&mut pax, b"linkpath", link);
        let cut = link.len().min(100);
        main[157..157 + cut].copy_from_slice(&link[..cut]);
    }
    main[156] = flag;
    write_octal(&mut main[124..136], size);
    if &main[257..263] != b"ustar\0" {
        // GNU headers keep atime/ctime where ustar keeps the name prefix: clear it.
        main[345..500].fill(0);
        main[257..263].copy_from_slice(b"ustar\0");
        main[263..265].copy_from_slice(b"00");
    } else {
        main[345..500].fill(0);
    }
    set_checksum(&mut main);

    let mut out = Vec::with_capacity(BLOCK * 3 + pax.len());
    if !pax.is_empty() {
        out.extend_from_slice(&pax_header_block(pax.len() as u64, &main));
        out.extend_from_slice(&pax);
        out.resize(
            out.len() + (padded(pax.len() as u64) as usize - pax.len()),
            0,
        );
    }
    out.extend_from_slice(&main);
    out
}

fn pax_header_block(len: u64, main: &[u8; BLOCK]) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    let name = b"PaxHeaders/entry";
    b[..name.len()].copy_from_slice(name);
    b[100..108].copy_from_slice(&main[100..108]);
    b[108..124].copy_from_slice(&main[108..124]);
    write_octal(&mut b[124..136], len);
    b[136..148].copy_from_slice(&main[136..148]);
    b[156] = b'x';
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    set_checksum(&mut b);
    b
}

/// A fresh directory header (for parents implied by deeper entries).
pub fn directory_header(path: &[u8], mode: u32) -> Vec<u8> {
    new_header(path, b'5', mode, 0)
}

/// A fresh regular-file header (whiteouts, image metadata files); `size` bytes must follow.
pub fn file_header(path: &[u8], mode: u32, size: u64) -> Vec<u8> {
    new_header(path, b'0', mode, size)
}

fn new_header(path: &[u8], flag: u8, mode: u32, size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    entry_header(
        &NewEntry {
            path,
            flag,
            mode,
            size,
            ..NewEntry::default()
        },
        &mut out,
    );
    out
}

/// An extended attribute: name (`user.x`, `security.capability`) and value.
pub type Xattr = (Box<[u8]>, Box<[u8]>);

/// Everything a freshly made entry's header says.
#[derive(Default)]
pub struct NewEntry<'a> {
    /// Relative path; directories end in `/`.
    pub path: &'a [u8],
    /// Type flag: `0` file, `1` hardlink, `2` symlink, `3` char, `4` block, `5` dir, `6` fifo.
    pub flag: u8,
    /// Permission bits (with setuid, setgid and sticky).
    pub mode: u32,
    /// Owner's uid.
    pub uid: u64,
    /// Group's gid.
    pub gid: u64,
    /// Bytes of data that follow the header.
    pub size: u64,
    /// Modification time, in seconds since the epoch.
    pub mtime: u64,
    /// Link target (hardlinks and symlinks; empty otherwise).
    pub link: &'a [u8],
    /// Device major and minor (char and block devices).
    pub device: (u32, u32),
    /// Extended attributes, written as `SCHILY.xattr.NAME` PAX records in the given order.
    pub xattrs: &'a [Xattr],
}

/// Append the header of `e` to `out`: a PAX extended header when a name or link does not fit
/// ustar (over 100 bytes or not ASCII) or there are xattrs, then the ustar block. Nothing
/// varies but what `e` holds — no atime/ctime, no user or group names — so equal input gives
/// equal bytes.
pub fn entry_header(e: &NewEntry<'_>, out: &mut Vec<u8>) {
    let mut main = [0u8; BLOCK];
    write_octal(&mut main[100..108], e.mode as u64);
    write_octal(&mut main[108..116], e.uid);
    write_octal(&mut main[116..124], e.gid);
    write_octal(&mut main[124..136], e.size);
    write_octal(&mut main[136..148], e.mtime);
    main[156] = e.flag;
    main[257..263].copy_from_slice(b"ustar\0");
    main[263..265].copy_from_slice(b"00");
    if matches!(e.flag, b'3' | b'4') {
        write_octal(&mut main[329..337], e.device.0 as u64);
        write_octal(&mut main[337..345], e.device.1 as u64);
    }
    let mut pax = Vec::new();
    // Numbers beyond the octal fields (uid/gid over 2097151, files of 8 GiB and more) also go
    // in PAX records, which every reader knows; the fields keep GNU base-256 for old ones.
    for (key, value, limit) in [
        (&b"uid"[..], e.uid, 0o7777777),
        (b"gid", e.gid, 0o7777777),
        (b"size", e.size, 0o77777777777),
    ] {
        if value > limit {
            pax_record(&mut pax, key, value.to_string().as_bytes());
        }
    }
    let fits = |b: &[u8]| b.len() <= 100 && b.is_ascii();
    if !fits(e.path) {
        pax_record(&mut pax, b"path", e.path);
    }
    let cut = e.path.len().min(100);
    main[..cut].copy_from_slice(&e.path[..cut]);
    if !fits(e.link) {
        pax_record(&mut pax, b"linkpath", e.link);
    }
    let cut = e.link.len().min(100);
    main[157..157 + cut].copy_from_slice(&e.link[..cut]);
    for (k, v) in e.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(k);
        pax_record(&mut pax, &key, v);
    }
    set_checksum(&mut main);
    if !pax.is_empty() {
        out.extend_from_slice(&pax_header_block(pax.len() as u64, &main));
        out.extend_from_slice(&pax);
        out.resize(
            out.len() + (padded(pax.len() as u64) as usize - pax.len()),
            0,
        );
    }
    out.extend_from_slice(&main);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_octal_and_base256() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"  644 \0"), Some(0o644));
        assert_eq!(parse_numeric(&[0x80, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(parse_numeric(b"9"), None);
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, b"path", b"a");
        assert_eq!(v, b"9 path=a\n");
        let mut v = Vec::new();
        pax_record(&mut v, b"path", &[b'x'; 95]);
        let s = String::from_utf8(v.clone()).unwrap();
        let n: usize = s.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(n, v.len());
    }

    #[test]
    fn big_numbers_get_pax_records() {
        let mut out = Vec::new();
        entry_header(
            &NewEntry {
                path: b"f",
                flag: b'0',
                mode: 0o644,
                uid: 5_000_000,
                gid: 7,
                size: 0,
                ..NewEntry::default()
            },
            &mut out,
        );
        out.extend_from_slice(&ZEROS);
        let mut r = TarReader::new(&out[..]);
        let h = r.next_entry().unwrap().unwrap();
        assert_eq!((h.uid(), h.gid()), (5_000_000, 7));
        let recs = h.pax_records();
        assert!(recs.iter().any(|(k, v)| *k == b"uid" && *v == b"5000000"));
        assert!(!recs.iter().any(|(k, _)| *k == b"gid"));
    }

    #[test]
    fn long_name_round_trip_through_rewrite() {
        let long = vec![b'd'; 300];
        let hdr = directory_header(&long, 0o755);
        let mut data = hdr.clone();
        data.extend_from_slice(&ZEROS);
        let mut r = TarReader::new(&data[..]);
        let h = r.next_entry().unwrap().unwrap();
        assert_eq!(h.path, &long[..]);
        assert_eq!(h.kind, EntryType::Directory);
        let rw = rewrite_header(
            &h,
            &Rewrite {
                path: Some(b"short/"),
                ..Default::default()
            },
        );
        let mut data = rw;
        data.extend_from_slice(&ZEROS);
        let mut r = TarReader::new(&data[..]);
        assert_eq!(r.next_entry().unwrap().unwrap().path, b"short/");
        assert!(r.next_entry().unwrap().is_none());
    }
}
