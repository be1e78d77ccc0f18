//! `strata extract`: the directory holds exactly the merged tree, and no layer can make it
//! write outside the directory.

mod common;

use common::model::{canon, model_of, read_dir_tree};
use common::stacks::{stack, tars};
use common::*;
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn extract_cli(image: &Path, dir: &Path, extra: &[&str]) -> Output {
    Command::new(strata_bin())
        .args([
            "extract",
            "-q",
            &image.display().to_string(),
            &dir.display().to_string(),
        ])
        .args(extra)
        .output()
        .unwrap()
}

/// A sandbox: `root/victim` (must stay untouched) and `root/out` (the target).
struct Sandbox {
    tmp: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("victim"), b"original").unwrap();
        Sandbox { tmp }
    }
    fn out(&self) -> PathBuf {
        self.tmp.path().join("out")
    }
    fn image(&self, layers: &[Vec<u8>]) -> PathBuf {
        let dir = self.tmp.path().join("img");
        std::fs::create_dir_all(&dir).unwrap();
        write_docker_archive(&dir, layers)
    }
    /// Nothing was written next to the target, and the victim is intact.
    fn assert_contained(&self) {
        let mut names: Vec<String> = std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec!["img", "out", "victim"],
            "something was written outside DIR"
        );
        assert_eq!(
            std::fs::read(self.tmp.path().join("victim")).unwrap(),
            b"original"
        );
        let img: Vec<_> = std::fs::read_dir(self.tmp.path().join("img"))
            .unwrap()
            .collect();
        assert_eq!(img.len(), 1, "only the image file in img/");
    }
}

fn refused(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a refusal containing {needle:?}"
    );
    assert_eq!(out.status.code(), Some(1), "no panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{err}");
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// The extracted directory is the merged tree (as root: owners included).
    #[test]
    fn extract_equals_the_model(ops in stack()) {
        let layers = tars(&ops);
        let Ok(want) = model_of(&layers) else { return Ok(()); };
        let sb = Sandbox::new();
        let out = extract_cli(&sb.image(&layers), &sb.out(), &[]);
        prop_assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let got = canon(&read_dir_tree(&sb.out()));
        prop_assert_eq!(want.paths, got.paths);
        prop_assert_eq!(want.links, got.links);
        sb.assert_contained();
    }
}

#[test]
fn dotdot_is_refused() {
    let sb = Sandbox::new();
    let img = sb.image(&[LayerBuilder::new()
        .file("ok", "1")
        .file("../victim", "pwned")
        .build()]);
    refused(&extract_cli(&img, &sb.out(), &[]), "escapes the root");
    sb.assert_contained();
}

#[test]
fn absolute_paths_stay_inside() {
    let sb = Sandbox::new();
    let victim = sb.tmp.path().join("victim").display().to_string();
    let img = sb.image(&[LayerBuilder::new()
        .file(&victim, "pwned")
        .file("/etc/inside", "x")
        .build()]);
    ok(&extract_cli(&img, &sb.out(), &[]));
    assert_eq!(
        std::fs::read(sb.out().join(victim.trim_start_matches('/'))).unwrap(),
        b"pwned"
    );
    assert!(sb.out().join("etc/inside").exists());
    sb.assert_contained();
}

#[test]
fn symlink_then_entry_below_it_in_the_same_layer() {
    let sb = Sandbox::new();
    let target = sb.tmp.path().display().to_string();
    let img = sb.image(&[LayerBuilder::new()
        .symlink("etc", &target)
        .file("etc/victim", "pwned")
        .build()]);
    refused(&extract_cli(&img, &sb.out(), &[]), "/etc");
    sb.assert_contained();
}

#[test]
fn symlink_to_outside_then_entries_in_a_later_layer() {
    let sb = Sandbox::new();
    let l0 = LayerBuilder::new()
        .symlink("x", "../../..")
        .symlink("abs", &sb.tmp.path().display().to_string())
        .build();
    let l1 = LayerBuilder::new()
        .file("x/victim", "pwned")
        .file("abs/victim", "pwned")
        .build();
    ok(&extract_cli(&sb.image(&[l0, l1]), &sb.out(), &[]));
    // The later layer's entries make x and abs directories inside DIR.
    assert!(sb.out().join("x").is_dir() && sb.out().join("abs/victim").is_file());
    sb.assert_contained();
}

#[test]
fn symlink_swapped_in_for_a_directory_between_layers() {
    let sb = Sandbox::new();
    let l0 = LayerBuilder::new().dir("d").file("d/f", "1").build();
    let l1 = LayerBuilder::new()
        .symlink("d", &sb.tmp.path().display().to_string())
        .build();
    let l2 = LayerBuilder::new().file("d/victim", "pwned").build();
    ok(&extract_cli(&sb.image(&[l0, l1, l2]), &sb.out(), &[]));
    assert!(sb.out().join("d/victim").is_file() && !sb.out().join("d/f").exists());
    sb.assert_contained();
}

#[test]
fn symlink_targets_are_data_never_followed() {
    let sb = Sandbox::new();
    let victim = sb.tmp.path().join("victim").display().to_string();
    let img = sb.image(&[LayerBuilder::new()
        .symlink("abs", &victim)
        .symlink("rel", "../victim")
        .build()]);
    ok(&extract_cli(&img, &sb.out(), &[]));
    assert_eq!(
        std::fs::read_link(sb.out().join("abs"))
            .unwrap()
            .display()
            .to_string(),
        victim
    );
    assert_eq!(
        std::fs::read_link(sb.out().join("rel"))
            .unwrap()
            .display()
            .to_string(),
        "../victim"
    );
    sb.assert_contained();
}

#[test]
fn hardlink_escaping_or_through_a_symlink_is_refused() {
    let sb = Sandbox::new();
    let img = sb.image(&[LayerBuilder::new().hardlink("h", "../victim").build()]);
    refused(&extract_cli(&img, &sb.out(), &[]), "escapes the root");
    sb.assert_contained();
    let sb = Sandbox::new();
    let l = LayerBuilder::new()
        .symlink("s", &sb.tmp.path().display().to_string())
        .hardlink("h", "s/victim")
        .build();
    refused(&extract_cli(&sb.image(&[l]), &sb.out(), &[]), "hardlink /h");
    sb.assert_contained();
}

#[test]
fn very_long_path_is_refused_cleanly() {
    let sb = Sandbox::new();
    let long = format!("{}/f", "x".repeat(5000));
    let img = sb.image(&[LayerBuilder::new().file(&long, "1").build()]);
    refused(&extract_cli(&img, &sb.out(), &[]), "File name too long");
    sb.assert_contained();
}

#[test]
fn ten_thousand_deep_nesting_is_refused_cleanly() {
    let sb = Sandbox::new();
    let deep = format!("{}f", "d/".repeat(10_000));
    let img = sb.image(&[LayerBuilder::new().file(&deep, "1").build()]);
    refused(&extract_cli(&img, &sb.out(), &[]), "too long");
    sb.assert_contained();
}

#[test]
fn invalid_utf8_names_are_extracted_as_bytes() {
    use std::os::unix::ffi::OsStrExt;
    let sb = Sandbox::new();
    let mut l = LayerBuilder::new();
    l.raw(
        b"bad-\xff\xfe-name",
        tar::EntryType::Regular,
        b"",
        b"data",
        &Meta::default(),
        &[],
    );
    ok(&extract_cli(&sb.image(&[l.build()]), &sb.out(), &[]));
    let names: Vec<Vec<u8>> = std::fs::read_dir(sb.out())
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    assert_eq!(names, vec![b"bad-\xff\xfe-name".to_vec()]);
    sb.assert_contained();
}

#[test]
fn huge_declared_size_with_truncated_body_is_refused() {
    let sb = Sandbox::new();
    let mut h = tar::Header::new_ustar();
    h.set_path("big").unwrap();
    h.set_size(1 << 40);
    h.set_mode(0o644);
    h.set_cksum();
    let mut l = h.as_bytes().to_vec();
    l.extend_from_slice(&[7u8; 8192]);
    refused(&extract_cli(&sb.image(&[l]), &sb.out(), &[]), "truncated");
    sb.assert_contained();
}

#[test]
fn non_empty_target_needs_force() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.out()).unwrap();
    std::fs::write(sb.out().join("existing"), b"x").unwrap();
    let img = sb.image(&[LayerBuilder::new().file("a", "1").build()]);
    refused(&extract_cli(&img, &sb.out(), &[]), "--force");
    ok(&extract_cli(&img, &sb.out(), &["--force"]));
    assert!(sb.out().join("a").is_file() && sb.out().join("existing").is_file());
}

#[test]
fn modes_owners_times_links_and_directories_last() {
    use std::os::unix::fs::MetadataExt;
    let sb = Sandbox::new();
    let l = LayerBuilder::new()
        .dir_mode("ro", 0o555)
        .file_meta(
            "ro/f",
            b"x",
            &Meta {
                mode: 0o4755,
                uid: 1234,
                gid: 99,
                mtime: 1_500_000_000,
            },
        )
        .dir_mode("tmp", 0o1777)
        .hardlink("ro-link", "ro/f")
        .fifo("pipe")
        .build();
    ok(&extract_cli(&sb.image(&[l]), &sb.out(), &[]));
    let f = std::fs::metadata(sb.out().join("ro/f")).unwrap();
    assert_eq!(f.mode() & 0o7777, 0o4755, "setuid kept (chmod after chown)");
    assert_eq!(f.mtime(), 1_500_000_000);
    if rustix::process::geteuid().is_root() {
        assert_eq!((f.uid(), f.gid()), (1234, 99));
    }
    let d = std::fs::metadata(sb.out().join("ro")).unwrap();
    assert_eq!(
        d.mode() & 0o7777,
        0o555,
        "a read-only directory still got its child"
    );
    assert_eq!(
        d.mtime(),
        1_700_000_000,
        "directory mtime set after its children"
    );
    assert_eq!(
        std::fs::metadata(sb.out().join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        std::fs::metadata(sb.out().join("ro-link")).unwrap().ino(),
        f.ino()
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(sb.out().join("pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn setuid_and_setgid_go_when_the_owner_is_not_restored() {
    use std::os::unix::fs::MetadataExt;
    let sb = Sandbox::new();
    let meta = |mode| Meta {
        mode,
        uid: 1000,
        gid: 1000,
        mtime: 1_500_000_000,
    };
    let l = LayerBuilder::new()
        .file_meta("suid", b"x", &meta(0o4755))
        .file_meta("sgid", b"x", &meta(0o2755))
        .file_meta("sticky", b"x", &meta(0o1755))
        .build();
    let img = sb.image(&[l]);
    ok(&extract_cli(&img, &sb.out(), &["--no-same-owner"]));
    let mode = |p: &str| std::fs::metadata(sb.out().join(p)).unwrap().mode() & 0o7777;
    // A uid-1000 setuid file must not become setuid for whoever extracts it.
    assert_eq!(mode("suid"), 0o755);
    assert_eq!(mode("sgid"), 0o755);
    assert_eq!(mode("sticky"), 0o1755, "the sticky bit is no privilege");
    if rustix::process::geteuid().is_root() {
        // With the owner restored, the bits stay.
        let out2 = sb.out().with_file_name("owned");
        ok(&extract_cli(&img, &out2, &[]));
        let m = std::fs::metadata(out2.join("suid")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid()), (0o4755, 1000));
    }
}
