//! `strata flatten`: the merged root filesystem as one tar.

use super::progress::Bar;
use std::path::PathBuf;
use strata::compression::Compression;
use strata::error::Result;
use strata::image::Image;
use strata::merge::{MergeOptions, MergeStats, flatten};
use strata::output::{self, Sink};

pub struct FlattenArgs {
    pub output: Option<PathBuf>,
    pub compress: Compression,
    pub level: Option<u32>,
    pub up_to: Option<String>,
    pub force: bool,
    pub quiet: bool,
    pub verify: bool,
}

pub fn run(img: &Image, args: &FlattenArgs) -> Result<MergeStats> {
    args.compress
        .check_level(args.level)
        .map_err(strata::Error::Usage)?;
    super::refuse_terminal(args.output.as_deref())?;
    let layers = img.layers_up_to(args.up_to.as_deref())?;
    let mut sink = Sink::create(args.output.as_deref(), args.force)?;
    let total: u64 = layers.iter().map(|l| l.stored_size()).sum();
    let progress = Bar::new(total, layers.len(), args.quiet);
    let opts = MergeOptions {
        verify: args.verify,
        progress: Bar::callback(&progress),
        cancel: super::signals::cancel(),
    };
    let stats = {
        let mut w = sink.writer(args.compress, args.level)?;
        let stats = flatten(layers, &mut w, &opts)?;
        output::finish(w)?;
        stats
    };
    sink.commit()?;
    Bar::finish(progress);
    Ok(stats)
}
