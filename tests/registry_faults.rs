//! Registry faults a real server will not make on demand, from the fake registry in
//! `common/fake_registry.rs`: tokens expiring mid-pull and mid-push, 429 with `Retry-After`,
//! a stream cut mid-blob, a redirect to another host, wrong bytes, a stalled server, a failed
//! upload chunk. Each asserts the exact outcome through the `strata` binary.

mod common;

use common::fake_registry::{Fake, Faults, digest_of};
use common::{Comp, LayerBuilder, compress, config_json, strata_bin};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Three layers (one large enough to be cut and chunked), gzip'd, with their config.
fn image() -> (Vec<u8>, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let big: String = (0..200_000).map(|i| format!("{i:08}\n")).collect();
    let tars = vec![
        LayerBuilder::new()
            .dir("etc")
            .file("etc/a", "one")
            .file("big", &big)
            .build(),
        LayerBuilder::new()
            .whiteout("etc/a")
            .file("etc/b", "two")
            .build(),
        LayerBuilder::new().file("top", "three").build(),
    ];
    let blobs: Vec<Vec<u8>> = tars.iter().map(|t| compress(t, Comp::Gzip).0).collect();
    (config_json(&tars), tars, blobs)
}

fn strata(args: &[&str], cache: &std::path::Path) -> Output {
    Command::new(strata_bin())
        .args(args)
        .args([
            "--tls-verify=false",
            "--cache-dir",
            cache.to_str().unwrap(),
            "-q",
        ])
        .env("STRATA_LOG", "warn")
        .env_remove("DOCKER_CONFIG")
        .env("HOME", cache)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> Vec<u8> {
    assert!(
        o.status.success(),
        "strata failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout.clone()
}

fn err(o: &Output) -> String {
    assert!(!o.status.success(), "strata should have failed");
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert!(!e.contains("panicked"), "{e}");
    e
}

/// flatten of the fake's `app:1` equals flatten of the same layers on disk.
fn assert_flatten(fake: &Fake, tars: &[Vec<u8>], cache: &std::path::Path) {
    let got = ok(&strata(
        &[
            "flatten",
            &format!("docker://{}/app:1", fake.addr),
            "-o",
            "-",
        ],
        cache,
    ));
    assert_eq!(
        got,
        common::flatten_layers(tars).unwrap(),
        "flattened tree differs"
    );
}

#[test]
fn a_token_expiring_mid_pull_is_refreshed_and_the_pull_completes() {
    let (cfg, tars, blobs) = image();
    let fake = Fake::start(Faults {
        bearer: Some(Some(("u".into(), "p".into()))),
        token_uses: Some(3),
        ..Default::default()
    });
    fake.put_image("app", "1", &cfg, &blobs, true);
    let dir = tempfile::tempdir().unwrap();
    let got = ok(&strata(
        &[
            "flatten",
            &format!("docker://{}/app:1", fake.addr),
            "-o",
            "-",
            "--creds",
            "u:p",
        ],
        dir.path(),
    ));
    assert_eq!(got, common::flatten_layers(&tars).unwrap());
    // Manifest, config and three blobs on tokens good for three requests each: refreshed.
    assert!(fake.count("GET", "/token") >= 2, "{:?}", fake.log());
    let refused = fake
        .log()
        .iter()
        .filter(|l| l.status == 401 && l.authorization.is_some())
        .count();
    assert!(refused >= 1, "a request was refused with an expired token");
}

#[test]
fn a_wrong_password_is_one_line_naming_the_registry_and_the_user() {
    let (cfg, _, blobs) = image();
    let fake = Fake::start(Faults {
        bearer: Some(Some(("u".into(), "p".into()))),
        ..Default::default()
    });
    fake.put_image("app", "1", &cfg, &blobs, true);
    let dir = tempfile::tempdir().unwrap();
    let e = err(&strata(
        &[
            "inspect",
            &format!("docker://{}/app:1", fake.addr),
            "--creds",
            "u:wrong",
        ],
        dir.path(),
    ));
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains(&fake.addr) && e.contains("\"u\"") && e.contains("authentication failed"),
        "{e}"
    );
}

#[test]
fn a_token_expiring_mid_push_is_refreshed_and_the_upload_resumes() {
    let (cfg, tars, blobs) = image();
    let fake = Fake::start(Faults {
        bearer: Some(None),
        token_uses: Some(2),
        ..Default::default()
    });
    fake.put_image("app", "1", &cfg, &blobs, false);
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&strata(
        &[
            "squash",
            &format!("docker://{}/app:1", fake.addr),
            "-o",
            &format!("docker://{}/app:sq", fake.addr),
        ],
        dir.path(),
    ));
    let pushed = String::from_utf8(out).unwrap();
    let digest = {
        let st = fake.state.lock().unwrap();
        let (_, m) = st
            .manifests
            .get(&("app".to_string(), "sq".to_string()))
            .expect("manifest pushed");
        digest_of(m)
    };
    assert_eq!(
        pushed.trim(),
        format!("docker://{}/app:sq@{digest}", fake.addr)
    );
    assert!(
        fake.count("GET", "/token") >= 3,
        "tokens refreshed during the push"
    );
    // What was pushed flattens to the same tree.
    let got = ok(&strata(
        &[
            "flatten",
            &format!("docker://{}/app:sq", fake.addr),
            "-o",
            "-",
        ],
        dir.path(),
    ));
    assert_eq!(got, common::flatten_layers(&tars).unwrap());
}

#[test]
fn too_many_requests_waits_for_retry_after() {
    let (cfg, tars, blobs) = image();
    let fake = Fake::start(Faults {
        too_many: 1,
        ..Default::default()
    });
    fake.put_image("app", "1", &cfg, &blobs, true);
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    assert_flatten(&fake, &tars, dir.path());
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    let log = fake.log();
    let i = log
        .iter()
        .position(|l| l.status == 429)
        .expect("a 429 was sent");
    assert!(
        log[i + 1..]
            .iter()
            .any(|l| l.path == log[i].path && l.status == 200),
        "{log:?}"
    );
}

#[test]
fn a_stream_cut_mid_blob_resumes_with_range_and_verifies() {
    let (cfg, tars, blobs) = image();
    let fake = Fake::start(Faults {
        cut_at: Some(1000),
        ..Default::default()
    });
    fake.put_image("app", "1", &cfg, &blobs, true);
    let dir = tempfile::tempdir().unwrap();
    assert_flatten(&fake, &tars, dir.path());
    let ranges: Vec<_> = fake.log().into_iter().filter_map(|l| l.range).collect();
    assert!(ranges.iter().any(|r| r == "bytes=1000-"), "{ranges:?}");
    // Every blob is in the store under its digest, each fetched whole once plus its resume.
    for b in &blobs {
        let d = digest_of(b);
        let hex = d.strip_prefix("sha256:").unwrap();
        let kept = std::fs::read(dir.path().join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(&kept, b);
        let gets = fake.count("GET", &format!("/v2/app/blobs/{d}"));
        let want = if b.len() > 1000 { 2 } else { 1 };
        assert_eq!(gets, want, "{d}: the cut GET and the resumed one");
    }
}

#[test]
fn a_redirect_to_another_host_gets_no_authorization() {
    let (cfg, tars, blobs) = image();
    let storage = Fake::start(Faults::default());
    let fake = Fake::start(Faults {
        bearer: Some(Some(("u".into(), "p".into()))),
        redirect_to: Some(format!("http://{}", storage.addr)),
        ..Default::default()
    });
    fake.put_image("app", "1", &cfg, &blobs, true);
    storage.state.lock().unwrap().blobs = fake.state.lock().unwrap().blobs.clone();
    let dir = tempfile::tempdir().unwrap();
    let got = ok(&strata(
        &[
            "flatten",
            &format!("docker://{}/app:1", fake.addr),
            "-o",
            "-",
            "--creds",
            "u:p",
        ],
        dir.path(),
    ));
    assert_eq!(got, common::flatten_layers(&tars).unwrap());
    let log = storage.log();
    assert!(
        log.len() >= 4,
        "config and blobs came from storage: {log:?}"
    );
    assert!(log.iter().all(|l| l.authorization.is_none()), "{log:?}");
    assert!(fake.log().iter().any(|l| {
        l.authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer "))
    }));
}

#[test]
fn a_wrong_digest_is_an_error_and_nothing_is_kept() {
    let (cfg, tars, blobs) = image();
    let fake = Fake::start(Faults::default());
    // Uncompressed layers, so that a changed byte is still a good tar: only the digest can
    // tell (the config stays right).
    fake.put_image("app", "1", &cfg, &tars, true);
    let bad = digest_of(&tars[2]);
    {
        let mut st = fake.state.lock().unwrap();
        let b = st.blobs.get_mut(&bad).unwrap();
        let at = b.windows(5).position(|w| w == b"three").unwrap();
        b[at] = b'T';
    }
    let dir = tempfile::tempdir().unwrap();
    let e = err(&strata(
        &[
            "flatten",
            &format!("docker://{}/app:1", fake.addr),
            "-o",
            "-",
        ],
        dir.path(),
    ));
    assert!(e.contains("digest mismatch") && e.contains(&bad), "{e}");
    let hex = bad.trim_start_matches("sha256:").to_string();
    assert!(
        !dir.path().join("blobs/sha256").join(hex).exists(),
        "a bad blob is not kept"
    );
    // And a corrupt stream (the registry serving wrong bytes for every blob) the same.
    let fake = Fake::start(Faults {
        corrupt: true,
        ..Default::default()
    });
    fake.put_image("app", "1", &cfg, &blobs, true);
    let e = err(&strata(
        &[
            "flatten",
            &format!("docker://{}/app:1", fake.addr),
            "-o",
            "-",
        ],
        dir.path(),
    ));
    assert!(e.contains("digest"), "{e}");
}

#[test]
fn a_stalled_registry_fails_in_bounded_time() {
    let (cfg, _, blobs) = image();
    let fake = Fake::start(Faults {
        stall: Some(Duration::from_secs(30)),
        ..Default::default()
    });
    fake.put_image("app", "1", &cfg, &blobs, true);
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let e = err(&strata(
        &[
            "flatten",
            &format!("docker://{}/app:1", fake.addr),
            "-o",
            "-",
            "--timeout",
            "1",
            "--retry-times",
            "1",
        ],
        dir.path(),
    ));
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    assert!(e.to_lowercase().contains("timed out"), "{e}");
}

#[test]
fn a_failed_upload_chunk_resumes_from_what_the_registry_has() {
    let (cfg, tars, blobs) = image();
    let fake = Fake::start(Faults {
        fail_patch_once: true,
        ..Default::default()
    });
    fake.put_image("app", "1", &cfg, &blobs, true);
    let dir = tempfile::tempdir().unwrap();
    ok(&strata(
        &[
            "squash",
            &format!("docker://{}/app:1", fake.addr),
            "-o",
            &format!("docker://{}/app:sq", fake.addr),
        ],
        dir.path(),
    ));
    assert!(
        fake.count("GET", "/v2/app/blobs/uploads/") >= 1,
        "the upload's status was asked"
    );
    let got = ok(&strata(
        &[
            "flatten",
            &format!("docker://{}/app:sq", fake.addr),
            "-o",
            "-",
        ],
        dir.path(),
    ));
    assert_eq!(got, common::flatten_layers(&tars).unwrap());
}

#[test]
fn no_such_image_is_not_found_in_one_line() {
    let fake = Fake::start(Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let e = err(&strata(
        &["inspect", &format!("docker://{}/nope:1", fake.addr)],
        dir.path(),
    ));
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("no such image") && e.contains("MANIFEST_UNKNOWN"),
        "{e}"
    );
}

#[test]
fn every_blob_is_fetched_once_per_command_with_blobs_fetched_ahead() {
    let (cfg, tars, blobs) = image();
    let fake = Fake::start(Faults::default());
    fake.put_image("app", "1", &cfg, &blobs, true);
    for jobs in ["1", "4"] {
        let dir = tempfile::tempdir().unwrap();
        let before = fake.log().len();
        // squash reads the kept layers twice and the squashed ones once: one GET each.
        ok(&strata(
            &[
                "squash",
                &format!("docker://{}/app:1", fake.addr),
                "--last",
                "2",
                "-j",
                jobs,
                "-o",
                &format!("docker://{}/app:sq{jobs}", fake.addr),
            ],
            dir.path(),
        ));
        let got = ok(&strata(
            &[
                "flatten",
                &format!("docker://{}/app:sq{jobs}", fake.addr),
                "-j",
                jobs,
                "-o",
                "-",
            ],
            dir.path(),
        ));
        assert_eq!(got, common::flatten_layers(&tars).unwrap());
        let log = &fake.log()[before..];
        for b in &blobs {
            let path = format!("/v2/app/blobs/{}", digest_of(b));
            let gets = log
                .iter()
                .filter(|l| l.method == "GET" && l.path == path)
                .count();
            assert_eq!(gets, 1, "-j {jobs}: {path} fetched {gets} times");
        }
    }
}

#[test]
fn a_non_distributable_layer_comes_from_its_urls_and_its_descriptor_is_pushed_as_is() {
    let (cfg, tars, blobs) = image();
    let elsewhere = Fake::start(Faults::default());
    let fake = Fake::start(Faults {
        bearer: Some(Some(("u".into(), "p".into()))),
        ..Default::default()
    });
    let foreign = &blobs[0];
    let fd = digest_of(foreign);
    elsewhere
        .state
        .lock()
        .unwrap()
        .blobs
        .insert(fd.clone(), foreign.clone());
    let manifest = |urls: serde_json::Value| {
        let mut layers = vec![serde_json::json!({
            "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "digest": fd, "size": foreign.len(), "urls": urls,
        })];
        for b in &blobs[1..] {
            layers.push(serde_json::json!({
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "digest": digest_of(b), "size": b.len(),
            }));
        }
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": digest_of(&cfg), "size": cfg.len()},
            "layers": layers,
        }))
        .unwrap()
    };
    {
        let mut st = fake.state.lock().unwrap();
        st.blobs.insert(digest_of(&cfg), cfg.clone());
        for b in &blobs[1..] {
            st.blobs.insert(digest_of(b), b.clone());
        }
        let mt = "application/vnd.docker.distribution.manifest.v2+json".to_string();
        let with = manifest(serde_json::json!([format!(
            "http://{}/b/{fd}",
            elsewhere.addr
        )]));
        st.manifests
            .insert(("app".into(), "1".into()), (mt.clone(), with));
        st.manifests.insert(
            ("app".into(), "nourls".into()),
            (mt, manifest(serde_json::json!([]))),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let img = format!("docker://{}/app:1", fake.addr);
    let got = ok(&strata(
        &["flatten", &img, "--creds", "u:p", "-o", "-"],
        dir.path(),
    ));
    assert_eq!(got, common::flatten_layers(&tars).unwrap());
    assert!(
        elsewhere.log().iter().all(|l| l.authorization.is_none()),
        "no credentials to a layer's url"
    );
    assert_eq!(elsewhere.count("GET", &format!("/b/{fd}")), 1);
    // Pushed elsewhere in the registry: the descriptor (urls and all) is kept, the blob not sent.
    ok(&strata(
        &[
            "copy",
            &img,
            &format!("docker://{}/other:1", fake.addr),
            "--creds",
            "u:p",
        ],
        dir.path(),
    ));
    let st = fake.state.lock().unwrap();
    let (_, m) = st
        .manifests
        .get(&("other".to_string(), "1".to_string()))
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(m).unwrap();
    assert_eq!(
        m["layers"][0]["urls"][0],
        format!("http://{}/b/{fd}", elsewhere.addr)
    );
    assert!(
        !st.blobs.contains_key(&fd),
        "the registry never got the foreign blob"
    );
    drop(st);
    let e = err(&strata(
        &[
            "flatten",
            &format!("docker://{}/app:nourls", fake.addr),
            "--creds",
            "u:p",
            "-o",
            "-",
        ],
        dir.path(),
    ));
    assert!(
        e.contains("non-distributable") && e.contains("no urls"),
        "{e}"
    );
}

#[test]
fn a_copy_of_a_corrupt_blob_into_a_layout_fails_and_leaves_nothing() {
    let (cfg, _, blobs) = image();
    let fake = Fake::start(Faults::default());
    fake.put_image("app", "1", &cfg, &blobs, false);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("layout");
    let src = format!("docker://{}/app:1", fake.addr);
    let dst = format!("oci:{}", out.display());
    assert!(ok(&strata(&["copy", &src, &dst], dir.path())).is_empty());
    assert!(out.join("index.json").is_file());
    std::fs::remove_dir_all(&out).unwrap();
    // One layer's bytes changed in the registry (copied as stored: only the digest can tell).
    let bad = digest_of(&blobs[0]);
    {
        let mut st = fake.state.lock().unwrap();
        let b = st.blobs.get_mut(&bad).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 1;
    }
    let e = err(&strata(&["copy", &src, &dst, "--no-cache"], dir.path()));
    assert!(e.contains("digest mismatch") && e.contains(&bad), "{e}");
    assert!(!out.exists(), "no layout is left behind");
}

#[test]
fn an_identity_token_is_exchanged_by_oauth2_post() {
    use base64::Engine;
    let (cfg, tars, blobs) = image();
    let fake = Fake::start(Faults {
        bearer: Some(Some(("nobody".into(), "never".into()))),
        refresh_token: Some("refresh-me".into()),
        ..Default::default()
    });
    fake.put_image("app", "1", &cfg, &blobs, true);
    let dir = tempfile::tempdir().unwrap();
    let authfile = dir.path().join("auth.json");
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:");
    std::fs::write(
        &authfile,
        serde_json::json!({"auths": {fake.addr.clone(): {"auth": auth, "identitytoken": "refresh-me"}}}).to_string(),
    )
    .unwrap();
    let img = format!("docker://{}/app:1", fake.addr);
    let got = ok(&strata(
        &[
            "flatten",
            &img,
            "--authfile",
            authfile.to_str().unwrap(),
            "-o",
            "-",
        ],
        dir.path(),
    ));
    assert_eq!(got, common::flatten_layers(&tars).unwrap());
    assert!(fake.count("POST", "/token") >= 1, "{:?}", fake.log());
    assert_eq!(
        fake.count("GET", "/token"),
        0,
        "no Basic exchange with an identity token"
    );
    // A revoked identity token: one line, exit 1.
    fake.state.lock().unwrap().faults.refresh_token = Some("another".into());
    let e = err(&strata(
        &["inspect", &img, "--authfile", authfile.to_str().unwrap()],
        dir.path(),
    ));
    assert!(
        e.contains("authentication failed") && e.contains("alice"),
        "{e}"
    );
}

#[test]
fn schema_1_artifacts_and_encrypted_layers_are_clear_errors() {
    let (cfg, _, blobs) = image();
    let fake = Fake::start(Faults::default());
    fake.put_image("app", "1", &cfg, &blobs, false);
    let put = |tag: &str, mt: &str, m: serde_json::Value| {
        fake.state.lock().unwrap().manifests.insert(
            ("app".into(), tag.into()),
            (mt.into(), serde_json::to_vec(&m).unwrap()),
        );
    };
    put(
        "old",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        serde_json::json!({"schemaVersion": 1, "name": "app", "tag": "old", "fsLayers": []}),
    );
    let oci = "application/vnd.oci.image.manifest.v1+json";
    put(
        "chart",
        oci,
        serde_json::json!({"schemaVersion": 2, "mediaType": oci,
            "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": digest_of(&cfg), "size": cfg.len()},
            "layers": []}),
    );
    put(
        "secret",
        oci,
        serde_json::json!({"schemaVersion": 2, "mediaType": oci,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(&cfg), "size": cfg.len()},
            "layers": blobs.iter().map(|b| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip+encrypted", "digest": digest_of(b), "size": b.len()})).collect::<Vec<_>>()}),
    );
    let dir = tempfile::tempdir().unwrap();
    for (tag, want) in [
        ("old", "schema 1"),
        ("chart", "artifact"),
        ("secret", "encrypted"),
    ] {
        let e = err(&strata(
            &["inspect", &format!("docker://{}/app:{tag}", fake.addr)],
            dir.path(),
        ));
        assert!(e.contains(want), "{tag}: {e}");
    }
}

#[test]
fn a_copy_within_a_registry_mounts_blobs_instead_of_sending_them() {
    let (cfg, _, blobs) = image();
    let fake = Fake::start(Faults::default());
    fake.put_image("app", "1", &cfg, &blobs, true);
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&strata(
        &[
            "copy",
            &format!("docker://{}/app:1", fake.addr),
            &format!("docker://{}/team/copy:2", fake.addr),
        ],
        dir.path(),
    ));
    assert!(String::from_utf8_lossy(&out).contains("/team/copy:2@sha256:"));
    let log = fake.log();
    let mounts = log
        .iter()
        .filter(|l| l.method == "POST" && l.path.contains("mount=") && l.path.contains("from=app"))
        .count();
    assert_eq!(mounts, blobs.len(), "{log:?}");
    // Nothing was read from the source but its manifest and config.
    for b in &blobs {
        assert_eq!(
            fake.count("GET", &format!("/v2/app/blobs/{}", digest_of(b))),
            0
        );
    }
}
