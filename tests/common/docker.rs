//! The Docker engine for end-to-end tests that load and run what strata made: its address
//! (`DOCKER_HOST`, else the one `.ci/start-dockerd` starts), whether it answers (skipped
//! locally when not, a failure under `CI`), and a small runnable base layer.

use super::{LayerBuilder, Meta};
use std::path::Path;
use std::process::Command;

pub const DEFAULT_HOST: &str = "unix:///tmp/strata-docker/docker.sock";

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
