//! Compression formats: detection by magic bytes (never by name), decoders and encoders.

use std::io::{self, BufRead, BufReader, Read, Write};

/// A compression format of a layer stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed (plain tar).
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// Zstandard (`28 b5 2f fd`).
    Zstd,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// bzip2 (`BZh`).
    Bzip2,
}

impl Compression {
    /// Identify a stream from its first bytes.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else {
            Compression::None
        }
    }

    /// The format's lower-case name (`none`, `gzip`, `zstd`, `xz`, `bzip2`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
        }
    }

    /// The levels each codec takes: gzip and xz 0–9, bzip2 1–9, zstd 1–19 (its "ultra" levels
    /// 20–22 need windows of hundreds of MiB on both sides, so they are refused). A level with
    /// no compression is a mistake, not a no-op.
    pub fn check_level(self, level: Option<u32>) -> Result<(), String> {
        let Some(l) = level else { return Ok(()) };
        let range = match self {
            Compression::None => {
                return Err(format!(
                    "--level {l} needs --compress (the output is not compressed)"
                ));
            }
            Compression::Gzip | Compression::Xz => 0..=9,
            Compression::Bzip2 => 1..=9,
            Compression::Zstd => 1..=19,
        };
        if range.contains(&l) {
            Ok(())
        } else {
            Err(format!(
                "--level {l} is out of range for {}: {}-{}",
                self.name(),
                range.start(),
                range.end()
            ))
        }
    }

    /// The compression a layer media type names (`…tar+gzip`, `…tar.gzip`, `…+zstd`; plain
    /// tar otherwise).
    pub fn of_media_type(media_type: &str) -> Compression {
        if media_type.ends_with("gzip") {
            Compression::Gzip
        } else if media_type.ends_with("zstd") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// Wrap `input` in the matching decoder. Multi-member gzip and concatenated zstd/xz
    /// frames are read in full, as `zcat` would.
    pub fn decoder<'a, R: BufRead + Send + 'a>(
        self,
        input: R,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Compression::None => Box::new(input),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
            Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(input)),
            Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(input)),
        })
    }
}

/// Read the first bytes of a buffered stream without consuming them and detect its format.
pub fn sniff<R: BufRead>(r: &mut R) -> io::Result<Compression> {
    let buf = r.fill_buf()?;
    if buf.len() >= 6 {
        return Ok(Compression::detect(buf));
    }
    // A short first read: fall back to what we have (tiny or empty streams are uncompressed).
    Ok(Compression::detect(buf))
}

/// An encoder that must be finished explicitly (so trailers are written and errors seen).
pub enum Encoder<W: Write> {
    /// No compression: bytes go straight to the writer.
    Plain(W),
    /// gzip, on every core (one gzip member, as pigz writes it).
    Gzip(crate::parallel_gzip::ParallelGzip<W>),
    /// Zstandard, on two threads.
    Zstd(zstd::stream::write::Encoder<'static, W>),
    /// xz.
    Xz(liblzma::write::XzEncoder<W>),
    /// bzip2.
    Bzip2(bzip2::write::BzEncoder<W>),
}

impl<W: Write> Encoder<W> {
    /// An encoder of `kind` writing to `w`. `level` is the format's own compression level;
    /// without it gzip and xz use 6, zstd 3 and bzip2 9 (gzip and xz cap it at 9, bzip2
    /// clamps it to 1..=9).
    pub fn new(kind: Compression, level: Option<u32>, w: W) -> io::Result<Self> {
        if kind != Compression::None {
            kind.check_level(level)
                .map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
        }
        Ok(match kind {
            Compression::None => Encoder::Plain(w),
            Compression::Gzip => Encoder::Gzip(crate::parallel_gzip::ParallelGzip::new(
                w,
                level.unwrap_or(6).min(9),
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )?),
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(w, level.unwrap_or(3) as i32)?;
                // Use the second core for compression while the merge runs on the first.
                let _ = e.multithread(2);
                Encoder::Zstd(e)
            }
            Compression::Xz => {
                Encoder::Xz(liblzma::write::XzEncoder::new(w, level.unwrap_or(6).min(9)))
            }
            Compression::Bzip2 => Encoder::Bzip2(bzip2::write::BzEncoder::new(
                w,
                bzip2::Compression::new(level.unwrap_or(9).clamp(1, 9)),
            )),
        })
    }

    /// Write the format's trailer and hand back the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Xz(e) => e.finish(),
            Encoder::Bzip2(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Xz(e) => e.write(buf),
            Encoder::Bzip2(e) => e.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.write_all(buf),
            Encoder::Gzip(e) => e.write_all(buf),
            Encoder::Zstd(e) => e.write_all(buf),
            Encoder::Xz(e) => e.write_all(buf),
            Encoder::Bzip2(e) => e.write_all(buf),
        }
    }
    /// Flushes the writer below, not the compressor: a compressor's flush ends its block
    /// early (gzip's sync flush adds an empty stored block), so the compressed bytes would
    /// depend on where a producer happens to flush — the same tar gave two layer digests.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.get_mut().flush(),
            Encoder::Xz(e) => e.get_mut().flush(),
            Encoder::Bzip2(e) => e.get_mut().flush(),
        }
    }
}

/// Convenience for tests and small inputs: decode a whole byte slice.
pub fn decode_all(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut r = BufReader::new(data);
    let kind = sniff(&mut r)?;
    let mut out = Vec::new();
    kind.decoder(r)?.read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_format() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for kind in [
            Compression::None,
            Compression::Gzip,
            Compression::Zstd,
            Compression::Xz,
            Compression::Bzip2,
        ] {
            let mut e = Encoder::new(kind, Some(1), Vec::new()).unwrap();
            e.write_all(&data).unwrap();
            let enc = e.finish().unwrap();
            assert_eq!(Compression::detect(&enc), kind, "{kind:?}");
            assert_eq!(decode_all(&enc).unwrap(), data, "{kind:?}");
        }
    }

    #[test]
    fn a_flush_does_not_change_the_compressed_bytes() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let (a, b) = data.split_at(12_345);
        for kind in [
            Compression::Gzip,
            Compression::Zstd,
            Compression::Xz,
            Compression::Bzip2,
        ] {
            let compress = |flush: bool| {
                let mut e = Encoder::new(kind, None, Vec::new()).unwrap();
                e.write_all(a).unwrap();
                if flush {
                    e.flush().unwrap();
                }
                e.write_all(b).unwrap();
                if flush {
                    e.flush().unwrap();
                }
                e.finish().unwrap()
            };
            assert!(
                compress(true) == compress(false),
                "{kind:?}: flushing changed the output"
            );
        }
    }
}
