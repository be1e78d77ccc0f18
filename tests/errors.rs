//! Bad input: a one-line error naming the problem, a non-zero exit, no panic, and no output
//! file (nor temp file) left behind.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Run {
    ok: bool,
    stderr: String,
}

/// Run `strata flatten IMAGE -o OUT` in a fresh output directory and check the invariants
/// every failure must keep.
fn flatten_fails(image: &str) -> Run {
    let outdir = tempfile::tempdir().unwrap();
    let out = outdir.path().join("out.tar");
    let o = Command::new(strata_bin())
        .args(["flatten", image, "-o", &out.display().to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "expected failure for {image}");
    assert_eq!(
        o.status.code(),
        Some(1),
        "exit code (a panic gives 101): {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    eprintln!("{image}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("strata: error: "), "{stderr}");
    let left: Vec<PathBuf> = std::fs::read_dir(outdir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    Run {
        ok: o.status.success(),
        stderr,
    }
}

fn layers() -> Vec<Vec<u8>> {
    vec![
        LayerBuilder::new()
            .dir("etc")
            .file("etc/data", &"x".repeat(5000))
            .build(),
        LayerBuilder::new().file("top", &"y".repeat(3000)).build(),
    ]
}

fn replace_in_file(p: &Path, from: &[u8], to: &[u8]) {
    let mut b = std::fs::read(p).unwrap();
    let i = b
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    b[i..i + to.len()].copy_from_slice(to);
    std::fs::write(p, b).unwrap();
}

#[test]
fn truncated_archive() {
    let d = tempfile::tempdir().unwrap();
    let p = write_docker_archive(d.path(), &layers());
    let b = std::fs::read(&p).unwrap();
    // Cut inside the first layer member.
    let cut = b.windows(100).position(|w| w == &[b'x'; 100][..]).unwrap() + 1000;
    std::fs::write(&p, &b[..cut]).unwrap();
    let r = flatten_fails(&p.display().to_string());
    assert!(r.stderr.contains("truncated"), "{}", r.stderr);
    assert!(!r.ok);
}

#[test]
fn digest_mismatch_names_the_layer() {
    let d = tempfile::tempdir().unwrap();
    let p = write_docker_archive(d.path(), &layers());
    replace_in_file(&p, b"yyyy", b"yzyy");
    let r = flatten_fails(&p.display().to_string());
    assert!(
        r.stderr.contains("digest mismatch") && r.stderr.contains("layer 1"),
        "{}",
        r.stderr
    );
}

#[test]
fn blob_digest_mismatch_in_oci_layout() {
    let d = tempfile::tempdir().unwrap();
    let ls = layers();
    let (blob, mt) = compress(&ls[0], Comp::None);
    let mut files = oci_layout_from_blobs(&[(blob.clone(), mt)], &config_json(&ls[..1]), "v1");
    let name = format!("blobs/sha256/{}", sha256_hex(&blob));
    let data = files.get_mut(&name).unwrap();
    let i = data.windows(4).position(|w| w == b"xxxx").unwrap();
    data[i] = b'q';
    write_files(d.path(), &files);
    let r = flatten_fails(&format!("oci:{}", d.path().display()));
    assert!(
        r.stderr.contains("digest mismatch") && r.stderr.contains("layer 0"),
        "{}",
        r.stderr
    );
}

/// An OCI layout whose one layer blob is `blob`, with digests that match it (so the decoder,
/// not the digest check, must notice).
fn oci_with_blob(blob: Vec<u8>, diff_of: &[u8]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let files = oci_layout_from_blobs(
        &[(blob, "application/vnd.oci.image.layer.v1.tar+gzip")],
        &config_json(&[diff_of.to_vec()]),
        "v1",
    );
    write_files(d.path(), &files);
    d
}

#[test]
fn truncated_gzip_layer() {
    let l = layers()[0].clone();
    let (gz, _) = compress(&l, Comp::Gzip);
    let d = oci_with_blob(gz[..gz.len() / 2].to_vec(), &l);
    let r = flatten_fails(&format!("oci:{}", d.path().display()));
    assert!(
        r.stderr.contains("gzip") && r.stderr.contains("layer 0"),
        "{}",
        r.stderr
    );
}

#[test]
fn corrupt_gzip_layer() {
    let l = layers()[0].clone();
    let (mut gz, _) = compress(&l, Comp::Gzip);
    let n = gz.len();
    for b in &mut gz[20..n - 20] {
        *b ^= 0x5a;
    }
    let d = oci_with_blob(gz, &l);
    let r = flatten_fails(&format!("oci:{}", d.path().display()));
    assert!(
        r.stderr.contains("corrupt gzip") || r.stderr.contains("digest mismatch"),
        "{}",
        r.stderr
    );
}

#[test]
fn corrupt_zstd_layer() {
    let l = layers()[0].clone();
    let (mut z, _) = compress(&l, Comp::Zstd);
    let n = z.len();
    for b in &mut z[8..n - 4] {
        *b ^= 0xff;
    }
    let d = oci_with_blob(z, &l);
    let r = flatten_fails(&format!("oci:{}", d.path().display()));
    assert!(r.stderr.contains("zstd"), "{}", r.stderr);
}

#[test]
fn missing_blob() {
    let d = tempfile::tempdir().unwrap();
    let dir = write_oci_dir(d.path(), &layers(), Comp::Gzip);
    let (gz, _) = compress(&layers()[1], Comp::Gzip);
    std::fs::remove_file(dir.join(format!("blobs/sha256/{}", sha256_hex(&gz)))).unwrap();
    let r = flatten_fails(&format!("oci:{}", dir.display()));
    assert!(
        r.stderr.contains("missing blob") && r.stderr.contains("layer 1"),
        "{}",
        r.stderr
    );
}

#[test]
fn missing_layer_member() {
    let ls = layers();
    let cfg = config_json(&ls[..1]);
    let members = vec![
        ("c.json".to_string(), cfg),
        (
            "manifest.json".to_string(),
            br#"[{"Config":"c.json","RepoTags":["a:b"],"Layers":["nope/layer.tar"]}]"#.to_vec(),
        ),
    ];
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.tar");
    std::fs::write(&p, archive(&members)).unwrap();
    let r = flatten_fails(&p.display().to_string());
    assert!(r.stderr.contains("nope/layer.tar"), "{}", r.stderr);
}

#[test]
fn bad_json_everywhere() {
    let d = tempfile::tempdir().unwrap();
    // manifest.json
    let p = d.path().join("m.tar");
    std::fs::write(
        &p,
        archive(&[("manifest.json".into(), b"[{not json".to_vec())]),
    )
    .unwrap();
    let r = flatten_fails(&p.display().to_string());
    assert!(
        r.stderr.contains("bad JSON") && r.stderr.contains("manifest.json"),
        "{}",
        r.stderr
    );
    // config
    let p = d.path().join("c.tar");
    std::fs::write(
        &p,
        archive(&[
            ("c.json".into(), b"{\"rootfs\":".to_vec()),
            (
                "manifest.json".into(),
                br#"[{"Config":"c.json","Layers":[]}]"#.to_vec(),
            ),
        ]),
    )
    .unwrap();
    let r = flatten_fails(&p.display().to_string());
    assert!(
        r.stderr.contains("bad JSON") && r.stderr.contains("c.json"),
        "{}",
        r.stderr
    );
    // index.json
    let dir = write_oci_dir(d.path(), &layers(), Comp::Gzip);
    std::fs::write(dir.join("index.json"), b"{]").unwrap();
    let r = flatten_fails(&format!("oci:{}", dir.display()));
    assert!(
        r.stderr.contains("bad JSON") && r.stderr.contains("index.json"),
        "{}",
        r.stderr
    );
}

#[test]
fn unknown_transport_and_missing_file() {
    let r = flatten_fails("ftp:somewhere");
    assert!(r.stderr.contains("unknown transport"), "{}", r.stderr);
    let r = flatten_fails("/no/such/image.tar");
    assert!(
        r.stderr.contains("/no/such/image.tar") && r.stderr.contains("no such file"),
        "{}",
        r.stderr
    );
}

#[test]
fn not_an_image() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("plain.txt");
    std::fs::write(&p, b"hello, not a tar").unwrap();
    let r = flatten_fails(&p.display().to_string());
    assert!(r.stderr.contains("plain.txt"), "{}", r.stderr);
}

#[test]
fn path_escaping_the_root() {
    let d = tempfile::tempdir().unwrap();
    let l = LayerBuilder::new()
        .file("ok", "1")
        .file("a/../../etc/passwd", "pwn")
        .build();
    let p = write_docker_archive(d.path(), &[l]);
    let r = flatten_fails(&p.display().to_string());
    assert!(
        r.stderr.contains("escapes the root") && r.stderr.contains("layer 0"),
        "{}",
        r.stderr
    );
}

#[test]
fn bare_whiteout() {
    let d = tempfile::tempdir().unwrap();
    let l = LayerBuilder::new().file("etc/.wh.", "").build();
    let p = write_docker_archive(d.path(), &[l]);
    let r = flatten_fails(&p.display().to_string());
    assert!(
        r.stderr.contains("invalid whiteout") && r.stderr.contains("/etc/.wh."),
        "{}",
        r.stderr
    );
}

#[test]
fn truncated_layer_tar_inside_valid_blob() {
    // The blob's digest is right, but the tar inside ends in the middle of an entry.
    let l = layers()[0].clone();
    let short = l[..1200].to_vec();
    let d = tempfile::tempdir().unwrap();
    let files = oci_layout_from_blobs(
        &[(short.clone(), "application/vnd.oci.image.layer.v1.tar")],
        &config_json(&[short]),
        "v1",
    );
    write_files(d.path(), &files);
    let r = flatten_fails(&format!("oci:{}", d.path().display()));
    assert!(
        r.stderr.contains("truncated") && r.stderr.contains("layer 0"),
        "{}",
        r.stderr
    );
}

#[test]
fn existing_output_needs_force() {
    let d = tempfile::tempdir().unwrap();
    let p = write_docker_archive(d.path(), &layers());
    let out = d.path().join("exists.tar");
    std::fs::write(&out, b"precious").unwrap();
    let o = Command::new(strata_bin())
        .args([
            "flatten",
            &p.display().to_string(),
            "-o",
            &out.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    let o = Command::new(strata_bin())
        .args([
            "flatten",
            &p.display().to_string(),
            "-o",
            &out.display().to_string(),
            "--force",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_ne!(std::fs::read(&out).unwrap(), b"precious");
}

#[test]
fn failed_forced_overwrite_keeps_the_old_file() {
    let d = tempfile::tempdir().unwrap();
    let l = LayerBuilder::new().file("../x", "1").build();
    let p = write_docker_archive(d.path(), &[l]);
    let out = d.path().join("keep.tar");
    std::fs::write(&out, b"precious").unwrap();
    let o = Command::new(strata_bin())
        .args([
            "flatten",
            &p.display().to_string(),
            "-o",
            &out.display().to_string(),
            "--force",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    let names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".partial")), "{names:?}");
}

#[test]
fn huge_declared_size_with_short_body() {
    // A header claiming 1 TiB of content, followed by a few bytes.
    let mut h = tar::Header::new_ustar();
    h.set_path("big").unwrap();
    h.set_size(1 << 40);
    h.set_mode(0o644);
    h.set_cksum();
    let mut l = h.as_bytes().to_vec();
    l.extend_from_slice(&[7u8; 4096]);
    let d = tempfile::tempdir().unwrap();
    let files = oci_layout_from_blobs(
        &[(l.clone(), "application/vnd.oci.image.layer.v1.tar")],
        &config_json(&[l]),
        "v1",
    );
    write_files(d.path(), &files);
    let r = flatten_fails(&format!("oci:{}", d.path().display()));
    assert!(r.stderr.contains("truncated"), "{}", r.stderr);
}

#[test]
fn compression_levels_are_checked_per_codec() {
    let d = tempfile::tempdir().unwrap();
    let img = write_docker_archive(d.path(), &layers())
        .display()
        .to_string();
    for (args, what) in [
        (
            vec!["flatten", &img, "--compress", "gzip", "--level", "10"],
            "out of range for gzip: 0-9",
        ),
        (
            vec!["flatten", &img, "--compress", "zstd", "--level", "22"],
            "out of range for zstd: 1-19",
        ),
        (
            vec!["flatten", &img, "--compress", "bzip2", "--level", "0"],
            "out of range for bzip2: 1-9",
        ),
        (vec!["flatten", &img, "--level", "3"], "needs --compress"),
        (
            vec![
                "squash",
                &img,
                "--format",
                "oci-archive",
                "--compress",
                "zstd",
                "--level",
                "40",
            ],
            "out of range for zstd",
        ),
    ] {
        let out = d.path().join("out");
        let mut args = args.clone();
        let o = out.display().to_string();
        args.extend(["-o", &o]);
        let r = Command::new(strata_bin()).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(what), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} left output");
    }
    // In range: fine.
    let o = d.path().join("ok.tar.zst").display().to_string();
    let r = Command::new(strata_bin())
        .args([
            "flatten",
            &img,
            "--compress",
            "zstd",
            "--level",
            "19",
            "-o",
            &o,
        ])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

#[test]
fn version_completions_and_man_page() {
    let run = |args: &[&str]| {
        let o = Command::new(strata_bin()).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let v = run(&["--version"]);
    assert!(v.starts_with("strata 0."), "{v}");
    // Built from a git checkout (as CI and a developer build are): the commit is named.
    if let Ok(o) = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        && o.status.success()
    {
        let rev = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert!(v.contains(&format!("({rev})")), "{v} vs {rev}");
    }
    assert!(run(&["completions", "bash"]).contains("_strata()"));
    assert!(run(&["completions", "zsh"]).contains("#compdef strata"));
    assert!(run(&["completions", "fish"]).contains("complete -c strata"));
    let man = run(&["man"]);
    assert!(
        man.contains(".TH strata 1"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(man.contains("squash"));
}

#[test]
fn flatten_into_a_closed_pipe_ends_quietly_and_logs_have_no_colour_off_a_terminal() {
    use std::io::Read;
    let d = tempfile::tempdir().unwrap();
    let mut l = LayerBuilder::new();
    for i in 0..2000 {
        l.file(&format!("f{i}"), &"x".repeat(2000));
    }
    let img = write_docker_archive(d.path(), &[l.build()])
        .display()
        .to_string();
    // `strata flatten … | head -c 100`: the reader goes away; status 141, nothing said.
    let mut child = Command::new(strata_bin())
        .args(["flatten", &img, "-o", "-"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(141),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // -v logs to a pipe: plain text, no ANSI escapes.
    let o = Command::new(strata_bin())
        .args(["-v", "flatten", &img, "-o", "/dev/null"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("INFO"), "{err}");
    assert!(!err.contains('\x1b'), "{err:?}");
}

#[test]
fn an_image_from_a_terminal_is_refused() {
    // `script` gives strata a terminal on stdin (util-linux).
    if Command::new("script").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "script (util-linux) is missing under CI"
        );
        return;
    }
    let cmd = format!("{} inspect - </dev/tty", strata_bin().display());
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("refusing to read an image from a terminal"),
        "{out}"
    );
    assert_eq!(o.status.code(), Some(1), "{out}");
}

#[test]
fn a_config_not_named_by_its_digest_is_an_error_verified_and_a_warning_unverified() {
    let d = tempfile::tempdir().unwrap();
    let layer = LayerBuilder::new().file("a", "1").build();
    let cfg = config_json(std::slice::from_ref(&layer));
    let wrong = "0".repeat(64);
    let members = vec![
        ("layer/layer.tar".to_string(), layer),
        (format!("{wrong}.json"), cfg),
        (
            "manifest.json".to_string(),
            serde_json::to_vec(&serde_json::json!([{"Config": format!("{wrong}.json"), "RepoTags": ["x:1"], "Layers": ["layer/layer.tar"]}])).unwrap(),
        ),
    ];
    let p = d.path().join("misnamed.tar");
    std::fs::write(&p, archive(&members)).unwrap();
    let img = p.display().to_string();
    let r = flatten_fails(&img);
    assert!(r.stderr.contains("digest mismatch"), "{}", r.stderr);
    let o = Command::new(strata_bin())
        .args(["flatten", &img, "--no-verify", "-o", "/dev/null"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("WARN") && err.contains("digest mismatch") && err.contains("--no-verify"),
        "{err}"
    );
}

#[test]
fn every_command_s_help_says_what_an_image_is_and_keeps_global_options_apart() {
    for cmd in [
        "inspect", "flatten", "files", "diff", "waste", "extract", "squash", "copy",
    ] {
        let o = Command::new(strata_bin())
            .args([cmd, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{cmd}");
        if cmd != "copy" {
            assert!(
                help.contains("docker-daemon:NAME[:TAG]"),
                "{cmd} --help: IMAGE described\n{help}"
            );
        }
        assert!(
            help.contains("Global options:"),
            "{cmd} --help: global options apart\n{help}"
        );
        if help.contains("--json") {
            assert!(
                help.contains("JSON shapes"),
                "{cmd} --help: where the schema is"
            );
        }
    }
}
