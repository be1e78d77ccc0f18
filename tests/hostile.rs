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

/// An OCI layout of `layers` (uncompressed) whose files can be edited before writing.
fn layout_files(layers: &[Vec<u8>]) -> std::collections::BTreeMap<String, Vec<u8>> {
    oci_layout_files(layers, Comp::None, "v1")
}

/// Point the index at a new manifest (its digest recomputed).
fn with_manifest(
    files: &mut std::collections::BTreeMap<String, Vec<u8>>,
    manifest: serde_json::Value,
) {
    let raw = serde_json::to_vec(&manifest).unwrap();
    let hex = sha256_hex(&raw);
    files.insert(format!("blobs/sha256/{hex}"), raw.clone());
    let mut index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    index["manifests"][0]["digest"] = format!("sha256:{hex}").into();
    index["manifests"][0]["size"] = raw.len().into();
    files.insert("index.json".into(), serde_json::to_vec(&index).unwrap());
}

fn manifest_of(files: &std::collections::BTreeMap<String, Vec<u8>>) -> serde_json::Value {
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let d = index["manifests"][0]["digest"].as_str().unwrap();
    serde_json::from_slice(&files[&format!("blobs/sha256/{}", &d[7..])]).unwrap()
}

#[test]
fn oci_digests_are_parsed_strictly_and_never_paths() {
    let d = tempfile::tempdir().unwrap();
    let secret = d.path().join("secret");
    std::fs::write(&secret, b"outside the layout").unwrap();
    let layers = vec![LayerBuilder::new().file("a", "1").build()];
    for evil in [
        "../../secret:x",
        "sha256:../../../secret",
        "SHA256:abc",
        "md5:0123456789abcdef0123456789abcdef",
    ] {
        let mut files = layout_files(&layers);
        let mut m = manifest_of(&files);
        m["layers"][0]["digest"] = evil.into();
        with_manifest(&mut files, m);
        let root = d.path().join("layout");
        let _ = std::fs::remove_dir_all(&root);
        write_files(&root, &files);
        fails_with(
            &["inspect", &format!("oci:{}", root.display())],
            "bad digest",
        );
    }
}

#[test]
fn oci_blobs_are_regular_files_inside_the_layout() {
    let d = tempfile::tempdir().unwrap();
    let layers = vec![LayerBuilder::new().file("a", "1").build()];
    let files = layout_files(&layers);
    let m = manifest_of(&files);
    let blob = m["layers"][0]["digest"].as_str().unwrap()[7..].to_string();
    // A blob that is a symlink out of the layout (to a file with the very same bytes).
    let root = d.path().join("symlinked");
    write_files(&root, &files);
    let outside = d.path().join("outside");
    std::fs::rename(root.join("blobs/sha256").join(&blob), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("blobs/sha256").join(&blob)).unwrap();
    fails_with(
        &["inspect", &format!("oci:{}", root.display())],
        "out of the layout",
    );
    // A blob that is a fifo: an error at once, not a hang.
    let root = d.path().join("fifo");
    write_files(&root, &files);
    let p = root.join("blobs/sha256").join(&blob);
    std::fs::remove_file(&p).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &p,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    fails_with(
        &["inspect", &format!("oci:{}", root.display())],
        "not a regular file (a fifo)",
    );
}

#[test]
fn sha512_blobs_are_read_and_verified() {
    use sha2::Digest;
    let d = tempfile::tempdir().unwrap();
    let layers = vec![
        LayerBuilder::new().file("a", "1").build(),
        LayerBuilder::new().file("b", "2").build(),
    ];
    let mut files = layout_files(&layers);
    let mut m = manifest_of(&files);
    let blob = files[&format!(
        "blobs/sha256/{}",
        &m["layers"][1]["digest"].as_str().unwrap()[7..]
    )]
        .clone();
    let hex = hex::encode(sha2::Sha512::digest(&blob));
    files.insert(format!("blobs/sha512/{hex}"), blob.clone());
    m["layers"][1]["digest"] = format!("sha512:{hex}").into();
    with_manifest(&mut files, m.clone());
    let root = d.path().join("sha512");
    write_files(&root, &files);
    let r = format!("oci:{}", root.display());
    let want = flatten_ref(
        &write_docker_archive(d.path(), &layers)
            .display()
            .to_string(),
    )
    .unwrap();
    assert_eq!(flatten_ref(&r).unwrap(), want);
    // The same blob, altered: the sha512 digest is checked, not skipped.
    let mut bad = blob.clone();
    let at = bad.len() - 1100;
    bad[at] ^= 1;
    std::fs::write(root.join(format!("blobs/sha512/{hex}")), &bad).unwrap();
    fails_with(&["flatten", &r, "-o", "/dev/null"], "digest mismatch");
}

#[test]
fn gnu_sparse_files_are_refused_not_written_as_their_map() {
    let d = tempfile::tempdir().unwrap();
    // Old GNU `S` type, and PAX 1.0 (`GNU.sparse.major`, name GNUSparseFile.0/…).
    let mut old = header(b"sparse-old", b'S', octal(512));
    old.extend_from_slice(&[b'm'; 512]);
    old.extend_from_slice(&[0u8; 1024]);
    let mut pax1 = pax(&[
        record("GNU.sparse.major", "1"),
        record("GNU.sparse.minor", "0"),
        record("GNU.sparse.name", "big"),
        record("GNU.sparse.realsize", "1048576"),
    ]
    .concat());
    pax1.extend_from_slice(&header(b"GNUSparseFile.0/big", b'0', octal(512)));
    pax1.extend_from_slice(&[b'1'; 512]);
    pax1.extend_from_slice(&[0u8; 1024]);
    for layer in [old, pax1] {
        let dir = tempfile::tempdir_in(d.path()).unwrap();
        let img = write_docker_archive(dir.path(), &[layer])
            .display()
            .to_string();
        fails_with(&["flatten", &img, "-o", "/dev/null"], "GNU sparse file");
        let out = dir.path().join("x");
        fails_with(
            &["extract", &img, &out.display().to_string()],
            "GNU sparse file",
        );
        assert!(!out.join("GNUSparseFile.0").exists());
    }
}

#[test]
fn paths_linux_cannot_create_are_refused_before_any_output_grows() {
    let d = tempfile::tempdir().unwrap();
    // 2000 levels of one-letter directories (4000 bytes) fit; a name of 256 bytes or a path
    // past PATH_MAX does not — and a 137 KB layer of such paths must not flatten to gigabytes.
    let ok_path = format!("{}f", "d/".repeat(2000));
    let img = write_docker_archive(d.path(), &[LayerBuilder::new().file(&ok_path, "1").build()]);
    let out = d.path().join("ok.tar");
    let (code, err, _) = run(&[
        "flatten",
        &img.display().to_string(),
        "-o",
        &out.display().to_string(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    for (path, what) in [
        (format!("{}f", "d/".repeat(2100)), "PATH_MAX"),
        (format!("a/{}/f", "n".repeat(256)), "NAME_MAX"),
    ] {
        let dir = tempfile::tempdir_in(d.path()).unwrap();
        let img = write_docker_archive(dir.path(), &[LayerBuilder::new().file(&path, "1").build()]);
        fails_with(
            &["flatten", &img.display().to_string(), "-o", "/dev/null"],
            what,
        );
    }
}

#[test]
fn a_corrupt_blob_stops_the_output_once_known() {
    let d = tempfile::tempdir().unwrap();
    // The bottom layer is corrupt (one byte of a file changed under its diff_id); the big top
    // layer is merged first. The background check of the small bottom layer fails long before
    // the top layer is through: the pipe must stop then, not after the whole top layer.
    let bottom = LayerBuilder::new()
        .file("bottom", "UNIQUE-CONTENT-OF-THE-BOTTOM-LAYER")
        .build();
    let mut top = LayerBuilder::new();
    top.dir("big");
    let data = vec![b'z'; 4096];
    for i in 0..10_000 {
        top.file_meta(&format!("big/f{i}"), &data, &Meta::default());
    }
    let top = top.build();
    let top_len = top.len();
    let archive = write_docker_archive(d.path(), &[bottom, top]);
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes
        .windows(34)
        .position(|w| w == b"UNIQUE-CONTENT-OF-THE-BOTTOM-LAYER")
        .unwrap();
    bytes[at] = b'X';
    std::fs::write(&archive, &bytes).unwrap();
    let img = archive.display().to_string();
    let o = Command::new(strata_bin())
        .args(["flatten", &img, "-o", "-"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("layer 0") && err.contains("digest mismatch"),
        "{err}"
    );
    assert!(
        o.stdout.len() < top_len / 4,
        "{} bytes out of a {top_len}-byte top layer went out before stopping",
        o.stdout.len()
    );
    // extract says the same: the mismatch, not an error it caused.
    let out = d.path().join("x");
    fails_with(
        &["extract", &img, &out.display().to_string()],
        "digest mismatch",
    );
}

#[test]
fn an_empty_layer_is_an_empty_tree() {
    // The input of the fuzzer's only report (a leak report at exit, not a crash).
    let d = tempfile::tempdir().unwrap();
    let img = write_docker_archive(d.path(), &[Vec::new()])
        .display()
        .to_string();
    let (code, err, _) = run(&["flatten", &img, "-o", "/dev/null"]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn an_oci_artifact_is_not_an_image() {
    let d = tempfile::tempdir().unwrap();
    let layers = vec![LayerBuilder::new().file("Chart.yaml", "name: x").build()];
    let mut files = layout_files(&layers);
    let mut m = manifest_of(&files);
    m["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json".into();
    with_manifest(&mut files, m);
    let root = d.path().join("chart");
    write_files(&root, &files);
    for cmd in ["inspect", "files"] {
        fails_with(
            &[cmd, &format!("oci:{}", root.display())],
            "not an image: config media type application/vnd.cncf.helm.config.v1+json",
        );
    }
}
