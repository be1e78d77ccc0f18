//! The progress bar: the library's [`Progress`] callback drawn with indicatif on stderr,
//! when stderr is a terminal.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::{Arc, LazyLock};
use strata::control::{Pass, Progress, ProgressRef};

/// Every bar of the process, drawn together on stderr (a merge's and its transfers').
static BARS: LazyLock<MultiProgress> =
    LazyLock::new(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));

/// A bar per registry transfer: what (`↓ sha256:…`), bytes, rate.
pub struct TransferBars;

impl TransferBars {
    /// The transfers' progress for registry options, unless `quiet` or stderr is not a
    /// terminal.
    pub fn for_terminal(quiet: bool) -> Option<Arc<dyn strata::registry::Transfers>> {
        if quiet || !std::io::stderr().is_terminal() {
            return None;
        }
        Some(Arc::new(TransferBars))
    }
}

struct TransferBar(ProgressBar);

struct NoBar;

impl strata::registry::Transfer for NoBar {
    fn advance(&mut self, _: u64) {}
}

impl strata::registry::Transfers for TransferBars {
    fn start(
        &self,
        _: strata::registry::Direction,
        label: String,
        total: Option<u64>,
    ) -> Box<dyn strata::registry::Transfer> {
        // Configs and small layers come and go too fast for a bar.
        if total.is_some_and(|t| t < 1 << 20) {
            return Box::new(NoBar);
        }
        let pb = BARS.add(ProgressBar::new(total.unwrap_or(0)));
        let template = if total.is_some() {
            "  {msg:20} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})"
        } else {
            "  {msg:20} {bytes} ({bytes_per_sec})"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            pb.set_style(style);
        }
        pb.set_message(label);
        Box::new(TransferBar(pb))
    }
}

impl strata::registry::Transfer for TransferBar {
    fn advance(&mut self, bytes: u64) {
        self.0.inc(bytes);
    }
}

impl Drop for TransferBar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
        BARS.remove(&self.0);
    }
}

/// A byte progress bar that names the layer being read (`layer 3/5`) or the pass of a build
/// (`pass 2/2` when the output is produced twice).
pub struct Bar {
    pb: ProgressBar,
    /// Layers in the image (for `layer i/n`); 0 when not about layers.
    layers: usize,
    /// Passes over the same bytes (2: a build to a pipe), each `per_pass` bytes long.
    passes: u64,
    per_pass: u64,
    /// The last layer and pass named, so the message changes only when one does.
    shown: std::sync::Mutex<Option<(Option<usize>, u64)>>,
}

impl Progress for Bar {
    fn advance(&self, bytes: u64, layer: Option<usize>, pass: Pass) {
        // The name first: the bar's first drawing (later ones are rate-limited) says what it is.
        if let Ok(mut shown) = self.shown.lock() {
            let nth = self.pass_at(self.pb.position().saturating_add(bytes));
            if *shown != Some((layer, nth)) {
                *shown = Some((layer, nth));
                self.pb
                    .set_message(label(layer, self.layers, pass, (nth, self.passes)));
            }
        }
        self.pb.inc(bytes);
    }
}

/// What a bar says it is reading: `layer 3/5` (1-based, of the image's layers), or what a
/// build writes and in which pass (`pass 1/2`).
fn label(layer: Option<usize>, layers: usize, pass: Pass, (nth, passes): (u64, u64)) -> String {
    match (layer, pass) {
        (Some(i), _) if layers > 0 => format!("layer {}/{layers}", i + 1),
        (Some(i), _) => format!("layer {}", i + 1),
        (None, Pass::Build) if passes > 1 => format!("pass {nth}/{passes}"),
        (None, Pass::Build) => "writing layers".to_string(),
        (None, Pass::Read) => String::new(),
    }
}

impl Bar {
    /// A bar for `total` bytes of an image of `layers` layers, unless `quiet` or stderr is not
    /// a terminal.
    pub fn new(total: u64, layers: usize, quiet: bool) -> Option<Arc<Bar>> {
        Self::passes(total, 1, layers, quiet)
    }

    /// A bar for `passes` passes over the same `per_pass` bytes (a build to a pipe: measured,
    /// then written), each named (`pass 2/2`).
    pub fn passes(per_pass: u64, passes: u64, layers: usize, quiet: bool) -> Option<Arc<Bar>> {
        if quiet || !std::io::stderr().is_terminal() {
            return None;
        }
        let passes = passes.max(1);
        let pb = BARS.add(ProgressBar::new(per_pass.saturating_mul(passes)));
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {msg:10} [{wide_bar}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ) {
            pb.set_style(style);
        }
        Some(Arc::new(Bar {
            pb,
            layers,
            passes,
            per_pass,
            shown: std::sync::Mutex::new(None),
        }))
    }

    /// Which pass (1-based) the bar is in at `position`.
    fn pass_at(&self, position: u64) -> u64 {
        match position.checked_div(self.per_pass) {
            Some(done) => (done + 1).min(self.passes),
            None => 1,
        }
    }

    /// The callback to hand to the library.
    pub fn callback(bar: &Option<Arc<Bar>>) -> Option<ProgressRef> {
        bar.clone().map(|b| b as ProgressRef)
    }

    /// Remove the bar.
    pub fn finish(bar: Option<Arc<Bar>>) {
        if let Some(b) = bar {
            b.pb.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_name_the_layer_out_of_how_many() {
        assert_eq!(label(Some(2), 5, Pass::Read, (1, 1)), "layer 3/5");
        assert_eq!(label(Some(0), 0, Pass::Read, (1, 1)), "layer 1");
        assert_eq!(label(None, 0, Pass::Build, (1, 1)), "writing layers");
        let bar = Bar {
            pb: ProgressBar::hidden(),
            layers: 4,
            passes: 1,
            per_pass: 100,
            shown: std::sync::Mutex::new(None),
        };
        bar.advance(10, Some(3), Pass::Read);
        assert_eq!(bar.pb.message(), "layer 4/4");
        assert_eq!(bar.pb.position(), 10);
    }

    #[test]
    fn a_two_pass_bar_names_the_pass_it_is_in() {
        let bar = Bar {
            pb: ProgressBar::hidden(),
            layers: 0,
            passes: 2,
            per_pass: 100,
            shown: std::sync::Mutex::new(None),
        };
        bar.advance(60, None, Pass::Build);
        assert_eq!(bar.pb.message(), "pass 1/2");
        bar.advance(60, None, Pass::Build);
        assert_eq!(bar.pb.message(), "pass 2/2");
        bar.advance(500, None, Pass::Build);
        assert_eq!(bar.pb.message(), "pass 2/2", "never past the last pass");
    }
}
