//! A list of fixed-size records that keeps one batch (512) in memory and moves the rest to an
//! unnamed temporary file, so that one layer's changes — a base layer creates every path of
//! the image — cost no memory beyond a batch while `diff` waits to write them out.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};

/// A record of exactly `SIZE` bytes.
pub trait Record: Sized {
    const SIZE: usize;
    fn put(&self, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self;
}

/// Records in memory before a batch goes to the file.
const BATCH: usize = 512;

pub struct SpillList<T> {
    mem: Vec<T>,
    /// Records already on file, oldest first.
    file: Option<File>,
    on_file: usize,
    /// The file could not be made: everything stays in memory.
    no_file: bool,
}

impl<T: Record> Default for SpillList<T> {
    fn default() -> Self {
        SpillList {
            mem: Vec::new(),
            file: None,
            on_file: 0,
            no_file: false,
        }
    }
}

impl<T: Record> SpillList<T> {
    pub fn len(&self) -> usize {
        self.on_file + self.mem.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, r: T) -> io::Result<()> {
        if self.mem.len() >= BATCH && !self.no_file {
            self.spill()?;
        }
        self.mem.push(r);
        Ok(())
    }

    fn spill(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            match tempfile::tempfile() {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    tracing::warn!(
                        "no temporary file for the diff's changes ({e}): kept in memory"
                    );
                    self.no_file = true;
                    return Ok(());
                }
            }
        }
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        let mut bytes = Vec::with_capacity(self.mem.len() * T::SIZE);
        for r in &self.mem {
            r.put(&mut bytes);
        }
        f.write_all(&bytes)?;
        self.on_file += self.mem.len();
        self.mem.clear();
        Ok(())
    }

    /// Every record in the order pushed, then the list is empty.
    pub fn drain(&mut self, f: &mut dyn FnMut(T) -> io::Result<()>) -> io::Result<()> {
        if let Some(file) = self.file.as_mut() {
            file.seek(SeekFrom::Start(0))?;
            let mut r = BufReader::with_capacity(64 * 1024, &*file);
            let mut buf = vec![0u8; T::SIZE];
            for _ in 0..self.on_file {
                r.read_exact(&mut buf)?;
                f(T::get(&buf))?;
            }
            drop(r);
            // Kept, empty, for the next layer.
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
        }
        self.on_file = 0;
        for rec in std::mem::take(&mut self.mem) {
            f(rec)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct N(u32);
    impl Record for N {
        const SIZE: usize = 4;
        fn put(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.0.to_le_bytes());
        }
        fn get(b: &[u8]) -> Self {
            N(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
    }

    #[test]
    fn keeps_order_across_memory_and_file() {
        let mut l = SpillList::<N>::default();
        let n = (BATCH * 2 + 17) as u32;
        for i in 0..n {
            l.push(N(i)).unwrap();
        }
        assert_eq!(l.len(), n as usize);
        assert!(l.on_file > 0, "the first batches went to the file");
        let mut got = Vec::new();
        l.drain(&mut |r| {
            got.push(r.0);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, (0..n).collect::<Vec<_>>());
        assert!(l.is_empty());
        // Reusable after a drain.
        l.push(N(7)).unwrap();
        assert_eq!(l.len(), 1);
    }
}
