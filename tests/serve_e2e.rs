//! `strata serve` end to end: the binary started on loopback in front of the real registry
//! (Debian's docker-registry, plain and with htpasswd auth) and of the fake one (to count
//! upstream fetches and to stall). Bodies are compared with what the CLI writes for the same
//! image and options; Docker loads and runs a squash downloaded from the service.

mod common;

use common::fake_registry::{Fake, Faults, digest_of};
use common::registry::{Auth, Registry, available};
use common::{Comp, LayerBuilder, compress, config_json, strata_bin, write_oci_dir};
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    addr: String,
    child: Child,
    _cache: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(registry: &str, extra: &[&str]) -> Server {
    let cache = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(strata_bin())
        .args([
            "serve",
            "--listen",
            &addr,
            "--registry",
            registry,
            "--cache-dir",
        ])
        .arg(cache.path())
        .args(extra)
        .env("HOME", cache.path())
        .env_remove("DOCKER_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(cache.path().join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "strata serve did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Server {
        addr,
        child,
        _cache: cache,
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

struct Got {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: Vec<u8>,
}

fn get(url: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.call().unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    resp.into_body()
        .into_reader()
        .read_to_end(&mut body)
        .unwrap();
    Got {
        status,
        headers,
        body,
    }
}

fn cli(args: &[&str], home: &Path) -> Vec<u8> {
    let o = Command::new(strata_bin())
        .args(args)
        .args(["-q", "--tls-verify=false", "--no-cache"])
        .env("HOME", home)
        .env_remove("DOCKER_CONFIG")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

fn fixture() -> Vec<Vec<u8>> {
    vec![
        LayerBuilder::new()
            .dir("etc")
            .file("etc/a", "one")
            .file("keep", "k")
            .build(),
        LayerBuilder::new()
            .whiteout("etc/a")
            .file("etc/b", "two")
            .build(),
        LayerBuilder::new()
            .file("top", "three")
            .hardlink("top2", "top")
            .build(),
    ]
}

#[test]
fn squash_flatten_and_listings_equal_the_cli() {
    if !available() {
        return;
    }
    let reg = Registry::start(Auth::None, false);
    let dir = tempfile::tempdir().unwrap();
    let oci = write_oci_dir(&dir.path().join("src"), &fixture(), Comp::Gzip);
    reg.push(&format!("oci:{}", oci.display()), "org/app:1", false, None);
    reg.push(&format!("oci:{}", oci.display()), "org/app:2", true, None);
    let srv = serve(&format!("http://{}", reg.addr), &[]);
    let base = format!("http://{}", srv.addr);
    let img = format!("docker://{}/org/app:1", reg.addr);
    let home = dir.path();
    // squash: the CLI's bytes, exactly as long as said, with an ETag that 304s.
    for (query, args) in [
        ("", vec![]),
        ("?last=2", vec!["--last", "2"]),
        (
            "?from=1&format=oci-archive&tag=mine:v2",
            vec!["--from", "1", "--format", "oci-archive", "--tag", "mine:v2"],
        ),
    ] {
        let got = get(&format!("{base}/v2/org/app/squash/1{query}"), &[]);
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
        let mut a = vec!["squash", img.as_str(), "-o", "-"];
        a.extend(args.iter());
        let want = cli(&a, home);
        assert!(
            got.body == want,
            "{query}: the body is not what strata squash writes"
        );
        let len: usize = got.headers["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, got.body.len());
        let etag = got.headers["etag"].to_str().unwrap().to_string();
        let again = get(
            &format!("{base}/v2/org/app/squash/1{query}"),
            &[("If-None-Match", &etag)],
        );
        assert_eq!(again.status, 304);
        assert!(again.body.is_empty());
    }
    // Quay's path: the same body.
    let quay = get(&format!("{base}/c1/squash/org/app/1"), &[]);
    assert_eq!(quay.status, 200);
    assert!(quay.body == cli(&["squash", &img, "-o", "-"], home));
    // By digest, too.
    let digest = {
        let v: serde_json::Value =
            serde_json::from_slice(&cli(&["inspect", &img, "--json"], home)).unwrap();
        v["manifest_digest"].as_str().unwrap().to_string()
    };
    let by_digest = get(&format!("{base}/v2/org/app/flatten/{digest}"), &[]);
    assert_eq!(by_digest.status, 200);
    assert!(by_digest.body == cli(&["flatten", &img, "-o", "-"], home));
    // flatten with gzip and zstd, decoded to the same tar.
    let gz = get(
        &format!("{base}/v2/org/app/flatten/1"),
        &[("Accept-Encoding", "gzip")],
    );
    assert_eq!(gz.headers["content-encoding"], "gzip");
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert!(plain == by_digest.body);
    let zs = get(
        &format!("{base}/v2/org/app/flatten/1"),
        &[("Accept-Encoding", "zstd, gzip;q=0.5")],
    );
    assert_eq!(zs.headers["content-encoding"], "zstd");
    assert!(zstd::decode_all(&zs.body[..]).unwrap() == by_digest.body);
    // The JSON routes: the CLI's documents.
    let img2 = format!("docker://{}/org/app:2", reg.addr);
    for (path, args) in [
        ("files/1", vec!["files", img.as_str(), "--json"]),
        (
            "files/1?layer=1",
            vec!["files", img.as_str(), "--json", "--layer", "1"],
        ),
        ("diff/1", vec!["diff", img.as_str(), "--json"]),
        ("waste/1", vec!["waste", img.as_str(), "--json"]),
        (
            "diff/1?against=org/app:2",
            vec!["diff", img.as_str(), img2.as_str(), "--json"],
        ),
    ] {
        let got = get(&format!("{base}/v2/org/app/{path}"), &[]);
        assert_eq!(
            got.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&got.body)
        );
        assert_eq!(
            String::from_utf8_lossy(&got.body),
            String::from_utf8_lossy(&cli(&args, home)),
            "{path}"
        );
    }
    let missing = get(&format!("{base}/v2/org/nope/squash/1"), &[]);
    assert_eq!(missing.status, 404);
    assert_eq!(get(&format!("{base}/healthz"), &[]).status, 200);
    let m = String::from_utf8(get(&format!("{base}/metrics"), &[]).body).unwrap();
    assert!(
        m.contains("strata_requests_total{route=\"squash\",status=\"200\"}"),
        "{m}"
    );
    assert!(m.contains("strata_cache_hits_total"), "{m}");
}

#[test]
fn access_is_the_registrys_also_when_the_result_is_cached() {
    if !available() {
        return;
    }
    let reg = Registry::start(Auth::Htpasswd("alice", "s3cret"), false);
    let dir = tempfile::tempdir().unwrap();
    let oci = write_oci_dir(&dir.path().join("src"), &fixture(), Comp::Gzip);
    reg.push(
        &format!("oci:{}", oci.display()),
        "priv/app:1",
        false,
        Some("alice:s3cret"),
    );
    let srv = serve(&format!("http://{}", reg.addr), &[]);
    let url = format!("http://{}/v2/priv/app/squash/1", srv.addr);
    use base64::Engine;
    let basic = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let check_refused = |headers: &[(&str, &str)]| {
        let got = get(&url, headers);
        assert_eq!(got.status, 401, "{}", String::from_utf8_lossy(&got.body));
        assert!(got.headers.contains_key("www-authenticate"));
        // No image bytes: only the JSON error document.
        let doc: serde_json::Value =
            serde_json::from_slice(&got.body).expect("a JSON error, no tar");
        assert!(doc["error"].is_string(), "{doc}");
    };
    check_refused(&[]);
    check_refused(&[("Authorization", &basic("alice", "wrong"))]);
    let good = get(&url, &[("Authorization", &basic("alice", "s3cret"))]);
    assert_eq!(good.status, 200);
    // Warm now: still refused without the right credentials, for every route.
    check_refused(&[]);
    check_refused(&[("Authorization", &basic("mallory", "s3cret"))]);
    for route in ["flatten", "files", "diff", "waste"] {
        let got = get(&format!("http://{}/v2/priv/app/{route}/1", srv.addr), &[]);
        assert_eq!(got.status, 401, "{route}");
    }
    let etag = good.headers["etag"].to_str().unwrap().to_string();
    let not_modified = get(&url, &[("If-None-Match", &etag)]);
    assert_eq!(not_modified.status, 401, "no 304 without access either");
}

/// A fake registry holding `app:1` (gzip layers, one large), and the service in front.
fn fake_and_server(faults: Faults, extra: &[&str]) -> (Fake, Server, Vec<Vec<u8>>) {
    let big: String = (0..300_000).map(|i| format!("{i:08}\n")).collect();
    let tars = vec![
        LayerBuilder::new().file("big", &big).build(),
        LayerBuilder::new().file("small", "s").build(),
    ];
    let blobs: Vec<Vec<u8>> = tars.iter().map(|t| compress(t, Comp::Gzip).0).collect();
    let fake = Fake::start(faults);
    fake.put_image("app", "1", &config_json(&tars), &blobs, true);
    let srv = serve(&format!("http://{}", fake.addr), extra);
    (fake, srv, blobs)
}

#[test]
fn identical_concurrent_requests_share_one_computation_and_one_fetch_per_blob() {
    let (fake, srv, blobs) = fake_and_server(
        Faults {
            stall: Some(Duration::from_millis(300)),
            ..Default::default()
        },
        &[],
    );
    let url = format!("http://{}/v2/app/squash/1", srv.addr);
    let bodies: Vec<Vec<u8>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8).map(|_| s.spawn(|| get(&url, &[]))).collect();
        hs.into_iter()
            .map(|h| {
                let g = h.join().unwrap();
                assert_eq!(g.status, 200, "{}", String::from_utf8_lossy(&g.body));
                g.body
            })
            .collect()
    });
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "identical bodies");
    for b in &blobs {
        let n = fake.count("GET", &format!("/v2/app/blobs/{}", digest_of(b)));
        assert_eq!(n, 1, "one upstream fetch per blob, got {n}");
    }
    let m = String::from_utf8(get(&format!("http://{}/metrics", srv.addr), &[]).body).unwrap();
    let val = |name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    assert_eq!(val("strata_cache_misses_total"), 1.0, "{m}");
    assert_eq!(
        val("strata_coalesced_total") + val("strata_cache_hits_total"),
        7.0,
        "{m}"
    );
    assert_eq!(val("strata_in_flight"), 0.0, "{m}");
}

#[test]
fn a_full_worker_pool_answers_503_and_a_hang_up_leaves_the_server_healthy() {
    let (_fake, srv, _) = fake_and_server(
        Faults {
            stall: Some(Duration::from_secs(2)),
            ..Default::default()
        },
        &["--workers", "1"],
    );
    let base = format!("http://{}", srv.addr);
    std::thread::scope(|s| {
        let slow = s.spawn(|| get(&format!("{base}/v2/app/squash/1"), &[]));
        std::thread::sleep(Duration::from_millis(700));
        let busy = get(&format!("{base}/v2/app/squash/1?last=1"), &[]);
        assert_eq!(busy.status, 503, "{}", String::from_utf8_lossy(&busy.body));
        assert!(busy.headers.contains_key("retry-after"));
        assert_eq!(slow.join().unwrap().status, 200);
    });
    // A client that hangs up mid-body: the server stays healthy, nothing stays in flight.
    {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(&srv.addr).unwrap();
        write!(c, "GET /v2/app/squash/1 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut first = [0u8; 4096];
        let n = c.read(&mut first).unwrap();
        assert!(n > 0 && first.starts_with(b"HTTP/1.1 200"));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = String::from_utf8(get(&format!("{base}/metrics"), &[]).body).unwrap();
        if m.lines().any(|l| l == "strata_in_flight 0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "in flight never returned to 0: {m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(&format!("{base}/healthz"), &[]).status, 200);
}

#[test]
fn sigterm_drains_in_flight_requests() {
    let (_fake, mut srv, _) = fake_and_server(
        Faults {
            stall: Some(Duration::from_secs(1)),
            ..Default::default()
        },
        &[],
    );
    let url = format!("http://{}/v2/app/squash/1", srv.addr);
    std::thread::scope(|s| {
        let inflight = s.spawn(|| get(&url, &[]));
        std::thread::sleep(Duration::from_millis(400));
        let pid = srv.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let got = inflight.join().unwrap();
        assert_eq!(got.status, 200, "the request in flight finished");
        assert!(!got.body.is_empty());
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = srv.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        std::net::TcpStream::connect(&srv.addr).is_err(),
        "no longer accepting"
    );
}

#[test]
fn docker_loads_and_runs_a_squash_downloaded_from_the_service() {
    if !available() {
        return;
    }
    let Some(host) = common::docker::engine() else {
        return;
    };
    let layers = vec![
        common::docker::busybox_layer(&["sh", "cat"]),
        LayerBuilder::new().file("msg", "served\n").build(),
    ];
    let reg = Registry::start(Auth::None, false);
    let dir = tempfile::tempdir().unwrap();
    let oci = write_oci_dir(&dir.path().join("src"), &layers, Comp::Gzip);
    reg.push(&format!("oci:{}", oci.display()), "run/app:1", false, None);
    let srv = serve(&format!("http://{}", reg.addr), &[]);
    let tag = format!("{}-serve:sq", common::docker::RUN);
    let got = get(
        &format!("http://{}/v2/run/app/squash/1?tag={tag}", srv.addr),
        &[],
    );
    assert_eq!(got.status, 200);
    let tar = dir.path().join("sq.tar");
    std::fs::write(&tar, &got.body).unwrap();
    let docker = |args: &[&str]| common::docker::docker(&host, args);
    docker(&["load", "-i", tar.to_str().unwrap()]);
    let out = docker(&["run", "--rm", "--network", "none", &tag, "cat", "/msg"]);
    docker(&["rmi", "-f", &tag]);
    assert_eq!(out, "served\n");
}

/// nginx on loopback in front of `backends`, round robin, buffering off.
struct Nginx {
    addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx(backends: &[&str]) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let servers: String = backends
        .iter()
        .map(|b| format!("    server {b};\n"))
        .collect();
    let d = dir.path().display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  upstream strata {{\n{servers}  }}\n  server {{\n    listen {addr};\n    location / {{\n      proxy_pass http://strata;\n      proxy_buffering off;\n      proxy_http_version 1.1;\n      proxy_set_header Authorization $http_authorization;\n      proxy_read_timeout 600s;\n    }}\n  }}\n}}\n"
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let child = Command::new("nginx")
        .args(["-p", &d.to_string(), "-c"])
        .arg(dir.path().join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting nginx");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not listen: {}",
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Nginx {
        addr,
        child,
        _dir: dir,
    }
}

fn metric(base: &str, name: &str) -> f64 {
    let m = String::from_utf8(get(&format!("{base}/metrics"), &[]).body).unwrap();
    m.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn two_replicas_behind_nginx_share_a_published_squash_through_the_registry() {
    if !available() {
        return;
    }
    assert!(
        common::registry::have("nginx") || std::env::var_os("CI").is_none(),
        "CI is set but nginx is missing: .ci/run installs it"
    );
    if !common::registry::have("nginx") {
        eprintln!("SKIPPED: needs nginx");
        return;
    }
    let reg = Registry::start(Auth::None, false);
    let dir = tempfile::tempdir().unwrap();
    let oci = write_oci_dir(&dir.path().join("src"), &fixture(), Comp::Gzip);
    reg.push(&format!("oci:{}", oci.display()), "team/app:1", false, None);
    let upstream = format!("http://{}", reg.addr);
    let a = serve(&upstream, &["--publish"]);
    let b = serve(&upstream, &["--publish"]);
    let lb = nginx(&[&a.addr, &b.addr]);
    let (ba, bb) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    let url = format!("http://{}/v2/team/app/squash/1?last=2", lb.addr);
    let first = get(&url, &[]);
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    // Which replica answered: the one that computed. Wait for its publish.
    let (computed, other) = if metric(&ba, "strata_cache_misses_total") == 1.0 {
        (&ba, &bb)
    } else {
        (&bb, &ba)
    };
    let read = metric(computed, "strata_upstream_bytes_total");
    assert!(read > 0.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(computed, "strata_published_total") < 1.0 {
        let logs = |s: &Server| {
            std::fs::read_to_string(s._cache.path().join("serve.log")).unwrap_or_default()
        };
        let m = |b: &str| String::from_utf8(get(&format!("{b}/metrics"), &[]).body).unwrap();
        assert!(
            Instant::now() < deadline,
            "the squash was never published: {}\n{}\n{}\n{}",
            logs(&a),
            logs(&b),
            m(&ba),
            m(&bb)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The push is counted as sent, not as read; and publishing downloads nothing more.
    assert!(metric(computed, "strata_upstream_sent_bytes_total") > 0.0);
    assert_eq!(metric(computed, "strata_upstream_bytes_total"), read);
    // Through nginx again until the other replica answers: from the registry, no squash.
    let mut second = None;
    for _ in 0..4 {
        let g = get(&url, &[]);
        assert_eq!(g.status, 200);
        if metric(other, "strata_published_hits_total") >= 1.0 {
            second = Some(g);
            break;
        }
    }
    let second = second.expect("the other replica never answered");
    assert!(
        second.body == first.body,
        "the same bytes from either replica"
    );
    assert_eq!(second.headers["etag"], first.headers["etag"]);
    let img = format!("docker://{}/team/app:1", reg.addr);
    assert!(first.body == cli(&["squash", &img, "--last", "2", "-o", "-"], dir.path()));
}

#[test]
fn a_client_hanging_up_while_its_result_is_computed_stops_the_computation() {
    // 3 MB that gzip cannot shrink: ~7.5 s at 16 KiB per 40 ms.
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let noise: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let exec = common::Meta::default();
    let tars = vec![
        LayerBuilder::new()
            .file_meta("noise", &noise, &exec)
            .build(),
        LayerBuilder::new().file("small", "s").build(),
    ];
    let blobs: Vec<Vec<u8>> = tars.iter().map(|t| compress(t, Comp::Gzip).0).collect();
    assert!(blobs[0].len() > 2_900_000);
    let fake = Fake::start(Faults {
        trickle: Some(Duration::from_millis(40)),
        ..Default::default()
    });
    fake.put_image("app", "1", &config_json(&tars), &blobs, true);
    let srv = serve(&format!("http://{}", fake.addr), &[]);
    let base = format!("http://{}", srv.addr);
    let computations = || metric(&base, "strata_computations");
    let started = Instant::now();
    {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(&srv.addr).unwrap();
        write!(c, "GET /v2/app/squash/1 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while computations() < 1.0 {
            assert!(Instant::now() < deadline, "the computation never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
    } // hung up: the only client of this computation is gone
    let t = Instant::now();
    while computations() > 0.0 {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "the computation went on without a client"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped well before the blob's end"
    );
    assert_eq!(metric(&base, "strata_in_flight"), 0.0);
    assert_eq!(get(&format!("{base}/healthz"), &[]).status, 200);
}

/// The fixture as `app:1` in a fake registry with token auth (`u:p` at its token server),
/// and a server in front of it.
fn behind_token_auth() -> (Vec<Vec<u8>>, Fake, Server) {
    let tars = fixture();
    let blobs: Vec<Vec<u8>> = tars.iter().map(|t| compress(t, Comp::Gzip).0).collect();
    let fake = Fake::start(Faults {
        bearer: Some(Some(("u".into(), "p".into()))),
        ..Default::default()
    });
    fake.put_image("app", "1", &config_json(&tars), &blobs, true);
    let srv = serve(&format!("http://{}", fake.addr), &[]);
    (tars, fake, srv)
}

#[test]
fn a_bearer_token_is_passed_through_to_the_registry() {
    use base64::Engine;
    let (tars, fake, srv) = behind_token_auth();
    // The client's own token, from the registry's token server.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("u:p")
    );
    let tok = get(
        &format!("http://{}/token?scope=repository:app:pull", fake.addr),
        &[("Authorization", &basic)],
    );
    let token = serde_json::from_slice::<serde_json::Value>(&tok.body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("http://{}/v2/app/flatten/1", srv.addr);
    let good = get(&url, &[("Authorization", &format!("Bearer {token}"))]);
    assert_eq!(good.status, 200, "{}", String::from_utf8_lossy(&good.body));
    assert!(good.body == common::flatten_layers(&tars).unwrap());
    let sent: Vec<_> = fake
        .log()
        .into_iter()
        .filter(|l| l.path.starts_with("/v2/app/"))
        .collect();
    assert!(
        sent.iter()
            .all(|l| l.authorization.as_deref() == Some(&format!("Bearer {token}"))),
        "{sent:?}"
    );
    assert_eq!(get(&url, &[("Authorization", "Bearer forged")]).status, 401);
    assert_eq!(get(&url, &[]).status, 401);
}

/// A credential's registry clients are reused by its next requests — one ping, one token —
/// and never by another credential's, nor by an anonymous request.
#[test]
fn requests_with_one_credential_share_its_registry_clients_and_tokens() {
    use base64::Engine;
    let (_, fake, srv) = behind_token_auth();
    let basic = |up: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(up)
        )
    };
    let count = |prefix: &str| {
        fake.log()
            .iter()
            .filter(|l| l.method == "GET" && l.path.split('?').next() == Some(prefix))
            .count()
    };
    for route in ["files", "flatten", "files"] {
        let url = format!("http://{}/v2/app/{route}/1", srv.addr);
        let r = get(&url, &[("Authorization", &basic("u:p"))]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(count("/v2/"), 1, "one ping for the credential");
    assert_eq!(count("/token"), 1, "one token for the credential's scope");
    // Each request still reads the manifest with it: the registry's access check.
    assert_eq!(count("/v2/app/manifests/1"), 3);
    let url = format!("http://{}/v2/app/files/1", srv.addr);
    assert_eq!(get(&url, &[]).status, 401, "anonymous gets nothing of u's");
    assert_eq!(
        get(&url, &[("Authorization", &basic("u:wrong"))]).status,
        401,
        "another password gets nothing of u's"
    );
    assert_eq!(get(&url, &[("Authorization", &basic("u:p"))]).status, 200);
}

#[test]
fn a_registry_403_is_passed_on_as_403() {
    let tars = fixture();
    let blobs: Vec<Vec<u8>> = tars.iter().map(|t| compress(t, Comp::Gzip).0).collect();
    let fake = Fake::start(Faults {
        forbid: Some("secret".into()),
        ..Default::default()
    });
    fake.put_image("secret", "1", &config_json(&tars), &blobs, true);
    fake.put_image("open", "1", &config_json(&tars), &blobs, true);
    let srv = serve(&format!("http://{}", fake.addr), &[]);
    let got = get(&format!("http://{}/v2/secret/squash/1", srv.addr), &[]);
    assert_eq!(got.status, 403, "{}", String::from_utf8_lossy(&got.body));
    assert!(String::from_utf8_lossy(&got.body).contains("DENIED"));
    assert_eq!(
        get(&format!("http://{}/v2/open/files/1", srv.addr), &[]).status,
        200
    );
}

#[test]
fn different_requests_for_one_image_share_each_blob_fetch() {
    let (fake, srv, blobs) = fake_and_server(
        Faults {
            stall: Some(Duration::from_millis(500)),
            ..Default::default()
        },
        &["--workers", "8"],
    );
    let base = format!("http://{}", srv.addr);
    std::thread::scope(|s| {
        let routes = [
            "squash/1",
            "squash/1?last=1",
            "flatten/1",
            "files/1",
            "waste/1",
        ];
        let hs: Vec<_> = routes
            .iter()
            .map(|r| {
                let url = format!("{base}/v2/app/{r}");
                s.spawn(move || get(&url, &[]).status)
            })
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap(), 200);
        }
    });
    for b in &blobs {
        let n = fake.count("GET", &format!("/v2/app/blobs/{}", digest_of(b)));
        assert_eq!(
            n, 1,
            "one upstream fetch per blob across five different requests, got {n}"
        );
    }
}
