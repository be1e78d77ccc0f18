//! `strata squash`: the squashed image means the same as the original (checked with the
//! reference model), keeps the lower layers byte for byte, is reproducible, and only keeps the
//! whiteouts that still matter.

mod common;

use common::model::{Canon, model_of};
use common::stacks::{stack, tars};
use common::*;
use proptest::prelude::*;
use std::path::Path;
use std::process::Command;

/// The layer tars of an image, bottom first, read through strata's own readers.
fn layer_tars(reference: &str) -> Vec<Vec<u8>> {
    let img = strata::reference::Reference::parse(reference)
        .unwrap()
        .open(&Default::default())
        .unwrap();
    img.layers
        .iter()
        .map(|l| {
            strata::compression::decode_all(&l.blob.region().unwrap().read_all().unwrap()).unwrap()
        })
        .collect()
}

fn squash_cli(args: &[&str]) -> std::process::Output {
    Command::new(strata_bin())
        .arg("squash")
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Squash in-process (library), from layer `from`, to a docker-archive; return its layers.
fn squash_layers(layers: &[Vec<u8>], from: usize) -> Result<Vec<Vec<u8>>, String> {
    let d = tempfile::tempdir().unwrap();
    let src = write_docker_archive(d.path(), layers);
    let img = strata::reference::Reference::parse(&src.display().to_string())
        .unwrap()
        .open(&Default::default())
        .unwrap();
    let out = d.path().join("sq.tar");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&out).unwrap());
    let mut members = strata::sink::members::TarMembers::seekable(&mut f).unwrap();
    let mut w = strata::sink::docker_archive::DockerArchive::new(&mut members);
    let opts = strata::squash::SquashOptions {
        from,
        created: None,
        verify: true,
        progress: None,
        cancel: Default::default(),
    };
    strata::squash::squash(&img, &opts, &mut w, &["x:1".into()]).map_err(|e| e.to_string())?;
    drop(f);
    // To a stream, the layer's size is planned from the headers and its content merged once:
    // the same bytes as the file, whose header was patched after the content.
    let mut piped = Vec::new();
    let mut members = strata::sink::members::TarMembers::stream(&mut piped);
    let mut w = strata::sink::docker_archive::DockerArchive::new(&mut members);
    let report = strata::squash::squash(&img, &opts, &mut w, &["x:1".into()])
        .map_err(|e| format!("to a stream: {e}"))?;
    if report.passes != 1 {
        return Err(format!("to a stream: {} passes", report.passes));
    }
    if piped != std::fs::read(&out).unwrap() {
        return Err("the stream's bytes differ from the file's".into());
    }
    Ok(layer_tars(&out.display().to_string()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Applying the squashed image's layers gives what applying the original's gives.
    #[test]
    fn squash_means_the_same(ops in stack(), from_seed in 0usize..8) {
        let layers = tars(&ops);
        let Ok(want) = model_of(&layers) else { return Ok(()); };
        let from = from_seed % layers.len();
        let out = squash_layers(&layers, from);
        prop_assert!(out.is_ok(), "squash failed: {:?}", out.err());
        let out = out.unwrap();
        prop_assert_eq!(out.len(), from + 1);
        prop_assert_eq!(&out[..from], &layers[..from], "kept layers must be byte-identical");
        let got: Canon = model_of(&out).map_err(TestCaseError::fail)?;
        prop_assert_eq!(want.paths, got.paths);
        prop_assert_eq!(want.links, got.links);
    }
}

fn names_in(tar_bytes: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(tar_bytes);
    ar.entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}

#[test]
fn only_whiteouts_that_hide_something_stay() {
    let l0 = LayerBuilder::new()
        .file("a", "1")
        .dir("d")
        .file("d/x", "x")
        .file("keep", "k")
        .build();
    let l1 = LayerBuilder::new().file("tmp", "t").build();
    let l2 = LayerBuilder::new()
        .whiteout("a")
        .whiteout("tmp")
        .whiteout("never-existed")
        .build();
    let out = squash_layers(&[l0.clone(), l1, l2], 1).unwrap();
    let names = names_in(&out[1]);
    assert_eq!(
        names,
        vec![".wh.a"],
        "tmp was created and deleted above the kept layers"
    );
    // Squashing everything: no whiteout at all.
    let out = squash_layers(&[l0, LayerBuilder::new().whiteout("a").build()], 0).unwrap();
    assert!(names_in(&out[0]).iter().all(|n| !n.contains(".wh.")));
}

#[test]
fn recreated_directory_becomes_opaque() {
    let l0 = LayerBuilder::new().dir("d").file("d/old", "o").build();
    let l1 = LayerBuilder::new()
        .whiteout("d")
        .dir("d")
        .file("d/new", "n")
        .build();
    let out = squash_layers(&[l0.clone(), l1.clone()], 1).unwrap();
    let names = names_in(&out[1]);
    assert!(names.contains(&"d/.wh..wh..opq".to_string()), "{names:?}");
    assert_eq!(model_of(&out).unwrap(), model_of(&[l0, l1]).unwrap());
}

#[test]
fn implied_parents_that_exist_below_are_not_invented() {
    let l0 = LayerBuilder::new()
        .dir_mode("usr", 0o755)
        .dir_mode("usr/bin", 0o755)
        .build();
    let l1 = LayerBuilder::new().file("usr/bin/tool", "t").build();
    let out = squash_layers(&[l0, l1], 1).unwrap();
    assert_eq!(
        names_in(&out[1]),
        vec!["usr/bin/tool"],
        "a 0600 usr/ here would chmod the real one"
    );
}

#[test]
fn cross_layer_hardlink_into_a_kept_layer() {
    let l0 = LayerBuilder::new().file("t", "data").build();
    let l1 = LayerBuilder::new().hardlink("alias", "t").build();
    let out = squash_layers(&[l0.clone(), l1.clone()], 1).unwrap();
    assert_eq!(model_of(&out).unwrap(), model_of(&[l0, l1]).unwrap());
}

fn sample() -> Vec<Vec<u8>> {
    vec![
        LayerBuilder::new()
            .dir("etc")
            .file("etc/conf", "v1")
            .dir("var")
            .file("var/log", "l")
            .build(),
        LayerBuilder::new()
            .file("etc/conf", "v2")
            .whiteout("var")
            .build(),
        LayerBuilder::new()
            .file("app", "bin")
            .hardlink("app2", "app")
            .build(),
    ]
}

#[test]
fn output_is_reproducible_and_pipe_equals_file() {
    let d = tempfile::tempdir().unwrap();
    let src = write_docker_archive(d.path(), &sample());
    let src = src.display().to_string();
    for format in ["docker-archive", "oci-archive"] {
        let a = d.path().join(format!("a-{format}.tar"));
        let b = d.path().join(format!("b-{format}.tar"));
        ok(&squash_cli(&[
            &src,
            "--format",
            format,
            "-o",
            &a.display().to_string(),
        ]));
        ok(&squash_cli(&[
            &src,
            "--format",
            format,
            "-o",
            &b.display().to_string(),
        ]));
        let piped = squash_cli(&[&src, "--format", format, "-o", "-"]);
        ok(&piped);
        let a = std::fs::read(&a).unwrap();
        assert_eq!(a, std::fs::read(&b).unwrap(), "{format}: two runs differ");
        assert_eq!(a, piped.stdout, "{format}: pipe and file differ");
    }
}

#[test]
fn from_keeps_lower_blobs_and_config() {
    let d = tempfile::tempdir().unwrap();
    let dir = write_oci_dir(d.path(), &sample(), Comp::Gzip);
    let out = d.path().join("sq-oci");
    ok(&squash_cli(&[
        &format!("oci:{}", dir.display()),
        "--format",
        "oci",
        "--from",
        "1",
        "-o",
        &out.display().to_string(),
        "--tag",
        "v1",
    ]));
    let orig = strata::reference::Reference::parse(&format!("oci:{}", dir.display()))
        .unwrap()
        .open(&Default::default())
        .unwrap();
    let sq = strata::reference::Reference::parse(&format!("oci:{}:v1", out.display()))
        .unwrap()
        .open(&Default::default())
        .unwrap();
    assert_eq!(sq.layers.len(), 2);
    assert_eq!(
        sq.layers[0].digest, orig.layers[0].digest,
        "kept blob digest"
    );
    assert_eq!(
        sq.layers[0].blob.region().unwrap().read_all().unwrap(),
        orig.layers[0].blob.region().unwrap().read_all().unwrap()
    );
    assert_eq!(
        sq.config["config"], orig.config["config"],
        "Cmd/Env/WorkingDir kept"
    );
    let hist = sq.config["history"].as_array().unwrap();
    assert_eq!(hist.len(), 2);
    assert_eq!(hist[1]["created_by"], "strata squash");
    assert!(
        hist[1]["comment"]
            .as_str()
            .unwrap()
            .contains("layer 1 ; layer 2"),
        "{}",
        hist[1]["comment"]
    );
    // Flattening the squashed image gives the same tree.
    let a = model::canon(
        &model::read_flat(&flatten_ref(&format!("oci:{}:v1", out.display())).unwrap()).unwrap(),
    );
    assert_eq!(a, model_of(&sample()).unwrap());
}

use common::model;

#[test]
fn created_from_flag_or_source_date_epoch() {
    let d = tempfile::tempdir().unwrap();
    let src = write_docker_archive(d.path(), &sample())
        .display()
        .to_string();
    let cfg_created = |o: &Path| {
        let img = strata::reference::Reference::parse(&o.display().to_string())
            .unwrap()
            .open(&Default::default())
            .unwrap();
        img.config["created"].as_str().unwrap_or("").to_string()
    };
    let o1 = d.path().join("c1.tar");
    ok(&squash_cli(&[
        &src,
        "--created",
        "2024-01-02T03:04:05Z",
        "-o",
        &o1.display().to_string(),
    ]));
    assert_eq!(cfg_created(&o1), "2024-01-02T03:04:05Z");
    let o2 = d.path().join("c2.tar");
    let out = Command::new(strata_bin())
        .args(["squash", &src, "-o", &o2.display().to_string()])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(cfg_created(&o2), "2023-11-14T22:13:20Z");
}

#[test]
fn bad_requests_fail_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let src = write_docker_archive(d.path(), &sample())
        .display()
        .to_string();
    let o = squash_cli(&[
        &src,
        "--from",
        "9",
        "-o",
        &d.path().join("x.tar").display().to_string(),
    ]);
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("layer 9 does not exist")
    );
    let o = squash_cli(&[&src, "--format", "oci"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("-o DIR"));
    let existing = d.path().join("exists.tar");
    std::fs::write(&existing, b"keep").unwrap();
    let o = squash_cli(&[&src, "-o", &existing.display().to_string()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep");
    // A corrupt source leaves nothing behind.
    let bad = d.path().join("bad.tar");
    let mut b = std::fs::read(&src).unwrap();
    let i = b.windows(2).position(|w| w == b"v2").unwrap();
    b[i] = b'X';
    std::fs::write(&bad, b).unwrap();
    let target = d.path().join("never.tar");
    let o = squash_cli(&[
        &bad.display().to_string(),
        "-o",
        &target.display().to_string(),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("digest mismatch"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!target.exists());
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.iter()
            .all(|n| !n.to_string_lossy().ends_with(".partial")),
        "{left:?}"
    );
}

#[test]
fn output_references_name_their_format() {
    let d = tempfile::tempdir().unwrap();
    let layers = vec![
        LayerBuilder::new().file("a", "1").build(),
        LayerBuilder::new().file("b", "2").build(),
    ];
    let src = write_docker_archive(d.path(), &layers)
        .display()
        .to_string();
    let want = flatten_ref(&src).unwrap();
    let layout = d.path().join("layout");
    let archive = d.path().join("sq-oci.tar");
    let docker = d.path().join("sq-docker.tar");
    for (out, reference) in [
        (
            format!("oci:{}", layout.display()),
            format!("oci:{}", layout.display()),
        ),
        (
            format!("oci-archive:{}", archive.display()),
            format!("oci-archive:{}", archive.display()),
        ),
        (
            format!("docker-archive:{}", docker.display()),
            format!("docker-archive:{}", docker.display()),
        ),
    ] {
        ok(&squash_cli(&[&src, "-o", &out, "--tag", "x:1"]));
        let img = strata::reference::Reference::parse(&reference)
            .unwrap()
            .open(&Default::default())
            .unwrap();
        assert_eq!(img.layers.len(), 1, "{out}");
        assert_eq!(
            model::canon(&model::read_flat(&flatten_ref(&reference).unwrap()).unwrap()),
            model::canon(&model::read_flat(&want).unwrap()),
            "{out}"
        );
    }
    assert!(layout.join("index.json").is_file());
    // A reference and a --format that disagree: one line, nothing written.
    let o = squash_cli(&[
        &src,
        "-o",
        &format!("oci:{}", d.path().join("x").display()),
        "--format",
        "docker-archive",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("contradicts --format docker-archive"), "{err}");
    assert!(!d.path().join("x").exists());
}

#[test]
fn the_same_image_squashes_to_the_same_bytes_wherever_it_lies() {
    let d = tempfile::tempdir().unwrap();
    let layers = vec![
        LayerBuilder::new().file("a", "1").build(),
        LayerBuilder::new().file("b", "2").build(),
    ];
    let first = write_docker_archive(d.path(), &layers);
    let elsewhere = d.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let second = elsewhere.join("copy-of-it.tar");
    std::fs::copy(&first, &second).unwrap();
    let squash = |src: &Path| {
        let o = Command::new(strata_bin())
            .args([
                "squash",
                &src.display().to_string(),
                "--created",
                "2020-01-01T00:00:00Z",
                "-o",
                "-",
            ])
            .output()
            .unwrap();
        ok(&o);
        o.stdout
    };
    let a = squash(&first);
    assert!(
        a == squash(&second),
        "the output names the image, not its path"
    );
    // From stdin too.
    let o = Command::new(strata_bin())
        .args([
            "squash",
            "-",
            "--created",
            "2020-01-01T00:00:00Z",
            "-o",
            "-",
        ])
        .stdin(std::fs::File::open(&first).unwrap())
        .output()
        .unwrap();
    ok(&o);
    assert!(o.stdout == a, "stdin gives the same bytes");
}

#[test]
fn docker_tags_are_checked_before_any_output() {
    let d = tempfile::tempdir().unwrap();
    let src = write_docker_archive(d.path(), &[LayerBuilder::new().file("a", "1").build()])
        .display()
        .to_string();
    let out = d.path().join("out.tar");
    let o = squash_cli(&[
        &src,
        "--tag",
        "Bad/Name:1",
        "-o",
        &out.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("lowercase"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.exists());
    let o = squash_cli(&[&src, "--tag", "app", "-o", &out.display().to_string()]);
    ok(&o);
    let manifest = std::process::Command::new("tar")
        .args(["-xOf", &out.display().to_string(), "manifest.json"])
        .output()
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&manifest.stdout).unwrap();
    assert_eq!(m[0]["RepoTags"][0], "app:latest");
    // An OCI layout's tag is its reference name, as given.
    let lay = d.path().join("lay");
    ok(&squash_cli(&[
        &src,
        "--format",
        "oci",
        "--tag",
        "v1",
        "-o",
        &lay.display().to_string(),
    ]));
    assert!(
        std::fs::read_to_string(lay.join("index.json"))
            .unwrap()
            .contains("\"v1\"")
    );
}

#[test]
fn oci_index_entries_carry_the_config_s_platform_with_its_variant() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("src")).unwrap();
    std::fs::write(d.path().join("src/f"), "x").unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(strata_bin())
            .current_dir(d.path())
            .args(args)
            .output()
            .unwrap();
        ok(&o);
    };
    run(&[
        "build",
        "-q",
        "--layer",
        "src:/src",
        "--arch",
        "arm",
        "--variant",
        "v7",
        "--format",
        "oci",
        "--tag",
        "v1",
        "-o",
        "arm",
    ]);
    run(&[
        "squash",
        "-q",
        "oci:arm:v1",
        "--format",
        "oci",
        "--tag",
        "sq",
        "-o",
        "sq",
    ]);
    for dir in ["arm", "sq"] {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.path().join(dir).join("index.json")).unwrap())
                .unwrap();
        let p = &index["manifests"][0]["platform"];
        assert_eq!(
            (
                p["os"].as_str(),
                p["architecture"].as_str(),
                p["variant"].as_str()
            ),
            (Some("linux"), Some("arm"), Some("v7")),
            "{dir}: {p}"
        );
    }
}

#[test]
fn squash_says_what_it_wrote() {
    let d = tempfile::tempdir().unwrap();
    let src = write_docker_archive(d.path(), &[LayerBuilder::new().file("a", "1").build()])
        .display()
        .to_string();
    let out = d.path().join("sq.tar").display().to_string();
    let o = squash_cli(&[&src, "-o", &out]);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with(&format!("strata: squashed {src} into sha256:"))
            && err.contains(&format!("(1 layer) to {out}")),
        "{err}"
    );
    let o = squash_cli(&["-q", &src, "-o", &out, "--force"]);
    ok(&o);
    assert!(o.stderr.is_empty(), "-q says nothing");
}

/// Kept layers big enough to go into a pipe by `sendfile` (page cache to pipe, no copy through
/// strata) arrive as the same bytes as in the file output: a real pipe, read by another process.
#[test]
fn kept_layers_sent_into_a_pipe_are_the_files_bytes() {
    let d = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..3u32 << 20).map(|i| (i % 253) as u8).collect();
    let l0 = LayerBuilder::new()
        .dir("opt")
        .file_meta("opt/big", &big, &Meta::default())
        .build();
    let l1 = LayerBuilder::new().file("opt/small", "s").build();
    let l2 = LayerBuilder::new().file("opt/top", "t").build();
    let src = write_docker_archive(d.path(), &[l0.clone(), l1.clone(), l2])
        .display()
        .to_string();
    let file = d.path().join("sq.tar");
    ok(&squash_cli(&[
        "-q",
        &src,
        "--from",
        "2",
        "-o",
        &file.display().to_string(),
    ]));
    let piped = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' squash -q '{src}' --from 2 -o - | cat",
            strata_bin().display()
        ))
        .output()
        .unwrap();
    ok(&piped);
    let want = std::fs::read(&file).unwrap();
    assert!(
        piped.stdout == want,
        "the piped squash differs from the file's"
    );
    let layers = layer_tars(&file.display().to_string());
    assert_eq!(layers[0], l0, "the big kept layer, byte for byte");
    assert_eq!(layers[1], l1);
}
