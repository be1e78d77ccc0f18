//! Hostile archives and layers, built here byte by byte: sizes that would wrap the block
//! arithmetic, extension headers that would grow memory without bound, PAX records that do
//! not parse. Each is a one-line error (exit 1) that comes quickly — no spin, no panic, no
//! entry smuggled out of a file's body.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// A ustar header block: `name`, typeflag, size field bytes as given (octal or base-256).
fn header(name: &[u8], flag: u8, size_field: [u8; 12]) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(&size_field);
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = flag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn octal(n: u64) -> [u8; 12] {
    let mut f = [0u8; 12];
    f[..11].copy_from_slice(format!("{n:011o}").as_bytes());
    f
}

/// GNU base-256: the top bit set, the value big-endian.
fn base256(n: u64) -> [u8; 12] {
    let mut f = [0u8; 12];
    f[0] = 0x80;
    f[4..].copy_from_slice(&n.to_be_bytes());
    f
}

fn pax(records: &[u8]) -> Vec<u8> {
    let mut v = header(b"PaxHeader", b'x', octal(records.len() as u64));
    v.extend_from_slice(records);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

fn record(key: &str, value: &str) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while len != base + len.to_string().len() {
        len = base + len.to_string().len();
    }
    format!("{len} {key}={value}\n").into_bytes()
}

/// Run strata, bounded in time; the status and stderr.
fn run(args: &[&str]) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(strata_bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = started + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("strata {args:?} did not finish in 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = child.wait_with_output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        started.elapsed(),
    )
}

fn fails_with(args: &[&str], what: &str) {
    let (code, err, took) = run(args);
    assert_eq!(code, Some(1), "{args:?}: {err}");
    assert!(err.contains(what), "{args:?}: expected {what:?} in {err:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(took < Duration::from_secs(10), "{args:?} took {took:?}");
}

#[test]
fn an_outer_member_of_2_64_minus_512_bytes_is_refused_not_spun_on() {
    let d = tempfile::tempdir().unwrap();
    // A 2.5 KB "archive" whose first member claims 2^64 - 512 bytes: the index position
    // would wrap back to the start and loop forever.
    let mut a = header(b"manifest.json", b'0', base256(u64::MAX - 511));
    a.extend_from_slice(&[b'x'; 512]);
    a.extend_from_slice(&header(b"other", b'0', octal(0)));
    a.extend_from_slice(&[0u8; 1024]);
    let p = d.path().join("wrap.tar");
    std::fs::write(&p, &a).unwrap();
    let p = p.display().to_string();
    for cmd in ["inspect", "files", "waste"] {
        fails_with(&[cmd, &p], "beyond any real file");
    }
    fails_with(&["flatten", &p, "-o", "/dev/null"], "beyond any real file");
}

#[test]
fn a_pax_size_that_wraps_the_padding_cannot_smuggle_entries_out_of_a_body() {
    let d = tempfile::tempdir().unwrap();
    // A file whose PAX size is 2^64-1: with wrapped padding its body would be parsed as
    // headers, and the "evil" entry hidden in it would come out.
    let mut layer = pax(&record("size", &u64::MAX.to_string()));
    layer.extend_from_slice(&header(b"innocent", b'0', octal(1024)));
    layer.extend_from_slice(&header(b"evil", b'0', octal(4)));
    layer.extend_from_slice(b"evil");
    layer.resize(layer.len().div_ceil(512) * 512 + 1024, 0);
    let img = write_docker_archive(d.path(), &[layer])
        .display()
        .to_string();
    fails_with(
        &["flatten", &img, "-o", "/dev/null"],
        "beyond any real file",
    );
    fails_with(&["files", &img], "beyond any real file");
}

#[test]
fn extension_headers_are_bounded_per_entry() {
    let d = tempfile::tempdir().unwrap();
    // Five PAX headers of 1 MiB (each within the per-header bound) before one entry.
    let filler = "a".repeat((1 << 20) - 40);
    let mut layer = Vec::new();
    for _ in 0..5 {
        layer.extend_from_slice(&pax(&record("comment", &filler)));
    }
    layer.extend_from_slice(&header(b"file", b'0', octal(0)));
    layer.extend_from_slice(&[0u8; 1024]);
    let img = write_docker_archive(d.path(), &[layer])
        .display()
        .to_string();
    fails_with(
        &["flatten", &img, "-o", "/dev/null"],
        "extension headers of more than",
    );
}

#[test]
fn malformed_pax_records_are_errors_not_copied_through() {
    let d = tempfile::tempdir().unwrap();
    for (bad, what) in [
        (&b"13 path=abc\n"[..], "length does not match"),
        (&b"11 nothing\n"[..], "without '='"),
        (&b"x path=abc\n"[..], "bad length"),
        (&b"path=abc\n"[..], "without a length"),
    ] {
        let mut layer = pax(bad);
        layer.extend_from_slice(&header(b"file", b'0', octal(0)));
        layer.extend_from_slice(&[0u8; 1024]);
        let img = write_docker_archive(d.path(), &[layer])
            .display()
            .to_string();
        fails_with(&["flatten", &img, "-o", "/dev/null"], what);
    }
    // A PAX size that is not a number.
    let mut layer = pax(&record("size", "12abc"));
    layer.extend_from_slice(&header(b"file", b'0', octal(0)));
    layer.extend_from_slice(&[0u8; 1024]);
    let img = write_docker_archive(d.path(), &[layer])
        .display()
        .to_string();
    fails_with(&["flatten", &img, "-o", "/dev/null"], "bad PAX size");
}
