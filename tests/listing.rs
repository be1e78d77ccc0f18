//! `strata files` and `strata diff IMAGE`: per-layer listings and classification rules.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;

fn json_of(args: &[&str]) -> Value {
    let o = Command::new(strata_bin())
        .args(args)
        .arg("--no-cache")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn image(layers: &[Vec<u8>]) -> (tempfile::TempDir, String) {
    let d = tempfile::tempdir().unwrap();
    let p = write_docker_archive(d.path(), layers).display().to_string();
    (d, p)
}

fn paths(v: &Value) -> Vec<String> {
    let mut p: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap().to_string())
        .collect();
    p.sort();
    p
}

fn what_of(changed: &Value, path: &str) -> Vec<String> {
    let c = changed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == path)
        .unwrap_or_else(|| panic!("{path} not changed"));
    c["what"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn files_json_has_the_documented_shape() {
    let l0 = LayerBuilder::new()
        .dir("etc")
        .file("etc/passwd", "root")
        .symlink("link", "/etc")
        .build();
    let l1 = LayerBuilder::new()
        .whiteout("etc/passwd")
        .opaque("etc")
        .file(".wh..wh.aufs", "")
        .hardlink("h", "link")
        .build();
    let (_d, img) = image(&[l0, l1]);
    let v = json_of(&["files", "--json", &img]);
    assert_eq!(v["image"], img.as_str());
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0]["index"], 0);
    assert!(
        layers[0]["diff_id"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    for e in layers[0]["entries"].as_array().unwrap() {
        for k in [
            "path", "type", "size", "mode", "uid", "gid", "mtime", "link", "deleted",
        ] {
            assert!(e.get(k).is_some(), "entry lacks {k}: {e}");
        }
        assert!(e["path"].as_str().unwrap().starts_with('/'));
    }
    let passwd = &layers[0]["entries"][1];
    assert_eq!(
        (
            passwd["path"].as_str(),
            passwd["type"].as_str(),
            passwd["size"].as_u64()
        ),
        (Some("/etc/passwd"), Some("file"), Some(4))
    );
    let top = layers[1]["entries"].as_array().unwrap();
    assert_eq!(top.len(), 3, "AUFS metadata omitted: {top:?}");
    assert_eq!(
        (
            top[0]["path"].as_str(),
            top[0]["type"].as_str(),
            top[0]["deleted"].as_bool()
        ),
        (Some("/etc/passwd"), Some("whiteout"), Some(true))
    );
    assert_eq!(
        (
            top[1]["path"].as_str(),
            top[1]["type"].as_str(),
            top[1]["deleted"].as_bool()
        ),
        (Some("/etc"), Some("opaque"), Some(true))
    );
    assert_eq!(
        (top[2]["type"].as_str(), top[2]["link"].as_str()),
        (Some("hardlink"), Some("link"))
    );
    // --layer picks one; the text form lists deletions.
    let one = json_of(&["files", "--json", "--layer", "1", &img]);
    assert_eq!(one["layers"].as_array().unwrap().len(), 1);
    let o = Command::new(strata_bin())
        .args(["files", &img])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("opaque directory")
            && text.contains("deleted")
            && text.contains("/etc/passwd"),
        "{text}"
    );
}

#[test]
fn diff_classifies_each_kind_of_change() {
    let l0 = LayerBuilder::new()
        .dir("d")
        .file("d/x", "x")
        .dir("d/sub")
        .file("d/sub/y", "y")
        .file("same", "s")
        .file("chmod", "c")
        .file_meta("chown", b"o", &Meta::default())
        .symlink("sl", "a")
        .dir("op")
        .file("op/old", "o")
        .file("tofile", "t")
        .build();
    let l1 = LayerBuilder::new()
        .file("new", "n")
        .file("same", "s2")
        .file_meta(
            "chmod",
            b"c",
            &Meta {
                mode: 0o600,
                ..Meta::default()
            },
        )
        .file_meta(
            "chown",
            b"o",
            &Meta {
                uid: 7,
                ..Meta::default()
            },
        )
        .symlink("sl", "b")
        .whiteout("d")
        .opaque("op")
        .file("op/fresh", "f")
        .file("tofile", "now")
        .build();
    let l2 = LayerBuilder::new()
        .dir("tofile")
        .file("tofile/in", "i")
        .file("new", "n")
        .build();
    let (_d, img) = image(&[l0, l1, l2]);
    let v = json_of(&["diff", "--json", &img]);
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    let l1 = &layers[1];
    assert_eq!(l1["index"], 1);
    assert_eq!(paths(&l1["created"]), vec!["/new", "/op/fresh"]);
    assert_eq!(what_of(&l1["changed"], "/same"), vec!["content"]);
    assert_eq!(what_of(&l1["changed"], "/chmod"), vec!["mode"]);
    assert_eq!(what_of(&l1["changed"], "/chown"), vec!["owner"]);
    assert_eq!(what_of(&l1["changed"], "/sl"), vec!["link"]);
    assert_eq!(what_of(&l1["changed"], "/tofile"), vec!["content"]);
    // What actually disappeared, not only the markers.
    assert_eq!(
        paths(&l1["deleted"]),
        vec!["/d", "/d/sub", "/d/sub/y", "/d/x", "/op/old"]
    );
    let l2 = &layers[2];
    assert_eq!(
        what_of(&l2["changed"], "/tofile"),
        vec!["type", "content", "mode"]
    );
    assert_eq!(
        what_of(&l2["changed"], "/new"),
        Vec::<String>::new(),
        "same bytes again: listed, nothing differs"
    );
    assert_eq!(paths(&l2["created"]), vec!["/tofile/in"]);
    for c in l2["created"].as_array().unwrap() {
        assert!(c["type"].is_string() && c["size"].is_u64());
    }
}

/// A layer that writes a file again with only a new `atime` PAX record (and mtime): nothing
/// `diff` compares differs, so JSON's `what` is empty and the text says `rewritten` — not a
/// metadata change the JSON does not name.
#[test]
fn diff_of_an_atime_only_rewrite_says_rewritten_in_text_and_json() {
    let l0 = LayerBuilder::new().file("f", "same").build();
    let l1 = LayerBuilder::new()
        .raw(
            b"f",
            tar::EntryType::Regular,
            b"",
            b"same",
            &Meta {
                mtime: 1_800_000_000,
                ..Meta::default()
            },
            &[("atime", b"1800000000.5")],
        )
        .build();
    let (_d, img) = image(&[l0, l1]);
    let v = json_of(&["diff", "--json", &img, "--layer", "1"]);
    let l = &v["layers"][0];
    assert_eq!(what_of(&l["changed"], "/f"), Vec::<String>::new());
    let o = Command::new(strata_bin())
        .args(["diff", &img, "--layer", "1", "--no-cache"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.ends_with(" /f (rewritten)"))
        .unwrap_or_else(|| panic!("no rewritten line for /f:\n{text}"));
    assert!(line.trim_start().starts_with('~'), "{line}");
    assert!(!text.contains("metadata"), "{text}");
}

#[test]
fn diff_directory_replaced_by_file_lists_the_subtree() {
    let l0 = LayerBuilder::new()
        .dir("p")
        .file("p/a", "1")
        .dir("p/b")
        .file("p/b/c", "2")
        .build();
    let l1 = LayerBuilder::new().file("p", "file now").build();
    let (_d, img) = image(&[l0, l1]);
    let v = json_of(&["diff", "--json", "--layer", "1", &img]);
    let l = &v["layers"][0];
    assert_eq!(
        what_of(&l["changed"], "/p"),
        vec!["type", "content", "mode"]
    );
    assert_eq!(paths(&l["deleted"]), vec!["/p/a", "/p/b", "/p/b/c"]);
}

#[test]
fn diff_hardlink_shares_its_targets_content() {
    let l0 = LayerBuilder::new().file("t", "data").build();
    let l1 = LayerBuilder::new().hardlink("h", "t").build();
    let (_d, img) = image(&[l0, l1]);
    let v = json_of(&["diff", "--json", &img]);
    let c = &v["layers"][1]["created"][0];
    assert_eq!(
        (c["path"].as_str(), c["type"].as_str(), c["size"].as_u64()),
        (Some("/h"), Some("file"), Some(4))
    );
}

#[test]
fn waste_counts_overwritten_deleted_and_hidden_bytes() {
    let l0 = LayerBuilder::new()
        .file("a", &"A".repeat(100))
        .dir("d")
        .file("d/x", &"x".repeat(50))
        .dir("o")
        .file("o/y", &"y".repeat(30))
        .file("dup", "same")
        .build();
    let l1 = LayerBuilder::new()
        .file("a", &"B".repeat(10))
        .whiteout("d")
        .opaque("o")
        .file("dup", "same")
        .build();
    let (_d, img) = image(&[l0, l1]);
    let v = json_of(&["waste", "--json", &img]);
    // wasted: a (100) + d/x (50) + o/y (30) + dup (4); total: 100 + 50 + 30 + 4 + 10 + 4.
    assert_eq!(v["wasted_bytes"], 184);
    assert_eq!(v["duplicate_bytes"], 4);
    assert_eq!(v["total_bytes"], 198);
    let eff = v["efficiency"].as_f64().unwrap();
    assert!((eff - 14.0 / 198.0).abs() < 1e-9, "{eff}");
    let top = v["top"].as_array().unwrap();
    assert_eq!(top[0]["path"], "/a");
    assert_eq!(top[0]["wasted_bytes"], 100);
    assert_eq!(top[0]["layers"], serde_json::json!([0]));
    assert!(
        top.iter().any(|t| t["path"] == "/o/y"),
        "opaque-hidden bytes count: {top:?}"
    );
    // CI mode: thresholds turn into exit status 3.
    let run = |args: &[&str]| Command::new(strata_bin()).args(args).output().unwrap();
    assert_eq!(
        run(&["waste", &img, "--ci", "--max-wasted", "1KB"])
            .status
            .code(),
        Some(0)
    );
    let o = run(&["waste", &img, "--ci", "--max-wasted", "100"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("184 wasted bytes exceed 100"));
    assert_eq!(
        run(&["waste", &img, "--ci", "--max-wasted", "95%"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        run(&["waste", &img, "--ci", "--min-efficiency", "50"])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        run(&["waste", &img, "--ci", "--max-wasted", "lots"])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn diff_between_two_images_shares_the_base() {
    let base = LayerBuilder::new()
        .dir("etc")
        .file("etc/conf", "v1")
        .file("keep", "k")
        .file("gone", "g")
        .build();
    let a_top = LayerBuilder::new().file("app", "one").build();
    let b_top = LayerBuilder::new()
        .file("app", "two")
        .file("new", "n")
        .whiteout("gone")
        .file_meta(
            "keep",
            b"k",
            &Meta {
                mode: 0o600,
                ..Meta::default()
            },
        )
        .build();
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    let b = d.path().join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let a = write_docker_archive(&a, &[base.clone(), a_top])
        .display()
        .to_string();
    let b = write_oci_dir(&b, &[base, b_top], Comp::Gzip)
        .display()
        .to_string();
    let v = json_of(&["diff", "--json", &a, &format!("oci:{b}")]);
    assert_eq!(paths(&v["added"]), vec!["/new"]);
    assert_eq!(paths(&v["removed"]), vec!["/gone"]);
    assert_eq!(what_of(&v["modified"], "/app"), vec!["content"]);
    assert_eq!(what_of(&v["modified"], "/keep"), vec!["mode"]);
    assert_eq!(
        v["summary"]["shared_layers"], 1,
        "the common base layer is read once"
    );
    assert_eq!(v["summary"]["added"], 1);
    assert_eq!(v["summary"]["removed_bytes"], 1);
}

#[test]
fn second_run_reads_listings_from_the_cache() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let layers = vec![
        LayerBuilder::new()
            .dir("etc")
            .file("etc/conf", "v1")
            .file("bin", "x")
            .build(),
        LayerBuilder::new()
            .file("etc/conf", "v2")
            .whiteout("bin")
            .build(),
    ];
    let dir = write_oci_dir(d.path(), &layers, Comp::None);
    let reference = format!("oci:{}", dir.display());
    let run = |cmd: &str, extra: &[&str]| {
        Command::new(strata_bin())
            .args([
                cmd,
                "--json",
                &reference,
                "--cache-dir",
                &cache.display().to_string(),
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let cold: Vec<Vec<u8>> = ["files", "diff", "waste"]
        .iter()
        .map(|c| run(c, &[]).stdout)
        .collect();
    assert!(cold.iter().all(|o| !o.is_empty()));
    let entries: Vec<_> = std::fs::read_dir(cache.join("listings")).unwrap().collect();
    assert_eq!(entries.len(), 2, "one listing per layer");
    // Scribble over the layer blobs (same size): a warm run must not read them.
    for l in &layers {
        let p = dir.join(format!("blobs/sha256/{}", sha256_hex(l)));
        std::fs::write(&p, vec![b'#'; l.len()]).unwrap();
    }
    for (i, c) in ["files", "diff", "waste"].iter().enumerate() {
        let warm = run(c, &[]);
        assert!(
            warm.status.success(),
            "{c}: {}",
            String::from_utf8_lossy(&warm.stderr)
        );
        assert_eq!(warm.stdout, cold[i], "{c}: warm output differs");
    }
    // Without the cache the damage shows.
    let o = run("files", &["--no-cache"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("digest mismatch"), "{err}");
}

#[test]
fn corrupt_cache_entries_are_rebuilt() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let layers = vec![LayerBuilder::new().file("a", "1").build()];
    let img = write_docker_archive(d.path(), &layers)
        .display()
        .to_string();
    let run = || {
        Command::new(strata_bin())
            .args([
                "files",
                "--json",
                &img,
                "--cache-dir",
                &cache.display().to_string(),
            ])
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success());
    let entry = std::fs::read_dir(cache.join("listings"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = std::fs::read(&entry).unwrap();
    std::fs::write(&entry, &good[..good.len() / 2]).unwrap(); // a torn write
    let second = run();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(second.stdout, first.stdout);
    assert_eq!(
        std::fs::read(&entry).unwrap(),
        good,
        "the entry was rebuilt"
    );
}

/// The tree the `diff`/`waste` walk ends with is the tree the reference model builds: the same
/// paths (parent directories Docker makes for entries without one included), types, modes and
/// file sizes.
mod walk_matches_the_model {
    use super::*;
    use common::model::{Kind, tree_of};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, max_global_rejects: 100_000, ..ProptestConfig::default() })]
        #[test]
        fn final_tree(stack in common::stacks::stack()) {
            let layers = common::stacks::tars(&stack);
            // Stacks Docker would refuse (a hardlink to nothing) say nothing about the walk.
            let want = tree_of(&layers).ok();
            prop_assume!(want.is_some());
            let want = want.unwrap();
            let empty = vec![LayerBuilder::new().build()];
            let (_da, a) = image(&empty);
            let (_db, b) = image(&layers);
            let v = json_of(&["diff", "--json", &a, &b]);
            let mut got = std::collections::BTreeMap::new();
            for c in v["added"].as_array().unwrap() {
                got.insert(
                    c["path"].as_str().unwrap().trim_start_matches('/').to_string(),
                    (c["type"].as_str().unwrap().to_string(), c["size"].as_u64().unwrap(), c["mode"].as_u64().unwrap()),
                );
            }
            for (p, (kind, size, mode)) in &got {
                let n = want.nodes.get(p);
                prop_assert!(n.is_some(), "walk has {p} ({kind}), the model does not; stack {stack:?}");
                let n = n.unwrap();
                let (wkind, wsize) = match &n.kind {
                    Kind::File(d) => ("file", d.len() as u64),
                    Kind::Dir => ("dir", 0),
                    Kind::Symlink(_) => ("symlink", 0),
                    Kind::Fifo => ("fifo", 0),
                };
                prop_assert_eq!(kind.as_str(), wkind, "type of {}; stack {:?}", p, stack);
                prop_assert_eq!(*mode, n.mode as u64, "mode of {}; stack {:?}", p, stack);
                if wkind == "file" {
                    prop_assert_eq!(*size, wsize, "size of {}; stack {:?}", p, stack);
                }
            }
            for p in want.nodes.keys() {
                prop_assert!(got.contains_key(p), "model has {p}, the walk does not; stack {stack:?}");
            }
        }
    }
}

/// An opaque marker at the top hides every lower path, in `diff` and in `waste`.
#[test]
fn root_opaque_marker_hides_everything_below() {
    let layers = vec![
        LayerBuilder::new()
            .dir("a")
            .file("a/x", "xx")
            .file("top", "ttt")
            .build(),
        LayerBuilder::new()
            .file(".wh..wh..opq", "")
            .file("new", "n")
            .build(),
    ];
    let (_d, img) = image(&layers);
    let v = json_of(&["diff", "--json", &img, "--layer", "1"]);
    let l = &v["layers"][0];
    assert_eq!(paths(&l["deleted"]), ["/a", "/a/x", "/top"]);
    assert_eq!(paths(&l["created"]), ["/new"]);
    let w = json_of(&["waste", "--json", &img]);
    assert_eq!(w["wasted_bytes"], 5);
}

/// Names that are not UTF-8 are different paths, even when they print alike.
#[test]
fn non_utf8_names_stay_apart() {
    let meta = Meta::default();
    let layers = vec![
        LayerBuilder::new()
            .raw(b"caf\xe9", tar::EntryType::Regular, b"", b"1", &meta, &[])
            .raw(b"caf\xe8", tar::EntryType::Regular, b"", b"2", &meta, &[])
            .build(),
    ];
    let (_d, img) = image(&layers);
    let v = json_of(&["diff", "--json", &img]);
    let l = &v["layers"][0];
    assert_eq!(l["created"].as_array().unwrap().len(), 2, "{l}");
    assert!(l["changed"].as_array().unwrap().is_empty(), "{l}");
    let w = json_of(&["waste", "--json", &img]);
    assert_eq!(w["wasted_bytes"], 0);
}

/// What an unverified run read is not cached for verified ones; a trailer whose count was
/// edited is caught and the entry rebuilt.
#[test]
fn cache_takes_only_verified_and_intact_listings() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let layers = vec![LayerBuilder::new().file("a", "1").file("b", "2").build()];
    let img = write_docker_archive(d.path(), &layers)
        .display()
        .to_string();
    let run = |extra: &[&str]| {
        Command::new(strata_bin())
            .args([
                "files",
                "--json",
                &img,
                "--cache-dir",
                &cache.display().to_string(),
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(run(&["--no-verify"]).status.success());
    let listed = |p: &std::path::Path| {
        std::fs::read_dir(p.join("listings"))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    assert_eq!(listed(&cache), 0, "an unverified listing was cached");
    let first = run(&[]);
    assert!(first.status.success());
    assert_eq!(listed(&cache), 1);
    let entry = std::fs::read_dir(cache.join("listings"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = std::fs::read_to_string(&entry).unwrap();
    let edited = good.replace("{\"entries\":2,", "{\"entries\":3,");
    assert_ne!(edited, good, "the trailer holds the count: {good}");
    std::fs::write(&entry, &edited).unwrap();
    let second = run(&[]);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(second.stdout, first.stdout);
    assert_eq!(std::fs::read_to_string(&entry).unwrap(), good, "rebuilt");
}

/// A hardlinked file's data is gone only with its last path.
#[test]
fn waste_counts_hardlinked_data_once_its_last_path_is_gone() {
    let base = || {
        LayerBuilder::new()
            .file("t", "12345")
            .hardlink("l", "t")
            .build()
    };
    let one = vec![base(), LayerBuilder::new().whiteout("t").build()];
    let (_d1, img) = image(&one);
    let w = json_of(&["waste", "--json", &img]);
    assert_eq!(w["wasted_bytes"], 0, "/l still holds the data: {w}");
    assert_eq!(w["total_bytes"], 5);
    let both = vec![
        base(),
        LayerBuilder::new().whiteout("t").build(),
        LayerBuilder::new().whiteout("l").build(),
    ];
    let (_d2, img) = image(&both);
    let w = json_of(&["waste", "--json", &img]);
    assert_eq!(w["wasted_bytes"], 5, "{w}");
}

/// `strata diff IMAGE | head`: once the output is gone, the walk stops instead of reading the
/// remaining layers (here the second one is not even a tar: reading it would fail on that).
#[test]
fn diff_stops_reading_layers_when_its_output_closes() {
    let mut l0 = LayerBuilder::new();
    for i in 0..3000 {
        l0.file(&format!("many/file-{i:05}.txt"), "x");
    }
    let not_a_tar = vec![b'A'; 4096];
    let (_d, img) = image(&[l0.build(), not_a_tar]);
    // The broken second layer is an error when the output is read.
    let o = Command::new(strata_bin())
        .args(["diff", "--json", "--no-cache", &img])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("layer 1"), "{err}");
    // With the reader gone, the walk stops: layer 1 is never read.
    let mut child = Command::new(strata_bin())
        .args(["diff", "--json", "--no-cache", &img])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    // Quietly, with the status a C tool killed by SIGPIPE gives.
    assert_eq!(o.status.code(), Some(141));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.is_empty(), "{err}");
}

/// A layer is printed only once it has been read to its end and its digest checked: nothing of
/// a layer whose content does not match its diff_id reaches the output.
#[test]
fn diff_prints_nothing_of_a_layer_that_fails_verification() {
    let mut l0 = LayerBuilder::new();
    l0.file("base.txt", "base");
    let mut l1 = LayerBuilder::new();
    l1.file("late.txt", "tampered-with");
    let (_d, img) = image(&[l0.build(), l1.build()]);
    let mut bytes = std::fs::read(&img).unwrap();
    let i = bytes
        .windows(13)
        .position(|w| w == b"tampered-with")
        .unwrap();
    bytes[i] = b'T';
    std::fs::write(&img, bytes).unwrap();
    for style in [&["--json"][..], &[][..]] {
        let o = Command::new(strata_bin())
            .args(["diff", "--no-cache", &img])
            .args(style)
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("digest mismatch") && err.contains("layer 1"),
            "{err}"
        );
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("/base.txt"),
            "layer 0 is verified and shown: {out}"
        );
        assert!(!out.contains("late.txt"), "{out}");
    }
}

/// `diff --layer N` needs the layers up to N, not those above: a broken layer above is not read.
#[test]
fn diff_of_one_layer_does_not_read_the_layers_above() {
    let mut l0 = LayerBuilder::new();
    l0.file("base.txt", "base");
    let (_d, img) = image(&[l0.build(), vec![b'A'; 4096]]);
    let v = json_of(&["diff", "--json", "--layer", "0", &img]);
    assert_eq!(v["layers"].as_array().unwrap().len(), 1);
    assert_eq!(v["layers"][0]["created"][0]["path"], "/base.txt");
    let o = Command::new(strata_bin())
        .args(["diff", "--json", "--no-cache", "--layer", "1", &img])
        .output()
        .unwrap();
    assert!(!o.status.success());
}

/// Each layer's diff against the reference model: every path at most once per layer, `created`
/// exactly what the layer added, `deleted` exactly what it took away, `changed` only paths that
/// were there before and after — and every such path whose type, mode or content differs.
mod diff_matches_the_model {
    use super::*;
    use common::model::tree_of;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, max_global_rejects: 100_000, ..ProptestConfig::default() })]
        #[test]
        fn per_layer(stack in common::stacks::stack()) {
            let layers = common::stacks::tars(&stack);
            prop_assume!(tree_of(&layers).is_ok());
            let (_d, img) = image(&layers);
            let v = json_of(&["diff", "--json", &img]);
            let got = v["layers"].as_array().unwrap();
            prop_assert_eq!(got.len(), layers.len());
            for (i, l) in got.iter().enumerate() {
                let before = tree_of(&layers[..i]).unwrap();
                let after = tree_of(&layers[..=i]).unwrap();
                let (created, changed, deleted) =
                    (listed_paths(&l["created"]), listed_paths(&l["changed"]), listed_paths(&l["deleted"]));
                let mut seen = BTreeSet::new();
                for p in created.iter().chain(&changed).chain(&deleted) {
                    prop_assert!(seen.insert(p.clone()), "layer {i} lists {p} twice: {l}; stack {stack:?}");
                }
                let b: BTreeSet<&String> = before.nodes.keys().collect();
                let a: BTreeSet<&String> = after.nodes.keys().collect();
                let want_created: BTreeSet<&String> = a.difference(&b).copied().collect();
                let want_deleted: BTreeSet<&String> = b.difference(&a).copied().collect();
                prop_assert_eq!(created.iter().collect::<BTreeSet<_>>(), want_created, "created, layer {}; stack {:?}", i, stack);
                prop_assert_eq!(deleted.iter().collect::<BTreeSet<_>>(), want_deleted, "deleted, layer {}; stack {:?}", i, stack);
                let changed: BTreeMap<&String, ()> = changed.iter().map(|p| (p, ())).collect();
                for p in changed.keys() {
                    prop_assert!(b.contains(p) && a.contains(p), "layer {i}: {p} changed but not there before and after; stack {stack:?}");
                }
                for p in a.intersection(&b) {
                    let (x, y) = (&before.nodes[*p], &after.nodes[*p]);
                    if x.kind != y.kind || x.mode != y.mode || x.uid != y.uid || x.gid != y.gid {
                        prop_assert!(changed.contains_key(p), "layer {i}: {p} differs but is not listed as changed; stack {stack:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn files_text_of_a_big_layer_is_held_back_on_disk_and_complete() {
    // 30k entries: their text lines (past 1 MiB) go through the temp file before the title.
    let mut l = LayerBuilder::new();
    l.dir("d");
    for i in 0..30_000 {
        l.file(&format!("d/file-with-a-longish-name-{i:06}"), "");
    }
    let (_d, img) = image(&[l.build()]);
    let o = Command::new(strata_bin())
        .args(["files", "--no-cache", &img])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let mut lines = text.lines();
    let title = lines.next().unwrap();
    assert!(title.ends_with(": 30001 entries"), "{title}");
    let rest: Vec<&str> = lines.collect();
    assert_eq!(rest.len(), 30_001);
    assert!(
        rest[1].ends_with("/d/file-with-a-longish-name-000000"),
        "{}",
        rest[1]
    );
    assert!(rest[30_000].ends_with("/d/file-with-a-longish-name-029999"));
}

#[test]
fn flags_that_would_do_nothing_are_errors() {
    let (_d, img) = image(&[LayerBuilder::new().file("a", "1").build()]);
    let (_d2, img2) = image(&[LayerBuilder::new().file("b", "2").build()]);
    let run = |args: &[&str]| Command::new(strata_bin()).args(args).output().unwrap();
    for (args, what) in [
        (vec!["waste", &img, "--max-wasted", "1MB"], "only with --ci"),
        (
            vec!["waste", &img, "--min-efficiency", "90"],
            "only with --ci",
        ),
        (vec!["waste", &img, "--ci"], "needs a threshold"),
        (
            vec!["waste", &img, "--ci", "--min-efficiency", "150"],
            "from 0 to 100",
        ),
        (
            vec!["waste", &img, "--ci", "--max-wasted", "120%"],
            "from 0 to 100",
        ),
        (
            vec!["diff", &img, &img2, "--layer", "0"],
            "compares whole trees",
        ),
    ] {
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(what), "{args:?}: {err}");
        assert!(
            o.stdout.is_empty(),
            "{args:?}: nothing is read or printed first"
        );
    }
}

/// On a terminal, `files`, `diff` and `waste` show a bar naming the layer being read
/// (`layer 1/2`); `-q` and a warm cache (nothing to read) show none. The terminal is a pty
/// from util-linux's `script`, stdout going to /dev/null.
#[test]
fn listings_show_a_bar_naming_the_layer_on_a_terminal() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "CI needs script(1)");
        eprintln!("SKIPPED: no script(1)");
        return;
    }
    let big = vec![b'x'; 4 << 20];
    let l0 = LayerBuilder::new()
        .file_meta("a", &big, &Meta::default())
        .build();
    let l1 = LayerBuilder::new()
        .file_meta("b", &big, &Meta::default())
        .build();
    let (d, img) = image(&[l0, l1]);
    let cache = d.path().join("cache");
    let on_tty = |args: &str| {
        let cmd = format!(
            "{} {args} --cache-dir {} > /dev/null",
            strata_bin().display(),
            cache.display()
        );
        let o = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    for cmd in ["files", "diff", "waste"] {
        let shown = on_tty(&format!("{cmd} {img} --no-cache"));
        assert!(shown.contains("layer 1/2"), "{cmd}: {shown:?}");
        let quiet = on_tty(&format!("-q {cmd} {img} --no-cache"));
        assert!(!quiet.contains("layer "), "{cmd} -q: {quiet:?}");
    }
    // Cache the listings, then nothing is read: no bar.
    on_tty(&format!("files {img}"));
    let warm = on_tty(&format!("diff {img}"));
    assert!(!warm.contains("layer "), "warm diff: {warm:?}");
}
