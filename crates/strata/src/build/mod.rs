//! Building an image from directories: each layer is the trees under some sources placed at
//! destinations, written as a reproducible tar (see [`layer_tar`]), optionally on top of an
//! existing image whose layers are copied through unchanged.
//!
//! The order of work: [`plan()`] walks every source first (file lists fixed, type conflicts
//! refused — nothing written yet); [`build`] then writes kept layers, new layers and the
//! config through any [`ImageWriter`], which asks for each new layer once (to a file or a
//! directory) or twice (to a pipe: size and digest first, then the bytes, compared).

pub mod config;
pub mod layer_tar;
pub mod plan;
pub mod walk;

use crate::control::{Cancel, ProgressRef};
use crate::error::Result;
use crate::image::Image;
use crate::listing::Cache;
use crate::sink::{ImageWriter, LayerOut};
use config::{ConfigChanges, build_config};
use layer_tar::{TarOptions, write_layer};
use plan::LayerSpec;
use walk::{Claims, LayerTree, WalkOptions};

/// The default time of every entry and of the image: 1970-01-01T00:00:01Z, as Nix uses (0
/// reads as "unset" to some tools).
pub const DEFAULT_EPOCH: i64 = 1;

/// How [`build`] writes the new layers and the config.
pub struct BuildOptions {
    /// mtime of every entry, seconds since the epoch.
    pub mtime: i64,
    /// `created` of the image and its new history entries (RFC 3339).
    pub created: String,
    /// Changes to the config (entrypoint, env, labels, …) over the base's.
    pub config: ConfigChanges,
    /// Called as source file bytes are written into new layers.
    pub progress: Option<ProgressRef>,
    /// Checked per entry written.
    pub cancel: Cancel,
}

/// What [`build`] wrote.
pub struct BuildReport {
    /// The layers written: the base's, then the new ones.
    pub layers: Vec<LayerOut>,
    /// The new config, as JSON bytes.
    pub config: Vec<u8>,
}

/// What the `--from` image holds (its merged tree, from the listing walk — cached like
/// `strata files`), so that new layers neither change the type of one of its paths (a
/// directory over its `/lib -> usr/lib`) nor re-emit its directories with other attributes.
pub fn base_claims(img: &Image, verify: bool, cache: &Cache, cancel: &Cancel) -> Result<Claims> {
    use crate::listing::walker::{Kind as K, Paths, Walker};
    let layers: Vec<&crate::image::Layer> = img.layers.iter().collect();
    let mut paths = Paths::new();
    let mut w = Walker::new();
    let read = crate::listing::Reading::new(verify, cache, cancel);
    w.walk(&mut paths, &layers, &read, &mut |_, _| true)?;
    let mut claims = Claims::default();
    for id in 1..paths.len() as crate::pathtree::NodeId {
        if let Some(s) = w.state(id) {
            let kind = match s.kind {
                K::Dir => walk::Kind::Dir,
                K::Symlink => walk::Kind::Symlink,
                K::Char => walk::Kind::Char,
                K::Block => walk::Kind::Block,
                K::Fifo => walk::Kind::Fifo,
                K::File | K::Other => walk::Kind::File,
            };
            let (uid, gid) = paths.owner(s);
            let attrs = walk::DirAttrs {
                mode: s.mode(),
                uid,
                gid,
            };
            claims.seed(&paths.path_of(id), kind, u32::from(s.layer()), attrs);
        }
    }
    Ok(claims)
}

/// Walk every layer's sources: the file lists are fixed here, before anything is written.
/// `first_index` is the number of the first new layer in the image (the base's layer count);
/// `claims`, what the base holds (empty without one).
pub fn plan(
    layers: &[LayerSpec],
    opts: &WalkOptions,
    first_index: usize,
    mut claims: Claims,
) -> Result<Vec<LayerTree>> {
    let mut trees = Vec::with_capacity(layers.len());
    for (i, spec) in layers.iter().enumerate() {
        let index = first_index + i;
        let tree = walk::walk(spec, index, opts, &|p| claims.dir(p))?;
        claims.add(&tree, index)?;
        trees.push(tree);
    }
    Ok(trees)
}

/// What a layer's history entry says it was made from (the sources' names, not where they
/// are on this machine, so the config is the same from anywhere).
pub fn created_by(spec: &LayerSpec) -> String {
    let parts: Vec<String> = spec
        .sources
        .iter()
        .map(|s| format!("{}:{}", s.label, s.dest_shown()))
        .collect();
    format!("strata build --layer {}", parts.join(","))
}

/// Write the image: `base`'s layers (same digests), then one layer per tree, then the config.
pub fn build(
    base: Option<&Image>,
    trees: &[LayerTree],
    opts: &BuildOptions,
    writer: &mut dyn ImageWriter,
    tags: &[String],
) -> Result<BuildReport> {
    let mut out = Vec::new();
    if let Some(img) = base {
        for layer in &img.layers {
            let diff = crate::squash::diff_id_of(layer)?;
            // Not read before, so not verified: the writer hashes it on the way and compares.
            out.push(writer.kept_layer(layer, &diff, false)?);
        }
    }
    let base_layers = out.len();
    let topts = TarOptions {
        mtime: opts.mtime.max(0) as u64,
    };
    for tree in trees {
        let layer = writer.new_layer(&mut |w| {
            write_layer(tree, &topts, w, opts.progress.as_ref(), &opts.cancel)
        })?;
        out.push(layer);
    }
    let new_diffs: Vec<String> = out[base_layers..]
        .iter()
        .map(|l| l.diff_id.clone())
        .collect();
    let history: Vec<String> = trees.iter().map(|t| created_by(&t.spec)).collect();
    let config = build_config(
        base.map(|i| &i.config),
        &opts.config,
        base_layers,
        &new_diffs,
        &history,
        &opts.created,
    )?;
    writer.finish(&config, &out, tags)?;
    Ok(BuildReport {
        layers: out,
        config,
    })
}
