//! End-to-end against a real registry: Debian's `docker-registry` (distribution 2.8) started
//! here on 127.0.0.1 — plain, with htpasswd auth, with token auth from a token server in this
//! file, and with TLS. skopeo pushes the fixtures and reads back what strata pushes; Docker
//! loads and runs an image strata squashed into the registry.
//!
//! Without docker-registry/skopeo/htpasswd/openssl the tests are skipped locally; under `CI`
//! they fail instead (CI must run them).

mod common;

use common::registry::{Auth, Registry, available, run};
use common::{Comp, LayerBuilder, strata_bin, write_oci_dir};
use proptest::strategy::{Strategy, ValueTree};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn strata_env(args: &[&str], home: &Path) -> Command {
    let mut c = Command::new(strata_bin());
    c.args(args)
        .arg("-q")
        .env("HOME", home)
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env("STRATA_LOG", "warn");
    c
}

fn strata(args: &[&str], home: &Path) -> Output {
    strata_env(args, home).output().unwrap()
}

fn ok(o: Output) -> Vec<u8> {
    assert!(
        o.status.success(),
        "strata failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

fn fail(o: Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let e = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    e
}

/// The merge-rule fixtures: whiteouts, opaque directories, recreation, type changes,
/// hardlinks and symlinks, and some random stacks of the property tests.
fn fixtures() -> Vec<Vec<Vec<u8>>> {
    let mut v = vec![
        vec![
            LayerBuilder::new()
                .dir("a")
                .file("a/x", "1")
                .file("a/y", "2")
                .file("keep", "k")
                .build(),
            LayerBuilder::new().whiteout("a/x").file("a/z", "3").build(),
        ],
        vec![
            LayerBuilder::new()
                .dir("d")
                .file("d/old", "o")
                .dir("d/sub")
                .file("d/sub/f", "f")
                .build(),
            LayerBuilder::new().file("d/new", "n").opaque("d").build(),
        ],
        vec![
            LayerBuilder::new().dir("x").file("x/old", "o").build(),
            LayerBuilder::new()
                .whiteout("x")
                .dir("x")
                .file("x/new", "n")
                .build(),
        ],
        vec![
            LayerBuilder::new()
                .dir("p")
                .file("p/a", "a")
                .file("f", "x")
                .symlink("s", "f")
                .build(),
            LayerBuilder::new()
                .file("p", "now a file")
                .dir("f")
                .symlink("s2", "/elsewhere")
                .build(),
        ],
        vec![
            LayerBuilder::new()
                .file("t", "target")
                .hardlink("h", "t")
                .build(),
            LayerBuilder::new().whiteout("t").file("u", "u").build(),
        ],
    ];
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..6 {
        let stack = common::stacks::stack()
            .new_tree(&mut runner)
            .unwrap()
            .current();
        v.push(common::stacks::tars(&stack));
    }
    v
}

#[test]
fn flatten_from_the_registry_equals_flatten_on_disk_for_every_fixture() {
    if !available() {
        return;
    }
    let reg = Registry::start(Auth::None, false);
    let dir = tempfile::tempdir().unwrap();
    for (i, layers) in fixtures().iter().enumerate() {
        let oci = write_oci_dir(&dir.path().join(format!("f{i}")), layers, Comp::Gzip);
        let src = format!("oci:{}", oci.display());
        // Docker schema 2 and OCI manifests, alternately.
        reg.push(&src, &format!("fix/{i}:t"), i % 2 == 1, None);
        let want = common::flatten_ref(&src);
        let out = strata(
            &[
                "flatten",
                &format!("docker://{}/fix/{i}:t", reg.addr),
                "--tls-verify=false",
                "--no-cache",
                "-o",
                "-",
            ],
            dir.path(),
        );
        match want {
            Ok(want) => assert!(
                ok(out) == want,
                "fixture {i}: the registry's image flattens differently"
            ),
            // A stack the merge refuses on disk is refused from the registry too.
            Err(e) => assert!(fail(out).contains(&e.to_string()), "fixture {i}: {e}"),
        }
    }
}

/// The digests skopeo sees: (manifest digest, layer digests).
fn skopeo_inspect(reference: &str) -> (String, Vec<String>) {
    let out = run(Command::new("skopeo").args(["inspect", "--tls-verify=false", reference]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let layers = v["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    (v["Digest"].as_str().unwrap().to_string(), layers)
}

fn config_digest(reference: &str, home: &Path) -> (String, Vec<String>) {
    let out = ok(strata(
        &["inspect", reference, "--json", "--tls-verify=false"],
        home,
    ));
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let ids = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["diff_id"].as_str().unwrap_or_default().to_string())
        .collect();
    (
        v["config_digest"].as_str().unwrap_or_default().to_string(),
        ids,
    )
}

#[test]
fn squash_pushed_to_the_registry_reads_back_with_skopeo() {
    if !available() {
        return;
    }
    let reg = Registry::start(Auth::None, false);
    let dir = tempfile::tempdir().unwrap();
    let layers = &fixtures()[1];
    let oci = write_oci_dir(&dir.path().join("src"), layers, Comp::Gzip);
    let src = format!("oci:{}", oci.display());
    for (fmt, tag) in [("docker-archive", "sq-docker"), ("oci", "sq-oci")] {
        let dst = format!("docker://{}/app:{tag}", reg.addr);
        let out = ok(strata(
            &[
                "squash",
                &src,
                "--format",
                fmt,
                "-o",
                &dst,
                "--tls-verify=false",
            ],
            dir.path(),
        ));
        let printed = String::from_utf8(out).unwrap();
        let (digest, layer_digests) = skopeo_inspect(&dst);
        assert_eq!(
            printed.trim(),
            format!("{dst}@{digest}"),
            "the push names what it wrote"
        );
        assert_eq!(layer_digests.len(), 1);
        let back = dir.path().join(format!("back-{tag}"));
        reg.pull(
            &format!("app:{tag}"),
            &format!("oci:{}", back.display()),
            None,
        );
        let got = common::flatten_ref(&format!("oci:{}", back.display())).unwrap();
        assert!(
            got == common::flatten_ref(&src).unwrap(),
            "{fmt}: the squashed tree differs"
        );
    }
    // The Docker manifest really is one, and zstd needs OCI.
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/app:sq-docker", reg.addr),
    ]));
    assert!(
        raw.contains("application/vnd.docker.distribution.manifest.v2+json"),
        "{raw}"
    );
    assert!(
        raw.contains("application/vnd.docker.image.rootfs.diff.tar.gzip"),
        "{raw}"
    );
    let e = fail(strata(
        &[
            "squash",
            &src,
            "--compress",
            "zstd",
            "-o",
            &format!("docker://{}/app:z", reg.addr),
            "--tls-verify=false",
        ],
        dir.path(),
    ));
    assert!(e.contains("--format oci"), "{e}");
    ok(strata(
        &[
            "squash",
            &src,
            "--format",
            "oci",
            "--compress",
            "zstd",
            "-o",
            &format!("docker://{}/app:z", reg.addr),
            "--tls-verify=false",
        ],
        dir.path(),
    ));
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/app:z", reg.addr),
    ]));
    assert!(raw.contains("tar+zstd"), "{raw}");
}

#[test]
fn copy_between_transports_keeps_digests() {
    if !available() {
        return;
    }
    let reg = Registry::start(Auth::None, false);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let layers = &fixtures()[0];
    let oci = write_oci_dir(&dir.path().join("src"), layers, Comp::Gzip);
    let src = format!("oci:{}", oci.display());
    let (cfg, ids) = config_digest(&src, home);
    let r = |p: &str| format!("docker://{}/{p}", reg.addr);
    let d = |p: &str| dir.path().join(p).display().to_string();
    let hops = [
        (src.clone(), r("copy/a:1")),
        (r("copy/a:1"), r("copy/b:1")),
        (r("copy/b:1"), format!("oci:{}", d("layout"))),
        (
            format!("oci:{}", d("layout")),
            format!("oci-archive:{}", d("x.oci.tar")),
        ),
        (
            format!("oci-archive:{}", d("x.oci.tar")),
            format!("docker-archive:{}", d("x.tar")),
        ),
        (format!("docker-archive:{}", d("x.tar")), r("copy/c:1")),
        (r("copy/c:1"), r("copy/d:1")),
    ];
    for (from, to) in &hops {
        ok(strata(&["copy", from, to, "--tls-verify=false"], home));
        let (c, i) = config_digest(to, home);
        assert_eq!(
            (&c, &i),
            (&cfg, &ids),
            "{from} → {to}: config and diff_ids kept"
        );
    }
    // Registry to registry: the blobs as stored, by mount.
    let (_, a) = skopeo_inspect(&r("copy/a:1"));
    let (_, b) = skopeo_inspect(&r("copy/b:1"));
    assert_eq!(a, b, "registry → registry keeps the blobs");
    let (m_a, _) = skopeo_inspect(&r("copy/a:1"));
    let (m_b, _) = skopeo_inspect(&r("copy/b:1"));
    assert_eq!(m_a, m_b, "and so the manifest");
    // docker-archive's uncompressed layers go up compressed, diff_ids kept (checked above).
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &r("copy/c:1"),
    ]));
    assert!(raw.contains("tar.gzip"), "{raw}");
}

/// An OCI layout holding an index of two platforms and an attestation manifest.
fn multi_platform(dir: &Path) -> PathBuf {
    use common::sha256_hex;
    let root = dir.join("multi");
    let blobs = root.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let h = sha256_hex(b);
        std::fs::write(blobs.join(&h), b).unwrap();
        format!("sha256:{h}")
    };
    let mut descs = Vec::new();
    for (arch, content) in [
        ("amd64", "I am amd64"),
        ("arm64", "I am arm64"),
        ("unknown", "attestation"),
    ] {
        let tar = LayerBuilder::new().file("arch", content).build();
        let (gz, mt) = common::compress(&tar, Comp::Gzip);
        let ld = put(&gz);
        let cfg = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": if arch == "unknown" { "unknown" } else { "linux" },
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&tar))]},
            "config": {},
        }))
        .unwrap();
        let cd = put(&cfg);
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
            "layers": [{"mediaType": mt, "digest": ld, "size": gz.len()}],
        }))
        .unwrap();
        let md = put(&m);
        let os = if arch == "unknown" {
            "unknown"
        } else {
            "linux"
        };
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": m.len(),
            "platform": {"os": os, "architecture": arch},
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": descs,
    }))
    .unwrap();
    let id = put(&index);
    std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        root.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": id, "size": index.len(),
                "annotations": {"org.opencontainers.image.ref.name": "multi"}}],
        }))
        .unwrap(),
    )
    .unwrap();
    root
}

/// [`multi_platform`]'s index pushed whole by skopeo as `multi:1`: its reference.
fn push_multi_platform(dir: &Path, reg: &Registry) -> String {
    let root = multi_platform(dir);
    let img = format!("docker://{}/multi:1", reg.addr);
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--insecure-policy",
        "--dest-tls-verify=false",
        "-q",
        &format!("oci:{}:multi", root.display()),
        &img,
    ]));
    img
}

#[test]
fn a_multi_platform_index_is_narrowed_by_platform() {
    if !available() {
        return;
    }
    let reg = Registry::start(Auth::None, false);
    let dir = tempfile::tempdir().unwrap();
    let img = push_multi_platform(dir.path(), &reg);
    for arch in ["amd64", "arm64"] {
        let plat = format!("linux/{arch}");
        let tar = ok(strata(
            &[
                "flatten",
                &img,
                "--platform",
                &plat,
                "--tls-verify=false",
                "-o",
                "-",
            ],
            dir.path(),
        ));
        let text = String::from_utf8_lossy(&tar);
        assert!(text.contains(&format!("I am {arch}")), "{arch}");
    }
    let e = fail(strata(
        &[
            "inspect",
            &img,
            "--platform",
            "linux/s390x",
            "--tls-verify=false",
        ],
        dir.path(),
    ));
    assert!(
        e.contains("linux/amd64") && e.contains("linux/arm64"),
        "{e}"
    );
    assert!(
        !e.contains("unknown"),
        "attestations are not platforms: {e}"
    );
}

#[test]
fn htpasswd_auth_takes_credentials_from_where_users_keep_them() {
    if !available() {
        return;
    }
    let reg = Registry::start(Auth::Htpasswd("alice", "s3cret"), false);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let oci = write_oci_dir(&dir.path().join("src"), &fixtures()[0], Comp::Gzip);
    reg.push(
        &format!("oci:{}", oci.display()),
        "priv/app:1",
        false,
        Some("alice:s3cret"),
    );
    let img = format!("docker://{}/priv/app:1", reg.addr);
    let inspect = |extra: &[&str], env: &[(&str, &Path)]| {
        let mut args = vec!["inspect", img.as_str(), "--tls-verify=false"];
        args.extend_from_slice(extra);
        let mut c = strata_env(&args, home);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let e = fail(inspect(&[], &[]));
    assert!(
        e.contains(&reg.addr) && e.contains("authentication required"),
        "{e}"
    );
    let e = fail(inspect(&["--creds", "alice:wrong"], &[]));
    assert!(
        e.contains(&reg.addr) && e.contains("\"alice\"") && e.contains("authentication failed"),
        "{e}"
    );
    ok(inspect(&["--creds", "alice:s3cret"], &[]));
    // Auth files: Docker's config.json, containers' auth.json, --authfile.
    let auth = |user: &str, pass: &str| {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        serde_json::json!({"auths": {reg.addr.clone(): {"auth": b}}}).to_string()
    };
    let docker_cfg = dir.path().join("docker");
    std::fs::create_dir(&docker_cfg).unwrap();
    std::fs::write(docker_cfg.join("config.json"), auth("alice", "s3cret")).unwrap();
    ok(inspect(&[], &[("DOCKER_CONFIG", &docker_cfg)]));
    let authfile = dir.path().join("auth.json");
    std::fs::write(&authfile, auth("alice", "s3cret")).unwrap();
    ok(inspect(&["--authfile", authfile.to_str().unwrap()], &[]));
    ok(inspect(&[], &[("REGISTRY_AUTH_FILE", &authfile)]));
    let runtime = dir.path().join("run");
    std::fs::create_dir_all(runtime.join("containers")).unwrap();
    std::fs::write(
        runtime.join("containers/auth.json"),
        auth("alice", "s3cret"),
    )
    .unwrap();
    ok(inspect(&[], &[("XDG_RUNTIME_DIR", &runtime)]));
    // A wrong entry in --authfile is used (it is the only file read) and fails.
    std::fs::write(&authfile, auth("alice", "nope")).unwrap();
    fail(inspect(
        &["--authfile", authfile.to_str().unwrap()],
        &[("DOCKER_CONFIG", &docker_cfg)],
    ));
    // Helpers: credHelpers for the host wins over credsStore.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for (name, pass) in [("good", "s3cret"), ("bad", "wrong")] {
        let p = bin.join(format!("docker-credential-{name}"));
        std::fs::write(
            &p,
            format!("#!/bin/sh\nread server\necho '{{\"ServerURL\":\"'$server'\",\"Username\":\"alice\",\"Secret\":\"{pass}\"}}'\n"),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let helpers = dir.path().join("helpers");
    std::fs::create_dir(&helpers).unwrap();
    std::fs::write(
        helpers.join("config.json"),
        serde_json::json!({"credsStore": "bad", "credHelpers": {reg.addr.clone(): "good"}})
            .to_string(),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = strata_env(&["inspect", &img, "--tls-verify=false"], home)
        .env("DOCKER_CONFIG", &helpers)
        .env("PATH", &path)
        .output()
        .unwrap();
    ok(o);
    // And pushing with credentials works too.
    let out = ok(strata(
        &[
            "copy",
            &img,
            &format!("docker://{}/priv/copy:1", reg.addr),
            "--creds",
            "alice:s3cret",
            "--tls-verify=false",
        ],
        home,
    ));
    assert!(
        String::from_utf8_lossy(&out).contains("priv/copy:1@sha256:"),
        "the push names what it wrote"
    );
}

#[test]
fn tls_with_a_cert_dir() {
    if !available() {
        return;
    }
    let reg = Registry::start(Auth::None, true);
    let certs = reg.certs.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let oci = write_oci_dir(&dir.path().join("src"), &fixtures()[0], Comp::Gzip);
    reg.push(&format!("oci:{}", oci.display()), "tls/app:1", false, None);
    let img = format!("docker://{}/tls/app:1", reg.addr);
    let e = fail(strata(&["inspect", &img], dir.path()));
    assert!(
        e.contains("--cert-dir") && e.to_lowercase().contains("certificate"),
        "{e}"
    );
    let with_ca = ok(strata(
        &[
            "flatten",
            &img,
            "--cert-dir",
            certs.to_str().unwrap(),
            "-o",
            "-",
        ],
        dir.path(),
    ));
    assert!(with_ca == common::flatten_ref(&format!("oci:{}", oci.display())).unwrap());
    ok(strata(&["inspect", &img, "--tls-verify=false"], dir.path()));
    // Pushing over verified TLS.
    ok(strata(
        &[
            "squash",
            &img,
            "-o",
            &format!("docker://{}/tls/sq:1", reg.addr),
            "--cert-dir",
            certs.to_str().unwrap(),
        ],
        dir.path(),
    ));
}

/// A token server for distribution's token auth: RS256 JWTs with an `x5c` chain, granting
/// what is asked to `alice:s3cret`, refusing anything else.
struct TokenServer {
    realm: String,
    cert: PathBuf,
    _dir: tempfile::TempDir,
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl TokenServer {
    fn start() -> TokenServer {
        use std::io::{BufRead, BufReader, Write};
        let dir = tempfile::tempdir().unwrap();
        let p = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
        run(Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=token",
            "-keyout",
            &p("key.pem"),
            "-out",
            &p("cert.pem"),
        ]));
        run(Command::new("openssl").args([
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            &p("key.pem"),
            "-outform",
            "DER",
            "-out",
            &p("key.der"),
        ]));
        run(Command::new("openssl").args([
            "x509",
            "-in",
            &p("cert.pem"),
            "-outform",
            "DER",
            "-out",
            &p("cert.der"),
        ]));
        let key =
            ring::signature::RsaKeyPair::from_pkcs8(&std::fs::read(p("key.der")).unwrap()).unwrap();
        let x5c = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(p("cert.der")).unwrap())
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap_or(0);
                let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut authorized = false;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    use base64::Engine;
                    let good = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
                    if h.to_ascii_lowercase().starts_with("authorization:") && h.contains(&good) {
                        authorized = true;
                    }
                }
                let query = target.split_once('?').map(|x| x.1).unwrap_or("");
                let access: Vec<serde_json::Value> = query
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("scope="))
                    .map(|s| s.replace("%3A", ":").replace("%2C", ",").replace("%2F", "/"))
                    .filter_map(|s| {
                        let mut it = s.splitn(3, ':');
                        let (t, n, a) = (it.next()?, it.next()?, it.next()?);
                        Some(serde_json::json!({"type": t, "name": n, "actions": a.split(',').collect::<Vec<_>>()}))
                    })
                    .collect();
                let (status, body) = if authorized {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
                    let claims = serde_json::json!({
                        "iss": "strata-test-issuer", "sub": "alice", "aud": "strata-test",
                        "exp": now + 300, "nbf": now - 10, "iat": now - 10, "jti": format!("{now}-{}", access.len()),
                        "access": access,
                    });
                    let msg = format!(
                        "{}.{}",
                        b64url(header.to_string().as_bytes()),
                        b64url(claims.to_string().as_bytes())
                    );
                    let mut sig = vec![0; key.public().modulus_len()];
                    key.sign(
                        &ring::signature::RSA_PKCS1_SHA256,
                        &ring::rand::SystemRandom::new(),
                        msg.as_bytes(),
                        &mut sig,
                    )
                    .unwrap();
                    let token = format!("{msg}.{}", b64url(&sig));
                    (
                        200,
                        serde_json::json!({"token": token, "expires_in": 300}).to_string(),
                    )
                } else {
                    (401, "{}".to_string())
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer {
            realm,
            cert: dir.path().join("cert.pem"),
            _dir: dir,
        }
    }
}

/// A plain-HTTP registry with token auth from a [`TokenServer`] of its own.
fn token_registry() -> (TokenServer, Registry) {
    let tokens = TokenServer::start();
    let reg = Registry::start(
        Auth::Token {
            realm: tokens.realm.clone(),
            cert: tokens.cert.clone(),
        },
        false,
    );
    (tokens, reg)
}

/// `c` with no proxy from this environment: a test sets the ones it means.
fn without_proxies(c: &mut Command) -> &mut Command {
    for v in [
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        c.env_remove(v);
    }
    c
}

#[test]
fn token_auth_against_the_real_registry() {
    if !available() {
        return;
    }
    let (_tokens, reg) = token_registry();
    let dir = tempfile::tempdir().unwrap();
    let oci = write_oci_dir(&dir.path().join("src"), &fixtures()[2], Comp::Gzip);
    let src = format!("oci:{}", oci.display());
    // strata pushes (skopeo would need the same token dance).
    let dst = format!("docker://{}/tok/app:1", reg.addr);
    let e = fail(strata(
        &["copy", &src, &dst, "--tls-verify=false"],
        dir.path(),
    ));
    assert!(
        e.contains("token server") || e.contains("authentication"),
        "{e}"
    );
    ok(strata(
        &[
            "copy",
            &src,
            &dst,
            "--tls-verify=false",
            "--creds",
            "alice:s3cret",
        ],
        dir.path(),
    ));
    let got = ok(strata(
        &[
            "flatten",
            &dst,
            "--tls-verify=false",
            "--creds",
            "alice:s3cret",
            "-o",
            "-",
        ],
        dir.path(),
    ));
    assert!(got == common::flatten_ref(&src).unwrap());
    let e = fail(strata(
        &[
            "inspect",
            &dst,
            "--tls-verify=false",
            "--creds",
            "alice:bad",
        ],
        dir.path(),
    ));
    assert!(
        e.contains("\"alice\"") && e.contains("authentication failed"),
        "{e}"
    );
    // skopeo reads back what strata pushed through the same token server.
    reg.pull(
        "tok/app:1",
        &format!("oci:{}", dir.path().join("back").display()),
        Some("alice:s3cret"),
    );
}

#[test]
fn docker_loads_and_runs_what_strata_squashed_into_the_registry() {
    if !available() {
        return;
    }
    let Some(host) = common::docker::engine() else {
        return;
    };
    let layers = vec![
        common::docker::busybox_layer(&["sh", "cat", "test", "echo"]),
        LayerBuilder::new()
            .file("msg", "from the registry\n")
            .file("gone", "x")
            .build(),
        LayerBuilder::new().whiteout("gone").build(),
    ];
    let reg = Registry::start(Auth::None, false);
    let dir = tempfile::tempdir().unwrap();
    let oci = write_oci_dir(&dir.path().join("src"), &layers, Comp::Gzip);
    reg.push(&format!("oci:{}", oci.display()), "run/app:1", false, None);
    let src = format!("docker://{}/run/app:1", reg.addr);
    let sq = format!("docker://{}/run/app:sq", reg.addr);
    ok(strata(
        &[
            "squash",
            &src,
            "--last",
            "2",
            "-o",
            &sq,
            "--tls-verify=false",
        ],
        dir.path(),
    ));
    let tar = dir.path().join("back.tar");
    let tag = format!("{}-reg:sq", common::docker::RUN);
    reg.pull(
        "run/app:sq",
        &format!("docker-archive:{}:{tag}", tar.display()),
        None,
    );
    let docker = |args: &[&str]| common::docker::docker(&host, args);
    docker(&["load", "-i", tar.to_str().unwrap()]);
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &tag,
        "sh",
        "-c",
        "cat /msg; test -e /gone || echo gone-is-gone",
    ]);
    docker(&["rmi", "-f", &tag]);
    assert_eq!(out, "from the registry\ngone-is-gone\n");
}

#[test]
fn every_command_reads_docker_references_as_it_reads_the_layout() {
    if !available() {
        return;
    }
    let reg = Registry::start(Auth::None, false);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let layers = &fixtures()[0];
    let oci = write_oci_dir(&dir.path().join("src"), layers, Comp::Gzip);
    let local = format!("oci:{}", oci.display());
    reg.push(&local, "cmds/app:1", true, None);
    let remote = format!("docker://{}/cmds/app:1", reg.addr);
    let same = |args: &[&str]| {
        let run = |img: &str| {
            let a: Vec<&str> = args
                .iter()
                .map(|a| if *a == "IMG" { img } else { a })
                .collect();
            let mut a = a.clone();
            a.extend(["--tls-verify=false", "--no-cache"]);
            ok(strata(&a, home))
        };
        let (l, r) = (run(&local), run(&remote));
        let norm = |b: Vec<u8>| {
            String::from_utf8_lossy(&b)
                .replace(&remote, "IMG")
                .replace(&local, "IMG")
        };
        assert_eq!(norm(l), norm(r), "{args:?}");
    };
    same(&["files", "IMG", "--json"]);
    same(&["files", "IMG", "--layer", "1"]);
    same(&["diff", "IMG", "--json"]);
    same(&["waste", "IMG", "--json"]);
    // Image against image, across transports.
    let out = ok(strata(
        &["diff", &local, &remote, "--tls-verify=false"],
        home,
    ));
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("0 added (0 bytes), 0 removed (0 bytes), 0 modified"),
        "{text}"
    );
    // extract: the same tree on disk.
    for (img, to) in [(&local, "x-local"), (&remote, "x-remote")] {
        ok(strata(
            &[
                "extract",
                img,
                dir.path().join(to).to_str().unwrap(),
                "--tls-verify=false",
                "--no-same-owner",
            ],
            home,
        ));
    }
    let listing = |d: &str| {
        run(Command::new("sh").args([
            "-c",
            &format!(
                "cd {} && find . | sort && cat $(find . -type f | sort)",
                dir.path().join(d).display()
            ),
        ]))
    };
    assert_eq!(listing("x-local"), listing("x-remote"));
    // build --from a registry image, pushed to the registry.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("app")).unwrap();
    std::fs::write(tree.join("app/hello"), "hello\n").unwrap();
    let built = format!("docker://{}/cmds/built:1", reg.addr);
    let src = format!("{}:/", tree.display());
    ok(strata(
        &[
            "build",
            "--from",
            &remote,
            "--layer",
            &src,
            "-o",
            &built,
            "--tls-verify=false",
        ],
        home,
    ));
    let (_, digests) = skopeo_inspect(&built);
    let (_, base) = skopeo_inspect(&remote);
    assert_eq!(
        &digests[..base.len()],
        &base[..],
        "the base's layers are kept as they are"
    );
    assert_eq!(digests.len(), base.len() + 1);
    let flat = ok(strata(
        &["flatten", &built, "--tls-verify=false", "-o", "-"],
        home,
    ));
    assert!(String::from_utf8_lossy(&flat).contains("app/hello"));
}

#[test]
fn a_copy_that_changes_nothing_keeps_the_manifest_digest() {
    if !available() {
        return;
    }
    let reg = Registry::start(Auth::None, false);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let oci = write_oci_dir(&dir.path().join("src"), &fixtures()[3], Comp::Gzip);
    let r = |p: &str| format!("docker://{}/{p}", reg.addr);
    let manifest_of = |reference: &str| -> String {
        let v: serde_json::Value = serde_json::from_slice(&ok(strata(
            &["inspect", reference, "--json", "--tls-verify=false"],
            home,
        )))
        .unwrap();
        v["manifest_digest"].as_str().unwrap().to_string()
    };
    for (oci_format, repo) in [(false, "keep/docker"), (true, "keep/oci")] {
        // skopeo writes these manifests, not strata: their bytes are skopeo's.
        reg.push(
            &format!("oci:{}", oci.display()),
            &format!("{repo}:1"),
            oci_format,
            None,
        );
        let (want, _) = skopeo_inspect(&r(&format!("{repo}:1")));
        ok(strata(
            &[
                "copy",
                &r(&format!("{repo}:1")),
                &r(&format!("{repo}-copy:1")),
                "--tls-verify=false",
            ],
            home,
        ));
        assert_eq!(
            skopeo_inspect(&r(&format!("{repo}-copy:1"))).0,
            want,
            "{repo}: registry → registry"
        );
        let layout = dir.path().join(repo.replace('/', "-"));
        ok(strata(
            &[
                "copy",
                &r(&format!("{repo}:1")),
                &format!("oci:{}", layout.display()),
                "--tls-verify=false",
            ],
            home,
        ));
        let in_layout = manifest_of(&format!("oci:{}", layout.display()));
        if oci_format {
            assert_eq!(in_layout, want, "an OCI manifest is kept in a layout");
            // And back up again: still the same.
            ok(strata(
                &[
                    "copy",
                    &format!("oci:{}", layout.display()),
                    &r(&format!("{repo}-back:1")),
                    "--tls-verify=false",
                ],
                home,
            ));
            assert_eq!(skopeo_inspect(&r(&format!("{repo}-back:1"))).0, want);
        } else {
            assert_ne!(
                in_layout, want,
                "a layout holds OCI manifests: a Docker one is written anew"
            );
        }
        // Asked to change something, it is a new manifest (same config).
        ok(strata(
            &[
                "copy",
                &r(&format!("{repo}:1")),
                &r(&format!("{repo}-zstd:1")),
                "--format",
                "oci",
                "--compress",
                "zstd",
                "--tls-verify=false",
            ],
            home,
        ));
        assert_ne!(skopeo_inspect(&r(&format!("{repo}-zstd:1"))).0, want);
        assert_eq!(
            config_digest(&r(&format!("{repo}-zstd:1")), home).0,
            config_digest(&r(&format!("{repo}:1")), home).0
        );
    }
}

/// skopeo's per-side flags of `copy`: `--src-creds`/`--dest-creds` (and `--src-tls-verify`,
/// `--dest-tls-verify`) replace the global flag for their side only.
#[test]
fn copy_takes_credentials_and_tls_per_side() {
    if !available() {
        return;
    }
    let reg = Registry::start(Auth::Htpasswd("alice", "s3cret"), false);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let oci = write_oci_dir(&dir.path().join("src"), &fixtures()[0], Comp::Gzip);
    let src = format!("oci:{}", oci.display());
    let dst = format!("docker://{}/side/app:1", reg.addr);
    // The global --creds is wrong; the destination's own is right: the push works.
    ok(strata(
        &[
            "copy",
            &src,
            &dst,
            "--creds",
            "alice:wrong",
            "--dest-creds",
            "alice:s3cret",
            "--dest-tls-verify=false",
        ],
        home,
    ));
    // A wrong --dest-creds is used (over a right global one) and fails.
    let e = fail(strata(
        &[
            "copy",
            &src,
            &format!("docker://{}/side/app:2", reg.addr),
            "--creds",
            "alice:s3cret",
            "--dest-creds",
            "alice:wrong",
            "--tls-verify=false",
        ],
        home,
    ));
    assert!(e.contains("authentication failed"), "{e}");
    // Pulling: the source's flags, not the global ones (which would refuse plain HTTP).
    let back = dir.path().join("back");
    ok(strata(
        &[
            "copy",
            &dst,
            &format!("oci:{}:1", back.display()),
            "--creds",
            "alice:wrong",
            "--src-creds",
            "alice:s3cret",
            "--src-tls-verify=false",
        ],
        home,
    ));
    // Without --src-tls-verify=false the plain-HTTP registry is refused.
    let e = fail(strata(
        &[
            "copy",
            &dst,
            &format!("oci:{}:2", back.display()),
            "--src-creds",
            "alice:s3cret",
        ],
        home,
    ));
    assert!(e.contains(&reg.addr), "{e}");
    assert_eq!(
        common::flatten_ref(&format!("oci:{}:1", back.display())).unwrap(),
        common::flatten_ref(&src).unwrap(),
        "the copy back is the image"
    );
}

/// `strata serve --publish` pushes a squash it has written already: `squash::republish` takes
/// the squashed layer and config from that result, the kept layers from the source, and
/// never reads the squashed layers again — here they are overwritten after the squash, so a
/// second merge would fail their digests — yet pushes exactly the image a direct squash to
/// the registry pushes.
#[test]
fn a_written_squash_is_published_without_merging_again() {
    use strata::image::platform::Platform;
    use strata::sink::{Destination, Format, Target};
    if !available() {
        return;
    }
    let reg = Registry::start(Auth::None, false);
    let dir = tempfile::tempdir().unwrap();
    let layers = vec![
        LayerBuilder::new()
            .dir("etc")
            .file("etc/base", "b")
            .file("etc/old", "o")
            .build(),
        LayerBuilder::new()
            .file("etc/one", "1")
            .whiteout("etc/old")
            .build(),
        LayerBuilder::new()
            .file("etc/two", "2")
            .file("etc/one", "1b")
            .build(),
    ];
    for (fmt, cli_fmt, push_fmt) in [
        (
            Format::DockerArchive,
            "docker-archive",
            Format::DockerArchive,
        ),
        (Format::OciArchive, "oci-archive", Format::Oci),
    ] {
        let oci = write_oci_dir(
            &dir.path().join(format!("src-{cli_fmt}")),
            &layers,
            Comp::Gzip,
        );
        let src = format!("oci:{}", oci.display());
        let push_as = if push_fmt == Format::Oci {
            "oci"
        } else {
            "docker-archive"
        };
        let direct = format!("docker://{}/pub:direct-{cli_fmt}", reg.addr);
        ok(strata(
            &[
                "squash",
                &src,
                "--last",
                "2",
                "--format",
                push_as,
                "-o",
                &direct,
                "--tls-verify=false",
            ],
            dir.path(),
        ));
        let written = dir.path().join(format!("result-{cli_fmt}.tar"));
        let w = written.to_str().unwrap();
        ok(strata(
            &["squash", &src, "--last", "2", "--format", cli_fmt, "-o", w],
            dir.path(),
        ));

        let source =
            strata::image::oci_layout::open_dir(&oci, None, &Platform::default(), &src).unwrap();
        let result = if fmt == Format::DockerArchive {
            strata::image::docker_archive::open(&written, None, w).unwrap()
        } else {
            strata::image::oci_layout::open_archive(&written, None, &Platform::default(), w)
                .unwrap()
        };
        // The squashed layers' blobs, spoiled in place (same size, other bytes).
        for l in &source.layers[1..] {
            let hex = l
                .digest
                .as_deref()
                .unwrap()
                .strip_prefix("sha256:")
                .unwrap();
            let blob = oci.join("blobs/sha256").join(hex);
            let len = std::fs::metadata(&blob).unwrap().len() as usize;
            let f = std::fs::OpenOptions::new().write(true).open(&blob).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; len], 0).unwrap();
        }
        let opts = strata::registry::Options {
            tls_verify: false,
            ..Default::default()
        };
        let target = Target::push(push_fmt, &opts);
        let again = format!("//{}/pub:again-{cli_fmt}", reg.addr);
        strata::sink::registry::Registry
            .write(&again, &target, &mut |w| {
                strata::squash::republish(&source, 1, &result, w, &[]).map(|_| ())
            })
            .unwrap();
        // The same image: the same config (so the same squashed tar, by its diff_id), the
        // kept layer mounted as it was. (The new layer's gzip bytes may differ: deflate's
        // output depends on how its input was cut into writes.)
        let manifest = |r: &str| -> serde_json::Value {
            let raw =
                run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", r]));
            serde_json::from_str(&raw).unwrap()
        };
        let (m_again, m_direct) = (manifest(&format!("docker:{again}")), manifest(&direct));
        assert_eq!(
            m_again["config"], m_direct["config"],
            "{cli_fmt}: the config"
        );
        assert_eq!(m_again["mediaType"], m_direct["mediaType"], "{cli_fmt}");
        assert_eq!(
            m_again["layers"][0], m_direct["layers"][0],
            "{cli_fmt}: the kept layer"
        );
        assert_eq!(m_again["layers"].as_array().unwrap().len(), 2, "{cli_fmt}");
        let flat = |r: &str| {
            ok(strata(
                &["flatten", r, "-o", "-", "--tls-verify=false"],
                dir.path(),
            ))
        };
        assert!(
            flat(&format!("docker:{again}")) == flat(&direct),
            "{cli_fmt}: the republished tree differs"
        );
        // And a merge now would fail: the spoiled blobs are really what a second squash reads.
        let e = fail(strata(
            &["squash", &src, "--last", "2", "-o", "-"],
            dir.path(),
        ));
        assert!(e.contains("layer 1") || e.contains("layer 2"), "{e}");
    }
}

/// A CONNECT proxy on loopback, for the proxy test: it tunnels each connection to the
/// address asked for and keeps each request's head; with `refuse` it answers 407 instead.
struct ConnectProxy {
    addr: String,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn connect_proxy(refuse: impl Fn(&str) -> bool + Send + Sync + 'static) -> ConnectProxy {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    let refuse = std::sync::Arc::new(refuse);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let seen = seen.clone();
            let refuse = refuse.clone();
            std::thread::spawn(move || {
                let limit = Some(std::time::Duration::from_secs(30));
                conn.set_read_timeout(limit).ok();
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                seen.lock().unwrap().push(head.clone());
                let mut client = conn;
                let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                if refuse(&target) || !head.starts_with("CONNECT ") {
                    let _ = client.write_all(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
                    );
                    return;
                }
                let Ok(upstream) = TcpStream::connect(&target) else {
                    let _ =
                        client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
                    return;
                };
                upstream.set_read_timeout(limit).ok();
                let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                // The client waits for the 200 before it speaks: nothing is left in `r`.
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut u2);
                    let _ = u2.shutdown(std::net::Shutdown::Write);
                });
                let (mut u, mut c) = (upstream, client);
                let _ = std::io::copy(&mut u, &mut c);
                let _ = c.shutdown(std::net::Shutdown::Write);
                let _ = up.join();
            });
        }
    });
    ConnectProxy { addr, heads }
}

/// `HTTPS_PROXY`/`ALL_PROXY` and `NO_PROXY` are honoured as skopeo's users expect: registry
/// traffic goes through the proxy's CONNECT tunnel (with the proxy's credentials from its
/// URL), a host in `NO_PROXY` is reached directly, and a proxy that refuses is a one-line
/// error naming it.
#[test]
fn a_proxy_from_the_environment_carries_registry_traffic() {
    if !available() {
        return;
    }
    let reg = Registry::start(Auth::None, true);
    let certs = reg.certs.clone().unwrap();
    let certs = certs.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let oci = write_oci_dir(&dir.path().join("src"), &fixtures()[0], Comp::Gzip);
    reg.push(
        &format!("oci:{}", oci.display()),
        "proxied/app:1",
        false,
        None,
    );
    let img = format!("docker://{}/proxied/app:1", reg.addr);
    let run_with = |env: &[(&str, String)], args: &[&str]| {
        let mut c = strata_env(args, dir.path());
        without_proxies(&mut c);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let proxy = connect_proxy(|_| false);
    let via = format!("http://user:pw@{}", proxy.addr);
    let flat = ok(run_with(
        &[("HTTPS_PROXY", via.clone())],
        &["flatten", &img, "--cert-dir", certs, "-o", "-"],
    ));
    assert!(flat == common::flatten_ref(&format!("oci:{}", oci.display())).unwrap());
    let heads = proxy.heads.lock().unwrap().clone();
    assert!(!heads.is_empty(), "nothing went through the proxy");
    for h in &heads {
        assert!(h.starts_with(&format!("CONNECT {} ", reg.addr)), "{h}");
        // user:pw, as Basic credentials for the proxy.
        assert!(h.contains("Basic dXNlcjpwdw=="), "{h}");
    }
    // NO_PROXY names the registry's host: straight there.
    let host = reg.addr.rsplit_once(':').unwrap().0.to_string();
    let before = proxy.heads.lock().unwrap().len();
    ok(run_with(
        &[("HTTPS_PROXY", via.clone()), ("NO_PROXY", host)],
        &["inspect", &img, "--cert-dir", certs],
    ));
    assert_eq!(
        proxy.heads.lock().unwrap().len(),
        before,
        "NO_PROXY was not honoured"
    );
    // A proxy that refuses the tunnel.
    let refusing = connect_proxy(|_| true);
    let e = fail(run_with(
        &[("ALL_PROXY", format!("http://{}", refusing.addr))],
        &["inspect", &img, "--cert-dir", certs],
    ));
    assert!(
        e.contains(&format!("proxy {} answered 407", refusing.addr)),
        "{e}"
    );
    assert_eq!(
        refusing.heads.lock().unwrap().len(),
        1,
        "a refusal is not retried"
    );
}

/// `copy --all`: a multi-platform index, its attestation too, copied whole and byte for byte —
/// within one registry (blobs mounted) and to another (blobs streamed) — so the index keeps
/// its digest, every platform reads back, and skopeo copies it all from there.
#[test]
fn copy_all_mirrors_a_multi_platform_index_byte_for_byte() {
    if !available() {
        return;
    }
    let (a, b) = (
        Registry::start(Auth::None, false),
        Registry::start(Auth::None, false),
    );
    let dir = tempfile::tempdir().unwrap();
    let src = push_multi_platform(dir.path(), &a);
    let raw =
        |r: &str| run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", r]));
    let index = raw(&src);
    assert!(index.contains("image.index"), "{index}");
    for (dst, what) in [
        (
            format!("docker://{}/mirror/multi:1", a.addr),
            "same registry",
        ),
        (format!("docker://{}/multi:2", b.addr), "another registry"),
    ] {
        let out = ok(strata(
            &["copy", "--all", &src, &dst, "--tls-verify=false"],
            dir.path(),
        ));
        let printed = String::from_utf8(out).unwrap();
        let digest = format!("sha256:{}", common::sha256_hex(index.as_bytes()));
        assert_eq!(printed.trim(), format!("{dst}@{digest}"), "{what}");
        assert_eq!(raw(&dst), index, "{what}: the index, byte for byte");
        for arch in ["amd64", "arm64"] {
            let tar = ok(strata(
                &[
                    "flatten",
                    &dst,
                    "--platform",
                    &format!("linux/{arch}"),
                    "--tls-verify=false",
                    "-o",
                    "-",
                ],
                dir.path(),
            ));
            assert!(
                String::from_utf8_lossy(&tar).contains(&format!("I am {arch}")),
                "{what}: {arch}"
            );
        }
        // Every manifest and blob is there: skopeo copies all of it out again.
        let back = dir.path().join(format!("back-{}", what.replace(' ', "-")));
        run(Command::new("skopeo").args([
            "copy",
            "--all",
            "--insecure-policy",
            "--src-tls-verify=false",
            "-q",
            &dst,
            &format!("oci:{}:back", back.display()),
        ]));
        let attestation = std::fs::read_dir(back.join("blobs/sha256"))
            .unwrap()
            .filter_map(|e| std::fs::read(e.unwrap().path()).ok())
            .any(|b| flate_contains(&b, "attestation"));
        assert!(attestation, "{what}: the attestation's layer came along");
    }
    // Into an OCI layout, and from that layout into a registry again.
    let layout = dir.path().join("mirrored");
    let to_layout = format!("oci:{}:m", layout.display());
    let out = ok(strata(
        &["copy", "--all", &src, &to_layout, "--tls-verify=false"],
        dir.path(),
    ));
    let digest = format!("sha256:{}", common::sha256_hex(index.as_bytes()));
    assert_eq!(
        String::from_utf8(out).unwrap().trim(),
        format!("{to_layout}@{digest}")
    );
    assert_eq!(raw(&to_layout), index, "the layout's index, byte for byte");
    let top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(top["mediaType"], "application/vnd.oci.image.index.v1+json");
    let desc = &top["manifests"][0];
    assert_eq!(desc["digest"], digest.as_str());
    assert_eq!(desc["size"], index.len());
    assert_eq!(desc["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(
        desc["annotations"]["org.opencontainers.image.ref.name"],
        "m"
    );
    for arch in ["amd64", "arm64"] {
        let tar = ok(strata(
            &[
                "flatten",
                &to_layout,
                "--platform",
                &format!("linux/{arch}"),
                "-o",
                "-",
            ],
            dir.path(),
        ));
        assert!(String::from_utf8_lossy(&tar).contains(&format!("I am {arch}")));
    }
    let again = format!("docker://{}/from-layout:1", b.addr);
    ok(strata(
        &["copy", "--all", &to_layout, &again, "--tls-verify=false"],
        dir.path(),
    ));
    assert_eq!(raw(&again), index, "layout to registry, byte for byte");
    // The same layout as an OCI archive, read in place.
    let archive = dir.path().join("mirrored.tar");
    run(Command::new("tar").args([
        "-C",
        layout.to_str().unwrap(),
        "-cf",
        archive.to_str().unwrap(),
        ".",
    ]));
    let from_archive = format!("docker://{}/from-archive:1", b.addr);
    ok(strata(
        &[
            "copy",
            "--all",
            &format!("oci-archive:{}:m", archive.display()),
            &from_archive,
            "--tls-verify=false",
        ],
        dir.path(),
    ));
    assert_eq!(
        raw(&from_archive),
        index,
        "archive to registry, byte for byte"
    );
    // An existing layout is not replaced without --force; with it, it is.
    let e = fail(strata(
        &["copy", "--all", &src, &to_layout, "--tls-verify=false"],
        dir.path(),
    ));
    assert!(e.contains("--force"), "{e}");
    std::fs::write(layout.join("left-over"), "x").unwrap();
    ok(strata(
        &[
            "copy",
            "--all",
            &src,
            &to_layout,
            "--tls-verify=false",
            "--force",
        ],
        dir.path(),
    ));
    assert!(!layout.join("left-over").exists(), "--force wrote it anew");
    assert_eq!(raw(&to_layout), index);
    // A layout blob that is not its digest: an error naming it, and no layout written.
    let spoiled = dir.path().join("spoiled");
    let names: Vec<_> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let victim = names
        .iter()
        .find(|p| flate_contains(&std::fs::read(p).unwrap(), "I am arm64"))
        .unwrap();
    let mut bytes = std::fs::read(victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(victim, bytes).unwrap();
    let e = fail(strata(
        &[
            "copy",
            "--all",
            &to_layout,
            &format!("oci:{}", spoiled.display()),
        ],
        dir.path(),
    ));
    let victim_hex = victim.file_name().unwrap().to_str().unwrap();
    assert!(e.contains(victim_hex), "{e}");
    assert!(!spoiled.exists(), "nothing half-written");
    let partial: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("strata-") || n.contains("spoiled"))
        .collect();
    assert!(partial.is_empty(), "nothing left behind: {partial:?}");
    let e = fail(strata(
        &[
            "copy",
            "--all",
            &src,
            &format!("docker-archive:{}", dir.path().join("x.tar").display()),
        ],
        dir.path(),
    ));
    assert!(e.contains("docker://") && e.contains("oci:"), "{e}");
}

/// Whether a gzip blob's content contains `needle`.
fn flate_contains(gz: &[u8], needle: &str) -> bool {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut out)
        .is_ok()
        && String::from_utf8_lossy(&out).contains(needle)
}

/// Behind a proxy that tunnels to the registry but refuses its token server: one error naming
/// the proxy and the token server, asked once (not retried).
#[test]
fn a_proxy_refusing_the_token_server_is_one_error() {
    if !available() {
        return;
    }
    let (tokens, reg) = token_registry();
    let realm_host = tokens
        .realm
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let refused = realm_host.clone();
    let proxy = connect_proxy(move |target| target == refused);
    let dir = tempfile::tempdir().unwrap();
    let mut c = strata_env(
        &[
            "inspect",
            &format!("docker://{}/tok/app:1", reg.addr),
            "--tls-verify=false",
            "--creds",
            "alice:s3cret",
        ],
        dir.path(),
    );
    without_proxies(&mut c).env("ALL_PROXY", format!("http://{}", proxy.addr));
    let e = fail(c.output().unwrap());
    assert!(
        e.contains("token server") && e.contains(&format!("proxy {} answered 407", proxy.addr)),
        "{e}"
    );
    let heads = proxy.heads.lock().unwrap().clone();
    let to_realm = heads
        .iter()
        .filter(|h| h.starts_with(&format!("CONNECT {realm_host} ")))
        .count();
    assert_eq!(to_realm, 1, "asked the token server once: {heads:?}");
    assert!(
        heads
            .iter()
            .any(|h| h.starts_with(&format!("CONNECT {} ", reg.addr))),
        "the registry itself went through the proxy: {heads:?}"
    );
}
