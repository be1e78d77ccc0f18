//! Cancellation through the library: a flatten of a large image, cancelled mid-way, returns
//! `Error::Cancelled` within a second, and no decoder or verifier thread outlives it; listings
//! stop the same way. (Tests of their own binary, one at a time, so the process's thread
//! count is the running test's.)

mod common;

use common::*;
use std::io::Write;
use std::time::{Duration, Instant};
use strata::control::Cancel;

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// A writer that trips `cancel` once `limit` bytes went through it.
struct TripAfter {
    cancel: Cancel,
    written: u64,
    limit: u64,
    tripped: Option<Instant>,
}

impl Write for TripAfter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len() as u64;
        if self.written >= self.limit && self.tripped.is_none() {
            self.cancel.cancel();
            self.tripped = Some(Instant::now());
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A layer of `n` files of 1 MiB each, content varying by `seed` (compresses, but not to
/// nothing).
fn big_layer(seed: u8, n: usize) -> Vec<u8> {
    let mut l = LayerBuilder::new();
    let block: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ seed)
        .collect();
    let data: Vec<u8> = block.iter().cycle().take(1 << 20).copied().collect();
    l.dir("d");
    for i in 0..n {
        l.file_meta(&format!("d/f{seed}-{i}"), &data, &Meta::default());
    }
    l.build()
}

/// Wait up to a second for the thread count to fall back to `before`.
fn assert_threads_back_to(before: usize) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while threads() > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .map(|t| std::fs::read_to_string(t.path().join("comm")).unwrap_or_default())
        .collect();
    assert_eq!(
        threads(),
        before,
        "threads left running after the cancel: {names:?}"
    );
}

#[test]
fn a_cancelled_listing_stops_and_leaves_no_thread() {
    let _one = ONE_AT_A_TIME.lock().unwrap();
    let d = tempfile::tempdir().unwrap();
    let layers: Vec<Vec<u8>> = (0..3u8).map(|i| big_layer(i, 8)).collect();
    let root = write_oci_dir(d.path(), &layers, Comp::Gzip);
    let img = strata::reference::Reference::parse(&format!("oci:{}", root.display()))
        .unwrap()
        .open(&Default::default())
        .unwrap();
    let before = threads();
    let cancel = Cancel::new();
    // A writer that cancels at the first byte of the report.
    struct CancelOnWrite(Cancel);
    impl Write for CancelOnWrite {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.cancel();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let cache = strata::listing::Cache::disabled();
    let r = strata::listing::write_files(
        &img,
        None,
        &strata::listing::Reading::new(true, &cache, &cancel),
        strata::listing::Style::Json,
        &mut CancelOnWrite(cancel.clone()),
    );
    assert!(
        matches!(r, Err(strata::Error::Cancelled)),
        "{:?}",
        r.map(|_| ())
    );
    let r = strata::listing::waste(
        &img,
        5,
        &strata::listing::Reading::new(true, &cache, &cancel),
    );
    assert!(
        matches!(r, Err(strata::Error::Cancelled)),
        "{:?}",
        r.map(|_| ())
    );
    assert_threads_back_to(before);
}

#[test]
fn cancel_mid_flatten_returns_within_a_second_and_leaves_no_thread() {
    let _one = ONE_AT_A_TIME.lock().unwrap();
    let d = tempfile::tempdir().unwrap();
    let layers: Vec<Vec<u8>> = (0..4u8).map(|i| big_layer(i, 16)).collect();
    // Gzip layers (decoder threads) beside uncompressed ones (verifiers hashing the whole blob).
    let blobs: Vec<(Vec<u8>, &str)> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| compress(l, if i % 2 == 0 { Comp::Gzip } else { Comp::None }))
        .collect();
    let root = d.path().join("layout");
    write_files(
        &root,
        &oci_layout_from_blobs(&blobs, &config_json(&layers), "v1"),
    );
    let img = strata::reference::Reference::parse(&format!("oci:{}", root.display()))
        .unwrap()
        .open(&Default::default())
        .unwrap();

    let before = threads();
    let cancel = Cancel::new();
    let mut w = TripAfter {
        cancel: cancel.clone(),
        written: 0,
        limit: 4 << 20,
        tripped: None,
    };
    let started = Instant::now();
    let r = strata::merge::flatten(
        &img.layers,
        &mut w,
        &strata::merge::MergeOptions {
            verify: true,
            progress: None,
            cancel,
        },
    );
    let returned = Instant::now();
    let tripped = w.tripped.expect("the merge wrote its first MiBs");
    assert!(
        matches!(r, Err(strata::Error::Cancelled)),
        "expected Cancelled, got {:?}",
        r.map(|_| ())
    );
    assert!(
        returned - tripped < Duration::from_secs(1),
        "returned {:?} after the cancel (started {:?} before it)",
        returned - tripped,
        tripped - started
    );
    // Every thread the merge started ends within a second as well.
    assert_threads_back_to(before);
}
