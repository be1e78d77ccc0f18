//! The progress bar: the library's [`Progress`] callback drawn with indicatif on stderr,
//! when stderr is a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;
use strata::control::{Pass, Progress, ProgressRef};

/// A byte progress bar.
pub struct Bar(ProgressBar);

impl Progress for Bar {
    fn advance(&self, bytes: u64, _layer: Option<usize>, _pass: Pass) {
        self.0.inc(bytes);
    }
}

impl Bar {
    /// A bar for `total` bytes, unless `quiet` or stderr is not a terminal.
    pub fn new(total: u64, quiet: bool) -> Option<Arc<Bar>> {
        if quiet || !std::io::stderr().is_terminal() {
            return None;
        }
        let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ) {
            pb.set_style(style);
        }
        Some(Arc::new(Bar(pb)))
    }

    /// The callback to hand to the library.
    pub fn callback(bar: &Option<Arc<Bar>>) -> Option<ProgressRef> {
        bar.clone().map(|b| b as ProgressRef)
    }

    /// Remove the bar.
    pub fn finish(bar: Option<Arc<Bar>>) {
        if let Some(b) = bar {
            b.0.finish_and_clear();
        }
    }
}
