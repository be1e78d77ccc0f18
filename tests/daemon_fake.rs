//! `docker-daemon:` against a fake Engine API on a unix socket, for what a real engine will not
//! do on demand: a load that fails but answers 200 with an `errorDetail` (the endpoint's way,
//! skopeo #940), a daemon that hangs up mid-upload, an error status.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How the fake answers `POST /images/load`.
#[derive(Clone, Copy)]
enum Load {
    /// Read the whole upload, then 200 with a message stream that carries an error.
    ErrorDetail,
    /// Answer 500 before reading the upload, and hang up.
    Refuse,
    /// Read the upload, then 200 with a stream that never says the image was loaded.
    Silent,
}

/// Serve `/_ping` and `/images/load` on `sock` until the test ends; returns how many bytes of
/// upload the fake read, through the channel, per load.
fn fake_engine(sock: &Path, load: Load) -> std::sync::mpsc::Receiver<usize> {
    let listener = UnixListener::bind(sock).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || serve(conn, load, &tx));
        }
    });
    rx
}

fn serve(conn: UnixStream, load: Load, tx: &std::sync::mpsc::Sender<usize>) {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut w = conn;
    let mut request_line = String::new();
    r.read_line(&mut request_line).unwrap();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h == "\r\n" || h.is_empty() {
            break;
        }
    }
    let respond = |w: &mut UnixStream, status: &str, body: &str| {
        let _ = write!(
            w,
            "HTTP/1.1 {status}\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    };
    if request_line.contains("/_ping") {
        respond(&mut w, "200 OK", "OK");
    } else if request_line.contains("/images/load") {
        match load {
            Load::ErrorDetail | Load::Silent => {
                // Read the chunked upload to its terminating chunk.
                let mut n = 0usize;
                loop {
                    let mut size = String::new();
                    r.read_line(&mut size).unwrap();
                    let len = usize::from_str_radix(size.trim(), 16).unwrap();
                    let mut chunk = vec![0u8; len + 2];
                    r.read_exact(&mut chunk).unwrap();
                    n += len;
                    if len == 0 {
                        break;
                    }
                }
                tx.send(n).unwrap();
                if matches!(load, Load::Silent) {
                    respond(&mut w, "200 OK", "{\"stream\":\"Loading layer\"}\n");
                    return;
                }
                respond(
                    &mut w,
                    "200 OK",
                    "{\"stream\":\"Loading layer\"}\n{\"errorDetail\":{\"message\":\"write /var/lib/docker/tmp/x: no space left on device\"},\"error\":\"write /var/lib/docker/tmp/x: no space left on device\"}\n",
                );
            }
            Load::Refuse => {
                respond(
                    &mut w,
                    "500 Internal Server Error",
                    "{\"message\":\"the fake engine is out of order\"}",
                );
                let _ = w.shutdown(std::net::Shutdown::Both);
            }
        }
    } else {
        respond(&mut w, "404 Not Found", "{\"message\":\"no such image\"}");
    }
}

fn squash_into(sock: &Path, img: &str) -> (Option<i32>, String) {
    let o = Command::new(strata_bin())
        .args(["squash", img, "-o", "docker-daemon:fake:1"])
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn image(dir: &Path) -> String {
    let layers = vec![
        LayerBuilder::new().file("a", &"x".repeat(300_000)).build(),
        LayerBuilder::new().file("b", "2").build(),
    ];
    write_docker_archive(dir, &layers).display().to_string()
}

#[test]
fn a_load_that_fails_with_status_200_is_an_error_with_the_daemon_s_message() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("engine.sock");
    let uploads = fake_engine(&sock, Load::ErrorDetail);
    let img = image(d.path());
    let (code, err) = squash_into(&sock, &img);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("did not load the image"), "{err}");
    assert!(err.contains("no space left on device"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // The whole image went up, streamed, before the verdict.
    let n = uploads.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(n > 300_000, "uploaded {n} bytes");
}

#[test]
fn a_daemon_that_refuses_mid_upload_gives_its_message() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("engine.sock");
    let _uploads = fake_engine(&sock, Load::Refuse);
    let img = image(d.path());
    let (code, err) = squash_into(&sock, &img);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the fake engine is out of order"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn a_missing_image_is_one_line() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("engine.sock");
    let _uploads = fake_engine(&sock, Load::Refuse);
    let o = Command::new(strata_bin())
        .args(["inspect", "docker-daemon:nothing-here"])
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("docker-daemon:nothing-here:latest: no such image"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn an_image_that_fails_mid_upload_ends_the_load_instead_of_hanging() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("engine.sock");
    let _uploads = fake_engine(&sock, Load::ErrorDetail);
    // A layer whose bytes do not match its diff_id: squash fails while streaming the body.
    let layers = vec![
        LayerBuilder::new()
            .file("a", &"UNIQUE-PAYLOAD-".repeat(20_000))
            .build(),
    ];
    let archive = write_docker_archive(d.path(), &layers);
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes
        .windows(15)
        .position(|w| w == b"UNIQUE-PAYLOAD-")
        .unwrap();
    bytes[at + 100_000] ^= 1;
    std::fs::write(&archive, &bytes).unwrap();
    let started = std::time::Instant::now();
    let mut child = Command::new(strata_bin())
        .args([
            "squash",
            &archive.display().to_string(),
            "-o",
            "docker-daemon:fake:1",
        ])
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("strata hung after the image failed mid-upload");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("digest mismatch"), "{err}");
}

#[test]
fn a_load_that_never_says_it_loaded_is_not_a_success() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("engine.sock");
    let _uploads = fake_engine(&sock, Load::Silent);
    let img = image(d.path());
    let (code, err) = squash_into(&sock, &img);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("does not say it loaded the image"), "{err}");
}
