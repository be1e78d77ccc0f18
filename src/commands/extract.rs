//! `strata extract`: the merged filesystem of an image, unpacked into a directory.

use super::progress::Bar;
use std::path::PathBuf;
use strata::error::{Error, Result};
use strata::extract::{ExtractOptions, ExtractStats, extract};
use strata::image::Image;

pub struct ExtractArgs {
    pub dir: PathBuf,
    pub up_to: Option<String>,
    pub force: bool,
    /// `None`: the default (owners kept when running as root).
    pub same_owner: Option<bool>,
    pub xattrs: bool,
    pub quiet: bool,
    pub verify: bool,
}

pub fn run(img: &Image, args: &ExtractArgs) -> Result<ExtractStats> {
    let layers = img.layers_up_to(args.up_to.as_deref())?;
    let dir = &args.dir;
    if dir.exists() {
        if !dir.is_dir() {
            return Err(Error::Usage(format!(
                "{} exists and is not a directory",
                dir.display()
            )));
        }
        let non_empty = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?
            .next()
            .is_some();
        if non_empty && !args.force {
            return Err(Error::Usage(format!(
                "{} is not empty; use --force to extract into it anyway",
                dir.display()
            )));
        }
    } else {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    let total: u64 = layers.iter().map(|l| l.stored_size()).sum();
    let progress = Bar::new(total, layers.len(), args.quiet);
    let is_root = rustix::process::geteuid().is_root();
    let opts = ExtractOptions {
        same_owner: args.same_owner.unwrap_or(is_root),
        xattrs: args.xattrs,
        verify: args.verify,
        progress: Bar::callback(&progress),
        cancel: super::signals::cancel(),
    };
    let stats = extract(layers, dir, &opts)
        .map_err(|e| Error::Usage(format!("{e} ({} is left partly extracted)", dir.display())))?;
    Bar::finish(progress);
    Ok(stats)
}
