//! gzip on every core, as pigz writes it: the input cut into 1 MiB blocks, each deflated on a
//! worker thread with the 32 KiB before it as its dictionary (so the ratio stays that of one
//! stream) and ended by a sync flush, the blocks joined in order into one deflate stream —
//! one gzip member (RFC 1952) whose CRC-32 is combined from the blocks'. The bytes depend only
//! on the input and the level: not on the number of threads, nor on how the input was cut
//! into writes.

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Input bytes per block.
const BLOCK: usize = 1 << 20;
/// The window deflate may look back into: a block's dictionary.
const WINDOW: usize = 32 * 1024;

/// A block to deflate: its dictionary (the input's last `WINDOW` bytes before it), its bytes,
/// whether it ends the stream, and where its result goes.
struct Job {
    dict: Vec<u8>,
    data: Vec<u8>,
    last: bool,
    done: SyncSender<io::Result<Deflated>>,
}

struct Deflated {
    bytes: Vec<u8>,
    crc: Crc,
}

/// A gzip writer compressing on worker threads.
pub struct ParallelGzip<W: Write> {
    inner: Option<W>,
    level: Compression,
    cur: Vec<u8>,
    /// The last `WINDOW` bytes of the block sent before `cur`.
    dict: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    /// Results still to write, in the input's order.
    pending: VecDeque<Receiver<io::Result<Deflated>>>,
    depth: usize,
    crc: Crc,
    header_written: bool,
}

impl<W: Write> ParallelGzip<W> {
    /// A writer of gzip at `level` (0–9) into `inner`, deflating on up to `threads` threads.
    pub fn new(inner: W, level: u32, threads: usize) -> io::Result<Self> {
        let threads = threads.clamp(1, 8);
        let (tx, rx) = sync_channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        let level = Compression::new(level.min(9));
        let mut workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let rx = rx.clone();
            workers.push(
                std::thread::Builder::new()
                    .name("gzip".into())
                    .spawn(move || work(&rx, level))?,
            );
        }
        Ok(ParallelGzip {
            inner: Some(inner),
            level,
            cur: Vec::with_capacity(BLOCK),
            dict: Vec::new(),
            jobs: Some(tx),
            workers,
            pending: VecDeque::new(),
            depth: threads * 2,
            crc: Crc::new(),
            header_written: false,
        })
    }

    fn inner(&mut self) -> io::Result<&mut W> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::other("the gzip stream is already finished"))
    }

    /// RFC 1952's 10-byte header, as flate2 writes it: no name, no time, OS unknown.
    fn header(&mut self) -> io::Result<()> {
        if self.header_written {
            return Ok(());
        }
        let xfl = match self.level.level() {
            9 => 2,
            0 | 1 => 4,
            _ => 0,
        };
        self.inner()?
            .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
        self.header_written = true;
        Ok(())
    }

    /// Hand the current block to the workers (and write finished ones while too many wait).
    fn send(&mut self, last: bool) -> io::Result<()> {
        self.header()?;
        let data = std::mem::replace(&mut self.cur, Vec::with_capacity(BLOCK));
        let tail = data.len().saturating_sub(WINDOW);
        let next_dict = if data.len() >= WINDOW {
            data[tail..].to_vec()
        } else {
            // A short block: the window spans it and the end of the one before.
            let mut d = std::mem::take(&mut self.dict);
            d.extend_from_slice(&data);
            let cut = d.len().saturating_sub(WINDOW);
            d.drain(..cut);
            d
        };
        let dict = std::mem::replace(&mut self.dict, next_dict);
        let (done, result) = sync_channel(1);
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("the gzip stream is already finished"))?;
        jobs.send(Job {
            dict,
            data,
            last,
            done,
        })
        .map_err(|_| io::Error::other("the gzip threads stopped"))?;
        self.pending.push_back(result);
        while self.pending.len() > self.depth {
            self.write_one()?;
        }
        Ok(())
    }

    /// Wait for the oldest block and write it.
    fn write_one(&mut self) -> io::Result<()> {
        let Some(next) = self.pending.pop_front() else {
            return Ok(());
        };
        let d = next
            .recv()
            .map_err(|_| io::Error::other("a gzip thread stopped"))??;
        self.crc.combine(&d.crc);
        self.inner()?.write_all(&d.bytes)
    }

    /// End the stream: the last block, every block written in order, the CRC-32 and the
    /// length (mod 2³²); hands back the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.send(true)?;
        while !self.pending.is_empty() {
            self.write_one()?;
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.inner()?.write_all(&trailer)?;
        self.stop();
        self.inner
            .take()
            .ok_or_else(|| io::Error::other("the gzip stream is already finished"))
    }

    /// The writer below (to flush it).
    pub fn get_mut(&mut self) -> Option<&mut W> {
        self.inner.as_mut()
    }

    fn stop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl<W: Write> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        // Unfinished (an error upstream): the workers end with the job channel.
        self.pending.clear();
        self.stop();
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.cur.len());
        self.cur.extend_from_slice(&buf[..n]);
        if self.cur.len() == BLOCK {
            self.send(false)?;
        }
        Ok(n)
    }

    /// Flushes the writer below only: cutting a block here would make the bytes depend on
    /// where the producer flushes.
    fn flush(&mut self) -> io::Result<()> {
        self.inner()?.flush()
    }
}

fn work(jobs: &Mutex<Receiver<Job>>, level: Compression) {
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let r = deflate(&job.dict, &job.data, job.last, level);
        let _ = job.done.send(r);
    }
}

/// One block as raw deflate: primed with `dict`, ended by a sync flush (byte-aligned, so the
/// next block's bytes follow directly), or by the final block when `last`.
fn deflate(dict: &[u8], data: &[u8], last: bool, level: Compression) -> io::Result<Deflated> {
    let mut c = Compress::new(level, false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 64);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let read = usize::try_from(c.total_in()).map_err(io::Error::other)?;
        if out.len() == out.capacity() {
            out.reserve(64 * 1024);
        }
        let status = c
            .compress_vec(&data[read..], &mut out, flush)
            .map_err(io::Error::other)?;
        let read = usize::try_from(c.total_in()).map_err(io::Error::other)?;
        let done = match status {
            Status::StreamEnd => true,
            // A sync flush is complete when all input is in and output space was left over.
            Status::Ok | Status::BufError => {
                !last && read == data.len() && out.len() < out.capacity()
            }
        };
        if done {
            break;
        }
    }
    let mut crc = Crc::new();
    crc.update(data);
    Ok(Deflated { bytes: out, crc })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gzip(data: &[u8], cuts: &[usize], threads: usize) -> Vec<u8> {
        let mut w = ParallelGzip::new(Vec::new(), 6, threads).unwrap();
        let mut rest = data;
        for &c in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = c.clamp(1, rest.len());
            w.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
        }
        w.finish().unwrap()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Compressible: runs and repeats, with some noise.
                if i % 4096 < 3000 {
                    (i / 64 % 251) as u8
                } else {
                    x as u8
                }
            })
            .collect()
    }

    #[test]
    fn what_goes_in_comes_out_whatever_the_sizes() {
        for len in [
            0,
            1,
            100,
            WINDOW - 1,
            WINDOW + 7,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            3 * BLOCK + 12_345,
        ] {
            let data = sample(len);
            let gz = gzip(&data, &[BLOCK], 2);
            assert_eq!(gunzip(&gz), data, "{len} bytes");
        }
    }

    #[test]
    fn the_bytes_depend_on_the_input_only() {
        let data = sample(2 * BLOCK + 777);
        let one = gzip(&data, &[BLOCK], 1);
        assert_eq!(
            gzip(&data, &[1, 10_000, 7], 2),
            one,
            "cut into other writes"
        );
        assert_eq!(gzip(&data, &[65_536], 4), one, "on more threads");
        let mut w = ParallelGzip::new(Vec::new(), 6, 2).unwrap();
        w.write_all(&data[..5000]).unwrap();
        w.flush().unwrap();
        w.write_all(&data[5000..]).unwrap();
        assert_eq!(w.finish().unwrap(), one, "flushed midway");
    }

    #[test]
    fn it_compresses_about_as_well_as_one_stream() {
        let data = sample(4 * BLOCK);
        let ours = gzip(&data, &[BLOCK], 2).len();
        let mut one = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        one.write_all(&data).unwrap();
        let theirs = one.finish().unwrap().len();
        assert!(ours <= theirs + theirs / 100 + 64, "{ours} vs {theirs}");
    }

    #[test]
    fn gzip_itself_reads_it() {
        let data = sample(BLOCK + 99);
        let gz = gzip(&data, &[BLOCK], 2);
        // The multi-member-unaware reader: one member, its trailer right.
        let mut d = flate2::read::GzDecoder::new(&gz[..]);
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        let n = gz.len();
        assert_eq!(
            u32::from_le_bytes(gz[n - 4..].try_into().unwrap()) as usize,
            data.len()
        );
    }
}
