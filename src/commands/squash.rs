//! `strata squash`: a `docker load`-able (or OCI) image with the top layers merged into one.

use super::progress::Bar;
use std::path::PathBuf;
use strata::compression::Compression;
use strata::error::{Error, Result};
use strata::image::Image;
use strata::sink::Target;
use strata::squash::{SquashOptions, SquashReport, squash};
use strata::timestamp::{parse_rfc3339, rfc3339_from_epoch, source_date_epoch};

pub use strata::sink::Format;

pub struct SquashArgs {
    pub output: Option<PathBuf>,
    /// `--format`, when given.
    pub format: Option<Format>,
    pub tags: Vec<String>,
    pub from: Option<String>,
    pub last: Option<usize>,
    pub compress: Option<Compression>,
    pub level: Option<u32>,
    pub created: Option<String>,
    pub force: bool,
    pub quiet: bool,
    pub verify: bool,
    pub registry: std::sync::Arc<strata::registry::Options>,
}

fn created(args: &SquashArgs) -> Result<Option<String>> {
    if let Some(c) = &args.created {
        parse_rfc3339(c).map_err(|e| Error::Usage(format!("--created: {e}")))?;
        return Ok(Some(c.clone()));
    }
    Ok(source_date_epoch()?.map(rfc3339_from_epoch))
}

pub fn run(img: &Image, args: &SquashArgs) -> Result<SquashReport> {
    let out = super::ImageOutput::resolve(args.output.as_deref(), args.format, &args.registry)?;
    if out.format != Format::Oci && out.dest.is_none() {
        super::refuse_terminal(args.output.as_deref())?;
    }
    let from = match (&args.from, args.last) {
        (Some(_), Some(_)) => {
            return Err(Error::Usage("--from and --last exclude each other".into()));
        }
        (Some(spec), None) => img.layer_index(spec)?,
        (None, Some(0)) => return Err(Error::Usage("--last 0 squashes nothing".into())),
        (None, Some(n)) => img.layers.len().saturating_sub(n),
        (None, None) => 0,
    };
    let tags = if args.tags.is_empty() {
        img.tags.clone()
    } else {
        super::checked_tags(&args.tags, out.format)?
    };
    let total: u64 = img.layers[from.min(img.layers.len())..]
        .iter()
        .map(|l| l.stored_size())
        .sum();
    let progress = Bar::new(total, img.layers.len(), args.quiet);
    let opts = SquashOptions {
        from,
        created: created(args)?,
        verify: args.verify,
        progress: Bar::callback(&progress),
        cancel: super::signals::cancel(),
    };
    let protect = super::input_paths(&img.reference);
    let target = Target {
        format: out.format,
        path: args.output.as_deref(),
        force: args.force,
        compression: args.compress.unwrap_or(out.default_compression()),
        level: args.level,
        // Squash indexes the kept layers for each run: two runs would read them twice.
        measure_first: false,
        protect: &protect,
        registry: &out.registry,
    };
    let report = out.write(&target, |w| squash(img, &opts, w, &tags))?;
    Bar::finish(progress);
    if !args.quiet {
        // What was written, as build says it: the new image's id and layers, and where.
        let to = match (&out.dest, args.output.as_deref()) {
            (Some((d, spec)), _) => format!("{}:{spec}", d.name()),
            (None, Some(p)) if p != std::path::Path::new("-") => p.display().to_string(),
            _ => "stdout".into(),
        };
        eprintln!(
            "strata: squashed {} into sha256:{} ({}) to {to}",
            img.reference,
            strata::image::sha256_hex(&report.config),
            super::count(report.layers.len(), "layer")
        );
    }
    Ok(report)
}
