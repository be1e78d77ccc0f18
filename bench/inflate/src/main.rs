//! Inflate backends on gzip files, each output checked to be the same bytes (SHA-256):
//! flate2 on zlib-rs (what strata streams with) against libdeflate (whole buffers in memory,
//! which a streaming tool cannot use on layers of hundreds of MB — it shows the headroom).
//!
//!   cargo run --release -- FILE.gz...
use sha2::{Digest, Sha256};
use std::io::Read;
use std::time::Instant;

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    let (mut t_zlib, mut t_deflate, mut total) = (0f64, 0f64, 0u64);
    for f in &files {
        let gz = std::fs::read(f).expect("read");
        // zlib-rs, streaming through 256 KiB reads as strata does.
        let t = Instant::now();
        let mut dec = flate2::read::GzDecoder::new(&gz[..]);
        let mut buf = vec![0u8; 256 * 1024];
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut hash_time = 0f64;
        loop {
            let k = dec.read(&mut buf).expect("inflate");
            if k == 0 {
                break;
            }
            let th = Instant::now();
            h.update(&buf[..k]);
            hash_time += th.elapsed().as_secs_f64();
            n += k as u64;
        }
        let a = t.elapsed().as_secs_f64() - hash_time;
        let sha_a = hex::encode(h.finalize());
        // libdeflate: the whole output in memory (its size from the gzip trailer).
        let isize = u32::from_le_bytes(gz[gz.len() - 4..].try_into().unwrap()) as usize;
        let mut out = vec![0u8; isize.max(n as usize)];
        let t = Instant::now();
        let mut d = libdeflater::Decompressor::new();
        let m = d.gzip_decompress(&gz, &mut out).expect("libdeflate");
        let b = t.elapsed().as_secs_f64();
        let sha_b = hex::encode(Sha256::digest(&out[..m]));
        assert_eq!(sha_a, sha_b, "{f}: the backends disagree");
        println!(
            "{f}: {} MB out; zlib-rs {a:.2} s ({:.0} MB/s), libdeflate {b:.2} s ({:.0} MB/s); same sha256",
            n / 1_000_000,
            n as f64 / a / 1e6,
            n as f64 / b / 1e6
        );
        t_zlib += a;
        t_deflate += b;
        total += n;
    }
    println!(
        "all: {} MB; zlib-rs {t_zlib:.2} s, libdeflate {t_deflate:.2} s ({:.2}x)",
        total / 1_000_000,
        t_zlib / t_deflate
    );
}
