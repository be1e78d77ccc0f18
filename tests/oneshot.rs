//! The transport seam: a transport defined here, outside the library, whose blobs are
//! one-shot pipes (non-seekable, deliverable once). Every operation works on it unchanged, and
//! a counter shows each blob was opened at its source exactly once per command — including the
//! merge's hardlink re-read, squash's kept layers, a two-pass pipe output and `build --from`.

mod common;

use common::*;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use strata::blob::{Blob, BlobStore, Fetch};
use strata::control::Cancel;
use strata::image::Image;
use strata::sink::{Format, Target};
use strata::transport::{OpenOptions, Transport};

/// Blob bytes delivered through a fresh OS pipe by a writer thread, counting opens.
struct PipeFetch {
    bytes: Arc<Vec<u8>>,
    opens: Arc<AtomicUsize>,
}

impl Fetch for PipeFetch {
    fn open(&self) -> std::io::Result<Box<dyn Read + Send>> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        let (r, mut w) = std::io::pipe()?;
        let bytes = self.bytes.clone();
        std::thread::spawn(move || {
            // The reader may stop early (a failed command): a broken pipe is fine.
            let _ = w.write_all(&bytes);
        });
        Ok(Box::new(r))
    }
}

/// `pipe:REFERENCE`: the image at REFERENCE, each layer served as a pipe.
struct PipeTransport {
    opens: std::sync::Mutex<Vec<Arc<AtomicUsize>>>,
}

impl Transport for PipeTransport {
    fn name(&self) -> &'static str {
        "pipe"
    }

    fn open(&self, spec: &str, shown: &str, opts: &OpenOptions) -> strata::Result<Image> {
        let mut img = strata::reference::Reference::parse(spec)?.open_with(opts)?;
        img.reference = shown.to_string();
        let mut opens = self.opens.lock().unwrap();
        opens.clear();
        for l in &mut img.layers {
            let bytes = Arc::new(l.blob.region().unwrap().read_all().unwrap());
            let digest = format!("sha256:{}", sha256_hex(&bytes));
            let n = Arc::new(AtomicUsize::new(0));
            opens.push(n.clone());
            l.digest = Some(digest.clone());
            let size = bytes.len() as u64;
            l.blob = Blob::streamed(
                Box::new(PipeFetch { bytes, opens: n }),
                Some(digest),
                Some(size),
                opts.store.clone(),
            );
        }
        Ok(img)
    }
}

/// A fresh transport and store per command: "once" is per process.
struct Fixture {
    transport: PipeTransport,
    _store_dir: tempfile::TempDir,
    opts: OpenOptions,
    reference: String,
}

impl Fixture {
    fn new(reference: &str) -> Fixture {
        let d = tempfile::tempdir().unwrap();
        Fixture {
            transport: PipeTransport {
                opens: Default::default(),
            },
            opts: OpenOptions {
                store: Arc::new(BlobStore::new(d.path().join("blobs"), u64::MAX)),
                ..Default::default()
            },
            _store_dir: d,
            reference: reference.to_string(),
        }
    }

    fn image(&self) -> Image {
        let img = self
            .transport
            .open(
                &self.reference,
                &format!("pipe:{}", self.reference),
                &self.opts,
            )
            .unwrap();
        assert!(img.layers.iter().all(|l| !l.blob.is_local()));
        img
    }

    fn opens(&self) -> Vec<usize> {
        self.transport
            .opens
            .lock()
            .unwrap()
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .collect()
    }

    fn assert_each_once(&self, what: &str) {
        let o = self.opens();
        assert!(o.iter().all(|&n| n == 1), "{what}: opens per blob {o:?}");
    }
}

/// Layers with a hardlink whose target a higher layer shadows (the merge re-reads layer 0),
/// a deletion, and an overwrite.
fn layers() -> Vec<Vec<u8>> {
    let l0 = LayerBuilder::new()
        .dir("etc")
        .file("etc/a", "first a")
        .hardlink("etc/b", "etc/a")
        .file("etc/gone", "x")
        .file("keep", "kept")
        .build();
    let l1 = LayerBuilder::new()
        .file("etc/a", "second a")
        .whiteout("etc/gone")
        .build();
    let l2 = LayerBuilder::new()
        .dir("srv")
        .file("srv/new", "new")
        .hardlink("srv/alias", "keep")
        .build();
    vec![l0, l1, l2]
}

/// The fixtures: an uncompressed docker-archive and a gzip OCI layout of the same layers.
fn fixtures(dir: &std::path::Path) -> Vec<String> {
    let l = layers();
    let da = write_docker_archive(dir, &l);
    let oci = write_oci_dir(dir, &l, Comp::Gzip);
    vec![
        format!("docker-archive:{}", da.display()),
        format!("oci:{}", oci.display()),
    ]
}

fn flatten(layers: &[strata::image::Layer]) -> Vec<u8> {
    let mut out = Vec::new();
    strata::merge::flatten(
        layers,
        &mut out,
        &strata::merge::MergeOptions {
            verify: true,
            progress: None,
            cancel: Default::default(),
        },
    )
    .unwrap();
    out
}

#[test]
fn flatten_reads_each_blob_once_and_matches_the_local_image() {
    let d = tempfile::tempdir().unwrap();
    for r in fixtures(d.path()) {
        let f = Fixture::new(&r);
        let img = f.image();
        let out = flatten(&img.layers);
        f.assert_each_once(&format!("flatten {r}"));
        assert_eq!(out, flatten_ref(&r).unwrap(), "{r}");
        let tree = common::model::read_flat(&out).unwrap();
        assert!(
            tree.nodes.contains_key("etc/b"),
            "the re-read hardlink is there"
        );
    }
}

#[test]
fn squash_to_a_pipe_reads_each_blob_once() {
    let d = tempfile::tempdir().unwrap();
    for r in fixtures(d.path()) {
        for from in [0usize, 1] {
            for format in [Format::DockerArchive, Format::OciArchive] {
                let f = Fixture::new(&r);
                let img = f.image();
                let target = Target {
                    format,
                    path: None,
                    force: false,
                    compression: format.default_compression(),
                    level: None,
                    measure_first: false,
                    protect: &[],
                    registry: &Default::default(),
                };
                let opts = strata::squash::SquashOptions {
                    from,
                    created: Some("2020-01-01T00:00:00Z".into()),
                    verify: true,
                    progress: None,
                    cancel: Default::default(),
                };
                let mut piped = Vec::new();
                let report = strata::sink::write_image_to(&target, &mut piped, |w| {
                    strata::squash::squash(&img, &opts, w, &["t:1".into()])
                })
                .unwrap();
                // A docker-archive's layer size is planned from the headers (the blobs read
                // into the store once), then its content merged once; an oci-archive names
                // the blob by digest, so its layer is produced twice.
                let passes = if format == Format::DockerArchive {
                    1
                } else {
                    2
                };
                assert_eq!(report.passes, passes, "{format:?} to a pipe");
                f.assert_each_once(&format!("squash {r} --from {from} {format:?} -o -"));
                // The same bytes as squashing the local image.
                let mut local = strata::reference::Reference::parse(&r)
                    .unwrap()
                    .open(&Default::default())
                    .unwrap();
                // The history comment names the source: the same name for both.
                local.reference = img.reference.clone();
                let mut expect = Vec::new();
                strata::sink::write_image_to(&target, &mut expect, |w| {
                    strata::squash::squash(&local, &opts, w, &["t:1".into()])
                })
                .unwrap();
                assert!(
                    piped == expect,
                    "{r} --from {from} {format:?}: output differs"
                );
            }
        }
    }
}

#[test]
fn listings_read_each_blob_once() {
    use strata::listing::{Cache, Style};
    let d = tempfile::tempdir().unwrap();
    for r in fixtures(d.path()) {
        for cached in [false, true] {
            let cache_dir = tempfile::tempdir().unwrap();
            let cache = Cache::new(Some(cache_dir.path().to_path_buf()), cached);
            let f = Fixture::new(&r);
            let img = f.image();
            let mut out = Vec::new();
            strata::listing::write_files(
                &img,
                None,
                &strata::listing::Reading::new(true, &cache, &Cancel::new()),
                Style::Json,
                &mut out,
            )
            .unwrap();
            f.assert_each_once(&format!("files {r}"));
            let f = Fixture::new(&r);
            let img = f.image();
            strata::listing::write_diff(
                &img,
                None,
                &strata::listing::Reading::new(true, &cache, &Cancel::new()),
                Style::Json,
                &mut out,
            )
            .unwrap();
            let o = f.opens();
            // With the listings cached by `files`, diff reads no layer at all.
            let want = if cached { 0 } else { 1 };
            assert!(o.iter().all(|&n| n == want), "diff {r}: {o:?}");
            let f = Fixture::new(&r);
            let img = f.image();
            strata::listing::waste(
                &img,
                10,
                &strata::listing::Reading::new(true, &Cache::disabled(), &Cancel::new()),
            )
            .unwrap();
            f.assert_each_once(&format!("waste {r}"));
            let (fa, fb) = (Fixture::new(&r), Fixture::new(&r));
            let (a, b) = (fa.image(), fb.image());
            strata::listing::diff_images(
                &a,
                &b,
                &strata::listing::Reading::new(true, &Cache::disabled(), &Cancel::new()),
            )
            .unwrap();
            let (oa, ob) = (fa.opens(), fb.opens());
            // The shared layers are read once, from either image.
            let sum: Vec<usize> = oa.iter().zip(&ob).map(|(x, y)| x + y).collect();
            assert!(sum.iter().all(|&n| n == 1), "diff A B {r}: {oa:?} {ob:?}");
        }
    }
}

#[test]
fn extract_and_inspect_read_each_blob_once_or_not_at_all() {
    let d = tempfile::tempdir().unwrap();
    for r in fixtures(d.path()) {
        let f = Fixture::new(&r);
        let img = f.image();
        let report = strata::inspect::report(&img).unwrap();
        assert_eq!(report.layers.len(), 3);
        assert_eq!(f.opens(), vec![0, 0, 0], "inspect reads no layer");
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("root");
        std::fs::create_dir(&dest).unwrap();
        strata::extract::extract(
            &img.layers,
            &dest,
            &strata::extract::ExtractOptions {
                same_owner: false,
                xattrs: false,
                verify: true,
                progress: None,
                cancel: Default::default(),
            },
        )
        .unwrap();
        f.assert_each_once(&format!("extract {r}"));
        assert_eq!(std::fs::read(dest.join("etc/b")).unwrap(), b"first a");
        assert_eq!(std::fs::read(dest.join("srv/alias")).unwrap(), b"kept");
        assert!(!dest.join("etc/gone").exists());
    }
}

#[test]
fn build_from_a_streamed_base_reads_each_blob_once() {
    let d = tempfile::tempdir().unwrap();
    for r in fixtures(d.path()) {
        for format in [Format::DockerArchive, Format::OciArchive] {
            let f = Fixture::new(&r);
            let img = f.image();
            // What `build --from` does: the base's tree for the type checks (the listing
            // walk), then its layers copied through — to a pipe, measured first (two passes).
            strata::build::base_claims(
                &img,
                true,
                &strata::listing::Cache::disabled(),
                &Cancel::new(),
            )
            .unwrap();
            let target = Target {
                format,
                path: None,
                force: false,
                compression: format.default_compression(),
                level: None,
                measure_first: true,
                protect: &[],
                registry: &Default::default(),
            };
            let opts = strata::build::BuildOptions {
                mtime: 1,
                created: "1970-01-01T00:00:01Z".into(),
                config: Default::default(),
                progress: None,
                cancel: Default::default(),
            };
            let mut out = Vec::new();
            let report = strata::sink::write_image_to(&target, &mut out, |w| {
                strata::build::build(Some(&img), &[], &opts, w, &[])
            })
            .unwrap();
            f.assert_each_once(&format!("build --from {r} {format:?}"));
            assert_eq!(report.layers.len(), 3);
            for (out, l) in report.layers.iter().zip(&img.layers) {
                assert_eq!(Some(&out.diff_id), l.diff_id.as_ref());
            }
        }
    }
}

#[test]
fn a_corrupt_streamed_blob_is_a_digest_error_and_is_not_kept() {
    let d = tempfile::tempdir().unwrap();
    for r in fixtures(d.path()) {
        let f = Fixture::new(&r);
        let mut img = f.image();
        // Serve other bytes under layer 1's digest.
        let l = &mut img.layers[1];
        let other = Arc::new(layers()[2].clone());
        let other = match r.starts_with("oci:") {
            true => Arc::new(compress(&other, Comp::Gzip).0),
            false => other,
        };
        // The good blob goes first: a store shares one live blob per digest in a process.
        l.blob = Blob::streamed(
            Box::new(PipeFetch {
                bytes: Arc::new(Vec::new()),
                opens: Arc::new(AtomicUsize::new(0)),
            }),
            None,
            None,
            f.opts.store.clone(),
        );
        l.blob = Blob::streamed(
            Box::new(PipeFetch {
                bytes: other,
                opens: Arc::new(AtomicUsize::new(0)),
            }),
            l.digest.clone(),
            None,
            f.opts.store.clone(),
        );
        let mut out = Vec::new();
        let e = strata::merge::flatten(
            &img.layers,
            &mut out,
            &strata::merge::MergeOptions {
                verify: true,
                progress: None,
                cancel: Default::default(),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("layer 1") && e.contains("digest mismatch"),
            "{r}: {e}"
        );
        assert!(
            !img.layers[1].blob.is_local(),
            "{r}: a bad blob is not kept"
        );
    }
}
