//! Every way of naming an image yields the same merged tree.

mod common;

use common::model::{Canon, canon, model_of, read_flat};
use common::*;
use std::process::Command;

fn layers() -> Vec<Vec<u8>> {
    vec![
        LayerBuilder::new()
            .dir("etc")
            .file("etc/os-release", "base")
            .dir("usr")
            .file("usr/old", "o")
            .build(),
        LayerBuilder::new()
            .whiteout("usr/old")
            .file("usr/new", "n")
            .hardlink("usr/new2", "usr/new")
            .build(),
    ]
}

fn via(reference: &str) -> Canon {
    canon(
        &read_flat(&flatten_ref(reference).unwrap_or_else(|e| panic!("{reference}: {e}"))).unwrap(),
    )
}

#[test]
fn docker_archive_manifest_layout() {
    let d = tempfile::tempdir().unwrap();
    let p = write_docker_archive(d.path(), &layers());
    let want = model_of(&layers()).unwrap();
    assert_eq!(via(&format!("docker-archive:{}", p.display())), want);
    assert_eq!(via(&p.display().to_string()), want, "bare path detected");
    assert_eq!(
        via(&format!("docker-archive:{}:test:latest", p.display())),
        want
    );
    assert_eq!(via(&format!("docker-archive:{}:@0", p.display())), want);
}

#[test]
fn docker_archive_docker25_blobs_layout() {
    // Docker 25+ names layers blobs/sha256/<hex> (and adds an OCI index beside manifest.json).
    let ls = layers();
    let config = config_json(&ls);
    let cfg_name = format!("blobs/sha256/{}", sha256_hex(&config));
    let mut members = vec![];
    let mut names = vec![];
    for l in &ls {
        let n = format!("blobs/sha256/{}", sha256_hex(l));
        names.push(n.clone());
        members.push((n, l.clone()));
    }
    members.push((cfg_name.clone(), config));
    members.push(("oci-layout".into(), b"{}".to_vec()));
    members.push(("index.json".into(), b"{\"manifests\":[]}".to_vec()));
    members.push((
        "manifest.json".into(),
        serde_json::to_vec(
            &serde_json::json!([{"Config": cfg_name, "RepoTags": ["x:1"], "Layers": names}]),
        )
        .unwrap(),
    ));
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("d25.tar");
    std::fs::write(&p, archive(&members)).unwrap();
    assert_eq!(via(&p.display().to_string()), model_of(&ls).unwrap());
}

#[test]
fn docker_archive_legacy_v1_layout() {
    let ls = layers();
    let ids = ["a".repeat(64), "b".repeat(64)];
    let mut members = vec![];
    members.push((
        format!("{}/json", ids[0]),
        serde_json::to_vec(&serde_json::json!({"id": ids[0]})).unwrap(),
    ));
    members.push((format!("{}/layer.tar", ids[0]), ls[0].clone()));
    members.push((
        format!("{}/json", ids[1]),
        serde_json::to_vec(
            &serde_json::json!({"id": ids[1], "parent": ids[0], "config": {"Cmd": ["sh"]}}),
        )
        .unwrap(),
    ));
    members.push((format!("{}/layer.tar", ids[1]), ls[1].clone()));
    members.push((
        "repositories".into(),
        serde_json::to_vec(&serde_json::json!({"old": {"v1": ids[1]}})).unwrap(),
    ));
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("legacy.tar");
    std::fs::write(&p, archive(&members)).unwrap();
    assert_eq!(
        via(&format!("docker-archive:{}", p.display())),
        model_of(&ls).unwrap()
    );
}

/// A docker-archive of two one-layer images, `one:1` and `two:2`: its path and their layers.
fn multi_image_archive(dir: &std::path::Path) -> (std::path::PathBuf, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let a = vec![LayerBuilder::new().file("a", "1").build()];
    let b = vec![LayerBuilder::new().file("b", "2").build()];
    let mut members = vec![];
    let mut manifest = vec![];
    for (img, tag) in [(&a, "one:1"), (&b, "two:2")] {
        let cfg = config_json(img);
        let cfg_name = format!("{}.json", sha256_hex(&cfg));
        let ln = format!("{}/layer.tar", sha256_hex(&img[0]));
        members.push((ln.clone(), img[0].clone()));
        members.push((cfg_name.clone(), cfg));
        manifest.push(serde_json::json!({"Config": cfg_name, "RepoTags": [tag], "Layers": [ln]}));
    }
    members.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    let p = dir.join("multi.tar");
    std::fs::write(&p, archive(&members)).unwrap();
    (p, a, b)
}

#[test]
fn docker_archive_with_several_images_needs_a_choice() {
    let d = tempfile::tempdir().unwrap();
    let (p, a, b) = multi_image_archive(d.path());
    let err = flatten_ref(&format!("docker-archive:{}", p.display()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds 2 images") && err.contains("one:1") && err.contains("two:2"),
        "{err}"
    );
    assert_eq!(
        via(&format!("docker-archive:{}:two:2", p.display())),
        model_of(&b).unwrap()
    );
    assert_eq!(
        via(&format!("docker-archive:{}:@0", p.display())),
        model_of(&a).unwrap()
    );
    let err = flatten_ref(&format!("docker-archive:{}:three:3", p.display()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no image tagged three:3"), "{err}");
}

#[test]
fn oci_layout_every_compression() {
    let want = model_of(&layers()).unwrap();
    for comp in [Comp::None, Comp::Gzip, Comp::Zstd, Comp::Xz] {
        let d = tempfile::tempdir().unwrap();
        let dir = write_oci_dir(d.path(), &layers(), comp);
        assert_eq!(via(&format!("oci:{}", dir.display())), want);
        assert_eq!(via(&format!("oci:{}:v1", dir.display())), want);
        assert_eq!(
            via(&dir.display().to_string()),
            want,
            "bare directory detected"
        );
        let arch = write_oci_archive(d.path(), &layers(), comp);
        assert_eq!(via(&format!("oci-archive:{}", arch.display())), want);
        assert_eq!(
            via(&arch.display().to_string()),
            want,
            "bare OCI archive detected"
        );
    }
}

#[test]
fn oci_unknown_ref_lists_names() {
    let d = tempfile::tempdir().unwrap();
    let dir = write_oci_dir(d.path(), &layers(), Comp::Gzip);
    let err = flatten_ref(&format!("oci:{}:nope", dir.display()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no image named \"nope\"") && err.contains("v1"),
        "{err}"
    );
}

#[test]
fn oci_nested_multi_platform_index() {
    let amd = vec![LayerBuilder::new().file("arch", "amd64").build()];
    let arm = vec![LayerBuilder::new().file("arch", "arm64").build()];
    let mut files = std::collections::BTreeMap::new();
    let mut descs = vec![];
    for (ls, arch) in [(&amd, "amd64"), (&arm, "arm64")] {
        let f = oci_layout_files(ls, Comp::Gzip, "x");
        // Reuse the blobs; take the manifest descriptor from that index.
        let idx: serde_json::Value = serde_json::from_slice(&f["index.json"]).unwrap();
        let mut desc = idx["manifests"][0].clone();
        desc.as_object_mut().unwrap().remove("annotations");
        desc["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
        descs.push(desc);
        for (k, v) in f {
            if k.starts_with("blobs/") {
                files.insert(k, v);
            }
        }
    }
    let inner = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": descs,
    }))
    .unwrap();
    let inner_hex = sha256_hex(&inner);
    files.insert(format!("blobs/sha256/{inner_hex}"), inner.clone());
    files.insert(
        "index.json".into(),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{inner_hex}"), "size": inner.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }]}))
        .unwrap(),
    );
    files.insert(
        "oci-layout".into(),
        b"{\"imageLayoutVersion\":\"1.0.0\"}".to_vec(),
    );
    let d = tempfile::tempdir().unwrap();
    write_files(d.path(), &files);
    let reference = format!("oci:{}:multi", d.path().display());
    assert_eq!(
        via(&reference),
        model_of(&amd).unwrap(),
        "linux/amd64 is the default"
    );
    let open = |plat: &str| {
        strata::reference::Reference::parse(&reference)
            .unwrap()
            .open(&strata::image::oci_layout::Platform::parse(plat).unwrap())
    };
    let img = open("linux/arm64").unwrap();
    let mut out = Vec::new();
    strata::merge::flatten(&img.layers, &mut out, &Default::default()).unwrap();
    assert_eq!(canon(&read_flat(&out).unwrap()), model_of(&arm).unwrap());
    let err = open("linux/s390x").unwrap_err().to_string();
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64") && err.contains("--platform"),
        "{err}"
    );
}

#[test]
fn bzip2_layers_are_detected_by_content() {
    use std::io::Write;
    let ls = layers();
    let blobs: Vec<(Vec<u8>, &str)> = ls
        .iter()
        .map(|l| {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(l).unwrap();
            // A misleading media type: detection goes by magic bytes.
            (
                e.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        })
        .collect();
    let d = tempfile::tempdir().unwrap();
    write_files(
        d.path(),
        &oci_layout_from_blobs(&blobs, &config_json(&ls), "v1"),
    );
    assert_eq!(
        via(&format!("oci:{}", d.path().display())),
        model_of(&ls).unwrap()
    );
}

#[test]
fn stdin_archive_is_spooled() {
    let d = tempfile::tempdir().unwrap();
    let p = write_docker_archive(d.path(), &layers());
    let out = Command::new(strata_bin())
        .args(["flatten", "-", "-o", "-"])
        .stdin(std::fs::File::open(&p).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        canon(&read_flat(&out.stdout).unwrap()),
        model_of(&layers()).unwrap()
    );
}

#[test]
fn up_to_stops_at_a_layer() {
    let d = tempfile::tempdir().unwrap();
    let p = write_docker_archive(d.path(), &layers());
    let diff0 = sha256_hex(&layers()[0]);
    for spec in [
        "0".to_string(),
        diff0[..12].to_string(),
        format!("sha256:{}", &diff0[..10]),
    ] {
        let out = Command::new(strata_bin())
            .args([
                "flatten",
                &p.display().to_string(),
                "--up-to",
                &spec,
                "-o",
                "-",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            canon(&read_flat(&out.stdout).unwrap()),
            model_of(&layers()[..1]).unwrap(),
            "--up-to {spec}"
        );
    }
    let out = Command::new(strata_bin())
        .args([
            "flatten",
            &p.display().to_string(),
            "--up-to",
            "7",
            "-o",
            "-",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("layer 7 does not exist"));
}

#[test]
fn compressed_output_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let p = write_docker_archive(d.path(), &layers());
    for c in ["gzip", "zstd", "xz"] {
        let o = d.path().join(format!("out.{c}"));
        let st = Command::new(strata_bin())
            .args([
                "flatten",
                &p.display().to_string(),
                "--compress",
                c,
                "-o",
                &o.display().to_string(),
            ])
            .status()
            .unwrap();
        assert!(st.success());
        let raw = std::fs::read(&o).unwrap();
        let plain = strata::compression::decode_all(&raw).unwrap();
        assert_ne!(raw, plain, "{c} output is compressed");
        assert_eq!(
            canon(&read_flat(&plain).unwrap()),
            model_of(&layers()).unwrap()
        );
    }
}

#[test]
fn inspect_reports_config_and_layers() {
    let d = tempfile::tempdir().unwrap();
    let dir = write_oci_dir(d.path(), &layers(), Comp::Gzip);
    let out = Command::new(strata_bin())
        .args(["inspect", "--json", &format!("oci:{}", dir.display())])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["os"], "linux");
    assert_eq!(v["architecture"], "amd64");
    assert_eq!(v["cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(v["tags"], serde_json::json!(["v1"]));
    assert_eq!(v["layers"].as_array().unwrap().len(), 2);
    assert_eq!(v["layers"][1]["compression"], "gzip");
    assert_eq!(
        v["layers"][1]["diff_id"],
        format!("sha256:{}", sha256_hex(&layers()[1]))
    );
    assert_eq!(v["layers"][1]["created_by"], "layer 1");
    let text = Command::new(strata_bin())
        .args(["inspect", &format!("oci:{}", dir.display())])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Layers (2,") && text.contains("layer 1"),
        "{text}"
    );
}

#[test]
fn output_file_gets_ordinary_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let p = write_docker_archive(d.path(), &layers());
    let o = d.path().join("rootfs.tar");
    let st = Command::new(strata_bin())
        .args([
            "flatten",
            &p.display().to_string(),
            "-o",
            &o.display().to_string(),
        ])
        .env("SHELL", "/bin/sh")
        .status()
        .unwrap();
    assert!(st.success());
    // 0666 less the umask, not the 0600 of a temp file (CI and shells use umask 022).
    let mode = std::fs::metadata(&o).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o044, 0o044, "mode {mode:o}");
}

#[test]
fn docker_save_layer_symlinks_resolve_in_any_order() {
    // docker save dedups a layer shared by two images with a symlink, which may come before
    // the file it points at.
    let ls = layers();
    let config = config_json(&ls);
    let cfg_name = format!("{}.json", sha256_hex(&config));
    let mut b = tar::Builder::new(Vec::new());
    let mut link = tar::Header::new_ustar();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    b.append_link(&mut link, "aaaa/layer.tar", "../real0/layer.tar")
        .unwrap();
    for (name, data) in [
        ("real0/layer.tar".to_string(), ls[0].clone()),
        ("real1/layer.tar".to_string(), ls[1].clone()),
        (cfg_name.clone(), config),
        (
            "manifest.json".to_string(),
            serde_json::to_vec(&serde_json::json!([{"Config": cfg_name, "RepoTags": ["s:1"], "Layers": ["aaaa/layer.tar", "real1/layer.tar"]}])).unwrap(),
        ),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("linked.tar");
    std::fs::write(&p, b.into_inner().unwrap()).unwrap();
    assert_eq!(via(&p.display().to_string()), model_of(&ls).unwrap());
}

#[test]
fn layer_specs_of_digits_are_indexes_only_as_written() {
    let d = tempfile::tempdir().unwrap();
    let p = write_docker_archive(d.path(), &layers())
        .display()
        .to_string();
    let img = strata::reference::Reference::parse(&p)
        .unwrap()
        .open(&Default::default())
        .unwrap();
    assert_eq!(img.layer_index("1").unwrap(), 1);
    // A leading zero is no index; too short to be a digest prefix either.
    let e = img.layer_index("01").unwrap_err().to_string();
    assert!(e.contains("layer 01 does not exist"), "{e}");
    // A digest prefix of digits only, where it is also a valid index: ambiguous, both named.
    let mut many = img.clone();
    let template = many.layers[0].clone();
    many.layers = (0..1500)
        .map(|i| {
            let mut l = template.clone();
            l.index = i;
            l.diff_id = Some(format!("sha256:{:064}", 9_000_000 + i));
            l.digest = None;
            l
        })
        .collect();
    many.layers[1234].diff_id = Some(format!("sha256:1200{}", "a".repeat(60)));
    let e = many.layer_index("1200").unwrap_err().to_string();
    assert!(
        e.contains("ambiguous") && e.contains("layer 1200") && e.contains("layer 1234"),
        "{e}"
    );
    assert_eq!(many.layer_index("sha256:1200").unwrap(), 1234);
    assert_eq!(many.layer_index("1499").unwrap(), 1499);
}

#[test]
fn docker_archives_compressed_as_a_whole_are_read() {
    let d = tempfile::tempdir().unwrap();
    let plain = write_docker_archive(d.path(), &layers());
    let bytes = std::fs::read(&plain).unwrap();
    let want = flatten_ref(&plain.display().to_string()).unwrap();
    for (comp, ext) in [
        (Comp::Gzip, "tar.gz"),
        (Comp::Zstd, "tar.zst"),
        (Comp::Xz, "tar.xz"),
    ] {
        let p = d.path().join(format!("image.{ext}"));
        std::fs::write(&p, compress(&bytes, comp).0).unwrap();
        for r in [
            p.display().to_string(),
            format!("docker-archive:{}", p.display()),
        ] {
            assert_eq!(flatten_ref(&r).unwrap(), want, "{r}");
        }
    }
}

#[test]
fn an_asked_platform_is_required_of_a_single_platform_image() {
    let d = tempfile::tempdir().unwrap();
    let p = write_docker_archive(d.path(), &layers())
        .display()
        .to_string();
    let run = |args: &[&str]| Command::new(strata_bin()).args(args).output().unwrap();
    // The config says linux/amd64: asking for it works, asking for arm64 names what there is.
    assert!(
        run(&["--platform", "linux/amd64", "inspect", &p])
            .status
            .success()
    );
    let o = run(&["--platform", "linux/arm64", "inspect", &p]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no image for platform linux/arm64") && err.contains("available: linux/amd64"),
        "{err}"
    );
    // Not asked: the one image there is taken, whatever it is.
    assert!(run(&["inspect", &p]).status.success());
}

#[test]
fn the_hint_for_a_multi_image_archive_works_as_printed() {
    let d = tempfile::tempdir().unwrap();
    let (p, a, b) = multi_image_archive(d.path());
    // A bare path: the error's hint is `multi.tar:NAME:TAG` — and that must work.
    let bare = p.display().to_string();
    let err = flatten_ref(&bare).unwrap_err().to_string();
    assert!(err.contains(&format!("{bare}:NAME:TAG")), "{err}");
    assert_eq!(via(&format!("{bare}:two:2")), model_of(&b).unwrap());
    assert_eq!(via(&format!("{bare}:@0")), model_of(&a).unwrap());
}

#[test]
fn oci_manifests_are_chosen_by_digest_and_duplicate_names_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let a = vec![LayerBuilder::new().file("a", "1").build()];
    let b = vec![LayerBuilder::new().file("b", "2").build()];
    // Two layouts' files merged into one layout with two manifests.
    let mut files = oci_layout_files(&a, Comp::None, "x");
    let other = oci_layout_files(&b, Comp::None, "x");
    let ia: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let ib: serde_json::Value = serde_json::from_slice(&other["index.json"]).unwrap();
    for (k, v) in other {
        files.entry(k).or_insert(v);
    }
    let (ma, mb) = (ia["manifests"][0].clone(), ib["manifests"][0].clone());
    let da = ma["digest"].as_str().unwrap().to_string();
    let db = mb["digest"].as_str().unwrap().to_string();
    let write = |manifests: serde_json::Value, name: &str| {
        let mut f = files.clone();
        f.insert(
            "index.json".into(),
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
                .unwrap(),
        );
        let root = d.path().join(name);
        write_files(&root, &f);
        root.display().to_string()
    };
    let unnamed = |m: &serde_json::Value| {
        let mut m = m.clone();
        m.as_object_mut().unwrap().remove("annotations");
        m
    };
    // Unnamed: the error lists the digests, and a digest picks one.
    let root = write(serde_json::json!([unnamed(&ma), unnamed(&mb)]), "unnamed");
    let err = flatten_ref(&format!("oci:{root}")).unwrap_err().to_string();
    assert!(err.contains(&da) && err.contains(&db), "{err}");
    assert_eq!(via(&format!("oci:{root}:{db}")), model_of(&b).unwrap());
    // One name for two manifests: said so, with the digests to choose by.
    let root = write(serde_json::json!([ma, mb]), "twice");
    let err = flatten_ref(&format!("oci:{root}:x"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("2 manifests are named \"x\"") && err.contains(&db),
        "{err}"
    );
    assert_eq!(via(&format!("oci:{root}:{da}")), model_of(&a).unwrap());
}
