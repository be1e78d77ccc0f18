//! `strata build`: trees made on disk in code, built with the binary, read back with strata's
//! flatten and a plain tar reader. The source tree is the oracle: the flattened image must
//! hold exactly it (owners 0:0 unless --owner), and the bytes must not depend on when, where
//! or how often the build ran.

mod common;

use common::model::{Canon, Tree, canon, diff_report, read_dir_tree, read_flat};
use proptest::prelude::*;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn strata_in(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(common::strata_bin());
    c.current_dir(cwd)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.stdin(Stdio::null()).output().unwrap()
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "strata failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn err(o: Output) -> String {
    assert!(!o.status.success(), "strata should have failed");
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(e.trim_end().lines().count(), 1, "one-line error: {e}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

/// Build to a file in `out_dir` and return its bytes.
fn build_bytes(cwd: &Path, args: &[&str]) -> Vec<u8> {
    let out = tempfile::tempdir().unwrap();
    let p = out.path().join("img.tar");
    let mut a = vec!["-q", "build"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", p.to_str().unwrap()]);
    ok(strata_in(cwd, &a, &[]));
    std::fs::read(p).unwrap()
}

fn flat_canon(image: &Path) -> Canon {
    let flat = common::flatten_ref(&image.display().to_string()).unwrap();
    canon(&read_flat(&flat).unwrap())
}

/// The tree as an image without --owner holds it.
fn owned_by_root(mut t: Tree) -> Tree {
    for n in t.nodes.values_mut() {
        n.uid = 0;
        n.gid = 0;
    }
    t
}

fn assert_canon(want: &Canon, got: &Canon) {
    if let Some(msg) = diff_report(want, got, "source", "image") {
        panic!("image differs from the source tree:\n{msg}");
    }
}

fn write(p: &Path, data: &[u8], mode: u32) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Everything a layer can hold: sizes around block boundaries, odd modes, symlinks (dangling
/// too), hardlink groups, a fifo, names too long for ustar, a name that is not UTF-8.
fn rich_tree(root: &Path) {
    write(&root.join("empty"), b"", 0o644);
    for n in [1usize, 511, 512, 513, 100_000] {
        let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        write(&root.join(format!("sizes/f{n}")), &data, 0o644);
    }
    write(&root.join("bin/tool"), b"#!/bin/sh\necho hi\n", 0o4755);
    write(&root.join("secret"), b"s", 0o600);
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::fs::create_dir_all(root.join("private")).unwrap();
    std::fs::set_permissions(root.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink("../sizes/f1", root.join("bin/rel")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("bin/abs")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join("bin/dangling")).unwrap();
    write(&root.join("links/a"), b"shared", 0o644);
    std::fs::hard_link(root.join("links/a"), root.join("links/b")).unwrap();
    std::fs::hard_link(root.join("links/a"), root.join("sizes/z-link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    let long = root.join("d".repeat(120)).join("f".repeat(200));
    write(&long, b"long", 0o644);
    std::os::unix::fs::symlink("x".repeat(150), root.join("long-target")).unwrap();
    let bad = std::ffi::OsStr::from_bytes(b"caf\xe9");
    write(&root.join(bad), b"latin-1", 0o644);
}

#[test]
fn the_image_holds_exactly_the_source_tree() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    rich_tree(&src);
    let img = d.path().join("img.tar");
    ok(strata_in(
        d.path(),
        &["-q", "build", "--layer", "src:/", "-o", "img.tar"],
        &[],
    ));
    let want = canon(&owned_by_root(read_dir_tree(&src)));
    assert_canon(&want, &flat_canon(&img));
}

/// The raw layer tar: sorted names, parents first, one mtime, no owner names, hardlinks to the
/// first path of their group.
#[test]
fn layer_tars_are_canonical() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    rich_tree(&src);
    let bytes = build_bytes(d.path(), &["--layer", "src:/opt/app"]);
    let mut outer = tar::Archive::new(&bytes[..]);
    let mut layer = None;
    for e in outer.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().ends_with("layer.tar") {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            layer = Some(v);
        }
    }
    let layer = layer.expect("a layer.tar");
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(&layer[..]);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        assert_eq!(h.mtime().unwrap(), 1, "{:?}", e.path());
        assert_eq!(h.uid().unwrap(), 0);
        assert_eq!(h.username_bytes().unwrap_or_default(), b"");
        let name = e.path_bytes().into_owned();
        if h.entry_type().is_hard_link() {
            let target = e.link_name_bytes().unwrap().into_owned();
            assert_eq!(
                target, b"opt/app/links/a",
                "hardlinks point at the first path"
            );
        }
        if let Some(pax) = e.pax_extensions().unwrap() {
            for r in pax {
                let k = r.unwrap().key().unwrap().to_string();
                assert!(!k.contains("time"), "no time records: {k}");
            }
        }
        names.push(name);
    }
    assert_eq!(&names[..3], &[&b"opt/"[..], b"opt/app/", b"opt/app/bin/"]);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries sorted byte-wise, as written");
    for (i, n) in names.iter().enumerate() {
        let n = n.strip_suffix(b"/").unwrap_or(n);
        if let Some(cut) = n.iter().rposition(|&b| b == b'/') {
            let parent = n[..=cut].to_vec();
            assert!(names[..i].contains(&parent), "parent of {n:?} first");
        }
    }
}

#[test]
fn destinations_parents_and_several_sources() {
    let d = tempfile::tempdir().unwrap();
    write(&d.path().join("a/x"), b"x", 0o644);
    write(&d.path().join("b/y"), b"y", 0o644);
    write(&d.path().join("c/z"), b"z", 0o644);
    write(&d.path().join("one"), b"single file", 0o755);
    std::fs::set_permissions(d.path().join("a"), std::fs::Permissions::from_mode(0o750)).unwrap();
    ok(strata_in(
        d.path(),
        &[
            "-q",
            "build",
            "--layer",
            "a:/srv/app,b:/srv/app/data",
            "--layer",
            "c:/srv/app/c,one:/usr/bin/one",
            "-o",
            "img.tar",
        ],
        &[],
    ));
    let got = flat_canon(&d.path().join("img.tar"));
    let p = |k: &str| {
        got.paths
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("no {k}: {got:?}"))
    };
    assert_eq!(p("srv"), "dir mode=755 uid=0 gid=0");
    // A destination gets its source's own attributes, in its layer and as a parent later.
    assert_eq!(p("srv/app"), "dir mode=750 uid=0 gid=0");
    assert!(p("srv/app/x").starts_with("file "));
    assert!(p("srv/app/data/y").starts_with("file "));
    assert!(p("srv/app/c/z").starts_with("file "));
    assert!(p("usr/bin/one").ends_with("mode=755 uid=0 gid=0"));
    assert_eq!(got.paths.len(), 10, "{got:?}");
}

#[test]
fn owners_are_root_unless_asked() {
    let d = tempfile::tempdir().unwrap();
    write(&d.path().join("t/f"), b"f", 0o644);
    rustix::fs::chown(
        d.path().join("t/f"),
        // Beyond ustar's octal field: written as a PAX record too.
        Some(rustix::process::Uid::from_raw(5_000_000)),
        Some(rustix::process::Gid::from_raw(5678)),
    )
    .ok();
    let owned =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(d.path().join("t/f")).unwrap());
    ok(strata_in(
        d.path(),
        &["-q", "build", "--layer", "t:/t", "-o", "a.tar"],
        &[],
    ));
    ok(strata_in(
        d.path(),
        &["-q", "build", "--owner", "--layer", "t:/t", "-o", "b.tar"],
        &[],
    ));
    assert!(flat_canon(&d.path().join("a.tar")).paths["t/f"].ends_with("uid=0 gid=0"));
    let kept = &flat_canon(&d.path().join("b.tar")).paths["t/f"];
    assert!(kept.contains(&format!("uid={owned}")), "{kept}");
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let d = tempfile::tempdir().unwrap();
    // Two copies of a tree in two places, built from two working directories.
    for w in ["one", "two"] {
        rich_tree(&d.path().join(w).join("tree"));
    }
    let args = [
        "--layer",
        "tree:/app",
        "--layer",
        "tree/sizes:/data",
        "--cmd",
        "/app/bin/tool",
        "--env",
        "A=1",
    ];
    let a = build_bytes(&d.path().join("one"), &args);
    let b = build_bytes(&d.path().join("one"), &args);
    assert!(a == b, "two runs differ");
    let c = build_bytes(&d.path().join("two"), &args);
    assert!(a == c, "runs from two directories differ");
    // Every file touched to another time: same bytes.
    let t2 = d.path().join("two/tree");
    let mut stack = vec![t2.clone()];
    let ts = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 5,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_234_567_890,
            tv_nsec: 7,
        },
    };
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            rustix::fs::utimensat(
                rustix::fs::CWD,
                e.path(),
                &ts,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
        }
    }
    let e = build_bytes(&d.path().join("two"), &args);
    assert!(a == e, "touching the sources changed the image");
    // The same tree under two different names, built as `.`: history names what was typed.
    std::fs::rename(d.path().join("two/tree"), d.path().join("two/checkout")).unwrap();
    let dot = ["--layer", ".:/app"];
    let f = build_bytes(&d.path().join("one/tree"), &dot);
    let g = build_bytes(&d.path().join("two/checkout"), &dot);
    assert!(f == g, "the source directory's name leaked into the image");
    // To a pipe (two passes), the same bytes as to a file (one pass, patched).
    let piped = ok(strata_in(
        &d.path().join("one"),
        &[&["-q", "build"][..], &args, &["-o", "-"]].concat(),
        &[],
    ));
    assert!(piped.stdout == a, "pipe output differs from file output");
    // SOURCE_DATE_EPOCH moves every time, and only that.
    let o = ok(strata_in(
        &d.path().join("one"),
        &[&["-q", "build"][..], &args, &["-o", "-"]].concat(),
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    ));
    assert!(o.stdout != a);
    assert!(String::from_utf8_lossy(&o.stdout).contains("2023-11-14T22:13:20Z"));
}

#[test]
fn oci_outputs_are_reproducible_in_every_compression() {
    let d = tempfile::tempdir().unwrap();
    rich_tree(&d.path().join("tree"));
    for comp in ["gzip", "zstd", "none"] {
        let a = build_bytes(
            d.path(),
            &[
                "--layer",
                "tree:/",
                "--format",
                "oci-archive",
                "--compress",
                comp,
            ],
        );
        let b = build_bytes(
            d.path(),
            &[
                "--layer",
                "tree:/",
                "--format",
                "oci-archive",
                "--compress",
                comp,
            ],
        );
        assert!(a == b, "{comp}: two runs differ");
        let p = d.path().join(format!("img-{comp}.tar"));
        std::fs::write(&p, &a).unwrap();
        let want = canon(&owned_by_root(read_dir_tree(&d.path().join("tree"))));
        assert_canon(&want, &flat_canon(&p));
    }
    // The directory form holds the same blobs.
    for name in ["l1", "l2"] {
        ok(strata_in(
            d.path(),
            &[
                "-q",
                "build",
                "--layer",
                "tree:/",
                "--format",
                "oci",
                "--compress",
                "zstd",
                "-o",
                name,
            ],
            &[],
        ));
    }
    let list = |n: &str| {
        let mut v: Vec<_> = std::fs::read_dir(d.path().join(n).join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    assert_eq!(list("l1"), list("l2"));
    assert_eq!(
        std::fs::read(d.path().join("l1/index.json")).unwrap(),
        std::fs::read(d.path().join("l2/index.json")).unwrap()
    );
}

#[test]
fn layers_from_json_is_the_same_as_the_flags() {
    let d = tempfile::tempdir().unwrap();
    write(&d.path().join("gen/a/x"), b"x", 0o644);
    write(&d.path().join("gen/b/y"), b"y", 0o644);
    std::fs::write(
        d.path().join("gen/layers.json"),
        r#"[[{"src": "a", "dest": "/a"}, {"src": "b", "dest": "/b"}], [{"src": "b", "dest": "/c"}]]"#,
    )
    .unwrap();
    let by_flags = build_bytes(
        &d.path().join("gen"),
        &["--layer", "a:/a,b:/b", "--layer", "b:/c"],
    );
    // From another directory: the JSON's relative sources are the file's.
    let by_json = build_bytes(d.path(), &["--layers-from", "gen/layers.json"]);
    assert!(by_flags == by_json);
}

#[test]
fn from_an_image_keeps_its_layers_and_extends_its_config() {
    let d = tempfile::tempdir().unwrap();
    let base_layers = vec![
        common::LayerBuilder::new()
            .dir("etc")
            .file("etc/base", "base")
            .build(),
        common::LayerBuilder::new().file("etc/second", "2").build(),
    ];
    let base = common::write_docker_archive(d.path(), &base_layers);
    write(&d.path().join("app/run"), b"run", 0o755);
    let img = d.path().join("out.tar");
    ok(strata_in(
        d.path(),
        &[
            "-q",
            "build",
            "--from",
            base.to_str().unwrap(),
            "--layer",
            "app:/app",
            "--env",
            "X=1",
            "--label",
            "k=v",
            "--user",
            "1000:1000",
            "--workdir",
            "/app",
            "--entrypoint",
            r#"["/app/run"]"#,
            "--tag",
            "built:1",
            "-o",
            "out.tar",
        ],
        &[],
    ));
    let show = |p: &Path| -> serde_json::Value {
        let o = ok(strata_in(
            d.path(),
            &["inspect", "--json", p.to_str().unwrap()],
            &[],
        ));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (before, after) = (show(&base), show(&img));
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["diff_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (b, a) = (ids(&before), ids(&after));
    assert_eq!(a.len(), 3);
    assert_eq!(&a[..2], &b[..], "base layers keep their digests");
    let got = flat_canon(&img);
    for p in ["etc/base", "etc/second", "app/run"] {
        assert!(got.paths.contains_key(p), "{p}");
    }
    assert_eq!(
        after["env"],
        serde_json::json!(["PATH=/bin", "X=1"]),
        "the base's env is kept"
    );
    assert_eq!(after["labels"], serde_json::json!({"k": "v"}));
    assert_eq!(after["user"], "1000:1000");
    assert_eq!(after["working_dir"], "/app");
    assert_eq!(after["entrypoint"], serde_json::json!(["/app/run"]));
    assert_eq!(
        after["layers"][2]["created_by"],
        "strata build --layer app:/app"
    );
    assert!(after["tags"].to_string().contains("built:1"), "{after}");
}

#[test]
fn bad_builds_fail_in_one_line_and_write_nothing() {
    let d = tempfile::tempdir().unwrap();
    write(&d.path().join("t/f"), b"f", 0o644);
    write(&d.path().join("u/f/inner"), b"i", 0o644);
    write(&d.path().join("w/.wh.gone"), b"", 0o644);
    let cases: &[(&[&str], &str)] = &[
        (&["--layer", "missing:/x"], "missing"),
        (&["--layer", "t:relative"], "not absolute"),
        (&["--layer", "t:/a/../b"], ".."),
        (&["--layer", "t/f:/"], "image root"),
        (&["--layer", "t:/x,t:/x"], "given twice"),
        (&["--layer", "t/f:/app", "--layer", "t:/app"], "type"),
        (&["--layer", "t:/x", "--layer", "u:/x"], "type"),
        (&["--layer", "t:/x", "--env", "NOEQUALS"], "KEY=VALUE"),
        (&["--layer", "w:/w"], "deletions"),
        (&["--layer", "t:/.wh.etc/x"], "deletions"),
        (&["--layer", "t:/x/.wh..wh..opq"], "deletions"),
        (&["--layer", "t:/x", "--mtime", "@-5"], "before 1970"),
        (
            &["--layer", "t:/x", "--created", "2024-13-01T00:00:00Z"],
            "RFC 3339",
        ),
        (
            &[
                "--layer",
                "t:/x",
                "--format",
                "docker-archive",
                "--compress",
                "gzip",
            ],
            "uncompressed",
        ),
        (&["--layer", "t:/x", "--mtime", "yesterday"], "RFC 3339"),
        (
            &["--layer", "t:/x", "--layers-from", "nope.json"],
            "nope.json",
        ),
        (&["--layer", "t:/x", "--from", "nope.tar"], "nope.tar"),
        (&[], "nothing to build"),
        // /proc files say 0 bytes, then have some: caught while reading.
        (
            &["--layer", "t:/x", "--layer", "/proc/self/stat:/stat"],
            "changed during the build",
        ),
    ];
    // A compression no layer media type names is not offered at all (clap says so, exit 2).
    let o = strata_in(
        d.path(),
        &[
            "build",
            "--layer",
            "t:/x",
            "--format",
            "oci-archive",
            "--compress",
            "xz",
            "-o",
            "-",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("[possible values: none, gzip, zstd]"));
    for (args, want) in cases {
        for out in ["out.tar", "-"] {
            let full = [&["build"][..], args, &["-o", out]].concat();
            let o = strata_in(d.path(), &full, &[]);
            let stdout_len = o.stdout.len();
            let e = err(o);
            assert!(e.contains(want), "{args:?}: {e}");
            assert_eq!(
                stdout_len, 0,
                "{args:?}: nothing on stdout before the error"
            );
            let left: Vec<_> = std::fs::read_dir(d.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !["t", "u", "w"].contains(&n.as_str()))
                .collect();
            assert!(left.is_empty(), "{args:?}: left behind {left:?}");
        }
    }
    // An existing output is kept unless --force.
    std::fs::write(d.path().join("keep.tar"), b"precious").unwrap();
    let e = err(strata_in(
        d.path(),
        &["build", "--layer", "t:/x", "-o", "keep.tar"],
        &[],
    ));
    assert!(e.contains("--force"), "{e}");
    assert_eq!(
        std::fs::read(d.path().join("keep.tar")).unwrap(),
        b"precious"
    );
    ok(strata_in(
        d.path(),
        &[
            "-q", "build", "--layer", "t:/x", "-o", "keep.tar", "--force",
        ],
        &[],
    ));
}

#[test]
fn sockets_are_skipped_with_a_warning() {
    let d = tempfile::tempdir().unwrap();
    write(&d.path().join("t/f"), b"f", 0o644);
    let _sock = std::os::unix::net::UnixListener::bind(d.path().join("t/sock")).unwrap();
    let o = ok(strata_in(
        d.path(),
        &["build", "--layer", "t:/t", "-o", "img.tar"],
        &[],
    ));
    assert!(String::from_utf8_lossy(&o.stderr).contains("socket"));
    let got = flat_canon(&d.path().join("img.tar"));
    assert!(got.paths.contains_key("t/f") && !got.paths.contains_key("t/sock"));
}

/// A member produced differently in the two passes of a pipe is refused, not streamed with a
/// header that lies.
#[test]
fn a_change_between_passes_is_caught() {
    use strata::sink::members::{Measure, Members, TarMembers};
    let name = |_: &strata::sink::members::Digested| "blob".to_string();
    let mut m = Measure::default();
    m.add_produced(&name, &mut |w| {
        w.write_all(b"first").map_err(|e| strata::Error::io("w", e))
    })
    .unwrap();
    let mut out = Vec::new();
    let mut replay = TarMembers::replay(&mut out, m);
    let e = replay
        .add_produced(&name, &mut |w| {
            w.write_all(b"other").map_err(|e| strata::Error::io("w", e))
        })
        .unwrap_err();
    assert!(
        e.to_string().contains("changed between the two passes"),
        "{e}"
    );
}

/// Random trees: the image holds exactly the tree, and building twice gives the same bytes.
#[derive(Clone, Debug)]
enum Node {
    File(Vec<u8>, u32),
    Dir(u32),
    Symlink(String),
    Hardlink(usize),
    Fifo,
}

const NAMES: &[&str] = &[
    "a", "b", "a/c", "a/d", "b/e", "a/c/f", "a-b", "a/c/f/g", "é", "b/e/h",
];

fn node() -> impl Strategy<Value = Node> {
    prop_oneof![
        (
            proptest::collection::vec(any::<u8>(), 0..1500),
            prop::sample::select(vec![0o644u32, 0o600, 0o755, 0o4755])
        )
            .prop_map(|(d, m)| Node::File(d, m)),
        prop::sample::select(vec![0o755u32, 0o700, 0o1777, 0o2755]).prop_map(Node::Dir),
        prop::sample::select(vec!["a", "../x", "/abs/path", "b/e"])
            .prop_map(|s| Node::Symlink(s.to_string())),
        (0usize..NAMES.len()).prop_map(Node::Hardlink),
        Just(Node::Fifo),
    ]
}

fn make(root: &Path, nodes: &[(usize, Node)]) -> PathBuf {
    std::fs::create_dir_all(root).unwrap();
    let mut dir_modes = Vec::new();
    for (i, n) in nodes {
        let p = root.join(NAMES[*i]);
        if std::fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        // Parents must be directories we made.
        let parent_ok = p.ancestors().skip(1).take_while(|a| *a != root).all(|a| {
            std::fs::symlink_metadata(a)
                .map(|m| m.is_dir())
                .unwrap_or_else(|_| std::fs::create_dir(a).is_ok())
        });
        if !parent_ok {
            continue;
        }
        match n {
            Node::File(d, m) => write(&p, d, *m),
            Node::Dir(m) => {
                std::fs::create_dir(&p).unwrap();
                dir_modes.push((p, *m));
            }
            Node::Symlink(t) => std::os::unix::fs::symlink(t, &p).unwrap(),
            Node::Hardlink(j) => {
                let t = root.join(NAMES[*j]);
                if std::fs::symlink_metadata(&t)
                    .map(|m| m.is_file())
                    .unwrap_or(false)
                {
                    std::fs::hard_link(&t, &p).unwrap();
                }
            }
            Node::Fifo => {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &p,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o644),
                    0,
                )
                .unwrap();
            }
        }
    }
    for (p, m) in dir_modes {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    root.to_path_buf()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_trees_round_trip(nodes in proptest::collection::vec((0usize..NAMES.len(), node()), 0..14)) {
        let d = tempfile::tempdir().unwrap();
        let src = make(&d.path().join("src"), &nodes);
        let args = ["--layer", "src:/"];
        let a = build_bytes(d.path(), &args);
        let b = build_bytes(d.path(), &args);
        prop_assert!(a == b, "two builds differ");
        let img = d.path().join("img.tar");
        std::fs::write(&img, &a).unwrap();
        let want = owned_by_root(read_dir_tree(&src));
        let got = flat_canon(&img);
        if let Some(msg) = diff_report(&canon(&want), &got, "source", "image") {
            prop_assert!(false, "{}", msg);
        }
    }
}

/// `--from`: the base's directories keep their attributes when new layers re-emit them as
/// parents or write into them, and a directory never goes where the base has a symlink.
#[test]
fn from_respects_the_base_tree() {
    let d = tempfile::tempdir().unwrap();
    let base_layers = vec![
        common::LayerBuilder::new()
            .dir_mode("tmp", 0o1777)
            .dir_mode("etc", 0o755)
            .dir("usr")
            .dir("usr/lib")
            .symlink("lib", "usr/lib")
            .build(),
    ];
    let base = common::write_docker_archive(d.path(), &base_layers);
    write(&d.path().join("top/foo"), b"foo", 0o644);
    std::fs::set_permissions(d.path().join("top"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let b = base.to_str().unwrap();
    ok(strata_in(
        d.path(),
        &[
            "-q",
            "build",
            "--from",
            b,
            "--layer",
            "top:/tmp/sub",
            "--layer",
            "top:/etc",
            "-o",
            "out.tar",
        ],
        &[],
    ));
    let got = flat_canon(&d.path().join("out.tar"));
    assert_eq!(
        got.paths["tmp"], "dir mode=1777 uid=0 gid=0",
        "a parent keeps the base's mode"
    );
    assert_eq!(
        got.paths["etc"], "dir mode=755 uid=0 gid=0",
        "an existing DEST keeps its mode"
    );
    assert_eq!(
        got.paths["tmp/sub"], "dir mode=700 uid=0 gid=0",
        "a new DEST gets its source's"
    );
    assert!(got.paths.contains_key("etc/foo"));
    let e = err(strata_in(
        d.path(),
        &[
            "build",
            "--from",
            b,
            "--layer",
            "top:/lib/extra",
            "-o",
            "bad.tar",
        ],
        &[],
    ));
    assert!(e.contains("/lib") && e.contains("symlink"), "{e}");
    assert!(!d.path().join("bad.tar").exists());
}

#[test]
fn times_flags_and_shell_form() {
    let d = tempfile::tempdir().unwrap();
    write(&d.path().join("t/f"), b"f", 0o644);
    let o = ok(strata_in(
        d.path(),
        &[
            "-q",
            "build",
            "--layer",
            "t:/t",
            "--mtime",
            "2001-02-03T04:05:06Z",
            "--created",
            "2020-01-01T00:00:00Z",
            "--cmd",
            "echo 'a b'",
            "-o",
            "-",
        ],
        &[],
    ));
    let p = d.path().join("img.tar");
    std::fs::write(&p, &o.stdout).unwrap();
    let o = ok(strata_in(d.path(), &["inspect", "--json", "img.tar"], &[]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["created"], "2020-01-01T00:00:00Z");
    assert_eq!(v["cmd"], serde_json::json!(["/bin/sh", "-c", "echo 'a b'"]));
    let flat = common::flatten_ref(p.to_str().unwrap()).unwrap();
    let mut ar = tar::Archive::new(&flat[..]);
    for e in ar.entries().unwrap() {
        assert_eq!(e.unwrap().header().mtime().unwrap(), 981_173_106);
    }
}

/// Extended attributes only with --xattrs, as SCHILY.xattr PAX records.
#[test]
fn xattrs_when_asked() {
    let d = tempfile::tempdir().unwrap();
    write(&d.path().join("t/f"), b"f", 0o644);
    rustix::fs::setxattr(
        d.path().join("t/f"),
        "user.strata.test",
        b"value",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("user xattrs on the temp dir's filesystem");
    let records = |extra: &[&str]| -> Vec<String> {
        let o = ok(strata_in(
            d.path(),
            &[&["-q", "build", "--layer", "t:/t"][..], extra, &["-o", "-"]].concat(),
            &[],
        ));
        let p = d.path().join("x.tar");
        std::fs::write(&p, &o.stdout).unwrap();
        let flat = common::flatten_ref(p.to_str().unwrap()).unwrap();
        let mut keys = Vec::new();
        let mut ar = tar::Archive::new(&flat[..]);
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            if let Some(pax) = e.pax_extensions().unwrap() {
                for r in pax {
                    let r = r.unwrap();
                    keys.push(format!(
                        "{}={}",
                        r.key().unwrap(),
                        String::from_utf8_lossy(r.value_bytes())
                    ));
                }
            }
        }
        keys
    };
    assert!(records(&[]).is_empty());
    assert_eq!(
        records(&["--xattrs"]),
        ["SCHILY.xattr.user.strata.test=value"]
    );
}

/// Device nodes (only root can make them; CI runs as root).
#[test]
fn device_nodes_keep_their_numbers() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: device nodes cannot be made here");
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("t")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        d.path().join("t/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let o = ok(strata_in(
        d.path(),
        &["-q", "build", "--layer", "t:/dev", "-o", "-"],
        &[],
    ));
    let p = d.path().join("x.tar");
    std::fs::write(&p, &o.stdout).unwrap();
    let flat = common::flatten_ref(p.to_str().unwrap()).unwrap();
    let mut ar = tar::Archive::new(&flat[..]);
    let mut seen = false;
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        if e.path_bytes().as_ref() == b"dev/null" {
            let h = e.header();
            assert!(h.entry_type().is_character_special());
            assert_eq!(
                (h.device_major().unwrap(), h.device_minor().unwrap()),
                (Some(1), Some(3))
            );
            seen = true;
        }
    }
    assert!(seen);
}
