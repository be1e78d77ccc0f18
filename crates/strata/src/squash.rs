//! Squashing: the layers from a point up become one layer on top of the kept ones.
//!
//! The kept layers are copied through unchanged (same diff_ids); the merged view of them is
//! indexed first, so the squashed layer keeps exactly the whiteouts and opaque markers that
//! still hide something there (`merge::Merger::onto`). The config is kept, with new
//! `rootfs.diff_ids` and one history entry for the squashed layer.

use crate::control::{Cancel, ProgressRef};
use crate::error::{Error, Result};
use crate::image::{Image, Layer};
use crate::merge::{MergeOptions, Merger};
use crate::sink::{ImageWriter, LayerOut};
use serde_json::{Value, json};
use std::io::{self, Write};

pub use crate::timestamp::rfc3339_from_epoch;

/// What [`squash`] squashes and how.
pub struct SquashOptions {
    /// Index of the first squashed layer (0: everything).
    pub from: usize,
    /// RFC 3339 time for `created` (else the original's).
    pub created: Option<String>,
    /// Check the layers' digests as they are read.
    pub verify: bool,
    /// Called as the squashed layers' bytes are read (first pass only).
    pub progress: Option<ProgressRef>,
    /// Stops the squash when tripped.
    pub cancel: Cancel,
}

/// What [`squash`] wrote.
pub struct SquashReport {
    /// The layers written: the kept ones, then the squashed one.
    pub layers: Vec<LayerOut>,
    /// The new config, as JSON bytes.
    pub config: Vec<u8>,
    /// How many times the squashed layer was produced: 1, or 2 to a stream that needs its
    /// digest before its bytes (oci-archive; a docker-archive plans its size instead).
    pub passes: usize,
}

/// Squash `img` into `writer`: layers below `opts.from` copied as they are, the rest merged
/// into one new layer on top of them; the image is tagged `tags`.
pub fn squash(
    img: &Image,
    opts: &SquashOptions,
    writer: &mut dyn ImageWriter,
    tags: &[String],
) -> Result<SquashReport> {
    if opts.from >= img.layers.len() {
        return Err(Error::Usage(format!(
            "nothing to squash: {} has {} layers and squashing starts at layer {}",
            img.reference,
            img.layers.len(),
            opts.from
        )));
    }
    let (kept, squashed) = img.layers.split_at(opts.from);
    // The merge's pipeline starts first: its verifiers hash the squashed layers on the other
    // core while the kept ones are indexed and copied and the plan reads headers. (Not when a
    // blob is still at its source: the plan reads it into the store, and the merge then reads
    // the copy — one fetch.)
    let first = MergeOptions {
        verify: opts.verify,
        progress: opts.progress.clone(),
        cancel: opts.cancel.clone(),
    };
    let all_local = squashed.iter().all(|l| l.blob.is_local());
    let mut started = all_local.then(|| Merger::pipeline(squashed, &first));
    let kept_diffs = kept.iter().map(diff_id_of).collect::<Result<Vec<_>>>()?;
    let view = if kept.is_empty() {
        None
    } else {
        let mut sink = io::sink();
        let mopts = MergeOptions {
            verify: opts.verify,
            progress: None,
            cancel: opts.cancel.clone(),
        };
        Some(Merger::new(&mut sink).index_only().run_view(kept, &mopts)?)
    };
    let mut out = Vec::new();
    for (layer, diff) in kept.iter().zip(&kept_diffs) {
        out.push(writer.kept_layer(layer, diff, opts.verify)?);
    }
    let key = squash_key(img, opts.from)?;
    // To a stream, a docker-archive layer's size is planned from the headers first, so its
    // content is merged once (two passes otherwise: size and digest, then the bytes).
    let planned = if writer.takes_planned_size() {
        let t = std::time::Instant::now();
        let size = plan_size(&view, kept, squashed, opts)?;
        tracing::debug!(
            "planned the squashed layer: {size} bytes, in {:?}",
            t.elapsed()
        );
        Some(size)
    } else {
        None
    };
    let mut passes = 0usize;
    let new = writer.new_keyed_layer(&key, planned, &mut |w: &mut dyn Write| {
        // The first pass verifies the sources; a second one reads what was just checked.
        let mopts = MergeOptions {
            verify: opts.verify && passes == 0,
            progress: if passes == 0 {
                opts.progress.clone()
            } else {
                None
            },
            cancel: opts.cancel.clone(),
        };
        passes += 1;
        // Buffered enough below: every member writer buffers (a hashing one, or the output's).
        let merger = Merger::new(w);
        let merger = match &view {
            Some(v) => merger.onto(v, kept),
            None => merger,
        };
        match started.take() {
            Some(p) => merger.run_with(p, squashed, &mopts)?,
            None => merger.run(squashed, &mopts)?,
        };
        w.flush().map_err(|e| Error::output("writing output", e))
    })?;
    out.push(new);
    let config = squashed_config(img, opts.from, &out, opts.created.as_deref())?;
    writer.finish(&config, &out, tags)?;
    Ok(SquashReport {
        layers: out,
        config,
        passes,
    })
}

/// The exact size of the squashed layer's tar, from a merge that reads headers only (data is
/// counted, and seeked past in local uncompressed layers).
fn plan_size(
    view: &Option<crate::pathtree::PathTree>,
    kept: &[Layer],
    squashed: &[Layer],
    opts: &SquashOptions,
) -> Result<u64> {
    let mut headers = Counter(0);
    let merger = Merger::new(&mut headers).planning();
    let merger = match view {
        Some(v) => merger.onto(v, kept),
        None => merger,
    };
    let mopts = MergeOptions {
        verify: opts.verify,
        progress: None,
        cancel: opts.cancel.clone(),
    };
    let data = merger.run_plan(squashed, &mopts)?;
    headers
        .0
        .checked_add(data)
        .ok_or_else(|| Error::Format("squashed layer larger than 2^64 bytes".into()))
}

/// Counts what is written to it.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the squashed layer is made of, as one digest: every layer's diff_id (kept and
/// squashed) and the squash point. The merge is deterministic, so the same key means the same
/// tar — what names it where the name precedes the bytes (docker-archive).
pub fn squash_key(img: &Image, from: usize) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!("strata squash from {from}\n").as_bytes());
    for l in &img.layers {
        let id = match (&l.diff_id, &l.digest) {
            (Some(d), _) | (None, Some(d)) => d.clone(),
            (None, None) => diff_id_of(l)?,
        };
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// Write a squash already made — `result`, what [`squash`] wrote from `source` squashing from
/// layer `from` (read back from its archive) — to `writer` without merging again: the kept
/// layers as `source` holds them (a registry that has them mounts them instead of taking
/// them again), the squashed layer and the config as `result` holds them (an uncompressed
/// squashed layer is compressed as `writer` compresses new layers; a compressed one goes as
/// it is). Every layer's diff_id is checked against the result's config.
pub fn republish(
    source: &Image,
    from: usize,
    result: &Image,
    writer: &mut dyn ImageWriter,
    tags: &[String],
) -> Result<Vec<LayerOut>> {
    let mismatch = |what: String| {
        Error::Format(format!(
            "{} is not the squash of {} from layer {from}: {what}",
            result.reference, source.reference
        ))
    };
    if from >= source.layers.len() || result.layers.len() != from + 1 {
        return Err(mismatch(format!(
            "{} layers, from {} in the source",
            result.layers.len(),
            source.layers.len()
        )));
    }
    let mut out = Vec::with_capacity(from + 1);
    for (kept, ours) in source.layers[..from].iter().zip(&result.layers) {
        let diff = diff_id_of(kept)?;
        if ours.diff_id.as_deref() != Some(diff.as_str()) {
            return Err(mismatch(format!("layer {} differs", kept.index)));
        }
        out.push(writer.kept_layer(kept, &diff, true)?);
    }
    let top = &result.layers[from];
    let diff = top
        .diff_id
        .clone()
        .ok_or_else(|| mismatch("its config names no diff_id for the squashed layer".into()))?;
    out.push(writer.kept_layer(top, &diff, true)?);
    writer.finish(&result.config_raw, &out, tags)?;
    Ok(out)
}

/// An [`ImageWriter`] for copying a squash back from where it was published (a registry):
/// the squashed layer, at index `top`, is written as [`squash`] wrote it — named from `key`
/// ([`squash_key`] of the image it was squashed from) — so the copy has the squash's bytes.
pub struct Republished<'a, 'w> {
    /// The writer that does the work.
    pub inner: &'a mut (dyn ImageWriter + 'w),
    /// The squash's key.
    pub key: String,
    /// Index of the squashed layer in the published image (the squash point).
    pub top: usize,
    /// Stops the copy when tripped.
    pub cancel: Cancel,
}

impl ImageWriter for Republished<'_, '_> {
    fn kept_layer(&mut self, layer: &Layer, diff_id: &str, verified: bool) -> Result<LayerOut> {
        if layer.index != self.top {
            return self.inner.kept_layer(layer, diff_id, verified);
        }
        crate::copy::rewrite_layer(self.inner, layer, diff_id, Some(&self.key), &self.cancel)
    }
    fn new_layer(&mut self, produce: &mut crate::sink::members::Produce<'_>) -> Result<LayerOut> {
        self.inner.new_layer(produce)
    }
    fn finish(&mut self, config: &[u8], layers: &[LayerOut], tags: &[String]) -> Result<()> {
        self.inner.finish(config, layers, tags)
    }
}

/// A kept layer's diff_id: from the config, or (legacy archives without one) by hashing.
pub(crate) fn diff_id_of(layer: &Layer) -> Result<String> {
    if let Some(d) = &layer.diff_id {
        return Ok(d.clone());
    }
    let region = layer.blob.local_region(true, &layer.label())?;
    let kind = crate::layer::detect(&region).map_err(|e| Error::io(layer.label(), e))?;
    let mut r = kind
        .decoder(io::BufReader::with_capacity(1 << 20, region.reader()))
        .map_err(|e| Error::io(layer.label(), e))?;
    let mut hw = crate::sink::members::HashWriter::new(io::sink());
    io::copy(&mut r, &mut hw).map_err(|e| Error::io(layer.label(), e))?;
    Ok(hw.finish()?.1.digest())
}

/// How the squash history names its source: by tag or digest, never by where it was read
/// from — the same image gives the same output from any path, from stdin or a daemon.
fn image_name(img: &Image) -> String {
    img.tags
        .first()
        .cloned()
        .or_else(|| img.config_digest.clone())
        .or_else(|| img.manifest_digest.clone())
        .unwrap_or_else(|| {
            let id = crate::image::sha256_hex(&img.config_raw);
            format!("sha256:{id}")
        })
}

/// The squashed image's config: the original with new diff_ids and history.
fn squashed_config(
    img: &Image,
    from: usize,
    layers: &[LayerOut],
    created: Option<&str>,
) -> Result<Vec<u8>> {
    let mut cfg = match &img.config {
        Value::Object(m) => m.clone(),
        _ => {
            return Err(Error::Format(format!(
                "{}: config is not a JSON object",
                img.reference
            )));
        }
    };
    // Fields of legacy v1 image JSON that describe the old layer, not the image.
    for k in ["id", "parent", "Size", "layer_id", "throwaway"] {
        cfg.remove(k);
    }
    let created = created.map(str::to_string).or_else(|| {
        cfg.get("created")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    if let Some(c) = &created {
        cfg.insert("created".into(), json!(c));
    }
    cfg.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()}),
    );
    // History: the entries up to the last kept layer stay; everything above merges into one.
    let history = img.history();
    let mut kept_hist = Vec::new();
    let mut merged = Vec::new();
    let mut seen_layers = 0usize;
    for h in &history {
        let empty = h
            .get("empty_layer")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if seen_layers < from {
            kept_hist.push(h.clone());
        } else if let Some(c) = h.get("created_by").and_then(Value::as_str) {
            merged.push(c.to_string());
        }
        if !empty {
            seen_layers += 1;
        }
    }
    let non_empty = |hs: &[Value]| {
        hs.iter()
            .filter(|h| {
                !h.get("empty_layer")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            })
            .count()
    };
    if history.is_empty() || non_empty(&kept_hist) != from {
        // Missing or inconsistent history: one plain entry per kept layer.
        kept_hist = (0..from)
            .map(|i| json!({"created_by": format!("layer {i} (kept by strata squash)")}))
            .collect();
    }
    let mut entry = json!({
        "created_by": "strata squash",
        "comment": format!(
            "squashed layers {from}..{} of {}: {}",
            img.layers.len() - 1,
            image_name(img),
            if merged.is_empty() { "(no history)".to_string() } else { merged.join(" ; ") }
        ),
    });
    if let Some(c) = &created {
        entry["created"] = json!(c);
    }
    kept_hist.push(entry);
    cfg.insert("history".into(), Value::Array(kept_hist));
    serde_json::to_vec(&Value::Object(cfg)).map_err(|e| Error::Format(e.to_string()))
}
