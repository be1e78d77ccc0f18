//! `docker-daemon:` against a second engine: podman's Docker-compatible API
//! (`podman system service`), started here on a private socket with its own storage (vfs).
//! Its `docker save` stream is laid out differently from Docker's (`<diff_id>.tar` members
//! beside the v1 directories), and its load reports in its own words.
//!
//! Needs podman; skipped locally without it, but fails when `CI` is set.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A podman API service on a private socket, stopped when dropped.
struct Podman {
    child: Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn podman() -> Option<Podman> {
    let found = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but podman is missing: .ci/run installs it");
        }
        eprintln!("SKIPPED: podman is not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("podman.sock");
    let child = Command::new("podman")
        .args(["--storage-driver", "vfs", "--root"])
        .arg(dir.path().join("root"))
        .arg("--runroot")
        .arg(dir.path().join("run"))
        .args(["system", "service", "--time=0"])
        .arg(format!("unix://{}", sock.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Podman {
        child,
        sock,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&p.sock).is_err() {
        assert!(
            Instant::now() < deadline,
            "podman system service did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(p)
}

fn strata(p: &Podman, cache: &Path, args: &[&str]) -> Vec<u8> {
    let o = Command::new(strata_bin())
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .env("DOCKER_HOST", format!("unix://{}", p.sock.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "strata {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

#[test]
fn podman_loads_and_saves_what_strata_reads_and_writes() {
    let Some(p) = podman() else { return };
    let d = tempfile::tempdir().unwrap();
    let layers = vec![
        LayerBuilder::new()
            .dir("etc")
            .file("etc/a", "first")
            .file("etc/gone", "x")
            .hardlink("etc/link", "etc/a")
            .build(),
        LayerBuilder::new()
            .file("etc/a", "second")
            .whiteout("etc/gone")
            .build(),
        LayerBuilder::new()
            .dir("srv")
            .file("srv/new", "new")
            .build(),
    ];
    let archive = write_docker_archive(d.path(), &layers)
        .display()
        .to_string();
    let want = flatten_ref(&archive).unwrap();
    // Into podman, back out of it (fresh caches, so the content comes from podman's save).
    strata(
        &p,
        &d.path().join("c1"),
        &["copy", "-q", &archive, "docker-daemon:strata-pod:1"],
    );
    let back = strata(
        &p,
        &d.path().join("c2"),
        &["flatten", "-q", "docker-daemon:strata-pod:1", "-o", "-"],
    );
    assert_eq!(back, want, "flatten through podman");
    // Squash podman → podman, then read the squashed image back.
    strata(
        &p,
        &d.path().join("c3"),
        &[
            "squash",
            "-q",
            "docker-daemon:strata-pod:1",
            "-o",
            "docker-daemon:strata-pod:sq",
        ],
    );
    let info: serde_json::Value = serde_json::from_slice(&strata(
        &p,
        &d.path().join("c4"),
        &["inspect", "--json", "docker-daemon:strata-pod:sq"],
    ))
    .unwrap();
    assert_eq!(info["layers"].as_array().unwrap().len(), 1);
    let sq = strata(
        &p,
        &d.path().join("c5"),
        &["flatten", "-q", "docker-daemon:strata-pod:sq", "-o", "-"],
    );
    assert_eq!(
        common::model::canon(&common::model::read_flat(&sq).unwrap()),
        common::model::canon(&common::model::read_flat(&want).unwrap()),
        "the squashed image holds the same tree"
    );
}
