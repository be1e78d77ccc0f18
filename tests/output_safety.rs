//! What strata writes over, and what it never touches: `--force` replaces only what strata
//! would have written there (a regular file; an OCI layout that holds neither the working
//! directory nor an input), devices and fifos are written in place, and a signal or a killed
//! run leaves no half-written output behind.

mod common;

use common::*;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn strata(dir: &Path, args: &[&str]) -> Output {
    Command::new(strata_bin())
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn failed_with(o: &Output, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "should fail: {err}");
    assert!(err.contains(what), "expected {what:?} in {err:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

fn image(dir: &Path) -> String {
    let layers = vec![
        LayerBuilder::new().file("etc/a", "1").build(),
        LayerBuilder::new().file("etc/b", "2").build(),
    ];
    write_docker_archive(dir, &layers).display().to_string()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn force_never_replaces_the_working_directory_root_or_a_plain_directory() {
    let d = tempfile::tempdir().unwrap();
    let img = image(d.path());
    std::fs::write(d.path().join("notes.txt"), "mine").unwrap();
    let before = names(d.path());
    // `-o .` in the directory that holds the input and the user's files.
    let o = strata(
        d.path(),
        &["squash", &img, "--format", "oci", "-o", ".", "--force"],
    );
    failed_with(&o, "working directory");
    let o = strata(
        d.path(),
        &["squash", &img, "--format", "oci", "-o", "..", "--force"],
    );
    failed_with(&o, "working directory");
    let o = strata(
        d.path(),
        &["squash", &img, "--format", "oci", "-o", "/", "--force"],
    );
    failed_with(&o, "root directory");
    // A directory of the user's files.
    let user = d.path().join("user");
    std::fs::create_dir(&user).unwrap();
    std::fs::write(user.join("keep.txt"), "keep").unwrap();
    let o = strata(
        d.path(),
        &["squash", &img, "--format", "oci", "-o", "user", "--force"],
    );
    failed_with(&o, "not an OCI layout");
    assert_eq!(std::fs::read(user.join("keep.txt")).unwrap(), b"keep");
    // A regular file where a layout directory would go.
    let o = strata(
        d.path(),
        &[
            "squash",
            &img,
            "--format",
            "oci",
            "-o",
            "notes.txt",
            "--force",
        ],
    );
    failed_with(&o, "not a directory");
    let mut after = names(d.path());
    after.retain(|n| n != "user");
    assert_eq!(after, before, "nothing appeared, nothing went");
    assert_eq!(std::fs::read(d.path().join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn force_never_replaces_an_input_or_what_holds_it() {
    let d = tempfile::tempdir().unwrap();
    let layers = vec![LayerBuilder::new().file("a", "1").build()];
    let layout = write_oci_dir(d.path(), &layers, Comp::Gzip);
    let input = format!("oci:{}:v1", layout.display());
    let blobs_before = names(&layout.join("blobs/sha256"));
    let o = strata(
        d.path(),
        &[
            "squash",
            &input,
            "--format",
            "oci",
            "-o",
            &layout.display().to_string(),
            "--force",
        ],
    );
    failed_with(&o, "holds the input");
    assert_eq!(names(&layout.join("blobs/sha256")), blobs_before);
}

#[test]
fn force_replaces_an_oci_layout_and_leaves_no_temp_behind() {
    let d = tempfile::tempdir().unwrap();
    let img = image(d.path());
    let o = strata(
        d.path(),
        &["squash", &img, "--format", "oci", "-o", "lay", "--tag", "a"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = strata(
        d.path(),
        &["squash", &img, "--format", "oci", "-o", "lay", "--tag", "b"],
    );
    failed_with(&o, "already exists; use --force");
    let o = strata(
        d.path(),
        &[
            "squash", &img, "--format", "oci", "-o", "lay", "--tag", "b", "--force",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let index = std::fs::read_to_string(d.path().join("lay/index.json")).unwrap();
    assert!(
        index.contains("\"b\""),
        "the new layout is in place: {index}"
    );
    assert!(
        names(d.path()).iter().all(|n| !n.contains(".strata-")),
        "{:?}",
        names(d.path())
    );
    // A file output replaces a regular file with --force, and refuses a directory.
    std::fs::write(d.path().join("out.tar"), "old").unwrap();
    let o = strata(d.path(), &["flatten", &img, "-o", "out.tar", "--force"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_ne!(std::fs::read(d.path().join("out.tar")).unwrap(), b"old");
    let o = strata(d.path(), &["flatten", &img, "-o", "lay", "--force"]);
    failed_with(&o, "is a directory");
    assert!(d.path().join("lay/index.json").is_file());
}

/// Read a fifo to its end on a thread; the bytes come back through the handle.
fn drain_fifo(path: &Path) -> std::thread::JoinHandle<Vec<u8>> {
    let path = path.to_path_buf();
    std::thread::spawn(move || std::fs::read(path).unwrap())
}

#[test]
fn devices_fifos_and_links_to_them_are_written_in_place() {
    let d = tempfile::tempdir().unwrap();
    let img = image(d.path());
    let want = flatten_ref(&img).unwrap();
    let fifo = d.path().join("pipe");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    for target in [&fifo, &link] {
        let reader = drain_fifo(&fifo);
        // No --force needed: nothing is replaced.
        let o = strata(
            d.path(),
            &["flatten", &img, "-o", &target.display().to_string()],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(reader.join().unwrap(), want, "{}", target.display());
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    }
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // /dev/null, with --force too: still the device afterwards.
    for extra in [&[][..], &["--force"][..]] {
        let mut args = vec!["flatten", img.as_str(), "-o", "/dev/null"];
        args.extend_from_slice(extra);
        let o = strata(d.path(), &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            std::fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }
    let o = strata(
        d.path(),
        &["squash", &img, "-o", "/dev/null", "--format", "oci-archive"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(names(d.path()).iter().all(|n| !n.contains(".strata-")));
}

/// An image big enough that flattening it takes a while (verified, in a debug build).
fn big_image(dir: &Path) -> String {
    let data = vec![7u8; 96 << 20];
    let layers = vec![
        LayerBuilder::new()
            .file_meta("big", &data, &Meta::default())
            .build(),
    ];
    write_docker_archive(dir, &layers).display().to_string()
}

#[test]
fn a_signal_removes_the_temp_output() {
    let d = tempfile::tempdir().unwrap();
    let img = big_image(d.path());
    for (sig, code) in [
        (rustix::process::Signal::TERM, 143),
        (rustix::process::Signal::INT, 130),
        (rustix::process::Signal::HUP, 129),
    ] {
        let child = Command::new(strata_bin())
            .current_dir(d.path())
            .args(["flatten", &img, "-o", "out.tar"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the temp file to appear, then signal.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !names(d.path()).iter().any(|n| n.ends_with(".partial")) {
            assert!(Instant::now() < deadline, "no temp file appeared");
            std::thread::sleep(Duration::from_millis(2));
        }
        let pid = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process(pid, sig).unwrap();
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{sig:?}: {err}");
        assert!(err.contains("interrupted"), "{err}");
        let left: Vec<String> = names(d.path())
            .into_iter()
            .filter(|n| n.contains("out.tar"))
            .collect();
        assert!(left.is_empty(), "{sig:?} left {left:?}");
    }
}

#[test]
fn a_later_run_removes_what_a_killed_run_left() {
    let d = tempfile::tempdir().unwrap();
    let img = image(d.path());
    // A pid no process can have (above any pid_max), and this very process (alive).
    let stale = d.path().join(".out.tar.strata-2147480000.Ab12Cd.partial");
    let alive = d.path().join(format!(
        ".out.tar.strata-{}.Ef34Gh.partial",
        std::process::id()
    ));
    let stale_dir = d.path().join(".lay.strata-2147480000.Ij56Kl.partial");
    std::fs::write(&stale, "half").unwrap();
    std::fs::write(&alive, "in progress").unwrap();
    std::fs::create_dir(&stale_dir).unwrap();
    std::fs::write(stale_dir.join("blob"), "half").unwrap();
    // Untouched for two hours (a dead writer's temp must also be idle to be removed).
    let old = std::time::SystemTime::now() - Duration::from_secs(7200);
    for p in [&stale, &alive, &stale_dir] {
        std::fs::File::open(p).unwrap().set_modified(old).unwrap();
    }
    // A dead pid's temp that was touched a minute ago may belong to another PID namespace.
    let recent = d.path().join(".out.tar.strata-2147480001.Mn78Op.partial");
    std::fs::write(&recent, "another container's").unwrap();
    let o = strata(d.path(), &["flatten", &img, "-o", "out.tar"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = strata(d.path(), &["squash", &img, "--format", "oci", "-o", "lay"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!stale.exists(), "the killed run's temp file is gone");
    assert!(
        !stale_dir.exists(),
        "the killed run's temp directory is gone"
    );
    assert!(alive.exists(), "a running writer's temp file stays");
    assert!(recent.exists(), "a recent temp stays, whatever its pid");
}

#[test]
fn a_layout_set_aside_by_a_killed_run_is_put_back_not_deleted() {
    let d = tempfile::tempdir().unwrap();
    let img = image(d.path());
    // Killed between moving the old `lay` aside and moving the new one in: only the aside
    // copy remains.
    let aside = d.path().join(".lay.strata-2147480000.old");
    std::fs::create_dir(&aside).unwrap();
    std::fs::write(aside.join("oci-layout"), "{}").unwrap();
    std::fs::write(aside.join("index.json"), "the user's layout").unwrap();
    let two_hours = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::open(&aside)
        .unwrap()
        .set_modified(two_hours)
        .unwrap();
    // The next run writing `lay` restores it first — and then refuses to replace it.
    let o = strata(d.path(), &["squash", &img, "--format", "oci", "-o", "lay"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("restoring") && err.contains("already exists"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("lay/index.json")).unwrap(),
        "the user's layout"
    );
    assert!(!aside.exists());
}

#[test]
fn dev_stdout_redirected_to_a_file_is_written_through_not_replaced() {
    let d = tempfile::tempdir().unwrap();
    let img = image(d.path());
    let want = flatten_ref(&img).unwrap();
    let out = d.path().join("redirected.tar");
    for extra in [&[][..], &["--force"][..]] {
        let f = std::fs::File::create(&out).unwrap();
        let mut args = vec!["flatten", img.as_str(), "-o", "/dev/stdout"];
        args.extend_from_slice(extra);
        let o = Command::new(strata_bin())
            .args(&args)
            .stdout(f)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(std::fs::read(&out).unwrap(), want);
        assert!(
            std::fs::symlink_metadata("/dev/stdout")
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
