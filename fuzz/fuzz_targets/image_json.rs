#![no_main]
//! Manifest, index and config JSON: a docker-archive whose `manifest.json`, config and
//! `repositories` are the fuzzed bytes (split at NUL), around one small valid layer.
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fn member(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let manifest = parts.next().unwrap_or_default();
    let config = parts.next().unwrap_or_default();
    let repositories = parts.next().unwrap_or_default();
    let mut a = Vec::new();
    member(&mut a, "manifest.json", manifest);
    member(&mut a, "config.json", config);
    member(&mut a, "repositories", repositories);
    member(&mut a, "layer.tar", &[0u8; 1024]);
    a.extend_from_slice(&[0u8; 1024]);
    if let Ok(index) = strata::image::archive::ArchiveIndex::from_file(common::memfile(&a), "fuzz".into()) {
        if let Ok(img) = strata::image::docker_archive::open_index(index, None, "fuzz") {
            let _ = strata::inspect::report(&img);
        }
    }
});
