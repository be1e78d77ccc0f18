//! `strata flatten`: the merged root filesystem as one tar.

use crate::compression::Compression;
use crate::error::Result;
use crate::image::Image;
use crate::merge::{MergeOptions, MergeStats, flatten};
use crate::output::{self, Sink};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;

pub struct FlattenArgs {
    pub output: Option<PathBuf>,
    pub compress: Compression,
    pub level: Option<u32>,
    pub up_to: Option<String>,
    pub force: bool,
    pub quiet: bool,
    pub verify: bool,
}

/// A byte progress bar on stderr when it is a terminal.
pub fn progress_bar(total: u64, quiet: bool) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    ) {
        pb.set_style(style);
    }
    Some(pb)
}

pub fn run(img: &Image, args: &FlattenArgs) -> Result<MergeStats> {
    let layers = img.layers_up_to(args.up_to.as_deref())?;
    let mut sink = Sink::create(args.output.as_deref(), args.force)?;
    let total: u64 = layers.iter().map(|l| l.stored_size()).sum();
    let progress = progress_bar(total, args.quiet);
    let opts = MergeOptions {
        verify: args.verify,
        progress: progress.clone(),
    };
    let stats = {
        let mut w = sink.writer(args.compress, args.level)?;
        let stats = flatten(layers, &mut w, &opts)?;
        output::finish(w)?;
        stats
    };
    sink.commit()?;
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    Ok(stats)
}
