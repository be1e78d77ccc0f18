//! The Docker engine for end-to-end tests that load and run what strata made: its address
//! (`DOCKER_HOST`, else the one `.ci/start-dockerd` starts), whether it answers (skipped
//! locally when not, a failure under `CI`), and a small runnable base layer.

use super::{LayerBuilder, Meta};
use std::path::Path;
use std::process::Command;

pub const DEFAULT_HOST: &str = "unix:///tmp/strata-docker/docker.sock";

/// The prefix of every image name a test run makes, `strata-e2e-<run>` (`<run>`: the test
/// process and its start time), shown with `{RUN}`. The first use registers a sweep at the
/// process's exit that removes the run's images, so a run leaves none behind and two runs on
/// one engine never see each other's.
pub struct Run;

#[allow(dead_code)]
pub const RUN: Run = Run;

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(run_prefix())
    }
}

fn run_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        // SAFETY: registers a plain function with no captured state.
        unsafe { libc::atexit(remove_run_images) };
        format!("strata-e2e-{:x}{:x}", std::process::id(), nanos >> 8)
    })
}

/// Every image named with this run's prefix, untagged (twice: a child image built on top of
/// another must go first).
extern "C" fn remove_run_images() {
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_HOST.into());
    for _ in 0..2 {
        let Ok(o) = Command::new("docker")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .args(["--filter", &format!("reference={}-*", run_prefix())])
            .env("DOCKER_HOST", &host)
            .output()
        else {
            return;
        };
        let names: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        if names.is_empty() {
            return;
        }
        let _ = Command::new("docker")
            .args(["rmi", "-f"])
            .args(&names)
            .env("DOCKER_HOST", &host)
            .output();
    }
}

/// The engine's address when it answers; `None` (skip) locally; panics under CI.
pub fn engine() -> Option<String> {
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_HOST.into());
    let up = Command::new("docker")
        .arg("version")
        .env("DOCKER_HOST", &host)
        .output()
        .is_ok_and(|o| o.status.success());
    if up {
        return Some(host);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but no Docker engine answers at {host}: run .ci/start-dockerd"
    );
    eprintln!("SKIPPED: no Docker engine at {host}");
    None
}

/// `docker ARGS` against `host`; its stdout (a failure panics with its stderr).
pub fn docker(host: &str, args: &[&str]) -> String {
    let o = Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", host)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A layer with Debian's busybox-static as /bin/busybox and `applets` linked to it.
pub fn busybox_layer(applets: &[&str]) -> Vec<u8> {
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox not found: apt-get install busybox-static");
    let exec = Meta {
        mode: 0o755,
        ..Default::default()
    };
    let mut b = LayerBuilder::new();
    b.dir("bin")
        .file_meta("bin/busybox", &std::fs::read(bb).unwrap(), &exec);
    for a in applets {
        b.symlink(&format!("bin/{a}"), "busybox");
    }
    b.build()
}
