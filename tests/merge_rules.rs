//! One test per changeset rule, each on layers built in code. Every test checks strata's
//! output against the reference model and also states the expected result outright.

mod common;

use common::model::{Kind, assert_same, read_flat};
use common::{LayerBuilder, Meta, flatten_layers};

fn paths(layers: &[Vec<u8>]) -> Vec<String> {
    assert_same(layers).paths.keys().cloned().collect()
}

fn content(layers: &[Vec<u8>], path: &str) -> Vec<u8> {
    let t = read_flat(&flatten_layers(layers).unwrap()).unwrap();
    match &t
        .nodes
        .get(path)
        .unwrap_or_else(|| panic!("{path} missing"))
        .kind
    {
        Kind::File(d) => d.clone(),
        k => panic!("{path} is {k:?}"),
    }
}

#[test]
fn whiteout_removes_file_and_subtree_from_lower_layers() {
    let l0 = LayerBuilder::new()
        .dir("a")
        .file("a/x", "1")
        .dir("a/sub")
        .file("a/sub/y", "2")
        .file("keep", "k")
        .build();
    let l1 = LayerBuilder::new().whiteout("a").build();
    assert_eq!(paths(&[l0, l1]), vec!["keep"]);
}

#[test]
fn whiteout_prefix_applies_to_basename_only() {
    let l0 = LayerBuilder::new()
        .file("my.wh.file", "ordinary")
        .file("dir.wh.x", "also")
        .build();
    assert_eq!(paths(&[l0]), vec!["dir.wh.x", "my.wh.file"]);
}

#[test]
fn bare_whiteout_is_an_error() {
    let l0 = LayerBuilder::new().file("a", "1").build();
    let l1 = LayerBuilder::new().file(".wh.", "").build();
    let err = flatten_layers(&[l0, l1]).unwrap_err().to_string();
    assert!(err.contains("invalid whiteout"), "{err}");
    assert!(err.contains("layer 1"), "{err}");
}

#[test]
fn opaque_hides_lower_children_but_not_the_dir_or_own_entries() {
    let l0 = LayerBuilder::new()
        .dir_mode("d", 0o700)
        .file("d/old", "o")
        .dir("d/olddir")
        .file("d/olddir/f", "f")
        .build();
    // Marker after this layer's own entries: position must not matter.
    let l1 = LayerBuilder::new().file("d/new", "n").opaque("d").build();
    let c = assert_same(&[l0, l1]);
    assert_eq!(
        c.paths.keys().cloned().collect::<Vec<_>>(),
        vec!["d", "d/new"]
    );
    // d keeps its lower attributes: only its children were hidden.
    assert!(c.paths["d"].contains("mode=700"), "{}", c.paths["d"]);
}

#[test]
fn opaque_marker_first_in_layer() {
    let l0 = LayerBuilder::new().dir("d").file("d/old", "o").build();
    let l1 = LayerBuilder::new()
        .dir_mode("d", 0o750)
        .opaque("d")
        .file("d/new", "n")
        .build();
    let c = assert_same(&[l0, l1]);
    assert_eq!(
        c.paths.keys().cloned().collect::<Vec<_>>(),
        vec!["d", "d/new"]
    );
    assert!(c.paths["d"].contains("mode=750"));
}

#[test]
fn whiteout_then_recreate_in_same_layer_keeps_the_new_one() {
    let l0 = LayerBuilder::new().dir("x").file("x/old", "o").build();
    let l1 = LayerBuilder::new()
        .whiteout("x")
        .dir("x")
        .file("x/child", "c")
        .build();
    assert_eq!(paths(&[l0, l1]), vec!["x", "x/child"]);
}

#[test]
fn whiteout_after_recreate_in_same_layer_keeps_the_new_one() {
    let l0 = LayerBuilder::new().dir("x").file("x/old", "o").build();
    let l1 = LayerBuilder::new()
        .dir("x")
        .file("x/child", "c")
        .whiteout("x")
        .build();
    assert_eq!(paths(&[l0, l1]), vec!["x", "x/child"]);
}

#[test]
fn file_replacing_directory_drops_the_subtree() {
    let l0 = LayerBuilder::new()
        .dir("p")
        .file("p/a", "a")
        .dir("p/b")
        .file("p/b/c", "c")
        .build();
    let l1 = LayerBuilder::new().file("p", "now a file").build();
    assert_eq!(paths(&[l0.clone(), l1.clone()]), vec!["p"]);
    assert_eq!(content(&[l0, l1], "p"), b"now a file");
}

#[test]
fn symlink_replacing_directory_drops_the_subtree() {
    let l0 = LayerBuilder::new().dir("p").file("p/a", "a").build();
    let l1 = LayerBuilder::new().symlink("p", "/elsewhere").build();
    assert_eq!(paths(&[l0, l1]), vec!["p"]);
}

#[test]
fn directory_replacing_file_or_symlink() {
    let l0 = LayerBuilder::new().file("f", "x").symlink("s", "f").build();
    let l1 = LayerBuilder::new()
        .dir("f")
        .file("f/in", "1")
        .dir("s")
        .file("s/in", "2")
        .build();
    assert_eq!(paths(&[l0, l1]), vec!["f", "f/in", "s", "s/in"]);
}

#[test]
fn directory_over_directory_merges_and_takes_new_attributes() {
    let l0 = LayerBuilder::new()
        .dir_mode("d", 0o700)
        .file("d/lower", "l")
        .build();
    let l1 = LayerBuilder::new()
        .dir_mode("d", 0o755)
        .file("d/upper", "u")
        .build();
    let c = assert_same(&[l0, l1]);
    assert_eq!(
        c.paths.keys().cloned().collect::<Vec<_>>(),
        vec!["d", "d/lower", "d/upper"]
    );
    assert!(c.paths["d"].contains("mode=755"));
}

#[test]
fn aufs_metadata_is_dropped() {
    let l0 = LayerBuilder::new()
        .file(".wh..wh.aufs", "")
        .dir(".wh..wh.plnk")
        .file(".wh..wh.plnk/123.456", "x")
        .file("real", "r")
        .build();
    assert_eq!(paths(&[l0]), vec!["real"]);
}

#[test]
fn dot_slash_and_leading_slash_are_normalized_and_root_not_duplicated() {
    let l0 = LayerBuilder::new()
        .dir("./")
        .dir("./etc")
        .file("./etc/passwd", "root")
        .build();
    let l1 = LayerBuilder::new()
        .dir("/")
        .file("/etc//group", "g")
        .build();
    let out = flatten_layers(&[l0.clone(), l1.clone()]).unwrap();
    let mut ar = tar::Archive::new(&out[..]);
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect();
    assert_eq!(
        names
            .iter()
            .filter(|n| *n == "./" || *n == "/" || *n == ".")
            .count(),
        1,
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("/") && !n.starts_with("./") || n == "./"),
        "{names:?}"
    );
    assert_eq!(paths(&[l0, l1]), vec!["etc", "etc/group", "etc/passwd"]);
}

#[test]
fn dotdot_escaping_the_root_is_an_error() {
    let l0 = LayerBuilder::new().file("../escape", "x").build();
    let err = flatten_layers(&[l0]).unwrap_err().to_string();
    assert!(err.contains("escapes the root"), "{err}");
    assert!(err.contains("../escape"), "{err}");
}

#[test]
fn hardlink_keeps_original_content_when_target_overwritten() {
    // crane #2002: the other aliases must keep the old content.
    let l0 = LayerBuilder::new()
        .file("lib.so", "v1")
        .hardlink("lib.so.1", "lib.so")
        .hardlink("lib.so.1.0", "lib.so")
        .build();
    let l1 = LayerBuilder::new().file("lib.so", "v2").build();
    let c = assert_same(&[l0.clone(), l1.clone()]);
    assert_eq!(content(&[l0.clone(), l1.clone()], "lib.so"), b"v2");
    assert_eq!(content(&[l0.clone(), l1.clone()], "lib.so.1"), b"v1");
    assert_eq!(content(&[l0, l1], "lib.so.1.0"), b"v1");
    assert_eq!(
        c.links.len(),
        1,
        "surviving aliases stay linked: {:?}",
        c.links
    );
}

#[test]
fn hardlink_survives_when_target_deleted() {
    // crane #977, docker-squash: the surviving name must keep the data.
    let l0 = LayerBuilder::new()
        .file("a", "data")
        .hardlink("b", "a")
        .build();
    let l1 = LayerBuilder::new().whiteout("a").build();
    assert_eq!(paths(&[l0.clone(), l1.clone()]), vec!["b"]);
    assert_eq!(content(&[l0, l1], "b"), b"data");
}

#[test]
fn hardlink_target_deleted_via_parent_directory() {
    let l0 = LayerBuilder::new()
        .dir("d")
        .file("d/a", "data")
        .hardlink("b", "d/a")
        .build();
    let l1 = LayerBuilder::new().whiteout("d").build();
    assert_eq!(paths(&[l0.clone(), l1.clone()]), vec!["b"]);
    assert_eq!(content(&[l0, l1], "b"), b"data");
}

#[test]
fn hardlink_alias_overwritten_leaves_target_alone() {
    let l0 = LayerBuilder::new()
        .file("a", "old")
        .hardlink("b", "a")
        .build();
    let l1 = LayerBuilder::new().file("b", "new").build();
    assert_same(&[l0.clone(), l1.clone()]);
    assert_eq!(content(&[l0.clone(), l1.clone()], "a"), b"old");
    assert_eq!(content(&[l0, l1], "b"), b"new");
}

#[test]
fn cross_layer_hardlink_to_lower_file() {
    let l0 = LayerBuilder::new().file("bin/tool", "elf").build();
    let l1 = LayerBuilder::new()
        .hardlink("bin/alias", "bin/tool")
        .build();
    let c = assert_same(&[l0, l1]);
    assert_eq!(c.links.len(), 1);
}

#[test]
fn cross_layer_hardlink_whose_target_is_later_overwritten() {
    let l0 = LayerBuilder::new().file("t", "one").build();
    let l1 = LayerBuilder::new().hardlink("u", "t").build();
    let l2 = LayerBuilder::new().file("t", "two").build();
    assert_same(&[l0.clone(), l1.clone(), l2.clone()]);
    assert_eq!(content(&[l0.clone(), l1.clone(), l2.clone()], "u"), b"one");
    assert_eq!(content(&[l0, l1, l2], "t"), b"two");
}

#[test]
fn hardlink_chain_across_layers() {
    let l0 = LayerBuilder::new()
        .file("x", "X")
        .hardlink("a", "x")
        .build();
    let l1 = LayerBuilder::new()
        .hardlink("c", "a")
        .file("x", "newX")
        .build();
    assert_same(&[l0.clone(), l1.clone()]);
    assert_eq!(content(&[l0.clone(), l1.clone()], "c"), b"X");
    assert_eq!(content(&[l0, l1], "a"), b"X");
}

#[test]
fn hardlink_to_missing_target_is_an_error() {
    let l0 = LayerBuilder::new().hardlink("b", "nothing").build();
    let err = flatten_layers(&[l0]).unwrap_err().to_string();
    assert!(err.contains("hardlink /b"), "{err}");
}

#[test]
fn pax_long_names_and_xattrs_survive_byte_for_byte() {
    let long = format!("{}/file", "d".repeat(150));
    let mut l = LayerBuilder::new();
    l.dir(&"d".repeat(150));
    l.raw(
        long.as_bytes(),
        tar::EntryType::Regular,
        b"",
        b"content",
        &Meta::default(),
        &[
            ("SCHILY.xattr.user.test", b"value"),
            ("mtime", b"1700000000.123456789"),
        ],
    );
    l.raw(
        "utf8-\u{e9}t\u{e9}".as_bytes(),
        tar::EntryType::Regular,
        b"",
        b"u",
        &Meta::default(),
        &[("path", "utf8-\u{e9}t\u{e9}".as_bytes())],
    );
    let l0 = l.build();
    assert_same(std::slice::from_ref(&l0));
    let out = flatten_layers(std::slice::from_ref(&l0)).unwrap();
    // The entry passes through untouched: its header bytes appear verbatim in the output.
    let start = l0.windows(7).position(|w| w == b"content").unwrap();
    let hdr = &l0[start - 512 * 3..start];
    assert!(
        out.windows(hdr.len()).any(|w| w == hdr),
        "PAX header + entry not preserved byte-for-byte"
    );
    let mut ar = tar::Archive::new(&out[..]);
    let mut found = false;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == long {
            let exts = e.pax_extensions().unwrap().unwrap();
            found = exts.map(|x| x.unwrap()).any(|x| {
                x.key().unwrap() == "SCHILY.xattr.user.test" && x.value_bytes() == b"value"
            });
        }
    }
    assert!(found, "xattr record lost");
}

#[test]
fn gnu_long_names_are_read() {
    let mut b = tar::Builder::new(Vec::new());
    let long = format!("{}/leaf", "g".repeat(120));
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(2);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, &long, &b"hi"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_mode(0o777);
    h.set_size(0);
    h.set_entry_type(tar::EntryType::Symlink);
    b.append_link(&mut h, "lnk", format!("{}/target", "t".repeat(120)))
        .unwrap();
    let l0 = b.into_inner().unwrap();
    let c = assert_same(&[l0]);
    assert!(c.paths.contains_key(&long));
    assert!(c.paths["lnk"].contains(&"t".repeat(120)));
}

#[test]
fn modes_owners_symlinks_and_fifos_are_preserved() {
    let l0 = LayerBuilder::new()
        .file_meta(
            "suid",
            b"x",
            &Meta {
                mode: 0o4755,
                uid: 1000,
                gid: 50,
                mtime: 1,
            },
        )
        .dir_mode("tmp", 0o1777)
        .symlink("dangling", "/does/not/exist")
        .fifo("pipe")
        .build();
    let c = assert_same(&[l0]);
    assert!(c.paths["suid"].contains("mode=4755 uid=1000 gid=50"));
    assert!(c.paths["tmp"].contains("mode=1777"));
    assert!(c.paths["dangling"].contains("symlink -> /does/not/exist"));
    assert!(c.paths["pipe"].starts_with("fifo"));
}

#[test]
fn empty_layers_are_fine() {
    let l0 = LayerBuilder::new().file("a", "1").build();
    let empty_tar = LayerBuilder::new().build(); // only end-of-archive blocks
    let zero_bytes: Vec<u8> = Vec::new();
    assert_eq!(paths(&[l0, empty_tar, zero_bytes]), vec!["a"]);
}

#[test]
fn missing_parent_directories_are_created() {
    let l0 = LayerBuilder::new().file("deep/er/file", "x").build();
    let c = assert_same(&[l0]);
    // Docker's layer apply makes missing parents 0600 (checked against dockerd in docker_e2e).
    assert!(c.paths["deep"].contains("dir mode=600"));
    assert!(c.paths["deep/er"].contains("dir mode=600"));
}

#[test]
fn upper_entry_under_lower_non_directory() {
    let l0 = LayerBuilder::new().file("a", "file").build();
    let l1 = LayerBuilder::new().file("a/b", "under").build();
    assert_eq!(paths(&[l0, l1]), vec!["a", "a/b"]);
}

#[test]
fn lower_entries_come_after_upper_ones_in_output() {
    // Newest-first: the top layer's entries start the stream.
    let l0 = LayerBuilder::new().file("bottom", "b").build();
    let l1 = LayerBuilder::new().file("top", "t").build();
    let out = flatten_layers(&[l0, l1]).unwrap();
    let mut ar = tar::Archive::new(&out[..]);
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["top", "bottom"]);
}
