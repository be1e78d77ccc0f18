//! `strata build`: a layered image from directories, reproducibly, to a file, a directory or
//! a pipe.

use super::progress::Bar;
use std::path::{Path, PathBuf};
use strata::build::config::{ConfigChanges, build_config, parse_command};
use strata::build::plan::{LayerSpec, parse_layer_arg, parse_layers_json};
use strata::build::walk::WalkOptions;
use strata::build::{BuildOptions, BuildReport, DEFAULT_EPOCH, base_claims, build, plan};
use strata::error::{Error, Result};
use strata::image::Image;
use strata::listing::Cache;
use strata::sink::{Format, Target};
use strata::timestamp::{parse_rfc3339, parse_time, rfc3339_from_epoch, source_date_epoch};

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// One layer: the tree under SRC placed at DEST (default: SRC's own absolute path).
    /// Several sources share a layer with commas. Repeat for more layers, bottom first.
    #[arg(long = "layer", value_name = "SRC[:DEST][,SRC2[:DEST2]…]")]
    pub layers: Vec<String>,
    /// Layers from JSON: `[[{"src": "…", "dest": "/…"}, …], …]`, relative sources taken from
    /// the file's directory. They come before any --layer.
    #[arg(long, value_name = "FILE.json")]
    pub layers_from: Option<PathBuf>,
    /// Put the new layers on top of this image (its layers are copied through unchanged).
    #[arg(long, value_name = "IMAGE")]
    pub from: Option<String>,
    /// Entrypoint: a JSON list (`["/app", "--serve"]`), or a string run by `/bin/sh -c` (a
    /// Dockerfile's shell form); "" clears. Like ENTRYPOINT, it clears the base's Cmd unless
    /// --cmd is given.
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// Cmd: a JSON list, or a string run by `/bin/sh -c`; "" clears.
    #[arg(long, value_name = "CMD")]
    pub cmd: Option<String>,
    /// Environment variable (replaces the base's value of KEY).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory (relative: against the base's).
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// User (and group) to run as: `name`, `uid`, `uid:gid`.
    #[arg(long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Label (added to the base's).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Exposed port.
    #[arg(long, value_name = "PORT[/PROTO]")]
    pub expose: Vec<String>,
    /// Volume mount point.
    #[arg(long = "volume", value_name = "PATH")]
    pub volumes: Vec<String>,
    /// Signal that stops a container (`SIGTERM`, `15`).
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// Architecture (default: the base's, else this machine's).
    #[arg(long)]
    pub arch: Option<String>,
    /// Operating system (default: the base's, else linux).
    #[arg(long)]
    pub os: Option<String>,
    /// Architecture variant (`v8`, `v7`).
    #[arg(long)]
    pub variant: Option<String>,
    /// A config to start from: a whole image config, or only its `config` part. The flags
    /// above are applied on top.
    #[arg(long = "config", value_name = "FILE.json")]
    pub config_file: Option<PathBuf>,
    /// `created` of the image, RFC 3339 (default: SOURCE_DATE_EPOCH, else the --mtime time).
    #[arg(long, value_name = "RFC3339")]
    pub created: Option<String>,
    /// The mtime of every entry: RFC 3339 or @SECONDS (default: SOURCE_DATE_EPOCH, else
    /// 1970-01-01T00:00:01Z). Every entry gets it, whatever the files' own times.
    #[arg(long, value_name = "TIME")]
    pub mtime: Option<String>,
    /// Keep the files' numeric owners (default: everything owned by 0:0).
    #[arg(long)]
    pub owner: bool,
    /// Keep extended attributes (file capabilities, user.*); security.selinux never.
    #[arg(long)]
    pub xattrs: bool,
    /// Tag(s) of the new image.
    #[arg(long = "tag", value_name = "NAME:TAG")]
    pub tags: Vec<String>,
    /// Output format (default docker-archive, or what `-o TRANSPORT:…` names; for `-o
    /// docker://` the manifest: docker-archive is Docker's schema 2, oci is OCI's).
    #[arg(long, value_enum)]
    pub format: Option<super::FormatArg>,
    /// Compression of the new layers (oci, oci-archive, docker://; default gzip).
    #[arg(long, value_enum)]
    pub compress: Option<super::LayerCompressArg>,
    /// Compression level.
    #[arg(long)]
    pub level: Option<u32>,
    /// Output file (or directory for --format oci), `-` for stdout, or a reference:
    /// `docker-archive:PATH`, `oci:DIR`, `oci-archive:PATH`, `docker-daemon:NAME:TAG`,
    /// `docker://HOST/REPO:TAG` (its format is the reference's; a registry takes
    /// --format docker-archive for Docker's manifest, oci for OCI's).
    #[arg(short, long, value_name = "FILE|DIR|-")]
    pub output: Option<PathBuf>,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
}

fn layer_specs(args: &BuildArgs) -> Result<Vec<LayerSpec>> {
    let mut specs = Vec::new();
    if let Some(f) = &args.layers_from {
        let bytes =
            std::fs::read(f).map_err(|e| Error::io(format!("reading {}", f.display()), e))?;
        specs.extend(parse_layers_json(&bytes, f)?);
    }
    for l in &args.layers {
        specs.push(parse_layer_arg(l)?);
    }
    if specs.is_empty() && args.from.is_none() {
        return Err(Error::Usage(
            "nothing to build: give at least one --layer SRC[:DEST] (or --layers-from, or --from)"
                .into(),
        ));
    }
    Ok(specs)
}

fn read_config_file(p: &Path) -> Result<serde_json::Value> {
    let bytes = std::fs::read(p).map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
    strata::image::parse_json(&bytes, &p.display().to_string())
}

fn changes(args: &BuildArgs) -> Result<ConfigChanges> {
    Ok(ConfigChanges {
        config_file: args
            .config_file
            .as_deref()
            .map(read_config_file)
            .transpose()?,
        entrypoint: args
            .entrypoint
            .as_deref()
            .map(|s| parse_command(s, "--entrypoint"))
            .transpose()?,
        cmd: args
            .cmd
            .as_deref()
            .map(|s| parse_command(s, "--cmd"))
            .transpose()?,
        env: args.env.clone(),
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        labels: args.labels.clone(),
        expose: args.expose.clone(),
        volumes: args.volumes.clone(),
        stop_signal: args.stop_signal.clone(),
        arch: args.arch.clone(),
        os: args.os.clone(),
        variant: args.variant.clone(),
    })
}

/// Entry mtime and image `created`: the flags, else SOURCE_DATE_EPOCH, else 1970-01-01T00:00:01Z.
fn times(args: &BuildArgs) -> Result<(i64, String)> {
    let epoch = source_date_epoch()?;
    let mtime = match &args.mtime {
        Some(t) => parse_time(t).map_err(|e| Error::Usage(format!("--mtime: {e}")))?,
        None => epoch.unwrap_or(DEFAULT_EPOCH),
    };
    if mtime < 0 {
        return Err(Error::Usage(format!(
            "--mtime / SOURCE_DATE_EPOCH: {mtime} is before 1970, which tar headers cannot hold"
        )));
    }
    let created = match &args.created {
        Some(c) => {
            parse_rfc3339(c).map_err(|e| Error::Usage(format!("--created: {e}")))?;
            c.clone()
        }
        None => rfc3339_from_epoch(epoch.unwrap_or(mtime)),
    };
    Ok((mtime, created))
}

/// Plan and write the image. `base` is the opened `--from` image; `cache` holds its listings.
pub fn run(
    args: &BuildArgs,
    base: Option<&Image>,
    cache: &Cache,
    quiet: bool,
    registry: &std::sync::Arc<strata::registry::Options>,
) -> Result<BuildReport> {
    let out = super::ImageOutput::resolve(
        args.output.as_deref(),
        args.format.map(Format::from),
        registry,
    )?;
    if out.format != Format::Oci && out.dest.is_none() {
        super::refuse_terminal(args.output.as_deref())?;
    }
    let tags = super::checked_tags(&args.tags, out.format)?;
    let specs = layer_specs(args)?;
    let (mtime, created) = times(args)?;
    let config = changes(args)?;
    // The flags are checked now, not after gigabytes of layers.
    build_config(
        base.map(|b| &b.config),
        &config,
        base.map_or(0, |b| b.layers.len()),
        &[],
        &[],
        &created,
    )?;
    let walk_opts = WalkOptions {
        keep_owner: args.owner,
        xattrs: args.xattrs,
    };
    let base_layers = base.map_or(0, |b| b.layers.len());
    let claims = match base {
        Some(b) => base_claims(b, true, cache, &super::signals::cancel())?,
        None => Default::default(),
    };
    let trees = plan(&specs, &walk_opts, base_layers, claims)?;
    // --force never replaces the base image nor a source tree (nor what holds them).
    let mut protect = base
        .map(|b| super::input_paths(&b.reference))
        .unwrap_or_default();
    protect.extend(
        specs
            .iter()
            .flat_map(|s| s.sources.iter().map(|src| src.src.clone())),
    );
    let target = Target {
        format: out.format,
        path: args.output.as_deref(),
        force: args.force,
        compression: args
            .compress
            .map(Into::into)
            .unwrap_or(out.default_compression()),
        level: args.level,
        measure_first: true,
        protect: &protect,
        registry: &out.registry,
    };
    let to_pipe = out.to_stdout(args.output.as_deref());
    let bytes: u64 = trees.iter().map(|t| t.file_bytes).sum();
    let progress = Bar::passes(bytes, if to_pipe { 2 } else { 1 }, 0, quiet);
    let opts = BuildOptions {
        mtime,
        created,
        config,
        progress: Bar::callback(&progress),
        cancel: super::signals::cancel(),
    };
    let report = out.write(&target, |w| build(base, &trees, &opts, w, &tags))?;
    Bar::finish(progress);
    Ok(report)
}
