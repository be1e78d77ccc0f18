mod commands;

use anyhow::Context;
use clap::{Parser, Subcommand};
use commands::progress::Bar;
use commands::{build, extract, flatten, squash};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use strata::blob::BlobStore;
use strata::image::oci_layout::Platform;
use strata::inspect;
use strata::reference::Reference;
use strata::transport::OpenOptions;

/// strata: look inside, flatten, squash, diff, extract and build container image layers.
///
/// IMAGE is `docker-archive:PATH[:NAME:TAG|:@N]`, `oci:DIR[:REF]`, `oci-archive:PATH[:REF]`,
/// `docker-daemon:NAME[:TAG]`, `docker://[HOST[:PORT]/]REPO[:TAG][@DIGEST]`, or a bare path (a directory is an OCI layout; a file is detected by its contents);
/// `-` reads an archive from stdin.
#[derive(Parser)]
#[command(name = "strata", version = env!("STRATA_VERSION"), propagate_version = true)]
struct Cli {
    /// More logging on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = "Global options")]
    verbose: u8,
    /// No progress bar.
    #[arg(short, long, global = true, help_heading = "Global options")]
    quiet: bool,
    /// Platform to pick from a multi-platform index (default linux/amd64). Given, it is also
    /// required of a single-platform image.
    #[arg(
        long,
        global = true,
        value_name = "OS/ARCH[/VARIANT]",
        help_heading = "Global options"
    )]
    platform: Option<String>,
    /// Cache of per-layer listings for files/diff/waste and build --from (default:
    /// $XDG_CACHE_HOME/strata).
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        help_heading = "Global options"
    )]
    cache_dir: Option<PathBuf>,
    /// Do not read or write the listing cache or the blob store (streamed blobs are then
    /// kept in a temp directory for the run only).
    #[arg(long, global = true, help_heading = "Global options")]
    no_cache: bool,
    /// Size cap of the store of streamed blobs under the cache directory (`blobs/`): least
    /// recently used blobs go past it.
    #[arg(
        long,
        global = true,
        value_name = "BYTES",
        default_value = "10GiB",
        help_heading = "Global options"
    )]
    blob_cache_size: String,
    /// Registry credentials (`docker://`): USER[:PASSWORD]. Without it, the auth files are
    /// read: --authfile, $REGISTRY_AUTH_FILE, podman's auth.json, Docker's config.json.
    #[arg(
        long,
        global = true,
        value_name = "USER[:PASS]",
        help_heading = "Registry options"
    )]
    creds: Option<String>,
    /// Read registry credentials from this file only (containers-auth.json or Docker's
    /// config.json format).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "Registry options"
    )]
    authfile: Option<PathBuf>,
    /// Verify registries' TLS certificates; `--tls-verify=false` also allows plain HTTP.
    #[arg(
        long,
        global = true,
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        help_heading = "Registry options"
    )]
    tls_verify: bool,
    /// Directory of CA certificates (*.crt) and a client certificate (*.cert + *.key) for
    /// registries (default: /etc/containers/certs.d/HOST, /etc/docker/certs.d/HOST).
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        help_heading = "Registry options"
    )]
    cert_dir: Option<PathBuf>,
    /// Give up on a registry connection silent for this many seconds.
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        default_value_t = 60,
        help_heading = "Registry options"
    )]
    timeout: u64,
    /// Retries of a failed registry request or a cut blob stream (exponential backoff).
    #[arg(
        long,
        global = true,
        value_name = "N",
        default_value_t = 4,
        help_heading = "Registry options"
    )]
    retry_times: u32,
    /// Blobs fetched from a registry at once, ahead of the merge.
    #[arg(
        short,
        long,
        global = true,
        value_name = "N",
        default_value_t = 4,
        value_parser = clap::value_parser!(u16).range(1..=64),
        help_heading = "Registry options"
    )]
    jobs: u16,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show tags, platform, entrypoint/cmd/env and the layers of an image.
    #[command(
        after_help = "Examples:\n  strata inspect docker-archive:busybox.tar\n  strata inspect oci:./layout:v1 --json | jq .layers"
    )]
    Inspect {
        /// The image: docker-archive:PATH[:NAME:TAG], oci:DIR[:REF], oci-archive:PATH[:REF],
        /// docker-daemon:NAME[:TAG], docker://[HOST/]REPO[:TAG][@DIGEST], a path (detected), or - for an archive on stdin.
        image: String,
        /// One JSON document instead of text (its fields: the README's "JSON shapes").
        #[arg(long)]
        json: bool,
    },
    /// Write the merged root filesystem of an image as one tar (whiteouts applied).
    #[command(
        after_help = "Examples:\n  strata flatten docker-archive:app.tar -o rootfs.tar\n  strata flatten oci:./layout --compress zstd -o rootfs.tar.zst\n  strata flatten app.tar --up-to 2 | tar -t"
    )]
    Flatten {
        /// The image: docker-archive:PATH[:NAME:TAG], oci:DIR[:REF], oci-archive:PATH[:REF],
        /// docker-daemon:NAME[:TAG], docker://[HOST/]REPO[:TAG][@DIGEST], a path (detected), or - for an archive on stdin.
        image: String,
        /// Output file, or `-` for stdout (the default when stdout is not a terminal).
        #[arg(short, long, value_name = "FILE|-")]
        output: Option<PathBuf>,
        /// Compress the output.
        #[arg(long, value_enum, default_value = "none")]
        compress: commands::CompressArg,
        /// Compression level (gzip/xz 0-9, zstd 1-22).
        #[arg(long)]
        level: Option<u32>,
        /// Stop at this layer: an index from the bottom (0-based) or a digest prefix.
        #[arg(long, value_name = "N|DIGEST")]
        up_to: Option<String>,
        /// Replace an existing output file.
        #[arg(long)]
        force: bool,
        /// Skip digest verification of the layers (faster, for trusted input).
        #[arg(long)]
        no_verify: bool,
    },
    /// List every entry of each layer (whiteouts shown as deletions).
    #[command(
        after_help = "Examples:\n  strata files app.tar --layer 2\n  strata files oci:./layout --json | jq '.layers[].entries | length'"
    )]
    Files {
        /// The image: docker-archive:PATH[:NAME:TAG], oci:DIR[:REF], oci-archive:PATH[:REF],
        /// docker-daemon:NAME[:TAG], docker://[HOST/]REPO[:TAG][@DIGEST], a path (detected), or - for an archive on stdin.
        image: String,
        /// Only this layer: an index from the bottom (0-based) or a digest prefix.
        #[arg(long, value_name = "N|DIGEST")]
        layer: Option<String>,
        /// One JSON document instead of text (its fields: the README's "JSON shapes").
        #[arg(long)]
        json: bool,
        /// Skip digest verification of the layers.
        #[arg(long)]
        no_verify: bool,
    },
    /// What each layer created, changed and deleted relative to the layers below it; with two
    /// images, how their merged trees differ.
    #[command(
        after_help = "Examples:\n  strata diff app.tar\n  strata diff app.tar --layer 3 --json\n  strata diff old.tar oci:./new-layout --json"
    )]
    Diff {
        /// The image: docker-archive:PATH[:NAME:TAG], oci:DIR[:REF], oci-archive:PATH[:REF],
        /// docker-daemon:NAME[:TAG], docker://[HOST/]REPO[:TAG][@DIGEST], a path (detected), or - for an archive on stdin.
        image: String,
        /// A second image: compare the two merged trees.
        image_b: Option<String>,
        /// Only this layer: an index from the bottom (0-based) or a digest prefix.
        #[arg(long, value_name = "N|DIGEST")]
        layer: Option<String>,
        /// One JSON document instead of text (its fields: the README's "JSON shapes").
        #[arg(long)]
        json: bool,
        /// Skip digest verification of the layers.
        #[arg(long)]
        no_verify: bool,
    },
    /// Bytes carried by lower layers but overwritten, deleted or hidden above, and an efficiency
    /// score; `--ci` turns thresholds into a failing exit code.
    #[command(
        after_help = "Examples:\n  strata waste app.tar\n  strata waste app.tar --ci --max-wasted 20MB --min-efficiency 95"
    )]
    Waste {
        /// The image: docker-archive:PATH[:NAME:TAG], oci:DIR[:REF], oci-archive:PATH[:REF],
        /// docker-daemon:NAME[:TAG], docker://[HOST/]REPO[:TAG][@DIGEST], a path (detected), or - for an archive on stdin.
        image: String,
        /// One JSON document instead of text (its fields: the README's "JSON shapes").
        #[arg(long)]
        json: bool,
        /// Exit with status 3 when a threshold below is crossed.
        #[arg(long)]
        ci: bool,
        /// Most wasted space allowed: bytes (`20MB`, `1GiB`, `5000`) or a share of all file bytes (`10%`).
        #[arg(long, value_name = "BYTES|PCT")]
        max_wasted: Option<String>,
        /// Least efficiency allowed, in percent.
        #[arg(long, value_name = "PCT")]
        min_efficiency: Option<String>,
        /// How many of the most wasteful paths to list.
        #[arg(long, default_value_t = 20)]
        top: usize,
        /// Skip digest verification of the layers.
        #[arg(long)]
        no_verify: bool,
    },
    /// Unpack the merged filesystem of an image into a directory, never writing outside it.
    #[command(
        after_help = "Examples:\n  strata extract app.tar ./rootfs\n  strata extract oci:./layout:v1 /srv/root --up-to 2 --no-same-owner"
    )]
    Extract {
        /// The image: docker-archive:PATH[:NAME:TAG], oci:DIR[:REF], oci-archive:PATH[:REF],
        /// docker-daemon:NAME[:TAG], docker://[HOST/]REPO[:TAG][@DIGEST], a path (detected), or - for an archive on stdin.
        image: String,
        /// Target directory (created if missing; must be empty unless --force).
        dir: PathBuf,
        /// Stop at this layer: an index from the bottom (0-based) or a digest prefix.
        #[arg(long, value_name = "N|DIGEST")]
        up_to: Option<String>,
        /// Extract into a non-empty directory.
        #[arg(long)]
        force: bool,
        /// Do not set owners from the image (the default when not running as root).
        #[arg(long)]
        no_same_owner: bool,
        /// Do not set extended attributes.
        #[arg(long)]
        no_xattrs: bool,
        /// Skip digest verification of the layers.
        #[arg(long)]
        no_verify: bool,
    },
    /// Build an image from directories: one layer per --layer, reproducibly (same inputs, same
    /// digests), to a file, an OCI directory or a pipe — nothing staged on disk.
    #[command(
        after_help = "Examples:\n  strata build --layer ./rootfs:/ --cmd /bin/sh --tag demo:1 -o - | docker load\n  strata build --from base.tar --layer ./app:/app --entrypoint '[\"/app/run\"]' -o app.tar\n  strata build --layers-from layers.json --format oci --compress zstd -o ./layout"
    )]
    Build(Box<build::BuildArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Example:\n  strata completions bash > /etc/bash_completion.d/strata")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `strata man > strata.1 && man ./strata.1`.
    Man,
    /// Serve squashed images, flattened trees and layer listings over HTTP, in front of a
    /// registry, with each client's own registry credentials.
    #[command(
        after_help = "Routes:\n  GET /v2/<name>/squash/<ref>[?from=N|last=N][&format=docker-archive|oci-archive][&tag=NAME:TAG]\n  GET /c1/squash/<namespace>/<repository>/<tag>\n  GET /v2/<name>/flatten/<ref>          (Accept-Encoding: gzip|zstd)\n  GET /v2/<name>/files/<ref>[?layer=N]  /diff/<ref>[?against=<name2>:<ref2>]  /waste/<ref>\n  GET /healthz  /metrics\n\nExample:\n  strata serve --listen 127.0.0.1:8080 --registry http://127.0.0.1:5000 &\n  curl -sf http://127.0.0.1:8080/v2/demo/squash/1 | docker load"
    )]
    Serve {
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: String,
        /// The registry: http://HOST:PORT (plain HTTP), https://HOST[:PORT] or HOST[:PORT] (TLS).
        #[arg(long, value_name = "URL")]
        registry: String,
        /// Computations at once; a request that needs one when all are busy gets 503.
        #[arg(long, value_name = "N", default_value_t = 4)]
        workers: usize,
        /// Longest a request waits for its result.
        #[arg(long, value_name = "SECONDS", default_value_t = 600)]
        request_timeout: u64,
        /// Size cap of the squash/flatten results kept on disk.
        #[arg(long, value_name = "BYTES", default_value = "10GiB")]
        result_cache_size: String,
        /// How long in-flight requests may finish after SIGTERM.
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        shutdown_grace: u64,
        /// Registry credentials used for clients that send none (a public mirror). Without it
        /// the server never uses credentials of its own.
        #[arg(long, value_name = "USER[:PASS]")]
        mirror_creds: Option<String>,
        /// Push each squash result back to the registry (NAME:strata-squash-KEY, with the
        /// client's credentials) and serve from there what another replica computed.
        #[arg(long)]
        publish: bool,
    },
    /// Copy an image between transports, its layers and config unchanged (skopeo copy's job).
    #[command(
        after_help = "Examples:\n  strata copy app.tar docker-daemon:app:1\n  strata copy docker-daemon:app:1 oci:./layout:app\n  strata copy docker://quay.io/org/app:1 docker://registry.local:5000/app:1\n  strata copy oci-archive:app.oci.tar docker-archive:app.tar"
    )]
    Copy {
        /// The image to copy.
        src: String,
        /// Where to: `docker-archive:PATH`, `oci:DIR`, `oci-archive:PATH`,
        /// `docker-daemon:NAME:TAG`, `docker://HOST/REPO:TAG`, or a path written in --format.
        dst: String,
        /// Output format for a plain path (default docker-archive).
        #[arg(long, value_enum)]
        format: Option<commands::FormatArg>,
        /// Tag(s) for the copy (default: the source's).
        #[arg(long = "tag", value_name = "NAME:TAG")]
        tags: Vec<String>,
        /// Compress layers this way (default: each as stored). A layer stored otherwise is
        /// recompressed; its diff_id stays.
        #[arg(long, value_enum)]
        compress: Option<commands::LayerCompressArg>,
        /// Replace an existing output (only a file, or an OCI layout).
        #[arg(long)]
        force: bool,
        /// Copy a multi-platform index whole — every platform's manifest, attestations too —
        /// byte for byte, so every digest stays (skopeo's --all). Between docker:// and oci:
        /// references; --format, --compress and --tag change manifests, so not with it.
        #[arg(long, conflicts_with_all = ["format", "compress", "tags"])]
        all: bool,
        #[command(flatten)]
        sides: CopySides,
    },
    /// Merge the layers of an image (or its top ones) into one, as a loadable image.
    #[command(
        after_help = "Examples:\n  strata squash app.tar -o squashed.tar && docker load -i squashed.tar\n  strata squash app.tar --last 3 --tag app:slim -o - | docker load\n  strata squash oci:./layout --format oci --compress zstd -o ./squashed"
    )]
    Squash {
        /// The image: docker-archive:PATH[:NAME:TAG], oci:DIR[:REF], oci-archive:PATH[:REF],
        /// docker-daemon:NAME[:TAG], docker://[HOST/]REPO[:TAG][@DIGEST], a path (detected), or - for an archive on stdin.
        image: String,
        /// Output file (or directory for --format oci), `-` for stdout, or a reference:
        /// `docker-archive:PATH`, `oci:DIR`, `oci-archive:PATH`, `docker-daemon:NAME:TAG`,
        /// `docker://HOST/REPO:TAG` (its format is the reference's; a registry takes
        /// --format docker-archive for Docker's manifest, oci for OCI's).
        #[arg(short, long, value_name = "FILE|DIR|-")]
        output: Option<PathBuf>,
        /// Output format (default docker-archive, or what `-o TRANSPORT:…` names; for `-o
        /// docker://` the manifest: docker-archive is Docker's schema 2, oci is OCI's).
        #[arg(long, value_enum)]
        format: Option<commands::FormatArg>,
        /// Tag(s) for the new image (default: the original's).
        #[arg(long = "tag", value_name = "NAME:TAG")]
        tags: Vec<String>,
        /// Squash this layer and all above it (index from the bottom, or a digest prefix);
        /// the layers below are kept as they are.
        #[arg(long, value_name = "N|DIGEST")]
        from: Option<String>,
        /// Squash only the top N layers.
        #[arg(long, value_name = "N")]
        last: Option<usize>,
        /// Compression of the new layer (oci, oci-archive, docker://; default gzip).
        #[arg(long, value_enum)]
        compress: Option<commands::LayerCompressArg>,
        /// Compression level.
        #[arg(long)]
        level: Option<u32>,
        /// `created` time of the new image, RFC 3339 (default: SOURCE_DATE_EPOCH, else the original's).
        #[arg(long, value_name = "RFC3339")]
        created: Option<String>,
        /// Replace an existing output.
        #[arg(long)]
        force: bool,
        /// Skip digest verification of the source layers.
        #[arg(long)]
        no_verify: bool,
    },
}

/// Print a report as pretty JSON or as its text rendering.
fn print_report<T: serde::Serialize>(
    json: bool,
    report: &T,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).context("rendering JSON")?
        );
    } else {
        print!("{}", text(report));
    }
    Ok(())
}

/// How a listing command reads `img`, with a bar (on a terminal) over the bytes of the `read`
/// layers the cache cannot answer for.
fn reading<'a, 'l>(
    verify: bool,
    cache: &'a strata::listing::Cache,
    cancel: &'a strata::control::Cancel,
    read: impl IntoIterator<Item = &'l strata::image::Layer>,
    layers: usize,
    quiet: bool,
) -> (strata::listing::Reading<'a>, Option<std::sync::Arc<Bar>>) {
    let total = strata::listing::bytes_to_read(read, cache);
    // Nothing to read (all cached): no bar.
    let bar = Bar::new(total, layers, quiet || total == 0);
    let read = strata::listing::Reading {
        progress: Bar::callback(&bar),
        ..strata::listing::Reading::new(verify, cache, cancel)
    };
    (read, bar)
}

fn style(json: bool) -> strata::listing::Style {
    if json {
        strata::listing::Style::Json
    } else {
        strata::listing::Style::Text
    }
}

/// Buffered stdout for reports written as they are produced.
fn stdout() -> std::io::BufWriter<std::io::StdoutLock<'static>> {
    std::io::BufWriter::with_capacity(32 << 10, std::io::stdout().lock())
}

/// Log level: `-v` (info), `-vv` (debug), `-vvv` (trace), or `STRATA_LOG=LEVEL`; warnings by
/// default. (A plain level, not per-module directives: the filter's regex engine alone would
/// cost a tenth of the binary and of the memory `files`/`diff` need.)
fn init_logging(verbose: u8) {
    use tracing_subscriber::filter::LevelFilter;
    let level = match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let env = std::env::var("STRATA_LOG").ok();
    let from_env = env.as_deref().map(str::parse::<LevelFilter>);
    let level = match from_env {
        Some(Ok(l)) => l,
        _ => level,
    };
    // Colour only for a person at a terminal, and never under NO_COLOR (no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
    if let (Some(v), Some(Err(_))) = (env, from_env) {
        tracing::warn!("STRATA_LOG={v}: not a level (off, error, warn, info, debug, trace)");
    }
}

/// The open options of a command that has `--no-verify`.
fn unverified(opts: &OpenOptions, no_verify: bool) -> OpenOptions {
    OpenOptions {
        verify: !no_verify,
        ..opts.clone()
    }
}

fn open(image: &str, opts: &OpenOptions) -> anyhow::Result<strata::image::Image> {
    // `-` reads an archive from stdin: a person typing there is not one.
    if (image == "-" || image.ends_with(":-"))
        && std::io::IsTerminal::is_terminal(&std::io::stdin())
    {
        anyhow::bail!(
            "refusing to read an image from a terminal: pipe one in (docker save IMAGE | strata … -) or name a file"
        );
    }
    let r = Reference::parse(image)?;
    Ok(r.open_with(opts)?)
}

/// Where streamed blobs are kept: `blobs/` in the cache directory, or a temp directory.
fn blob_store(cache: &strata::listing::Cache, cap: &str) -> anyhow::Result<BlobStore> {
    let cap = strata::listing::render::parse_bytes(cap)
        .filter(|n| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| {
            anyhow::anyhow!("--blob-cache-size {cap:?}: expected bytes (10GiB, 500MB)")
        })?;
    Ok(match cache.dir() {
        Some(dir) => BlobStore::new(dir.join("blobs"), cap as u64),
        None => BlobStore::temporary(),
    })
}

/// skopeo's per-side registry flags of `copy`: each, when given, replaces the global one for
/// the source or the destination only.
#[derive(clap::Args, Clone, Default)]
struct CopySides {
    /// Credentials for the source registry only (USER[:PASS]).
    #[arg(
        long,
        value_name = "USER[:PASS]",
        help_heading = "Per-side registry options"
    )]
    src_creds: Option<String>,
    /// Credentials for the destination registry only (USER[:PASS]).
    #[arg(
        long,
        value_name = "USER[:PASS]",
        help_heading = "Per-side registry options"
    )]
    dest_creds: Option<String>,
    /// The auth file for the source registry only.
    #[arg(long, value_name = "FILE", help_heading = "Per-side registry options")]
    src_authfile: Option<PathBuf>,
    /// The auth file for the destination registry only.
    #[arg(long, value_name = "FILE", help_heading = "Per-side registry options")]
    dest_authfile: Option<PathBuf>,
    /// --tls-verify for the source registry only.
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", help_heading = "Per-side registry options")]
    src_tls_verify: Option<bool>,
    /// --tls-verify for the destination registry only.
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", help_heading = "Per-side registry options")]
    dest_tls_verify: Option<bool>,
    /// --cert-dir for the source registry only.
    #[arg(long, value_name = "DIR", help_heading = "Per-side registry options")]
    src_cert_dir: Option<PathBuf>,
    /// --cert-dir for the destination registry only.
    #[arg(long, value_name = "DIR", help_heading = "Per-side registry options")]
    dest_cert_dir: Option<PathBuf>,
}

/// The global registry flags, apart from the command (which `run` takes apart).
#[derive(Clone)]
struct RegistryFlags {
    creds: Option<String>,
    authfile: Option<PathBuf>,
    tls_verify: bool,
    cert_dir: Option<PathBuf>,
    timeout: u64,
    retries: u32,
    jobs: usize,
    quiet: bool,
}

impl RegistryFlags {
    fn of(cli: &Cli) -> Self {
        RegistryFlags {
            creds: cli.creds.clone(),
            authfile: cli.authfile.clone(),
            tls_verify: cli.tls_verify,
            cert_dir: cli.cert_dir.clone(),
            timeout: cli.timeout,
            retries: cli.retry_times,
            jobs: usize::from(cli.jobs),
            quiet: cli.quiet,
        }
    }

    /// These flags with one side's of `copy` in place of the global ones it gives.
    fn side(
        &self,
        creds: &Option<String>,
        authfile: &Option<PathBuf>,
        tls_verify: Option<bool>,
        cert_dir: &Option<PathBuf>,
    ) -> Self {
        RegistryFlags {
            creds: creds.clone().or_else(|| self.creds.clone()),
            authfile: authfile.clone().or_else(|| self.authfile.clone()),
            tls_verify: tls_verify.unwrap_or(self.tls_verify),
            cert_dir: cert_dir.clone().or_else(|| self.cert_dir.clone()),
            ..self.clone()
        }
    }

    /// How registries are reached with these flags.
    fn options(&self) -> anyhow::Result<strata::registry::Options> {
        use strata::registry::credentials::{Credential, Lookup};
        Ok(strata::registry::Options {
            lookup: Lookup {
                creds: self
                    .creds
                    .as_deref()
                    .map(Credential::from_flag)
                    .transpose()?,
                authfile: self.authfile.clone(),
                no_files: false,
            },
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir.clone(),
            timeout: std::time::Duration::from_secs(self.timeout.max(1)),
            retries: self.retries,
            jobs: self.jobs,
            transfers: commands::progress::TransferBars::for_terminal(self.quiet),
            ..Default::default()
        })
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cache = strata::listing::Cache::new(cli.cache_dir.clone(), !cli.no_cache);
    let opts = OpenOptions {
        platform: match &cli.platform {
            Some(p) => Platform::parse(p)?,
            None => Platform::default(),
        },
        require_platform: cli.platform.is_some(),
        verify: true,
        store: Arc::new(blob_store(&cache, &cli.blob_cache_size)?),
        registry: Arc::new(RegistryFlags::of(&cli).options()?),
    };
    let registry_flags = RegistryFlags::of(&cli);
    match cli.command {
        Command::Inspect { image, json } => {
            let img = open(&image, &opts)?;
            let report = inspect::report(&img)?;
            print_report(json, &report, inspect::render_text)?;
        }
        Command::Flatten {
            image,
            output,
            compress,
            level,
            up_to,
            force,
            no_verify,
        } => {
            let img = open(&image, &unverified(&opts, no_verify))?;
            let args = flatten::FlattenArgs {
                output,
                compress: compress.into(),
                level,
                up_to,
                force,
                quiet: cli.quiet,
                verify: !no_verify,
            };
            let stats = flatten::run(&img, &args).with_context(|| format!("flattening {image}"))?;
            tracing::info!(
                "{} layers, {} entries read, {} written, {} paths indexed ({} KiB)",
                stats.layers,
                stats.entries_read,
                stats.entries_written,
                stats.paths,
                stats.index_bytes / 1024
            );
        }
        Command::Files {
            image,
            layer,
            json,
            no_verify,
        } => {
            let img = open(&image, &unverified(&opts, no_verify))?;
            let only = layer.map(|l| img.layer_index(&l)).transpose()?;
            let chosen = img
                .layers
                .iter()
                .filter(|l| only.is_none_or(|o| o == l.index));
            let cancel = commands::signals::cancel();
            let (read, bar) = reading(
                !no_verify,
                &cache,
                &cancel,
                chosen,
                img.layers.len(),
                cli.quiet,
            );
            strata::listing::write_files(&img, only, &read, style(json), &mut stdout())
                .with_context(|| format!("listing {image}"))?;
            Bar::finish(bar);
        }
        Command::Diff {
            image,
            image_b: Some(other),
            layer,
            json,
            no_verify,
        } => {
            if layer.is_some() {
                anyhow::bail!(
                    "--layer picks a layer of one image's diff; `diff A B` compares whole trees"
                );
            }
            let a = open(&image, &unverified(&opts, no_verify))?;
            let b = open(&other, &unverified(&opts, no_verify))?;
            let shared = strata::listing::shared_layers(&a, &b);
            let both = a.layers.iter().chain(&b.layers[shared..]);
            let cancel = commands::signals::cancel();
            // Layers of two images: named by index alone (`layer 3`).
            let (read, bar) = reading(!no_verify, &cache, &cancel, both, 0, cli.quiet);
            let d = strata::listing::diff_images(&a, &b, &read)
                .with_context(|| format!("comparing {image} with {other}"))?;
            Bar::finish(bar);
            print_report(json, &d, strata::listing::render_tree_diff)?;
        }
        Command::Waste {
            image,
            json,
            ci,
            max_wasted,
            min_efficiency,
            top,
            no_verify,
        } => {
            strata::listing::render::check_ci_flags(
                ci,
                max_wasted.as_deref(),
                min_efficiency.as_deref(),
            )?;
            let img = open(&image, &unverified(&opts, no_verify))?;
            let cancel = commands::signals::cancel();
            let (read, bar) = reading(
                !no_verify,
                &cache,
                &cancel,
                &img.layers,
                img.layers.len(),
                cli.quiet,
            );
            let w = strata::listing::waste(&img, top, &read)
                .with_context(|| format!("measuring {image}"))?;
            Bar::finish(bar);
            print_report(json, &w, strata::listing::render_waste)?;
            if ci {
                let failures = strata::listing::ci_failures(
                    &w,
                    max_wasted.as_deref(),
                    min_efficiency.as_deref(),
                )?;
                if !failures.is_empty() {
                    eprintln!("strata: waste check failed: {}", failures.join("; "));
                    return Ok(ExitCode::from(3));
                }
            }
        }
        Command::Diff {
            image,
            image_b: None,
            layer,
            json,
            no_verify,
        } => {
            let img = open(&image, &unverified(&opts, no_verify))?;
            let only = layer.map(|l| img.layer_index(&l)).transpose()?;
            // The chosen layer needs those below it, not those above.
            let walked = &img.layers[..only.map_or(img.layers.len(), |o| o + 1)];
            let cancel = commands::signals::cancel();
            let (read, bar) = reading(
                !no_verify,
                &cache,
                &cancel,
                walked,
                img.layers.len(),
                cli.quiet,
            );
            strata::listing::write_diff(&img, only, &read, style(json), &mut stdout())
                .with_context(|| format!("diffing {image}"))?;
            Bar::finish(bar);
        }
        Command::Extract {
            image,
            dir,
            up_to,
            force,
            no_same_owner,
            no_xattrs,
            no_verify,
        } => {
            let img = open(&image, &unverified(&opts, no_verify))?;
            let args = extract::ExtractArgs {
                dir,
                up_to,
                force,
                same_owner: if no_same_owner { Some(false) } else { None },
                xattrs: !no_xattrs,
                quiet: cli.quiet,
                verify: !no_verify,
            };
            let stats = extract::run(&img, &args).with_context(|| format!("extracting {image}"))?;
            tracing::info!("{} entries, {} bytes written", stats.entries, stats.bytes);
        }
        Command::Build(args) => {
            let base = args.from.as_deref().map(|f| open(f, &opts)).transpose()?;
            let report = build::run(&args, base.as_ref(), &cache, cli.quiet, &opts.registry)
                .context("building the image")?;
            if !cli.quiet {
                let id = strata::image::sha256_hex(&report.config);
                let shown = match args.output.as_deref() {
                    Some(p) if p != std::path::Path::new("-") => p.display().to_string(),
                    _ => "stdout".into(),
                };
                eprintln!(
                    "strata: built sha256:{id} ({}) to {shown}",
                    commands::count(report.layers.len(), "layer")
                );
            }
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "strata", &mut std::io::stdout());
        }
        Command::Serve {
            listen,
            registry,
            workers,
            request_timeout,
            result_cache_size,
            shutdown_grace,
            mirror_creds,
            publish,
        } => {
            let cap = strata::listing::render::parse_bytes(&result_cache_size)
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| {
                    anyhow::anyhow!("--result-cache-size {result_cache_size:?}: expected bytes")
                })?;
            let cache_dir = match cache.dir() {
                Some(d) => d.to_path_buf(),
                None => {
                    anyhow::bail!("strata serve keeps blobs and results on disk: drop --no-cache")
                }
            };
            strata_serve::run(
                &listen,
                strata_serve::Config {
                    registry,
                    tls_verify: cli.tls_verify,
                    cert_dir: cli.cert_dir.clone(),
                    cache_dir,
                    workers,
                    request_timeout: std::time::Duration::from_secs(request_timeout.max(1)),
                    result_cache_size: cap as u64,
                    shutdown_grace: std::time::Duration::from_secs(shutdown_grace),
                    mirror_creds,
                    publish,
                },
            )?;
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .context("writing the manual page")?;
        }
        Command::Copy {
            src,
            dst,
            format,
            tags,
            compress,
            force,
            all,
            sides,
        } => {
            let s = &sides;
            let src_registry = registry_flags
                .side(
                    &s.src_creds,
                    &s.src_authfile,
                    s.src_tls_verify,
                    &s.src_cert_dir,
                )
                .options()?;
            let dst_registry = registry_flags
                .side(
                    &s.dest_creds,
                    &s.dest_authfile,
                    s.dest_tls_verify,
                    &s.dest_cert_dir,
                )
                .options()?;
            if all {
                let protect = commands::input_paths(&src);
                let pushed = strata::mirror::copy_all(
                    &src,
                    &src_registry,
                    &dst,
                    &dst_registry,
                    force,
                    &protect,
                )
                .with_context(|| format!("copying {src} to {dst}"))?;
                println!("{pushed}");
                if !cli.quiet {
                    eprintln!("strata: copied {src} to {dst}, every manifest");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let dst_registry = Arc::new(dst_registry);
            let src_opts = OpenOptions {
                registry: Arc::new(src_registry),
                ..opts.clone()
            };
            let img = open(&src, &src_opts)?;
            let dst_path = std::path::PathBuf::from(&dst);
            let out = commands::ImageOutput::resolve(
                Some(&dst_path),
                format.map(Into::into),
                &dst_registry,
            )?;
            let protect = commands::input_paths(&img.reference);
            let target = strata::sink::Target {
                format: out.format,
                path: Some(&dst_path),
                force,
                compression: compress
                    .map(Into::into)
                    .unwrap_or(out.default_compression()),
                level: None,
                measure_first: false,
                protect: &protect,
                registry: &dst_registry,
            };
            let tags = if tags.is_empty() {
                img.tags.clone()
            } else {
                commands::checked_tags(&tags, out.format)?
            };
            let recompress = compress.map(Into::into);
            // Nothing asked to change: the manifest too is copied as it is, where it can be.
            let keep_manifest = format.is_none() && compress.is_none();
            let cancel = commands::signals::cancel();
            out.write(&target, |w| {
                strata::copy::copy(&img, w, &tags, recompress, keep_manifest, &cancel)
            })
            .with_context(|| format!("copying {src} to {dst}"))?;
            if !cli.quiet {
                eprintln!("strata: copied {src} to {dst}");
            }
        }
        Command::Squash {
            image,
            output,
            format,
            tags,
            from,
            last,
            compress,
            level,
            created,
            force,
            no_verify,
        } => {
            let img = open(&image, &unverified(&opts, no_verify))?;
            let args = squash::SquashArgs {
                output,
                format: format.map(Into::into),
                tags,
                from,
                last,
                compress: compress.map(Into::into),
                level,
                created,
                force,
                quiet: cli.quiet,
                verify: !no_verify,
                registry: opts.registry.clone(),
            };
            let report = squash::run(&img, &args).with_context(|| format!("squashing {image}"))?;
            if let Some(l) = report.layers.last() {
                tracing::info!(
                    "squashed layer {} ({} bytes, {} pass(es))",
                    l.digest,
                    l.size,
                    report.passes
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    commands::signals::install();
    // A report whose reader went away (`strata diff … | head`) ends quietly, as a C tool
    // killed by SIGPIPE would (status 141). An image stream cut off is a real failure.
    let report = matches!(
        cli.command,
        Command::Inspect { .. }
            | Command::Flatten { .. }
            | Command::Files { .. }
            | Command::Diff { .. }
            | Command::Waste { .. }
    );
    match run(cli) {
        Ok(code) => code,
        Err(e) if report && broken_pipe(&e) => ExitCode::from(141),
        // Interrupted: what was half written is gone; say so in one line.
        Err(_) if commands::signals::received().is_some() => {
            let sig = commands::signals::received().unwrap_or(0);
            eprintln!("strata: interrupted (signal {sig})");
            ExitCode::from((128 + sig).clamp(0, 255) as u8)
        }
        Err(e) => {
            // One line: the chain of contexts, outermost first.
            // (A cause already printed by its parent's message is not repeated.)
            let mut msg = String::new();
            for c in e.chain() {
                let c = c.to_string();
                if msg.ends_with(&c) {
                    continue;
                }
                if !msg.is_empty() {
                    msg.push_str(": ");
                }
                msg.push_str(&c);
            }
            eprintln!("strata: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
