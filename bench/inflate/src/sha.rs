//! SHA-256 throughput of the sha2 crate and of ring on 1 GiB in 1 MiB updates.
use sha2::Digest;
use std::time::Instant;

fn main() {
    let buf: Vec<u8> = (0..1 << 20).map(|i| (i * 7 + 3) as u8).collect();
    for _ in 0..2 {
        let t = Instant::now();
        let mut h = sha2::Sha256::new();
        for _ in 0..1024 {
            h.update(&buf);
        }
        let a = h.finalize();
        let ta = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut c = ring::digest::Context::new(&ring::digest::SHA256);
        for _ in 0..1024 {
            c.update(&buf);
        }
        let b = c.finish();
        let tb = t.elapsed().as_secs_f64();
        assert_eq!(a.as_slice(), b.as_ref());
        println!("1 GiB: sha2 {ta:.3} s ({:.2} GB/s), ring {tb:.3} s ({:.2} GB/s)", 1.073741824 / ta, 1.073741824 / tb);
    }
}
