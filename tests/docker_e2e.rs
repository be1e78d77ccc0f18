//! End-to-end against the real Docker engine: images built with `docker build`, saved with
//! `docker save`, flattened by strata, compared entry by entry with `docker export` of a
//! container of the same image (path, type, mode, owner, content hash, link target, hardlink
//! groups). Also through skopeo's OCI layout, and against `umoci unpack`.
//!
//! Needs a Docker engine (`DOCKER_HOST`, or the one `.ci/start-dockerd` starts). Without one
//! the tests are skipped locally, but fail when `CI` is set: CI must run them.

mod common;

use common::model::{Canon, Tree, canon, read_flat};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

const DEFAULT_HOST: &str = "unix:///tmp/strata-docker/docker.sock";

/// This run's image names start `strata-e2e-<run>-`: two test runs on one engine never see
/// each other's images, and the images are removed when the run ends.
use common::docker::RUN;

fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_HOST.to_string())
}

/// `Some(())` when an engine answers; `None` (skip) locally; panic under CI.
fn engine() -> Option<()> {
    static UP: OnceLock<bool> = OnceLock::new();
    let up = *UP.get_or_init(|| {
        Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .env("DOCKER_HOST", docker_host())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    if up {
        return Some(());
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CI is set but no Docker engine answers at {}: run .ci/start-dockerd",
            docker_host()
        );
    }
    eprintln!(
        "SKIPPED: no Docker engine at {} (run .ci/start-dockerd)",
        docker_host()
    );
    None
}

fn docker(args: &[&str]) -> Vec<u8> {
    let o = Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", docker_host())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

fn docker_stdin(args: &[&str], input: &[u8]) {
    let mut c = Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", docker_host())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn busybox() -> PathBuf {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("busybox not found: apt-get install busybox-static");
}

/// A tiny base image: busybox and its applets, /etc, /tmp. Imported once per test run.
fn base_image() -> String {
    static BASE: OnceLock<()> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut b = tar::Builder::new(Vec::new());
        let dir = |b: &mut tar::Builder<Vec<u8>>, p: &str, mode: u32| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(mode);
            h.set_size(0);
            h.set_mtime(1_600_000_000);
            h.set_uid(0);
            h.set_gid(0);
            b.append_data(&mut h, p, &[][..]).unwrap();
        };
        dir(&mut b, "bin/", 0o755);
        dir(&mut b, "etc/", 0o755);
        dir(&mut b, "tmp/", 0o1777);
        let bb = std::fs::read(busybox()).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o755);
        h.set_size(bb.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, "bin/busybox", &bb[..]).unwrap();
        for app in [
            "sh", "ls", "rm", "mkdir", "ln", "cat", "echo", "chmod", "chown", "cp", "mv", "touch",
            "mkfifo", "true",
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            h.set_mtime(1_600_000_000);
            h.set_uid(0);
            h.set_gid(0);
            b.append_link(&mut h, format!("bin/{app}"), "busybox")
                .unwrap();
        }
        let passwd = b"root:x:0:0:root:/root:/bin/sh\n";
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(passwd.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, "etc/passwd", &passwd[..]).unwrap();
        docker_stdin(
            &["import", "-", &format!("{RUN}-base:1")],
            &b.into_inner().unwrap(),
        );
    });
    format!("{RUN}-base:1")
}

/// Build an image from Dockerfile lines (after FROM), save it, return the archive path.
fn build(dir: &Path, name: &str, steps: &str) -> PathBuf {
    let ctx = dir.join(format!("ctx-{name}"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}\n{steps}\n", base_image()),
    )
    .unwrap();
    let tag = format!("{RUN}-{name}:1");
    docker(&[
        "build",
        "-q",
        "--network=none",
        "-t",
        &tag,
        &ctx.display().to_string(),
    ]);
    let out = dir.join(format!("{name}.tar"));
    docker(&["save", "-o", &out.display().to_string(), &tag]);
    out
}

/// `docker export` of a container of the image, minus what the runtime adds.
fn exported(tag: &str) -> Canon {
    let id = String::from_utf8(docker(&["create", tag, "/bin/true"]))
        .unwrap()
        .trim()
        .to_string();
    let tar = docker(&["export", &id]);
    docker(&["rm", &id]);
    let mut t = read_flat(&tar).unwrap();
    strip_runtime(&mut t);
    canon(&t)
}

/// Files the container runtime adds (and mount points it creates).
fn strip_runtime(t: &mut Tree) {
    let runtime = [
        ".dockerenv",
        "etc/hosts",
        "etc/hostname",
        "etc/resolv.conf",
        "etc/mtab",
        "dev",
        "proc",
        "sys",
    ];
    t.nodes.retain(|p, _| {
        !runtime
            .iter()
            .any(|r| p == r || p.starts_with(&format!("{r}/")))
    });
}

fn strata_flatten(reference: &str) -> Canon {
    strata_flatten_args(&[reference])
}

/// `strata flatten -q ARGS… -o -`, as a tree without what the runtime adds.
fn strata_flatten_args(args: &[&str]) -> Canon {
    let reference = args.last().copied().unwrap_or_default();
    let out = Command::new(common::strata_bin())
        .args(["flatten", "-q"])
        .args(args)
        .args(["-o", "-"])
        .env("DOCKER_HOST", docker_host())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "strata flatten {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut t = read_flat(&out.stdout)
        .unwrap_or_else(|e| panic!("strata output of {reference} is invalid: {e}"));
    strip_runtime(&mut t);
    canon(&t)
}

fn assert_canon_eq(what: &str, want: &Canon, got: &Canon) {
    if let Some(msg) = common::model::diff_report(want, got, "docker", "strata") {
        panic!("{what}: strata differs from docker export:\n{msg}");
    }
}

/// The Dockerfiles: each RUN step is a layer doing one kind of change.
const IMAGES: &[(&str, &str)] = &[
    (
        "deletes",
        "RUN mkdir -p /d/sub /d/other && echo a > /d/sub/f && echo b > /d/other/g && echo x > /keep && echo gone > /gone\n\
         RUN rm /gone && rm -rf /d/sub && chmod 700 /d && chmod 4755 /keep && chown 12:34 /keep\n\
         ENV FOO=bar\n\
         RUN echo overwrite > /keep && touch /d/other/new",
    ),
    (
        "replace",
        "RUN mkdir -p /r/dir/deep && echo 1 > /r/dir/a && echo 2 > /r/dir/deep/b && echo f > /r/file && ln -s /r/file /r/link && ln -s dir /r/dirlink\n\
         RUN rm -rf /r/dir && echo now-a-file > /r/dir && rm /r/file && mkdir /r/file && echo in > /r/file/x && rm /r/link && mkdir /r/link && rm /r/dirlink && echo plain > /r/dirlink",
    ),
    (
        "recreate",
        "RUN mkdir -p /x/y && echo old > /x/old && echo deep > /x/y/z\n\
         RUN rm -rf /x && mkdir /x && echo new > /x/new\n\
         RUN rm -rf /x && mkdir -p /x/y && echo newer > /x/y/z",
    ),
    (
        "hardlinks",
        "RUN echo v1 > /h1 && ln /h1 /h2 && ln /h1 /h3 && echo t > /t && ln /t /t2 && mkdir /hd && echo in > /hd/f && ln /hd/f /hf\n\
         RUN rm /h1 && echo v2 > /h1 && rm /t && rm -rf /hd\n\
         RUN ln /h2 /h4 && echo v3 > /h5 && ln /h5 /h6 && rm /h5",
    ),
    (
        "special",
        "RUN mkfifo /fifo && ln -s /does/not/exist /dangling && mkdir -m 1777 /sticky && touch /my.wh.file && mkdir -p /a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb && echo long > /a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb/file-with-a-long-name-ccccccccccccccccccccccccccccccccccccccccccccc\n\
         WORKDIR /work\n\
         RUN rm /fifo && echo data > /fifo && rm -rf /a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    ),
];

fn workdir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn check_image(name: &str) {
    let Some(()) = engine() else { return };
    let steps = IMAGES.iter().find(|(n, _)| *n == name).unwrap().1;
    let archive = build(workdir(), name, steps);
    let want = exported(&format!("{RUN}-{name}:1"));
    assert!(want.paths.len() > 10, "docker export looks empty");
    let got = strata_flatten(&format!("docker-archive:{}", archive.display()));
    assert_canon_eq(&format!("{name} (docker-archive)"), &want, &got);
    // Straight from the engine, no `docker save` file in between.
    let got = strata_flatten_args(&["--no-cache", &format!("docker-daemon:{RUN}-{name}:1")]);
    assert_canon_eq(&format!("{name} (docker-daemon)"), &want, &got);
    // The same image as an OCI layout (skopeo gzip-compresses the layers).
    if which("skopeo") {
        let oci = workdir().join(format!("{name}-oci"));
        skopeo_to_oci(&archive, &oci, name);
        let got = strata_flatten(&format!("oci:{}:{name}", oci.display()));
        assert_canon_eq(&format!("{name} (oci via skopeo)"), &want, &got);
    } else if std::env::var_os("CI").is_some() {
        panic!("skopeo is missing under CI");
    }
    check_squash(name, &archive, &want);
    // Extracted onto disk: the same tree as docker export.
    let dir = workdir().join(format!("{name}-extracted"));
    strata(&[
        "extract",
        "-q",
        &archive.display().to_string(),
        &dir.display().to_string(),
    ]);
    let mut t = common::model::read_dir_tree(&dir);
    strip_runtime(&mut t);
    assert_canon_eq(&format!("{name} extracted"), &want, &canon(&t));
}

fn inspect_json(tag: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&docker(&["inspect", tag])).unwrap();
    v[0].clone()
}

fn strata(args: &[&str]) {
    let o = Command::new(common::strata_bin())
        .args(args)
        .env("DOCKER_HOST", docker_host())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "strata {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Squash the image every way, load it into Docker, and compare with the original.
fn check_squash(name: &str, archive: &Path, want: &Canon) {
    let orig = inspect_json(&format!("{RUN}-{name}:1"));
    let src = format!("docker-archive:{}", archive.display());
    let same_config = |tag: &str| {
        let v = inspect_json(tag);
        for k in ["Cmd", "Entrypoint", "Env", "WorkingDir", "User"] {
            assert_eq!(v["Config"][k], orig["Config"][k], "{tag}: Config.{k}");
        }
        v
    };
    // All layers into one, to a file.
    let all = workdir().join(format!("{name}-squashed.tar"));
    let tag_all = format!("{RUN}-{name}:squashed");
    strata(&[
        "squash",
        "-q",
        &src,
        "--tag",
        &tag_all,
        "-o",
        &all.display().to_string(),
    ]);
    docker(&["load", "-q", "-i", &all.display().to_string()]);
    let v = same_config(&tag_all);
    assert_eq!(
        v["RootFS"]["Layers"].as_array().unwrap().len(),
        1,
        "{tag_all}: one layer"
    );
    assert_canon_eq(&format!("{name} squashed"), want, &exported(&tag_all));
    // The same squash through a pipe (its layer's size planned from the headers, its content
    // merged once): Docker loads the same layer.
    let tag_piped = format!("{RUN}-{name}:piped");
    strata_into_docker_load(&["squash", "-q", &src, "--tag", &tag_piped, "-o", "-"]);
    assert_eq!(
        same_config(&tag_piped)["RootFS"]["Layers"],
        v["RootFS"]["Layers"],
        "{tag_piped}: the piped squash's layer is the file's"
    );
    // skopeo reads the piped order too (the layer before the config and manifest.json), and
    // finds the same layer: the bytes that went through a real pipe, kept in a file.
    if which("skopeo") {
        let piped = workdir().join(format!("{name}-piped.tar"));
        let mut child = Command::new(common::strata_bin())
            .args(["squash", "-q", &src, "--tag", &tag_piped, "-o", "-"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::fs::File::create(&piped).unwrap();
        std::io::copy(&mut child.stdout.take().unwrap(), &mut out).unwrap();
        assert!(child.wait().unwrap().success(), "strata squash -o -");
        let seen: serde_json::Value = serde_json::from_slice(&tool(
            "skopeo",
            &["inspect", &format!("docker-archive:{}", piped.display())],
        ))
        .unwrap();
        assert_eq!(
            seen["Layers"], v["RootFS"]["Layers"],
            "skopeo inspect of the piped squash"
        );
        let copied = workdir().join(format!("{name}-piped-oci"));
        skopeo_to_oci(&piped, &copied, "p");
    }
    // The top layers only, through a pipe into `docker load`.
    let tag_from = format!("{RUN}-{name}:from1");
    strata_into_docker_load(&[
        "squash", "-q", &src, "--from", "1", "--tag", &tag_from, "-o", "-",
    ]);
    let v = same_config(&tag_from);
    let layers = v["RootFS"]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{tag_from}: kept base + 1");
    assert_eq!(
        layers[0], orig["RootFS"]["Layers"][0],
        "the kept base layer keeps its digest"
    );
    assert_canon_eq(
        &format!("{name} squashed --from 1"),
        want,
        &exported(&tag_from),
    );
    // OCI output: skopeo reads it, umoci unpacks the same tree.
    let oci = workdir().join(format!("{name}-squashed-oci"));
    strata(&[
        "squash",
        "-q",
        &src,
        "--format",
        "oci",
        "--tag",
        "sq",
        "-o",
        &oci.display().to_string(),
    ]);
    if which("skopeo") {
        tool("skopeo", &["inspect", &format!("oci:{}:sq", oci.display())]);
    }
    if which("umoci") {
        let bundle = workdir().join(format!("{name}-umoci"));
        tool(
            "umoci",
            &[
                "unpack",
                "--image",
                &format!("{}:sq", oci.display()),
                &bundle.display().to_string(),
            ],
        );
        let mut t = common::model::read_dir_tree(&bundle.join("rootfs"));
        strip_runtime(&mut t);
        assert_canon_eq(
            &format!("{name} squashed oci, umoci unpack"),
            want,
            &canon(&t),
        );
    } else if std::env::var_os("CI").is_some() {
        panic!("umoci is missing under CI");
    }
}

fn which(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn docker_load_a_layer_repeated_then_read_from_the_engine() {
    // Two layers with one diff_id: `docker save` (before Docker 25) writes the second as a
    // symlink to the first, which the engine transport must follow.
    let repeated = common::LayerBuilder::new().file("etc/same", "x").build();
    check_hand_built(
        "repeated",
        &[base_layer().build(), repeated.clone(), repeated],
    );
}

#[test]
fn docker_deletes_chmod_chown() {
    check_image("deletes");
}

#[test]
fn docker_type_replacements() {
    check_image("replace");
}

#[test]
fn docker_rm_rf_and_recreate() {
    check_image("recreate");
}

#[test]
fn docker_hardlinks_overwritten_and_deleted_targets() {
    check_image("hardlinks");
}

#[test]
fn docker_fifo_symlink_sticky_long_names() {
    check_image("special");
}

/// Layers built in code (cases `docker build` on vfs cannot produce, such as opaque markers):
/// `docker load` applies them, `docker export` is the truth.
fn check_hand_built(name: &str, layers: &[Vec<u8>]) {
    let Some(()) = engine() else { return };
    let tag = format!("{RUN}-hand-{name}:1");
    let archive = workdir().join(format!("hand-{name}.tar"));
    std::fs::write(&archive, common::docker_archive(layers, &tag)).unwrap();
    docker(&["load", "-q", "-i", &archive.display().to_string()]);
    let want = exported(&tag);
    let got = strata_flatten(&format!("docker-archive:{}", archive.display()));
    assert_canon_eq(&format!("hand-built {name}"), &want, &got);
    // --no-cache: the engine's save stream is read every time, not a kept copy.
    let got = strata_flatten_args(&["--no-cache", &format!("docker-daemon:{tag}")]);
    assert_canon_eq(&format!("hand-built {name} (docker-daemon)"), &want, &got);
    let dir = workdir().join(format!("hand-{name}-extracted"));
    strata(&[
        "extract",
        "-q",
        &archive.display().to_string(),
        &dir.display().to_string(),
    ]);
    let mut t = common::model::read_dir_tree(&dir);
    strip_runtime(&mut t);
    assert_canon_eq(&format!("hand-built {name} extracted"), &want, &canon(&t));
    // Squashed (all, and all but the base layer), loaded, exported: the same tree.
    for from in ["0", "1"] {
        let out = workdir().join(format!("hand-{name}-sq{from}.tar"));
        let sq_tag = format!("{RUN}-hand-{name}:sq{from}");
        strata(&[
            "squash",
            "-q",
            &archive.display().to_string(),
            "--from",
            from,
            "--tag",
            &sq_tag,
            "-o",
            &out.display().to_string(),
        ]);
        docker(&["load", "-q", "-i", &out.display().to_string()]);
        assert_canon_eq(
            &format!("hand-built {name} squashed --from {from}"),
            &want,
            &exported(&sq_tag),
        );
    }
}

fn base_layer() -> common::LayerBuilder {
    let mut b = common::LayerBuilder::new();
    b.dir("bin")
        .dir("etc")
        .file("etc/passwd", "root:x:0:0::/:/bin/sh\n");
    b
}

#[test]
fn docker_load_opaque_and_same_layer_whiteouts() {
    let l0 = base_layer()
        .dir("o1")
        .file("o1/old", "1")
        .dir("o1/sub")
        .file("o1/sub/x", "x")
        .dir("o2")
        .file("o2/old", "2")
        .dir("w")
        .file("w/old", "w")
        .dir("w2")
        .file("w2/old", "w2")
        .build();
    let l1 = common::LayerBuilder::new()
        .dir("o1")
        .opaque("o1")
        .file("o1/new", "n") // marker first
        .dir("o2")
        .file("o2/new", "n")
        .opaque("o2") // marker last
        .whiteout("w")
        .dir("w")
        .file("w/new", "n") // whiteout then recreate
        .whiteout("w2")
        .file("w2", "now a file")
        .build();
    check_hand_built("opaque", &[l0, l1]);
}

#[test]
fn docker_load_hardlinks() {
    let l0 = base_layer()
        .file("t1", "one")
        .hardlink("a1", "t1")
        .hardlink("a2", "t1")
        .file("t2", "two")
        .hardlink("b1", "t2")
        .dir("d")
        .file("d/t3", "three")
        .hardlink("c1", "d/t3")
        .build();
    let l1 = common::LayerBuilder::new()
        .file("t1", "ONE")
        .whiteout("t2")
        .whiteout("d")
        .hardlink("x1", "a1")
        .build();
    let l2 = common::LayerBuilder::new()
        .hardlink("y1", "b1")
        .file("a2", "replaced")
        .build();
    check_hand_built("hardlinks", &[l0, l1, l2]);
}

#[test]
fn docker_load_implied_parents_and_names() {
    let l0 = base_layer()
        .file("x/y/file", "hi")
        .file("./dot/slash", "d")
        .file("/abs/name", "a")
        .dir("./")
        .file("my.wh.file", "m")
        .build();
    let long = format!("{}/{}", "L".repeat(120), "F".repeat(120));
    let l1 = common::LayerBuilder::new()
        .file("q/r/.wh.nothing", "")
        .opaque("p/q")
        .file(&long, "long")
        .dir("/")
        .build();
    check_hand_built("implied", &[l0, l1]);
}

#[test]
fn docker_load_type_changes() {
    let l0 = base_layer()
        .dir("f2d")
        .file("f2d/in", "1")
        .file("d2f", "f")
        .symlink("s2d", "/etc")
        .dir("d2s")
        .file("d2s/in", "x")
        .build();
    let l1 = common::LayerBuilder::new()
        .file("f2d", "file now")
        .dir("d2f")
        .file("d2f/in", "dir now")
        .dir("s2d")
        .file("s2d/in", "d")
        .symlink("d2s", "/bin")
        .build();
    let l2 = common::LayerBuilder::new()
        .dir("f2d")
        .file("f2d/again", "dir again")
        .build();
    check_hand_built("types", &[l0, l1, l2]);
}

/// `strata diff` reports what each RUN step of a `docker build` did.
#[test]
fn docker_diff_reports_the_run_steps() {
    let Some(()) = engine() else { return };
    let steps = IMAGES.iter().find(|(n, _)| *n == "deletes").unwrap().1;
    let archive = build(workdir(), "deletes-diff", steps);
    let o = Command::new(common::strata_bin())
        .args(["diff", "--json", &archive.display().to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let layers = v["layers"].as_array().unwrap();
    let names = |l: &serde_json::Value, k: &str| -> Vec<String> {
        let mut p: Vec<String> = l[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["path"].as_str().unwrap().to_string())
            .collect();
        p.sort();
        p
    };
    let files_only = |l: &serde_json::Value, k: &str| -> Vec<String> {
        let mut p: Vec<String> = l[k]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["type"] != "dir")
            .map(|c| c["path"].as_str().unwrap().to_string())
            .collect();
        p.sort();
        p
    };
    let what = |l: &serde_json::Value, path: &str| -> Vec<String> {
        l["changed"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == path)
            .map(|c| {
                c["what"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| w.as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_else(|| panic!("{path} not in changed: {}", l["changed"]))
    };
    // Layer 1: RUN mkdir -p /d/sub /d/other && echo a > /d/sub/f && echo b > /d/other/g && echo x > /keep && echo gone > /gone
    let l1 = &layers[1];
    assert_eq!(
        files_only(l1, "created"),
        vec!["/d/other/g", "/d/sub/f", "/gone", "/keep"]
    );
    assert!(names(l1, "created").contains(&"/d/sub".to_string()));
    assert!(l1["deleted"].as_array().unwrap().is_empty());
    // Layer 2: RUN rm /gone && rm -rf /d/sub && chmod 700 /d && chmod 4755 /keep && chown 12:34 /keep
    let l2 = &layers[2];
    assert_eq!(names(l2, "deleted"), vec!["/d/sub", "/d/sub/f", "/gone"]);
    assert!(files_only(l2, "created").is_empty());
    assert_eq!(what(l2, "/keep"), vec!["mode", "owner"]);
    assert_eq!(what(l2, "/d"), vec!["mode"]);
    // Layer 3 (after ENV): RUN echo overwrite > /keep && touch /d/other/new
    let l3 = &layers[3];
    assert_eq!(files_only(l3, "created"), vec!["/d/other/new"]);
    assert_eq!(what(l3, "/keep"), vec!["content"]);
    assert!(l3["deleted"].as_array().unwrap().is_empty());
}

/// `strata diff A B` between two built images matches the difference of their exports.
#[test]
fn docker_diff_between_images_matches_exports() {
    let Some(()) = engine() else { return };
    let find = |n: &str| IMAGES.iter().find(|(name, _)| *name == n).unwrap().1;
    let a = build(workdir(), "pair-a", find("deletes"));
    let b = build(workdir(), "pair-b", find("replace"));
    let ea = exported(&format!("{RUN}-pair-a:1"));
    let eb = exported(&format!("{RUN}-pair-b:1"));
    let o = Command::new(common::strata_bin())
        .args([
            "diff",
            "--json",
            &a.display().to_string(),
            &b.display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runtime = |p: &str| {
        ["etc", "dev", "proc", "sys", ".dockerenv"]
            .iter()
            .any(|r| p == *r || p.starts_with(&format!("{r}/")))
    };
    let set = |k: &str| -> Vec<String> {
        let mut p: Vec<String> = common::listed_paths(&v[k])
            .into_iter()
            .filter(|p| !runtime(p))
            .collect();
        p.sort();
        p
    };
    let keys = |c: &Canon| {
        c.paths
            .keys()
            .filter(|p| !runtime(p))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
    };
    let (ka, kb) = (keys(&ea), keys(&eb));
    let added: Vec<String> = kb.difference(&ka).cloned().collect();
    let removed: Vec<String> = ka.difference(&kb).cloned().collect();
    let modified: Vec<String> = ka
        .intersection(&kb)
        .filter(|p| ea.paths[*p] != eb.paths[*p])
        .cloned()
        .collect();
    assert_eq!(set("added"), added);
    assert_eq!(set("removed"), removed);
    assert_eq!(set("modified"), modified);
    assert!(
        v["summary"]["shared_layers"].as_u64().unwrap() >= 1,
        "the imported base is shared"
    );
}

/// `strata ARGS | docker load` (ARGS write an image to stdout).
fn strata_into_docker_load(args: &[&str]) {
    let mut b = Command::new(common::strata_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let load = Command::new("docker")
        .args(["load", "-q"])
        .env("DOCKER_HOST", docker_host())
        .stdin(b.stdout.take().unwrap())
        .output()
        .unwrap();
    let made = b.wait_with_output().unwrap();
    assert!(
        made.status.success(),
        "strata {args:?}: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    assert!(
        load.status.success(),
        "docker load of strata {args:?}: {}",
        String::from_utf8_lossy(&load.stderr)
    );
}

/// `strata build … -o - | docker load`.
fn build_into_docker(args: &[&str]) {
    strata_into_docker_load(&[&["-q", "build"][..], args, &["-o", "-"]].concat());
}

/// `skopeo copy docker-archive:ARCHIVE oci:DIR:TAG` (skopeo reads the whole archive).
fn skopeo_to_oci(archive: &Path, dir: &Path, tag: &str) {
    tool(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("docker-archive:{}", archive.display()),
            &format!("oci:{}:{tag}", dir.display()),
        ],
    );
}

/// Run a second-opinion tool (skopeo, umoci); its stdout, or a panic with its stderr.
fn tool(cmd: &str, args: &[&str]) -> Vec<u8> {
    let o = Command::new(cmd).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// A directory with Debian's busybox-static, a script and data files, as three layers.
fn app_tree(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let w = |p: &str, data: &[u8], mode: u32| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    w("bin/busybox", &std::fs::read(busybox()).unwrap(), 0o755);
    for app in ["sh", "cat", "id", "ls"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
    }
    w(
        "app/run.sh",
        b"#!/bin/sh\necho \"$GREETING from $(pwd) as $(id -u):$(id -g)\"\ncat message.txt\nls /data/more\n",
        0o755,
    );
    w("data/message.txt", b"payload 42\n", 0o644);
    w("data/more/one", b"1", 0o644);
    w("data/more/two", b"2", 0o600);
    for d in ["", "bin", "app", "data", "data/more"] {
        std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn docker_runs_a_built_image() {
    let Some(()) = engine() else { return };
    let root = workdir().join("built-app");
    app_tree(&root);
    let r = |p: &str| root.join(p).display().to_string();
    let tag = &format!("{RUN}-built:1");
    build_into_docker(&[
        "--layer",
        &format!("{}:/bin", r("bin")),
        "--layer",
        &format!("{}:/app,{}:/data", r("app"), r("data")),
        "--entrypoint",
        r#"["/bin/sh", "/app/run.sh"]"#,
        "--env",
        "GREETING=hello",
        "--env",
        "PATH=/bin",
        "--workdir",
        "/data",
        "--user",
        "1000:1000",
        "--label",
        "org.example.built-by=strata",
        "--expose",
        "8080",
        "--tag",
        tag,
    ]);
    let out = docker(&["run", "--rm", "--network=none", tag]);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "hello from /data as 1000:1000\npayload 42\none\ntwo\n"
    );
    let v = inspect_json(tag);
    let c = &v["Config"];
    assert!(
        c["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "GREETING=hello"),
        "{c}"
    );
    assert_eq!(c["WorkingDir"], "/data");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["Labels"]["org.example.built-by"], "strata");
    assert!(c["ExposedPorts"].get("8080/tcp").is_some(), "{c}");
    assert_eq!(v["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    // What Docker made of the layers is what strata says the image holds.
    let saved = workdir().join("built-app.tar");
    docker(&["save", "-o", &saved.display().to_string(), tag]);
    let mut want = exported(tag);
    // The image has no /etc: the runtime made it for hosts/hostname/resolv.conf.
    want.paths.remove("etc");
    assert_canon_eq(
        "built image",
        &want,
        &strata_flatten(&format!("docker-archive:{}", saved.display())),
    );
    assert!(want.paths.contains_key("data/more/two"));
}

#[test]
fn docker_build_from_a_docker_built_image_keeps_its_layers() {
    let Some(()) = engine() else { return };
    let base = build(
        workdir(),
        "buildbase",
        "RUN echo one > /etc/one\nRUN mkdir /opt && echo two > /opt/two\nENV FROM_BASE=yes",
    );
    let extra = workdir().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(extra.join("three"), "three\n").unwrap();
    let tag = &format!("{RUN}-built-from:1");
    build_into_docker(&[
        "--from",
        &format!("docker-archive:{}", base.display()),
        "--layer",
        &format!("{}:/opt/extra", extra.display()),
        "--cmd",
        "cat /etc/one /opt/two /opt/extra/three",
        "--tag",
        tag,
    ]);
    let before = inspect_json(&format!("{RUN}-buildbase:1"));
    let after = inspect_json(tag);
    let (b, a) = (
        before["RootFS"]["Layers"].as_array().unwrap(),
        after["RootFS"]["Layers"].as_array().unwrap(),
    );
    assert_eq!(a.len(), b.len() + 1);
    assert_eq!(&a[..b.len()], &b[..], "base layers keep their digests");
    assert!(
        after["Config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "FROM_BASE=yes")
    );
    let out = docker(&["run", "--rm", "--network=none", tag]);
    assert_eq!(String::from_utf8_lossy(&out), "one\ntwo\nthree\n");
}

#[test]
fn built_oci_layouts_satisfy_skopeo_and_umoci() {
    let Some(()) = engine() else { return };
    if !which("umoci") || !which("skopeo") {
        assert!(
            std::env::var_os("CI").is_none(),
            "umoci and skopeo are needed under CI"
        );
        eprintln!("SKIPPED: umoci or skopeo missing");
        return;
    }
    let root = workdir().join("oci-app");
    app_tree(&root);
    std::fs::hard_link(root.join("data/message.txt"), root.join("data/again.txt")).unwrap();
    let layout = workdir().join("built-oci");
    strata(&[
        "build",
        "-q",
        "--layer",
        &format!("{}:/", root.display()),
        "--cmd",
        "/bin/sh",
        "--format",
        "oci",
        "--tag",
        "v1",
        "-o",
        &layout.display().to_string(),
    ]);
    let o = tool(
        "skopeo",
        &["inspect", &format!("oci:{}:v1", layout.display())],
    );
    let v: serde_json::Value = serde_json::from_slice(&o).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
    let bundle = workdir().join("built-oci-bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:v1", layout.display()),
            &bundle.display().to_string(),
        ],
    );
    let mut src = common::model::read_dir_tree(&root);
    for n in src.nodes.values_mut() {
        n.uid = 0;
        n.gid = 0;
    }
    let unpacked = common::model::read_dir_tree(&bundle.join("rootfs"));
    if let Some(msg) =
        common::model::diff_report(&canon(&src), &canon(&unpacked), "source", "umoci")
    {
        panic!("umoci's unpack of the built layout differs from the source:\n{msg}");
    }
}

/// strata's output and status, with the engine's DOCKER_HOST (or another).
fn strata_out(args: &[&str], host: &str) -> std::process::Output {
    Command::new(common::strata_bin())
        .args(args)
        .env("DOCKER_HOST", host)
        .output()
        .unwrap()
}

fn layer_count(tag: &str) -> usize {
    inspect_json(tag)["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .len()
}

fn run_output(tag: &str, cmd: &[&str]) -> String {
    let mut args = vec!["run", "--rm", "--network=none", tag];
    args.extend_from_slice(cmd);
    String::from_utf8(docker(&args)).unwrap()
}

#[test]
fn docker_daemon_squash_build_and_copy_without_files_in_between() {
    let Some(()) = engine() else { return };
    let steps = "RUN echo one > /one && echo keep > /keep\n\
                 RUN echo two > /two && rm /one\n\
                 ENV GREETING=hello\n\
                 RUN echo three > /three\n\
                 CMD [\"cat\", \"/two\"]";
    build(workdir(), "daemon", steps);
    let src = &format!("docker-daemon:{RUN}-daemon:1");
    let orig = inspect_json(&format!("{RUN}-daemon:1"));
    let n = layer_count(&format!("{RUN}-daemon:1"));
    assert!(n >= 4, "{n} layers");
    // Squash daemon → daemon: all layers, --from 1, --last 2.
    for (extra, tag, layers) in [
        (vec![], "sq-all", 1),
        (vec!["--from", "1"], "sq-from1", 2),
        (vec!["--last", "2"], "sq-last2", n - 1),
    ] {
        let dst = format!("docker-daemon:{RUN}-daemon:{tag}");
        let mut args = vec!["squash", "-q", src, "-o", &dst];
        args.extend(extra.iter().copied());
        strata(&args);
        let full = format!("{RUN}-daemon:{tag}");
        assert_eq!(layer_count(&full), layers, "{full}");
        let v = inspect_json(&full);
        for k in ["Cmd", "Env", "WorkingDir", "Entrypoint"] {
            assert_eq!(v["Config"][k], orig["Config"][k], "{full}: Config.{k}");
        }
        assert_eq!(run_output(&full, &[]), "two\n", "{full} runs its Cmd");
        let root = run_output(&full, &["ls", "/"]);
        assert!(
            !root.lines().any(|l| l == "one"),
            "{full}: /one was deleted: {root}"
        );
        assert_eq!(
            run_output(&full, &["cat", "/keep", "/three"]),
            "keep\nthree\n"
        );
    }
    // build --from the engine, into the engine.
    let ctx = workdir().join("daemon-added");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("file"), "added\n").unwrap();
    strata(&[
        "build",
        "-q",
        "--from",
        src,
        "--layer",
        &format!("{}:/added", ctx.display()),
        "-o",
        &format!("docker-daemon:{RUN}-daemon:built"),
    ]);
    assert_eq!(layer_count(&format!("{RUN}-daemon:built")), n + 1);
    assert_eq!(
        run_output(
            &format!("{RUN}-daemon:built"),
            &["cat", "/added/file", "/two"]
        ),
        "added\ntwo\n"
    );
    // copy engine → docker-archive → engine: the same image id (config digest).
    let file = workdir().join("daemon-copy.tar");
    strata(&[
        "copy",
        "-q",
        src,
        &format!("docker-archive:{}", file.display()),
    ]);
    strata(&[
        "copy",
        "-q",
        &format!("docker-archive:{}", file.display()),
        &format!("docker-daemon:{RUN}-daemon:copied"),
    ]);
    assert_eq!(
        inspect_json(&format!("{RUN}-daemon:copied"))["Id"],
        orig["Id"]
    );
    // A missing image, an engine that is not there: one line each, exit 1.
    for (args, host, what) in [
        (
            vec!["inspect", &format!("docker-daemon:{RUN}-no-such:1")],
            docker_host(),
            "no such image",
        ),
        (
            vec![
                "flatten",
                &format!("docker-daemon:{RUN}-daemon:1"),
                "-o",
                "/dev/null",
            ],
            "unix:///nonexistent/docker.sock".to_string(),
            "cannot reach the Docker daemon at unix:///nonexistent/docker.sock",
        ),
    ] {
        let o = strata_out(&args, &host);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(what), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[test]
fn docker_daemon_over_tls_with_client_certificates() {
    let Some(()) = engine() else { return };
    // .ci/start-dockerd makes the engine listen with --tlsverify too, and says where.
    let root = std::env::var("STRATA_DOCKER_ROOT").unwrap_or_else(|_| "/tmp/strata-docker".into());
    let Ok(tls_host) = std::fs::read_to_string(format!("{root}/tls-host")) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: the engine has no TLS endpoint"
        );
        eprintln!("SKIPPED: this engine was not started by .ci/start-dockerd with TLS");
        return;
    };
    let tls_host = tls_host.trim();
    let certs = format!("{root}/certs");
    let run = |vars: &[(&str, &str)], args: &[&str]| {
        let mut c = Command::new(common::strata_bin());
        c.args(args).env("DOCKER_HOST", tls_host);
        c.env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        for (k, v) in vars {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let tls = [
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", certs.as_str()),
    ];
    // Read over TLS, write back over TLS, read that back: the same tree.
    let base = base_image();
    let o = run(
        &tls,
        &["flatten", "-q", &format!("docker-daemon:{base}"), "-o", "-"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = o.stdout;
    let o = run(
        &tls,
        &[
            "copy",
            "-q",
            &format!("docker-daemon:{base}"),
            &format!("docker-daemon:{RUN}-tls:1"),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(
        &tls,
        &[
            "flatten",
            "-q",
            &format!("docker-daemon:{RUN}-tls:1"),
            "-o",
            "-",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, want);
    // Plain HTTP to the TLS port, and a CA that did not sign the daemon: one line each.
    let bad = tempfile::tempdir().unwrap();
    let b = bad.path().display().to_string();
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ])
        .args([
            "-keyout",
            &format!("{b}/key.pem"),
            "-out",
            &format!("{b}/ca.pem"),
        ])
        .output()
        .unwrap();
    assert!(ok.status.success());
    std::fs::copy(format!("{b}/ca.pem"), format!("{b}/cert.pem")).unwrap();
    for (vars, what) in [
        (&[][..], "HTTPS server"),
        (
            &[("DOCKER_TLS_VERIFY", "1"), ("DOCKER_CERT_PATH", b.as_str())][..],
            "certificate",
        ),
    ] {
        let o = run(vars, &["inspect", &format!("docker-daemon:{base}")]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(what), "{what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}
